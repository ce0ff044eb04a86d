//! Burst throughput: many small files for one table dropped at once, each run through the real
//! pipeline (`run_file`: stage → archive → upsert → notify, quarantine on failure) with a bounded
//! number of runs at a time, as Step Functions would start them.

use std::time::Instant;

use deltadrop::inspect::summarize;
use deltadrop::run::run_file;
use deltadrop::steps::{RunInput, UpsertOutcome};
use deltadrop::{Environment, Error};
use futures::StreamExt;
use serde_json::{json, Value};

use deltadrop_bench::generate;

/// The burst's shape: `files` files of `rows` rows each, after a base load of `base_rows`.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Files dropped at once.
    pub files: u64,
    /// Rows per file.
    pub rows: u64,
    /// Rows of the table before the burst (loaded first, not timed).
    pub base_rows: u64,
}

impl Shape {
    /// Each file updates a tenth of its rows in the base (spread over it, a different stride per
    /// file) and brings new keys for the rest: the table's rows once `applied` files are in.
    fn expected_rows(&self, applied: u64) -> u64 {
        self.base_rows + applied * (self.rows - self.rows / 10)
    }

    fn file(&self, index: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.rows as usize * 120);
        let updates = self.rows / 10;
        let new_keys = self.rows - updates;
        out.extend_from_slice(generate::HEADER.as_bytes());
        for i in 0..updates {
            let key = 1 + (index * 7 + i * (self.base_rows / updates.max(1))) % self.base_rows;
            generate::write_row(&mut out, key, index + 1).expect("writing to memory");
        }
        let first_new = self.base_rows + index * new_keys + 1;
        for key in first_new..first_new + new_keys {
            generate::write_row(&mut out, key, index + 1).expect("writing to memory");
        }
        out
    }
}

/// Puts the base file and the burst's files in the feed's incoming folder, loads the base, then
/// runs every burst file with at most `concurrency` runs at once. One JSON object of counts.
pub async fn burst(env: &Environment, shape: Shape, concurrency: usize) -> Result<Value, Error> {
    let mut base = Vec::new();
    generate::orders(&mut base, shape.base_rows).expect("writing to memory");
    env.storage.put("incoming/base.csv", base).await?;
    let loaded = run_file(
        env,
        RunInput::for_current_upload(env, "incoming/base.csv").await?,
        &|_| {},
    )
    .await;
    if let Some(e) = loaded.error {
        return Err(e);
    }
    let mut runs = Vec::new();
    for index in 0..shape.files {
        let key = format!("incoming/burst-{index:04}.csv");
        env.storage.put(&key, shape.file(index)).await?;
        // The trigger reads the upload from the event; here it is one HEAD, outside the timing.
        runs.push(RunInput::for_current_upload(env, &key).await?);
    }

    let started = Instant::now();
    let results: Vec<_> = futures::stream::iter(runs)
        .map(|run| async move {
            let result = run_file(env, run, &|_| {}).await;
            (started.elapsed().as_secs_f64(), result)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let seconds = started.elapsed().as_secs_f64();

    let mut latencies: Vec<f64> = results.iter().map(|(s, _)| *s).collect();
    latencies.sort_by(f64::total_cmp);
    let (mut applied, mut attempts, mut max_attempts) = (0u64, 0u64, 0u32);
    let (mut gave_up_on_conflict, mut other_failures) = (0u64, Vec::new());
    for (_, result) in &results {
        if let Some(upsert) = &result.report.upsert {
            applied += u64::from(upsert.outcome == UpsertOutcome::Applied);
            attempts += u64::from(upsert.attempts);
            max_attempts = max_attempts.max(upsert.attempts);
        }
        match &result.error {
            None => {}
            Some(Error::CommitConflict { .. }) => gave_up_on_conflict += 1,
            Some(e) => other_failures.push(format!("{}: {e}", e.name())),
        }
    }
    let table = env.table(&env.config.feeds[0].table)?;
    let rows = summarize(&table, 0).await?.rows;
    Ok(json!({
        "files": shape.files, "rows_per_file": shape.rows, "concurrency": concurrency,
        "seconds": seconds, "files_per_minute": shape.files as f64 * 60.0 / seconds,
        "applied": applied, "upsert_attempts": attempts,
        "conflicts_retried": attempts.saturating_sub(applied),
        "max_attempts_of_a_file": max_attempts,
        "gave_up_with_commit_conflict": gave_up_on_conflict,
        "other_failures": other_failures,
        "median_latency_s": latencies.get(latencies.len() / 2).copied().unwrap_or(0.0),
        "slowest_latency_s": latencies.last().copied().unwrap_or(0.0),
        // Files that gave up are quarantined (locally nothing retries them; on AWS the state
        // machine's Retry would): the table holds exactly the applied files' rows.
        "table_rows": rows, "expected_rows": shape.expected_rows(applied),
    }))
}
