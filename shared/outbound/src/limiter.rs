//! The client-side rate limit and the circuit breaker, both shared by every Lambda
//! instance through [`SharedState`] (conditional writes on a version).
//!
//! **Token bucket** per provider (or per connection where the provider limits per
//! account): `burst` tokens, refilled at the catalog's rate. A caller takes a token
//! and gets back how long to wait before sending; tokens may go negative, which queues
//! callers fairly instead of letting them all retry at once. A 429 reveals a limit the
//! provider does not document: the effective rate is halved (at most once a second, so
//! the 429s of requests already in flight count once; never below 1/64 of the
//! configured rate) and climbs back linearly over ten minutes (additive increase,
//! multiplicative decrease), and a `Retry-After` or a spent quota's reset empties the
//! bucket for that long, so no instance sends before then.
//!
//! **Circuit breaker** per provider: 5 consecutive transient failures (5xx, timeouts;
//! not 429s, which the bucket handles, nor 4xx, which are the request's fault) open it
//! for 60 s; then exactly one caller gets to probe (half-open) while the others keep
//! being refused; the probe's success closes it, its failure opens it again. A closed
//! breaker costs one read per call and no write while calls succeed.

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

use super::shared_state::{SharedState, StateError, read, update};
use junction_aws::clock::Clock;

/// Idle state expires after a day (the table's TTL).
const STATE_TTL_SECONDS: i64 = 86_400;
/// How long a lowered rate takes to climb back to the configured one.
const RECOVERY_MS: f64 = 600_000.0;
/// At most one halving per second: the 429s of requests already in flight count once.
const DECREASE_INTERVAL_MS: i64 = 1_000;
/// The lowest effective rate, as a fraction of the configured one.
const MIN_RATE_FRACTION: f64 = 1.0 / 64.0;

/// A configured limit: `rate` requests per second, bursts of up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub rate: f64,
    pub burst: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
    #[serde(default)]
    lowered_rate: Option<f64>,
    #[serde(default)]
    lowered_at_ms: i64,
    #[serde(default)]
    throttles: u64,
}

impl Bucket {
    fn rate(&self, limit: Limit, now_ms: i64) -> f64 {
        match self.lowered_rate {
            None => limit.rate,
            Some(lowered) => {
                let progress = (now_ms - self.lowered_at_ms).max(0) as f64 / RECOVERY_MS;
                if progress >= 1.0 {
                    limit.rate
                } else {
                    lowered + (limit.rate - lowered) * progress
                }
            }
        }
    }

    /// Refills up to `now_ms` at the current effective rate.
    fn refill(&mut self, limit: Limit, now_ms: i64) -> f64 {
        let rate = self.rate(limit, now_ms);
        if self.at_ms == 0 {
            self.tokens = f64::from(limit.burst);
        } else {
            let elapsed = (now_ms - self.at_ms).max(0) as f64 / 1000.0;
            self.tokens = (self.tokens + elapsed * rate).min(f64::from(limit.burst));
        }
        self.at_ms = now_ms;
        if self.lowered_rate.is_some() && (rate - limit.rate).abs() < f64::EPSILON {
            self.lowered_rate = None;
        }
        rate
    }
}

/// The shared token buckets.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    store: Arc<dyn SharedState>,
    clock: Arc<dyn Clock>,
}

