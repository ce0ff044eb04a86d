//! Parquet: typed already. Its footer sits at the end, so the stream is spooled to a temporary
//! file first (disk, not memory), then read batch by batch.

use std::io::Read;

use deltalake::arrow::datatypes::{DataType, TimeUnit};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::conform::conform;
use super::plan::make_plan;
use super::{ReadSpec, ReadSummary, BATCH_ROWS};
use crate::error::{Error, Position, Result};

/// The Delta-compatible type a Parquet column is stored as when it is new to the table.
fn delta_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
            DataType::Binary
        }
        DataType::UInt8 => DataType::Int16,
        DataType::UInt16 => DataType::Int32,
        DataType::UInt32 | DataType::UInt64 => DataType::Int64,
        DataType::Float16 => DataType::Float32,
        DataType::Date64 => DataType::Date32,
        DataType::Timestamp(..) => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        DataType::Dictionary(_, values) => delta_type(values),
        other => other.clone(),
    }
}

pub(crate) fn read(
    mut input: impl Read,
    spec: &ReadSpec<'_>,
    sink: &mut dyn FnMut(RecordBatch) -> Result<()>,
) -> Result<ReadSummary> {
    let mut spool = tempfile::tempfile().map_err(|e| Error::storage("temporary file", e))?;
    let size =
        std::io::copy(&mut input, &mut spool).map_err(|e| super::io_error(spec.file, None, e))?;
    if size == 0 {
        return Ok(ReadSummary::default()); // an empty file
    }
    let not_parquet = |e: &dyn std::fmt::Display| {
        Error::malformed(spec.file, None, format!("not a readable Parquet file: {e}"))
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(spool).map_err(|e| not_parquet(&e))?;
    let file_schema = builder.schema().clone();
    super::limits::check_columns(
        spec.file,
        &spec.feed.limits,
        file_schema.fields().len(),
        None,
    )?;
    let columns: Vec<String> = file_schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let reader = builder
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| not_parquet(&e))?;

    let new_column_type = |name: &str| -> Result<DataType> {
        let field = file_schema
            .field_with_name(name)
            .map_err(|e| not_parquet(&e))?;
        Ok(delta_type(field.data_type()))
    };
    let mut plan = None;
    // Records read (they number the positions), and those loaded (not set aside).
    let (mut rows, mut loaded) = (0u64, 0u64);
    let mut positions = Vec::with_capacity(BATCH_ROWS);
    for batch in reader {
        let batch = batch.map_err(|e| {
            Error::malformed(spec.file, Some(Position::Record(rows + 1)), e.to_string())
        })?;
        if batch.num_rows() == 0 {
            continue;
        }
        if plan.is_none() {
            plan = Some(make_plan(spec, &columns, true, &new_column_type)?);
        }
        positions.clear();
        positions.extend((rows + 1)..=(rows + batch.num_rows() as u64));
        let conformed = conform(
            spec,
            plan.as_ref().expect("set above"),
            &batch,
            &positions,
            Position::Record,
            true,
            true,
        )?;
        rows += batch.num_rows() as u64;
        loaded += conformed.num_rows() as u64;
        sink(conformed)?;
    }
    Ok(ReadSummary {
        rows: loaded,
        columns,
        new_columns: plan
            .as_ref()
            .map(|p| p.new_columns.clone())
            .unwrap_or_default(),
        ..Default::default()
    })
}
