//! Transports carry whole frames (JSON text) and nothing else: a WebSocket (one text message
//! per frame) or any `AsyncRead + AsyncWrite` byte stream with length-delimited frames (a
//! 4-byte big-endian length, then the UTF-8 text): TCP, Unix sockets, a child's stdio.

use std::future::Future;
use std::io;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::codec::{Decoder, FramedRead, FramedWrite, LengthDelimitedCodec};

/// What a reader yields.
#[derive(Debug)]
pub enum Inbound {
    /// One frame's text.
    Text(String),
    /// One text message's bytes, left in the buffer the transport received them in (no copy:
    /// the WebSocket reader's form, D28) and not yet checked as UTF-8: the engine checks them
    /// once as it decodes ([`bistream_rpc_proto::Engine::on_text`], D45); a message that is not
    /// UTF-8 closes the connection with 1007.
    Shared(Bytes),
    /// A message that is not text (counted as invalid); its length.
    Binary(usize),
    /// A message over the size limit: the connection closes with 1009.
    TooLarge(String),
    /// A WebSocket ping: the writer answers a pong with this payload.
    Ping(Bytes),
    /// The peer broke the WebSocket framing: the connection closes with `code` (1002 or 1007).
    Violation {
        /// The close code (RFC 6455 §7.4.1).
        code: u16,
        /// What was wrong.
        reason: String,
    },
    /// The peer closed (WebSocket close frame, or end of a byte stream).
    Closed {
        /// Close code, if any.
        code: Option<u16>,
        /// Close reason.
        reason: String,
    },
    /// The transport failed.
    Lost(String),
}

/// Reading half of a transport.
pub trait FrameReader: Send + 'static {
    /// The next inbound message or end.
    fn next(&mut self) -> impl Future<Output = Inbound> + Send;
}

/// Writing half of a transport.
pub trait FrameWriter: Send + 'static {
    /// Queues one frame (may write when buffers fill).
    fn feed(&mut self, frame: &str) -> impl Future<Output = io::Result<()>> + Send;
    /// Writes everything queued.
    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send;
    /// Ends the connection (a close frame with `code` where the transport has one).
    fn close(&mut self, code: u16, reason: &str) -> impl Future<Output = ()> + Send;
    /// Answers a WebSocket ping (transports without pings, or that answer them themselves,
    /// keep this default: nothing).
    fn pong(&mut self, payload: Bytes) -> impl Future<Output = io::Result<()>> + Send {
        let _ = payload;
        async { Ok(()) }
    }
}

/// A transport that splits into a reader and a writer.
pub trait Transport: Send + 'static {
    /// Reading half.
    type Reader: FrameReader;
    /// Writing half.
    type Writer: FrameWriter;
    /// Splits the transport.
    fn split(self) -> (Self::Reader, Self::Writer);
}

// ---- WebSocket ----------------------------------------------------------------------------

/// A WebSocket (tokio-tungstenite) as a transport. Build it with the `max_message_size` of
/// [`ws_config`] so oversized messages are refused by the WebSocket layer (close 1009).
#[derive(Debug)]
pub struct WsTransport<S>(pub WebSocketStream<S>);

/// Bytes tungstenite asks the socket for per read. It zero-fills that much of its buffer
/// before every read: with the default 128 KiB that memset was 16% of all CPU in `bench rpc`
/// (small frames, one read per few frames). 8 KiB still takes dozens of small frames per read.
pub const WS_READ_CHUNK: usize = 8 * 1024;

/// WebSocket settings for a frame limit of `max_frame_bytes`.
pub fn ws_config(max_frame_bytes: usize) -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(WS_READ_CHUNK)
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

