//! The `EventQueue` port: where verified webhooks go. The SQS adapter is what runs in
//! Lambda; the in-memory one serves unit tests and benchmarks.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;

use crate::aws_json::{AwsJsonClient, AwsJsonError, SQS};

/// Message attribute names set by the ingress and read by the consumers.
pub mod attribute {
    /// Catalog id of the provider.
    pub const PROVIDER: &str = "provider";
    /// The `{endpoint}` path segment, when the webhook URL has one.
    pub const ENDPOINT: &str = "endpoint";
    /// The provider's event/delivery id, or the body's hex SHA-256: what consumers
    /// deduplicate on (never the SQS message id).
    pub const EVENT_ID: &str = "event_id";
    /// `header`, `json` or `body_sha256`: where [`EVENT_ID`] came from.
    pub const EVENT_ID_SOURCE: &str = "event_id_source";
    /// The provider's event type, when it has one.
    pub const EVENT_TYPE: &str = "event_type";
    /// The provider account the delivery is about, where the payload names one
    /// (HubSpot `portalId`, Slack `team_id`, Shopify shop domain, Stripe `account`,
    /// GitHub installation id): how the consumer finds the connection.
    pub const ACCOUNT: &str = "account";
    /// When the ingress received the request (RFC 3339, UTC, milliseconds).
    pub const RECEIVED_AT: &str = "received_at";
    /// JSON object of the forwarded request headers (lowercase names).
    pub const HEADERS: &str = "headers";
    /// `utf8` (the message body is the raw body), `base64` (the raw body in base64,
    /// for bodies SQS cannot carry as text), or `s3` (the body is an `s3://bucket/key`
    /// URI of the raw bytes, for bodies too large for a message).
    pub const BODY_ENCODING: &str = "body_encoding";
    /// `webhook` (absent: the default) or `poll`: how the payload reached Junction, for
    /// the record store's source-of-truth priority rules.
    pub const ORIGIN: &str = "origin";
    /// For polled payloads, the resource the poll worker fetched (`deal`, `task`, …):
    /// selects the normalization adapter. Absent for webhooks.
    pub const RESOURCE: &str = "resource";
    /// For polled payloads, the connection the poll worker fetched them with.
    pub const CONNECTION: &str = "connection";
}

/// One message: a body and string attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub body: String,
    pub attributes: BTreeMap<String, String>,
}

impl QueueMessage {
    /// The size SQS counts against its limit: body plus each attribute's name, type
    /// (`String`) and value.
    pub fn size(&self) -> usize {
        self.body.len()
            + self
                .attributes
                .iter()
                .map(|(name, value)| name.len() + "String".len() + value.len())
                .sum::<usize>()
    }
}

/// A failure to enqueue; the caller answers 5xx so the provider retries.
#[derive(Debug, thiserror::Error)]
#[error("could not send to the queue")]
pub struct QueueError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// A queue that accepts messages.
#[async_trait]
pub trait EventQueue: Send + Sync + std::fmt::Debug {
    /// Sends one message; returns only once the queue has accepted it.
    async fn send(&self, message: QueueMessage) -> Result<(), QueueError> {
        self.send_delayed(message, std::time::Duration::ZERO).await
    }

    /// Sends one message that becomes visible after `delay` (at most 15 minutes, SQS's
    /// limit; longer is cut to it): how the poll scheduler spreads jobs out.
    async fn send_delayed(
        &self,
        message: QueueMessage,
        delay: std::time::Duration,
    ) -> Result<(), QueueError>;
}

/// SQS's longest message delay (15 minutes).
pub const MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(900);

/// Amazon SQS, through the JSON protocol directly ([`crate::aws_json`]): `SendMessage`
/// is the webhook ingress's one AWS call per delivery, and the SDK's per-call machinery
/// was a third of the ingress's CPU (BENCHMARKS.md).
#[derive(Debug, Clone)]
pub struct SqsEventQueue {
    client: Arc<AwsJsonClient>,
    queue_url: String,
}

impl SqsEventQueue {
    /// A queue client from shared AWS configuration: its credentials, region, timeouts
    /// and retry settings, and `AWS_ENDPOINT_URL_SQS` or `AWS_ENDPOINT_URL` when set
    /// (else the queue URL's own endpoint, `https://sqs.{region}.amazonaws.com`). Fails
    /// on a queue URL that is not one, without a region, or with FIPS or dual-stack
    /// endpoints asked for (see [`crate::aws_json`]).
    pub fn from_config(
        aws: &aws_config::SdkConfig,
        queue_url: impl Into<String>,
    ) -> Result<Self, AwsJsonError> {
        let queue_url = queue_url.into();
        Ok(SqsEventQueue {
            client: Arc::new(AwsJsonClient::from_config(aws, SQS, &queue_url)?),
            queue_url,
        })
    }

