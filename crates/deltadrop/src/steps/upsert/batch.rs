//! The commit lane's upsert: the staged files of one table merged in as few commits as the
//! feed's `[feeds.batch]` bounds allow, each file exactly once, each with its own outcome, and
//! the table ending as if the files had been applied one at a time in the order given.
//!
//! Per commit, file by file in order: a file the table records is `AlreadyApplied`; an upload
//! older than the newest of its key (in the table or earlier in the batch) is `Superseded`; a file
//! without rows is `NothingToApply`; a file whose columns do not fit those the earlier files
//! left fails alone ([`Columns::admit`]). The rest are merged in one commit that records every
//! one of them; a commit that loses to a concurrent one is decided again from a fresh snapshot.

use std::collections::{HashMap, HashSet};

use deltalake::datafusion::prelude::{DataFrame, SessionContext};
use deltalake::DeltaTable;

use super::adopt::adopt_staged_files;
use super::arrival::Arrivals;
use super::columns::{Columns, Conversion};
use super::combine::{combine, single};
use super::merge::{
    backoff, deduplicated_source, first_load, merge_into, newest_applied, recorded, session,
    Attempt, CommitRecord, Committed,
};
use super::{
    file_identity, Changes, Pending, SharedCommit, UpsertOutcome, UpsertOutput, MAX_ATTEMPTS,
};
use crate::config::{BatchBounds, Feed};
use crate::delta::{arrow_schema, TableLocation};
use crate::environment::Environment;
use crate::error::{Error, Result};
use crate::steps::{RunInput, StageOutput};
use crate::upload::UploadOrder;

/// MERGEs one run's staging table into the feed's target table, exactly once per upload: a
/// commit lane of one file.
pub async fn upsert(
    env: &Environment,
    run: &RunInput,
    stage: &StageOutput,
) -> Result<UpsertOutput> {
    let file = Pending {
        run: run.clone(),
        stage: stage.clone(),
    };
    let mut results = upsert_files(env, std::slice::from_ref(&file)).await;
    results.pop().expect("one result per file")
}

