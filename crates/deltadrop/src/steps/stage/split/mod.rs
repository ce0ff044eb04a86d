//! Staging one large file in parallel chunks (`deltadrop run --workers N`).
//!
//! The file is cut into byte ranges, each aligned to line starts by the chunk that reads it
//! ([`ranges`]). A first pass counts each range's newlines, so that every chunk knows the line
//! it starts on. Each chunk is then read by its own worker with the plan the file's head fixed
//! (columns and types, [`crate::read::read_head`]) and the file's real line numbers, and its rows
//! are written as Parquet files of the run's staging table without a commit; one commit adds
//! them all. The staging table holds the same rows, types and lines as the one-worker stage
//! writes, and an error names the same line (tests/pipeline/split.rs).
//!
//! Only what splits at line ends is split: an uncompressed CSV or JSON lines file with an upload
//! id (a content hash cannot be computed in parts), of a feed without a `unique` expectation
//! (which needs every value of the file). The file is read whole instead when a chunk finds a
//! record over several lines (a quoted CSV field with a line break: `Unsplittable`), or when the
//! file has more bad rows than the feed allows (the whole read stops where it always stops).
//! Below the thresholds, the rows the chunks set aside and what their expectations found are put
//! together in file order: one rejects file, the whole read's.

mod ranges;

