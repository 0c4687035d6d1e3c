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
/// decodes to the same type, peer id, request id and byte-identical raw `data`.
pub fn rpc_frame(data: &[u8]) {
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
