//! Checks on the decompressed bytes of a file as they stream by: the feed's [`Limits`] (a file
//! that crosses one fails with `LimitExceeded` before it can exhaust memory or disk) and, for
//! text formats, that the bytes are text at all (UTF-16, NUL bytes, a compressed or binary file
//! under a text name fail with `MalformedFile` at once, naming what the file is).

use std::fmt;
use std::io::{self, Read};

use crate::config::Limits;
use crate::error::{Error, Position};

/// A refused file, carried through the parsers as an I/O error (see [`super::io_error`]): a
/// crossed limit (`limit` names it) or bytes that are not text.
#[derive(Debug, Clone)]
pub(crate) struct Crossed {
    limit: Option<&'static str>,
    allowed: String,
    message: String,
    line: Option<u64>,
}

impl Crossed {
    fn not_text(message: String, line: u64) -> Crossed {
        Crossed {
            limit: None,
            allowed: String::new(),
            message,
            line: Some(line),
        }
    }

    pub fn into_error(self, file: &str, position: Option<Position>) -> Error {
        let position = self.line.map(Position::Line).or(position);
        match self.limit {
            Some(limit) => Error::LimitExceeded {
                file: file.to_string(),
                position,
                limit: limit.to_string(),
                allowed: self.allowed,
                message: self.message,
            },
            None => Error::malformed(file, position, self.message),
        }
    }
}

impl fmt::Display for Crossed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Crossed {}

/// Counts decompressed bytes and, for text formats, the bytes of the current line. Once a limit
/// is crossed every later read fails the same way, whichever parser reads next.
pub(crate) struct Guarded<R> {
    inner: R,
    max_bytes: u64,
    max_line_bytes: Option<u64>,
    limits: Limits,
    total: u64,
    line: u64,
    line_bytes: u64,
    crossed: Option<Crossed>,
}

impl<R: Read> Guarded<R> {
    /// `first_line`: the line the bytes start on (a chunk of a split file starts mid-file).
    pub fn new(inner: R, limits: &Limits, text: bool, first_line: u64) -> Self {
        Guarded {
            inner,
            max_bytes: limits.max_decompressed_bytes(),
            max_line_bytes: text.then(|| limits.max_line_bytes()),
            limits: limits.clone(),
            total: 0,
            line: first_line,
            line_bytes: 0,
            crossed: None,
        }
    }

    fn check(&mut self, chunk: &[u8]) -> Option<Crossed> {
        if self.max_line_bytes.is_some() {
            if let Some(refused) = self.not_text(chunk) {
                return Some(refused);
            }
        }
        self.total += chunk.len() as u64;
        if self.total > self.max_bytes {
            return Some(Crossed {
                limit: Some("max_decompressed_mb"),
                allowed: format!("{} MiB", self.limits.max_decompressed_mb),
                message: format!(
                    "the file holds more than {} MiB of data after decompression (a compression bomb?)",
                    self.limits.max_decompressed_mb
                ),
                line: None,
            });
        }
        let max_line = self.max_line_bytes?;
        // Lines wholly inside one read are shorter than the read: only the line a read continues
        // and the one it leaves open can be long.
        let first_end = memchr::memchr(b'\n', chunk);
        let open_line = match first_end {
            None => self.line_bytes + chunk.len() as u64,
            Some(first) => {
                if self.line_bytes + first as u64 > max_line {
                    return Some(self.line_too_long());
                }
                self.line += count_newlines(chunk);
                let last = memchr::memrchr(b'\n', chunk).expect("found one");
                (chunk.len() - last - 1) as u64
            }
        };
        self.line_bytes = open_line;
        (self.line_bytes > max_line).then(|| self.line_too_long())
    }

    /// What a text file must not hold: a start that says it is something else, or a NUL byte.
    fn not_text(&self, chunk: &[u8]) -> Option<Crossed> {
        // A chunk of a split file starts mid-file: only the file's own start says what it is.
        if self.total == 0 && self.line == 1 {
            if let Some(what) = binary_kind(chunk) {
                return Some(Crossed::not_text(what.to_string(), 1));
            }
        }
        let nul = memchr::memchr(0, chunk)?;
        let line = self.line + count_newlines(&chunk[..nul]);
        Some(Crossed::not_text(
            "the line holds a NUL byte: the file is binary or UTF-16, not UTF-8 text".into(),
            line,
        ))
    }

    fn line_too_long(&self) -> Crossed {
        Crossed {
            limit: Some("max_line_mb"),
            allowed: format!("{} MiB", self.limits.max_line_mb),
            message: format!(
                "the line is longer than {} MiB (is the line ending missing, or a quote unclosed?)",
                self.limits.max_line_mb
            ),
            line: Some(self.line),
        }
    }
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(crossed) = &self.crossed {
            return Err(io::Error::other(crossed.clone()));
        }
        let n = self.inner.read(buf)?;
        if let Some(crossed) = self.check(&buf[..n]) {
            self.crossed = Some(crossed.clone());
            return Err(io::Error::other(crossed));
        }
        Ok(n)
    }
}

