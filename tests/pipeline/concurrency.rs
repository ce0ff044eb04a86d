//! Several files merged into one table at the same time: every row lands, none twice.

use std::sync::Arc;

use crate::support::Harness;

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
            tokio::spawn(async move { h.run(&format!("incoming/{f}.csv")).await })
        })
        .collect();
    let mut attempts = Vec::new();
    for task in futures::future::join_all(tasks).await {
        let result = task.unwrap();
        if let Some(e) = &result.error {
            panic!("{}: {e}", e.name());
        }
        attempts.push(result.report.upsert.unwrap().attempts);
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
