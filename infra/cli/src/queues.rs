//! The stack's queues: their depths, their dead-letter queues, and redriving those.
//!
//! Queues are found by name: the template names them `<stack>-…` and CloudFormation
//! names unnamed ones `<stack>-<LogicalId>-<suffix>`, so `ListQueues` with the stack's
//! name as prefix finds them in AWS and in the emulator alike, without another SDK. A
//! queue is a dead-letter queue when another queue's `RedrivePolicy` targets it; that
//! queue is where its messages go back to.
//!
//! Redrive never loses or duplicates a message on purpose: in the copy path (the
//! emulator has no `StartMessageMoveTask`) each message is sent to the source queue
//! first and deleted from the DLQ only after the send succeeded. If that delete fails
//! the message is reported, because it is then in both queues (consumers deduplicate on
//! the provider's event id, so a second delivery is harmless, but it is said out loud).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use junction_pipeline::dead_letters::{DeadLetterNotes, NoteError};

use crate::stack::NamedResource;

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, Message, MessageSystemAttributeName,
    QueueAttributeName,
};

/// Why a queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("SQS: {0}")]
    Sqs(#[from] Box<aws_sdk_sqs::Error>),
    #[error("no queues named {prefix}* (is the stack name right?)")]
    NoQueues { prefix: String },
    #[error("the stack has no dead-letter queue named {0}")]
    UnknownDeadLetterQueue(String),
    #[error("the stack has no dead-letter queue")]
    NoDeadLetterQueue,
    #[error("the stack has {0} dead-letter queues; name one with --queue")]
    AmbiguousDeadLetterQueue(usize),
    #[error("no queue's RedrivePolicy targets {0}, so there is nowhere to redrive to")]
    NoSource(String),
    #[error("redrive stopped after moving {moved}: sending message {message_id} failed: {source}")]
    SendFailed {
        moved: usize,
        message_id: String,
        #[source]
        source: Box<aws_sdk_sqs::Error>,
    },
    #[error("the message move task {handle} failed: {reason}")]
    MoveTaskFailed { handle: String, reason: String },
    #[error(
        "moved {moved}, but {} message(s) were re-sent and could not be deleted from the DLQ \
         (they are now in both queues): {}",
        undeleted.len(),
        undeleted.join(", ")
    )]
    NotDeleted {
        moved: usize,
        undeleted: Vec<String>,
    },
}

fn sqs_error<E>(
    err: aws_sdk_sqs::error::SdkError<E, aws_sdk_sqs::config::http::HttpResponse>,
) -> Box<aws_sdk_sqs::Error>
where
    aws_sdk_sqs::Error:
        From<aws_sdk_sqs::error::SdkError<E, aws_sdk_sqs::config::http::HttpResponse>>,
{
    Box::new(aws_sdk_sqs::Error::from(err))
}

/// Up to `wanted` (at most 10) messages with every attribute, hidden for `visibility` s.
async fn receive(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    wanted: usize,
    visibility: i32,
) -> Result<Vec<Message>, QueueError> {
    let output = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(i32::try_from(wanted.min(10)).unwrap_or(10))
        .visibility_timeout(visibility)
        .wait_time_seconds(1)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .map_err(sqs_error)?;
    Ok(output.messages.unwrap_or_default())
}

/// One queue of the stack.
#[derive(Debug, Clone)]
pub struct Queue {
    pub name: String,
    pub url: String,
    pub arn: String,
    pub attributes: BTreeMap<String, String>,
    /// The dead-letter queue's ARN and `maxReceiveCount`, when it has a redrive policy.
    pub redrive: Option<(String, u64)>,
}

