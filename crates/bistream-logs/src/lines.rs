//! Exact line reassembly from arbitrary byte chunks ([`LineSplitter`]), with no I/O.
//!
//! Chunks (WebSocket frames, HTTP body chunks) split lines anywhere, including inside a UTF-8
//! character; lines are cut only at `\n`, a `\r` right before it is dropped, and a last line
//! without `\n` is returned by [`LineSplitter::finish`]. A line longer than the size limit is
//! never buffered past the limit: its bytes are counted and discarded until its end, and it
//! comes out as [`Piece::Overlong`] with its full size.
//!
//! UTF-8 is checked once per chunk, not once per line: WebSocket text arrives already checked
//! by tungstenite ([`LineSplitter::feed_text`]), and any other chunk has its complete lines
//! checked with one `from_utf8` when fed; lines inside a checked chunk are then sliced out of
//! it as `&str` with no further check. Only a chunk holding invalid UTF-8 (or a line joined
//! from several chunks) is checked per line.
//!
//! Two ways out: [`LineSplitter::next_span`] / [`LineSplitter::next_piece`] (one piece per
//! call, every case), and [`LineSplitter::checked_run`], the fast path through a run of
//! complete lines of checked text that a limit tracker's room covers (one `memchr` search per
//! line, no per-line `Span`), which leaves every other case to `next_span`.

use std::borrow::Cow;

