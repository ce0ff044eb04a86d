//! The trigger: S3 ObjectCreated notifications (through SQS) start one Step Functions execution
//! per file, under a deterministic name so that a duplicated notification starts nothing new.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sfn::error::{DisplayErrorContext, ProvideErrorMetadata};
use chrono::{DateTime, Utc};
use deltadrop::config::Config;
use deltadrop::steps::{sanitize, RunInput};
use deltadrop::upload::Upload;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::Instrument;

/// An S3 event notification, reduced to what the trigger reads (emulators send fewer fields
/// than AWS; this accepts both).
#[derive(Debug, Clone, Deserialize)]
pub struct S3Notification {
    /// Required: a message without records is not an S3 event (it ends in the dead-letter queue).
    #[serde(rename = "Records")]
    pub records: Vec<S3Record>,
}

/// One record of an S3 event: what happened to which object.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3Record {
    /// E.g. `ObjectCreated:Put`; only `ObjectCreated:*` events start a run.
    #[serde(default)]
    pub event_name: Option<String>,
    /// When S3 finished the request; it becomes the upload's time and the run's start.
    pub event_time: DateTime<Utc>,
    /// The bucket and the object.
    pub s3: S3Entity,
}

/// The `s3` part of a record.
#[derive(Debug, Clone, Deserialize)]
pub struct S3Entity {
    /// The bucket the object is in.
    pub bucket: S3BucketRef,
    /// The object the event is about.
    pub object: S3ObjectRef,
}

/// The bucket of a record.
#[derive(Debug, Clone, Deserialize)]
pub struct S3BucketRef {
    /// The bucket's name.
    pub name: String,
}

/// The object of a record.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3ObjectRef {
    /// The key, URL-encoded as S3 sends it (see [`decode_key`]).
    pub key: String,
    /// The uploaded object's ETag.
    #[serde(default)]
    pub e_tag: Option<String>,
    /// Present when the bucket is versioned.
    #[serde(default)]
    pub version_id: Option<String>,
    /// Grows with every PUT or DELETE of the key (same upload, same sequencer).
    #[serde(default)]
    pub sequencer: Option<String>,
    /// The object's size in bytes: it decides the file's route ([`deltadrop::route`]).
    #[serde(default)]
    pub size: Option<u64>,
}

/// What the trigger did with one notified object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Triggered {
    /// An execution was started for the file.
    Started {
        /// The object's key.
        key: String,
        /// The execution's name (also the run id).
        execution: String,
    },
    /// The same file was notified before: its execution exists already.
    Duplicate {
        /// The object's key.
        key: String,
        /// The name of the execution that exists.
        execution: String,
    },
    /// Not a file for deltadrop: a test event, a folder marker, or no feed matches.
    Skipped {
        /// The object's key (empty for a test event).
        key: String,
        /// Why no execution was started.
        reason: String,
    },
}

