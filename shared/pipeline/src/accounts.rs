//! Whose is a delivery: the account index, from the provider account a webhook names
//! (the ingress's `account` attribute) or the connection a record was polled through,
//! to the tenant and connection its CloudEvents are published for.
//!
//! The OAuth side writes the index: every stored connection carries its provider account
//! as `<provider>#<account>` (`junction_oauth::Connection::provider_account`), and the
//! connections table's `by-provider-account` index finds the connections of an account;
//! the entry appears when a connection is stored and goes when it is deleted. This module
//! reads it: the port ([`AccountIndex`]), its DynamoDB adapter ([`DynamoAccountIndex`],
//! in module `dynamo`, the only one here that knows the SDK), an in-memory one, a cache
//! per warm container ([`CachedAccountIndex`]) and the rule for an account several
//! connections share ([`owners`]). It must not depend on the OAuth crate: the consumer
//! never holds tokens.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use async_trait::async_trait;
use time::{Duration, OffsetDateTime};

use junction_aws::clock::Clock;

mod dynamo;

pub use dynamo::{DynamoAccountIndex, PROVIDER_ACCOUNT_ATTRIBUTE, PROVIDER_ACCOUNT_INDEX};

/// How a provider account is keyed in the index: `<provider>#<account>`, the provider as
/// the webhook's URL names it (`stripe` for Stripe Connect's connected accounts).
pub fn provider_account_key(provider: &str, account: &str) -> String {
    format!("{provider}#{account}")
}

/// One connection of a provider account, as the index holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountConnection {
    pub tenant: String,
    pub connection: String,
    /// When the connection was created (Unix seconds).
    pub created_at: i64,
}

/// Whom an event is published for: the `tenant` and `connection` it is stamped with.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Owner {
    pub tenant: String,
    pub connection: String,
}

/// The rule for an account several connections share: one owner per tenant, each with
/// its most recently created connection to the account (the one it connected last, so
/// the one it acts through), in tenant order. Every tenant that connected the account
/// holds a grant to it and receives its events; a tenant that connected it twice does
/// not receive them twice. A later connection in another tenant takes nothing away from
/// an earlier one (docs/events.md, "Several tenants, one account").
pub fn owners(connections: Vec<AccountConnection>) -> Vec<Owner> {
    let mut latest: BTreeMap<String, AccountConnection> = BTreeMap::new();
    for candidate in connections {
        match latest.get(&candidate.tenant) {
            Some(kept)
                if (kept.created_at, &kept.connection)
                    >= (candidate.created_at, &candidate.connection) => {}
            _ => {
                latest.insert(candidate.tenant.clone(), candidate);
            }
        }
    }
    latest
        .into_values()
        .map(|kept| Owner {
            tenant: kept.tenant,
            connection: kept.connection,
        })
        .collect()
}

/// The index could not be read (transient: the message is retried, so its events are
/// not published without the tenant they belong to).
#[derive(Debug, thiserror::Error)]
#[error("account index unavailable")]
pub struct AccountIndexError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Which connections a provider account or a connection id belongs to. Read-only: the
/// connection store writes the index.
#[async_trait]
pub trait AccountIndex: Send + Sync + std::fmt::Debug {
    /// Every connection of `account` at `provider` (any state: a connection waiting for
    /// its user to reconnect is still the tenant's), in no particular order.
    async fn connections_of(
        &self,
        provider: &str,
        account: &str,
    ) -> Result<Vec<AccountConnection>, AccountIndexError>;

    /// The tenant of connection `id`, or `None` when no such connection exists.
    async fn tenant_of(&self, id: &str) -> Result<Option<String>, AccountIndexError>;
}

/// The index in memory, for tests: connections with their provider account (or none),
/// an injectable outage, and a count of the lookups that reached it.
#[derive(Debug, Default)]
pub struct InMemoryAccountIndex {
    /// `(provider account key, connection)`.
    connections: Mutex<Vec<(Option<String>, AccountConnection)>>,
    failing: AtomicBool,
    lookups: AtomicUsize,
}

impl InMemoryAccountIndex {
    /// Stores a connection, of `provider_account` (`(provider, account)`) when it has one.
    pub fn connect(&self, connection: AccountConnection, provider_account: Option<(&str, &str)>) {
        let key =
            provider_account.map(|(provider, account)| provider_account_key(provider, account));
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((key, connection));
    }

