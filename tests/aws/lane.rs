//! The commit lane's event source mapping, played by the test: moto has no Lambda event source
//! mapping without Docker, so pollers receive the lane queue's messages (at most 10, as a FIFO
//! mapping hands over), invoke the real upsert handler with them as Lambda's SQS event, and
//! delete what it did not report as failed
//! (https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html).
//!
//! Several pollers run at once, as the mapping scales out; each notes the message groups (the
//! tables) it holds while the handler runs, so that the test can show that two merges of one
//! table never overlapped. Their receives take turns, with short polls: moto 5.2.5 works out the
//! groups in flight once per ReceiveMessage call, without a lock, so a long poll (or two
//! receives at once) can hand out a group another consumer holds, which SQS never does. On AWS the mapping's own calls are made with the function's role,
//! which SAM grants for an SQS event (AWSLambdaSQSQueueExecutionRole); here they are the test's.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use deltadrop_aws::{invoke, AwsContext, Function};
use serde_json::{json, Value};

use crate::emulator::{Faults, ACCOUNT, REGION};

pub const QUEUE_NAME: &str = "deltadrop-upsert-lane.fifo";
/// How many pollers take the queue's messages at once.
pub const POLLERS: usize = 3;
/// The lane queue's visibility timeout here: longer than any merge of the test takes, so a
/// group stays locked while its merger runs (template.yaml sets 6x the function's timeout).
pub const VISIBILITY_SECONDS: i32 = 300;
/// A failed message is visible again this soon here (on AWS: at the end of its visibility
/// timeout), so that a redelivery does not hold the test for minutes.
const REDELIVER_AFTER_SECONDS: i32 = 2;

/// What the pollers saw.
#[derive(Default)]
pub struct LaneStats {
    holding: Mutex<BTreeSet<String>>,
    /// Times a poller got messages of a group another poller was still merging.
    pub overlaps: AtomicU32,
    /// Handler invocations, and the messages each one got.
    pub batches: Mutex<Vec<usize>>,
    /// Messages handed back for redelivery (batch item failures, failed invocations).
    pub redelivered: AtomicU32,
    /// Mergers killed by an injected fault.
    pub killed: AtomicU32,
    /// One receive at a time (see the module's comment).
    receiving: tokio::sync::Mutex<()>,
}

/// Creates the lane queue as template.yaml does (FIFO, no content-based deduplication).
pub async fn create_queue(sqs: &aws_sdk_sqs::Client) -> String {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    sqs.create_queue()
        .queue_name(QUEUE_NAME)
        .attributes(A::FifoQueue, "true")
        .attributes(A::ContentBasedDeduplication, "false")
        .attributes(A::VisibilityTimeout, VISIBILITY_SECONDS.to_string())
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap()
}

/// Starts a poller per merger (a name and the upsert function's context); they run until the
/// test ends.
pub fn start_pollers(
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    mergers: Vec<(String, Arc<AwsContext>)>,
    faults: Arc<Faults>,
    stats: Arc<LaneStats>,
) {
    for (name, merger) in mergers {
        let poller = Poller {
            name,
            sqs: sqs.clone(),
            queue_url: queue_url.clone(),
            merger,
            faults: faults.clone(),
            stats: stats.clone(),
        };
        tokio::spawn(async move {
            loop {
                poller.poll_once().await;
            }
        });
    }
}

struct Poller {
    name: String,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    merger: Arc<AwsContext>,
    faults: Arc<Faults>,
    stats: Arc<LaneStats>,
}

impl Poller {
    async fn poll_once(&self) {
        let received = {
            let _turn = self.stats.receiving.lock().await;
            self.sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
        };
        let messages = received.ok().and_then(|r| r.messages).unwrap_or_default();
        if messages.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            return;
        }
        let groups: BTreeSet<String> = messages.iter().map(group_of).collect();
        {
            let mut holding = self.stats.holding.lock().unwrap();
            for group in &groups {
                if !holding.insert(group.clone()) {
                    self.stats.overlaps.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        self.stats.batches.lock().unwrap().push(messages.len());
        let event =
            json!({ "Records": messages.iter().map(|m| self.record(m)).collect::<Vec<_>>() });
        let answer = self.run_merger(event).await;
        self.faults
            .count_invocation(Function::Upsert, !matches!(answer, Some(Ok(_))));
        let failed: BTreeSet<String> = match &answer {
            Some(Ok(response)) => response["batchItemFailures"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["itemIdentifier"].as_str().map(str::to_string))
                .collect(),
            // A failed invocation, or a merger that died, hands the whole batch back.
            _ => messages
                .iter()
                .filter_map(|m| m.message_id.clone())
                .collect(),
        };
        // Let go of the groups before their messages are deleted: until then SQS keeps them
        // locked, so no other poller can have them in between.
        {
            let mut holding = self.stats.holding.lock().unwrap();
            for group in &groups {
                holding.remove(group);
            }
        }
        for message in &messages {
            let handle = message.receipt_handle().unwrap();
            if failed.contains(message.message_id().unwrap_or_default()) {
                self.stats.redelivered.fetch_add(1, Ordering::SeqCst);
                if is_handed_over(message) {
                    // The merger holds it for a container task, which deletes it: AWS leaves a
                    // failed message as it is, and so does the test here.
                    continue;
                }
                let _ = self
                    .sqs
                    .change_message_visibility()
                    .queue_url(&self.queue_url)
                    .receipt_handle(handle)
                    .visibility_timeout(REDELIVER_AFTER_SECONDS)
                    .send()
                    .await;
            } else {
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    /// Runs the handler, as a container would, until it ends or the proxy kills it (`None`).
    async fn run_merger(&self, event: Value) -> Option<Result<Value, lambda_runtime::Diagnostic>> {
        let mut invocation = Box::pin(invoke(&self.merger, Function::Upsert, event));
        let answer = loop {
            tokio::select! {
                answer = &mut invocation => break Some(answer),
                () = tokio::time::sleep(Duration::from_millis(20)) => {
                    if self.faults.is_killed(&self.name) {
                        self.stats.killed.fetch_add(1, Ordering::SeqCst);
                        break None;
                    }
                }
            }
        };
        // The killed merger is gone (its spawned work with it) before its poller may work again.
        drop(invocation);
        self.faults.revive(&self.name);
        answer
    }

    /// A message as Lambda's SQS event carries it.
    fn record(&self, message: &aws_sdk_sqs::types::Message) -> Value {
        let attributes: serde_json::Map<String, Value> = message
            .attributes()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str().to_string(), json!(v)))
            .collect();
        json!({
            "messageId": message.message_id(),
            "receiptHandle": message.receipt_handle(),
            "body": message.body(),
            "attributes": attributes,
            "messageAttributes": {},
            "md5OfBody": message.md5_of_body(),
            "eventSource": "aws:sqs",
            "eventSourceARN": format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{QUEUE_NAME}"),
            "awsRegion": REGION,
        })
    }
}

/// A message the UpsertInContainer state sent (a merger hands its file to a container task).
fn is_handed_over(message: &aws_sdk_sqs::types::Message) -> bool {
    let body: Value = serde_json::from_str(message.body().unwrap_or_default()).unwrap_or_default();
    body["tier"] == "container"
}

fn group_of(message: &aws_sdk_sqs::types::Message) -> String {
    message
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
        .cloned()
        .unwrap_or_default()
}
