//! Several files merged into one table at the same time: every row lands, none twice. The
//! local runner keeps one writer per table (its lane); the steps themselves, called outside it
//! as a second writer would, retry the commits they lose.

use std::io::BufRead;
use std::sync::Arc;

use deltadrop::steps;
use deltadrop::storage::ObjectStorage;

use crate::support::Harness;

/// The steps of one file, called directly: no lane holds the table.
async fn outside_the_lane(h: &Harness, key: String) -> deltadrop::Result<steps::UpsertOutput> {
    let run = h.run_input(&key).await;
    let staged = steps::stage(&h.env, &run).await?;
    steps::archive(&h.env, &run).await?;
    steps::upsert(&h.env, &run, &staged).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_merges_into_one_table_lose_no_rows() {
    let h = Arc::new(Harness::new(
        "[[feeds]]\nname = \"orders\"\nincoming = \"incoming/\"\ntable = \"tables/orders\"\nkeys = [\"id\"]\n",
    ));
    const FILES: usize = 6;
    const ROWS: usize = 200;
    for f in 0..FILES {
        // Each file inserts its own keys and updates key 0, which every file shares.
        let mut body = String::from("id,source\n0,shared\n");
        for r in 0..ROWS {
            body.push_str(&format!("{},{f}\n", 1 + f * ROWS + r));
        }
        h.put(&format!("incoming/{f}.csv"), body).await;
    }
    let tasks: Vec<_> = (0..FILES)
        .map(|f| {
            let h = h.clone();
            tokio::spawn(async move { outside_the_lane(&h, format!("incoming/{f}.csv")).await })
        })
        .collect();
    let mut attempts = Vec::new();
    for task in futures::future::join_all(tasks).await {
        let upsert = task
            .unwrap()
            .unwrap_or_else(|e| panic!("{}: {e}", e.name()));
        attempts.push(upsert.attempts);
    }
    let summary = deltadrop::inspect::summarize(&h.table("tables/orders"), 100)
        .await
        .unwrap();
    assert_eq!(
        summary.rows as usize,
        1 + FILES * ROWS,
        "attempts: {attempts:?}"
    );
    // The first file to win creates the table (adopting its staged files); every other one
    // merges into it.
    let count = |operation: &str| {
        summary
            .history
            .iter()
            .filter(|e| e.operation == operation)
            .count()
    };
    assert_eq!(
        (count("CREATE TABLE"), count("MERGE")),
        (1, FILES - 1),
        "{:?}",
        summary.history
    );
    assert!(
        attempts.iter().any(|&a| a > 1),
        "no conflict happened, the test proves nothing: {attempts:?}"
    );
}

/// A `deltadrop run` process waits while another holds the table's lane, and merges once it is
/// released: two processes on one folder never merge into one table at once.
#[test]
fn a_run_waits_for_the_writer_that_holds_its_tables_lane() {
    let h = Harness::new(&crate::support::config(&[crate::support::feed("t", "")]));
    let bucket = h.dir.path().join("bucket");
    std::fs::write(
        bucket.join("deltadrop.toml"),
        crate::support::config(&[crate::support::feed("t", "")]),
    )
    .unwrap();
    std::fs::create_dir_all(bucket.join("incoming/t")).unwrap();
    std::fs::write(bucket.join("incoming/t/a.csv"), "id,v\n1,a\n").unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let table = h.table("tables/t");
    let held = runtime
        .block_on(h.bucket.hold_lane(&table.name()))
        .unwrap()
        .expect("a folder keeps lanes");

    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_deltadrop"))
        .args(["run", "incoming/t/a.csv", "--bucket"])
        .arg(&bucket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // Staged and archived: the next step is the merge, behind the lane.
    let archived = lines
        .by_ref()
        .map(|l| l.unwrap())
        .find(|l| l.contains("archive: moved to"));
    assert!(archived.is_some(), "the run never archived its file");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended while the lane was held"
    );
    assert!(
        !h.table_path("tables/t").join("_delta_log").exists(),
        "a commit landed while another writer held the lane"
    );

    drop(held);
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(child.wait().unwrap().success(), "{rest:#?}");
    assert_eq!(
        runtime.block_on(h.version("tables/t")),
        Some(0),
        "{rest:#?}"
    );
}
