//! The `deltadrop.toml` configuration: where things live and one entry per feed.
//!
//! Parsing is strict (unknown fields are errors) and every validation error names the field,
//! e.g. `feeds[1].keys`, and says what is expected.

use std::collections::{BTreeMap, HashSet};

#[cfg(feature = "delta")]
use deltalake::arrow::datatypes::{DataType, TimeUnit};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::partition::{DerivedPartition, PartitionColumn};

/// A whole `deltadrop.toml`, parsed and validated by [`Config::from_toml`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where processed, failed and staged files go (`[locations]`).
    #[serde(default)]
    pub locations: Locations,
    /// Who the emails come from and go to (`[notifications]`).
    #[serde(default)]
    pub notifications: Notifications,
    /// The `[[feeds]]`, in order: a key belongs to the first whose `incoming` matches it.
    pub feeds: Vec<Feed>,
}

/// Bucket-relative prefixes for the files and tables deltadrop manages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Locations {
    /// Processed files move here, keeping their full key: `archive/incoming/orders/a.csv`.
    pub archive: String,
    /// Failed files move here, with `<name>.error.json` beside them.
    pub quarantine: String,
    /// Each run writes its staging table under `<staging><run id>/`.
    pub staging: String,
}

impl Default for Locations {
    fn default() -> Self {
        Locations {
            archive: "archive/".into(),
            quarantine: "quarantine/".into(),
            staging: "_deltadrop/staging/".into(),
        }
    }
}

/// Who the emails come from and, unless a feed names its own, who they go to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Notifications {
    /// The sender address (on AWS: an SES-verified identity).
    pub from: String,
    /// Recipients for feeds that do not name their own.
    pub recipients: Vec<String>,
    /// The stale-file watch emails a stale file once, then reminds this often while files stay
    /// (0: never again; a new stale file is always emailed).
    pub stale_reminder_hours: u32,
}

impl Default for Notifications {
    fn default() -> Self {
        Notifications {
            from: "deltadrop@localhost".into(),
            recipients: Vec::new(),
            stale_reminder_hours: 24,
        }
    }
}

/// One `[[feeds]]` entry: which files it takes, how to read them, and the table they are
/// merged into.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feed {
    /// Unique among the feeds; runs, emails and error reports name the feed by it.
    pub name: String,
    /// A key prefix (`incoming/orders/`) or a glob (`incoming/*/orders-*.csv.gz`).
    pub incoming: String,
    /// Chosen from the key's suffix when absent (`.csv`, `.jsonl`/`.ndjson`, `.json`, `.parquet`).
    pub format: Option<FileFormat>,
    /// How CSV files are read (`[feeds.csv]`).
    #[serde(default)]
    pub csv: CsvOptions,
    /// Bucket-relative prefix (`tables/orders`) or a URL (`s3://other/orders`, `file:///data/orders`).
    pub table: String,
    /// The columns the MERGE matches rows on: every file must have them, never null.
    pub keys: Vec<String>,
    /// The table's partition columns, set when the first file creates it: keys, or columns
    /// derived from a key's date (`{ name = "order_month", from = "order_date", by = "month" }`).
    #[serde(default)]
    pub partition_by: Vec<PartitionColumn>,
    /// When set, a row never replaces a row with a higher value in this column.
    pub sequence_column: Option<String>,
    /// When set, rows marked as deletes remove their key instead of upserting it.
    pub change_type: Option<ChangeType>,
    /// Whether a file may add columns to the table, or must have exactly its columns.
    #[serde(default)]
    pub schema_policy: SchemaPolicy,
    /// Overrides the feed-level default recipients.
    #[serde(default)]
    pub recipients: Vec<String>,
    /// Column types for text formats where inference is not wanted (new tables, new columns).
    #[serde(default)]
    pub column_types: BTreeMap<String, ColumnType>,
    /// How many records of a text file are sampled to infer the types of columns the target
    /// table does not have yet.
    #[serde(default = "default_infer_rows")]
    pub infer_rows: usize,
    /// Target size of the table's data files (`delta.targetFileSize`, set when the first file
    /// creates the table). Smaller files let a MERGE skip more of them when keys are clustered.
    #[serde(default = "default_target_file_mb")]
    pub target_file_mb: u64,
    /// What one file may hold before it is refused with `LimitExceeded`.
    #[serde(default)]
    pub limits: Limits,
    /// The most a MERGE may read and rewrite of the table, in GB (10^9 bytes), checked from the
    /// table's log before it starts (`TooLargeForFunction` above it). Unset: what the upsert
    /// function can rewrite in the time it has left (README, "The cost check").
    pub max_rewrite_gb: Option<f64>,
    /// Merge the feed's files in the order they arrived: a file waits (`WaitingForEarlierFile`,
    /// retried by the state machine) while a file of the feed that arrived before it is still
    /// waiting in `incoming` or staged but not merged. Off by default: files of different keys
    /// then commit in whatever order their runs finish (uploads of one key never overwrite a
    /// newer upload either way).
    #[serde(default)]
    pub apply_in_arrival_order: bool,
    /// How `deltadrop maintain` (and the scheduled maintain function) keeps the table healthy.
    #[serde(default)]
    pub maintenance: Maintenance,
    /// How many staged files the table's commit lane merges in one commit (`[feeds.batch]`).
    #[serde(default)]
    pub batch: BatchBounds,
    /// Where its files are staged on AWS (`[feeds.route]`).
    #[serde(default)]
    pub route: RouteBounds,
    /// Which emails a load sends: `each` (default), `failures`, or `digest`.
    #[serde(default)]
    pub notify: NotifyMode,
    /// What a bad row does: fail the whole file (default) or go to the rejects file while the
    /// good rows load.
    #[serde(default)]
    pub on_bad_rows: OnBadRows,
    /// With `on_bad_rows = "reject"`: the most rows a file may set aside; one more fails it
    /// (`TooManyBadRows`) and nothing loads.
    #[serde(default = "default_max_rejected_rows")]
    pub max_rejected_rows: u64,
    /// With `on_bad_rows = "reject"`: the largest share of a file's rows (in percent) that may
    /// be set aside; more fails it (`TooManyBadRows`) and nothing loads.
    #[serde(default = "default_max_rejected_percent")]
    pub max_rejected_percent: f64,
    /// Data-quality rules the stage checks on every row (`[[feeds.expect]]`).
    #[serde(default)]
    pub expect: Vec<crate::expect::Expectation>,
    /// Record every MERGE's changes (`delta.enableChangeDataFeed`): set when the first file
    /// creates the table, and by maintenance on a table that exists.
    #[serde(default)]
    pub change_data_feed: bool,
    /// With the change data feed on, how many keys of each kind (updated, inserted, deleted)
    /// the success email shows from the commit's changes; 0 shows none.
    #[serde(default = "default_email_sample")]
    pub email_sample: usize,
    /// The table's name in the data catalog (a deployment's Glue database); default: the feed's
    /// name in the catalog's rules (lowercase letters, digits and `_`).
    #[serde(default)]
    pub catalog_table: Option<String>,
    /// Refuse to give the table a Delta reader feature Athena cannot read (see
    /// [`crate::athena`]); false writes them anyway.
    #[serde(default = "default_true")]
    pub athena_compatible: bool,
}

