//! The commit lane on AWS: the upsert function as the merger of an SQS FIFO queue.
//!
//! The Upsert state sends each staged file to the lane queue
//! (`arn:aws:states:::sqs:sendMessage.waitForTaskToken`), with its table's lane as the message
//! group and the state's task token in the body, and waits. FIFO delivers a group's messages to
//! one consumer at a time ("messages that belong to the same message group are always processed
//! one by one": https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/FIFO-queues-understanding-logic.html),
//! so at most one merger works on a table. The merger takes every message of its batch, merges
//! each table's files in as few commits as the feed's bounds allow, and answers each file's token
//! with that file's own output (`SendTaskSuccess`) or its error's stable name (`SendTaskFailure`),
//! which the state machine's Catch routes.
//!
//! An answer that cannot be delivered because the execution is gone (`InvalidToken`,
//! `TaskTimedOut`, `TaskDoesNotExist`: it timed out, or was answered before) is dropped: the
//! execution has moved on, and if it sends the file again, the upsert finds it applied. Any other
//! failure to answer leaves the message in the queue (a batch item failure), and its redelivery
//! merges again, which finds the file applied and answers with that.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use deltadrop::steps::upsert::arrival::arrival_order;
use deltadrop::steps::{
    self, digest_groups, Failure, Pending, Report, RunInput, StageOutput, UpsertOutput,
};
use deltadrop::{Environment, Error};
use serde::{Deserialize, Serialize};

use crate::callback::{self, Liveness};
use crate::context::AwsContext;
use crate::handlers::{Function, Handler};
use crate::handoff::{self, Handoff};
use crate::trigger::batch_item_failure;
use deltadrop::route::TaskSize;

/// One message of the lane queue: what the Upsert state's `MessageBody` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaneMessage {
    /// The Upsert state's task token, to answer with.
    pub token: String,
    /// The file's run.
    pub run: RunInput,
    /// The Stage state's output.
    pub stage: StageOutput,
    /// Who merges it: the merger (the Upsert state's messages), or a container task (the
    /// UpsertInContainer state's, after the merger found the MERGE too large for it).
    #[serde(default)]
    pub tier: LaneTier,
}

/// Who merges a lane message's file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LaneTier {
    /// The merger, in the upsert function.
    #[default]
    Function,
    /// A container task the merger starts, holding the message (see [`crate::handoff`]).
    Container,
}

/// The upsert function: merges the lane queue's messages and answers their executions; asked
/// by the CheckApplied state, finds out whether a file the lane gave up on is in its table.
pub struct UpsertHandler;

/// What the upsert function is invoked with.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum UpsertRequest {
    /// From the CheckApplied state (it names a run and its stage).
    Check(CheckAppliedRequest),
    /// The lane queue's messages, from the event source mapping.
    Lane(SqsEvent),
}

/// The CheckApplied state's input: the file the lane gave up on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckAppliedRequest {
    /// The file's run.
    pub run: RunInput,
    /// The Stage state's output.
    pub stage: StageOutput,
}

/// The CheckApplied state's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppliedCheck {
    /// Whether the table records the file: a merger committed it and its answer was lost.
    pub applied: bool,
    /// The file's upsert output when it was applied (`already_applied`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upsert: Option<UpsertOutput>,
}

/// What the upsert function answers, for whichever caller.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum UpsertResponse {
    /// To the event source mapping: the messages to deliver again.
    Lane(SqsBatchResponse),
    /// To the CheckApplied state.
    Check(AppliedCheck),
}

impl Handler for UpsertHandler {
    const FUNCTION: Function = Function::Upsert;
    type Request = UpsertRequest;
    type Output = UpsertResponse;

    async fn handle(ctx: &AwsContext, request: UpsertRequest) -> Result<UpsertResponse, Error> {
        match request {
            UpsertRequest::Lane(batch) => {
                Ok(UpsertResponse::Lane(merge_batch(ctx, &batch.records).await))
            }
            UpsertRequest::Check(CheckAppliedRequest { run, stage }) => {
                let env = ctx.environment().await?;
                let upsert = steps::upsert::applied_without_an_answer(&env, &run, &stage).await?;
                tracing::info!(run_id = %run.run_id, key = %run.key, applied = upsert.is_some(), "checked the table after the lane gave up");
                Ok(UpsertResponse::Check(AppliedCheck {
                    applied: upsert.is_some(),
                    upsert,
                }))
            }
        }
    }
}

