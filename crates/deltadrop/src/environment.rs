//! What the pipeline gets from its caller: configuration, storage and mailer. The Lambda
//! handlers, the local runner and the tests each build their own.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use crate::catalog::Catalog;
use crate::config::Config;
#[cfg(feature = "delta")]
use crate::delta::TableLocation;
use crate::error::Result;
use crate::mail::{Mailer, OutboxMailer};
use crate::storage::{LocalBucket, ObjectStorage};

/// Everything a step needs from outside: cheap to clone, shared by the steps of a run.
#[derive(Clone)]
pub struct Environment {
    /// The configuration the step runs under.
    pub config: Arc<Config>,
    /// The bucket files land in, move within, and tables are resolved against.
    pub storage: Arc<dyn ObjectStorage>,
    /// Delivers the notifications.
    pub mailer: Arc<dyn Mailer>,
    /// When the caller stops the step (a Lambda invocation's deadline); `None`: no time limit
    /// (the local runner). The upsert's cost check measures what a MERGE may rewrite by it.
    pub deadline: Option<SystemTime>,
    /// The memory a MERGE's operators may hold before they spill to disk; `None`: unbounded.
    pub merge_memory: Option<MergeMemory>,
    /// Where the upsert registers the tables it writes (a Glue database); `None`: nowhere.
    pub catalog: Option<Arc<dyn Catalog>>,
    /// Stage large files in parallel chunks (`deltadrop run --workers N`); `None`: every file
    /// is read by one worker.
    pub split: Option<Split>,
    /// Whether a MERGE too large for this process goes to the container tier
    /// (`MergeInContainer`) instead of being refused: the upsert function in a deployment with
    /// the tier. The tier itself, and the local runner, have nowhere to hand it.
    pub container_tier: crate::route::ContainerTier,
}

/// How the stage splits a large file ([`crate::steps::stage`]): into chunks of about
/// `chunk_bytes`, read by `workers` workers at a time. Files smaller than two chunks are read
/// whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// Chunks read at a time.
    pub workers: usize,
    /// About how many bytes a chunk has.
    pub chunk_bytes: u64,
}

impl Split {
    /// The default chunk: large enough that reading the file's head and each chunk's boundary
    /// costs nothing next to the chunk, small enough for a 10 GB file to give every worker work.
    pub const DEFAULT_CHUNK_MB: u64 = 64;
}

/// The memory pool of the upsert's DataFusion operators (joins, sorts, aggregates): beyond it
/// they spill to the temporary directory (`TMPDIR`; on Lambda the function's ephemeral storage)
/// where they can, and the MERGE fails with `TooLargeForFunction` where they cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeMemory {
    /// The pool's size.
    pub bytes: u64,
    /// Where the size comes from, for messages.
    pub source: String,
}

/// The share of a Lambda function's memory that the pool gets: the rest is for what no pool
/// sees (the Parquet reader's row groups, the writer's buffers and upload parts, the runtime).
pub const LAMBDA_POOL_SHARE_PERCENT: u64 = 50;

impl MergeMemory {
    /// From the process's environment: `DELTADROP_MERGE_MEMORY_MB` (the pool itself, a setting
    /// for the local runner and for tests), else half of `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` (the
    /// function's memory in MB, set by Lambda); `None` without either.
    pub fn from_env() -> Result<Option<MergeMemory>> {
        let megabytes = |name: &str| -> Result<Option<u64>> {
            match std::env::var(name) {
                Err(_) => Ok(None),
                Ok(text) => match text.trim().parse::<u64>() {
                    Ok(mb) if mb > 0 => Ok(Some(mb)),
                    _ => Err(crate::error::Error::config(
                        name,
                        format!("expected a whole number of MB above 0, found {text:?}"),
                    )),
                },
            }
        };
        if let Some(mb) = megabytes("DELTADROP_MERGE_MEMORY_MB")? {
            return Ok(Some(MergeMemory {
                bytes: mb * 1024 * 1024,
                source: format!("DELTADROP_MERGE_MEMORY_MB = {mb}"),
            }));
        }
        Ok(megabytes("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")?.map(MergeMemory::of_lambda_function))
    }

    /// The pool of a Lambda function with `mb` of memory.
    pub fn of_lambda_function(mb: u64) -> MergeMemory {
        let pool = mb * LAMBDA_POOL_SHARE_PERCENT / 100;
        MergeMemory {
            bytes: pool * 1024 * 1024,
            source: format!("{pool} MB, {LAMBDA_POOL_SHARE_PERCENT}% of the function's {mb} MB"),
        }
    }
}

impl Environment {
    /// A folder as the bucket (created when missing) and a folder of `.eml` files as the mail:
    /// the local runner, the benchmarks and the tests.
    pub fn local(config: Config, bucket: &Path, outbox: &Path) -> Result<Environment> {
        Ok(Environment {
            config: Arc::new(config),
            storage: Arc::new(LocalBucket::new(bucket)?),
            mailer: Arc::new(OutboxMailer::new(outbox)),
            deadline: None,
            merge_memory: None,
            catalog: None,
            split: None,
            container_tier: crate::route::ContainerTier::Absent,
        })
    }

    /// A table location (bucket-relative or URL) resolved against this environment's storage.
    #[cfg(feature = "delta")]
    pub fn table(&self, location: &str) -> Result<TableLocation> {
        Ok(TableLocation::new(
            self.storage.table_url(location)?,
            self.storage.table_storage_options(),
        ))
    }

    /// The prefix of a run's staging table in the bucket.
    pub fn staging_prefix(&self, run_id: &str) -> String {
        format!("{}{run_id}/", self.config.locations.staging)
    }

    /// Where a run's staging table lives.
    #[cfg(feature = "delta")]
    pub fn staging_table(&self, run_id: &str) -> Result<TableLocation> {
        self.table(&self.staging_prefix(run_id))
    }
}
