//! Items read in one burst travel to each stream's consumer as one queue entry per stream
//! (DECISIONS D48). These tests pin what must not change with that: per-stream order
//! when streams interleave in one burst, an end or error right after items comes after them,
//! the item bound counts items (not entries), and an item that does not parse is an error in
//! its place with the next items still arriving, on the calling and on the serving side. A
//! raw peer writes its frames all at once so they are read in one burst. Paused clock,
//! in-memory transport.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bistream_rpc::{
    Connection, HandlerError, Router, RpcConfig, RpcError, ServeReceiver, ServeSender,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{Rng, T};
use tokio::io::DuplexStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

type Peer = Framed<DuplexStream, LengthDelimitedCodec>;

/// Our connection (base protocol, so no credit: only the queue bounds reading) and a raw peer.
fn raw_pair(router: Router, window: u32, buf: usize) -> (Connection, Peer) {
    let (a, b) = tokio::io::duplex(buf);
    let mut cfg = RpcConfig {
        extensions: false,
        ..Default::default()
    };
    cfg.limits.window = window;
    let c = bistream_rpc::stream_io::over(a, bistream_rpc::Side::Initiator, router, cfg);
    (c, Framed::new(b, LengthDelimitedCodec::new()))
}

async fn read_frame(peer: &mut Peer) -> Value {
    let f = tokio::time::timeout(T, peer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    serde_json::from_slice(&f).unwrap()
}

fn frame(ty: &str, id: &Value, data: Option<Value>) -> bytes::Bytes {
    let mut f = json!({"type": ty, "peerID": "p", "requestId": id});
    if let Some(d) = data {
        f["data"] = d;
    }
    bytes::Bytes::from(f.to_string())
}

/// Writes all frames before flushing once: the driver finds them together (one burst).
async fn burst(peer: &mut Peer, frames: Vec<bytes::Bytes>) {
    for f in frames {
        peer.feed(f).await.unwrap();
    }
    SinkExt::<bytes::Bytes>::flush(peer).await.unwrap();
}

/// Everything a stream yields, as text: items, `err:<kind>`, then `end`.
async fn drain<T: serde::de::DeserializeOwned + std::fmt::Debug>(
    st: &mut bistream_rpc::ResponseStream<T>,
) -> Vec<String> {
    let mut got = Vec::new();
    while let Some(r) = tokio::time::timeout(T, st.next()).await.unwrap() {
        got.push(match r {
            Ok(v) => format!("{v:?}"),
            Err(RpcError::Data(_)) => "err:data".into(),
            Err(RpcError::Remote { code, .. }) => format!("err:{code}"),
            Err(e) => format!("err:{e}"),
        });
    }
    got.push("end".into());
    got
}

#[tokio::test(start_paused = true)]
async fn streams_interleaved_in_one_burst_keep_their_order_and_ends_come_last() {
    let (c, mut peer) = raw_pair(Router::new(), 4096, 1 << 16);
    let mut a = c.request_stream::<_, u64>("a", &json!({})).await.unwrap();
    let mut b = c.request_stream::<_, u64>("b", &json!({})).await.unwrap();
    let mut e = c.request_stream::<_, u64>("e", &json!({})).await.unwrap();
    let ia = read_frame(&mut peer).await["requestId"].clone();
    let ib = read_frame(&mut peer).await["requestId"].clone();
    let ie = read_frame(&mut peer).await["requestId"].clone();
    let d = |id: &Value, v: u64| frame("stream_data", id, Some(json!(v)));
    let mut frames = vec![d(&ia, 0), d(&ib, 100), d(&ia, 1), d(&ia, 2), d(&ie, 7)];
    frames.extend((3..40).map(|i| d(&ia, i)));
    frames.extend([
        d(&ib, 101),
        frame("stream_end", &ia, None),
        d(&ie, 8),
        frame(
            "error",
            &ie,
            Some(json!({"code": "handler_failed", "message": "boom"})),
        ),
        d(&ib, 102),
        frame("stream_end", &ib, None),
    ]);
    burst(&mut peer, frames).await;
    let mut want: Vec<String> = (0..40).map(|i| i.to_string()).collect();
    want.push("end".into());
    assert_eq!(drain(&mut a).await, want);
    assert_eq!(drain(&mut b).await, ["100", "101", "102", "end"]);
    assert_eq!(drain(&mut e).await, ["7", "8", "err:handler_failed", "end"]);
}

#[tokio::test(start_paused = true)]
async fn a_bad_item_inside_a_burst_is_an_error_in_place_and_the_next_items_arrive() {
    let (c, mut peer) = raw_pair(Router::new(), 4096, 1 << 16);
    let mut s1 = c.request_stream::<_, u64>("x", &json!({})).await.unwrap();
    let mut s2 = c.request_stream::<_, u64>("y", &json!({})).await.unwrap();
    let i1 = read_frame(&mut peer).await["requestId"].clone();
    let i2 = read_frame(&mut peer).await["requestId"].clone();
    let mut frames = Vec::new();
    for id in [&i1, &i2] {
        frames.extend([
            frame("stream_data", id, Some(json!(1))),
            frame("stream_data", id, Some(json!("two"))),
            frame("stream_data", id, Some(json!(3))),
            frame("stream_data", id, Some(json!(-4))),
            frame("stream_data", id, Some(json!(5))),
            frame("stream_end", id, None),
        ]);
    }
    burst(&mut peer, frames).await;
    // One item at a time.
    assert_eq!(
        drain(&mut s1).await,
        ["1", "err:data", "3", "err:data", "5", "end"]
    );
    // In batches: the items before a bad one first, then its error, then the rest.
    let mut out = Vec::new();
    let mut seen = Vec::new();
    while let Some(r) = tokio::time::timeout(T, s2.next_batch(&mut out, 100))
        .await
        .unwrap()
    {
        seen.push(match r {
            Ok(n) => format!("ok{n}:{:?}", std::mem::take(&mut out)),
            Err(e) => format!("err:{e:?}").chars().take(8).collect(),
        });
    }
    assert_eq!(
        seen,
        ["ok1:[1]", "err:Data", "ok1:[3]", "err:Data", "ok1:[5]"]
    );
}

/// With a window of W and a consumer that does not read, the queue holds at most W items
/// however the items are batched: reading stops, and everything arrives in order later.
#[tokio::test(start_paused = true)]
async fn the_item_bound_counts_items_not_batches() {
    const W: u32 = 8;
    const N: u64 = 2000;
    // A small transport buffer so the peer's progress shows what we read.
    let (c, mut peer) = raw_pair(Router::new(), W, 512);
    let mut st = c.request_stream::<_, u64>("n", &json!({})).await.unwrap();
    let id = read_frame(&mut peer).await["requestId"].clone();
    let written = Arc::new(AtomicU64::new(0));
    let w = written.clone();
    let writer = tokio::spawn(async move {
        for i in 0..N {
            peer.send(frame("stream_data", &id, Some(json!(i))))
                .await
                .unwrap();
            w.store(i + 1, Ordering::SeqCst);
        }
        peer.send(frame("stream_end", &id, None)).await.unwrap();
        peer
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let n = written.load(Ordering::SeqCst);
    // The queue (W items), the batch waiting for room (at most W items: the engine makes
    // none larger) and the 512-byte transport buffer (under 10 frames of ~70 bytes). Counting
    // queue entries instead of items would let W batches in (49 items here).
    assert!(
        n <= 2 * u64::from(W) + 10,
        "{n} items taken with a window of {W}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(written.load(Ordering::SeqCst), n, "reading did not stop");
    let mut out = Vec::new();
    while let Some(r) = tokio::time::timeout(T, st.next_batch(&mut out, 1000))
        .await
        .unwrap()
    {
        r.unwrap();
    }
    assert_eq!(out, (0..N).collect::<Vec<_>>());
    tokio::time::timeout(T, writer).await.unwrap().unwrap();
}

/// A served bi-stream's receiver walks batches the same way: order, a bad item as an
/// `invalid_request` in place, the items after it, then the end.
#[tokio::test(start_paused = true)]
async fn a_served_bi_stream_receives_a_burst_in_order_with_a_bad_item_in_place() {
    let router = Router::new().stream_stream(
        "collect",
        |_open: Value, mut rx: ServeReceiver<u64>, mut tx: ServeSender<String>| async move {
            while let Some(r) = rx.recv().await {
                let s = match r {
                    Ok(v) => v.to_string(),
                    Err(e) => format!("err:{}", e.code.as_str()),
                };
                tx.send(&s).await?;
            }
            Ok::<_, HandlerError>(())
        },
    );
    let (_c, mut peer) = raw_pair(router, 4096, 1 << 16);
    let id = json!(["p", 1]);
    let mut frames = vec![frame(
        "stream_stream_request",
        &id,
        Some(json!({"operation": "collect"})),
    )];
    frames.extend((0..30).map(|i| frame("stream_data", &id, Some(json!(i)))));
    frames.push(frame("stream_data", &id, Some(json!({"not": "a number"}))));
    frames.extend((30..35).map(|i| frame("stream_data", &id, Some(json!(i)))));
    frames.push(frame("stream_end", &id, None));
    burst(&mut peer, frames).await;
    let mut got = Vec::new();
    loop {
        let f = read_frame(&mut peer).await;
        match f["type"].as_str().unwrap() {
            "stream_data" => got.push(f["data"].as_str().unwrap().to_string()),
            "stream_end" => break,
            other => panic!("unexpected {other}: {f}"),
        }
    }
    let mut want: Vec<String> = (0..30).map(|i| i.to_string()).collect();
    want.push("err:invalid_request".into());
    want.extend((30..35).map(|i| i.to_string()));
    assert_eq!(got, want);
}

/// Property: whatever the bursts, the queue bounds (so batches split anywhere) and the mix
/// of `next()` and `next_batch(max)` calls, the consumer sees exactly the items sent, in
/// order, each bad item as one `Data` error in its place, then the end. Seeded cases (the
/// seed is printed on failure).
#[test]
fn any_bursts_bounds_and_reads_deliver_every_item_in_order() {
    for case in 0..60u64 {
        let seed = 0x9e37_79b9_7f4a_7c15 ^ (case + 1);
        let mut r = Rng(seed);
        let len = 1 + r.below(300);
        let items: Vec<Option<u64>> = (0..len)
            .map(|i| (r.below(10) != 0).then_some((i * 1000 + r.below(1000)) as u64))
            .collect();
        let window = 1 + r.below(64) as u32;
        let queue_bytes = 4 + r.below(200);
        let mut bursts = Vec::new();
        let mut left = len;
        while left > 0 {
            let b = (1 + r.below(100)).min(left);
            bursts.push(b);
            left -= b;
        }
        let reads: Vec<usize> = (0..2000).map(|_| r.below(60)).collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let got = rt.block_on(async {
            let (a, b) = tokio::io::duplex(1 << 16);
            let mut cfg = RpcConfig {
                extensions: false,
                ..Default::default()
            };
            cfg.limits.window = window;
            cfg.limits.stream_queue_bytes = queue_bytes;
            let c =
                bistream_rpc::stream_io::over(a, bistream_rpc::Side::Initiator, Router::new(), cfg);
            let mut peer: Peer = Framed::new(b, LengthDelimitedCodec::new());
            let mut st = c.request_stream::<_, u64>("p", &json!({})).await.unwrap();
            let id = read_frame(&mut peer).await["requestId"].clone();
            let sent = items.clone();
            let writer = tokio::spawn(async move {
                let mut it = sent.iter();
                for n in bursts {
                    let frames = it
                        .by_ref()
                        .take(n)
                        .map(|v| {
                            let data = v.map_or(json!("bad"), |v| json!(v));
                            frame("stream_data", &id, Some(data))
                        })
                        .collect();
                    burst(&mut peer, frames).await;
                    tokio::task::yield_now().await;
                }
                burst(&mut peer, vec![frame("stream_end", &id, None)]).await;
                peer
            });
            let mut got: Vec<Option<u64>> = Vec::new();
            let mut out = Vec::new();
            for max in reads.iter().copied() {
                let r = if max == 0 {
                    match tokio::time::timeout(T, st.next()).await.unwrap() {
                        Some(Ok(v)) => Some(Ok(vec![v])),
                        Some(Err(e)) => Some(Err(e)),
                        None => None,
                    }
                } else {
                    match tokio::time::timeout(T, st.next_batch(&mut out, max))
                        .await
                        .unwrap()
                    {
                        Some(Ok(n)) => {
                            assert!((1..=max).contains(&n), "batch of {n}, max {max}");
                            assert_eq!(n, out.len());
                            Some(Ok(std::mem::take(&mut out)))
                        }
                        Some(Err(e)) => Some(Err(e)),
                        None => None,
                    }
                };
                match r {
                    Some(Ok(vs)) => got.extend(vs.into_iter().map(Some)),
                    Some(Err(RpcError::Data(_))) => got.push(None),
                    Some(Err(e)) => panic!("seed {seed:#x}: unexpected {e}"),
                    None => break,
                }
            }
            assert!(
                tokio::time::timeout(T, st.next()).await.unwrap().is_none(),
                "seed {seed:#x}: not ended"
            );
            tokio::time::timeout(T, writer).await.unwrap().unwrap();
            got
        });
        assert_eq!(got, items, "seed {seed:#x}");
    }
}
