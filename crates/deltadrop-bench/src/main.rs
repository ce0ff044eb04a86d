//! `deltadrop-bench`: generates benchmark data and runs one measurable piece of work per process
//! (so `scripts/bench` can record each one's time and peak memory). Prints one JSON line.

mod burst;
mod chunk_steps;
mod copy;
mod spill;

use deltadrop_bench::generate;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::{Parser, Subcommand};
use deltadrop::config::Config;
use deltadrop::steps::{stage, upsert, RunInput};
use deltadrop::Environment;
use serde_json::json;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

#[derive(Parser)]
#[command(name = "deltadrop-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes a TPC-H orders-like CSV with keys 1..=rows.
    Orders { rows: u64, out: PathBuf },
    /// Writes an update file: 90% existing keys of a base of `base_rows` with changed values, 10% new.
    Updates {
        base_rows: u64,
        rows: u64,
        out: PathBuf,
        /// The existing keys form one narrow range instead of being spread over the table.
        #[arg(long)]
        narrow: bool,
    },
    /// Writes an orders CSV of `rows_per_day` orders a day (keys in order): a table that grows
    /// by days.
    DailyOrders {
        rows: u64,
        out: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        rows_per_day: u64,
    },
    /// Writes an update of a `daily-orders` table of `base_rows` touching `days` of its days.
    DailyUpdates {
        base_rows: u64,
        rows: u64,
        out: PathBuf,
        #[arg(long, default_value_t = 100_000)]
        rows_per_day: u64,
        #[arg(long, default_value_t = 3)]
        days: u64,
    },
    /// Writes `rows` rows of one repeated key.
    OneKey { rows: u64, out: PathBuf },
    /// The baseline: parse the CSV with arrow-csv (known schema), nothing else.
    Parse { file: PathBuf },
    /// deltadrop's stage step: the CSV into a staging Delta table, for a target table that
    /// exists (created from the file's first row, untimed): the stage of every file but a
    /// table's first (which `upsert` into an empty work folder measures).
    /// The chunked stage as the state machine runs it, each chunk's work in a process of its
    /// own (as each is a Lambda invocation on AWS), `workers` at a time.
    ChunkSteps {
        file: PathBuf,
        work: PathBuf,
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// The chunk size in MiB (`[feeds.route] chunk_mb`).
        #[arg(long, default_value_t = 256.0)]
        chunk_mb: f64,
    },
    /// One child of `chunk-steps`: a CountLines or StageChunks request (JSON), answered on
    /// stdout.
    ChunkChild {
        work: PathBuf,
        chunk_mb: f64,
        request: String,
    },
    Stage {
        file: PathBuf,
        work: PathBuf,
        /// The feed sets bad rows aside (`on_bad_rows = "reject"`) and checks three
        /// expectations on every row ([`CHECKS`]).
        #[arg(long)]
        checked: bool,
        /// Stage in chunks, this many at a time (`deltadrop run --workers`; docs/scaling.md).
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// The chunk size in MiB, with `--workers` above 1.
        #[arg(long, default_value_t = deltadrop::Split::DEFAULT_CHUNK_MB)]
        chunk_mb: u64,
    },
    /// stage + upsert of the file into `<work>/tables/orders` (creating it or merging into it).
    Upsert {
        file: PathBuf,
        work: PathBuf,
        /// The feed's `target_file_mb` (used when the table is created): smaller files let a
        /// MERGE of a narrow key range skip more of them.
        #[arg(long)]
        target_file_mb: Option<u64>,
        /// The table is partitioned by `o_orderdate` (keys `o_orderkey`, `o_orderdate`).
        #[arg(long)]
        partition_by_date: bool,
        /// The feed has the change data feed on (`change_data_feed = true`): every MERGE writes
        /// its changes and the upsert reads a sample of them back for the email; the sample's
        /// read is also timed on its own (`sample_seconds`).
        #[arg(long)]
        change_data_feed: bool,
    },
    /// Many small files for one table (or `--tables` tables) at once, each through the whole
    /// pipeline, with at most `concurrency` runs at a time (`--lane`: staged that many at a time,
    /// merged by each table's commit lane): files per minute, commits, commit conflicts, latencies.
    Burst {
        /// The folder bucket (ignored with `--s3-endpoint`).
        work: PathBuf,
        #[arg(long)]
        concurrency: usize,
        /// Files for each table.
        #[arg(long, default_value_t = 100)]
        files: u64,
        /// Tables (one feed each) the burst is for.
        #[arg(long, default_value_t = 1)]
        tables: u64,
        #[arg(long, default_value_t = 1000)]
        rows: u64,
        /// Rows in the table before the burst; each file updates some of them.
        #[arg(long, default_value_t = 10000)]
        base_rows: u64,
        /// Run against an S3 API (moto) at this endpoint instead of a folder.
        #[arg(long)]
        s3_endpoint: Option<String>,
        /// The bucket to create there (one per run: the table starts empty).
        #[arg(long, default_value = "deltadrop-burst")]
        bucket: String,
        /// Stage `concurrency` files at a time and merge through the table's commit lane
        /// instead of running each file's upsert on its own.
        #[arg(long)]
        lane: bool,
    },
    /// The archive's move (copy, then delete) of one large upload on an S3 API (moto): its time,
    /// and how large a file moves in the archive function's 840 s at that rate.
    Move {
        #[arg(long)]
        s3_endpoint: String,
        /// The upload's size.
        #[arg(long)]
        mib: u64,
        /// Above this size the copy goes in parts (S3's limit for one CopyObject: 5 GiB).
        #[arg(long, default_value_t = 5120)]
        single_copy_limit_mib: u64,
        /// The size of each part.
        #[arg(long, default_value_t = 512)]
        part_mib: u64,
        #[arg(long, default_value = "deltadrop-move")]
        bucket: String,
    },
}

