//! The container tier's task: one step of one run, answered to the state that started it (see
//! `deltadrop_aws::task`).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    deltadrop_aws::task::main().await
}
