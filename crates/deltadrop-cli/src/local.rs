//! `deltadrop run` and `deltadrop table` on local folders.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use deltadrop::config::Config;
use deltadrop::delta::TableLocation;
use deltadrop::inspect;
use deltadrop::run::{run_files, RunResult};
use deltadrop::steps::{RunInput, UpsertOutcome};
use deltadrop::storage::LocalBucket;
use deltadrop::{Environment, Error, Result};

/// Builds the local environment: the folder as bucket, `.eml` files as mail.
pub fn environment(
    bucket: &Path,
    config: Option<&Path>,
    outbox: Option<&Path>,
) -> Result<Environment> {
    let storage = LocalBucket::new(bucket)?;
    let config_path = config
        .map(Path::to_path_buf)
        .unwrap_or_else(|| storage.root().join("deltadrop.toml"));
    let config = read_config(&config_path)?;
    let outbox = outbox
        .map(Path::to_path_buf)
        .unwrap_or_else(|| storage.root().join("_deltadrop").join("outbox"));
    let mut env = Environment::local(config, storage.root(), &outbox)?;
    env.merge_memory = deltadrop::MergeMemory::from_env()?;
    Ok(env)
}

/// Where `deltadrop run` works: the folder used as the bucket, the configuration, the outbox.
pub struct Folders<'a> {
    pub bucket: &'a Path,
    pub config: Option<&'a Path>,
    pub outbox: Option<&'a Path>,
}

/// Reads and validates a configuration file; errors name the file (or the field in it).
pub fn read_config(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::ConfigError {
        field: path.display().to_string(),
        message: format!("cannot read the configuration: {e}"),
    })?;
    Config::from_toml(&text, &path.display().to_string())
}

/// The key of `file` in the bucket: given as a key, or as a path inside the bucket folder.
fn key_in_bucket(bucket: &LocalBucket, file: &str) -> Result<String> {
    let as_path = PathBuf::from(file);
    if let Ok(absolute) = as_path.canonicalize() {
        if let Ok(relative) = absolute.strip_prefix(bucket.root()) {
            return Ok(relative.to_string_lossy().replace('\\', "/"));
        }
        return Err(Error::InvalidInput {
            message: format!(
                "{file} is outside the bucket {}: copy it under the feed's incoming prefix first",
                bucket.root().display()
            ),
        });
    }
    if bucket.path(file).map(|p| p.is_file()).unwrap_or(false) {
        return Ok(file.trim_start_matches("./").to_string());
    }
    Err(Error::ObjectNotFound {
        key: file.to_string(),
    })
}

/// The files `deltadrop run --all` takes: every file under the feeds' incoming prefixes that a
/// feed takes, in arrival order (modification time, then key).
async fn incoming_files(env: &Environment) -> Result<Vec<String>> {
    let mut found: Vec<_> = deltadrop::watch::incoming_files(env)
        .await?
        .into_iter()
        .filter(|object| env.config.feed_for_key(&object.key).is_ok())
        .map(|object| (object.modified, object.key))
        .collect();
    found.sort();
    Ok(found.into_iter().map(|(_, key)| key).collect())
}

