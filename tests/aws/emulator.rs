//! The emulated AWS: a moto server (started by ./scripts/test) and, on the port moto's Step
//! Functions executor calls back (MOTO_PORT), a proxy that runs Lambda invocations with the real
//! handlers and forwards everything else to moto. moto's own Lambda would need Docker. The
//! functions use the proxy as their AWS endpoint: it records what each one asks for (IAM
//! conformance) and injects faults.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use deltadrop_aws::{invoke, AwsContext, Function};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::containers::Containers;
use crate::recorder::{self, Action, Caller, Recorder};

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";

pub struct Moto {
    /// moto itself, e.g. http://127.0.0.1:5000
    pub endpoint: String,
    /// The port moto's executor sends Lambda invocations to (its MOTO_PORT).
    pub proxy_port: u16,
}

impl Moto {
    /// Where ./scripts/test started moto. Set up the environment the SDK and delta-rs read.
    pub fn from_env() -> Moto {
        let endpoint = std::env::var("DELTADROP_MOTO_ENDPOINT")
            .expect("DELTADROP_MOTO_ENDPOINT is not set: run the tests with ./scripts/test, which starts moto");
        let proxy_port = std::env::var("DELTADROP_MOTO_PROXY_PORT")
            .expect("DELTADROP_MOTO_PROXY_PORT is not set: run the tests with ./scripts/test")
            .parse()
            .unwrap();
        Moto {
            endpoint,
            proxy_port,
        }
    }

