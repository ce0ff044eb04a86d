//! Collects the string values of text records (CSV, JSON) into batches. The first batch is the
//! sample that fixes the plan; every batch is conformed to it and handed to the sink.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, RecordBatch, StringArray, StringBuilder};
use deltalake::arrow::datatypes::{DataType, Field, Schema};

use super::conform::conform;
use super::infer::infer_type;
use super::limits::check_columns;
use super::part::{HeadPlan, Part};
use super::plan::{make_plan, Plan};
use super::{ReadSpec, ReadSummary, BATCH_ROWS};
use crate::error::{Error, Position, Result};

pub(crate) struct TextBatcher<'a, 's> {
    spec: &'a ReadSpec<'s>,
    columns: Vec<String>,
    index: HashMap<String, usize>,
    builders: Vec<StringBuilder>,
    positions: Vec<u64>,
    position: fn(u64) -> Position,
    /// CSV has a fixed header; JSON records may bring new keys while the sample is read.
    fixed_columns: bool,
    plan: Option<Plan>,
    rows: u64,
    sink: &'a mut dyn FnMut(RecordBatch) -> Result<()>,
}

impl<'a, 's> TextBatcher<'a, 's> {
    pub fn new(
        spec: &'a ReadSpec<'s>,
        columns: Vec<String>,
        fixed_columns: bool,
        position: fn(u64) -> Position,
        sink: &'a mut dyn FnMut(RecordBatch) -> Result<()>,
    ) -> Result<Self> {
        let at_header = (fixed_columns && !columns.is_empty()).then(|| position(1));
        check_columns(spec.file, &spec.feed.limits, columns.len(), at_header)?;
        // A chunk of a split file has the columns and the plan its file's head fixed.
        let columns = match spec.part.fixed() {
            Some(head) if columns.is_empty() || columns == head.columns => head.columns.clone(),
            Some(head) => {
                return Err(Error::Unsplittable {
                    file: spec.file.to_string(),
                    position: None,
                    message: format!(
                        "a chunk's header ({}) is not its file's ({})",
                        columns.join(", "),
                        head.columns.join(", ")
                    ),
                })
            }
            None => columns,
        };
        let mut batcher = TextBatcher {
            spec,
            columns: Vec::new(),
            index: HashMap::new(),
            builders: Vec::new(),
            positions: Vec::with_capacity(BATCH_ROWS),
            position,
            fixed_columns,
            plan: spec.part.fixed().map(|head| head.plan.clone()),
            rows: 0,
            sink,
        };
        for name in columns {
            batcher.add_column(name);
        }
        Ok(batcher)
    }

