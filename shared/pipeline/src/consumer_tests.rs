//! Consumer tests with in-memory ports.

use std::sync::Arc;

use base64::Engine as _;

use super::*;
use crate::idempotency::{IdempotencyPolicy, InMemoryIdempotencyStore};
use crate::records::InMemoryRecordStore;
use junction_aws::clock::FixedClock;
use junction_aws::events::InMemoryEventBus;
use junction_aws::payloads::InMemoryPayloadStore;
use junction_aws::queue::InMemoryRetryScheduler;

struct Harness {
    consumer: Consumer<Arc<InMemoryIdempotencyStore>>,
    records: Arc<InMemoryRecordStore>,
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
    let records = Arc::new(InMemoryRecordStore::default());
    let bus = Arc::new(InMemoryEventBus::default());
    let payloads = Arc::new(InMemoryPayloadStore::default());
    let retries = Arc::new(InMemoryRetryScheduler::default());
    let consumer = Consumer::new(
        junction_catalog::Catalog::embedded().expect("catalog"),
        Idempotency::new(store.clone(), IdempotencyPolicy::default()),
        Ports {
            records: records.clone(),
            bus: bus.clone(),
            payloads: payloads.clone(),
            retries: retries.clone(),
            clock: Arc::new(FixedClock::at_unix(1_700_000_000)),
        },
        BACKOFF,
    );
    Harness {
        consumer,
        records,
        store,
        bus,
        payloads,
        retries,
    }
}

/// A Stripe Event object (https://docs.stripe.com/api/events/object), trimmed.
fn stripe_event(id: &str, amount: u32) -> String {
    format!(
        r#"{{"id":"{id}","object":"event","type":"invoice.paid","created":1700000000,"data":{{"object":{{"id":"in_1","amount_paid":{amount}}}}}}}"#
    )
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
            message("m1", "evt_1", &stripe_event("evt_1", 100), 1),
            message("m2", "evt_1", &stripe_event("evt_1", 100), 1),
        ])
        .await;
    assert_eq!(outcomes[0].result, ItemResult::Processed);
    assert_eq!(outcomes[1].result, ItemResult::Duplicate);
    assert!(!outcomes[1].payload_mismatch);
    assert!(outcomes.iter().all(|o| !o.keeps_message()));
    let events = h.bus.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].source, "junction/stripe");
    assert_eq!(events[0].providereventid, "evt_1");
    assert_eq!(events[0].event_type, "provider_event.occurred");
    assert_eq!(events[0].time, "2023-11-14T22:13:20Z", "Stripe's `created`");
    assert_eq!(events[0].data["item"], "provider_event");
    assert_eq!(events[0].data["mapping_version"], 1);
    assert_eq!(events[0].data["raw"]["data"]["object"]["amount_paid"], 100);
    assert!(h.retries.scheduled().is_empty());
}

/// Regression ("Nothing lost at the edges", point 2): the claim key is provider +
/// account + event id, never the URL's endpoint, so one delivery posted to several
/// endpoints publishes once; another account's event with the same id is its own.
#[tokio::test]
async fn the_claim_key_is_the_account_and_event_id_never_the_endpoint() {
    let h = harness();
    let at = |id: &str, endpoint: &str, account: &str| {
        let mut message = message(id, "evt_1", &stripe_event("evt_1", 100), 1);
        for (name, value) in [
            (attribute::ENDPOINT, endpoint),
            (attribute::ACCOUNT, account),
        ] {
            message.attributes.insert(name.to_owned(), value.to_owned());
        }
        message
    };
    let outcomes = h
        .consumer
        .process_batch(vec![
            at("m1", "eu", "acct_1"),
            at("m2", "us", "acct_1"),
            at("m3", "eu", "acct_2"),
        ])
        .await;
    let results: Vec<_> = outcomes.iter().map(|o| o.result).collect();
    assert_eq!(
        results,
        [
            ItemResult::Processed,
            ItemResult::Duplicate,
            ItemResult::Processed
        ]
    );
    assert_eq!(
        outcomes[0].idempotency_key.as_deref(),
        Some("stripe#acct_1#evt_1")
    );
    assert_eq!(h.bus.events().len(), 2, "one per account");
}

#[tokio::test]
async fn a_reused_id_with_another_payload_is_reported() {
    let h = harness();
    h.consumer
        .process(message("m1", "evt_1", &stripe_event("evt_1", 1), 1))
        .await;
    let outcome = h
        .consumer
        .process(message("m2", "evt_1", &stripe_event("evt_1", 2), 1))
        .await;
    assert_eq!(outcome.result, ItemResult::Duplicate);
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
        (ItemResult::Retry, Some(ItemReason::InProgressElsewhere))
    );
    assert!(outcome.keeps_message());
    let scheduled = h.retries.scheduled();
    assert_eq!(scheduled.len(), 1);
    assert_eq!(scheduled[0].0, "rh-m1");
    // Not before the other claim's 60 s lease ends, whatever the backoff drew.
    assert!(scheduled[0].1 >= Duration::from_secs(61), "{scheduled:?}");
    assert!(scheduled[0].1 <= BACKOFF.ceiling(3).max(Duration::from_secs(61)));
    assert!(h.bus.events().is_empty());
}

#[tokio::test]
async fn a_failed_publish_releases_the_claim_so_the_retry_processes_it() {
    let h = harness();
    h.bus.set_failing(true);
    let outcome = h
        .consumer
        .process(message("m1", "evt_2", &stripe_event("evt_2", 1), 1))
        .await;
    assert_eq!(
        (outcome.result, outcome.reason),
        (ItemResult::Retry, Some(ItemReason::PublishFailed))
    );
    let detail = outcome.detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains("could not be reached") && detail.contains("in-memory bus set to fail"),
        "the cause, with the call's error: {detail}"
    );
    assert!(
        h.store
            .get(&IdempotencyKey::new("stripe", None, "evt_2"))
            .is_none(),
        "claim released"
    );
    h.bus.set_failing(false);
    let outcome = h
        .consumer
        .process(message("m1", "evt_2", &stripe_event("evt_2", 1), 2))
        .await;
    assert_eq!(outcome.result, ItemResult::Processed);
    assert_eq!(h.bus.events().len(), 1);
}

#[tokio::test]
async fn a_batch_is_published_in_one_call_and_completed_together() {
    let h = harness();
    let batch = (0..10)
        .map(|n| {
            let id = format!("evt_b{n}");
            message(&format!("m{n}"), &id, &stripe_event(&id, n), 1)
        })
        .collect();
    let outcomes = h.consumer.process_batch(batch).await;
    assert!(
        outcomes
            .iter()
            .all(|o| o.result == ItemResult::Processed && o.published == 1)
    );
    assert_eq!(h.bus.calls(), 1, "one publish for the batch");
    assert_eq!(h.bus.events().len(), 10);
    for n in 0..10 {
        let key = IdempotencyKey::new("stripe", None, &format!("evt_b{n}"));
        assert!(h.store.get(&key).is_some_and(|r| r.completed), "{key:?}");
    }
}

/// An in-memory store whose claims of one key fail (a throttled or timed-out write).
#[derive(Debug)]
struct FailingClaims {
    store: InMemoryIdempotencyStore,
    key: IdempotencyKey,
}

#[async_trait::async_trait]
impl IdempotencyStore for FailingClaims {
    async fn try_claim(
        &self,
        key: &IdempotencyKey,
        token: &str,
        payload_hash: &str,
        now: time::OffsetDateTime,
        lease_expires_at: time::OffsetDateTime,
    ) -> Result<Option<crate::idempotency::StoredRecord>, crate::idempotency::StoreError> {
        if *key == self.key {
            return Err(crate::idempotency::StoreError(
                "ProvisionedThroughputExceededException".into(),
            ));
        }
        self.store
            .try_claim(key, token, payload_hash, now, lease_expires_at)
            .await
    }

