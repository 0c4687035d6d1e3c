//! One client connection: a single task that reads frames, handles registration and
//! forwarding, writes the messages other connections queued for it, keeps the connection alive
//! with pings, and closes it with the right code.
//!
//! One task (not a reader and a writer) keeps an idle connection small: its state is this
//! future, a 4 KiB read buffer and, once registered, a bounded queue. Replies to the client's
//! own messages (registration, bounces) are written directly by this task, so the registration
//! reply always precedes any forwarded message, which can only arrive through the queue.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bistream_relay_proto::{
    other_user_error, unknown_peer_error, PeerConnectionRequest, RelayMessage,
    RelayRegistrationRequest, RelayResponse, FORWARD_BEFORE_REGISTRATION, MESSAGE_TOO_LARGE_REASON,
    UNKNOWN_MESSAGE_REASON,
};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::{Authenticator, RequestCredentials, User};
use crate::config::RelayConfig;
use crate::fastpath::{json_string, RawPeerMessage};
use crate::metrics::{BounceReason, Metrics};
use crate::registry::{Control, ForwardOutcome, PeerHandle, RegisterOutcome, Registry};

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
}

/// Most queued messages written before one flush.
const WRITE_BATCH: usize = 64;

/// Longest client name accepted at registration (bytes); longer closes 4000.
pub const MAX_NAME_BYTES: usize = 4096;

pub use bistream_relay_proto::KEEPALIVE_TIMEOUT_REASON;

