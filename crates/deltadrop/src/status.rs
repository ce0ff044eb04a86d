//! Per feed, at a glance: the table's version and rows, the last file applied and when, what
//! its latest MERGEs rewrote, the files waiting under the incoming prefix and those in
//! quarantine waiting for a replay, with the rejects files of rows set aside.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Config;
use crate::delta::{commit_files, data_files, TableLocation};
use crate::error::Result;
use crate::inspect::summarize;
use crate::replay::quarantined;
use crate::replay_rejects::waiting_for_replay;
use crate::storage::ObjectStorage;

/// How many commits are searched for the last applied file.
const HISTORY: usize = 50;
/// How many of the latest commits the rewrite figures look at.
const REWRITE_HISTORY: usize = 20;

/// What the table's latest MERGEs rewrote (every data file holding a changed key is rewritten):
/// a table outgrowing its layout shows here before its MERGEs fail the cost check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Rewrites {
    /// MERGE commits among the latest commits looked at.
    pub merges: u64,
    /// The bytes an average one of them rewrote.
    pub average_bytes: u64,
    /// The most one of them rewrote.
    pub largest_bytes: u64,
    /// The bytes of the table's data files now.
    pub table_bytes: u64,
}

/// The rows the files of the latest commits set aside or loaded with a warning: a feed whose
/// producer sends more and more bad rows shows here, while each file still loads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BadRows {
    /// Commits looked at.
    pub commits: u64,
    /// Rows their files set aside in rejects files.
    pub rejected: u64,
    /// Rows they loaded that broke a `warn` expectation.
    pub warned: u64,
}

/// One feed's state.
#[derive(Debug, Clone, Serialize)]
pub struct FeedStatus {
    /// The feed's name.
    pub feed: String,
    /// The table's location.
    pub table: String,
    /// The table's version and rows; `None` before the first file.
    pub version: Option<u64>,
    /// Rows in the current version.
    pub rows: Option<u64>,
    /// The last file a commit applied, and when (within the last commits).
    pub last_file: Option<(String, Option<DateTime<Utc>>)>,
    /// What the latest MERGEs rewrote; `None` before the first file.
    pub rewrites: Option<Rewrites>,
    /// The rows the latest commits' files set aside or warned about; `None` before the first
    /// file.
    pub bad_rows: Option<BadRows>,
    /// Files under the feed's incoming prefix, not read by any run yet.
    pub waiting: Vec<String>,
    /// Quarantined files of the feed that were not replayed.
    pub quarantined: Vec<String>,
    /// Rejects files of the feed (rows set aside) that were not replayed, with their rows.
    pub rejects: Vec<String>,
}

/// The state of every feed of `config` in `storage`.
pub async fn status(config: &Config, storage: &dyn ObjectStorage) -> Result<Vec<FeedStatus>> {
    let mut feeds = Vec::new();
    for feed in &config.feeds {
        let location = TableLocation::new(
            storage.table_url(&feed.table)?,
            storage.table_storage_options(),
        );
        let (summary, rewrites) = match location.open().await? {
            Some(table) => {
                let summary = summarize(&location, HISTORY).await?;
                let rewrites = rewrites(&table, &summary.history).await?;
                (Some(summary), Some(rewrites))
            }
            None => (None, None),
        };
        let waiting = storage
            .list(feed.incoming_prefix())
            .await?
            .into_iter()
            .filter(|o| feed.matches(&o.key))
            .map(|o| o.key)
            .collect();
        feeds.push(FeedStatus {
            feed: feed.name.clone(),
            table: location.name(),
            version: summary.as_ref().map(|s| s.version),
            rows: summary.as_ref().map(|s| s.rows),
            rewrites,
            bad_rows: summary.as_ref().map(|s| bad_rows(&s.history)),
            last_file: summary.and_then(|s| {
                s.history
                    .into_iter()
                    .find_map(|h| h.file.map(|file| (file, h.time)))
            }),
            waiting,
            quarantined: quarantined(storage, &config.locations.quarantine, Some(&feed.name))
                .await?,
            rejects: waiting_for_replay(storage, config, feed, &location)
                .await?
                .into_iter()
                .map(|(key, rows)| format!("{key} ({rows} rows)"))
                .collect(),
        });
    }
    Ok(feeds)
}

/// The bad rows the commits of `history` recorded.
fn bad_rows(history: &[crate::inspect::HistoryEntry]) -> BadRows {
    history
        .iter()
        .fold(BadRows::default(), |sum, commit| BadRows {
            commits: sum.commits + 1,
            rejected: sum.rejected + commit.rows_rejected,
            warned: sum.warned + commit.rows_warned,
        })
}

/// What the MERGEs among the latest commits of `history` rewrote, from their log entries.
async fn rewrites(
    table: &deltalake::DeltaTable,
    history: &[crate::inspect::HistoryEntry],
) -> Result<Rewrites> {
    let mut rewrites = Rewrites::default();
    let mut total = 0;
    for commit in history.iter().take(REWRITE_HISTORY) {
        if commit.operation == "MERGE" {
            let bytes = commit_files(table, commit.version).await?.removed_bytes;
            rewrites.merges += 1;
            total += bytes;
            rewrites.largest_bytes = rewrites.largest_bytes.max(bytes);
        }
    }
    rewrites.average_bytes = total.checked_div(rewrites.merges).unwrap_or(0);
    (_, rewrites.table_bytes) = data_files(table)?;
    Ok(rewrites)
}
