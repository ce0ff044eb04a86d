//! `deltadrop check`: a configuration validated before it is uploaded, and sample files routed
//! and read as the stage step would read them.

use std::path::Path;
use std::process::ExitCode;

use deltadrop::config::{Compression, Config};
use deltadrop::read::{read_file, ReadSpec, LINE_COLUMN};
use deltadrop::{Error, Result};

/// Checks `config_path`; for each sample, the feed its key routes to and what it would stage.
/// A sample is named by its key relative to the current folder (`incoming/orders/a.csv`).
pub fn run(config_path: &Path, samples: &[String]) -> Result<ExitCode> {
    let config = crate::local::read_config(config_path)?;
    println!(
        "{}: valid, {} feed(s)",
        config_path.display(),
        config.feeds.len()
    );
    for feed in &config.feeds {
        println!(
            "  {:<16} {} → {} (keys: {})",
            feed.name,
            feed.incoming,
            feed.table,
            feed.keys.join(", ")
        );
        if !feed.partition_by.is_empty() {
            let partitions: Vec<String> = feed.partition_by.iter().map(|p| p.to_string()).collect();
            println!("  {:<16} partitioned by {}", "", partitions.join(", "));
        }
    }
    let mut failed = false;
    for sample in samples {
        let key = sample.trim_start_matches("./");
        match check_sample(&config, key) {
            Ok(()) => {}
            Err(e) => {
                failed = true;
                println!("{key}: {} ({})", e, e.name());
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Routes one sample and reads it whole, printing the columns it would stage.
fn check_sample(config: &Config, key: &str) -> Result<()> {
    let feed = config.feed_for_key(key)?;
    let format = feed.format_for(key)?;
    let file = std::fs::File::open(key).map_err(|e| Error::storage(key, e))?;
    let spec = ReadSpec {
        file: key,
        feed,
        format,
        compression: Compression::from_key(key),
        target: None,
        hash_content: false,
        rejects: Default::default(),
        part: Default::default(),
    };
    let mut schema = None;
    let read = read_file(std::io::BufReader::new(file), &spec, &mut |batch| {
        schema.get_or_insert_with(|| batch.schema());
        Ok(())
    });
    // What the feed would set aside, whether the file loads or not.
    if let Some((_, rejects)) = spec.rejects.into_file("")? {
        println!(
            "{key}: {} row(s) would be rejected ({}); the first:",
            rejects.rows,
            rejects.reasons()
        );
        for line in rejects.first_lines() {
            println!("  {line}");
        }
    }
    let summary = read?;
    // The route the trigger would give the file on AWS, by its size (docs/aws.md, "Routes"),
    // in a deployment with the container tier.
    let size = std::fs::metadata(key).map(|m| m.len()).ok();
    let route = deltadrop::route::route(feed, key, size, deltadrop::route::ContainerTier::Deployed);
    println!(
        "{key}: staged on AWS by route {}: {}",
        route.stage.name(),
        route.why
    );
    println!(
        "{key}: feed {} ({format:?}), {} rows; a new table {} would get:",
        feed.name, summary.rows, feed.table
    );
    for field in schema.iter().flat_map(|s| s.fields().iter().cloned()) {
        if field.name() != LINE_COLUMN {
            println!(
                "  {:<24} {}",
                field.name(),
                deltadrop::read::type_name(field.data_type())
            );
        }
    }
    Ok(())
}
