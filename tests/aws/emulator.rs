//! The emulated AWS: a moto server (started by ./scripts/test) and, on the port moto's Step
//! Functions executor calls back (MOTO_PORT), a proxy that runs Lambda invocations with the real
//! handlers and forwards everything else to moto. moto's own Lambda would need Docker.

use std::convert::Infallible;
use std::sync::Arc;

use deltadrop_aws::{invoke, AwsContext, Function};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

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

    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "testing", "testing", None, None, "moto",
            ))
            .load()
            .await
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

struct Proxy {
    ctx: Arc<AwsContext>,
    moto: String,
    client: reqwest::Client,
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
            let payload: serde_json::Value =
                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            // As Lambda does: 200 either way, a failure marked by X-Amz-Function-Error.
            return match invoke(&self.ctx, function, payload).await {
                Ok(output) => Response::new(Full::new(Bytes::from(output.to_string()))),
                Err(diagnostic) => {
                    let error = serde_json::json!({"errorType": diagnostic.error_type, "errorMessage": diagnostic.error_message});
                    Response::builder()
                        .header("X-Amz-Function-Error", "Unhandled")
                        .body(Full::new(Bytes::from(error.to_string())))
                        .unwrap()
                }
            };
        }
        let url = format!(
            "{}{}",
            self.moto,
            parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
        );
        let mut forwarded = self.client.request(parts.method, url).body(body);
        for (name, value) in &parts.headers {
            if name != "host" {
                forwarded = forwarded.header(name, value);
            }
        }
        match forwarded.send().await {
            Ok(answer) => {
                let mut response = Response::builder().status(answer.status());
                for (name, value) in answer.headers() {
                    if name != "transfer-encoding" && name != "content-length" {
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

/// Serves the proxy until the test ends.
pub async fn start_proxy(moto: &Moto, ctx: Arc<AwsContext>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", moto.proxy_port))
        .await
        .unwrap();
    let proxy = Arc::new(Proxy {
        ctx,
        moto: moto.endpoint.clone(),
        client: reqwest::Client::new(),
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
