//! `deltadrop replay`: quarantined files back under their original keys, in a folder bucket
//! (run at once) or an S3 bucket (their notifications start executions).

use std::path::Path;
use std::process::ExitCode;

use deltadrop::replay::{quarantined, replay, Replayed};
use deltadrop::replay_rejects::{replay_rejects, RejectsReplayed};
use deltadrop::run::run_file;
use deltadrop::steps::RunInput;
use deltadrop::storage::ObjectStorage;
use deltadrop::{Error, Result};
use deltadrop_aws::trigger::execution_name;

use crate::local::{environment, print_summary};

/// The files to replay: named ones, every waiting one (of a feed), or rejects files.
pub struct Which<'a> {
    pub files: Vec<String>,
    pub rejects: Vec<String>,
    pub all: bool,
    pub feed: Option<&'a str>,
    /// Where an S3 bucket's configuration is (rejects files need their feed's).
    pub config_key: &'a str,
}

/// What to replay.
enum Replays {
    /// Quarantined files, back under their keys.
    Quarantined(Vec<String>),
    /// Rejects files, each as a new upload of its rows.
    Rejects(Vec<String>),
}

impl Which<'_> {
    async fn replays(self, storage: &dyn ObjectStorage, quarantine: &str) -> Result<Replays> {
        match (self.all, self.files.is_empty(), self.rejects.is_empty()) {
            (true, true, true) => Ok(Replays::Quarantined(
                quarantined(storage, quarantine, self.feed).await?,
            )),
            (false, false, true) => Ok(Replays::Quarantined(self.files)),
            (false, true, false) => Ok(Replays::Rejects(self.rejects)),
            _ => Err(Error::InvalidInput {
                message: "name quarantined files, give --all, or name --rejects files (one of \
                          the three)"
                    .into(),
            }),
        }
    }
}

fn print_rejects_replayed(replayed: &RejectsReplayed) {
    println!(
        "replayed {} ({} rows of feed {}) → {} (the rejects file is kept as {})",
        replayed.rejects_key, replayed.rows, replayed.feed, replayed.upload_key, replayed.kept_at
    );
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
    let replays = which
        .replays(env.storage.as_ref(), &env.config.locations.quarantine)
        .await?;
    let keys = match &replays {
        Replays::Quarantined(keys) | Replays::Rejects(keys) => keys.clone(),
    };
    println!("{} file(s) to replay", keys.len());
    let mut failed = 0;
    for key in keys {
        let upload_key = match replays {
            Replays::Quarantined(_) => {
                let replayed = replay(env.storage.as_ref(), &key).await?;
                print_replayed(&replayed);
                replayed.original_key
            }
            Replays::Rejects(_) => {
                let replayed = replay_rejects(env.storage.as_ref(), &env.config, &key).await?;
                print_rejects_replayed(&replayed);
                replayed.upload_key
            }
        };
        let run = RunInput::for_current_upload(&env, &upload_key).await?;
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
    let config_key = which.config_key;
    let (keys, config) = match which.replays(&storage, quarantine).await? {
        Replays::Quarantined(keys) => (keys, None),
        Replays::Rejects(keys) => (keys, Some(crate::s3::config(&storage, config_key).await?)),
    };
    println!("{} file(s) to replay", keys.len());
    for key in keys {
        let (upload_key, upload) = match &config {
            None => {
                let replayed = replay(&storage, &key).await?;
                print_replayed(&replayed);
                (replayed.original_key, replayed.upload)
            }
            Some(config) => {
                let replayed = replay_rejects(&storage, config, &key).await?;
                print_rejects_replayed(&replayed);
                (replayed.upload_key, replayed.upload)
            }
        };
        // The trigger names executions after the object version (when the bucket keeps them).
        match upload.and_then(|u| u.version_id) {
            Some(version) => println!(
                "  its S3 notification starts the execution {}",
                execution_name(bucket, &upload_key, &version)
            ),
            None => println!("  its S3 notification starts a new execution"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
