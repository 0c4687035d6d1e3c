//! One client connection: a single task that reads frames, handles registration and
//! forwarding, writes the messages other connections queued for it, keeps the connection alive
//! with pings, and closes it with the right code.
//!
//! One task (not a reader and a writer) keeps an idle connection small: its state is this
//! future, a 4 KiB read buffer and, once registered, a bounded queue. Replies to the client's
//! own messages (registration, bounces) are written directly by this task, so the registration
//! reply always precedes any forwarded message, which can only arrive through the queue.
//!
//! The parts: this file runs the loop and its timers; `handle` reacts to frames (registration,
//! forwarding, input errors); `io` writes, closes and rebuilds the WebSocket's buffers.

mod handle;
mod io;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bistream_relay_proto::{CloseCode, REGISTRATION_TIMEOUT_REASON};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::{Authenticator, RequestCredentials, User};
use crate::config::RelayConfig;
use crate::metrics::Metrics;
use crate::registry::{Control, Registry};
use crate::tracked::Tracked;
use bistream_core::logsafe::client_text;

pub use bistream_relay_proto::KEEPALIVE_TIMEOUT_REASON;

/// Everything connections share.
pub(crate) struct Shared {
    pub(crate) config: RelayConfig,
    pub(crate) registry: Registry,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) auth: Arc<dyn Authenticator>,
    /// Graceful shutdown: connections close 1001.
    pub(crate) shutdown: CancellationToken,
    /// End of the shutdown deadline: connections stop waiting on their peer.
    pub(crate) hard_stop: CancellationToken,
    pub(crate) next_conn_id: AtomicU64,
    /// The WebSocket settings every connection (and every rebuild of one) uses.
    pub(crate) ws_config: WebSocketConfig,
    /// What all connections' unfinished large messages may hold together.
    pub(crate) frame_budget: Arc<crate::tracked::FrameBudget>,
}

/// Longest client name accepted at registration (bytes); longer closes 4000.
pub const MAX_NAME_BYTES: usize = 4096;

/// After a large frame in or out, the WebSocket's buffers are rebuilt this long later (at the
/// next frame boundary), so that a connection does not keep its peak size for life.
const SHRINK_AFTER: Duration = Duration::from_secs(1);

/// How a connection's main loop ended.
enum End {
    /// Send a close frame and wait for the peer's reply.
    Close(CloseCode, Cow<'static, str>),
    /// The stream failed on input (frame too big, bad UTF-8, protocol error): send a close
    /// frame, half-close, and discard input until the peer closes (bounded), so the peer sees
    /// the frame rather than a reset, and at once rather than after a timeout.
    CloseAfterError(CloseCode, Cow<'static, str>),
    /// The client closed (close frame, EOF, or a reset without a closing handshake).
    ClientClosed,
    /// Transport error or write timeout: just drop.
    Dropped,
}

struct Registration {
    uuid: Uuid,
    name: Arc<str>,
    /// `name` as a JSON string literal, written into every forwarded message.
    name_json: Box<str>,
    /// `name` escaped and cut for logs.
    name_log: Box<str>,
    user: User,
}

/// The send queue of a registered connection: forwarded messages from other connections.
type Queue = (mpsc::Sender<Utf8Bytes>, mpsc::Receiver<Utf8Bytes>);

/// The connection's timers, served by one sleep (one timer entry per connection).
#[derive(Debug, Default)]
struct Deadlines {
    /// Next keepalive check (ping, or pong deadline).
    keepalive: Option<Instant>,
    /// Close if not registered by then.
    register: Option<Instant>,
    /// Rebuild the WebSocket's buffers then.
    shrink: Option<Instant>,
}

impl Deadlines {
    fn next(&self) -> Instant {
        [self.keepalive, self.register, self.shrink]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 24 * 3600))
    }
}

pub(crate) struct Conn<S> {
    ws: WebSocketStream<Tracked<S>>,
    shared: Arc<Shared>,
    id: u64,
    addr: SocketAddr,
    creds: RequestCredentials,
    ctl: Arc<Control>,
    reg: Option<Registration>,
    queue: Option<Queue>,
    last_rx: Instant,
    ping_sent: Option<Instant>,
    deadlines: Deadlines,
}

