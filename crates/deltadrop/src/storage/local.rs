//! A local folder used as the bucket: keys are relative paths below it.

use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use url::Url;

use super::{LaneGuard, Listed, ObjectReader, ObjectStorage};
use crate::error::{Error, Result};
use crate::upload::Upload;

/// A folder as the bucket, for the local runner and the tests.
#[derive(Debug, Clone)]
pub struct LocalBucket {
    root: PathBuf,
}

impl LocalBucket {
    /// Uses `root` (created when missing) as the bucket.
    pub fn new(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        std::fs::create_dir_all(root).map_err(|e| Error::storage(root.display().to_string(), e))?;
        let root = root
            .canonicalize()
            .map_err(|e| Error::storage(root.display().to_string(), e))?;
        Ok(LocalBucket { root })
    }

    /// The bucket's folder (absolute).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of a key; keys that would escape the bucket are refused.
    pub fn path(&self, key: &str) -> Result<PathBuf> {
        let relative = Path::new(key);
        let safe = !key.is_empty()
            && relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        if !safe {
            return Err(Error::InvalidInput {
                message: format!("{key:?} is not a valid object key"),
            });
        }
        Ok(self.root.join(relative))
    }

    fn io_error(&self, key: &str, err: std::io::Error) -> Error {
        if err.kind() == std::io::ErrorKind::NotFound {
            Error::ObjectNotFound {
                key: key.to_string(),
            }
        } else {
            Error::storage(self.display(key), err)
        }
    }

    /// A folder keeps no object versions: an upload is pinned by a fingerprint of the file
    /// (size, modification time, inode), which a new upload of the same key changes.
    fn upload_of(metadata: &std::fs::Metadata) -> Upload {
        let modified = metadata
            .modified()
            .ok()
            .map(chrono::DateTime::<chrono::Utc>::from);
        let nanos = modified.map_or(0, |t| t.timestamp_nanos_opt().unwrap_or(0));
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(metadata);
        #[cfg(not(unix))]
        let inode = 0;
        Upload {
            etag: Some(format!("{}-{nanos}-{inode}", metadata.len())),
            uploaded_at: modified,
            ..Upload::any()
        }
    }

    /// Opens `key`, failing with `UploadReplaced` unless it holds `upload`. The open file is the
    /// pinned one even if the key is replaced while it is read.
    async fn open_pinned(&self, key: &str, upload: &Upload) -> Result<tokio::fs::File> {
        let file = tokio::fs::File::open(self.path(key)?)
            .await
            .map_err(|e| self.io_error(key, e))?;
        let metadata = file.metadata().await.map_err(|e| self.io_error(key, e))?;
        Self::check_pin(key, &metadata, upload)?;
        Ok(file)
    }

    /// Fails with `UploadReplaced` unless the file (as `metadata` describes it) is `upload`.
    fn check_pin(key: &str, metadata: &std::fs::Metadata, upload: &Upload) -> Result<()> {
        match &upload.etag {
            Some(pinned) if Self::upload_of(metadata).etag.as_ref() != Some(pinned) => {
                Err(Error::UploadReplaced {
                    key: key.to_string(),
                })
            }
            _ => Ok(()),
        }
    }

    async fn metadata(&self, key: &str) -> Result<std::fs::Metadata> {
        match tokio::fs::metadata(self.path(key)?).await {
            Ok(m) if m.is_file() => Ok(m),
            Ok(_) => Err(Error::ObjectNotFound {
                key: key.to_string(),
            }),
            Err(e) => Err(self.io_error(key, e)),
        }
    }

    /// Writes through a temporary file and a rename, so readers never see half an object.
    async fn write_atomically(
        &self,
        key: &str,
        fill: impl AsyncFnOnce(&Path) -> std::io::Result<()>,
    ) -> Result<()> {
        let path = self.path(key)?;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| self.io_error(key, e))?;
        }
        let temporary = path.with_file_name(format!(
            ".{}.{}.tmp",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("object"),
            uuid::Uuid::new_v4().simple()
        ));
        let result = async {
            fill(&temporary).await?;
            tokio::fs::rename(&temporary, &path).await
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temporary).await;
        }
        result.map_err(|e| self.io_error(key, e))
    }
}

