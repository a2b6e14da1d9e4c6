//! Junction's own idempotency for writes through a connection, for providers that take
//! no idempotency key of their own: the key and a hash of the request are recorded
//! before the call (a conditional write, so two concurrent requests cannot both run),
//! and the provider's final answer after it. A repeat within 24 hours is answered from
//! the record; the same key with another request is refused; a repeat while the first is
//! still running is told so.
//!
//! The store is a port ([`ProxyIdempotencyStore`]): DynamoDB ([`DynamoProxyIdempotencyStore`],
//! the only code here that knows the SDK) and memory.

use std::{collections::HashMap, sync::Mutex};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use sha2::{Digest, Sha256};

/// How long a key is remembered: a repeat within this answers from the record.
pub const IDEMPOTENCY_TTL_SECONDS: i64 = 24 * 60 * 60;

/// How long a claimed key counts as in flight. A request that died mid-call (its
/// Lambda timed out) frees its key after this, so a repeat can run; longer than the
/// longest function that runs a request (the action runner's 60 s timeout).
pub const IN_FLIGHT_LEASE_SECONDS: i64 = 120;

/// The largest response body kept for replay. A DynamoDB item holds at most 400 KB;
/// this leaves room for the key, the hash and the headers. A larger answer is kept
/// without its body, and its replay says so.
pub const KEPT_BODY_CAP: usize = 256 * 1024;

/// The store is unavailable: the request is not sent (nothing at the provider changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("idempotency store unavailable: {0}")]
pub struct IdempotencyError(pub String);

/// A provider answer as kept for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptAnswer {
    pub status: u16,
    /// The headers the proxy passed on (already the allow-listed ones).
    pub headers: Vec<(String, String)>,
    /// `None` when the body was over [`KEPT_BODY_CAP`].
    pub body: Option<Vec<u8>>,
}

/// What [`ProxyIdempotencyStore::begin`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The key is this request's now: send it, then `complete` or `release`.
    Started,
    /// The same request already ran: its answer.
    Replay(KeptAnswer),
    /// The same request is running now (its lease has not run out).
    InFlight,
    /// The key was used for another request.
    Mismatch,
}

/// Keys and their requests' answers.
#[async_trait]
pub trait ProxyIdempotencyStore: Send + Sync + std::fmt::Debug {
    /// Claims `key` for the request whose hash is `hash`, at unix time `now`.
    async fn begin(&self, key: &str, hash: &str, now: i64) -> Result<Begin, IdempotencyError>;

    /// Keeps `answer` as the request's outcome for [`IDEMPOTENCY_TTL_SECONDS`].
    async fn complete(
        &self,
        key: &str,
        hash: &str,
        answer: &KeptAnswer,
        now: i64,
    ) -> Result<(), IdempotencyError>;

    /// Frees the key (the request did not reach the provider, or failed in a way worth
    /// retrying), so a repeat runs it again.
    async fn release(&self, key: &str, hash: &str) -> Result<(), IdempotencyError>;
}

/// The record's key: idempotency keys are the caller's, per connection.
pub fn record_key(connection: &str, key: &str) -> String {
    format!("{connection}#{key}")
}

/// A hash of what makes two requests the same (method, path, query, headers, body):
/// hex SHA-256 over each part, each followed by a NUL.
pub fn request_hash<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut digest = Sha256::new();
    for part in parts {
        digest.update(part);
        digest.update([0]);
    }
    hex::encode(digest.finalize())
}

/// A key a caller may send: 1-255 visible ASCII characters (Stripe's limit).
pub fn valid_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

#[derive(Debug, Clone)]
struct Record {
    hash: String,
    answer: Option<KeptAnswer>,
    lease_until: i64,
    expires_at: i64,
}

/// In memory, for unit tests.
#[derive(Debug, Default)]
pub struct InMemoryProxyIdempotencyStore {
    records: Mutex<HashMap<String, Record>>,
}

