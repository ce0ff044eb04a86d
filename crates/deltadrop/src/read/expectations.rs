//! The feed's expectations (`[[feeds.expect]]`, crate::expect) checked on every conformed batch,
//! as the file is read: no second pass. Each gives the rows of a batch that break it; what they
//! do (set aside, counted toward a failure, counted as a warning) is the caller's.
//!
//! `unique` remembers a 64-bit hash of every distinct value of the file (about 20 bytes each in
//! memory, so 10 million distinct values hold some 200 MB while the file is read); two values
//! with one hash (odds of about 1 in 10^5 for 10 million values) would count as a repeat.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use deltalake::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Scalar, StringArray};
use deltalake::arrow::compute::kernels::cmp::{gt, lt};
use deltalake::arrow::compute::{cast, cast_with_options, CastOptions};
use deltalake::arrow::datatypes::DataType;

use crate::error::{Error, Result};
use crate::expect::{Action, Expectation, Rule};

/// One expectation, prepared for the plan's type of its column.
pub(super) struct Check {
    pub name: String,
    pub column: String,
    pub action: Action,
    pub rule: Rule,
    test: Test,
}

/// How a batch's column is tested.
enum Test {
    NotNull,
    /// The hashes of the values seen in earlier batches.
    Unique(HashSet<u64>),
    Below(Scalar<ArrayRef>),
    Above(Scalar<ArrayRef>),
    OneOf(HashSet<String>),
    Matches(regex::Regex),
    MaxLength(usize),
}

/// The rows of a batch that break a check, and what to remember once the batch is taken.
pub(super) struct Broken {
    pub rows: Vec<usize>,
    /// `unique`: the hashes this batch adds.
    seen: Vec<u64>,
}

/// The file's checks: one per expectation, prepared for its column's type in `schema`.
pub(super) fn prepare(
    expectations: &[Expectation],
    schema: &deltalake::arrow::datatypes::Schema,
    feed: &str,
) -> Result<Vec<Check>> {
    let mut checks = Vec::with_capacity(expectations.len());
    for expectation in expectations {
        let misfit = |message: String| {
            Error::config(
                format!("feed {feed:?}, expectation {:?}", expectation.name),
                message,
            )
        };
        let rule = expectation.rule().map_err(&misfit)?;
        let field = schema.field_with_name(&expectation.column).map_err(|_| {
            misfit(format!(
                "the file and the table have no column {:?}",
                expectation.column
            ))
        })?;
        let data_type = field.data_type();
        if let Some(why) = rule.misfit(type_kind(data_type)) {
            return Err(misfit(why));
        }
        let value_of = |text: &str| -> Result<ArrayRef> {
            let strict = CastOptions {
                safe: false,
                ..Default::default()
            };
            cast_with_options(&StringArray::from(vec![text]), data_type, &strict).map_err(|e| {
                misfit(format!(
                    "{text:?} is not a value of the column's type ({}): {e}",
                    type_kind(data_type)
                ))
            })
        };
        let test = match &rule {
            Rule::NotNull => Test::NotNull,
            Rule::Unique => Test::Unique(HashSet::new()),
            Rule::Min(bound) => Test::Below(Scalar::new(value_of(bound)?)),
            Rule::Max(bound) => Test::Above(Scalar::new(value_of(bound)?)),
            Rule::OneOf(values) => {
                let mut allowed = HashSet::new();
                for value in values {
                    // As the column writes it: `1.0` for 1 in a double column.
                    let typed = value_of(value)?;
                    allowed.insert(texts(typed.as_ref())?.value(0).to_string());
                }
                Test::OneOf(allowed)
            }
            Rule::Matches(_, anchored) => Test::Matches(anchored.clone()),
            Rule::MaxLength(length) => Test::MaxLength(*length),
        };
        checks.push(Check {
            name: expectation.name.clone(),
            column: expectation.column.clone(),
            action: expectation.action,
            rule,
            test,
        });
    }
    Ok(checks)
}

