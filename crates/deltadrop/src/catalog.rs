//! A feed's table in a data catalog (the AWS Glue Data Catalog), so that Athena, Spark and Trino
//! find it by name. After every commit the upsert makes the catalog's entry match the table's
//! log: its location, columns with catalog types, partition keys. A catalog that fails never
//! fails or undoes the load: the outcome says so, and the next commit (or `deltadrop catalog
//! sync`) tries again.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::config::Feed;
use crate::error::Result;

/// The longest table name the Glue Data Catalog takes.
const MAX_NAME_CHARS: usize = 255;

/// What a catalog holds of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogTable {
    /// The table's name in the catalog's database.
    pub name: String,
    /// The table's root (`s3://bucket/tables/orders`, without a trailing slash).
    pub location: String,
    /// The columns that are not partition keys, in the table's order, with catalog types.
    pub columns: Vec<CatalogColumn>,
    /// The partition columns, in the table's partition order.
    pub partition_keys: Vec<CatalogColumn>,
}

/// A column and its catalog (Hive) type: `bigint`, `string`, `decimal(10,2)`, `array<int>`...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogColumn {
    /// The column's name.
    pub name: String,
    /// Its type as Athena and Spark name it in a catalog.
    pub data_type: String,
}

/// What registering a table did to the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Registration {
    /// The table was not in the catalog: it is now.
    Created,
    /// The catalog's entry differed from the table (a new column, a moved table): it matches now.
    Updated,
    /// The entry matched already.
    Unchanged,
}

impl Registration {
    /// As the outputs name it: `created`, `updated`, `unchanged`.
    pub fn name(self) -> &'static str {
        match self {
            Registration::Created => "created",
            Registration::Updated => "updated",
            Registration::Unchanged => "unchanged",
        }
    }
}

impl CatalogOutcome {
    /// `deltadrop.orders (created)`, or the failure, for emails and the command line.
    pub fn describe(&self) -> String {
        match (&self.registration, &self.error) {
            (Some(r), _) => format!("{} ({})", self.table, r.name()),
            (None, e) => format!(
                "{}: not updated, the load stands ({})",
                self.table,
                e.as_deref().unwrap_or("no reason given")
            ),
        }
    }

    /// Whether the registration failed.
    pub fn failed(&self) -> bool {
        self.registration.is_none()
    }
}

/// A data catalog that tables are registered in.
#[async_trait]
pub trait Catalog: Send + Sync {
    /// The database the tables go in.
    fn database(&self) -> &str;

    /// Makes the catalog's entry for `table` match it: creates it, updates it, or leaves it.
    async fn register(&self, table: &CatalogTable) -> Result<Registration>;
}

/// What the upsert's output (and `deltadrop catalog sync`) says of a table's registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogOutcome {
    /// `database.table`.
    pub table: String,
    /// What the registration did; absent when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<Registration>,
    /// Why it failed (the load itself stands).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The feed's table name in the catalog: its `catalog_table`, or its name in the catalog's
/// rules (lowercase letters, digits and `_`; at most 255 characters).
pub fn table_name(feed: &Feed) -> String {
    feed.catalog_table
        .clone()
        .unwrap_or_else(|| catalog_name(&feed.name))
}

/// `name` in the Glue Data Catalog's rules: lowercase, anything but letters, digits and `_`
/// as `_`, cut to 255 characters.
pub fn catalog_name(name: &str) -> String {
    name.chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .take(MAX_NAME_CHARS)
        .collect()
}

/// Whether `name` is a valid catalog table name (for a feed's `catalog_table`).
pub fn is_catalog_name(name: &str) -> bool {
    !name.is_empty() && catalog_name(name) == name
}

#[cfg(feature = "delta")]
pub use of_table::{catalog_table, catalog_type};

#[cfg(feature = "merge")]
pub use registration::sync;

#[cfg(feature = "delta")]
mod of_table {
    use deltalake::arrow::datatypes::{DataType, Field};

    use super::{CatalogColumn, CatalogTable};
    use crate::delta::TableLocation;
    use crate::error::{Error, Result};

    /// The catalog's entry for the table at `location` with `fields`, partitioned by
    /// `partition_columns`; a column whose type has no catalog name is an error naming it.
    pub fn catalog_table(
        name: String,
        location: &TableLocation,
        fields: &[impl AsRef<Field>],
        partition_columns: &[String],
    ) -> Result<CatalogTable> {
        let column = |f: &Field| -> Result<CatalogColumn> {
            let data_type = catalog_type(f.data_type()).ok_or_else(|| {
                Error::internal(format!(
                    "column {:?} of {} is of type {}, which has no Glue or Athena type name",
                    f.name(),
                    location.name(),
                    f.data_type()
                ))
            })?;
            Ok(CatalogColumn {
                name: f.name().clone(),
                data_type,
            })
        };
        let fields: Vec<&Field> = fields.iter().map(AsRef::as_ref).collect();
        Ok(CatalogTable {
            name,
            location: location.name().trim_end_matches('/').to_string(),
            columns: fields
                .iter()
                .filter(|f| !partition_columns.contains(f.name()))
                .map(|f| column(f))
                .collect::<Result<_>>()?,
            partition_keys: partition_columns
                .iter()
                .filter_map(|p| fields.iter().find(|f| f.name() == p))
                .map(|f| column(f))
                .collect::<Result<_>>()?,
        })
    }

