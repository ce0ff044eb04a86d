//! The stale-file watch Lambda function: see `deltadrop_aws::handlers::WatchHandler`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    deltadrop_aws::lambda::serve::<deltadrop_aws::handlers::WatchHandler>().await
}
