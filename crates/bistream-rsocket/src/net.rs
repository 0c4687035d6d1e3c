//! Listening and connecting: TCP (3-byte length-prefixed frames) and WebSocket (one frame per
//! binary message at path `/`, no subprotocol, no compression).

use std::net::SocketAddr;

use bistream_core::fdlimit::AcceptBackoff;
use bistream_rpc::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;

use crate::transport::{length_prefixed, websocket, ws_config};
use crate::{start, RSocket, Role, RsConfig, RsError};

/// Accepts connections on `listener` until the future is dropped, handing each to `serve`. A
/// failed `accept` (EMFILE when the process is out of file descriptors, a connection reset
/// before it was accepted) never ends the server: it backs off with core's [`AcceptBackoff`]
/// and logs once per episode.
async fn accept_each(
    listener: &TcpListener,
    kind: &str,
    mut serve: impl FnMut(TcpStream, SocketAddr),
) {
    let mut backoff = AcceptBackoff::default();
    let mut failures: u64 = 0;
    loop {
        match listener.accept().await {
            Ok((sock, peer)) => {
                backoff.succeeded();
                let _ = sock.set_nodelay(true);
                serve(sock, peer);
            }
            Err(e) => {
                failures += 1;
                let (pause, first) = backoff.failed();
                if first {
                    tracing::warn!(error = %e, failures, kind, "rsocket accept failed: backing off");
                }
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Serves RSocket over TCP on `listener` until the future is dropped: one connection per
/// client, each serving `router`. Accept failures back off and never end it.
pub async fn serve_tcp(
    listener: TcpListener,
    router: Router,
    cfg: RsConfig,
) -> std::io::Result<()> {
    accept_each(&listener, "tcp", |sock, peer| {
        tracing::debug!(%peer, "rsocket tcp connection");
        let rs = start(
            length_prefixed(sock, cfg.max_frame_bytes),
            Role::Server,
            router.clone(),
            cfg.clone(),
        );
        tokio::spawn(async move {
            let cause = rs.closed().await;
            tracing::debug!(%peer, %cause, "rsocket tcp connection ended");
        });
    })
    .await;
    Ok(())
}

/// Serves RSocket over WebSocket on `listener` (path `/` only; other paths get 404) until the
/// future is dropped. Accept failures back off and never end it.
pub async fn serve_ws(listener: TcpListener, router: Router, cfg: RsConfig) -> std::io::Result<()> {
    accept_each(&listener, "ws", |sock, peer| {
        let router = router.clone();
        let cfg = cfg.clone();
        tokio::spawn(async move {
            // The callback's type is tungstenite's (its error is an HTTP response).
            #[allow(clippy::result_large_err)]
            let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
                if req.uri().path() != "/" {
                    let mut r = ErrorResponse::new(Some("RSocket is served at /".into()));
                    *r.status_mut() = StatusCode::NOT_FOUND;
                    return Err(r);
                }
                Ok(resp)
            };
            let handshake = tokio_tungstenite::accept_hdr_async_with_config(
                sock,
                check,
                Some(ws_config(cfg.max_frame_bytes)),
            );
            let ws = match tokio::time::timeout(cfg.setup_timeout, handshake).await {
                Ok(Ok(ws)) => ws,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "rsocket websocket handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let rs = start(websocket(ws), Role::Server, router, cfg);
            let cause = rs.closed().await;
            tracing::debug!(%peer, %cause, "rsocket websocket connection ended");
        });
    })
    .await;
    Ok(())
}

/// Connects to an RSocket TCP server at `addr` (HOST:PORT) and sends SETUP; `router` serves
/// the server's requests.
pub async fn connect_tcp(addr: &str, router: Router, cfg: RsConfig) -> Result<RSocket, RsError> {
    let sock = tokio::time::timeout(cfg.setup_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| RsError::Connect(format!("{addr}: timed out")))?
        .map_err(|e| RsError::Connect(format!("{addr}: {e}")))?;
    let _ = sock.set_nodelay(true);
    Ok(start(
        length_prefixed(sock, cfg.max_frame_bytes),
        Role::Client,
        router,
        cfg,
    ))
}

/// Connects to an RSocket WebSocket server at `url` (`ws://HOST:PORT/`) and sends SETUP.
pub async fn connect_ws(url: &str, router: Router, cfg: RsConfig) -> Result<RSocket, RsError> {
    let fut = tokio_tungstenite::connect_async_with_config(
        url,
        Some(ws_config(cfg.max_frame_bytes)),
        true,
    );
    let (ws, _) = tokio::time::timeout(cfg.setup_timeout, fut)
        .await
        .map_err(|_| RsError::Connect(format!("{url}: timed out")))?
        .map_err(|e| RsError::Connect(format!("{url}: {e}")))?;
    Ok(start(websocket(ws), Role::Client, router, cfg))
}
