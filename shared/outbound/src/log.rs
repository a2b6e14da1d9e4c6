//! The metrics of outbound calls.

use std::time::Duration;

use junction_telemetry::{count_if, print_provider_metrics};

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
