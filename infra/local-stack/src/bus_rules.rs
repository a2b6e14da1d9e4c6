//! EventBridge rules on the stack's bus whose target is one of its functions (SAM's
//! `Type: EventBridgeRule` events), dispatched the way AWS dispatches them.
//!
//! The emulator matches events itself: `infra/emulator.py deploy` replaces each function
//! target of a rule with an SQS queue (moto's PutEvents cannot deliver to a Lambda
//! target), so every event put on the bus that the rule's pattern matches lands on that
//! queue as the EventBridge event, matched by moto's pattern matching (which, unlike
//! EventBridge, does not look inside arrays of objects). [`BusDispatch`] long-polls the
//! queue, takes each event off it and invokes the function with it asynchronously, as
//! EventBridge invokes Lambda: the event is accepted at once, and a function error (or
//! timeout) is retried [`RetryPolicy::maximum_retry_attempts`] times (the function's
//! `EventInvokeConfig`, else Lambda's 2) before the event is dropped with a log line.
//! Lambda waits about one minute before the first retry and two before the second; the
//! local stack waits [`RetryPolicy::first_delay`] and doubles it, so a test sees the
//! retries within seconds.

use std::{sync::Arc, time::Duration};

use aws_sdk_sqs::types::Message;
use serde_json::Value;
use tokio::sync::watch;

use crate::runtime::{FunctionRuntime, InvokeError};

/// How long one receive call waits for messages (SQS long polling).
const LONG_POLL_SECONDS: i32 = 2;

/// How a failed asynchronous invocation is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (`MaximumRetryAttempts`, 0 to 2).
    pub maximum_retry_attempts: u32,
    /// The wait before the first retry; each later one waits twice the one before.
    pub first_delay: Duration,
}

impl RetryPolicy {
    /// Lambda's retry count with the local stack's short waits.
    pub fn local(maximum_retry_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            maximum_retry_attempts: maximum_retry_attempts.min(2),
            first_delay: Duration::from_secs(1),
        }
    }

    /// The wait before each retry, in order (empty: no retry).
    pub fn delays(&self) -> Vec<Duration> {
        (0..self.maximum_retry_attempts)
            .map(|retry| self.first_delay.saturating_mul(1 << retry))
            .collect()
    }
}

/// One rule target, ready to dispatch.
#[derive(Debug, Clone)]
pub struct BusRuleSpec {
    /// The rule's logical id.
    pub rule: String,
    /// The queue standing in for the function target.
    pub queue_url: String,
    /// The rule's event pattern (for the banner and logs; moto matches it).
    pub pattern: Value,
    pub retry: RetryPolicy,
}

/// Why a queued message is no EventBridge event.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the message is not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("the message is not an EventBridge event (no {0})")]
    Missing(&'static str),
}

/// The event as EventBridge hands it to a Lambda target, from the message moto queued:
/// the envelope's fields, `account` filled in where moto leaves it out, and moto's own
/// `ingestion-time` removed (EventBridge does not deliver it).
pub fn envelope(body: &str, account: &str) -> Result<Value, EnvelopeError> {
    let mut event: Value = serde_json::from_str(body).map_err(EnvelopeError::NotJson)?;
    let Some(fields) = event.as_object_mut() else {
        return Err(EnvelopeError::Missing("object"));
    };
    for required in ["id", "source", "detail-type", "detail"] {
        if !fields.contains_key(required) {
            return Err(EnvelopeError::Missing(required));
        }
    }
    fields.remove("ingestion-time");
    fields
        .entry("account")
        .or_insert_with(|| Value::String(account.to_owned()));
    fields
        .entry("version")
        .or_insert_with(|| Value::String("0".to_owned()));
    fields
        .entry("resources")
        .or_insert_with(|| Value::Array(Vec::new()));
    Ok(event)
}

/// What one asynchronous invocation came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The function succeeded on this attempt (1 is the first).
    Succeeded { attempt: u32 },
    /// Every attempt failed: the event is dropped (no on-failure destination locally).
    Dropped { attempts: u32, error: String },
    /// The stack stopped before the function succeeded.
    ShutDown,
}

/// A running dispatch of one rule target.
#[derive(Debug, Clone)]
pub struct BusDispatch {
    spec: Arc<BusRuleSpec>,
    function: FunctionRuntime,
    delivered: watch::Sender<Vec<Delivery>>,
}

impl BusDispatch {
    /// Starts polling the rule's queue until `shutdown` becomes true.
    pub fn start(
        spec: BusRuleSpec,
        function: FunctionRuntime,
        sqs: aws_sdk_sqs::Client,
        shutdown: watch::Receiver<bool>,
    ) -> (BusDispatch, tokio::task::JoinHandle<()>) {
        let dispatch = BusDispatch {
            spec: Arc::new(spec),
            function,
            delivered: watch::channel(Vec::new()).0,
        };
        let task = tokio::spawn(dispatch.clone().poll(sqs, shutdown));
        (dispatch, task)
    }

    /// The rule's logical id.
    pub fn rule(&self) -> &str {
        &self.spec.rule
    }

    /// The target function's logical id.
    pub fn function(&self) -> &str {
        self.function.logical_id()
    }

    /// The rule's event pattern.
    pub fn pattern(&self) -> &Value {
        &self.spec.pattern
    }