/// A file of the batch and the message that brought it.
pub(crate) struct Delivered {
    pub(crate) message_id: String,
    pub(crate) token: String,
    pub(crate) file: Pending,
    tier: LaneTier,
    group: String,
    receipt_handle: String,
    /// How often SQS delivered the message (`ApproximateReceiveCount`).
    receive_count: String,
}

/// Merges a batch of lane messages and answers each one; the response names the messages to
/// deliver again.
pub async fn merge_batch(ctx: &AwsContext, messages: &[SqsMessage]) -> SqsBatchResponse {
    let mut retry = Vec::new();
    let mut delivered = Vec::new();
    for message in messages {
        let id = message.message_id.clone().unwrap_or_default();
        match read(message) {
            Ok(file) => delivered.push(file),
            Err(Unreadable::NoToken(e)) => {
                // Nobody can be answered: the execution's heartbeat timeout sends the file again.
                tracing::error!(message_id = %id, error = %e, "a lane message without a task token; dropped");
            }
            Err(Unreadable::BadFile { token, error }) => {
                if callback::answer::<UpsertOutput>(&ctx.sfn, &token, &Err(*error))
                    .await
                    .is_err()
                {
                    retry.push(id);
                }
            }
        }
    }
    let (delivered, handed, held) = for_the_container(delivered);
    let mut files = Vec::new();
    for file in delivered {
        // A file whose execution is gone is not merged: it may have been quarantined since.
        match callback::heartbeat(&ctx.sfn, &file.token).await {
            Liveness::Gone(code) => {
                tracing::warn!(run_id = %file.file.run.run_id, code, "the file's execution is gone; not merged");
            }
            // Merging a file whose execution waits is always right, and an answer to a gone
            // one is dropped: a heartbeat that says neither counts as alive.
            Liveness::Unknown(error) => {
                tracing::warn!(%error, "a heartbeat failed; merging the file anyway");
                files.push(file);
            }
            Liveness::Alive => files.push(file),
        }
    }
    // The files before a hand-over in their group first: the task must be the table's only
    // writer, and come after them.
    let unanswered = merge_and_answer(ctx, in_arrival_order(files), Heartbeats::WhileMerging).await;
    for file in handed {
        let behind_an_unanswered = delivered_before(&file, &unanswered, messages);
        if behind_an_unanswered || hand_over(ctx, &file).await {
            // Kept in flight: the task deletes the message once it answered (or it comes back).
            retry.push(file.message_id.clone());
        }
    }
    retry.extend(unanswered);
    // Behind a hand-over: handed back now (FIFO delivers none of them while the handed-over
    // message is in flight), not at the end of the queue's visibility timeout.
    for file in &held {
        retry.push(file.message_id.clone());
        if let Some(container) = &ctx.settings.container_run {
            handoff::let_go(&ctx.sqs, &container.lane_queue_url, &file.receipt_handle).await;
        }
    }
    SqsBatchResponse {
        batch_item_failures: retry.into_iter().map(batch_item_failure).collect(),
    }
}

/// Who heartbeats the files' tokens while they merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Heartbeats {
    /// The merge itself, for every file.
    WhileMerging,
    /// The caller already does (a container task, whose own loop also stops it when its state
    /// no longer waits): a second loop would send each heartbeat twice.
    ByTheCaller,
}

/// Merges the files, answers each file's execution and sends the digests; the message ids of
/// those whose answer may not have arrived.
pub(crate) async fn merge_and_answer(
    ctx: &AwsContext,
    files: Vec<Delivered>,
    heartbeats: Heartbeats,
) -> Vec<String> {
    let mut retry = Vec::new();
    if files.is_empty() {
        return retry;
    }
    let started = std::time::Instant::now();
    let (results, env) = match ctx.environment().await {
        Ok(env) => (merge(ctx, &env, &files, heartbeats).await, Some(env)),
        Err(e) => (files.iter().map(|_| Err(e.clone())).collect(), None),
    };
    let merged_ms = started.elapsed().as_millis() as f64;
    for (file, result) in files.iter().zip(&results) {
        emit_metrics(&file.file.run.feed, result, merged_ms);
        if callback::answer(&ctx.sfn, &file.token, result)
            .await
            .is_err()
        {
            retry.push(file.message_id.clone());
        }
    }
    if let Some(env) = env {
        send_digests(&env, &files, &results).await;
    }
    retry
}

