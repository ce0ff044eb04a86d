//! Replay: put a quarantined file back where it arrived, as a new upload, so that it runs again
//! (after the sender fixed it, the configuration changed, or a transient failure passed).
//!
//! The file moves from `quarantine/<folder>/<run id>/<file>` back to its original key (read from
//! the error report beside it). The report stays where it is, renamed to
//! `<file>.replayed-<time>.error.json`: the new run gets its own run folder, and a later failure
//! writes its own report there, so nothing collides and the history is kept.

use chrono::Utc;

use crate::error::{Error, Result};
use crate::steps::quarantine::ErrorReport;
use crate::storage::ObjectStorage;
use crate::upload::Upload;

const REPORT_SUFFIX: &str = ".error.json";

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// The quarantined copy that was put back.
    pub quarantined_key: String,
    /// Where it was put back: its original key, a new upload there.
    pub original_key: String,
    /// The feed the file belonged to.
    pub feed: String,
    /// Where the old error report is kept.
    pub report_kept_at: String,
    /// The new upload (its S3 object version; locally its fingerprint).
    pub upload: Option<Upload>,
}

/// Puts the quarantined file `quarantined_key` (the file, not its report) back under its
/// original key.
pub async fn replay(storage: &dyn ObjectStorage, quarantined_key: &str) -> Result<Replayed> {
    let report_key = format!("{quarantined_key}{REPORT_SUFFIX}");
    let report = read_report(storage, &report_key).await?;
    let any = Upload::any();
    storage
        .copy(quarantined_key, &any, &report.original_key)
        .await?;
    let kept = format!(
        "{quarantined_key}.replayed-{}{REPORT_SUFFIX}",
        Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
    );
    storage.copy(&report_key, &any, &kept).await?;
    storage.delete(&report_key, &any).await?;
    storage.delete(quarantined_key, &any).await?;
    Ok(Replayed {
        quarantined_key: quarantined_key.to_string(),
        upload: storage.upload(&report.original_key).await?,
        original_key: report.original_key,
        feed: report.feed,
        report_kept_at: kept,
    })
}

/// The quarantined files under `quarantine_prefix` that wait for a replay (their report has not
/// been renamed by an earlier one), of `feed` only when given, oldest first.
pub async fn quarantined(
    storage: &dyn ObjectStorage,
    quarantine_prefix: &str,
    feed: Option<&str>,
) -> Result<Vec<String>> {
    let mut waiting = Vec::new();
    for object in storage.list(quarantine_prefix).await? {
        let Some(file) = object.key.strip_suffix(REPORT_SUFFIX) else {
            continue;
        };
        if file.contains(".replayed-") {
            continue;
        }
        let report = read_report(storage, &object.key).await?;
        if feed.is_none_or(|f| f == report.feed) {
            waiting.push((report.time, file.to_string()));
        }
    }
    waiting.sort();
    Ok(waiting.into_iter().map(|(_, key)| key).collect())
}

async fn read_report(storage: &dyn ObjectStorage, key: &str) -> Result<ErrorReport> {
    serde_json::from_slice(&storage.read_all(key).await?).map_err(|e| Error::InvalidInput {
        message: format!(
            "{} is not a deltadrop error report: {e}",
            storage.display(key)
        ),
    })
}
