//! What each function asked of AWS, as IAM sees it: the proxy turns every S3, SES and Step
//! Functions request into the IAM actions and resources it needs, so that
//! `tests/iam/check_calls.py` can check them against the function's policy in template.yaml
//! (moto enforces no IAM at all).
//!
//! Mapping requests to actions follows the S3 "Actions, resources and condition keys" page
//! (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html):
//! HeadObject and GetObject need s3:GetObject, a copy needs s3:GetObject on the source and
//! s3:PutObject on the destination, the parts of a multipart upload need s3:PutObject, and
//! ListObjectsV2 needs s3:ListBucket with the request's prefix as `s3:prefix`. A request that names
//! an object version needs the `*Version` action: GetObject/HeadObject with `versionId` need
//! s3:GetObjectVersion instead of s3:GetObject
//! (https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html), a copy from a version
//! needs it on the source (counted with s3:GetObject, which the CopyObject page requires on the
//! source in any case), DeleteObject with `versionId` needs s3:DeleteObject and
//! s3:DeleteObjectVersion, and a delete conditional on `If-Match` needs s3:DeleteObject and
//! s3:GetObject (https://docs.aws.amazon.com/AmazonS3/latest/API/API_DeleteObject.html,
//! https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-deletes.html).

use std::collections::BTreeMap;
use std::sync::Mutex;

use deltadrop_aws::Function;
use serde::Serialize;

use crate::emulator::{ACCOUNT, REGION};

/// One IAM-authorised action of one function.
#[derive(Debug, Clone, Serialize)]
pub struct Call {
    pub function: &'static str,
    pub action: String,
    pub resource: String,
    pub status: u16,
    pub context: BTreeMap<String, String>,
}

#[derive(Default)]
pub struct Recorder {
    calls: Mutex<Vec<Call>>,
    largest_state: Mutex<usize>,
}

impl Recorder {
    pub fn record(&self, caller: Caller, actions: Vec<Action>, status: u16) {
        let mut calls = self.calls.lock().unwrap();
        calls.extend(actions.into_iter().map(|a| Call {
            function: caller.name(),
            action: a.action,
            resource: a.resource,
            status,
            context: a.context,
        }));
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Notes the size of a Lambda invocation's input or output: a state's input or output.
    pub fn state_size(&self, bytes: usize) {
        let mut largest = self.largest_state.lock().unwrap();
        *largest = (*largest).max(bytes);
    }

    pub fn largest_state(&self) -> usize {
        *self.largest_state.lock().unwrap()
    }
}

/// An IAM action on a resource, with the request's condition keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub action: String,
    pub resource: String,
    pub context: BTreeMap<String, String>,
}

fn action(action: &str, resource: String) -> Action {
    Action {
        action: action.to_string(),
        resource,
        context: BTreeMap::new(),
    }
}

/// Who signed a request: a function (each has its own role on AWS), or the pipeline's state
/// machine (its role makes the calls of its service integrations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Function(Function),
    StateMachine,
    /// The container tier's task (its own role: ContainerTaskRole).
    ContainerTask,
}

impl Caller {
    /// The name tests/iam/check_calls.py knows the principal by.
    pub fn name(self) -> &'static str {
        match self {
            Caller::Function(f) => f.name(),
            Caller::StateMachine => "pipeline",
            Caller::ContainerTask => "task",
        }
    }
}

/// moto's executor signs its own service calls with this access key.
const STATE_MACHINE_KEY: &str = "ak";

/// The container tier's task signs with this one (tests/aws/containers.rs gives it).
pub const CONTAINER_TASK_KEY: &str = "deltadrop-task";

/// Who signed the request: the tests give each function the access key `deltadrop-<name>`, as
/// AWS gives each function its own role; moto's executor signs as the state machine.
pub fn caller(authorization: &str) -> Option<(Caller, String)> {
    let credential = authorization.split("Credential=").nth(1)?;
    let mut scope = credential.split(['/', ',']);
    let key = scope.next()?;
    let service = scope.nth(2)?.to_string();
    if key == STATE_MACHINE_KEY {
        return Some((Caller::StateMachine, service));
    }
    if key == CONTAINER_TASK_KEY {
        return Some((Caller::ContainerTask, service));
    }
    let function = Function::ALL
        .into_iter()
        .find(|f| key == format!("deltadrop-{}", f.name()))?;
    Some((Caller::Function(function), service))
}

pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub header: &'a (dyn Fn(&str) -> Option<String> + Sync),
    pub body: &'a [u8],
}

/// The IAM actions a request needs, by the service that signed it.
pub fn actions(service: &str, request: &Request) -> Vec<Action> {
    match service {
        "s3" => s3_actions(request),
        "ses" => ses_actions(request),
        "states" => states_actions(request),
        "glue" => glue_actions(request),
        "sqs" => sqs_actions(request),
        "ecs" => ecs_actions(request),
        other => vec![action(
            &format!("{other}:Unknown"),
            format!("{} {}", request.method, request.path),
        )],
    }
}

fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

fn object_arn(bucket_and_key: &str) -> String {
    format!("arn:aws:s3:::{bucket_and_key}")
}

fn s3_actions(request: &Request) -> Vec<Action> {
    let query: BTreeMap<String, String> = url::form_urlencoded::parse(request.query.as_bytes())
        .into_owned()
        .collect();
    let path = request.path.trim_start_matches('/');
    let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
    let key = decode(key);
    if key.is_empty() {
        return s3_bucket_actions(request, &query, bucket);
    }
    let object = object_arn(&format!("{bucket}/{key}"));
    let versioned = query.contains_key("versionId");
    if query.contains_key("tagging") {
        return tagging_actions(request.method, versioned, object);
    }
    let mut needed = match request.method {
        "GET" | "HEAD" if versioned => vec![action("s3:GetObjectVersion", object)],
        "GET" | "HEAD" => vec![action("s3:GetObject", object)],
        "PUT" => {
            let mut needed = Vec::new();
            if let Some((source, version)) = copy_source(request) {
                needed.push(action("s3:GetObject", object_arn(&source)));
                if version.is_some() {
                    needed.push(action("s3:GetObjectVersion", object_arn(&source)));
                }
            }
            needed.push(action("s3:PutObject", object));
            needed
        }
        // CreateMultipartUpload (?uploads) and CompleteMultipartUpload (?uploadId=).
        "POST" => vec![action("s3:PutObject", object)],
        "DELETE" if query.contains_key("uploadId") => {
            vec![action("s3:AbortMultipartUpload", object)]
        }
        "DELETE" if versioned => vec![
            action("s3:DeleteObject", object.clone()),
            action("s3:DeleteObjectVersion", object),
        ],
        "DELETE" if (request.header)("if-match").is_some() => vec![
            action("s3:DeleteObject", object.clone()),
            action("s3:GetObject", object),
        ],
        "DELETE" => vec![action("s3:DeleteObject", object)],
        method => vec![action(&format!("s3:Unknown{method}"), object)],
    };
    // PutObject and CreateMultipartUpload with tags need s3:PutObjectTagging as well
    // (https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutObject.html).
    if (request.header)("x-amz-tagging").is_some_and(|t| !t.is_empty()) {
        needed.push(action(
            "s3:PutObjectTagging",
            object_arn(&format!("{bucket}/{key}")),
        ));
    }
    needed
}

/// The `bucket/key` and version a copy (CopyObject or UploadPartCopy) reads.
fn copy_source(request: &Request) -> Option<(String, Option<String>)> {
    let source = decode((request.header)("x-amz-copy-source")?.trim_start_matches('/'));
    Some(match source.split_once("?versionId=") {
        Some((source, version)) => (source.to_string(), Some(version.to_string())),
        None => (source, None),
    })
}

/// GetObjectTagging, PutObjectTagging and DeleteObjectTagging (`?tagging`), of a version with
/// `versionId` (https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObjectTagging.html).
fn tagging_actions(method: &str, versioned: bool, object: String) -> Vec<Action> {
    let verb = match method {
        "GET" | "HEAD" => "Get",
        "PUT" => "Put",
        "DELETE" => "Delete",
        other => return vec![action(&format!("s3:Unknown{other}Tagging"), object)],
    };
    let version = if versioned { "Version" } else { "" };
    vec![action(&format!("s3:{verb}Object{version}Tagging"), object)]
}

/// A copy that would take its source's tags along: the source, and the actions it then needs.
pub struct TagCopy {
    pub bucket: String,
    pub key: String,
    pub version: Option<String>,
    pub actions: Vec<Action>,
}

