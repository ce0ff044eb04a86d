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

/// The share of a Lambda function's (or a container task's) memory that the pool gets: the rest
/// is for what no pool sees (the Parquet reader's row groups, the writer's buffers and upload
/// parts, the runtime).
pub const POOL_SHARE_PERCENT: u64 = 50;

/// A container task's memory in MB, as the RunTask that started it sized it (the task definition
/// sets it too): the container tier's pool is a share of it.
pub const TASK_MEMORY_VARIABLE: &str = "DELTADROP_TASK_MEMORY_MB";

impl MergeMemory {
    /// From the process's environment: `DELTADROP_MERGE_MEMORY_MB` (the pool itself, a setting
    /// for the local runner and for tests), else half of `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` (the
    /// function's memory in MB, set by Lambda), else half of [`TASK_MEMORY_VARIABLE`] (a
    /// container task's); `None` without any.
    pub fn from_env() -> Result<Option<MergeMemory>> {
        MergeMemory::from_variables(|name| std::env::var(name).ok())
    }

    /// As [`MergeMemory::from_env`], with the variables `variable` gives.
    pub fn from_variables(
        variable: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<MergeMemory>> {
        let megabytes = |name: &str| -> Result<Option<u64>> {
            match variable(name) {
                None => Ok(None),
                Some(text) => match text.trim().parse::<u64>() {
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
        if let Some(mb) = megabytes("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")? {
            return Ok(Some(MergeMemory::of_lambda_function(mb)));
        }
        Ok(megabytes(TASK_MEMORY_VARIABLE)?.map(MergeMemory::of_container_task))
    }

    /// The pool of a Lambda function with `mb` of memory.
    pub fn of_lambda_function(mb: u64) -> MergeMemory {
        MergeMemory::share_of(mb, "the function's")
    }

    /// The pool of a container task with `mb` of memory.
    pub fn of_container_task(mb: u64) -> MergeMemory {
        MergeMemory::share_of(mb, "the container task's")
    }

    fn share_of(mb: u64, whose: &str) -> MergeMemory {
        let pool = mb * POOL_SHARE_PERCENT / 100;
        MergeMemory {
            bytes: pool * 1024 * 1024,
            source: format!("{pool} MB, {POOL_SHARE_PERCENT}% of {whose} {mb} MB"),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool set outright wins; else a function's memory, else a container task's, halved.
    #[test]
    fn the_pool_is_a_share_of_the_function_or_the_task() {
        let pool = |variables: &[(&str, &str)]| {
            let variables: Vec<(String, String)> = variables
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            MergeMemory::from_variables(|name| {
                variables
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            })
        };
        assert_eq!(pool(&[]).unwrap(), None);
        let task = pool(&[(TASK_MEMORY_VARIABLE, "16384")]).unwrap().unwrap();
        assert_eq!(task.bytes, 8192 * 1024 * 1024);
        assert_eq!(task.source, "8192 MB, 50% of the container task's 16384 MB");
        let function = pool(&[
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "3008"),
            (TASK_MEMORY_VARIABLE, "16384"),
        ]);
        assert_eq!(function.unwrap().unwrap().bytes, 1504 * 1024 * 1024);
        let set = pool(&[
            ("DELTADROP_MERGE_MEMORY_MB", "512"),
            (TASK_MEMORY_VARIABLE, "16384"),
        ]);
        assert_eq!(set.unwrap().unwrap().bytes, 512 * 1024 * 1024);
        assert!(pool(&[(TASK_MEMORY_VARIABLE, "lots")]).is_err());
    }
}
