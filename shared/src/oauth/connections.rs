//! Connections: one per (tenant, provider account), with its sealed tokens and health.
//!
//! Every change is an optimistic replace conditional on the record's `version`, so
//! concurrent writers (the refresher, the poll worker recording a sync, a disconnect)
//! never lose each other's updates; the refresh lease is a field set the same way, so
//! exactly one caller refreshes a connection at a time.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

use crate::crypto::{Sealed, sealed_from_text, sealed_to_text};

/// A connection store failure (transient: retry later).
#[derive(Debug, thiserror::Error)]
#[error("connection store unavailable: {0}")]
pub struct ConnectionStoreError(pub String);

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// Tokens work (or will after a refresh).
    Active,
    /// The grant is gone (revoked, password changed, refresh token expired): the user
    /// must connect again.
    NeedsReauth,
}

impl ConnectionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Active => "active",
            ConnectionState::NeedsReauth => "needs_reauth",
        }
    }
}

/// Who holds the right to refresh, until when (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: String,
    pub until: i64,
}

/// One connected account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    pub id: String,
    pub tenant: String,
    pub provider: String,
    pub state: ConnectionState,
    /// Scopes granted (as the token response stated them, else as requested).
    pub scopes: Vec<String>,
    /// The provider's id of the connected account, where the catalog says where it is.
    pub account_id: Option<String>,
    /// URL parameters (`shop`, `tenant`, `login_domain`) and kept response values
    /// (`instance_url`).
    pub params: BTreeMap<String, String>,
    /// The sealed [`super::TokenSet`]; `None` once disconnected.
    #[serde(skip)]
    pub tokens: Option<Sealed>,
    /// Incremented whenever new tokens are stored.
    pub token_generation: u64,
    /// When the current access token was issued (Unix seconds).
    pub token_issued_at: Option<i64>,
    /// The lifetime the provider stated (or the catalog's default), in seconds; `None`:
    /// the token does not expire.
    pub stated_lifetime: Option<u64>,
    /// Whether a refresh token is stored.
    pub refreshable: bool,
    /// When the refresher should renew the token (Unix seconds), if ever.
    pub refresh_at: Option<i64>,
    /// The refresh lease, while somebody refreshes.
    pub lease: Option<Lease>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Last time a sync with the provider succeeded (Unix seconds).
    pub last_successful_sync: Option<i64>,
    /// The last error (a code and a short reason, never a token), and when.
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    /// The optimistic-concurrency token: every write increments it.
    #[serde(skip)]
    pub version: u64,
}

/// Storage of connections and of each provider's learned token lifetime.
#[async_trait]
pub trait ConnectionStore: Send + Sync + std::fmt::Debug {
    /// Stores a new connection (fails if the id exists).
    async fn insert(&self, connection: &Connection) -> Result<(), ConnectionStoreError>;

    async fn get(&self, id: &str) -> Result<Option<Connection>, ConnectionStoreError>;

    /// Writes `next` (its `version` must be `expected + 1`) if the stored version is
    /// still `expected`. False when another writer got there first.
    async fn replace(&self, next: &Connection, expected: u64)
    -> Result<bool, ConnectionStoreError>;

    async fn delete(&self, id: &str) -> Result<(), ConnectionStoreError>;

    /// A tenant's connections, oldest first.
    async fn list_for_tenant(&self, tenant: &str) -> Result<Vec<Connection>, ConnectionStoreError>;

    /// Every connection (at most `limit`), for an operator's overview (`junction
    /// status`): a scan, never on a request path.
    async fn list_all(&self, limit: usize) -> Result<Vec<Connection>, ConnectionStoreError>;

    /// Active connections whose `refresh_at` is at or before `before`.
    async fn due_for_refresh(
        &self,
        before: i64,
        limit: usize,
    ) -> Result<Vec<Connection>, ConnectionStoreError>;

    /// The shortest lifetime observed for the provider's tokens, if one was learned.
    async fn learned_lifetime(&self, provider: &str) -> Result<Option<u64>, ConnectionStoreError>;

    /// Records an observed lifetime if it is shorter than the one learned so far.
    async fn shorten_lifetime(
        &self,
        provider: &str,
        seconds: u64,
    ) -> Result<(), ConnectionStoreError>;
}

