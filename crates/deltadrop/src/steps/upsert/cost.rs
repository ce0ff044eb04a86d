//! The cost check before a MERGE: from the table's log alone (each data file's partition values
//! and key statistics), the data files the MERGE will read and may rewrite, and whether the
//! upsert function can do that in the time it has. A MERGE over budget is refused by name
//! before it starts, instead of timing out after 15 minutes.
//!
//! The files are chosen as delta-rs chooses the files its MERGE scans: per partition of the
//! staged rows, those whose key statistics overlap the staged keys' range in that partition.

use std::time::{Duration, SystemTime};

use deltalake::datafusion::common::{DFSchema, ScalarValue};
use deltalake::datafusion::functions_aggregate::expr_fn::{max, min};
use deltalake::datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use deltalake::datafusion::prelude::{lit, DataFrame, Expr, SessionContext};
use deltalake::errors::DeltaTableError;
use deltalake::DeltaTable;

use super::merge::column;
use super::RewriteEstimate;
use crate::config::Feed;
use crate::delta::TableLocation;
use crate::error::{Error, Result};
use crate::route::ContainerTier;

/// How fast the upsert function rewrites a table, with a margin: about half the one-core rate of
/// the whole-table MERGEs of docs/benchmarks.md (a 24M-row table of 42 bytes of Parquet per row
/// rewritten in 17.5 s: 58 MB/s; "The cost check" there).
pub const REWRITE_BYTES_PER_SECOND: u64 = 30_000_000;

/// Kept back from the time left for what follows the MERGE's scan and write: the commit, the
/// staging tables' removal and the answer to Step Functions.
const RESERVE: Duration = Duration::from_secs(60);

/// What the staged rows touch in the table.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Touched {
    /// The data files the MERGE will read and may rewrite.
    pub estimate: RewriteEstimate,
    /// The partitions the staged rows fall in (0 for a table without partitions).
    pub partitions: u64,
}

/// What the MERGE of `rows` into `table` will read, from the log: the files that the partitions
/// and key ranges of `rows` may touch. One aggregate over the staged rows' keys.
pub(super) async fn touched(
    feed: &Feed,
    table: &DeltaTable,
    ctx: &SessionContext,
    rows: &DataFrame,
) -> Result<Touched, DeltaTableError> {
    let partition_columns = feed.partition_columns();
    let ranged: Vec<&String> = feed
        .keys
        .iter()
        .filter(|k| !partition_columns.contains(k))
        .collect();
    let mut bounds = Vec::new();
    for (i, key) in ranged.iter().enumerate() {
        bounds.push(min(column(key)).alias(format!("_min_{i}")));
        bounds.push(max(column(key)).alias(format!("_max_{i}")));
    }
    let groups = rows
        .clone()
        .aggregate(
            partition_columns.iter().map(|p| column(p)).collect(),
            bounds,
        )?
        .collect()
        .await?;
    let snapshot = table.snapshot()?.snapshot();
    let schema = snapshot.arrow_schema();
    let typed = |name: &str, value: ScalarValue| {
        let field = schema.field_with_name(name).ok()?;
        value.cast_to(field.data_type()).ok()
    };
    let mut alternatives = Vec::new();
    for batch in &groups {
        for row in 0..batch.num_rows() {
            let value = |name: &str| {
                let array = batch
                    .column_by_name(name)
                    .expect("a column of the aggregate");
                ScalarValue::try_from_array(array, row)
            };
            let mut conditions = Vec::new();
            for p in &partition_columns {
                conditions.push(match typed(p, value(p)?) {
                    Some(v) if !v.is_null() => column(p).eq(lit(v)),
                    _ => column(p).is_null(),
                });
            }
            for (i, key) in ranged.iter().enumerate() {
                let low = typed(key, value(&format!("_min_{i}"))?);
                let high = typed(key, value(&format!("_max_{i}"))?);
                // A key whose type the statistics cannot compare prunes nothing.
                if let (Some(low), Some(high)) = (low, high) {
                    conditions.push(
                        column(key)
                            .gt_eq(lit(low))
                            .and(column(key).lt_eq(lit(high))),
                    );
                }
            }
            alternatives.extend(conditions.into_iter().reduce(Expr::and));
        }
    }
    let partitions = if partition_columns.is_empty() {
        0
    } else {
        groups.iter().map(|b| b.num_rows() as u64).sum()
    };
    let log_data = snapshot.log_data();
    let keep: Vec<bool> = match alternatives.into_iter().reduce(Expr::or) {
        None if groups.iter().all(|b| b.num_rows() == 0) => vec![false; log_data.num_files()],
        None => vec![true; log_data.num_files()],
        Some(filter) => {
            let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
            let physical = ctx.create_physical_expr(filter, &df_schema)?;
            PruningPredicateBuilder::new()
                .with_file_schema(schema.clone())
                .try_build(physical)?
                .prune(&log_data)?
        }
    };
    let mut estimate = RewriteEstimate::default();
    for (file, _) in log_data.iter().zip(keep).filter(|(_, keep)| *keep) {
        estimate.files += 1;
        estimate.bytes += file.size().max(0) as u64;
        estimate.rows += file.num_records().unwrap_or(0) as u64;
    }
    Ok(Touched {
        estimate,
        partitions,
    })
}

