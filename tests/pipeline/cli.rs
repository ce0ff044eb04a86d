//! The `deltadrop` command as a user runs it.

use std::process::Command;

fn deltadrop() -> Command {
    Command::new(env!("CARGO_BIN_EXE_deltadrop"))
}

#[test]
fn demo_loads_both_files_and_writes_two_emails() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let output = deltadrop()
        .args(["demo", "--dir"])
        .arg(&demo)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("6 inserted, 0 updated, 0 deleted"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 inserted, 2 updated, 1 deleted"),
        "{stdout}"
    );
    assert!(stdout.contains("rows     7"), "{stdout}");
    let emails = std::fs::read_dir(demo.join("_deltadrop/outbox"))
        .unwrap()
        .count();
    assert_eq!(emails, 2);
    // Running it again replaces the earlier demo.
    assert!(deltadrop()
        .args(["demo", "--dir"])
        .arg(&demo)
        .output()
        .unwrap()
        .status
        .success());
}

/// A bucket folder whose configuration has feed `t` (`in/` into `tables/t`, keyed on `id`, with
/// `extra` lines) and a recipient, and an empty `in/`.
fn bucket_with_feed_t(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("deltadrop.toml"),
        format!("[notifications]\nrecipients = [\"ops@example.com\"]\n[[feeds]]\nname = \"t\"\nincoming = \"in/\"\ntable = \"tables/t\"\nkeys = [\"id\"]\n{extra}"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    dir
}

#[test]
fn run_quarantines_a_bad_file_and_exits_1_and_bad_arguments_exit_2() {
    let dir = bucket_with_feed_t("");
    let bucket = dir.path();
    std::fs::write(bucket.join("in/bad.csv"), "id,name\n1,a,extra\n").unwrap();
    let output = deltadrop()
        .args(["run", "in/bad.csv", "--bucket"])
        .arg(bucket)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "FAILED: in/bad.csv: MalformedFile: in/bad.csv, line 2: expected 2 fields, found 3"
        ),
        "{stdout}"
    );
    let run_folder = std::fs::read_dir(bucket.join("quarantine/in"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(
        stdout.contains(run_folder.file_name().unwrap().to_str().unwrap()),
        "{stdout}"
    );
    assert!(run_folder.join("bad.csv.error.json").is_file());
    assert!(run_folder.join("bad.csv").is_file());

    let output = deltadrop()
        .args(["run", "in/missing.csv", "--bucket"])
        .arg(bucket)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("object not found: in/missing.csv"));

    std::fs::write(bucket.join("deltadrop.toml"), "[[feeds]]\nname = \"t\"\n").unwrap();
    std::fs::write(bucket.join("in/ok.csv"), "id\n1\n").unwrap();
    let output = deltadrop()
        .args(["run", "in/ok.csv", "--bucket"])
        .arg(bucket)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing field `incoming`"));
}

/// `deltadrop <args> --bucket <bucket>`: its exit code and standard output.
fn on_bucket(bucket: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let output = deltadrop()
        .args(args)
        .arg("--bucket")
        .arg(bucket)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    (output.status.code(), stdout)
}

/// A file quarantined because the configuration did not fit it, replayed once the
/// configuration is fixed: it loads, its old report is kept under another name, and nothing is
/// left to replay.
#[test]
fn replay_puts_a_quarantined_file_back_and_runs_it() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path();
    let config = |amount: &str| {
        let feed =
            crate::support::feed("t", &format!("[feeds.column_types]\namount = \"{amount}\""));
        std::fs::write(
            bucket.join("deltadrop.toml"),
            crate::support::config(&[feed]),
        )
        .unwrap();
    };
    config("long");
    std::fs::create_dir_all(bucket.join("incoming/t")).unwrap();
    std::fs::write(bucket.join("incoming/t/a.csv"), "id,amount\n1,1.5\n").unwrap();
    let run = |args: &[&str]| on_bucket(bucket, args);
    let (code, stdout) = run(&["run", "incoming/t/a.csv"]);
    assert_eq!(code, Some(1), "{stdout}");

    config("double");
    let (code, stdout) = run(&["replay", "--all"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("1 file(s) to replay"), "{stdout}");
    assert!(stdout.contains("→ incoming/t/a.csv (feed t"), "{stdout}");
    assert!(stdout.contains("1 inserted"), "{stdout}");
    let kept: Vec<String> = walk(&bucket.join("quarantine"));
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].contains("a.csv.replayed-") && kept[0].ends_with(".error.json"));

    let (code, stdout) = run(&["replay", "--all"]);
    assert_eq!((code, stdout.trim()), (Some(0), "0 file(s) to replay"));
    let (code, _) = run(&["replay", "--all", "quarantine/x.csv"]);
    assert_eq!(code, Some(2), "files and --all together are refused");
}

