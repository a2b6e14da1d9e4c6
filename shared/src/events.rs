//! Events out: CloudEvents 1.0 (JSON) on the EventBridge bus, the stream the product
//! team consumes. The event id is derived from the provider, the provider's event id
//! and the record, so a redelivered event publishes the same id and downstream
//! consumers can deduplicate too.

use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A CloudEvents 1.0 event in structured JSON mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    pub specversion: String,
    /// Stable: see [`CloudEvent::stable_id`].
    pub id: String,
    /// `junction/<provider>`.
    pub source: String,
    /// `<common model>.<change>`, e.g. `work_item.updated`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The connection (or endpoint) the event belongs to, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// When the change happened at the provider (RFC 3339 UTC).
    pub time: String,
    pub datacontenttype: String,
    /// The provider's own event id (extension attribute).
    pub providereventid: String,
    /// The normalized record, with its `mapping_version`.
    pub data: serde_json::Value,
}

impl CloudEvent {
    /// `hex(sha256(provider ␀ provider_event_id ␀ record_key))`, truncated to 32 hex
    /// characters: the same input always yields the same id.
    pub fn stable_id(provider: &str, provider_event_id: &str, record_key: &str) -> String {
        let mut digest = Sha256::new();
        for part in [provider, provider_event_id, record_key] {
            digest.update(part.as_bytes());
            digest.update([0]);
        }
        hex::encode(digest.finalize())[..32].to_owned()
    }

    /// A new event with the stable id.
    pub fn new(
        provider: &str,
        provider_event_id: &str,
        record_key: &str,
        event_type: String,
        subject: Option<String>,
        time: String,
        data: serde_json::Value,
    ) -> Self {
        CloudEvent {
            specversion: "1.0".into(),
            id: CloudEvent::stable_id(provider, provider_event_id, record_key),
            source: format!("junction/{provider}"),
            event_type,
            subject,
            time,
            datacontenttype: "application/json".into(),
            providereventid: provider_event_id.to_owned(),
            data,
        }
    }
}

/// A failure to publish; transient (the source message is retried, and the stable ids
/// make the retry harmless).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the event bus could not be reached")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("{failed} of {total} events were not accepted by the bus")]
    Rejected { failed: usize, total: usize },
}

/// Where events go.
#[async_trait]
pub trait EventBus: Send + Sync + std::fmt::Debug {
    /// Publishes every event or fails; partial acceptance is retried internally.
    async fn publish(&self, events: &[CloudEvent]) -> Result<(), PublishError>;
}

/// Amazon EventBridge, with `PutEvents` in batches of 10 (its limit per call).
#[derive(Debug, Clone)]
pub struct EventBridgeBus {
    client: aws_sdk_eventbridge::Client,
    bus_name: String,
}

impl EventBridgeBus {
    pub fn new(client: aws_sdk_eventbridge::Client, bus_name: impl Into<String>) -> Self {
        EventBridgeBus {
            client,
            bus_name: bus_name.into(),
        }
    }

    pub fn from_config(aws: &aws_config::SdkConfig, bus_name: impl Into<String>) -> Self {
        EventBridgeBus::new(aws_sdk_eventbridge::Client::new(aws), bus_name)
    }

    fn entry(&self, event: &CloudEvent) -> aws_sdk_eventbridge::types::PutEventsRequestEntry {
        aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus_name)
            .source(&event.source)
            .detail_type(&event.event_type)
            .detail(serde_json::to_string(event).unwrap_or_default())
            .build()
    }
}

/// Attempts per batch for entries EventBridge reports as failed (throttling, internal).
const PUT_ATTEMPTS: usize = 3;

#[async_trait]
impl EventBus for EventBridgeBus {
    async fn publish(&self, events: &[CloudEvent]) -> Result<(), PublishError> {
        for batch in events.chunks(10) {
            let mut pending: Vec<&CloudEvent> = batch.iter().collect();
            for _ in 0..PUT_ATTEMPTS {
                let output = self
                    .client
                    .put_events()
                    .set_entries(Some(
                        pending.iter().map(|event| self.entry(event)).collect(),
                    ))
                    .send()
                    .await
                    .map_err(|err| {
                        PublishError::Unavailable(Box::new(aws_sdk_eventbridge::Error::from(err)))
                    })?;
                if output.failed_entry_count == 0 {
                    pending.clear();
                    break;
                }
                // Entries come back in request order; keep those with an error code.
                pending = pending
                    .into_iter()
                    .zip(output.entries())
                    .filter(|(_, result)| result.error_code().is_some())
                    .map(|(event, _)| event)
                    .collect();
            }
            if !pending.is_empty() {
                return Err(PublishError::Rejected {
                    failed: pending.len(),
                    total: batch.len(),
                });
            }
        }
        Ok(())
    }
}

/// Keeps published events in memory; can be told to fail.
#[derive(Debug, Default)]
pub struct InMemoryEventBus {
    events: Mutex<Vec<CloudEvent>>,
    failing: std::sync::atomic::AtomicBool,
}

impl InMemoryEventBus {
    pub fn events(&self) -> Vec<CloudEvent> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_failing(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait]
impl EventBus for InMemoryEventBus {
    async fn publish(&self, events: &[CloudEvent]) -> Result<(), PublishError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(PublishError::Unavailable(
                "in-memory bus set to fail".into(),
            ));
        }
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(events);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct_per_record() {
        let a = CloudEvent::stable_id("linear", "delivery-1", "work_item:ISS-1");
        assert_eq!(
            a,
            CloudEvent::stable_id("linear", "delivery-1", "work_item:ISS-1")
        );
        assert_ne!(
            a,
            CloudEvent::stable_id("linear", "delivery-1", "work_item:ISS-2")
        );
        assert_ne!(
            a,
            CloudEvent::stable_id("linear", "delivery-2", "work_item:ISS-1")
        );
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn serializes_as_a_cloudevent() {
        let event = CloudEvent::new(
            "stripe",
            "evt_1",
            "provider_event:evt_1",
            "provider_event.received".into(),
            Some("conn-1".into()),
            "2024-01-02T03:04:05.000Z".into(),
            serde_json::json!({"mapping_version": 1}),
        );
        let json = serde_json::to_value(&event).expect("json");
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["source"], "junction/stripe");
        assert_eq!(json["type"], "provider_event.received");
        assert_eq!(json["subject"], "conn-1");
        assert_eq!(json["providereventid"], "evt_1");
        assert_eq!(json["data"]["mapping_version"], 1);
    }
}
