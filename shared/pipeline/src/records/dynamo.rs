//! The DynamoDB adapter of [`RecordStore`]: each conditional write a `PutItem`
//! conditional on the stored record's text. The conflict rules ([`super::apply`]) know
//! nothing of it; it meets the same contract as the in-memory store
//! ([`super::check_store_contract`], run on the emulator in
//! `tests/tests/integration/consumer_emulator.rs`).

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;

use super::{RecordStore, StoredVersion};
use crate::idempotency::StoreError;

/// DynamoDB: item `pk`, `source_ms` (number, absent when unknown), `record` (JSON text,
/// also the optimistic-concurrency token), `origins` (JSON text: field → origin, for
/// ruled fields), `written_by` (the delivery that stored it). Conflicts are
/// items `pk = <key>#conflict#<source_ms>`.
#[derive(Debug, Clone)]
pub struct DynamoRecordStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoRecordStore {
    pub fn from_config(aws: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        DynamoRecordStore {
            client: aws_sdk_dynamodb::Client::new(aws),
            table: table.into(),
        }
    }
}

fn dynamo_error<E: std::error::Error + Send + Sync + 'static>(err: E) -> StoreError {
    StoreError(Box::new(err))
}

#[async_trait]
impl RecordStore for DynamoRecordStore {
    async fn read(&self, key: &str) -> Result<Option<StoredVersion>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| dynamo_error(aws_sdk_dynamodb::Error::from(err)))?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        let record = item
            .get("record")
            .and_then(|v| v.as_s().ok())
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or(Value::Null);
        let source_ms = item
            .get("source_ms")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok());
        let origins = item
            .get("origins")
            .and_then(|v| v.as_s().ok())
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        let written_by = item.get("written_by").and_then(|v| v.as_s().ok()).cloned();
        Ok(Some(StoredVersion {
            source_ms,
            record,
            origins,
            written_by,
        }))
    }

    async fn write_if(
        &self,
        key: &str,
        expected: Option<&StoredVersion>,
        next: &StoredVersion,
    ) -> Result<bool, StoreError> {
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(key.to_owned()))
            .item("record", AttributeValue::S(next.record.to_string()));
        if let Some(ms) = next.source_ms {
            request = request.item("source_ms", AttributeValue::N(ms.to_string()));
        }
        if let Some(writer) = &next.written_by {
            request = request.item("written_by", AttributeValue::S(writer.clone()));
        }
        if !next.origins.is_empty() {
            let origins =
                serde_json::to_string(&next.origins).map_err(|err| StoreError(Box::new(err)))?;
            request = request.item("origins", AttributeValue::S(origins));
        }
        request = match expected {
            None => request.condition_expression("attribute_not_exists(pk)"),
            Some(expected) => request
                .condition_expression("#record = :record")
                .expression_attribute_names("#record", "record")
                .expression_attribute_values(
                    ":record",
                    AttributeValue::S(expected.record.to_string()),
                ),
        };
        match request.send().await {
            Ok(_) => Ok(true),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(err) => Err(dynamo_error(aws_sdk_dynamodb::Error::from(err))),
        }
    }

    async fn store_conflict(&self, key: &str, incoming: &StoredVersion) -> Result<(), StoreError> {
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(
                "pk",
                AttributeValue::S(format!(
                    "{key}#conflict#{}",
                    incoming.source_ms.unwrap_or_default()
                )),
            )
            .item("record", AttributeValue::S(incoming.record.to_string()));
        if let Some(ms) = incoming.source_ms {
            request = request.item("source_ms", AttributeValue::N(ms.to_string()));
        }
        request
            .send()
            .await
            .map(|_| ())
            .map_err(|err| dynamo_error(aws_sdk_dynamodb::Error::from(err)))
    }
}
