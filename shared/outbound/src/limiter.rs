//! The client-side rate limit and the circuit breaker, both shared by every Lambda
//! instance through [`SharedState`] (conditional writes on a version).
//!
//! **Rate limit** per provider (or per connection where the provider limits per
//! account), from the catalog's `[api] rate_limit`, in one document per key:
//!
//! - the *pace*: `rate` requests per second with bursts of `burst`, kept as a GCRA
//!   schedule (the "theoretical arrival time" of the next request), which is a token
//!   bucket that can also book a request for a later time;
//! - the *windows*: at most `requests` in any `seconds` (HubSpot's 100 per 10 s, Exact
//!   Online's 60 a minute and 5,000 a day). Each counts the requests granted in 20
//!   slots of 1/20 of the window and counts a slot as long as any of it is inside the
//!   window, so it never lets more than `requests` through in *any* interval of that
//!   length, whatever the provider's alignment (fixed windows, rolling windows,
//!   midnight in the account's time zone); the price is up to 1/20 of the window's
//!   throughput.
//!
//! A request is granted the earliest time every one of them allows, and grants are
//! handed out in order. A caller that cannot wait that long (the Lambda's deadline) is
//! refused *without* booking anything, so requeued jobs do not eat a day's budget.
//!
//! **What the provider says** adjusts the pace: a `Remaining` of zero holds every
//! instance until the reset; a `Remaining` within the last quarter of its window's limit
//! spreads what is left over the time to the reset (100 left and 50 s to go: 2 per second),
//! so a quota is not spent in a burst and then waited out; a `Retry-After` holds every
//! instance for that long.
//!
//! **A 429 the catalog did not predict** reveals a lower limit: the rate drops to half the
//! rate that drew it (never below 1/64 of the catalog's rate; the 429 of a request
//! booked before the last decrease, or sent until a second after the last such
//! request, does not lower it again: it belongs to the old rate), climbs back linearly
//! within a
//! minute to 90 % of the rate that failed, and stays there: the rate known to fail is
//! trusted 10 % more for each quiet hour, so the ceiling rises slowly (one probe, and at
//! worst one 429, about every hour of traffic) and is forgotten only once it has grown
//! back to the catalog's rate, never snapping back to it. The ceiling is part of the
//! stored document, which is kept (the table's TTL) until then.
//!
//! **Circuit breaker** per provider: 5 consecutive transient failures (5xx, timeouts;
//! not 429s, which the bucket handles, nor 4xx, which are the request's fault) open it
//! for 60 s; then exactly one caller gets to probe (half-open) while the others keep
//! being refused; the probe's success closes it, its failure opens it again. A closed
//! breaker costs one read per call and no write while calls succeed.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

use super::shared_state::{Change, SharedState, StateError, read, update, update_with};
use junction_aws::clock::Clock;

/// Idle state expires after a day (the table's TTL), or after its longest window.
const STATE_TTL_SECONDS: i64 = 86_400;
/// After a decrease, 429s count for the old rate until a second after the last request
/// booked at it has gone out (the provider's window drains).
const DECREASE_INTERVAL_MS: i64 = 1_000;
/// The lowest rate a 429 can set, as a fraction of the configured one.
const MIN_RATE_FRACTION: f64 = 1.0 / 64.0;
/// How long the rate takes to climb back from half the rate that drew a 429 to just
/// under it.
const CLIMB_MS: f64 = 60_000.0;
/// Where the climb stops: this fraction of the rate that drew the 429.
const BELOW_FAILED: f64 = 0.9;
/// How much more the rate that drew a 429 is trusted for each hour without one.
const TRUST_GROWTH_PER_HOUR: f64 = 1.1;
/// Slots per window.
const SLOTS: i64 = 20;
/// A `Remaining` at or below this fraction of its window's limit paces the rest.
const PACE_BELOW: f64 = 0.25;

/// A budget: at most `requests` in any `seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub requests: u64,
    pub seconds: u32,
}

impl Window {
    fn slot_ms(self) -> i64 {
        (i64::from(self.seconds) * 1000 / SLOTS).max(1)
    }
}

/// A configured limit: `rate` requests per second in bursts of up to `burst`, and the
/// `windows`' budgets. A key that only counts windows (those of the other scope) has an
/// infinite rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    pub rate: f64,
    pub burst: u32,
    pub windows: Vec<Window>,
}

impl Limit {
    /// A rate and burst without windows (the catalog's single-rate form).
    pub fn rate(rate: f64, burst: u32) -> Limit {
        Limit {
            rate,
            burst,
            windows: Vec::new(),
        }
    }

    /// Windows only: the budgets of the scope the rate is not kept in.
    pub fn windows_only(windows: Vec<Window>) -> Limit {
        Limit {
            rate: f64::INFINITY,
            burst: 1,
            windows,
        }
    }

