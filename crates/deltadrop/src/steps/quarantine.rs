//! Quarantine (after any failure): move the file beside an error report that says what went
//! wrong and what to do, and drop the run's staging table. Safe to re-run after a partial move.

use serde::{Deserialize, Serialize};

use super::archive::{archive_key, copy_key, move_object};
use super::{Failure, RunInput};
use crate::environment::Environment;
use crate::error::{Error, Result};
use crate::rejects::{count_rows, REJECTS_SUFFIX};
use crate::upload::Upload;

/// Where the quarantine step put the file and its error report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineOutput {
    /// The quarantined file's key in the bucket.
    pub quarantined_key: String,
    /// Where the file is now, as a URL-like location.
    pub quarantined_to: String,
    /// The key of the error report: the file's key followed by `.error.json`.
    pub report_key: String,
    /// False when the run's staging table could not be removed.
    pub staging_removed: bool,
    /// The rejects file beside the file: the bad rows its stage set aside (a feed with
    /// `on_bad_rows = "reject"`), when it wrote one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejects_file: Option<String>,
}

/// The error report written beside a quarantined file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// The failure's stable name, e.g. `MalformedFile`.
    pub error: String,
    /// What went wrong, naming the line and column where known.
    pub message: String,
    /// What an operator should do about it.
    pub advice: String,
    /// The run that failed.
    pub run_id: String,
    /// The file's feed.
    pub feed: String,
    /// The key the file arrived under.
    pub original_key: String,
    /// The upload that failed (S3 version, ETag, upload time).
    #[serde(default)]
    pub upload: Upload,
    /// When the report was written.
    pub time: chrono::DateTime<chrono::Utc>,
    /// The rejects file beside the file, when the stage set bad rows aside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejects_file: Option<String>,
    /// How many rows it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_rejected: Option<u64>,
}

/// `<quarantine prefix><folder of the key>/<run id>/<file name>`, as the archive copy.
pub fn quarantine_key(env: &Environment, run: &RunInput) -> String {
    copy_key(&env.config.locations.quarantine, run)
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
    let rejects_key = format!("{to}{REJECTS_SUFFIX}");
    // Only for the report: a failure to look does not stop the quarantine.
    let rejects_file = match env.storage.size(&rejects_key).await {
        Ok(size) => size.map(|_| rejects_key),
        Err(e) => {
            tracing::warn!(error = %e, "could not look for the run's rejects file");
            None
        }
    };
    let rows_rejected = match &rejects_file {
        Some(key) => env
            .storage
            .read_all(key)
            .await
            .ok()
            .map(|text| count_rows(&text)),
        None => None,
    };
    let report = ErrorReport {
        error: failure.error.to_string(),
        message: failure.cause.clone(),
        advice: failure.error.advice().to_string(),
        run_id: run.run_id.clone(),
        feed: run.feed.clone(),
        original_key: run.key.clone(),
        upload: run.upload.clone(),
        time: chrono::Utc::now(),
        rejects_file: rejects_file.clone(),
        rows_rejected,
    };
    let body = serde_json::to_vec_pretty(&report).map_err(|e| Error::internal(e.to_string()))?;
    env.storage.put(&report_key, body).await?;

    let archived = archive_key(env, run);
    if env.storage.holds(&run.key, &run.upload).await? {
        move_object(env, &run.key, &run.upload, &to).await?;
    } else {
        // The archive copy belongs to this run alone: no pin needed.
        move_object(env, &archived, &Upload::any(), &to).await?;
    }

    let staging_removed = env
        .storage
        .delete_all(&env.staging_prefix(&run.run_id))
        .await
        .is_ok();
    Ok(QuarantineOutput {
        quarantined_to: env.storage.display(&to),
        quarantined_key: to,
        report_key,
        staging_removed,
        rejects_file,
    })
}
