//! Why each dead-lettered message failed, for `junction dlq list`.
//!
//! SQS cannot change a message's attributes, so the reason cannot travel with the
//! message into the dead-letter queue; but the message keeps its id there. The consumer
//! records a small note keyed by the message id when a message fails on its last
//! receive (one write per dead letter, none on ordinary retries), and the CLI reads the
//! notes of the messages it lists. The notes live in the idempotency table under keys
//! that cannot be idempotency keys, and expire with the dead-letter queue's retention.
//! Nothing here depends on the consumer.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use time::{Duration, OffsetDateTime};

/// How long a note lives: the ingest dead-letter queue's `MessageRetentionPeriod`
/// (14 days in template.yaml), after which its message is gone too.
pub const NOTE_TTL: Duration = Duration::days(14);

/// The longest detail stored (bytes): the note stays one write unit.
pub const MAX_DETAIL_BYTES: usize = 500;

/// The prefix of a note's key. An idempotency key starts with a catalog provider id
/// (lowercase letters, digits and `-`, never `_`) and `#`, or with `sha256:`: never
/// with `dead_letter#`, so a note can never overwrite or be read as a claim.
pub const KEY_PREFIX: &str = "dead_letter#";

/// Why a message went to the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterNote {
    /// The consumer's reason code (`invalid_json`, `store_unavailable`, ...).
    pub reason: String,
    /// The specific cause, when the consumer knows one (never a secret or payload
    /// value), at most [`MAX_DETAIL_BYTES`].
    pub detail: Option<String>,
    /// The receive that failed (the queue's `maxReceiveCount`).
    pub attempt: u32,
    /// When it failed.
    pub at: OffsetDateTime,
}

impl DeadLetterNote {
    pub fn new(
        reason: impl Into<String>,
        detail: Option<&str>,
        attempt: u32,
        at: OffsetDateTime,
    ) -> Self {
        DeadLetterNote {
            reason: reason.into(),
            detail: detail.map(|detail| truncate(detail, MAX_DETAIL_BYTES).to_owned()),
            attempt,
            at,
        }
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A note store failed.
#[derive(Debug, thiserror::Error)]
#[error("dead-letter note store failed")]
pub struct NoteError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Where dead-letter notes are kept.
#[async_trait]
pub trait DeadLetterNotes: Send + Sync + std::fmt::Debug {
    /// Stores the note of `message_id` (replacing any earlier one).
    async fn record(&self, message_id: &str, note: &DeadLetterNote) -> Result<(), NoteError>;

    /// The notes of those of `message_ids` that have one.
    async fn read(
        &self,
        message_ids: &[String],
    ) -> Result<HashMap<String, DeadLetterNote>, NoteError>;
}

/// Notes in memory (tests).
#[derive(Debug, Default)]
pub struct InMemoryDeadLetterNotes {
    notes: Mutex<HashMap<String, DeadLetterNote>>,
}

#[async_trait]
impl DeadLetterNotes for InMemoryDeadLetterNotes {
    async fn record(&self, message_id: &str, note: &DeadLetterNote) -> Result<(), NoteError> {
        self.notes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(message_id.to_owned(), note.clone());
        Ok(())
    }

    async fn read(
        &self,
        message_ids: &[String],
    ) -> Result<HashMap<String, DeadLetterNote>, NoteError> {
        let notes = self
            .notes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(message_ids
            .iter()
            .filter_map(|id| notes.get(id).map(|note| (id.clone(), note.clone())))
            .collect())
    }
}

/// DynamoDB, on the idempotency table: one item per note, `pk` = [`KEY_PREFIX`] +
/// message id, `reason`, `detail`, `attempt`, `at` and `expires_at` (epoch seconds; the
/// table's TTL attribute, [`NOTE_TTL`] after `at`).
#[derive(Debug, Clone)]
pub struct DynamoDeadLetterNotes {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

/// `BatchGetItem`'s limit of keys per request.
const BATCH_GET_KEYS: usize = 100;

/// Rounds of `BatchGetItem` for the keys DynamoDB left unprocessed.
const BATCH_GET_ROUNDS: usize = 5;

impl DynamoDeadLetterNotes {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoDeadLetterNotes {
            client,
            table: table.into(),
        }
    }

    pub fn from_config(aws: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        DynamoDeadLetterNotes::new(aws_sdk_dynamodb::Client::new(aws), table)
    }
}

fn key(message_id: &str) -> AttributeValue {
    AttributeValue::S(format!("{KEY_PREFIX}{message_id}"))
}

fn note_item(message_id: &str, note: &DeadLetterNote) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        ("pk".to_owned(), key(message_id)),
        ("reason".to_owned(), AttributeValue::S(note.reason.clone())),
        (
            "attempt".to_owned(),
            AttributeValue::N(note.attempt.to_string()),
        ),
        (
            "at".to_owned(),
            AttributeValue::N(note.at.unix_timestamp().to_string()),
        ),
        (
            "expires_at".to_owned(),
            AttributeValue::N((note.at + NOTE_TTL).unix_timestamp().to_string()),
        ),
    ]);
    if let Some(detail) = &note.detail {
        item.insert("detail".to_owned(), AttributeValue::S(detail.clone()));
    }
    item
}

