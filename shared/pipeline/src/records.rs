//! The record store: the latest normalized record per (provider, scope, model, id), and
//! the conflict rules that decide whether an incoming record is applied.
//!
//! Providers deliver out of order. Each record carries the provider's source timestamp
//! (its last-modified or occurred time), and writes are conditional on it:
//! - newer than the stored record → applied (a partial record, `complete: false`, is
//!   merged field by field into what is stored);
//! - older → stale: not applied, not published, counted;
//! - same time and same content → unchanged: the write already happened (a redelivery,
//!   perhaps after a crash before publishing), so the event is published again with its
//!   stable id;
//! - same time, different content → a conflict the rules cannot settle: stored beside
//!   the record for review and announced as a `<model>.conflict` event, not applied.
//!
//! Records without a source timestamp cannot be ordered; they are applied on arrival.
//!
//! Source-of-truth priority: a record version arrives by one [`Origin`], pushed by the
//! provider (`webhook`) or fetched from its API (`poll`). A [`FieldPriority`] rule such
//! as `pipeline_item.amount=poll>webhook` makes one origin authoritative for a field:
//! once a higher-priority origin has set the field, a newer version from a lower one
//! does not overwrite it (it may still fill the field while it is empty). The stored
//! record remembers which origin set each ruled field. Fields without a rule follow
//! last-write-wins alone.
//!
//! The rules live here once ([`apply`]), over three storage operations
//! ([`RecordStore`]): DynamoDB in Lambda ([`DynamoRecordStore`], in its own module
//! `dynamo`, the only one here that knows the SDK), memory in unit tests.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use async_trait::async_trait;
use serde_json::Value;

use crate::idempotency::StoreError;
use crate::normalize::Model;

mod dynamo;

pub use dynamo::DynamoRecordStore;

/// How a record version reached Junction (queue attribute `origin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Pushed by the provider: a webhook delivery (the default).
    Webhook,
    /// Fetched from the provider's API by the poll worker.
    Poll,
}

impl Origin {
    /// The name used in queue attributes and priority rules.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Webhook => "webhook",
            Origin::Poll => "poll",
        }
    }

    /// The origin by name.
    pub fn from_name(name: &str) -> Option<Origin> {
        [Origin::Webhook, Origin::Poll]
            .into_iter()
            .find(|origin| origin.as_str() == name)
    }
}

/// A rule that did not parse, naming the rule and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule `{rule}`: {reason}")]
pub struct PriorityError {
    pub rule: String,
    pub reason: String,
}

/// Source-of-truth priority per model and field: which origin wins a field when both
/// supply it. Written `model.field=origin>origin`, rules separated by commas, e.g.
/// `pipeline_item.amount=poll>webhook,work_item.status=webhook>poll`. Empty: no rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPriority {
    /// (model, field) → origins, highest priority first.
    rules: BTreeMap<(Model, &'static str), Vec<Origin>>,
}

impl FieldPriority {
    /// Parses the rules, checking each model, field and origin name.
    pub fn parse(text: &str) -> Result<FieldPriority, PriorityError> {
        let mut rules = BTreeMap::new();
        for rule in text.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let error = |reason: String| PriorityError {
                rule: rule.to_owned(),
                reason,
            };
            let (target, order) = rule
                .split_once('=')
                .ok_or_else(|| error("expected `model.field=origin>origin`".into()))?;
            let (model_name, field_name) = target
                .trim()
                .split_once('.')
                .ok_or_else(|| error("expected `model.field` before `=`".into()))?;
            let model = Model::from_name(model_name)
                .filter(|model| Model::RECORDS.contains(model))
                .ok_or_else(|| {
                    error(format!(
                        "unknown model `{model_name}` (one of message_group, pipeline_item, work_item)"
                    ))
                })?;
            let field = model
                .fields()
                .iter()
                .copied()
                .find(|field| *field == field_name)
                .ok_or_else(|| {
                    error(format!(
                        "unknown field `{field_name}` of {} (fields: {})",
                        model.as_str(),
                        model.fields().join(", ")
                    ))
                })?;
            let mut origins = Vec::new();
            for name in order.split('>').map(str::trim) {
                let origin = Origin::from_name(name)
                    .ok_or_else(|| error(format!("unknown origin `{name}` (webhook or poll)")))?;
                if origins.contains(&origin) {
                    return Err(error(format!("origin `{name}` listed twice")));
                }
                origins.push(origin);
            }
            if origins.len() < 2 {
                return Err(error("name at least two origins, highest first".into()));
            }
            if rules.insert((model, field), origins).is_some() {
                return Err(error("a second rule for the same field".into()));
            }
        }
        Ok(FieldPriority { rules })
    }

    /// The ruled fields of `model` with their origins, highest priority first.
    fn rules_for(&self, model: Model) -> impl Iterator<Item = (&'static str, &[Origin])> {
        self.rules
            .iter()
            .filter(move |((ruled, _), _)| *ruled == model)
            .map(|((_, field), origins)| (*field, origins.as_slice()))
    }
}

