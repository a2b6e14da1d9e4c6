//! Schema drift: the shape of each provider payload Junction maps, and what changed
//! when a provider starts sending another.
//!
//! A payload's [`Shape`] is its field set: every JSON path with the JSON type found
//! there, sorted (a `BTreeMap`), array elements collapsed into one `[]` step (their
//! shapes merged), and hashed into a [`Fingerprint`]. Two shapes compare into a
//! [`ShapeDiff`]: fields added, removed, and changed in type. The recorded contract
//! schemas (`contracts/` in the repository, `junction-contracts`) are shapes too, so the
//! consumer's passive check and the scheduled contract check speak the same diff.
//!
//! The consumer hands each payload it maps to a [`DriftDetector`], keyed by provider and
//! event type (or polled resource): [`ShapeKey`]. Known fingerprints are kept behind a
//! port ([`ShapeStore`]): DynamoDB ([`DynamoShapeStore`], module `dynamo`, the only one
//! here that knows the SDK) and memory. A container remembers the fingerprints it has
//! seen, so the store is read once per shape per container and written only when a shape
//! is new; the conditional write decides which consumer announces it, once, as
//! `provider.schema_changed` with the diff against the last known shape of that key, and
//! counts it (`SchemaChanges`, the alarm's metric). A mapping failure is reported with
//! the diff of its shape ([`Observation::diff`]).
//!
//! This is bookkeeping: a store or bus failure is logged and never fails a delivery.
//! Nothing here depends on the consumer.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use junction_aws::clock::{Clock, rfc3339_millis};
use junction_aws::events::{CloudEvent, EventBus};
use junction_telemetry::{Metric, OutcomeLine, error_chain, write_lines};

mod dynamo;

pub use dynamo::DynamoShapeStore;

/// The CloudEvent type announcing a new shape.
pub const SCHEMA_CHANGED: &str = "provider.schema_changed";

/// The metric counting announced shapes (namespace `Junction`, dimension `Provider`).
pub const SCHEMA_CHANGES_METRIC: &str = "SchemaChanges";

/// The most paths a shape records. A payload with more (a huge HubSpot batch has a few
/// hundred at most) is cut here and marked with [`TRUNCATED`], so an attacker-sized
/// body costs bounded work and an item well under DynamoDB's 400 KB.
pub const MAX_PATHS: usize = 2_000;

/// How deep a shape descends; deeper values are recorded by type only.
pub const MAX_DEPTH: usize = 24;

/// The path recorded when a shape was cut at [`MAX_PATHS`].
pub const TRUNCATED: &str = "$…";

/// Object keys whose members are free-form (each account names its own keys), recorded
/// as `object` without descending: Stripe and Shopify `metadata`. Descending would make
/// every customer's keys a new shape.
pub const FREE_FORM_KEYS: &[&str] = &["metadata"];

/// The suffix of Salesforce custom fields (`Region__c`): per-org, so left out of shapes.
pub const CUSTOM_FIELD_SUFFIX: &str = "__c";

/// A JSON type as shapes name it. Integers and fractions are both `number`: a provider
/// sending `10` then `10.5` has not changed its schema.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A payload's field set: JSON path (`$`, `$.data.id`, `$.items[].sku`,
/// `$["odd key"]`) to JSON type. Where array elements disagree the types are joined,
/// sorted, with `|` (`number|string`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Shape(pub BTreeMap<String, String>);

impl Shape {
    /// The shape of `value`.
    pub fn of(value: &Value) -> Shape {
        let mut types: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
        walk(value, "$".to_owned(), 0, &mut types);
        Shape(
            types
                .into_iter()
                .map(|(path, kinds)| (path, kinds.into_iter().collect::<Vec<_>>().join("|")))
                .collect(),
        )
    }

    /// The shape of a JSON body; `None` when it is not JSON (a form post, XML).
    pub fn of_body(body: &[u8]) -> Option<Shape> {
        serde_json::from_slice::<Value>(body)
            .ok()
            .map(|value| Shape::of(&value))
    }

