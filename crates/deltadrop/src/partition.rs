//! A feed's partition columns (`partition_by`): columns of the file, or columns derived from a
//! date or timestamp column by day, month or year. Every partition column is a key or derived
//! from one, so that a key's partition never changes and the MERGE may match partition by
//! partition (only the partitions a file touches are read and rewritten).

#[cfg(feature = "delta")]
use std::sync::Arc;

use serde::Deserialize;

use crate::error::{Error, Result};

/// One entry of `partition_by`: `"region"` or `{ name = "order_month", from = "order_date",
/// by = "month" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawPartition")]
pub enum PartitionColumn {
    /// A column of the file, used as it is.
    Column(String),
    /// A column deltadrop computes from a date or timestamp column of the file.
    Derived(DerivedPartition),
}

/// `partition_by` entries as written, turned into [`PartitionColumn`]s with errors that say
/// what is expected (serde's untagged enums only say that nothing matched).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawPartition {
    Column(String),
    Derived(std::collections::BTreeMap<String, String>),
}

impl TryFrom<RawPartition> for PartitionColumn {
    type Error = String;

    fn try_from(raw: RawPartition) -> std::result::Result<Self, String> {
        let mut table = match raw {
            RawPartition::Column(name) => return Ok(PartitionColumn::Column(name)),
            RawPartition::Derived(table) => table,
        };
        let form =
            "expected a column name or { name = \"...\", from = \"<date or timestamp key>\", \
                    by = \"day\" | \"month\" | \"year\" }";
        let mut take = |key: &str| {
            table
                .remove(key)
                .ok_or_else(|| format!("a derived partition needs `{key}`: {form}"))
        };
        let (name, from, by) = (take("name")?, take("from")?, take("by")?);
        if let Some(unknown) = table.keys().next() {
            return Err(format!("unknown field `{unknown}`: {form}"));
        }
        let by = match by.as_str() {
            "day" => PartitionGrain::Day,
            "month" => PartitionGrain::Month,
            "year" => PartitionGrain::Year,
            other => {
                return Err(format!(
                    "by = {other:?}: expected \"day\", \"month\" or \"year\""
                ))
            }
        };
        Ok(PartitionColumn::Derived(DerivedPartition {
            name,
            from,
            by,
        }))
    }
}

/// A partition column computed from another column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedPartition {
    /// The partition column's name (not a column of the file).
    pub name: String,
    /// The date or timestamp column (a key) it is derived from.
    pub from: String,
    /// `day` (a date), `month` (`2024-05`) or `year` (an integer).
    pub by: PartitionGrain,
}

/// How a derived partition groups its dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionGrain {
    /// The date itself (the UTC date of a timestamp).
    Day,
    /// `YYYY-MM`.
    Month,
    /// The year, an integer.
    Year,
}

impl PartitionColumn {
    /// The column's name in the table.
    pub fn name(&self) -> &str {
        match self {
            PartitionColumn::Column(name) => name,
            PartitionColumn::Derived(derived) => &derived.name,
        }
    }
}

/// `region`, or `order_month (month of order_date)`.
impl std::fmt::Display for PartitionColumn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PartitionColumn::Column(name) => f.write_str(name),
            PartitionColumn::Derived(derived) => {
                let grain = match derived.by {
                    PartitionGrain::Day => "day",
                    PartitionGrain::Month => "month",
                    PartitionGrain::Year => "year",
                };
                write!(f, "{} ({grain} of {})", derived.name, derived.from)
            }
        }
    }
}

/// Checks a feed's `partition_by` against its keys: every plain column is a key, every derived
/// one comes from a key and is no column of the file; names are unique.
pub(crate) fn validate(
    partition_by: &[PartitionColumn],
    keys: &[String],
    reserved: &[&str],
    field: &dyn Fn(&str) -> String,
) -> Result<()> {
    let error = |message: String| Err(Error::config(field("partition_by"), message));
    let rule = "a key must determine its partition (otherwise a row whose partition value \
                changed would be inserted again instead of updated)";
    let mut seen: Vec<&str> = Vec::new();
    for column in partition_by {
        let name = column.name();
        if name.trim().is_empty() {
            return error("partition column names must not be empty".into());
        }
        if seen.contains(&name) {
            return error(format!("{name:?} is listed twice"));
        }
        seen.push(name);
        match column {
            PartitionColumn::Column(name) if !keys.contains(name) => {
                return error(format!(
                    "{name:?} is not one of the keys {keys:?}: {rule}; add it to keys, or \
                     derive the partition from a key column"
                ));
            }
            PartitionColumn::Derived(derived) => {
                if !keys.contains(&derived.from) {
                    return error(format!(
                        "{:?} is derived from {:?}, which is not one of the keys {keys:?}: {rule}",
                        derived.name, derived.from
                    ));
                }
                if keys.contains(&derived.name) || reserved.contains(&derived.name.as_str()) {
                    return error(format!(
                        "{:?} is computed from {:?}: it cannot also be a key, the sequence \
                         column or the change-type column",
                        derived.name, derived.from
                    ));
                }
            }
            PartitionColumn::Column(_) => {}
        }
    }
    Ok(())
}

