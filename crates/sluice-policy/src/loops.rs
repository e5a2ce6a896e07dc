//! Agent-loop detection: the same caller making the same call (tool and
//! canonical arguments) again and again within a window, or alternating
//! between two calls (A, B, A, B, …).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// What the loop guard makes of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopVerdict {
    /// Not a loop.
    Fine,
    /// The call reached the threshold: log and count it, but serve it.
    Noticed {
        /// Repeats within the window, this call included.
        repeats: u32,
    },
    /// One past the threshold: tell the agent it appears to be looping
    /// instead of making the call.
    Warned {
        /// Repeats within the window, this call included.
        repeats: u32,
    },
    /// Further past it: refuse until the window has passed.
    Refused {
        /// Repeats within the window, this call included.
        repeats: u32,
        /// When the oldest repeat leaves the window.
        retry_after: Duration,
    },
}

/// Thresholds of one tool.
#[derive(Debug, Clone, Copy)]
pub struct LoopRule {
    /// Identical calls within the window that make a loop.
    pub repeats: u32,
}

/// The loop guard's memory of recent calls, per caller.
pub struct LoopGuard {
    window: Duration,
    state: Mutex<HashMap<String, VecDeque<(u64, Duration)>>>,
}

/// Calls remembered per caller: enough for any threshold's alternation.
const REMEMBERED: usize = 64;

impl LoopGuard {
    /// A guard looking back `window`.
    pub fn new(window: Duration) -> LoopGuard {
        LoopGuard {
            window,
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Records a call by `caller` with signature `call` (tool and canonical
    /// arguments, hashed) at `now`, and judges it under `rule`.
    pub fn observe(&self, caller: &str, call: u64, rule: LoopRule, now: Duration) -> LoopVerdict {
        let mut st = self.state.lock().unwrap();
        if st.len() > 65_536 {
            let window = self.window;
            st.retain(|_, h| {
                h.back()
                    .is_some_and(|(_, t)| now.saturating_sub(*t) < window)
            });
        }
        let history = st.entry(caller.to_string()).or_default();
        while history
            .front()
            .is_some_and(|(_, t)| now.saturating_sub(*t) >= self.window)
        {
            history.pop_front();
        }
        if history.len() == REMEMBERED {
            history.pop_front();
        }
        history.push_back((call, now));

        // Identical calls within the window, and the oldest of them.
        let same: Vec<Duration> = history
            .iter()
            .filter(|(c, _)| *c == call)
            .map(|(_, t)| *t)
            .collect();
        let identical = same.len() as u32;
        // A, B, A, B …: the alternating run ending with this call, counted in pairs.
        let calls: Vec<u64> = history.iter().map(|(c, _)| *c).collect();
        let n = calls.len();
        let mut run = 1;
        while run < n {
            // Extend the run backwards while each call differs from the next
            // and equals the one two on.
            let i = n - 1 - run;
            let differs = calls[i] != calls[i + 1];
            let two_on = i + 2 >= n || calls[i] == calls[i + 2];
            if !(differs && two_on) {
                break;
            }
            run += 1;
        }
        let alternations = if run >= 4 { (run / 2) as u32 } else { 0 };
        let repeats = identical.max(alternations);
        let oldest = if identical >= alternations {
            same[0]
        } else {
            history[history.len() - run].1
        };
        match repeats.checked_sub(rule.repeats) {
            None => LoopVerdict::Fine,
            Some(0) => LoopVerdict::Noticed { repeats },
            Some(1) => LoopVerdict::Warned { repeats },
            Some(_) => LoopVerdict::Refused {
                repeats,
                retry_after: self.window.saturating_sub(now.saturating_sub(oldest)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: LoopRule = LoopRule { repeats: 3 };

    fn at(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn identical_calls_are_noticed_warned_then_refused_until_the_window_passes() {
        let g = LoopGuard::new(at(60));
        assert_eq!(g.observe("p", 7, RULE, at(0)), LoopVerdict::Fine);
        assert_eq!(g.observe("p", 7, RULE, at(1)), LoopVerdict::Fine);
        assert_eq!(
            g.observe("p", 7, RULE, at(2)),
            LoopVerdict::Noticed { repeats: 3 }
        );
        assert_eq!(
            g.observe("p", 7, RULE, at(3)),
            LoopVerdict::Warned { repeats: 4 }
        );
        assert_eq!(
            g.observe("p", 7, RULE, at(4)),
            LoopVerdict::Refused {
                repeats: 5,
                retry_after: at(56)
            }
        );
        // Another caller, or another call, is not affected.
        assert_eq!(g.observe("q", 7, RULE, at(4)), LoopVerdict::Fine);
        assert_eq!(g.observe("p", 8, RULE, at(4)), LoopVerdict::Fine);
        // Once the window has passed the call is served again.
        assert_eq!(g.observe("p", 7, RULE, at(70)), LoopVerdict::Fine);
    }

    #[test]
    fn alternating_between_two_calls_is_a_loop() {
        let g = LoopGuard::new(at(60));
        let mut verdicts = Vec::new();
        for i in 0..10u64 {
            verdicts.push(g.observe("p", if i % 2 == 0 { 1 } else { 2 }, RULE, at(i)));
        }
        // Identical calls alone reach 3 at the fifth call; the alternation
        // (pairs) is what counts from the sixth call on.
        assert!(
            verdicts[..4].iter().all(|v| *v == LoopVerdict::Fine),
            "{verdicts:?}"
        );
        assert!(
            matches!(verdicts[9], LoopVerdict::Refused { .. }),
            "{verdicts:?}"
        );
    }

    #[test]
    fn varied_calls_are_not_a_loop() {
        let g = LoopGuard::new(at(60));
        for i in 0..50u64 {
            assert_eq!(
                g.observe("p", i % 7, LoopRule { repeats: 10 }, at(i)),
                LoopVerdict::Fine
            );
        }
    }
}
