//! A corpus of bad files: each ends in quarantine with its error report, the target table is
//! untouched, a failure email is written, and nothing is left staged.

use crate::support::{gzip, zstd, Harness};

const CONFIG: &str = r#"
[notifications]
recipients = ["ops@example.com"]

[[feeds]]
name = "csv"
incoming = "incoming/csv/"
table = "tables/csv"
keys = ["id"]

[[feeds]]
name = "strict"
incoming = "incoming/strict/"
table = "tables/strict"
keys = ["id"]
schema_policy = "strict"

[[feeds]]
name = "json"
incoming = "incoming/json/"
table = "tables/json"
keys = ["id"]
"#;

const GOOD_CSV: &str = "id,name,amount,day\n1,a,1.5,2024-01-01\n2,b,2.5,2024-01-02\n";

fn truncated(data: Vec<u8>) -> Vec<u8> {
    data[..data.len() * 2 / 3].to_vec()
}

fn parquet_file() -> Vec<u8> {
    use deltalake::arrow::array::{Int64Array, RecordBatch};
    use std::sync::Arc;
    let batch =
        RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(vec![7, 8, 9])) as _)])
            .unwrap();
    let mut out = Vec::new();
    let mut writer =
        deltalake::parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    out
}

/// Rows past the CSV sample (8192 records) go through the fast path: a CSV of `rows` good rows
/// where `row` (0-based) is replaced by `bad`, and every 1000th row has a quoted two-line name.
/// The bad row is on line `row + 2 + row / 1000` (the header, then the extra lines before it).
fn long_csv(rows: usize, row: usize, bad: &str) -> Vec<u8> {
    let mut text = String::from("id,name,amount,day\n");
    for i in 0..rows {
        if i == row {
            text.push_str(bad);
        } else if i % 1000 == 999 {
            text.push_str(&format!("{i},\"two\nlines\",{i}.5,2024-01-01\n"));
        } else {
            text.push_str(&format!("{i},name-{i},{i}.5,2024-01-01\n"));
        }
    }
    text.into_bytes()
}

