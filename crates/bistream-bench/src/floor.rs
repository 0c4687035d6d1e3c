//! The physical floors, served by `bistream bench floor-server KIND ADDR` as their own process
//! (like every server under test): a WebSocket echo (tokio-tungstenite, no protocol work) and a
//! TCP echo (a raw byte copy back to the sender). Each prints its bound address as its first
//! stdout line, then serves until killed.

use std::net::SocketAddr;

use anyhow::Context;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// Which floor server to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloorKind {
    /// Echoes every WebSocket message back on its connection.
    WsEcho,
    /// Copies every byte back to the sender.
    TcpEcho,
    /// jsonrpsee's WebSocket server with an `echo` method (the rpc suite's peer).
    JsonrpseeEcho,
}

impl FloorKind {
    /// Command-line name.
    pub fn name(self) -> &'static str {
        match self {
            FloorKind::WsEcho => "ws-echo",
            FloorKind::TcpEcho => "tcp-echo",
            FloorKind::JsonrpseeEcho => "jsonrpsee-echo",
        }
    }
}

impl std::str::FromStr for FloorKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ws-echo" => Ok(FloorKind::WsEcho),
            "tcp-echo" => Ok(FloorKind::TcpEcho),
            "jsonrpsee-echo" => Ok(FloorKind::JsonrpseeEcho),
            _ => Err(format!(
                "unknown floor server {s:?} (ws-echo, tcp-echo, jsonrpsee-echo)"
            )),
        }
    }
}

/// Binds `addr`, prints the bound address on stdout, and serves forever.
pub async fn run_floor_server(kind: FloorKind, addr: SocketAddr) -> anyhow::Result<()> {
    if kind == FloorKind::JsonrpseeEcho {
        return crate::suites::rpc::jsonrpsee_server(addr).await;
    }
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind {addr}"))?;
    let local = listener.local_addr()?;
    println!("{} listening on {local}", kind.name());
    loop {
        let (sock, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of fds and similar: back off briefly, keep serving.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        tokio::spawn(async move {
            let res = match kind {
                FloorKind::WsEcho => ws_echo(sock).await,
                FloorKind::TcpEcho | FloorKind::JsonrpseeEcho => tcp_echo(sock).await,
            };
            if let Err(e) = res {
                tracing::debug!("floor connection ended: {e:#}");
            }
        });
    }
}

async fn ws_echo(sock: TcpStream) -> anyhow::Result<()> {
    let mut ws = tokio_tungstenite::accept_async(sock).await?;
    // Echo everything already received, then flush once (the batching any good server does).
    while let Some(msg) = ws.next().await {
        let mut next = Some(msg);
        let mut n = 0;
        while let Some(msg) = next.take() {
            match msg? {
                m @ (Message::Text(_) | Message::Binary(_)) => ws.feed(m).await?,
                Message::Close(_) => return Ok(()),
                _ => {}
            }
            n += 1;
            if n < 64 {
                next = ws.next().now_or_never().flatten();
            }
        }
        ws.flush().await?;
    }
    Ok(())
}

async fn tcp_echo(mut sock: TcpStream) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        sock.write_all(buf.get(..n).unwrap_or_default()).await?;
    }
}