const CONFIG: &str = r#"
[[feeds]]
name = "orders"
incoming = "incoming/"
table = "tables/orders"
keys = ["o_orderkey"]
"#;

/// What `stage --checked` adds to the feed: bad rows set aside, and three expectations that
/// every row of the generated files keeps.
const CHECKS: &str = r#"on_bad_rows = "reject"

[[feeds.expect]]
name = "price_positive"
column = "o_totalprice"
min = 0
action = "reject"

[[feeds.expect]]
name = "known_status"
column = "o_orderstatus"
one_of = ["F", "O", "P"]
action = "warn"

[[feeds.expect]]
name = "short_comment"
column = "o_comment"
max_length = 79
action = "warn"
"#;

/// The feed's layout in the bench's configuration.
#[derive(Default, Clone, Copy)]
struct Layout {
    target_file_mb: Option<u64>,
    /// `[feeds.route] chunk_mb`: the chunks of the state machine's chunked route.
    chunk_mb: Option<f64>,
    partition_by_date: bool,
    checked: bool,
    change_data_feed: bool,
}

/// The bench's folder bucket; the MERGE's memory pool from the process's environment
/// (`DELTADROP_MERGE_MEMORY_MB`), as `deltadrop run` takes it.
fn environment(work: &Path, layout: Layout) -> BenchResult<Environment> {
    let mut config = CONFIG.to_string();
    if let Some(mb) = layout.target_file_mb {
        config.push_str(&format!("target_file_mb = {mb}\n"));
    }
    if layout.change_data_feed {
        config.push_str("change_data_feed = true\n");
    }
    if layout.checked {
        config.push_str(CHECKS);
    }
    if layout.partition_by_date {
        config = config.replace(
            "keys = [\"o_orderkey\"]",
            "keys = [\"o_orderkey\", \"o_orderdate\"]\npartition_by = [\"o_orderdate\"]",
        );
    }
    // The generated files go past the default 8 GiB guard (the 10 GB file of the chunked
    // stage's bench): the bench measures throughput, not the guard.
    config.push_str("\n[feeds.limits]\nmax_decompressed_mb = 1048576\n");
    if let Some(mb) = layout.chunk_mb {
        config.push_str(&format!("\n[feeds.route]\nchunk_mb = {mb}\n"));
    }
    let mut env = folder_environment(work, &config)?;
    env.merge_memory = deltadrop::MergeMemory::from_env()?;
    Ok(env)
}

fn folder_environment(work: &Path, config: &str) -> BenchResult<Environment> {
    Ok(Environment::local(
        Config::from_toml(config, "bench")?,
        work,
        &work.join("outbox"),
    )?)
}

/// A new versioned bucket on the S3 API at `endpoint` with the configuration `config` in it, and
/// the environment the Lambda functions would build for it.
async fn s3_environment(endpoint: &str, bucket: &str, config: &str) -> BenchResult<Environment> {
    use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
    let sdk = aws_config::from_env().endpoint_url(endpoint).load().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket().bucket(bucket).send().await?;
    let versioned = VersioningConfiguration::builder()
        .status(BucketVersioningStatus::Enabled)
        .build();
    s3.put_bucket_versioning()
        .bucket(bucket)
        .versioning_configuration(versioned)
        .send()
        .await?;
    s3.put_object()
        .bucket(bucket)
        .key("deltadrop.toml")
        .body(config.as_bytes().to_vec().into())
        .send()
        .await?;
    let settings = deltadrop_aws::context::Settings {
        bucket: bucket.to_string(),
        config_key: "deltadrop.toml".into(),
        config_ttl: deltadrop_aws::context::DEFAULT_CONFIG_TTL,
        state_machine_arn: None,
        s3_endpoint: Some(endpoint.to_string()),
        merge_memory: None,
        glue_database: None,
        container_tier: deltadrop::route::ContainerTier::Absent,
        container_run: None,
    };
    let context = deltadrop_aws::context::AwsContext::new(&sdk, &settings).await?;
    Ok(context.environment().await?)
}