/// An incoming record version.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordWrite {
    /// `provider#scope#model#id`.
    pub key: String,
    /// The record's model (for the priority rules).
    pub model: Model,
    /// How this version reached Junction.
    pub origin: Origin,
    /// The delivery carrying it (provider event id, or the poll's record-version id):
    /// remembered with the stored version, so an identical version arriving by another
    /// delivery is recognised as already published.
    pub event: String,
    /// The provider's source timestamp in Unix milliseconds, when it has one.
    pub source_ms: Option<i64>,
    /// False for partial records, merged into the stored one.
    pub complete: bool,
    /// The normalized record (a JSON object).
    pub record: Value,
}

impl RecordWrite {
    /// The store key for a record.
    pub fn key(provider: &str, scope: Option<&str>, model: &str, id: &str) -> String {
        format!("{provider}#{}#{model}#{id}", scope.unwrap_or("-"))
    }
}

/// What applying a record did.
#[derive(Debug, Clone, PartialEq)]
pub enum ApplyOutcome {
    /// Stored; publish the stored record (merged, for partial writes).
    Applied(Value),
    /// Already stored exactly like this by this same delivery (a redelivery, perhaps
    /// after a crash before publishing); publish again (same stable event id).
    Unchanged(Value),
    /// Already stored exactly like this by another delivery (a reconciliation poll
    /// fetching what a webhook delivered): already published, nothing to do.
    AlreadyCurrent,
    /// Older than the stored record: dropped.
    Stale,
    /// Same source time, different content: kept for review, not applied.
    Conflict { stored: Value },
}

/// The stored side of a record.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredVersion {
    pub source_ms: Option<i64>,
    pub record: Value,
    /// Which origin last set each field that has a priority rule.
    pub origins: BTreeMap<String, Origin>,
    /// The delivery that stored this version (`None` for versions stored before this
    /// was recorded).
    pub written_by: Option<String>,
}

/// Conditional storage of records.
#[async_trait]
pub trait RecordStore: Send + Sync + std::fmt::Debug {
    async fn read(&self, key: &str) -> Result<Option<StoredVersion>, StoreError>;

    /// Writes `next` if the stored version is still `expected` (`None`: no record yet).
    /// Returns false when another writer got there first.
    async fn write_if(
        &self,
        key: &str,
        expected: Option<&StoredVersion>,
        next: &StoredVersion,
    ) -> Result<bool, StoreError>;

    /// Keeps a conflicting version for review.
    async fn store_conflict(&self, key: &str, incoming: &StoredVersion) -> Result<(), StoreError>;
}

/// How many times an optimistic write is retried when another writer races it.
const WRITE_ATTEMPTS: usize = 5;

