//! Property tests of the codec: random packets round-trip, and a stream of packets decodes the
//! same whatever the pieces it arrives in; random bytes never panic the decoder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bistream_packet::{varint, Decoder, Packet};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

fn any_packet() -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        prop_oneof![Just(0u64), 0u64..300, any::<u64>()],
        any::<u64>(),
        prop_oneof![0u64..64, 0u64..=bistream_packet::codec::MAX_REQUEST_FLAGS],
        prop_oneof![1u64..10, 1u64..=u64::MAX],
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(
            |(is_request, channel, tag, flags, rq_type, payload)| Packet {
                is_request,
                channel,
                tag,
                flags,
                rq_type: if is_request { rq_type } else { 0 },
                payload: Bytes::from(payload),
            },
        )
}

proptest! {
    #[test]
    fn varint_round_trips(n in any::<u64>()) {
        let mut v = Vec::new();
        varint::encode(n, &mut v);
        prop_assert_eq!(v.len(), varint::encoded_len(n));
        prop_assert_eq!(varint::decode(&v).unwrap(), Some((n, v.len())));
    }

    #[test]
    fn packet_round_trips(p in any_packet()) {
        let bytes = p.to_bytes().unwrap();
        let mut b = BytesMut::from(&bytes[..]);
        prop_assert_eq!(Decoder::default().decode(&mut b).unwrap(), Some(p));
        prop_assert!(b.is_empty());
    }

    #[test]
    fn split_stream_decodes_identically(
        packets in proptest::collection::vec(any_packet(), 1..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..20),
    ) {
        let mut stream = Vec::new();
        for p in &packets {
            stream.extend_from_slice(&p.to_bytes().unwrap());
        }
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
        cuts.push(stream.len());
        cuts.sort_unstable();
        let dec = Decoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut start = 0;
        for c in cuts {
            buf.extend_from_slice(&stream[start..c]);
            start = c;
            while let Some(p) = dec.decode(&mut buf).unwrap() {
                out.push(p);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(out, packets);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let dec = Decoder::new(64);
        let mut b = BytesMut::from(&bytes[..]);
        // Each call either yields a packet, asks for more, or fails; nothing else.
        for _ in 0..200 {
            match dec.decode(&mut b) {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break,
            }
        }
    }
}
