//! The success and failure emails, as plain text and HTML from the same rows of facts.

use chrono::{DateTime, Utc};

use super::Email;
use crate::bounded::join_listed;
use crate::change_sample::ChangeSample;
use crate::rejects::RejectsSummary;
use crate::steps::{Report, SharedCommit, UpsertOutcome};

/// Escapes text for HTML element content and attribute values.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The file name part of a key, for subjects and progress lines.
pub(crate) fn file_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

fn duration(report: &Report, now: DateTime<Utc>) -> String {
    match &report.run {
        Some(run) => {
            let millis = (now - run.started_at).num_milliseconds().max(0);
            format!("{:.1} s", millis as f64 / 1000.0)
        }
        None => "unknown".into(),
    }
}

/// A cause from Step Functions is often the Lambda's JSON error; show its message.
fn build(
    subject: String,
    heading: &str,
    intro: &str,
    rows: &[(&str, String)],
    footer: &str,
) -> Email {
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0);
    let mut text = format!("{heading}\n\n{intro}\n\n");
    for (label, value) in rows {
        text.push_str(&format!("{label:<width$}  {value}\n"));
    }
    text.push_str(&format!("\n{footer}\n"));

    let mut html = format!(
        "<!DOCTYPE html>\n<html><body style=\"font-family: sans-serif\">\n<h2>{}</h2>\n<p>{}</p>\n<table cellpadding=\"4\">\n",
        escape_html(heading),
        escape_html(intro)
    );
    for (label, value) in rows {
        html.push_str(&format!(
            "<tr><th align=\"left\">{}</th><td><code>{}</code></td></tr>\n",
            escape_html(label),
            escape_html(value)
        ));
    }
    html.push_str(&format!(
        "</table>\n<p>{}</p>\n</body></html>\n",
        escape_html(footer)
    ));
    Email {
        from: String::new(),
        to: Vec::new(),
        subject,
        text,
        html,
    }
}

fn run_rows(report: &Report) -> Vec<(&'static str, String)> {
    let mut rows = match &report.run {
        Some(run) => vec![
            ("Feed", run.feed.clone()),
            ("File", run.key.clone()),
            ("Run", run.run_id.clone()),
            (
                "Started",
                run.started_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ),
        ],
        None => Vec::new(),
    };
    if let Some(url) = &report.execution_url {
        rows.push(("Execution", url.clone()));
    }
    rows
}

/// The run's feed and key, or `?` for a report without a run.
fn feed_and_key(report: &Report) -> (&str, &str) {
    report
        .run
        .as_ref()
        .map(|r| (r.feed.as_str(), r.key.as_str()))
        .unwrap_or(("?", "?"))
}

/// The email naming files that waited under an incoming prefix longer than `threshold`, those
/// not emailed before marked new, with how to make the emails stop.
pub fn render_stale_files(
    stale: &[crate::watch::StaleFile],
    threshold: chrono::Duration,
    is_new: &dyn Fn(&str) -> bool,
    reminder_hours: u32,
) -> Email {
    let rows: Vec<(&str, String)> = stale
        .iter()
        .map(|f| {
            let feed = f.feed.as_deref().unwrap_or("no feed matches it");
            (
                if is_new(&f.key) {
                    "Waiting (new)"
                } else {
                    "Waiting"
                },
                format!("{} ({} min; {feed})", f.key, f.waiting_minutes),
            )
        })
        .collect();
    let reminder = if reminder_hours == 0 {
        "You will not be reminded of these files again; a file that becomes stale later is \
         emailed once."
            .to_string()
    } else {
        format!(
            "While files stay, a reminder goes every {reminder_hours} h \
             ([notifications] stale_reminder_hours); a file that becomes stale is emailed at once."
        )
    };
    build(
        format!(
            "[deltadrop] {} file(s) waiting in incoming for more than {} min",
            stale.len(),
            threshold.num_minutes()
        ),
        "Files nobody has loaded",
        &format!(
            "These files have not been picked up: no run read them. Look at the trigger's logs \
             and the dead-letter queue; a file no feed matches needs a feed or another key. To \
             stop these emails, load each file (upload it again: its new notification starts a \
             run; locally `deltadrop run <file>`) or delete it. {reminder}"
        ),
        &rows,
        "Sent by deltadrop's stale-file watch.",
    )
}

