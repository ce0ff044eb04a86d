//! An S3 bucket as the pipeline's storage (aws-sdk-s3).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use deltadrop::error::{Error, Result};
use deltadrop::storage::{Listed, ObjectReader, ObjectStorage};
use deltadrop::upload::Upload;
use futures::{StreamExt, TryStreamExt};
use url::Url;

/// CopyObject handles up to 5 GB; larger objects are copied in parts of this size
/// (https://docs.aws.amazon.com/AmazonS3/latest/userguide/CopyingObjectsMPUapi.html).
const SINGLE_COPY_LIMIT: u64 = 5 * 1024 * 1024 * 1024;
const COPY_PART_BYTES: u64 = 512 * 1024 * 1024;
/// Parts copied at once: S3 copies each part itself, so the function only waits; one after
/// another a 50 GB file took most of the archive function's timeout.
const PARALLEL_COPY_PARTS: usize = 16;
/// A multipart upload has at most 10,000 parts, of at most 5 GiB, for objects of up to 5 TiB
/// (https://docs.aws.amazon.com/AmazonS3/latest/userguide/qfacts.html).
const MAX_PARTS: u64 = 10_000;

/// The part size for a copy of `size` bytes: `part_bytes`, or larger when that would take more
/// than S3's 10,000 parts (past about 4.9 TiB at 512 MiB).
fn copy_part_size(size: u64, part_bytes: u64) -> u64 {
    part_bytes.max(size.div_ceil(MAX_PARTS))
}

/// The data bucket on S3. Reads, copies and deletes of a pinned upload act on its object
/// version, or are conditional on its ETag in a bucket without versions.
#[derive(Clone)]
pub struct S3Bucket {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// `s3://<bucket>/`, checked once when the bucket is named.
    root: Url,
    /// Options for delta-rs (endpoint and the like when not on AWS).
    table_options: HashMap<String, String>,
    /// Above this size a copy goes in parts of `copy_part_bytes`.
    single_copy_limit: u64,
    copy_part_bytes: u64,
}

impl S3Bucket {
    /// `bucket` through `client`; `table_options` are the storage options delta-rs gets for
    /// tables in it. A name that cannot be a bucket (`my bucket`) is a `ConfigError`.
    pub fn new(
        client: aws_sdk_s3::Client,
        bucket: impl Into<String>,
        table_options: HashMap<String, String>,
    ) -> Result<Self> {
        let bucket = bucket.into();
        let root = Url::parse(&format!("s3://{bucket}/"))
            .ok()
            .filter(|url| url.host_str() == Some(bucket.as_str()))
            .ok_or_else(|| Error::ConfigError {
                field: "bucket".into(),
                message: format!("{bucket:?} is not a valid S3 bucket name"),
            })?;
        Ok(S3Bucket {
            client,
            bucket,
            root,
            table_options,
            single_copy_limit: SINGLE_COPY_LIMIT,
            copy_part_bytes: COPY_PART_BYTES,
        })
    }

    /// Copies objects over `single_copy_limit` bytes in parts of `part_bytes` (S3's defaults:
    /// 5 GB, 512 MB), so that the multipart path can run on small objects too.
    pub fn with_copy_limits(mut self, single_copy_limit: u64, part_bytes: u64) -> Self {
        self.single_copy_limit = single_copy_limit;
        self.copy_part_bytes = part_bytes;
        self
    }

    fn error(&self, key: &str, err: impl std::error::Error) -> Error {
        Error::storage(self.display(key), DisplayErrorContext(err))
    }

    /// `bucket/key`, with `?versionId=` when the upload is pinned to a version.
    fn copy_source(&self, key: &str, upload: &Upload) -> String {
        let encoded: String = percent_encoding::utf8_percent_encode(key, COPY_SOURCE).collect();
        match &upload.version_id {
            Some(version) => {
                let version: String =
                    percent_encoding::utf8_percent_encode(version, COPY_SOURCE).collect();
                format!("{}/{encoded}?versionId={version}", self.bucket)
            }
            None => format!("{}/{encoded}", self.bucket),
        }
    }

