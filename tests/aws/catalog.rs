//! The Glue Data Catalog (docs/aws.md, "Query with Athena"): the upsert registers each table in
//! the deployment's Glue database after its commit, so that Athena finds it at once; a catalog
//! outage never fails a load; `deltadrop catalog sync` (the library call behind it) brings an
//! entry up to date.

use std::sync::atomic::Ordering;

use deltadrop::catalog::Registration;
use serde_json::json;

use crate::world::{World, BUCKET, GLUE_DATABASE};

/// The feed's table name in Glue: its name in Glue's rules (`Catalogued-Orders`).
const TABLE: &str = "catalogued_orders";

pub async fn tables_are_registered_in_the_glue_catalog(world: &World) {
    // The first file creates the table, and its entry: the columns with Glue's types, the
    // partition key apart, and what makes it a Delta table for Athena and Spark.
    let first = load(world, "1.csv", "id,region,qty\n1,eu,10\n2,us,20\n").await;
    assert_eq!(
        first["upsert"]["catalog"],
        json!({"table": format!("{GLUE_DATABASE}.{TABLE}"), "registration": "created"})
    );
    let entry = glue_table(world).await;
    assert_eq!(
        columns(entry.storage_descriptor().unwrap().columns()),
        [("id", "bigint"), ("qty", "bigint")]
    );
    assert_eq!(columns(entry.partition_keys()), [("region", "string")]);
    let descriptor = entry.storage_descriptor().unwrap();
    let location = format!("s3://{BUCKET}/tables/catalogued");
    assert_eq!(descriptor.location(), Some(location.as_str()));
    let serde = descriptor.serde_info().unwrap().parameters().unwrap();
    assert_eq!(
        serde.get("path"),
        Some(&location),
        "Spark reads the table by its path"
    );
    let parameters = entry.parameters().unwrap();
    assert_eq!(
        parameters.get("table_type").map(String::as_str),
        Some("DELTA")
    );
    assert_eq!(
        parameters
            .get("spark.sql.sources.provider")
            .map(String::as_str),
        Some("delta")
    );
    assert_eq!(entry.table_type(), Some("EXTERNAL_TABLE"));

    // The data owner describes the table and a column in Glue...
    described_by_its_owner(world, &entry).await;

    // ...a file with a new column updates the entry and keeps what the owner wrote; the
    // change data feed's sample (before → after) is in its email.
    let second = load(
        world,
        "2.csv",
        "id,region,qty,note\n2,us,21,late\n3,eu,30,\n",
    )
    .await;
    assert_eq!(
        second["upsert"]["catalog"]["registration"],
        json!("updated")
    );
    let entry = glue_table(world).await;
    assert_eq!(entry.description(), Some(DESCRIPTION));
    let id = &entry.storage_descriptor().unwrap().columns()[0];
    assert_eq!((id.name(), id.comment()), ("id", Some("the order number")));
    assert_eq!(
        columns(entry.storage_descriptor().unwrap().columns()),
        [("id", "bigint"), ("qty", "bigint"), ("note", "string")]
    );
    let sample = &second["upsert"]["change_sample"];
    assert_eq!(sample["inserted"], json!(["region=eu, id=3"]), "{sample:#}");
    assert_eq!(
        sample["updated"][0]["changed"],
        json!([{"column": "qty", "before": "20", "after": "21"}, {"column": "note", "before": "null", "after": "late"}])
    );
    let emails = world.emails().await;
    let email = emails
        .iter()
        .map(|e| e.to_string())
        .find(|e| e.contains("Catalogued-Orders: 2.csv loaded"))
        .expect("the second file's email");
    assert!(
        email.contains("id=2: qty 20 → 21; note null → late"),
        "{email}"
    );
    assert!(
        email.contains(&format!("{GLUE_DATABASE}.{TABLE} (updated)")),
        "{email}"
    );

    // The catalog is down (every call answers 500, retried by the SDK): the file still loads,
    // and its output, its email and the CatalogFailures metric say the entry was not updated.
    world.faults.catalog_outage.store(true, Ordering::SeqCst);
    let third = load(world, "3.csv", "id,region,qty,note,channel\n4,eu,40,,web\n").await;
    world.faults.catalog_outage.store(false, Ordering::SeqCst);
    let catalog = &third["upsert"]["catalog"];
    assert_eq!(catalog["registration"], json!(null), "{catalog:#}");
    assert!(
        catalog["error"]
            .as_str()
            .unwrap()
            .contains("InternalServiceException"),
        "{catalog:#}"
    );
    assert!(
        world.faults.catalog_faults.load(Ordering::SeqCst) >= 5,
        "the SDK tried five times"
    );
    assert_eq!(world.table_summary("tables/catalogued").await.rows, 4);
    let emails = world.emails().await;
    let email = emails
        .iter()
        .map(|e| e.to_string())
        .find(|e| e.contains("Catalogued-Orders: 3.csv loaded, catalog not updated"))
        .expect("an email that says the catalog was not updated");
    assert!(email.contains("not updated, the load stands"), "{email}");
    let stale = glue_table(world).await;
    assert_eq!(
        stale.storage_descriptor().unwrap().columns().len(),
        3,
        "no channel yet"
    );

    // `deltadrop catalog sync`: the entry is brought up to date, and an entry someone deleted
    // is created again.
    let config = deltadrop::config::Config::from_toml(&crate::world::config(), "test").unwrap();
    let feed = config.feed_named("Catalogued-Orders").unwrap();
    let catalog =
        deltadrop_aws::glue::GlueCatalog::new(&world.moto.sdk_config().await, GLUE_DATABASE.into());
    let location = world.table_location("tables/catalogued");
    let synced = deltadrop::catalog::sync(&catalog, feed, &location).await;
    assert_eq!(
        synced.registration,
        Some(Registration::Updated),
        "{synced:?}"
    );
    let entry = glue_table(world).await;
    assert_eq!(
        columns(entry.storage_descriptor().unwrap().columns()).last(),
        Some(&("channel", "string"))
    );
    glue(world)
        .await
        .delete_table()
        .database_name(GLUE_DATABASE)
        .name(TABLE)
        .send()
        .await
        .unwrap();
    let synced = deltadrop::catalog::sync(&catalog, feed, &location).await;
    assert_eq!(
        synced.registration,
        Some(Registration::Created),
        "{synced:?}"
    );
    let synced = deltadrop::catalog::sync(&catalog, feed, &location).await;
    assert_eq!(
        synced.registration,
        Some(Registration::Unchanged),
        "{synced:?}"
    );
}

