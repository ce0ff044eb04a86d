//! A MERGE handed from the commit lane's merger to the container tier, with the lane held.
//!
//! A MERGE larger than the upsert function takes fails there as `MergeInContainer`; the state
//! machine's UpsertInContainer state sends the file to the lane again, marked for the
//! container tier, and it waits in its table's message group like any other. The merger that
//! receives it does not merge it: it writes the message's token, file and receipt handle beside
//! the tables (`_deltadrop/lane/<message id>.json`: a token alone may fill ECS's 8192 characters
//! of overrides), keeps the message in flight (ChangeMessageVisibility) and starts a task with
//! the key. While the message is in flight SQS hands out no other message of its group: the
//! task is the table's only writer, as the merger would have been
//! (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/FIFO-queues-understanding-logic.html).
//! The task keeps the message in flight while it merges, answers the token, then deletes the
//! message, which lets the group go. A task that dies lets the message come back after its
//! visibility timeout; the merger then finds the execution still waiting (and hands it over
//! again) or gone (and drops it), and the upload's record in the table keeps the MERGE once.
//!
//! Lambda's event source mapping leaves a message its function reported as failed in flight
//! until its visibility timeout ends
//! (https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html): the merger
//! reports the handed-over message (and the later ones of its group in the batch) as failed,
//! so that the mapping does not delete it.

use std::time::Duration;

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, ContainerOverride, KeyValuePair, LaunchType,
    NetworkConfiguration, TaskOverride,
};
use deltadrop::route::TaskSize;
use deltadrop::steps::{RunInput, StageOutput};
use deltadrop::storage::ObjectStorage;
use deltadrop::Error;
use serde::{Deserialize, Serialize};

use crate::context::AwsContext;

/// How long a handed-over message stays in flight past the last time its holder extended it:
/// what a dead task costs its table's lane before the merger sees the message again.
pub const HOLD: Duration = Duration::from_secs(900);

/// The first hold, at the hand-over: long enough for a Fargate task to start (pull the image,
/// attach its network interface) and take the hold over.
pub const FIRST_HOLD: Duration = Duration::from_secs(1800);

/// Where the merger starts container tasks: template.yaml's ECS resources, from the upsert
/// function's environment.
#[derive(Debug, Clone)]
pub struct ContainerRun {
    /// `DELTADROP_CONTAINER_CLUSTER`: the cluster's ARN.
    pub cluster: String,
    /// `DELTADROP_CONTAINER_TASK_FAMILY`: the task definition's family (its latest revision).
    pub task_family: String,
    /// `DELTADROP_CONTAINER_SUBNETS`: comma-separated subnet ids.
    pub subnets: Vec<String>,
    /// `DELTADROP_CONTAINER_SECURITY_GROUP`.
    pub security_group: String,
    /// `DELTADROP_CONTAINER_ASSIGN_PUBLIC_IP`: `ENABLED` or `DISABLED`.
    pub assign_public_ip: bool,
    /// `DELTADROP_LANE_QUEUE_URL`: the lane queue, whose messages the task deletes.
    pub lane_queue_url: String,
}

impl ContainerRun {
    /// From the environment; `None` when `DELTADROP_CONTAINER_CLUSTER` is unset or empty.
    pub fn from_env() -> Option<ContainerRun> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Some(ContainerRun {
            cluster: var("DELTADROP_CONTAINER_CLUSTER")?,
            task_family: var("DELTADROP_CONTAINER_TASK_FAMILY")?,
            subnets: var("DELTADROP_CONTAINER_SUBNETS")?
                .split(',')
                .map(str::to_string)
                .collect(),
            security_group: var("DELTADROP_CONTAINER_SECURITY_GROUP")?,
            assign_public_ip: var("DELTADROP_CONTAINER_ASSIGN_PUBLIC_IP").as_deref()
                == Some("ENABLED"),
            lane_queue_url: var("DELTADROP_LANE_QUEUE_URL")?,
        })
    }
}

/// What the task needs to merge one file in its lane's place.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Handoff {
    /// The UpsertInContainer state's task token.
    pub token: String,
    /// The file's run.
    pub run: RunInput,
    /// Its Stage state's output.
    pub stage: StageOutput,
    /// The lane queue.
    pub queue_url: String,
    /// The handed-over message's receipt handle, to keep it in flight and then delete it.
    pub receipt_handle: String,
}

