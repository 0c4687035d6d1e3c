//! Negotiated extensions on tokio's paused clock: cancel (dropping a stream or timing out a
//! call stops the remote handler), request_n credit (a slow consumer bounds the producer),
//! keepalive (a silent peer is detected; a live one is kept).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bistream_rpc::{HandlerError, Router, RpcConfig, RpcError};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::*;

struct SetOnDrop(Arc<AtomicBool>);
impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn ticking(produced: Arc<AtomicU64>, dropped: Arc<AtomicBool>, delay: Duration) -> Router {
    let d2 = dropped.clone();
    Router::new()
        .request_stream("ticks", move |_v: Value| {
            let guard = SetOnDrop(dropped.clone());
            let produced = produced.clone();
            futures_util::stream::unfold((0u64, guard), move |(i, g)| {
                let produced = produced.clone();
                async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    produced.fetch_add(1, Ordering::SeqCst);
                    Some((Ok::<_, HandlerError>(i), (i + 1, g)))
                }
            })
        })
        .request_response("hang", move |_v: Value| {
            let guard = SetOnDrop(d2.clone());
            async move {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                drop(guard);
                Ok::<_, HandlerError>(0)
            }
        })
}

async fn wait_for(flag: &AtomicBool) {
    for _ in 0..1000 {
        if flag.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("flag never set");
}

#[tokio::test(start_paused = true)]
async fn dropping_a_stream_cancels_the_remote_handler() {
    let produced = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let router = ticking(
        produced.clone(),
        dropped.clone(),
        Duration::from_millis(100),
    );
    let (c, s) = duplex_pair(router, Router::new(), RpcConfig::default());
    let mut st = c
        .request_stream::<_, u64>("ticks", &json!({}))
        .await
        .unwrap();
    assert_eq!(st.next().await.unwrap().unwrap(), 0);
    assert_eq!(st.next().await.unwrap().unwrap(), 1);
    drop(st);
    wait_for(&dropped).await;
    // The connection is fine afterwards.
    let v: Value = c
        .request_response::<_, Value>("nope", &json!({}))
        .await
        .unwrap_err()
        .to_string()
        .into();
    assert!(v.as_str().unwrap().contains("unknown_operation"));
    drop(s);
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_call_fails_with_timeout_and_cancels_the_handler() {
    let dropped = Arc::new(AtomicBool::new(false));
    let router = ticking(Arc::new(AtomicU64::new(0)), dropped.clone(), Duration::ZERO);
    let (c, _s) = duplex_pair(router, Router::new(), RpcConfig::default());
    let e = c
        .with_timeout(Duration::from_secs(2))
        .request_response::<_, Value>("hang", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(e, RpcError::Timeout(Duration::from_secs(2)));
    wait_for(&dropped).await;
}

#[tokio::test(start_paused = true)]
async fn default_timeout_is_600_seconds_for_a_silent_stream() {
    let (router, _) = demo();
    let (c, _s) = duplex_pair(router, Router::new(), RpcConfig::default());
    let start = tokio::time::Instant::now();
    let mut st = c
        .request_stream::<_, u64>("count", &json!({"n": 2, "delay_ms": 3_000_000}))
        .await
        .unwrap();
    assert_eq!(st.next().await.unwrap().unwrap(), 0);
    let e = st.next().await.unwrap().unwrap_err();
    assert_eq!(e, RpcError::Timeout(Duration::from_secs(600)));
    assert!(start.elapsed() >= Duration::from_secs(600));
    assert!(st.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn credit_bounds_a_producer_for_a_slow_consumer() {
    let produced = Arc::new(AtomicU64::new(0));
    let router = ticking(
        produced.clone(),
        Arc::new(AtomicBool::new(false)),
        Duration::ZERO,
    );
    let mut cfg = RpcConfig::default();
    cfg.limits.window = 16;
    let (c, _s) = duplex_pair(router, Router::new(), cfg);
    let mut st = c
        .request_stream::<_, u64>("ticks", &json!({}))
        .await
        .unwrap();
    assert_eq!(st.next().await.unwrap().unwrap(), 0);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let p = produced.load(Ordering::SeqCst);
    assert!(p <= 16 + 2, "producer ran ahead of credit: {p}");
    for i in 1..200 {
        assert_eq!(st.next().await.unwrap().unwrap(), i);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let p = produced.load(Ordering::SeqCst);
    assert!((200..=200 + 16 + 2).contains(&p), "{p}");
}

#[tokio::test(start_paused = true)]
async fn credit_is_bounded_in_bytes_as_well_as_items() {
    // Items of 1-3 bytes against a 4-byte budget: once the first window (16) is used, the
    // grants keep about one item outstanding instead of the whole window.
    let produced = Arc::new(AtomicU64::new(0));
    let router = ticking(
        produced.clone(),
        Arc::new(AtomicBool::new(false)),
        Duration::ZERO,
    );
    let mut cfg = RpcConfig::default();
    cfg.limits.window = 16;
    cfg.limits.window_bytes = 4;
    let (c, _s) = duplex_pair(router, Router::new(), cfg);
    let mut st = c
        .request_stream::<_, u64>("ticks", &json!({}))
        .await
        .unwrap();
    for i in 0..200 {
        assert_eq!(st.next().await.unwrap().unwrap(), i);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let p = produced.load(Ordering::SeqCst);
    assert!(
        (200..=200 + 4 + 2).contains(&p),
        "producer ran ahead of the byte budget: {p}"
    );
    for i in 200..300 {
        assert_eq!(st.next().await.unwrap().unwrap(), i);
    }
}

#[tokio::test(start_paused = true)]
async fn without_extensions_a_bi_stream_still_flows() {
    let (router, _) = demo();
    let mut cfg = RpcConfig {
        extensions: false,
        ..Default::default()
    };
    cfg.limits.window = 4;
    let (c, _s) = duplex_pair(router, Router::new(), cfg);
    let (mut tx, rx) = c
        .stream_stream::<_, String, String>("upper", &json!({}))
        .await
        .unwrap();
    let reader = tokio::spawn(async move { rx.map(|r| r.unwrap()).collect::<Vec<_>>().await });
    for i in 0..100 {
        tx.send(&format!("s{i}")).await.unwrap();
    }
    tx.end().await.unwrap();
    let got = tokio::time::timeout(T, reader).await.unwrap().unwrap();
    assert_eq!(got.len(), 100);
    assert_eq!(got[99], "S99");
}

#[tokio::test(start_paused = true)]
async fn keepalive_detects_a_silent_peer() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let cfg = RpcConfig {
        keepalive: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let c = bistream_rpc::stream_io::over(a, bistream_rpc::Side::Initiator, Router::new(), cfg);
    let mut raw = tokio_util::codec::Framed::new(b, tokio_util::codec::LengthDelimitedCodec::new());
    let hello = raw.next().await.unwrap().unwrap();
    let hello: Value = serde_json::from_slice(&hello).unwrap();
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["data"]["keepalive_ms"], 1000);
    let reply = json!({"type":"hello","peerID":"silent","requestId":null,
        "data":{"version":1,"extensions":["cancel","request_n","keepalive"],"window":8}});
    raw.send(bytes::Bytes::from(reply.to_string()))
        .await
        .unwrap();
    // Then say nothing, and never answer the probes.
    let e = tokio::time::timeout(Duration::from_secs(60), c.closed())
        .await
        .unwrap();
    assert!(
        matches!(e, RpcError::Lost(ref m) if m.contains("keepalive")),
        "{e:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn keepalive_keeps_a_live_idle_connection() {
    let cfg = RpcConfig {
        keepalive: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let (router, _) = demo();
    let (c, _s) = duplex_pair(router, Router::new(), cfg);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let v: Value = c.request_response("echo", &json!({})).await.unwrap();
    assert_eq!(v["operation"], "echo");
    assert_eq!(c.state(), bistream_rpc::ConnState::Open);
}

/// The acceptor's side of a length-delimited connection, played by hand.
struct Scripted(
    tokio_util::codec::Framed<tokio::io::DuplexStream, tokio_util::codec::LengthDelimitedCodec>,
);

impl Scripted {
    async fn recv(&mut self) -> Value {
        let b = tokio::time::timeout(T, self.0.next())
            .await
            .expect("frame in time")
            .expect("open")
            .unwrap();
        serde_json::from_slice(&b).unwrap()
    }
    async fn send(&mut self, v: Value) {
        self.0
            .send(bytes::Bytes::from(v.to_string()))
            .await
            .unwrap();
    }
    /// Frames that arrive within `d` of paused time.
    async fn drain_for(&mut self, d: Duration) -> Vec<Value> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Some(b)) = tokio::time::timeout_at(deadline, self.0.next()).await {
            got.push(serde_json::from_slice(&b.unwrap()).unwrap());
        }
        got
    }
}

#[tokio::test(start_paused = true)]
async fn items_sent_before_negotiation_settles_count_against_the_window() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let c = bistream_rpc::stream_io::over(
        a,
        bistream_rpc::Side::Initiator,
        Router::new(),
        RpcConfig::default(),
    );
    let mut peer = Scripted(tokio_util::codec::Framed::new(
        b,
        tokio_util::codec::LengthDelimitedCodec::new(),
    ));
    let hello = peer.recv().await;
    assert_eq!(hello["type"], "hello");
    let me = hello["peerID"].as_str().unwrap().to_string();

    // A bi-stream opened, and 10 items sent, before the acceptor's hello arrives.
    let (mut tx, _rx) = c
        .stream_stream::<_, u64, Value>("sink", &json!({}))
        .await
        .unwrap();
    assert_eq!(peer.recv().await["type"], "stream_stream_request");
    for i in 0..10u64 {
        tx.send(&i).await.unwrap();
    }
    for i in 0..10u64 {
        let f = peer.recv().await;
        assert_eq!(
            (f["type"].as_str(), f["data"].as_u64()),
            (Some("stream_data"), Some(i))
        );
    }
    // Window 4: the 10 items already sent use it up and leave a debt of 6.
    let id = json!([me, 0]);
    peer.send(json!({"type":"hello","peerID":"scripted","requestId":null,
        "data":{"version":1,"extensions":["cancel","request_n","keepalive"],"window":4}}))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent = Arc::new(AtomicU64::new(10));
    let s2 = sent.clone();
    tokio::spawn(async move {
        for i in 10..40u64 {
            if tx.send(&i).await.is_err() {
                return;
            }
            s2.store(i + 1, Ordering::SeqCst);
        }
    });
    assert_eq!(
        peer.drain_for(Duration::from_secs(2)).await,
        Vec::<Value>::new()
    );
    // 8 more: 6 pay the debt, 2 items may follow, and no more.
    peer.send(json!({"type":"request_n","peerID":"scripted","requestId":id,"data":{"n":8}}))
        .await;
    let more = peer.drain_for(Duration::from_secs(2)).await;
    let items: Vec<u64> = more.iter().map(|f| f["data"].as_u64().unwrap()).collect();
    assert_eq!(items, vec![10, 11]);
    assert!(sent.load(Ordering::SeqCst) <= 12);
    // A grant of 3 lets exactly 3 through.
    peer.send(json!({"type":"request_n","peerID":"scripted","requestId":id,"data":{"n":3}}))
        .await;
    let more = peer.drain_for(Duration::from_secs(2)).await;
    let items: Vec<u64> = more.iter().map(|f| f["data"].as_u64().unwrap()).collect();
    assert_eq!(items, vec![12, 13, 14]);
}

#[tokio::test(start_paused = true)]
async fn a_stream_opened_before_negotiation_gets_its_window_once() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let c = bistream_rpc::stream_io::over(
        a,
        bistream_rpc::Side::Initiator,
        Router::new(),
        RpcConfig::default(),
    );
    let mut peer = Scripted(tokio_util::codec::Framed::new(
        b,
        tokio_util::codec::LengthDelimitedCodec::new(),
    ));
    let me = peer.recv().await["peerID"].as_str().unwrap().to_string();
    let (mut tx, _rx) = c
        .stream_stream::<_, u64, Value>("sink", &json!({}))
        .await
        .unwrap();
    assert_eq!(peer.recv().await["type"], "stream_stream_request");
    peer.send(json!({"type":"hello","peerID":"scripted","requestId":null,
        "data":{"version":1,"extensions":["request_n"],"window":5}}))
        .await;
    // Give the hello time to land, then send more than the window.
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::spawn(async move {
        for i in 0..20u64 {
            if tx.send(&i).await.is_err() {
                return;
            }
        }
    });
    let got = peer.drain_for(Duration::from_secs(2)).await;
    assert_eq!(got.len(), 5, "{got:?}");
    peer.send(json!({"type":"request_n","peerID":"scripted","requestId":[me, 0],"data":{"n":2}}))
        .await;
    assert_eq!(peer.drain_for(Duration::from_secs(2)).await.len(), 2);
}