/// The email for a run that did not fail (loaded, already applied, superseded or empty),
/// without sender and recipients; `now` ends the run's duration.
pub fn render_success(report: &Report, now: DateTime<Utc>) -> Email {
    let (feed, key) = feed_and_key(report);
    let mut rows = run_rows(report);
    if let Some(stage) = &report.stage {
        rows.push(("Rows staged", stage.rows.to_string()));
        if let Some(rejects) = &stage.rejects {
            rejected_rows(&mut rows, rejects);
        }
        for outcome in stage.expectations.iter().filter(|e| e.rows > 0) {
            rows.push((
                "Expectation",
                format!(
                    "{}: {} row(s) ({}, {}); the first: {}",
                    outcome.name,
                    outcome.rows,
                    outcome.rule,
                    outcome.action.name(),
                    outcome.first.join("; ")
                ),
            ));
        }
        if !stage.new_columns.is_empty()
            && report
                .upsert
                .as_ref()
                .is_some_and(|u| !u.changes.created_table)
        {
            rows.push((
                "New columns",
                join_listed(&stage.new_columns, stage.new_column_count),
            ));
        }
    }
    let summary = match &report.upsert {
        Some(upsert) => {
            rows.push(("Table", upsert.table.clone()));
            let labels = match &upsert.shared_commit {
                Some(shared) => {
                    rows.push((
                        "Shared commit",
                        format!(
                            "{} files in one commit; the row counts below are the commit's",
                            shared.files
                        ),
                    ));
                    rows.push(("Keys in this file", shared.keys.to_string()));
                    rows.push(("Keys it decided", decided(shared)));
                    [
                        "Rows inserted (commit)",
                        "Rows updated (commit)",
                        "Rows deleted (commit)",
                    ]
                }
                None => ["Rows inserted", "Rows updated", "Rows deleted"],
            };
            let changes = &upsert.changes;
            rows.push((labels[0], changes.rows_inserted.to_string()));
            rows.push((labels[1], changes.rows_updated.to_string()));
            rows.push((labels[2], changes.rows_deleted.to_string()));
            let version = upsert.version.map_or("none".to_string(), |v| v.to_string());
            rows.push(("Table version", version.clone()));
            if let Some(sample) = &upsert.change_sample {
                changed_keys(&mut rows, sample);
            }
            if let Some(catalog) = &upsert.catalog {
                rows.push(("Catalog", catalog.describe()));
            }
            let counts = format!(
                "{} inserted, {} updated, {} deleted",
                changes.rows_inserted, changes.rows_updated, changes.rows_deleted
            );
            match (upsert.outcome, &upsert.shared_commit) {
                (UpsertOutcome::Applied, None) => format!("{counts}; table version {version}"),
                (UpsertOutcome::Applied, Some(shared)) => format!(
                    "in one commit with {} other file(s): {counts} in all; table version {version}",
                    shared.files - 1
                ),
                (UpsertOutcome::AlreadyApplied, _) => {
                    "already applied before; nothing changed".to_string()
                }
                (UpsertOutcome::NothingToApply, _) => {
                    "no rows in the file; nothing changed".to_string()
                }
                (UpsertOutcome::Superseded, _) => {
                    "not applied: a newer upload of the same key is in the table already"
                        .to_string()
                }
            }
        }
        None => "loaded".to_string(),
    };
    rows.push(("Duration", duration(report, now)));
    if let Some(archive) = &report.archive {
        rows.push(("Archived to", archive.archived_to.clone()));
    }
    let superseded = report
        .upsert
        .as_ref()
        .is_some_and(|u| u.outcome == UpsertOutcome::Superseded);
    let (verb, headline) = if superseded {
        (
            "skipped",
            format!("{} was not loaded into {feed}", file_name(key)),
        )
    } else {
        let rejected = report.stage.as_ref().map_or(0, |s| s.rejected_rows());
        let warned = report.stage.as_ref().map_or(0, |s| s.warned_rows());
        let catalog_failed = report
            .upsert
            .as_ref()
            .and_then(|u| u.catalog.as_ref())
            .is_some_and(|c| c.failed());
        if rejected > 0 {
            (
                "loaded with rejected rows",
                format!(
                    "{} was loaded into {feed}; {rejected} bad row(s) were set aside",
                    file_name(key)
                ),
            )
        } else if catalog_failed {
            (
                "loaded, catalog not updated",
                format!(
                    "{} was loaded into {feed}; its catalog entry could not be updated",
                    file_name(key)
                ),
            )
        } else if warned > 0 {
            (
                "loaded with warnings",
                format!(
                    "{} was loaded into {feed}; {warned} row(s) broke an expectation",
                    file_name(key)
                ),
            )
        } else {
            (
                "loaded",
                format!("{} was loaded into {feed}", file_name(key)),
            )
        }
    };
    build(
        format!("[deltadrop] {feed}: {} {verb} ({summary})", file_name(key)),
        &headline,
        &format!("Result: {summary}."),
        &rows,
        "Sent by deltadrop.",
    )
}

