//! The stage itself: read the incoming file and write it as this run's staging Delta table.

use std::collections::HashMap;

use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::Action;
use deltalake::parquet::basic::Compression as ParquetCompression;
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::DeltaTable;
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;

use super::key_order::KeyOrder;
use super::StageOutput;
use crate::bounded::listed;
use crate::config::{Compression, Feed};
use crate::delta::{arrow_schema, TableLocation, WRITE_ROW_GROUP_BYTES, WRITE_ROW_GROUP_ROWS};
use crate::environment::Environment;
use crate::error::{Error, Result};
use crate::partitioned_files::{PartitionedFiles, Written};
use crate::read::{read_file, Part, ReadSpec, SetAside};
use crate::rejects::{RejectsSummary, REJECTS_SUFFIX};
use crate::steps::quarantine::quarantine_key;
use crate::steps::upsert::arrival::ARRIVED_FIELD;
use crate::steps::upsert::identity_of;
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
    if let Some(split) = &env.split {
        if let Some(staged) = super::split::stage_in_chunks(env, run, split).await? {
            return Ok(staged);
        }
    }
    // What the chunked route left (PlanChunks' table, chunks that found the file must be read
    // whole) or an earlier attempt: the whole read starts from no staging table.
    env.staging_table(&run.run_id)?.remove().await?;
    let feed = env.config.feed_named(&run.feed)?.clone();
    let target_schema = match env.table(&feed.table)?.open().await? {
        Some(table) => Some(arrow_schema(&table)?),
        None => None,
    };
    // A change-type column must not reach the table, so such a feed's first file is written
    // again.
    let adoptable = feed.change_type.is_none() && feed.target_file_bytes() <= ADOPTABLE_FILE_BYTES;
    let layout = if target_schema.is_none() && adoptable {
        StagingLayout::NewTable {
            keys: feed.keys.clone(),
            file_bytes: feed.target_file_bytes(),
            partition_columns: feed.partition_columns(),
        }
    } else {
        StagingLayout::MergeSource
    };
    if let Some(staged) = stage_as(env, run, &feed, target_schema.clone(), layout).await? {
        return Ok(staged);
    }
    // A new partitioned table's first file whose partitions come back after others: read
    // again into a staging table the first load writes from, sorted by partition.
    stage_as(env, run, &feed, target_schema, StagingLayout::MergeSource)
        .await?
        .ok_or_else(|| Error::internal("a staging table of the MERGE layout saw partitions"))
}

/// [`stage`] in one layout; `None` (and nothing staged) when the layout writes the table's
/// partitions and one came back after its files were closed.
async fn stage_as(
    env: &Environment,
    run: &RunInput,
    feed: &Feed,
    target_schema: Option<deltalake::arrow::datatypes::SchemaRef>,
    layout: StagingLayout,
) -> Result<Option<StageOutput>> {
    let format = feed.format_for(&run.key)?;
    let target = env.table(&feed.table)?;
    let staging = env.staging_table(&run.run_id)?;
    let for_a_new_table = matches!(layout, StagingLayout::NewTable { .. });
    let keys = feed.keys.clone();
    let reader = SyncIoBridge::new(env.storage.reader(&run.key, &run.upload).await?);

    // Parsing is CPU work on a blocking thread; batches cross a small channel to the writer.
    let (sender, receiver) = mpsc::channel::<RecordBatch>(2);
    let key = run.key.clone();
    let upload_has_no_id = run.upload.id().is_empty();
    let read_feed = feed.clone();
    let run_for_identity = run.clone();
    let reading = tokio::task::spawn_blocking(move || {
        let spec = ReadSpec {
            file: &key,
            feed: &read_feed,
            format,
            compression: Compression::from_key(&key),
            target: target_schema,
            hash_content: upload_has_no_id,
            rejects: SetAside::default(),
            part: Part::Whole,
        };
        let read = read_file(reader, &spec, &mut |batch| {
            sender
                .blocking_send(batch)
                .map_err(|_| Error::internal("the staging writer stopped"))
        });
        let expectations = spec.rejects.expectations();
        // The identity the table records the upload under, when it is known (a file read
        // whole, or an upload with an id).
        let sha256 = read.as_ref().ok().and_then(|s| s.sha256.as_deref());
        let upload = identity_of(&run_for_identity, sha256).unwrap_or_default();
        match spec.rejects.into_file(&upload) {
            Ok(rejected) => (read, rejected, expectations),
            Err(e) => (Err(e), None, expectations),
        }
    });
    let writing = StagingWriter::receive_all(&staging, receiver, run, layout, &keys);
    let (read, written) = tokio::join!(reading, writing);
    let (read, rejected, expectations) = match read {
        Ok(read) => read,
        Err(e) => (
            Err(Error::internal(format!("the file reader stopped: {e}"))),
            None,
            Vec::new(),
        ),
    };

    let outcome = match (read, written) {
        // A writer that stops closes the channel, which the reader sees as its own error.
        (_, Err(write_error)) => Err(write_error),
        (_, Ok(Received::PartitionCameBack)) => {
            remove(&staging).await;
            return Ok(None);
        }
        (Err(e @ Error::TooManyBadRows { .. }), Ok(_)) => {
            // The owner gets the bad rows found either way; nothing is staged.
            keep_rejects(env, run, rejected).await.and(Err(e))
        }
        (Err(e), Ok(_)) => Err(e),
        (Ok(summary), Ok(received)) => match keep_rejects(env, run, rejected).await {
            Err(e) => Err(e),
            Ok(rejects) => match received {
                Received::Rows(writer) => writer
                    .commit()
                    .await
                    .map(|keys| (summary, rejects, true, keys)),
                _ => Ok((summary, rejects, false, false)),
            },
        },
    };
    match outcome {
        Ok((summary, rejects, has_table, keys_increasing)) => Ok(Some(StageOutput {
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
            rejects,
            expectations,
            chunks: None,
        })),
        Err(e) => {
            // Leave nothing half-written behind; the error that matters is the first one.
            remove(&staging).await;
            Err(e)
        }
    }
}

