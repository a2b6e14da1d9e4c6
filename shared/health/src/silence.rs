//! Silence detection: webhooks that stop arriving, per provider and per connection
//! (issue 28, point 3). A scheduled run (every 15 minutes) applies two rules, announces
//! each silence once per episode (`provider.silent`, `connection.silent`), forces a
//! reconciliation poll for the connections it concerns, and reports how many providers
//! and connections are silent (the `SilentProviders` and `SilentConnections` metrics the
//! template's `WebhookSilenceAlarm` watches).
//!
//! **Provider rule** ([`provider_verdict`]): from the ingress's hourly
//! `WebhooksReceived` sums, the last hour is compared with the median of the same hour of
//! the week in the four weeks before. It is silent when that baseline is at least
//! [`SilenceSettings::provider_minimum_hourly`] and the last hour received less than
//! baseline × [`SilenceSettings::provider_ratio`]. The minimum is what keeps a normal
//! quiet night or weekend from alarming: the same hour's baseline is small then. Fewer
//! than [`MIN_BASELINE_WEEKS`] weeks in which the provider was live decide nothing
//! (learning).
//!
//! **Connection rule** ([`connection_step`]): a connection with a recorded
//! `last_event_at` is silent when nothing came for longer than
//! max([`SilenceSettings::connection_minimum_gap`], [`SilenceSettings::connection_gap_factor`]
//! × its longest learned gap), once it has been watched for [`LEARNING_SECONDS`] (a
//! week's rhythm: nights, weekends). Gaps are learned cheaply, from the runs themselves:
//! a gap is opened when it reaches minimum / factor, and measured when a later event
//! closes it (to within one run interval). A gap declared silent is not learned (an
//! outage must not raise the threshold), and a longest gap older than
//! [`GAP_DECAY_SECONDS`] gives way to the next completed one.
//!
//! The ports ([`ReceiptHistory`], [`SilenceStore`]) speak these terms; the AWS adapters
//! are [`cloudwatch::CloudWatchReceiptHistory`] and [`dynamo::DynamoSilenceStore`],
//! and in-memory ones are here for tests. Forced polls go through
//! `junction_polling::jobs::force_poll`, as `junction poll` does.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use junction_aws::clock::rfc3339_millis;
use junction_aws::config::{ConfigError, Env};
use junction_aws::events::{CloudEvent, EventBus};
use junction_catalog::Catalog;
use junction_polling::jobs::force_poll;
use junction_polling::{SyncJobStore, job_key};
use junction_telemetry::error_chain;

pub mod cloudwatch;
pub mod dynamo;

#[cfg(test)]
mod tests;

/// One hour, the provider rule's period.
pub const HOUR: i64 = 3_600;
/// One week in hours: the same hour of the week is this many hours back.
pub const WEEK_HOURS: usize = 168;
/// Weeks the provider baseline looks back.
pub const BASELINE_WEEKS: usize = 4;
/// Weeks with any receipt the baseline needs before it decides anything.
pub const MIN_BASELINE_WEEKS: usize = 2;
/// Hours of receipts one run reads: 29 days, the four weeks of the baseline and a day
/// to spare.
pub const SERIES_HOURS: usize = 29 * 24;
/// How long a connection is watched before its silence is judged: a week, so its nights
/// and weekends are learned first.
pub const LEARNING_SECONDS: i64 = 7 * 24 * HOUR;
/// A learned longest gap older than this is replaced by the next completed gap, so a
/// connection that became busier is not judged by a quiet spell of long ago.
pub const GAP_DECAY_SECONDS: i64 = 28 * 24 * HOUR;
/// Connections read for the first time in one run (a `GetItem` each, one after the
/// other: about 5-10 ms): a first run after the deploy over many connections stays
/// well within the function's timeout, and the others are met by the next runs.
pub const FIRST_SIGHTS_PER_RUN: usize = 2_000;
/// The metric name of the hourly receipts (the ingress's EMF metric).
pub const RECEIPT_METRIC: &str = "WebhooksReceived";