    /// The file's key, for messages.
    pub fn file(&self) -> &'s str {
        self.spec.file
    }

    /// Whether this reads a chunk of a split file, whose records must each be one line.
    pub fn reads_a_chunk(&self) -> bool {
        self.spec.part.fixed().is_some()
    }

    /// The file's columns, in file order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    pub fn column_count(&self) -> usize {
        self.columns.len()
    }

    fn add_column(&mut self, name: String) -> usize {
        let mut builder = StringBuilder::new();
        builder.append_nulls(self.positions.len());
        self.index.insert(name.clone(), self.columns.len());
        self.columns.push(name);
        self.builders.push(builder);
        self.columns.len() - 1
    }

    /// The index of a named column (JSON). A key first seen after the sample fixed the plan
    /// cannot be typed any more, so it fails the file with its line.
    pub fn column_index(&mut self, name: &str, at: u64) -> Result<usize> {
        if let Some(&i) = self.index.get(name) {
            return Ok(i);
        }
        if self.plan.is_some() {
            return Err(Error::malformed(
                self.spec.file,
                Some((self.position)(at)),
                format!(
                    "field '{name}' first appears after the first {} records that fixed the file's columns; \
                     declare it in the feed's column_types or put it in an early record",
                    self.plan.as_ref().map_or(0, |plan| plan.sample_rows)
                ),
            ));
        }
        check_columns(
            self.spec.file,
            &self.spec.feed.limits,
            self.columns.len() + 1,
            Some((self.position)(at)),
        )?;
        Ok(self.add_column(name.to_string()))
    }

    /// Appends one record: the n-th value belongs to column n; columns beyond the values are
    /// null.
    pub fn push<'v>(
        &mut self,
        at: u64,
        values: impl IntoIterator<Item = Option<&'v str>>,
    ) -> Result<()> {
        let mut values = values.into_iter();
        for builder in self.builders.iter_mut() {
            builder.append_option(values.next().flatten());
        }
        self.positions.push(at);
        let threshold = if self.plan.is_none() {
            BATCH_ROWS.max(self.spec.feed.infer_rows)
        } else {
            BATCH_ROWS
        };
        if self.positions.len() >= threshold {
            self.flush()?;
        }
        Ok(())
    }

    /// Ends the batch being collected: the next record starts a new one.
    pub fn end_batch(&mut self) -> Result<()> {
        self.flush()
    }

    fn flush(&mut self) -> Result<()> {
        if self.positions.is_empty() {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| Field::new(c, DataType::Utf8, true))
            .collect();
        let raw = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
            .map_err(|e| Error::malformed(self.spec.file, None, e.to_string()))?;
        if self.plan.is_none() {
            let sample_rows = self.spec.feed.infer_rows.min(raw.num_rows());
            let new_column_type = |name: &str| -> Result<DataType> {
                let column = raw.column_by_name(name).map(|c| c.slice(0, sample_rows));
                let strings = column
                    .as_ref()
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>());
                Ok(strings.map(infer_type).unwrap_or(DataType::Utf8))
            };
            let mut plan = make_plan(
                self.spec,
                &self.columns,
                self.fixed_columns,
                &new_column_type,
            )?;
            plan.sample_rows = raw.num_rows() as u64;
            plan.sample_last_line = self.positions.last().copied().unwrap_or(0);
            if let Part::Head(found) = &self.spec.part {
                // The head's read is done: [`super::read_head`] takes the plan and ignores the
                // error that stops the parser.
                let _ = found.set(HeadPlan {
                    plan,
                    columns: self.columns.clone(),
                });
                return Err(Error::internal(
                    "the head's read stops once the plan is fixed",
                ));
            }
            self.plan = Some(plan);
        }
        let batch = self.conform(&raw, &self.positions, true, true)?;
        self.positions.clear();
        self.send(batch)
    }

    /// The plan, once the sample fixed it.
    pub fn plan(&self) -> Option<&Plan> {
        self.plan.as_ref()
    }

    /// A raw batch in the plan's schema (once the sample fixed the plan); bad rows are set
    /// aside when `may_set_aside` and the feed rejects them; `positions_exact` says whether
    /// `positions` are the records' real lines (see [`conform`]).
    pub fn conform(
        &self,
        raw: &RecordBatch,
        positions: &[u64],
        may_set_aside: bool,
        positions_exact: bool,
    ) -> Result<RecordBatch> {
        let plan = self.plan.as_ref().expect("the sample fixes the plan first");
        conform(
            self.spec,
            plan,
            raw,
            positions,
            self.position,
            may_set_aside,
            positions_exact,
        )
    }

    /// A record that cannot be read (`error`): fails the file, or sets it aside when the feed
    /// rejects bad rows (`raw`: the record as the file wrote it).
    pub fn bad_row(&self, error: Error, raw: impl FnOnce() -> String) -> Result<()> {
        self.spec.rejects.bad_row(self.spec, error, raw)
    }

    /// Hands a conformed batch to the sink.
    pub fn send(&mut self, batch: RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        (self.sink)(batch)
    }

    pub fn finish(mut self) -> Result<ReadSummary> {
        self.flush()?;
        Ok(ReadSummary {
            rows: self.rows,
            columns: self.columns,
            new_columns: self
                .plan
                .as_ref()
                .map(|p| p.new_columns.clone())
                .unwrap_or_default(),
            ..Default::default()
        })
    }
}