use std::io::{Cursor, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::Add;
use deltalake::writer::DeltaWriter;
use deltalake::DeltaTable;
use futures::stream::{self, StreamExt, TryStreamExt};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;

use self::ranges::{byte_ranges, count_lines, first_lines, AlignedLines, RangeLines};
use super::write::{commit_files, keep_rejects, remove, staging_commit_info, StagingLayout};
use super::StageOutput;
use crate::bounded::listed;
use crate::config::{Compression, Feed, FileFormat};
use crate::delta::{arrow_schema, TableLocation};
use crate::environment::{Environment, Split};
use crate::error::{Error, ErrorKind, Result};
use crate::read::{read_file, read_head, ChunkSpec, HeadPlan, Part, ReadSpec, SetAside};
use crate::steps::upsert::identity_of;
use crate::steps::RunInput;

/// Stages `run`'s file in chunks when it is large and splittable; `None` (nothing staged) when
/// it must be read whole.
pub async fn stage_in_chunks(
    env: &Environment,
    run: &RunInput,
    split: &Split,
) -> Result<Option<StageOutput>> {
    let feed = env.config.feed_named(&run.feed)?;
    let format = feed.format_for(&run.key)?;
    let Some(size) = splittable_size(env, run, feed, format, split).await? else {
        return Ok(None);
    };
    let target = env.table(&feed.table)?;
    let target_schema = match target.open().await? {
        Some(table) => Some(arrow_schema(&table)?),
        None => None,
    };
    let file = Arc::new(FileToSplit {
        env: env.clone(),
        run: run.clone(),
        feed: Arc::new(feed.clone()),
        format,
        target_schema,
        staging: env.staging_table(&run.run_id)?,
        stop: AtomicBool::new(false),
    });
    // A head that cannot be read (or a file without records) is the whole read's to report.
    let Ok(Some(head)) = file.head().await else {
        return Ok(None);
    };
    let header = match file.header_line(size).await? {
        Header::Splittable(header) => header,
        Header::OverSeveralLines => return Ok(None),
    };

    let ranges = byte_ranges(size, split.chunk_bytes);
    let counts: Vec<RangeLines> = stream::iter(ranges.iter().copied())
        .map(|range| file.count_lines(range))
        .buffered(split.workers.max(1))
        .try_collect()
        .await?;
    let chunks: Vec<Chunk> = ranges
        .iter()
        .zip(first_lines(&counts))
        .enumerate()
        .map(|(index, (&(start, end), first_line))| Chunk {
            start,
            end,
            size,
            // The first chunk is the file's start, header included; the others get the header
            // put before their lines.
            header: (index > 0).then(|| header.clone()).flatten(),
            first_line,
        })
        .collect();

    let staging = &file.staging;
    let table = staging
        .create(&head.plan.schema, &[], staging_commit_info(run))
        .await?;
    // Each chunk is its own task, so that the chunks' Parquet encoding runs in parallel too.
    let staged: Vec<ChunkOutput> = stream::iter(chunks)
        .map(|chunk| {
            let (file, table, head) = (file.clone(), table.clone(), head.clone());
            tokio::spawn(async move { file.stage_chunk(&table, &head, chunk).await })
        })
        .buffered(split.workers.max(1))
        .map(|joined| {
            joined.unwrap_or_else(|e| {
                ChunkOutput::failed(Error::internal(format!("a chunk's task stopped: {e}")))
            })
        })
        .collect()
        .await;
    let count = staged.len() as u64;
    let verdict = |set_aside: &SetAside, loaded: u64| {
        if set_aside.rows() > feed.max_rejected_rows {
            return Err(Error::internal("more rows set aside than the feed allows"));
        }
        file.spec(Part::Whole)
            .read(|spec| set_aside.verdict(&spec, loaded))
    };
    let staged = match settle(staged, verdict) {
        Settled::Staged(staged) => staged,
        Settled::ReadWhole => {
            remove(staging).await;
            return Ok(None);
        }
        Settled::Failed(e) => {
            remove(staging).await;
            return Err(e);
        }
    };
    let expectations = staged.set_aside.expectations();
    let upload = identity_of(run, None).unwrap_or_default();
    let committed = match staged.set_aside.into_file(&upload) {
        Ok(rejected) => match keep_rejects(env, run, rejected).await {
            Ok(rejects) => commit_files(&table, staged.files, staging)
                .await
                .map(|()| rejects),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let rejects = match committed {
        Ok(rejects) => rejects,
        Err(e) => {
            remove(staging).await;
            return Err(e);
        }
    };
    tracing::info!(chunks = count, rows = staged.rows, "staged in chunks");
    Ok(Some(StageOutput {
        rows: staged.rows,
        bytes: size,
        sha256: None,
        columns: listed(head.columns()),
        column_count: head.columns().len() as u64,
        new_columns: listed(head.new_columns()),
        new_column_count: head.new_columns().len() as u64,
        staging_table: Some(staging.name()),
        // The rows are written as a MERGE source; the upsert checks the keys for repeats.
        written_for_a_new_table: false,
        keys_strictly_increasing: false,
        lane: crate::storage::lane_id(&target.name()),
        target_table: target.name(),
        rejects,
        expectations,
        chunks: Some(count),
    }))
}

/// The file's size when it is to be split: large enough for two chunks, in a format whose
/// records are lines, uncompressed, with an upload id, of a feed whose checks work chunk by
/// chunk.
async fn splittable_size(
    env: &Environment,
    run: &RunInput,
    feed: &Feed,
    format: FileFormat,
    split: &Split,
) -> Result<Option<u64>> {
    let splittable = matches!(format, FileFormat::Csv | FileFormat::Jsonl)
        && Compression::from_key(&run.key) == Compression::None
        && !run.upload.id().is_empty()
        && !feed.expect.iter().any(|e| e.unique)
        && split.workers > 1;
    if !splittable {
        return Ok(None);
    }
    let Some(size) = env.storage.size(&run.key).await? else {
        return Ok(None); // the whole read names the missing object
    };
    let large =
        size >= split.chunk_bytes.saturating_mul(2) && size <= feed.limits.max_decompressed_bytes();
    Ok(large.then_some(size))
}

/// The file being split, and what each of its reads needs.
struct FileToSplit {
    env: Environment,
    run: RunInput,
    feed: Arc<Feed>,
    format: FileFormat,
    target_schema: Option<SchemaRef>,
    /// The run's staging table, which the chunks write into.
    staging: TableLocation,
    /// Set once a chunk failed or found the file must be read whole: the chunks after it are
    /// not read (every chunk that starts later has a higher index, so the failed one decides).
    stop: AtomicBool,
}

/// A CSV file's header line, put before every chunk but the first.
enum Header {
    /// The header's bytes with their line end (`None`: a file without a header, or JSON lines).
    Splittable(Option<Vec<u8>>),
    /// The header record runs over several lines.
    OverSeveralLines,
}

/// One chunk: the lines that start in the bytes `start..end` of a file of `size` bytes.
struct Chunk {
    start: u64,
    end: u64,
    size: u64,
    header: Option<Vec<u8>>,
    /// The file line of the chunk's first line.
    first_line: u64,
}

/// What one chunk's worker did.
struct ChunkOutput {
    rows: u64,
    /// Its Parquet files in the staging table's folder, not committed.
    files: Vec<Add>,
    /// The rows it set aside, and what the expectations found in it.
    set_aside: SetAside,
    error: Option<Error>,
}

impl ChunkOutput {
    fn failed(error: Error) -> ChunkOutput {
        ChunkOutput {
            rows: 0,
            files: Vec::new(),
            set_aside: SetAside::default(),
            error: Some(error),
        }
    }
}

impl FileToSplit {
    /// A read spec for `part` of the file.
    fn spec(&self, part: Part) -> OwnedSpec {
        OwnedSpec {
            key: self.run.key.clone(),
            feed: self.feed.clone(),
            format: self.format,
            target: self.target_schema.clone(),
            part,
        }
    }

    /// The plan the file's head fixes, as the whole read fixes it.
    async fn head(&self) -> Result<Option<HeadPlan>> {
        let reader = SyncIoBridge::new(
            self.env
                .storage
                .reader(&self.run.key, &self.run.upload)
                .await?,
        );
        let spec = self.spec(Part::Head(Default::default()));
        tokio::task::spawn_blocking(move || spec.read(|spec| read_head(reader, &spec)))
            .await
            .map_err(|e| Error::internal(format!("the head's reader stopped: {e}")))?
    }

    /// The header line of a CSV file with a header, which must be one record: a quoted field
    /// still open at the line's end runs over to the next line.
    async fn header_line(&self, size: u64) -> Result<Header> {
        if self.format != FileFormat::Csv || !self.feed.csv.header {
            return Ok(Header::Splittable(None));
        }
        let reader = self
            .env
            .storage
            .range_reader(&self.run.key, &self.run.upload, 0, size)
            .await?;
        let mut line = Vec::new();
        tokio::io::BufReader::new(reader)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| Error::storage(self.env.storage.display(&self.run.key), e))?;
        let mut header = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(self.feed.csv.delimiter_byte())
            .quote(self.feed.csv.quote_byte())
            .from_reader(line.as_slice());
        let mut record = ::csv::ByteRecord::new();
        // At the end of its input inside quotes, the parser ends the field with the line break.
        let one_line = matches!(header.read_byte_record(&mut record), Ok(true))
            && !record.iter().any(|field| field.contains(&b'\n'));
        Ok(if one_line {
            Header::Splittable(Some(line))
        } else {
            Header::OverSeveralLines
        })
    }

    /// The first pass: the newlines of the bytes `start..end`.
    async fn count_lines(&self, (start, end): (u64, u64)) -> Result<RangeLines> {
        let reader = self
            .env
            .storage
            .range_reader(&self.run.key, &self.run.upload, start, end)
            .await?;
        let bytes = SyncIoBridge::new(reader);
        let display = self.env.storage.display(&self.run.key);
        tokio::task::spawn_blocking(move || count_lines(bytes))
            .await
            .map_err(|e| Error::internal(format!("a line counter stopped: {e}")))?
            .map_err(|e| Error::storage(display, e))
    }

    /// Reads one chunk and writes its rows as uncommitted files of the staging `table`.
    async fn stage_chunk(&self, table: &DeltaTable, head: &HeadPlan, chunk: Chunk) -> ChunkOutput {
        if self.stop.load(Ordering::SeqCst) {
            return ChunkOutput::failed(Error::internal("not read: an earlier chunk decided"));
        }
        let output = match self.read_and_write(table, head, chunk).await {
            Ok(output) => output,
            Err(error) => ChunkOutput::failed(error),
        };
        if output.error.is_some() {
            self.stop.store(true, Ordering::SeqCst);
        }
        output
    }

    async fn read_and_write(
        &self,
        table: &DeltaTable,
        head: &HeadPlan,
        chunk: Chunk,
    ) -> Result<ChunkOutput> {
        let stream_start = AlignedLines::<std::io::Empty>::stream_start(chunk.start);
        let reader = self
            .env
            .storage
            .range_reader(&self.run.key, &self.run.upload, stream_start, chunk.size)
            .await?;
        let lines = AlignedLines::new(SyncIoBridge::new(reader), chunk.start, chunk.end);
        // The stream's first line is the header when one is put before the chunk.
        let stream_lines_before_chunk = if chunk.header.is_some() { 2 } else { 1 };
        let bytes = Cursor::new(chunk.header.unwrap_or_default()).chain(lines);
        let spec = self.spec(Part::Chunk(ChunkSpec {
            head: head.clone(),
            lines_before: chunk.first_line - stream_lines_before_chunk,
        }));

        let (sender, mut receiver) = mpsc::channel::<RecordBatch>(2);
        let reading = tokio::task::spawn_blocking(move || {
            spec.read(|spec| {
                let read = read_file(bytes, &spec, &mut |batch| {
                    sender
                        .blocking_send(batch)
                        .map_err(|_| Error::internal("the chunk's writer stopped"))
                });
                (read, spec.rejects)
            })
        });
        let writing = async {
            let error = |e: deltalake::DeltaTableError| Error::delta(self.staging.name(), e);
            let mut writer = StagingLayout::MergeSource.writer(table, &self.staging)?;
            while let Some(batch) = receiver.recv().await {
                writer.write(batch).await.map_err(error)?;
            }
            writer.flush().await.map_err(error)
        };
        let (read, written) = tokio::join!(reading, writing);
        let (read, set_aside) =
            read.map_err(|e| Error::internal(format!("a chunk's reader stopped: {e}")))?;
        // A writer that stops closes the channel, which the reader sees as its own error; a
        // record over several lines is the reader's to tell, whatever the writer did.
        let read = match read {
            Err(e) if e.kind() == ErrorKind::Unsplittable => return Err(e),
            read => read,
        };
        let files = written?;
        let rows = read?.rows;
        Ok(ChunkOutput {
            rows,
            files,
            set_aside,
            error: None,
        })
    }
}

/// A [`ReadSpec`]'s parts, owned, to move into a blocking reader.
struct OwnedSpec {
    key: String,
    feed: Arc<Feed>,
    format: FileFormat,
    target: Option<SchemaRef>,
    part: Part,
}

impl OwnedSpec {
    /// Runs `read` with the spec (an uncompressed file with an upload id: no hash).
    fn read<T>(self, read: impl FnOnce(ReadSpec<'_>) -> T) -> T {
        read(ReadSpec {
            file: &self.key,
            feed: &self.feed,
            format: self.format,
            compression: Compression::None,
            target: self.target,
            hash_content: false,
            rejects: SetAside::default(),
            part: self.part,
        })
    }
}

/// What the chunks add up to.
struct Staged {
    rows: u64,
    files: Vec<Add>,
    /// The rows the chunks set aside and what their expectations found, in file order.
    set_aside: SetAside,
}

enum Settled {
    Staged(Staged),
    /// The file must be read whole: a record over several lines, or more bad rows than the
    /// feed allows (the whole read stops at the same row and writes the same rejects file).
    ReadWhole,
    /// The file's first error: the lowest chunk's (every chunk before it read its lines
    /// right, so its error is the one the whole read meets first).
    Failed(Error),
}

/// The chunks' outcome, in file order; `verdict` judges the rows set aside and the expectations'
/// findings of the whole file, as the whole read does once it read the file.
fn settle(chunks: Vec<ChunkOutput>, verdict: impl FnOnce(&SetAside, u64) -> Result<()>) -> Settled {
    let mut staged = Staged {
        rows: 0,
        files: Vec::new(),
        set_aside: SetAside::default(),
    };
    for chunk in chunks {
        if let Some(error) = chunk.error {
            return match error.kind() {
                ErrorKind::Unsplittable
                | ErrorKind::TooManyBadRows
                | ErrorKind::ExpectationFailed => Settled::ReadWhole,
                _ => Settled::Failed(error),
            };
        }
        staged.rows += chunk.rows;
        staged.files.extend(chunk.files);
        staged.set_aside.absorb(chunk.set_aside);
    }
    match verdict(&staged.set_aside, staged.rows) {
        Ok(()) => Settled::Staged(staged),
        Err(_) => Settled::ReadWhole,
    }
}
