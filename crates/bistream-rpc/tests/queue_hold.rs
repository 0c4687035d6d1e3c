//! A full stream queue stops reading the connection (`queue_bytes.rs`), but only for a while:
//! a hold lasts at most the connection's timeout (`RpcConfig::timeout`), then that one stream
//! fails and reading resumes for the others. A slow consumer that drains in time loses nothing;
//! a writer that dies meanwhile ends the connection at once; keepalives still go out while we
//! hold. Paused clock, in-memory transport; the peer is a hand-driven base peer.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bistream_rpc::{Connection, ResponseStream, Router, RpcConfig, RpcError, Side};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::T;
use tokio::io::DuplexStream;
use tokio::time::Instant;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

const ITEM: usize = 64 * 1024;
const ITEMS: u64 = 200;
const HOLD: Duration = Duration::from_secs(30);

type Peer = Framed<DuplexStream, LengthDelimitedCodec>;

/// Our side over an in-memory pipe (base protocol, 4 large items per queue, hold limit
/// [`HOLD`]) and the hand-driven peer at the other end.
fn pair(side: Side, router: Router) -> (Connection, Peer) {
    let (a, b) = tokio::io::duplex(1 << 16);
    let mut cfg = RpcConfig {
        extensions: false,
        timeout: HOLD,
        ..Default::default()
    };
    cfg.limits.window = 256;
    cfg.limits.stream_queue_bytes = 4 * ITEM;
    let c = bistream_rpc::stream_io::over(a, side, router, cfg);
    (c, Framed::new(b, LengthDelimitedCodec::new()))
}

async fn recv(
    peer: &mut (impl StreamExt<Item = std::io::Result<bytes::BytesMut>> + Unpin),
) -> Value {
    // Longer than a hold: some frames come only after one.
    serde_json::from_slice(
        &tokio::time::timeout(HOLD * 2, peer.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
    )
    .unwrap()
}

fn frame(ty: &str, id: &Value, data: Value) -> Bytes {
    Bytes::from(json!({"type": ty, "peerID": "p", "requestId": id, "data": data}).to_string())
}

fn big(i: u64) -> Value {
    json!(format!("{i:06}{}", "x".repeat(ITEM - 6)))
}

/// Our call of the peer's stream "big" over [`pair`]: the connection, the stream, the peer
/// and the call's request id as the peer read it.
async fn open_big() -> (Connection, ResponseStream<String>, Peer, Value) {
    let (c, mut peer) = pair(Side::Initiator, Router::new());
    let st = c
        .request_stream::<_, String>("big", &json!({}))
        .await
        .unwrap();
    let sid = recv(&mut peer).await["requestId"].clone();
    (c, st, peer, sid)
}

/// Writes `ITEMS` large items on `id`, then `after`, counting the items written.
fn flood(
    mut peer: impl SinkExt<Bytes, Error = std::io::Error> + Unpin + Send + 'static,
    id: Value,
    after: Vec<Bytes>,
) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let written = Arc::new(AtomicU64::new(0));
    let w = written.clone();
    let task = tokio::spawn(async move {
        for i in 0..ITEMS {
            peer.send(frame("stream_data", &id, big(i))).await.unwrap();
            w.store(i + 1, Ordering::SeqCst);
        }
        for f in after {
            peer.send(f).await.unwrap();
        }
    });
    (written, task)
}

/// Waits until the peer's writer is stalled by our full queue; returns the items it wrote.
async fn stalled(written: &AtomicU64) -> u64 {
    tokio::time::sleep(Duration::from_secs(5)).await;
    let n = written.load(Ordering::SeqCst);
    assert!(n < 30, "the consumer was made to hold {n} large items");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(written.load(Ordering::SeqCst), n, "reading did not stop");
    n
}

