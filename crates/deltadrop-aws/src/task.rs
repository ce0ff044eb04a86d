//! The container tier: one ECS Fargate task does one step of one run, with the same handler the
//! step's Lambda function serves. The state machine starts it with
//! `arn:aws:states:::ecs:runTask.waitForTaskToken`, passing the state's task token and the run in
//! the container's environment; the task answers the token with the step's output, or with its
//! error's stable name, which the state's Catch routes as it routes the function's. It sends
//! heartbeats meanwhile: a task that dies answers nothing, and the state's `HeartbeatSeconds`
//! ends the wait. When the state no longer waits (it timed out, the execution was stopped), the
//! task stops working at its next heartbeat.

use std::process::ExitCode;
use std::time::Duration;

use deltadrop::steps::{Failure, FailureName, RunInput};
use deltadrop::Error;
use lambda_runtime::Diagnostic;
use serde_json::Value;

use crate::callback::{heartbeat, keep_alive, Liveness};
use crate::context::{AwsContext, Settings};
use crate::handlers::{handle_json, StageHandler};

/// The state's task token (`$$.Task.Token`).
pub const TOKEN_VARIABLE: &str = "DELTADROP_TASK_TOKEN";
/// The step to do (`stage`).
pub const STEP_VARIABLE: &str = "DELTADROP_TASK_STEP";
/// The run, as JSON (`States.JsonToString($.run)`).
pub const RUN_VARIABLE: &str = "DELTADROP_TASK_RUN";

/// Attempts at a step that fails with an error the step's Lambda state retries: a task's start
/// costs a minute, so it retries in place, as the state would.
const ATTEMPTS: u32 = 3;
/// The errors a task retries in place (its state has no Retry for them).
pub const RETRIED: [&str; 2] = ["StorageError", "DeltaError"];

/// What the task's exit code says when the state no longer waits for it.
const GONE_EXIT_CODE: u8 = 3;

/// Heartbeats that may fail in a row (a minute apart) before the task stops: by then the
/// StageInContainer state's `HeartbeatSeconds` (600) have passed, and it failed the file.
pub const SILENT_HEARTBEATS: u32 = 10;

/// The steps the container tier does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStep {
    /// The Stage state's work (the stage function's handler), for StageInContainer.
    Stage,
}

/// One task's work, from its environment.
#[derive(Debug)]
pub struct TaskRequest {
    /// The token to answer.
    pub token: String,
    /// The step.
    pub step: TaskStep,
    /// The run.
    pub run: RunInput,
}

impl TaskRequest {
    /// Reads the task's environment; the error names the variable that is missing or wrong.
    pub fn from_env() -> Result<TaskRequest, String> {
        Self::from_variables(|name| std::env::var(name).ok())
    }

    fn from_variables(variable: impl Fn(&str) -> Option<String>) -> Result<TaskRequest, String> {
        let var = |name: &str| variable(name).ok_or_else(|| format!("{name} is not set"));
        let token = var(TOKEN_VARIABLE)?;
        let step = match var(STEP_VARIABLE)?.as_str() {
            "stage" => TaskStep::Stage,
            other => {
                return Err(format!(
                    "{STEP_VARIABLE}: {other:?} is not a step the container tier does (stage)"
                ))
            }
        };
        let run = serde_json::from_str(&var(RUN_VARIABLE)?)
            .map_err(|e| format!("{RUN_VARIABLE} is not a run: {e}"))?;
        Ok(TaskRequest { token, step, run })
    }

    /// The step's input, as its Lambda state gives it.
    fn payload(&self) -> Value {
        serde_json::json!({ "run": self.run })
    }
}

/// The container's main: reads the request, makes sure its state still waits, does the step
/// (retrying what its state would retry), answers the token. Exit code 0 when the answer was
/// delivered (the step's failure included), 1 when it was not, 2 when the environment is wrong,
/// 3 when the state stopped waiting (or could not be told for ten minutes that the task lives).
pub async fn main() -> ExitCode {
    lambda_runtime::tracing::init_default_subscriber();
    let request = match TaskRequest::from_env() {
        Ok(request) => request,
        Err(e) => {
            tracing::error!(error = %e, "the task's environment is incomplete");
            return ExitCode::from(2);
        }
    };
    let ctx = match context().await {
        Ok(ctx) => ctx,
        Err(e) => {
            // Nothing can work, but the state can still be told why.
            let sfn = aws_sdk_sfn::Client::new(&aws_config::load_from_env().await);
            return answered(crate::callback::answer::<Value>(&sfn, &request.token, &Err(e)).await);
        }
    };
    // A task starts minutes after its state: it may wait no more (stopped, timed out).
    if let Liveness::Gone(code) = heartbeat(&ctx.sfn, &request.token).await {
        tracing::error!(
            code,
            "the state no longer waits for this task; not starting"
        );
        return ExitCode::from(GONE_EXIT_CODE);
    }
    let _heartbeats = keep_alive(
        ctx.sfn.clone(),
        vec![request.token.clone()],
        Some(SILENT_HEARTBEATS),
        |why| {
            // Quarantine may have run: writing on could leave files behind it.
            tracing::error!(why, "the state no longer waits for this task; stopping");
            std::process::exit(GONE_EXIT_CODE.into());
        },
    );
    let result = run(&ctx, &request).await;
    answered(crate::callback::answer(&ctx.sfn, &request.token, &result).await)
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

/// Does the step, retrying the errors its Lambda state retries.
pub async fn run(ctx: &AwsContext, request: &TaskRequest) -> Result<Value, Error> {
    let mut attempt = 1;
    loop {
        let result = match request.step {
            TaskStep::Stage => handle_json::<StageHandler>(ctx, request.payload()).await,
        };
        match result {
            Err(d) if attempt < ATTEMPTS && RETRIED.contains(&d.error_type.as_str()) => {
                tracing::warn!(attempt, error = %d.error_type, "retrying the step");
                tokio::time::sleep(Duration::from_secs(2u64.pow(attempt))).await;
                attempt += 1;
            }
            other => return other.map_err(from_diagnostic),
        }
    }
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
    fn a_task_reads_its_step_and_run_and_names_what_is_missing() {
        let run = r#"{"run_id": "r", "key": "in/a.csv.gz", "feed": "f", "started_at": "2026-01-01T00:00:00Z"}"#;
        let with = |step: &str, run: &str| {
            let (step, run) = (step.to_string(), run.to_string());
            TaskRequest::from_variables(move |name| match name {
                TOKEN_VARIABLE => Some("t/+=".into()),
                STEP_VARIABLE => Some(step.clone()),
                RUN_VARIABLE => Some(run.clone()),
                _ => None,
            })
        };
        let request = with("stage", run).unwrap();
        assert_eq!(
            (request.step, request.token.as_str()),
            (TaskStep::Stage, "t/+=")
        );
        assert_eq!(request.payload()["run"]["key"], "in/a.csv.gz");
        assert!(with("upsert", run)
            .unwrap_err()
            .contains("DELTADROP_TASK_STEP"));
        assert!(with("stage", "{")
            .unwrap_err()
            .contains("DELTADROP_TASK_RUN"));
        let none = TaskRequest::from_variables(|_| None).unwrap_err();
        assert_eq!(none, "DELTADROP_TASK_TOKEN is not set");
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