/// The most a MERGE may rewrite, why, and what a MERGE over it does.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Budget {
    bytes: u64,
    source: String,
    over: Over,
}

/// What a MERGE over a budget does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Over {
    /// It is refused (`TooLargeForFunction`).
    Refused,
    /// It goes to the container tier (`MergeInContainer`).
    HandedOver,
}

impl Over {
    /// What a MERGE too large for this process does: handed over where the container tier
    /// takes it, refused elsewhere.
    pub(super) fn in_tier(tier: ContainerTier) -> Over {
        match tier {
            ContainerTier::Deployed => Over::HandedOver,
            ContainerTier::Absent => Over::Refused,
        }
    }

    /// The error of a MERGE of `file` into `table` that needs `work`, over `budget`.
    pub(super) fn error(self, file: String, table: String, work: String, budget: String) -> Error {
        match self {
            Over::Refused => Error::TooLargeForFunction {
                file,
                table,
                work,
                budget,
            },
            Over::HandedOver => Error::MergeInContainer {
                file,
                table,
                work,
                budget,
            },
        }
    }
}

impl Budget {
    /// The budgets a MERGE is checked against, those that refuse first: the feed's
    /// `max_rewrite_gb` wherever it runs; what the function can rewrite by `deadline` at
    /// [`REWRITE_BYTES_PER_SECOND`] (without `max_rewrite_gb`, or with the container tier);
    /// and with the container tier the feed's `route.container_merge_from_gb`. With the tier,
    /// a MERGE over the function's own budgets is handed over instead of refused. None at all
    /// without a setting or a deadline (the local runner, the container tier itself).
    pub(super) fn of(
        feed: &Feed,
        deadline: Option<SystemTime>,
        tier: ContainerTier,
        now: SystemTime,
    ) -> Vec<Budget> {
        let mut budgets = Vec::new();
        if let (Some(bytes), Some(gb)) = (feed.max_rewrite_bytes(), feed.max_rewrite_gb) {
            budgets.push(Budget {
                bytes,
                source: format!("the feed's max_rewrite_gb = {gb}"),
                over: Over::Refused,
            });
        }
        // Without the tier, the feed's setting replaces the function's time budget (README,
        // "The cost check").
        if tier == ContainerTier::Absent && !budgets.is_empty() {
            return budgets;
        }
        let over = Over::in_tier(tier);
        if let Some(deadline) = deadline {
            let left = deadline.duration_since(now).unwrap_or_default();
            let working = left.saturating_sub(RESERVE);
            budgets.push(Budget {
                bytes: working.as_secs().saturating_mul(REWRITE_BYTES_PER_SECOND),
                source: format!(
                    "what the upsert function rewrites in its {} s left, less {} s for the \
                     commit, at {} MB/s",
                    left.as_secs(),
                    RESERVE.as_secs(),
                    REWRITE_BYTES_PER_SECOND / 1_000_000
                ),
                over,
            });
        }
        if let (ContainerTier::Deployed, Some(bytes)) =
            (tier, feed.route.container_merge_from_bytes())
        {
            budgets.push(Budget {
                bytes,
                source: format!(
                    "the feed's route.container_merge_from_gb = {}",
                    feed.route.container_merge_from_gb
                ),
                over: Over::HandedOver,
            });
        }
        budgets
    }

    /// Refuses, or hands to the container tier, a MERGE of `file` over any of `budgets` (the
    /// first it is over decides).
    pub(super) fn check_all(
        budgets: &[Budget],
        target: &TableLocation,
        file: &str,
        touched: &Touched,
    ) -> Result<()> {
        budgets
            .iter()
            .try_for_each(|budget| budget.check(target, file, touched))
    }

    /// Refuses a MERGE of `file` that would rewrite more than the budget.
    pub(super) fn check(
        &self,
        target: &TableLocation,
        file: &str,
        touched: &Touched,
    ) -> Result<()> {
        let e = touched.estimate;
        if e.bytes <= self.bytes {
            return Ok(());
        }
        let partitions = match touched.partitions {
            0 => String::new(),
            n => format!(" in {n} partitions"),
        };
        let (file, table) = (file.to_string(), target.name());
        let work = format!(
            "would read and rewrite {} data files{partitions} ({}, {} rows)",
            e.files,
            gigabytes(e.bytes),
            e.rows
        );
        let budget = format!("the budget of {} ({})", gigabytes(self.bytes), self.source);
        Err(self.over.error(file, table, work, budget))
    }
}