    /// The test's own SDK configuration: straight to moto, as nobody in particular.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config(&self.endpoint, "testing").await
    }

    /// The proxy in front of moto: what the functions use as their AWS endpoint.
    pub fn proxy_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy_port)
    }

    /// POSTs to moto's own API (`/moto-api/...`).
    pub async fn api_post(&self, path: &str, body: serde_json::Value) {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.endpoint))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
    }

    /// moto's recorded state, e.g. the emails SES "sent".
    pub async fn data(&self) -> serde_json::Value {
        let text = reqwest::get(format!("{}/moto-api/data.json", self.endpoint))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

pub fn function_arn(function: Function) -> String {
    format!(
        "arn:aws:lambda:{REGION}:{ACCOUNT}:function:deltadrop-{}",
        function.name()
    )
}

/// The function a Lambda invoke path names, by name or by ARN.
fn function_for(path: &str) -> Option<Function> {
    let name = path
        .strip_prefix("/2015-03-31/functions/")?
        .strip_suffix("/invocations")?;
    let name = percent_decode(name);
    Function::ALL
        .into_iter()
        .find(|f| name.ends_with(&format!("deltadrop-{}", f.name())))
}

fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// Faults the proxy injects, to see what the pipeline does when AWS misbehaves.
#[derive(Default)]
pub struct Faults {
    /// How many of the next SES SendEmail calls are rejected (`u32::MAX`: all of them).
    pub reject_mail: AtomicU32,
    /// Denies the upsert function's writes (AccessDenied): a failure after the file was archived.
    pub deny_upsert_writes: AtomicBool,
    /// Every n-th S3 request of each kind (GET/HEAD, PUT, COPY, DELETE, LIST) of the functions
    /// fails before it reaches S3 (0: none), alternately with 503 SlowDown and 500
    /// InternalError, the two answers S3 documents as retryable
    /// (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html).
    pub s3_fault_every: AtomicU64,
    s3_requests: Mutex<BTreeMap<&'static str, u64>>,
    /// The S3 faults injected, by answer and request kind.
    pub s3_faults: Mutex<BTreeMap<String, u32>>,
    /// How many mergers die just before a commit lands: the commit's PUT never reaches S3.
    pub kill_merger_before_commit: AtomicU32,
    /// How many mergers die after their commit landed, before answering: at their first answer
    /// of an applied file.
    pub kill_merger_after_commit: AtomicU32,
    /// The pollers whose merger was killed (by session token), refused everything until the
    /// poller has dropped it.
    killed: Mutex<std::collections::BTreeSet<String>>,
    /// The errors Step Functions answers the merger's next answers of an applied file with, one
    /// each, as for an execution that stopped waiting (moto never does): `TaskTimedOut`,
    /// `InvalidToken` or `TaskDoesNotExist`.
    pub refuse_answers: Mutex<std::collections::VecDeque<&'static str>>,
    /// The file (its key) whose every answer Step Functions refuses with `TaskTimedOut`: as for
    /// a merger that commits it and dies or times out before answering, on every attempt. On
    /// AWS its message comes back only after the lane queue's visibility timeout (5,040 s), when
    /// the Upsert state's heartbeat (3,600 s) has run out; here the answer is refused as
    /// the execution would by then refuse it. The lane gives up, and only the table can tell.
    pub time_out_every_answer_of: Mutex<Option<String>>,
    /// The merger's answers that reached Step Functions, by outcome (`applied`...) or error.
    pub answers: Mutex<BTreeMap<String, u32>>,
    /// Invocations per function, and how many of them failed.
    pub invocations: Mutex<BTreeMap<&'static str, (u32, u32)>>,
    /// Until then Lambda refuses every invocation of a state as throttled (429
    /// TooManyRequestsException: account or function concurrency used up), as in a burst larger
    /// than the account's concurrency or on a new account.
    pub throttle_until: Mutex<Option<std::time::Instant>>,
    /// The invocations refused so.
    pub throttled: AtomicU32,
    /// While set, the Glue Data Catalog answers every call with 500 InternalServiceException (a
    /// catalog outage; the functions' SDK retries it, then gives up).
    pub catalog_outage: AtomicBool,
    /// The catalog calls answered so.
    pub catalog_faults: AtomicU32,
}

impl Faults {
    /// The error response a fault gives this request instead of moto's answer, if any.
    fn response(
        &self,
        caller: Caller,
        actions: &[Action],
        request: &recorder::Request,
    ) -> Option<Response<Full<Bytes>>> {
        let wants = |name: &str| actions.iter().any(|a| a.action == name);
        if let Some(fault) = self.merger_fault(caller, actions, request) {
            return Some(fault);
        }
        if let Some(fault) = self.s3_fault(actions) {
            return Some(fault);
        }
        if actions.iter().any(|a| a.action.starts_with("glue:"))
            && self.catalog_outage.load(Ordering::SeqCst)
        {
            self.catalog_faults.fetch_add(1, Ordering::SeqCst);
            return Some(error_response(
                500,
                "application/x-amz-json-1.1",
                "InternalServiceException",
                r#"{"__type":"InternalServiceException","message":"injected fault: the catalog is down"}"#,
            ));
        }
        if wants("ses:SendEmail") && self.take_mail_rejection() {
            return Some(error_response(
                400,
                "application/json",
                "MessageRejected",
                r#"{"message":"injected fault: the message was rejected"}"#,
            ));
        }
        if caller == Caller::Function(Function::Upsert)
            && wants("s3:PutObject")
            && self.deny_upsert_writes.load(Ordering::SeqCst)
        {
            return Some(error_response(
                403,
                "application/xml",
                "AccessDenied",
                "<Error><Code>AccessDenied</Code><Message>injected fault</Message></Error>",
            ));
        }
        None
    }

    fn s3_fault(&self, actions: &[Action]) -> Option<Response<Full<Bytes>>> {
        let every = self.s3_fault_every.load(Ordering::SeqCst);
        if every == 0 || !actions.iter().any(|a| a.action.starts_with("s3:")) {
            return None;
        }
        let kind = request_kind(actions);
        let n = {
            let mut requests = self.s3_requests.lock().unwrap();
            let n = requests.entry(kind).or_default();
            *n += 1;
            *n
        };
        if n % every != 0 {
            return None;
        }
        let (status, code) = if (n / every) % 2 == 0 {
            (503, "SlowDown")
        } else {
            (500, "InternalError")
        };
        *self
            .s3_faults
            .lock()
            .unwrap()
            .entry(format!("{status} {code} on {kind}"))
            .or_default() += 1;
        Some(error_response(
            status,
            "application/xml",
            code,
            &format!("<Error><Code>{code}</Code><Message>injected fault</Message></Error>"),
        ))
    }

    /// The merger's faults, as the counts ask: refuses its answer of an applied file (with the
    /// next of `refuse_answers`), or kills it (the poller that runs it, told by its session token) at its
    /// commit or at its first answer of an applied file; a killed merger's requests all fail
    /// until its poller has dropped it, so nothing more of its work lands.
    fn merger_fault(
        &self,
        caller: Caller,
        actions: &[Action],
        request: &recorder::Request,
    ) -> Option<Response<Full<Bytes>>> {
        let poller = (request.header)("x-amz-security-token")?;
        if caller != Caller::Function(Function::Upsert) {
            return None;
        }
        let take = |count: &AtomicU32| {
            count
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        };
        let mut killed = self.killed.lock().unwrap();
        let commit = actions.iter().any(|a| {
            a.action == "s3:PutObject"
                && a.resource.contains("/_delta_log/")
                && a.resource.ends_with(".json")
        });
        let answers = actions.iter().any(|a| a.action == "states:SendTaskSuccess");
        let answers_applied = answers && answered_outcome(request).as_deref() == Some("applied");
        let lost_file = self.time_out_every_answer_of.lock().unwrap().clone();
        let answers_lost_file = answers
            && lost_file.is_some_and(|key| {
                answered_output(request).is_some_and(|output| {
                    output["file_identity"]
                        .as_str()
                        .is_some_and(|id| id.starts_with(&format!("deltadrop:{key}@")))
                })
            });
        let refusal = if answers_lost_file {
            Some("TaskTimedOut")
        } else {
            answers_applied
                .then(|| self.refuse_answers.lock().unwrap().pop_front())
                .flatten()
        };
        if let Some(code) = refusal {
            // https://docs.aws.amazon.com/step-functions/latest/apireference/API_SendTaskSuccess.html
            return Some(error_response(
                400,
                "application/x-amz-json-1.0",
                code,
                &serde_json::json!({ "__type": code, "message": "injected fault: the task no longer waits" })
                    .to_string(),
            ));
        }
        let dies = killed.contains(&poller)
            || (commit && take(&self.kill_merger_before_commit))
            || (answers_applied && take(&self.kill_merger_after_commit));
        if !dies {
            return None;
        }
        killed.insert(poller);
        Some(error_response(
            503,
            "application/json",
            "ServiceUnavailable",
            r#"{"message":"injected fault: the merger died"}"#,
        ))
    }

    /// Whether the poller's merger was killed; the poller drops it and calls [`Faults::revive`].
    pub fn is_killed(&self, poller: &str) -> bool {
        self.killed.lock().unwrap().contains(poller)
    }

    /// The poller dropped its killed merger: its next one may work.
    pub fn revive(&self, poller: &str) {
        self.killed.lock().unwrap().remove(poller);
    }

    fn count_answer(&self, actions: &[Action], request: &recorder::Request, status: u16) {
        let kind = if actions.iter().any(|a| a.action == "states:SendTaskSuccess") {
            answered_outcome(request)
        } else if actions.iter().any(|a| a.action == "states:SendTaskFailure") {
            serde_json::from_slice::<serde_json::Value>(request.body)
                .ok()
                .and_then(|b| b["error"].as_str().map(str::to_string))
        } else {
            None
        };
        if let Some(kind) = kind.filter(|_| status == 200) {
            *self.answers.lock().unwrap().entry(kind).or_default() += 1;
        }
    }

    pub fn count_invocation(&self, function: Function, failed: bool) {
        let mut invocations = self.invocations.lock().unwrap();
        let (calls, failures) = invocations.entry(function.name()).or_default();
        *calls += 1;
        *failures += u32::from(failed);
    }

    fn take_mail_rejection(&self) -> bool {
        self.reject_mail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                0 => None,
                u32::MAX => Some(u32::MAX),
                n => Some(n - 1),
            })
            .is_ok()
    }
}

