//! The fault run: files for three tables, eight per table at once, through the real state
//! machine and the commit lane while the proxy makes S3 fail a share of the functions' requests
//! (503 SlowDown, 500 InternalError) and kills mergers, some just before their commit lands and
//! some after it landed but before they answered (a crash or timeout of the upsert function).
//! Every file must end applied exactly once, or quarantined with an email; an
//! independent reader (the Python `deltalake` package) must find no row lost or doubled, and no
//! staging table may be left behind. The counts are printed (docs/reliability.md records them).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::json;

use crate::world::{in_run_folder, notified_key, Finished, World};

pub const TABLES: usize = 3;
const GOOD_FILES_PER_TABLE: usize = 8;
const ROWS_PER_FILE: usize = 5;
/// Every ninth S3 request of each kind fails (11%); DELTADROP_FAULT_EVERY sets another share.
const S3_FAULT_EVERY: u64 = 9;
const MERGERS_KILLED_BEFORE_COMMIT: u32 = 2;
const MERGERS_KILLED_AFTER_COMMIT: u32 = 2;

/// One dropped file and the rows it must bring (none for a bad file).
struct Dropped {
    key: String,
    feed: String,
    body: String,
    rows: Vec<String>,
    good: bool,
}

fn files() -> Vec<Dropped> {
    let mut files = Vec::new();
    for table in 0..TABLES {
        let feed = format!("faults-{table}");
        for file in 0..GOOD_FILES_PER_TABLE {
            let rows: Vec<String> = (0..ROWS_PER_FILE)
                .map(|row| format!("{}|t{table}-f{file}", file * 100 + row))
                .collect();
            let body: String = rows
                .iter()
                .map(|r| format!("{}\n", r.replace('|', ",")))
                .collect();
            files.push(Dropped {
                key: format!("incoming/faults/{table}/file-{file}.csv"),
                feed: feed.clone(),
                body: format!("id,file\n{body}"),
                rows,
                good: true,
            });
        }
        files.push(Dropped {
            key: format!("incoming/faults/{table}/bad.csv"),
            feed,
            body: "id,file\n1,bad,extra\n".into(),
            rows: Vec::new(),
            good: false,
        });
    }
    files
}

/// What the run did, for the report.
#[derive(Default, Debug, serde::Serialize)]
struct Counts {
    /// One S3 request in this many (of each kind) failed.
    s3_fault_every: u64,
    files: usize,
    bad_files: usize,
    applied: usize,
    /// Files whose merger died after committing them: redelivered, found applied.
    already_applied_after_a_killed_merger: usize,
    quarantined_bad: usize,
    quarantined_good: usize,
    s3_faults: BTreeMap<String, u32>,
    mergers_killed_before_commit: u32,
    mergers_killed_after_commit: u32,
    /// Lane messages handed back for redelivery, and merges of one table that overlapped.
    lane_redelivered: u32,
    lane_overlaps: u32,
    /// The merger's answers by outcome or error name.
    answers: BTreeMap<String, u32>,
    /// Invocations per function (all attempts) and how many failed.
    invocations: BTreeMap<&'static str, (u32, u32)>,
    commit_conflict_retries: u64,
    most_upsert_attempts: u64,
    rows_expected: usize,
    rows_read: usize,
    rows_lost: usize,
    rows_doubled: usize,
    rows_unexpected: usize,
    staging_tables_left: usize,
    seconds: u64,
}

