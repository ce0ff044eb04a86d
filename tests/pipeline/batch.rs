//! The commit lane: files of one table merged in one commit end exactly as the same files merged
//! one at a time, in the same order. Random batches (overlapping keys, updates, deletes, sequence
//! values, new columns, several uploads of one key, CSV and JSON lines) go through both paths on
//! two tables, and the Python `deltalake` reader compares them row for row.

use deltadrop::steps::{self, Pending, RunInput, UpsertOutcome, UpsertOutput};
use deltadrop::upload::Upload;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::crosscheck::read_with_python;
use crate::support::Harness;

/// What a feed's MERGE looks at besides the key.
#[derive(Debug, Clone, Copy)]
struct Variant {
    composite_key: bool,
    /// Partitioned by the key column `region` (with the composite key).
    partitioned: bool,
    sequence: bool,
    deletes: bool,
    /// Every MERGE also writes its changes (and reads a sample of them back for the email).
    change_data_feed: bool,
}

impl Variant {
    fn options(&self) -> String {
        let mut options = String::new();
        if self.partitioned {
            options.push_str("partition_by = [\"region\"]\n");
        }
        if self.sequence {
            options.push_str("sequence_column = \"seq\"\n");
        }
        if self.deletes {
            options.push_str("change_type = { column = \"op\", delete_value = \"D\" }\n");
        }
        if self.change_data_feed {
            options.push_str("change_data_feed = true\n");
        }
        options
    }