/// One context per function: each signs its requests with its own access key, as each Lambda
/// function has its own role on AWS, so the proxy can tell who asked for what.
pub type Contexts = Vec<(Function, Arc<AwsContext>)>;

/// The SDK configuration a function gets: its own credentials, and the proxy as the endpoint of
/// every service so that the proxy sees (and records) each call before moto answers it.
pub async fn function_sdk_config(moto: &Moto, function: Function) -> aws_config::SdkConfig {
    sdk_config(
        &moto.proxy_endpoint(),
        &format!("deltadrop-{}", function.name()),
    )
    .await
}

/// The upsert function's SDK configuration for one poller of the lane: the session token tells
/// the proxy which poller's merger made a request (to kill that one).
pub async fn merger_sdk_config(moto: &Moto, poller: &str) -> aws_config::SdkConfig {
    let access_key = format!("deltadrop-{}", Function::Upsert.name());
    credentials_config(
        &moto.proxy_endpoint(),
        &access_key,
        Some(poller.to_string()),
    )
    .await
}

async fn sdk_config(endpoint: &str, access_key: &str) -> aws_config::SdkConfig {
    credentials_config(endpoint, access_key, None).await
}

async fn credentials_config(
    endpoint: &str,
    access_key: &str,
    session_token: Option<String>,
) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            access_key,
            "testing",
            session_token,
            None,
            "moto",
        ))
        .load()
        .await
}