    /// `hex(sha256("path\ttype\n" for each path, in order))`, the first 32 characters.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut digest = Sha256::new();
        for (path, kind) in &self.0 {
            digest.update(path.as_bytes());
            digest.update(b"\t");
            digest.update(kind.as_bytes());
            digest.update(b"\n");
        }
        Fingerprint(hex::encode(digest.finalize())[..32].to_owned())
    }

    /// What changed from `self` (the older shape) to `newer`. A field that is `null` on
    /// one side is not a type change: providers send `null` for an empty optional field.
    pub fn diff(&self, newer: &Shape) -> ShapeDiff {
        let mut diff = ShapeDiff::default();
        for (path, kind) in &newer.0 {
            match self.0.get(path) {
                None => diff.added.push(Field::new(path, kind)),
                Some(old) if old != kind && !nullable_change(old, kind) => {
                    diff.changed.push(TypeChange {
                        path: path.clone(),
                        from: old.clone(),
                        to: kind.clone(),
                    });
                }
                Some(_) => {}
            }
        }
        for (path, kind) in &self.0 {
            if !newer.0.contains_key(path) {
                diff.removed.push(Field::new(path, kind));
            }
        }
        diff
    }

    /// The number of paths.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `null` on either side, or the same types once `null` is left out of a joined one.
fn nullable_change(old: &str, new: &str) -> bool {
    let strip = |kinds: &str| -> BTreeSet<String> {
        kinds
            .split('|')
            .filter(|kind| *kind != "null")
            .map(str::to_owned)
            .collect()
    };
    let (old, new) = (strip(old), strip(new));
    old.is_empty() || new.is_empty() || old == new
}

fn walk(
    value: &Value,
    path: String,
    depth: usize,
    types: &mut BTreeMap<String, BTreeSet<&'static str>>,
) {
    if types.len() >= MAX_PATHS && !types.contains_key(&path) {
        types
            .entry(TRUNCATED.to_owned())
            .or_default()
            .insert("object");
        return;
    }
    types
        .entry(path.clone())
        .or_default()
        .insert(json_type(value));
    if depth >= MAX_DEPTH {
        return;
    }
    match value {
        Value::Object(members) => {
            for (key, member) in members {
                if key.ends_with(CUSTOM_FIELD_SUFFIX) {
                    continue;
                }
                let child = child_path(&path, key);
                if FREE_FORM_KEYS.contains(&key.as_str()) {
                    types.entry(child).or_default().insert(json_type(member));
                    continue;
                }
                walk(member, child, depth + 1, types);
            }
        }
        Value::Array(elements) => {
            let child = format!("{path}[]");
            for element in elements {
                walk(element, child.clone(), depth + 1, types);
            }
        }
        _ => {}
    }
}

/// `parent.key`, or `parent["key"]` for a key that is not a plain name.
fn child_path(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$' || c == '@');
    if plain {
        format!("{parent}.{key}")
    } else {
        format!(
            "{parent}[{}]",
            serde_json::to_string(key).unwrap_or_default()
        )
    }
}

/// A shape's hash: 32 hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(pub String);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A path and its type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
}

impl Field {
    fn new(path: &str, kind: &str) -> Field {
        Field {
            path: path.to_owned(),
            kind: kind.to_owned(),
        }
    }
}

/// A path whose type changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeChange {
    pub path: String,
    pub from: String,
    pub to: String,
}

/// What changed between two shapes, each list sorted by path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapeDiff {
    pub added: Vec<Field>,
    pub removed: Vec<Field>,
    pub changed: Vec<TypeChange>,
}

impl ShapeDiff {
    /// Nothing but nullability changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// The diff as the `added`, `removed` and `changed` members of an event's `data`.
    pub fn to_json(&self) -> Value {
        json!({ "added": self.added, "removed": self.removed, "changed": self.changed })
    }
}

