//! A first load without a second write: when the stage wrote its files as a new table's data
//! files (the target did not exist), they are copied into the target (one server-side copy each
//! on S3, a hard link on disk) and committed as the table's version 0, with the file's
//! application transactions, in one atomic commit.
//!
//! The copied files keep the staging table's line-number column: Delta readers read the columns
//! of the table's schema, by name, and ignore others in a data file (tests/pipeline/crosscheck.rs
//! reads such a table with the Python `deltalake` package); a later rewrite of a file drops it.

use deltalake::errors::DeltaTableError;
use deltalake::kernel::StructField;
use deltalake::logstore::object_store::ObjectStoreExt;
use deltalake::{DeltaTable, Path};
use futures::TryStreamExt;

use super::merge::{Attempt, CommitRecord, Committed};
use super::version_zero::{create_from_files, WrittenFiles};
use crate::config::Feed;
use crate::delta::TableLocation;
use crate::error::Error;
use crate::partitioned_files::remove_uncommitted;
use crate::read::LINE_COLUMN;

/// Creates the target from the staging table's files; see the module documentation.
pub(super) async fn adopt_staged_files(
    feed: &Feed,
    target: &TableLocation,
    staged: &DeltaTable,
    commit: &CommitRecord,
) -> Result<Committed, Attempt> {
    let staging_name = staged.table_url().to_string();
    let staging_error = |e: DeltaTableError| Attempt::Failed(Error::delta(&staging_name, e));
    let snapshot = staged.snapshot().map_err(staging_error)?;
    let columns: Vec<StructField> = snapshot
        .schema()
        .fields()
        .filter(|field| field.name() != LINE_COLUMN)
        .cloned()
        .collect();
    let partition_columns = snapshot.metadata().partition_columns().to_vec();
    let files: Vec<_> = staged
        .get_active_add_actions_by_predicate(None)
        .try_collect()
        .await
        .map_err(staging_error)?;

    // Both tables are in one bucket (or folder): the store at its root reaches both.
    let store = staged.log_store().root_object_store(None);
    let staging_root = Path::from_url_path(staged.table_url().path())
        .map_err(|e| Attempt::Failed(Error::storage(&staging_name, e)))?;
    let target_root = Path::from_url_path(target.url.path())
        .map_err(|e| Attempt::Failed(Error::storage(target.name(), e)))?;
    let now = chrono::Utc::now().timestamp_millis();
    let (mut adds, mut copied, mut rows) = (Vec::new(), Vec::new(), 0u64);
    for file in &files {
        // Relative to the table, a partition's folder included.
        let relative = file.object_store_path();
        let under = |root: &Path| Path::from_iter(root.parts().chain(relative.parts()));
        let to = under(&target_root);
        let copy = store.copy(&under(&staging_root), &to).await;
        if let Err(e) = copy {
            remove_uncommitted(&store, &copied).await;
            return Err(Attempt::Failed(Error::storage(target.name(), e)));
        }
        copied.push(to);
        #[allow(deprecated)] // the file's Add action as the staging log holds it, stats included
        let mut add = file.add_action();
        add.modification_time = now;
        add.data_change = true;
        rows += file.num_records().unwrap_or(0) as u64;
        adds.push(add);
    }

    let files = WrittenFiles {
        adds,
        store: &store,
        paths: copied,
    };
    create_from_files(
        feed,
        target,
        commit,
        columns,
        partition_columns,
        files,
        rows,
    )
    .await
}
