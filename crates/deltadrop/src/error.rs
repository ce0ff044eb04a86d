//! The one error type of the pipeline.
//!
//! Variant names are a contract: the Step Functions state machine matches them in `Retry` and
//! `Catch` (`ErrorEquals`), and operators read them in the console and in failure emails. Rename
//! nothing without changing `infra/statemachine/` and the docs.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::bounded::{shorten, MAX_VALUE_CHARS};

/// Where in a file something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
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

/// Every failure of the pipeline. The variant's name is its [`ErrorKind`]; the message
/// (`Display`) names the file, the position, the column and the value where they are known.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid; `field` names the offending setting.
    #[error("configuration error in {field}: {message}")]
    ConfigError {
        /// The setting at fault: a field like `feeds[1].keys`, an environment variable, or the
        /// configuration's own location when it cannot be read or parsed.
        field: String,
        /// What is wrong, and what is expected.
        message: String,
    },

    /// No feed's `incoming` pattern matches the key.
    #[error("no feed is configured for {key}: add a feed whose `incoming` matches it")]
    NoMatchingFeed {
        /// The object key no feed takes.
        key: String,
    },

    /// The bytes of the file cannot be read as the configured format.
    #[error("{}: {message}", at(file, position))]
    MalformedFile {
        /// The file's key.
        file: String,
        /// Where in the file, when it is known.
        position: Option<Position>,
        /// What is wrong with the bytes.
        message: String,
    },

    /// The file crosses one of the feed's `limits` (size, line length, columns, nesting).
    #[error(
        "{}: {message} (the feed's limits.{limit} is {allowed}; raise it if the file is genuine)",
        at(file, position)
    )]
    LimitExceeded {
        /// The file's key.
        file: String,
        /// Where in the file, when it is known.
        position: Option<Position>,
        /// The limit's name in the feed's `limits`, e.g. `max_line_mb`.
        limit: String,
        /// The limit's value, as shown to the operator (`256 MiB`).
        allowed: String,
        /// What the file holds that crosses the limit.
        message: String,
    },

    /// A value does not fit the column's type (from the target table, the config, or inference).
    #[error("{}, column '{column}': value {:?} is not a valid {expected}", at(file, &Some(*position)), shorten(value, MAX_VALUE_CHARS))]
    InvalidValue {
        /// The file's key.
        file: String,
        /// The line or record that holds the value.
        position: Position,
        /// The column the value is for.
        column: String,
        /// The value as written in the file (shortened in the message).
        value: String,
        /// A readable name of the column's type, e.g. `date (YYYY-MM-DD)`.
        expected: String,
    },

    /// A key column is absent from the file.
    #[error("{file}: key column '{column}' is missing (columns found: {found})")]
    MissingKeyColumn {
        /// The file's key.
        file: String,
        /// The key column the file lacks.
        column: String,
        /// The file's columns, comma-separated.
        found: String,
    },

    /// A key column holds a null (or a configured null string).
    #[error("{}: key column '{column}' is null", at(file, &Some(*position)))]
    NullKey {
        /// The file's key.
        file: String,
        /// The line or record with the null key.
        position: Position,
        /// The key column that is null.
        column: String,
    },

    /// More of the file's rows are bad than the feed's `max_rejected_rows` or
    /// `max_rejected_percent` allow (a feed with `on_bad_rows = "reject"`): nothing was loaded,
    /// and the rows read so far that were bad are in the rejects file.
    #[error("{file}: {rejected} bad row(s), {over}; nothing was loaded; the first: {first}")]
    TooManyBadRows {
        /// The file's key.
        file: String,
        /// Bad rows found (reading stops at the first beyond `max_rejected_rows`).
        rejected: u64,
        /// Which threshold, and its value.
        over: String,
        /// The first bad rows: position, reason and message.
        first: String,
    },

    /// Rows break a feed's expectation whose action is `fail` (`[[feeds.expect]]`): nothing
    /// was loaded.
    #[error("{file}: {rows} row(s) break the expectation '{expectation}' ({rule}); nothing was loaded; the first: {first}")]
    ExpectationFailed {
        /// The file's key.
        file: String,
        /// The expectation's name.
        expectation: String,
        /// Its rule as the configuration writes it (`min = 0`).
        rule: String,
        /// Rows that break it.
        rows: u64,
        /// The first of them: position and value.
        first: String,
    },

    /// The file's columns do not fit the target table under the feed's schema policy.
    #[error("{file}: {message}")]
    SchemaMismatch {
        /// The file's key.
        file: String,
        /// What does not fit, e.g. which columns are new or missing.
        message: String,
    },

    /// The object to process is not where the run expects it (nor already archived).
    #[error("object not found: {key}")]
    ObjectNotFound {
        /// The key where the object was expected.
        key: String,
    },

    /// The key no longer holds the upload this run was started for (a producer replaced or
    /// deleted it, in a bucket without object versions). The newer upload has its own run.
    #[error("{key} was replaced or deleted before this run could process the upload it was started for; a newer upload of the key is processed by its own run")]
    UploadReplaced {
        /// The key that now holds another upload, or none.
        key: String,
    },

    /// The feed applies files in arrival order, and a file that arrived earlier is not merged
    /// yet (retried by the state machine until it is).
    #[error("{file} waits for {earlier}, which arrived earlier and is not merged yet (the feed applies files in arrival order)")]
    WaitingForEarlierFile {
        /// The key of the file that waits.
        file: String,
        /// The key of the earlier file it waits for.
        earlier: String,
    },

    /// Concurrent commits kept winning against this one.
    #[error("{table}: gave up after {attempts} attempts because other writers kept committing to the table")]
    CommitConflict {
        /// The target table's location.
        table: String,
        /// How many times the MERGE was tried.
        attempts: u32,
    },

    /// The MERGE would rewrite more of the table than the upsert function can in the time it
    /// has (or than the feed's `max_rewrite_gb` allows), refused before it starts; or it needed
    /// more memory than its pool and could not spill: the table unchanged either way, instead
    /// of a timeout or an out-of-memory kill partway through.
    #[error("{file}: the MERGE into {table} is too large for the upsert function: it {work}, over {budget}; nothing was changed")]
    TooLargeForFunction {
        /// The file (or, for a commit of several, the newest file) whose MERGE this is.
        file: String,
        /// The target table's location.
        table: String,
        /// What the MERGE would read and rewrite (data files, bytes, rows, partitions), or the
        /// memory it needed.
        work: String,
        /// The budget, and where it comes from (the feed's setting, the time left, the memory
        /// pool).
        budget: String,
    },

    /// The MERGE is larger than the upsert function takes (its time, its memory, or the feed's
    /// `route.container_merge_from_gb`), and the deployment's container tier takes it: not a
    /// failure, but the name the state machine routes to its container state. Nothing was
    /// changed.
    #[error("{file}: the MERGE into {table} is larger than the upsert function takes: it {work}, over {budget}; the container tier takes it")]
    MergeInContainer {
        /// The file (or, for a commit of several, the newest file) whose MERGE this is.
        file: String,
        /// The target table's location.
        table: String,
        /// What the MERGE would read and rewrite, or the memory it needed.
        work: String,
        /// The function's budget, and where it comes from.
        budget: String,
    },

    /// A part of a file split into chunks cannot be read on its own: a record runs over
    /// several lines (a quoted CSV field holds a line break), so the file's lines are not its
    /// records; or a Parquet chunk cannot be read alone. The file is read whole instead
    /// ([`crate::split`]), which reports whatever is wrong with it.
    #[error(
        "{}: {message}; the file is read whole rather than in chunks",
        at(file, position)
    )]
    Unsplittable {
        /// The file's key.
        file: String,
        /// Where the record that spans lines starts.
        position: Option<Position>,
        /// What was found.
        message: String,
    },

    /// Reading or writing the bucket failed (usually transient).
    #[error("storage error on {location}: {message}")]
    StorageError {
        /// What was being read or written: a key, or a URL-like location (`s3://bucket/key`).
        location: String,
        /// The storage's own error.
        message: String,
    },

    /// delta-rs reported a failure that is not one of the above.
    #[error("Delta table error on {table}: {message}")]
    DeltaError {
        /// The table's location.
        table: String,
        /// delta-rs's own error.
        message: String,
    },

    /// The notification could not be sent.
    #[error("could not send the notification: {message}")]
    MailError {
        /// Why the mailer failed.
        message: String,
    },

    /// A step was called with input it cannot use (a bug in the caller or the state machine).
    #[error("invalid step input: {message}")]
    InvalidInput {
        /// What is wrong with the input.
        message: String,
    },

    /// An error that one of a split file's chunks met in its own invocation, passed on under its
    /// own name by the step that puts the chunks together (on AWS each chunk is a Lambda
    /// invocation of a Distributed Map: its error arrives as a name and a message).
    #[error("{message}")]
    Relayed {
        /// The chunk's error's kind.
        kind: ErrorKind,
        /// The chunk's error's message (it names the file and line).
        message: String,
    },

    /// Something inside deltadrop failed that no input explains (a panicked reader thread, a
    /// value that would not serialize): a bug.
    #[error("internal error: {message}")]
    InternalError {
        /// What failed.
        message: String,
    },
}

