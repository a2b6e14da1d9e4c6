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
//! operations ([`IdempotencyStore`]): DynamoDB in Lambda, memory in unit tests.

use std::{collections::HashMap, sync::Mutex};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use time::{Duration, OffsetDateTime};

/// The key an event is deduplicated on: never the SQS message id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// `provider#event_id`, or `provider#scope#event_id` where the delivery names the
    /// provider account (the scope; never a URL's endpoint segment).
    pub fn new(provider: &str, scope: Option<&str>, event_id: &str) -> Self {
        match scope {
            Some(scope) => IdempotencyKey(format!("{provider}#{scope}#{event_id}")),
            None => IdempotencyKey(format!("{provider}#{event_id}")),
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
    /// token each), in as few requests as the store allows: the consumer claims a whole
    /// batch together. One result per request, in order. The default claims one by one.
    async fn try_claim_all(
        &self,
        requests: &[ClaimRequest],
        now: OffsetDateTime,
        lease_expires_at: OffsetDateTime,
    ) -> Result<Vec<Option<StoredRecord>>, StoreError> {
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
                .await?,
            );
        }
        Ok(found)
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
    ) -> Result<Vec<Option<StoredRecord>>, StoreError> {
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

    /// Claims several events at once (`(key, payload_hash)`, distinct keys), in as few
    /// store requests as it allows; one outcome per event, in order.
    pub async fn claim_all(
        &self,
        events: &[(IdempotencyKey, String)],
        now: OffsetDateTime,
    ) -> Result<Vec<ClaimOutcome>, StoreError> {
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
            .await?;
        Ok(requests
            .into_iter()
            .zip(found)
            .map(|(request, existing)| outcome_of(request, existing))
            .collect())
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

/// DynamoDB: one item per key (`pk`), `status`, `token`, `payload_hash`,
/// `lease_expires_at` and `expires_at` (epoch seconds; the table's TTL attribute).
#[derive(Debug, Clone)]
pub struct DynamoIdempotencyStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoIdempotencyStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoIdempotencyStore {
            client,
            table: table.into(),
        }
    }

    pub fn from_config(aws: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        DynamoIdempotencyStore::new(aws_sdk_dynamodb::Client::new(aws), table)
    }

    async fn read(&self, key: &IdempotencyKey) -> Result<Option<StoredRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key.0.clone()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| StoreError(Box::new(aws_sdk_dynamodb::Error::from(err))))?;
        Ok(output.item.as_ref().map(stored_record))
    }

    /// Claims `pending` (indices into `requests`, at most [`TRANSACT_LIMIT`]) in
    /// `TransactWriteItems` calls: one when nothing is in the way. A transaction is all or
    /// nothing, so when some claims' conditions fail (duplicates, live leases elsewhere)
    /// DynamoDB cancels it, names those claims and returns their records; the others are
    /// sent again without them. Claims still unsettled after a few rounds (transaction
    /// conflicts with a concurrent batch) are made one by one.
    async fn transact_claims(
        &self,
        requests: &[ClaimRequest],
        mut pending: Vec<usize>,
        now: OffsetDateTime,
        lease_expires_at: OffsetDateTime,
        found: &mut [Option<StoredRecord>],
    ) -> Result<(), StoreError> {
        use aws_sdk_dynamodb::{
            operation::transact_write_items::TransactWriteItemsError,
            types::{Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem},
        };
        for _round in 0..TRANSACT_ROUNDS {
            if pending.len() < 2 {
                break;
            }
            let mut actions = Vec::with_capacity(pending.len());
            for &index in &pending {
                let request = &requests[index];
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(claim_item(request, lease_expires_at)))
                    .condition_expression(CLAIM_CONDITION)
                    .expression_attribute_names("#status", "status")
                    .expression_attribute_values(
                        ":in_progress",
                        AttributeValue::S("in_progress".into()),
                    )
                    .expression_attribute_values(":now", number(now))
                    .return_values_on_condition_check_failure(
                        ReturnValuesOnConditionCheckFailure::AllOld,
                    )
                    .build()
                    .map_err(|err| StoreError(Box::new(err)))?;
                actions.push(TransactWriteItem::builder().put(put).build());
            }
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(actions))
                .send()
                .await;
            let cancelled = match result {
                Ok(_) => {
                    pending.clear();
                    break;
                }
                Err(err) => match err.into_service_error() {
                    TransactWriteItemsError::TransactionCanceledException(cancelled) => cancelled,
                    other => {
                        return Err(StoreError(Box::new(aws_sdk_dynamodb::Error::from(other))));
                    }
                },
            };
            let reasons = cancelled.cancellation_reasons();
            let mut again = Vec::with_capacity(pending.len());
            for (position, &index) in pending.iter().enumerate() {
                let reason = reasons.get(position);
                if reason.and_then(|reason| reason.code()) != Some("ConditionalCheckFailed") {
                    // Not in the way ("None"), or a conflict with another transaction.
                    again.push(index);
                    continue;
                }
                let existing = match reason.and_then(|reason| reason.item()) {
                    Some(item) => Some(stored_record(item)),
                    None => self.read(&requests[index].key).await?,
                };
                match existing {
                    Some(record) => found[index] = Some(record),
                    // Completed and expired meanwhile: claim again.
                    None => again.push(index),
                }
            }
            pending = again;
        }
        for index in pending {
            let request = &requests[index];
            found[index] = self
                .try_claim(
                    &request.key,
                    &request.token,
                    &request.payload_hash,
                    now,
                    lease_expires_at,
                )
                .await?;
        }
        Ok(())
    }
}

