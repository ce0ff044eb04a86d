//! Casting a raw batch (strings for text formats, typed for Parquet) to the plan's schema, with
//! errors that name the file, line, column and value of the first value that does not fit.

use std::sync::Arc;

use std::collections::{BTreeMap, BTreeSet};

use deltalake::arrow::array::{
    new_null_array, Array, ArrayRef, BooleanArray, Int64Array, RecordBatch,
};
use deltalake::arrow::compute::{cast_with_options, filter, CastOptions};
use deltalake::arrow::datatypes::DataType;
use deltalake::arrow::util::display::{ArrayFormatter, FormatOptions};

use super::plan::{Plan, LINE_COLUMN};
use super::ReadSpec;
use crate::bounded::{shorten, MAX_VALUE_CHARS};
use crate::config::{FileFormat, OnBadRows};
use crate::error::{Error, Position, Result};
use crate::expect::Action;
use crate::rejects::Fault;

/// A readable name for a type in error messages, with the expected form where it helps.
pub fn type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Int64 => "long (64-bit integer)".into(),
        DataType::Int32 => "integer (32-bit)".into(),
        DataType::Float64 => "double".into(),
        DataType::Boolean => "boolean (true/false)".into(),
        DataType::Date32 => "date (YYYY-MM-DD)".into(),
        DataType::Timestamp(..) => "timestamp (like 2024-01-31T12:00:00Z)".into(),
        DataType::Utf8 => "string".into(),
        other => other.to_string(),
    }
}

/// The value of `row`, or `None` for a null.
fn value_or_null(array: &dyn Array, row: usize) -> Option<String> {
    array.is_valid(row).then(|| value_text(array, row))
}

fn value_text(array: &dyn Array, row: usize) -> String {
    match ArrayFormatter::try_new(array, &FormatOptions::default()) {
        Ok(formatter) => formatter.value(row).to_string(),
        Err(_) => "<unprintable>".into(),
    }
}

