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
use std::time::SystemTime;

use deltalake::datafusion::prelude::{DataFrame, SessionContext};
use deltalake::DeltaTable;

use super::adopt::adopt_staged_files;
use super::arrival::Arrivals;
use super::columns::{Columns, Conversion};
use super::combine::{combine, single};
use super::cost::{Budget, Over};
use super::merge::{
    backoff, first_load, is_out_of_memory, merge_into, newest_applied, one_row_per_key, recorded,
    session, staged_rows, Attempt, CommitRecord, Committed,
};
use super::{
    file_identity, Changes, Pending, SharedCommit, UpsertOutcome, UpsertOutput, MAX_ATTEMPTS,
};
use crate::catalog::CatalogOutcome;
use crate::change_sample::ChangeSample;
use crate::config::{BatchBounds, Feed};
use crate::delta::{arrow_schema, TableLocation};
use crate::environment::Environment;
use crate::error::{Error, Result};
use crate::read::LINE_COLUMN;
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

/// MERGEs `files` in the order given, in consecutive batches of one feed's files within its
/// bounds, one commit per batch. One result per file, in the order given.
pub async fn upsert_files(env: &Environment, files: &[Pending]) -> Vec<Result<UpsertOutput>> {
    let bounds = |feed: &str| {
        env.config
            .feed_named(feed)
            .map(|f| f.batch.clone())
            .unwrap_or_default()
    };
    let partitioned = |feed: &str| {
        env.config
            .feed_named(feed)
            .is_ok_and(|f| !f.partition_by.is_empty())
    };
    let mut results = Vec::with_capacity(files.len());
    for batch in batches(files, &bounds, &partitioned) {
        let pending: Vec<&Pending> = batch.iter().map(|&i| &files[i]).collect();
        let outcomes = upsert_batch(env, &pending).await;
        results.extend(
            pending
                .iter()
                .zip(outcomes)
                .map(|(file, outcome)| outcome.map_err(|e| named_if_out_of_memory(env, file, e))),
        );
    }
    results
}

/// A MERGE whose operators ran out of their memory pool is too large for the function, as one
/// over its time is: named, so that the state machine quarantines the file (or hands it to the
/// container tier, which has more) instead of retrying.
fn named_if_out_of_memory(env: &Environment, file: &Pending, e: Error) -> Error {
    if !is_out_of_memory(&e) {
        return e;
    }
    let (file_key, table) = (file.run.key.clone(), file.stage.target_table.clone());
    let work = format!(
        "needed more memory for {} staged rows than its operators could spill to disk ({e})",
        file.stage.rows
    );
    let budget = env.merge_memory.as_ref().map_or_else(
        || "the process's memory".to_string(),
        |m| {
            format!(
                "a memory pool of {} MB ({})",
                m.bytes / (1024 * 1024),
                m.source
            )
        },
    );
    Over::in_tier(env.container_tier).error(file_key, table, work, budget)
}

