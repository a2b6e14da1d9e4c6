//! The event consumer against the AWS emulator: the DynamoDB idempotency store meets
//! the same contract as the in-memory one, and duplicates delivered concurrently turn
//! into exactly one CloudEvent each on a real EventBridge bus (observed through a rule
//! targeting an SQS queue).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use junction_aws::clock::SystemClock;
use junction_aws::events::{CloudEvent, EventBridgeBus};
use junction_aws::payloads::S3PayloadStore;
use junction_aws::queue::{SqsRetryScheduler, attribute};
use junction_aws::retry::Backoff;
use junction_pipeline::consumer::{Consumer, InboundMessage, ItemReason, ItemResult, Ports};
use junction_pipeline::idempotency::{
    ClaimOutcome, DynamoIdempotencyStore, Idempotency, IdempotencyKey, IdempotencyPolicy,
    check_store_contract,
};
use junction_pipeline::records::{
    DynamoRecordStore, check_store_contract as check_record_contract,
};
use junction_tests::{create_table, emulator};

#[tokio::test]
async fn dynamodb_record_store_meets_the_conflict_rules() {
    let (_moto, aws) = emulator().await;
    create_table(&aws, "records", "pk").await;
    check_record_contract(&DynamoRecordStore::from_config(&aws, "records")).await;
}

#[tokio::test]
async fn dynamodb_store_meets_the_idempotency_contract() {
    let (_moto, aws) = emulator().await;
    create_table(&aws, "idempotency", "pk").await;
    check_store_contract(
        DynamoIdempotencyStore::from_config(&aws, "idempotency"),
        "contract",
    )
    .await;
}

#[tokio::test]
async fn dynamodb_dead_letter_notes_read_back_and_expire_with_the_dlq() {
    use junction_pipeline::dead_letters::{
        DeadLetterNote, DeadLetterNotes, DynamoDeadLetterNotes, KEY_PREFIX,
    };
    let (_moto, aws) = emulator().await;
    create_table(&aws, "idempotency", "pk").await;
    let notes = DynamoDeadLetterNotes::from_config(&aws, "idempotency");
    let at = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time");
    let note = DeadLetterNote::new("unmappable", Some("missing field `id`"), 5, at);
    notes.record("m-1", &note).await.expect("noted");
    notes
        .record("m-2", &DeadLetterNote::new("invalid_json", None, 5, at))
        .await
        .expect("noted");

    // Read among 150 ids (two BatchGetItem requests), most without a note.
    let mut ids: Vec<String> = (0..148).map(|n| format!("none-{n}")).collect();
    ids.push("m-2".to_owned());
    ids.push("m-1".to_owned());
    let found = notes.read(&ids).await.expect("read");
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found.get("m-1"), Some(&note));
    assert_eq!(
        found
            .get("m-2")
            .map(|n| (n.reason.as_str(), n.detail.clone())),
        Some(("invalid_json", None))
    );

    // The item expires with the DLQ's 14-day retention, through the table's TTL.
    let item = aws_sdk_dynamodb::Client::new(&aws)
        .get_item()
        .table_name("idempotency")
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("{KEY_PREFIX}m-1")),
        )
        .send()
        .await
        .expect("read")
        .item
        .expect("the note's item");
    assert_eq!(
        item.get("expires_at").and_then(|v| v.as_n().ok()).cloned(),
        Some((1_700_000_000 + 14 * 86_400).to_string())
    );
}

/// The payload bucket of [`dynamo_consumer`]; created by the tests that use it.
const PAYLOAD_BUCKET: &str = "payloads";

/// A consumer on the emulator's `idempotency` and `records` tables.
fn dynamo_consumer(
    aws: &aws_config::SdkConfig,
    bus: Arc<dyn junction_aws::events::EventBus>,
    retries: Arc<dyn junction_aws::queue::RetryScheduler>,
) -> Consumer<DynamoIdempotencyStore> {
    Consumer::new(
        junction_catalog::Catalog::embedded().expect("catalog"),
        Idempotency::new(
            DynamoIdempotencyStore::from_config(aws, "idempotency"),
            IdempotencyPolicy::default(),
        ),
        Ports {
            records: Arc::new(DynamoRecordStore::from_config(aws, "records")),
            bus,
            payloads: Arc::new(S3PayloadStore::from_config(aws, PAYLOAD_BUCKET)),
            retries,
            clock: Arc::new(SystemClock),
        },
        Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(4),
        },
    )
}

