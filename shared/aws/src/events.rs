//! Events out: CloudEvents 1.0 (JSON) on the EventBridge bus, the stream the product
//! team consumes. The event id is derived from the provider, the provider's event id
//! and the record, so a redelivered event publishes the same id and downstream
//! consumers can deduplicate too. An event that belongs to a tenant's connection carries
//! the extension attributes `tenant` and `connection` ([`CloudEvent::stamped`]).
//!
//! EventBridge refuses a `PutEvents` request over 256 KB, so an event whose entry would
//! be larger travels by claim check ([`claim_check`]): its `data` goes to the payload
//! bucket and the event carries the CloudEvents `dataref` extension instead
//! (`docs/events.md`). The bus adapter never sends an entry over the limit: it reports
//! it as [`Refusal::TooLarge`] with its size.

use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::payloads::{PayloadError, PayloadStore};

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
    /// The tenant whose connection the event belongs to (extension attribute): set on a
    /// delivery whose provider account a connection connected, or on a record polled
    /// through a connection ([`CloudEvent::stamped`]); absent on an unmatched delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// That connection's id (extension attribute), with `tenant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// Claim check (the CloudEvents `dataref` extension): `s3://<bucket>/events/<id>.json`,
    /// the JSON of `data`, set instead of `data` when the event would not fit the bus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataref: Option<String>,
    /// The size in bytes of the object at `dataref` (extension attribute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datasize: Option<u64>,
    /// The normalized record, with its `mapping_version`; null, and left out of the JSON,
    /// when `dataref` points at it instead.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
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
            tenant: None,
            connection: None,
            dataref: None,
            datasize: None,
            data,
        }
    }

    /// The event as published for one tenant's connection: `tenant` and `connection`
    /// set, and an id of its own, `hex(sha256(id ␀ tenant))` truncated to 32 hex
    /// characters. When several tenants connected the same provider account, each gets
    /// its copy of the event under an id no other tenant's copy has; a redelivery
    /// stamps the same ids again, so subscribers still deduplicate on `id`.
    pub fn stamped(mut self, tenant: &str, connection: &str) -> Self {
        let mut digest = Sha256::new();
        for part in [self.id.as_str(), tenant] {
            digest.update(part.as_bytes());
            digest.update([0]);
        }
        self.id = hex::encode(digest.finalize())[..32].to_owned();
        self.tenant = Some(tenant.to_owned());
        self.connection = Some(connection.to_owned());
        self
    }

    /// The event's `PutEvents` entry as [`EventBridgeBus`] sends it (Source, DetailType,
    /// the event as Detail; no Time, no Resources): its Detail and its size.
    pub fn entry(&self) -> Result<(String, usize), serde_json::Error> {
        let detail = serde_json::to_string(self)?;
        let size = put_events_entry_size(false, &self.source, &self.event_type, Some(&detail), &[]);
        Ok((detail, size))
    }
}

/// `PutEvents` limits (Amazon EventBridge quotas): at most 10 entries a request, and
/// 256 KB a request, entries counted as [`put_events_entry_size`] does, so also 256 KB
/// for one entry. A request over it is refused as a whole (`ValidationException`).
///
/// AWS raised EventBridge's limit to 1 MB in 2026; Junction keeps 256 KB, which every
/// bus and every subscriber's target (queues sized for 256 KiB) still takes.
pub const PUT_EVENTS_MAX_ENTRIES: usize = 10;
/// See [`PUT_EVENTS_MAX_ENTRIES`].
pub const PUT_EVENTS_MAX_BYTES: usize = 262_144;

/// The size EventBridge counts for a `PutEvents` entry, as "Calculating Amazon
/// EventBridge PutEvents event entry size" defines it
/// (<https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-putevent-size.html>):
/// 14 bytes for `Time` when set, the UTF-8 bytes of `Source`, `DetailType`, `Detail` and
/// of each of `Resources`. `EventBusName` and the JSON around the fields are not counted.
pub fn put_events_entry_size(
    has_time: bool,
    source: &str,
    detail_type: &str,
    detail: Option<&str>,
    resources: &[&str],
) -> usize {
    let time = if has_time { 14 } else { 0 };
    time + source.len()
        + detail_type.len()
        + detail.map_or(0, str::len)
        + resources
            .iter()
            .map(|resource| resource.len())
            .sum::<usize>()
}

/// Where a claim-checked event's `data` is stored: derived from its stable id alone, so
/// the retry of an event overwrites the same object instead of adding one. Ids Junction
/// makes are hex; anything else is hashed so it cannot shape the key.
pub fn dataref_key(id: &str) -> String {
    let plain = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if plain {
        format!("events/{id}.json")
    } else {
        format!("events/{}.json", hex::encode(Sha256::digest(id.as_bytes())))
    }
}

