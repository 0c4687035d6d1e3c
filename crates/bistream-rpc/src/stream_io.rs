//! Rpc over byte streams with length-delimited frames: TCP and Unix-socket servers and
//! clients, a child process's stdio, and our own stdio.

use std::path::Path;
use std::sync::Arc;

use bistream_rpc_proto::Side;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::transport::LengthDelimited;
use crate::ws::ServerConfig;
use crate::{start, Connection, Router, RpcConfig, RpcError};

/// Starts a connection over any duplex byte stream.
pub fn over<T: AsyncRead + AsyncWrite + Send + 'static>(
    io: T,
    side: Side,
    router: Router,
    cfg: RpcConfig,
) -> Connection {
    let max = cfg.limits.max_frame_bytes;
    start(LengthDelimited::new(io, max), side, router, cfg)
}

/// Starts a connection over a read half and a write half (a child's stdout/stdin, our
/// stdin/stdout).
pub fn over_halves<R, W>(
    read: R,
    write: W,
    side: Side,
    router: Router,
    cfg: RpcConfig,
) -> Connection
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let max = cfg.limits.max_frame_bytes;
    start(
        LengthDelimited::from_halves(read, write, max),
        side,
        router,
        cfg,
    )
}

fn spawn_conn(conn: Connection, cfg: &ServerConfig) {
    if let Some(hook) = &cfg.on_connect {
        hook(conn.clone());
    }
    tokio::spawn(async move {
        conn.closed().await;
    });
}

/// Serves every TCP connection accepted on `listener` until the future is dropped.
pub async fn serve_tcp(
    listener: tokio::net::TcpListener,
    cfg: ServerConfig,
) -> std::io::Result<()> {
    let cfg = Arc::new(cfg);
    loop {
        let (s, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "rpc tcp accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = s.set_nodelay(true);
        spawn_conn(
            over(s, Side::Acceptor, cfg.router.clone(), cfg.rpc.clone()),
            &cfg,
        );
    }
}

/// Serves every connection accepted on a Unix socket until the future is dropped.
#[cfg(unix)]
pub async fn serve_unix(
    listener: tokio::net::UnixListener,
    cfg: ServerConfig,
) -> std::io::Result<()> {
    let cfg = Arc::new(cfg);
    loop {
        let (s, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "rpc unix accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        spawn_conn(
            over(s, Side::Acceptor, cfg.router.clone(), cfg.rpc.clone()),
            &cfg,
        );
    }
}

/// Connects over TCP (`host:port`).
pub async fn connect_tcp(
    addr: &str,
    router: Router,
    cfg: RpcConfig,
) -> Result<Connection, RpcError> {
    let s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| RpcError::Connect(format!("tcp {addr}: {e}")))?;
    let _ = s.set_nodelay(true);
    Ok(over(s, Side::Initiator, router, cfg))
}

/// Connects to a Unix socket.
#[cfg(unix)]
pub async fn connect_unix(
    path: &Path,
    router: Router,
    cfg: RpcConfig,
) -> Result<Connection, RpcError> {
    let s = tokio::net::UnixStream::connect(path)
        .await
        .map_err(|e| RpcError::Connect(format!("unix {}: {e}", path.display())))?;
    Ok(over(s, Side::Initiator, router, cfg))
}

/// Talks rpc with a child process over its stdin/stdout (we are the initiator).
pub fn over_child(
    child: &mut tokio::process::Child,
    router: Router,
    cfg: RpcConfig,
) -> Result<Connection, RpcError> {
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| RpcError::Connect("child stdin is not piped".into()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| RpcError::Connect("child stdout is not piped".into()))?;
    Ok(over_halves(stdout, stdin, Side::Initiator, router, cfg))
}

/// Serves rpc on our own stdin/stdout (we are the acceptor).
pub fn over_stdio(router: Router, cfg: RpcConfig) -> Connection {
    over_halves(
        tokio::io::stdin(),
        tokio::io::stdout(),
        Side::Acceptor,
        router,
        cfg,
    )
}
