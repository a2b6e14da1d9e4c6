//! Exactly-once processing of at-least-once deliveries.
//!
//! Each event is claimed under its idempotency key (provider + the provider's own event
//! id, scoped to the provider account where the delivery names one) before any side
//! effect, with a conditional write: the claim succeeds only if no record exists or the
//! previous claim's lease ran out (its worker crashed). The record then moves to
//! `completed` with a TTL. A duplicate of a completed event is acknowledged without side
//! effects; a duplicate of an event in progress elsewhere is retried later. The stored
//! payload hash tells a genuine duplicate from a provider reusing an id with a different
//! payload, which is reported, never silently dropped.
//!
//! The algorithm lives here once ([`Idempotency`]); stores implement three conditional
//! operations ([`IdempotencyStore`]): DynamoDB in Lambda ([`DynamoIdempotencyStore`],
//! in its own module `dynamo`, the only one here that knows the SDK), memory in unit
//! tests.
//!
//! # The properties, and the test that guards each
//!
//! - **One live claim per key.** The claim is one conditional write per key; two
//!   workers racing for a key cannot both win. [`check_store_contract`] (run on both
//!   stores: `in_memory_store_meets_the_contract` here,
//!   `dynamodb_store_meets_the_idempotency_contract` in `tests/tests/integration/consumer_emulator.rs`);
//!   under concurrency, `thirty_two_concurrent_copies_of_one_event_have_one_effect`,
//!   `concurrent_duplicates_become_exactly_one_cloudevent_each` and
//!   `overlapping_batches_claim_each_key_once` (same file; the emulator's DynamoDB
//!   requests go one at a time through its proxy, as moto's conditional writes are not
//!   atomic: docs/local-stack.md).
//! - **A crash at any step is recovered on redelivery**, exactly once: the lease
//!   (60 s) ends before SQS shows the message again (the visibility timeout), a
//!   claim is completed only after its events are on the bus, and the message is
//!   deleted only after that. `consumer_tests.rs` `crashes`: a crash after the claim,
//!   after the record write, after the publish, before the delete, and in the middle
//!   of a batch's claims (`a_crash_in_the_middle_of_a_batch_claim_is_recovered_on_redelivery`).
//! - **A lost claim cannot complete** (its token no longer owns the record), **a
//!   completed record is never claimed again** while it lives, **a reused id with
//!   other bytes is reported**, **a released claim can be taken at once**:
//!   [`check_store_contract`], and the consumer's tests
//!   `an_event_delivered_twice_is_published_once`,
//!   `a_reused_id_with_another_payload_is_reported`,
//!   `a_failed_publish_releases_the_claim_so_the_retry_processes_it`.
//! - **Each claim of a batch has its own outcome**, a store failure included: the
//!   batch part of [`check_store_contract`] (new keys, a completed one, one held
//!   elsewhere, one whose lease ran out) and `a_store_failure_fails_only_its_own_claim`.
//! - **One write unit per claim**: the item holds the payload's hash, never the
//!   payload, and a key over [`MAX_KEY_BYTES`] is stored as its digest, so every item
//!   stays under DynamoDB's 1 KB write unit (`a_claim_item_is_one_write_unit`, in
//!   `dynamo`);
//!   `aws_calls_per_event_counted_at_the_endpoint` counts the calls.
//!
//! # Why a batch is claimed without a transaction
//!
//! The consumer claims its batch with one conditional `PutItem` per message, sent
//! concurrently, where it used a `TransactWriteItems`. DynamoDB bills a transactional
//! write 2 units per item and a conditional `PutItem` 1. The transaction's one property,
//! all claims or none, is one nothing relied on: each message's fate depends only on
//! its own key's record (when some claims' conditions failed, the transaction was
//! cancelled and the rest sent again without them, so the claims never succeeded or
//! failed together anyway), and crash safety is per key: a crash after a committed
//! transaction left every claim of the batch orphaned until its lease ended, which is
//! what a crash between two puts leaves for the puts that landed, key by key.

use std::{collections::HashMap, sync::Mutex};

use async_trait::async_trait;
use time::{Duration, OffsetDateTime};

mod dynamo;

pub use dynamo::DynamoIdempotencyStore;

