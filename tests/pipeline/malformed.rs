//! A corpus of bad files: each ends in quarantine with its error report, the target table is
//! untouched, a failure email is written, and nothing is left staged.

use crate::support::{self, feed, gzip, parquet, zstd, Harness};

fn config() -> String {
    support::config(&[
        feed("csv", ""),
        feed("strict", "schema_policy = \"strict\""),
        feed("json", ""),
        // Small limits, so that crossing each costs the test little (the defaults are tested too).
        feed(
            "limited",
            "[feeds.limits]\nmax_line_mb = 1\nmax_decompressed_mb = 8\nmax_columns = 100\nmax_nesting_depth = 8",
        ),
    ])
}

const GOOD_CSV: &str = "id,name,amount,day\n1,a,1.5,2024-01-01\n2,b,2.5,2024-01-02\n";

fn truncated(data: Vec<u8>) -> Vec<u8> {
    data[..data.len() * 2 / 3].to_vec()
}

fn parquet_file() -> Vec<u8> {
    use deltalake::arrow::array::{Int64Array, RecordBatch};
    use std::sync::Arc;
    parquet(
        &RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(vec![7, 8, 9])) as _)])
            .unwrap(),
    )
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

/// `times` copies of one compressed frame: a decoder reads them as one stream, so a small file
/// inflates to `times` × `chunk` bytes (a compression bomb) without building it in memory.
fn repeated_frames(
    head: &[u8],
    chunk: &[u8],
    times: usize,
    compress: fn(&[u8]) -> Vec<u8>,
) -> Vec<u8> {
    let frame = compress(chunk);
    let mut out = compress(head);
    for _ in 0..times {
        out.extend_from_slice(&frame);
    }
    out
}

