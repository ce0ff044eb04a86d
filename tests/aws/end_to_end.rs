//! What AWS would do with a first deploy and a handful of files: S3 → SQS → trigger → Step
//! Functions → the four steps, with the checks moto cannot make itself (IAM, the 256 KB state
//! limit) made on what the proxy saw.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
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

use crate::emulator::{
    context, function_arn, function_sdk_config, start_proxy, Contexts, Faults, Moto, ACCOUNT,
    REGION,
};
use crate::recorder::Recorder;

const BUCKET: &str = "deltadrop-e2e";
const SENDER: &str = "deltadrop@example.com";

const CONFIG: &str = r#"
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
"#;

/// Step Functions' limit on a state's input or output: 256 KB
/// (https://docs.aws.amazon.com/step-functions/latest/dg/limits-overview.html). moto does not
/// enforce it; the proxy measures every Lambda input and output against it.
const STATE_LIMIT_BYTES: usize = 256 * 1024;

/// How an execution ended.
struct Finished {
    name: String,
    status: String,
    error: Option<String>,
    output: Value,
}

struct World {
    moto: Moto,
    s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
    sfn: aws_sdk_sfn::Client,
    queue_url: String,
    state_machine_arn: String,
    contexts: Contexts,
    recorder: Arc<Recorder>,
    faults: Arc<Faults>,
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
    async fn new() -> World {
        let moto = Moto::from_env();
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

        // The state machine from the same ASL file SAM deploys, with the substitutions SAM makes.
        let mut definition = crate::statemachine::definition().to_string();
        for (placeholder, function) in [
            ("${StageFunctionArn}", Function::Stage),
            ("${ArchiveFunctionArn}", Function::Archive),
            ("${UpsertFunctionArn}", Function::Upsert),
            ("${NotifyFunctionArn}", Function::Notify),
        ] {
            definition = definition.replace(placeholder, &function_arn(function));
        }
        let state_machine_arn = sfn
            .create_state_machine()
            .name("deltadrop-pipeline")
            .definition(definition)
            .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/deltadrop-pipeline"))
            .send()
            .await
            .unwrap()
            .state_machine_arn;

        let mut contexts = Contexts::new();
        for function in Function::ALL {
            let settings = Settings {
                bucket: BUCKET.into(),
                config_key: "deltadrop.toml".into(),
                // Read on every invocation, so the test can remove and restore it.
                config_ttl: Duration::ZERO,
                state_machine_arn: Some(state_machine_arn.clone()),
                s3_endpoint: Some(moto.proxy_endpoint()),
            };
            let sdk = function_sdk_config(&moto, function).await;
            let ctx = AwsContext::new(&sdk, &settings).await.unwrap();
            contexts.push((function, Arc::new(ctx)));
        }
        let recorder = Arc::new(Recorder::default());
        let faults = Arc::new(Faults::default());
        start_proxy(&moto, contexts.clone(), recorder.clone(), faults.clone()).await;
        World {
            moto,
            s3,
            sqs,
            sfn,
            queue_url,
            state_machine_arn,
            contexts,
            recorder,
            faults,
            uploads: Mutex::default(),
        }
    }

    fn ctx(&self, function: Function) -> &AwsContext {
        context(&self.contexts, function)
    }

    async fn upload_config(&self) {
        self.upload("deltadrop.toml", CONFIG).await;
    }

    async fn upload(&self, key: &str, body: impl AsRef<[u8]>) {
        let put = self
            .s3
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .body(body.as_ref().to_vec().into())
            .send()
            .await
            .unwrap();
        let mut uploads = self.uploads.lock().unwrap();
        let sequencer = format!("0055AED6DCD9{:06X}", uploads.len() + 1);
        uploads.push(Uploaded {
            key: key.to_string(),
            etag: put.e_tag().unwrap().trim_matches('"').to_string(),
            version_id: put.version_id().expect("a versioned bucket").to_string(),
            sequencer,
            notified: false,
        });
    }

