//! The four steps, each with a typed input and a serializable output. In AWS these are the
//! Step Functions states (the outputs are what the console shows); locally [`crate::run`]
//! chains them in the same order.

pub mod archive;
pub mod notify;
pub mod quarantine;
pub mod stage;
pub mod upsert;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bounded::{shorten, MAX_MESSAGE_CHARS};
use crate::config::Config;
use crate::environment::Environment;
use crate::error::{Error, ErrorKind, Result};
use crate::upload::Upload;

pub use archive::{archive, ArchiveOutput};
pub use notify::{digest_groups, notify, notify_digest, NotifyOutput, Report};
pub use quarantine::{quarantine, QuarantineOutput};
#[cfg(feature = "delta")]
pub use stage::stage;
pub use stage::StageOutput;
#[cfg(feature = "merge")]
pub use upsert::upsert;
pub use upsert::{Pending, SharedCommit, UpsertOutcome, UpsertOutput};

/// One file's run: the input of every step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInput {
    /// Names the staging table; on AWS the execution name.
    pub run_id: String,
    /// The object key of the incoming file.
    pub key: String,
    /// The name of the feed the key belongs to.
    pub feed: String,
    /// When the run started (on AWS, the S3 event's time): emails count its duration from it.
    pub started_at: DateTime<Utc>,
    /// Which upload of `key` this run processes (see [`Upload`]).
    #[serde(default)]
    pub upload: Upload,
}

impl RunInput {
    /// A run for `upload` of `key` with a fresh run id; fails when no feed matches the key.
    pub fn new(config: &Config, key: &str, upload: Upload) -> Result<RunInput> {
        let feed = config.feed_for_key(key)?;
        let started_at = Utc::now();
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
        RunInput::new(&env.config, key, upload)
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

/// A failed step, in the shape Step Functions gives a `Catch` (`Error`, `Cause`). On AWS the
/// handlers turn Lambda's error JSON in `Cause` into its message before a step sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The failure's stable name.
    #[serde(rename = "Error")]
    pub error: FailureName,
    /// What went wrong: the error's message (shortened), or the cause AWS gave (empty when a
    /// task failed without one: SendTaskFailure's cause is optional).
    #[serde(rename = "Cause", default, deserialize_with = "null_as_empty")]
    pub cause: String,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

impl Failure {
    /// The error this failure names, passed on under its name (a name deltadrop does not
    /// define, such as `States.Timeout`, becomes an `InternalError` that quotes it).
    pub fn into_error(self) -> Error {
        match self.error {
            FailureName::Kind(kind) => Error::Relayed {
                kind,
                message: self.cause,
            },
            FailureName::Other(name) => Error::internal(format!("{name}: {}", self.cause)),
        }
    }
}

impl From<&Error> for Failure {
    fn from(e: &Error) -> Self {
        Failure {
            error: FailureName::Kind(e.kind()),
            cause: shorten(&e.to_string(), MAX_MESSAGE_CHARS),
        }
    }
}

/// A failure's name: one of deltadrop's kinds, or one of Step Functions or Lambda itself
/// (`States.Timeout`, `Lambda.ServiceException`), kept as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureName {
    /// A deltadrop error.
    Kind(ErrorKind),
    /// A name deltadrop does not define, from Step Functions or Lambda.
    Other(String),
}

impl FailureName {
    /// The name as Step Functions shows it.
    pub fn as_str(&self) -> &str {
        match self {
            FailureName::Kind(kind) => kind.name(),
            FailureName::Other(name) => name,
        }
    }

    /// What an operator should do about it (see [`ErrorKind::advice`]).
    pub fn advice(&self) -> &'static str {
        match self {
            FailureName::Kind(kind) => kind.advice(),
            FailureName::Other(_) => {
                "AWS itself stopped the step (a timeout or a Lambda error): look at the execution \
                 in the console and the function's logs, then drop the file again."
            }
        }
    }
}

impl From<&str> for FailureName {
    fn from(name: &str) -> Self {
        ErrorKind::from_name(name)
            .map_or_else(|| FailureName::Other(name.into()), FailureName::Kind)
    }
}

impl std::fmt::Display for FailureName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FailureName {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for FailureName {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        Ok(FailureName::from(
            String::deserialize(deserializer)?.as_str(),
        ))
    }
}