impl Queue {
    fn count(&self, attribute: &str) -> u64 {
        self.attributes
            .get(attribute)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Messages waiting.
    pub fn visible(&self) -> u64 {
        self.count("ApproximateNumberOfMessages")
    }

    /// Messages received and not yet deleted.
    pub fn in_flight(&self) -> u64 {
        self.count("ApproximateNumberOfMessagesNotVisible")
    }

    /// Messages not yet delivered because of a delay.
    pub fn delayed(&self) -> u64 {
        self.count("ApproximateNumberOfMessagesDelayed")
    }

    fn is_fifo(&self) -> bool {
        self.name.ends_with(".fifo")
    }
}

/// The queues of one stack.
#[derive(Debug, Clone)]
pub struct StackQueues {
    pub queues: Vec<Queue>,
}

impl StackQueues {
    /// Finds the queues named `<stack_name>-…` and reads their attributes.
    pub async fn discover(
        sqs: &aws_sdk_sqs::Client,
        stack_name: &str,
    ) -> Result<StackQueues, QueueError> {
        let prefix = format!("{stack_name}-");
        let mut urls = Vec::new();
        let mut token = None;
        loop {
            let output = sqs
                .list_queues()
                .queue_name_prefix(&prefix)
                .set_next_token(token)
                .send()
                .await
                .map_err(sqs_error)?;
            urls.extend(output.queue_urls.unwrap_or_default());
            token = output.next_token;
            if token.is_none() {
                break;
            }
        }
        // The queue `junction events` subscribes to the bus is the CLI's, not the stack's.
        let tap = crate::events::tap_queue_name(stack_name);
        urls.retain(|url| url.rsplit('/').next() != Some(tap.as_str()));
        if urls.is_empty() {
            return Err(QueueError::NoQueues { prefix });
        }
        let mut queues = Vec::new();
        for url in urls {
            let output = sqs
                .get_queue_attributes()
                .queue_url(&url)
                .attribute_names(QueueAttributeName::All)
                .send()
                .await
                .map_err(sqs_error)?;
            let attributes: BTreeMap<String, String> = output
                .attributes
                .unwrap_or_default()
                .into_iter()
                .map(|(name, value)| (name.as_str().to_owned(), value))
                .collect();
            let redrive = attributes
                .get("RedrivePolicy")
                .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok())
                .and_then(|policy| {
                    let arn = policy["deadLetterTargetArn"].as_str()?.to_owned();
                    let max = match &policy["maxReceiveCount"] {
                        serde_json::Value::Number(n) => n.as_u64(),
                        serde_json::Value::String(s) => s.parse().ok(),
                        _ => None,
                    }
                    .unwrap_or_default();
                    Some((arn, max))
                });
            let name = url.rsplit('/').next().unwrap_or_default().to_owned();
            queues.push(Queue {
                arn: attributes.get("QueueArn").cloned().unwrap_or_default(),
                name,
                url,
                attributes,
                redrive,
            });
        }
        queues.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(StackQueues { queues })
    }

    /// True when some queue's redrive policy targets `queue`.
    pub fn is_dead_letter_queue(&self, queue: &Queue) -> bool {
        self.queues
            .iter()
            .any(|q| q.redrive.as_ref().is_some_and(|(arn, _)| *arn == queue.arn))
    }

    /// The dead-letter queues.
    pub fn dead_letter_queues(&self) -> Vec<&Queue> {
        self.queues
            .iter()
            .filter(|q| self.is_dead_letter_queue(q))
            .collect()
    }

    /// The queues whose redrive policy targets `dlq`.
    pub fn sources_of(&self, dlq: &Queue) -> Vec<&Queue> {
        self.queues
            .iter()
            .filter(|q| q.redrive.as_ref().is_some_and(|(arn, _)| *arn == dlq.arn))
            .collect()
    }

    /// The dead-letter queue named (or, with `None`, the only one).
    pub fn dead_letter_queue(&self, name: Option<&str>) -> Result<&Queue, QueueError> {
        let dlqs = self.dead_letter_queues();
        match name {
            Some(name) => dlqs
                .into_iter()
                .find(|q| q.name == name || q.name.ends_with(&format!("-{name}")))
                .ok_or_else(|| QueueError::UnknownDeadLetterQueue(name.to_owned())),
            None => match dlqs.as_slice() {
                [] => Err(QueueError::NoDeadLetterQueue),
                [only] => Ok(only),
                many => Err(QueueError::AmbiguousDeadLetterQueue(many.len())),
            },
        }
    }