impl Check {
    /// The rows of `column` (this check's column of a batch) that break it, but those `skip`
    /// names (rows already left out); nulls break only `not_null`.
    pub fn broken(&self, column: &ArrayRef, skip: &dyn Fn(usize) -> bool) -> Result<Broken> {
        let failed = |e: &dyn std::fmt::Display| {
            Error::internal(format!("checking the expectation {:?}: {e}", self.name))
        };
        let rows: Vec<usize> = match &self.test {
            Test::NotNull => (0..column.len())
                .filter(|&i| column.is_null(i) && !skip(i))
                .collect(),
            Test::Unique(seen) => return unique(column, seen, skip),
            Test::Below(bound) => true_rows(&lt(column, bound).map_err(|e| failed(&e))?, skip),
            Test::Above(bound) => true_rows(&gt(column, bound).map_err(|e| failed(&e))?, skip),
            Test::OneOf(allowed) => text_rows(column, skip, |v| !allowed.contains(v))?,
            Test::Matches(pattern) => text_rows(column, skip, |v| !pattern.is_match(v))?,
            Test::MaxLength(length) => text_rows(column, skip, |v| v.chars().count() > *length)?,
        };
        Ok(Broken {
            rows,
            seen: Vec::new(),
        })
    }

    /// Remembers what a batch that was taken added (`unique`'s values).
    pub fn remember(&mut self, broken: Broken) {
        if let Test::Unique(seen) = &mut self.test {
            seen.extend(broken.seen);
        }
    }
}

/// The rows whose value an earlier row (of this batch or an earlier one) had; rows `skip`
/// names neither break it nor count as having had their value.
fn unique(column: &ArrayRef, seen: &HashSet<u64>, skip: &dyn Fn(usize) -> bool) -> Result<Broken> {
    let text = texts(column.as_ref())?;
    let mut batch = HashSet::new();
    let mut broken = Broken {
        rows: Vec::new(),
        seen: Vec::new(),
    };
    for i in (0..column.len()).filter(|&i| column.is_valid(i) && !skip(i)) {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        text.value(i).hash(&mut hasher);
        let hash = hasher.finish();
        if seen.contains(&hash) || !batch.insert(hash) {
            broken.rows.push(i);
        } else {
            broken.seen.push(hash);
        }
    }
    Ok(broken)
}

/// The rows (not null, not `skip`ped) whose value as text `breaks` says break the rule.
fn text_rows(
    column: &ArrayRef,
    skip: &dyn Fn(usize) -> bool,
    breaks: impl Fn(&str) -> bool,
) -> Result<Vec<usize>> {
    let text = texts(column.as_ref())?;
    Ok((0..column.len())
        .filter(|&i| column.is_valid(i) && !skip(i) && breaks(text.value(i)))
        .collect())
}

fn true_rows(mask: &BooleanArray, skip: &dyn Fn(usize) -> bool) -> Vec<usize> {
    (0..mask.len())
        .filter(|&i| mask.is_valid(i) && mask.value(i) && !skip(i))
        .collect()
}

/// The column's values as text, as the table shows them.
fn texts(column: &dyn Array) -> Result<StringArray> {
    let text = cast(column, &DataType::Utf8).map_err(|e| Error::internal(e.to_string()))?;
    text.as_string_opt::<i32>()
        .cloned()
        .ok_or_else(|| Error::internal("a cast to text gave no strings"))
}

/// The configuration's name of the kind of a column's type, for [`Rule::misfit`].
fn type_kind(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::Int8 | DataType::Int16 | DataType::Int32 => "integer",
        DataType::Int64 | DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => "long",
        DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) => {
            "double"
        }
        DataType::Date32 | DataType::Date64 => "date",
        DataType::Timestamp(..) => "timestamp",
        DataType::Boolean => "boolean",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string",
        _ => "binary or nested value",
    }
}
