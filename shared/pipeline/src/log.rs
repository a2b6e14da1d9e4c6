//! The consumer's log lines: per provider of a batch, one JSON line that is also its
//! metrics (CloudWatch Embedded Metric Format, see `junction_telemetry`), and a line per
//! message retried or failed.

use junction_telemetry::{EMF_MAX_VALUES, Metric, OutcomeLine, write_lines};

use crate::consumer::{ItemOutcome, ItemReason, ItemResult};

/// Logs a consumer batch's outcomes with their metrics, in one write: for each provider
/// in the batch, one `events consumed` line naming the events processed and those
/// acknowledged as duplicates, with the batch's metrics ([`consumed_metrics_line`]);
/// for each message retried or failed, a line of its own with everything on-call needs
/// ([`consumed_line`]). With `RUST_LOG` at `debug` for `junction_pipeline::log`, processed
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

/// Whether `RUST_LOG` asks for a line per consumed message (`junction_pipeline::log=debug`).
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
/// `UnmatchedDeliveries` (processed messages no connection owns: their events went out
/// without `tenant` and `connection`),
/// `DeadLettered` (the last receive of a failing message: SQS moves it to the DLQ) and
/// `EndToEndLatency` (ms from receipt to the bus, one value per message that published
/// something, in EMF's array form so the percentiles stay per message; whole
/// milliseconds, as the ingress stamps receipt to the millisecond).
///
/// One line for a batch of 10 rather than a line of metrics per message: about a tenth
/// of the bytes CloudWatch Logs bills (`a_webhook_costs_at_most_600_bytes_of_log_lines`).
pub fn consumed_metrics_line(provider: &str, outcomes: &[&ItemOutcome]) -> Vec<u8> {
    let ids = |result: ItemResult| {
        outcomes
            .iter()
            .filter(move |outcome| outcome.result == result)
            .map(|outcome| outcome.event_id.as_deref().unwrap_or(&outcome.message_id))
    };
    let mut line =
        OutcomeLine::new("INFO", "events consumed").texts("processed", ids(ItemResult::Processed));
    if ids(ItemResult::Duplicate).next().is_some() {
        line = line.texts("duplicate", ids(ItemResult::Duplicate));
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
            count(|o| o.result == ItemResult::Processed),
            "Count",
        ),
        Metric::one(
            "EventsDuplicate",
            count(|o| o.result == ItemResult::Duplicate),
            "Count",
        ),
        Metric::one(
            "EventsRetried",
            count(|o| o.result == ItemResult::Retry),
            "Count",
        ),
        Metric::one(
            "EventsFailed",
            count(|o| o.result == ItemResult::Failed),
            "Count",
        ),
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
        (
            "UnmatchedDeliveries",
            count(|o| o.unmatched && o.result == ItemResult::Processed),
        ),
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
        metrics.push(Metric::many("EndToEndLatency", end_to_end, "Milliseconds"));
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
/// `tenants` (whom its events were published for, when any), `event_id`, `idempotency_key`, `message_id`, `result`, `attempt`, `latency_ms`; for a
/// retry or a failure `reason`, `detail`, `dead_lettered` (and `retry_in_s`); otherwise
/// what was published and the record counts, and `end_to_end_ms`.
pub fn consumed_line(outcome: &ItemOutcome) -> Vec<u8> {
    let line = match outcome.result {
        ItemResult::Failed => OutcomeLine::new("ERROR", "event failed permanently"),
        ItemResult::Retry => OutcomeLine::new("WARN", "event will be retried"),
        ItemResult::Processed | ItemResult::Duplicate => OutcomeLine::new("INFO", "event consumed"),
    };
    let mut line = line.text("Provider", outcome.provider.as_deref().unwrap_or("unknown"));
    if let Some(connection) = outcome.connection.as_deref().filter(|c| !c.is_empty()) {
        line = line.text("connection", connection);
    }
    if !outcome.owners.is_empty() {
        line = line.texts(
            "tenants",
            outcome.owners.iter().map(|owner| owner.tenant.as_str()),
        );
    }
    line = line
        .text("event_id", outcome.event_id.as_deref().unwrap_or(""))
        .text(
            "idempotency_key",
            outcome.idempotency_key.as_deref().unwrap_or(""),
        )
        .text("message_id", &outcome.message_id)
        .text("result", outcome.result.as_str())
        .count("attempt", u64::from(outcome.attempt))
        .number("latency_ms", outcome.latency.as_secs_f64() * 1000.0);
    let reason = outcome.reason.map(ItemReason::as_str).unwrap_or("");
    line = match outcome.result {
        ItemResult::Failed => line
            .text("reason", reason)
            .text("detail", outcome.detail.as_deref().unwrap_or(""))
            .flag("dead_lettered", outcome.dead_lettered),
        ItemResult::Retry => line
            .text("reason", reason)
            .text("detail", outcome.detail.as_deref().unwrap_or(""))
            .count(
                "retry_in_s",
                outcome.retry_in.map(|d| d.as_secs()).unwrap_or_default(),
            )
            .flag("dead_lettered", outcome.dead_lettered),
        ItemResult::Processed | ItemResult::Duplicate => {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn consumed(result: ItemResult, event_id: &str) -> ItemOutcome {
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
            owners: Vec::new(),
            unmatched: false,
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
        let mut outcome = consumed(ItemResult::Retry, "evt_1");
        outcome.message_id = "m-1".into();
        outcome.reason = Some(ItemReason::PublishFailed);
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
                let mut outcome = consumed(ItemResult::Processed, &format!("evt_{n}"));
                outcome.published = 1;
                outcome.end_to_end = Some(Duration::from_micros(40_000 + n * 1_400));
                outcome
            })
            .collect();
        outcomes.push(consumed(ItemResult::Duplicate, "evt_dup"));
        let mut github = consumed(ItemResult::Failed, "delivery-1");
        github.provider = Some("github".into());
        github.reason = Some(ItemReason::UnmappablePayload);
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

        // Every message's own line, on demand (RUST_LOG=junction_pipeline::log=debug).
        let every = lines(&consumed_lines(&outcomes, true));
        assert_eq!(every.len(), 2 + outcomes.len());
        assert_eq!(every[2]["message"], "event consumed");
        assert_eq!(every[2]["end_to_end_ms"], 40.0);
    }

    #[test]
    fn unmatched_deliveries_are_counted_per_provider_and_owners_named_per_message() {
        let mut matched = consumed(ItemResult::Processed, "evt_1");
        matched.published = 2;
        matched.owners = vec![
            crate::accounts::Owner {
                tenant: "acme".into(),
                connection: "conn_1".into(),
            },
            crate::accounts::Owner {
                tenant: "beta".into(),
                connection: "conn_2".into(),
            },
        ];
        let mut unmatched = consumed(ItemResult::Processed, "evt_2");
        unmatched.unmatched = true;
        let mut retried = consumed(ItemResult::Retry, "evt_3");
        retried.unmatched = true;
        let mut github = consumed(ItemResult::Processed, "delivery-1");
        github.provider = Some("github".into());
        github.unmatched = true;

        let written = lines(&consumed_lines(
            &[matched.clone(), unmatched, retried, github],
            true,
        ));
        let (stripe, gh) = (&written[0], &written[1]);
        assert_eq!(
            stripe["UnmatchedDeliveries"], 1,
            "processed messages only: a retry is counted when it is processed"
        );
        assert_eq!(
            (&gh["Provider"], &gh["UnmatchedDeliveries"]),
            (&serde_json::json!("github"), &serde_json::json!(1))
        );
        let names: Vec<&str> = stripe["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .expect("metrics")
            .iter()
            .filter_map(|m| m["Name"].as_str())
            .collect();
        assert!(names.contains(&"UnmatchedDeliveries"), "{names:?}");
        assert_eq!(written[2]["tenants"], serde_json::json!(["acme", "beta"]));
        assert!(written[3].get("tenants").is_none(), "{}", written[3]);

        let all_matched = lines(&consumed_lines(&[matched], false));
        assert!(
            all_matched[0].get("UnmatchedDeliveries").is_none(),
            "a count of nothing is not written"
        );
    }

    #[test]
    fn rust_log_at_debug_for_telemetry_asks_for_every_consumed_message() {
        let with = |directives: &str| {
            let targets = directives
                .parse::<tracing_subscriber::filter::Targets>()
                .expect("directives");
            let subscriber = junction_telemetry::json_subscriber(targets, std::io::sink);
            tracing::subscriber::with_default(subscriber, every_consumed_message)
        };
        assert!(!with("info"));
        assert!(!with("info,junction_webhooks=debug"));
        assert!(with("info,junction_pipeline::log=debug"));
    }

    /// The template's success-rate alarm and dashboard divide by the sum of these four
    /// (metric math yields nothing for a period one of them has no sample in), and its
    /// other alarms and widgets name these metrics: every metrics line has the four, zero
    /// included, and the names are the ones template.yaml uses.
    #[test]
    fn every_consumer_metrics_line_has_the_success_rate_metrics() {
        let template = include_str!("../../../template.yaml");
        for result in [
            ItemResult::Processed,
            ItemResult::Duplicate,
            ItemResult::Retry,
            ItemResult::Failed,
        ] {
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
}
