//! The columns of one commit: the table's, then each new column in the order the files bring
//! it, and each file's staged rows cast and aligned to them.
//!
//! Applied one at a time, a later file would have been staged against the table as the earlier
//! files left it: typed by the columns they added, and under a strict schema policy checked
//! against them. Files staged at the same time saw none of that, so it is checked here, file by
//! file in batch order; a file that does not fit fails alone, with the error its own stage would
//! have given, and adds nothing.

use std::collections::HashMap;

use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::datafusion::common::{Column, ScalarValue};
use deltalake::datafusion::prelude::{cast, lit, try_cast, DataFrame, Expr};

use crate::config::{Feed, FileFormat, SchemaPolicy};
use crate::error::{Error, Position, Result};
use crate::read::{type_name, LINE_COLUMN};

/// The commit's data columns so far, and where each got its type.
pub(super) struct Columns {
    fields: Vec<Field>,
    typed_by: HashMap<String, String>,
}

/// How one staged column becomes the commit's.
#[derive(Debug, Clone)]
pub(super) struct Conversion {
    column: String,
    to: DataType,
    /// Text formats convert through the value's text, as their stage parsed the file's text
    /// into the column's type (a string column takes no conversion from a text format).
    via_text: bool,
}

/// The type a column is compared and stored as: string and binary views are plain strings and
/// binaries (the staging scan yields views; the table stores plain types).
fn plain(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        other => other.clone(),
    }
}

/// Types whose values, read from text by inference, are written back as the same text: integers
/// (no leading zeros: those stay strings) and `YYYY-MM-DD` dates.
fn canonical(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Int64 | DataType::Date32)
}

