//! The container tier: one ECS Fargate task does one step of one file, with the same code the
//! step's Lambda function runs.
//!
//! - **stage**: the StageInContainer state starts the task with
//!   `arn:aws:states:::ecs:runTask.waitForTaskToken`, passing its task token and the run in the
//!   container's environment; the task stages the file with the stage function's handler.
//! - **upsert**: the commit lane's merger starts the task for a MERGE too large for it, holding
//!   the file's lane message ([`crate::handoff`]); the task merges it as the merger would, then
//!   lets the message (and its table's lane) go.
//!
//! Either way the task answers the waiting state's token with the step's output, or with its
//! error's stable name, which the state's Catch routes as it routes the function's. It sends
//! heartbeats meanwhile: a task that dies answers nothing, and the state's `HeartbeatSeconds`
//! ends the wait. When the state no longer waits (it timed out, the execution was stopped), the
//! task stops working at its next heartbeat.

use std::process::ExitCode;
use std::time::Duration;

use deltadrop::steps::{Failure, FailureName, RunInput};
use deltadrop::storage::ObjectStorage;
use deltadrop::Error;
use lambda_runtime::Diagnostic;
use serde_json::Value;

use crate::callback::{heartbeat, keep_alive, AbortOnDrop, Liveness, HEARTBEAT_INTERVAL};
use crate::context::{AwsContext, Settings};
use crate::handlers::{handle_json, StageHandler};
use crate::handoff::{self, Handoff};
use crate::lane::{merge_and_answer, Delivered, Heartbeats};

/// The state's task token (`$$.Task.Token`), for the stage.
pub const TOKEN_VARIABLE: &str = "DELTADROP_TASK_TOKEN";
/// The step to do (`stage`, `upsert`).
pub const STEP_VARIABLE: &str = "DELTADROP_TASK_STEP";
/// The run, as JSON (`States.JsonToString($.run)`), for the stage.
pub const RUN_VARIABLE: &str = "DELTADROP_TASK_RUN";
/// The handoff's key in the bucket, for the upsert.
pub const HANDOFF_VARIABLE: &str = "DELTADROP_TASK_HANDOFF";
/// The container's name in the task definition (template.yaml's ContainerTaskDefinition).
pub const CONTAINER_NAME: &str = "deltadrop";

/// Attempts at a stage that fails with an error the Stage state retries: a task's start costs a
/// minute, so it retries in place, as the state would.
const ATTEMPTS: u32 = 3;
/// The errors a stage task retries in place (its state has no Retry for them).
pub const RETRIED: [&str; 2] = ["StorageError", "DeltaError"];

/// What the task's exit code says when the state no longer waits for it.
const GONE_EXIT_CODE: u8 = 3;

/// Heartbeats that may fail in a row (a minute apart) before the task stops: by then the
/// StageInContainer state's `HeartbeatSeconds` (600) have passed, and it failed the file.
pub const SILENT_HEARTBEATS: u32 = 10;

/// One task's work, from its environment.
#[derive(Debug)]
pub enum TaskStep {
    /// The Stage state's work, for StageInContainer: the token to answer and the run.
    Stage {
        /// The state's task token.
        token: String,
        /// The run.
        run: RunInput,
    },
    /// A MERGE the merger handed over: where its handoff is.
    Upsert {
        /// The handoff's key in the bucket.
        handoff: String,
    },
}

impl TaskStep {
    /// Reads the task's environment; the error names the variable that is missing or wrong.
    pub fn from_env() -> Result<TaskStep, String> {
        Self::from_variables(|name| std::env::var(name).ok())
    }

    fn from_variables(variable: impl Fn(&str) -> Option<String>) -> Result<TaskStep, String> {
        let var = |name: &str| variable(name).ok_or_else(|| format!("{name} is not set"));
        match var(STEP_VARIABLE)?.as_str() {
            "stage" => Ok(TaskStep::Stage {
                token: var(TOKEN_VARIABLE)?,
                run: serde_json::from_str(&var(RUN_VARIABLE)?)
                    .map_err(|e| format!("{RUN_VARIABLE} is not a run: {e}"))?,
            }),
            "upsert" => Ok(TaskStep::Upsert {
                handoff: var(HANDOFF_VARIABLE)?,
            }),
            other => Err(format!(
                "{STEP_VARIABLE}: {other:?} is not a step the container tier does (stage, upsert)"
            )),
        }
    }
}

