//! The `deltadrop` command: the pipeline on a local folder used as the bucket.

mod catalog;
mod check;
mod demo;
mod local;
mod replay;
mod s3;
mod status;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Turn files that land in a bucket into up-to-date Delta Lake tables.
///
/// Locally, a folder plays the bucket and another folder the mail outbox; each file goes through
/// the same steps as on AWS: stage → archive → upsert → notify (quarantine → notify on failure).
#[derive(Parser)]
#[command(name = "deltadrop", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Process files of the bucket through all four steps: each is staged and archived (or
    /// quarantined) on its own, in the order given; the files of one table are merged in as
    /// few commits as the feed's [feeds.batch] bounds allow, by one writer per table.
    ///
    /// Exit status: 0 every file loaded; 1 a file failed and was quarantined (see its email);
    /// 2 nothing was processed (bad arguments, configuration, or no such file).
    Run {
        /// The files: keys inside the bucket (incoming/orders/a.csv) or paths to them.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        files: Vec<String>,
        /// Every file under the feeds' incoming prefixes, in arrival order (modification time).
        #[arg(long)]
        all: bool,
        /// The folder used as the bucket.
        #[arg(long)]
        bucket: PathBuf,
        /// The configuration [default: <bucket>/deltadrop.toml].
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where emails are written as .eml files [default: <bucket>/_deltadrop/outbox].
        #[arg(long)]
        outbox: Option<PathBuf>,
        /// Stage a large uncompressed CSV or JSON lines file in chunks, this many at a time
        /// (docs/scaling.md); 1 reads every file whole.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
        workers: u16,
        /// The size of a chunk, in MiB: a file smaller than two chunks is read whole.
        #[arg(long, default_value_t = deltadrop::Split::DEFAULT_CHUNK_MB, value_parser = clap::value_parser!(u64).range(1..))]
        chunk_mb: u64,
    },
    /// Check a configuration before uploading it: every error names the field. With sample
    /// files (named by their keys, relative to the current folder): the feed each routes to,
    /// and the columns and types it would stage.
    ///
    /// Exit status: 0 valid (and every sample readable); 1 a sample fails; 2 the configuration is
    /// invalid.
    Check {
        /// The configuration file.
        config: PathBuf,
        /// Sample files, e.g. incoming/orders/2026-11-26.csv.
        #[arg(long = "sample")]
        samples: Vec<String>,
    },
    /// Create a demo bucket with a config and two files, load both, and show the result.
    Demo {
        /// The demo folder (replaced if it holds an earlier demo).
        #[arg(long, default_value = "deltadrop-demo")]
        dir: PathBuf,
    },
    /// Put quarantined files back under their original keys as new uploads, so that they run
    /// again (after the sender fixed them, or a transient failure passed).
    ///
    /// With --rejects: the rows a feed with on_bad_rows = "reject" set aside (fixed, or as they
    /// are) become a new upload of the feed, in the original file's format.
    ///
    /// Locally the replayed files are run at once; on S3 their notifications start executions.
    /// Exit status: 0 every replayed file loaded (or was put back, on S3); 1 one failed again;
    /// 2 nothing was replayed.
    Replay {
        /// Quarantined files: keys like quarantine/incoming/orders/<run id>/a.csv.
        files: Vec<String>,
        /// Rejects files: keys like quarantine/incoming/orders/<run id>/a.csv.rejects.jsonl.
        #[arg(long = "rejects")]
        rejects: Vec<String>,
        /// Every quarantined file that waits for a replay (of --feed when given).
        #[arg(long)]
        all: bool,
        /// With --all: only this feed's files.
        #[arg(long)]
        feed: Option<String>,
        /// The bucket: a folder, or s3://<bucket> (with your AWS credentials).
        #[arg(long)]
        bucket: String,
        /// The configuration [default: <bucket>/deltadrop.toml] (a folder bucket only).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where emails are written [default: <bucket>/_deltadrop/outbox] (a folder bucket only).
        #[arg(long)]
        outbox: Option<PathBuf>,
        /// The quarantine prefix of an S3 bucket.
        #[arg(long, default_value = "quarantine/")]
        quarantine: String,
        /// The configuration's key (an S3 bucket, with --rejects).
        #[arg(long, default_value = "deltadrop.toml")]
        config_key: String,
    },
    /// Maintain the feeds' tables: compact small files, VACUUM unreferenced ones past the
    /// retention, write a checkpoint and drop expired log files and upload records.
    Maintain {
        /// The folder used as the bucket.
        #[arg(long)]
        bucket: PathBuf,
        /// Only this feed's table [default: every feed's].
        #[arg(long)]
        feed: Option<String>,
        /// The configuration [default: <bucket>/deltadrop.toml].
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Per feed: the table's version and rows, the last file applied and when, the files waiting
    /// in the incoming prefix and those in quarantine; on S3 with --state-machine-arn, also the
    /// last executions with their console links.
    Status {
        /// The bucket: a folder, or s3://<bucket> (with your AWS credentials).
        #[arg(long)]
        bucket: String,
        /// The configuration [default: <bucket>/deltadrop.toml] (a folder bucket).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The configuration's key (an S3 bucket).
        #[arg(long, default_value = "deltadrop.toml")]
        config_key: String,
        /// The pipeline's state machine (an S3 bucket): list its last executions.
        #[arg(long)]
        state_machine_arn: Option<String>,
    },
    /// The Glue Data Catalog entries of the feeds' tables (what the upsert keeps up to date
    /// after each commit when the deployment has a GlueDatabase).
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Show a Delta table: version, row count, schema, recent operations and some rows.
    Table {
        /// A table folder or URL (file:///..., s3://...).
        location: String,
        /// How many recent operations to list.
        #[arg(long, default_value_t = 5)]
        history: usize,
        /// How many rows to print (sorted by the first column).
        #[arg(long, default_value_t = 10)]
        rows: usize,
        /// Print the change data feed instead (a feed with change_data_feed = true): every
        /// change of versions FROM through TO (or the latest), as `FROM` or `FROM..TO`.
        #[arg(long, value_name = "FROM[..TO]")]
        changes: Option<String>,
    },
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Register (or bring up to date) every feed's table in the Glue database: for tables made
    /// before the deployment had one, after a catalog outage, or after a manual change.
    ///
    /// Exit status: 0 every existing table registered; 1 a registration failed; 2 bad arguments.
    Sync {
        /// The bucket: s3://<bucket> (with your AWS credentials), or a folder.
        #[arg(long)]
        bucket: String,
        /// The Glue database (the stack's GlueDatabase parameter).
        #[arg(long)]
        glue_database: String,
        /// Only this feed.
        #[arg(long)]
        feed: Option<String>,
        /// The configuration [default: <bucket>/deltadrop.toml] (a folder bucket).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The configuration's key (an S3 bucket).
        #[arg(long, default_value = "deltadrop.toml")]
        config_key: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DELTADROP_LOG")
                .unwrap_or_else(|_| "warn,deltalake_core::operations::merge=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run {
            files,
            all,
            bucket,
            config,
            outbox,
            workers,
            chunk_mb,
        } => {
            let split = (workers > 1).then_some(deltadrop::Split {
                workers: workers.into(),
                chunk_bytes: chunk_mb * 1024 * 1024,
            });
            let folders = local::Folders {
                bucket: &bucket,
                config: config.as_deref(),
                outbox: outbox.as_deref(),
            };
            local::run(&files, all, folders, split).await
        }
        Command::Demo { dir } => demo::run(&dir).await,
        Command::Check { config, samples } => check::run(&config, &samples),
        Command::Status {
            bucket,
            config,
            config_key,
            state_machine_arn,
        } => match bucket.strip_prefix("s3://") {
            Some(name) => {
                status::on_s3(
                    name.trim_end_matches('/'),
                    &config_key,
                    state_machine_arn.as_deref(),
                )
                .await
            }
            None => status::in_folder(Path::new(&bucket), config.as_deref()).await,
        },
        Command::Catalog {
            command:
                CatalogCommand::Sync {
                    bucket,
                    glue_database,
                    feed,
                    config,
                    config_key,
                },
        } => {
            catalog::sync(
                &bucket,
                config.as_deref(),
                &config_key,
                &glue_database,
                feed.as_deref(),
            )
            .await
        }
        Command::Maintain {
            bucket,
            feed,
            config,
        } => local::maintain(&bucket, feed.as_deref(), config.as_deref()).await,
        Command::Replay {
            files,
            rejects,
            all,
            feed,
            bucket,
            config,
            outbox,
            quarantine,
            config_key,
        } => {
            let which = replay::Which {
                files,
                rejects,
                all,
                feed: feed.as_deref(),
                config_key: &config_key,
            };
            match bucket.strip_prefix("s3://") {
                Some(name) => replay::on_s3(name.trim_end_matches('/'), &quarantine, which).await,
                None => {
                    replay::in_folder(
                        PathBuf::from(bucket).as_path(),
                        config.as_deref(),
                        outbox.as_deref(),
                        which,
                    )
                    .await
                }
            }
        }
        Command::Table {
            location,
            history,
            rows,
            changes: None,
        } => local::show_table(&location, history, rows).await,
        Command::Table {
            location,
            changes: Some(range),
            ..
        } => local::show_changes(&location, &range).await,
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {} ({})", e, e.name());
            ExitCode::from(2)
        }
    }
}
