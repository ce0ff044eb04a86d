//! Archive (after a good stage): move the original file, never losing it. Safe to re-run after a
//! partial move. Quarantine ([`super::quarantine`]) moves files the same way.

use serde::{Deserialize, Serialize};

use super::RunInput;
use crate::environment::Environment;
use crate::error::{Error, Result};
use crate::upload::Upload;

/// Where the archive step moved the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveOutput {
    /// The archive copy's key in the bucket.
    pub archived_key: String,
    /// Where the file is now, as a URL-like location.
    pub archived_to: String,
}

/// Copies `upload` of `from` to `to` and deletes it from `from`. When `from` no longer holds it
/// and `to` exists, a previous attempt already moved it.
pub(super) async fn move_object(
    env: &Environment,
    from: &str,
    upload: &Upload,
    to: &str,
) -> Result<()> {
    if env.storage.holds(from, upload).await? {
        env.storage.copy(from, upload, to).await?;
        env.storage.delete(from, upload).await
    } else if env.storage.size(to).await?.is_some() {
        Ok(())
    } else if upload.is_pinned() && env.storage.size(from).await?.is_some() {
        Err(Error::UploadReplaced {
            key: from.to_string(),
        })
    } else {
        Err(Error::ObjectNotFound {
            key: from.to_string(),
        })
    }
}

/// S3 keys are at most 1,024 bytes of UTF-8
/// (https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-keys.html).
const MAX_KEY_BYTES: usize = 1024;
/// The longest suffix deltadrop adds to a copy's key: the rejects file of a replayed one
/// (`replay_rejects`), three bytes longer than the report of a replayed quarantined file.
const LONGEST_SUFFIX: &str = ".replayed-20260101T000000.000Z.rejects.jsonl";
/// The most of the file name a shortened copy keeps (a local folder allows 255 bytes a name).
const SHORTENED_NAME_BYTES: usize = 200;

/// `<prefix><folder of the key>/<run id>/<file name>`: every upload of a key keeps its own copy
/// (a producer that sends `orders.csv` every hour), and a retried step finds its own.
///
/// A key near S3's limit leaves no room for the prefix and the run folder: its copy is then
/// `<prefix><run id>/<hash of the key>-<end of the file name>`, the same for every attempt of
/// the run; the error report and the step output keep the original key.
pub(super) fn copy_key(prefix: &str, run: &RunInput) -> String {
    let (folder, file) = match run.key.rsplit_once('/') {
        Some((folder, file)) => (format!("{folder}/"), file),
        None => (String::new(), run.key.as_str()),
    };
    let full = format!("{prefix}{folder}{}/{file}", run.run_id);
    let budget = MAX_KEY_BYTES - LONGEST_SUFFIX.len();
    if full.len() <= budget {
        return full;
    }
    let hash = crate::storage::short_digest(&run.key, 8);
    let head = format!("{prefix}{}/{hash}-", run.run_id);
    let room = budget.saturating_sub(head.len()).min(SHORTENED_NAME_BYTES);
    let mut start = file.len().saturating_sub(room);
    while !file.is_char_boundary(start) {
        start += 1;
    }
    format!("{head}{}", &file[start..])
}

/// `<archive prefix><folder of the key>/<run id>/<file name>`: where the run's file is archived.
pub fn archive_key(env: &Environment, run: &RunInput) -> String {
    copy_key(&env.config.locations.archive, run)
}

/// Moves exactly the run's upload from its key to [`archive_key`]; a re-run after the move
/// finds the copy and succeeds.
pub async fn archive(env: &Environment, run: &RunInput) -> Result<ArchiveOutput> {
    run.validate()?;
    let to = archive_key(env, run);
    move_object(env, &run.key, &run.upload, &to).await?;
    Ok(ArchiveOutput {
        archived_to: env.storage.display(&to),
        archived_key: to,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(key: &str) -> RunInput {
        RunInput {
            run_id: "orders-20261202T000000Z-0123abcd".into(),
            key: key.into(),
            feed: "orders".into(),
            started_at: chrono::Utc::now(),
            upload: Upload::default(),
        }
    }

    #[test]
    fn a_copy_keeps_the_key_unless_it_would_pass_s3s_limit() {
        let short = run("incoming/orders/a.csv");
        assert_eq!(
            copy_key("archive/", &short),
            "archive/incoming/orders/orders-20261202T000000Z-0123abcd/a.csv"
        );
        // 1,000 bytes, multi-byte characters at the end: the copy and its replayed report fit.
        let long_key = format!(
            "incoming/orders/{}{}.csv",
            "d/".repeat(300),
            "é".repeat(190)
        );
        assert!(
            long_key.len() > 900 && long_key.len() <= 1024,
            "{}",
            long_key.len()
        );
        for prefix in ["archive/", "quarantine/"] {
            let copy = copy_key(prefix, &run(&long_key));
            assert!(
                copy.len() + LONGEST_SUFFIX.len() <= MAX_KEY_BYTES,
                "{}",
                copy.len()
            );
            assert!(copy.starts_with(&format!("{prefix}orders-20261202T000000Z-0123abcd/")));
            assert!(copy.ends_with("éé.csv"), "{copy}");
            assert_eq!(copy, copy_key(prefix, &run(&long_key)), "deterministic");
            let name = copy.rsplit('/').next().unwrap();
            assert!(name.len() <= 255, "{}", name.len());
        }
        let other = format!("{long_key}x");
        assert_ne!(
            copy_key("archive/", &run(&long_key)),
            copy_key("archive/", &run(&other))
        );
    }
}
