//! The log line assembler (`bistream_logs::lines::LineSplitter`) against the obvious
//! whole-input answer.

use bistream_core::LineRoom;
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
/// before the previous one is drained (exercising `feed` with an unread rest), byte 3 the
/// rooms of the fast path (0: never taken; otherwise each drain alternates
/// `LineSplitter::checked_run`, with rooms derived from it that shrink and grow, and
/// `next_piece`); the rest is the stream. Never panics, never holds more than `max + 1` bytes
/// of an unfinished line, keeps every fast run inside its room and counts it exactly, and
/// gives exactly the reference pieces.
pub fn log_lines(data: &[u8]) {
    let [max, step, early, rooms, input @ ..] = data else {
        return;
    };
    let max = usize::from(*max);
    let step = usize::from(*step).max(1);
    let mut s = LineSplitter::new(max);
    let mut out = Vec::new();
    let mut calls = 0u64;
    for (i, chunk) in input.chunks(step).enumerate() {
        s.feed(Bytes::copy_from_slice(chunk));
        let drain_now = *early == 0 || i % usize::from(*early) != 0;
        loop {
            if *rooms != 0 {
                fast_run(&mut s, room(*rooms, calls, max), &mut out);
                calls += 1;
            }
            match s.next_piece() {
                Some(p) => out.push(p),
                None => break,
            }
            if !drain_now {
                // One piece only; the rest of this chunk stays unread for the next feed.
                break;
            }
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

/// The room of the `call`-th fast run: few lines, few bytes and a size limit under `max` by
/// turns, often unbounded, so runs stop at every kind of refused line.
fn room(rooms: u8, call: u64, max: usize) -> LineRoom {
    let r = u64::from(rooms).wrapping_add(call.wrapping_mul(37));
    let pick = |v: u64, of: u64| if v % of == 0 { u64::MAX } else { v % of };
    LineRoom {
        lines: pick(r, 7),
        bytes: pick(r / 7, 41),
        max_size: if r % 3 == 0 {
            (max / 2) as u64
        } else {
            u64::MAX
        },
    }
}

/// One `checked_run`: every line it hands out is a reference piece in order, and its counts
/// are those lines and stay inside `room`.
fn fast_run(s: &mut LineSplitter, room: LineRoom, out: &mut Vec<Piece>) {
    let (mut lines, mut bytes) = (0u64, 0u64);
    let (n, total) = s.checked_run(room, |line| {
        lines += 1;
        bytes += line.len() as u64;
        out.push(Piece::Line {
            text: line.to_owned(),
            size: line.len(),
        });
    });
    assert_eq!((n, total), (lines, bytes), "counts of a fast run");
    assert!(
        n <= room.lines && total <= room.bytes,
        "{n} lines, {total} bytes over {room:?}"
    );
}
