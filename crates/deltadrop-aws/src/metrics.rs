//! CloudWatch metrics in the embedded metric format (EMF): one JSON line on standard output per
//! step, which CloudWatch Logs turns into metrics without any API call or permission
//! (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Lambda.html,
//! format: https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html).
//! The dashboard in template.yaml reads these names (tests/template checks that they match).

use serde_json::{json, Map, Value};

/// The CloudWatch namespace of every deltadrop metric.
pub const NAMESPACE: &str = "deltadrop";

/// Every metric a step emits, with its unit.
pub const METRICS: &[(&str, &str)] = &[
    ("FilesApplied", "Count"),
    ("FilesAlreadyApplied", "Count"),
    ("FilesSuperseded", "Count"),
    ("FilesQuarantined", "Count"),
    ("RowsStaged", "Count"),
    ("BytesStaged", "Bytes"),
    ("RowsInserted", "Count"),
    ("RowsUpdated", "Count"),
    ("RowsDeleted", "Count"),
    ("CommitAttempts", "Count"),
    ("StepDuration", "Milliseconds"),
    ("StaleFiles", "Count"),
    ("OldestIncomingMinutes", "None"),
];

/// The dimensions of every metric: per feed, and per feed and step.
pub const DIMENSIONS: &[&[&str]] = &[&["Feed"], &["Feed", "Step"]];

/// One EMF document for a step of `feed`, with `values` (names from [`METRICS`]).
pub fn document(
    feed: &str,
    step: &str,
    values: &[(&'static str, f64)],
    timestamp_ms: i64,
) -> Value {
    let metrics: Vec<Value> = values
        .iter()
        .map(|(name, _)| {
            let unit = METRICS
                .iter()
                .find(|(known, _)| known == name)
                .map_or("None", |(_, unit)| unit);
            json!({"Name": name, "Unit": unit})
        })
        .collect();
    let mut document = Map::new();
    document.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": DIMENSIONS,
                "Metrics": metrics,
            }],
        }),
    );
    document.insert("Feed".into(), json!(feed));
    document.insert("Step".into(), json!(step));
    for (name, value) in values {
        document.insert((*name).into(), json!(value));
    }
    Value::Object(document)
}

/// Writes one EMF document as its own line on standard output.
pub fn emit(feed: &str, step: &str, values: &[(&'static str, f64)]) {
    let line = document(feed, step, values, chrono::Utc::now().timestamp_millis());
    println!("{line}");
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
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(doc["_aws"]["Timestamp"], 1_700_000_000_000i64);
        assert_eq!(directive["Namespace"], "deltadrop");
        assert_eq!(directive["Dimensions"], json!([["Feed"], ["Feed", "Step"]]));
        // Every dimension and every metric named in the directive is a member of the root.
        for dimension in ["Feed", "Step"] {
            assert!(doc[dimension].is_string(), "{dimension}");
        }
        for metric in directive["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            assert!(doc[name].is_number(), "{name}");
            assert!(METRICS
                .iter()
                .any(|(known, unit)| *known == name && metric["Unit"] == *unit));
        }
        assert_eq!(doc["RowsInserted"], 42.0);
    }
}
