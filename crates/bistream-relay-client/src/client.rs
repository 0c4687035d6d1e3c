//! The application's handle: [`RelayClient`] and its calls (`connect`, `send`, `recv`,
//! `close`, state, events, counters).
//!
//! Structure: one [`Inner`] shared (by `Arc`) between this handle and two kinds of task. A
//! *connection task* (one per registered WebSocket, `connection.rs`) owns the socket: it reads
//! continuously (so pings are answered even when nobody calls `recv`), pushes decoded messages
//! into one bounded queue that survives reconnects, and writes what `send` hands it. The
//! *supervisor* (`supervisor.rs`, only with background reconnect on) waits for a connection to
//! end and runs the connect loop again. Every connection attempt (`registration.rs`) runs
//! under one lock, so concurrent callers never open two sockets. Settings come from the
//! builder (`builder.rs`).

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bistream_relay_proto::{DescriptionType, PeerConnectionRequest, RelayMessage};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use uuid::Uuid;

use crate::builder::{Config, RelayClientBuilder};
use crate::connection::Outgoing;
use crate::events::{ConnectionState, Events};
use crate::inner::{Caller, ClientStats, Inner};
use crate::RelayError;

/// A reconnecting client of a ProxyStore-compatible relay server.
///
/// Register under a UUID, then exchange [`RelayMessage`]s with other clients through the
/// relay. The WebSocket is opened lazily, re-opened with backoff when it drops, and
/// re-registered under the same UUID; close codes 4001, 4002 and 4004 stop the client with
/// [`RelayError::FatalClose`] instead. Dropping the client closes it (the close frame is sent
/// by a background task); [`close`](Self::close) does the same and waits for it.
///
/// All methods take `&self`: share the client with an `Arc` to send from one task while
/// another receives.
///
/// ```no_run
/// use bistream_relay_client::{ConnectionEvent, DescriptionType, RelayClient, RelayMessage};
///
/// # async fn demo() -> Result<(), bistream_relay_client::RelayError> {
/// let client = RelayClient::builder("ws://127.0.0.1:8700").name("alice").build()?;
/// let mut events = client.events();
/// client.connect(true).await?; // optional: send/recv connect on first use
/// println!("registered as {}", client.uuid());
///
/// // Offer something to a peer; its answer arrives through recv().
/// let peer = uuid::Uuid::parse_str("11111111-2222-4333-8444-555555555555").unwrap();
/// client
///     .send(client.peer_connection(peer, DescriptionType::Offer, "v=0 ..."))
///     .await?;
/// match client.recv().await? {
///     RelayMessage::PeerConnection(m) if m.error.is_some() => {
///         eprintln!("the relay could not deliver: {}", m.error.unwrap_or_default())
///     }
///     RelayMessage::PeerConnection(m) => println!("{} says {}", m.source_name, m.description),
///     other => println!("relay says {other:?}"),
/// }
///
/// // Watch the connection from another task.
/// tokio::spawn(async move {
///     while let Some(event) = events.next().await {
///         if let ConnectionEvent::Retrying { delay, .. } = event {
///             eprintln!("relay down, retrying in {delay:?}");
///         }
///     }
/// });
/// client.close().await;
/// # Ok(()) }
/// ```
pub struct RelayClient {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for RelayClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayClient")
            .field("address", &self.inner.cfg.log_address)
            .field("name", &bistream_core::sanitize(&self.inner.cfg.name))
            .field("uuid", &self.inner.cfg.uuid)
            .field("state", &*self.inner.state.borrow())
            .finish()
    }
}

impl RelayClient {
    pub(crate) fn from_config(cfg: Config) -> RelayClient {
        RelayClient {
            inner: Arc::new(Inner::new(cfg)),
        }
    }

    /// A builder for a client of the relay at `address`: `ws://` or `wss://`, or `http://` or
    /// `https://` (converted to `ws://` and `wss://`).
    pub fn builder(address: impl Into<String>) -> RelayClientBuilder {
        RelayClientBuilder::new(address)
    }

    /// A client with every default (see [`RelayClientBuilder`]).
    pub fn new(address: impl Into<String>) -> Result<RelayClient, RelayError> {
        Self::builder(address).build()
    }

    /// The UUID this client registers with.
    pub fn uuid(&self) -> Uuid {
        self.inner.cfg.uuid
    }

    /// The name this client registers with.
    pub fn name(&self) -> &str {
        &self.inner.cfg.name
    }

    /// The relay address, normalised and sanitized for display: credentials (`user:pass@`)
    /// and secret-looking query values (`?token=...`) are replaced by
    /// [`bistream_core::REDACTED`].
    pub fn address(&self) -> &str {
        &self.inner.cfg.log_address
    }

