//! Burst throughput: many small files for one table dropped at once, each run through the real
//! pipeline (`run_file`: stage → archive → upsert → notify, quarantine on failure) with a bounded
//! number of runs at a time, as Step Functions would start them; or (`--lane`) staged that many
//! at a time and merged by the table's commit lane, which takes every file that is staged when it
//! is free (as the merger function does on AWS).

use std::time::Instant;

use deltadrop::inspect::summarize;
use deltadrop::run::run_file;
use deltadrop::steps::upsert::upsert_files;
use deltadrop::steps::{
    archive, notify, stage, Pending, Report, RunInput, UpsertOutcome, UpsertOutput,
};
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

/// Puts the base file and the burst's files in the feed's incoming folder and loads the base;
/// returns the burst files' runs.
async fn prepare(env: &Environment, shape: Shape) -> Result<Vec<RunInput>, Error> {
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
    Ok(runs)
}

/// Runs every burst file with at most `concurrency` runs at once. One JSON object of counts.
pub async fn burst(env: &Environment, shape: Shape, concurrency: usize) -> Result<Value, Error> {
    let runs = prepare(env, shape).await?;
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
    let results: Vec<(f64, Option<UpsertOutput>, Option<Error>)> = results
        .into_iter()
        .map(|(s, r)| (s, r.report.upsert, r.error))
        .collect();
    report(env, shape, concurrency, seconds, &results).await
}

/// Stages (and archives) the burst files `concurrency` at a time while the table's lane merges,
/// whenever it is free, every file staged by then (in one commit up to the feed's bounds); each
/// file is emailed once merged. One JSON object of counts, with the commits.
pub async fn burst_through_lane(
    env: &Environment,
    shape: Shape,
    concurrency: usize,
) -> Result<Value, Error> {
    let runs = prepare(env, shape).await?;
    let max_files = env.config.feeds[0].batch.max_files;
    let started = Instant::now();
    let (ready, mut staged) = tokio::sync::mpsc::unbounded_channel();
    let staging = async move {
        futures::stream::iter(runs)
            .for_each_concurrent(concurrency, |run| {
                let ready = ready.clone();
                async move {
                    let outcome = match stage(env, &run).await {
                        Ok(stage) => archive(env, &run).await.map(|_| stage),
                        Err(e) => Err(e),
                    };
                    let _ = ready.send((run, outcome));
                }
            })
            .await;
        // The last sender goes here: the lane sees the end of the burst.
    };
    let lane = async {
        let mut results = Vec::new();
        while let Some(first) = staged.recv().await {
            // At most one commit's worth, so that each commit's files are answered at once.
            let mut batch = vec![first];
            while batch.len() < max_files {
                let Ok(more) = staged.try_recv() else { break };
                batch.push(more);
            }
            let mut pending = Vec::new();
            for (run, outcome) in batch {
                match outcome {
                    Ok(stage) => pending.push(Pending { run, stage }),
                    Err(e) => results.push((started.elapsed().as_secs_f64(), None, Some(e))),
                }
            }
            for (file, merged) in pending.iter().zip(upsert_files(env, &pending).await) {
                let mut report = Report {
                    run: Some(file.run.clone()),
                    stage: Some(file.stage.clone()),
                    ..Default::default()
                };
                match merged {
                    Ok(upsert) => {
                        report.upsert = Some(upsert);
                        let _ = notify(env, &report).await;
                        results.push((started.elapsed().as_secs_f64(), report.upsert, None));
                    }
                    Err(e) => results.push((started.elapsed().as_secs_f64(), None, Some(e))),
                }
            }
        }
        results
    };
    let ((), results) = tokio::join!(staging, lane);
    let seconds = started.elapsed().as_secs_f64();
    let mut out = report(env, shape, concurrency, seconds, &results).await?;
    out["mode"] = json!("lane");
    Ok(out)
}

/// The counts of a burst: each file's latency (seconds from the burst's start to its end), its
/// upsert and its error.
async fn report(
    env: &Environment,
    shape: Shape,
    concurrency: usize,
    seconds: f64,
    results: &[(f64, Option<UpsertOutput>, Option<Error>)],
) -> Result<Value, Error> {
    let mut latencies: Vec<f64> = results.iter().map(|(s, _, _)| *s).collect();
    latencies.sort_by(f64::total_cmp);
    let (mut applied, mut attempts, mut max_attempts) = (0u64, 0u64, 0u32);
    let (mut gave_up_on_conflict, mut other_failures) = (0u64, Vec::new());
    for (_, upsert, error) in results {
        if let Some(upsert) = upsert {
            applied += u64::from(upsert.outcome == UpsertOutcome::Applied);
            attempts += u64::from(upsert.attempts);
            max_attempts = max_attempts.max(upsert.attempts);
        }
        match error {
            None => {}
            Some(Error::CommitConflict { .. }) => gave_up_on_conflict += 1,
            Some(e) => other_failures.push(format!("{}: {e}", e.name())),
        }
    }
    let table = env.table(&env.config.feeds[0].table)?;
    let summary = summarize(&table, 0).await?;
    // The base load is version 0: every later version is a commit of the burst.
    let commits = summary.version;
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
        "table_rows": summary.rows, "expected_rows": shape.expected_rows(applied),
        "commits": commits, "files_per_commit": applied as f64 / commits.max(1) as f64,
        "mode": "each file its own upsert",
    }))
}