fn column(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

impl Columns {
    /// The columns of the target table (none before the first file).
    pub fn of_table(schema: Option<&Schema>) -> Columns {
        let fields = schema
            .map(|s| {
                s.fields()
                    .iter()
                    .map(|f| Field::new(f.name(), plain(f.data_type()), true))
                    .collect()
            })
            .unwrap_or_default();
        Columns {
            fields,
            typed_by: HashMap::new(),
        }
    }

    /// Admits one file's staged rows: checks them against the columns so far and adds the
    /// columns it brings; returns how its columns convert. On an error nothing is added.
    pub async fn admit(
        &mut self,
        feed: &Feed,
        file: &str,
        rows: &DataFrame,
    ) -> Result<Vec<Conversion>> {
        let format = feed.format_for(file)?;
        let text = format != FileFormat::Parquet;
        let mut added = Vec::new();
        let mut conversions = Vec::new();
        let staged: Vec<&Field> = rows
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref())
            .filter(|f| f.name() != LINE_COLUMN && !feed.is_control_column(f.name()))
            .collect();
        for field in &staged {
            let staged_type = plain(field.data_type());
            match self.fields.iter().find(|f| f.name() == field.name()) {
                Some(known) if known.data_type() == &staged_type => {}
                Some(known)
                    if text && known.data_type() == &DataType::Utf8 && !canonical(&staged_type) =>
                {
                    // Its stage typed the text by its values; written back as text it would not
                    // be the text the file holds ("2.50" read as a double is "2.5").
                    return Err(Error::SchemaMismatch {
                        file: file.to_string(),
                        message: format!(
                            "column '{}' was read as {} from this file, but it is a string in the \
                             table ({}); the file's own text cannot be recovered from the read \
                             values: replay the file once this commit has landed (it is then read \
                             against the table)",
                            field.name(),
                            type_name(&staged_type),
                            self.origin(field.name())
                        ),
                    });
                }
                Some(known) => {
                    let conversion = Conversion {
                        column: field.name().clone(),
                        to: known.data_type().clone(),
                        via_text: text && staged_type != DataType::Utf8,
                    };
                    self.check(file, format, rows, &conversion, &staged_type)
                        .await?;
                    conversions.push(conversion);
                }
                None => added.push(Field::new(field.name(), staged_type, true)),
            }
        }
        if feed.schema_policy == SchemaPolicy::Strict && !self.fields.is_empty() {
            self.check_strict(file, format, &staged, &added)?;
        }
        // Every column a table gets passes here: those of a new table, and those a file adds.
        let features = crate::athena::reader_features(&HashMap::new(), &added);
        crate::athena::guard(feed, file, &features)?;
        for field in added {
            self.typed_by.insert(field.name().clone(), file.to_string());
            self.fields.push(field);
        }
        Ok(conversions)
    }

    /// What gave `column` its type, for messages.
    fn origin(&self, column: &str) -> String {
        match self.typed_by.get(column) {
            Some(file) => format!("the type {file}, merged before it in the same commit, gave it"),
            None => "the target table's type".to_string(),
        }
    }

    /// A file's column of another type than the commit's converts only when every value does.
    async fn check(
        &self,
        file: &str,
        format: FileFormat,
        rows: &DataFrame,
        conversion: &Conversion,
        staged_type: &DataType,
    ) -> Result<()> {
        let name = &conversion.column;
        let mismatch = |detail: String| Error::SchemaMismatch {
            file: file.to_string(),
            message: format!(
                "column '{name}' is {} in this file but {} in the table ({}): {detail}",
                type_name(staged_type),
                type_name(&conversion.to),
                self.origin(name)
            ),
        };
        let converted = conversion.expression(try_cast);
        let bad = rows
            .clone()
            .filter(column(name).is_not_null().and(converted.is_null()))
            .and_then(|r| {
                r.select(vec![
                    column(LINE_COLUMN),
                    cast(column(name), DataType::Utf8),
                ])
            })
            .and_then(|r| r.sort(vec![column(LINE_COLUMN).sort(true, false)]))
            .and_then(|r| r.limit(0, Some(1)))
            .map_err(|e| mismatch(e.to_string()))?
            .collect()
            .await
            .map_err(|e| mismatch(e.to_string()))?;
        let Some(batch) = bad.iter().find(|b| b.num_rows() > 0) else {
            return Ok(());
        };
        let text = |i: usize| {
            deltalake::arrow::util::display::array_value_to_string(batch.column(i), 0)
                .unwrap_or_default()
        };
        let line: u64 = text(0).parse().unwrap_or(0);
        Err(Error::InvalidValue {
            file: file.to_string(),
            position: match format {
                FileFormat::Csv | FileFormat::Jsonl => Position::Line(line),
                FileFormat::Json | FileFormat::Parquet => Position::Record(line),
            },
            column: name.clone(),
            value: text(1),
            expected: format!("{} ({})", type_name(&conversion.to), self.origin(name)),
        })
    }

    /// Under a strict policy a file has exactly the commit's columns (JSON records may leave some
    /// out), as its stage would have checked against the table the earlier files left.
    fn check_strict(
        &self,
        file: &str,
        format: FileFormat,
        staged: &[&Field],
        added: &[Field],
    ) -> Result<()> {
        let mismatch = |message: String| {
            Err(Error::SchemaMismatch {
                file: file.to_string(),
                message,
            })
        };
        if !added.is_empty() {
            let names: Vec<&str> = added.iter().map(|f| f.name().as_str()).collect();
            return mismatch(format!(
                "new column(s) {} not in the target table (as the files merged before it in \
                 the same commit left it), and the feed's schema_policy is strict",
                names.join(", ")
            ));
        }
        let fixed_columns = matches!(format, FileFormat::Csv | FileFormat::Parquet);
        let missing: Vec<&str> = self
            .fields
            .iter()
            .map(|f| f.name().as_str())
            .filter(|name| !staged.iter().any(|f| f.name() == name))
            .collect();
        if fixed_columns && !missing.is_empty() {
            return mismatch(format!(
                "column(s) {} of the target table are missing, and the feed's schema_policy is \
                 strict",
                missing.join(", ")
            ));
        }
        Ok(())
    }

    /// A file's rows with the commit's columns so far, in order (null where the file has none),
    /// converted; then the change-type column and the line column. `plain_types`: every column
    /// as its plain type, so that several files' rows can be put together.
    pub fn align(
        &self,
        feed: &Feed,
        rows: DataFrame,
        conversions: &[Conversion],
        plain_types: bool,
    ) -> deltalake::datafusion::error::Result<DataFrame> {
        let present = |name: &str| rows.schema().field_with_unqualified_name(name).ok();
        let mut selected = Vec::new();
        for field in &self.fields {
            let name = field.name();
            let expression = match (
                present(name),
                conversions.iter().find(|c| c.column == *name),
            ) {
                (_, Some(conversion)) => conversion.expression(cast),
                (Some(staged), None) if plain_types && staged.data_type() != field.data_type() => {
                    cast(column(name), field.data_type().clone())
                }
                (Some(_), None) => column(name),
                (None, None) => cast(lit(ScalarValue::Null), field.data_type().clone()),
            };
            selected.push(expression.alias(name));
        }
        if let Some(change) = &feed.change_type {
            let flag = match present(&change.column) {
                Some(_) => cast(column(&change.column), DataType::Utf8),
                None => cast(lit(ScalarValue::Null), DataType::Utf8),
            };
            selected.push(flag.alias(&change.column));
        }
        if present(LINE_COLUMN).is_some() {
            selected.push(column(LINE_COLUMN));
        }
        rows.select(selected)
    }
}

impl Conversion {
    /// Whether the conversion may make distinct staged values equal or reorder them: a key or
    /// the sequence column then has its repeated keys resolved after it.
    pub fn touches(&self, feed: &Feed) -> bool {
        feed.keys.contains(&self.column) || feed.sequence_column.as_ref() == Some(&self.column)
    }

    /// The conversion as an expression, with `cast` or `try_cast`.
    fn expression(&self, convert: fn(Expr, DataType) -> Expr) -> Expr {
        let from = column(&self.column);
        let from = if self.via_text {
            cast(from, DataType::Utf8)
        } else {
            from
        };
        convert(from, self.to.clone())
    }
}
