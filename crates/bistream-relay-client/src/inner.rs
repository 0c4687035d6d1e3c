//! The state one client shares between its handle and its tasks ([`Inner`]): the current
//! connection, the terminal error, the backoff position, the incoming queue, the state watch,
//! the event channel and the counters, with the small transitions between them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bistream_core::sanitize;
use bistream_relay_proto::RelayMessage;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::BackoffState;
use crate::builder::Config;
use crate::connection::{self, Outgoing, WsStream};
use crate::events::{ConnectionEvent, ConnectionState, EVENT_CAPACITY};
use crate::supervisor::supervise;
use crate::RelayError;

/// Outgoing messages waiting for the connection task (each `send` waits for its own write).
const OUTGOING_CAPACITY: usize = 32;

/// Counters of what the client did, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Successful registrations (1 + reconnects).
    pub registrations: u64,
    /// Messages written to the relay.
    pub messages_sent: u64,
    /// Relay messages received and queued for `recv`.
    pub messages_received: u64,
    /// Text frames that did not decode (each returned once by `recv` as an error).
    pub decode_errors: u64,
    /// Binary frames from the relay, which the protocol does not use (ignored and logged).
    pub binary_frames_ignored: u64,
    /// Received messages discarded because the client was closed before `recv` took them
    /// from a paused connection.
    pub dropped_on_close: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) registrations: AtomicU64,
    pub(crate) messages_sent: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    pub(crate) binary_frames_ignored: AtomicU64,
    pub(crate) dropped_on_close: AtomicU64,
}

/// One registered connection, as seen by callers: where to hand outgoing messages and a
/// token cancelled when the connection task has ended.
pub(crate) struct ConnHandle {
    pub(crate) out_tx: mpsc::Sender<Outgoing>,
    pub(crate) ended: CancellationToken,
    pub(crate) connected_at: Instant,
}

pub(crate) struct Shared {
    pub(crate) conn: Option<Arc<ConnHandle>>,
    pub(crate) failed: Option<RelayError>,
    pub(crate) backoff: BackoffState,
    pub(crate) last_disconnect: Option<RelayError>,
    pub(crate) supervisor: Option<JoinHandle<()>>,
    pub(crate) conn_task: Option<JoinHandle<()>>,
}

pub(crate) struct Inner {
    pub(crate) cfg: Config,
    /// Cancelled by `close()` or by dropping the [`RelayClient`]: stops every task.
    pub(crate) cancel: CancellationToken,
    pub(crate) connect_lock: tokio::sync::Mutex<()>,
    shared: Mutex<Shared>,
    pub(crate) incoming_tx: mpsc::Sender<Result<RelayMessage, RelayError>>,
    pub(crate) incoming_rx: tokio::sync::Mutex<mpsc::Receiver<Result<RelayMessage, RelayError>>>,
    pub(crate) state: watch::Sender<ConnectionState>,
    pub(crate) events: broadcast::Sender<ConnectionEvent>,
    pub(crate) stats: Counters,
}

/// Who runs the connect loop: the application (an error is returned to it) or the
/// background supervisor (an error that is not retried stops the client for good, since
/// nobody else would see it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    /// `connect`, `send` or `recv` from the application.
    Application,
    /// The background reconnect task.
    Supervisor,
}

impl Inner {
    /// A client's state before its first connection.
    pub(crate) fn new(cfg: Config) -> Inner {
        let (incoming_tx, incoming_rx) = mpsc::channel(cfg.incoming_capacity);
        let (state, _) = watch::channel(ConnectionState::Disconnected);
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Inner {
            shared: Mutex::new(Shared {
                conn: None,
                failed: None,
                backoff: cfg.backoff.start(),
                last_disconnect: None,
                supervisor: None,
                conn_task: None,
            }),
            cfg,
            cancel: CancellationToken::new(),
            connect_lock: tokio::sync::Mutex::new(()),
            incoming_tx,
            incoming_rx: tokio::sync::Mutex::new(incoming_rx),
            state,
            events,
            stats: Counters::default(),
        }
    }

