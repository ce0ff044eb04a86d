//! The four steps, each with a typed input and a serializable output. In AWS these are the
//! Step Functions states (the outputs are what the console shows); locally [`crate::run`]
//! chains them in the same order.

pub mod archive;
pub mod notify;
pub mod stage;
pub mod upsert;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bounded::{shorten, MAX_MESSAGE_CHARS};
use crate::clock::Clock;
use crate::config::Config;
use crate::environment::Environment;
use crate::error::{Error, Result};
use crate::upload::Upload;

pub use archive::{archive, quarantine, ArchiveOutput, QuarantineOutput};
pub use notify::{notify, NotifyOutput, Report};
pub use stage::{stage, StageOutput};
#[cfg(feature = "merge")]
pub use upsert::upsert;
pub use upsert::{UpsertOutcome, UpsertOutput};

/// One file's run: the input of every step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInput {
    /// Names the staging table; on AWS the execution name.
    pub run_id: String,
    /// The object key of the incoming file.
    pub key: String,
    pub feed: String,
    pub started_at: DateTime<Utc>,
    /// Which upload of `key` this run processes (see [`Upload`]).
    #[serde(default)]
    pub upload: Upload,
}

impl RunInput {
    /// A run for `upload` of `key` with a fresh run id; fails when no feed matches the key.
    pub fn new(config: &Config, key: &str, upload: Upload, clock: &dyn Clock) -> Result<RunInput> {
        let feed = config.feed_for_key(key)?;
        let started_at = clock.now();
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let run_id = format!(
            "{}-{}-{}",
            sanitize(&feed.name),
            started_at.format("%Y%m%dT%H%M%SZ"),
            &suffix[..8]
        );
        Ok(RunInput {
            run_id,
            key: key.to_string(),
            feed: feed.name.clone(),
            started_at,
            upload,
        })
    }

    /// A run for the upload `key` holds now (the local runner's equivalent of an S3 event).
    pub async fn for_current_upload(env: &Environment, key: &str) -> Result<RunInput> {
        let upload = env
            .storage
            .upload(key)
            .await?
            .ok_or_else(|| Error::ObjectNotFound {
                key: key.to_string(),
            })?;
        RunInput::new(&env.config, key, upload, env.clock.as_ref())
    }

    /// Run ids become paths and execution names: only `[A-Za-z0-9_-]`, at most 80 characters.
    pub fn validate(&self) -> Result<()> {
        let valid = !self.run_id.is_empty()
            && self.run_id.len() <= 80
            && self
                .run_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(Error::InvalidInput {
                message: format!(
                    "run_id {:?} must be 1 to 80 characters of A-Z, a-z, 0-9, '-' and '_'",
                    self.run_id
                ),
            });
        }
        Ok(())
    }
}

/// Keeps the characters a run id allows.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect()
}

/// A failed step, in the shape Step Functions gives a `Catch` (`Error`, `Cause`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    #[serde(rename = "Error")]
    pub error: String,
    #[serde(rename = "Cause")]
    pub cause: String,
}

impl From<&Error> for Failure {
    fn from(e: &Error) -> Self {
        Failure {
            error: e.name().to_string(),
            cause: shorten(&e.to_string(), MAX_MESSAGE_CHARS),
        }
    }
}
