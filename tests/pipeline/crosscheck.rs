//! The tables deltadrop writes, read back by an independent implementation: the Python
//! `deltalake` package that the test command installs (DELTADROP_PYTHON points at it).

use crate::support::Harness;

pub fn python() -> String {
    std::env::var("DELTADROP_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The table read by the Python `deltalake` package (tests/crosscheck.py): version, columns,
/// rows, history, partition columns.
pub fn read_with_python(table: &std::path::Path, order_by: &str) -> serde_json::Value {
    read_with("crosscheck.py", table, order_by)
}

/// The table read by DuckDB's delta extension (tests/crosscheck_duckdb.py): columns and rows.
pub fn read_with_duckdb(table: &std::path::Path, order_by: &str) -> serde_json::Value {
    read_with("crosscheck_duckdb.py", table, order_by)
}

fn read_with(script: &str, table: &std::path::Path, order_by: &str) -> serde_json::Value {
    read_with_args(script, &[&table.display().to_string(), order_by])
}

/// The change data feed from `from` read by the Python `deltalake` package
/// (tests/crosscheck_cdf.py): rows as `version|change type|columns...`.
pub fn changes_with_python(
    table: &std::path::Path,
    from: u64,
    order_by: &str,
) -> serde_json::Value {
    read_with_args(
        "crosscheck_cdf.py",
        &[&table.display().to_string(), &from.to_string(), order_by],
    )
}

fn read_with_args(script: &str, args: &[&str]) -> serde_json::Value {
    let script = format!("{}/../../tests/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = std::process::Command::new(python())
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e}; run the tests with ./scripts/test",
                python()
            )
        });
    assert!(
        output.status.success(),
        "{script} failed (run the tests with ./scripts/test, which installs its reader):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn python_deltalake_reads_the_same_rows_after_upserts_deletes_and_a_new_column() {
    let config = r#"
[[feeds]]
name = "orders"
incoming = "incoming/"
table = "tables/orders"
keys = ["id"]
change_type = { column = "op", delete_value = "D" }
"#;
    let h = Harness::new(config);
    h.load(
        "incoming/1.csv",
        "id,name,qty,op\n1,a,10,\n2,b,20,\n3,c,30,\n",
    )
    .await;
    h.load(
        "incoming/2.csv",
        "id,name,qty,op,note\n2,b2,21,U,hello\n3,c,30,D,\n4,d,40,I,new\n",
    )
    .await;
    let expected = h.rows("tables/orders", &["id"]).await;
    assert_eq!(expected, ["1|a|10|∅", "2|b2|21|hello", "4|d|40|new"]);

    let seen = read_with_python(&h.table_path("tables/orders"), "id");
    assert_eq!(seen["version"], 1);
    assert_eq!(
        seen["columns"],
        serde_json::json!(["id", "name", "qty", "note"])
    );
    assert_eq!(seen["rows"], serde_json::json!(expected));
    assert_eq!(seen["history"], serde_json::json!(["MERGE", "WRITE"]));
}