pub async fn files_under_faults_are_applied_once_or_quarantined(world: &World) {
    let files = files();
    for file in &files {
        world.upload(&file.key, &file.body).await;
    }
    let records = world.file_records(files.len()).await;
    let invocations_before = world.faults.invocations.lock().unwrap().clone();
    let every = std::env::var("DELTADROP_FAULT_EVERY")
        .map(|n| n.parse().expect("DELTADROP_FAULT_EVERY is a number"))
        .unwrap_or(S3_FAULT_EVERY);
    world.faults.s3_fault_every.store(every, Ordering::SeqCst);
    world
        .faults
        .kill_merger_before_commit
        .store(MERGERS_KILLED_BEFORE_COMMIT, Ordering::SeqCst);
    world
        .faults
        .kill_merger_after_commit
        .store(MERGERS_KILLED_AFTER_COMMIT, Ordering::SeqCst);
    let answers_before = world.faults.answers.lock().unwrap().clone();
    let redelivered_before = world.lane.redelivered.load(Ordering::SeqCst);
    let started = Instant::now();
    let names = world.start(&records).await;
    let finished = world.wait_for(names).await;
    let seconds = started.elapsed().as_secs();
    world.faults.s3_fault_every.store(0, Ordering::SeqCst);

    let by_key: HashMap<String, &Dropped> = files.iter().map(|f| (f.key.clone(), f)).collect();
    let runs: Vec<(&Dropped, Finished)> = records
        .iter()
        .map(|r| by_key[&notified_key(r)])
        .zip(finished)
        .collect();
    let mut counts = Counts {
        s3_fault_every: every,
        files: files.len(),
        bad_files: files.iter().filter(|f| !f.good).count(),
        seconds,
        s3_faults: world.faults.s3_faults.lock().unwrap().clone(),
        mergers_killed_before_commit: MERGERS_KILLED_BEFORE_COMMIT
            - world
                .faults
                .kill_merger_before_commit
                .load(Ordering::SeqCst),
        mergers_killed_after_commit: MERGERS_KILLED_AFTER_COMMIT
            - world.faults.kill_merger_after_commit.load(Ordering::SeqCst),
        lane_redelivered: world.lane.redelivered.load(Ordering::SeqCst) - redelivered_before,
        lane_overlaps: world.lane.overlaps.load(Ordering::SeqCst),
        ..Counts::default()
    };
    for (kind, n) in world.faults.answers.lock().unwrap().iter() {
        let before = answers_before.get(kind).copied().unwrap_or_default();
        if *n > before {
            counts.answers.insert(kind.clone(), n - before);
        }
    }
    for (function, (calls, failures)) in world.faults.invocations.lock().unwrap().iter() {
        let (calls_before, failures_before) = invocations_before
            .get(function)
            .copied()
            .unwrap_or_default();
        counts
            .invocations
            .insert(function, (calls - calls_before, failures - failures_before));
    }

    let emails: Vec<String> = world.emails().await.iter().map(|e| e.to_string()).collect();
    let mut expected: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (file, run) in &runs {
        let name = file.key.rsplit('/').next().unwrap();
        match run.status.as_str() {
            "SUCCEEDED" => {
                assert!(file.good, "{} was loaded: {:#}", file.key, run.output);
                let outcome = run.output["upsert"]["outcome"].as_str().unwrap();
                match outcome {
                    "applied" => counts.applied += 1,
                    "already_applied" => counts.already_applied_after_a_killed_merger += 1,
                    other => panic!("{}: outcome {other}", file.key),
                }
                let attempts = run.output["upsert"]["attempts"].as_u64().unwrap();
                counts.commit_conflict_retries += attempts - 1;
                counts.most_upsert_attempts = counts.most_upsert_attempts.max(attempts);
                assert!(
                    world
                        .exists(&in_run_folder("archive/", &file.key, &run.name))
                        .await,
                    "{} is not archived",
                    file.key
                );
                assert!(
                    emails
                        .iter()
                        .any(|s| s.contains(&format!("{}: {name} loaded", file.feed))),
                    "no success email for {}",
                    file.key
                );
                expected
                    .entry(file.feed.as_str())
                    .or_default()
                    .extend(file.rows.iter().cloned());
            }
            "FAILED" => {
                if file.good {
                    counts.quarantined_good += 1;
                } else {
                    assert_eq!(run.error.as_deref(), Some("MalformedFile"), "{}", file.key);
                    counts.quarantined_bad += 1;
                }
                let quarantined = in_run_folder("quarantine/", &file.key, &run.name);
                assert!(world.exists(&quarantined).await, "{} is lost", file.key);
                assert!(world.exists(&format!("{quarantined}.error.json")).await);
                assert!(
                    emails
                        .iter()
                        .any(|s| s.contains(&format!("FAILED {}: {name}", file.feed))),
                    "no failure email for {}",
                    file.key
                );
            }
            other => panic!("{} ended {other}: {:?}", file.key, run.error),
        }
        assert!(
            !world.exists(&file.key).await,
            "{} is still in incoming/",
            file.key
        );
    }

    for table in 0..TABLES {
        let feed = format!("faults-{table}");
        let mut wanted = expected.remove(feed.as_str()).unwrap_or_default();
        wanted.sort();
        let read = world.read_with_python(&format!("tables/{feed}"), "id");
        let mut rows: Vec<String> = serde_json::from_value(read["rows"].clone()).unwrap();
        rows.sort();
        let mut ids: Vec<&str> = rows.iter().map(|r| r.split('|').next().unwrap()).collect();
        let read_ids = ids.len();
        ids.dedup();
        counts.rows_expected += wanted.len();
        counts.rows_read += rows.len();
        counts.rows_doubled += read_ids - ids.len();
        counts.rows_lost += wanted.iter().filter(|r| !rows.contains(r)).count();
        counts.rows_unexpected += rows.iter().filter(|r| !wanted.contains(r)).count();
    }
    let run_names: Vec<&str> = runs.iter().map(|(_, run)| run.name.as_str()).collect();
    counts.staging_tables_left = world
        .keys("_deltadrop/staging/")
        .await
        .iter()
        .filter(|k| run_names.iter().any(|n| k.contains(&format!("/{n}/"))))
        .map(|k| k.split('/').nth(2).unwrap().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .len();

    report(&counts);
    assert_eq!(
        (
            counts.rows_lost,
            counts.rows_doubled,
            counts.rows_unexpected
        ),
        (0, 0, 0),
        "{counts:#?}"
    );
    assert_eq!(counts.staging_tables_left, 0, "{counts:#?}");
    assert_eq!(counts.quarantined_bad, TABLES, "{counts:#?}");
    assert_eq!(counts.quarantined_good, 0, "{counts:#?}");
    assert_eq!(
        counts.lane_overlaps, 0,
        "two merges of one table overlapped: {counts:#?}"
    );
    assert_eq!(
        (
            counts.mergers_killed_before_commit,
            counts.mergers_killed_after_commit
        ),
        (MERGERS_KILLED_BEFORE_COMMIT, MERGERS_KILLED_AFTER_COMMIT),
        "every merger fault was injected: {counts:#?}"
    );
    // A merger killed after its commit answered none of the commit's files: each is delivered
    // again and found applied.
    assert!(
        counts.already_applied_after_a_killed_merger >= MERGERS_KILLED_AFTER_COMMIT as usize,
        "{counts:#?}"
    );
    for kind in ["GET/HEAD", "PUT", "COPY", "DELETE", "LIST"] {
        assert!(
            counts.s3_faults.keys().any(|k| k.ends_with(kind)),
            "no fault injected on {kind}: {counts:#?}"
        );
    }
}

/// Prints the counts, and keeps them as JSON where DELTADROP_FAULT_REPORT points.
fn report(counts: &Counts) {
    println!(
        "fault run: {}",
        serde_json::to_string_pretty(counts).unwrap()
    );
    if let Ok(path) = std::env::var("DELTADROP_FAULT_REPORT") {
        std::fs::write(path, serde_json::to_vec_pretty(&json!(counts)).unwrap()).unwrap();
    }
}
