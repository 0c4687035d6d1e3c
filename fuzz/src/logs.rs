//! The log line assembler (`bistream_logs::lines::LineSplitter`) against the obvious
//! whole-input answer.

use bistream_logs::lines::{LineSplitter, Piece};
use bytes::Bytes;

/// Cuts the whole input at once: lines at `\n`, one `\r` before it dropped, lines over `max`
/// reported as overlong, a last line without `\n` kept when not empty.
fn reference(input: &[u8], max: usize) -> Vec<Piece> {
    let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    let last = parts.pop().unwrap_or_default();
    if !last.is_empty() {
        parts.push(last);
    }
    parts
        .into_iter()
        .map(|mut line| {
            if let [head @ .., b'\r'] = line {
                line = head;
            }
            if line.len() > max {
                Piece::Overlong {
                    size: line.len() as u64,
                }
            } else {
                Piece::Line {
                    text: String::from_utf8_lossy(line).into_owned(),
                    size: line.len(),
                }
            }
        })
        .collect()
}

/// Layout: byte 0 is the line limit, byte 1 the chunk size, byte 2 how often a chunk is fed
/// before the previous one is drained (exercising `feed` with an unread rest); the rest is the
/// stream. Never panics, never holds more than `max + 1` bytes of an unfinished line, and gives
/// exactly the reference pieces.
pub fn log_lines(data: &[u8]) {
    let [max, step, early, input @ ..] = data else {
        return;
    };
    let max = usize::from(*max);
    let step = usize::from(*step).max(1);
    let mut s = LineSplitter::new(max);
    let mut out = Vec::new();
    for (i, chunk) in input.chunks(step).enumerate() {
        s.feed(Bytes::copy_from_slice(chunk));
        let drain_now = *early == 0 || i % usize::from(*early) != 0;
        if drain_now {
            while let Some(p) = s.next_piece() {
                out.push(p);
            }
        } else if let Some(p) = s.next_piece() {
            // Take one piece only; the rest of this chunk stays unread for the next feed.
            out.push(p);
        }
        assert!(
            s.buffered() <= max + 1,
            "holds {} bytes with max {max}",
            s.buffered()
        );
    }
    while let Some(p) = s.finish() {
        out.push(p);
    }
    assert_eq!(out, reference(input, max));
}