#[tokio::test(start_paused = true)]
async fn a_call_whose_consumer_never_drains_is_cut_and_another_call_is_answered() {
    let (c, mut st, mut peer, sid) = open_big().await;
    // The other call must outlive the hold: its own timeout is longer.
    let c2 = c.with_timeout(HOLD * 4);
    let echo = tokio::spawn(async move {
        c2.request_response::<_, Value>("echo", &json!({"v": 1}))
            .await
    });
    let req = recv(&mut peer).await;
    assert_eq!(req["type"], "request");
    let (sink, _rx) = peer.split();
    let after = vec![
        frame("response", &req["requestId"], json!({"v": 1})),
        frame("stream_end", &sid, Value::Null),
    ];
    let (written, writer) = flood(sink, sid, after);

    let start = Instant::now();
    stalled(&written).await;
    assert!(!echo.is_finished(), "the answer is behind the unread items");

    // After the hold limit the stream is cut: the answer behind it arrives, the peer's writer
    // finishes (the rest of the cut stream is read and dropped).
    let answer = tokio::time::timeout(HOLD * 2, echo).await.unwrap().unwrap();
    assert_eq!(answer.unwrap(), json!({"v": 1}));
    assert!(start.elapsed() >= HOLD);
    tokio::time::timeout(T, writer).await.unwrap().unwrap();

    // The consumer gets what was queued, in order, then the error.
    let mut got = 0u64;
    let err = loop {
        match tokio::time::timeout(T, st.next()).await.unwrap() {
            Some(Ok(s)) => {
                assert_eq!(&s[..6], format!("{got:06}"));
                got += 1;
            }
            Some(Err(e)) => break e,
            None => panic!("the cut stream ended without an error"),
        }
    };
    assert!((1..=4).contains(&got), "{got} items were queued");
    assert_eq!(err, RpcError::Timeout(HOLD));
    assert!(tokio::time::timeout(T, st.next()).await.unwrap().is_none());
    // The connection still works.
    assert_eq!(c.state(), bistream_rpc::ConnState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_served_bi_stream_that_never_reads_gets_a_timeout_error_and_requests_still_run() {
    let dropped = Arc::new(AtomicBool::new(false));
    let d = dropped.clone();
    let router = Router::new()
        .stream_stream(
            "sink",
            move |_: Value,
                  rx: bistream_rpc::ServeReceiver<Value>,
                  _tx: bistream_rpc::ServeSender<Value>| {
                // Holds its receiver without reading until it is aborted.
                let guard = DropFlag(d.clone());
                async move {
                    let _keep = (rx, guard);
                    std::future::pending::<()>().await;
                    Ok(())
                }
            },
        )
        .request_response("echo", |v: Value| async move { Ok(v) });
    let (_c, peer) = pair(Side::Acceptor, router);
    let (mut sink, mut rx) = peer.split();
    let sid = json!(["p", 0]);
    sink.send(frame(
        "stream_stream_request",
        &sid,
        json!({"operation": "sink"}),
    ))
    .await
    .unwrap();
    let after = vec![frame(
        "request",
        &json!(["p", 1]),
        json!({"operation": "echo", "v": 2}),
    )];
    let (written, writer) = flood(sink, sid.clone(), after);

    stalled(&written).await;
    // The cut: an `error` with code `timeout` for the bi-stream, then the request's answer.
    let err = recv(&mut rx).await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["requestId"], sid);
    assert_eq!(err["data"]["code"], "timeout");
    let resp = recv(&mut rx).await;
    assert_eq!(resp["type"], "response");
    assert_eq!(resp["data"], json!({"operation": "echo", "v": 2}));
    tokio::time::timeout(T, writer).await.unwrap().unwrap();
    assert!(
        dropped.load(Ordering::SeqCst),
        "the handler was not stopped"
    );
}

struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_consumer_that_drains_within_the_limit_loses_nothing() {
    let (_c, mut st, peer, sid) = open_big().await;
    let (sink, _rx) = peer.split();
    let (_, writer) = flood(
        sink,
        sid.clone(),
        vec![frame("stream_end", &sid, Value::Null)],
    );
    // One item a second: 200 s in all, far past the 30 s limit, but no hold lasts that long.
    for i in 0..ITEMS {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let s = tokio::time::timeout(T, st.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(&s[..6], format!("{i:06}"));
    }
    assert!(tokio::time::timeout(T, st.next()).await.unwrap().is_none());
    tokio::time::timeout(T, writer).await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_writer_that_dies_during_a_hold_ends_the_connection_at_once() {
    let (c, mut st, peer, sid) = open_big().await;
    let (sink, rx) = peer.split();
    let (written, writer) = flood(sink, sid, Vec::new());
    stalled(&written).await;
    // The peer vanishes; our next write fails while the driver still holds the item.
    writer.abort();
    let _ = writer.await;
    drop(rx);
    let start = Instant::now();
    let r = tokio::time::timeout(T, c.request_response::<_, Value>("echo", &json!({})))
        .await
        .unwrap();
    assert!(matches!(r, Err(RpcError::Lost(_))), "{r:?}");
    assert!(
        start.elapsed() < HOLD,
        "the driver waited for the hold limit"
    );
    let mut last = None;
    while let Some(r) = tokio::time::timeout(T, st.next()).await.unwrap() {
        last = Some(r);
    }
    assert!(matches!(last, Some(Err(RpcError::Lost(_)))), "{last:?}");
}

#[tokio::test(start_paused = true)]
async fn keepalives_still_go_out_while_we_hold() {
    // Two bistream peers with 1 s keepalives: the server would judge the client lost after 3 s
    // of silence, but the client, holding a full queue for 20 s, keeps sending its probes.
    let router = Router::new().request_stream("big", |_: Value| {
        futures_util::stream::iter((0..ITEMS).map(|i| Ok(big(i))))
    });
    let mut cfg = RpcConfig {
        keepalive: Some(Duration::from_secs(1)),
        timeout: HOLD,
        ..Default::default()
    };
    cfg.limits.window = 256;
    cfg.limits.stream_queue_bytes = 4 * ITEM;
    let (c, s) = support::duplex_pair(router, Router::new(), cfg);
    let mut st = c
        .request_stream::<_, Value>("big", &json!({}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(s.state(), bistream_rpc::ConnState::Open);
    for i in 0..ITEMS {
        let v = tokio::time::timeout(T, st.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(v, big(i));
    }
    assert!(tokio::time::timeout(T, st.next()).await.unwrap().is_none());
    assert_eq!(c.state(), bistream_rpc::ConnState::Open);
}
