//! Several staged files of one table as one MERGE source, so that one commit ends exactly as
//! applying the files one at a time, in batch order.
//!
//! After each file's own repeated keys are resolved, a key has at most one row per file. Applying
//! those rows one after another is a fold over the key's state in the table (absent, or a row
//! with a sequence value), and [`decide`] reduces the fold to what one MERGE can do: apply one of
//! the rows (an upsert, or a delete) when the target row's sequence value is not above a
//! threshold. The MERGE then compares the target with the threshold instead of the row's own
//! sequence value ([`THRESHOLD_COLUMN`]); for a single file the two are the same.

use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array, UInt64Array,
};
use deltalake::arrow::compute::{concat_batches, take, SortOptions};
use deltalake::arrow::datatypes::{Field, Schema};
use deltalake::arrow::row::{RowConverter, SortField};
use deltalake::datafusion::common::{Column, JoinType};
use deltalake::datafusion::error::{DataFusionError, Result as DfResult};
use deltalake::datafusion::prelude::{lit, DataFrame, Expr, SessionContext};

use crate::config::Feed;

/// The sequence value a target row must not exceed for the source row to replace or delete it.
pub const THRESHOLD_COLUMN: &str = "_deltadrop_threshold";
/// Which file of the batch a row comes from (its position in arrival order).
const FILE_COLUMN: &str = "_deltadrop_file";
const DELETE_COLUMN: &str = "_deltadrop_delete";
const WINNER_PREFIX: &str = "_deltadrop_winner_";

/// The row of a key's rows (one per file, in batch order) that one MERGE applies, and the row
/// whose sequence value is the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Decision {
    pub winner: usize,
    pub threshold: usize,
}

/// Reduces a key's rows to one [`Decision`]. `sequence[i]` orders the rows (null lowest; all
/// equal without a sequence column), `delete[i]` marks change-type deletes.
///
/// Why it is exact: let M be the highest sequence value and k the first row holding it. A target
/// row above M survives every row, and so the threshold M. Any other state (absent, or a row at or
/// below M) is replaced by row k's effect when row k comes, since every earlier row is below M;
/// from there on the fold no longer depends on where it started, and the rows after k are folded
/// from row k's effect: the last row that applies is the winner (a delete leaves the key absent,
/// and then any row applies). Without a sequence column every row applies: the last one wins.
pub(super) fn decide<S: Ord>(sequence: &[S], delete: &[bool]) -> Decision {
    let mut threshold = 0;
    for i in 1..sequence.len() {
        if sequence[i] > sequence[threshold] {
            threshold = i;
        }
    }
    let mut winner = threshold;
    // The sequence value of the row the key holds; `None`: absent.
    let mut holds = (!delete[threshold]).then_some(&sequence[threshold]);
    for i in threshold + 1..sequence.len() {
        if holds.is_none_or(|held| sequence[i] >= *held) {
            winner = i;
            holds = (!delete[i]).then_some(&sequence[i]);
        }
    }
    Decision { winner, threshold }
}

/// The batch's MERGE source and what each file contributed.
pub(super) struct Combined {
    /// One row per key, with [`THRESHOLD_COLUMN`] when the feed has a sequence column.
    pub rows: DataFrame,
    /// Per file: the keys it brought.
    pub keys: Vec<u64>,
    /// Per file: the keys whose row in `rows` is its own.
    pub decided: Vec<u64>,
}

/// A single file's rows as the MERGE reads them: its sequence value is its own threshold.
pub(super) fn single(feed: &Feed, rows: DataFrame) -> DfResult<DataFrame> {
    match &feed.sequence_column {
        Some(sequence) => rows.with_column(THRESHOLD_COLUMN, column(sequence)),
        None => Ok(rows),
    }
}

