//! Rpc over byte streams with length-delimited frames: TCP and Unix-socket servers and
//! clients, a child process's stdio, and our own stdio. Every listener kind goes through one
//! accept loop ([`serve`]), paced by core's [`AcceptBackoff`] when `accept` fails.

use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::Arc;

use bistream_core::fdlimit::AcceptBackoff;

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

/// A listener the accept loop can drive: TCP or a Unix socket (or a scripted one in tests).
pub trait Accept: Send {
    /// The accepted byte stream.
    type Io: AsyncRead + AsyncWrite + Send + 'static;
    /// What the listener serves, for log lines (`"tcp"`, `"unix"`).
    const KIND: &'static str;
    /// The next connection.
    fn accept(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    const KIND: &'static str = "tcp";
    async fn accept(&self) -> io::Result<Self::Io> {
        let (s, _) = tokio::net::TcpListener::accept(self).await?;
        let _ = s.set_nodelay(true);
        Ok(s)
    }
}

#[cfg(unix)]
impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    const KIND: &'static str = "unix";
    async fn accept(&self) -> io::Result<Self::Io> {
        Ok(tokio::net::UnixListener::accept(self).await?.0)
    }
}

/// Serves every connection accepted on `listener` until the future is dropped. A failed
/// `accept` (EMFILE and the like) never ends the server: the loop pauses by
/// [`AcceptBackoff`] (10 ms doubling to 1 s, logged once per episode) and keeps serving.
pub async fn serve<L: Accept>(listener: L, cfg: ServerConfig) -> io::Result<()> {
    let cfg = Arc::new(cfg);
    let mut backoff = AcceptBackoff::default();
    let mut failures: u64 = 0;
    loop {
        match listener.accept().await {
            Ok(s) => {
                backoff.succeeded();
                let conn = over(s, Side::Acceptor, cfg.router.clone(), cfg.rpc.clone());
                if let Some(hook) = &cfg.on_connect {
                    hook(conn.clone());
                }
                tokio::spawn(async move {
                    conn.closed().await;
                });
            }
            Err(e) => {
                failures += 1;
                let (pause, first) = backoff.failed();
                if first {
                    tracing::warn!(error = %e, failures, kind = L::KIND, "rpc accept failed: backing off");
                }
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Serves every TCP connection accepted on `listener` until the future is dropped
/// ([`serve`]).
pub async fn serve_tcp(listener: tokio::net::TcpListener, cfg: ServerConfig) -> io::Result<()> {
    serve(listener, cfg).await
}

/// Serves every connection accepted on a Unix socket until the future is dropped
/// ([`serve`]).
#[cfg(unix)]
pub async fn serve_unix(listener: tokio::net::UnixListener, cfg: ServerConfig) -> io::Result<()> {
    serve(listener, cfg).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A listener that fails `failures` times, then hands out one end of a duplex pipe per
    /// call (the other ends are kept so the connections stay open).
    struct Scripted {
        script: Mutex<VecDeque<io::Result<tokio::io::DuplexStream>>>,
        accepted_at: Mutex<Vec<tokio::time::Instant>>,
    }

    impl Accept for Arc<Scripted> {
        type Io = tokio::io::DuplexStream;
        const KIND: &'static str = "scripted";
        async fn accept(&self) -> io::Result<Self::Io> {
            self.accepted_at
                .lock()
                .unwrap()
                .push(tokio::time::Instant::now());
            let next = self.script.lock().unwrap().pop_front();
            match next {
                Some(r) => r,
                None => std::future::pending().await,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn accept_failures_back_off_and_the_loop_keeps_serving() {
        let mut script = VecDeque::new();
        for _ in 0..3 {
            script.push_back(Err(io::Error::other("EMFILE (scripted)")));
        }
        let (ours, _theirs) = tokio::io::duplex(64);
        script.push_back(Ok(ours));
        let listener = Arc::new(Scripted {
            script: Mutex::new(script),
            accepted_at: Mutex::new(Vec::new()),
        });
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut cfg = ServerConfig::new(Router::new());
        cfg.on_connect = Some(Arc::new(move |c: Connection| {
            let _ = tx.send(c);
        }));
        let server = tokio::spawn(serve(listener.clone(), cfg));
        let conn = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("a connection after the failures")
            .expect("hook called");
        drop(conn);
        let at = listener.accepted_at.lock().unwrap().clone();
        // Three failures, then the success, then the loop waits for the next client.
        assert_eq!(at.len(), 5, "{at:?}");
        let gaps: Vec<_> = at.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(
            &gaps[..3],
            &[
                AcceptBackoff::MIN,
                AcceptBackoff::MIN * 2,
                AcceptBackoff::MIN * 4
            ]
        );
        assert!(!server.is_finished());
        server.abort();
    }
}
