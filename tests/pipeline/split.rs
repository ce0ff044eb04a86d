//! A large file staged in parallel chunks (`deltadrop run --workers N`) must give the staging
//! table the file read whole gives: the same rows, types and line numbers, read back by an
//! independent reader, the same rows set aside, and the same error naming the same line; a
//! file that cannot be split (a quoted line break) or has too many bad rows is read whole. A
//! Parquet file, cut between its row groups, too.

use deltadrop::delta::{arrow_schema, TableLocation};
use deltadrop::read::LINE_COLUMN;
use deltadrop::steps::stage::chunks::{self, ChildResult, ChunkPlan, ChunksCommitted};
use deltadrop::steps::stage::stage_in_chunks;
use deltadrop::steps::{stage, Failure, RunInput, StageOutput};
use deltadrop::{Environment, Split};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::crosscheck::read_with_python;
use crate::support::{config, feed, Harness};

/// Chunks this small cut a few hundred kilobytes into dozens.
const SPLIT: Split = Split {
    workers: 4,
    chunk_bytes: 8 * 1024,
};

/// What staging one file gave: its output, or its error's name and message.
type Staged = Result<StageOutput, String>;

/// An error as the tests compare them: its name and message.
fn named(e: deltadrop::Error) -> String {
    format!("{}: {e}", e.name())
}

/// Stages `key` read whole.
async fn stage_whole(h: &Harness, key: &str) -> Staged {
    stage(&h.env, &h.run_input(key).await).await.map_err(named)
}

/// Stages `key` read whole, and in chunks: `None` when the chunked stage leaves the file to be
/// read whole.
async fn stage_both(h: &Harness, key: &str) -> (Staged, Result<Option<StageOutput>, String>) {
    let split = stage_in_chunks(&h.env, &h.run_input(key).await, &SPLIT).await;
    (stage_whole(h, key).await, split.map_err(named))
}

/// Stages `key` with the environment's split set, as `deltadrop run --workers` does.
async fn stage_with_workers(h: &Harness, key: &str) -> Staged {
    let env = Environment {
        split: Some(SPLIT),
        ..h.env.clone()
    };
    stage(&env, &h.run_input(key).await).await.map_err(named)
}

