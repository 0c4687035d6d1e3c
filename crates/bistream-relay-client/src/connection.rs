//! The task that owns one registered WebSocket: it reads all the time (answering pings and
//! watching for the relay's close), queues decoded messages for `recv` with backpressure,
//! writes what `send` hands it, pings an idle relay, and closes cleanly when the client closes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bistream_core::sanitize;
use bistream_relay_proto::{CloseCode, RelayMessage, KEEPALIVE_TIMEOUT_REASON};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::inner::Inner;
use crate::registration::close_parts;
use crate::RelayError;

/// A byte stream a WebSocket can run on: a TCP connection in real use, an in-memory pipe in
/// tests.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The socket of a registered connection (TLS or not).
pub(crate) type WsStream = WebSocketStream<MaybeTlsStream<Box<dyn Io>>>;

/// How long a clean close may take (our close frame out, the relay's back).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A message for the connection task to write, with where to report the outcome.
pub(crate) struct Outgoing {
    pub(crate) text: Utf8Bytes,
    pub(crate) done: oneshot::Sender<Result<(), RelayError>>,
}

type Item = Result<RelayMessage, RelayError>;

/// Why the read/write loop ended.
enum End {
    /// The socket is gone: close code and reason as seen from here.
    Lost(u16, String),
    /// The client was closed (or every handle to this connection dropped).
    Closed,
}

