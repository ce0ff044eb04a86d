//! An S3 bucket as the commands see it: the caller's AWS credentials and region (environment,
//! profile or SSO), and `AWS_ENDPOINT_URL` for an S3-compatible endpoint (path-style requests).

use std::collections::HashMap;

use deltadrop_aws::s3::S3Bucket;

/// The bucket `name`, for objects and (through delta-rs, which reads the same environment) tables.
pub async fn bucket(name: &str) -> deltadrop::Result<S3Bucket> {
    let sdk = aws_config::load_from_env().await;
    let mut s3_config = aws_sdk_s3::config::Builder::from(&sdk);
    let mut table_options = HashMap::new();
    if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
        s3_config = s3_config.force_path_style(true);
        table_options.insert("AWS_ENDPOINT_URL".to_string(), endpoint.clone());
        table_options.insert(
            "AWS_ALLOW_HTTP".to_string(),
            endpoint.starts_with("http://").to_string(),
        );
        table_options.insert("AWS_VIRTUAL_HOSTED_STYLE_REQUEST".into(), "false".into());
    }
    if let Some(region) = sdk.region() {
        table_options.insert("AWS_REGION".to_string(), region.to_string());
    }
    S3Bucket::new(
        aws_sdk_s3::Client::from_conf(s3_config.build()),
        name,
        table_options,
    )
}

/// The configuration the deployment reads, at `key` of `storage`.
pub async fn config(storage: &S3Bucket, key: &str) -> deltadrop::Result<deltadrop::config::Config> {
    use deltadrop::storage::ObjectStorage;
    let text = String::from_utf8(storage.read_all(key).await?)
        .map_err(|e| deltadrop::Error::storage(storage.display(key), e))?;
    deltadrop::config::Config::from_toml(&text, &storage.display(key))
}
