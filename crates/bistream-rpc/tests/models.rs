//! The four interaction models, concurrency, exact numbers and typed errors, over an in-memory
//! duplex, TCP, a Unix socket and WebSocket.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::time::Duration;

use bistream_rpc::ws::ServerConfig;
use bistream_rpc::{stream_io, Connection, ErrorCode, Raw, Router, RpcConfig, RpcError};
use futures_util::StreamExt;
use serde_json::{json, Value};
use support::*;

async fn four_models(c: &Connection, logs: &std::sync::Mutex<Vec<String>>) {
    // request/response
    let v: Value = c
        .request_response("echo", &json!({"x": [1, "é"]}))
        .await
        .unwrap();
    assert_eq!(v, json!({"operation": "echo", "x": [1, "é"]}));
    // request/stream
    let s = c
        .request_stream::<_, u64>("count", &json!({"n": 5}))
        .await
        .unwrap();
    let items: Vec<u64> = s.map(|r| r.unwrap()).collect().await;
    assert_eq!(items, vec![0, 1, 2, 3, 4]);
    // stream/stream
    let (mut tx, mut rx) = c
        .stream_stream::<_, String, String>("upper", &json!({}))
        .await
        .unwrap();
    tx.send(&"abc".to_string()).await.unwrap();
    assert_eq!(rx.next().await.unwrap().unwrap(), "ABC");
    tx.send(&"déf".to_string()).await.unwrap();
    tx.end().await.unwrap();
    assert_eq!(rx.next().await.unwrap().unwrap(), "DÉF");
    assert!(rx.next().await.is_none());
    // fire-and-forget: then a request/response, so the log ran before (same connection, order kept)
    c.fire_and_forget("log", &json!({"msg": "hi", "n": 1.50}))
        .await
        .unwrap();
    for _ in 0..200 {
        if !logs.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        logs.lock().unwrap().as_slice(),
        [r#"{"operation":"log","msg":"hi","n":1.5}"#]
    );
}

#[tokio::test]
async fn four_models_over_duplex() {
    let (server, logs) = demo();
    let (c, _s) = duplex_pair(server, Router::new(), RpcConfig::default());
    tokio::time::timeout(T, four_models(&c, &logs))
        .await
        .unwrap();
}

#[tokio::test]
async fn four_models_over_websocket() {
    let (server, logs) = demo();
    let url = ws_server(ServerConfig::new(server)).await;
    let c = ws_client(&url).await;
    tokio::time::timeout(T, four_models(&c, &logs))
        .await
        .unwrap();
    c.close().await;
    assert_eq!(c.state(), bistream_rpc::ConnState::Closed);
}

#[tokio::test]
async fn four_models_over_tcp_and_unix() {
    let (server, logs) = demo();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(stream_io::serve_tcp(l, ServerConfig::new(server)));
    let c = stream_io::connect_tcp(&addr, Router::new(), RpcConfig::default())
        .await
        .unwrap();
    tokio::time::timeout(T, four_models(&c, &logs))
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rpc.sock");
    let (server, logs) = demo();
    let l = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(stream_io::serve_unix(l, ServerConfig::new(server)));
    let c = stream_io::connect_unix(&path, Router::new(), RpcConfig::default())
        .await
        .unwrap();
    tokio::time::timeout(T, four_models(&c, &logs))
        .await
        .unwrap();
}

#[tokio::test]
async fn numbers_and_text_pass_through_exactly() {
    let (server, _) = demo();
    let (c, _s) = duplex_pair(server, Router::new(), RpcConfig::default());
    let data = r#"{"a":9007199254740993,"b":-9223372036854775808,"c":1.10,"d":1e400,"e":"\u00e9\ud83d\ude00","f":"é😀","g":123456789012345678901234567890}"#;
    let raw: Raw = serde_json::from_str(data).unwrap();
    let back: Raw = c.request_response("echo", &raw).await.unwrap();
    assert_eq!(
        back.get(),
        r#"{"operation":"echo","a":9007199254740993,"b":-9223372036854775808,"c":1.10,"d":1e400,"e":"\u00e9\ud83d\ude00","f":"é😀","g":123456789012345678901234567890}"#
    );
    // Typed: the integers survive as integers.
    let v: Value = c
        .request_response("echo", &json!({"a": 9007199254740993u64, "b": i64::MIN}))
        .await
        .unwrap();
    assert_eq!(v["a"].as_u64(), Some(9007199254740993));
    assert_eq!(v["b"].as_i64(), Some(i64::MIN));
}

#[tokio::test(start_paused = true)]
async fn slow_handler_never_delays_another_reply() {
    let (server, _) = demo();
    let (c, _s) = duplex_pair(server, Router::new(), RpcConfig::default());
    let c2 = c.clone();
    let slow = tokio::spawn(async move {
        let v: Value = c2
            .request_response("sleep", &json!({"ms": 60_000}))
            .await
            .unwrap();
        v
    });
    tokio::task::yield_now().await;
    let start = tokio::time::Instant::now();
    let v: Value = c.request_response("echo", &json!({"k": 1})).await.unwrap();
    assert_eq!(v["k"], 1);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "echo waited for sleep"
    );
    assert!(!slow.is_finished());
    assert_eq!(slow.await.unwrap(), json!({"slept_ms": 60000}));
}