/// DynamoDB: item `id` (key), `version`, `tenant` + `created_at` (index `by-tenant`),
/// `state` + `refresh_at` (index `by-refresh`, present only while a refresh is due
/// some day), `tokens` (sealed, base64), `doc` (the rest, JSON). Learned lifetimes are
/// items `id = lifetime#<provider>` with `seconds`.
#[derive(Debug, Clone)]
pub struct DynamoConnectionStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoConnectionStore {
    pub fn from_config(aws: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        DynamoConnectionStore {
            client: aws_sdk_dynamodb::Client::new(aws),
            table: table.into(),
        }
    }

    fn item(
        connection: &Connection,
    ) -> Result<HashMap<String, AttributeValue>, ConnectionStoreError> {
        let doc = serde_json::to_string(connection)
            .map_err(|err| ConnectionStoreError(err.to_string()))?;
        let mut item = HashMap::from([
            ("id".to_owned(), AttributeValue::S(connection.id.clone())),
            (
                "version".to_owned(),
                AttributeValue::N(connection.version.to_string()),
            ),
            (
                "tenant".to_owned(),
                AttributeValue::S(connection.tenant.clone()),
            ),
            (
                "created_at".to_owned(),
                AttributeValue::N(connection.created_at.to_string()),
            ),
            (
                "state".to_owned(),
                AttributeValue::S(connection.state.as_str().to_owned()),
            ),
            ("doc".to_owned(), AttributeValue::S(doc)),
        ]);
        if let Some(tokens) = &connection.tokens {
            item.insert(
                "tokens".to_owned(),
                AttributeValue::S(sealed_to_text(tokens)),
            );
        }
        if let Some(at) = connection.refresh_at {
            item.insert("refresh_at".to_owned(), AttributeValue::N(at.to_string()));
        }
        Ok(item)
    }

    fn connection(
        item: &HashMap<String, AttributeValue>,
    ) -> Result<Connection, ConnectionStoreError> {
        let text = item
            .get("doc")
            .and_then(|v| v.as_s().ok())
            .ok_or_else(|| ConnectionStoreError("connection item without doc".into()))?;
        let mut connection: Connection =
            serde_json::from_str(text).map_err(|err| ConnectionStoreError(err.to_string()))?;
        connection.version = item
            .get("version")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or_default();
        connection.tokens = match item.get("tokens").and_then(|v| v.as_s().ok()) {
            Some(text) => {
                Some(sealed_from_text(text).map_err(|err| ConnectionStoreError(err.to_string()))?)
            }
            None => None,
        };
        Ok(connection)
    }

    async fn query(
        &self,
        index: &str,
        condition: &str,
        names: &[(&str, &str)],
        values: &[(&str, AttributeValue)],
        limit: Option<usize>,
    ) -> Result<Vec<Connection>, ConnectionStoreError> {
        let mut connections = Vec::new();
        let mut start = None;
        loop {
            let mut request = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression(condition)
                .set_exclusive_start_key(start.take());
            for (name, attribute) in names {
                request = request.expression_attribute_names(*name, *attribute);
            }
            for (name, value) in values {
                request = request.expression_attribute_values(*name, value.clone());
            }
            let output = request.send().await.map_err(dynamo_error)?;
            for item in output.items() {
                connections.push(Self::connection(item)?);
            }
            if limit.is_some_and(|limit| connections.len() >= limit) {
                connections.truncate(limit.unwrap_or(usize::MAX));
                return Ok(connections);
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(connections),
            }
        }
    }
}

