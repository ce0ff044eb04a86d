//! Partitioned tables: the first file writes the partitions, a MERGE reads and rewrites only the
//! partitions its rows fall in, and the Python `deltalake` reader sees the same rows and layout.

use crate::crosscheck::{read_with_duckdb, read_with_python};
use crate::support::{config, feed, Harness};

const MONTHS: u32 = 30;

/// `order_month` derived from the key `order_date`.
fn partitioned() -> String {
    config(&[feed(
        "orders",
        r#"partition_by = [{ name = "order_month", from = "order_date", by = "month" }]
column_types = { order_date = "date" }"#,
    )
    .replace(r#"keys = ["id"]"#, r#"keys = ["id", "order_date"]"#)])
}

/// Month `m` (0-based) from January 2022, as `YYYY-MM`.
fn month(m: u32) -> String {
    format!("{}-{:02}", 2022 + m / 12, m % 12 + 1)
}

#[tokio::test]
async fn a_merge_into_a_partitioned_table_touches_only_the_partitions_of_its_rows() {
    let h = Harness::new(&partitioned());
    let mut first = String::from("id,order_date,qty\n");
    for m in 0..MONTHS {
        for day in [3, 17] {
            first.push_str(&format!("{},{}-{day:02},1\n", m * 100 + day, month(m)));
        }
    }
    let created = h.load("incoming/orders/all.csv", &first).await;
    let staged = created.report.stage.clone().unwrap();
    assert!(
        staged.written_for_a_new_table,
        "the stage wrote the partitions, a few at a time; the first load adopts its files"
    );
    let creation = created.report.upsert.unwrap().changes;
    assert!(creation.created_table);
    assert_eq!(creation.partitions_touched, MONTHS as u64);
    let table = h.table("tables/orders").open().await.unwrap().unwrap();
    let metadata = table.snapshot().unwrap().metadata().clone();
    assert_eq!(metadata.partition_columns(), ["order_month"]);
    let files: Vec<String> = table.get_file_uris().unwrap().collect();
    assert_eq!(files.len(), MONTHS as usize, "{files:#?}");
    assert!(
        files.iter().any(|f| f.contains("order_month=2023-03/")),
        "{files:#?}"
    );

    // Two months change: one row updated in each, one row inserted in the second.
    let update = format!(
        "id,order_date,qty\n{},{}-03,7\n{},{}-17,8\n9999,{}-28,9\n",
        14 * 100 + 3,
        month(14),
        29 * 100 + 17,
        month(29),
        month(29)
    );
    let merged = h.load("incoming/orders/update.csv", &update).await;
    let changes = merged.report.upsert.unwrap().changes;
    assert_eq!((changes.rows_updated, changes.rows_inserted), (2, 1));
    assert_eq!(
        (changes.files_scanned, changes.files_skipped),
        (2, MONTHS as u64 - 2),
        "only the two touched partitions are read"
    );
    assert_eq!(changes.partitions_touched, 2);
    let estimate = changes.estimate.expect("the cost check ran");
    assert_eq!(
        (estimate.files, estimate.rows),
        (2, 4),
        "the two partitions' files"
    );
    assert_eq!(changes.bytes_rewritten, estimate.bytes);

    let rows = h.rows("tables/orders", &["id"]).await;
    assert_eq!(rows.len(), 2 * MONTHS as usize + 1);
    assert!(
        rows.contains(&"1403|2023-03-03|7|2023-03".to_string()),
        "{rows:#?}"
    );
    assert!(
        rows.contains(&"9999|2024-06-28|9|2024-06".to_string()),
        "{rows:#?}"
    );
    let python = read_with_python(&h.table_path("tables/orders"), "id");
    assert_eq!(
        python["partition_columns"],
        serde_json::json!(["order_month"])
    );
    let python_rows: Vec<String> = serde_json::from_value(python["rows"].clone()).unwrap();
    assert_eq!(
        python_rows, rows,
        "the Python reader sees the same rows and partition values"
    );
    let duckdb = read_with_duckdb(&h.table_path("tables/orders"), "id");
    assert_eq!(
        duckdb["columns"],
        serde_json::json!(["id", "order_date", "qty", "order_month"])
    );
    let duckdb_rows: Vec<String> = serde_json::from_value(duckdb["rows"].clone()).unwrap();
    assert_eq!(
        duckdb_rows, rows,
        "DuckDB sees the same rows and partition values"
    );
}

#[tokio::test]
async fn a_table_keeps_its_partitions_when_the_feed_changes_them() {
    let h = Harness::new(&config(&[feed("orders", "")]));
    h.load(
        "incoming/orders/1.csv",
        "id,order_date,qty\n1,2024-01-01,1\n",
    )
    .await;
    let h = h.with_config(&partitioned());
    h.put(
        "incoming/orders/2.csv",
        "id,order_date,qty\n1,2024-01-01,2\n",
    )
    .await;
    let failed = h.run("incoming/orders/2.csv").await;
    let error = failed.error.expect("refused");
    assert_eq!(error.name(), "ConfigError");
    assert!(
        error
            .to_string()
            .contains("partitioned by [], the feed says [\"order_month\"]"),
        "{error}"
    );
    assert_eq!(h.rows("tables/orders", &["id"]).await, ["1|2024-01-01|1"]);
}

#[tokio::test]
async fn maintenance_orders_each_partition_by_the_other_keys() {
    let feed = crate::support::feed(
        "orders",
        "partition_by = [\"region\"]\n[feeds.maintenance]\norder_by_keys = true",
    )
    .replace(r#"keys = ["id"]"#, r#"keys = ["region", "id"]"#);
    let h = Harness::new(&config(&[feed]));
    for (file, rows) in [("1.csv", "eu,2,1\nus,1,1\n"), ("2.csv", "eu,1,2\nus,2,2\n")] {
        h.load(
            &format!("incoming/orders/{file}"),
            format!("region,id,qty\n{rows}"),
        )
        .await;
    }
    let feed = h.env.config.feed_named("orders").unwrap().clone();
    // Z-ordering by a partition column is an error in delta-rs: only `id` orders the files.
    let maintained = deltadrop::maintain::maintain(&h.env, &feed)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((maintained.files_before, maintained.files_after), (4, 2));
    let table = h.table("tables/orders").open().await.unwrap().unwrap();
    let files: Vec<String> = table.get_file_uris().unwrap().collect();
    assert!(files.iter().any(|f| f.contains("region=eu/")), "{files:#?}");
    assert_eq!(
        h.rows("tables/orders", &["region", "id"]).await,
        ["eu|1|2", "eu|2|1", "us|1|1", "us|2|2"]
    );
}

#[tokio::test]
async fn a_first_file_of_many_interleaved_partitions_writes_each_partition_whole() {
    let h = Harness::new(&partitioned());
    // 15,000 rows, the months in turn: more partitions than the first load keeps open at once
    // (16), and more rows than one batch, so a partition continues across batches.
    let mut first = String::from("id,order_date,qty\n");
    for id in 0..15_000u32 {
        first.push_str(&format!("{id},{}-09,{}\n", month(id % MONTHS), id % 7));
    }
    let created = h.load("incoming/orders/all.csv", &first).await;
    let staged = created.report.stage.clone().unwrap();
    assert!(
        !staged.written_for_a_new_table,
        "a partition came back: staged again for the first load to sort"
    );
    let creation = created.report.upsert.unwrap().changes;
    assert_eq!(
        (creation.rows_inserted, creation.partitions_touched),
        (15_000, MONTHS as u64)
    );
    let table = h.table("tables/orders").open().await.unwrap().unwrap();
    let files: Vec<String> = table.get_file_uris().unwrap().collect();
    assert_eq!(
        files.len(),
        MONTHS as usize,
        "one file per month: {files:#?}"
    );
    assert_eq!(creation.files_added, MONTHS as u64);
    let rows = h.rows("tables/orders", &["id"]).await;
    assert_eq!(rows.len(), 15_000);
    assert_eq!(rows[31], format!("31|{}-09|3|{}", month(1), month(1)));
    let python = read_with_python(&h.table_path("tables/orders"), "id");
    let python_rows: Vec<String> = serde_json::from_value(python["rows"].clone()).unwrap();
    assert_eq!(python_rows, rows, "the Python reader sees the same rows");
}
