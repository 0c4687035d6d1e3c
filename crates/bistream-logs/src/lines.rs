//! Exact line reassembly from arbitrary byte chunks ([`LineSplitter`]), with no I/O.
//!
//! Chunks (WebSocket frames, HTTP body chunks) split lines anywhere, including inside a UTF-8
//! character; lines are cut only at `\n`, a `\r` right before it is dropped, and a last line
//! without `\n` is returned by [`LineSplitter::finish`]. A line longer than the size limit is
//! never buffered past the limit: its bytes are counted and discarded until its end, and it
//! comes out as [`Piece::Overlong`] with its full size.
//!
//! UTF-8 is checked per run of lines, not once per line: WebSocket text arrives already
//! checked by tungstenite ([`LineSplitter::feed_text`]); in any other chunk the fast path
//! ([`LineSplitter::checked_run`]) checks the complete lines it is about to cut with one SIMD
//! `simdutf8` call, and slices them out of that `&str` with no further check. A run that holds
//! invalid UTF-8, a line joined from several chunks, and lines read one at a time
//! ([`LineSplitter::next_span`]) are checked per line.
//!
//! Two ways out: [`LineSplitter::next_span`] / [`LineSplitter::next_piece`] (one piece per
//! call, every case), and [`LineSplitter::checked_run`], the fast path through a run of
//! complete lines of checked text that a limit tracker's room covers (one scan for the `\n`s of
//! the whole run, and no per-line `Span`), which leaves every other case to `next_span`.

use std::borrow::Cow;
use std::ops::Range;

use bistream_core::LineRoom;
use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use scan::Newlines;

/// One item cut from the byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// A complete line without its terminator (`\n` or `\r\n`). Invalid UTF-8 is replaced by
    /// U+FFFD; the size used for limits is the byte length before that replacement.
    Line {
        /// The text.
        text: String,
        /// Its size in bytes as received (without the terminator).
        size: usize,
    },
    /// A line longer than the limit: it was discarded while it streamed by.
    Overlong {
        /// Its size in bytes (without the terminator).
        size: u64,
    },
}

/// Where the next piece is ([`LineSplitter::next_span`]): a line inside the current chunk,
/// read in place with [`LineSplitter::text`], or a piece already made (a line joined from
/// several chunks, or an overlong line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Span {
    /// A complete line (without terminator) at these offsets of the current chunk.
    InChunk {
        /// Offset of its first byte.
        start: usize,
        /// Offset just past its last byte.
        end: usize,
    },
    /// A piece that does not lie in the current chunk.
    Joined(Piece),
}

impl Span {
    /// The piece's size in bytes as received (without the terminator).
    pub fn size(&self) -> usize {
        match self {
            Span::InChunk { start, end } => end - start,
            Span::Joined(Piece::Line { size, .. }) => *size,
            Span::Joined(Piece::Overlong { size }) => usize::try_from(*size).unwrap_or(usize::MAX),
        }
    }

    /// Whether it is a line longer than the limit.
    pub fn is_overlong(&self) -> bool {
        matches!(self, Span::Joined(Piece::Overlong { .. }))
    }
}

/// The chunk being cut: bytes, or text already checked as UTF-8.
#[derive(Debug)]
enum Buf {
    Raw(Bytes),
    Text(Utf8Bytes),
}

impl Buf {
    fn bytes(&self) -> &Bytes {
        match self {
            Buf::Raw(b) => b,
            Buf::Text(t) => t.as_ref(),
        }
    }
}

