//! What Athena's Delta reader can read, and the guard that keeps deltadrop from giving a table a
//! reader feature it cannot: Athena reads reader protocol versions up to 3, with the reader
//! features column mapping and timestampNtz
//! (https://docs.aws.amazon.com/athena/latest/ug/delta-lake-tables.html, "Considerations and
//! limitations"; some translations of the page also list deletion vectors: the guard keeps to
//! the narrower list). A table with any other reader feature (deletion vectors, v2 checkpoints,
//! type widening, nanosecond timestamps...) may not be queryable there: "protocol version too
//! new".

use std::collections::{BTreeSet, HashMap};

use deltalake::arrow::datatypes::{DataType, Field, TimeUnit};

use crate::config::Feed;
use crate::error::{Error, Result};

/// The page that says what Athena reads.
pub const ATHENA_DELTA_PAGE: &str =
    "https://docs.aws.amazon.com/athena/latest/ug/delta-lake-tables.html";

/// The reader features Athena's Delta reader reads.
pub const ATHENA_READER_FEATURES: [&str; 2] = ["columnMapping", "timestampNtz"];

/// The reader features a table with `properties` and `fields` needs, as delta-rs 1.1 derives
/// them when it writes the table's protocol (`ProtocolInner::move_table_properties_into_features`
/// and `apply_column_metadata_to_protocol`; a test compares this with the protocols it writes).
pub fn reader_features<'a>(
    properties: &HashMap<String, String>,
    fields: impl IntoIterator<Item = &'a Field>,
) -> BTreeSet<&'static str> {
    let on = |key: &str| {
        properties
            .get(key)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    };
    let mut features = BTreeSet::new();
    if on("delta.enableDeletionVectors") {
        features.insert("deletionVectors");
    }
    if properties
        .get("delta.columnMapping.mode")
        .is_some_and(|mode| mode != "none")
    {
        features.insert("columnMapping");
    }
    if on("delta.enableTypeWidening") {
        features.insert("typeWidening");
    }
    for field in fields {
        of_type(field.data_type(), &mut features);
    }
    // delta-rs turns the checkpoint policy into a feature only on a table that reads at
    // version 3, which any reader feature above makes it.
    let v2 = properties.get("delta.checkpointPolicy").map(String::as_str) == Some("v2");
    if v2 && !features.is_empty() {
        features.insert("v2Checkpoint");
    }
    features
}

/// The reader features a column of `data_type` needs (nested types included).
fn of_type(data_type: &DataType, features: &mut BTreeSet<&'static str>) {
    match data_type {
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            features.insert("timestampNanos");
        }
        DataType::Timestamp(_, None) => {
            features.insert("timestampNtz");
        }
        DataType::List(f) | DataType::LargeList(f) | DataType::Map(f, _) => {
            of_type(f.data_type(), features)
        }
        DataType::Struct(fields) => {
            for f in fields {
                of_type(f.data_type(), features);
            }
        }
        _ => {}
    }
}

/// Refuses, by name, a reader feature in `features` that Athena cannot read, unless the feed
/// opted out (`athena_compatible = false`): before deltadrop writes a table's protocol (the
/// columns a commit of `file` adds, the properties maintenance sets), so a table registered for
/// Athena stays readable there.
pub fn guard(feed: &Feed, file: &str, features: &BTreeSet<&'static str>) -> Result<()> {
    if !feed.athena_compatible {
        return Ok(());
    }
    let unreadable: Vec<&str> = features
        .iter()
        .copied()
        .filter(|f| !ATHENA_READER_FEATURES.contains(f))
        .collect();
    if unreadable.is_empty() {
        return Ok(());
    }
    Err(Error::SchemaMismatch {
        file: file.to_string(),
        message: format!(
            "writing this would give the table the Delta reader feature(s) {}, which Athena cannot \
             read (it reads {}: {ATHENA_DELTA_PAGE}); nothing was written. Set \
             athena_compatible = false on feed {:?} to write them anyway",
            unreadable.join(", "),
            ATHENA_READER_FEATURES.join(", "),
            feed.name
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(extra: &str) -> Feed {
        let text = format!(
            "[[feeds]]\nname = \"t\"\nincoming = \"incoming/t/\"\ntable = \"tables/t\"\nkeys = [\"id\"]\n{extra}"
        );
        crate::config::Config::from_toml(&text, "test")
            .unwrap()
            .feeds
            .remove(0)
    }

    #[test]
    fn a_feature_athena_cannot_read_is_refused_by_name_unless_the_feed_opts_out() {
        let properties = HashMap::from([
            ("delta.checkpointPolicy".to_string(), "v2".to_string()),
            (
                "delta.enableDeletionVectors".to_string(),
                "true".to_string(),
            ),
        ]);
        let nanos = Field::new("at", DataType::Timestamp(TimeUnit::Nanosecond, None), true);
        let features = reader_features(&properties, [&nanos]);
        assert_eq!(
            features,
            BTreeSet::from(["deletionVectors", "timestampNanos", "v2Checkpoint"])
        );
        let refused = guard(&feed(""), "incoming/t/a.parquet", &features).unwrap_err();
        assert_eq!(refused.name(), "SchemaMismatch");
        let message = refused.to_string();
        for expected in [
            "timestampNanos, v2Checkpoint",
            "Athena cannot read",
            ATHENA_DELTA_PAGE,
            "athena_compatible = false",
        ] {
            assert!(message.contains(expected), "{expected:?} in {message}");
        }
        guard(
            &feed("athena_compatible = false"),
            "incoming/t/a.parquet",
            &features,
        )
        .unwrap();
    }

    #[test]
    fn what_athena_reads_passes() {
        let properties = HashMap::from([
            ("delta.enableChangeDataFeed".to_string(), "true".to_string()),
            ("delta.columnMapping.mode".to_string(), "name".to_string()),
        ]);
        let local = Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), true);
        let utc = Field::new(
            "utc",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        );
        let features = reader_features(&properties, [&local, &utc]);
        assert_eq!(features, BTreeSet::from(["columnMapping", "timestampNtz"]));
        guard(&feed(""), "t", &features).unwrap();
    }
}
