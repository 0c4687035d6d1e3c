//! Exponential backoff with jitter, as a plain value with no clock and no I/O, so the delay
//! sequence can be tested exactly.

use std::time::Duration;

use crate::RelayError;

/// How long to wait between connection attempts: `initial`, then multiplied by `factor` after
/// each failure, capped at `max`, each delay shortened by a random fraction of at most
/// `jitter` (so a delay never exceeds the cap, and many clients restarted together spread out).
///
/// The default (1 s, ×2, 60 s cap, 10 % jitter) is ProxyStore's schedule plus jitter;
/// `jitter: 0.0` gives ProxyStore's exact 1, 2, 4, …, 32, 60, 60, … seconds.
///
/// ```
/// use std::time::Duration;
/// use bistream_relay_client::Backoff;
///
/// let policy = Backoff { jitter: 0.0, ..Backoff::default() };
/// let secs: Vec<u64> = (0..8).map(|n| policy.delay(n, 0.0).as_secs()).collect();
/// assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60]);
/// // With jitter, `sample` in [0, 1) picks how much of the jitter range is taken off.
/// let jittered = Backoff::default().delay(0, 0.5);
/// assert_eq!(jittered, Duration::from_millis(950));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The multiplier applied after each failed attempt (at least 1).
    pub factor: f64,
    /// The cap.
    pub max: Duration,
    /// The largest fraction (0 to 1) taken off a delay at random.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            factor: 2.0,
            max: Duration::from_secs(60),
            jitter: 0.1,
        }
    }
}

impl Backoff {
    /// Checks the fields: `factor` finite and ≥ 1, `jitter` in [0, 1], `initial` ≤ `max`.
    pub fn validate(&self) -> Result<(), RelayError> {
        if !self.factor.is_finite() || self.factor < 1.0 {
            return Err(RelayError::InvalidConfig(format!(
                "backoff factor must be a finite number >= 1, got {}",
                self.factor
            )));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(RelayError::InvalidConfig(format!(
                "backoff jitter must be between 0 and 1, got {}",
                self.jitter
            )));
        }
        if self.initial > self.max {
            return Err(RelayError::InvalidConfig(format!(
                "backoff initial delay {:?} is larger than the cap {:?}",
                self.initial, self.max
            )));
        }
        Ok(())
    }

    /// The delay before retry number `attempt` (0 for the first retry), with `sample` in
    /// [0, 1) choosing the jitter (values outside are clamped; NaN counts as 0).
    pub fn delay(&self, attempt: u32, sample: f64) -> Duration {
        let max = self.max.as_secs_f64();
        // powi saturates to infinity for huge exponents; min() brings it back to the cap.
        let exp = i32::try_from(attempt).unwrap_or(i32::MAX);
        let base = (self.initial.as_secs_f64() * self.factor.max(1.0).powi(exp)).min(max);
        let sample = if sample.is_nan() {
            0.0
        } else {
            sample.clamp(0.0, 1.0)
        };
        let jitter = self.jitter.clamp(0.0, 1.0);
        let secs = base * (1.0 - jitter * sample);
        Duration::try_from_secs_f64(secs)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// A fresh iterator-like state over this policy's delays.
    pub fn start(&self) -> BackoffState {
        BackoffState {
            policy: *self,
            attempt: 0,
        }
    }
}

/// The position in a [`Backoff`] schedule: how many retries have been made since the last
/// success.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffState {
    policy: Backoff,
    attempt: u32,
}

impl BackoffState {
    /// The next delay, with jitter drawn from `sample` in [0, 1); advances the schedule.
    pub fn next_delay_with(&mut self, sample: f64) -> Duration {
        let d = self.policy.delay(self.attempt, sample);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// The next delay with random jitter; advances the schedule.
    pub fn next_delay(&mut self) -> Duration {
        let sample: f64 = if self.policy.jitter > 0.0 {
            rand::random()
        } else {
            0.0
        };
        self.next_delay_with(sample)
    }

    /// Retries made since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to the start of the schedule (after a connection that stayed up).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_jitter() -> Backoff {
        Backoff {
            jitter: 0.0,
            ..Backoff::default()
        }
    }

    #[test]
    fn proxystore_schedule_without_jitter() {
        let mut s = no_jitter().start();
        let got: Vec<f64> = (0..10).map(|_| s.next_delay().as_secs_f64()).collect();
        assert_eq!(
            got,
            [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0, 60.0]
        );
        assert_eq!(s.attempts(), 10);
        s.reset();
        assert_eq!(s.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn jitter_only_shortens_and_stays_in_range() {
        let p = Backoff::default();
        for attempt in 0..20 {
            let full = no_jitter().delay(attempt, 0.0);
            for sample in [0.0, 0.25, 0.5, 0.999_999, 1.0] {
                let d = p.delay(attempt, sample);
                assert!(d <= full, "{attempt} {sample}: {d:?} > {full:?}");
                assert!(
                    d.as_secs_f64() >= full.as_secs_f64() * 0.9 - 1e-9,
                    "{attempt} {sample}: {d:?}"
                );
            }
        }
        assert_eq!(p.delay(0, 0.0), Duration::from_secs(1));
        assert_eq!(p.delay(0, 1.0), Duration::from_millis(900));
        assert_eq!(p.delay(30, 0.5), Duration::from_secs(57));
    }

    #[test]
    fn random_jitter_stays_in_range() {
        let mut s = Backoff::default().start();
        for attempt in 0..50u32 {
            let d = s.next_delay();
            let full = no_jitter().delay(attempt, 0.0);
            assert!(d <= full && d.as_secs_f64() >= full.as_secs_f64() * 0.9 - 1e-9);
        }
    }

    #[test]
    fn hostile_values_do_not_panic() {
        let p = Backoff {
            initial: Duration::from_secs(u64::MAX / 2),
            factor: 1e300,
            max: Duration::MAX,
            jitter: 1.0,
        };
        for attempt in [0, 1, 1000, u32::MAX] {
            for sample in [f64::NAN, -1.0, 2.0, f64::INFINITY] {
                let _ = p.delay(attempt, sample);
            }
        }
        let mut s = no_jitter().start();
        s.attempt = u32::MAX;
        assert_eq!(s.next_delay(), Duration::from_secs(60));
        assert_eq!(s.attempts(), u32::MAX);
        // Zero initial delay: retry at once, forever (allowed, for tests).
        let zero = Backoff {
            initial: Duration::ZERO,
            ..no_jitter()
        };
        assert_eq!(zero.delay(5, 0.0), Duration::ZERO);
    }

    #[test]
    fn validation() {
        assert!(Backoff::default().validate().is_ok());
        for bad in [
            Backoff {
                factor: 0.5,
                ..Backoff::default()
            },
            Backoff {
                factor: f64::NAN,
                ..Backoff::default()
            },
            Backoff {
                jitter: 1.5,
                ..Backoff::default()
            },
            Backoff {
                jitter: -0.1,
                ..Backoff::default()
            },
            Backoff {
                initial: Duration::from_secs(2),
                max: Duration::from_secs(1),
                ..Backoff::default()
            },
        ] {
            let e = bad.validate().unwrap_err();
            assert!(matches!(e, RelayError::InvalidConfig(_)), "{e}");
        }
    }
}
