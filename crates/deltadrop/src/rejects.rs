//! Bad rows set aside (a feed with `on_bad_rows = "reject"`): the rejects file written beside
//! the file's quarantine folder, and the counts the step outputs, emails and reports carry.
//!
//! A row is set aside for the error that would otherwise have failed the whole file (a value
//! that does not fit its column, a null key, a ragged CSV record, a malformed JSON line): the
//! same stable name and message, one JSON line per row with the record as the file had it, so
//! that the owner can fix the lines and send them again. Everything else that fails a file
//! (bytes that are not UTF-8, a corrupt gzip, a missing key column, a limit) still fails it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bounded::{shorten, MAX_MESSAGE_CHARS, MAX_VALUE_CHARS};
use crate::error::{Error, Position};

/// The rejects file's name: the quarantined file's key followed by this.
pub const REJECTS_SUFFIX: &str = ".rejects.jsonl";

/// Rejected rows a step output and an email show: the rest are in the rejects file.
pub const SAMPLE_ROWS: usize = 5;

/// One line of the rejects file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRow {
    /// The file the row came from, by the key it arrived under (empty in step outputs, which
    /// name their file already).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub file: String,
    /// The upload it came from, as the table records applied uploads
    /// (`deltadrop:<key>@<upload>`): a replay checks that the upload was merged.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub upload: String,
    /// Where the row was: `line` (CSV, JSON lines) or `record` (JSON arrays, Parquet).
    #[serde(flatten)]
    pub position: Position,
    /// Why: the stable name of the error the row would have failed the file with.
    pub error: String,
    /// The expectation the row breaks (`error` is then `ExpectationFailed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The column at fault, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// The value at fault, as the file wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// What is wrong, as the whole file's failure would have said it.
    pub message: String,
    /// The record as the file wrote it: a CSV record (its fields quoted as needed), a JSON
    /// line as it was, or a JSON object of a record's values as text (empty in step outputs).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub raw: String,
}

impl RejectedRow {
    /// The row that `error` (about one row) would have failed the file for; `None` for an error
    /// about the whole file, which still fails it.
    pub fn for_error(error: &Error, raw: String) -> Option<RejectedRow> {
        let (file, position, column, value) = match error {
            Error::InvalidValue {
                file,
                position,
                column,
                value,
                ..
            } => (file, *position, Some(column.clone()), Some(value.clone())),
            Error::NullKey {
                file,
                position,
                column,
            } => (file, *position, Some(column.clone()), None),
            Error::MalformedFile {
                file,
                position: Some(position),
                ..
            } => (file, *position, None, None),
            _ => return None,
        };
        Some(RejectedRow {
            file: file.clone(),
            upload: String::new(),
            rule: None,
            position,
            error: error.name().to_string(),
            column,
            value,
            message: error.to_string(),
            raw,
        })
    }

    /// The row as a step output or an email shows it: its raw record and value left out,
    /// the message bounded.
    pub fn brief(&self) -> RejectedRow {
        RejectedRow {
            file: String::new(),
            upload: String::new(),
            value: self.value.as_deref().map(|v| shorten(v, MAX_VALUE_CHARS)),
            message: shorten(&self.message, MAX_VALUE_CHARS * 2),
            raw: String::new(),
            ..self.clone()
        }
    }
}

/// The rows of a rejects file's bytes: its non-empty lines.
pub fn count_rows(text: &[u8]) -> u64 {
    text.split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .count() as u64
}

/// Why a row cannot load: the error it would fail the file with, or an expectation it breaks.
#[derive(Debug, Clone)]
pub enum Fault {
    /// A value that does not fit, a null key, a record that cannot be read.
    Error(Error),
    /// An expectation with the action `reject` (or, read strictly, any action).
    Breach(Breach),
}

/// A row that breaks an expectation.
#[derive(Debug, Clone)]
pub struct Breach {
    /// The file's key.
    pub file: String,
    /// Where the row is.
    pub position: Position,
    /// The expectation's name.
    pub expectation: String,
    /// Its rule as the configuration writes it.
    pub rule: String,
    /// The column it is about.
    pub column: String,
    /// The row's value (None: null).
    pub value: Option<String>,
}

