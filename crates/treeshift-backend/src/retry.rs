//! When to try again: one backoff rule for every retry in treeshift, the
//! HTTP requests of a remote store and the engine's listings and copies.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// How many times, and how long apart, an operation is tried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The first delay; it doubles with each attempt...
    pub base_delay: Duration,
    /// ...up to this.
    pub max_delay: Duration,
}

/// The longest wait a store's `Retry-After` gets: a store asking for more
/// than this is treated as unavailable once the attempts are used up.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1 for the first): the
    /// store's own `hint` (a `Retry-After`) where it gave one, capped;
    /// otherwise exponential with jitter between 50 and 150 %, so many
    /// workers hitting one throttled store do not come back in lockstep.
    pub fn delay(&self, attempt: u32, hint: Option<Duration>) -> Duration {
        if let Some(hint) = hint {
            return hint.min(RETRY_AFTER_CAP);
        }
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay);
        exp.mul_f64(0.5 + unit_random())
    }

    /// Whether another attempt may follow failed attempt `attempt`.
    pub fn again(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }
}

/// A number in [0, 1), different on each call (randomly keyed hashers;
/// good enough to spread retries, not for anything secret).
fn unit_random() -> f64 {
    let bits = std::hash::RandomState::new().build_hasher().finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_capped_and_follow_the_store() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(100),
        };
        assert!(p.delay(1, None) <= Duration::from_millis(15));
        assert!(p.delay(1, None) >= Duration::from_millis(5));
        assert!(p.delay(3, None) >= Duration::from_millis(20));
        assert!(p.delay(30, None) <= Duration::from_millis(150));
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(p.delay(1, Some(Duration::from_secs(3600))), RETRY_AFTER_CAP);
        assert!(p.again(9) && !p.again(10));
    }

    #[test]
    fn jitter_spreads() {
        let p = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1000),
            max_delay: Duration::from_secs(10),
        };
        let delays: std::collections::HashSet<_> = (0..20).map(|_| p.delay(1, None)).collect();
        assert!(delays.len() > 10, "{delays:?}");
    }
}
