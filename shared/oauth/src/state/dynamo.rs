//! The DynamoDB adapter of [`StateStore`]: a pending authorization is taken by one
//! `DeleteItem` conditional on its browser binding, whose failure returns the item in
//! the way to tell another browser's state from a missing one. The connect flow over it
//! knows nothing of it.

use async_trait::async_trait;
use aws_sdk_dynamodb::{
    operation::delete_item::DeleteItemError,
    types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure},
};

use super::{BoundTake, ConnectionStoreError, PendingAuthorization, StateStore, bindings_match};

/// DynamoDB: item `state` (the hash, key), `binding` (the browser binding's hash, what
/// the delete is conditional on), `expires_at` (the table's TTL attribute), `doc`
/// (JSON).
#[derive(Debug, Clone)]
pub struct DynamoStateStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoStateStore {
    pub fn from_config(aws: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        DynamoStateStore {
            client: aws_sdk_dynamodb::Client::new(aws),
            table: table.into(),
        }
    }
}

fn store_error(err: impl std::error::Error + Send + Sync + 'static) -> ConnectionStoreError {
    ConnectionStoreError(Box::new(err))
}

fn pending_of(
    item: &std::collections::HashMap<String, AttributeValue>,
) -> Result<Option<PendingAuthorization>, ConnectionStoreError> {
    item.get("doc")
        .and_then(|v| v.as_s().ok())
        .map(|text| serde_json::from_str(text).map_err(store_error))
        .transpose()
}

#[async_trait]
impl StateStore for DynamoStateStore {
    async fn put(
        &self,
        key: &str,
        pending: &PendingAuthorization,
    ) -> Result<(), ConnectionStoreError> {
        let doc = serde_json::to_string(pending).map_err(store_error)?;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("state", AttributeValue::S(key.to_owned()))
            .item(
                "expires_at",
                AttributeValue::N(pending.expires_at.to_string()),
            )
            .item(
                "binding",
                AttributeValue::S(pending.browser_binding.clone()),
            )
            .item("doc", AttributeValue::S(doc))
            .condition_expression("attribute_not_exists(#state)")
            .expression_attribute_names("#state", "state")
            .send()
            .await
            .map(|_| ())
            .map_err(|err| store_error(aws_sdk_dynamodb::Error::from(err)))
    }

    async fn take_bound(
        &self,
        key: &str,
        binding: &str,
    ) -> Result<BoundTake, ConnectionStoreError> {
        // DynamoDB compares the binding hashes (not in constant time; they are hashes
        // of 256-bit random values, so timing tells nothing usable).
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("state", AttributeValue::S(key.to_owned()))
            .condition_expression("attribute_exists(#state) AND #binding = :binding")
            .expression_attribute_names("#state", "state")
            .expression_attribute_names("#binding", "binding")
            .expression_attribute_values(":binding", AttributeValue::S(binding.to_owned()))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let err = match result {
            Ok(output) => {
                return Ok(match output.attributes.as_ref().map(pending_of) {
                    Some(pending) => {
                        pending?.map_or(BoundTake::Missing, |p| BoundTake::Taken(Box::new(p)))
                    }
                    None => BoundTake::Missing,
                });
            }
            Err(err) => err,
        };
        let Some(failed) = err.as_service_error().and_then(|e| match e {
            DeleteItemError::ConditionalCheckFailedException(failed) => Some(failed),
            _ => None,
        }) else {
            return Err(store_error(aws_sdk_dynamodb::Error::from(err)));
        };
        let Some(item) = failed.item() else {
            return Ok(BoundTake::Missing);
        };
        if item.contains_key("binding") {
            return Ok(BoundTake::OtherBrowser);
        }
        // Written before the binding attribute existed (within ten minutes of a
        // deploy): the binding is checked on the document, then the state is taken.
        match pending_of(item)? {
            Some(pending) if bindings_match(&pending.browser_binding, binding) => {
                let output = self
                    .client
                    .delete_item()
                    .table_name(&self.table)
                    .key("state", AttributeValue::S(key.to_owned()))
                    .condition_expression("attribute_exists(#state)")
                    .expression_attribute_names("#state", "state")
                    .return_values(ReturnValue::AllOld)
                    .send()
                    .await;
                match output {
                    Ok(output) if output.attributes.is_some() => {
                        Ok(BoundTake::Taken(Box::new(pending)))
                    }
                    Ok(_) => Ok(BoundTake::Missing),
                    Err(err)
                        if err
                            .as_service_error()
                            .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
                    {
                        Ok(BoundTake::Missing)
                    }
                    Err(err) => Err(store_error(aws_sdk_dynamodb::Error::from(err))),
                }
            }
            Some(_) => Ok(BoundTake::OtherBrowser),
            None => Ok(BoundTake::Missing),
        }
    }
}