/// (key, content, expected error name, text the message must contain)
fn corpus() -> Vec<(&'static str, Vec<u8>, &'static str, &'static str)> {
    let big_csv: String = std::iter::once("id,name,amount,day\n".to_string())
        .chain((0..20_000).map(|i| format!("{i},name-{i},{i}.5,2024-01-01\n")))
        .collect();
    vec![
        (
            "csv/late-wrong-number.csv",
            long_csv(20_000, 15_000, "15000,x,lots,2024-01-01\n"),
            "InvalidValue",
            "line 15017, column 'amount': value \"lots\" is not a valid double",
        ),
        (
            "csv/late-bad-date.csv",
            long_csv(20_000, 9_000, "9000,x,1.5,2024-13-01\n"),
            "InvalidValue",
            "line 9011, column 'day': value \"2024-13-01\" is not a valid date",
        ),
        (
            "csv/late-too-many-fields.csv",
            long_csv(20_000, 12_345, "12345,x,1.5,2024-01-01,extra\n"),
            "MalformedFile",
            "line 12359: expected 4 fields, found 5",
        ),
        (
            "csv/late-null-key.csv",
            long_csv(20_000, 19_999, ",x,1.5,2024-01-01\n"),
            "NullKey",
            "line 20020: key column 'id' is null",
        ),
        (
            "csv/late-invalid-utf8.csv",
            {
                let mut data = long_csv(20_000, 10_000, "10000,caf?,1.5,2024-01-01\n");
                let at = data.windows(4).position(|w| w == b"caf?").unwrap() + 3;
                data[at] = 0xe9;
                data
            },
            "MalformedFile",
            "line 10012: field 2 is not valid UTF-8",
        ),
        (
            "csv/late-unclosed-quote.csv",
            long_csv(20_000, 19_000, "19000,\"open,1.5,2024-01-01\n"),
            "MalformedFile",
            "quote unclosed",
        ),
        (
            "csv/too-many-fields.csv",
            b"id,name,amount,day\n1,a,1.5,2024-01-01\n2,b,2,2024-01-02,extra\n".to_vec(),
            "MalformedFile",
            "line 3: expected 4 fields, found 5",
        ),
        (
            "csv/too-few-fields.csv",
            b"id,name,amount,day\n1,a\n".to_vec(),
            "MalformedFile",
            "line 2: expected 4 fields, found 2",
        ),
        (
            "csv/unclosed-quote.csv",
            b"id,name,amount,day\n1,\"a,1.5,2024-01-01\n2,b,2.5,2024-01-02\n".to_vec(),
            "MalformedFile",
            "quote unclosed",
        ),
        (
            "csv/invalid-utf8.csv",
            b"id,name,amount,day\n1,caf\xe9,1.5,2024-01-01\n".to_vec(),
            "MalformedFile",
            "line 2: field 2 is not valid UTF-8",
        ),
        (
            "csv/truncated.csv.gz",
            truncated(gzip(big_csv.as_bytes())),
            "MalformedFile",
            "ends too early",
        ),
        (
            "csv/not-gzip.csv.gz",
            b"id,name\n1,a\n".to_vec(),
            "MalformedFile",
            "incoming/csv/not-gzip.csv.gz",
        ),
        (
            "csv/truncated.csv.zst",
            truncated(zstd(big_csv.as_bytes())),
            "MalformedFile",
            "incoming/csv/truncated.csv.zst",
        ),
        (
            "csv/wrong-number.csv",
            b"id,name,amount,day\n1,a,1.5,2024-01-01\n2,b,lots,2024-01-02\n".to_vec(),
            "InvalidValue",
            "line 3, column 'amount': value \"lots\" is not a valid double",
        ),
        (
            "csv/wrong-key-type.csv",
            b"id,name,amount,day\nx1,a,1.5,2024-01-01\n".to_vec(),
            "InvalidValue",
            "line 2, column 'id'",
        ),
        (
            "csv/bad-date.csv",
            b"id,name,amount,day\n1,a,1.5,2024-13-45\n".to_vec(),
            "InvalidValue",
            "value \"2024-13-45\" is not a valid date",
        ),
        (
            "csv/missing-key.csv",
            b"name,amount\na,1.5\n".to_vec(),
            "MissingKeyColumn",
            "key column 'id' is missing (columns found: name, amount)",
        ),
        (
            "csv/null-key.csv",
            b"id,name,amount,day\n1,a,1.5,2024-01-01\n,b,2.5,2024-01-02\n".to_vec(),
            "NullKey",
            "line 3: key column 'id' is null",
        ),
        (
            "csv/duplicate-header.csv",
            b"id,name,name,day\n1,a,b,2024-01-01\n".to_vec(),
            "MalformedFile",
            "column 'name' appears twice",
        ),
        (
            "csv/empty-header-name.csv",
            b"id,,amount,day\n1,a,1.5,2024-01-01\n".to_vec(),
            "MalformedFile",
            "empty column name",
        ),
        (
            "csv/binary-junk.csv",
            (0..2000u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 | 0x80)
                .collect(),
            "MalformedFile",
            "not valid UTF-8",
        ),
        (
            "csv/reserved-column.csv",
            b"id,_deltadrop_line\n1,2\n".to_vec(),
            "SchemaMismatch",
            "reserved",
        ),
        (
            "strict/extra-column.csv",
            b"id,name,amount,day,extra\n1,a,1.5,2024-01-01,x\n".to_vec(),
            "SchemaMismatch",
            "new column(s) extra",
        ),
        (
            "strict/missing-column.csv",
            b"id,name,day\n1,a,2024-01-01\n".to_vec(),
            "SchemaMismatch",
            "column(s) amount of the target table are missing",
        ),
        (
            "json/not-json.jsonl",
            b"{\"id\": 1, \"name\": \"a\"}\n{\"id\": 2, \"name\": \n".to_vec(),
            "MalformedFile",
            "line 2",
        ),
        (
            "json/not-an-object.jsonl",
            b"{\"id\": 1}\n[1, 2]\n".to_vec(),
            "MalformedFile",
            "line 2",
        ),
        (
            "json/wrong-type.jsonl",
            b"{\"id\": 1, \"name\": \"a\"}\n{\"id\": \"abc\", \"name\": \"b\"}\n".to_vec(),
            "InvalidValue",
            "line 2, column 'id': value \"abc\" is not a valid long",
        ),
        (
            "json/null-key.jsonl",
            b"{\"id\": 1}\n{\"id\": null, \"name\": \"b\"}\n".to_vec(),
            "NullKey",
            "line 2: key column 'id' is null",
        ),
        (
            "json/truncated-array.json",
            b"[{\"id\": 1, \"name\": \"a\"}, {\"id\": 2, \"na".to_vec(),
            "MalformedFile",
            "EOF while parsing",
        ),
        (
            "json/trailing-junk.json",
            b"[{\"id\": 1}]\n{\"id\": 2}\n".to_vec(),
            "MalformedFile",
            "trailing characters",
        ),
        (
            "json/object-not-array.json",
            b"{\"id\": 1}".to_vec(),
            "MalformedFile",
            "expected a JSON array of objects",
        ),
        (
            "json/garbage.parquet",
            b"PAR1 this is not parquet at all".to_vec(),
            "MalformedFile",
            "not a readable Parquet file",
        ),
        (
            "json/truncated.parquet",
            truncated(parquet_file()),
            "MalformedFile",
            "not a readable Parquet file",
        ),
        (
            "json/wrong-key-type.parquet",
            {
                // A string key where the table has a long.
                use deltalake::arrow::array::{RecordBatch, StringArray};
                use std::sync::Arc;
                let batch = RecordBatch::try_from_iter([(
                    "id",
                    Arc::new(StringArray::from(vec!["1", "two"])) as _,
                )])
                .unwrap();
                let mut out = Vec::new();
                let mut w =
                    deltalake::parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None)
                        .unwrap();
                w.write(&batch).unwrap();
                w.close().unwrap();
                out
            },
            "InvalidValue",
            "record 2, column 'id': value \"two\"",
        ),
    ]
}

