//! The whole pipeline for files, in the state machine's order: Stage → Archive → Upsert →
//! Notify, and on any failure Quarantine → Notify. The local runner and the tests use this; on
//! AWS, Step Functions does the same with the same steps (see `infra/statemachine/`).
//!
//! Several files are staged and archived one by one, in the order given; then each table's files
//! go through the table's commit lane ([`crate::steps::upsert::upsert_files`]), holding the
//! table's lane ([`crate::storage::ObjectStorage::hold_lane`]) so that no other process merges
//! into it meanwhile.

use std::collections::{BTreeMap, HashMap};

use crate::bounded::join_listed;
use crate::environment::Environment;
use crate::error::Error;
use crate::mail::file_name;
use crate::steps::upsert::arrival::Arrivals;
use crate::steps::upsert::upsert_files;
use crate::steps::{
    archive, digest_groups, notify, notify_digest, quarantine, stage, Failure, NotifyOutput,
    Pending, Report, RunInput, UpsertOutput,
};

/// What happened to one file.
#[derive(Debug)]
pub struct RunResult {
    /// Everything the steps produced, as the notification saw it.
    pub report: Report,
    /// The error that failed the run, if any.
    pub error: Option<Error>,
    /// The notification, or why it could not be sent.
    pub notification: Result<NotifyOutput, Error>,
}

impl RunResult {
    /// True when no step failed; an email that could not be sent does not count.
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }
}

/// A progress callback: a line per step.
pub type Progress<'a> = &'a (dyn Fn(&str) + Sync);

/// Runs the steps for one file in the state machine's order. On a failure the file is
/// quarantined (not a replaced upload, nor a file still waiting in `incoming` for an earlier
/// one) and the failure is emailed. `progress` gets a line per step; the result says how it went.
pub async fn run_file(env: &Environment, run: RunInput, progress: Progress<'_>) -> RunResult {
    let mut results = run_files(env, vec![run], progress).await;
    results.pop().expect("one result per run")
}

/// Runs the steps for several files: each is staged and archived (or quarantined) on its own, in
/// the order given; the files of one table are then merged in as few commits as the feeds'
/// `[feeds.batch]` bounds allow, in that order; each file is emailed on its own (or, for a feed
/// with `notify = "digest"`, listed in its commit's one email). With several files every
/// progress line starts with the file's name. One result per run, in order.
pub async fn run_files(
    env: &Environment,
    runs: Vec<RunInput>,
    progress: Progress<'_>,
) -> Vec<RunResult> {
    let many = runs.len() > 1;
    let say = |run: &RunInput, line: &str| {
        if many {
            progress(&format!("{}: {line}", file_name(&run.key)))
        } else {
            progress(line)
        }
    };
    let mut reports: Vec<Report> = runs
        .iter()
        .map(|run| Report {
            run: Some(run.clone()),
            ..Default::default()
        })
        .collect();
    let mut errors: Vec<Option<Error>> = runs.iter().map(|_| None).collect();

    let together: Vec<&RunInput> = runs.iter().collect();
    let mut arrivals = HashMap::new();
    for (i, run) in runs.iter().enumerate() {
        let staged = stage_and_archive(env, run, &together, &mut arrivals, &mut reports[i], &|l| {
            say(run, l)
        })
        .await;
        errors[i] = staged.err();
    }

    for (table, files) in lanes(env, &runs, &reports, &mut errors) {
        let merged = merge_in_lane(env, &table, &files, &runs, &reports).await;
        for (i, result) in files.into_iter().zip(merged) {
            match result {
                Ok(upsert) => {
                    say(&runs[i], &upsert_line(&upsert));
                    reports[i].upsert = Some(upsert);
                }
                Err(e) => errors[i] = Some(e),
            }
        }
    }

    for (i, run) in runs.iter().enumerate() {
        if let Some(e) = &errors[i] {
            quarantine_failed(env, run, e, &mut reports[i], &|l| say(run, l)).await;
        }
    }
    let notifications = notify_all(env, &reports).await;
    let mut results = Vec::new();
    for ((run, (report, error)), notification) in runs
        .iter()
        .zip(reports.into_iter().zip(errors))
        .zip(notifications)
    {
        match &notification {
            Ok(n) => say(
                run,
                &format!(
                    "notify: {:?} → {}",
                    n.subject,
                    n.delivered
                        .as_deref()
                        .or(n.not_sent.as_deref())
                        .unwrap_or("not sent (no recipients configured)")
                ),
            ),
            Err(e) => say(run, &format!("notify failed: {e}")),
        }
        results.push(RunResult {
            report,
            error,
            notification,
        });
    }
    results
}

