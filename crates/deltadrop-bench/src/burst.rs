//! Burst throughput: many small files for one table (or for each of several tables) dropped at
//! once, each run through the real pipeline (`run_file`: stage → archive → upsert → notify,
//! quarantine on failure) with a bounded number of runs at a time, as Step Functions would start
//! them; or (`--lane`) staged that many at a time and merged by each table's commit lane, which
//! takes every file of its table that is staged when it is free (as the merger function does on
//! AWS, one message group per table).

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

/// The burst's shape: for each of `tables` tables, `files` files of `rows` rows each, after a base
/// load of `base_rows`.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Tables (one feed each) the burst is for.
    pub tables: u64,
    /// Files dropped at once for each table.
    pub files: u64,
    /// Rows per file.
    pub rows: u64,
    /// Rows of the table before the burst (loaded first, not timed).
    pub base_rows: u64,
}

impl Shape {
    /// Each file updates a tenth of its rows in the base (spread over it, a different stride per
    /// file) and brings new keys for the rest: the tables' rows once `applied` files are in.
    fn expected_rows(&self, applied: u64) -> u64 {
        self.tables * self.base_rows + applied * (self.rows - self.rows / 10)
    }

    fn total_files(&self) -> u64 {
        self.tables * self.files
    }

    /// The configuration: one feed and table per table of the burst (`orders` alone, as in the
    /// one-table runs recorded before, or `orders-0`, `orders-1`, ... with their own folders).
    pub fn config(&self) -> String {
        if self.tables == 1 {
            return crate::CONFIG.to_string();
        }
        (0..self.tables)
            .map(|t| {
                format!(
                    "[[feeds]]\nname = \"orders-{t}\"\nincoming = \"incoming/orders-{t}/\"\n\
                     table = \"tables/orders-{t}\"\nkeys = [\"o_orderkey\"]\n"
                )
            })
            .collect()
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

/// A burst file's run and the index of its table (its feed in the configuration).
type TableRun = (usize, RunInput);

/// Puts each table's base file and burst files in its feed's incoming folder and loads the bases;
/// returns the burst files' runs, the tables interleaved as their files would arrive.
async fn prepare(env: &Environment, shape: Shape) -> Result<Vec<TableRun>, Error> {
    let mut base = Vec::new();
    generate::orders(&mut base, shape.base_rows).expect("writing to memory");
    for feed in &env.config.feeds {
        let key = format!("{}base.csv", feed.incoming_prefix());
        env.storage.put(&key, base.clone()).await?;
        let loaded = run_file(env, RunInput::for_current_upload(env, &key).await?, &|_| {}).await;
        if let Some(e) = loaded.error {
            return Err(e);
        }
    }
    let mut runs = Vec::new();
    for index in 0..shape.files {
        for (table, feed) in env.config.feeds.iter().enumerate() {
            let key = format!("{}burst-{index:04}.csv", feed.incoming_prefix());
            env.storage.put(&key, shape.file(index)).await?;
            // The trigger reads the upload from the event; here it is one HEAD, outside the timing.
            runs.push((table, RunInput::for_current_upload(env, &key).await?));
        }
    }
    Ok(runs)
}

/// Runs every burst file with at most `concurrency` runs at once. One JSON object of counts.
pub async fn burst(env: &Environment, shape: Shape, concurrency: usize) -> Result<Value, Error> {
    let runs = prepare(env, shape).await?;
    let started = Instant::now();
    let results: Vec<_> = futures::stream::iter(runs)
        .map(|(_, run)| async move {
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

/// Stages (and archives) the burst files `concurrency` at a time while each table's lane merges,
/// whenever it is free, every file of its table staged by then (in one commit up to the feed's
/// bounds); each file is emailed once merged. One JSON object of counts, with the commits.
pub async fn burst_through_lane(
    env: &Environment,
    shape: Shape,
    concurrency: usize,
) -> Result<Value, Error> {
    let runs = prepare(env, shape).await?;
    let started = Instant::now();
    let (ready, lanes): (Vec<_>, Vec<_>) = env
        .config
        .feeds
        .iter()
        .map(|_| tokio::sync::mpsc::unbounded_channel())
        .unzip();
    let staging = async move {
        futures::stream::iter(runs)
            .for_each_concurrent(concurrency, |(table, run)| {
                let ready = ready[table].clone();
                async move {
                    let outcome = match stage(env, &run).await {
                        Ok(stage) => archive(env, &run).await.map(|_| stage),
                        Err(e) => Err(e),
                    };
                    let _ = ready.send((run, outcome));
                }
            })
            .await;
        // The last senders go here: each lane sees the end of the burst.
    };
    let lanes = futures::future::join_all(
        lanes
            .into_iter()
            .zip(&env.config.feeds)
            .map(|(staged, feed)| lane(env, staged, feed.batch.max_files, started)),
    );
    let ((), results) = tokio::join!(staging, lanes);
    let results: Vec<_> = results.into_iter().flatten().collect();
    let seconds = started.elapsed().as_secs_f64();
    let mut out = report(env, shape, concurrency, seconds, &results).await?;
    out["mode"] = json!("lane");
    Ok(out)
}

type Staged = (RunInput, Result<deltadrop::steps::StageOutput, Error>);
type FileResult = (f64, Option<UpsertOutput>, Option<Error>);

/// One table's lane: merges what is staged for it, one commit's worth at a time, until the burst
/// ends; each file's latency, upsert and error.
async fn lane(
    env: &Environment,
    mut staged: tokio::sync::mpsc::UnboundedReceiver<Staged>,
    max_files: usize,
    started: Instant,
) -> Vec<FileResult> {
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
}

/// The counts of a burst: each file's latency (seconds from the burst's start to its end), its
/// upsert and its error.
async fn report(
    env: &Environment,
    shape: Shape,
    concurrency: usize,
    seconds: f64,
    results: &[FileResult],
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
    let (mut table_rows, mut commits) = (0, 0);
    for feed in &env.config.feeds {
        let summary = summarize(&env.table(&feed.table)?, 0).await?;
        table_rows += summary.rows;
        // The base load is version 0: every later version is a commit of the burst.
        commits += summary.version;
    }
    let files = shape.total_files();
    Ok(json!({
        "tables": shape.tables, "files": files, "rows_per_file": shape.rows,
        "concurrency": concurrency,
        "seconds": seconds, "files_per_minute": files as f64 * 60.0 / seconds,
        "applied": applied, "upsert_attempts": attempts,
        "conflicts_retried": attempts.saturating_sub(applied),
        "max_attempts_of_a_file": max_attempts,
        "gave_up_with_commit_conflict": gave_up_on_conflict,
        "other_failures": other_failures,
        "median_latency_s": latencies.get(latencies.len() / 2).copied().unwrap_or(0.0),
        "slowest_latency_s": latencies.last().copied().unwrap_or(0.0),
        // Files that gave up are quarantined (locally nothing retries them; on AWS the state
        // machine's Retry would): the table holds exactly the applied files' rows.
        "table_rows": table_rows, "expected_rows": shape.expected_rows(applied),
        "commits": commits, "files_per_commit": applied as f64 / commits.max(1) as f64,
        "mode": "each file its own upsert",
    }))
}