/// MERGEs `files` in the order given: each feed's files in consecutive batches within its
/// bounds, one commit per batch. One result per file, in the order given.
pub async fn upsert_files(env: &Environment, files: &[Pending]) -> Vec<Result<UpsertOutput>> {
    let mut results: Vec<Option<Result<UpsertOutput>>> = files.iter().map(|_| None).collect();
    let mut feeds: Vec<&str> = files.iter().map(|f| f.run.feed.as_str()).collect();
    feeds.sort_unstable();
    feeds.dedup();
    for name in feeds {
        let of_feed: Vec<usize> = (0..files.len())
            .filter(|&i| files[i].run.feed == name)
            .collect();
        let bounds = match env.config.feed_named(name) {
            Ok(feed) => feed.batch.clone(),
            Err(e) => {
                for &i in &of_feed {
                    results[i] = Some(Err(e.clone()));
                }
                continue;
            }
        };
        for batch in batches(&of_feed, files, &bounds) {
            let pending: Vec<&Pending> = batch.iter().map(|&i| &files[i]).collect();
            for (&i, result) in batch.iter().zip(upsert_batch(env, &pending).await) {
                results[i] = Some(result);
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.expect("every file is in one batch"))
        .collect()
}

/// Splits `indices` (into `files`) into consecutive batches within `bounds`; a file beyond a
/// bound on its own is a batch of one.
pub fn batches(indices: &[usize], files: &[Pending], bounds: &BatchBounds) -> Vec<Vec<usize>> {
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let (mut rows, mut bytes) = (0u64, 0u64);
    for &i in indices {
        let stage = &files[i].stage;
        let fits = batches.last().is_some_and(|batch| {
            batch.len() < bounds.max_files
                && rows + stage.rows <= bounds.max_rows
                && bytes + stage.bytes <= bounds.max_bytes
        });
        if !fits {
            batches.push(Vec::new());
            (rows, bytes) = (0, 0);
        }
        batches.last_mut().expect("pushed above").push(i);
        rows += stage.rows;
        bytes += stage.bytes;
    }
    batches
}

/// Puts files in arrival order: the upload's time (S3's event time, a file's modification
/// time), then the key, then S3's sequencer (uploads of one key).
pub fn arrival_order(files: &mut [Pending]) {
    files.sort_by(|a, b| {
        let order = |p: &Pending| {
            (
                p.run.upload.uploaded_at,
                p.run.key.clone(),
                p.run.upload.order(),
            )
        };
        order(a).cmp(&order(b))
    });
}

/// A file of the batch, read once for every attempt.
struct Prepared<'a> {
    pending: &'a Pending,
    identity: String,
    /// The staging table and its rows, one per key; `None` when there is none (no rows, or
    /// removed after an earlier commit applied the file).
    staged: Option<Staged>,
}

struct Staged {
    table: DeltaTable,
    rows: DataFrame,
    repeated_keys: bool,
}

/// What became of one file in a round.
enum Slot {
    Failed(Error),
    Decided(UpsertOutcome),
    /// Merged in this round's commit: its position among the merged files.
    Taken(usize),
}

/// One commit of the lane: `files` (one feed's) in order.
async fn upsert_batch(env: &Environment, files: &[&Pending]) -> Vec<Result<UpsertOutput>> {
    let every = |e: Error| files.iter().map(|_| Err(e.clone())).collect();
    let feed = match env.config.feed_named(&files[0].run.feed) {
        Ok(feed) => feed,
        Err(e) => return every(e),
    };
    let target = match env.table(&feed.table) {
        Ok(target) => target,
        Err(e) => return every(e),
    };
    let ctx = match session() {
        Ok(ctx) => ctx,
        Err(e) => return every(Error::delta(target.name(), e)),
    };
    let mut prepared = Vec::new();
    for pending in files {
        prepared.push(prepare(env, feed, &ctx, pending).await);
    }
    let mut attempt = 1;
    loop {
        match round(env, feed, &target, &ctx, &prepared, attempt).await {
            Ok(results) => {
                remove_staging(env, &prepared, &results).await;
                return results;
            }
            Err(reason) if attempt < MAX_ATTEMPTS => {
                let delay = backoff(attempt);
                tracing::info!(attempt, ?delay, %reason, table = %target.name(), "commit conflict; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(_) => {
                let gave_up = Error::CommitConflict {
                    table: target.name(),
                    attempts: attempt,
                };
                return prepared
                    .into_iter()
                    .map(|p| Err(p.err().unwrap_or_else(|| gave_up.clone())))
                    .collect();
            }
        }
    }
}

/// What a file's upsert needs that no commit changes: its identity and its rows, one per key.
async fn prepare<'a>(
    env: &Environment,
    feed: &Feed,
    ctx: &SessionContext,
    pending: &'a Pending,
) -> Result<Prepared<'a>> {
    let (run, stage) = (&pending.run, &pending.stage);
    run.validate()?;
    let identity = file_identity(run, stage)?;
    let Some(staging_name) = &stage.staging_table else {
        return Ok(Prepared {
            pending,
            identity,
            staged: None,
        });
    };
    let staging = env.staging_table(&run.run_id)?;
    if staging.name() != *staging_name {
        return Err(Error::InvalidInput {
            message: format!(
                "staging table {staging_name} does not belong to run {}",
                run.run_id
            ),
        });
    }
    let staged = match staging.open().await? {
        Some(table) => {
            let (rows, repeated_keys) = deduplicated_source(ctx, feed, &table, stage)
                .await
                .map_err(|e| Error::delta(staging.name(), e))?;
            Some(Staged {
                table,
                rows,
                repeated_keys,
            })
        }
        None => None,
    };
    Ok(Prepared {
        pending,
        identity,
        staged,
    })
}

