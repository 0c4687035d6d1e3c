//! WebSocket transport endpoints: an axum route that serves rpc at any path next to an
//! application's other routes ([`route`], [`app`]), a standalone server ([`serve`]), and a
//! client ([`connect`]) with rustls TLS and extra request headers. After the handshake both
//! sides speak WebSocket through [`crate::wsraw`] (our sans-IO framing, D44).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bistream_rpc_proto::Side;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::transport::ws_config;
use crate::wsraw::handshake::{self, Either};
use crate::wsraw::RawWs;
use crate::{start, Connection, Router, RpcConfig, RpcError};
use bistream_rpc_proto::ws::Role as WsRole;

/// Called with each accepted connection (to call the client back, or to track it).
pub type OnConnect = Arc<dyn Fn(Connection) + Send + Sync>;

/// What a WebSocket rpc endpoint serves.
#[derive(Clone)]
pub struct ServerConfig {
    /// Handlers.
    pub router: Router,
    /// Connection settings.
    pub rpc: RpcConfig,
    /// Hook for each new connection.
    pub on_connect: Option<OnConnect>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("router", &self.router)
            .field("rpc", &self.rpc)
            .finish()
    }
}

impl ServerConfig {
    /// Serves `router` with default settings.
    pub fn new(router: Router) -> Self {
        Self {
            router,
            rpc: RpcConfig::default(),
            on_connect: None,
        }
    }
}

fn bad(msg: &'static str) -> Response {
    (StatusCode::BAD_REQUEST, msg).into_response()
}

async fn upgrade(cfg: Arc<ServerConfig>, mut req: Request) -> Response {
    let h = req.headers();
    let has = |name: header::HeaderName, want: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(want)))
        })
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return bad("this endpoint speaks rpc over WebSocket: send a WebSocket upgrade");
    }
    if h.get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return bad("unsupported Sec-WebSocket-Version (13 required)");
    }
    let Some(key) = h.get(header::SEC_WEBSOCKET_KEY) else {
        return bad("missing Sec-WebSocket-Key");
    };
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "rpc websocket upgrade failed");
                return;
            }
        };
        let ws = RawWs::new(
            TokioIo::new(upgraded),
            WsRole::Server,
            cfg.rpc.limits.max_frame_bytes,
            bytes::BytesMut::new(),
        );
        let conn = start(ws, Side::Acceptor, cfg.router.clone(), cfg.rpc.clone());
        if let Some(hook) = &cfg.on_connect {
            hook(conn.clone());
        }
        conn.closed().await;
    });
    let mut res = Response::new(axum::body::Body::empty());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let hs = res.headers_mut();
    hs.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    hs.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        hs.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    res
}

/// An axum method router serving rpc over WebSocket; mount it at a path:
///
/// ```
/// let api: axum::Router = axum::Router::new()
///     .route("/health", axum::routing::get(|| async { "ok" }))
///     .route("/rpc", bistream_rpc::ws::route(bistream_rpc::ws::ServerConfig::new(bistream_rpc::Router::new())));
/// # let _ = api;
/// ```
pub fn route<S: Clone + Send + Sync + 'static>(
    cfg: ServerConfig,
) -> axum::routing::MethodRouter<S> {
    let cfg = Arc::new(cfg);
    axum::routing::get(move |req: Request| upgrade(cfg.clone(), req))
}

/// An axum app serving rpc at every path.
pub fn app(cfg: ServerConfig) -> axum::Router {
    axum::Router::new().fallback_service(route::<()>(cfg))
}

/// Serves rpc over WebSocket on `listener` at any path until the future is dropped.
pub async fn serve(listener: tokio::net::TcpListener, cfg: ServerConfig) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // axum leaves Nagle on: stream items written back to back would wait for the peer's
    // delayed ACK (7,978 -> 471,380 items/s in `bench rpc --quick`). The client side already
    // disables it.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app(cfg)).await
}

/// Client settings.
#[derive(Clone)]
pub struct ClientOptions {
    /// Handlers the server may call on us.
    pub router: Router,
    /// Connection settings.
    pub rpc: RpcConfig,
    /// Extra request headers (e.g. `Authorization`).
    pub headers: Vec<(String, String)>,
    /// TLS settings for `wss://` (default: system roots).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Limit on connecting (TCP + TLS + handshake); default 30 s.
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            router: Router::new(),
            rpc: RpcConfig::default(),
            headers: Vec::new(),
            tls: None,
            connect_timeout: Duration::from_secs(30),
        }
    }
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ClientOptions")
            .field("rpc", &self.rpc)
            .field("headers", &names)
            .field("custom_tls", &self.tls.is_some())
            .finish()
    }
}

/// Connects to a `ws://` or `wss://` rpc endpoint.
pub async fn connect(url: &str, opts: ClientOptions) -> Result<Connection, RpcError> {
    let mut req = url
        .into_client_request()
        .map_err(|e| RpcError::Connect(format!("invalid url: {e}")))?;
    for (k, v) in &opts.headers {
        let name = header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| RpcError::Connect(format!("invalid header name {k:?}: {e}")))?;
        let value = HeaderValue::from_str(v)
            .map_err(|e| RpcError::Connect(format!("invalid value for header {k}: {e}")))?;
        req.headers_mut().append(name, value);
    }
    let cfg = ws_config(opts.rpc.limits.max_frame_bytes);
    let max = opts.rpc.limits.max_frame_bytes;
    let fut = handshake::connect(req, opts.tls, cfg, max);
    let t = tokio::time::timeout(opts.connect_timeout, fut)
        .await
        .map_err(|_| RpcError::Connect(format!("timed out after {:?}", opts.connect_timeout)))?
        .map_err(|e| handshake::connect_error(&e, url))?;
    Ok(match t {
        Either::Plain(t) => start(t, Side::Initiator, opts.router, opts.rpc),
        Either::Tls(t) => start(*t, Side::Initiator, opts.router, opts.rpc),
    })
}

/// A rustls client configuration trusting the PEM certificates in `path` (for `wss://` to a
/// server with a private CA, or pinning a self-signed server certificate), built by
/// bistream-core's one TLS client setup ([`bistream_core::tls::TlsOptions::CaFile`]).
///
/// # Errors
/// [`RpcError::Connect`] naming the file and what is wrong with it.
pub fn tls_with_ca_file(path: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, RpcError> {
    use bistream_core::tls::{client_config, TlsOptions};
    client_config(&TlsOptions::CaFile(path.to_path_buf()))
        .map_err(|e| RpcError::Connect(e.to_string()))
}
