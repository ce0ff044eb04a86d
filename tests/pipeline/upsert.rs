//! MERGE semantics: updates and inserts, composite keys, duplicates, sequence order, deletes,
//! schema policies, exactly-once.

use deltadrop::steps::UpsertOutcome;

use crate::support::{config, feed, Harness};

/// The `orders` feed (`incoming/orders/` into `tables/orders`, keyed on `id`) and `extra` lines.
fn orders(extra: &str) -> String {
    config(&[feed("orders", extra)])
}

#[tokio::test]
async fn first_load_then_upsert_replaces_matches_and_inserts_new_rows() {
    let h = Harness::new(&orders(""));
    let first = h
        .load(
            "incoming/orders/1.csv",
            "id,name,qty\n1,a,10\n2,b,20\n3,c,30\n",
        )
        .await;
    let upsert = first.report.upsert.unwrap();
    assert!(upsert.changes.created_table);
    let table = h.table("tables/orders").open().await.unwrap().unwrap();
    let configuration = table.snapshot().unwrap().metadata().configuration().clone();
    assert_eq!(
        configuration
            .get("delta.targetFileSize")
            .map(String::as_str),
        Some("67108864"),
        "the feed's target_file_mb (default 64) is the table's delta.targetFileSize"
    );
    assert_eq!(
        (upsert.changes.rows_inserted, upsert.changes.rows_updated),
        (3, 0)
    );

    let second = h
        .load("incoming/orders/2.csv", "id,name,qty\n2,b2,21\n4,d,40\n")
        .await;
    let upsert = second.report.upsert.clone().unwrap();
    assert_eq!(
        (
            upsert.changes.rows_inserted,
            upsert.changes.rows_updated,
            upsert.changes.rows_deleted
        ),
        (1, 1, 0)
    );
    assert_eq!(upsert.version, Some(1));
    assert_eq!(
        h.rows("tables/orders", &["id"]).await,
        ["1|a|10", "2|b2|21", "3|c|30", "4|d|40"]
    );

    let emails = h.emails();
    assert_eq!(emails.len(), 2);
    assert!(emails[1].contains("Subject: [deltadrop] orders: 2.csv loaded (1 inserted, 1 updated, 0 deleted; table version 1)"));
    assert!(emails[1].contains(&h.archived(&second)));
    assert!(h.staging_is_empty());
}

#[tokio::test]
async fn composite_keys_match_on_all_columns() {
    let h = Harness::new(&orders("").replace("keys = [\"id\"]", "keys = [\"region\", \"id\"]"));
    h.load(
        "incoming/orders/1.csv",
        "region,id,qty\neu,1,10\nus,1,11\neu,2,20\n",
    )
    .await;
    h.load("incoming/orders/2.csv", "region,id,qty\nus,1,99\nus,2,5\n")
        .await;
    assert_eq!(
        h.rows("tables/orders", &["region", "id"]).await,
        ["eu|1|10", "eu|2|20", "us|1|99", "us|2|5"]
    );
}

#[tokio::test]
async fn duplicate_keys_in_one_file_the_last_row_wins() {
    let h = Harness::new(&orders(""));
    h.load("incoming/orders/1.csv", "id,name\n1,old\n").await;
    // Key 1 matches a target row, key 2 is new: both appear twice.
    let result = h
        .load(
            "incoming/orders/2.csv",
            "id,name\n1,first\n2,x\n1,last\n2,y\n",
        )
        .await;
    let upsert = result.report.upsert.unwrap();
    assert_eq!(
        (upsert.changes.rows_inserted, upsert.changes.rows_updated),
        (1, 1)
    );
    assert_eq!(h.rows("tables/orders", &["id"]).await, ["1|last", "2|y"]);
}

