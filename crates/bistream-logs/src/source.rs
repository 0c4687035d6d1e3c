//! The two transports as one byte-chunk source ([`Source`]): a WebSocket (frames) or an HTTP
//! response body (chunks), each connected with the options' timeouts and mapped to
//! status-coded errors (refused or DNS 503, timeout 408, HTTP 404 404, others named).

use std::time::Duration;

use bistream_core::{parse_web_url, redact_url, ClientError, Scheme, Status};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{
    self, client::IntoClientRequest, http::HeaderName, http::HeaderValue,
    protocol::frame::coding::CloseCode, protocol::WebSocketConfig, Message, Utf8Bytes,
};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::options::TailOptions;

/// How much of an error body is quoted in the message.
const ERROR_BODY_QUOTE: usize = 512;

/// A connected transport.
pub(crate) enum Source {
    /// A WebSocket: every data frame is a chunk (one message toward `max_messages`).
    Ws(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
    /// An HTTP response body.
    Http(reqwest::Response),
}

/// The next chunk, or how the stream ended.
pub(crate) enum Chunk {
    /// Bytes; `message` says whether it counts as one transport message.
    Data { bytes: Bytes, message: bool },
    /// A WebSocket text message (one transport message), UTF-8 already checked by tungstenite.
    Text(Utf8Bytes),
    /// A normal end: WebSocket Close 1000 (or an empty close), or the HTTP body's end.
    End,
}

impl Source {
    /// Connects to `url` (`ws`/`wss` or `http`/`https`).
    pub(crate) async fn connect(url: &str, opts: &TailOptions) -> Result<Source, ClientError> {
        let (scheme, parsed) = web_url(url, opts.context.as_str())?;
        if scheme.is_websocket() {
            connect_ws(url, scheme, opts).await
        } else {
            connect_http(parsed, opts).await
        }
    }

    /// The next chunk, with no timeout. Cancel-safe: dropping it before it is ready loses
    /// nothing (tungstenite keeps a partial message in its buffer, hyper a partial chunk).
    pub(crate) async fn read(&mut self, ctx: &str) -> Result<Chunk, ClientError> {
        match self {
            Source::Ws(ws) => next_ws(ws, ctx).await,
            Source::Http(resp) => match resp.chunk().await {
                Ok(Some(bytes)) => Ok(Chunk::Data {
                    bytes,
                    message: false,
                }),
                Ok(None) => Ok(Chunk::End),
                Err(e) => Err(reqwest_error(&e, ctx, "reading the response body")),
            },
        }
    }

    /// Waits for the next chunk: a chunk already there (nearly always, mid-stream) is taken
    /// without touching the clock or a timer; only a read that has to wait takes its
    /// deadline from `deadline` (`None`: wait forever), filling it in with now + `idle` if
    /// empty. The slot outlives a cancelled call, so polling again does not restart the
    /// idle timeout.
    pub(crate) async fn next_chunk(
        &mut self,
        idle: Option<Duration>,
        deadline: &mut Option<tokio::time::Instant>,
        ctx: &str,
    ) -> Result<Chunk, ClientError> {
        let read = self.read(ctx);
        let Some(idle) = idle else {
            return read.await;
        };
        let mut read = std::pin::pin!(read);
        if let std::task::Poll::Ready(got) = futures_util::poll!(read.as_mut()) {
            return got;
        }
        let at = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + idle);
        tokio::time::timeout_at(at, read).await.unwrap_or_else(|_| {
            Err(ClientError::with_context(
                Status::Timeout,
                ctx,
                format!("no data for {} (idle timeout)", secs(idle)),
            ))
        })
    }
}

/// `url` checked by core's one URL rule (strict `scheme://`, no control characters, a host;
/// http, https, ws or wss); a refusal is a 400 that never echoes credentials.
fn web_url(url: &str, ctx: &str) -> Result<(Scheme, reqwest::Url), ClientError> {
    parse_web_url(url)
        .map_err(|e| ClientError::with_context(Status::InvalidInput, ctx, e.to_string()))
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

async fn connect_ws(url: &str, scheme: Scheme, opts: &TailOptions) -> Result<Source, ClientError> {
    let ctx = opts.context.as_str();
    let mut request = url.into_client_request().map_err(|e| {
        ClientError::with_context(Status::InvalidInput, ctx, format!("invalid URL {url}: {e}"))
    })?;
    for (name, value) in &opts.headers {
        let (n, v) = header_pair(name, value, ctx)?;
        request.headers_mut().append(n, v);
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(opts.max_frame_size))
        .max_frame_size(Some(opts.max_frame_size));
    let connector = if scheme.is_tls() {
        Some(tokio_tungstenite::Connector::Rustls(
            crate::tls::client_config(&opts.tls, ctx, true)?,
        ))
    } else {
        None
    };
    // tungstenite offers no extension, so permessage-deflate is never offered (Ray's proxy
    // cannot relay it: the stream would end empty with Close 1000).
    let connect =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, connector);
    match tokio::time::timeout(opts.connect_timeout, connect).await {
        Err(_) => Err(ClientError::with_context(
            Status::Timeout,
            ctx,
            format!(
                "connecting to {url} took longer than {}",
                secs(opts.connect_timeout)
            ),
        )),
        Ok(Ok((ws, _response))) => Ok(Source::Ws(Box::new(ws))),
        Ok(Err(e)) => Err(ws_connect_error(e, url, ctx)),
    }
}

