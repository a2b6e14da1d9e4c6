//! The record store: the latest normalized record per (provider, scope, model, id), and
//! the conflict rules that decide whether an incoming record is applied.
//!
//! Providers deliver out of order. Each record carries the provider's source timestamp
//! (its last-modified or occurred time), and writes are conditional on it:
//! - newer than the stored record → applied (a partial record, `complete: false`, is
//!   merged field by field into what is stored);
//! - older → stale: not applied, not published, counted;
//! - same time and same content → unchanged: the write already happened (a redelivery,
//!   perhaps after a crash before publishing), so the event is published again with its
//!   stable id;
//! - same time, different content → a conflict the rules cannot settle: stored beside
//!   the record for review and announced as a `<model>.conflict` event, not applied.
//!
//! Records without a source timestamp cannot be ordered; they are applied on arrival.
//!
//! Source-of-truth priority per model and field (issue 5, point 4) is not implemented
//! yet: it needs records linked across providers, which nothing produces today.

use std::{collections::HashMap, sync::Mutex};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;

use crate::idempotency::StoreError;

/// An incoming record version.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordWrite {
    /// `provider#scope#model#id`.
    pub key: String,
    /// The provider's source timestamp in Unix milliseconds, when it has one.
    pub source_ms: Option<i64>,
    /// False for partial records, merged into the stored one.
    pub complete: bool,
    /// The normalized record (a JSON object).
    pub record: Value,
}

impl RecordWrite {
    /// The store key for a record.
    pub fn key(provider: &str, scope: Option<&str>, model: &str, id: &str) -> String {
        format!("{provider}#{}#{model}#{id}", scope.unwrap_or("-"))
    }
}

/// What applying a record did.
#[derive(Debug, Clone, PartialEq)]
pub enum ApplyOutcome {
    /// Stored; publish the stored record (merged, for partial writes).
    Applied(Value),
    /// Already stored exactly like this; publish again (same stable event id).
    Unchanged(Value),
    /// Older than the stored record: dropped.
    Stale,
    /// Same source time, different content: kept for review, not applied.
    Conflict { stored: Value },
}

/// The stored side of a record.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredVersion {
    pub source_ms: Option<i64>,
    pub record: Value,
}

/// Conditional storage of records.
#[async_trait]
pub trait RecordStore: Send + Sync + std::fmt::Debug {
    async fn read(&self, key: &str) -> Result<Option<StoredVersion>, StoreError>;

    /// Writes `next` if the stored version is still `expected` (`None`: no record yet).
    /// Returns false when another writer got there first.
    async fn write_if(
        &self,
        key: &str,
        expected: Option<&StoredVersion>,
        next: &StoredVersion,
    ) -> Result<bool, StoreError>;

    /// Keeps a conflicting version for review.
    async fn store_conflict(&self, key: &str, incoming: &StoredVersion) -> Result<(), StoreError>;
}

/// How many times an optimistic write is retried when another writer races it.
const WRITE_ATTEMPTS: usize = 5;

/// Applies `write` under the conflict rules.
pub async fn apply(
    store: &dyn RecordStore,
    write: &RecordWrite,
) -> Result<ApplyOutcome, StoreError> {
    for _ in 0..WRITE_ATTEMPTS {
        let stored = store.read(&write.key).await?;
        let decision = decide(stored.as_ref(), write);
        let next = match decision {
            Decision::Write(next) => next,
            Decision::Done(outcome) => {
                if let ApplyOutcome::Conflict { .. } = &outcome {
                    let incoming = StoredVersion {
                        source_ms: write.source_ms,
                        record: write.record.clone(),
                    };
                    store.store_conflict(&write.key, &incoming).await?;
                }
                return Ok(outcome);
            }
        };
        if store.write_if(&write.key, stored.as_ref(), &next).await? {
            return Ok(ApplyOutcome::Applied(next.record));
        }
    }
    Err(StoreError("record write kept losing races".into()))
}

enum Decision {
    Write(StoredVersion),
    Done(ApplyOutcome),
}

fn decide(stored: Option<&StoredVersion>, write: &RecordWrite) -> Decision {
    let incoming = || StoredVersion {
        source_ms: write.source_ms,
        record: write.record.clone(),
    };
    let Some(stored) = stored else {
        return Decision::Write(incoming());
    };
    let merged = || {
        if write.complete {
            write.record.clone()
        } else {
            merge(&stored.record, &write.record)
        }
    };
    match (write.source_ms, stored.source_ms) {
        (Some(new), Some(old)) if new < old => Decision::Done(ApplyOutcome::Stale),
        (Some(new), Some(old)) if new == old => {
            if merged() == stored.record {
                Decision::Done(ApplyOutcome::Unchanged(stored.record.clone()))
            } else {
                Decision::Done(ApplyOutcome::Conflict {
                    stored: stored.record.clone(),
                })
            }
        }
        _ => {
            let record = merged();
            if record == stored.record && write.source_ms == stored.source_ms {
                Decision::Done(ApplyOutcome::Unchanged(record))
            } else {
                Decision::Write(StoredVersion {
                    source_ms: write.source_ms.or(stored.source_ms),
                    record,
                })
            }
        }
    }
}

