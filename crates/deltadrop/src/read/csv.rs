//! CSV with the feed's header, delimiter, quote and null strings.
//!
//! Two parsers, one meaning. The exact path (the `csv` crate: one record at a time into string
//! columns, then a cast) knows the line of every record and names the line, column and value of
//! anything wrong; it reads the header and the sample that fixes the plan. The rest of the file
//! goes through the fast path ([`super::csv_fast`]), arrow-csv's decoder. The moment a fast batch
//! fails in any way, that batch and everything after it go back through the exact path, which
//! either reports the exact error or accepts the rows: the fast path never decides what a file
//! means, it only makes good files cheaper.

use std::io::{Cursor, Read};

use deltalake::arrow::record_batch::RecordBatch;

use super::csv_fast::{self, FastOutcome};
use super::text::TextBatcher;
use super::{ReadSpec, ReadSummary};
use crate::config::CsvOptions;
use crate::error::{Error, Position, Result};

pub(crate) fn read(
    input: impl Read,
    spec: &ReadSpec<'_>,
    sink: &mut dyn FnMut(RecordBatch) -> Result<()>,
) -> Result<ReadSummary> {
    let options = &spec.feed.csv;
    // The exact reader buffers ahead; the recording lets the fast path start where it stopped.
    let mut recording = Recording {
        inner: input,
        bytes: Vec::new(),
    };
    // A chunk of a split file starts mid-file: its lines are counted from where it starts.
    let lines_before = spec.part.lines_before();
    let mut exact = ExactRecords::new(&mut recording, options, spec.file, lines_before);

    let header: Vec<String> = if options.header {
        let Some(record) = exact.next()? else {
            return Ok(ReadSummary::default()); // an empty file: nothing to load
        };
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
    let mut batcher = TextBatcher::new(spec, header, true, Position::Line, sink)?;

    // The sample: exact records until the batcher has fixed the plan.
    while batcher.plan().is_none() {
        if !exact.push_next(&mut batcher)? {
            return batcher.finish();
        }
    }
    // A chunk reads the lines of the file's sample on the exact path, in one batch, as the
    // whole read does: a value it reports (a broken expectation's) is then the one the file
    // wrote, not its typed form.
    if let Some(head) = spec.part.fixed() {
        while lines_before + exact.reader.position().line() <= head.plan.sample_last_line {
            if !exact.push_next(&mut batcher)? {
                return batcher.finish();
            }
        }
        batcher.end_batch()?;
    }
    let resume = exact.reader.position().clone();
    let resume_line = lines_before + resume.line();
    drop(exact);
    let rest =
        Cursor::new(recording.bytes.split_off(resume.byte() as usize)).chain(recording.inner);
    let Some(decoder) = csv_fast::fast_decoder(&batcher, options) else {
        return read_exact_rest(rest, resume_line, options, batcher);
    };
    match csv_fast::decode(rest, decoder, resume_line, &mut batcher)? {
        FastOutcome::Finished => batcher.finish(),
        FastOutcome::Stumbled { rest, line } => read_exact_rest(rest, line, options, batcher),
    }
}

/// Reads the rest of the file on the exact path; `line` is the line the rest starts on.
fn read_exact_rest(
    rest: impl Read,
    line: u64,
    options: &CsvOptions,
    mut batcher: TextBatcher<'_, '_>,
) -> Result<ReadSummary> {
    let mut exact = ExactRecords::new(rest, options, batcher.file(), line - 1);
    while exact.push_next(&mut batcher)? {}
    batcher.finish()
}

/// The first record of `input` as the feed's CSV writes it (a byte order mark dropped);
/// `None` for an empty file.
pub(super) fn header_text(
    input: impl Read,
    file: &str,
    options: &CsvOptions,
) -> Result<Option<String>> {
    let mut exact = ExactRecords::new(input, options, file, 0);
    Ok(exact.next()?.map(|record| {
        let names: Vec<&str> = record
            .iter()
            .map(|name| name.trim_start_matches('\u{feff}'))
            .collect();
        record_text(&names, options)
    }))
}

/// Keeps a copy of every byte read through it.
struct Recording<R> {
    inner: R,
    bytes: Vec<u8>,
}

impl<R: Read> Read for Recording<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

/// The exact path: records one at a time, each with the line it starts on.
struct ExactRecords<'f, R: Read> {
    reader: ::csv::Reader<R>,
    record: ::csv::StringRecord,
    options: &'f CsvOptions,
    file: &'f str,
    /// Lines before the input's first line (the input may start mid-file).
    line_offset: u64,
}

impl<'f, R: Read> ExactRecords<'f, R> {
    fn new(input: R, options: &'f CsvOptions, file: &'f str, line_offset: u64) -> Self {
        let reader = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(options.delimiter_byte())
            .quote(options.quote_byte())
            .from_reader(input);
        ExactRecords {
            reader,
            record: ::csv::StringRecord::new(),
            options,
            file,
            line_offset,
        }
    }

    /// The next record, or `None` at the end of the file.
    fn next(&mut self) -> Result<Option<&::csv::StringRecord>> {
        let more = self
            .reader
            .read_record(&mut self.record)
            .map_err(|e| csv_error(self.file, self.line_offset, e))?;
        Ok(more.then_some(&self.record))
    }

    /// Reads one record into the batcher; `false` at the end of the file.
    fn push_next(&mut self, batcher: &mut TextBatcher<'_, '_>) -> Result<bool> {
        let (file, options, offset) = (self.file, self.options, self.line_offset);
        let Some(record) = self.next()? else {
            return Ok(false);
        };
        let line = offset + record.position().map_or(0, |p| p.line());
        if batcher.reads_a_chunk() && record.iter().any(|field| field.contains('\n')) {
            return Err(Error::Unsplittable {
                file: file.to_string(),
                position: Some(Position::Line(line)),
                message: "a quoted field holds a line break".into(),
            });
        }
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
            let error = Error::malformed(
                file,
                Some(Position::Line(line)),
                format!(
                    "expected {} fields, found {}{hint}",
                    batcher.column_count(),
                    record.len()
                ),
            );
            let fields: Vec<&str> = record.iter().collect();
            batcher.bad_row(error, || record_text(&fields, options))?;
            return Ok(true);
        }
        let values = record
            .iter()
            .map(|text| (!options.null_values.iter().any(|n| n == text)).then_some(text));
        batcher.push(line, values)?;
        Ok(true)
    }
}

/// `fields` as one CSV record with the feed's delimiter and quote (quoted where needed), without
/// its line end.
pub(super) fn record_text<S: AsRef<[u8]>>(fields: &[S], options: &CsvOptions) -> String {
    let mut writer = ::csv::WriterBuilder::new()
        .delimiter(options.delimiter_byte())
        .quote(options.quote_byte())
        .terminator(::csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let written = writer.write_record(fields).and_then(|()| {
        writer
            .into_inner()
            .map_err(|e| ::csv::Error::from(e.into_error()))
    });
    match written {
        Ok(mut bytes) => {
            bytes.pop(); // the terminator
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Err(e) => format!("<the record could not be written as CSV: {e}>"),
    }
}

fn csv_error(file: &str, line_offset: u64, err: ::csv::Error) -> Error {
    let position = err
        .position()
        .map(|p| Position::Line(line_offset + p.line()));
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
