//! The chunked stage as the state machine runs it, each chunk's work in its own process (as
//! each is its own Lambda invocation on AWS): PlanChunks, CountLines and StageChunks children
//! `workers` at a time, NumberChunks, CommitChunks (a Parquet file has no CountLines and
//! NumberChunks); each phase timed. The children are this binary's `chunk-child` command, with
//! the state machine's request as their input.

use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use deltadrop::steps::stage::chunks::{self, ChildResult, ChunkPlan, ChunksCommitted};
use deltadrop::steps::{Failure, RunInput};
use deltadrop_aws::handlers::{StageAction, StageRequest};
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};

use super::{create_table_from_first_rows, environment, mb, prepare, BenchResult, Layout};

/// Stages `file` through the chunk steps, the children `workers` processes at a time.
pub async fn run(file: &Path, work: &Path, workers: usize, chunk_mb: f64) -> BenchResult<Value> {
    let layout = Layout {
        chunk_mb: Some(chunk_mb),
        ..Layout::default()
    };
    let (env, run) = prepare(file, work, layout).await?;
    create_table_from_first_rows(&env, file).await?;
    let started = Instant::now();
    let plan = chunks::plan_chunks(&env, &run).await?;
    let planned = started.elapsed().as_secs_f64();
    // A Parquet file's footer numbers its chunks: no counting pass.
    let (numbered, counted) = match plan {
        ChunkPlan::Split { ranges, .. } => {
            let counts = children(
                work,
                chunk_mb,
                workers,
                &run,
                ranges.iter().map(|&r| StageAction::CountLines(r)),
            )
            .await?;
            let counted = started.elapsed().as_secs_f64();
            (
                chunks::number_chunks(&env, &run, counts).await?.items,
                counted,
            )
        }
        ChunkPlan::Numbered { items, .. } => (items, planned),
        ChunkPlan::ReadWhole { read_whole } => return Err(read_whole.into()),
    };
    let numbered_at = started.elapsed().as_secs_f64();
    let items = numbered.iter().map(|&item| StageAction::StageChunk(item));
    let staged = children(work, chunk_mb, workers, &run, items).await?;
    let staged_at = started.elapsed().as_secs_f64();
    let output = match chunks::commit_chunks(&env, &run, staged).await? {
        ChunksCommitted::Staged(output) => output,
        ChunksCommitted::ReadWhole { read_whole } => return Err(read_whole.into()),
    };
    let seconds = started.elapsed().as_secs_f64();
    Ok(json!({
        "rows": output.rows, "chunks": output.chunks, "workers": workers, "seconds": seconds,
        "mb_per_s": mb(output.bytes) / seconds,
        "mb_per_s_per_worker": mb(output.bytes) / seconds / workers as f64,
        "plan_seconds": planned, "count_seconds": counted - planned,
        "number_seconds": numbered_at - counted, "stage_seconds": staged_at - numbered_at,
        "commit_seconds": seconds - staged_at,
    }))
}

/// Runs one child process per action, `workers` at a time; their answers in order.
async fn children<T: serde::de::DeserializeOwned>(
    work: &Path,
    chunk_mb: f64,
    workers: usize,
    run: &RunInput,
    actions: impl Iterator<Item = StageAction>,
) -> BenchResult<Vec<Option<ChildResult<T>>>> {
    let exe = std::env::current_exe()?;
    let answers: Vec<BenchResult<Option<ChildResult<T>>>> = stream::iter(actions)
        .map(|action| {
            let request = serde_json::to_string(&StageRequest {
                run: run.clone(),
                action,
            });
            let exe = exe.clone();
            async move {
                let output = tokio::process::Command::new(exe)
                    .arg("chunk-child")
                    .arg(work)
                    .arg(chunk_mb.to_string())
                    .arg(request?)
                    .stderr(Stdio::inherit())
                    .output()
                    .await?;
                if !output.status.success() {
                    return Err(format!("a child stopped: {}", output.status).into());
                }
                Ok(serde_json::from_slice(&output.stdout)?)
            }
        })
        .buffered(workers.max(1))
        .collect()
        .await;
    answers.into_iter().collect()
}

/// One child: the request's action, its answer (or the failure it caught) printed as JSON.
pub async fn child(work: &Path, chunk_mb: f64, request: &str) -> BenchResult<Value> {
    let layout = Layout {
        chunk_mb: Some(chunk_mb),
        ..Layout::default()
    };
    let env = environment(work, layout)?;
    let request: StageRequest = serde_json::from_str(request)?;
    let answer = match request.action {
        StageAction::CountLines(range) => chunks::count_chunk_lines(&env, &request.run, range)
            .await
            .map(|lines| json!(lines)),
        StageAction::StageChunk(item) => chunks::stage_chunk(&env, &request.run, item)
            .await
            .map(|report| json!(report)),
        _ => return Err("a chunk child counts lines or stages a chunk".into()),
    };
    Ok(answer.unwrap_or_else(|e| json!({ "failure": Failure::from(&e) })))
}