async fn next_queued(q: &mut Option<Queue>) -> Option<Utf8Bytes> {
    match q {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Conn<S> {
    pub(crate) fn new(
        ws: WebSocketStream<Tracked<S>>,
        shared: Arc<Shared>,
        addr: SocketAddr,
        creds: RequestCredentials,
    ) -> Self {
        let id = shared.next_conn_id.fetch_add(1, Relaxed);
        let now = Instant::now();
        let deadlines = Deadlines {
            keepalive: shared.config.ping_interval.map(|i| now + i),
            register: shared.config.register_timeout.map(|t| now + t),
            shrink: None,
        };
        Conn {
            ws,
            shared,
            id,
            addr,
            creds,
            ctl: Arc::new(Control::new()),
            reg: None,
            queue: None,
            last_rx: now,
            ping_sent: None,
            deadlines,
        }
    }

    pub(crate) async fn run(mut self) {
        let m = self.shared.metrics.clone();
        m.connections_open.fetch_add(1, Relaxed);
        Metrics::inc(&m.connections_total);
        tracing::debug!(conn = self.id, addr = %self.addr, "connection opened");
        let end = self.main_loop().await;
        if let Some(reg) = self.reg.take() {
            if self.shared.registry.unregister(&reg.uuid, self.id) {
                tracing::info!(conn = self.id, uuid = %reg.uuid, name = %reg.name_log, "unregistered client");
            }
        }
        // Senders now see a closed queue; what was queued but not written is dropped.
        self.queue = None;
        self.finish(end).await;
        // A takeover waiting for this socket's close may now answer its client.
        self.ctl.mark_finished();
        m.connections_open.fetch_sub(1, Relaxed);
        tracing::debug!(conn = self.id, addr = %self.addr, "connection closed");
    }

    async fn main_loop(&mut self) -> End {
        let sleep = tokio::time::sleep_until(self.deadlines.next());
        tokio::pin!(sleep);
        let shared = self.shared.clone();
        let ctl = self.ctl.clone();
        loop {
            let had_shrink = self.deadlines.shrink.is_some();
            tokio::select! {
                biased;
                _ = shared.shutdown.cancelled() => return End::Close(CloseCode::GoingAway, Cow::Borrowed("")),
                _ = ctl.closed() => {
                    if ctl.close_request().is_some() {
                        return self.requested_close();
                    }
                }
                Some(first) = next_queued(&mut self.queue) => {
                    if let Err(end) = self.write_queued(first).await {
                        return end;
                    }
                }
                frame = self.ws.next() => {
                    self.last_rx = Instant::now();
                    if self.ws.get_mut().take_large() {
                        self.schedule_shrink();
                    }
                    if let Err(end) = self.on_frame(frame).await {
                        return end;
                    }
                }
                // Last: when it fires, the WebSocket was just polled and had nothing to give.
                _ = &mut sleep => {
                    if let Err(end) = self.on_deadline().await {
                        return end;
                    }
                    sleep.as_mut().reset(self.deadlines.next());
                    continue;
                }
            }
            if !had_shrink && self.deadlines.shrink.is_some() {
                sleep.as_mut().reset(self.deadlines.next());
            }
        }
    }

    fn schedule_shrink(&mut self) {
        if self.deadlines.shrink.is_none() {
            self.deadlines.shrink = Some(Instant::now() + SHRINK_AFTER);
        }
    }

    /// Serves whichever timers are due.
    async fn on_deadline(&mut self) -> Result<(), End> {
        let now = Instant::now();
        if self.deadlines.register.is_some_and(|t| t <= now) {
            self.deadlines.register = None;
            if self.reg.is_none() {
                Metrics::inc(&self.shared.metrics.registration_timeouts);
                bistream_core::limited!(self.shared.metrics.log, from self.addr, INFO, conn = self.id, addr = %self.addr, "client did not register in time: closing 1008");
                return Err(End::Close(
                    CloseCode::Policy,
                    Cow::Borrowed(REGISTRATION_TIMEOUT_REASON),
                ));
            }
        }
        if self.deadlines.shrink.is_some_and(|t| t <= now) {
            self.deadlines.shrink = None;
            self.shrink_buffers().await?;
        }
        if self.deadlines.keepalive.is_some_and(|t| t <= now) {
            if let Some(interval) = self.shared.config.ping_interval {
                self.deadlines.keepalive = Some(self.keepalive(interval).await?);
            }
        }
        Ok(())
    }

    /// The close another part of the server asked for (first request wins).
    fn requested_close(&self) -> End {
        match self.ctl.close_request() {
            Some((code, reason)) => {
                if code == CloseCode::Policy {
                    Metrics::inc(&self.shared.metrics.send_queue_drops);
                    bistream_core::limited!(self.shared.metrics.log, from self.addr, WARN, conn = self.id, addr = %self.addr, "client is not reading: send queue full, closing 1008");
                } else if code == CloseCode::DuplicateRegistration {
                    tracing::info!(
                        conn = self.id,
                        "same client UUID registered on a new socket: closing this one 4004"
                    );
                }
                End::Close(code, Cow::Borrowed(reason))
            }
            None => End::Dropped,
        }
    }

    async fn keepalive(&mut self, interval: Duration) -> Result<Instant, End> {
        let now = Instant::now();
        match self.ping_sent {
            Some(sent) if self.last_rx >= sent => {
                self.ping_sent = None;
                Ok(self.last_rx + interval)
            }
            Some(_) => {
                Metrics::inc(&self.shared.metrics.keepalive_timeouts);
                tracing::info!(conn = self.id, addr = %self.addr, "no pong in time: closing 1011");
                Err(End::Close(
                    CloseCode::InternalError,
                    Cow::Borrowed(KEEPALIVE_TIMEOUT_REASON),
                ))
            }
            None if now >= self.last_rx + interval => {
                self.send_ping().await?;
                self.ping_sent = Some(now);
                Ok(now + self.shared.config.ping_timeout)
            }
            None => Ok(self.last_rx + interval),
        }
    }

    /// `name` as it appears in this connection's log lines.
    fn log_name(name: &str) -> Box<str> {
        client_text(name).into_boxed_str()
    }
}
