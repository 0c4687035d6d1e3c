//! Relay message targets: the full decoder (`RelayMessage::decode`), the forwarding fast path
//! (`RawPeerMessage`), and a differential check that the two agree.

use bistream_relay_proto::{json_string, PeerConnectionRequest, RawPeerMessage, RelayMessage};
use uuid::Uuid;

/// The server sees text frames only (invalid UTF-8 is closed with 1007 before decoding), so
/// inputs that are not UTF-8 are skipped.
fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// Full decoder: never panics; an accepted message re-encodes to text that decodes to the same
/// message, and encoding is deterministic (encode ∘ decode ∘ encode = encode).
pub fn relay_message(data: &[u8]) {
    let Some(text) = text(data) else { return };
    let Ok(m) = RelayMessage::decode(text) else {
        return;
    };
    let out = m.encode();
    let again = RelayMessage::decode(&out)
        .unwrap_or_else(|e| panic!("re-encoded message refused: {e}\n in: {text}\nout: {out}"));
    assert_eq!(
        again, m,
        "round trip changed the message\n in: {text}\nout: {out}"
    );
    assert_eq!(again.encode(), out, "encoding is not stable");
    let _ = m.type_name();
}

/// Splits the input into (source uuid, replacement error, message text) so the fast path's
/// encoder is driven with fuzzer-chosen values too. Layout: 16 bytes of UUID, 1 byte choosing
/// whether an error text follows (its length in the next byte), then the message.
fn parts(data: &[u8]) -> Option<(Uuid, Option<&str>, &str)> {
    let (uuid, rest) = data.split_at_checked(16)?;
    let uuid = Uuid::from_slice(uuid).ok()?;
    let (&mode, rest) = rest.split_first()?;
    let (error, rest) = if mode & 1 == 1 {
        let (&len, rest) = rest.split_first()?;
        let (e, rest) = rest.split_at_checked(usize::from(len))?;
        (Some(std::str::from_utf8(e).ok()?), rest)
    } else {
        (None, rest)
    };
    Some((uuid, error, text(rest)?))
}

/// Fast path: never panics; what it accepts is re-encoded, with the source fields rewritten
/// (and the error replaced when chosen), into a message both decoders accept and that
/// carries exactly the rewritten fields.
pub fn relay_fastpath(data: &[u8]) {
    let Some((source, error, text)) = parts(data) else {
        return;
    };
    let Some(m) = RawPeerMessage::decode(text) else {
        return;
    };
    let name = "fuzz-\u{e9}\"name\\";
    let out = m.encode(&source, &json_string(name), error);
    let fast = RawPeerMessage::decode(&out)
        .unwrap_or_else(|| panic!("fast path refuses its own output\n in: {text}\nout: {out}"));
    assert_eq!(fast.peer_uuid, m.peer_uuid);
    let full = RelayMessage::decode(&out).unwrap_or_else(|e| {
        panic!("full decoder refuses the fast path's output: {e}\n in: {text}\nout: {out}")
    });
    let RelayMessage::PeerConnection(p) = full else {
        panic!("fast path output is not a peer_connection: {out}");
    };
    assert_eq!(p.source_uuid, source);
    assert_eq!(p.source_name, name);
    assert_eq!(p.peer_uuid, m.peer_uuid);
    if let Some(e) = error {
        assert_eq!(p.error.as_deref(), Some(e));
    }
}

/// Differential: the fast path accepts exactly the `peer_connection` messages the full decoder
/// accepts, and then both read the same fields (the fast path's output, decoded, equals the full
/// decoder's message with the source fields rewritten).
pub fn relay_differential(data: &[u8]) {
    let Some((source, error, text)) = parts(data) else {
        return;
    };
    let fast = RawPeerMessage::decode(text);
    let full = RelayMessage::decode(text);
    match (fast, full) {
        (Some(f), Ok(RelayMessage::PeerConnection(p))) => {
            let out = f.encode(&source, &json_string(&p.source_name), error);
            let expected = PeerConnectionRequest {
                source_uuid: source,
                error: error.map(str::to_string).or(p.error.clone()),
                ..p
            };
            let got = RelayMessage::decode(&out);
            assert_eq!(
                got,
                Ok(RelayMessage::PeerConnection(expected)),
                "paths disagree on the fields\n in: {text}\nout: {out}"
            );
        }
        (None, Err(_) | Ok(RelayMessage::Registration(_) | RelayMessage::Response(_))) => {}
        (Some(_), other) => {
            panic!("fast path accepts what the full decoder reads as {other:?}: {text}")
        }
        (None, Ok(m)) => panic!(
            "full decoder accepts a peer_connection the fast path refuses: {m:?}\n in: {text}"
        ),
    }
}
