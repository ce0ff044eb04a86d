//! The maintain Lambda function: see `deltadrop_aws::handlers::MaintainHandler`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    deltadrop_aws::lambda::serve::<deltadrop_aws::handlers::MaintainHandler>().await
}
