//! The container tier through the real state machine: a compressed file over the feed's
//! `container_from_mb` takes the route `container`, and StageInContainer's RunTask starts the
//! image's binary (tests/aws/containers.rs), which stages the file and answers the state's token;
//! the rest of the run is the usual one.

use std::io::Write;

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
