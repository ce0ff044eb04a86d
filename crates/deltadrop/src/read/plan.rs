//! The staging schema of one file: which columns, with which types, checked against the feed's
//! keys and schema policy before a single row is written.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::ReadSpec;
use crate::config::SchemaPolicy;
use crate::error::{Error, Result};

/// The staging table's extra column: where each row is in the file (its line or record number;
/// on the CSV fast path, counted from its batch's first line). It orders duplicate keys ("the
/// last row wins") and is never written to the target.
pub const LINE_COLUMN: &str = "_deltadrop_line";

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Plan {
    /// Data columns, then the change-type column (when configured), then [`LINE_COLUMN`].
    #[serde(with = "crate::delta::serde_schema")]
    pub schema: SchemaRef,
    /// File columns the target table does not have.
    pub new_columns: Vec<String>,
    /// Records in the sample that fixed the plan (the first batch).
    pub sample_rows: u64,
    /// The file line of the sample's last record: a chunk reads the sample's lines as the
    /// whole read does (the exact path, which reports values as the file wrote them).
    #[serde(default)]
    pub sample_last_line: u64,
}

/// Builds the plan. `fixed_columns` says whether the format has a fixed column list (CSV,
/// Parquet), so that a column missing from the file is a strict-policy violation; JSON records
/// simply omit keys. `new_column_type` gives the type of a column the target does not have.
/// Every column named, none reserved, none twice: Delta column names are case-insensitive, so
/// `id` and `ID` are the same column. Returns the names.
fn check_column_names<'c>(file: &str, file_columns: &'c [String]) -> Result<HashSet<&'c str>> {
    let mut seen = HashSet::new();
    let mut folded = HashMap::new();
    for name in file_columns {
        if name.trim().is_empty() {
            return Err(Error::malformed(
                file,
                None,
                "the header has an empty column name (a trailing delimiter?)",
            ));
        }
        if name == LINE_COLUMN {
            return Err(Error::SchemaMismatch {
                file: file.into(),
                message: format!("column name '{LINE_COLUMN}' is reserved for deltadrop"),
            });
        }
        if !seen.insert(name.as_str()) {
            return Err(Error::malformed(
                file,
                None,
                format!("column '{name}' appears twice in the header"),
            ));
        }
        if let Some(other) = folded.insert(name.to_lowercase(), name) {
            return Err(Error::malformed(
                file,
                None,
                format!(
                    "columns '{other}' and '{name}' differ only in case; Delta column names \
                     are case-insensitive, so they would be one column"
                ),
            ));
        }
    }
    Ok(seen)
}

/// Every key column and the sequence column are in the file.
fn check_required_columns(
    spec: &ReadSpec<'_>,
    file_columns: &[String],
    seen: &HashSet<&str>,
) -> Result<()> {
    let feed = spec.feed;
    if let Some(key) = feed.keys.iter().find(|k| !seen.contains(k.as_str())) {
        return Err(Error::MissingKeyColumn {
            file: spec.file.into(),
            column: key.clone(),
            found: file_columns.join(", "),
        });
    }
    match &feed.sequence_column {
        Some(sequence) if !seen.contains(sequence.as_str()) => Err(Error::SchemaMismatch {
            file: spec.file.into(),
            message: format!("the sequence column '{sequence}' is missing"),
        }),
        _ => Ok(()),
    }
}

/// Under `schema_policy = "strict"` the file has exactly the target table's columns (a JSON
/// file, whose records may leave columns out, need not have all of them).
fn check_strict_policy(
    spec: &ReadSpec<'_>,
    target_fields: &[Field],
    new_columns: &[String],
    seen: &HashSet<&str>,
    fixed_columns: bool,
) -> Result<()> {
    let mismatch = |message: String| {
        Err(Error::SchemaMismatch {
            file: spec.file.into(),
            message,
        })
    };
    if !new_columns.is_empty() {
        return mismatch(format!(
            "new column(s) {} not in the target table, and the feed's schema_policy is strict",
            new_columns.join(", ")
        ));
    }
    let missing: Vec<&str> = target_fields
        .iter()
        .map(|f| f.name().as_str())
        .filter(|name| !seen.contains(name) && spec.feed.derived_partition(name).is_none())
        .collect();
    if fixed_columns && !missing.is_empty() {
        return mismatch(format!(
            "column(s) {} of the target table are missing, and the feed's schema_policy is strict",
            missing.join(", ")
        ));
    }
    Ok(())
}

pub(crate) fn make_plan(
    spec: &ReadSpec<'_>,
    file_columns: &[String],
    fixed_columns: bool,
    new_column_type: &dyn Fn(&str) -> Result<DataType>,
) -> Result<Plan> {
    let feed = spec.feed;
    let seen = check_column_names(spec.file, file_columns)?;
    check_required_columns(spec, file_columns, &seen)?;
    if let Some(derived) = file_columns.iter().find_map(|c| feed.derived_partition(c)) {
        return Err(Error::SchemaMismatch {
            file: spec.file.into(),
            message: format!(
                "column '{}' is computed from '{}' (the feed's partition_by): the file must not have it",
                derived.name, derived.from
            ),
        });
    }
    let target_fields: Vec<Field> = spec
        .target
        .as_ref()
        .map(|t| t.fields().iter().map(|f| f.as_ref().clone()).collect())
        .unwrap_or_default();
    let new_columns: Vec<String> = file_columns
        .iter()
        .filter(|c| !feed.is_control_column(c))
        .filter(|c| !target_fields.iter().any(|f| f.name() == *c))
        .cloned()
        .collect();
    if spec.target.is_some() && feed.schema_policy == SchemaPolicy::Strict {
        check_strict_policy(spec, &target_fields, &new_columns, &seen, fixed_columns)?;
    }

    let mut fields: Vec<Field> = target_fields
        .into_iter()
        .map(|f| f.with_nullable(true))
        .collect();
    for name in &new_columns {
        let data_type = match feed.column_types.get(name) {
            Some(declared) => declared.arrow_type(),
            None => new_column_type(name)?,
        };
        fields.push(Field::new(name, data_type, true));
    }
    for derived in feed.derived_partitions() {
        if !fields.iter().any(|f| f.name() == &derived.name) {
            let data_type = crate::partition::derived_type(derived.by);
            fields.push(Field::new(&derived.name, data_type, true));
        }
    }
    if let Some(change) = &feed.change_type {
        fields.push(Field::new(&change.column, DataType::Utf8, true));
    }
    fields.push(Field::new(LINE_COLUMN, DataType::Int64, false));
    Ok(Plan {
        schema: Arc::new(Schema::new(fields)),
        new_columns,
        sample_rows: 0,
        sample_last_line: 0,
    })
}
