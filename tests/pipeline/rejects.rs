//! Bad rows set aside (`on_bad_rows = "reject"`) on real data nobody wrote for these tests:
//! `airports.csv` of the Python `vega_datasets` package (installed by the test command), with
//! bad rows injected. The good rows load, the rejects file holds exactly the bad ones with
//! their lines, and too many bad rows fail the file with nothing loaded. (Its 3,376 rows are
//! read on the CSV's exact path; crates/deltadrop/src/read tests the fast path's batches.)

use std::collections::BTreeMap;

use deltadrop::rejects::{RejectedRow, REJECTS_SUFFIX};

use crate::crosscheck::python;
use crate::support::{config, feed, Harness};

/// `airports.csv` as `vega_datasets` ships it: 3,376 airports keyed by their IATA code.
fn airports() -> String {
    let output = std::process::Command::new(python())
        .args([
            "-c",
            "import os, vega_datasets; \
             print(os.path.join(os.path.dirname(vega_datasets.__file__), '_data', 'airports.csv'))",
        ])
        .output()
        .expect("run the tests with ./scripts/test, which installs vega_datasets");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = String::from_utf8(output.stdout).unwrap();
    std::fs::read_to_string(path.trim()).unwrap()
}

/// The file with every 50th airport spoiled in turn: its longitude not a number, its key
/// empty, or a field too many. The file, and each spoiled line's number with its reason.
fn spoiled_airports() -> (String, BTreeMap<u64, &'static str>) {
    let mut file = String::new();
    let mut spoiled = BTreeMap::new();
    for (i, line) in airports().lines().enumerate() {
        let number = i as u64 + 1;
        let line = match (i % 50, i / 50 % 3) {
            (0, _) if i == 0 => line.to_string(),
            (0, 0) => {
                spoiled.insert(number, "InvalidValue");
                format!("{},far-west", &line[..line.rfind(',').unwrap()])
            }
            (0, 1) => {
                spoiled.insert(number, "NullKey");
                line[line.find(',').unwrap()..].to_string()
            }
            (0, _) => {
                spoiled.insert(number, "MalformedFile");
                format!("{line},extra")
            }
            _ => line.to_string(),
        };
        file.push_str(&line);
        file.push('\n');
    }
    (file, spoiled)
}

fn airports_feed(extra: &str) -> String {
    let settings = format!(
        "on_bad_rows = \"reject\"\n{extra}\n[feeds.column_types]\nlatitude = \"double\"\nlongitude = \"double\"\n"
    );
    config(&[feed("airports", &settings).replace("keys = [\"id\"]", "keys = [\"iata\"]")])
}

fn rejected_rows(h: &Harness, key: &str) -> Vec<RejectedRow> {
    std::fs::read_to_string(h.path(key))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test]
