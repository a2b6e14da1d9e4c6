use std::sync::atomic::{AtomicUsize, Ordering};

use junction_aws::clock::FixedClock;
use junction_aws::events::InMemoryEventBus;
use serde_json::json;

use super::*;

fn shape(value: Value) -> Shape {
    Shape::of(&value)
}

#[test]
fn a_shape_lists_sorted_paths_with_types_and_collapses_arrays() {
    let got = shape(json!({
        "id": "evt_1",
        "amount": 10,
        "items": [{"sku": "a", "qty": 1}, {"sku": "b", "note": null}],
        "odd key": true,
        "metadata": {"customer_key": "x"},
        "Region__c": "EMEA",
    }));
    let want: BTreeMap<String, String> = [
        ("$", "object"),
        ("$.amount", "number"),
        ("$.id", "string"),
        ("$.items", "array"),
        ("$.items[]", "object"),
        ("$.items[].note", "null"),
        ("$.items[].qty", "number"),
        ("$.items[].sku", "string"),
        ("$.metadata", "object"),
        ("$[\"odd key\"]", "boolean"),
    ]
    .into_iter()
    .map(|(path, kind)| (path.to_owned(), kind.to_owned()))
    .collect();
    assert_eq!(got.0, want);
}

#[test]
fn elements_of_different_types_join_their_types() {
    let got = shape(json!({"ids": [1, "two"]}));
    assert_eq!(got.0["$.ids[]"], "number|string");
}

#[test]
fn the_fingerprint_ignores_values_and_key_order_but_not_types() {
    let a = shape(json!({"id": "1", "n": 1, "tags": ["x"]}));
    let b = shape(json!({"tags": ["y", "z"], "n": 2.5, "id": "2"}));
    assert_eq!(a.fingerprint(), b.fingerprint());
    let c = shape(json!({"id": 1, "n": 1, "tags": ["x"]}));
    assert_ne!(a.fingerprint(), c.fingerprint());
    assert_eq!(a.fingerprint().0.len(), 32);
}

#[test]
fn a_diff_names_fields_added_removed_and_changed_in_type() {
    let old = shape(json!({"id": "1", "amount": 10, "status": "open"}));
    let new = shape(json!({"id": 1, "status": "open", "currency": "eur"}));
    let diff = old.diff(&new);
    assert_eq!(diff.added, vec![Field::new("$.currency", "string")]);
    assert_eq!(diff.removed, vec![Field::new("$.amount", "number")]);
    assert_eq!(
        diff.changed,
        vec![TypeChange {
            path: "$.id".into(),
            from: "string".into(),
            to: "number".into()
        }]
    );
    assert_eq!(
        diff.to_string(),
        "added $.currency (string); removed $.amount (number); changed $.id string -> number"
    );
}

#[test]
fn a_null_is_not_a_type_change() {
    let old = shape(json!({"closed_at": null}));
    let new = shape(json!({"closed_at": "2026-01-01"}));
    assert!(old.diff(&new).is_empty());
    assert!(new.diff(&old).is_empty());
}

#[test]
fn a_huge_payload_is_cut_and_marked() {
    let members: serde_json::Map<String, Value> = (0..MAX_PATHS + 50)
        .map(|n| (format!("f{n}"), json!(n)))
        .collect();
    let got = shape(Value::Object(members));
    assert!(got.len() <= MAX_PATHS + 1, "{}", got.len());
    assert_eq!(got.0.get(TRUNCATED).map(String::as_str), Some("object"));
}

#[test]
fn a_long_diff_summary_says_how_many_more() {
    let old = shape(json!({}));
    let new = shape(Value::Object(
        (0..12).map(|n| (format!("f{n:02}"), json!(n))).collect(),
    ));
    let text = old.diff(&new).to_string();
    assert!(text.ends_with("and 4 more"), "{text}");
}

/// Counts the store's reads and writes.
#[derive(Debug, Default)]
struct CountingStore {
    inner: InMemoryShapeStore,
    gets: AtomicUsize,
    writes: AtomicUsize,
}

#[async_trait]
impl ShapeStore for CountingStore {
    async fn get(
        &self,
        key: &ShapeKey,
        fingerprint: &Fingerprint,
    ) -> Result<Option<KnownShape>, ShapeStoreError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key, fingerprint).await
    }
    async fn latest(&self, key: &ShapeKey) -> Result<Option<KnownShape>, ShapeStoreError> {
        self.inner.latest(key).await
    }
    async fn record(&self, key: &ShapeKey, shape: &KnownShape) -> Result<bool, ShapeStoreError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.record(key, shape).await
    }
    async fn forget(
        &self,
        key: &ShapeKey,
        fingerprint: &Fingerprint,
    ) -> Result<(), ShapeStoreError> {
        self.inner.forget(key, fingerprint).await
    }
}

struct Fixture {
    store: Arc<CountingStore>,
    bus: Arc<InMemoryEventBus>,
    clock: Arc<FixedClock>,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            store: Arc::new(CountingStore::default()),
            bus: Arc::new(InMemoryEventBus::default()),
            clock: Arc::new(FixedClock::at_unix(1_800_000_000)),
        }
    }

    fn detector(&self) -> DriftDetector {
        DriftDetector::new(self.store.clone(), self.bus.clone(), self.clock.clone())
    }

    fn schema_events(&self) -> Vec<CloudEvent> {
        self.bus
            .events()
            .into_iter()
            .filter(|e| e.event_type == SCHEMA_CHANGED)
            .collect()
    }
}