/// S3 event keys are URL-encoded with '+' for spaces (`my+file.csv` is `my file.csv`).
pub fn decode_key(raw: &str) -> String {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// A valid execution name (`[A-Za-z0-9_-]`, at most 80 characters) that is the same for the same
/// upload: a readable tail of the key and a hash of bucket, key and the upload's identity.
pub fn execution_name(bucket: &str, key: &str, version: &str) -> String {
    let digest = hex::encode(Sha256::digest(
        format!("{bucket}\n{key}\n{version}").as_bytes(),
    ));
    let file = key.rsplit('/').next().unwrap_or(key);
    // sanitize keeps at most 40 characters: 40 + 1 + 24 stays under 80.
    format!("{}-{}", sanitize(file), &digest[..24])
}

/// The run for one S3 record, or why there is none. `data_bucket` is the deployment's bucket:
/// a notification from any other bucket starts nothing.
pub fn run_for_record(
    config: &Config,
    data_bucket: &str,
    record: &S3Record,
) -> Result<(String, RunInput), Triggered> {
    let key = decode_key(&record.s3.object.key);
    if !record
        .event_name
        .as_deref()
        .unwrap_or("")
        .starts_with("ObjectCreated:")
    {
        return Err(Triggered::Skipped {
            key,
            reason: format!("event {:?}", record.event_name),
        });
    }
    let bucket = &record.s3.bucket.name;
    if bucket != data_bucket {
        return Err(Triggered::Skipped {
            key,
            reason: format!("from bucket {bucket:?}, not the data bucket {data_bucket:?}"),
        });
    }
    if key.is_empty() || key.ends_with('/') {
        return Err(Triggered::Skipped {
            key,
            reason: "a folder marker".into(),
        });
    }
    let feed = match config.feed_for_key(&key) {
        Ok(feed) => feed,
        Err(e) => {
            return Err(Triggered::Skipped {
                key,
                reason: e.to_string(),
            })
        }
    };
    let object = &record.s3.object;
    let upload = Upload {
        // A bucket whose versioning is suspended gives new objects the version id "null"
        // (https://docs.aws.amazon.com/AmazonS3/latest/userguide/VersioningSuspended.html): it
        // names whichever upload came last, not this one, so it pins nothing and tells no two
        // uploads apart; the ETag pins the upload and the sequencer names it.
        version_id: object.version_id.clone().filter(|v| v != "null"),
        etag: object.e_tag.clone(),
        sequencer: object.sequencer.clone(),
        uploaded_at: Some(record.event_time),
    };
    // Not the ETag first (Upload::id): the same bytes uploaded again are a new upload that must
    // run (execution names stay taken for 90 days after a run ends,
    // https://docs.aws.amazon.com/step-functions/latest/apireference/API_StartExecution.html),
    // while a duplicated notification of one upload carries the same version and sequencer.
    let name = execution_name(bucket, &key, upload.id());
    let run = RunInput {
        run_id: name.clone(),
        key,
        feed: feed.name.clone(),
        started_at: record.event_time,
        upload,
    };
    Ok((name, run))
}

/// Where the trigger starts executions, and what it needs to decide.
pub struct Trigger<'a> {
    /// The configuration, or why it could not be read: only records that need a feed fail
    /// without it (S3's test event does not).
    pub config: Result<&'a Config, &'a deltadrop::Error>,
    /// The deployment's bucket: notifications from any other bucket start nothing.
    pub data_bucket: &'a str,
    /// The Step Functions client that starts executions.
    pub sfn: &'a aws_sdk_sfn::Client,
    /// The state machine to start executions of.
    pub state_machine_arn: &'a str,
    /// Whether large files that do not split may go to the container tier.
    pub container_tier: deltadrop::route::ContainerTier,
}

