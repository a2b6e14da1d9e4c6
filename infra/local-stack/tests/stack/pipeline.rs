//! The event pipeline end to end through the local stack: signed webhooks over HTTP →
//! webhook-ingress → ingest queue → event-consumer (idempotency table, EventBridge bus)
//! → an EventBridge rule created here → an SQS queue these tests read. Everything is
//! built from the real `template.yaml`, every process listens on 127.0.0.1 only, and
//! every process a test starts is gone when it ends, pass or fail (the stack kills its
//! children when dropped; a paused emulator is resumed by a guard before that).
//!
//! moto handles ~15 SQS messages/s, so message counts are small; every wait polls with a
//! deadline and nothing asserts on how fast anything is.

use crate::common;
use common::{
    BusObserver, CheckedStack, eventually, queue_depth, stop_and_check_processes_are_gone, unique,
    watch_signature,
};

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::MessageAttributeValue;
use junction_aws::events::CloudEvent;
use junction_catalog::Catalog;
use junction_cli::{
    connections::stack_table,
    queues::{RedriveMethod, StackQueues, list_dead_letters, redrive, with_reasons},
    samples::{Sample, sample},
    webhook::{SignedWebhook, post, sign_webhook, signing_key, webhook_url},
};
use junction_pipeline::dead_letters::{DynamoDeadLetterNotes, KEY_PREFIX};
use local_stack::{emulator::repo_root, stack::LocalStackConfig};
use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

/// What the bus may see of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Publish {
    /// Exactly one CloudEvent (no AWS call failed).
    ExactlyOnce,
    /// At least one, every copy with the same id and content (calls timed out).
    SameIdOnRetry,
}

/// A running Junction stack with an observer on its bus.
struct Pipeline {
    stack: CheckedStack,
    prefix: String,
    catalog: &'static Catalog,
    http: reqwest::Client,
    secrets: aws_sdk_secretsmanager::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    ingest_url: String,
    dlq_url: String,
    idempotency_table: String,
    /// The queue the test's EventBridge rule delivers every `junction/*` event to.
    observer: BusObserver,
}

impl Pipeline {
    /// Boots the stack from `template.yaml` with `parameters` and subscribes a new SQS
    /// queue to the bus with a rule on `{"source":[{"prefix":"junction/"}]}`.
    async fn start(label: &str, parameters: &[(&str, &str)]) -> Pipeline {
        let prefix = unique("pipe");
        let mut config = LocalStackConfig::new(repo_root());
        config.stack_name = unique(label);
        config.prefix = Some(prefix.clone());
        config.parameters = parameters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let stack = common::start(config).await;
        assert!(
            stack.wait_ready(Duration::from_secs(60)).await,
            "functions initialize"
        );
        let description = stack.description();
        let consumer_env = description.functions["EventConsumerFunction"].environment_strings();
        let bus = description.outputs["EventBusName"].clone();
        assert_eq!(
            consumer_env.get("EVENT_BUS_NAME"),
            Some(&bus),
            "the consumer publishes to the bus the stack outputs"
        );
        let idempotency_table = consumer_env
            .get("IDEMPOTENCY_TABLE")
            .cloned()
            .expect("the consumer names its idempotency table");
        assert_eq!(
            description.resources.get("IdempotencyTable"),
            Some(&idempotency_table)
        );
        let ingest_url = description.queues["IngestQueue"].url.clone();
        let dlq_url = description.queues["IngestDeadLetterQueue"].url.clone();

        let sdk = stack.sdk_config().clone();
        let sqs = stack.sqs().clone();
        let observer = BusObserver::subscribe(&stack).await;

        Pipeline {
            prefix,
            catalog: Catalog::embedded().expect("catalog"),
            http: reqwest::Client::new(),
            secrets: aws_sdk_secretsmanager::Client::new(&sdk),
            dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
            sqs,
            ingest_url,
            dlq_url,
            idempotency_table,
            observer,
            stack,
        }
    }

    /// `provider`'s sample (as `send-webhook` sends it), signed with the seeded secret.
    async fn delivery(&self, provider: &str) -> Delivery {
        let now = OffsetDateTime::now_utc();
        self.sign(provider, sample(provider, now), now).await
    }

