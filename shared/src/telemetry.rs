//! Logs and metrics: JSON lines on stdout that are both log records and, in CloudWatch
//! Embedded Metric Format, metrics ([`OutcomeLine`]): one per webhook at the ingress,
//! one per provider of a batch at the consumer (plus one per message retried or
//! failed). Lambda ships them to CloudWatch Logs and CloudWatch turns them into metrics
//! without an API call per event. Other log lines go through `tracing` (JSON); the
//! rarer metrics (outbound calls, token refreshes, poll runs) are EMF lines of their
//! own.
//!
//! CloudWatch Logs bills every byte ingested, and these lines are written for every
//! webhook, so they say each thing once: about 575 bytes a webhook by default (the
//! ingress's line and a tenth of a consumer batch's), where one line per message with
//! every metric, zero or not, made 2.2 KB (`a_webhook_costs_at_most_600_bytes_of_log_lines`).
//!
//! Metrics namespace: `Junction`. Every metric is published twice: with the dimension
//! `Provider`, and without dimensions (the all-provider aggregate alarms use). Webhook
//! metrics:
//! `WebhooksReceived` (every request that named a known provider), `WebhooksAccepted`,
//! `SignatureFailures` (401s, the security signal), `IngressErrors` (5xx) and
//! `IngressLatency` (milliseconds); consumer metrics: [`consumed_metrics_line`].

use std::time::Duration;

use tracing_subscriber::{layer::SubscriberExt as _, util::SubscriberInitExt as _};

use crate::{consumer::ItemOutcome, webhooks::Outcome};

/// The CloudWatch namespace of every Junction metric.
pub const NAMESPACE: &str = "Junction";

/// An error and each of its causes, outermost first, joined with `: `, for a log line.
/// AWS SDK errors say only "service error" at the top; the service's code and message
/// (`AccessDenied: …`) are further down the chain. Never for a response body: the text
/// is the dependency's own.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        // Wrappers often repeat their cause's text; say it once.
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

/// Installs the JSON log subscriber. The level comes from `RUST_LOG` in its
/// `target=level,level` form (default `info`); an unreadable value falls back to `info`
/// with a warning naming it. `Targets` rather than `EnvFilter`: it needs no regex engine
/// (about 300 KB of every binary) and span-field filters are not something we use.
pub fn init() {
    let configured = std::env::var("RUST_LOG").ok();
    let parsed = configured
        .as_deref()
        .map(str::parse::<tracing_subscriber::filter::Targets>);
    let filter = match &parsed {
        Some(Ok(targets)) => targets.clone(),
        _ => tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO),
    };
    // The Lambda runtime opens an INFO span per invocation that no line of ours shows
    // (its request id is Lambda's own log metadata); creating it formats its fields on
    // every invocation. Unless `RUST_LOG` names the runtime, it logs warnings only.
    let filter = if configured
        .as_deref()
        .is_some_and(|value| value.contains("lambda_runtime"))
    {
        filter
    } else {
        filter.with_target("lambda_runtime", tracing::Level::WARN)
    };
    json_subscriber(filter, std::io::stdout).init();
    if let (Some(value), Some(Err(err))) = (configured, parsed) {
        tracing::warn!(rust_log = %value, error = %err, "RUST_LOG not understood; logging at info");
    }
}

/// The JSON subscriber, its levels `filter`'s alone: the builder's own default stopped
/// at `INFO`, so that `RUST_LOG=…=debug` printed nothing more (found by
/// `rust_log_at_debug_for_telemetry_asks_for_every_consumed_message`). Its maximum is
/// the filter's most verbose directive, so that by default every `debug!` in the
/// dependencies stays off at the macro, as before.
fn json_subscriber<W>(
    filter: tracing_subscriber::filter::Targets,
    writer: W,
) -> impl tracing::Subscriber + Send + Sync + 'static
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_ansi(false)
        .with_max_level(
            tracing_subscriber::Layer::<tracing_subscriber::Registry>::max_level_hint(&filter)
                .unwrap_or(tracing::level_filters::LevelFilter::TRACE),
        )
        .with_writer(writer)
        .finish()
        .with(filter)
}

/// One EMF document: `metrics` (name, value, unit) under `dimensions`, and also under
/// no dimension at all (an empty dimension set, as the EMF libraries' `setDimensions()`
/// with no argument writes): the aggregate the template's alarms watch, without a
/// metric-math search over every provider.
pub fn emf_line(
    timestamp_ms: i128,
    dimensions: &[(&str, &str)],
    metrics: &[(&str, f64, &str)],
) -> String {
    let metrics: Vec<Metric<'_>> = metrics
        .iter()
        .map(|&(name, value, unit)| Metric::one(name, value, unit))
        .collect();
    let mut line = Vec::with_capacity(160 + 64 * metrics.len());
    line.push(b'{');
    write_emf_members(&mut line, timestamp_ms, dimensions, &metrics);
    line.push(b'}');
    // Only `serde_json` output and ASCII literals went in.
    String::from_utf8(line).unwrap_or_default()
}

/// One metric of an EMF document: a value, or several (EMF's array form, each value a
/// sample of its own, so percentiles stay exact; up to 100 a metric).
#[derive(Debug, Clone)]
struct Metric<'a> {
    name: &'a str,
    unit: &'a str,
    values: MetricValues,
}

#[derive(Debug, Clone)]
enum MetricValues {
    One(f64),
    Many(Vec<f64>),
}

impl<'a> Metric<'a> {
    fn one(name: &'a str, value: f64, unit: &'a str) -> Self {
        Metric {
            name,
            unit,
            values: MetricValues::One(value),
        }
    }
}

/// EMF's limit of values in one metric's array.
const EMF_MAX_VALUES: usize = 100;

