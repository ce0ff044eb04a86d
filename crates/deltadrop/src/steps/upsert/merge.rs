//! The MERGE of a staging table into its target, with conflict retries and the first load.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use deltalake::arrow::datatypes::DataType;
use deltalake::datafusion::common::Column;
use deltalake::datafusion::functions_aggregate::expr_fn::count;
use deltalake::datafusion::functions_window::expr_fn::row_number;
use deltalake::datafusion::logical_expr::ExprFunctionExt;
use deltalake::datafusion::prelude::{cast, lit, DataFrame, Expr, SessionContext};
use deltalake::delta_datafusion::DeltaSessionContext;
use deltalake::errors::DeltaTableError;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::operations::merge::MergeMetrics;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;
use futures::TryStreamExt;
use rand::Rng;

use super::adopt::adopt_staged_files;
use super::arrival::wait_for_earlier_files;
use super::{file_identity, newest_upload_ids, Changes, UpsertOutcome, UpsertOutput, MAX_ATTEMPTS};
use crate::config::{Feed, SchemaPolicy};
use crate::delta::{is_conflict, TableLocation};
use crate::environment::Environment;
use crate::error::{Error, Result};
use crate::read::LINE_COLUMN;
use crate::steps::{RunInput, StageOutput};
use crate::upload::UploadOrder;

const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
const RANK_COLUMN: &str = "_deltadrop_rank";
const COUNT_COLUMN: &str = "_deltadrop_count";

/// The version the table records for an application transaction id.
async fn recorded(table: &DeltaTable, target: &TableLocation, app_id: &str) -> Result<Option<i64>> {
    let delta_error = |e: DeltaTableError| Error::delta(target.name(), e);
    table
        .snapshot()
        .map_err(delta_error)?
        .transaction_version(table.log_store().as_ref(), app_id)
        .await
        .map_err(delta_error)
}

/// The order of the newest upload of the run's key that the table records.
async fn newest_applied(
    table: &DeltaTable,
    target: &TableLocation,
    run: &RunInput,
) -> Result<UploadOrder> {
    let [high, low] = newest_upload_ids(run);
    let high = recorded(table, target, &high).await?;
    let low = recorded(table, target, &low).await?;
    Ok(UploadOrder(high.unwrap_or(0), low.unwrap_or(0)))
}

/// `AlreadyApplied` when the table records this upload, `Superseded` when it records a newer
/// upload of the same key; `None` when the upload is still to merge.
async fn already_decided(
    table: &DeltaTable,
    target: &TableLocation,
    run: &RunInput,
    identity: &str,
) -> Result<Option<UpsertOutput>> {
    let outcome = if recorded(table, target, identity).await?.is_some() {
        UpsertOutcome::AlreadyApplied
    } else if newest_applied(table, target, run).await? > run.upload.order() {
        UpsertOutcome::Superseded
    } else {
        return Ok(None);
    };
    Ok(Some(UpsertOutput::new(
        outcome,
        target,
        table.version(),
        identity.to_string(),
        Changes::default(),
    )))
}