    fn paced(&self) -> bool {
        self.rate.is_finite()
    }

    /// How far ahead of its schedule a burst may run: `burst - 1` requests at the
    /// catalog's rate (a lowered rate thus also shrinks the burst).
    fn tolerance_ms(&self) -> f64 {
        if self.paced() {
            f64::from(self.burst.saturating_sub(1)) * 1000.0 / self.rate
        } else {
            0.0
        }
    }

    /// The distinct window lengths (windows of one length share their counts).
    fn lengths(&self) -> impl Iterator<Item = Window> + '_ {
        self.windows
            .iter()
            .enumerate()
            .filter_map(|(index, window)| {
                (!self.windows[..index]
                    .iter()
                    .any(|w| w.seconds == window.seconds))
                .then_some(*window)
            })
    }
}

/// A rate learned from 429s.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Ceiling {
    /// The rate set at the last 429 (half the rate that drew it).
    rate: f64,
    /// The rate that drew it.
    failed: f64,
    /// When (unix ms).
    at_ms: i64,
    /// Until when 429s still belong to the old rate: the last request booked at it
    /// goes out then, and the provider's window needs a moment to drain (unix ms).
    #[serde(default)]
    settled_ms: i64,
}

impl Ceiling {
    fn quiet_hours(&self, now_ms: i64) -> f64 {
        (now_ms - self.at_ms).max(0) as f64 / 3_600_000.0
    }

    /// The rate believed to fail now: the one that did, trusted more each quiet hour.
    fn failing(&self, now_ms: i64) -> f64 {
        self.failed * TRUST_GROWTH_PER_HOUR.powf(self.quiet_hours(now_ms))
    }

    /// The linear climb from `rate` to just under the rate that failed, times the
    /// trust gained since (continuous, never falling while quiet).
    fn rate_at(&self, now_ms: i64) -> f64 {
        let quiet = (now_ms - self.at_ms).max(0) as f64;
        let target = BELOW_FAILED * self.failed;
        let climbed = if target > self.rate {
            self.rate + (target - self.rate) * (quiet / CLIMB_MS).min(1.0)
        } else {
            self.rate
        };
        climbed * self.failing(now_ms) / self.failed
    }

    /// Hours until the rise reaches `rate` (when the ceiling is forgotten).
    fn hours_until(&self, rate: f64) -> f64 {
        let ratio = rate / (BELOW_FAILED * self.failed);
        if ratio <= 1.0 {
            0.0
        } else {
            ratio.ln() / TRUST_GROWTH_PER_HOUR.ln()
        }
    }
}

/// The provider's own account of what is left: spread until `until_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Pace {
    rate: f64,
    until_ms: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Bucket {
    /// GCRA: when the next request is on schedule (unix ms); 0 before the first.
    #[serde(default)]
    tat_ms: f64,
    /// The latest time granted: grants are handed out in order.
    #[serde(default)]
    last_grant_ms: i64,
    /// Nothing is sent before this (a `Retry-After`, a spent quota's reset).
    #[serde(default)]
    hold_until_ms: i64,
    /// Per window length (seconds): requests granted per slot, oldest first.
    #[serde(default)]
    slots: BTreeMap<u32, Vec<(i64, u64)>>,
    #[serde(default)]
    ceiling: Option<Ceiling>,
    #[serde(default)]
    pace: Option<Pace>,
    #[serde(default)]
    throttles: u64,
}

impl Bucket {
    /// The rate the catalog and the 429s allow (before the provider's pace).
    fn ceiling_rate(&self, limit: &Limit, now_ms: i64) -> f64 {
        match self.ceiling {
            None => limit.rate,
            Some(ceiling) => ceiling
                .rate_at(now_ms)
                .min(limit.rate)
                .max(limit.rate * MIN_RATE_FRACTION),
        }
    }

    /// The rate requests are scheduled at now.
    fn rate(&self, limit: &Limit, now_ms: i64) -> f64 {
        let rate = self.ceiling_rate(limit, now_ms);
        match self.pace {
            Some(pace) if now_ms < pace.until_ms => rate.min(pace.rate),
            _ => rate,
        }
    }

    /// Forgets what no longer applies: a ceiling grown back to the catalog's rate, a
    /// pace past its reset, slots out of every window, windows no longer configured.
    fn tidy(&mut self, limit: &Limit, now_ms: i64) {
        if let Some(ceiling) = self.ceiling
            && BELOW_FAILED * ceiling.failing(now_ms) >= limit.rate
        {
            self.ceiling = None;
        }
        if self.pace.is_some_and(|pace| now_ms >= pace.until_ms) {
            self.pace = None;
        }
        self.slots
            .retain(|seconds, _| limit.windows.iter().any(|w| w.seconds == *seconds));
        for window in limit.lengths() {
            if let Some(slots) = self.slots.get_mut(&window.seconds) {
                let oldest = now_ms.div_euclid(window.slot_ms()) - SLOTS;
                slots.retain(|(slot, _)| *slot >= oldest);
            }
        }
    }

