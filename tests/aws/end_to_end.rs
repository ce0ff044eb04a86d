//! What AWS would do with three files: S3 → SQS → trigger → Step Functions → the four steps.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::types::{
    Event, FilterRule, FilterRuleName, NotificationConfiguration, NotificationConfigurationFilter,
    QueueConfiguration, S3KeyFilter,
};
use deltadrop::delta::TableLocation;
use deltadrop_aws::{invoke, AwsContext, Function, Settings};
use serde_json::{json, Value};

use crate::emulator::{function_arn, start_proxy, Moto, ACCOUNT, REGION};

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
"#;

struct World {
    moto: Moto,
    s3: aws_sdk_s3::Client,
    sqs: aws_sdk_sqs::Client,
    sfn: aws_sdk_sfn::Client,
    queue_url: String,
    state_machine_arn: String,
    ctx: Arc<AwsContext>,
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

        s3.create_bucket().bucket(BUCKET).send().await.unwrap();
        // The configuration goes in before notifications are on, as a deployment would do it.
        s3.put_object()
            .bucket(BUCKET)
            .key("deltadrop.toml")
            .body(CONFIG.as_bytes().to_vec().into())
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

        let settings = Settings {
            bucket: BUCKET.into(),
            config_key: "deltadrop.toml".into(),
            state_machine_arn: Some(state_machine_arn.clone()),
            s3_endpoint: Some(moto.endpoint.clone()),
        };
        let ctx = Arc::new(AwsContext::new(&sdk, &settings).await.unwrap());
        start_proxy(&moto, ctx.clone()).await;
        World {
            moto,
            s3,
            sqs,
            sfn,
            queue_url,
            state_machine_arn,
            ctx,
        }
    }

    async fn upload(&self, key: &str, body: &str) {
        self.s3
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .body(body.as_bytes().to_vec().into())
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

    /// Receives the queued S3 notifications as Lambda's SQS event source would hand them over.
    async fn receive_notifications(&self) -> Value {
        let mut records = Vec::new();
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
                let is_test_event = m.body().unwrap_or("").contains("s3:TestEvent");
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
                if !is_test_event {
                    records.push(json!({
                        "messageId": m.message_id(), "receiptHandle": m.receipt_handle(), "body": m.body(),
                        "attributes": {}, "messageAttributes": {}, "eventSource": "aws:sqs",
                        "eventSourceARN": format!("arn:aws:sqs:{REGION}:{ACCOUNT}:deltadrop-incoming"), "awsRegion": REGION,
                    }));
                }
            }
            if !records.is_empty() {
                break;
            }
        }
        assert!(!records.is_empty(), "no S3 notification arrived in SQS");
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
        invoke(&self.ctx, Function::Trigger, batch.clone())
            .await
            .unwrap()
    }

    async fn started_execution(&self, key: &str, batch: &Value) -> String {
        let response = self.trigger(batch).await;
        assert_eq!(response["batchItemFailures"], json!([]), "{response}");
        let executions = self.executions().await;
        let body: Value =
            serde_json::from_str(batch["Records"][0]["body"].as_str().unwrap()).unwrap();
        let record = &body["Records"][0];
        let (name, _) = deltadrop_aws::trigger::run_for_record(
            &self.ctx.env.config,
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
        let table = TableLocation::new(
            url::Url::parse(&format!("s3://{BUCKET}/tables/orders/")).unwrap(),
            deltadrop::storage::ObjectStorage::table_storage_options(self.ctx.env.storage.as_ref()),
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

    // 1. A first file: the notification starts an execution that loads it.
    world
        .upload(
            "incoming/orders/first.csv",
            "order_id,status,amount\n1,new,10.5\n2,new,20\n",
        )
        .await;
    let batch = world.receive_notifications().await;
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

    // 2. An upsert file; its duplicated notification starts nothing new.
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

    // 3. A malformed file: quarantined with its report, a failure email, a FAILED execution.
    world
        .upload("incoming/orders/bad.csv", "order_id,status,amount\n4,new\n")
        .await;
    let batch = world.receive_notifications().await;
    let bad = world.started_execution("bad.csv", &batch).await;
    let (status, error, _) = world.finished(&bad).await;
    assert_eq!(
        (status.as_str(), error.as_deref()),
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
