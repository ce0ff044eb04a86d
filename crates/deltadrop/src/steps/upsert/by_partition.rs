//! A partitioned table's first load, written one partition after another.
//!
//! delta-rs's write keeps a Parquet writer open for every partition it has seen until the end of
//! the write, so its memory grows with the number of partitions in the file (~3 MB each for
//! orders-like rows: 1.5 GB for a file of 480 days; docs/benchmarks.md, "Tables that grow").
//! Here the rows are sorted by their partition values (a sort that spills beyond the memory
//! pool), and the open files are closed whenever [`MAX_OPEN_PARTITIONS`] partitions were begun,
//! at a partition boundary: the files of a partition are still whole, and the memory is that of
//! a few partitions whatever the file holds. The files are committed as the table's version 0,
//! with the file's application transactions, in one atomic commit, as any first load.

use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, RecordBatch};
use deltalake::arrow::compute::partition;
use deltalake::arrow::datatypes::Schema;
use deltalake::arrow::row::{OwnedRow, RowConverter, SortField};
use deltalake::datafusion::error::{DataFusionError, Result as DfResult};
use deltalake::datafusion::prelude::DataFrame;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::{Action, Add, StructType};
use deltalake::logstore::object_store::ObjectStoreExt;
use deltalake::logstore::ObjectStoreRef;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::Path;
use futures::StreamExt;

use super::merge::{
    column, created, lost_the_first_commit, new_table_properties, writer_properties, Attempt,
    CommitRecord, Committed,
};
use crate::config::Feed;
use crate::delta::TableLocation;
use crate::error::Error;

/// Partitions begun before the open files are closed: bounds the writers held in memory.
const MAX_OPEN_PARTITIONS: usize = 16;

/// Writes `rows` (a new table's rows) into `target` partition by partition and creates the table
/// with them; see the module documentation.
pub(super) async fn first_load_by_partition(
    feed: &Feed,
    target: &TableLocation,
    rows: DataFrame,
    commit: &CommitRecord,
) -> Result<Committed, Attempt> {
    let failed = |e: DataFusionError| Attempt::Failed(Error::delta(target.name(), e));
    let delta_error = |e: deltalake::DeltaTableError| Attempt::from_delta(target, e);
    let partition_columns = feed.partition_columns();
    let sorted = rows
        .sort(
            partition_columns
                .iter()
                .map(|p| column(p).sort(true, true))
                .collect(),
        )
        .map_err(failed)?;
    let schema = Arc::new(sorted.schema().as_arrow().clone());
    let columns: StructType = schema.as_ref().try_into_kernel().map_err(|e| {
        Attempt::Failed(Error::delta(
            target.name(),
            format!("the table's schema: {e}"),
        ))
    })?;
    let mut writer = RecordBatchWriter::try_new(
        target.url.as_str(),
        schema.clone(),
        Some(partition_columns.clone()),
        Some(target.options.clone()),
    )
    .map_err(delta_error)?
    .with_target_file_size(feed.target_file_bytes())
    .with_writer_properties(writer_properties());

    let handle = target.handle().await?;
    let store = handle.log_store().object_store(None);
    let mut adds = Vec::new();
    let written = write_sorted(
        &mut writer,
        &sorted,
        &partition_columns,
        &mut adds,
        &target.name(),
    )
    .await;
    if let Err(e) = written {
        writer.reset();
        remove_files(&store, &adds).await;
        return Err(e);
    }
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
    let files = adds.len() as u64;
    // The names a WRITE records, so that a created table's history reads the same either way.
    let metrics = serde_json::json!({"num_added_rows": rows, "num_added_files": files});
    let actions: Vec<Action> = adds.iter().cloned().map(Action::Add).collect();
    let creation = handle
        .create()
        .with_columns(columns.fields().cloned())
        .with_partition_columns(partition_columns)
        .with_configuration(new_table_properties(feed))
        .with_actions(actions)
        // No internal retry: a lost race for version 0 must not become a second blind append.
        .with_commit_properties(commit.properties(Some(metrics)).with_max_retries(0))
        .await;
    match creation {
        Ok(table) => {
            let mut committed = created(&table, rows, files);
            committed.changes.partitions_touched = partitions;
            Ok(committed)
        }
        Err(e) => {
            remove_files(&store, &adds).await;
            Err(lost_the_first_commit(target, e).await)
        }
    }
}