fn nested_json(depth: usize) -> Vec<u8> {
    format!(
        "{{\"id\": 1, \"deep\": {}1{}}}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    )
    .into_bytes()
}

fn header_of(columns: usize) -> String {
    let names: Vec<String> = (0..columns).map(|i| format!("c{i}")).collect();
    format!(
        "id,{}\n1,{}\n",
        names.join(","),
        vec!["0"; columns].join(",")
    )
}

/// What real producers send: other encodings, binary files under text names, files cut short,
/// repeated headers, numbers no column type holds, and files built to exhaust a reader.
fn producer_corpus() -> Vec<(&'static str, Vec<u8>, &'static str, &'static str)> {
    const MIB: usize = 1024 * 1024;
    let rows = b"1,a,1.5,2024-01-01\n".repeat(MIB / 19);
    vec![
        (
            "csv/utf16-with-bom.csv",
            [
                &[0xFF, 0xFE][..],
                &"id,name\n1,a\n"
                    .encode_utf16()
                    .flat_map(u16::to_le_bytes)
                    .collect::<Vec<u8>>(),
            ]
            .concat(),
            "MalformedFile",
            "line 1: the file is UTF-16 text",
        ),
        (
            "json/utf16-with-bom.jsonl",
            [
                &[0xFE, 0xFF][..],
                &"{\"id\": 1}\n"
                    .encode_utf16()
                    .flat_map(u16::to_be_bytes)
                    .collect::<Vec<u8>>(),
            ]
            .concat(),
            "MalformedFile",
            "the file is UTF-16 text",
        ),
        (
            "csv/utf16-without-bom.csv",
            "id,name\n1,a\n"
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect(),
            "MalformedFile",
            "line 1: the line holds a NUL byte",
        ),
        (
            "csv/nul-in-a-field.csv",
            b"id,name,amount,day\n1,a,1.5,2024-01-01\n2,b\0,2.5,2024-01-02\n".to_vec(),
            "MalformedFile",
            "line 3: the line holds a NUL byte",
        ),
        (
            "csv/excel-workbook.csv",
            b"PK\x03\x04\x14\x00\x06\x00rest of a workbook".to_vec(),
            "MalformedFile",
            "a ZIP archive (an Excel workbook?)",
        ),
        (
            "csv/gzip-without-suffix.csv",
            gzip(GOOD_CSV.as_bytes()),
            "MalformedFile",
            "gzip-compressed, but its name does not end in .gz",
        ),
        (
            "csv/zstd-named-gz.csv.gz",
            zstd(GOOD_CSV.as_bytes()),
            "MalformedFile",
            "incoming/csv/zstd-named-gz.csv.gz",
        ),
        (
            "csv/parquet-named-csv.csv",
            parquet_file(),
            "MalformedFile",
            "the file is Parquet",
        ),
        (
            "csv/quote-opened-on-last-line.csv",
            b"id,name,amount,day\n1,a,1.5,2024-01-01\n2,\"b,2.5,2024-01-02\n".to_vec(),
            "MalformedFile",
            "quote unclosed",
        ),
        (
            "csv/header-repeated-mid-file.csv",
            b"id,name,amount,day\n1,a,1.5,2024-01-01\nid,name,amount,day\n2,b,2.5,2024-01-02\n"
                .to_vec(),
            "InvalidValue",
            "line 3, column 'id': value \"id\" is not a valid long",
        ),
        (
            "csv/columns-differing-in-case.csv",
            b"id,name,NAME,amount,day\n1,a,b,1.5,2024-01-01\n".to_vec(),
            "MalformedFile",
            "columns 'name' and 'NAME' differ only in case",
        ),
        (
            "csv/key-column-all-null.csv",
            b"id,name,amount,day\n,a,1.5,2024-01-01\n,b,2.5,2024-01-02\n".to_vec(),
            "NullKey",
            "line 2: key column 'id' is null",
        ),
        (
            "csv/semicolon-delimited.csv",
            b"id;name;amount;day\n1;a;1.5;2024-01-01\n".to_vec(),
            "MissingKeyColumn",
            "columns found: id;name;amount;day",
        ),
        (
            "csv/trailing-delimiter.csv",
            b"id,name,amount,day,\n1,a,1.5,2024-01-01,\n".to_vec(),
            "MalformedFile",
            "empty column name (a trailing delimiter?)",
        ),
        (
            "csv/us-date.csv",
            b"id,name,amount,day\n1,a,1.5,01/31/2024\n".to_vec(),
            "InvalidValue",
            "line 2, column 'day': value \"01/31/2024\" is not a valid date",
        ),
        (
            "csv/decimal-comma.csv",
            b"id,name,amount,day\n1,a,\"1,5\",2024-01-01\n".to_vec(),
            "InvalidValue",
            "line 2, column 'amount': value \"1,5\" is not a valid double",
        ),
        (
            "strict/key-renamed-in-case.csv",
            b"ID,name,amount,day\n1,a,1.5,2024-01-01\n".to_vec(),
            "MissingKeyColumn",
            "key column 'id' is missing (columns found: ID, name, amount, day)",
        ),
        (
            "json/footer-cut.parquet",
            {
                let p = parquet_file();
                p[..p.len() - 6].to_vec()
            },
            "MalformedFile",
            "not a readable Parquet file",
        ),
        (
            "json/no-key.parquet",
            {
                use deltalake::arrow::array::{Int64Array, RecordBatch};
                use std::sync::Arc;
                let batch = RecordBatch::try_from_iter([(
                    "other",
                    Arc::new(Int64Array::from(vec![1])) as _,
                )])
                .unwrap();
                parquet(&batch)
            },
            "MissingKeyColumn",
            "key column 'id' is missing (columns found: other)",
        ),
        (
            "json/pretty-printed-object.jsonl",
            b"{\n  \"id\": 1\n}\n".to_vec(),
            "MalformedFile",
            "line 1: the JSON value does not end on its line",
        ),
        (
            "json/trailing-comma.jsonl",
            b"{\"id\": 1, \"name\": \"a\",}\n".to_vec(),
            "MalformedFile",
            "line 1: column 23: trailing comma",
        ),
        (
            "json/single-quotes.jsonl",
            b"{'id': 1}\n".to_vec(),
            "MalformedFile",
            "key must be a string",
        ),
        (
            "json/comment-line.jsonl",
            b"// exported 2026-11-26\n{\"id\": 1}\n".to_vec(),
            "MalformedFile",
            "line 1: column 1: expected value",
        ),
        (
            "json/array-of-numbers.json",
            b"[1, 2, 3]".to_vec(),
            "MalformedFile",
            "invalid type: integer `1`, expected a map",
        ),
        // Without arbitrary precision, JSON integers beyond i64/u64 parse as the nearest double:
        // a long column refuses them, and a number beyond f64 is refused by the parser.
        (
            "json/integer-beyond-i64.jsonl",
            b"{\"id\": 1}\n{\"id\": 123456789012345678901234567890}\n".to_vec(),
            "InvalidValue",
            "line 2, column 'id': value \"1.2345678901234568e+29\" is not a valid long",
        ),
        (
            "json/number-beyond-f64.jsonl",
            b"{\"id\": 1, \"x\": 1e400}\n".to_vec(),
            "MalformedFile",
            "number out of range",
        ),
        (
            "json/nested-deeper-than-the-limit.jsonl",
            nested_json(33),
            "LimitExceeded",
            "line 1: a value nests objects and arrays more than 32 levels deep",
        ),
        (
            "json/nested-deeper-than-the-parser.jsonl",
            nested_json(500),
            "LimitExceeded",
            "more than 32 levels deep (the feed's limits.max_nesting_depth is 32",
        ),
        (
            "csv/hundred-thousand-columns.csv",
            header_of(100_000).into_bytes(),
            "LimitExceeded",
            "line 1: the file has more than 10000 columns",
        ),
        (
            "limited/too-many-columns.csv",
            header_of(100).into_bytes(),
            "LimitExceeded",
            "more than 100 columns (the feed's limits.max_columns is 100",
        ),
        (
            "limited/deep.jsonl",
            nested_json(9),
            "LimitExceeded",
            "more than 8 levels deep",
        ),
        (
            "limited/two-gb-line.csv.gz",
            repeated_frames(b"id,name\n1,", &vec![b'x'; MIB], 2048, gzip),
            "LimitExceeded",
            "line 2: the line is longer than 1 MiB",
        ),
        (
            "limited/no-line-ends.jsonl.zst",
            repeated_frames(b"", &vec![b' '; 8 * MIB], 4096, zstd),
            "LimitExceeded",
            "line 1: the line is longer than 1 MiB",
        ),
        // 2.6 MB inflating to 1 GiB (deflate stops near 1000:1), and 1.2 MB of zstd to 32 GiB.
        (
            "limited/gzip-bomb.csv.gz",
            repeated_frames(b"id,name,amount,day\n", &rows, 1024, gzip),
            "LimitExceeded",
            "more than 8 MiB of data after decompression (a compression bomb?)",
        ),
        (
            "limited/zstd-bomb.csv.zst",
            repeated_frames(b"id,name,amount,day\n", &rows, 4096, zstd),
            "LimitExceeded",
            "(the feed's limits.max_decompressed_mb is 8 MiB",
        ),
    ]
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
                parquet(&batch)
            },
            "InvalidValue",
            "record 2, column 'id': value \"two\"",
        ),
    ]
}

#[tokio::test]
async fn every_malformed_file_is_quarantined_and_changes_nothing() {
    let h = Harness::new(&config());
    h.load("incoming/csv/good.csv", GOOD_CSV).await;
    h.load("incoming/strict/good.csv", GOOD_CSV).await;
    h.load("incoming/limited/good.csv", GOOD_CSV).await;
    h.load("incoming/json/good.jsonl", "{\"id\": 1, \"name\": \"a\"}\n")
        .await;
    let tables = [
        "tables/csv",
        "tables/strict",
        "tables/json",
        "tables/limited",
    ];
    let mut before = Vec::new();
    for t in tables {
        before.push((h.version(t).await, h.rows(t, &["id"]).await));
    }
    let mut corpus = corpus();
    corpus.extend(producer_corpus());
    assert!(corpus.len() >= 60, "{}", corpus.len());
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
    let h = Harness::new(&config());
    let error =
        deltadrop::steps::RunInput::new(&h.env.config, "elsewhere/a.csv", Default::default())
            .unwrap_err();
    assert_eq!(error.name(), "NoMatchingFeed");
}