/// Stages and archives one file. A feed that applies files in arrival order is checked first,
/// before anything moves: locally nothing retries, so the file stays in incoming/ for a later
/// run (on AWS the upsert waits, retried by the state machine).
async fn stage_and_archive(
    env: &Environment,
    run: &RunInput,
    together: &[&RunInput],
    arrivals: &mut HashMap<String, Arrivals>,
    report: &mut Report,
    progress: Progress<'_>,
) -> Result<(), Error> {
    let feed = env.config.feed_named(&run.feed)?;
    if feed.apply_in_arrival_order {
        if !arrivals.contains_key(&feed.name) {
            arrivals.insert(feed.name.clone(), Arrivals::load(env, feed).await?);
        }
        arrivals[&feed.name].check(run, together)?;
    }
    progress(&format!("stage: reading {}", env.storage.display(&run.key)));
    let staged = stage(env, run).await?;
    progress(&format!(
        "stage: {} rows, {} columns{}{} → {}",
        staged.rows,
        staged.column_count,
        staged
            .chunks
            .map(|n| format!(" in {n} chunks"))
            .unwrap_or_default(),
        if staged.new_columns.is_empty() {
            String::new()
        } else {
            format!(
                " (new: {})",
                join_listed(&staged.new_columns, staged.new_column_count)
            )
        },
        staged
            .staging_table
            .as_deref()
            .unwrap_or("no staging table (no rows)")
    ));
    if let Some(rejects) = &staged.rejects {
        progress(&format!(
            "stage: {} bad row(s) set aside ({}) → {}",
            rejects.rows,
            rejects.reasons(),
            env.storage.display(&rejects.file)
        ));
    }
    for outcome in staged.expectations.iter().filter(|e| e.rows > 0) {
        progress(&format!(
            "stage: {} row(s) broke the expectation {} ({}, {}), the first: {}",
            outcome.rows,
            outcome.name,
            outcome.rule,
            outcome.action.name(),
            outcome.first.join("; ")
        ));
    }
    report.stage = Some(staged);
    let archived = archive(env, run).await?;
    progress(&format!("archive: moved to {}", archived.archived_to));
    report.archive = Some(archived);
    Ok(())
}

/// The staged files of each table (by its URL), in the order given; a file whose table cannot
/// be told fails.
fn lanes(
    env: &Environment,
    runs: &[RunInput],
    reports: &[Report],
    errors: &mut [Option<Error>],
) -> BTreeMap<String, Vec<usize>> {
    let mut lanes: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, run) in runs.iter().enumerate() {
        if errors[i].is_some() || reports[i].stage.is_none() {
            continue;
        }
        let table = env
            .config
            .feed_named(&run.feed)
            .and_then(|feed| env.table(&feed.table));
        match table {
            Ok(table) => lanes.entry(table.name()).or_default().push(i),
            Err(e) => errors[i] = Some(e),
        }
    }
    lanes
}

/// Merges `files` (indices of one table's runs) while holding the table's lane.
async fn merge_in_lane(
    env: &Environment,
    table: &str,
    files: &[usize],
    runs: &[RunInput],
    reports: &[Report],
) -> Vec<Result<UpsertOutput, Error>> {
    let guard = match env.storage.hold_lane(table).await {
        Ok(guard) => guard,
        Err(e) => return files.iter().map(|_| Err(e.clone())).collect(),
    };
    let pending: Vec<Pending> = files
        .iter()
        .map(|&i| Pending {
            run: runs[i].clone(),
            stage: reports[i].stage.clone().expect("only staged files"),
        })
        .collect();
    let merged = upsert_files(env, &pending).await;
    drop(guard);
    merged
}

fn upsert_line(merged: &UpsertOutput) -> String {
    let shared = merged.shared_commit.map_or(String::new(), |s| {
        format!(
            " (one commit of {} files; {} of its keys decided)",
            s.files, s.keys_decided
        )
    });
    format!(
        "upsert: {:?}: {} inserted, {} updated, {} deleted → {} version {}{shared}",
        merged.outcome,
        merged.changes.rows_inserted,
        merged.changes.rows_updated,
        merged.changes.rows_deleted,
        merged.table,
        merged.version.map_or("-".into(), |v| v.to_string())
    )
}

/// Quarantines a failed file (not a replaced upload, which left nothing of its own; nor a file
/// that waits for an earlier one, which stays in incoming/) and records the failure.
async fn quarantine_failed(
    env: &Environment,
    run: &RunInput,
    e: &Error,
    report: &mut Report,
    progress: Progress<'_>,
) {
    progress(&format!("failed: {}: {e}", e.name()));
    let failure = Failure::from(e);
    let quarantined = match e {
        Error::UploadReplaced { .. } => None,
        Error::WaitingForEarlierFile { .. } if report.archive.is_none() => None,
        _ => Some(quarantine(env, run, &failure).await),
    };
    match quarantined {
        None => {}
        Some(Ok(q)) => {
            progress(&format!(
                "quarantine: moved to {} with {}",
                q.quarantined_to, q.report_key
            ));
            report.quarantine = Some(q);
        }
        Some(Err(qe)) => progress(&format!("quarantine failed: {}: {qe}", qe.name())),
    }
    report.failure = Some(failure);
}

/// Each file's email; the successes of a `digest` feed share their commit's one email.
async fn notify_all(env: &Environment, reports: &[Report]) -> Vec<Result<NotifyOutput, Error>> {
    let mut notifications = Vec::new();
    for report in reports {
        notifications.push(notify(env, report).await);
    }
    for files in digest_groups(&env.config, reports) {
        let of_commit: Vec<Report> = files.iter().map(|&i| reports[i].clone()).collect();
        let sent = notify_digest(env, &of_commit).await;
        for &i in &files {
            notifications[i] = sent.clone();
        }
    }
    notifications
}
