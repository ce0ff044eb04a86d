//! The Lambda runtime loop shared by the five function binaries.

use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;

use crate::context::{AwsContext, Settings};
use crate::handlers::{invoke, Function};

/// Builds the clients and reads the configuration once per container, then serves invocations.
pub async fn serve(function: Function) -> Result<(), lambda_runtime::Error> {
    // JSON logs when Lambda's log format is JSON; AWS_LAMBDA_LOG_LEVEL or RUST_LOG set the level.
    lambda_runtime::tracing::init_default_subscriber();
    let settings = Settings::from_env()?;
    let sdk = aws_config::load_from_env().await;
    let ctx = AwsContext::new(&sdk, &settings).await?;
    let ctx = &ctx;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        invoke(ctx, function, event.payload).await
    }))
    .await
}