    async fn sign(&self, provider: &str, sample: Sample, now: OffsetDateTime) -> Delivery {
        let spec = self.catalog.get(provider).expect("provider in the catalog");
        let key = signing_key(&self.secrets, &self.prefix, spec, None)
            .await
            .unwrap_or_else(|err| panic!("{provider}: {err}"));
        let url = webhook_url(self.stack.api_url(), provider, None);
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        let signed = sign_webhook(spec, &key, &url, &sample, now)
            .unwrap_or_else(|err| panic!("{provider}: {err}"));
        watch_signature(spec, &signed);
        Delivery {
            provider: provider.to_owned(),
            event_id: provider_event_id(provider, &sample),
            account: provider_account(provider, &sample),
            signed,
        }
    }

    /// Posts `delivery` until it is accepted, the way providers retry a 5xx or a
    /// connection failure; a 4xx is a bug. Returns the statuses seen, in order.
    async fn deliver(&self, delivery: &Delivery, limit: Duration) -> Vec<u16> {
        let started = Instant::now();
        let mut statuses = Vec::new();
        loop {
            let status = match post(&self.http, &delivery.signed).await {
                Ok(answer) => {
                    assert!(
                        answer.status < 400 || answer.status >= 500,
                        "{} answered {}: {}",
                        delivery.provider,
                        answer.status,
                        answer.body
                    );
                    answer.status
                }
                // Timeouts and refused connections: the provider retries those too.
                Err(_) => 0,
            };
            statuses.push(status);
            if (200..300).contains(&status) {
                return statuses;
            }
            assert!(
                started.elapsed() < limit,
                "{} never accepted: {statuses:?}",
                delivery.provider
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Receives and deletes what the observer queue holds now, as CloudEvents.
    async fn drain_observed(&self, into: &mut Vec<CloudEvent>) -> usize {
        self.observer.drain(into).await
    }

    /// Waits until at least `expected` events were published and the pipeline is at
    /// rest (ingest queue and its DLQ empty, nothing in flight), then drains the
    /// observer queue once more so a late duplicate would be counted.
    async fn settled_events(&self, expected: usize, limit: Duration) -> Vec<CloudEvent> {
        let mut events = Vec::new();
        let started = Instant::now();
        loop {
            self.drain_observed(&mut events).await;
            let ingest = queue_depth(&self.sqs, &self.ingest_url).await;
            let dlq = queue_depth(&self.sqs, &self.dlq_url).await;
            if events.len() >= expected && ingest == (0, 0) && dlq == (0, 0) {
                break;
            }
            // Nothing in these runs should be dead-lettered: say which event was.
            if dlq.0 > 0 && ingest == (0, 0) {
                let letter = peek_one(&self.sqs, &self.dlq_url).await;
                let attribute = |name: &str| letter.attributes.get(name).map(|(_, v)| v.clone());
                panic!(
                    "a valid event was moved to the DLQ: provider {:?}, event id {:?}; \
                     idempotency records: {:?}; {} of {expected} events published",
                    attribute("provider"),
                    attribute("event_id"),
                    self.idempotency_records().await,
                    events.len()
                );
            }
            assert!(
                started.elapsed() < limit,
                "not settled within {limit:?}: {} of {expected} events, ingest {ingest:?}, \
                 dlq {dlq:?}",
                events.len()
            );
        }
        while self.drain_observed(&mut events).await > 0 {}
        events
    }

    /// Every item of the idempotency table: `pk` → `status`.
    async fn idempotency_records(&self) -> BTreeMap<String, String> {
        let mut records = BTreeMap::new();
        let mut start: Option<std::collections::HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .dynamodb
                .scan()
                .table_name(&self.idempotency_table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .expect("idempotency table scanned");
            for item in page.items() {
                let text = |name: &str| {
                    item.get(name)
                        .and_then(|v| v.as_s().ok())
                        .cloned()
                        .unwrap_or_default()
                };
                records.insert(text("pk"), text("status"));
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return records,
            }
        }
    }

    /// Checks one published event per distinct delivery, with the right source, type
    /// and provider event id, and every idempotency key `completed`.
    async fn assert_exactly_once(
        &self,
        distinct: &[Delivery],
        events: &[CloudEvent],
        publish: Publish,
    ) {
        let events: Vec<CloudEvent> = match publish {
            Publish::ExactlyOnce => events.to_vec(),
            Publish::SameIdOnRetry => {
                // A PutEvents call that timed out may still have landed, so a retry can
                // publish the same event again: always under the same stable id and with
                // the same content, which is what lets a subscriber deduplicate.
                let mut by_id: BTreeMap<&str, &CloudEvent> = BTreeMap::new();
                for event in events {
                    if let Some(first) = by_id.insert(&event.id, event) {
                        assert_eq!(first, event, "a re-published event is identical");
                    }
                }
                by_id.into_values().cloned().collect()
            }
        };
        let events = events.as_slice();
        let mut want: Vec<(String, String, String)> = distinct
            .iter()
            .map(|d| {
                (
                    format!("junction/{}", d.provider),
                    expected_type(&d.provider).to_owned(),
                    d.event_id.clone(),
                )
            })
            .collect();
        want.sort();
        let mut got: Vec<(String, String, String)> = events
            .iter()
            .map(|e| {
                (
                    e.source.clone(),
                    e.event_type.clone(),
                    e.providereventid.clone(),
                )
            })
            .collect();
        got.sort();
        assert_eq!(got, want, "exactly one CloudEvent per distinct event");
        let ids: BTreeSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), events.len(), "CloudEvent ids are distinct");
        for event in events {
            assert_eq!(event.specversion, "1.0");
            assert!(
                event.data.get("mapping_version").is_some(),
                "normalized data: {event:?}"
            );
        }

        let records = self.idempotency_records().await;
        let want: BTreeMap<String, String> = distinct
            .iter()
            .map(|d| {
                let key = match &d.account {
                    Some(account) => format!("{}#{account}#{}", d.provider, d.event_id),
                    None => format!("{}#{}", d.provider, d.event_id),
                };
                (key, "completed".to_owned())
            })
            .collect();
        assert_eq!(records, want, "every idempotency key completed, no other");
    }

    /// The consumer's mapping on the ingest queue.
    async fn set_consumer_enabled(&self, enabled: bool) {
        self.stack
            .set_mapping_enabled("EventConsumerFunction", "IngestQueue", enabled)
            .await
            .expect("consumer mapping switched");
    }

    /// No function invocation errored or outlived its timeout.
    fn assert_handlers_returned_in_time(&self) {
        for summary in self.stack.summary() {
            assert_eq!(summary.timeouts, 0, "{summary:?}");
            assert_eq!(summary.errors, 0, "{summary:?}");
            assert_eq!(summary.starts, 1, "no process was replaced: {summary:?}");
        }
    }
}

/// A signed webhook and the provider event id the ingress will extract from it.
#[derive(Debug, Clone)]
struct Delivery {
    provider: String,
    event_id: String,
    /// The provider account the delivery names: part of the claim key.
    account: Option<String>,
    signed: SignedWebhook,
}

/// The provider account in a sample, read where the catalog says the ingress reads it.
fn provider_account(provider: &str, sample: &Sample) -> Option<String> {
    let body: Value = serde_json::from_slice(&sample.body).ok()?;
    let pointer = match provider {
        "github" => "/installation/id",
        "linear" => "/organizationId",
        "slack" => "/team_id",
        "stripe" => "/account",
        other => panic!("no account rule for {other} in this test"),
    };
    match body.pointer(pointer)? {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The provider's event id in a sample, read where the catalog says the ingress reads it.
fn provider_event_id(provider: &str, sample: &Sample) -> String {
    let header = |name: &str| {
        sample
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let body: Option<Value> = serde_json::from_slice(&sample.body).ok();
    let field = |name: &str| {
        body.as_ref()
            .and_then(|b| b.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let id = match provider {
        "github" => header("X-GitHub-Delivery"),
        "linear" => header("Linear-Delivery"),
        "stripe" => field("id"),
        "slack" => field("event_id"),
        other => panic!("no event id rule for {other} in this test"),
    };
    // A body without an id is deduplicated on its hash (the ingress's fallback).
    id.unwrap_or_else(|| hex::encode(Sha256::digest(&sample.body)))
}

/// The CloudEvent type each sample maps to (`<model>.<change>`).
fn expected_type(provider: &str) -> &'static str {
    match provider {
        // issues.opened: no common model, a typed provider event.
        "github" => "provider_event.created",
        // payment_intent.succeeded
        "stripe" => "provider_event.occurred",
        // an app_mention event_callback
        "slack" => "provider_event.occurred",
        // Issue create → WorkItem
        "linear" => "work_item.created",
        other => panic!("no expected type for {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_flow_through_the_consumer_onto_the_bus_exactly_once() {
    let pipeline = Pipeline::start("pipe-once", &[]).await;

    // GIVEN distinct deliveries of four providers
    let mut distinct = Vec::new();
    for provider in ["github", "stripe", "linear", "slack", "github", "stripe"] {
        distinct.push(pipeline.delivery(provider).await);
    }

    // WHEN each is posted, and two of them are delivered twice (same bytes, same id)
    let mut posts: Vec<&Delivery> = distinct.iter().collect();
    posts.push(&distinct[0]);
    posts.push(&distinct[1]);
    for delivery in &posts {
        let statuses = pipeline.deliver(delivery, Duration::from_secs(60)).await;
        assert_eq!(statuses.len(), 1, "accepted at once: {statuses:?}");
    }

    // THEN exactly one CloudEvent per distinct event reaches the rule's target
    let events = pipeline
        .settled_events(distinct.len(), Duration::from_secs(90))
        .await;
    pipeline
        .assert_exactly_once(&distinct, &events, Publish::ExactlyOnce)
        .await;
    pipeline.assert_handlers_returned_in_time();
    stop_and_check_processes_are_gone(pipeline.stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_message_reaches_the_dlq_intact_and_comes_back_with_redrive() {
    let pipeline = Pipeline::start("pipe-poison", &[("IngestMaxReceiveCount", "2")]).await;
    let (sqs, ingest_url, dlq_url) = (
        pipeline.sqs.clone(),
        pipeline.ingest_url.clone(),
        pipeline.dlq_url.clone(),
    );
    let ingest = &pipeline.stack.description().queues["IngestQueue"];
    let policy: Value = ingest
        .attributes
        .get("RedrivePolicy")
        .and_then(|text| serde_json::from_str(text).ok())
        .expect("the ingest queue has a redrive policy");
    let max_receives = match &policy["maxReceiveCount"] {
        Value::String(text) => text.parse().ok(),
        other => other.as_u64(),
    };
    assert_eq!(
        max_receives,
        Some(2),
        "the parameter reached the queue: {policy}"
    );

    // GIVEN a correctly signed Stripe delivery the consumer cannot map: no `id`
    // (Stripe signs `t.body`, so the ingress accepts it and dedupes on the body hash)
    let now = OffsetDateTime::now_utc();
    let mut poison = sample("stripe", now);
    let mut body: Value = serde_json::from_slice(&poison.body).expect("JSON sample");
    body.as_object_mut().expect("an object").remove("id");
    poison.body = body.to_string().into_bytes();
    let poison = pipeline.sign("stripe", poison, now).await;
    let body_hash = hex::encode(Sha256::digest(&poison.signed.body));
    assert_eq!(poison.event_id, body_hash);

    // WHEN it is posted
    let statuses = pipeline.deliver(&poison, Duration::from_secs(60)).await;
    assert_eq!(statuses, vec![200]);

    // THEN after maxReceiveCount receives it is in the DLQ, byte for byte
    let parked = eventually(Duration::from_secs(90), || {
        let (sqs, ingest_url, dlq_url) = (sqs.clone(), ingest_url.clone(), dlq_url.clone());
        async move {
            let settled = queue_depth(&sqs, &ingest_url).await == (0, 0)
                && queue_depth(&sqs, &dlq_url).await == (1, 0);
            settled.then_some(())
        }
    })
    .await;
    assert!(parked.is_some(), "the poison message reached the DLQ");
    let letter = peek_one(&sqs, &dlq_url).await;
    assert_eq!(
        letter.body.as_bytes(),
        poison.signed.body.as_slice(),
        "the body is intact"
    );
    let attribute = |name: &str| letter.attributes.get(name).map(|(_, v)| v.as_str());
    assert_eq!(attribute("provider"), Some("stripe"));
    assert_eq!(attribute("event_id"), Some(body_hash.as_str()));
    assert_eq!(attribute("event_id_source"), Some("body_sha256"));
    assert_eq!(attribute("body_encoding"), Some("utf8"));
    // Nothing was published and the failed claim was released, not completed.
    let mut published = Vec::new();
    pipeline.drain_observed(&mut published).await;
    assert!(published.is_empty(), "{published:?}");
    let mut records = pipeline.idempotency_records().await;
    records.retain(|key, _| !key.starts_with(KEY_PREFIX));
    assert_eq!(records, BTreeMap::new());

    // AND the CLI's listing shows the reason the consumer logged for its last receive,
    // from the note the consumer left in the stack's idempotency table
    let stack_name = pipeline.stack.description().stack_name.clone();
    let queues = StackQueues::discover(&sqs, &stack_name)
        .await
        .expect("queues");
    let dlq = queues
        .dead_letter_queue(Some("ingest-dlq"))
        .expect("the ingest DLQ");
    let mut letters = list_dead_letters(&sqs, dlq, 10).await.expect("listed");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let table = stack_table(&pipeline.dynamodb, &stack_name, "IdempotencyTable")
        .await
        .expect("the CLI finds the idempotency table");
    assert_eq!(table, pipeline.idempotency_table);
    with_reasons(
        &mut letters,
        &DynamoDeadLetterNotes::new(pipeline.dynamodb.clone(), table),
    )
    .await
    .expect("notes read");
    let logged_reason = pipeline.stack.functions()["EventConsumerFunction"]
        .logs()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(&line[line.find('{')?..]).ok())
        .find(|line| {
            line["message_id"] == letters[0].message_id.as_str() && line["dead_lettered"] == true
        })
        .and_then(|line| line["reason"].as_str().map(str::to_owned))
        .expect("the consumer logged the last receive's failure");
    let shown = letters[0].reason.clone().expect("a reason is shown");
    assert!(
        shown == logged_reason || shown.starts_with(&format!("{logged_reason}: ")),
        "shown {shown:?}, logged {logged_reason:?}"
    );

    // WHEN the operator pauses the consumer and redrives with the CLI's code
    pipeline.set_consumer_enabled(false).await;
    let queues = StackQueues::discover(&sqs, &pipeline.stack.description().stack_name)
        .await
        .expect("queues");
    let dlq = queues
        .dead_letter_queue(Some("ingest-dlq"))
        .expect("the ingest DLQ");
    assert_eq!(
        dlq.name,
        format!("{}-ingest-dlq", pipeline.stack.description().stack_name)
    );
    let report = redrive(&sqs, &queues, dlq, None, RedriveMethod::Copy)
        .await
        .expect("redriven");
    assert_eq!(report.moved, 1);

    // THEN exactly one copy is back on the ingest queue, same body and attributes,
    // and the DLQ is empty
    assert_eq!(
        queue_depth(&sqs, &dlq_url).await,
        (0, 0),
        "the DLQ is empty"
    );
    let back = receive_all(&sqs, &ingest_url).await;
    assert_eq!(back.len(), 1, "exactly one copy came back");
    assert_eq!(back[0].body, letter.body);
    assert_eq!(back[0].attributes, letter.attributes);

    stop_and_check_processes_are_gone(pipeline.stack).await;
}

/// Regression: a correctly signed Stripe event of 5,242,880 bytes (the ingress's
/// documented limit) was answered 200, then failed `publish_failed` on each of its five
/// receives and stayed in the DLQ, since EventBridge refuses `PutEvents` entries over
/// 256 KB (the emulator took it, so no test saw it; it now refuses as AWS does). The
/// event is now published by claim check: its data in the payload bucket, the CloudEvent
/// with a `dataref` a subscriber reads it from.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_5_mib_stripe_event_reaches_the_bus_by_claim_check() {
    const SIZE: usize = 5_242_880;
    let pipeline = Pipeline::start("pipe-big", &[]).await;

    // GIVEN a correctly signed Stripe event of exactly 5,242,880 bytes
    let now = OffsetDateTime::now_utc();
    let mut big = sample("stripe", now);
    let mut body: Value = serde_json::from_slice(&big.body).expect("JSON sample");
    body["data"]["object"]["description"] = Value::String(String::new());
    let unpadded = serde_json::to_vec(&body).expect("JSON").len();
    body["data"]["object"]["description"] = Value::String("x".repeat(SIZE - unpadded));
    big.body = serde_json::to_vec(&body).expect("JSON");
    assert_eq!(big.body.len(), SIZE);
    let delivery = pipeline.sign("stripe", big, now).await;

    // WHEN it is posted
    let statuses = pipeline.deliver(&delivery, Duration::from_secs(60)).await;
    assert_eq!(statuses, vec![200]);

    // THEN one CloudEvent reaches the bus's subscriber, without inline data
    let events = pipeline.settled_events(1, Duration::from_secs(120)).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(
        (event.source.as_str(), event.event_type.as_str()),
        ("junction/stripe", expected_type("stripe"))
    );
    assert_eq!(event.providereventid, delivery.event_id);
    assert!(event.data.is_null(), "no inline data");
    // ... whose dataref names the data in the stack's payload bucket
    let bucket = &pipeline.stack.description().outputs["PayloadBucketName"];
    let dataref = event.dataref.clone().expect("a dataref");
    assert_eq!(dataref, format!("s3://{bucket}/events/{}.json", event.id));
    // ... which a subscriber reads back: the normalized event with the whole payload
    let payloads =
        junction_aws::payloads::S3PayloadStore::from_config(pipeline.stack.sdk_config(), bucket);
    let stored = junction_aws::payloads::PayloadStore::get(&payloads, &dataref)
        .await
        .expect("the subscriber reads the data");
    assert_eq!(event.datasize, Some(stored.len() as u64));
    let data: Value = serde_json::from_slice(&stored).expect("JSON data");
    assert_eq!(data["item"], "provider_event");
    assert!(data.get("mapping_version").is_some(), "{}", data["item"]);
    assert_eq!(data["raw"], body, "the whole 5 MiB event");
    // AND the event is completed once, nothing is dead-lettered
    let key = format!("stripe#{}", delivery.event_id);
    assert_eq!(
        pipeline.idempotency_records().await,
        BTreeMap::from([(key, "completed".to_owned())])
    );
    assert_eq!(queue_depth(&pipeline.sqs, &pipeline.dlq_url).await, (0, 0));
    pipeline.assert_handlers_returned_in_time();
    stop_and_check_processes_are_gone(pipeline.stack).await;
}

/// Regression: a claim the emulator applied after the consumer's call had timed out was
/// orphaned until its lease ended, and retries that ignored the lease used up
/// maxReceiveCount, dead-lettering a valid event. Retries now wait out the lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_emulator_outage_loses_and_duplicates_nothing() {
    // The consumer is working on the first deliveries when the emulator stops.
    emulator_outage_run("pipe-outage", Outage::WhileConsuming).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_emulator_outage_at_the_ingress_loses_and_duplicates_nothing() {
    // The pipeline is at rest when the emulator stops: only the ingress (and the
    // mapping's receive) sees the outage.
    emulator_outage_run("pipe-ingress-outage", Outage::WhileIdle).await;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    /// Pause right after the first deliveries were accepted, while the consumer runs.
    WhileConsuming,
    /// Pause once the first deliveries are published and the queues are empty.
    WhileIdle,
}

/// Ten distinct deliveries; the emulator paused (SIGSTOP) for 10 s after the fourth,
/// three posted during the outage and re-sent while answered 5xx (what providers do),
/// three more after it. Then exactly one CloudEvent per event, every key `completed`,
/// and no invocation errored or outlived its timeout (every AWS call has a timeout).
///
/// With [`Outage::WhileConsuming`] this found a bug: the consumer's conditional
/// `PutItem` claim reached moto while paused, the SDK call timed out (5 s) and the
/// consumer had nothing to release, yet moto wrote the claim on resuming. The record
/// stayed `in_progress` for its whole lease (60 s) while redeliveries, retried after a
/// backoff that ignored `lease_expires_at`, used up the 5 receives and the valid event
/// went to the DLQ. Retries of a claimed event now wait for the lease to end.
async fn emulator_outage_run(label: &str, outage: Outage) {
    let pipeline = Pipeline::start(label, &[]).await;
    let moto = pipeline.stack.emulator_pid().expect(
        "this test pauses the emulator, so it needs one of its own: unset \
         JUNCTION_EMULATOR_ENDPOINT",
    );

    // GIVEN ten distinct deliveries
    let providers = [
        "github", "stripe", "linear", "slack", "github", "stripe", "linear", "github", "stripe",
        "linear",
    ];
    let mut distinct = Vec::new();
    for provider in providers {
        distinct.push(pipeline.delivery(provider).await);
    }
    let (before, rest) = distinct.split_at(4);
    let (during, after) = rest.split_at(3);

    // WHEN the first ones are delivered while the emulator runs
    for delivery in before {
        pipeline.deliver(delivery, Duration::from_secs(60)).await;
    }
    let mut events = Vec::new();
    if outage == Outage::WhileIdle {
        events = pipeline
            .settled_events(before.len(), Duration::from_secs(90))
            .await;
        assert_eq!(events.len(), before.len());
    }
    // ... the emulator stops answering for 10 s while more arrive (each posted once;
    // the ingress can neither read secrets nor enqueue)
    let paused = Paused::new(moto);
    let resume = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(paused);
    });
    let mut first_answers = Vec::new();
    for delivery in during {
        let answer = post(&pipeline.http, &delivery.signed)
            .await
            .map(|d| d.status)
            .unwrap_or(0);
        first_answers.push(answer);
    }
    resume.await.expect("the emulator resumed");
    println!("answers during the outage: {first_answers:?}");
    assert!(
        first_answers.iter().any(|s| *s >= 500 || *s == 0),
        "the outage was visible to providers: {first_answers:?}"
    );
    // ... providers retry what was not accepted, and the rest arrive after the outage
    for (delivery, answer) in during.iter().zip(&first_answers) {
        if !(200..300).contains(answer) {
            pipeline.deliver(delivery, Duration::from_secs(90)).await;
        }
    }
    for delivery in after {
        pipeline.deliver(delivery, Duration::from_secs(90)).await;
    }

    // THEN nothing is lost and nothing duplicated (a 503 whose SendMessage moto still
    // carried out after resuming is a second ingest message: the consumer dedupes it).
    // A message whose consumer could not shorten its visibility keeps the queue's
    // 180 s visibility timeout, so the wait allows for one such round.
    let expected = distinct.len() - events.len();
    events.extend(
        pipeline
            .settled_events(expected, Duration::from_secs(300))
            .await,
    );
    pipeline
        .assert_exactly_once(&distinct, &events, Publish::SameIdOnRetry)
        .await;
    // AND every handler returned within its deadline
    pipeline.assert_handlers_returned_in_time();
    stop_and_check_processes_are_gone(pipeline.stack).await;
}

/// The emulator paused with SIGSTOP; resumed with SIGCONT when dropped, also when the
/// test fails while it is paused.
struct Paused(u32);

impl Paused {
    fn new(pid: u32) -> Paused {
        signal("-STOP", pid);
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        signal("-CONT", self.0);
    }
}

/// Sends a signal to a process this test's stack started (never by name).
fn signal(signal: &str, pid: u32) {
    let status = std::process::Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal} {pid}");
}

/// A received message: body and message attributes (name → (type, string value)).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Received {
    body: String,
    attributes: BTreeMap<String, (String, String)>,
}

fn received(message: &aws_sdk_sqs::types::Message) -> Received {
    let attributes = message
        .message_attributes
        .as_ref()
        .map(|attributes| {
            attributes
                .iter()
                .map(|(name, value): (&String, &MessageAttributeValue)| {
                    (
                        name.clone(),
                        (
                            value.data_type.clone(),
                            value.string_value.clone().unwrap_or_default(),
                        ),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Received {
        body: message.body.clone().unwrap_or_default(),
        attributes,
    }
}

/// Reads the queue's only message and makes it visible again at once.
async fn peek_one(sqs: &aws_sdk_sqs::Client, url: &str) -> Received {
    let messages = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .wait_time_seconds(2)
        .visibility_timeout(0)
        .message_attribute_names("All")
        .send()
        .await
        .expect("received")
        .messages
        .unwrap_or_default();
    assert_eq!(messages.len(), 1, "one message on {url}");
    received(&messages[0])
}

/// Receives (and keeps invisible) everything on the queue.
async fn receive_all(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<Received> {
    let mut all = Vec::new();
    loop {
        let messages = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(2)
            .visibility_timeout(60)
            .message_attribute_names("All")
            .send()
            .await
            .expect("received")
            .messages
            .unwrap_or_default();
        if messages.is_empty() {
            return all;
        }
        all.extend(messages.iter().map(received));
    }
}
