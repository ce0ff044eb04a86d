//! What every function builds once per container: the AWS clients and the environment.

use std::collections::HashMap;
use std::sync::Arc;

use aws_config::SdkConfig;
use deltadrop::clock::SystemClock;
use deltadrop::config::Config;
use deltadrop::storage::ObjectStorage;
use deltadrop::{Environment, Error, Result};
use tokio::io::AsyncReadExt;

use crate::s3::S3Bucket;
use crate::ses::SesMailer;

pub struct AwsContext {
    pub env: Environment,
    pub sfn: aws_sdk_sfn::Client,
    pub region: String,
    /// Only the trigger needs it.
    pub state_machine_arn: Option<String>,
}

/// Where to find things, from the function's environment variables.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `DELTADROP_BUCKET`: the bucket files land in.
    pub bucket: String,
    /// `DELTADROP_CONFIG_KEY`: the configuration's key in that bucket (default `deltadrop.toml`).
    pub config_key: String,
    /// `STATE_MACHINE_ARN`: for the trigger.
    pub state_machine_arn: Option<String>,
    /// `DELTADROP_S3_ENDPOINT`: an S3-compatible endpoint instead of AWS (tests, MinIO...).
    pub s3_endpoint: Option<String>,
}

impl Settings {
    pub fn from_env() -> Result<Settings> {
        let bucket = std::env::var("DELTADROP_BUCKET").map_err(|_| Error::ConfigError {
            field: "DELTADROP_BUCKET".into(),
            message: "set it to the bucket the files land in".into(),
        })?;
        Ok(Settings {
            bucket,
            config_key: std::env::var("DELTADROP_CONFIG_KEY")
                .unwrap_or_else(|_| "deltadrop.toml".into()),
            state_machine_arn: std::env::var("STATE_MACHINE_ARN").ok(),
            s3_endpoint: std::env::var("DELTADROP_S3_ENDPOINT").ok(),
        })
    }
}

impl AwsContext {
    /// Builds the clients from the default AWS configuration chain and the settings, and
    /// reads the deltadrop configuration from the bucket.
    pub async fn new(sdk: &SdkConfig, settings: &Settings) -> Result<AwsContext> {
        let region = sdk
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".into());
        let mut s3_config = aws_sdk_s3::config::Builder::from(sdk);
        let mut table_options = HashMap::from([("AWS_REGION".to_string(), region.clone())]);
        if let Some(endpoint) = &settings.s3_endpoint {
            s3_config = s3_config.endpoint_url(endpoint).force_path_style(true);
            table_options.insert("AWS_ENDPOINT_URL".into(), endpoint.clone());
            table_options.insert("AWS_ALLOW_HTTP".into(), "true".into());
            table_options.insert("AWS_VIRTUAL_HOSTED_STYLE_REQUEST".into(), "false".into());
        }
        let storage = S3Bucket::new(
            aws_sdk_s3::Client::from_conf(s3_config.build()),
            &settings.bucket,
            table_options,
        );
        let config = read_config(&storage, &settings.config_key).await?;
        Ok(AwsContext {
            env: Environment {
                config: Arc::new(config),
                storage: Arc::new(storage),
                mailer: Arc::new(SesMailer::new(aws_sdk_sesv2::Client::new(sdk))),
                clock: Arc::new(SystemClock),
            },
            sfn: aws_sdk_sfn::Client::new(sdk),
            region,
            state_machine_arn: settings.state_machine_arn.clone(),
        })
    }
}

async fn read_config(storage: &S3Bucket, key: &str) -> Result<Config> {
    let unreadable = |e: &dyn std::fmt::Display| Error::ConfigError {
        field: storage.display(key),
        message: format!("cannot read the configuration: {e}"),
    };
    let mut text = String::new();
    storage
        .reader(key)
        .await
        .map_err(|e| unreadable(&e))?
        .read_to_string(&mut text)
        .await
        .map_err(|e| unreadable(&e))?;
    Config::from_toml(&text, &storage.display(key))
}