/// A CopyObject takes its source's tags along unless it replaces them (its tagging directive
/// defaults to COPY), and then needs s3:GetObjectTagging (s3:GetObjectVersionTagging for a
/// version) on the source and s3:PutObjectTagging on the copy
/// (https://docs.aws.amazon.com/AmazonS3/latest/API/API_CopyObject.html). Whether the source has
/// tags only S3 knows: the proxy asks, and adds these actions if it has any. UploadPartCopy
/// copies no tags.
pub fn copied_tags(request: &Request) -> Option<TagCopy> {
    let (source, version) = copy_source(request)?;
    let replaced = (request.header)("x-amz-tagging-directive")
        .is_some_and(|d| d.eq_ignore_ascii_case("REPLACE"));
    if request.method != "PUT" || replaced || request.query.contains("partNumber") {
        return None;
    }
    let mut actions = tagging_actions("GET", version.is_some(), object_arn(&source));
    let copy = decode(request.path.trim_start_matches('/'));
    actions.push(action("s3:PutObjectTagging", object_arn(&copy)));
    let (bucket, key) = source.split_once('/')?;
    Some(TagCopy {
        bucket: bucket.to_string(),
        key: key.to_string(),
        version,
        actions,
    })
}

fn s3_bucket_actions(
    request: &Request,
    query: &BTreeMap<String, String>,
    bucket: &str,
) -> Vec<Action> {
    let bucket_arn = format!("arn:aws:s3:::{bucket}");
    match request.method {
        // DeleteObjects: s3:DeleteObject on every key in the body.
        "POST" if query.contains_key("delete") => deleted_keys(request.body)
            .into_iter()
            .map(|key| action("s3:DeleteObject", object_arn(&format!("{bucket}/{key}"))))
            .collect(),
        "GET" if query.contains_key("uploads") => {
            vec![action("s3:ListBucketMultipartUploads", bucket_arn)]
        }
        "GET" | "HEAD" => {
            let mut list = action("s3:ListBucket", bucket_arn);
            if let Some(prefix) = query.get("prefix").filter(|p| !p.is_empty()) {
                list.context.insert("s3:prefix".into(), prefix.clone());
            }
            vec![list]
        }
        method => vec![action(&format!("s3:Unknown{method}Bucket"), bucket_arn)],
    }
}

/// The `<Key>` elements of a DeleteObjects request body.
fn deleted_keys(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    text.split("<Key>")
        .skip(1)
        .filter_map(|rest| rest.split("</Key>").next())
        .map(|key| {
            key.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&")
        })
        .collect()
}

fn json_body(request: &Request) -> serde_json::Value {
    serde_json::from_slice(request.body).unwrap_or(serde_json::Value::Null)
}

/// SES v2 SendEmail is authorised on the sending identity, with `ses:FromAddress`
/// (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonsimpleemailservicev2.html).
/// The test deployment's sender identity has a default configuration set, as many accounts'
/// identities do (for event publishing or a dedicated IP pool): SES then applies it to every
/// email from the identity, and SendEmail is authorized against the configuration set as well as
/// the identity, as it is when a request names one
/// (https://docs.aws.amazon.com/ses/latest/dg/managing-configuration-sets.html#default-config-sets,
/// https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonsimpleemailservicev2.html).
/// moto knows no default configuration sets.
const SENDER_DEFAULT_CONFIGURATION_SET: &str = "deltadrop-e2e-events";