/// A table's first file with a repeated key is deduplicated and written again (its staged files
/// hold both rows, so they cannot become the table's); keys that increase to a repeat are caught.
#[tokio::test]
async fn a_first_file_with_a_repeated_key_is_deduplicated_not_adopted() {
    let h = Harness::new(&orders(""));
    let result = h
        .load("incoming/orders/1.csv", "id,name\n1,a\n2,b\n2,c\n3,d\n")
        .await;
    let staged = result.report.stage.unwrap();
    assert!(staged.written_for_a_new_table);
    assert!(!staged.keys_strictly_increasing);
    assert_eq!(
        h.rows("tables/orders", &["id"]).await,
        ["1|a", "2|c", "3|d"]
    );
    let history = deltadrop::inspect::summarize(&h.table("tables/orders"), 1)
        .await
        .unwrap()
        .history;
    assert_eq!(history[0].operation, "WRITE");
}

#[tokio::test]
async fn a_feed_whose_files_are_too_large_for_one_s3_copy_writes_its_first_file_again() {
    // 5000 MB files could exceed the 5 GB one CopyObject copies, so the first load does not
    // adopt the staged files: it writes the table (WRITE, not CREATE TABLE).
    let h = Harness::new(&orders("target_file_mb = 5000"));
    let result = h.load("incoming/orders/1.csv", "id,name\n1,a\n2,b\n").await;
    assert!(!result.report.stage.unwrap().written_for_a_new_table);
    assert_eq!(h.rows("tables/orders", &["id"]).await, ["1|a", "2|b"]);
    let history = deltadrop::inspect::summarize(&h.table("tables/orders"), 1)
        .await
        .unwrap()
        .history;
    assert_eq!(history[0].operation, "WRITE");
}

#[tokio::test]
async fn with_a_sequence_column_older_rows_never_win() {
    let h = Harness::new(&orders("").replace(
        "keys = [\"id\"]",
        "keys = [\"id\"]\nsequence_column = \"seq\"",
    ));
    // In one file the highest sequence wins, not the last line.
    h.load(
        "incoming/orders/1.csv",
        "id,name,seq\n1,newest,3\n1,older,2\n2,b,1\n",
    )
    .await;
    assert_eq!(
        h.rows("tables/orders", &["id"]).await,
        ["1|newest|3", "2|b|1"]
    );
    // A late file with older versions of key 1 changes nothing for it, but updates key 2.
    let late = h
        .load(
            "incoming/orders/0.csv",
            "id,name,seq\n1,stale,1\n2,b2,2\n3,c,1\n",
        )
        .await;
    let upsert = late.report.upsert.unwrap();
    assert_eq!(
        (upsert.changes.rows_inserted, upsert.changes.rows_updated),
        (1, 1)
    );
    assert_eq!(
        h.rows("tables/orders", &["id"]).await,
        ["1|newest|3", "2|b2|2", "3|c|1"]
    );
    // An equal sequence is not older: it replaces.
    h.load("incoming/orders/3.csv", "id,name,seq\n1,same-seq,3\n")
        .await;
    assert_eq!(h.rows("tables/orders", &["id"]).await[0], "1|same-seq|3");
}

#[tokio::test]
async fn rows_flagged_as_deletes_are_removed_and_the_flag_is_not_stored() {
    let config = orders("").replace(
        "keys = [\"id\"]",
        "keys = [\"id\"]\nsequence_column = \"seq\"\nchange_type = { column = \"op\", delete_value = \"D\" }",
    );
    let h = Harness::new(&config);
    h.load(
        "incoming/orders/1.csv",
        "id,name,seq,op\n1,a,1,I\n2,b,1,I\n3,c,1,I\n",
    )
    .await;
    // Delete 1; an older delete of 2 must not win; deleting unknown key 9 inserts nothing.
    let result = h
        .load(
            "incoming/orders/2.csv",
            "id,name,seq,op\n1,a,2,D\n2,b,0,D\n9,z,1,D\n3,c2,2,U\n",
        )
        .await;
    let upsert = result.report.upsert.unwrap();
    assert_eq!(
        (
            upsert.changes.rows_inserted,
            upsert.changes.rows_updated,
            upsert.changes.rows_deleted
        ),
        (0, 1, 1)
    );
    assert_eq!(h.rows("tables/orders", &["id"]).await, ["2|b|1", "3|c2|2"]);
    assert_eq!(h.columns("tables/orders").await, ["id", "name", "seq"]);
}

