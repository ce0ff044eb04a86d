//! Notify: email the run's summary or its failure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ArchiveOutput, Failure, QuarantineOutput, RunInput, StageOutput, UpsertOutput};
use crate::config::{Config, NotifyMode};
use crate::environment::Environment;
use crate::error::Result;
use crate::mail::{render_digest, render_failure, render_success, Email};

/// Everything known about a run when it ends: the state document Step Functions carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The run the report is about.
    pub run: Option<RunInput>,
    /// The stage step's output, when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<StageOutput>,
    /// The archive step's output, when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveOutput>,
    /// The upsert step's output, when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upsert: Option<UpsertOutput>,
    /// The failure that ended the run; when set, the failure email is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// The quarantine step's output, when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<QuarantineOutput>,
    /// A link to the run, e.g. the execution in the Step Functions console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_url: Option<String>,
}

/// The email the notify step sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyOutput {
    /// The email's subject.
    pub subject: String,
    /// The feed's recipients, else the default ones (possibly none).
    pub recipients: Vec<String>,
    /// Where the mailer delivered it (message id or file), absent when nobody is configured
    /// or the feed does not want it.
    pub delivered: Option<String>,
    /// Why a success email was not sent: the feed's `notify` setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_sent: Option<String>,
}

/// Emails the report to the feed's recipients: the failure when it has one, else the summary
/// (unless the feed's `notify` is `failures`, or `digest`: [`notify_digest`] lists it then).
/// With no recipients configured nothing is sent, and that is not an error.
pub async fn notify(env: &Environment, report: &Report) -> Result<NotifyOutput> {
    let feed = report
        .run
        .as_ref()
        .and_then(|r| env.config.feed_named(&r.feed).ok());
    let now = chrono::Utc::now();
    if report.failure.is_some() {
        return send(env, feed, render_failure(report, now)).await;
    }
    let email = render_success(report, now);
    let not_sent = match feed.map_or(NotifyMode::Each, |f| f.notify) {
        NotifyMode::Each => return send(env, feed, email).await,
        NotifyMode::Failures => "the feed's notify = \"failures\": success emails are off",
        NotifyMode::Digest => {
            "the feed's notify = \"digest\": one email per commit lists this file"
        }
    };
    Ok(NotifyOutput {
        subject: email.subject,
        recipients: env.config.recipients_for(feed),
        delivered: None,
        not_sent: Some(not_sent.to_string()),
    })
}

/// The reports that share a digest email, as index groups: the successes of `digest` feeds, by
/// feed and commit (the table version), in the order given.
pub fn digest_groups(config: &Config, reports: &[Report]) -> Vec<Vec<usize>> {
    let mut digests: BTreeMap<(String, Option<u64>), Vec<usize>> = BTreeMap::new();
    for (i, report) in reports.iter().enumerate() {
        let Some(run) = report.run.as_ref() else {
            continue;
        };
        let digest = config
            .feed_named(&run.feed)
            .is_ok_and(|f| f.notify == NotifyMode::Digest);
        if digest && report.failure.is_none() {
            let version = report.upsert.as_ref().and_then(|u| u.version);
            digests
                .entry((run.feed.clone(), version))
                .or_default()
                .push(i);
        }
    }
    digests.into_values().collect()
}

/// One email for the files one commit settled (a feed with `notify = "digest"`): `reports`
/// are theirs, none failed, all of one feed.
pub async fn notify_digest(env: &Environment, reports: &[Report]) -> Result<NotifyOutput> {
    let feed = reports
        .first()
        .and_then(|r| r.run.as_ref())
        .and_then(|r| env.config.feed_named(&r.feed).ok());
    send(env, feed, render_digest(reports, chrono::Utc::now())).await
}

/// Sends `email` to the feed's recipients (its own, else the default ones); none: not sent.
async fn send(
    env: &Environment,
    feed: Option<&crate::config::Feed>,
    mut email: Email,
) -> Result<NotifyOutput> {
    let recipients = env.config.recipients_for(feed);
    email.from = env.config.notifications.from.clone();
    email.to = recipients.clone();
    let delivered = if recipients.is_empty() {
        tracing::warn!(subject = %email.subject, "no recipients configured; the email was not sent");
        None
    } else {
        Some(env.mailer.send(&email).await?)
    };
    Ok(NotifyOutput {
        subject: email.subject,
        recipients,
        delivered,
        not_sent: None,
    })
}