const DESCRIPTION: &str = "Orders by region, loaded by deltadrop";

/// What a data owner does in the Glue console: a description of the table, a comment on `id`.
async fn described_by_its_owner(world: &World, entry: &aws_sdk_glue::types::Table) {
    let mut descriptor = entry.storage_descriptor().unwrap().clone();
    descriptor.columns.as_mut().unwrap()[0].comment = Some("the order number".into());
    let input = aws_sdk_glue::types::TableInput::builder()
        .name(entry.name())
        .description(DESCRIPTION)
        .set_table_type(entry.table_type().map(str::to_string))
        .set_parameters(entry.parameters().cloned())
        .storage_descriptor(descriptor)
        .set_partition_keys(Some(entry.partition_keys().to_vec()))
        .build()
        .unwrap();
    glue(world)
        .await
        .update_table()
        .database_name(GLUE_DATABASE)
        .table_input(input)
        .send()
        .await
        .unwrap();
}

/// Drops `name` for the feed and returns its execution's output; it must succeed.
async fn load(world: &World, name: &str, body: &str) -> serde_json::Value {
    let done = world
        .drop_file(&format!("incoming/catalogued/{name}"), body)
        .await;
    assert_eq!(
        done.status, "SUCCEEDED",
        "{name}: {:?} {:#}",
        done.error, done.output
    );
    done.output
}

async fn glue(world: &World) -> aws_sdk_glue::Client {
    aws_sdk_glue::Client::new(&world.moto.sdk_config().await)
}

/// The feed's Glue entry, as Athena would read it.
async fn glue_table(world: &World) -> aws_sdk_glue::types::Table {
    let found = glue(world)
        .await
        .get_table()
        .database_name(GLUE_DATABASE)
        .name(TABLE)
        .send()
        .await
        .unwrap();
    found.table.unwrap()
}

fn columns(columns: &[aws_sdk_glue::types::Column]) -> Vec<(&str, &str)> {
    columns
        .iter()
        .map(|c| (c.name(), c.r#type().unwrap_or_default()))
        .collect()
}
