//! Logs and metrics: one JSON line per event outcome on stdout that is both the log
//! record and, in CloudWatch Embedded Metric Format, the event's metrics ([`OutcomeLine`]);
//! Lambda ships it to CloudWatch Logs and CloudWatch turns it into metrics without an
//! API call per event. Other log lines go through `tracing` (JSON); the rarer metrics
//! (outbound calls, token refreshes, poll runs) are EMF lines of their own.
//!
//! Metrics namespace: `Junction`. Every metric is published twice: with the dimension
//! `Provider`, and without dimensions (the all-provider aggregate alarms use). Webhook
//! metrics:
//! `WebhooksReceived` (every request that named a known provider), `WebhooksAccepted`,
//! `SignatureFailures` (401s, the security signal), `IngressErrors` (5xx) and
//! `IngressLatency` (milliseconds).

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
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_ansi(false)
        .finish()
        .with(filter)
        .init();
    if let (Some(value), Some(Err(err))) = (configured, parsed) {
        tracing::warn!(rust_log = %value, error = %err, "RUST_LOG not understood; logging at info");
    }
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
    let mut line = Vec::with_capacity(160 + 64 * metrics.len());
    line.push(b'{');
    write_emf_members(&mut line, timestamp_ms, dimensions, metrics);
    line.push(b'}');
    // Only `serde_json` output and ASCII literals went in.
    String::from_utf8(line).unwrap_or_default()
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
    metrics: &[(&str, f64, &str)],
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
    for (index, (name, _, unit)) in metrics.iter().enumerate() {
        if index > 0 {
            line.push(b',');
        }
        line.extend_from_slice(b"{\"Name\":");
        let _ = serde_json::to_writer(&mut *line, name);
        line.extend_from_slice(b",\"Unit\":");
        let _ = serde_json::to_writer(&mut *line, unit);
        line.push(b'}');
    }
    line.extend_from_slice(b"]}]}");
    for (name, value) in dimensions {
        line.push(b',');
        let _ = serde_json::to_writer(&mut *line, name);
        line.push(b':');
        let _ = serde_json::to_writer(&mut *line, value);
    }
    for (name, value, _) in metrics {
        line.push(b',');
        let _ = serde_json::to_writer(&mut *line, name);
        line.push(b':');
        // Non-finite values become `null`, as `serde_json` writes them.
        let _ = serde_json::to_writer(&mut *line, value);
    }
}

/// An event's outcome as one JSON line: the log record (the fields the `tracing` JSON
/// lines have: `timestamp`, `level`, `message`, then the event's fields) and, in the same
/// object, the event's metrics in CloudWatch Embedded Metric Format.
///
/// One line and one write per event, where a log line and a separate metrics line took
/// two writes (each waking Lambda's log reader) and the `tracing` formatter: the ingress
/// spent about a tenth of its warm CPU there (infra/bench). CloudWatch takes the metrics
/// from the `_aws` directive and keeps the other members as log fields. Because the line
/// carries metrics, it is written whatever the `RUST_LOG` level.
#[derive(Debug)]
pub struct OutcomeLine {
    json: Vec<u8>,
    timestamp_ms: i128,
}

