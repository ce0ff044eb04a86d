//! A deployment on moto for the end-to-end sections: the bucket (versioned, notifying SQS), the
//! state machine from infra/statemachine/, one context per function behind the recording and
//! fault-injecting proxy, and ways to drop files, deliver notifications and look at the result.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::types::{
    BucketVersioningStatus, Event, FilterRule, FilterRuleName, NotificationConfiguration,
    NotificationConfigurationFilter, QueueConfiguration, S3KeyFilter, VersioningConfiguration,
};
use deltadrop::config::Config;
use deltadrop::delta::TableLocation;
use deltadrop_aws::{invoke, AwsContext, Function, Settings};
use serde_json::{json, Value};

use crate::containers::{self, Containers};
use crate::emulator::{
    context, function_arn, function_sdk_config, merger_sdk_config, start_proxy, Contexts, Faults,
    Moto, ACCOUNT, REGION,
};
use crate::lane::{start_pollers, LaneStats};
use crate::recorder::Recorder;

pub const BUCKET: &str = "deltadrop-e2e";
pub const SENDER: &str = "deltadrop@example.com";
/// The Glue database the upsert registers tables in: template.yaml's default `GlueDatabase`
/// (which the IAM check resolves the upsert's grants with).
pub const GLUE_DATABASE: &str = "deltadrop";

const FEEDS: &str = r#"
[notifications]
from = "deltadrop@example.com"
recipients = ["data-team@example.com"]

[[feeds]]
name = "orders"
incoming = "incoming/orders/"
table = "tables/orders"
keys = ["order_id"]

[[feeds]]
name = "wide"
incoming = "incoming/wide/"
table = "tables/wide"
keys = ["id"]

[feeds.column_types]
c3999 = "long"

[[feeds]]
name = "burst"
incoming = "incoming/burst/"
table = "tables/burst"
keys = ["order_id"]
notify = "digest"

[[feeds]]
name = "ordered"
incoming = "incoming/ordered/"
table = "tables/ordered"
keys = ["order_id"]
apply_in_arrival_order = true

[[feeds]]
name = "regions"
incoming = "incoming/regions/"
table = "tables/regions"
keys = ["region", "id"]
partition_by = ["region"]

[[feeds]]
name = "rejecting"
incoming = "incoming/rejecting/"
table = "tables/rejecting"
keys = ["id"]
on_bad_rows = "reject"
max_rejected_percent = 75

[feeds.column_types]
qty = "long"

[[feeds.expect]]
name = "qty_small"
column = "qty"
max = 4
action = "warn"

# Staged by the container tier from a tenth of a MiB (the same CSV as below, gzipped), or in
# chunks from 1 MiB, read whole by the container tier if it does not split; and every MERGE
# (over a kilobyte) merged by the container tier.
[[feeds]]
name = "contained"
incoming = "incoming/contained/"
table = "tables/contained"
keys = ["order_id"]

[feeds.route]
parallel_stage_from_mb = 1
chunk_mb = 0.25
container_from_mb = 0.1
container_merge_from_gb = 0.000001
container_vcpu = 2
container_memory_gb = 8

# The same files staged in chunks (over 1 MiB, chunks of a quarter MiB) and whole.
[[feeds]]
name = "chunked"
incoming = "incoming/chunked/"
table = "tables/chunked"
keys = ["order_id"]

[feeds.route]
parallel_stage_from_mb = 1
chunk_mb = 0.25

[[feeds]]
name = "unchunked"
incoming = "incoming/unchunked/"
table = "tables/unchunked"
keys = ["order_id"]

# Random files (tests/aws/contained.rs): every stage and MERGE in a container task, and the
# same files through the functions.
[[feeds]]
name = "random-contained"
incoming = "incoming/random-contained/"
table = "tables/random-contained"
keys = ["id"]

[feeds.route]
container_from_mb = 0.01
container_merge_from_gb = 0.000001
container_vcpu = 2
container_memory_gb = 8

[[feeds]]
name = "random-functions"
incoming = "incoming/random-functions/"
table = "tables/random-functions"
keys = ["id"]