/// The thresholds, from the template's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct SilenceSettings {
    /// The provider baseline (deliveries an hour) below which nothing is decided.
    /// Key `SILENCE_PROVIDER_MINIMUM_HOURLY`, default 20.
    pub provider_minimum_hourly: f64,
    /// The share of the baseline under which the last hour is silent. Key
    /// `SILENCE_PROVIDER_RATIO`, default 0.1.
    pub provider_ratio: f64,
    /// The shortest silence of a connection that counts (seconds). Key
    /// `SILENCE_CONNECTION_MINIMUM_GAP_HOURS`, in hours, default 6.
    pub connection_minimum_gap: i64,
    /// How many times its longest learned gap a connection may be quiet. Key
    /// `SILENCE_CONNECTION_GAP_FACTOR`, default 2.
    pub connection_gap_factor: f64,
}

impl Default for SilenceSettings {
    fn default() -> Self {
        SilenceSettings {
            provider_minimum_hourly: 20.0,
            provider_ratio: 0.1,
            connection_minimum_gap: 6 * HOUR,
            connection_gap_factor: 2.0,
        }
    }
}

impl SilenceSettings {
    /// Reads the four thresholds; an unset key takes its default, a value out of range
    /// fails the start naming the key.
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let defaults = SilenceSettings::default();
        let positive = |key: &'static str, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(value)
            } else {
                Err(ConfigError::Invalid {
                    key,
                    reason: format!("{value}: must be a positive number"),
                })
            }
        };
        let minimum = positive(
            "SILENCE_PROVIDER_MINIMUM_HOURLY",
            env.parse_or(
                "SILENCE_PROVIDER_MINIMUM_HOURLY",
                defaults.provider_minimum_hourly,
            )?,
        )?;
        let ratio = positive(
            "SILENCE_PROVIDER_RATIO",
            env.parse_or("SILENCE_PROVIDER_RATIO", defaults.provider_ratio)?,
        )?;
        if ratio >= 1.0 {
            return Err(ConfigError::Invalid {
                key: "SILENCE_PROVIDER_RATIO",
                reason: format!("{ratio}: must be below 1 (a share of the normal rate)"),
            });
        }
        let gap_hours = positive(
            "SILENCE_CONNECTION_MINIMUM_GAP_HOURS",
            env.parse_or("SILENCE_CONNECTION_MINIMUM_GAP_HOURS", 6.0)?,
        )?;
        let factor = positive(
            "SILENCE_CONNECTION_GAP_FACTOR",
            env.parse_or(
                "SILENCE_CONNECTION_GAP_FACTOR",
                defaults.connection_gap_factor,
            )?,
        )?;
        if factor < 1.0 {
            return Err(ConfigError::Invalid {
                key: "SILENCE_CONNECTION_GAP_FACTOR",
                reason: format!("{factor}: must be at least 1 (a multiple of the longest gap)"),
            });
        }
        Ok(SilenceSettings {
            provider_minimum_hourly: minimum,
            provider_ratio: ratio,
            connection_minimum_gap: (gap_hours * HOUR as f64).round() as i64,
            connection_gap_factor: factor,
        })
    }

    /// The gap at which a connection's quiet spell starts being measured: a shorter one
    /// cannot raise the threshold above the minimum.
    pub fn gap_worth_learning(&self) -> i64 {
        (self.connection_minimum_gap as f64 / self.connection_gap_factor).floor() as i64
    }
}

/// A store or the metrics could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("silence detection: {what} failed")]
pub struct SilenceError {
    pub what: &'static str,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl SilenceError {
    pub fn new(
        what: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        SilenceError {
            what,
            source: source.into(),
        }
    }
}

/// Hourly webhook receipts per provider.
#[async_trait]
pub trait ReceiptHistory: Send + Sync + std::fmt::Debug {
    /// For every provider with receipts on record, and for each of `also`, its receipt
    /// count in each of the `hours` hours ending at `end` (Unix seconds), oldest first.
    /// An hour without data is 0: nothing is published when nothing arrived.
    async fn hourly_receipts(
        &self,
        end: i64,
        hours: usize,
        also: &[String],
    ) -> Result<BTreeMap<String, Vec<f64>>, SilenceError>;
}

/// What the detector keeps about a connection, on its last-event item beside
/// `last_event_at` (which only the consumer writes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionWatch {
    /// When the detector first saw the connection's item (the learning week starts).
    pub tracked_since: Option<i64>,
    /// The connection's provider and tenant, read once from the connection.
    pub provider: Option<String>,
    pub tenant: Option<String>,
    /// The `last_event_at` a quiet spell being measured started at.
    pub gap_open_since: Option<i64>,
    /// The longest quiet spell learned (seconds) and when it was learned.
    pub longest_gap: Option<i64>,
    pub longest_gap_at: Option<i64>,
    /// When silence was announced, and the `last_event_at` it was announced for: the
    /// episode ends when a later event comes.
    pub silent_since: Option<i64>,
    pub silent_last_event_at: Option<i64>,
}

