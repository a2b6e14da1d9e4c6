//! The DynamoDB adapter of [`SubscriptionStore`]: one item per connection, each write a
//! `PutItem` conditional on the stored version. Two sparse indexes: `by-renewal`
//! (`renewal` = `"due"` and `renew_at`, only on records the sweep must act on, like
//! the connections table's `by-refresh`) and `by-subscription` (`<provider>#<id>`, keys
//! only, for lifecycle notifications). It meets the contract of the in-memory store
//! ([`super::check_subscription_store_contract`], run on the emulator in
//! `tests/tests/integration/subscriptions_emulator.rs`).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use junction_aws::dynamo::{PutCondition, put_if};

use super::{StoreError, Subscription, SubscriptionStore};

/// The index of records the sweep must act on.
pub const RENEWAL_INDEX: &str = "by-renewal";
/// The index from a provider's subscription id to its connection.
pub const SUBSCRIPTION_INDEX: &str = "by-subscription";

/// DynamoDB: key `connection`; `doc` (JSON), `version`; `renewal` + `renew_at` and
/// `subscription_key` for the indexes, each present only when it applies.
#[derive(Debug, Clone)]
pub struct DynamoSubscriptionStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoSubscriptionStore {
    pub fn from_config(aws: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        DynamoSubscriptionStore {
            client: aws_sdk_dynamodb::Client::new(aws),
            table: table.into(),
        }
    }

    fn item(record: &Subscription) -> Result<HashMap<String, AttributeValue>, StoreError> {
        let doc = serde_json::to_string(record).map_err(|err| StoreError(err.to_string()))?;
        let mut item: HashMap<String, AttributeValue> = [
            (
                "connection".to_owned(),
                AttributeValue::S(record.connection.clone()),
            ),
            ("doc".to_owned(), AttributeValue::S(doc)),
            (
                "version".to_owned(),
                AttributeValue::N(record.version.to_string()),
            ),
        ]
        .into_iter()
        .collect();
        if let Some(renew_at) = record.renew_at {
            item.insert("renewal".to_owned(), AttributeValue::S("due".to_owned()));
            item.insert(
                "renew_at".to_owned(),
                AttributeValue::N(renew_at.to_string()),
            );
        }
        if let Some(id) = &record.subscription_id {
            item.insert(
                "subscription_key".to_owned(),
                AttributeValue::S(subscription_key(&record.provider, id)),
            );
        }
        Ok(item)
    }

    fn parse(item: &HashMap<String, AttributeValue>) -> Result<Subscription, StoreError> {
        let doc = item
            .get("doc")
            .and_then(|v| v.as_s().ok())
            .ok_or_else(|| StoreError("item without doc".into()))?;
        serde_json::from_str(doc).map_err(|err| StoreError(err.to_string()))
    }
}

fn subscription_key(provider: &str, id: &str) -> String {
    format!("{provider}#{id}")
}

/// Keeps the whole chain: an SDK error's own text is only "service error".
fn store_error(err: impl std::error::Error + 'static) -> StoreError {
    StoreError(junction_telemetry::error_chain(&err))
}

#[async_trait]
impl SubscriptionStore for DynamoSubscriptionStore {
    async fn get(&self, connection: &str) -> Result<Option<Subscription>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("connection", AttributeValue::S(connection.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| store_error(aws_sdk_dynamodb::Error::from(err)))?;
        output.item.as_ref().map(Self::parse).transpose()
    }

    async fn put(&self, record: &Subscription, expected: Option<u64>) -> Result<bool, StoreError> {
        let condition = match expected {
            None => PutCondition::New {
                key_attribute: "connection",
            },
            Some(version) => PutCondition::Version(version),
        };
        put_if(&self.client, &self.table, Self::item(record)?, condition)
            .await
            .map_err(store_error)
    }

    async fn due(&self, before: i64, limit: usize) -> Result<Vec<Subscription>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(RENEWAL_INDEX)
            .key_condition_expression("#renewal = :due AND #renew_at <= :before")
            .expression_attribute_names("#renewal", "renewal")
            .expression_attribute_names("#renew_at", "renew_at")
            .expression_attribute_values(":due", AttributeValue::S("due".to_owned()))
            .expression_attribute_values(":before", AttributeValue::N(before.to_string()))
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|err| store_error(aws_sdk_dynamodb::Error::from(err)))?;
        output.items().iter().map(Self::parse).collect()
    }

    async fn by_subscription_id(
        &self,
        provider: &str,
        id: &str,
    ) -> Result<Option<Subscription>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(SUBSCRIPTION_INDEX)
            .key_condition_expression("subscription_key = :key")
            .expression_attribute_values(":key", AttributeValue::S(subscription_key(provider, id)))
            .limit(1)
            .send()
            .await
            .map_err(|err| store_error(aws_sdk_dynamodb::Error::from(err)))?;
        // Keys only in the index: the record itself is read consistently.
        let Some(connection) = output
            .items()
            .first()
            .and_then(|item| item.get("connection"))
            .and_then(|v| v.as_s().ok())
        else {
            return Ok(None);
        };
        let record = self.get(connection).await?;
        // The index lags the table: a record since recreated under another id is not it.
        Ok(record.filter(|r| r.subscription_id.as_deref() == Some(id)))
    }

    async fn delete(&self, connection: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("connection", AttributeValue::S(connection.to_owned()))
            .send()
            .await
            .map_err(|err| store_error(aws_sdk_dynamodb::Error::from(err)))?;
        Ok(())
    }
}