    /// The earliest time from `not_before` that `window` has room at.
    fn window_earliest(&self, window: Window, not_before: i64) -> i64 {
        let Some(slots) = self.slots.get(&window.seconds) else {
            return not_before;
        };
        let slot_ms = window.slot_ms();
        let first = not_before.div_euclid(slot_ms) - SLOTS;
        let counted: Vec<(i64, u64)> = slots
            .iter()
            .copied()
            .filter(|(slot, _)| *slot >= first)
            .collect();
        let mut count: u64 = counted.iter().map(|(_, n)| n).sum();
        if count < window.requests {
            return not_before;
        }
        // Slot `s` stops counting once the current slot is past `s + SLOTS`.
        for (slot, n) in counted {
            count -= n;
            if count < window.requests {
                return ((slot + SLOTS + 1) * slot_ms).max(not_before);
            }
        }
        not_before
    }

    /// The earliest time from `not_before` that the pace and every window allow.
    fn earliest(&self, limit: &Limit, now_ms: i64, not_before: i64) -> i64 {
        let mut at = now_ms
            .max(not_before)
            .max(self.hold_until_ms)
            .max(self.last_grant_ms);
        if limit.paced() && self.tat_ms > 0.0 {
            at = at.max((self.tat_ms - limit.tolerance_ms()).ceil() as i64);
        }
        limit
            .windows
            .iter()
            .fold(at, |at, window| at.max(self.window_earliest(*window, at)))
    }

    fn book(&mut self, limit: &Limit, at: i64, rate: f64) {
        if limit.paced() {
            self.tat_ms = self.tat_ms.max(at as f64) + 1000.0 / rate;
        }
        self.last_grant_ms = self.last_grant_ms.max(at);
        for window in limit.lengths() {
            let slot = at.div_euclid(window.slot_ms());
            let slots = self.slots.entry(window.seconds).or_default();
            match slots.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, count)) => *count += 1,
                None => {
                    slots.push((slot, 1));
                    slots.sort_unstable_by_key(|(s, _)| *s);
                }
            }
        }
    }

    /// Undoes [`Bucket::book`] for a request that will not be sent then (the grant of
    /// another key came later, or refused). The order of grants is not rewound.
    fn unbook(&mut self, limit: &Limit, at: i64, rate: f64) {
        if limit.paced() {
            self.tat_ms = (self.tat_ms - 1000.0 / rate).max(at as f64);
        }
        for window in limit.lengths() {
            let slot = at.div_euclid(window.slot_ms());
            if let Some(slots) = self.slots.get_mut(&window.seconds) {
                if let Some((_, count)) = slots.iter_mut().find(|(s, _)| *s == slot) {
                    *count = count.saturating_sub(1);
                }
                slots.retain(|(_, count)| *count > 0);
            }
        }
    }

    /// Holds every instance until `until` and empties the burst.
    fn hold(&mut self, limit: &Limit, until: i64) {
        self.hold_until_ms = self.hold_until_ms.max(until);
        if limit.paced() {
            self.tat_ms = self
                .tat_ms
                .max(self.hold_until_ms as f64 + limit.tolerance_ms());
        }
    }

    /// Until when the table must keep this document: a day of quiet, the longest
    /// window, and a learned ceiling until it is forgotten.
    fn expires_at(&self, limit: &Limit, now_ms: i64) -> i64 {
        let longest = limit
            .windows
            .iter()
            .map(|w| i64::from(w.seconds))
            .max()
            .unwrap_or(0);
        let ceiling = self.ceiling.map_or(0.0, |c| {
            (c.hours_until(limit.rate) - c.quiet_hours(now_ms)).max(0.0) * 3_600.0
        });
        now_ms / 1000 + STATE_TTL_SECONDS.max(longest) + ceiling.ceil() as i64
    }
}

/// What the rate limit answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// Send after this long (the time is booked).
    Wait(Duration),
    /// Not within the time the caller can wait; nothing was booked. Ask again after
    /// this long.
    Refused { retry_in: Duration },
}

/// One key's answer, in unix ms.
enum Booking {
    At(i64),
    Refused(i64),
}

/// The shared rate limits.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    store: Arc<dyn SharedState>,
    clock: Arc<dyn Clock>,
}

