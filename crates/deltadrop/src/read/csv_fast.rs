//! The fast path for CSV: arrow-csv's decoder parses whole batches straight into typed columns,
//! with none of the exact path's per-record copies. It only starts once the sample has fixed the
//! plan, and it gives up on the first batch that fails in any way (see [`super::csv`]).

use std::io::{BufRead, BufReader, Chain, Cursor, Read};
use std::sync::Arc;

use arrow_csv::reader::Decoder;
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::limits::count_newlines;
use super::text::TextBatcher;
use super::BATCH_ROWS;
use crate::config::CsvOptions;
use crate::error::{Position, Result};

/// Bytes read from the file at a time.
const READ_BUFFER_BYTES: usize = 1 << 20;

pub(super) enum FastOutcome<R> {
    /// The whole rest of the file went through the fast path.
    Finished,
    /// A batch failed: `rest` replays it and everything after it; it starts on `line`.
    Stumbled {
        rest: Chain<Cursor<Vec<u8>>, BufReader<R>>,
        line: u64,
    },
}

/// The types whose text parsing is the same function (arrow's `Parser`) in arrow-csv and in the
/// cast of the exact path, so both paths read a value alike. Other columns are decoded as text
/// and cast like on the exact path.
fn parsed_alike(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Int32 | DataType::Int64 | DataType::Float64 | DataType::Date32
    )
}

/// Whether a text value of `raw` holds a line break (only quoted fields can).
fn holds_a_line_break(raw: &deltalake::arrow::record_batch::RecordBatch) -> bool {
    use deltalake::arrow::array::{Array, StringArray};
    raw.columns().iter().any(|column| {
        column
            .as_any()
            .downcast_ref::<StringArray>()
            .is_some_and(|text| memchr::memchr(b'\n', text.values()).is_some())
    })
}

/// The decoder for the file's columns, or `None` when the fast path cannot mean the same as the
/// exact one: without null strings (arrow-csv always has some), or with a single column (where
/// the two parsers treat blank lines differently).
pub(super) fn fast_decoder(batcher: &TextBatcher<'_, '_>, options: &CsvOptions) -> Option<Decoder> {
    let plan = batcher.plan()?;
    if options.null_values.is_empty() || batcher.column_count() < 2 {
        return None;
    }
    let fields: Vec<Field> = batcher
        .columns()
        .iter()
        .map(|name| {
            let planned = plan.schema.field_with_name(name).map(|f| f.data_type());
            let data_type = match planned {
                Ok(t) if parsed_alike(t) => t.clone(),
                _ => DataType::Utf8,
            };
            Field::new(name, data_type, true)
        })
        .collect();
    decoder(Arc::new(Schema::new(fields)), options)
}

/// The decoder, with the feed's null strings (`None` if they do not make a regex).
fn decoder(schema: SchemaRef, options: &CsvOptions) -> Option<Decoder> {
    let builder = arrow_csv::ReaderBuilder::new(schema)
        .with_header(false)
        .with_delimiter(options.delimiter_byte())
        .with_quote(options.quote_byte())
        .with_batch_size(BATCH_ROWS);
    // arrow-csv reads empty fields as null unless told which strings are null.
    if options.null_values == [""] {
        return Some(builder.build_decoder());
    }
    let alternatives: Vec<String> = options
        .null_values
        .iter()
        .map(|v| regex::escape(v))
        .collect();
    let nulls = regex::Regex::new(&format!("^(?:{})$", alternatives.join("|"))).ok()?;
    Some(builder.with_null_regex(nulls).build_decoder())
}

/// Decodes `input` (which starts on `line`) into the batcher until the end of the file, or until
/// a batch fails: then hands back what must be replayed on the exact path.
pub(super) fn decode<R: Read>(
    input: R,
    mut decoder: Decoder,
    mut line: u64,
    batcher: &mut TextBatcher<'_, '_>,
) -> Result<FastOutcome<R>> {
    let mut input = BufReader::with_capacity(READ_BUFFER_BYTES, input);
    // The bytes of the batch being decoded, to replay it if it fails.
    let mut batch_bytes: Vec<u8> = Vec::new();
    loop {
        let decoded = loop {
            let buf = input
                .fill_buf()
                .map_err(|e| super::io_error(batcher.file(), Some(Position::Line(line)), e))?;
            let used = match decoder.decode(buf) {
                Ok(used) => used,
                Err(e) => break Err(e),
            };
            batch_bytes.extend_from_slice(&buf[..used]);
            input.consume(used);
            if used == 0 || decoder.capacity() == 0 {
                break decoder.flush();
            }
        };
        let conformed = match decoded {
            Ok(None) => return Ok(FastOutcome::Finished),
            Ok(Some(raw)) => {
                // Lines of rows, assuming one line per record: they only order the rows, and
                // any error is reported (or its row set aside) from the exact path, as is a
                // broken expectation in a batch where a record spans lines.
                let positions: Vec<u64> = (line..line + raw.num_rows() as u64).collect();
                let exact = count_newlines(&batch_bytes) == raw.num_rows() as u64;
                if !batcher.reads_a_chunk() {
                    batcher.conform(&raw, &positions, false, exact)
                } else if exact && !holds_a_line_break(&raw) {
                    batcher.conform(&raw, &positions, false, true)
                } else {
                    // A chunk's records must each be one line: the exact path tells a record
                    // over several lines (unsplittable) from a blank line. The counts alone can
                    // match with one (a record cut at the chunk's end, a last line without its
                    // end), so the values are searched too.
                    Err(crate::Error::internal("a record may span lines"))
                }
            }
            Err(e) => Err(crate::Error::malformed(batcher.file(), None, e.to_string())),
        };
        match conformed {
            Ok(batch) => {
                line += count_newlines(&batch_bytes);
                batch_bytes.clear();
                batcher.send(batch)?;
            }
            Err(e) => {
                tracing::debug!(line, error = %e, "fast CSV path stumbled; replaying exactly");
                return Ok(FastOutcome::Stumbled {
                    rest: Cursor::new(batch_bytes).chain(input),
                    line,
                });
            }
        }
    }
}
