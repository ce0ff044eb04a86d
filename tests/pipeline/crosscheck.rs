//! The tables deltadrop writes, read back by an independent implementation: the Python
//! `deltalake` package that the test command installs (DELTADROP_PYTHON points at it).

use crate::support::Harness;

fn python() -> String {
    std::env::var("DELTADROP_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn read_with_python(table: &std::path::Path, order_by: &str) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/crosscheck.py");
    let output = std::process::Command::new(python())
        .arg(script)
        .arg(table)
        .arg(order_by)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e}; run the tests with ./scripts/test",
                python()
            )
        });
    assert!(
        output.status.success(),
        "the Python reader failed (run the tests with ./scripts/test, which installs it):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn python_deltalake_reads_the_same_rows_after_upserts_deletes_and_a_new_column() {
    let config = r#"
[[feeds]]
name = "orders"
incoming = "incoming/"
table = "tables/orders"
keys = ["id"]
change_type = { column = "op", delete_value = "D" }
"#;
    let h = Harness::new(config);
    h.load(
        "incoming/1.csv",
        "id,name,qty,op\n1,a,10,\n2,b,20,\n3,c,30,\n",
    )
    .await;
    h.load(
        "incoming/2.csv",
        "id,name,qty,op,note\n2,b2,21,U,hello\n3,c,30,D,\n4,d,40,I,new\n",
    )
    .await;
    let expected = h.rows("tables/orders", &["id"]).await;
    assert_eq!(expected, ["1|a|10|∅", "2|b2|21|hello", "4|d|40|new"]);

    let seen = read_with_python(&h.table_path("tables/orders"), "id");
    assert_eq!(seen["version"], 1);
    assert_eq!(
        seen["columns"],
        serde_json::json!(["id", "name", "qty", "note"])
    );
    assert_eq!(seen["rows"], serde_json::json!(expected));
    assert_eq!(seen["history"], serde_json::json!(["MERGE", "WRITE"]));
}
