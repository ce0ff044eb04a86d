//! The Lambda functions as typed handlers (request → output) behind one JSON adapter
//! ([`handle_json`]) that maps a payload it cannot read to `InvalidInput`, logs the outcome inside
//! a span naming the run, and reports errors with the stable names Step Functions matches. Each
//! binary in `crates/lambda-*` serves one handler; the upsert handler exists only with the
//! `merge` feature, so a binary built without it cannot serve it.

use std::future::Future;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use deltadrop::bounded::{shorten, MAX_MESSAGE_CHARS};
#[cfg(feature = "delta")]
use deltadrop::steps::stage::chunks;
#[cfg(feature = "delta")]
use deltadrop::steps::StageOutput;
use deltadrop::steps::{
    self, ArchiveOutput, Failure, NotifyOutput, QuarantineOutput, Report, RunInput,
};
use deltadrop::Error;
use lambda_runtime::Diagnostic;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::Instrument;

use crate::context::AwsContext;
use crate::trigger;

/// The seven Lambda functions of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// Starts an execution per file from S3 notifications delivered by SQS.
    Trigger,
    /// The Stage state.
    Stage,
    /// The Archive and Quarantine states.
    Archive,
    /// The commit lane's merger, fed by the Upsert state's queue (needs the `merge` feature).
    Upsert,
    /// The NotifySuccess and NotifyFailure states.
    Notify,
    /// Table maintenance, on a schedule (needs the `merge` feature).
    Maintain,
    /// The stale-file watch, on a schedule.
    Watch,
}

impl Function {
    /// Every function, in pipeline order.
    pub const ALL: [Function; 7] = [
        Function::Trigger,
        Function::Stage,
        Function::Archive,
        Function::Upsert,
        Function::Notify,
        Function::Maintain,
        Function::Watch,
    ];

    /// The short name (`stage`), as in the `function` field of log lines and `crates/lambda-*`.
    pub fn name(self) -> &'static str {
        match self {
            Function::Trigger => "trigger",
            Function::Stage => "stage",
            Function::Archive => "archive",
            Function::Upsert => "upsert",
            Function::Notify => "notify",
            Function::Maintain => "maintain",
            Function::Watch => "watch",
        }
    }
}

/// One Lambda function: what it reads, what it answers, and the run it works on (for logs).
pub trait Handler {
    /// The function this handler is.
    const FUNCTION: Function;
    /// The invocation's payload, read from its JSON.
    type Request: DeserializeOwned + Send;
    /// What the function answers (for a step, the state's output).
    type Output: Serialize;

    /// Does the function's work for one invocation.
    fn handle(
        ctx: &AwsContext,
        request: Self::Request,
    ) -> impl Future<Output = Result<Self::Output, Error>> + Send;

    /// The run a request belongs to, to put in every log line of the invocation.
    fn run(_request: &Self::Request) -> Option<&RunInput> {
        None
    }

    /// The metrics an output reports (names from [`crate::metrics::METRICS`]).
    fn metrics(_output: &Self::Output) -> Vec<(&'static str, f64)> {
        Vec::new()
    }

    /// Whether the invocation is a whole step of its run, whose time is the step's
    /// `StepDuration`: not one part of the chunked stage (a chunk, a count, the plan).
    fn is_whole_step(_request: &Self::Request) -> bool {
        true
    }
}

/// The stage function's input: the run, and which part of the stage to do (none: the whole
/// file, as the Stage state asks). The other actions are the states of the chunked stage
/// ([`deltadrop::steps::stage::chunks`]).
#[cfg(feature = "delta")]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRequest {
    /// The run the trigger started.
    pub run: RunInput,
    /// What to do (`"plan_chunks"`, `{"count_lines": {...}}`...).
    #[serde(default)]
    pub action: StageAction,
}