/// The key an event is deduplicated on: never the SQS message id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// The longest key stored as it is; a longer one is stored as `provider#sha256:<hex>`
/// of the whole key. The ingress lets an event id and an account be up to 1,024 bytes
/// each: keys that long would make the record over DynamoDB's 1 KB write unit (a
/// claim costing 2 or 3 units) or over its 2,048-byte partition key limit (a claim
/// refused on every receive). No provider's ids come near it.
pub const MAX_KEY_BYTES: usize = 512;

impl IdempotencyKey {
    /// `provider#event_id`, or `provider#scope#event_id` where the delivery names the
    /// provider account (the scope; never a URL's endpoint segment); over
    /// [`MAX_KEY_BYTES`], its digest.
    pub fn new(provider: &str, scope: Option<&str>, event_id: &str) -> Self {
        let key = match scope {
            Some(scope) => format!("{provider}#{scope}#{event_id}"),
            None => format!("{provider}#{event_id}"),
        };
        if key.len() <= MAX_KEY_BYTES {
            return IdempotencyKey(key);
        }
        use sha2::Digest as _;
        let digest = hex::encode(sha2::Sha256::digest(key.as_bytes()));
        // Catalog names are short; a name that is not stays out of the key.
        if provider.len() <= 64 {
            IdempotencyKey(format!("{provider}#sha256:{digest}"))
        } else {
            IdempotencyKey(format!("sha256:{digest}"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A live claim: proof that this worker may process the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub key: IdempotencyKey,
    /// Random per claim: completes and releases only succeed for the claim's owner.
    pub token: String,
    /// The claimed payload's hash, written again with the completion.
    pub payload_hash: String,
}

/// What a claim attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This worker now owns the event until the lease expires.
    Claimed(Claim),
    /// The event was processed already: acknowledge it with no side effect.
    /// `same_payload` is false when the provider reused the id for different bytes.
    AlreadyCompleted { same_payload: bool },
    /// Another worker holds a live lease: retry later, do not acknowledge.
    InProgressElsewhere { lease_expires_at: OffsetDateTime },
}

/// A stored idempotency record, as a store reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub completed: bool,
    pub token: String,
    pub payload_hash: String,
    pub lease_expires_at: OffsetDateTime,
}

/// One claim of a batch ([`IdempotencyStore::try_claim_all`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    pub key: IdempotencyKey,
    pub token: String,
    pub payload_hash: String,
}

/// A store failure; transient (the message is retried).
#[derive(Debug, thiserror::Error)]
#[error("idempotency store unavailable")]
pub struct StoreError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// The conditional operations the algorithm needs.
#[async_trait]
pub trait IdempotencyStore: Send + Sync + std::fmt::Debug {
    /// Writes an `in_progress` record if none exists or the existing one is
    /// `in_progress` with `lease_expires_at <= now`. Must be a single conditional write.
    /// Returns `Ok(None)` on success, `Ok(Some(existing))` when the condition failed.
    async fn try_claim(
        &self,
        key: &IdempotencyKey,
        token: &str,
        payload_hash: &str,
        now: OffsetDateTime,
        lease_expires_at: OffsetDateTime,
    ) -> Result<Option<StoredRecord>, StoreError>;

    /// [`IdempotencyStore::try_claim`] for several keys at once (distinct keys, one
    /// token each): the consumer claims a whole batch together. Each claim is on its own
    /// (no claim's result depends on another's), so each has its own result, a store
    /// failure included; one per request, in order. The default claims one by one.
    async fn try_claim_all(
        &self,
        requests: &[ClaimRequest],
        now: OffsetDateTime,
        lease_expires_at: OffsetDateTime,
    ) -> Vec<Result<Option<StoredRecord>, StoreError>> {
        let mut found = Vec::with_capacity(requests.len());
        for request in requests {
            found.push(
                self.try_claim(
                    &request.key,
                    &request.token,
                    &request.payload_hash,
                    now,
                    lease_expires_at,
                )
                .await,
            );
        }
        found
    }

