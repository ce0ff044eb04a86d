//! Reading an incoming file as a stream of record batches shaped for the staging table.
//!
//! Runs on a blocking thread over a synchronous `Read`: decompression (by suffix), counting (and,
//! for a file without an upload id, hashing) the raw bytes, format parsing, and conforming every
//! batch to one [`plan::Plan`]. Batches go to `sink` as soon as they are full, so memory does
//! not grow with the file.

mod conform;
mod csv;
mod csv_fast;
mod expectations;
mod infer;
mod json;
mod limits;
mod parquet;
mod part;
mod plan;
mod set_aside;
mod text;

use std::io::{self, Read};

use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::record_batch::RecordBatch;
use sha2::{Digest, Sha256};

pub use conform::type_name;
pub use part::{ChunkSpec, HeadPlan, ParquetSlice, Part};
pub use plan::LINE_COLUMN;
pub use set_aside::SetAside;

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
    /// The rows set aside while reading (a feed with `on_bad_rows = "reject"`).
    pub rejects: SetAside,
    /// The whole file, its head, or a chunk of it.
    pub part: Part,
}

/// What [`read_file`] found in the file.
#[derive(Debug, Clone, Default)]
pub struct ReadSummary {
    /// Records read and handed to `sink` (not those set aside).
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

/// The bytes of `raw` decompressed as `compression` says (`file` names it in errors).
fn decompress<'r>(
    raw: impl Read + 'r,
    compression: Compression,
    file: &str,
) -> Result<Box<dyn Read + 'r>> {
    Ok(match compression {
        Compression::None => Box::new(raw),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(raw).map_err(|e| io_error(file, None, e))?)
        }
    })
}

/// The header record of `file`, a CSV file of `feed` (compressed as its name says), as the
/// feed's CSV writes it; `None` for a feed without headers or an empty file.
pub fn csv_header(raw: impl Read, file: &str, feed: &Feed) -> Result<Option<String>> {
    if !feed.csv.header {
        return Ok(None);
    }
    let input = decompress(raw, Compression::from_key(file), file)?;
    csv::header_text(input, file, &feed.csv)
}

/// Reads the whole file, handing conformed batches to `sink`; fails once it is read when the
/// rows it set aside or that broke an expectation are more than the feed allows
/// ([`SetAside::verdict`]).
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
    let mut summary = parse(&mut hashing, spec, sink)?;
    // The identity covers every byte, even what a decoder left unread after the data ended.
    io::copy(&mut hashing, &mut io::sink()).map_err(|e| io_error(spec.file, None, e))?;
    summary.bytes = hashing.bytes;
    summary.sha256 = hashing.hasher.map(|h| hex::encode(h.finalize()));
    // Rows set aside or broken past what the feed allows fail the file, once it is read whole.
    spec.rejects.verdict(spec, summary.rows)?;
    Ok(summary)
}

/// Decompresses, guards and parses `raw` as the spec says, handing batches to `sink`.
fn parse(
    raw: impl Read,
    spec: &ReadSpec<'_>,
    sink: &mut dyn FnMut(RecordBatch) -> Result<()>,
) -> Result<ReadSummary> {
    let decompressed = decompress(raw, spec.compression, spec.file)?;
    let text = spec.format != FileFormat::Parquet;
    let first_line = spec.part.lines_before() + 1;
    let decompressed = limits::Guarded::new(decompressed, &spec.feed.limits, text, first_line);
    match spec.format {
        FileFormat::Csv => csv::read(decompressed, spec, sink),
        FileFormat::Jsonl => json::read_lines(decompressed, spec, sink),
        FileFormat::Json => json::read_array(decompressed, spec, sink),
        FileFormat::Parquet => parquet::read(decompressed, spec, sink),
    }
}

/// Reads the head of a CSV or JSON lines file until its sample fixes the plan, exactly as
/// [`read_file`] would fix it, and stops there: the plan every chunk of the split file is read
/// with. `spec.part` must be [`Part::Head`]. `None` for a file without records.
pub fn read_head(raw: impl Read, spec: &ReadSpec<'_>) -> Result<Option<HeadPlan>> {
    let Part::Head(found) = &spec.part else {
        return Err(Error::internal("read_head needs a spec for the head"));
    };
    // The batcher stops the read with an error once the plan is fixed (text.rs).
    let read = parse(raw, spec, &mut |_| Ok(()));
    match found.get() {
        Some(head) => Ok(Some(head.clone())),
        None => read.map(|_| None),
    }
}

