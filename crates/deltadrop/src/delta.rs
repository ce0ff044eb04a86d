//! Small helpers over delta-rs: open a table that may not exist, create one, remove one.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::datatypes::{Schema, SchemaRef};
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::{StructField, StructType};
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError, ObjectStore};
use futures::{StreamExt, TryStreamExt};
use url::Url;

use crate::error::{Error, Result};

/// Rows of a Parquet row group that a table's writers (a MERGE, a first load) flush at: ~5 MB
/// encoded for rows like TPC-H orders. Each open Parquet writer holds its row group in memory
/// (Parquet's default: 1,048,576 rows).
pub const WRITE_ROW_GROUP_ROWS: usize = 128 * 1024;
/// The same bound for wide rows: a row group is flushed at whichever comes first.
pub const WRITE_ROW_GROUP_BYTES: usize = 16 << 20;

/// The table property that makes every MERGE write the rows it changed (`_change_data/`):
/// Delta's change data feed.
pub const CHANGE_DATA_FEED: &str = "delta.enableChangeDataFeed";

/// Where a Delta table lives and how to reach it.
#[derive(Debug, Clone)]
pub struct TableLocation {
    /// The table's root, e.g. `s3://bucket/tables/orders/` or `file:///data/orders/`.
    pub url: Url,
    /// Storage options for delta-rs (endpoint, region, credentials off AWS).
    pub options: HashMap<String, String>,
}

impl TableLocation {
    /// A table at `url`, reached with `options`.
    pub fn new(url: Url, options: HashMap<String, String>) -> Self {
        TableLocation { url, options }
    }

    /// The URL as text, to name the table in messages and step outputs.
    pub fn name(&self) -> String {
        self.url.to_string()
    }

    fn error(&self, err: impl std::fmt::Display) -> Error {
        Error::delta(self.name(), err)
    }

    /// A handle on the location, loaded when a table exists there.
    pub async fn handle(&self) -> Result<DeltaTable> {
        if self.url.scheme() == "file" {
            if let Ok(path) = self.url.to_file_path() {
                std::fs::create_dir_all(&path).map_err(|e| Error::storage(self.name(), e))?;
            }
        }
        let mut table = DeltaTableBuilder::from_url(self.url.clone())
            .map_err(|e| self.error(e))?
            .with_storage_options(self.options.clone())
            .build()
            .map_err(|e| self.error(e))?;
        // Checking first keeps delta-rs from logging an error for every table not created yet.
        if !table
            .verify_deltatable_existence()
            .await
            .map_err(|e| self.error(e))?
        {
            return Ok(table);
        }
        match table.load().await {
            Ok(()) | Err(DeltaTableError::NotATable(_)) => Ok(table),
            Err(e) => Err(self.error(e)),
        }
    }

    /// The table, or `None` when there is no Delta table at the location yet.
    pub async fn open(&self) -> Result<Option<DeltaTable>> {
        let table = self.handle().await?;
        Ok(table.version().is_some().then_some(table))
    }

    /// Creates an empty table with the given columns, `commit_info` recorded in its first
    /// commit; fails if one exists.
    pub async fn create(
        &self,
        schema: &Schema,
        partition_columns: &[String],
        commit_info: HashMap<String, serde_json::Value>,
    ) -> Result<DeltaTable> {
        let table = self.handle().await?;
        let columns: Vec<StructField> = delta_schema(schema)
            .map_err(|e| self.error(e))?
            .fields()
            .cloned()
            .collect();
        table
            .create()
            .with_columns(columns)
            .with_partition_columns(partition_columns.to_vec())
            .with_commit_properties(
                deltalake::kernel::transaction::CommitProperties::default()
                    .with_metadata(commit_info),
            )
            .await
            .map_err(|e| self.error(e))
    }

