//! What AWS would do with a first deploy and a handful of files: S3 → SQS → trigger → Step
//! Functions → the four steps, with the checks moto cannot make itself (IAM, the 256 KB state
//! limit) made on what the proxy saw.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter,
    QueueConfiguration, S3KeyFilter,
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
        }
    }

    fn ctx(&self, function: Function) -> &AwsContext {
        context(&self.contexts, function)
    }

    async fn upload_config(&self) {
        self.upload("deltadrop.toml", CONFIG).await;
    }

    async fn upload(&self, key: &str, body: impl AsRef<[u8]>) {
        self.s3
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .body(body.as_ref().to_vec().into())
            .send()
            .await
            .unwrap();
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
                    "messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn files_dropped_in_the_bucket_become_a_delta_table_through_the_real_state_machine() {
    let world = World::new().await;
    first_deploy_before_the_configuration(&world).await;
    an_upsert_and_a_duplicated_notification(&world).await;
    a_malformed_file_is_quarantined(&world).await;
    a_very_wide_file_and_a_huge_bad_value_stay_within_the_state_limit(&world).await;
    a_mail_failure_does_not_fail_a_load(&world).await;
    a_failure_after_the_archive_moves_the_file_to_quarantine(&world).await;
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
    assert!(world.exists("archive/incoming/orders/first.csv").await);
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
    assert!(world.exists("quarantine/incoming/orders/bad.csv").await);
    assert!(
        world
            .exists("quarantine/incoming/orders/bad.csv.error.json")
            .await
    );
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
    let Finished { status, error, .. } = world.drop_file("incoming/wide/bad.csv", bad).await;
    assert_eq!(
        (status.as_str(), error.as_deref()),
        ("FAILED", Some("InvalidValue"))
    );
    assert!(world.exists("quarantine/incoming/wide/bad.csv").await);
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
    assert!(world.exists("quarantine/incoming/orders/late.csv").await);
    assert!(
        world
            .exists("quarantine/incoming/orders/late.csv.error.json")
            .await
    );
    assert!(!world.exists("archive/incoming/orders/late.csv").await);
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
