//! The DynamoDB adapter of [`ShapeStore`], on the template's `SchemaShapesTable`: one
//! item per known shape, `pk` = provider `#` subject ([`ShapeKey::as_partition`]),
//! `sk` = the fingerprint, with `shape` (the path → type map as JSON), `diff` (JSON,
//! absent on a key's first shape) and `first_seen` (Unix milliseconds). A new shape is
//! one conditional `PutItem` (`attribute_not_exists(pk)`: the writer announces it); the
//! latest shape of a key is a `Query` of its partition (a key has a handful of shapes).
//! Checked against the emulator in `tests/tests/integration/schema_drift_emulator.rs`.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use time::OffsetDateTime;

use super::{Fingerprint, KnownShape, Shape, ShapeDiff, ShapeKey, ShapeStore, ShapeStoreError};

/// The shapes table.
#[derive(Debug, Clone)]
pub struct DynamoShapeStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoShapeStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoShapeStore {
            client,
            table: table.into(),
        }
    }

    /// Over the table `table` (the template's `SchemaShapesTable`).
    pub fn from_config(aws: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        DynamoShapeStore::new(aws_sdk_dynamodb::Client::new(aws), table)
    }
}

fn failed(err: impl std::error::Error + Send + Sync + 'static) -> ShapeStoreError {
    ShapeStoreError(Box::new(err))
}

/// A stored item that is not a shape as this adapter writes them.
#[derive(Debug, thiserror::Error)]
#[error("stored shape item is malformed: {0}")]
struct Malformed(&'static str);

fn item(
    key: &ShapeKey,
    shape: &KnownShape,
) -> Result<HashMap<String, AttributeValue>, ShapeStoreError> {
    let mut item = HashMap::from([
        ("pk".to_owned(), AttributeValue::S(key.as_partition())),
        (
            "sk".to_owned(),
            AttributeValue::S(shape.fingerprint.0.clone()),
        ),
        (
            "shape".to_owned(),
            AttributeValue::S(serde_json::to_string(&shape.shape).map_err(failed)?),
        ),
        (
            "first_seen".to_owned(),
            AttributeValue::N((shape.first_seen.unix_timestamp_nanos() / 1_000_000).to_string()),
        ),
    ]);
    if let Some(diff) = &shape.diff {
        item.insert(
            "diff".to_owned(),
            AttributeValue::S(serde_json::to_string(diff).map_err(failed)?),
        );
    }
    Ok(item)
}

fn parse(item: &HashMap<String, AttributeValue>) -> Result<KnownShape, ShapeStoreError> {
    let text = |name: &'static str| {
        item.get(name)
            .and_then(|value| value.as_s().ok())
            .ok_or_else(|| failed(Malformed(name)))
    };
    let shape: Shape = serde_json::from_str(text("shape")?).map_err(failed)?;
    let diff: Option<ShapeDiff> = match item.get("diff").and_then(|v| v.as_s().ok()) {
        Some(diff) => Some(serde_json::from_str(diff).map_err(failed)?),
        None => None,
    };
    let first_seen = item
        .get("first_seen")
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse::<i128>().ok())
        .and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).ok())
        .ok_or_else(|| failed(Malformed("first_seen")))?;
    Ok(KnownShape {
        fingerprint: Fingerprint(text("sk")?.clone()),
        shape,
        diff,
        first_seen,
    })
}

#[async_trait]
impl ShapeStore for DynamoShapeStore {
    async fn get(
        &self,
        key: &ShapeKey,
        fingerprint: &Fingerprint,
    ) -> Result<Option<KnownShape>, ShapeStoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key.as_partition()))
            .key("sk", AttributeValue::S(fingerprint.0.clone()))
            .send()
            .await
            .map_err(|err| failed(aws_sdk_dynamodb::Error::from(err)))?;
        output.item.as_ref().map(parse).transpose()
    }

    async fn latest(&self, key: &ShapeKey) -> Result<Option<KnownShape>, ShapeStoreError> {
        let mut latest: Option<KnownShape> = None;
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", AttributeValue::S(key.as_partition()))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|err| failed(aws_sdk_dynamodb::Error::from(err)))?;
            for found in output.items() {
                let shape = parse(found)?;
                if latest
                    .as_ref()
                    .is_none_or(|latest| shape.first_seen > latest.first_seen)
                {
                    latest = Some(shape);
                }
            }
            match output.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => return Ok(latest),
            }
        }
    }

    async fn record(&self, key: &ShapeKey, shape: &KnownShape) -> Result<bool, ShapeStoreError> {
        let sent = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item(key, shape)?))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(err) => Err(failed(aws_sdk_dynamodb::Error::from(err))),
        }
    }

    async fn forget(
        &self,
        key: &ShapeKey,
        fingerprint: &Fingerprint,
    ) -> Result<(), ShapeStoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key.as_partition()))
            .key("sk", AttributeValue::S(fingerprint.0.clone()))
            .send()
            .await
            .map_err(|err| failed(aws_sdk_dynamodb::Error::from(err)))?;
        Ok(())
    }
}
