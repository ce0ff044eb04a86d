//! A partitioned table's data files, written a few partitions at a time.
//!
//! delta-rs's writer keeps a Parquet file open for every partition it has seen until it is
//! flushed, so its memory grows with the number of partitions in the rows (~3 MB each for
//! orders-like rows: 1.5 GB for a file of 480 days; docs/benchmarks.md, "Tables that grow").
//! Here the open files are closed whenever a partition begins while [`MAX_OPEN_PARTITIONS`]
//! are open. Rows that come partition after partition (a backfill in date order) are written as
//! they come, each partition's files whole; a partition that comes back after its files were
//! closed is reported, and the caller writes the rows again sorted by partition (the upsert's
//! first load) or hands them to a path that does (the stage).

use std::collections::HashSet;
use std::ops::Range;

use deltalake::arrow::array::{ArrayRef, RecordBatch};
use deltalake::arrow::compute::partition;
use deltalake::arrow::datatypes::Schema;
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::row::{OwnedRow, RowConverter, SortField};
use deltalake::kernel::Add;
use deltalake::logstore::object_store::ObjectStoreExt;
use deltalake::logstore::ObjectStoreRef;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::Path;

use crate::error::{Error, Result};

/// Partitions whose files are open at once: bounds the writers held in memory.
pub const MAX_OPEN_PARTITIONS: usize = 16;

/// Whether a batch was written, or a partition came back after its files were closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// All of the batch's rows are in open files.
    Whole,
    /// A partition of the batch was closed before: the rows are not clustered by partition, and
    /// what was written should be abandoned.
    PartitionCameBack,
}

/// Data files being written with at most [`MAX_OPEN_PARTITIONS`] open.
pub struct PartitionedFiles {
    writer: RecordBatchWriter,
    runs: Runs,
    open: HashSet<OwnedRow>,
    closed: HashSet<OwnedRow>,
    /// Files closed so far.
    adds: Vec<Add>,
    /// The table's name, for errors.
    table: String,
}

impl PartitionedFiles {
    /// Writes with `writer` (set up for a table partitioned by `partition_columns`) rows of
    /// `schema`.
    pub fn new(
        writer: RecordBatchWriter,
        schema: &Schema,
        partition_columns: &[String],
        table: &str,
    ) -> Result<PartitionedFiles> {
        let runs = Runs::new(schema, partition_columns).map_err(|e| Error::delta(table, e))?;
        Ok(PartitionedFiles {
            writer,
            runs,
            open: HashSet::new(),
            closed: HashSet::new(),
            adds: Vec::new(),
            table: table.to_string(),
        })
    }

    /// Writes the next batch of rows.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<Written> {
        let runs = self
            .runs
            .of(batch)
            .map_err(|e| Error::delta(&self.table, e))?;
        for (range, values) in runs {
            if self.closed.contains(&values) {
                return Ok(Written::PartitionCameBack);
            }
            if !self.open.contains(&values) {
                if self.open.len() == MAX_OPEN_PARTITIONS {
                    self.close().await?;
                    self.closed.extend(self.open.drain());
                }
                self.open.insert(values);
            }
            let run = batch.slice(range.start, range.end - range.start);
            self.writer
                .write(run)
                .await
                .map_err(|e| Error::delta(&self.table, e))?;
        }
        Ok(Written::Whole)
    }

    /// Closes the open files: the `add` actions of every file written.
    pub async fn finish(mut self) -> Result<Vec<Add>> {
        self.close().await?;
        Ok(self.adds)
    }

    /// Discards what was written (files closed by a size roll and not yet listed stay for
    /// VACUUM).
    pub async fn abandon(mut self, store: &ObjectStoreRef) {
        self.writer.reset();
        let paths: Vec<Path> = self.adds.iter().map(path_of).collect();
        remove_uncommitted(store, &paths).await;
    }

    async fn close(&mut self) -> Result<()> {
        let closed = self
            .writer
            .flush()
            .await
            .map_err(|e| Error::delta(&self.table, e))?;
        self.adds.extend(closed);
        Ok(())
    }
}

/// The file of an `add` action, as the table's store names it.
pub fn path_of(add: &Add) -> Path {
    Path::parse(&add.path).unwrap_or_else(|_| Path::from(add.path.as_str()))
}

/// Best effort: files written for a commit that did not happen are no table's (VACUUM would
/// remove them after its retention, too).
pub async fn remove_uncommitted(store: &ObjectStoreRef, paths: &[Path]) {
    for path in paths {
        if let Err(e) = store.delete(path).await {
            tracing::warn!(error = %e, %path, "could not remove a file of a commit that did not happen");
        }
    }
}

/// The number of distinct partitions among the files.
pub fn partitions_of(adds: &[Add]) -> u64 {
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

/// The runs of equal partition values in a batch, with their values.
struct Runs {
    positions: Vec<usize>,
    converter: RowConverter,
}

impl Runs {
    fn new(schema: &Schema, partition_columns: &[String]) -> Result<Runs, ArrowError> {
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

    fn of(&mut self, batch: &RecordBatch) -> Result<Vec<(Range<usize>, OwnedRow)>, ArrowError> {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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
