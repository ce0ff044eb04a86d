//! Casting a raw batch (strings for text formats, typed for Parquet) to the plan's schema, with
//! errors that name the file, line, column and value of the first value that does not fit.

use std::sync::Arc;

use deltalake::arrow::array::{new_null_array, Array, ArrayRef, Int64Array, RecordBatch};
use deltalake::arrow::compute::{cast_with_options, CastOptions};
use deltalake::arrow::datatypes::DataType;
use deltalake::arrow::util::display::{ArrayFormatter, FormatOptions};

use super::plan::{Plan, LINE_COLUMN};
use super::ReadSpec;
use crate::error::{Error, Position, Result};

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

fn value_text(array: &dyn Array, row: usize) -> String {
    match ArrayFormatter::try_new(array, &FormatOptions::default()) {
        Ok(formatter) => formatter.value(row).to_string(),
        Err(_) => "<unprintable>".into(),
    }
}

/// Conforms `raw` to `plan`. `positions[i]` locates row `i`; `position` says whether it is a
/// line or a record number.
pub(crate) fn conform(
    spec: &ReadSpec<'_>,
    plan: &Plan,
    raw: &RecordBatch,
    positions: &[u64],
    position: fn(u64) -> Position,
) -> Result<RecordBatch> {
    let options = CastOptions {
        safe: true,
        ..Default::default()
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
            let row = (0..source.len())
                .find(|&i| source.is_valid(i) && cast.is_null(i))
                .unwrap_or(0);
            return Err(Error::InvalidValue {
                file: spec.file.into(),
                position: position(positions[row]),
                column: field.name().clone(),
                value: value_text(source.as_ref(), row),
                expected: type_name(field.data_type()),
            });
        }
        columns.push(cast);
    }
    for key in &spec.feed.keys {
        if let Some(index) = plan.schema.index_of(key).ok() {
            let keys = &columns[index];
            if keys.null_count() > 0 {
                let row = (0..keys.len()).find(|&i| keys.is_null(i)).unwrap_or(0);
                return Err(Error::NullKey {
                    file: spec.file.into(),
                    position: position(positions[row]),
                    column: key.clone(),
                });
            }
        }
    }
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
    RecordBatch::try_new(plan.schema.clone(), columns)
        .map_err(|e| Error::malformed(spec.file, None, format!("could not assemble a batch: {e}")))
}
