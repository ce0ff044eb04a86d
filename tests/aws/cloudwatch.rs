//! What CloudWatch would have received during the run. moto emits no metrics, so the datapoints
//! are what AWS would make of what the run did: Lambda's `Errors` and `Throttles` for each
//! invocation the proxy answered with a function error or a 429
//! (https://docs.aws.amazon.com/lambda/latest/dg/monitoring-metrics-types.html), Step
//! Functions' `ExecutionsFailed`/`Aborted`/`TimedOut` for each execution that ended so
//! (https://docs.aws.amazon.com/step-functions/latest/dg/procedure-cw-metrics.html), and every
//! embedded-metric-format document a handler printed, as CloudWatch Logs extracts it.
//! tests/iam/check_alarms.py then asks of every alarm in template.yaml whether one of them fires it.

use std::sync::Mutex;

use serde_json::{json, Map, Value};

/// One process holds one run (nextest runs each test in its own process).
static DATAPOINTS: Mutex<Vec<Value>> = Mutex::new(Vec::new());

/// A datapoint of `metric` under `dimensions`; `source` says which event of the run it is.
pub fn record(
    namespace: &str,
    metric: &str,
    dimensions: &[(&str, &str)],
    value: f64,
    source: String,
) {
    let dimensions: Map<String, Value> = dimensions
        .iter()
        .map(|(name, value)| ((*name).to_string(), json!(value)))
        .collect();
    DATAPOINTS.lock().unwrap().push(json!({
        "namespace": namespace, "metric": metric, "dimensions": dimensions,
        "value": value, "source": source,
    }));
}

/// From now on every EMF document a handler prints is also recorded, one datapoint per metric
/// and dimension set it declares
/// (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html).
pub fn record_emitted_metrics() {
    deltadrop_aws::metrics::observe(|document| {
        for directive in document["_aws"]["CloudWatchMetrics"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let namespace = directive["Namespace"].as_str().unwrap_or_default();
            for set in directive["Dimensions"].as_array().into_iter().flatten() {
                let dimensions: Vec<(&str, &str)> = set
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|name| name.as_str())
                    .map(|name| (name, document[name].as_str().unwrap_or_default()))
                    .collect();
                for metric in directive["Metrics"].as_array().into_iter().flatten() {
                    let name = metric["Name"].as_str().unwrap_or_default();
                    let value = document[name].as_f64().unwrap_or_default();
                    record(
                        namespace,
                        name,
                        &dimensions,
                        value,
                        format!("EMF {document}"),
                    );
                }
            }
        }
    });
}

/// Every execution of `state_machine_arn` that ended FAILED, ABORTED or TIMED_OUT, as the
/// datapoint Step Functions counts it under.
pub async fn record_executions(sfn: &aws_sdk_sfn::Client, state_machine_arn: &str) {
    let mut pages = sfn
        .list_executions()
        .state_machine_arn(state_machine_arn)
        .into_paginator()
        .items()
        .send();
    while let Some(execution) = pages.next().await {
        let execution = execution.unwrap();
        let metric = match execution.status().as_str() {
            "FAILED" => "ExecutionsFailed",
            "ABORTED" => "ExecutionsAborted",
            "TIMED_OUT" => "ExecutionsTimedOut",
            _ => continue,
        };
        record(
            "AWS/States",
            metric,
            &[("StateMachineArn", state_machine_arn)],
            1.0,
            format!(
                "execution {} {}",
                execution.name(),
                execution.status().as_str()
            ),
        );
    }
}

/// Everything recorded so far.
pub fn datapoints() -> Vec<Value> {
    DATAPOINTS.lock().unwrap().clone()
}
