//! Reading part of a file: only its head (until the sample fixes the plan), or one chunk of a
//! file split at line ends or, for Parquet, by row group ([`crate::split`]). A chunk is read
//! with the plan its file's head (or footer) fixed and with the file's real line (record)
//! numbers, so that every chunk types, orders and reports its rows as the read of the whole
//! file would.

use std::cell::OnceCell;

use super::plan::Plan;

/// Which part of the file a read covers.
#[derive(Debug, Default)]
pub enum Part {
    /// The whole file.
    #[default]
    Whole,
    /// The head: records until the sample fixes the plan ([`super::read_head`]).
    Head(OnceCell<HeadPlan>),
    /// One chunk of a file split at line ends.
    Chunk(ChunkSpec),
}

/// What the head of a file fixed: the plan (the staging columns and their types) and the file's
/// columns in the order the reader met them. It serializes, so that the chunks of a split file
/// read in other invocations use the plan its head fixed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HeadPlan {
    pub(crate) plan: Plan,
    pub(crate) columns: Vec<String>,
}

impl HeadPlan {
    /// The file's columns, in file order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// File columns the target table does not have.
    pub fn new_columns(&self) -> &[String] {
        &self.plan.new_columns
    }
}

/// One chunk of a split file, as its reader sees it: a stream of the file's header line (for
/// CSV with a header) followed by the chunk's lines; for Parquet, the bytes of the chunk's row
/// groups followed by the file's footer ([`ParquetSlice`]).
#[derive(Debug, Clone)]
pub struct ChunkSpec {
    /// The plan the file's head fixed.
    pub head: HeadPlan,
    /// What to add to a line (Parquet: a record) of the chunk's stream to get its number in
    /// the file.
    pub lines_before: u64,
    /// A Parquet chunk: which of the file's bytes its stream holds.
    pub parquet: Option<ParquetSlice>,
}

/// A Parquet chunk's stream: the file's bytes `data.0..data.1` (its row groups), then its
/// bytes from `footer_start` to the end (the metadata and the closing magic). The reader maps
/// the file's offsets onto the stream, and reads nothing else.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ParquetSlice {
    /// The file's row groups the chunk reads, in file order.
    pub row_groups: Vec<usize>,
    /// The bytes that hold them.
    pub data: (u64, u64),
    /// Where the footer starts (its metadata, its length and the magic follow to the end).
    pub footer_start: u64,
    /// The file's size.
    pub size: u64,
}

impl Part {
    /// What to add to a line of the stream read to get its line in the file.
    pub(crate) fn lines_before(&self) -> u64 {
        match self {
            Part::Chunk(chunk) => chunk.lines_before,
            Part::Whole | Part::Head(_) => 0,
        }
    }

    /// A Parquet chunk's bytes, if the part is one.
    pub(crate) fn parquet_slice(&self) -> Option<&ParquetSlice> {
        match self {
            Part::Chunk(chunk) => chunk.parquet.as_ref(),
            Part::Whole | Part::Head(_) => None,
        }
    }

    /// The plan fixed beforehand (a chunk's), if any.
    pub(crate) fn fixed(&self) -> Option<&HeadPlan> {
        match self {
            Part::Chunk(chunk) => Some(&chunk.head),
            Part::Whole | Part::Head(_) => None,
        }
    }
}
