//! Transports carry whole RSocket frames: TCP (or any byte stream) with the 3-byte big-endian
//! length prefix, and WebSocket with one frame per binary message (no subprotocol, no
//! compression). Both become a [`Framed`]: a stream of frames in and a sink of frames out.

use std::io;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

/// Why reading failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// A frame over the limit: the connection cannot go on.
    #[error("frame too large: {0}")]
    TooLarge(String),
    /// A WebSocket text message (RSocket frames are binary).
    #[error("unexpected WebSocket text message ({0} bytes)")]
    Text(usize),
    /// The transport failed.
    #[error("{0}")]
    Io(String),
}

/// Inbound frames (the stream ends when the peer closes).
pub type FrameStream = Pin<Box<dyn Stream<Item = Result<Bytes, TransportError>> + Send>>;
/// Outbound frames; `close` ends the connection (a WebSocket close frame, a TCP shutdown).
pub type FrameSink = Pin<Box<dyn Sink<Bytes, Error = io::Error> + Send>>;

/// A transport split into frames in and frames out.
pub struct Framed {
    /// Frames from the peer.
    pub rx: FrameStream,
    /// Frames to the peer.
    pub tx: FrameSink,
}

impl std::fmt::Debug for Framed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Framed")
    }
}

fn codec(max: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(3)
        .max_frame_length(max.min(bistream_rsocket_proto::MAX_FRAME_LEN))
        .new_codec()
}

/// A byte stream (TCP, Unix socket, in-memory duplex) with 3-byte length-prefixed frames of at
/// most `max_frame_bytes`.
pub fn length_prefixed<T: AsyncRead + AsyncWrite + Send + 'static>(
    io: T,
    max_frame_bytes: usize,
) -> Framed {
    let (r, w) = tokio::io::split(io);
    let rx = FramedRead::new(r, codec(max_frame_bytes)).map(|r| match r {
        Ok(b) => Ok(b.freeze()),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            Err(TransportError::TooLarge(e.to_string()))
        }
        Err(e) => Err(TransportError::Io(e.to_string())),
    });
    let tx = FramedWrite::new(w, codec(max_frame_bytes));
    Framed {
        rx: Box::pin(rx),
        tx: Box::pin(tx),
    }
}

/// WebSocket settings for frames of at most `max_frame_bytes`.
pub fn ws_config(max_frame_bytes: usize) -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

/// A WebSocket with one RSocket frame per binary message.
pub fn websocket<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    ws: WebSocketStream<S>,
) -> Framed {
    let (w, r) = ws.split();
    let rx = r
        .take_while(|m| {
            std::future::ready(!matches!(
                m,
                Ok(Message::Close(_)) | Err(tungstenite::Error::ConnectionClosed)
            ))
        })
        .filter_map(|m| {
            std::future::ready(match m {
                Ok(Message::Binary(b)) => Some(Ok(b)),
                Ok(Message::Text(t)) => Some(Err(TransportError::Text(t.len()))),
                Ok(_) => None,
                Err(tungstenite::Error::Capacity(e)) => {
                    Some(Err(TransportError::TooLarge(e.to_string())))
                }
                Err(e) => Some(Err(TransportError::Io(e.to_string()))),
            })
        });
    let tx = w
        .sink_map_err(io::Error::other)
        .with(|b: Bytes| std::future::ready(Ok::<_, io::Error>(Message::Binary(b))));
    Framed {
        rx: Box::pin(rx),
        tx: Box::pin(tx),
    }
}
