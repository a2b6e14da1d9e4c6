//! Consumer tests with in-memory ports.

use std::sync::Arc;

use super::*;
use crate::{
    clock::FixedClock,
    events::InMemoryEventBus,
    idempotency::{IdempotencyPolicy, InMemoryIdempotencyStore},
    payloads::InMemoryPayloadStore,
    queue::InMemoryRetryScheduler,
};

struct Harness {
    consumer: Consumer<Arc<InMemoryIdempotencyStore>>,
    store: Arc<InMemoryIdempotencyStore>,
    bus: Arc<InMemoryEventBus>,
    payloads: Arc<InMemoryPayloadStore>,
    retries: Arc<InMemoryRetryScheduler>,
}

const BACKOFF: Backoff = Backoff {
    base: Duration::from_secs(5),
    cap: Duration::from_secs(900),
};

fn harness() -> Harness {
    let store = Arc::new(InMemoryIdempotencyStore::default());
    let bus = Arc::new(InMemoryEventBus::default());
    let payloads = Arc::new(InMemoryPayloadStore::default());
    let retries = Arc::new(InMemoryRetryScheduler::default());
    let consumer = Consumer::new(
        Idempotency::new(store.clone(), IdempotencyPolicy::default()),
        bus.clone(),
        payloads.clone(),
        retries.clone(),
        Arc::new(FixedClock::at_unix(1_700_000_000)),
        BACKOFF,
    );
    Harness {
        consumer,
        store,
        bus,
        payloads,
        retries,
    }
}

fn message(id: &str, event_id: &str, body: &str, receive_count: u32) -> InboundMessage {
    let attributes = [
        (attribute::PROVIDER, "stripe"),
        (attribute::EVENT_ID, event_id),
        (attribute::EVENT_TYPE, "invoice.paid"),
        (attribute::BODY_ENCODING, "utf8"),
        (attribute::RECEIVED_AT, "2023-11-14T22:13:20.000Z"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    InboundMessage {
        message_id: id.into(),
        receipt_handle: format!("rh-{id}"),
        body: body.into(),
        attributes,
        receive_count,
    }
}

#[tokio::test]
async fn an_event_delivered_twice_is_published_once() {
    let h = harness();
    let outcomes = h
        .consumer
        .process_batch(vec![
            message("m1", "evt_1", r#"{"id":"evt_1"}"#, 1),
            message("m2", "evt_1", r#"{"id":"evt_1"}"#, 1),
        ])
        .await;
    assert_eq!(outcomes[0].result, "processed");
    assert_eq!(outcomes[1].result, "duplicate");
    assert!(!outcomes[1].payload_mismatch);
    assert!(outcomes.iter().all(|o| !o.keeps_message()));
    let events = h.bus.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].source, "junction/stripe");
    assert_eq!(events[0].providereventid, "evt_1");
    assert_eq!(events[0].time, "2023-11-14T22:13:20.000Z");
    assert_eq!(events[0].data["payload"]["id"], "evt_1");
    assert!(h.retries.scheduled().is_empty());
}

#[tokio::test]
async fn a_reused_id_with_another_payload_is_reported() {
    let h = harness();
    h.consumer
        .process(message("m1", "evt_1", r#"{"v":1}"#, 1))
        .await;
    let outcome = h
        .consumer
        .process(message("m2", "evt_1", r#"{"v":2}"#, 1))
        .await;
    assert_eq!(outcome.result, "duplicate");
    assert!(outcome.payload_mismatch);
    assert_eq!(h.bus.events().len(), 1);
}

#[tokio::test]
async fn an_event_in_progress_elsewhere_is_retried_later_not_acknowledged() {
    let h = harness();
    let key = IdempotencyKey::new("stripe", None, "evt_9");
    let other = Idempotency::new(h.store.clone(), IdempotencyPolicy::default());
    let now = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time");
    assert!(matches!(
        other.claim(&key, "x", now).await,
        Ok(ClaimOutcome::Claimed(_))
    ));
    let outcome = h.consumer.process(message("m1", "evt_9", "{}", 3)).await;
    assert_eq!(
        (outcome.result, outcome.reason),
        ("retry", Some("in_progress_elsewhere"))
    );
    assert!(outcome.keeps_message());
    let scheduled = h.retries.scheduled();
    assert_eq!(scheduled.len(), 1);
    assert_eq!(scheduled[0].0, "rh-m1");
    assert!(scheduled[0].1 <= BACKOFF.ceiling(3));
    assert!(h.bus.events().is_empty());
}

#[tokio::test]
async fn a_failed_publish_releases_the_claim_so_the_retry_processes_it() {
    let h = harness();
    h.bus.set_failing(true);
    let outcome = h.consumer.process(message("m1", "evt_2", "{}", 1)).await;
    assert_eq!(
        (outcome.result, outcome.reason),
        ("retry", Some("publish_failed"))
    );
    assert!(
        h.store
            .get(&IdempotencyKey::new("stripe", None, "evt_2"))
            .is_none(),
        "claim released"
    );
    h.bus.set_failing(false);
    let outcome = h.consumer.process(message("m1", "evt_2", "{}", 2)).await;
    assert_eq!(outcome.result, "processed");
    assert_eq!(h.bus.events().len(), 1);
}

#[tokio::test]
async fn a_malformed_message_fails_permanently_and_becomes_visible_at_once() {
    let h = harness();
    let mut bad = message("m1", "evt_3", "{}", 1);
    bad.attributes.remove(attribute::EVENT_ID);
    let outcome = h.consumer.process(bad).await;
    assert_eq!(
        (outcome.result, outcome.reason),
        ("failed", Some("missing_event_id"))
    );
    assert_eq!(
        h.retries.scheduled(),
        vec![("rh-m1".to_owned(), Duration::ZERO)]
    );
    let mut bad = message("m2", "evt_4", "not base64!", 1);
    bad.attributes
        .insert(attribute::BODY_ENCODING.into(), "base64".into());
    assert_eq!(
        h.consumer.process(bad).await.reason,
        Some("malformed_base64_body")
    );
}

#[tokio::test]
async fn bodies_stored_in_s3_and_base64_bodies_are_read_back() {
    let h = harness();
    let uri = h
        .payloads
        .put("webhooks/stripe/k", br#"{"big":true}"#)
        .await
        .expect("put");
    let mut offloaded = message("m1", "evt_5", &uri, 1);
    offloaded
        .attributes
        .insert(attribute::BODY_ENCODING.into(), "s3".into());
    let mut binary = message("m2", "evt_6", "AAEC", 1);
    binary
        .attributes
        .insert(attribute::BODY_ENCODING.into(), "base64".into());
    let outcomes = h.consumer.process_batch(vec![offloaded, binary]).await;
    assert!(
        outcomes.iter().all(|o| o.result == "processed"),
        "{outcomes:?}"
    );
    let events = h.bus.events();
    assert_eq!(events[0].data["payload"]["big"], true);
    assert_eq!(events[1].data["payload"], "\u{0}\u{1}\u{2}");
}
