//! State every Lambda instance shares about a provider: its token bucket and its circuit
//! breaker. One small JSON document per key, replaced with a conditional write on its
//! version, so concurrent instances never lose each other's updates (the loser re-reads
//! and re-applies). The store is a port ([`SharedState`]): DynamoDB
//! ([`DynamoSharedState`], in its own module `dynamo`, the only one here that knows the
//! SDK) and memory.

use std::{collections::HashMap, sync::Mutex};

use async_trait::async_trait;

mod dynamo;

pub use dynamo::DynamoSharedState;

/// The store is unavailable (retry later; callers fail open or closed as they decide).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("outbound state store unavailable: {0}")]
pub struct StateError(pub String);

/// A stored document and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub doc: String,
    pub version: u64,
}

/// Versioned documents by key.
#[async_trait]
pub trait SharedState: Send + Sync + std::fmt::Debug {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StateError>;

    /// Writes `doc` as version `expected + 1` (`expected` `None`: the key must not
    /// exist). `false` when another writer got there first. `expires_at` (unix seconds)
    /// lets the table's TTL sweep idle keys.
    async fn put(
        &self,
        key: &str,
        doc: &str,
        expected: Option<u64>,
        expires_at: i64,
    ) -> Result<bool, StateError>;
}

/// In memory, for unit tests.
#[derive(Debug, Default)]
pub struct InMemorySharedState {
    docs: Mutex<HashMap<String, Versioned>>,
    expiries: Mutex<HashMap<String, i64>>,
}

impl InMemorySharedState {
    /// When `key` was last told to expire (unix seconds): what the table's TTL would see.
    pub fn expires_at(&self, key: &str) -> Option<i64> {
        self.expiries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(key)
            .copied()
    }
}

#[async_trait]
impl SharedState for InMemorySharedState {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StateError> {
        Ok(self
            .docs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(key)
            .cloned())
    }

    async fn put(
        &self,
        key: &str,
        doc: &str,
        expected: Option<u64>,
        expires_at: i64,
    ) -> Result<bool, StateError> {
        let mut docs = self
            .docs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = docs.get(key).map(|v| v.version);
        if current != expected {
            return Ok(false);
        }
        docs.insert(
            key.to_owned(),
            Versioned {
                doc: doc.to_owned(),
                version: expected.unwrap_or(0) + 1,
            },
        );
        self.expiries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(key.to_owned(), expires_at);
        Ok(true)
    }
}

/// Keeps the whole chain: an SDK error's own text is only "service error".
fn unavailable(err: impl std::error::Error + 'static) -> StateError {
    StateError(junction_telemetry::error_chain(&err))
}

/// Reads `key`, applies `change` to its decoded state (default when absent) and writes
/// it back conditionally, retrying on conflicts; returns what `change` returned for
/// the state that was written.
pub(crate) async fn update<S, R>(
    store: &dyn SharedState,
    key: &str,
    expires_at: i64,
    change: impl Fn(&mut S) -> R,
) -> Result<R, StateError>
where
    S: serde::Serialize + serde::de::DeserializeOwned + Default,
{
    update_with(store, key, |state: &mut S| Change {
        result: change(state),
        write: true,
        expires_at,
    })
    .await
}

/// What a change decided: its result, whether the state must be written at all (a
/// refused request or an unchanged pace costs no write) and until when it is kept.
pub(crate) struct Change<R> {
    pub result: R,
    pub write: bool,
    /// Unix seconds for the table's TTL: state that must outlive a day of quiet (a
    /// learned rate ceiling) says so here.
    pub expires_at: i64,
}

/// [`update`] where the change also decides whether to write and the expiry.
pub(crate) async fn update_with<S, R>(
    store: &dyn SharedState,
    key: &str,
    change: impl Fn(&mut S) -> Change<R>,
) -> Result<R, StateError>
where
    S: serde::Serialize + serde::de::DeserializeOwned + Default,
{
    for _ in 0..20 {
        let current = store.get(key).await?;
        let mut state: S = match &current {
            Some(stored) => serde_json::from_str(&stored.doc).unwrap_or_default(),
            None => S::default(),
        };
        let changed = change(&mut state);
        if !changed.write {
            return Ok(changed.result);
        }
        let doc = serde_json::to_string(&state).map_err(unavailable)?;
        if store
            .put(key, &doc, current.map(|c| c.version), changed.expires_at)
            .await?
        {
            return Ok(changed.result);
        }
    }
    Err(StateError(format!("{key}: too much contention")))
}

/// Reads `key`'s decoded state (default when absent).
pub(crate) async fn read<S>(
    store: &dyn SharedState,
    key: &str,
) -> Result<(S, Option<u64>), StateError>
where
    S: serde::de::DeserializeOwned + Default,
{
    Ok(match store.get(key).await? {
        Some(stored) => (
            serde_json::from_str(&stored.doc).unwrap_or_default(),
            Some(stored.version),
        ),
        None => (S::default(), None),
    })
}
