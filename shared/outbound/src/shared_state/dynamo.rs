//! The DynamoDB adapter of [`SharedState`]: a get with a consistent read, a put
//! conditional on the stored version ([`junction_aws::dynamo::put_if`]). The limiter and
//! breaker over it ([`super::update`], [`super::read`]) know nothing of it.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use junction_aws::dynamo::{PutCondition, put_if};

use super::{SharedState, StateError, Versioned, unavailable};

/// DynamoDB: item `key` (partition key), `doc`, `version`, `expires_at` (TTL).
#[derive(Debug, Clone)]
pub struct DynamoSharedState {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoSharedState {
    pub fn from_config(aws: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        DynamoSharedState {
            client: aws_sdk_dynamodb::Client::new(aws),
            table: table.into(),
        }
    }
}

#[async_trait]
impl SharedState for DynamoSharedState {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StateError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("key", AttributeValue::S(key.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| unavailable(aws_sdk_dynamodb::Error::from(err)))?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        let doc = item
            .get("doc")
            .and_then(|v| v.as_s().ok())
            .cloned()
            .ok_or_else(|| StateError("item without doc".into()))?;
        let version = item
            .get("version")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| StateError("item without version".into()))?;
        Ok(Some(Versioned { doc, version }))
    }

    async fn put(
        &self,
        key: &str,
        doc: &str,
        expected: Option<u64>,
        expires_at: i64,
    ) -> Result<bool, StateError> {
        let item = [
            ("key".to_owned(), AttributeValue::S(key.to_owned())),
            ("doc".to_owned(), AttributeValue::S(doc.to_owned())),
            (
                "version".to_owned(),
                AttributeValue::N((expected.unwrap_or(0) + 1).to_string()),
            ),
            (
                "expires_at".to_owned(),
                AttributeValue::N(expires_at.to_string()),
            ),
        ]
        .into_iter()
        .collect();
        let condition = match expected {
            None => PutCondition::New {
                key_attribute: "key",
            },
            Some(version) => PutCondition::Version(version),
        };
        put_if(&self.client, &self.table, item, condition)
            .await
            .map_err(unavailable)
    }
}