impl OutcomeLine {
    /// A record at `level` (`INFO`, `WARN` or `ERROR`) saying `message`, stamped now.
    pub fn new(level: &str, message: &str) -> OutcomeLine {
        let now = time::OffsetDateTime::now_utc();
        let mut json = Vec::with_capacity(1024);
        json.extend_from_slice(b"{\"timestamp\":");
        let stamp = now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let _ = serde_json::to_writer(&mut json, &stamp);
        json.extend_from_slice(b",\"level\":");
        let _ = serde_json::to_writer(&mut json, level);
        json.extend_from_slice(b",\"message\":");
        let _ = serde_json::to_writer(&mut json, message);
        OutcomeLine {
            json,
            timestamp_ms: now.unix_timestamp_nanos() / 1_000_000,
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

    /// A number field (non-finite values are written as `null`).
    pub fn number(mut self, name: &str, value: f64) -> OutcomeLine {
        self.key(name);
        let _ = serde_json::to_writer(&mut self.json, &value);
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

    /// Closes the record with `metrics` under the `Provider` dimension (and the
    /// aggregate), newline included.
    pub fn with_provider_metrics(
        mut self,
        provider: &str,
        metrics: &[(&str, f64, &str)],
    ) -> Vec<u8> {
        self.json.push(b',');
        write_emf_members(
            &mut self.json,
            self.timestamp_ms,
            &[("Provider", provider)],
            metrics,
        );
        self.json.extend_from_slice(b"}\n");
        self.json
    }

    /// Closes the record without metrics, newline included.
    pub fn without_metrics(mut self) -> Vec<u8> {
        self.json.extend_from_slice(b"}\n");
        self.json
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
pub fn webhook_line(outcome: &Outcome, latency: Duration) -> Vec<u8> {
    let latency_ms = latency.as_secs_f64() * 1000.0;
    let line = if outcome.is_verification_failure() {
        OutcomeLine::new("WARN", "webhook rejected").flag("security", true)
    } else if outcome.status >= 500 {
        OutcomeLine::new("ERROR", "webhook failed")
    } else {
        OutcomeLine::new("INFO", "webhook handled")
    };
    let mut line = line
        .text("provider", &outcome.provider)
        .text("endpoint", outcome.endpoint.as_deref().unwrap_or(""))
        .text("result", outcome.result)
        .text("reason", outcome.reason.unwrap_or(""))
        .count("status", u64::from(outcome.status));
    if let Some(cause) = &outcome.cause {
        line = line.text("cause", cause);
    }
    if !outcome.is_verification_failure() && outcome.status < 500 {
        line = line
            .text("event_id", outcome.event_id.as_deref().unwrap_or(""))
            .text("event_type", outcome.event_type.as_deref().unwrap_or(""))
            .flag("offloaded", outcome.offloaded)
            .flag("secrets_refreshed", outcome.secrets_refreshed);
    }
    let line = line
        .number("latency_ms", latency_ms)
        .count("body_bytes", outcome.body_bytes as u64);
    // Unknown providers are not a dimension: anyone can make up a path segment.
    if outcome.reason == Some("unknown_provider") {
        return line.without_metrics();
    }
    line.with_provider_metrics(
        &outcome.provider,
        &[
            ("WebhooksReceived", 1.0, "Count"),
            (
                "WebhooksAccepted",
                count_if(outcome.result == "accepted"),
                "Count",
            ),
            (
                "SignatureFailures",
                count_if(outcome.is_verification_failure()),
                "Count",
            ),
            ("IngressErrors", count_if(outcome.status >= 500), "Count"),
            ("IngressLatency", latency_ms, "Milliseconds"),
        ],
    )
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

/// Logs each consumed message's outcome with its metrics, one line per message and one
/// write per batch: `EventsProcessed`, `EventsDuplicate`, `EventsRetried`,
/// `EventsFailed` (permanent failures), `DeadLettered` (the last receive of a failing
/// message: SQS moves it to the DLQ), `PayloadMismatches`, `EventsPublished`,
/// `EndToEndLatency` (ms from receipt to the bus, when something was published),
/// `ApiVersionMismatches`, `FetchesPending`, `StaleUpdates`, `AlreadyCurrentRecords`
/// and `RecordConflicts`. The rarer warnings (a payload rendered in another API version,
/// fetches pending, a reused event id) are separate `tracing` lines.
pub fn record_consumed(outcomes: &[ItemOutcome]) {
    let mut lines = Vec::with_capacity(1536 * outcomes.len());
    for outcome in outcomes {
        warn_consumed(outcome);
        lines.extend_from_slice(&consumed_line(outcome));
    }
    write_lines(&lines);
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

/// One consumed message's outcome line, with its metrics.
pub fn consumed_line(outcome: &ItemOutcome) -> Vec<u8> {
    let provider = outcome.provider.as_deref().unwrap_or("unknown");
    let end_to_end_ms = outcome.end_to_end.map(|d| d.as_secs_f64() * 1000.0);
    let line = match outcome.result {
        "failed" => OutcomeLine::new("ERROR", "event failed permanently"),
        "retry" => OutcomeLine::new("WARN", "event will be retried"),
        _ => OutcomeLine::new("INFO", "event consumed"),
    };
    let mut line = line
        .text("provider", provider)
        .text("connection", outcome.connection.as_deref().unwrap_or(""))
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
            match end_to_end_ms {
                Some(ms) => line.number("end_to_end_ms", ms),
                None => line,
            }
        }
    };
    let mut metrics = vec![
        (
            "EventsProcessed",
            count_if(outcome.result == "processed"),
            "Count",
        ),
        (
            "EventsDuplicate",
            count_if(outcome.result == "duplicate"),
            "Count",
        ),
        (
            "EventsRetried",
            count_if(outcome.result == "retry"),
            "Count",
        ),
        (
            "EventsFailed",
            count_if(outcome.result == "failed"),
            "Count",
        ),
        (
            "PayloadMismatches",
            count_if(outcome.payload_mismatch),
            "Count",
        ),
        ("EventsPublished", outcome.published as f64, "Count"),
        (
            "ApiVersionMismatches",
            count_if(outcome.version_mismatch.is_some()),
            "Count",
        ),
        ("FetchesPending", outcome.fetches_pending as f64, "Count"),
        ("StaleUpdates", outcome.stale as f64, "Count"),
        (
            "AlreadyCurrentRecords",
            outcome.already_current as f64,
            "Count",
        ),
        ("RecordConflicts", outcome.conflicts as f64, "Count"),
        ("DeadLettered", count_if(outcome.dead_lettered), "Count"),
    ];
    // Only published events have a latency; a zero would pull the percentiles down.
    if let Some(ms) = end_to_end_ms {
        metrics.push(("EndToEndLatency", ms, "Milliseconds"));
    }
    line.with_provider_metrics(provider, &metrics)
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
        let line = parse(&webhook_line(
            &webhook_outcome(200, "accepted", None),
            Duration::from_micros(1500),
        ));
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "webhook handled");
        assert_eq!(line["provider"], "github");
        assert_eq!(line["event_id"], "delivery-1");
        assert_eq!(line["status"], 200);
        assert_eq!(line["offloaded"], false);
        assert_eq!(line["latency_ms"], 1.5);
        assert!(
            time::OffsetDateTime::parse(
                line["timestamp"].as_str().expect("timestamp"),
                &time::format_description::well_known::Rfc3339
            )
            .is_ok()
        );
        // The EMF part: the directive, the dimension and every metric's value.
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Namespace"],
            "Junction"
        );
        assert_eq!(line["Provider"], "github");
        assert_eq!(line["WebhooksReceived"], 1.0);
        assert_eq!(line["WebhooksAccepted"], 1.0);
        assert_eq!(line["SignatureFailures"], 0.0);
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
        assert_eq!(names.len(), 5);
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
        assert!(rejected.get("event_id").is_none());

        let mut unknown = webhook_outcome(404, "rejected", Some("unknown_provider"));
        unknown.provider = "made-up".into();
        let unknown = parse(&webhook_line(&unknown, Duration::ZERO));
        assert_eq!(unknown["status"], 404);
        assert!(unknown.get("_aws").is_none(), "not a dimension");
    }

    #[test]
    fn a_consumed_message_line_carries_connection_key_attempt_and_metrics() {
        let outcome = ItemOutcome {
            message_id: "m-1".into(),
            provider: Some("stripe".into()),
            event_id: Some("evt_1".into()),
            result: "retry",
            reason: Some("bus_unavailable"),
            published: 0,
            payload_mismatch: false,
            retry_in: Some(Duration::from_secs(30)),
            detail: Some("could not publish: service error: AccessDeniedException".into()),
            version_mismatch: None,
            fetches_pending: 0,
            stale: 0,
            conflicts: 0,
            already_current: 0,
            end_to_end: None,
            dead_lettered: false,
            connection: Some("conn-1".into()),
            idempotency_key: Some("stripe#evt_1".into()),
            attempt: 2,
            latency: Duration::from_millis(3),
        };
        let line = parse(&consumed_line(&outcome));
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["message"], "event will be retried");
        assert_eq!(line["connection"], "conn-1");
        assert_eq!(line["idempotency_key"], "stripe#evt_1");
        assert_eq!(line["attempt"], 2);
        assert_eq!(line["retry_in_s"], 30);
        // On-call sees why a retry happened, not only that it did.
        assert_eq!(
            line["detail"],
            "could not publish: service error: AccessDeniedException"
        );
        assert_eq!(line["latency_ms"], 3.0);
        assert_eq!(line["EventsRetried"], 1.0);
        assert_eq!(line["Provider"], "stripe");
        assert!(
            line.get("EndToEndLatency").is_none(),
            "nothing was published"
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
