//! The DynamoDB adapter of [`DeadLetterNotes`], on the idempotency table: a note is
//! one `PutItem`, the notes of a listing `BatchGetItem`s. Nothing else in this crate's
//! dead-letter code knows the SDK.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use time::OffsetDateTime;

use super::{DeadLetterNote, DeadLetterNotes, KEY_PREFIX, NOTE_TTL, NoteError};

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
