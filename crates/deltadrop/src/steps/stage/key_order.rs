//! Whether a file's keys strictly increase from row to row, as in a sorted export. Then no key
//! repeats, and the upsert skips its duplicate-key check: a hash aggregate over every staged key,
//! whose memory grows with the file (about 1.2 GB for 24M rows, docs/benchmarks.md).

use deltalake::arrow::array::{Array, ArrayRef};
use deltalake::arrow::datatypes::DataType;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::arrow::row::{OwnedRow, RowConverter, SortField};

/// Follows the key columns batch by batch, comparing each row's keys with the row's before, as a
/// tuple (the first key, then the next): keys in Arrow's row format, whose bytes order like the
/// values. Keys of a floating-point type are not followed (equal values such as 0.0 and -0.0
/// differ in bytes), nor is a batch with a null key: either is "not known to increase".
pub(super) struct KeyOrder {
    columns: Vec<String>,
    converter: Option<RowConverter>,
    last: Option<OwnedRow>,
    increasing: bool,
}

impl KeyOrder {
    /// Follows `keys` (the feed's key columns).
    pub(super) fn new(keys: &[String]) -> Self {
        KeyOrder {
            columns: keys.to_vec(),
            converter: None,
            last: None,
            increasing: !keys.is_empty(),
        }
    }

    /// Takes the next batch in file order.
    pub(super) fn follow(&mut self, batch: &RecordBatch) {
        if self.increasing && batch.num_rows() > 0 {
            self.increasing = self.increasing_through(batch).is_some();
        }
    }

    /// `Some` when the batch's keys strictly increase from the last key seen, which it updates.
    fn increasing_through(&mut self, batch: &RecordBatch) -> Option<()> {
        let keys = self
            .columns
            .iter()
            .map(|name| batch.column_by_name(name).filter(|c| followed(c)).cloned())
            .collect::<Option<Vec<ArrayRef>>>()?;
        if self.converter.is_none() {
            let fields = keys.iter().map(|k| SortField::new(k.data_type().clone()));
            self.converter = Some(RowConverter::new(fields.collect()).ok()?);
        }
        let rows = self.converter.as_ref()?.convert_columns(&keys).ok()?;
        let mut previous = self.last.as_ref().map(|row| row.row());
        for row in rows.iter() {
            if previous.is_some_and(|before| before >= row) {
                return None;
            }
            previous = Some(row);
        }
        self.last = previous.map(|row| row.owned());
        Some(())
    }

    /// True when every key was greater than the one before it.
    pub(super) fn strictly_increasing(&self) -> bool {
        self.increasing
    }
}

/// A key column whose values are all present and equal exactly when their bytes are.
fn followed(column: &ArrayRef) -> bool {
    let exact = !matches!(
        column.data_type(),
        DataType::Float16 | DataType::Float32 | DataType::Float64
    );
    exact && column.null_count() == 0
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{Int64Array, StringArray};
    use deltalake::arrow::datatypes::{Field, Schema};

    use super::*;

    fn ints(values: &[i64]) -> RecordBatch {
        let schema = Schema::new(vec![Field::new("id", DataType::Int64, true)]);
        let column = Arc::new(Int64Array::from(values.to_vec()));
        RecordBatch::try_new(Arc::new(schema), vec![column]).unwrap()
    }

    fn texts(values: &[&str]) -> RecordBatch {
        let schema = Schema::new(vec![Field::new("id", DataType::Utf8, true)]);
        let column = Arc::new(StringArray::from(values.to_vec()));
        RecordBatch::try_new(Arc::new(schema), vec![column]).unwrap()
    }

    fn order_of(batches: &[RecordBatch]) -> bool {
        let mut order = KeyOrder::new(&["id".to_string()]);
        batches.iter().for_each(|b| order.follow(b));
        order.strictly_increasing()
    }

    #[test]
    fn increasing_keys_are_seen_across_batches_and_a_repeat_anywhere_is_not() {
        assert!(order_of(&[ints(&[1, 2, 5]), ints(&[]), ints(&[6, 9])]));
        assert!(
            !order_of(&[ints(&[1, 2, 5]), ints(&[5, 9])]),
            "repeated across batches"
        );
        assert!(!order_of(&[ints(&[1, 3, 2])]), "decreasing within a batch");
        assert!(!order_of(&[ints(&[1, 1])]));
        assert!(order_of(&[texts(&["a", "b"]), texts(&["ba", "c"])]));
        assert!(!order_of(&[texts(&["a", "b"]), texts(&["b"])]));
    }

    fn pairs(ids: &[i64], days: &[&str]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("day", DataType::Utf8, false),
        ]);
        let ids = Arc::new(Int64Array::from(ids.to_vec()));
        let days = Arc::new(StringArray::from(days.to_vec()));
        RecordBatch::try_new(Arc::new(schema), vec![ids, days]).unwrap()
    }

    fn pair_order_of(batches: &[RecordBatch]) -> bool {
        let mut order = KeyOrder::new(&["id".to_string(), "day".to_string()]);
        batches.iter().for_each(|b| order.follow(b));
        order.strictly_increasing()
    }

    #[test]
    fn several_key_columns_increase_as_a_tuple() {
        assert!(pair_order_of(&[
            pairs(&[1, 1, 2], &["b", "c", "a"]),
            pairs(&[2], &["b"])
        ]));
        assert!(
            !pair_order_of(&[pairs(&[1, 2], &["a", "a"]), pairs(&[2], &["a"])]),
            "the same pair again, across batches"
        );
        assert!(!pair_order_of(&[pairs(&[1, 1], &["b", "a"])]));
        let mut order = KeyOrder::new(&["id".to_string(), "missing".to_string()]);
        order.follow(&ints(&[1, 2]));
        assert!(!order.strictly_increasing(), "a key the batch lacks");
    }

    #[test]
    fn nulls_and_floating_point_keys_are_not_followed() {
        let floats = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                "id",
                DataType::Float64,
                false,
            )])),
            vec![Arc::new(deltalake::arrow::array::Float64Array::from(vec![
                -0.0, 0.0,
            ]))],
        )
        .unwrap();
        assert!(!order_of(&[floats]));
        let with_null = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from(vec![Some(1), None]))],
        )
        .unwrap();
        assert!(!order_of(&[with_null]));
    }
}
