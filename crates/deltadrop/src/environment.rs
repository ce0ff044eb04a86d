//! What the pipeline gets from its caller: configuration, storage and mailer. The Lambda
//! handlers, the local runner and the tests each build their own.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

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