/// What a row that cannot be loaded does to its file (a feed's `on_bad_rows`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBadRows {
    /// The file fails, naming the row; nothing loads.
    #[default]
    Fail,
    /// The row goes to the rejects file with its reason; the other rows load.
    Reject,
}

/// The most `max_rejected_rows` may be: rejected rows are held in memory until the file is read.
pub const MAX_REJECTED_ROWS_LIMIT: u64 = 100_000;

/// The most keys of each kind `email_sample` may show: the sample travels in the upsert's output
/// (Step Functions passes at most 256 KB between states) and in an email.
pub const MAX_EMAIL_SAMPLE: usize = 20;

fn default_true() -> bool {
    true
}

fn default_email_sample() -> usize {
    5
}

fn default_max_rejected_rows() -> u64 {
    1000
}

fn default_max_rejected_percent() -> f64 {
    10.0
}

/// Where a feed's files are staged on AWS (`[feeds.route]`): the trigger decides from the size
/// the S3 event gives, and puts the route in the execution's input.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteBounds {
    /// An uncompressed CSV or JSON lines file of at least this many MiB is staged in parallel
    /// chunks, one Lambda invocation each (the state machine's Distributed Map); 0: never.
    pub parallel_stage_from_mb: u64,
    /// The size of one such chunk, in MiB (a fraction is allowed: `0.25`).
    pub chunk_mb: f64,
    /// A file of at least this many MiB that does not split (compressed, Parquet, or a CSV
    /// whose quoted fields span lines) is staged by the container tier, when the deployment
    /// has one (a fraction is allowed); 0: never.
    pub container_from_mb: f64,
    /// The container's vCPUs (a Fargate task size: 0.25, 0.5, 1, 2, 4, 8 or 16).
    pub container_vcpu: f64,
    /// The container's memory in GB, within what Fargate allows for `container_vcpu`.
    pub container_memory_gb: u32,
    /// With the container tier, a MERGE the cost check expects to read and rewrite at least
    /// this many GB is done by the tier even when the function has the time (a fraction is
    /// allowed); 0: only a MERGE over the function's own time or memory.
    pub container_merge_from_gb: f64,
}

impl Default for RouteBounds {
    fn default() -> Self {
        RouteBounds {
            // One function stages about 150 MB/s per vCPU at best (docs/benchmarks.md), and
            // one S3 GET stream is often slower: from 2 GiB, chunks finish sooner.
            parallel_stage_from_mb: 2048,
            // Long enough that a chunk's work outweighs its invocation (about 2 s of reading).
            chunk_mb: 256.0,
            // A gzip file of 8 GiB holds 40-80 GiB of text at the usual ratios: about the most
            // one function reads in its 15 minutes (docs/benchmarks.md, "On Lambda"); and
            // Parquet near the function's 10 GB of /tmp.
            container_from_mb: 8192.0,
            container_vcpu: 4.0,
            container_memory_gb: 16,
            container_merge_from_gb: 0.0,
        }
    }
}

/// The Fargate task sizes: each vCPU count and the memory (GB) it allows, from, to, in steps
/// (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-tasks-services.html#fargate-tasks-size).
/// 0.25 vCPU also allows 0.5 GB, which a whole number of GB cannot say.
const FARGATE_SIZES: [(f64, u32, u32, u32); 7] = [
    (0.25, 1, 2, 1),
    (0.5, 1, 4, 1),
    (1.0, 2, 8, 1),
    (2.0, 4, 16, 1),
    (4.0, 8, 30, 1),
    (8.0, 16, 60, 4),
    (16.0, 32, 120, 8),
];

impl RouteBounds {
    /// `parallel_stage_from_mb` in bytes (`None`: never).
    pub fn parallel_stage_from_bytes(&self) -> Option<u64> {
        (self.parallel_stage_from_mb > 0)
            .then(|| self.parallel_stage_from_mb.saturating_mul(1024 * 1024))
    }

    /// `chunk_mb` in bytes.
    pub fn chunk_bytes(&self) -> u64 {
        ((self.chunk_mb * 1024.0 * 1024.0) as u64).max(1)
    }