/// Applies `write` under the conflict rules and the field priority.
pub async fn apply(
    store: &dyn RecordStore,
    priority: &FieldPriority,
    write: &RecordWrite,
) -> Result<ApplyOutcome, StoreError> {
    for _ in 0..WRITE_ATTEMPTS {
        let stored = store.read(&write.key).await?;
        let decision = decide(stored.as_ref(), priority, write);
        let next = match decision {
            Decision::Write(next) => next,
            Decision::Done(outcome) => {
                if let ApplyOutcome::Conflict { .. } = &outcome {
                    let incoming = StoredVersion {
                        source_ms: write.source_ms,
                        record: write.record.clone(),
                        origins: BTreeMap::new(),
                        written_by: Some(write.event.clone()),
                    };
                    store.store_conflict(&write.key, &incoming).await?;
                }
                return Ok(outcome);
            }
        };
        if store.write_if(&write.key, stored.as_ref(), &next).await? {
            return Ok(ApplyOutcome::Applied(next.record));
        }
    }
    Err(StoreError("record write kept losing races".into()))
}

enum Decision {
    Write(StoredVersion),
    Done(ApplyOutcome),
}

/// Fields of a normalized record that describe the delivery, not the record's state: a
/// webhook's `updated` and a poll's snapshot of the same version, mapped by different
/// adapters of one provider from different deliveries, are the same state.
const DELIVERY_FIELDS: [&str; 5] = [
    "adapter",
    "mapping_version",
    "change",
    "complete",
    "provider_event_id",
];

/// Whether two records describe the same state (equal apart from [`DELIVERY_FIELDS`]).
/// A deletion is state, though: a deleted record never equals a live one, even when the
/// provider's delete left every field and the modification time as they were.
fn same_state(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            let state = |record: &serde_json::Map<String, Value>| {
                let mut state: serde_json::Map<String, Value> = record
                    .iter()
                    .filter(|(key, _)| !DELIVERY_FIELDS.contains(&key.as_str()))
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect();
                let deleted = record.get("change").and_then(Value::as_str) == Some("deleted");
                state.insert("change".into(), Value::Bool(deleted));
                state
            };
            state(a) == state(b)
        }
        _ => a == b,
    }
}

fn decide(
    stored: Option<&StoredVersion>,
    priority: &FieldPriority,
    write: &RecordWrite,
) -> Decision {
    let Some(stored) = stored else {
        let (record, origins) = prioritize(None, priority, write, write.record.clone());
        return Decision::Write(StoredVersion {
            source_ms: write.source_ms,
            record,
            origins,
            written_by: Some(write.event.clone()),
        });
    };
    let next = || {
        let merged = if write.complete {
            write.record.clone()
        } else {
            merge(&stored.record, &write.record)
        };
        prioritize(Some(stored), priority, write, merged)
    };
    let unchanged = || {
        let same_delivery = stored
            .written_by
            .as_deref()
            .is_none_or(|writer| writer == write.event);
        Decision::Done(if same_delivery {
            ApplyOutcome::Unchanged(stored.record.clone())
        } else {
            ApplyOutcome::AlreadyCurrent
        })
    };
    // A deletion at the stored record's own time is newer knowledge (providers often
    // delete without touching the modification time): applied, not a conflict.
    let deleted = |record: &Value| record.get("change").and_then(Value::as_str) == Some("deleted");
    let deletes = deleted(&write.record) && !deleted(&stored.record);
    match (write.source_ms, stored.source_ms) {
        (Some(new), Some(old)) if new < old => Decision::Done(ApplyOutcome::Stale),
        (Some(new), Some(old)) if new == old && !deletes => {
            if same_state(&next().0, &stored.record) {
                unchanged()
            } else {
                Decision::Done(ApplyOutcome::Conflict {
                    stored: stored.record.clone(),
                })
            }
        }
        _ => {
            let (record, origins) = next();
            if same_state(&record, &stored.record) && write.source_ms == stored.source_ms {
                unchanged()
            } else {
                Decision::Write(StoredVersion {
                    source_ms: write.source_ms.or(stored.source_ms),
                    record,
                    origins,
                    written_by: Some(write.event.clone()),
                })
            }
        }
    }
}

