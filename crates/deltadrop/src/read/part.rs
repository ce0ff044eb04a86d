//! Reading part of a file: only its head (until the sample fixes the plan), or one chunk of a
//! file split at line ends ([`crate::split`]). A chunk is read with the plan its file's head
//! fixed and with the file's real line numbers, so that every chunk types, orders and reports
//! its rows as the read of the whole file would.

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
/// CSV with a header) followed by the chunk's lines.
#[derive(Debug, Clone)]
pub struct ChunkSpec {
    /// The plan the file's head fixed.
    pub head: HeadPlan,
    /// What to add to a line of the chunk's stream to get its line in the file.
    pub lines_before: u64,
}

impl Part {
    /// What to add to a line of the stream read to get its line in the file.
    pub(crate) fn lines_before(&self) -> u64 {
        match self {
            Part::Chunk(chunk) => chunk.lines_before,
            Part::Whole | Part::Head(_) => 0,
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