    /// `container_merge_from_gb` in bytes (`None`: not set).
    pub fn container_merge_from_bytes(&self) -> Option<u64> {
        (self.container_merge_from_gb > 0.0).then(|| (self.container_merge_from_gb * 1e9) as u64)
    }

    /// `container_from_mb` in bytes (`None`: never).
    pub fn container_from_bytes(&self) -> Option<u64> {
        (self.container_from_mb > 0.0).then(|| (self.container_from_mb * 1024.0 * 1024.0) as u64)
    }

    fn validate(&self, field: &dyn Fn(&str) -> String) -> Result<()> {
        if !(self.chunk_mb.is_finite() && self.chunk_mb > 0.0) {
            return Err(Error::config(
                field("route.chunk_mb"),
                "expected a number of MiB above 0",
            ));
        }
        if !(self.container_merge_from_gb.is_finite() && self.container_merge_from_gb >= 0.0) {
            return Err(Error::config(
                field("route.container_merge_from_gb"),
                "expected a number of GB, 0 or more (0: only what the function cannot do)",
            ));
        }
        if !(self.container_from_mb.is_finite() && self.container_from_mb >= 0.0) {
            return Err(Error::config(
                field("route.container_from_mb"),
                "expected a number of MiB, 0 or more (0: never)",
            ));
        }
        let Some(&(_, from, to, step)) = FARGATE_SIZES
            .iter()
            .find(|(vcpu, ..)| *vcpu == self.container_vcpu)
        else {
            return Err(Error::config(
                field("route.container_vcpu"),
                format!(
                    "{}: a Fargate task has 0.25, 0.5, 1, 2, 4, 8 or 16 vCPUs",
                    self.container_vcpu
                ),
            ));
        };
        let memory = self.container_memory_gb;
        if memory < from || memory > to || (memory - from) % step != 0 {
            return Err(Error::config(
                field("route.container_memory_gb"),
                format!(
                    "{memory}: with {} vCPU a Fargate task has {from} to {to} GB, in steps of {step}",
                    self.container_vcpu
                ),
            ));
        }
        Ok(())
    }
}

/// Bounds on one commit of a table's lane (`[feeds.batch]`): the lane merges every ready staged
/// file of the table, in arrival order, in as few commits as these allow. A single file beyond a
/// bound still commits, alone.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchBounds {
    /// Files in one commit.
    pub max_files: usize,
    /// Staged rows in one commit.
    pub max_rows: u64,
    /// Bytes of the files (as stored) in one commit.
    pub max_bytes: u64,
}

impl Default for BatchBounds {
    fn default() -> Self {
        BatchBounds {
            max_files: 100,
            max_rows: 5_000_000,
            max_bytes: 1024 * 1024 * 1024,
        }
    }
}

impl BatchBounds {
    fn validate(&self, field: &dyn Fn(&str) -> String) -> Result<()> {
        for (name, value) in [
            ("max_files", self.max_files as u64),
            ("max_rows", self.max_rows),
            ("max_bytes", self.max_bytes),
        ] {
            if value == 0 {
                return Err(Error::config(
                    field(&format!("batch.{name}")),
                    "expected a number above 0",
                ));
            }
        }
        Ok(())
    }
}

/// Which emails a feed's loads send (a feed's `notify`). Failures are always emailed, one per file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyMode {
    /// One email per file, success or failure.
    #[default]
    Each,
    /// Only failures are emailed.
    Failures,
    /// One success email per commit, listing its files; failures one per file.
    Digest,
}

/// Retention settings of table maintenance (`[feeds.maintenance]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Maintenance {
    /// VACUUM deletes data files unreferenced for longer than this (and sets
    /// `delta.deletedFileRetentionDuration`): readers of older versions need them until then.
    pub vacuum_retention_days: u32,
    /// Log files older than this are removed after a checkpoint (`delta.logRetentionDuration`);
    /// time travel reaches back this far.
    pub log_retention_days: u32,
    /// Exactly-once records of uploads older than this are dropped at checkpoints
    /// (`delta.setTransactionRetentionDuration`). Longer than any redelivery: the dead-letter
    /// queue keeps a notification 14 days, so at least 15.
    pub transaction_retention_days: u32,
    /// Rewrite the whole table ordered by the feed's keys (Z-order on the key columns) instead of
    /// only bin-packing its small files: every data file then holds a narrow key range, so MERGEs
    /// skip more files, at the cost of rewriting the table on every maintenance run.
    pub order_by_keys: bool,
}

impl Default for Maintenance {
    fn default() -> Self {
        Maintenance {
            vacuum_retention_days: 7,
            log_retention_days: 30,
            transaction_retention_days: 30,
            order_by_keys: false,
        }
    }
}

impl Maintenance {
    fn validate(&self, field: &dyn Fn(&str) -> String) -> Result<()> {
        for (name, value, least) in [
            ("vacuum_retention_days", self.vacuum_retention_days, 1),
            ("log_retention_days", self.log_retention_days, 1),
            (
                "transaction_retention_days",
                self.transaction_retention_days,
                15,
            ),
        ] {
            if value < least {
                return Err(Error::config(
                    field(&format!("maintenance.{name}")),
                    format!("expected at least {least} days, got {value}"),
                ));
            }
        }
        Ok(())
    }
}