/// A few keys the commit updated (before → after), inserted and deleted, from its change data.
fn changed_keys(rows: &mut Vec<(&'static str, String)>, sample: &ChangeSample) {
    for updated in &sample.updated {
        rows.push(("Updated", updated.line()));
    }
    for key in &sample.inserted {
        rows.push(("Inserted", key.clone()));
    }
    for key in &sample.deleted {
        rows.push(("Deleted", key.clone()));
    }
}

/// The rows a file set aside: their count per reason, the rejects file and the first few.
fn rejected_rows(rows: &mut Vec<(&'static str, String)>, rejects: &RejectsSummary) {
    rows.push((
        "Rows rejected",
        format!("{} ({})", rejects.rows, rejects.reasons()),
    ));
    rows.push(("Rejects file", rejects.file.clone()));
    for line in rejects.first_lines() {
        rows.push(("Rejected", line));
    }
}

/// What a file of a shared commit decided, for emails.
fn decided(shared: &SharedCommit) -> String {
    let others = shared.keys - shared.keys_decided.min(shared.keys);
    if others == 0 {
        shared.keys_decided.to_string()
    } else {
        format!(
            "{} (a later file of the commit, or a higher sequence value, decided the other {others})",
            shared.keys_decided
        )
    }
}

/// One email for the files of one commit (a feed with `notify = "digest"`): the commit's figures
/// and a line per file; without sender and recipients.
pub fn render_digest(reports: &[Report], now: DateTime<Utc>) -> Email {
    let feed = reports
        .first()
        .map_or("?", |r| feed_and_key(r).0)
        .to_string();
    let commit = reports
        .iter()
        .filter_map(|r| r.upsert.as_ref())
        .find(|u| u.outcome == UpsertOutcome::Applied);
    let mut rows = vec![("Feed", feed.clone())];
    let summary = match commit {
        Some(upsert) => {
            let version = upsert.version.map_or("none".to_string(), |v| v.to_string());
            rows.push(("Table", upsert.table.clone()));
            rows.push(("Table version", version.clone()));
            rows.push(("Rows inserted", upsert.changes.rows_inserted.to_string()));
            rows.push(("Rows updated", upsert.changes.rows_updated.to_string()));
            rows.push(("Rows deleted", upsert.changes.rows_deleted.to_string()));
            format!(
                "{} inserted, {} updated, {} deleted; table version {version}",
                upsert.changes.rows_inserted,
                upsert.changes.rows_updated,
                upsert.changes.rows_deleted
            )
        }
        None => "nothing changed".to_string(),
    };
    for report in reports {
        let (_, key) = feed_and_key(report);
        let staged = report.stage.as_ref().map_or(0, |s| s.rows);
        let rejected = match report.stage.as_ref().map_or(0, |s| s.rejected_rows()) {
            0 => String::new(),
            n => format!(", {n} rejected"),
        };
        let outcome = report.upsert.as_ref().map_or("loaded".to_string(), |u| {
            let mut text = u.outcome.name().to_string();
            if let Some(shared) = &u.shared_commit {
                text.push_str(&format!(", keys decided {}", decided(shared)));
            }
            text
        });
        rows.push((
            "File",
            format!("{key}: {staged} rows staged{rejected}, {outcome}"),
        ));
    }
    let oldest = reports
        .iter()
        .filter_map(|r| r.run.as_ref())
        .map(|r| r.started_at)
        .min();
    if let Some(started) = oldest {
        let millis = (now - started).num_milliseconds().max(0);
        rows.push((
            "Duration",
            format!(
                "{:.1} s since the first file's run started",
                millis as f64 / 1000.0
            ),
        ));
    }
    build(
        format!("[deltadrop] {feed}: {} files loaded ({summary})", reports.len()),
        &format!("{} files were loaded into {feed} in one commit", reports.len()),
        &format!("Result: {summary}."),
        &rows,
        "Sent by deltadrop (notify = \"digest\": one email per commit; failures are emailed one by one).",
    )
}

/// The email for a failed run: the error, its cause, what to do and where the file is now;
/// without sender and recipients. `now` ends the run's duration.
pub fn render_failure(report: &Report, now: DateTime<Utc>) -> Email {
    let (feed, key) = feed_and_key(report);
    let (name, cause) = report
        .failure
        .as_ref()
        .map(|f| (f.error.to_string(), f.cause.clone()))
        .unwrap_or_else(|| ("Unknown".into(), "unknown".into()));
    let mut rows = run_rows(report);
    rows.push(("Error", name.clone()));
    rows.push(("Cause", cause.clone()));
    let advice = report.failure.as_ref().map_or("", |f| f.error.advice());
    rows.push(("What to do", advice.to_string()));
    let whereabouts = match (&report.quarantine, &report.archive) {
        (Some(q), _) => format!(
            "{} (error report: {}.error.json)",
            q.quarantined_to, q.quarantined_to
        ),
        (None, Some(a)) => a.archived_to.clone(),
        (None, None) => report
            .run
            .as_ref()
            .map_or("unknown".into(), |r| r.key.clone()),
    };
    rows.push(("File is now at", whereabouts));
    if let Some(rejects) = report
        .quarantine
        .as_ref()
        .and_then(|q| q.rejects_file.as_ref())
    {
        rows.push(("Rejects file", rejects.clone()));
    }
    rows.push(("Duration", duration(report, now)));
    build(
        format!("[deltadrop] FAILED {feed}: {} ({name})", file_name(key)),
        &format!("{} could not be loaded into {feed}", file_name(key)),
        &format!("{name}: {cause}"),
        &rows,
        "The target table was not changed by this file. Sent by deltadrop.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::{Failure, RunInput};

    #[test]
    fn failure_email_escapes_html_and_names_error_cause_and_advice() {
        let report = Report {
            run: Some(RunInput {
                run_id: "r1".into(),
                key: "incoming/<script>.csv".into(),
                feed: "orders".into(),
                started_at: Utc::now(),
                upload: Default::default(),
            }),
            failure: Some(Failure {
                error: "MalformedFile".into(),
                cause: r#"{"errorType":"MalformedFile","errorMessage":"a.csv, line 3: expected 2 fields, found 3"}"#.into(),
            }),
            ..Default::default()
        };
        let email = render_failure(&report, Utc::now());
        assert!(email.subject.contains("FAILED orders"));
        assert!(email
            .text
            .contains("a.csv, line 3: expected 2 fields, found 3"));
        assert!(email.text.contains("Ask the sender"));
        assert!(email.html.contains("&lt;script&gt;.csv"));
        assert!(!email.html.contains("<script>"));
    }
}
