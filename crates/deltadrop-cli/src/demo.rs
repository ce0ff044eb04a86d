//! `deltadrop demo`: a bucket folder with a config and two order files, loaded one after the
//! other, so a first-time user sees a first load, an upsert, a delete, a duplicate key and a
//! new column in one command.

use std::path::Path;
use std::process::ExitCode;

use deltadrop::run::run_file;
use deltadrop::steps::RunInput;
use deltadrop::{Error, Result};

use crate::local;

/// Marks a folder as a demo folder that `deltadrop demo` may replace.
const MARKER: &str = ".deltadrop-demo";

pub const CONFIG: &str = r#"# deltadrop demo configuration: see README.md, "Configuration".
[notifications]
from = "deltadrop@example.com"
recipients = ["data-team@example.com"]

[[feeds]]
name = "orders"
incoming = "incoming/orders/"
table = "tables/orders"
keys = ["order_id"]
# The newest version of an order wins, whatever order the files arrive in.
sequence_column = "updated_at"
# Rows with op = "D" delete the order.
change_type = { column = "op", delete_value = "D" }
schema_policy = "additive"

[feeds.column_types]
amount = "double"
"#;

pub const FIRST_LOAD: &str = "\
order_id,customer,amount,status,updated_at,op
1001,Ada Lovelace,120.50,new,2026-11-01T09:00:00Z,
1002,Alan Turing,75,new,2026-11-01T09:05:00Z,
1003,Grace Hopper,310.00,new,2026-11-01T09:10:00Z,
1004,Edsger Dijkstra,42.25,new,2026-11-01T09:15:00Z,
1005,Barbara Liskov,99.99,new,2026-11-01T09:20:00Z,
1006,Donald Knuth,15.00,new,2026-11-01T09:25:00Z,
";

/// Updates 1002, changes 1003 twice (the later row wins), deletes 1005, adds 1007 and 1008,
/// and brings a new column, `channel`.
pub const UPSERT: &str = "\
order_id,customer,amount,status,updated_at,op,channel
1002,Alan Turing,75,shipped,2026-11-02T08:00:00Z,U,web
1003,Grace Hopper,310.00,packed,2026-11-02T08:05:00Z,U,store
1003,Grace Hopper,305.00,shipped,2026-11-02T10:30:00Z,U,store
1005,Barbara Liskov,99.99,cancelled,2026-11-02T08:10:00Z,D,web
1007,Margaret Hamilton,88.00,new,2026-11-02T08:15:00Z,I,web
1008,Ken Thompson,230.75,new,2026-11-02T08:20:00Z,I,phone
";

fn prepare(dir: &Path) -> Result<()> {
    let io = |e: std::io::Error| Error::storage(dir.display().to_string(), e);
    if dir.exists() {
        let empty = dir.read_dir().map_err(io)?.next().is_none();
        if !empty && !dir.join(MARKER).exists() {
            return Err(Error::InvalidInput {
                message: format!(
                    "{} exists and is not a deltadrop demo folder; choose another with --dir",
                    dir.display()
                ),
            });
        }
        std::fs::remove_dir_all(dir).map_err(io)?;
    }
    let incoming = dir.join("incoming").join("orders");
    std::fs::create_dir_all(&incoming).map_err(io)?;
    std::fs::write(dir.join(MARKER), "").map_err(io)?;
    std::fs::write(dir.join("deltadrop.toml"), CONFIG).map_err(io)?;
    std::fs::write(incoming.join("orders-2026-11-01.csv"), FIRST_LOAD).map_err(io)?;
    std::fs::write(incoming.join("orders-2026-11-02.csv"), UPSERT).map_err(io)?;
    Ok(())
}

pub async fn run(dir: &Path) -> Result<ExitCode> {
    prepare(dir)?;
    let env = local::environment(dir, None, None)?;
    println!("demo bucket: {}", env.storage.display(""));
    println!("config:      {}", dir.join("deltadrop.toml").display());
    let mut emails = Vec::new();
    for (i, key) in [
        "incoming/orders/orders-2026-11-01.csv",
        "incoming/orders/orders-2026-11-02.csv",
    ]
    .iter()
    .enumerate()
    {
        println!();
        println!(
            "{}. {}",
            i + 1,
            if i == 0 {
                "first load"
            } else {
                "upsert: updates, a duplicate key, a delete, new rows, a new column"
            }
        );
        let run = RunInput::for_current_upload(&env, key).await?;
        let result = run_file(&env, run, &|line| println!("   {line}")).await;
        local::print_summary(&result);
        if let Some(error) = result.error {
            return Err(error);
        }
        if let Ok(Some(path)) = result.notification.map(|n| n.delivered) {
            emails.push(path);
        }
    }
    println!();
    let table = env.table(&env.config.feeds[0].table)?;
    let path = table
        .url
        .to_file_path()
        .map(|p| p.display().to_string())
        .unwrap_or(table.name());
    local::show_table(&path, 3, 10).await?;
    println!();
    println!("The table is a Delta table at {path}");
    println!("Files were moved to {}", dir.join("archive").display());
    println!("Emails (open them with any mail client or a text editor):");
    for email in emails {
        println!("  {email}");
    }
    println!(
        "Next: drop your own file under {} and run",
        dir.join("incoming/orders").display()
    );
    println!(
        "  deltadrop run incoming/orders/<file>.csv --bucket {}",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
