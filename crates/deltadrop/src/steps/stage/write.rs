//! The stage itself: read the incoming file and write it as this run's staging Delta table.

use std::collections::HashMap;

use deltalake::arrow::record_batch::RecordBatch;
use deltalake::parquet::basic::Compression as ParquetCompression;
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::DeltaTable;
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;

use super::key_order::KeyOrder;
use super::StageOutput;
use crate::bounded::listed;
use crate::config::Compression;
use crate::delta::{arrow_schema, TableLocation};
use crate::environment::Environment;
use crate::error::{Error, Result};
use crate::read::{read_file, ReadSpec};
use crate::steps::upsert::arrival::ARRIVED_FIELD;
use crate::steps::RunInput;

/// Staging files roll over at this size, so no single object grows with the input. The writer
/// holds the file being written in memory: this bounds the stage's memory.
const STAGING_FILE_BYTES: u64 = 32 * 1024 * 1024;

/// The largest target file size whose staged files a first load may adopt. The upsert copies
/// each file with one S3 CopyObject, which copies at most 5 GB ("You create a copy of your
/// object up to 5 GB in size in a single atomic action using this API": Amazon S3 API
/// Reference, CopyObject); a file can overshoot the target by one batch, hence the margin. A
/// feed with larger files has its first file written again instead.
const ADOPTABLE_FILE_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Reads the run's upload and writes its rows, typed for the target table, as the run's
/// staging table (none when the file holds no rows). On failure the staging table is removed.
pub async fn stage(env: &Environment, run: &RunInput) -> Result<StageOutput> {
    run.validate()?;
    let feed = env.config.feed_named(&run.feed)?.clone();
    let format = feed.format_for(&run.key)?;
    let target = env.table(&feed.table)?;
    let target_schema = match target.open().await? {
        Some(table) => Some(arrow_schema(&table)?),
        None => None,
    };
    let staging = env.staging_table(&run.run_id)?;
    // A change-type column must not reach the table, so such a feed's first file is written
    // again; so is a partitioned feed's, which the first load writes partition by partition.
    let adoptable = feed.change_type.is_none()
        && feed.partition_by.is_empty()
        && feed.target_file_bytes() <= ADOPTABLE_FILE_BYTES;
    let layout = if target_schema.is_none() && adoptable {
        StagingLayout::NewTable {
            keys: feed.keys.clone(),
            file_bytes: feed.target_file_bytes(),
        }
    } else {
        StagingLayout::MergeSource
    };
    let for_a_new_table = matches!(layout, StagingLayout::NewTable { .. });
    let keys = feed.keys.clone();
    let reader = SyncIoBridge::new(env.storage.reader(&run.key, &run.upload).await?);

    // Parsing is CPU work on a blocking thread; batches cross a small channel to the writer.
    let (sender, receiver) = mpsc::channel::<RecordBatch>(2);
    let key = run.key.clone();
    let upload_has_no_id = run.upload.id().is_empty();
    let reading = tokio::task::spawn_blocking(move || {
        let spec = ReadSpec {
            file: &key,
            feed: &feed,
            format,
            compression: Compression::from_key(&key),
            target: target_schema,
            hash_content: upload_has_no_id,
        };
        read_file(reader, &spec, &mut |batch| {
            sender
                .blocking_send(batch)
                .map_err(|_| Error::internal("the staging writer stopped"))
        })
    });
    let writing = StagingWriter::receive_all(&staging, receiver, run, layout, &keys);
    let (read, written) = tokio::join!(reading, writing);
    let read = read.map_err(|e| Error::internal(format!("the file reader stopped: {e}")));

    let outcome = match (read, written) {
        // A writer failure closes the channel, which the reader sees as its own error.
        (_, Err(write_error)) => Err(write_error),
        (Err(e) | Ok(Err(e)), Ok(_)) => Err(e),
        (Ok(Ok(summary)), Ok(writer)) => match writer {
            Some(writer) => writer.commit().await.map(|keys| (summary, true, keys)),
            None => Ok((summary, false, false)),
        },
    };
    match outcome {
        Ok((summary, has_table, keys_increasing)) => Ok(StageOutput {
            rows: summary.rows,
            bytes: summary.bytes,
            sha256: summary.sha256,
            columns: listed(&summary.columns),
            column_count: summary.columns.len() as u64,
            new_columns: listed(&summary.new_columns),
            new_column_count: summary.new_columns.len() as u64,
            staging_table: has_table.then(|| staging.name()),
            written_for_a_new_table: has_table && for_a_new_table,
            keys_strictly_increasing: keys_increasing,
            lane: crate::storage::lane_id(&target.name()),
            target_table: target.name(),
        }),
        Err(e) => {
            // Leave nothing half-written behind; the error that matters is the first one.
            if let Err(cleanup) = staging.remove().await {
                tracing::warn!(error = %cleanup, "could not remove the staging table after a failure");
            }
            Err(e)
        }
    }
}

