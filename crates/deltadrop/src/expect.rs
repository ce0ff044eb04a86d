//! Data-quality expectations of a feed (`[[feeds.expect]]`): a name, a column, one rule and
//! what a row that breaks it does (`reject`, `fail`, `warn`). The stage checks them as it reads
//! (crate::read, `expectations`); this module is their configuration and its validation.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::config::{ColumnType, OnBadRows};
use crate::error::{Error, Result};

/// What a row that breaks an expectation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// The row goes to the rejects file (the feed's `on_bad_rows` must be `"reject"`).
    Reject,
    /// The file fails with `ExpectationFailed`, naming the count and the first rows.
    Fail,
    /// The row loads; it is counted.
    Warn,
}

impl Action {
    /// Its name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Action::Reject => "reject",
            Action::Fail => "fail",
            Action::Warn => "warn",
        }
    }
}

/// One `[[feeds.expect]]` entry as written: exactly one of the rule settings is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// Names the rule in rejects files, counts, metrics and errors.
    pub name: String,
    /// The column it is about.
    pub column: String,
    /// What a row that breaks it does.
    pub action: Action,
    /// The value is not null.
    #[serde(default)]
    pub not_null: bool,
    /// No other row of the file has the same value (nulls aside).
    #[serde(default)]
    pub unique: bool,
    /// The value is at least this: a number, or a date or timestamp as text.
    pub min: Option<Bound>,
    /// The value is at most this.
    pub max: Option<Bound>,
    /// The value is one of these.
    pub one_of: Option<Vec<Bound>>,
    /// The whole value matches this regular expression.
    pub matches: Option<String>,
    /// The value has at most this many characters.
    pub max_length: Option<usize>,
}

/// A value in a rule: a number, or text (a date, a timestamp, a string).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Bound {
    /// An integer.
    Integer(i64),
    /// A number with a fraction.
    Float(f64),
    /// A date, a timestamp or any text.
    Text(String),
    /// A TOML date or date-time (`min = 2020-01-01`).
    Date(toml::value::Datetime),
}

impl Bound {
    /// The value as the file would write it.
    pub fn text(&self) -> String {
        match self {
            Bound::Integer(n) => n.to_string(),
            Bound::Float(x) => x.to_string(),
            Bound::Text(text) => text.clone(),
            Bound::Date(date) => date.to_string(),
        }
    }
}

/// The one rule of an expectation.
#[derive(Debug, Clone)]
pub enum Rule {
    /// Not null.
    NotNull,
    /// Unique within the file.
    Unique,
    /// At least the bound.
    Min(String),
    /// At most the bound.
    Max(String),
    /// One of the values.
    OneOf(Vec<String>),
    /// The whole value matches (the pattern as written, and compiled anchored).
    Matches(String, regex::Regex),
    /// At most this many characters.
    MaxLength(usize),
}

impl Rule {
    /// The rule as the configuration writes it, for messages: `min = 0`.
    pub fn describe(&self) -> String {
        match self {
            Rule::NotNull => "not_null".into(),
            Rule::Unique => "unique".into(),
            Rule::Min(bound) => format!("min = {bound}"),
            Rule::Max(bound) => format!("max = {bound}"),
            Rule::OneOf(values) => format!("one_of = [{}]", values.join(", ")),
            Rule::Matches(pattern, _) => format!("matches = {pattern:?}"),
            Rule::MaxLength(length) => format!("max_length = {length}"),
        }
    }

    /// Why the rule cannot apply to a column of `column_type`, if it cannot.
    pub fn misfit(&self, column_type: &str) -> Option<String> {
        let numeric_or_time = matches!(
            column_type,
            "long" | "integer" | "double" | "date" | "timestamp"
        );
        match self {
            Rule::Min(_) | Rule::Max(_) if !numeric_or_time => Some(format!(
                "min and max compare numbers, dates and timestamps; the column is a {column_type}"
            )),
            Rule::Matches(..) | Rule::MaxLength(_) if column_type != "string" => Some(format!(
                "matches and max_length apply to strings; the column is a {column_type}"
            )),
            _ => None,
        }
    }
}

impl Expectation {
    /// The rule it sets, when exactly one is set.
    pub fn rule(&self) -> std::result::Result<Rule, String> {
        let mut rules = Vec::new();
        if self.not_null {
            rules.push(Rule::NotNull);
        }
        if self.unique {
            rules.push(Rule::Unique);
        }
        if let Some(bound) = &self.min {
            rules.push(Rule::Min(bound.text()));
        }
        if let Some(bound) = &self.max {
            rules.push(Rule::Max(bound.text()));
        }
        if let Some(values) = &self.one_of {
            if values.is_empty() {
                return Err("one_of needs at least one value".into());
            }
            rules.push(Rule::OneOf(values.iter().map(Bound::text).collect()));
        }
        if let Some(pattern) = &self.matches {
            let anchored = regex::Regex::new(&format!("^(?:{pattern})$"))
                .map_err(|e| format!("matches: {pattern:?} is not a regular expression: {e}"))?;
            rules.push(Rule::Matches(pattern.clone(), anchored));
        }
        if let Some(length) = self.max_length {
            if length == 0 {
                return Err("max_length must be above 0".into());
            }
            rules.push(Rule::MaxLength(length));
        }
        match rules.len() {
            1 => Ok(rules.remove(0)),
            0 => Err(format!("no rule: set one of {RULES}")),
            n => Err(format!(
                "{n} rules: set exactly one of {RULES} (one expectation each)"
            )),
        }
    }
}

const RULES: &str = "not_null, unique, min, max, one_of, matches, max_length";

/// Checks a feed's expectations: each `feeds[i].expect[j]` names a column, one rule that fits the
/// column's declared type, and an action the feed allows.
pub fn validate(
    expectations: &[Expectation],
    column_types: &std::collections::BTreeMap<String, ColumnType>,
    on_bad_rows: OnBadRows,
    field: &dyn Fn(&str) -> String,
) -> Result<()> {
    let mut names = HashSet::new();
    for (j, expectation) in expectations.iter().enumerate() {
        let at = |name: &str| field(&format!("expect[{j}].{name}"));
        if expectation.name.trim().is_empty() {
            return Err(Error::config(at("name"), "expected a non-empty name"));
        }
        if !names.insert(expectation.name.as_str()) {
            return Err(Error::config(
                at("name"),
                format!("{:?} names two expectations", expectation.name),
            ));
        }
        if expectation.column.trim().is_empty() {
            return Err(Error::config(at("column"), "expected a column name"));
        }
        let rule = expectation
            .rule()
            .map_err(|message| Error::config(field(&format!("expect[{j}]")), message))?;
        if let Some(declared) = column_types.get(&expectation.column) {
            if let Some(misfit) = rule.misfit(declared.name()) {
                return Err(Error::config(field(&format!("expect[{j}]")), misfit));
            }
        }
        if expectation.action == Action::Reject && on_bad_rows != OnBadRows::Reject {
            return Err(Error::config(
                at("action"),
                "\"reject\" sets rows aside, which needs the feed's on_bad_rows = \"reject\"",
            ));
        }
    }
    Ok(())
}
