//! The `deltadrop` command as a user runs it.

use std::process::Command;

fn deltadrop() -> Command {
    Command::new(env!("CARGO_BIN_EXE_deltadrop"))
}

#[test]
fn demo_loads_both_files_and_writes_two_emails() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let output = deltadrop()
        .args(["demo", "--dir"])
        .arg(&demo)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("6 inserted, 0 updated, 0 deleted"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 inserted, 2 updated, 1 deleted"),
        "{stdout}"
    );
    assert!(stdout.contains("rows     7"), "{stdout}");
    let emails = std::fs::read_dir(demo.join("_deltadrop/outbox"))
        .unwrap()
        .count();
    assert_eq!(emails, 2);
    // Running it again replaces the earlier demo.
    assert!(deltadrop()
        .args(["demo", "--dir"])
        .arg(&demo)
        .output()
        .unwrap()
        .status
        .success());
}

#[test]
fn run_quarantines_a_bad_file_and_exits_1_and_bad_arguments_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path();
    std::fs::write(
        bucket.join("deltadrop.toml"),
        "[notifications]\nrecipients = [\"ops@example.com\"]\n[[feeds]]\nname = \"t\"\nincoming = \"in/\"\ntable = \"tables/t\"\nkeys = [\"id\"]\n",
    )
    .unwrap();
    std::fs::create_dir_all(bucket.join("in")).unwrap();
    std::fs::write(bucket.join("in/bad.csv"), "id,name\n1,a,extra\n").unwrap();
    let output = deltadrop()
        .args(["run", "in/bad.csv", "--bucket"])
        .arg(bucket)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAILED: MalformedFile: in/bad.csv, line 2: expected 2 fields, found 3"),
        "{stdout}"
    );
    let run_folder = std::fs::read_dir(bucket.join("quarantine/in"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(
        stdout.contains(run_folder.file_name().unwrap().to_str().unwrap()),
        "{stdout}"
    );
    assert!(run_folder.join("bad.csv.error.json").is_file());
    assert!(run_folder.join("bad.csv").is_file());

    let output = deltadrop()
        .args(["run", "in/missing.csv", "--bucket"])
        .arg(bucket)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("object not found: in/missing.csv"));

    std::fs::write(bucket.join("deltadrop.toml"), "[[feeds]]\nname = \"t\"\n").unwrap();
    std::fs::write(bucket.join("in/ok.csv"), "id\n1\n").unwrap();
    let output = deltadrop()
        .args(["run", "in/ok.csv", "--bucket"])
        .arg(bucket)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("missing field `incoming`"));
}
