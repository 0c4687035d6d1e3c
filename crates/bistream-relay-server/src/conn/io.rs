//! A connection's writes (bounded in time, interruptible by close requests), its closing
//! handshake, and the rebuild that gives back the WebSocket's peak-size buffers.

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bistream_relay_proto::{close_reason_fit, CloseCode};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::{Conn, End};
use crate::metrics::Metrics;
use crate::registry::Control;
use crate::tracked::LARGE_FRAME;
use bistream_core::limited;

/// Most queued messages written before one flush.
const WRITE_BATCH: usize = 64;

/// Runs `fut` unless it takes longer than `limit` or the hard stop fires.
pub(super) async fn bounded<T>(
    fut: impl Future<Output = T>,
    limit: Duration,
    hard: &CancellationToken,
) -> Option<T> {
    tokio::select! {
        r = tokio::time::timeout(limit, fut) => r.ok(),
        _ = hard.cancelled() => None,
    }
}

/// How a write to the client ended.
enum WriteResult {
    Done(Result<(), WsError>),
    /// Took longer than the limit, or the hard stop fired.
    TimedOut,
    /// Another part of the server asked this connection to close (full queue, takeover)
    /// while the write was blocked on a client that does not read.
    CloseRequested,
}

/// Runs a write, bounded by `limit`, the hard stop and close requests.
async fn guarded_write(
    fut: impl Future<Output = Result<(), WsError>>,
    limit: Duration,
    hard: &CancellationToken,
    ctl: &Control,
) -> WriteResult {
    tokio::select! {
        r = tokio::time::timeout(limit, fut) => r.map_or(WriteResult::TimedOut, WriteResult::Done),
        _ = hard.cancelled() => WriteResult::TimedOut,
        _ = ctl.closed() => WriteResult::CloseRequested,
    }
}

