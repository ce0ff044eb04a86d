//! JSON lines (one object per line) and JSON arrays of objects, both streamed record by record.
//! Values become strings (nested values as JSON text) and are typed like CSV fields.

use std::fmt;
use std::io::{BufRead, BufReader, Read};

use deltalake::arrow::record_batch::RecordBatch;
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::limits::{check_depth, nesting_error};
use super::text::TextBatcher;
use super::{ReadSpec, ReadSummary};
use crate::error::{Error, ErrorKind, Position, Result};

fn value_text(value: Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        nested => Some(nested.to_string()),
    }
}

fn push_object(
    batcher: &mut TextBatcher<'_, '_>,
    spec: &ReadSpec<'_>,
    position: Position,
    object: Map<String, Value>,
) -> Result<()> {
    let at = match position {
        Position::Line(n) | Position::Record(n) => n,
    };
    let mut values: Vec<Option<String>> = Vec::new();
    for (key, value) in object {
        check_depth(spec.file, &spec.feed.limits, &value, position)?;
        let index = batcher.column_index(&key, at)?;
        if values.len() <= index {
            values.resize(index + 1, None);
        }
        values[index] = value_text(value);
    }
    batcher.push(at, values.iter().map(|v| v.as_deref()))
}

pub(crate) fn read_lines(
    input: impl Read,
    spec: &ReadSpec<'_>,
    sink: &mut dyn FnMut(RecordBatch) -> Result<()>,
) -> Result<ReadSummary> {
    let mut reader = BufReader::with_capacity(1 << 16, input);
    let mut batcher = TextBatcher::new(spec, Vec::new(), false, Position::Line, sink)?;
    let mut line = Vec::new();
    // A chunk of a split file starts mid-file: its lines are counted from where it starts.
    let mut number = spec.part.lines_before();
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| super::io_error(spec.file, Some(Position::Line(number + 1)), e))?;
        if read == 0 {
            break;
        }
        number += 1;
        if number == 1 && line.starts_with(UTF8_BOM) {
            line.drain(..UTF8_BOM.len());
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let object: Map<String, Value> = match serde_json::from_slice(&line) {
            Ok(object) => object,
            Err(e) => {
                let error = line_error(spec, number, &e);
                // A line of text that is not an object can be set aside; bytes that are not
                // text, or a nesting limit crossed, fail the file.
                match std::str::from_utf8(&line) {
                    Ok(text) if error.kind() == ErrorKind::MalformedFile => {
                        batcher.bad_row(error, || text.trim_end().to_string())?;
                        continue;
                    }
                    _ => return Err(error),
                }
            }
        };
        push_object(&mut batcher, spec, Position::Line(number), object)?;
    }
    batcher.finish()
}

/// Why line `number` of a JSON lines file is not a JSON object.
fn line_error(spec: &ReadSpec<'_>, number: u64, e: &serde_json::Error) -> Error {
    if e.is_eof() {
        return Error::malformed(
            spec.file,
            Some(Position::Line(number)),
            "the JSON value does not end on its line (JSON lines holds one object per \
             line; a pretty-printed file is JSON: name it .json)",
        );
    }
    json_error(
        spec,
        Position::Line(number),
        e,
        " (expected one JSON object per line)",
    )
}

/// A parse error at `position`; serde_json's own depth limit counts as the feed's.
fn json_error(spec: &ReadSpec<'_>, position: Position, e: &serde_json::Error, hint: &str) -> Error {
    let message = strip_location(e);
    if message == "recursion limit exceeded" {
        return nesting_error(spec.file, &spec.feed.limits, Some(position));
    }
    Error::malformed(
        spec.file,
        Some(position),
        format!("column {}: {message}{hint}", e.column()),
    )
}

/// serde_json appends " at line L column C"; we report the position ourselves.
fn strip_location(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

pub(crate) fn read_array(
    input: impl Read,
    spec: &ReadSpec<'_>,
    sink: &mut dyn FnMut(RecordBatch) -> Result<()>,
) -> Result<ReadSummary> {
    let mut input = BufReader::with_capacity(1 << 16, input);
    skip_byte_order_mark(&mut input).map_err(|e| super::io_error(spec.file, None, e))?;
    if only_whitespace_left(&mut input).map_err(|e| super::io_error(spec.file, None, e))? {
        return Ok(ReadSummary::default()); // an empty file
    }
    let mut batcher = TextBatcher::new(spec, Vec::new(), false, Position::Record, sink)?;
    let mut de = serde_json::Deserializer::from_reader(input);
    let mut failure = None;
    let outcome = ArraySeed {
        batcher: &mut batcher,
        spec,
        failure: &mut failure,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    if let Some(error) = failure {
        return Err(error);
    }
    match outcome {
        Ok(()) => batcher.finish(),
        Err(e) if e.is_io() => Err(super::io_error(
            spec.file,
            Some(Position::Line(e.line() as u64)),
            e.into(),
        )),
        Err(e) => Err(json_error(spec, Position::Line(e.line() as u64), &e, "")),
    }
}

/// Streams the elements of a top-level array into the batcher without holding the array.
struct ArraySeed<'b, 'a, 's> {
    batcher: &'b mut TextBatcher<'a, 's>,
    spec: &'b ReadSpec<'s>,
    failure: &'b mut Option<Error>,
}

impl<'de> DeserializeSeed<'de> for ArraySeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ArraySeed<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut record = 0u64;
        while let Some(object) = seq.next_element::<Map<String, Value>>()? {
            record += 1;
            if let Err(e) = push_object(self.batcher, self.spec, Position::Record(record), object) {
                *self.failure = Some(e);
                return Err(de::Error::custom("stopped"));
            }
        }
        Ok(())
    }
}

/// The UTF-8 byte order mark some producers (Excel, .NET) put before the text.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

fn skip_byte_order_mark(input: &mut impl BufRead) -> std::io::Result<()> {
    if input.fill_buf()?.starts_with(UTF8_BOM) {
        input.consume(UTF8_BOM.len());
    }
    Ok(())
}

/// Skips leading whitespace; true when nothing else is left.
fn only_whitespace_left(input: &mut impl BufRead) -> std::io::Result<bool> {
    loop {
        let buffer = input.fill_buf()?;
        if buffer.is_empty() {
            return Ok(true);
        }
        let skip = buffer
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
        let rest = buffer.len() - skip;
        input.consume(skip);
        if rest > 0 {
            return Ok(false);
        }
    }
}
