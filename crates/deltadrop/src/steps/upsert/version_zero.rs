//! A new table's version 0 committed from data files already written for it (adopted staging
//! files, or a partitioned first load's files): one atomic commit carrying the files' `add`
//! actions and the application transactions, or, when it fails, the files removed.

use deltalake::kernel::{Action, Add, StructField};
use deltalake::logstore::ObjectStoreRef;
use deltalake::Path;

use super::merge::Committed;
use super::merge::{created, lost_the_first_commit, new_table_properties, Attempt, CommitRecord};
use crate::config::Feed;
use crate::delta::TableLocation;
use crate::partitioned_files::{partitions_of, remove_uncommitted};

/// Data files written for a table that does not exist yet, and where to remove them from if
/// its creation fails.
pub(super) struct WrittenFiles<'a> {
    /// Their `add` actions, paths relative to the table.
    pub adds: Vec<Add>,
    /// The store `paths` are in.
    pub store: &'a ObjectStoreRef,
    /// The files as `store` names them.
    pub paths: Vec<Path>,
}

/// Creates `target` (the feed's properties, `columns`, `partition_columns`) with `files` as its
/// data, `rows` in all; the step output counts the files' partitions.
pub(super) async fn create_from_files(
    feed: &Feed,
    target: &TableLocation,
    commit: &CommitRecord,
    columns: impl IntoIterator<Item = StructField>,
    partition_columns: Vec<String>,
    files: WrittenFiles<'_>,
    rows: u64,
) -> Result<Committed, Attempt> {
    let file_count = files.adds.len() as u64;
    let partitions = partitions_of(&files.adds);
    let partitioned = !partition_columns.is_empty();
    // The names a WRITE records, so that a created table's history reads the same either way.
    let metrics = serde_json::json!({"num_added_rows": rows, "num_added_files": file_count});
    let handle = match target.handle().await {
        Ok(handle) => handle,
        Err(e) => {
            remove_uncommitted(files.store, &files.paths).await;
            return Err(e.into());
        }
    };
    let creation = handle
        .create()
        .with_columns(columns)
        .with_partition_columns(partition_columns)
        .with_configuration(new_table_properties(feed))
        .with_actions(files.adds.into_iter().map(Action::Add))
        // No internal retry: a lost race for version 0 must not become a second blind append.
        .with_commit_properties(commit.properties(Some(metrics)).with_max_retries(0))
        .await;
    match creation {
        Ok(table) => {
            let mut committed = created(&table, rows, file_count);
            if partitioned {
                committed.changes.partitions_touched = partitions;
            }
            Ok(committed)
        }
        Err(e) => {
            remove_uncommitted(files.store, &files.paths).await;
            Err(lost_the_first_commit(target, e).await)
        }
    }
}
