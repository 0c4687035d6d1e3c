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
mod tests {
    use super::*;
    use crate::Backoff;

    fn schedule() -> BackoffState {
        Backoff {
            jitter: 0.0,
            ..Backoff::default()
        }
        .start()
    }

    const STABLE: Duration = Duration::from_secs(10);

    #[test]
    fn a_relay_that_drops_every_connection_early_sees_growing_waits() {
        let mut b = schedule();
        let mut waits = Vec::new();
        for _ in 0..8 {
            match after_loss(Some(Duration::from_millis(300)), STABLE, true, &mut b) {
                AfterLoss::WaitFirst { attempt, delay } => {
                    assert_eq!(attempt as usize, waits.len() + 1);
                    waits.push(delay.as_secs());
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn a_stable_connection_resets_the_schedule_and_reconnects_at_once() {
        let mut b = schedule();
        for _ in 0..5 {
            b.next_delay();
        }
        assert_eq!(
            after_loss(Some(STABLE), STABLE, true, &mut b),
            AfterLoss::ReconnectNow
        );
        assert_eq!(b.attempts(), 0);
        // The next early loss starts from the first delay again.
        assert_eq!(
            after_loss(Some(Duration::ZERO), STABLE, true, &mut b),
            AfterLoss::WaitFirst {
                attempt: 1,
                delay: Duration::from_secs(1)
            }
        );
        // Even without retry, a stable connection resets (it was a success).
        assert_eq!(
            after_loss(Some(STABLE * 2), STABLE, false, &mut b),
            AfterLoss::ReconnectNow
        );
        assert_eq!(b.attempts(), 0);
    }

    #[test]
    fn no_wait_for_a_first_connection_or_a_single_attempt() {
        let mut b = schedule();
        assert_eq!(after_loss(None, STABLE, true, &mut b), AfterLoss::Dial);
        assert_eq!(
            after_loss(Some(Duration::ZERO), STABLE, false, &mut b),
            AfterLoss::Dial
        );
        assert_eq!(b.attempts(), 0, "no attempt was counted");
    }

    #[test]
    fn retry_rules() {
        use Caller::{Application as App, Supervisor as Sup};
        let refused = RelayError::Io {
            kind: std::io::ErrorKind::ConnectionRefused,
            message: "refused".into(),
        };
        let fatal = RelayError::from_close(4004, "same ID".into());
        let rejected = RelayError::RegistrationRejected("no".into());
        let closed = RelayError::Closed;
        let cases = [
            (&refused, true, App, OnFailure::Retry),
            (&refused, true, Sup, OnFailure::Retry),
            (&refused, false, App, OnFailure::Return),
            (&refused, false, Sup, OnFailure::Fail),
            (&fatal, true, App, OnFailure::Fail),
            (&fatal, false, App, OnFailure::Fail),
            (&fatal, true, Sup, OnFailure::Fail),
            (&rejected, true, App, OnFailure::Return),
            (&rejected, true, Sup, OnFailure::Fail),
            (&closed, true, App, OnFailure::Return),
            (&closed, true, Sup, OnFailure::Return),
        ];
        for (e, retry, caller, want) in cases {
            assert_eq!(
                on_failure(e, retry, caller),
                want,
                "{e:?} retry={retry} {caller:?}"
            );
        }
    }
}