/// What a claim overwrites: no record, or an `in_progress` one whose lease ran out.
const CLAIM_CONDITION: &str =
    "attribute_not_exists(pk) OR (#status = :in_progress AND lease_expires_at <= :now)";
/// `TransactWriteItems`' limit of actions per call.
const TRANSACT_LIMIT: usize = 100;
/// Transactions tried for one chunk of claims before the rest are claimed one by one.
const TRANSACT_ROUNDS: usize = 3;

/// The `in_progress` record a claim writes.
fn claim_item(
    request: &ClaimRequest,
    lease_expires_at: OffsetDateTime,
) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(request.key.0.clone())),
        ("status".to_owned(), AttributeValue::S("in_progress".into())),
        ("token".to_owned(), AttributeValue::S(request.token.clone())),
        (
            "payload_hash".to_owned(),
            AttributeValue::S(request.payload_hash.clone()),
        ),
        ("lease_expires_at".to_owned(), number(lease_expires_at)),
        // An abandoned claim is cleaned up by TTL a day after its lease.
        (
            "expires_at".to_owned(),
            number(lease_expires_at + Duration::days(1)),
        ),
    ])
}

/// A record as DynamoDB returns it.
fn stored_record(item: &HashMap<String, AttributeValue>) -> StoredRecord {
    let text = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default()
    };
    let seconds = item
        .get("lease_expires_at")
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse::<i64>().ok())
        .unwrap_or_default();
    StoredRecord {
        completed: text("status") == "completed",
        token: text("token"),
        payload_hash: text("payload_hash"),
        lease_expires_at: OffsetDateTime::from_unix_timestamp(seconds)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
    }
}

