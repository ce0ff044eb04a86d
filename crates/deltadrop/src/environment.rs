//! What the pipeline gets from its caller: configuration, storage, mailer and clock. The Lambda
//! handlers, the local runner and the tests each build their own.

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Config;
use crate::delta::TableLocation;
use crate::error::Result;
use crate::mail::Mailer;
use crate::storage::ObjectStorage;

#[derive(Clone)]
pub struct Environment {
    pub config: Arc<Config>,
    pub storage: Arc<dyn ObjectStorage>,
    pub mailer: Arc<dyn Mailer>,
    pub clock: Arc<dyn Clock>,
}

impl Environment {
    /// A table location (bucket-relative or URL) resolved against this environment's storage.
    pub fn table(&self, location: &str) -> Result<TableLocation> {
        Ok(TableLocation::new(
            self.storage.table_url(location)?,
            self.storage.table_storage_options(),
        ))
    }

    /// Where a run's staging table lives.
    pub fn staging_table(&self, run_id: &str) -> Result<TableLocation> {
        self.table(&format!("{}{run_id}", self.config.locations.staging))
    }
}