    /// Opens the connection to SQS with one cheap call (`GetQueueAttributes` of the
    /// queue's ARN), so that at cold start the TLS handshake happens in init rather
    /// than in the first delivery's `SendMessage`.
    pub async fn warm_up(&self) -> Result<(), QueueError> {
        let input = serde_json::json!({
            "QueueUrl": self.queue_url,
            "AttributeNames": ["QueueArn"],
        });
        self.client
            .call("GetQueueAttributes", input.to_string().into_bytes())
            .await
            .map(|_| ())
            .map_err(|err| QueueError(Box::new(err)))
    }
}

/// `SendMessage`'s input, serialized straight from the message.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct SendMessageInput<'a> {
    queue_url: &'a str,
    message_body: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    delay_seconds: Option<u64>,
    #[serde(serialize_with = "string_attributes")]
    message_attributes: &'a BTreeMap<String, String>,
}

fn string_attributes<S: serde::Serializer>(
    attributes: &&BTreeMap<String, String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Value<'a> {
        data_type: &'static str,
        string_value: &'a str,
    }
    serializer.collect_map(attributes.iter().map(|(name, value)| {
        (
            name,
            Value {
                data_type: "String",
                string_value: value,
            },
        )
    }))
}

#[async_trait]
impl EventQueue for SqsEventQueue {
    async fn send_delayed(
        &self,
        message: QueueMessage,
        delay: std::time::Duration,
    ) -> Result<(), QueueError> {
        let input = SendMessageInput {
            queue_url: &self.queue_url,
            message_body: &message.body,
            delay_seconds: (!delay.is_zero()).then(|| delay.min(MAX_DELAY).as_secs()),
            message_attributes: &message.attributes,
        };
        let body = serde_json::to_vec(&input).map_err(|err| QueueError(Box::new(err)))?;
        self.client
            .call("SendMessage", body)
            .await
            .map(|_| ())
            .map_err(|err| QueueError(Box::new(err)))
    }
}

/// Keeps messages in memory; can be told to fail.
#[derive(Debug, Default)]
pub struct InMemoryEventQueue {
    messages: Mutex<Vec<QueueMessage>>,
    delays: Mutex<Vec<std::time::Duration>>,
    failing: std::sync::atomic::AtomicBool,
}

impl InMemoryEventQueue {
    /// Every message sent so far.
    pub fn messages(&self) -> Vec<QueueMessage> {
        self.messages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The delay each message was sent with, in order.
    pub fn delays(&self) -> Vec<std::time::Duration> {
        self.delays
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Makes every later send fail (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait]
impl EventQueue for InMemoryEventQueue {
    async fn send_delayed(
        &self,
        message: QueueMessage,
        delay: std::time::Duration,
    ) -> Result<(), QueueError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(QueueError("in-memory queue set to fail".into()));
        }
        self.delays
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(delay.min(MAX_DELAY));
        self.messages
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(message);
        Ok(())
    }
}

/// Schedules a failed message's next delivery: the retry delay becomes the message's
/// visibility timeout, so nothing sleeps to back off.
#[async_trait]
pub trait RetryScheduler: Send + Sync + std::fmt::Debug {
    /// Makes the message (by receipt handle) visible again after `delay`.
    async fn retry_after(
        &self,
        receipt_handle: &str,
        delay: std::time::Duration,
    ) -> Result<(), QueueError>;
}

/// SQS `ChangeMessageVisibility` on the queue the consumer reads, through the SDK: it
/// is off the hot path, and the consumer's other AWS calls are the SDK's anyway
/// ([`crate::aws_json`] here added reqwest's client stack to the consumer: 180 KB more
/// zip, 0.4 MiB more RSS, measured).
#[derive(Debug, Clone)]
pub struct SqsRetryScheduler {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsRetryScheduler {
    pub fn from_config(aws: &aws_config::SdkConfig, queue_url: impl Into<String>) -> Self {
        SqsRetryScheduler {
            client: aws_sdk_sqs::Client::new(aws),
            queue_url: queue_url.into(),
        }
    }
}

/// SQS's longest visibility timeout (12 hours).
const MAX_VISIBILITY_SECONDS: u64 = 43_200;

#[async_trait]
impl RetryScheduler for SqsRetryScheduler {
    async fn retry_after(
        &self,
        receipt_handle: &str,
        delay: std::time::Duration,
    ) -> Result<(), QueueError> {
        let seconds = delay.as_secs().min(MAX_VISIBILITY_SECONDS) as i32;
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds)
            .send()
            .await
            .map(|_| ())
            .map_err(|err| QueueError(Box::new(aws_sdk_sqs::Error::from(err))))
    }
}

/// Records scheduled retries in memory.
#[derive(Debug, Default)]
pub struct InMemoryRetryScheduler {
    scheduled: Mutex<Vec<(String, std::time::Duration)>>,
}

impl InMemoryRetryScheduler {
    /// `(receipt handle, delay)` of every scheduled retry.
    pub fn scheduled(&self) -> Vec<(String, std::time::Duration)> {
        self.scheduled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

#[async_trait]
impl RetryScheduler for InMemoryRetryScheduler {
    async fn retry_after(
        &self,
        receipt_handle: &str,
        delay: std::time::Duration,
    ) -> Result<(), QueueError> {
        self.scheduled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((receipt_handle.to_owned(), delay));
        Ok(())
    }
}