    async fn complete(
        &self,
        key: &IdempotencyKey,
        token: &str,
        expires_at: time::OffsetDateTime,
    ) -> Result<bool, crate::idempotency::StoreError> {
        self.store.complete(key, token, expires_at).await
    }

    async fn release(
        &self,
        key: &IdempotencyKey,
        token: &str,
    ) -> Result<(), crate::idempotency::StoreError> {
        self.store.release(key, token).await
    }
}

/// Each claim of a batch is on its own: one that the store fails retries its message
/// alone (with the store's error as its detail) and the others go through.
#[tokio::test]
async fn a_store_failure_fails_only_its_own_claim() {
    let bus = Arc::new(InMemoryEventBus::default());
    let consumer = Consumer::new(
        junction_catalog::Catalog::embedded().expect("catalog"),
        Idempotency::new(
            FailingClaims {
                store: InMemoryIdempotencyStore::default(),
                key: IdempotencyKey::new("stripe", None, "evt_f1"),
            },
            IdempotencyPolicy::default(),
        ),
        Ports {
            records: Arc::new(InMemoryRecordStore::default()),
            bus: bus.clone(),
            payloads: Arc::new(InMemoryPayloadStore::default()),
            retries: Arc::new(InMemoryRetryScheduler::default()),
            clock: Arc::new(FixedClock::at_unix(1_700_000_000)),
        },
        BACKOFF,
    );
    let batch = (0..3)
        .map(|n| {
            let id = format!("evt_f{n}");
            message(&format!("m{n}"), &id, &stripe_event(&id, n), 1)
        })
        .collect();
    let outcomes = consumer.process_batch(batch).await;
    let results: Vec<_> = outcomes.iter().map(|o| (o.result, o.reason)).collect();
    assert_eq!(
        results,
        [
            (ItemResult::Processed, None),
            (
                ItemResult::Retry,
                Some(ItemReason::IdempotencyStoreUnavailable)
            ),
            (ItemResult::Processed, None)
        ]
    );
    let detail = outcomes[1].detail.as_deref().unwrap_or_default();
    assert!(
        detail.contains("ProvisionedThroughputExceededException"),
        "{detail}"
    );
    assert_eq!(bus.events().len(), 2);
}

#[tokio::test]
async fn a_rejected_event_retries_only_its_own_message() {
    let h = harness();
    h.bus.reject_provider_event(Some("evt_r2"));
    let batch = (1..=3)
        .map(|n| {
            let id = format!("evt_r{n}");
            message(&format!("m{n}"), &id, &stripe_event(&id, n), 1)
        })
        .collect();
    let outcomes = h.consumer.process_batch(batch).await;
    let results: Vec<_> = outcomes.iter().map(|o| (o.result, o.reason)).collect();
    assert_eq!(
        results,
        [
            (ItemResult::Processed, None),
            (ItemResult::Retry, Some(ItemReason::PublishFailed)),
            (ItemResult::Processed, None)
        ]
    );
    assert_eq!(outcomes[1].published, 0);
    assert!(
        outcomes[1]
            .detail
            .as_deref()
            .is_some_and(|detail| detail.contains("InternalFailure")),
        "EventBridge's error code: {:?}",
        outcomes[1].detail
    );
    assert!(
        h.store
            .get(&IdempotencyKey::new("stripe", None, "evt_r2"))
            .is_none(),
        "the rejected message's claim is released"
    );
    assert_eq!(h.retries.scheduled().len(), 1);
    assert_eq!(h.retries.scheduled()[0].0, "rh-m2");

    h.bus.reject_provider_event(None);
    let retried = h
        .consumer
        .process(message("m2", "evt_r2", &stripe_event("evt_r2", 2), 2))
        .await;
    assert_eq!(retried.result, ItemResult::Processed);
    assert_eq!(h.bus.events().len(), 3);
}

#[tokio::test]
async fn a_copy_in_the_same_batch_follows_the_first_copy() {
    let h = harness();
    let outcomes = h
        .consumer
        .process_batch(vec![
            message("m1", "evt_c", &stripe_event("evt_c", 1), 1),
            message("m2", "evt_c", &stripe_event("evt_c", 2), 1),
        ])
        .await;
    assert_eq!(outcomes[1].result, ItemResult::Duplicate);
    assert!(
        outcomes[1].payload_mismatch,
        "another payload under the same id"
    );

    h.bus.set_failing(true);
    let outcomes = h
        .consumer
        .process_batch(vec![
            message("m3", "evt_d", &stripe_event("evt_d", 1), 1),
            message("m4", "evt_d", &stripe_event("evt_d", 1), 1),
        ])
        .await;
    let results: Vec<_> = outcomes.iter().map(|o| (o.result, o.reason)).collect();
    assert_eq!(
        results,
        [
            (ItemResult::Retry, Some(ItemReason::PublishFailed)),
            (ItemResult::Retry, Some(ItemReason::CopyInBatchFailed))
        ],
        "neither is acknowledged while the event is unpublished"
    );
}

#[tokio::test]
async fn a_malformed_message_fails_permanently_and_becomes_visible_at_once() {
    let h = harness();
    let mut bad = message("m1", "evt_3", "{}", 1);
    bad.attributes.remove(attribute::EVENT_ID);
    let outcome = h.consumer.process(bad).await;
    assert_eq!(
        (outcome.result, outcome.reason),
        (ItemResult::Failed, Some(ItemReason::MissingEventId))
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
        Some(ItemReason::MalformedBase64Body)
    );
}

#[tokio::test]
async fn bodies_stored_in_s3_and_base64_bodies_are_read_back() {
    let h = harness();
    let uri = h
        .payloads
        .put("webhooks/stripe/k", stripe_event("evt_5", 5).as_bytes())
        .await
        .expect("put");
    let mut offloaded = message("m1", "evt_5", &uri, 1);
    offloaded
        .attributes
        .insert(attribute::BODY_ENCODING.into(), "s3".into());
    let encoded = base64::engine::general_purpose::STANDARD.encode(stripe_event("evt_6", 6));
    let mut binary = message("m2", "evt_6", &encoded, 1);
    binary
        .attributes
        .insert(attribute::BODY_ENCODING.into(), "base64".into());
    let outcomes = h.consumer.process_batch(vec![offloaded, binary]).await;
    assert!(
        outcomes.iter().all(|o| o.result == ItemResult::Processed),
        "{outcomes:?}"
    );
    let events = h.bus.events();
    assert_eq!(events[0].data["raw"]["data"]["object"]["amount_paid"], 5);
    assert_eq!(events[1].data["raw"]["data"]["object"]["amount_paid"], 6);
}

/// An offloaded body the bucket cannot give back: the message is retried, and its
/// outcome says why.
#[tokio::test]
async fn an_unreadable_offloaded_body_is_retried_with_its_cause() {
    let h = harness();
    let uri = "s3://in-memory/webhooks/stripe/never-stored";
    let mut offloaded = message("m1", "evt_8", uri, 1);
    offloaded
        .attributes
        .insert(attribute::BODY_ENCODING.into(), "s3".into());
    let outcome = h.consumer.process(offloaded).await;
    assert_eq!(
        (outcome.result, outcome.reason),
        (ItemResult::Retry, Some(ItemReason::PayloadUnavailable))
    );
    assert!(
        outcome.detail.as_deref().is_some_and(
            |d| d.contains("no payload at s3://in-memory/webhooks/stripe/never-stored")
        ),
        "{outcome:?}"
    );
    assert!(h.bus.events().is_empty());
}

