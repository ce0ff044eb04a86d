//! Upsert: MERGE the staging table into the target on the feed's keys, exactly once per file.
//!
//! The step's output types live here; the MERGE itself ([`merge`]) needs DataFusion and is built
//! only with the `merge` feature, so that the other Lambda binaries do not link it.

#[cfg(feature = "merge")]
mod adopt;
pub mod arrival;
#[cfg(feature = "merge")]
mod batch;
#[cfg(feature = "merge")]
mod by_partition;
#[cfg(feature = "merge")]
mod columns;
#[cfg(feature = "merge")]
mod combine;
#[cfg(feature = "merge")]
mod cost;
#[cfg(feature = "merge")]
mod merge;
#[cfg(feature = "merge")]
mod recheck;
#[cfg(feature = "merge")]
mod version_zero;

use serde::{Deserialize, Serialize};

use super::{RunInput, StageOutput};
#[cfg(feature = "merge")]
pub use batch::{upsert, upsert_files};
#[cfg(feature = "merge")]
pub use recheck::applied_without_an_answer;

/// Whether `table` (at `target`) records the upload whose identity is `identity` as applied.
#[cfg(feature = "merge")]
pub async fn is_applied(
    table: &deltalake::DeltaTable,
    target: &crate::delta::TableLocation,
    identity: &str,
) -> crate::error::Result<bool> {
    Ok(merge::recorded(table, target, identity).await?.is_some())
}

/// A staged file waiting for its table's commit lane: its run and what its stage wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The file's run.
    pub run: RunInput,
    /// The Stage state's output: which staging table holds the rows.
    pub stage: StageOutput,
}

/// The keys of a commit's `deltadrop` info counting the rows its files set aside, and those
/// loaded that broke a `warn` expectation (absent when none).
pub const ROWS_REJECTED: &str = "rows_rejected";
/// See [`ROWS_REJECTED`].
pub const ROWS_WARNED: &str = "rows_warned";

/// How often a MERGE that lost to a concurrent commit is re-run from a fresh snapshot.
pub const MAX_ATTEMPTS: u32 = 8;

/// What the upsert did with the staged rows.
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

impl UpsertOutcome {
    /// The outcome as the step's output names it (`already_applied`).
    pub fn name(self) -> &'static str {
        match self {
            UpsertOutcome::Applied => "applied",
            UpsertOutcome::AlreadyApplied => "already_applied",
            UpsertOutcome::Superseded => "superseded",
            UpsertOutcome::NothingToApply => "nothing_to_apply",
        }
    }
}

/// What the upsert step did to the target table, with the MERGE's metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpsertOutput {
    /// Whether the rows were merged, and if not why.
    pub outcome: UpsertOutcome,
    /// The target table's location.
    pub table: String,
    /// The table version after this step (absent when no table exists).
    pub version: Option<u64>,
    /// What the commit changed (flat in the step's JSON output).
    #[serde(flatten)]
    pub changes: Changes,
    /// How many MERGE attempts it took (more than 1 after concurrent commits won).
    pub attempts: u32,
    /// The application transaction id that records this file in the table.
    pub file_identity: String,
    /// Present when the commit applied other files with this one: the figures above are then
    /// the commit's, and these are this file's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_commit: Option<SharedCommit>,
    /// Rows of this file its stage set aside (the rejects file), not merged.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rows_rejected: u64,
    /// Rows of this file merged although they broke an expectation whose action is `warn`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rows_warned: u64,
    /// With the change data feed on, a few keys the commit updated (before → after), inserted
    /// and deleted (the feed's `email_sample`), for the email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_sample: Option<crate::change_sample::ChangeSample>,
    /// The table's registration in the deployment's data catalog after the commit (absent
    /// without a catalog): a failure here leaves the load applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<crate::catalog::CatalogOutcome>,
}

fn is_zero(count: &u64) -> bool {
    *count == 0
}

/// What one file did in a commit that applied several (the commit lane's batches).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedCommit {
    /// Files the commit applied, this one included.
    pub files: u64,
    /// Keys this file brought (after its own repeated keys were resolved).
    pub keys: u64,
    /// Of those, the keys whose row in the commit is this file's; a later file of the same
    /// commit (or a higher sequence value) decided the rest.
    pub keys_decided: u64,
}

/// What one commit changed in the target table; all zero when nothing was merged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// True when this file created the table (its rows are then all inserted).
    pub created_table: bool,
    /// Rows with keys the table did not have.
    pub rows_inserted: u64,
    /// Table rows replaced by the file's version.
    pub rows_updated: u64,
    /// Table rows deleted by the file's change-type rows.
    pub rows_deleted: u64,
    /// Unchanged rows rewritten because they share a data file with changed ones.
    pub rows_copied: u64,
    /// The table's data files the MERGE read.
    pub files_scanned: u64,
    /// The table's data files the MERGE skipped: in partitions the file does not touch, or
    /// outside the range of the keys it brings.
    pub files_skipped: u64,
    /// The partitions the file's rows fall in, which the MERGE read and rewrote (0 when the
    /// table is not partitioned).
    #[serde(default)]
    pub partitions_touched: u64,
    /// Data files the commit added.
    pub files_added: u64,
    /// Data files the commit removed (rewritten ones).
    pub files_removed: u64,
    /// Bytes of the data files the commit removed: what the MERGE rewrote.
    #[serde(default)]
    pub bytes_rewritten: u64,
    /// What the cost check expected the MERGE to read and rewrite, before it started (absent
    /// for a first load, which rewrites nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<RewriteEstimate>,
}

/// What a MERGE will read, and at most rewrite, of the table: the data files that the staged
/// rows' partitions and key ranges may touch, from the table's log alone (docs: README, "The
/// cost check").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewriteEstimate {
    /// Data files.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Their rows.
    pub rows: u64,
}

#[cfg(feature = "merge")]
impl UpsertOutput {
    /// The step's output for `outcome`, with the table's `version` after it.
    pub(crate) fn new(
        outcome: UpsertOutcome,
        table: &crate::delta::TableLocation,
        version: Option<u64>,
        identity: String,
        changes: Changes,
    ) -> Self {
        UpsertOutput {
            outcome,
            table: table.name(),
            version,
            changes,
            attempts: 1,
            file_identity: identity,
            shared_commit: None,
            rows_rejected: 0,
            rows_warned: 0,
            change_sample: None,
            catalog: None,
        }
    }
}

/// The application transaction id that records an upload as applied: its key and upload id
/// (object version, sequencer or ETag), or its content hash for a run that names no upload (the
/// stage hashed it then).
pub fn file_identity(run: &RunInput, stage: &StageOutput) -> crate::error::Result<String> {
    identity_of(run, stage.sha256.as_deref())
}

/// [`file_identity`] from the run and, for a run that names no upload, the file's hash.
pub fn identity_of(run: &RunInput, sha256: Option<&str>) -> crate::error::Result<String> {
    match (run.upload.id(), sha256) {
        ("", Some(sha256)) => Ok(format!("deltadrop:{}@sha256:{sha256}", run.key)),
        ("", None) => Err(crate::error::Error::InvalidInput {
            message: format!(
                "{}: the run names no upload and the stage output no content hash: nothing \
                 identifies the file for exactly-once",
                run.key
            ),
        }),
        (upload, _) => Ok(format!("deltadrop:{}@{upload}", run.key)),
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