fn now_ms(clock: &dyn Clock) -> i64 {
    i64::try_from(clock.now().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn after(from_ms: i64, to_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(to_ms - from_ms).unwrap_or(0))
}

impl RateLimiter {
    pub fn new(store: Arc<dyn SharedState>, clock: Arc<dyn Clock>) -> Self {
        RateLimiter { store, clock }
    }

    fn now(&self) -> i64 {
        now_ms(self.clock.as_ref())
    }

    /// Books a request on `key`; returns how long to wait before sending, however long.
    pub async fn acquire(&self, key: &str, limit: &Limit) -> Result<Duration, StateError> {
        match self.acquire_within(&[(key, limit)], Duration::MAX).await? {
            Acquired::Wait(wait) => Ok(wait),
            Acquired::Refused { retry_in } => Ok(retry_in),
        }
    }

    /// Books one request on every key (the connection's and the provider's, when the
    /// provider counts both) for the earliest time all of them allow, if that is within
    /// `max_wait`; else books nothing and says when to ask again.
    pub async fn acquire_within(
        &self,
        keys: &[(&str, &Limit)],
        max_wait: Duration,
    ) -> Result<Acquired, StateError> {
        let now = self.now();
        let latest = now.saturating_add(millis(max_wait));
        let mut at = now;
        for round in 1.. {
            let mut booked: Vec<(&str, &Limit, i64)> = Vec::new();
            for (key, limit) in keys {
                match self.book(key, limit, at, latest).await? {
                    Booking::At(time) => {
                        at = at.max(time);
                        booked.push((key, limit, time));
                    }
                    Booking::Refused(time) => {
                        self.unbook(&booked).await?;
                        return Ok(Acquired::Refused {
                            retry_in: after(now, time),
                        });
                    }
                }
            }
            // One key's window pushed the time past another's booking: book them all
            // again for the later time. After three rounds (heavy contention) the earlier
            // bookings stand; they count the request a little early.
            if booked.iter().all(|(_, _, time)| *time == at) || round >= 3 {
                return Ok(Acquired::Wait(after(now, at)));
            }
            self.unbook(&booked).await?;
        }
        unreachable!("the loop returns by its third round")
    }

    async fn book(
        &self,
        key: &str,
        limit: &Limit,
        not_before: i64,
        latest: i64,
    ) -> Result<Booking, StateError> {
        update_with(self.store.as_ref(), key, |bucket: &mut Bucket| {
            let now = self.now();
            bucket.tidy(limit, now);
            let at = bucket.earliest(limit, now, not_before);
            let expires_at = bucket.expires_at(limit, now);
            // The clock has moved on since `latest` was fixed: a slot free now is never
            // too late (with no wait allowed, it was refused whenever a millisecond passed).
            if at > latest.max(now) {
                return Change {
                    result: Booking::Refused(at),
                    write: false,
                    expires_at,
                };
            }
            let rate = bucket.rate(limit, now);
            bucket.book(limit, at, rate);
            Change {
                result: Booking::At(at),
                write: true,
                expires_at,
            }
        })
        .await
    }

    async fn unbook(&self, booked: &[(&str, &Limit, i64)]) -> Result<(), StateError> {
        for (key, limit, at) in booked {
            update_with(self.store.as_ref(), key, |bucket: &mut Bucket| {
                let now = self.now();
                let rate = bucket.rate(limit, now);
                bucket.unbook(limit, *at, rate);
                Change {
                    result: (),
                    write: true,
                    expires_at: bucket.expires_at(limit, now),
                }
            })
            .await?;
        }
        Ok(())
    }

    /// The provider answered 429 to a request booked just now: see
    /// [`RateLimiter::throttled_after`].
    pub async fn throttled(
        &self,
        key: &str,
        limit: &Limit,
        wait: Option<Duration>,
    ) -> Result<f64, StateError> {
        self.throttled_after(key, limit, wait, self.clock.now())
            .await
    }

    /// The provider answered 429 to a request booked at `booked`: lowers the rate to
    /// half the one that drew it and, when the provider said how long to wait, holds
    /// every instance back for that long. Returns the new rate.
    ///
    /// A request booked before the last decrease was scheduled at the old rate (the
    /// bookings of every worker reach seconds ahead): its 429 says nothing about the new
    /// rate and does not lower it again, or one burst would drive the rate far below
    /// the provider's limit. Nor does a 429 until a second after the last of those
    /// bookings has gone out: a request booked since is sent right behind them, into a
    /// provider window they filled.
    pub async fn throttled_after(
        &self,
        key: &str,
        limit: &Limit,
        wait: Option<Duration>,
        booked: time::OffsetDateTime,
    ) -> Result<f64, StateError> {
        let booked_ms = i64::try_from(booked.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        update_with(self.store.as_ref(), key, |bucket: &mut Bucket| {
            let now = self.now();
            bucket.tidy(limit, now);
            let current = bucket.ceiling_rate(limit, now);
            let stale = bucket
                .ceiling
                .is_some_and(|c| booked_ms < c.at_ms || now < c.settled_ms);
            if !stale {
                bucket.ceiling = Some(Ceiling {
                    rate: (current / 2.0).max(limit.rate * MIN_RATE_FRACTION),
                    failed: current,
                    at_ms: now,
                    settled_ms: now.max(bucket.last_grant_ms) + DECREASE_INTERVAL_MS,
                });
            }
            bucket.throttles += 1;
            bucket.hold(limit, now + wait.map_or(0, millis));
            Change {
                result: bucket.rate(limit, now),
                write: true,
                expires_at: bucket.expires_at(limit, now),
            }
        })
        .await
    }

    /// The provider said its quota is spent until `wait` from now (remaining 0): no
    /// instance sends before then. The rate is not lowered (nothing was refused).
    pub async fn pause(&self, key: &str, limit: &Limit, wait: Duration) -> Result<(), StateError> {
        update(
            self.store.as_ref(),
            key,
            self.clock.now().unix_timestamp() + STATE_TTL_SECONDS,
            |bucket: &mut Bucket| {
                let now = self.now();
                bucket.hold(limit, now + millis(wait));
            },
        )
        .await
    }

    /// What a response said is left: `remaining` of `window_limit` (when stated) until
    /// `reset`. Nothing left holds every instance until the reset; the last quarter
    /// (or any amount, when the limit is not stated) is spread evenly until the reset.
    /// Writes only when the pace changes by more than a tenth.
    pub async fn observe(
        &self,
        key: &str,
        limit: &Limit,
        remaining: u64,
        window_limit: Option<u64>,
        reset: Duration,
    ) -> Result<(), StateError> {
        if remaining == 0 {
            return self.pause(key, limit, reset).await;
        }
        let plenty = window_limit.is_some_and(|l| remaining as f64 > l as f64 * PACE_BELOW);
        if plenty || reset.is_zero() {
            return Ok(());
        }
        let rate = remaining as f64 / reset.as_secs_f64();
        update_with(self.store.as_ref(), key, |bucket: &mut Bucket| {
            let now = self.now();
            let until_ms = now + millis(reset);
            let unchanged = bucket.pace.is_some_and(|pace| {
                (pace.rate - rate).abs() <= pace.rate * 0.1
                    && (pace.until_ms - until_ms).abs() < 1_000
            });
            if !unchanged && rate < limit.rate {
                bucket.pace = Some(Pace { rate, until_ms });
            }
            Change {
                result: (),
                write: !unchanged && rate < limit.rate,
                expires_at: bucket.expires_at(limit, now),
            }
        })
        .await
    }

    /// The current rate of `key` (reports and tests).
    pub async fn effective_rate(&self, key: &str, limit: &Limit) -> Result<f64, StateError> {
        let (bucket, _) = read::<Bucket>(self.store.as_ref(), key).await?;
        Ok(bucket.rate(limit, self.now()))
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
        windows: Vec::new(),
    };

    fn setup() -> (Arc<FixedClock>, Arc<InMemorySharedState>) {
        (
            Arc::new(FixedClock::at_unix(1_700_000_000)),
            Arc::new(InMemorySharedState::default()),
        )
    }

    /// A clock one millisecond later at every reading, as a real one is between the
    /// limiter's reads.
    #[derive(Debug)]
    struct TickingClock(std::sync::Mutex<time::OffsetDateTime>);

    impl Clock for TickingClock {
        fn now(&self) -> time::OffsetDateTime {
            let mut now = self.0.lock().expect("clock");
            *now += time::Duration::milliseconds(1);
            *now
        }
    }

    #[tokio::test]
    async fn a_free_slot_is_granted_with_no_wait_allowed_though_the_clock_moved_on() {
        let clock = Arc::new(TickingClock(std::sync::Mutex::new(
            time::OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time"),
        )));
        let limiter = RateLimiter::new(Arc::new(InMemorySharedState::default()), clock);
        let limit = Limit::rate(2.0, 2);
        for _ in 0..2 {
            assert!(matches!(
                limiter
                    .acquire_within(&[("p", &limit)], Duration::ZERO)
                    .await
                    .expect("acquired"),
                Acquired::Wait(_)
            ));
        }
        assert!(
            matches!(
                limiter
                    .acquire_within(&[("p", &limit)], Duration::ZERO)
                    .await
                    .expect("answered"),
                Acquired::Refused { .. }
            ),
            "the burst spent, the next slot is 500 ms away"
        );
    }

    fn close(actual: f64, expected: f64) -> bool {
        (actual - expected).abs() < 1e-6 * expected.max(1.0)
    }

    #[tokio::test]
    async fn the_bucket_allows_a_burst_then_spaces_requests_at_the_rate() {
        let (clock, store) = setup();
        let limiter = RateLimiter::new(store, clock.clone());
        let mut waits = Vec::new();
        for _ in 0..6 {
            waits.push(limiter.acquire("p", &LIMIT).await.expect("acquired"));
        }
        let millis: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(
            millis,
            [0, 0, 500, 1000, 1500, 2000],
            "2 at once, then one per 500 ms"
        );
        clock.advance(time::Duration::seconds(10));
        assert_eq!(
            limiter.acquire("p", &LIMIT).await.expect("acquired"),
            Duration::ZERO
        );
        assert_eq!(
            limiter.acquire("other", &LIMIT).await.expect("acquired"),
            Duration::ZERO,
            "keys are independent"
        );
    }

    #[tokio::test]
    async fn a_429_lowers_the_rate_which_climbs_to_just_under_it_and_does_not_snap_back() {
        let (clock, store) = setup();
        let limiter = RateLimiter::new(store.clone(), clock.clone());
        limiter.acquire("p", &LIMIT).await.expect("acquired");
        let lowered = limiter
            .throttled("p", &LIMIT, Some(Duration::from_secs(3)))
            .await
            .expect("throttled");
        assert!(close(lowered, 1.0), "half the rate that drew it: {lowered}");
        let wait = limiter.acquire("p", &LIMIT).await.expect("acquired");
        assert!(
            wait >= Duration::from_secs(3),
            "Retry-After is honoured: {wait:?}"
        );
        let same = limiter
            .throttled("p", &LIMIT, None)
            .await
            .expect("throttled");
        assert!(close(same, 1.0), "in-flight 429s count once: {same}");
        clock.advance(time::Duration::seconds(30));
        let climbing = limiter.effective_rate("p", &LIMIT).await.expect("rate");
        assert!(
            (climbing - 1.4).abs() < 0.01,
            "halfway up to 90% of 2/s: {climbing}"
        );
        clock.advance(time::Duration::seconds(30));
        let top = limiter.effective_rate("p", &LIMIT).await.expect("rate");
        assert!(
            (top - 1.8).abs() < 0.01,
            "90% of the rate that failed: {top}"
        );
        clock.advance(time::Duration::minutes(10));
        let later = limiter.effective_rate("p", &LIMIT).await.expect("rate");
        assert!(
            later < 1.85,
            "ten minutes on, still under the rate that drew the 429: {later}"
        );
        // A second 429 at that rate: the ceiling now sits under it.
        let again = limiter
            .throttled("p", &LIMIT, None)
            .await
            .expect("throttled");
        assert!(close(again, later / 2.0), "{later} -> {again}");
        clock.advance(time::Duration::minutes(1));
        let settled = limiter.effective_rate("p", &LIMIT).await.expect("rate");
        assert!(
            (settled / later - 0.9).abs() < 0.01,
            "90% of the new failing rate: {settled}"
        );
        clock.advance(time::Duration::hours(1));
        let hour = limiter.effective_rate("p", &LIMIT).await.expect("rate");
        assert!(
            (hour / settled - 1.1).abs() < 0.01,
            "10% more trust per quiet hour: {settled} -> {hour}"
        );
        // The state outlives a day of quiet until the rise reaches the catalog's rate.
        let expires = store.expires_at("p").expect("written");
        assert!(
            expires > 1_700_000_000 + 86_400,
            "kept past the one-day TTL: {expires}"
        );
        clock.advance(time::Duration::hours(3));
        assert!(
            close(
                limiter.effective_rate("p", &LIMIT).await.expect("rate"),
                2.0
            ),
            "forgotten once it has grown back to the catalog's rate"
        );
        for _ in 0..20 {
            clock.advance(time::Duration::seconds(1));
            limiter
                .throttled("p", &LIMIT, None)
                .await
                .expect("throttled");
        }
        let floor = limiter.effective_rate("p", &LIMIT).await.expect("rate");
        assert!(close(floor, 2.0 / 64.0), "never below 1/64: {floor}");
    }

    #[tokio::test]
    async fn a_429_to_a_request_booked_before_the_last_decrease_does_not_lower_again() {
        let (clock, store) = setup();
        let limiter = RateLimiter::new(store, clock.clone());
        let booked_early = clock.now();
        clock.advance(time::Duration::seconds(1));
        let lowered = limiter
            .throttled("p", &LIMIT, None)
            .await
            .expect("throttled");
        assert!(close(lowered, 1.0), "{lowered}");
        clock.advance(time::Duration::seconds(3));
        let rate = limiter.effective_rate("p", &LIMIT).await.expect("rate");
        let late = limiter
            .throttled_after("p", &LIMIT, None, booked_early)
            .await
            .expect("throttled");
        assert!(
            close(late, rate),
            "booked at the old rate: no second decrease ({rate} -> {late})"
        );
        let fresh = limiter
            .throttled_after("p", &LIMIT, None, clock.now())
            .await
            .expect("throttled");
        assert!(close(fresh, rate / 2.0), "booked since: {rate} -> {fresh}");
    }

    #[tokio::test]
    async fn a_429_sent_behind_the_old_rates_bookings_does_not_lower_again() {
        let (clock, store) = setup();
        let limiter = RateLimiter::new(store, clock.clone());
        for _ in 0..6 {
            limiter.acquire("p", &LIMIT).await.expect("acquired");
        }
        // Booked up to 2 s ahead at 2/s; then a 429.
        let lowered = limiter
            .throttled("p", &LIMIT, None)
            .await
            .expect("throttled");
        assert!(close(lowered, 1.0), "{lowered}");
        let booked_since = clock.now();
        clock.advance(time::Duration::milliseconds(2_500));
        let rate = limiter.effective_rate("p", &LIMIT).await.expect("rate");
        let behind = limiter
            .throttled_after("p", &LIMIT, None, booked_since)
            .await
            .expect("throttled");
        assert!(
            close(behind, rate),
            "sent right behind the old bookings: no second decrease ({rate} -> {behind})"
        );
        clock.advance(time::Duration::seconds(1));
        let rate = limiter.effective_rate("p", &LIMIT).await.expect("rate");
        let fresh = limiter
            .throttled_after("p", &LIMIT, None, booked_since)
            .await
            .expect("throttled");
        assert!(
            close(fresh, rate / 2.0),
            "a second after the last: {rate} -> {fresh}"
        );
    }

    #[tokio::test]
    async fn a_spent_quota_pauses_without_lowering_the_rate() {
        let (clock, store) = setup();
        let limiter = RateLimiter::new(store, clock);
        limiter
            .pause("p", &LIMIT, Duration::from_secs(4))
            .await
            .expect("paused");
        assert!(limiter.acquire("p", &LIMIT).await.expect("acquired") >= Duration::from_secs(4));
        assert_eq!(
            limiter.effective_rate("p", &LIMIT).await.expect("rate"),
            2.0
        );
    }

    #[tokio::test]
    async fn a_nearly_spent_quota_is_spread_over_the_time_to_its_reset() {
        let (clock, store) = setup();
        let limiter = RateLimiter::new(store, clock.clone());
        let limit = Limit::rate(10.0, 1);
        limiter
            .observe("p", &limit, 400, Some(1_000), Duration::from_secs(50))
            .await
            .expect("observed");
        assert_eq!(
            limiter.effective_rate("p", &limit).await.expect("rate"),
            10.0,
            "plenty left: full speed"
        );
        limiter
            .observe("p", &limit, 100, Some(1_000), Duration::from_secs(50))
            .await
            .expect("observed");
        assert!(
            close(
                limiter.effective_rate("p", &limit).await.expect("rate"),
                2.0
            ),
            "100 left over 50 s: 2 a second"
        );
        let mut spaced = Vec::new();
        for _ in 0..3 {
            spaced.push(
                limiter
                    .acquire("p", &limit)
                    .await
                    .expect("acquired")
                    .as_millis(),
            );
        }
        assert_eq!(spaced, [0, 500, 1000]);
        limiter
            .observe("p", &limit, 5, None, Duration::from_secs(10))
            .await
            .expect("observed");
        assert!(
            close(
                limiter.effective_rate("p", &limit).await.expect("rate"),
                0.5
            ),
            "no limit stated: what is left is spread"
        );
        clock.advance(time::Duration::seconds(11));
        assert_eq!(
            limiter.effective_rate("p", &limit).await.expect("rate"),
            10.0,
            "the window reset: full speed again"
        );
        limiter
            .observe("p", &limit, 0, Some(1_000), Duration::from_secs(7))
            .await
            .expect("observed");
        assert!(limiter.acquire("p", &limit).await.expect("acquired") >= Duration::from_secs(7));
    }

    /// Exact Online's shape, scaled down: a pace, a per-minute and a per-day budget.
    fn windowed() -> Limit {
        Limit {
            rate: 10.0,
            burst: 10,
            windows: vec![
                Window {
                    requests: 20,
                    seconds: 60,
                },
                Window {
                    requests: 50,
                    seconds: 86_400,
                },
            ],
        }
    }

    #[tokio::test]
    async fn every_window_is_enforced_and_the_tightest_decides() {
        let (clock, store) = setup();
        let limiter = RateLimiter::new(store, clock.clone());
        let limit = windowed();
        let mut waits = Vec::new();
        for _ in 0..21 {
            waits.push(limiter.acquire("p", &limit).await.expect("acquired"));
        }
        assert_eq!(waits[..10], [Duration::ZERO; 10], "the burst");
        assert_eq!(waits[10], Duration::from_millis(100), "then the pace");
        let minute = waits[20];
        assert!(
            minute >= Duration::from_secs(60) && minute <= Duration::from_secs(64),
            "the 21st waits for the minute window: {minute:?}"
        );
    }

    #[tokio::test]
    async fn no_window_is_exceeded_in_any_interval_whatever_the_arrivals() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let (clock, store) = setup();
        let limiter = RateLimiter::new(store, clock.clone());
        let limit = Limit {
            rate: 5.0,
            burst: 5,
            windows: vec![
                Window {
                    requests: 12,
                    seconds: 10,
                },
                Window {
                    requests: 40,
                    seconds: 60,
                },
            ],
        };
        let mut rng = StdRng::seed_from_u64(29);
        let start = now_ms(clock.as_ref());
        let mut sends = Vec::new();
        for _ in 0..300 {
            clock.advance(time::Duration::milliseconds(rng.gen_range(0..1_500)));
            let wait = limiter.acquire("p", &limit).await.expect("acquired");
            sends.push(now_ms(clock.as_ref()) - start + millis(wait));
        }
        sends.sort_unstable();
        for window in &limit.windows {
            let length = i64::from(window.seconds) * 1000;
            for (index, first) in sends.iter().enumerate() {
                let inside = sends[index..]
                    .iter()
                    .take_while(|at| **at < first + length)
                    .count();
                assert!(
                    inside as u64 <= window.requests,
                    "{inside} sends in {}s from {first} ms",
                    window.seconds
                );
            }
        }
    }

    #[tokio::test]
    async fn a_caller_that_cannot_wait_is_refused_and_books_nothing() {
        let (clock, store) = setup();
        let limiter = RateLimiter::new(store, clock.clone());
        let limit = Limit {
            rate: 10.0,
            burst: 10,
            windows: vec![Window {
                requests: 3,
                seconds: 86_400,
            }],
        };
        for _ in 0..3 {
            assert_eq!(
                limiter.acquire("p", &limit).await.expect("acquired"),
                Duration::ZERO
            );
        }
        let refused = |acquired| match acquired {
            Acquired::Refused { retry_in } => retry_in,
            other => panic!("{other:?}"),
        };
        let first = refused(
            limiter
                .acquire_within(&[("p", &limit)], Duration::from_secs(60))
                .await
                .expect("answered"),
        );
        assert!(first > Duration::from_secs(86_000), "{first:?}");
        for _ in 0..5 {
            let again = refused(
                limiter
                    .acquire_within(&[("p", &limit)], Duration::from_secs(60))
                    .await
                    .expect("answered"),
            );
            assert_eq!(again, first, "refusals book nothing");
        }
        clock.advance(time::Duration::seconds(
            i64::try_from(first.as_secs()).expect("secs") + 1,
        ));
        assert_eq!(
            limiter
                .acquire_within(&[("p", &limit)], Duration::from_secs(60))
                .await
                .expect("answered"),
            Acquired::Wait(Duration::ZERO)
        );
    }

    #[tokio::test]
    async fn an_app_wide_window_is_shared_by_every_connection() {
        let (clock, store) = setup();
        let limiter = RateLimiter::new(store, clock.clone());
        let pace = Limit::rate(10.0, 10);
        let app = Limit::windows_only(vec![Window {
            requests: 2,
            seconds: 60,
        }]);
        for connection in ["p#a", "p#b"] {
            assert_eq!(
                limiter
                    .acquire_within(&[(connection, &pace), ("p", &app)], Duration::from_secs(5))
                    .await
                    .expect("answered"),
                Acquired::Wait(Duration::ZERO)
            );
        }
        assert!(matches!(
            limiter
                .acquire_within(&[("p#c", &pace), ("p", &app)], Duration::from_secs(5))
                .await
                .expect("answered"),
            Acquired::Refused { retry_in } if retry_in >= Duration::from_secs(60)
        ));
        // A caller that can wait is booked on both keys for the later time.
        let Acquired::Wait(wait) = limiter
            .acquire_within(&[("p#c", &pace), ("p", &app)], Duration::from_secs(120))
            .await
            .expect("answered")
        else {
            panic!("granted")
        };
        assert!(wait >= Duration::from_secs(60), "{wait:?}");
        let next = limiter.acquire("p#c", &pace).await.expect("acquired");
        assert!(
            next >= wait,
            "the connection's pace booked the later time: {next:?}"
        );
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
