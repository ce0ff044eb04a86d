//! Staging one large file in parallel chunks: locally (`deltadrop run --workers N`, tasks of one
//! process) or on AWS (the state machine's Distributed Map, an invocation per chunk:
//! [`steps`]). Both run the same reads and the same final commit.
//!
//! The file is cut into byte ranges, each aligned to line starts by the chunk that reads it
//! ([`ranges`]). A first pass counts each range's newlines, so that every chunk knows the line
//! it starts on. Each chunk is then read by its own worker with the plan the file's head fixed
//! (columns and types, [`crate::read::read_head`]) and the file's real line numbers, and its rows
//! are written as Parquet files of the run's staging table without a commit; one commit adds
//! them all. The staging table holds the same rows, types and lines as the one-worker stage
//! writes, and an error names the same line (tests/pipeline/split.rs).
//!
//! A Parquet file is cut between its row groups instead ([`row_groups`]): its footer gives each
//! row group's bytes and records, so no counting pass is needed, and every chunk reads its row
//! groups with the plan the footer fixes and the file's record numbers.
//!
//! Only what splits is split: an uncompressed CSV, JSON lines or Parquet file with an upload
//! id (a content hash cannot be computed in parts), of a feed without a `unique` expectation
//! (which needs every value of the file). The file is read whole instead when a chunk finds a
//! record over several lines (a quoted CSV field with a line break: `Unsplittable`), or when the
//! file has more bad rows than the feed allows (the whole read stops where it always stops).
//! Below the thresholds, the rows the chunks set aside and what their expectations found are put
//! together in file order: one rejects file, the whole read's.

mod chunk;
mod ranges;
mod row_groups;
mod settle;
pub mod steps;

use std::sync::Arc;

use deltalake::DeltaTable;
use futures::stream::{self, StreamExt, TryStreamExt};

use self::chunk::{Chunk, ChunkOutput, FileToSplit, Header};
use self::ranges::{byte_ranges, first_lines, RangeLines};
use self::row_groups::RowGroupLayout;
use self::settle::{Finished, Finishing};
use super::write::staging_commit_info;
use super::StageOutput;
use crate::config::{Compression, Feed, FileFormat};
use crate::delta::arrow_schema;
use crate::environment::{Environment, Split};
use crate::error::{Error, Result};
use crate::read::{read_parquet_head, HeadPlan, Part};
use crate::steps::RunInput;

pub use crate::route::MAX_CHUNKS;

/// Stages `run`'s file in chunks when it is large and splittable; `None` (nothing staged) when
/// it must be read whole.
pub async fn stage_in_chunks(
    env: &Environment,
    run: &RunInput,
    split: &Split,
) -> Result<Option<StageOutput>> {
    if split.workers < 2 {
        return Ok(None);
    }
    let prepared = match prepare(env, run, split.chunk_bytes).await? {
        Decision::Split(prepared) => prepared,
        Decision::ReadWhole(why) => {
            tracing::debug!(why, "read whole");
            return Ok(None);
        }
    };
    let file = &prepared.file;
    let first_lines = match &prepared.row_groups {
        Some(layout) => layout.first_records(),
        None => {
            let counts: Vec<RangeLines> = stream::iter(prepared.ranges.iter().copied())
                .map(|range| file.count_lines(range))
                .buffered(split.workers)
                .try_collect()
                .await?;
            first_lines(&counts)
        }
    };
    let chunks: Vec<Chunk> = first_lines
        .into_iter()
        .enumerate()
        .map(|(index, first_line)| prepared.chunk(index, first_line))
        .collect();
    let table = prepared.create_staging().await?;
    // Each chunk is its own task, so that the chunks' Parquet encoding runs in parallel too.
    let outputs: Vec<ChunkOutput> = stream::iter(chunks)
        .map(|chunk| {
            let (file, table, head) = (file.clone(), table.clone(), prepared.head.clone());
            tokio::spawn(async move { file.stage_chunk(&table, &head, chunk).await })
        })
        .buffered(split.workers)
        .map(|joined| {
            joined.unwrap_or_else(|e| {
                ChunkOutput::failed(Error::internal(format!("a chunk's task stopped: {e}")))
            })
        })
        .collect()
        .await;
    let finishing = Finishing {
        remove_on_failure: true,
        committed_before: false,
    };
    match prepared.finish(&table, outputs, finishing).await? {
        Finished::Staged(output) => Ok(Some(output)),
        Finished::ReadWhole(why) => {
            tracing::info!(why, "the chunks found the file must be read whole");
            Ok(None)
        }
    }
}

/// A file about to be split: what every chunk reads it with, and where it is cut.
pub(super) struct Prepared {
    file: Arc<FileToSplit>,
    /// The plan the file's head fixed.
    head: HeadPlan,
    /// The CSV header line put before every chunk but the first.
    header: Option<Vec<u8>>,
    /// The file's size.
    size: u64,
    /// The chunks' byte ranges, in file order.
    ranges: Vec<(u64, u64)>,
    /// A Parquet file's chunks: which row groups, and where the footer is.
    row_groups: Option<RowGroupLayout>,
}

/// Whether a file is split.
enum Decision {
    Split(Prepared),
    /// Read whole, for this reason.
    ReadWhole(String),
}