#[tokio::test]
async fn additive_policy_adds_new_columns_and_nulls_missing_ones() {
    let h = Harness::new(&orders(""));
    h.load("incoming/orders/1.csv", "id,name\n1,a\n").await;
    let result = h
        .load("incoming/orders/2.csv", "id,color\n1,red\n2,blue\n")
        .await;
    assert_eq!(result.report.stage.unwrap().new_columns, ["color"]);
    assert_eq!(h.columns("tables/orders").await, ["id", "name", "color"]);
    assert_eq!(
        h.rows("tables/orders", &["id"]).await,
        ["1|∅|red", "2|∅|blue"]
    );
}

#[tokio::test]
async fn strict_policy_accepts_exactly_the_target_columns_in_any_order() {
    let h = Harness::new(&orders("").replace(
        "keys = [\"id\"]",
        "keys = [\"id\"]\nschema_policy = \"strict\"",
    ));
    h.load("incoming/orders/1.csv", "id,name\n1,a\n").await;
    h.load("incoming/orders/2.csv", "name,id\nb,2\n").await;
    assert_eq!(h.rows("tables/orders", &["id"]).await, ["1|a", "2|b"]);
    // New or missing columns are refused (see malformed.rs for the quarantine side).
    h.put("incoming/orders/3.csv", "id,name,extra\n3,c,x\n")
        .await;
    assert_eq!(
        h.run("incoming/orders/3.csv").await.error.unwrap().name(),
        "SchemaMismatch"
    );
}

#[tokio::test]
async fn values_are_cast_to_the_target_types() {
    let h = Harness::new(&orders(""));
    h.load("incoming/orders/1.csv", "id,price,day\n1,1.5,2024-01-01\n")
        .await;
    // "2" fits a double column; the inferred type of a later file does not matter.
    h.load("incoming/orders/2.csv", "id,price,day\n2,2,2024-02-01\n")
        .await;
    assert_eq!(
        h.rows("tables/orders", &["id"]).await,
        ["1|1.5|2024-01-01", "2|2.0|2024-02-01"]
    );
    h.put(
        "incoming/orders/3.csv",
        "id,price,day\n3,1.0,2024-01-01\n4,cheap,2024-01-01\n",
    )
    .await;
    let error = h.run("incoming/orders/3.csv").await.error.unwrap();
    assert_eq!(error.name(), "InvalidValue");
    assert_eq!(
        error.to_string(),
        "incoming/orders/3.csv, line 3, column 'price': value \"cheap\" is not a valid double"
    );
}

/// Exactly once per upload: a run repeated for the same upload changes nothing, while every
/// new upload of a key is applied, even with bytes the key held before (A, B, A ends with A).
#[tokio::test]
async fn every_upload_is_applied_once_and_a_reupload_of_old_bytes_wins() {
    use deltadrop::steps::{archive, stage, upsert};
    let h = Harness::new(&orders(""));
    let key = "incoming/orders/daily.csv";
    let (a, b) = ("id,name\n1,a\n2,a\n", "id,name\n1,b\n2,b\n");
    let first = h.load(key, a).await;
    h.load(key, b).await;
    let third = h.load(key, a).await;
    assert_eq!(
        third.report.upsert.as_ref().unwrap().outcome,
        UpsertOutcome::Applied
    );
    assert_eq!(h.rows("tables/orders", &["id"]).await, ["1|a", "2|a"]);
    // Each upload keeps its own archived copy.
    assert_ne!(h.archived(&first), h.archived(&third));
    assert!(h.exists(&h.archived(&first)) && h.exists(&h.archived(&third)));

    // The same upload run twice (a repeated execution): applied once.
    h.put(key, b).await;
    let run = h.run_input(key).await;
    let staged = stage(&h.env, &run).await.unwrap();
    archive(&h.env, &run).await.unwrap();
    let version = upsert(&h.env, &run, &staged).await.unwrap().version;
    let again = stage(&h.env, &run).await;
    assert_eq!(
        again.unwrap_err().name(),
        "ObjectNotFound",
        "the upload was archived"
    );
    h.put(key, a).await;
    let newer = h.run_input(key).await;
    h.run(key).await;
    assert_eq!(h.rows("tables/orders", &["id"]).await, ["1|a", "2|a"]);
    let repeated = upsert(&h.env, &run, &staged).await.unwrap();
    assert_eq!(repeated.outcome, UpsertOutcome::AlreadyApplied);
    assert!(repeated.version > version && newer.run_id != run.run_id);
    assert_eq!(h.rows("tables/orders", &["id"]).await, ["1|a", "2|a"]);
}