/// A close frame with the reason cut to what a control frame can carry.
pub(super) fn close_frame(code: CloseCode, reason: &str) -> CloseFrame {
    CloseFrame {
        code: WsCloseCode::from(code.code()),
        reason: Utf8Bytes::from(close_reason_fit(reason)),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Conn<S> {
    /// Writes `first` and whatever else is queued (up to a batch), then flushes once.
    pub(super) async fn write_queued(&mut self, first: Utf8Bytes) -> Result<(), End> {
        let limit = self.shared.config.ping_timeout;
        let hard = self.shared.hard_stop.clone();
        let ctl = self.ctl.clone();
        let Some((_, rx)) = self.queue.as_mut() else {
            return Ok(());
        };
        let mut batch = Vec::with_capacity(4);
        let mut bytes = first.len();
        let mut largest = first.len();
        batch.push(first);
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(m) => {
                    bytes += m.len();
                    largest = largest.max(m.len());
                    batch.push(m);
                }
                Err(_) => break,
            }
        }
        ctl.queued_bytes.fetch_sub(bytes, Relaxed);
        if largest as u64 >= LARGE_FRAME {
            self.schedule_shrink();
        }
        let ws = &mut self.ws;
        let res = guarded_write(
            async move {
                for m in batch {
                    ws.feed(Message::Text(m)).await?;
                }
                ws.flush().await
            },
            limit,
            &hard,
            &ctl,
        )
        .await;
        self.check_write(res)
    }

    pub(super) async fn send_direct(&mut self, text: Utf8Bytes) -> Result<(), End> {
        if text.len() as u64 >= LARGE_FRAME {
            self.schedule_shrink();
        }
        self.send_message(Message::Text(text)).await
    }

    pub(super) async fn send_ping(&mut self) -> Result<(), End> {
        self.send_message(Message::Ping(Default::default())).await
    }

    async fn send_message(&mut self, m: Message) -> Result<(), End> {
        let limit = self.shared.config.ping_timeout;
        let hard = self.shared.hard_stop.clone();
        let ctl = self.ctl.clone();
        let res = guarded_write(self.ws.send(m), limit, &hard, &ctl).await;
        self.check_write(res)
    }

    /// Sends the reply tungstenite queued for a client's close frame.
    pub(super) async fn flush_close_reply(&mut self) {
        let limit = self.shared.config.close_timeout;
        let hard = self.shared.hard_stop.clone();
        let _ = bounded(self.ws.flush(), limit, &hard).await;
    }

    fn check_write(&self, res: WriteResult) -> Result<(), End> {
        match res {
            WriteResult::Done(Ok(())) => Ok(()),
            WriteResult::CloseRequested => Err(self.requested_close()),
            WriteResult::Done(Err(e)) => {
                tracing::debug!(conn = self.id, error = %e, "write failed");
                Metrics::inc(&self.shared.metrics.io_errors);
                Err(End::Dropped)
            }
            WriteResult::TimedOut => {
                limited!(self.shared.metrics.log, from self.addr, WARN, conn = self.id, addr = %self.addr, "write timed out: dropping the connection");
                Metrics::inc(&self.shared.metrics.io_errors);
                Err(End::Dropped)
            }
        }
    }

    /// Rebuilds the WebSocket on the same stream when everything read so far is whole
    /// messages, dropping tungstenite's buffers (sized by the largest frame ever seen);
    /// otherwise tries again later.
    pub(super) async fn shrink_buffers(&mut self) -> Result<(), End> {
        if !self.ws.get_ref().at_boundary() {
            self.schedule_shrink();
            return Ok(());
        }
        // Writes out anything tungstenite holds (a pong, a partial batch) before the swap.
        let limit = self.shared.config.ping_timeout;
        let hard = self.shared.hard_stop.clone();
        let ctl = self.ctl.clone();
        let res = guarded_write(self.ws.flush(), limit, &hard, &ctl).await;
        self.check_write(res)?;
        let Some(stream) = self.ws.get_mut().detach() else {
            return Err(End::Dropped);
        };
        let fresh =
            WebSocketStream::from_raw_socket(stream, Role::Server, Some(self.shared.ws_config))
                .await;
        self.ws = fresh;
        Metrics::inc(&self.shared.metrics.buffer_rebuilds);
        Ok(())
    }

    /// Sends the close frame that `end` calls for and waits (bounded) for the peer.
    pub(super) async fn finish(&mut self, end: End) {
        let close_timeout = self.shared.config.close_timeout;
        let hard = self.shared.hard_stop.clone();
        let (code, reason, after_error) = match end {
            End::Close(c, r) => (c, r, false),
            End::CloseAfterError(c, r) => (c, r, true),
            End::ClientClosed | End::Dropped => return,
        };
        self.shared.metrics.server_close(code.code());
        let frame = close_frame(code, &reason);
        drop(reason);
        let sent = bounded(self.ws.close(Some(frame)), close_timeout, &hard).await;
        if !matches!(sent, Some(Ok(()))) {
            return;
        }
        // Input after our close frame is read and thrown away, up to this much.
        let budget = self
            .shared
            .config
            .max_frame_bytes
            .saturating_mul(2)
            .max(4 << 20);
        if after_error {
            // The stream cannot be parsed after an input error (we may be mid-frame). Half-close
            // so the peer, once it has our close frame, closes too (as Python's websockets
            // does when it fails a connection), and discard its bytes until then: closing with
            // unread input would reset the connection and could destroy our close frame.
            let Some(raw) = self.ws.get_mut().inner_mut() else {
                return;
            };
            let _ = bounded(
                async move {
                    let _ = raw.shutdown().await;
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut total = 0usize;
                    while let Ok(n @ 1..) = raw.read(&mut buf).await {
                        total += n;
                        if total > budget {
                            break;
                        }
                    }
                },
                close_timeout,
                &hard,
            )
            .await;
        } else {
            // Frames still arriving (the rest of a large message, say) are read and dropped
            // until the peer's close reply, which ends the stream.
            let ws = &mut self.ws;
            let _ = bounded(
                async move {
                    let mut total = 0usize;
                    while let Some(Ok(m)) = ws.next().await {
                        total += m.len();
                        if total > budget {
                            break;
                        }
                    }
                },
                close_timeout,
                &hard,
            )
            .await;
        }
    }
}
