//! A local folder used as the bucket: keys are relative paths below it.

use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use url::Url;

use super::{ObjectReader, ObjectStorage};
use crate::error::{Error, Result};

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

    async fn reader(&self, key: &str) -> Result<ObjectReader> {
        let file = tokio::fs::File::open(self.path(key)?)
            .await
            .map_err(|e| self.io_error(key, e))?;
        Ok(Box::new(file))
    }

    async fn put(&self, key: &str, body: Vec<u8>) -> Result<()> {
        self.write_atomically(key, async |tmp| tokio::fs::write(tmp, &body).await)
            .await
    }

    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        let source = self.path(from)?;
        if !source.is_file() {
            return Err(Error::ObjectNotFound {
                key: from.to_string(),
            });
        }
        self.write_atomically(to, async |tmp| {
            tokio::fs::copy(&source, tmp).await.map(|_| ())
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.io_error(key, e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn put_copy_read_delete_and_refuse_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = LocalBucket::new(dir.path()).unwrap();
        bucket.put("a/b.txt", b"hello".to_vec()).await.unwrap();
        bucket.copy("a/b.txt", "archive/a/b.txt").await.unwrap();
        let mut text = String::new();
        bucket
            .reader("archive/a/b.txt")
            .await
            .unwrap()
            .read_to_string(&mut text)
            .await
            .unwrap();
        assert_eq!(text, "hello");
        bucket.delete("a/b.txt").await.unwrap();
        bucket.delete("a/b.txt").await.unwrap();
        assert_eq!(bucket.size("a/b.txt").await.unwrap(), None);
        assert_eq!(bucket.size("archive/a/b.txt").await.unwrap(), Some(5));
        assert!(bucket.path("../etc/passwd").is_err());
        assert!(bucket.path("/etc/passwd").is_err());
        assert_eq!(
            bucket.copy("missing", "x").await.unwrap_err().name(),
            "ObjectNotFound"
        );
        let url = bucket.table_url("tables/orders").unwrap();
        assert!(url.as_str().ends_with("/tables/orders/"), "{url}");
    }
}
