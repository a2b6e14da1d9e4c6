//! Pending authorizations, keyed by the hash of their OAuth `state`: written at start,
//! consumed once at the callback by a conditional delete, so a replayed state finds
//! nothing. They expire after ten minutes (checked on read; DynamoDB's TTL only sweeps
//! them later).

use std::{collections::BTreeMap, sync::Mutex};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use serde::{Deserialize, Serialize};

use super::connections::ConnectionStoreError;
use crate::crypto::SecretString;

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
}

/// Single-use storage of pending authorizations.
#[async_trait]
pub trait StateStore: Send + Sync + std::fmt::Debug {
    async fn put(
        &self,
        key: &str,
        pending: &PendingAuthorization,
    ) -> Result<(), ConnectionStoreError>;

    /// Removes and returns the pending authorization; `None` if it does not exist (never
    /// issued, or already used).
    async fn take(&self, key: &str) -> Result<Option<PendingAuthorization>, ConnectionStoreError>;
}

/// DynamoDB: item `state` (the hash, key), `expires_at` (the table's TTL attribute),
/// `doc` (JSON).
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

fn store_error(err: impl std::fmt::Display) -> ConnectionStoreError {
    ConnectionStoreError(err.to_string())
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
            .item("doc", AttributeValue::S(doc))
            .condition_expression("attribute_not_exists(#state)")
            .expression_attribute_names("#state", "state")
            .send()
            .await
            .map(|_| ())
            .map_err(|err| store_error(aws_sdk_dynamodb::Error::from(err)))
    }

    async fn take(&self, key: &str) -> Result<Option<PendingAuthorization>, ConnectionStoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("state", AttributeValue::S(key.to_owned()))
            .condition_expression("attribute_exists(#state)")
            .expression_attribute_names("#state", "state")
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => output
                .attributes
                .as_ref()
                .and_then(|item| item.get("doc"))
                .and_then(|v| v.as_s().ok())
                .map(|text| serde_json::from_str(text).map_err(store_error))
                .transpose(),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(None)
            }
            Err(err) => Err(store_error(aws_sdk_dynamodb::Error::from(err))),
        }
    }
}

/// Pending authorizations in memory.
#[derive(Debug, Default)]
pub struct InMemoryStateStore {
    pending: Mutex<BTreeMap<String, PendingAuthorization>>,
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

    async fn take(&self, key: &str) -> Result<Option<PendingAuthorization>, ConnectionStoreError> {
        Ok(self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key))
    }
}