/// The plan the chunks of a Parquet file split by row group are read with, from its footer's
/// `metadata`: the one [`read_file`] makes at the file's first row.
pub fn read_parquet_head(
    metadata: std::sync::Arc<deltalake::parquet::file::metadata::ParquetMetaData>,
    spec: &ReadSpec<'_>,
) -> Result<HeadPlan> {
    parquet::footer_head(metadata, spec)
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
            rejects: SetAside::default(),
            part: Part::Whole,
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
            rejects: SetAside::default(),
            part: Part::Whole,
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

    /// Reads `bytes` as `file` of `feed`: the rows loaded (`id` values), the rejects file's
    /// lines, or the error.
    fn read_rejecting(
        bytes: &[u8],
        file: &str,
        feed: &Feed,
    ) -> (Result<Vec<String>>, Vec<crate::rejects::RejectedRow>) {
        let spec = ReadSpec {
            file,
            feed,
            format: feed.format_for(file).unwrap(),
            compression: Compression::from_key(file),
            target: None,
            hash_content: false,
            rejects: SetAside::default(),
            part: Part::Whole,
        };
        let mut ids = Vec::new();
        let read = read_file(bytes, &spec, &mut |batch| {
            let column = batch.column_by_name("id").unwrap();
            let formatter = deltalake::arrow::util::display::ArrayFormatter::try_new(
                column.as_ref(),
                &Default::default(),
            )
            .unwrap();
            ids.extend((0..batch.num_rows()).map(|i| formatter.value(i).to_string()));
            Ok(())
        })
        .map(|summary| {
            assert_eq!(summary.rows, ids.len() as u64);
            ids
        });
        let lines = spec
            .rejects
            .into_file("")
            .unwrap()
            .map_or(Vec::new(), |(lines, summary)| {
                let rows: Vec<crate::rejects::RejectedRow> = String::from_utf8(lines)
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
                assert_eq!(summary.rows, rows.len() as u64);
                rows
            });
        (read, lines)
    }

    fn positions(rows: &[crate::rejects::RejectedRow]) -> Vec<(String, String)> {
        rows.iter()
            .map(|r| (r.position.to_string(), r.error.clone()))
            .collect()
    }

    #[test]
    fn bad_csv_rows_are_set_aside_with_their_lines_and_records_and_the_rest_loads() {
        let rejecting = feed("on_bad_rows = \"reject\"\nmax_rejected_percent = 100\n[feeds.column_types]\namount = \"double\"\n");
        let file =
            "id,name,amount\n1,a,1.5\n2,\"b,c\",12;5\n,nokey,3\n4,d,4,extra\n5,\"multi\nline\",5\n";
        let (read, rejected) = read_rejecting(file.as_bytes(), "in/a.csv", &rejecting);
        assert_eq!(read.unwrap(), ["1", "5"]);
        assert_eq!(
            positions(&rejected),
            [
                ("line 3".into(), "InvalidValue".into()),
                ("line 4".into(), "NullKey".into()),
                ("line 5".into(), "MalformedFile".into()),
            ]
        );
        assert_eq!(
            rejected[0].raw, "2,\"b,c\",12;5",
            "the record, quoted as needed"
        );
        assert_eq!(
            (rejected[0].column.as_deref(), rejected[0].value.as_deref()),
            (Some("amount"), Some("12;5"))
        );
        assert_eq!(rejected[1].raw, ",nokey,3");
        assert_eq!(rejected[2].raw, "4,d,4,extra");
        assert_eq!(
            rejected[2].message,
            "in/a.csv, line 5: expected 3 fields, found 4"
        );

        // The same file fails at its first bad row when the feed fails on bad rows: the ragged
        // record, met before the batch's values are typed.
        let failing = feed("[feeds.column_types]\namount = \"double\"\n");
        let (read, rejected) = read_rejecting(file.as_bytes(), "in/a.csv", &failing);
        assert_eq!(
            read.unwrap_err().to_string(),
            "in/a.csv, line 5: expected 3 fields, found 4"
        );
        assert!(rejected.is_empty());
    }

    #[test]
    fn bad_rows_deep_in_a_large_csv_are_set_aside_with_their_exact_lines() {
        // Past the sample, the fast path reads whole batches; a batch with a bad row is read
        // again on the exact path, which sets the row aside under its real line number even
        // after a quoted field that spans lines.
        let mut file = String::from("id,note,amount\n");
        let mut line = 1;
        let mut expected = Vec::new();
        for id in 0..40_000u64 {
            line += 1;
            match id {
                19_990 => file.push_str(&format!("{id},\"two\nlines\",1\n")),
                20_000 => {
                    file.push_str(&format!("{id},ragged\n"));
                    expected.push((format!("line {line}"), "MalformedFile".to_string()));
                }
                30_000 => {
                    file.push_str(&format!("{id},x,not-a-number\n"));
                    expected.push((format!("line {line}"), "InvalidValue".to_string()));
                }
                35_000 => {
                    file.push_str(&format!("{id},x,999999\n"));
                    expected.push((format!("line {line}"), "ExpectationFailed".to_string()));
                }
                39_995 => {
                    file.push_str(&format!("{id},ragged\n"));
                    expected.push((format!("line {line}"), "MalformedFile".to_string()));
                }
                _ => file.push_str(&format!("{id},x,{id}\n")),
            }
            if id == 19_990 {
                line += 1;
            }
        }
        // Two expectations: a value over 100,000 is set aside; one over 10,000 loads with a
        // warning. The fast path reads the second batch of 8,192 records (ids 8,192 to 16,383)
        // and counts its warnings itself (a line per record there); the third batch holds the
        // quoted field that spans two lines and the first ragged record, so it and the rest of
        // the file go through the exact path. Every warning is counted once, with its line.
        let feed = feed(
            "on_bad_rows = \"reject\"\n\
             [[feeds.expect]]\nname = \"small\"\ncolumn = \"amount\"\nmax = 100000\naction = \"reject\"\n\
             [[feeds.expect]]\nname = \"big\"\ncolumn = \"amount\"\nmax = 10000\naction = \"warn\"\n",
        );
        let spec = ReadSpec {
            file: "in/a.csv",
            feed: &feed,
            format: FileFormat::Csv,
            compression: Compression::None,
            target: None,
            hash_content: false,
            rejects: SetAside::default(),
            part: Part::Whole,
        };
        let summary = read_file(file.as_bytes(), &spec, &mut |_| Ok(())).unwrap();
        assert_eq!(summary.rows, 39_996);
        let outcomes: Vec<(String, u64, Vec<String>)> = spec
            .rejects
            .expectations()
            .into_iter()
            .map(|o| (o.name, o.rows, o.first))
            .collect();
        // Ids 10,001 to 39,999 but 19,990 (amount 1), the two ragged ones, the one that is not a
        // number and the one set aside for `small`.
        let first: Vec<String> = (10_003..10_008)
            .map(|line| format!("line {line}: \"{}\"", line - 2))
            .collect();
        assert_eq!(
            outcomes,
            [
                (
                    "small".to_string(),
                    1,
                    vec!["line 35003: \"999999\"".to_string()]
                ),
                ("big".to_string(), 29_999 - 5, first),
            ]
        );
        let (lines, _) = spec.rejects.into_file("").unwrap().unwrap();
        let rejected: Vec<crate::rejects::RejectedRow> = String::from_utf8(lines)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(positions(&rejected), expected);
        assert_eq!(rejected[0].raw, "20000,ragged");
        assert_eq!(rejected[2].rule.as_deref(), Some("small"));
    }

    #[test]
    fn expectations_set_rows_aside_warn_about_them_or_fail_the_file() {
        let expect = |name: &str, column: &str, rule: &str, action: &str| {
            format!("[[feeds.expect]]\nname = \"{name}\"\ncolumn = \"{column}\"\n{rule}\naction = \"{action}\"\n")
        };
        let rules = [
            expect("amount_positive", "amount", "min = 0", "reject"),
            expect(
                "known_status",
                "status",
                "one_of = [\"new\", \"paid\"]",
                "warn",
            ),
            expect("code_shape", "code", "matches = \"[A-Z]{3}\"", "warn"),
            expect("unique_code", "code", "unique = true", "reject"),
            expect("recent", "day", "min = 2020-01-01", "warn"),
            expect("short_status", "status", "max_length = 4", "warn"),
            expect("has_status", "status", "not_null = true", "warn"),
        ]
        .concat();
        let checked = feed(&format!(
            "on_bad_rows = \"reject\"\nmax_rejected_percent = 100\n[feeds.column_types]\namount = \"double\"\nday = \"date\"\n{rules}"
        ));
        let file = "id,amount,status,code,day\n\
                    1,10,new,ABC,2021-01-01\n\
                    2,-5,new,ABD,2021-01-01\n\
                    3,7,lost,ABE,2019-05-05\n\
                    4,8,paid,abc,2021-01-01\n\
                    5,9,paid,ABC,2021-01-01\n\
                    6,1,pending,ABF,2021-01-01\n\
                    7,2,,ABG,2021-01-01\n\
                    8,x,new,ABH,2021-01-01\n\
                    9,3,new,ABH,2021-01-01\n";
        let spec = ReadSpec {
            file: "in/a.csv",
            feed: &checked,
            format: FileFormat::Csv,
            compression: Compression::None,
            target: None,
            hash_content: false,
            rejects: SetAside::default(),
            part: Part::Whole,
        };
        let mut ids = Vec::new();
        read_file(file.as_bytes(), &spec, &mut |batch| {
            let column = batch.column_by_name("id").unwrap();
            let column = column
                .as_any()
                .downcast_ref::<deltalake::arrow::array::Int64Array>()
                .unwrap();
            ids.extend(column.values().iter().copied());
            Ok(())
        })
        .unwrap();
        // Line 9 is set aside for its amount, so its code is not seen: line 10's is unique.
        assert_eq!(ids, [1, 3, 4, 6, 7, 9]);
        let outcomes: Vec<(String, u64, Vec<String>)> = spec
            .rejects
            .expectations()
            .into_iter()
            .map(|o| (o.name, o.rows, o.first))
            .collect();
        let outcome = |name: &str, rows: u64, first: &[&str]| {
            (
                name.to_string(),
                rows,
                first.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            outcomes,
            [
                outcome("amount_positive", 1, &["line 3: \"-5\""]),
                outcome(
                    "known_status",
                    2,
                    &["line 4: \"lost\"", "line 7: \"pending\""]
                ),
                outcome("code_shape", 1, &["line 5: \"abc\""]),
                outcome("unique_code", 1, &["line 6: \"ABC\""]),
                outcome("recent", 1, &["line 4: \"2019-05-05\""]),
                outcome("short_status", 1, &["line 7: \"pending\""]),
                outcome("has_status", 1, &["line 8: null"]),
            ],
            "a warning counts the rows loaded that broke it, a reject the rows set aside for it"
        );
        let (lines, summary) = spec.rejects.into_file("").unwrap().unwrap();
        assert_eq!(summary.by_reason["ExpectationFailed"], 2);
        assert_eq!(summary.by_reason["InvalidValue"], 1);
        let rejected: Vec<crate::rejects::RejectedRow> = String::from_utf8(lines)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let rules: Vec<(String, Option<String>)> = rejected
            .iter()
            .map(|r| (r.position.to_string(), r.rule.clone()))
            .collect();
        assert_eq!(
            rules,
            [
                ("line 3".to_string(), Some("amount_positive".to_string())),
                ("line 6".to_string(), Some("unique_code".to_string())),
                ("line 9".to_string(), None),
            ]
        );
        assert_eq!(rejected[0].message, "in/a.csv, line 3, column 'amount': value \"-5\" breaks the expectation 'amount_positive' (min = 0)");
        assert_eq!(rejected[0].raw, "2,-5,new,ABD,2021-01-01");

        // The action fail: the file fails after it was read, naming the rule, the count and
        // the first rows.
        let failing = feed(&expect("has_status", "status", "not_null = true", "fail"));
        let spec = ReadSpec {
            feed: &failing,
            rejects: SetAside::default(),
            ..spec
        };
        let error = read_file(file.as_bytes(), &spec, &mut |_| Ok(())).unwrap_err();
        assert_eq!(
            error.to_string(),
            "in/a.csv: 1 row(s) break the expectation 'has_status' (not_null); nothing was loaded; the first: line 8: null"
        );
        // A rule that does not fit the column's type is refused by name.
        let misfit = feed(&expect("short", "id", "max_length = 3", "warn"));
        let spec = ReadSpec {
            feed: &misfit,
            rejects: SetAside::default(),
            ..spec
        };
        let error = read_file(file.as_bytes(), &spec, &mut |_| Ok(())).unwrap_err();
        assert_eq!(error.name(), "ConfigError");
        assert!(
            error.to_string().contains("expectation \"short\""),
            "{error}"
        );
    }

    #[test]
    fn malformed_json_lines_are_set_aside_as_they_were_written() {
        let feed = feed("on_bad_rows = \"reject\"\nmax_rejected_percent = 100\n[feeds.column_types]\nid = \"long\"\n");
        let file = "{\"id\": 1}\n{\"id\": 2,\n[1, 2]\n{\"id\": \"x\"}\n{\"id\": 5}\n";
        let (read, rejected) = read_rejecting(file.as_bytes(), "in/a.jsonl", &feed);
        assert_eq!(read.unwrap(), ["1", "5"]);
        assert_eq!(
            positions(&rejected),
            [
                ("line 2".into(), "MalformedFile".into()),
                ("line 3".into(), "MalformedFile".into()),
                ("line 4".into(), "InvalidValue".into()),
            ]
        );
        assert_eq!(rejected[0].raw, "{\"id\": 2,");
        assert_eq!(rejected[1].raw, "[1, 2]");
        assert_eq!(rejected[2].raw, "{\"id\":\"x\"}");
        // Bytes that are not text still fail the file.
        let (read, _) = read_rejecting(b"{\"id\": 1}\n{\"id\": \"\xff\"}\n", "in/a.jsonl", &feed);
        assert_eq!(read.unwrap_err().name(), "MalformedFile");
    }

    #[test]
    fn too_many_bad_rows_fail_the_file_and_keep_what_was_found() {
        let bad = |n: usize| {
            let mut file = String::from("id,amount\n");
            for id in 0..100 {
                let amount = if id < n {
                    "x".to_string()
                } else {
                    id.to_string()
                };
                file.push_str(&format!("{id},{amount}\n"));
            }
            file
        };
        let few = feed("on_bad_rows = \"reject\"\nmax_rejected_rows = 3\n[feeds.column_types]\namount = \"long\"\n");
        let (read, rejected) = read_rejecting(bad(3).as_bytes(), "in/a.csv", &few);
        assert_eq!(read.unwrap().len(), 97);
        assert_eq!(rejected.len(), 3);

        let (read, rejected) = read_rejecting(bad(5).as_bytes(), "in/a.csv", &few);
        let error = read.unwrap_err();
        assert_eq!(error.name(), "TooManyBadRows");
        assert!(
            error.to_string().starts_with("in/a.csv: 4 bad row(s), more than the feed's max_rejected_rows (3); reading stopped there; nothing was loaded; the first: line 2: InvalidValue:"),
            "{error}"
        );
        assert_eq!(rejected.len(), 4, "the rows found until it stopped");

        let share = feed("on_bad_rows = \"reject\"\nmax_rejected_percent = 2.5\n[feeds.column_types]\namount = \"long\"\n");
        let (read, _) = read_rejecting(bad(2).as_bytes(), "in/a.csv", &share);
        assert_eq!(read.unwrap().len(), 98, "2% of the rows");
        let (read, rejected) = read_rejecting(bad(3).as_bytes(), "in/a.csv", &share);
        let error = read.unwrap_err();
        assert!(
            error.to_string().contains("3 bad row(s), 3.0% of its 100 rows, more than the feed's max_rejected_percent (2.5%)"),
            "{error}"
        );
        assert_eq!(rejected.len(), 3);
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