#[tokio::test]
async fn an_unmappable_payload_fails_permanently_with_a_specific_reason() {
    let h = harness();
    let outcome = h
        .consumer
        .process(message("m1", "evt_7", r#"{"object":"event"}"#, 1))
        .await;
    assert_eq!(
        (outcome.result, outcome.reason),
        (ItemResult::Failed, Some(ItemReason::UnmappablePayload))
    );
    assert_eq!(
        outcome.detail.as_deref(),
        Some("stripe.event: required field `id` is missing")
    );
    assert!(
        h.store
            .get(&IdempotencyKey::new("stripe", None, "evt_7"))
            .is_none(),
        "claim released for the redrive"
    );
    assert!(h.bus.events().is_empty());
}

#[tokio::test]
async fn a_linear_issue_becomes_a_work_item_event() {
    let h = harness();
    // Linear's webhook payload (https://linear.app/developers/webhooks), trimmed.
    let body = r#"{"action":"update","type":"Issue","createdAt":"2024-05-01T10:00:00.000Z","webhookTimestamp":1714557600000,
        "data":{"id":"9cfb482a-81e3-4154-b5b9-2c805e70a02d","identifier":"ENG-42","title":"Fix login","priority":2,
        "createdAt":"2024-04-30T09:00:00.000Z","updatedAt":"2024-05-01T10:00:00.000Z","state":{"id":"s1","name":"In Progress","type":"started"},
        "team":{"id":"t1","key":"ENG","name":"Engineering"}}}"#;
    let mut linear = message("m1", "delivery-1", body, 1);
    linear
        .attributes
        .insert(attribute::PROVIDER.into(), "linear".into());
    let outcome = h.consumer.process(linear).await;
    assert_eq!(outcome.result, ItemResult::Processed, "{outcome:?}");
    let events = h.bus.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "work_item.updated");
    assert_eq!(events[0].source, "junction/linear");
    assert_eq!(events[0].time, "2024-05-01T10:00:00Z");
    assert_eq!(events[0].data["id"], "9cfb482a-81e3-4154-b5b9-2c805e70a02d");
}

fn linear_issue(title: &str, updated_at: &str) -> String {
    format!(
        r#"{{"action":"update","type":"Issue","webhookTimestamp":1714557600000,"data":{{"id":"iss-1","identifier":"ENG-1","title":"{title}","priority":2,"createdAt":"2024-04-30T09:00:00.000Z","updatedAt":"{updated_at}","state":{{"id":"s1","name":"Todo","type":"unstarted"}},"team":{{"id":"t1","key":"ENG","name":"Engineering"}}}}}}"#
    )
}

fn linear(id: &str, body: &str) -> InboundMessage {
    let mut message = message(id, id, body, 1);
    message
        .attributes
        .insert(attribute::PROVIDER.into(), "linear".into());
    message
}

#[tokio::test]
async fn out_of_order_updates_keep_the_newest_and_conflicts_are_announced() {
    let h = harness();
    let newer = h
        .consumer
        .process(linear(
            "d1",
            &linear_issue("second", "2024-05-01T10:00:02.000Z"),
        ))
        .await;
    let older = h
        .consumer
        .process(linear(
            "d2",
            &linear_issue("first", "2024-05-01T10:00:01.000Z"),
        ))
        .await;
    assert_eq!(
        (newer.result, older.result),
        (ItemResult::Processed, ItemResult::Processed)
    );
    assert_eq!(older.stale, 1, "the late, older update is dropped");
    let rival = h
        .consumer
        .process(linear(
            "d3",
            &linear_issue("rival", "2024-05-01T10:00:02.000Z"),
        ))
        .await;
    assert_eq!(rival.conflicts, 1);
    let events = h.bus.events();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["work_item.updated", "work_item.conflict"]);
    assert_eq!(events[0].data["title"], "second");
    assert_eq!(events[1].data["incoming"]["title"], "rival");
    assert_eq!(events[1].data["stored"]["title"], "second");
    assert_eq!(h.records.conflicts().len(), 1);
}

#[tokio::test]
async fn a_polled_field_with_priority_stands_against_a_newer_webhook() {
    let mut h = harness();
    h.consumer = h.consumer.with_field_priority(
        crate::records::FieldPriority::parse("work_item.title=poll>webhook").expect("rule"),
    );
    let mut polled = linear(
        "p1",
        &linear_issue("from the API", "2024-05-01T10:00:01.000Z"),
    );
    polled
        .attributes
        .insert(attribute::ORIGIN.into(), "poll".into());
    let pushed = linear(
        "w1",
        &linear_issue("from a webhook", "2024-05-01T10:00:02.000Z"),
    );
    assert_eq!(
        h.consumer.process(polled).await.result,
        ItemResult::Processed
    );
    assert_eq!(
        h.consumer.process(pushed).await.result,
        ItemResult::Processed
    );
    let events = h.bus.events();
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[1].data["title"], "from the API",
        "poll outranks webhook"
    );
    assert_eq!(events[1].data["source_timestamp"], "2024-05-01T10:00:02Z");
    let mut unknown = linear("x1", &linear_issue("x", "2024-05-01T10:00:03.000Z"));
    unknown
        .attributes
        .insert(attribute::ORIGIN.into(), "carrier-pigeon".into());
    let outcome = h.consumer.process(unknown).await;
    assert_eq!(
        (outcome.result, outcome.reason),
        (ItemResult::Failed, Some(ItemReason::UnknownOrigin))
    );
}

/// Crash injection: a port that never answers at one step, so the processing future is
/// dropped there (as when a Lambda dies), leaving whatever was written behind.
mod crashes {
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::idempotency::{IdempotencyStore, StoreError, StoredRecord};
    use crate::records::{RecordStore, StoredVersion};
    use junction_aws::events::{EventBus, PublishError};

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Step {
        /// Half of a batch's claims written, the rest not yet.
        MidClaim,
        AfterClaim,
        AfterRecordWrite,
        AfterPublish,
        BeforeDelete,
    }

    /// Wraps the in-memory ports; hangs at `step` while `armed`.
    #[derive(Debug)]
    struct Crashing {
        step: Step,
        armed: AtomicBool,
        /// Signalled when the processing reaches the crash step.
        reached: tokio::sync::Notify,
        store: Arc<InMemoryIdempotencyStore>,
        records: Arc<InMemoryRecordStore>,
        bus: Arc<InMemoryEventBus>,
    }

    impl Crashing {
        async fn hang_if(&self, step: Step) {
            if self.step == step && self.armed.load(Ordering::SeqCst) {
                self.reached.notify_one();
                std::future::pending::<()>().await;
            }
        }
    }

    #[async_trait]
    impl IdempotencyStore for Crashing {
        async fn try_claim(
            &self,
            key: &IdempotencyKey,
            token: &str,
            payload_hash: &str,
            now: time::OffsetDateTime,
            lease_expires_at: time::OffsetDateTime,
        ) -> Result<Option<StoredRecord>, StoreError> {
            self.store
                .try_claim(key, token, payload_hash, now, lease_expires_at)
                .await
        }

        async fn try_claim_all(
            &self,
            requests: &[crate::idempotency::ClaimRequest],
            now: time::OffsetDateTime,
            lease_expires_at: time::OffsetDateTime,
        ) -> Vec<Result<Option<StoredRecord>, StoreError>> {
            if self.step == Step::MidClaim && self.armed.load(Ordering::SeqCst) {
                // The first half of the claims land, then the process dies.
                let half = &requests[..requests.len() / 2];
                let _ = self.store.try_claim_all(half, now, lease_expires_at).await;
                self.hang_if(Step::MidClaim).await;
            }
            self.store
                .try_claim_all(requests, now, lease_expires_at)
                .await
        }