const EVENTS: usize = 100;
const COPIES: usize = 10;
const WORKERS: usize = 16;

#[tokio::test]
async fn thirty_two_concurrent_copies_of_one_event_have_one_effect() {
    let (_moto, aws) = emulator().await;
    create_table(&aws, "idempotency", "pk").await;
    create_table(&aws, "records", "pk").await;
    let bus = Arc::new(junction_aws::events::InMemoryEventBus::default());
    // Retries are driven by the test: the in-memory scheduler just records them.
    let consumer = Arc::new(dynamo_consumer(
        &aws,
        bus.clone(),
        Arc::new(junction_aws::queue::InMemoryRetryScheduler::default()),
    ));
    let copies: Vec<_> = (0..32)
        .map(|copy| {
            let consumer = consumer.clone();
            tokio::spawn(async move { consumer.process(message(7, copy)).await })
        })
        .collect();
    let mut results = Vec::new();
    for copy in copies {
        results.push(copy.await.expect("task").result);
    }
    assert_eq!(
        results
            .iter()
            .filter(|r| **r == ItemResult::Processed)
            .count(),
        1,
        "{results:?}"
    );
    assert!(
        results.iter().all(|r| matches!(
            *r,
            ItemResult::Processed | ItemResult::Retry | ItemResult::Duplicate
        )),
        "the losers are retried later (batch item failures) or, once the winner completed, acknowledged: {results:?}"
    );
    assert_eq!(bus.events().len(), 1, "one effect");
}

