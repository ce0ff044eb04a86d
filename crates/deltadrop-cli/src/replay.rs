//! `deltadrop replay`: quarantined files back under their original keys, in a folder bucket
//! (run at once) or an S3 bucket (their notifications start executions).

use std::path::Path;
use std::process::ExitCode;

use deltadrop::replay::{quarantined, replay, Replayed};
use deltadrop::run::run_file;
use deltadrop::steps::RunInput;
use deltadrop::storage::ObjectStorage;
use deltadrop::{Error, Result};
use deltadrop_aws::trigger::execution_name;

use crate::local::{environment, print_summary};

/// The files to replay: named ones, or every waiting one (of a feed).
pub struct Which<'a> {
    pub files: Vec<String>,
    pub all: bool,
    pub feed: Option<&'a str>,
}

impl Which<'_> {
    async fn keys(self, storage: &dyn ObjectStorage, quarantine: &str) -> Result<Vec<String>> {
        match (self.all, self.files.is_empty()) {
            (true, true) => quarantined(storage, quarantine, self.feed).await,
            (false, false) => Ok(self.files),
            _ => Err(Error::InvalidInput {
                message: "name quarantined files, or give --all (not both)".into(),
            }),
        }
    }
}

fn print_replayed(replayed: &Replayed) {
    println!(
        "replayed {} → {} (feed {}; its error report is kept as {})",
        replayed.quarantined_key, replayed.original_key, replayed.feed, replayed.report_kept_at
    );
}

/// Replays into a folder bucket and runs each file, as `deltadrop run` does.
pub async fn in_folder(
    bucket: &Path,
    config: Option<&Path>,
    outbox: Option<&Path>,
    which: Which<'_>,
) -> Result<ExitCode> {
    let env = environment(bucket, config, outbox)?;
    let keys = which
        .keys(env.storage.as_ref(), &env.config.locations.quarantine)
        .await?;
    println!("{} file(s) to replay", keys.len());
    let mut failed = 0;
    for key in keys {
        let replayed = replay(env.storage.as_ref(), &key).await?;
        print_replayed(&replayed);
        let run = RunInput::for_current_upload(&env, &replayed.original_key).await?;
        println!("run {} · feed {} · {}", run.run_id, run.feed, run.key);
        let result = run_file(&env, run, &|line| println!("  {line}")).await;
        print_summary(&result);
        failed += usize::from(!result.succeeded());
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Replays into an S3 bucket with the caller's AWS credentials (the usual environment, profile
/// or SSO settings; AWS_ENDPOINT_URL for an S3-compatible endpoint). Prints the execution each
/// new upload's notification starts.
pub async fn on_s3(bucket: &str, quarantine: &str, which: Which<'_>) -> Result<ExitCode> {
    let storage = crate::s3::bucket(bucket).await?;
    let keys = which.keys(&storage, quarantine).await?;
    println!("{} file(s) to replay", keys.len());
    for key in keys {
        let replayed = replay(&storage, &key).await?;
        print_replayed(&replayed);
        // The trigger names executions after the object version (when the bucket keeps them).
        match replayed.upload.and_then(|u| u.version_id) {
            Some(version) => println!(
                "  its S3 notification starts the execution {}",
                execution_name(bucket, &replayed.original_key, &version)
            ),
            None => println!("  its S3 notification starts a new execution"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
