//! Connections: one per (tenant, provider account), with its sealed tokens and health.
//!
//! Every change is an optimistic replace conditional on the record's `version`, so
//! concurrent writers (the refresher, the poll worker recording a sync, a disconnect)
//! never lose each other's updates; the refresh lease is a field set the same way, so
//! exactly one caller refreshes a connection at a time.
//!
//! The store also keeps, per provider, the *lifetime observations* the vault learns a
//! provider's real token lifetime from (one per connection, its latest, for
//! [`OBSERVATION_WINDOW_SECONDS`]); the rule that turns them into a lifetime is the
//! vault's.
//!
//! The store is a port ([`ConnectionStore`]): DynamoDB ([`DynamoConnectionStore`], in
//! its own module `dynamo`, the only one here that knows the SDK) and memory.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use junction_aws::crypto::Sealed;

mod dynamo;

pub use dynamo::{DynamoConnectionStore, PROVIDER_ACCOUNT_ATTRIBUTE};

/// A connection store failure (transient: retry later), with its cause.
#[derive(Debug, thiserror::Error)]
#[error("connection store unavailable")]
pub struct ConnectionStoreError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// A stored connection that could not be read back (a corrupt item): its id and why.
/// Reported on its own so one such item does not stop a sweep over the others.
#[derive(Debug, thiserror::Error)]
#[error("connection {id} could not be read")]
pub struct UnreadableConnection {
    pub id: String,
    #[source]
    pub source: ConnectionStoreError,
}

/// How long a lifetime observation counts (seven days): a learned lifetime that no new
/// observation confirms lapses, and DynamoDB's TTL deletes a provider's observations
/// that long after the newest.
pub const OBSERVATION_WINDOW_SECONDS: i64 = 7 * 24 * 3600;

/// At most this many observations are kept per provider (the newest): the record stays
/// one small item however many connections report.
const MAX_OBSERVATIONS: usize = 64;

/// One connection's sighting of a token rejected before its stated lifetime, recorded
/// only once the refresh that followed succeeded (the grant was alive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifetimeObservation {
    /// The connection that saw it: each connection counts once, with its latest.
    pub connection: String,
    /// How old the rejected token was, in seconds.
    pub seconds: u64,
    /// When it was rejected (Unix seconds).
    pub at: i64,
}

/// A provider's observations after recording `new`: the connection's earlier one
/// replaced, none older than [`OBSERVATION_WINDOW_SECONDS`] before the newest, at most
/// [`MAX_OBSERVATIONS`] (the newest). What every store keeps.
pub(crate) fn merge_observation(
    mut observations: Vec<LifetimeObservation>,
    new: LifetimeObservation,
) -> Vec<LifetimeObservation> {
    observations.retain(|o| o.connection != new.connection);
    observations.push(new);
    let newest = observations.iter().map(|o| o.at).max().unwrap_or_default();
    observations.retain(|o| o.at > newest.saturating_sub(OBSERVATION_WINDOW_SECONDS));
    observations.sort_by_key(|o| std::cmp::Reverse(o.at));
    observations.truncate(MAX_OBSERVATIONS);
    observations
}

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
    /// The product's user who connected it, as the connect session named them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_user: Option<super::session::EndUser>,
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
    /// Last time a connection test (`POST …/connections/{id}/test`) succeeded (Unix
    /// seconds). Absent in records stored before tests existed.
    #[serde(default)]
    pub last_verified_at: Option<i64>,
    /// When a webhook delivery attributed to this connection last arrived (Unix
    /// seconds). The event consumer records it apart from the connection
    /// (`junction_pipeline::last_events`: a small item of its own, so a busy connection
    /// costs one write unit, not a rewrite of this item and its indexes); `get` and the
    /// listings leave it `None`, and only the views that show it read it, with
    /// [`with_last_events`].
    #[serde(skip)]
    pub last_event_at: Option<i64>,
    /// The account is the provider's sandbox, as the connect session said: the nightly
    /// contract check runs against it (`junction_contracts` finds it by this member of
    /// the stored document). A reconnect keeps it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sandbox: bool,
    /// The optimistic-concurrency token: every write increments it.
    #[serde(skip)]
    pub version: u64,
}

impl Connection {
    /// The provider account this connection stands for, as the provider's webhooks name
    /// it: what the account index keys it under, so that the consumer stamps its events
    /// with this connection and its tenant. `None`: nothing to index (the catalog names
    /// no account for the provider). The index entry goes with the connection: written
    /// with every store of it, gone when it is deleted.
    pub fn provider_account(&self) -> Option<super::provider_account::ProviderAccount> {
        super::provider_account::of(self)
    }
}