#[tokio::test]
async fn every_malformed_file_is_quarantined_and_changes_nothing() {
    let h = Harness::new(CONFIG);
    h.load("incoming/csv/good.csv", GOOD_CSV).await;
    h.load("incoming/strict/good.csv", GOOD_CSV).await;
    h.load("incoming/json/good.jsonl", "{\"id\": 1, \"name\": \"a\"}\n")
        .await;
    let tables = ["tables/csv", "tables/strict", "tables/json"];
    let mut before = Vec::new();
    for t in tables {
        before.push((h.version(t).await, h.rows(t, &["id"]).await));
    }
    let corpus = corpus();
    assert!(corpus.len() >= 20);
    for (name, body, expected_error, expected_text) in corpus {
        let key = format!("incoming/{name}");
        h.put(&key, &body).await;
        let emails_before = h.emails().len();
        let result = h.run(&key).await;
        let error = result
            .error
            .as_ref()
            .unwrap_or_else(|| panic!("{name} was accepted"));
        assert_eq!(error.name(), expected_error, "{name}: {error}");
        let message = error.to_string();
        assert!(
            message.contains(expected_text),
            "{name}: {message:?} lacks {expected_text:?}"
        );
        assert!(
            message.contains(&key),
            "{name}: {message:?} does not name the file"
        );

        // The file is in quarantine, byte for byte, with its report; nowhere else.
        assert!(!h.exists(&key), "{name} left in incoming");
        assert!(!h.exists(&h.archived(&result)), "{name} archived");
        let quarantined = h.quarantined(&result);
        assert_eq!(std::fs::read(h.path(&quarantined)).unwrap(), body, "{name}");
        let report: serde_json::Value = serde_json::from_slice(
            &std::fs::read(h.path(&format!("{quarantined}.error.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(report["error"], expected_error);
        assert_eq!(report["message"], message);
        assert!(report["run_id"]
            .as_str()
            .unwrap()
            .starts_with(key.split('/').nth(1).unwrap()));
        assert!(report["time"].is_string());

        let emails = h.emails();
        assert_eq!(emails.len(), emails_before + 1, "{name}: one failure email");
        assert!(
            emails
                .last()
                .unwrap()
                .contains(&format!("({expected_error})")),
            "{name}"
        );
        assert!(h.staging_is_empty(), "{name} left a staging table");
    }
    for (t, (version, rows)) in tables.iter().zip(before) {
        assert_eq!(h.version(t).await, version, "{t} changed");
        assert_eq!(h.rows(t, &["id"]).await, rows, "{t} changed");
    }
}

#[tokio::test]
async fn a_file_no_feed_claims_is_refused_before_anything_moves() {
    let h = Harness::new(CONFIG);
    let error = deltadrop::steps::RunInput::new(
        &h.env.config,
        "elsewhere/a.csv",
        Default::default(),
        &deltadrop::clock::SystemClock,
    )
    .unwrap_err();
    assert_eq!(error.name(), "NoMatchingFeed");
}
