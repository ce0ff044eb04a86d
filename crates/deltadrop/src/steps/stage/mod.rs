//! Stage: read the incoming file and write it as this run's staging Delta table.
//!
//! The step's output type lives here; the stage itself ([`write`]) needs delta-rs and is built
//! only with the `delta` feature, so that the functions that do not read files (trigger,
//! archive, notify, watch) do not link a Delta engine.

#[cfg(feature = "delta")]
mod key_order;
#[cfg(feature = "delta")]
mod split;
#[cfg(feature = "delta")]
mod write;

use serde::{Deserialize, Serialize};

#[cfg(feature = "delta")]
pub use split::{stage_in_chunks, steps as chunks, MAX_CHUNKS};
#[cfg(feature = "delta")]
pub use write::stage;

/// What the stage step read, and where it wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageOutput {
    /// Rows read from the file and staged.
    pub rows: u64,
    /// Size of the file as stored.
    pub bytes: u64,
    /// SHA-256 of the file as stored, only for an upload without a version id, sequencer or
    /// ETag: with the key, the file's identity for exactly-once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The file's columns: the first [`crate::bounded::MAX_LISTED_NAMES`] of `column_count`.
    pub columns: Vec<String>,
    /// How many columns the file has.
    #[serde(default)]
    pub column_count: u64,
    /// Columns the target table does not have yet (listed as `columns` is).
    pub new_columns: Vec<String>,
    /// How many columns the target table does not have yet.
    #[serde(default)]
    pub new_column_count: u64,
    /// The staging table; absent when the file holds no rows.
    pub staging_table: Option<String>,
    /// The staging files were written as the data files of a new target table would be
    /// (dictionaries, statistics on the keys, the feed's file size): the target did not exist, so
    /// the upsert may adopt them as the table's first files instead of writing the rows again.
    #[serde(default)]
    pub written_for_a_new_table: bool,
    /// The file's (single) key strictly increased from row to row, as in a sorted export: no key
    /// repeats, so the upsert skips its duplicate-key check.
    #[serde(default)]
    pub keys_strictly_increasing: bool,
    /// The table the upsert merges the rows into.
    pub target_table: String,
    /// The target table's commit lane ([`crate::storage::lane_id`]): on AWS the message group
    /// of the Upsert state's message, so that one merger at a time works on the table.
    #[serde(default)]
    pub lane: String,
    /// Rows set aside (a feed with `on_bad_rows = "reject"`): counts, the first few and the
    /// rejects file; absent when none was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejects: Option<crate::rejects::RejectsSummary>,
    /// What each of the feed's expectations found: rows that broke it (set aside or loaded with
    /// a warning); absent for a feed without expectations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expectations: Vec<crate::rejects::ExpectationOutcome>,
    /// The chunks the file was staged in by parallel workers; absent when it was read whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<u64>,
}

impl StageOutput {
    /// Rows set aside.
    pub fn rejected_rows(&self) -> u64 {
        self.rejects.as_ref().map_or(0, |r| r.rows)
    }

    /// Rows loaded that broke an expectation whose action is `warn`.
    pub fn warned_rows(&self) -> u64 {
        self.expectations
            .iter()
            .filter(|e| e.action == crate::expect::Action::Warn)
            .map(|e| e.rows)
            .sum()
    }
}