/// A connection's last-event item as the detector reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedConnection {
    pub id: String,
    pub last_event_at: i64,
    pub watch: ConnectionWatch,
}

/// A provider's silence episode, if one is open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProviderWatch {
    /// When the episode was announced; `None` when none is open.
    pub silent_since: Option<i64>,
    /// When the last episode ended.
    pub last_ended_at: Option<i64>,
}

/// Everything the detector keeps, read at the start of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracked {
    /// Connections with a last-event item (deleted connections' tombstones left out).
    pub connections: Vec<TrackedConnection>,
    pub providers: BTreeMap<String, ProviderWatch>,
}

/// What the detector needs of a connection itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub tenant: String,
    pub provider: String,
    /// `active`, `needs_reauth`, … (a connection that is not active is not judged:
    /// its silence is expected).
    pub state: String,
}

/// Where the detector keeps what it learned (the connections table).
#[async_trait]
pub trait SilenceStore: Send + Sync + std::fmt::Debug {
    /// Every connection's last-event item and every provider's silence state.
    async fn tracked(&self) -> Result<Tracked, SilenceError>;
    /// The connection's tenant, provider and state; `None` when it is gone.
    async fn owner(&self, connection: &str) -> Result<Option<Owner>, SilenceError>;
    /// Stores `watch` on the connection's last-event item, never touching
    /// `last_event_at` and never writing over a deleted connection's tombstone or
    /// bringing back an item that is gone; `false` when refused for that reason.
    async fn save_connection(
        &self,
        connection: &str,
        watch: &ConnectionWatch,
    ) -> Result<bool, SilenceError>;
    /// Stores a provider's silence state.
    async fn save_provider(
        &self,
        provider: &str,
        watch: &ProviderWatch,
    ) -> Result<(), SilenceError>;
}

/// The provider rule's verdict on the last hour.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderVerdict {
    /// Under baseline × ratio, with a baseline at or above the minimum.
    Silent {
        current: f64,
        baseline: f64,
        weeks: usize,
    },
    /// At or above baseline × ratio.
    Normal {
        current: f64,
        baseline: f64,
        weeks: usize,
    },
    /// Fewer than [`MIN_BASELINE_WEEKS`] weeks with receipts (learning), or a
    /// baseline under the minimum (a quiet hour): nothing is decided.
    Undecided {
        current: f64,
        baseline: Option<f64>,
        weeks: usize,
    },
}

impl ProviderVerdict {
    /// The last hour's count.
    pub fn current(&self) -> f64 {
        match self {
            ProviderVerdict::Silent { current, .. }
            | ProviderVerdict::Normal { current, .. }
            | ProviderVerdict::Undecided { current, .. } => *current,
        }
    }
}

/// The median of `values` (not empty): the middle one, or the mean of the middle two.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    }
}

/// The provider rule over `hourly` (oldest first, the last element the last hour).
///
/// Week `k` (1 to 4) is the same hour of the week `k` weeks back; it counts when the
/// provider received anything in the 24 hours up to and including that hour (it was
/// live then: a week before its first webhook says nothing). The baseline is the median
/// of the counted weeks' same-hour counts (zero included: a provider live that day but
/// quiet at this hour says this hour is quiet).
pub fn provider_verdict(hourly: &[f64], settings: &SilenceSettings) -> ProviderVerdict {
    let Some(last) = hourly.len().checked_sub(1) else {
        return ProviderVerdict::Undecided {
            current: 0.0,
            baseline: None,
            weeks: 0,
        };
    };
    let current = hourly[last];
    let mut same_hour = Vec::with_capacity(BASELINE_WEEKS);
    for week in 1..=BASELINE_WEEKS {
        let Some(hour) = last.checked_sub(week * WEEK_HOURS) else {
            break;
        };
        let day = &hourly[hour.saturating_sub(23)..=hour];
        if day.iter().any(|count| *count > 0.0) {
            same_hour.push(hourly[hour]);
        }
    }
    let weeks = same_hour.len();
    if weeks < MIN_BASELINE_WEEKS {
        return ProviderVerdict::Undecided {
            current,
            baseline: None,
            weeks,
        };
    }
    let baseline = median(&mut same_hour);
    if baseline < settings.provider_minimum_hourly {
        ProviderVerdict::Undecided {
            current,
            baseline: Some(baseline),
            weeks,
        }
    } else if current < baseline * settings.provider_ratio {
        ProviderVerdict::Silent {
            current,
            baseline,
            weeks,
        }
    } else {
        ProviderVerdict::Normal {
            current,
            baseline,
            weeks,
        }
    }
}

