//! One connection attempt: open the WebSocket (with the handshake headers and TLS settings),
//! send the registration, and wait for the relay's `relay_response`. The exchange after the
//! WebSocket opens ([`handshake`]) works on any stream, so it is unit-tested in memory.

use bistream_core::sanitize;
use bistream_relay_proto::{RelayMessage, RelayRegistrationRequest};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use uuid::Uuid;

use crate::builder::Config;
use crate::connection::{Io, WsStream};
use crate::RelayError;

/// One attempt: open the WebSocket, register, wait for the reply (each step bounded by the
/// registration timeout).
pub(crate) async fn register(cfg: &Config) -> Result<WsStream, RelayError> {
    let timeout = cfg.registration_timeout;
    // build() checked that the library accepts this URL.
    let mut request = cfg.url.as_str().into_client_request().map_err(|e| {
        RelayError::InvalidConfig(format!(
            "the WebSocket library refused the relay address {}: {}",
            cfg.log_address,
            sanitize(&e.to_string())
        ))
    })?;
    for (name, value) in &cfg.headers {
        request.headers_mut().append(name.clone(), value.clone());
    }
    let open = async {
        let stream = dial(cfg, request.uri()).await?;
        tokio_tungstenite::client_async_tls_with_config(
            request,
            stream,
            Some(cfg.ws_config()),
            cfg.connector.clone(),
        )
        .await
        .map_err(RelayError::from_ws)
    };
    let (mut ws, _response) =
        tokio::time::timeout(timeout, open)
            .await
            .map_err(|_| RelayError::Timeout {
                after: timeout,
                during: "opening the WebSocket",
            })??;
    handshake(&mut ws, &cfg.name, cfg.uuid, timeout).await?;
    Ok(ws)
}

/// Opens the byte stream for one attempt: a TCP connection without Nagle's delay to the URL's
/// host and port (an IPv6 literal without its brackets, as the socket API wants it), or the
/// test dialer's stream.
async fn dial(cfg: &Config, uri: &Uri) -> Result<Box<dyn Io>, RelayError> {
    #[cfg(test)]
    if let Some(dialer) = &cfg.dialer {
        return Ok(dialer());
    }
    #[cfg(not(test))]
    let _ = cfg; // only tests substitute the stream
    let host = uri.host().unwrap_or_default();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("wss") {
            443
        } else {
            80
        });
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| RelayError::from_io(&e))?;
    // As tungstenite's own connect: small signaling messages should not wait.
    tcp.set_nodelay(true).map_err(|e| RelayError::from_io(&e))?;
    Ok(Box::new(tcp))
}

/// Sends the registration on an open WebSocket and waits up to `timeout` for the reply.
pub(crate) async fn handshake<S>(
    ws: &mut WebSocketStream<S>,
    name: &str,
    uuid: Uuid,
    timeout: std::time::Duration,
) -> Result<(), RelayError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let registration = RelayMessage::Registration(RelayRegistrationRequest {
        name: name.to_string(),
        uuid,
    })
    .encode();
    let reply = async {
        ws.send(Message::text(registration))
            .await
            .map_err(RelayError::from_ws)?;
        loop {
            let msg = match ws.next().await {
                Some(Ok(m)) => m,
                Some(Err(e)) => return Err(RelayError::from_ws(e)),
                None => {
                    return Err(RelayError::Disconnected {
                        code: u16::from(WsCloseCode::Abnormal),
                        reason: "connection dropped during registration".into(),
                    })
                }
            };
            match msg {
                Message::Text(t) => return registration_reply(&t),
                Message::Binary(b) => {
                    return Err(RelayError::RegistrationRejected(format!(
                        "the relay answered with a {}-byte binary frame",
                        b.len()
                    )))
                }
                Message::Close(frame) => {
                    let (code, reason) = close_parts(frame);
                    return Err(RelayError::from_close(code, reason));
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    };
    match tokio::time::timeout(timeout, reply).await {
        Ok(result) => result,
        Err(_) => Err(RelayError::Timeout {
            after: timeout,
            during: "waiting for the registration reply",
        }),
    }
}

/// The code and the sanitized reason of a close frame from the relay (1005 when it had no
/// code). The one place where a relay's close reason enters the client.
pub(crate) fn close_parts(frame: Option<CloseFrame>) -> (u16, String) {
    match frame {
        Some(f) => (u16::from(f.code), sanitize(&f.reason)),
        None => (u16::from(WsCloseCode::Status), String::new()),
    }
}

/// The meaning of the relay's first text frame. Its texts are untrusted: sanitized.
pub(crate) fn registration_reply(text: &str) -> Result<(), RelayError> {
    match RelayMessage::decode(text) {
        Ok(RelayMessage::Response(r)) if r.success => Ok(()),
        Ok(RelayMessage::Response(r)) => Err(RelayError::RegistrationRejected(match r.message {
            Some(m) => sanitize(&m),
            None => "the relay replied success=false with no message".into(),
        })),
        Ok(other) => Err(RelayError::RegistrationRejected(format!(
            "the relay replied with a {} message instead of a relay_response",
            other.type_name()
        ))),
        Err(e) => Err(RelayError::RegistrationRejected(format!(
            "the relay's reply could not be decoded: {}",
            sanitize(&e.to_string())
        ))),
    }
}

#[cfg(test)]
#[path = "registration_tests.rs"]
mod tests;