/// The batch's files the merger merges, those it hands to the container tier (the first of
/// their group marked for it), and the messages behind those in their groups: they wait until
/// the container task lets the group go.
fn for_the_container(
    delivered: Vec<Delivered>,
) -> (Vec<Delivered>, Vec<Delivered>, Vec<Delivered>) {
    let (mut merged, mut handed, mut held) = (Vec::new(), Vec::new(), Vec::new());
    let mut held_groups = std::collections::BTreeSet::new();
    for file in delivered {
        if held_groups.contains(&file.group) {
            held.push(file);
        } else if file.tier == LaneTier::Container {
            held_groups.insert(file.group.clone());
            handed.push(file);
        } else {
            merged.push(file);
        }
    }
    (merged, handed, held)
}

/// Whether a message of `file`'s group came before it in the batch and is to be delivered
/// again (its answer may not have arrived): the hand-over waits for it.
fn delivered_before(file: &Delivered, unanswered: &[String], messages: &[SqsMessage]) -> bool {
    let group_of = |m: &SqsMessage| m.attributes.get("MessageGroupId").cloned();
    messages
        .iter()
        .take_while(|m| m.message_id.as_deref() != Some(file.message_id.as_str()))
        .filter(|m| group_of(m).as_deref() == Some(file.group.as_str()))
        .any(|m| {
            unanswered
                .iter()
                .any(|id| Some(id.as_str()) == m.message_id.as_deref())
        })
}

/// Hands one file to a container task (see [`crate::handoff`]); whether its message is to be
/// kept (not deleted): false only for a file whose execution is gone.
async fn hand_over(ctx: &AwsContext, file: &Delivered) -> bool {
    let run = &file.file.run;
    if let Liveness::Gone(code) = callback::heartbeat(&ctx.sfn, &file.token).await {
        tracing::warn!(run_id = %run.run_id, code, "the file's execution is gone; not handed over");
        return false;
    }
    let Some(container) = &ctx.settings.container_run else {
        let e = Error::ConfigError {
            field: "DELTADROP_CONTAINER_CLUSTER".into(),
            message: "a file was sent to the container tier, but the upsert function has none"
                .into(),
        };
        return callback::answer::<UpsertOutput>(&ctx.sfn, &file.token, &Err(e))
            .await
            .is_err();
    };
    let size = match ctx
        .config()
        .await
        .and_then(|c| Ok(c.feed_named(&run.feed)?.route.clone()))
    {
        Ok(route) => TaskSize::of(&route),
        Err(e) => {
            tracing::error!(run_id = %run.run_id, error = %e, "cannot size the container task; the message comes back later");
            return true;
        }
    };
    let handoff = Handoff {
        token: file.token.clone(),
        run: run.clone(),
        stage: file.file.stage.clone(),
        queue_url: container.lane_queue_url.clone(),
        receipt_handle: file.receipt_handle.clone(),
    };
    // One handoff per delivery: a task started for an earlier one must not find this one's
    // receipt handle (it would hold the lane beside this delivery's task).
    let delivery = format!("{}-{}", file.message_id, file.receive_count);
    if let Err(e) = handoff::hand_over(ctx, container, &delivery, &handoff, &size).await {
        tracing::error!(run_id = %run.run_id, error = %e, "could not hand the MERGE over; the message comes back later");
    }
    true
}

/// The files in arrival order: one batch may hold them in another (the order in which their
/// executions reached the Upsert state).
fn in_arrival_order(files: Vec<Delivered>) -> Vec<Delivered> {
    let order = arrival_order(&files, |f| &f.file.run);
    let mut slots: Vec<Option<Delivered>> = files.into_iter().map(Some).collect();
    order
        .into_iter()
        .map(|i| slots[i].take().expect("a permutation"))
        .collect()
}

