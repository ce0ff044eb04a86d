//! Where a file splits: byte ranges of about equal size, each aligned to line starts by the
//! chunk that reads it, and the line each chunk starts on, from the newlines counted per range.
//!
//! A chunk reads the lines that start inside its byte range `[start, end)`: it skips the line
//! that began before `start` (its owner is the chunk before) and finishes the line that runs past
//! `end`. So every line is read by exactly one chunk, whichever bytes the ranges cut.

use std::io::{self, Read};

/// The byte ranges of a file of `size` bytes in chunks of about `chunk_bytes`.
pub fn byte_ranges(size: u64, chunk_bytes: u64) -> Vec<(u64, u64)> {
    let count = size.div_ceil(chunk_bytes.max(1)).max(1);
    (0..count)
        .map(|i| (size * i / count, size * (i + 1) / count))
        .collect()
}

/// The newlines of one byte range, counted (the first phase of a split stage).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RangeLines {
    /// Newline bytes in the range.
    pub newlines: u64,
    /// The range's last byte is a newline.
    pub ends_with_newline: bool,
}

/// Counts the newlines of `range`'s bytes.
pub fn count_lines(mut bytes: impl Read) -> io::Result<RangeLines> {
    let mut buffer = vec![0u8; 1 << 20];
    let mut lines = RangeLines::default();
    loop {
        let n = bytes.read(&mut buffer)?;
        if n == 0 {
            return Ok(lines);
        }
        lines.newlines += memchr::memchr_iter(b'\n', &buffer[..n]).count() as u64;
        lines.ends_with_newline = buffer[n - 1] == b'\n';
    }
}

/// The file line each chunk's first line is (1-based), from the ranges' counts: chunk `k > 0`
/// starts after the first newline at or after byte `start - 1`.
pub fn first_lines(counts: &[RangeLines]) -> Vec<u64> {
    let mut lines = Vec::with_capacity(counts.len());
    let mut newlines_before = 0u64;
    for (k, count) in counts.iter().enumerate() {
        let first = if k == 0 {
            1
        } else {
            // Newlines before byte `start - 1`, and the one that ends the skipped line.
            let last_byte_is_newline = u64::from(counts[k - 1].ends_with_newline);
            newlines_before - last_byte_is_newline + 2
        };
        lines.push(first);
        newlines_before += count.newlines;
    }
    lines
}

/// The lines that start inside one byte range, read from a stream that starts at byte
/// `start - 1` (or 0 for the first range) and may run to the file's end.
pub struct AlignedLines<R> {
    inner: R,
    /// Offset in the file of the next byte `inner` gives.
    position: u64,
    /// Still skipping the line that began before the range.
    skipping: bool,
    /// The range's last byte: the line holding it is the last one read.
    last: u64,
    done: bool,
}

impl<R: Read> AlignedLines<R> {
    /// `inner` gives the file from byte `stream_start` (`start - 1`, or 0 for the first range).
    pub fn new(inner: R, start: u64, end: u64) -> Self {
        AlignedLines {
            inner,
            position: start.saturating_sub(1),
            skipping: start > 0,
            last: end.saturating_sub(1),
            done: end <= start,
        }
    }

    /// Where the stream read from `inner` must start for a range that starts at `start`.
    pub fn stream_start(start: u64) -> u64 {
        start.saturating_sub(1)
    }
}

impl<R: Read> Read for AlignedLines<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.done || buf.is_empty() {
                return Ok(0);
            }
            let n = self.inner.read(buf)?;
            if n == 0 {
                self.done = true;
                return Ok(0);
            }
            let mut from = 0;
            if self.skipping {
                let Some(newline) = memchr::memchr(b'\n', &buf[..n]) else {
                    self.position += n as u64;
                    continue;
                };
                self.skipping = false;
                self.position += newline as u64 + 1;
                from = newline + 1;
                // The first line start is past the range's last byte: it holds no line start.
                if self.position > self.last {
                    self.done = true;
                    return Ok(0);
                }
            }
            let mut to = n;
            let past_last = self.position + (n - from) as u64 > self.last;
            if past_last {
                let last_in_buf = (self.last.saturating_sub(self.position)) as usize + from;
                if let Some(newline) = memchr::memchr(b'\n', &buf[last_in_buf.min(n)..n]) {
                    to = last_in_buf + newline + 1;
                    self.done = true;
                }
            }
            self.position += (to - from) as u64;
            buf.copy_within(from..to, 0);
            if to > from {
                return Ok(to - from);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line of `text`, read once across the chunks of every chunk size, on the line
    /// `first_lines` says.
    #[test]
    fn every_line_is_read_by_one_chunk_on_its_line() {
        let texts = [
            "a\nbb\nccc\n\ndddd\ne",
            "one line without an end",
            "\n\n\nx\n",
            "long line here\nshort\nx\ny\n",
        ];
        for text in texts {
            let bytes = text.as_bytes();
            for chunk in 1..=bytes.len() as u64 + 1 {
                let ranges = byte_ranges(bytes.len() as u64, chunk);
                let counts: Vec<RangeLines> = ranges
                    .iter()
                    .map(|&(s, e)| count_lines(&bytes[s as usize..e as usize]).unwrap())
                    .collect();
                let firsts = first_lines(&counts);
                let mut read = Vec::new();
                for (&(start, end), first) in ranges.iter().zip(&firsts) {
                    let stream = &bytes[AlignedLines::<&[u8]>::stream_start(start) as usize..];
                    // Small reads, to cross every boundary inside a read.
                    let mut aligned = AlignedLines::new(stream, start, end);
                    let mut part = Vec::new();
                    let mut one = [0u8; 2];
                    loop {
                        let n = aligned.read(&mut one).unwrap();
                        if n == 0 {
                            break;
                        }
                        part.extend_from_slice(&one[..n]);
                    }
                    let part = String::from_utf8(part).unwrap();
                    for (i, line) in part.split_inclusive('\n').enumerate() {
                        read.push((first + i as u64, line.to_string()));
                    }
                }
                let whole: Vec<(u64, String)> = text
                    .split_inclusive('\n')
                    .enumerate()
                    .map(|(i, l)| (i as u64 + 1, l.to_string()))
                    .collect();
                assert_eq!(read, whole, "{text:?} in chunks of {chunk}");
            }
        }
    }
}
