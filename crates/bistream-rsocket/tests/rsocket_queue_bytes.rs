//! A stream's inbound queue is bounded in bytes (`RsConfig::stream_queue_bytes`) as well as in
//! items (the window): a raw peer sending large payloads within its credit cannot make our
//! client hold more than the bound (the driver stops reading; the peer's writes stall), every
//! item still arrives in order once the consumer drains, and small items flow up to the window.
//! A consumer that never drains is cut after `RsConfig::timeout` so the connection cannot stall
//! for good. In-memory transport, tokio's paused clock, timeouts everywhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bistream_rpc::Router;
use bistream_rsocket::proto::{decode, encode, Frame, Payload};
use bistream_rsocket::transport::length_prefixed;
use bistream_rsocket::{start, RSocket, Role, RsConfig};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};

const T: Duration = Duration::from_secs(30);
/// Bytes of one large item (JSON string).
const ITEM: usize = 16 * 1024;
const BOUND: usize = 4 * ITEM;
const WINDOW: u32 = 256;

/// The JSON string item `i` of `len` bytes: its index, then padding.
fn item(i: usize, len: usize) -> Bytes {
    let head = format!("\"{i:08}");
    let pad = len.saturating_sub(head.len() + 1);
    Bytes::from(format!("{head}{}\"", "x".repeat(pad)))
}

/// Our client on an in-memory pipe with a small buffer, and a raw peer answering the first
/// REQUEST_STREAM with `WINDOW` items of `len` bytes (all within its credit) then COMPLETE, and
/// any REQUEST_RESPONSE with `"pong"`. Returns the client and the items the peer wrote.
async fn pair(len: usize) -> (RSocket, Arc<AtomicUsize>) {
    pair_with(len, RsConfig::default().timeout).await
}