/// Cuts lines out of a sequence of byte chunks, holding at most `max_line + 1` bytes of an
/// unfinished line.
///
/// ```
/// use bistream_logs::lines::{LineSplitter, Piece};
///
/// let mut s = LineSplitter::new(8);
/// let mut out = Vec::new();
/// let chunks: [&[u8]; 3] = [b"a\r\nb", b"c\nthis one is too long\nd\xc3", b"\xa9"];
/// for chunk in chunks {
///     s.feed(bytes::Bytes::copy_from_slice(chunk));
///     while let Some(p) = s.next_piece() {
///         out.push(p);
///     }
/// }
/// out.extend(s.finish());
/// let line = |t: &str| Piece::Line { text: t.into(), size: t.len() };
/// assert_eq!(out, [line("a"), line("bc"), Piece::Overlong { size: 20 }, line("dé")]);
/// ```
#[derive(Debug)]
pub struct LineSplitter {
    max_line: usize,
    chunk: Buf,
    /// The part of `chunk` that holds only complete lines of its own (not the end of a line
    /// begun in an earlier chunk, nor the unfinished line at its end): what
    /// [`checked_run`](Self::checked_run) may cut.
    whole: Range<usize>,
    /// `checked_run` checks UTF-8 up to this many bytes ahead per call (see [`Window`]).
    window: usize,
    /// `checked_run` leaves the bytes before this offset to `next_span`: they are in a
    /// window that holds invalid UTF-8.
    invalid_to: usize,
    pos: usize,
    /// Bytes of the current unfinished line (only when not skipping), at most `max_line + 1`.
    partial: Vec<u8>,
    /// `Some(size so far)` while discarding an overlong line.
    skipping: Option<u64>,
    /// Whether the last byte seen of the current line was `\r` (for overlong lines).
    last_cr: bool,
}

impl LineSplitter {
    /// A splitter for lines of at most `max_line` bytes (longer ones become
    /// [`Piece::Overlong`]).
    pub fn new(max_line: usize) -> Self {
        Self {
            max_line,
            chunk: Buf::Raw(Bytes::new()),
            whole: 0..0,
            window: usize::MAX,
            invalid_to: 0,
            pos: 0,
            partial: Vec::new(),
            skipping: None,
            last_cr: false,
        }
    }

    /// Whether the last chunk fed has been fully consumed by [`next_piece`](Self::next_piece).
    pub fn needs_data(&self) -> bool {
        self.pos >= self.bytes().len()
    }

    /// The current chunk.
    fn bytes(&self) -> &Bytes {
        self.chunk.bytes()
    }

    /// Bytes of an unfinished line held right now (bounded by `max_line + 1`).
    pub fn buffered(&self) -> usize {
        self.partial.len()
    }

    /// Adds the next chunk. Normally called once [`next_piece`](Self::next_piece) returned
    /// `None`; an unread rest of the previous chunk is kept in front of the new one.
    pub fn feed(&mut self, chunk: Bytes) {
        let chunk = if self.needs_data() {
            chunk
        } else {
            let rest = &self.bytes()[self.pos..];
            let mut joined = Vec::with_capacity(rest.len() + chunk.len());
            joined.extend_from_slice(rest);
            joined.extend_from_slice(&chunk);
            Bytes::from(joined)
        };
        self.pos = 0;
        // The lines that lie wholly in the chunk: not the bytes before its first `\n` when
        // they end a line begun earlier, nor those after its last `\n` (either may hold part
        // of a character split across chunks; they are checked with their line).
        let from = if self.partial.is_empty() && self.skipping.is_none() {
            0
        } else {
            memchr::memchr(b'\n', &chunk).map_or(chunk.len(), |nl| nl + 1)
        };
        let to = memchr::memrchr(b'\n', &chunk).map_or(0, |nl| nl + 1);
        self.whole = from..to.max(from);
        self.window = usize::MAX;
        self.invalid_to = 0;
        self.chunk = Buf::Raw(chunk);
    }

    /// Lets go of the current chunk once every byte of it was read (the unfinished line at
    /// its end, if any, is already copied out): nothing of it is needed any more, and a
    /// transport that cuts its chunks out of one read buffer (tungstenite) can then reuse
    /// that buffer in place instead of allocating a new one for each read. Does nothing
    /// while part of the chunk is unread.
    pub fn release(&mut self) {
        if self.needs_data() {
            self.chunk = Buf::Raw(Bytes::new());
            self.whole = 0..0;
            self.pos = 0;
        }
    }