        async fn complete(
            &self,
            key: &IdempotencyKey,
            token: &str,
            expires_at: time::OffsetDateTime,
        ) -> Result<bool, StoreError> {
            self.hang_if(Step::AfterPublish).await;
            let done = self.store.complete(key, token, expires_at).await;
            self.hang_if(Step::BeforeDelete).await;
            done
        }

        async fn release(&self, key: &IdempotencyKey, token: &str) -> Result<(), StoreError> {
            self.store.release(key, token).await
        }
    }

    #[async_trait]
    impl RecordStore for Crashing {
        async fn read(&self, key: &str) -> Result<Option<StoredVersion>, StoreError> {
            self.hang_if(Step::AfterClaim).await;
            self.records.read(key).await
        }

        async fn write_if(
            &self,
            key: &str,
            expected: Option<&StoredVersion>,
            next: &StoredVersion,
        ) -> Result<bool, StoreError> {
            self.records.write_if(key, expected, next).await
        }

        async fn store_conflict(
            &self,
            key: &str,
            incoming: &StoredVersion,
        ) -> Result<(), StoreError> {
            self.records.store_conflict(key, incoming).await
        }
    }

    #[async_trait]
    impl EventBus for Crashing {
        async fn publish(&self, events: &[CloudEvent]) -> Result<(), PublishError> {
            self.hang_if(Step::AfterRecordWrite).await;
            self.bus.publish(events).await
        }
    }

    fn crashing(step: Step) -> (Arc<Crashing>, Arc<FixedClock>, Consumer<Arc<Crashing>>) {
        let crashing = Arc::new(Crashing {
            step,
            armed: AtomicBool::new(true),
            reached: tokio::sync::Notify::new(),
            store: Arc::new(InMemoryIdempotencyStore::default()),
            records: Arc::new(InMemoryRecordStore::default()),
            bus: Arc::new(InMemoryEventBus::default()),
        });
        let clock = Arc::new(FixedClock::at_unix(1_700_000_000));
        let consumer = Consumer::new(
            junction_catalog::Catalog::embedded().expect("catalog"),
            Idempotency::new(crashing.clone(), IdempotencyPolicy::default()),
            Ports {
                records: crashing.clone(),
                bus: crashing.clone(),
                payloads: Arc::new(InMemoryPayloadStore::default()),
                retries: Arc::new(InMemoryRetryScheduler::default()),
                clock: clock.clone(),
            },
            BACKOFF,
        );
        (crashing, clock, consumer)
    }

    /// Without a transaction, a crash can leave some of a batch's claims written and
    /// the others not. Each written one is an orphan until its lease ends, as after a
    /// crash right after the claim: SQS redelivers the whole batch after its
    /// visibility timeout, and each event is processed once.
    #[tokio::test]
    async fn a_crash_in_the_middle_of_a_batch_claim_is_recovered_on_redelivery() {
        let (crashing, clock, consumer) = crashing(Step::MidClaim);
        let batch: Vec<InboundMessage> = (1..=4)
            .map(|n| {
                let body = linear_issue("title", "2024-05-01T10:00:02.000Z")
                    .replace("iss-1", &format!("iss-{n}"));
                linear(&format!("d{n}"), &body)
            })
            .collect();
        tokio::select! {
            outcomes = consumer.process_batch(batch.clone()) => panic!("not cut off: {outcomes:?}"),
            () = crashing.reached.notified() => {}
        }
        let in_progress = (1..=4)
            .filter(|n| {
                crashing
                    .store
                    .get(&IdempotencyKey::new("linear", None, &format!("d{n}")))
                    .is_some_and(|record| !record.completed)
            })
            .count();
        assert_eq!(in_progress, 2, "half of the claims landed");

        crashing.armed.store(false, Ordering::SeqCst);
        clock.advance(time::Duration::seconds(180));
        let redelivered: Vec<InboundMessage> = batch
            .into_iter()
            .map(|mut message| {
                message.receive_count = 2;
                message
            })
            .collect();
        let outcomes = consumer.process_batch(redelivered).await;
        assert!(
            outcomes.iter().all(|o| o.result == ItemResult::Processed),
            "{outcomes:?}"
        );
        let events = crashing.bus.events();
        let ids: std::collections::BTreeSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!((events.len(), ids.len()), (4, 4), "one effect per event");
        for n in 1..=4 {
            let key = IdempotencyKey::new("linear", None, &format!("d{n}"));
            assert!(
                crashing.store.get(&key).is_some_and(|r| r.completed),
                "{key:?}"
            );
        }
    }

    async fn crash_then_redeliver(step: Step) {
        let (crashing, clock, consumer) = crashing(step);
        let delivery = linear("d1", &linear_issue("title", "2024-05-01T10:00:02.000Z"));
        // The processing future is dropped exactly at the crash step.
        tokio::select! {
            outcome = consumer.process(delivery.clone()) => panic!("{step:?}: not cut off: {outcome:?}"),
            () = crashing.reached.notified() => {}
        }

        // SQS redelivers after the visibility timeout, by which time the lease has run out.
        crashing.armed.store(false, Ordering::SeqCst);
        clock.advance(time::Duration::seconds(180));
        let mut redelivered = delivery;
        redelivered.receive_count = 2;
        let outcome = consumer.process(redelivered).await;
        let expected = if step == Step::BeforeDelete {
            ItemResult::Duplicate
        } else {
            ItemResult::Processed
        };
        assert_eq!(outcome.result, expected, "{step:?}: {outcome:?}");

        let key = RecordWrite::key("linear", None, "work_item", "iss-1");
        let stored = crashing
            .records
            .read(&key)
            .await
            .expect("read")
            .expect("one record");
        assert_eq!(stored.record["title"], "title", "{step:?}");
        let events = crashing.bus.events();
        let ids: std::collections::BTreeSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids.len(),
            1,
            "{step:?}: one effect, under one stable event id"
        );
        assert!(!events.is_empty(), "{step:?}: the change was published");
        let claim = crashing
            .store
            .get(&IdempotencyKey::new("linear", None, "d1"))
            .expect("record");
        assert!(claim.completed, "{step:?}: nothing left in progress");
    }

    #[tokio::test]
    async fn a_crash_after_the_claim_is_recovered_on_redelivery() {
        crash_then_redeliver(Step::AfterClaim).await;
    }

    #[tokio::test]
    async fn a_crash_after_the_record_write_is_recovered_on_redelivery() {
        crash_then_redeliver(Step::AfterRecordWrite).await;
    }

    #[tokio::test]
    async fn a_crash_after_the_publish_is_recovered_on_redelivery() {
        crash_then_redeliver(Step::AfterPublish).await;
    }

    #[tokio::test]
    async fn a_crash_before_the_delete_is_acknowledged_on_redelivery() {
        crash_then_redeliver(Step::BeforeDelete).await;
    }
}

#[tokio::test]
async fn published_events_report_their_end_to_end_latency() {
    let h = harness();
    let mut late = message("m1", "evt_1", &stripe_event("evt_1", 100), 1);
    late.attributes.insert(
        attribute::RECEIVED_AT.to_owned(),
        "2023-11-14T22:13:17.500Z".to_owned(),
    );
    late.attributes
        .insert(attribute::ACCOUNT.to_owned(), "acct_1".to_owned());
    late.receive_count = 2;
    let outcome = h.consumer.process(late).await;
    assert_eq!(outcome.result, ItemResult::Processed);
    assert_eq!(outcome.end_to_end, Some(Duration::from_millis(2_500)));
    // What its log line carries besides.
    assert_eq!(
        (
            outcome.connection.as_deref(),
            outcome.idempotency_key.as_deref(),
            outcome.attempt
        ),
        (Some("acct_1"), Some("stripe#acct_1#evt_1"), 2)
    );

    let mut repeat = message("m2", "evt_1", &stripe_event("evt_1", 100), 1);
    repeat
        .attributes
        .insert(attribute::ACCOUNT.to_owned(), "acct_1".to_owned());
    let repeat = h.consumer.process(repeat).await;
    assert_eq!(repeat.result, ItemResult::Duplicate);
    assert_eq!(repeat.end_to_end, None, "nothing published, no latency");
}

