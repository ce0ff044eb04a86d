//! A partitioned table's first load, written a few partitions at a time
//! ([`crate::partitioned_files`]), when the stage could not write the table's files itself (the
//! file's keys repeat, or its partitions come back). Rows that come partition after partition
//! are written as read; otherwise they are written again from their rows sorted by partition (a
//! sort that spills beyond the memory pool), so a partition's files are always whole. The files
//! are committed as the table's version 0, with the file's application transactions, in one
//! atomic commit, as any first load.

use std::sync::Arc;

use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::prelude::DataFrame;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::{Add, StructType};
use deltalake::logstore::ObjectStoreRef;
use deltalake::writer::RecordBatchWriter;
use futures::StreamExt;

use super::merge::{column, writer_properties, Attempt, CommitRecord, Committed};
use super::version_zero::{create_from_files, WrittenFiles};
use crate::config::Feed;
use crate::delta::TableLocation;
use crate::error::Error;
use crate::partitioned_files::{path_of, PartitionedFiles, Written};

/// Writes `rows` (a new table's rows) into `target` and creates the table with them; see the
/// module documentation.
pub(super) async fn first_load_by_partition(
    feed: &Feed,
    target: &TableLocation,
    rows: DataFrame,
    commit: &CommitRecord,
) -> Result<Committed, Attempt> {
    let failed = |e: DataFusionError| Attempt::Failed(Error::delta(target.name(), e));
    let partition_columns = feed.partition_columns();
    let schema: SchemaRef = Arc::new(rows.schema().as_arrow().clone());
    let columns: StructType = schema.as_ref().try_into_kernel().map_err(|e| {
        Attempt::Failed(Error::delta(
            target.name(),
            format!("the table's schema: {e}"),
        ))
    })?;
    let handle = target.handle().await?;
    let store = handle.log_store().object_store(None);

    let adds = match write_clustered(feed, target, &schema, &rows, &store).await? {
        Some(adds) => adds,
        None => {
            let sorted = rows
                .sort(
                    partition_columns
                        .iter()
                        .map(|p| column(p).sort(true, true))
                        .collect(),
                )
                .map_err(failed)?;
            write_clustered(feed, target, &schema, &sorted, &store)
                .await?
                .ok_or_else(|| {
                    Attempt::Failed(Error::internal(
                        "rows sorted by partition came back to a closed partition",
                    ))
                })?
        }
    };
    let rows: u64 = adds
        .iter()
        .map(|add| {
            add.get_stats()
                .ok()
                .flatten()
                .map_or(0, |s| s.num_records as u64)
        })
        .sum();
    let files = WrittenFiles {
        paths: adds.iter().map(path_of).collect(),
        adds,
        store: &store,
    };
    create_from_files(
        feed,
        target,
        commit,
        columns.fields().cloned(),
        partition_columns,
        files,
        rows,
    )
    .await
}

/// Writes every row: the files' `add` actions, or `None` (and nothing left written) as soon as
/// a partition comes back after its files were closed.
async fn write_clustered(
    feed: &Feed,
    target: &TableLocation,
    schema: &SchemaRef,
    rows: &DataFrame,
    store: &ObjectStoreRef,
) -> Result<Option<Vec<Add>>, Attempt> {
    let failed = |e: DataFusionError| Attempt::Failed(Error::delta(target.name(), e));
    let partition_columns = feed.partition_columns();
    let writer = RecordBatchWriter::try_new(
        target.url.as_str(),
        schema.clone(),
        Some(partition_columns.clone()),
        Some(target.options.clone()),
    )
    .map_err(|e| Attempt::from_delta(target, e))?
    .with_target_file_size(feed.target_file_bytes())
    .with_writer_properties(writer_properties());
    let mut files = PartitionedFiles::new(writer, schema, &partition_columns, &target.name())?;
    let mut stream = rows.clone().execute_stream().await.map_err(failed)?;
    while let Some(batch) = stream.next().await {
        if files.write(&batch.map_err(failed)?).await? == Written::PartitionCameBack {
            files.abandon(store).await;
            return Ok(None);
        }
    }
    Ok(Some(files.finish().await?))
}
