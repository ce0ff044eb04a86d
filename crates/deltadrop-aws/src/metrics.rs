//! CloudWatch metrics in the embedded metric format (EMF): one JSON line on standard output per
//! step, which CloudWatch Logs turns into metrics without any API call or permission
//! (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Lambda.html,
//! format: https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html).
//! The dashboard in template.yaml reads these names (tests/template checks that they match).

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

/// The CloudWatch namespace of every deltadrop metric.
pub const NAMESPACE: &str = "deltadrop";

/// Every metric a step emits, with its unit and the one set of dimensions it is kept under:
/// the one the dashboard and the alarms read. Each metric under each set of dimension values is a
/// custom metric CloudWatch bills by the month, so nothing is kept twice: a feed has the twelve
/// `Feed` metrics and `StepDuration` for each of its four steps (16; 17 once a file of the feed
/// set rows aside: `RowsRejected`), and the watch adds two for
/// the whole deployment (`Feed=all`, `Step=watch`), the upsert one once a catalog registration
/// failed (`CatalogFailures`, `Feed=all`, `Step=upsert`); docs/aws.md gives the monthly count.
pub const METRICS: &[(&str, &str, Dimensions)] = &[
    ("FilesApplied", "Count", FEED),
    ("FilesAlreadyApplied", "Count", FEED),
    ("FilesSuperseded", "Count", FEED),
    ("FilesQuarantined", "Count", FEED),
    ("RowsStaged", "Count", FEED),
    ("BytesStaged", "Bytes", FEED),
    ("RowsRejected", "Count", FEED),
    ("RowsBrokeExpectation", "Count", FEED_AND_EXPECTATION),
    ("RowsInserted", "Count", FEED),
    ("RowsUpdated", "Count", FEED),
    ("RowsDeleted", "Count", FEED),
    ("CommitAttempts", "Count", FEED),
    ("BytesRewritten", "Bytes", FEED),
    ("EstimatedRewriteBytes", "Bytes", FEED),
    ("StepDuration", "Milliseconds", FEED_AND_STEP),
    ("StaleFiles", "Count", FEED_AND_STEP),
    ("OldestIncomingMinutes", "None", FEED_AND_STEP),
    ("CatalogFailures", "Count", FEED_AND_STEP),
];

/// A set of dimension names.
pub type Dimensions = &'static [&'static str];
/// Per feed: what one feed's files and rows add up to, whatever step emitted them.
pub const FEED: Dimensions = &["Feed"];
/// Per feed and step: a duration means nothing summed over different steps.
pub const FEED_AND_STEP: Dimensions = &["Feed", "Step"];
/// Per feed and expectation (`[[feeds.expect]]`): what each data-quality rule found.
pub const FEED_AND_EXPECTATION: Dimensions = &["Feed", "Expectation"];

/// One EMF document for a step of `feed`, with `values` (names from [`METRICS`]): one directive
/// per set of dimensions the values are kept under.
pub fn document(
    feed: &str,
    step: &str,
    values: &[(&'static str, f64)],
    timestamp_ms: i64,
) -> Value {
    let mut directives: Vec<(Dimensions, Vec<Value>)> = Vec::new();
    for (name, _) in values {
        let (unit, dimensions) = METRICS
            .iter()
            .find(|(known, _, _)| known == name)
            .map_or(("None", FEED_AND_STEP), |(_, unit, dimensions)| {
                (*unit, *dimensions)
            });
        let metric = json!({"Name": name, "Unit": unit});
        match directives.iter_mut().find(|(d, _)| *d == dimensions) {
            Some((_, metrics)) => metrics.push(metric),
            None => directives.push((dimensions, vec![metric])),
        }
    }
    let directives: Vec<Value> = directives
        .into_iter()
        .map(|(dimensions, metrics)| {
            json!({"Namespace": NAMESPACE, "Dimensions": [dimensions], "Metrics": metrics})
        })
        .collect();
    let mut document = Map::new();
    document.insert(
        "_aws".into(),
        json!({"Timestamp": timestamp_ms, "CloudWatchMetrics": directives}),
    );
    document.insert("Feed".into(), json!(feed));
    document.insert("Step".into(), json!(step));
    for (name, value) in values {
        document.insert((*name).into(), json!(value));
    }
    Value::Object(document)
}

type Observer = Box<dyn Fn(&Value) + Send + Sync>;
static OBSERVER: OnceLock<Observer> = OnceLock::new();

/// Also hands every document [`emit`] prints to `observer`: what the end-to-end tests' model of
/// CloudWatch receives, as no emulator reads Lambda's logs. The first observer of a process stays.
pub fn observe(observer: impl Fn(&Value) + Send + Sync + 'static) {
    let _ = OBSERVER.set(Box::new(observer));
}

/// Writes one EMF document as its own line on standard output.
pub fn emit(feed: &str, step: &str, values: &[(&'static str, f64)]) {
    print(document(
        feed,
        step,
        values,
        chrono::Utc::now().timestamp_millis(),
    ));
}

/// One document per expectation that rows of a staged file broke: `RowsBrokeExpectation` under
/// the feed and the expectation's name (an expectation nothing broke costs no metric).
pub fn emit_expectations(feed: &str, outcomes: &[deltadrop::rejects::ExpectationOutcome]) {
    for outcome in outcomes.iter().filter(|o| o.rows > 0) {
        let values = [("RowsBrokeExpectation", outcome.rows as f64)];
        let mut line = document(
            feed,
            "stage",
            &values,
            chrono::Utc::now().timestamp_millis(),
        );
        line["Expectation"] = json!(outcome.name);
        print(line);
    }
}

fn print(line: Value) {
    println!("{line}");
    if let Some(observer) = OBSERVER.get() {
        observer(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_is_valid_emf_with_the_documented_names_and_dimensions() {
        let doc = document(
            "orders",
            "upsert",
            &[
                ("FilesApplied", 1.0),
                ("RowsInserted", 42.0),
                ("StepDuration", 1234.0),
            ],
            1_700_000_000_000,
        );
        assert_eq!(doc["_aws"]["Timestamp"], 1_700_000_000_000i64);
        let directives = doc["_aws"]["CloudWatchMetrics"].as_array().unwrap();
        // Each metric once, under the dimensions the dashboard reads it by.
        let kept: Vec<(Value, Vec<&str>)> = directives
            .iter()
            .map(|d| {
                assert_eq!(d["Namespace"], "deltadrop");
                let names = d["Metrics"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["Name"].as_str().unwrap())
                    .collect();
                (d["Dimensions"].clone(), names)
            })
            .collect();
        assert_eq!(
            kept,
            [
                (json!([["Feed"]]), vec!["FilesApplied", "RowsInserted"]),
                (json!([["Feed", "Step"]]), vec!["StepDuration"]),
            ]
        );
        // Every dimension and every metric named in a directive is a member of the root.
        for dimension in ["Feed", "Step"] {
            assert!(doc[dimension].is_string(), "{dimension}");
        }
        for metric in directives
            .iter()
            .flat_map(|d| d["Metrics"].as_array().unwrap())
        {
            let name = metric["Name"].as_str().unwrap();
            assert!(doc[name].is_number(), "{name}");
            assert!(METRICS
                .iter()
                .any(|(known, unit, _)| *known == name && metric["Unit"] == *unit));
        }
        assert_eq!(doc["RowsInserted"], 42.0);
    }
}