/// Applies the priority rules to a candidate record: a ruled field that a
/// higher-priority origin set keeps its stored value; otherwise the field takes the
/// candidate's value and the write's origin. Returns the record and its field origins.
fn prioritize(
    stored: Option<&StoredVersion>,
    priority: &FieldPriority,
    write: &RecordWrite,
    mut record: Value,
) -> (Value, BTreeMap<String, Origin>) {
    let mut origins = stored.map(|s| s.origins.clone()).unwrap_or_default();
    let Some(fields) = record.as_object_mut() else {
        return (record, origins);
    };
    for (field, order) in priority.rules_for(write.model) {
        let rank = |origin: Origin| {
            order
                .iter()
                .position(|o| *o == origin)
                .unwrap_or(usize::MAX)
        };
        let stored_value = stored
            .and_then(|s| s.record.get(field))
            .filter(|value| !is_empty(value));
        let stored_origin = origins.get(field).copied();
        match (stored_value, stored_origin) {
            (Some(value), Some(origin)) if rank(origin) < rank(write.origin) => {
                fields.insert(field.to_owned(), value.clone());
            }
            _ if fields.get(field).is_some_and(|value| !is_empty(value)) => {
                origins.insert(field.to_owned(), write.origin);
            }
            _ => {}
        }
    }
    (record, origins)
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// A partial record's known fields (non-null) over the stored record's.
fn merge(stored: &Value, partial: &Value) -> Value {
    match (stored, partial) {
        (Value::Object(base), Value::Object(update)) => {
            let mut merged = base.clone();
            for (field, value) in update {
                if !value.is_null() {
                    merged.insert(field.clone(), value.clone());
                }
            }
            Value::Object(merged)
        }
        _ => partial.clone(),
    }
}

/// Records in memory, with the same conditions.
#[derive(Debug, Default)]
pub struct InMemoryRecordStore {
    records: Mutex<HashMap<String, StoredVersion>>,
    conflicts: Mutex<Vec<(String, StoredVersion)>>,
}

impl InMemoryRecordStore {
    /// Conflicts kept for review.
    pub fn conflicts(&self) -> Vec<(String, StoredVersion)> {
        self.conflicts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[async_trait]
impl RecordStore for InMemoryRecordStore {
    async fn read(&self, key: &str) -> Result<Option<StoredVersion>, StoreError> {
        Ok(self
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned())
    }

    async fn write_if(
        &self,
        key: &str,
        expected: Option<&StoredVersion>,
        next: &StoredVersion,
    ) -> Result<bool, StoreError> {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if records.get(key) != expected {
            return Ok(false);
        }
        records.insert(key.to_owned(), next.clone());
        Ok(true)
    }

    async fn store_conflict(&self, key: &str, incoming: &StoredVersion) -> Result<(), StoreError> {
        self.conflicts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((key.to_owned(), incoming.clone()));
        Ok(())
    }
}

/// The conflict rules every store must uphold, run against each adapter.
pub async fn check_store_contract(store: &dyn RecordStore) {
    let write = |ms: Option<i64>, complete: bool, record: Value| RecordWrite {
        key: RecordWrite::key("linear", None, "work_item", "ISS-1"),
        model: Model::WorkItem,
        origin: Origin::Webhook,
        event: format!("delivery-{}", ms.unwrap_or_default()),
        source_ms: ms,
        complete,
        record,
    };
    let no_rules = FieldPriority::default();
    let outcome = |result: Result<ApplyOutcome, StoreError>| match result {
        Ok(outcome) => outcome,
        Err(err) => panic!("store failed: {err}"),
    };
    let v2 = serde_json::json!({"title": "v2", "status": "started"});
    assert_eq!(
        outcome(apply(store, &no_rules, &write(Some(2_000), true, v2.clone())).await),
        ApplyOutcome::Applied(v2.clone())
    );
    assert_eq!(
        outcome(
            apply(
                store,
                &no_rules,
                &write(Some(1_000), true, serde_json::json!({"title": "v1"}))
            )
            .await
        ),
        ApplyOutcome::Stale,
        "an older version never overwrites a newer one"
    );
    assert_eq!(
        outcome(apply(store, &no_rules, &write(Some(2_000), true, v2.clone())).await),
        ApplyOutcome::Unchanged(v2.clone()),
        "the same delivery again: published again"
    );
    let mut v2_polled = v2.clone();
    v2_polled["adapter"] = serde_json::json!("linear.issue");
    v2_polled["change"] = serde_json::json!("snapshot");
    v2_polled["provider_event_id"] = serde_json::json!("issue:ISS-1:2000");
    let mut polled = write(Some(2_000), true, v2_polled);
    polled.origin = Origin::Poll;
    polled.event = "work_item:ISS-1:2000".into();
    assert_eq!(
        outcome(apply(store, &no_rules, &polled).await),
        ApplyOutcome::AlreadyCurrent,
        "the same version by another delivery (a reconciliation poll): not published twice"
    );
    let rival = serde_json::json!({"title": "rival", "status": "started"});
    assert_eq!(
        outcome(apply(store, &no_rules, &write(Some(2_000), true, rival)).await),
        ApplyOutcome::Conflict { stored: v2.clone() },
        "same time, different content: not applied"
    );
    let partial = serde_json::json!({"status": "completed", "title": null});
    assert_eq!(
        outcome(apply(store, &no_rules, &write(Some(3_000), false, partial)).await),
        ApplyOutcome::Applied(serde_json::json!({"title": "v2", "status": "completed"})),
        "a partial record merges its known fields"
    );
    assert_eq!(
        store
            .read(&RecordWrite::key("linear", None, "work_item", "ISS-1"))
            .await
            .ok()
            .flatten()
            .and_then(|v| v.source_ms),
        Some(3_000)
    );
    // ISS-2: live at 2,000, then deleted without a new modification time.
    let mut live = write(Some(2_000), true, v2.clone());
    live.key = RecordWrite::key("linear", None, "work_item", "ISS-2");
    assert!(matches!(
        outcome(apply(store, &no_rules, &live).await),
        ApplyOutcome::Applied(_)
    ));
    let mut deleted = v2.clone();
    deleted["change"] = serde_json::json!("deleted");
    let mut deletion = write(Some(2_000), true, deleted);
    deletion.key = RecordWrite::key("linear", None, "work_item", "ISS-2");
    deletion.event = "work_item:ISS-1:deleted".into();
    assert!(
        matches!(
            outcome(apply(store, &no_rules, &deletion).await),
            ApplyOutcome::Applied(_)
        ),
        "a deletion that left the modification time alone is applied, not taken for the \
         live record"
    );
    let mut restored = v2.clone();
    restored["change"] = serde_json::json!("snapshot");
    let mut restore = write(Some(2_000), true, restored);
    restore.key = RecordWrite::key("linear", None, "work_item", "ISS-2");
    restore.event = "work_item:ISS-1:2000:again".into();
    assert!(
        matches!(
            outcome(apply(store, &no_rules, &restore).await),
            ApplyOutcome::Conflict { .. }
        ),
        "a live version at the deletion's time cannot be settled automatically"
    );
    check_field_priority(store).await;
}

/// `pipeline_item.amount=poll>webhook`: a newer webhook version does not overwrite the
/// amount a poll set, but sets the other fields; the next poll sets the amount again.
async fn check_field_priority(store: &dyn RecordStore) {
    let rules = FieldPriority::parse("pipeline_item.amount=poll>webhook").expect("valid rule");
    let key = RecordWrite::key("hubspot", Some("portal-1"), "pipeline_item", "42");
    let write = |ms: i64, origin: Origin, record: Value| RecordWrite {
        key: key.clone(),
        model: Model::PipelineItem,
        origin,
        event: format!("{}-{ms}", origin.as_str()),
        source_ms: Some(ms),
        complete: true,
        record,
    };
    let applied = |result: Result<ApplyOutcome, StoreError>| match result {
        Ok(ApplyOutcome::Applied(record)) => record,
        other => panic!("expected an applied write, got {other:?}"),
    };
    let webhook_first = serde_json::json!({"amount": "90", "stage": "new"});
    assert_eq!(
        applied(
            apply(
                store,
                &rules,
                &write(1_000, Origin::Webhook, webhook_first.clone())
            )
            .await
        ),
        webhook_first,
        "a lower-priority origin fills a field nobody set"
    );
    let polled = serde_json::json!({"amount": "100", "stage": "new"});
    assert_eq!(
        applied(apply(store, &rules, &write(2_000, Origin::Poll, polled.clone())).await),
        polled
    );
    assert_eq!(
        applied(
            apply(
                store,
                &rules,
                &write(
                    3_000,
                    Origin::Webhook,
                    serde_json::json!({"amount": "95", "stage": "won"})
                )
            )
            .await
        ),
        serde_json::json!({"amount": "100", "stage": "won"}),
        "the poll's amount stands against a newer webhook; the stage follows last-write-wins"
    );
    let stored = store.read(&key).await.ok().flatten().expect("stored");
    assert_eq!(stored.origins.get("amount"), Some(&Origin::Poll));
    assert_eq!(
        applied(
            apply(
                store,
                &rules,
                &write(
                    4_000,
                    Origin::Poll,
                    serde_json::json!({"amount": "80", "stage": "won"})
                )
            )
            .await
        ),
        serde_json::json!({"amount": "80", "stage": "won"})
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_memory_store_meets_the_contract() {
        let store = InMemoryRecordStore::default();
        check_store_contract(&store).await;
        assert_eq!(store.conflicts().len(), 2, "ISS-1 and ISS-2");
    }

    #[test]
    fn priority_rules_parse_and_name_what_is_wrong() {
        let rules = FieldPriority::parse(
            " pipeline_item.amount=poll>webhook, work_item.status = webhook > poll ",
        )
        .expect("valid rules");
        assert_eq!(rules.rules.len(), 2);
        assert_eq!(FieldPriority::parse(""), Ok(FieldPriority::default()));
        for (text, reason) in [
            (
                "pipeline_item.amount",
                "expected `model.field=origin>origin`",
            ),
            ("amount=poll>webhook", "expected `model.field` before `=`"),
            ("deal.amount=poll>webhook", "unknown model `deal`"),
            (
                "provider_event.raw=poll>webhook",
                "unknown model `provider_event`",
            ),
            (
                "pipeline_item.amout=poll>webhook",
                "unknown field `amout` of pipeline_item",
            ),
            ("pipeline_item.amount=poll>push", "unknown origin `push`"),
            ("pipeline_item.amount=poll", "at least two origins"),
            ("pipeline_item.amount=poll>poll", "listed twice"),
            (
                "work_item.title=poll>webhook,work_item.title=webhook>poll",
                "a second rule",
            ),
        ] {
            let err = FieldPriority::parse(text).expect_err(text);
            assert!(err.to_string().contains(reason), "{text}: {err}");
        }
    }

    #[tokio::test]
    async fn out_of_order_updates_keep_the_newest() {
        let store = InMemoryRecordStore::default();
        let key = RecordWrite::key("hubspot", Some("portal-1"), "pipeline_item", "42");
        for (ms, stage) in [(3, "won"), (1, "new"), (2, "negotiation")] {
            let write = RecordWrite {
                key: key.clone(),
                model: Model::PipelineItem,
                origin: Origin::Webhook,
                event: format!("delivery-{ms}"),
                source_ms: Some(ms),
                complete: true,
                record: serde_json::json!({ "stage": stage }),
            };
            apply(&store, &FieldPriority::default(), &write)
                .await
                .expect("apply");
        }
        let stored = store.read(&key).await.expect("read").expect("stored");
        assert_eq!(stored.record["stage"], "won");
        assert_eq!(stored.source_ms, Some(3));
    }
}