impl Breach {
    /// "value "-5" breaks the expectation 'amount_positive' (min = 0)".
    pub fn message(&self) -> String {
        let value = self.value.as_deref().map_or("null".to_string(), |v| {
            format!("{:?}", shorten(v, MAX_VALUE_CHARS))
        });
        format!(
            "{}, {}, column '{}': value {value} breaks the expectation '{}' ({})",
            self.file, self.position, self.column, self.expectation, self.rule
        )
    }
}

impl Fault {
    /// The error the row fails its file with when bad rows are not set aside.
    pub fn into_error(self) -> Error {
        match self {
            Fault::Error(error) => error,
            Fault::Breach(breach) => Error::ExpectationFailed {
                file: breach.file.clone(),
                expectation: breach.expectation.clone(),
                rule: breach.rule.clone(),
                rows: 1,
                first: breach.message(),
            },
        }
    }

    /// The row as the rejects file holds it; `None` for an error about the whole file.
    pub fn rejected(&self, raw: String) -> Option<RejectedRow> {
        match self {
            Fault::Error(error) => RejectedRow::for_error(error, raw),
            Fault::Breach(breach) => Some(RejectedRow {
                file: breach.file.clone(),
                upload: String::new(),
                position: breach.position,
                error: "ExpectationFailed".into(),
                rule: Some(breach.expectation.clone()),
                column: Some(breach.column.clone()),
                value: breach.value.clone(),
                message: breach.message(),
                raw,
            }),
        }
    }
}

impl From<Error> for Fault {
    fn from(error: Error) -> Self {
        Fault::Error(error)
    }
}

/// What one expectation found in a file (step outputs, emails, metrics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectationOutcome {
    /// The expectation's name.
    pub name: String,
    /// Its rule as the configuration writes it.
    pub rule: String,
    /// What a row that broke it did.
    pub action: crate::expect::Action,
    /// Rows that broke it (set aside, loaded with a warning, or failing the file).
    pub rows: u64,
    /// The first of them: "line 7: value \"-5\"".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub first: Vec<String>,
}

/// What was set aside from one file: counts and the first rows (step outputs, emails).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectsSummary {
    /// Rows set aside.
    pub rows: u64,
    /// Rows set aside per reason (an error's stable name).
    pub by_reason: BTreeMap<String, u64>,
    /// The first [`SAMPLE_ROWS`] rows set aside, without their records.
    pub first: Vec<RejectedRow>,
    /// The rejects file's key in the bucket.
    pub file: String,
}

impl RejectsSummary {
    /// "InvalidValue 2, NullKey 1".
    pub fn reasons(&self) -> String {
        let reasons: Vec<String> = self
            .by_reason
            .iter()
            .map(|(reason, count)| format!("{reason} {count}"))
            .collect();
        reasons.join(", ")
    }

    /// The first rows, one per line: "line 7: InvalidValue: <message>".
    pub fn first_lines(&self) -> Vec<String> {
        self.first
            .iter()
            .map(|row| format!("{}: {}: {}", row.position, row.error, row.message))
            .collect()
    }
}

/// The `TooManyBadRows` error for `summary` of `file`, where `over` says which threshold.
pub fn too_many(file: &str, summary: &RejectsSummary, over: String) -> Error {
    let first = summary.first_lines().join("; ");
    Error::TooManyBadRows {
        file: file.to_string(),
        rejected: summary.rows,
        over,
        first: shorten(&first, MAX_MESSAGE_CHARS / 2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejected_row_is_one_json_line_naming_its_line_column_value_and_reason() {
        let error = Error::InvalidValue {
            file: "in/a.csv".into(),
            position: Position::Line(7),
            column: "amount".into(),
            value: "12,5".into(),
            expected: "double".into(),
        };
        let row = RejectedRow::for_error(&error, "3,\"12,5\"".into()).unwrap();
        assert_eq!(
            serde_json::to_string(&row).unwrap(),
            r#"{"file":"in/a.csv","line":7,"error":"InvalidValue","column":"amount","value":"12,5","message":"in/a.csv, line 7, column 'amount': value \"12,5\" is not a valid double","raw":"3,\"12,5\""}"#
        );
        let back: RejectedRow =
            serde_json::from_str(&serde_json::to_string(&row).unwrap()).unwrap();
        assert_eq!(back, row);
        let whole_file = Error::MalformedFile {
            file: "in/a.csv".into(),
            position: None,
            message: "not UTF-8".into(),
        };
        assert_eq!(RejectedRow::for_error(&whole_file, String::new()), None);
    }
}