fn ws_connect_error(e: tungstenite::Error, url: &str, ctx: &str) -> ClientError {
    if let Some(why) = crate::tls::certificate_problem(&e) {
        return ClientError::with_context(
            Status::ConnectionFailed,
            ctx,
            format!("TLS with {url} failed: {why}"),
        );
    }
    match e {
        tungstenite::Error::Http(resp) => {
            let body = resp.body().as_deref().unwrap_or_default();
            let quote = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_QUOTE)]);
            let status = resp.status();
            ClientError::http_status(
                status.as_u16(),
                status.canonical_reason(),
                ctx,
                &format!("WebSocket handshake with {url} refused: {quote}"),
            )
        }
        tungstenite::Error::Io(io) => ClientError::with_context(
            Status::from_io(&io),
            ctx,
            format!("cannot connect to {url}: {io}"),
        ),
        tungstenite::Error::Url(u) => {
            ClientError::with_context(Status::InvalidInput, ctx, format!("invalid URL {url}: {u}"))
        }
        tungstenite::Error::Tls(t) => ClientError::with_context(
            Status::ConnectionFailed,
            ctx,
            format!("TLS with {url} failed: {t}"),
        ),
        other => ClientError::with_context(
            Status::Internal,
            ctx,
            format!("WebSocket handshake with {url} failed: {other}"),
        ),
    }
}

async fn next_ws(
    ws: &mut WebSocketStream<MaybeTlsStream<TcpStream>>,
    ctx: &str,
) -> Result<Chunk, ClientError> {
    loop {
        let Some(msg) = ws.next().await else {
            return Err(ClientError::with_context(
                Status::ConnectionFailed,
                ctx,
                "connection closed without a close frame (1006)",
            ));
        };
        match msg {
            Ok(Message::Text(t)) => return Ok(Chunk::Text(t)),
            Ok(Message::Binary(b)) => {
                return Ok(Chunk::Data {
                    bytes: b,
                    message: true,
                })
            }
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
            Ok(Message::Close(None)) => return Ok(Chunk::End),
            Ok(Message::Close(Some(frame))) => {
                if frame.code == CloseCode::Normal {
                    return Ok(Chunk::End);
                }
                let reason = if frame.reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", frame.reason.as_str())
                };
                return Err(ClientError::with_context(
                    Status::ConnectionFailed,
                    ctx,
                    format!(
                        "server closed the stream abnormally: close code {}{reason}",
                        u16::from(frame.code)
                    ),
                ));
            }
            Err(e) => return Err(ws_read_error(e, ctx)),
        }
    }
}

fn ws_read_error(e: tungstenite::Error, ctx: &str) -> ClientError {
    use tungstenite::error::{CapacityError, ProtocolError};
    match e {
        tungstenite::Error::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            ClientError::with_context(
                Status::LimitExceeded,
                ctx,
                format!("WebSocket message of {size} bytes exceeds the maximum frame size of {max_size} bytes"),
            )
        }
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => ClientError::with_context(
            Status::ConnectionFailed,
            ctx,
            "connection reset without a close frame (1006)",
        ),
        tungstenite::Error::Io(io) => ClientError::with_context(
            Status::from_io(&io),
            ctx,
            format!("connection lost: {io}"),
        ),
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            ClientError::with_context(Status::ConnectionFailed, ctx, "connection closed")
        }
        tungstenite::Error::Protocol(p) => ClientError::with_context(
            Status::ConnectionFailed,
            ctx,
            format!("WebSocket protocol error from the server: {p}"),
        ),
        other => ClientError::with_context(Status::Internal, ctx, format!("WebSocket error: {other}")),
    }
}

fn header_pair(
    name: &str,
    value: &str,
    ctx: &str,
) -> Result<(HeaderName, HeaderValue), ClientError> {
    let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
        ClientError::with_context(
            Status::InvalidInput,
            ctx,
            format!("invalid header name {name:?}"),
        )
    })?;
    // The value is never quoted: it may be a credential.
    let v = HeaderValue::from_str(value).map_err(|_| {
        ClientError::with_context(
            Status::InvalidInput,
            ctx,
            format!("invalid value for header {name:?} (control characters or non-ASCII)"),
        )
    })?;
    Ok((n, v))
}