#[tokio::test]
async fn the_last_receive_of_a_failing_message_counts_as_a_dead_letter() {
    let h = harness();
    let consumer = h.consumer.with_max_receive_count(3);
    let mut broken = message("m1", "evt_1", "{}", 2);
    broken
        .attributes
        .insert(attribute::BODY_ENCODING.to_owned(), "rot13".to_owned());
    let outcome = consumer.process(broken.clone()).await;
    assert_eq!(
        (outcome.result, outcome.dead_lettered),
        (ItemResult::Failed, false),
        "receive 2 of 3: SQS delivers it again"
    );
    broken.receive_count = 3;
    let outcome = consumer.process(broken).await;
    assert_eq!(
        (outcome.result, outcome.dead_lettered),
        (ItemResult::Failed, true)
    );
    assert!(outcome.keeps_message());
}

/// A note store that always fails.
#[derive(Debug)]
struct BrokenNotes;

#[async_trait::async_trait]
impl crate::dead_letters::DeadLetterNotes for BrokenNotes {
    async fn record(
        &self,
        _: &str,
        _: &crate::dead_letters::DeadLetterNote,
    ) -> Result<(), crate::dead_letters::NoteError> {
        Err(crate::dead_letters::NoteError("table unavailable".into()))
    }

    async fn read(
        &self,
        _: &[String],
    ) -> Result<HashMap<String, crate::dead_letters::DeadLetterNote>, crate::dead_letters::NoteError>
    {
        Err(crate::dead_letters::NoteError("table unavailable".into()))
    }
}

fn rot13_message(id: &str, receive_count: u32) -> InboundMessage {
    let mut broken = message(id, "evt_1", "{}", receive_count);
    broken
        .attributes
        .insert(attribute::BODY_ENCODING.to_owned(), "rot13".to_owned());
    broken
}

#[tokio::test]
async fn the_last_receive_of_a_failing_message_notes_its_reason_for_the_dlq_listing() {
    use crate::dead_letters::{DeadLetterNote, DeadLetterNotes, InMemoryDeadLetterNotes};
    let notes = Arc::new(InMemoryDeadLetterNotes::default());
    let consumer = harness()
        .consumer
        .with_max_receive_count(3)
        .with_dead_letter_notes(notes.clone());
    let ids = vec!["m1".to_owned()];

    // GIVEN a message that cannot be processed, WHEN it fails before its last receive
    let early = consumer.process(rot13_message("m1", 2)).await;
    // THEN nothing is noted: SQS delivers it again.
    assert_eq!(
        (early.result, early.dead_lettered),
        (ItemResult::Failed, false)
    );
    assert!(notes.read(&ids).await.expect("read").is_empty());

    // WHEN it fails on its last receive THEN its reason is noted under its message id.
    let last = consumer.process(rot13_message("m1", 3)).await;
    assert!(last.dead_lettered);
    let noted = notes.read(&ids).await.expect("read");
    let expected = DeadLetterNote::new(
        last.reason.expect("a failure has a reason").as_str(),
        last.detail.as_deref(),
        3,
        OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time"),
    );
    assert_eq!(noted.get("m1"), Some(&expected));
}

#[tokio::test]
async fn a_failed_dead_letter_note_leaves_the_outcome_unchanged() {
    let plain = harness().consumer.with_max_receive_count(3);
    let broken_notes = harness()
        .consumer
        .with_max_receive_count(3)
        .with_dead_letter_notes(Arc::new(BrokenNotes));
    let mut without = plain.process(rot13_message("m1", 3)).await;
    let mut with = broken_notes.process(rot13_message("m1", 3)).await;
    without.latency = Duration::ZERO;
    with.latency = Duration::ZERO;
    assert!(with.dead_lettered && with.keeps_message());
    assert_eq!(with, without);
}

/// A Stripe Event object of exactly `size` bytes, padded in the invoice's description.
fn stripe_event_of_size(id: &str, size: usize) -> String {
    let event = |description: &str| {
        format!(
            r#"{{"id":"{id}","object":"event","type":"invoice.paid","created":1700000000,"data":{{"object":{{"id":"in_1","amount_paid":1,"description":"{description}"}}}}}}"#
        )
    };
    let padding = "x".repeat(size - event("").len());
    event(&padding)
}

/// Regression: a correctly signed Stripe event of 5,242,880 bytes (the ingress's
/// documented limit) was answered 200, then failed `publish_failed` on every receive
/// and stayed in the DLQ: EventBridge refuses a `PutEvents` entry over 256 KB. Its data
/// now travels by claim check.
#[tokio::test]
async fn regression_a_5_mib_stripe_event_is_published_by_claim_check() {
    let h = harness();
    let body = stripe_event_of_size("evt_big", 5_242_880);
    assert_eq!(body.len(), 5_242_880);
    // As the ingress enqueues it: the body in the payload bucket, the message points at it.
    let uri = h
        .payloads
        .put("webhooks/stripe/2023-11-14/big", body.as_bytes())
        .await
        .expect("put");
    let mut delivery = message("m1", "evt_big", &uri, 1);
    delivery
        .attributes
        .insert(attribute::BODY_ENCODING.into(), "s3".into());

    let outcome = h.consumer.process(delivery.clone()).await;
    assert_eq!(
        (outcome.result, outcome.reason, outcome.published),
        (ItemResult::Processed, None, 1),
        "{outcome:?}"
    );
    let events = h.bus.events();
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event.event_type, "provider_event.occurred");
    assert!(event.data.is_null(), "no inline data");
    let key = format!("events/{}.json", event.id);
    assert_eq!(
        event.dataref.as_deref(),
        Some(format!("s3://in-memory/{key}").as_str())
    );
    let stored = h
        .payloads
        .get(&key)
        .expect("the data is in the payload bucket");
    assert_eq!(event.datasize, Some(stored.len() as u64));
    let data: serde_json::Value = serde_json::from_slice(&stored).expect("JSON data");
    assert_eq!(data["item"], "provider_event");
    assert_eq!(data["mapping_version"], 1);
    let raw: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(data["raw"], raw, "the whole event reaches the subscriber");
    let (_, size) = event.entry().expect("entry");
    assert!(size <= junction_aws::events::PUT_EVENTS_MAX_BYTES, "{size}");
    assert!(
        h.store
            .get(&IdempotencyKey::new("stripe", None, "evt_big"))
            .is_some_and(|record| record.completed)
    );

    // A redelivery is acknowledged as a duplicate: nothing published twice.
    delivery.receive_count = 2;
    assert_eq!(
        h.consumer.process(delivery).await.result,
        ItemResult::Duplicate
    );
    assert_eq!(h.bus.events().len(), 1);
}

