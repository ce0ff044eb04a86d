//! The commits of the upsert: a MERGE into the target, or the first load that creates it; the
//! MERGE's rules; and the resolution of a file's repeated keys.

use std::sync::Arc;
use std::time::Duration;

use deltalake::arrow::datatypes::DataType;
use deltalake::datafusion::common::config::SpillCompression;
use deltalake::datafusion::common::{Column, JoinType};
use deltalake::datafusion::execution::memory_pool::{FairSpillPool, MemoryConsumer, MemoryPool};
use deltalake::datafusion::execution::runtime_env::RuntimeEnvBuilder;
use deltalake::datafusion::functions_aggregate::expr_fn::{count, first_value};
use deltalake::datafusion::prelude::{cast, lit, DataFrame, Expr, SessionContext};
use deltalake::delta_datafusion::{DeltaRuntimeEnvBuilder, DeltaSessionContext};
use deltalake::errors::DeltaTableError;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::Transaction;
use deltalake::operations::merge::MergeMetrics;
use deltalake::parquet::basic::Compression;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::DeltaTable;
use futures::TryStreamExt;
use rand::Rng;

use super::by_partition::first_load_by_partition;
use super::combine::THRESHOLD_COLUMN;
use super::cost::{touched, Budget};
use super::{newest_upload_ids, Changes, Pending, ROWS_REJECTED, ROWS_WARNED};
use crate::config::{Feed, SchemaPolicy};
use crate::delta::{
    arrow_schema, commit_files, is_conflict, TableLocation, WRITE_ROW_GROUP_BYTES,
    WRITE_ROW_GROUP_ROWS,
};
use crate::environment::MergeMemory;
use crate::error::{Error, Result};
use crate::read::LINE_COLUMN;
use crate::steps::{RunInput, StageOutput};
use crate::upload::UploadOrder;

const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
const COUNT_COLUMN: &str = "_deltadrop_count";

/// The version the table records for an application transaction id.
pub(super) async fn recorded(
    table: &DeltaTable,
    target: &TableLocation,
    app_id: &str,
) -> Result<Option<i64>> {
    let delta_error = |e: DeltaTableError| Error::delta(target.name(), e);
    table
        .snapshot()
        .map_err(delta_error)?
        .transaction_version(table.log_store().as_ref(), app_id)
        .await
        .map_err(delta_error)
}

/// The order of the newest upload of the run's key that the table records.
pub(super) async fn newest_applied(
    table: &DeltaTable,
    target: &TableLocation,
    run: &RunInput,
) -> Result<UploadOrder> {
    let [high, low] = newest_upload_ids(run);
    let high = recorded(table, target, &high).await?;
    let low = recorded(table, target, &low).await?;
    Ok(UploadOrder(high.unwrap_or(0), low.unwrap_or(0)))
}

/// What a commit did to the table.
pub(super) struct Committed {
    /// The table's version after the commit.
    pub version: Option<u64>,
    /// The commit's figures.
    pub changes: Changes,
}

/// What a commit of the upsert records: the run (in the commit info) and the upload as applied.
pub(super) struct CommitRecord {
    run: serde_json::Value,
    transactions: Vec<Transaction>,
    /// The newest file the commit applies, to name in its errors.
    pub file: String,
}