/// The connection rule's verdict at one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionVerdict {
    /// Seconds since the last event.
    pub silent_for: i64,
    /// The silence that counts, max(minimum gap, factor × longest gap).
    pub threshold: i64,
    /// Still learning (watched for less than [`LEARNING_SECONDS`]).
    pub learning: bool,
    /// Silence starts now: announce it.
    pub newly_silent: bool,
    /// An episode is open (announced now or before).
    pub silent: bool,
    /// The episode that ended at this run (an event came), as (announced at, length of
    /// the silence in seconds, to within a run).
    pub ended: Option<(i64, i64)>,
}

/// The connection rule at `now`, over the connection's `last_event_at` and what was
/// learned (`watch`, with `tracked_since` set): what to store next and the verdict.
pub fn connection_step(
    now: i64,
    last_event_at: i64,
    watch: &ConnectionWatch,
    settings: &SilenceSettings,
) -> (ConnectionWatch, ConnectionVerdict) {
    let mut next = watch.clone();
    let mut ended = None;
    // A quiet spell being measured ended: an event came after it started. Its length is
    // to within a run: `last_event_at` is the latest event, not the first after it.
    if let Some(open) = next.gap_open_since
        && last_event_at > open
    {
        let length = last_event_at - open;
        let declared = next.silent_last_event_at == Some(open);
        if !declared {
            let decayed = next
                .longest_gap_at
                .is_none_or(|at| now - at > GAP_DECAY_SECONDS);
            if decayed || next.longest_gap.is_none_or(|longest| length > longest) {
                next.longest_gap = Some(length);
                next.longest_gap_at = Some(now);
            }
        }
        next.gap_open_since = None;
    }
    if let Some(announced_for) = next.silent_last_event_at
        && last_event_at > announced_for
    {
        ended = Some((
            next.silent_since.unwrap_or(now),
            last_event_at - announced_for,
        ));
        next.silent_since = None;
        next.silent_last_event_at = None;
    }
    let silent_for = now - last_event_at;
    if next.gap_open_since.is_none() && silent_for >= settings.gap_worth_learning() {
        next.gap_open_since = Some(last_event_at);
    }
    let learned = next.longest_gap.map_or(0.0, |longest| {
        longest as f64 * settings.connection_gap_factor
    });
    let threshold = settings.connection_minimum_gap.max(learned.round() as i64);
    let learning = now - next.tracked_since.unwrap_or(now) < LEARNING_SECONDS;
    let over = !learning && silent_for > threshold;
    let newly_silent = over && next.silent_since.is_none();
    if newly_silent {
        next.silent_since = Some(now);
        next.silent_last_event_at = Some(last_event_at);
    }
    let verdict = ConnectionVerdict {
        silent_for,
        threshold,
        learning,
        newly_silent,
        silent: next.silent_since.is_some(),
        ended,
    };
    (next, verdict)
}

/// What one run found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Providers with receipts or an open episode, judged this run.
    pub providers_checked: usize,
    /// Providers in an open silence episode after the run (the `SilentProviders` metric).
    pub silent_providers: usize,
    /// `provider.silent` events published this run.
    pub providers_announced: usize,
    /// Connections with a last-event item, judged this run.
    pub connections_checked: usize,
    /// Connections in an open silence episode (the `SilentConnections` metric).
    pub silent_connections: usize,
    /// `connection.silent` events published this run.
    pub connections_announced: usize,
    /// Sync jobs made due by this run.
    pub polls_forced: usize,
    /// Steps that failed (logged with their cause); retried at the next run.
    pub failures: usize,
}

impl RunReport {
    /// The run's metrics as one EMF line (no dimension): what the template's
    /// `WebhookSilenceAlarm` watches. `timestamp_ms`: the run's time.
    pub fn metrics_line(&self, timestamp_ms: i128) -> String {
        junction_telemetry::emf_line(
            timestamp_ms,
            &[],
            &[
                ("SilentProviders", self.silent_providers as f64, "Count"),
                ("SilentConnections", self.silent_connections as f64, "Count"),
            ],
        )
    }
}

