//! The client's opening handshake: TCP (and TLS for `wss://`) by us, the HTTP upgrade by
//! tungstenite through [`HeadGuard`], which hands tungstenite the response head and nothing
//! past it, so frames the server sent right after its response stay ours (they start the
//! [`RawWs`] read buffer).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::RawWs;
use crate::RpcError;
use bistream_rpc_proto::ws::Role;

/// A stream that reads up to the end of an HTTP head (`\r\n\r\n`) and keeps what follows.
#[derive(Debug)]
pub(crate) struct HeadGuard<S> {
    io: S,
    /// The last four bytes seen, to find the head's end across reads.
    window: u32,
    head_done: bool,
    leftover: BytesMut,
}

impl<S> HeadGuard<S> {
    pub(crate) fn new(io: S) -> Self {
        Self {
            io,
            window: 0,
            head_done: false,
            leftover: BytesMut::new(),
        }
    }

    pub(crate) fn into_parts(self) -> (S, BytesMut) {
        (self.io, self.leftover)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.head_done {
            // Past the head nothing is tungstenite's.
            return Poll::Pending;
        }
        let mut tmp = [0u8; 2048];
        let cap = buf.remaining().min(tmp.len());
        let mut rb = ReadBuf::new(&mut tmp[..cap]);
        match Pin::new(&mut this.io).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let got = rb.filled();
        let mut give = got.len();
        for (i, &b) in got.iter().enumerate() {
            this.window = (this.window << 8) | u32::from(b);
            if this.window == 0x0d0a_0d0a {
                give = i + 1;
                this.head_done = true;
                break;
            }
        }
        buf.put_slice(&got[..give]);
        this.leftover.extend_from_slice(&got[give..]);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Runs the HTTP upgrade over `io` (already TLS for `wss://`); returns the transport.
pub(crate) async fn upgrade<S>(
    req: Request,
    io: S,
    cfg: WebSocketConfig,
    max_message: usize,
) -> Result<RawWs<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ws, _resp) =
        tokio_tungstenite::client_async_with_config(req, HeadGuard::new(io), Some(cfg))
            .await
            .map_err(|e| e.to_string())?;
    let (io, leftover) = ws.into_inner().into_parts();
    Ok(RawWs::new(io, Role::Client, max_message, leftover))
}

/// The transport [`connect`] made.
pub(crate) enum Either {
    Plain(RawWs<TcpStream>),
    Tls(Box<RawWs<tokio_rustls::client::TlsStream<TcpStream>>>),
}

/// Connects to `req`'s URL (TCP without Nagle, TLS for `wss://` with `tls` or the system
/// roots) and upgrades.
pub(crate) async fn connect(
    req: Request,
    tls: Option<Arc<rustls::ClientConfig>>,
    cfg: WebSocketConfig,
    max_message: usize,
) -> Result<Either, String> {
    let uri = req.uri().clone();
    let secure = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        other => return Err(format!("unsupported scheme {other:?} (ws or wss)")),
    };
    let host = uri.host().ok_or("the url has no host")?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    if !secure {
        return Ok(Either::Plain(upgrade(req, tcp, cfg, max_message).await?));
    }
    let tls = match tls {
        Some(t) => t,
        None => bistream_core::tls::client_config(&bistream_core::tls::TlsOptions::SystemRoots)
            .map_err(|e| e.to_string())?,
    };
    let name = rustls::pki_types::ServerName::try_from(host)
        .map_err(|e| format!("invalid server name: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Either::Tls(Box::new(
        upgrade(req, stream, cfg, max_message).await?,
    )))
}

/// A connect failure as the API's error (the URL's secrets removed).
pub(crate) fn connect_error(e: &str, url: &str) -> RpcError {
    RpcError::Connect(bistream_core::sanitize_error_message(e, url))
}