/// What the stage function is asked to do.
#[cfg(feature = "delta")]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageAction {
    /// The Stage state: read the whole file.
    #[default]
    Whole,
    /// PlanChunks: decide whether to split the file, and prepare its chunks.
    PlanChunks,
    /// A child of CountLines: count one byte range's newlines.
    CountLines(chunks::ByteRange),
    /// NumberChunks: each chunk's first line, from CountLines' results.
    NumberChunks(Vec<Option<chunks::ChildResult<chunks::RangeLines>>>),
    /// A child of StageChunks: stage one chunk.
    StageChunk(chunks::ChunkItem),
    /// CommitChunks: put StageChunks' results together in one commit.
    CommitChunks(Vec<Option<chunks::ChildResult<chunks::ChunkReport>>>),
}

/// What the stage function answers, for whichever action it did.
#[cfg(feature = "delta")]
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum StageResponse {
    /// The Stage state's output.
    Staged(StageOutput),
    /// PlanChunks' output.
    Planned(chunks::ChunkPlan),
    /// A CountLines child's output.
    Counted(chunks::RangeLines),
    /// NumberChunks' output.
    Numbered(chunks::NumberedChunks),
    /// A StageChunks child's output.
    ChunkStaged(chunks::ChunkReport),
    /// CommitChunks' output (the Stage state's, or why the file is read whole).
    Committed(chunks::ChunksCommitted),
}

#[cfg(feature = "delta")]
impl StageResponse {
    /// The staging table's summary, when this action staged the file.
    fn staged(&self) -> Option<&StageOutput> {
        match self {
            StageResponse::Staged(output)
            | StageResponse::Committed(chunks::ChunksCommitted::Staged(output)) => Some(output),
            _ => None,
        }
    }
}

/// The Archive state's input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchiveRequest {
    /// The run whose file to archive.
    pub run: RunInput,
}

/// The Quarantine state's input: the run and the failure its `Catch` recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuarantineRequest {
    /// The run whose file to quarantine.
    pub run: RunInput,
    /// The failure, as Step Functions caught it (`Cause` may be Lambda's error JSON).
    pub failure: Failure,
}

/// The input of the NotifySuccess and NotifyFailure states.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotifyRequest {
    /// The execution's state document.
    pub report: Report,
    /// The execution's ARN, turned into a console link in the email.
    #[serde(default)]
    pub execution_arn: Option<String>,
}

/// The archive function serves two states, told apart by their input: Quarantine passes the
/// failure, Archive does not.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum MoveRequest {
    /// From the Quarantine state (it has a `failure`).
    Quarantine(QuarantineRequest),
    /// From the Archive state.
    Archive(ArchiveRequest),
}

/// The archive function's output, for whichever state called it.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum MoveOutput {
    /// The file and its error report are in quarantine.
    Quarantined(QuarantineOutput),
    /// The file is archived.
    Archived(ArchiveOutput),
}

/// The trigger function: an SQS batch of S3 notifications in, a partial batch response out.
pub struct TriggerHandler;
/// The stage function: [`steps::stage`] (needs the `delta` feature).
#[cfg(feature = "delta")]
pub struct StageHandler;
/// The archive function: [`steps::archive`], or [`steps::quarantine`] after a failure.
pub struct ArchiveHandler;
/// The upsert function: the commit lane's merger ([`crate::lane`]).
#[cfg(feature = "merge")]
pub use crate::lane::UpsertHandler;
/// The notify function: [`steps::notify`], with a link to the execution.
pub struct NotifyHandler;
/// The stale-file watch, on a schedule: files waiting under an incoming prefix too long.
pub struct WatchHandler;

/// The watch's input: how long a file may wait before it is named (the schedule passes none:
/// `DELTADROP_STALE_FILE_MINUTES`, default 60).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WatchRequest {
    /// Minutes a file may wait under an incoming prefix.
    #[serde(default)]
    pub threshold_minutes: Option<i64>,
}

impl Handler for WatchHandler {
    const FUNCTION: Function = Function::Watch;
    type Request = WatchRequest;
    type Output = deltadrop::watch::WatchOutput;

