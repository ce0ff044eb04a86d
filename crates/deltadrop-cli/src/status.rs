//! `deltadrop status`: per feed, the table, the last file applied, what waits and what failed;
//! on AWS also the last executions with console links.

use std::path::Path;
use std::process::ExitCode;

use deltadrop::status::{status, FeedStatus, Rewrites};
use deltadrop::{Error, Result};

use crate::local::environment;

/// How many of each list are printed.
const SHOWN: usize = 5;

fn print(feeds: &[FeedStatus]) {
    for f in feeds {
        println!("{} → {}", f.feed, f.table);
        match (f.version, f.rows) {
            (Some(version), Some(rows)) => println!("  table      version {version}, {rows} rows"),
            _ => println!("  table      none yet"),
        }
        match &f.last_file {
            Some((file, time)) => println!(
                "  last file  {file} ({})",
                time.map_or("time unknown".into(), |t| t
                    .format("%Y-%m-%d %H:%M:%S UTC")
                    .to_string())
            ),
            None => println!("  last file  none"),
        }
        if let Some(r) = &f.rewrites {
            println!("  rewrites   {}", rewrites(r));
        }
        if let Some(b) = &f.bad_rows {
            println!(
                "  bad rows   {} rejected, {} warned, over the latest {} commits",
                b.rejected, b.warned, b.commits
            );
        }
        for (label, files) in [
            ("waiting", &f.waiting),
            ("quarantined", &f.quarantined),
            ("rejects", &f.rejects),
        ] {
            println!("  {label:<10} {}", files.len());
            for file in files.iter().take(SHOWN) {
                println!("    {file}");
            }
        }
    }
}

/// What the table's latest MERGEs rewrote, against its size.
fn rewrites(r: &Rewrites) -> String {
    if r.merges == 0 {
        return format!(
            "no MERGE among the latest commits; table {}",
            size(r.table_bytes)
        );
    }
    let share = match r.table_bytes {
        0 => String::new(),
        total => format!(
            " ({:.0}% of the table)",
            100.0 * r.average_bytes as f64 / total as f64
        ),
    };
    format!(
        "an average MERGE rewrote {} of {}{share}, the largest {}, over the latest {} MERGEs",
        size(r.average_bytes),
        size(r.table_bytes),
        size(r.largest_bytes),
        r.merges
    )
}

/// Bytes in the largest unit that keeps a number of at least 1.
fn size(bytes: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < units.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ => format!("{value:.1} {}", units[unit]),
    }
}

/// A folder bucket.
pub async fn in_folder(bucket: &Path, config: Option<&Path>) -> Result<ExitCode> {
    let env = environment(bucket, config, None)?;
    print(&status(&env.config, env.storage.as_ref()).await?);
    Ok(ExitCode::SUCCESS)
}

/// An S3 bucket, its configuration at `config_key`, and the state machine's last executions.
pub async fn on_s3(
    bucket: &str,
    config_key: &str,
    state_machine_arn: Option<&str>,
) -> Result<ExitCode> {
    let storage = crate::s3::bucket(bucket).await?;
    let config = crate::s3::config(&storage, config_key).await?;
    print(&status(&config, &storage).await?);
    if let Some(arn) = state_machine_arn {
        print_executions(arn).await?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn print_executions(state_machine_arn: &str) -> Result<()> {
    let sdk = aws_config::load_from_env().await;
    let region = sdk.region().map(|r| r.to_string()).unwrap_or_default();
    let executions = aws_sdk_sfn::Client::new(&sdk)
        .list_executions()
        .state_machine_arn(state_machine_arn)
        .max_results(10)
        .send()
        .await
        .map_err(|e| {
            Error::storage(
                state_machine_arn,
                aws_sdk_sfn::error::DisplayErrorContext(e),
            )
        })?;
    println!("last executions");
    for e in executions.executions() {
        println!(
            "  {:<10} {}  {}\n             {}",
            e.status().as_str(),
            e.start_date(),
            e.name(),
            deltadrop_aws::handlers::console_url(&region, e.execution_arn())
        );
    }
    Ok(())
}