/// Splits `files` into consecutive batches of one feed's files within that feed's bounds; a file
/// beyond a bound on its own is a batch of one. For a `partitioned` feed, a file that brings a
/// column no earlier file of the batch has begins a batch: delta-rs 1.1's schema evolution puts a
/// partitioned table's partition columns after its other columns and the new ones after them, so
/// two files' new columns added in one commit would be ordered unlike in two commits.
pub fn batches(
    files: &[Pending],
    bounds_of: &dyn Fn(&str) -> BatchBounds,
    partitioned: &dyn Fn(&str) -> bool,
) -> Vec<Vec<usize>> {
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let (mut rows, mut bytes) = (0u64, 0u64);
    for (i, file) in files.iter().enumerate() {
        let (stage, feed) = (&file.stage, &file.run.feed);
        let bounds = bounds_of(feed);
        let fits = batches.last().is_some_and(|batch| {
            files[batch[0]].run.feed == *feed
                && !(partitioned(feed) && brings_columns(files, batch, stage))
                && batch.len() < bounds.max_files
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

/// A file of the batch, read once for every attempt.
struct Prepared<'a> {
    pending: &'a Pending,
    identity: String,
    /// The staging table and its rows; `None` when there is none (no rows, or removed after an
    /// earlier commit applied the file).
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
    /// Decided without merging; `by_batch`: because of a file merged in this commit (an older
    /// upload of its key, or the same upload), so it stands only if the commit lands.
    Decided {
        outcome: UpsertOutcome,
        by_batch: bool,
    },
    /// Merged in this round's commit: its position among the merged files.
    Taken(usize),
}

impl Slot {
    /// Whether the slot stands or falls with this round's commit.
    fn needs_the_commit(&self) -> bool {
        matches!(self, Slot::Taken(_) | Slot::Decided { by_batch: true, .. })
    }
}

/// How a round ended.
enum Round {
    Done(Vec<Result<UpsertOutput>>),
    /// A concurrent commit won; the outcomes if the lane gives up now.
    Conflict {
        reason: String,
        giving_up: Vec<Result<UpsertOutput>>,
    },
    /// The commit of a batch failed: its files are merged one at a time instead, so that the
    /// file at fault fails alone.
    OneByOne,
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
    let ctx = match session(env.merge_memory.as_ref()) {
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
            Round::Done(results) => {
                remove_staging(env, &prepared, &results).await;
                return results;
            }
            Round::Conflict { reason, .. } if attempt < MAX_ATTEMPTS => {
                let delay = backoff(attempt);
                tracing::info!(attempt, ?delay, %reason, table = %target.name(), "commit conflict; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Round::Conflict { giving_up, .. } => {
                remove_staging(env, &prepared, &giving_up).await;
                return giving_up;
            }
            Round::OneByOne => {
                tracing::warn!(files = files.len(), table = %target.name(), "the batch's commit failed; merging its files one at a time");
                let mut results = Vec::new();
                for file in files {
                    results.extend(Box::pin(upsert_batch(env, &[*file])).await);
                }
                return results;
            }
        }
    }
}

/// Whether `stage` has a column that no file of `batch` has (or may have: a stage lists at
/// most [`crate::bounded::MAX_LISTED_NAMES`] columns).
fn brings_columns(files: &[Pending], batch: &[usize], stage: &StageOutput) -> bool {
    let complete = |s: &StageOutput| s.columns.len() as u64 == s.column_count;
    if !complete(stage) || batch.iter().any(|&i| !complete(&files[i].stage)) {
        return true;
    }
    let known: HashSet<&String> = batch
        .iter()
        .flat_map(|&i| &files[i].stage.columns)
        .collect();
    stage.columns.iter().any(|c| !known.contains(c))
}

/// What a file's upsert needs that no commit changes: its identity, its staged rows, and
/// whether a key repeats among them.
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
            let (rows, repeated_keys) = staged_rows(ctx, feed, &table, stage)
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

/// Decides every file against a fresh snapshot and commits the ones to merge.
async fn round(
    env: &Environment,
    feed: &Feed,
    target: &TableLocation,
    ctx: &SessionContext,
    prepared: &[Result<Prepared<'_>>],
    attempt: u32,
) -> Round {
    let every = |e: Error| Round::Done(prepared.iter().map(|_| Err(e.clone())).collect());
    let table = match target.open().await {
        Ok(table) => table,
        Err(e) => return every(e),
    };
    let mut columns = match table.as_ref().map(arrow_schema).transpose() {
        Ok(schema) => Columns::of_table(schema.as_deref()),
        Err(e) => return every(e),
    };
    let mut batch = Batch {
        together: prepared
            .iter()
            .filter_map(|p| p.as_ref().ok().map(|p| &p.pending.run))
            .collect(),
        ..Batch::default()
    };
    let mut slots = Vec::new();
    let mut taken: Vec<(&Prepared, Vec<Conversion>)> = Vec::new();
    for p in prepared {
        let slot = match p {
            Err(e) => Slot::Failed(e.clone()),
            Ok(p) => match decide(env, feed, target, table.as_ref(), p, &mut batch).await {
                Err(e) => Slot::Failed(e),
                Ok(Some(slot)) => slot,
                Ok(None) => {
                    let staged = staged(p);
                    match columns.admit(feed, &p.pending.run.key, &staged.rows).await {
                        Err(e) => Slot::Failed(e),
                        Ok(conversions) => {
                            batch.take(p);
                            taken.push((p, conversions));
                            Slot::Taken(taken.len() - 1)
                        }
                    }
                }
            },
        };
        slots.push(slot);
    }
    let version = table.as_ref().and_then(|t| t.version());
    let committed = if taken.is_empty() {
        None
    } else {
        // Measured now: a later round or batch of the same invocation has less time left.
        let budgets = Budget::of(feed, env.deadline, env.container_tier, SystemTime::now());
        match commit(feed, target, table, ctx, &columns, &taken, &budgets).await {
            Ok(committed) => Some(committed),
            Err(Attempt::Conflict(reason)) => {
                let gave_up = Error::CommitConflict {
                    table: target.name(),
                    attempts: attempt,
                };
                for slot in &mut slots {
                    if slot.needs_the_commit() {
                        *slot = Slot::Failed(gave_up.clone());
                    }
                }
                let giving_up = outputs(slots, prepared, target, version, attempt, None);
                return Round::Conflict { reason, giving_up };
            }
            // Several files: one of them may be at fault; alone, it fails by itself.
            Err(Attempt::Failed(_)) if prepared.len() > 1 => return Round::OneByOne,
            Err(Attempt::Failed(e)) => {
                for slot in &mut slots {
                    if slot.needs_the_commit() {
                        *slot = Slot::Failed(e.clone());
                    }
                }
                None
            }
        }
    };
    let version = committed.as_ref().map_or(version, |(c, _)| c.version);
    let (sample, catalog) = match (&committed, version) {
        (Some(_), Some(version)) => (
            change_sample(feed, target, version).await,
            registered(env, feed, target).await,
        ),
        _ => (None, None),
    };
    let mut outputs = outputs(
        slots,
        prepared,
        target,
        version,
        attempt,
        committed.as_ref(),
    );
    for output in outputs.iter_mut().flatten() {
        if output.outcome == UpsertOutcome::Applied {
            output.change_sample = sample.clone();
            output.catalog = catalog.clone();
        }
    }
    Round::Done(outputs)
}

/// With the change data feed on, a few keys of what the commit that made `version` changed, for
/// the email. The commit is in: a sample that cannot be read is logged and left out.
async fn change_sample(feed: &Feed, target: &TableLocation, version: u64) -> Option<ChangeSample> {
    if !feed.change_data_feed || feed.email_sample == 0 {
        return None;
    }
    let read = crate::change_sample::read(target, version, &feed.keys, feed.email_sample).await;
    read.inspect_err(|e| tracing::warn!(error = %e, version, "could not read the commit's changes for the email"))
        .ok()
}

/// The table registered in the deployment's catalog (if it has one) as the commit left it.
async fn registered(
    env: &Environment,
    feed: &Feed,
    target: &TableLocation,
) -> Option<CatalogOutcome> {
    let catalog = env.catalog.as_deref()?;
    let outcome = crate::catalog::sync(catalog, feed, target).await;
    if let Some(e) = &outcome.error {
        tracing::warn!(error = %e, table = %outcome.table, "could not register the table in the catalog");
    }
    Some(outcome)
}

/// Each file's result from its slot.
fn outputs(
    slots: Vec<Slot>,
    prepared: &[Result<Prepared<'_>>],
    target: &TableLocation,
    version: Option<u64>,
    attempt: u32,
    committed: Option<&(Committed, Shares)>,
) -> Vec<Result<UpsertOutput>> {
    slots
        .into_iter()
        .zip(prepared)
        .map(|(slot, p)| {
            let identity = || p.as_ref().map(|p| p.identity.clone()).unwrap_or_default();
            let output = |outcome, changes| {
                let mut output = UpsertOutput::new(outcome, target, version, identity(), changes);
                output.attempts = attempt;
                let stage = p.as_ref().ok().map(|p| &p.pending.stage);
                output.rows_rejected = stage.map_or(0, StageOutput::rejected_rows);
                output.rows_warned = stage.map_or(0, StageOutput::warned_rows);
                output
            };
            match slot {
                Slot::Failed(e) => Err(e),
                Slot::Decided { outcome, .. } => Ok(output(outcome, Changes::default())),
                Slot::Taken(i) => {
                    let (committed, shares) = committed.expect("taken files committed");
                    let mut applied = output(UpsertOutcome::Applied, committed.changes);
                    applied.shared_commit = shares.as_ref().map(|s| s[i]);
                    Ok(applied)
                }
            }
        })
        .collect()
}

/// What the files taken so far in a round mean for the next ones.
#[derive(Default)]
struct Batch<'a> {
    /// Every run of the batch (for arrival order, they are merged together).
    together: Vec<&'a RunInput>,
    arrivals: Option<Arrivals>,
    /// Per key: the newest upload the table records, and the newest one taken.
    recorded_newest: HashMap<&'a str, UploadOrder>,
    taken_newest: HashMap<&'a str, UploadOrder>,
    taken_identities: HashSet<&'a str>,
}

impl<'a> Batch<'a> {
    fn take(&mut self, p: &'a Prepared<'a>) {
        let run = &p.pending.run;
        let newest = self
            .taken_newest
            .entry(run.key.as_str())
            .or_insert(UploadOrder::UNKNOWN);
        *newest = (*newest).max(run.upload.order());
        self.taken_identities.insert(p.identity.as_str());
    }
}

/// A file's outcome when the snapshot (or a file taken before it) decides it; `None` when it is
/// to merge. The order of the checks is a single file's: no rows, recorded, superseded.
async fn decide<'a>(
    env: &Environment,
    feed: &Feed,
    target: &TableLocation,
    table: Option<&DeltaTable>,
    p: &'a Prepared<'a>,
    batch: &mut Batch<'a>,
) -> Result<Option<Slot>> {
    let run = &p.pending.run;
    let decided = |outcome, by_batch| Ok(Some(Slot::Decided { outcome, by_batch }));
    if p.pending.stage.staging_table.is_none() {
        return decided(UpsertOutcome::NothingToApply, false);
    }
    if let Some(table) = table {
        if recorded(table, target, &p.identity).await?.is_some() {
            return decided(UpsertOutcome::AlreadyApplied, false);
        }
    }
    // The same upload twice in one batch (a repeated run): merged once, by the first.
    if batch.taken_identities.contains(p.identity.as_str()) {
        return decided(UpsertOutcome::AlreadyApplied, true);
    }
    let recorded_newest = match (batch.recorded_newest.get(run.key.as_str()), table) {
        (Some(order), _) => *order,
        (None, Some(table)) => newest_applied(table, target, run).await?,
        (None, None) => UploadOrder::UNKNOWN,
    };
    batch
        .recorded_newest
        .insert(run.key.as_str(), recorded_newest);
    if recorded_newest > run.upload.order() {
        return decided(UpsertOutcome::Superseded, false);
    }
    let taken_newest = batch.taken_newest.get(run.key.as_str());
    if taken_newest.is_some_and(|newest| *newest > run.upload.order()) {
        return decided(UpsertOutcome::Superseded, true);
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
        if batch.arrivals.is_none() {
            batch.arrivals = Some(Arrivals::load(env, feed).await?);
        }
        let arrivals = batch.arrivals.as_ref().expect("loaded above");
        arrivals.check(run, &batch.together)?;
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
    budgets: &[Budget],
) -> std::result::Result<(Committed, Shares), Attempt> {
    let record = CommitRecord::for_files(
        feed,
        &taken
            .iter()
            .map(|(p, _)| (p.pending, p.identity.as_str()))
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
        let rows = source_rows(feed, columns, lone, conversions, false)
            .and_then(|rows| single(feed, rows))
            .map_err(delta_error)?;
        (rows, None)
    } else {
        let aligned = taken
            .iter()
            .map(|(p, conversions)| source_rows(feed, columns, staged(p), conversions, true))
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
        Some(table) => merge_into(feed, target, table, ctx, rows, &record, budgets).await?,
    };
    Ok((committed, shares))
}

/// A file's rows as its commit merges them: aligned to the commit's columns and converted, then
/// one per key (after the conversion, which may make keys equal or reorder sequence values).
fn source_rows(
    feed: &Feed,
    columns: &Columns,
    staged: &Staged,
    conversions: &[Conversion],
    plain_types: bool,
) -> deltalake::datafusion::error::Result<DataFrame> {
    let aligned = columns.align(feed, staged.rows.clone(), conversions, plain_types)?;
    let resolve = staged.repeated_keys || conversions.iter().any(|c| c.touches(feed));
    let rows = if resolve {
        one_row_per_key(feed, aligned)?
    } else {
        aligned
    };
    rows.drop_columns(&[LINE_COLUMN])
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
                lane: String::new(),
                rejects: None,
                expectations: Vec::new(),
                chunks: None,
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
        assert_eq!(
            batches(&files, &|_| bounds.clone(), &|_| false),
            [vec![0, 1, 2], vec![3], vec![4], vec![5], vec![6], vec![7]]
        );
        // Files of another feed (another table, perhaps) keep their place in the order.
        let mut mixed = vec![pending(1, 1), pending(1, 1), pending(1, 1), pending(1, 1)];
        mixed[2].run.feed = "g".into();
        assert_eq!(
            batches(&mixed, &|_| bounds.clone(), &|_| false),
            [vec![0, 1], vec![2], vec![3]]
        );
    }

    #[test]
    fn of_a_partitioned_table_a_file_bringing_columns_begins_a_commit() {
        let with = |columns: &[&str]| {
            let mut file = pending(1, 1);
            file.stage.columns = columns.iter().map(|c| c.to_string()).collect();
            file.stage.column_count = columns.len() as u64;
            file
        };
        let files = [
            with(&["a", "b"]),
            with(&["b", "a"]),
            with(&["a", "b", "c"]),
            with(&["a"]),
            with(&["a", "c", "d"]),
        ];
        let bounds = BatchBounds::default();
        assert_eq!(
            batches(&files, &|_| bounds.clone(), &|_| true),
            [vec![0, 1], vec![2, 3], vec![4]]
        );
        assert_eq!(
            batches(&files, &|_| bounds.clone(), &|_| false),
            [vec![0, 1, 2, 3, 4]]
        );
        // A file listing only some of its columns may bring any.
        let mut truncated = with(&["a", "b"]);
        truncated.stage.column_count = 300;
        let files = [with(&["a", "b"]), truncated];
        assert_eq!(
            batches(&files, &|_| bounds.clone(), &|_| true),
            [vec![0], vec![1]]
        );
    }
}