/// Writes a metric value: a whole number without a fraction (`1`, not `1.0`), anything
/// else to the microsecond of a millisecond figure (three decimals); non-finite values
/// as `null`, as `serde_json` writes them.
fn write_number(line: &mut Vec<u8>, value: f64) {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 9.0e15 {
        // Exact: a whole number below 2^53.
        let _ = serde_json::to_writer(&mut *line, &(value as i64));
    } else {
        let _ = serde_json::to_writer(&mut *line, &((value * 1000.0).round() / 1000.0));
    }
}

/// The members of an EMF document, without the braces: the `_aws` directive, then the
/// dimension values, then the metric values.
///
/// Written straight into the buffer rather than through a `serde_json::Value` tree:
/// this runs for every event, and the tree's maps and boxed values were most of its cost
/// (infra/bench). Writing JSON into a `Vec` cannot fail, hence the `let _`.
fn write_emf_members(
    line: &mut Vec<u8>,
    timestamp_ms: i128,
    dimensions: &[(&str, &str)],
    metrics: &[Metric<'_>],
) {
    line.extend_from_slice(b"\"_aws\":{\"Timestamp\":");
    line.extend_from_slice(timestamp_ms.to_string().as_bytes());
    line.extend_from_slice(b",\"CloudWatchMetrics\":[{\"Namespace\":");
    let _ = serde_json::to_writer(&mut *line, NAMESPACE);
    line.extend_from_slice(b",\"Dimensions\":[[");
    for (index, (name, _)) in dimensions.iter().enumerate() {
        if index > 0 {
            line.push(b',');
        }
        let _ = serde_json::to_writer(&mut *line, name);
    }
    line.extend_from_slice(b"],[]],\"Metrics\":[");
    for (index, metric) in metrics.iter().enumerate() {
        if index > 0 {
            line.push(b',');
        }
        line.extend_from_slice(b"{\"Name\":");
        let _ = serde_json::to_writer(&mut *line, metric.name);
        line.extend_from_slice(b",\"Unit\":");
        let _ = serde_json::to_writer(&mut *line, metric.unit);
        line.push(b'}');
    }
    line.extend_from_slice(b"]}]}");
    for (name, value) in dimensions {
        line.push(b',');
        let _ = serde_json::to_writer(&mut *line, name);
        line.push(b':');
        let _ = serde_json::to_writer(&mut *line, value);
    }
    for metric in metrics {
        line.push(b',');
        let _ = serde_json::to_writer(&mut *line, metric.name);
        line.push(b':');
        match &metric.values {
            MetricValues::One(value) => write_number(line, *value),
            MetricValues::Many(values) => {
                line.push(b'[');
                for (index, value) in values.iter().enumerate() {
                    if index > 0 {
                        line.push(b',');
                    }
                    write_number(line, *value);
                }
                line.push(b']');
            }
        }
    }
}

/// An event's outcome as one JSON line: the log record (`level`, `message`, then the
/// event's fields, as the `tracing` JSON lines have them) and, in the same object, the
/// event's metrics in CloudWatch Embedded Metric Format.
///
/// One line and one write per event, where a log line and a separate metrics line took
/// two writes (each waking Lambda's log reader) and the `tracing` formatter: the ingress
/// spent about a tenth of its warm CPU there (infra/bench). CloudWatch takes the metrics
/// from the `_aws` directive and keeps the other members as log fields. Because the line
/// carries metrics, it is written whatever the `RUST_LOG` level.
///
/// Every byte is paid for in CloudWatch Logs, once a webhook: a line with metrics has
/// its time once, as the directive's `Timestamp` (epoch ms), not again as an RFC 3339
/// `timestamp` (a line without metrics has that); the provider once, as the `Provider`
/// dimension's member.
#[derive(Debug)]
pub struct OutcomeLine {
    json: Vec<u8>,
    now: time::OffsetDateTime,
}

impl OutcomeLine {
    /// A record at `level` (`INFO`, `WARN` or `ERROR`) saying `message`, stamped now.
    pub fn new(level: &str, message: &str) -> OutcomeLine {
        let mut json = Vec::with_capacity(640);
        json.extend_from_slice(b"{\"level\":");
        let _ = serde_json::to_writer(&mut json, level);
        json.extend_from_slice(b",\"message\":");
        let _ = serde_json::to_writer(&mut json, message);
        OutcomeLine {
            json,
            now: time::OffsetDateTime::now_utc(),
        }
    }

    fn key(&mut self, name: &str) {
        self.json.push(b',');
        let _ = serde_json::to_writer(&mut self.json, name);
        self.json.push(b':');
    }

    /// A string field.
    pub fn text(mut self, name: &str, value: &str) -> OutcomeLine {
        self.key(name);
        let _ = serde_json::to_writer(&mut self.json, value);
        self
    }

    /// A number field, to three decimals (non-finite values are written as `null`).
    pub fn number(mut self, name: &str, value: f64) -> OutcomeLine {
        self.key(name);
        write_number(&mut self.json, value);
        self
    }

    /// An integer field.
    pub fn count(mut self, name: &str, value: u64) -> OutcomeLine {
        self.key(name);
        let _ = serde_json::to_writer(&mut self.json, &value);
        self
    }

    /// A boolean field.
    pub fn flag(mut self, name: &str, value: bool) -> OutcomeLine {
        self.key(name);
        self.json
            .extend_from_slice(if value { b"true" } else { b"false" });
        self
    }

    /// A list of strings.
    fn texts<'a>(mut self, name: &str, values: impl Iterator<Item = &'a str>) -> OutcomeLine {
        self.key(name);
        self.json.push(b'[');
        for (index, value) in values.enumerate() {
            if index > 0 {
                self.json.push(b',');
            }
            let _ = serde_json::to_writer(&mut self.json, value);
        }
        self.json.push(b']');
        self
    }

    /// Closes the record with `metrics` under the `Provider` dimension (and the
    /// aggregate), newline included. The `Provider` member is the line's provider field.
    pub fn with_provider_metrics(self, provider: &str, metrics: &[(&str, f64, &str)]) -> Vec<u8> {
        let metrics: Vec<Metric<'_>> = metrics
            .iter()
            .map(|&(name, value, unit)| Metric::one(name, value, unit))
            .collect();
        self.with_metrics(provider, &metrics)
    }

    fn with_metrics(mut self, provider: &str, metrics: &[Metric<'_>]) -> Vec<u8> {
        self.json.push(b',');
        write_emf_members(
            &mut self.json,
            self.now.unix_timestamp_nanos() / 1_000_000,
            &[("Provider", provider)],
            metrics,
        );
        self.json.extend_from_slice(b"}\n");
        self.json
    }

    /// Closes the record without metrics, stamped with an RFC 3339 `timestamp`, newline
    /// included.
    pub fn without_metrics(self) -> Vec<u8> {
        let stamp = self
            .now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut json = self.text("timestamp", &stamp).json;
        json.extend_from_slice(b"}\n");
        json
    }
}

/// A count metric's value for something that happened once, or not.
fn count_if(happened: bool) -> f64 {
    if happened { 1.0 } else { 0.0 }
}

/// Writes whole lines to stdout in one write (Lambda ships each line to CloudWatch Logs).
fn write_lines(lines: &[u8]) {
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(lines);
}

/// One webhook request's outcome line, with its metrics (none for an unknown provider).
///
/// By default this is all the ingress writes for a webhook, so it holds what on-call
/// reads and nothing twice: `Provider`, `result`, `status`, `event_id` (for a verified
/// delivery), `reason`, `cause` (an infrastructure failure's error chain),
/// `event_type` and `body_bytes` when there is something to explain, the endpoint when
/// the URL named one, the latency as the `IngressLatency` metric's value. A count metric is
/// written only when it counts something (a missing sample sums as zero; the signature
/// failure alarm treats missing data as not breaching): an accepted webhook carries
/// `WebhooksReceived`, `WebhooksAccepted` and `IngressLatency`. A realistic accepted
/// delivery's line is under 600 bytes
/// (`an_accepted_webhook_line_is_at_most_600_bytes`).
pub fn webhook_line(outcome: &Outcome, latency: Duration) -> Vec<u8> {
    let latency_ms = latency.as_secs_f64() * 1000.0;
    let verification_failure = outcome.is_verification_failure();
    let accepted = outcome.result == "accepted";
    let line = if verification_failure {
        OutcomeLine::new("WARN", "webhook rejected").flag("security", true)
    } else if outcome.status >= 500 {
        OutcomeLine::new("ERROR", "webhook failed")
    } else {
        OutcomeLine::new("INFO", "webhook handled")
    };
    let mut line = line.text("result", outcome.result);
    if let Some(endpoint) = &outcome.endpoint {
        line = line.text("endpoint", endpoint);
    }
    if let Some(reason) = outcome.reason {
        line = line.text("reason", reason);
    }
    line = line.count("status", u64::from(outcome.status));
    if let Some(cause) = &outcome.cause {
        line = line.text("cause", cause);
    }
    if !verification_failure && outcome.status < 500 {
        if let Some(event_id) = &outcome.event_id {
            line = line.text("event_id", event_id);
        }
        // The type is on the event's CloudEvent; a line that explains a refusal has it.
        if let Some(event_type) = outcome.event_type.as_ref().filter(|_| !accepted) {
            line = line.text("event_type", event_type);
        }
        if outcome.offloaded {
            line = line.flag("offloaded", true);
        }
        if outcome.secrets_refreshed {
            line = line.flag("secrets_refreshed", true);
        }
    }
    // The size explains a 413 or an offloaded body; an accepted one's is not news.
    if !accepted || outcome.offloaded {
        line = line.count("body_bytes", outcome.body_bytes as u64);
    }
    // Unknown providers are not a dimension: anyone can make up a path segment.
    if outcome.reason == Some("unknown_provider") {
        return line
            .text("Provider", &outcome.provider)
            .number("latency_ms", latency_ms)
            .without_metrics();
    }
    let mut metrics = vec![Metric::one("WebhooksReceived", 1.0, "Count")];
    if accepted {
        metrics.push(Metric::one("WebhooksAccepted", 1.0, "Count"));
    }
    if verification_failure {
        metrics.push(Metric::one("SignatureFailures", 1.0, "Count"));
    }
    if outcome.status >= 500 {
        metrics.push(Metric::one("IngressErrors", 1.0, "Count"));
    }
    metrics.push(Metric::one("IngressLatency", latency_ms, "Milliseconds"));
    line.with_metrics(&outcome.provider, &metrics)
}

/// Logs one webhook request's outcome with its metrics, in one line.
pub fn record_webhook(outcome: &Outcome, latency: Duration) {
    write_lines(&webhook_line(outcome, latency));
}

/// Logs a verified webhook's payload, already redacted (see [`crate::redact`]): only
/// when the operator turned payload logging on.
pub fn record_payload(outcome: &Outcome, redacted: &serde_json::Value) {
    tracing::info!(
        provider = %outcome.provider,
        event_id = outcome.event_id.as_deref().unwrap_or(""),
        payload = %redacted,
        "webhook payload (redacted)"
    );
}

/// Logs a consumer batch's outcomes with their metrics, in one write: for each provider
/// in the batch, one `events consumed` line naming the events processed and those
/// acknowledged as duplicates, with the batch's metrics ([`consumed_metrics_line`]);
/// for each message retried or failed, a line of its own with everything on-call needs
/// ([`consumed_line`]). With `RUST_LOG` at `debug` for `shared::telemetry`, processed
/// and duplicate messages get such a line too (connection, idempotency key, attempt,
/// latencies, record counts). The rarer warnings (a payload rendered in another API
/// version, fetches pending, a reused event id) are separate `tracing` lines.
pub fn record_consumed(outcomes: &[ItemOutcome]) {
    let every_message = every_consumed_message();
    for outcome in outcomes {
        warn_consumed(outcome);
    }
    write_lines(&consumed_lines(outcomes, every_message));
}

/// Whether `RUST_LOG` asks for a line per consumed message (`shared::telemetry=debug`).
fn every_consumed_message() -> bool {
    tracing::enabled!(tracing::Level::DEBUG)
}

/// What [`record_consumed`] writes: the metrics lines, then a line per message retried or
/// failed (per message, `every_message`).
pub fn consumed_lines(outcomes: &[ItemOutcome], every_message: bool) -> Vec<u8> {
    let mut lines = Vec::with_capacity(640 + 200 * outcomes.len());
    let mut providers: Vec<(&str, Vec<&ItemOutcome>)> = Vec::new();
    for outcome in outcomes {
        let provider = outcome.provider.as_deref().unwrap_or("unknown");
        match providers.iter_mut().find(|(name, _)| *name == provider) {
            Some((_, group)) => group.push(outcome),
            None => providers.push((provider, vec![outcome])),
        }
    }
    for (provider, group) in &providers {
        for chunk in group.chunks(EMF_MAX_VALUES) {
            lines.extend_from_slice(&consumed_metrics_line(provider, chunk));
        }
    }
    for outcome in outcomes {
        if every_message || outcome.keeps_message() {
            lines.extend_from_slice(&consumed_line(outcome));
        }
    }
    lines
}

/// One provider's messages of a batch (at most 100) as one line: `processed` and
/// `duplicate` list their event ids, and the metrics (dimension `Provider`) are the
/// batch's: `EventsProcessed`, `EventsDuplicate`, `EventsRetried` and `EventsFailed`
/// always, zero included (the success-rate alarm divides by their sum, and metric math
/// has no value for a period a metric has no sample in); then, only when they count
/// something, `EventsPublished`, `PayloadMismatches`, `ApiVersionMismatches`,
/// `FetchesPending`, `StaleUpdates`, `AlreadyCurrentRecords`, `RecordConflicts`,
/// `DeadLettered` (the last receive of a failing message: SQS moves it to the DLQ) and
/// `EndToEndLatency` (ms from receipt to the bus, one value per message that published
/// something, in EMF's array form so the percentiles stay per message; whole
/// milliseconds, as the ingress stamps receipt to the millisecond).
///
/// One line for a batch of 10 rather than a line of metrics per message: about a tenth
/// of the bytes CloudWatch Logs bills (`a_webhook_costs_at_most_600_bytes_of_log_lines`).
pub fn consumed_metrics_line(provider: &str, outcomes: &[&ItemOutcome]) -> Vec<u8> {
    let ids = |result: &'static str| {
        outcomes
            .iter()
            .filter(move |outcome| outcome.result == result)
            .map(|outcome| outcome.event_id.as_deref().unwrap_or(&outcome.message_id))
    };
    let mut line = OutcomeLine::new("INFO", "events consumed").texts("processed", ids("processed"));
    if ids("duplicate").next().is_some() {
        line = line.texts("duplicate", ids("duplicate"));
    }
    let count = |counted: fn(&ItemOutcome) -> bool| {
        outcomes.iter().filter(|outcome| counted(outcome)).count() as f64
    };
    let sum = |counted: fn(&ItemOutcome) -> usize| {
        outcomes
            .iter()
            .map(|outcome| counted(outcome))
            .sum::<usize>() as f64
    };
    let mut metrics = vec![
        Metric::one(
            "EventsProcessed",
            count(|o| o.result == "processed"),
            "Count",
        ),
        Metric::one(
            "EventsDuplicate",
            count(|o| o.result == "duplicate"),
            "Count",
        ),
        Metric::one("EventsRetried", count(|o| o.result == "retry"), "Count"),
        Metric::one("EventsFailed", count(|o| o.result == "failed"), "Count"),
    ];
    let rare = [
        ("EventsPublished", sum(|o| o.published)),
        ("PayloadMismatches", count(|o| o.payload_mismatch)),
        (
            "ApiVersionMismatches",
            count(|o| o.version_mismatch.is_some()),
        ),
        ("FetchesPending", sum(|o| o.fetches_pending)),
        ("StaleUpdates", sum(|o| o.stale)),
        ("AlreadyCurrentRecords", sum(|o| o.already_current)),
        ("RecordConflicts", sum(|o| o.conflicts)),
        ("DeadLettered", count(|o| o.dead_lettered)),
    ];
    metrics.extend(
        rare.into_iter()
            .filter(|(_, value)| *value > 0.0)
            .map(|(name, value)| Metric::one(name, value, "Count")),
    );
    // Only published events have a latency; a zero would pull the percentiles down.
    let end_to_end: Vec<f64> = outcomes
        .iter()
        .filter_map(|outcome| outcome.end_to_end)
        .map(|latency| (latency.as_secs_f64() * 1000.0).round())
        .collect();
    if !end_to_end.is_empty() {
        metrics.push(Metric {
            name: "EndToEndLatency",
            unit: "Milliseconds",
            values: MetricValues::Many(end_to_end),
        });
    }
    line.with_metrics(provider, &metrics)
}