fn gigabytes(bytes: u64) -> String {
    format!("{:.3} GB", bytes as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_feed as feed;

    #[test]
    fn the_budget_is_the_feeds_setting_or_the_time_left_at_the_measured_rate() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let of = |settings: &str, deadline| {
            Budget::of(&feed(settings), deadline, ContainerTier::Absent, now)
        };
        assert_eq!(of("", None), vec![]);
        let [set] = &of("max_rewrite_gb = 2.5", Some(now))[..] else {
            panic!("the feed's setting alone")
        };
        assert_eq!((set.bytes, set.over), (2_500_000_000, Over::Refused));
        assert!(
            set.source.contains("max_rewrite_gb = 2.5"),
            "{}",
            set.source
        );
        let [in_time] = &of("", Some(now + Duration::from_secs(840)))[..] else {
            panic!("the time left alone")
        };
        assert_eq!(in_time.bytes, 780 * REWRITE_BYTES_PER_SECOND);
        assert!(in_time.source.contains("840 s left"), "{}", in_time.source);
        // Past the deadline, or within the reserve: nothing may be rewritten.
        assert_eq!(of("", Some(now + Duration::from_secs(30)))[0].bytes, 0);
        assert_eq!(of("", Some(now - Duration::from_secs(5)))[0].bytes, 0);
    }

    #[test]
    fn with_the_container_tier_the_functions_budgets_hand_over_and_the_feeds_limit_refuses() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let settings = "max_rewrite_gb = 50\n[feeds.route]\ncontainer_merge_from_gb = 0.5";
        let deadline = Some(now + Duration::from_secs(840));
        let budgets = Budget::of(&feed(settings), deadline, ContainerTier::Deployed, now);
        let shape: Vec<(u64, Over)> = budgets.iter().map(|b| (b.bytes, b.over)).collect();
        assert_eq!(
            shape,
            [
                (50_000_000_000, Over::Refused),
                (780 * REWRITE_BYTES_PER_SECOND, Over::HandedOver),
                (500_000_000, Over::HandedOver),
            ]
        );
        let target = TableLocation::new(url::Url::parse("file:///t").unwrap(), Default::default());
        let touching = |bytes| Touched {
            estimate: RewriteEstimate {
                files: 1,
                bytes,
                rows: 1,
            },
            partitions: 0,
        };
        let check = |bytes| Budget::check_all(&budgets, &target, "in/a.csv", &touching(bytes));
        check(400_000_000).unwrap();
        let e = check(600_000_000).unwrap_err();
        assert_eq!(e.name(), "MergeInContainer");
        assert!(
            e.to_string()
                .contains("route.container_merge_from_gb = 0.5"),
            "{e}"
        );
        assert_eq!(
            check(60_000_000_000).unwrap_err().name(),
            "TooLargeForFunction"
        );
        // The container tier itself has no deadline and no tier to hand to: the limit only.
        let own = Budget::of(&feed(settings), None, ContainerTier::Absent, now);
        assert_eq!(own.len(), 1);
        assert_eq!(own[0].over, Over::Refused);
    }

    #[test]
    fn a_merge_over_budget_is_refused_with_what_it_would_rewrite_and_why() {
        let target = TableLocation::new(
            url::Url::parse("file:///tables/orders").unwrap(),
            Default::default(),
        );
        let budget = Budget {
            bytes: 1_000_000_000,
            source: "the feed's max_rewrite_gb = 1".into(),
            over: Over::Refused,
        };
        let within = Touched {
            estimate: RewriteEstimate {
                files: 3,
                bytes: 1_000_000_000,
                rows: 10,
            },
            partitions: 2,
        };
        budget.check(&target, "in/a.csv", &within).unwrap();
        let over = Touched {
            estimate: RewriteEstimate {
                files: 40,
                bytes: 4_200_000_000,
                rows: 9_000_000,
            },
            partitions: 3,
        };
        let e = budget.check(&target, "in/a.csv", &over).unwrap_err();
        assert_eq!(e.name(), "TooLargeForFunction");
        let message = e.to_string();
        for part in [
            "in/a.csv",
            "is too large for the upsert function: it would read and rewrite 40 data files in 3 \
             partitions (4.200 GB, 9000000 rows), over the budget of 1.000 GB (the feed's \
             max_rewrite_gb = 1)",
        ] {
            assert!(message.contains(part), "{message}");
        }
    }
}
