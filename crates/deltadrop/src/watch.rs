//! The stale-file watch: files that sat under a feed's incoming prefix longer than a threshold.
//! A file stays there only while no run has read it: no notification arrived, the trigger failed,
//! the configuration was missing, its message went to the dead-letter queue, or no feed matches
//! it. Without this watch such a file would be silent forever.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::environment::Environment;
use crate::error::Result;
use crate::mail::render_stale_files;
use crate::storage::Listed;

/// A file waiting under an incoming prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaleFile {
    /// Its key.
    pub key: String,
    /// The feed whose incoming prefix holds it, if any matches.
    pub feed: Option<String>,
    /// How long it has waited, in minutes.
    pub waiting_minutes: i64,
}

/// What the watch found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchOutput {
    /// Files older than the threshold, oldest first.
    pub stale: Vec<StaleFile>,
    /// How long the oldest file under the incoming prefixes has waited (0: none waits).
    pub oldest_minutes: i64,
    /// Where the email naming the stale files went (none when nothing is stale, or no
    /// recipient is configured).
    pub delivered: Option<String>,
}

/// Every file under the feeds' incoming prefixes, each once: a prefix inside another
/// (`incoming/` and `incoming/orders/`) is listed with it. Folder markers (keys ending in `/`)
/// are left out.
pub async fn incoming_files(env: &Environment) -> Result<Vec<Listed>> {
    let mut prefixes: Vec<&str> = env
        .config
        .feeds
        .iter()
        .map(|f| f.incoming_prefix())
        .collect();
    prefixes.sort();
    let mut listed: Vec<&str> = Vec::new();
    for prefix in prefixes {
        if !listed.iter().any(|outer| prefix.starts_with(outer)) {
            listed.push(prefix);
        }
    }
    let mut files = Vec::new();
    for prefix in listed {
        files.extend(
            env.storage
                .list(prefix)
                .await?
                .into_iter()
                .filter(|object| !object.key.ends_with('/')),
        );
    }
    Ok(files)
}

/// Lists the feeds' incoming prefixes and emails the recipients about files older than
/// `threshold`, naming each.
pub async fn watch(
    env: &Environment,
    threshold: Duration,
    now: DateTime<Utc>,
) -> Result<WatchOutput> {
    let mut waiting = Vec::new();
    for object in incoming_files(env).await? {
        let feed = env
            .config
            .feed_for_key(&object.key)
            .ok()
            .map(|f| f.name.clone());
        let age = now - object.modified;
        waiting.push((
            age,
            StaleFile {
                key: object.key,
                feed,
                waiting_minutes: age.num_minutes(),
            },
        ));
    }
    waiting.sort_by(|a, b| b.0.cmp(&a.0));
    let oldest_minutes = waiting.first().map_or(0, |(age, _)| age.num_minutes());
    let stale: Vec<StaleFile> = waiting
        .into_iter()
        .filter(|(age, _)| *age > threshold)
        .map(|(_, file)| file)
        .collect();
    let recipients = env.config.recipients_for(None);
    let delivered = if stale.is_empty() || recipients.is_empty() {
        None
    } else {
        let mut email = render_stale_files(&stale, threshold);
        email.from = env.config.notifications.from.clone();
        email.to = recipients;
        Some(env.mailer.send(&email).await?)
    };
    for file in &stale {
        tracing::warn!(key = %file.key, feed = ?file.feed, minutes = file.waiting_minutes, "file waiting in incoming");
    }
    Ok(WatchOutput {
        stale,
        oldest_minutes,
        delivered,
    })
}