#[tokio::test]
async fn a_claim_check_the_bucket_refuses_retries_only_its_message() {
    let h = harness();
    let big = message(
        "m1",
        "evt_big",
        &stripe_event_of_size("evt_big", 300_000),
        1,
    );
    let small = message("m2", "evt_small", &stripe_event("evt_small", 1), 1);
    h.payloads.set_failing(true);
    let outcomes = h.consumer.process_batch(vec![big.clone(), small]).await;
    let results: Vec<_> = outcomes.iter().map(|o| (o.result, o.reason)).collect();
    assert_eq!(
        results,
        [
            (ItemResult::Retry, Some(ItemReason::PayloadStoreUnavailable)),
            (ItemResult::Processed, None)
        ]
    );
    assert!(
        h.store
            .get(&IdempotencyKey::new("stripe", None, "evt_big"))
            .is_none(),
        "its claim is released"
    );
    assert_eq!(h.bus.events().len(), 1, "only the small one");

    h.payloads.set_failing(false);
    let retried = h.consumer.process(big).await;
    assert_eq!(retried.result, ItemResult::Processed, "{retried:?}");
    assert!(h.bus.events()[1].dataref.is_some());
}

#[tokio::test]
async fn an_event_the_bus_can_never_take_fails_permanently_with_its_size() {
    let h = harness();
    // A subject (the endpoint) over the limit on its own: no claim check makes it fit.
    let mut oversized = message("m1", "evt_1", &stripe_event("evt_1", 1), 1);
    oversized
        .attributes
        .insert(attribute::ENDPOINT.into(), "e".repeat(300_000));
    let outcome = h.consumer.process(oversized).await;
    assert_eq!(
        (outcome.result, outcome.reason),
        (ItemResult::Failed, Some(ItemReason::EventTooLarge)),
        "{outcome:?}"
    );
    let detail = outcome.detail.expect("the cause is logged");
    assert!(
        detail.contains("provider_event.occurred")
            && detail.contains("bytes")
            && detail.contains("262144"),
        "{detail}"
    );
    assert!(
        h.store
            .get(&IdempotencyKey::new("stripe", None, "evt_1"))
            .is_none(),
        "its claim is released"
    );
    assert!(h.bus.events().is_empty());
}

/// The harness with an account index: `acme` connected Stripe account `acct_1`
/// (`conn_a`), and polled through `conn_p`, a connection without a provider account.
fn owned_harness() -> (Harness, Arc<crate::accounts::InMemoryAccountIndex>) {
    use crate::accounts::{AccountConnection, InMemoryAccountIndex};
    let mut h = harness();
    let index = Arc::new(InMemoryAccountIndex::default());
    let connection = |tenant: &str, id: &str, created_at| AccountConnection {
        tenant: tenant.into(),
        connection: id.into(),
        created_at,
    };
    index.connect(
        connection("acme", "conn_a", 100),
        Some(("stripe", "acct_1")),
    );
    index.connect(connection("acme", "conn_p", 100), None);
    h.consumer = h.consumer.with_account_index(index.clone());
    (h, index)
}

fn for_account(id: &str, event_id: &str, account: &str) -> InboundMessage {
    let mut message = message(id, event_id, &stripe_event(event_id, 100), 1);
    message
        .attributes
        .insert(attribute::ACCOUNT.into(), account.into());
    message
}

fn owner(tenant: &str, connection: &str) -> crate::accounts::Owner {
    crate::accounts::Owner {
        tenant: tenant.into(),
        connection: connection.into(),
    }
}

#[tokio::test]
async fn a_delivery_for_a_connected_account_is_stamped_with_its_tenant_and_connection() {
    let (h, _) = owned_harness();
    let outcome = h
        .consumer
        .process(for_account("m1", "evt_1", "acct_1"))
        .await;
    assert_eq!(outcome.result, ItemResult::Processed);
    assert_eq!(outcome.owners, [owner("acme", "conn_a")]);
    assert!(!outcome.unmatched);
    let events = h.bus.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].tenant.as_deref(), Some("acme"));
    assert_eq!(events[0].connection.as_deref(), Some("conn_a"));
    let unstamped = CloudEvent::stable_id("stripe", "evt_1", "0:provider_event:evt_1");
    assert_eq!(
        events[0].id,
        CloudEvent::new(
            "stripe",
            "evt_1",
            "0:provider_event:evt_1",
            String::new(),
            None,
            String::new(),
            serde_json::Value::Null,
        )
        .stamped("acme", "conn_a")
        .id,
        "the stamped id derives from the unstamped one ({unstamped}) and the tenant"
    );
}

#[tokio::test]
async fn an_unmatched_delivery_is_published_without_tenant_and_counted() {
    let (h, index) = owned_harness();
    let outcomes = h
        .consumer
        .process_batch(vec![
            for_account("m1", "evt_1", "acct_other"),
            // Names no account at all: nothing can match it, and nothing is looked up.
            message("m2", "evt_2", &stripe_event("evt_2", 100), 1),
        ])
        .await;
    for outcome in &outcomes {
        assert_eq!(outcome.result, ItemResult::Processed);
        assert!(outcome.unmatched, "{outcome:?}");
        assert!(outcome.owners.is_empty());
    }
    assert_eq!(index.lookups(), 1, "only the account is looked up");
    let events = h.bus.events();
    assert_eq!(events.len(), 2);
    for event in &events {
        assert_eq!((&event.tenant, &event.connection), (&None, &None));
        let json = serde_json::to_value(event).expect("json");
        assert!(json.get("tenant").is_none() && json.get("connection").is_none());
    }
    assert_eq!(
        events[0].id,
        CloudEvent::stable_id("stripe", "evt_1", "0:provider_event:evt_1"),
        "an unmatched event keeps the id it always had"
    );
    let metrics = crate::log::consumed_lines(&outcomes, false);
    let line: serde_json::Value =
        serde_json::from_slice(metrics.split(|b| *b == b'\n').next().expect("line")).expect("json");
    assert_eq!(line["UnmatchedDeliveries"], 2);
}

#[tokio::test]
async fn every_tenant_that_connected_the_account_gets_its_own_copy() {
    use crate::accounts::AccountConnection;
    let (h, index) = owned_harness();
    for (tenant, id, created_at) in [("beta", "conn_b", 300), ("acme", "conn_a2", 200)] {
        index.connect(
            AccountConnection {
                tenant: tenant.into(),
                connection: id.into(),
                created_at,
            },
            Some(("stripe", "acct_1")),
        );
    }
    let outcome = h
        .consumer
        .process(for_account("m1", "evt_1", "acct_1"))
        .await;
    assert_eq!(
        outcome.owners,
        [owner("acme", "conn_a2"), owner("beta", "conn_b")],
        "one per tenant, with its latest connection"
    );
    assert_eq!(outcome.published, 2);
    let events = h.bus.events();
    let stamps: Vec<(Option<&str>, Option<&str>)> = events
        .iter()
        .map(|e| (e.tenant.as_deref(), e.connection.as_deref()))
        .collect();
    assert_eq!(
        stamps,
        [
            (Some("acme"), Some("conn_a2")),
            (Some("beta"), Some("conn_b"))
        ]
    );
    assert_ne!(events[0].id, events[1].id);
    assert_eq!(events[0].data, events[1].data, "the same event, twice");
}

