//! Tests of the line splitter: framing cases, overlong lines, and property tests of both
//! ways out (`next_piece`, and `checked_run` then `next_piece`) against the whole-input split.

use super::*;
use proptest::prelude::*;

/// The obvious whole-input answer the streaming splitter must match.
fn reference(input: &[u8], max: usize) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut parts: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    let last = parts.pop().unwrap_or_default();
    let mut push = |mut line: &[u8]| {
        if let [head @ .., b'\r'] = line {
            line = head;
        }
        if line.len() > max {
            out.push(Piece::Overlong {
                size: line.len() as u64,
            });
        } else {
            out.push(Piece::Line {
                text: String::from_utf8_lossy(line).into_owned(),
                size: line.len(),
            });
        }
    };
    for p in parts {
        push(p);
    }
    if !last.is_empty() {
        push(last);
    }
    out
}

fn run(chunks: &[&[u8]], max: usize) -> (Vec<Piece>, usize) {
    run_as(chunks, max, false)
}

/// `as_text`: chunks that are valid UTF-8 go in through `feed_text` (WebSocket text).
fn run_as(chunks: &[&[u8]], max: usize, as_text: bool) -> (Vec<Piece>, usize) {
    let mut s = LineSplitter::new(max);
    let mut out = Vec::new();
    let mut peak = 0;
    for c in chunks {
        let bytes = Bytes::copy_from_slice(c);
        match Utf8Bytes::try_from(bytes.clone()) {
            Ok(text) if as_text => s.feed_text(text),
            _ => s.feed(bytes),
        }
        while let Some(p) = s.next_piece() {
            out.push(p);
        }
        peak = peak.max(s.buffered());
    }
    out.extend(s.finish());
    assert!(s.finish().is_none(), "finish is idempotent");
    (out, peak)
}

#[test]
fn every_framing_case() {
    let line = |t: &str| Piece::Line {
        text: t.into(),
        size: t.len(),
    };
    // many lines per chunk, a line across chunks, \r\n across chunks, no final \n
    let (out, _) = run(&[b"a\nb\nc", b"d\r", b"\ne\r\n", b"", b"last"], 100);
    assert_eq!(
        out,
        [line("a"), line("b"), line("cd"), line("e"), line("last")]
    );
    // UTF-8 split inside a character (é = C3 A9, 🦀 = F0 9F A6 80)
    let (out, _) = run(&[b"caf\xc3", b"\xa9 \xf0\x9f", b"\xa6", b"\x80\n"], 100);
    assert_eq!(out, [line("café 🦀")]);
    // empty lines are lines; a lone \r stays in the line
    let (out, _) = run(&[b"\n\n50%\r100%\n"], 100);
    assert_eq!(out, [line(""), line(""), line("50%\r100%")]);
    // invalid UTF-8 is replaced, its size is the raw size
    let (out, _) = run(&[b"\xff\xfe ok\n"], 100);
    assert_eq!(
        out,
        [Piece::Line {
            text: "\u{fffd}\u{fffd} ok".into(),
            size: 5
        }]
    );
    // nothing at all
    assert_eq!(run(&[], 10).0, []);
}

#[test]
fn overlong_lines_are_never_buffered_past_the_limit() {
    let big = vec![b'x'; 1 << 20];
    let mut chunks: Vec<&[u8]> = vec![b"ok\n", b"xx"];
    chunks.extend(big.chunks(4096));
    chunks.push(b"\r\nafter\n");
    let (out, peak) = run(&chunks, 16);
    assert_eq!(
        out,
        [
            Piece::Line {
                text: "ok".into(),
                size: 2
            },
            Piece::Overlong {
                size: (1 << 20) + 2
            },
            Piece::Line {
                text: "after".into(),
                size: 5
            },
        ]
    );
    assert!(peak <= 17, "held {peak} bytes");
    // exactly at the limit, with and without \r
    let (out, _) = run(&[b"0123456789abcdef\r", b"\n0123456789abcdefg\n"], 16);
    assert_eq!(
        out,
        [
            Piece::Line {
                text: "0123456789abcdef".into(),
                size: 16
            },
            Piece::Overlong { size: 17 }
        ]
    );
    // an overlong last line without \n
    assert_eq!(
        run(&[b"0123456789", b"abcdefgh"], 16).0,
        [Piece::Overlong { size: 18 }]
    );
}

