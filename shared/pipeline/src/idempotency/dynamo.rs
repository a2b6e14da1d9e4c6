//! The DynamoDB adapter of [`IdempotencyStore`]: the three conditional operations as
//! `PutItem`, `UpdateItem` and `DeleteItem`, a batch's completions as `BatchWriteItem`.
//! The claim algorithm ([`super::Idempotency`]) knows nothing of it; it meets the same
//! contract as the in-memory store ([`super::check_store_contract`], run on the emulator
//! in `tests/tests/integration/consumer_emulator.rs`).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use time::{Duration, OffsetDateTime};

use super::{Claim, ClaimRequest, IdempotencyKey, IdempotencyStore, StoreError, StoredRecord};

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
            .key("pk", AttributeValue::S(key.as_str().to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| StoreError(Box::new(aws_sdk_dynamodb::Error::from(err))))?;
        Ok(output.item.as_ref().map(stored_record))
    }

    /// One claim: a conditional `PutItem` (one write unit: the item is under 1 KB,
    /// `a_claim_item_is_one_write_unit`). When the condition fails, DynamoDB returns the
    /// record in the way (`ReturnValuesOnConditionCheckFailure=ALL_OLD`), read at the
    /// moment the condition was evaluated, so no second read is needed; were it
    /// missing, the record is read. A record gone by then (completed and expired, or
    /// released) is claimed again, a few times at most.
    async fn claim_one(
        &self,
        request: &ClaimRequest,
        now: OffsetDateTime,
        lease_expires_at: OffsetDateTime,
    ) -> Result<Option<StoredRecord>, StoreError> {
        use aws_sdk_dynamodb::{
            operation::put_item::PutItemError, types::ReturnValuesOnConditionCheckFailure,
        };
        for _attempt in 0..CLAIM_ATTEMPTS {
            let result = self
                .client
                .put_item()
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
                .send()
                .await;
            let failed = match result {
                Ok(_) => return Ok(None),
                Err(err) => match err.into_service_error() {
                    PutItemError::ConditionalCheckFailedException(failed) => failed,
                    other => {
                        return Err(StoreError(Box::new(aws_sdk_dynamodb::Error::from(other))));
                    }
                },
            };
            let existing = match failed.item() {
                Some(item) => Some(stored_record(item)),
                None => self.read(&request.key).await?,
            };
            if existing.is_some() {
                return Ok(existing);
            }
        }
        Err(StoreError(
            format!("claim still contended after {CLAIM_ATTEMPTS} attempts").into(),
        ))
    }
}

/// What a claim overwrites: no record, or an `in_progress` one whose lease ran out.
const CLAIM_CONDITION: &str =
    "attribute_not_exists(pk) OR (#status = :in_progress AND lease_expires_at <= :now)";
/// Writes of one claim whose record vanished between its failed condition and the read.
const CLAIM_ATTEMPTS: usize = 3;
/// A batch's claims in flight at once: the SQS event source's default batch is 10 (a
/// batching window allows more, claimed 10 at a time).
const CLAIM_CONCURRENCY: usize = 10;

/// The `in_progress` record a claim writes.
fn claim_item(
    request: &ClaimRequest,
    lease_expires_at: OffsetDateTime,
) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            "pk".to_owned(),
            AttributeValue::S(request.key.as_str().to_owned()),
        ),
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
        self.claim_one(&request, now, lease_expires_at).await
    }

    /// One conditional `PutItem` per claim (`claim_one`), up to
    /// 10 (`CLAIM_CONCURRENCY`) in flight at once, so a batch waits about one round trip.
    async fn try_claim_all(
        &self,
        requests: &[ClaimRequest],
        now: OffsetDateTime,
        lease_expires_at: OffsetDateTime,
    ) -> Vec<Result<Option<StoredRecord>, StoreError>> {
        if let [request] = requests {
            return vec![self.claim_one(request, now, lease_expires_at).await];
        }
        let mut found: Vec<Option<Result<Option<StoredRecord>, StoreError>>> =
            requests.iter().map(|_| None).collect();
        let mut running = tokio::task::JoinSet::new();
        let mut next = 0;
        loop {
            while next < requests.len() && running.len() < CLAIM_CONCURRENCY {
                let (store, request, index) = (self.clone(), requests[next].clone(), next);
                running.spawn(async move {
                    (
                        index,
                        store.claim_one(&request, now, lease_expires_at).await,
                    )
                });
                next += 1;
            }
            match running.join_next().await {
                Some(Ok((index, result))) => found[index] = Some(result),
                // A task that panicked leaves its slot empty (failed below).
                Some(Err(_)) => {}
                None => break,
            }
        }
        found
            .into_iter()
            .map(|slot| slot.unwrap_or_else(|| Err(StoreError("claim task failed".into()))))
            .collect()
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
            .key("pk", AttributeValue::S(key.as_str().to_owned()))
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
            .key("pk", AttributeValue::S(key.as_str().to_owned()))
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
        .item("pk", AttributeValue::S(claim.key.as_str().to_owned()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idempotency::{MAX_KEY_BYTES, random_token};

    /// DynamoDB's item size (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/CapacityUnitCalculations.html):
    /// each attribute's name plus its value, a string by its UTF-8 bytes, a number by
    /// about one byte per two digits plus one (counted here as one per digit plus one,
    /// an upper bound).
    fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
        item.iter()
            .map(|(name, value)| {
                name.len()
                    + match value {
                        AttributeValue::S(text) => text.len(),
                        AttributeValue::N(digits) => digits.len() + 1,
                        other => panic!("unexpected attribute {other:?}"),
                    }
            })
            .sum()
    }

    /// A write costs one unit per started KB of the item: a claim and its completion
    /// stay under 1 KB for the longest key stored as it is.
    #[test]
    fn a_claim_item_is_one_write_unit() {
        let longest = IdempotencyKey::new("stripe", None, &"e".repeat(MAX_KEY_BYTES - 7));
        assert_eq!(longest.as_str().len(), MAX_KEY_BYTES);
        let request = ClaimRequest {
            key: longest,
            token: random_token(),
            payload_hash: hex::encode([0u8; 32]),
        };
        let lease = OffsetDateTime::from_unix_timestamp(4_000_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let claim = claim_item(&request, lease);
        assert!(item_size(&claim) < 1024, "{}", item_size(&claim));
        let completed = completed_item(
            &Claim {
                key: request.key.clone(),
                token: request.token.clone(),
                payload_hash: request.payload_hash.clone(),
            },
            lease,
        )
        .unwrap_or_else(|err| panic!("{err}"));
        let put = completed.put_request().unwrap_or_else(|| panic!("a put"));
        assert!(item_size(put.item()) < 1024, "{}", item_size(put.item()));
    }
}
