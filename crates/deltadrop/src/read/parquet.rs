//! Parquet: typed already. Its footer sits at the end, so the stream is spooled to a temporary
//! file first (disk, not memory), then read batch by batch. A chunk of a file split by row
//! group spools only its row groups' bytes and the footer ([`ParquetSlice`]), and reads its
//! row groups with the file's record numbers.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use deltalake::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use deltalake::parquet::errors::ParquetError;
use deltalake::parquet::file::metadata::ParquetMetaData;
use deltalake::parquet::file::reader::{ChunkReader, Length};

use super::conform::conform;
use super::part::{HeadPlan, ParquetSlice};
use super::plan::{make_plan, Plan};
use super::{ReadSpec, ReadSummary, BATCH_ROWS};
use crate::error::{Error, ErrorKind, Position, Result};

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

fn not_parquet(spec: &ReadSpec<'_>, e: &dyn std::fmt::Display) -> Error {
    Error::malformed(spec.file, None, format!("not a readable Parquet file: {e}"))
}

/// The file's columns, in file order, within the feed's limit.
fn file_columns(spec: &ReadSpec<'_>, file_schema: &SchemaRef) -> Result<Vec<String>> {
    super::limits::check_columns(
        spec.file,
        &spec.feed.limits,
        file_schema.fields().len(),
        None,
    )?;
    Ok(file_schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect())
}

/// The staging plan of a file with these columns (the whole read makes it at its first row).
fn plan_for(spec: &ReadSpec<'_>, columns: &[String], file_schema: &SchemaRef) -> Result<Plan> {
    let new_column_type = |name: &str| -> Result<DataType> {
        let field = file_schema
            .field_with_name(name)
            .map_err(|e| not_parquet(spec, &e))?;
        Ok(delta_type(field.data_type()))
    };
    make_plan(spec, columns, true, &new_column_type)
}

/// The plan a split file's chunks are read with, from its footer's `metadata` alone: the one
/// the whole read makes at its first row.
pub(crate) fn footer_head(metadata: Arc<ParquetMetaData>, spec: &ReadSpec<'_>) -> Result<HeadPlan> {
    let arrow = ArrowReaderMetadata::try_new(metadata, ArrowReaderOptions::new())
        .map_err(|e| not_parquet(spec, &e))?;
    let columns = file_columns(spec, arrow.schema())?;
    let plan = plan_for(spec, &columns, arrow.schema())?;
    Ok(HeadPlan { plan, columns })
}

pub(crate) fn read(
    mut input: impl Read,
    spec: &ReadSpec<'_>,
    sink: &mut dyn FnMut(RecordBatch) -> Result<()>,
) -> Result<ReadSummary> {
    let mut spool = tempfile::tempfile().map_err(|e| Error::storage("temporary file", e))?;
    let size =
        std::io::copy(&mut input, &mut spool).map_err(|e| super::io_error(spec.file, None, e))?;
    let Some(slice) = spec.part.parquet_slice() else {
        if size == 0 {
            return Ok(ReadSummary::default()); // an empty file
        }
        return read_spooled(spool, None, spec, sink);
    };
    let expected = slice.stream_bytes();
    if size != expected {
        return Err(read_whole(
            spec,
            format!("a chunk's stream held {size} bytes, not {expected}"),
        ));
    }
    let sliced = SlicedSpool {
        file: spool,
        slice: slice.clone(),
    };
    // Whatever stops a chunk's own read (a page that does not decode, a byte outside its
    // slice, a footer whose record counts its pages do not hold) is the whole read's to
    // report: its errors name the records the whole read names.
    read_spooled(sliced, Some(slice.row_groups.clone()), spec, sink).map_err(|e| match e.kind() {
        ErrorKind::MalformedFile => read_whole(spec, e.to_string()),
        _ => e,
    })
}

/// A Parquet chunk that must be read with its whole file.
fn read_whole(spec: &ReadSpec<'_>, message: String) -> Error {
    Error::Unsplittable {
        file: spec.file.to_string(),
        position: None,
        message,
    }
}

