//! Archive (after a good stage) and quarantine (after any failure): move the original file,
//! never losing it. Both are safe to re-run after a partial move.

use serde::{Deserialize, Serialize};

use super::{Failure, RunInput};
use crate::environment::Environment;
use crate::error::{Error, Result};
use crate::upload::Upload;

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
    /// The upload that failed (S3 version, ETag, upload time).
    #[serde(default)]
    pub upload: Upload,
    pub time: chrono::DateTime<chrono::Utc>,
}

/// Copies `upload` of `from` to `to` and deletes it from `from`. When `from` no longer holds it
/// and `to` exists, a previous attempt already moved it.
async fn move_object(env: &Environment, from: &str, upload: &Upload, to: &str) -> Result<()> {
    if env.storage.holds(from, upload).await? {
        env.storage.copy(from, upload, to).await?;
        env.storage.delete(from, upload).await
    } else if env.storage.size(to).await?.is_some() {
        Ok(())
    } else if upload.is_pinned() && env.storage.size(from).await?.is_some() {
        Err(Error::UploadReplaced {
            key: from.to_string(),
        })
    } else {
        Err(Error::ObjectNotFound {
            key: from.to_string(),
        })
    }
}

/// `<prefix><folder of the key>/<run id>/<file name>`: every upload of a key keeps its own copy
/// (a producer that sends `orders.csv` every hour), and a retried step finds its own.
fn copy_key(prefix: &str, run: &RunInput) -> String {
    let (folder, file) = match run.key.rsplit_once('/') {
        Some((folder, file)) => (format!("{folder}/"), file),
        None => (String::new(), run.key.as_str()),
    };
    format!("{prefix}{folder}{}/{file}", run.run_id)
}

pub fn archive_key(env: &Environment, run: &RunInput) -> String {
    copy_key(&env.config.locations.archive, run)
}

pub fn quarantine_key(env: &Environment, run: &RunInput) -> String {
    copy_key(&env.config.locations.quarantine, run)
}

pub async fn archive(env: &Environment, run: &RunInput) -> Result<ArchiveOutput> {
    run.validate()?;
    let to = archive_key(env, run);
    move_object(env, &run.key, &run.upload, &to).await?;
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
    run.validate()?;
    let to = quarantine_key(env, run);
    let report_key = format!("{to}.error.json");
    let report = ErrorReport {
        error: failure.error.clone(),
        message: failure.cause.clone(),
        advice: Error::advice(&failure.error).to_string(),
        run_id: run.run_id.clone(),
        feed: run.feed.clone(),
        original_key: run.key.clone(),
        upload: run.upload.clone(),
        time: env.clock.now(),
    };
    let body = serde_json::to_vec_pretty(&report).map_err(|e| Error::InvalidInput {
        message: e.to_string(),
    })?;
    env.storage.put(&report_key, body).await?;

    let archived = archive_key(env, run);
    if env.storage.holds(&run.key, &run.upload).await? {
        move_object(env, &run.key, &run.upload, &to).await?;
    } else {
        // The archive copy belongs to this run alone: no pin needed.
        move_object(env, &archived, &Upload::any(), &to).await?;
    }

    let staging_removed = match env.staging_table(&run.run_id) {
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