async fn pair_with(len: usize, timeout: Duration) -> (RSocket, Arc<AtomicUsize>) {
    let (a, b) = tokio::io::duplex(8 * 1024);
    let cfg = RsConfig {
        window: WINDOW,
        stream_queue_bytes: BOUND,
        timeout,
        ..RsConfig::default()
    };
    let client = start(
        length_prefixed(a, 1 << 24),
        Role::Client,
        Router::new(),
        cfg,
    );
    let peer = length_prefixed(b, 1 << 24);
    let (mut rx, mut tx) = (peer.rx, peer.tx);
    let sent = Arc::new(AtomicUsize::new(0));
    let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<Frame>();
    // Writer: frames in order, counting the stream's items as they are handed to the pipe.
    let counted = sent.clone();
    tokio::spawn(async move {
        while let Some(f) = out_rx.recv().await {
            let is_item = matches!(
                f,
                Frame::Payload {
                    next: true,
                    complete: false,
                    ..
                }
            );
            if tx.send(encode(&f).freeze()).await.is_err() {
                return;
            }
            if is_item {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    // Reader: answers requests; REQUEST_N and KEEPALIVE need no answer here.
    tokio::spawn(async move {
        while let Some(Ok(b)) = rx.next().await {
            match decode(b).unwrap() {
                Frame::RequestStream {
                    stream, initial_n, ..
                } => {
                    assert_eq!(initial_n, WINDOW);
                    for i in 0..WINDOW as usize {
                        let payload = Payload::data(item(i, len));
                        let f = Frame::Payload {
                            stream,
                            follows: false,
                            complete: false,
                            next: true,
                            payload,
                        };
                        let _ = out_tx.send(f);
                    }
                    let _ = out_tx.send(Frame::Payload {
                        stream,
                        follows: false,
                        complete: true,
                        next: false,
                        payload: Payload::default(),
                    });
                }
                Frame::RequestResponse { stream, .. } => {
                    let _ = out_tx.send(Frame::Payload {
                        stream,
                        follows: false,
                        complete: true,
                        next: true,
                        payload: Payload::data(Bytes::from_static(b"\"pong\"")),
                    });
                }
                _ => {}
            }
        }
    });
    (client, sent)
}

/// Lets every task run until all wait (the paused clock advances only then).
async fn settle() {
    tokio::time::sleep(Duration::from_secs(5)).await;
}

/// Opens a request/stream on `route` and lets both sides run until they wait.
async fn open(client: &RSocket, route: &str) -> bistream_rsocket::ItemStream<String> {
    let items = tokio::time::timeout(T, client.request_stream(route, &serde_json::json!({})))
        .await
        .unwrap()
        .unwrap();
    settle().await;
    items
}

#[tokio::test(start_paused = true)]
async fn large_items_within_credit_are_held_to_the_byte_bound() {
    let (client, sent) = pair(ITEM).await;
    let mut items = open(&client, "big").await;
    // The peer may send all 256 items (4 MiB); we take the bound's 4, one held by the driver,
    // and what the decoder's buffer, the pipe and the peer's writer hold (a few more).
    let n = sent.load(Ordering::SeqCst);
    assert!(n >= 4, "the bound's items were taken ({n})");
    assert!(
        n <= 4 + 1 + 4,
        "{n} items of {ITEM} bytes were taken with a {BOUND}-byte bound"
    );

    // Another request still goes out while the stream is full; its answer is read once the
    // stream drains (head-of-line backpressure, as the rpc crate's).
    let c2 = client.clone();
    let rr = tokio::spawn(async move {
        c2.request_response::<_, String>("ping", &serde_json::json!({}))
            .await
    });
    settle().await;
    assert!(
        !rr.is_finished(),
        "nothing is read while the stream is full"
    );

    for i in 0..WINDOW as usize {
        let v = tokio::time::timeout(T, items.next())
            .await
            .expect("item in time")
            .expect("item")
            .expect("ok item");
        assert_eq!(v.len(), ITEM - 2);
        assert_eq!(&v[..8], format!("{i:08}"), "items in order");
    }
    let end = tokio::time::timeout(T, items.next()).await.unwrap();
    assert!(end.is_none(), "the stream completes");
    assert_eq!(sent.load(Ordering::SeqCst), WINDOW as usize);
    let pong = tokio::time::timeout(T, rr).await.unwrap().unwrap().unwrap();
    assert_eq!(pong, "pong");
    assert!(!client.is_closed(), "backpressure is not a protocol error");
}

#[tokio::test(start_paused = true)]
async fn small_items_flow_up_to_the_window() {
    let (client, sent) = pair(64).await;
    let mut items = open(&client, "small").await;
    // 256 items of 64 bytes are far under the bound: all are taken without the consumer.
    assert_eq!(sent.load(Ordering::SeqCst), WINDOW as usize);
    for i in 0..WINDOW as usize {
        let v = tokio::time::timeout(T, items.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(&v[..8], format!("{i:08}"));
    }
    assert!(tokio::time::timeout(T, items.next())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(start_paused = true)]
async fn dropping_a_full_stream_frees_the_connection() {
    let (client, sent) = pair(ITEM).await;
    let items = open(&client, "big").await;
    assert!(sent.load(Ordering::SeqCst) < WINDOW as usize);
    // The consumer gives up: the held item is dropped with its queue and reading resumes.
    drop(items);
    let pong: String =
        tokio::time::timeout(T, client.request_response("ping", &serde_json::json!({})))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(pong, "pong");
    settle().await;
    assert_eq!(
        sent.load(Ordering::SeqCst),
        WINDOW as usize,
        "the rest was read and discarded"
    );
}

#[tokio::test(start_paused = true)]
async fn a_consumer_that_never_drains_is_cut_after_the_timeout() {
    let (client, sent) = pair_with(ITEM, Duration::from_secs(60)).await;
    let mut items = open(&client, "big").await;
    let held = sent.load(Ordering::SeqCst);
    assert!(held < WINDOW as usize);
    // The consumer waits for an answer this connection would deliver before it drains.
    let pong: String = tokio::time::timeout(
        Duration::from_secs(120),
        client.request_response("ping", &serde_json::json!({})),
    )
    .await
    .expect("the stream is cut within its timeout, then the answer is read")
    .unwrap();
    assert_eq!(pong, "pong");
    // Its consumer sees the items queued before the cut, then the error.
    let mut n = 0;
    loop {
        match tokio::time::timeout(T, items.next()).await.unwrap() {
            Some(Ok(v)) => {
                assert_eq!(&v[..8], format!("{n:08}"));
                n += 1;
            }
            Some(Err(e)) => {
                assert!(e.to_string().contains("did not drain"), "{e}");
                break;
            }
            None => panic!("the stream was cut, not completed"),
        }
    }
    assert!(n >= 4 && n < WINDOW as usize, "{n} items before the cut");
    assert!(!client.is_closed());
}