[[feeds]]
name = "Catalogued-Orders"
incoming = "incoming/catalogued/"
table = "tables/catalogued"
keys = ["region", "id"]
partition_by = ["region"]
change_data_feed = true

"#;

/// The deployment's configuration: the feeds above and, for the fault run (tests/aws/faults.rs),
/// three tables that take many files at once.
pub fn config() -> String {
    let fault_feeds: String = (0..crate::faults::TABLES)
        .map(|t| {
            format!(
                "\n[[feeds]]\nname = \"faults-{t}\"\nincoming = \"incoming/faults/{t}/\"\ntable = \"tables/faults-{t}\"\nkeys = [\"id\"]\n"
            )
        })
        .collect();
    format!("{FEEDS}{fault_feeds}")
}

/// Step Functions' limit on a state's input or output: 256 KB
/// (https://docs.aws.amazon.com/step-functions/latest/dg/limits-overview.html). moto does not
/// enforce it; the proxy measures every Lambda input and output against it.
pub const STATE_LIMIT_BYTES: usize = 256 * 1024;

/// The Upsert state stops waiting after this long without a heartbeat here (an hour on AWS), so
/// that a file whose answer was lost is sent again within the test.
pub const TEST_HEARTBEAT_SECONDS: u64 = 60;

/// How long the test waits for one execution. The longest legitimate one is a file whose every
/// answer is lost: four Upsert attempts, each ended by the missed heartbeat, with the state
/// machine's 10-second wait between them (about 275 s, measured). A scenario's executions run
/// together and are waited for one after another, each wait with this budget from when it
/// begins: the budget must hold the longest execution whole, in whatever order they come. (It
/// was 240 s: the likely cause of a CI failure at the end of that scenario.)
pub const EXECUTION_WAIT_SECONDS: u64 = 4 * (TEST_HEARTBEAT_SECONDS + 10) + 120;

/// How an execution ended.
pub struct Finished {
    pub name: String,
    pub status: String,
    pub error: Option<String>,
    pub output: Value,
}

pub struct World {
    pub moto: Moto,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub sfn: aws_sdk_sfn::Client,
    pub queue_url: String,
    pub state_machine_arn: String,
    /// The state machine's definition as deployed (the substitutions made).
    pub definition: String,
    pub contexts: Contexts,
    pub recorder: Arc<Recorder>,
    pub faults: Arc<Faults>,
    /// What the commit lane's pollers saw.
    pub lane: Arc<LaneStats>,
    /// The container tier's tasks.
    pub containers: Arc<Containers>,
    uploads: Mutex<Vec<Uploaded>>,
}

/// One PutObject, with what S3's notification of it carries on AWS.
struct Uploaded {
    key: String,
    etag: String,
    version_id: String,
    sequencer: String,
    notified: bool,
}

impl World {
    pub async fn new() -> World {
        let moto = Moto::from_env();
        crate::cloudwatch::record_emitted_metrics();
        moto.api_post(
            "/moto-api/config",
            json!({"stepfunctions": {"execute_state_machine": true}}),
        )
        .await;
        let sdk = moto.sdk_config().await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(true)
                .build(),
        );
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let sfn = aws_sdk_sfn::Client::new(&sdk);
        let ses = aws_sdk_sesv2::Client::new(&sdk);