    /// Deletes a connection, and with it its index entry.
    pub fn disconnect(&self, id: &str) {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(_, connection)| connection.connection != id);
    }

    /// Fails every lookup from now on (or no longer).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// How many lookups reached the index (a cache in front answers the others).
    pub fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }

    fn lookup(&self) -> Result<(), AccountIndexError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(AccountIndexError(
                "in-memory account index set to fail".into(),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl AccountIndex for InMemoryAccountIndex {
    async fn connections_of(
        &self,
        provider: &str,
        account: &str,
    ) -> Result<Vec<AccountConnection>, AccountIndexError> {
        self.lookup()?;
        let key = provider_account_key(provider, account);
        Ok(self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(indexed, _)| indexed.as_deref() == Some(key.as_str()))
            .map(|(_, connection)| connection.clone())
            .collect())
    }

    async fn tenant_of(&self, id: &str) -> Result<Option<String>, AccountIndexError> {
        self.lookup()?;
        Ok(self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(_, connection)| connection.connection == id)
            .map(|(_, connection)| connection.tenant.clone()))
    }
}

/// How long a warm container trusts an answer that found connections: a disconnect
/// stops the stamping within a minute, and a busy account costs one query a minute per
/// container instead of one per delivery.
pub const FOUND_TTL: Duration = Duration::seconds(60);

/// How long it trusts an answer that found none: short, so that the events of an account
/// connected right after one of its deliveries went unmatched are stamped within seconds
/// (providers often send the first webhooks of an install at once), while an account
/// nobody connected still costs at most one query per container every 10 s.
pub const MISSING_TTL: Duration = Duration::seconds(10);

/// Answers kept per container, for each of the two lookups; past it, expired answers are
/// dropped, and if none had expired, all of them (the next lookups refill it).
pub const MAX_CACHED: usize = 10_000;

/// An answer and until when it holds.
#[derive(Debug, Clone)]
struct Cached<T> {
    value: T,
    until: OffsetDateTime,
}

/// A cache in front of an index, per warm container: answers (found or not) are kept for
/// [`FOUND_TTL`] or [`MISSING_TTL`], by the injected clock; errors are never kept.
#[derive(Debug)]
pub struct CachedAccountIndex {
    inner: Arc<dyn AccountIndex>,
    clock: Arc<dyn Clock>,
    accounts: Mutex<HashMap<String, Cached<Vec<AccountConnection>>>>,
    tenants: Mutex<HashMap<String, Cached<Option<String>>>>,
}

impl CachedAccountIndex {
    pub fn new(inner: Arc<dyn AccountIndex>, clock: Arc<dyn Clock>) -> Self {
        CachedAccountIndex {
            inner,
            clock,
            accounts: Mutex::new(HashMap::new()),
            tenants: Mutex::new(HashMap::new()),
        }
    }
}

fn cached<T: Clone>(
    cache: &Mutex<HashMap<String, Cached<T>>>,
    key: &str,
    now: OffsetDateTime,
) -> Option<T> {
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(key)
        .filter(|entry| entry.until > now)
        .map(|entry| entry.value.clone())
}

fn keep<T>(
    cache: &Mutex<HashMap<String, Cached<T>>>,
    key: String,
    value: T,
    found: bool,
    now: OffsetDateTime,
) {
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= MAX_CACHED && !cache.contains_key(&key) {
        cache.retain(|_, entry| entry.until > now);
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
    }
    let until = now + if found { FOUND_TTL } else { MISSING_TTL };
    cache.insert(key, Cached { value, until });
}

#[async_trait]
impl AccountIndex for CachedAccountIndex {
    async fn connections_of(
        &self,
        provider: &str,
        account: &str,
    ) -> Result<Vec<AccountConnection>, AccountIndexError> {
        let key = provider_account_key(provider, account);
        if let Some(found) = cached(&self.accounts, &key, self.clock.now()) {
            return Ok(found);
        }
        let found = self.inner.connections_of(provider, account).await?;
        let any = !found.is_empty();
        keep(&self.accounts, key, found.clone(), any, self.clock.now());
        Ok(found)
    }

