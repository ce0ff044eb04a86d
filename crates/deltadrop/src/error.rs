//! The one error type of the pipeline.
//!
//! Variant names are a contract: the Step Functions state machine matches them in `Retry` and
//! `Catch` (`ErrorEquals`), and operators read them in the console and in failure emails. Rename
//! nothing without changing `infra/statemachine/` and the docs.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::bounded::{shorten, MAX_VALUE_CHARS};

/// Where in a file something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Position {
    /// A physical line of a text file (1-based), for CSV and JSON lines.
    Line(u64),
    /// The n-th record (1-based) of a JSON array or a Parquet file.
    Record(u64),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Line(n) => write!(f, "line {n}"),
            Position::Record(n) => write!(f, "record {n}"),
        }
    }
}

/// Formats "file, line 3" or just "file" when the position is unknown.
fn at(file: &str, position: &Option<Position>) -> String {
    match position {
        Some(p) => format!("{file}, {p}"),
        None => file.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid; `field` names the offending setting.
    #[error("configuration error in {field}: {message}")]
    ConfigError { field: String, message: String },

    /// No feed's `incoming` pattern matches the key.
    #[error("no feed is configured for {key}: add a feed whose `incoming` matches it")]
    NoMatchingFeed { key: String },

    /// The bytes of the file cannot be read as the configured format.
    #[error("{}: {message}", at(file, position))]
    MalformedFile {
        file: String,
        position: Option<Position>,
        message: String,
    },

    /// The file crosses one of the feed's `limits` (size, line length, columns, nesting).
    #[error(
        "{}: {message} (the feed's limits.{limit} is {allowed}; raise it if the file is genuine)",
        at(file, position)
    )]
    LimitExceeded {
        file: String,
        position: Option<Position>,
        limit: String,
        allowed: String,
        message: String,
    },

    /// A value does not fit the column's type (from the target table, the config, or inference).
    #[error("{}, column '{column}': value {:?} is not a valid {expected}", at(file, &Some(*position)), shorten(value, MAX_VALUE_CHARS))]
    InvalidValue {
        file: String,
        position: Position,
        column: String,
        value: String,
        expected: String,
    },

    /// A key column is absent from the file.
    #[error("{file}: key column '{column}' is missing (columns found: {found})")]
    MissingKeyColumn {
        file: String,
        column: String,
        found: String,
    },

    /// A key column holds a null (or a configured null string).
    #[error("{}: key column '{column}' is null", at(file, &Some(*position)))]
    NullKey {
        file: String,
        position: Position,
        column: String,
    },

    /// The file's columns do not fit the target table under the feed's schema policy.
    #[error("{file}: {message}")]
    SchemaMismatch { file: String, message: String },

    /// The object to process is not where the run expects it (nor already archived).
    #[error("object not found: {key}")]
    ObjectNotFound { key: String },

    /// The key no longer holds the upload this run was started for (a producer replaced or
    /// deleted it, in a bucket without object versions). The newer upload has its own run.
    #[error("{key} was replaced or deleted before this run could process the upload it was started for; a newer upload of the key is processed by its own run")]
    UploadReplaced { key: String },

    /// The feed applies files in arrival order, and a file that arrived earlier is not merged
    /// yet (retried by the state machine until it is).
    #[error("{file} waits for {earlier}, which arrived earlier and is not merged yet (the feed applies files in arrival order)")]
    WaitingForEarlierFile { file: String, earlier: String },

    /// Concurrent commits kept winning against this one.
    #[error("{table}: gave up after {attempts} attempts because other writers kept committing to the table")]
    CommitConflict { table: String, attempts: u32 },

    /// Reading or writing the bucket failed (usually transient).
    #[error("storage error on {location}: {message}")]
    StorageError { location: String, message: String },

    /// delta-rs reported a failure that is not one of the above.
    #[error("Delta table error on {table}: {message}")]
    DeltaError { table: String, message: String },

    /// The notification could not be sent.
    #[error("could not send the notification: {message}")]
    MailError { message: String },

    /// A step was called with input it cannot use (a bug in the caller or the state machine).
    #[error("invalid step input: {message}")]
    InvalidInput { message: String },
}