/// How a connection's main loop ended.
enum End {
    /// Send a close frame and wait for the peer's reply.
    Close(u16, Cow<'static, str>),
    /// The stream failed on input (frame too big, bad UTF-8, protocol error): send a close
    /// frame, then drain the socket so the peer sees the frame rather than a reset.
    CloseAfterError(u16, Cow<'static, str>),
    /// The client closed (close frame or EOF).
    ClientClosed,
    /// Transport error or write timeout: just drop.
    Dropped,
}

struct Registration {
    uuid: Uuid,
    name: Arc<str>,
    /// `name` as a JSON string literal, written into every forwarded message.
    name_json: Box<str>,
    user: User,
}

pub(crate) struct Conn<S> {
    ws: WebSocketStream<S>,
    shared: Arc<Shared>,
    id: u64,
    addr: SocketAddr,
    creds: RequestCredentials,
    ctl: Arc<Control>,
    reg: Option<Registration>,
    queue: Option<(mpsc::Sender<Utf8Bytes>, mpsc::Receiver<Utf8Bytes>)>,
    last_rx: Instant,
    ping_sent: Option<Instant>,
}

/// Runs `fut` unless it takes longer than `limit` or the hard stop fires.
async fn bounded<T>(
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

async fn next_queued(
    q: &mut Option<(mpsc::Sender<Utf8Bytes>, mpsc::Receiver<Utf8Bytes>)>,
) -> Option<Utf8Bytes> {
    match q {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Close reasons are limited to 123 bytes by RFC 6455; cut on a character boundary.
fn close_frame(code: u16, reason: &str) -> CloseFrame {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code: WsCloseCode::from(code),
        reason: Utf8Bytes::from(reason.get(..end).unwrap_or_default()),
    }
}

fn success_reply() -> Utf8Bytes {
    static REPLY: std::sync::OnceLock<Utf8Bytes> = std::sync::OnceLock::new();
    REPLY
        .get_or_init(|| {
            RelayMessage::Response(RelayResponse::success())
                .encode()
                .into()
        })
        .clone()
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Conn<S> {
    pub(crate) fn new(
        ws: WebSocketStream<S>,
        shared: Arc<Shared>,
        addr: SocketAddr,
        creds: RequestCredentials,
    ) -> Self {
        let id = shared.next_conn_id.fetch_add(1, Relaxed);
        Conn {
            ws,
            shared,
            id,
            addr,
            creds,
            ctl: Arc::new(Control::new()),
            reg: None,
            queue: None,
            last_rx: Instant::now(),
            ping_sent: None,
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
                tracing::info!(uuid = %reg.uuid, name = %reg.name, "unregistered client");
            }
        }
        // Senders now see a closed queue; what was queued but not written is dropped.
        self.queue = None;
        self.finish(end).await;
        m.connections_open.fetch_sub(1, Relaxed);
        tracing::debug!(conn = self.id, addr = %self.addr, "connection closed");
    }

    async fn main_loop(&mut self) -> End {
        let interval = self.shared.config.ping_interval;
        let far = Duration::from_secs(365 * 24 * 3600);
        let sleep = tokio::time::sleep(interval.unwrap_or(far));
        tokio::pin!(sleep);
        let shared = self.shared.clone();
        let ctl = self.ctl.clone();
        loop {
            tokio::select! {
                biased;
                _ = shared.shutdown.cancelled() => return End::Close(1001, Cow::Borrowed("")),
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
                    if let Err(end) = self.on_frame(frame).await {
                        return end;
                    }
                }
                _ = &mut sleep, if interval.is_some() => {
                    let Some(interval) = interval else { continue };
                    match self.keepalive(interval).await {
                        Ok(next) => sleep.as_mut().reset(next),
                        Err(end) => return end,
                    }
                }
            }
        }
    }

    /// Writes `first` and whatever else is queued (up to a batch), then flushes once.
    async fn write_queued(&mut self, first: Utf8Bytes) -> Result<(), End> {
        let limit = self.shared.config.ping_timeout;
        let hard = self.shared.hard_stop.clone();
        let ctl = self.ctl.clone();
        let Some((_, rx)) = self.queue.as_mut() else {
            return Ok(());
        };
        let mut batch = Vec::with_capacity(4);
        let mut bytes = first.len();
        batch.push(first);
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(m) => {
                    bytes += m.len();
                    batch.push(m);
                }
                Err(_) => break,
            }
        }
        ctl.queued_bytes.fetch_sub(bytes, Relaxed);
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

    async fn send_direct(&mut self, text: Utf8Bytes) -> Result<(), End> {
        let limit = self.shared.config.ping_timeout;
        let hard = self.shared.hard_stop.clone();
        let ctl = self.ctl.clone();
        let res = guarded_write(self.ws.send(Message::Text(text)), limit, &hard, &ctl).await;
        self.check_write(res)
    }

    /// The close another part of the server asked for (first request wins).
    fn requested_close(&self) -> End {
        match self.ctl.close_request() {
            Some((code, reason)) => {
                if code == 1008 {
                    Metrics::inc(&self.shared.metrics.send_queue_drops);
                    tracing::warn!(conn = self.id, addr = %self.addr, "client is not reading: send queue full, closing 1008");
                } else if code == 4004 {
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
                tracing::warn!(conn = self.id, addr = %self.addr, "write timed out: dropping the connection");
                Metrics::inc(&self.shared.metrics.io_errors);
                Err(End::Dropped)
            }
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
                Err(End::Close(1011, Cow::Borrowed(KEEPALIVE_TIMEOUT_REASON)))
            }
            None if now >= self.last_rx + interval => {
                let limit = self.shared.config.ping_timeout;
                let hard = self.shared.hard_stop.clone();
                let ctl = self.ctl.clone();
                let res = guarded_write(
                    self.ws.send(Message::Ping(Default::default())),
                    limit,
                    &hard,
                    &ctl,
                )
                .await;
                self.check_write(res)?;
                self.ping_sent = Some(now);
                Ok(now + self.shared.config.ping_timeout)
            }
            None => Ok(self.last_rx + interval),
        }
    }

    async fn on_frame(&mut self, frame: Option<Result<Message, WsError>>) -> Result<(), End> {
        let m = &self.shared.metrics;
        match frame {
            Some(Ok(Message::Text(text))) => {
                Metrics::inc(&m.messages_received);
                m.bytes_received.fetch_add(text.len() as u64, Relaxed);
                self.check_size(text.len())?;
                self.on_text(text).await
            }
            Some(Ok(Message::Binary(b))) => {
                Metrics::inc(&m.messages_received);
                m.bytes_received.fetch_add(b.len() as u64, Relaxed);
                self.check_size(b.len())?;
                Metrics::inc(&m.decode_errors);
                tracing::warn!(conn = self.id, addr = %self.addr, "binary frame received (the protocol is JSON text): closing 4000");
                Err(End::Close(4000, Cow::Borrowed(UNKNOWN_MESSAGE_REASON)))
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Ok(()),
            Some(Ok(Message::Close(_))) => {
                // tungstenite queued the close reply; send it.
                let limit = self.shared.config.close_timeout;
                let hard = self.shared.hard_stop.clone();
                let _ = bounded(self.ws.flush(), limit, &hard).await;
                Metrics::inc(&m.client_closes);
                Err(End::ClientClosed)
            }
            None => {
                Metrics::inc(&m.client_closes);
                Err(End::ClientClosed)
            }
            Some(Err(e)) => Err(self.on_error(e)),
        }
    }

    fn on_error(&self, e: WsError) -> End {
        match e {
            WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                tracing::warn!(conn = self.id, addr = %self.addr, size, max_size, "message over the frame limit: closing 1009");
                End::CloseAfterError(
                    1009,
                    Cow::Owned(format!("frame exceeds limit of {max_size} bytes")),
                )
            }
            WsError::Capacity(c) => End::CloseAfterError(1009, Cow::Owned(c.to_string())),
            WsError::Utf8(_) => {
                tracing::warn!(conn = self.id, addr = %self.addr, "text frame is not valid UTF-8: closing 1007");
                End::CloseAfterError(1007, Cow::Borrowed("invalid UTF-8 in a text frame"))
            }
            WsError::Protocol(p) => {
                tracing::warn!(conn = self.id, addr = %self.addr, error = %p, "WebSocket protocol error: closing 1002");
                End::CloseAfterError(1002, Cow::Owned(p.to_string()))
            }
            WsError::ConnectionClosed | WsError::AlreadyClosed => {
                Metrics::inc(&self.shared.metrics.client_closes);
                End::ClientClosed
            }
            other => {
                tracing::debug!(conn = self.id, error = %other, "read failed");
                Metrics::inc(&self.shared.metrics.io_errors);
                End::Dropped
            }
        }
    }

    fn check_size(&self, len: usize) -> Result<(), End> {
        match self.shared.config.max_message_bytes {
            Some(max) if len > max => {
                tracing::warn!(conn = self.id, addr = %self.addr, size = len, max, "message over max_message_bytes: closing 4003");
                Err(End::Close(4003, Cow::Borrowed(MESSAGE_TOO_LARGE_REASON)))
            }
            _ => Ok(()),
        }
    }

    async fn on_text(&mut self, text: Utf8Bytes) -> Result<(), End> {
        // Fast path for the common case: a registered client forwarding a message.
        if self.reg.is_some() {
            if let Some(raw) = RawPeerMessage::decode(&text) {
                return match self.forward_raw(&raw) {
                    None => Ok(()),
                    Some(bounce) => {
                        drop(text);
                        self.send_direct(bounce.into()).await
                    }
                };
            }
        }
        let msg = match RelayMessage::decode(&text) {
            Ok(m) => m,
            Err(e) => {
                Metrics::inc(&self.shared.metrics.decode_errors);
                tracing::warn!(conn = self.id, addr = %self.addr, error = %e, "undecodable message: closing 4000");
                return Err(End::Close(4000, Cow::Borrowed(UNKNOWN_MESSAGE_REASON)));
            }
        };
        drop(text);
        match msg {
            RelayMessage::Registration(r) => self.register(r).await,
            RelayMessage::PeerConnection(p) => self.forward(p).await,
            RelayMessage::Response(_) => {
                Metrics::inc(&self.shared.metrics.decode_errors);
                tracing::warn!(conn = self.id, addr = %self.addr, "client sent a relay_response (server-only message): closing 4000");
                Err(End::Close(4000, Cow::Borrowed(UNKNOWN_MESSAGE_REASON)))
            }
        }
    }

    async fn register(&mut self, req: RelayRegistrationRequest) -> Result<(), End> {
        if req.name.len() > MAX_NAME_BYTES {
            // The name is stored and copied into every forwarded message: keep it bounded.
            Metrics::inc(&self.shared.metrics.decode_errors);
            tracing::warn!(conn = self.id, addr = %self.addr, bytes = req.name.len(), "client name longer than {MAX_NAME_BYTES} bytes: closing 4000");
            return Err(End::Close(4000, Cow::Borrowed(UNKNOWN_MESSAGE_REASON)));
        }
        let shared = self.shared.clone();
        let auth = tokio::select! {
            r = shared.auth.authenticate(&self.creds) => r,
            _ = shared.shutdown.cancelled() => return Err(End::Close(1001, Cow::Borrowed(""))),
        };
        let user = match auth {
            Ok(u) => u,
            Err(e) => {
                Metrics::inc(&shared.metrics.auth_failures);
                // The error texts are fixed and never contain the token.
                tracing::warn!(conn = self.id, addr = %self.addr, method = shared.auth.method(), reason = %e, "authentication failed");
                return Err(End::Close(e.close_code(), Cow::Owned(e.close_reason())));
            }
        };
        let cap = shared.config.send_queue_messages;
        let tx = self
            .queue
            .get_or_insert_with(|| mpsc::channel(cap))
            .0
            .clone();
        let peer = PeerHandle {
            conn_id: self.id,
            tx,
            ctl: self.ctl.clone(),
        };
        let name: Arc<str> = Arc::from(req.name);
        let mut outcome = shared
            .registry
            .register(req.uuid, name.clone(), &user, &peer);
        // Cluster-wide: the UUID may be held by another user on another node.
        if let (RegisterOutcome::Registered { .. }, Some(c)) = (&outcome, shared.registry.cluster())
        {
            if !c.claim(req.uuid, &user, self.id).await {
                shared.registry.unregister(&req.uuid, self.id);
                outcome = RegisterOutcome::OwnedByOtherUser;
            }
        }
        match outcome {
            RegisterOutcome::OwnedByOtherUser => {
                tracing::warn!(conn = self.id, user = %user, uuid = %req.uuid, "registration with a UUID owned by another user: closing 4002");
                Err(End::Close(
                    4002,
                    Cow::Owned(format!(
                        "ForbiddenError: The client UUID {} is already registered to another user.",
                        req.uuid
                    )),
                ))
            }
            RegisterOutcome::Registered { replaced } => {
                if replaced {
                    Metrics::inc(&shared.metrics.takeovers_total);
                    tracing::info!(uuid = %req.uuid, "previously registered client re-registered on a new socket: old socket closed 4004");
                }
                let previous = self.reg.replace(Registration {
                    uuid: req.uuid,
                    name: name.clone(),
                    name_json: json_string(&name).into_boxed_str(),
                    user: user.clone(),
                });
                // Re-registering under a new UUID on the same socket drops the old UUID
                // (ProxyStore leaves it routed to a socket that no longer answers to it).
                if let Some(prev) = previous.filter(|p| p.uuid != req.uuid) {
                    shared.registry.unregister(&prev.uuid, self.id);
                }
                Metrics::inc(&shared.metrics.registrations_total);
                tracing::info!(conn = self.id, uuid = %req.uuid, name = %name, user = %user, addr = %self.addr, "registered client");
                self.send_direct(success_reply()).await
            }
        }
    }

    async fn forward(&mut self, mut req: PeerConnectionRequest) -> Result<(), End> {
        let Some(reg) = &self.reg else {
            tracing::warn!(conn = self.id, addr = %self.addr, "peer_connection before registration: closing 4002");
            return Err(End::Close(4002, Cow::Borrowed(FORWARD_BEFORE_REGISTRATION)));
        };
        // The sender is who it registered as, whatever the message claims.
        req.source_uuid = reg.uuid;
        if *req.source_name != *reg.name {
            req.source_name.clear();
            req.source_name.push_str(&reg.name);
        }
        let target = req.peer_uuid;
        let msg = RelayMessage::PeerConnection(req);
        let text: Utf8Bytes = msg.encode().into();
        let Some(error) = self.deliver(target, text) else {
            return Ok(());
        };
        let RelayMessage::PeerConnection(mut req) = msg else {
            return Ok(());
        };
        req.error = Some(error);
        let text: Utf8Bytes = RelayMessage::PeerConnection(req).encode().into();
        self.send_direct(text).await
    }

    /// Forwards a fast-path message; returns the bounce to send back, if any.
    fn forward_raw(&self, raw: &RawPeerMessage<'_>) -> Option<String> {
        let reg = self.reg.as_ref()?;
        let text = raw.encode(&reg.uuid, &reg.name_json, None);
        let error = self.deliver(raw.peer_uuid, text.into())?;
        Some(raw.encode(&reg.uuid, &reg.name_json, Some(&error)))
    }

    /// Queues `text` for `target`; returns the error text to bounce when it cannot.
    fn deliver(&self, target: Uuid, text: Utf8Bytes) -> Option<String> {
        let reg = self.reg.as_ref()?;
        let len = text.len();
        let shared = &self.shared;
        let outcome =
            shared
                .registry
                .forward(&target, &reg.user, text, shared.config.send_queue_bytes);
        let (reason, error) = match outcome {
            ForwardOutcome::Queued => {
                Metrics::inc(&shared.metrics.messages_forwarded);
                shared
                    .metrics
                    .bytes_forwarded
                    .fetch_add(len as u64, Relaxed);
                tracing::debug!(from = %reg.uuid, to = %target, bytes = len, "forwarded");
                return None;
            }
            ForwardOutcome::UnknownPeer => {
                tracing::info!(from = %reg.uuid, to = %target, "message to an unknown peer bounced");
                (BounceReason::UnknownPeer, unknown_peer_error(&target))
            }
            ForwardOutcome::OtherUser => {
                tracing::warn!(from = %reg.uuid, to = %target, "message to another user's peer bounced");
                (BounceReason::OtherUser, other_user_error(&target))
            }
            ForwardOutcome::QueueFull => (
                BounceReason::QueueFull,
                format!(
                    "The requested peer {target} is not reading its messages and was disconnected."
                ),
            ),
        };
        shared.metrics.bounce(reason);
        Some(error)
    }

    /// Sends the close frame that `end` calls for and waits (bounded) for the peer.
    async fn finish(&mut self, end: End) {
        let close_timeout = self.shared.config.close_timeout;
        let hard = self.shared.hard_stop.clone();
        let (code, reason, after_error) = match end {
            End::Close(c, r) => (c, r, false),
            End::CloseAfterError(c, r) => (c, r, true),
            End::ClientClosed | End::Dropped => return,
        };
        self.shared.metrics.server_close(code);
        let frame = close_frame(code, &reason);
        let sent = bounded(self.ws.close(Some(frame)), close_timeout, &hard).await;
        if !matches!(sent, Some(Ok(()))) {
            return;
        }
        if after_error {
            // The stream is unusable after an input error; read and discard raw bytes so the
            // peer gets our close frame instead of a TCP reset, until it closes or time is up.
            let raw = self.ws.get_mut();
            let _ = bounded(
                async move {
                    let mut buf = vec![0u8; 4096];
                    while matches!(raw.read(&mut buf).await, Ok(n) if n > 0) {}
                },
                close_timeout,
                &hard,
            )
            .await;
        } else {
            let ws = &mut self.ws;
            let _ = bounded(
                async move { while let Some(Ok(_)) = ws.next().await {} },
                close_timeout,
                &hard,
            )
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_fit_a_control_frame() {
        let long = "é".repeat(100);
        let f = close_frame(4002, &long);
        assert!(f.reason.len() <= 123);
        assert!(f.reason.as_str().chars().all(|c| c == 'é'));
        assert_eq!(
            close_frame(4000, UNKNOWN_MESSAGE_REASON).reason.as_str(),
            UNKNOWN_MESSAGE_REASON
        );
    }
}