    async fn tenant_of(&self, id: &str) -> Result<Option<String>, AccountIndexError> {
        if let Some(found) = cached(&self.tenants, id, self.clock.now()) {
            return Ok(found);
        }
        let found = self.inner.tenant_of(id).await?;
        let any = found.is_some();
        keep(
            &self.tenants,
            id.to_owned(),
            found.clone(),
            any,
            self.clock.now(),
        );
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use junction_aws::clock::FixedClock;

    use super::*;

    fn connection(tenant: &str, id: &str, created_at: i64) -> AccountConnection {
        AccountConnection {
            tenant: tenant.into(),
            connection: id.into(),
            created_at,
        }
    }

    fn owner(tenant: &str, id: &str) -> Owner {
        Owner {
            tenant: tenant.into(),
            connection: id.into(),
        }
    }

    #[test]
    fn each_tenant_that_connected_the_account_owns_it_through_its_latest_connection() {
        assert_eq!(owners(Vec::new()), []);
        assert_eq!(
            owners(vec![
                connection("beta", "conn_b1", 300),
                connection("acme", "conn_a1", 100),
                connection("acme", "conn_a2", 200),
            ]),
            [owner("acme", "conn_a2"), owner("beta", "conn_b1")],
            "one owner per tenant, in tenant order; a later tenant takes nothing from an earlier one"
        );
        // The same second: the larger id, so every container picks the same one.
        assert_eq!(
            owners(vec![
                connection("acme", "conn_b", 100),
                connection("acme", "conn_a", 100),
            ]),
            [owner("acme", "conn_b")]
        );
    }

    #[tokio::test]
    async fn the_in_memory_index_finds_connections_by_account_and_tenants_by_connection() {
        let index = InMemoryAccountIndex::default();
        index.connect(connection("acme", "conn_1", 100), Some(("slack", "T1")));
        index.connect(connection("beta", "conn_2", 200), Some(("slack", "T1")));
        index.connect(connection("acme", "conn_3", 300), None);
        let of = |provider: &'static str, account: &'static str| {
            let index = &index;
            async move { index.connections_of(provider, account).await.expect("read") }
        };
        assert_eq!(
            of("slack", "T1").await,
            [
                connection("acme", "conn_1", 100),
                connection("beta", "conn_2", 200)
            ]
        );
        assert!(of("slack", "T2").await.is_empty());
        assert!(of("linear", "T1").await.is_empty(), "keyed by provider too");
        assert_eq!(
            index.tenant_of("conn_3").await.expect("read").as_deref(),
            Some("acme"),
            "a connection without a provider account still has its tenant"
        );
        index.disconnect("conn_1");
        assert_eq!(of("slack", "T1").await, [connection("beta", "conn_2", 200)]);
        assert_eq!(index.tenant_of("conn_1").await.expect("read"), None);
        index.set_failing(true);
        assert!(index.connections_of("slack", "T1").await.is_err());
        assert!(index.tenant_of("conn_2").await.is_err());
    }

    #[tokio::test]
    async fn answers_are_cached_a_minute_when_found_and_ten_seconds_when_not() {
        let inner = Arc::new(InMemoryAccountIndex::default());
        let clock = Arc::new(FixedClock::at_unix(1_700_000_000));
        let cache = CachedAccountIndex::new(inner.clone(), clock.clone());
        inner.connect(connection("acme", "conn_1", 100), Some(("slack", "T1")));

        for _ in 0..3 {
            assert_eq!(
                cache
                    .connections_of("slack", "T1")
                    .await
                    .expect("read")
                    .len(),
                1
            );
            assert!(
                cache
                    .connections_of("slack", "T2")
                    .await
                    .expect("read")
                    .is_empty()
            );
            assert_eq!(
                cache.tenant_of("conn_1").await.expect("read").as_deref(),
                Some("acme")
            );
        }
        assert_eq!(
            inner.lookups(),
            3,
            "one lookup each, then the cache answers"
        );

        // T2 connects: seen once its miss expires, within ten seconds.
        inner.connect(connection("beta", "conn_2", 200), Some(("slack", "T2")));
        clock.advance(Duration::seconds(9));
        assert!(
            cache
                .connections_of("slack", "T2")
                .await
                .expect("read")
                .is_empty()
        );
        clock.advance(Duration::seconds(1));
        assert_eq!(
            cache
                .connections_of("slack", "T2")
                .await
                .expect("read")
                .len(),
            1
        );

        // T1 disconnects: its events stop being stamped once the minute is over.
        inner.disconnect("conn_1");
        clock.advance(Duration::seconds(49));
        assert_eq!(
            cache
                .connections_of("slack", "T1")
                .await
                .expect("read")
                .len(),
            1
        );
        clock.advance(Duration::seconds(1));
        assert!(
            cache
                .connections_of("slack", "T1")
                .await
                .expect("read")
                .is_empty()
        );

        // Errors are not kept: the next lookup asks again.
        clock.advance(Duration::seconds(60));
        inner.set_failing(true);
        assert!(cache.connections_of("slack", "T2").await.is_err());
        inner.set_failing(false);
        assert_eq!(
            cache
                .connections_of("slack", "T2")
                .await
                .expect("read")
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn a_full_cache_drops_expired_answers_first() {
        let inner = Arc::new(InMemoryAccountIndex::default());
        let clock = Arc::new(FixedClock::at_unix(1_700_000_000));
        let cache = CachedAccountIndex::new(inner.clone(), clock.clone());
        for n in 0..MAX_CACHED {
            cache
                .connections_of("slack", &format!("T{n}"))
                .await
                .expect("read");
        }
        clock.advance(MISSING_TTL);
        cache.connections_of("slack", "new").await.expect("read");
        assert_eq!(
            cache.accounts.lock().expect("lock").len(),
            1,
            "the expired misses made room"
        );
        let before = inner.lookups();
        cache.connections_of("slack", "new").await.expect("read");
        assert_eq!(inner.lookups(), before, "the new answer is kept");
    }
}