    /// As [`feed`](Self::feed), for text already known to be UTF-8 (a WebSocket text
    /// message, checked by tungstenite): its lines are never checked again.
    pub fn feed_text(&mut self, text: Utf8Bytes) {
        if self.needs_data() {
            // The text is the chunk (no second handle on it: cloning a `Bytes` made from a
            // `Vec` allocates).
            self.whole = 0..text.len();
            self.chunk = Buf::Text(text);
            self.pos = 0;
        } else {
            self.feed(Bytes::from(text));
        }
    }

    /// The next complete line (or overlong line) from the data fed so far, or `None` when
    /// more data is needed.
    pub fn next_piece(&mut self) -> Option<Piece> {
        let span = self.next_span()?;
        Some(match span {
            Span::InChunk { .. } => Piece::Line {
                size: span.size(),
                text: self.text(span).into_owned(),
            },
            Span::Joined(piece) => piece,
        })
    }

    /// As [`next_piece`](Self::next_piece), without copying a line that lies inside the
    /// current chunk: read its text with [`text`](Self::text) before the next call.
    pub fn next_span(&mut self) -> Option<Span> {
        let chunk = self.chunk.bytes();
        if self.pos >= chunk.len() {
            return None;
        }
        let Some(nl) = memchr::memchr(b'\n', &chunk[self.pos..]) else {
            let rest = chunk.slice(self.pos..);
            self.pos += rest.len();
            self.append(&rest);
            return None;
        };
        let start = self.pos;
        self.pos = start + nl + 1;
        if self.skipping.is_none() && self.partial.is_empty() {
            // Fast path: the whole line is inside this chunk.
            let mut end = start + nl;
            if end > start && chunk[end - 1] == b'\r' {
                end -= 1;
            }
            if end - start > self.max_line {
                return Some(Span::Joined(Piece::Overlong {
                    size: (end - start) as u64,
                }));
            }
            return Some(Span::InChunk { start, end });
        }
        let tail = chunk.slice(start..start + nl);
        self.append(&tail);
        Some(Span::Joined(self.take_line()))
    }

    /// The fast path through a run of lines: hands `f` each complete line of the current
    /// chunk from the current position on, in order, with nothing pending from an earlier
    /// chunk, while `room` covers it (at most `room.lines` lines, `room.bytes` bytes in all,
    /// none longer than `room.max_size`), and returns how many lines and bytes it handed out.
    /// It stops at the first line that does not fit the room (that line stays unread) or that
    /// needs [`next_span`](Self::next_span) (longer than the splitter's limit, the end of a
    /// line begun in an earlier chunk, the unfinished end of the chunk, or in a stretch that
    /// holds invalid UTF-8).
    ///
    /// Per run: one SIMD UTF-8 check of the lines ahead (none for WebSocket text, which
    /// tungstenite checked) and one scan for their `\n`s (64 bytes per compare); per line no
    /// `Span`, no second check, and no check against `room.lines` / `room.bytes` when the
    /// rest of the text cannot pass them (it has at most as many lines as bytes). Whatever it
    /// leaves is read with `next_span` as usual; the pieces come out exactly as `next_span`
    /// alone would give them (a property test checks it).
    pub fn checked_run(&mut self, room: LineRoom, mut f: impl FnMut(&str)) -> (u64, u64) {
        if self.skipping.is_some() || !self.partial.is_empty() {
            return (0, 0);
        }
        let max = usize::try_from(room.max_size).map_or(self.max_line, |m| m.min(self.max_line));
        let mut budget = Budget {
            max,
            lines: room.lines,
            bytes: room.bytes,
        };
        let chunk = match &self.chunk {
            Buf::Text(t) => {
                let run = run_lines(t.as_str(), self.pos, budget, &mut f);
                self.pos = run.end;
                return (run.lines, run.bytes);
            }
            Buf::Raw(chunk) => chunk,
        };
        let (mut lines, mut bytes) = (0, 0);
        let mut pos = self.pos;
        let end = self.whole.end;
        while pos >= self.whole.start && pos >= self.invalid_to && pos < end {
            let stop = window_end(chunk, pos, self.window, end);
            let Some(window) = chunk.get(pos..stop) else {
                break;
            };
            let Ok(text) = simdutf8::basic::from_utf8(window) else {
                // Left to `next_span`, line by line (invalid bytes become U+FFFD there).
                self.invalid_to = stop;
                break;
            };
            let run = run_lines(text, 0, budget, &mut f);
            pos += run.end;
            (lines, bytes) = (lines + run.lines, bytes + run.bytes);
            budget.lines -= run.lines;
            budget.bytes -= run.bytes;
            if run.end < text.len() {
                // Stopped at a line the room or the size limit refuses; it goes through
                // `next_span`. Each later call checks at most twice what this one cut (and
                // at least `Window::MIN`), so a chunk of many such lines is not checked
                // again from each of them to its end.
                self.window = run.end.saturating_mul(2).max(Window::MIN);
                break;
            }
            self.window = self.window.saturating_mul(2);
        }
        self.pos = pos;
        (lines, bytes)
    }