/// `deltadrop run` on a feed that rejects bad rows prints what it set aside; `deltadrop status`
/// counts the rows set aside and warned about; `deltadrop replay --rejects` turns the fixed
/// rejects file into a new upload and runs it.
#[test]
fn replay_of_a_fixed_rejects_file_loads_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path();
    let feed = crate::support::feed(
        "t",
        "on_bad_rows = \"reject\"\nmax_rejected_percent = 50\n[feeds.column_types]\namount = \"long\"\n\
         [[feeds.expect]]\nname = \"small\"\ncolumn = \"amount\"\nmax = 2\naction = \"warn\"",
    );
    std::fs::write(
        bucket.join("deltadrop.toml"),
        crate::support::config(&[feed]),
    )
    .unwrap();
    std::fs::create_dir_all(bucket.join("incoming/t")).unwrap();
    std::fs::write(
        bucket.join("incoming/t/a.csv"),
        "id,amount\n1,1\n2,two\n3,3\n",
    )
    .unwrap();
    let run = |args: &[&str]| on_bucket(bucket, args);
    let (code, stdout) = run(&["run", "incoming/t/a.csv"]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("1 bad row(s) set aside (InvalidValue 1)"),
        "{stdout}"
    );
    let rejects = walk(&bucket.join("quarantine"));
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    let text = std::fs::read_to_string(&rejects[0]).unwrap();
    assert!(text.contains(r#""raw":"2,two""#), "{text}");
    std::fs::write(
        &rejects[0],
        text.replace(r#""raw":"2,two""#, r#""raw":"2,2""#),
    )
    .unwrap();
    let key = rejects[0]
        .strip_prefix(&format!("{}/", bucket.display()))
        .unwrap()
        .to_string();
    let (_, stdout) = run(&["status"]);
    assert!(
        stdout.contains(&format!("rejects    1\n    {key}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("bad rows   1 rejected, 1 warned, over the latest 1 commits"),
        "{stdout}"
    );
    let (code, stdout) = run(&["replay", "--rejects", &key]);
    assert_eq!(code, Some(0), "{stdout}");
    let (_, status) = run(&["status"]);
    assert!(status.contains("rejects    0"), "{status}");
    assert!(
        status.contains("bad rows   1 rejected, 1 warned, over the latest 2 commits"),
        "{status}"
    );
    assert!(
        stdout.contains("(1 rows of feed t) → incoming/t/a-rejects-"),
        "{stdout}"
    );
    assert!(stdout.contains("1 inserted"), "{stdout}");
    let (code, _) = run(&["replay", "--rejects", &key]);
    assert_eq!(code, Some(2), "a rejects file is replayed once");
}

/// The same on an S3 bucket (moto, when the test command runs it): the file is back under its
/// original key as a new object version, and the report is kept.
#[test]
fn replay_on_s3_puts_the_file_back_as_a_new_upload() {
    let endpoint = std::env::var("DELTADROP_MOTO_ENDPOINT")
        .expect("DELTADROP_MOTO_ENDPOINT is not set: run the tests with ./scripts/test");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_, s3) = runtime.block_on(moto_clients(&endpoint));
    let bucket = "deltadrop-replay-cli";
    let quarantined = "quarantine/incoming/t/run-1/a.csv";
    let report = r#"{"error":"DeltaError","message":"m","advice":"a","run_id":"run-1","feed":"t","original_key":"incoming/t/a.csv","time":"2026-11-26T00:00:00Z"}"#;
    let report_key = format!("{quarantined}.error.json");
    runtime.block_on(bucket_with(
        &s3,
        bucket,
        &[(quarantined, "id\n1\n"), (&report_key, report)],
    ));
    let stdout = run_on_moto(
        &["replay", "--all", "--bucket", &format!("s3://{bucket}")],
        &endpoint,
    );
    assert!(
        stdout.contains("replayed quarantine/incoming/t/run-1/a.csv → incoming/t/a.csv"),
        "{stdout}"
    );
    let keys: Vec<String> = runtime.block_on(async {
        let listed = s3.list_objects_v2().bucket(bucket).send().await.unwrap();
        listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    });
    assert!(keys.contains(&"incoming/t/a.csv".to_string()), "{keys:?}");
    assert!(!keys.contains(&quarantined.to_string()), "{keys:?}");
    assert!(
        keys.iter().any(|k| k.contains("a.csv.replayed-")),
        "{keys:?}"
    );
}

/// Every file below `dir`, as paths relative to it.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path.display().to_string());
        }
    }
    found
}

