//! What AWS would do with a first deploy and a handful of files: S3 → SQS → trigger → Step
//! Functions → the four steps, with the checks moto cannot make itself (IAM, the 256 KB state
//! limit) made on what the proxy saw.

use std::sync::atomic::Ordering;

use deltadrop_aws::{invoke, Function};
use serde_json::{json, Value};

use crate::emulator::{ACCOUNT, REGION};
use crate::world::{
    in_run_folder, notified_key, Finished, World, BUCKET, SENDER, STATE_LIMIT_BYTES,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn files_dropped_in_the_bucket_become_a_delta_table_through_the_real_state_machine() {
    let started = std::time::Instant::now();
    // Each scenario's start on stderr: a failure's output (whose tail CI keeps) says which
    // scenario failed and when.
    macro_rules! scenario {
        ($call:expr) => {{
            eprintln!(
                "[{:>4} s] {}",
                started.elapsed().as_secs(),
                stringify!($call)
            );
            $call.await
        }};
    }
    let world = World::new().await;
    scenario!(first_deploy_before_the_configuration(&world));
    scenario!(an_upsert_and_a_duplicated_notification(&world));
    scenario!(a_malformed_file_is_quarantined(&world));
    scenario!(a_very_wide_file_and_a_huge_bad_value_stay_within_the_state_limit(&world));
    scenario!(a_mail_failure_does_not_fail_a_load(&world));
    let late = scenario!(a_failure_after_the_archive_moves_the_file_to_quarantine(
        &world
    ));
    scenario!(a_quarantined_file_replayed_runs_again(&world, &late));
    scenario!(the_same_bytes_dropped_again_are_loaded_again(&world));
    scenario!(a_late_and_repeated_notification_never_undoes_a_newer_upload(&world));
    scenario!(a_failed_upload_is_quarantined_without_touching_a_newer_upload_of_its_key(&world));
    scenario!(a_feed_in_arrival_order_waits_for_the_earlier_file(&world));
    scenario!(an_execution_stopped_by_an_operator_leaves_its_file_archived(&world));
    scenario!(a_burst_for_one_table_shares_commits_and_one_email_per_commit(&world));
    scenario!(a_partitioned_table_on_s3_reads_only_the_partitions_a_file_touches(&world));
    scenario!(bad_rows_are_set_aside_in_a_rejects_file_and_the_rest_loads(
        &world
    ));
    // Before the watch's scenario, which leaves a notification in the queue.
    scenario!(a_large_file_is_staged_in_chunks_by_the_distributed_maps(
        &world
    ));
    // After the chunks' scenario: it compares with the table that one loaded whole.
    scenario!(crate::contained::a_compressed_large_file_is_staged_by_the_container_tier(&world));
    scenario!(
        crate::contained::random_files_give_the_same_table_in_a_container_as_in_the_functions(
            &world
        )
    );
    scenario!(a_large_parquet_file_is_staged_by_row_group(&world));
    scenario!(crate::catalog::tables_are_registered_in_the_glue_catalog(
        &world
    ));
    scenario!(answers_refused_as_gone_are_dropped_and_the_files_sent_again(&world));
    scenario!(tagged_uploads_keep_their_tags_in_archive_and_quarantine(
        &world
    ));
    scenario!(keys_near_s3s_limit_are_archived_and_quarantined(&world));
    scenario!(a_throttled_account_still_loads_or_quarantines_every_file(
        &world
    ));
    scenario!(crate::faults::files_under_faults_are_applied_once_or_quarantined(&world));
    let maintenance = scenario!(the_scheduled_maintenance_compacts_every_table(&world));
    scenario!(the_watch_names_a_file_nobody_loaded(&world));
    // Last before the IAM check: once a multipart upload has completed, moto's
    // /moto-api/data.json (where the emails are read) answers 500.
    scenario!(a_copy_in_parts_keeps_the_bytes_and_the_tags(&world));
    scenario!(every_call_is_one_the_function_policy_allows(&world));
    scenario!(every_alarm_fires_in_some_scenario(&world, &maintenance));
}

/// S3's test event and a file arrive before the configuration: the test event is acknowledged,
/// the file's message fails (SQS retries it, then dead-letters it) and the file stays where it
/// is; once the configuration is there, the redelivered message loads it.
async fn first_deploy_before_the_configuration(world: &World) {
    world
        .upload(
            "incoming/orders/first.csv",
            "order_id,status,amount\n1,new,10.5\n2,new,20\n",
        )
        .await;
    let batch = world.receive_notifications().await;
    assert!(
        batch.to_string().contains("s3:TestEvent"),
        "moto queues S3's test event when notifications are configured: {batch}"
    );
    let response = world.trigger(&batch).await;
    let file_message = batch["Records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| !m["body"].as_str().unwrap().contains("s3:TestEvent"))
        .unwrap()["messageId"]
        .clone();
    assert_eq!(
        response["batchItemFailures"],
        json!([{"itemIdentifier": file_message}]),
        "only the file's message fails without a configuration"
    );
    let run = json!({"run": {"run_id": "early", "key": "incoming/orders/first.csv", "feed": "orders", "started_at": "2026-11-26T00:00:00Z"}});
    let error = invoke(world.ctx(Function::Stage), Function::Stage, run)
        .await
        .unwrap_err();
    assert_eq!(error.error_type, "ConfigError", "{}", error.error_message);
    assert!(
        error
            .error_message
            .contains("s3://deltadrop-e2e/deltadrop.toml: the configuration does not exist"),
        "{}",
        error.error_message
    );
    assert!(world.exists("incoming/orders/first.csv").await);

    world.upload_config().await;
    let first = world.started_execution("first.csv", &batch).await;
    let (status, error, output) = world.finished(&first).await;
    assert_eq!((status.as_str(), error), ("SUCCEEDED", None), "{output:#}");
    assert_eq!(output["upsert"]["rows_inserted"], 2, "{output:#}");
    assert_eq!(output["stage"]["rows"], 2);
    assert_eq!(world.rows().await, ["1|new|10.5", "2|new|20.0"]);
    assert!(
        world
            .exists(&in_run_folder(
                "archive/",
                "incoming/orders/first.csv",
                &first
            ))
            .await
    );
    assert!(!world.exists("incoming/orders/first.csv").await);
    let emails = world.emails().await;
    assert_eq!(emails.len(), 1, "{emails:#?}");
    assert!(
        emails[0].to_string().contains("first.csv loaded"),
        "{:#}",
        emails[0]
    );
}

async fn an_upsert_and_a_duplicated_notification(world: &World) {
    world
        .upload(
            "incoming/orders/second file.csv",
            "order_id,status,amount\n2,shipped,20\n3,new,30\n",
        )
        .await;
    let batch = world.receive_notifications().await;
    assert!(
        batch.to_string().contains("second+file.csv"),
        "S3 sends keys URL-encoded: {batch}"
    );
    let second = world.started_execution("second file.csv", &batch).await;
    let again = world.trigger(&batch).await;
    assert_eq!(again["batchItemFailures"], json!([]));
    let (status, _, output) = world.finished(&second).await;
    assert_eq!(status, "SUCCEEDED", "{output:#}");
    assert_eq!(
        (
            output["upsert"]["rows_inserted"].clone(),
            output["upsert"]["rows_updated"].clone()
        ),
        (json!(1), json!(1))
    );
    assert_eq!(
        world.rows().await,
        ["1|new|10.5", "2|shipped|20.0", "3|new|30.0"]
    );
    assert_eq!(
        world.executions().await.len(),
        2,
        "the duplicate notification started an execution"
    );
}

async fn a_malformed_file_is_quarantined(world: &World) {
    let bad = world
        .drop_file("incoming/orders/bad.csv", "order_id,status,amount\n4,new\n")
        .await;
    assert_eq!(
        (bad.status.as_str(), bad.error.as_deref()),
        ("FAILED", Some("MalformedFile"))
    );
    let quarantined = in_run_folder("quarantine/", "incoming/orders/bad.csv", &bad.name);
    assert!(world.exists(&quarantined).await);
    // The report holds the message, as locally: not the Lambda error JSON Step Functions passes.
    let report: serde_json::Value =
        serde_json::from_str(&world.read(&format!("{quarantined}.error.json")).await).unwrap();
    assert_eq!(report["error"], "MalformedFile");
    assert_eq!(
        report["message"],
        "incoming/orders/bad.csv, line 2: expected 3 fields, found 2"
    );
    assert!(!world.exists("incoming/orders/bad.csv").await);
    let emails = world.emails().await;
    assert_eq!(emails.len(), 3);
    let failure = emails
        .iter()
        .map(|e| e.to_string())
        .find(|e| e.contains("FAILED orders: bad.csv"))
        .expect("a failure email");
    assert!(
        failure.contains("line 2: expected 3 fields, found 2"),
        "{failure}"
    );
    assert!(
        failure.contains("console.aws.amazon.com/states"),
        "{failure}"
    );
    assert_eq!(
        world.rows().await.len(),
        3,
        "the bad file changed the table"
    );
}

/// 4,000 columns of 28 characters would put ~250 KB of column names in Stage's output (twice
/// on a first load), and a 300 KB value in an error's cause: both must stay under the limit.
async fn a_very_wide_file_and_a_huge_bad_value_stay_within_the_state_limit(world: &World) {
    let header: Vec<String> = std::iter::once("id".to_string())
        .chain((0..4000).map(|i| format!("wide_measurement_column_{i:04}")))
        .collect();
    let row = |id: &str, last: &str| {
        let mut fields = vec![id.to_string()];
        fields.extend((0..3999).map(|i| i.to_string()));
        fields.push(last.to_string());
        fields.join(",")
    };
    let good = format!("{}\n{}\n", header.join(","), row("1", "7"));
    let Finished {
        status,
        error,
        output,
        ..
    } = world.drop_file("incoming/wide/good.csv", good).await;
    assert_eq!((status.as_str(), error), ("SUCCEEDED", None), "{output:#}");
    assert_eq!(output["stage"]["column_count"], 4001);
    assert_eq!(output["upsert"]["rows_inserted"], 1);

    let huge = "x".repeat(300_000);
    let bad = format!("{}\n{}\n", header.join(","), row("2", &huge));
    let Finished {
        name,
        status,
        error,
        ..
    } = world.drop_file("incoming/wide/bad.csv", bad).await;
    assert_eq!(
        (status.as_str(), error.as_deref()),
        ("FAILED", Some("InvalidValue"))
    );
    assert!(
        world
            .exists(&in_run_folder(
                "quarantine/",
                "incoming/wide/bad.csv",
                &name
            ))
            .await
    );
    let failure = world
        .emails()
        .await
        .iter()
        .map(|e| e.to_string())
        .find(|e| e.contains("FAILED wide: bad.csv"))
        .expect("a failure email");
    assert!(
        failure.contains("wide_measurement_column_3999") && failure.contains("more characters"),
        "{}",
        &failure[..failure.len().min(2000)]
    );
    assert!(
        world.recorder.largest_state() <= STATE_LIMIT_BYTES,
        "a state's input or output was {} bytes; Step Functions allows {STATE_LIMIT_BYTES}",
        world.recorder.largest_state()
    );
}

/// SES rejects the success email: the load still succeeds (the table was updated), and the
/// state output says why no email went out. A rejection that clears is retried.
async fn a_mail_failure_does_not_fail_a_load(world: &World) {
    let emails_before = world.emails().await.len();
    world.faults.reject_mail.store(u32::MAX, Ordering::SeqCst);
    let Finished {
        status,
        error,
        output,
        ..
    } = world
        .drop_file(
            "incoming/orders/third.csv",
            "order_id,status,amount\n4,new,40\n",
        )
        .await;
    assert_eq!((status.as_str(), error), ("SUCCEEDED", None), "{output:#}");
    assert_eq!(output["notify_failure"]["Error"], "MailError", "{output:#}");
    assert_eq!(output["upsert"]["rows_inserted"], 1);
    assert_eq!(world.emails().await.len(), emails_before);

    world.faults.reject_mail.store(1, Ordering::SeqCst);
    let Finished { status, output, .. } = world
        .drop_file(
            "incoming/orders/fourth.csv",
            "order_id,status,amount\n5,new,50\n",
        )
        .await;
    assert_eq!(status, "SUCCEEDED", "{output:#}");
    assert!(output.get("notify_failure").is_none(), "{output:#}");
    let emails = world.emails().await;
    assert_eq!(emails.len(), emails_before + 1);
    assert!(emails
        .last()
        .unwrap()
        .to_string()
        .contains("fourth.csv loaded"));
    assert_eq!(world.rows().await.len(), 5);
}

/// The upsert fails after the file was archived: the quarantine finds it in archive/ (reading
/// incoming/ first, which is a 404 only with s3:ListBucket), moves it, drops the staging table.
async fn a_failure_after_the_archive_moves_the_file_to_quarantine(world: &World) -> String {
    world
        .faults
        .deny_upsert_writes
        .store(true, Ordering::SeqCst);
    let Finished {
        name,
        status,
        error,
        output,
    } = world
        .drop_file(
            "incoming/orders/late.csv",
            "order_id,status,amount\n6,new,60\n",
        )
        .await;
    world
        .faults
        .deny_upsert_writes
        .store(false, Ordering::SeqCst);
    assert_eq!(status, "FAILED", "{error:?} {output:#}");
    let quarantined = in_run_folder("quarantine/", "incoming/orders/late.csv", &name);
    assert!(
        world.exists(&quarantined).await,
        "{error:?} {:#?}",
        world.history(&name).await
    );
    assert!(world.exists(&format!("{quarantined}.error.json")).await);
    assert!(
        !world
            .exists(&in_run_folder(
                "archive/",
                "incoming/orders/late.csv",
                &name
            ))
            .await
    );
    let staging = world
        .s3
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix(format!("_deltadrop/staging/{name}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        staging.key_count(),
        Some(0),
        "the staging table was left behind"
    );
    assert_eq!(
        world.rows().await.len(),
        5,
        "the failed upsert changed the table"
    );
    quarantined
}

/// The file quarantined above (its upsert was denied) is replayed once the cause is gone: put
/// back under its key as a new upload, its notification starts a new execution, and it loads.
async fn a_quarantined_file_replayed_runs_again(world: &World, quarantined: &str) {
    let storage =
        deltadrop_aws::s3::S3Bucket::new(world.s3.clone(), BUCKET, Default::default()).unwrap();
    let replayed = deltadrop::replay::replay(&storage, quarantined)
        .await
        .unwrap();
    assert_eq!(replayed.original_key, "incoming/orders/late.csv");
    world.uploaded(&replayed.original_key).await;
    let records = world.file_records(1).await;
    let run = world.deliver(&records).await.remove(0);
    assert_eq!(run.status, "SUCCEEDED", "{:#}", run.output);
    assert!(world.rows().await.contains(&"6|new|60.0".to_string()));
    assert!(world.exists(&replayed.report_kept_at).await);
    assert!(!world.exists(quarantined).await);
}

/// A re-drop of the same bytes is a new upload (a new object version): it runs and is applied.
/// Before, the execution name came from the ETag, and Step Functions keeps names for 90 days.
async fn the_same_bytes_dropped_again_are_loaded_again(world: &World) {
    let key = "incoming/orders/again.csv";
    let body = "order_id,status,amount\n7,new,70\n";
    let first = world.drop_file(key, body).await;
    let second = world.drop_file(key, body).await;
    assert_ne!(first.name, second.name);
    for run in [&first, &second] {
        assert_eq!(run.status, "SUCCEEDED", "{:#}", run.output);
        assert_eq!(
            run.output["upsert"]["outcome"], "applied",
            "{:#}",
            run.output
        );
        assert!(
            world
                .exists(&in_run_folder("archive/", key, &run.name))
                .await
        );
    }
}

/// Two uploads of one key (C, then D) whose notifications arrive out of order, D's three
/// times: D is applied once, and C, arriving late, is archived as `superseded` without
/// overwriting D's rows.
async fn a_late_and_repeated_notification_never_undoes_a_newer_upload(world: &World) {
    let key = "incoming/orders/hourly.csv";
    let older = "order_id,status,amount\n8,older,80\n9,older,90\n";
    let newer = "order_id,status,amount\n8,newer,81\n";
    world.upload(key, older).await;
    world.upload(key, newer).await;
    let records = world.file_records(2).await;
    let executions_before = world.executions().await.len();
    let repeated = [records[1].clone(), records[1].clone(), records[1].clone()];
    let applied = world.deliver(&repeated).await;
    assert!(applied.iter().all(|f| f.name == applied[0].name));
    assert_eq!(
        applied[0].output["upsert"]["outcome"], "applied",
        "{:#}",
        applied[0].output
    );
    let late = world.deliver(&records[..1]).await.remove(0);
    assert_eq!(late.status, "SUCCEEDED", "{:#}", late.output);
    assert_eq!(
        late.output["upsert"]["outcome"], "superseded",
        "{:#}",
        late.output
    );
    assert_eq!(world.executions().await.len(), executions_before + 2);

    let rows = world.rows().await;
    assert!(rows.contains(&"8|newer|81.0".to_string()), "{rows:?}");
    assert!(!rows.iter().any(|r| r.starts_with("9|")), "{rows:?}");
    assert_eq!(
        world
            .read(&in_run_folder("archive/", key, &late.name))
            .await,
        older
    );
    assert_eq!(
        world
            .read(&in_run_folder("archive/", key, &applied[0].name))
            .await,
        newer
    );
    assert!(!world.exists(key).await, "both uploads left incoming/");
    assert!(world
        .emails()
        .await
        .iter()
        .any(|e| e.to_string().contains("hourly.csv skipped")));
}

/// Upload E of a key fails after its archive while upload F of the same key waits in incoming/:
/// E's quarantine moves E's own bytes (pinned to its version), F stays and is loaded next.
async fn a_failed_upload_is_quarantined_without_touching_a_newer_upload_of_its_key(world: &World) {
    let key = "incoming/orders/reused.csv";
    let failing = "order_id,status,amount\n10,failing,100\n";
    let next = "order_id,status,amount\n10,next,101\n";
    world.upload(key, failing).await;
    world.upload(key, next).await;
    let records = world.file_records(2).await;
    world
        .faults
        .deny_upsert_writes
        .store(true, Ordering::SeqCst);
    let failed = world.deliver(&records[..1]).await.remove(0);
    world
        .faults
        .deny_upsert_writes
        .store(false, Ordering::SeqCst);
    assert_eq!(failed.status, "FAILED");
    let quarantined = in_run_folder("quarantine/", key, &failed.name);
    assert_eq!(world.read(&quarantined).await, failing);
    assert!(world
        .read(&format!("{quarantined}.error.json"))
        .await
        .contains("DeltaError"));
    assert_eq!(world.read(key).await, next, "the newer upload was moved");

    let loaded = world.deliver(&records[1..]).await.remove(0);
    assert_eq!(loaded.status, "SUCCEEDED", "{:#}", loaded.output);
    assert_eq!(
        world
            .read(&in_run_folder("archive/", key, &loaded.name))
            .await,
        next
    );
    assert!(world.rows().await.contains(&"10|next|101.0".to_string()));
    assert!(!world.exists(key).await);
}

/// A feed in arrival order: the later file's notification comes first; its upsert waits
/// (WaitingForEarlierFile, retried by the state machine) until the earlier file is merged.
async fn a_feed_in_arrival_order_waits_for_the_earlier_file(world: &World) {
    let (earlier, later_name) = world_with_a_later_file_waiting(
        world,
        (
            "incoming/ordered/a.csv",
            "order_id,status,amount\n1,early,1\n2,early,2\n",
        ),
        (
            "incoming/ordered/b.csv",
            "order_id,status,amount\n1,late,3\n",
        ),
    )
    .await;
    let first = world.deliver(&earlier).await.remove(0);
    let second = world.wait_for(vec![later_name]).await.remove(0);
    for run in [&first, &second] {
        assert_eq!(run.status, "SUCCEEDED", "{:#}", run.output);
    }
    assert_eq!(
        world.rows_of("tables/ordered").await,
        ["1|late|3", "2|early|2"]
    );
}

/// Uploads `earlier` and then `later` to the feed in arrival order and starts only the later
/// one's execution, which waits (in its `WaitForEarlierFile` state) until the earlier file is
/// applied; returns the earlier file's notification and the later file's execution.
async fn world_with_a_later_file_waiting(
    world: &World,
    earlier: (&str, &str),
    later: (&str, &str),
) -> (Vec<Value>, String) {
    world.upload(earlier.0, earlier.1).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    world.upload(later.0, later.1).await;
    let records = world.file_records(2).await;
    let (earlier_records, later_records): (Vec<_>, Vec<_>) = records
        .into_iter()
        .partition(|r| crate::world::notified_key(r) == earlier.0);
    let waits = || {
        let answers = world.faults.answers.lock().unwrap();
        answers
            .get("WaitingForEarlierFile")
            .copied()
            .unwrap_or_default()
    };
    let waits_before = waits();
    let later_name = world.start(&later_records).await.remove(0);
    // Long enough for the later run to reach its upsert and wait at least once.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert_eq!(
        world.status(&later_name).await,
        "RUNNING",
        "the later file did not wait"
    );
    assert!(waits() > waits_before, "no upsert attempt waited");
    (earlier_records, later_name)
}

/// An operator stops an execution (here one waiting for an earlier file, so that nothing of it
/// is in flight): it ends ABORTED, which `AbortedExecutionsAlarm` counts, with its file archived
/// and not applied; the earlier file still loads.
async fn an_execution_stopped_by_an_operator_leaves_its_file_archived(world: &World) {
    let (earlier, stopped) = world_with_a_later_file_waiting(
        world,
        (
            "incoming/ordered/c.csv",
            "order_id,status,amount\n3,early,3\n",
        ),
        (
            "incoming/ordered/stopped.csv",
            "order_id,status,amount\n3,stopped,4\n",
        ),
    )
    .await;
    let arn = world
        .executions()
        .await
        .into_iter()
        .find(|e| e.name == stopped)
        .unwrap()
        .execution_arn;
    world
        .sfn
        .stop_execution()
        .execution_arn(arn)
        .send()
        .await
        .unwrap();
    // moto's executor thread marks the execution stopped a moment after StopExecution answers.
    let mut status = world.status(&stopped).await;
    for _ in 0..50 {
        if status != "RUNNING" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        status = world.status(&stopped).await;
    }
    assert_eq!(status, "ABORTED");
    let first = world.deliver(&earlier).await.remove(0);
    assert_eq!(first.status, "SUCCEEDED", "{:#}", first.output);
    assert!(
        world
            .exists(&in_run_folder(
                "archive/",
                "incoming/ordered/stopped.csv",
                &stopped
            ))
            .await
    );
    assert!(!world.exists("incoming/ordered/stopped.csv").await);
    assert_eq!(
        world.rows_of("tables/ordered").await,
        ["1|late|3", "2|early|2", "3|early|3"]
    );
}

/// A burst of files for one table goes through its commit lane: the merger takes every file the
/// queue holds for the table, so the files share commits (each execution still ends with its
/// own outcome), two merges of the table never overlap, and the feed's `notify = "digest"` sends
/// one email per commit listing its files instead of one per file.
/// A feed partitioned by a key column, on S3 through the state machine: the first file writes
/// one partition folder per region, the next one reads and rewrites only its own, and the cost
/// check's estimate names exactly what the MERGE rewrote.
async fn a_partitioned_table_on_s3_reads_only_the_partitions_a_file_touches(world: &World) {
    let mut upserts = Vec::new();
    for (name, body) in [
        ("all.csv", "region,id,qty\neu,1,1\nus,2,1\nap,3,1\n"),
        ("eu.csv", "region,id,qty\neu,1,5\neu,4,1\n"),
    ] {
        world
            .upload(&format!("incoming/regions/{name}"), body)
            .await;
        let batch = world.receive_notifications().await;
        let execution = world.started_execution(name, &batch).await;
        let (status, _, output) = world.finished(&execution).await;
        assert_eq!(status, "SUCCEEDED", "{output:#}");
        upserts.push(output["upsert"].clone());
    }
    assert_eq!(upserts[0]["created_table"], json!(true), "{:#}", upserts[0]);
    assert_eq!(upserts[0]["partitions_touched"], json!(3));
    let merge = &upserts[1];
    assert_eq!(
        [
            &merge["partitions_touched"],
            &merge["files_scanned"],
            &merge["files_skipped"]
        ],
        [&json!(1), &json!(1), &json!(2)],
        "{merge:#}"
    );
    assert_eq!(merge["estimate"]["files"], json!(1), "{merge:#}");
    assert_eq!(
        merge["bytes_rewritten"], merge["estimate"]["bytes"],
        "{merge:#}"
    );
    let summary = world.table_summary("tables/regions").await;
    assert_eq!(summary.partition_columns, ["region"]);
    assert_eq!((summary.partitions, summary.rows), (3, 4));
}

/// A feed with `on_bad_rows = "reject"` on S3: the stage writes the bad rows beside the run's
/// quarantine folder (its one grant there, checked with every other call by the IAM check),
/// the good rows load, and the execution's output and email say so.
async fn bad_rows_are_set_aside_in_a_rejects_file_and_the_rest_loads(world: &World) {
    let key = "incoming/rejecting/mixed.csv";
    let done = world
        .drop_file(key, "id,qty\n1,1\n2,many\n,3\n4,4,4\n5,5\n")
        .await;
    if done.status != "SUCCEEDED" {
        let report = in_run_folder("quarantine/", key, &done.name) + ".error.json";
        panic!(
            "{} ({:?}): {}",
            done.status,
            done.error,
            world.read(&report).await
        );
    }
    let rejects = &done.output["stage"]["rejects"];
    assert_eq!(rejects["rows"], json!(3), "{rejects:#}");
    assert_eq!(
        rejects["by_reason"],
        json!({"InvalidValue": 1, "MalformedFile": 1, "NullKey": 1})
    );
    assert_eq!(done.output["upsert"]["rows_rejected"], json!(3));
    assert_eq!(done.output["upsert"]["rows_warned"], json!(1));
    assert_eq!(
        done.output["stage"]["expectations"],
        json!([{"name": "qty_small", "rule": "max = 4", "action": "warn", "rows": 1, "first": ["line 6: \"5\""]}])
    );
    let rejects_key = format!(
        "{}.rejects.jsonl",
        in_run_folder("quarantine/", key, &done.name)
    );
    assert_eq!(rejects["file"], json!(rejects_key));
    let lines: Vec<Value> = world
        .read(&rejects_key)
        .await
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let found: Vec<(&Value, &Value, &Value)> = lines
        .iter()
        .map(|l| (&l["line"], &l["error"], &l["raw"]))
        .collect();
    assert_eq!(
        found,
        [
            (&json!(3), &json!("InvalidValue"), &json!("2,many")),
            (&json!(4), &json!("NullKey"), &json!(",3")),
            (&json!(5), &json!("MalformedFile"), &json!("4,4,4")),
        ]
    );
    assert!(
        world
            .exists(&in_run_folder("archive/", key, &done.name))
            .await
    );
    let table = world.table_summary("tables/rejecting").await;
    assert_eq!(table.rows, 2, "the good rows, 1 and 5");
    let emails: Vec<String> = world.emails().await.iter().map(|e| e.to_string()).collect();
    let email = emails
        .iter()
        .find(|e| e.contains("mixed.csv loaded with rejected rows"))
        .expect("a success email that says rows were rejected");
    assert!(
        email.contains("3 (InvalidValue 1, MalformedFile 1, NullKey 1)"),
        "{email}"
    );

    // Fixed by the owner and replayed: a new upload of the feed, which its own notification
    // runs through the state machine; the rejects file is kept, renamed.
    let fixed: String = lines
        .iter()
        .zip(["2,2", "3,3", "4,4"])
        .map(|(line, raw)| {
            let mut line = line.clone();
            line["raw"] = json!(raw);
            format!("{line}\n")
        })
        .collect();
    // The owner's own PUT (not under incoming/: no notification).
    world
        .s3
        .put_object()
        .bucket(BUCKET)
        .key(&rejects_key)
        .body(fixed.into_bytes().into())
        .send()
        .await
        .unwrap();
    let storage = world.operator_bucket();
    let config = deltadrop::config::Config::from_toml(&crate::world::config(), "test").unwrap();
    let replayed = deltadrop::replay_rejects::replay_rejects(&storage, &config, &rejects_key)
        .await
        .unwrap();
    assert!(world.exists(&replayed.kept_at).await);
    assert!(!world.exists(&rejects_key).await);
    world.uploaded(&replayed.upload_key).await;
    let records = world.file_records(1).await;
    let run = world.deliver(&records).await.remove(0);
    assert_eq!(run.status, "SUCCEEDED", "{:#}", run.output);
    assert_eq!(run.output["stage"]["rows"], json!(3), "{:#}", run.output);
    let table = world.table_summary("tables/rejecting").await;
    assert_eq!(table.rows, 5, "every row, once fixed");
}

async fn a_burst_for_one_table_shares_commits_and_one_email_per_commit(world: &World) {
    const FILES: usize = 12;
    const ROWS: usize = 3;
    let emails_before = world.emails().await.len();
    let mut expected = Vec::new();
    for file in 0..FILES {
        let rows: Vec<String> = (0..ROWS)
            .map(|row| format!("{}|f{file:02}|{row}", file * 10 + row))
            .collect();
        let body: String = rows.iter().map(|r| r.replace('|', ",") + "\n").collect();
        world
            .upload(
                &format!("incoming/burst/f{file:02}.csv"),
                format!("order_id,status,amount\n{body}"),
            )
            .await;
        expected.extend(rows);
    }
    let records = world.file_records(FILES).await;
    let names = world.start(&records).await;
    let finished = world.wait_for(names).await;
    let mut versions = std::collections::BTreeSet::new();
    let mut shared = 0;
    for run in &finished {
        assert_eq!(
            run.status,
            "SUCCEEDED",
            "{}: {:?}",
            run.name,
            world.history(&run.name).await
        );
        let upsert = &run.output["upsert"];
        assert_eq!(upsert["outcome"], "applied", "{upsert:#}");
        versions.insert(upsert["version"].as_u64().unwrap());
        if let Some(commit) = upsert.get("shared_commit") {
            shared += 1;
            assert_eq!(commit["keys"], ROWS, "{upsert:#}");
        }
        assert!(
            run.output["notify"]["not_sent"]
                .as_str()
                .is_some_and(|n| n.contains("digest")),
            "{:#}",
            run.output["notify"]
        );
    }
    println!(
        "burst through the lane: {FILES} files in {} commits ({shared} files shared one), \
         batches handed to the merger: {:?}",
        versions.len(),
        world.lane.batches.lock().unwrap()
    );
    assert!(versions.len() < FILES, "no two files shared a commit");
    assert_eq!(world.lane.overlaps.load(Ordering::SeqCst), 0);
    let read = world.read_with_python("tables/burst", "order_id");
    let mut rows: Vec<String> = serde_json::from_value(read["rows"].clone()).unwrap();
    rows.sort();
    expected.sort();
    assert_eq!(rows, expected);

    let emails = world.emails().await;
    let digests: Vec<String> = emails[emails_before..]
        .iter()
        .map(|e| e.to_string())
        .filter(|e| e.contains("burst"))
        .collect();
    assert_eq!(
        digests.len(),
        versions.len(),
        "one email per commit: {digests:#?}"
    );
    for file in 0..FILES {
        let listed = format!("incoming/burst/f{file:02}.csv: {ROWS} rows staged, applied");
        assert_eq!(
            digests.iter().filter(|d| d.contains(&listed)).count(),
            1,
            "f{file:02} is listed once: {digests:#?}"
        );
    }
}

/// The merger commits two files, and Step Functions refuses each answer as for an execution that
/// stopped waiting: one with `TaskTimedOut`, the other with `InvalidToken`. The merger drops the
/// answers rather than retrying them forever; each execution, still waiting, gets no heartbeat,
/// times out, sends its file again, and the merger finds it applied: nothing waits forever and
/// nothing is applied twice. A third file's every answer is lost (its merger dies after the
/// commit each time): the lane gives up after its last attempt, the table is asked, and the file
/// is loaded, not quarantined with a false failure.
async fn answers_refused_as_gone_are_dropped_and_the_files_sent_again(world: &World) {
    const REFUSALS: [&str; 2] = ["TaskTimedOut", "InvalidToken"];
    const LOST: &str = "incoming/orders/every-answer-lost.csv";
    world.faults.refuse_answers.lock().unwrap().extend(REFUSALS);
    *world.faults.time_out_every_answer_of.lock().unwrap() = Some(LOST.into());
    for n in 0..REFUSALS.len() {
        world
            .upload(
                &format!("incoming/orders/refused-{n}.csv"),
                format!("order_id,status,amount\n{},refused,7\n", 70 + n),
            )
            .await;
    }
    world
        .upload(LOST, "order_id,status,amount\n72,lost,7\n")
        .await;
    let records = world.file_records(REFUSALS.len() + 1).await;
    let finished = world.wait_for(world.start(&records).await).await;
    *world.faults.time_out_every_answer_of.lock().unwrap() = None;
    assert!(
        world.faults.refuse_answers.lock().unwrap().is_empty(),
        "the faults were not injected"
    );
    for (record, run) in records.iter().zip(&finished) {
        let key = notified_key(record);
        assert_eq!(
            run.status,
            "SUCCEEDED",
            "{key}: {:#?}",
            world.history(&run.name).await
        );
        assert_eq!(
            run.output["upsert"]["outcome"], "already_applied",
            "{:#}",
            run.output
        );
        let timeout = run.output["lane"]["error"]["Error"].as_str().unwrap();
        assert!(
            ["States.Timeout", "States.HeartbeatTimeout"].contains(&timeout),
            "{timeout}"
        );
        if key == LOST {
            // Every attempt timed out; the table said the file is in it.
            assert_eq!(run.output["lane"]["attempt"], 4, "{:#}", run.output["lane"]);
            assert_eq!(
                run.output["applied_check"]["applied"], true,
                "{:#}",
                run.output
            );
            assert!(
                world
                    .exists(&in_run_folder("archive/", LOST, &run.name))
                    .await
            );
            assert!(
                !world
                    .exists(&in_run_folder("quarantine/", LOST, &run.name))
                    .await
            );
        } else {
            // Attempt 2 or later after a timeout: the merger dropped the refused answer (had it
            // handed the message back, its redelivery would have answered attempt 1 with
            // already_applied). A later one when attempt 2 timed out as well: on a loaded
            // machine (the whole suite on 2 cores) one run ended at attempt 3 after a
            // States.Timeout of attempt 2.
            let attempt = run.output["lane"]["attempt"].as_u64().unwrap();
            assert!((2..=4).contains(&attempt), "{:#}", run.output["lane"]);
        }
    }
    let rows = world.rows().await;
    for n in 0..=REFUSALS.len() {
        let id = format!("{}|", 70 + n);
        assert_eq!(
            rows.iter().filter(|r| r.starts_with(&id)).count(),
            1,
            "{rows:?}"
        );
    }
    let emails: Vec<String> = world.emails().await.iter().map(|e| e.to_string()).collect();
    assert!(
        emails
            .iter()
            .any(|e| e.contains("every-answer-lost.csv loaded")),
        "no success email for the file whose answers were lost"
    );
}

/// Producers often tag their uploads (DataSync, malware scanners, cost tags). Archive and
/// quarantine copy them with their tags, which on AWS needs the tagging permissions the policy
/// check at the end asks for (moto enforces none).
async fn tagged_uploads_keep_their_tags_in_archive_and_quarantine(world: &World) {
    const TAGS: &str = "scan=clean&team=sales";
    world
        .upload_tagged(
            "incoming/orders/tagged.csv",
            "order_id,status,amount\n80,tagged,8\n",
            Some(TAGS),
        )
        .await;
    let good = world.file_records(1).await;
    world
        .upload_tagged(
            "incoming/orders/tagged-bad.csv",
            "order_id,status,amount\n81,tagged\n",
            Some(TAGS),
        )
        .await;
    let bad = world.file_records(1).await;
    let [good, bad] = [good, bad].map(|records| records[0].clone());
    let finished = world.deliver(&[good, bad]).await;
    let expected = ["scan=clean", "team=sales"];
    let (good, bad) = (&finished[0], &finished[1]);
    assert_eq!(good.status, "SUCCEEDED", "{:#}", good.output);
    let archived = in_run_folder("archive/", "incoming/orders/tagged.csv", &good.name);
    assert_eq!(world.tags(&archived).await, expected);
    assert_eq!(
        (bad.status.as_str(), bad.error.as_deref()),
        ("FAILED", Some("MalformedFile"))
    );
    let quarantined = in_run_folder("quarantine/", "incoming/orders/tagged-bad.csv", &bad.name);
    assert_eq!(world.tags(&quarantined).await, expected);
    for key in [
        "incoming/orders/tagged.csv",
        "incoming/orders/tagged-bad.csv",
    ] {
        assert!(!world.exists(key).await, "{key} was not moved");
    }
}

/// A key of 1,000 bytes (S3 allows 1,024) leaves no room for the archive prefix and the run
/// folder: the copies get a shortened key that fits, even with a replayed report's suffix, and
/// the error report keeps the original key.
async fn keys_near_s3s_limit_are_archived_and_quarantined(world: &World) {
    let long_key = |name: &str| {
        let key = format!("incoming/orders/{}{name}", "deep/".repeat(190));
        format!("{key}{}.csv", "x".repeat(1000 - key.len() - ".csv".len()))
    };
    let (good_key, bad_key) = (long_key("good-"), long_key("bad-"));
    assert_eq!((good_key.len(), bad_key.len()), (1000, 1000));
    world
        .upload(&good_key, "order_id,status,amount\n90,long,9\n")
        .await;
    let good = world.file_records(1).await;
    world
        .upload(&bad_key, "order_id,status,amount\n91,long\n")
        .await;
    let bad = world.file_records(1).await;
    let finished = world.deliver(&[good[0].clone(), bad[0].clone()]).await;
    let (good, bad) = (&finished[0], &finished[1]);
    assert_eq!(
        good.status,
        "SUCCEEDED",
        "{:?}: {:#?}",
        good.error,
        world.history(&good.name).await
    );
    let archived = good.output["archive"]["archived_key"].as_str().unwrap();
    assert!(
        archived.len() <= 1024 - ".replayed-20260101T000000.000Z.error.json".len(),
        "{archived}"
    );
    assert!(world.exists(archived).await);
    assert_eq!(
        (bad.status.as_str(), bad.error.as_deref()),
        ("FAILED", Some("MalformedFile"))
    );
    let reports: Vec<String> = world
        .keys("quarantine/")
        .await
        .into_iter()
        .filter(|k| k.contains(&bad.name) && k.ends_with(".error.json"))
        .collect();
    assert_eq!(reports.len(), 1, "{reports:?}");
    let report: serde_json::Value = serde_json::from_str(&world.read(&reports[0]).await).unwrap();
    assert_eq!(report["original_key"], bad_key.as_str());
    for key in [&good_key, &bad_key] {
        assert!(!world.exists(key).await, "{key} was not moved");
    }
}

/// Lambda refuses every invocation for 30 seconds (429 TooManyRequestsException: a burst larger
/// than the account's concurrency, or a new account's low limit). Step Functions retries
/// throttling longer than other Lambda errors, the failure path longest: the good files load,
/// the bad one is quarantined with its email, none ends FAILED for the throttling (the old
/// retry, 3 attempts within ~14 s, could not outlast the window).
async fn a_throttled_account_still_loads_or_quarantines_every_file(world: &World) {
    let emails_before = world.emails().await.len();
    let throttled_before = world.faults.throttled.load(Ordering::SeqCst);
    *world.faults.throttle_until.lock().unwrap() =
        Some(std::time::Instant::now() + std::time::Duration::from_secs(30));
    let files = [
        (
            "throttled-1.csv",
            "order_id,status,amount\n100,throttled,1\n",
        ),
        (
            "throttled-2.csv",
            "order_id,status,amount\n101,throttled,2\n",
        ),
        (
            "throttled-bad.csv",
            "order_id,status,amount\n102,throttled\n",
        ),
    ];
    for (name, body) in files {
        world.upload(&format!("incoming/orders/{name}"), body).await;
    }
    let records = world.file_records(files.len()).await;
    let finished = world.wait_for(world.start(&records).await).await;
    let throttled = world.faults.throttled.load(Ordering::SeqCst) - throttled_before;
    assert!(throttled >= 3, "no invocation was throttled ({throttled})");
    for (record, run) in records.iter().zip(&finished) {
        let body: serde_json::Value =
            serde_json::from_str(record["body"].as_str().unwrap()).unwrap();
        let bad = body["Records"][0]["s3"]["object"]["key"]
            .as_str()
            .unwrap()
            .contains("bad");
        let expected = if bad {
            ("FAILED", Some("MalformedFile"))
        } else {
            ("SUCCEEDED", None)
        };
        assert_eq!(
            (run.status.as_str(), run.error.as_deref()),
            expected,
            "{:#?}",
            world.history(&run.name).await
        );
    }
    let rows = world.rows().await;
    for id in ["100|", "101|"] {
        assert_eq!(
            rows.iter().filter(|r| r.starts_with(id)).count(),
            1,
            "{rows:?}"
        );
    }
    let emails = world.emails().await;
    assert!(
        emails[emails_before..]
            .iter()
            .any(|e| e.to_string().contains("FAILED orders: throttled-bad.csv")),
        "no failure email for the bad file"
    );
}

/// A copy above CopyObject's 5 GB goes in parts, several at once, and keeps the upload's tags
/// (UploadPartCopy copies none). Here with 5 MiB parts (S3's smallest) above 5 MiB, so that a
/// 12 MiB object takes that path: three parts, the last one short.
async fn a_copy_in_parts_keeps_the_bytes_and_the_tags(world: &World) {
    let body: Vec<u8> = (0..12 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    // Outside the incoming prefix: no notification, no run.
    let (from, to) = ("quarantine/parts/source.bin", "archive/parts/copy.bin");
    let put = world
        .s3
        .put_object()
        .bucket(BUCKET)
        .key(from)
        .body(body.clone().into())
        .tagging("scan=clean&team=sales")
        .send()
        .await
        .unwrap();
    let upload = deltadrop::upload::Upload {
        version_id: put.version_id().map(str::to_string),
        ..Default::default()
    };
    let storage = deltadrop_aws::s3::S3Bucket::new(world.s3.clone(), BUCKET, Default::default())
        .unwrap()
        .with_copy_limits(5 << 20, 5 << 20);
    deltadrop::storage::ObjectStorage::copy(&storage, from, &upload, to)
        .await
        .unwrap();
    let copied = world
        .s3
        .get_object()
        .bucket(BUCKET)
        .key(to)
        .send()
        .await
        .unwrap();
    assert!(
        copied.e_tag().unwrap().ends_with("-3\""),
        "not copied in 3 parts: {:?}",
        copied.e_tag()
    );
    let bytes = copied.body.collect().await.unwrap().into_bytes();
    assert!(bytes == body, "the copy differs");
    assert_eq!(world.tags(to).await, ["scan=clean", "team=sales"]);
}

/// The maintenance state machine as its daily schedule starts it: it lists the feeds and
/// maintains each table in its own task; every table is compacted and checkpointed, every row is
/// still there (and the maintain function's calls are checked against its policy below). Its
/// output is the list of feeds only, whatever their number: each table's result stays in its own
/// task's output. With a broken configuration it fails as a whole (`MaintenanceFailedAlarm`).
/// Returns the state machine's ARN.
async fn the_scheduled_maintenance_compacts_every_table(world: &World) -> String {
    let rows = world.rows().await;
    let definition = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../infra/statemachine/maintenance.asl.json"
    ))
    .unwrap()
    .replace(
        "${MaintainFunctionArn}",
        &crate::emulator::function_arn(Function::Maintain),
    );
    let arn = world
        .sfn
        .create_state_machine()
        .name("deltadrop-maintenance")
        .definition(definition)
        .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/deltadrop-maintenance"))
        .send()
        .await
        .unwrap()
        .state_machine_arn;
    let orders_before = world.table_summary("tables/orders").await;
    let maintained_before = world.invocations_of(Function::Maintain);
    let output = world.finished_arn(&start(world, &arn, "daily").await).await;
    assert_eq!(output, json!({ "feeds": world.feed_names() }), "{output:#}");
    let (calls, failures) = world.invocations_of(Function::Maintain);
    assert_eq!(
        (calls - maintained_before.0, failures - maintained_before.1),
        (1 + world.feed_names().len() as u32, 0),
        "one listing and one task per table, none failed"
    );
    let orders = world.table_summary("tables/orders").await;
    assert!(orders_before.files > 1, "{orders_before:#?}");
    assert_eq!(orders.files, 1, "{orders:#?}");
    assert_eq!(orders.history[0].operation, "OPTIMIZE", "{orders:#?}");
    assert_eq!(world.rows().await, rows);

    world
        .upload("deltadrop.toml", "[[feeds]]\nname = 1\n")
        .await;
    let broken = start(world, &arn, "broken-configuration").await;
    let (status, error, _) = world.wait(&broken).await;
    world.upload_config().await;
    assert_eq!(
        (status.as_str(), error.as_deref()),
        ("FAILED", Some("ConfigError"))
    );
    arn
}

async fn start(world: &World, state_machine_arn: &str, name: &str) -> String {
    world
        .sfn
        .start_execution()
        .state_machine_arn(state_machine_arn)
        .name(name)
        .input("{}")
        .send()
        .await
        .unwrap()
        .execution_arn
}

/// A file whose notification never became an execution sits in incoming/: the scheduled watch
/// names it in its output, its metric and an email.
async fn the_watch_names_a_file_nobody_loaded(world: &World) {
    world
        .upload(
            "incoming/orders/forgotten.csv",
            "order_id,status,amount\n99,new,1\n",
        )
        .await;
    let output = invoke(
        world.ctx(Function::Watch),
        Function::Watch,
        json!({"threshold_minutes": 0}),
    )
    .await
    .unwrap_or_else(|e| panic!("{}: {}", e.error_type, e.error_message));
    assert_eq!(
        output["stale"][0]["key"], "incoming/orders/forgotten.csv",
        "{output:#}"
    );
    assert_eq!(output["stale"][0]["feed"], "orders");
    assert!(output["delivered"].is_string(), "{output:#}");
    assert!(world
        .emails()
        .await
        .iter()
        .any(|e| e.to_string().contains("incoming/orders/forgotten.csv")));
    // Its next run (15 minutes later on AWS) names the file again but emails nobody.
    let emails = world.emails().await.len();
    let again = invoke(
        world.ctx(Function::Watch),
        Function::Watch,
        json!({"threshold_minutes": 0}),
    )
    .await
    .unwrap_or_else(|e| panic!("{}: {}", e.error_type, e.error_message));
    let keys = |o: &serde_json::Value| -> Vec<serde_json::Value> {
        o["stale"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["key"].clone())
            .collect()
    };
    assert_eq!(keys(&again), keys(&output), "{again:#}");
    assert_eq!(again["delivered"], json!(null), "{again:#}");
    assert!(
        again["held"].as_str().unwrap().contains("emailed already"),
        "{again:#}"
    );
    assert_eq!(world.emails().await.len(), emails);
}

/// A file over its feed's `route.parallel_stage_from_mb` is staged in chunks by the Distributed
/// Maps, one invocation per chunk, and loads the table the same file staged whole loads (read
/// by the Python `deltalake` package); a bad value in a late chunk fails the file with that
/// chunk's error, on its line in the file, and the file is quarantined whole.
async fn a_large_file_is_staged_in_chunks_by_the_distributed_maps(world: &World) {
    let csv = large_orders_csv();
    let chunked = world.drop_file("incoming/chunked/large.csv", &csv).await;
    assert_eq!(chunked.status, "SUCCEEDED", "{:#}", chunked.output);
    assert_eq!(
        chunked.output["route"]["stage"], "chunks",
        "{:#}",
        chunked.output
    );
    assert_eq!(
        chunked.output["stage"]["chunks"],
        json!(6),
        "{:#}",
        chunked.output
    );
    assert_eq!(chunked.output["stage"]["rows"], json!(60_000));
    let whole = world.drop_file("incoming/unchunked/large.csv", &csv).await;
    assert_eq!(whole.status, "SUCCEEDED", "{:#}", whole.output);
    assert_eq!(
        whole.output["route"]["stage"], "function",
        "{:#}",
        whole.output
    );
    let table = world.read_with_python("tables/chunked", "order_id");
    assert_eq!(table["rows"].as_array().unwrap().len(), 25_000, "{table}");
    assert_eq!(
        table,
        world.read_with_python("tables/unchunked", "order_id")
    );

    // A quoted line break: the chunks hand the file back, and the Stage state reads it whole
    // (its staging table made anew where the chunks' was).
    let broken = with_a_quoted_line_break(&csv);
    let whole = world
        .drop_file("incoming/chunked/broken.csv", &broken)
        .await;
    assert_eq!(whole.status, "SUCCEEDED", "{:#}", whole.output);
    let why = whole.output["chunks"]["read_whole"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("line break"), "{:#}", whole.output);
    assert!(
        whole.output["stage"].get("chunks").is_none(),
        "{:#}",
        whole.output
    );
    assert_eq!(whole.output["stage"]["rows"], json!(60_001));
    let table = world.read_with_python("tables/chunked", "order_id");

    let (bad, line) = with_a_late_bad_amount(&csv);
    let failed = world.drop_file("incoming/chunked/bad.csv", &bad).await;
    a_bad_amount_was_quarantined_whole(world, &failed, "incoming/chunked/bad.csv", line).await;
    assert_eq!(
        world.read_with_python("tables/chunked", "order_id"),
        table,
        "the failed file changed the table"
    );
}

/// A large Parquet file is cut between its row groups: its footer numbers the chunks (no
/// CountLines, no NumberChunks), and its MERGE gives each key its last record. (After the
/// container tier's scenario, which compares its table with the chunked one.)
async fn a_large_parquet_file_is_staged_by_row_group(world: &World) {
    let orders = large_orders_parquet();
    let by_row_group = world
        .drop_file("incoming/chunked/large.parquet", &orders)
        .await;
    let history = world.history(&by_row_group.name).await;
    assert_eq!(by_row_group.status, "SUCCEEDED", "{history:#?}");
    assert_eq!(
        by_row_group.output["stage"]["chunks"],
        json!(6),
        "{history:#?}"
    );
    assert!(
        history.iter().any(|s| s == "NumberedByTheFooter"),
        "{history:#?}"
    );
    assert!(!history.iter().any(|s| s == "CountLines"), "{history:#?}");
    // Every key's last record wins, over every row the CSV files left (read back by the Python
    // `deltalake` package): the table a whole read's MERGE gives.
    let mut last = std::collections::BTreeMap::new();
    for i in 0..60_000i64 {
        last.insert((i * 7919) % 25_000, i);
    }
    let expected: Vec<Value> = last
        .iter()
        .map(|(key, i)| json!(format!("{key}|parquet {i}|{}", *i as f64 + 0.25)))
        .collect();
    let merged = world.read_with_python("tables/chunked", "order_id")["rows"].clone();
    assert!(
        merged == json!(expected),
        "the Parquet file staged by row group did not give each key its last record"
    );
}

/// The orders' keys in a Parquet file of six row groups of 10,000 records, not compressed nor
/// dictionary-encoded (about 1.9 MB, over the chunked feed's 1 MiB), each status and amount
/// new.
pub fn large_orders_parquet() -> Vec<u8> {
    use std::sync::Arc;

    use deltalake::arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
    use deltalake::arrow::record_batch::RecordBatch;
    use deltalake::parquet::arrow::ArrowWriter;
    use deltalake::parquet::file::properties::WriterProperties;

    let records = 0..60_000i64;
    let columns: [(&str, ArrayRef); 3] = [
        (
            "order_id",
            Arc::new(Int64Array::from_iter_values(
                records.clone().map(|i| (i * 7919) % 25_000),
            )),
        ),
        (
            "status",
            Arc::new(StringArray::from_iter_values(
                records.clone().map(|i| format!("parquet {i}")),
            )),
        ),
        (
            "amount",
            Arc::new(Float64Array::from_iter_values(
                records.map(|i| i as f64 + 0.25),
            )),
        ),
    ];
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let properties = WriterProperties::builder()
        .set_max_row_group_row_count(Some(10_000))
        .set_dictionary_enabled(false)
        .build();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), Some(properties)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    bytes
}

