//! The cost check: before a MERGE starts, the upsert knows from the table's log which data
//! files it will read and rewrite, reports it, and refuses by name a MERGE over its budget (the
//! feed's `max_rewrite_gb`, or what the function can rewrite in the time it has left).

use std::time::{Duration, SystemTime};

use crate::support::{config, feed, Harness};

/// Loads five files of 100 new keys each (0..99, 100..199, ...): five data files with disjoint
/// key ranges, since a MERGE that only inserts writes its rows into a new file.
async fn five_ranges(h: &Harness) {
    for part in 0..5 {
        let mut csv = String::from("id,qty\n");
        for id in part * 100..(part + 1) * 100 {
            csv.push_str(&format!("{id},1\n"));
        }
        h.load(&format!("incoming/orders/{part}.csv"), csv).await;
    }
    let table = h.table("tables/orders").open().await.unwrap().unwrap();
    assert_eq!(table.get_file_uris().unwrap().count(), 5);
}

/// Two updated keys, in the second and third files' ranges.
const TWO_RANGES: &str = "id,qty\n150,7\n250,8\n";

#[tokio::test]
async fn the_upsert_reports_what_its_merge_would_rewrite_before_it_starts() {
    let h = Harness::new(&config(&[feed("orders", "")]));
    five_ranges(&h).await;
    let merged = h.load("incoming/orders/update.csv", TWO_RANGES).await;
    let changes = merged.report.upsert.unwrap().changes;
    let estimate = changes.estimate.expect("a MERGE is estimated");
    assert_eq!((estimate.files, estimate.rows), (2, 200));
    assert_eq!(
        (
            changes.files_scanned,
            changes.files_skipped,
            changes.files_removed
        ),
        (2, 3, 2),
        "the files the estimate names are the ones the MERGE read and rewrote"
    );
    assert!(estimate.bytes > 0);
    assert_eq!(changes.bytes_rewritten, estimate.bytes);
    assert_eq!(changes.rows_updated, 2);

    // `deltadrop status` shows what the latest MERGEs rewrote: the four inserts rewrote nothing.
    let status = deltadrop::status::status(&h.env.config, h.env.storage.as_ref())
        .await
        .unwrap();
    let rewrites = status[0].rewrites.expect("the table exists");
    assert_eq!(rewrites.merges, 5);
    assert_eq!(rewrites.largest_bytes, changes.bytes_rewritten);
    assert_eq!(rewrites.average_bytes, changes.bytes_rewritten / 5);
    let table = h.table("tables/orders").open().await.unwrap().unwrap();
    let files = table.snapshot().unwrap().log_data();
    let table_bytes: i64 = files.iter().map(|f| f.size()).sum();
    assert_eq!(rewrites.table_bytes, table_bytes as u64);
}

#[tokio::test]
async fn a_merge_over_the_feeds_budget_is_refused_by_name_and_changes_nothing() {
    // 2 KB: less than the two data files the update touches.
    let h = Harness::new(&config(&[feed("orders", "max_rewrite_gb = 0.000002")]));
    five_ranges(&h).await; // each insert reads no existing file: within any budget
    let version = h.version("tables/orders").await;
    h.put("incoming/orders/update.csv", TWO_RANGES).await;
    let failed = h.run("incoming/orders/update.csv").await;
    let error = failed.error.as_ref().expect("refused");
    assert_eq!(error.name(), "TooLargeForFunction");
    let message = error.to_string();
    for part in [
        "incoming/orders/update.csv",
        "would read and rewrite 2 data files (",
        "200 rows), over the budget of 0.000 GB (the feed's max_rewrite_gb = 0.000002)",
    ] {
        assert!(message.contains(part), "{message}");
    }
    assert_eq!(h.version("tables/orders").await, version, "no commit");
    assert!(h
        .rows("tables/orders", &["id"])
        .await
        .contains(&"150|1".to_string()));
    assert!(
        h.exists(&h.quarantined(&failed)),
        "the file is kept in quarantine"
    );
    let email = h.emails().pop().unwrap();
    assert!(email.contains("TooLargeForFunction"), "{email}");
    assert!(email.contains("partition the table"), "the advice: {email}");
}

#[tokio::test]
async fn a_merge_is_refused_when_the_function_has_no_time_left_for_it() {
    let mut h = Harness::new(&config(&[feed("orders", "")]));
    five_ranges(&h).await;
    // The reserve for the commit (60 s) is all that is left: nothing may be rewritten...
    h.env.deadline = Some(SystemTime::now() + Duration::from_secs(59));
    h.put("incoming/orders/update.csv", TWO_RANGES).await;
    let failed = h.run("incoming/orders/update.csv").await;
    let error = failed.error.expect("refused");
    assert_eq!(error.name(), "TooLargeForFunction");
    assert!(
        error.to_string().contains("in its 58 s left")
            || error.to_string().contains("in its 59 s left"),
        "{error}"
    );
    // ... while a file that touches no data file of the table still loads.
    h.load("incoming/orders/new.csv", "id,qty\n900,1\n").await;
    // With a function's full 840 s, the update fits.
    h.env.deadline = Some(SystemTime::now() + Duration::from_secs(840));
    h.put("incoming/orders/update-2.csv", TWO_RANGES).await;
    let loaded = h.run("incoming/orders/update-2.csv").await;
    assert!(loaded.error.is_none(), "{:?}", loaded.error);
    assert!(h
        .rows("tables/orders", &["id"])
        .await
        .contains(&"150|7".to_string()));
}

