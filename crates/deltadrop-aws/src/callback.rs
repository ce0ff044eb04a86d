//! Answering a Step Functions task token: what the commit lane's merger and the container tier
//! share. A state that waits on a token (`.waitForTaskToken`) gets the work's output
//! (`SendTaskSuccess`) or its error's stable name (`SendTaskFailure`), which its Catch routes,
//! and heartbeats while the work runs.

use std::time::Duration;

use aws_sdk_sfn::error::ProvideErrorMetadata;
use deltadrop::bounded::{shorten, MAX_MESSAGE_CHARS};
use deltadrop::Error;
use serde::Serialize;

/// How often the work tells Step Functions that it is still running: well inside the waiting
/// states' `HeartbeatSeconds`.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);

/// The largest answer Step Functions accepts: a state's output is at most 256 KiB
/// (https://docs.aws.amazon.com/step-functions/latest/apireference/API_SendTaskSuccess.html).
pub const MAX_ANSWER_BYTES: usize = 262_144;

/// Step Functions' answers that mean the task no longer waits: the token is unknown or was
/// answered (`InvalidToken`), its task timed out or closed (`TaskTimedOut`), or it does not
/// exist (`TaskDoesNotExist`)
/// (https://docs.aws.amazon.com/step-functions/latest/apireference/API_SendTaskSuccess.html).
const GONE: [&str; 3] = ["InvalidToken", "TaskTimedOut", "TaskDoesNotExist"];

/// The code of an answer that means the task no longer waits.
pub fn gone(code: Option<&str>) -> Option<String> {
    code.filter(|c| GONE.contains(c)).map(str::to_string)
}

/// Whether a token's execution still waits for it.
pub enum Liveness {
    /// It waits.
    Alive,
    /// It is gone, with Step Functions' code.
    Gone(String),
    /// The heartbeat failed otherwise (throttled, unreachable): nobody knows.
    Unknown(String),
}

/// Sends one heartbeat, and finds out whether the token's execution still waits.
pub async fn heartbeat(sfn: &aws_sdk_sfn::Client, token: &str) -> Liveness {
    match sfn.send_task_heartbeat().task_token(token).send().await {
        Ok(_) => Liveness::Alive,
        Err(e) => match gone(e.code()) {
            Some(code) => Liveness::Gone(code),
            None => Liveness::Unknown(e.to_string()),
        },
    }
}

/// Heartbeats for `tokens` every [`HEARTBEAT_INTERVAL`] until the returned guard drops.
/// `on_lost` runs with the reason when a token's execution turns out to be gone, or when its
/// heartbeats have failed `give_up_after` times in a row (`None`: never), by which time the
/// waiting state's `HeartbeatSeconds` have passed.
pub fn keep_alive(
    sfn: aws_sdk_sfn::Client,
    tokens: Vec<String>,
    give_up_after: Option<u32>,
    on_lost: impl Fn(&str) + Send + 'static,
) -> AbortOnDrop {
    AbortOnDrop::spawn(async move {
        let mut failed_in_a_row = vec![0u32; tokens.len()];
        let mut every = tokio::time::interval(HEARTBEAT_INTERVAL);
        every.tick().await; // the first tick is now: the tokens were just told
        loop {
            every.tick().await;
            for (token, failed) in tokens.iter().zip(&mut failed_in_a_row) {
                match heartbeat(&sfn, token).await {
                    Liveness::Alive => *failed = 0,
                    Liveness::Gone(code) => on_lost(&code),
                    Liveness::Unknown(error) => {
                        *failed += 1;
                        tracing::warn!(%error, failed = *failed, "a heartbeat failed; working on");
                        if give_up_after.is_some_and(|limit| *failed >= limit) {
                            on_lost(&format!("{failed} heartbeats failed in a row: {error}"));
                        }
                    }
                }
            }
        }
    })
}

/// Stops a background task when dropped, however the work around it ends.
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    /// Runs `work` in the background until the guard drops.
    pub fn spawn(work: impl std::future::Future<Output = ()> + Send + 'static) -> AbortOnDrop {
        AbortOnDrop(tokio::spawn(work))
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Answers one token with the work's output or error. `Err` only when the answer may not have
/// arrived and should be sent again; a gone execution is not an error (its answer is dropped).
pub async fn answer<T: Serialize>(
    sfn: &aws_sdk_sfn::Client,
    token: &str,
    result: &Result<T, Error>,
) -> Result<(), ()> {
    // An output Step Functions would refuse is answered as the error it is.
    let answered = result.as_ref().map_err(Error::clone).and_then(|output| {
        let text = serde_json::to_string(output).map_err(|e| Error::internal(e.to_string()))?;
        if text.len() > MAX_ANSWER_BYTES {
            return Err(Error::internal(format!(
                "the output is {} bytes, more than Step Functions takes",
                text.len()
            )));
        }
        Ok(text)
    });
    let sent = match answered {
        Ok(text) => sfn
            .send_task_success()
            .task_token(token)
            .output(text)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| (e.code().map(str::to_string), e.to_string())),
        Err(error) => sfn
            .send_task_failure()
            .task_token(token)
            .error(error.name())
            .cause(shorten(&error.to_string(), MAX_MESSAGE_CHARS))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| (e.code().map(str::to_string), e.to_string())),
    };
    match sent {
        Ok(()) => Ok(()),
        Err((code, message)) => match gone(code.as_deref()) {
            Some(code) => {
                tracing::warn!(code, "the execution is gone; its answer is dropped");
                Ok(())
            }
            None => {
                tracing::error!(error = %message, "could not answer the execution");
                Err(())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_answers_that_mean_the_task_no_longer_waits_count_as_gone() {
        for code in GONE {
            assert_eq!(gone(Some(code)).as_deref(), Some(code));
        }
        for other in [None, Some("ThrottlingException"), Some("InvalidOutput")] {
            assert_eq!(gone(other), None);
        }
    }
}
