//! Where a Parquet file splits: between its row groups. The footer (two range reads at the
//! file's end) gives every row group's bytes and records, so each chunk's first record is known
//! without a counting pass; a chunk's stream is its row groups' bytes, then the footer.

use std::sync::Arc;

use deltalake::parquet::file::metadata::{
    ColumnChunkMetaData, ParquetMetaData, ParquetMetaDataReader,
};
use serde::{Deserialize, Serialize};

use crate::read::ParquetSlice;

/// The Parquet file's closing magic.
const MAGIC: &[u8; 4] = b"PAR1";

/// The most bytes of row groups one chunk reads: it spools them whole, to a Lambda's 10 GB of
/// `/tmp` at most, and reads them in its 15 minutes. A chunk closes once it reaches its target
/// size, so only a row group this large makes one this large.
pub(super) const MAX_CHUNK_BYTES: u64 = 4 << 30;

/// The footer's last bytes: the metadata's length (4 bytes, little-endian) and the magic.
pub(super) const FOOTER_TAIL_BYTES: u64 = 8;

/// A Parquet file cut between row groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct RowGroupLayout {
    /// Where the footer (its metadata) starts.
    pub footer_start: u64,
    /// The chunks, in file order.
    pub chunks: Vec<RowGroupRun>,
}

/// One chunk: consecutive row groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct RowGroupRun {
    /// The file's row groups it reads.
    pub row_groups: Vec<usize>,
    /// The bytes that hold them.
    pub data: (u64, u64),
    /// The file's records before its first.
    pub records_before: u64,
}

impl RowGroupLayout {
    /// Chunk `index`'s stream, as its reader maps it onto the file's offsets.
    pub(super) fn slice(&self, index: usize, size: u64) -> ParquetSlice {
        let run = &self.chunks[index];
        ParquetSlice {
            row_groups: run.row_groups.clone(),
            data: run.data,
            footer_start: self.footer_start,
            size,
        }
    }

    /// Each chunk's first record (1-based), as the counted lines of a text file give them.
    pub(super) fn first_records(&self) -> Vec<u64> {
        self.chunks.iter().map(|c| c.records_before + 1).collect()
    }
}

/// Where the metadata starts, from the footer's last 8 bytes of a file of `size` bytes; or
/// why the file is not split (the whole read reports what is wrong with it).
pub(super) fn footer_start(tail: &[u8], size: u64) -> Result<u64, String> {
    let tail: &[u8; 8] = tail
        .try_into()
        .map_err(|_| format!("its last {FOOTER_TAIL_BYTES} bytes could not be read"))?;
    if &tail[4..] != MAGIC {
        return Err("it does not end as a Parquet file: the whole read reports it".into());
    }
    let [a, b, c, d, ..] = *tail;
    let metadata = u64::from(u32::from_le_bytes([a, b, c, d]));
    size.checked_sub(FOOTER_TAIL_BYTES + metadata)
        .filter(|&start| start >= MAGIC.len() as u64)
        .ok_or_else(|| "its footer is longer than the file: the whole read reports it".into())
}

/// The footer's metadata, decoded.
pub(super) fn decode(metadata: &[u8]) -> Result<Arc<ParquetMetaData>, String> {
    ParquetMetaDataReader::decode_metadata(metadata)
        .map(Arc::new)
        .map_err(|e| format!("its footer does not decode ({e}): the whole read reports it"))
}

/// The file's row groups in chunks of about `chunk_bytes` (at most `max_chunks`), or why it is
/// read whole: fewer than two chunks, no records, a chunk over `largest_chunk` bytes (one large
/// row group), or row groups whose bytes are not laid out one after the other before the
/// footer (a chunk reads only its own bytes).
pub(super) fn cut(
    metadata: &ParquetMetaData,
    footer_start: u64,
    chunk_bytes: u64,
    max_chunks: u64,
    largest_chunk: u64,
) -> Result<RowGroupLayout, String> {
    let magic = MAGIC.len() as u64;
    let mut groups = Vec::with_capacity(metadata.num_row_groups());
    let mut previous_end = magic;
    for (index, group) in metadata.row_groups().iter().enumerate() {
        let ranges: Option<Vec<(u64, u64)>> = group.columns().iter().map(column_bytes).collect();
        let Some(ranges) = ranges else {
            return Err(format!(
                "its row group {index} has a negative offset or size"
            ));
        };
        let start = ranges.iter().map(|r| r.0).min().unwrap_or(previous_end);
        let end = ranges.iter().map(|r| r.1).max().unwrap_or(previous_end);
        if start < previous_end || end > footer_start {
            return Err(format!(
                "its row group {index}'s bytes ({start}..{end}) are not after the one before and \
                 before the footer"
            ));
        }
        let records = u64::try_from(group.num_rows()).unwrap_or(0);
        groups.push((index, start, end, records));
        previous_end = end;
    }
    let data_bytes = previous_end - magic;
    let target = chunk_bytes
        .max(data_bytes.div_ceil(max_chunks.saturating_sub(1).max(1)))
        .max(1);
    let mut chunks: Vec<RowGroupRun> = Vec::new();
    let mut records_before = 0u64;
    for (index, start, end, records) in groups {
        match chunks.last_mut() {
            Some(run) if run.data.1 - run.data.0 < target => {
                run.row_groups.push(index);
                run.data.1 = end;
            }
            _ => chunks.push(RowGroupRun {
                row_groups: vec![index],
                data: (start, end),
                records_before,
            }),
        }
        records_before += records;
    }
    if records_before == 0 {
        return Err("its row groups hold no records".into());
    }
    // A row group too large for one chunk makes the file the whole read's (the container
    // tier's, where it is deployed).
    if let Some(run) = chunks
        .iter()
        .find(|run| run.data.1 - run.data.0 > largest_chunk)
    {
        return Err(format!(
            "its row group {} holds {} bytes, over the {largest_chunk} a chunk reads whole",
            run.row_groups[0],
            run.data.1 - run.data.0
        ));
    }
    if chunks.len() < 2 {
        return Err(format!(
            "its {} row group(s) make fewer than two chunks of {chunk_bytes} bytes (a Parquet \
             file splits between row groups)",
            metadata.num_row_groups()
        ));
    }
    Ok(RowGroupLayout {
        footer_start,
        chunks,
    })
}

