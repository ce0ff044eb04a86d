//! What a commit changed, as a few keys for the success email: updated keys with the columns
//! that changed (before → after), inserted and deleted keys. Read back from the table's change
//! data feed once the commit is in, so the email shows what the table recorded, and bounded
//! (a few keys of each kind, short values) so it fits the step's output and an email.

use serde::{Deserialize, Serialize};

/// The longest value shown, in characters; a longer one ends with `…`.
#[cfg(feature = "merge")]
const VALUE_CHARS: usize = 60;
/// The most changed columns shown per updated key.
#[cfg(feature = "merge")]
const COLUMNS_PER_KEY: usize = 10;

/// A sample of one commit's changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeSample {
    /// The table version whose changes these are.
    pub version: u64,
    /// Updated keys, with the columns that changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub updated: Vec<UpdatedKey>,
    /// Inserted keys (`id=7`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inserted: Vec<String>,
    /// Deleted keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<String>,
}

/// One updated key and what changed in its row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatedKey {
    /// The key (`id=3`, or `region=eu, id=3`).
    pub key: String,
    /// The columns whose values changed (at most ten).
    pub changed: Vec<ColumnChange>,
    /// Changed columns beyond those listed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more_columns: usize,
}

/// A column's value before and after an update.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnChange {
    /// The column.
    pub column: String,
    /// Its value before (`null` for a null).
    pub before: String,
    /// Its value after.
    pub after: String,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl UpdatedKey {
    /// `id=3: amount 10 → 12; status new → paid`, as the email shows it.
    pub fn line(&self) -> String {
        let mut changes: Vec<String> = self
            .changed
            .iter()
            .map(|c| format!("{} {} → {}", c.column, c.before, c.after))
            .collect();
        if self.more_columns > 0 {
            changes.push(format!("{} more column(s)", self.more_columns));
        }
        match changes.is_empty() {
            true => format!("{}: no value changed", self.key),
            false => format!("{}: {}", self.key, changes.join("; ")),
        }
    }

    /// The key's line from its row's values before and after, in the same column order.
    #[cfg(feature = "merge")]
    fn compare(key: String, columns: &[String], before: &[String], after: &[String]) -> Self {
        let changed: Vec<ColumnChange> = columns
            .iter()
            .zip(before.iter().zip(after))
            .filter(|(_, (b, a))| b != a)
            .map(|(column, (before, after))| ColumnChange {
                column: shortened(column),
                before: shortened(before),
                after: shortened(after),
            })
            .collect();
        let more_columns = changed.len().saturating_sub(COLUMNS_PER_KEY);
        UpdatedKey {
            key,
            changed: changed.into_iter().take(COLUMNS_PER_KEY).collect(),
            more_columns,
        }
    }
}