/// A partial record's known fields (non-null) over the stored record's.
fn merge(stored: &Value, partial: &Value) -> Value {
    match (stored, partial) {
        (Value::Object(base), Value::Object(update)) => {
            let mut merged = base.clone();
            for (field, value) in update {
                if !value.is_null() {
                    merged.insert(field.clone(), value.clone());
                }
            }
            Value::Object(merged)
        }
        _ => partial.clone(),
    }
}

/// DynamoDB: item `pk`, `source_ms` (number, absent when unknown), `record` (JSON text),
/// `version` (incremented per write, the optimistic-concurrency token). Conflicts are
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
        Ok(Some(StoredVersion { source_ms, record }))
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

/// Records in memory, with the same conditions.
#[derive(Debug, Default)]
pub struct InMemoryRecordStore {
    records: Mutex<HashMap<String, StoredVersion>>,
    conflicts: Mutex<Vec<(String, StoredVersion)>>,
}

impl InMemoryRecordStore {
    /// Conflicts kept for review.
    pub fn conflicts(&self) -> Vec<(String, StoredVersion)> {
        self.conflicts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[async_trait]
impl RecordStore for InMemoryRecordStore {
    async fn read(&self, key: &str) -> Result<Option<StoredVersion>, StoreError> {
        Ok(self
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned())
    }

    async fn write_if(
        &self,
        key: &str,
        expected: Option<&StoredVersion>,
        next: &StoredVersion,
    ) -> Result<bool, StoreError> {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if records.get(key) != expected {
            return Ok(false);
        }
        records.insert(key.to_owned(), next.clone());
        Ok(true)
    }

    async fn store_conflict(&self, key: &str, incoming: &StoredVersion) -> Result<(), StoreError> {
        self.conflicts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((key.to_owned(), incoming.clone()));
        Ok(())
    }
}

/// The conflict rules every store must uphold, run against each adapter.
pub async fn check_store_contract(store: &dyn RecordStore) {
    let write = |ms: Option<i64>, complete: bool, record: Value| RecordWrite {
        key: RecordWrite::key("linear", None, "work_item", "ISS-1"),
        source_ms: ms,
        complete,
        record,
    };
    let outcome = |result: Result<ApplyOutcome, StoreError>| match result {
        Ok(outcome) => outcome,
        Err(err) => panic!("store failed: {err}"),
    };
    let v2 = serde_json::json!({"title": "v2", "status": "started"});
    assert_eq!(
        outcome(apply(store, &write(Some(2_000), true, v2.clone())).await),
        ApplyOutcome::Applied(v2.clone())
    );
    assert_eq!(
        outcome(
            apply(
                store,
                &write(Some(1_000), true, serde_json::json!({"title": "v1"}))
            )
            .await
        ),
        ApplyOutcome::Stale,
        "an older version never overwrites a newer one"
    );
    assert_eq!(
        outcome(apply(store, &write(Some(2_000), true, v2.clone())).await),
        ApplyOutcome::Unchanged(v2.clone())
    );
    let rival = serde_json::json!({"title": "rival", "status": "started"});
    assert_eq!(
        outcome(apply(store, &write(Some(2_000), true, rival)).await),
        ApplyOutcome::Conflict { stored: v2 },
        "same time, different content: not applied"
    );
    let partial = serde_json::json!({"status": "completed", "title": null});
    assert_eq!(
        outcome(apply(store, &write(Some(3_000), false, partial)).await),
        ApplyOutcome::Applied(serde_json::json!({"title": "v2", "status": "completed"})),
        "a partial record merges its known fields"
    );
    assert_eq!(
        store
            .read(&RecordWrite::key("linear", None, "work_item", "ISS-1"))
            .await
            .ok()
            .flatten()
            .and_then(|v| v.source_ms),
        Some(3_000)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_memory_store_meets_the_contract() {
        let store = InMemoryRecordStore::default();
        check_store_contract(&store).await;
        assert_eq!(store.conflicts().len(), 1);
    }

    #[tokio::test]
    async fn out_of_order_updates_keep_the_newest() {
        let store = InMemoryRecordStore::default();
        let key = RecordWrite::key("hubspot", Some("portal-1"), "pipeline_item", "42");
        for (ms, stage) in [(3, "won"), (1, "new"), (2, "negotiation")] {
            let write = RecordWrite {
                key: key.clone(),
                source_ms: Some(ms),
                complete: true,
                record: serde_json::json!({ "stage": stage }),
            };
            apply(&store, &write).await.expect("apply");
        }
        let stored = store.read(&key).await.expect("read").expect("stored");
        assert_eq!(stored.record["stage"], "won");
        assert_eq!(stored.source_ms, Some(3));
    }
}