/// A note as DynamoDB returns it, with its message id; `None` for an item that is not one.
fn parse_note(item: &HashMap<String, AttributeValue>) -> Option<(String, DeadLetterNote)> {
    let message_id = item.get("pk")?.as_s().ok()?.strip_prefix(KEY_PREFIX)?;
    let number = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<i64>().ok())
    };
    Some((
        message_id.to_owned(),
        DeadLetterNote {
            reason: item.get("reason")?.as_s().ok()?.clone(),
            detail: item.get("detail").and_then(|v| v.as_s().ok()).cloned(),
            attempt: number("attempt")
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or_default(),
            at: number("at")
                .and_then(|n| OffsetDateTime::from_unix_timestamp(n).ok())
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        },
    ))
}

#[async_trait]
impl DeadLetterNotes for DynamoDeadLetterNotes {
    async fn record(&self, message_id: &str, note: &DeadLetterNote) -> Result<(), NoteError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(note_item(message_id, note)))
            .send()
            .await
            .map_err(|err| NoteError(Box::new(aws_sdk_dynamodb::Error::from(err))))?;
        Ok(())
    }

    async fn read(
        &self,
        message_ids: &[String],
    ) -> Result<HashMap<String, DeadLetterNote>, NoteError> {
        let unique: Vec<&String> = {
            let mut seen = HashSet::new();
            message_ids.iter().filter(|id| seen.insert(*id)).collect()
        };
        let mut notes = HashMap::new();
        for chunk in unique.chunks(BATCH_GET_KEYS) {
            let mut keys: Vec<HashMap<String, AttributeValue>> = chunk
                .iter()
                .map(|id| HashMap::from([("pk".to_owned(), key(id))]))
                .collect();
            for _ in 0..BATCH_GET_ROUNDS {
                if keys.is_empty() {
                    break;
                }
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut keys)))
                    .build()
                    .map_err(|err| NoteError(Box::new(err)))?;
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|err| NoteError(Box::new(aws_sdk_dynamodb::Error::from(err))))?;
                if let Some(items) = output.responses.as_ref().and_then(|r| r.get(&self.table)) {
                    notes.extend(items.iter().filter_map(parse_note));
                }
                keys = output
                    .unprocessed_keys
                    .and_then(|mut left| left.remove(&self.table))
                    .map(|left| left.keys)
                    .unwrap_or_default();
            }
        }
        Ok(notes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_detail_is_cut_on_a_character_boundary() {
        let detail = "é".repeat(400); // 800 bytes
        let note = DeadLetterNote::new("r", Some(&detail), 5, OffsetDateTime::UNIX_EPOCH);
        let kept = note.detail.unwrap_or_default();
        assert_eq!(kept.len(), MAX_DETAIL_BYTES);
        assert!(detail.starts_with(&kept));
    }

    #[test]
    fn a_note_item_reads_back_and_expires_with_the_dlq() {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let note = DeadLetterNote::new("invalid_json", Some("line 1"), 5, at);
        let item = note_item("m-1", &note);
        assert_eq!(
            item.get("expires_at").and_then(|v| v.as_n().ok()).cloned(),
            Some((1_700_000_000 + 14 * 86_400).to_string())
        );
        assert_eq!(parse_note(&item), Some(("m-1".to_owned(), note)));
    }
}