/// Combines the files' rows (resolved per file, aligned to one schema, in batch order).
pub(super) async fn combine(
    ctx: &SessionContext,
    feed: &Feed,
    files: Vec<DataFrame>,
) -> DfResult<Combined> {
    let count = files.len();
    let mut tagged = files
        .into_iter()
        .enumerate()
        .map(|(i, rows)| rows.with_column(FILE_COLUMN, lit(i as u32)));
    let first = tagged
        .next()
        .ok_or_else(|| internal("a batch without files"))??;
    let all = tagged.try_fold(first, |all, rows| all.union(rows?))?;
    let data_columns: Vec<Expr> = all
        .schema()
        .fields()
        .iter()
        .filter(|f| f.name() != FILE_COLUMN)
        .map(|f| column(f.name()))
        .collect();

    let ops = operations(feed, &all).await?;
    let (winners, thresholds, keys, decided) = fold(feed, &ops, count)?;
    let take_rows = |name: &str, rows: &UInt64Array| -> DfResult<ArrayRef> {
        Ok(take(
            ops.column_by_name(name).ok_or_else(|| internal(name))?,
            rows,
            None,
        )?)
    };
    let mut fields = Vec::new();
    let mut arrays = Vec::new();
    let mut join_left = Vec::new();
    let mut join_right = Vec::new();
    for (i, name) in feed
        .keys
        .iter()
        .chain([&FILE_COLUMN.to_string()])
        .enumerate()
    {
        let array = take_rows(name, &winners)?;
        let winner_name = format!("{WINNER_PREFIX}{i}");
        fields.push(Field::new(&winner_name, array.data_type().clone(), false));
        arrays.push(array);
        join_left.push(winner_name);
        join_right.push(name.clone());
    }
    if let Some(sequence) = &feed.sequence_column {
        let array = take_rows(sequence, &thresholds)?;
        fields.push(Field::new(
            THRESHOLD_COLUMN,
            array.data_type().clone(),
            true,
        ));
        arrays.push(array);
    }
    let chosen = ctx.read_batch(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)?;
    // The chosen rows are the join's build side: one per key, smaller than the files' rows.
    let left: Vec<&str> = join_left.iter().map(String::as_str).collect();
    let right: Vec<&str> = join_right.iter().map(String::as_str).collect();
    let mut output = data_columns;
    if feed.sequence_column.is_some() {
        output.push(column(THRESHOLD_COLUMN));
    }
    let rows = chosen
        .join(all, JoinType::Inner, &left, &right, None)?
        .select(output)?;
    Ok(Combined {
        rows,
        keys,
        decided,
    })
}

/// The columns the fold needs, of every row of the batch, in one batch: keys, sequence, whether
/// the row deletes, and its file.
async fn operations(feed: &Feed, all: &DataFrame) -> DfResult<RecordBatch> {
    let mut wanted: Vec<Expr> = feed.keys.iter().map(|k| column(k)).collect();
    if let Some(sequence) = &feed.sequence_column {
        wanted.push(column(sequence));
    }
    if let Some(change) = &feed.change_type {
        let flag = column(&change.column);
        let deletes = flag
            .clone()
            .is_not_null()
            .and(flag.eq(lit(change.delete_value.clone())));
        wanted.push(deletes.alias(DELETE_COLUMN));
    }
    wanted.push(column(FILE_COLUMN));
    let projected = all.clone().select(wanted)?;
    let schema = Arc::new(projected.schema().as_arrow().clone());
    let batches = projected.collect().await?;
    Ok(concat_batches(&schema, &batches)?)
}

type Folded = (UInt64Array, UInt64Array, Vec<u64>, Vec<u64>);

/// Groups the rows by key (in file order within a key) and decides each key: the rows chosen,
/// the rows holding their thresholds, and per file the keys it brought and decided.
fn fold(feed: &Feed, ops: &RecordBatch, files: usize) -> DfResult<Folded> {
    let by_name = |name: &str| {
        ops.column_by_name(name)
            .cloned()
            .ok_or_else(|| internal(name))
    };
    let key_columns = feed
        .keys
        .iter()
        .map(|k| by_name(k))
        .collect::<DfResult<Vec<_>>>()?;
    let keys = comparable(&key_columns)?;
    let file_array = by_name(FILE_COLUMN)?;
    let file = file_array
        .as_any()
        .downcast_ref::<UInt32Array>()
        .ok_or_else(|| internal("file column type"))?;
    let sequence = match &feed.sequence_column {
        Some(name) => Some(comparable(&[by_name(name)?])?),
        None => None,
    };
    let delete_array = match feed.change_type {
        Some(_) => Some(by_name(DELETE_COLUMN)?),
        None => None,
    };
    let deletes = delete_array
        .as_ref()
        .and_then(|a| a.as_any().downcast_ref::<BooleanArray>());
    let is_delete = |row: usize| deletes.is_some_and(|d| d.is_valid(row) && d.value(row));

    let mut order: Vec<usize> = (0..ops.num_rows()).collect();
    order.sort_unstable_by(|&a, &b| {
        keys.row(a)
            .cmp(&keys.row(b))
            .then(file.value(a).cmp(&file.value(b)))
    });
    let (mut winners, mut thresholds) = (Vec::new(), Vec::new());
    let (mut brought, mut decided) = (vec![0u64; files], vec![0u64; files]);
    for group in order.chunk_by(|&a, &b| keys.row(a) == keys.row(b)) {
        let delete: Vec<bool> = group.iter().map(|&row| is_delete(row)).collect();
        let decision = match &sequence {
            Some(rows) => {
                let values: Vec<_> = group.iter().map(|&row| rows.row(row)).collect();
                decide(&values, &delete)
            }
            None => decide(&vec![(); group.len()], &delete),
        };
        for &row in group {
            brought[file.value(row) as usize] += 1;
        }
        let winner = group[decision.winner];
        decided[file.value(winner) as usize] += 1;
        winners.push(winner as u64);
        thresholds.push(group[decision.threshold] as u64);
    }
    Ok((
        UInt64Array::from(winners),
        UInt64Array::from(thresholds),
        brought,
        decided,
    ))
}