/// `rows` rows of `keys` distinct keys (each repeated), with a 60-character text per row and
/// the row's number as the sequence: the last of each key wins.
fn repeated_keys(rows: u64, keys: u64) -> String {
    let mut csv = String::from("id,seq,note\n");
    for row in 0..rows {
        csv.push_str(&format!("{},{row},{row:060}\n", row % keys));
    }
    csv
}

/// Far less than the file below needs unbounded, more than a sort needs to spill (DataFusion
/// reserves 10 MB to merge its spilled runs).
const POOL_MB: u64 = 32;

fn with_pool(mut h: Harness, megabytes: u64) -> Harness {
    h.env.merge_memory = Some(deltadrop::MergeMemory {
        bytes: megabytes * 1024 * 1024,
        source: "the test's pool".into(),
    });
    h
}

#[tokio::test]
async fn a_merge_spills_beyond_its_memory_pool_or_fails_by_name() {
    let sequenced = config(&[feed("orders", "sequence_column = \"seq\"")]);
    let unbounded = Harness::new(&sequenced);
    let bounded = with_pool(Harness::new(&sequenced), POOL_MB);
    // 600,000 rows (~50 MB) for 1,000 keys: resolving the repeated keys sorts every row, more
    // than the pool holds, so the sort spills; the MERGE then joins 1,000 rows.
    let file = repeated_keys(600_000, 1_000);
    for h in [&unbounded, &bounded] {
        h.load("incoming/orders/0.csv", "id,seq,note\n1,0,first\n")
            .await;
        let merged = h.load("incoming/orders/big.csv", &file).await;
        let changes = merged.report.upsert.unwrap().changes;
        assert_eq!((changes.rows_updated, changes.rows_inserted), (1, 999));
    }
    let rows = bounded.rows("tables/orders", &["id"]).await;
    assert_eq!(rows, unbounded.rows("tables/orders", &["id"]).await);
    assert_eq!(rows[7], format!("7|599007|{:060}", 599_007));

    // All 600,000 rows of one key: the resolution streams over the sorted rows instead of
    // holding the key's rows (a window over one key held them all and exhausted the pool).
    let one_key = with_pool(Harness::new(&sequenced), POOL_MB);
    let merged = one_key
        .load("incoming/orders/one-key.csv", repeated_keys(600_000, 1))
        .await;
    let changes = merged.report.upsert.unwrap().changes;
    assert_eq!((changes.rows_inserted, changes.created_table), (1, true));
    assert_eq!(
        one_key.rows("tables/orders", &["id"]).await,
        [format!("0|599999|{:060}", 599_999)]
    );

    // A pool below what the sort needs to merge its spilled runs: the file fails by name,
    // before any commit, instead of the process being killed.
    let h = with_pool(Harness::new(&sequenced), 2);
    h.load("incoming/orders/0.csv", "id,seq,note\n1,0,first\n")
        .await;
    let version = h.version("tables/orders").await;
    h.put("incoming/orders/big.csv", &file).await;
    let failed = h.run("incoming/orders/big.csv").await;
    let error = failed.error.clone().expect("the pool is too small");
    assert_eq!(error.name(), "TooLargeForFunction", "{error}");
    let message = error.to_string();
    for part in [
        "needed more memory for 600000 staged rows than its operators could spill to disk",
        "Resources exhausted",
        "over a memory pool of 2 MB (the test's pool)",
    ] {
        assert!(message.contains(part), "{message}");
    }
    assert_eq!(h.version("tables/orders").await, version, "no commit");
    assert!(h.exists(&h.quarantined(&failed)));
}

/// The Parquet row groups in the table's current data files, rows per group.
async fn row_groups(h: &Harness) -> Vec<Vec<i64>> {
    use deltalake::parquet::file::reader::{FileReader, SerializedFileReader};
    let table = h.table("tables/orders").open().await.unwrap().unwrap();
    let files: Vec<String> = table.get_file_uris().unwrap().collect();
    files
        .iter()
        .map(|uri| {
            let path = uri.strip_prefix("file://").unwrap_or(uri);
            let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
            let groups = reader.metadata().row_groups();
            groups.iter().map(|g| g.num_rows()).collect()
        })
        .collect()
}

#[tokio::test]
async fn a_merge_writes_its_files_in_bounded_row_groups() {
    let h = Harness::new(&config(&[feed("orders", "")]));
    let mut csv = String::from("id,qty\n");
    for id in 0..300_000 {
        csv.push_str(&format!("{id},1\n"));
    }
    h.load("incoming/orders/0.csv", csv).await;
    assert_eq!(
        row_groups(&h).await,
        [vec![300_000]],
        "the first load's one file"
    );
    // One updated key: the MERGE rewrites the file, encoding at most 131,072 rows at a time.
    h.load("incoming/orders/1.csv", "id,qty\n5,2\n").await;
    assert_eq!(row_groups(&h).await, [vec![131_072, 131_072, 37_856]]);
    assert!(h
        .rows("tables/orders", &["id"])
        .await
        .contains(&"5|2".to_string()));
}
