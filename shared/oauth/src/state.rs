//! Pending authorizations, keyed by the hash of their OAuth `state`: written at start,
//! consumed once at the callback by a conditional delete, so a replayed state finds
//! nothing. The delete is also conditional on the browser binding: a callback from
//! another browser (a stolen callback URL) is refused without consuming the state, so
//! it cannot burn the real user's attempt. They expire after ten minutes (checked by
//! the flow; DynamoDB's TTL only sweeps them later).

use std::{collections::BTreeMap, sync::Mutex};

use async_trait::async_trait;
use aws_sdk_dynamodb::{
    operation::delete_item::DeleteItemError,
    types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure},
};
use serde::{Deserialize, Serialize};

use super::connections::ConnectionStoreError;
use junction_aws::crypto::SecretString;

/// What the callback needs to finish what the start began.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingAuthorization {
    pub provider: String,
    pub tenant: String,
    /// Where the user goes afterwards (already checked against the allow-list).
    pub return_to: String,
    /// The exact redirect URI sent to the authorize endpoint (the token call repeats it).
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    /// The PKCE verifier, where the provider takes PKCE.
    pub pkce_verifier: Option<SecretString>,
    /// Validated URL parameters (`shop`, `tenant`, `login_domain`).
    pub params: BTreeMap<String, String>,
    /// The connection being re-authorized, if any.
    pub reconnect: Option<String>,
    /// `sha256` of the browser-binding cookie set at start (login CSRF protection).
    pub browser_binding: String,
    /// Unix seconds after which the state is refused.
    pub expires_at: i64,
    /// The OpenID Connect `nonce` sent to the authorize endpoint; the ID token must
    /// carry it.
    #[serde(default)]
    pub nonce: Option<String>,
    /// The connect session allowed a reconnect to bring back another provider account.
    #[serde(default)]
    pub allow_account_change: bool,
    /// The product's user the connect session named.
    #[serde(default)]
    pub end_user: Option<super::session::EndUser>,
}

/// What [`StateStore::take_bound`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum BoundTake {
    /// Removed and returned: the binding matched.
    Taken(Box<PendingAuthorization>),
    /// It exists but was started in another browser: left in place.
    OtherBrowser,
    /// Never issued, or already used.
    Missing,
}

/// Single-use storage of pending authorizations.
#[async_trait]
pub trait StateStore: Send + Sync + std::fmt::Debug {
    async fn put(
        &self,
        key: &str,
        pending: &PendingAuthorization,
    ) -> Result<(), ConnectionStoreError>;

    /// Removes and returns the pending authorization if its `browser_binding` is
    /// `binding` (the hash of the cookie the callback came with); one conditional
    /// operation, so of two callbacks with the same state at most one gets it, and one
    /// from another browser leaves it for the real user.
    async fn take_bound(&self, key: &str, binding: &str)
    -> Result<BoundTake, ConnectionStoreError>;
}

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

/// Whether two binding hashes are equal, in constant time.
fn bindings_match(stored: &str, presented: &str) -> bool {
    subtle::ConstantTimeEq::ct_eq(stored.as_bytes(), presented.as_bytes()).into()
}

/// Pending authorizations in memory.
#[derive(Debug, Default)]
pub struct InMemoryStateStore {
    pending: Mutex<BTreeMap<String, PendingAuthorization>>,
}

impl InMemoryStateStore {
    /// How many pending authorizations are stored.
    pub fn len(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl StateStore for InMemoryStateStore {
    async fn put(
        &self,
        key: &str,
        pending: &PendingAuthorization,
    ) -> Result<(), ConnectionStoreError> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_owned(), pending.clone());
        Ok(())
    }

    async fn take_bound(
        &self,
        key: &str,
        binding: &str,
    ) -> Result<BoundTake, ConnectionStoreError> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        Ok(match pending.get(key) {
            None => BoundTake::Missing,
            Some(stored) if !bindings_match(&stored.browser_binding, binding) => {
                BoundTake::OtherBrowser
            }
            Some(_) => pending
                .remove(key)
                .map_or(BoundTake::Missing, |p| BoundTake::Taken(Box::new(p))),
        })
    }
}
