//! Wire behaviour against a raw base peer (the seed's frames, written by hand): exact replies,
//! no extension frame ever, invalid frames answered or counted, 100 in a row close with 1008,
//! oversized frames, and a peer that vanishes mid-stream.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use bistream_rpc::ws::ServerConfig;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::*;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn raw(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

async fn send(ws: &mut Ws, v: &str) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

async fn recv(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(T, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => continue,
        }
    }
}

async fn server() -> String {
    let (router, _) = demo();
    ws_server(ServerConfig::new(router)).await
}

#[tokio::test]
async fn base_peer_all_four_models_and_no_extension_frames() {
    let url = server().await;
    let mut ws = raw(&url).await;
    send(&mut ws, r#"{"type":"request","peerID":"py","requestId":["py",0],"data":{"operation":"echo","v":[9007199254740993,-9223372036854775808]}}"#).await;
    let r = recv(&mut ws).await;
    assert_eq!(r["type"], "response");
    assert_eq!(r["requestId"], json!(["py", 0]));
    assert!(r["peerID"].is_string());
    assert_eq!(r["data"]["v"][0].as_u64(), Some(9007199254740993));
    assert_eq!(r["data"]["v"][1].as_i64(), Some(i64::MIN));

    send(&mut ws, r#"{"type":"stream_request","peerID":"py","requestId":["py",1],"data":{"operation":"count","n":3}}"#).await;
    for i in 0..3 {
        let r = recv(&mut ws).await;
        assert_eq!(
            (r["type"].as_str(), &r["data"], &r["requestId"]),
            (Some("stream_data"), &json!(i), &json!(["py", 1]))
        );
    }
    assert_eq!(recv(&mut ws).await["type"], "stream_end");

    send(&mut ws, r#"{"type":"stream_stream_request","peerID":"py","requestId":["py",2],"data":{"operation":"upper"}}"#).await;
    send(
        &mut ws,
        r#"{"type":"stream_data","peerID":"py","requestId":["py",2],"data":"x\u00e9"}"#,
    )
    .await;
    let r = recv(&mut ws).await;
    assert_eq!(
        (r["type"].as_str(), r["data"].as_str()),
        (Some("stream_data"), Some("XÉ"))
    );
    send(
        &mut ws,
        r#"{"type":"stream_end","peerID":"py","requestId":["py",2],"data":null}"#,
    )
    .await;
    let r = recv(&mut ws).await;
    assert_eq!(
        (r["type"].as_str(), &r["requestId"]),
        (Some("stream_end"), &json!(["py", 2]))
    );

    send(&mut ws, r#"{"type":"fire_and_forget","peerID":"py","requestId":null,"data":{"operation":"log","a":1}}"#).await;
    send(
        &mut ws,
        r#"{"type":"request","peerID":"py","requestId":["py",3],"data":{"operation":"fail"}}"#,
    )
    .await;
    let r = recv(&mut ws).await;
    assert_eq!(r["type"], "error");
    assert_eq!(r["data"]["code"], "handler_failed");
    // Nothing else arrives: in particular no hello, keepalive or request_n.
    let extra = tokio::time::timeout(std::time::Duration::from_millis(300), ws.next()).await;
    assert!(extra.is_err(), "unexpected frame: {extra:?}");
}

#[tokio::test]
async fn invalid_frames_answered_when_request_id_readable_and_connection_survives() {
    let url = server().await;
    let mut ws = raw(&url).await;
    for (frame, n) in [
        (
            r#"{"type":"request","requestId":["py",1],"data":{"operation":"echo"}}"#,
            1,
        ), // no peerID
        (r#"{"type":"bogus","peerID":"py","requestId":["py",2]}"#, 2),
        (
            r#"{"type":"request","peerID":"py","requestId":["py",3],"data":[1]}"#,
            3,
        ),
        (
            r#"{"type":"request","peerID":"py","requestId":["py",4],"data":{"operation":5}}"#,
            4,
        ),
        (r#"{"type":7,"requestId":["py",5]}"#, 5),
    ] {
        send(&mut ws, frame).await;
        let r = recv(&mut ws).await;
        assert_eq!(r["type"], "error", "{frame}");
        assert_eq!(r["data"]["code"], "invalid_request", "{frame}");
        assert_eq!(r["requestId"], json!(["py", n]));
    }
    // Unreadable ones are only counted.
    for frame in [
        "not json",
        "[]",
        r#"{"type":"request"}"#,
        r#"{"requestId":["py"]}"#,
        "",
    ] {
        send(&mut ws, frame).await;
    }
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    send(
        &mut ws,
        r#"{"type":"request","peerID":"py","requestId":["py",9],"data":{"operation":"echo"}}"#,
    )
    .await;
    let r = recv(&mut ws).await;
    assert_eq!(
        (r["type"].as_str(), &r["requestId"]),
        (Some("response"), &json!(["py", 9]))
    );
    // A duplicate request id while the first is in flight.
    send(&mut ws, r#"{"type":"request","peerID":"py","requestId":["py",10],"data":{"operation":"sleep","ms":300}}"#).await;
    send(
        &mut ws,
        r#"{"type":"request","peerID":"py","requestId":["py",10],"data":{"operation":"echo"}}"#,
    )
    .await;
    let r = recv(&mut ws).await;
    assert_eq!(r["data"]["code"], "invalid_request");
    let r = recv(&mut ws).await;
    assert_eq!(r["data"], json!({"slept_ms": 300}));
}

#[tokio::test]
async fn hundred_invalid_frames_in_a_row_close_1008() {
    let url = server().await;
    let mut ws = raw(&url).await;
    for _ in 0..99 {
        send(&mut ws, "garbage").await;
    }
    // A valid frame resets the run.
    send(
        &mut ws,
        r#"{"type":"request","peerID":"py","requestId":["py",0],"data":{"operation":"echo"}}"#,
    )
    .await;
    assert_eq!(recv(&mut ws).await["type"], "response");
    for _ in 0..100 {
        let _ = ws.send(Message::text("garbage")).await;
    }
    let code = loop {
        match tokio::time::timeout(T, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(c)))) => break u16::from(c.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, 1008);
}

#[tokio::test]
async fn oversized_frame_closes_1009() {
    let (router, _) = demo();
    let mut cfg = ServerConfig::new(router);
    cfg.rpc.limits.max_frame_bytes = 1024;
    let url = ws_server(cfg).await;
    let mut ws = raw(&url).await;
    let big = format!(
        r#"{{"type":"request","peerID":"py","requestId":["py",0],"data":{{"operation":"echo","x":"{}"}}}}"#,
        "a".repeat(2000)
    );
    let _ = ws.send(Message::text(big)).await;
    let code = loop {
        match tokio::time::timeout(T, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(c)))) => break u16::from(c.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, 1009);
}

#[tokio::test]
async fn client_toward_base_server_sends_hello_only_and_works() {
    // A raw base server: ignores the hello (as the seed's validator rejects it), answers calls.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", l.local_addr().unwrap());
    let srv = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(s).await.unwrap();
        let mut seen = Vec::new();
        while let Some(Ok(m)) = ws.next().await {
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            seen.push(v["type"].as_str().unwrap().to_string());
            match v["type"].as_str().unwrap() {
                "request" => {
                    let r = json!({"type":"response","peerID":"srv","requestId":v["requestId"],"data":{"ok":true}});
                    ws.send(Message::text(r.to_string())).await.unwrap();
                }
                "stream_request" => {
                    for i in 0..3 {
                        let r = json!({"type":"stream_data","peerID":"srv","requestId":v["requestId"],"data":i});
                        ws.send(Message::text(r.to_string())).await.unwrap();
                    }
                    // never ends: the client drops the stream
                }
                _ => {}
            }
        }
        seen
    });
    let c = ws_client(&url).await;
    let v: Value = c.request_response("x", &json!({})).await.unwrap();
    assert_eq!(v, json!({"ok": true}));
    let mut s = c.request_stream::<_, u64>("y", &json!({})).await.unwrap();
    assert_eq!(s.next().await.unwrap().unwrap(), 0);
    drop(s); // base peer: no cancel frame is sent
    let v: Value = c.request_response("x", &json!({})).await.unwrap();
    assert_eq!(v, json!({"ok": true}));
    c.close().await;
    let seen = tokio::time::timeout(T, srv).await.unwrap().unwrap();
    assert_eq!(seen, ["hello", "request", "stream_request", "request"]);
}

#[tokio::test]
async fn peer_vanishing_mid_stream_fails_everything_at_once() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", l.local_addr().unwrap());
    tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(s).await.unwrap();
        let mut n = 0;
        while let Some(Ok(m)) = ws.next().await {
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["type"] == "stream_request" {
                let r = json!({"type":"stream_data","peerID":"srv","requestId":v["requestId"],"data":1});
                ws.send(Message::text(r.to_string())).await.unwrap();
            }
            if v["type"] != "hello" {
                n += 1;
            }
            if n == 3 {
                break; // vanish: drop the socket without a close frame
            }
        }
    });
    let c = ws_client(&url).await;
    let mut s = c.request_stream::<_, u64>("s", &json!({})).await.unwrap();
    assert_eq!(s.next().await.unwrap().unwrap(), 1);
    let c2 = c.clone();
    let pending =
        tokio::spawn(async move { c2.request_response::<_, Value>("never", &json!({})).await });
    let (_tx, mut rx) = c
        .stream_stream::<_, Value, Value>("bi", &json!({}))
        .await
        .unwrap();
    let e1 = tokio::time::timeout(T, s.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    let e2 = tokio::time::timeout(T, pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    let e3 = tokio::time::timeout(T, rx.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    for e in [&e1, &e2, &e3] {
        assert!(
            matches!(
                e,
                bistream_rpc::RpcError::Lost(_) | bistream_rpc::RpcError::Closed { .. }
            ),
            "{e:?}"
        );
    }
    let after = c
        .request_response::<_, Value>("x", &json!({}))
        .await
        .unwrap_err();
    assert!(matches!(
        after,
        bistream_rpc::RpcError::Lost(_) | bistream_rpc::RpcError::Closed { .. }
    ));
    assert_eq!(c.state(), bistream_rpc::ConnState::Closed);
}

#[tokio::test]
async fn a_fire_and_forget_sent_just_before_hanging_up_still_runs() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let router = bistream_rpc::Router::new().fire_and_forget("slow_log", move |_v: Value| {
        let d = d.clone();
        async move {
            // Still running when the connection ends below.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            d.store(true, Ordering::SeqCst);
        }
    });
    let url = ws_server(ServerConfig::new(router)).await;
    let mut ws = raw(&url).await;
    send(&mut ws, r#"{"type":"fire_and_forget","peerID":"py","requestId":null,"data":{"operation":"slow_log"}}"#).await;
    ws.close(None).await.unwrap();
    drop(ws);
    let ran = tokio::time::timeout(T, async {
        while !done.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(ran.is_ok(), "the handler was cancelled with the connection");
}