#[tokio::test]
async fn many_concurrent_calls_on_one_connection() {
    let (server, _) = demo();
    let url = ws_server(ServerConfig::new(server)).await;
    let c = ws_client(&url).await;
    let calls = (0..500).map(|i| {
        let c = c.clone();
        async move {
            let v: Value = c
                .request_response("echo", &json!({ "i": i }))
                .await
                .unwrap();
            assert_eq!(v["i"], i);
        }
    });
    tokio::time::timeout(T, futures_util::future::join_all(calls))
        .await
        .unwrap();
    // Streams interleave and each keeps its order.
    let streams = (0..20).map(|_| {
        let c = c.clone();
        async move {
            let s = c
                .request_stream::<_, u64>("count", &json!({"n": 300}))
                .await
                .unwrap();
            let v: Vec<u64> = s.map(|r| r.unwrap()).collect().await;
            assert_eq!(v, (0..300).collect::<Vec<_>>());
        }
    });
    tokio::time::timeout(T, futures_util::future::join_all(streams))
        .await
        .unwrap();
}

fn remote(e: RpcError) -> (ErrorCode, String) {
    match e {
        RpcError::Remote { code, message } => (ErrorCode::parse(&code).unwrap(), message),
        other => panic!("expected a remote error, got {other:?}"),
    }
}

#[tokio::test]
async fn typed_errors() {
    let (server, _) = demo();
    let (c, _s) = duplex_pair(server, Router::new(), RpcConfig::default());
    let e = c
        .request_response::<_, Value>("nope", &json!({}))
        .await
        .unwrap_err();
    let (code, msg) = remote(e);
    assert_eq!(code, ErrorCode::UnknownOperation);
    assert!(msg.contains("nope"), "{msg}");
    // wrong model
    let e = c
        .request_response::<_, Value>("count", &json!({"n": 1}))
        .await
        .unwrap_err();
    assert_eq!(remote(e).0, ErrorCode::InvalidRequest);
    let mut s = c
        .request_stream::<_, Value>("echo", &json!({}))
        .await
        .unwrap();
    assert_eq!(
        remote(s.next().await.unwrap().unwrap_err()).0,
        ErrorCode::InvalidRequest
    );
    assert!(s.next().await.is_none());
    // handler failure
    let e = c
        .request_response::<_, Value>("fail", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(remote(e).0, ErrorCode::HandlerFailed);
    // bad arguments
    for bad in [
        json!({}),
        json!({"n": -1}),
        json!({"n": "3"}),
        json!({"n": 1.5}),
    ] {
        let mut s = c.request_stream::<_, Value>("count", &bad).await.unwrap();
        let e = s.next().await.unwrap().unwrap_err();
        assert_eq!(remote(e).0, ErrorCode::InvalidRequest, "{bad}");
    }
    // a non-string item ends upper with invalid_request
    let (mut tx, mut rx) = c
        .stream_stream::<_, Value, Value>("upper", &json!({}))
        .await
        .unwrap();
    tx.send(&json!("ok")).await.unwrap();
    tx.send(&json!(5)).await.unwrap();
    assert_eq!(rx.next().await.unwrap().unwrap(), json!("OK"));
    assert_eq!(
        remote(rx.next().await.unwrap().unwrap_err()).0,
        ErrorCode::InvalidRequest
    );
    assert!(rx.next().await.is_none());
    // data must be an object
    let e = c
        .request_response::<_, Value>("echo", &json!([1]))
        .await
        .unwrap_err();
    assert!(matches!(e, RpcError::Data(_)), "{e:?}");
    // the connection still works
    let v: Value = c.request_response("echo", &json!({})).await.unwrap();
    assert_eq!(v["operation"], "echo");
}

#[tokio::test]
async fn symmetric_calls_server_calls_client() {
    let client_router = Router::new().request_response("whoami", |_v: Value| async move {
        Ok::<_, bistream_rpc::HandlerError>("client")
    });
    let (tx, rx) = tokio::sync::oneshot::channel::<String>();
    let tx = std::sync::Mutex::new(Some(tx));
    let server_router = Router::new();
    let mut cfg = ServerConfig::new(server_router);
    cfg.on_connect = Some(std::sync::Arc::new(move |conn: Connection| {
        let tx = tx.lock().unwrap().take();
        tokio::spawn(async move {
            let who: String = conn.request_response("whoami", &json!({})).await.unwrap();
            if let Some(tx) = tx {
                let _ = tx.send(who);
            }
            conn.closed().await;
        });
    }));
    let url = ws_server(cfg).await;
    let opts = bistream_rpc::ws::ClientOptions {
        router: client_router,
        ..Default::default()
    };
    let _c = bistream_rpc::ws::connect(&url, opts).await.unwrap();
    assert_eq!(
        tokio::time::timeout(T, rx).await.unwrap().unwrap(),
        "client"
    );
}