/// A notification that arrives late: upload A of a key is staged, upload B of the same key is
/// applied meanwhile, then A's upsert runs. A must not overwrite B's rows.
#[tokio::test]
async fn an_older_upload_of_a_key_never_overwrites_a_newer_one() {
    use deltadrop::steps::{stage, upsert};
    let h = Harness::new(&orders(""));
    let key = "incoming/orders/daily.csv";
    h.put(key, "id,name\n1,old\n2,old\n").await;
    let older = h.run_input(key).await;
    let staged = stage(&h.env, &older).await.unwrap();
    h.load(key, "id,name\n1,new\n").await;

    let late = upsert(&h.env, &older, &staged).await.unwrap();
    assert_eq!(late.outcome, UpsertOutcome::Superseded);
    assert_eq!(h.rows("tables/orders", &["id"]).await, ["1|new"]);
    // Another key is not affected by this key's order.
    h.load("incoming/orders/other.csv", "id,name\n2,other\n")
        .await;
    assert_eq!(h.rows("tables/orders", &["id"]).await, ["1|new", "2|other"]);
}

/// In a folder (no object versions) a run whose upload was replaced before it read it stops
/// with a named error and touches neither the newer upload nor the table.
#[tokio::test]
async fn a_run_whose_upload_was_replaced_stops_without_touching_the_newer_one() {
    let h = Harness::new(&orders(""));
    let key = "incoming/orders/daily.csv";
    h.put(key, "id,name\n1,old\n").await;
    let replaced = h.run_input(key).await;
    h.put(key, "id,name\n1,new\n").await;
    let result = deltadrop::run::run_file(&h.env, replaced, &|_| {}).await;
    assert_eq!(result.error.as_ref().unwrap().name(), "UploadReplaced");
    assert!(result.report.quarantine.is_none());
    assert!(h.emails().last().unwrap().contains("UploadReplaced"));
    assert_eq!(h.version("tables/orders").await, None);
    h.load(key, std::fs::read(h.path(key)).unwrap()).await;
    assert_eq!(h.rows("tables/orders", &["id"]).await, ["1|new"]);
}

/// The upsert committed, but its response was lost (a timeout, a crash): Step Functions runs the
/// step again, and it must report the done work, not fail on the removed staging table.
#[tokio::test]
async fn an_upsert_retried_after_its_commit_reports_already_applied() {
    use deltadrop::steps::{stage, upsert};
    let h = Harness::new(&orders(""));
    h.load("incoming/orders/1.csv", "id,name\n1,a\n").await;
    h.put("incoming/orders/2.csv", "id,name\n1,b\n2,c\n").await;
    let run = h.run_input("incoming/orders/2.csv").await;
    let staged = stage(&h.env, &run).await.unwrap();
    let first = upsert(&h.env, &run, &staged).await.unwrap();
    assert_eq!(first.outcome, UpsertOutcome::Applied);
    let retried = upsert(&h.env, &run, &staged).await.unwrap();
    assert_eq!(retried.outcome, UpsertOutcome::AlreadyApplied);
    assert_eq!(retried.version, first.version);
    assert_eq!(h.rows("tables/orders", &["id"]).await, ["1|b", "2|c"]);
}