/// The bench bucket in `work` with `file` in it, and a run for the file.
async fn prepare(file: &Path, work: &Path, layout: Layout) -> BenchResult<(Environment, RunInput)> {
    let env = environment(work, layout)?;
    let key = place(file, work)?;
    let run = RunInput::for_current_upload(&env, &key).await?;
    Ok((env, run))
}

/// Loads the header and first rows of `file` (a CSV: as many as the stage samples to infer the
/// column types, so that the table gets the types the whole file has), so that the feed's table
/// exists.
async fn create_table_from_first_rows(env: &Environment, file: &Path) -> BenchResult<()> {
    use std::io::BufRead;
    let mut head = String::new();
    let mut lines = std::io::BufReader::new(File::open(file)?);
    for _ in 0..=deltadrop::read::BATCH_ROWS {
        lines.read_line(&mut head)?;
    }
    env.storage
        .put("incoming/first-rows.csv", head.into_bytes())
        .await?;
    let run = RunInput::for_current_upload(env, "incoming/first-rows.csv").await?;
    let staged = stage(env, &run).await?;
    upsert(env, &run, &staged).await?;
    Ok(())
}

/// Links (or copies) the file into the bucket's incoming folder; not part of any timing.
fn place(file: &Path, work: &Path) -> BenchResult<String> {
    let name = file
        .file_name()
        .ok_or("the file has no name")?
        .to_string_lossy()
        .to_string();
    let incoming = work.join("incoming");
    std::fs::create_dir_all(&incoming)?;
    let target = incoming.join(&name);
    let _ = std::fs::remove_file(&target);
    if std::fs::hard_link(file, &target).is_err() {
        std::fs::copy(file, &target)?;
    }
    Ok(format!("incoming/{name}"))
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn parse(file: &Path) -> BenchResult<serde_json::Value> {
    use deltalake::arrow::datatypes::{DataType, Field, Schema};
    let schema = Arc::new(Schema::new(vec![
        Field::new("o_orderkey", DataType::Int64, true),
        Field::new("o_custkey", DataType::Int64, true),
        Field::new("o_orderstatus", DataType::Utf8, true),
        Field::new("o_totalprice", DataType::Float64, true),
        Field::new("o_orderdate", DataType::Date32, true),
        Field::new("o_orderpriority", DataType::Utf8, true),
        Field::new("o_clerk", DataType::Utf8, true),
        Field::new("o_shippriority", DataType::Int64, true),
        Field::new("o_comment", DataType::Utf8, true),
    ]));
    let started = Instant::now();
    let reader = arrow_csv::ReaderBuilder::new(schema)
        .with_header(true)
        .with_batch_size(8192)
        .build(File::open(file)?)?;
    let mut rows = 0;
    for batch in reader {
        rows += batch?.num_rows();
    }
    let seconds = started.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(file)?.len();
    Ok(
        json!({"rows": rows, "seconds": seconds, "mb_per_s": mb(bytes) / seconds, "rows_per_s": rows as f64 / seconds}),
    )
}

#[tokio::main]
async fn main() -> BenchResult<()> {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Orders { rows, out } => {
            let mut writer = BufWriter::new(File::create(&out)?);
            generate::orders(&mut writer, rows)?;
            writer.flush()?;
            json!({"file": out, "rows": rows})
        }
        Command::Updates {
            base_rows,
            rows,
            out,
            narrow,
        } => {
            let mut writer = BufWriter::new(File::create(&out)?);
            generate::updates(&mut writer, base_rows, rows, narrow)?;
            writer.flush()?;
            json!({"file": out, "rows": rows})
        }
        Command::DailyOrders {
            rows,
            out,
            rows_per_day,
        } => {
            let mut writer = BufWriter::new(File::create(&out)?);
            generate::daily_orders(&mut writer, rows, rows_per_day)?;
            writer.flush()?;
            json!({"file": out, "rows": rows})
        }
        Command::DailyUpdates {
            base_rows,
            rows,
            out,
            rows_per_day,
            days,
        } => {
            let mut writer = BufWriter::new(File::create(&out)?);
            generate::daily_updates(&mut writer, base_rows, rows, rows_per_day, days)?;
            writer.flush()?;
            json!({"file": out, "rows": rows})
        }
        Command::OneKey { rows, out } => {
            let mut writer = BufWriter::new(File::create(&out)?);
            generate::one_key(&mut writer, rows)?;
            writer.flush()?;
            json!({"file": out, "rows": rows})
        }
        Command::Parse { file } => parse(&file)?,
        Command::ChunkSteps {
            file,
            work,
            workers,
            chunk_mb,
        } => chunk_steps::run(&file, &work, workers, chunk_mb).await?,
        Command::ChunkChild {
            work,
            chunk_mb,
            request,
        } => chunk_steps::child(&work, chunk_mb, &request).await?,
        Command::Stage {
            file,
            work,
            checked,
            workers,
            chunk_mb,
        } => {
            let layout = Layout {
                checked,
                ..Layout::default()
            };
            let (env, run) = prepare(&file, &work, layout).await?;
            let env = deltadrop::Environment {
                split: (workers > 1).then_some(deltadrop::Split {
                    workers,
                    chunk_bytes: chunk_mb * 1024 * 1024,
                }),
                ..env
            };
            create_table_from_first_rows(&env, &file).await?;
            let started = Instant::now();
            let staged = stage(&env, &run)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", e.name()));
            let seconds = started.elapsed().as_secs_f64();
            json!({"rows": staged.rows, "seconds": seconds, "mb_per_s": mb(staged.bytes) / seconds,
                   "rows_per_s": staged.rows as f64 / seconds, "rejected": staged.rejected_rows(),
                   "warned": staged.warned_rows(), "workers": workers, "chunks": staged.chunks})
        }
        Command::Upsert {
            file,
            work,
            target_file_mb,
            partition_by_date,
            change_data_feed,
        } => {
            let layout = Layout {
                target_file_mb,
                partition_by_date,
                checked: false,
                change_data_feed,
                chunk_mb: None,
            };
            let (env, run) = prepare(&file, &work, layout).await?;
            let spill = spill::Watch::start();
            let started = Instant::now();
            let staged = stage(&env, &run)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", e.name()));
            let staged_at = Instant::now();
            let merged = upsert(&env, &run, &staged)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", e.name()));
            let upsert_seconds = staged_at.elapsed().as_secs_f64();
            let sample_seconds = match (change_data_feed, merged.version) {
                (true, Some(version)) => {
                    let sampled = Instant::now();
                    let feed = &env.config.feeds[0];
                    let sample = deltadrop::change_sample::read(
                        &env.table(&feed.table)?,
                        version,
                        &feed.keys,
                        feed.email_sample,
                    )
                    .await?;
                    assert!(
                        merged.change_sample.as_ref() == Some(&sample),
                        "the upsert's own sample"
                    );
                    Some(sampled.elapsed().as_secs_f64())
                }
                _ => None,
            };
            json!({"rows": staged.rows, "stage_seconds": (staged_at - started).as_secs_f64(),
                   "upsert_seconds": upsert_seconds, "seconds": started.elapsed().as_secs_f64(),
                   "sample_seconds": sample_seconds,
                   "inserted": merged.changes.rows_inserted, "updated": merged.changes.rows_updated,
                   "files_scanned": merged.changes.files_scanned, "files_skipped": merged.changes.files_skipped,
                   "files_added": merged.changes.files_added,
                   "files_removed": merged.changes.files_removed,
                   "bytes_rewritten": merged.changes.bytes_rewritten,
                   "estimate": merged.changes.estimate,
                   "rewrite_mb_per_s": mb(merged.changes.bytes_rewritten) / staged_at.elapsed().as_secs_f64(),
                   "partitions_touched": merged.changes.partitions_touched,
                   "merge_memory_mb": env.merge_memory.as_ref().map(|m| m.bytes >> 20),
                   "peak_spill_mb": mb(spill.peak_bytes()),
                   "version": merged.version})
        }
        Command::Burst {
            work,
            concurrency,
            files,
            tables,
            rows,
            base_rows,
            s3_endpoint,
            bucket,
            lane,
        } => {
            let shape = burst::Shape {
                tables,
                files,
                rows,
                base_rows,
            };
            let env = match &s3_endpoint {
                Some(endpoint) => s3_environment(endpoint, &bucket, &shape.config()).await?,
                None => folder_environment(&work, &shape.config())?,
            };
            let mut report = if lane {
                burst::burst_through_lane(&env, shape, concurrency).await?
            } else {
                burst::burst(&env, shape, concurrency).await?
            };
            report["storage"] = json!(if s3_endpoint.is_some() {
                "s3 (moto)"
            } else {
                "folder"
            });
            report
        }
        Command::Move {
            s3_endpoint,
            mib,
            single_copy_limit_mib,
            part_mib,
            bucket,
        } => {
            copy::Move {
                endpoint: s3_endpoint,
                bucket,
                object_mib: mib,
                single_copy_limit_mib,
                part_mib,
            }
            .run()
            .await?
        }
    };
    println!("{result}");
    Ok(())
}
