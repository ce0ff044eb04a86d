//! The Lambda functions as plain async functions: JSON in, JSON out, errors with the stable
//! names Step Functions matches. The Lambda runtime and the end-to-end test both call
//! [`invoke`].

use aws_lambda_events::event::sqs::SqsEvent;
use deltadrop::bounded::{shorten, MAX_MESSAGE_CHARS};
use deltadrop::steps::{self, Failure, Report, RunInput, StageOutput};
use deltadrop::Error;
use lambda_runtime::Diagnostic;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::context::AwsContext;
use crate::trigger;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Trigger,
    Stage,
    Archive,
    Upsert,
    Notify,
}

impl Function {
    pub const ALL: [Function; 5] = [
        Function::Trigger,
        Function::Stage,
        Function::Archive,
        Function::Upsert,
        Function::Notify,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Function::Trigger => "trigger",
            Function::Stage => "stage",
            Function::Archive => "archive",
            Function::Upsert => "upsert",
            Function::Notify => "notify",
        }
    }
}

/// The Stage function's input: the execution input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRequest {
    pub run: RunInput,
}

/// The Archive function archives, or quarantines when a failure is given.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArchiveRequest {
    pub run: RunInput,
    #[serde(default)]
    pub failure: Option<Failure>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpsertRequest {
    pub run: RunInput,
    pub stage: StageOutput,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotifyRequest {
    pub report: Report,
    #[serde(default)]
    pub execution_arn: Option<String>,
}

/// The error Lambda reports: `error_type` is the stable name Step Functions matches.
pub fn diagnostic(e: &Error) -> Diagnostic {
    Diagnostic {
        error_type: e.name().to_string(),
        error_message: shorten(&e.to_string(), MAX_MESSAGE_CHARS),
    }
}

fn parse<T: DeserializeOwned>(function: Function, payload: Value) -> Result<T, Error> {
    serde_json::from_value(payload).map_err(|e| Error::InvalidInput {
        message: format!(
            "the {} function got input it cannot read: {e}",
            function.name()
        ),
    })
}

fn output(value: impl Serialize) -> Result<Value, Error> {
    serde_json::to_value(value).map_err(|e| Error::InvalidInput {
        message: e.to_string(),
    })
}

/// The Step Functions console page of an execution.
pub fn console_url(region: &str, execution_arn: &str) -> String {
    format!("https://{region}.console.aws.amazon.com/states/home?region={region}#/v2/executions/details/{execution_arn}")
}

async fn run(ctx: &AwsContext, function: Function, payload: Value) -> Result<Value, Error> {
    // The steps read the configuration on every invocation (cached for a bounded time); the
    // trigger may run without one.
    let env = || ctx.environment();
    match function {
        Function::Trigger => run_trigger(ctx, parse(function, payload)?).await,
        Function::Stage => {
            let request: StageRequest = parse(function, payload)?;
            output(steps::stage(&env().await?, &request.run).await?)
        }
        Function::Archive => {
            let request: ArchiveRequest = parse(function, payload)?;
            let env = env().await?;
            match &request.failure {
                Some(failure) => output(steps::quarantine(&env, &request.run, failure).await?),
                None => output(steps::archive(&env, &request.run).await?),
            }
        }
        Function::Upsert => upsert(&env().await?, parse(function, payload)?).await,
        Function::Notify => {
            let mut request: NotifyRequest = parse(function, payload)?;
            if let Some(arn) = &request.execution_arn {
                request.report.execution_url = Some(console_url(&ctx.region, arn));
            }
            output(steps::notify(&env().await?, &request.report).await?)
        }
    }
}

async fn run_trigger(ctx: &AwsContext, batch: SqsEvent) -> Result<Value, Error> {
    let state_machine_arn =
        ctx.settings
            .state_machine_arn
            .as_deref()
            .ok_or_else(|| Error::ConfigError {
                field: "STATE_MACHINE_ARN".into(),
                message: "the trigger needs the state machine's ARN in its environment".into(),
            })?;
    let config = ctx.config().await;
    let trigger = trigger::Trigger {
        config: config.as_deref(),
        data_bucket: &ctx.settings.bucket,
        sfn: &ctx.sfn,
        state_machine_arn,
    };
    let (response, triggered) = trigger.handle_batch(&batch).await;
    tracing::info!(
        ?triggered,
        failures = response.batch_item_failures.len(),
        "trigger batch done"
    );
    output(response)
}

#[cfg(feature = "merge")]
async fn upsert(env: &deltadrop::Environment, request: UpsertRequest) -> Result<Value, Error> {
    output(steps::upsert(env, &request.run, &request.stage).await?)
}

/// Only the upsert function's binary is built with MERGE; a deployment that points the Upsert
/// state at another binary gets this error instead of a crash.
#[cfg(not(feature = "merge"))]
async fn upsert(_: &deltadrop::Environment, _: UpsertRequest) -> Result<Value, Error> {
    Err(Error::InvalidInput {
        message: "this binary was built without the `merge` feature: the Upsert state must invoke \
                  the upsert function"
            .into(),
    })
}

/// Runs one function on one payload, logging the outcome.
pub async fn invoke(
    ctx: &AwsContext,
    function: Function,
    payload: Value,
) -> Result<Value, Diagnostic> {
    match run(ctx, function, payload).await {
        Ok(value) => {
            tracing::info!(function = function.name(), output = %value, "done");
            Ok(value)
        }
        Err(e) => {
            tracing::error!(function = function.name(), error = e.name(), message = %e, "failed");
            Err(diagnostic(&e))
        }
    }
}