/// Decides whether `run`'s file is split in chunks of about `chunk_bytes`, and reads what the
/// chunks need: the target's columns, the head's plan and the header line.
async fn prepare(env: &Environment, run: &RunInput, chunk_bytes: u64) -> Result<Decision> {
    let feed = env.config.feed_named(&run.feed)?;
    let size = match splittable_size(env, run, feed, chunk_bytes).await? {
        Ok(size) => size,
        Err(why) => return Ok(Decision::ReadWhole(why)),
    };
    let target_schema = match env.table(&feed.table)?.open().await? {
        Some(table) => Some(arrow_schema(&table)?),
        None => None,
    };
    let file = Arc::new(FileToSplit::new(env, run, feed, target_schema)?);
    if file.format == FileFormat::Parquet {
        return prepare_row_groups(file, size, chunk_bytes).await;
    }
    // A head that cannot be read (or a file without records) is the whole read's to report;
    // a storage error is the step's, to retry.
    let head = match file.head().await {
        Ok(Some(head)) => head,
        Err(e) if e.kind().is_transient() => return Err(e),
        Ok(None) | Err(_) => {
            return Ok(Decision::ReadWhole(
                "its head does not fix a plan: the whole read reports why".into(),
            ))
        }
    };
    let header = match file.header_line(size).await? {
        Header::Splittable(header) => header,
        Header::OverSeveralLines => {
            return Ok(Decision::ReadWhole(
                "its header record runs over several lines".into(),
            ))
        }
    };
    let chunk_bytes = chunk_bytes.max(size.div_ceil(MAX_CHUNKS));
    Ok(Decision::Split(Prepared {
        file,
        head,
        header,
        size,
        ranges: byte_ranges(size, chunk_bytes),
        row_groups: None,
    }))
}

/// A Parquet file: its footer fixes the plan and where it is cut.
async fn prepare_row_groups(
    file: Arc<FileToSplit>,
    size: u64,
    chunk_bytes: u64,
) -> Result<Decision> {
    let (metadata, footer_start) = match file.footer(size).await? {
        Ok(footer) => footer,
        Err(why) => return Ok(Decision::ReadWhole(why)),
    };
    let largest = row_groups::MAX_CHUNK_BYTES;
    let layout = match row_groups::cut(&metadata, footer_start, chunk_bytes, MAX_CHUNKS, largest) {
        Ok(layout) => layout,
        Err(why) => return Ok(Decision::ReadWhole(why)),
    };
    let head = file
        .spec(Part::Whole)
        .read(|spec| read_parquet_head(metadata, &spec));
    let Ok(head) = head else {
        return Ok(Decision::ReadWhole(
            "its columns do not fix a plan: the whole read reports why".into(),
        ));
    };
    Ok(Decision::Split(Prepared {
        file,
        head,
        header: None,
        size,
        ranges: layout.chunks.iter().map(|run| run.data).collect(),
        row_groups: Some(layout),
    }))
}

impl Prepared {
    /// Chunk `index`, whose first line is the file's line `first_line`.
    fn chunk(&self, index: usize, first_line: u64) -> Chunk {
        let (start, end) = self.ranges[index];
        Chunk {
            index,
            start,
            end,
            size: self.size,
            // The first chunk is the file's start, header included; the others get the header
            // put before their lines.
            header: (index > 0).then(|| self.header.clone()).flatten(),
            first_line,
            parquet: self
                .row_groups
                .as_ref()
                .map(|layout| layout.slice(index, self.size)),
        }
    }

    /// The staging table PlanChunks created, which the chunks write into.
    async fn open_staging(&self) -> Result<DeltaTable> {
        let staging = &self.file.staging;
        staging
            .open()
            .await?
            .ok_or_else(|| Error::internal(format!("the staging table {} is gone", staging.name())))
    }

    /// Creates the run's staging table with the head's columns, for the chunks to write into.
    async fn create_staging(&self) -> Result<DeltaTable> {
        self.file
            .staging
            .create(
                &self.head.plan.schema,
                &[],
                staging_commit_info(&self.file.run),
            )
            .await
    }
}

/// The file's size when it is to be split: large enough for two chunks, in a format whose
/// records are lines, uncompressed, with an upload id, of a feed whose checks work chunk by
/// chunk; or why it is read whole.
async fn splittable_size(
    env: &Environment,
    run: &RunInput,
    feed: &Feed,
    chunk_bytes: u64,
) -> Result<std::result::Result<u64, String>> {
    let format = feed.format_for(&run.key)?;
    let why_not = if format == FileFormat::Json {
        Some("a JSON array is one value: only CSV, JSON lines and Parquet files split")
    } else if Compression::from_key(&run.key) != Compression::None {
        Some("a compressed file is read from its start")
    } else if run.upload.id().is_empty() {
        Some("an upload without an id is known by its content's hash, computed by a whole read")
    } else if feed.expect.iter().any(|e| e.unique) {
        Some("a `unique` expectation needs every value of the file in one read")
    } else {
        None
    };
    if let Some(why) = why_not {
        return Ok(Err(why.into()));
    }
    let Some(size) = env.storage.size(&run.key).await? else {
        return Ok(Err("the file is gone: the whole read names it".into()));
    };
    if size < chunk_bytes.saturating_mul(2) {
        return Ok(Err(format!(
            "{size} bytes is less than two chunks of {chunk_bytes}"
        )));
    }
    if size > feed.limits.max_decompressed_bytes() {
        return Ok(Err(
            "it is over the feed's max_decompressed_mb: the whole read refuses it".into(),
        ));
    }
    Ok(Ok(size))
}