/// The detector: the two rules over the ports, announcing on the bus and forcing polls.
#[derive(Debug, Clone)]
pub struct SilenceDetector {
    receipts: Arc<dyn ReceiptHistory>,
    store: Arc<dyn SilenceStore>,
    jobs: Arc<dyn SyncJobStore>,
    bus: Arc<dyn EventBus>,
    catalog: &'static Catalog,
    settings: SilenceSettings,
}

/// What became of a connection's silence announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Announcement {
    /// On the bus.
    Announced,
    /// Not judged: the connection is not active, or gone.
    NotJudged,
    /// The connection or the bus could not be reached: tried again next run.
    Failed,
}

/// Unix seconds as RFC 3339 (empty if out of range).
fn timestamp(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(rfc3339_millis)
        .unwrap_or_default()
}

impl SilenceDetector {
    pub fn new(
        receipts: Arc<dyn ReceiptHistory>,
        store: Arc<dyn SilenceStore>,
        jobs: Arc<dyn SyncJobStore>,
        bus: Arc<dyn EventBus>,
        catalog: &'static Catalog,
        settings: SilenceSettings,
    ) -> Self {
        SilenceDetector {
            receipts,
            store,
            jobs,
            bus,
            catalog,
            settings,
        }
    }

    /// One run at `now` (Unix seconds). Only reading what is tracked can fail it; every
    /// other failure is logged with its cause, counted in the report and retried at the
    /// next run (nothing is recorded as announced until its event is on the bus).
    pub async fn run(&self, now: i64) -> Result<RunReport, SilenceError> {
        let mut report = RunReport::default();
        let mut tracked = self.store.tracked().await?;
        // What is stored, to write only what changed.
        let stored: Vec<ConnectionWatch> = tracked
            .connections
            .iter()
            .map(|connection| connection.watch.clone())
            .collect();
        // Connections seen for the first time: their provider and tenant, once; at most
        // FIRST_SIGHTS_PER_RUN a run (one read each), so a first run over many
        // connections ends in time and the rest are met at the next runs.
        let mut first_sights = 0;
        for connection in &mut tracked.connections {
            if connection.watch.tracked_since.is_some() {
                continue;
            }
            if first_sights == FIRST_SIGHTS_PER_RUN {
                break;
            }
            first_sights += 1;
            match self.store.owner(&connection.id).await {
                Ok(Some(owner)) => {
                    connection.watch.tracked_since = Some(now);
                    connection.watch.provider = Some(owner.provider);
                    connection.watch.tenant = Some(owner.tenant);
                }
                Ok(None) => {}
                Err(err) => {
                    report.failures += 1;
                    tracing::warn!(connection = %connection.id, error = %error_chain(&err), outcome = "silence_check_failed", "connection not read");
                }
            }
        }
        self.check_providers(now, &tracked, &mut report).await;
        for (connection, stored) in tracked.connections.iter().zip(&stored) {
            self.check_connection(now, connection, stored, &mut report)
                .await;
        }
        Ok(report)
    }

    /// The sync jobs of `connection` (the catalog's polled models of `provider`) made due
    /// now; how many were.
    async fn force_polls(
        &self,
        connection: &str,
        provider: &str,
        now: i64,
        report: &mut RunReport,
    ) -> usize {
        let models = self
            .catalog
            .get(provider)
            .and_then(|entry| entry.polling.as_ref())
            .map(|polling| polling.models.as_slice())
            .unwrap_or_default();
        let mut due = 0;
        for model in models {
            let key = job_key(connection, &model.name);
            match force_poll(self.jobs.as_ref(), &key, now, false).await {
                Ok(forced) => {
                    if forced.is_due() {
                        due += 1;
                    }
                    tracing::info!(job = %key, result = forced.as_str(), outcome = "reconciliation_poll", "reconciliation poll after silence");
                }
                Err(err) => {
                    report.failures += 1;
                    tracing::warn!(job = %key, error = %error_chain(&err), outcome = "reconciliation_poll_failed", "reconciliation poll not forced");
                }
            }
        }
        report.polls_forced += due;
        due
    }

