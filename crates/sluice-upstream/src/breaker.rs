//! A circuit breaker per upstream. Time is passed in, so tests drive it with
//! their own clock.

use sluice_config::Breaker as Config;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Closed,
    /// Failing fast until the instant; then one probe call is let through.
    Open {
        until: Instant,
    },
    /// One probe call is in flight; its outcome closes or reopens the circuit.
    HalfOpen,
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    /// When the next call will be let through.
    pub(crate) retry_in: Duration,
    /// Why the circuit opened, in words.
    pub(crate) reason: String,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    cfg: Config,
    state: State,
    consecutive: u32,
    window: VecDeque<(Instant, bool)>,
    opened_because: String,
}

impl Breaker {
    pub(crate) fn new(cfg: Config) -> Self {
        Breaker {
            cfg,
            state: State::Closed,
            consecutive: 0,
            window: VecDeque::new(),
            opened_because: String::new(),
        }
    }

    pub(crate) fn state(&self) -> State {
        self.state
    }

    /// May a call go through now? An open circuit past its time lets exactly
    /// one probe through (half-open).
    pub(crate) fn admit(&mut self, now: Instant) -> Result<(), Refused> {
        match self.state {
            State::Closed => Ok(()),
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen;
                Ok(())
            }
            State::Open { until } => Err(Refused {
                retry_in: until - now,
                reason: self.opened_because.clone(),
            }),
            State::HalfOpen => Err(Refused {
                retry_in: Duration::from_secs(1),
                reason: format!("{}; a probe call is testing it now", self.opened_because),
            }),
        }
    }

    /// Records a call's outcome (`ok`: the server answered).
    pub(crate) fn record(&mut self, now: Instant, ok: bool) {
        while self
            .window
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > self.cfg.window)
        {
            self.window.pop_front();
        }
        self.window.push_back((now, ok));
        if ok {
            self.consecutive = 0;
            if self.state == State::HalfOpen {
                self.state = State::Closed;
                self.window.clear();
            }
            return;
        }
        self.consecutive += 1;
        let failed = self.window.iter().filter(|(_, ok)| !ok).count() as u32;
        let total = self.window.len() as u32;
        let reason = if self.state == State::HalfOpen {
            Some(format!(
                "the probe call failed too ({} failures in a row)",
                self.consecutive
            ))
        } else if self.consecutive >= self.cfg.consecutive_failures {
            Some(format!("{} failures in a row", self.consecutive))
        } else if total >= self.cfg.min_calls
            && f64::from(failed) / f64::from(total) >= self.cfg.failure_rate
        {
            Some(format!(
                "{failed} of the last {total} calls failed within {} s",
                self.cfg.window.as_secs()
            ))
        } else {
            None
        };
        if let Some(reason) = reason {
            self.opened_because = format!("its circuit breaker opened after {reason}");
            self.state = State::Open {
                until: now + self.cfg.open_for,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config {
            consecutive_failures: 3,
            failure_rate: 0.5,
            window: Duration::from_secs(60),
            min_calls: 6,
            open_for: Duration::from_secs(30),
        }
    }

    #[test]
    fn opens_after_consecutive_failures_and_half_opens_after_the_wait() {
        let t0 = Instant::now();
        let mut b = Breaker::new(cfg());
        for _ in 0..2 {
            b.admit(t0).unwrap();
            b.record(t0, false);
        }
        assert_eq!(b.state(), State::Closed);
        b.record(t0, false);
        let refused = b.admit(t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(refused.retry_in, Duration::from_secs(20));
        assert!(
            refused.reason.contains("3 failures in a row"),
            "{}",
            refused.reason
        );

        // After the wait one probe goes through; others still fail fast.
        let t1 = t0 + Duration::from_secs(31);
        b.admit(t1).unwrap();
        assert_eq!(b.state(), State::HalfOpen);
        assert!(b.admit(t1).is_err());
        // The probe fails: open again for another period.
        b.record(t1, false);
        assert!(matches!(b.state(), State::Open { .. }));
        let t2 = t1 + Duration::from_secs(31);
        b.admit(t2).unwrap();
        b.record(t2, true);
        assert_eq!(b.state(), State::Closed);
        b.admit(t2).unwrap();
    }

    #[test]
    fn opens_on_failure_rate_over_the_window_only_with_enough_calls() {
        let t0 = Instant::now();
        let mut b = Breaker::new(cfg());
        // Alternating outcomes never reach 3 in a row.
        for i in 0..5 {
            b.record(t0, i % 2 == 0);
        }
        assert_eq!(b.state(), State::Closed, "5 calls < min_calls");
        b.record(t0, false);
        assert!(matches!(b.state(), State::Open { .. }), "3 of 6 failed");
    }

    #[test]
    fn old_outcomes_leave_the_window() {
        let t0 = Instant::now();
        let mut b = Breaker::new(cfg());
        for i in 0..6 {
            b.record(t0, i % 3 != 0);
        }
        assert_eq!(b.state(), State::Closed, "2 of 6 failed");
        let later = t0 + Duration::from_secs(120);
        for i in 0..5 {
            b.record(later, i % 2 == 0);
        }
        assert_eq!(
            b.state(),
            State::Closed,
            "the old six are gone: 2 of 5, under min_calls"
        );
    }
}
