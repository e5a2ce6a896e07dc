//! Reconnect delays: exponential with jitter, so upstreams (and replicas)
//! that lost their servers together do not all retry at the same instant.
//!
//! The delays come from `backon`'s [`ExponentialBuilder`]; the loops keep
//! their own shape (they reset the delay on success and sleep under a
//! `select!` with their stop signal), so they take the delays as an iterator
//! rather than handing their body to `backon`'s `Retryable`.

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use std::time::Duration;

/// Delays that double from `min` and stay below `max`.
///
/// `backon`'s jitter adds up to the base delay again (a wait is in
/// `[base, 2·base)`), so the base is capped at `max / 2`: the first wait is
/// between `min` and `2·min`, and none reaches `max`.
pub(crate) struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        let builder = ExponentialBuilder::new()
            .with_min_delay(min)
            .with_max_delay(max / 2)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Backoff {
            delays: builder.build(),
            builder,
            max,
        }
    }

    /// The wait before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        // Without a limit on attempts the iterator never ends; `min` guards
        // against rounding in the float arithmetic.
        self.delays.next().unwrap_or(self.max).min(self.max)
    }

    /// Starts over from `min` (after a success).
    pub(crate) fn reset(&mut self) {
        self.delays = self.builder.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_within_the_bounds() {
        let (min, max) = (Duration::from_millis(500), Duration::from_secs(30));
        let mut b = Backoff::new(min, max);
        let waits: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        assert!(waits[0] >= min && waits[0] < min * 2, "{waits:?}");
        assert!(waits[1] >= min * 2 && waits[1] < min * 4, "{waits:?}");
        assert!(waits.iter().all(|w| *w >= min && *w <= max), "{waits:?}");
        assert!(waits[11] >= max / 2, "the delay reached its cap: {waits:?}");
        b.reset();
        assert!(b.next_delay() < min * 2, "reset starts over");
    }

    #[test]
    fn waits_are_jittered() {
        let mut a = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let (wa, wb): (Vec<_>, Vec<_>) = (0..8).map(|_| (a.next_delay(), b.next_delay())).unzip();
        assert_ne!(wa, wb, "two upstreams do not retry in lockstep");
    }
}