/// At most this many paths per list in the text form (a log line or a dead-letter note
/// has room for a summary; the event carries every one).
const SHOWN_PER_LIST: usize = 8;

impl fmt::Display for ShapeDiff {
    /// `added $.a (string); removed $.b (number); changed $.c number -> string`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        let list = |items: Vec<String>| {
            let more = items.len().saturating_sub(SHOWN_PER_LIST);
            let mut shown: Vec<String> = items.into_iter().take(SHOWN_PER_LIST).collect();
            if more > 0 {
                shown.push(format!("and {more} more"));
            }
            shown.join(", ")
        };
        if !self.added.is_empty() {
            let items = self
                .added
                .iter()
                .map(|f| format!("{} ({})", f.path, f.kind))
                .collect();
            parts.push(format!("added {}", list(items)));
        }
        if !self.removed.is_empty() {
            let items = self
                .removed
                .iter()
                .map(|f| format!("{} ({})", f.path, f.kind))
                .collect();
            parts.push(format!("removed {}", list(items)));
        }
        if !self.changed.is_empty() {
            let items = self
                .changed
                .iter()
                .map(|c| format!("{} {} -> {}", c.path, c.from, c.to))
                .collect();
            parts.push(format!("changed {}", list(items)));
        }
        if parts.is_empty() {
            f.write_str("no field added, removed or changed in type")
        } else {
            f.write_str(&parts.join("; "))
        }
    }
}

/// Whose shapes are compared: a provider and what it sent (an event type, a polled
/// resource, a contract request).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShapeKey {
    pub provider: String,
    /// `event:<type>` for a webhook with an event type, `resource:<name>` for a polled
    /// resource, `contract:<request>` for a contract check's response, `event:*` for a
    /// webhook without one.
    pub subject: String,
}

impl ShapeKey {
    /// The key of a consumed payload: its polled resource, else its event type.
    pub fn for_event(provider: &str, resource: Option<&str>, event_type: Option<&str>) -> Self {
        let subject = match (resource, event_type) {
            (Some(resource), _) => format!("resource:{resource}"),
            (None, Some(event_type)) => format!("event:{event_type}"),
            (None, None) => "event:*".to_owned(),
        };
        ShapeKey {
            provider: provider.to_owned(),
            subject,
        }
    }

    /// The key of a contract request's response.
    pub fn for_contract(provider: &str, request: &str) -> Self {
        ShapeKey {
            provider: provider.to_owned(),
            subject: format!("contract:{request}"),
        }
    }

    /// `provider#subject`: the store's partition key.
    pub fn as_partition(&self) -> String {
        format!("{}#{}", self.provider, self.subject)
    }
}

/// A shape the store knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownShape {
    pub fingerprint: Fingerprint,
    pub shape: Shape,
    /// What changed from the shape that was the latest when this one was first seen;
    /// `None` for the first shape of its key.
    pub diff: Option<ShapeDiff>,
    pub first_seen: OffsetDateTime,
}

/// The shape store failed.
#[derive(Debug, thiserror::Error)]
#[error("shape store failed")]
pub struct ShapeStoreError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Where known shapes are kept, per [`ShapeKey`].
#[async_trait]
pub trait ShapeStore: Send + Sync + std::fmt::Debug {
    /// The shape of `key` with `fingerprint`, if recorded.
    async fn get(
        &self,
        key: &ShapeKey,
        fingerprint: &Fingerprint,
    ) -> Result<Option<KnownShape>, ShapeStoreError>;

    /// The most recently first-seen shape of `key`.
    async fn latest(&self, key: &ShapeKey) -> Result<Option<KnownShape>, ShapeStoreError>;

    /// Records `shape` unless its fingerprint is already recorded for `key`: must be
    /// conditional. `true` when this call recorded it (the caller announces it).
    async fn record(&self, key: &ShapeKey, shape: &KnownShape) -> Result<bool, ShapeStoreError>;