    /// Deletes every object of the table (data, log, checkpoints).
    pub async fn remove(&self) -> Result<()> {
        let table = self.handle().await?;
        let store = table.object_store();
        let listed = store.list(None).map_ok(|meta| meta.location).boxed();
        store
            .delete_stream(listed)
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| Error::storage(self.name(), e))?;
        if self.url.scheme() == "file" {
            if let Ok(path) = self.url.to_file_path() {
                let _ = std::fs::remove_dir_all(path);
            }
        }
        Ok(())
    }
}

/// Serde for an arrow [`SchemaRef`] (`#[serde(with = "crate::delta::serde_schema")]`): a split
/// file's plan is handed to the invocations that read its chunks.
pub mod serde_schema {
    use std::sync::Arc;

    use deltalake::arrow::datatypes::{Schema, SchemaRef};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Writes the schema.
    pub fn serialize<S: Serializer>(schema: &SchemaRef, to: S) -> Result<S::Ok, S::Error> {
        schema.as_ref().serialize(to)
    }

    /// Reads a schema.
    pub fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<SchemaRef, D::Error> {
        Schema::deserialize(from).map(Arc::new)
    }
}

/// The table's arrow schema.
pub fn arrow_schema(table: &DeltaTable) -> Result<SchemaRef> {
    let state = table
        .snapshot()
        .map_err(|e| Error::delta(table.table_url().to_string(), e))?;
    Ok(state.snapshot().arrow_schema())
}

/// Converts an arrow schema to a Delta one; types Delta cannot store are a schema mismatch.
pub fn delta_schema(schema: &Schema) -> Result<StructType, String> {
    let schema: Arc<Schema> = Arc::new(schema.clone());
    let kernel: StructType = schema
        .as_ref()
        .try_into_kernel()
        .map_err(|e| format!("a column type cannot be stored in Delta: {e}"))?;
    Ok(kernel)
}

/// Whether a failed commit lost to a concurrent one: worth another attempt from a fresh snapshot.
#[cfg(feature = "merge")]
pub(crate) fn is_conflict(e: &deltalake::DeltaTableError) -> bool {
    use deltalake::kernel::transaction::TransactionError;
    matches!(
        e,
        deltalake::DeltaTableError::VersionAlreadyExists(_)
            | deltalake::DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(_)
                    | TransactionError::VersionAlreadyExists(_)
                    | TransactionError::MaxCommitAttempts(_)
            }
    )
}

/// The number of data files in the table's current version and their bytes.
pub fn data_files(table: &DeltaTable) -> Result<(u64, u64)> {
    let snapshot = table
        .snapshot()
        .map_err(|e| Error::delta(table.table_url().to_string(), e))?;
    let files = snapshot.log_data();
    let bytes = files.iter().map(|f| f.size().max(0) as u64).sum();
    Ok((files.num_files() as u64, bytes))
}

/// What one commit did to a table's data files, from its log entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitFiles {
    /// Distinct partitions among the files it added (0 for a table without partitions).
    pub added_partitions: u64,
    /// The bytes of the files it removed: what a MERGE rewrote.
    pub removed_bytes: u64,
}

/// The data files commit `version` of `table` added and removed; all zero for a version whose
/// entry is gone (cleaned up after a checkpoint).
pub async fn commit_files(table: &DeltaTable, version: u64) -> Result<CommitFiles> {
    let entry = table
        .log_store()
        .read_commit_entry(version)
        .await
        .map_err(|e| Error::delta(table.table_url().to_string(), e))?;
    let mut files = CommitFiles::default();
    let mut partitions = std::collections::HashSet::new();
    for line in entry.as_deref().unwrap_or_default().split(|b| *b == b'\n') {
        let Ok(action) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if let Some(values) = action["add"]["partitionValues"].as_object() {
            if !values.is_empty() {
                partitions.insert(serde_json::Value::Object(values.clone()).to_string());
            }
        }
        if let Some(remove) = action.get("remove") {
            files.removed_bytes += remove["size"].as_u64().unwrap_or(0);
        }
    }
    files.added_partitions = partitions.len() as u64;
    Ok(files)
}
