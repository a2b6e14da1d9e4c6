//! Consumer throughput with in-memory ports: messages per second through claim,
//! normalize (a Linear issue → WorkItem), record store conflict rules, publish and
//! complete, on one core (a current-thread runtime).
//!
//! `cargo bench -p shared --bench consumer`.

use std::{collections::BTreeMap, hint::black_box, sync::Arc, time::Duration};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use junction_aws::clock::FixedClock;
use junction_aws::events::InMemoryEventBus;
use junction_aws::payloads::InMemoryPayloadStore;
use junction_aws::queue::{InMemoryRetryScheduler, attribute};
use junction_aws::retry::Backoff;
use junction_catalog::Catalog;
use junction_pipeline::consumer::{Consumer, InboundMessage, ItemResult, Ports};
use junction_pipeline::idempotency::{Idempotency, IdempotencyPolicy, InMemoryIdempotencyStore};
use junction_pipeline::records::InMemoryRecordStore;

const MESSAGES: usize = 1000;

fn consumer() -> Consumer<InMemoryIdempotencyStore> {
    Consumer::new(
        Catalog::embedded().expect("catalog"),
        Idempotency::new(
            InMemoryIdempotencyStore::default(),
            IdempotencyPolicy::default(),
        ),
        Ports {
            records: Arc::new(InMemoryRecordStore::default()),
            bus: Arc::new(InMemoryEventBus::default()),
            payloads: Arc::new(InMemoryPayloadStore::default()),
            retries: Arc::new(InMemoryRetryScheduler::default()),
            clock: Arc::new(FixedClock::at_unix(1_714_557_600)),
        },
        Backoff {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(900),
        },
    )
}

/// A Linear `Issue` update webhook (https://linear.app/developers/webhooks), ~600 bytes.
fn messages() -> Vec<InboundMessage> {
    (0..MESSAGES)
        .map(|n| {
            let body = format!(
                r#"{{"action":"update","type":"Issue","webhookTimestamp":1714557600000,"data":{{"id":"iss-{n}","identifier":"ENG-{n}","title":"Issue {n}","description":"Steps to reproduce","priority":2,"createdAt":"2024-04-30T09:00:00.000Z","updatedAt":"2024-05-01T10:00:00.000Z","state":{{"id":"s1","name":"In Progress","type":"started"}},"team":{{"id":"t1","key":"ENG","name":"Engineering"}}}}}}"#
            );
            let attributes: BTreeMap<String, String> = [
                (attribute::PROVIDER, "linear".to_owned()),
                (attribute::EVENT_ID, format!("delivery-{n}")),
                (attribute::BODY_ENCODING, "utf8".to_owned()),
                (attribute::RECEIVED_AT, "2024-05-01T10:00:01.000Z".to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            InboundMessage {
                message_id: format!("m{n}"),
                receipt_handle: format!("rh{n}"),
                body,
                attributes,
                receive_count: 1,
            }
        })
        .collect()
}

fn throughput(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("consumer_in_memory");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.sample_size(20);
    group.bench_function("linear_issue_messages", |b| {
        b.iter_batched(
            || (consumer(), messages()),
            |(consumer, messages)| {
                let outcomes = runtime.block_on(consumer.process_batch(messages));
                assert!(outcomes.iter().all(|o| o.result == ItemResult::Processed));
                black_box(outcomes)
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
