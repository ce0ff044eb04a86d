//! Notify: email the run's summary or its failure.

use serde::{Deserialize, Serialize};

use super::{ArchiveOutput, Failure, QuarantineOutput, RunInput, StageOutput, UpsertOutput};
use crate::environment::Environment;
use crate::error::Result;
use crate::mail::{render_failure, render_success};

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
    /// Where the mailer delivered it (message id or file), absent when nobody is configured.
    pub delivered: Option<String>,
}

/// Emails the report to the feed's recipients: the failure when it has one, else the summary.
/// With no recipients configured nothing is sent, and that is not an error.
pub async fn notify(env: &Environment, report: &Report) -> Result<NotifyOutput> {
    let feed = report
        .run
        .as_ref()
        .and_then(|r| env.config.feed_named(&r.feed).ok());
    let recipients = env.config.recipients_for(feed);
    let now = chrono::Utc::now();
    let mut email = if report.failure.is_some() {
        render_failure(report, now)
    } else {
        render_success(report, now)
    };
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
    })
}