impl Trigger<'_> {
    /// Starts (or recognises) the execution for every record of one S3 event.
    async fn start_all(&self, event: &S3Notification) -> Result<Vec<Triggered>, String> {
        let config = self.config.map_err(|e| e.to_string())?;
        let mut done = Vec::new();
        for record in &event.records {
            let (name, run) = match run_for_record(config, self.data_bucket, record) {
                Ok(found) => found,
                Err(skipped) => {
                    tracing::warn!(?skipped, "not starting an execution");
                    done.push(skipped);
                    continue;
                }
            };
            // The feed exists: run_for_record found it.
            let route = config
                .feed_named(&run.feed)
                .map(|feed| {
                    let size = record.s3.object.size;
                    deltadrop::route::route(feed, &run.key, size, self.container_tier)
                })
                .map_err(|e| e.to_string())?;
            let input = serde_json::json!({ "run": run, "route": route }).to_string();
            let started = self
                .sfn
                .start_execution()
                .state_machine_arn(self.state_machine_arn)
                .name(&name)
                .input(input)
                .send()
                .await;
            match started {
                Ok(_) => done.push(Triggered::Started {
                    key: run.key,
                    execution: name,
                }),
                Err(e) if e.code() == Some("ExecutionAlreadyExists") => {
                    done.push(Triggered::Duplicate {
                        key: run.key,
                        execution: name,
                    })
                }
                Err(e) => return Err(format!("StartExecution {name}: {}", DisplayErrorContext(e))),
            }
        }
        Ok(done)
    }

    /// Handles one SQS batch. A message that fails is reported alone (partial batch response),
    /// so it is retried without re-running the others. `s3:TestEvent` messages are acknowledged,
    /// with or without a configuration.
    pub async fn handle_batch(&self, batch: &SqsEvent) -> (SqsBatchResponse, Vec<Triggered>) {
        let mut response = SqsBatchResponse::default();
        let mut done = Vec::new();
        for message in &batch.records {
            let id = message.message_id.clone().unwrap_or_default();
            let span = tracing::info_span!("message", message_id = %id);
            match self.handle_message(message).instrument(span).await {
                Ok(mut triggered) => done.append(&mut triggered),
                Err(()) => response.batch_item_failures.push(batch_item_failure(id)),
            }
        }
        (response, done)
    }

    /// One SQS message: what it started, or `Err` (logged) when SQS must deliver it again.
    async fn handle_message(&self, message: &SqsMessage) -> Result<Vec<Triggered>, ()> {
        let body = message.body.as_deref().unwrap_or("");
        let value: serde_json::Value = serde_json::from_str(body).map_err(|e| {
            tracing::error!(error = %e, "not JSON; leaving it for the dead-letter queue");
        })?;
        if value.get("Event").and_then(|e| e.as_str()) == Some("s3:TestEvent") {
            return Ok(vec![Triggered::Skipped {
                key: String::new(),
                reason: "s3:TestEvent".into(),
            }]);
        }
        let outcome = match serde_json::from_value::<S3Notification>(value) {
            Ok(event) => self.start_all(&event).await,
            Err(e) => Err(format!("not an S3 event: {e}")),
        };
        outcome.map_err(|e| {
            tracing::error!(error = %e, "could not start the execution; will retry");
        })
    }
}