/// Decides every file against a fresh snapshot and commits the ones to merge; `Err` with the
/// reason when a concurrent commit won.
async fn round(
    env: &Environment,
    feed: &Feed,
    target: &TableLocation,
    ctx: &SessionContext,
    prepared: &[Result<Prepared<'_>>],
    attempt: u32,
) -> std::result::Result<Vec<Result<UpsertOutput>>, String> {
    let every = |e: Error| prepared.iter().map(|_| Err(e.clone())).collect();
    let table = match target.open().await {
        Ok(table) => table,
        Err(e) => return Ok(every(e)),
    };
    let mut columns = match table.as_ref().map(arrow_schema).transpose() {
        Ok(schema) => Columns::of_table(schema.as_deref()),
        Err(e) => return Ok(every(e)),
    };
    let together: Vec<&RunInput> = prepared
        .iter()
        .filter_map(|p| p.as_ref().ok().map(|p| &p.pending.run))
        .collect();
    let mut arrivals = None;
    let mut newest: HashMap<&str, UploadOrder> = HashMap::new();
    let mut merged: HashSet<&str> = HashSet::new();
    let mut slots = Vec::new();
    let mut taken: Vec<(&Prepared, Vec<Conversion>)> = Vec::new();
    for p in prepared {
        let slot = match p {
            Err(e) => Slot::Failed(e.clone()),
            Ok(p) => {
                let decided = decide(
                    env,
                    feed,
                    target,
                    table.as_ref(),
                    p,
                    &together,
                    &mut arrivals,
                    &mut newest,
                    &merged,
                )
                .await;
                match decided {
                    Err(e) => Slot::Failed(e),
                    Ok(Some(slot)) => slot,
                    Ok(None) => {
                        let staged = p.staged.as_ref().expect("decide checked it");
                        match columns.admit(feed, &p.pending.run.key, &staged.rows).await {
                            Err(e) => Slot::Failed(e),
                            Ok(conversions) => {
                                let run = &p.pending.run;
                                let order = newest
                                    .entry(run.key.as_str())
                                    .or_insert(UploadOrder::UNKNOWN);
                                *order = (*order).max(run.upload.order());
                                merged.insert(p.identity.as_str());
                                taken.push((p, conversions));
                                Slot::Taken(taken.len() - 1)
                            }
                        }
                    }
                }
            }
        };
        slots.push(slot);
    }
    let version = table.as_ref().and_then(|t| t.version());
    let committed = if taken.is_empty() {
        None
    } else {
        match commit(feed, target, table, ctx, &columns, &taken).await {
            Ok(committed) => Some(committed),
            Err(Attempt::Conflict(reason)) => return Err(reason),
            Err(Attempt::Failed(e)) => {
                for slot in &mut slots {
                    if matches!(slot, Slot::Taken(_)) {
                        *slot = Slot::Failed(e.clone());
                    }
                }
                None
            }
        }
    };
    let version = committed.as_ref().map_or(version, |(c, _)| c.version);
    Ok(slots
        .into_iter()
        .zip(prepared)
        .map(|(slot, p)| {
            let identity = || p.as_ref().map(|p| p.identity.clone()).unwrap_or_default();
            let output = |outcome, changes| {
                let mut output = UpsertOutput::new(outcome, target, version, identity(), changes);
                output.attempts = attempt;
                output
            };
            match slot {
                Slot::Failed(e) => Err(e),
                Slot::Decided(outcome) => Ok(output(outcome, Changes::default())),
                Slot::Taken(i) => {
                    let (committed, shares) = committed.as_ref().expect("taken files committed");
                    let mut applied = output(UpsertOutcome::Applied, committed.changes);
                    applied.shared_commit = shares.as_ref().map(|s| s[i]);
                    Ok(applied)
                }
            }
        })
        .collect())
}

/// A file's outcome when the snapshot (or an earlier file of the batch) decides it; `None` when
/// it is to merge.
#[allow(clippy::too_many_arguments)]
async fn decide<'a>(
    env: &Environment,
    feed: &Feed,
    target: &TableLocation,
    table: Option<&DeltaTable>,
    p: &'a Prepared<'a>,
    together: &[&RunInput],
    arrivals: &mut Option<Arrivals>,
    newest: &mut HashMap<&'a str, UploadOrder>,
    merged: &HashSet<&str>,
) -> Result<Option<Slot>> {
    let run = &p.pending.run;
    if let Some(table) = table {
        if recorded(table, target, &p.identity).await?.is_some() {
            return Ok(Some(Slot::Decided(UpsertOutcome::AlreadyApplied)));
        }
    }
    // The same upload twice in one batch (a repeated run): merged once, by the first.
    if merged.contains(p.identity.as_str()) {
        return Ok(Some(Slot::Decided(UpsertOutcome::AlreadyApplied)));
    }
    let known = match (newest.get(run.key.as_str()), table) {
        (Some(order), _) => *order,
        (None, Some(table)) => newest_applied(table, target, run).await?,
        (None, None) => UploadOrder::UNKNOWN,
    };
    newest.insert(run.key.as_str(), known);
    if known > run.upload.order() {
        return Ok(Some(Slot::Decided(UpsertOutcome::Superseded)));
    }
    if p.pending.stage.staging_table.is_none() {
        return Ok(Some(Slot::Decided(UpsertOutcome::NothingToApply)));
    }
    if p.staged.is_none() {
        return Err(Error::InvalidInput {
            message: format!(
                "the staging table {} does not exist, and the target table does not record \
                 this file as applied",
                p.pending.stage.staging_table.as_deref().unwrap_or_default()
            ),
        });
    }
    if feed.apply_in_arrival_order {
        if arrivals.is_none() {
            *arrivals = Some(Arrivals::load(env, feed).await?);
        }
        arrivals
            .as_ref()
            .expect("loaded above")
            .check(run, together)?;
    }
    Ok(None)
}

