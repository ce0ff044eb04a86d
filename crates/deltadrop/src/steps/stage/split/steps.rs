//! The chunked stage as states of the state machine (docs/aws.md, "Routes"): each function below
//! is one Lambda invocation, and everything a later one needs is stored beside the run's staging
//! table (`_chunks/` in its folder), so the state carries only small lists.
//!
//! PlanChunks ([`plan_chunks`]) decides, reads the head and creates the staging table;
//! CountLines, a Distributed Map, counts each byte range's newlines ([`count_chunk_lines`]);
//! NumberChunks ([`number_chunks`]) turns the counts into each chunk's first line (a Parquet
//! file skips both: its footer numbers its row groups' records, and PlanChunks answers the
//! chunks already numbered); StageChunks,
//! a Distributed Map, reads and writes each chunk without a commit ([`stage_chunk`]); and
//! CommitChunks ([`commit_chunks`]) puts them together in one commit, as the local stage does.
//!
//! A Map's child that fails is caught by the child itself, which answers `{index, failure}`:
//! moto's Map succeeds with `null` for a failed child, AWS's fails as a whole, and neither says
//! which chunk failed. The step after each Map fails the file with the first chunk's error.

use deltalake::arrow::datatypes::{Schema, SchemaRef};
use deltalake::kernel::Add;
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub use super::ranges::RangeLines;

use super::chunk::{ChunkOutput, FileToSplit};
use super::ranges::first_lines;
use super::row_groups::RowGroupLayout;
use super::settle::{Finished, Finishing};
use super::{prepare, Decision, Prepared};
use crate::environment::Environment;
use crate::error::{Error, ErrorKind, Result};
use crate::read::{HeadPlan, SetAside};
use crate::rejects::{ExpectationOutcome, RejectedRow};
use crate::steps::stage::write::remove;
use crate::steps::stage::StageOutput;
use crate::steps::{Failure, FailureName, RunInput};

/// Bytes `start..end` of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteRange {
    /// The range's first byte.
    pub start: u64,
    /// One past its last byte.
    pub end: u64,
}

/// PlanChunks' output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ChunkPlan {
    /// The file is split: CountLines maps over `ranges`.
    Split {
        /// The file's size.
        bytes: u64,
        /// How many chunks.
        chunks: u64,
        /// Each chunk's bytes, in file order.
        ranges: Vec<ByteRange>,
    },
    /// A Parquet file split between row groups: its footer numbered the chunks' records, so
    /// StageChunks maps over `items` at once.
    Numbered {
        /// The file's size.
        bytes: u64,
        /// How many chunks.
        chunks: u64,
        /// Every chunk, in file order.
        items: Vec<ChunkItem>,
    },
    /// The file is read whole by the Stage state, for this reason.
    ReadWhole {
        /// Why it is not split.
        read_whole: String,
    },
}

/// What a child of CountLines or StageChunks answers: its result, or the failure it caught.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ChildResult<T> {
    /// The child failed after its retries.
    Failed {
        /// What Step Functions caught (the handler turns a Lambda error's `Cause` into its
        /// message).
        failure: Failure,
    },
    /// The child's result.
    Done(T),
}

/// One chunk, as StageChunks maps over them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkItem {
    /// The chunk's place in the file (0 first).
    pub index: usize,
    /// The file line its first line is.
    pub first_line: u64,
}

/// NumberChunks' output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NumberedChunks {
    /// Every chunk, in file order.
    pub items: Vec<ChunkItem>,
}

/// What one child of StageChunks staged (its files and rows set aside are stored beside the
/// staging table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkReport {
    /// The chunk's place in the file.
    pub index: usize,
    /// Rows written.
    pub rows: u64,
    /// Parquet files written, not committed.
    pub files: usize,
    /// Rows set aside (a feed with `on_bad_rows = "reject"`).
    #[serde(default)]
    pub rows_set_aside: u64,
}

/// CommitChunks' output: the Stage state's, or the reason to read the file whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ChunksCommitted {
    /// The staging table holds the file's rows.
    Staged(StageOutput),
    /// Nothing staged: the Stage state reads the file whole.
    ReadWhole {
        /// Why.
        read_whole: String,
    },
}

