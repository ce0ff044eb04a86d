//! After the commit lane gave up on a file: did a merger commit it all the same?
//!
//! A merger that dies or times out after its commit landed never answers; its lane message comes
//! back only at the end of the queue's visibility timeout, after the Upsert state stopped
//! waiting. Each such loss costs the execution one attempt, and when the last attempt is lost
//! too, the file's rows are in the table while the execution holds only timeouts. The table
//! decides: it records every applied upload's identity in the commit that applied it.

use super::merge::recorded;
use super::{file_identity, Changes, UpsertOutcome, UpsertOutput};
use crate::environment::Environment;
use crate::error::Result;
use crate::steps::{RunInput, StageOutput};

/// The file's output when its table records it (`AlreadyApplied`; its staging table, if any is
/// left, removed), or `None` when the table does not: the lane's last error then stands.
pub async fn applied_without_an_answer(
    env: &Environment,
    run: &RunInput,
    stage: &StageOutput,
) -> Result<Option<UpsertOutput>> {
    run.validate()?;
    let feed = env.config.feed_named(&run.feed)?;
    let target = env.table(&feed.table)?;
    let identity = file_identity(run, stage)?;
    let Some(table) = target.open().await? else {
        return Ok(None);
    };
    if recorded(&table, &target, &identity).await?.is_none() {
        return Ok(None);
    }
    if stage.staging_table.is_some() {
        // The merger that committed the file may have died before it removed the staging table.
        if let Err(e) = env.staging_table(&run.run_id)?.remove().await {
            tracing::warn!(error = %e, run_id = %run.run_id, "applied, but the staging table could not be removed");
        }
    }
    Ok(Some(UpsertOutput::new(
        UpsertOutcome::AlreadyApplied,
        &target,
        table.version(),
        identity,
        Changes::default(),
    )))
}