    /// The queues the stack should have and lacks: those of `expected` (the template's,
    /// [`crate::stack::expected_queues`]) not found, and dead-letter queues a found
    /// queue's redrive policy targets that are gone (its failing messages have nowhere to
    /// go).
    pub fn missing(&self, stack: &str, expected: &[NamedResource]) -> Vec<MissingQueue> {
        let mut missing: Vec<MissingQueue> = expected
            .iter()
            .map(|resource| (resource.name_in(stack), resource))
            .filter(|(name, _)| !self.queues.iter().any(|q| q.name == *name))
            .map(|(name, resource)| MissingQueue {
                name,
                why: format!("the template's {}", resource.logical_id),
            })
            .collect();
        for queue in &self.queues {
            let Some((arn, _)) = &queue.redrive else {
                continue;
            };
            if self.queues.iter().any(|q| q.arn == *arn) {
                continue;
            }
            let name = arn.rsplit(':').next().unwrap_or(arn).to_owned();
            let why = format!("the dead-letter queue of {}", queue.name);
            match missing.iter_mut().find(|m| m.name == name) {
                Some(known) => known.why = format!("{}, {why}", known.why),
                None => missing.push(MissingQueue { name, why }),
            }
        }
        missing
    }

    /// A fixed-width table of every queue's depth.
    pub fn status_table(&self) -> String {
        self.status_table_with_missing(&[])
    }

    /// [`StackQueues::status_table`] with a `MISSING` row for each of `missing`.
    pub fn status_table_with_missing(&self, missing: &[MissingQueue]) -> String {
        let mut out = format!(
            "{:<44} {:>8} {:>9} {:>8}  {}\n",
            "queue", "visible", "in flight", "delayed", "role"
        );
        for queue in &self.queues {
            let role = if self.is_dead_letter_queue(queue) {
                let sources: Vec<&str> = self
                    .sources_of(queue)
                    .iter()
                    .map(|q| q.name.as_str())
                    .collect();
                format!("DLQ of {}", sources.join(", "))
            } else if let Some((arn, max)) = &queue.redrive {
                let dlq = self
                    .queues
                    .iter()
                    .find(|q| q.arn == *arn)
                    .map_or(arn.as_str(), |q| q.name.as_str());
                format!("→ {dlq} after {max} receives")
            } else {
                String::new()
            };
            out.push_str(&format!(
                "{:<44} {:>8} {:>9} {:>8}  {role}\n",
                queue.name,
                queue.visible(),
                queue.in_flight(),
                queue.delayed()
            ));
        }
        for queue in missing {
            out.push_str(&format!(
                "{:<44} {:>8} {:>9} {:>8}  MISSING ({})\n",
                queue.name, "-", "-", "-", queue.why
            ));
        }
        out
    }
}

/// A queue [`StackQueues::missing`] did not find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingQueue {
    pub name: String,
    /// Why the stack should have it: `the template's PollDeadLetterQueue`, `the
    /// dead-letter queue of junction-poll`.
    pub why: String,
}

/// A message seen in a dead-letter queue.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub message_id: String,
    pub receive_count: u64,
    /// `SentTimestamp` (ms since the epoch), when the service reports it.
    pub sent_at_ms: Option<i64>,
    /// An error recorded on the message, when one is (`first_error`, `error`, or
    /// Lambda's `ErrorMessage`/`ErrorCode` attributes).
    pub first_error: Option<String>,
    /// The `provider` and `event_id` attributes the ingress sets, when present.
    pub provider: Option<String>,
    pub event_id: Option<String>,
    pub body_bytes: usize,
    /// Why the consumer gave up on it (its last receive's reason code, and the cause
    /// when known), from the note it left under the message id
    /// ([`with_reasons`]); `None` when there is no note (dead-lettered before notes
    /// existed, or the note's write failed).
    pub reason: Option<String>,
}

/// Fills each letter's [`DeadLetter::reason`] from the notes the consumer left
/// (`junction_pipeline::dead_letters`), read in one batch.
pub async fn with_reasons(
    letters: &mut [DeadLetter],
    notes: &dyn DeadLetterNotes,
) -> Result<(), NoteError> {
    let ids: Vec<String> = letters.iter().map(|l| l.message_id.clone()).collect();
    let found = notes.read(&ids).await?;
    for letter in letters {
        letter.reason = found
            .get(&letter.message_id)
            .map(|note| match &note.detail {
                Some(detail) => format!("{}: {detail}", note.reason),
                None => note.reason.clone(),
            });
    }
    Ok(())
}

const ERROR_ATTRIBUTES: [&str; 4] = ["first_error", "error", "ErrorMessage", "ErrorCode"];

