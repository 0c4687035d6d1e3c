//! Byte-stream and frame codecs: the packet stream decoder (cs.packetstream) and rpc frames.

use bistream_packet::{Decoder, Packet};
use bytes::BytesMut;

/// Packet stream: arbitrary bytes, fed to the incremental `Decoder` in pieces whose size the
/// first byte chooses, never panic; every packet decoded re-encodes to bytes that decode back to
/// itself with nothing left over.
pub fn packet_decode(data: &[u8]) {
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
                Ok(Some(p)) => packet_round_trip(&p),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

fn packet_round_trip(p: &Packet) {
    let Ok(bytes) = p.to_bytes() else {
        return;
    };
    let mut b = BytesMut::from(&bytes[..]);
    let again = Decoder::new(usize::MAX).decode(&mut b);
    assert_eq!(again, Ok(Some(p.clone())));
    assert!(b.is_empty());
}

/// rpc frames (public `decode`/`encode` API only): never panics; an accepted frame re-encoded
/// decodes to the same type, peer id, request id and byte-identical raw `data`. The engine's
/// stream-item path on the raw bytes (`fast::decode_item`, cold and then with the head it
/// remembered) takes only UTF-8 frames, and what it takes is what the full decoder gives.
pub fn rpc_frame(data: &[u8]) {
    rpc_item_bytes(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(f) = bistream_rpc_proto::decode(text) else {
        return;
    };
    let mut out = String::new();
    let peer = f.peer_id.as_deref().unwrap_or("");
    bistream_rpc_proto::encode(
        &mut out,
        f.ty,
        peer,
        f.request_id.as_ref().map(|r| (r.peer.as_str(), r.n)),
        f.data.as_deref().map(|d| d.get()),
    );
    let g = bistream_rpc_proto::decode(&out)
        .unwrap_or_else(|e| panic!("re-encoded frame refused: {e}\n in: {text}\nout: {out}"));
    assert_eq!(g.ty, f.ty, "{out}");
    assert_eq!(g.peer_id.as_deref().unwrap_or(""), peer, "{out}");
    assert_eq!(g.request_id, f.request_id, "{out}");
    assert_eq!(
        g.data.as_deref().map(|d| d.get()),
        f.data.as_deref().map(|d| d.get()),
        "{out}"
    );
}

fn rpc_item_bytes(data: &[u8]) {
    use bistream_rpc_proto::fast::{decode_item, Known};
    let mut known = Known::default();
    for _ in 0..2 {
        let Some(item) = decode_item(data, &mut known) else {
            return;
        };
        let text = std::str::from_utf8(data).expect("an item taken from bytes that are not UTF-8");
        let f = bistream_rpc_proto::frame::decode_ref_full(text)
            .unwrap_or_else(|e| panic!("item taken, full decoder refused: {e}\n{text}"));
        assert_eq!(f.peer_id.as_deref(), Some(known.peer_id()), "{text}");
        let (caller, n) = known.request_id();
        assert_eq!(
            f.request_id.as_ref().map(|(c, n)| (c.as_ref(), *n)),
            Some((caller, i128::from(n))),
            "{text}"
        );
        assert_eq!(f.data.map(|d| d.get()), item.data, "{text}");
    }
}

/// rpc WebSocket framing: the first byte picks the role (even: client reading a server's
/// frames, odd: server reading a client's) and the piece size; the rest is fed to the sans-IO
/// `ws::Decoder` in pieces. It never panics; an error carries one of the RFC 6455 codes
/// (1002, 1007, 1009); a payload range lies inside the buffer; a reassembled text is UTF-8;
/// and every message decoded re-encodes (masked when the sender is a client) to one frame that
/// decodes back to the same kind and payload.
pub fn ws_frame(data: &[u8]) {
    use bistream_rpc_proto::ws::{self, Decoder, Kind, Opcode, Role, Step};
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let role = if first & 1 == 0 { Role::Client } else { Role::Server };
    let step = usize::from(first >> 1).max(1);
    let max = 4096;
    let mut d = Decoder::new(role, max);
    let mut buf: Vec<u8> = Vec::new();
    for chunk in rest.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            let before = buf.len();
            let (msg, end) = match d.decode(&mut buf) {
                Ok(Step::NeedMore) => break,
                Ok(Step::Frame(f)) => {
                    assert!(f.start <= f.end && f.end <= buf.len() && f.end > 0);
                    let op = match f.kind {
                        Kind::Text => Opcode::Text,
                        Kind::Binary => Opcode::Binary,
                        Kind::Ping => Opcode::Ping,
                        Kind::Pong => Opcode::Pong,
                    };
                    (Some((op, buf[f.start..f.end].to_vec())), f.end)
                }
                Ok(Step::Fragment { end }) => (None, end),
                Ok(Step::Assembled { text, data, end }) => {
                    assert!(data.len() <= max);
                    if text {
                        assert!(std::str::from_utf8(&data).is_ok(), "reassembled text not UTF-8");
                    }
                    let op = if text { Opcode::Text } else { Opcode::Binary };
                    (Some((op, data)), end)
                }
                Ok(Step::Close { code, end, .. }) => {
                    assert!(code.is_none_or(ws::close_code_valid));
                    (None, end)
                }
                Err(e) => {
                    assert!(
                        [ws::PROTOCOL_ERROR, ws::INVALID_PAYLOAD, ws::MESSAGE_TOO_BIG].contains(&e.code),
                        "{e}"
                    );
                    return;
                }
            };
            assert!(end > 0 && end <= before);
            if let Some((op, payload)) = msg {
                ws_round_trip(role, op, &payload, max);
            }
            buf.drain(..end);
        }
    }
}

fn ws_round_trip(role: bistream_rpc_proto::ws::Role, op: bistream_rpc_proto::ws::Opcode, payload: &[u8], max: usize) {
    use bistream_rpc_proto::ws::{encode, Decoder, Role, Step};
    // The peer wrote it: masked when the peer is a client (we are the server).
    let mask = (role == Role::Server).then_some([7, 1, 200, 33]);
    let mut wire = Vec::new();
    encode(&mut wire, op, payload, mask);
    match Decoder::new(role, max).decode(&mut wire) {
        Ok(Step::Frame(f)) => {
            assert_eq!(f.end, wire.len());
            assert_eq!(&wire[f.start..f.end], payload);
        }
        other => panic!("re-encoded {op:?} frame decoded as {other:?}"),
    }
}
