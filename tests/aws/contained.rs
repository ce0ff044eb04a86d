//! The container tier through the real state machine: a compressed file over the feed's
//! `container_from_mb` takes the route `container`, and StageInContainer's RunTask starts the
//! image's binary (tests/aws/containers.rs), which stages the file and answers the state's token;
//! the rest of the run is the usual one.

use std::io::Write;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::end_to_end::{
    a_bad_amount_was_quarantined_whole, large_orders_csv, with_a_late_bad_amount,
    with_a_quoted_line_break,
};
use crate::world::World;

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

/// A gzipped file is staged by a container task sized by its feed, and loads the table the
/// same rows staged by the Stage function load (read by the Python `deltalake` package); a bad
/// value fails the file with its error's name and line, and it is quarantined whole.
pub async fn a_compressed_large_file_is_staged_by_the_container_tier(world: &World) {
    let csv = large_orders_csv();
    let loaded = world
        .drop_file("incoming/contained/large.csv.gz", gzip(&csv))
        .await;
    let history = world.history(&loaded.name).await;
    assert_eq!(
        loaded.status, "SUCCEEDED",
        "{:#} {history:#?}",
        loaded.output
    );
    let route = &loaded.output["route"];
    assert_eq!(route["stage"], "container", "{route:#}");
    assert_eq!(
        route["task"],
        json!({"cpu": "2048", "memory": "8192"}),
        "{route:#}"
    );
    assert_eq!(loaded.output["stage"]["rows"], json!(60_000));
    assert!(
        history.iter().any(|step| step.contains("StageInContainer")),
        "{history:?}"
    );
    // The chunks' scenario loaded the same rows through the Stage function.
    let table = world.read_with_python("tables/contained", "order_id");
    assert_eq!(table["rows"].as_array().unwrap().len(), 25_000, "{table}");
    assert_eq!(
        table,
        world.read_with_python("tables/unchunked", "order_id")
    );

    let (bad, line) = with_a_late_bad_amount(&csv);
    let failed = world
        .drop_file("incoming/contained/bad.csv.gz", gzip(&bad))
        .await;
    a_bad_amount_was_quarantined_whole(world, &failed, "incoming/contained/bad.csv.gz", line).await;
    assert_eq!(
        world.read_with_python("tables/contained", "order_id"),
        table,
        "the failed file changed the table"
    );

    // A large CSV with a quoted line break: the chunks hand it back, and the route says the
    // container tier reads it whole.
    let broken = with_a_quoted_line_break(&csv);
    let whole = world
        .drop_file("incoming/contained/broken.csv", &broken)
        .await;
    let history = world.history(&whole.name).await;
    assert_eq!(whole.status, "SUCCEEDED", "{:#} {history:#?}", whole.output);
    assert_eq!(whole.output["route"]["read_whole"], "container");
    let why = whole.output["chunks"]["read_whole"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("line break"), "{:#}", whole.output);
    // Its MERGE into the table the first file made is larger than the feed lets the function
    // take: the merger hands it to a container task, holding the table's lane.
    for state in [
        "PlanChunks",
        "CommitChunks",
        "StageInContainer",
        "UpsertInContainer",
    ] {
        assert!(history.iter().any(|s| s == state), "{state}: {history:#?}");
    }
    assert_eq!(whole.output["stage"]["rows"], json!(60_001));
    assert_eq!(
        whole.output["upsert"]["outcome"], "applied",
        "{:#}",
        whole.output
    );
    let why = whole.output["lane"]["handed_over"]["Cause"]
        .as_str()
        .unwrap_or_default();
    assert!(
        why.contains("route.container_merge_from_gb"),
        "{:#}",
        whole.output
    );
    // The same two files loaded through the functions (the chunks' scenario): the same table.
    assert_eq!(
        world.read_with_python("tables/contained", "order_id"),
        world.read_with_python("tables/chunked", "order_id")
    );
    assert!(
        world.keys("_deltadrop/lane/").await.is_empty(),
        "a handoff was left"
    );

    // Each file's stage was one task of the feed's size, and the MERGE one more; each answered
    // its state and exited 0, told its memory (the MERGE's pool is half of it).
    let ended = world.containers.ended();
    assert_eq!(ended.len(), 4);
    for task in ended {
        assert_eq!(task.exit_code, Some(0));
        assert_eq!(
            (&task.overrides["cpu"], &task.overrides["memory"]),
            (&json!("2048"), &json!("8192"))
        );
        let told = task.overrides["containerOverrides"][0]["environment"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == deltadrop::environment::TASK_MEMORY_VARIABLE)
            .map(|v| v["value"].clone());
        assert_eq!(told, Some(json!("8192")), "{:#}", task.overrides);
    }
}