fn string_attribute(message: &Message, name: &str) -> Option<String> {
    message
        .message_attributes
        .as_ref()?
        .get(name)?
        .string_value
        .clone()
}

fn system_attribute(message: &Message, name: MessageSystemAttributeName) -> Option<String> {
    message.attributes.as_ref()?.get(&name).cloned()
}

impl DeadLetter {
    fn from_message(message: &Message) -> DeadLetter {
        DeadLetter {
            message_id: message.message_id.clone().unwrap_or_default(),
            receive_count: system_attribute(
                message,
                MessageSystemAttributeName::ApproximateReceiveCount,
            )
            .and_then(|v| v.parse().ok())
            .unwrap_or_default(),
            sent_at_ms: system_attribute(message, MessageSystemAttributeName::SentTimestamp)
                .and_then(|v| v.parse().ok()),
            first_error: ERROR_ATTRIBUTES
                .iter()
                .find_map(|name| string_attribute(message, name)),
            provider: string_attribute(message, "provider"),
            event_id: string_attribute(message, "event_id"),
            body_bytes: message.body.as_ref().map_or(0, String::len),
            reason: None,
        }
    }
}

/// How long listed messages stay hidden while the listing collects them.
const PEEK_VISIBILITY_SECONDS: i32 = 30;

/// Lists up to `max` messages of `dlq` without consuming them: they are received (as
/// the SQS console's "poll for messages" does, which counts as a receive) and made
/// visible again right away.
pub async fn list_dead_letters(
    sqs: &aws_sdk_sqs::Client,
    dlq: &Queue,
    max: usize,
) -> Result<Vec<DeadLetter>, QueueError> {
    let mut seen: BTreeMap<String, (DeadLetter, String)> = BTreeMap::new();
    while seen.len() < max {
        let messages = receive(sqs, &dlq.url, max - seen.len(), PEEK_VISIBILITY_SECONDS).await?;
        if messages.is_empty() {
            break;
        }
        for message in &messages {
            let letter = DeadLetter::from_message(message);
            let receipt = message.receipt_handle.clone().unwrap_or_default();
            seen.insert(letter.message_id.clone(), (letter, receipt));
        }
    }
    let receipts: Vec<String> = seen.values().map(|(_, receipt)| receipt.clone()).collect();
    release(sqs, &dlq.url, &receipts).await;
    Ok(seen.into_values().map(|(letter, _)| letter).collect())
}

/// Makes received messages visible again (best effort: they reappear after their
/// visibility timeout anyway).
async fn release(sqs: &aws_sdk_sqs::Client, queue_url: &str, receipts: &[String]) {
    for chunk in receipts.chunks(10) {
        let entries: Vec<ChangeMessageVisibilityBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .filter_map(|(index, receipt)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(receipt)
                    .visibility_timeout(0)
                    .build()
                    .ok()
            })
            .collect();
        let _ = sqs
            .change_message_visibility_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await;
    }
}

/// How a redrive moves messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedriveMethod {
    /// SQS's own `StartMessageMoveTask` (real SQS; moves everything, to each message's
    /// original source queue).
    MoveTask,
    /// Receive → send to the source → delete, one message at a time (the emulator, or
    /// when a maximum is given).
    Copy,
}

/// What a redrive did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedriveReport {
    pub method: RedriveMethod,
    pub moved: usize,
    /// Copy method: messages left in the DLQ because they were sent after the redrive
    /// started (among them copies this redrive sent that failed again), so a message that
    /// keeps failing is moved once, not forever.
    pub left: usize,
    /// For a move task, its handle.
    pub task_handle: Option<String>,
}

/// How long a message stays hidden in the DLQ while it is being re-sent.
const REDRIVE_VISIBILITY_SECONDS: i32 = 120;

