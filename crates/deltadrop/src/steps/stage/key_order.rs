//! Whether a file's keys strictly increase from row to row, as in a sorted export. Then no key
//! repeats, and the upsert skips its duplicate-key check: a hash aggregate over every staged key,
//! whose memory grows with the file (about 1.2 GB for 24M rows, docs/benchmarks.md).

use deltalake::arrow::array::{Array, ArrayRef, AsArray};
use deltalake::arrow::datatypes::{DataType, Date32Type, Int32Type, Int64Type};
use deltalake::arrow::record_batch::RecordBatch;

/// The last key seen, owned, to compare with the next batch's first.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Key {
    Int(i64),
    Text(String),
}

/// Follows the key column batch by batch; only a single key column of an integer, date or
/// string type is followed (any other key is "not known to increase").
#[derive(Debug)]
pub(super) struct KeyOrder {
    column: Option<String>,
    last: Option<Key>,
    increasing: bool,
}

impl KeyOrder {
    /// Follows `keys` (the feed's key columns).
    pub(super) fn new(keys: &[String]) -> Self {
        let column = match keys {
            [only] => Some(only.clone()),
            _ => None,
        };
        KeyOrder {
            increasing: column.is_some(),
            column,
            last: None,
        }
    }

    /// Takes the next batch in file order.
    pub(super) fn follow(&mut self, batch: &RecordBatch) {
        if !self.increasing {
            return;
        }
        let column = self.column.as_deref().and_then(|c| batch.column_by_name(c));
        let last = match column {
            Some(column) if column.null_count() == 0 => increasing_from(column, self.last.take()),
            _ => None,
        };
        match last {
            Some(last) => self.last = last,
            None => self.increasing = false,
        }
    }

    /// True when every key was greater than the one before it.
    pub(super) fn strictly_increasing(&self) -> bool {
        self.increasing
    }
}

/// The column's last key when its keys strictly increase, starting above `previous`; `None` when
/// they do not (or the type is not followed). An empty column keeps `previous`.
fn increasing_from(column: &ArrayRef, previous: Option<Key>) -> Option<Option<Key>> {
    match column.data_type() {
        DataType::Int64 => {
            let values = column.as_primitive::<Int64Type>().values().iter().copied();
            ints(values, previous)
        }
        DataType::Int32 => {
            let values = column.as_primitive::<Int32Type>().values().iter();
            ints(values.map(|v| i64::from(*v)), previous)
        }
        DataType::Date32 => {
            let values = column.as_primitive::<Date32Type>().values().iter();
            ints(values.map(|v| i64::from(*v)), previous)
        }
        DataType::Utf8 => {
            let mut last: Option<&str> = match &previous {
                Some(Key::Text(text)) => Some(text),
                None => None,
                Some(Key::Int(_)) => return None,
            };
            for value in column.as_string::<i32>().iter().flatten() {
                if last.is_some_and(|before| before >= value) {
                    return None;
                }
                last = Some(value);
            }
            Some(last.map(|text| Key::Text(text.to_string())))
        }
        _ => None,
    }
}

fn ints(values: impl Iterator<Item = i64>, previous: Option<Key>) -> Option<Option<Key>> {
    let mut last = match previous {
        Some(Key::Int(value)) => Some(value),
        None => None,
        Some(Key::Text(_)) => return None,
    };
    for value in values {
        if last.is_some_and(|before| before >= value) {
            return None;
        }
        last = Some(value);
    }
    Some(last.map(Key::Int))
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

    #[test]
    fn several_key_columns_or_nulls_are_not_followed() {
        let mut order = KeyOrder::new(&["id".to_string(), "day".to_string()]);
        order.follow(&ints(&[1, 2]));
        assert!(!order.strictly_increasing());
        let with_null = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from(vec![Some(1), None]))],
        )
        .unwrap();
        assert!(!order_of(&[with_null]));
    }
}
