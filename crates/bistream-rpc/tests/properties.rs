//! Split-buffer property of the length-delimited rpc transport (TCP, Unix sockets, stdio): a
//! stream of frames (4-byte big-endian length, then the JSON text) written in pieces of any size,
//! cut anywhere (inside a length prefix, inside a UTF-8 character), reads back as exactly the
//! frames written, each decoding to what was encoded; a frame of exactly the limit passes, one
//! byte more is `TooLarge`; a stream cut inside a frame is `Lost`, never a short frame (also
//! right after a complete length prefix).
//!
//! bistream-rpc has no proptest dependency, so the cases come from a seeded xorshift generator:
//! deterministic, 200 streams per run, the seed printed on failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use bistream_rpc::transport::{FrameReader, Inbound, LengthDelimited, Transport};
use bistream_rpc_proto::{decode, encode, FrameType};
use support::Rng;
use tokio::io::AsyncWriteExt;

const T: Duration = Duration::from_secs(10);

const ALPHABET: [&str; 10] = [
    "a", "\"", "\\", "\n", "\u{0}", "é", "😀", " ", "{", "\u{7f}",
];

fn random_text(rng: &mut Rng, max_chars: usize) -> String {
    (0..rng.below(max_chars + 1))
        .map(|_| ALPHABET[rng.below(ALPHABET.len())])
        .collect()
}

fn random_frame(rng: &mut Rng) -> String {
    let ty = FrameType::ALL[rng.below(FrameType::ALL.len())];
    let peer = format!("p{}", random_text(rng, 6));
    let data = serde_json::to_string(&random_text(rng, 300)).unwrap();
    let n = i128::from(rng.next() as i64) * if rng.below(2) == 0 { 1 } else { 1 << 60 };
    let mut out = String::new();
    encode(&mut out, ty, &peer, Some((&peer, n)), Some(&data));
    out
}

/// Writes `bytes` into a duplex in random pieces (flushing each) while the transport reads.
async fn read_back(bytes: Vec<u8>, rng: &mut Rng, max: usize) -> Vec<Inbound> {
    let (ours, theirs) = tokio::io::duplex(64);
    let (mut reader, our_writer) = LengthDelimited::new(ours, max).split();
    let mut cuts = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        // Mostly pieces of up to 200 bytes; one in four of 1 to 3 bytes.
        let span = if rng.below(4) == 0 { 3 } else { 200 };
        let len = 1 + rng.below(span);
        cuts.push(len.min(bytes.len() - at));
        at += len;
    }
    let writer = tokio::spawn(async move {
        let mut theirs = theirs;
        let mut at = 0;
        for len in cuts {
            // After TooLarge or Lost the reader stops and is dropped: writing then fails.
            if theirs.write_all(&bytes[at..at + len]).await.is_err() {
                return;
            }
            let _ = theirs.flush().await;
            at += len;
        }
        // Dropping `theirs` ends the stream.
    });
    let mut got = Vec::new();
    loop {
        let m = tokio::time::timeout(T, reader.next())
            .await
            .expect("frame in time");
        let end = !matches!(m, Inbound::Text(_));
        got.push(m);
        if end {
            break;
        }
    }
    // Both halves must go for the duplex to close and a blocked writer to fail.
    drop(reader);
    drop(our_writer);
    tokio::time::timeout(T, writer)
        .await
        .expect("writer ends")
        .unwrap();
    got
}

fn prefixed(frames: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        out.extend_from_slice(&u32::try_from(f.len()).unwrap().to_be_bytes());
        out.extend_from_slice(f.as_bytes());
    }
    out
}

#[tokio::test]
async fn any_split_reads_back_the_same_frames() {
    for seed in 1..=200u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let frames: Vec<String> = (0..1 + rng.below(8))
            .map(|_| random_frame(&mut rng))
            .collect();
        let got = read_back(prefixed(&frames), &mut rng, 1 << 20).await;
        assert_eq!(got.len(), frames.len() + 1, "seed {seed}: {got:?}");
        for (f, g) in frames.iter().zip(&got) {
            let Inbound::Text(t) = g else {
                panic!("seed {seed}: expected a frame, got {g:?}");
            };
            assert_eq!(t, f, "seed {seed}");
            assert!(decode(t).is_ok(), "seed {seed}: {t}");
        }
        assert!(
            matches!(got.last(), Some(Inbound::Closed { .. })),
            "seed {seed}: {:?}",
            got.last()
        );
    }
}

#[tokio::test]
async fn limit_is_exact_and_a_cut_frame_is_lost() {
    let mut rng = Rng(7);
    let frame = random_frame(&mut rng);
    let max = frame.len();
    // Exactly the limit: read.
    let got = read_back(prefixed(std::slice::from_ref(&frame)), &mut rng, max).await;
    assert!(
        matches!(&got[0], Inbound::Text(t) if *t == frame),
        "{got:?}"
    );
    // One byte over: TooLarge, and nothing after it is read as a frame.
    let got = read_back(prefixed(&[format!("{frame} ")]), &mut rng, max).await;
    assert!(matches!(&got[0], Inbound::TooLarge(_)), "{got:?}");
    // A stream that ends inside a frame: Lost, also right after a complete 4-byte length prefix
    // (cut 4), where tokio-util's codec alone reported a clean end (docs/RELIABILITY.md findings).
    let whole = prefixed(std::slice::from_ref(&frame));
    for cut in [1, 3, 4, 5, whole.len() / 2, whole.len() - 1] {
        let got = read_back(whole[..cut].to_vec(), &mut rng, max).await;
        assert!(matches!(&got[0], Inbound::Lost(_)), "cut {cut}: {got:?}");
    }
}