fn ses_actions(request: &Request) -> Vec<Action> {
    if request.method == "POST" && request.path == "/v2/email/outbound-emails" {
        let body = json_body(request);
        let from = body["FromEmailAddress"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let configuration_set = body["ConfigurationSetName"]
            .as_str()
            .unwrap_or(SENDER_DEFAULT_CONFIGURATION_SET);
        return [
            format!("identity/{from}"),
            format!("configuration-set/{configuration_set}"),
        ]
        .into_iter()
        .map(|resource| {
            let mut send = action(
                "ses:SendEmail",
                format!("arn:aws:ses:{REGION}:{ACCOUNT}:{resource}"),
            );
            send.context.insert("ses:FromAddress".into(), from.clone());
            send
        })
        .collect();
    }
    vec![action(
        "ses:Unknown",
        format!("{} {}", request.method, request.path),
    )]
}

fn states_actions(request: &Request) -> Vec<Action> {
    let target = (request.header)("x-amz-target").unwrap_or_default();
    let operation = target.rsplit('.').next().unwrap_or("Unknown");
    let body = json_body(request);
    let resource = body["stateMachineArn"]
        .as_str()
        .or(body["executionArn"].as_str())
        .unwrap_or("*")
        .to_string();
    vec![action(&format!("states:{operation}"), resource)]
}

/// A Data Catalog call is authorised on the catalog, the database and the table it names, each
/// (https://docs.aws.amazon.com/glue/latest/dg/glue-specifying-resource-arns.html).
fn glue_actions(request: &Request) -> Vec<Action> {
    let target = (request.header)("x-amz-target").unwrap_or_default();
    let operation = target.rsplit('.').next().unwrap_or("Unknown");
    let body = json_body(request);
    let glue = format!("arn:aws:glue:{REGION}:{ACCOUNT}");
    let mut resources = vec![format!("{glue}:catalog")];
    if let Some(database) = body["DatabaseName"].as_str() {
        resources.push(format!("{glue}:database/{database}"));
        let table = body["Name"]
            .as_str()
            .or(body["TableInput"]["Name"].as_str());
        resources.extend(table.map(|table| format!("{glue}:table/{database}/{table}")));
    }
    resources
        .into_iter()
        .map(|resource| action(&format!("glue:{operation}"), resource))
        .collect()
}

/// An SQS request's operation and parameters, in either protocol: JSON (`X-Amz-Target:
/// AmazonSQS.SendMessage`, a JSON body) or query (`Action=SendMessage&QueueUrl=...`).
fn sqs_request(request: &Request) -> (String, BTreeMap<String, String>) {
    if let Some(target) = (request.header)("x-amz-target") {
        let operation = target.rsplit('.').next().unwrap_or("Unknown").to_string();
        let fields = json_body(request)
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect();
        return (operation, fields);
    }
    let mut fields: BTreeMap<String, String> = url::form_urlencoded::parse(request.body)
        .into_owned()
        .collect();
    let operation = fields.remove("Action").unwrap_or_else(|| "Unknown".into());
    (operation, fields)
}

/// SQS actions are authorised on the queue, named by the last part of its URL
/// (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonsqs.html).
fn sqs_actions(request: &Request) -> Vec<Action> {
    let (operation, fields) = sqs_request(request);
    let queue = fields
        .get("QueueUrl")
        .and_then(|url| url.rsplit('/').next())
        .unwrap_or("*");
    vec![action(
        &format!("sqs:{operation}"),
        format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{queue}"),
    )]
}

/// The ECS operation of a request (`RunTask`), from its JSON protocol's target header.
pub fn ecs_operation(request: &Request) -> Option<String> {
    let target = (request.header)("x-amz-target")?;
    let operation = target.strip_prefix("AmazonEC2ContainerServiceV20141113.")?;
    Some(operation.to_string())
}

/// RunTask is authorised on the task definition, with the cluster as `ecs:cluster`
/// (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonelasticcontainerservice.html);
/// the roles it passes are the proxy's to add (it knows the task definition). moto's executor
/// also calls DescribeTasks after a `.waitForTaskToken` RunTask, which AWS's integration does
/// not (its policy grants RunTask only: https://docs.aws.amazon.com/step-functions/latest/dg/ecs-iam.html):
/// not recorded.
fn ecs_actions(request: &Request) -> Vec<Action> {
    match ecs_operation(request).as_deref() {
        Some("RunTask") => {
            let body = json_body(request);
            // A family runs its latest active revision, whose ARN IAM authorises.
            let definition = match body["taskDefinition"].as_str().unwrap_or_default() {
                crate::containers::TASK_FAMILY => crate::containers::TASK_DEFINITION_ARN,
                other => other,
            };
            let mut run = action("ecs:RunTask", definition.to_string());
            let cluster = body["cluster"].as_str().unwrap_or_default().to_string();
            run.context.insert("ecs:cluster".into(), cluster);
            vec![run]
        }
        Some("DescribeTasks") => Vec::new(),
        other => vec![action(
            &format!("ecs:Unknown{}", other.unwrap_or_default()),
            request.path.to_string(),
        )],
    }
}

/// The iam:PassRole a RunTask needs for each role its task definition names
/// (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-iam-roles.html).
pub fn pass_role(role_arn: &str) -> Action {
    let mut pass = action("iam:PassRole", role_arn.to_string());
    pass.context.insert(
        "iam:PassedToService".into(),
        "ecs-tasks.amazonaws.com".into(),
    );
    pass
}

/// The size of what a request hands to a state: an SQS message's body (the lane's message), or
/// a task's answer. Both are bounded by Step Functions' 256 KiB.
pub fn state_payload(service: &str, request: &Request) -> Option<usize> {
    match service {
        "sqs" => {
            let (operation, fields) = sqs_request(request);
            (operation == "SendMessage").then(|| fields.get("MessageBody").map_or(0, String::len))
        }
        "states" => {
            let body = json_body(request);
            body["output"].as_str().map(str::len)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(method: &str, path: &str, query: &str, copy_source: Option<&str>) -> Vec<Action> {
        let header = |name: &str| {
            (name == "x-amz-copy-source")
                .then(|| copy_source.map(str::to_string))
                .flatten()
        };
        actions(
            "s3",
            &Request {
                method,
                path,
                query,
                header: &header,
                body: b"<Delete><Object><Key>a&amp;b</Key></Object></Delete>",
            },
        )
    }

    #[test]
    fn requests_map_to_the_iam_actions_aws_authorises() {
        let get = s3("HEAD", "/b/incoming/my%20file.csv", "", None);
        assert_eq!(get[0].action, "s3:GetObject");
        assert_eq!(get[0].resource, "arn:aws:s3:::b/incoming/my file.csv");
        let copy = s3("PUT", "/b/archive/x", "", Some("/b/incoming/x"));
        assert_eq!(
            copy.iter()
                .map(|a| (a.action.as_str(), a.resource.as_str()))
                .collect::<Vec<_>>(),
            [
                ("s3:GetObject", "arn:aws:s3:::b/incoming/x"),
                ("s3:PutObject", "arn:aws:s3:::b/archive/x")
            ]
        );
        let pinned = |method, query, source| {
            s3(method, "/b/incoming/x", query, source)
                .into_iter()
                .map(|a| a.action)
                .collect::<Vec<_>>()
        };
        assert_eq!(pinned("GET", "versionId=v1", None), ["s3:GetObjectVersion"]);
        assert_eq!(
            pinned("HEAD", "versionId=v1", None),
            ["s3:GetObjectVersion"]
        );
        assert_eq!(
            pinned("DELETE", "versionId=v1", None),
            ["s3:DeleteObject", "s3:DeleteObjectVersion"]
        );
        assert_eq!(
            pinned("PUT", "", Some("/b/incoming/y?versionId=v1")),
            ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject"]
        );
        let list = s3("GET", "/b", "list-type=2&prefix=tables%2Fo%2F", None);
        assert_eq!(list[0].action, "s3:ListBucket");
        assert_eq!(list[0].context["s3:prefix"], "tables/o/");
        let delete = s3("POST", "/b", "delete", None);
        assert_eq!(delete[0].resource, "arn:aws:s3:::b/a&b");
        assert_eq!(
            s3("DELETE", "/b/k", "uploadId=1", None)[0].action,
            "s3:AbortMultipartUpload"
        );
        assert_eq!(
            caller("AWS4-HMAC-SHA256 Credential=deltadrop-stage/20261126/us-east-1/s3/aws4_request, SignedHeaders=host"),
            Some((Caller::Function(Function::Stage), "s3".to_string()))
        );
        assert_eq!(
            caller("AWS4-HMAC-SHA256 Credential=testing/2026/us-east-1/s3/aws4_request"),
            None
        );
        assert_eq!(
            caller("AWS4-HMAC-SHA256 Credential=ak/2026/us-east-1/sqs/aws4_request"),
            Some((Caller::StateMachine, "sqs".to_string()))
        );
        let header = |name: &str| (name == "x-amz-target").then(|| "AmazonSQS.SendMessage".into());
        let json = br#"{"QueueUrl": "http://localhost:5000/123456789012/lane.fifo", "MessageBody": "abc"}"#;
        let request = Request {
            method: "POST",
            path: "/",
            query: "",
            header: &header,
            body: json,
        };
        let send = actions("sqs", &request);
        assert_eq!(send[0].action, "sqs:SendMessage");
        assert_eq!(
            send[0].resource,
            format!("arn:aws:sqs:{REGION}:{ACCOUNT}:lane.fifo")
        );
        assert_eq!(state_payload("sqs", &request), Some(3));
        let no_header = |_: &str| None;
        let query = Request {
            body: b"Action=SendMessage&QueueUrl=http%3A%2F%2Fx%2F1%2Fq.fifo&MessageBody=%7B%7D",
            header: &no_header,
            ..request
        };
        assert_eq!(
            actions("sqs", &query)[0].resource,
            format!("arn:aws:sqs:{REGION}:{ACCOUNT}:q.fifo")
        );
        assert_eq!(state_payload("sqs", &query), Some(2));
    }
}