#[tokio::test]
async fn steps_are_safe_to_rerun_after_a_partial_move() {
    use deltadrop::steps::archive::archive_key;
    use deltadrop::steps::quarantine::quarantine_key;
    use deltadrop::steps::{archive, quarantine, Failure};
    let h = Harness::new(&orders(""));
    h.put("incoming/orders/1.csv", "id\n1\n").await;
    let run = h.run_input("incoming/orders/1.csv").await;
    let (archived, quarantined) = (archive_key(&h.env, &run), quarantine_key(&h.env, &run));
    assert_eq!(
        archived,
        format!("archive/incoming/orders/{}/1.csv", run.run_id)
    );
    // A crash after the copy but before the delete leaves the file in both places.
    h.put(&archived, "id\n1\n").await;
    archive(&h.env, &run).await.unwrap();
    assert!(!h.exists("incoming/orders/1.csv") && h.exists(&archived));
    // Running archive again (Step Functions retry) is a success, not a loss.
    archive(&h.env, &run).await.unwrap();
    // A later failure quarantines the file from the archive, twice without harm.
    let failure = Failure {
        error: "CommitConflict".into(),
        cause: "test".into(),
    };
    quarantine(&h.env, &run, &failure).await.unwrap();
    quarantine(&h.env, &run, &failure).await.unwrap();
    assert!(h.exists(&quarantined));
    assert!(h.exists(&format!("{quarantined}.error.json")));
    assert!(!h.exists(&archived));
}

/// A table loaded from a file sorted by key keeps narrow key ranges per file, and a MERGE of a
/// narrow range of keys opens only the files whose range it overlaps.
#[tokio::test]
async fn a_merge_of_a_narrow_key_range_skips_the_other_files() {
    let h =
        Harness::new(&orders("").replace("keys = [\"id\"]", "keys = [\"id\"]\ntarget_file_mb = 1"));
    // Incompressible-ish comments, so that 1 MB files hold a few tens of thousands of rows.
    let comment = |i: u64| {
        format!(
            "{:016x}{:016x}",
            i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            i * i
        )
    };
    let mut first = String::from("id,comment\n");
    for i in 1..=200_000u64 {
        first.push_str(&format!("{i},{}\n", comment(i)));
    }
    let loaded = h.load("incoming/orders/all.csv", first).await;
    let files = loaded.report.upsert.unwrap().changes.files_added;
    assert!(files >= 4, "expected several files, got {files}");

    let mut update = String::from("id,comment\n");
    for i in 100_000..100_100u64 {
        update.push_str(&format!("{i},changed\n"));
    }
    let merged = h.load("incoming/orders/some.csv", update).await;
    let upsert = merged.report.upsert.unwrap();
    assert_eq!(
        (upsert.changes.rows_updated, upsert.changes.rows_inserted),
        (100, 0)
    );
    assert!(
        upsert.changes.files_scanned <= 2 && upsert.changes.files_skipped >= files - 2,
        "scanned {} and skipped {} of {files} files",
        upsert.changes.files_scanned,
        upsert.changes.files_skipped
    );
    let rows = h.rows("tables/orders", &["id"]).await;
    assert_eq!(rows.len(), 200_000);
    assert_eq!(rows[100_049], "100050|changed");
    assert_eq!(rows[99_998], format!("99999|{}", comment(99_999)));
}