/// `text` cut to [`VALUE_CHARS`] characters.
#[cfg(feature = "merge")]
fn shortened(text: &str) -> String {
    match text.char_indices().nth(VALUE_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(feature = "merge")]
pub use read::read;

#[cfg(feature = "merge")]
mod read {
    use deltalake::arrow::array::{Array, AsArray};
    use deltalake::arrow::compute::cast;
    use deltalake::arrow::datatypes::DataType;
    use deltalake::arrow::record_batch::RecordBatch;
    use deltalake::arrow::util::display::{ArrayFormatter, FormatOptions};
    use deltalake::datafusion::execution::SendableRecordBatchStream;
    use deltalake::datafusion::physical_plan::execute_stream;
    use deltalake::datafusion::prelude::SessionContext;
    use deltalake::DeltaTable;
    use futures::TryStreamExt;

    use super::{shortened, ChangeSample, UpdatedKey};
    use crate::delta::TableLocation;
    use crate::error::{Error, Result};

    /// The change data feed's own columns, which the sample does not compare.
    const CHANGE_COLUMNS: [&str; 3] = ["_change_type", "_commit_version", "_commit_timestamp"];

    /// The first `per_kind` updated, inserted and deleted keys of the commit that made
    /// `version`, in the change feed's order. Two streaming passes over the commit's changes
    /// (never the table): the first collects the keys and the updated rows' new values, the
    /// second their old values, each stopping as soon as it has what it needs.
    pub async fn read(
        location: &TableLocation,
        version: u64,
        keys: &[String],
        per_kind: usize,
    ) -> Result<ChangeSample> {
        let table = location.open().await?.ok_or_else(|| Error::DeltaError {
            table: location.name(),
            message: "no Delta table here (no _delta_log)".into(),
        })?;
        let error = |e: &dyn std::fmt::Display| Error::delta(location.name(), e);
        let mut sample = ChangeSample {
            version,
            ..ChangeSample::default()
        };
        let mut columns = Vec::new();
        let mut after: Vec<(String, Vec<String>)> = Vec::new();
        let mut stream = changes(&table, version).await.map_err(|e| error(&e))?;
        while let Some(batch) = stream.try_next().await.map_err(|e| error(&e))? {
            let rows = Rows::of(&batch, keys).map_err(|e| error(&e))?;
            columns = rows.value_names();
            for row in 0..batch.num_rows() {
                match rows.change_type(row) {
                    "insert" if sample.inserted.len() < per_kind => {
                        sample.inserted.push(rows.key(row))
                    }
                    "delete" if sample.deleted.len() < per_kind => {
                        sample.deleted.push(rows.key(row))
                    }
                    "update_postimage" if after.len() < per_kind => {
                        after.push((rows.key(row), rows.values(row)))
                    }
                    _ => {}
                }
            }
            let full = [sample.inserted.len(), sample.deleted.len(), after.len()];
            if full.iter().all(|&n| n == per_kind) {
                break;
            }
        }
        if after.is_empty() {
            return Ok(sample);
        }
        let mut before: Vec<Option<Vec<String>>> = vec![None; after.len()];
        let mut stream = changes(&table, version).await.map_err(|e| error(&e))?;
        while let Some(batch) = stream.try_next().await.map_err(|e| error(&e))? {
            let rows = Rows::of(&batch, keys).map_err(|e| error(&e))?;
            for row in 0..batch.num_rows() {
                if rows.change_type(row) != "update_preimage" {
                    continue;
                }
                let key = rows.key(row);
                if let Some(i) = after.iter().position(|(k, _)| *k == key) {
                    before[i].get_or_insert_with(|| rows.values(row));
                }
            }
            if before.iter().all(Option::is_some) {
                break;
            }
        }
        sample.updated = after
            .into_iter()
            .zip(before)
            .filter_map(|((key, after), before)| {
                Some(UpdatedKey::compare(key, &columns, &before?, &after))
            })
            .collect();
        Ok(sample)
    }

    /// The changes of the commit that made `version`, as a stream.
    async fn changes(
        table: &DeltaTable,
        version: u64,
    ) -> deltalake::DeltaResult<SendableRecordBatchStream> {
        let ctx = SessionContext::new();
        let plan = table
            .clone()
            .scan_cdf()
            .with_starting_version(version)
            .with_ending_version(version)
            .build(&ctx.state(), None)
            .await?;
        Ok(execute_stream(plan, ctx.task_ctx())?)
    }

    /// One batch of changes, its cells formatted as text.
    struct Rows<'a> {
        change_types: deltalake::arrow::array::ArrayRef,
        keys: Vec<(&'a str, ArrayFormatter<'a>)>,
        values: Vec<(&'a str, ArrayFormatter<'a>)>,
    }

    const FORMAT: FormatOptions<'static> = FormatOptions::new().with_null("null");

    impl<'a> Rows<'a> {
        fn of(batch: &'a RecordBatch, keys: &[String]) -> deltalake::DeltaResult<Rows<'a>> {
            let schema = batch.schema_ref();
            let mut rows = Rows {
                change_types: cast(
                    batch.column_by_name("_change_type").ok_or_else(|| {
                        deltalake::DeltaTableError::Generic("no _change_type column".into())
                    })?,
                    &DataType::Utf8,
                )?,
                keys: Vec::new(),
                values: Vec::new(),
            };
            for (field, column) in schema.fields().iter().zip(batch.columns()) {
                let name = field.name().as_str();
                if CHANGE_COLUMNS.contains(&name) {
                    continue;
                }
                let formatted = (name, ArrayFormatter::try_new(column.as_ref(), &FORMAT)?);
                match keys.iter().any(|k| k == name) {
                    true => rows.keys.push(formatted),
                    false => rows.values.push(formatted),
                }
            }
            // In the feed's order of its keys.
            rows.keys
                .sort_by_key(|(name, _)| keys.iter().position(|k| k == name));
            Ok(rows)
        }

        fn change_type(&self, row: usize) -> &str {
            let types = self.change_types.as_string::<i32>();
            match types.is_null(row) {
                true => "",
                false => types.value(row),
            }
        }

        /// `id=3`, or `region=eu, id=3`.
        fn key(&self, row: usize) -> String {
            self.keys
                .iter()
                .map(|(name, f)| shortened(&format!("{name}={}", f.value(row))))
                .collect::<Vec<_>>()
                .join(", ")
        }

        fn values(&self, row: usize) -> Vec<String> {
            self.values
                .iter()
                .map(|(_, f)| f.value(row).to_string())
                .collect()
        }

        fn value_names(&self) -> Vec<String> {
            self.values.iter().map(|(n, _)| n.to_string()).collect()
        }
    }
}
