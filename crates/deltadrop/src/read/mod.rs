//! Reading an incoming file as a stream of record batches shaped for the staging table.
//!
//! Runs on a blocking thread over a synchronous `Read`: decompression (by suffix), counting (and,
//! for a file without an upload id, hashing) the raw bytes, format parsing, and conforming every
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
    /// The feed the file belongs to: keys, CSV options, column types, limits.
    pub feed: &'a Feed,
    /// How to parse the decompressed bytes.
    pub format: FileFormat,
    /// How the stored bytes are compressed.
    pub compression: Compression,
    /// The target table's schema when the table exists.
    pub target: Option<SchemaRef>,
    /// Hash the stored bytes (SHA-256): the file's identity when its upload has no id. An upload
    /// with a version id, sequencer or ETag needs no hash, which was 8.5% of a stage's CPU.
    pub hash_content: bool,
}

/// What [`read_file`] found in the file.
#[derive(Debug, Clone, Default)]
pub struct ReadSummary {
    /// Records read (and handed to `sink`).
    pub rows: u64,
    /// Size of the object as stored (compressed).
    pub bytes: u64,
    /// SHA-256 of the object as stored, when [`ReadSpec::hash_content`] asked for it.
    pub sha256: Option<String>,
    /// The file's own columns, in file order.
    pub columns: Vec<String>,
    /// Columns the target table does not have (all of them for a new table).
    pub new_columns: Vec<String>,
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

/// Counts (and hashes, when asked) the raw bytes, and tags read errors as storage errors.
struct HashingReader<R> {
    inner: R,
    hasher: Option<Sha256>,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self
            .inner
            .read(buf)
            .map_err(|e| io::Error::other(SourceIoError(e)))?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
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
        hasher: spec.hash_content.then(Sha256::new),
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
    summary.sha256 = hashing.hasher.map(|h| hex::encode(h.finalize()));
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use deltalake::arrow::array::Array;
    use deltalake::arrow::datatypes::DataType;

    use super::*;
    use crate::config::test_feed as feed;

    /// Reads `bytes` as `file` of `feed`; the batches and the summary.
    fn read(bytes: &[u8], file: &str, feed: &Feed) -> Result<(Vec<RecordBatch>, ReadSummary)> {
        let spec = ReadSpec {
            file,
            feed,
            format: feed.format_for(file)?,
            compression: Compression::from_key(file),
            target: None,
            hash_content: false,
        };
        let mut batches = Vec::new();
        let summary = read_file(bytes, &spec, &mut |batch| {
            batches.push(batch);
            Ok(())
        })?;
        Ok((batches, summary))
    }

    #[test]
    fn csv_is_typed_from_a_sample_and_every_row_keeps_its_line() {
        let (batches, summary) = read(
            b"id,name,amount\n1,a,1.5\n2,\"b\nc\",2\n",
            "in/a.csv",
            &feed(""),
        )
        .unwrap();
        assert_eq!((summary.rows, summary.bytes), (2, 33));
        assert_eq!(summary.columns, ["id", "name", "amount"]);
        let schema = batches[0].schema();
        let types: Vec<&DataType> = schema.fields().iter().map(|f| f.data_type()).collect();
        assert_eq!(
            types,
            [
                &DataType::Int64,
                &DataType::Utf8,
                &DataType::Float64,
                &DataType::Int64
            ]
        );
        let lines = batches[0].column_by_name(LINE_COLUMN).unwrap();
        assert_eq!(
            format!("{lines:?}").replace(char::is_whitespace, ""),
            "PrimitiveArray<Int64>[2,3,]"
        );
    }

    #[test]
    fn the_stored_bytes_are_hashed_only_when_asked() {
        let feed = feed("");
        let gz = {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(b"id\n1\n").unwrap();
            e.finish().unwrap()
        };
        let mut spec = ReadSpec {
            file: "in/a.csv.gz",
            feed: &feed,
            format: FileFormat::Csv,
            compression: Compression::Gzip,
            target: None,
            hash_content: false,
        };
        let summary = read_file(&gz[..], &spec, &mut |_| Ok(())).unwrap();
        assert_eq!((summary.rows, summary.sha256), (1, None));
        spec.hash_content = true;
        let summary = read_file(&gz[..], &spec, &mut |_| Ok(())).unwrap();
        // The hash is of the stored (compressed) bytes, as `sha256sum` computes it.
        let expected = hex::encode(Sha256::digest(&gz));
        assert_eq!(summary.sha256.as_deref(), Some(expected.as_str()));
    }

    #[test]
    fn gzip_members_are_one_stream_and_json_nesting_is_kept_as_text() {
        use std::io::Write;
        let mut gz = Vec::new();
        for part in [
            "{\"id\": 1, \"tags\": [\"x\", {\"y\": 2}]}\n",
            "{\"id\": 2}\n",
        ] {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(part.as_bytes()).unwrap();
            gz.extend(encoder.finish().unwrap());
        }
        let (batches, summary) = read(&gz, "in/a.jsonl.gz", &feed("")).unwrap();
        assert_eq!(summary.rows, 2);
        let tags = batches[0].column_by_name("tags").unwrap();
        let tags = tags
            .as_any()
            .downcast_ref::<deltalake::arrow::array::StringArray>()
            .unwrap();
        assert_eq!(tags.value(0), r#"["x",{"y":2}]"#);
        assert!(tags.is_null(1));
    }

    #[test]
    fn limits_and_bad_bytes_fail_with_their_names() {
        let limited = feed("[feeds.limits]\nmax_columns = 2\nmax_line_mb = 1\n");
        let name = |bytes: &[u8], file: &str| read(bytes, file, &limited).unwrap_err().name();
        assert_eq!(name(b"id,a,b\n1,2,3\n", "in/a.csv"), "LimitExceeded");
        assert_eq!(name(&vec![b'x'; 2 << 20], "in/a.csv"), "LimitExceeded");
        assert_eq!(name(b"id\n1\0\n", "in/a.csv"), "MalformedFile");
        assert_eq!(name(b"id\n1\n", "in/a.csv.gz"), "MalformedFile");
        let error = read(
            b"{\"id\": 1, \"n\": [[[1]]]}\n",
            "in/a.jsonl",
            &feed("[feeds.limits]\nmax_nesting_depth = 2\n"),
        )
        .unwrap_err();
        assert_eq!(error.to_string(), "in/a.jsonl, line 1: a value nests objects and arrays more than 2 levels deep (the feed's limits.max_nesting_depth is 2; raise it if the file is genuine)");
    }
}