/// A feed that applies files in arrival order: a later file waits while an earlier one of its
/// feed is still in incoming/ or staged, then both merge in the order they arrived.
#[tokio::test]
async fn a_feed_in_arrival_order_merges_a_file_only_after_the_earlier_ones() {
    use deltadrop::steps::{archive, stage, upsert};
    let h = Harness::new(&orders("apply_in_arrival_order = true"));
    h.put("incoming/orders/a.csv", "id,name\n1,early\n2,early\n")
        .await;
    h.put("incoming/orders/b.csv", "id,name\n1,late\n").await;
    let later = h.run_input("incoming/orders/b.csv").await;
    let waits = |e: deltadrop::Error| {
        assert_eq!(e.name(), "WaitingForEarlierFile", "{e}");
        assert!(
            e.to_string().contains("waits for incoming/orders/a.csv"),
            "{e}"
        );
    };

    // Locally nothing retries: the later file stays where it is, with a failure email.
    let refused = h.run("incoming/orders/b.csv").await;
    waits(refused.error.unwrap());
    assert!(h.exists("incoming/orders/b.csv") && refused.report.quarantine.is_none());

    // As on AWS, where the runs overlap: the earlier file still in incoming/, then staged.
    let staged_later = stage(&h.env, &later).await.unwrap();
    archive(&h.env, &later).await.unwrap();
    waits(upsert(&h.env, &later, &staged_later).await.unwrap_err());
    let earlier = h.run_input("incoming/orders/a.csv").await;
    let staged_earlier = stage(&h.env, &earlier).await.unwrap();
    archive(&h.env, &earlier).await.unwrap();
    waits(upsert(&h.env, &later, &staged_later).await.unwrap_err());

    upsert(&h.env, &earlier, &staged_earlier).await.unwrap();
    upsert(&h.env, &later, &staged_later).await.unwrap();
    assert_eq!(
        h.rows("tables/orders", &["id"]).await,
        ["1|late", "2|early"]
    );
}

/// Maintenance compacts the small files many loads leave, keeps every row, and writes a
/// checkpoint; files it replaced stay on disk within the VACUUM retention (readers of older
/// versions still need them).
#[tokio::test]
async fn maintenance_compacts_small_files_and_keeps_every_row() {
    let h = Harness::new(&orders(""));
    for i in 0..8 {
        h.load(
            &format!("incoming/orders/{i}.csv"),
            format!("id,name\n{i},n{i}\n{},m{i}\n", i + 100),
        )
        .await;
    }
    let rows = h.rows("tables/orders", &["id"]).await;
    let feed = h.env.config.feed_named("orders").unwrap().clone();
    let done = deltadrop::maintain::maintain(&h.env, &feed)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.files_before, 8, "{done:?}");
    assert_eq!(
        (done.files_after, done.files_compacted, done.files_written),
        (1, 8, 1),
        "{done:?}"
    );
    assert_eq!(
        done.files_vacuumed, 0,
        "within the retention nothing is deleted: {done:?}"
    );
    assert_eq!(h.rows("tables/orders", &["id"]).await, rows);
    let log = h.table_path("tables/orders").join("_delta_log");
    assert!(log
        .join(format!("{:020}.checkpoint.parquet", done.version))
        .is_file());
    // Maintaining again finds nothing to compact.
    let again = deltadrop::maintain::maintain(&h.env, &feed)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.files_before, again.files_compacted), (1, 0));
}

/// Upserts that commit while maintenance runs still land: no row lost, none doubled.
#[tokio::test]
async fn upserts_during_maintenance_all_land() {
    let h = Harness::new(&orders(""));
    for i in 0..6 {
        h.load(
            &format!("incoming/orders/{i}.csv"),
            format!("id,name\n{i},first\n"),
        )
        .await;
    }
    let feed = h.env.config.feed_named("orders").unwrap().clone();
    for round in 0..3 {
        for i in 0..3 {
            h.put(
                &format!("incoming/orders/r{round}-{i}.csv"),
                format!(
                    "id,name\n{i},round{round}\n{},new{round}\n",
                    100 + round * 10 + i
                ),
            )
            .await;
        }
        let maintained = deltadrop::maintain::maintain(&h.env, &feed);
        let loads = futures::future::join_all(
            (0..3).map(|i| h.run_key(format!("incoming/orders/r{round}-{i}.csv"))),
        );
        let (maintained, loads) = tokio::join!(maintained, loads);
        maintained.unwrap();
        for load in loads {
            assert!(load.succeeded(), "{:?}", load.error);
        }
    }
    let rows = h.rows("tables/orders", &["id"]).await;
    assert_eq!(rows.len(), 6 + 9, "{rows:?}");
    assert!(rows.contains(&"0|round2".to_string()) && rows.contains(&"122|new2".to_string()));
}