    async fn handle(ctx: &AwsContext, request: WatchRequest) -> Result<Self::Output, Error> {
        let minutes = request.threshold_minutes.unwrap_or_else(|| {
            std::env::var("DELTADROP_STALE_FILE_MINUTES")
                .ok()
                .and_then(|m| m.parse().ok())
                .unwrap_or(60)
        });
        let env = ctx.environment().await?;
        let (threshold, now) = (chrono::Duration::minutes(minutes), chrono::Utc::now());
        let found = deltadrop::watch::survey(&env, threshold, now).await?;
        // Before the email, which can fail: StaleFilesAlarm counts on the metric, and treats a
        // run without it (the watch failed before this) as breaching.
        crate::metrics::emit(
            "all",
            Function::Watch.name(),
            &[
                ("StaleFiles", found.stale.len() as f64),
                ("OldestIncomingMinutes", found.oldest_minutes as f64),
            ],
        );
        Ok(deltadrop::watch::report(&env, found, threshold, now).await?)
    }
}

/// Table maintenance, on a schedule (not a state of the state machine).
#[cfg(feature = "merge")]
pub struct MaintainHandler;

/// The maintain function's input: a feed whose table to maintain, or none to list the feeds (the
/// maintenance state machine then maintains each table in its own task).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MaintainRequest {
    /// The feed whose table to maintain.
    #[serde(default)]
    pub feed: Option<String>,
}

/// What the maintain function answers.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum MaintainResponse {
    /// Without a feed: every feed, for the state machine's Map.
    Feeds {
        /// The feeds' names, in configuration order.
        feeds: Vec<String>,
    },
    /// What maintenance did to one table (`null`: the feed has no table yet).
    #[cfg(feature = "merge")]
    Table(Option<deltadrop::maintain::MaintainOutput>),
}

#[cfg(feature = "merge")]
impl Handler for MaintainHandler {
    const FUNCTION: Function = Function::Maintain;
    type Request = MaintainRequest;
    type Output = MaintainResponse;

    async fn handle(ctx: &AwsContext, request: MaintainRequest) -> Result<MaintainResponse, Error> {
        let env = ctx.environment().await?;
        let Some(name) = &request.feed else {
            let feeds = env.config.feeds.iter().map(|f| f.name.clone()).collect();
            return Ok(MaintainResponse::Feeds { feeds });
        };
        let feed = env.config.feed_named(name)?;
        Ok(MaintainResponse::Table(
            deltadrop::maintain::maintain(&env, feed).await?,
        ))
    }
}

impl Handler for TriggerHandler {
    const FUNCTION: Function = Function::Trigger;
    type Request = SqsEvent;
    type Output = SqsBatchResponse;

    async fn handle(ctx: &AwsContext, batch: SqsEvent) -> Result<SqsBatchResponse, Error> {
        let state_machine_arn =
            ctx.settings
                .state_machine_arn
                .as_deref()
                .ok_or_else(|| Error::ConfigError {
                    field: "STATE_MACHINE_ARN".into(),
                    message: "the trigger needs the state machine's ARN in its environment".into(),
                })?;
        // The trigger may run without a configuration: S3's test event needs none.
        let config = ctx.config().await;
        let trigger = trigger::Trigger {
            config: config.as_deref(),
            data_bucket: &ctx.settings.bucket,
            sfn: &ctx.sfn,
            state_machine_arn,
            container_tier: ctx.settings.container_tier,
        };
        let (response, triggered) = trigger.handle_batch(&batch).await;
        tracing::info!(
            ?triggered,
            failures = response.batch_item_failures.len(),
            "trigger batch done"
        );
        Ok(response)
    }
}

#[cfg(feature = "delta")]
impl Handler for StageHandler {
    const FUNCTION: Function = Function::Stage;
    type Request = StageRequest;
    type Output = StageResponse;

    async fn handle(ctx: &AwsContext, request: StageRequest) -> Result<StageResponse, Error> {
        let (env, run) = (&ctx.environment().await?, &request.run);
        let response = match request.action {
            StageAction::Whole => StageResponse::Staged(steps::stage(env, run).await?),
            StageAction::PlanChunks => StageResponse::Planned(chunks::plan_chunks(env, run).await?),
            StageAction::CountLines(range) => {
                StageResponse::Counted(chunks::count_chunk_lines(env, run, range).await?)
            }
            StageAction::NumberChunks(counts) => {
                StageResponse::Numbered(chunks::number_chunks(env, run, counts).await?)
            }
            StageAction::StageChunk(item) => {
                StageResponse::ChunkStaged(chunks::stage_chunk(env, run, item).await?)
            }
            StageAction::CommitChunks(results) => {
                StageResponse::Committed(chunks::commit_chunks(env, run, results).await?)
            }
        };
        if let Some(output) = response.staged() {
            crate::metrics::emit_expectations(&run.feed, &output.expectations);
        }
        Ok(response)
    }