    async fn check_providers(&self, now: i64, tracked: &Tracked, report: &mut RunReport) {
        // CloudWatch rounds a start more than 15 days back down to 5 minutes: ending on a
        // 5-minute boundary keeps every hour's bucket where it is asked for.
        let end = now - now.rem_euclid(300);
        let open: Vec<String> = tracked
            .providers
            .iter()
            .filter(|(_, watch)| watch.silent_since.is_some())
            .map(|(provider, _)| provider.clone())
            .collect();
        let series = match self
            .receipts
            .hourly_receipts(end, SERIES_HOURS, &open)
            .await
        {
            Ok(series) => series,
            Err(err) => {
                report.failures += 1;
                // Open episodes still count: nothing says they ended.
                report.silent_providers = open.len();
                tracing::error!(error = %error_chain(&err), outcome = "silence_check_failed", "webhook receipts not read; providers not judged this run");
                return;
            }
        };
        let providers: BTreeSet<&String> = series.keys().chain(open.iter()).collect();
        for provider in providers {
            report.providers_checked += 1;
            let verdict = provider_verdict(
                series.get(provider).map(Vec::as_slice).unwrap_or_default(),
                &self.settings,
            );
            let watch = tracked.providers.get(provider).cloned().unwrap_or_default();
            match (&verdict, watch.silent_since) {
                (
                    ProviderVerdict::Silent {
                        current,
                        baseline,
                        weeks,
                    },
                    None,
                ) => {
                    // Counted even when the event did not go out (it is tried again
                    // next run): the alarm must not depend on the bus.
                    self.announce_provider(
                        now, end, provider, *current, *baseline, *weeks, tracked, report,
                    )
                    .await;
                    report.silent_providers += 1;
                }
                (ProviderVerdict::Silent { .. }, Some(_)) => report.silent_providers += 1,
                // Without a baseline to decide, an episode lasts until anything arrives.
                (ProviderVerdict::Undecided { current, .. }, Some(_)) if *current <= 0.0 => {
                    report.silent_providers += 1;
                }
                (_, Some(since)) => {
                    let ended = ProviderWatch {
                        silent_since: None,
                        last_ended_at: Some(now),
                    };
                    match self.store.save_provider(provider, &ended).await {
                        Ok(()) => {
                            tracing::info!(provider = %provider, silent_for = now - since, received_last_hour = verdict.current(), outcome = "provider_silence_ended", "webhooks from the provider arrive again")
                        }
                        Err(err) => {
                            report.failures += 1;
                            report.silent_providers += 1;
                            tracing::warn!(provider = %provider, error = %error_chain(&err), outcome = "silence_check_failed", "provider silence end not recorded");
                        }
                    }
                }
                (_, None) => {}
            }
        }
    }

    /// Announces a provider's silence and forces a poll of its connections that have
    /// sync jobs, then records the episode (an event that did not go out is not
    /// recorded, so it is tried again next run).
    #[allow(clippy::too_many_arguments)]
    async fn announce_provider(
        &self,
        now: i64,
        end: i64,
        provider: &str,
        current: f64,
        baseline: f64,
        weeks: usize,
        tracked: &Tracked,
        report: &mut RunReport,
    ) {
        // Its connections that webhooks fed: those with a last-event item, whose
        // provider the detector already keeps (no extra read). Connections that never
        // received a webhook keep their usual polling schedule.
        let mut forced_connections = 0;
        for connection in &tracked.connections {
            if connection.watch.provider.as_deref() == Some(provider)
                && self
                    .force_polls(&connection.id, provider, now, report)
                    .await
                    > 0
            {
                forced_connections += 1;
            }
        }
        let data = serde_json::json!({
            "provider": provider,
            "received_last_hour": current,
            "hour_ended_at": timestamp(end),
            "baseline_hourly": baseline,
            "baseline_weeks": weeks,
            "minimum_hourly": self.settings.provider_minimum_hourly,
            "ratio": self.settings.provider_ratio,
            "threshold_hourly": baseline * self.settings.provider_ratio,
            "reconciliation_polls_forced": forced_connections,
        });
        let event = CloudEvent::new(
            provider,
            &format!("provider-silence:{}", end - end.rem_euclid(HOUR)),
            provider,
            "provider.silent".to_owned(),
            None,
            timestamp(now),
            data,
        );
        if let Err(err) = self.bus.publish(std::slice::from_ref(&event)).await {
            report.failures += 1;
            tracing::warn!(provider = %provider, error = %error_chain(&err), outcome = "silence_not_announced", "provider.silent not published; tried again next run");
            return;
        }
        report.providers_announced += 1;
        tracing::warn!(provider = %provider, received_last_hour = current, baseline_hourly = baseline, outcome = "provider_silent", "webhooks from the provider dropped below their normal rate");
        let watch = ProviderWatch {
            silent_since: Some(now),
            last_ended_at: None,
        };
        if let Err(err) = self.store.save_provider(provider, &watch).await {
            report.failures += 1;
            tracing::warn!(provider = %provider, error = %error_chain(&err), outcome = "silence_check_failed", "provider silence not recorded; it may be announced again");
        }
    }

