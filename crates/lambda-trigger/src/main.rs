//! The trigger Lambda function: see `deltadrop_aws::handlers::TriggerHandler`.

// The layout of the serve future (SQS batch → Step Functions calls, nested async blocks) is
// deeper than rustc's default query depth once the binary is built without delta-rs.
#![recursion_limit = "256"]

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    deltadrop_aws::lambda::serve::<deltadrop_aws::handlers::TriggerHandler>().await
}