#[tokio::test]
async fn concurrent_duplicates_become_exactly_one_cloudevent_each() {
    let (_moto, aws) = emulator().await;
    create_table(&aws, "idempotency", "pk").await;
    create_table(&aws, "records", "pk").await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let observed_url = sqs
        .create_queue()
        .queue_name("observed")
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url");
    let observed_arn = "arn:aws:sqs:us-east-1:123456789012:observed";
    let events = aws_sdk_eventbridge::Client::new(&aws);
    events
        .create_event_bus()
        .name("junction-events")
        .send()
        .await
        .expect("bus");
    events
        .put_rule()
        .name("everything")
        .event_bus_name("junction-events")
        .event_pattern(r#"{"source":[{"prefix":"junction/"}]}"#)
        .send()
        .await
        .expect("rule");
    events
        .put_targets()
        .rule("everything")
        .event_bus_name("junction-events")
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("observed")
                .arn(observed_arn)
                .build()
                .expect("target"),
        )
        .send()
        .await
        .expect("target");

    // Retries are driven by this test; a fake receipt handle makes the visibility call
    // fail harmlessly.
    let consumer = Arc::new(dynamo_consumer(
        &aws,
        Arc::new(EventBridgeBus::from_config(&aws, "junction-events")),
        Arc::new(SqsRetryScheduler::from_config(&aws, &observed_url)),
    ));

    // Every event EVENTS × COPIES times, interleaved, worked by WORKERS tasks. A copy that
    // finds its event in progress elsewhere is retried, as SQS would redeliver it.
    let queue: Vec<InboundMessage> = (0..COPIES)
        .flat_map(|copy| (0..EVENTS).map(move |n| message(n, copy)))
        .collect();
    let queue = Arc::new(tokio::sync::Mutex::new(queue));
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (queue, consumer) = (queue.clone(), consumer.clone());
        workers.push(tokio::spawn(async move {
            let mut tally: BTreeMap<ItemResult, usize> = BTreeMap::new();
            loop {
                let Some(next) = queue.lock().await.pop() else {
                    return tally;
                };
                let outcome = consumer.process(next.clone()).await;
                *tally.entry(outcome.result).or_default() += 1;
                if outcome.keeps_message() {
                    assert_eq!(
                        outcome.reason,
                        Some(ItemReason::InProgressElsewhere),
                        "{outcome:?}"
                    );
                    let mut again = next;
                    again.receive_count += 1;
                    assert!(
                        again.receive_count < 1000,
                        "a retry never converged: {outcome:?}"
                    );
                    queue.lock().await.insert(0, again);
                }
            }
        }));
    }
    let mut tally: BTreeMap<ItemResult, usize> = BTreeMap::new();
    for worker in workers {
        for (result, count) in worker.await.expect("worker") {
            *tally.entry(result).or_default() += count;
        }
    }
    assert_eq!(
        tally.get(&ItemResult::Processed),
        Some(&EVENTS),
        "{tally:?}"
    );
    assert_eq!(
        tally.get(&ItemResult::Duplicate),
        Some(&(EVENTS * (COPIES - 1))),
        "{tally:?}"
    );

    // Exactly one CloudEvent per event reached the bus's target.
    let mut ids = std::collections::BTreeSet::new();
    let mut received = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while received < EVENTS + 1 && std::time::Instant::now() < deadline {
        let batch = sqs
            .receive_message()
            .queue_url(&observed_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive")
            .messages
            .unwrap_or_default();
        if batch.is_empty() && received >= EVENTS {
            break;
        }
        for m in batch {
            let envelope: serde_json::Value =
                serde_json::from_str(m.body().unwrap_or_default()).expect("eventbridge envelope");
            let event: CloudEvent =
                serde_json::from_value(envelope["detail"].clone()).expect("a CloudEvent");
            ids.insert(event.providereventid);
            received += 1;
            sqs.delete_message()
                .queue_url(&observed_url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("delete");
        }
    }
    assert_eq!(
        received, EVENTS,
        "one bus event per distinct event, no duplicates"
    );
    assert_eq!(ids.len(), EVENTS);

    // Nothing is left in progress.
    let items = aws_sdk_dynamodb::Client::new(&aws)
        .scan()
        .table_name("idempotency")
        .send()
        .await
        .expect("scan")
        .items
        .unwrap_or_default();
    assert_eq!(items.len(), EVENTS);
    assert!(items.iter().all(|item| {
        item.get("status")
            .and_then(|s| s.as_s().ok())
            .map(String::as_str)
            == Some("completed")
    }));
}

fn message(n: usize, copy: usize) -> InboundMessage {
    let event_id = format!("evt_{n:03}");
    let attributes = [
        (attribute::PROVIDER, "stripe".to_owned()),
        (attribute::EVENT_ID, event_id.clone()),
        (attribute::BODY_ENCODING, "utf8".to_owned()),
        (
            attribute::RECEIVED_AT,
            "2024-01-02T03:04:05.000Z".to_owned(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    InboundMessage {
        message_id: format!("m-{n}-{copy}"),
        receipt_handle: format!("not-a-real-handle-{n}-{copy}"),
        body: format!(r#"{{"id":"{event_id}","type":"invoice.paid"}}"#),
        attributes,
        receive_count: 1,
    }
}

/// AWS calls per event, counted at the endpoint (a proxy in front of the emulator):
/// printed as the benchmark figure, and asserted so a change that adds a call per event
/// is seen.
#[tokio::test]
async fn aws_calls_per_event_counted_at_the_endpoint() {
    let (moto, aws) = emulator().await;
    create_table(&aws, "idempotency", "pk").await;
    create_table(&aws, "records", "pk").await;
    aws_sdk_eventbridge::Client::new(&aws)
        .create_event_bus()
        .name("junction-events")
        .send()
        .await
        .expect("bus");
    let counter = junction_tests::call_counter::CallCounter::start(moto.endpoint()).await;
    let counted = aws.to_builder().endpoint_url(counter.endpoint()).build();
    let consumer = dynamo_consumer(
        &counted,
        Arc::new(EventBridgeBus::from_config(&counted, "junction-events")),
        Arc::new(junction_aws::queue::InMemoryRetryScheduler::default()),
    );
    const N: usize = 20;
    let per_event = |counts: &BTreeMap<String, usize>| {
        counts
            .iter()
            .map(|(operation, count)| format!("{operation} {:.2}", *count as f64 / N as f64))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for n in 0..N {
        let outcome = consumer.process(message(n, 0)).await;
        assert_eq!(outcome.result, ItemResult::Processed, "{outcome:?}");
    }
    let passthrough = counter.take();
    for n in 0..N {
        let outcome = consumer.process(linear_issue(n)).await;
        assert_eq!(outcome.result, ItemResult::Processed, "{outcome:?}");
    }
    let records = counter.take();
    println!(
        "AWS calls per pass-through event (Stripe): {}",
        per_event(&passthrough)
    );
    println!(
        "AWS calls per record event (Linear issue): {}",
        per_event(&records)
    );
    let total = |counts: &BTreeMap<String, usize>| counts.values().sum::<usize>();
    assert_eq!(
        total(&passthrough),
        3 * N,
        "claim, publish, complete: {passthrough:?}"
    );
    assert_eq!(
        total(&records),
        5 * N,
        "claim, record read and conditional write, publish, complete: {records:?}"
    );
    assert_eq!(records.get("events:PutEvents"), Some(&N));

    // As the Lambda runs it: batches of 10 share one publish and one completion.
    for batch in 0..N / 10 {
        let messages = (0..10).map(|n| message(100 + batch * 10 + n, 0)).collect();
        let outcomes = consumer.process_batch(messages).await;
        assert!(
            outcomes.iter().all(|o| o.result == ItemResult::Processed),
            "{outcomes:?}"
        );
    }
    let batched = counter.take();
    println!(
        "AWS calls per pass-through event in batches of 10: {}",
        per_event(&batched)
    );
    assert_eq!(
        batched,
        BTreeMap::from([
            ("dynamodb:PutItem".to_owned(), N),
            ("dynamodb:BatchWriteItem".to_owned(), N / 10),
            ("events:PutEvents".to_owned(), N / 10),
        ]),
        "a conditional claim per message (1 write unit each, not a transaction's 2), one \
         completion write and one publish per batch"
    );

    // A batch with a duplicate of a completed event and a copy within the batch: the
    // duplicate's claim fails its condition and brings the stored record back with it
    // (no read), the copy is not claimed at all.
    let mut messages: Vec<InboundMessage> = (0..8).map(|n| message(200 + n, 0)).collect();
    messages.push(message(100, 1)); // completed in the first batch above
    messages.push(message(200, 1)); // a copy of this batch's first message
    let outcomes = consumer.process_batch(messages).await;
    let results: Vec<ItemResult> = outcomes.iter().map(|o| o.result).collect();
    assert_eq!(
        results,
        [
            [ItemResult::Processed; 8].as_slice(),
            &[ItemResult::Duplicate, ItemResult::Duplicate]
        ]
        .concat(),
        "{outcomes:?}"
    );
    let retried = counter.take();
    assert_eq!(
        retried,
        BTreeMap::from([
            ("dynamodb:PutItem".to_owned(), 9),
            ("dynamodb:BatchWriteItem".to_owned(), 1),
            ("events:PutEvents".to_owned(), 1),
        ]),
        "{retried:?}"
    );
}

/// Batches overlapping on their keys, claimed at the same time by several workers (as
/// Lambda runs several consumer environments): every key is claimed by exactly one,
/// the others find it in progress. The emulator's proxy lets one DynamoDB request
/// through at a time (moto's conditional writes are not atomic, docs/local-stack.md),
/// which DynamoDB guarantees per item; the claims themselves are concurrent.
#[tokio::test]
async fn overlapping_batches_claim_each_key_once() {
    let (_moto, aws) = emulator().await;
    create_table(&aws, "idempotency", "pk").await;
    let idempotency = Arc::new(Idempotency::new(
        DynamoIdempotencyStore::from_config(&aws, "idempotency"),
        IdempotencyPolicy::default(),
    ));
    const KEYS: usize = 25;
    const BATCHES: usize = 4;
    let now = time::OffsetDateTime::now_utc();
    let tasks: Vec<_> = (0..BATCHES)
        .map(|worker| {
            let idempotency = idempotency.clone();
            // Each worker has its own order of the same keys (multipliers 1 to 4 are
            // coprime with 25: a permutation).
            let batch: Vec<(IdempotencyKey, String)> = (0..KEYS)
                .map(|n| (n * (worker + 1) + 7 * worker) % KEYS)
                .map(|n| {
                    let key = IdempotencyKey::new("stripe", None, &format!("evt_{n}"));
                    (key, "hash".to_owned())
                })
                .collect();
            tokio::spawn(async move {
                let outcomes = idempotency.claim_all(&batch, now).await;
                batch
                    .into_iter()
                    .zip(outcomes)
                    .map(|((key, _), outcome)| (key, outcome.expect("the store answers")))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut claimed: BTreeMap<String, usize> = BTreeMap::new();
    for task in tasks {
        for (key, outcome) in task.await.expect("task") {
            match outcome {
                ClaimOutcome::Claimed(_) => {
                    *claimed.entry(key.as_str().to_owned()).or_default() += 1
                }
                ClaimOutcome::InProgressElsewhere { .. } => {
                    claimed.entry(key.as_str().to_owned()).or_default();
                }
                other => panic!("{key:?}: {other:?}"),
            }
        }
    }
    assert_eq!(claimed.len(), KEYS);
    assert!(claimed.values().all(|count| *count == 1), "{claimed:?}");
}

/// A Linear issue webhook (https://linear.app/developers/webhooks), trimmed.
fn linear_issue(n: usize) -> InboundMessage {
    let mut message = message(n, 0);
    message
        .attributes
        .insert(attribute::PROVIDER.into(), "linear".into());
    message
        .attributes
        .insert(attribute::EVENT_ID.into(), format!("linear-delivery-{n}"));
    message.body = format!(
        r#"{{"action":"update","type":"Issue","webhookTimestamp":1714557600000,"data":{{"id":"issue-{n}","identifier":"ENG-{n}","title":"Issue {n}","priority":2,"createdAt":"2024-04-30T09:00:00.000Z","updatedAt":"2024-05-01T10:00:00.000Z","state":{{"id":"s1","name":"Todo","type":"unstarted"}},"team":{{"id":"t1","key":"ENG","name":"Engineering"}}}}}}"#
    );
    message
}

/// The consumer's retry scheduler (`ChangeMessageVisibility`): a failed message comes
/// back after the retry delay and not before; a receipt handle SQS does not know is an
/// error naming SQS's code.
#[tokio::test]
async fn a_scheduled_retry_brings_the_message_back_after_the_delay() {
    use junction_aws::queue::RetryScheduler;
    let (_moto, aws) = emulator().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let queue_url = sqs
        .create_queue()
        .queue_name("retried")
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            "300",
        )
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url");
    sqs.send_message()
        .queue_url(&queue_url)
        .message_body("fails once")
        .send()
        .await
        .expect("sent");
    let receive = |wait: i32| {
        sqs.receive_message()
            .queue_url(&queue_url)
            .wait_time_seconds(wait)
            .send()
    };
    let first = receive(0)
        .await
        .expect("receive")
        .messages
        .unwrap_or_default();
    let handle = first[0].receipt_handle.clone().expect("receipt handle");

    let scheduler = SqsRetryScheduler::from_config(&aws, &queue_url);
    scheduler
        .retry_after(&handle, Duration::from_secs(2))
        .await
        .expect("visibility changed");
    let hidden = receive(0)
        .await
        .expect("receive")
        .messages
        .unwrap_or_default();
    assert!(hidden.is_empty(), "visible before its delay: {hidden:?}");
    let mut back = Vec::new();
    for _ in 0..10 {
        back = receive(1)
            .await
            .expect("receive")
            .messages
            .unwrap_or_default();
        if !back.is_empty() {
            break;
        }
    }
    assert_eq!(
        back.len(),
        1,
        "back after the delay (not the queue's 300 s)"
    );
    assert_eq!(back[0].body.as_deref(), Some("fails once"));

    let err = scheduler
        .retry_after("not-a-receipt-handle", Duration::from_secs(1))
        .await
        .expect_err("unknown receipt handle");
    let cause = std::error::Error::source(&err).expect("cause").to_string();
    assert!(cause.contains("ReceiptHandleIsInvalid"), "{cause}");
}

/// A bus named `junction-events` with a rule delivering every `junction/*` event to a
/// new queue, as a subscriber would: returns the queue's URL.
async fn observed_bus(aws: &aws_config::SdkConfig) -> String {
    let sqs = aws_sdk_sqs::Client::new(aws);
    let url = sqs
        .create_queue()
        .queue_name("observed")
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url");
    let events = aws_sdk_eventbridge::Client::new(aws);
    events
        .create_event_bus()
        .name("junction-events")
        .send()
        .await
        .expect("bus");
    events
        .put_rule()
        .name("everything")
        .event_bus_name("junction-events")
        .event_pattern(r#"{"source":[{"prefix":"junction/"}]}"#)
        .send()
        .await
        .expect("rule");
    events
        .put_targets()
        .rule("everything")
        .event_bus_name("junction-events")
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("observed")
                .arn("arn:aws:sqs:us-east-1:123456789012:observed")
                .build()
                .expect("target"),
        )
        .send()
        .await
        .expect("target");
    url
}

/// Receives `count` CloudEvents from the observed queue (or fails after a minute).
async fn observe(aws: &aws_config::SdkConfig, url: &str, count: usize) -> Vec<CloudEvent> {
    let events =
        junction_tests::bus_events(aws, url, Duration::from_secs(60), |n| n >= count).await;
    assert!(
        events.len() >= count,
        "{} of {count} events observed",
        events.len()
    );
    events
        .into_iter()
        .map(|event| serde_json::from_value(event).expect("a CloudEvent"))
        .collect()
}

/// A Stripe event of exactly `size` bytes (padded in the invoice's description).
fn sized_stripe_event(event_id: &str, size: usize) -> String {
    let event = |description: &str| {
        format!(
            r#"{{"id":"{event_id}","object":"event","type":"invoice.paid","created":1700000000,"data":{{"object":{{"id":"in_1","description":"{description}"}}}}}}"#
        )
    };
    event(&"x".repeat(size - event("").len()))
}

/// With the emulator refusing what EventBridge refuses: a batch whose events total over
/// 256 KB is split across `PutEvents` calls, and a 5 MiB event (stored in S3 by the
/// ingress) reaches the subscriber by claim check: `dataref` names an S3 object holding
/// its data, which the subscriber reads with `s3:GetObject`.
#[tokio::test]
async fn events_over_the_bus_limit_reach_the_subscriber_by_claim_check() {
    let (_moto, aws) = emulator().await;
    create_table(&aws, "idempotency", "pk").await;
    create_table(&aws, "records", "pk").await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&aws)
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket()
        .bucket(PAYLOAD_BUCKET)
        .send()
        .await
        .expect("bucket");
    let observed = observed_bus(&aws).await;
    let consumer = dynamo_consumer(
        &aws,
        Arc::new(EventBridgeBus::from_config(&aws, "junction-events")),
        Arc::new(junction_aws::queue::InMemoryRetryScheduler::default()),
    );

    // Three events of ~100 KB each (over 256 KB together), and one of 5 MiB whose body
    // the ingress put in the payload bucket.
    let mut messages: Vec<InboundMessage> = (0..3)
        .map(|n| {
            let mut m = message(n, 0);
            m.body = sized_stripe_event(&format!("evt_{n:03}"), 100_000);
            m
        })
        .collect();
    let big_body = sized_stripe_event("evt_big", 5_242_880);
    let payloads = S3PayloadStore::from_config(&aws, PAYLOAD_BUCKET);
    let uri = junction_aws::payloads::PayloadStore::put(
        &payloads,
        "webhooks/stripe/2024-01-02/big",
        big_body.as_bytes(),
    )
    .await
    .expect("body stored");
    let mut big = message(9, 0);
    big.attributes
        .insert(attribute::EVENT_ID.into(), "evt_big".into());
    big.attributes
        .insert(attribute::BODY_ENCODING.into(), "s3".into());
    big.body = uri;
    messages.push(big);

    let outcomes = consumer.process_batch(messages).await;
    assert!(
        outcomes
            .iter()
            .all(|o| o.result == ItemResult::Processed && o.published == 1),
        "{outcomes:?}"
    );

    let mut events = observe(&aws, &observed, 4).await;
    events.sort_by(|a, b| a.providereventid.cmp(&b.providereventid));
    let ids: Vec<&str> = events.iter().map(|e| e.providereventid.as_str()).collect();
    assert_eq!(ids, ["evt_000", "evt_001", "evt_002", "evt_big"]);
    for inline in &events[..3] {
        assert!(inline.dataref.is_none(), "{:?}", inline.dataref);
        assert!(inline.data["raw"]["data"]["object"]["description"].is_string());
    }
    let claimed = &events[3];
    assert!(claimed.data.is_null(), "no inline data");
    let dataref = claimed.dataref.as_deref().expect("a dataref");
    let key = format!("events/{}.json", claimed.id);
    assert_eq!(dataref, format!("s3://{PAYLOAD_BUCKET}/{key}"));

    // What a subscriber does: GetObject on the bucket and key the URI names.
    let url = url::Url::parse(dataref).expect("an absolute URI");
    assert_eq!(url.scheme(), "s3");
    let object = s3
        .get_object()
        .bucket(url.host_str().expect("bucket"))
        .key(url.path().trim_start_matches('/'))
        .send()
        .await
        .expect("the subscriber reads the data");
    assert_eq!(object.content_type(), Some("application/json"));
    let bytes = object.body.collect().await.expect("body").into_bytes();
    assert_eq!(claimed.datasize, Some(bytes.len() as u64));
    let data: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON data");
    assert_eq!(data["item"], "provider_event");
    let raw: serde_json::Value = serde_json::from_str(&big_body).expect("JSON body");
    assert_eq!(data["raw"], raw, "the whole 5 MiB event");
}

/// The bus adapter never sends an entry EventBridge would refuse: it reports it with
/// its size and publishes the rest of the call.
#[tokio::test]
async fn the_bus_adapter_refuses_an_oversized_event_with_its_size() {
    use junction_aws::events::{EventBus, PUT_EVENTS_MAX_BYTES, Refusal};
    let (_moto, aws) = emulator().await;
    let observed = observed_bus(&aws).await;
    let bus = EventBridgeBus::from_config(&aws, "junction-events");
    let event = |n: usize, size: usize| {
        CloudEvent::new(
            "stripe",
            &format!("evt_{n}"),
            "0:provider_event",
            "provider_event.occurred".into(),
            None,
            "2024-01-02T03:04:05Z".into(),
            serde_json::json!({ "pad": "x".repeat(size) }),
        )
    };
    let small = event(1, 10);
    let big = event(2, PUT_EVENTS_MAX_BYTES);
    let err = bus
        .publish(&[small.clone(), big.clone()])
        .await
        .expect_err("one too large");
    assert_eq!(err.unpublished.len(), 1);
    assert_eq!(err.unpublished[0].id, big.id);
    let size = big.entry().expect("entry").1;
    assert_eq!(
        err.unpublished[0].refusal,
        Refusal::TooLarge { size },
        "refused here, with its size"
    );
    assert!(err.to_string().contains(&format!("{size} bytes")), "{err}");
    let events = observe(&aws, &observed, 1).await;
    assert_eq!(events, [small]);
}