/// `deltadrop check`: an invalid configuration names its field (exit 2); a valid one lists the
/// feeds, routes each sample and shows what it would stage; a bad sample fails (exit 1).
#[test]
fn check_validates_a_configuration_and_reads_samples() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("deltadrop.toml");
    std::fs::write(
        &config,
        crate::support::feed("orders", "[feeds.limits]\nmax_columns = 0"),
    )
    .unwrap();
    let check = |samples: &[&str]| {
        let mut command = deltadrop();
        command.current_dir(dir.path()).arg("check").arg(&config);
        for sample in samples {
            command.args(["--sample", sample]);
        }
        let output = command.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.code(), text)
    };
    let (code, text) = check(&[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("feeds[0].limits.max_columns"), "{text}");

    std::fs::write(
        &config,
        crate::support::config(&[crate::support::feed("orders", "")]),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("incoming/orders")).unwrap();
    std::fs::write(
        dir.path().join("incoming/orders/a.csv"),
        "id,amount,day\n1,1.5,2026-11-26\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("incoming/orders/bad.csv"), "id,amount\n1\n").unwrap();
    let (code, text) = check(&["incoming/orders/a.csv"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("valid, 1 feed(s)"), "{text}");
    assert!(
        text.contains("staged on AWS by route function: 0.0 MiB, under the feed's route.parallel_stage_from_mb (2048)"),
        "{text}"
    );
    assert!(
        text.contains("incoming/orders/a.csv: feed orders (Csv), 1 rows"),
        "{text}"
    );
    assert!(
        text.contains("amount") && text.contains("double") && text.contains("date"),
        "{text}"
    );
    let (code, text) = check(&["incoming/orders/bad.csv", "elsewhere/x.csv"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(
            "incoming/orders/bad.csv, line 2: expected 2 fields, found 1 (MalformedFile)"
        ),
        "{text}"
    );
    assert!(
        text.contains("elsewhere/x.csv: no feed is configured"),
        "{text}"
    );

    // A feed that rejects bad rows: the sample shows what would be set aside and why, and a
    // share over the threshold fails it as the stage would.
    std::fs::write(
        &config,
        crate::support::config(&[crate::support::feed(
            "orders",
            "on_bad_rows = \"reject\"\n[feeds.column_types]\namount = \"double\"",
        )]),
    )
    .unwrap();
    let mut mixed = String::from("id,amount\n1,1.5\n2,lots\n3\n");
    mixed.extend((4..40).map(|id| format!("{id},{id}\n")));
    std::fs::write(dir.path().join("incoming/orders/mixed.csv"), mixed).unwrap();
    let (code, text) = check(&["incoming/orders/mixed.csv"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("incoming/orders/mixed.csv: 2 row(s) would be rejected (InvalidValue 1, MalformedFile 1)"),
        "{text}"
    );
    assert!(
        text.contains("line 3: InvalidValue: incoming/orders/mixed.csv, line 3, column 'amount': value \"lots\""),
        "{text}"
    );
    assert!(text.contains("37 rows"), "{text}");
    let (code, text) = check(&["incoming/orders/bad.csv"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("1 row(s) would be rejected"), "{text}");
    assert!(text.contains("(TooManyBadRows)"), "{text}");

    let partitioned = crate::support::feed(
        "orders",
        r#"partition_by = [{ name = "month", from = "day", by = "month" }]"#,
    )
    .replace(r#"keys = ["id"]"#, r#"keys = ["id", "day"]"#);
    std::fs::write(&config, crate::support::config(&[partitioned])).unwrap();
    let (code, text) = check(&["incoming/orders/a.csv"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("partitioned by month (month of day)"),
        "{text}"
    );
    // The derived column is part of what a new table would get.
    assert!(
        text.contains(&format!("  {:<24} string", "month")),
        "{text}"
    );
}

/// `deltadrop status` on a folder: the table, the last file, what waits, what failed.
#[test]
fn status_shows_each_feed_at_a_glance() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path();
    std::fs::write(
        bucket.join("deltadrop.toml"),
        crate::support::config(&[crate::support::feed("t", ""), crate::support::feed("u", "")]),
    )
    .unwrap();
    std::fs::create_dir_all(bucket.join("incoming/t")).unwrap();
    for (name, body) in [("a.csv", "id\n1\n2\n"), ("bad.csv", "id,x\n1\n")] {
        std::fs::write(bucket.join("incoming/t").join(name), body).unwrap();
        deltadrop()
            .args(["run", &format!("incoming/t/{name}"), "--bucket"])
            .arg(bucket)
            .output()
            .unwrap();
    }
    std::fs::write(bucket.join("incoming/t/later.csv"), "id\n3\n").unwrap();
    let output = deltadrop()
        .args(["status", "--bucket"])
        .arg(bucket)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    for expected in [
        "t → ",
        "table      version 0, 2 rows",
        "last file  incoming/t/a.csv (",
        "rewrites   no MERGE among the latest commits; table ",
        "bad rows   0 rejected, 0 warned, over the latest 1 commits",
        "waiting    1\n    incoming/t/later.csv",
        "quarantined 1\n    quarantine/incoming/t/",
        "u → ",
        "table      none yet",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing from:\n{stdout}"
        );
    }
}

/// The same on S3 (moto), with the state machine's last executions.
#[test]
fn status_on_s3_lists_waiting_files_and_the_last_executions() {
    let endpoint = std::env::var("DELTADROP_MOTO_ENDPOINT")
        .expect("DELTADROP_MOTO_ENDPOINT is not set: run the tests with ./scripts/test");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bucket = "deltadrop-status-cli";
    let arn = runtime.block_on(async {
        let (sdk, s3) = moto_clients(&endpoint).await;
        let config = crate::support::config(&[crate::support::feed("t", "")]);
        bucket_with(
            &s3,
            bucket,
            &[
                ("deltadrop.toml", &config),
                ("incoming/t/waiting.csv", "id\n1\n"),
            ],
        )
        .await;
        let sfn = aws_sdk_sfn::Client::new(&sdk);
        let arn = sfn
            .create_state_machine()
            .name("deltadrop-status-cli")
            .definition(r#"{"StartAt":"Done","States":{"Done":{"Type":"Succeed"}}}"#)
            .role_arn("arn:aws:iam::123456789012:role/status-cli")
            .send()
            .await
            .unwrap()
            .state_machine_arn;
        sfn.start_execution()
            .state_machine_arn(&arn)
            .name("a-run-to-list")
            .send()
            .await
            .unwrap();
        arn
    });
    let stdout = run_on_moto(
        &[
            "status",
            "--bucket",
            &format!("s3://{bucket}"),
            "--state-machine-arn",
            &arn,
        ],
        &endpoint,
    );
    for expected in [
        "table      none yet",
        "waiting    1\n    incoming/t/waiting.csv",
        "last executions",
        "a-run-to-list",
        "console.aws.amazon.com/states",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing from:\n{stdout}"
        );
    }
}

/// `deltadrop catalog sync` registers a feed's existing table in a Glue database (moto's), once:
/// a second sync finds it up to date; a feed the configuration does not have is refused.
#[test]
fn catalog_sync_registers_an_existing_table_in_glue() {
    let endpoint = std::env::var("DELTADROP_MOTO_ENDPOINT")
        .expect("DELTADROP_MOTO_ENDPOINT is not set: run the tests with ./scripts/test");
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path();
    let feeds = [
        crate::support::feed("t", ""),
        crate::support::feed("later", ""),
    ];
    std::fs::write(
        bucket.join("deltadrop.toml"),
        crate::support::config(&feeds),
    )
    .unwrap();
    std::fs::create_dir_all(bucket.join("incoming/t")).unwrap();
    std::fs::write(bucket.join("incoming/t/a.csv"), "id,name\n1,a\n").unwrap();
    let (code, stdout) = on_bucket(bucket, &["run", "incoming/t/a.csv"]);
    assert_eq!(code, Some(0), "{stdout}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let glue = runtime.block_on(async {
        let (sdk, _) = moto_clients(&endpoint).await;
        let glue = aws_sdk_glue::Client::new(&sdk);
        let database = aws_sdk_glue::types::DatabaseInput::builder()
            .name("cli_sync")
            .build();
        glue.create_database()
            .database_input(database.unwrap())
            .send()
            .await
            .unwrap();
        glue
    });
    let sync = |extra: &[&str]| {
        let mut args = vec!["catalog", "sync", "--glue-database", "cli_sync", "--bucket"];
        let path = bucket.to_str().unwrap();
        args.push(path);
        args.extend(extra);
        let output = deltadrop()
            .args(&args)
            .env("AWS_ENDPOINT_URL", &endpoint)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).to_string(),
        )
    };
    let (code, stdout) = sync(&[]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains("t → cli_sync.t (created)"), "{stdout}");
    assert!(stdout.contains("later: no table yet at "), "{stdout}");
    let entry = runtime.block_on(async {
        glue.get_table()
            .database_name("cli_sync")
            .name("t")
            .send()
            .await
            .unwrap()
            .table
            .unwrap()
    });
    let descriptor = entry.storage_descriptor().unwrap();
    let columns: Vec<(&str, &str)> = descriptor
        .columns()
        .iter()
        .map(|c| (c.name(), c.r#type().unwrap_or_default()))
        .collect();
    assert_eq!(columns, [("id", "bigint"), ("name", "string")]);
    assert!(
        descriptor.location().unwrap().ends_with("/tables/t"),
        "{descriptor:?}"
    );
    let (code, stdout) = sync(&["--feed", "t"]);
    assert_eq!(
        (code, stdout.trim()),
        (Some(0), "t → cli_sync.t (unchanged)")
    );
    let (code, _) = sync(&["--feed", "nope"]);
    assert_eq!(code, Some(2), "an unknown feed is refused");
}

/// Runs the command against moto (AWS_ENDPOINT_URL) and returns its output; it must succeed.
fn run_on_moto(args: &[&str], endpoint: &str) -> String {
    let output = deltadrop()
        .args(args)
        .env("AWS_ENDPOINT_URL", endpoint)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The SDK configuration and an S3 client for moto.
async fn moto_clients(endpoint: &str) -> (aws_config::SdkConfig, aws_sdk_s3::Client) {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .load()
        .await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    (sdk, s3)
}

/// Creates `bucket` on moto holding `objects` (key, body).
async fn bucket_with(s3: &aws_sdk_s3::Client, bucket: &str, objects: &[(&str, &str)]) {
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    for (key, body) in objects {
        s3.put_object()
            .bucket(bucket)
            .key(*key)
            .body(body.as_bytes().to_vec().into())
            .send()
            .await
            .unwrap();
    }
}

/// `deltadrop run --all`: every incoming file, staged on its own, the good ones merged in one
/// commit and listed in one digest email, the bad one quarantined with its own email; exit 1.
/// With nothing left to run, exit 2.
#[test]
fn run_all_merges_a_tables_files_in_one_commit_and_a_digest_lists_them() {
    let dir = bucket_with_feed_t("notify = \"digest\"\n");
    let bucket = dir.path();
    for (name, body) in [
        ("a.csv", "id,name\n1,a\n2,b\n"),
        ("b.csv", "id,name\n3,c,extra\n"),
        ("c.csv", "id,name\n2,b2\n4,d\n"),
    ] {
        std::fs::write(bucket.join("in").join(name), body).unwrap();
        // Arrival order is the modification time.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let output = deltadrop()
        .args(["run", "--all", "--bucket"])
        .arg(bucket)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("3 files: 2 loaded, 1 failed; 1 commit(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAILED: in/b.csv: MalformedFile"),
        "{stdout}"
    );
    assert!(
        stdout.contains("c.csv: upsert: Applied") && stdout.contains("one commit of 2 files"),
        "{stdout}"
    );
    let mut emails: Vec<String> = std::fs::read_dir(bucket.join("_deltadrop/outbox"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    emails.sort();
    assert_eq!(emails.len(), 2, "one digest and one failure: {emails:#?}");
    let digest = emails
        .iter()
        .find(|e| e.contains("Subject: [deltadrop] t: 2 files loaded"))
        .unwrap_or_else(|| panic!("{emails:#?}"));
    assert!(
        digest.contains("in/a.csv: 2 rows staged, applied"),
        "{digest}"
    );
    assert!(
        digest.contains("in/c.csv: 2 rows staged, applied"),
        "{digest}"
    );
    assert!(emails
        .iter()
        .any(|e| e.contains("FAILED t: b.csv (MalformedFile)")));

    let table = deltadrop()
        .args(["table"])
        .arg(bucket.join("tables/t"))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("version  0") && table.contains("rows     3"),
        "{table}"
    );

    let again = deltadrop()
        .args(["run", "--all", "--bucket"])
        .arg(bucket)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to run"));
    let both = deltadrop()
        .args(["run", "in/a.csv", "--all", "--bucket"])
        .arg(bucket)
        .output()
        .unwrap();
    assert_eq!(
        both.status.code(),
        Some(2),
        "files and --all exclude each other"
    );
}

/// `deltadrop run --workers 4 --chunk-mb 1` stages a file of a few MiB in chunks (the progress
/// says how many) and loads every row, as a run with one worker loads it.
#[test]
fn run_with_workers_stages_a_large_file_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path();
    let feeds = [crate::support::feed("t", "")];
    std::fs::write(
        bucket.join("deltadrop.toml"),
        crate::support::config(&feeds),
    )
    .unwrap();
    std::fs::create_dir_all(bucket.join("incoming/t")).unwrap();
    let rows = 150_000;
    let body: String = std::iter::once("id,name,amount\n".to_string())
        .chain((0..rows).map(|i| format!("{i},name {i},{}.5\n", i % 1000)))
        .collect();
    let chunks = body.len().div_ceil(1024 * 1024);
    assert!(chunks >= 3, "{} bytes", body.len());
    std::fs::write(bucket.join("incoming/t/big.csv"), &body).unwrap();
    let (code, stdout) = on_bucket(
        bucket,
        &[
            "run",
            "incoming/t/big.csv",
            "--workers",
            "4",
            "--chunk-mb",
            "1",
        ],
    );
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!("stage: {rows} rows, 3 columns in {chunks} chunks")),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("{rows} inserted")), "{stdout}");
    let (code, _) = on_bucket(bucket, &["run", "incoming/t/x.csv", "--workers", "0"]);
    assert_eq!(code, Some(2), "no workers is refused");
}