impl InMemoryProxyIdempotencyStore {
    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<String, Record>> {
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What an existing record means for a request with `hash` at `now`; `None`: the key
/// may be claimed (no record, an expired one, or this request's own stale lease).
fn judge(record: Option<&Record>, hash: &str, now: i64) -> Option<Begin> {
    let record = record.filter(|r| r.expires_at >= now)?;
    if record.hash != hash {
        return Some(Begin::Mismatch);
    }
    match &record.answer {
        Some(answer) => Some(Begin::Replay(answer.clone())),
        None if record.lease_until >= now => Some(Begin::InFlight),
        None => None,
    }
}

#[async_trait]
impl ProxyIdempotencyStore for InMemoryProxyIdempotencyStore {
    async fn begin(&self, key: &str, hash: &str, now: i64) -> Result<Begin, IdempotencyError> {
        let mut records = self.records();
        if let Some(found) = judge(records.get(key), hash, now) {
            return Ok(found);
        }
        records.insert(
            key.to_owned(),
            Record {
                hash: hash.to_owned(),
                answer: None,
                lease_until: now + IN_FLIGHT_LEASE_SECONDS,
                expires_at: now + IDEMPOTENCY_TTL_SECONDS,
            },
        );
        Ok(Begin::Started)
    }

    async fn complete(
        &self,
        key: &str,
        hash: &str,
        answer: &KeptAnswer,
        now: i64,
    ) -> Result<(), IdempotencyError> {
        let mut records = self.records();
        if records.get(key).is_some_and(|r| r.hash != hash) {
            return Err(IdempotencyError(format!("{key}: taken by another request")));
        }
        records.insert(
            key.to_owned(),
            Record {
                hash: hash.to_owned(),
                answer: Some(answer.clone()),
                lease_until: now,
                expires_at: now + IDEMPOTENCY_TTL_SECONDS,
            },
        );
        Ok(())
    }

    async fn release(&self, key: &str, hash: &str) -> Result<(), IdempotencyError> {
        let mut records = self.records();
        if records
            .get(key)
            .is_some_and(|r| r.hash == hash && r.answer.is_none())
        {
            records.remove(key);
        }
        Ok(())
    }
}

/// DynamoDB: item `key` (partition key), `hash`, `lease_until`, `expires_at` (TTL), and
/// once answered `status`, `headers` (a JSON list of pairs) and `body` (binary, absent
/// when not kept). DynamoDB's TTL deletes late, so `expires_at` is also checked.
#[derive(Debug, Clone)]
pub struct DynamoProxyIdempotencyStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoProxyIdempotencyStore {
    pub fn from_config(aws: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        DynamoProxyIdempotencyStore {
            client: aws_sdk_dynamodb::Client::new(aws),
            table: table.into(),
        }
    }

    async fn read(&self, key: &str) -> Result<Option<Record>, IdempotencyError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("key", AttributeValue::S(key.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        let number = |name: &str| {
            item.get(name)
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse::<i64>().ok())
        };
        let answer = number("status").map(|status| KeptAnswer {
            status: u16::try_from(status).unwrap_or(502),
            headers: item
                .get("headers")
                .and_then(|v| v.as_s().ok())
                .and_then(|json| serde_json::from_str(json).ok())
                .unwrap_or_default(),
            body: item
                .get("body")
                .and_then(|v| v.as_b().ok())
                .map(|blob| blob.as_ref().to_vec()),
        });
        Ok(Some(Record {
            hash: item
                .get("hash")
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default(),
            answer,
            lease_until: number("lease_until").unwrap_or_default(),
            expires_at: number("expires_at").unwrap_or_default(),
        }))
    }
}

/// Keeps the whole chain: an SDK error's own text is only "service error".
fn unavailable<E>(err: E) -> IdempotencyError
where
    aws_sdk_dynamodb::Error: From<E>,
{
    IdempotencyError(junction_telemetry::error_chain(
        &aws_sdk_dynamodb::Error::from(err),
    ))
}

fn conditional_failed<E, R>(err: &aws_sdk_dynamodb::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    err.as_service_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

#[async_trait]
impl ProxyIdempotencyStore for DynamoProxyIdempotencyStore {
    async fn begin(&self, key: &str, hash: &str, now: i64) -> Result<Begin, IdempotencyError> {
        // A record deleted between the failed put and the read: claim again.
        for _ in 0..3 {
            let claimed = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("key", AttributeValue::S(key.to_owned()))
                .item("hash", AttributeValue::S(hash.to_owned()))
                .item(
                    "lease_until",
                    AttributeValue::N((now + IN_FLIGHT_LEASE_SECONDS).to_string()),
                )
                .item(
                    "expires_at",
                    AttributeValue::N((now + IDEMPOTENCY_TTL_SECONDS).to_string()),
                )
                .condition_expression(
                    "attribute_not_exists(#key) OR expires_at < :now \
                     OR (attribute_not_exists(#status) AND lease_until < :now AND #hash = :hash)",
                )
                .expression_attribute_names("#key", "key")
                .expression_attribute_names("#status", "status")
                .expression_attribute_names("#hash", "hash")
                .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
                .expression_attribute_values(":hash", AttributeValue::S(hash.to_owned()))
                .send()
                .await;
            match claimed {
                Ok(_) => return Ok(Begin::Started),
                Err(err) if conditional_failed(&err) => {}
                Err(err) => return Err(unavailable(err)),
            }
            if let Some(found) = judge(self.read(key).await?.as_ref(), hash, now) {
                return Ok(found);
            }
        }
        Err(IdempotencyError(format!("{key}: kept changing")))
    }

    async fn complete(
        &self,
        key: &str,
        hash: &str,
        answer: &KeptAnswer,
        now: i64,
    ) -> Result<(), IdempotencyError> {
        let headers = serde_json::to_string(&answer.headers)
            .map_err(|err| IdempotencyError(err.to_string()))?;
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("key", AttributeValue::S(key.to_owned()))
            .item("hash", AttributeValue::S(hash.to_owned()))
            .item("lease_until", AttributeValue::N(now.to_string()))
            .item(
                "expires_at",
                AttributeValue::N((now + IDEMPOTENCY_TTL_SECONDS).to_string()),
            )
            .item("status", AttributeValue::N(answer.status.to_string()))
            .item("headers", AttributeValue::S(headers))
            .condition_expression("attribute_not_exists(#key) OR #hash = :hash")
            .expression_attribute_names("#key", "key")
            .expression_attribute_names("#hash", "hash")
            .expression_attribute_values(":hash", AttributeValue::S(hash.to_owned()));
        if let Some(body) = &answer.body {
            put = put.item(
                "body",
                AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(body.clone())),
            );
        }
        match put.send().await {
            Ok(_) => Ok(()),
            Err(err) if conditional_failed(&err) => {
                Err(IdempotencyError(format!("{key}: taken by another request")))
            }
            Err(err) => Err(unavailable(err)),
        }
    }

    async fn release(&self, key: &str, hash: &str) -> Result<(), IdempotencyError> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("key", AttributeValue::S(key.to_owned()))
            .condition_expression("#hash = :hash AND attribute_not_exists(#status)")
            .expression_attribute_names("#hash", "hash")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":hash", AttributeValue::S(hash.to_owned()))
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            // Already gone, answered, or another request's: nothing of ours to free.
            Err(err) if conditional_failed(&err) => Ok(()),
            Err(err) => Err(unavailable(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16) -> KeptAnswer {
        KeptAnswer {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Some(br#"{"id":"ch_1"}"#.to_vec()),
        }
    }

    #[tokio::test]
    async fn a_key_runs_once_and_replays_its_answer_for_a_day() {
        let store = InMemoryProxyIdempotencyStore::default();
        assert_eq!(store.begin("c#k", "h1", 1000).await, Ok(Begin::Started));
        assert_eq!(store.begin("c#k", "h1", 1001).await, Ok(Begin::InFlight));
        assert_eq!(store.begin("c#k", "h2", 1001).await, Ok(Begin::Mismatch));
        store
            .complete("c#k", "h1", &answer(201), 1002)
            .await
            .expect("kept");
        assert_eq!(
            store.begin("c#k", "h1", 1003).await,
            Ok(Begin::Replay(answer(201)))
        );
        assert_eq!(store.begin("c#k", "h2", 1003).await, Ok(Begin::Mismatch));
        let later = 1002 + IDEMPOTENCY_TTL_SECONDS + 1;
        assert_eq!(store.begin("c#k", "h2", later).await, Ok(Begin::Started));
    }

    #[tokio::test]
    async fn a_released_or_abandoned_key_runs_again() {
        let store = InMemoryProxyIdempotencyStore::default();
        assert_eq!(store.begin("c#k", "h1", 1000).await, Ok(Begin::Started));
        store.release("c#k", "h1").await.expect("released");
        assert_eq!(store.begin("c#k", "h1", 1001).await, Ok(Begin::Started));
        // Its runner died: the lease runs out, the same request takes the key over, and
        // another request still may not.
        let later = 1001 + IN_FLIGHT_LEASE_SECONDS + 1;
        assert_eq!(store.begin("c#k", "h2", later).await, Ok(Begin::Mismatch));
        assert_eq!(store.begin("c#k", "h1", later).await, Ok(Begin::Started));
        // Releasing another request's key, or an answered one, changes nothing.
        store.release("c#k", "h2").await.expect("no-op");
        assert_eq!(store.begin("c#k", "h1", later).await, Ok(Begin::InFlight));
    }

    #[test]
    fn keys_are_visible_ascii_up_to_255() {
        assert!(valid_key("order-42"));
        assert!(valid_key(&"k".repeat(255)));
        for bad in ["", "with space", "line\nbreak", "é"] {
            assert!(!valid_key(bad), "{bad:?}");
        }
        assert!(!valid_key(&"k".repeat(256)));
    }
}