    /// moto's S3 notifications lack two fields AWS sends for every PUT: `versionId` ("object
    /// version if bucket is versioning-enabled") and `sequencer` ("a string representation of a
    /// hexadecimal value used to determine event sequence")
    /// (https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html).
    /// They are added here from the uploads made, in order, as AWS would have sent them.
    fn as_aws_sends_it(&self, body: &str) -> String {
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

    async fn exists(&self, key: &str) -> bool {
        self.s3
            .head_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .is_ok()
    }

    /// Drops a file and waits for the execution its notification starts.
    async fn drop_file(&self, key: &str, body: impl AsRef<[u8]>) -> Finished {
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
    async fn receive_notifications(&self) -> Value {
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

    async fn executions(&self) -> Vec<aws_sdk_sfn::types::ExecutionListItem> {
        self.sfn
            .list_executions()
            .state_machine_arn(&self.state_machine_arn)
            .send()
            .await
            .unwrap()
            .executions
    }

    /// Waits until the execution ends; returns (status, error, output).
    async fn finished(&self, name: &str) -> (String, Option<String>, Value) {
        let arn = format!("arn:aws:states:{REGION}:{ACCOUNT}:execution:deltadrop-pipeline:{name}");
        for _ in 0..240 {
            let execution = self
                .sfn
                .describe_execution()
                .execution_arn(&arn)
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
        panic!("execution {name} did not finish in 60 s");
    }

    async fn trigger(&self, batch: &Value) -> Value {
        invoke(
            self.ctx(Function::Trigger),
            Function::Trigger,
            batch.clone(),
        )
        .await
        .unwrap()
    }

    /// The SQS records of the next `count` file notifications (test events dropped).
    async fn file_records(&self, count: usize) -> Vec<Value> {
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
    async fn deliver(&self, records: &[Value]) -> Vec<Finished> {
        let response = self.trigger(&json!({ "Records": records })).await;
        assert_eq!(response["batchItemFailures"], json!([]), "{response}");
        let mut finished = Vec::new();
        for record in records {
            let name = execution_for(record);
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

    async fn read(&self, key: &str) -> String {
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

    async fn started_execution(&self, key: &str, batch: &Value) -> String {
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
        let config = Config::from_toml(CONFIG, "test").unwrap();
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

    async fn rows(&self) -> Vec<String> {
        // Read as the test, straight from moto: not a call of any function.
        let options = HashMap::from(
            [
                ("AWS_REGION", REGION),
                ("AWS_ENDPOINT_URL", self.moto.endpoint.as_str()),
                ("AWS_ALLOW_HTTP", "true"),
                ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false"),
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let table = TableLocation::new(
            url::Url::parse(&format!("s3://{BUCKET}/tables/orders/")).unwrap(),
            options,
        );
        let batches = deltadrop::inspect::rows(&table, &["order_id".to_string()], None)
            .await
            .unwrap();
        let mut rows = Vec::new();
        for batch in batches {
            let formatted = deltalake::arrow::util::pretty::pretty_format_batches(&[batch])
                .unwrap()
                .to_string();
            rows.extend(
                formatted
                    .lines()
                    .filter(|l| l.starts_with("| ") && !l.contains("order_id"))
                    .map(|l| {
                        l.trim_matches('|')
                            .split('|')
                            .map(str::trim)
                            .collect::<Vec<_>>()
                            .join("|")
                    }),
            );
        }
        rows
    }

    /// The emails SES "sent": subject, destinations and the HTML body.
    async fn emails(&self) -> Vec<Value> {
        let data = self.moto.data().await;
        data["ses"]["Message"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// The execution name the trigger gives the upload an SQS record notifies.
fn execution_for(message: &Value) -> String {
    let body: Value = serde_json::from_str(message["body"].as_str().unwrap()).unwrap();
    let config = Config::from_toml(CONFIG, "test").unwrap();
    deltadrop_aws::trigger::run_for_record(
        &config,
        BUCKET,
        &serde_json::from_value(body["Records"][0].clone()).unwrap(),
    )
    .unwrap_or_else(|e| panic!("{e:?}"))
    .0
}

/// Where a run keeps its copy of a file: `<prefix><folder>/<execution name>/<file>`.
fn in_run_folder(prefix: &str, key: &str, execution: &str) -> String {
    let (folder, file) = key.rsplit_once('/').unwrap();
    format!("{prefix}{folder}/{execution}/{file}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn files_dropped_in_the_bucket_become_a_delta_table_through_the_real_state_machine() {
    let world = World::new().await;
    first_deploy_before_the_configuration(&world).await;
    an_upsert_and_a_duplicated_notification(&world).await;
    a_malformed_file_is_quarantined(&world).await;
    a_very_wide_file_and_a_huge_bad_value_stay_within_the_state_limit(&world).await;
    a_mail_failure_does_not_fail_a_load(&world).await;
    a_failure_after_the_archive_moves_the_file_to_quarantine(&world).await;
    the_same_bytes_dropped_again_are_loaded_again(&world).await;
    a_late_and_repeated_notification_never_undoes_a_newer_upload(&world).await;
    a_failed_upload_is_quarantined_without_touching_a_newer_upload_of_its_key(&world).await;
    every_call_is_one_the_function_policy_allows(&world).await;
}

/// S3's test event and a file arrive before the configuration: the test event is acknowledged,
/// the file's message fails (SQS retries it, then dead-letters it) and the file stays where it
/// is; once the configuration is there, the redelivered message loads it.
async fn first_deploy_before_the_configuration(world: &World) {
    world
        .upload(
            "incoming/orders/first.csv",
            "order_id,status,amount\n1,new,10.5\n2,new,20\n",
        )
        .await;
    let batch = world.receive_notifications().await;
    assert!(
        batch.to_string().contains("s3:TestEvent"),
        "moto queues S3's test event when notifications are configured: {batch}"
    );
    let response = world.trigger(&batch).await;
    let file_message = batch["Records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| !m["body"].as_str().unwrap().contains("s3:TestEvent"))
        .unwrap()["messageId"]
        .clone();
    assert_eq!(
        response["batchItemFailures"],
        json!([{"itemIdentifier": file_message}]),
        "only the file's message fails without a configuration"
    );
    let run = json!({"run": {"run_id": "early", "key": "incoming/orders/first.csv", "feed": "orders", "started_at": "2026-11-26T00:00:00Z"}});
    let error = invoke(world.ctx(Function::Stage), Function::Stage, run)
        .await
        .unwrap_err();
    assert_eq!(error.error_type, "ConfigError", "{}", error.error_message);
    assert!(
        error
            .error_message
            .contains("s3://deltadrop-e2e/deltadrop.toml: the configuration does not exist"),
        "{}",
        error.error_message
    );
    assert!(world.exists("incoming/orders/first.csv").await);

    world.upload_config().await;
    let first = world.started_execution("first.csv", &batch).await;
    let (status, error, output) = world.finished(&first).await;
    assert_eq!((status.as_str(), error), ("SUCCEEDED", None), "{output:#}");
    assert_eq!(output["upsert"]["rows_inserted"], 2, "{output:#}");
    assert_eq!(output["stage"]["rows"], 2);
    assert_eq!(world.rows().await, ["1|new|10.5", "2|new|20.0"]);
    assert!(
        world
            .exists(&in_run_folder(
                "archive/",
                "incoming/orders/first.csv",
                &first
            ))
            .await
    );
    assert!(!world.exists("incoming/orders/first.csv").await);
    let emails = world.emails().await;
    assert_eq!(emails.len(), 1, "{emails:#?}");
    assert!(
        emails[0].to_string().contains("first.csv loaded"),
        "{:#}",
        emails[0]
    );
}

async fn an_upsert_and_a_duplicated_notification(world: &World) {
    world
        .upload(
            "incoming/orders/second file.csv",
            "order_id,status,amount\n2,shipped,20\n3,new,30\n",
        )
        .await;
    let batch = world.receive_notifications().await;
    assert!(
        batch.to_string().contains("second+file.csv"),
        "S3 sends keys URL-encoded: {batch}"
    );
    let second = world.started_execution("second file.csv", &batch).await;
    let again = world.trigger(&batch).await;
    assert_eq!(again["batchItemFailures"], json!([]));
    let (status, _, output) = world.finished(&second).await;
    assert_eq!(status, "SUCCEEDED", "{output:#}");
    assert_eq!(
        (
            output["upsert"]["rows_inserted"].clone(),
            output["upsert"]["rows_updated"].clone()
        ),
        (json!(1), json!(1))
    );
    assert_eq!(
        world.rows().await,
        ["1|new|10.5", "2|shipped|20.0", "3|new|30.0"]
    );
    assert_eq!(
        world.executions().await.len(),
        2,
        "the duplicate notification started an execution"
    );
}

async fn a_malformed_file_is_quarantined(world: &World) {
    let bad = world
        .drop_file("incoming/orders/bad.csv", "order_id,status,amount\n4,new\n")
        .await;
    assert_eq!(
        (bad.status.as_str(), bad.error.as_deref()),
        ("FAILED", Some("MalformedFile"))
    );
    let quarantined = in_run_folder("quarantine/", "incoming/orders/bad.csv", &bad.name);
    assert!(world.exists(&quarantined).await);
    assert!(world.exists(&format!("{quarantined}.error.json")).await);
    assert!(!world.exists("incoming/orders/bad.csv").await);
    let emails = world.emails().await;
    assert_eq!(emails.len(), 3);
    let failure = emails
        .iter()
        .map(|e| e.to_string())
        .find(|e| e.contains("FAILED orders: bad.csv"))
        .expect("a failure email");
    assert!(
        failure.contains("line 2: expected 3 fields, found 2"),
        "{failure}"
    );
    assert!(
        failure.contains("console.aws.amazon.com/states"),
        "{failure}"
    );
    assert_eq!(
        world.rows().await.len(),
        3,
        "the bad file changed the table"
    );
}

/// 4,000 columns of 28 characters would put ~250 KB of column names in Stage's output (twice
/// on a first load), and a 300 KB value in an error's cause: both must stay under the limit.
async fn a_very_wide_file_and_a_huge_bad_value_stay_within_the_state_limit(world: &World) {
    let header: Vec<String> = std::iter::once("id".to_string())
        .chain((0..4000).map(|i| format!("wide_measurement_column_{i:04}")))
        .collect();
    let row = |id: &str, last: &str| {
        let mut fields = vec![id.to_string()];
        fields.extend((0..3999).map(|i| i.to_string()));
        fields.push(last.to_string());
        fields.join(",")
    };
    let good = format!("{}\n{}\n", header.join(","), row("1", "7"));
    let Finished {
        status,
        error,
        output,
        ..
    } = world.drop_file("incoming/wide/good.csv", good).await;
    assert_eq!((status.as_str(), error), ("SUCCEEDED", None), "{output:#}");
    assert_eq!(output["stage"]["column_count"], 4001);
    assert_eq!(output["upsert"]["rows_inserted"], 1);

    let huge = "x".repeat(300_000);
    let bad = format!("{}\n{}\n", header.join(","), row("2", &huge));
    let Finished {
        name,
        status,
        error,
        ..
    } = world.drop_file("incoming/wide/bad.csv", bad).await;
    assert_eq!(
        (status.as_str(), error.as_deref()),
        ("FAILED", Some("InvalidValue"))
    );
    assert!(
        world
            .exists(&in_run_folder(
                "quarantine/",
                "incoming/wide/bad.csv",
                &name
            ))
            .await
    );
    let failure = world
        .emails()
        .await
        .iter()
        .map(|e| e.to_string())
        .find(|e| e.contains("FAILED wide: bad.csv"))
        .expect("a failure email");
    assert!(
        failure.contains("wide_measurement_column_3999") && failure.contains("more characters"),
        "{}",
        &failure[..failure.len().min(2000)]
    );
    assert!(
        world.recorder.largest_state() <= STATE_LIMIT_BYTES,
        "a state's input or output was {} bytes; Step Functions allows {STATE_LIMIT_BYTES}",
        world.recorder.largest_state()
    );
}

/// SES rejects the success email: the load still succeeds (the table was updated), and the
/// state output says why no email went out. A rejection that clears is retried.
async fn a_mail_failure_does_not_fail_a_load(world: &World) {
    let emails_before = world.emails().await.len();
    world.faults.reject_mail.store(u32::MAX, Ordering::SeqCst);
    let Finished {
        status,
        error,
        output,
        ..
    } = world
        .drop_file(
            "incoming/orders/third.csv",
            "order_id,status,amount\n4,new,40\n",
        )
        .await;
    assert_eq!((status.as_str(), error), ("SUCCEEDED", None), "{output:#}");
    assert_eq!(output["notify_failure"]["Error"], "MailError", "{output:#}");
    assert_eq!(output["upsert"]["rows_inserted"], 1);
    assert_eq!(world.emails().await.len(), emails_before);

    world.faults.reject_mail.store(1, Ordering::SeqCst);
    let Finished { status, output, .. } = world
        .drop_file(
            "incoming/orders/fourth.csv",
            "order_id,status,amount\n5,new,50\n",
        )
        .await;
    assert_eq!(status, "SUCCEEDED", "{output:#}");
    assert!(output.get("notify_failure").is_none(), "{output:#}");
    let emails = world.emails().await;
    assert_eq!(emails.len(), emails_before + 1);
    assert!(emails
        .last()
        .unwrap()
        .to_string()
        .contains("fourth.csv loaded"));
    assert_eq!(world.rows().await.len(), 5);
}

/// The upsert fails after the file was archived: the quarantine finds it in archive/ (reading
/// incoming/ first, which is a 404 only with s3:ListBucket), moves it, drops the staging table.
async fn a_failure_after_the_archive_moves_the_file_to_quarantine(world: &World) {
    world
        .faults
        .deny_upsert_writes
        .store(true, Ordering::SeqCst);
    let Finished {
        name,
        status,
        error,
        output,
    } = world
        .drop_file(
            "incoming/orders/late.csv",
            "order_id,status,amount\n6,new,60\n",
        )
        .await;
    world
        .faults
        .deny_upsert_writes
        .store(false, Ordering::SeqCst);
    assert_eq!(status, "FAILED", "{error:?} {output:#}");
    let quarantined = in_run_folder("quarantine/", "incoming/orders/late.csv", &name);
    assert!(world.exists(&quarantined).await);
    assert!(world.exists(&format!("{quarantined}.error.json")).await);
    assert!(
        !world
            .exists(&in_run_folder(
                "archive/",
                "incoming/orders/late.csv",
                &name
            ))
            .await
    );
    let staging = world
        .s3
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix(format!("_deltadrop/staging/{name}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        staging.key_count(),
        Some(0),
        "the staging table was left behind"
    );
    assert_eq!(
        world.rows().await.len(),
        5,
        "the failed upsert changed the table"
    );
}

/// A re-drop of the same bytes is a new upload (a new object version): it runs and is applied.
/// Before, the execution name came from the ETag, and Step Functions keeps names for 90 days.
async fn the_same_bytes_dropped_again_are_loaded_again(world: &World) {
    let key = "incoming/orders/again.csv";
    let body = "order_id,status,amount\n7,new,70\n";
    let first = world.drop_file(key, body).await;
    let second = world.drop_file(key, body).await;
    assert_ne!(first.name, second.name);
    for run in [&first, &second] {
        assert_eq!(run.status, "SUCCEEDED", "{:#}", run.output);
        assert_eq!(
            run.output["upsert"]["outcome"], "applied",
            "{:#}",
            run.output
        );
        assert!(
            world
                .exists(&in_run_folder("archive/", key, &run.name))
                .await
        );
    }
}

/// Two uploads of one key (C, then D) whose notifications arrive out of order, D's three
/// times: D is applied once, and C, arriving late, is archived as `superseded` without
/// overwriting D's rows.
async fn a_late_and_repeated_notification_never_undoes_a_newer_upload(world: &World) {
    let key = "incoming/orders/hourly.csv";
    let older = "order_id,status,amount\n8,older,80\n9,older,90\n";
    let newer = "order_id,status,amount\n8,newer,81\n";
    world.upload(key, older).await;
    world.upload(key, newer).await;
    let records = world.file_records(2).await;
    let executions_before = world.executions().await.len();
    let repeated = [records[1].clone(), records[1].clone(), records[1].clone()];
    let applied = world.deliver(&repeated).await;
    assert!(applied.iter().all(|f| f.name == applied[0].name));
    assert_eq!(
        applied[0].output["upsert"]["outcome"], "applied",
        "{:#}",
        applied[0].output
    );
    let late = world.deliver(&records[..1]).await.remove(0);
    assert_eq!(late.status, "SUCCEEDED", "{:#}", late.output);
    assert_eq!(
        late.output["upsert"]["outcome"], "superseded",
        "{:#}",
        late.output
    );
    assert_eq!(world.executions().await.len(), executions_before + 2);

    let rows = world.rows().await;
    assert!(rows.contains(&"8|newer|81.0".to_string()), "{rows:?}");
    assert!(!rows.iter().any(|r| r.starts_with("9|")), "{rows:?}");
    assert_eq!(
        world
            .read(&in_run_folder("archive/", key, &late.name))
            .await,
        older
    );
    assert_eq!(
        world
            .read(&in_run_folder("archive/", key, &applied[0].name))
            .await,
        newer
    );
    assert!(!world.exists(key).await, "both uploads left incoming/");
    assert!(world
        .emails()
        .await
        .iter()
        .any(|e| e.to_string().contains("hourly.csv skipped")));
}

/// Upload E of a key fails after its archive while upload F of the same key waits in incoming/:
/// E's quarantine moves E's own bytes (pinned to its version), F stays and is loaded next.
async fn a_failed_upload_is_quarantined_without_touching_a_newer_upload_of_its_key(world: &World) {
    let key = "incoming/orders/reused.csv";
    let failing = "order_id,status,amount\n10,failing,100\n";
    let next = "order_id,status,amount\n10,next,101\n";
    world.upload(key, failing).await;
    world.upload(key, next).await;
    let records = world.file_records(2).await;
    world
        .faults
        .deny_upsert_writes
        .store(true, Ordering::SeqCst);
    let failed = world.deliver(&records[..1]).await.remove(0);
    world
        .faults
        .deny_upsert_writes
        .store(false, Ordering::SeqCst);
    assert_eq!(failed.status, "FAILED");
    let quarantined = in_run_folder("quarantine/", key, &failed.name);
    assert_eq!(world.read(&quarantined).await, failing);
    assert!(world
        .read(&format!("{quarantined}.error.json"))
        .await
        .contains("DeltaError"));
    assert_eq!(world.read(key).await, next, "the newer upload was moved");

    let loaded = world.deliver(&records[1..]).await.remove(0);
    assert_eq!(loaded.status, "SUCCEEDED", "{:#}", loaded.output);
    assert_eq!(
        world
            .read(&in_run_folder("archive/", key, &loaded.name))
            .await,
        next
    );
    assert!(world.rows().await.contains(&"10|next|101.0".to_string()));
    assert!(!world.exists(key).await);
}

/// moto enforces no IAM: every call each function made above is checked against that
/// function's policy in template.yaml by tests/iam/check_calls.py.
async fn every_call_is_one_the_function_policy_allows(world: &World) {
    let calls = world.recorder.calls();
    for function in Function::ALL {
        assert!(
            calls.iter().any(|c| c.function == function.name()),
            "no call recorded for {}",
            function.name()
        );
    }
    assert!(
        calls
            .iter()
            .any(|c| c.action == "s3:GetObject" && c.status == 404),
        "the run exercises reads of missing keys"
    );
    let unknown: Vec<_> = calls
        .iter()
        .filter(|c| c.action.contains("Unknown"))
        .collect();
    assert!(
        unknown.is_empty(),
        "requests the recorder cannot map to IAM actions: {unknown:#?}"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec_pretty(&calls).unwrap()).unwrap();
    // To look at them, or to check them against another template by hand.
    if let Ok(keep) = std::env::var("DELTADROP_KEEP_CALLS") {
        std::fs::copy(file.path(), keep).unwrap();
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let python = std::env::var("DELTADROP_PYTHON").unwrap_or_else(|_| "python3".into());
    let checked = std::process::Command::new(python)
        .arg(format!("{root}/tests/iam/check_calls.py"))
        .args(["--template", &format!("{root}/template.yaml")])
        .arg("--calls")
        .arg(file.path())
        .args(["--bucket", BUCKET, "--account", ACCOUNT, "--region", REGION])
        .args(["--state-machine-arn", &world.state_machine_arn])
        .args(["--parameter", &format!("SenderEmail={SENDER}")])
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    println!("{report}");
    assert!(
        checked.status.success(),
        "calls template.yaml does not allow:\n{report}"
    );
}
