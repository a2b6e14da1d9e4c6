//! Where each connection's push subscription is kept: the provider's id for it, when
//! it ends, when Junction next acts on it, and how its last attempts went. One record
//! per connection; the renewal sweep reads those due by `renew_at`, and a Graph
//! lifecycle notification finds its record by the provider's subscription id.

use std::{collections::BTreeMap, sync::Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub mod dynamo;

/// What Junction knows of one connection's subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The connection (the record's key).
    pub connection: String,
    pub provider: String,
    /// The connection's tenant, for `connection.subscription_failed`.
    pub tenant: String,
    /// The provider's id (Graph); `None` before the create, or where the provider
    /// names none (Gmail's watch is the mailbox's).
    #[serde(default)]
    pub subscription_id: Option<String>,
    /// When the provider stops delivering (unix seconds); `None` before the create.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// When the sweep next acts on it (renew, retry, recreate); `None`: nothing to do.
    #[serde(default)]
    pub renew_at: Option<i64>,
    pub state: SubscriptionState,
    /// Failed attempts in a row (the retry backoff grows with it).
    #[serde(default)]
    pub failures: u32,
    /// The last failure's short code (`http_403`, `timeout`), never provider text.
    #[serde(default)]
    pub last_error: Option<String>,
    /// The expiry a reconciliation poll was already forced for, so a retried
    /// recreate does not force one every run.
    #[serde(default)]
    pub reconciled_expiry: Option<i64>,
    /// Bumped by each write; writes are conditional on it.
    #[serde(default)]
    pub version: u64,
}

/// Where a subscription stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionState {
    /// Recorded at connect, to be created by the next renewal run (the oauth function
    /// never opens a token, so it cannot make the create itself).
    Pending,
    /// Created (or renewed) and not expired.
    Active,
    /// The last attempt failed; the sweep retries at `renew_at`.
    Failing,
}

impl SubscriptionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionState::Pending => "pending",
            SubscriptionState::Active => "active",
            SubscriptionState::Failing => "failing",
        }
    }
}

/// The store failed; the message keeps the SDK error's whole chain.
#[derive(Debug, Clone, thiserror::Error)]
#[error("subscription store: {0}")]
pub struct StoreError(pub String);

/// Keeps one [`Subscription`] per connection.
#[async_trait]
pub trait SubscriptionStore: Send + Sync + std::fmt::Debug {
    /// The connection's record.
    async fn get(&self, connection: &str) -> Result<Option<Subscription>, StoreError>;
    /// Writes `record` if the stored one's version is `expected` (`None`: if there is
    /// none). `false`: someone else wrote first; read again.
    async fn put(&self, record: &Subscription, expected: Option<u64>) -> Result<bool, StoreError>;
    /// Records whose `renew_at` is at or before `before`, soonest first, at most `limit`.
    async fn due(&self, before: i64, limit: usize) -> Result<Vec<Subscription>, StoreError>;
    /// The record of `provider`'s subscription `id`.
    async fn by_subscription_id(
        &self,
        provider: &str,
        id: &str,
    ) -> Result<Option<Subscription>, StoreError>;
    /// Deletes the connection's record (nothing when there is none).
    async fn delete(&self, connection: &str) -> Result<(), StoreError>;
}

/// For unit tests and the local checks of the contract.
#[derive(Debug, Default)]
pub struct InMemorySubscriptionStore {
    records: Mutex<BTreeMap<String, Subscription>>,
}

impl InMemorySubscriptionStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Subscription>> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl SubscriptionStore for InMemorySubscriptionStore {
    async fn get(&self, connection: &str) -> Result<Option<Subscription>, StoreError> {
        Ok(self.lock().get(connection).cloned())
    }

    async fn put(&self, record: &Subscription, expected: Option<u64>) -> Result<bool, StoreError> {
        let mut records = self.lock();
        let current = records.get(&record.connection).map(|r| r.version);
        if current != expected {
            return Ok(false);
        }
        records.insert(record.connection.clone(), record.clone());
        Ok(true)
    }