/// Reads the spooled file (its `row_groups` only, when given), numbering its records from the
/// spec's part on.
fn read_spooled<R: ChunkReader + 'static>(
    spool: R,
    row_groups: Option<Vec<usize>>,
    spec: &ReadSpec<'_>,
    sink: &mut dyn FnMut(RecordBatch) -> Result<()>,
) -> Result<ReadSummary> {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(spool).map_err(|e| not_parquet(spec, &e))?;
    let file_schema = builder.schema().clone();
    let columns = file_columns(spec, &file_schema)?;
    // The records a chunk's row groups hold, as its footer counts them: the chunks after it
    // were numbered by those counts.
    let footer_records: Option<u64> = row_groups.as_ref().map(|groups| {
        let metadata = builder.metadata();
        groups
            .iter()
            .map(|&g| u64::try_from(metadata.row_group(g).num_rows()).unwrap_or(0))
            .sum()
    });
    let builder = match row_groups {
        Some(row_groups) => builder.with_row_groups(row_groups),
        None => builder,
    };
    let reader = builder
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| not_parquet(spec, &e))?;

    let mut plan = spec.part.fixed().map(|head| head.plan.clone());
    // The last record read (they number the positions: a chunk starts after its file's earlier
    // row groups), and the records loaded (not set aside).
    let (mut rows, mut loaded) = (spec.part.lines_before(), 0u64);
    let mut positions = Vec::with_capacity(BATCH_ROWS);
    for batch in reader {
        let batch = batch.map_err(|e| {
            Error::malformed(spec.file, Some(Position::Record(rows + 1)), e.to_string())
        })?;
        if batch.num_rows() == 0 {
            continue;
        }
        if plan.is_none() {
            plan = Some(plan_for(spec, &columns, &file_schema)?);
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
    if let Some(counted) = footer_records {
        let read = rows - spec.part.lines_before();
        if read != counted {
            return Err(read_whole(
                spec,
                format!("a chunk's row groups held {read} records, its footer says {counted}"),
            ));
        }
    }
    let new_columns = match (&plan, spec.part.fixed()) {
        // A chunk without rows reports the columns the file's footer fixed.
        (None, Some(head)) => head.plan.new_columns.clone(),
        (plan, _) => plan
            .as_ref()
            .map(|p| p.new_columns.clone())
            .unwrap_or_default(),
    };
    Ok(ReadSummary {
        rows: loaded,
        columns,
        new_columns,
        ..Default::default()
    })
}

impl ParquetSlice {
    /// The bytes of the chunk's stream: its row groups', then the footer's.
    pub(crate) fn stream_bytes(&self) -> u64 {
        (self.data.1 - self.data.0) + (self.size - self.footer_start)
    }

    /// Where the file's byte `offset` is in the stream, and how many of the file's bytes from
    /// there the stream holds.
    fn locate(&self, offset: u64) -> std::result::Result<(u64, u64), ParquetError> {
        let (start, end) = self.data;
        if (self.footer_start..self.size).contains(&offset) {
            Ok((
                (end - start) + (offset - self.footer_start),
                self.size - offset,
            ))
        } else if (start..end).contains(&offset) {
            Ok((offset - start, end - offset))
        } else {
            Err(ParquetError::General(format!(
                "byte {offset} is outside the chunk's row groups ({start}..{end}) and the footer"
            )))
        }
    }
}

/// A chunk's spool, read at the file's offsets: a read that would leave the chunk's bytes
/// fails rather than read another part of the spool.
struct SlicedSpool {
    file: File,
    slice: ParquetSlice,
}

impl Length for SlicedSpool {
    fn len(&self) -> u64 {
        self.slice.size
    }
}

impl ChunkReader for SlicedSpool {
    type T = io::Take<BufReader<File>>;

    fn get_read(&self, start: u64) -> std::result::Result<Self::T, ParquetError> {
        let (at, held) = self.slice.locate(start)?;
        let mut file = self.file.try_clone()?;
        file.seek(SeekFrom::Start(at))?;
        Ok(BufReader::new(file).take(held))
    }

    fn get_bytes(&self, start: u64, length: usize) -> std::result::Result<Bytes, ParquetError> {
        if length == 0 {
            return Ok(Bytes::new());
        }
        let (at, held) = self.slice.locate(start)?;
        if length as u64 > held {
            return Err(ParquetError::General(format!(
                "bytes {start}..{} run past the chunk's bytes",
                start + length as u64
            )));
        }
        let mut bytes = vec![0u8; length];
        self.file.read_exact_at(&mut bytes, at)?;
        Ok(bytes.into())
    }
}
