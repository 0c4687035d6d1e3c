//! Connection-state events an application can watch: the current state (a `watch` value) and
//! a bounded stream of transitions (a `broadcast` channel; a slow reader is told how many
//! events it missed instead of blocking the client).

use std::time::Duration;

use tokio::sync::broadcast;

use crate::RelayError;

/// Events kept for a slow [`Events`] reader before the oldest are overwritten.
pub(crate) const EVENT_CAPACITY: usize = 64;

/// Where the client is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// No connection yet, or the last one ended and no attempt is running.
    Disconnected,
    /// Opening a WebSocket and registering (`attempt` counts from 1 since the last success).
    Connecting {
        /// Attempt number since the last successful registration.
        attempt: u32,
    },
    /// Waiting before the next attempt.
    Retrying {
        /// The wait before the next attempt.
        delay: Duration,
    },
    /// Registered with the relay.
    Connected,
    /// Closed by the application (`close()` or drop). Terminal.
    Closed,
    /// Stopped for good by an error that is not retried (4001, 4002, 4004, ...). Terminal.
    Failed(RelayError),
}

impl ConnectionState {
    /// `Closed` or `Failed`: nothing will happen any more.
    pub fn is_terminal(&self) -> bool {
        matches!(self, ConnectionState::Closed | ConnectionState::Failed(_))
    }
}

/// A change in the client's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// Registered with the relay (the first time, or again after a reconnect).
    Connected {
        /// How many registrations this client has completed, including this one.
        registrations: u64,
    },
    /// The registered connection ended.
    Disconnected {
        /// The close code (1006 when the connection dropped without a close frame).
        code: u16,
        /// The close reason, or a description of the failure.
        reason: String,
    },
    /// An attempt failed with a retryable error; the next one follows after `delay`.
    Retrying {
        /// Failed attempts since the last success (1 after the first failure).
        attempt: u32,
        /// The wait before the next attempt.
        delay: Duration,
        /// Why the last attempt failed.
        error: RelayError,
    },
    /// The client stopped for good on an error that is not retried.
    Failed(RelayError),
    /// The client was closed by the application.
    Closed,
    /// This reader fell behind and `0` events were dropped for it (never for others).
    Lagged(u64),
}

/// A stream of [`ConnectionEvent`]s from [`RelayClient::events`](crate::RelayClient::events).
/// Only events after the call are seen. Bounded: a reader that falls more than 64 events
/// behind gets [`ConnectionEvent::Lagged`] and continues with the newest events.
#[derive(Debug)]
pub struct Events {
    pub(crate) rx: broadcast::Receiver<ConnectionEvent>,
}

impl Events {
    /// The next event; `None` once the client and all its tasks are gone.
    pub async fn next(&mut self) -> Option<ConnectionEvent> {
        match self.rx.recv().await {
            Ok(e) => Some(e),
            Err(broadcast::error::RecvError::Lagged(n)) => Some(ConnectionEvent::Lagged(n)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}
