//! The whole pipeline for one file, in the state machine's order:
//! Stage → Archive → Upsert → Notify, and on any failure Quarantine → Notify.
//! The local runner and the tests use this; on AWS, Step Functions does the same with the
//! same steps (see `infra/statemachine/pipeline.asl.json`).

use crate::bounded::join_listed;
use crate::environment::Environment;
use crate::error::Error;
use crate::steps::upsert::arrival::wait_for_earlier_files;
use crate::steps::{
    archive, notify, quarantine, stage, upsert, Failure, NotifyOutput, Report, RunInput,
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

async fn load(
    env: &Environment,
    run: &RunInput,
    report: &mut Report,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<(), Error> {
    let feed = env.config.feed_named(&run.feed)?;
    if feed.apply_in_arrival_order {
        // Checked before anything moves: locally nothing retries, so the file stays in incoming/
        // for a later run (on AWS the upsert waits, retried by the state machine).
        wait_for_earlier_files(env, feed, run).await?;
    }
    progress(&format!("stage: reading {}", env.storage.display(&run.key)));
    let staged = stage(env, run).await?;
    progress(&format!(
        "stage: {} rows, {} columns{} → {}",
        staged.rows,
        staged.column_count,
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
    report.stage = Some(staged);

    let archived = archive(env, run).await?;
    progress(&format!("archive: moved to {}", archived.archived_to));
    report.archive = Some(archived);

    let staged = report.stage.as_ref().expect("set above");
    let merged = upsert(env, run, staged).await?;
    progress(&format!(
        "upsert: {:?}: {} inserted, {} updated, {} deleted → {} version {}",
        merged.outcome,
        merged.changes.rows_inserted,
        merged.changes.rows_updated,
        merged.changes.rows_deleted,
        merged.table,
        merged.version.map_or("-".into(), |v| v.to_string())
    ));
    report.upsert = Some(merged);
    Ok(())
}

/// Runs the steps for one file in the state machine's order. On a failure the file is
/// quarantined (not a replaced upload, nor a file still waiting in `incoming` for an earlier
/// one) and the failure is emailed. `progress` gets a line per step; the result says how it went.
pub async fn run_file(
    env: &Environment,
    run: RunInput,
    progress: &(dyn Fn(&str) + Sync),
) -> RunResult {
    let mut report = Report {
        run: Some(run.clone()),
        ..Default::default()
    };
    let error = load(env, &run, &mut report, progress).await.err();
    if let Some(e) = &error {
        progress(&format!("failed: {}: {e}", e.name()));
        let failure = Failure::from(e);
        // A replaced upload left nothing of its own to quarantine (the state machine routes
        // UploadReplaced straight to NotifyFailure, too); a file that waits for an earlier one
        // stays in incoming/ until that one is loaded.
        let quarantined = match e {
            Error::UploadReplaced { .. } => None,
            Error::WaitingForEarlierFile { .. } if report.archive.is_none() => None,
            _ => Some(quarantine(env, &run, &failure).await),
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
    let notification = notify(env, &report).await;
    match &notification {
        Ok(n) => progress(&format!(
            "notify: {:?} → {}",
            n.subject,
            n.delivered
                .as_deref()
                .unwrap_or("not sent (no recipients configured)")
        )),
        Err(e) => progress(&format!("notify failed: {e}")),
    }
    RunResult {
        report,
        error,
        notification,
    }
}
