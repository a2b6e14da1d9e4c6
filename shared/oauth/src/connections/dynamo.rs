//! The DynamoDB adapter of [`ConnectionStore`]: connections as items with three indexes
//! (by tenant, by refresh time, by provider account), each change a `PutItem` conditional on the stored
//! version, a provider's lifetime observations as one more versioned item. The vault
//! and the flows over it know nothing of it; it meets the same contract as the
//! in-memory store ([`super::check_connection_store_contract`], run on the emulator in
//! `tests/tests/integration/oauth_emulator.rs`).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

use junction_aws::crypto::{sealed_from_text, sealed_to_text};

use super::{
    Connection, ConnectionStore, ConnectionStoreError, LifetimeObservation,
    OBSERVATION_WINDOW_SECONDS, UnreadableConnection, merge_observation,
};

/// The attribute holding a connection's `<provider>#<account>`
/// ([`Connection::provider_account`]), the key of the table's `by-provider-account`
/// index; `junction_pipeline::accounts::PROVIDER_ACCOUNT_ATTRIBUTE` reads it.
pub const PROVIDER_ACCOUNT_ATTRIBUTE: &str = "provider_account";

/// A connection's last-event item: `id` = this prefix + the connection id, holding
/// [`LAST_EVENT_AT_ATTRIBUTE`] (what [`Connection::last_event_at`] shows), which the
/// event consumer writes on its own (`junction_pipeline::last_events`, the same names).
/// A disconnect replaces it with a tombstone ([`DELETED_AT_ATTRIBUTE`], expiring after
/// [`TOMBSTONE_SECONDS`]) so that a delivery attributed just before cannot bring it back.
const LAST_EVENT_KEY_PREFIX: &str = "last-event#";
const LAST_EVENT_AT_ATTRIBUTE: &str = "last_event_at";
const DELETED_AT_ATTRIBUTE: &str = "deleted_at";

/// How long a deleted connection's tombstone refuses the consumer's late writes: far
/// longer than the account index's cache (a minute) plus a delivery's processing.
const TOMBSTONE_SECONDS: i64 = 86_400;

/// BatchGetItem's limit on keys per request.
const BATCH_GET_KEYS: usize = 100;

/// DynamoDB: item `id` (key), `version`, `tenant` + `created_at` (index `by-tenant`),
/// `state` + `refresh_at` (index `by-refresh`, present only while a refresh is due
/// some day), [`PROVIDER_ACCOUNT_ATTRIBUTE`] + `created_at` (index
/// `by-provider-account`, projecting `tenant` only: the account index the event
/// consumer reads, present only on a connection with a provider account),
/// `tokens` (sealed, base64), `doc` (the rest, JSON). A provider's lifetime
/// observations are one item `id = lifetime#<provider>` with `version`, `doc` (JSON
/// `{"observations": [...]}`) and `expires_at` (the table's TTL attribute: the newest
/// observation's time plus the window). A connection's last webhook delivery time is
/// one item `id = last-event#<connection>` ([`LAST_EVENT_KEY_PREFIX`]). Neither has
/// any of the indexes' attributes, so listings and sweeps never see them.
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
        let doc =
            serde_json::to_string(connection).map_err(|err| ConnectionStoreError(Box::new(err)))?;
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
        // Every write is a whole item: a changed account moves the index entry, and
        // deleting the connection removes it.
        if let Some(account) = connection.provider_account() {
            item.insert(
                PROVIDER_ACCOUNT_ATTRIBUTE.to_owned(),
                AttributeValue::S(account.key()),
            );
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
            serde_json::from_str(text).map_err(|err| ConnectionStoreError(Box::new(err)))?;
        connection.version = item
            .get("version")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or_default();
        connection.tokens = match item.get("tokens").and_then(|v| v.as_s().ok()) {
            Some(text) => {
                Some(sealed_from_text(text).map_err(|err| ConnectionStoreError(Box::new(err)))?)
            }
            None => None,
        };
        Ok(connection)
    }

    /// The items of an index query, at most `limit`, not yet read as connections.
    async fn query(
        &self,
        index: &str,
        condition: &str,
        names: &[(&str, &str)],
        values: &[(&str, AttributeValue)],
        limit: Option<usize>,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, ConnectionStoreError> {
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
            connections.extend(output.items().iter().cloned());
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
    ConnectionStoreError(Box::new(aws_sdk_dynamodb::Error::from(err)))
}

/// The key of a provider's lifetime observations.
fn lifetime_key(provider: &str) -> AttributeValue {
    AttributeValue::S(format!("lifetime#{provider}"))
}

/// The observations document of a `lifetime#` item.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ObservationsDoc {
    observations: Vec<LifetimeObservation>,
}

