//! Reading a table back for people: version, row count, schema, recent operations, rows.

use chrono::{DateTime, Utc};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::physical_plan::collect;
use deltalake::datafusion::prelude::{Expr, SessionContext};
use deltalake::DeltaTable;
use futures::TryStreamExt;
use serde::Serialize;

use crate::delta::{arrow_schema, TableLocation};
use crate::error::{Error, Result};
use crate::steps::upsert::{ROWS_REJECTED, ROWS_WARNED};

/// What [`summarize`] found: the table's state now and its latest commits.
#[derive(Debug, Clone, Serialize)]
pub struct TableSummary {
    /// The table's URL.
    pub location: String,
    /// The current table version.
    pub version: u64,
    /// Rows in the current version.
    pub rows: u64,
    /// Data files in the current version.
    pub files: usize,
    /// The table's partition columns (empty when it is not partitioned).
    pub partition_columns: Vec<String>,
    /// How many partitions hold data files.
    pub partitions: usize,
    /// (name, type) in table order.
    pub columns: Vec<(String, String)>,
    /// Newest first.
    pub history: Vec<HistoryEntry>,
}

/// One commit of a table's history.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    /// The table version the commit created.
    pub version: u64,
    /// When it was committed, if the commit says.
    pub time: Option<DateTime<Utc>>,
    /// The Delta operation, e.g. `MERGE` or `WRITE` (empty when the commit does not say).
    pub operation: String,
    /// Row counts from the operation's metrics, e.g. `inserted 3, updated 2`.
    pub rows: String,
    /// The incoming file deltadrop applied in this commit.
    pub file: Option<String>,
    /// Rows the commit's files set aside in rejects files.
    pub rows_rejected: u64,
    /// Rows the commit loaded that broke a `warn` expectation.
    pub rows_warned: u64,
}

async fn open(location: &TableLocation) -> Result<DeltaTable> {
    location.open().await?.ok_or_else(|| Error::DeltaError {
        table: location.name(),
        message: "no Delta table here (no _delta_log)".into(),
    })
}

fn row_metrics(info: &std::collections::HashMap<String, serde_json::Value>) -> String {
    let Some(metrics) = info.get("operationMetrics").and_then(|m| m.as_object()) else {
        return String::new();
    };
    let wanted = [
        ("num_target_rows_inserted", "inserted"),
        ("num_target_rows_updated", "updated"),
        ("num_target_rows_deleted", "deleted"),
        ("num_added_rows", "added"),
    ];
    wanted
        .iter()
        .filter_map(|(key, label)| metrics.get(*key).map(|v| format!("{label} {v}")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Version, row count, files, columns and the last `history` commits of the table at
/// `location`; a `DeltaError` when there is no table there.
pub async fn summarize(location: &TableLocation, history: usize) -> Result<TableSummary> {
    let table = open(location).await?;
    let error = |e: &dyn std::fmt::Display| Error::delta(location.name(), e);
    let version = table.version().unwrap_or(0);
    let schema = arrow_schema(&table)?;
    let files = table.get_file_uris().map_err(|e| error(&e))?.count();
    let snapshot = table.snapshot().map_err(|e| error(&e))?;
    let partition_columns = snapshot.metadata().partition_columns().to_vec();
    let partitions = if partition_columns.is_empty() {
        0
    } else {
        let values: std::collections::HashSet<Vec<(String, Option<String>)>> = snapshot
            .log_data()
            .iter()
            .map(|file| {
                let mut values: Vec<_> = file.partition_values_map().into_iter().collect();
                values.sort();
                values
            })
            .collect();
        values.len()
    };
    let ctx = SessionContext::new();
    let provider = table.table_provider().await.map_err(|e| error(&e))?;
    let rows = ctx
        .read_table(provider)
        .map_err(|e| error(&e))?
        .count()
        .await
        .map_err(|e| error(&e))? as u64;
    let commits: Vec<_> = table
        .history(Some(history))
        .try_collect()
        .await
        .map_err(|e| error(&e))?;
    let history = commits
        .into_iter()
        .enumerate()
        .map(|(i, commit)| {
            let run = commit.info.get("deltadrop");
            let count = |key| run.and_then(|d| d.get(key)).and_then(|n| n.as_u64());
            let rows_rejected = count(ROWS_REJECTED).unwrap_or(0);
            let rows_warned = count(ROWS_WARNED).unwrap_or(0);
            let mut rows = row_metrics(&commit.info);
            for (n, label) in [(rows_rejected, "rejected"), (rows_warned, "warned")] {
                if n > 0 {
                    let separator = if rows.is_empty() { "" } else { ", " };
                    rows = format!("{rows}{separator}{label} {n}");
                }
            }
            HistoryEntry {
                version: version.saturating_sub(i as u64),
                time: commit.timestamp.and_then(DateTime::from_timestamp_millis),
                operation: commit.operation.clone().unwrap_or_default(),
                rows,
                file: run
                    .and_then(|d| d.get("file"))
                    .and_then(|f| f.as_str())
                    .map(str::to_string),
                rows_rejected,
                rows_warned,
            }
        })
        .collect();
    Ok(TableSummary {
        location: location.name(),
        version,
        rows,
        files,
        partition_columns,
        partitions,
        columns: schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), crate::read::type_name(f.data_type())))
            .collect(),
        history,
    })
}

