//! Jittered exponential backoff for retries (250 ms doubling to 30 s), and the short random
//! delay that coalesces a burst of events into one re-fetch. Random jitter keeps a fleet of nodes
//! from hitting Marathon in the same second.

use std::time::Duration;

use rand::Rng as _;

/// First retry delay.
pub const BASE: Duration = Duration::from_millis(250);
/// Longest retry delay.
pub const MAX: Duration = Duration::from_secs(30);

/// Delay after the first event of a burst before the coalesced re-fetch starts.
pub const COALESCE_MIN: Duration = Duration::from_millis(200);
pub const COALESCE_MAX: Duration = Duration::from_millis(700);

/// Exponential backoff with "equal jitter": each delay is uniform in `[d/2, d]`, `d` doubling from
/// `base` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    current: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(BASE, MAX)
    }
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max: max.max(base),
            current: base,
        }
    }

    /// The next delay (and doubles the ceiling for the one after).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        jitter(d / 2, d)
    }

    /// Back to `base` after a success.
    pub fn reset(&mut self) {
        self.current = self.base;
    }
}

/// Uniform random duration in `[lo, hi]`.
pub fn jitter(lo: Duration, hi: Duration) -> Duration {
    if hi <= lo {
        return lo;
    }
    let span = (hi - lo).as_micros().min(u128::from(u64::MAX)) as u64;
    lo + Duration::from_micros(rand::rng().random_range(0..=span))
}

/// The coalescing delay for a re-fetch after an event.
pub fn coalesce_delay() -> Duration {
    jitter(COALESCE_MIN, COALESCE_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let ceilings = [100u64, 200, 400, 800, 800, 800];
        for c in ceilings {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(c / 2) && d <= Duration::from_millis(c),
                "{d:?} not in [{}, {c}] ms",
                c / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn coalescing_delay_stays_in_its_window() {
        for _ in 0..200 {
            let d = coalesce_delay();
            assert!(d >= COALESCE_MIN && d <= COALESCE_MAX, "{d:?}");
        }
    }
}
