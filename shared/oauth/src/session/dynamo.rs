//! The DynamoDB adapter of [`ConnectSessionStore`]: a session is put only where none
//! is, and taken by one `DeleteItem` conditional on its provider and expiry, whose
//! failure returns the item in the way to tell an expired session from another
//! provider's. The session minting over it ([`super::ConnectSessions`]) knows nothing of
//! it.

use async_trait::async_trait;
use aws_sdk_dynamodb::{
    operation::delete_item::DeleteItemError,
    types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure},
};

use super::{ConnectSession, ConnectSessionStore, ConnectionStoreError, SessionTake, store_error};

/// DynamoDB: item `session` (the token's hash, key), `provider`, `expires_at` (the
/// table's TTL attribute; what the delete is conditional on with `provider`), `doc`
/// (JSON).
#[derive(Debug, Clone)]
pub struct DynamoConnectSessionStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoConnectSessionStore {
    pub fn from_config(aws: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        DynamoConnectSessionStore {
            client: aws_sdk_dynamodb::Client::new(aws),
            table: table.into(),
        }
    }
}

#[async_trait]
impl ConnectSessionStore for DynamoConnectSessionStore {
    async fn put(&self, key: &str, session: &ConnectSession) -> Result<(), ConnectionStoreError> {
        let doc = serde_json::to_string(session).map_err(store_error)?;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("session", AttributeValue::S(key.to_owned()))
            .item("provider", AttributeValue::S(session.provider.clone()))
            .item(
                "expires_at",
                AttributeValue::N(session.expires_at.to_string()),
            )
            .item("doc", AttributeValue::S(doc))
            .condition_expression("attribute_not_exists(#session)")
            .expression_attribute_names("#session", "session")
            .send()
            .await
            .map(|_| ())
            .map_err(|err| store_error(aws_sdk_dynamodb::Error::from(err)))
    }

    async fn take(
        &self,
        key: &str,
        provider: &str,
        now: i64,
    ) -> Result<SessionTake, ConnectionStoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("session", AttributeValue::S(key.to_owned()))
            .condition_expression(
                "attribute_exists(#session) AND #provider = :provider AND #expires_at > :now",
            )
            .expression_attribute_names("#session", "session")
            .expression_attribute_names("#provider", "provider")
            .expression_attribute_names("#expires_at", "expires_at")
            .expression_attribute_values(":provider", AttributeValue::S(provider.to_owned()))
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let err = match result {
            Ok(output) => {
                let doc = output
                    .attributes
                    .as_ref()
                    .and_then(|item| item.get("doc"))
                    .and_then(|v| v.as_s().ok());
                return match doc {
                    Some(text) => serde_json::from_str(text)
                        .map(|session| SessionTake::Taken(Box::new(session)))
                        .map_err(store_error),
                    None => Ok(SessionTake::Missing),
                };
            }
            Err(err) => err,
        };
        let Some(failed) = err.as_service_error().and_then(|e| match e {
            DeleteItemError::ConditionalCheckFailedException(failed) => Some(failed),
            _ => None,
        }) else {
            return Err(store_error(aws_sdk_dynamodb::Error::from(err)));
        };
        Ok(match failed.item() {
            None => SessionTake::Missing,
            Some(item)
                if item
                    .get("provider")
                    .and_then(|v| v.as_s().ok())
                    .map(String::as_str)
                    != Some(provider) =>
            {
                SessionTake::OtherProvider
            }
            Some(_) => SessionTake::Expired,
        })
    }
}