/// About 1.4 MiB of orders: repeated keys (the last row wins), quoted commas.
pub fn large_orders_csv() -> String {
    std::iter::once("order_id,status,amount\n".to_string())
        .chain((0..60_000).map(|i| {
            let key = (i * 7919) % 25_000;
            format!("{key},\"state, {}\",{}.5\n", i % 13, i % 1000)
        }))
        .collect()
}

/// The orders with a row halfway in whose quoted status spans two lines.
pub fn with_a_quoted_line_break(csv: &str) -> String {
    let mut broken = csv.to_string();
    let line_start = broken[..broken.len() / 2].rfind('\n').unwrap() + 1;
    broken.insert_str(line_start, "7,\"two\nlines\",1.5\n");
    broken
}

/// The orders with a row whose amount is not a number nine tenths of the way in, and its line.
pub fn with_a_late_bad_amount(csv: &str) -> (String, usize) {
    let mut bad = csv.to_string();
    let line_start = bad[..bad.len() * 9 / 10].rfind('\n').unwrap() + 1;
    bad.insert_str(line_start, "7,late,not a number\n");
    let line = bad[..line_start].matches('\n').count() + 1;
    (bad, line)
}

/// The file failed as `InvalidValue`, was quarantined with a report naming its line and
/// column, and left nothing under its run's staging prefix.
pub async fn a_bad_amount_was_quarantined_whole(
    world: &World,
    failed: &Finished,
    key: &str,
    line: usize,
) {
    assert_eq!(
        (failed.status.as_str(), failed.error.as_deref()),
        ("FAILED", Some("InvalidValue")),
        "{:#}",
        failed.output
    );
    let quarantined = in_run_folder("quarantine/", key, &failed.name);
    let report: Value =
        serde_json::from_str(&world.read(&format!("{quarantined}.error.json")).await).unwrap();
    let message = report["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("line {line}, column 'amount'")),
        "{report}"
    );
    let staging = world
        .keys(&format!("_deltadrop/staging/{}/", failed.name))
        .await;
    assert_eq!(
        staging,
        Vec::<String>::new(),
        "the failed file's staging table was left"
    );
}