    async fn check_connection(
        &self,
        now: i64,
        connection: &TrackedConnection,
        stored: &ConnectionWatch,
        report: &mut RunReport,
    ) {
        if connection.watch.tracked_since.is_none() {
            // Not read (gone, or the read failed): judged at a later run.
            return;
        }
        report.connections_checked += 1;
        let (mut next, verdict) = connection_step(
            now,
            connection.last_event_at,
            &connection.watch,
            &self.settings,
        );
        if let Some((since, length)) = verdict.ended {
            tracing::info!(connection = %connection.id, announced_at = since, silent_for = length, outcome = "connection_silence_ended", "webhooks for the connection arrive again");
        }
        let mut unannounced = false;
        if verdict.newly_silent {
            let announced = self
                .announce_connection(now, connection, &verdict, report)
                .await;
            if announced != Announcement::Announced {
                // Not recorded, so the next run judges it again.
                next.silent_since = connection.watch.silent_since;
                next.silent_last_event_at = connection.watch.silent_last_event_at;
                // A silence the bus did not take still counts (the alarm must not
                // depend on the bus); one not judged (not active, gone) does not.
                unannounced = announced == Announcement::Failed;
            }
        }
        if next.silent_since.is_some() || unannounced {
            report.silent_connections += 1;
        }
        if next != *stored {
            match self.store.save_connection(&connection.id, &next).await {
                Ok(_) => {}
                Err(err) => {
                    report.failures += 1;
                    tracing::warn!(connection = %connection.id, error = %error_chain(&err), outcome = "silence_check_failed", "what was learned of the connection not recorded");
                }
            }
        }
    }

    /// Announces a connection's silence after forcing its reconciliation poll.
    async fn announce_connection(
        &self,
        now: i64,
        connection: &TrackedConnection,
        verdict: &ConnectionVerdict,
        report: &mut RunReport,
    ) -> Announcement {
        // Read again: a connection that needs reauthorization or was deleted meanwhile
        // is silent for a reason the product already knows.
        let owner = match self.store.owner(&connection.id).await {
            Ok(Some(owner)) if owner.state == "active" => owner,
            Ok(_) => return Announcement::NotJudged,
            Err(err) => {
                report.failures += 1;
                tracing::warn!(connection = %connection.id, error = %error_chain(&err), outcome = "silence_check_failed", "connection not read");
                return Announcement::Failed;
            }
        };
        let forced = self
            .force_polls(&connection.id, &owner.provider, now, report)
            .await;
        let data = serde_json::json!({
            "connection_id": connection.id,
            "provider": owner.provider,
            "last_event_at": timestamp(connection.last_event_at),
            "silent_for_seconds": verdict.silent_for,
            "threshold_seconds": verdict.threshold,
            "longest_gap_seconds": connection.watch.longest_gap,
            "reconciliation_poll_forced": forced > 0,
        });
        let event = CloudEvent::new(
            &owner.provider,
            &format!("{}:silent:{}", connection.id, connection.last_event_at),
            &connection.id,
            "connection.silent".to_owned(),
            Some(connection.id.clone()),
            timestamp(now),
            data,
        )
        .stamped(&owner.tenant, &connection.id);
        if let Err(err) = self.bus.publish(std::slice::from_ref(&event)).await {
            report.failures += 1;
            tracing::warn!(connection = %connection.id, error = %error_chain(&err), outcome = "silence_not_announced", "connection.silent not published; tried again next run");
            return Announcement::Failed;
        }
        report.connections_announced += 1;
        tracing::warn!(connection = %connection.id, provider = %owner.provider, tenant = %owner.tenant, silent_for = verdict.silent_for, threshold = verdict.threshold, outcome = "connection_silent", "no webhook for the connection for longer than its rhythm allows");
        Announcement::Announced
    }
}

