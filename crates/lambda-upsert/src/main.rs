//! The upsert Lambda function, the commit lane's merger: see `deltadrop_aws::lane`.

// The whole upsert (lane, batches, MERGE and its DataFusion plans) is one future, nested deeper
// than rustc's default layout query depth allows.
#![recursion_limit = "256"]

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    deltadrop_aws::lambda::serve::<deltadrop_aws::handlers::UpsertHandler>().await
}