/// A failure to put an event in the form the bus takes.
#[derive(Debug, thiserror::Error)]
pub enum ClaimCheckError {
    /// Permanent: the same event will not serialize next time either.
    #[error("event {id} could not be serialized")]
    Unserializable {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    /// Transient: the payload bucket did not take the data.
    #[error("the data of event {id} could not be stored for its claim check")]
    Store {
        id: String,
        #[source]
        source: PayloadError,
    },
}

/// Makes `event` fit the bus: when its `PutEvents` entry would be over
/// [`PUT_EVENTS_MAX_BYTES`], stores its `data` (JSON, `datacontenttype`) in `payloads`
/// under [`dataref_key`] and replaces it with `dataref` (the store's `s3://` URI) and
/// `datasize`: the CloudEvents claim-check pattern. Returns whether it did. An event
/// that already carries a `dataref` is left alone.
pub async fn claim_check(
    event: &mut CloudEvent,
    payloads: &dyn PayloadStore,
) -> Result<bool, ClaimCheckError> {
    let unserializable = |id: &str, source| ClaimCheckError::Unserializable {
        id: id.to_owned(),
        source,
    };
    if event.dataref.is_some() {
        return Ok(false);
    }
    let (_, size) = event
        .entry()
        .map_err(|err| unserializable(&event.id, err))?;
    if size <= PUT_EVENTS_MAX_BYTES {
        return Ok(false);
    }
    let data = serde_json::to_vec(&event.data).map_err(|err| unserializable(&event.id, err))?;
    let uri = payloads
        .put_with_type(&dataref_key(&event.id), &data, &event.datacontenttype)
        .await
        .map_err(|source| ClaimCheckError::Store {
            id: event.id.clone(),
            source,
        })?;
    event.data = serde_json::Value::Null;
    event.dataref = Some(uri);
    event.datasize = Some(u64::try_from(data.len()).unwrap_or(u64::MAX));
    Ok(true)
}

/// Why an event is not on the bus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Its `PutEvents` entry is over [`PUT_EVENTS_MAX_BYTES`]: EventBridge would refuse
    /// the whole request, so it was not sent. No retry of the same event can help.
    #[error(
        "its PutEvents entry is {size} bytes, over EventBridge's {PUT_EVENTS_MAX_BYTES}-byte limit"
    )]
    TooLarge { size: usize },
    /// It could not be serialized (permanent).
    #[error("it could not be serialized")]
    Unserializable,
    /// EventBridge answered its entry with this error code on every attempt
    /// (`ThrottlingException`, `InternalFailure`): worth retrying later.
    #[error("EventBridge refused its entry: {code}")]
    Rejected { code: String },
    /// The call failed or timed out: the event may be on the bus or not.
    #[error("the event bus could not be reached")]
    Unavailable,
}

impl Refusal {
    /// Whether publishing the same event again cannot succeed.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Refusal::TooLarge { .. } | Refusal::Unserializable)
    }
}

/// An event that did not reach the bus, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpublished {
    pub id: String,
    pub refusal: Refusal,
}