/// Rows whose byte order is the columns' order, nulls first (a null sequence value is lowest,
/// as the MERGE's `target IS NULL OR source >= target` treats it).
fn comparable(columns: &[ArrayRef]) -> DfResult<deltalake::arrow::row::Rows> {
    let options = SortOptions {
        descending: false,
        nulls_first: true,
    };
    let fields = columns
        .iter()
        .map(|c| SortField::new_with_options(c.data_type().clone(), options))
        .collect();
    Ok(RowConverter::new(fields)?.convert_columns(columns)?)
}

fn column(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

fn internal(what: &str) -> DataFusionError {
    DataFusionError::Internal(format!("combining staged files: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// The state a key is in: absent, or a row (which op wrote it, and its sequence value).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum State {
        Absent,
        Row { from: Option<usize>, sequence: i32 },
    }

    /// One row applied as one file's MERGE applies it.
    fn apply(state: State, op: usize, sequence: i32, delete: bool) -> State {
        let applies = match state {
            State::Absent => true,
            State::Row { sequence: held, .. } => sequence >= held,
        };
        match (applies, delete) {
            (false, _) => state,
            (true, true) => State::Absent,
            (true, false) => State::Row {
                from: Some(op),
                sequence,
            },
        }
    }

    /// The decision applied as the batch's one MERGE applies it.
    fn apply_decision(state: State, d: Decision, sequence: &[i32], delete: &[bool]) -> State {
        let threshold = sequence[d.threshold];
        let applies = match state {
            State::Absent => true,
            State::Row { sequence: held, .. } => threshold >= held,
        };
        match (applies, delete[d.winner]) {
            (false, _) => state,
            (true, true) => State::Absent,
            (true, false) => State::Row {
                from: Some(d.winner),
                sequence: sequence[d.winner],
            },
        }
    }

    #[test]
    fn without_a_sequence_the_last_row_wins_and_deletes_keep_their_place() {
        let units = [(), (), ()];
        assert_eq!(decide(&units, &[false, false, false]).winner, 2);
        assert_eq!(decide(&units, &[false, true, false]).winner, 2);
        assert_eq!(decide(&units, &[false, false, true]).winner, 2);
    }

    #[test]
    fn a_delete_at_the_highest_sequence_lets_a_later_lower_row_insert() {
        // One by one: the delete (6) removes the row, then the upsert (3) inserts its key again.
        let d = decide(&[6, 3], &[true, false]);
        assert_eq!(
            d,
            Decision {
                winner: 1,
                threshold: 0
            }
        );
        // A higher sequence first, a lower one later: the higher one stays.
        assert_eq!(decide(&[5, 3], &[false, false]).winner, 0);
        // Equal sequences: the later row wins, as `source >= target` lets it.
        assert_eq!(decide(&[5, 5], &[false, false]).winner, 1);
    }

    /// Every random sequence of rows, from every starting state: the one decision ends where
    /// applying the rows one at a time ends.
    #[test]
    fn one_decision_equals_the_rows_applied_one_at_a_time() {
        let mut rng = rand::thread_rng();
        for _ in 0..20_000 {
            let n = rng.gen_range(1..6);
            let sequence: Vec<i32> = (0..n).map(|_| rng.gen_range(0..5)).collect();
            let delete: Vec<bool> = (0..n).map(|_| rng.gen_bool(0.3)).collect();
            let decision = decide(&sequence, &delete);
            let mut starts = vec![State::Absent];
            starts.extend((-1..6).map(|s| State::Row {
                from: None,
                sequence: s,
            }));
            for start in starts {
                let one_by_one = (0..n).fold(start, |s, i| apply(s, i, sequence[i], delete[i]));
                let batched = apply_decision(start, decision, &sequence, &delete);
                assert_eq!(
                    batched, one_by_one,
                    "rows {sequence:?} deletes {delete:?} from {start:?}"
                );
            }
        }
    }
}
