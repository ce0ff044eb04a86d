//! Replay of a rejects file: the rows a feed with `on_bad_rows = "reject"` set aside (as they
//! were, or after the owner fixed their `raw` records) become a new upload of the feed, in the
//! format of the file they came from, so that they run through the pipeline like any file.
//!
//! The upload goes beside the original key: `<folder>/<name>-rejects-<time><suffixes>`
//! (`orders.csv.gz` → `orders-rejects-20261207T101500123Z.csv.gz`), so that the feed's pattern
//! and format still match it. A CSV file gets the original file's header, read from its
//! archived copy (or, when the file failed, its quarantined one). The rejects file is kept,
//! renamed `<file>.replayed-<time>.rejects.jsonl`, so that it is not replayed twice.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use chrono::Utc;
use deltalake::arrow::array::{ArrayRef, RecordBatch, StringBuilder};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use serde_json::Value;

use crate::config::{Compression, Config, Feed, FileFormat};
use crate::delta::TableLocation;
use crate::error::{Error, Result};
use crate::read::csv_header;
use crate::rejects::{count_rows, RejectedRow, REJECTS_SUFFIX};
use crate::steps::upsert::is_applied;
use crate::storage::ObjectStorage;
use crate::upload::Upload;

/// What a replay of a rejects file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectsReplayed {
    /// The rejects file that was replayed.
    pub rejects_key: String,
    /// Where it is kept now.
    pub kept_at: String,
    /// The new upload holding its rows.
    pub upload_key: String,
    /// The feed the rows belong to.
    pub feed: String,
    /// How many rows it holds.
    pub rows: u64,
    /// The new upload (its S3 object version; locally its fingerprint).
    pub upload: Option<Upload>,
}

/// Turns the rejects file `rejects_key` into a new upload of its feed (see the module
/// documentation).
pub async fn replay_rejects(
    storage: &dyn ObjectStorage,
    config: &Config,
    rejects_key: &str,
) -> Result<RejectsReplayed> {
    let invalid = |message: String| Error::InvalidInput { message };
    let Some(copy) = rejects_key
        .strip_suffix(REJECTS_SUFFIX)
        .filter(|copy| !copy.contains(".replayed-"))
    else {
        return Err(invalid(format!(
            "{rejects_key} is not a rejects file waiting for a replay (<file>{REJECTS_SUFFIX})"
        )));
    };
    let rows = read_rows(storage, rejects_key).await?;
    let original = rows[0].file.clone();
    if let Some(other) = rows.iter().find(|r| r.file != original) {
        return Err(invalid(format!(
            "{rejects_key} holds rows of {original} and of {}: replay the rows of one file",
            other.file
        )));
    }
    let feed = config.feed_for_key(&original)?;
    let target = TableLocation::new(
        storage.table_url(&feed.table)?,
        storage.table_storage_options(),
    );
    if !was_merged(&target, &rows[0].upload).await? {
        return Err(invalid(format!(
            "the rows of {rejects_key} come from an upload of {original} that {} never merged \
             (the file failed, see its .error.json, or a newer upload of its key superseded it): \
             fix and replay the file itself (deltadrop replay <quarantined file>), not its rejects",
            target.name()
        )));
    }
    let format = feed.format_for(&original)?;
    let compression = Compression::from_key(&original);
    let raws: Vec<&str> = rows.iter().map(|r| r.raw.as_str()).collect();
    let body = match format {
        FileFormat::Csv => {
            let header = original_header(storage, config, feed, copy, &original).await?;
            lines(header.iter().map(String::as_str).chain(raws))
        }
        FileFormat::Jsonl => lines(raws),
        FileFormat::Json => format!("[\n{}\n]\n", raws.join(",\n")).into_bytes(),
        FileFormat::Parquet => parquet(&rows, rejects_key)?,
    };
    let upload_key = upload_key(config, feed, &original)?;
    storage
        .put(&upload_key, compress(body, compression, &upload_key)?)
        .await?;

    let kept_at = format!(
        "{copy}.replayed-{}{REJECTS_SUFFIX}",
        Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
    );
    let any = Upload::any();
    storage.copy(rejects_key, &any, &kept_at).await?;
    storage.delete(rejects_key, &any).await?;
    Ok(RejectsReplayed {
        rejects_key: rejects_key.to_string(),
        kept_at,
        upload: storage.upload(&upload_key).await?,
        upload_key,
        feed: feed.name.clone(),
        rows: rows.len() as u64,
    })
}

/// Whether the table at `target` records the upload `identity` as merged.
async fn was_merged(target: &TableLocation, identity: &str) -> Result<bool> {
    match target.open().await? {
        Some(table) if !identity.is_empty() => is_applied(&table, target, identity).await,
        _ => Ok(false),
    }
}