/// moto enforces no IAM: every call each function made above is checked against that
/// function's policy in template.yaml by tests/iam/check_calls.py.
async fn every_call_is_one_the_function_policy_allows(world: &World) {
    let calls = world.recorder.calls();
    for function in Function::ALL {
        assert!(
            calls.iter().any(|c| c.function == function.name()),
            "no call recorded for {}",
            function.name()
        );
    }
    for (principal, action) in [
        ("pipeline", "sqs:SendMessage"),
        ("upsert", "states:SendTaskSuccess"),
        ("upsert", "states:SendTaskFailure"),
        ("upsert", "states:SendTaskHeartbeat"),
        // The tagged uploads' copies, and what the watch emailed.
        // The container tier: the state machine starts the task, which answers its state.
        ("pipeline", "ecs:RunTask"),
        ("pipeline", "iam:PassRole"),
        ("task", "states:SendTaskSuccess"),
        ("task", "states:SendTaskFailure"),
        ("task", "states:SendTaskHeartbeat"),
        // A MERGE handed over: the merger starts the task and holds the message, which the
        // task deletes once it answered.
        ("upsert", "ecs:RunTask"),
        ("upsert", "sqs:ChangeMessageVisibility"),
        ("task", "sqs:ChangeMessageVisibility"),
        ("task", "sqs:DeleteMessage"),
        ("archive", "s3:GetObjectVersionTagging"),
        ("archive", "s3:PutObjectTagging"),
        ("watch", "s3:PutObject"),
    ] {
        assert!(
            calls
                .iter()
                .any(|c| c.function == principal && c.action == action),
            "no {action} recorded for {principal}"
        );
    }
    assert!(
        calls
            .iter()
            .any(|c| c.action == "s3:GetObject" && c.status == 404),
        "the run exercises reads of missing keys"
    );
    let unknown: Vec<_> = calls
        .iter()
        .filter(|c| c.action.contains("Unknown"))
        .collect();
    assert!(
        unknown.is_empty(),
        "requests the recorder cannot map to IAM actions: {unknown:#?}"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec_pretty(&calls).unwrap()).unwrap();
    // To look at them, or to check them against another template by hand.
    if let Ok(keep) = std::env::var("DELTADROP_KEEP_CALLS") {
        std::fs::copy(file.path(), keep).unwrap();
    }
    let mut args = vec!["--calls".to_string(), file.path().display().to_string()];
    args.extend(["--bucket", BUCKET, "--account", ACCOUNT, "--region", REGION].map(String::from));
    args.extend([
        "--state-machine-arn".into(),
        world.state_machine_arn.clone(),
        "--parameter".into(),
        format!("SenderEmail={SENDER}"),
        "--queue".into(),
        format!("UpsertLaneQueue={}", crate::lane::QUEUE_NAME),
        // Deployed with the container tier (its resources as the emulator names them).
        "--parameter".into(),
        "ContainerImageUri=123456789012.dkr.ecr.us-east-1.amazonaws.com/deltadrop:test".into(),
        "--parameter".into(),
        "ContainerVpcId=vpc-0123456789abcdef0".into(),
        "--resource".into(),
        format!("ContainerCluster={}", crate::containers::CLUSTER_ARN),
    ]);
    check_against_the_template(
        "check_calls.py",
        &args,
        "calls template.yaml does not allow",
    );
}

