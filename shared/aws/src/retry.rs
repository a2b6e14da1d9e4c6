//! Retry delays: exponential backoff with full jitter (AWS Architecture Blog,
//! "Exponential Backoff And Jitter"). Nothing in Junction sleeps to back off: the delay
//! becomes an SQS visibility timeout (or a re-enqueue delay), so a Lambda never idles.

use std::time::Duration;

use rand::Rng;

/// Backoff bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first retry's delay.
    pub base: Duration,
    /// No delay exceeds this.
    pub cap: Duration,
}

impl Backoff {
    /// The largest delay for the `attempt`-th delivery (1-based): `min(cap, base·2^(attempt−1))`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(31);
        self.base.saturating_mul(1u32 << exponent).min(self.cap)
    }

    /// A delay drawn uniformly from `[0, ceiling(attempt)]` ("full jitter"), which
    /// spreads retries of a burst of failures instead of synchronising them.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(attempt).as_millis() as u64;
        Duration::from_millis(rng.gen_range(0..=ceiling))
    }
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;

    const BACKOFF: Backoff = Backoff {
        base: Duration::from_secs(2),
        cap: Duration::from_secs(300),
    };

    #[test]
    fn ceiling_doubles_then_caps() {
        let ceilings: Vec<u64> = (1..=10).map(|n| BACKOFF.ceiling(n).as_secs()).collect();
        assert_eq!(ceilings, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(
            BACKOFF.ceiling(0).as_secs(),
            2,
            "attempt 0 is treated as the first"
        );
        assert_eq!(BACKOFF.ceiling(u32::MAX).as_secs(), 300);
    }

    #[test]
    fn delays_stay_within_the_ceiling_and_spread_out() {
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 1..=12 {
            let ceiling = BACKOFF.ceiling(attempt);
            let delays: Vec<Duration> =
                (0..200).map(|_| BACKOFF.delay(attempt, &mut rng)).collect();
            assert!(delays.iter().all(|d| *d <= ceiling));
            let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
            assert!(distinct.len() > 100, "full jitter spreads retries");
        }
    }
}
