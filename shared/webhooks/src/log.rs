//! The ingress's log line: one JSON line per webhook that is also, in CloudWatch Embedded
//! Metric Format, its metrics (see `junction_telemetry` for the format and the cost).

use std::time::Duration;

use junction_telemetry::{Metric, OutcomeLine, write_lines};

use junction_catalog::{Catalog, SignatureFormat};

use crate::{Outcome, WebhookReason, WebhookResult};

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
    let accepted = outcome.result == WebhookResult::Accepted;
    let line = if verification_failure {
        OutcomeLine::new("WARN", "webhook rejected").flag("security", true)
    } else if outcome.status >= 500 {
        OutcomeLine::new("ERROR", "webhook failed")
    } else {
        OutcomeLine::new("INFO", "webhook handled")
    };
    let mut line = line.text("result", outcome.result.as_str());
    if let Some(endpoint) = &outcome.endpoint {
        line = line.text("endpoint", endpoint);
    }
    if let Some(reason) = outcome.reason {
        line = line.text("reason", reason.as_str());
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
    if outcome.reason == Some(WebhookReason::UnknownProvider) {
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

/// Logs a verified webhook's payload, already redacted (see [`junction_telemetry::redact`]): only
/// when the operator turned payload logging on.
pub fn record_payload(outcome: &Outcome, redacted: &serde_json::Value) {
    tracing::info!(
        provider = %outcome.provider,
        event_id = outcome.event_id.as_deref().unwrap_or(""),
        payload = %redacted,
        "webhook payload (redacted)"
    );
}

/// The body fields the catalog's signature schemes read a signature or shared token
/// from (Microsoft Graph's `clientState`, Adyen's `hmacSignature`, Mailgun's
/// `signature`), for the payload log's redactor: whatever verifies a delivery is never
/// logged.
pub fn signature_fields(catalog: &Catalog) -> Vec<String> {
    let mut fields = Vec::new();
    for provider in catalog.providers() {
        let Some(verification) = provider.verification() else {
            continue;
        };
        let pointer = match &verification.signature {
            SignatureFormat::JsonPointer { pointer, .. } => pointer,
            SignatureFormat::PerItem { signature, .. } => signature,
            _ => continue,
        };
        if let Some(field) = pointer.rsplit('/').next() {
            fields.push(field.to_owned());
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use junction_telemetry::redact::{REDACTED, Redactor};
    use serde_json::json;

    use super::*;

    fn webhook_outcome(
        status: u16,
        result: WebhookResult,
        reason: Option<WebhookReason>,
    ) -> Outcome {
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

    #[test]
    fn a_failed_webhook_line_carries_its_cause() {
        let mut outcome = webhook_outcome(
            503,
            WebhookResult::Failed,
            Some(WebhookReason::EnqueueFailed),
        );
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
            &webhook_outcome(200, WebhookResult::Accepted, None),
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

        let mut offloaded = webhook_outcome(200, WebhookResult::Accepted, None);
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
        let mut outcome = webhook_outcome(200, WebhookResult::Accepted, None);
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
            &webhook_outcome(
                401,
                WebhookResult::Rejected,
                Some(WebhookReason::SignatureMismatch),
            ),
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
            &webhook_outcome(
                503,
                WebhookResult::Failed,
                Some(WebhookReason::EnqueueFailed),
            ),
            Duration::ZERO,
        ));
        assert_eq!(
            (&failed["level"], &failed["IngressErrors"]),
            (&serde_json::json!("ERROR"), &serde_json::json!(1))
        );

        let mut unknown = webhook_outcome(
            404,
            WebhookResult::Rejected,
            Some(WebhookReason::UnknownProvider),
        );
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

    #[test]
    fn the_fields_signature_schemes_read_are_redacted() {
        let catalog = Catalog::embedded().expect("catalog");
        let redactor = Redactor::new::<&str>(&[], false).with_fields(signature_fields(catalog));
        // Microsoft Graph's notification (learn.microsoft.com/graph/change-notifications-delivery-webhooks).
        let graph = json!({"value": [{"subscriptionId": "s1", "clientState": "secretClientValue", "changeType": "created"}]});
        assert_eq!(
            redactor.json(&graph),
            json!({"value": [{"subscriptionId": "s1", "clientState": REDACTED, "changeType": "created"}]})
        );
        assert!(redactor.redacts_key("hmacSignature"));
    }
}
