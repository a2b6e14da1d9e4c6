//! Sync jobs in DynamoDB (the emulator's): the store contract (conditional cursor
//! advance, the due-time index, removal) on a table shaped like the template's
//! `SyncJobsTable` (key `pk`, index `by-due` on `due` + `due_at`), and the tenant a job
//! names on its `connection.stale` event, including a job stored before jobs named one.

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType,
};
use junction_aws::clock::FixedClock;
use junction_aws::events::{CloudEvent, InMemoryEventBus};
use junction_aws::queue::InMemoryEventQueue;
use junction_polling::jobs::DUE_INDEX;
use junction_polling::{
    DynamoSyncJobStore, PollScheduler, SyncJobStore, check_job_store_contract, ensure_jobs,
};
use junction_tests::emulator;

fn attribute(name: &str, kind: ScalarAttributeType) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(kind)
        .build()
        .expect("attribute")
}

fn key(name: &str, kind: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .expect("key")
}

/// The `sync-jobs` table, shaped like the template's.
pub(crate) async fn sync_jobs_table(aws: &aws_config::SdkConfig) {
    aws_sdk_dynamodb::Client::new(aws)
        .create_table()
        .table_name("sync-jobs")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("pk", ScalarAttributeType::S))
        .attribute_definitions(attribute("due", ScalarAttributeType::S))
        .attribute_definitions(attribute("due_at", ScalarAttributeType::N))
        .key_schema(key("pk", KeyType::Hash))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(DUE_INDEX)
                .key_schema(key("due", KeyType::Hash))
                .key_schema(key("due_at", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .expect("index"),
        )
        .send()
        .await
        .expect("table");
}

#[tokio::test]
async fn dynamodb_sync_jobs_meet_the_store_contract() {
    let (_moto, aws) = emulator().await;
    sync_jobs_table(&aws).await;
    check_job_store_contract(&DynamoSyncJobStore::from_config(&aws, "sync-jobs")).await;
}

const NOW: i64 = 1_800_000_000;

/// A Linear `issues` job as the previous version stored it (its document has no
/// `tenant`), created long enough ago to be stale and due now.
async fn put_job_without_tenant(aws: &aws_config::SdkConfig, connection: &str) {
    let doc = serde_json::json!({
        "connection": connection, "provider": "linear", "model": "issues",
        "cursor": null, "due_at": NOW - 5, "interval_seconds": 3600, "lease": null,
        "records_sent": 0, "last_success_at": null, "last_error": "http_503",
        "version": 1, "created_at": NOW - 20_000,
    });
    aws_sdk_dynamodb::Client::new(aws)
        .put_item()
        .table_name("sync-jobs")
        .item("pk", AttributeValue::S(format!("{connection}#issues")))
        .item("doc", AttributeValue::S(doc.to_string()))
        .item("version", AttributeValue::N("1".into()))
        .item("due", AttributeValue::S("job".into()))
        .item("due_at", AttributeValue::N((NOW - 5).to_string()))
        .send()
        .await
        .expect("stored");
}

/// `connection.stale` names the job's tenant and connection once the job records its
/// tenant (a reconnect sets it up again); a job stored before then is still read, and
/// its event goes out without them.
#[tokio::test]
async fn a_stale_connection_s_event_names_its_tenant() {
    let (_moto, aws) = emulator().await;
    sync_jobs_table(&aws).await;
    let store = Arc::new(DynamoSyncJobStore::from_config(&aws, "sync-jobs"));
    put_job_without_tenant(&aws, "conn_reconnected").await;
    put_job_without_tenant(&aws, "conn_legacy").await;
    assert_eq!(
        store
            .get("conn_legacy#issues")
            .await
            .expect("read")
            .expect("an old job is readable")
            .tenant,
        None
    );
    let catalog = junction_catalog::Catalog::embedded().expect("catalog");
    let created = ensure_jobs(
        store.as_ref(),
        catalog,
        "linear",
        "conn_reconnected",
        Some("acme"),
        NOW,
    )
    .await
    .expect("set up again");
    assert_eq!(created, 0, "the job is kept");

    let bus = Arc::new(InMemoryEventBus::default());
    let scheduler = PollScheduler::new(
        store.clone(),
        Arc::new(InMemoryEventQueue::default()),
        Arc::new(FixedClock::at_unix(NOW)),
    )
    .with_stale_events(bus.clone(), 3);
    let report = scheduler.dispatch().await.expect("tick");
    assert_eq!((report.dispatched, report.stale), (2, 2));
    let events = bus.events();
    let event_of = |connection: &str| -> &CloudEvent {
        events
            .iter()
            .find(|e| e.subject.as_deref() == Some(connection))
            .expect("a stale event")
    };
    let stamped = event_of("conn_reconnected");
    assert_eq!(stamped.event_type, "connection.stale");
    assert_eq!(
        (stamped.tenant.as_deref(), stamped.connection.as_deref()),
        (Some("acme"), Some("conn_reconnected"))
    );
    let legacy = event_of("conn_legacy");
    assert_eq!(
        (legacy.tenant.as_deref(), legacy.connection.as_deref()),
        (None, None)
    );
    assert_eq!(
        store
            .get("conn_reconnected#issues")
            .await
            .expect("read")
            .expect("job")
            .stale_since,
        Some(NOW),
        "announced once"
    );
}
