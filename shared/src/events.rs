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

/// A failure to publish some of the events; transient (their source messages are
/// retried, and the stable ids make the retry harmless).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the event bus could not be reached ({} events not published)", unpublished.len())]
    Unavailable {
        /// The ids of the events that may not be on the bus.
        unpublished: Vec<String>,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{} of {total} events were not accepted by the bus", unpublished.len())]
    Rejected {
        /// The ids of the events the bus did not accept.
        unpublished: Vec<String>,
        total: usize,
    },
}

impl PublishError {
    /// The ids of the events that did not reach the bus: the rest did, so a caller
    /// publishing for several sources retries only those these belong to.
    pub fn unpublished(&self) -> &[String] {
        match self {
            PublishError::Unavailable { unpublished, .. }
            | PublishError::Rejected { unpublished, .. } => unpublished,
        }
    }
}

/// Where events go.
#[async_trait]
pub trait EventBus: Send + Sync + std::fmt::Debug {
    /// Publishes every event, or says which did not reach the bus; partial acceptance
    /// is retried internally first.
    async fn publish(&self, events: &[CloudEvent]) -> Result<(), PublishError>;
}

/// Amazon EventBridge: `PutEvents` with as many entries per call as its limits allow
/// (10 entries, 256 KiB), so a consumer batch is usually one call.
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

    fn entry(&self, event: &Entry<'_>) -> aws_sdk_eventbridge::types::PutEventsRequestEntry {
        aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus_name)
            .source(&event.event.source)
            .detail_type(&event.event.event_type)
            .detail(&event.detail)
            .build()
    }

    /// Sends one call's entries, retrying those EventBridge reports as failed
    /// (throttling, internal); returns the ones still failed.
    async fn put<'a>(
        &self,
        mut pending: Vec<&'a Entry<'a>>,
    ) -> Result<Vec<&'a Entry<'a>>, aws_sdk_eventbridge::Error> {
        for _ in 0..PUT_ATTEMPTS {
            let output = self
                .client
                .put_events()
                .set_entries(Some(
                    pending.iter().map(|entry| self.entry(entry)).collect(),
                ))
                .send()
                .await
                .map_err(aws_sdk_eventbridge::Error::from)?;
            if output.failed_entry_count == 0 {
                return Ok(Vec::new());
            }
            // Entries come back in request order; keep those with an error code.
            pending = pending
                .into_iter()
                .zip(output.entries())
                .filter(|(_, result)| result.error_code().is_some())
                .map(|(entry, _)| entry)
                .collect();
        }
        Ok(pending)
    }
}

/// Attempts per call for entries EventBridge reports as failed.
const PUT_ATTEMPTS: usize = 3;
/// `PutEvents` limits: entries per call, and bytes per call as EventBridge counts them.
const PUT_MAX_ENTRIES: usize = 10;
const PUT_MAX_BYTES: usize = 256 * 1024;

/// An event with its serialized detail and its size as EventBridge counts it (the
/// UTF-8 bytes of Source, DetailType, Detail and the bus name, plus 14 for Time).
struct Entry<'a> {
    event: &'a CloudEvent,
    detail: String,
    size: usize,
}

/// Groups entries into calls within both `PutEvents` limits, in order. An entry over
/// the byte limit gets a call of its own (and is rejected there, visibly).
fn calls<'a>(entries: &'a [Entry<'a>]) -> Vec<Vec<&'a Entry<'a>>> {
    let mut calls: Vec<Vec<&Entry>> = Vec::new();
    let mut bytes = 0;
    for entry in entries {
        match calls.last_mut() {
            Some(call) if call.len() < PUT_MAX_ENTRIES && bytes + entry.size <= PUT_MAX_BYTES => {
                call.push(entry);
                bytes += entry.size;
            }
            _ => {
                calls.push(vec![entry]);
                bytes = entry.size;
            }
        }
    }
    calls
}

