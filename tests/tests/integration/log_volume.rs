//! What a webhook costs in CloudWatch Logs by default: the ingress's line plus its share
//! of the consumer's batch line (the two crates write them; this checks their sum).

use std::time::Duration;

use junction_pipeline::{
    consumer::{ItemOutcome, ItemResult},
    log::consumed_lines,
};
use junction_webhooks::{Outcome, WebhookResult, log::webhook_line};

/// A GitHub delivery as the ingress logs it by default.
fn github_delivery() -> Outcome {
    Outcome {
        provider: "github".into(),
        endpoint: None,
        result: WebhookResult::Accepted,
        reason: None,
        status: 200,
        // GitHub's X-GitHub-Delivery is a GUID; the longest common event type.
        event_id: Some("8595292d-e125-4c74-a76d-2e2c600c63b4".into()),
        event_type: Some("pull_request_review_comment".into()),
        offloaded: false,
        secrets_refreshed: false,
        body_bytes: 7_312,
        cause: None,
    }
}

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

/// The goal: at most 600 bytes of log lines per webhook by default, the
/// metrics kept. A webhook is the ingress's line and its share of the consumer's
/// batch of 10 (the template's batch size). Lambda's own START, END and REPORT lines
/// are not ours and not counted.
#[test]
fn a_webhook_costs_at_most_600_bytes_of_log_lines() {
    let ingress = webhook_line(&github_delivery(), Duration::from_micros(412_345));
    let batch: Vec<ItemOutcome> = (0..10)
        .map(|n| {
            let mut outcome = consumed(
                ItemResult::Processed,
                "8595292d-e125-4c74-a76d-2e2c600c63b4",
            );
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