    /// Removes a shape this caller recorded but could not announce, so the next sighting
    /// announces it.
    async fn forget(
        &self,
        key: &ShapeKey,
        fingerprint: &Fingerprint,
    ) -> Result<(), ShapeStoreError>;
}

/// Shapes in memory (tests, the CLI's fixture mode).
#[derive(Debug, Default)]
pub struct InMemoryShapeStore {
    shapes: Mutex<BTreeMap<ShapeKey, Vec<KnownShape>>>,
}

impl InMemoryShapeStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ShapeKey, Vec<KnownShape>>> {
        self.shapes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every recorded shape of `key`, in the order recorded.
    pub fn shapes(&self, key: &ShapeKey) -> Vec<KnownShape> {
        self.lock().get(key).cloned().unwrap_or_default()
    }
}

#[async_trait]
impl ShapeStore for InMemoryShapeStore {
    async fn get(
        &self,
        key: &ShapeKey,
        fingerprint: &Fingerprint,
    ) -> Result<Option<KnownShape>, ShapeStoreError> {
        Ok(self
            .lock()
            .get(key)
            .and_then(|shapes| shapes.iter().find(|s| s.fingerprint == *fingerprint))
            .cloned())
    }

    async fn latest(&self, key: &ShapeKey) -> Result<Option<KnownShape>, ShapeStoreError> {
        Ok(self
            .lock()
            .get(key)
            .and_then(|shapes| shapes.iter().max_by_key(|s| s.first_seen))
            .cloned())
    }

    async fn record(&self, key: &ShapeKey, shape: &KnownShape) -> Result<bool, ShapeStoreError> {
        let mut shapes = self.lock();
        let known = shapes.entry(key.clone()).or_default();
        if known.iter().any(|s| s.fingerprint == shape.fingerprint) {
            return Ok(false);
        }
        known.push(shape.clone());
        Ok(true)
    }

    async fn forget(
        &self,
        key: &ShapeKey,
        fingerprint: &Fingerprint,
    ) -> Result<(), ShapeStoreError> {
        if let Some(known) = self.lock().get_mut(key) {
            known.retain(|s| s.fingerprint != *fingerprint);
        }
        Ok(())
    }
}

/// What one sighting of a payload's shape found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub key: ShapeKey,
    pub fingerprint: Fingerprint,
    /// The diff of this shape against the shape that was the latest when it was first
    /// seen (none for its key's first shape, or when the store could not be read).
    pub diff: Option<ShapeDiff>,
    /// This sighting recorded the shape and announced it (`provider.schema_changed`).
    pub announced: bool,
}

/// Which payloads are fingerprinted besides mapping failures (always).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampling {
    /// One payload in `every` (1: all of them).
    pub every: u32,
}

impl Default for Sampling {
    /// Every payload: a shape costs microseconds of CPU (docs/cost.md), and a sampled-out
    /// payload of a new shape would delay its announcement.
    fn default() -> Self {
        Sampling { every: 1 }
    }
}

/// The most fingerprints a container remembers; past it, all are forgotten (the next
/// sightings read the store once each again).
pub const MAX_REMEMBERED: usize = 10_000;

/// What announced a shape: the consumer's passive check or a contract check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Consumer,
    ContractCheck,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Consumer => "consumer",
            Origin::ContractCheck => "contract_check",
        }
    }
}

/// A payload's shape, seen: what the consumer hands the detector.
#[derive(Debug, Clone, Copy)]
pub struct Sighting<'a> {
    pub key: &'a ShapeKey,
    /// The provider's event id of the payload (the announcement's `providereventid`).
    pub provider_event_id: &'a str,
    pub shape: &'a Shape,
    /// The pinned API version, for the announcement.
    pub api_version: Option<&'a str>,
}