/// Storage of connections and of each provider's lifetime observations.
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

    /// Active connections whose `refresh_at` is at or before `before` (at most
    /// `limit`, the earliest first where the store can order them). An item that cannot
    /// be read is an `Err` of its own, not a failure of the whole read.
    async fn due_for_refresh(
        &self,
        before: i64,
        limit: usize,
    ) -> Result<Vec<Result<Connection, UnreadableConnection>>, ConnectionStoreError>;

    /// The provider's lifetime observations as kept by
    /// [`ConnectionStore::record_lifetime`] (at most one per connection; possibly
    /// older than the window: the reader filters by its own clock).
    async fn lifetime_observations(
        &self,
        provider: &str,
    ) -> Result<Vec<LifetimeObservation>, ConnectionStoreError>;

    /// Adds `observation` to the provider's as [`merge_observation`] does. Concurrent
    /// recorders must not lose each other's observations.
    async fn record_lifetime(
        &self,
        provider: &str,
        observation: LifetimeObservation,
    ) -> Result<(), ConnectionStoreError>;

    /// When a webhook delivery was last attributed to each of `ids`, as the event
    /// consumer records it; a connection without one is absent from the map.
    async fn last_events(&self, ids: &[&str])
    -> Result<HashMap<String, i64>, ConnectionStoreError>;
}

/// `connections` with their [`Connection::last_event_at`] read from `store`: for the
/// views that show it (the management API, `junction status`), one batched read.
pub async fn with_last_events(
    store: &dyn ConnectionStore,
    mut connections: Vec<Connection>,
) -> Result<Vec<Connection>, ConnectionStoreError> {
    if connections.is_empty() {
        return Ok(connections);
    }
    let ids: Vec<&str> = connections.iter().map(|c| c.id.as_str()).collect();
    let times = store.last_events(&ids).await?;
    for connection in &mut connections {
        connection.last_event_at = times.get(&connection.id).copied();
    }
    Ok(connections)
}

/// Connections in memory, with the same conditions.
#[derive(Debug, Default)]
pub struct InMemoryConnectionStore {
    connections: Mutex<BTreeMap<String, Connection>>,
    /// What the event consumer would have recorded ([`Self::record_last_event`]).
    last_events: Mutex<HashMap<String, i64>>,
    observations: Mutex<HashMap<String, Vec<LifetimeObservation>>>,
    /// Outage injection: `(replaces to let through first, replaces to fail then)`.
    failing_replaces: Mutex<(usize, usize)>,
}