    /// Whether a registered connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.inner.live_conn().is_some()
    }

    /// The current connection state.
    pub fn state(&self) -> ConnectionState {
        self.inner.state.borrow().clone()
    }

    /// A watch on the connection state (always holds the latest value).
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.state.subscribe()
    }

    /// A bounded stream of connection events from now on.
    pub fn events(&self) -> Events {
        Events {
            rx: self.inner.events.subscribe(),
        }
    }

    /// Counters of what the client did so far.
    pub fn stats(&self) -> ClientStats {
        let s = &self.inner.stats;
        ClientStats {
            registrations: s.registrations.load(Ordering::Relaxed),
            messages_sent: s.messages_sent.load(Ordering::Relaxed),
            messages_received: s.messages_received.load(Ordering::Relaxed),
            decode_errors: s.decode_errors.load(Ordering::Relaxed),
            binary_frames_ignored: s.binary_frames_ignored.load(Ordering::Relaxed),
            dropped_on_close: s.dropped_on_close.load(Ordering::Relaxed),
        }
    }

    /// A peer-connection message from this client to `peer` (source UUID and name filled in).
    pub fn peer_connection(
        &self,
        peer: Uuid,
        description_type: DescriptionType,
        description: impl Into<String>,
    ) -> PeerConnectionRequest {
        PeerConnectionRequest {
            source_uuid: self.inner.cfg.uuid,
            source_name: self.inner.cfg.name.clone(),
            peer_uuid: peer,
            description_type,
            description: description.into(),
            error: None,
        }
    }

    /// Opens and registers a connection unless one is up. With `retry`, retryable failures
    /// (refused, timeout, DNS, non-fatal close, HTTP 5xx) are retried with backoff until
    /// success, a failure that is not retried, or `close()`; without it, one attempt is made.
    /// Concurrent calls share one attempt. Starts the background reconnect task when enabled.
    pub async fn connect(&self, retry: bool) -> Result<(), RelayError> {
        self.inner.connect(retry, Caller::Application).await
    }

    /// Sends a message, connecting first if needed (with retry). Returns once the message is
    /// written to the socket; the relay sends no acknowledgement (an undeliverable peer
    /// message comes back through [`recv`](Self::recv) with `error` set). If the connection
    /// drops before the write, the message is sent on the next connection; if it drops during
    /// the write, [`RelayError::SendFailed`] is returned (the relay may or may not have it).
    pub async fn send(&self, message: impl Into<RelayMessage>) -> Result<(), RelayError> {
        let text = message.into().encode();
        let limit = self.inner.cfg.max_message_size;
        if text.len() > limit {
            return Err(RelayError::MessageTooLarge {
                size: text.len(),
                limit,
            });
        }
        let text = Utf8Bytes::from(text);
        let inner = &self.inner;
        loop {
            if let Some(e) = inner.terminal_error() {
                return Err(e);
            }
            let Some(conn) = inner.live_conn() else {
                inner.connect(true, Caller::Application).await?;
                continue;
            };
            let (done_tx, done_rx) = oneshot::channel();
            let out = Outgoing {
                text: text.clone(),
                done: done_tx,
            };
            tokio::select! {
                biased;
                _ = inner.cancel.cancelled() => return Err(RelayError::Closed),
                r = conn.out_tx.send(out) => if r.is_err() {
                    // The connection is ending (its task refuses new writes just before it
                    // marks itself ended): let that finish, then go to the next connection.
                    tokio::task::yield_now().await;
                    continue;
                },
            }
            // The task answers every message it takes; a dropped answer means the connection
            // ended before taking it, so nothing was written and it is safe to try again.
            if let Ok(result) = done_rx.await {
                return result;
            }
        }
    }

    /// The next message from the relay: a peer's message, a message of ours bounced back
    /// with `error` set, or a `relay_response`. Connects first if needed. While the client is
    /// reconnecting this waits for the next message; it returns an error when the client is
    /// closed or has stopped for good (after every message already received was returned).
    /// [`RelayError::Decode`] reports one undecodable frame and is not terminal.
    pub async fn recv(&self) -> Result<RelayMessage, RelayError> {
        let inner = &self.inner;
        let mut rx = inner.incoming_rx.lock().await;
        loop {
            match rx.try_recv() {
                Ok(item) => return item,
                Err(mpsc::error::TryRecvError::Empty) => {}
                Err(mpsc::error::TryRecvError::Disconnected) => return Err(RelayError::Closed),
            }
            if let Some(e) = inner.terminal_error() {
                return Err(e);
            }
            let Some(conn) = inner.live_conn() else {
                inner.connect(true, Caller::Application).await?;
                continue;
            };
            tokio::select! {
                item = rx.recv() => return item.unwrap_or(Err(RelayError::Closed)),
                _ = conn.ended.cancelled() => {}
                _ = inner.cancel.cancelled() => {}
            }
        }
    }

    /// Closes the client: stops reconnecting, sends a close frame (1000) and waits (at most a
    /// few seconds) for the background tasks to finish. Later calls return
    /// [`RelayError::Closed`]. Calling it again does nothing.
    pub async fn close(&self) {
        self.inner.shut_down();
        let (supervisor, conn_task) = {
            let mut sh = self.inner.shared();
            (sh.supervisor.take(), sh.conn_task.take())
        };
        for task in [supervisor, conn_task].into_iter().flatten() {
            // Both tasks watch the cancel token; the connection task's close handshake is
            // itself bounded, so this timeout only guards against a bug.
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for RelayClient {
    fn drop(&mut self) {
        self.inner.shut_down();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closed_client_refuses_work_without_connecting() {
        let c = RelayClient::new("ws://127.0.0.1:1").unwrap();
        c.close().await;
        assert_eq!(c.state(), ConnectionState::Closed);
        assert_eq!(c.connect(true).await, Err(RelayError::Closed));
        assert_eq!(c.recv().await, Err(RelayError::Closed));
        let msg = c.peer_connection(Uuid::new_v4(), DescriptionType::Offer, "x");
        assert_eq!(c.send(msg).await, Err(RelayError::Closed));
        c.close().await; // idempotent
    }

    #[tokio::test]
    async fn oversized_send_is_refused_locally() {
        let c = RelayClient::builder("ws://127.0.0.1:1")
            .max_message_size(2048)
            .build()
            .unwrap();
        let msg = c.peer_connection(Uuid::new_v4(), DescriptionType::Offer, "x".repeat(4096));
        match c.send(msg).await {
            Err(RelayError::MessageTooLarge { limit: 2048, size }) => assert!(size > 4096),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.stats().registrations, 0);
    }
}