/// Declares [`ErrorKind`] and its list from one list of names, so that `ALL` cannot miss one.
macro_rules! error_kinds {
    ($($(#[$meta:meta])* $kind:ident),* $(,)?) => {
        /// What went wrong, without the details: the stable name Step Functions matches in
        /// `Retry` and `Catch`, and what each kind means for routing and for the operator. Every
        /// table below is an exhaustive match, so a new kind does not compile until each says
        /// what it is.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorKind {
            $($(#[$meta])* $kind),*
        }

        impl ErrorKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [ErrorKind] = &[$(ErrorKind::$kind),*];

            /// The stable name: the variant's name.
            pub fn name(self) -> &'static str {
                match self {
                    $(ErrorKind::$kind => stringify!($kind)),*
                }
            }
        }
    };
}

error_kinds!(
    /// The configuration is missing or invalid.
    ConfigError,
    /// No feed's `incoming` pattern matches the key.
    NoMatchingFeed,
    /// The file cannot be read as its format.
    MalformedFile,
    /// The file crosses one of the feed's `limits`.
    LimitExceeded,
    /// A value does not fit its column's type.
    InvalidValue,
    /// A key column is absent from the file.
    MissingKeyColumn,
    /// A key column holds a null.
    NullKey,
    /// More rows are bad than the feed's rejection thresholds allow.
    TooManyBadRows,
    /// Rows break an expectation whose action is `fail`.
    ExpectationFailed,
    /// The file's columns do not fit the target table under the feed's schema policy.
    SchemaMismatch,
    /// The object to process is not where the run expects it.
    ObjectNotFound,
    /// The key no longer holds the upload the run was started for.
    UploadReplaced,
    /// A file of the feed that arrived earlier is not merged yet.
    WaitingForEarlierFile,
    /// Concurrent commits to the table kept winning against this one.
    CommitConflict,
    /// The MERGE would rewrite more than the upsert function can in its time, or needs more
    /// memory than its pool.
    TooLargeForFunction,
    /// The MERGE is larger than the upsert function takes, and the container tier takes it.
    MergeInContainer,
    /// A chunk of a split file holds a record over several lines: the file is read whole.
    Unsplittable,
    /// A chunk's invocation stopped without an error of deltadrop's (a timeout, a crash).
    ChunkStopped,
    /// Reading or writing the bucket failed.
    StorageError,
    /// delta-rs reported a failure that is not one of the above.
    DeltaError,
    /// The notification could not be sent.
    MailError,
    /// A step got input it cannot use.
    InvalidInput,
    /// A bug inside deltadrop.
    InternalError,
);

impl ErrorKind {
    /// The kind with this stable name, or `None` for a name that is not deltadrop's (one of
    /// Step Functions or Lambda, like `States.Timeout`).
    pub fn from_name(name: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.iter().copied().find(|k| k.name() == name)
    }

    /// True when the file itself is at fault: it goes to quarantine and retrying cannot help.
    pub fn is_bad_file(self) -> bool {
        use ErrorKind::*;
        match self {
            NoMatchingFeed | MalformedFile | LimitExceeded | InvalidValue | MissingKeyColumn
            | NullKey | TooManyBadRows | ExpectationFailed | SchemaMismatch => true,
            ConfigError
            | ObjectNotFound
            | UploadReplaced
            | WaitingForEarlierFile
            | CommitConflict
            | TooLargeForFunction
            | MergeInContainer
            | Unsplittable
            | ChunkStopped
            | StorageError
            | DeltaError
            | MailError
            | InvalidInput
            | InternalError => false,
        }
    }

    /// True when the same step may succeed if run again later: the state machine retries
    /// exactly these (tests/aws/statemachine.rs checks it).
    pub fn is_transient(self) -> bool {
        use ErrorKind::*;
        match self {
            WaitingForEarlierFile | CommitConflict | StorageError | DeltaError | MailError => true,
            ConfigError | NoMatchingFeed | MalformedFile | LimitExceeded | InvalidValue
            | MissingKeyColumn | NullKey | TooManyBadRows | ExpectationFailed | SchemaMismatch
            | ObjectNotFound | UploadReplaced | TooLargeForFunction | MergeInContainer
            | Unsplittable | ChunkStopped | InvalidInput | InternalError => false,
        }
    }

    /// What an operator should do about it, for failure emails and error reports.
    pub fn advice(self) -> &'static str {
        use ErrorKind::*;
        match self {
            ConfigError => "Fix the named setting in the deltadrop configuration, then drop the file again.",
            NoMatchingFeed => "Add a feed whose `incoming` pattern matches this key, or send the file to the right prefix.",
            MalformedFile | InvalidValue | MissingKeyColumn | NullKey => {
                "Ask the sender for a corrected file and drop it again; the target table was not changed."
            }
            TooManyBadRows => "Look at the rejects file beside the quarantined file (<file>.rejects.jsonl): each bad row with its line and reason. Ask the sender for a corrected file, or, if the rest of the file should load anyway, raise the feed's max_rejected_rows or max_rejected_percent and replay the file. The target table was not changed.",
            ExpectationFailed => "The file breaks a data-quality expectation of the feed whose action is fail: ask the sender for a corrected file and replay it, or, if the rule is wrong, change it in [[feeds.expect]] (or its action to warn or reject). The target table was not changed.",
            LimitExceeded => "Ask the sender whether the file is what they meant to send; if it is, raise the named limit in the feed's [feeds.limits] and drop it again. The target table was not changed.",
            SchemaMismatch => "Either fix the file's columns or change the feed's schema policy; the target table was not changed.",
            ObjectNotFound => "Check whether the file was moved or deleted by someone else.",
            UploadReplaced => "Nothing to do for this run: the upload that replaced the file is loaded by its own run. To keep every upload, turn on bucket versioning (the SAM template does).",
            WaitingForEarlierFile => "The file named in the message arrived earlier and was never merged: load it (or move it out of the incoming prefix, or delete its orphaned staging table), then replay this file.",
            TooLargeForFunction => "The file is fine; the table's layout makes its MERGE too big: partition the table by a key-derived column (partition_by), let maintenance order its files by the keys, or, if the function's time allows it, raise the feed's max_rewrite_gb; then replay the file from quarantine. The target table was not changed.",
            Unsplittable => "Nothing to do: a quoted field holds a line break (or a Parquet chunk cannot be read alone), so the file is read whole rather than in chunks.",
            MergeInContainer => "Not a failure: the MERGE was larger than the upsert function takes, and the state machine hands it to the container tier. Seen in a failure, it means the container state itself failed: see the execution's next error.",
            ChunkStopped => "A chunk's Lambda invocation stopped without an error of deltadrop's (the name in the message: a timeout, a crash). The file was not loaded; look at the chunk's logs, give the feed smaller chunks ([feeds.route] chunk_mb) if it timed out, and replay the file.",
            CommitConflict => "Other writers kept changing the table; drop the file again when the load is lower.",
            StorageError | DeltaError => "Usually transient: drop the file again. If it persists, check permissions and the table's health.",
            MailError => "Check the mail sender identity and recipients.",
            InvalidInput => "A step got input it cannot use: check that the state machine and the functions come from the same deployment.",
            InternalError => "A bug in deltadrop: look at the function's logs for the run, and report it.",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::ConfigError { .. } => ErrorKind::ConfigError,
            Error::NoMatchingFeed { .. } => ErrorKind::NoMatchingFeed,
            Error::MalformedFile { .. } => ErrorKind::MalformedFile,
            Error::LimitExceeded { .. } => ErrorKind::LimitExceeded,
            Error::InvalidValue { .. } => ErrorKind::InvalidValue,
            Error::MissingKeyColumn { .. } => ErrorKind::MissingKeyColumn,
            Error::NullKey { .. } => ErrorKind::NullKey,
            Error::TooManyBadRows { .. } => ErrorKind::TooManyBadRows,
            Error::ExpectationFailed { .. } => ErrorKind::ExpectationFailed,
            Error::SchemaMismatch { .. } => ErrorKind::SchemaMismatch,
            Error::ObjectNotFound { .. } => ErrorKind::ObjectNotFound,
            Error::UploadReplaced { .. } => ErrorKind::UploadReplaced,
            Error::WaitingForEarlierFile { .. } => ErrorKind::WaitingForEarlierFile,
            Error::CommitConflict { .. } => ErrorKind::CommitConflict,
            Error::TooLargeForFunction { .. } => ErrorKind::TooLargeForFunction,
            Error::MergeInContainer { .. } => ErrorKind::MergeInContainer,
            Error::Unsplittable { .. } => ErrorKind::Unsplittable,
            Error::StorageError { .. } => ErrorKind::StorageError,
            Error::DeltaError { .. } => ErrorKind::DeltaError,
            Error::MailError { .. } => ErrorKind::MailError,
            Error::InvalidInput { .. } => ErrorKind::InvalidInput,
            Error::InternalError { .. } => ErrorKind::InternalError,
            Error::Relayed { kind, .. } => *kind,
        }
    }

    /// The stable name Step Functions matches on.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// True when the file itself is at fault.
    pub fn is_bad_file(&self) -> bool {
        self.kind().is_bad_file()
    }

    /// An [`Error::InternalError`]: a bug, not something the input explains.
    pub fn internal(message: impl Into<String>) -> Self {
        Error::InternalError {
            message: message.into(),
        }
    }

    pub(crate) fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// An [`Error::StorageError`] on `location` with `err`'s message.
    pub fn storage(location: impl Into<String>, err: impl fmt::Display) -> Self {
        Error::StorageError {
            location: location.into(),
            message: err.to_string(),
        }
    }

    /// An [`Error::DeltaError`] on `table` with `err`'s message.
    pub fn delta(table: impl Into<String>, err: impl fmt::Display) -> Self {
        Error::DeltaError {
            table: table.into(),
            message: err.to_string(),
        }
    }

    #[cfg(feature = "delta")]
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

/// The pipeline's result: fails with an [`Error`] unless told otherwise.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_name_and_bad_files_are_never_transient() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_name(kind.name()), Some(*kind));
            assert!(!(kind.is_bad_file() && kind.is_transient()), "{kind}");
            assert!(!kind.advice().is_empty());
        }
        assert_eq!(ErrorKind::from_name("States.Timeout"), None);
        let e = Error::malformed("f.csv", Some(Position::Line(3)), "ragged");
        assert_eq!((e.name(), e.is_bad_file()), ("MalformedFile", true));
        assert!(!Error::ObjectNotFound { key: "k".into() }.is_bad_file());
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