/// Writes the rows set aside as the rejects file beside the run's quarantine folder
/// (`<quarantine>/<folder>/<run id>/<file>.rejects.jsonl`): their summary, or `None` when no
/// row was set aside.
pub(super) async fn keep_rejects(
    env: &Environment,
    run: &RunInput,
    rejected: Option<(Vec<u8>, RejectsSummary)>,
) -> Result<Option<RejectsSummary>> {
    let Some((lines, mut summary)) = rejected else {
        return Ok(None);
    };
    summary.file = format!("{}{REJECTS_SUFFIX}", quarantine_key(env, run));
    env.storage.put(&summary.file, lines).await?;
    tracing::info!(
        rows = summary.rows,
        reasons = %summary.reasons(),
        file = %summary.file,
        "rows set aside"
    );
    Ok(Some(summary))
}

pub(super) async fn remove(staging: &TableLocation) {
    if let Err(cleanup) = staging.remove().await {
        tracing::warn!(error = %cleanup, "could not remove the staging table after a failure");
    }
}

/// Adds `files`, written without a commit, to `table` in one commit.
pub(super) async fn commit_files(
    table: &DeltaTable,
    files: Vec<deltalake::kernel::Add>,
    location: &TableLocation,
) -> Result<()> {
    let error = |e: deltalake::DeltaTableError| Error::delta(location.name(), e);
    let snapshot = table.snapshot().map_err(error)?;
    let operation = DeltaOperation::Write {
        mode: SaveMode::Append,
        partition_by: Some(snapshot.metadata().partition_columns().to_vec()),
        predicate: None,
    };
    CommitBuilder::default()
        .with_actions(files.into_iter().map(Action::Add).collect())
        .build(Some(snapshot), table.log_store(), operation)
        .await
        .map_err(error)?;
    Ok(())
}

/// The commit info of a staging table's creation: whose run it is.
pub(super) fn staging_commit_info(run: &RunInput) -> HashMap<String, serde_json::Value> {
    HashMap::from([(
        "deltadrop".to_string(),
        serde_json::json!({
            "run_id": run.run_id,
            "file": run.key,
            "feed": run.feed,
            "role": "staging",
            ARRIVED_FIELD: run.upload.uploaded_at.map(|t| t.timestamp_millis()),
        }),
    )])
}

/// How the staging files are written.
pub(super) enum StagingLayout {
    /// Written once and read once, whole, by the MERGE: dictionaries and statistics would cost
    /// about 15% of the stage's CPU time for nothing (docs/benchmarks.md).
    MergeSource,
    /// Written as the first data files of a target that does not exist yet: dictionaries, the
    /// keys' min/max (later MERGEs skip files by them), the table's file size and partitions
    /// (a few open at a time: [`PartitionedFiles`]).
    NewTable {
        keys: Vec<String>,
        file_bytes: u64,
        partition_columns: Vec<String>,
    },
}

impl StagingLayout {
    fn file_bytes(&self) -> u64 {
        match self {
            StagingLayout::MergeSource => STAGING_FILE_BYTES,
            StagingLayout::NewTable { file_bytes, .. } => *file_bytes,
        }
    }

    /// A writer of staging files into `table` (at `location`) in this layout.
    pub(super) fn writer(
        &self,
        table: &DeltaTable,
        location: &TableLocation,
    ) -> Result<RecordBatchWriter> {
        let writer =
            RecordBatchWriter::for_table(table).map_err(|e| Error::delta(location.name(), e))?;
        Ok(writer
            .with_target_file_size(self.file_bytes())
            .with_writer_properties(self.writer_properties()))
    }