/// Receipts in memory, for tests: each provider's hourly counts ending at the run's
/// hour, as CloudWatch would answer them.
#[derive(Debug, Default)]
pub struct InMemoryReceiptHistory {
    series: Mutex<BTreeMap<String, Vec<f64>>>,
    failing: std::sync::atomic::AtomicBool,
}

impl InMemoryReceiptHistory {
    /// Sets `provider`'s hourly counts, oldest first, the last one the last hour.
    pub fn set(&self, provider: &str, hourly: Vec<f64>) {
        self.series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(provider.to_owned(), hourly);
    }

    /// Fails every read from now on (or no longer).
    pub fn set_failing(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait]
impl ReceiptHistory for InMemoryReceiptHistory {
    async fn hourly_receipts(
        &self,
        _end: i64,
        hours: usize,
        also: &[String],
    ) -> Result<BTreeMap<String, Vec<f64>>, SilenceError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(SilenceError::new("reading receipts", "set to fail"));
        }
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: BTreeMap<String, Vec<f64>> = series
            .iter()
            .map(|(provider, hourly)| {
                let mut window = vec![0.0; hours.saturating_sub(hourly.len())];
                window.extend(&hourly[hourly.len().saturating_sub(hours)..]);
                (provider.clone(), window)
            })
            .collect();
        for provider in also {
            out.entry(provider.clone())
                .or_insert_with(|| vec![0.0; hours]);
        }
        Ok(out)
    }
}

/// The connections table's silence items in memory, for tests.
#[derive(Debug, Default)]
pub struct InMemorySilenceStore {
    connections: Mutex<BTreeMap<String, Result<TrackedConnection, ()>>>,
    owners: Mutex<BTreeMap<String, Owner>>,
    providers: Mutex<BTreeMap<String, ProviderWatch>>,
}

impl InMemorySilenceStore {
    /// A connection of `tenant` on `provider`, active.
    pub fn connect(&self, id: &str, tenant: &str, provider: &str) {
        self.owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id.to_owned(),
                Owner {
                    tenant: tenant.to_owned(),
                    provider: provider.to_owned(),
                    state: "active".to_owned(),
                },
            );
    }

    /// Sets a connection's state (`needs_reauth`, …).
    pub fn set_state(&self, id: &str, state: &str) {
        if let Some(owner) = self
            .owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(id)
        {
            owner.state = state.to_owned();
        }
    }

    /// What the consumer does: moves the connection's `last_event_at` forward, creating
    /// its item (never over a tombstone).
    pub fn record_event(&self, id: &str, at: i64) {
        let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        let entry = connections.entry(id.to_owned()).or_insert_with(|| {
            Ok(TrackedConnection {
                id: id.to_owned(),
                last_event_at: at,
                watch: ConnectionWatch::default(),
            })
        });
        if let Ok(tracked) = entry {
            tracked.last_event_at = tracked.last_event_at.max(at);
        }
    }

    /// What a disconnect does: the connection is gone, its item a tombstone.
    pub fn disconnect(&self, id: &str) {
        self.owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), Err(()));
    }

    /// The connection's stored watch, if its item is live.
    pub fn watch(&self, id: &str) -> Option<ConnectionWatch> {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .and_then(|entry| entry.as_ref().ok())
            .map(|tracked| tracked.watch.clone())
    }

    /// The provider's stored state.
    pub fn provider(&self, provider: &str) -> Option<ProviderWatch> {
        self.providers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(provider)
            .cloned()
    }
}

#[async_trait]
impl SilenceStore for InMemorySilenceStore {
    async fn tracked(&self) -> Result<Tracked, SilenceError> {
        Ok(Tracked {
            connections: self
                .connections
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .filter_map(|entry| entry.as_ref().ok().cloned())
                .collect(),
            providers: self
                .providers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        })
    }

    async fn owner(&self, connection: &str) -> Result<Option<Owner>, SilenceError> {
        Ok(self
            .owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(connection)
            .cloned())
    }

    async fn save_connection(
        &self,
        connection: &str,
        watch: &ConnectionWatch,
    ) -> Result<bool, SilenceError> {
        let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        match connections.get_mut(connection) {
            Some(Ok(tracked)) => {
                tracked.watch = watch.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn save_provider(
        &self,
        provider: &str,
        watch: &ProviderWatch,
    ) -> Result<(), SilenceError> {
        self.providers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(provider.to_owned(), watch.clone());
        Ok(())
    }
}
