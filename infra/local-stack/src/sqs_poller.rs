//! SQS event source mappings, polled the way Lambda polls them.
//!
//! Each mapping of the template long-polls its queue, gathers up to `BatchSize`
//! messages within `MaximumBatchingWindowInSeconds`, invokes the function with the
//! [SQS event](https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html) and deletes
//! what succeeded. With `ReportBatchItemFailures` only the items the function names in
//! `batchItemFailures` stay; a function error (or an unusable failure report) keeps the
//! whole batch. Kept messages are left alone: they reappear after the queue's
//! visibility timeout and, after `maxReceiveCount` receives, the queue's redrive policy
//! moves them to the dead-letter queue, exactly as in AWS.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use serde_json::{Value, json};
use tokio::sync::{Mutex, watch};

use crate::runtime::{FunctionRuntime, InvokeError};

/// How long one receive call waits for messages (SQS long polling, at most 20 s).
const LONG_POLL_SECONDS: i32 = 2;

/// One mapping, ready to poll.
#[derive(Debug, Clone)]
pub struct MappingSpec {
    /// The queue's logical id (for logs).
    pub queue: String,
    pub queue_url: String,
    pub queue_arn: String,
    pub region: String,
    pub batch_size: usize,
    pub batching_window: Duration,
    pub report_batch_item_failures: bool,
}

/// A running mapping. Disabling waits for the batch in progress to finish, so once
/// [`Mapping::set_enabled`] returns `false` nothing more is received.
#[derive(Debug, Clone)]
pub struct Mapping {
    spec: Arc<MappingSpec>,
    function: FunctionRuntime,
    enabled: watch::Sender<bool>,
    /// Held while a batch is received and processed.
    cycle: Arc<Mutex<()>>,
}

/// What happened to one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    pub received: usize,
    pub deleted: usize,
    /// Message ids left on the queue.
    pub failed: Vec<String>,
}

impl Mapping {
    /// Starts polling in the background until `shutdown` becomes true.
    pub fn start(
        spec: MappingSpec,
        function: FunctionRuntime,
        sqs: aws_sdk_sqs::Client,
        enabled: bool,
        shutdown: watch::Receiver<bool>,
    ) -> (Mapping, tokio::task::JoinHandle<()>) {
        let (enabled_tx, enabled_rx) = watch::channel(enabled);
        let mapping = Mapping {
            spec: Arc::new(spec),
            function,
            enabled: enabled_tx,
            cycle: Arc::new(Mutex::new(())),
        };
        let task = tokio::spawn(mapping.clone().poll(sqs, enabled_rx, shutdown));
        (mapping, task)
    }

    /// The function's logical id.
    pub fn function(&self) -> &str {
        self.function.logical_id()
    }

    /// The queue's logical id.
    pub fn queue(&self) -> &str {
        &self.spec.queue
    }

    /// Whether the mapping is polling.
    pub fn is_enabled(&self) -> bool {
        *self.enabled.borrow()
    }

    /// Enables or disables polling (Lambda's `UpdateEventSourceMapping --enabled`).
    /// Returns once a batch in progress has finished.
    pub async fn set_enabled(&self, enabled: bool) {
        self.enabled.send_replace(enabled);
        let _cycle = self.cycle.lock().await;
    }

