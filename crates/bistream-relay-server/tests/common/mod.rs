//! Helpers shared by the relay server's integration tests: an in-process server, raw
//! WebSocket clients (so exact frames and close codes can be checked) and timeouts on every wait.
#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bistream_relay_server::{RelayConfig, RelayServer, RunningRelay};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

pub const T: Duration = Duration::from_secs(10);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A config on 127.0.0.1:0 with the periodic log off.
pub fn config() -> RelayConfig {
    RelayConfig {
        port: 0,
        client_log_interval: None,
        close_timeout: Duration::from_millis(500),
        shutdown_timeout: Duration::from_secs(5),
        ..RelayConfig::default()
    }
}

pub async fn start(config: RelayConfig) -> RunningRelay {
    RelayServer::bind(config).await.expect("relay binds")
}

pub async fn connect(relay: &RunningRelay) -> Ws {
    connect_with(relay, None).await
}

pub async fn connect_with(relay: &RunningRelay, authorization: Option<&str>) -> Ws {
    let mut req = format!("{}/any/path", relay.url())
        .into_client_request()
        .unwrap();
    if let Some(a) = authorization {
        req.headers_mut()
            .insert("authorization", HeaderValue::from_str(a).unwrap());
    }
    let (ws, _) = tokio::time::timeout(T, tokio_tungstenite::connect_async(req))
        .await
        .expect("connect in time")
        .expect("connect");
    ws
}

pub fn registration(name: &str, uuid: Uuid) -> String {
    json!({"name": name, "uuid": uuid.to_string(), "message_type": "relay_registration"})
        .to_string()
}

pub fn peer_message(source: Uuid, source_name: &str, peer: Uuid, description: &str) -> String {
    json!({
        "source_uuid": source.to_string(), "source_name": source_name, "peer_uuid": peer.to_string(),
        "description_type": "offer", "description": description, "error": null,
        "message_type": "peer_connection"
    })
    .to_string()
}

pub async fn send(ws: &mut Ws, text: impl Into<String>) {
    tokio::time::timeout(T, ws.send(Message::text(text.into())))
        .await
        .expect("send in time")
        .expect("send");
}

/// Next text message as JSON (pings/pongs skipped). Panics on close or timeout.
pub async fn recv_json(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(T, ws.next())
            .await
            .expect("message in time");
        match m {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("JSON text"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Registers and checks the success reply.
pub async fn register(ws: &mut Ws, name: &str, uuid: Uuid) {
    send(ws, registration(name, uuid)).await;
    let reply = recv_json(ws).await;
    assert_eq!(reply["message_type"], "relay_response", "{reply}");
    assert_eq!(reply["success"], true, "{reply}");
    assert_eq!(reply["error"], false, "{reply}");
    assert_eq!(reply["message"], Value::Null, "{reply}");
}

pub async fn registered(relay: &RunningRelay, name: &str) -> (Ws, Uuid) {
    let mut ws = connect(relay).await;
    let u = Uuid::new_v4();
    register(&mut ws, name, u).await;
    (ws, u)
}

/// Reads until the server's close frame; returns (code, reason). Data messages before it
/// are skipped. Then completes the close handshake (keeps polling so the reply is sent).
pub async fn expect_close(ws: &mut Ws) -> (u16, String) {
    let got = loop {
        let m = tokio::time::timeout(T, ws.next())
            .await
            .expect("close in time");
        match m {
            Some(Ok(Message::Close(Some(f)))) => break (u16::from(f.code), f.reason.to_string()),
            Some(Ok(Message::Close(None))) => break (1005, String::new()),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    let _ = tokio::time::timeout(T, async { while let Some(Ok(_)) = ws.next().await {} }).await;
    got
}

/// Waits until `cond` holds (polling), panicking after the timeout.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Asserts no text message arrives within a short window (used only to check that nothing
/// is delivered; never to measure time).
pub async fn assert_silent(ws: &mut Ws) {
    match tokio::time::timeout(Duration::from_millis(300), ws.next()).await {
        Err(_) => {}
        Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
        Ok(other) => panic!("expected nothing, got {other:?}"),
    }
}

/// The process-wide log, captured in memory: [`LogCapture::install`] sets a plain-text
/// `tracing` subscriber writing here. Install it once per test binary (one test per binary
/// that reads the log: the subscriber is global).
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// Installs the global subscriber at `level` (no ANSI colours) and returns its capture.
    pub fn install(level: tracing::Level) -> LogCapture {
        let cap = LogCapture::default();
        let writer = cap.clone();
        tracing_subscriber::fmt()
            .with_max_level(level)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        cap
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Everything logged since the last `take`, emptying the capture.
    pub fn take(&self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut *self.0.lock().unwrap())).into_owned()
    }

    /// Whether the log holds `needle` (without copying it out).
    pub fn contains(&self, needle: &str) -> bool {
        let log = self.0.lock().unwrap();
        log.windows(needle.len()).any(|w| w == needle.as_bytes())
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