/// Runs one connection until it ends, then tells the client.
pub(crate) async fn run<S>(
    inner: Arc<Inner>,
    mut ws: WebSocketStream<S>,
    mut out_rx: mpsc::Receiver<Outgoing>,
    ended: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut pending: Option<Item> = None;
    let end = drive(&inner, &mut ws, &mut out_rx, &mut pending).await;
    match end {
        End::Closed => {
            close_cleanly(&mut ws).await;
            if pending.take().is_some() {
                inner.stats.dropped_on_close.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    "dropped one received message: the client closed before recv took it"
                );
            }
            ended.cancel();
        }
        End::Lost(code, reason) => {
            // Refuse further writes before announcing the loss, so a `send` racing with the
            // reconnect goes to the next connection.
            out_rx.close();
            while let Ok(o) = out_rx.try_recv() {
                drop(o); // its sender sees the dropped answer and retries on the next connection
            }
            inner.connection_ended(code, reason);
            ended.cancel();
            // A message read but not yet queued (queue full) is still handed over.
            if let Some(item) = pending.take() {
                tokio::select! {
                    _ = inner.incoming_tx.send(item) => {}
                    _ = inner.cancel.cancelled() => {
                        inner.stats.dropped_on_close.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    inner: &Inner,
    ws: &mut WebSocketStream<S>,
    out_rx: &mut mpsc::Receiver<Outgoing>,
    pending: &mut Option<Item>,
) -> End {
    let keepalive = inner.cfg.keepalive;
    let period = keepalive.unwrap_or(Duration::from_secs(3600));
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Whether anything arrived since the last tick, and whether a ping is unanswered.
    let mut heard = false;
    let mut ping_outstanding = false;
    let mut close_frame: Option<(u16, String)> = None;
    // After the relay's close frame, how long to wait for it to end the TCP connection.
    let close_deadline = tokio::time::sleep(Duration::MAX);
    tokio::pin!(close_deadline);

    loop {
        tokio::select! {
            biased;
            _ = inner.cancel.cancelled() => return End::Closed,
            _ = &mut close_deadline, if close_frame.is_some() => {
                return End::Lost(u16::from(WsCloseCode::Abnormal), String::new()).or_close(close_frame);
            }
            permit = inner.incoming_tx.reserve(), if pending.is_some() => {
                match (permit, pending.take()) {
                    (Ok(p), Some(item)) => {
                        p.send(item);
                        tracing::debug!("incoming queue has room again; reading resumes");
                    }
                    (Err(_), _) => return End::Closed,
                    (Ok(_), None) => {}
                }
            }
            out = out_rx.recv() => {
                let Some(out) = out else { return End::Closed };
                match ws.send(Message::Text(out.text)).await {
                    Ok(()) => {
                        inner.stats.messages_sent.fetch_add(1, Ordering::Relaxed);
                        let _ = out.done.send(Ok(()));
                    }
                    Err(e) => {
                        let e = RelayError::from_ws(e);
                        let _ = out.done.send(Err(RelayError::SendFailed(e.to_string())));
                        return lost(close_frame, &e);
                    }
                }
            }
            _ = tick.tick(), if keepalive.is_some() && pending.is_none() => {
                if heard {
                    heard = false;
                    ping_outstanding = false;
                } else if ping_outstanding {
                    tracing::warn!(
                        relay = %inner.cfg.log_address,
                        "no answer from the relay to a keepalive ping; dropping the connection"
                    );
                    let _ = tokio::time::timeout(
                        CLOSE_TIMEOUT,
                        ws.close(Some(CloseFrame {
                            code: WsCloseCode::from(CloseCode::InternalError.code()),
                            reason: KEEPALIVE_TIMEOUT_REASON.into(),
                        })),
                    )
                    .await;
                    return End::Lost(
                        CloseCode::InternalError.code(),
                        KEEPALIVE_TIMEOUT_REASON.into(),
                    );
                } else {
                    if let Err(e) = ws.send(Message::Ping(Default::default())).await {
                        return lost(close_frame, &RelayError::from_ws(e));
                    }
                    ping_outstanding = true;
                }
            }
            frame = ws.next(), if pending.is_none() => {
                heard = true;
                match frame {
                    None => {
                        return End::Lost(u16::from(WsCloseCode::Abnormal), "the connection dropped without a close frame".into())
                            .or_close(close_frame)
                    }
                    Some(Err(e)) => return lost(close_frame, &RelayError::from_ws(e)),
                    Some(Ok(Message::Text(text))) => {
                        let item = match RelayMessage::decode(&text) {
                            Ok(m) => {
                                inner.stats.messages_received.fetch_add(1, Ordering::Relaxed);
                                Ok(m)
                            }
                            Err(e) => {
                                inner.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(
                                    error = %sanitize(&e.to_string()),
                                    bytes = text.len(),
                                    "undecodable message from the relay"
                                );
                                Err(RelayError::Decode(e))
                            }
                        };
                        match inner.incoming_tx.try_send(item) {
                            Ok(()) => {}
                            Err(mpsc::error::TrySendError::Full(item)) => {
                                tracing::debug!("incoming queue full; pausing reads until recv makes room");
                                *pending = Some(item);
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => return End::Closed,
                        }
                    }
                    Some(Ok(Message::Binary(b))) => {
                        inner.stats.binary_frames_ignored.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(bytes = b.len(), "ignoring a binary frame from the relay (the protocol uses text frames)");
                    }
                    Some(Ok(Message::Close(frame))) => {
                        // tungstenite answers the close; keep reading until the socket ends.
                        close_frame = Some(close_parts(frame));
                        close_deadline.as_mut().reset(Instant::now() + CLOSE_TIMEOUT);
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                }
            }
        }
    }
}

impl End {
    /// Prefer the relay's close frame, when one arrived, over the transport's view.
    fn or_close(self, close_frame: Option<(u16, String)>) -> End {
        match close_frame {
            Some((code, reason)) => End::Lost(code, reason),
            None => self,
        }
    }
}

fn lost(close_frame: Option<(u16, String)>, e: &RelayError) -> End {
    let fallback = match e {
        RelayError::Disconnected { code, reason } => End::Lost(*code, reason.clone()),
        // An oversized incoming frame: tungstenite has already answered with 1009.
        RelayError::WebSocket(m) if m.contains("Space limit") => {
            End::Lost(CloseCode::TooBig.code(), m.clone())
        }
        other => End::Lost(u16::from(WsCloseCode::Abnormal), other.to_string()),
    };
    fallback.or_close(close_frame)
}

/// Sends our close frame and waits briefly for the relay's, then drops the socket.
async fn close_cleanly<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        let frame = CloseFrame {
            code: WsCloseCode::Normal,
            reason: "".into(),
        };
        if ws.close(Some(frame)).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    //! Keepalive on tokio's paused clock, over an in-memory WebSocket: no wall-clock timing.

    use std::time::Duration;

    use tokio::io::DuplexStream;
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;
    use crate::{ConnectionEvent, RelayClient};

    const PERIOD: Duration = Duration::from_millis(300);

    /// A connection task for a fresh client, joined in memory to a relay-side WebSocket.
    struct Harness {
        /// Kept alive: dropping it would close the client.
        client: RelayClient,
        relay: WebSocketStream<DuplexStream>,
        ended: CancellationToken,
        events: crate::Events,
        task: tokio::task::JoinHandle<()>,
        /// Kept alive: a closed outgoing channel means "the client closed".
        _out_tx: mpsc::Sender<Outgoing>,
    }

    async fn connection() -> Harness {
        let client = RelayClient::builder("ws://127.0.0.1:1")
            .keepalive(Some(PERIOD))
            .build()
            .unwrap();
        let events = client.events();
        let (a, b) = tokio::io::duplex(64 * 1024);
        let ws = WebSocketStream::from_raw_socket(a, Role::Client, None).await;
        let relay = WebSocketStream::from_raw_socket(b, Role::Server, None).await;
        let (out_tx, out_rx) = mpsc::channel(1);
        let ended = CancellationToken::new();
        let task = tokio::spawn(run(client.inner.clone(), ws, out_rx, ended.clone()));
        Harness {
            client,
            relay,
            ended,
            events,
            task,
            _out_tx: out_tx,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_relay_that_answers_pings_keeps_the_connection() {
        let Harness {
            client,
            mut relay,
            ended,
            events: _events,
            task: _task,
            _out_tx,
        } = connection().await;
        // The relay reads (tungstenite answers each ping with a pong) but sends nothing else.
        let pings = tokio::spawn(async move {
            let mut pings = 0u32;
            while let Some(Ok(m)) = relay.next().await {
                if matches!(m, Message::Ping(_)) {
                    pings += 1;
                }
            }
            pings
        });
        tokio::time::sleep(PERIOD * 20).await;
        assert!(!ended.is_cancelled(), "dropped a relay that answers pings");
        // Close: the relay side sees the end; several pings were sent meanwhile.
        client.close().await;
        let pings = tokio::time::timeout(Duration::from_secs(10), pings)
            .await
            .unwrap()
            .unwrap();
        assert!(pings >= 5, "{pings} pings");
    }

    #[tokio::test(start_paused = true)]
    async fn a_relay_that_never_answers_is_dropped_with_1011() {
        let Harness {
            client,
            relay,
            ended,
            mut events,
            task,
            _out_tx,
        } = connection().await;
        let start = Instant::now();
        // The relay never reads: no pong comes back.
        tokio::time::timeout(Duration::from_secs(60), ended.cancelled())
            .await
            .expect("the connection ends");
        // Ping after one quiet period, give up after the next.
        assert_eq!(start.elapsed(), PERIOD * 2, "virtual time");
        let e = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            e,
            ConnectionEvent::Disconnected {
                code: CloseCode::InternalError.code(),
                reason: KEEPALIVE_TIMEOUT_REASON.into()
            }
        );
        assert!(!client.inner.cancel.is_cancelled(), "lost, not closed");
        task.await.unwrap();
        drop(relay);
    }
}