/// What PlanChunks stores for the invocations after it.
#[derive(Serialize, Deserialize)]
struct StoredPlan {
    size: u64,
    ranges: Vec<(u64, u64)>,
    head: HeadPlan,
    header: Option<Vec<u8>>,
    target_schema: Option<Schema>,
    #[serde(default)]
    row_groups: Option<RowGroupLayout>,
}

/// What one chunk's invocation stores for CommitChunks.
#[derive(Serialize, Deserialize)]
struct ChunkManifest {
    rows: u64,
    files: Vec<Add>,
    rejected: Vec<RejectedRow>,
    expectations: Vec<ExpectationOutcome>,
}

/// PlanChunks: decides whether the file is split (in chunks of the feed's `route.chunk_mb`),
/// and creates the staging table the chunks write into.
pub async fn plan_chunks(env: &Environment, run: &RunInput) -> Result<ChunkPlan> {
    run.validate()?;
    let feed = env.config.feed_named(&run.feed)?;
    let prepared = match prepare(env, run, feed.route.chunk_bytes()).await? {
        Decision::Split(prepared) => prepared,
        Decision::ReadWhole(why) => return Ok(ChunkPlan::ReadWhole { read_whole: why }),
    };
    // A PlanChunks retried after it created the table starts again.
    prepared.file.staging.remove().await?;
    prepared.create_staging().await?;
    let stored = StoredPlan {
        size: prepared.size,
        ranges: prepared.ranges.clone(),
        head: prepared.head.clone(),
        header: prepared.header.clone(),
        target_schema: prepared.file.target_schema.as_deref().cloned(),
        row_groups: prepared.row_groups.clone(),
    };
    put_json(env, &plan_key(env, run), &stored).await?;
    if let Some(layout) = &prepared.row_groups {
        return Ok(ChunkPlan::Numbered {
            bytes: prepared.size,
            chunks: layout.chunks.len() as u64,
            items: numbered(layout.first_records()),
        });
    }
    Ok(ChunkPlan::Split {
        bytes: prepared.size,
        chunks: prepared.ranges.len() as u64,
        ranges: prepared.ranges.iter().copied().map(byte_range).collect(),
    })
}

/// A child of CountLines: the newlines of one byte range.
pub async fn count_chunk_lines(
    env: &Environment,
    run: &RunInput,
    range: ByteRange,
) -> Result<RangeLines> {
    let counted = async {
        let feed = env.config.feed_named(&run.feed)?;
        FileToSplit::new(env, run, feed, None)?
            .count_lines((range.start, range.end))
            .await
    };
    keeping_failure(env, &count_failure_key(env, run, range), counted.await).await
}

/// NumberChunks: each chunk's first line, from CountLines' results (`None`: a child that
/// answered nothing); the first failed count fails the file.
pub async fn number_chunks(
    env: &Environment,
    run: &RunInput,
    counts: Vec<Option<ChildResult<RangeLines>>>,
) -> Result<NumberedChunks> {
    let prepared = load(env, run).await?;
    if counts.len() != prepared.ranges.len() {
        return Err(Error::InvalidInput {
            message: format!(
                "{} line counts for {} chunks",
                counts.len(),
                prepared.ranges.len()
            ),
        });
    }
    let mut lines = Vec::with_capacity(counts.len());
    for (index, count) in counts.into_iter().enumerate() {
        match count {
            Some(ChildResult::Done(count)) => lines.push(count),
            // The staging table is the Quarantine state's to drop: a retry fails the same way.
            failed => {
                let key = count_failure_key(env, run, byte_range(prepared.ranges[index]));
                let error = child_error(env, run, &key, index, failed).await;
                return Err(removing_if_not_quarantined(&prepared, error).await);
            }
        }
    }
    Ok(NumberedChunks {
        items: numbered(first_lines(&lines)),
    })
}

/// The chunks that start on these lines (records), in file order.
fn numbered(first_lines: Vec<u64>) -> Vec<ChunkItem> {
    first_lines
        .into_iter()
        .enumerate()
        .map(|(index, first_line)| ChunkItem { index, first_line })
        .collect()
}

/// A child of StageChunks: reads one chunk and writes its rows as uncommitted files of the
/// staging table. A retried chunk writes new files; only the last attempt's are committed.
pub async fn stage_chunk(
    env: &Environment,
    run: &RunInput,
    item: ChunkItem,
) -> Result<ChunkReport> {
    let staged = write_chunk(env, run, item).await;
    keeping_failure(env, &stage_failure_key(env, run, item.index), staged).await
}