/// The context of one function.
pub fn context(contexts: &Contexts, function: Function) -> &AwsContext {
    &contexts
        .iter()
        .find(|(f, _)| *f == function)
        .expect("a context per function")
        .1
}

struct Proxy {
    contexts: Contexts,
    moto: String,
    client: reqwest::Client,
    /// Asks moto what the proxy needs to know (object tags), unrecorded.
    s3: aws_sdk_s3::Client,
    recorder: Arc<Recorder>,
    faults: Arc<Faults>,
    containers: Arc<Containers>,
}

impl Proxy {
    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if let Some(function) = function_for(parts.uri.path()) {
            return self.invoke(function, &body).await;
        }
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let request = recorder::Request {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            header: &header,
            body: &body,
        };
        let caller = header("authorization").and_then(|a| recorder::caller(&a));
        let mut actions = caller
            .as_ref()
            .map(|(_, service)| recorder::actions(service, &request));
        if let (Some(actions), Some(copy)) = (actions.as_mut(), recorder::copied_tags(&request)) {
            if self.has_tags(&copy).await {
                actions.extend(copy.actions);
            }
        }
        if let Some(actions) = actions.as_mut() {
            let passed = Containers::passed_roles(actions);
            actions.extend(passed);
        }
        if let Some(size) = caller
            .as_ref()
            .and_then(|(_, service)| recorder::state_payload(service, &request))
        {
            self.recorder.state_size(size);
        }
        let fault = match (&caller, &actions) {
            (Some((caller, _)), Some(actions)) => self.faults.response(*caller, actions, &request),
            _ => None,
        };
        let response = match (fault, recorder::ecs_operation(&request)) {
            (Some(response), _) => response,
            (None, Some(operation)) => {
                let (status, answer) = self.containers.answer(&operation, &body);
                Response::builder()
                    .status(status)
                    .header("content-type", "application/x-amz-json-1.1")
                    .body(Full::new(Bytes::from(answer.to_string())))
                    .unwrap()
            }
            (None, None) => self.forward(&parts, body.clone()).await,
        };
        if let (Some((caller, _)), Some(actions)) = (caller, actions) {
            let status = response.status().as_u16();
            self.faults.count_answer(&actions, &request, status);
            // A refused call of a queue, a state machine or ECS is never expected: say which,
            // for the test's output (S3's 404s and 412s, and Glue's answer for a table it does
            // not have yet, are part of the pipeline's work).
            let expected =
                |a: &Action| a.action.starts_with("s3:") || a.action.starts_with("glue:");
            if status >= 400 && !actions.iter().any(expected) {
                eprintln!(
                    "proxy: {} {:?} on {:?} answered {status}",
                    caller.name(),
                    actions.iter().map(|a| &a.action).collect::<Vec<_>>(),
                    actions.iter().map(|a| &a.resource).collect::<Vec<_>>(),
                );
            }
            self.recorder.record(caller, actions, status);
        }
        response
    }

    /// Whether the copy's source has tags (asked of moto directly).
    async fn has_tags(&self, copy: &recorder::TagCopy) -> bool {
        let tagging = self
            .s3
            .get_object_tagging()
            .bucket(&copy.bucket)
            .key(&copy.key)
            .set_version_id(copy.version.clone())
            .send()
            .await;
        tagging.is_ok_and(|t| !t.tag_set().is_empty())
    }

    /// Runs a Lambda invocation with the real handler. As Lambda does: 200 either way, a
    /// failure marked by X-Amz-Function-Error.
    async fn invoke(&self, function: Function, body: &Bytes) -> Response<Full<Bytes>> {
        let until = *self.faults.throttle_until.lock().unwrap();
        if until.is_some_and(|until| std::time::Instant::now() < until) {
            self.faults.throttled.fetch_add(1, Ordering::SeqCst);
            crate::cloudwatch::record(
                "AWS/Lambda",
                "Throttles",
                &[("FunctionName", function.name())],
                1.0,
                format!("{} throttled", function.name()),
            );
            // https://docs.aws.amazon.com/lambda/latest/api/API_Invoke.html#API_Invoke_Errors
            return error_response(
                429,
                "application/json",
                "TooManyRequestsException",
                r#"{"Type":"User","message":"Rate Exceeded.","Reason":"ConcurrentInvocationLimitExceeded"}"#,
            );
        }
        self.recorder.state_size(body.len());
        let payload: serde_json::Value =
            serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
        let ctx = context(&self.contexts, function);
        let failure = |error_type: &str, message: &str| {
            serde_json::json!({"errorType": error_type, "errorMessage": message}).to_string()
        };
        let (answer, failed) = match invoke(ctx, function, payload).await {
            Ok(output) => (output.to_string(), false),
            Err(diagnostic) => {
                crate::cloudwatch::record(
                    "AWS/Lambda",
                    "Errors",
                    &[("FunctionName", function.name())],
                    1.0,
                    format!("{} failed: {}", function.name(), diagnostic.error_type),
                );
                (
                    failure(&diagnostic.error_type, &diagnostic.error_message),
                    true,
                )
            }
        };
        self.faults.count_invocation(function, failed);
        self.recorder.state_size(answer.len());
        let mut response = Response::builder();
        if failed {
            response = response.header("X-Amz-Function-Error", "Unhandled");
        }
        response.body(Full::new(Bytes::from(answer))).unwrap()
    }

    async fn forward(
        &self,
        parts: &hyper::http::request::Parts,
        body: Bytes,
    ) -> Response<Full<Bytes>> {
        let url = format!(
            "{}{}",
            self.moto,
            parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
        );
        let is_head = parts.method == hyper::Method::HEAD;
        let mut forwarded = self.client.request(parts.method.clone(), url).body(body);
        for (name, value) in &parts.headers {
            if name != "host" && name != "content-length" && name != "transfer-encoding" {
                forwarded = forwarded.header(name, value);
            }
        }
        match forwarded.send().await {
            Ok(answer) => {
                let mut response = Response::builder().status(answer.status());
                for (name, value) in answer.headers() {
                    // A HEAD answer's length is the object's size, which the caller reads.
                    let body_framing =
                        name == "transfer-encoding" || (name == "content-length" && !is_head);
                    if !body_framing {
                        response = response.header(name, value);
                    }
                }
                let bytes = answer.bytes().await.unwrap_or_default();
                response.body(Full::new(bytes)).unwrap()
            }
            Err(e) => Response::builder()
                .status(502)
                .body(Full::new(Bytes::from(format!("proxy: {e}"))))
                .unwrap(),
        }
    }
}

