//! An S3 bucket as the pipeline's storage (aws-sdk-s3).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use deltadrop::error::{Error, Result};
use deltadrop::storage::{ObjectReader, ObjectStorage};
use url::Url;

/// CopyObject handles up to 5 GB; larger objects are copied in parts of this size.
const SINGLE_COPY_LIMIT: u64 = 5 * 1024 * 1024 * 1024;
const COPY_PART_BYTES: u64 = 512 * 1024 * 1024;

#[derive(Clone)]
pub struct S3Bucket {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Options for delta-rs (endpoint and the like when not on AWS).
    table_options: HashMap<String, String>,
}

impl S3Bucket {
    pub fn new(
        client: aws_sdk_s3::Client,
        bucket: impl Into<String>,
        table_options: HashMap<String, String>,
    ) -> Self {
        S3Bucket {
            client,
            bucket: bucket.into(),
            table_options,
        }
    }

    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn error(&self, key: &str, err: impl std::error::Error) -> Error {
        Error::storage(self.display(key), DisplayErrorContext(err))
    }

    fn copy_source(&self, key: &str) -> String {
        let encoded: String = percent_encoding::utf8_percent_encode(key, COPY_SOURCE).collect();
        format!("{}/{encoded}", self.bucket)
    }

    async fn multipart_copy(&self, from: &str, to: &str, size: u64) -> Result<()> {
        let upload = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(to)
            .send()
            .await
            .map_err(|e| self.error(to, e))?;
        let upload_id = upload.upload_id().unwrap_or_default().to_string();
        let result = async {
            let mut parts = Vec::new();
            let mut start = 0;
            while start < size {
                let end = (start + COPY_PART_BYTES).min(size) - 1;
                let number = parts.len() as i32 + 1;
                let part = self
                    .client
                    .upload_part_copy()
                    .bucket(&self.bucket)
                    .key(to)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .copy_source(self.copy_source(from))
                    .copy_source_range(format!("bytes={start}-{end}"))
                    .send()
                    .await
                    .map_err(|e| self.error(from, e))?;
                let etag = part
                    .copy_part_result()
                    .and_then(|r| r.e_tag())
                    .unwrap_or_default();
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .e_tag(etag)
                        .build(),
                );
                start = end + 1;
            }
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
        Url::parse(&format!("s3://{}/", self.bucket)).expect("bucket names are valid hosts")
    }

    fn table_storage_options(&self) -> HashMap<String, String> {
        self.table_options.clone()
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(head) => Ok(Some(head.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(self.error(key, e)),
        }
    }

    async fn reader(&self, key: &str) -> Result<ObjectReader> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(object) => Ok(Box::new(object.body.into_async_read())),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                Err(Error::ObjectNotFound {
                    key: key.to_string(),
                })
            }
            Err(e) => Err(self.error(key, e)),
        }
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

    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        let size = self
            .size(from)
            .await?
            .ok_or_else(|| Error::ObjectNotFound {
                key: from.to_string(),
            })?;
        if size > SINGLE_COPY_LIMIT {
            return self.multipart_copy(from, to, size).await;
        }
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(to)
            .copy_source(self.copy_source(from))
            .send()
            .await
            .map_err(|e| {
                if e.code() == Some("NoSuchKey") {
                    Error::ObjectNotFound {
                        key: from.to_string(),
                    }
                } else {
                    self.error(from, e)
                }
            })?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.error(key, e))?;
        Ok(())
    }
}