/// A random value that CSV must quote now and then (commas, quotes), never a line break.
fn text(rng: &mut StdRng) -> String {
    const WORDS: [&str; 6] = ["north", "a,b", "say \"hi\"", "", "zürich", "x"];
    (0..rng.gen_range(1..4))
        .map(|_| WORDS[rng.gen_range(0..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

/// A CSV file of `rows` random rows: repeated ids (the last row wins, by its line), nulls,
/// quoted fields; with `odd`, blank lines and `\r\n` line ends.
fn random_csv(rng: &mut StdRng, rows: usize, odd: bool) -> String {
    let end = if odd { "\r\n" } else { "\n" };
    let mut csv = format!("id,name,amount,day{end}");
    for _ in 0..rows {
        if odd && rng.gen_bool(0.01) {
            csv.push_str(end); // a blank line
        }
        let name = text(rng).replace('"', "\"\"");
        let amount = if rng.gen_bool(0.1) {
            String::new()
        } else {
            format!("{:.2}", rng.gen_range(-1000.0..1000.0))
        };
        let day = format!(
            "2026-{:02}-{:02}",
            rng.gen_range(1..13),
            rng.gen_range(1..29)
        );
        let id = rng.gen_range(0..rows / 2);
        csv.push_str(&format!("{id},\"{name}\",{amount},{day}{end}"));
    }
    csv
}

/// `csv` with bad rows spread over it, at 30, 60 and 90% of its bytes: a ragged one, a value
/// that is not a number, a null key.
fn with_three_bad_rows(mut csv: String) -> String {
    for (at, bad) in [
        (3, "9,ragged\n"),
        (6, "10,x,lots,2026-01-01\n"),
        (9, ",no key,1,2026-01-01\n"),
    ] {
        let cut = csv.len() * at / 10;
        let line_start = csv[..cut].rfind('\n').unwrap() + 1;
        csv.insert_str(line_start, bad);
    }
    csv
}

/// The two staging tables hold the same rows in the same order (what the MERGE's "the last row
/// wins" goes by); with `lines_exact`, on the same lines too. Else the first difference. (Lines
/// are exact unless a CSV batch read on the fast path holds a blank line: then its rows are
/// numbered from the batch's first line, in order, in both reads: `LINE_COLUMN`.)
async fn assert_same_staged(
    split: &StageOutput,
    whole: &StageOutput,
    what: &str,
    lines_exact: bool,
) {
    let (split_schema, split_rows) = staged_rows(split).await;
    let (whole_schema, whole_rows) = staged_rows(whole).await;
    assert_eq!(split_schema, whole_schema, "{what}");
    let rows = |read: serde_json::Value| -> Vec<String> {
        let rows = read
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string());
        if lines_exact {
            rows.collect()
        } else {
            rows.map(|r| r.rsplit_once('|').unwrap().0.to_string())
                .collect()
        }
    };
    let (split_rows, whole_rows) = (rows(split_rows), rows(whole_rows));
    let first_difference = split_rows.iter().zip(&whole_rows).find(|(s, w)| s != w);
    assert_eq!(
        first_difference, None,
        "{what}: the first row that differs (split, whole)"
    );
    assert_eq!(split_rows.len(), whole_rows.len(), "{what}");
}

/// The staging table of `output`: its schema as its log records it, and its rows read by the
/// Python `deltalake` package in line order.
async fn staged_rows(output: &StageOutput) -> (String, serde_json::Value) {
    let table = output.staging_table.as_deref().expect("a staging table");
    let location = TableLocation::new(url::Url::parse(table).unwrap(), Default::default());
    let opened = location.open().await.unwrap().unwrap();
    let schema = format!("{:?}", arrow_schema(&opened).unwrap().fields());
    let path = location.url.to_file_path().unwrap();
    (schema, read_with_python(&path, LINE_COLUMN)["rows"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_staged_in_chunks_equals_the_file_read_whole() {
    let headless = "[[feeds]]\nname = \"headless\"\nincoming = \"incoming/headless/\"\n\
                    table = \"tables/headless\"\nkeys = [\"column_1\"]\n[feeds.csv]\nheader = false\n";
    let h = Harness::new(&config(&[
        feed("csv", ""),
        feed("lines", ""),
        headless.to_string(),
    ]));
    let mut rng = StdRng::seed_from_u64(22);
    for (i, odd) in [false, true].into_iter().enumerate() {
        let key = format!("incoming/csv/{i}.csv");
        h.put(&key, random_csv(&mut rng, 12_000, odd)).await;
        let (whole, split) = stage_both(&h, &key).await;
        let (whole, split) = (whole.unwrap(), split.unwrap().expect("staged in chunks"));
        assert!(split.chunks.unwrap() > 10, "{split:?}");
        assert_eq!((split.rows, &split.columns), (whole.rows, &whole.columns));
        assert_same_staged(&split, &whole, &key, !odd).await;
    }

    // A CSV file without a header, a line of which starts like a Parquet file ("PAR1"): only
    // the file's own start says what it is, not a chunk's.
    let headless: String = (0..20_000)
        .map(|i| format!("PAR{},{}\n", i % 7, rng.gen_range(0..100)))
        .collect();
    h.put("incoming/headless/a.csv", &headless).await;
    let (whole, split) = stage_both(&h, "incoming/headless/a.csv").await;
    let (whole, split) = (whole.unwrap(), split.unwrap().expect("staged in chunks"));
    assert_same_staged(&split, &whole, "headless", true).await;

    // JSON lines: keys in any order, a key missing now and then, nested values.
    let mut lines = String::new();
    for n in 0..3000 {
        let note = if rng.gen_bool(0.3) {
            String::new()
        } else {
            format!(r#","note":{}"#, serde_json::json!(text(&mut rng)))
        };
        lines.push_str(&format!(
            r#"{{"tags":[{n},"a"],"id":{}{note},"qty":{}}}"#,
            rng.gen_range(0..1000),
            rng.gen_range(0..50)
        ));
        lines.push('\n');
    }
    h.put("incoming/lines/a.jsonl", &lines).await;
    let (whole, split) = stage_both(&h, "incoming/lines/a.jsonl").await;
    let (whole, split) = (whole.unwrap(), split.unwrap().expect("staged in chunks"));
    assert_same_staged(&split, &whole, "lines", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_value_in_a_late_chunk_fails_the_file_on_its_own_line() {
    let h = Harness::new(&config(&[feed("csv", ""), feed("lines", "")]));
    let mut rng = StdRng::seed_from_u64(7);
    let mut csv = random_csv(&mut rng, 12_000, false);
    let at = csv.len() * 9 / 10;
    let line_start = csv[..at].rfind('\n').unwrap() + 1;
    csv.insert_str(line_start, "17,late,not a number,2026-01-01\n");
    h.put("incoming/csv/bad.csv", &csv).await;
    let (whole, split) = stage_both(&h, "incoming/csv/bad.csv").await;
    let line = csv[..line_start].matches('\n').count() + 1;
    let whole = whole.unwrap_err();
    assert!(
        whole.contains(&format!("line {line}, column 'amount'")),
        "{whole}"
    );
    assert_eq!(split.unwrap_err(), whole);

    // A JSON key first met after the sample that fixed the columns, deep in the file.
    let mut lines: String = (0..10_000)
        .map(|n| format!("{{\"id\":{n},\"qty\":1}}\n"))
        .collect();
    lines.push_str("{\"id\":1,\"surprise\":true}\n");
    h.put("incoming/lines/late.jsonl", &lines).await;
    let (whole, split) = stage_both(&h, "incoming/lines/late.jsonl").await;
    let whole = whole.unwrap_err();
    assert!(
        whole.contains("line 10001: field 'surprise' first appears after the first 8192 records"),
        "{whole}"
    );
    assert_eq!(split.unwrap_err(), whole);
    assert!(
        h.staging_is_empty(),
        "a failed chunked stage leaves its files behind"
    );
}

/// A quoted field with a line break: the file's lines are not its records, so the chunks hand
/// it back and it is read whole, with the whole read's result.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quoted_line_break_makes_the_file_read_whole() {
    let h = Harness::new(&config(&[feed("csv", "")]));
    let mut rng = StdRng::seed_from_u64(3);

    // A quoted field with a line break late in the file: the lines are not the records.
    let mut csv = random_csv(&mut rng, 12_000, false);
    csv.push_str("5,\"two\nlines\",1.5,2026-02-02\n");
    csv.push_str(
        &random_csv(&mut rng, 200, false)
            .split_once('\n')
            .unwrap()
            .1
            .to_string(),
    );
    h.put("incoming/csv/quoted.csv", &csv).await;
    let (whole, split) = stage_both(&h, "incoming/csv/quoted.csv").await;
    assert!(
        split.unwrap().is_none(),
        "a chunk found the record over two lines"
    );
    let (whole, split) = (
        whole.unwrap(),
        stage_with_workers(&h, "incoming/csv/quoted.csv")
            .await
            .unwrap(),
    );
    assert_eq!(split.chunks, None, "read whole");
    assert_same_staged(&split, &whole, "quoted", true).await;
}

/// Rows set aside and expectations broken across chunks: the chunks' findings, put together in
/// file order, are the whole read's (the same rejects file, counts and first lines); past a
/// threshold the file is read whole, which fails it as always.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_set_aside_in_chunks_are_the_whole_reads() {
    let rules = "on_bad_rows = \"reject\"\nmax_rejected_rows = 5\n\
                 [[feeds.expect]]\nname = \"small\"\ncolumn = \"amount\"\nmax = 900\naction = \"warn\"\n";
    let h = Harness::new(&config(&[feed("rejecting", rules)]));
    let mut rng = StdRng::seed_from_u64(5);
    let csv = with_three_bad_rows(random_csv(&mut rng, 12_000, false));
    h.put("incoming/rejecting/a.csv", &csv).await;
    let (whole, split) = stage_both(&h, "incoming/rejecting/a.csv").await;
    let (whole, split) = (whole.unwrap(), split.unwrap().expect("staged in chunks"));
    assert_eq!((split.rejected_rows(), whole.rejected_rows()), (3, 3));
    assert!(whole.warned_rows() > 10, "{whole:?}");
    assert_eq!(split.expectations, whole.expectations);
    let (split_rejects, whole_rejects) = (
        split.rejects.clone().unwrap(),
        whole.rejects.clone().unwrap(),
    );
    assert_eq!(split_rejects.by_reason, whole_rejects.by_reason);
    assert_eq!(split_rejects.first, whole_rejects.first);
    let file = |key: &str| std::fs::read_to_string(h.path(key)).unwrap();
    assert_eq!(file(&split_rejects.file), file(&whole_rejects.file));
    assert_same_staged(&split, &whole, "rejecting", true).await;

    // Six bad rows, one more than max_rejected_rows, none two in a chunk: read whole, refused.
    let mut csv = random_csv(&mut rng, 12_000, false);
    for at in 1..=6 {
        let cut = csv.len() * at / 7;
        let line_start = csv[..cut].rfind('\n').unwrap() + 1;
        csv.insert_str(line_start, "9,ragged\n");
    }
    h.put("incoming/rejecting/b.csv", &csv).await;
    let (whole, split) = stage_both(&h, "incoming/rejecting/b.csv").await;
    assert!(whole.unwrap_err().starts_with("TooManyBadRows"));
    assert!(
        split.unwrap().is_none(),
        "more than max_rejected_rows: read whole"
    );
}

/// A quoted line break in the last column (text, so that the fast path parses it without a
/// complaint), its line break on every byte around a chunk boundary: whichever chunk holds the
/// record's start or its cut-off part, the file is handed back to be read whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quoted_line_break_on_any_byte_of_a_boundary_is_found() {
    let h = Harness::new(&config(&[feed("csv", "")]));
    let filler = |from: usize, count: usize| -> String {
        (from..from + count)
            .map(|i| format!("{i:05},filler text\n"))
            .collect()
    };
    let head = format!("id,note\n{}", filler(10, 900));
    let tail = filler(20_000, 900);
    // The pads before and after the record keep the file's size, so its boundaries stay put.
    let size_with = |pad: usize| {
        format!(
            "{head}1,{}\n2,\"x\ny\"\n3,{}\n{tail}",
            "p".repeat(pad),
            "q".repeat(40 - pad)
        )
    };
    let size = size_with(0).len() as u64;
    let chunks = size.div_ceil(SPLIT.chunk_bytes);
    let boundary = size * (chunks / 2) / chunks;
    let line_break_at = |pad: usize| (head.len() + 2 + pad + 1 + 4) as u64;
    let mut tried = 0;
    for pad in 0..=40 {
        let at = line_break_at(pad);
        if at + 3 < boundary || at > boundary + 3 {
            continue;
        }
        tried += 1;
        let key = format!("incoming/csv/break-{pad}.csv");
        h.put(&key, size_with(pad)).await;
        let (whole, split) = stage_both(&h, &key).await;
        assert_eq!(whole.unwrap().rows, 1803, "{key}");
        assert!(
            split.unwrap().is_none(),
            "{key}: the line break at byte {at}, a boundary at {boundary}, was not found"
        );
    }
    assert_eq!(tried, 7, "every byte from 3 before the boundary to 3 after");
}

/// A child's result as the Map hands it to the step after it: its output, or the name of the
/// error its Catch caught (the state machine keeps no message), through JSON as in the
/// execution's state.
fn child<T: serde::Serialize + serde::de::DeserializeOwned>(
    result: deltadrop::Result<T>,
) -> Option<ChildResult<T>> {
    let result = match result {
        Ok(done) => ChildResult::Done(done),
        Err(e) => ChildResult::Failed {
            failure: Failure {
                cause: String::new(),
                ..Failure::from(&e)
            },
        },
    };
    serde_json::from_value(serde_json::to_value(result).unwrap()).unwrap()
}

/// Stages `key` as the state machine's chunked route does: PlanChunks, a CountLines child per
/// range, NumberChunks (a Parquet file: neither), a StageChunks child per chunk (in parallel, each with only what its
/// input names), CommitChunks, and CommitChunks again (a retry must answer the same, and not
/// add the files twice); a failed file then goes through the Quarantine state's step. `None`:
/// the file is to be read whole.
async fn stage_by_steps(h: &Harness, key: &str) -> Result<Option<StageOutput>, String> {
    let run: RunInput = h.run_input(key).await;
    let staged = chunk_steps(h, &run).await;
    if let Err(e) = &staged {
        deltadrop::steps::quarantine(&h.env, &run, &Failure::from(e))
            .await
            .unwrap();
    }
    staged.map_err(named)
}

async fn chunk_steps(h: &Harness, run: &RunInput) -> deltadrop::Result<Option<StageOutput>> {
    let (env, run) = (&h.env, run.clone());
    let items = match chunks::plan_chunks(env, &run).await? {
        ChunkPlan::Split { ranges, .. } => {
            let counts = futures::future::join_all(
                ranges
                    .iter()
                    .map(|&range| chunks::count_chunk_lines(env, &run, range)),
            )
            .await;
            let counts = counts.into_iter().map(child).collect();
            chunks::number_chunks(env, &run, counts).await?.items
        }
        // A Parquet file: numbered by its footer, as the NumberedByTheFooter state passes them.
        ChunkPlan::Numbered { items, .. } => items,
        ChunkPlan::ReadWhole { .. } => return Ok(None),
    };
    let staged = futures::future::join_all(
        items
            .iter()
            .map(|&item| chunks::stage_chunk(env, &run, item)),
    )
    .await;
    let results: Vec<_> = staged.into_iter().map(child).collect();
    let committed = chunks::commit_chunks(env, &run, results.clone()).await;
    let retried = chunks::commit_chunks(env, &run, results).await;
    let text = |r: &deltadrop::Result<ChunksCommitted>| match r {
        Ok(committed) => serde_json::to_string(committed).unwrap(),
        Err(e) => named(e.clone()),
    };
    assert_eq!(text(&retried), text(&committed), "CommitChunks retried");
    if let Ok(ChunksCommitted::Staged(output)) = &committed {
        // Created by PlanChunks, then the chunks' one commit: the retry committed nothing.
        let table = output.staging_table.as_deref().unwrap();
        let location = TableLocation::new(url::Url::parse(table).unwrap(), Default::default());
        let version = location.open().await.unwrap().unwrap().version();
        assert_eq!(version, Some(1), "the staging table's commits");
    }
    match committed? {
        ChunksCommitted::Staged(output) => Ok(Some(output)),
        ChunksCommitted::ReadWhole { .. } => Ok(None),
    }
}

/// The states of the chunked route, each an invocation that knows only its input, stage a file
/// as the whole read does: the same rows, lines and rows set aside; a failed chunk fails the
/// file with the whole read's error, under its name, and leaves no staging files; a quoted
/// line break sends the file to the whole read.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_state_machines_chunk_steps_stage_a_file_as_the_whole_read() {
    let route = "[feeds.route]\nparallel_stage_from_mb = 1\nchunk_mb = 0.0625\n";
    let rules = format!(
        "on_bad_rows = \"reject\"\nmax_rejected_rows = 5\n{route}\
         [[feeds.expect]]\nname = \"small\"\ncolumn = \"amount\"\nmax = 900\naction = \"warn\"\n"
    );
    let h = Harness::new(&config(&[feed("csv", route), feed("rejecting", &rules)]));
    let mut rng = StdRng::seed_from_u64(23);

    let csv = random_csv(&mut rng, 12_000, false);
    h.put("incoming/csv/a.csv", &csv).await;
    let whole = stage(&h.env, &h.run_input("incoming/csv/a.csv").await)
        .await
        .unwrap();
    let split = stage_by_steps(&h, "incoming/csv/a.csv")
        .await
        .unwrap()
        .expect("staged in chunks");
    assert!(split.chunks.unwrap() >= 5, "{split:?}");
    assert_eq!((split.rows, &split.columns), (whole.rows, &whole.columns));
    assert_same_staged(&split, &whole, "by steps", true).await;

    // Bad rows in three chunks, and a warn expectation: one rejects file, the whole read's.
    let csv = with_three_bad_rows(random_csv(&mut rng, 12_000, false));
    h.put("incoming/rejecting/a.csv", &csv).await;
    let whole = stage(&h.env, &h.run_input("incoming/rejecting/a.csv").await)
        .await
        .unwrap();
    let split = stage_by_steps(&h, "incoming/rejecting/a.csv")
        .await
        .unwrap()
        .expect("staged in chunks");
    assert_eq!((split.rejected_rows(), whole.rejected_rows()), (3, 3));
    assert_eq!(split.expectations, whole.expectations);
    let (split_rejects, whole_rejects) = (
        split.rejects.clone().unwrap(),
        whole.rejects.clone().unwrap(),
    );
    let file = |key: &str| std::fs::read_to_string(h.path(key)).unwrap();
    assert_eq!(file(&split_rejects.file), file(&whole_rejects.file));
    assert_same_staged(&split, &whole, "rejecting by steps", true).await;

    // A bad value in a late chunk: the whole read's error, under its own name (in a bucket of
    // its own, whose staging folder must be left empty).
    let h = Harness::new(&config(&[feed("csv", route)]));
    let mut csv = random_csv(&mut rng, 12_000, false);
    let line_start = csv[..csv.len() * 9 / 10].rfind('\n').unwrap() + 1;
    csv.insert_str(line_start, "17,late,not a number,2026-01-01\n");
    h.put("incoming/csv/bad.csv", &csv).await;
    let whole = stage_whole(&h, "incoming/csv/bad.csv").await.unwrap_err();
    assert!(whole.starts_with("InvalidValue: "), "{whole}");
    assert_eq!(
        stage_by_steps(&h, "incoming/csv/bad.csv")
            .await
            .unwrap_err(),
        whole
    );
    assert!(
        h.staging_is_empty(),
        "a failed chunk left staging files past the Quarantine state"
    );

    // A quoted line break: read whole.
    let mut csv = random_csv(&mut rng, 12_000, false);
    let line_start = csv[..csv.len() / 2].rfind('\n').unwrap() + 1;
    csv.insert_str(line_start, "5,\"two\nlines\",1,2026-01-01\n");
    h.put("incoming/csv/broken.csv", &csv).await;
    assert_eq!(
        stage_by_steps(&h, "incoming/csv/broken.csv").await,
        Ok(None)
    );
    // The Stage state then reads it whole, where the chunks' staging table was.
    let run = h.run_input("incoming/csv/broken.csv").await;
    assert_eq!(stage(&h.env, &run).await.unwrap().rows, 12_001);
}

/// A Parquet file of `rows` random rows in row groups of random sizes (1 to 1500 rows): repeated
/// ids (the last record wins, by its number), nulls, text, dates and millisecond timestamps
/// (stored as microseconds in UTC); with `null_keys`, a null id at each of those records.
fn random_parquet(rng: &mut StdRng, rows: usize, null_keys: &[usize]) -> Vec<u8> {
    use deltalake::arrow::array::{
        ArrayRef, Date32Array, Float64Array, Int64Array, StringArray, TimestampMillisecondArray,
    };
    use deltalake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use deltalake::arrow::record_batch::RecordBatch;
    use std::sync::Arc;

    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("day", DataType::Date32, true),
        Field::new("at", DataType::Timestamp(TimeUnit::Millisecond, None), true),
    ]));
    let properties = deltalake::parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(1_000_000))
        .build();
    let mut bytes = Vec::new();
    let mut writer = deltalake::parquet::arrow::ArrowWriter::try_new(
        &mut bytes,
        schema.clone(),
        Some(properties),
    )
    .unwrap();
    let mut written = 0;
    while written < rows {
        let group = rng.gen_range(1..=1500).min(rows - written);
        let records = written..written + group;
        let id: Int64Array = records
            .map(|r| (!null_keys.contains(&r)).then(|| rng.gen_range(0..rows as i64 / 2)))
            .collect();
        let name: Vec<Option<String>> = (0..group)
            .map(|_| rng.gen_bool(0.9).then(|| text(rng)))
            .collect();
        let amount: Float64Array = (0..group)
            .map(|_| rng.gen_bool(0.9).then(|| rng.gen_range(-1e3..1e3)))
            .collect();
        let day: Date32Array = (0..group)
            .map(|_| Some(rng.gen_range(19_000..21_000)))
            .collect();
        let at: TimestampMillisecondArray = (0..group)
            .map(|_| Some(rng.gen_range(1_700_000_000_000i64..1_800_000_000_000)))
            .collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(id),
            Arc::new(name.into_iter().collect::<StringArray>()),
            Arc::new(amount),
            Arc::new(day),
            Arc::new(at),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
        writer.write(&batch).unwrap();
        // Each written batch closes its row group: groups of random sizes.
        writer.flush().unwrap();
        written += group;
    }
    writer.close().unwrap();
    bytes
}

/// A Parquet file cut between its row groups, locally and by the state machine's steps, gives
/// the staging table of the whole read, record for record (read back by the Python reader);
/// its bad records are the whole read's, under their record numbers; a file of one row group
/// is read whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_parquet_file_staged_by_row_group_equals_the_file_read_whole() {
    let route = "[feeds.route]\nparallel_stage_from_mb = 1\nchunk_mb = 0.0625\n";
    let rules = format!(
        "on_bad_rows = \"reject\"\nmax_rejected_rows = 5\n{route}\
         [[feeds.expect]]\nname = \"small\"\ncolumn = \"amount\"\nmax = 900\naction = \"warn\"\n"
    );
    let h = Harness::new(&config(&[feed("pq", route), feed("rejecting", &rules)]));
    let mut rng = StdRng::seed_from_u64(24);
    for (i, rows) in [12_000, 30_000].into_iter().enumerate() {
        let key = format!("incoming/pq/{i}.parquet");
        h.put(&key, random_parquet(&mut rng, rows, &[])).await;
        let whole = stage(&h.env, &h.run_input(&key).await).await.unwrap();
        let local = stage_with_workers(&h, &key).await.unwrap();
        assert!(local.chunks.unwrap() > 10, "{local:?}");
        assert_eq!((local.rows, &local.columns), (whole.rows, &whole.columns));
        assert_same_staged(&local, &whole, &key, true).await;
        let steps = stage_by_steps(&h, &key)
            .await
            .unwrap()
            .expect("staged by row group");
        assert!(steps.chunks.unwrap() >= 2, "{steps:?}");
        assert_same_staged(&steps, &whole, &key, true).await;
    }

    // Null keys in three row groups, set aside: one rejects file, the whole read's.
    let bad = [2_000, 6_000, 11_000];
    h.put(
        "incoming/rejecting/a.parquet",
        random_parquet(&mut rng, 12_000, &bad),
    )
    .await;
    let key = "incoming/rejecting/a.parquet";
    let whole = stage(&h.env, &h.run_input(key).await).await.unwrap();
    assert_eq!(whole.rejected_rows(), 3);
    let whole_rejects = whole.rejects.clone().unwrap();
    let file = |key: &str| std::fs::read_to_string(h.path(key)).unwrap();
    for split in [
        stage_with_workers(&h, key).await.unwrap(),
        stage_by_steps(&h, key)
            .await
            .unwrap()
            .expect("staged by row group"),
    ] {
        assert!(split.chunks.is_some(), "{split:?}");
        assert_eq!(split.expectations, whole.expectations);
        let split_rejects = split.rejects.clone().unwrap();
        assert_eq!(split_rejects.first, whole_rejects.first);
        assert_eq!(file(&split_rejects.file), file(&whole_rejects.file));
        assert_same_staged(&split, &whole, "rejecting", true).await;
    }

    // A null key in a late row group fails the file on its record, as the whole read does.
    let key = "incoming/pq/bad.parquet";
    h.put(key, random_parquet(&mut rng, 12_000, &[10_500]))
        .await;
    let whole = stage_whole(&h, key).await.unwrap_err();
    assert!(whole.contains("record 10501"), "{whole}");
    assert_eq!(stage_with_workers(&h, key).await.unwrap_err(), whole);
    assert_eq!(stage_by_steps(&h, key).await.unwrap_err(), whole);

    // A page that does not decode, in a late row group: the chunks hand the file to the whole
    // read, whose error names the records it names.
    let key = "incoming/pq/corrupt.parquet";
    let mut corrupt = random_parquet(&mut rng, 12_000, &[]);
    let page = {
        use deltalake::parquet::file::reader::{FileReader, SerializedFileReader};
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, &corrupt).unwrap();
        let reader = SerializedFileReader::new(file).unwrap();
        let metadata = reader.metadata();
        let late = metadata.row_group(metadata.num_row_groups() - 2);
        late.column(2).byte_range().0 as usize
    };
    corrupt[page..page + 16].fill(0xff);
    h.put(key, &corrupt).await;
    let whole = stage_whole(&h, key).await.unwrap_err();
    assert!(whole.starts_with("MalformedFile"), "{whole}");
    let (_, split) = stage_both(&h, key).await;
    assert!(
        split.unwrap().is_none(),
        "a page that does not decode: read whole"
    );
    assert_eq!(stage_by_steps(&h, key).await, Ok(None));
    assert_eq!(stage_with_workers(&h, key).await.unwrap_err(), whole);

    // One row group: nothing to cut.
    let key = "incoming/pq/one.parquet";
    h.put(
        key,
        crate::support::parquet(&random_batch_of_one_group(&mut rng)),
    )
    .await;
    let (_, split) = stage_both(&h, key).await;
    assert!(split.unwrap().is_none(), "one row group is read whole");
}

/// 20,000 records in one row group.
fn random_batch_of_one_group(rng: &mut StdRng) -> deltalake::arrow::record_batch::RecordBatch {
    use deltalake::arrow::array::{ArrayRef, Int64Array};
    use std::sync::Arc;
    let id: ArrayRef = Arc::new(
        (0..20_000)
            .map(|_| rng.gen_range(0..1000i64))
            .collect::<Int64Array>(),
    );
    deltalake::arrow::record_batch::RecordBatch::try_from_iter([("id", id)]).unwrap()
}