impl DynamoConnectionStore {
    /// A provider's observations and the item's version (`None`: no item, or one from
    /// before observations, whose single shortest lifetime is deliberately dropped).
    async fn read_observations(
        &self,
        provider: &str,
        consistent: bool,
    ) -> Result<(Option<u64>, Vec<LifetimeObservation>), ConnectionStoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", lifetime_key(provider))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(dynamo_error)?;
        let Some(item) = output.item else {
            return Ok((None, Vec::new()));
        };
        let version = item
            .get("version")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok());
        let observations = match item.get("doc").and_then(|v| v.as_s().ok()) {
            Some(text) => {
                serde_json::from_str::<ObservationsDoc>(text)
                    .map_err(|err| ConnectionStoreError(Box::new(err)))?
                    .observations
            }
            None => Vec::new(),
        };
        Ok((version, observations))
    }
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
        junction_aws::dynamo::put_if(
            &self.client,
            &self.table,
            Self::item(next)?,
            junction_aws::dynamo::PutCondition::Version(expected),
        )
        .await
        .map_err(|err| ConnectionStoreError(Box::new(err)))
    }

    async fn delete(&self, id: &str) -> Result<(), ConnectionStoreError> {
        // One transaction: a tombstone without the delete would refuse a live
        // connection's times, a delete without it would let a late one come back.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let delete = aws_sdk_dynamodb::types::Delete::builder()
            .table_name(&self.table)
            .key("id", AttributeValue::S(id.to_owned()))
            .build()
            .map_err(|err| ConnectionStoreError(Box::new(err)))?;
        let tombstone = aws_sdk_dynamodb::types::Put::builder()
            .table_name(&self.table)
            .item(
                "id",
                AttributeValue::S(format!("{LAST_EVENT_KEY_PREFIX}{id}")),
            )
            .item(DELETED_AT_ATTRIBUTE, AttributeValue::N(now.to_string()))
            .item(
                "expires_at",
                AttributeValue::N((now + TOMBSTONE_SECONDS).to_string()),
            )
            .build()
            .map_err(|err| ConnectionStoreError(Box::new(err)))?;
        self.client
            .transact_write_items()
            .transact_items(
                aws_sdk_dynamodb::types::TransactWriteItem::builder()
                    .delete(delete)
                    .build(),
            )
            .transact_items(
                aws_sdk_dynamodb::types::TransactWriteItem::builder()
                    .put(tombstone)
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(dynamo_error)
    }

    async fn last_events(
        &self,
        ids: &[&str],
    ) -> Result<HashMap<String, i64>, ConnectionStoreError> {
        let mut times = HashMap::new();
        for chunk in ids.chunks(BATCH_GET_KEYS) {
            let keys = chunk
                .iter()
                .map(|id| {
                    HashMap::from([(
                        "id".to_owned(),
                        AttributeValue::S(format!("{LAST_EVENT_KEY_PREFIX}{id}")),
                    )])
                })
                .collect::<Vec<_>>();
            let mut request = Some(
                aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .projection_expression("id, #at")
                    .expression_attribute_names("#at", LAST_EVENT_AT_ATTRIBUTE)
                    .build()
                    .map_err(|err| ConnectionStoreError(Box::new(err)))?,
            );
            // Unprocessed keys (throttling) are asked again, a bounded number of times.
            for attempt in 0..5u32 {
                let Some(keys) = request.take() else { break };
                if attempt > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                }
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, keys)
                    .send()
                    .await
                    .map_err(dynamo_error)?;
                for item in output
                    .responses
                    .as_ref()
                    .and_then(|r| r.get(&self.table))
                    .into_iter()
                    .flatten()
                {
                    let id = item
                        .get("id")
                        .and_then(|v| v.as_s().ok())
                        .and_then(|key| key.strip_prefix(LAST_EVENT_KEY_PREFIX));
                    let at = item
                        .get(LAST_EVENT_AT_ATTRIBUTE)
                        .and_then(|v| v.as_n().ok())
                        .and_then(|n| n.parse().ok());
                    if let (Some(id), Some(at)) = (id, at) {
                        times.insert(id.to_owned(), at);
                    }
                }
                request = output
                    .unprocessed_keys
                    .and_then(|mut left| left.remove(&self.table))
                    .filter(|left| !left.keys.is_empty());
            }
            if request.is_some() {
                return Err(ConnectionStoreError(
                    "last event times still unprocessed after five tries".into(),
                ));
            }
        }
        Ok(times)
    }

    async fn list_for_tenant(&self, tenant: &str) -> Result<Vec<Connection>, ConnectionStoreError> {
        self.query(
            "by-tenant",
            "tenant = :tenant",
            &[],
            &[(":tenant", AttributeValue::S(tenant.to_owned()))],
            None,
        )
        .await?
        .iter()
        .map(Self::connection)
        .collect()
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
    ) -> Result<Vec<Result<Connection, UnreadableConnection>>, ConnectionStoreError> {
        let items = self
            .query(
                "by-refresh",
                "#state = :active AND refresh_at <= :before",
                &[("#state", "state")],
                &[
                    (":active", AttributeValue::S("active".into())),
                    (":before", AttributeValue::N(before.to_string())),
                ],
                Some(limit),
            )
            .await?;
        Ok(items
            .iter()
            .map(|item| {
                Self::connection(item).map_err(|source| UnreadableConnection {
                    id: item
                        .get("id")
                        .and_then(|v| v.as_s().ok())
                        .cloned()
                        .unwrap_or_default(),
                    source,
                })
            })
            .collect())
    }

    async fn lifetime_observations(
        &self,
        provider: &str,
    ) -> Result<Vec<LifetimeObservation>, ConnectionStoreError> {
        Ok(self.read_observations(provider, false).await?.1)
    }

    async fn record_lifetime(
        &self,
        provider: &str,
        observation: LifetimeObservation,
    ) -> Result<(), ConnectionStoreError> {
        // Read, merge, put conditional on the version read: a concurrent recorder makes
        // the put fail, and the merge is redone on what it wrote.
        for _ in 0..8 {
            let (version, observations) = self.read_observations(provider, true).await?;
            let observations = merge_observation(observations, observation.clone());
            let newest = observations.iter().map(|o| o.at).max().unwrap_or_default();
            let doc = serde_json::to_string(&ObservationsDoc { observations })
                .map_err(|err| ConnectionStoreError(Box::new(err)))?;
            let next = version.unwrap_or_default() + 1;
            let request = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("id", lifetime_key(provider))
                .item("version", AttributeValue::N(next.to_string()))
                .item("doc", AttributeValue::S(doc))
                .item(
                    "expires_at",
                    AttributeValue::N(
                        newest
                            .saturating_add(OBSERVATION_WINDOW_SECONDS)
                            .to_string(),
                    ),
                )
                .expression_attribute_names("#version", "version");
            let request = match version {
                Some(expected) => request
                    .condition_expression("#version = :expected")
                    .expression_attribute_values(
                        ":expected",
                        AttributeValue::N(expected.to_string()),
                    ),
                None => request.condition_expression("attribute_not_exists(#version)"),
            };
            match request.send().await {
                Ok(_) => return Ok(()),
                Err(err)
                    if err
                        .as_service_error()
                        .is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
                Err(err) => return Err(dynamo_error(err)),
            }
        }
        Err(ConnectionStoreError(
            format!("lifetime observations of {provider} kept changing under concurrent writers")
                .into(),
        ))
    }
}