/// A failure to publish some of the events. The others did reach the bus, so a caller
/// publishing for several sources retries only those these belong to (the stable ids
/// make a retry harmless).
#[derive(Debug, thiserror::Error)]
#[error("{} of {total} events did not reach the bus{}", unpublished.len(), first_refusal(unpublished))]
pub struct PublishError {
    /// Every event that may not be on the bus, in publishing order.
    pub unpublished: Vec<Unpublished>,
    /// How many events the call was given.
    pub total: usize,
    /// The failed call's error, when a call failed ([`Refusal::Unavailable`]).
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// `; <id>: <refusal>` for the first unpublished event, so a logged error names a cause.
fn first_refusal(unpublished: &[Unpublished]) -> String {
    unpublished
        .first()
        .map(|first| format!("; {}: {}", first.id, first.refusal))
        .unwrap_or_default()
}

impl PublishError {
    /// Why the event with this id is not on the bus, if it is one of the unpublished.
    pub fn refusal(&self, id: &str) -> Option<&Refusal> {
        self.unpublished
            .iter()
            .find(|unpublished| unpublished.id == id)
            .map(|unpublished| &unpublished.refusal)
    }
}

/// Where events go.
#[async_trait]
pub trait EventBus: Send + Sync + std::fmt::Debug {
    /// Publishes every event, or says which did not reach the bus and why; partial
    /// acceptance is retried internally first. An event over the bus's entry limit is
    /// refused ([`Refusal::TooLarge`]), never sent: make it fit with [`claim_check`].
    async fn publish(&self, events: &[CloudEvent]) -> Result<(), PublishError>;
}

/// Each event's entry (Detail and size), or why it cannot be sent: the check both buses
/// make, so the in-memory one refuses what EventBridge would.
fn entries(events: &[CloudEvent]) -> (Vec<Entry<'_>>, Vec<Unpublished>) {
    let mut entries = Vec::with_capacity(events.len());
    let mut refused = Vec::new();
    for event in events {
        let refusal = match event.entry() {
            Ok((detail, size)) if size <= PUT_EVENTS_MAX_BYTES => {
                entries.push(Entry {
                    event,
                    detail,
                    size,
                });
                continue;
            }
            Ok((_, size)) => Refusal::TooLarge { size },
            Err(_) => Refusal::Unserializable,
        };
        refused.push(Unpublished {
            id: event.id.clone(),
            refusal,
        });
    }
    (entries, refused)
}

/// Amazon EventBridge: `PutEvents` with as many entries per call as its limits allow
/// (10 entries, 256 KB), so a consumer batch is usually one call.
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
    /// (throttling, internal); returns the ones still failed, with their error code.
    async fn put<'a>(
        &self,
        call: &[&'a Entry<'a>],
    ) -> Result<Vec<(&'a Entry<'a>, String)>, aws_sdk_eventbridge::Error> {
        let mut pending: Vec<(&Entry, String)> =
            call.iter().map(|entry| (*entry, String::new())).collect();
        for _ in 0..PUT_ATTEMPTS {
            let output = self
                .client
                .put_events()
                .set_entries(Some(
                    pending.iter().map(|(entry, _)| self.entry(entry)).collect(),
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
                .filter_map(|((entry, _), result)| {
                    result.error_code().map(|code| (entry, code.to_owned()))
                })
                .collect();
        }
        Ok(pending)
    }
}

/// Attempts per call for entries EventBridge reports as failed.
const PUT_ATTEMPTS: usize = 3;

/// An event with its serialized detail and its size as EventBridge counts it.
struct Entry<'a> {
    event: &'a CloudEvent,
    detail: String,
    size: usize,
}

