//! What a connection does with each frame: registration (with authentication and takeover),
//! forwarding (fast path first), and the close code for each kind of bad input.

use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bistream_relay_proto::{
    frame_too_big_reason, json_string, not_reading_error, other_user_error, unknown_peer_error,
    uuid_owned_by_other_user_reason, CloseCode, PeerConnectionRequest, RawPeerMessage,
    RelayMessage, RelayRegistrationRequest, RelayResponse, FORWARD_BEFORE_REGISTRATION,
    INVALID_UTF8_REASON, LARGE_MESSAGE_BUDGET_REASON, MESSAGE_TOO_LARGE_REASON,
    UNKNOWN_MESSAGE_REASON,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use uuid::Uuid;

use super::{Conn, End, Registration, MAX_NAME_BYTES};
use crate::metrics::{BounceReason, Metrics};
use crate::registry::{ForwardOutcome, PeerHandle, RegisterOutcome};
use bistream_core::limited;
use bistream_core::logsafe::client_text;

/// Longest wait, on a takeover, for the old socket's closing handshake before the new client
/// gets its reply (a stuck old peer must not stall the new one).
const TAKEOVER_WAIT: Duration = Duration::from_secs(1);

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
    pub(super) async fn on_frame(
        &mut self,
        frame: Option<Result<Message, WsError>>,
    ) -> Result<(), End> {
        let shared = self.shared.clone();
        let m = &shared.metrics;
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
                limited!(m.log, from self.addr, WARN, conn = self.id, addr = %self.addr, "binary frame received (the protocol is JSON text): closing 4000");
                Err(End::Close(
                    CloseCode::UnknownMessage,
                    Cow::Borrowed(UNKNOWN_MESSAGE_REASON),
                ))
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Ok(()),
            Some(Ok(Message::Close(_))) => {
                // tungstenite queued the close reply; send it.
                self.flush_close_reply().await;
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
        let m = &self.shared.metrics;
        match e {
            WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                limited!(m.log, from self.addr, WARN, conn = self.id, addr = %self.addr, size, max_size, "message over the frame limit: closing 1009");
                End::CloseAfterError(
                    CloseCode::TooBig,
                    Cow::Owned(frame_too_big_reason(max_size)),
                )
            }
            WsError::Capacity(c) => {
                limited!(m.log, from self.addr, WARN, conn = self.id, addr = %self.addr, error = %c, "frame over a capacity limit: closing 1009");
                End::CloseAfterError(CloseCode::TooBig, Cow::Owned(c.to_string()))
            }
            WsError::Utf8(_) => {
                limited!(m.log, from self.addr, WARN, conn = self.id, addr = %self.addr, "text frame is not valid UTF-8: closing 1007");
                End::CloseAfterError(
                    CloseCode::InvalidPayload,
                    Cow::Borrowed(INVALID_UTF8_REASON),
                )
            }
            // A client that drops TCP without a closing handshake is a normal client loss
            // (a crashed or killed process, a network cut), not a protocol violation.
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                tracing::debug!(conn = self.id, addr = %self.addr, "client dropped the connection without a closing handshake");
                Metrics::inc(&m.client_closes);
                End::ClientClosed
            }
            WsError::Protocol(p) => {
                limited!(m.log, from self.addr, WARN, conn = self.id, addr = %self.addr, error = %p, "WebSocket protocol error: closing 1002");
                End::CloseAfterError(CloseCode::ProtocolError, Cow::Owned(p.to_string()))
            }
            WsError::Io(e) if crate::tracked::is_budget_exhausted(&e) => {
                limited!(m.log, from self.addr, WARN, conn = self.id, addr = %self.addr, held = self.shared.frame_budget.held(), "unfinished large messages over the relay's budget: closing 1013");
                Metrics::inc(&m.frame_budget_closes);
                End::CloseAfterError(
                    CloseCode::TryAgainLater,
                    Cow::Borrowed(LARGE_MESSAGE_BUDGET_REASON),
                )
            }
            WsError::ConnectionClosed | WsError::AlreadyClosed => {
                Metrics::inc(&m.client_closes);
                End::ClientClosed
            }
            other => {
                tracing::debug!(conn = self.id, error = %other, "read failed");
                Metrics::inc(&m.io_errors);
                End::Dropped
            }
        }
    }

    fn check_size(&self, len: usize) -> Result<(), End> {
        match self.shared.config.max_message_bytes {
            Some(max) if len > max => {
                limited!(self.shared.metrics.log, from self.addr, WARN, conn = self.id, addr = %self.addr, size = len, max, "message over max_message_bytes: closing 4003");
                Err(End::Close(
                    CloseCode::MessageTooLarge,
                    Cow::Borrowed(MESSAGE_TOO_LARGE_REASON),
                ))
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
                // The error text quotes the client's input (field names, values): escaped, cut.
                limited!(self.shared.metrics.log, from self.addr, WARN, conn = self.id, addr = %self.addr, error = %client_text(&e.to_string()), "undecodable message: closing 4000");
                return Err(End::Close(
                    CloseCode::UnknownMessage,
                    Cow::Borrowed(UNKNOWN_MESSAGE_REASON),
                ));
            }
        };
        drop(text);
        match msg {
            RelayMessage::Registration(r) => self.register(r).await,
            RelayMessage::PeerConnection(p) => self.forward(p).await,
            RelayMessage::Response(_) => {
                Metrics::inc(&self.shared.metrics.decode_errors);
                limited!(self.shared.metrics.log, from self.addr, WARN, conn = self.id, addr = %self.addr, "client sent a relay_response (server-only message): closing 4000");
                Err(End::Close(
                    CloseCode::UnknownMessage,
                    Cow::Borrowed(UNKNOWN_MESSAGE_REASON),
                ))
            }
        }
    }

    async fn register(&mut self, req: RelayRegistrationRequest) -> Result<(), End> {
        let shared = self.shared.clone();
        if req.name.len() > MAX_NAME_BYTES {
            // The name is stored and copied into every forwarded message: keep it bounded.
            Metrics::inc(&shared.metrics.decode_errors);
            limited!(shared.metrics.log, from self.addr, WARN, conn = self.id, addr = %self.addr, bytes = req.name.len(), "client name longer than {MAX_NAME_BYTES} bytes: closing 4000");
            return Err(End::Close(
                CloseCode::UnknownMessage,
                Cow::Borrowed(UNKNOWN_MESSAGE_REASON),
            ));
        }
        let auth = tokio::select! {
            r = shared.auth.authenticate(&self.creds) => r,
            _ = shared.shutdown.cancelled() => return Err(End::Close(CloseCode::GoingAway, Cow::Borrowed(""))),
        };
        let user = match auth {
            Ok(u) => u,
            Err(e) => {
                Metrics::inc(&shared.metrics.auth_failures);
                // The error texts are fixed and never contain the token.
                limited!(shared.metrics.log, from self.addr, WARN, conn = self.id, addr = %self.addr, method = shared.auth.method(), reason = %e, "authentication failed");
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
        let name: std::sync::Arc<str> = std::sync::Arc::from(req.name);
        let name_log = Self::log_name(&name);
        let user_log = client_text(user.id());
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
                limited!(shared.metrics.log, from self.addr, WARN, conn = self.id, user = %user_log, uuid = %req.uuid, "registration with a UUID owned by another user: closing 4002");
                Err(End::Close(
                    CloseCode::Forbidden,
                    Cow::Owned(uuid_owned_by_other_user_reason(&req.uuid)),
                ))
            }
            RegisterOutcome::Registered { replaced } => {
                if let Some(old) = replaced {
                    Metrics::inc(&shared.metrics.takeovers_total);
                    tracing::info!(conn = self.id, uuid = %req.uuid, "previously registered client re-registered on a new socket: closing the old socket 4004");
                    // As ProxyStore does, answer only once the old socket is closed, so that
                    // the old client sees its 4004 before the new one proceeds.
                    let wait = TAKEOVER_WAIT.min(shared.config.close_timeout);
                    if tokio::time::timeout(wait, old.finished()).await.is_err() {
                        tracing::debug!(conn = self.id, uuid = %req.uuid, "old socket still closing; answering the new client");
                    }
                }
                let previous = self.reg.replace(Registration {
                    uuid: req.uuid,
                    name: name.clone(),
                    name_json: json_string(&name).into_boxed_str(),
                    name_log: name_log.clone(),
                    user: user.clone(),
                });
                self.deadlines.register = None;
                // Re-registering under a new UUID on the same socket drops the old UUID
                // (ProxyStore leaves it routed to a socket that no longer answers to it).
                if let Some(prev) = previous.filter(|p| p.uuid != req.uuid) {
                    shared.registry.unregister(&prev.uuid, self.id);
                }
                Metrics::inc(&shared.metrics.registrations_total);
                tracing::info!(conn = self.id, uuid = %req.uuid, name = %name_log, user = %user_log, addr = %self.addr, "registered client");
                self.send_direct(success_reply()).await
            }
        }
    }

    async fn forward(&mut self, mut req: PeerConnectionRequest) -> Result<(), End> {
        let Some(reg) = &self.reg else {
            limited!(self.shared.metrics.log, from self.addr, WARN, conn = self.id, addr = %self.addr, "peer_connection before registration: closing 4002");
            return Err(End::Close(
                CloseCode::Forbidden,
                Cow::Borrowed(FORWARD_BEFORE_REGISTRATION),
            ));
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
                limited!(shared.metrics.log, from self.addr, INFO, from = %reg.uuid, to = %target, "message to an unknown peer bounced");
                (BounceReason::UnknownPeer, unknown_peer_error(&target))
            }
            ForwardOutcome::OtherUser => {
                limited!(shared.metrics.log, from self.addr, WARN, from = %reg.uuid, to = %target, "message to another user's peer bounced");
                (BounceReason::OtherUser, other_user_error(&target))
            }
            ForwardOutcome::QueueFull => (BounceReason::QueueFull, not_reading_error(&target)),
        };
        shared.metrics.bounce(reason);
        Some(error)
    }
}
