//! Split-buffer property of the relay server: a `peer_connection` sent as a WebSocket message
//! cut into any number of fragments (continuation frames, cuts anywhere, including inside a
//! UTF-8 character) is forwarded exactly as when sent whole — same fields, source rewritten —
//! and the connection stays usable. Random texts (any Unicode, escapes, long SDP-like bodies)
//! round-trip through the server byte-for-byte in meaning.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use futures_util::SinkExt;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

/// Sends `text` as one WebSocket message in fragments cut at `cuts` (byte offsets, any order).
async fn send_fragmented(ws: &mut Ws, text: &str, cuts: &[usize]) {
    let bytes = text.as_bytes();
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    at.dedup();
    let pieces: Vec<&[u8]> = at.windows(2).map(|w| &bytes[w[0]..w[1]]).collect();
    let last = pieces.len() - 1;
    for (i, piece) in pieces.into_iter().enumerate() {
        let opcode = if i == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        let frame = Frame::message(piece.to_vec(), opcode, i == last);
        tokio::time::timeout(T, ws.feed(Message::Frame(frame)))
            .await
            .expect("send in time")
            .expect("send");
    }
    tokio::time::timeout(T, ws.flush())
        .await
        .expect("flush in time")
        .expect("flush");
}

#[test]
fn fragmented_messages_are_forwarded_like_whole_ones() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (relay, a, ua, b, ub) = rt.block_on(async {
        let relay = start(config()).await;
        let (a, ua) = registered(&relay, "sender é").await;
        let (b, ub) = registered(&relay, "receiver").await;
        (relay, a, ua, b, ub)
    });
    let strategy = (
        any::<String>(),
        prop_oneof![
            any::<String>(),
            "(v=0\r\n|a=candidate:1 1 UDP 2130706431 10.0.0.1 5000 typ host\r\n|\"|\\\\|é|😀){0,200}",
        ],
        proptest::option::of(any::<String>()),
        any::<bool>(),
        proptest::collection::vec(any::<usize>(), 0..12),
    );
    // The runner takes an `Fn`: the two connections are borrowed per case.
    let conns = std::cell::RefCell::new((a, b));
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |(spoofed, description, error, offer, cuts)| {
            let (a, b) = &mut *conns.borrow_mut();
            rt.block_on(async {
                let mut msg = serde_json::json!({
                    "source_uuid": uuid::Uuid::new_v4().to_string(),
                    "source_name": spoofed,
                    "peer_uuid": ub.to_string(),
                    "description_type": if offer { "offer" } else { "answer" },
                    "description": description,
                    "error": error,
                    "message_type": "peer_connection",
                });
                send_fragmented(a, &msg.to_string(), &cuts).await;
                let got = recv_json(b).await;
                msg["source_uuid"] = ua.to_string().into();
                msg["source_name"] = "sender é".into();
                assert_eq!(got, msg);
            });
            Ok(())
        })
        .unwrap();
    // Both connections are still usable after every case.
    let (mut a, mut b) = conns.into_inner();
    rt.block_on(async {
        send(&mut b, peer_message(ub, "receiver", ua, "still here")).await;
        assert_eq!(recv_json(&mut a).await["description"], "still here");
        relay.shutdown().await;
    });
}