/// Random files (ids repeated within and across files, quoted text, nulls, dates, booleans;
/// plain or gzipped) loaded one after another into a feed whose stage and MERGE both run in
/// container tasks, and into a feed the functions load: the two tables, read by the Python
/// `deltalake` package, are the same row for row and hold one row per id. `DELTADROP_SEED`
/// replays a failure.
pub async fn random_files_give_the_same_table_in_a_container_as_in_the_functions(world: &World) {
    let seed: u64 = std::env::var("DELTADROP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    let mut rng = StdRng::seed_from_u64(seed);
    let tasks_before = world.containers.ended().len();
    let mut ids = std::collections::BTreeSet::new();
    for file in 0..3 {
        let csv = random_csv(&mut rng, 3000, &mut ids);
        // Named apart from other scenarios' files, whose emails they look up by name.
        let (name, body) = if rng.gen_bool(0.5) {
            (format!("random-{file}-of-three.csv.gz"), gzip(&csv))
        } else {
            (format!("random-{file}-of-three.csv"), csv.into_bytes())
        };
        let contained = world
            .drop_file(&format!("incoming/random-contained/{name}"), &body)
            .await;
        let context = format!("seed {seed}, {name}: {:#}", contained.output);
        assert_eq!(contained.status, "SUCCEEDED", "{context}");
        assert_eq!(contained.output["route"]["stage"], "container", "{context}");
        // The first file makes the table; the MERGE of each later one is handed to a task.
        assert_eq!(
            contained.output["lane"].get("handed_over").is_some(),
            file > 0,
            "{context}"
        );
        let functions = world
            .drop_file(&format!("incoming/random-functions/{name}"), &body)
            .await;
        assert_eq!(
            functions.status, "SUCCEEDED",
            "seed {seed}: {:#}",
            functions.output
        );
        assert_eq!(functions.output["route"]["stage"], "function");
    }
    // Three stages and two MERGEs ran in tasks, each exiting 0.
    let tasks = &world.containers.ended()[tasks_before..];
    assert_eq!(tasks.len(), 5, "seed {seed}");
    assert!(tasks.iter().all(|t| t.exit_code == Some(0)), "seed {seed}");
    let contained = world.read_with_python("tables/random-contained", "id");
    assert_eq!(
        contained["rows"].as_array().unwrap().len(),
        ids.len(),
        "seed {seed}: one row per id"
    );
    assert_eq!(
        contained,
        world.read_with_python("tables/random-functions", "id"),
        "seed {seed}"
    );
}

/// `rows` random rows; the ids used are added to `ids`. The first row has every column set, so
/// that the first file fixes the table's types.
fn random_csv(rng: &mut StdRng, rows: u64, ids: &mut std::collections::BTreeSet<u64>) -> String {
    let mut csv = String::from("id,name,amount,day,flag\n");
    for row in 0..rows {
        let id = rng.gen_range(0..3 * rows);
        ids.insert(id);
        let blank = |rng: &mut StdRng| row > 0 && rng.gen_bool(0.1);
        let name = match rng.gen_range(0..4) {
            _ if blank(rng) => String::new(),
            0 => format!("\"{}, {}\"", rng.gen::<u16>(), rng.gen::<u8>()),
            1 => format!("\"says \"\"{}\"\"\"", rng.gen::<u16>()),
            _ => format!("n{}", rng.gen::<u32>()),
        };
        let amount = if blank(rng) {
            String::new()
        } else {
            format!("{:.2}", rng.gen_range(-1e6..1e6))
        };
        let day = format!(
            "2026-{:02}-{:02}",
            rng.gen_range(1..=12),
            rng.gen_range(1..=28)
        );
        let flag = if blank(rng) {
            ""
        } else if rng.gen_bool(0.5) {
            "true"
        } else {
            "false"
        };
        csv.push_str(&format!("{id},{name},{amount},{day},{flag}\n"));
    }
    csv
}