/// A feed with `change_data_feed = true`: every MERGE records its changes, and what deltadrop
/// reads of them (`deltadrop table --changes`) equals what the Python `deltalake` reader's
/// `load_cdf` returns: the creation's rows as inserts, then an update (before and after), a
/// delete and an insert.
#[tokio::test]
async fn the_change_data_feed_reads_the_same_with_python_deltalake() {
    let h = Harness::new(&crate::support::config(&[crate::support::feed(
        "orders",
        "change_data_feed = true\nchange_type = { column = \"op\", delete_value = \"D\" }",
    )]));
    h.load(
        "incoming/orders/1.csv",
        "id,name,qty,op\n1,a,10,\n2,b,20,\n3,c,30,\n",
    )
    .await;
    h.load(
        "incoming/orders/2.csv",
        "id,name,qty,op\n2,b2,21,U\n3,c,30,D\n4,d,40,I\n",
    )
    .await;
    let batches = deltadrop::inspect::changes(&h.table("tables/orders"), 0, None, &["id".into()])
        .await
        .unwrap();
    // As the Python script prints them: version, change type, then the table's columns.
    let ours: Vec<String> = batches
        .iter()
        .flat_map(|batch| {
            let schema = batch.schema();
            let index = |name: &str| schema.index_of(name).unwrap();
            let order = [
                index("_commit_version"),
                index("_change_type"),
                index("id"),
                index("name"),
                index("qty"),
            ];
            deltadrop::inspect::row_strings(&[batch.project(&order).unwrap()]).unwrap()
        })
        .collect();
    assert_eq!(
        ours,
        [
            "0|insert|1|a|10",
            "0|insert|2|b|20",
            "0|insert|3|c|30",
            "1|update_postimage|2|b2|21",
            "1|update_preimage|2|b|20",
            "1|delete|3|c|30",
            "1|insert|4|d|40",
        ]
    );
    let python = changes_with_python(&h.table_path("tables/orders"), 0, "id");
    assert_eq!(python["changes"], serde_json::json!(ours));

    // A table made before the feed asked for it: maintenance turns the feed on, and the next
    // MERGE records its changes.
    let plain = crate::support::feed("later", "");
    let h = h.with_config(&crate::support::config(&[plain]));
    h.load("incoming/later/1.csv", "id,name\n1,a\n").await;
    let h = h.with_config(&crate::support::config(&[crate::support::feed(
        "later",
        "change_data_feed = true",
    )]));
    let feed = h.env.config.feeds[0].clone();
    deltadrop::maintain::maintain(&h.env, &feed).await.unwrap();
    let merged = h.load("incoming/later/2.csv", "id,name\n1,b\n").await;
    let version = merged.report.upsert.unwrap().version.unwrap();
    let python = changes_with_python(&h.table_path("tables/later"), version, "id");
    assert_eq!(
        python["changes"],
        serde_json::json!([
            format!("{version}|update_postimage|1|b"),
            format!("{version}|update_preimage|1|a"),
        ])
    );
}

/// A first load adopts the staged files (no second write): the table it makes reads, with the
/// Python reader, exactly as the same file written again through the MERGE path's first load
/// does, without the staging table's line column; and its files carry the keys' min/max, so a
/// later MERGE of a few keys skips most of them.
#[tokio::test]
async fn a_first_load_that_adopts_the_staged_files_equals_one_that_writes_them_again() {
    use deltadrop::steps::{stage, upsert};
    let h = Harness::new(&crate::support::config(&[
        crate::support::feed("adopted", "target_file_mb = 1"),
        crate::support::feed("rewritten", "target_file_mb = 1"),
    ]));
    let mut csv = String::from("id,name,amount,day\n");
    for id in 1..=40_000 {
        csv.push_str(&format!(
            "{id},name {id} {},{}.5,2026-11-{:02}\n",
            "x".repeat(id % 40),
            id % 997,
            1 + id % 28
        ));
    }

    // The adopting path, through the whole pipeline.
    let loaded = h.load("incoming/adopted/all.csv", &csv).await;
    let staged = loaded.report.stage.as_ref().unwrap();
    assert!(staged.written_for_a_new_table);
    assert!(
        staged.keys_strictly_increasing,
        "a sorted file needs no duplicate-key check"
    );
    let created = loaded.report.upsert.as_ref().unwrap();
    assert!(created.changes.created_table);
    assert_eq!(created.changes.rows_inserted, 40_000);
    assert!(created.changes.files_added >= 2, "{created:?}");

    // The rewriting path on the same bytes: a stage output that does not offer its files.
    h.put("incoming/rewritten/all.csv", &csv).await;
    let run = h.run_input("incoming/rewritten/all.csv").await;
    let mut staged = stage(&h.env, &run).await.unwrap();
    staged.written_for_a_new_table = false;
    let rewritten = upsert(&h.env, &run, &staged).await.unwrap();
    assert_eq!(rewritten.changes.rows_inserted, 40_000);

    let adopted = read_with_python(&h.table_path("tables/adopted"), "id");
    let written = read_with_python(&h.table_path("tables/rewritten"), "id");
    assert_eq!(
        adopted["columns"],
        serde_json::json!(["id", "name", "amount", "day"])
    );
    assert_eq!(adopted["columns"], written["columns"]);
    assert_eq!(adopted["rows"].as_array().unwrap().len(), 40_000);
    assert_eq!(adopted["rows"], written["rows"]);
    assert_eq!(adopted["history"], serde_json::json!(["CREATE TABLE"]));
    assert!(h.staging_is_empty());
    let history = deltadrop::inspect::summarize(&h.table("tables/adopted"), 1)
        .await
        .unwrap()
        .history;
    assert_eq!(history[0].rows, "added 40000", "{history:?}");

    // Min/max of the key in every adopted file: a MERGE of keys 1..=10 reads one file.
    let update: String = (1..=10)
        .map(|id| format!("{id},changed,0,2026-11-01\n"))
        .collect();
    let merged = h
        .load(
            "incoming/adopted/update.csv",
            format!("id,name,amount,day\n{update}"),
        )
        .await;
    let changes = merged.report.upsert.unwrap().changes;
    assert_eq!((changes.rows_updated, changes.files_scanned), (10, 1));
    assert!(changes.files_skipped >= 1, "{changes:?}");
    let after = read_with_python(&h.table_path("tables/adopted"), "id");
    assert_eq!(after["rows"][0], "1|changed|0.0|2026-11-01");
    assert_eq!(after["rows"].as_array().unwrap().len(), 40_000);
}

