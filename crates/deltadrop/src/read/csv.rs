//! CSV with the feed's header, delimiter, quote and null strings. Parsed with the `csv` crate
//! so every record knows the line it starts on.

use std::io::Read;

use deltalake::arrow::record_batch::RecordBatch;

use super::text::TextBatcher;
use super::{ReadSpec, ReadSummary};
use crate::error::{Error, Position, Result};

pub(crate) fn read(
    input: impl Read,
    spec: &ReadSpec<'_>,
    sink: &mut dyn FnMut(RecordBatch) -> Result<()>,
) -> Result<ReadSummary> {
    let options = &spec.feed.csv;
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(options.delimiter_byte())
        .quote(options.quote_byte())
        .from_reader(input);
    let mut record = ::csv::StringRecord::new();
    let file = spec.file;
    let mut next = |record: &mut ::csv::StringRecord| -> Result<bool> {
        reader.read_record(record).map_err(|e| csv_error(file, e))
    };

    let header: Vec<String> = if options.header {
        if !next(&mut record)? {
            return Ok(ReadSummary::default()); // an empty file: nothing to load
        }
        record
            .iter()
            .map(|name| name.trim_start_matches('\u{feff}').trim().to_string())
            .collect()
    } else {
        match &spec.target {
            Some(target) => target.fields().iter().map(|f| f.name().clone()).collect(),
            None => Vec::new(), // named column_1.. once the first record says how many
        }
    };

    let mut batcher = TextBatcher::new(spec, header, true, Position::Line, sink);
    while next(&mut record)? {
        let line = record.position().map_or(0, |p| p.line());
        if batcher.column_count() == 0 {
            for i in 0..record.len() {
                batcher.column_index(&format!("column_{}", i + 1), line)?;
            }
        }
        if record.len() != batcher.column_count() {
            let hint = if record.iter().any(|f| f.contains('\n')) {
                " (a quoted field runs over several lines: is a quote unclosed?)"
            } else {
                ""
            };
            return Err(Error::malformed(
                file,
                Some(Position::Line(line)),
                format!(
                    "expected {} fields, found {}{hint}",
                    batcher.column_count(),
                    record.len()
                ),
            ));
        }
        let values = record
            .iter()
            .map(|text| (!options.null_values.iter().any(|n| n == text)).then_some(text));
        batcher.push(line, values)?;
    }
    batcher.finish()
}

fn csv_error(file: &str, err: ::csv::Error) -> Error {
    let position = err.position().map(|p| Position::Line(p.line()));
    match err.into_kind() {
        ::csv::ErrorKind::Io(io) => super::io_error(file, position, io),
        ::csv::ErrorKind::Utf8 { err, .. } => Error::malformed(
            file,
            position,
            format!(
                "field {} is not valid UTF-8 (byte {} of the field)",
                err.field() + 1,
                err.valid_up_to() + 1
            ),
        ),
        other => Error::malformed(file, position, format!("{other:?}")),
    }
}