/// MERGEs the run's staging table into the feed's target table, exactly once per upload: the
/// first file creates the table; a MERGE that lost to a concurrent commit is re-run from a fresh
/// snapshot (up to `MAX_ATTEMPTS`); then the staging table is removed.
pub async fn upsert(
    env: &Environment,
    run: &RunInput,
    stage: &StageOutput,
) -> Result<UpsertOutput> {
    run.validate()?;
    let feed = env.config.feed_named(&run.feed)?;
    let target = env.table(&feed.table)?;
    let identity = file_identity(run, stage)?;
    let Some(staging_name) = &stage.staging_table else {
        let version = target.open().await?.and_then(|t| t.version());
        return Ok(UpsertOutput::new(
            UpsertOutcome::NothingToApply,
            &target,
            version,
            identity,
            Changes::default(),
        ));
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
    let Some(staged) = staging.open().await? else {
        // A retry after a commit whose response was lost (timeout, crash): the staging table
        // was removed after the commit, and the table records the file. Report the done work.
        if let Some(table) = target.open().await? {
            if let Some(done) = already_decided(&table, &target, run, &identity).await? {
                return Ok(done);
            }
        }
        return Err(Error::InvalidInput {
            message: format!(
                "the staging table {staging_name} does not exist, and the target table does not \
                 record this file as applied"
            ),
        });
    };

    // The source is planned once: the duplicate-key check need not run again on every retry.
    let ctx = session().map_err(|e| Error::delta(target.name(), e))?;
    let (rows, had_duplicate_keys) = deduplicated_source(&ctx, feed, &staged, stage)
        .await
        .map_err(|e| Error::delta(staged.table_url().to_string(), e))?;
    // The staged files hold exactly the rows a new table gets only without repeated keys.
    let adoptable = stage.written_for_a_new_table && !had_duplicate_keys;
    let source = Source {
        rows,
        adoptable: adoptable.then_some(&staged),
    };
    let mut attempt = 1;
    let output = loop {
        match merge_once(env, feed, run, &target, &ctx, &source, &identity).await {
            Ok(mut output) => {
                output.attempts = attempt;
                break output;
            }
            Err(Attempt::Conflict(reason)) if attempt < MAX_ATTEMPTS => {
                let delay = backoff(attempt);
                tracing::info!(attempt, ?delay, %reason, table = %target.name(), "commit conflict; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(Attempt::Conflict(_)) => {
                return Err(Error::CommitConflict {
                    table: target.name(),
                    attempts: attempt,
                })
            }
            Err(Attempt::Failed(e)) => return Err(e),
        }
    };
    if let Err(e) = staging.remove().await {
        tracing::warn!(error = %e, staging = %staging.name(), "merged, but the staging table could not be removed");
    }
    Ok(output)
}

/// What a commit of the upsert records: the run (in the commit info) and the upload as applied.
pub(super) struct CommitRecord {
    run: serde_json::Value,
    transactions: Vec<Transaction>,
}

impl CommitRecord {
    /// The commit's properties; `metrics` become its `operationMetrics` (for an operation that
    /// records none of its own), which `deltadrop status` and other readers show.
    pub(super) fn properties(&self, metrics: Option<serde_json::Value>) -> CommitProperties {
        let mut info = vec![("deltadrop".to_string(), self.run.clone())];
        info.extend(metrics.map(|m| ("operationMetrics".to_string(), m)));
        CommitProperties::default()
            .with_metadata(info)
            .with_application_transactions(self.transactions.clone())
    }
}

/// The staged rows as a MERGE reads them, and the staging table when a first load can adopt
/// its files as they are ([`adopt_staged_files`]).
struct Source<'a> {
    rows: DataFrame,
    adoptable: Option<&'a DeltaTable>,
}

/// How one attempt at the commit ended, when it did not succeed.
pub(super) enum Attempt {
    /// A concurrent commit won: worth another attempt from a fresh snapshot.
    Conflict(String),
    /// Anything else: the step fails with it.
    Failed(Error),
}

impl Attempt {
    /// A conflict is worth another attempt from a fresh snapshot; anything else fails the step.
    fn from_delta(target: &TableLocation, e: DeltaTableError) -> Attempt {
        if is_conflict(&e) {
            Attempt::Conflict(e.to_string())
        } else {
            Attempt::Failed(Error::delta(target.name(), e))
        }
    }
}

impl From<Error> for Attempt {
    fn from(e: Error) -> Self {
        Attempt::Failed(e)
    }
}

/// Exponential backoff with full jitter.
fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1 << attempt.min(10))
        .min(BACKOFF_CAP);
    let millis =
        rand::thread_rng().gen_range(ceiling.as_millis() as u64 / 2..=ceiling.as_millis() as u64);
    Duration::from_millis(millis)
}

fn column(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

fn qualified(relation: &str, name: &str) -> Expr {
    Expr::Column(Column::new(Some(relation), name))
}

/// One MERGE from a fresh snapshot of the target.
async fn merge_once(
    env: &Environment,
    feed: &Feed,
    run: &RunInput,
    target: &TableLocation,
    ctx: &SessionContext,
    source: &Source<'_>,
    identity: &str,
) -> Result<UpsertOutput, Attempt> {
    let delta_error = |e: DeltaTableError| Attempt::from_delta(target, e);
    let data_columns: Vec<String> = source
        .rows
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|name| !feed.is_control_column(name))
        .collect();

    let now = chrono::Utc::now().timestamp_millis();
    let commit = CommitRecord {
        run: serde_json::json!({"run_id": run.run_id, "file": run.key, "feed": feed.name}),
        transactions: applied_transactions(run, identity, now),
    };
    let table = target.open().await?;
    if let Some(table) = &table {
        if let Some(done) = already_decided(table, target, run, identity).await? {
            return Ok(done);
        }
    }
    if feed.apply_in_arrival_order {
        wait_for_earlier_files(env, feed, run).await?;
    }
    let Some(table) = table else {
        return match source.adoptable {
            Some(staged) => adopt_staged_files(feed, target, staged, &commit, identity).await,
            None => {
                let commit = commit.properties(None);
                first_load(feed, target, ctx, source.rows.clone(), commit, identity).await
            }
        };
    };

    let rules = merge_rules(feed);
    let mut merge = table
        .merge(source.rows.clone(), rules.on)
        .with_source_alias("source")
        .with_target_alias("target")
        .with_merge_schema(feed.schema_policy == SchemaPolicy::Additive)
        .with_session_state(Arc::new(ctx.state()))
        .with_commit_properties(commit.properties(None));
    if let Some(condition) = rules.delete_when {
        merge = merge
            .when_matched_delete(|delete| delete.predicate(condition))
            .map_err(delta_error)?;
    }
    merge = merge
        .when_matched_update(|mut update| {
            if let Some(c) = rules.update_when {
                update = update.predicate(c);
            }
            for name in &data_columns {
                update = update.update(Column::new_unqualified(name), qualified("source", name));
            }
            update
        })
        .map_err(delta_error)?
        .when_not_matched_insert(|mut insert| {
            if let Some(c) = rules.insert_when {
                insert = insert.predicate(c);
            }
            for name in &data_columns {
                insert = insert.set(Column::new_unqualified(name), qualified("source", name));
            }
            insert
        })
        .map_err(delta_error)?;
    let (table, metrics) = merge.await.map_err(delta_error)?;
    Ok(applied(target, &table, &metrics, identity))
}