fn now_ms(clock: &dyn Clock) -> i64 {
    i64::try_from(clock.now().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

impl RateLimiter {
    pub fn new(store: Arc<dyn SharedState>, clock: Arc<dyn Clock>) -> Self {
        RateLimiter { store, clock }
    }

    fn expires_at(&self) -> i64 {
        self.clock.now().unix_timestamp() + STATE_TTL_SECONDS
    }

    /// Takes a token from `key`'s bucket; returns how long to wait before sending.
    pub async fn acquire(&self, key: &str, limit: Limit) -> Result<Duration, StateError> {
        update(
            self.store.as_ref(),
            key,
            self.expires_at(),
            |bucket: &mut Bucket| {
                let rate = bucket.refill(limit, now_ms(self.clock.as_ref()));
                bucket.tokens -= 1.0;
                if bucket.tokens >= 0.0 {
                    Duration::ZERO
                } else {
                    Duration::from_secs_f64(-bucket.tokens / rate)
                }
            },
        )
        .await
    }

    /// The provider answered 429: halves the effective rate and, when it said how long
    /// to wait, holds every instance back for that long. Returns the new rate.
    pub async fn throttled(
        &self,
        key: &str,
        limit: Limit,
        wait: Option<Duration>,
    ) -> Result<f64, StateError> {
        update(
            self.store.as_ref(),
            key,
            self.expires_at(),
            |bucket: &mut Bucket| {
                let now = now_ms(self.clock.as_ref());
                let rate = bucket.refill(limit, now);
                // Requests already in flight when the first 429 came were sent at the old
                // rate: their 429s must not halve the rate again and again.
                let lowered = if bucket.lowered_rate.is_some()
                    && now - bucket.lowered_at_ms < DECREASE_INTERVAL_MS
                {
                    rate
                } else {
                    bucket.lowered_at_ms = now;
                    (rate / 2.0).max(limit.rate * MIN_RATE_FRACTION)
                };
                bucket.lowered_rate = Some(lowered);
                bucket.throttles += 1;
                if let Some(wait) = wait {
                    bucket.tokens = bucket.tokens.min(-wait.as_secs_f64() * lowered);
                } else {
                    bucket.tokens = bucket.tokens.min(0.0);
                }
                lowered
            },
        )
        .await
    }

    /// The provider said its quota is spent until `wait` from now (remaining 0): no
    /// instance sends before then. The rate is not lowered (nothing was refused).
    pub async fn pause(&self, key: &str, limit: Limit, wait: Duration) -> Result<(), StateError> {
        update(
            self.store.as_ref(),
            key,
            self.expires_at(),
            |bucket: &mut Bucket| {
                let rate = bucket.refill(limit, now_ms(self.clock.as_ref()));
                bucket.tokens = bucket.tokens.min(-wait.as_secs_f64() * rate);
            },
        )
        .await
    }

    /// The current effective rate of `key` (reports and tests).
    pub async fn effective_rate(&self, key: &str, limit: Limit) -> Result<f64, StateError> {
        let (bucket, _) = read::<Bucket>(self.store.as_ref(), key).await?;
        Ok(bucket.rate(limit, now_ms(self.clock.as_ref())))
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct BreakerState {
    failures: u32,
    /// 0 while closed.
    open_until_ms: i64,
    /// While half-open, the probe's deadline (another probe is let through after it).
    probe_until_ms: i64,
}

/// Whether a call may go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: call.
    Closed,
    /// Half-open: this caller is the one probe.
    Probe,
    /// Open: do not call; try again after this long (the job is requeued).
    Open { retry_in: Duration },
}

/// The shared circuit breakers.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    store: Arc<dyn SharedState>,
    clock: Arc<dyn Clock>,
    /// Consecutive transient failures that open the breaker (5).
    pub threshold: u32,
    /// How long it stays open (60 s).
    pub open_for: Duration,
    /// How long a probe may take before another caller may probe (the call timeout).
    pub probe_lease: Duration,
}

impl CircuitBreaker {
    pub fn new(store: Arc<dyn SharedState>, clock: Arc<dyn Clock>) -> Self {
        CircuitBreaker {
            store,
            clock,
            threshold: 5,
            open_for: Duration::from_secs(60),
            probe_lease: Duration::from_secs(30),
        }
    }

    fn expires_at(&self) -> i64 {
        self.clock.now().unix_timestamp() + STATE_TTL_SECONDS
    }

    fn millis(duration: Duration) -> i64 {
        i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
    }

    /// Whether `key`'s provider may be called now.
    pub async fn admit(&self, key: &str) -> Result<Admission, StateError> {
        let (state, _) = read::<BreakerState>(self.store.as_ref(), key).await?;
        let now = now_ms(self.clock.as_ref());
        if state.open_until_ms == 0 {
            return Ok(Admission::Closed);
        }
        let busy = |state: &BreakerState| {
            let until = state.open_until_ms.max(state.probe_until_ms);
            Admission::Open {
                retry_in: Duration::from_millis(u64::try_from(until - now).unwrap_or(0))
                    .max(Duration::from_secs(1)),
            }
        };
        if now < state.open_until_ms || now < state.probe_until_ms {
            return Ok(busy(&state));
        }
        // The open period is over: one caller wins the probe.
        let lease = Self::millis(self.probe_lease);
        update(
            self.store.as_ref(),
            key,
            self.expires_at(),
            |state: &mut BreakerState| {
                if state.open_until_ms == 0 {
                    Admission::Closed
                } else if now >= state.open_until_ms && now >= state.probe_until_ms {
                    state.probe_until_ms = now + lease;
                    Admission::Probe
                } else {
                    busy(state)
                }
            },
        )
        .await
    }

    /// A call succeeded: the breaker closes (no write when it already was, clean).
    pub async fn succeeded(&self, key: &str) -> Result<(), StateError> {
        let (state, _) = read::<BreakerState>(self.store.as_ref(), key).await?;
        if state.failures == 0 && state.open_until_ms == 0 {
            return Ok(());
        }
        update(
            self.store.as_ref(),
            key,
            self.expires_at(),
            |state: &mut BreakerState| *state = BreakerState::default(),
        )
        .await
    }

    /// A call failed transiently (5xx, timeout): counts towards opening; a failed probe
    /// opens the breaker again. Returns whether it is open now.
    pub async fn failed(&self, key: &str) -> Result<bool, StateError> {
        let now = now_ms(self.clock.as_ref());
        let open_for = Self::millis(self.open_for);
        let threshold = self.threshold;
        update(
            self.store.as_ref(),
            key,
            self.expires_at(),
            |state: &mut BreakerState| {
                if state.open_until_ms != 0 {
                    state.open_until_ms = now + open_for;
                    state.probe_until_ms = 0;
                } else {
                    state.failures += 1;
                    if state.failures >= threshold {
                        state.failures = 0;
                        state.open_until_ms = now + open_for;
                    }
                }
                state.open_until_ms != 0
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared_state::InMemorySharedState;
    use junction_aws::clock::FixedClock;

    const LIMIT: Limit = Limit {
        rate: 2.0,
        burst: 2,
    };

    fn setup() -> (Arc<FixedClock>, Arc<InMemorySharedState>) {
        (
            Arc::new(FixedClock::at_unix(1_700_000_000)),
            Arc::new(InMemorySharedState::default()),
        )
    }

    #[tokio::test]
    async fn the_bucket_allows_a_burst_then_spaces_requests_at_the_rate() {
        let (clock, store) = setup();
        let limiter = RateLimiter::new(store, clock.clone());
        let mut waits = Vec::new();
        for _ in 0..6 {
            waits.push(limiter.acquire("p", LIMIT).await.expect("acquired"));
        }
        let millis: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(
            millis,
            [0, 0, 500, 1000, 1500, 2000],
            "2 at once, then one per 500 ms"
        );
        clock.advance(time::Duration::seconds(10));
        assert_eq!(
            limiter.acquire("p", LIMIT).await.expect("acquired"),
            Duration::ZERO
        );
        assert_eq!(
            limiter.acquire("other", LIMIT).await.expect("acquired"),
            Duration::ZERO,
            "keys are independent"
        );
    }

    #[tokio::test]
    async fn a_429_halves_the_rate_holds_everyone_back_and_the_rate_recovers() {
        let (clock, store) = setup();
        let limiter = RateLimiter::new(store, clock.clone());
        limiter.acquire("p", LIMIT).await.expect("acquired");
        let lowered = limiter
            .throttled("p", LIMIT, Some(Duration::from_secs(3)))
            .await
            .expect("throttled");
        assert!((lowered - 1.0).abs() < 1e-9, "{lowered}");
        let wait = limiter.acquire("p", LIMIT).await.expect("acquired");
        assert!(
            wait >= Duration::from_secs(3),
            "Retry-After is honoured: {wait:?}"
        );
        let same = limiter
            .throttled("p", LIMIT, None)
            .await
            .expect("throttled");
        assert!(
            (same - 1.0).abs() < 1e-9,
            "in-flight 429s count once: {same}"
        );
        clock.advance(time::Duration::seconds(1));
        let again = limiter
            .throttled("p", LIMIT, None)
            .await
            .expect("throttled");
        assert!((again - 0.5).abs() < 0.01, "halved again: {again}");
        clock.advance(time::Duration::seconds(300));
        let halfway = limiter.effective_rate("p", LIMIT).await.expect("rate");
        assert!((halfway - 1.25).abs() < 0.01, "linear recovery: {halfway}");
        clock.advance(time::Duration::seconds(300));
        assert_eq!(limiter.effective_rate("p", LIMIT).await.expect("rate"), 2.0);
        for _ in 0..20 {
            clock.advance(time::Duration::seconds(1));
            limiter
                .throttled("p", LIMIT, None)
                .await
                .expect("throttled");
        }
        let floor = limiter.effective_rate("p", LIMIT).await.expect("rate");
        assert!(
            (floor - 2.0 / 64.0).abs() < 1e-9,
            "never below 1/64: {floor}"
        );
    }

    #[tokio::test]
    async fn a_spent_quota_pauses_without_lowering_the_rate() {
        let (clock, store) = setup();
        let limiter = RateLimiter::new(store, clock);
        limiter
            .pause("p", LIMIT, Duration::from_secs(4))
            .await
            .expect("paused");
        assert!(limiter.acquire("p", LIMIT).await.expect("acquired") >= Duration::from_secs(4));
        assert_eq!(limiter.effective_rate("p", LIMIT).await.expect("rate"), 2.0);
    }

    #[tokio::test]
    async fn the_breaker_opens_after_five_failures_probes_once_and_recovers() {
        let (clock, store) = setup();
        let breaker = CircuitBreaker::new(store.clone(), clock.clone());
        for n in 1..5 {
            assert!(
                !breaker.failed("p").await.expect("recorded"),
                "{n} failures"
            );
            assert_eq!(breaker.admit("p").await.expect("admit"), Admission::Closed);
        }
        assert!(
            breaker.failed("p").await.expect("recorded"),
            "the 5th opens it"
        );
        assert!(matches!(
            breaker.admit("p").await.expect("admit"),
            Admission::Open { retry_in } if retry_in == Duration::from_secs(60)
        ));
        clock.advance(time::Duration::seconds(60));
        let other_instance = CircuitBreaker::new(store, clock.clone());
        assert_eq!(breaker.admit("p").await.expect("admit"), Admission::Probe);
        assert!(
            matches!(
                other_instance.admit("p").await.expect("admit"),
                Admission::Open { .. }
            ),
            "one probe across instances"
        );
        assert!(
            breaker.failed("p").await.expect("recorded"),
            "a failed probe reopens"
        );
        assert!(matches!(
            breaker.admit("p").await.expect("admit"),
            Admission::Open { .. }
        ));
        clock.advance(time::Duration::seconds(60));
        assert_eq!(
            other_instance.admit("p").await.expect("admit"),
            Admission::Probe
        );
        breaker.succeeded("p").await.expect("recorded");
        assert_eq!(breaker.admit("p").await.expect("admit"), Admission::Closed);
    }

    #[tokio::test]
    async fn a_success_resets_the_count_and_a_hung_probe_is_replaced() {
        let (clock, store) = setup();
        let breaker = CircuitBreaker::new(store, clock.clone());
        for _ in 0..4 {
            breaker.failed("p").await.expect("recorded");
        }
        breaker.succeeded("p").await.expect("recorded");
        assert!(
            !breaker.failed("p").await.expect("recorded"),
            "consecutive only"
        );
        for _ in 0..4 {
            breaker.failed("p").await.expect("recorded");
        }
        clock.advance(time::Duration::seconds(60));
        assert_eq!(breaker.admit("p").await.expect("admit"), Admission::Probe);
        clock.advance(time::Duration::seconds(31));
        assert_eq!(
            breaker.admit("p").await.expect("admit"),
            Admission::Probe,
            "the first probe's lease ran out"
        );
    }
}
