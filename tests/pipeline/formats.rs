//! Every format and compression loads the same rows.

use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float64Array, Int64Array, RecordBatch, StringArray,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema};

use crate::support::{feed, gzip, parquet as parquet_of, zstd, Harness};

const CSV: &str = "id,name,amount,day,active\n\
1,Ada,10.5,2024-01-01,true\n\
2,\"Grace, Hopper\",20,2024-01-02,false\n\
3,\"Line \"\"quoted\"\"\",,2024-01-03,\n";

const TSV: &str = "id\tname\tamount\tday\tactive\n\
1\tAda\t10.5\t2024-01-01\ttrue\n\
2\t'Grace, Hopper'\t20\t2024-01-02\tfalse\n\
3\tLine \"quoted\"\tNA\t2024-01-03\tNA\n";

const JSONL: &str = r#"{"id": 1, "name": "Ada", "amount": 10.5, "day": "2024-01-01", "active": true}
{"id": 2, "name": "Grace, Hopper", "amount": 20, "day": "2024-01-02", "active": false}

{"id": 3, "name": "Line \"quoted\"", "amount": null, "day": "2024-01-03"}
"#;

const EXPECTED: [&str; 3] = [
    "1|Ada|10.5|2024-01-01|true",
    "2|Grace, Hopper|20.0|2024-01-02|false",
    "3|Line \"quoted\"|∅|2024-01-03|∅",
];

fn json_array() -> String {
    let objects: Vec<&str> = JSONL.lines().filter(|l| !l.trim().is_empty()).collect();
    format!("[\n  {}\n]\n", objects.join(",\n  "))
}

fn parquet() -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("day", DataType::Date32, true),
        Field::new("active", DataType::Boolean, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![1, 2, 3])),
        Arc::new(StringArray::from(vec![
            "Ada",
            "Grace, Hopper",
            "Line \"quoted\"",
        ])),
        Arc::new(Float64Array::from(vec![Some(10.5), Some(20.0), None])),
        Arc::new(Date32Array::from(vec![19723, 19724, 19725])),
        Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
    ];
    parquet_of(&RecordBatch::try_new(schema, columns).unwrap())
}

#[tokio::test]
async fn every_format_and_compression_loads_the_same_rows() {
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("csv", "data.csv", CSV.as_bytes().to_vec()),
        ("csv_gz", "data.csv.gz", gzip(CSV.as_bytes())),
        ("csv_zst", "data.csv.zst", zstd(CSV.as_bytes())),
        ("tsv", "data.tsv", TSV.as_bytes().to_vec()),
        ("jsonl", "data.jsonl", JSONL.as_bytes().to_vec()),
        ("jsonl_gz", "data.ndjson.gz", gzip(JSONL.as_bytes())),
        ("json", "data.json", json_array().into_bytes()),
        ("json_zst", "data.json.zst", zstd(json_array().as_bytes())),
        ("parquet", "data.parquet", parquet()),
        ("parquet_gz", "data.parquet.gz", gzip(&parquet())),
    ];
    let mut config = String::new();
    for (name, _, _) in &cases {
        let extra = if *name == "tsv" {
            "format = \"csv\"\n[feeds.csv]\ndelimiter = \"\\t\"\nquote = \"'\"\nnull_values = [\"\", \"NA\"]"
        } else {
            ""
        };
        config.push_str(&feed(name, extra));
    }
    let h = Harness::new(&config);
    for (name, file, body) in cases {
        let key = format!("incoming/{name}/{file}");
        let result = h.load(&key, body).await;
        assert_eq!(result.report.stage.as_ref().unwrap().rows, 3, "{name}");
        let table = format!("tables/{name}");
        assert_eq!(h.rows(&table, &["id"]).await, EXPECTED, "{name}");
        assert_eq!(
            h.columns(&table).await,
            ["id", "name", "amount", "day", "active"],
            "{name}"
        );
        assert!(h.exists(&h.archived(&result)), "{name} archived");
        assert!(!h.exists(&key), "{name} moved away");
    }
    assert!(h.staging_is_empty());
}

#[tokio::test]
async fn empty_and_header_only_files_load_zero_rows() {
    let h = Harness::new(&format!("{}{}", feed("csv", ""), feed("json", "")));
    h.load("incoming/csv/first.csv", CSV).await;
    for (key, body) in [
        ("incoming/csv/empty.csv", ""),
        ("incoming/csv/header.csv", "id,name,amount,day,active\n"),
        ("incoming/json/empty.json", ""),
        ("incoming/json/empty-array.json", "[]"),
    ] {
        let result = h.load(key, body).await;
        assert_eq!(result.report.stage.as_ref().unwrap().rows, 0, "{key}");
        let upsert = result.report.upsert.as_ref().unwrap();
        assert_eq!(
            upsert.outcome,
            deltadrop::steps::UpsertOutcome::NothingToApply,
            "{key}"
        );
        assert!(h.exists(&h.archived(&result)));
    }
    assert_eq!(h.version("tables/csv").await, Some(0));
    assert_eq!(h.version("tables/json").await, None);
}

