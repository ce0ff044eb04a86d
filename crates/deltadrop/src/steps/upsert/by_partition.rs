//! A partitioned table's first load, written a few partitions at a time.
//!
//! delta-rs's write keeps a Parquet writer open for every partition it has seen until the end of
//! the write, so its memory grows with the number of partitions in the file (~3 MB each for
//! orders-like rows: 1.5 GB for a file of 480 days; docs/benchmarks.md, "Tables that grow").
//! Here the open files are closed whenever a partition begins while [`MAX_OPEN_PARTITIONS`] are
//! open, so the Parquet writers held are those of a few partitions whatever the file holds. A file whose rows
//! come partition after partition (a backfill in date order) is written as it is read; one whose
//! partitions come back after their files were closed is written again from its rows sorted by
//! partition (a sort that spills beyond the memory pool), so a partition's files are always
//! whole. The files are committed as the table's version 0, with the file's application
//! transactions, in one atomic commit, as any first load.

use std::collections::HashSet;
use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, RecordBatch};
use deltalake::arrow::compute::partition;
use deltalake::arrow::datatypes::{Schema, SchemaRef};
use deltalake::arrow::row::{OwnedRow, RowConverter, SortField};
use deltalake::datafusion::error::{DataFusionError, Result as DfResult};
use deltalake::datafusion::prelude::DataFrame;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::{Add, StructType};
use deltalake::logstore::ObjectStoreRef;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::Path;
use futures::StreamExt;

use super::merge::{column, writer_properties, Attempt, CommitRecord, Committed};
use super::version_zero::{create_from_files, remove_uncommitted, WrittenFiles};
use crate::config::Feed;
use crate::delta::TableLocation;
use crate::error::Error;

/// Partitions whose files are open at once: bounds the writers held in memory.
const MAX_OPEN_PARTITIONS: usize = 16;

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

    let mut files = Files::new(feed, target, &schema, &store)?;
    let adds = match files.write(&rows).await? {
        Some(adds) => adds,
        None => {
            files.abandon().await;
            let sorted = rows
                .sort(
                    partition_columns
                        .iter()
                        .map(|p| column(p).sort(true, true))
                        .collect(),
                )
                .map_err(failed)?;
            let mut files = Files::new(feed, target, &schema, &store)?;
            files.write(&sorted).await?.ok_or_else(|| {
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
    let partitions = partitions_of(&adds);
    let files = WrittenFiles {
        paths: adds.iter().map(path_of).collect(),
        adds,
        store: &store,
    };
    let mut committed = create_from_files(
        feed,
        target,
        commit,
        columns.fields().cloned(),
        partition_columns,
        files,
        rows,
    )
    .await?;
    committed.changes.partitions_touched = partitions;
    Ok(committed)
}

/// The first load's data files, written with at most [`MAX_OPEN_PARTITIONS`] open.
struct Files<'a> {
    writer: RecordBatchWriter,
    partition_columns: Vec<String>,
    target: String,
    store: &'a ObjectStoreRef,
    /// Files closed so far.
    adds: Vec<Add>,
}

impl<'a> Files<'a> {
    fn new(
        feed: &Feed,
        target: &TableLocation,
        schema: &SchemaRef,
        store: &'a ObjectStoreRef,
    ) -> Result<Files<'a>, Attempt> {
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
        Ok(Files {
            writer,
            partition_columns,
            target: target.name(),
            store,
            adds: Vec::new(),
        })
    }

    /// Writes every row and closes the files: their `add` actions, or `None` as soon as a
    /// partition comes back after its files were closed (the rows are not clustered).
    async fn write(&mut self, rows: &DataFrame) -> Result<Option<Vec<Add>>, Attempt> {
        let target = self.target.clone();
        let failed = |e: DataFusionError| Attempt::Failed(Error::delta(&target, e));
        let mut stream = rows.clone().execute_stream().await.map_err(failed)?;
        let mut runs =
            Runs::new(rows.schema().as_arrow(), &self.partition_columns).map_err(failed)?;
        let (mut open, mut closed) = (HashSet::new(), HashSet::new());
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(failed)?;
            for (range, values) in runs.of(&batch).map_err(failed)? {
                if closed.contains(&values) {
                    return Ok(None);
                }
                if !open.contains(&values) {
                    if open.len() == MAX_OPEN_PARTITIONS {
                        self.close().await?;
                        closed.extend(open.drain());
                    }
                    open.insert(values);
                }
                let run = batch.slice(range.start, range.end - range.start);
                self.writer.write(run).await.map_err(|e| self.failed(e))?;
            }
        }
        self.close().await?;
        Ok(Some(std::mem::take(&mut self.adds)))
    }

    async fn close(&mut self) -> Result<(), Attempt> {
        let closed = self.writer.flush().await.map_err(|e| self.failed(e))?;
        self.adds.extend(closed);
        Ok(())
    }

    fn failed(&self, e: deltalake::DeltaTableError) -> Attempt {
        Attempt::Failed(Error::delta(&self.target, e))
    }

    /// Discards what was written (files closed by a size roll and not yet listed stay for
    /// VACUUM).
    async fn abandon(mut self) {
        self.writer.reset();
        let paths: Vec<Path> = self.adds.iter().map(path_of).collect();
        remove_uncommitted(self.store, &paths).await;
    }
}