    /// The text of a line `span` (from the last [`next_span`](Self::next_span)); borrowed
    /// unless it held invalid UTF-8 (replaced by U+FFFD) or was joined from several chunks.
    pub fn text(&self, span: Span) -> Cow<'_, str> {
        match span {
            Span::InChunk { start, end } => {
                let checked = match &self.chunk {
                    Buf::Text(t) => t.get(start..end),
                    Buf::Raw(_) => None,
                };
                match checked {
                    Some(line) => Cow::Borrowed(line),
                    None => to_text(self.bytes().get(start..end).unwrap_or_default()),
                }
            }
            Span::Joined(Piece::Line { text, .. }) => Cow::Owned(text),
            Span::Joined(Piece::Overlong { .. }) => Cow::Borrowed(""),
        }
    }

    /// Ends the stream: the unfinished last line, if any (a last line without `\n`).
    pub fn finish(&mut self) -> Option<Piece> {
        if let Some(p) = self.next_piece() {
            return Some(p);
        }
        if self.skipping.is_none() && self.partial.is_empty() {
            return None;
        }
        Some(self.take_line())
    }

    /// Appends bytes of the current line, switching to skipping once it cannot fit.
    fn append(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.last_cr = bytes.last() == Some(&b'\r');
        if let Some(size) = &mut self.skipping {
            *size = size.saturating_add(bytes.len() as u64);
            return;
        }
        // `max_line + 1` leaves room for the `\r` of a `\r\n` ending.
        if self.partial.len() + bytes.len() > self.max_line.saturating_add(1) {
            let size = (self.partial.len() + bytes.len()) as u64;
            self.skipping = Some(size);
            self.partial = Vec::new();
            return;
        }
        self.partial.extend_from_slice(bytes);
    }

    fn take_line(&mut self) -> Piece {
        if let Some(size) = self.skipping.take() {
            let size = if self.last_cr { size - 1 } else { size };
            self.last_cr = false;
            return Piece::Overlong { size };
        }
        self.last_cr = false;
        let mut line = self.partial.as_slice();
        if let [head @ .., b'\r'] = line {
            line = head;
        }
        let piece = if line.len() > self.max_line {
            Piece::Overlong {
                size: line.len() as u64,
            }
        } else {
            Piece::Line {
                text: to_text(line).into_owned(),
                size: line.len(),
            }
        };
        self.partial.clear();
        piece
    }
}

