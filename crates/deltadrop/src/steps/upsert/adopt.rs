//! A first load without a second write: when the stage wrote its files as a new table's data
//! files (the target did not exist), they are copied into the target (one server-side copy each
//! on S3, a hard link on disk) and committed as the table's version 0, with the file's
//! application transactions, in one atomic commit.
//!
//! The copied files keep the staging table's line-number column: Delta readers read the columns
//! of the table's schema, by name, and ignore others in a data file (tests/pipeline/crosscheck.rs
//! reads such a table with the Python `deltalake` package); a later rewrite of a file drops it.

use deltalake::errors::DeltaTableError;
use deltalake::kernel::{Action, StructField};
use deltalake::logstore::object_store::ObjectStoreExt;
use deltalake::{DeltaTable, Path};
use futures::TryStreamExt;

use super::merge::{
    created, lost_the_first_commit, new_table_properties, Attempt, CommitRecord, Committed,
};
use crate::config::Feed;
use crate::delta::TableLocation;
use crate::error::Error;
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
        let name = file.path().to_string();
        let to = target_root.clone().join(name.as_str());
        let copy = store
            .copy(&staging_root.clone().join(name.as_str()), &to)
            .await;
        if let Err(e) = copy {
            remove_copies(&store, &copied).await;
            return Err(Attempt::Failed(Error::storage(target.name(), e)));
        }
        copied.push(to);
        #[allow(deprecated)] // the file's Add action as the staging log holds it, stats included
        let mut add = file.add_action();
        add.modification_time = now;
        add.data_change = true;
        rows += file.num_records().unwrap_or(0) as u64;
        adds.push(Action::Add(add));
    }

    // The names a WRITE records, so that a created table's history reads the same either way.
    let metrics = serde_json::json!({"num_added_rows": rows, "num_added_files": files.len()});
    let creation = target
        .handle()
        .await?
        .create()
        .with_columns(columns)
        .with_configuration(new_table_properties(feed))
        .with_actions(adds)
        // No internal retry: a lost race for version 0 must not become a second blind append.
        .with_commit_properties(commit.properties(Some(metrics)).with_max_retries(0))
        .await;
    let table = match creation {
        Ok(table) => table,
        Err(e) => {
            remove_copies(&store, &copied).await;
            return Err(lost_the_first_commit(target, e).await);
        }
    };
    Ok(created(&table, rows, files.len() as u64))
}

/// Best effort: files copied for a commit that did not happen are no table's (VACUUM would
/// remove them after its retention, too).
async fn remove_copies(store: &deltalake::logstore::ObjectStoreRef, copied: &[Path]) {
    for path in copied {
        if let Err(e) = store.delete(path).await {
            tracing::warn!(error = %e, %path, "could not remove a copied file of a first load that did not commit");
        }
    }
}
