//! Decoder tests: every frame shape we accept, and hostile input, each refused with the RFC
//! 6455 close code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const KEY: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut v = Vec::new();
    encode(&mut v, Opcode::Text, payload, mask);
    v[0] = if fin { 0x80 } else { 0 } | opcode;
    v
}

/// Decodes every frame of `wire` as `role`; returns the messages (kind, payload) or the error.
fn all(role: Role, max: usize, mut wire: Vec<u8>) -> Result<Vec<(String, Vec<u8>)>, WsError> {
    let mut d = Decoder::new(role, max);
    let mut out = Vec::new();
    loop {
        let end = match d.decode(&mut wire)? {
            Step::NeedMore => return Ok(out),
            Step::Frame(f) => {
                out.push((format!("{:?}", f.kind), wire[f.start..f.end].to_vec()));
                f.end
            }
            Step::Fragment { end } => end,
            Step::Assembled { text, data, end } => {
                out.push((
                    if text {
                        "Assembled text"
                    } else {
                        "Assembled binary"
                    }
                    .into(),
                    data,
                ));
                end
            }
            Step::Close { code, reason, end } => {
                out.push((format!("Close {code:?}"), reason.into_bytes()));
                end
            }
        };
        wire.drain(..end);
    }
}

fn code(r: Result<Vec<(String, Vec<u8>)>, WsError>) -> u16 {
    r.expect_err("accepted").code
}

#[test]
fn every_length_form_round_trips_both_roles() {
    for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        for (role, mask) in [(Role::Client, None), (Role::Server, Some(KEY))] {
            let mut wire = Vec::new();
            encode(&mut wire, Opcode::Binary, &payload, mask);
            // Every prefix is "need more"; the whole is one frame.
            for cut in [0, 1, 2, 3, 9, wire.len() - 1] {
                if cut < wire.len() {
                    let mut part = wire[..cut].to_vec();
                    let step = Decoder::new(role, 1 << 20).decode(&mut part).unwrap();
                    assert_eq!(step, Step::NeedMore, "len {len} cut {cut}");
                }
            }
            let got = all(role, 1 << 20, wire).unwrap();
            assert_eq!(got, vec![("Binary".to_string(), payload.clone())]);
        }
    }
}

#[test]
fn fragments_with_control_frames_between_them_reassemble() {
    let mut wire = frame(false, 1, "hé".as_bytes(), None);
    wire.extend(frame(true, 9, b"p", None));
    wire.extend(frame(false, 0, "llo ".as_bytes(), None));
    wire.extend(frame(true, 10, b"", None));
    // A multi-byte character split across fragments is fine.
    let w = "wörld".as_bytes();
    wire.extend(frame(false, 0, &w[..2], None));
    wire.extend(frame(true, 0, &w[2..], None));
    let got = all(Role::Client, 1 << 20, wire).unwrap();
    assert_eq!(
        got,
        vec![
            ("Ping".to_string(), b"p".to_vec()),
            ("Pong".to_string(), Vec::new()),
            (
                "Assembled text".to_string(),
                "héllo wörld".as_bytes().to_vec()
            ),
        ]
    );
}

#[test]
fn close_frames_carry_code_and_reason() {
    let mut wire = Vec::new();
    encode(
        &mut wire,
        Opcode::Close,
        &close_payload(1001, "going away"),
        None,
    );
    encode(&mut wire, Opcode::Close, &[], None);
    let got = all(Role::Client, 100, wire).unwrap();
    assert_eq!(
        got[0],
        ("Close Some(1001)".to_string(), b"going away".to_vec())
    );
    assert_eq!(got[1], ("Close None".to_string(), Vec::new()));
    // A long reason is cut at a character boundary to fit 125 bytes.
    let p = close_payload(1000, &"é".repeat(100));
    assert!(p.len() <= 125);
    assert!(std::str::from_utf8(&p[2..]).is_ok());
}