/// The newlines in `bytes`. Every byte of a text file passes here, so it is a SIMD count
/// (memchr's), not a byte-at-a-time loop (that was 13% of a stage's CPU: docs/benchmarks.md).
pub(crate) fn count_newlines(bytes: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', bytes).count() as u64
}

/// What a file under a text name really is, from its first bytes.
fn binary_kind(start: &[u8]) -> Option<&'static str> {
    const KINDS: [(&[u8], &str); 6] = [
        (b"\xFF\xFE", "the file is UTF-16 text (it starts with a UTF-16 byte order mark); deltadrop reads UTF-8: ask for UTF-8, or convert it (iconv -f UTF-16 -t UTF-8)"),
        (b"\xFE\xFF", "the file is UTF-16 text (it starts with a UTF-16 byte order mark); deltadrop reads UTF-8: ask for UTF-8, or convert it (iconv -f UTF-16 -t UTF-8)"),
        (b"\x1F\x8B", "the file is gzip-compressed, but its name does not end in .gz"),
        (b"\x28\xB5\x2F\xFD", "the file is zstd-compressed, but its name does not end in .zst"),
        (b"PK\x03\x04", "the file is a ZIP archive (an Excel workbook?), not text"),
        (b"PAR1", "the file is Parquet, but its name has a text suffix (name it .parquet)"),
    ];
    KINDS
        .iter()
        .find(|(magic, _)| start.starts_with(magic))
        .map(|(_, what)| *what)
}

/// Fails when a file brings more columns than the feed allows.
pub(crate) fn check_columns(
    file: &str,
    limits: &Limits,
    count: usize,
    position: Option<Position>,
) -> Result<(), Error> {
    if count <= limits.max_columns {
        return Ok(());
    }
    Err(Error::LimitExceeded {
        file: file.to_string(),
        position,
        limit: "max_columns".into(),
        allowed: limits.max_columns.to_string(),
        message: format!("the file has more than {} columns", limits.max_columns),
    })
}

/// Fails when a JSON value nests deeper than the feed allows.
pub(crate) fn check_depth(
    file: &str,
    limits: &Limits,
    value: &serde_json::Value,
    position: Position,
) -> Result<(), Error> {
    fn depth(value: &serde_json::Value) -> usize {
        match value {
            serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            serde_json::Value::Object(fields) => 1 + fields.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    if depth(value) <= limits.max_nesting_depth {
        return Ok(());
    }
    Err(nesting_error(file, limits, Some(position)))
}

pub(crate) fn nesting_error(file: &str, limits: &Limits, position: Option<Position>) -> Error {
    Error::LimitExceeded {
        file: file.to_string(),
        position,
        limit: "max_nesting_depth".into(),
        allowed: limits.max_nesting_depth.to_string(),
        message: format!(
            "a value nests objects and arrays more than {} levels deep",
            limits.max_nesting_depth
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(data: &[u8], limits: &Limits) -> Result<u64, Crossed> {
        let mut guarded = Guarded::new(data, limits, true, 1);
        let mut buf = [0u8; 7];
        let mut total = 0;
        loop {
            match guarded.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n as u64,
                Err(e) => {
                    let crossed = e.into_inner().unwrap().downcast::<Crossed>().unwrap();
                    // Sticky: the next read fails the same way.
                    assert!(guarded.read(&mut buf).is_err());
                    return Err(*crossed);
                }
            }
        }
    }

    #[test]
    fn a_long_line_and_too_many_bytes_are_caught_with_the_line() {
        let limits = Limits {
            max_line_mb: 1,
            max_decompressed_mb: 3,
            ..Limits::default()
        };
        let mib = 1024 * 1024;
        let mut lines = b"a,b\n1,2\n".to_vec();
        lines.extend(std::iter::repeat_n(b'x', mib + 1));
        let crossed = read_all(&lines, &limits).unwrap_err();
        assert_eq!(
            (crossed.limit, crossed.line),
            (Some("max_line_mb"), Some(3))
        );

        // Many lines of exactly the limit pass, until the total does not.
        let mut exact = Vec::new();
        for _ in 0..2 {
            exact.extend(std::iter::repeat_n(b'y', mib));
            exact.push(b'\n');
        }
        assert_eq!(read_all(&exact, &limits).unwrap(), 2 * mib as u64 + 2);
        exact.extend(std::iter::repeat_n(b"z\n", mib).flatten());
        let crossed = read_all(&exact, &limits).unwrap_err();
        assert_eq!(crossed.limit, Some("max_decompressed_mb"));
    }

    #[test]
    fn bytes_that_are_not_text_are_named() {
        let limits = Limits::default();
        let refused = read_all(b"id,name\n1,a\n2,b\0c\n", &limits).unwrap_err();
        assert_eq!((refused.limit, refused.line), (None, Some(3)));
        assert!(refused.message.contains("NUL byte"));
        let refused = read_all(b"\x1F\x8B\x08\x00", &limits).unwrap_err();
        assert!(refused.message.contains("gzip"), "{}", refused.message);
        assert!(read_all("\u{feff}id,name\n".as_bytes(), &limits).is_ok());
    }
}
