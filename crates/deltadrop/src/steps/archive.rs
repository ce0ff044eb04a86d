//! Archive (after a good stage) and quarantine (after any failure): move the original file,
//! never losing it. Both are safe to re-run after a partial move.

use serde::{Deserialize, Serialize};

use super::{Failure, RunInput};
use crate::environment::Environment;
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveOutput {
    pub archived_key: String,
    /// Where the file is now, as a URL-like location.
    pub archived_to: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineOutput {
    pub quarantined_key: String,
    pub quarantined_to: String,
    pub report_key: String,
    pub staging_removed: bool,
}

/// The error report written beside a quarantined file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    pub error: String,
    pub message: String,
    pub advice: String,
    pub run_id: String,
    pub feed: String,
    pub original_key: String,
    pub time: chrono::DateTime<chrono::Utc>,
}

/// Copies `from` to `to` and deletes `from`. When `from` is gone and `to` exists, a previous
/// attempt already moved it.
async fn move_object(env: &Environment, from: &str, to: &str) -> Result<()> {
    if env.storage.size(from).await?.is_some() {
        env.storage.copy(from, to).await?;
        env.storage.delete(from).await
    } else if env.storage.size(to).await?.is_some() {
        Ok(())
    } else {
        Err(Error::ObjectNotFound {
            key: from.to_string(),
        })
    }
}

pub fn archive_key(env: &Environment, run: &RunInput) -> String {
    format!("{}{}", env.config.locations.archive, run.key)
}

pub fn quarantine_key(env: &Environment, run: &RunInput) -> String {
    format!("{}{}", env.config.locations.quarantine, run.key)
}

pub async fn archive(env: &Environment, run: &RunInput) -> Result<ArchiveOutput> {
    let to = archive_key(env, run);
    move_object(env, &run.key, &to).await?;
    Ok(ArchiveOutput {
        archived_to: env.storage.display(&to),
        archived_key: to,
    })
}

/// Moves the file (from where it arrived, or from the archive when the failure came after the
/// archive step) to quarantine, writes the error report beside it and drops the run's staging
/// table.
pub async fn quarantine(
    env: &Environment,
    run: &RunInput,
    failure: &Failure,
) -> Result<QuarantineOutput> {
    let to = quarantine_key(env, run);
    let report_key = format!("{to}.error.json");
    let report = ErrorReport {
        error: failure.error.clone(),
        message: failure.cause.clone(),
        advice: Error::advice(&failure.error).to_string(),
        run_id: run.run_id.clone(),
        feed: run.feed.clone(),
        original_key: run.key.clone(),
        time: env.clock.now(),
    };
    let body = serde_json::to_vec_pretty(&report).map_err(|e| Error::InvalidInput {
        message: e.to_string(),
    })?;
    env.storage.put(&report_key, body).await?;

    let archived = archive_key(env, run);
    let from = if env.storage.size(&run.key).await?.is_some() {
        run.key.clone()
    } else {
        archived
    };
    move_object(env, &from, &to).await?;

    let staging_removed = match run.validate().and(env.staging_table(&run.run_id)) {
        Ok(staging) => staging.remove().await.is_ok(),
        Err(_) => false,
    };
    Ok(QuarantineOutput {
        quarantined_to: env.storage.display(&to),
        quarantined_key: to,
        report_key,
        staging_removed,
    })
}
