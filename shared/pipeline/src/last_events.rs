//! When each connection last heard from its provider by webhook: its `last_event_at`,
//! which `junction status` and the management API show beside the last
//! successful sync (a connection fed only by webhooks never syncs, so without it its
//! silence would be invisible).
//!
//! The consumer records it after a batch, for the connections its webhook deliveries
//! were attributed to ([`crate::accounts::owners`]): the port ([`LastEvents`]), its
//! DynamoDB adapter ([`DynamoLastEvents`], in module `dynamo`, the only one here that
//! knows the SDK), an in-memory one, and [`LastEventRecorder`], which writes at most
//! once per connection per batch and skips a connection whose stored value this
//! container knows to be recent. It is bookkeeping: a failure is logged with its cause
//! and never fails a delivery. Like `accounts`, it must not depend on the OAuth crate.
//!
//! # Cost
//!
//! Each write is one conditional `UpdateItem` of a small item of its own (module
//! `dynamo`): no index projects it and it is far under a kilobyte, so it costs one write
//! unit whether it moves the time or its condition refuses it, $0.625 per million
//! writes. The connection item itself (1-2 KB with its sealed tokens, copied into the
//! `by-tenant` and `by-refresh` indexes) would cost up to six units a write; the first
//! version wrote there, up to $3.75 per million webhooks (docs/cost.md). With
//! [`SKIP_WITHIN`], a connection costs at most one write a minute per warm consumer
//! container however busy it is, so per million webhooks between nothing (a few hot
//! accounts) and $0.625 (every webhook of a connection more than a minute after the one
//! before). Skipping with a read first would cost a read per webhook instead, so the
//! skip uses only what this container already wrote; a value stored by another container
//! is caught by the condition.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use async_trait::async_trait;

use junction_telemetry::error_chain;

mod dynamo;

pub use dynamo::{
    DELETED_AT_ATTRIBUTE, DynamoLastEvents, LAST_EVENT_AT_ATTRIBUTE, LAST_EVENT_KEY_PREFIX,
};

/// A connection whose stored `last_event_at` this container knows to be at most this
/// many seconds older than a new event's is not written: the time shown is then at most
/// a minute behind, which `junction status` ("3 minutes ago") and silence measured in
/// minutes or hours can afford, and a busy connection costs one write a minute instead
/// of one per batch.
pub const SKIP_WITHIN: i64 = 60;

/// Connections remembered per container; past it, all are forgotten (the next batches
/// write once more each and refill it).
pub const MAX_REMEMBERED: usize = 10_000;

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The connection's `last_event_at` is now the given time.
    Moved,
    /// Nothing changed: the stored time is as late or later, or the connection no longer
    /// exists (deleted after the delivery was attributed to it).
    Unchanged,
}

/// The connections table could not be written (the delivery goes on regardless).
#[derive(Debug, thiserror::Error)]
#[error("last event time not recorded")]
pub struct LastEventsError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Where each connection's last webhook delivery time is kept.
#[async_trait]
pub trait LastEvents: Send + Sync + std::fmt::Debug {
    /// Sets connection `id`'s `last_event_at` to `at` (Unix seconds) only if it is later
    /// than the stored one (or none is stored) and the connection was not deleted. Must
    /// be one conditional write: concurrent writers never move it back, and a deleted
    /// connection's time is never brought back.
    async fn record(&self, id: &str, at: i64) -> Result<Recorded, LastEventsError>;
}

/// The last event times in memory, for tests: each connection's time, the deleted
/// connections (which refuse a write, like the DynamoDB adapter's tombstone), an
/// injectable outage and a count of the writes that reached it.
#[derive(Debug, Default)]
pub struct InMemoryLastEvents {
    /// Connections and their time, if any; `Err(())` once deleted.
    connections: Mutex<BTreeMap<String, Result<Option<i64>, ()>>>,
    failing: AtomicBool,
    writes: AtomicUsize,
}

impl InMemoryLastEvents {
    /// A new connection, with no event recorded yet (a write needs none: the first
    /// one creates the entry, as DynamoDB's update creates the item).
    pub fn connect(&self, id: &str) {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_owned())
            .or_insert(Ok(None));
    }

    /// Deletes a connection: its time is gone and later writes are refused.
    pub fn disconnect(&self, id: &str) {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), Err(()));
    }

    /// The stored time of connection `id` (`None`: none, or no such connection).
    pub fn last_event_at(&self, id: &str) -> Option<i64> {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .and_then(|stored| stored.ok().flatten())
    }

    /// Fails every write from now on (or no longer).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// How many writes reached the store.
    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl LastEvents for InMemoryLastEvents {
    async fn record(&self, id: &str, at: i64) -> Result<Recorded, LastEventsError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(LastEventsError("in-memory last events set to fail".into()));
        }
        let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        match connections.entry(id.to_owned()).or_insert(Ok(None)) {
            Ok(stored) if stored.is_none_or(|stored| stored < at) => {
                *stored = Some(at);
                Ok(Recorded::Moved)
            }
            _ => Ok(Recorded::Unchanged),
        }
    }
}

/// Records a batch's last events through a [`LastEvents`], at most one write per
/// connection per batch and none for a connection this container knows to hold a time
/// within [`SKIP_WITHIN`] of the new one.
#[derive(Debug)]
pub struct LastEventRecorder {
    store: Arc<dyn LastEvents>,
    /// Per connection, a time its stored `last_event_at` is known to be at or after:
    /// what this container wrote, or was refused because the store held a later one.
    known: Mutex<HashMap<String, i64>>,
}

impl LastEventRecorder {
    pub fn new(store: Arc<dyn LastEvents>) -> Self {
        LastEventRecorder {
            store,
            known: Mutex::new(HashMap::new()),
        }
    }