/// The stale-file watch names a file that waited in incoming/ past the threshold (and emails
/// it), not one that just arrived.
#[tokio::test]
async fn the_watch_names_files_nobody_loaded() {
    // Two feeds whose incoming prefixes nest (`incoming/` holds `incoming/orders/`): each file
    // is still named once.
    let glob = "[[feeds]]\nname = \"any\"\nincoming = \"incoming/*/any-*.csv\"\ntable = \"tables/any\"\nkeys = [\"id\"]\n";
    let h = Harness::new(&config(&[feed("orders", ""), glob.to_string()]));
    h.put("incoming/orders/forgotten.csv", "id\n1\n").await;
    h.put("incoming/orders/fresh.csv", "id\n2\n").await;
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    let make_old = |key: &str| {
        std::fs::File::options()
            .write(true)
            .open(h.path(key))
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap()
    };
    make_old("incoming/orders/forgotten.csv");
    let watched =
        deltadrop::watch::watch(&h.env, chrono::Duration::minutes(60), chrono::Utc::now())
            .await
            .unwrap();
    let stale: Vec<&str> = watched.stale.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(stale, ["incoming/orders/forgotten.csv"]);
    assert_eq!(watched.stale[0].feed.as_deref(), Some("orders"));
    assert!(watched.oldest_minutes >= 119, "{watched:?}");
    let email = h.emails().pop().unwrap();
    assert!(
        email.contains("1 file(s) waiting in incoming for more than 60 min"),
        "{email}"
    );
    assert!(email.contains("incoming/orders/forgotten.csv"), "{email}");
    assert!(email.contains("To stop these emails"), "{email}");

    // The watch runs every 15 minutes: a file is emailed once, then reminded of daily.
    let watch_at = |minutes_later: i64| {
        let now = chrono::Utc::now() + chrono::Duration::minutes(minutes_later);
        let env = &h.env;
        async move {
            deltadrop::watch::watch(env, chrono::Duration::minutes(60), now)
                .await
                .unwrap()
        }
    };
    let emails = || h.emails().len();
    let again = watch_at(15).await;
    assert_eq!((again.stale.len(), &again.delivered), (1, &None));
    assert!(
        again.held.as_deref().unwrap().contains("emailed already"),
        "{again:?}"
    );
    assert_eq!(emails(), 1);
    // A second file becomes stale: one email names both, the new one marked.
    make_old("incoming/orders/fresh.csv");
    let both = watch_at(30).await;
    assert!(both.delivered.is_some(), "{both:?}");
    let email = h.emails().pop().unwrap();
    assert!(email.contains("2 file(s) waiting"), "{email}");
    assert!(
        email.contains("Waiting (new)") && email.contains("fresh.csv"),
        "{email}"
    );
    assert_eq!(watch_at(45).await.delivered, None);
    // A day later, a reminder (default stale_reminder_hours = 24).
    assert!(watch_at(30 + 24 * 60).await.delivered.is_some());
    assert_eq!(emails(), 3);
    // A file loaded (here deleted) and stale again later is new again.
    std::fs::remove_file(h.path("incoming/orders/fresh.csv")).unwrap();
    assert_eq!(watch_at(24 * 60 + 45).await.delivered, None);
    h.put("incoming/orders/fresh.csv", "id\n2\n").await;
    make_old("incoming/orders/fresh.csv");
    assert!(watch_at(24 * 60 + 60).await.delivered.is_some());
    assert_eq!(emails(), 4);
}