    async fn poll(
        self,
        sqs: aws_sdk_sqs::Client,
        mut enabled: watch::Receiver<bool>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let name = self.function.logical_id().to_owned();
        loop {
            if *shutdown.borrow() {
                return;
            }
            if !*enabled.borrow_and_update() {
                tokio::select! {
                    _ = enabled.changed() => continue,
                    _ = shutdown.changed() => continue,
                }
            }
            let cycle = self.cycle.clone();
            let held = cycle.lock().await;
            if !*enabled.borrow() {
                continue;
            }
            let batch = tokio::select! {
                batch = self.receive_batch(&sqs) => batch,
                _ = shutdown.changed() => return,
            };
            match batch {
                Ok(messages) if messages.is_empty() => {}
                Ok(messages) => {
                    let outcome = self.process(&sqs, messages).await;
                    if !outcome.failed.is_empty() {
                        println!(
                            "[local-stack] {name} ← {}: {} of {} message(s) left for retry (visibility timeout, then DLQ)",
                            self.spec.queue,
                            outcome.failed.len(),
                            outcome.received
                        );
                    }
                }
                Err(err) => {
                    eprintln!("[local-stack] polling {} failed: {err}", self.spec.queue);
                    drop(held);
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    }

    /// Up to `batch_size` messages: the first receive long-polls; later ones only run
    /// while the batching window is open.
    async fn receive_batch(
        &self,
        sqs: &aws_sdk_sqs::Client,
    ) -> Result<Vec<Message>, aws_sdk_sqs::Error> {
        let spec = &self.spec;
        let mut batch: Vec<Message> = Vec::new();
        let mut window_closes = None;
        loop {
            let want = (spec.batch_size - batch.len()).min(10);
            let wait = match window_closes {
                None => LONG_POLL_SECONDS,
                Some(closes) => {
                    let left = tokio::time::Instant::now();
                    if left >= closes {
                        break;
                    }
                    i32::try_from((closes - left).as_secs())
                        .unwrap_or(0)
                        .min(20)
                }
            };
            let output = sqs
                .receive_message()
                .queue_url(&spec.queue_url)
                .max_number_of_messages(i32::try_from(want).unwrap_or(10))
                .wait_time_seconds(wait)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .map_err(aws_sdk_sqs::Error::from)?;
            let received = output.messages.unwrap_or_default();
            let got_none = received.is_empty();
            batch.extend(received);
            if batch.is_empty() {
                return Ok(batch);
            }
            if batch.len() >= spec.batch_size || spec.batching_window.is_zero() {
                break;
            }
            if window_closes.is_none() {
                window_closes = Some(tokio::time::Instant::now() + spec.batching_window);
            } else if got_none && wait == 0 {
                break;
            }
        }
        Ok(batch)
    }

    /// Invokes the function with `messages` and deletes what succeeded.
    pub async fn process(&self, sqs: &aws_sdk_sqs::Client, messages: Vec<Message>) -> BatchOutcome {
        let event = sqs_event(&messages, &self.spec.queue_arn, &self.spec.region);
        let ids: BTreeSet<String> = messages
            .iter()
            .filter_map(|m| m.message_id.clone())
            .collect();
        let failed: BTreeSet<String> = match self
            .function
            .invoke(event.to_string().into_bytes())
            .await
        {
            Ok(payload) if self.spec.report_batch_item_failures => {
                match batch_item_failures(&payload, &ids) {
                    Some(failed) => {
                        self.function.record_failed(failed.len() as u64);
                        failed
                    }
                    None => {
                        eprintln!(
                            "[local-stack] {}: unusable batchItemFailures response; the whole batch is retried",
                            self.function.logical_id()
                        );
                        ids.clone()
                    }
                }
            }
            Ok(_) => BTreeSet::new(),
            Err(err) => {
                if !matches!(err, InvokeError::ShuttingDown) {
                    eprintln!(
                        "[local-stack] {}: batch of {} failed ({err}); every message is retried",
                        self.function.logical_id(),
                        messages.len()
                    );
                }
                ids.clone()
            }
        };
        let to_delete: Vec<&Message> = messages
            .iter()
            .filter(|m| m.message_id.as_ref().is_some_and(|id| !failed.contains(id)))
            .collect();
        let mut deleted = 0;
        for chunk in to_delete.chunks(10) {
            let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .filter_map(|(index, message)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(index.to_string())
                        .receipt_handle(message.receipt_handle.clone()?)
                        .build()
                        .ok()
                })
                .collect();
            match sqs
                .delete_message_batch()
                .queue_url(&self.spec.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
            {
                Ok(output) => deleted += output.successful.len(),
                Err(err) => eprintln!(
                    "[local-stack] deleting processed messages from {} failed: {}",
                    self.spec.queue,
                    aws_sdk_sqs::Error::from(err)
                ),
            }
        }
        BatchOutcome {
            received: messages.len(),
            deleted,
            failed: failed.into_iter().collect(),
        }
    }
}

/// The failed message ids from a `ReportBatchItemFailures` response; `None` when the
/// response is unusable (Lambda then retries the whole batch). An empty or null
/// response, or an empty list, means every item succeeded.
pub fn batch_item_failures(payload: &[u8], batch: &BTreeSet<String>) -> Option<BTreeSet<String>> {
    let trimmed = payload.trim_ascii();
    if trimmed.is_empty() {
        return Some(BTreeSet::new());
    }
    let value: Value = serde_json::from_slice(trimmed).ok()?;
    let failures = match &value {
        Value::Null => return Some(BTreeSet::new()),
        Value::Object(object) => match object.get("batchItemFailures") {
            None | Some(Value::Null) => return Some(BTreeSet::new()),
            Some(Value::Array(items)) => items,
            Some(_) => return None,
        },
        _ => return Some(BTreeSet::new()),
    };
    failures
        .iter()
        .map(|item| {
            item.get("itemIdentifier")
                .and_then(Value::as_str)
                .filter(|id| batch.contains(*id))
                .map(str::to_owned)
        })
        .collect()
}

/// The event Lambda passes for a batch of SQS messages.
pub fn sqs_event(messages: &[Message], queue_arn: &str, region: &str) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|message| {
            let attributes: BTreeMap<String, String> = message
                .attributes
                .as_ref()
                .map(|map| {
                    map.iter()
                        .map(|(name, value)| (name.as_str().to_owned(), value.clone()))
                        .collect()
                })
                .unwrap_or_default();
            let message_attributes: BTreeMap<String, Value> = message
                .message_attributes
                .as_ref()
                .map(|map| {
                    map.iter()
                        .map(|(name, value)| {
                            let mut attribute = json!({
                                "stringListValues": [],
                                "binaryListValues": [],
                                "dataType": value.data_type,
                            });
                            if let Some(text) = &value.string_value {
                                attribute["stringValue"] = json!(text);
                            }
                            if let Some(blob) = &value.binary_value {
                                attribute["binaryValue"] = json!(BASE64.encode(blob.as_ref()));
                            }
                            (name.clone(), attribute)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mut record = json!({
                "messageId": message.message_id,
                "receiptHandle": message.receipt_handle,
                "body": message.body.clone().unwrap_or_default(),
                "attributes": attributes,
                "messageAttributes": message_attributes,
                "md5OfBody": message.md5_of_body,
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": region,
            });
            if let Some(md5) = &message.md5_of_message_attributes {
                record["md5OfMessageAttributes"] = json!(md5);
            }
            record
        })
        .collect();
    json!({ "Records": records })
}

#[cfg(test)]
mod tests {
    use aws_sdk_sqs::types::MessageAttributeValue;

    use super::*;

    fn batch() -> BTreeSet<String> {
        BTreeSet::from(["a".to_owned(), "b".to_owned()])
    }

    #[test]
    fn empty_responses_mean_every_item_succeeded() {
        for payload in [&b""[..], b"null", b"{}", br#"{"batchItemFailures":[]}"#] {
            assert_eq!(
                batch_item_failures(payload, &batch()),
                Some(BTreeSet::new())
            );
        }
    }

    #[test]
    fn named_items_fail() {
        let failed = batch_item_failures(
            br#"{"batchItemFailures":[{"itemIdentifier":"b"}]}"#,
            &batch(),
        );
        assert_eq!(failed, Some(BTreeSet::from(["b".to_owned()])));
    }

    #[test]
    fn unknown_or_missing_identifiers_fail_the_whole_batch() {
        assert_eq!(
            batch_item_failures(
                br#"{"batchItemFailures":[{"itemIdentifier":"zzz"}]}"#,
                &batch()
            ),
            None
        );
        assert_eq!(
            batch_item_failures(br#"{"batchItemFailures":[{}]}"#, &batch()),
            None
        );
        assert_eq!(
            batch_item_failures(br#"{"batchItemFailures":"b"}"#, &batch()),
            None
        );
        assert_eq!(batch_item_failures(b"not json", &batch()), None);
    }

    #[test]
    fn event_has_lambdas_record_shape() {
        let message = Message::builder()
            .message_id("m-1")
            .receipt_handle("rh-1")
            .body("hello")
            .md5_of_body("5d41402abc4b2a76b9719d911017c592")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "2")
            .message_attributes(
                "provider",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("github")
                    .build()
                    .expect("valid attribute"),
            )
            .build();
        let event = sqs_event(
            &[message],
            "arn:aws:sqs:us-east-1:123456789012:q",
            "us-east-1",
        );
        let record = &event["Records"][0];
        assert_eq!(record["messageId"], "m-1");
        assert_eq!(record["receiptHandle"], "rh-1");
        assert_eq!(record["body"], "hello");
        assert_eq!(record["attributes"]["ApproximateReceiveCount"], "2");
        assert_eq!(
            record["messageAttributes"]["provider"]["stringValue"],
            "github"
        );
        assert_eq!(
            record["messageAttributes"]["provider"]["dataType"],
            "String"
        );
        assert_eq!(record["eventSource"], "aws:sqs");
        assert_eq!(
            record["eventSourceARN"],
            "arn:aws:sqs:us-east-1:123456789012:q"
        );
        assert_eq!(record["awsRegion"], "us-east-1");
    }
}
