//! Per feed, at a glance: the table's version and rows, the last file applied and when, the
//! files waiting under the incoming prefix and those in quarantine waiting for a replay.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Config;
use crate::delta::TableLocation;
use crate::error::Result;
use crate::inspect::summarize;
use crate::replay::quarantined;
use crate::storage::ObjectStorage;

/// How many commits are searched for the last applied file.
const HISTORY: usize = 50;

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
    /// Files under the feed's incoming prefix, not read by any run yet.
    pub waiting: Vec<String>,
    /// Quarantined files of the feed that were not replayed.
    pub quarantined: Vec<String>,
}

/// The state of every feed of `config` in `storage`.
pub async fn status(config: &Config, storage: &dyn ObjectStorage) -> Result<Vec<FeedStatus>> {
    let mut feeds = Vec::new();
    for feed in &config.feeds {
        let location = TableLocation::new(
            storage.table_url(&feed.table)?,
            storage.table_storage_options(),
        );
        let summary = match location.open().await? {
            Some(_) => Some(summarize(&location, HISTORY).await?),
            None => None,
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
            last_file: summary.and_then(|s| {
                s.history
                    .into_iter()
                    .find_map(|h| h.file.map(|file| (file, h.time)))
            }),
            waiting,
            quarantined: quarantined(storage, &config.locations.quarantine, Some(&feed.name))
                .await?,
        });
    }
    Ok(feeds)
}
