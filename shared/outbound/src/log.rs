//! The metrics of outbound calls.

use std::time::Duration;

use junction_catalog::FailureClass;
use junction_telemetry::{count_if, print_provider_metrics};

/// Prints the metrics of one outbound call attempt (dimension `Provider`):
/// `OutboundCalls`, `OutboundErrors` (every failure but a 429), `Throttles` (429s and
/// rate-limit error bodies, counted apart from errors) and `OutboundLatency` (ms).
/// The structured log line is the caller's (it knows the connection and operation).
/// `failure` is the attempt's failure class, `None` when it succeeded.
pub fn record_outbound_call(provider: &str, failure: Option<FailureClass>, latency: Duration) {
    print_provider_metrics(provider, &outbound_call_metrics(failure, latency));
}

/// What [`record_outbound_call`] prints, as (name, value, unit).
fn outbound_call_metrics(
    failure: Option<FailureClass>,
    latency: Duration,
) -> [(&'static str, f64, &'static str); 4] {
    let throttled = failure == Some(FailureClass::RateLimited);
    let failed = failure.is_some() && !throttled;
    [
        ("OutboundCalls", 1.0, "Count"),
        ("OutboundErrors", count_if(failed), "Count"),
        ("Throttles", count_if(throttled), "Count"),
        (
            "OutboundLatency",
            latency.as_secs_f64() * 1000.0,
            "Milliseconds",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 429 is back-pressure, not an error: counted apart.
    #[test]
    fn a_throttle_is_not_an_error_and_a_success_is_neither() {
        let counts = |failure| {
            let metrics = outbound_call_metrics(failure, Duration::from_millis(7));
            assert_eq!(metrics[3], ("OutboundLatency", 7.0, "Milliseconds"));
            (metrics[1].1, metrics[2].1)
        };
        assert_eq!(counts(None), (0.0, 0.0));
        assert_eq!(counts(Some(FailureClass::RateLimited)), (0.0, 1.0));
        for class in [
            FailureClass::Transient,
            FailureClass::Permanent,
            FailureClass::Unauthorized,
        ] {
            assert_eq!(counts(Some(class)), (1.0, 0.0), "{class:?}");
        }
    }
}
