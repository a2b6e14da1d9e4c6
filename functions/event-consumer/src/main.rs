//! event-consumer: the ingest queue's Lambda (SQS event source with
//! `ReportBatchItemFailures`). The logic is `junction_pipeline::consumer::Consumer`; this binary
//! wires it to Lambda and maps outcomes to batch item failures.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use junction_aws::clock::SystemClock;
use junction_aws::config::{load_aws_config, load_catalog, process_env};
use junction_aws::events::EventBridgeBus;
use junction_aws::payloads::S3PayloadStore;
use junction_aws::queue::SqsRetryScheduler;
use junction_pipeline::accounts::{CachedAccountIndex, DynamoAccountIndex};
use junction_pipeline::consumer::{Consumer, InboundMessage, Ports};
use junction_pipeline::dead_letters::DynamoDeadLetterNotes;
use junction_pipeline::drift::{DriftDetector, DynamoShapeStore, Sampling};
use junction_pipeline::idempotency::{DynamoIdempotencyStore, Idempotency};
use junction_pipeline::last_events::DynamoLastEvents;
use junction_pipeline::records::DynamoRecordStore;
use junction_pipeline::settings::EventConsumerSettings;
use junction_telemetry as telemetry;
use lambda_runtime::{LambdaEvent, service_fn};

// One invocation at a time: a single-threaded runtime spares the worker threads, their
// wake-ups and their stacks (measured in infra/bench).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let settings = EventConsumerSettings::from_env(&process_env())?;
    // The connections table, read through its provider-account index only (and a
    // connection's tenant): whose each delivery is; and written only to record when a
    // connection last heard from its provider (`last_event_at`).
    let connections_table = process_env().required("CONNECTIONS_TABLE")?;
    // Known payload shapes (schema drift): one payload in SCHEMA_SAMPLE_EVERY is compared.
    let shapes_table = process_env().required("SCHEMA_SHAPES_TABLE")?;
    let sampling = Sampling {
        every: process_env().parse_or("SCHEMA_SAMPLE_EVERY", 1)?,
    };
    let aws = load_aws_config().await;
    let clock = Arc::new(SystemClock);
    let bus = Arc::new(EventBridgeBus::from_config(&aws, settings.event_bus));
    let consumer = Consumer::new(
        load_catalog(&aws, &process_env()).await?,
        Idempotency::new(
            DynamoIdempotencyStore::from_config(&aws, settings.idempotency_table.clone()),
            settings.idempotency,
        ),
        Ports {
            records: Arc::new(DynamoRecordStore::from_config(&aws, settings.records_table)),
            bus: bus.clone(),
            payloads: Arc::new(S3PayloadStore::from_config(&aws, settings.payload_bucket)),
            retries: Arc::new(SqsRetryScheduler::from_config(&aws, settings.queue_url)),
            clock: clock.clone(),
        },
        settings.backoff,
    )
    .with_field_priority(settings.field_priority)
    // A read per shape per warm container, a write per new shape (docs/cost.md).
    .with_drift(Arc::new(
        DriftDetector::new(
            Arc::new(DynamoShapeStore::from_config(&aws, shapes_table)),
            bus,
            clock.clone(),
        )
        .with_sampling(sampling),
    ))
    // Cached per warm container, briefly (accounts::FOUND_TTL, MISSING_TTL).
    .with_account_index(Arc::new(CachedAccountIndex::new(
        Arc::new(DynamoAccountIndex::from_config(
            &aws,
            connections_table.clone(),
        )),
        clock,
    )))
    // At most one conditional write per connection per batch, none within a minute of
    // this container's last (the cost: junction_pipeline::last_events).
    .with_last_events(Arc::new(DynamoLastEvents::from_config(
        &aws,
        connections_table,
    )))
    .with_max_receive_count(settings.max_receive_count)
    // The last failure's reason, for `junction dlq list`: on the idempotency table (the
    // role's PutItem on it).
    .with_dead_letter_notes(Arc::new(DynamoDeadLetterNotes::from_config(
        &aws,
        settings.idempotency_table,
    )));
    let consumer = &consumer;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let messages = event.payload.records.into_iter().map(inbound).collect();
        let outcomes = consumer.process_batch(messages).await;
        junction_pipeline::log::record_consumed(&outcomes);
        let mut response = SqsBatchResponse::default();
        for outcome in &outcomes {
            if outcome.keeps_message() {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = outcome.message_id.clone();
                response.batch_item_failures.push(failure);
            }
        }
        Ok::<_, std::convert::Infallible>(response)
    }))
    .await
}

fn inbound(record: SqsMessage) -> InboundMessage {
    InboundMessage {
        message_id: record.message_id.unwrap_or_default(),
        receipt_handle: record.receipt_handle.unwrap_or_default(),
        body: record.body.unwrap_or_default(),
        attributes: record
            .message_attributes
            .into_iter()
            .filter_map(|(name, value)| value.string_value.map(|text| (name, text)))
            .collect(),
        receive_count: record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|count| count.parse().ok())
            .unwrap_or(1),
    }
}