/// The conditions of a feed's MERGE, apart from any I/O: how a source row matches a target
/// row, and when a match is deleted or updated and an unmatched row inserted (`None`: always;
/// no `delete_when`: nothing is deleted).
#[derive(Debug)]
struct MergeRules {
    on: Expr,
    delete_when: Option<Expr>,
    update_when: Option<Expr>,
    insert_when: Option<Expr>,
}

fn merge_rules(feed: &Feed) -> MergeRules {
    let on = feed
        .keys
        .iter()
        .map(|k| qualified("target", k).eq(qualified("source", k)))
        .reduce(Expr::and)
        .expect("validated: at least one key");
    // A row never replaces a newer one: with a sequence column, only a source row whose sequence
    // is not older than the target's may update or delete it.
    let not_older = feed.sequence_column.as_ref().map(|s| {
        qualified("target", s)
            .is_null()
            .or(qualified("source", s).gt_eq(qualified("target", s)))
    });
    let is_delete = feed.change_type.as_ref().map(|c| {
        qualified("source", &c.column)
            .is_not_null()
            .and(qualified("source", &c.column).eq(lit(c.delete_value.clone())))
    });
    let all_of = |parts: [Option<Expr>; 2]| parts.into_iter().flatten().reduce(Expr::and);
    let not_delete = is_delete.clone().map(|d| !d);
    MergeRules {
        on,
        delete_when: is_delete.map(|d| all_of([Some(d), not_older.clone()]).expect("one part")),
        update_when: all_of([not_older, not_delete.clone()]),
        insert_when: not_delete,
    }
}

/// What a commit records: this upload as applied and, when its order is known, that order as the
/// key's newest. A concurrent commit that records any of these ids makes this one conflict
/// (`ConcurrentTransaction`), so that its retry sees the other upload.
fn applied_transactions(run: &RunInput, identity: &str, now: i64) -> Vec<Transaction> {
    let mut transactions = vec![Transaction::new_with_last_update(identity, 1, Some(now))];
    let order = run.upload.order();
    if order != UploadOrder::UNKNOWN {
        let [high, low] = newest_upload_ids(run);
        transactions.push(Transaction::new_with_last_update(high, order.0, Some(now)));
        transactions.push(Transaction::new_with_last_update(low, order.1, Some(now)));
    }
    transactions
}

/// delta-rs plans its writes with its own planner: a plain SessionContext cannot run them.
/// One partition: rows are written in the order they come, so a sorted input gives files with
/// narrow key ranges that later MERGEs can skip, and a MERGE needs less memory. It costs no time
/// here: the Parquet writer and the scan still overlap on two cores (docs/benchmarks.md), and a
/// Lambda function below 1769 MB has one vCPU anyway.
fn session() -> Result<SessionContext, DeltaTableError> {
    let overrides = HashMap::from([(
        "datafusion.execution.target_partitions".to_string(),
        "1".to_string(),
    )]);
    Ok(DeltaSessionContext::new_with_session_overrides(&overrides)?.into())
}

