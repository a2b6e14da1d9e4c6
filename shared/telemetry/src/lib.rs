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

pub mod redact;

use tracing_subscriber::{layer::SubscriberExt as _, util::SubscriberInitExt as _};

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
pub fn json_subscriber<W>(
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
pub struct Metric<'a> {
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
    /// One value.
    pub fn one(name: &'a str, value: f64, unit: &'a str) -> Self {
        Metric {
            name,
            unit,
            values: MetricValues::One(value),
        }
    }

    /// Several values, each a sample of its own.
    pub fn many(name: &'a str, values: Vec<f64>, unit: &'a str) -> Self {
        Metric {
            name,
            unit,
            values: MetricValues::Many(values),
        }
    }
}

/// EMF's limit of values in one metric's array.
pub const EMF_MAX_VALUES: usize = 100;

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
    // The set of the given dimensions and the aggregate without any; without dimensions
    // the two are one set, written once (twice, CloudWatch would count every value twice).
    if dimensions.is_empty() {
        line.extend_from_slice(b"]],\"Metrics\":[");
    } else {
        line.extend_from_slice(b"],[]],\"Metrics\":[");
    }
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
    pub fn texts<'a>(mut self, name: &str, values: impl Iterator<Item = &'a str>) -> OutcomeLine {
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

    pub fn with_metrics(mut self, provider: &str, metrics: &[Metric<'_>]) -> Vec<u8> {
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
pub fn count_if(happened: bool) -> f64 {
    if happened { 1.0 } else { 0.0 }
}

/// Writes whole lines to stdout in one write (Lambda ships each line to CloudWatch Logs).
pub fn write_lines(lines: &[u8]) {
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(lines);
}

/// Prints one EMF line of `metrics` under the `Provider` dimension, stamped now.
pub fn print_provider_metrics(provider: &str, metrics: &[(&str, f64, &str)]) {
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    println!("{}", emf_line(now_ms, &[("Provider", provider)], metrics));
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

    /// Without dimensions there is one set, the aggregate: two empty sets would publish
    /// every value twice (a sum alarm would see double).
    #[test]
    fn a_document_without_dimensions_publishes_each_value_once() {
        let line = emf_line(1_700_000_000_000, &[], &[("SilentProviders", 1.0, "Count")]);
        let value: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(
            value["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([[]])
        );
        assert_eq!(value["SilentProviders"], 1.0);
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
