//! One file being split, and its reads: its head, its header line, the newlines of a byte
//! range, and one chunk read and written as uncommitted Parquet files of the staging table.

use std::io::{Cursor, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::Add;
use deltalake::parquet::file::metadata::ParquetMetaData;
use deltalake::writer::DeltaWriter;
use deltalake::DeltaTable;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;

use super::ranges::{count_lines, AlignedLines, RangeLines};
use super::row_groups::{self, FOOTER_TAIL_BYTES};
use crate::config::{Compression, Feed, FileFormat};
use crate::delta::TableLocation;
use crate::environment::Environment;
use crate::error::{Error, ErrorKind, Result};
use crate::read::{
    read_file, read_head, ChunkSpec, HeadPlan, ParquetSlice, Part, ReadSpec, SetAside,
};
use crate::steps::stage::write::StagingLayout;
use crate::steps::RunInput;

/// The file being split, and what each of its reads needs.
pub(super) struct FileToSplit {
    pub(super) env: Environment,
    pub(super) run: RunInput,
    pub(super) feed: Arc<Feed>,
    pub(super) format: FileFormat,
    /// The target table's columns when the file's plan was made: every chunk types its rows
    /// against them.
    pub(super) target_schema: Option<SchemaRef>,
    /// The run's staging table, which the chunks write into.
    pub(super) staging: TableLocation,
    /// The lowest index of a chunk that failed or found the file must be read whole: the
    /// chunks after it are not read (the lowest failed chunk decides the file's outcome). Only
    /// later chunks are skipped: tasks do not start in index order.
    first_failed: AtomicUsize,
}

/// A CSV file's header line, put before every chunk but the first.
pub(super) enum Header {
    /// The header's bytes with their line end (`None`: a file without a header, or JSON lines).
    Splittable(Option<Vec<u8>>),
    /// The header record runs over several lines.
    OverSeveralLines,
}

/// One chunk: the lines that start in the bytes `start..end` of a file of `size` bytes, or a
/// Parquet file's row groups in those bytes.
pub(super) struct Chunk {
    /// Its place in the file (0 first).
    pub index: usize,
    pub start: u64,
    pub end: u64,
    pub size: u64,
    pub header: Option<Vec<u8>>,
    /// The file line (Parquet: record) of the chunk's first line.
    pub first_line: u64,
    /// A Parquet chunk's row groups and the bytes its stream holds.
    pub parquet: Option<ParquetSlice>,
}

/// What one chunk's worker did.
pub(super) struct ChunkOutput {
    pub rows: u64,
    /// Its Parquet files in the staging table's folder, not committed.
    pub files: Vec<Add>,
    /// The rows it set aside, and what the expectations found in it.
    pub set_aside: SetAside,
    pub error: Option<Error>,
}

impl ChunkOutput {
    pub(super) fn failed(error: Error) -> ChunkOutput {
        ChunkOutput {
            rows: 0,
            files: Vec::new(),
            set_aside: SetAside::default(),
            error: Some(error),
        }
    }
}

impl FileToSplit {
    /// The file of `run`, read with the plan of `feed`, typed against `target_schema`.
    pub(super) fn new(
        env: &Environment,
        run: &RunInput,
        feed: &Feed,
        target_schema: Option<SchemaRef>,
    ) -> Result<FileToSplit> {
        Ok(FileToSplit {
            env: env.clone(),
            run: run.clone(),
            feed: Arc::new(feed.clone()),
            format: feed.format_for(&run.key)?,
            target_schema,
            staging: env.staging_table(&run.run_id)?,
            first_failed: AtomicUsize::new(usize::MAX),
        })
    }

    /// A read spec for `part` of the file.
    pub(super) fn spec(&self, part: Part) -> OwnedSpec {
        OwnedSpec {
            key: self.run.key.clone(),
            feed: self.feed.clone(),
            format: self.format,
            target: self.target_schema.clone(),
            part,
        }
    }

    /// The plan the file's head fixes, as the whole read fixes it.
    pub(super) async fn head(&self) -> Result<Option<HeadPlan>> {
        let reader = SyncIoBridge::new(
            self.env
                .storage
                .reader(&self.run.key, &self.run.upload)
                .await?,
        );
        let spec = self.spec(Part::Head(Default::default()));
        tokio::task::spawn_blocking(move || spec.read(|spec| read_head(reader, &spec)))
            .await
            .map_err(|e| Error::internal(format!("the head's reader stopped: {e}")))?
    }

    /// The header line of a CSV file with a header, which must be one record: a quoted field
    /// still open at the line's end runs over to the next line.
    pub(super) async fn header_line(&self, size: u64) -> Result<Header> {
        if self.format != FileFormat::Csv || !self.feed.csv.header {
            return Ok(Header::Splittable(None));
        }
        let reader = self
            .env
            .storage
            .range_reader(&self.run.key, &self.run.upload, 0, size)
            .await?;
        let mut line = Vec::new();
        tokio::io::BufReader::new(reader)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| Error::storage(self.env.storage.display(&self.run.key), e))?;
        let mut header = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(self.feed.csv.delimiter_byte())
            .quote(self.feed.csv.quote_byte())
            .from_reader(line.as_slice());
        let mut record = ::csv::ByteRecord::new();
        // At the end of its input inside quotes, the parser ends the field with the line break.
        let one_line = matches!(header.read_byte_record(&mut record), Ok(true))
            && !record.iter().any(|field| field.contains(&b'\n'));
        Ok(if one_line {
            Header::Splittable(Some(line))
        } else {
            Header::OverSeveralLines
        })
    }

    /// A Parquet file's footer metadata, and where it starts; or why the file is read whole.
    pub(super) async fn footer(
        &self,
        size: u64,
    ) -> Result<std::result::Result<(Arc<ParquetMetaData>, u64), String>> {
        let Some(tail_start) = size.checked_sub(FOOTER_TAIL_BYTES) else {
            return Ok(Err(
                "it is too short to be Parquet: the whole read reports it".into(),
            ));
        };
        let tail = self.read_bytes(tail_start, size).await?;
        let footer_start = match row_groups::footer_start(&tail, size) {
            Ok(start) => start,
            Err(why) => return Ok(Err(why)),
        };
        let metadata = self.read_bytes(footer_start, tail_start).await?;
        Ok(row_groups::decode(&metadata).map(|metadata| (metadata, footer_start)))
    }

    /// The file's bytes `start..end`.
    async fn read_bytes(&self, start: u64, end: u64) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.env
            .storage
            .range_reader(&self.run.key, &self.run.upload, start, end)
            .await?
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| Error::storage(self.env.storage.display(&self.run.key), e))?;
        Ok(bytes)
    }

    /// The first pass: the newlines of the bytes `start..end`.
    pub(super) async fn count_lines(&self, (start, end): (u64, u64)) -> Result<RangeLines> {
        let reader = self
            .env
            .storage
            .range_reader(&self.run.key, &self.run.upload, start, end)
            .await?;
        let bytes = SyncIoBridge::new(reader);
        let display = self.env.storage.display(&self.run.key);
        tokio::task::spawn_blocking(move || count_lines(bytes))
            .await
            .map_err(|e| Error::internal(format!("a line counter stopped: {e}")))?
            .map_err(|e| Error::storage(display, e))
    }

    /// Reads one chunk and writes its rows as uncommitted files of the staging `table`.
    pub(super) async fn stage_chunk(
        &self,
        table: &DeltaTable,
        head: &HeadPlan,
        chunk: Chunk,
    ) -> ChunkOutput {
        let index = chunk.index;
        if self.first_failed.load(Ordering::SeqCst) < index {
            return ChunkOutput::failed(Error::internal("not read: an earlier chunk decided"));
        }
        let output = match self.read_and_write(table, head, chunk).await {
            Ok(output) => output,
            Err(error) => ChunkOutput::failed(error),
        };
        if output.error.is_some() {
            self.first_failed.fetch_min(index, Ordering::SeqCst);
        }
        output
    }

    async fn read_and_write(
        &self,
        table: &DeltaTable,
        head: &HeadPlan,
        chunk: Chunk,
    ) -> Result<ChunkOutput> {
        let (bytes, lines_before) = self.chunk_stream(&chunk).await?;
        let spec = self.spec(Part::Chunk(ChunkSpec {
            head: head.clone(),
            lines_before,
            parquet: chunk.parquet,
        }));

        let (sender, mut receiver) = mpsc::channel::<RecordBatch>(2);
        let reading = tokio::task::spawn_blocking(move || {
            spec.read(|spec| {
                let read = read_file(bytes, &spec, &mut |batch| {
                    sender
                        .blocking_send(batch)
                        .map_err(|_| Error::internal("the chunk's writer stopped"))
                });
                (read, spec.rejects)
            })
        });
        let writing = async {
            let error = |e: deltalake::DeltaTableError| Error::delta(self.staging.name(), e);
            let mut writer = StagingLayout::MergeSource.writer(table, &self.staging)?;
            while let Some(batch) = receiver.recv().await {
                writer.write(batch).await.map_err(error)?;
            }
            writer.flush().await.map_err(error)
        };
        let (read, written) = tokio::join!(reading, writing);
        let (read, set_aside) =
            read.map_err(|e| Error::internal(format!("a chunk's reader stopped: {e}")))?;
        // A writer that stops closes the channel, which the reader sees as its own error; a
        // record over several lines is the reader's to tell, whatever the writer did.
        let read = match read {
            Err(e) if e.kind() == ErrorKind::Unsplittable => return Err(e),
            read => read,
        };
        let files = written?;
        let rows = read?.rows;
        Ok(ChunkOutput {
            rows,
            files,
            set_aside,
            error: None,
        })
    }

    /// The stream a chunk is read from, and what to add to a line (record) of it to get its
    /// number in the file: the header line and the lines that start in the chunk's bytes, or a
    /// Parquet chunk's row groups and the footer.
    async fn chunk_stream(&self, chunk: &Chunk) -> Result<(Box<dyn Read + Send>, u64)> {
        let storage = &self.env.storage;
        let (key, upload) = (&self.run.key, &self.run.upload);
        if let Some(slice) = &chunk.parquet {
            // The footer first, in memory (a second GET left open while the row groups stream
            // could time out idle).
            let footer = self.read_bytes(slice.footer_start, slice.size).await?;
            let (start, end) = slice.data;
            let data = storage.range_reader(key, upload, start, end).await?;
            let stream = SyncIoBridge::new(data.chain(Cursor::new(footer)));
            return Ok((Box::new(stream), chunk.first_line - 1));
        }
        let stream_start = AlignedLines::<std::io::Empty>::stream_start(chunk.start);
        let reader = storage
            .range_reader(key, upload, stream_start, chunk.size)
            .await?;
        let lines = AlignedLines::new(SyncIoBridge::new(reader), chunk.start, chunk.end);
        // The stream's first line is the header when one is put before the chunk.
        let stream_lines_before_chunk = if chunk.header.is_some() { 2 } else { 1 };
        let header = Cursor::new(chunk.header.clone().unwrap_or_default());
        Ok((
            Box::new(Read::chain(header, lines)),
            chunk.first_line - stream_lines_before_chunk,
        ))
    }
}

/// A [`ReadSpec`]'s parts, owned, to move into a blocking reader.
pub(super) struct OwnedSpec {
    key: String,
    feed: Arc<Feed>,
    pub(super) format: FileFormat,
    target: Option<SchemaRef>,
    part: Part,
}

impl OwnedSpec {
    /// Runs `read` with the spec (an uncompressed file with an upload id: no hash).
    pub(super) fn read<T>(self, read: impl FnOnce(ReadSpec<'_>) -> T) -> T {
        read(ReadSpec {
            file: &self.key,
            feed: &self.feed,
            format: self.format,
            compression: Compression::None,
            target: self.target,
            hash_content: false,
            rejects: SetAside::default(),
            part: self.part,
        })
    }
}