fn is_condition_failure<E, R>(err: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    err.as_service_error()
        .and_then(|service| service.code())
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

fn number(at: OffsetDateTime) -> AttributeValue {
    AttributeValue::N(at.unix_timestamp().to_string())
}

#[async_trait]
impl IdempotencyStore for DynamoIdempotencyStore {
    async fn try_claim(
        &self,
        key: &IdempotencyKey,
        token: &str,
        payload_hash: &str,
        now: OffsetDateTime,
        lease_expires_at: OffsetDateTime,
    ) -> Result<Option<StoredRecord>, StoreError> {
        let request = ClaimRequest {
            key: key.clone(),
            token: token.to_owned(),
            payload_hash: payload_hash.to_owned(),
        };
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(claim_item(&request, lease_expires_at)))
            .condition_expression(CLAIM_CONDITION)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":in_progress", AttributeValue::S("in_progress".into()))
            .expression_attribute_values(":now", number(now))
            .send()
            .await;
        match result {
            Ok(_) => Ok(None),
            Err(err) if is_condition_failure(&err) => match self.read(key).await? {
                Some(existing) => Ok(Some(existing)),
                // Completed and expired between the write and the read: claim again.
                None => {
                    Box::pin(self.try_claim(key, token, payload_hash, now, lease_expires_at)).await
                }
            },
            Err(err) => Err(StoreError(Box::new(aws_sdk_dynamodb::Error::from(err)))),
        }
    }

    /// `TransactWriteItems`, up to 100 claims a call (see `transact_claims`); a single
    /// claim is one `PutItem` (a transactional write costs two write units).
    async fn try_claim_all(
        &self,
        requests: &[ClaimRequest],
        now: OffsetDateTime,
        lease_expires_at: OffsetDateTime,
    ) -> Result<Vec<Option<StoredRecord>>, StoreError> {
        let mut found: Vec<Option<StoredRecord>> = vec![None; requests.len()];
        // A transaction may not touch one item twice.
        let distinct: std::collections::HashSet<&IdempotencyKey> =
            requests.iter().map(|request| &request.key).collect();
        if distinct.len() < requests.len() {
            return Err(StoreError(
                "a batch of claims names one key twice".to_owned().into(),
            ));
        }
        let indices: Vec<usize> = (0..requests.len()).collect();
        for chunk in indices.chunks(TRANSACT_LIMIT) {
            self.transact_claims(requests, chunk.to_vec(), now, lease_expires_at, &mut found)
                .await?;
        }
        Ok(found)
    }

    async fn complete(
        &self,
        key: &IdempotencyKey,
        token: &str,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key.0.clone()))
            .update_expression("SET #status = :completed, expires_at = :expires_at")
            .condition_expression("#status = :in_progress AND #token = :token")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":completed", AttributeValue::S("completed".into()))
            .expression_attribute_values(":in_progress", AttributeValue::S("in_progress".into()))
            .expression_attribute_values(":token", AttributeValue::S(token.to_owned()))
            .expression_attribute_values(":expires_at", number(expires_at))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err) if is_condition_failure(&err) => Ok(false),
            Err(err) => Err(StoreError(Box::new(aws_sdk_dynamodb::Error::from(err)))),
        }
    }

    async fn release(&self, key: &IdempotencyKey, token: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key.0.clone()))
            .condition_expression("#status = :in_progress AND #token = :token")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":in_progress", AttributeValue::S("in_progress".into()))
            .expression_attribute_values(":token", AttributeValue::S(token.to_owned()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if is_condition_failure(&err) => Ok(()),
            Err(err) => Err(StoreError(Box::new(aws_sdk_dynamodb::Error::from(err)))),
        }
    }

    /// `BatchWriteItem`, 25 puts a request (its limit); unprocessed items (throttling)
    /// are sent again a few times before the batch fails.
    async fn complete_all(
        &self,
        claims: &[Claim],
        expires_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        for chunk in claims.chunks(BATCH_WRITE_LIMIT) {
            let mut requests = chunk
                .iter()
                .map(|claim| completed_item(claim, expires_at))
                .collect::<Result<Vec<_>, _>>()?;
            for attempt in 0..BATCH_WRITE_ATTEMPTS {
                if attempt > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(25 << attempt)).await;
                }
                let output = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await
                    .map_err(|err| StoreError(Box::new(aws_sdk_dynamodb::Error::from(err))))?;
                requests = output
                    .unprocessed_items
                    .and_then(|mut unprocessed| unprocessed.remove(&self.table))
                    .unwrap_or_default();
                if requests.is_empty() {
                    break;
                }
            }
            if !requests.is_empty() {
                return Err(StoreError(
                    format!(
                        "{} completions still unprocessed after {BATCH_WRITE_ATTEMPTS} attempts",
                        requests.len()
                    )
                    .into(),
                ));
            }
        }
        Ok(())
    }
}

/// `BatchWriteItem`'s limit of requests per call.
const BATCH_WRITE_LIMIT: usize = 25;
/// Attempts for a batch's unprocessed items.
const BATCH_WRITE_ATTEMPTS: u32 = 4;

/// The put that stores a claim's record as `completed`.
fn completed_item(
    claim: &Claim,
    expires_at: OffsetDateTime,
) -> Result<aws_sdk_dynamodb::types::WriteRequest, StoreError> {
    let put = aws_sdk_dynamodb::types::PutRequest::builder()
        .item("pk", AttributeValue::S(claim.key.0.clone()))
        .item("status", AttributeValue::S("completed".into()))
        .item("token", AttributeValue::S(claim.token.clone()))
        .item(
            "payload_hash",
            AttributeValue::S(claim.payload_hash.clone()),
        )
        .item("lease_expires_at", number(OffsetDateTime::UNIX_EPOCH))
        .item("expires_at", number(expires_at))
        .build()
        .map_err(|err| StoreError(Box::new(err)))?;
    Ok(aws_sdk_dynamodb::types::WriteRequest::builder()
        .put_request(put)
        .build())
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

    // A batch claims together (more than one store request's worth): new keys, a
    // completed one and one held elsewhere, each with its own outcome.
    let held = IdempotencyKey::new(key_prefix, None, "held");
    assert!(matches!(
        claim_ok(&idempotency, &held, "h", at(0)).await,
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
    let outcomes = match idempotency.claim_all(&batch, at(1)).await {
        Ok(outcomes) => outcomes,
        Err(err) => panic!("claim_all: {err}"),
    };
    assert_eq!(outcomes.len(), batch.len());
    assert_eq!(
        outcomes[7],
        ClaimOutcome::AlreadyCompleted { same_payload: true }
    );
    assert!(matches!(
        outcomes[110],
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
    assert_eq!(claims.len(), 120, "every new key is claimed");
    if let Err(err) = idempotency.complete_all(&claims, at(1)).await {
        panic!("complete_all: {err}");
    }
    for claim in &claims {
        assert_eq!(
            claim_ok(&idempotency, &claim.key, "hb", at(2)).await,
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