    /// An Arrow type as Athena and Spark name it in a catalog (Hive type names); `None` for a
    /// type no Delta table holds (Delta's types all have one).
    pub fn catalog_type(data_type: &DataType) -> Option<String> {
        Some(match data_type {
            DataType::Boolean => "boolean".into(),
            DataType::Int8 => "tinyint".into(),
            DataType::Int16 => "smallint".into(),
            DataType::Int32 => "int".into(),
            DataType::Int64 => "bigint".into(),
            DataType::Float32 => "float".into(),
            DataType::Float64 => "double".into(),
            DataType::Decimal128(p, s) if *p <= 38 => format!("decimal({p},{s})"),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "binary".into(),
            DataType::Date32 => "date".into(),
            DataType::Timestamp(..) => "timestamp".into(),
            DataType::List(f) | DataType::LargeList(f) => {
                format!("array<{}>", catalog_type(f.data_type())?)
            }
            DataType::Struct(fields) => format!(
                "struct<{}>",
                fields
                    .iter()
                    .map(|f| Some(format!("{}:{}", f.name(), catalog_type(f.data_type())?)))
                    .collect::<Option<Vec<_>>>()?
                    .join(",")
            ),
            DataType::Map(entries, _) => match entries.data_type() {
                DataType::Struct(kv) if kv.len() == 2 => format!(
                    "map<{},{}>",
                    catalog_type(kv[0].data_type())?,
                    catalog_type(kv[1].data_type())?
                ),
                _ => return None,
            },
            DataType::Dictionary(_, values) => catalog_type(values)?,
            _ => return None,
        })
    }
}

#[cfg(feature = "merge")]
mod registration {
    use super::{catalog_table, table_name, Catalog, CatalogOutcome};
    use crate::config::Feed;
    use crate::delta::TableLocation;

    /// Registers the feed's table at `location` (as its log is now) in `catalog`; a failure is
    /// in the outcome, never an error: the table stands whatever the catalog does.
    pub async fn sync(
        catalog: &dyn Catalog,
        feed: &Feed,
        location: &TableLocation,
    ) -> CatalogOutcome {
        let name = table_name(feed);
        let registered = async {
            let table = location
                .open()
                .await?
                .ok_or_else(|| crate::Error::DeltaError {
                    table: location.name(),
                    message: "no Delta table here yet (no _delta_log)".into(),
                })?;
            let schema = crate::delta::arrow_schema(&table)?;
            let snapshot = table
                .snapshot()
                .map_err(|e| crate::Error::delta(location.name(), e))?;
            let partitions = snapshot.metadata().partition_columns().to_vec();
            let entry = catalog_table(name.clone(), location, schema.fields(), &partitions)?;
            catalog.register(&entry).await
        }
        .await;
        CatalogOutcome {
            table: format!("{}.{name}", catalog.database()),
            registration: registered.as_ref().ok().copied(),
            error: registered.err().map(|e| e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_catalog_rules() {
        assert_eq!(catalog_name("Orders-EU.v2"), "orders_eu_v2");
        assert_eq!(catalog_name(&"a".repeat(300)).len(), 255);
        assert!(is_catalog_name("orders_2024"));
        assert!(!is_catalog_name("Orders"));
        assert!(!is_catalog_name(""));
    }

    #[cfg(feature = "delta")]
    #[test]
    fn arrow_types_read_as_athena_names_them() {
        use deltalake::arrow::datatypes::{DataType, Field, Fields, TimeUnit};
        use std::sync::Arc;
        let nested = DataType::Struct(Fields::from(vec![
            Field::new("a", DataType::Int32, true),
            Field::new_list("b", Field::new("item", DataType::Utf8, true), true),
        ]));
        for (data_type, expected) in [
            (DataType::Int64, "bigint"),
            (DataType::Decimal128(10, 2), "decimal(10,2)"),
            (
                DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC"))),
                "timestamp",
            ),
            (nested, "struct<a:int,b:array<string>>"),
        ] {
            assert_eq!(
                of_table::catalog_type(&data_type).as_deref(),
                Some(expected)
            );
        }
        let time = DataType::Time64(TimeUnit::Microsecond);
        assert_eq!(
            of_table::catalog_type(&time),
            None,
            "no Hive name: an error, not a bad type"
        );
    }
}
