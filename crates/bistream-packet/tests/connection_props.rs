//! Property test of a live connection against random peer bytes: whatever arrives (valid
//! packets mixed with garbage, cut anywhere), the connection never panics or hangs: it ends,
//! our pending request is resolved, and the last thing it sends is its EOF packet.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bistream_packet::{demo_service, Builder, Decoder, Packet};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // valid requests (including wire rq_type 0 / special packets) and responses
        (
            any::<bool>(),
            0u64..3,
            0u64..8,
            0u64..6,
            0u64..4,
            proptest::collection::vec(any::<u8>(), 0..8)
        )
            .prop_map(
                |(is_request, channel, tag, flags, rq_type, payload)| Packet {
                    is_request,
                    channel,
                    tag,
                    flags,
                    rq_type: if is_request { rq_type } else { 0 },
                    payload: Bytes::from(payload),
                }
                .to_bytes()
                .unwrap()
                .to_vec()
            ),
        proptest::collection::vec(any::<u8>(), 0..12),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]
    #[test]
    fn random_peer_input_always_ends_cleanly(pieces in proptest::collection::vec(piece(), 0..10)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let (a, b) = tokio::io::duplex(1 << 16);
            let (ar, aw) = tokio::io::split(a);
            let (mut br, mut bw) = tokio::io::split(b);
            let conn = Builder::new()
                .handler(demo_service())
                .configure(|c| c.with_max_packet(4096).with_close_timeout(Duration::from_secs(5)))
                .start(ar, aw);
            let pending = conn.submit(0, 0, &b"q"[..], 0).await.unwrap();
            let reader = tokio::spawn(async move {
                let mut buf = BytesMut::new();
                let mut out = Vec::new();
                let dec = Decoder::default();
                loop {
                    while let Some(p) = dec.decode(&mut buf).expect("our side sent an invalid stream") {
                        out.push(p);
                    }
                    match br.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return out,
                        Ok(_) => {}
                    }
                }
            });
            for p in &pieces {
                if bw.write_all(p).await.is_err() {
                    break;
                }
            }
            let _ = bw.shutdown().await;
            let t = Duration::from_secs(10);
            let _ = tokio::time::timeout(t, pending).await.expect("pending request resolved");
            tokio::time::timeout(t, conn.closed()).await.expect("connection ended");
            let sent = tokio::time::timeout(t, reader).await.expect("our stream ended").unwrap();
            assert!(sent.last().is_some_and(|p| p.is_eof()), "{sent:?}");
        });
    }
}
