//! What every function builds once per container: the AWS clients, and a configuration that is
//! re-read from the bucket when it is older than a bounded time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_config::SdkConfig;
use aws_sdk_s3::config::ProvideCredentials;
use deltadrop::catalog::Catalog;
use deltadrop::config::Config;
use deltadrop::storage::ObjectStorage;
use deltadrop::{Environment, Error, Result};
use tokio::sync::Mutex;

use crate::s3::S3Bucket;
use crate::ses::SesMailer;

/// How long a container keeps a configuration before reading it again.
pub const DEFAULT_CONFIG_TTL: Duration = Duration::from_secs(60);

/// A function's AWS clients and settings, built once per container and shared by its
/// invocations, with the cached configuration.
pub struct AwsContext {
    /// The data bucket.
    pub storage: Arc<S3Bucket>,
    /// Sends the notifications through SES.
    pub mailer: Arc<SesMailer>,
    /// Starts executions (the trigger).
    pub sfn: aws_sdk_sfn::Client,
    /// Holds and deletes lane messages handed to the container tier.
    #[cfg(feature = "merge")]
    pub sqs: aws_sdk_sqs::Client,
    /// Starts the container tier's tasks (the merger).
    #[cfg(feature = "merge")]
    pub ecs: aws_sdk_ecs::Client,
    /// The AWS region (`us-east-1` when the SDK configuration names none).
    pub region: String,
    /// What the environment variables said.
    pub settings: Settings,
    config: Mutex<Option<CachedConfig>>,
    /// The current invocation's deadline (Lambda serves one invocation at a time per container).
    deadline: std::sync::Mutex<Option<SystemTime>>,
    /// Where the upsert registers tables (`DELTADROP_GLUE_DATABASE`).
    catalog: Option<Arc<dyn Catalog>>,
}

struct CachedConfig {
    config: Arc<Config>,
    read_at: Instant,
}

/// Where to find things, from the function's environment variables.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `DELTADROP_BUCKET`: the bucket files land in.
    pub bucket: String,
    /// `DELTADROP_CONFIG_KEY`: the configuration's key in that bucket (default `deltadrop.toml`).
    pub config_key: String,
    /// `DELTADROP_CONFIG_TTL_SECONDS`: a configuration older than this is read again (default 60):
    /// the longest a change to the configuration takes to reach every warm container.
    pub config_ttl: Duration,
    /// `STATE_MACHINE_ARN`: for the trigger.
    pub state_machine_arn: Option<String>,
    /// `DELTADROP_S3_ENDPOINT`: an S3-compatible endpoint instead of AWS (tests, MinIO...).
    pub s3_endpoint: Option<String>,
    /// The upsert's memory pool: half of `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, or
    /// `DELTADROP_MERGE_MEMORY_MB`.
    pub merge_memory: Option<deltadrop::MergeMemory>,
    /// `DELTADROP_GLUE_DATABASE`: the Glue database the upsert registers tables in (unset or
    /// empty: none).
    pub glue_database: Option<String>,
    /// `DELTADROP_CONTAINER_TIER`: `deployed` when the deployment has the container tier (the
    /// trigger may route files to it); anything else, or unset: it has none.
    pub container_tier: deltadrop::route::ContainerTier,
    /// Where the merger starts container tasks (`DELTADROP_CONTAINER_*`); `None`: it hands no
    /// MERGE over.
    #[cfg(feature = "merge")]
    pub container_run: Option<crate::handoff::ContainerRun>,
}

impl Settings {
    /// Reads the environment variables; a `ConfigError` names a missing or invalid one.
    pub fn from_env() -> Result<Settings> {
        let bucket = std::env::var("DELTADROP_BUCKET").map_err(|_| Error::ConfigError {
            field: "DELTADROP_BUCKET".into(),
            message: "set it to the bucket the files land in".into(),
        })?;
        let config_ttl = match std::env::var("DELTADROP_CONFIG_TTL_SECONDS") {
            Err(_) => DEFAULT_CONFIG_TTL,
            Ok(text) => Duration::from_secs(text.parse().map_err(|_| Error::ConfigError {
                field: "DELTADROP_CONFIG_TTL_SECONDS".into(),
                message: format!("expected a whole number of seconds, found {text:?}"),
            })?),
        };
        Ok(Settings {
            bucket,
            config_key: std::env::var("DELTADROP_CONFIG_KEY")
                .unwrap_or_else(|_| "deltadrop.toml".into()),
            config_ttl,
            state_machine_arn: std::env::var("STATE_MACHINE_ARN").ok(),
            s3_endpoint: std::env::var("DELTADROP_S3_ENDPOINT").ok(),
            merge_memory: deltadrop::MergeMemory::from_env()?,
            glue_database: std::env::var("DELTADROP_GLUE_DATABASE")
                .ok()
                .filter(|d| !d.is_empty()),
            container_tier: match std::env::var("DELTADROP_CONTAINER_TIER").as_deref() {
                Ok("deployed") => deltadrop::route::ContainerTier::Deployed,
                _ => deltadrop::route::ContainerTier::Absent,
            },
            #[cfg(feature = "merge")]
            container_run: crate::handoff::ContainerRun::from_env(),
        })
    }
}

/// The Glue database of the settings, for the functions that register tables (built with the
/// `merge` feature).
fn catalog(sdk: &SdkConfig, settings: &Settings) -> Option<Arc<dyn Catalog>> {
    #[cfg(feature = "merge")]
    if let Some(database) = &settings.glue_database {
        return Some(Arc::new(crate::glue::GlueCatalog::new(
            sdk,
            database.clone(),
        )));
    }
    let _ = (sdk, settings);
    None
}

