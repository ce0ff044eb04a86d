//! Type inference for text columns the target table does not have yet.

use deltalake::arrow::array::{Array, StringArray};
use deltalake::arrow::compute::{cast_with_options, CastOptions};
use deltalake::arrow::datatypes::{DataType, TimeUnit};

/// The narrowest type every non-null sampled value casts to, in this order: long, double,
/// boolean, date, timestamp; otherwise (or with no values at all) string. Numbers with a
/// leading zero (`007`, zip codes) stay strings, since a number would lose the zero.
pub(crate) fn infer_type(sample: &StringArray) -> DataType {
    if sample.null_count() == sample.len() {
        return DataType::Utf8;
    }
    let candidates = [
        DataType::Int64,
        DataType::Float64,
        DataType::Boolean,
        DataType::Date32,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
    ];
    let numeric_with_leading_zero = sample.iter().flatten().any(has_leading_zero);
    // arrow reads "2024-01-31T10:00:00Z" as a date too, dropping the time: dates must be bare.
    let bare_dates = sample.iter().flatten().all(|v| v.len() == 10);
    for candidate in candidates {
        if numeric_with_leading_zero && candidate.is_numeric() {
            continue;
        }
        if candidate == DataType::Date32 && !bare_dates {
            continue;
        }
        if casts_cleanly(sample, &candidate) {
            return candidate;
        }
    }
    DataType::Utf8
}

fn has_leading_zero(value: &str) -> bool {
    let digits = value.strip_prefix('-').unwrap_or(value).as_bytes();
    digits.len() > 1 && digits[0] == b'0' && digits[1].is_ascii_digit()
}

fn casts_cleanly(sample: &StringArray, to: &DataType) -> bool {
    let options = CastOptions {
        safe: true,
        ..Default::default()
    };
    match cast_with_options(sample, to, &options) {
        Ok(cast) => cast.null_count() == sample.null_count(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn infer(values: &[Option<&str>]) -> DataType {
        infer_type(&StringArray::from(values.to_vec()))
    }

    #[test]
    fn infers_the_narrowest_type() {
        assert_eq!(infer(&[Some("1"), Some("-20"), None]), DataType::Int64);
        assert_eq!(infer(&[Some("1"), Some("2.5")]), DataType::Float64);
        assert_eq!(infer(&[Some("true"), Some("false")]), DataType::Boolean);
        assert_eq!(
            infer(&[Some("2024-01-31"), Some("2023-12-01")]),
            DataType::Date32
        );
        assert!(matches!(
            infer(&[Some("2024-01-31T10:00:00Z")]),
            DataType::Timestamp(..)
        ));
        assert!(matches!(
            infer(&[Some("2024-01-31"), Some("2024-01-31 10:00:00")]),
            DataType::Timestamp(..)
        ));
        assert_eq!(infer(&[Some("007"), Some("12")]), DataType::Utf8);
        assert_eq!(infer(&[Some("abc"), Some("1")]), DataType::Utf8);
        assert_eq!(infer(&[None, None]), DataType::Utf8);
    }
}