/// Compares payload shapes with the known ones and announces new ones, once.
#[derive(Debug)]
pub struct DriftDetector {
    store: Arc<dyn ShapeStore>,
    bus: Arc<dyn EventBus>,
    clock: Arc<dyn Clock>,
    sampling: Sampling,
    origin: Origin,
    /// Fingerprints this container knows, with their diff.
    known: Mutex<HashMap<(ShapeKey, Fingerprint), Option<ShapeDiff>>>,
}

impl DriftDetector {
    pub fn new(store: Arc<dyn ShapeStore>, bus: Arc<dyn EventBus>, clock: Arc<dyn Clock>) -> Self {
        DriftDetector {
            store,
            bus,
            clock,
            sampling: Sampling::default(),
            origin: Origin::Consumer,
            known: Mutex::new(HashMap::new()),
        }
    }

    pub fn with_sampling(mut self, sampling: Sampling) -> Self {
        self.sampling = Sampling {
            every: sampling.every.max(1),
        };
        self
    }

    pub fn with_origin(mut self, origin: Origin) -> Self {
        self.origin = origin;
        self
    }

    /// Whether this payload is to be fingerprinted (a mapping failure always is).
    pub fn sampled(&self) -> bool {
        self.sampling.every <= 1 || rand::thread_rng().gen_ratio(1, self.sampling.every)
    }

    /// Fingerprints a JSON body under `key` (`None`: not JSON, nothing to compare).
    pub async fn observe_body(
        &self,
        key: &ShapeKey,
        provider_event_id: &str,
        body: &[u8],
        api_version: Option<&str>,
    ) -> Option<Observation> {
        let shape = Shape::of_body(body)?;
        Some(
            self.observe(Sighting {
                key,
                provider_event_id,
                shape: &shape,
                api_version,
            })
            .await,
        )
    }

    /// Compares the sighting's shape with the known ones: a shape this container knows
    /// costs nothing; one the store knows, a read; a new one, a query for the latest and
    /// a conditional write, and the writer announces it (unless only nullability
    /// changed, or it is its key's first shape: a baseline, not a change).
    pub async fn observe(&self, sighting: Sighting<'_>) -> Observation {
        let fingerprint = sighting.shape.fingerprint();
        let key = sighting.key;
        let remembered = self
            .lock()
            .get(&(key.clone(), fingerprint.clone()))
            .cloned();
        if let Some(diff) = remembered {
            return Observation {
                key: key.clone(),
                fingerprint,
                diff,
                announced: false,
            };
        }
        let mut observation = Observation {
            key: key.clone(),
            fingerprint: fingerprint.clone(),
            diff: None,
            announced: false,
        };
        match self.store.get(key, &fingerprint).await {
            Ok(Some(known)) => {
                observation.diff = known.diff.clone();
                self.remember(key, &fingerprint, known.diff);
                return observation;
            }
            Ok(None) => {}
            Err(err) => {
                warn_store(key, &err);
                return observation;
            }
        }
        let latest = match self.store.latest(key).await {
            Ok(latest) => latest,
            Err(err) => {
                warn_store(key, &err);
                return observation;
            }
        };
        let diff = latest
            .as_ref()
            .map(|latest| latest.shape.diff(sighting.shape));
        let known = KnownShape {
            fingerprint: fingerprint.clone(),
            shape: sighting.shape.clone(),
            diff: diff.clone(),
            first_seen: self.clock.now(),
        };
        observation.diff = diff.clone();
        match self.store.record(key, &known).await {
            Ok(false) => {
                // Another container recorded it first, and announces it.
                self.remember(key, &fingerprint, diff);
                return observation;
            }
            Ok(true) => {}
            Err(err) => {
                warn_store(key, &err);
                return observation;
            }
        }
        let (Some(diff), Some(previous)) = (diff, latest) else {
            self.remember(key, &fingerprint, None);
            return observation;
        };
        if diff.is_empty() {
            self.remember(key, &fingerprint, Some(diff));
            return observation;
        }
        let event = self.announcement(&sighting, &fingerprint, &previous.fingerprint, &diff);
        if let Err(err) = self.bus.publish(std::slice::from_ref(&event)).await {
            tracing::warn!(
                provider = %key.provider,
                subject = %key.subject,
                fingerprint = %fingerprint,
                error = %error_chain(&err),
                "new payload shape not announced; forgotten so the next sighting announces it"
            );
            if let Err(err) = self.store.forget(key, &fingerprint).await {
                warn_store(key, &err);
            }
            return observation;
        }
        write_lines(&schema_changed_line(key, &fingerprint, &diff, self.origin));
        self.remember(key, &fingerprint, Some(diff));
        observation.announced = true;
        observation
    }