/// Groups entries into calls within both `PutEvents` limits, in order. An entry over
/// the byte limit would get a call of its own, but none is given here ([`entries`]).
fn calls<'a>(entries: &'a [Entry<'a>]) -> Vec<Vec<&'a Entry<'a>>> {
    let mut calls: Vec<Vec<&Entry>> = Vec::new();
    let mut bytes = 0;
    for entry in entries {
        match calls.last_mut() {
            Some(call)
                if call.len() < PUT_EVENTS_MAX_ENTRIES
                    && bytes + entry.size <= PUT_EVENTS_MAX_BYTES =>
            {
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
        let (entries, mut unpublished) = entries(events);
        let mut unavailable = None;
        for call in calls(&entries) {
            if unavailable.is_some() {
                unpublished.extend(call.iter().map(|entry| Unpublished {
                    id: entry.event.id.clone(),
                    refusal: Refusal::Unavailable,
                }));
                continue;
            }
            match self.put(&call).await {
                Ok(failed) => {
                    unpublished.extend(failed.into_iter().map(|(entry, code)| Unpublished {
                        id: entry.event.id.clone(),
                        refusal: Refusal::Rejected { code },
                    }));
                }
                Err(err) => {
                    unpublished.extend(call.iter().map(|entry| Unpublished {
                        id: entry.event.id.clone(),
                        refusal: Refusal::Unavailable,
                    }));
                    unavailable = Some(err);
                }
            }
        }
        if unpublished.is_empty() {
            return Ok(());
        }
        Err(PublishError {
            unpublished,
            total: events.len(),
            source: unavailable.map(|err| Box::new(err) as _),
        })
    }
}

/// Keeps published events in memory; refuses what EventBridge would refuse for its
/// size, and can be told to fail.
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
            return Err(PublishError {
                unpublished: events
                    .iter()
                    .map(|event| Unpublished {
                        id: event.id.clone(),
                        refusal: Refusal::Unavailable,
                    })
                    .collect(),
                total: events.len(),
                source: Some("in-memory bus set to fail".into()),
            });
        }
        let rejecting = self
            .rejecting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let (entries, mut unpublished) = entries(events);
        let mut accepted = Vec::with_capacity(entries.len());
        for entry in entries {
            if rejecting.as_deref() == Some(entry.event.providereventid.as_str()) {
                unpublished.push(Unpublished {
                    id: entry.event.id.clone(),
                    refusal: Refusal::Rejected {
                        code: "InternalFailure".into(),
                    },
                });
            } else {
                accepted.push(entry.event.clone());
            }
        }
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(accepted);
        if unpublished.is_empty() {
            return Ok(());
        }
        Err(PublishError {
            unpublished,
            total: events.len(),
            source: None,
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

        // Exactly at the request limit is one call; a byte more is two.
        let half = PUT_EVENTS_MAX_BYTES / 2;
        let exact: Vec<Entry> = [half, half].map(|size| entry(&event, size)).into();
        assert_eq!(calls(&exact).len(), 1);
        let over: Vec<Entry> = [half, half + 1].map(|size| entry(&event, size)).into();
        assert_eq!(calls(&over).len(), 2);
    }

    #[test]
    fn entry_size_is_counted_as_eventbridge_documents() {
        // Time 14 bytes when present; Source, DetailType, Detail and each resource in
        // UTF-8 bytes (`é` is two).
        assert_eq!(
            put_events_entry_size(true, "src", "typé", Some("{}"), &["arn:a", "arn:bc"]),
            14 + 3 + 5 + 2 + 5 + 6
        );
        assert_eq!(put_events_entry_size(false, "s", "t", None, &[]), 2);
        // The adapter's entry: no Time, no Resources, the bus name not counted.
        let event = event_with_data(serde_json::json!({"mapping_version": 1, "note": "é"}));
        let (detail, size) = event.entry().expect("entry");
        assert_eq!(detail, serde_json::to_string(&event).expect("json"));
        assert_eq!(
            size,
            "junction/stripe".len() + "provider_event.occurred".len() + detail.len()
        );
    }

    fn event_with_data(data: serde_json::Value) -> CloudEvent {
        CloudEvent::new(
            "stripe",
            "evt_big",
            "0:provider_event:evt_big",
            "provider_event.occurred".into(),
            None,
            "2024-01-02T03:04:05Z".into(),
            data,
        )
    }

    /// An event whose `PutEvents` entry is exactly `size` bytes.
    fn event_of_entry_size(size: usize) -> CloudEvent {
        let mut event = event_with_data(serde_json::json!({"mapping_version": 1, "pad": ""}));
        let (_, empty) = event.entry().expect("entry");
        event.data["pad"] = "x".repeat(size - empty).into();
        assert_eq!(event.entry().expect("entry").1, size);
        event
    }

    #[tokio::test]
    async fn an_event_over_the_entry_limit_is_published_by_claim_check() {
        let store = crate::payloads::InMemoryPayloadStore::default();

        // At the limit: published as is.
        let mut fits = event_of_entry_size(PUT_EVENTS_MAX_BYTES);
        let unchanged = fits.clone();
        assert!(!claim_check(&mut fits, &store).await.expect("checked"));
        assert_eq!(fits, unchanged);

        // A byte over: the data goes to the store, the event points at it.
        let mut big = event_of_entry_size(PUT_EVENTS_MAX_BYTES + 1);
        let data = big.data.clone();
        assert!(claim_check(&mut big, &store).await.expect("checked"));
        let key = format!("events/{}.json", big.id);
        assert_eq!(
            big.dataref.as_deref(),
            Some(format!("s3://in-memory/{key}").as_str())
        );
        assert!(big.data.is_null());
        let stored = store.get(&key).expect("stored");
        assert_eq!(big.datasize, Some(stored.len() as u64));
        let read_back: serde_json::Value = serde_json::from_slice(&stored).expect("JSON");
        assert_eq!(read_back, data, "the data, byte for byte as JSON");
        assert!(big.entry().expect("entry").1 < 1024, "a small entry now");
        assert_eq!(big.datacontenttype, "application/json");

        // On the wire: no `data`, the extension attributes instead; it reads back.
        let json = serde_json::to_value(&big).expect("json");
        assert!(json.get("data").is_none(), "{json}");
        assert_eq!(json["dataref"], format!("s3://in-memory/{key}"));
        assert_eq!(json["datasize"], stored.len());
        let parsed: CloudEvent = serde_json::from_value(json).expect("a CloudEvent");
        assert_eq!(parsed, big);

        // A retry of the same event writes the same object again.
        let mut again = event_of_entry_size(PUT_EVENTS_MAX_BYTES + 1);
        assert!(claim_check(&mut again, &store).await.expect("checked"));
        assert_eq!(again, big);
        assert_eq!(store.get(&key), Some(stored));
        // Once checked, it is left alone.
        assert!(!claim_check(&mut again, &store).await.expect("checked"));
    }

    #[tokio::test]
    async fn a_failed_store_fails_the_claim_check() {
        let store = crate::payloads::InMemoryPayloadStore::default();
        store.set_failing(true);
        let mut big = event_of_entry_size(PUT_EVENTS_MAX_BYTES + 1);
        let err = claim_check(&mut big, &store).await.expect_err("store down");
        assert!(matches!(err, ClaimCheckError::Store { .. }), "{err:?}");
        assert!(big.dataref.is_none() && !big.data.is_null(), "unchanged");
    }

    #[test]
    fn dataref_keys_come_from_the_stable_id_alone() {
        let id = CloudEvent::stable_id("stripe", "evt_1", "0:provider_event:evt_1");
        assert_eq!(dataref_key(&id), format!("events/{id}.json"));
        let odd = dataref_key("../../webhooks/x");
        assert!(odd.starts_with("events/") && !odd.contains(".."), "{odd}");
        assert_eq!(odd, dataref_key("../../webhooks/x"));
    }

    #[tokio::test]
    async fn the_in_memory_bus_refuses_what_eventbridge_refuses_for_its_size() {
        let bus = InMemoryEventBus::default();
        let fits = event_of_entry_size(PUT_EVENTS_MAX_BYTES);
        let mut big = event_of_entry_size(PUT_EVENTS_MAX_BYTES + 1);
        // Another id of the same length, so the two are told apart.
        big.id = "b".repeat(big.id.len());
        let err = bus
            .publish(&[big.clone(), fits.clone()])
            .await
            .expect_err("one too large");
        assert_eq!(
            err.unpublished,
            [Unpublished {
                id: big.id.clone(),
                refusal: Refusal::TooLarge {
                    size: PUT_EVENTS_MAX_BYTES + 1
                },
            }]
        );
        assert!(err.refusal(&big.id).is_some_and(Refusal::is_permanent));
        let message = err.to_string();
        assert!(
            message.contains("262145 bytes") && message.contains("262144"),
            "the log line names the size: {message}"
        );
        assert_eq!(bus.events(), [fits], "the other one is published");
    }

    #[test]
    fn a_stamped_event_names_its_tenant_and_connection_under_an_id_per_tenant() {
        let event = event_with_data(serde_json::json!({"mapping_version": 1}));
        let unstamped = serde_json::to_value(&event).expect("json");
        assert!(
            unstamped.get("tenant").is_none() && unstamped.get("connection").is_none(),
            "an unmatched event has neither: {unstamped}"
        );

        let acme = event.clone().stamped("acme", "conn_1");
        let json = serde_json::to_value(&acme).expect("json");
        assert_eq!(json["tenant"], "acme");
        assert_eq!(json["connection"], "conn_1");
        assert_eq!(acme.id.len(), 32);
        assert_ne!(acme.id, event.id);
        assert_eq!(
            acme,
            event.clone().stamped("acme", "conn_1"),
            "a redelivery stamps the same id"
        );
        let beta = event.clone().stamped("beta", "conn_2");
        assert_ne!(acme.id, beta.id, "each tenant's copy has its own id");
        assert_eq!(
            event.clone().stamped("acme", "conn_3").id,
            acme.id,
            "the id follows the tenant, not which of its connections matched"
        );
        let parsed: CloudEvent = serde_json::from_value(json).expect("a CloudEvent");
        assert_eq!(parsed, acme);
    }

    /// CloudEvents 1.0, "Attribute Naming Convention": names MUST be lowercase ASCII
    /// letters or digits and SHOULD NOT exceed 20 characters. Checked on the JSON, so
    /// an extension added later is checked too.
    #[test]
    fn every_attribute_name_is_a_valid_cloudevents_name() {
        let mut event =
            event_with_data(serde_json::json!({"mapping_version": 1})).stamped("acme", "conn_1");
        event.subject = Some("eu".into());
        event.dataref = Some("s3://b/events/x.json".into());
        event.datasize = Some(1);
        let json = serde_json::to_value(&event).expect("json");
        let names: Vec<&String> = json.as_object().expect("object").keys().collect();
        for name in &names {
            assert!(
                (1..=20).contains(&name.len())
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
                "{name} is not a CloudEvents attribute name"
            );
        }
        for extension in [
            "providereventid",
            "tenant",
            "connection",
            "dataref",
            "datasize",
        ] {
            assert!(names.iter().any(|name| *name == extension), "{extension}");
        }
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