/// The one email per commit of the feeds with `notify = "digest"` (their executions' notify
/// states send none for a success). A mail failure is logged: the files are loaded.
async fn send_digests(
    env: &Environment,
    files: &[Delivered],
    results: &[Result<UpsertOutput, Error>],
) {
    let reports: Vec<Report> = files
        .iter()
        .zip(results)
        .map(|(file, result)| Report {
            run: Some(file.file.run.clone()),
            stage: Some(file.file.stage.clone()),
            upsert: result.as_ref().ok().cloned(),
            failure: result.as_ref().err().map(Failure::from),
            ..Report::default()
        })
        .collect();
    for group in digest_groups(&env.config, &reports) {
        let of_commit: Vec<Report> = group.iter().map(|&i| reports[i].clone()).collect();
        if let Err(e) = steps::notify_digest(env, &of_commit).await {
            tracing::error!(error = e.name(), message = %e, "the commit's digest email was not sent");
        }
    }
}

/// Merges the files, with heartbeats for each of them until it is done unless the caller sends
/// them.
async fn merge(
    ctx: &AwsContext,
    env: &Environment,
    files: &[Delivered],
    heartbeats: Heartbeats,
) -> Vec<Result<UpsertOutput, Error>> {
    let tokens: Vec<String> = files.iter().map(|f| f.token.clone()).collect();
    // A file whose execution goes while it merges is merged anyway: its answer is dropped.
    let _heartbeats = (heartbeats == Heartbeats::WhileMerging)
        .then(|| callback::keep_alive(ctx.sfn.clone(), tokens, None, |_| {}));
    let pending: Vec<Pending> = files.iter().map(|f| f.file.clone()).collect();
    steps::upsert::upsert_files(env, &pending).await
}

impl Delivered {
    /// A file handed to this container task (its message is held, not delivered).
    pub(crate) fn handed(handoff: &Handoff) -> Delivered {
        Delivered {
            message_id: String::new(),
            token: handoff.token.clone(),
            file: Pending {
                run: handoff.run.clone(),
                stage: handoff.stage.clone(),
            },
            tier: LaneTier::Container,
            group: String::new(),
            receipt_handle: handoff.receipt_handle.clone(),
            receive_count: String::new(),
        }
    }
}

enum Unreadable {
    NoToken(String),
    BadFile { token: String, error: Box<Error> },
}

fn read(message: &SqsMessage) -> Result<Delivered, Unreadable> {
    let body = message.body.as_deref().unwrap_or_default();
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| Unreadable::NoToken(e.to_string()))?;
    let token = value["token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Unreadable::NoToken("no \"token\" in the message".into()))?
        .to_string();
    let message_id = message.message_id.clone().unwrap_or_default();
    match serde_json::from_value::<LaneMessage>(value) {
        Ok(m) => Ok(Delivered {
            message_id,
            token,
            file: Pending {
                run: m.run,
                stage: m.stage,
            },
            tier: m.tier,
            // The table's lane (the message's group), and the handle to hold the message by.
            group: message
                .attributes
                .get("MessageGroupId")
                .cloned()
                .unwrap_or_default(),
            receipt_handle: message.receipt_handle.clone().unwrap_or_default(),
            receive_count: message
                .attributes
                .get("ApproximateReceiveCount")
                .cloned()
                .unwrap_or_default(),
        }),
        Err(e) => Err(Unreadable::BadFile {
            token,
            error: Box::new(Error::InvalidInput {
                message: format!("the upsert function got a lane message it cannot read: {e}"),
            }),
        }),
    }
}

