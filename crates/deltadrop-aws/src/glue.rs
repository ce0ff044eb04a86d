//! The AWS Glue Data Catalog as the deployment's catalog: each feed's table as a Delta table
//! Athena reads natively (`table_type = DELTA`, the location; Athena then reads the schema from
//! the log: https://docs.aws.amazon.com/athena/latest/ug/delta-lake-tables-getting-started.html)
//! with the columns and partition keys of the log as well, which Lake Formation, views and column
//! filters need (https://docs.aws.amazon.com/athena/latest/ug/delta-lake-tables-syncing-metadata.html),
//! and the Spark data source provider and `path` that Spark and EMR read it by.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_glue::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_glue::types::{Column, SerDeInfo, StorageDescriptor, Table, TableInput};
use deltadrop::catalog::{Catalog, CatalogColumn, CatalogTable, Registration};
use deltadrop::{Error, Result};

/// How often a catalog call is tried (the SDK's standard retry: throttling and 5xx, backing off).
const ATTEMPTS: u32 = 5;

/// A table whose data lives outside the catalog.
const TABLE_TYPE: &str = "EXTERNAL_TABLE";

/// The table parameters that make the entry a Delta table for Athena, Spark and Glue.
const PARAMETERS: [(&str, &str); 4] = [
    ("table_type", "DELTA"),
    ("spark.sql.sources.provider", "delta"),
    ("classification", "delta"),
    ("EXTERNAL", "TRUE"),
];

/// A Glue database of the account's Data Catalog.
pub struct GlueCatalog {
    client: aws_sdk_glue::Client,
    database: String,
}

impl GlueCatalog {
    /// The catalog `database`, reached with `sdk` (retried up to five attempts per call).
    pub fn new(sdk: &aws_config::SdkConfig, database: String) -> Self {
        let config = aws_sdk_glue::config::Builder::from(sdk)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(ATTEMPTS))
            .build();
        GlueCatalog {
            client: aws_sdk_glue::Client::from_conf(config),
            database,
        }
    }

    fn error(&self, table: &str, e: impl std::error::Error) -> Error {
        Error::storage(
            format!("glue://{}/{table}", self.database),
            DisplayErrorContext(e),
        )
    }
}

#[async_trait]
impl Catalog for GlueCatalog {
    fn database(&self) -> &str {
        &self.database
    }

    async fn register(&self, table: &CatalogTable) -> Result<Registration> {
        let current = self
            .client
            .get_table()
            .database_name(&self.database)
            .name(&table.name)
            .send()
            .await;
        let existing = match current {
            Ok(found) => found.table,
            Err(e) if e.code() == Some("EntityNotFoundException") => None,
            Err(e) => return Err(self.error(&table.name, e)),
        };
        let Some(existing) = existing else {
            let input = table_input(table, None)?;
            self.client
                .create_table()
                .database_name(&self.database)
                .table_input(input)
                .send()
                .await
                .map_err(|e| self.error(&table.name, e))?;
            return Ok(Registration::Created);
        };
        if matches(&existing, table) {
            return Ok(Registration::Unchanged);
        }
        let input = table_input(table, Some(&existing))?;
        self.client
            .update_table()
            .database_name(&self.database)
            .table_input(input)
            // An entry updated at every schema change must not run into Glue's quota of table
            // versions (https://repost.aws/knowledge-center/glue-table-version-errors).
            .skip_archive(true)
            .send()
            .await
            .map_err(|e| self.error(&table.name, e))?;
        Ok(Registration::Updated)
    }
}

/// Whether the catalog's entry says what `table` says.
fn matches(existing: &Table, table: &CatalogTable) -> bool {
    let pairs = |columns: &[Column]| -> Vec<(String, String)> {
        columns
            .iter()
            .map(|c| (c.name.clone(), c.r#type.clone().unwrap_or_default()))
            .collect()
    };
    let ours = |columns: &[CatalogColumn]| -> Vec<(String, String)> {
        columns
            .iter()
            .map(|c| (c.name.clone(), c.data_type.clone()))
            .collect()
    };
    let descriptor = existing.storage_descriptor.as_ref();
    let parameters = existing.parameters.clone().unwrap_or_default();
    let path = descriptor
        .and_then(|d| d.serde_info.as_ref())
        .and_then(|s| s.parameters.as_ref())
        .and_then(|p| p.get("path"));
    existing.table_type.as_deref() == Some(TABLE_TYPE)
        && path == Some(&table.location)
        && descriptor.and_then(|d| d.location.as_deref()) == Some(table.location.as_str())
        && descriptor.map(|d| pairs(d.columns())) == Some(ours(&table.columns))
        && pairs(existing.partition_keys()) == ours(&table.partition_keys)
        && PARAMETERS
            .iter()
            .all(|(k, v)| parameters.get(*k).map(String::as_str) == Some(*v))
}

/// The entry for `table`; an update keeps what others set on the `existing` entry: its
/// parameters (a comment, Lake Formation's), description, owner, retention and column comments.
fn table_input(table: &CatalogTable, existing: Option<&Table>) -> Result<TableInput> {
    let invalid = |e: aws_sdk_glue::error::BuildError| Error::internal(e.to_string());
    let comments: HashMap<&str, &str> = existing
        .and_then(|t| t.storage_descriptor.as_ref())
        .map(|d| d.columns())
        .into_iter()
        .flatten()
        .chain(existing.map(|t| t.partition_keys()).into_iter().flatten())
        .filter_map(|c| Some((c.name.as_str(), c.comment.as_deref()?)))
        .collect();
    let columns = |columns: &[CatalogColumn]| -> Result<Vec<Column>> {
        columns
            .iter()
            .map(|c| {
                Column::builder()
                    .name(&c.name)
                    .r#type(&c.data_type)
                    .set_comment(comments.get(c.name.as_str()).map(|s| s.to_string()))
                    .build()
                    .map_err(invalid)
            })
            .collect()
    };
    let mut parameters = existing
        .and_then(|t| t.parameters.clone())
        .unwrap_or_default();
    parameters.extend(
        PARAMETERS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let descriptor = StorageDescriptor::builder()
        .location(&table.location)
        .set_columns(Some(columns(&table.columns)?))
        .input_format("org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat")
        .output_format("org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat")
        .serde_info(
            SerDeInfo::builder()
                .serialization_library(
                    "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
                )
                .parameters("path", &table.location)
                .build(),
        )
        .build();
    TableInput::builder()
        .name(&table.name)
        .table_type(TABLE_TYPE)
        .set_description(existing.and_then(|t| t.description.clone()))
        .set_owner(existing.and_then(|t| t.owner.clone()))
        .retention(existing.map_or(0, |t| t.retention))
        .set_parameters(Some(parameters))
        .storage_descriptor(descriptor)
        .set_partition_keys(Some(columns(&table.partition_keys)?))
        .build()
        .map_err(invalid)
}
