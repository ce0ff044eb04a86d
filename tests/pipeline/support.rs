//! A bucket in a temporary folder, the real pipeline over it, and ways to look at the result.

use std::path::PathBuf;

use deltadrop::config::Config;
use deltadrop::delta::TableLocation;
use deltadrop::inspect;
use deltadrop::run::{run_file, RunResult};
use deltadrop::steps::RunInput;
use deltadrop::storage::{LocalBucket, ObjectStorage};
use deltadrop::Environment;

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub env: Environment,
    pub bucket: LocalBucket,
}

impl Harness {
    pub fn new(config: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_toml(config, "test config").unwrap();
        let env = Environment::local(
            config,
            &dir.path().join("bucket"),
            &dir.path().join("outbox"),
        )
        .unwrap();
        let bucket = LocalBucket::new(dir.path().join("bucket")).unwrap();
        Harness { dir, env, bucket }
    }

    /// The same bucket under another configuration (as after uploading a new one).
    pub fn with_config(mut self, config: &str) -> Harness {
        self.env.config = std::sync::Arc::new(Config::from_toml(config, "test config").unwrap());
        self
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

    /// `run` for an owned key (for futures that outlive the caller's borrow).
    pub async fn run_key(&self, key: String) -> RunResult {
        self.run(&key).await
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
        inspect::row_strings(&batches).unwrap()
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

/// A feed named `name` that reads `incoming/<name>/` into `tables/<name>`, keyed on `id`, with
/// `extra` TOML lines (options, or `[feeds.*]` tables) after it.
pub fn feed(name: &str, extra: &str) -> String {
    format!(
        "[[feeds]]\nname = \"{name}\"\nincoming = \"incoming/{name}/\"\ntable = \"tables/{name}\"\nkeys = [\"id\"]\n{extra}\n"
    )
}

/// A configuration with a recipient for the failure emails and `feeds`.
pub fn config(feeds: &[String]) -> String {
    format!(
        "[notifications]\nrecipients = [\"ops@example.com\"]\n\n{}",
        feeds.concat()
    )
}

/// A Parquet file holding `batch`.
pub fn parquet(batch: &deltalake::arrow::array::RecordBatch) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer =
        deltalake::parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
    out
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
