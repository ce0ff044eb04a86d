//! Putting the chunks together: the file's first error, or its rows set aside and expectation
//! findings judged as the whole read judges them, then one commit of every chunk's files.

use deltalake::kernel::Add;
use deltalake::DeltaTable;

use super::chunk::ChunkOutput;
use super::Prepared;
use crate::bounded::listed;
use crate::error::{Error, ErrorKind, Result};
use crate::read::{Part, SetAside};
use crate::steps::stage::write::{commit_files, keep_rejects, remove};
use crate::steps::stage::StageOutput;
use crate::steps::upsert::identity_of;

/// How the chunks are put together.
pub(super) struct Finishing {
    /// On failure the staging table is removed (locally); on AWS it is left to the Quarantine
    /// state, which drops it, so that a retried CommitChunks finds the same chunks and fails
    /// the same way.
    pub remove_on_failure: bool,
    /// An earlier attempt committed the chunks' files already (a CommitChunks retried after a
    /// Lambda error on the way back): they are not committed again.
    pub committed_before: bool,
}

/// How a split stage ended.
pub(super) enum Finished {
    /// The staging table holds every chunk's rows, in one commit.
    Staged(StageOutput),
    /// Nothing staged: the file must be read whole, for this reason.
    ReadWhole(String),
}

impl Prepared {
    /// Judges the chunks' outputs (in file order) and commits their files as the staging
    /// `table`. A file to be read whole has its staging table removed; a failed one, as
    /// `finishing` says.
    pub(super) async fn finish(
        &self,
        table: &DeltaTable,
        outputs: Vec<ChunkOutput>,
        finishing: Finishing,
    ) -> Result<Finished> {
        let (env, run, feed) = (&self.file.env, &self.file.run, &self.file.feed);
        let staging = &self.file.staging;
        let count = outputs.len() as u64;
        let verdict = |set_aside: &SetAside, loaded: u64| {
            if set_aside.rows() > feed.max_rejected_rows {
                return Err(Error::internal("more rows set aside than the feed allows"));
            }
            self.file
                .spec(Part::Whole)
                .read(|spec| set_aside.verdict(&spec, loaded))
        };
        let staged = match settle(outputs, verdict) {
            Settled::Staged(staged) => staged,
            Settled::ReadWhole(why) => {
                remove(staging).await;
                return Ok(Finished::ReadWhole(why));
            }
            Settled::Failed(e) => {
                if finishing.remove_on_failure {
                    remove(staging).await;
                }
                return Err(e);
            }
        };
        let expectations = staged.set_aside.expectations();
        let upload = identity_of(run, None).unwrap_or_default();
        let committed = match staged.set_aside.into_file(&upload) {
            Ok(rejected) => match keep_rejects(env, run, rejected).await {
                Ok(rejects) if finishing.committed_before => Ok(rejects),
                Ok(rejects) => commit_files(table, staged.files, staging)
                    .await
                    .map(|()| rejects),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let rejects = match committed {
            Ok(rejects) => rejects,
            Err(e) => {
                if finishing.remove_on_failure {
                    remove(staging).await;
                }
                return Err(e);
            }
        };
        tracing::info!(chunks = count, rows = staged.rows, "staged in chunks");
        let (head, target) = (&self.head, env.table(&feed.table)?);
        Ok(Finished::Staged(StageOutput {
            rows: staged.rows,
            bytes: self.size,
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
    ReadWhole(String),
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
                | ErrorKind::ExpectationFailed => Settled::ReadWhole(error.to_string()),
                _ => Settled::Failed(error),
            };
        }
        staged.rows += chunk.rows;
        staged.files.extend(chunk.files);
        staged.set_aside.absorb(chunk.set_aside);
    }
    match verdict(&staged.set_aside, staged.rows) {
        Ok(()) => Settled::Staged(staged),
        Err(e) => Settled::ReadWhole(format!(
            "the file's bad rows are over what the feed allows ({e}): the whole read reports them"
        )),
    }
}