type Shares = Option<Vec<SharedCommit>>;

/// Commits the taken files: the first load (adopting a lone file's staged files when it can), or
/// one MERGE.
async fn commit(
    feed: &Feed,
    target: &TableLocation,
    table: Option<DeltaTable>,
    ctx: &SessionContext,
    columns: &Columns,
    taken: &[(&Prepared<'_>, Vec<Conversion>)],
) -> std::result::Result<(Committed, Shares), Attempt> {
    let record = CommitRecord::for_files(
        feed,
        &taken
            .iter()
            .map(|(p, _)| (&p.pending.run, p.identity.as_str()))
            .collect::<Vec<_>>(),
    );
    let delta_error = |e: deltalake::datafusion::error::DataFusionError| {
        Attempt::Failed(Error::delta(target.name(), e))
    };
    let (rows, shares) = if let [(p, conversions)] = taken {
        let lone = staged(p);
        if table.is_none() && p.pending.stage.written_for_a_new_table && !lone.repeated_keys {
            // The staged files hold exactly the rows a new table gets.
            let committed = adopt_staged_files(feed, target, &lone.table, &record).await?;
            return Ok((committed, None));
        }
        let rows = columns
            .align(feed, lone.rows.clone(), conversions, false)
            .and_then(|rows| single(feed, rows))
            .map_err(delta_error)?;
        (rows, None)
    } else {
        let aligned = taken
            .iter()
            .map(|(p, conversions)| columns.align(feed, staged(p).rows.clone(), conversions, true))
            .collect::<deltalake::datafusion::error::Result<Vec<_>>>()
            .map_err(delta_error)?;
        let combined = combine(ctx, feed, aligned).await.map_err(delta_error)?;
        let files = taken.len() as u64;
        let shares = (0..taken.len())
            .map(|i| SharedCommit {
                files,
                keys: combined.keys[i],
                keys_decided: combined.decided[i],
            })
            .collect();
        (combined.rows, Some(shares))
    };
    let committed = match table {
        None => first_load(feed, target, ctx, rows, &record).await?,
        Some(table) => merge_into(feed, target, table, ctx, rows, &record).await?,
    };
    Ok((committed, shares))
}

/// Removes the staging tables of the files the commit settled (merged, or decided without it).
async fn remove_staging(
    env: &Environment,
    prepared: &[Result<Prepared<'_>>],
    results: &[Result<UpsertOutput>],
) {
    for (p, result) in prepared.iter().zip(results) {
        let (Ok(p), Ok(_)) = (p, result) else {
            continue;
        };
        if p.staged.is_none() {
            continue;
        }
        let removed = match env.staging_table(&p.pending.run.run_id) {
            Ok(staging) => staging.remove().await,
            Err(e) => Err(e),
        };
        if let Err(e) = removed {
            tracing::warn!(error = %e, run_id = %p.pending.run.run_id, "merged, but the staging table could not be removed");
        }
    }
}

fn staged<'p>(p: &'p Prepared<'_>) -> &'p Staged {
    p.staged.as_ref().expect("taken files are staged")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upload::Upload;

    fn pending(rows: u64, bytes: u64) -> Pending {
        Pending {
            run: RunInput {
                run_id: "r".into(),
                key: "k".into(),
                feed: "f".into(),
                started_at: chrono::Utc::now(),
                upload: Upload::default(),
            },
            stage: StageOutput {
                rows,
                bytes,
                sha256: None,
                columns: Vec::new(),
                column_count: 0,
                new_columns: Vec::new(),
                new_column_count: 0,
                staging_table: None,
                written_for_a_new_table: false,
                keys_strictly_increasing: false,
                target_table: "t".into(),
            },
        }
    }

    #[test]
    fn batches_are_consecutive_within_every_bound_and_a_large_file_goes_alone() {
        let bounds = BatchBounds {
            max_files: 3,
            max_rows: 100,
            max_bytes: 1000,
        };
        let files = [
            pending(10, 10),
            pending(10, 10),
            pending(10, 10),
            pending(10, 10),  // a fourth file: max_files
            pending(95, 10),  // 10 + 95 rows > 100
            pending(500, 10), // beyond max_rows on its own
            pending(1, 990),
            pending(1, 20), // 990 + 20 bytes > 1000
        ];
        let all: Vec<usize> = (0..files.len()).collect();
        assert_eq!(
            batches(&all, &files, &bounds),
            [vec![0, 1, 2], vec![3], vec![4], vec![5], vec![6], vec![7]]
        );
        assert_eq!(batches(&[0, 1], &files, &bounds), [vec![0, 1]]);
    }
}