#[async_trait]
impl EventBus for EventBridgeBus {
    async fn publish(&self, events: &[CloudEvent]) -> Result<(), PublishError> {
        let entries: Vec<Entry> = events
            .iter()
            .map(|event| {
                let detail = serde_json::to_string(event).unwrap_or_default();
                let size = event.source.len()
                    + event.event_type.len()
                    + detail.len()
                    + self.bus_name.len()
                    + 14;
                Entry {
                    event,
                    detail,
                    size,
                }
            })
            .collect();
        let mut unpublished = Vec::new();
        let mut unavailable = None;
        for call in calls(&entries) {
            if unavailable.is_some() {
                unpublished.extend(call.iter().map(|entry| entry.event.id.clone()));
                continue;
            }
            match self.put(call.clone()).await {
                Ok(failed) => {
                    unpublished.extend(failed.iter().map(|entry| entry.event.id.clone()));
                }
                Err(err) => {
                    unpublished.extend(call.iter().map(|entry| entry.event.id.clone()));
                    unavailable = Some(err);
                }
            }
        }
        match unavailable {
            Some(err) => Err(PublishError::Unavailable {
                unpublished,
                source: Box::new(err),
            }),
            None if unpublished.is_empty() => Ok(()),
            None => Err(PublishError::Rejected {
                unpublished,
                total: events.len(),
            }),
        }
    }
}

/// Keeps published events in memory; can be told to fail.
#[derive(Debug, Default)]
pub struct InMemoryEventBus {
    events: Mutex<Vec<CloudEvent>>,
    failing: std::sync::atomic::AtomicBool,
    /// Events with this provider event id are rejected (the rest are published).
    rejecting: Mutex<Option<String>>,
    calls: std::sync::atomic::AtomicUsize,
}

impl InMemoryEventBus {
    /// How many times `publish` was called.
    pub fn calls(&self) -> usize {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Rejects the events of one provider event from now on (EventBridge's per-entry
    /// failures), publishing the others of the same call.
    pub fn reject_provider_event(&self, provider_event_id: Option<&str>) {
        *self.rejecting.lock().unwrap_or_else(|p| p.into_inner()) =
            provider_event_id.map(str::to_owned);
    }

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
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(PublishError::Unavailable {
                unpublished: events.iter().map(|event| event.id.clone()).collect(),
                source: "in-memory bus set to fail".into(),
            });
        }
        let rejecting = self
            .rejecting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (rejected, accepted): (Vec<&CloudEvent>, Vec<&CloudEvent>) = events
            .iter()
            .partition(|event| rejecting.as_deref() == Some(event.providereventid.as_str()));
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(accepted.into_iter().cloned());
        if rejected.is_empty() {
            return Ok(());
        }
        Err(PublishError::Rejected {
            unpublished: rejected.iter().map(|event| event.id.clone()).collect(),
            total: events.len(),
        })
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

    fn entry(event: &CloudEvent, size: usize) -> Entry<'_> {
        Entry {
            event,
            detail: String::new(),
            size,
        }
    }

    #[test]
    fn calls_respect_both_put_events_limits() {
        let event = CloudEvent::new(
            "stripe",
            "evt_1",
            "k",
            "t".into(),
            None,
            "2024-01-02T03:04:05Z".into(),
            serde_json::Value::Null,
        );
        let small: Vec<Entry> = (0..23).map(|_| entry(&event, 100)).collect();
        let sizes: Vec<usize> = calls(&small).iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 3], "10 entries a call");

        let big: Vec<Entry> = [100_000, 100_000, 100_000, 300_000, 10]
            .into_iter()
            .map(|size| entry(&event, size))
            .collect();
        let sizes: Vec<usize> = calls(&big).iter().map(Vec::len).collect();
        assert_eq!(
            sizes,
            [2, 1, 1, 1],
            "256 KiB a call; an oversized entry alone"
        );
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
