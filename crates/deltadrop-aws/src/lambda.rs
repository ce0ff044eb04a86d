//! The Lambda runtime loop shared by the five function binaries.

use std::time::{Duration, UNIX_EPOCH};

use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;

use crate::context::{AwsContext, Settings};
use crate::handlers::{handle_json, Handler};

/// Builds the clients once per container, then serves invocations with handler `H` (the
/// configuration is read per invocation, through a cache: see [`AwsContext::config`]).
pub async fn serve<H: Handler>() -> Result<(), lambda_runtime::Error> {
    // JSON logs when Lambda's log format is JSON; AWS_LAMBDA_LOG_LEVEL or RUST_LOG set the level.
    lambda_runtime::tracing::init_default_subscriber();
    let settings = Settings::from_env()?;
    let sdk = aws_config::load_from_env().await;
    let ctx = AwsContext::new(&sdk, &settings).await?;
    let ctx = &ctx;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = UNIX_EPOCH + Duration::from_millis(event.context.deadline);
        ctx.set_deadline(Some(deadline));
        handle_json::<H>(ctx, event.payload).await
    }))
    .await
}