#[tokio::test]
async fn a_polled_record_is_stamped_with_the_connection_it_was_fetched_through() {
    let (h, index) = owned_harness();
    let polled = |id: &str, connection: &str, updated_at: &str| {
        let mut message = linear(id, &linear_issue("polled", updated_at));
        for (name, value) in [
            (attribute::ORIGIN, "poll"),
            (attribute::RESOURCE, "issue"),
            (attribute::CONNECTION, connection),
        ] {
            message.attributes.insert(name.into(), value.into());
        }
        message
    };
    let linear_record = |title: &str| {
        serde_json::json!({"id": "iss-1", "identifier": "ENG-1", "title": title, "priority": 2,
            "createdAt": "2024-04-30T09:00:00.000Z", "updatedAt": "2024-05-01T10:00:01.000Z",
            "state": {"id": "s1", "name": "Todo", "type": "unstarted"},
            "team": {"id": "t1", "key": "ENG", "name": "Engineering"}})
        .to_string()
    };
    let mut first = polled("p1", "conn_p", "2024-05-01T10:00:01.000Z");
    first.body = linear_record("polled");
    let outcome = h.consumer.process(first).await;
    assert_eq!(outcome.result, ItemResult::Processed, "{outcome:?}");
    assert_eq!(outcome.owners, [owner("acme", "conn_p")]);
    let events = h.bus.events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].tenant.as_deref(), events[0].connection.as_deref()),
        (Some("acme"), Some("conn_p"))
    );

    // A connection deleted since the poll: nobody to stamp, counted as unmatched.
    index.disconnect("conn_p");
    let mut gone = polled("p2", "conn_p", "2024-05-01T10:00:02.000Z");
    gone.body = linear_record("polled again").replace("10:00:01", "10:00:02");
    let outcome = h.consumer.process(gone).await;
    assert_eq!(outcome.result, ItemResult::Processed, "{outcome:?}");
    assert!(outcome.unmatched);
    assert_eq!(h.bus.events()[1].tenant, None);
}

#[tokio::test]
async fn an_unreadable_index_retries_the_message_instead_of_publishing_it_unstamped() {
    let (h, index) = owned_harness();
    index.set_failing(true);
    let outcome = h
        .consumer
        .process(for_account("m1", "evt_1", "acct_1"))
        .await;
    assert_eq!(
        (outcome.result, outcome.reason),
        (ItemResult::Retry, Some(ItemReason::AccountIndexUnavailable))
    );
    assert!(
        outcome
            .detail
            .as_deref()
            .is_some_and(|detail| detail.contains("set to fail")),
        "{outcome:?}"
    );
    assert!(!outcome.unmatched);
    assert!(h.bus.events().is_empty());
    assert!(
        h.store
            .get(&IdempotencyKey::new("stripe", Some("acct_1"), "evt_1"))
            .is_none(),
        "claim released"
    );
    index.set_failing(false);
    let outcome = h
        .consumer
        .process(for_account("m1", "evt_1", "acct_1"))
        .await;
    assert_eq!(outcome.result, ItemResult::Processed);
    assert_eq!(h.bus.events()[0].tenant.as_deref(), Some("acme"));
}

#[tokio::test]
async fn a_batch_looks_up_each_account_once_and_all_at_once() {
    let (h, index) = owned_harness();
    let batch = (0..10)
        .map(|n| {
            let account = if n % 2 == 0 { "acct_1" } else { "acct_2" };
            for_account(&format!("m{n}"), &format!("evt_{n}"), account)
        })
        .collect();
    let outcomes = h.consumer.process_batch(batch).await;
    assert!(outcomes.iter().all(|o| o.result == ItemResult::Processed));
    assert_eq!(index.lookups(), 2, "one lookup per distinct account");
    let stamped = h.bus.events().iter().filter(|e| e.tenant.is_some()).count();
    assert_eq!(stamped, 5);
    assert_eq!(outcomes.iter().filter(|o| o.unmatched).count(), 5);
    // A duplicate is acknowledged without being counted again.
    let again = h
        .consumer
        .process(for_account("m0", "evt_0", "acct_1"))
        .await;
    assert_eq!(again.result, ItemResult::Duplicate);
    assert!(!again.unmatched && again.owners.is_empty());
}

/// The owned harness recording last events in memory, where `conn_a` and `conn_p`
/// exist.
fn last_event_harness() -> (
    Harness,
    Arc<crate::accounts::InMemoryAccountIndex>,
    Arc<crate::last_events::InMemoryLastEvents>,
) {
    let (mut h, index) = owned_harness();
    let last_events = Arc::new(crate::last_events::InMemoryLastEvents::default());
    last_events.connect("conn_a");
    last_events.connect("conn_p");
    h.consumer = h.consumer.with_last_events(last_events.clone());
    (h, index, last_events)
}

fn received_at(mut message: InboundMessage, at: &str) -> InboundMessage {
    message
        .attributes
        .insert(attribute::RECEIVED_AT.into(), at.into());
    message
}

#[tokio::test]
async fn a_processed_webhook_records_when_it_arrived_on_its_connection_once_per_batch() {
    let (h, _, last_events) = last_event_harness();
    let outcomes = h
        .consumer
        .process_batch(vec![
            received_at(
                for_account("m1", "evt_1", "acct_1"),
                "2023-11-14T22:13:00.000Z",
            ),
            received_at(
                for_account("m2", "evt_2", "acct_1"),
                "2023-11-14T22:13:10.500Z",
            ),
            // Nobody's: nothing to record.
            for_account("m3", "evt_3", "acct_other"),
        ])
        .await;
    assert!(outcomes.iter().all(|o| o.result == ItemResult::Processed));
    assert_eq!(
        last_events.writes(),
        1,
        "one write for the batch's connection"
    );
    assert_eq!(
        last_events.last_event_at("conn_a"),
        Some(1_699_999_990),
        "the latest arrival of the batch (2023-11-14T22:13:10Z)"
    );
}

#[tokio::test]
async fn a_time_ahead_of_the_consumer_s_clock_is_recorded_as_now() {
    let (h, _, last_events) = last_event_harness();
    h.consumer
        .process(received_at(
            for_account("m1", "evt_1", "acct_1"),
            "2030-01-01T00:00:00.000Z",
        ))
        .await;
    assert_eq!(
        last_events.last_event_at("conn_a"),
        Some(1_700_000_000),
        "a skewed time would hold back every later delivery"
    );
}

#[tokio::test]
async fn failed_duplicate_and_polled_messages_record_nothing() {
    let (h, _, last_events) = last_event_harness();
    h.bus.set_failing(true);
    let outcome = h
        .consumer
        .process(for_account("m1", "evt_1", "acct_1"))
        .await;
    assert_eq!(outcome.result, ItemResult::Retry);
    assert_eq!(last_events.writes(), 0, "not processed: nothing recorded");
    h.bus.set_failing(false);
    h.consumer
        .process(for_account("m1", "evt_1", "acct_1"))
        .await;
    assert_eq!(last_events.writes(), 1);
    let duplicate = h
        .consumer
        .process(received_at(
            for_account("m2", "evt_1", "acct_1"),
            "2023-11-14T22:13:20.000Z",
        ))
        .await;
    assert_eq!(duplicate.result, ItemResult::Duplicate);
    assert_eq!(last_events.writes(), 1, "a duplicate is not a new delivery");

    // A polled record is the API's object itself, not a webhook envelope.
    let record = serde_json::json!({"id": "iss-1", "identifier": "ENG-1", "title": "polled",
        "priority": 2, "createdAt": "2024-04-30T09:00:00.000Z",
        "updatedAt": "2024-05-01T10:00:01.000Z",
        "state": {"id": "s1", "name": "Todo", "type": "unstarted"},
        "team": {"id": "t1", "key": "ENG", "name": "Engineering"}});
    let mut polled = linear("p1", &record.to_string());
    for (name, value) in [
        (attribute::ORIGIN, "poll"),
        (attribute::RESOURCE, "issue"),
        (attribute::CONNECTION, "conn_p"),
    ] {
        polled.attributes.insert(name.into(), value.into());
    }
    let outcome = h.consumer.process(polled).await;
    assert_eq!(outcome.owners, [owner("acme", "conn_p")], "{outcome:?}");
    assert_eq!(
        last_events.last_event_at("conn_p"),
        None,
        "a polled record is a sync, not an event"
    );
}

