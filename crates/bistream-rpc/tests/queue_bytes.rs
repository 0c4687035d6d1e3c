//! A stream's inbound queue is bounded in bytes (`Limits::stream_queue_bytes`) as well as in
//! items: a peer sending large items to a consumer that does not read cannot make it hold
//! more than the bound (plus one read burst); reading stops instead, and everything still
//! arrives in order once the consumer reads. Paused clock, in-memory transport.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bistream_rpc::{Router, RpcConfig};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::T;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

const ITEM: usize = 64 * 1024;
const ITEMS: u64 = 200;

#[tokio::test(start_paused = true)]
async fn large_items_stop_reading_at_the_byte_bound_and_small_items_still_flow() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let mut cfg = RpcConfig {
        extensions: false,
        ..Default::default()
    };
    // 256 items would fit the item bound: only the byte bound can stop them.
    cfg.limits.window = 256;
    cfg.limits.stream_queue_bytes = 4 * ITEM;
    let c = bistream_rpc::stream_io::over(a, bistream_rpc::Side::Initiator, Router::new(), cfg);
    let mut peer = Framed::new(b, LengthDelimitedCodec::new());

    let mut st = c
        .request_stream::<_, String>("big", &json!({}))
        .await
        .unwrap();
    let req: Value = serde_json::from_slice(
        &tokio::time::timeout(T, peer.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(req["type"], "stream_request");
    let id = req["requestId"].clone();

    let written = Arc::new(AtomicU64::new(0));
    let w = written.clone();
    let writer = tokio::spawn(async move {
        let frame = |data: Value| {
            bytes::Bytes::from(
                json!({"type":"stream_data","peerID":"p","requestId":id,"data":data}).to_string(),
            )
        };
        for i in 0..ITEMS {
            let item = format!("{i:06}{}", "x".repeat(ITEM - 6));
            peer.send(frame(json!(item))).await.unwrap();
            w.store(i + 1, Ordering::SeqCst);
        }
        for i in 0..1000u64 {
            peer.send(frame(json!(format!("s{i}")))).await.unwrap();
        }
        peer.send(bytes::Bytes::from(
            json!({"type":"stream_end","peerID":"p","requestId":id}).to_string(),
        ))
        .await
        .unwrap();
        peer
    });

    // The consumer does not read: the writer stalls once the queue holds its bound.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let n = written.load(Ordering::SeqCst);
    // Queue (4 items) + one read burst (1 MiB: 16 items) + transport buffers (a few items).
    assert!(n < 30, "the consumer was made to hold {n} large items");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(written.load(Ordering::SeqCst), n, "reading did not stop");

    for i in 0..ITEMS {
        let s = tokio::time::timeout(T, st.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(s.len(), ITEM);
        assert_eq!(&s[..6], format!("{i:06}"));
    }
    let mut batch = Vec::new();
    let mut small = Vec::new();
    while let Some(r) = tokio::time::timeout(T, st.next_batch(&mut batch, 128))
        .await
        .unwrap()
    {
        r.unwrap();
        small.append(&mut batch);
    }
    assert_eq!(small.len(), 1000);
    assert_eq!(small[999], "s999");
    tokio::time::timeout(T, writer).await.unwrap().unwrap();
}
