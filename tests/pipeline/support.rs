//! A bucket in a temporary folder, the real pipeline over it, and ways to look at the result.

use std::path::PathBuf;
use std::sync::Arc;

use deltadrop::clock::SystemClock;
use deltadrop::config::Config;
use deltadrop::delta::TableLocation;
use deltadrop::inspect;
use deltadrop::mail::OutboxMailer;
use deltadrop::run::{run_file, RunResult};
use deltadrop::steps::RunInput;
use deltadrop::storage::{LocalBucket, ObjectStorage};
use deltadrop::Environment;
use deltalake::arrow::array::Array;
use deltalake::arrow::util::display::{ArrayFormatter, FormatOptions};

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub env: Environment,
    pub bucket: LocalBucket,
}

impl Harness {
    pub fn new(config: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let bucket = LocalBucket::new(dir.path().join("bucket")).unwrap();
        let env = Environment {
            config: Arc::new(Config::from_toml(config, "test config").unwrap()),
            storage: Arc::new(bucket.clone()),
            mailer: Arc::new(OutboxMailer::new(dir.path().join("outbox"))),
            clock: Arc::new(SystemClock),
        };
        Harness { dir, env, bucket }
    }

    pub fn path(&self, key: &str) -> PathBuf {
        self.bucket.path(key).unwrap()
    }

    pub fn exists(&self, key: &str) -> bool {
        self.path(key).is_file()
    }

    pub async fn put(&self, key: &str, body: impl AsRef<[u8]>) {
        self.bucket.put(key, body.as_ref().to_vec()).await.unwrap();
    }

    /// A fresh run of the upload `key` holds now, for calling the steps one by one.
    pub async fn run_input(&self, key: &str) -> RunInput {
        RunInput::for_current_upload(&self.env, key).await.unwrap()
    }

    pub async fn run(&self, key: &str) -> RunResult {
        let run = self.run_input(key).await;
        run_file(&self.env, run, &|_| {}).await
    }

    /// Puts a file and runs it; panics with the error when the run fails.
    pub async fn load(&self, key: &str, body: impl AsRef<[u8]>) -> RunResult {
        self.put(key, body).await;
        let result = self.run(key).await;
        if let Some(e) = &result.error {
            panic!("{key} failed: {}: {e}", e.name());
        }
        result
    }

    /// Where `result`'s file is (or would be) archived: a folder per run.
    pub fn archived(&self, result: &RunResult) -> String {
        deltadrop::steps::archive::archive_key(&self.env, result.report.run.as_ref().unwrap())
    }

    /// Where `result`'s file is (or would be) quarantined.
    pub fn quarantined(&self, result: &RunResult) -> String {
        deltadrop::steps::quarantine::quarantine_key(&self.env, result.report.run.as_ref().unwrap())
    }

    pub fn table(&self, table: &str) -> TableLocation {
        TableLocation::new(self.bucket.table_url(table).unwrap(), Default::default())
    }

    pub fn table_path(&self, table: &str) -> PathBuf {
        self.table(table).url.to_file_path().unwrap()
    }

    pub async fn version(&self, table: &str) -> Option<u64> {
        self.table(table)
            .open()
            .await
            .unwrap()
            .and_then(|t| t.version())
    }

    /// Every row as `a|b|c` (nulls as `∅`), ordered by `order_by`.
    pub async fn rows(&self, table: &str, order_by: &[&str]) -> Vec<String> {
        let order: Vec<String> = order_by.iter().map(|s| s.to_string()).collect();
        let batches = inspect::rows(&self.table(table), &order, None)
            .await
            .unwrap();
        let mut rows = Vec::new();
        for batch in batches {
            let formatters: Vec<_> = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default()).unwrap())
                .collect();
            for row in 0..batch.num_rows() {
                let cells: Vec<String> = batch
                    .columns()
                    .iter()
                    .zip(&formatters)
                    .map(|(c, f)| {
                        if c.is_null(row) {
                            "∅".into()
                        } else {
                            f.value(row).to_string()
                        }
                    })
                    .collect();
                rows.push(cells.join("|"));
            }
        }
        rows
    }

    pub async fn columns(&self, table: &str) -> Vec<String> {
        let summary = inspect::summarize(&self.table(table), 1).await.unwrap();
        summary.columns.into_iter().map(|(name, _)| name).collect()
    }

    /// The `.eml` files written so far.
    pub fn emails(&self) -> Vec<String> {
        let outbox = self.dir.path().join("outbox");
        let mut paths: Vec<_> = std::fs::read_dir(outbox)
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        paths.sort();
        paths
            .into_iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    /// Nothing left under the staging prefix.
    pub fn staging_is_empty(&self) -> bool {
        let staging = self
            .path("_deltadrop/staging/x")
            .parent()
            .unwrap()
            .to_path_buf();
        std::fs::read_dir(staging)
            .map(|mut d| d.next().is_none())
            .unwrap_or(true)
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}