async fn a_real_file_with_a_few_bad_rows_loads_the_rest_and_sets_exactly_those_aside() {
    let h = Harness::new(&airports_feed(""));
    let (file, spoiled) = spoiled_airports();
    let data_lines = file.lines().count() as u64 - 1;
    let result = h.load("incoming/airports/airports.csv", &file).await;

    let stage = result.report.stage.clone().unwrap();
    let rejects = stage.rejects.clone().expect("rows were set aside");
    assert_eq!(rejects.rows, spoiled.len() as u64);
    assert_eq!(stage.rows, data_lines - rejects.rows);
    let upsert = result.report.upsert.clone().unwrap();
    assert_eq!(upsert.changes.rows_inserted, stage.rows);
    assert_eq!(upsert.rows_rejected, rejects.rows);
    let loaded = h.rows("tables/airports", &["iata"]).await;
    assert_eq!(loaded.len() as u64, stage.rows);

    // Exactly the spoiled lines, each once, with its reason and the record as it was sent.
    let key = format!("{}{REJECTS_SUFFIX}", h.quarantined(&result));
    assert_eq!(rejects.file, key);
    let rows = rejected_rows(&h, &key);
    let found: BTreeMap<u64, &str> = rows
        .iter()
        .map(|row| match row.position {
            deltadrop::error::Position::Line(n) => (n, row.error.as_str()),
            other => panic!("a CSV row is located by its line, not {other}"),
        })
        .collect();
    assert_eq!(found, spoiled);
    let lines: Vec<&str> = file.lines().collect();
    for row in &rows {
        let deltadrop::error::Position::Line(n) = row.position else {
            unreachable!()
        };
        assert_eq!(row.raw, lines[n as usize - 1], "line {n}");
    }
    let invalid = rows.iter().find(|r| r.error == "InvalidValue").unwrap();
    assert_eq!(
        (invalid.column.as_deref(), invalid.value.as_deref()),
        (Some("longitude"), Some("far-west"))
    );

    // A success with a visible warning: the email counts them and shows the first ones.
    let emails = h.emails();
    let email = emails.last().unwrap();
    assert!(email.contains("loaded with rejected rows"), "{email}");
    let counts = format!(
        "{} (InvalidValue {}, MalformedFile {}, NullKey {})",
        rejects.rows,
        rejects.by_reason["InvalidValue"],
        rejects.by_reason["MalformedFile"],
        rejects.by_reason["NullKey"]
    );
    assert!(email.contains(&counts), "{counts} in {email}");
    assert!(email.contains("line 51: NullKey: "), "{email}");
    assert!(email.contains(&key), "{email}");
    assert!(
        h.exists(&h.archived(&result)),
        "the file itself is archived"
    );

    // The owner fixes the rejected records (here: back to what the original file said) and
    // replays them: a new upload of the feed, with the original's header, that completes the
    // table. It then equals the original file loaded as it was, row for row.
    let original = airports();
    let original_lines: Vec<&str> = original.lines().collect();
    let fixed: String = rows
        .iter()
        .map(|row| {
            let deltadrop::error::Position::Line(n) = row.position else {
                unreachable!()
            };
            let fixed = RejectedRow {
                raw: original_lines[n as usize - 1].to_string(),
                ..row.clone()
            };
            serde_json::to_string(&fixed).unwrap() + "\n"
        })
        .collect();
    h.put(&key, fixed).await;
    let replayed = deltadrop::replay_rejects::replay_rejects(&h.bucket, &h.env.config, &key)
        .await
        .unwrap();
    assert_eq!(replayed.rows, rows.len() as u64);
    assert!(
        !h.exists(&key) && h.exists(&replayed.kept_at),
        "the rejects file is kept, renamed"
    );
    assert!(
        replayed
            .upload_key
            .starts_with("incoming/airports/airports-rejects-")
            && replayed.upload_key.ends_with(".csv"),
        "{}",
        replayed.upload_key
    );
    let again = h.run(&replayed.upload_key).await;
    assert!(again.error.is_none(), "{:?}", again.error);
    let stage = again.report.stage.unwrap();
    assert_eq!((stage.rows, stage.rejects), (rows.len() as u64, None));

    let clean = Harness::new(&airports_feed(""));
    clean
        .load("incoming/airports/airports.csv", &original)
        .await;
    assert_eq!(
        h.rows("tables/airports", &["iata"]).await,
        clean.rows("tables/airports", &["iata"]).await
    );
    assert!(
        deltadrop::replay_rejects::replay_rejects(&h.bucket, &h.env.config, &key)
            .await
            .is_err(),
        "a rejects file is replayed once"
    );
}

#[tokio::test]
async fn too_many_bad_rows_fail_the_file_with_nothing_loaded_and_the_rejects_kept() {
    let (file, spoiled) = spoiled_airports();
    for (setting, rejected) in [
        ("max_rejected_rows = 10", 11),
        ("max_rejected_percent = 1", spoiled.len()),
    ] {
        let h = Harness::new(&airports_feed(setting));
        h.put("incoming/airports/airports.csv", &file).await;
        let result = h.run("incoming/airports/airports.csv").await;
        let error = result.error.as_ref().expect("too many bad rows");
        assert_eq!(error.name(), "TooManyBadRows", "{error}");
        assert!(
            error
                .to_string()
                .contains(&format!("{rejected} bad row(s)")),
            "{error}"
        );
        assert_eq!(
            h.version("tables/airports").await,
            None,
            "nothing was loaded"
        );
        assert!(h.staging_is_empty());

        let quarantined = h.quarantined(&result);
        assert!(h.exists(&quarantined));
        let key = format!("{quarantined}{REJECTS_SUFFIX}");
        assert_eq!(rejected_rows(&h, &key).len(), rejected);
        let report: serde_json::Value = serde_json::from_slice(
            &std::fs::read(h.path(&format!("{quarantined}.error.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(report["error"], "TooManyBadRows");
        assert_eq!(report["rejects_file"], key.as_str());
        assert_eq!(report["rows_rejected"], rejected as u64);
        let emails = h.emails();
        let email = emails.last().unwrap();
        assert!(email.contains("Rejects file"), "{email}");
        // Its rows were never merged: they go back with the fixed file, not on their own.
        let refused = deltadrop::replay_rejects::replay_rejects(&h.bucket, &h.env.config, &key)
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("never merged"), "{refused}");
        assert!(h.exists(&key), "a refused replay moves nothing");
    }
}