    /// Marks the record `completed` (expiring at `expires_at`) if `token` still owns it.
    /// Returns false when the claim was lost (its lease ran out and another took it).
    async fn complete(
        &self,
        key: &IdempotencyKey,
        token: &str,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Deletes the `in_progress` record if `token` still owns it, so a retry can claim
    /// at once instead of waiting for the lease.
    async fn release(&self, key: &IdempotencyKey, token: &str) -> Result<(), StoreError>;

    /// Marks every claim's record `completed` (expiring at `expires_at`) in as few
    /// requests as the store allows: the consumer completes a whole batch at once. Unlike
    /// [`IdempotencyStore::complete`] ownership need not be checked: this is called only
    /// once the claims' effects are published, so each event is done whoever holds its
    /// lease now (if a lease ran out meanwhile, a second worker may publish the same
    /// stable event ids again, which consumers of the bus already deduplicate).
    /// The default completes the claims one by one.
    async fn complete_all(
        &self,
        claims: &[Claim],
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        for claim in claims {
            self.complete(&claim.key, &claim.token, expires_at).await?;
        }
        Ok(())
    }
}

/// A shared store is a store (tests keep a handle to inspect what was written).
#[async_trait]
impl<T: IdempotencyStore + ?Sized> IdempotencyStore for std::sync::Arc<T> {
    async fn try_claim(
        &self,
        key: &IdempotencyKey,
        token: &str,
        payload_hash: &str,
        now: OffsetDateTime,
        lease_expires_at: OffsetDateTime,
    ) -> Result<Option<StoredRecord>, StoreError> {
        (**self)
            .try_claim(key, token, payload_hash, now, lease_expires_at)
            .await
    }

    async fn try_claim_all(
        &self,
        requests: &[ClaimRequest],
        now: OffsetDateTime,
        lease_expires_at: OffsetDateTime,
    ) -> Vec<Result<Option<StoredRecord>, StoreError>> {
        (**self)
            .try_claim_all(requests, now, lease_expires_at)
            .await
    }

    async fn complete(
        &self,
        key: &IdempotencyKey,
        token: &str,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        (**self).complete(key, token, expires_at).await
    }

    async fn release(&self, key: &IdempotencyKey, token: &str) -> Result<(), StoreError> {
        (**self).release(key, token).await
    }

    async fn complete_all(
        &self,
        claims: &[Claim],
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        (**self).complete_all(claims, expires_at).await
    }
}

/// Lease and retention of idempotency records.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyPolicy {
    /// How long a claim stays exclusive; longer than the consumer's timeout, shorter than
    /// the queue's visibility timeout so a crashed claim has expired at redelivery.
    pub lease: Duration,
    /// How long completed records are kept (DynamoDB TTL); providers retry for days.
    pub completed_ttl: Duration,
}

impl Default for IdempotencyPolicy {
    fn default() -> Self {
        IdempotencyPolicy {
            lease: Duration::seconds(60),
            completed_ttl: Duration::days(7),
        }
    }
}

/// The claim / complete / release algorithm over a store.
#[derive(Debug)]
pub struct Idempotency<S> {
    store: S,
    policy: IdempotencyPolicy,
}

impl<S: IdempotencyStore> Idempotency<S> {
    pub fn new(store: S, policy: IdempotencyPolicy) -> Self {
        Idempotency { store, policy }
    }

    /// Claims `key` for an event whose payload hashes to `payload_hash`.
    pub async fn claim(
        &self,
        key: &IdempotencyKey,
        payload_hash: &str,
        now: OffsetDateTime,
    ) -> Result<ClaimOutcome, StoreError> {
        let token = random_token();
        let lease_expires_at = now + self.policy.lease;
        let existing = self
            .store
            .try_claim(key, &token, payload_hash, now, lease_expires_at)
            .await?;
        let request = ClaimRequest {
            key: key.clone(),
            token,
            payload_hash: payload_hash.to_owned(),
        };
        Ok(outcome_of(request, existing))
    }

    /// Claims several events at once (`(key, payload_hash)`, distinct keys); one outcome
    /// per event, in order, each on its own (a store failure fails only its claim).
    pub async fn claim_all(
        &self,
        events: &[(IdempotencyKey, String)],
        now: OffsetDateTime,
    ) -> Vec<Result<ClaimOutcome, StoreError>> {
        let requests: Vec<ClaimRequest> = events
            .iter()
            .map(|(key, payload_hash)| ClaimRequest {
                key: key.clone(),
                token: random_token(),
                payload_hash: payload_hash.clone(),
            })
            .collect();
        let found = self
            .store
            .try_claim_all(&requests, now, now + self.policy.lease)
            .await;
        requests
            .into_iter()
            .zip(found)
            .map(|(request, existing)| existing.map(|existing| outcome_of(request, existing)))
            .collect()
    }