/// The runs of equal partition values in a batch, with their values.
struct Runs {
    positions: Vec<usize>,
    converter: RowConverter,
}

impl Runs {
    fn new(schema: &Schema, partition_columns: &[String]) -> DfResult<Runs> {
        let mut positions = Vec::new();
        let mut fields = Vec::new();
        for name in partition_columns {
            let position = schema.index_of(name)?;
            positions.push(position);
            fields.push(SortField::new(schema.field(position).data_type().clone()));
        }
        Ok(Runs {
            positions,
            converter: RowConverter::new(fields)?,
        })
    }

    fn of(&mut self, batch: &RecordBatch) -> DfResult<Vec<(std::ops::Range<usize>, OwnedRow)>> {
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let values: Vec<ArrayRef> = self
            .positions
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let rows = self.converter.convert_columns(&values)?;
        Ok(partition(&values)?
            .ranges()
            .into_iter()
            .map(|range| {
                let values = rows.row(range.start).owned();
                (range, values)
            })
            .collect())
    }
}

/// The number of distinct partitions among the files.
fn partitions_of(adds: &[Add]) -> u64 {
    let distinct: std::collections::BTreeSet<Vec<(String, Option<String>)>> = adds
        .iter()
        .map(|add| {
            let mut values: Vec<_> = add
                .partition_values
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            values.sort();
            values
        })
        .collect();
    distinct.len() as u64
}

/// The file of an `add` action, as the table's store names it.
fn path_of(add: &Add) -> Path {
    Path::parse(&add.path).unwrap_or_else(|_| Path::from(add.path.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Int64Array, StringArray};
    use deltalake::arrow::datatypes::{DataType, Field};

    #[test]
    fn runs_are_the_ranges_of_equal_partition_values_with_their_values() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("region", DataType::Utf8, true),
        ]));
        let regions = StringArray::from(vec![Some("a"), Some("a"), None, Some("a")]);
        let ids = Int64Array::from_iter_values(0..4);
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(regions)]).unwrap();
        let mut runs = Runs::new(&schema, &["region".to_string()]).unwrap();
        let found = runs.of(&batch).unwrap();
        let ranges: Vec<_> = found.iter().map(|(r, _)| r.clone()).collect();
        assert_eq!(ranges, [0..2, 2..3, 3..4]);
        assert_eq!(found[0].1, found[2].1, "the same partition, in two runs");
        assert_ne!(found[0].1, found[1].1, "null is a partition of its own");
    }
}