/// A column chunk's bytes, from its first page (the dictionary's, if any) on (what
/// `ColumnChunkMetaData::byte_range` gives, without its panic on a negative offset).
fn column_bytes(column: &ColumnChunkMetaData) -> Option<(u64, u64)> {
    let start = column
        .dictionary_page_offset()
        .unwrap_or(column.data_page_offset());
    let start = u64::try_from(start).ok()?;
    let length = u64::try_from(column.compressed_size()).ok()?;
    Some((start, start.checked_add(length)?))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{Int64Array, StringArray};
    use deltalake::arrow::datatypes::{DataType, Field, Schema};
    use deltalake::arrow::record_batch::RecordBatch;
    use deltalake::parquet::arrow::ArrowWriter;
    use deltalake::parquet::file::properties::WriterProperties;

    use super::*;

    /// A Parquet file of `groups` row groups of 100 records each.
    fn file(groups: usize) -> Vec<u8> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let properties = WriterProperties::builder()
            .set_max_row_group_row_count(Some(100))
            .build();
        let mut bytes = Vec::new();
        let mut writer =
            ArrowWriter::try_new(&mut bytes, schema.clone(), Some(properties)).unwrap();
        let rows = (groups * 100) as i64;
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(0..rows)),
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| format!("name {i}")),
                )),
            ],
        )
        .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        bytes
    }

    fn layout(bytes: &[u8], chunk_bytes: u64, max_chunks: u64) -> Result<RowGroupLayout, String> {
        let size = bytes.len() as u64;
        let start = footer_start(&bytes[bytes.len() - 8..], size)?;
        let metadata = decode(&bytes[start as usize..bytes.len() - 8])?;
        cut(&metadata, start, chunk_bytes, max_chunks, MAX_CHUNK_BYTES)
    }

    #[test]
    fn row_groups_are_cut_in_order_with_their_records_and_bytes() {
        let bytes = file(10);
        let one = layout(&bytes, 1, 500).unwrap();
        assert_eq!(one.chunks.len(), 10);
        for (k, run) in one.chunks.iter().enumerate() {
            assert_eq!(
                (run.row_groups.clone(), run.records_before),
                (vec![k], k as u64 * 100)
            );
        }
        // The chunks' bytes follow each other from after the magic on; the page indexes lie
        // between the last and the footer (a chunk's reader does not read them).
        assert_eq!(one.chunks[0].data.0, 4);
        for pair in one.chunks.windows(2) {
            assert_eq!(pair[0].data.1, pair[1].data.0);
        }
        assert!(one.chunks[9].data.1 < one.footer_start);
        assert_eq!(one.first_records()[3], 301);

        // At most `max_chunks`, whatever the chunk size asks.
        let capped = layout(&bytes, 1, 4).unwrap();
        assert!(capped.chunks.len() <= 4, "{capped:?}");
        let all: Vec<usize> = capped
            .chunks
            .iter()
            .flat_map(|c| c.row_groups.clone())
            .collect();
        assert_eq!(all, (0..10).collect::<Vec<_>>());

        // A row group over what a chunk reads whole.
        let (start, end) = (one.footer_start as usize, bytes.len() - 8);
        let metadata = decode(&bytes[start..end]).unwrap();
        let group = one
            .chunks
            .iter()
            .map(|c| c.data.1 - c.data.0)
            .max()
            .unwrap();
        let why = cut(&metadata, one.footer_start, 1, 500, group - 1).unwrap_err();
        assert!(why.contains("over the"), "{why}");
        assert!(cut(&metadata, one.footer_start, 1, 500, group).is_ok());

        let why = layout(&bytes, bytes.len() as u64, 500).unwrap_err();
        assert!(why.contains("fewer than two chunks"), "{why}");
        let why = layout(&file(1), 1, 500).unwrap_err();
        assert!(why.contains("fewer than two chunks"), "{why}");
    }

    #[test]
    fn a_file_that_does_not_end_as_parquet_is_read_whole() {
        assert!(footer_start(b"1234PAR2", 100).is_err());
        assert!(footer_start(&[200, 0, 0, 0, b'P', b'A', b'R', b'1'], 100).is_err());
        assert_eq!(
            footer_start(&[80, 0, 0, 0, b'P', b'A', b'R', b'1'], 100),
            Ok(12)
        );
        assert!(decode(b"not thrift").is_err());
    }
}
