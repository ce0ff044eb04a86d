//! Upsert: MERGE the staging table into the target on the feed's keys, exactly once per file.
//!
//! The step's output types live here; the MERGE itself ([`merge`]) needs DataFusion and is built
//! only with the `merge` feature, so that the other Lambda binaries do not link it.

pub mod arrival;
#[cfg(feature = "merge")]
mod merge;

use serde::{Deserialize, Serialize};

use super::{RunInput, StageOutput};
#[cfg(feature = "merge")]
pub use merge::upsert;

/// How often a MERGE that lost to a concurrent commit is re-run from a fresh snapshot.
pub const MAX_ATTEMPTS: u32 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpsertOutcome {
    /// The rows were merged in this run.
    Applied,
    /// This upload was merged before (a retried or repeated run): nothing changed.
    AlreadyApplied,
    /// A newer upload of the same key is in the table already: this older one is not merged,
    /// so that it cannot overwrite newer rows (a notification that arrived late).
    Superseded,
    /// The file held no rows.
    NothingToApply,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpsertOutput {
    pub outcome: UpsertOutcome,
    pub table: String,
    /// The table version after this step (absent when no table exists).
    pub version: Option<u64>,
    pub created_table: bool,
    pub rows_inserted: u64,
    pub rows_updated: u64,
    pub rows_deleted: u64,
    pub rows_copied: u64,
    pub files_scanned: u64,
    pub files_skipped: u64,
    pub files_added: u64,
    pub files_removed: u64,
    pub attempts: u32,
    /// The application transaction id that records this file in the table.
    pub file_identity: String,
}

#[cfg(feature = "merge")]
impl UpsertOutput {
    pub(crate) fn unchanged(
        outcome: UpsertOutcome,
        table: &crate::delta::TableLocation,
        version: Option<u64>,
        identity: String,
    ) -> Self {
        UpsertOutput {
            outcome,
            table: table.name(),
            version,
            created_table: false,
            rows_inserted: 0,
            rows_updated: 0,
            rows_deleted: 0,
            rows_copied: 0,
            files_scanned: 0,
            files_skipped: 0,
            files_added: 0,
            files_removed: 0,
            attempts: 1,
            file_identity: identity,
        }
    }
}

/// The application transaction id that records an upload as applied: its key and upload id
/// (object version, sequencer or ETag), or its content hash for a run that names no upload.
pub fn file_identity(run: &RunInput, stage: &StageOutput) -> String {
    match run.upload.id() {
        "" => format!("deltadrop:{}@sha256:{}", run.key, stage.sha256),
        upload => format!("deltadrop:{}@{upload}", run.key),
    }
}

/// The application transaction ids whose versions hold the order ([`crate::upload::UploadOrder`])
/// of the newest upload of the key applied to the table: an older upload of the key is then
/// `Superseded`.
pub fn newest_upload_ids(run: &RunInput) -> [String; 2] {
    [
        format!("deltadrop-newest:{}", run.key),
        format!("deltadrop-newest-low:{}", run.key),
    ]
}
