//! What a reader finds about the rows of a file beyond their values: the rows it sets aside
//! instead of failing the file (a feed with `on_bad_rows = "reject"`: the rejects file's lines
//! and their counts, [`crate::rejects`]) and what the feed's expectations found
//! ([`super::expectations`]).

use std::cell::RefCell;
use std::collections::BTreeMap;

use deltalake::arrow::array::ArrayRef;
use deltalake::arrow::datatypes::Schema;

use super::expectations::{prepare, Broken, Check};
use super::ReadSpec;
use crate::config::OnBadRows;
use crate::error::{Error, Position, Result};
use crate::expect::Action;
use crate::rejects::{
    too_many, Breach, ExpectationOutcome, Fault, RejectedRow, RejectsSummary, SAMPLE_ROWS,
};

/// Collected while a file is read; held by the [`ReadSpec`] so that whoever read the file gets
/// it whether the read succeeded or failed (a file with too many bad rows still gets its rejects
/// file).
#[derive(Default)]
pub struct SetAside {
    collected: RefCell<Collected>,
}

#[derive(Default)]
struct Collected {
    /// The rows set aside, in the order they were found (a batch's ragged records before its
    /// values that do not fit).
    rows: Vec<RejectedRow>,
    /// The feed's expectations, prepared at the first batch (the plan types their columns).
    checks: Option<Vec<Check>>,
    /// What each of them found in the rows taken so far.
    outcomes: Vec<ExpectationOutcome>,
}

/// The rows of one batch that break one expectation.
pub(super) struct Breaches {
    /// Which expectation (the feed's order).
    pub index: usize,
    pub action: Action,
    /// Its column's position in the batch.
    pub column: usize,
    pub broken: Broken,
}

impl SetAside {
    /// A bad row: fails the file with `fault`'s error when the feed fails on bad rows; else
    /// sets the row (`raw`: its record as the file wrote it) aside, and fails with
    /// `TooManyBadRows` when it is one more than the feed's `max_rejected_rows`.
    pub(crate) fn bad_row(
        &self,
        spec: &ReadSpec<'_>,
        fault: impl Into<Fault>,
        raw: impl FnOnce() -> String,
    ) -> Result<()> {
        let fault = fault.into();
        if spec.feed.on_bad_rows == OnBadRows::Fail {
            return Err(fault.into_error());
        }
        let Some(row) = fault.rejected(raw()) else {
            return Err(fault.into_error());
        };
        let mut collected = self.collected.borrow_mut();
        collected.rows.push(row);
        let allowed = spec.feed.max_rejected_rows;
        if collected.rows.len() as u64 > allowed {
            return Err(too_many(
                spec.file,
                &collected.summary(),
                format!(
                    "more than the feed's max_rejected_rows ({allowed}); reading stopped there"
                ),
            ));
        }
        Ok(())
    }

    /// The rows of a conformed batch (`columns`, of `schema`) that break each of the feed's
    /// expectations, but those `skip` names (left out already: a value that does not fit, a null
    /// key); nothing is remembered until [`SetAside::take`].
    pub(super) fn breaches(
        &self,
        spec: &ReadSpec<'_>,
        schema: &Schema,
        columns: &[ArrayRef],
        skip: &dyn Fn(usize) -> bool,
    ) -> Result<Vec<Breaches>> {
        if spec.feed.expect.is_empty() {
            return Ok(Vec::new());
        }
        let mut collected = self.collected.borrow_mut();
        if collected.checks.is_none() {
            let checks = prepare(&spec.feed.expect, schema, &spec.feed.name)?;
            collected.outcomes = checks
                .iter()
                .map(|check| ExpectationOutcome {
                    name: check.name.clone(),
                    rule: check.rule.describe(),
                    action: check.action,
                    rows: 0,
                    first: Vec::new(),
                })
                .collect();
            collected.checks = Some(checks);
        }
        let checks = collected.checks.as_ref().expect("prepared above");
        let mut found = Vec::with_capacity(checks.len());
        for (index, check) in checks.iter().enumerate() {
            let column = schema
                .index_of(&check.column)
                .map_err(|e| Error::internal(format!("expectation {:?}: {e}", check.name)))?;
            found.push(Breaches {
                index,
                action: check.action,
                column,
                broken: check.broken(&columns[column], skip)?,
            });
        }
        Ok(found)
    }

    /// The fault of `row`, which breaks expectation `index`.
    pub(super) fn breach(
        &self,
        spec: &ReadSpec<'_>,
        index: usize,
        position: Position,
        value: Option<String>,
    ) -> Fault {
        let collected = self.collected.borrow();
        let check = &collected.checks.as_ref().expect("prepared by breaches")[index];
        Fault::Breach(Breach {
            file: spec.file.to_string(),
            position,
            expectation: check.name.clone(),
            rule: check.rule.describe(),
            column: check.column.clone(),
            value,
        })
    }