/// Bounds on one file, so that a hostile or broken file fails with a named error instead of
/// exhausting the function's memory, disk or time. Defaults fit a 1769 MB stage function with
/// 10 GB of ephemeral storage (template.yaml); docs/reliability.md ("Bad files and resource limits") explains each.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Bytes after decompression (a gzip bomb), in MiB. A Parquet file is spooled to local
    /// disk: this also bounds the disk it takes.
    pub max_decompressed_mb: u64,
    /// Bytes on one physical line of a text file, in MiB (a record is held in memory whole).
    pub max_line_mb: u64,
    /// Columns in one file.
    pub max_columns: usize,
    /// Levels of nested objects and arrays inside one JSON value.
    pub max_nesting_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_decompressed_mb: 8 * 1024,
            max_line_mb: 256,
            max_columns: 10_000,
            max_nesting_depth: 32,
        }
    }
}

impl Limits {
    /// `max_decompressed_mb` in bytes.
    pub fn max_decompressed_bytes(&self) -> u64 {
        self.max_decompressed_mb.saturating_mul(1024 * 1024)
    }

    /// `max_line_mb` in bytes.
    pub fn max_line_bytes(&self) -> u64 {
        self.max_line_mb.saturating_mul(1024 * 1024)
    }

    fn validate(&self, field: &dyn Fn(&str) -> String) -> Result<()> {
        for (name, value) in [
            ("max_decompressed_mb", self.max_decompressed_mb),
            ("max_line_mb", self.max_line_mb),
            ("max_columns", self.max_columns as u64),
            ("max_nesting_depth", self.max_nesting_depth as u64),
        ] {
            if value == 0 {
                return Err(Error::config(
                    field(&format!("limits.{name}")),
                    "expected a number above 0",
                ));
            }
        }
        // serde_json refuses deeper values by itself (its recursion limit).
        if self.max_nesting_depth > 120 {
            return Err(Error::config(
                field("limits.max_nesting_depth"),
                format!("expected at most 120, got {}", self.max_nesting_depth),
            ));
        }
        Ok(())
    }
}

/// 1 TiB: far beyond any useful data file, and small enough that the size in bytes fits.
const MAX_TARGET_FILE_MB: u64 = 1024 * 1024;

/// The maintenance state machine maintains every feed's table in one run: one inline Map state
/// over the list of feeds. Its execution history is limited to 25,000 events and each state's
/// output to 256 KiB (https://docs.aws.amazon.com/step-functions/latest/dg/service-quotas.html):
/// one table takes up to 15 events (its task, two retries and the catch), and the list of feeds
/// is one state's output.
const MAX_FEEDS: usize = 1_000;
const MAX_FEED_LIST_BYTES: usize = 200_000;

fn default_target_file_mb() -> u64 {
    64
}

fn default_infer_rows() -> usize {
    1000
}

/// The format of an incoming file (a feed's `format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Delimited text, read with the feed's [`CsvOptions`].
    Csv,
    /// One JSON object per line.
    #[serde(alias = "ndjson")]
    Jsonl,
    /// One JSON array of objects.
    Json,
    /// An Apache Parquet file.
    Parquet,
}

/// How an incoming file is compressed, told by its key's suffix ([`Compression::from_key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Not compressed.
    None,
    /// gzip (`.gz`), including files of several gzip members.
    Gzip,
    /// Zstandard (`.zst`).
    Zstd,
}

impl Compression {
    /// Compression is chosen by the key's suffix: `.gz` or `.zst`.
    pub fn from_key(key: &str) -> Compression {
        if key.ends_with(".gz") {
            Compression::Gzip
        } else if key.ends_with(".zst") {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// How a feed's CSV files are read (`[feeds.csv]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsvOptions {
    /// The first record names the columns; when false, they are the table's, or `column_1`, ...
    pub header: bool,
    /// The field separator: exactly one ASCII character.
    pub delimiter: String,
    /// The quote character: exactly one ASCII character.
    pub quote: String,
    /// Field values read as null (compared before any trimming).
    pub null_values: Vec<String>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            header: true,
            delimiter: ",".into(),
            quote: "\"".into(),
            null_values: vec!["".into()],
        }
    }
}

impl CsvOptions {
    /// The delimiter as the byte the parser takes (validation makes it exactly one).
    pub fn delimiter_byte(&self) -> u8 {
        self.delimiter.as_bytes()[0]
    }
    /// The quote as the byte the parser takes (validation makes it exactly one).
    pub fn quote_byte(&self) -> u8 {
        self.quote.as_bytes()[0]
    }
}

/// A feed's `change_type`: the column that marks which rows delete their key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeType {
    /// The column that says what happened to the row; it is not written to the table.
    pub column: String,
    /// The value of that column that means "delete this key".
    pub delete_value: String,
}

/// What a file's columns may do to the target table's columns (a feed's `schema_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchemaPolicy {
    /// New columns are added to the target table; missing columns are written as null.
    #[default]
    Additive,
    /// The file must have exactly the target table's columns.
    Strict,
}

/// Column types a feed may declare, named as in Delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// UTF-8 text.
    String,
    /// 64-bit signed integer.
    Long,
    /// 32-bit signed integer.
    Integer,
    /// 64-bit floating point.
    Double,
    /// `true` or `false`.
    Boolean,
    /// A calendar day (`YYYY-MM-DD`).
    Date,
    /// A point in time in microseconds, as UTC.
    Timestamp,
}

impl ColumnType {
    /// Its name in the configuration: `long`.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::String => "string",
            ColumnType::Long => "long",
            ColumnType::Integer => "integer",
            ColumnType::Double => "double",
            ColumnType::Boolean => "boolean",
            ColumnType::Date => "date",
            ColumnType::Timestamp => "timestamp",
        }
    }

    /// The Arrow type a column of this type is read into.
    #[cfg(feature = "delta")]
    pub fn arrow_type(self) -> DataType {
        match self {
            ColumnType::String => DataType::Utf8,
            ColumnType::Long => DataType::Int64,
            ColumnType::Integer => DataType::Int32,
            ColumnType::Double => DataType::Float64,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }
}

