//! Supervision: the connect loop (one attempt at a time, under the client's connect lock), the
//! retry rules, and the background task that reconnects when a connection ends.
//!
//! The decisions are plain functions of plain values ([`after_loss`], [`on_failure`]), so they
//! are unit-tested without sockets or clocks; the loop around them only waits and dials.

use std::sync::Arc;
use std::time::Duration;

use bistream_core::sanitize;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;

use crate::backoff::BackoffState;
use crate::events::{ConnectionEvent, ConnectionState};
use crate::inner::{Caller, Inner};
use crate::registration;
use crate::RelayError;

/// What to do before dialling again after a registered connection ended.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AfterLoss {
    /// It had been up for `stable_after`: the schedule starts over and the next attempt is
    /// immediate.
    ReconnectNow,
    /// It ended early: that counts as a failed attempt, so wait this long first (a relay
    /// that accepts and drops every connection is not hammered).
    WaitFirst {
        /// Failed attempts since the last stable connection, this one included.
        attempt: u32,
        /// The wait.
        delay: Duration,
    },
    /// No wait: no previous connection, or the caller asked for a single attempt.
    Dial,
}

/// Decides how a lost connection affects the schedule (and advances it).
pub(crate) fn after_loss(
    connected_for: Option<Duration>,
    stable_after: Duration,
    retry: bool,
    backoff: &mut BackoffState,
) -> AfterLoss {
    match connected_for {
        Some(up) if up >= stable_after => {
            backoff.reset();
            AfterLoss::ReconnectNow
        }
        Some(_) if retry => {
            let delay = backoff.next_delay();
            AfterLoss::WaitFirst {
                attempt: backoff.attempts(),
                delay,
            }
        }
        _ => AfterLoss::Dial,
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnFailure {
    /// Wait (per the schedule) and try again.
    Retry,
    /// Give the error to the caller; the client can still be used later.
    Return,
    /// Give the error to the caller and stop the client for good: a fatal close (the
    /// relay said never to come back), or a failure the background task cannot hand to
    /// anyone.
    Fail,
}

/// The retry rule for one failed attempt.
pub(crate) fn on_failure(error: &RelayError, retry: bool, caller: Caller) -> OnFailure {
    if matches!(error, RelayError::Closed) {
        OnFailure::Return
    } else if retry && error.is_retryable() {
        OnFailure::Retry
    } else if matches!(error, RelayError::FatalClose { .. }) || caller == Caller::Supervisor {
        OnFailure::Fail
    } else {
        OnFailure::Return
    }
}

impl Inner {
    /// Opens and registers a connection unless one is up; concurrent callers share one
    /// attempt (the connect lock).
    pub(crate) async fn connect(
        self: &Arc<Self>,
        retry: bool,
        caller: Caller,
    ) -> Result<(), RelayError> {
        if let Some(e) = self.terminal_error() {
            return Err(e);
        }
        let _guard = tokio::select! {
            biased;
            _ = self.cancel.cancelled() => return Err(RelayError::Closed),
            g = self.connect_lock.lock() => g,
        };
        // Whoever held the lock before may have connected, failed, or been closed.
        if let Some(e) = self.terminal_error() {
            return Err(e);
        }
        if self.live_conn().is_some() {
            return Ok(());
        }
        self.establish(retry, caller).await
    }

    /// The connect loop (called with the connect lock held).
    async fn establish(self: &Arc<Self>, retry: bool, caller: Caller) -> Result<(), RelayError> {
        let (first, last_disconnect) = {
            let mut sh = self.shared();
            let connected_for = sh.conn.take().map(|old| old.connected_at.elapsed());
            let first = after_loss(connected_for, self.cfg.stable_after, retry, &mut sh.backoff);
            (first, sh.last_disconnect.clone())
        };
        if let AfterLoss::WaitFirst { attempt, delay } = first {
            let error = last_disconnect.unwrap_or(RelayError::Disconnected {
                code: u16::from(WsCloseCode::Abnormal),
                reason: "connection lost".into(),
            });
            self.wait_before_retry(attempt, delay, error).await?;
        }
        loop {
            let attempt = self.shared().backoff.attempts() + 1;
            self.set_state(ConnectionState::Connecting { attempt });
            let result = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => Err(RelayError::Closed),
                r = registration::register(&self.cfg) => r,
            };
            let e = match result {
                Ok(ws) => {
                    self.install(ws);
                    return Ok(());
                }
                Err(e) => e,
            };
            match on_failure(&e, retry, caller) {
                OnFailure::Retry => {
                    let (attempt, delay) = {
                        let mut sh = self.shared();
                        let d = sh.backoff.next_delay();
                        (sh.backoff.attempts(), d)
                    };
                    self.wait_before_retry(attempt, delay, e).await?;
                }
                OnFailure::Fail => {
                    self.fail(e.clone());
                    return Err(e);
                }
                OnFailure::Return => {
                    if !matches!(e, RelayError::Closed) {
                        self.set_state(ConnectionState::Disconnected);
                    }
                    return Err(e);
                }
            }
        }
    }

    async fn wait_before_retry(
        &self,
        attempt: u32,
        delay: Duration,
        error: RelayError,
    ) -> Result<(), RelayError> {
        tracing::warn!(
            relay = %self.cfg.log_address,
            error = %sanitize(&error.to_string()),
            attempt,
            "relay registration failed; retrying in {:.1} s",
            delay.as_secs_f64()
        );
        self.set_state(ConnectionState::Retrying { delay });
        self.emit(ConnectionEvent::Retrying {
            attempt,
            delay,
            error,
        });
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(RelayError::Closed),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }
}

/// The background reconnect task: waits for the current connection to end, then runs the
/// connect loop again. Ends when the client is closed or fails for good.
pub(crate) async fn supervise(inner: Arc<Inner>) {
    loop {
        let conn = inner.live_conn();
        if let Some(conn) = conn {
            tokio::select! {
                biased;
                _ = inner.cancel.cancelled() => return,
                _ = conn.ended.cancelled() => {}
            }
        }
        if inner.terminal_error().is_some() {
            return;
        }
        if inner.connect(true, Caller::Supervisor).await.is_err() {
            // Closed, or failed for good (already recorded and announced).
            return;
        }
    }
}

#[cfg(test)]
#[path = "supervisor_tests.rs"]
mod tests;