#[tokio::test]
async fn a_large_file_streams_in_many_batches() {
    let h = Harness::new(&feed("csv", ""));
    let mut text = String::from("id,name,amount\n");
    for i in 0..50_000 {
        text.push_str(&format!("{i},name {i},{}.25\n", i % 1000));
    }
    let result = h
        .load("incoming/csv/big.csv.gz", gzip(text.as_bytes()))
        .await;
    assert_eq!(result.report.stage.as_ref().unwrap().rows, 50_000);
    assert_eq!(
        result.report.upsert.as_ref().unwrap().changes.rows_inserted,
        50_000
    );
    let summary = deltadrop::inspect::summarize(&h.table("tables/csv"), 1)
        .await
        .unwrap();
    assert_eq!(summary.rows, 50_000);
}

/// One row of the long-file test, as CSV fields (`None` is written as `NULL`) and as JSON.
fn long_row(i: usize) -> (String, String) {
    // Row 19_000 repeats key 3: the later row must win on both paths.
    let id = if i == 19_000 { 3 } else { i };
    let name = match i % 7 {
        0 => None,
        1 => Some("comma, inside".to_string()),
        2 => Some("two\nlines".to_string()),
        3 => Some("quote \"x\"".to_string()),
        _ => Some(format!("name {i}")),
    };
    let amount = match i % 5 {
        0 => None,
        1 => Some("1.5e3"),
        2 => Some("-0.25"),
        _ => Some("20"),
    };
    let day = (i % 11 != 0).then(|| format!("2024-{:02}-{:02}", i % 12 + 1, i % 28 + 1));
    let active = match i % 3 {
        0 => None,
        1 => Some("true"),
        _ => Some("false"),
    };
    let csv_text = |v: &Option<String>| match v {
        None if i % 2 == 0 => "NULL".to_string(),
        None => String::new(),
        Some(v) => format!("\"{}\"", v.replace('"', "\"\"")),
    };
    let csv = format!(
        "{id},{},{},{},{}\n",
        csv_text(&name),
        amount.unwrap_or(""),
        day.clone().unwrap_or_default(),
        active.unwrap_or("NULL"),
    );
    let json = serde_json::json!({
        "id": id,
        "name": name,
        "amount": amount.map(|a| a.parse::<f64>().unwrap()),
        "day": day,
        "active": active.map(|a| a == "true"),
    });
    (csv, json.to_string() + "\n")
}

/// A CSV long enough for the fast path (past the 8192-record sample) loads exactly what the same
/// rows as JSON lines (exact path only) load: quoting, embedded newlines, null strings, numbers,
/// dates, booleans, and a repeated key across the sample boundary.
#[tokio::test]
async fn a_long_csv_loads_exactly_what_the_same_rows_as_json_load() {
    let nulls = "[feeds.csv]\nnull_values = [\"\", \"NULL\"]";
    let h = Harness::new(&format!("{}{}", feed("csv", nulls), feed("json", "")));
    let (mut csv, mut json) = (String::from("id,name,amount,day,active\n"), String::new());
    for i in 0..20_000 {
        let (c, j) = long_row(i);
        csv.push_str(&c);
        json.push_str(&j);
    }
    h.load("incoming/csv/long.csv", csv).await;
    h.load("incoming/json/long.jsonl", json).await;
    let from_csv = h.rows("tables/csv", &["id"]).await;
    assert_eq!(from_csv.len(), 19_999);
    assert_eq!(from_csv, h.rows("tables/json", &["id"]).await);
    // The repeated key took the later row's values.
    assert_eq!(from_csv[3], "3|two\nlines|∅|2024-05-17|true");
}

/// What producers send that is fine: a UTF-8 byte order mark (Excel's "CSV UTF-8"), and
/// `\r\n`, `\n` and `\r` line ends mixed in one file.
#[tokio::test]
async fn a_byte_order_mark_and_mixed_line_endings_load() {
    let h = Harness::new(&format!("{}{}", feed("csv", ""), feed("json", "")));
    let mixed: String = CSV
        .lines()
        .zip(["\r\n", "\n", "\r", "\r\n"])
        .map(|(line, end)| format!("{line}{end}"))
        .collect();
    h.load("incoming/csv/excel.csv", format!("\u{feff}{mixed}"))
        .await;
    assert_eq!(h.rows("tables/csv", &["id"]).await, EXPECTED);
    assert_eq!(h.columns("tables/csv").await[0], "id");
    let crlf = JSONL.replace('\n', "\r\n");
    h.load("incoming/json/bom.jsonl", format!("\u{feff}{crlf}"))
        .await;
    assert_eq!(h.rows("tables/json", &["id"]).await, EXPECTED);
    h.load(
        "incoming/json/bom.json",
        format!("\u{feff}{}", json_array()),
    )
    .await;
}