fn dynamo_error<E: std::fmt::Debug + std::fmt::Display>(
    err: aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> ConnectionStoreError
where
    aws_sdk_dynamodb::Error:
        From<aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>>,
{
    ConnectionStoreError(aws_sdk_dynamodb::Error::from(err).to_string())
}

fn conditional_failed<E>(
    err: &aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    err.as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

#[async_trait]
impl ConnectionStore for DynamoConnectionStore {
    async fn insert(&self, connection: &Connection) -> Result<(), ConnectionStoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::item(connection)?))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await
            .map(|_| ())
            .map_err(dynamo_error)
    }

    async fn get(&self, id: &str) -> Result<Option<Connection>, ConnectionStoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(id.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(dynamo_error)?;
        output.item.as_ref().map(Self::connection).transpose()
    }

    async fn replace(
        &self,
        next: &Connection,
        expected: u64,
    ) -> Result<bool, ConnectionStoreError> {
        crate::dynamo::put_if(
            &self.client,
            &self.table,
            Self::item(next)?,
            crate::dynamo::PutCondition::Version(expected),
        )
        .await
        .map_err(|err| ConnectionStoreError(err.to_string()))
    }

    async fn delete(&self, id: &str) -> Result<(), ConnectionStoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(id.to_owned()))
            .send()
            .await
            .map(|_| ())
            .map_err(dynamo_error)
    }

    async fn list_for_tenant(&self, tenant: &str) -> Result<Vec<Connection>, ConnectionStoreError> {
        self.query(
            "by-tenant",
            "tenant = :tenant",
            &[],
            &[(":tenant", AttributeValue::S(tenant.to_owned()))],
            None,
        )
        .await
    }

    async fn list_all(&self, limit: usize) -> Result<Vec<Connection>, ConnectionStoreError> {
        // The by-tenant index (projection ALL) holds connections only: learned
        // lifetimes have no tenant.
        let mut connections = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .scan()
                .table_name(&self.table)
                .index_name("by-tenant")
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(dynamo_error)?;
            for item in output.items() {
                connections.push(Self::connection(item)?);
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() && connections.len() < limit => start = Some(key),
                _ => break,
            }
        }
        connections.sort_by_key(|c| c.created_at);
        connections.truncate(limit);
        Ok(connections)
    }

    async fn due_for_refresh(
        &self,
        before: i64,
        limit: usize,
    ) -> Result<Vec<Connection>, ConnectionStoreError> {
        self.query(
            "by-refresh",
            "#state = :active AND refresh_at <= :before",
            &[("#state", "state")],
            &[
                (":active", AttributeValue::S("active".into())),
                (":before", AttributeValue::N(before.to_string())),
            ],
            Some(limit),
        )
        .await
    }

    async fn learned_lifetime(&self, provider: &str) -> Result<Option<u64>, ConnectionStoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(format!("lifetime#{provider}")))
            .send()
            .await
            .map_err(dynamo_error)?;
        Ok(output
            .item
            .as_ref()
            .and_then(|item| item.get("seconds"))
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok()))
    }

    async fn shorten_lifetime(
        &self,
        provider: &str,
        seconds: u64,
    ) -> Result<(), ConnectionStoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(format!("lifetime#{provider}")))
            .update_expression("SET seconds = :seconds")
            .condition_expression("attribute_not_exists(seconds) OR seconds > :seconds")
            .expression_attribute_values(":seconds", AttributeValue::N(seconds.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if conditional_failed(&err) => Ok(()),
            Err(err) => Err(dynamo_error(err)),
        }
    }
}

/// Connections in memory, with the same conditions.
#[derive(Debug, Default)]
pub struct InMemoryConnectionStore {
    connections: Mutex<BTreeMap<String, Connection>>,
    lifetimes: Mutex<HashMap<String, u64>>,
    /// Outage injection: `(replaces to let through first, replaces to fail then)`.
    failing_replaces: Mutex<(usize, usize)>,
}

impl InMemoryConnectionStore {
    /// Lets `skip` replaces through, then fails the next `count` as if the store were
    /// unreachable.
    pub fn fail_replaces(&self, skip: usize, count: usize) {
        *self
            .failing_replaces
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = (skip, count);
    }

    /// Injected failures not yet used.
    pub fn injected_failures_left(&self) -> usize {
        self.failing_replaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
    }
}