fn warn_consumed(outcome: &ItemOutcome) {
    let provider = outcome.provider.as_deref().unwrap_or("unknown");
    let event_id = outcome.event_id.as_deref().unwrap_or("");
    if let Some((pinned, received)) = &outcome.version_mismatch {
        tracing::warn!(provider, event_id, pinned = %pinned, received = %received,
            "payload rendered with another API version than the pinned one; processed");
    }
    if outcome.fetches_pending > 0 {
        tracing::warn!(
            provider,
            event_id,
            fetches_pending = outcome.fetches_pending,
            "items only identify a resource to fetch; not published until the fetch stage exists"
        );
    }
    if outcome.payload_mismatch {
        tracing::warn!(provider, event_id, message_id = %outcome.message_id,
            "event id reused with a different payload; acknowledged as a duplicate");
    }
}

/// One consumed message's own line (its metrics are in its batch's
/// [`consumed_metrics_line`]): `Provider`, `connection` (when the message names one),
/// `event_id`, `idempotency_key`, `message_id`, `result`, `attempt`, `latency_ms`; for a
/// retry or a failure `reason`, `detail`, `dead_lettered` (and `retry_in_s`); otherwise
/// what was published and the record counts, and `end_to_end_ms`.
pub fn consumed_line(outcome: &ItemOutcome) -> Vec<u8> {
    let line = match outcome.result {
        "failed" => OutcomeLine::new("ERROR", "event failed permanently"),
        "retry" => OutcomeLine::new("WARN", "event will be retried"),
        _ => OutcomeLine::new("INFO", "event consumed"),
    };
    let mut line = line.text("Provider", outcome.provider.as_deref().unwrap_or("unknown"));
    if let Some(connection) = outcome.connection.as_deref().filter(|c| !c.is_empty()) {
        line = line.text("connection", connection);
    }
    line = line
        .text("event_id", outcome.event_id.as_deref().unwrap_or(""))
        .text(
            "idempotency_key",
            outcome.idempotency_key.as_deref().unwrap_or(""),
        )
        .text("message_id", &outcome.message_id)
        .text("result", outcome.result)
        .count("attempt", u64::from(outcome.attempt))
        .number("latency_ms", outcome.latency.as_secs_f64() * 1000.0);
    line = match outcome.result {
        "failed" => line
            .text("reason", outcome.reason.unwrap_or(""))
            .text("detail", outcome.detail.as_deref().unwrap_or(""))
            .flag("dead_lettered", outcome.dead_lettered),
        "retry" => line
            .text("reason", outcome.reason.unwrap_or(""))
            .text("detail", outcome.detail.as_deref().unwrap_or(""))
            .count(
                "retry_in_s",
                outcome.retry_in.map(|d| d.as_secs()).unwrap_or_default(),
            )
            .flag("dead_lettered", outcome.dead_lettered),
        _ => {
            let line = line
                .count("published", outcome.published as u64)
                .count("stale", outcome.stale as u64)
                .count("already_current", outcome.already_current as u64)
                .count("conflicts", outcome.conflicts as u64);
            match outcome.end_to_end {
                Some(latency) => line.number("end_to_end_ms", latency.as_secs_f64() * 1000.0),
                None => line,
            }
        }
    };
    line.without_metrics()
}