/// Conforms `raw` to `plan`. `positions[i]` locates row `i`; `position` says whether it is a
/// line or a record number, exactly when `positions_exact` (the fast CSV path assumes a line per
/// record). A row with a value that does not fit its column, a null key or that breaks an
/// expectation whose action is `reject` fails the file, or, when `may_set_aside` and the feed
/// rejects bad rows, is set aside (the first fault of the row names it) and left out of the
/// batch. Rows that break the feed's other expectations are counted, when the batch is taken.
pub(crate) fn conform(
    spec: &ReadSpec<'_>,
    plan: &Plan,
    raw: &RecordBatch,
    positions: &[u64],
    position: fn(u64) -> Position,
    may_set_aside: bool,
    positions_exact: bool,
) -> Result<RecordBatch> {
    let options = CastOptions {
        safe: true,
        ..Default::default()
    };
    let set_aside = may_set_aside && spec.feed.on_bad_rows == OnBadRows::Reject;
    // The rows to leave out, each with its first fault.
    let mut bad: BTreeMap<usize, Fault> = BTreeMap::new();
    let found = |bad: &mut BTreeMap<usize, Fault>, row: usize, fault: Fault| -> Result<()> {
        if !set_aside {
            return Err(fault.into_error());
        }
        bad.entry(row).or_insert(fault);
        Ok(())
    };
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(plan.schema.fields().len());
    let mut derived = Vec::new();
    for field in plan.schema.fields() {
        if let Some(partition) = spec.feed.derived_partition(field.name()) {
            derived.push((columns.len(), partition));
            columns.push(new_null_array(field.data_type(), raw.num_rows()));
            continue;
        }
        if field.name() == LINE_COLUMN {
            columns.push(Arc::new(Int64Array::from_iter_values(
                positions.iter().map(|p| *p as i64),
            )));
            continue;
        }
        let Some(source) = raw.column_by_name(field.name()) else {
            columns.push(new_null_array(field.data_type(), raw.num_rows()));
            continue;
        };
        let cast = cast_with_options(source, field.data_type(), &options).map_err(|e| {
            Error::SchemaMismatch {
                file: spec.file.into(),
                message: format!(
                    "column '{}' is {} in the file but {} in the table: {e}",
                    field.name(),
                    type_name(source.data_type()),
                    type_name(field.data_type())
                ),
            }
        })?;
        if cast.null_count() != source.null_count() {
            for row in (0..source.len()).filter(|&i| source.is_valid(i) && cast.is_null(i)) {
                let error = Error::InvalidValue {
                    file: spec.file.into(),
                    position: position(positions[row]),
                    column: field.name().clone(),
                    value: value_text(source.as_ref(), row),
                    expected: type_name(field.data_type()),
                };
                found(&mut bad, row, error.into())?;
            }
        }
        columns.push(cast);
    }
    for key in &spec.feed.keys {
        if let Ok(index) = plan.schema.index_of(key) {
            let keys = &columns[index];
            for row in (0..keys.len()).filter(|&i| keys.is_null(i)) {
                let error = Error::NullKey {
                    file: spec.file.into(),
                    position: position(positions[row]),
                    column: key.clone(),
                };
                found(&mut bad, row, error.into())?;
            }
        }
    }
    // Partition columns derived before the expectations, which may be about them.
    for (index, partition) in derived {
        let from = plan.schema.index_of(&partition.from).map_err(|e| {
            Error::malformed(spec.file, None, format!("partition source column: {e}"))
        })?;
        columns[index] =
            crate::partition::derive(partition, &columns[from]).map_err(|message| {
                Error::SchemaMismatch {
                    file: spec.file.into(),
                    message,
                }
            })?;
    }
    let left_out: BTreeSet<usize> = bad.keys().copied().collect();
    let breaches = spec
        .rejects
        .breaches(spec, &plan.schema, &columns, &|row| left_out.contains(&row))?;
    if !positions_exact && breaches.iter().any(|b| !b.broken.rows.is_empty()) {
        // Rows that break an expectation are counted with their lines, which only the exact
        // path knows.
        return Err(Error::internal(
            "an expectation broken where lines are not known",
        ));
    }
    // A value as the file wrote it (`-5`, not the double `-5.0`).
    let written = |column: usize, row: usize| {
        let name = plan.schema.field(column).name();
        let source = raw.column_by_name(name).unwrap_or(&columns[column]);
        value_or_null(source.as_ref(), row)
    };
    for breach in breaches.iter().filter(|b| b.action == Action::Reject) {
        for &row in &breach.broken.rows {
            let value = written(breach.column, row);
            let fault = spec
                .rejects
                .breach(spec, breach.index, position(positions[row]), value);
            found(&mut bad, row, fault)?;
        }
    }
    let located = |column: usize, row: usize| {
        let value = written(column, row);
        let value = value.map_or("null".into(), |v| {
            format!("{:?}", shorten(&v, MAX_VALUE_CHARS))
        });
        format!("{}: {value}", position(positions[row]))
    };
    spec.rejects
        .take(breaches, &|row| bad.contains_key(&row), &located);
    if !bad.is_empty() {
        let keep: BooleanArray = (0..raw.num_rows())
            .map(|row| Some(!bad.contains_key(&row)))
            .collect();
        for (row, fault) in bad {
            spec.rejects
                .bad_row(spec, fault, || raw_record(spec, raw, row))?;
        }
        columns = columns
            .iter()
            .map(|column| filter(column, &keep))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::internal(format!("could not leave out rejected rows: {e}")))?;
    }
    RecordBatch::try_new(plan.schema.clone(), columns)
        .map_err(|e| Error::malformed(spec.file, None, format!("could not assemble a batch: {e}")))
}

/// Row `row` of `raw` as the file wrote it, for the rejects file: a CSV record (the feed's
/// delimiter and quote; a null as the feed's first null string), else a JSON object of the
/// values as text, which a JSON file of the feed reads back as the same values.
fn raw_record(spec: &ReadSpec<'_>, raw: &RecordBatch, row: usize) -> String {
    let values = raw
        .columns()
        .iter()
        .map(|column| (!column.is_null(row)).then(|| value_text(column.as_ref(), row)));
    if spec.format == FileFormat::Csv {
        let options = &spec.feed.csv;
        let null = options.null_values.first().map_or("", String::as_str);
        let fields: Vec<String> = values
            .map(|v| v.unwrap_or_else(|| null.to_string()))
            .collect();
        return super::csv::record_text(&fields, options);
    }
    let object: serde_json::Map<String, serde_json::Value> = raw
        .schema()
        .fields()
        .iter()
        .zip(values)
        .map(|(field, value)| {
            (
                field.name().clone(),
                value.map_or(serde_json::Value::Null, serde_json::Value::String),
            )
        })
        .collect();
    serde_json::Value::Object(object).to_string()
}