/// Streams the sorted rows into `writer`, closing its files (into `adds`) at the first partition
/// boundary after [`MAX_OPEN_PARTITIONS`] partitions were begun, and at the end.
async fn write_sorted(
    writer: &mut RecordBatchWriter,
    sorted: &DataFrame,
    partition_columns: &[String],
    adds: &mut Vec<Add>,
    target: &str,
) -> Result<(), Attempt> {
    let failed = |e: DataFusionError| Attempt::Failed(Error::delta(target, e));
    let delta_failed = |e: deltalake::DeltaTableError| Attempt::Failed(Error::delta(target, e));
    let mut stream = sorted.clone().execute_stream().await.map_err(failed)?;
    let mut boundaries =
        Boundaries::new(sorted.schema().as_arrow(), partition_columns).map_err(failed)?;
    let mut open = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(failed)?;
        for (range, begins) in boundaries.runs(&batch).map_err(failed)? {
            if begins {
                if open == MAX_OPEN_PARTITIONS {
                    adds.extend(writer.flush().await.map_err(delta_failed)?);
                    open = 0;
                }
                open += 1;
            }
            let run = batch.slice(range.start, range.end - range.start);
            writer.write(run).await.map_err(delta_failed)?;
        }
    }
    adds.extend(writer.flush().await.map_err(delta_failed)?);
    Ok(())
}

/// Where the runs of equal partition values begin in a stream of batches sorted by them.
struct Boundaries {
    positions: Vec<usize>,
    converter: RowConverter,
    /// The partition values of the last row seen.
    last: Option<OwnedRow>,
}

impl Boundaries {
    fn new(schema: &Schema, partition_columns: &[String]) -> DfResult<Boundaries> {
        let mut positions = Vec::new();
        let mut fields = Vec::new();
        for name in partition_columns {
            let position = schema.index_of(name)?;
            positions.push(position);
            fields.push(SortField::new(schema.field(position).data_type().clone()));
        }
        Ok(Boundaries {
            positions,
            converter: RowConverter::new(fields)?,
            last: None,
        })
    }

    /// The batch's runs of equal partition values, and whether each begins a partition (the
    /// first run continues the previous batch's last one when their values are equal).
    fn runs(&mut self, batch: &RecordBatch) -> DfResult<Vec<(std::ops::Range<usize>, bool)>> {
        if batch.num_rows() == 0 {
            return Ok(Vec::new());
        }
        let values: Vec<ArrayRef> = self
            .positions
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let rows = self.converter.convert_columns(&values)?;
        let continues = self
            .last
            .as_ref()
            .is_some_and(|last| last.row() == rows.row(0));
        self.last = Some(rows.row(batch.num_rows() - 1).owned());
        Ok(partition(&values)?
            .ranges()
            .into_iter()
            .enumerate()
            .map(|(i, range)| (range, i > 0 || !continues))
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

/// Best effort: files of a first load that did not commit are no table's (VACUUM would remove
/// them after its retention, too).
async fn remove_files(store: &ObjectStoreRef, adds: &[Add]) {
    for add in adds {
        let path = Path::parse(&add.path).unwrap_or_else(|_| Path::from(add.path.as_str()));
        if let Err(e) = store.delete(&path).await {
            tracing::warn!(error = %e, %path, "could not remove a file of a first load that did not commit");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Int64Array, StringArray};
    use deltalake::arrow::datatypes::{DataType, Field};

    fn batch(schema: &Arc<Schema>, regions: &[&str]) -> RecordBatch {
        let ids = Int64Array::from_iter_values(0..regions.len() as i64);
        let regions = StringArray::from(regions.to_vec());
        RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(regions)]).unwrap()
    }

    #[test]
    fn a_run_that_continues_the_previous_batch_begins_no_partition() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("region", DataType::Utf8, true),
        ]));
        let mut boundaries = Boundaries::new(&schema, &["region".to_string()]).unwrap();
        let runs = boundaries.runs(&batch(&schema, &["a", "a", "b"])).unwrap();
        assert_eq!(runs, [(0..2, true), (2..3, true)]);
        let runs = boundaries.runs(&batch(&schema, &["b", "c"])).unwrap();
        assert_eq!(runs, [(0..1, false), (1..2, true)]);
        let runs = boundaries.runs(&batch(&schema, &["d"])).unwrap();
        assert_eq!(runs, [(0..1, true)]);
    }
}
