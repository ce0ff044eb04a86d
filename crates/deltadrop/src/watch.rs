//! The stale-file watch: files that sat under a feed's incoming prefix longer than a threshold.
//! A file stays there only while no run has read it: no notification arrived, the trigger failed,
//! the configuration was missing, its message went to the dead-letter queue, or no feed matches
//! it. Without this watch such a file would be silent forever.
//!
//! It emails each stale file once, then reminds every `stale_reminder_hours` while files stay:
//! it runs every 15 minutes, and an email each time (96 a day) would bury the news and exhaust
//! the SES sandbox's 200 a day. What it last emailed is kept in [`REPORTED_KEY`].

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::environment::Environment;
use crate::error::{Error, Result};
use crate::mail::render_stale_files;
use crate::storage::Listed;

/// Where the watch keeps the stale files it emailed last, and when.
pub const REPORTED_KEY: &str = "_deltadrop/watch/stale-files.json";

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

/// What the watch found: the files older than the threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Survey {
    /// Files older than the threshold, oldest first.
    pub stale: Vec<StaleFile>,
    /// How long the oldest file under the incoming prefixes has waited (0: none waits).
    pub oldest_minutes: i64,
}

/// What the watch found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WatchOutput {
    /// Files older than the threshold, oldest first.
    pub stale: Vec<StaleFile>,
    /// How long the oldest file under the incoming prefixes has waited (0: none waits).
    pub oldest_minutes: i64,
    /// Where the email naming the stale files went (none when nothing is stale, no recipient
    /// is configured, or every stale file was emailed already).
    pub delivered: Option<String>,
    /// Why no email went although files are stale.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

/// The stale files the last email named, and when it went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Reported {
    emailed_at: Option<DateTime<Utc>>,
    files: Vec<String>,
}

impl Reported {
    async fn load(env: &Environment) -> Result<Reported> {
        match env.storage.read_all(REPORTED_KEY).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::InvalidInput {
                message: format!("{}: {e}", env.storage.display(REPORTED_KEY)),
            }),
            Err(Error::ObjectNotFound { .. }) => Ok(Reported::default()),
            Err(e) => Err(e),
        }
    }

    async fn save(&self, env: &Environment) -> Result<()> {
        let body = serde_json::to_vec_pretty(self).expect("serializable");
        env.storage.put(REPORTED_KEY, body).await
    }
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
/// `threshold`, naming each: when one was not emailed before, or the last email is
/// `stale_reminder_hours` old.
pub async fn watch(
    env: &Environment,
    threshold: Duration,
    now: DateTime<Utc>,
) -> Result<WatchOutput> {
    let found = survey(env, threshold, now).await?;
    report(env, found, threshold, now).await
}

/// Lists the feeds' incoming prefixes: the files older than `threshold`.
pub async fn survey(env: &Environment, threshold: Duration, now: DateTime<Utc>) -> Result<Survey> {
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
    let stale = waiting
        .into_iter()
        .filter(|(age, _)| *age > threshold)
        .map(|(_, file)| file)
        .collect();
    Ok(Survey {
        stale,
        oldest_minutes,
    })
}

/// Emails the stale files of `found` when one is new or a reminder is due, and remembers what
/// it emailed.
pub async fn report(
    env: &Environment,
    found: Survey,
    threshold: Duration,
    now: DateTime<Utc>,
) -> Result<WatchOutput> {
    let Survey {
        stale,
        oldest_minutes,
    } = found;
    for file in &stale {
        tracing::warn!(key = %file.key, feed = ?file.feed, minutes = file.waiting_minutes, "file waiting in incoming");
    }
    let before = Reported::load(env).await?;
    let is_new = |key: &str| !before.files.iter().any(|f| f == key);
    let reminder_hours = env.config.notifications.stale_reminder_hours;
    // When the next reminder is due: none when reminders are off or nothing was emailed yet.
    let reminder = before
        .emailed_at
        .filter(|_| reminder_hours > 0)
        .map(|at| at + Duration::hours(i64::from(reminder_hours)));
    let remind = before.emailed_at.is_none() || reminder.is_some_and(|due| due <= now);
    let recipients = env.config.recipients_for(None);
    let (mut delivered, mut held) = (None, None);
    // The files emailed before that are still stale: a file loaded (or deleted) and stale again
    // later is new again.
    let mut after = Reported {
        emailed_at: before.emailed_at,
        files: stale
            .iter()
            .map(|f| f.key.clone())
            .filter(|key| !is_new(key))
            .collect(),
    };
    if !stale.is_empty() {
        if recipients.is_empty() {
            held = Some("no recipient is configured ([notifications] recipients)".to_string());
        } else if remind || stale.iter().any(|f| is_new(&f.key)) {
            let mut email = render_stale_files(&stale, threshold, &is_new, reminder_hours);
            email.from = env.config.notifications.from.clone();
            email.to = recipients;
            delivered = Some(env.mailer.send(&email).await?);
            after = Reported {
                emailed_at: Some(now),
                files: stale.iter().map(|f| f.key.clone()).collect(),
            };
        } else {
            held = Some(match reminder {
                Some(due) => format!(
                    "every stale file was emailed already; the next reminder is due at {}",
                    due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
                None => "every stale file was emailed already (reminders are off)".to_string(),
            });
        }
    }
    if after != before {
        after.save(env).await?;
    }
    Ok(WatchOutput {
        stale,
        oldest_minutes,
        delivered,
        held,
    })
}