/// With `order_by_keys`, maintenance rewrites files whose key ranges overlap (files written by
/// loads of unsorted keys) so that each holds a narrow range: a MERGE of a few keys then skips
/// files it had to read before.
#[tokio::test]
async fn maintenance_ordered_by_keys_lets_a_merge_skip_files() {
    let h = Harness::new(&orders(
        "target_file_mb = 1\n[feeds.maintenance]\norder_by_keys = true",
    ));
    // Each load brings keys from the whole range: every file overlaps every other.
    for load in 0u64..6 {
        // Names that do not compress, so that the table needs several 1 MB files.
        let rows: String = (0u64..12000)
            .map(|i| {
                let id = i * 6 + load;
                let noise = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                format!("{id},{noise:016x}{:016x}\n", noise.rotate_left(29) ^ id)
            })
            .collect();
        h.load(
            &format!("incoming/orders/{load}.csv"),
            format!("id,name\n{rows}"),
        )
        .await;
    }
    let narrow = |name: &str| {
        format!(
            "id,name\n{}",
            (100..110)
                .map(|i| format!("{i},{name}\n"))
                .collect::<String>()
        )
    };
    let before = h.load("incoming/orders/narrow-1.csv", narrow("a")).await;
    let feed = h.env.config.feed_named("orders").unwrap().clone();
    deltadrop::maintain::maintain(&h.env, &feed)
        .await
        .unwrap()
        .unwrap();
    let after = h.load("incoming/orders/narrow-2.csv", narrow("b")).await;
    let changes = |r: &deltadrop::run::RunResult| r.report.upsert.as_ref().unwrap().changes;
    assert_eq!(changes(&before).files_skipped, 0, "{:?}", changes(&before));
    // Ordered, the 10 keys live in one file: the MERGE reads it and skips the others.
    assert_eq!(changes(&after).files_scanned, 1, "{:?}", changes(&after));
    assert!(changes(&after).files_skipped >= 1, "{:?}", changes(&after));
    assert_eq!(h.rows("tables/orders", &["id"]).await.len(), 72_000);
}

/// With the change data feed on, the success email shows what the file changed, read back from
/// the table's changes: each updated key with the columns that changed (before → after, long
/// values cut, escaped in the HTML part), the inserted and deleted keys; `email_sample = 0`
/// leaves it out.
#[tokio::test]
async fn the_email_shows_what_a_file_changed_before_and_after() {
    let long = format!("<b>{}", "x".repeat(100));
    let cut = format!("<b>{}…", "x".repeat(57));
    for (setting, shown) in [("", true), ("email_sample = 0\n", false)] {
        let h = Harness::new(&orders(&format!(
            "{setting}change_data_feed = true\n\
             change_type = {{ column = \"op\", delete_value = \"D\" }}"
        )));
        h.load(
            "incoming/orders/1.csv",
            "id,name,qty,op\n1,a,10,I\n2,b,20,I\n3,c,30,I\n",
        )
        .await;
        let merged = h
            .load(
                "incoming/orders/2.csv",
                format!("id,name,qty,op\n1,a,10,I\n2,{long},21,I\n3,c,30,D\n4,d,40,I\n"),
            )
            .await;
        let upsert = merged.report.upsert.unwrap();
        let email = h.emails().pop().unwrap();
        if !shown {
            assert_eq!(upsert.change_sample, None);
            assert!(!email.contains("Inserted"), "{email}");
            continue;
        }
        let sample = upsert.change_sample.expect("a sample of the changes");
        assert_eq!(Some(sample.version), upsert.version);
        assert_eq!(
            (sample.inserted, sample.deleted),
            (vec!["id=4".to_string()], vec!["id=3".to_string()])
        );
        let mut updated: Vec<String> = sample.updated.iter().map(|u| u.line()).collect();
        updated.sort();
        let changed = format!("id=2: name b → {cut}; qty 20 → 21");
        assert_eq!(updated, ["id=1: no value changed", changed.as_str()]);
        let (text, html) = email.split_once("Content-Type: text/html").unwrap();
        for (label, value) in [
            ("Updated", changed.as_str()),
            ("Inserted", "id=4"),
            ("Deleted", "id=3"),
        ] {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(label) && l.trim_end().ends_with(value)),
                "{label} {value:?} in {text}"
            );
        }
        assert!(html.contains("name b → &lt;b&gt;xxx"), "escaped: {html}");
        assert!(!html.contains("<b>x"), "no raw HTML: {html}");
    }
}