    fn is_whole_step(request: &StageRequest) -> bool {
        matches!(request.action, StageAction::Whole)
    }

    fn metrics(response: &StageResponse) -> Vec<(&'static str, f64)> {
        let Some(output) = response.staged() else {
            return Vec::new();
        };
        let mut values = vec![
            ("RowsStaged", output.rows as f64),
            ("BytesStaged", output.bytes as f64),
        ];
        // Only a file that set rows aside reports them: a feed that never does is not billed
        // for the metric.
        if let Some(rejects) = &output.rejects {
            values.push(("RowsRejected", rejects.rows as f64));
        }
        values
    }

    fn run(request: &StageRequest) -> Option<&RunInput> {
        Some(&request.run)
    }
}

impl Handler for ArchiveHandler {
    const FUNCTION: Function = Function::Archive;
    type Request = MoveRequest;
    type Output = MoveOutput;

    async fn handle(ctx: &AwsContext, request: MoveRequest) -> Result<MoveOutput, Error> {
        let env = ctx.environment().await?;
        Ok(match request {
            MoveRequest::Quarantine(q) => {
                let failure = from_step_functions(q.failure);
                MoveOutput::Quarantined(steps::quarantine(&env, &q.run, &failure).await?)
            }
            MoveRequest::Archive(a) => MoveOutput::Archived(steps::archive(&env, &a.run).await?),
        })
    }

    fn metrics(output: &MoveOutput) -> Vec<(&'static str, f64)> {
        match output {
            MoveOutput::Quarantined(_) => vec![("FilesQuarantined", 1.0)],
            MoveOutput::Archived(_) => Vec::new(),
        }
    }

    fn run(request: &MoveRequest) -> Option<&RunInput> {
        match request {
            MoveRequest::Quarantine(q) => Some(&q.run),
            MoveRequest::Archive(a) => Some(&a.run),
        }
    }
}

impl Handler for NotifyHandler {
    const FUNCTION: Function = Function::Notify;
    type Request = NotifyRequest;
    type Output = NotifyOutput;

    async fn handle(ctx: &AwsContext, mut request: NotifyRequest) -> Result<NotifyOutput, Error> {
        if let Some(arn) = &request.execution_arn {
            request.report.execution_url = Some(console_url(&ctx.region, arn));
        }
        request.report.failure = request.report.failure.map(from_step_functions);
        steps::notify(&ctx.environment().await?, &request.report).await
    }

    fn run(request: &NotifyRequest) -> Option<&RunInput> {
        request.report.run.as_ref()
    }
}

/// Step Functions hands a `Catch` the failed Lambda's error as JSON in `Cause`
/// (`{"errorType": ..., "errorMessage": ...}`); the steps, the report beside a quarantined file
/// and the email get the message, as they do locally.
pub fn from_step_functions(mut failure: Failure) -> Failure {
    let message = serde_json::from_str::<Value>(&failure.cause)
        .ok()
        .and_then(|v| v.get("errorMessage")?.as_str().map(str::to_string));
    if let Some(message) = message {
        failure.cause = message;
    }
    failure
}

/// The error Lambda reports: `error_type` is the stable name Step Functions matches.
pub fn diagnostic(e: &Error) -> Diagnostic {
    Diagnostic {
        error_type: e.name().to_string(),
        error_message: shorten(&e.to_string(), MAX_MESSAGE_CHARS),
    }
}

/// The Step Functions console page of an execution.
pub fn console_url(region: &str, execution_arn: &str) -> String {
    format!("https://{region}.console.aws.amazon.com/states/home?region={region}#/v2/executions/details/{execution_arn}")
}