/// The Athena guard's model of the reader features a table gets is what delta-rs writes: tables
/// created by delta-rs with the properties and column types that bring reader features have
/// exactly the features the guard predicts from them (v2 checkpoints on a reader-version-3 table
/// are not among the cases: delta-rs 1.1 writes a protocol it cannot read back, and panics). deltadrop's
/// own tables have none today:
/// a timestamp without time zone is stored as UTC, and the change data feed is a writer feature;
/// the last case checks that on a table deltadrop made.
#[tokio::test]
async fn the_athena_guard_predicts_the_reader_features_delta_rs_writes() {
    use deltalake::kernel::{DataType, StructField};
    use std::collections::BTreeSet;
    let dir = tempfile::tempdir().unwrap();
    let property = |k: &str, v: &str| (k.to_string(), Some(v.to_string()));
    let cases = [
        (
            vec![property("delta.enableChangeDataFeed", "true")],
            DataType::TIMESTAMP_NTZ,
            vec!["timestampNtz"],
        ),
        (
            vec![property("delta.enableDeletionVectors", "true")],
            DataType::LONG,
            vec!["deletionVectors"],
        ),
        (
            vec![property("delta.checkpointPolicy", "v2")],
            DataType::LONG,
            vec![],
        ),
        (
            vec![property("delta.appendOnly", "true")],
            DataType::TIMESTAMP,
            vec![],
        ),
    ];
    for (i, (properties, data_type, expected)) in cases.into_iter().enumerate() {
        let url = url::Url::from_directory_path(dir.path().join(i.to_string())).unwrap();
        let location = deltadrop::delta::TableLocation::new(url, Default::default());
        location
            .handle()
            .await
            .unwrap()
            .create()
            .with_columns([
                StructField::new("id", DataType::LONG, false),
                StructField::new("value", data_type, true),
            ])
            .with_configuration(properties.clone())
            .await
            .unwrap_or_else(|e| panic!("{properties:?}: {e}"));
        let (written, predicted) = written_and_predicted(&location).await;
        assert_eq!(written, predicted, "{properties:?}");
        let expected: BTreeSet<String> = expected.into_iter().map(str::to_string).collect();
        assert_eq!(predicted, expected, "{properties:?}");
    }

    let h = Harness::new(&crate::support::config(&[crate::support::feed(
        "events",
        "change_data_feed = true",
    )]));
    h.load("incoming/events/1.csv", "id,at\n1,2024-01-31T12:00:00\n")
        .await;
    let (written, predicted) = written_and_predicted(&h.table("tables/events")).await;
    assert_eq!((written, predicted), Default::default());
}

/// The reader features of the table at `location`'s protocol, and those the Athena guard
/// predicts from its properties and columns.
async fn written_and_predicted(
    location: &deltadrop::delta::TableLocation,
) -> (
    std::collections::BTreeSet<String>,
    std::collections::BTreeSet<String>,
) {
    let table = location.open().await.unwrap().unwrap();
    let snapshot = table.snapshot().unwrap();
    let written = snapshot
        .protocol()
        .reader_features()
        .map(|features| features.iter().map(|f| f.to_string()).collect())
        .unwrap_or_default();
    let schema = deltadrop::delta::arrow_schema(&table).unwrap();
    let predicted = deltadrop::athena::reader_features(
        snapshot.metadata().configuration(),
        schema.fields().iter().map(|f| f.as_ref()),
    )
    .into_iter()
    .map(str::to_string)
    .collect();
    (written, predicted)
}