/// The rejects files under the quarantine prefix that wait for a replay, of `feed` (whose
/// table is at `target`), oldest first, with their rows: not replayed yet, their rows from an
/// upload of the feed that was merged (see [`replay_rejects`]).
pub async fn waiting_for_replay(
    storage: &dyn ObjectStorage,
    config: &Config,
    feed: &Feed,
    target: &TableLocation,
) -> Result<Vec<(String, u64)>> {
    let mut found = Vec::new();
    for object in storage.list(&config.locations.quarantine).await? {
        let key = &object.key;
        if !key.ends_with(REJECTS_SUFFIX) || key.contains(".replayed-") {
            continue;
        }
        let text = storage.read_all(key).await?;
        let first = text.split(|b| *b == b'\n').next().unwrap_or_default();
        let Ok(row) = serde_json::from_slice::<RejectedRow>(first) else {
            continue; // not one of deltadrop's
        };
        let of_feed = config
            .feed_for_key(&row.file)
            .is_ok_and(|f| f.name == feed.name);
        if of_feed && was_merged(target, &row.upload).await? {
            found.push((object.modified, key.clone(), count_rows(&text)));
        }
    }
    found.sort();
    Ok(found
        .into_iter()
        .map(|(_, key, rows)| (key, rows))
        .collect())
}

/// The rows of a rejects file; an error names the line that is not one.
async fn read_rows(storage: &dyn ObjectStorage, key: &str) -> Result<Vec<RejectedRow>> {
    let text =
        String::from_utf8(storage.read_all(key).await?).map_err(|e| Error::InvalidInput {
            message: format!("{} is not UTF-8 text: {e}", storage.display(key)),
        })?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: RejectedRow = serde_json::from_str(line).map_err(|e| Error::InvalidInput {
            message: format!(
                "{}, line {}: not a rejected row of deltadrop (a JSON object with file, line, \
                 error, message and raw): {e}",
                storage.display(key),
                i + 1
            ),
        })?;
        if row.file.is_empty() {
            return Err(Error::InvalidInput {
                message: format!(
                    "{}, line {}: the row names no file",
                    storage.display(key),
                    i + 1
                ),
            });
        }
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(Error::InvalidInput {
            message: format!("{} holds no rows to replay", storage.display(key)),
        });
    }
    Ok(rows)
}

/// The header of the file the rows came from: its copy in the archive (the file loaded) or in
/// quarantine (it failed), `copy` being the quarantine copy's key.
async fn original_header(
    storage: &dyn ObjectStorage,
    config: &Config,
    feed: &Feed,
    copy: &str,
    original: &str,
) -> Result<Option<String>> {
    if !feed.csv.header {
        return Ok(None);
    }
    let locations = &config.locations;
    let archived = copy
        .strip_prefix(locations.quarantine.as_str())
        .map(|rest| format!("{}{rest}", locations.archive));
    for key in archived.iter().map(String::as_str).chain([copy]) {
        if storage.size(key).await?.is_none() {
            continue;
        }
        let reader = storage.reader(key, &Upload::any()).await?;
        let header = tokio::task::spawn_blocking({
            let (key, feed, original) = (key.to_string(), feed.clone(), original.to_string());
            move || {
                let reader = tokio_util::io::SyncIoBridge::new(reader);
                csv_header(reader, &original, &feed).map_err(|e| Error::InvalidInput {
                    message: format!("the header of {key} cannot be read: {e}"),
                })
            }
        })
        .await
        .map_err(|e| Error::internal(format!("the header reader stopped: {e}")))??;
        return Ok(header);
    }
    Err(Error::InvalidInput {
        message: format!(
            "the rows of {original} need its header, but neither its archived copy ({}) nor its \
             quarantined one ({copy}) is there",
            archived.as_deref().unwrap_or("none")
        ),
    })
}

/// Where `original`'s rows go: `<folder>/<name>-rejects-<time><suffixes>`, or, when the
/// feed's pattern does not take that name, `<folder>/rejects-<time>-<name>`; refused when the
/// feed takes neither (its rows would never run).
fn upload_key(config: &Config, feed: &Feed, original: &str) -> Result<String> {
    let (folder, name) = match original.rsplit_once('/') {
        Some((folder, name)) => (format!("{folder}/"), name),
        None => (String::new(), original),
    };
    let (stem, suffixes) = name.split_at(name.find('.').unwrap_or(name.len()));
    let time = Utc::now().format("%Y%m%dT%H%M%S%3fZ");
    let candidates = [
        format!("{folder}{stem}-rejects-{time}{suffixes}"),
        format!("{folder}rejects-{time}-{name}"),
    ];
    let taken = |key: &&String| config.feed_for_key(key).is_ok_and(|f| f.name == feed.name);
    candidates
        .iter()
        .find(taken)
        .cloned()
        .ok_or_else(|| Error::InvalidInput {
            message: format!(
                "the feed {} takes neither {} nor {} (its incoming is {:?}): upload the fixed \
                 rows yourself under a key it takes",
                feed.name, candidates[0], candidates[1], feed.incoming
            ),
        })
}

