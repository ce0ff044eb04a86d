//! The notify Lambda function: see `deltadrop_aws::handlers::NotifyHandler`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    deltadrop_aws::lambda::serve::<deltadrop_aws::handlers::NotifyHandler>().await
}
