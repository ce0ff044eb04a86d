//! The upsert Lambda function, the commit lane's merger: see `deltadrop_aws::lane`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    deltadrop_aws::lambda::serve::<deltadrop_aws::handlers::UpsertHandler>().await
}