/// `items`, one per line.
fn lines<'a>(items: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
    let mut body = Vec::new();
    for item in items {
        body.extend_from_slice(item.as_bytes());
        body.push(b'\n');
    }
    body
}

/// A Parquet file of the rows' records (JSON objects of values as text): string columns,
/// which the stage types like the original file's.
fn parquet(rows: &[RejectedRow], rejects_key: &str) -> Result<Vec<u8>> {
    let mut records = Vec::with_capacity(rows.len());
    let mut columns: Vec<String> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for row in rows {
        let Ok(Value::Object(record)) = serde_json::from_str::<Value>(&row.raw) else {
            return Err(Error::InvalidInput {
                message: format!(
                    "{rejects_key}, {}: the raw record of a Parquet file's row must be a JSON object",
                    row.position
                ),
            });
        };
        for name in record.keys() {
            if !index.contains_key(name) {
                index.insert(name.clone(), columns.len());
                columns.push(name.clone());
            }
        }
        records.push(record);
    }
    let mut builders: Vec<StringBuilder> = columns.iter().map(|_| StringBuilder::new()).collect();
    for record in &records {
        for (name, builder) in columns.iter().zip(builders.iter_mut()) {
            match record.get(name) {
                None | Some(Value::Null) => builder.append_null(),
                Some(Value::String(text)) => builder.append_value(text),
                Some(other) => builder.append_value(other.to_string()),
            }
        }
    }
    let fields: Vec<Field> = columns
        .iter()
        .map(|name| Field::new(name, DataType::Utf8, true))
        .collect();
    let arrays: Vec<ArrayRef> = builders
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect();
    let failed =
        |e: &dyn std::fmt::Display| Error::internal(format!("a Parquet file of rows: {e}"));
    let batch =
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(|e| failed(&e))?;
    let mut out = Vec::new();
    let mut writer =
        deltalake::parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), None)
            .map_err(|e| failed(&e))?;
    writer.write(&batch).map_err(|e| failed(&e))?;
    writer.close().map_err(|e| failed(&e))?;
    Ok(out)
}

/// `body` compressed as the original file was, so that the upload's name tells the truth.
fn compress(body: Vec<u8>, compression: Compression, key: &str) -> Result<Vec<u8>> {
    let failed = |e: std::io::Error| Error::internal(format!("compressing {key}: {e}"));
    match compression {
        Compression::None => Ok(body),
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(&body).map_err(failed)?;
            encoder.finish().map_err(failed)
        }
        Compression::Zstd => zstd::encode_all(body.as_slice(), 3).map_err(failed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(incoming: &str) -> Config {
        let text = format!(
            "[[feeds]]\nname = \"o\"\nincoming = \"{incoming}\"\ntable = \"t\"\nkeys = [\"id\"]\n"
        );
        Config::from_toml(&text, "test").unwrap()
    }

    #[test]
    fn the_upload_keeps_the_folder_and_the_suffixes_of_the_original_and_the_feed_takes_it() {
        let prefix = config("incoming/orders/");
        let feed = &prefix.feeds[0];
        let key = upload_key(&prefix, feed, "incoming/orders/orders-2026.csv.gz").unwrap();
        assert!(
            key.starts_with("incoming/orders/orders-2026-rejects-"),
            "{key}"
        );
        assert!(key.ends_with("Z.csv.gz"), "{key}");
        assert!(!key["incoming/orders/".len()..key.len() - ".csv.gz".len()].contains('.'));

        // A pattern on the name's end takes the marker at its start.
        let suffix = config("incoming/o/*_export.csv");
        let key = upload_key(&suffix, &suffix.feeds[0], "incoming/o/a_export.csv").unwrap();
        assert!(
            key.starts_with("incoming/o/rejects-") && key.ends_with("Z-a_export.csv"),
            "{key}"
        );
        // A pattern that takes neither is refused: the rows would never run.
        let exact = config("incoming/o/[a]_export.csv");
        let error = upload_key(&exact, &exact.feeds[0], "incoming/o/a_export.csv").unwrap_err();
        assert!(error.to_string().contains("takes neither"), "{error}");
    }
}