/// Prints one EMF line of `metrics` under the `Provider` dimension, stamped now.
fn print_provider_metrics(provider: &str, metrics: &[(&str, f64, &str)]) {
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    println!("{}", emf_line(now_ms, &[("Provider", provider)], metrics));
}

/// Logs one token refresh attempt and prints its metrics (dimension `Provider`):
/// `TokenRefreshes` for a stored new token, `TokenRefreshFailures` otherwise (the
/// `outcome` is `transient_failure`, `rejected` or `needs_reauth`).
pub fn record_token_refresh(provider: &str, outcome: &str) {
    let refreshed = outcome == "refreshed";
    tracing::info!(provider, outcome, "token refresh");
    print_provider_metrics(
        provider,
        &[
            ("TokenRefreshes", count_if(refreshed), "Count"),
            (
                "TokenRefreshFailures",
                if refreshed { 0.0 } else { 1.0 },
                "Count",
            ),
        ],
    );
}

/// Prints the metrics of one outbound call attempt (dimension `Provider`):
/// `OutboundCalls`, `OutboundErrors` (every failure but a 429), `Throttles` (429s and
/// rate-limit error bodies, counted apart from errors) and `OutboundLatency` (ms).
/// The structured log line is the caller's (it knows the connection and operation).
pub fn record_outbound_call(provider: &str, failure_class: Option<&str>, latency: Duration) {
    let throttled = failure_class == Some("rate_limited");
    let failed = failure_class.is_some() && !throttled;
    print_provider_metrics(
        provider,
        &[
            ("OutboundCalls", 1.0, "Count"),
            ("OutboundErrors", count_if(failed), "Count"),
            ("Throttles", count_if(throttled), "Count"),
            (
                "OutboundLatency",
                latency.as_secs_f64() * 1000.0,
                "Milliseconds",
            ),
        ],
    );
}