        // As a first deploy: the bucket and its notifications exist, the configuration does not.
        s3.create_bucket().bucket(BUCKET).send().await.unwrap();
        // As template.yaml's GlueCatalogDatabase.
        aws_sdk_glue::Client::new(&sdk)
            .create_database()
            .database_input(
                aws_sdk_glue::types::DatabaseInput::builder()
                    .name(GLUE_DATABASE)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        // As in template.yaml: every upload is its own object version.
        s3.put_bucket_versioning()
            .bucket(BUCKET)
            .versioning_configuration(
                VersioningConfiguration::builder()
                    .status(BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let queue_url = sqs
            .create_queue()
            .queue_name("deltadrop-incoming")
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let queue_arn = format!("arn:aws:sqs:{REGION}:{ACCOUNT}:deltadrop-incoming");
        s3.put_bucket_notification_configuration()
            .bucket(BUCKET)
            .notification_configuration(
                NotificationConfiguration::builder()
                    .queue_configurations(
                        QueueConfiguration::builder()
                            .queue_arn(queue_arn)
                            .events(Event::from("s3:ObjectCreated:*"))
                            // As in template.yaml: only the incoming prefix notifies.
                            .filter(
                                NotificationConfigurationFilter::builder()
                                    .key(
                                        S3KeyFilter::builder()
                                            .filter_rules(
                                                FilterRule::builder()
                                                    .name(FilterRuleName::Prefix)
                                                    .value("incoming/")
                                                    .build(),
                                            )
                                            .build(),
                                    )
                                    .build(),
                            )
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap();
        ses.create_email_identity()
            .email_identity(SENDER)
            .send()
            .await
            .unwrap();

        let lane_queue_url = crate::lane::create_queue(&sqs).await;

        // The state machine from the same ASL file SAM deploys, with the substitutions SAM makes.
        let mut definition = crate::statemachine::definition();
        // Both lane states: a file whose answer was lost is sent again within the test.
        for state in ["Upsert", "UpsertInContainer"] {
            definition["States"][state]["HeartbeatSeconds"] = json!(TEST_HEARTBEAT_SECONDS);
        }
        let mut definition = definition.to_string();
        for (placeholder, function) in [
            ("${StageFunctionArn}", Function::Stage),
            ("${ArchiveFunctionArn}", Function::Archive),
            ("${UpsertFunctionArn}", Function::Upsert),
            ("${NotifyFunctionArn}", Function::Notify),
        ] {
            definition = definition.replace(placeholder, &function_arn(function));
        }
        definition = definition
            .replace("${UpsertLaneQueueUrl}", &lane_queue_url)
            .replace(
                "${SendToLaneAndWait}",
                "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
            )
            .replace("${ContainerClusterArn}", containers::CLUSTER_ARN)
            .replace("${ContainerTaskFamily}", containers::TASK_FAMILY)
            .replace("${ContainerSubnets}", containers::SUBNETS)
            .replace("${ContainerSecurityGroup}", containers::SECURITY_GROUP)
            .replace("${ContainerAssignPublicIp}", "DISABLED");
        let state_machine_arn = sfn
            .create_state_machine()
            .name("deltadrop-pipeline")
            .definition(&definition)
            .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/deltadrop-pipeline"))
            .send()
            .await
            .unwrap()
            .state_machine_arn;

        let settings = Settings {
            bucket: BUCKET.into(),
            config_key: "deltadrop.toml".into(),
            // Read on every invocation, so the test can remove and restore it.
            config_ttl: Duration::ZERO,
            state_machine_arn: Some(state_machine_arn.clone()),
            s3_endpoint: Some(moto.proxy_endpoint()),
            // As Lambda's AWS_LAMBDA_FUNCTION_MEMORY_SIZE gives it to the template's UpsertFunction.
            merge_memory: Some(deltadrop::MergeMemory::of_lambda_function(3008)),
            glue_database: Some(GLUE_DATABASE.into()),
            container_tier: deltadrop::route::ContainerTier::Deployed,
            // template.yaml's UpsertFunction environment, with the emulator's resources.
            container_run: Some(deltadrop_aws::handoff::ContainerRun {
                cluster: containers::CLUSTER_ARN.into(),
                task_family: containers::TASK_FAMILY.into(),
                subnets: containers::SUBNETS.split(',').map(str::to_string).collect(),
                security_group: containers::SECURITY_GROUP.into(),
                assign_public_ip: false,
                lane_queue_url: lane_queue_url.clone(),
            }),
        };
        let mut contexts = Contexts::new();
        for function in Function::ALL {
            let sdk = function_sdk_config(&moto, function).await;
            let ctx = AwsContext::new(&sdk, &settings).await.unwrap();
            contexts.push((function, Arc::new(ctx)));
        }
        // Each poller of the lane runs the upsert function as a container of its own would.
        let mut mergers = Vec::new();
        for poller in 0..crate::lane::POLLERS {
            let name = format!("poller-{poller}");
            let sdk = merger_sdk_config(&moto, &name).await;
            let ctx = AwsContext::new(&sdk, &settings).await.unwrap();
            mergers.push((name, Arc::new(ctx)));
        }
        let recorder = Arc::new(Recorder::default());
        let faults = Arc::new(Faults::default());
        let containers = Arc::new(Containers::new(BUCKET, &moto.proxy_endpoint()));
        start_proxy(
            &moto,
            contexts.clone(),
            recorder.clone(),
            faults.clone(),
            containers.clone(),
        )
        .await;
        let lane = Arc::new(LaneStats::default());
        start_pollers(
            sqs.clone(),
            lane_queue_url,
            mergers,
            faults.clone(),
            lane.clone(),
        );
        World {
            moto,
            s3,
            sqs,
            sfn,
            queue_url,
            state_machine_arn,
            definition,
            contexts,
            recorder,
            faults,
            lane,
            containers,
            uploads: Mutex::default(),
        }
    }

    pub fn ctx(&self, function: Function) -> &AwsContext {
        context(&self.contexts, function)
    }

    pub async fn upload_config(&self) {
        self.upload("deltadrop.toml", config()).await;
    }

    pub async fn upload(&self, key: &str, body: impl AsRef<[u8]>) {
        self.upload_tagged(key, body, None).await;
    }

    /// Uploads with S3 object tags (`tagging` as URL query parameters: `team=sales&scan=clean`),
    /// as DataSync, malware scanners and cost tagging do.
    pub async fn upload_tagged(&self, key: &str, body: impl AsRef<[u8]>, tagging: Option<&str>) {
        self.s3
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .body(body.as_ref().to_vec().into())
            .set_tagging(tagging.map(str::to_string))
            .send()
            .await
            .unwrap();
        self.uploaded(key).await;
    }

    /// The object's tags, as `key=value` sorted.
    pub async fn tags(&self, key: &str) -> Vec<String> {
        let tagging = self
            .s3
            .get_object_tagging()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap();
        let mut tags: Vec<String> = tagging
            .tag_set()
            .iter()
            .map(|t| format!("{}={}", t.key(), t.value()))
            .collect();
        tags.sort();
        tags
    }

    /// Notes the object now at `key` as an upload whose notification is to come (after a put,
    /// or a copy made by something other than `upload`).
    pub async fn uploaded(&self, key: &str) {
        let head = self
            .s3
            .head_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap();
        let mut uploads = self.uploads.lock().unwrap();
        let sequencer = format!("0055AED6DCD9{:06X}", uploads.len() + 1);
        uploads.push(Uploaded {
            key: key.to_string(),
            etag: head.e_tag().unwrap().trim_matches('"').to_string(),
            version_id: head.version_id().expect("a versioned bucket").to_string(),
            sequencer,
            notified: false,
        });
    }

    /// moto's S3 notifications lack two fields AWS sends for every PUT: `versionId` ("object
    /// version if bucket is versioning-enabled") and `sequencer` ("a string representation of a
    /// hexadecimal value used to determine event sequence")
    /// (https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html).
    /// They are added here from the uploads made, in order, as AWS would have sent them.
    pub fn as_aws_sends_it(&self, body: &str) -> String {
        let mut body: Value = serde_json::from_str(body).unwrap();
        let Some(object) = body.pointer_mut("/Records/0/s3/object") else {
            return body.to_string(); // S3's test event
        };
        let key = deltadrop_aws::trigger::decode_key(object["key"].as_str().unwrap());
        let mut uploads = self.uploads.lock().unwrap();
        let upload = uploads
            .iter_mut()
            .find(|u| !u.notified && u.key == key && object["eTag"] == u.etag.as_str())
            .unwrap_or_else(|| panic!("a notification of {key} that was never uploaded"));
        upload.notified = true;
        object["versionId"] = json!(upload.version_id);
        object["sequencer"] = json!(upload.sequencer);
        body.to_string()
    }

    pub async fn exists(&self, key: &str) -> bool {
        self.s3
            .head_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .is_ok()
    }

    /// Drops a file and waits for the execution its notification starts.
    pub async fn drop_file(&self, key: &str, body: impl AsRef<[u8]>) -> Finished {
        self.upload(key, body).await;
        let batch = self.receive_notifications().await;
        let name = self.started_execution(key, &batch).await;
        let (status, error, output) = self.finished(&name).await;
        Finished {
            name,
            status,
            error,
            output,
        }
    }

    /// Receives the queued S3 notifications as Lambda's SQS event source would hand them over
    /// (S3's test event included), once a file's notification is among them.
    pub async fn receive_notifications(&self) -> Value {
        let mut records = Vec::new();
        let mut files = 0;
        for _ in 0..20 {
            let received = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap();
            for m in received.messages.unwrap_or_default() {
                files += usize::from(!m.body().unwrap_or("").contains("s3:TestEvent"));
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
                records.push(json!({
                    "messageId": m.message_id(), "receiptHandle": m.receipt_handle(),
                    "body": self.as_aws_sends_it(m.body().unwrap()),
                    "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs",
                    "eventSourceARN": format!("arn:aws:sqs:{REGION}:{ACCOUNT}:deltadrop-incoming"), "awsRegion": REGION,
                }));
            }
            if files > 0 {
                break;
            }
        }
        assert!(files > 0, "no S3 notification of a file arrived in SQS");
        json!({ "Records": records })
    }

    pub async fn executions(&self) -> Vec<aws_sdk_sfn::types::ExecutionListItem> {
        self.sfn
            .list_executions()
            .state_machine_arn(&self.state_machine_arn)
            .send()
            .await
            .unwrap()
            .executions
    }

    /// An execution's status now (RUNNING, SUCCEEDED, ...).
    pub async fn status(&self, name: &str) -> String {
        let arn = format!("arn:aws:states:{REGION}:{ACCOUNT}:execution:deltadrop-pipeline:{name}");
        let execution = self
            .sfn
            .describe_execution()
            .execution_arn(&arn)
            .send()
            .await
            .unwrap();
        execution.status().as_str().to_string()
    }

    /// An execution's history in short (state entered, failures and their causes), for messages.
    pub async fn history(&self, name: &str) -> Vec<String> {
        let arn = format!("arn:aws:states:{REGION}:{ACCOUNT}:execution:deltadrop-pipeline:{name}");
        let history = self
            .sfn
            .get_execution_history()
            .execution_arn(&arn)
            .send()
            .await
            .unwrap();
        history
            .events()
            .iter()
            .filter_map(|e| {
                let entered = e
                    .state_entered_event_details()
                    .map(|d| d.name().to_string());
                let failed = e
                    .task_failed_event_details()
                    .map(|d| format!("  {:?}: {:?}", d.error(), d.cause()))
                    .or_else(|| {
                        e.lambda_function_failed_event_details()
                            .map(|d| format!("  {:?}: {:?}", d.error(), d.cause()))
                    });
                entered.or(failed)
            })
            .collect()
    }

    /// The output of an execution of any state machine, once it succeeded.
    pub async fn finished_arn(&self, arn: &str) -> Value {
        let (status, error, output) = self.wait(arn).await;
        assert_eq!(status, "SUCCEEDED", "{arn}: {error:?}");
        output
    }

    /// Waits until the pipeline's execution `name` ends; returns (status, error, output).
    pub async fn finished(&self, name: &str) -> (String, Option<String>, Value) {
        let arn = format!("arn:aws:states:{REGION}:{ACCOUNT}:execution:deltadrop-pipeline:{name}");
        self.wait(&arn).await
    }

    pub async fn wait(&self, arn: &str) -> (String, Option<String>, Value) {
        for _ in 0..EXECUTION_WAIT_SECONDS * 4 {
            let execution = self
                .sfn
                .describe_execution()
                .execution_arn(arn)
                .send()
                .await
                .unwrap();
            let status = execution.status().as_str().to_string();
            if status != "RUNNING" {
                let output = execution
                    .output()
                    .and_then(|o| serde_json::from_str(o).ok())
                    .unwrap_or(Value::Null);
                return (status, execution.error().map(str::to_string), output);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let name = arn.rsplit(':').next().unwrap_or_default();
        let history = self.history(name).await;
        panic!("execution {arn} did not finish in {EXECUTION_WAIT_SECONDS} s: {history:#?}");
    }

    pub async fn trigger(&self, batch: &Value) -> Value {
        invoke(
            self.ctx(Function::Trigger),
            Function::Trigger,
            batch.clone(),
        )
        .await
        .unwrap()
    }

    /// The SQS records of the next `count` file notifications (test events dropped).
    pub async fn file_records(&self, count: usize) -> Vec<Value> {
        let mut records = Vec::new();
        while records.len() < count {
            let batch = self.receive_notifications().await;
            records.extend(
                batch["Records"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|m| !m["body"].as_str().unwrap().contains("s3:TestEvent"))
                    .cloned(),
            );
        }
        assert_eq!(records.len(), count, "more notifications than uploads");
        records
    }

    /// Hands `records` to the trigger as one SQS batch and waits for the executions they name.
    pub async fn deliver(&self, records: &[Value]) -> Vec<Finished> {
        let response = self.trigger(&json!({ "Records": records })).await;
        assert_eq!(response["batchItemFailures"], json!([]), "{response}");
        self.wait_for(records.iter().map(execution_for).collect())
            .await
    }

    /// Hands `records` to the trigger in SQS batches of 10, as Lambda's event source does, and
    /// redelivers the messages it reports as failed (as SQS does once their visibility timeout
    /// ends); returns the names of the executions they start, without waiting for them.
    pub async fn start(&self, records: &[Value]) -> Vec<String> {
        for batch in records.chunks(10) {
            let mut pending = batch.to_vec();
            for _ in 0..5 {
                let response = self.trigger(&json!({ "Records": pending })).await;
                let failed: Vec<&Value> = response["batchItemFailures"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| &f["itemIdentifier"])
                    .collect();
                pending.retain(|m| failed.contains(&&m["messageId"]));
                if pending.is_empty() {
                    break;
                }
            }
            assert!(pending.is_empty(), "the trigger kept failing: {pending:#?}");
        }
        records.iter().map(execution_for).collect()
    }

    /// Waits for each named execution to end.
    pub async fn wait_for(&self, names: Vec<String>) -> Vec<Finished> {
        let mut finished = Vec::new();
        for name in names {
            let (status, error, output) = self.finished(&name).await;
            finished.push(Finished {
                name,
                status,
                error,
                output,
            });
        }
        finished
    }

    pub async fn read(&self, key: &str) -> String {
        let object = self
            .s3
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{key}: {e:?}"));
        String::from_utf8(object.body.collect().await.unwrap().to_vec()).unwrap()
    }

    pub async fn started_execution(&self, key: &str, batch: &Value) -> String {
        let response = self.trigger(batch).await;
        assert_eq!(response["batchItemFailures"], json!([]), "{response}");
        let executions = self.executions().await;
        let file_message = batch["Records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| !m["body"].as_str().unwrap().contains("s3:TestEvent"))
            .unwrap();
        let body: Value = serde_json::from_str(file_message["body"].as_str().unwrap()).unwrap();
        let record = &body["Records"][0];
        let config = Config::from_toml(&config(), "test").unwrap();
        let (name, _) = deltadrop_aws::trigger::run_for_record(
            &config,
            BUCKET,
            &serde_json::from_value(record.clone()).unwrap(),
        )
        .unwrap_or_else(|e| panic!("{key}: {e:?}"));
        assert!(
            executions.iter().any(|e| e.name == name),
            "no execution {name} for {key}"
        );
        name
    }

    /// The bucket as an operator's `deltadrop` command reaches it (a replay): objects and
    /// tables straight from moto, not as any function.
    pub fn operator_bucket(&self) -> deltadrop_aws::s3::S3Bucket {
        deltadrop_aws::s3::S3Bucket::new(self.s3.clone(), BUCKET, self.reader_options()).unwrap()
    }

    /// Options to read tables as the test, straight from moto: not a call of any function.
    fn reader_options(&self) -> HashMap<String, String> {
        reader_options(&self.moto)
    }

    /// A table as the Python `deltalake` package (an independent reader) reads it: version,
    /// columns and rows as `a|b|c`, ordered by `order_by` (tests/crosscheck.py).
    pub fn read_with_python(&self, table: &str, order_by: &str) -> Value {
        read_with_python(&self.moto, &format!("s3://{BUCKET}/{table}"), order_by)
    }

    /// The keys under a prefix, as the test sees them.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(BUCKET)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            keys.extend(
                page.unwrap()
                    .contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
        }
        keys
    }

    pub async fn rows(&self) -> Vec<String> {
        self.rows_of("tables/orders").await
    }

    /// Version, files and history of a table, as `deltadrop table` shows them.
    pub async fn table_summary(&self, table: &str) -> deltadrop::inspect::TableSummary {
        deltadrop::inspect::summarize(&self.table_location(table), 1)
            .await
            .unwrap()
    }

    pub fn table_location(&self, table: &str) -> TableLocation {
        TableLocation::new(
            url::Url::parse(&format!("s3://{BUCKET}/{table}/")).unwrap(),
            self.reader_options(),
        )
    }

    /// The names of the test configuration's feeds, in its order.
    pub fn feed_names(&self) -> Vec<String> {
        let config = Config::from_toml(&config(), "test").unwrap();
        config.feeds.into_iter().map(|f| f.name).collect()
    }

    /// The invocations of `function` the proxy ran, and how many of them failed.
    pub fn invocations_of(&self, function: Function) -> (u32, u32) {
        let invocations = self.faults.invocations.lock().unwrap();
        invocations
            .get(function.name())
            .copied()
            .unwrap_or_default()
    }

    /// A table's rows as `a|b|c`, ordered by `order_id`.
    pub async fn rows_of(&self, table: &str) -> Vec<String> {
        let batches =
            deltadrop::inspect::rows(&self.table_location(table), &["order_id".to_string()], None)
                .await
                .unwrap();
        deltadrop::inspect::row_strings(&batches).unwrap()
    }

    /// The emails SES "sent": subject, destinations and the HTML body.
    pub async fn emails(&self) -> Vec<Value> {
        let data = self.moto.data().await;
        data["ses"]["Message"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// The key an SQS record's S3 notification names.
pub fn notified_key(message: &Value) -> String {
    let body: Value = serde_json::from_str(message["body"].as_str().unwrap()).unwrap();
    deltadrop_aws::trigger::decode_key(body["Records"][0]["s3"]["object"]["key"].as_str().unwrap())
}

/// The execution name the trigger gives the upload an SQS record notifies.
pub fn execution_for(message: &Value) -> String {
    let body: Value = serde_json::from_str(message["body"].as_str().unwrap()).unwrap();
    let config = Config::from_toml(&config(), "test").unwrap();
    deltadrop_aws::trigger::run_for_record(
        &config,
        BUCKET,
        &serde_json::from_value(body["Records"][0].clone()).unwrap(),
    )
    .unwrap_or_else(|e| panic!("{e:?}"))
    .0
}

/// Where a run keeps its copy of a file: `<prefix><folder>/<execution name>/<file>`.
pub fn in_run_folder(prefix: &str, key: &str, execution: &str) -> String {
    let (folder, file) = key.rsplit_once('/').unwrap();
    format!("{prefix}{folder}/{execution}/{file}")
}

/// Options to read tables as the test, straight from moto (delta-rs and the Python reader).
pub fn reader_options(moto: &Moto) -> HashMap<String, String> {
    HashMap::from(
        [
            ("AWS_REGION", REGION),
            ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string())),
    )
}

/// The table at `url` (on moto's S3) as the Python `deltalake` package reads it: version,
/// columns and rows as `a|b|c`, ordered by `order_by` (tests/crosscheck.py).
pub fn read_with_python(moto: &Moto, url: &str, order_by: &str) -> Value {
    let options = reader_options(moto);
    let output = python("tests/crosscheck.py")
        .arg(url)
        .arg(order_by)
        .arg(serde_json::to_string(&options).unwrap())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the Python reader failed on {url}:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The repository's root, where the tests' Python scripts and template.yaml are.
pub const REPO_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// A command running `script` (a path from the repository's root) with the tests' Python
/// (`DELTADROP_PYTHON`, which ./scripts/test sets to its virtual environment's).
pub fn python(script: &str) -> std::process::Command {
    let interpreter = std::env::var("DELTADROP_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut command = std::process::Command::new(interpreter);
    command.arg(format!("{REPO_ROOT}/{script}"));
    command
}