    fn keys(&self) -> &'static [&'static str] {
        if self.composite_key {
            &["region", "id"]
        } else {
            &["id"]
        }
    }

    /// Two feeds with these options: `batched` and `single`, one table each.
    fn config(&self) -> String {
        let keys = self
            .keys()
            .iter()
            .map(|k| format!("{k:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        ["batched", "single"]
            .map(|name| {
                format!(
                    "[[feeds]]\nname = \"{name}\"\nincoming = \"incoming/{name}/\"\ntable = \"tables/{name}\"\nkeys = [{keys}]\n{}\n",
                    self.options()
                )
            })
            .concat()
    }
}

/// One random file: its name (several files may share one: new uploads of a key), its body, and
/// where its upload goes in S3's order (a lower number than an earlier upload of the name makes
/// it the older one, arriving late).
struct RandomFile {
    name: String,
    body: String,
    order: u64,
}

/// Columns a file may have: the fixed ones, then the new columns introduced so far.
struct Generator {
    rng: StdRng,
    variant: Variant,
    new_columns: usize,
    uploads: u64,
    names: usize,
}

impl Generator {
    fn file(&mut self, earlier_in_batch: &[String]) -> RandomFile {
        let rng = &mut self.rng;
        if rng.gen_bool(0.15) {
            self.new_columns += 1;
        }
        let mut columns: Vec<String> = self.variant.keys().iter().map(|k| k.to_string()).collect();
        columns.extend(["name".to_string(), "qty".to_string()]);
        if self.variant.sequence {
            columns.push("seq".into());
        }
        if self.variant.deletes {
            columns.push("op".into());
        }
        for c in 0..self.new_columns {
            // The newest column always comes with the file that introduces it.
            if c + 1 == self.new_columns || rng.gen_bool(0.5) {
                columns.push(format!("extra{c}"));
            }
        }
        let json = rng.gen_bool(0.25);
        let mut rows = Vec::new();
        for _ in 0..rng.gen_range(0..9) {
            let mut row = Vec::new();
            for column in &columns {
                let value: Option<String> = match column.as_str() {
                    "region" => Some(["eu", "us"][rng.gen_range(0..2)].into()),
                    "id" => Some(rng.gen_range(0..10).to_string()),
                    "name" => Some(format!("n{}", rng.gen_range(0..1000))),
                    "seq" => (!rng.gen_bool(0.1)).then(|| rng.gen_range(0..6).to_string()),
                    "op" => Some(["U", "D", "I", ""][rng.gen_range(0..4)].into()),
                    _ => (!rng.gen_bool(0.2)).then(|| rng.gen_range(0..100).to_string()),
                };
                row.push(value);
            }
            rows.push(row);
        }
        let body = if json {
            rows.iter()
                .map(|row| {
                    let fields: Vec<String> = columns
                        .iter()
                        .zip(row)
                        .filter_map(|(c, v)| {
                            // Extra columns are left out when null, the others written as null.
                            let Some(v) = v.as_ref() else {
                                return (!c.starts_with("extra")).then(|| format!("{c:?}: null"));
                            };
                            let quoted = matches!(c.as_str(), "region" | "name" | "op");
                            Some(if quoted {
                                format!("{c:?}: {v:?}")
                            } else {
                                format!("{c:?}: {v}")
                            })
                        })
                        .collect();
                    format!("{{{}}}\n", fields.join(", "))
                })
                .collect()
        } else {
            let mut body = format!("{}\n", columns.join(","));
            for row in &rows {
                let cells: Vec<&str> = row.iter().map(|v| v.as_deref().unwrap_or("")).collect();
                body.push_str(&format!("{}\n", cells.join(",")));
            }
            body
        };
        let suffix = if json { "jsonl" } else { "csv" };
        // Now and then a new upload of a name used earlier in the batch, sometimes older.
        let same_name = earlier_in_batch
            .iter()
            .find(|n| n.ends_with(suffix) && rng.gen_bool(0.2))
            .cloned();
        self.uploads += 10;
        let order = match &same_name {
            Some(_) if rng.gen_bool(0.5) => self.uploads - 15,
            _ => self.uploads,
        };
        let name = same_name.unwrap_or_else(|| {
            self.names += 1;
            format!("f{}.{suffix}", self.names)
        });
        RandomFile { name, body, order }
    }
}

/// A run for the upload `key` holds now, placed at `order` in S3's order of uploads.
async fn run_for(h: &Harness, key: &str, order: u64) -> RunInput {
    let mut upload: Upload = h.env.storage.upload(key).await.unwrap().unwrap();
    upload.sequencer = Some(format!("{order:020X}"));
    upload.uploaded_at =
        Some(chrono::DateTime::from_timestamp_millis(1_700_000_000_000 + order as i64).unwrap());
    RunInput::new(&h.env.config, key, upload).unwrap()
}

/// Puts a file under the feed's incoming prefix, stages and archives it.
async fn stage_file(h: &Harness, feed: &str, file: &RandomFile) -> deltadrop::Result<Pending> {
    let key = format!("incoming/{feed}/{}", file.name);
    h.put(&key, &file.body).await;
    let run = run_for(h, &key, file.order).await;
    let stage = steps::stage(&h.env, &run).await?;
    steps::archive(&h.env, &run).await?;
    Ok(Pending { run, stage })
}

fn outcome(result: &deltadrop::Result<UpsertOutput>) -> String {
    match result {
        Ok(u) => u.outcome.name().to_string(),
        Err(e) => e.name().to_string(),
    }
}

/// A table's columns and rows (`a|b|c`), as deltadrop reads it; `None` before the first file.
async fn table(h: &Harness, name: &str, keys: &[&str]) -> Option<(Vec<String>, Vec<String>)> {
    h.version(name).await?;
    let order: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    let batches = deltadrop::inspect::rows(&h.table(name), &order, None)
        .await
        .unwrap();
    let columns = batches.first().map_or(Vec::new(), |b| {
        b.schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    });
    Some((columns, deltadrop::inspect::row_strings(&batches).unwrap()))
}

/// `batches` random batches of 1 to 5 files through both paths; returns how many files shared a
/// commit with another.
async fn equivalent(seed: u64, variant: Variant, batches: usize) -> usize {
    let h = Harness::new(&variant.config());
    let mut generator = Generator {
        rng: StdRng::seed_from_u64(seed),
        variant,
        new_columns: 0,
        uploads: 100,
        names: 0,
    };
    let context = format!("seed {seed}, {variant:?}");
    let mut shared = 0;
    for batch in 0..batches {
        let count = generator.rng.gen_range(1..=5);
        let mut names = Vec::new();
        let mut files = Vec::new();
        for _ in 0..count {
            let file = generator.file(&names);
            names.push(file.name.clone());
            files.push(file);
        }
        let mut pending = Vec::new();
        let mut one_by_one = Vec::new();
        for file in &files {
            pending.push(stage_file(&h, "batched", file).await.unwrap());
            let single = stage_file(&h, "single", file).await.unwrap();
            one_by_one.push(steps::upsert(&h.env, &single.run, &single.stage).await);
        }
        let batched = steps::upsert::upsert_files(&h.env, &pending).await;
        let outcomes = |results: &[deltadrop::Result<UpsertOutput>]| -> Vec<String> {
            results.iter().map(outcome).collect()
        };
        let uploads: Vec<(&str, u64, usize)> = files
            .iter()
            .map(|f| (f.name.as_str(), f.order, f.body.lines().count()))
            .collect();
        assert_eq!(
            outcomes(&batched),
            outcomes(&one_by_one),
            "{context}, batch {batch}: each file's outcome, batched and one by one; {uploads:?}"
        );
        shared += batched
            .iter()
            .filter(|r| r.as_ref().is_ok_and(|u| u.shared_commit.is_some()))
            .count();
        if variant.change_data_feed {
            for applied in batched
                .iter()
                .flatten()
                .filter(|u| u.outcome == UpsertOutcome::Applied)
            {
                let sample = applied.change_sample.as_ref();
                assert!(
                    sample.is_some_and(|s| Some(s.version) == applied.version),
                    "{context}, batch {batch}: {applied:?}"
                );
            }
        }
        let bodies: Vec<&str> = files.iter().map(|f| f.body.as_str()).collect();
        assert_eq!(
            table(&h, "tables/batched", variant.keys()).await,
            table(&h, "tables/single", variant.keys()).await,
            "{context}, batch {batch}: columns and rows; {bodies:#?}"
        );
    }
    if h.version("tables/batched").await.is_none() {
        return shared;
    }
    let order_by = variant.keys().join(",");
    let batched = read_with_python(&h.table_path("tables/batched"), &order_by);
    let single = read_with_python(&h.table_path("tables/single"), &order_by);
    assert_eq!(batched["columns"], single["columns"], "{context}");
    assert_eq!(batched["rows"], single["rows"], "{context}");
    if variant.partitioned {
        for python in [&batched, &single] {
            assert_eq!(
                python["partition_columns"],
                serde_json::json!(["region"]),
                "{context}"
            );
        }
    }
    assert!(h.staging_is_empty(), "{context}");
    shared
}

/// 10 scenarios of 5 batches per variant: 50 random batches each, 200 in all.
async fn random_batches(variant: Variant) {
    let base: u64 = std::env::var("DELTADROP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    let mut shared = 0;
    for scenario in 0..10 {
        shared += equivalent(base.wrapping_add(scenario), variant, 5).await;
    }
    // The test proves nothing unless files did share commits.
    assert!(
        shared > 20,
        "only {shared} files shared a commit (seed {base})"
    );
}

#[tokio::test]
async fn random_batches_equal_one_by_one_for_a_plain_feed() {
    random_batches(Variant {
        composite_key: false,
        partitioned: false,
        sequence: false,
        deletes: false,
        change_data_feed: false,
    })
    .await;
}

#[tokio::test]
async fn random_batches_equal_one_by_one_partitioned_with_deletes_a_composite_key_and_changes() {
    random_batches(Variant {
        composite_key: true,
        partitioned: true,
        sequence: false,
        deletes: true,
        change_data_feed: true,
    })
    .await;
}

#[tokio::test]
async fn random_batches_equal_one_by_one_with_a_sequence_column() {
    random_batches(Variant {
        composite_key: false,
        partitioned: false,
        sequence: true,
        deletes: false,
        change_data_feed: false,
    })
    .await;
}

#[tokio::test]
async fn random_batches_equal_one_by_one_with_a_sequence_column_and_deletes() {
    random_batches(Variant {
        composite_key: false,
        partitioned: false,
        sequence: true,
        deletes: true,
        change_data_feed: false,
    })
    .await;
}

/// `files` (name, body) put under `incoming/<feed>/`, each staged and archived, in order.
async fn staged(h: &Harness, feed: &str, files: &[(&str, &str)]) -> Vec<Pending> {
    let mut pending = Vec::new();
    for (name, body) in files {
        let key = format!("incoming/{feed}/{name}");
        h.put(&key, body).await;
        let run = h.run_input(&key).await;
        let stage = steps::stage(&h.env, &run).await.unwrap();
        steps::archive(&h.env, &run).await.unwrap();
        pending.push(Pending { run, stage });
    }
    pending
}

/// A file in the middle of a batch that does not fit the columns the earlier files gave the
/// table fails alone, with the error its own stage would have given; the others commit together.
#[tokio::test]
async fn a_bad_file_in_the_middle_of_a_batch_fails_alone() {
    let h = Harness::new(&crate::support::config(&[
        crate::support::feed("t", ""),
        crate::support::feed("s", "schema_policy = \"strict\""),
    ]));
    h.load("incoming/t/0.csv", "id,name\n1,a\n").await;
    let files = [
        ("1.csv", "id,name,amount\n1,b,10\n2,c,20\n"),
        // `amount` is a long since 1.csv; "ten" is not one.
        ("2.csv", "id,amount\n3,ten\n"),
        ("3.csv", "id,name,amount\n2,c2,21\n4,d,\n"),
    ];
    let pending = staged(&h, "t", &files).await;
    let results = steps::upsert::upsert_files(&h.env, &pending).await;
    let bad = results[1].as_ref().unwrap_err();
    assert_eq!(bad.name(), "InvalidValue", "{bad}");
    assert!(
        bad.to_string()
            .contains("incoming/t/2.csv, line 2, column 'amount': value \"ten\""),
        "{bad}"
    );
    assert!(
        bad.to_string().contains("incoming/t/1.csv"),
        "names what typed the column: {bad}"
    );
    for good in [&results[0], &results[2]] {
        let good = good.as_ref().unwrap();
        assert_eq!(good.outcome, UpsertOutcome::Applied);
        assert_eq!(good.version, Some(1));
        assert_eq!(good.shared_commit.unwrap().files, 2);
    }
    assert_eq!(
        h.rows("tables/t", &["id"]).await,
        ["1|b|10", "2|c2|21", "4|d|∅"]
    );

    // Under a strict policy a column an earlier file of the batch did not have is refused.
    h.load("incoming/s/0.csv", "id,name\n1,a\n").await;
    let strict = [
        ("1.csv", "id,name\n2,b\n"),
        ("2.csv", "id,name,extra\n3,c,x\n"),
    ];
    let mut pending = Vec::new();
    for (name, body) in strict {
        let key = format!("incoming/s/{name}");
        h.put(&key, body).await;
        let run = h.run_input(&key).await;
        let stage = steps::stage(&h.env, &run).await;
        pending.push(stage.map(|stage| Pending { run, stage }));
    }
    // The stage already checks against the table: the strict refusal comes from there.
    assert_eq!(pending[1].as_ref().unwrap_err().name(), "SchemaMismatch");
}

/// Several files for a table that does not exist yet: one commit creates it with all of them,
/// and a strict feed refuses, by name, a file whose columns differ from the first file's.
#[tokio::test]
async fn a_first_batch_creates_the_table_in_one_commit() {
    let h = Harness::new(&crate::support::config(&[crate::support::feed(
        "s",
        "schema_policy = \"strict\"",
    )]));
    let files = [
        ("1.csv", "id,name\n1,a\n2,b\n"),
        ("2.csv", "id,name,extra\n3,c,x\n"),
        ("3.csv", "id,name\n2,b2\n4,d\n"),
    ];
    let pending = staged(&h, "s", &files).await;
    let results = steps::upsert::upsert_files(&h.env, &pending).await;
    let refused = results[1].as_ref().unwrap_err();
    assert_eq!(refused.name(), "SchemaMismatch", "{refused}");
    assert!(refused.to_string().contains("extra"), "{refused}");
    let first = results[0].as_ref().unwrap();
    assert!(first.changes.created_table);
    assert_eq!((first.version, first.changes.rows_inserted), (Some(0), 3));
    assert_eq!(h.rows("tables/s", &["id"]).await, ["1|a", "2|b2", "4|d"]);
}

/// A row the MERGE does not update (an older sequence value) keeps null in a column the same
/// MERGE adds, even when its data file is rewritten for another row (delta-rs 1.1 would copy
/// the source row's value into it).
#[tokio::test]
async fn a_new_column_stays_null_on_rows_the_merge_does_not_update() {
    let h = Harness::new(&crate::support::config(&[crate::support::feed(
        "t",
        "sequence_column = \"seq\"",
    )]));
    h.load("incoming/t/0.csv", "id,seq\n3,2\n5,0\n").await;
    h.load("incoming/t/1.csv", "id,seq,x,y\n3,1,83,a\n5,1,7,b\n")
        .await;
    assert_eq!(h.rows("tables/t", &["id"]).await, ["3|2|∅|∅", "5|1|7|b"]);
    assert_eq!(h.columns("tables/t").await, ["id", "seq", "x", "y"]);
}

/// Columns typed differently by files staged together. Keys that only equal the earlier file's
/// once typed like them ("01" and "1" are both key 1 of a long key) have their repeats resolved
/// after the conversion, as the file's own stage against the table would have (the last line
/// wins). A string column's text is never rebuilt from values read as a double ("2.50" would come
/// back as "2.5"): that file fails alone, to be replayed.
#[tokio::test]
async fn files_typed_apart_are_converted_as_their_own_stage_would_have_typed_them() {
    let h = Harness::new(&crate::support::config(&[crate::support::feed("t", "")]));
    let first = staged(
        &h,
        "t",
        &[
            ("a.csv", "id,v\n1,a\n"),
            ("b.csv", "id,v\n01,x\n1,y\n3,z\n"),
        ],
    )
    .await;
    let results = steps::upsert::upsert_files(&h.env, &first).await;
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(h.rows("tables/t", &["id"]).await, ["1|y", "3|z"]);

    let second = [
        ("c.csv", "id,disc,n\n5,,\n"),
        ("d.csv", "id,disc\n6,2.50\n"),
        ("e.csv", "id,n\n7,12\n"),
    ];
    let pending = staged(&h, "t", &second).await;
    let results = steps::upsert::upsert_files(&h.env, &pending).await;
    let refused = results[1].as_ref().unwrap_err();
    assert_eq!(refused.name(), "SchemaMismatch", "{refused}");
    assert!(refused.to_string().contains("replay the file"), "{refused}");
    // An integer's text is the file's text: "12" joins the string column c.csv typed.
    assert!(results[2].is_ok(), "{results:?}");
    assert_eq!(
        h.rows("tables/t", &["id"]).await,
        ["1|y|∅|∅", "3|z|∅|∅", "5|∅|∅|∅", "7|∅|∅|12"]
    );
}