    /// Streams `upload` of `key`, or the byte `range` of it.
    async fn get(&self, key: &str, upload: &Upload, range: Option<String>) -> Result<ObjectReader> {
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(upload.version_id.clone())
            .set_if_match(etag_condition(upload))
            .set_range(range)
            .send()
            .await
            .map_err(|e| self.pinned_error(key, e))?;
        Ok(Box::new(object.body.into_async_read()))
    }

    /// Maps the answers of a request pinned to an upload: 412 (the ETag condition failed: the
    /// key holds another upload) and 404 (no such key or version) get their own errors.
    /// https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-requests.html
    fn pinned_error<E>(&self, key: &str, err: SdkError<E, HttpResponse>) -> Error
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        match err.raw_response().map(|r| r.status().as_u16()) {
            Some(412) => Error::UploadReplaced {
                key: key.to_string(),
            },
            Some(404) => Error::ObjectNotFound {
                key: key.to_string(),
            },
            _ => self.error(key, err),
        }
    }

    /// The size of `upload` at `key`, `None` when the key does not hold it.
    async fn pinned_size(&self, key: &str, upload: &Upload) -> Result<Option<u64>> {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(upload.version_id.clone())
            .set_if_match(etag_condition(upload))
            .send()
            .await;
        match head {
            Ok(head) => Ok(Some(head.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) => match self.pinned_error(key, e) {
                Error::ObjectNotFound { .. } | Error::UploadReplaced { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    /// A copy in parts, `PARALLEL_COPY_PARTS` at a time. UploadPartCopy copies no tags (a
    /// CopyObject does): the upload's tags are read and given to the new object.
    async fn multipart_copy(&self, from: &str, upload: &Upload, to: &str, size: u64) -> Result<()> {
        let tags = self
            .client
            .get_object_tagging()
            .bucket(&self.bucket)
            .key(from)
            .set_version_id(upload.version_id.clone())
            .send()
            .await
            .map_err(|e| self.pinned_error(from, e))?;
        let tagging: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(tags.tag_set().iter().map(|t| (t.key(), t.value())))
            .finish();
        let started = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(to)
            .set_tagging(Some(tagging).filter(|t| !t.is_empty()))
            .send()
            .await
            .map_err(|e| self.error(to, e))?;
        let upload_id = started.upload_id().unwrap_or_default().to_string();
        let result = async {
            let part_bytes = copy_part_size(size, self.copy_part_bytes);
            let ranges = (0..size.div_ceil(part_bytes)).map(|i| {
                let start = i * part_bytes;
                (i as i32 + 1, start, (start + part_bytes).min(size) - 1)
            });
            let parts: Vec<CompletedPart> = futures::stream::iter(ranges)
                .map(|(number, start, end)| {
                    let upload_id = &upload_id;
                    async move {
                        let part = self
                            .client
                            .upload_part_copy()
                            .bucket(&self.bucket)
                            .key(to)
                            .upload_id(upload_id)
                            .part_number(number)
                            .copy_source(self.copy_source(from, upload))
                            .set_copy_source_if_match(etag_condition(upload))
                            .copy_source_range(format!("bytes={start}-{end}"))
                            .send()
                            .await
                            .map_err(|e| self.pinned_error(from, e))?;
                        let etag = part
                            .copy_part_result()
                            .and_then(|r| r.e_tag())
                            .unwrap_or_default();
                        Ok::<_, Error>(
                            CompletedPart::builder()
                                .part_number(number)
                                .e_tag(etag)
                                .build(),
                        )
                    }
                })
                // In part order, whichever finishes first.
                .buffered(PARALLEL_COPY_PARTS)
                .try_collect()
                .await?;
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(to)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| self.error(to, e))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(to)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }
}

/// Where the bucket keeps no versions, an upload is pinned by its ETag (`If-Match`).
fn etag_condition(upload: &Upload) -> Option<String> {
    match (&upload.version_id, &upload.etag) {
        (None, Some(etag)) => Some(format!("\"{}\"", etag.trim_matches('"'))),
        _ => None,
    }
}

/// Characters to escape in `x-amz-copy-source` (everything but unreserved characters and '/').
const COPY_SOURCE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

#[async_trait]
impl ObjectStorage for S3Bucket {
    fn display(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    fn root_url(&self) -> Url {
        self.root.clone()
    }

    fn table_storage_options(&self) -> HashMap<String, String> {
        self.table_options.clone()
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        self.pinned_size(key, &Upload::any()).await
    }

    async fn upload(&self, key: &str) -> Result<Option<Upload>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(head) => Ok(Some(Upload {
                version_id: head.version_id().map(str::to_string),
                etag: head.e_tag().map(|e| e.trim_matches('"').to_string()),
                sequencer: None,
                uploaded_at: head
                    .last_modified()
                    .and_then(|t| chrono::DateTime::from_timestamp_millis(t.to_millis().ok()?)),
            })),
            Err(e) => match self.pinned_error(key, e) {
                Error::ObjectNotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn holds(&self, key: &str, upload: &Upload) -> Result<bool> {
        Ok(self.pinned_size(key, upload).await?.is_some())
    }

    async fn reader(&self, key: &str, upload: &Upload) -> Result<ObjectReader> {
        self.get(key, upload, None).await
    }

    async fn range_reader(
        &self,
        key: &str,
        upload: &Upload,
        start: u64,
        end: u64,
    ) -> Result<ObjectReader> {
        if end <= start {
            return Ok(Box::new(tokio::io::empty()));
        }
        // An HTTP range's last byte is inclusive; past the object's end it reads to the end
        // (GetObject's Range is RFC 9110's: https://www.rfc-editor.org/rfc/rfc9110#name-range).
        let range = format!("bytes={start}-{}", end - 1);
        self.get(key, upload, Some(range)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let mut found = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error(prefix, e))?;
            for object in page.contents() {
                let modified = object
                    .last_modified()
                    .and_then(|t| chrono::DateTime::from_timestamp_millis(t.to_millis().ok()?));
                if let (Some(key), Some(modified)) = (object.key(), modified) {
                    found.push(Listed {
                        key: key.to_string(),
                        modified,
                    });
                }
            }
        }
        Ok(found)
    }

    async fn put(&self, key: &str, body: Vec<u8>) -> Result<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(body.into())
            .send()
            .await
            .map_err(|e| self.error(key, e))?;
        Ok(())
    }

    async fn copy(&self, from: &str, upload: &Upload, to: &str) -> Result<()> {
        let size = match self.pinned_size(from, upload).await? {
            Some(size) => size,
            None if upload.is_pinned() && self.size(from).await?.is_some() => {
                return Err(Error::UploadReplaced {
                    key: from.to_string(),
                })
            }
            None => {
                return Err(Error::ObjectNotFound {
                    key: from.to_string(),
                })
            }
        };
        if size > self.single_copy_limit {
            return self.multipart_copy(from, upload, to, size).await;
        }
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(to)
            .copy_source(self.copy_source(from, upload))
            .set_copy_source_if_match(etag_condition(upload))
            .send()
            .await
            .map_err(|e| self.pinned_error(from, e))?;
        Ok(())
    }

    /// With a version id, S3 removes that version for good and the key's other versions stay
    /// (a newer upload remains current); with an ETag, `If-Match` makes the delete conditional.
    async fn delete(&self, key: &str, upload: &Upload) -> Result<()> {
        let deleted = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(upload.version_id.clone())
            .set_if_match(etag_condition(upload))
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(e) => match self.pinned_error(key, e) {
                Error::ObjectNotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_take_at_most_10000_parts_of_at_least_the_configured_size() {
        const GIB: u64 = 1 << 30;
        assert_eq!(copy_part_size(6 * GIB, COPY_PART_BYTES), COPY_PART_BYTES);
        let largest_object = 5 * 1024 * GIB;
        let part = copy_part_size(largest_object, COPY_PART_BYTES);
        assert!(part > COPY_PART_BYTES && part <= 5 * GIB);
        assert_eq!(largest_object.div_ceil(part), MAX_PARTS);
    }

    #[test]
    fn a_name_that_cannot_be_a_bucket_is_a_configuration_error() {
        let client = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::Config::builder()
                .behavior_version_latest()
                .build(),
        );
        let bucket = S3Bucket::new(client.clone(), "data-bucket", HashMap::new()).unwrap();
        assert_eq!(bucket.root_url().as_str(), "s3://data-bucket/");
        for bad in ["my bucket", "a/b", ""] {
            let error = S3Bucket::new(client.clone(), bad, HashMap::new())
                .err()
                .unwrap();
            assert_eq!(error.name(), "ConfigError", "{bad:?}");
        }
    }
}