fn applied(
    target: &TableLocation,
    table: &DeltaTable,
    m: &MergeMetrics,
    identity: &str,
) -> UpsertOutput {
    let changes = Changes {
        created_table: false,
        rows_inserted: m.num_target_rows_inserted as u64,
        rows_updated: m.num_target_rows_updated as u64,
        rows_deleted: m.num_target_rows_deleted as u64,
        rows_copied: m.num_target_rows_copied as u64,
        files_scanned: m.num_target_files_scanned as u64,
        files_skipped: m.num_target_files_skipped_during_scan as u64,
        files_added: m.num_target_files_added as u64,
        files_removed: m.num_target_files_removed as u64,
    };
    UpsertOutput::new(
        UpsertOutcome::Applied,
        target,
        table.version(),
        identity.to_string(),
        changes,
    )
}

/// What the first file writes: its rows without deletes (of keys the table never had) and
/// without the change-type column, with plain string and binary types (the staging scan yields
/// views; the table stores what every reader expects).
fn rows_of_a_new_table(
    feed: &Feed,
    source: DataFrame,
) -> Result<DataFrame, deltalake::datafusion::error::DataFusionError> {
    let mut rows = source;
    if let Some(change) = &feed.change_type {
        let flag = column(&change.column);
        rows = rows
            .filter(
                flag.clone()
                    .is_null()
                    .or(flag.not_eq(lit(change.delete_value.clone()))),
            )?
            .drop_columns(&[change.column.as_str()])?;
    }
    let plain_types: Vec<Expr> = rows
        .schema()
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8View | DataType::LargeUtf8 => {
                cast(column(f.name()), DataType::Utf8).alias(f.name())
            }
            DataType::BinaryView | DataType::LargeBinary => {
                cast(column(f.name()), DataType::Binary).alias(f.name())
            }
            _ => column(f.name()),
        })
        .collect();
    rows.select(plain_types)
}

/// The first file of a table writes it (one commit: schema, properties, rows and the file's
/// application transaction) instead of merging into an empty table. Two first files racing:
/// one commit wins version 0, the other conflicts and merges into the winner's table.
async fn first_load(
    feed: &Feed,
    target: &TableLocation,
    ctx: &SessionContext,
    source: DataFrame,
    commit: CommitProperties,
    identity: &str,
) -> Result<UpsertOutput, Attempt> {
    let rows = rows_of_a_new_table(feed, source)
        .map_err(|e| Attempt::Failed(Error::delta(target.name(), e)))?;
    let table = target
        .handle()
        .await?
        .write(Vec::new())
        .with_input_plan(rows.logical_plan().clone())
        .with_session_state(Arc::new(ctx.state()))
        .with_save_mode(SaveMode::ErrorIfExists)
        .with_configuration(new_table_properties(feed))
        // No internal retry: a lost race for version 0 must not become a second blind append.
        .with_commit_properties(commit.with_max_retries(0))
        .await;
    let table = match table {
        Ok(table) => table,
        Err(e) => return Err(lost_the_first_commit(target, e).await),
    };
    let rows = last_commit_metric(&table, "num_added_rows").await;
    let files = last_commit_metric(&table, "num_added_files").await;
    Ok(created(target, &table, identity, rows, files))
}

/// The output of a run whose commit created the table with `rows` in `files`.
pub(super) fn created(
    target: &TableLocation,
    table: &DeltaTable,
    identity: &str,
    rows: u64,
    files: u64,
) -> UpsertOutput {
    let changes = Changes {
        created_table: true,
        rows_inserted: rows,
        files_added: files,
        ..Changes::default()
    };
    UpsertOutput::new(
        UpsertOutcome::Applied,
        target,
        table.version(),
        identity.to_string(),
        changes,
    )
}

/// The table properties a feed's table is created with.
pub(super) fn new_table_properties(feed: &Feed) -> [(String, Option<String>); 1] {
    [(
        "delta.targetFileSize".to_string(),
        Some(feed.target_file_bytes().to_string()),
    )]
}

/// Why a table's first commit failed: whatever the error says, a table that exists now means
/// another run created it first (a conflict: merge into it), else the error itself.
pub(super) async fn lost_the_first_commit(target: &TableLocation, e: DeltaTableError) -> Attempt {
    match target.open().await {
        Ok(Some(_)) => Attempt::Conflict(format!("the table was created meanwhile: {e}")),
        _ => Attempt::from_delta(target, e),
    }
}