async fn write_chunk(env: &Environment, run: &RunInput, item: ChunkItem) -> Result<ChunkReport> {
    let prepared = load(env, run).await?;
    if item.index >= prepared.ranges.len() {
        return Err(Error::InvalidInput {
            message: format!(
                "chunk {} of a file in {}",
                item.index,
                prepared.ranges.len()
            ),
        });
    }
    if let Some(layout) = &prepared.row_groups {
        let first = layout.first_records()[item.index];
        if item.first_line != first {
            return Err(Error::InvalidInput {
                message: format!(
                    "chunk {} starts on record {first}, not {}",
                    item.index, item.first_line
                ),
            });
        }
    }
    let table = prepared.open_staging().await?;
    let chunk = prepared.chunk(item.index, item.first_line);
    let output = prepared
        .file
        .stage_chunk(&table, &prepared.head, chunk)
        .await;
    if let Some(error) = output.error {
        return Err(error);
    }
    let (rejected, expectations) = output.set_aside.into_parts();
    let report = ChunkReport {
        index: item.index,
        rows: output.rows,
        files: output.files.len(),
        rows_set_aside: rejected.len() as u64,
    };
    let manifest = ChunkManifest {
        rows: output.rows,
        files: output.files,
        rejected,
        expectations,
    };
    put_json(env, &manifest_key(env, run, item.index), &manifest).await?;
    Ok(report)
}

/// CommitChunks: the chunks' results in file order, judged and committed as the staging table
/// in one commit (or the first chunk's error, or the reason to read the file whole).
pub async fn commit_chunks(
    env: &Environment,
    run: &RunInput,
    results: Vec<Option<ChildResult<ChunkReport>>>,
) -> Result<ChunksCommitted> {
    // A CommitChunks retried after it answered "read whole" (and removed the staging table
    // with the plan) answers the same.
    if let Ok(why) = read_json::<String>(env, &read_whole_key(env, run)).await {
        return Ok(ChunksCommitted::ReadWhole { read_whole: why });
    }
    let prepared = load(env, run).await?;
    let table = prepared.open_staging().await?;
    // The chunks' manifests are read a few at a time: one GET each, up to 500.
    let mut outputs: Vec<ChunkOutput> = stream::iter(results.into_iter().enumerate())
        .map(|(index, result)| chunk_output(env, run, index, result))
        .buffered(MANIFEST_READS)
        .try_collect()
        .await?;
    if outputs.len() != prepared.ranges.len() {
        outputs.push(ChunkOutput::failed(Error::InvalidInput {
            message: format!(
                "{} chunk results for {} chunks",
                outputs.len(),
                prepared.ranges.len()
            ),
        }));
    }
    // Retried, CommitChunks finds the same chunks: a failure fails the same way (the staging
    // table is the Quarantine state's to drop), and files committed by an earlier attempt (a
    // Lambda error on the way back) are not committed again.
    let finishing = Finishing {
        remove_on_failure: false,
        committed_before: table.version().unwrap_or(0) > 0,
    };
    match prepared.finish(&table, outputs, finishing).await {
        Ok(Finished::Staged(output)) => Ok(ChunksCommitted::Staged(output)),
        Ok(Finished::ReadWhole(why)) => {
            put_json(env, &read_whole_key(env, run), &why).await?;
            Ok(ChunksCommitted::ReadWhole { read_whole: why })
        }
        Err(e) => Err(removing_if_not_quarantined(&prepared, e).await),
    }
}

/// How many chunk manifests CommitChunks reads at a time.
const MANIFEST_READS: usize = 16;

/// What chunk `index` did, from its answer and the manifest its invocation stored.
async fn chunk_output(
    env: &Environment,
    run: &RunInput,
    index: usize,
    result: Option<ChildResult<ChunkReport>>,
) -> Result<ChunkOutput> {
    Ok(match result {
        Some(ChildResult::Done(report)) if report.index == index => {
            let manifest: ChunkManifest = read_json(env, &manifest_key(env, run, index)).await?;
            ChunkOutput {
                rows: manifest.rows,
                files: manifest.files,
                set_aside: SetAside::from_parts(manifest.rejected, manifest.expectations),
                error: None,
            }
        }
        Some(ChildResult::Done(report)) => ChunkOutput::failed(Error::InvalidInput {
            message: format!("chunk {index}'s result is chunk {}'s", report.index),
        }),
        failed => {
            let key = stage_failure_key(env, run, index);
            ChunkOutput::failed(child_error(env, run, &key, index, failed).await)
        }
    })
}