/// A message to deliver again, in an SQS event's partial batch response (the trigger's and the
/// lane merger's).
pub(crate) fn batch_item_failure(id: String) -> BatchItemFailure {
    let mut item = BatchItemFailure::default();
    item.item_identifier = id;
    item
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::event::sqs::SqsMessage;

    fn message(id: &str, body: &str) -> SqsMessage {
        let mut m = SqsMessage::default();
        m.message_id = Some(id.into());
        m.body = Some(body.into());
        m
    }

    fn failed_ids(response: &SqsBatchResponse) -> Vec<&str> {
        response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect()
    }

    #[tokio::test]
    async fn only_the_message_that_fails_is_reported_and_test_events_are_acknowledged() {
        // No request reaches Step Functions in this test: the client only has to exist.
        let sfn = aws_sdk_sfn::Client::from_conf(
            aws_sdk_sfn::Config::builder()
                .behavior_version(aws_sdk_sfn::config::BehaviorVersion::latest())
                .region(aws_sdk_sfn::config::Region::new("us-east-1"))
                .build(),
        );
        let config = Config::from_toml(
            "[[feeds]]\nname = \"o\"\nincoming = \"incoming/\"\ntable = \"t\"\nkeys = [\"id\"]\n",
            "test",
        )
        .unwrap();
        let mut batch = SqsEvent::default();
        batch.records = vec![
            message(
                "test-event",
                r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"b"}"#,
            ),
            message("garbage", "this is not JSON"),
            message("not-s3", r#"{"hello": "world"}"#),
            message(
                "folder",
                r#"{"Records":[{"eventName":"ObjectCreated:Put","eventTime":"2026-01-01T00:00:00Z","s3":{"bucket":{"name":"b"},"object":{"key":"incoming/sub/"}}}]}"#,
            ),
            message(
                "other-bucket",
                r#"{"Records":[{"eventName":"ObjectCreated:Put","eventTime":"2026-01-01T00:00:00Z","s3":{"bucket":{"name":"elsewhere"},"object":{"key":"incoming/a.csv"}}}]}"#,
            ),
        ];
        let trigger = Trigger {
            config: Ok(&config),
            data_bucket: "b",
            sfn: &sfn,
            state_machine_arn: "arn:aws:states:us-east-1:1:stateMachine:x",
            container_tier: deltadrop::route::ContainerTier::Absent,
        };
        let (response, done) = trigger.handle_batch(&batch).await;
        let failed = failed_ids(&response);
        assert_eq!(failed, ["garbage", "not-s3"]);
        assert_eq!(done.len(), 3, "{done:?}");
        assert!(
            matches!(&done[1], Triggered::Skipped { reason, .. } if reason == "a folder marker")
        );
        assert!(
            matches!(&done[2], Triggered::Skipped { reason, .. } if reason.contains("not the data bucket")),
            "{done:?}"
        );

        // Without a configuration (first deploy): the test event is still acknowledged, and a
        // file's message fails (to be retried, then dead-lettered) with the configuration error.
        let missing = deltadrop::Error::ConfigError {
            field: "s3://b/deltadrop.toml".into(),
            message: "the configuration does not exist".into(),
        };
        let trigger = Trigger {
            config: Err(&missing),
            ..trigger
        };
        let (response, done) = trigger.handle_batch(&batch).await;
        let failed = failed_ids(&response);
        assert_eq!(failed, ["garbage", "not-s3", "folder", "other-bucket"]);
        assert!(
            matches!(&done[..], [Triggered::Skipped { reason, .. }] if reason == "s3:TestEvent"),
            "{done:?}"
        );
    }

    #[test]
    fn a_reupload_of_the_same_bytes_gets_a_new_execution_and_a_duplicate_does_not() {
        let config = Config::from_toml(
            "[[feeds]]\nname = \"o\"\nincoming = \"incoming/\"\ntable = \"t\"\nkeys = [\"id\"]\n",
            "test",
        )
        .unwrap();
        let with_version = |sequencer: &str, version: &str| -> S3Record {
            serde_json::from_str(&format!(
                r#"{{"eventName":"ObjectCreated:Put","eventTime":"2026-01-01T00:00:00Z","s3":{{"bucket":{{"name":"b"}},"object":{{"key":"incoming/a.csv","eTag":"same-bytes","sequencer":"{sequencer}"{version}}}}}}}"#
            ))
            .unwrap()
        };
        let record = |sequencer: &str| with_version(sequencer, "");
        let name = |r: &S3Record| run_for_record(&config, "b", r).unwrap().0;
        assert_eq!(
            name(&record("0055AED6DCD90281E5")),
            name(&record("0055AED6DCD90281E5"))
        );
        assert_ne!(
            name(&record("0055AED6DCD90281E5")),
            name(&record("0055AED6DCD90281F7"))
        );
        // Versioning suspended: every upload's version id is "null", the sequencer still differs.
        let suspended = |sequencer: &str| with_version(sequencer, r#","versionId":"null""#);
        assert_ne!(
            name(&suspended("0055AED6DCD90281E5")),
            name(&suspended("0055AED6DCD90281F7"))
        );
        assert_eq!(
            name(&suspended("0055AED6DCD90281E5")),
            name(&record("0055AED6DCD90281E5"))
        );
        let run = run_for_record(&config, "b", &suspended("0055AED6DCD90281E5"))
            .unwrap()
            .1;
        assert_eq!(run.upload.version_id, None);
        assert_eq!(run.upload.etag.as_deref(), Some("same-bytes"));
    }

    #[test]
    fn keys_are_decoded_and_names_are_valid_and_stable() {
        assert_eq!(
            decode_key("incoming/my+file%C3%A9.csv"),
            "incoming/my fileé.csv"
        );
        let a = execution_name("b", "incoming/orders/my file (1).csv", "\"etag\"");
        assert_eq!(
            a,
            execution_name("b", "incoming/orders/my file (1).csv", "\"etag\"")
        );
        assert_ne!(
            a,
            execution_name("b", "incoming/orders/my file (1).csv", "\"other\"")
        );
        assert!(
            a.len() <= 80
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{a}"
        );
        let long = execution_name("b", &"x".repeat(300), "e");
        assert!(long.len() <= 80, "{}", long.len());
    }
}
