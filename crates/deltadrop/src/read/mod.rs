//! Reading an incoming file as a stream of record batches shaped for the staging table.
//!
//! Runs on a blocking thread over a synchronous `Read`: decompression (by suffix), hashing of
//! the raw bytes (the file's identity for exactly-once), format parsing, and conforming every
//! batch to one [`plan::Plan`]. Batches go to `sink` as soon as they are full, so memory does
//! not grow with the file.

mod conform;
mod csv;
mod csv_fast;
mod infer;
mod json;
mod limits;
mod parquet;
mod plan;
mod text;

use std::io::{self, Read};

use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::record_batch::RecordBatch;
use sha2::{Digest, Sha256};

pub use conform::type_name;
pub use plan::LINE_COLUMN;

use crate::config::{Compression, Feed, FileFormat};
use crate::error::{Error, Position, Result};

/// Rows per record batch.
pub const BATCH_ROWS: usize = 8192;

/// What to read and what it must fit.
pub struct ReadSpec<'a> {
    /// The key, for messages.
    pub file: &'a str,
    pub feed: &'a Feed,
    pub format: FileFormat,
    pub compression: Compression,
    /// The target table's schema when the table exists.
    pub target: Option<SchemaRef>,
}

#[derive(Debug, Clone, Default)]
pub struct ReadSummary {
    pub rows: u64,
    /// Size of the object as stored (compressed).
    pub bytes: u64,
    /// SHA-256 of the object as stored.
    pub sha256: String,
    /// The file's own columns, in file order.
    pub columns: Vec<String>,
    /// Columns the target table does not have (all of them for a new table).
    pub new_columns: Vec<String>,
    /// The staging schema, once at least one row was read.
    pub schema: Option<SchemaRef>,
}

/// Marks I/O errors that come from the storage (transient), as opposed to the file's content.
#[derive(Debug)]
pub struct SourceIoError(pub io::Error);

impl std::fmt::Display for SourceIoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
impl std::error::Error for SourceIoError {}

/// Hashes and counts the raw bytes, and tags read errors as storage errors.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self
            .inner
            .read(buf)
            .map_err(|e| io::Error::other(SourceIoError(e)))?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Turns an I/O error met while parsing into a storage error (the bucket failed) or a malformed
/// file (decompression or decoding failed).
pub(crate) fn io_error(file: &str, position: Option<Position>, err: io::Error) -> Error {
    if let Some(crossed) = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<limits::Crossed>())
    {
        return crossed.clone().into_error(file, position);
    }
    let source_failed = err
        .get_ref()
        .is_some_and(|inner| inner.is::<SourceIoError>());
    if source_failed {
        Error::storage(file, err)
    } else if err.kind() == io::ErrorKind::UnexpectedEof {
        Error::malformed(
            file,
            position,
            format!("the file ends too early (truncated?): {err}"),
        )
    } else {
        Error::malformed(file, position, err.to_string())
    }
}

/// Reads the whole file, handing conformed batches to `sink`.
pub fn read_file(
    raw: impl Read,
    spec: &ReadSpec<'_>,
    sink: &mut dyn FnMut(RecordBatch) -> Result<()>,
) -> Result<ReadSummary> {
    let mut hashing = HashingReader {
        inner: raw,
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut summary = {
        let decompressed: Box<dyn Read + '_> = match spec.compression {
            Compression::None => Box::new(&mut hashing),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut hashing)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::new(&mut hashing)
                    .map_err(|e| io_error(spec.file, None, e))?,
            ),
        };
        let text = spec.format != FileFormat::Parquet;
        let decompressed = limits::Guarded::new(decompressed, &spec.feed.limits, text);
        match spec.format {
            FileFormat::Csv => csv::read(decompressed, spec, sink)?,
            FileFormat::Jsonl => json::read_lines(decompressed, spec, sink)?,
            FileFormat::Json => json::read_array(decompressed, spec, sink)?,
            FileFormat::Parquet => parquet::read(decompressed, spec, sink)?,
        }
    };
    // The identity covers every byte, even what a decoder left unread after the data ended.
    io::copy(&mut hashing, &mut io::sink()).map_err(|e| io_error(spec.file, None, e))?;
    summary.bytes = hashing.bytes;
    summary.sha256 = hex::encode(hashing.hasher.finalize());
    Ok(summary)
}