/// The container's main: reads the step, makes sure its state still waits, does the step,
/// answers the token. Exit code 0 when the answer was delivered (the step's failure included),
/// 1 when it was not, 2 when the environment is wrong, 3 when the state stopped waiting (or
/// could not be told for ten minutes that the task lives).
pub async fn main() -> ExitCode {
    lambda_runtime::tracing::init_default_subscriber();
    let step = match TaskStep::from_env() {
        Ok(step) => step,
        Err(e) => {
            tracing::error!(error = %e, "the task's environment is incomplete");
            return ExitCode::from(2);
        }
    };
    let ctx = match context().await {
        Ok(ctx) => ctx,
        Err(e) => {
            tracing::error!(error = %e, "the task cannot start");
            // Nothing can work, but a stage's state can still be told why.
            if let TaskStep::Stage { token, .. } = &step {
                let sfn = aws_sdk_sfn::Client::new(&aws_config::load_from_env().await);
                return answered(crate::callback::answer::<Value>(&sfn, token, &Err(e)).await);
            }
            return ExitCode::FAILURE;
        }
    };
    match step {
        TaskStep::Stage { token, run } => {
            let Some(_heartbeats) = still_waited_for(&ctx, &token).await else {
                return ExitCode::from(GONE_EXIT_CODE);
            };
            let result = stage(&ctx, &run).await;
            answered(crate::callback::answer(&ctx.sfn, &token, &result).await)
        }
        TaskStep::Upsert { handoff } => upsert(&ctx, &handoff).await,
    }
}

async fn context() -> Result<AwsContext, Error> {
    let settings = Settings::from_env()?;
    let sdk = aws_config::load_from_env().await;
    AwsContext::new(&sdk, &settings).await
}

fn answered(delivered: Result<(), ()>) -> ExitCode {
    match delivered {
        Ok(()) => ExitCode::SUCCESS,
        Err(()) => ExitCode::FAILURE,
    }
}

/// Heartbeats for `token` from now on, once one has found its state waiting (a task starts
/// minutes after its state: it may wait no more); `None` when it does not. The task stops when
/// its state no longer waits: Quarantine may have run, and writing on would leave files behind.
async fn still_waited_for(ctx: &AwsContext, token: &str) -> Option<AbortOnDrop> {
    if let Liveness::Gone(code) = heartbeat(&ctx.sfn, token).await {
        tracing::error!(
            code,
            "the state no longer waits for this task; not starting"
        );
        return None;
    }
    Some(keep_alive(
        ctx.sfn.clone(),
        vec![token.to_string()],
        Some(SILENT_HEARTBEATS),
        |why| {
            tracing::error!(why, "the state no longer waits for this task; stopping");
            std::process::exit(GONE_EXIT_CODE.into());
        },
    ))
}

/// Stages the run's file, retrying the errors the Stage state retries.
pub async fn stage(ctx: &AwsContext, run: &RunInput) -> Result<Value, Error> {
    let payload = serde_json::json!({ "run": run });
    let mut attempt = 1;
    loop {
        match handle_json::<StageHandler>(ctx, payload.clone()).await {
            Err(d) if attempt < ATTEMPTS && RETRIED.contains(&d.error_type.as_str()) => {
                tracing::warn!(attempt, error = %d.error_type, "retrying the step");
                tokio::time::sleep(Duration::from_secs(2u64.pow(attempt))).await;
                attempt += 1;
            }
            other => return other.map_err(from_diagnostic),
        }
    }
}