#[tokio::test]
async fn a_failing_last_event_store_never_fails_the_delivery() {
    let (h, _, last_events) = last_event_harness();
    last_events.set_failing(true);
    let outcome = h
        .consumer
        .process(for_account("m1", "evt_1", "acct_1"))
        .await;
    assert_eq!(outcome.result, ItemResult::Processed);
    assert!(!outcome.keeps_message());
    assert_eq!(h.bus.events().len(), 1);
    assert_eq!(last_events.writes(), 1, "it was tried");
}

#[tokio::test]
async fn a_deleted_connection_gets_no_last_event() {
    let (h, _, last_events) = last_event_harness();
    // Deleted after the account index answered (its cache can be a minute behind).
    last_events.disconnect("conn_a");
    let outcome = h
        .consumer
        .process(for_account("m1", "evt_1", "acct_1"))
        .await;
    assert_eq!(outcome.result, ItemResult::Processed);
    assert_eq!(last_events.last_event_at("conn_a"), None);
}

/// A harness whose consumer compares payload shapes, with the detector's clock (moved
/// between sightings so each new shape is the latest).
fn drift_harness() -> (
    Harness,
    Arc<crate::drift::InMemoryShapeStore>,
    Arc<FixedClock>,
) {
    let mut h = harness();
    let shapes = Arc::new(crate::drift::InMemoryShapeStore::default());
    let clock = Arc::new(FixedClock::at_unix(1_700_000_000));
    let detector = crate::drift::DriftDetector::new(shapes.clone(), h.bus.clone(), clock.clone());
    h.consumer = h.consumer.with_drift(Arc::new(detector));
    (h, shapes, clock)
}

fn schema_changes(bus: &InMemoryEventBus) -> Vec<CloudEvent> {
    bus.events()
        .into_iter()
        .filter(|event| event.event_type == crate::drift::SCHEMA_CHANGED)
        .collect()
}

#[tokio::test]
async fn an_evolving_schema_is_announced_once_per_new_shape_with_its_diff() {
    let (h, shapes, clock) = drift_harness();
    for n in 0..3 {
        let id = format!("evt_{n}");
        let outcome = h
            .consumer
            .process(message(&id, &id, &stripe_event(&id, 100 + n), 1))
            .await;
        assert_eq!(outcome.result, ItemResult::Processed);
    }
    assert!(
        schema_changes(&h.bus).is_empty(),
        "an unchanged schema says nothing"
    );
    clock.advance(time::Duration::minutes(5));
    // The provider drops `object`, sends `amount_paid` as text and adds `livemode`.
    let evolved = |id: &str| {
        format!(
            r#"{{"id":"{id}","type":"invoice.paid","created":1700000000,"livemode":false,"data":{{"object":{{"id":"in_1","amount_paid":"100"}}}}}}"#
        )
    };
    for id in ["evt_10", "evt_11"] {
        let outcome = h.consumer.process(message(id, id, &evolved(id), 1)).await;
        assert_eq!(outcome.result, ItemResult::Processed, "{outcome:?}");
    }
    let announced = schema_changes(&h.bus);
    assert_eq!(announced.len(), 1, "{announced:?}");
    let data = &announced[0].data;
    assert_eq!(announced[0].source, "junction/stripe");
    assert_eq!(announced[0].providereventid, "evt_10");
    assert_eq!(data["event_type"], "invoice.paid");
    assert_eq!(
        data["added"],
        serde_json::json!([{"path": "$.livemode", "type": "boolean"}])
    );
    assert_eq!(
        data["removed"],
        serde_json::json!([{"path": "$.object", "type": "string"}])
    );
    assert_eq!(
        data["changed"],
        serde_json::json!([{"path": "$.data.object.amount_paid", "from": "number", "to": "string"}])
    );
    let key = crate::drift::ShapeKey::for_event("stripe", None, Some("invoice.paid"));
    assert_eq!(shapes.shapes(&key).len(), 2);
    // Both deliveries were still published as events.
    assert_eq!(h.bus.events().len(), 6);
}

#[tokio::test]
async fn a_mapping_failure_names_the_diff_against_the_last_known_shape() {
    let (h, _, clock) = drift_harness();
    let outcome = h
        .consumer
        .process(linear(
            "d1",
            &linear_issue("Fix login", "2024-05-01T10:00:00.000Z"),
        ))
        .await;
    assert_eq!(outcome.result, ItemResult::Processed, "{outcome:?}");
    clock.advance(time::Duration::minutes(5));
    // Linear renames the issue id: the adapter cannot map it.
    let renamed = linear_issue("Fix login", "2024-05-02T10:00:00.000Z")
        .replace(r#""id":"iss-1""#, r#""issueId":"iss-1""#);
    let outcome = h.consumer.process(linear("d2", &renamed)).await;
    assert_eq!(
        (outcome.result, outcome.reason),
        (ItemResult::Failed, Some(ItemReason::UnmappablePayload))
    );
    let detail = outcome.detail.unwrap_or_default();
    assert!(detail.starts_with("linear.webhook"), "{detail}");
    assert!(
        detail.contains(
            "the payload's shape differs from the last known one: added $.data.issueId (string); removed $.data.id (string)"
        ),
        "{detail}"
    );
    // The new shape is announced even though its delivery failed.
    let announced = schema_changes(&h.bus);
    assert_eq!(announced.len(), 1);
    assert_eq!(
        announced[0].data["removed"],
        serde_json::json!([{"path": "$.data.id", "type": "string"}])
    );
    // A second failure of the same shape still names the diff, without a second event.
    let outcome = h
        .consumer
        .process(linear("d3", &renamed.replace("d2", "d3")))
        .await;
    assert!(
        outcome
            .detail
            .unwrap_or_default()
            .contains("removed $.data.id")
    );
    assert_eq!(schema_changes(&h.bus).len(), 1);
}

#[tokio::test]
async fn a_failing_shape_store_never_fails_the_delivery() {
    #[derive(Debug)]
    struct Broken;
    #[async_trait::async_trait]
    impl crate::drift::ShapeStore for Broken {
        async fn get(
            &self,
            _: &crate::drift::ShapeKey,
            _: &crate::drift::Fingerprint,
        ) -> Result<Option<crate::drift::KnownShape>, crate::drift::ShapeStoreError> {
            Err(crate::drift::ShapeStoreError("down".into()))
        }
        async fn latest(
            &self,
            _: &crate::drift::ShapeKey,
        ) -> Result<Option<crate::drift::KnownShape>, crate::drift::ShapeStoreError> {
            Err(crate::drift::ShapeStoreError("down".into()))
        }
        async fn record(
            &self,
            _: &crate::drift::ShapeKey,
            _: &crate::drift::KnownShape,
        ) -> Result<bool, crate::drift::ShapeStoreError> {
            Err(crate::drift::ShapeStoreError("down".into()))
        }
        async fn forget(
            &self,
            _: &crate::drift::ShapeKey,
            _: &crate::drift::Fingerprint,
        ) -> Result<(), crate::drift::ShapeStoreError> {
            Err(crate::drift::ShapeStoreError("down".into()))
        }
    }
    let mut h = harness();
    let detector = crate::drift::DriftDetector::new(
        Arc::new(Broken),
        h.bus.clone(),
        Arc::new(FixedClock::at_unix(1_700_000_000)),
    );
    h.consumer = h.consumer.with_drift(Arc::new(detector));
    let outcome = h
        .consumer
        .process(message("m1", "evt_1", &stripe_event("evt_1", 1), 1))
        .await;
    assert_eq!(outcome.result, ItemResult::Processed);
    assert_eq!(h.bus.events().len(), 1);
}
