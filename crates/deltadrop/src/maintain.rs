//! Table maintenance for months of small MERGEs: compaction of small files, VACUUM of files no
//! longer referenced, a checkpoint with expired-log cleanup, and expiry of old application
//! transaction ids (the exactly-once records of each upload).
//!
//! Safe beside running upserts: OPTIMIZE commits like any writer and is retried from a fresh
//! snapshot when an upsert committed first (and an upsert that loses to OPTIMIZE retries, as it
//! does against any commit); VACUUM only deletes files that no version younger than the retention
//! period references, and the retention is at least a day, far longer than any run.

use std::collections::HashMap;
use std::num::NonZeroU64;

use deltalake::kernel::transaction::CommitProperties;
use deltalake::operations::optimize::OptimizeType;
use deltalake::DeltaTable;
use serde::Serialize;

use crate::config::Feed;
use crate::delta::{data_files, is_conflict, TableLocation, CHANGE_DATA_FEED};
use crate::environment::Environment;
use crate::error::{Error, Result};

/// How often OPTIMIZE is re-run after losing to a concurrent commit.
const OPTIMIZE_ATTEMPTS: u32 = 5;

/// What maintenance did to one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MaintainOutput {
    /// The feed whose table it is.
    pub feed: String,
    /// The table's location.
    pub table: String,
    /// Data files and their bytes before and after.
    pub files_before: u64,
    /// Bytes of the data files before.
    pub bytes_before: u64,
    /// Data files after.
    pub files_after: u64,
    /// Bytes of the data files after.
    pub bytes_after: u64,
    /// Small files OPTIMIZE rewrote, and the files it wrote instead.
    pub files_compacted: u64,
    /// Files OPTIMIZE wrote.
    pub files_written: u64,
    /// Files VACUUM deleted from storage (unreferenced for longer than the retention).
    pub files_vacuumed: u64,
    /// The version the checkpoint was written at.
    pub version: u64,
    /// Log files older than the log retention that were removed.
    pub logs_removed: u64,
}

/// Maintains the table of `feed`; `None` when the table does not exist yet.
pub async fn maintain(env: &Environment, feed: &Feed) -> Result<Option<MaintainOutput>> {
    let location = env.table(&feed.table)?;
    let error = |e: deltalake::DeltaTableError| Error::delta(location.name(), e);
    let Some(table) = location.open().await? else {
        return Ok(None);
    };
    let (files_before, bytes_before) = data_files(&table)?;
    let table = set_retention(table, feed).await.map_err(error)?;
    let (table, compacted, written) = compact(&location, table, feed).await?;
    let (table, vacuum) = table
        .vacuum()
        .with_retention_period(chrono::Duration::days(
            feed.maintenance.vacuum_retention_days.into(),
        ))
        .await
        .map_err(error)?;
    deltalake::checkpoints::create_checkpoint(&table, None)
        .await
        .map_err(error)?;
    let logs_removed = deltalake::checkpoints::cleanup_metadata(&table, None)
        .await
        .map_err(error)?;
    let (files_after, bytes_after) = data_files(&table)?;
    Ok(Some(MaintainOutput {
        feed: feed.name.clone(),
        table: location.name(),
        files_before,
        bytes_before,
        files_after,
        bytes_after,
        files_compacted: compacted,
        files_written: written,
        files_vacuumed: vacuum.files_deleted.len() as u64,
        version: table.version().unwrap_or(0) as u64,
        logs_removed: logs_removed as u64,
    }))
}

/// Sets the retention properties the feed asks for, and the change data feed when it asks for
/// one, when they differ from the table's.
async fn set_retention(
    table: DeltaTable,
    feed: &Feed,
) -> Result<DeltaTable, deltalake::DeltaTableError> {
    let maintenance = &feed.maintenance;
    let mut wanted = HashMap::from([
        (
            "delta.deletedFileRetentionDuration".to_string(),
            format!("interval {} days", maintenance.vacuum_retention_days),
        ),
        (
            "delta.logRetentionDuration".to_string(),
            format!("interval {} days", maintenance.log_retention_days),
        ),
        (
            "delta.setTransactionRetentionDuration".to_string(),
            format!("interval {} days", maintenance.transaction_retention_days),
        ),
    ]);
    if feed.change_data_feed {
        // Never turned off here: the feed's readers may rely on it.
        wanted.insert(CHANGE_DATA_FEED.to_string(), "true".to_string());
    }
    let current = &table.snapshot()?.metadata().configuration().clone();
    let unchanged = wanted
        .iter()
        .all(|(key, value)| current.get(key) == Some(value));
    if unchanged {
        return Ok(table);
    }
    let features = crate::athena::reader_features(&wanted, std::iter::empty());
    crate::athena::guard(feed, &feed.table, &features)
        .map_err(|e| deltalake::DeltaTableError::Generic(e.to_string()))?;
    table.set_tbl_properties().with_properties(wanted).await
}

/// Bin-packs small files into files of the feed's target size (or, with `order_by_keys`,
/// rewrites the table Z-ordered by the keys), retried from a fresh snapshot when
/// a concurrent commit (an upsert) wins. Returns the files removed and written.
async fn compact(
    location: &TableLocation,
    mut table: DeltaTable,
    feed: &Feed,
) -> Result<(DeltaTable, u64, u64)> {
    let target = NonZeroU64::new(feed.target_file_bytes())
        .ok_or_else(|| Error::config("target_file_mb", "expected a positive size in MB"))?;
    let mut attempt = 1;
    loop {
        // Compaction and Z-order work within each partition; partition columns themselves
        // cannot be Z-ordered.
        let partitions = feed.partition_columns();
        let order_keys: Vec<String> = feed
            .keys
            .iter()
            .filter(|k| !partitions.contains(k))
            .cloned()
            .collect();
        let order = if feed.maintenance.order_by_keys && !order_keys.is_empty() {
            OptimizeType::ZOrder(order_keys)
        } else {
            OptimizeType::Compact
        };
        let optimized = table
            .clone()
            .optimize()
            .with_type(order)
            .with_target_size(target)
            .with_commit_properties(CommitProperties::default().with_max_retries(0))
            .await;
        match optimized {
            Ok((table, metrics)) => {
                return Ok((table, metrics.num_files_removed, metrics.num_files_added))
            }
            Err(e) if attempt < OPTIMIZE_ATTEMPTS && is_conflict(&e) => {
                tracing::info!(attempt, error = %e, "optimize lost to a concurrent commit; retrying");
                attempt += 1;
                table = location
                    .open()
                    .await?
                    .ok_or_else(|| Error::ObjectNotFound {
                        key: location.name(),
                    })?;
            }
            Err(e) => return Err(Error::delta(location.name(), e)),
        }
    }
}