#[test]
fn feeding_before_draining_keeps_the_rest() {
    let mut s = LineSplitter::new(100);
    s.feed(Bytes::from_static(b"a\nb\nc"));
    assert_eq!(
        s.next_piece(),
        Some(Piece::Line {
            text: "a".into(),
            size: 1
        })
    );
    s.feed(Bytes::from_static(b"d\n"));
    assert_eq!(
        s.next_piece(),
        Some(Piece::Line {
            text: "b".into(),
            size: 1
        })
    );
    assert_eq!(
        s.next_piece(),
        Some(Piece::Line {
            text: "cd".into(),
            size: 2
        })
    );
    assert_eq!(s.next_piece(), None);
}

/// As [`run_as`], but through [`LineSplitter::checked_run`] first, each call given the next
/// room of `rooms` (cycled; as a limit tracker's room would shrink), then `next_piece` for
/// whatever it leaves, alternating. Checks that every run stays inside its room and counts
/// exactly the lines and bytes it handed out.
fn run_fast(
    chunks: &[&[u8]],
    max: usize,
    as_text: bool,
    rooms: &[(u64, u64, u64)],
) -> (Vec<Piece>, usize) {
    let mut s = LineSplitter::new(max);
    let mut out = Vec::new();
    let mut peak = 0;
    let mut rooms = rooms.iter().cycle();
    for c in chunks {
        let bytes = Bytes::copy_from_slice(c);
        match Utf8Bytes::try_from(bytes.clone()) {
            Ok(text) if as_text => s.feed_text(text),
            _ => s.feed(bytes),
        }
        loop {
            let &(lines, bytes, max_size) = rooms.next().unwrap_or(&(u64::MAX, u64::MAX, u64::MAX));
            let room = LineRoom {
                lines,
                bytes,
                max_size,
            };
            let (mut got_lines, mut got_bytes) = (0u64, 0u64);
            let (n, total) = s.checked_run(room, |line| {
                assert!(line.len() as u64 <= max_size && line.len() <= max);
                got_lines += 1;
                got_bytes += line.len() as u64;
                out.push(Piece::Line {
                    text: line.to_owned(),
                    size: line.len(),
                });
            });
            assert_eq!((n, total), (got_lines, got_bytes));
            assert!(
                n <= lines && total <= bytes,
                "{n} lines, {total} bytes over {room:?}"
            );
            match s.next_piece() {
                Some(p) => out.push(p),
                None => break,
            }
        }
        peak = peak.max(s.buffered());
    }
    out.extend(s.finish());
    (out, peak)
}

proptest! {
    #[test]
    fn any_chunking_matches_the_whole_input(
        input in proptest::collection::vec(
            prop_oneof![Just(b'a'), Just(b'\n'), Just(b'\r'), Just(0xc3u8), Just(0xa9u8), Just(b' ')],
            0..300,
        ),
        cuts in proptest::collection::vec(0usize..300, 0..20),
        max in 0usize..12,
        rooms in proptest::collection::vec(
            (prop_oneof![0u64..6, 0u64..400, Just(u64::MAX)],
             prop_oneof![0u64..20, 0u64..400, Just(u64::MAX)],
             prop_oneof![0u64..12, Just(u64::MAX)]),
            1..6,
        ),
    ) {
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut prev = 0;
        for c in cuts {
            chunks.push(&input[prev..c]);
            prev = c;
        }
        chunks.push(&input[prev..]);
        let want = reference(&input, max);
        for as_text in [false, true] {
            let (out, peak) = run_as(&chunks, max, as_text);
            prop_assert_eq!(&out, &want);
            prop_assert!(peak <= max + 1);
            let (out, peak) = run_fast(&chunks, max, as_text, &rooms);
            prop_assert_eq!(&out, &want);
            prop_assert!(peak <= max + 1);
        }
    }
}
