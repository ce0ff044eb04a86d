//! The archive's move of one large upload on an S3 API: the copy (in parts above the single-copy
//! limit) and the delete the archive and quarantine steps make, timed, and how large a file
//! moves in the functions' 840 s at that rate.

use std::time::Instant;

use deltadrop::storage::ObjectStorage;
use deltadrop_aws::s3::S3Bucket;
use serde_json::{json, Value};

use crate::BenchResult;

const MIB: u64 = 1024 * 1024;
/// The archive function's timeout.
const FUNCTION_SECONDS: f64 = 840.0;
/// The parts the object is uploaded in (not timed).
const UPLOAD_PART_BYTES: u64 = 64 * MIB;

/// What to move, and how the bucket copies it.
pub struct Move {
    pub endpoint: String,
    pub bucket: String,
    pub object_mib: u64,
    pub single_copy_limit_mib: u64,
    pub part_mib: u64,
}

impl Move {
    pub async fn run(&self) -> BenchResult<Value> {
        let sdk = aws_config::from_env()
            .endpoint_url(&self.endpoint)
            .load()
            .await;
        let client = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(true)
                .build(),
        );
        client.create_bucket().bucket(&self.bucket).send().await?;
        let key = "incoming/large/file.bin";
        let size = self.object_mib * MIB;
        upload_in_parts(&client, &self.bucket, key, size).await?;
        let bucket = S3Bucket::new(client, &self.bucket, Default::default())?
            .with_copy_limits(self.single_copy_limit_mib * MIB, self.part_mib * MIB);
        let upload = bucket.upload(key).await?.ok_or("the upload is not there")?;
        let started = Instant::now();
        bucket
            .copy(key, &upload, "archive/large/run/file.bin")
            .await?;
        bucket.delete(key, &upload).await?;
        let seconds = started.elapsed().as_secs_f64();
        let bytes_per_s = size as f64 / seconds;
        Ok(json!({
            "bytes": size,
            "in_parts": size > self.single_copy_limit_mib * MIB,
            "part_mib": self.part_mib,
            "seconds": seconds,
            "mb_per_s": bytes_per_s / 1e6,
            "gib_in_840_s": bytes_per_s * FUNCTION_SECONDS / (1024.0 * MIB as f64),
        }))
    }
}

/// Uploads `size` bytes (a repeated pseudo-random block) to `key` in 64 MiB parts.
async fn upload_in_parts(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    size: u64,
) -> BenchResult<()> {
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let block: Vec<u8> = (0..UPLOAD_PART_BYTES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let started = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await?;
    let upload_id = started.upload_id().unwrap_or_default();
    let mut parts = Vec::new();
    for (i, start) in (0..size).step_by(UPLOAD_PART_BYTES as usize).enumerate() {
        let len = UPLOAD_PART_BYTES.min(size - start) as usize;
        let number = i as i32 + 1;
        let part = client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(block[..len].to_vec().into())
            .send()
            .await?;
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(part.e_tag().map(str::to_string))
                .build(),
        );
    }
    client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await?;
    Ok(())
}