/// Reading half of [`WsTransport`].
#[derive(Debug)]
pub struct WsReader<S>(SplitStream<WebSocketStream<S>>);
/// Writing half of [`WsTransport`].
#[derive(Debug)]
pub struct WsWriter<S>(SplitSink<WebSocketStream<S>, Message>);

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for WsTransport<S> {
    type Reader = WsReader<S>;
    type Writer = WsWriter<S>;
    fn split(self) -> (WsReader<S>, WsWriter<S>) {
        let (w, r) = self.0.split();
        (WsReader(r), WsWriter(w))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> FrameReader for WsReader<S> {
    async fn next(&mut self) -> Inbound {
        loop {
            return match self.0.next().await {
                Some(Ok(Message::Text(t))) => Inbound::Shared(t.into()),
                Some(Ok(Message::Binary(b))) => Inbound::Binary(b.len()),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(c))) => Inbound::Closed {
                    code: c.as_ref().map(|c| u16::from(c.code)),
                    reason: c.map(|c| c.reason.as_str().to_owned()).unwrap_or_default(),
                },
                Some(Err(tungstenite::Error::Capacity(e))) => Inbound::TooLarge(e.to_string()),
                Some(Err(tungstenite::Error::ConnectionClosed)) | None => Inbound::Closed {
                    code: None,
                    reason: String::new(),
                },
                Some(Err(e)) => Inbound::Lost(e.to_string()),
            };
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> FrameWriter for WsWriter<S> {
    async fn feed(&mut self, frame: &str) -> io::Result<()> {
        self.0
            .feed(Message::text(frame))
            .await
            .map_err(io::Error::other)
    }
    async fn flush(&mut self) -> io::Result<()> {
        self.0.flush().await.map_err(io::Error::other)
    }
    async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.to_owned().into(),
        };
        let _ = self.0.send(Message::Close(Some(frame))).await;
        let _ = self.0.close().await;
    }
}

// ---- length-delimited byte streams --------------------------------------------------------

/// Any byte stream (or a read half and a write half) with 4-byte big-endian length prefixes.
#[derive(Debug)]
pub struct LengthDelimited<R, W> {
    read: R,
    write: W,
    max_frame_bytes: usize,
}

impl<T: AsyncRead + AsyncWrite + Send + 'static>
    LengthDelimited<tokio::io::ReadHalf<T>, tokio::io::WriteHalf<T>>
{
    /// Wraps one duplex byte stream (TCP, Unix socket, in-memory duplex).
    pub fn new(io: T, max_frame_bytes: usize) -> Self {
        let (read, write) = tokio::io::split(io);
        Self::from_halves(read, write, max_frame_bytes)
    }
}

impl<R, W> LengthDelimited<R, W> {
    /// Wraps a read half and a write half (a child's stdout and stdin, or our stdio).
    pub fn from_halves(read: R, write: W, max_frame_bytes: usize) -> Self {
        Self {
            read,
            write,
            max_frame_bytes,
        }
    }
}

fn codec(max: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(max)
        .new_codec()
}

/// tokio-util's length-delimited decoder, plus what it forgets at the end of the stream: once it
/// has consumed a length prefix, an end of stream before the body is a stream cut inside a
/// frame (`UnexpectedEof`), not a clean end.
#[derive(Debug)]
pub struct LdDecoder {
    inner: LengthDelimitedCodec,
    in_frame: bool,
}

impl Decoder for LdDecoder {
    type Item = BytesMut;
    type Error = io::Error;
    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        let before = buf.len();
        let frame = self.inner.decode(buf)?;
        if frame.is_some() {
            self.in_frame = false;
        } else if buf.len() < before {
            // The prefix was consumed; the body has not all arrived.
            self.in_frame = true;
        }
        Ok(frame)
    }
    fn decode_eof(&mut self, buf: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() && !self.in_frame => Ok(None),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the stream ended before the announced frame body",
            )),
        }
    }
}

/// Reading half of [`LengthDelimited`].
#[derive(Debug)]
pub struct LdReader<R>(FramedRead<R, LdDecoder>);
/// Writing half of [`LengthDelimited`].
#[derive(Debug)]
pub struct LdWriter<W>(FramedWrite<W, LengthDelimitedCodec>);

impl<R, W> Transport for LengthDelimited<R, W>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    type Reader = LdReader<R>;
    type Writer = LdWriter<W>;
    fn split(self) -> (LdReader<R>, LdWriter<W>) {
        (
            LdReader(FramedRead::new(
                self.read,
                LdDecoder {
                    inner: codec(self.max_frame_bytes),
                    in_frame: false,
                },
            )),
            LdWriter(FramedWrite::new(self.write, codec(self.max_frame_bytes))),
        )
    }
}

impl<R: AsyncRead + Unpin + Send + 'static> FrameReader for LdReader<R> {
    async fn next(&mut self) -> Inbound {
        match self.0.next().await {
            Some(Ok(b)) => match String::from_utf8(b.to_vec()) {
                Ok(s) => Inbound::Text(s),
                Err(e) => Inbound::Binary(e.as_bytes().len()),
            },
            Some(Err(e)) if e.kind() == io::ErrorKind::InvalidData => {
                // The codec's "frame size too big": the stream cannot be resynchronised.
                Inbound::TooLarge(e.to_string())
            }
            Some(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                Inbound::Lost(format!("stream ended inside a frame: {e}"))
            }
            Some(Err(e)) => Inbound::Lost(e.to_string()),
            None => Inbound::Closed {
                code: None,
                reason: "end of stream".into(),
            },
        }
    }
}

impl<W: AsyncWrite + Unpin + Send + 'static> FrameWriter for LdWriter<W> {
    async fn feed(&mut self, frame: &str) -> io::Result<()> {
        // The codec copies it into its write buffer after the length; the `Bytes` is the
        // one allocation per frame the engine's single output buffer no longer makes.
        self.0.feed(Bytes::copy_from_slice(frame.as_bytes())).await
    }
    async fn flush(&mut self) -> io::Result<()> {
        SinkExt::<Bytes>::flush(&mut self.0).await
    }
    async fn close(&mut self, _code: u16, _reason: &str) {
        let _ = SinkExt::<Bytes>::close(&mut self.0).await;
    }
}
