//! The Distributed Maps on moto, timed (issue 22). Not part of the suite (it is `#[ignore]`d):
//! `./scripts/bench --map` runs it in a moto of its own, on a CSV it generates. The same file is
//! dropped into one feed read whole by the Stage function and into feeds staged in chunks, once
//! per Map concurrency (both Maps' `MaxConcurrency`, which moto honours with that many worker
//! threads); each run goes through the real state machine and the real handlers, and each
//! chunked table is compared row for row with the whole read's by the Python `deltalake`
//! package. The timings come from the executions' histories; one JSON line per run is appended
//! to `DELTADROP_BENCH_MAP_RESULTS`.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;

use aws_sdk_sfn::types::HistoryEvent;
use serde_json::{json, Value};

use crate::world::{python, reader_options, World, BUCKET};

const KEY_COLUMN: &str = "o_orderkey";

/// What `./scripts/bench --map` hands over.
struct Setup {
    file: String,
    chunk_mb: f64,
    workers: Vec<u32>,
    results: String,
}

impl Setup {
    fn from_env() -> Setup {
        let var = |name: &str| {
            std::env::var(name)
                .unwrap_or_else(|_| panic!("{name} is not set: ./scripts/bench --map sets it"))
        };
        Setup {
            file: var("DELTADROP_BENCH_MAP_FILE"),
            chunk_mb: var("DELTADROP_BENCH_MAP_CHUNK_MB").parse().unwrap(),
            workers: var("DELTADROP_BENCH_MAP_WORKERS")
                .split(',')
                .map(|n| n.trim().parse().unwrap())
                .collect(),
            results: var("DELTADROP_BENCH_MAP_RESULTS"),
        }
    }

    /// One feed read whole (under the default `parallel_stage_from_mb`) and one per concurrency
    /// staged in chunks.
    fn config(&self) -> String {
        let feed = |name: &str| {
            format!(
                "[[feeds]]\nname = \"{name}\"\nincoming = \"incoming/{name}/\"\ntable = \"tables/{name}\"\nkeys = [\"{KEY_COLUMN}\"]\n"
            )
        };
        let chunked = self.workers.iter().map(|n| {
            format!(
                "{}\n[feeds.route]\nparallel_stage_from_mb = 1\nchunk_mb = {}\n",
                feed(&format!("chunks-{n}")),
                self.chunk_mb
            )
        });
        std::iter::once(feed("whole"))
            .chain(chunked)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: ./scripts/bench --map runs it on a generated file"]
async fn bench_the_distributed_maps_on_moto() {
    let setup = Setup::from_env();
    let body = std::fs::read(&setup.file).unwrap();
    let mb = body.len() as f64 / 1e6;
    let world = World::new().await;
    world.upload("deltadrop.toml", setup.config()).await;

    let whole = run(&world, "whole", &body).await;
    assert_eq!(
        whole.output["route"]["stage"], "function",
        "{:#}",
        whole.output
    );
    record(
        &setup,
        json!({"route": "function", "mb": mb, "states": whole.states, "wall": whole.wall}),
    );
    for &workers in &setup.workers {
        with_map_concurrency(&world, workers).await;
        let chunked = run(&world, &format!("chunks-{workers}"), &body).await;
        assert_eq!(
            chunked.output["route"]["stage"], "chunks",
            "{:#}",
            chunked.output
        );
        let chunks = chunked.output["stage"]["chunks"]
            .as_u64()
            .expect("staged in chunks");
        let same = same_tables(&world, "tables/whole", &format!("tables/chunks-{workers}"));
        let stage_pass = chunked.states["StageChunks"];
        record(
            &setup,
            json!({
                "route": "chunks", "workers": workers, "chunks": chunks, "mb": mb,
                "states": chunked.states, "wall": chunked.wall,
                "stage_mb_per_s": mb / stage_pass,
                "stage_mb_per_s_per_worker": mb / stage_pass / workers.min(chunks as u32) as f64,
                "same_as_whole": same,
            }),
        );
        assert_eq!(same["same"], json!(true), "{same}");
    }
}

/// One execution, timed.
struct Timed {
    output: Value,
    /// Execution start to stop, seconds.
    wall: f64,
    /// Seconds spent in each state (entered to exited, summed over entries).
    states: BTreeMap<String, f64>,
}

/// Drops the file into `feed`'s folder, hands its notification to the trigger and waits for the
/// one execution it starts.
async fn run(world: &World, feed: &str, body: &[u8]) -> Timed {
    let before: HashSet<String> = world
        .executions()
        .await
        .into_iter()
        .map(|e| e.name)
        .collect();
    world
        .upload(&format!("incoming/{feed}/orders.csv"), body)
        .await;
    let batch = world.receive_notifications().await;
    let response = world.trigger(&batch).await;
    assert_eq!(response["batchItemFailures"], json!([]), "{response}");
    let started = world.executions().await;
    let execution = started
        .iter()
        .find(|e| !before.contains(&e.name))
        .expect("the trigger started an execution");
    let (status, error, output) = world.wait(&execution.execution_arn).await;
    assert_eq!(status, "SUCCEEDED", "{error:?}: {output:#}");
    let described = world
        .sfn
        .describe_execution()
        .execution_arn(&execution.execution_arn)
        .send()
        .await
        .unwrap();
    let stopped = described
        .stop_date()
        .expect("a finished execution has a stop date");
    Timed {
        output,
        wall: stopped.as_secs_f64() - described.start_date().as_secs_f64(),
        states: state_seconds(&history(world, &execution.execution_arn).await),
    }
}

async fn history(world: &World, arn: &str) -> Vec<HistoryEvent> {
    let mut events = Vec::new();
    let mut pages = world
        .sfn
        .get_execution_history()
        .execution_arn(arn)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        events.extend(page.unwrap().events);
    }
    events
}

/// Each state's time: from its StateEntered event to its StateExited event, summed.
fn state_seconds(events: &[HistoryEvent]) -> BTreeMap<String, f64> {
    let mut entered = BTreeMap::new();
    let mut seconds = BTreeMap::new();
    for event in events {
        let at = event.timestamp().as_secs_f64();
        if let Some(details) = event.state_entered_event_details() {
            entered.insert(details.name().to_string(), at);
        }
        if let Some(details) = event.state_exited_event_details() {
            let since = entered
                .remove(details.name())
                .expect("exited after entered");
            *seconds.entry(details.name().to_string()).or_insert(0.0) += at - since;
        }
    }
    seconds
}

/// Both Maps run at most `workers` children at once.
async fn with_map_concurrency(world: &World, workers: u32) {
    let mut definition: Value = serde_json::from_str(&world.definition).unwrap();
    for state in ["CountLines", "StageChunks"] {
        definition["States"][state]["MaxConcurrency"] = json!(workers);
    }
    world
        .sfn
        .update_state_machine()
        .state_machine_arn(&world.state_machine_arn)
        .definition(definition.to_string())
        .send()
        .await
        .unwrap();
}

/// bench/same_tables.py on two tables in moto's bucket.
fn same_tables(world: &World, first: &str, second: &str) -> Value {
    let location = |table: &str| format!("s3://{BUCKET}/{table}");
    let output = python("bench/same_tables.py")
        .args([location(first), location(second), KEY_COLUMN.to_string()])
        .arg(serde_json::to_string(&reader_options(&world.moto)).unwrap())
        .output()
        .unwrap();
    assert!(
        output.status.code().is_some_and(|code| code <= 1),
        "same_tables.py failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn record(setup: &Setup, line: Value) {
    println!("{line}");
    let mut results = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&setup.results)
        .unwrap();
    writeln!(results, "{line}").unwrap();
}