impl CommitRecord {
    /// The record of a commit that applies `files` (pending files with their identities), in
    /// order: each upload as applied, per key the newest upload's order, and the rows the files
    /// set aside or loaded with a warning (which `deltadrop status` sums).
    pub(super) fn for_files(feed: &Feed, files: &[(&Pending, &str)]) -> CommitRecord {
        let now = chrono::Utc::now().timestamp_millis();
        let mut transactions = Vec::new();
        let mut newest: Vec<(&RunInput, UploadOrder)> = Vec::new();
        for (Pending { run, .. }, identity) in files {
            transactions.push(Transaction::new_with_last_update(*identity, 1, Some(now)));
            let order = run.upload.order();
            if order == UploadOrder::UNKNOWN {
                continue;
            }
            match newest.iter_mut().find(|(r, _)| r.key == run.key) {
                Some((r, o)) if *o < order => (*r, *o) = (run, order),
                Some(_) => {}
                None => newest.push((run, order)),
            }
        }
        for (run, order) in newest {
            let [high, low] = newest_upload_ids(run);
            transactions.push(Transaction::new_with_last_update(high, order.0, Some(now)));
            transactions.push(Transaction::new_with_last_update(low, order.1, Some(now)));
        }
        let last = &files
            .last()
            .expect("a commit applies at least one file")
            .0
            .run;
        let mut run =
            serde_json::json!({"run_id": last.run_id, "file": last.key, "feed": feed.name});
        if files.len() > 1 {
            // `file` stays the newest file, for readers of a single file's commits.
            run["files"] = files.iter().map(|(p, _)| p.run.key.clone()).collect();
            run["run_ids"] = files.iter().map(|(p, _)| p.run.run_id.clone()).collect();
        }
        let rejected: u64 = files.iter().map(|(p, _)| p.stage.rejected_rows()).sum();
        let warned: u64 = files.iter().map(|(p, _)| p.stage.warned_rows()).sum();
        if rejected > 0 {
            run[ROWS_REJECTED] = rejected.into();
        }
        if warned > 0 {
            run[ROWS_WARNED] = warned.into();
        }
        CommitRecord {
            run,
            transactions,
            file: last.key.clone(),
        }
    }

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

/// How one attempt at the commit ended, when it did not succeed.
pub(super) enum Attempt {
    /// A concurrent commit won: worth another attempt from a fresh snapshot.
    Conflict(String),
    /// Anything else: the step fails with it.
    Failed(Error),
}

impl Attempt {
    /// A conflict is worth another attempt from a fresh snapshot; anything else fails the step.
    pub(super) fn from_delta(target: &TableLocation, e: DeltaTableError) -> Attempt {
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
pub(super) fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(1 << attempt.min(10))
        .min(BACKOFF_CAP);
    let millis =
        rand::thread_rng().gen_range(ceiling.as_millis() as u64 / 2..=ceiling.as_millis() as u64);
    Duration::from_millis(millis)
}

pub(super) fn column(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

fn qualified(relation: &str, name: &str) -> Expr {
    Expr::Column(Column::new(Some(relation), name))
}

/// The columns of `rows` that the MERGE writes to the table (not the control columns).
fn data_columns(feed: &Feed, rows: &DataFrame) -> Vec<String> {
    rows.schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|name| !feed.is_control_column(name) && name != THRESHOLD_COLUMN)
        .collect()
}

/// One MERGE of `rows` (one per key) into the table's snapshot `table`, committed with `commit`.
///
/// Two workarounds for delta-rs 1.1's schema evolution. A column the table does not have yet
/// takes the *source* row's value in every target row the MERGE matches, also in one it does
/// not update (an older sequence value) but rewrites because its data file changed; so, when
/// this MERGE adds columns, source rows that would not apply are left out beforehand
/// ([`without_rows_that_cannot_apply`]). And new columns are added in the order of a hash map;
/// a never-matching clause per new column, in order, comes first so that they are added in the
/// order the files brought them.
/// The cost check ([`super::cost`]) comes first: a MERGE over `budget` is refused
/// (`TooLargeForFunction`) before it reads anything of the table.
pub(super) async fn merge_into(
    feed: &Feed,
    target: &TableLocation,
    table: DeltaTable,
    ctx: &SessionContext,
    rows: DataFrame,
    commit: &CommitRecord,
    budgets: &[Budget],
) -> Result<Committed, Attempt> {
    let delta_error = |e: DeltaTableError| Attempt::from_delta(target, e);
    same_partitions(feed, target, &table)?;
    let data_columns = data_columns(feed, &rows);
    let existing = arrow_schema(&table)?;
    let new_columns: Vec<&String> = data_columns
        .iter()
        .filter(|name| existing.field_with_name(name).is_err())
        .collect();
    let rows = if new_columns.is_empty() {
        rows
    } else {
        without_rows_that_cannot_apply(feed, &table, ctx, rows)
            .await
            .map_err(delta_error)?
    };
    let touched = touched(feed, &table, ctx, &rows)
        .await
        .map_err(|e| Attempt::Failed(Error::delta(target.name(), e)))?;
    Budget::check_all(budgets, target, &commit.file, &touched)?;
    let rules = merge_rules(feed);
    let before = table.clone();
    let mut merge = table
        .merge(rows, rules.on)
        .with_source_alias("source")
        .with_target_alias("target")
        .with_merge_schema(feed.schema_policy == SchemaPolicy::Additive)
        .with_session_state(Arc::new(ctx.state()))
        .with_writer_properties(writer_properties())
        .with_commit_properties(commit.properties(None));
    for name in &new_columns {
        merge = merge
            .when_matched_update(|update| {
                update
                    .predicate(lit(false))
                    .update(Column::new_unqualified(*name), qualified("source", name))
            })
            .map_err(delta_error)?;
    }
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
    let mut changes = Changes {
        partitions_touched: touched.partitions,
        estimate: Some(touched.estimate),
        ..changes(&metrics)
    };
    if table.version() == before.version() {
        return record_unchanged(target, &before, commit, changes).await;
    }
    if let Some(version) = table.version() {
        changes.bytes_rewritten = commit_files(&table, version).await?.removed_bytes;
    }
    Ok(Committed {
        version: table.version(),
        changes,
    })
}

/// Records `commit`'s files in a commit without data when their MERGE changed no row: delta-rs
/// commits nothing then, and an upload the table does not record would neither count as applied
/// nor supersede the older uploads of its key. A MERGE without a predicate, as conflict checks
/// read it: it read the whole table, so any concurrent change makes it conflict and decide again.
async fn record_unchanged(
    target: &TableLocation,
    table: &DeltaTable,
    commit: &CommitRecord,
    changes: Changes,
) -> Result<Committed, Attempt> {
    let delta_error = |e: DeltaTableError| Attempt::from_delta(target, e);
    let snapshot = table.snapshot().map_err(delta_error)?;
    let operation = DeltaOperation::Merge {
        predicate: None,
        merge_predicate: None,
        matched_predicates: Vec::new(),
        not_matched_predicates: Vec::new(),
        not_matched_by_source_predicates: Vec::new(),
    };
    let committed = CommitBuilder::from(commit.properties(None))
        .build(Some(snapshot), table.log_store(), operation)
        .await
        .map_err(delta_error)?;
    Ok(Committed {
        version: Some(committed.version()),
        changes,
    })
}

/// `rows` without those that change nothing: with a sequence column, a row whose threshold is
/// below the target row's sequence value. Reads the keys and sequence values of the whole
/// table, so it is only done when the MERGE adds columns (see [`merge_into`]).
async fn without_rows_that_cannot_apply(
    feed: &Feed,
    table: &DeltaTable,
    ctx: &SessionContext,
    rows: DataFrame,
) -> Result<DataFrame, DeltaTableError> {
    let Some(sequence) = &feed.sequence_column else {
        return Ok(rows);
    };
    let target_name = |i: usize| format!("_deltadrop_target_{i}");
    let mut wanted: Vec<Expr> = feed
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| column(k).alias(target_name(i)))
        .collect();
    wanted.push(column(sequence).alias(target_name(feed.keys.len())));
    let target_rows = ctx
        .read_table(table.table_provider().await?)?
        .select(wanted)?;
    let output: Vec<Expr> = rows
        .schema()
        .fields()
        .iter()
        .map(|f| column(f.name()))
        .collect();
    let keys: Vec<&str> = feed.keys.iter().map(String::as_str).collect();
    let target_keys: Vec<String> = (0..feed.keys.len()).map(target_name).collect();
    let target_keys: Vec<&str> = target_keys.iter().map(String::as_str).collect();
    let target_sequence = column(&target_name(feed.keys.len()));
    Ok(rows
        .join(target_rows, JoinType::Left, &keys, &target_keys, None)?
        .filter(
            target_sequence
                .clone()
                .is_null()
                .or(column(THRESHOLD_COLUMN).gt_eq(target_sequence)),
        )?
        .select(output)?)
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

/// A table keeps the partition columns its first file gave it: a feed whose `partition_by`
/// changed since is refused (the table's files would need rewriting).
fn same_partitions(feed: &Feed, target: &TableLocation, table: &DeltaTable) -> Result<()> {
    let existing = table
        .snapshot()
        .map_err(|e| Error::delta(target.name(), e))?
        .metadata()
        .partition_columns()
        .to_vec();
    if existing == feed.partition_columns() {
        return Ok(());
    }
    Err(Error::config(
        format!("feeds.{}.partition_by", feed.name),
        format!(
            "the table {} is partitioned by {existing:?}, the feed says {:?}: a table keeps its \
             partitions; to change them, load the feed into a new table (a new `table`) and \
             replay its files, or restore the old partition_by",
            target.name(),
            feed.partition_columns()
        ),
    ))
}

fn merge_rules(feed: &Feed) -> MergeRules {
    // Partition columns (keys, or derived from keys) are matched too, so that delta-rs reads
    // and rewrites only the partitions the staged rows fall in.
    let derived = feed
        .partition_columns()
        .into_iter()
        .filter(|p| !feed.keys.contains(p));
    let on = feed
        .keys
        .iter()
        .cloned()
        .chain(derived)
        .map(|k| qualified("target", &k).eq(qualified("source", &k)))
        .reduce(Expr::and)
        .expect("validated: at least one key");
    // A row never replaces a newer one: with a sequence column, only a source row whose
    // threshold (its own sequence value, or for several files the one `combine` decided) is not
    // older than the target's sequence value may update or delete it.
    let not_older = feed.sequence_column.as_ref().map(|s| {
        qualified("target", s)
            .is_null()
            .or(qualified("source", THRESHOLD_COLUMN).gt_eq(qualified("target", s)))
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

/// How a MERGE (and a first load that rewrites the staged rows) encodes its files: delta-rs's
/// default (Snappy), with row groups bounded, since each Parquet writer holds the row group it
/// encodes in memory until it flushes it (Parquet's default: 1,048,576 rows).
pub(super) fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(WRITE_ROW_GROUP_ROWS))
        .set_max_row_group_bytes(Some(WRITE_ROW_GROUP_BYTES))
        .build()
}

/// delta-rs plans its writes with its own planner: a plain SessionContext cannot run them.
/// One partition: rows are written in the order they come, so a sorted input gives files with
/// narrow key ranges that later MERGEs can skip, and a MERGE needs less memory. It costs no time
/// here: the Parquet writer and the scan still overlap on two cores (docs/benchmarks.md), and a
/// Lambda function below 1769 MB has one vCPU anyway. With `memory`, the operators share a pool
/// of that size and spill to the temporary directory beyond it. Outside the pool's accounting,
/// what the MERGE holds is bounded by the rows its operators take at a time (DataFusion's 8,192)
/// and by the row group each of its Parquet writers encodes ([`writer_properties`]).
pub(super) fn session(memory: Option<&MergeMemory>) -> Result<SessionContext, DeltaTableError> {
    let runtime = match memory {
        Some(memory) => RuntimeEnvBuilder::new()
            .with_memory_pool(memory_pool(memory.bytes as usize))
            .build_arc()
            .map_err(|e| DeltaTableError::Generic(format!("the MERGE's memory pool: {e}")))?,
        None => DeltaRuntimeEnvBuilder::new().build(),
    };
    let ctx: SessionContext = DeltaSessionContext::with_runtime_env(runtime).into();
    let state = ctx.state_ref();
    let mut state = state.write();
    let execution = &mut state.config_mut().options_mut().execution;
    execution.target_partitions = 1;
    // Spilled rows compress (docs/benchmarks.md, "Tables that grow"): a file of tens of
    // millions of rows of one key would otherwise spill more than the function's 10 GB of /tmp.
    execution.spill_compression = SpillCompression::Lz4Frame;
    drop(state);
    Ok(ctx)
}

/// The MERGE's memory pool: DataFusion's fair pool, where each operator that can spill gets an
/// equal share of what those that cannot spill do not hold, with one share kept back for the
/// latter. A sort that spills first merges the batches it holds, and that merge needs memory
/// for every batch's sort keys, which it cannot spill: with the whole pool to a lone sort, the
/// merge found none left (a file of 67M rows of one key failed so in the upsert function's
/// pool; docs/benchmarks.md, "Tables that grow").
fn memory_pool(bytes: usize) -> Arc<dyn MemoryPool> {
    let pool = FairSpillPool::new(bytes);
    let kept_back = MemoryConsumer::new("deltadrop: kept for operators that cannot spill");
    pool.register(&kept_back.with_can_spill(true));
    Arc::new(pool)
}

/// Whether a failure is DataFusion's refusal to grow its memory pool (an operator that cannot
/// spill, or a spill that did not free enough). Every error is text by then (`Error::delta`).
pub(super) fn is_out_of_memory(e: &Error) -> bool {
    matches!(e, Error::DeltaError { message, .. } if message.contains("Resources exhausted"))
}

fn changes(m: &MergeMetrics) -> Changes {
    Changes {
        created_table: false,
        rows_inserted: m.num_target_rows_inserted as u64,
        rows_updated: m.num_target_rows_updated as u64,
        rows_deleted: m.num_target_rows_deleted as u64,
        rows_copied: m.num_target_rows_copied as u64,
        files_scanned: m.num_target_files_scanned as u64,
        files_skipped: m.num_target_files_skipped_during_scan as u64,
        files_added: m.num_target_files_added as u64,
        files_removed: m.num_target_files_removed as u64,
        ..Changes::default()
    }
}

/// What the first file writes: its rows without deletes (of keys the table never had), without
/// the change-type and threshold columns, with plain string and binary types (the staging scan yields
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
    rows = rows.drop_columns(&[THRESHOLD_COLUMN])?;
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
/// application transaction) instead of merging into an empty table; a partitioned table's
/// partition by partition (`by_partition`). Two first files racing:
/// one commit wins version 0, the other conflicts and merges into the winner's table.
pub(super) async fn first_load(
    feed: &Feed,
    target: &TableLocation,
    ctx: &SessionContext,
    source: DataFrame,
    commit: &CommitRecord,
) -> Result<Committed, Attempt> {
    let failed = |e: deltalake::datafusion::error::DataFusionError| {
        Attempt::Failed(Error::delta(target.name(), e))
    };
    let rows = rows_of_a_new_table(feed, source).map_err(failed)?;
    if !feed.partition_by.is_empty() {
        return first_load_by_partition(feed, target, rows, commit).await;
    }
    let table = target
        .handle()
        .await?
        .write(Vec::new())
        .with_input_plan(rows.logical_plan().clone())
        .with_session_state(Arc::new(ctx.state()))
        .with_writer_properties(writer_properties())
        .with_save_mode(SaveMode::ErrorIfExists)
        .with_configuration(new_table_properties(feed))
        // No internal retry: a lost race for version 0 must not become a second blind append.
        .with_commit_properties(commit.properties(None).with_max_retries(0))
        .await;
    let table = match table {
        Ok(table) => table,
        Err(e) => return Err(lost_the_first_commit(target, e).await),
    };
    let rows = last_commit_metric(&table, "num_added_rows").await;
    let files = last_commit_metric(&table, "num_added_files").await;
    Ok(created(&table, rows, files))
}

/// A commit that created the table with `rows` in `files`.
pub(super) fn created(table: &DeltaTable, rows: u64, files: u64) -> Committed {
    Committed {
        version: table.version(),
        changes: Changes {
            created_table: true,
            rows_inserted: rows,
            files_added: files,
            ..Changes::default()
        },
    }
}

/// The table properties a feed's table is created with.
pub(super) fn new_table_properties(feed: &Feed) -> Vec<(String, Option<String>)> {
    let mut properties = vec![(
        "delta.targetFileSize".to_string(),
        Some(feed.target_file_bytes().to_string()),
    )];
    if feed.change_data_feed {
        properties.push((
            crate::delta::CHANGE_DATA_FEED.to_string(),
            Some("true".to_string()),
        ));
    }
    properties
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

/// The staged rows (the line column kept), and whether a key repeats among them.
pub(super) async fn staged_rows(
    ctx: &SessionContext,
    feed: &Feed,
    staged: &DeltaTable,
    stage: &StageOutput,
) -> Result<(DataFrame, bool), DeltaTableError> {
    // In the staging table's column order: a scan puts partition columns last.
    let names: Vec<String> = staged
        .snapshot()?
        .schema()
        .fields()
        .map(|f| f.name().clone())
        .collect();
    let rows = ctx
        .read_table(staged.table_provider().await?)?
        .select_columns(&names.iter().map(String::as_str).collect::<Vec<_>>())?;
    // Keys that only increase (a sorted file) cannot repeat: no aggregate over them needed.
    let repeated = !stage.keys_strictly_increasing && has_duplicate_keys(&rows, feed).await?;
    Ok((rows, repeated))
}

/// One row per key: the highest sequence value wins, then the last line. delta-rs fails (or
/// inserts twice) when several source rows carry the same key. Only for rows whose keys repeat.
/// The rows are sorted by key, then winner first (a sort that spills beyond the memory pool),
/// and an aggregate takes each key's first row as the sorted rows stream by: it holds one row per
/// key being read, where a window over a key held all the key's rows (67M rows of one key
/// exhausted the upsert function's pool that way).
pub(super) fn one_row_per_key(
    feed: &Feed,
    rows: DataFrame,
) -> Result<DataFrame, deltalake::datafusion::error::DataFusionError> {
    let mut winner_first = Vec::new();
    if let Some(sequence) = &feed.sequence_column {
        winner_first.push(column(sequence).sort(false, false));
    }
    winner_first.push(column(LINE_COLUMN).sort(false, false));
    let keys: Vec<Expr> = feed.keys.iter().map(|k| column(k)).collect();
    let names: Vec<String> = rows
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let order = keys
        .iter()
        .map(|k| k.clone().sort(true, true))
        .chain(winner_first.iter().cloned())
        .collect();
    let firsts = names
        .iter()
        .filter(|name| !feed.keys.contains(name))
        .map(|name| first_value(column(name), winner_first.clone()).alias(name))
        .collect();
    rows.sort(order)?
        .aggregate(keys, firsts)?
        .select(names.iter().map(|name| column(name)).collect::<Vec<Expr>>())
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

    /// A sort that must spill while a query reads only its sort keys: the merge of the batches
    /// it holds needs about as much memory again for their sort keys. Without the share kept
    /// back in the pool for what cannot spill, that merge found the pool full.
    #[tokio::test]
    async fn a_file_of_one_key_resolves_in_a_pool_it_overflows_many_times() {
        use deltalake::arrow::array::{Int64Array, RecordBatch};
        use deltalake::arrow::datatypes::{Field, Schema};
        use deltalake::datafusion::datasource::MemTable;
        use deltalake::datafusion::functions_aggregate::expr_fn::max;

        let toml = "[[feeds]]\nname = \"f\"\nincoming = \"in/\"\ntable = \"t\"\n\
                    keys = [\"id\"]\nsequence_column = \"seq\"\n";
        let feed = Config::from_toml(toml, "test").unwrap().feeds.remove(0);
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("seq", DataType::Int64, false),
            Field::new(LINE_COLUMN, DataType::Int64, false),
        ]));
        let (rows, batch_rows) = (3_000_000i64, 8_192i64);
        let batch_count = (rows + batch_rows - 1) / batch_rows;
        let batches: Vec<RecordBatch> = (0..batch_count)
            .map(|b| {
                let lines: Vec<i64> = (b * batch_rows..((b + 1) * batch_rows).min(rows)).collect();
                let columns: Vec<deltalake::arrow::array::ArrayRef> = vec![
                    Arc::new(Int64Array::from(vec![1; lines.len()])),
                    Arc::new(Int64Array::from(
                        lines.iter().map(|l| l % 1000).collect::<Vec<_>>(),
                    )),
                    Arc::new(Int64Array::from(lines)),
                ];
                RecordBatch::try_new(schema.clone(), columns).unwrap()
            })
            .collect();
        // 72 MB of rows in a 60 MB pool (without the share kept back, the first spill failed:
        // "Failed to allocate additional 192.0 KB for ExternalSorterMerge[0]").
        let memory = MergeMemory {
            bytes: 60 << 20,
            source: "the test".into(),
        };
        let ctx = session(Some(&memory)).unwrap();
        let table = MemTable::try_new(schema, vec![batches]).unwrap();
        let staged = ctx.read_table(Arc::new(table)).unwrap();
        let resolved = one_row_per_key(&feed, staged).unwrap();
        // What the cost check asks of the resolved rows: their key range.
        let range = resolved
            .clone()
            .aggregate(vec![], vec![max(column("id")).alias("high")])
            .unwrap()
            .collect()
            .await
            .expect("resolved within the pool");
        assert_eq!(range[0].num_rows(), 1);
        let winner = resolved.collect().await.unwrap();
        let line = winner[0].column_by_name(LINE_COLUMN).unwrap();
        let line = line.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(
            line.value(0),
            2_999_999,
            "the last line of the highest sequence value"
        );
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
            "target.seq IS NULL OR source._deltadrop_threshold >= target.seq"
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
        let not_older = "target.seq IS NULL OR source._deltadrop_threshold >= target.seq";
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