    async fn due(&self, before: i64, limit: usize) -> Result<Vec<Subscription>, StoreError> {
        let mut due: Vec<Subscription> = self
            .lock()
            .values()
            .filter(|r| r.renew_at.is_some_and(|at| at <= before))
            .cloned()
            .collect();
        due.sort_by_key(|r| r.renew_at);
        due.truncate(limit);
        Ok(due)
    }

    async fn by_subscription_id(
        &self,
        provider: &str,
        id: &str,
    ) -> Result<Option<Subscription>, StoreError> {
        Ok(self
            .lock()
            .values()
            .find(|r| r.provider == provider && r.subscription_id.as_deref() == Some(id))
            .cloned())
    }

    async fn delete(&self, connection: &str) -> Result<(), StoreError> {
        self.lock().remove(connection);
        Ok(())
    }
}

/// A record for tests.
pub fn sample_subscription(connection: &str) -> Subscription {
    Subscription {
        connection: connection.to_owned(),
        provider: "microsoft".to_owned(),
        tenant: "tenant-1".to_owned(),
        subscription_id: Some(format!("sub-{connection}")),
        expires_at: Some(1_800_600_000),
        renew_at: Some(1_800_400_000),
        state: SubscriptionState::Active,
        failures: 0,
        last_error: None,
        reconciled_expiry: None,
        version: 1,
    }
}

/// The contract every [`SubscriptionStore`] meets; run against the in-memory store
/// here and against DynamoDB on the emulator.
pub async fn check_subscription_store_contract(store: &dyn SubscriptionStore) {
    let a = sample_subscription("conn-a");
    assert!(store.get("conn-a").await.expect("get").is_none());
    assert!(store.put(&a, None).await.expect("insert"), "a new record");
    assert!(
        !store.put(&a, None).await.expect("insert again"),
        "an insert over an existing record is refused"
    );
    assert_eq!(store.get("conn-a").await.expect("get"), Some(a.clone()));

    let mut renewed = a.clone();
    renewed.version = 2;
    renewed.renew_at = Some(1_800_500_000);
    assert!(
        !store.put(&renewed, Some(7)).await.expect("stale"),
        "a write on a stale version is refused"
    );
    assert!(store.put(&renewed, Some(1)).await.expect("replace"));

    let mut b = sample_subscription("conn-b");
    b.renew_at = Some(1_800_100_000);
    b.subscription_id = None;
    store.put(&b, None).await.expect("insert b");
    // Nothing to do: out of the due index.
    let mut c = sample_subscription("conn-c");
    c.renew_at = None;
    c.subscription_id = Some("sub-c".into());
    store.put(&c, None).await.expect("insert c");

    let due = store.due(1_800_500_000, 10).await.expect("due");
    let keys: Vec<&str> = due.iter().map(|r| r.connection.as_str()).collect();
    assert_eq!(
        keys,
        ["conn-b", "conn-a"],
        "due soonest first; none without renew_at"
    );
    assert_eq!(store.due(1_800_200_000, 10).await.expect("due").len(), 1);
    assert_eq!(store.due(1_800_500_000, 1).await.expect("due").len(), 1);

    let found = store
        .by_subscription_id("microsoft", "sub-c")
        .await
        .expect("by id");
    assert_eq!(found.map(|r| r.connection), Some("conn-c".to_owned()));
    assert!(
        store
            .by_subscription_id("gmail", "sub-c")
            .await
            .expect("by id")
            .is_none(),
        "ids are per provider"
    );

    store.delete("conn-c").await.expect("delete");
    store.delete("conn-c").await.expect("delete again");
    assert!(store.get("conn-c").await.expect("get").is_none());
    assert!(
        store
            .by_subscription_id("microsoft", "sub-c")
            .await
            .expect("by id")
            .is_none()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_in_memory_store_meets_the_contract() {
        check_subscription_store_contract(&InMemorySubscriptionStore::default()).await;
    }
}