use bistream_core::LineRoom;
use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;

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
    /// The checked UTF-8 part of `chunk` (same buffer) from `text_at`: its complete lines
    /// (or all of it), empty when that check failed.
    text: Utf8Bytes,
    text_at: usize,
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
            text: Utf8Bytes::default(),
            text_at: 0,
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
        // One check for every line that lies wholly in the chunk: not the bytes before its
        // first `\n` when they end a line begun earlier, nor those after its last `\n` (either
        // may hold part of a character split across chunks; they are checked with their
        // line). A failure leaves `text` empty and each line is then checked on its own.
        let from = if self.partial.is_empty() && self.skipping.is_none() {
            0
        } else {
            memchr::memchr(b'\n', &chunk).map_or(chunk.len(), |nl| nl + 1)
        };
        let to = memchr::memrchr(b'\n', &chunk).map_or(0, |nl| nl + 1);
        self.text_at = from;
        self.text = if to > from {
            Utf8Bytes::try_from(chunk.slice(from..to)).unwrap_or_default()
        } else {
            Utf8Bytes::default()
        };
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
            self.text = Utf8Bytes::default();
            self.text_at = 0;
            self.pos = 0;
        }
    }

    /// As [`feed`](Self::feed), for text already known to be UTF-8 (a WebSocket text
    /// message, checked by tungstenite): its lines are never checked again.
    pub fn feed_text(&mut self, text: Utf8Bytes) {
        if self.needs_data() {
            // The text is the chunk (no second handle on it: cloning a `Bytes` made from a
            // `Vec` allocates).
            self.chunk = Buf::Text(text);
            self.text = Utf8Bytes::default();
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

    /// The fast path through a run of lines: hands `f` each complete line that lies in the
    /// current chunk's checked UTF-8 text, from the current position, in order, with nothing
    /// pending from an earlier chunk, while `room` covers it (at most `room.lines` lines,
    /// `room.bytes` bytes in all, none longer than `room.max_size`), and returns how many
    /// lines and bytes it handed out. It stops at the first line that does not fit the room
    /// (that line stays unread) or that needs [`next_span`](Self::next_span) (longer than the
    /// splitter's limit, outside the checked text, or the unfinished end of the chunk). One
    /// `memchr` search per line, no `Span` per line, no second UTF-8 check, and no check per
    /// line against `room.lines` / `room.bytes` when the rest of the text cannot pass them
    /// (it has at most as many lines as bytes). Whatever it leaves is read with `next_span`
    /// as usual; the pieces come out exactly as `next_span` alone would give them (a property
    /// test checks it).
    pub fn checked_run(&mut self, room: LineRoom, f: impl FnMut(&str)) -> (u64, u64) {
        if self.skipping.is_some() || !self.partial.is_empty() {
            return (0, 0);
        }
        let (text, base) = match &self.chunk {
            Buf::Text(t) => (t.as_str(), 0),
            Buf::Raw(_) => (self.text.as_str(), self.text_at),
        };
        let Some(from) = self.pos.checked_sub(base) else {
            return (0, 0);
        };
        let Some(rest) = text.len().checked_sub(from).filter(|&r| r > 0) else {
            return (0, 0);
        };
        let max = usize::try_from(room.max_size).map_or(self.max_line, |m| m.min(self.max_line));
        let rest = rest as u64;
        let budget = Budget {
            max,
            lines: room.lines,
            bytes: room.bytes,
        };
        let bounded = rest > room.lines || rest > room.bytes;
        // memchr's SSE2 searcher called directly, one search per line: the generic
        // `memchr_iter` adds a function-pointer dispatch and an iterator layer on every call,
        // and the AVX2 one is an `avx2` function that cannot be inlined here, so each call
        // saves and restores the loop's registers; for ~100-byte lines both cost as much as
        // the search itself. SSE2 is part of x86_64, so its searcher inlines into the loop.
        #[cfg(target_arch = "x86_64")]
        let run = match (memchr::arch::x86_64::sse2::memchr::One::new(b'\n'), bounded) {
            (Some(one), false) => cut_lines::<false>(text, from, |h| one.find(h), budget, f),
            (Some(one), true) => cut_lines::<true>(text, from, |h| one.find(h), budget, f),
            (None, false) => cut_lines::<false>(text, from, find_nl, budget, f),
            (None, true) => cut_lines::<true>(text, from, find_nl, budget, f),
        };
        #[cfg(not(target_arch = "x86_64"))]
        let run = if bounded {
            cut_lines::<true>(text, from, find_nl, budget, f)
        } else {
            cut_lines::<false>(text, from, find_nl, budget, f)
        };
        self.pos = base + run.end;
        (run.lines, run.bytes)
    }

    /// The text of a line `span` (from the last [`next_span`](Self::next_span)); borrowed
    /// unless it held invalid UTF-8 (replaced by U+FFFD) or was joined from several chunks.
    pub fn text(&self, span: Span) -> Cow<'_, str> {
        match span {
            Span::InChunk { start, end } => {
                let checked = match &self.chunk {
                    Buf::Text(t) => t.get(start..end),
                    Buf::Raw(_) => start
                        .checked_sub(self.text_at)
                        .and_then(|s| self.text.get(s..end - self.text_at)),
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

/// `memchr::memchr` for `\n`: the searcher off x86_64 (or should SSE2 be missing).
fn find_nl(haystack: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', haystack)
}

/// What [`cut_lines`] may take: lines of at most `max` bytes, at most `lines` of them and
/// `bytes` bytes in all.
#[derive(Clone, Copy)]
struct Budget {
    max: usize,
    lines: u64,
    bytes: u64,
}

/// What [`cut_lines`] took: the offset of the first line not consumed, and the lines and
/// bytes handed out.
struct Run {
    end: usize,
    lines: u64,
    bytes: u64,
}

/// The loop of [`LineSplitter::checked_run`]: `text` from `from` on, cut at each `\n`
/// (`find` gives the offset of the first `\n` in a slice), each line handed to `f` while it
/// fits `budget.max` and, when `BOUNDED`, the budget's lines and bytes (without `BOUNDED`
/// the caller knows the text cannot pass them).
fn cut_lines<const BOUNDED: bool>(
    text: &str,
    from: usize,
    find: impl Fn(&[u8]) -> Option<usize>,
    budget: Budget,
    mut f: impl FnMut(&str),
) -> Run {
    let bytes = text.as_bytes();
    let (mut start, mut lines, mut total) = (from, 0u64, 0u64);
    while let Some(nl) = bytes.get(start..).and_then(&find) {
        let at = start + nl;
        let cr = nl > 0 && bytes.get(at - 1) == Some(&b'\r');
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

#[cfg(test)]
mod tests;
