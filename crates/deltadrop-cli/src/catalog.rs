//! `deltadrop catalog sync`: registers (or brings up to date) every feed's table in a Glue
//! database, as the upsert does after each commit.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use deltadrop::catalog::sync as register;
use deltadrop::config::Config;
use deltadrop::delta::TableLocation;
use deltadrop::storage::ObjectStorage;
use deltadrop::Result;
use deltadrop_aws::glue::GlueCatalog;

/// Registers the tables of the feeds (or of `only` that feed) of the bucket's configuration in
/// `database`; a feed whose table does not exist yet is named and skipped.
pub async fn sync(
    bucket: &str,
    config: Option<&Path>,
    config_key: &str,
    database: &str,
    only: Option<&str>,
) -> Result<ExitCode> {
    let (config, storage): (Arc<Config>, Arc<dyn ObjectStorage>) =
        match bucket.strip_prefix("s3://") {
            Some(name) => {
                let storage = crate::s3::bucket(name.trim_end_matches('/')).await?;
                let config = crate::s3::config(&storage, config_key).await?;
                (Arc::new(config), Arc::new(storage))
            }
            None => {
                let env = crate::local::environment(Path::new(bucket), config, None)?;
                (env.config, env.storage)
            }
        };
    let feeds = match only {
        Some(name) => vec![config.feed_named(name)?],
        None => config.feeds.iter().collect(),
    };
    let catalog = GlueCatalog::new(&aws_config::load_from_env().await, database.to_string());
    let mut failed = false;
    for feed in feeds {
        let location = TableLocation::new(
            storage.table_url(&feed.table)?,
            storage.table_storage_options(),
        );
        if location.open().await?.is_none() {
            println!("{}: no table yet at {}", feed.name, location.name());
            continue;
        }
        let outcome = register(&catalog, feed, &location).await;
        failed |= outcome.failed();
        println!("{} → {}", feed.name, outcome.describe());
    }
    Ok(match failed {
        true => ExitCode::from(1),
        false => ExitCode::SUCCESS,
    })
}