/// A number from the operation metrics of the table's last commit (0 when absent).
async fn last_commit_metric(table: &DeltaTable, name: &str) -> u64 {
    let Ok(commits) = table.history(Some(1)).try_collect::<Vec<_>>().await else {
        return 0;
    };
    let metric = commits
        .first()
        .and_then(|c| c.info.get("operationMetrics"))
        .and_then(|m| m.get(name))
        .cloned();
    match metric {
        Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

/// The staged rows with one row per key: the highest sequence value wins, then the last line;
/// and whether any key was repeated. delta-rs fails (or inserts twice) when several source rows
/// carry the same key.
async fn deduplicated_source(
    ctx: &SessionContext,
    feed: &Feed,
    staged: &DeltaTable,
    stage: &StageOutput,
) -> Result<(DataFrame, bool), DeltaTableError> {
    let rows = ctx.read_table(staged.table_provider().await?)?;
    // Keys that only increase (a sorted file) cannot repeat: no aggregate over them needed.
    if stage.keys_strictly_increasing || !has_duplicate_keys(&rows, feed).await? {
        // The common case: ranking would sort every staged row in memory for nothing.
        return Ok((rows.drop_columns(&[LINE_COLUMN])?, false));
    }
    let mut order = Vec::new();
    if let Some(sequence) = &feed.sequence_column {
        order.push(column(sequence).sort(false, false));
    }
    order.push(column(LINE_COLUMN).sort(false, false));
    let rank = row_number()
        .partition_by(feed.keys.iter().map(|k| column(k)).collect())
        .order_by(order)
        .build()?;
    let newest = rows
        .with_column(RANK_COLUMN, rank)?
        .filter(column(RANK_COLUMN).eq(lit(1u64)))?
        .drop_columns(&[RANK_COLUMN, LINE_COLUMN])?;
    Ok((newest, true))
}

/// Whether any key occurs on more than one staged row: an aggregate that reads the key columns
/// only and stops at the first repeated key.
async fn has_duplicate_keys(rows: &DataFrame, feed: &Feed) -> Result<bool, DeltaTableError> {
    let keys: Vec<Expr> = feed.keys.iter().map(|k| column(k)).collect();
    let repeated = rows
        .clone()
        .select(keys.clone())?
        .aggregate(keys, vec![count(lit(1)).alias(COUNT_COLUMN)])?
        .filter(column(COUNT_COLUMN).gt(lit(1i64)))?
        .limit(0, Some(1))?
        .collect()
        .await?;
    Ok(repeated.iter().any(|batch| batch.num_rows() > 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn rules(extra: &str) -> MergeRules {
        let toml = format!(
            "[[feeds]]\nname = \"f\"\nincoming = \"in/\"\ntable = \"t\"\nkeys = [\"id\", \"day\"]\n{extra}"
        );
        merge_rules(&Config::from_toml(&toml, "test").unwrap().feeds[0])
    }

    fn text(expr: &Option<Expr>) -> Option<String> {
        expr.as_ref().map(|e| e.to_string())
    }

    #[test]
    fn a_plain_feed_matches_on_every_key_and_always_updates_or_inserts() {
        let plain = rules("");
        assert_eq!(
            plain.on.to_string(),
            "target.id = source.id AND target.day = source.day"
        );
        assert_eq!(
            (
                text(&plain.delete_when),
                text(&plain.update_when),
                text(&plain.insert_when)
            ),
            (None, None, None)
        );
    }

    #[test]
    fn a_sequence_column_keeps_newer_target_rows() {
        let sequenced = rules("sequence_column = \"seq\"\n");
        assert_eq!(
            text(&sequenced.update_when).unwrap(),
            "target.seq IS NULL OR source.seq >= target.seq"
        );
        assert_eq!(
            (text(&sequenced.delete_when), text(&sequenced.insert_when)),
            (None, None)
        );
    }

    #[test]
    fn delete_rows_delete_matches_and_insert_nothing_and_respect_the_sequence() {
        let both = rules(
            "sequence_column = \"seq\"\nchange_type = { column = \"op\", delete_value = \"D\" }\n",
        );
        let is_delete = "source.op IS NOT NULL AND source.op = Utf8(\"D\")";
        let not_older = "target.seq IS NULL OR source.seq >= target.seq";
        assert_eq!(
            text(&both.delete_when).unwrap(),
            format!("{is_delete} AND ({not_older})")
        );
        // DataFusion prints NOT without parentheses: look at the trees instead.
        let negated = |e: &Expr| match e {
            Expr::Not(inner) => inner.to_string(),
            other => panic!("not a negation: {other}"),
        };
        assert_eq!(negated(both.insert_when.as_ref().unwrap()), is_delete);
        match both.update_when.unwrap() {
            Expr::BinaryExpr(and)
                if and.op == deltalake::datafusion::logical_expr::Operator::And =>
            {
                assert_eq!(and.left.to_string(), not_older);
                assert_eq!(negated(&and.right), is_delete);
            }
            other => panic!("not a conjunction: {other}"),
        }
    }
}