    /// Records what the expectations found in a batch that was taken, its rows `left_out`
    /// aside: the rows that broke each (the first described by `located(column, row)`; for a
    /// `warn` or `fail` expectation only the rows that were not left out for another reason),
    /// and the values `unique` must remember.
    pub(super) fn take(
        &self,
        breaches: Vec<Breaches>,
        left_out: &dyn Fn(usize) -> bool,
        located: &dyn Fn(usize, usize) -> String,
    ) {
        if breaches.is_empty() {
            return;
        }
        let mut collected = self.collected.borrow_mut();
        let Collected {
            checks, outcomes, ..
        } = &mut *collected;
        let checks = checks.as_mut().expect("prepared by breaches");
        for Breaches {
            index,
            action,
            column,
            broken,
        } in breaches
        {
            let outcome = &mut outcomes[index];
            let counted = |row: &&usize| action == Action::Reject || !left_out(**row);
            for &row in broken.rows.iter().filter(counted) {
                outcome.rows += 1;
                if outcome.first.len() < SAMPLE_ROWS {
                    outcome.first.push(located(column, row));
                }
            }
            checks[index].remember(broken);
        }
    }

    /// After the whole file was read (`loaded` rows loaded): fails with `ExpectationFailed`
    /// when rows broke an expectation whose action is `fail`, or with `TooManyBadRows` when the
    /// rows set aside are more than the feed's `max_rejected_percent` of the file's rows.
    pub fn verdict(&self, spec: &ReadSpec<'_>, loaded: u64) -> Result<()> {
        let collected = self.collected.borrow();
        let failed = collected
            .outcomes
            .iter()
            .find(|o| o.action == Action::Fail && o.rows > 0);
        if let Some(outcome) = failed {
            return Err(Error::ExpectationFailed {
                file: spec.file.to_string(),
                expectation: outcome.name.clone(),
                rule: outcome.rule.clone(),
                rows: outcome.rows,
                first: outcome.first.join("; "),
            });
        }
        let rejected = collected.rows.len() as u64;
        let total = loaded + rejected;
        let allowed = spec.feed.max_rejected_percent;
        if rejected as f64 * 100.0 <= allowed * total as f64 {
            return Ok(());
        }
        let share = rejected as f64 * 100.0 / total as f64;
        Err(too_many(
            spec.file,
            &collected.summary(),
            format!(
                "{share:.1}% of its {total} rows, more than the feed's max_rejected_percent \
                 ({allowed}%)"
            ),
        ))
    }

    /// Adds what a reader of another part of the same file set aside and found (a chunk of a
    /// split file, read in file order): its rows, and its rows that broke each expectation.
    pub fn absorb(&self, other: SetAside) {
        let other = other.collected.into_inner();
        let mut collected = self.collected.borrow_mut();
        collected.rows.extend(other.rows);
        if collected.outcomes.is_empty() {
            collected.outcomes = other.outcomes;
            return;
        }
        for (mine, theirs) in collected.outcomes.iter_mut().zip(other.outcomes) {
            mine.rows += theirs.rows;
            let room = SAMPLE_ROWS.saturating_sub(mine.first.len());
            mine.first.extend(theirs.first.into_iter().take(room));
        }
    }

    /// The rows set aside and what the expectations found, to pass on to another invocation
    /// (a chunk read by its own Lambda invocation); [`SetAside::from_parts`] takes them back.
    pub fn into_parts(self) -> (Vec<RejectedRow>, Vec<ExpectationOutcome>) {
        let collected = self.collected.into_inner();
        (collected.rows, collected.outcomes)
    }

    /// What [`SetAside::into_parts`] gave, to [`SetAside::absorb`] in file order.
    pub fn from_parts(rows: Vec<RejectedRow>, outcomes: Vec<ExpectationOutcome>) -> SetAside {
        SetAside {
            collected: RefCell::new(Collected {
                rows,
                checks: None,
                outcomes,
            }),
        }
    }

    /// Rows set aside so far.
    pub fn rows(&self) -> u64 {
        self.collected.borrow().rows.len() as u64
    }

    /// What the feed's expectations found (empty for a feed without any).
    pub fn expectations(&self) -> Vec<ExpectationOutcome> {
        self.collected.borrow().outcomes.clone()
    }

    /// The rejects file's bytes, its rows in file order, each naming `upload` (the identity of
    /// the upload they came from), and the summary (its `file` still empty), or `None` when no
    /// row was set aside.
    pub fn into_file(self, upload: &str) -> Result<Option<(Vec<u8>, RejectsSummary)>> {
        let mut collected = self.collected.into_inner();
        if collected.rows.is_empty() {
            return Ok(None);
        }
        let summary = collected.summary();
        collected.rows.sort_by_key(|row| row.position);
        let mut lines = Vec::new();
        for row in &mut collected.rows {
            row.upload = upload.to_string();
            serde_json::to_writer(&mut lines, &*row)
                .map_err(|e| Error::internal(format!("a rejected row would not serialize: {e}")))?;
            lines.push(b'\n');
        }
        Ok(Some((lines, summary)))
    }
}

impl Collected {
    /// The counts and the first rows of the file (by position), without their records.
    fn summary(&self) -> RejectsSummary {
        let mut by_reason = BTreeMap::new();
        for row in &self.rows {
            *by_reason.entry(row.error.clone()).or_default() += 1;
        }
        let mut first: Vec<&RejectedRow> = self.rows.iter().collect();
        first.sort_by_key(|row| row.position);
        RejectsSummary {
            rows: self.rows.len() as u64,
            by_reason,
            first: first
                .iter()
                .take(SAMPLE_ROWS)
                .map(|row| row.brief())
                .collect(),
            file: String::new(),
        }
    }
}
