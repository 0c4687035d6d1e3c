//! `ResponseStream::next_batch`: order, batch bounds, mixing with `next()`, an item that does
//! not parse, a failure after items, credit bounds and the idle timeout (paused clock).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bistream_rpc::{HandlerError, Router, RpcConfig, RpcError};
use futures_util::StreamExt;
use serde_json::{json, Value};
use support::*;

fn router(produced: Arc<AtomicU64>) -> Router {
    demo()
        .0
        .request_stream("mixed", |_v: Value| {
            futures_util::stream::iter(vec![
                Ok::<_, HandlerError>(json!(1)),
                Ok(json!(2)),
                Ok(json!("not a number")),
                Ok(json!(3)),
            ])
        })
        .request_stream("then_fail", |_v: Value| {
            futures_util::stream::iter(vec![
                Ok::<_, HandlerError>(json!(7)),
                Ok(json!(8)),
                Err(HandlerError::failed("boom")),
            ])
        })
        .request_stream("ticks", move |_v: Value| {
            let produced = produced.clone();
            futures_util::stream::unfold(0u64, move |i| {
                let produced = produced.clone();
                async move {
                    produced.fetch_add(1, Ordering::SeqCst);
                    Some((Ok::<_, HandlerError>(i), i + 1))
                }
            })
        })
}

fn pair(
    cfg: RpcConfig,
) -> (
    bistream_rpc::Connection,
    bistream_rpc::Connection,
    Arc<AtomicU64>,
) {
    let produced = Arc::new(AtomicU64::new(0));
    let (c, s) = duplex_pair(router(produced.clone()), Router::new(), cfg);
    (c, s, produced)
}

#[tokio::test]
async fn batches_keep_order_respect_max_and_end() {
    let (c, _s, _) = pair(RpcConfig::default());
    tokio::time::timeout(T, async {
        let mut st = c
            .request_stream::<_, u64>("count", &json!({"n": 10_000}))
            .await
            .unwrap();
        let mut out = Vec::new();
        let mut calls = 0;
        while let Some(n) = st.next_batch(&mut out, 100).await {
            let n = n.unwrap();
            assert!((1..=100).contains(&n), "batch of {n}");
            calls += 1;
        }
        assert_eq!(out, (0..10_000).collect::<Vec<u64>>());
        assert!(calls >= 100);
        // After the end: still None, and next() agrees.
        assert!(st.next_batch(&mut out, 100).await.is_none());
        assert!(st.next().await.is_none());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn next_and_next_batch_mix_without_losing_an_item() {
    let (c, _s, _) = pair(RpcConfig::default());
    tokio::time::timeout(T, async {
        let mut st = c
            .request_stream::<_, u64>("count", &json!({"n": 3000}))
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = Vec::new();
        while let Some(v) = st.next().await {
            got.push(v.unwrap());
            match st.next_batch(&mut buf, 7).await {
                Some(n) => {
                    n.unwrap();
                    got.append(&mut buf);
                }
                None => break,
            }
        }
        assert_eq!(got, (0..3000).collect::<Vec<u64>>());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_item_that_does_not_parse_is_its_own_error_and_the_stream_goes_on() {
    let (c, _s, _) = pair(RpcConfig::default());
    tokio::time::timeout(T, async {
        let mut st = c
            .request_stream::<_, u64>("mixed", &json!({}))
            .await
            .unwrap();
        let mut out = Vec::new();
        let mut errors = 0;
        while let Some(n) = st.next_batch(&mut out, 100).await {
            match n {
                Ok(_) => {}
                Err(RpcError::Data(_)) => {
                    errors += 1;
                    // The items before the bad one were handed out first.
                    assert_eq!(out, vec![1, 2]);
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(errors, 1);
        assert_eq!(out, vec![1, 2, 3]);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_failure_after_items_comes_once_after_them() {
    let (c, _s, _) = pair(RpcConfig::default());
    tokio::time::timeout(T, async {
        let mut st = c
            .request_stream::<_, u64>("then_fail", &json!({}))
            .await
            .unwrap();
        let mut out = Vec::new();
        let mut results = Vec::new();
        while let Some(n) = st.next_batch(&mut out, 100).await {
            results.push(n.map_err(|e| e.remote_code()));
        }
        assert_eq!(out, vec![7, 8]);
        assert_eq!(
            results.last().unwrap(),
            &Err(Some(bistream_rpc::ErrorCode::HandlerFailed))
        );
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
    })
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn batches_keep_the_credit_bound() {
    let mut cfg = RpcConfig::default();
    cfg.limits.window = 16;
    let (c, _s, produced) = pair(cfg);
    let mut st = c
        .request_stream::<_, u64>("ticks", &json!({}))
        .await
        .unwrap();
    let mut out = Vec::new();
    while out.len() < 200 {
        st.next_batch(&mut out, 1000).await.unwrap().unwrap();
    }
    let read = out.len() as u64;
    assert_eq!(out, (0..read).collect::<Vec<u64>>());
    tokio::time::sleep(Duration::from_secs(5)).await;
    let p = produced.load(Ordering::SeqCst);
    assert!(
        (read..=read + 16 + 2).contains(&p),
        "producer ran ahead of credit: {p} produced, {read} read"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_stream_times_out_in_next_batch() {
    let (c, _s, _) = pair(RpcConfig::default());
    let mut st = c
        .request_stream::<_, u64>("count", &json!({"n": 2, "delay_ms": 3_000_000}))
        .await
        .unwrap();
    let mut out = Vec::new();
    assert_eq!(st.next_batch(&mut out, 10).await.unwrap().unwrap(), 1);
    let e = st.next_batch(&mut out, 10).await.unwrap().unwrap_err();
    assert_eq!(e, RpcError::Timeout(Duration::from_secs(600)));
    assert!(st.next_batch(&mut out, 10).await.is_none());
    assert_eq!(out, vec![0]);
}
