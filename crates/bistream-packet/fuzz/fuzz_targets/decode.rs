//! Fuzzes the incremental decoder: arbitrary bytes, fed in pieces whose sizes come from the
//! input itself, must never panic; every packet decoded must re-encode to a packet that
//! decodes back to itself.
#![no_main]

use bistream_packet::{Decoder, Packet};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let dec = Decoder::new(1 << 16);
    let step = usize::from(split).max(1);
    let mut buf = BytesMut::new();
    for chunk in rest.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(p)) => check(&p),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});

fn check(p: &Packet) {
    let Ok(bytes) = p.to_bytes() else {
        return;
    };
    let mut b = BytesMut::from(&bytes[..]);
    let again = Decoder::new(usize::MAX).decode(&mut b);
    assert_eq!(again, Ok(Some(p.clone())));
    assert!(b.is_empty());
}
