//! GCRA rate limits, checked together.
//!
//! Hand-written rather than `governor`: governor consumes a cell when a
//! check passes, so a request that limits A and B both apply to would spend
//! A's budget even when B refuses it. Here every applicable budget is
//! checked under one lock and consumed only if all allow (what the Redis
//! script does for shared limits, on Redis's clock).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// One limit's shape: a request every `interval`, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    interval: u64,
    tolerance: u64,
}

impl Gcra {
    /// `burst` requests at once, refilled one per `interval`.
    pub fn new(interval: Duration, burst: u32) -> Gcra {
        let interval = (interval.as_nanos() as u64).max(1);
        Gcra {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.max(1)) - 1),
        }
    }

    /// The new theoretical arrival time if a request at `now` is allowed, or
    /// how long until it would be.
    fn decide(&self, tat: Option<u64>, now: u64) -> Result<u64, u64> {
        let tat = tat.unwrap_or(now).max(now);
        let allowed_at = tat - self.tolerance.min(tat);
        if now >= allowed_at {
            Ok(tat + self.interval)
        } else {
            Err(allowed_at - now)
        }
    }
}

/// A refusal: which limit (its index) and when to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// The index of the limit that refused (the one that frees up last).
    pub limit: usize,
    /// How long until the request would be allowed.
    pub retry_after: Duration,
}

/// Budgets of several limits, by key, in this process.
pub struct Limits {
    limits: Vec<Gcra>,
    /// (limit, key) → theoretical arrival time, in ns on the caller's clock.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    tats: HashMap<(usize, String), u64>,
    /// Inserts since the last sweep of refilled budgets.
    inserts: usize,
}

/// Sweep refilled budgets after this many new keys, so memory follows the
/// keys in use rather than every key ever seen.
const SWEEP_EVERY: usize = 4096;

impl Limits {
    /// Budgets for `limits` (indexed as given).
    pub fn new(limits: Vec<Gcra>) -> Limits {
        Limits {
            limits,
            state: Mutex::new(State::default()),
        }
    }

    /// Checks a request against `(limit, key)` budgets at `now` (time since
    /// any fixed start): consumes from all of them if every one allows it,
    /// from none otherwise.
    pub fn check(&self, budgets: &[(usize, &str)], now: Duration) -> Result<(), Limited> {
        self.decide(budgets, now, true)
    }

    /// [`Limits::check`] without consuming: whether the request would pass.
    pub fn peek(&self, budgets: &[(usize, &str)], now: Duration) -> Result<(), Limited> {
        self.decide(budgets, now, false)
    }

    fn decide(
        &self,
        budgets: &[(usize, &str)],
        now: Duration,
        consume: bool,
    ) -> Result<(), Limited> {
        let now = now.as_nanos() as u64;
        let mut st = self.state.lock().unwrap();
        let mut next = Vec::with_capacity(budgets.len());
        let mut refused: Option<Limited> = None;
        for &(limit, key) in budgets {
            let tat = st.tats.get(&(limit, key.to_string())).copied();
            match self.limits[limit].decide(tat, now) {
                Ok(t) => next.push(t),
                Err(wait) => {
                    let wait = Duration::from_nanos(wait);
                    if refused.is_none_or(|r| wait > r.retry_after) {
                        refused = Some(Limited {
                            limit,
                            retry_after: wait,
                        });
                    }
                }
            }
        }
        if let Some(r) = refused {
            return Err(r);
        }
        if !consume {
            return Ok(());
        }
        for (&(limit, key), tat) in budgets.iter().zip(next) {
            if st.tats.insert((limit, key.to_string()), tat).is_none() {
                st.inserts += 1;
            }
        }
        if st.inserts >= SWEEP_EVERY {
            st.inserts = 0;
            // A budget whose arrival time has passed is full again: forget it.
            st.tats.retain(|_, tat| *tat > now);
        }
        Ok(())
    }

    /// Budgets kept now (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.state.lock().unwrap().tats.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_burst_then_one_per_interval() {
        // 60/min with a burst of 3.
        let l = Limits::new(vec![Gcra::new(S, 3)]);
        let t0 = Duration::from_secs(100);
        for _ in 0..3 {
            assert_eq!(l.check(&[(0, "a")], t0), Ok(()));
        }
        let r = l.check(&[(0, "a")], t0).unwrap_err();
        assert_eq!(r.retry_after, S);
        // Another key has its own budget.
        assert_eq!(l.check(&[(0, "b")], t0), Ok(()));
        // Half a second later: still refused, told to wait the rest.
        let r = l.check(&[(0, "a")], t0 + S / 2).unwrap_err();
        assert_eq!(r.retry_after, S / 2);
        // After the interval exactly one more.
        assert_eq!(l.check(&[(0, "a")], t0 + S), Ok(()));
        assert!(l.check(&[(0, "a")], t0 + S).is_err());
        // A client that backs off long enough gets its whole burst back.
        for _ in 0..3 {
            assert_eq!(l.check(&[(0, "a")], t0 + 10 * S), Ok(()));
        }
    }

    #[test]
    fn a_refusal_by_one_limit_consumes_from_none() {
        // Limit 0: generous; limit 1: one per second, no burst.
        let l = Limits::new(vec![Gcra::new(S / 100, 100), Gcra::new(S, 1)]);
        let t = Duration::from_secs(5);
        assert_eq!(l.check(&[(0, "k"), (1, "k")], t), Ok(()));
        for _ in 0..50 {
            let r = l.check(&[(0, "k"), (1, "k")], t).unwrap_err();
            assert_eq!(r.limit, 1);
        }
        // Peeking consumes nothing.
        for _ in 0..10 {
            assert_eq!(l.peek(&[(0, "k")], t), Ok(()));
        }
        // Limit 0 spent only the one allowed request: 99 remain.
        for _ in 0..99 {
            assert_eq!(l.check(&[(0, "k")], t), Ok(()));
        }
        assert!(l.check(&[(0, "k")], t).is_err());
    }

    #[test]
    fn the_longest_wait_is_reported() {
        let l = Limits::new(vec![Gcra::new(S, 1), Gcra::new(10 * S, 1)]);
        let t = Duration::from_secs(1);
        assert_eq!(l.check(&[(0, "k"), (1, "k")], t), Ok(()));
        let r = l.check(&[(0, "k"), (1, "k")], t).unwrap_err();
        assert_eq!((r.limit, r.retry_after), (1, 10 * S));
    }

    #[test]
    fn refilled_budgets_are_forgotten() {
        let l = Limits::new(vec![Gcra::new(S, 1)]);
        for i in 0..SWEEP_EVERY + 10 {
            let _ = l.check(&[(0, &format!("k{i}"))], Duration::from_secs(1));
        }
        assert_eq!(l.tracked(), SWEEP_EVERY + 10);
        // Much later every old budget is full again: the next sweep forgets them.
        for i in 0..SWEEP_EVERY {
            let _ = l.check(&[(0, &format!("n{i}"))], Duration::from_secs(1000));
        }
        assert_eq!(l.tracked(), SWEEP_EVERY);
    }
}