#[async_trait]
impl ConnectionStore for InMemoryConnectionStore {
    async fn insert(&self, connection: &Connection) -> Result<(), ConnectionStoreError> {
        let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        if connections.contains_key(&connection.id) {
            return Err(ConnectionStoreError("connection id exists".into()));
        }
        connections.insert(connection.id.clone(), connection.clone());
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<Connection>, ConnectionStoreError> {
        Ok(self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned())
    }

    async fn replace(
        &self,
        next: &Connection,
        expected: u64,
    ) -> Result<bool, ConnectionStoreError> {
        {
            let mut failing = self
                .failing_replaces
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if failing.0 > 0 {
                failing.0 -= 1;
            } else if failing.1 > 0 {
                failing.1 -= 1;
                return Err(ConnectionStoreError("injected outage".into()));
            }
        }
        let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        match connections.get(&next.id) {
            Some(stored) if stored.version == expected => {
                connections.insert(next.id.clone(), next.clone());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn delete(&self, id: &str) -> Result<(), ConnectionStoreError> {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        Ok(())
    }

    async fn list_for_tenant(&self, tenant: &str) -> Result<Vec<Connection>, ConnectionStoreError> {
        let mut list: Vec<Connection> = self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|c| c.tenant == tenant)
            .cloned()
            .collect();
        list.sort_by_key(|c| c.created_at);
        Ok(list)
    }

    async fn list_all(&self, limit: usize) -> Result<Vec<Connection>, ConnectionStoreError> {
        let mut list: Vec<Connection> = self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        list.sort_by_key(|c| c.created_at);
        list.truncate(limit);
        Ok(list)
    }

    async fn due_for_refresh(
        &self,
        before: i64,
        limit: usize,
    ) -> Result<Vec<Connection>, ConnectionStoreError> {
        Ok(self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|c| {
                c.state == ConnectionState::Active && c.refresh_at.is_some_and(|at| at <= before)
            })
            .take(limit)
            .cloned()
            .collect())
    }

    async fn learned_lifetime(&self, provider: &str) -> Result<Option<u64>, ConnectionStoreError> {
        Ok(self
            .lifetimes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(provider)
            .copied())
    }

    async fn shorten_lifetime(
        &self,
        provider: &str,
        seconds: u64,
    ) -> Result<(), ConnectionStoreError> {
        let mut lifetimes = self.lifetimes.lock().unwrap_or_else(|p| p.into_inner());
        let entry = lifetimes.entry(provider.to_owned()).or_insert(seconds);
        *entry = (*entry).min(seconds);
        Ok(())
    }
}

/// A connection for store tests.
pub fn sample_connection(id: &str, tenant: &str, created_at: i64) -> Connection {
    Connection {
        id: id.to_owned(),
        tenant: tenant.to_owned(),
        provider: "github".to_owned(),
        state: ConnectionState::Active,
        scopes: vec!["repo".into()],
        account_id: None,
        params: BTreeMap::new(),
        tokens: Some(Sealed {
            ciphertext: vec![1, 2, 3],
            nonce: vec![0; 12],
            encrypted_key: vec![4, 5],
        }),
        token_generation: 1,
        token_issued_at: Some(created_at),
        stated_lifetime: Some(3_600),
        refreshable: true,
        refresh_at: Some(created_at + 3_300),
        lease: None,
        created_at,
        updated_at: created_at,
        last_successful_sync: None,
        last_error: None,
        last_error_at: None,
        version: 1,
    }
}

/// What every adapter must do (run against DynamoDB on the emulator too).
pub async fn check_connection_store_contract(store: &dyn ConnectionStore) {
    let first = sample_connection("conn_contract_1", "tenant-contract", 1_000);
    store.insert(&first).await.expect("insert");
    assert!(store.insert(&first).await.is_err(), "ids are unique");
    let mut second = sample_connection("conn_contract_2", "tenant-contract", 2_000);
    second.refresh_at = Some(9_999_999);
    store.insert(&second).await.expect("insert");
    let read = store
        .get("conn_contract_1")
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(
        read, first,
        "a round trip keeps every field, sealed tokens included"
    );
    let mut next = read.clone();
    next.version += 1;
    next.last_error = Some("rate_limited".into());
    assert!(store.replace(&next, read.version).await.expect("replace"));
    assert!(
        !store.replace(&next, read.version).await.expect("replace"),
        "a stale version loses"
    );
    let listed = store
        .list_for_tenant("tenant-contract")
        .await
        .expect("list");
    assert_eq!(
        listed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["conn_contract_1", "conn_contract_2"]
    );
    store
        .shorten_lifetime("gitlab", 7_200)
        .await
        .expect("learn");
    let all = store.list_all(100).await.expect("list all");
    let mine: Vec<&Connection> = all
        .iter()
        .filter(|c| c.tenant == "tenant-contract")
        .collect();
    assert_eq!(
        mine.len(),
        2,
        "every connection, and nothing but connections"
    );
    assert!(all.iter().all(|c| !c.id.starts_with("lifetime#")));
    assert_eq!(
        mine.iter()
            .find(|c| c.id == "conn_contract_1")
            .map(|c| c.last_error.as_deref()),
        Some(Some("rate_limited")),
        "whole connections"
    );
    assert_eq!(store.list_all(1).await.expect("list one").len(), 1);
    let due = store.due_for_refresh(5_000, 10).await.expect("due");
    assert!(due.iter().any(|c| c.id == "conn_contract_1"));
    assert!(!due.iter().any(|c| c.id == "conn_contract_2"));
    store
        .shorten_lifetime("github", 3_000)
        .await
        .expect("learn");
    store
        .shorten_lifetime("github", 3_200)
        .await
        .expect("learn");
    assert_eq!(
        store.learned_lifetime("github").await.expect("read"),
        Some(3_000)
    );
    store.delete("conn_contract_1").await.expect("delete");
    assert!(store.get("conn_contract_1").await.expect("get").is_none());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_memory_store_meets_the_contract() {
        check_connection_store_contract(&InMemoryConnectionStore::default()).await;
    }
}