impl Config {
    /// Parses and validates a configuration; `source` names it in errors.
    pub fn from_toml(text: &str, source: &str) -> Result<Config> {
        let config: Config = toml::from_str(text)
            .map_err(|e| Error::config(source, e.to_string().trim_end().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        for (field, prefix) in [
            ("locations.archive", &self.locations.archive),
            ("locations.quarantine", &self.locations.quarantine),
            ("locations.staging", &self.locations.staging),
        ] {
            if prefix.is_empty() || !prefix.ends_with('/') || prefix.starts_with('/') {
                return Err(Error::config(
                    field,
                    format!("expected a relative prefix ending in '/', like \"archive/\", got {prefix:?}"),
                ));
            }
        }
        if self.feeds.is_empty() {
            return Err(Error::config(
                "feeds",
                "expected at least one [[feeds]] entry",
            ));
        }
        self.validate_feed_count()?;
        let mut names = HashSet::new();
        for (i, feed) in self.feeds.iter().enumerate() {
            let field = |name: &str| format!("feeds[{i}].{name}");
            if !names.insert(feed.name.as_str()) {
                return Err(Error::config(
                    field("name"),
                    format!("feed name {:?} is used twice", feed.name),
                ));
            }
            feed.validate(&field, &self.locations)?;
        }
        Ok(())
    }

    fn validate_feed_count(&self) -> Result<()> {
        let advice = "the maintenance state machine maintains every table in one run; \
                      split the feeds over two deployments (two buckets)";
        if self.feeds.len() > MAX_FEEDS {
            return Err(Error::config(
                "feeds",
                format!("{} feeds, at most {MAX_FEEDS}: {advice}", self.feeds.len()),
            ));
        }
        let names: Vec<&str> = self.feeds.iter().map(|f| f.name.as_str()).collect();
        let listed = serde_json::to_string(&names).map_or(0, |list| list.len());
        if listed > MAX_FEED_LIST_BYTES {
            return Err(Error::config(
                "feeds",
                format!(
                    "the feed names add up to {listed} bytes as a JSON list, at most \
                     {MAX_FEED_LIST_BYTES} (Step Functions' 256 KiB per state): shorten them, or {advice}"
                ),
            ));
        }
        Ok(())
    }

    /// The feed for a key: the first whose `incoming` pattern matches.
    pub fn feed_for_key(&self, key: &str) -> Result<&Feed> {
        self.feeds
            .iter()
            .find(|f| f.matches(key))
            .ok_or_else(|| Error::NoMatchingFeed {
                key: key.to_string(),
            })
    }

    /// The feed a run names; `InvalidInput` when this configuration has none of that name.
    pub fn feed_named(&self, name: &str) -> Result<&Feed> {
        self.feeds
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| Error::InvalidInput {
                message: format!("no feed named {name:?} in the configuration"),
            })
    }

    /// The recipients for a feed: its own, else the default list.
    pub fn recipients_for(&self, feed: Option<&Feed>) -> Vec<String> {
        match feed {
            Some(f) if !f.recipients.is_empty() => f.recipients.clone(),
            _ => self.notifications.recipients.clone(),
        }
    }
}

fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?', '['])
}

impl Feed {
    fn validate(&self, field: &dyn Fn(&str) -> String, locations: &Locations) -> Result<()> {
        let nonempty = |name: &str, value: &str| {
            if value.trim().is_empty() {
                Err(Error::config(field(name), "expected a non-empty string"))
            } else {
                Ok(())
            }
        };
        nonempty("name", &self.name)?;
        // The feed's metrics carry its name as a CloudWatch dimension value, which must be ASCII
        // (https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_Dimension.html).
        if !self.name.chars().all(|c| c.is_ascii_graphic() || c == ' ') || self.name.len() > 255 {
            return Err(Error::config(
                field("name"),
                format!(
                    "{:?}: a feed name is at most 255 printable ASCII characters (it names the \
                     feed's CloudWatch metrics); the table and the files may have any name",
                    self.name
                ),
            ));
        }
        nonempty("incoming", &self.incoming)?;
        self.limits.validate(field)?;
        self.maintenance.validate(field)?;
        self.batch.validate(field)?;
        self.route.validate(field)?;
        nonempty("table", &self.table)?;
        if is_glob(&self.incoming) {
            glob::Pattern::new(&self.incoming)
                .map_err(|e| Error::config(field("incoming"), format!("invalid glob: {e}")))?;
        }
        for (name, prefix) in [
            ("archive", &locations.archive),
            ("quarantine", &locations.quarantine),
            ("staging", &locations.staging),
        ] {
            if self.incoming.starts_with(prefix.as_str()) {
                return Err(Error::config(
                    field("incoming"),
                    format!("must not be inside the {name} prefix {prefix:?}"),
                ));
            }
        }
        if self.keys.is_empty() {
            return Err(Error::config(
                field("keys"),
                "expected at least one key column, like keys = [\"id\"]",
            ));
        }
        if let Some(k) = self.keys.iter().find(|k| k.trim().is_empty()) {
            return Err(Error::config(
                field("keys"),
                format!("key column names must not be empty, got {k:?}"),
            ));
        }
        let reserved: Vec<&str> = [
            self.sequence_column.as_deref(),
            self.change_type.as_ref().map(|c| c.column.as_str()),
        ]
        .into_iter()
        .flatten()
        .collect();
        crate::partition::validate(&self.partition_by, &self.keys, &reserved, field)?;
        if let Some(change) = &self.change_type {
            if self.keys.contains(&change.column)
                || self.sequence_column.as_ref() == Some(&change.column)
            {
                return Err(Error::config(
                    field("change_type.column"),
                    "must not be a key or the sequence column",
                ));
            }
        }
        let single_byte = |name: &str, value: &str| {
            if value.len() != 1 {
                Err(Error::config(
                    field(name),
                    format!("expected exactly one ASCII character, got {value:?}"),
                ))
            } else {
                Ok(())
            }
        };
        single_byte("csv.delimiter", &self.csv.delimiter)?;
        single_byte("csv.quote", &self.csv.quote)?;
        if self.target_file_mb == 0 || self.target_file_mb > MAX_TARGET_FILE_MB {
            return Err(Error::config(
                field("target_file_mb"),
                format!("expected a size in MB from 1 to {MAX_TARGET_FILE_MB}"),
            ));
        }
        if self.infer_rows == 0 {
            return Err(Error::config(
                field("infer_rows"),
                "expected a positive number of rows",
            ));
        }
        if self.max_rejected_rows > MAX_REJECTED_ROWS_LIMIT {
            return Err(Error::config(
                field("max_rejected_rows"),
                format!(
                    "expected at most {MAX_REJECTED_ROWS_LIMIT} rows (the rejected rows of a file \
                     are held in memory until it is read), got {}",
                    self.max_rejected_rows
                ),
            ));
        }
        crate::expect::validate(&self.expect, &self.column_types, self.on_bad_rows, field)?;
        if let Some(name) = &self.catalog_table {
            if !crate::catalog::is_catalog_name(name) {
                return Err(Error::config(
                    field("catalog_table"),
                    format!(
                        "expected lowercase letters, digits and _ (at most 255), got {name:?}; \
                         for example {:?}",
                        crate::catalog::catalog_name(name)
                    ),
                ));
            }
        }
        if self.email_sample > MAX_EMAIL_SAMPLE {
            return Err(Error::config(
                field("email_sample"),
                format!(
                    "expected at most {MAX_EMAIL_SAMPLE} keys of each kind, got {}",
                    self.email_sample
                ),
            ));
        }
        let percent = self.max_rejected_percent;
        if !(percent.is_finite() && (0.0..=100.0).contains(&percent)) {
            return Err(Error::config(
                field("max_rejected_percent"),
                format!("expected a percentage from 0 to 100, got {percent}"),
            ));
        }
        if let Some(gb) = self.max_rewrite_gb {
            if !(gb.is_finite() && gb > 0.0) {
                return Err(Error::config(
                    field("max_rewrite_gb"),
                    format!("expected a size in GB above 0, got {gb}"),
                ));
            }
        }
        Ok(())
    }