fn key() -> ShapeKey {
    ShapeKey::for_event("stripe", None, Some("invoice.paid"))
}

async fn see(detector: &DriftDetector, body: Value) -> Observation {
    detector
        .observe_body(
            &key(),
            "evt_1",
            body.to_string().as_bytes(),
            Some("2024-06-20"),
        )
        .await
        .expect("JSON")
}

#[tokio::test]
async fn the_first_shape_is_a_baseline_and_an_unchanged_shape_is_silent_and_free() {
    let f = Fixture::new();
    let detector = f.detector();
    let first = see(&detector, json!({"id": "1", "amount": 5})).await;
    assert_eq!((first.diff.as_ref(), first.announced), (None, false));
    for n in 0..5 {
        let again = see(&detector, json!({"id": n.to_string(), "amount": n})).await;
        assert!(!again.announced);
    }
    assert!(f.schema_events().is_empty());
    assert_eq!(
        f.store.gets.load(Ordering::SeqCst),
        1,
        "one read per shape per container"
    );
    assert_eq!(
        f.store.writes.load(Ordering::SeqCst),
        1,
        "one write per new shape"
    );
}

#[tokio::test]
async fn a_new_shape_is_announced_once_with_its_diff() {
    let f = Fixture::new();
    let first = f.detector();
    see(&first, json!({"id": "1", "amount": 5, "status": "open"})).await;
    f.clock.advance(time::Duration::minutes(1));
    let changed = json!({"id": 1, "status": "open", "currency": "eur"});
    let seen = see(&first, changed.clone()).await;
    assert!(seen.announced);
    // Another container sees the same new shape: the store already has it, no event.
    let second = f.detector();
    let again = see(&second, changed.clone()).await;
    assert!(!again.announced);
    assert_eq!(again.diff, seen.diff);
    see(&first, changed).await;
    let events = f.schema_events();
    assert_eq!(events.len(), 1, "{events:?}");
    let data = &events[0].data;
    assert_eq!(events[0].source, "junction/stripe");
    assert_eq!(data["event_type"], "invoice.paid");
    assert_eq!(data["api_version"], "2024-06-20");
    assert_eq!(data["origin"], "consumer");
    assert_eq!(
        data["added"],
        json!([{"path": "$.currency", "type": "string"}])
    );
    assert_eq!(
        data["removed"],
        json!([{"path": "$.amount", "type": "number"}])
    );
    assert_eq!(
        data["changed"],
        json!([{"path": "$.id", "from": "string", "to": "number"}])
    );
    assert_eq!(data["fingerprint"], seen.fingerprint.0);
}

#[tokio::test]
async fn racing_containers_announce_a_shape_once() {
    let f = Fixture::new();
    see(&f.detector(), json!({"id": "1"})).await;
    f.clock.advance(time::Duration::minutes(1));
    let (a, b) = (f.detector(), f.detector());
    let (x, y) = tokio::join!(
        see(&a, json!({"id": "1", "extra": true})),
        see(&b, json!({"id": "1", "extra": false}))
    );
    assert_eq!(u8::from(x.announced) + u8::from(y.announced), 1);
    assert_eq!(f.schema_events().len(), 1);
}

#[tokio::test]
async fn an_announcement_the_bus_refused_is_made_by_the_next_sighting() {
    let f = Fixture::new();
    let detector = f.detector();
    see(&detector, json!({"id": "1"})).await;
    f.clock.advance(time::Duration::minutes(1));
    f.bus.set_failing(true);
    assert!(!see(&detector, json!({"id": 1})).await.announced);
    f.bus.set_failing(false);
    let retried = see(&detector, json!({"id": 2})).await;
    assert!(retried.announced);
    assert_eq!(f.schema_events().len(), 1);
}

#[tokio::test]
async fn a_nullability_change_is_recorded_but_not_announced() {
    let f = Fixture::new();
    let detector = f.detector();
    see(&detector, json!({"closed_at": null})).await;
    f.clock.advance(time::Duration::minutes(1));
    let seen = see(&detector, json!({"closed_at": "2026-01-01"})).await;
    assert!(!seen.announced);
    assert_eq!(f.store.inner.shapes(&key()).len(), 2);
    assert!(f.schema_events().is_empty());
}

#[tokio::test]
async fn a_body_that_is_not_json_is_not_compared() {
    let f = Fixture::new();
    let seen = f
        .detector()
        .observe_body(&key(), "evt", b"a=1&b=2", None)
        .await;
    assert_eq!(seen, None);
}

#[test]
fn the_announcement_line_carries_the_alarm_metric() {
    let diff = shape(json!({"a": 1})).diff(&shape(json!({"b": 1})));
    let line = schema_changed_line(
        &key(),
        &Fingerprint("f".repeat(32)),
        &diff,
        Origin::Consumer,
    );
    let parsed: Value = serde_json::from_slice(&line).expect("one JSON line");
    assert_eq!(parsed["SchemaChanges"], 1);
    assert_eq!(parsed["Provider"], "stripe");
    assert_eq!(
        parsed["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"],
        SCHEMA_CHANGES_METRIC
    );
    assert_eq!(parsed["subject"], "event:invoice.paid");
}

#[test]
fn sampling_one_in_one_takes_every_payload() {
    let f = Fixture::new();
    let detector = f.detector().with_sampling(Sampling { every: 0 });
    assert!((0..100).all(|_| detector.sampled()));
}