    pub(crate) fn shared(&self) -> MutexGuard<'_, Shared> {
        // A panic while holding this lock would be a bug in this crate; the data (plain
        // fields) stays consistent, so keep going rather than poison every caller.
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn set_state(&self, s: ConnectionState) {
        self.state.send_replace(s);
    }

    pub(crate) fn emit(&self, e: ConnectionEvent) {
        // No receivers is fine: events are optional to observe.
        let _ = self.events.send(e);
    }

    /// The error every call returns once the client is closed or has failed for good.
    pub(crate) fn terminal_error(&self) -> Option<RelayError> {
        if let Some(e) = &self.shared().failed {
            return Some(e.clone());
        }
        if self.cancel.is_cancelled() {
            return Some(RelayError::Closed);
        }
        None
    }

    pub(crate) fn live_conn(&self) -> Option<Arc<ConnHandle>> {
        self.shared()
            .conn
            .as_ref()
            .filter(|c| !c.ended.is_cancelled())
            .cloned()
    }

    pub(crate) fn fail(&self, e: RelayError) {
        {
            let mut sh = self.shared();
            if sh.failed.is_some() {
                return;
            }
            sh.failed = Some(e.clone());
        }
        tracing::error!(relay = %self.cfg.log_address, error = %e, "relay client stopped");
        self.set_state(ConnectionState::Failed(e.clone()));
        self.emit(ConnectionEvent::Failed(e));
    }

    /// Called by a connection task when its socket is gone.
    pub(crate) fn connection_ended(&self, code: u16, reason: String) {
        if self.cancel.is_cancelled() {
            return;
        }
        // The reason may be the relay's (untrusted) close reason.
        let reason = sanitize(&reason);
        let err = RelayError::from_close(code, reason.clone());
        self.shared().last_disconnect = Some(err.clone());
        tracing::warn!(relay = %self.cfg.log_address, code, reason = %reason, "relay connection lost");
        self.emit(ConnectionEvent::Disconnected { code, reason });
        if let RelayError::FatalClose { .. } = err {
            self.fail(err);
        } else {
            self.set_state(ConnectionState::Disconnected);
        }
    }

    /// Makes a registered socket the current connection and starts its task.
    pub(crate) fn install(self: &Arc<Self>, ws: WsStream) {
        let (out_tx, out_rx) = mpsc::channel(OUTGOING_CAPACITY);
        let handle = Arc::new(ConnHandle {
            out_tx,
            ended: CancellationToken::new(),
            connected_at: Instant::now(),
        });
        let registrations = self.stats.registrations.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(
            relay = %self.cfg.log_address,
            uuid = %self.cfg.uuid,
            name = %sanitize(&self.cfg.name),
            registrations,
            "registered with the relay"
        );
        // State and event first, so they can never follow the connection's own end.
        self.set_state(ConnectionState::Connected);
        self.emit(ConnectionEvent::Connected { registrations });
        let task = tokio::spawn(connection::run(
            self.clone(),
            ws,
            out_rx,
            handle.ended.clone(),
        ));
        let mut sh = self.shared();
        sh.conn = Some(handle);
        sh.conn_task = Some(task);
        if self.cfg.reconnect && sh.supervisor.is_none() {
            sh.supervisor = Some(tokio::spawn(supervise(self.clone())));
        }
    }

    /// Closes the client once: stops the tasks; `true` for the first call.
    pub(crate) fn shut_down(&self) -> bool {
        if self.cancel.is_cancelled() {
            return false;
        }
        self.cancel.cancel();
        if !self.state.borrow().is_terminal() {
            self.set_state(ConnectionState::Closed);
        }
        self.emit(ConnectionEvent::Closed);
        true
    }
}