impl AwsContext {
    /// Builds the clients from the default AWS configuration chain and the settings. Reads
    /// nothing: a missing configuration must not stop a container from starting (the trigger
    /// acknowledges S3's test event without one, and every step names the missing key).
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
            table_options.extend(explicit_credentials(sdk).await);
        }
        let storage = S3Bucket::new(
            aws_sdk_s3::Client::from_conf(s3_config.build()),
            &settings.bucket,
            table_options,
        )?;
        Ok(AwsContext {
            storage: Arc::new(storage),
            mailer: Arc::new(SesMailer::new(aws_sdk_sesv2::Client::new(sdk))),
            sfn: aws_sdk_sfn::Client::new(sdk),
            #[cfg(feature = "merge")]
            sqs: aws_sdk_sqs::Client::new(sdk),
            #[cfg(feature = "merge")]
            ecs: aws_sdk_ecs::Client::new(sdk),
            region,
            settings: settings.clone(),
            config: Mutex::new(None),
            deadline: std::sync::Mutex::new(None),
            catalog: catalog(sdk, settings),
        })
    }

    /// The configuration, read again from the bucket once it is older than the TTL. A missing
    /// or invalid configuration is a `ConfigError` naming the bucket and key; a transient read
    /// failure keeps the configuration read before, if any.
    pub async fn config(&self) -> Result<Arc<Config>> {
        let mut cached = self.config.lock().await;
        if let Some(c) = cached.as_ref() {
            if c.read_at.elapsed() < self.settings.config_ttl {
                return Ok(c.config.clone());
            }
        }
        match read_config(&self.storage, &self.settings.config_key).await {
            Ok(config) => {
                let config = Arc::new(config);
                *cached = Some(CachedConfig {
                    config: config.clone(),
                    read_at: Instant::now(),
                });
                Ok(config)
            }
            Err(ConfigReadError::Transient(e)) if cached.is_some() => {
                tracing::warn!(error = %e, "could not read the configuration again; using the one read before");
                Ok(cached.as_ref().expect("checked").config.clone())
            }
            Err(ConfigReadError::Transient(e) | ConfigReadError::Invalid(e)) => {
                *cached = None;
                Err(e)
            }
        }
    }

    /// The pipeline's environment for one invocation, with the current configuration.
    pub async fn environment(&self) -> Result<Environment> {
        Ok(Environment {
            config: self.config().await?,
            storage: self.storage.clone(),
            mailer: self.mailer.clone(),
            deadline: *self.deadline.lock().expect("not poisoned"),
            merge_memory: self.settings.merge_memory.clone(),
            catalog: self.catalog.clone(),
            // A function reads a file whole; the Distributed Map splits on AWS (issue 22).
            split: None,
            container_tier: self.merge_hand_over(),
        })
    }

    /// Whether a MERGE too large for this process goes to the container tier: only where the
    /// merger can start its tasks.
    fn merge_hand_over(&self) -> deltadrop::route::ContainerTier {
        #[cfg(feature = "merge")]
        if self.settings.container_run.is_some() {
            return deltadrop::route::ContainerTier::Deployed;
        }
        deltadrop::route::ContainerTier::Absent
    }

    /// Sets the deadline of the invocation being served: the environments built from now on
    /// carry it.
    pub fn set_deadline(&self, deadline: Option<SystemTime>) {
        *self.deadline.lock().expect("not poisoned") = deadline;
    }
}

/// Off AWS (an S3-compatible endpoint), delta-rs gets the SDK's credentials explicitly, so that
/// both clients act as the same principal.
async fn explicit_credentials(sdk: &SdkConfig) -> Vec<(String, String)> {
    let Some(provider) = sdk.credentials_provider() else {
        return Vec::new();
    };
    let Ok(credentials) = provider.provide_credentials().await else {
        return Vec::new();
    };
    let mut options = vec![
        (
            "AWS_ACCESS_KEY_ID".to_string(),
            credentials.access_key_id().to_string(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY".to_string(),
            credentials.secret_access_key().to_string(),
        ),
    ];
    if let Some(token) = credentials.session_token() {
        options.push(("AWS_SESSION_TOKEN".to_string(), token.to_string()));
    }
    options
}

enum ConfigReadError {
    /// The bucket could not be read (throttling, network): worth using an older copy.
    Transient(Error),
    /// Missing, unreadable for lack of permission, or not a valid configuration.
    Invalid(Error),
}

async fn read_config(storage: &S3Bucket, key: &str) -> Result<Config, ConfigReadError> {
    let location = storage.display(key);
    let config_error = |message: String| Error::ConfigError {
        field: location.clone(),
        message,
    };
    let bytes = match storage.read_all(key).await {
        Ok(bytes) => bytes,
        Err(Error::ObjectNotFound { .. }) => return Err(ConfigReadError::Invalid(config_error(
            "the configuration does not exist: upload it (docs/aws.md, \"After the first deploy\")"
                .into(),
        ))),
        Err(e) if e.to_string().contains("AccessDenied") => {
            return Err(ConfigReadError::Invalid(config_error(format!(
                "access denied: the function's role must be allowed s3:GetObject on it (and \
                 s3:ListBucket on the bucket, or S3 answers AccessDenied for a missing key): {e}"
            ))))
        }
        Err(e) => {
            return Err(ConfigReadError::Transient(config_error(format!(
                "cannot read the configuration: {e}"
            ))))
        }
    };
    let text = String::from_utf8(bytes).map_err(|e| {
        ConfigReadError::Transient(config_error(format!("cannot read the configuration: {e}")))
    })?;
    Config::from_toml(&text, &location).map_err(ConfigReadError::Invalid)
}
