//! The caller's typed parse of received items and responses (`bistream_rpc_proto::from_item`)
//! over a real connection: for every sample text and target type, `next()`, `next_batch` and
//! `request_response` give what `serde_json::from_str` gives — the same value, or
//! `RpcError::Data` with serde_json's own error text — and a bad item does not end the stream.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::fmt::Debug;

use bistream_rpc::{Connection, HandlerError, Raw, Router, RpcConfig, RpcError};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use support::*;

/// Item texts at the fast path's edges and beyond it (all valid JSON: the frame decoder only
/// passes those on).
const SAMPLES: &[&str] = &[
    "0",
    "7",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "-9223372036854775809",
    "-1",
    "-0",
    "1.5",
    "1e3",
    "\"plain\"",
    "\"esc\\n\\u00e9\"",
    "\"é\"",
    "true",
    "false",
    "null",
    "[1,2]",
    "{\"a\":1}",
];

fn raw(text: &str) -> Raw {
    RawValue::from_string(text.to_string()).unwrap()
}

fn router() -> Router {
    Router::new()
        .request_stream("samples", |_v: Value| {
            futures_util::stream::iter(SAMPLES.iter().map(|t| Ok::<_, HandlerError>(raw(t))))
        })
        .request_response("sample", |v: Value| async move {
            let i = v["i"].as_u64().unwrap_or(0) as usize;
            Ok::<_, HandlerError>(raw(SAMPLES[i]))
        })
}

/// What serde_json makes of each sample as `T`: `Debug` of the value, or the error text.
fn expected<T: DeserializeOwned + Debug>() -> Vec<Result<String, String>> {
    SAMPLES
        .iter()
        .map(|t| {
            serde_json::from_str::<T>(t)
                .map(|v| format!("{v:?}"))
                .map_err(|e| e.to_string())
        })
        .collect()
}

fn seen<T: Debug>(r: Result<T, RpcError>) -> Result<String, String> {
    match r {
        Ok(v) => Ok(format!("{v:?}")),
        Err(RpcError::Data(e)) => Err(e),
        Err(e) => panic!("not a data error: {e:?}"),
    }
}

async fn check<T: DeserializeOwned + Debug + Send + 'static>(c: &Connection) {
    let want = expected::<T>();
    let ty = std::any::type_name::<T>();
    // One item per poll.
    let mut st = c
        .request_stream::<_, T>("samples", &json!({}))
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(r) = st.next().await {
        got.push(seen(r));
    }
    assert_eq!(got, want, "next() as {ty}");
    // Batches: the good items before a bad one come first, the bad one is the next answer.
    let mut st = c
        .request_stream::<_, T>("samples", &json!({}))
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = Vec::new();
    while let Some(r) = st.next_batch(&mut buf, 64).await {
        match r {
            Ok(_) => got.extend(buf.drain(..).map(|v| Ok(format!("{v:?}")))),
            Err(e) => got.push(seen::<T>(Err(e))),
        }
    }
    assert_eq!(got, want, "next_batch as {ty}");
    // A response's data.
    for (i, w) in want.iter().enumerate() {
        let r = c.request_response::<_, T>("sample", &json!({"i": i})).await;
        assert_eq!(&seen(r), w, "response {} as {ty}", SAMPLES[i]);
    }
}

#[tokio::test]
async fn received_items_and_responses_parse_as_serde_json_would() {
    let (c, _s) = duplex_pair(router(), Router::new(), RpcConfig::default());
    tokio::time::timeout(T, async {
        check::<u64>(&c).await;
        check::<i64>(&c).await;
        check::<u8>(&c).await;
        check::<f64>(&c).await;
        check::<bool>(&c).await;
        check::<String>(&c).await;
        check::<Option<u64>>(&c).await;
        check::<Option<String>>(&c).await;
        check::<()>(&c).await;
        check::<Value>(&c).await;
        check::<Raw>(&c).await;
        check::<Vec<u64>>(&c).await;
        // The connection is still fine.
        let v: Value = c
            .request_response("sample", &json!({"i": 1}))
            .await
            .unwrap();
        assert_eq!(v, json!(7));
    })
    .await
    .unwrap();
}