/// `deltadrop run`: the files in the order given (`--all`: every incoming file, in arrival
/// order), each staged and archived on its own, each table's files merged in as few commits as
/// the bounds allow. Exit status 0 when every file loaded, 1 when one failed; a bad argument
/// (exit 2) stops before anything moves.
pub async fn run(
    files: &[String],
    all: bool,
    folders: Folders<'_>,
    split: Option<deltadrop::Split>,
) -> Result<ExitCode> {
    let bucket = folders.bucket;
    let env = Environment {
        split,
        ..environment(bucket, folders.config, folders.outbox)?
    };
    let local = LocalBucket::new(bucket)?;
    let keys = if all {
        incoming_files(&env).await?
    } else {
        files
            .iter()
            .map(|file| key_in_bucket(&local, file))
            .collect::<Result<Vec<_>>>()?
    };
    if keys.is_empty() {
        println!("nothing to run: no file under the feeds' incoming prefixes");
        return Ok(ExitCode::from(2));
    }
    let mut runs = Vec::new();
    for key in &keys {
        let run = RunInput::for_current_upload(&env, key).await?;
        println!("run {} · feed {} · {}", run.run_id, run.feed, key);
        runs.push(run);
    }
    let results = run_files(&env, runs, &|line| println!("  {line}")).await;
    for result in &results {
        print_summary(result);
    }
    let failed = results.iter().filter(|r| !r.succeeded()).count();
    if results.len() > 1 {
        let mut commits: Vec<(String, u64)> = results
            .iter()
            .filter_map(|r| r.report.upsert.as_ref())
            .filter(|u| u.outcome == UpsertOutcome::Applied)
            .filter_map(|u| u.version.map(|v| (u.table.clone(), v)))
            .collect();
        commits.sort();
        commits.dedup();
        println!(
            "{} files: {} loaded, {failed} failed; {} commit(s)",
            results.len(),
            results.len() - failed,
            commits.len()
        );
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn print_summary(result: &RunResult) {
    let file = result.report.run.as_ref().map_or("", |r| r.key.as_str());
    match (&result.error, &result.report.upsert) {
        (None, Some(upsert)) => println!(
            "done: {file}: {:?}; {} inserted, {} updated, {} deleted; {} is at version {}",
            upsert.outcome,
            upsert.changes.rows_inserted,
            upsert.changes.rows_updated,
            upsert.changes.rows_deleted,
            upsert.table,
            upsert.version.map_or("-".into(), |v| v.to_string())
        ),
        (Some(e), _) => println!("FAILED: {file}: {}: {e}", e.name()),
        (None, None) => println!("done: {file}"),
    }
    match &result.notification {
        Ok(n) => {
            if let Some(path) = &n.delivered {
                println!("email: {path}");
            } else if let Some(why) = &n.not_sent {
                println!("no email: {why}");
            }
        }
        Err(e) => println!("email not sent: {e}"),
    }
}

/// `deltadrop maintain`: every feed's table (or one feed's), one line each.
pub async fn maintain(
    bucket: &Path,
    feed: Option<&str>,
    config: Option<&Path>,
) -> Result<ExitCode> {
    let env = environment(bucket, config, None)?;
    let feeds = match feed {
        Some(name) => vec![env.config.feed_named(name)?.clone()],
        None => env.config.feeds.clone(),
    };
    for feed in &feeds {
        match deltadrop::maintain::maintain(&env, feed).await? {
            None => println!("{}: no table yet", feed.name),
            Some(m) => println!(
                "{}: {} files ({}) → {} files ({}); compacted {} into {}, vacuumed {}, checkpoint at version {}, {} expired log files removed",
                m.feed,
                m.files_before,
                megabytes(m.bytes_before),
                m.files_after,
                megabytes(m.bytes_after),
                m.files_compacted,
                m.files_written,
                m.files_vacuumed,
                m.version,
                m.logs_removed
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// A table folder or URL (`file:///...`, `s3://...`) as `deltadrop table` takes it.
fn table_at(location: &str) -> Result<TableLocation> {
    let url = if location.contains("://") {
        url::Url::parse(location).map_err(|e| Error::InvalidInput {
            message: format!("{location}: {e}"),
        })?
    } else {
        let path = Path::new(location)
            .canonicalize()
            .map_err(|e| Error::storage(location, e))?;
        url::Url::from_directory_path(&path).map_err(|_| Error::InvalidInput {
            message: format!("{location} is not a folder"),
        })?
    };
    Ok(TableLocation::new(url, Default::default()))
}

/// `deltadrop table <location> --changes FROM[..TO]`: the change data feed of those versions.
pub async fn show_changes(location: &str, range: &str) -> Result<ExitCode> {
    let version = |text: &str| {
        text.trim().parse::<u64>().map_err(|_| Error::InvalidInput {
            message: format!("--changes {range:?}: expected FROM or FROM..TO, table versions"),
        })
    };
    let (from, to) = match range.split_once("..") {
        Some((from, to)) => (version(from)?, Some(version(to)?)),
        None => (version(range)?, None),
    };
    let table = table_at(location)?;
    let batches = inspect::changes(&table, from, to, &[]).await?;
    let count: usize = batches.iter().map(|b| b.num_rows()).sum();
    println!("{count} change(s) in {} from version {from}", table.name());
    let pretty = deltalake::arrow::util::pretty::pretty_format_batches(&batches)
        .map_err(|e| Error::delta(table.name(), e))?;
    println!("{pretty}");
    Ok(ExitCode::SUCCESS)
}

pub async fn show_table(location: &str, history: usize, rows: usize) -> Result<ExitCode> {
    let table = table_at(location)?;
    let summary = inspect::summarize(&table, history).await?;
    println!("table    {}", summary.location);
    println!("version  {}", summary.version);
    println!("rows     {}", summary.rows);
    println!("files    {}", summary.files);
    if !summary.partition_columns.is_empty() {
        println!(
            "partitioned by {} ({} partitions)",
            summary.partition_columns.join(", "),
            summary.partitions
        );
    }
    println!("schema");
    for (name, data_type) in &summary.columns {
        println!("  {name:<24} {data_type}");
    }
    println!("recent operations (newest first)");
    for entry in &summary.history {
        println!(
            "  v{:<4} {:<20} {:<14} {:<40} {}",
            entry.version,
            entry
                .time
                .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string()),
            entry.operation,
            entry.rows,
            entry.file.as_deref().unwrap_or("")
        );
    }
    if rows > 0 {
        let batches = inspect::rows(&table, &[], Some(rows)).await?;
        let shown: usize = batches.iter().map(|b| b.num_rows()).sum();
        println!("first {shown} rows");
        let pretty = deltalake::arrow::util::pretty::pretty_format_batches(&batches)
            .map_err(|e| Error::delta(summary.location.clone(), e))?;
        println!("{pretty}");
    }
    Ok(ExitCode::SUCCESS)
}