async fn connect_http(url: reqwest::Url, opts: &TailOptions) -> Result<Source, ClientError> {
    let ctx = opts.context.as_str();
    // Always hand reqwest our TLS config: without one it has no crypto provider at all.
    let tls = crate::tls::client_config(&opts.tls, ctx, url.scheme() == "https")?;
    let client = reqwest::Client::builder()
        .connect_timeout(opts.connect_timeout)
        .tcp_nodelay(true)
        .tls_backend_preconfigured((*tls).clone())
        .build()
        .map_err(|e| {
            ClientError::with_context(
                Status::Internal,
                ctx,
                format!("cannot build the HTTP client: {e}"),
            )
        })?;
    let mut req = client.get(url.clone());
    for (name, value) in &opts.headers {
        let (n, v) = header_pair(name, value, ctx)?;
        req = req.header(n.as_str(), v.as_bytes());
    }
    // The connect timeout bounds reaching the server and getting the response headers.
    let sent = tokio::time::timeout(opts.connect_timeout, req.send()).await;
    let resp = match sent {
        Err(_) => {
            return Err(ClientError::with_context(
                Status::Timeout,
                ctx,
                format!(
                    "no response from {url} within {}",
                    secs(opts.connect_timeout)
                ),
            ))
        }
        Ok(Err(e)) => return Err(reqwest_error(&e, ctx, &format!("requesting {url}"))),
        Ok(Ok(resp)) => resp,
    };
    let status = resp.status();
    if status.is_success() {
        return Ok(Source::Http(resp));
    }
    let quote = error_body(resp, opts.connect_timeout).await;
    Err(ClientError::http_status(
        status.as_u16(),
        status.canonical_reason(),
        ctx,
        &quote,
    ))
}

/// A small whole response body (`GET url`), at most `max` bytes, within the connect timeout.
pub(crate) async fn get_small(
    url: &str,
    opts: &TailOptions,
    max: usize,
) -> Result<Vec<u8>, ClientError> {
    let ctx = opts.context.as_str();
    let (scheme, parsed) = web_url(url, ctx)?;
    if scheme.is_websocket() {
        return Err(ClientError::with_context(
            Status::InvalidInput,
            ctx,
            format!("{} needs an http or https URL", redact_url(url)),
        ));
    }
    let Source::Http(mut resp) = connect_http(parsed, opts).await? else {
        return Err(ClientError::with_context(
            Status::Internal,
            ctx,
            "not an HTTP response",
        ));
    };
    let mut body = Vec::new();
    let read = async {
        while let Some(c) = resp
            .chunk()
            .await
            .map_err(|e| reqwest_error(&e, ctx, &format!("reading {url}")))?
        {
            if body.len() + c.len() > max {
                return Err(ClientError::with_context(
                    Status::LimitExceeded,
                    ctx,
                    format!("response from {url} is larger than {max} bytes"),
                ));
            }
            body.extend_from_slice(&c);
        }
        Ok(())
    };
    tokio::time::timeout(opts.connect_timeout, read)
        .await
        .map_err(|_| {
            ClientError::with_context(
                Status::Timeout,
                ctx,
                format!(
                    "reading {url} took longer than {}",
                    secs(opts.connect_timeout)
                ),
            )
        })??;
    Ok(body)
}

/// The start of an error response's body, read with a bound on size and time.
async fn error_body(mut resp: reqwest::Response, limit: Duration) -> String {
    let mut body = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        while body.len() < ERROR_BODY_QUOTE {
            match resp.chunk().await {
                Ok(Some(c)) => body.extend_from_slice(&c),
                _ => break,
            }
        }
    })
    .await;
    body.truncate(ERROR_BODY_QUOTE);
    String::from_utf8_lossy(&body).into_owned()
}

fn reqwest_error(e: &reqwest::Error, ctx: &str, doing: &str) -> ClientError {
    if let Some(why) = crate::tls::certificate_problem(e) {
        return ClientError::with_context(
            Status::ConnectionFailed,
            ctx,
            format!("{doing}: TLS failed: {why}"),
        );
    }
    // The whole cause chain: reqwest's top-level text alone hides "connection refused".
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    let status = if e.is_timeout() {
        Status::Timeout
    } else if e.is_connect() || e.is_body() || e.is_request() || e.is_decode() {
        Status::ConnectionFailed
    } else {
        Status::Internal
    };
    ClientError::with_context(status, ctx, format!("{doing}: {text}"))
}