/// Merges the handed-over file as the merger would (answering its token), holding its lane
/// message meanwhile, then lets the message and its table's lane go. A task that could not
/// answer leaves the message to come back to the merger, which hands it over again: the
/// upload's record in the table keeps the MERGE once.
async fn upsert(ctx: &AwsContext, key: &str) -> ExitCode {
    let handoff: Handoff = match ctx.storage.read_all(key).await.and_then(|bytes| {
        serde_json::from_slice(&bytes).map_err(|e| Error::InvalidInput {
            message: format!("{key} is not a handoff: {e}"),
        })
    }) {
        Ok(handoff) => handoff,
        Err(e) => {
            // The message comes back to the merger, which writes the handoff anew.
            tracing::error!(error = %e, key, "cannot read the handoff");
            return ExitCode::FAILURE;
        }
    };
    // The lane is ours only while our delivery's hold works: a task that started late, after
    // the message came back and went to another task, must not merge beside it.
    if let Err(e) = handoff::hold(&ctx.sqs, &handoff, handoff::HOLD).await {
        tracing::error!(error = %e, "the lane message is no longer held for this task; stopping");
        return ExitCode::from(GONE_EXIT_CODE);
    }
    let done = match still_waited_for(ctx, &handoff.token).await {
        None => true,
        Some(_heartbeats) => {
            let _held = keep_holding(ctx.sqs.clone(), handoff.clone());
            // `_heartbeats` sends the token's heartbeats: the merge sends none of its own.
            let handed = vec![Delivered::handed(&handoff)];
            merge_and_answer(ctx, handed, Heartbeats::ByTheCaller)
                .await
                .is_empty()
        }
    };
    if !done {
        return ExitCode::FAILURE;
    }
    let deleted = ctx
        .sqs
        .delete_message()
        .queue_url(&handoff.queue_url)
        .receipt_handle(&handoff.receipt_handle)
        .send()
        .await;
    if let Err(e) = deleted {
        // It comes back after its hold: the merger finds the file answered (its execution no
        // longer waits, or the table records it).
        tracing::warn!(error = %e, "could not delete the lane message");
    }
    if let Err(e) = ctx.storage.delete_all(key).await {
        tracing::warn!(error = %e, key, "could not delete the handoff");
    }
    ExitCode::SUCCESS
}

/// Keeps the handed-over message in flight, every heartbeat, until dropped. The task stops
/// (before its commit, if it has not made it) when the hold is about to lapse: the message
/// would come back, and another task could merge the table beside this one.
fn keep_holding(sqs: aws_sdk_sqs::Client, handoff: Handoff) -> AbortOnDrop {
    AbortOnDrop::spawn(async move {
        let mut held_at = std::time::Instant::now();
        let mut every = tokio::time::interval(HEARTBEAT_INTERVAL);
        loop {
            every.tick().await;
            match handoff::hold(&sqs, &handoff, handoff::HOLD).await {
                Ok(()) => held_at = std::time::Instant::now(),
                Err(e) if held_at.elapsed() + 2 * HEARTBEAT_INTERVAL < handoff::HOLD => {
                    tracing::warn!(error = %e, "could not extend the lane message's hold; trying again");
                }
                Err(e) => {
                    tracing::error!(error = %e, "the lane message's hold lapses; stopping");
                    std::process::exit(GONE_EXIT_CODE.into());
                }
            }
        }
    })
}

/// The handler's error, as the name and message it reported.
fn from_diagnostic(d: Diagnostic) -> Error {
    Failure {
        error: FailureName::from(d.error_type.as_str()),
        cause: d.error_message,
    }
    .into_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_reads_its_step_and_names_what_is_missing() {
        let run = r#"{"run_id": "r", "key": "in/a.csv.gz", "feed": "f", "started_at": "2026-01-01T00:00:00Z"}"#;
        let with = |step: &str, run: &str| {
            let (step, run) = (step.to_string(), run.to_string());
            TaskStep::from_variables(move |name| match name {
                TOKEN_VARIABLE => Some("t/+=".into()),
                STEP_VARIABLE => Some(step.clone()),
                RUN_VARIABLE => Some(run.clone()),
                HANDOFF_VARIABLE => Some("_deltadrop/lane/m.json".into()),
                _ => None,
            })
        };
        match with("stage", run).unwrap() {
            TaskStep::Stage { token, run } => {
                assert_eq!((token.as_str(), run.key.as_str()), ("t/+=", "in/a.csv.gz"))
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(with("upsert", "").unwrap(), TaskStep::Upsert { handoff } if handoff == "_deltadrop/lane/m.json")
        );
        assert!(with("maintain", run)
            .unwrap_err()
            .contains("DELTADROP_TASK_STEP"));
        assert!(with("stage", "{")
            .unwrap_err()
            .contains("DELTADROP_TASK_RUN"));
        let none = TaskStep::from_variables(|_| None).unwrap_err();
        assert_eq!(none, "DELTADROP_TASK_STEP is not set");
    }

    #[test]
    fn a_handlers_error_keeps_its_name_and_message() {
        let e = from_diagnostic(Diagnostic {
            error_type: "InvalidValue".into(),
            error_message: "a.csv.gz: line 3, column 'amount'".into(),
        });
        assert_eq!(e.name(), "InvalidValue");
        assert_eq!(e.to_string(), "a.csv.gz: line 3, column 'amount'");
    }
}