impl Error {
    /// Every stable error name, for the state machine checks and the docs.
    pub const NAMES: &'static [&'static str] = &[
        "ConfigError",
        "NoMatchingFeed",
        "MalformedFile",
        "LimitExceeded",
        "InvalidValue",
        "MissingKeyColumn",
        "NullKey",
        "SchemaMismatch",
        "ObjectNotFound",
        "UploadReplaced",
        "WaitingForEarlierFile",
        "CommitConflict",
        "StorageError",
        "DeltaError",
        "MailError",
        "InvalidInput",
    ];

    /// The stable name Step Functions matches on.
    pub fn name(&self) -> &'static str {
        match self {
            Error::ConfigError { .. } => "ConfigError",
            Error::NoMatchingFeed { .. } => "NoMatchingFeed",
            Error::MalformedFile { .. } => "MalformedFile",
            Error::LimitExceeded { .. } => "LimitExceeded",
            Error::InvalidValue { .. } => "InvalidValue",
            Error::MissingKeyColumn { .. } => "MissingKeyColumn",
            Error::NullKey { .. } => "NullKey",
            Error::SchemaMismatch { .. } => "SchemaMismatch",
            Error::ObjectNotFound { .. } => "ObjectNotFound",
            Error::UploadReplaced { .. } => "UploadReplaced",
            Error::WaitingForEarlierFile { .. } => "WaitingForEarlierFile",
            Error::CommitConflict { .. } => "CommitConflict",
            Error::StorageError { .. } => "StorageError",
            Error::DeltaError { .. } => "DeltaError",
            Error::MailError { .. } => "MailError",
            Error::InvalidInput { .. } => "InvalidInput",
        }
    }

    /// True when the file itself is at fault: it goes to quarantine and retrying cannot help.
    pub fn is_bad_file(&self) -> bool {
        Self::BAD_FILE_NAMES.contains(&self.name())
    }

    /// The names of errors caused by the file's content (routed to quarantine).
    pub const BAD_FILE_NAMES: &'static [&'static str] = &[
        "NoMatchingFeed",
        "MalformedFile",
        "LimitExceeded",
        "InvalidValue",
        "MissingKeyColumn",
        "NullKey",
        "SchemaMismatch",
    ];

    /// What an operator should do about it, for failure emails.
    pub fn advice(name: &str) -> &'static str {
        match name {
            "ConfigError" => "Fix the named setting in the deltadrop configuration, then drop the file again.",
            "NoMatchingFeed" => "Add a feed whose `incoming` pattern matches this key, or send the file to the right prefix.",
            "MalformedFile" | "InvalidValue" | "MissingKeyColumn" | "NullKey" => {
                "Ask the sender for a corrected file and drop it again; the target table was not changed."
            }
            "LimitExceeded" => "Ask the sender whether the file is what they meant to send; if it is, raise the named limit in the feed's [feeds.limits] and drop it again. The target table was not changed.",
            "SchemaMismatch" => "Either fix the file's columns or change the feed's schema policy; the target table was not changed.",
            "ObjectNotFound" => "Check whether the file was moved or deleted by someone else.",
            "UploadReplaced" => "Nothing to do for this run: the upload that replaced the file is loaded by its own run. To keep every upload, turn on bucket versioning (the SAM template does).",
            "WaitingForEarlierFile" => "The file named in the message arrived earlier and was never merged: load it (or move it out of the incoming prefix, or delete its orphaned staging table), then replay this file.",
            "CommitConflict" => "Other writers kept changing the table; drop the file again when the load is lower.",
            "StorageError" | "DeltaError" => "Usually transient: drop the file again. If it persists, check permissions and the table's health.",
            "MailError" => "Check the mail sender identity and recipients.",
            _ => "Look at the run's logs for details.",
        }
    }

    pub(crate) fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn storage(location: impl Into<String>, err: impl fmt::Display) -> Self {
        Error::StorageError {
            location: location.into(),
            message: err.to_string(),
        }
    }

    pub fn delta(table: impl Into<String>, err: impl fmt::Display) -> Self {
        Error::DeltaError {
            table: table.into(),
            message: err.to_string(),
        }
    }

    pub(crate) fn malformed(
        file: impl Into<String>,
        position: Option<Position>,
        message: impl Into<String>,
    ) -> Self {
        Error::MalformedFile {
            file: file.into(),
            position,
            message: message.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_every_variant_and_bad_file_names_are_names() {
        let samples = [
            Error::config("feeds[0].keys", "empty"),
            Error::malformed("f.csv", Some(Position::Line(3)), "ragged"),
            Error::ObjectNotFound { key: "k".into() },
        ];
        for e in &samples {
            assert!(Error::NAMES.contains(&e.name()));
        }
        for n in Error::BAD_FILE_NAMES {
            assert!(Error::NAMES.contains(n));
        }
        assert!(samples[1].is_bad_file());
        assert!(!samples[2].is_bad_file());
    }

    #[test]
    fn messages_name_file_position_column_and_value() {
        let e = Error::InvalidValue {
            file: "in/a.csv".into(),
            position: Position::Line(7),
            column: "amount".into(),
            value: "12,5".into(),
            expected: "double".into(),
        };
        assert_eq!(
            e.to_string(),
            "in/a.csv, line 7, column 'amount': value \"12,5\" is not a valid double"
        );
    }
}