    /// Records that the claimed event's effects are done. Returns false if the claim
    /// had been lost meanwhile (effects are idempotent, so this is logged, not failed).
    pub async fn complete(&self, claim: &Claim, now: OffsetDateTime) -> Result<bool, StoreError> {
        self.store
            .complete(&claim.key, &claim.token, now + self.policy.completed_ttl)
            .await
    }

    /// Records that the claims' effects are done, in as few store requests as it
    /// allows (see [`IdempotencyStore::complete_all`]).
    pub async fn complete_all(
        &self,
        claims: &[Claim],
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        if claims.is_empty() {
            return Ok(());
        }
        self.store
            .complete_all(claims, now + self.policy.completed_ttl)
            .await
    }

    /// Gives a claim back after a failure, so the retry can claim at once.
    pub async fn release(&self, claim: &Claim) -> Result<(), StoreError> {
        self.store.release(&claim.key, &claim.token).await
    }
}

/// What a claim attempt's result means: no record found in the way is a claim.
fn outcome_of(request: ClaimRequest, existing: Option<StoredRecord>) -> ClaimOutcome {
    match existing {
        None => ClaimOutcome::Claimed(Claim {
            key: request.key,
            token: request.token,
            payload_hash: request.payload_hash,
        }),
        Some(existing) if existing.completed => ClaimOutcome::AlreadyCompleted {
            same_payload: existing.payload_hash == request.payload_hash,
        },
        Some(existing) => ClaimOutcome::InProgressElsewhere {
            lease_expires_at: existing.lease_expires_at,
        },
    }
}

fn random_token() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Records in memory, with the same conditions as the DynamoDB store.
#[derive(Debug, Default)]
pub struct InMemoryIdempotencyStore {
    records: Mutex<HashMap<IdempotencyKey, StoredRecord>>,
}

impl InMemoryIdempotencyStore {
    /// The record under `key`, for assertions.
    pub fn get(&self, key: &IdempotencyKey) -> Option<StoredRecord> {
        self.lock().get(key).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IdempotencyKey, StoredRecord>> {
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl IdempotencyStore for InMemoryIdempotencyStore {
    async fn try_claim(
        &self,
        key: &IdempotencyKey,
        token: &str,
        payload_hash: &str,
        now: OffsetDateTime,
        lease_expires_at: OffsetDateTime,
    ) -> Result<Option<StoredRecord>, StoreError> {
        let mut records = self.lock();
        if let Some(existing) = records.get(key)
            && (existing.completed || existing.lease_expires_at > now)
        {
            return Ok(Some(existing.clone()));
        }
        records.insert(
            key.clone(),
            StoredRecord {
                completed: false,
                token: token.to_owned(),
                payload_hash: payload_hash.to_owned(),
                lease_expires_at,
            },
        );
        Ok(None)
    }

    async fn complete(
        &self,
        key: &IdempotencyKey,
        token: &str,
        _expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut records = self.lock();
        match records.get_mut(key) {
            Some(record) if !record.completed && record.token == token => {
                record.completed = true;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, key: &IdempotencyKey, token: &str) -> Result<(), StoreError> {
        let mut records = self.lock();
        if records
            .get(key)
            .is_some_and(|record| !record.completed && record.token == token)
        {
            records.remove(key);
        }
        Ok(())
    }

    async fn complete_all(
        &self,
        claims: &[Claim],
        _expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut records = self.lock();
        for claim in claims {
            records.insert(
                claim.key.clone(),
                StoredRecord {
                    completed: true,
                    token: claim.token.clone(),
                    payload_hash: claim.payload_hash.clone(),
                    lease_expires_at: OffsetDateTime::UNIX_EPOCH,
                },
            );
        }
        Ok(())
    }
}

/// The contract every store must meet, run against each adapter (the in-memory one
/// here, DynamoDB in the emulator tests).
pub async fn check_store_contract<S: IdempotencyStore>(store: S, key_prefix: &str) {
    let at = |seconds: i64| {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + seconds)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    };
    let idempotency = Idempotency::new(store, IdempotencyPolicy::default());
    let key = IdempotencyKey::new(key_prefix, Some("conn-1"), "evt-1");

    let ClaimOutcome::Claimed(claim) = claim_ok(&idempotency, &key, "h1", at(0)).await else {
        panic!("first claim must succeed");
    };
    assert!(
        matches!(
            claim_ok(&idempotency, &key, "h1", at(10)).await,
            ClaimOutcome::InProgressElsewhere { .. }
        ),
        "a live lease blocks a second claim"
    );

    // The first worker "crashes"; after the lease another worker takes over.
    let ClaimOutcome::Claimed(second) = claim_ok(&idempotency, &key, "h1", at(61)).await else {
        panic!("an expired lease can be claimed");
    };
    assert!(
        !idempotency.complete(&claim, at(62)).await.unwrap_or(true),
        "the lost claim cannot complete"
    );
    assert!(idempotency.complete(&second, at(62)).await.unwrap_or(false));
    assert_eq!(
        claim_ok(&idempotency, &key, "h1", at(63)).await,
        ClaimOutcome::AlreadyCompleted { same_payload: true }
    );
    assert_eq!(
        claim_ok(&idempotency, &key, "other-hash", at(63)).await,
        ClaimOutcome::AlreadyCompleted {
            same_payload: false
        },
        "a reused id with another payload is reported"
    );
    assert!(
        matches!(
            claim_ok(&idempotency, &key, "h1", at(100_000)).await,
            ClaimOutcome::AlreadyCompleted { .. }
        ),
        "completed records never expire by lease"
    );

    // A released claim can be taken again at once.
    let other = IdempotencyKey::new(key_prefix, None, "evt-2");
    let ClaimOutcome::Claimed(third) = claim_ok(&idempotency, &other, "h", at(0)).await else {
        panic!("claim");
    };
    assert!(idempotency.release(&third).await.is_ok());
    assert!(matches!(
        claim_ok(&idempotency, &other, "h", at(1)).await,
        ClaimOutcome::Claimed(_)
    ));

    // A batch claims together (more than the store's claims in flight at once): new
    // keys, a completed one, one held elsewhere and one whose holder crashed (its lease
    // ran out), each with its own outcome.
    let held = IdempotencyKey::new(key_prefix, None, "held");
    assert!(matches!(
        claim_ok(&idempotency, &held, "h", at(0)).await,
        ClaimOutcome::Claimed(_)
    ));
    let abandoned = IdempotencyKey::new(key_prefix, None, "abandoned");
    assert!(matches!(
        claim_ok(&idempotency, &abandoned, "ha", at(-100)).await,
        ClaimOutcome::Claimed(_)
    ));
    let mut batch: Vec<(IdempotencyKey, String)> = (0..120)
        .map(|n| {
            let key = IdempotencyKey::new(key_prefix, None, &format!("batch-{n}"));
            (key, "hb".to_owned())
        })
        .collect();
    batch.insert(7, (key.clone(), "h1".to_owned()));
    batch.insert(110, (held.clone(), "h".to_owned()));
    batch.insert(50, (abandoned.clone(), "ha".to_owned()));
    let outcomes: Vec<ClaimOutcome> = idempotency
        .claim_all(&batch, at(1))
        .await
        .into_iter()
        .map(|outcome| outcome.unwrap_or_else(|err| panic!("claim_all: {err}")))
        .collect();
    assert_eq!(outcomes.len(), batch.len());
    assert!(
        matches!(&outcomes[50], ClaimOutcome::Claimed(claim) if claim.key == abandoned),
        "an expired lease is taken over in a batch: {:?}",
        outcomes[50]
    );
    assert_eq!(
        outcomes[7],
        ClaimOutcome::AlreadyCompleted { same_payload: true }
    );
    assert!(matches!(
        outcomes[111],
        ClaimOutcome::InProgressElsewhere { .. }
    ));
    let mut claims = Vec::new();
    for (outcome, (key, _)) in outcomes.into_iter().zip(&batch) {
        match outcome {
            ClaimOutcome::Claimed(claim) => {
                assert_eq!(&claim.key, key);
                claims.push(claim);
            }
            other => assert!(key == &held || key.as_str().ends_with("evt-1"), "{other:?}"),
        }
    }
    assert_eq!(
        claims.len(),
        121,
        "every new key is claimed, and the abandoned one"
    );
    if let Err(err) = idempotency.complete_all(&claims, at(1)).await {
        panic!("complete_all: {err}");
    }
    for claim in &claims {
        assert_eq!(
            claim_ok(&idempotency, &claim.key, &claim.payload_hash, at(2)).await,
            ClaimOutcome::AlreadyCompleted { same_payload: true },
            "{:?}",
            claim.key
        );
    }
}

async fn claim_ok<S: IdempotencyStore>(
    idempotency: &Idempotency<S>,
    key: &IdempotencyKey,
    hash: &str,
    now: OffsetDateTime,
) -> ClaimOutcome {
    match idempotency.claim(key, hash, now).await {
        Ok(outcome) => outcome,
        Err(err) => panic!("store failed: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_memory_store_meets_the_contract() {
        check_store_contract(InMemoryIdempotencyStore::default(), "test").await;
    }

    /// Regression: an event id and an account of up to 1,024 bytes each (what the
    /// ingress lets through) made a key over DynamoDB's 2,048-byte partition key limit,
    /// refused on every receive, and an item over 1 KB, 2 or 3 write units a claim.
    #[test]
    fn a_key_over_the_limit_is_stored_as_its_digest() {
        let (account, id) = ("a".repeat(1024), "i".repeat(1024));
        let long = IdempotencyKey::new("hubspot", Some(&account), &id);
        assert!(long.as_str().len() <= MAX_KEY_BYTES);
        assert!(long.as_str().starts_with("hubspot#sha256:"), "{long:?}");
        assert_eq!(long, IdempotencyKey::new("hubspot", Some(&account), &id));
        assert_ne!(
            long,
            IdempotencyKey::new("hubspot", Some(&account), &format!("{id}2")),
            "distinct ids, distinct digests"
        );
        assert_ne!(
            long,
            IdempotencyKey::new("hubspot", Some(&format!("{account}2")), &id),
            "the scope is part of what is hashed"
        );
    }

    /// A store that fails the claim of one key.
    #[derive(Debug)]
    struct FailingFor(InMemoryIdempotencyStore, &'static str);

    #[async_trait]
    impl IdempotencyStore for FailingFor {
        async fn try_claim(
            &self,
            key: &IdempotencyKey,
            token: &str,
            payload_hash: &str,
            now: OffsetDateTime,
            lease_expires_at: OffsetDateTime,
        ) -> Result<Option<StoredRecord>, StoreError> {
            if key.as_str().ends_with(self.1) {
                return Err(StoreError("throttled".into()));
            }
            self.0
                .try_claim(key, token, payload_hash, now, lease_expires_at)
                .await
        }

        async fn complete(
            &self,
            key: &IdempotencyKey,
            token: &str,
            expires_at: OffsetDateTime,
        ) -> Result<bool, StoreError> {
            self.0.complete(key, token, expires_at).await
        }

        async fn release(&self, key: &IdempotencyKey, token: &str) -> Result<(), StoreError> {
            self.0.release(key, token).await
        }
    }

    #[tokio::test]
    async fn a_failed_claim_in_a_batch_fails_only_itself() {
        let idempotency = Idempotency::new(
            FailingFor(InMemoryIdempotencyStore::default(), "#b"),
            IdempotencyPolicy::default(),
        );
        let batch: Vec<(IdempotencyKey, String)> = ["a", "b", "c"]
            .into_iter()
            .map(|id| (IdempotencyKey::new("p", None, id), "h".to_owned()))
            .collect();
        let outcomes = idempotency
            .claim_all(&batch, OffsetDateTime::UNIX_EPOCH)
            .await;
        assert!(matches!(outcomes[0], Ok(ClaimOutcome::Claimed(_))));
        assert!(outcomes[1].is_err());
        assert!(matches!(outcomes[2], Ok(ClaimOutcome::Claimed(_))));
    }

    #[test]
    fn keys_are_scoped_where_ids_are_per_account() {
        assert_eq!(
            IdempotencyKey::new("stripe", None, "evt_1").as_str(),
            "stripe#evt_1"
        );
        assert_eq!(
            IdempotencyKey::new("hubspot", Some("portal-62515"), "1").as_str(),
            "hubspot#portal-62515#1"
        );
    }
}