    fn writer_properties(&self) -> WriterProperties {
        let plain = WriterProperties::builder()
            .set_compression(ParquetCompression::SNAPPY)
            .set_statistics_enabled(EnabledStatistics::None);
        match self {
            StagingLayout::MergeSource => plain.set_dictionary_enabled(false).build(),
            StagingLayout::NewTable {
                keys,
                partition_columns,
                ..
            } => keys
                .iter()
                .fold(
                    table_files(plain, !partition_columns.is_empty()),
                    |properties, key| {
                        properties.set_column_statistics_enabled(
                            ColumnPath::from(key.as_str()),
                            EnabledStatistics::Chunk,
                        )
                    },
                )
                .build(),
        }
    }
}

/// What the staging writer received.
enum Received {
    /// No rows.
    Nothing,
    /// Rows, written and ready to commit.
    Rows(Box<StagingWriter>),
    /// A partition came back after its files were closed: nothing is committed.
    PartitionCameBack,
}

/// A table's data files: dictionaries, and for a partitioned table row groups bounded as the
/// upsert's writers bound them, since its stage holds a row group per open partition.
fn table_files(
    properties: deltalake::parquet::file::properties::WriterPropertiesBuilder,
    partitioned: bool,
) -> deltalake::parquet::file::properties::WriterPropertiesBuilder {
    let properties = properties.set_dictionary_enabled(true);
    if !partitioned {
        return properties;
    }
    properties
        .set_max_row_group_row_count(Some(WRITE_ROW_GROUP_ROWS))
        .set_max_row_group_bytes(Some(WRITE_ROW_GROUP_BYTES))
}

/// Streams batches into a new staging table; commits only once the whole file was read.
struct StagingWriter {
    table: DeltaTable,
    files: StagingFiles,
    location: TableLocation,
    key_order: KeyOrder,
}

/// The staging table's files: one writer, or a partitioned table's few partitions at a time.
enum StagingFiles {
    Plain(Box<RecordBatchWriter>),
    ByPartition(Box<PartitionedFiles>),
}

impl StagingWriter {
    /// Creates the table from the first batch's schema and writes every batch received.
    async fn receive_all(
        location: &TableLocation,
        mut receiver: mpsc::Receiver<RecordBatch>,
        run: &RunInput,
        layout: StagingLayout,
        keys: &[String],
    ) -> Result<Received> {
        let Some(first) = receiver.recv().await else {
            return Ok(Received::Nothing);
        };
        let info = staging_commit_info(run);
        let partition_columns = match &layout {
            StagingLayout::NewTable {
                partition_columns, ..
            } => partition_columns.clone(),
            StagingLayout::MergeSource => Vec::new(),
        };
        let schema = first.schema();
        let table = location.create(&schema, &partition_columns, info).await?;
        let writer = layout.writer(&table, location)?;
        let files = if partition_columns.is_empty() {
            StagingFiles::Plain(Box::new(writer))
        } else {
            let files =
                PartitionedFiles::new(writer, &schema, &partition_columns, &location.name())?;
            StagingFiles::ByPartition(Box::new(files))
        };
        let mut staging = StagingWriter {
            table,
            files,
            location: location.clone(),
            key_order: KeyOrder::new(keys),
        };
        let mut next = Some(first);
        while let Some(batch) = next {
            staging.key_order.follow(&batch);
            if staging.write(batch).await? == Written::PartitionCameBack {
                return Ok(Received::PartitionCameBack);
            }
            next = receiver.recv().await;
        }
        Ok(Received::Rows(Box::new(staging)))
    }

    async fn write(&mut self, batch: RecordBatch) -> Result<Written> {
        match &mut self.files {
            StagingFiles::Plain(writer) => {
                writer
                    .write(batch)
                    .await
                    .map_err(|e| Error::delta(self.location.name(), e))?;
                Ok(Written::Whole)
            }
            StagingFiles::ByPartition(files) => files.write(&batch).await,
        }
    }

    /// Commits the staging table; true when the file's keys strictly increased.
    async fn commit(self: Box<Self>) -> Result<bool> {
        let error = |e: deltalake::DeltaTableError| Error::delta(self.location.name(), e);
        match self.files {
            StagingFiles::Plain(mut writer) => {
                let mut table = self.table;
                writer.flush_and_commit(&mut table).await.map_err(error)?;
            }
            StagingFiles::ByPartition(files) => {
                let adds = files.finish().await?;
                commit_files(&self.table, adds, &self.location).await?;
            }
        }
        Ok(self.key_order.strictly_increasing())
    }
}