    /// What every invocation so far came to, in the order they ended.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.delivered.borrow().clone()
    }

    async fn poll(self, sqs: aws_sdk_sqs::Client, mut shutdown: watch::Receiver<bool>) {
        loop {
            if *shutdown.borrow() {
                return;
            }
            let received = tokio::select! {
                received = sqs
                    .receive_message()
                    .queue_url(&self.spec.queue_url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(LONG_POLL_SECONDS)
                    .send() => received,
                _ = shutdown.changed() => return,
            };
            let messages = match received {
                Ok(output) => output.messages.unwrap_or_default(),
                Err(err) => {
                    eprintln!(
                        "[local-stack] bus rule {}: receiving failed: {}",
                        self.spec.rule,
                        aws_sdk_sqs::Error::from(err)
                    );
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = shutdown.changed() => return,
                    }
                }
            };
            for message in messages {
                self.accept(&sqs, message, &shutdown).await;
            }
        }
    }

    /// Takes one event off the queue (EventBridge's delivery succeeded: Lambda queued
    /// it) and invokes the function with it in the background.
    async fn accept(
        &self,
        sqs: &aws_sdk_sqs::Client,
        message: Message,
        shutdown: &watch::Receiver<bool>,
    ) {
        if let Some(receipt) = &message.receipt_handle
            && let Err(err) = sqs
                .delete_message()
                .queue_url(&self.spec.queue_url)
                .receipt_handle(receipt)
                .send()
                .await
        {
            eprintln!(
                "[local-stack] bus rule {}: deleting a dispatched event failed: {}",
                self.spec.rule,
                aws_sdk_sqs::Error::from(err)
            );
        }
        let event = match envelope(
            message.body.as_deref().unwrap_or_default(),
            crate::ACCOUNT_ID,
        ) {
            Ok(event) => event,
            Err(err) => {
                eprintln!("[local-stack] bus rule {}: {err}; dropped", self.spec.rule);
                return;
            }
        };
        let detail_type = event["detail-type"].as_str().unwrap_or_default().to_owned();
        println!(
            "[local-stack] bus rule {} ({detail_type}) → {}",
            self.spec.rule,
            self.function.logical_id()
        );
        let this = self.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let delivery = this.invoke_with_retries(event, shutdown).await;
            this.delivered.send_modify(|all| all.push(delivery));
        });
    }

    async fn invoke_with_retries(
        &self,
        event: Value,
        mut shutdown: watch::Receiver<bool>,
    ) -> Delivery {
        let payload = event.to_string().into_bytes();
        let name = self.function.logical_id().to_owned();
        let mut delays = self.spec.retry.delays().into_iter();
        let mut attempt = 1;
        loop {
            let error = match self.function.invoke(payload.clone()).await {
                Ok(_) => return Delivery::Succeeded { attempt },
                Err(InvokeError::ShuttingDown) => return Delivery::ShutDown,
                Err(err) => err.to_string(),
            };
            let Some(delay) = delays.next() else {
                eprintln!(
                    "[local-stack] bus rule {} → {name}: attempt {attempt} failed ({error}); \
                     retries exhausted, the event is dropped",
                    self.spec.rule
                );
                return Delivery::Dropped {
                    attempts: attempt,
                    error,
                };
            };
            eprintln!(
                "[local-stack] bus rule {} → {name}: attempt {attempt} failed ({error}); \
                 retried in {} ms",
                self.spec.rule,
                delay.as_millis()
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return Delivery::ShutDown,
            }
            attempt += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambdas_retry_count_with_doubling_local_waits() {
        assert_eq!(
            RetryPolicy::local(2).delays(),
            [Duration::from_secs(1), Duration::from_secs(2)]
        );
        assert!(RetryPolicy::local(0).delays().is_empty());
        // Lambda allows at most 2 retries for asynchronous invocations.
        assert_eq!(RetryPolicy::local(7).maximum_retry_attempts, 2);
    }

    #[test]
    fn the_queued_event_becomes_eventbridges_envelope() {
        let body = r#"{"id": "e-1", "time": "2026-12-07T22:45:54Z", "version": "0",
            "detail-type": "provider_event.occurred", "source": "junction/microsoft",
            "region": "us-east-1", "resources": [], "ingestion-time": 1796683554.2,
            "detail": {"type": "provider_event.occurred"}}"#;
        let event = envelope(body, "123456789012").expect("an event");
        assert_eq!(event["account"], "123456789012");
        assert_eq!(event["detail-type"], "provider_event.occurred");
        assert_eq!(event["detail"]["type"], "provider_event.occurred");
        assert_eq!(event["time"], "2026-12-07T22:45:54Z");
        assert!(event.get("ingestion-time").is_none());
        let mut keys: Vec<&str> = event
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "account",
                "detail",
                "detail-type",
                "id",
                "region",
                "resources",
                "source",
                "time",
                "version"
            ]
        );
    }

    #[test]
    fn an_account_already_set_is_kept() {
        let event = envelope(
            r#"{"id":"1","source":"s","detail-type":"t","detail":{},"account":"999"}"#,
            "123456789012",
        )
        .expect("an event");
        assert_eq!(event["account"], "999");
        assert_eq!(event["version"], "0");
    }

    #[test]
    fn what_is_no_event_is_refused() {
        assert!(matches!(
            envelope("not json", "1"),
            Err(EnvelopeError::NotJson(_))
        ));
        assert!(matches!(
            envelope("[]", "1"),
            Err(EnvelopeError::Missing("object"))
        ));
        assert!(matches!(
            envelope(r#"{"id":"1","source":"s","detail-type":"t"}"#, "1"),
            Err(EnvelopeError::Missing("detail"))
        ));
    }
}