/// Where the handoff of one delivery of a lane message is kept.
pub fn handoff_key(delivery: &str) -> String {
    format!("_deltadrop/lane/{delivery}.json")
}

/// Hands the message's file to a container task of `size`: writes the handoff, keeps the
/// message in flight, starts the task. An error leaves the message to come back (and be handed
/// over again) at the end of its visibility timeout.
pub async fn hand_over(
    ctx: &AwsContext,
    run: &ContainerRun,
    delivery: &str,
    handoff: &Handoff,
    size: &TaskSize,
) -> Result<(), Error> {
    let key = handoff_key(delivery);
    let body = serde_json::to_vec(handoff).map_err(|e| Error::internal(e.to_string()))?;
    ctx.storage.put(&key, body).await?;
    hold(&ctx.sqs, handoff, FIRST_HOLD).await?;
    let network = AwsVpcConfiguration::builder()
        .set_subnets(Some(run.subnets.clone()))
        .security_groups(&run.security_group)
        .assign_public_ip(if run.assign_public_ip {
            AssignPublicIp::Enabled
        } else {
            AssignPublicIp::Disabled
        })
        .build()
        .map_err(|e| Error::internal(e.to_string()))?;
    let variable =
        |name: &str, value: &str| KeyValuePair::builder().name(name).value(value).build();
    let container = ContainerOverride::builder()
        .name(crate::task::CONTAINER_NAME)
        .environment(variable(crate::task::STEP_VARIABLE, "upsert"))
        .environment(variable(crate::task::HANDOFF_VARIABLE, &key))
        // The MERGE's memory pool is a share of the task's memory (as a function's is of its).
        .environment(variable(
            deltadrop::environment::TASK_MEMORY_VARIABLE,
            &size.memory,
        ))
        .build();
    let started = ctx
        .ecs
        .run_task()
        .cluster(&run.cluster)
        .task_definition(&run.task_family)
        .launch_type(LaunchType::Fargate)
        .network_configuration(
            NetworkConfiguration::builder()
                .awsvpc_configuration(network)
                .build(),
        )
        .overrides(
            TaskOverride::builder()
                .cpu(&size.cpu)
                .memory(&size.memory)
                .container_overrides(container)
                .build(),
        )
        .send()
        .await
        .map_err(|e| Error::StorageError {
            location: format!("ecs:RunTask {}", run.task_family),
            message: format!(
                "could not start a container task for {}: {e}",
                handoff.run.key
            ),
        })?;
    if let Some(failure) = started.failures().first() {
        return Err(Error::StorageError {
            location: format!("ecs:RunTask {}", run.task_family),
            message: format!(
                "ECS did not start a container task for {}: {:?} ({:?})",
                handoff.run.key,
                failure.reason(),
                failure.detail()
            ),
        });
    }
    tracing::info!(run_id = %handoff.run.run_id, key, "handed the MERGE to a container task");
    Ok(())
}

/// Keeps the handed-over message in flight for `hold` from now. It fails once the message
/// was delivered again (its receipt handle is no longer valid), and past twelve hours from its
/// delivery (SQS's limit: https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_ChangeMessageVisibility.html).
pub async fn hold(
    sqs: &aws_sdk_sqs::Client,
    handoff: &Handoff,
    hold: Duration,
) -> Result<(), Error> {
    let held = set_visibility(sqs, &handoff.queue_url, &handoff.receipt_handle, hold).await;
    held.map_err(|e| Error::StorageError {
        location: handoff.queue_url.clone(),
        message: format!(
            "could not keep the lane message of {} in flight: {e}",
            handoff.run.key
        ),
    })
}

/// Makes a message held behind a hand-over visible again at once: FIFO delivers it once the
/// handed-over message has left its group, not at the end of the queue's visibility timeout. A
/// failure only delays it.
pub async fn let_go(sqs: &aws_sdk_sqs::Client, queue_url: &str, receipt_handle: &str) {
    let released = set_visibility(sqs, queue_url, receipt_handle, Duration::ZERO).await;
    if let Err(e) = released {
        tracing::warn!(error = %e, "a message held behind a hand-over waits for its visibility timeout");
    }
}

/// A message stays in flight for `visibility` from now (zero: visible at once).
async fn set_visibility(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    receipt_handle: &str,
    visibility: Duration,
) -> Result<(), String> {
    sqs.change_message_visibility()
        .queue_url(queue_url)
        .receipt_handle(receipt_handle)
        .visibility_timeout(visibility.as_secs() as i32)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}