/// How the staging files are written.
enum StagingLayout {
    /// Written once and read once, whole, by the MERGE: dictionaries and statistics would cost
    /// about 15% of the stage's CPU time for nothing (docs/benchmarks.md).
    MergeSource,
    /// Written as the first data files of a target that does not exist yet: dictionaries, the
    /// keys' min/max (later MERGEs skip files by them) and the table's file size.
    NewTable { keys: Vec<String>, file_bytes: u64 },
}

impl StagingLayout {
    fn file_bytes(&self) -> u64 {
        match self {
            StagingLayout::MergeSource => STAGING_FILE_BYTES,
            StagingLayout::NewTable { file_bytes, .. } => *file_bytes,
        }
    }

    fn writer_properties(&self) -> WriterProperties {
        let plain = WriterProperties::builder()
            .set_compression(ParquetCompression::SNAPPY)
            .set_statistics_enabled(EnabledStatistics::None);
        match self {
            StagingLayout::MergeSource => plain.set_dictionary_enabled(false).build(),
            StagingLayout::NewTable { keys, .. } => keys
                .iter()
                .fold(plain.set_dictionary_enabled(true), |properties, key| {
                    properties.set_column_statistics_enabled(
                        ColumnPath::from(key.as_str()),
                        EnabledStatistics::Chunk,
                    )
                })
                .build(),
        }
    }
}

/// Streams batches into a new staging table; commits only once the whole file was read.
struct StagingWriter {
    table: DeltaTable,
    writer: RecordBatchWriter,
    location: TableLocation,
    key_order: KeyOrder,
}

impl StagingWriter {
    /// Creates the table from the first batch's schema; `None` when no batch arrives.
    async fn receive_all(
        location: &TableLocation,
        mut receiver: mpsc::Receiver<RecordBatch>,
        run: &RunInput,
        layout: StagingLayout,
        keys: &[String],
    ) -> Result<Option<StagingWriter>> {
        let Some(first) = receiver.recv().await else {
            return Ok(None);
        };
        let info = HashMap::from([(
            "deltadrop".to_string(),
            serde_json::json!({
                "run_id": run.run_id,
                "file": run.key,
                "feed": run.feed,
                "role": "staging",
                ARRIVED_FIELD: run.upload.uploaded_at.map(|t| t.timestamp_millis()),
            }),
        )]);
        let table = location.create(&first.schema(), info).await?;
        let error = |e: deltalake::DeltaTableError| Error::delta(location.name(), e);
        let mut writer = RecordBatchWriter::for_table(&table)
            .map_err(error)?
            .with_target_file_size(layout.file_bytes())
            .with_writer_properties(layout.writer_properties());
        let mut key_order = KeyOrder::new(keys);
        key_order.follow(&first);
        writer.write(first).await.map_err(error)?;
        while let Some(batch) = receiver.recv().await {
            key_order.follow(&batch);
            writer.write(batch).await.map_err(error)?;
        }
        Ok(Some(StagingWriter {
            table,
            writer,
            location: location.clone(),
            key_order,
        }))
    }

    /// Commits the staging table; true when the file's keys strictly increased.
    async fn commit(mut self) -> Result<bool> {
        self.writer
            .flush_and_commit(&mut self.table)
            .await
            .map_err(|e| Error::delta(self.location.name(), e))?;
        Ok(self.key_order.strictly_increasing())
    }
}
