//! Sync jobs in DynamoDB (the emulator's): the store contract (conditional cursor
//! advance, the due-time index, removal) on a table shaped like the template's
//! `SyncJobsTable` (key `pk`, index `by-due` on `due` + `due_at`).

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType,
};
use junction_polling::jobs::DUE_INDEX;
use junction_polling::{DynamoSyncJobStore, check_job_store_contract};
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

#[tokio::test]
async fn dynamodb_sync_jobs_meet_the_store_contract() {
    let (_moto, aws) = emulator().await;
    aws_sdk_dynamodb::Client::new(&aws)
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
    check_job_store_contract(&DynamoSyncJobStore::from_config(&aws, "sync-jobs")).await;
}
