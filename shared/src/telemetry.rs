//! Logs and metrics: one JSON log line per event outcome (via `tracing`), and metrics as
//! CloudWatch Embedded Metric Format lines on stdout, which Lambda ships to CloudWatch
//! Logs and CloudWatch turns into metrics without an API call per event.
//!
//! Metrics namespace: `Junction`. Every metric is published twice: with the dimension
//! `Provider`, and without dimensions (the all-provider aggregate alarms use). Webhook
//! metrics:
//! `WebhooksReceived` (every request that named a known provider), `WebhooksAccepted`,
//! `SignatureFailures` (401s, the security signal), `IngressErrors` (5xx) and
//! `IngressLatency` (milliseconds).

use std::time::Duration;

use serde_json::json;
use tracing_subscriber::{layer::SubscriberExt as _, util::SubscriberInitExt as _};

use crate::{consumer::ItemOutcome, webhooks::Outcome};

/// The CloudWatch namespace of every Junction metric.
pub const NAMESPACE: &str = "Junction";

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
    let mut document = serde_json::Map::new();
    let dimension_names: Vec<&str> = dimensions.iter().map(|(name, _)| *name).collect();
    let definitions: Vec<_> = metrics
        .iter()
        .map(|(name, _, unit)| json!({ "Name": name, "Unit": unit }))
        .collect();
    document.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [dimension_names, []],
                "Metrics": definitions,
            }]
        }),
    );
    for (name, value) in dimensions {
        document.insert((*name).into(), json!(value));
    }
    for (name, value, _) in metrics {
        document.insert((*name).into(), json!(value));
    }
    serde_json::Value::Object(document).to_string()
}

/// Logs one webhook request's outcome and prints its metrics.
pub fn record_webhook(outcome: &Outcome, latency: Duration) {
    let latency_ms = latency.as_secs_f64() * 1000.0;
    let endpoint = outcome.endpoint.as_deref().unwrap_or("");
    let reason = outcome.reason.unwrap_or("");
    let event_id = outcome.event_id.as_deref().unwrap_or("");
    let event_type = outcome.event_type.as_deref().unwrap_or("");
    if outcome.is_verification_failure() {
        tracing::warn!(
            security = true,
            provider = %outcome.provider, endpoint, result = outcome.result, reason,
            status = outcome.status, latency_ms, body_bytes = outcome.body_bytes,
            "webhook rejected"
        );
    } else if outcome.status >= 500 {
        tracing::error!(
            provider = %outcome.provider, endpoint, result = outcome.result, reason,
            status = outcome.status, latency_ms, body_bytes = outcome.body_bytes,
            "webhook failed"
        );
    } else {
        tracing::info!(
            provider = %outcome.provider, endpoint, result = outcome.result, reason,
            status = outcome.status, event_id, event_type, offloaded = outcome.offloaded,
            secrets_refreshed = outcome.secrets_refreshed, latency_ms,
            body_bytes = outcome.body_bytes,
            "webhook handled"
        );
    }
    // Unknown providers are not a dimension: anyone can make up a path segment.
    if outcome.reason == Some("unknown_provider") {
        return;
    }
    let flag = |condition: bool| if condition { 1.0 } else { 0.0 };
    print_provider_metrics(
        &outcome.provider,
        &[
            ("WebhooksReceived", 1.0, "Count"),
            (
                "WebhooksAccepted",
                flag(outcome.result == "accepted"),
                "Count",
            ),
            (
                "SignatureFailures",
                flag(outcome.is_verification_failure()),
                "Count",
            ),
            ("IngressErrors", flag(outcome.status >= 500), "Count"),
            ("IngressLatency", latency_ms, "Milliseconds"),
        ],
    );
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

/// Logs one consumed message's outcome and prints its metrics: `EventsProcessed`,
/// `EventsDuplicate`, `EventsRetried`, `EventsFailed` (permanent failures),
/// `DeadLettered` (the last receive of a failing message: SQS moves it to the DLQ),
/// `PayloadMismatches`, `EventsPublished`, `EndToEndLatency` (ms from receipt to the
/// bus, when something was published), `ApiVersionMismatches`, `FetchesPending`,
/// `StaleUpdates`, `AlreadyCurrentRecords` and `RecordConflicts`.
pub fn record_consumed(outcome: &ItemOutcome) {
    let provider = outcome.provider.as_deref().unwrap_or("unknown");
    let event_id = outcome.event_id.as_deref().unwrap_or("");
    let reason = outcome.reason.unwrap_or("");
    let retry_in_s = outcome.retry_in.map(|d| d.as_secs()).unwrap_or_default();
    let detail = outcome.detail.as_deref().unwrap_or("");
    let end_to_end_ms = outcome.end_to_end.map(|d| d.as_secs_f64() * 1000.0);
    let connection = outcome.connection.as_deref().unwrap_or("");
    let idempotency_key = outcome.idempotency_key.as_deref().unwrap_or("");
    let attempt = outcome.attempt;
    let latency_ms = outcome.latency.as_secs_f64() * 1000.0;
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
    match outcome.result {
        "failed" => tracing::error!(provider, connection, event_id, idempotency_key,
            message_id = %outcome.message_id, result = outcome.result, reason, detail,
            attempt, latency_ms, dead_lettered = outcome.dead_lettered,
            "event failed permanently"),
        "retry" => tracing::warn!(provider, connection, event_id, idempotency_key,
            message_id = %outcome.message_id, result = outcome.result, reason, retry_in_s,
            attempt, latency_ms, dead_lettered = outcome.dead_lettered,
            "event will be retried"),
        _ => tracing::info!(provider, connection, event_id, idempotency_key,
            message_id = %outcome.message_id, result = outcome.result, attempt, latency_ms,
            published = outcome.published, stale = outcome.stale,
            already_current = outcome.already_current, conflicts = outcome.conflicts,
            end_to_end_ms, "event consumed"),
    }
    let flag = |condition: bool| if condition { 1.0 } else { 0.0 };
    let mut metrics = vec![
        (
            "EventsProcessed",
            flag(outcome.result == "processed"),
            "Count",
        ),
        (
            "EventsDuplicate",
            flag(outcome.result == "duplicate"),
            "Count",
        ),
        ("EventsRetried", flag(outcome.result == "retry"), "Count"),
        ("EventsFailed", flag(outcome.result == "failed"), "Count"),
        ("PayloadMismatches", flag(outcome.payload_mismatch), "Count"),
        ("EventsPublished", outcome.published as f64, "Count"),
        (
            "ApiVersionMismatches",
            flag(outcome.version_mismatch.is_some()),
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
        ("DeadLettered", flag(outcome.dead_lettered), "Count"),
    ];
    // Only published events have a latency; a zero would pull the percentiles down.
    if let Some(ms) = end_to_end_ms {
        metrics.push(("EndToEndLatency", ms, "Milliseconds"));
    }
    print_provider_metrics(provider, &metrics);
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
            ("TokenRefreshes", if refreshed { 1.0 } else { 0.0 }, "Count"),
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
    let flag = |on: bool| if on { 1.0 } else { 0.0 };
    print_provider_metrics(
        provider,
        &[
            ("OutboundCalls", 1.0, "Count"),
            ("OutboundErrors", flag(failed), "Count"),
            ("Throttles", flag(throttled), "Count"),
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
            (
                "PollFailures",
                if error.is_some() { 1.0 } else { 0.0 },
                "Count",
            ),
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
}