    /// The `provider.schema_changed` event of a new shape. Its id derives from the key
    /// and fingerprint alone, so a repeated announcement deduplicates.
    fn announcement(
        &self,
        sighting: &Sighting<'_>,
        fingerprint: &Fingerprint,
        previous: &Fingerprint,
        diff: &ShapeDiff,
    ) -> CloudEvent {
        let key = sighting.key;
        let (event_type, resource) = split_subject(&key.subject);
        let mut data = json!({
            "provider": key.provider,
            "subject": key.subject,
            "event_type": event_type,
            "resource": resource,
            "api_version": sighting.api_version,
            "origin": self.origin.as_str(),
            "fingerprint": fingerprint.0,
            "previous_fingerprint": previous.0,
        });
        if let (Value::Object(data), Value::Object(lists)) = (&mut data, diff.to_json()) {
            data.extend(lists);
        }
        let mut event = CloudEvent::new(
            &key.provider,
            &fingerprint.0,
            &format!("{SCHEMA_CHANGED}:{}", key.subject),
            SCHEMA_CHANGED.to_owned(),
            None,
            rfc3339_millis(self.clock.now()),
            data,
        );
        event.providereventid = sighting.provider_event_id.to_owned();
        event
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(ShapeKey, Fingerprint), Option<ShapeDiff>>> {
        self.known
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn remember(&self, key: &ShapeKey, fingerprint: &Fingerprint, diff: Option<ShapeDiff>) {
        let mut known = self.lock();
        if known.len() >= MAX_REMEMBERED {
            known.clear();
        }
        known.insert((key.clone(), fingerprint.clone()), diff);
    }
}

/// `(event_type, resource)` of a subject, for an announcement's data.
fn split_subject(subject: &str) -> (Option<&str>, Option<&str>) {
    match subject.split_once(':') {
        Some(("event", "*")) => (None, None),
        Some(("event", event_type)) => (Some(event_type), None),
        Some(("resource" | "contract", resource)) => (None, Some(resource)),
        _ => (None, None),
    }
}

fn warn_store(key: &ShapeKey, err: &ShapeStoreError) {
    tracing::warn!(
        provider = %key.provider,
        subject = %key.subject,
        error = %error_chain(err),
        "payload shape not compared: the shape store failed"
    );
}

/// The line (and metric) of an announced shape: `SchemaChanges` 1 under the provider,
/// with the key, fingerprint and the diff's summary.
pub fn schema_changed_line(
    key: &ShapeKey,
    fingerprint: &Fingerprint,
    diff: &ShapeDiff,
    origin: Origin,
) -> Vec<u8> {
    OutcomeLine::new("WARN", "provider payload schema changed")
        .text("subject", &key.subject)
        .text("fingerprint", &fingerprint.0)
        .text("origin", origin.as_str())
        .text("diff", &diff.to_string())
        .with_metrics(
            &key.provider,
            &[Metric::one(SCHEMA_CHANGES_METRIC, 1.0, "Count")],
        )
}

#[cfg(test)]
#[path = "drift_tests.rs"]
mod tests;