/// The upsert's metrics for one file (names from [`crate::metrics::METRICS`]); its step took
/// as long as the merge of its batch.
fn emit_metrics(feed: &str, result: &Result<UpsertOutput, Error>, merged_ms: f64) {
    let Ok(output) = result else {
        return;
    };
    let outcome = match output.outcome {
        steps::UpsertOutcome::Applied | steps::UpsertOutcome::NothingToApply => "FilesApplied",
        steps::UpsertOutcome::AlreadyApplied => "FilesAlreadyApplied",
        steps::UpsertOutcome::Superseded => "FilesSuperseded",
    };
    if output.catalog.as_ref().is_some_and(|c| c.error.is_some()) {
        // Kept for the whole deployment: one alarm covers every feed's registrations.
        crate::metrics::emit("all", Function::Upsert.name(), &[("CatalogFailures", 1.0)]);
    }
    let changes = &output.changes;
    crate::metrics::emit(
        feed,
        Function::Upsert.name(),
        &[
            (outcome, 1.0),
            ("RowsInserted", changes.rows_inserted as f64),
            ("RowsUpdated", changes.rows_updated as f64),
            ("RowsDeleted", changes.rows_deleted as f64),
            ("CommitAttempts", output.attempts.into()),
            ("BytesRewritten", changes.bytes_rewritten as f64),
            (
                "EstimatedRewriteBytes",
                changes.estimate.map_or(0.0, |e| e.bytes as f64),
            ),
            ("StepDuration", merged_ms),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(id: &str, group: &str, tier: LaneTier) -> Delivered {
        let run = serde_json::json!({"run_id": id, "key": "k", "feed": "f", "started_at": "2026-01-01T00:00:00Z"});
        let stage = serde_json::json!({"rows": 0, "bytes": 0, "columns": [], "new_columns": [], "staging_table": null, "target_table": "t"});
        Delivered {
            message_id: id.into(),
            token: format!("token-{id}"),
            file: Pending {
                run: serde_json::from_value(run).unwrap(),
                stage: serde_json::from_value(stage).unwrap(),
            },
            tier,
            group: group.into(),
            receipt_handle: format!("handle-{id}"),
            receive_count: "1".into(),
        }
    }

    fn message(id: &str, group: &str) -> SqsMessage {
        let mut message = SqsMessage {
            message_id: Some(id.into()),
            ..SqsMessage::default()
        };
        message
            .attributes
            .insert("MessageGroupId".into(), group.into());
        message
    }

    #[test]
    fn a_hand_over_holds_its_group_behind_it_and_waits_for_the_files_before_it() {
        use LaneTier::{Container, Function};
        let batch = vec![
            delivered("a1", "a", Function),
            delivered("b1", "b", Container),
            delivered("a2", "a", Container),
            delivered("b2", "b", Function),
            delivered("a3", "a", Function),
            delivered("c1", "c", Function),
        ];
        let ids = |files: &[Delivered]| {
            files
                .iter()
                .map(|f| f.message_id.clone())
                .collect::<Vec<_>>()
        };
        let (merged, handed, held) = for_the_container(batch);
        assert_eq!(ids(&merged), ["a1", "c1"]);
        assert_eq!(ids(&handed), ["b1", "a2"]);
        assert_eq!(ids(&held), ["b2", "a3"]);
        // a2 comes after a1 in its group: it waits while a1 is to be delivered again.
        let messages: Vec<SqsMessage> = [("a1", "a"), ("b1", "b"), ("a2", "a")]
            .iter()
            .map(|(id, group)| message(id, group))
            .collect();
        assert!(delivered_before(&handed[1], &["a1".into()], &messages));
        assert!(!delivered_before(&handed[1], &["c1".into()], &messages));
        assert!(!delivered_before(&handed[0], &["a1".into()], &messages));
    }

    #[test]
    fn the_upsert_function_tells_a_lane_batch_from_a_check_by_its_input() {
        let lane: UpsertRequest =
            serde_json::from_value(serde_json::json!({"Records": []})).unwrap();
        assert!(matches!(lane, UpsertRequest::Lane(_)));
        let run = serde_json::json!({"run_id": "r", "key": "k", "feed": "f", "started_at": "2026-01-01T00:00:00Z"});
        let stage = serde_json::json!({"rows": 0, "bytes": 0, "columns": [], "new_columns": [], "staging_table": null, "target_table": "t"});
        let check: Result<UpsertRequest, _> =
            serde_json::from_value(serde_json::json!({"run": run, "stage": stage}));
        assert!(matches!(check, Ok(UpsertRequest::Check(_))), "{check:?}");
    }

    #[test]
    fn a_message_without_a_token_is_unreadable_and_one_with_a_bad_file_is_answered() {
        let message = |body: &str| SqsMessage {
            body: Some(body.into()),
            ..SqsMessage::default()
        };
        assert!(matches!(
            read(&message("not json")),
            Err(Unreadable::NoToken(_))
        ));
        assert!(matches!(
            read(&message(r#"{"run": {}}"#)),
            Err(Unreadable::NoToken(_))
        ));
        match read(&message(r#"{"token": "t/+=", "run": {}}"#)) {
            Err(Unreadable::BadFile { token, error }) => {
                assert_eq!(token, "t/+=");
                assert_eq!(error.name(), "InvalidInput");
            }
            _ => panic!("a message with a token is answered"),
        }
    }
}