/// Moves up to `max` messages (all with `None`) from `dlq` back to its source queue.
pub async fn redrive(
    sqs: &aws_sdk_sqs::Client,
    queues: &StackQueues,
    dlq: &Queue,
    max: Option<usize>,
    method: RedriveMethod,
) -> Result<RedriveReport, QueueError> {
    let sources = queues.sources_of(dlq);
    let Some(default_source) = sources.first() else {
        return Err(QueueError::NoSource(dlq.name.clone()));
    };
    if method == RedriveMethod::MoveTask {
        return move_task(sqs, dlq).await;
    }
    let limit = max.unwrap_or(usize::MAX);
    // As StartMessageMoveTask does, move what was in the DLQ when the redrive started,
    // each message at most once, then stop. A copy this redrive sends is a new message
    // (sent now); if it fails again it reaches the DLQ with that later SentTimestamp and
    // stays there, instead of going round until someone kills the command.
    let started_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut left_receipts: Vec<String> = Vec::new();
    let mut moved = 0;
    let mut undeleted = Vec::new();
    'receiving: while moved < limit {
        let messages = receive(sqs, &dlq.url, limit - moved, REDRIVE_VISIBILITY_SECONDS).await?;
        let fresh: Vec<&Message> = messages
            .iter()
            .filter(|m| seen.insert(m.message_id.clone().unwrap_or_default()))
            .collect();
        if fresh.is_empty() {
            break;
        }
        for (index, message) in fresh.iter().enumerate() {
            let sent_ms = system_attribute(message, MessageSystemAttributeName::SentTimestamp)
                .and_then(|ms| ms.parse::<i128>().ok());
            if sent_ms.is_none_or(|sent| sent >= started_ms) {
                left_receipts.extend(message.receipt_handle.clone());
                continue;
            }
            // Real SQS records where a dead letter came from; prefer that queue.
            let source = system_attribute(
                message,
                MessageSystemAttributeName::DeadLetterQueueSourceArn,
            )
            .and_then(|arn| sources.iter().find(|q| q.arn == arn))
            .unwrap_or(default_source);
            let message_id = message.message_id.clone().unwrap_or_default();
            if let Err(source_err) = resend(sqs, source, message).await {
                let unsent: Vec<String> = fresh[index..]
                    .iter()
                    .filter_map(|m| m.receipt_handle.clone())
                    .chain(left_receipts.drain(..))
                    .collect();
                release(sqs, &dlq.url, &unsent).await;
                return Err(QueueError::SendFailed {
                    moved,
                    message_id,
                    source: source_err,
                });
            }
            if !delete_with_retries(sqs, &dlq.url, message).await {
                undeleted.push(message_id);
            }
            moved += 1;
            if moved >= limit {
                left_receipts.extend(
                    fresh[index + 1..]
                        .iter()
                        .filter_map(|m| m.receipt_handle.clone()),
                );
                break 'receiving;
            }
        }
    }
    let left = left_receipts.len();
    release(sqs, &dlq.url, &left_receipts).await;
    if !undeleted.is_empty() {
        return Err(QueueError::NotDeleted { moved, undeleted });
    }
    Ok(RedriveReport {
        method: RedriveMethod::Copy,
        moved,
        left,
        task_handle: None,
    })
}

/// Sends a copy of `message` (body and attributes) to `queue`.
async fn resend(
    sqs: &aws_sdk_sqs::Client,
    queue: &Queue,
    message: &Message,
) -> Result<(), Box<aws_sdk_sqs::Error>> {
    let mut request = sqs
        .send_message()
        .queue_url(&queue.url)
        .message_body(message.body.clone().unwrap_or_default())
        .set_message_attributes(message.message_attributes.clone());
    if queue.is_fifo() {
        let group = system_attribute(message, MessageSystemAttributeName::MessageGroupId)
            .unwrap_or_else(|| "redrive".to_owned());
        request = request
            .message_group_id(group)
            .message_deduplication_id(message.message_id.clone().unwrap_or_default());
    }
    request.send().await.map(|_| ()).map_err(sqs_error)
}

async fn delete_with_retries(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    message: &Message,
) -> bool {
    let Some(receipt) = &message.receipt_handle else {
        return false;
    };
    for attempt in 0..3u32 {
        if sqs
            .delete_message()
            .queue_url(queue_url)
            .receipt_handle(receipt)
            .send()
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await;
    }
    false
}