impl InMemoryConnectionStore {
    /// Records a webhook delivery's time for connection `id`, as the event consumer
    /// does in DynamoDB (forward only; nothing for a connection that does not exist).
    pub fn record_last_event(&self, id: &str, at: i64) {
        if !self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
        {
            return;
        }
        let mut times = self.last_events.lock().unwrap_or_else(|p| p.into_inner());
        let stored = times.entry(id.to_owned()).or_insert(at);
        *stored = (*stored).max(at);
    }

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
        self.last_events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        Ok(())
    }

    async fn last_events(
        &self,
        ids: &[&str],
    ) -> Result<HashMap<String, i64>, ConnectionStoreError> {
        let times = self.last_events.lock().unwrap_or_else(|p| p.into_inner());
        Ok(ids
            .iter()
            .filter_map(|id| times.get(*id).map(|at| ((*id).to_owned(), *at)))
            .collect())
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
    ) -> Result<Vec<Result<Connection, UnreadableConnection>>, ConnectionStoreError> {
        let mut due: Vec<Connection> = self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|c| {
                c.state == ConnectionState::Active && c.refresh_at.is_some_and(|at| at <= before)
            })
            .cloned()
            .collect();
        due.sort_by_key(|c| c.refresh_at);
        due.truncate(limit);
        Ok(due.into_iter().map(Ok).collect())
    }

    async fn lifetime_observations(
        &self,
        provider: &str,
    ) -> Result<Vec<LifetimeObservation>, ConnectionStoreError> {
        Ok(self
            .observations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(provider)
            .cloned()
            .unwrap_or_default())
    }

    async fn record_lifetime(
        &self,
        provider: &str,
        observation: LifetimeObservation,
    ) -> Result<(), ConnectionStoreError> {
        let mut all = self.observations.lock().unwrap_or_else(|p| p.into_inner());
        let kept = all.remove(provider).unwrap_or_default();
        all.insert(provider.to_owned(), merge_observation(kept, observation));
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
        end_user: None,
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
        last_verified_at: None,
        last_event_at: None,
        sandbox: false,
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
    next.last_verified_at = Some(1_500);
    assert!(store.replace(&next, read.version).await.expect("replace"));
    assert_eq!(
        store.get("conn_contract_1").await.expect("get"),
        Some(next.clone()),
        "a replace keeps every field, the last test's time included"
    );
    assert_eq!(
        store
            .last_events(&["conn_contract_1", "conn_contract_2", "conn_none"])
            .await
            .expect("last events"),
        HashMap::new(),
        "no delivery recorded, no time"
    );
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
    let seen = |connection: &str, seconds: u64, at: i64| LifetimeObservation {
        connection: connection.to_owned(),
        seconds,
        at,
    };
    store
        .record_lifetime("gitlab", seen("conn_a", 7_200, 10_000))
        .await
        .expect("record");
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
    let due: Vec<Connection> = store
        .due_for_refresh(5_000, 10)
        .await
        .expect("due")
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("every due connection reads");
    assert!(due.iter().any(|c| c.id == "conn_contract_1"));
    assert!(!due.iter().any(|c| c.id == "conn_contract_2"));

    // Lifetime observations: one per connection (its latest), per provider.
    for (connection, seconds) in [("conn_a", 2_820), ("conn_b", 2_900), ("conn_c", 3_000)] {
        store
            .record_lifetime("github", seen(connection, seconds, 20_000))
            .await
            .expect("record");
    }
    store
        .record_lifetime("github", seen("conn_a", 2_700, 20_100))
        .await
        .expect("record");
    let sorted = |mut list: Vec<LifetimeObservation>| {
        list.sort_by(|a, b| a.connection.cmp(&b.connection));
        list
    };
    assert_eq!(
        sorted(store.lifetime_observations("github").await.expect("read")),
        [
            seen("conn_a", 2_700, 20_100),
            seen("conn_b", 2_900, 20_000),
            seen("conn_c", 3_000, 20_000),
        ],
        "a connection's newer observation replaces its older one"
    );
    assert_eq!(
        store.lifetime_observations("gitlab").await.expect("read"),
        [seen("conn_a", 7_200, 10_000)],
        "each provider has its own"
    );
    assert!(
        store
            .lifetime_observations("asana")
            .await
            .expect("read")
            .is_empty()
    );
    store
        .record_lifetime(
            "github",
            seen("conn_d", 3_100, 20_000 + OBSERVATION_WINDOW_SECONDS),
        )
        .await
        .expect("record");
    assert_eq!(
        sorted(store.lifetime_observations("github").await.expect("read")),
        [
            seen("conn_a", 2_700, 20_100),
            seen("conn_d", 3_100, 20_000 + OBSERVATION_WINDOW_SECONDS),
        ],
        "observations a window older than the newest are dropped"
    );
    assert!(
        store
            .list_all(100)
            .await
            .expect("list all")
            .iter()
            .all(|c| !c.id.starts_with("lifetime#")),
        "observations are not connections"
    );
    let (w, x, y, z) = tokio::join!(
        store.record_lifetime("hubspot", seen("conn_w", 1_000, 30_000)),
        store.record_lifetime("hubspot", seen("conn_x", 1_000, 30_000)),
        store.record_lifetime("hubspot", seen("conn_y", 1_000, 30_000)),
        store.record_lifetime("hubspot", seen("conn_z", 1_000, 30_000)),
    );
    for recorded in [w, x, y, z] {
        recorded.expect("record");
    }
    assert_eq!(
        store
            .lifetime_observations("hubspot")
            .await
            .expect("read")
            .len(),
        4,
        "concurrent recorders do not lose each other's observations"
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

    #[test]
    fn a_provider_keeps_at_most_its_newest_observations() {
        let mut kept = Vec::new();
        for n in 0..(MAX_OBSERVATIONS as i64 + 10) {
            kept = merge_observation(
                kept,
                LifetimeObservation {
                    connection: format!("conn_{n}"),
                    seconds: 2_820,
                    at: 1_000 + n,
                },
            );
        }
        assert_eq!(kept.len(), MAX_OBSERVATIONS);
        assert!(kept.iter().all(|o| o.at >= 1_010), "the oldest dropped");
    }
}