/// What kind of S3 request asked for these actions, for the fault counts.
/// The outcome a SendTaskSuccess answers with (`applied`...).
/// The output a `SendTaskSuccess` answers with.
fn answered_output(request: &recorder::Request) -> Option<serde_json::Value> {
    let body: serde_json::Value = serde_json::from_slice(request.body).ok()?;
    serde_json::from_str(body["output"].as_str()?).ok()
}

fn answered_outcome(request: &recorder::Request) -> Option<String> {
    answered_output(request)?["outcome"]
        .as_str()
        .map(str::to_string)
}

fn request_kind(actions: &[Action]) -> &'static str {
    let wants = |prefix: &str| actions.iter().any(|a| a.action.starts_with(prefix));
    if wants("s3:ListBucket") {
        "LIST"
    } else if wants("s3:PutObject") && wants("s3:GetObject") {
        "COPY"
    } else if wants("s3:PutObject") {
        "PUT"
    } else if wants("s3:DeleteObject") || wants("s3:AbortMultipartUpload") {
        "DELETE"
    } else {
        "GET/HEAD"
    }
}

fn error_response(
    status: u16,
    content_type: &str,
    code: &str,
    body: &str,
) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("x-amzn-ErrorType", code)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// Serves the proxy until the test ends.
pub async fn start_proxy(
    moto: &Moto,
    contexts: Contexts,
    recorder: Arc<Recorder>,
    faults: Arc<Faults>,
    containers: Arc<Containers>,
) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", moto.proxy_port))
        .await
        .unwrap();
    let proxy = Arc::new(Proxy {
        contexts,
        moto: moto.endpoint.clone(),
        client: reqwest::Client::new(),
        s3: aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&moto.sdk_config().await)
                .force_path_style(true)
                .build(),
        ),
        recorder,
        faults,
        containers,
    });
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let proxy = proxy.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, Infallible>(proxy.handle(request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

#[test]
fn invoke_paths_name_functions_by_name_or_arn() {
    assert_eq!(
        function_for("/2015-03-31/functions/deltadrop-stage/invocations"),
        Some(Function::Stage)
    );
    let arn = "arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Adeltadrop-notify";
    assert_eq!(
        function_for(&format!("/2015-03-31/functions/{arn}/invocations")),
        Some(Function::Notify)
    );
    assert_eq!(
        function_for("/2015-03-31/functions/other/invocations"),
        None
    );
}
