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
    if run.upload.uploaded_at.is_none() {
        return Ok(());
    }
    Arrivals::load(env, feed).await?.check(run, &[])
}

/// Where the files of one feed that are not merged yet are, listed once for all the files of a
/// commit (not once per file: a burst would make that quadratic).
pub struct Arrivals {
    incoming: Vec<(String, chrono::DateTime<chrono::Utc>)>,
    staged: Vec<Staged>,
}

impl Arrivals {
    /// Lists the feed's incoming prefix and the staging tables.
    pub async fn load(env: &Environment, feed: &Feed) -> Result<Arrivals> {
        let incoming = env
            .storage
            .list(feed.incoming_prefix())
            .await?
            .into_iter()
            .filter(|object| feed.matches(&object.key))
            .map(|object| (object.key, object.modified))
            .collect();
        let staged = staged_files(env)
            .await?
            .into_iter()
            .filter(|staged| staged.feed == feed.name)
            .collect();
        Ok(Arrivals { incoming, staged })
    }

    /// Fails with `WaitingForEarlierFile` when a file that arrived before `run` is neither merged
    /// nor one of `together` (the files merged with it, in arrival order).
    pub fn check(&self, run: &RunInput, together: &[&RunInput]) -> Result<()> {
        let Some(arrived) = run.upload.uploaded_at else {
            return Ok(());
        };
        let waiting = |earlier: &str| {
            Err(Error::WaitingForEarlierFile {
                file: run.key.clone(),
                earlier: earlier.to_string(),
            })
        };
        let is_together = |key: &str| key == run.key || together.iter().any(|t| t.key == key);
        for (key, modified) in &self.incoming {
            if !is_together(key) && *modified < arrived {
                return waiting(key);
            }
        }
        let mine = (arrived.timestamp_millis(), run.key.as_str());
        for staged in &self.staged {
            let theirs = (staged.arrived_ms, staged.file.as_str());
            let merged_with_it =
                staged.run_id == run.run_id || together.iter().any(|t| t.run_id == staged.run_id);
            if !merged_with_it && theirs < mine {
                return waiting(&staged.file);
            }
        }
        Ok(())
    }
}

/// The arrival order of `items` (as indices), as the arrival check counts it: different keys by
/// upload time (then key), uploads of one key by their own order (S3's sequencer), which the
/// upload time need not agree with. For mergers that get files in another order (the AWS lane's
/// queue holds them in the order their executions reached the Upsert state).
pub fn arrival_order<T>(items: &[T], run: impl Fn(&T) -> &RunInput) -> Vec<usize> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| (run(&items[i]).upload.uploaded_at, &run(&items[i]).key));
    let mut keys: Vec<&str> = items.iter().map(|item| run(item).key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    // Each key keeps the places it has; its uploads take them in their own order.
    for key in keys {
        let places: Vec<usize> = (0..order.len())
            .filter(|&place| run(&items[order[place]]).key == key)
            .collect();
        let mut uploads: Vec<usize> = places.iter().map(|&place| order[place]).collect();
        uploads.sort_by_key(|&i| run(&items[i]).upload.order());
        for (place, upload) in places.into_iter().zip(uploads) {
            order[place] = upload;
        }
    }
    order
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upload::Upload;

    fn file(key: &str, at_ms: i64, sequencer: &str) -> RunInput {
        let mut run: RunInput = serde_json::from_value(serde_json::json!({
            "run_id": format!("{key}-{sequencer}"), "key": key, "feed": "f",
            "started_at": "2026-01-01T00:00:00Z",
        }))
        .unwrap();
        run.upload = Upload {
            sequencer: Some(sequencer.into()),
            uploaded_at: chrono::DateTime::from_timestamp_millis(at_ms),
            ..Upload::default()
        };
        run
    }

    #[test]
    fn keys_go_by_upload_time_and_uploads_of_a_key_by_their_sequencer() {
        // b's second upload finished first (an earlier event time) but was PUT later.
        let files = [
            file("b", 30, "0002"),
            file("a", 20, "0001"),
            file("b", 10, "0003"),
            file("c", 5, "0001"),
        ];
        let order: Vec<&str> = arrival_order(&files, |run| run)
            .into_iter()
            .map(|i| files[i].run_id.as_str())
            .collect();
        assert_eq!(order, ["c-0001", "b-0002", "a-0001", "b-0003"]);
    }
}
