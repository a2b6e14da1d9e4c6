//! The `EventQueue` port: where verified webhooks go. The SQS adapter is what runs in
//! Lambda; the in-memory one serves unit tests and benchmarks.

use std::{collections::BTreeMap, sync::Mutex};

use async_trait::async_trait;

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

/// Amazon SQS through the SDK: `SendMessage` with string attributes (and a delay for the
/// poll scheduler). The SDK brings what an AWS call needs and Junction should not keep
/// itself: credentials and session tokens, clock-skew correction, the standard retry
/// policy with its quota, endpoint rules (FIPS, dual-stack) and the `AWS_ENDPOINT_URL*`
/// settings.
#[derive(Debug, Clone)]
pub struct SqsEventQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

/// An SQS client cannot be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum SqsConfigError {
    /// The SDK would fail every call later; the start fails instead, naming the setting.
    #[error("SQS client: no AWS region configured (AWS_REGION)")]
    NoRegion,
}

impl SqsEventQueue {
    /// A queue client from shared AWS configuration: its credentials, region, timeouts,
    /// retry settings and endpoint (`AWS_ENDPOINT_URL_SQS` or `AWS_ENDPOINT_URL` when
    /// set, else the region's SQS endpoint). The queue URL goes in each request as it
    /// is; it does not choose the endpoint.
    pub fn from_config(
        aws: &aws_config::SdkConfig,
        queue_url: impl Into<String>,
    ) -> Result<Self, SqsConfigError> {
        if aws.region().is_none() {
            return Err(SqsConfigError::NoRegion);
        }
        Ok(SqsEventQueue {
            client: aws_sdk_sqs::Client::new(aws),
            queue_url: queue_url.into(),
        })
    }

    /// Opens the connection to SQS with one cheap call (`GetQueueAttributes` of the
    /// queue's ARN), so that at cold start the TLS handshake happens in init rather
    /// than in the first delivery's `SendMessage`.
    pub async fn warm_up(&self) -> Result<(), QueueError> {
        self.client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .map(|_| ())
            .map_err(sqs_error)
    }
}

/// An SDK failure as a [`QueueError`], keeping the service's error code and message in
/// the chain (`QueueDoesNotExist: …`), which the ingress's outcome `cause` shows.
fn sqs_error<E>(err: E) -> QueueError
where
    aws_sdk_sqs::Error: From<E>,
{
    QueueError(Box::new(aws_sdk_sqs::Error::from(err)))
}

#[async_trait]
impl EventQueue for SqsEventQueue {
    async fn send_delayed(
        &self,
        message: QueueMessage,
        delay: std::time::Duration,
    ) -> Result<(), QueueError> {
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(message.body);
        if !delay.is_zero() {
            // At most 900: fits.
            request = request.delay_seconds(delay.min(MAX_DELAY).as_secs() as i32);
        }
        for (name, value) in message.attributes {
            let value = aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|err| QueueError(Box::new(err)))?;
            request = request.message_attributes(name, value);
        }
        request.send().await.map(|_| ()).map_err(sqs_error)
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

/// SQS `ChangeMessageVisibility` on the queue the consumer reads, through the SDK.
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
            .map_err(sqs_error)
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