/// Logs one poll job run (one line: provider, connection, model, outcome, pages,
/// records, error) and prints its metrics (dimension `Provider`): `PollRuns`,
/// `PollFailures`, `RecordsPolled`.
pub fn record_poll_run(
    provider: &str,
    connection: &str,
    model: &str,
    outcome: &crate::polling::RunOutcome,
) {
    use crate::polling::RunOutcome;
    let (name, pages, records, error) = match outcome {
        RunOutcome::Done { pages, records } => ("done", *pages, *records, None),
        RunOutcome::Continue { pages, records } => ("continue", *pages, *records, None),
        RunOutcome::Busy => ("busy", 0, 0, None),
        RunOutcome::LostLease => ("lost_lease", 0, 0, None),
        RunOutcome::Requeue { .. } => ("requeued", 0, 0, None),
        RunOutcome::Failed { error } => ("failed", 0, 0, Some(error.as_str())),
        RunOutcome::Removed => ("removed", 0, 0, None),
    };
    if let Some(error) = error {
        tracing::warn!(
            provider,
            connection,
            model,
            outcome = name,
            error,
            "poll job ran"
        );
    } else {
        tracing::info!(
            provider,
            connection,
            model,
            outcome = name,
            pages,
            records,
            "poll job ran"
        );
    }
    print_provider_metrics(
        provider,
        &[
            ("PollRuns", 1.0, "Count"),
            ("PollFailures", count_if(error.is_some()), "Count"),
            ("RecordsPolled", records as f64, "Count"),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_document_has_the_cloudwatch_shape() {
        let line = emf_line(
            1_700_000_000_000,
            &[("Provider", "github")],
            &[("SignatureFailures", 1.0, "Count")],
        );
        let value: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(
            value["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "Junction"
        );
        assert_eq!(
            value["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([["Provider"], []]),
            "per provider, and the aggregate the alarms watch"
        );
        assert_eq!(
            value["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
            "SignatureFailures"
        );
        assert_eq!(value["Provider"], "github");
        assert_eq!(value["SignatureFailures"], 1.0);
        assert_eq!(value["_aws"]["Timestamp"], 1_700_000_000_000_i64);
        assert!(
            line.contains(r#""SignatureFailures":1}"#),
            "a count as a whole number: {line}"
        );
    }

    fn webhook_outcome(status: u16, result: &'static str, reason: Option<&'static str>) -> Outcome {
        Outcome {
            provider: "github".into(),
            endpoint: None,
            result,
            reason,
            status,
            event_id: Some("delivery-1".into()),
            event_type: Some("push".into()),
            offloaded: false,
            secrets_refreshed: false,
            body_bytes: 42,
            cause: None,
        }
    }

    /// An SDK error says "service error" at the top; the chain carries the code.
    #[test]
    fn an_error_chain_names_every_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("could not send to the queue")]
        struct Outer(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("service error")]
        struct Inner(#[source] std::io::Error);
        let err = Outer(Inner(std::io::Error::other("AccessDenied: not authorized")));
        assert_eq!(
            error_chain(&err),
            "could not send to the queue: service error: AccessDenied: not authorized"
        );
    }

    #[test]
    fn a_failed_webhook_line_carries_its_cause() {
        let mut outcome = webhook_outcome(503, "failed", Some("enqueue_failed"));
        outcome.cause = Some("AccessDenied: not authorized".into());
        let line = parse(&webhook_line(&outcome, Duration::from_millis(3)));
        assert_eq!(line["cause"], "AccessDenied: not authorized");
        assert_eq!(line["reason"], "enqueue_failed");
    }

    fn parse(line: &[u8]) -> serde_json::Value {
        assert_eq!(line.last(), Some(&b'\n'), "one whole line");
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        serde_json::from_slice(line).expect("json")
    }

    #[test]
    fn a_webhook_outcome_is_one_line_with_its_log_fields_and_its_metrics() {
        let before = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
        let line = parse(&webhook_line(
            &webhook_outcome(200, "accepted", None),
            Duration::from_micros(1500),
        ));
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "webhook handled");
        assert_eq!(line["result"], "accepted");
        assert_eq!(line["Provider"], "github");
        assert_eq!(line["event_id"], "delivery-1");
        assert_eq!(line["status"], 200);
        assert!(line.get("offloaded").is_none(), "written when true");
        assert_eq!(line["IngressLatency"], 1.5, "the latency, once");
        // The time, once: the directive's epoch milliseconds.
        let stamp = line["_aws"]["Timestamp"].as_i64().expect("Timestamp");
        assert!((before..before + 60_000).contains(&stamp), "{stamp}");
        for duplicate in [
            "provider",
            "latency_ms",
            "timestamp",
            "reason",
            "endpoint",
            "event_type",
        ] {
            assert!(line.get(duplicate).is_none(), "{duplicate}: {line}");
        }
        // The EMF part: the directive, the dimension and every metric's value.
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "Junction"
        );
        assert_eq!(line["Provider"], "github");
        assert_eq!(line["WebhooksReceived"], 1.0);
        assert_eq!(line["WebhooksAccepted"], 1.0);
        assert!(line.get("SignatureFailures").is_none());
        assert_eq!(line["IngressLatency"], 1.5);
        let names: Vec<&str> = line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .expect("metrics")
            .iter()
            .filter_map(|m| m["Name"].as_str())
            .collect();
        for name in &names {
            assert!(line[*name].is_number(), "{name} has a value");
        }
        assert_eq!(
            names,
            ["WebhooksReceived", "WebhooksAccepted", "IngressLatency"],
            "counts of nothing are not written"
        );

        let mut offloaded = webhook_outcome(200, "accepted", None);
        offloaded.offloaded = true;
        offloaded.endpoint = Some("eu".into());
        let line = parse(&webhook_line(&offloaded, Duration::ZERO));
        assert_eq!(
            (&line["offloaded"], &line["body_bytes"], &line["endpoint"]),
            (
                &serde_json::json!(true),
                &serde_json::json!(42),
                &serde_json::json!("eu")
            )
        );
    }

    /// A GitHub delivery as the ingress logs it by default: what a webhook costs in
    /// CloudWatch Logs (issue: at most 600 bytes, the EMF kept).
    fn github_delivery() -> Outcome {
        let mut outcome = webhook_outcome(200, "accepted", None);
        // GitHub's X-GitHub-Delivery is a GUID; the longest common event type.
        outcome.event_id = Some("8595292d-e125-4c74-a76d-2e2c600c63b4".into());
        outcome.event_type = Some("pull_request_review_comment".into());
        outcome.body_bytes = 7_312;
        outcome
    }

    #[test]
    fn an_accepted_webhook_line_is_at_most_600_bytes() {
        let line = webhook_line(&github_delivery(), Duration::from_micros(412_345));
        assert!(
            line.len() <= 600,
            "{} bytes: {}",
            line.len(),
            String::from_utf8_lossy(&line)
        );
        // What on-call reads is all there.
        let value = parse(&line);
        for field in ["Provider", "result", "status", "event_id", "IngressLatency"] {
            assert!(value.get(field).is_some(), "{field}");
        }
    }

    #[test]
    fn a_signature_failure_is_a_security_warning_and_an_unknown_provider_no_metric() {
        let rejected = parse(&webhook_line(
            &webhook_outcome(401, "rejected", Some("signature_mismatch")),
            Duration::ZERO,
        ));
        assert_eq!(rejected["level"], "WARN");
        assert_eq!(rejected["security"], true);
        assert_eq!(rejected["reason"], "signature_mismatch");
        assert_eq!(rejected["SignatureFailures"], 1.0);
        assert_eq!(rejected["body_bytes"], 42);
        assert!(rejected.get("event_id").is_none());
        assert!(rejected.get("WebhooksAccepted").is_none());

        let failed = parse(&webhook_line(
            &webhook_outcome(503, "failed", Some("enqueue_failed")),
            Duration::ZERO,
        ));
        assert_eq!(
            (&failed["level"], &failed["IngressErrors"]),
            (&serde_json::json!("ERROR"), &serde_json::json!(1))
        );

        let mut unknown = webhook_outcome(404, "rejected", Some("unknown_provider"));
        unknown.provider = "made-up".into();
        let unknown = parse(&webhook_line(&unknown, Duration::from_micros(250)));
        assert_eq!(unknown["status"], 404);
        assert_eq!(unknown["Provider"], "made-up");
        assert_eq!(unknown["latency_ms"], 0.25);
        assert!(unknown.get("_aws").is_none(), "not a dimension");
        assert!(
            time::OffsetDateTime::parse(
                unknown["timestamp"].as_str().expect("timestamp"),
                &time::format_description::well_known::Rfc3339
            )
            .is_ok(),
            "a line without metrics has its time"
        );
    }

    fn consumed(result: &'static str, event_id: &str) -> ItemOutcome {
        ItemOutcome {
            message_id: format!("m-{event_id}"),
            provider: Some("stripe".into()),
            event_id: Some(event_id.into()),
            result,
            reason: None,
            published: 0,
            payload_mismatch: false,
            retry_in: None,
            detail: None,
            version_mismatch: None,
            fetches_pending: 0,
            stale: 0,
            conflicts: 0,
            already_current: 0,
            end_to_end: None,
            dead_lettered: false,
            connection: None,
            idempotency_key: Some(format!("stripe#{event_id}")),
            attempt: 1,
            latency: Duration::from_millis(3),
        }
    }

    fn lines(bytes: &[u8]) -> Vec<serde_json::Value> {
        assert_eq!(bytes.last(), Some(&b'\n'), "whole lines");
        bytes
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_slice(line).expect("json"))
            .collect()
    }

    #[test]
    fn a_consumed_message_line_carries_connection_key_attempt_and_metrics() {
        let mut outcome = consumed("retry", "evt_1");
        outcome.message_id = "m-1".into();
        outcome.reason = Some("bus_unavailable");
        outcome.retry_in = Some(Duration::from_secs(30));
        outcome.detail = Some("could not publish: service error: AccessDeniedException".into());
        outcome.connection = Some("conn-1".into());
        outcome.attempt = 2;
        let written = lines(&consumed_lines(&[outcome], false));
        assert_eq!(written.len(), 2, "{written:?}");
        let (metrics, line) = (&written[0], &written[1]);
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "event will be retried");
        assert_eq!(line["Provider"], "stripe");
        assert_eq!(line["connection"], "conn-1");
        assert_eq!(line["idempotency_key"], "stripe#evt_1");
        assert_eq!(line["message_id"], "m-1");
        assert_eq!(line["attempt"], 2);
        assert_eq!(line["retry_in_s"], 30);
        // On-call sees why a retry happened, not only that it did.
        assert_eq!(
            line["detail"],
            "could not publish: service error: AccessDeniedException"
        );
        assert_eq!(line["latency_ms"], 3.0);
        // Its metrics are its batch's.
        assert_eq!(metrics["message"], "events consumed");
        assert_eq!(metrics["EventsRetried"], 1.0);
        assert_eq!(metrics["Provider"], "stripe");
        assert!(
            metrics.get("EndToEndLatency").is_none(),
            "nothing was published"
        );
    }

    #[test]
    fn a_batch_is_one_metrics_line_per_provider_listing_its_events() {
        let mut outcomes: Vec<ItemOutcome> = (0..8)
            .map(|n| {
                let mut outcome = consumed("processed", &format!("evt_{n}"));
                outcome.published = 1;
                outcome.end_to_end = Some(Duration::from_micros(40_000 + n * 1_400));
                outcome
            })
            .collect();
        outcomes.push(consumed("duplicate", "evt_dup"));
        let mut github = consumed("failed", "delivery-1");
        github.provider = Some("github".into());
        github.reason = Some("unmappable_payload");
        github.dead_lettered = true;
        outcomes.push(github);

        let written = lines(&consumed_lines(&outcomes, false));
        assert_eq!(
            written.len(),
            3,
            "a line per provider, and the failure's: {written:?}"
        );
        let stripe = &written[0];
        assert_eq!(stripe["Provider"], "stripe");
        assert_eq!(
            stripe["processed"],
            serde_json::json!([
                "evt_0", "evt_1", "evt_2", "evt_3", "evt_4", "evt_5", "evt_6", "evt_7"
            ])
        );
        assert_eq!(stripe["duplicate"], serde_json::json!(["evt_dup"]));
        assert_eq!(
            (
                &stripe["EventsProcessed"],
                &stripe["EventsDuplicate"],
                &stripe["EventsPublished"]
            ),
            (
                &serde_json::json!(8),
                &serde_json::json!(1),
                &serde_json::json!(8)
            )
        );
        assert_eq!(
            stripe["EndToEndLatency"],
            serde_json::json!([40, 41, 43, 44, 46, 47, 48, 50]),
            "one sample per published message, whole milliseconds"
        );
        for absent in [
            "StaleUpdates",
            "RecordConflicts",
            "DeadLettered",
            "PayloadMismatches",
        ] {
            assert!(
                stripe.get(absent).is_none(),
                "{absent}: counts of nothing are not written"
            );
        }
        let gh = &written[1];
        assert_eq!(
            (&gh["Provider"], &gh["EventsFailed"], &gh["DeadLettered"]),
            (
                &serde_json::json!("github"),
                &serde_json::json!(1),
                &serde_json::json!(1)
            )
        );
        assert_eq!(gh["processed"], serde_json::json!([]));
        assert_eq!(written[2]["message"], "event failed permanently");
        assert_eq!(written[2]["reason"], "unmappable_payload");

        // Every message's own line, on demand (RUST_LOG=shared::telemetry=debug).
        let every = lines(&consumed_lines(&outcomes, true));
        assert_eq!(every.len(), 2 + outcomes.len());
        assert_eq!(every[2]["message"], "event consumed");
        assert_eq!(every[2]["end_to_end_ms"], 40.0);
    }

    #[test]
    fn rust_log_at_debug_for_telemetry_asks_for_every_consumed_message() {
        let with = |directives: &str| {
            let targets = directives
                .parse::<tracing_subscriber::filter::Targets>()
                .expect("directives");
            let subscriber = json_subscriber(targets, std::io::sink);
            tracing::subscriber::with_default(subscriber, every_consumed_message)
        };
        assert!(!with("info"));
        assert!(!with("info,shared::webhooks=debug"));
        assert!(with("info,shared::telemetry=debug"));
    }

    /// The template's success-rate alarm and dashboard divide by the sum of these four
    /// (metric math yields nothing for a period one of them has no sample in), and its
    /// other alarms and widgets name these metrics: every metrics line has the four, zero
    /// included, and the names are the ones template.yaml uses.
    #[test]
    fn every_consumer_metrics_line_has_the_success_rate_metrics() {
        let template = include_str!("../../template.yaml");
        for result in ["processed", "duplicate", "retry", "failed"] {
            let line = &lines(&consumed_lines(&[consumed(result, "evt_1")], false))[0];
            let names: Vec<&str> = line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .expect("metrics")
                .iter()
                .filter_map(|m| m["Name"].as_str())
                .collect();
            for name in [
                "EventsProcessed",
                "EventsDuplicate",
                "EventsRetried",
                "EventsFailed",
            ] {
                assert!(names.contains(&name), "{result}: {name}");
                assert!(line[name].is_number(), "{result}: {name}");
                assert!(template.contains(&format!("MetricName: {name}")), "{name}");
            }
            assert_eq!(
                line["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
                serde_json::json!([["Provider"], []])
            );
        }
        for name in [
            "EndToEndLatency",
            "DeadLettered",
            "SignatureFailures",
            "WebhooksReceived",
        ] {
            assert!(template.contains(name), "{name}");
        }
    }

    /// The issue's goal: at most 600 bytes of log lines per webhook by default, the
    /// metrics kept. A webhook is the ingress's line and its share of the consumer's
    /// batch of 10 (the template's batch size). Lambda's own START, END and REPORT lines
    /// are not ours and not counted.
    #[test]
    fn a_webhook_costs_at_most_600_bytes_of_log_lines() {
        let ingress = webhook_line(&github_delivery(), Duration::from_micros(412_345));
        let batch: Vec<ItemOutcome> = (0..10)
            .map(|n| {
                let mut outcome = consumed("processed", "8595292d-e125-4c74-a76d-2e2c600c63b4");
                outcome.provider = Some("github".into());
                outcome.event_id = Some(format!("8595292d-e125-4c74-a76d-2e2c600c63b{n}"));
                outcome.published = 1;
                outcome.end_to_end = Some(Duration::from_millis(1_234 + n));
                outcome
            })
            .collect();
        let consumer = consumed_lines(&batch, false);
        let per_webhook = ingress.len() + consumer.len().div_ceil(batch.len());
        println!(
            "log bytes per webhook: {per_webhook} (ingress {}, consumer {} a batch of 10)",
            ingress.len(),
            consumer.len()
        );
        assert!(
            per_webhook <= 600,
            "{per_webhook} bytes: ingress {} + consumer {} / 10",
            ingress.len(),
            consumer.len()
        );
    }

    #[test]
    fn emf_document_escapes_dimension_values_and_writes_every_metric() {
        let line = emf_line(
            1,
            &[("Provider", "acme \"quoted\" \\ \u{7f} ü")],
            &[
                ("WebhooksReceived", 1.0, "Count"),
                ("IngressLatency", 0.25, "Milliseconds"),
                ("Broken", f64::NAN, "Count"),
            ],
        );
        let value: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(value["Provider"], "acme \"quoted\" \\ \u{7f} ü");
        assert_eq!(value["WebhooksReceived"], 1.0);
        assert_eq!(value["IngressLatency"], 0.25);
        assert_eq!(value["Broken"], serde_json::Value::Null);
        let definitions = &value["_aws"]["CloudWatchMetrics"][0]["Metrics"];
        assert_eq!(
            definitions,
            &serde_json::json!([
                {"Name": "WebhooksReceived", "Unit": "Count"},
                {"Name": "IngressLatency", "Unit": "Milliseconds"},
                {"Name": "Broken", "Unit": "Count"},
            ])
        );
    }
}