/// The error of a Map child that failed (or answered nothing), under its own name, with the
/// message its invocation kept at `key` (a child's answer carries only the error's name: 500
/// failed chunks with messages of up to 8 KiB would pass the state's 256 KiB).
async fn child_error<T>(
    env: &Environment,
    run: &RunInput,
    key: &str,
    index: usize,
    result: Option<ChildResult<T>>,
) -> Error {
    let Some(ChildResult::Failed { failure }) = result else {
        return Error::internal(format!("chunk {index} answered nothing"));
    };
    match read_json::<Failure>(env, key).await {
        Ok(kept) if kept.error == failure.error => kept.into_error(),
        Ok(_) | Err(_) => match failure.error {
            // The invocation itself stopped (a timeout, a crash): only the name is known.
            FailureName::Other(name) => Error::Relayed {
                kind: ErrorKind::ChunkStopped,
                message: format!("{}: chunk {index} stopped: {name}", run.key),
            },
            FailureName::Kind(kind) => Error::Relayed {
                kind,
                message: format!("{}: chunk {index} failed with {kind}", run.key),
            },
        },
    }
}

/// `error`, with the staging table removed first when the state machine sends the file to
/// NotifyFailure rather than Quarantine, which drops it (an `UploadReplaced`).
async fn removing_if_not_quarantined(prepared: &Prepared, error: Error) -> Error {
    if error.kind() == ErrorKind::UploadReplaced {
        remove(&prepared.file.staging).await;
    }
    error
}

/// `result`, its error's name and message kept at `key` for the step after the Map.
async fn keeping_failure<T>(env: &Environment, key: &str, result: Result<T>) -> Result<T> {
    if let Err(e) = &result {
        if let Err(kept) = put_json(env, key, &Failure::from(e)).await {
            tracing::warn!(error = %kept, "could not keep the chunk's error for the step after the Map");
        }
    }
    result
}

fn byte_range((start, end): (u64, u64)) -> ByteRange {
    ByteRange { start, end }
}

/// The file as PlanChunks prepared it.
async fn load(env: &Environment, run: &RunInput) -> Result<Prepared> {
    let stored: StoredPlan = read_json(env, &plan_key(env, run)).await?;
    let feed = env.config.feed_named(&run.feed)?;
    let target_schema = stored.target_schema.map(SchemaRef::new);
    Ok(Prepared {
        file: Arc::new(FileToSplit::new(env, run, feed, target_schema)?),
        head: stored.head,
        header: stored.header,
        size: stored.size,
        ranges: stored.ranges,
        row_groups: stored.row_groups,
    })
}

fn plan_key(env: &Environment, run: &RunInput) -> String {
    format!("{}_chunks/plan.json", env.staging_prefix(&run.run_id))
}

/// Kept after the staging table is removed: the Stage state's whole read removes it again.
fn read_whole_key(env: &Environment, run: &RunInput) -> String {
    format!("{}_chunks/read-whole.json", env.staging_prefix(&run.run_id))
}

fn count_failure_key(env: &Environment, run: &RunInput, range: ByteRange) -> String {
    format!(
        "{}_chunks/count-{}-failure.json",
        env.staging_prefix(&run.run_id),
        range.start
    )
}

fn stage_failure_key(env: &Environment, run: &RunInput, index: usize) -> String {
    format!(
        "{}_chunks/chunk-{index:05}-failure.json",
        env.staging_prefix(&run.run_id)
    )
}

fn manifest_key(env: &Environment, run: &RunInput, index: usize) -> String {
    format!(
        "{}_chunks/chunk-{index:05}.json",
        env.staging_prefix(&run.run_id)
    )
}

async fn put_json<T: Serialize>(env: &Environment, key: &str, value: &T) -> Result<()> {
    let body = serde_json::to_vec(value).map_err(|e| Error::internal(e.to_string()))?;
    env.storage.put(key, body).await
}

async fn read_json<T: for<'de> Deserialize<'de>>(env: &Environment, key: &str) -> Result<T> {
    let body = env.storage.read_all(key).await?;
    serde_json::from_slice(&body)
        .map_err(|e| Error::internal(format!("{}: {e}", env.storage.display(key))))
}