/// Runs handler `H` on a JSON payload: the one adapter between Lambda's JSON and the typed
/// handlers. Every log line of the invocation carries the run's id, feed and key.
pub async fn handle_json<H: Handler>(
    ctx: &AwsContext,
    payload: Value,
) -> Result<Value, Diagnostic> {
    let function = H::FUNCTION.name();
    let request: H::Request = match serde_json::from_value(payload) {
        Ok(request) => request,
        Err(e) => {
            let e = Error::InvalidInput {
                message: format!("the {function} function got input it cannot read: {e}"),
            };
            tracing::error!(function, error = e.name(), message = %e, "failed");
            return Err(diagnostic(&e));
        }
    };
    let feed = H::run(&request).map(|run| run.feed.clone());
    let whole_step = H::is_whole_step(&request);
    let started = std::time::Instant::now();
    let span = match H::run(&request) {
        Some(run) => {
            tracing::info_span!("run", function, run_id = %run.run_id, feed = %run.feed, key = %run.key)
        }
        None => tracing::info_span!("run", function),
    };
    async move {
        let output = H::handle(ctx, request).await.and_then(|output| {
            if let Some(feed) = &feed {
                let mut values = H::metrics(&output);
                if whole_step {
                    values.push(("StepDuration", started.elapsed().as_millis() as f64));
                }
                crate::metrics::emit(feed, function, &values);
            }
            serde_json::to_value(output).map_err(|e| Error::internal(e.to_string()))
        });
        match output {
            Ok(value) => {
                tracing::info!(output = %value, "done");
                Ok(value)
            }
            Err(e) => {
                tracing::error!(error = e.name(), message = %e, "failed");
                Err(diagnostic(&e))
            }
        }
    }
    .instrument(span)
    .await
}

/// Runs the named function on one payload (the test harness serves every function from one
/// process; a Lambda binary serves one handler through [`crate::lambda::serve`]).
#[cfg(feature = "merge")]
pub async fn invoke(
    ctx: &AwsContext,
    function: Function,
    payload: Value,
) -> Result<Value, Diagnostic> {
    match function {
        Function::Trigger => handle_json::<TriggerHandler>(ctx, payload).await,
        Function::Stage => handle_json::<StageHandler>(ctx, payload).await,
        Function::Archive => handle_json::<ArchiveHandler>(ctx, payload).await,
        Function::Upsert => handle_json::<UpsertHandler>(ctx, payload).await,
        Function::Notify => handle_json::<NotifyHandler>(ctx, payload).await,
        Function::Maintain => handle_json::<MaintainHandler>(ctx, payload).await,
        Function::Watch => handle_json::<WatchHandler>(ctx, payload).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catch_cause_becomes_the_message_and_names_keep_their_kind() {
        let failure: Failure = serde_json::from_value(serde_json::json!({
            "Error": "MalformedFile",
            "Cause": r#"{"errorType":"MalformedFile","errorMessage":"a.csv, line 2: expected 2 fields, found 3"}"#
        }))
        .unwrap();
        let failure = from_step_functions(failure);
        assert_eq!(failure.cause, "a.csv, line 2: expected 2 fields, found 3");
        assert_eq!(failure.error.to_string(), "MalformedFile");
        let timeout: Failure =
            serde_json::from_value(serde_json::json!({"Error": "States.Timeout", "Cause": "x"}))
                .unwrap();
        assert_eq!(from_step_functions(timeout).cause, "x");
    }

    #[test]
    fn the_archive_function_tells_quarantine_from_archive_by_its_input() {
        let run = serde_json::json!({"run_id": "r", "key": "k", "feed": "f", "started_at": "2026-01-01T00:00:00Z"});
        let archive: MoveRequest =
            serde_json::from_value(serde_json::json!({ "run": run })).unwrap();
        assert!(matches!(archive, MoveRequest::Archive(_)));
        let quarantine: MoveRequest = serde_json::from_value(
            serde_json::json!({ "run": run, "failure": {"Error": "DeltaError", "Cause": "c"} }),
        )
        .unwrap();
        assert!(matches!(quarantine, MoveRequest::Quarantine(_)));
    }
}