async fn move_task(sqs: &aws_sdk_sqs::Client, dlq: &Queue) -> Result<RedriveReport, QueueError> {
    let started = sqs
        .start_message_move_task()
        .source_arn(&dlq.arn)
        .send()
        .await
        .map_err(sqs_error)?;
    let handle = started.task_handle.unwrap_or_default();
    // The task runs in SQS; follow it until it ends.
    loop {
        let tasks = sqs
            .list_message_move_tasks()
            .source_arn(&dlq.arn)
            .max_results(1)
            .send()
            .await
            .map_err(sqs_error)?;
        let Some(task) = tasks.results.unwrap_or_default().into_iter().next() else {
            break;
        };
        let status = task.status.unwrap_or_default();
        let moved = usize::try_from(task.approximate_number_of_messages_moved).unwrap_or(0);
        if status == "FAILED" {
            return Err(QueueError::MoveTaskFailed {
                handle,
                reason: task.failure_reason.unwrap_or_default(),
            });
        }
        if status != "RUNNING" {
            return Ok(RedriveReport {
                method: RedriveMethod::MoveTask,
                moved,
                left: 0,
                task_handle: Some(handle),
            });
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(RedriveReport {
        method: RedriveMethod::MoveTask,
        moved: 0,
        left: 0,
        task_handle: Some(handle),
    })
}

#[cfg(test)]
mod tests {
    use junction_pipeline::dead_letters::{DeadLetterNote, InMemoryDeadLetterNotes};
    use time::OffsetDateTime;

    use super::*;

    fn letter(id: &str) -> DeadLetter {
        DeadLetter {
            message_id: id.to_owned(),
            receive_count: 5,
            sent_at_ms: None,
            first_error: None,
            provider: Some("stripe".to_owned()),
            event_id: Some("evt_1".to_owned()),
            body_bytes: 10,
            reason: None,
        }
    }

    #[tokio::test]
    async fn a_listed_letter_shows_the_reason_its_note_gives_and_none_without_one() {
        let notes = InMemoryDeadLetterNotes::default();
        let at = OffsetDateTime::UNIX_EPOCH;
        notes
            .record(
                "m1",
                &DeadLetterNote::new("unmappable", Some("missing field `id`"), 5, at),
            )
            .await
            .expect("noted");
        notes
            .record("m2", &DeadLetterNote::new("invalid_json", None, 5, at))
            .await
            .expect("noted");
        let mut letters = vec![letter("m1"), letter("m2"), letter("m3")];
        with_reasons(&mut letters, &notes).await.expect("read");
        let reasons: Vec<Option<&str>> = letters.iter().map(|l| l.reason.as_deref()).collect();
        assert_eq!(
            reasons,
            vec![
                Some("unmappable: missing field `id`"),
                Some("invalid_json"),
                None
            ]
        );
    }

    fn queue(name: &str, redrive_to: Option<&str>) -> Queue {
        let arn = |name: &str| format!("arn:aws:sqs:us-east-1:123456789012:{name}");
        Queue {
            name: name.to_owned(),
            url: format!("https://sqs.us-east-1.amazonaws.com/123456789012/{name}"),
            arn: arn(name),
            attributes: BTreeMap::new(),
            redrive: redrive_to.map(|dlq| (arn(dlq), 5)),
        }
    }

    /// `status` used to leave a missing queue out of its table without a word.
    #[test]
    fn a_missing_queue_gets_a_row_and_a_reason() {
        let queues = StackQueues {
            queues: vec![
                queue("s-actions", Some("s-actions-dlq")),
                queue("s-actions-dlq", None),
                queue("s-ingest", Some("s-ingest-dlq")),
                queue("s-ingest-dlq", None),
                queue("s-poll", Some("s-poll-dlq")),
            ],
        };
        let expected = crate::stack::expected_queues();
        let missing = queues.missing("s", &expected);
        assert_eq!(
            missing,
            [MissingQueue {
                name: "s-poll-dlq".into(),
                why: "the template's PollDeadLetterQueue, the dead-letter queue of s-poll".into(),
            }]
        );
        let table = queues.status_table_with_missing(&missing);
        let last = table.lines().last().unwrap_or_default();
        assert!(last.starts_with("s-poll-dlq "), "{table}");
        assert!(
            last.contains("MISSING (the template's PollDeadLetterQueue"),
            "{table}"
        );

        let complete = StackQueues {
            queues: [queues.queues.clone(), vec![queue("s-poll-dlq", None)]].concat(),
        };
        assert_eq!(complete.missing("s", &expected), []);
        assert!(!complete.status_table().contains("MISSING"));
    }
}