    /// `max_rewrite_gb` in bytes.
    pub fn max_rewrite_bytes(&self) -> Option<u64> {
        self.max_rewrite_gb.map(|gb| (gb * 1e9) as u64)
    }

    /// The literal start of `incoming`: all of a prefix, a glob up to its first wildcard.
    pub fn incoming_prefix(&self) -> &str {
        match self.incoming.find(['*', '?', '[']) {
            Some(wildcard) => &self.incoming[..wildcard],
            None => &self.incoming,
        }
    }

    /// `target_file_mb` in bytes (validated: at least 1 MB, at most 1 TiB).
    pub fn target_file_bytes(&self) -> u64 {
        self.target_file_mb * 1024 * 1024
    }

    /// Whether `key` belongs to this feed: it starts with the prefix, or matches the glob.
    pub fn matches(&self, key: &str) -> bool {
        if is_glob(&self.incoming) {
            glob::Pattern::new(&self.incoming)
                .map(|p| p.matches(key))
                .unwrap_or(false)
        } else {
            key.starts_with(&self.incoming)
        }
    }

    /// The file format: configured, or from the key's suffix.
    pub fn format_for(&self, key: &str) -> Result<FileFormat> {
        if let Some(format) = self.format {
            return Ok(format);
        }
        let stem = key
            .strip_suffix(".gz")
            .or_else(|| key.strip_suffix(".zst"))
            .unwrap_or(key)
            .to_ascii_lowercase();
        let by_suffix = [
            (".csv", FileFormat::Csv),
            (".jsonl", FileFormat::Jsonl),
            (".ndjson", FileFormat::Jsonl),
            (".json", FileFormat::Json),
            (".parquet", FileFormat::Parquet),
        ];
        by_suffix
            .iter()
            .find(|(suffix, _)| stem.ends_with(suffix))
            .map(|(_, f)| *f)
            .ok_or_else(|| {
                Error::config(
                    format!("feed {:?}.format", self.name),
                    format!("cannot tell the format of {key} from its suffix: set format = \"csv\" | \"jsonl\" | \"json\" | \"parquet\""),
                )
            })
    }

    /// The names of the table's partition columns, in `partition_by` order.
    pub fn partition_columns(&self) -> Vec<String> {
        self.partition_by
            .iter()
            .map(|p| p.name().to_string())
            .collect()
    }

    /// The partition columns deltadrop computes, in `partition_by` order.
    pub fn derived_partitions(&self) -> impl Iterator<Item = &DerivedPartition> {
        self.partition_by.iter().filter_map(|p| match p {
            PartitionColumn::Derived(derived) => Some(derived),
            PartitionColumn::Column(_) => None,
        })
    }

    /// The derived partition column of this name, if the feed has one.
    pub fn derived_partition(&self, column: &str) -> Option<&DerivedPartition> {
        self.derived_partitions()
            .find(|derived| derived.name == column)
    }