#[cfg(feature = "delta")]
pub(crate) use compute::{derive, derived_type};

#[cfg(feature = "delta")]
mod compute {
    use super::*;
    use chrono::{Datelike, NaiveDate};
    use deltalake::arrow::array::{
        Array, ArrayRef, Date32Array, Int32Array, StringArray, TimestampMicrosecondArray,
    };
    use deltalake::arrow::compute::cast;
    use deltalake::arrow::datatypes::{DataType, TimeUnit};

    /// The type of a derived partition column.
    pub(crate) fn derived_type(grain: PartitionGrain) -> DataType {
        match grain {
            PartitionGrain::Day => DataType::Date32,
            PartitionGrain::Month => DataType::Utf8,
            PartitionGrain::Year => DataType::Int32,
        }
    }

    /// The partition values of `derived` for the values of its source column, or a message
    /// saying why that column cannot be partitioned by date.
    pub(crate) fn derive(
        derived: &DerivedPartition,
        source: &ArrayRef,
    ) -> std::result::Result<ArrayRef, String> {
        let days: Vec<Option<NaiveDate>> = match source.data_type() {
            DataType::Date32 => {
                let dates = source
                    .as_any()
                    .downcast_ref::<Date32Array>()
                    .expect("Date32");
                (0..dates.len())
                    .map(|i| dates.is_valid(i).then(|| dates.value_as_date(i)).flatten())
                    .collect()
            }
            DataType::Timestamp(..) => {
                let micros = cast(source, &DataType::Timestamp(TimeUnit::Microsecond, None))
                    .map_err(|e| e.to_string())?;
                let micros = micros
                    .as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .expect("microseconds");
                (0..micros.len())
                    .map(|i| {
                        micros
                            .is_valid(i)
                            .then(|| micros.value_as_datetime(i).map(|t| t.date()))
                            .flatten()
                    })
                    .collect()
            }
            other => {
                return Err(format!(
                    "partition column '{}' is derived from '{}', which is {}, not a date or \
                     a timestamp (set its type with column_types)",
                    derived.name,
                    derived.from,
                    crate::read::type_name(other)
                ))
            }
        };
        Ok(match derived.by {
            PartitionGrain::Day => {
                Arc::new(Date32Array::from_iter(days.iter().map(|d| {
                    d.map(|d| (d - NaiveDate::default()).num_days() as i32)
                })))
            }
            PartitionGrain::Month => Arc::new(StringArray::from_iter(
                days.iter()
                    .map(|d| d.map(|d| format!("{:04}-{:02}", d.year(), d.month()))),
            )),
            PartitionGrain::Year => Arc::new(Int32Array::from_iter(
                days.iter().map(|d| d.map(|d| d.year())),
            )),
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn derived(by: PartitionGrain) -> DerivedPartition {
            DerivedPartition {
                name: "p".into(),
                from: "d".into(),
                by,
            }
        }

        #[test]
        fn dates_and_timestamps_become_their_day_month_or_year() {
            let date = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
            let days = (date - NaiveDate::default()).num_days() as i32;
            let dates: ArrayRef = Arc::new(Date32Array::from(vec![Some(days), None]));
            let month = derive(&derived(PartitionGrain::Month), &dates).unwrap();
            let month = month.as_any().downcast_ref::<StringArray>().unwrap();
            assert_eq!((month.value(0), month.is_null(1)), ("2024-02", true));
            let year = derive(&derived(PartitionGrain::Year), &dates).unwrap();
            assert_eq!(
                year.as_any().downcast_ref::<Int32Array>().unwrap().value(0),
                2024
            );
            // 2024-02-29T23:30:00Z is still the 29th in UTC.
            let micros = (days as i64 * 86_400 + 23 * 3_600 + 1_800) * 1_000_000;
            let stamps: ArrayRef =
                Arc::new(TimestampMicrosecondArray::from(vec![micros]).with_timezone("UTC"));
            let day = derive(&derived(PartitionGrain::Day), &stamps).unwrap();
            assert_eq!(
                day.as_any().downcast_ref::<Date32Array>().unwrap().value(0),
                days
            );
        }

        #[test]
        fn a_column_that_is_no_date_cannot_be_partitioned_by_date() {
            let text: ArrayRef = Arc::new(StringArray::from(vec!["2024-01-01"]));
            let message = derive(&derived(PartitionGrain::Month), &text).unwrap_err();
            assert!(
                message.contains("'p' is derived from 'd', which is string"),
                "{message}"
            );
        }
    }
}
