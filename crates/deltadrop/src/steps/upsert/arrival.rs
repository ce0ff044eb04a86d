//! Arrival order for feeds that ask for it (`apply_in_arrival_order`): before a file is merged,
//! every file of its feed that arrived earlier must be merged (or quarantined).
//!
//! An earlier file is in one of two places until then: still under the feed's incoming prefix
//! (its run has not staged and archived it yet; it arrived before this file when its object is
//! older than this upload), or staged (its staging table records its feed and arrival time).
//! Between the two there is no gap: a run writes its staging table before it archives the file.
//! Uploads of this file's own key are ordered by the upsert itself (`Superseded`).

use crate::config::Feed;
use crate::environment::Environment;
use crate::error::{Error, Result};
use crate::steps::RunInput;

/// The field of a staging table's first commit that holds its upload's arrival (ms).
pub const ARRIVED_FIELD: &str = "arrived_ms";

const FIRST_COMMIT: &str = "_delta_log/00000000000000000000.json";

/// Fails with `WaitingForEarlierFile` while a file of the feed that arrived before this run's
/// upload is not merged. A run whose arrival is unknown waits for nothing.
pub async fn wait_for_earlier_files(env: &Environment, feed: &Feed, run: &RunInput) -> Result<()> {
    let Some(arrived) = run.upload.uploaded_at else {
        return Ok(());
    };
    let waiting = |earlier: String| {
        Err(Error::WaitingForEarlierFile {
            file: run.key.clone(),
            earlier,
        })
    };
    for object in env.storage.list(feed.incoming_prefix()).await? {
        if object.key != run.key && feed.matches(&object.key) && object.modified < arrived {
            return waiting(object.key);
        }
    }
    let mine = (arrived.timestamp_millis(), run.key.as_str());
    for staged in staged_files(env).await? {
        let theirs = (staged.arrived_ms, staged.file.as_str());
        if staged.run_id != run.run_id && staged.feed == run.feed && theirs < mine {
            return waiting(staged.file);
        }
    }
    Ok(())
}

/// What a staging table's first commit says about its run.
#[derive(Debug, serde::Deserialize)]
struct Staged {
    run_id: String,
    file: String,
    feed: String,
    arrived_ms: i64,
}

/// Every staging table that records a feed and an arrival.
async fn staged_files(env: &Environment) -> Result<Vec<Staged>> {
    let mut staged = Vec::new();
    for object in env.storage.list(&env.config.locations.staging).await? {
        if !object.key.ends_with(FIRST_COMMIT) {
            continue;
        }
        match env.storage.read_all(&object.key).await {
            Ok(log) => {
                let log = String::from_utf8(log)
                    .map_err(|e| Error::storage(env.storage.display(&object.key), e))?;
                staged.extend(log.lines().filter_map(commit_info));
            }
            // Removed since the listing: its run ended.
            Err(Error::ObjectNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(staged)
}

fn commit_info(line: &str) -> Option<Staged> {
    let action: serde_json::Value = serde_json::from_str(line).ok()?;
    serde_json::from_value(action.get("commitInfo")?.get("deltadrop")?.clone()).ok()
}