    /// Columns of the file that are not data for the table (the change-type column).
    pub fn is_control_column(&self, column: &str) -> bool {
        self.change_type
            .as_ref()
            .is_some_and(|c| c.column == column)
    }
}

/// A feed `f` keyed on `id`, with `extra` TOML lines: for the unit tests of other modules.
#[cfg(test)]
pub(crate) fn test_feed(extra: &str) -> Feed {
    let toml = format!(
        "[[feeds]]\nname = \"f\"\nincoming = \"in/\"\ntable = \"t\"\nkeys = [\"id\"]\n{extra}"
    );
    Config::from_toml(&toml, "test").unwrap().feeds.remove(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[feeds]]
name = "orders"
incoming = "incoming/orders/"
table = "tables/orders"
keys = ["id"]
"#;

    #[test]
    fn defaults_are_sane() {
        let c = Config::from_toml(MINIMAL, "deltadrop.toml").unwrap();
        assert_eq!(c.locations.archive, "archive/");
        assert_eq!(c.locations.staging, "_deltadrop/staging/");
        let f = &c.feeds[0];
        assert_eq!(f.schema_policy, SchemaPolicy::Additive);
        assert!(f.csv.header);
        assert_eq!(
            f.format_for("incoming/orders/a.csv.gz").unwrap(),
            FileFormat::Csv
        );
        assert_eq!(
            f.format_for("incoming/orders/a.ndjson.zst").unwrap(),
            FileFormat::Jsonl
        );
        assert!(f.format_for("incoming/orders/a.txt").is_err());
        // The documented defaults (docs/reliability.md ("Bad files and resource limits")).
        assert_eq!(
            f.limits,
            Limits {
                max_decompressed_mb: 8192,
                max_line_mb: 256,
                max_columns: 10_000,
                max_nesting_depth: 32,
            }
        );
        // The documented defaults (README, "Configuration"; docs/reliability.md, "Bursts").
        assert_eq!(
            f.batch,
            BatchBounds {
                max_files: 100,
                max_rows: 5_000_000,
                max_bytes: 1 << 30,
            }
        );
        assert_eq!(f.notify, NotifyMode::Each);
    }

    #[test]
    fn a_feed_name_must_be_printable_ascii() {
        for bad in ["commandes-été", "tab\tname", &"x".repeat(256)] {
            let toml = MINIMAL.replace("name = \"orders\"", &format!("name = {bad:?}"));
            let e = Config::from_toml(&toml, "deltadrop.toml").unwrap_err();
            assert!(
                e.to_string().contains("feeds[0].name") && e.to_string().contains("ASCII"),
                "{e}"
            );
        }
        let fine = MINIMAL.replace("name = \"orders\"", "name = \"Orders (EU) #2\"");
        Config::from_toml(&fine, "deltadrop.toml").unwrap();
    }

    #[test]
    fn a_partition_is_a_key_or_derived_from_one() {
        let feed = |partition_by: &str| {
            MINIMAL.replace(
                "keys = [\"id\"]",
                &format!("keys = [\"id\", \"day\"]\nsequence_column = \"seq\"\npartition_by = {partition_by}"),
            )
        };
        let fine = r#"["day", { name = "month", from = "day", by = "month" }]"#;
        let config = Config::from_toml(&feed(fine), "deltadrop.toml").unwrap();
        assert_eq!(config.feeds[0].partition_columns(), ["day", "month"]);
        assert!(config.feeds[0].derived_partition("month").is_some());
        for (bad, says) in [
            (r#"["region"]"#, "\"region\" is not one of the keys"),
            (
                r#"[{ name = "m", from = "created", by = "month" }]"#,
                "derived from \"created\", which is not one of the keys",
            ),
            (
                r#"[{ name = "seq", from = "day", by = "year" }]"#,
                "cannot also be a key, the sequence",
            ),
            (r#"["day", "day"]"#, "listed twice"),
            (
                r#"[{ name = "m", from = "day", by = "week" }]"#,
                "by = \"week\": expected \"day\", \"month\" or \"year\"",
            ),
            (
                r#"[{ name = "m", by = "year" }]"#,
                "a derived partition needs `from`",
            ),
        ] {
            let e = Config::from_toml(&feed(bad), "deltadrop.toml").unwrap_err();
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
        let e = Config::from_toml(&feed(r#"["region"]"#), "deltadrop.toml").unwrap_err();
        assert!(e.to_string().contains("feeds[0].partition_by"), "{e}");
    }

    #[test]
    fn the_feeds_fit_one_maintenance_run() {
        let feeds = |count: usize, name_len: usize| -> String {
            (0..count)
                .map(|i| {
                    let name = format!("{i:0>name_len$}");
                    format!("[[feeds]]\nname = {name:?}\nincoming = \"in/{i}/\"\ntable = \"t/{i}\"\nkeys = [\"id\"]\n")
                })
                .collect()
        };
        Config::from_toml(&feeds(1_000, 190), "deltadrop.toml").unwrap();
        let e = Config::from_toml(&feeds(1_001, 4), "deltadrop.toml").unwrap_err();
        assert!(
            e.to_string().contains("feeds: 1001 feeds, at most 1000"),
            "{e}"
        );
        let e = Config::from_toml(&feeds(1_000, 255), "deltadrop.toml").unwrap_err();
        assert!(e.to_string().contains("add up to 258001 bytes"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        let bad = MINIMAL.replace("keys = [\"id\"]", "keys = []");
        let e = Config::from_toml(&bad, "deltadrop.toml").unwrap_err();
        assert!(e.to_string().contains("feeds[0].keys"), "{e}");

        let typo = MINIMAL.replace("keys", "key");
        let e = Config::from_toml(&typo, "deltadrop.toml").unwrap_err();
        assert!(e.to_string().contains("unknown field `key`"), "{e}");

        let delimiter = format!("{MINIMAL}[feeds.csv]\ndelimiter = \";;\"\n");
        let e = Config::from_toml(&delimiter, "deltadrop.toml").unwrap_err();
        assert!(e.to_string().contains("feeds[0].csv.delimiter"), "{e}");

        let huge = MINIMAL.replace("keys", "target_file_mb = 2000000\nkeys");
        let e = Config::from_toml(&huge, "deltadrop.toml").unwrap_err();
        assert!(e.to_string().contains("feeds[0].target_file_mb"), "{e}");

        for budget in ["0", "-1.5", "nan"] {
            let none = MINIMAL.replace("keys", &format!("max_rewrite_gb = {budget}\nkeys"));
            let e = Config::from_toml(&none, "deltadrop.toml").unwrap_err();
            assert!(e.to_string().contains("feeds[0].max_rewrite_gb"), "{e}");
        }
        let half = MINIMAL.replace("keys", "max_rewrite_gb = 0.5\nkeys");
        let feed = &Config::from_toml(&half, "deltadrop.toml").unwrap().feeds[0];
        assert_eq!(feed.max_rewrite_bytes(), Some(500_000_000));

        for (setting, value) in [
            ("max_rejected_rows", "100001"),
            ("max_rejected_percent", "101"),
            ("max_rejected_percent", "-1"),
            ("max_rejected_percent", "nan"),
            ("email_sample", "21"),
            ("catalog_table", "\"Orders\""),
        ] {
            let text = MINIMAL.replace("keys", &format!("{setting} = {value}\nkeys"));
            let e = Config::from_toml(&text, "deltadrop.toml").unwrap_err();
            assert!(
                e.to_string().contains(&format!("feeds[0].{setting}")),
                "{e}"
            );
        }
        let mode = MINIMAL.replace("keys", "on_bad_rows = \"skip\"\nkeys");
        let e = Config::from_toml(&mode, "deltadrop.toml").unwrap_err();
        assert!(e.to_string().contains("unknown variant `skip`"), "{e}");
        let reject = MINIMAL.replace("keys", "on_bad_rows = \"reject\"\nkeys");
        let feed = &Config::from_toml(&reject, "deltadrop.toml").unwrap().feeds[0];
        assert_eq!(
            (
                feed.on_bad_rows,
                feed.max_rejected_rows,
                feed.max_rejected_percent
            ),
            (OnBadRows::Reject, 1000, 10.0),
            "the documented defaults"
        );

        let no_files = format!("{MINIMAL}[feeds.batch]\nmax_files = 0\n");
        let e = Config::from_toml(&no_files, "deltadrop.toml").unwrap_err();
        assert!(e.to_string().contains("feeds[0].batch.max_files"), "{e}");
        let mode = MINIMAL.replace("keys", "notify = \"weekly\"\nkeys");
        let e = Config::from_toml(&mode, "deltadrop.toml").unwrap_err();
        assert!(e.to_string().contains("unknown variant `weekly`"), "{e}");

        for (limit, value) in [("max_columns", "0"), ("max_nesting_depth", "500")] {
            let text = format!("{MINIMAL}[feeds.limits]\n{limit} = {value}\n");
            let e = Config::from_toml(&text, "deltadrop.toml").unwrap_err();
            assert!(
                e.to_string().contains(&format!("feeds[0].limits.{limit}")),
                "{e}"
            );
        }
    }

    #[test]
    fn feeds_match_by_prefix_or_glob() {
        let text = format!(
            "{MINIMAL}\n[[feeds]]\nname = \"events\"\nincoming = \"incoming/*/events-*.json*\"\ntable = \"t/e\"\nkeys = [\"id\"]\n"
        );
        let c = Config::from_toml(&text, "x").unwrap();
        assert_eq!(
            c.feed_for_key("incoming/orders/a.csv").unwrap().name,
            "orders"
        );
        assert_eq!(
            c.feed_for_key("incoming/eu/events-1.jsonl").unwrap().name,
            "events"
        );
        assert_eq!(
            c.feed_for_key("other/a.csv").unwrap_err().name(),
            "NoMatchingFeed"
        );
    }

    #[test]
    fn a_container_size_must_be_a_fargate_task_size() {
        let with =
            |route: &str| Config::from_toml(&format!("{MINIMAL}[feeds.route]\n{route}"), "t");
        let feed = &with("").unwrap().feeds[0];
        assert_eq!(
            (feed.route.container_vcpu, feed.route.container_memory_gb),
            (4.0, 16),
            "the documented default"
        );
        assert_eq!(feed.route.container_from_bytes(), Some(8 << 30));
        for good in [
            "container_vcpu = 0.25\ncontainer_memory_gb = 2",
            "container_vcpu = 8\ncontainer_memory_gb = 20",
            "container_vcpu = 16\ncontainer_memory_gb = 120",
            "container_from_mb = 0",
        ] {
            with(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        assert_eq!(
            with("container_from_mb = 0").unwrap().feeds[0]
                .route
                .container_from_bytes(),
            None
        );
        for (bad, field) in [
            ("container_vcpu = 3", "route.container_vcpu"),
            (
                "container_vcpu = 1\ncontainer_memory_gb = 9",
                "route.container_memory_gb",
            ),
            (
                "container_vcpu = 8\ncontainer_memory_gb = 18",
                "route.container_memory_gb",
            ),
            ("container_from_mb = -1", "route.container_from_mb"),
        ] {
            let e = with(bad).unwrap_err().to_string();
            assert!(e.contains(field), "{bad}: {e}");
        }
    }
}
