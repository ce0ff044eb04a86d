//! The bucket the pipeline reads files from and moves them within.
//!
//! Delta tables are not written through this trait: delta-rs has its own object stores. The
//! trait only says where tables live ([`ObjectStorage::table_url`]) and with which options.

mod local;

use std::collections::HashMap;

use async_trait::async_trait;
use tokio::io::AsyncRead;
use url::Url;

pub use local::LocalBucket;

use crate::error::{Error, Result};
use crate::upload::Upload;

/// The bytes of an object, streamed ([`ObjectStorage::reader`]).
pub type ObjectReader = Box<dyn AsyncRead + Send + Unpin>;

/// Held while a process is its table's one writer ([`ObjectStorage::hold_lane`]); dropping it
/// lets the next one in.
pub type LaneGuard = Box<dyn Send + Sync>;

/// The name of a table's commit lane: 32 hex digits of the SHA-256 of its URL. Locally it names
/// the lock file; on AWS it is the SQS message group, which lets one merger at a time work on the
/// table (a group id is at most 128 characters of a limited set, so not the URL itself:
/// https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessage.html).
pub fn lane_id(table_url: &str) -> String {
    short_digest(table_url, 16)
}

/// The first `bytes` bytes of the SHA-256 of `text`, in hex: a short, stable name for a long one.
pub fn short_digest(text: &str, bytes: usize) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(text.as_bytes())[..bytes])
}

/// An object found by [`ObjectStorage::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The object's key.
    pub key: String,
    /// When the object was last written.
    pub modified: chrono::DateTime<chrono::Utc>,
}

/// A bucket: S3 on AWS, [`LocalBucket`] on a machine. Reads, copies and deletes name the
/// [`Upload`] they act on, so that a run acts on the upload it was started for and no other.
#[async_trait]
pub trait ObjectStorage: Send + Sync {
    /// A URL-like name of a key for messages: `file:///data/bucket/a.csv`, `s3://bucket/a.csv`.
    fn display(&self, key: &str) -> String;

    /// The URL of the bucket's root, used to resolve bucket-relative table locations.
    fn root_url(&self) -> Url;

    /// Storage options delta-rs needs to reach tables here (endpoint, region, ...).
    fn table_storage_options(&self) -> HashMap<String, String> {
        HashMap::new()
    }

    /// The object's size, or `None` when there is no such object.
    async fn size(&self, key: &str) -> Result<Option<u64>>;

    /// The upload `key` holds now, or `None` when there is no such object.
    async fn upload(&self, key: &str) -> Result<Option<Upload>>;

    /// Whether `key` holds `upload` (any object when `upload` pins nothing).
    async fn holds(&self, key: &str, upload: &Upload) -> Result<bool>;

    /// Streams the bytes of `upload` at `key`: `UploadReplaced` when the key holds another
    /// upload and that one cannot be read any more.
    async fn reader(&self, key: &str, upload: &Upload) -> Result<ObjectReader>;

    /// Streams bytes `start..end` of `upload` at `key` (an `end` past the object's end reads to
    /// its end): what one chunk of a split file reads ([`crate::split`]). This default skips
    /// to `start` on the whole object's stream; storages with ranged reads override it.
    async fn range_reader(
        &self,
        key: &str,
        upload: &Upload,
        start: u64,
        end: u64,
    ) -> Result<ObjectReader> {
        use tokio::io::AsyncReadExt;
        let mut reader = self.reader(key, upload).await?;
        tokio::io::copy(&mut (&mut reader).take(start), &mut tokio::io::sink())
            .await
            .map_err(|e| Error::storage(self.display(key), e))?;
        Ok(Box::new(reader.take(end.saturating_sub(start))))
    }

    /// Every object whose key starts with `prefix`.
    async fn list(&self, prefix: &str) -> Result<Vec<Listed>>;

    /// Reads a whole (small) object: a configuration, an error report, a log entry.
    async fn read_all(&self, key: &str) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        let mut reader = self.reader(key, &Upload::any()).await?;
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut bytes)
            .await
            .map_err(|e| Error::storage(self.display(key), e))?;
        Ok(bytes)
    }

    /// Writes a whole (small) object.
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<()>;

    /// Copies `upload` of `from` to `to`; the destination is replaced when it exists.
    async fn copy(&self, from: &str, upload: &Upload, to: &str) -> Result<()>;

    /// Deletes `upload` of `key`, never another upload of it; deleting a missing object succeeds.
    async fn delete(&self, key: &str, upload: &Upload) -> Result<()>;

    /// Deletes every object under `prefix` (a run's staging table, say): no Delta engine needed.
    async fn delete_all(&self, prefix: &str) -> Result<()> {
        delete_each_listed(self, prefix).await
    }

    /// Waits until this process is the only one merging into `table` (its URL), until the guard
    /// drops. `None`: the storage keeps no lanes itself (on AWS the merger's FIFO queue lets one
    /// consumer at a time work on a table).
    async fn hold_lane(&self, _table: &str) -> Result<Option<LaneGuard>> {
        Ok(None)
    }

    /// Resolves a table location: a URL as is, anything else relative to the bucket's root.
    fn table_url(&self, table: &str) -> Result<Url> {
        let url = if table.contains("://") {
            Url::parse(table)
                .map_err(|e| Error::config("table", format!("{table:?} is not a valid URL: {e}")))?
        } else {
            let relative = format!("{}/", table.trim_matches('/'));
            self.root_url().join(&relative).map_err(|e| {
                Error::config("table", format!("{table:?} is not a valid location: {e}"))
            })?
        };
        Ok(url)
    }
}

/// Lists `prefix` and deletes each object, whatever upload it holds: [`ObjectStorage::delete_all`]
/// for any storage.
pub(crate) async fn delete_each_listed<S: ObjectStorage + ?Sized>(
    storage: &S,
    prefix: &str,
) -> Result<()> {
    for listed in storage.list(prefix).await? {
        storage.delete(&listed.key, &Upload::any()).await?;
    }
    Ok(())
}