    /// Records `seen` (connection, Unix seconds of a webhook delivery attributed to it):
    /// for each connection its latest time, written together. A failure is logged with
    /// its cause; nothing is returned because nothing depends on it. The number of
    /// writes sent, for tests and benchmarks.
    pub async fn record_batch(&self, seen: &[(String, i64)]) -> usize {
        let mut latest: BTreeMap<&str, i64> = BTreeMap::new();
        for (connection, at) in seen {
            let kept = latest.entry(connection.as_str()).or_insert(*at);
            *kept = (*kept).max(*at);
        }
        let to_write: Vec<(String, i64)> = {
            let known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            latest
                .into_iter()
                .filter(|(connection, at)| {
                    known
                        .get(*connection)
                        .is_none_or(|known| at - known > SKIP_WITHIN)
                })
                .map(|(connection, at)| (connection.to_owned(), at))
                .collect()
        };
        let count = to_write.len();
        let results = if let [(connection, at)] = to_write.as_slice() {
            vec![(
                connection.clone(),
                *at,
                self.store.record(connection, *at).await,
            )]
        } else {
            let mut running = tokio::task::JoinSet::new();
            for (connection, at) in to_write {
                let store = self.store.clone();
                running.spawn(async move {
                    let result = store.record(&connection, at).await;
                    (connection, at, result)
                });
            }
            let mut results = Vec::with_capacity(count);
            while let Some(joined) = running.join_next().await {
                match joined {
                    Ok(result) => results.push(result),
                    Err(err) => tracing::warn!(
                        error = %err,
                        outcome = "last_event_not_recorded",
                        "last event write task failed"
                    ),
                }
            }
            results
        };
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        for (connection, at, result) in results {
            match result {
                Ok(_) => {
                    if known.len() >= MAX_REMEMBERED && !known.contains_key(&connection) {
                        known.clear();
                    }
                    let entry = known.entry(connection).or_insert(at);
                    *entry = (*entry).max(at);
                }
                Err(err) => tracing::warn!(
                    connection = %connection,
                    at,
                    error = %error_chain(&err),
                    outcome = "last_event_not_recorded",
                    "a connection's last event time was not recorded"
                ),
            }
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
        pairs
            .iter()
            .map(|(connection, at)| ((*connection).to_owned(), *at))
            .collect()
    }

    #[tokio::test]
    async fn the_in_memory_store_moves_only_forward_and_never_for_a_deleted_connection() {
        let store = InMemoryLastEvents::default();
        store.connect("conn_a");
        assert_eq!(
            store.record("conn_a", 1_000).await.ok(),
            Some(Recorded::Moved)
        );
        assert_eq!(
            store.record("conn_a", 900).await.ok(),
            Some(Recorded::Unchanged)
        );
        assert_eq!(
            store.record("conn_a", 1_000).await.ok(),
            Some(Recorded::Unchanged)
        );
        assert_eq!(store.last_event_at("conn_a"), Some(1_000));
        store.disconnect("conn_a");
        assert_eq!(
            store.record("conn_a", 2_000).await.ok(),
            Some(Recorded::Unchanged)
        );
        assert_eq!(
            store.last_event_at("conn_a"),
            None,
            "gone, and not brought back"
        );
    }

    #[tokio::test]
    async fn a_batch_writes_each_connection_once_with_its_latest_time() {
        let store = Arc::new(InMemoryLastEvents::default());
        store.connect("conn_a");
        store.connect("conn_b");
        let recorder = LastEventRecorder::new(store.clone());
        let sent = recorder
            .record_batch(&seen(&[
                ("conn_a", 1_000),
                ("conn_b", 1_010),
                ("conn_a", 1_030),
                ("conn_a", 1_020),
            ]))
            .await;
        assert_eq!((sent, store.writes()), (2, 2));
        assert_eq!(store.last_event_at("conn_a"), Some(1_030));
        assert_eq!(store.last_event_at("conn_b"), Some(1_010));
    }

    #[tokio::test]
    async fn a_recent_known_time_skips_the_write_until_a_minute_has_passed() {
        let store = Arc::new(InMemoryLastEvents::default());
        store.connect("conn_a");
        let recorder = LastEventRecorder::new(store.clone());
        recorder.record_batch(&seen(&[("conn_a", 1_000)])).await;
        assert_eq!(
            recorder
                .record_batch(&seen(&[("conn_a", 1_000 + SKIP_WITHIN)]))
                .await,
            0,
            "within a minute of what this container wrote"
        );
        assert_eq!(store.last_event_at("conn_a"), Some(1_000));
        assert_eq!(
            recorder
                .record_batch(&seen(&[("conn_a", 1_001 + SKIP_WITHIN)]))
                .await,
            1
        );
        assert_eq!(store.last_event_at("conn_a"), Some(1_001 + SKIP_WITHIN));
        assert_eq!(store.writes(), 2);
    }

    #[tokio::test]
    async fn a_failed_write_is_not_remembered_and_is_tried_again() {
        let store = Arc::new(InMemoryLastEvents::default());
        store.connect("conn_a");
        let recorder = LastEventRecorder::new(store.clone());
        store.set_failing(true);
        assert_eq!(recorder.record_batch(&seen(&[("conn_a", 1_000)])).await, 1);
        assert_eq!(store.last_event_at("conn_a"), None);
        store.set_failing(false);
        assert_eq!(
            recorder.record_batch(&seen(&[("conn_a", 1_001)])).await,
            1,
            "the failure left nothing known, so the next batch writes"
        );
        assert_eq!(store.last_event_at("conn_a"), Some(1_001));
    }
}