/// Runs one of tests/iam's checkers on template.yaml with `args`; fails with its report.
fn check_against_the_template(checker: &str, args: &[String], failure: &str) {
    let checked = crate::world::python(&format!("tests/iam/{checker}"))
        .args([
            "--template",
            &format!("{}/template.yaml", crate::world::REPO_ROOT),
        ])
        .args(args)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    println!("{report}");
    assert!(checked.status.success(), "{failure}:\n{report}");
}

/// Every alarm in template.yaml fires on a datapoint some scenario made AWS emit
/// (tests/iam/check_alarms.py), but for those whose condition takes longer than a test may
/// wait; for each of these a template test checks what makes it fire.
async fn every_alarm_fires_in_some_scenario(world: &World, maintenance_arn: &str) {
    for state_machine in [world.state_machine_arn.as_str(), maintenance_arn] {
        crate::cloudwatch::record_executions(&world.sfn, state_machine).await;
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    let datapoints = crate::cloudwatch::datapoints();
    std::fs::write(file.path(), serde_json::to_vec_pretty(&datapoints).unwrap()).unwrap();
    if let Ok(keep) = std::env::var("DELTADROP_KEEP_DATAPOINTS") {
        std::fs::copy(file.path(), keep).unwrap();
    }
    let mut args = vec![
        "--datapoints".to_string(),
        file.path().display().to_string(),
    ];
    let mut resource = |id: &str, value: &str| {
        args.extend(["--resource".to_string(), format!("{id}={value}")]);
    };
    for function in Function::ALL {
        let name = function.name();
        resource(
            &format!("{}{}Function", name[..1].to_uppercase(), &name[1..]),
            name,
        );
    }
    resource("PipelineStateMachine", &world.state_machine_arn);
    resource("MaintenanceStateMachine", maintenance_arn);
    // The queues of the alarms below (SQS's own metrics: no scenario here).
    resource("IncomingQueue.QueueName", "deltadrop-incoming");
    resource(
        "IncomingDeadLetterQueue.QueueName",
        "deltadrop-incoming-dead-letters",
    );
    resource(
        "UpsertLaneDeadLetterQueue.QueueName",
        "deltadrop-upsert-lane-dead-letters",
    );
    for (alarm, _why) in [
        (
            "TimedOutExecutionsAlarm",
            "after 24 hours: test_the_timed_out_executions_alarm_can_fire",
        ),
        (
            "IncomingQueueAgeAlarm",
            "a notification 15 minutes old: test_the_queue_alarms_watch_the_queues_messages_end_in",
        ),
        (
            "DeadLettersAlarm",
            "after 5 receives by SQS's redrive, which this world does not run: the same test",
        ),
        ("LaneDeadLettersAlarm", "the same"),
    ] {
        args.extend(["--not-reached".to_string(), alarm.to_string()]);
    }
    check_against_the_template("check_alarms.py", &args, "alarms no scenario fires");
}