/// Up to `limit` rows (all with `None`), ordered by the given columns (or by the first column).
pub async fn rows(
    location: &TableLocation,
    order_by: &[String],
    limit: Option<usize>,
) -> Result<Vec<RecordBatch>> {
    let table = open(location).await?;
    let error = |e: &dyn std::fmt::Display| Error::delta(location.name(), e);
    let ctx = SessionContext::new();
    let provider = table.table_provider().await.map_err(|e| error(&e))?;
    let frame = ctx.read_table(provider).map_err(|e| error(&e))?;
    let order: Vec<String> = if order_by.is_empty() {
        frame
            .schema()
            .fields()
            .iter()
            .take(1)
            .map(|f| f.name().clone())
            .collect()
    } else {
        order_by.to_vec()
    };
    frame
        .sort(ascending(order))
        .and_then(|f| f.limit(0, limit))
        .map_err(|e| error(&e))?
        .collect()
        .await
        .map_err(|e| error(&e))
}

/// The table's change data feed (a feed with `change_data_feed = true`) from version `from`
/// through `to` (or the latest): every row a commit inserted or deleted, and both sides of every
/// update, with `_change_type` (`insert`, `delete`, `update_preimage`, `update_postimage`),
/// `_commit_version` and `_commit_timestamp`; ordered by version, then `order_by`, then change
/// type. A version without recorded changes (the table's creation) reads as its rows inserted.
pub async fn changes(
    location: &TableLocation,
    from: u64,
    to: Option<u64>,
    order_by: &[String],
) -> Result<Vec<RecordBatch>> {
    let table = open(location).await?;
    let error = |e: &dyn std::fmt::Display| Error::delta(location.name(), e);
    let mut builder = table.scan_cdf().with_starting_version(from);
    if let Some(to) = to {
        builder = builder.with_ending_version(to);
    }
    // The builder's own plan: delta-rs 1.1's CDF table provider plans an empty scan here.
    let ctx = SessionContext::new();
    let plan = builder
        .build(&ctx.state(), None)
        .await
        .map_err(|e| error(&e))?;
    let read = collect(plan, ctx.task_ctx()).await.map_err(|e| error(&e))?;
    let frame = ctx.read_batches(read).map_err(|e| error(&e))?;
    let order = std::iter::once("_commit_version".to_string())
        .chain(order_by.iter().cloned())
        .chain(std::iter::once("_change_type".to_string()));
    frame
        .sort(ascending(order))
        .map_err(|e| error(&e))?
        .collect()
        .await
        .map_err(|e| error(&e))
}

/// Ascending, nulls last, by each of `columns` in turn.
fn ascending(
    columns: impl IntoIterator<Item = String>,
) -> Vec<deltalake::datafusion::logical_expr::SortExpr> {
    columns
        .into_iter()
        .map(|c| {
            Expr::Column(deltalake::datafusion::common::Column::new_unqualified(c))
                .sort(true, false)
        })
        .collect()
}

/// Rows as `a|b|c`, nulls as `∅`: a compact text form for tests and comparisons with other
/// readers (`tests/crosscheck.py` prints the same form).
pub fn row_strings(batches: &[RecordBatch]) -> Result<Vec<String>> {
    use deltalake::arrow::util::display::{ArrayFormatter, FormatOptions};
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::internal(e.to_string()))?;
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = batch
                .columns()
                .iter()
                .zip(&formatters)
                .map(|(column, formatter)| {
                    if column.is_null(row) {
                        "∅".to_string()
                    } else {
                        formatter.value(row).to_string()
                    }
                })
                .collect();
            rows.push(cells.join("|"));
        }
    }
    Ok(rows)
}
