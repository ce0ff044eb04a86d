//! Archive (after a good stage): move the original file, never losing it. Safe to re-run after a
//! partial move. Quarantine ([`super::quarantine`]) moves files the same way.

use serde::{Deserialize, Serialize};

use super::RunInput;
use crate::environment::Environment;
use crate::error::{Error, Result};
use crate::upload::Upload;

/// Where the archive step moved the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveOutput {
    /// The archive copy's key in the bucket.
    pub archived_key: String,
    /// Where the file is now, as a URL-like location.
    pub archived_to: String,
}

/// Copies `upload` of `from` to `to` and deletes it from `from`. When `from` no longer holds it
/// and `to` exists, a previous attempt already moved it.
pub(super) async fn move_object(
    env: &Environment,
    from: &str,
    upload: &Upload,
    to: &str,
) -> Result<()> {
    if env.storage.holds(from, upload).await? {
        env.storage.copy(from, upload, to).await?;
        env.storage.delete(from, upload).await
    } else if env.storage.size(to).await?.is_some() {
        Ok(())
    } else if upload.is_pinned() && env.storage.size(from).await?.is_some() {
        Err(Error::UploadReplaced {
            key: from.to_string(),
        })
    } else {
        Err(Error::ObjectNotFound {
            key: from.to_string(),
        })
    }
}

/// `<prefix><folder of the key>/<run id>/<file name>`: every upload of a key keeps its own copy
/// (a producer that sends `orders.csv` every hour), and a retried step finds its own.
pub(super) fn copy_key(prefix: &str, run: &RunInput) -> String {
    let (folder, file) = match run.key.rsplit_once('/') {
        Some((folder, file)) => (format!("{folder}/"), file),
        None => (String::new(), run.key.as_str()),
    };
    format!("{prefix}{folder}{}/{file}", run.run_id)
}

/// `<archive prefix><folder of the key>/<run id>/<file name>`: where the run's file is archived.
pub fn archive_key(env: &Environment, run: &RunInput) -> String {
    copy_key(&env.config.locations.archive, run)
}

/// Moves exactly the run's upload from its key to [`archive_key`]; a re-run after the move
/// finds the copy and succeeds.
pub async fn archive(env: &Environment, run: &RunInput) -> Result<ArchiveOutput> {
    run.validate()?;
    let to = archive_key(env, run);
    move_object(env, &run.key, &run.upload, &to).await?;
    Ok(ArchiveOutput {
        archived_to: env.storage.display(&to),
        archived_key: to,
    })
}