/// What [`cut_lines`] may take: lines of at most `max` bytes, at most `lines` of them and
/// `bytes` bytes in all.
#[derive(Clone, Copy)]
struct Budget {
    max: usize,
    lines: u64,
    bytes: u64,
}

/// How far ahead [`LineSplitter::checked_run`] checks UTF-8 in one call: the whole rest of a
/// chunk's lines at first, twice as far after a call that used its whole window, and twice
/// what a call cut (at least [`MIN`](Window::MIN)) after one that stopped early.
struct Window;

impl Window {
    /// The smallest window (smaller in tests, so that short inputs reach the shrinking).
    #[cfg(not(test))]
    const MIN: usize = 256;
    #[cfg(test)]
    const MIN: usize = 4;
}

/// Where a UTF-8 check window that starts at `pos` ends: just after the last `\n` within
/// `window` bytes, or after the first `\n` past them when there is none (a longer line); at
/// most `end` (which is just after a `\n`).
fn window_end(chunk: &[u8], pos: usize, window: usize, end: usize) -> usize {
    let limit = pos.saturating_add(window);
    if limit >= end {
        return end;
    }
    if let Some(nl) = chunk
        .get(pos..limit)
        .and_then(|w| memchr::memrchr(b'\n', w))
    {
        return pos + nl + 1;
    }
    chunk
        .get(limit..end)
        .and_then(|rest| memchr::memchr(b'\n', rest))
        .map_or(end, |nl| limit + nl + 1)
}

/// [`cut_lines`] over `text` from `from`, without the per-line limit checks when the rest
/// cannot pass the budget's lines or bytes (it holds at most as many lines as bytes).
fn run_lines(text: &str, from: usize, budget: Budget, f: impl FnMut(&str)) -> Run {
    let rest = text.len().saturating_sub(from) as u64;
    if rest > budget.lines || rest > budget.bytes {
        cut_lines::<true>(text, from, budget, f)
    } else {
        cut_lines::<false>(text, from, budget, f)
    }
}

/// What [`cut_lines`] took: the offset of the first line not consumed, and the lines and
/// bytes handed out.
struct Run {
    end: usize,
    lines: u64,
    bytes: u64,
}

/// The loop of [`LineSplitter::checked_run`]: `text` from `from` on, cut at each `\n` (one
/// [`Newlines`] scan), each line handed to `f` while it fits `budget.max` and, when
/// `BOUNDED`, the budget's lines and bytes (without `BOUNDED` the caller knows the text
/// cannot pass them).
fn cut_lines<const BOUNDED: bool>(
    text: &str,
    from: usize,
    budget: Budget,
    mut f: impl FnMut(&str),
) -> Run {
    let bytes = text.as_bytes();
    let (mut start, mut lines, mut total) = (from, 0u64, 0u64);
    for at in Newlines::new(bytes, from) {
        let cr = at > start && bytes.get(at - 1) == Some(&b'\r');
        let end = at - usize::from(cr);
        let size = end - start;
        if size > budget.max {
            break;
        }
        if BOUNDED && (lines == budget.lines || size as u64 > budget.bytes - total) {
            break;
        }
        // Always a character boundary (next to an ASCII `\n`/`\r`); `get` keeps even an
        // impossible miss a fallback to the general path instead of a panic.
        let Some(line) = text.get(start..end) else {
            break;
        };
        f(line);
        lines += 1;
        total += size as u64;
        start = at + 1;
    }
    Run {
        end: start,
        lines,
        bytes: total,
    }
}

/// The line as text. Valid UTF-8 (nearly every line) takes `from_utf8`'s word-at-a-time
/// ASCII path and is borrowed; `from_utf8_lossy` alone walks every byte through `Utf8Chunks`
/// and was the largest symbol of the profile (7% of `bench logs`, more than the rest of the
/// pipeline).
fn to_text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

mod scan;
#[cfg(test)]
mod tests;
