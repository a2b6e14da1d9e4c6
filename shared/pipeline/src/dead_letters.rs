//! Why each dead-lettered message failed, for `junction dlq list`.
//!
//! SQS cannot change a message's attributes, so the reason cannot travel with the
//! message into the dead-letter queue; but the message keeps its id there. The consumer
//! records a small note keyed by the message id when a message fails on its last
//! receive (one write per dead letter, none on ordinary retries), and the CLI reads the
//! notes of the messages it lists. The notes live in the idempotency table under keys
//! that cannot be idempotency keys, and expire with the dead-letter queue's retention.
//! Nothing here depends on the consumer. The notes are kept behind a port
//! ([`DeadLetterNotes`]): DynamoDB ([`DynamoDeadLetterNotes`], in its own module
//! `dynamo`, the only one here that knows the SDK) and memory.

use std::{collections::HashMap, sync::Mutex};

use async_trait::async_trait;
use time::{Duration, OffsetDateTime};

mod dynamo;

pub use dynamo::DynamoDeadLetterNotes;

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
}