#[test]
fn hostile_input_gets_the_rfc_close_code() {
    let c = Role::Client;
    // Reserved bits (each of the three).
    for rsv in [0x40, 0x20, 0x10] {
        let mut f = frame(true, 1, b"x", None);
        f[0] |= rsv;
        assert_eq!(code(all(c, 100, f)), PROTOCOL_ERROR);
    }
    // Unknown opcodes (data 3-7, control 11-15).
    for op in [3, 4, 5, 6, 7, 11, 12, 13, 14, 15] {
        assert_eq!(
            code(all(c, 100, frame(true, op, b"", None))),
            PROTOCOL_ERROR
        );
    }
    // A masked frame from a server; an unmasked one from a client.
    assert_eq!(
        code(all(c, 100, frame(true, 1, b"x", Some(KEY)))),
        PROTOCOL_ERROR
    );
    assert_eq!(
        code(all(Role::Server, 100, frame(true, 1, b"x", None))),
        PROTOCOL_ERROR
    );
    // Control frames over 125 bytes, or fragmented.
    assert_eq!(
        code(all(c, 1000, frame(true, 9, &[0; 126], None))),
        PROTOCOL_ERROR
    );
    assert_eq!(
        code(all(c, 1000, frame(false, 9, b"", None))),
        PROTOCOL_ERROR
    );
    assert_eq!(
        code(all(c, 1000, frame(false, 8, b"", None))),
        PROTOCOL_ERROR
    );
    // 64-bit length with the top bit set (refused from the header alone).
    let mut f = vec![0x82, 127];
    f.extend_from_slice(&(1u64 << 63 | 5).to_be_bytes());
    assert_eq!(code(all(c, usize::MAX, f)), PROTOCOL_ERROR);
    // Oversize lengths: refused from the header, before the payload arrives.
    let mut f = vec![0x82, 127];
    f.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
    assert_eq!(code(all(c, 1 << 20, f)), MESSAGE_TOO_BIG);
    assert_eq!(
        code(all(c, 100, frame(true, 2, &[0; 101], None))),
        MESSAGE_TOO_BIG
    );
    // ... and across fragments.
    let mut f = frame(false, 2, &[0; 60], None);
    f.extend(frame(true, 0, &[0; 41], None));
    assert_eq!(code(all(c, 100, f)), MESSAGE_TOO_BIG);
    // Continuation without a message; a new message inside a fragmented one.
    assert_eq!(
        code(all(c, 100, frame(true, 0, b"x", None))),
        PROTOCOL_ERROR
    );
    let mut f = frame(false, 1, b"a", None);
    f.extend(frame(true, 1, b"b", None));
    assert_eq!(code(all(c, 100, f)), PROTOCOL_ERROR);
    // Invalid UTF-8 in a reassembled text (single-frame texts are the caller's check).
    let mut f = frame(false, 1, &[0xc3], None);
    f.extend(frame(true, 0, &[0x28], None));
    assert_eq!(code(all(c, 100, f)), INVALID_PAYLOAD);
    // Close: 1-byte payload, invalid codes, a reason that is not UTF-8.
    assert_eq!(
        code(all(c, 100, frame(true, 8, &[3], None))),
        PROTOCOL_ERROR
    );
    for bad in [0u16, 999, 1004, 1005, 1006, 1015, 2999, 5000] {
        let f = frame(true, 8, &bad.to_be_bytes(), None);
        assert_eq!(code(all(c, 100, f)), PROTOCOL_ERROR, "close code {bad}");
    }
    let mut p = 1000u16.to_be_bytes().to_vec();
    p.push(0xff);
    assert_eq!(code(all(c, 100, frame(true, 8, &p, None))), INVALID_PAYLOAD);
}

#[test]
fn masking_is_its_own_inverse() {
    let mut data: Vec<u8> = (0..37).collect();
    let orig = data.clone();
    apply_mask(&mut data, KEY);
    assert_eq!(data[0], KEY[0]);
    assert_eq!(data[5], 5 ^ KEY[1]);
    apply_mask(&mut data, KEY);
    assert_eq!(data, orig);
}