#[async_trait]
impl ObjectStorage for LocalBucket {
    fn display(&self, key: &str) -> String {
        format!("{}", self.root.join(key).display())
    }

    fn root_url(&self) -> Url {
        // A canonical absolute directory always converts.
        Url::from_directory_path(&self.root)
            .unwrap_or_else(|_| Url::parse("file:///").expect("static URL"))
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        match tokio::fs::metadata(self.path(key)?).await {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_error(key, e)),
        }
    }

    async fn upload(&self, key: &str) -> Result<Option<Upload>> {
        match self.metadata(key).await {
            Ok(m) => Ok(Some(Self::upload_of(&m))),
            Err(Error::ObjectNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn holds(&self, key: &str, upload: &Upload) -> Result<bool> {
        match self.metadata(key).await {
            Ok(m) => Ok(Self::check_pin(key, &m, upload).is_ok()),
            Err(Error::ObjectNotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn reader(&self, key: &str, upload: &Upload) -> Result<ObjectReader> {
        Ok(Box::new(self.open_pinned(key, upload).await?))
    }

    async fn range_reader(
        &self,
        key: &str,
        upload: &Upload,
        start: u64,
        end: u64,
    ) -> Result<ObjectReader> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut file = self.open_pinned(key, upload).await?;
        file.seek(std::io::SeekFrom::Start(start))
            .await
            .map_err(|e| self.io_error(key, e))?;
        Ok(Box::new(file.take(end.saturating_sub(start))))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let root = self.root.clone();
        // Start at the deepest folder the prefix names (refused when it would leave the bucket,
        // as every key is); temporary files start with '.'.
        let start = match prefix.rsplit_once('/') {
            Some((folder, _)) if !folder.is_empty() => self.path(folder)?,
            _ => root.clone(),
        };
        let prefix = prefix.to_string();
        let walk = move || {
            let mut pending = vec![start];
            let mut found = Vec::new();
            while let Some(dir) = pending.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::storage(dir.display().to_string(), e)),
                };
                for entry in entries {
                    let entry = entry.map_err(|e| Error::storage(dir.display().to_string(), e))?;
                    let path = entry.path();
                    let metadata = entry
                        .metadata()
                        .map_err(|e| Error::storage(path.display().to_string(), e))?;
                    if metadata.is_dir() {
                        pending.push(path);
                        continue;
                    }
                    let key = path
                        .strip_prefix(&root)
                        .expect("below the root")
                        .to_string_lossy()
                        .replace('\\', "/");
                    let temporary = entry.file_name().to_string_lossy().starts_with('.');
                    if key.starts_with(&prefix) && !temporary {
                        let modified = metadata
                            .modified()
                            .map_err(|e| Error::storage(key.clone(), e))?;
                        found.push(Listed {
                            key,
                            modified: modified.into(),
                        });
                    }
                }
            }
            found.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(found)
        };
        tokio::task::spawn_blocking(walk)
            .await
            .map_err(|e| Error::storage(self.root.display().to_string(), e))?
    }

    async fn put(&self, key: &str, body: Vec<u8>) -> Result<()> {
        self.write_atomically(key, async |tmp| tokio::fs::write(tmp, &body).await)
            .await
    }

    async fn copy(&self, from: &str, upload: &Upload, to: &str) -> Result<()> {
        let source = self.path(from)?;
        Self::check_pin(from, &self.metadata(from).await?, upload)?;
        self.write_atomically(to, async |tmp| {
            tokio::fs::copy(&source, tmp).await.map(|_| ())
        })
        .await
    }

    /// A folder has no conditional delete: the check and the removal are two calls, so a file
    /// replaced between them is removed. The local runner is the only writer besides the
    /// producer; S3 pins the delete itself.
    async fn delete(&self, key: &str, upload: &Upload) -> Result<()> {
        match self.metadata(key).await {
            Ok(m) => Self::check_pin(key, &m, upload)?,
            Err(Error::ObjectNotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
        match tokio::fs::remove_file(self.path(key)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.io_error(key, e)),
            _ => Ok(()),
        }
    }

    /// An exclusive lock on `_deltadrop/lanes/<hash of the table>.lock`, which the operating
    /// system releases when the process ends, however it ends.
    async fn hold_lane(&self, table: &str) -> Result<Option<LaneGuard>> {
        let key = format!("_deltadrop/lanes/{}.lock", super::lane_id(table));
        let path = self.path(&key)?;
        let error = |e: std::io::Error| self.io_error(&key, e);
        std::fs::create_dir_all(path.parent().expect("a key in a folder")).map_err(error)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(error)?;
        let file = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
            .await
            .map_err(|e| Error::internal(format!("the lane lock's thread stopped: {e}")))?
            .map_err(error)?;
        Ok(Some(Box::new(file)))
    }

    /// A folder prefix goes with its folders, which S3 does not have.
    async fn delete_all(&self, prefix: &str) -> Result<()> {
        let Some(folder) = prefix.strip_suffix('/') else {
            return super::delete_each_listed(self, prefix).await;
        };
        match tokio::fs::remove_dir_all(self.path(folder)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.io_error(prefix, e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn text(bucket: &LocalBucket, key: &str, upload: &Upload) -> Result<String> {
        let mut text = String::new();
        bucket
            .reader(key, upload)
            .await?
            .read_to_string(&mut text)
            .await
            .unwrap();
        Ok(text)
    }

    #[tokio::test]
    async fn put_copy_read_delete_and_refuse_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = LocalBucket::new(dir.path()).unwrap();
        let any = Upload::any();
        bucket.put("a/b.txt", b"hello".to_vec()).await.unwrap();
        bucket
            .copy("a/b.txt", &any, "archive/a/b.txt")
            .await
            .unwrap();
        assert_eq!(
            text(&bucket, "archive/a/b.txt", &any).await.unwrap(),
            "hello"
        );
        let listed: Vec<String> = bucket
            .list("a")
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.key)
            .collect();
        assert_eq!(
            listed,
            ["a/b.txt", "archive/a/b.txt"],
            "a key prefix, as on S3"
        );
        assert_eq!(bucket.list("archive/a/").await.unwrap().len(), 1);
        assert!(bucket.list("nothing/").await.unwrap().is_empty());
        assert_eq!(
            bucket.list("a/../../").await.unwrap_err().name(),
            "InvalidInput"
        );
        bucket.delete("a/b.txt", &any).await.unwrap();
        bucket.delete("a/b.txt", &any).await.unwrap();
        assert_eq!(bucket.size("a/b.txt").await.unwrap(), None);
        assert_eq!(bucket.size("archive/a/b.txt").await.unwrap(), Some(5));
        assert!(bucket.path("../etc/passwd").is_err());
        assert!(bucket.path("/etc/passwd").is_err());
        assert_eq!(
            bucket.copy("missing", &any, "x").await.unwrap_err().name(),
            "ObjectNotFound"
        );
        let url = bucket.table_url("tables/orders").unwrap();
        assert!(url.as_str().ends_with("/tables/orders/"), "{url}");
    }

    #[tokio::test]
    async fn a_pinned_upload_is_never_confused_with_a_newer_one_of_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = LocalBucket::new(dir.path()).unwrap();
        bucket.put("in/a.csv", b"first".to_vec()).await.unwrap();
        let first = bucket.upload("in/a.csv").await.unwrap().unwrap();
        assert!(first.is_pinned() && first.uploaded_at.is_some());
        assert!(bucket.holds("in/a.csv", &first).await.unwrap());

        // The same bytes again are another upload.
        bucket.put("in/a.csv", b"first".to_vec()).await.unwrap();
        let second = bucket.upload("in/a.csv").await.unwrap().unwrap();
        assert_ne!(first.id(), second.id());
        assert!(!bucket.holds("in/a.csv", &first).await.unwrap());
        for error in [
            text(&bucket, "in/a.csv", &first).await.unwrap_err(),
            bucket.copy("in/a.csv", &first, "x").await.unwrap_err(),
            bucket.delete("in/a.csv", &first).await.unwrap_err(),
        ] {
            assert_eq!(error.name(), "UploadReplaced", "{error}");
        }
        assert!(bucket.holds("in/a.csv", &second).await.unwrap());
        assert_eq!(text(&bucket, "in/a.csv", &second).await.unwrap(), "first");
        bucket.delete("in/a.csv", &second).await.unwrap();
        assert!(!bucket.holds("in/a.csv", &Upload::any()).await.unwrap());
    }
}
