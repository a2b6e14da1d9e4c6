//! Normalization: provider payloads → Junction's common models.
//!
//! The event consumer (and the poll worker) hand every verified payload to one entry
//! point, [`normalize`], with a [`RawEvent`] built from the queue message (provider,
//! event type and id attributes, forwarded headers, raw body) plus the provider's pinned
//! API version from the catalog. The result is a [`Normalization`]: zero or more
//! [`Normalized`] items (a HubSpot delivery is an array of events; an Asana delivery is
//! a list; a Salesforce CDC event can name several records) and, when the payload states
//! an API version other than the pinned one, a [`VersionMismatch`] for the consumer to
//! log and count.
//!
//! Each item is one of:
//! - a common-model record: [`MessageGroup`] (Gmail threads, Slack conversations,
//!   Outlook conversations from their messages),
//!   [`PipelineItem`] (HubSpot deals, Salesforce opportunities), [`WorkItem`] (Asana tasks,
//!   Linear issues), each with a [`RecordMeta`] carrying `mapping_version`, the record id,
//!   the source timestamp and the change kind;
//! - a [`ProviderEvent`] pass-through for providers (and event types) without a common
//!   model;
//! - a [`FetchRequest`] when the payload only carries an id (HubSpot creation and
//!   property-change events, Asana event stubs, Gmail push notifications, Salesforce gap
//!   events): the record must be fetched before it can be mapped, which a later stage
//!   does. Nothing is invented from an id.
//!
//! Dispatch is on the provider and, for polled resources, on [`RawEvent::resource`]:
//!
//! | provider | `resource` | payload | adapter |
//! |---|---|---|---|
//! | `gmail` | `thread` | `users.threads.get` response | `gmail.thread` |
//! | `gmail` | none | Pub/Sub push `{message:{data}}` of `{emailAddress, historyId}` | `gmail.push` (fetch) |
//! | `slack` | `conversation` | `conversations.info` response or a channel object | `slack.conversation` |
//! | `slack` | none | Events API `event_callback` envelope | `slack.event` |
//! | `hubspot` | `deal` | CRM v3 deal object, or a `{results:[…]}` page of them | `hubspot.deal` |
//! | `hubspot` | none | webhook v3 array of events | `hubspot.webhook` |
//! | `salesforce` | `opportunity` | Opportunity sObject, `{records:[…]}` query page, or `OpportunityChangeEvent` (CDC) | `salesforce.opportunity` |
//! | `asana` | `task` | task resource (`{data:{…}}` or bare) | `asana.task` |
//! | `asana` | none | webhook `{events:[…]}` | `asana.webhook` |
//! | `linear` | `issue` | GraphQL `issues` node | `linear.issue` |
//! | `linear` | none | data-change webhook (`Issue` → WorkItem, others pass through) | `linear.webhook` |
//! | `microsoft` | `message` | Graph message delta item (a message, or `@removed`) | `microsoft.message` |
//! | `stripe`, `github`, `shopify`, `square`, `twilio`, `discord`, `standard-webhooks` | none | webhook | `<provider>.event` |
//! | any other | none | JSON webhook | `generic.event` |
//!
//! Every [`NormalizeError`] is permanent: the same bytes fail the same way on every
//! retry, so the consumer sends them to the dead-letter queue with the error's message as
//! the reason. Messages name the adapter and field and never quote payload values.
//!
//! API versions: every adapter here reads every version the provider currently sends
//! (the pass-through keeps the raw JSON; the mapped resources are not versioned in their
//! payloads). When a provider ships a breaking change, a new adapter (with its own
//! `mapping_version`) is added and selected on the received version; the mismatch report
//! is what tells an operator it is time.
//!
//! This module is pure: no I/O, no clock, no AWS. It must not depend on the queue or
//! the webhook modules; the consumer translates queue messages into [`RawEvent`]s.

use std::collections::BTreeMap;

use serde::Serialize;

pub mod dates;
pub mod models;

mod asana;
mod gmail;
mod hubspot;
mod linear;
mod microsoft;
mod passthrough;
mod read;
mod salesforce;
mod slack;

#[cfg(test)]
mod fixture_tests;

pub use dates::{DateError, Timestamp};
pub use models::{
    ChangeKind, FetchRequest, MessageGroup, MessageGroupKind, Model, PipelineItem, PipelineStatus,
    ProviderEvent, RecordMeta, WorkItem, WorkStatus,
};

/// One payload to normalize, borrowed from the queue message (or the poll worker's
/// fetched resource).
#[derive(Debug, Clone, Copy)]
pub struct RawEvent<'a> {
    /// Catalog id of the provider (queue attribute `provider`).
    pub provider: &'a str,
    /// For polled resources, the resource the poll worker fetched (`thread`,
    /// `conversation`, `deal`, `opportunity`, `task`); `None` for webhook deliveries.
    pub resource: Option<&'a str>,
    /// The provider's event type as the ingress extracted it (queue attribute
    /// `event_type`), when the catalog names one.
    pub event_type: Option<&'a str>,
    /// The provider's event id, or the body's SHA-256, as the ingress extracted it
    /// (queue attribute `event_id`). Used when the payload itself has no better id.
    pub event_id: Option<&'a str>,
    /// Forwarded request headers, lower-case names (queue attribute `headers`).
    pub headers: &'a BTreeMap<String, String>,
    /// The raw body bytes.
    pub body: &'a [u8],
    /// The API version pinned for this provider in the catalog, if any.
    pub pinned_api_version: Option<&'a str>,
}

impl RawEvent<'_> {
    /// A forwarded header by lower-case name; the first of `names` present.
    pub(crate) fn header(&self, names: &[&str]) -> Option<&str> {
        names
            .iter()
            .find_map(|name| self.headers.get(*name))
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    }

    /// The body is a form post (Twilio callbacks).
    pub(crate) fn is_xml(&self) -> bool {
        self.header(&["content-type"]).is_some_and(|ct| {
            let mime = ct
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            mime == "text/xml" || mime == "application/xml" || mime.ends_with("+xml")
        })
    }

    pub(crate) fn is_form(&self) -> bool {
        self.header(&["content-type"]).is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        })
    }
}

/// What one payload normalized to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Normalization {
    /// The records, pass-through events and fetch requests, in payload order.
    pub items: Vec<Normalized>,
    /// The API version the payload states it was rendered with, if it states one.
    pub received_api_version: Option<String>,
    /// Set when the payload states a version and it differs from the pinned one: the
    /// items were still produced (with the adapter for that version), and the consumer
    /// logs and counts the mismatch.
    pub version_mismatch: Option<VersionMismatch>,
}

/// A payload rendered with an API version other than the pinned one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionMismatch {
    /// The version pinned in the catalog.
    pub pinned: String,
    /// The version the payload states.
    pub received: String,
}

/// One normalized item, tagged `item` in JSON (`"item": "work_item"`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "item", rename_all = "snake_case")]
pub enum Normalized {
    MessageGroup(MessageGroup),
    PipelineItem(PipelineItem),
    WorkItem(WorkItem),
    ProviderEvent(ProviderEvent),
    /// The payload only identifies the resource; see [`FetchRequest`].
    NeedsFetch(FetchRequest),
}

impl Normalized {
    /// The item's common fields.
    pub fn meta(&self) -> &RecordMeta {
        match self {
            Normalized::MessageGroup(r) => &r.meta,
            Normalized::PipelineItem(r) => &r.meta,
            Normalized::WorkItem(r) => &r.meta,
            Normalized::ProviderEvent(r) => &r.meta,
            Normalized::NeedsFetch(r) => &r.meta,
        }
    }

    /// The common model the item is (or, for a fetch request, will be).
    pub fn model(&self) -> Model {
        match self {
            Normalized::MessageGroup(_) => Model::MessageGroup,
            Normalized::PipelineItem(_) => Model::PipelineItem,
            Normalized::WorkItem(_) => Model::WorkItem,
            Normalized::ProviderEvent(_) => Model::ProviderEvent,
            Normalized::NeedsFetch(r) => r.model,
        }
    }
}

/// An adapter's identity: name and mapping version, stamped on every record it makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Adapter {
    /// `<provider>.<resource>`, e.g. `hubspot.deal`.
    pub name: &'static str,
    /// Bumped whenever the same payload would map differently.
    pub mapping_version: u32,
}

/// Every adapter, for documentation, metrics labels and tests.
pub const ADAPTERS: &[Adapter] = &[
    gmail::THREAD,
    gmail::PUSH,
    slack::CONVERSATION,
    slack::EVENT,
    hubspot::DEAL,
    hubspot::WEBHOOK,
    salesforce::OPPORTUNITY,
    asana::TASK,
    asana::WEBHOOK,
    linear::ISSUE,
    linear::WEBHOOK,
    microsoft::MESSAGE,
    passthrough::STRIPE,
    passthrough::GITHUB,
    passthrough::SHOPIFY,
    passthrough::SQUARE,
    passthrough::TWILIO,
    passthrough::DISCORD,
    passthrough::STANDARD_WEBHOOKS,
    passthrough::GENERIC,
];

/// Why a payload cannot be normalized. Every variant is permanent (retrying the same
/// bytes gives the same answer); messages name the adapter and field, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    /// The poll worker named a resource no adapter handles for this provider.
    #[error("provider `{provider}` has no adapter for polled resource `{resource}`")]
    UnknownResource { provider: String, resource: String },
    /// The body is not the documented shape at all (not JSON, wrong JSON type, a field
    /// of the wrong type).
    #[error("{adapter}: body is not {expected}: {detail}")]
    InvalidBody {
        adapter: &'static str,
        expected: &'static str,
        detail: String,
    },
    /// A field the mapping needs (the record id, the event type) is absent or empty.
    #[error("{adapter}: required field `{field}` is missing")]
    MissingField {
        adapter: &'static str,
        field: String,
    },
    /// A field is present but unusable (an unreadable date, a non-numeric amount).
    #[error("{adapter}: field `{field}` {reason}")]
    InvalidField {
        adapter: &'static str,
        field: String,
        reason: String,
    },
    /// The payload is well-formed but says something this adapter cannot map (Slack
    /// `ok: false`, a CDC event for another object).
    #[error("{adapter}: {reason}")]
    Unsupported {
        adapter: &'static str,
        reason: String,
    },
}

/// Normalizes one payload. See the module docs for the dispatch table.
pub fn normalize(raw: &RawEvent<'_>) -> Result<Normalization, NormalizeError> {
    let unknown = || NormalizeError::UnknownResource {
        provider: raw.provider.to_owned(),
        resource: raw.resource.unwrap_or_default().to_owned(),
    };
    let (items, received_version) = match (raw.provider, raw.resource) {
        ("gmail", Some("thread")) => gmail::thread(raw)?,
        ("gmail", None) => gmail::push(raw)?,
        ("slack", Some("conversation")) => slack::conversation(raw)?,
        ("slack", None) => slack::event(raw)?,
        ("hubspot", Some("deal")) => hubspot::deal(raw)?,
        ("hubspot", None) => hubspot::webhook(raw)?,
        ("salesforce", Some("opportunity")) => salesforce::opportunity(raw)?,
        ("asana", Some("task")) => asana::task(raw)?,
        ("asana", None) => asana::webhook(raw)?,
        ("linear", Some("issue")) => linear::issue(raw)?,
        ("linear", None) => linear::webhook(raw)?,
        ("microsoft", Some("message")) => microsoft::message(raw)?,
        (_, Some(_)) => return Err(unknown()),
        (_, None) => passthrough::event(raw)?,
    };
    Ok(with_version(raw, items, received_version))
}

/// What an adapter returns: the items, and the API version the payload states, if any.
pub(crate) type Adapted = (Vec<Normalized>, Option<String>);

fn with_version(
    raw: &RawEvent<'_>,
    items: Vec<Normalized>,
    received: Option<String>,
) -> Normalization {
    let version_mismatch = match (raw.pinned_api_version, &received) {
        (Some(pinned), Some(received)) if pinned.trim() != received.trim() => {
            Some(VersionMismatch {
                pinned: pinned.to_owned(),
                received: received.clone(),
            })
        }
        _ => None,
    };
    Normalization {
        items,
        received_api_version: received,
        version_mismatch,
    }
}

/// Builds the common fields for a record of `adapter`.
pub(crate) fn meta(
    raw: &RawEvent<'_>,
    adapter: Adapter,
    id: String,
    change: ChangeKind,
    source_timestamp: Option<Timestamp>,
    complete: bool,
) -> RecordMeta {
    RecordMeta {
        provider: raw.provider.to_owned(),
        id,
        adapter: adapter.name,
        mapping_version: adapter.mapping_version,
        change,
        source_timestamp,
        complete,
        cleared_fields: Vec::new(),
        provider_event_id: raw.event_id.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw<'a>(
        provider: &'a str,
        resource: Option<&'a str>,
        headers: &'a BTreeMap<String, String>,
        body: &'a [u8],
    ) -> RawEvent<'a> {
        RawEvent {
            provider,
            resource,
            event_type: None,
            event_id: None,
            headers,
            body,
            pinned_api_version: None,
        }
    }

    #[test]
    fn unknown_polled_resource_is_named() {
        let headers = BTreeMap::new();
        let err = normalize(&raw("hubspot", Some("contact"), &headers, b"{}"))
            .expect_err("no contact adapter");
        assert_eq!(
            err,
            NormalizeError::UnknownResource {
                provider: "hubspot".into(),
                resource: "contact".into()
            }
        );
        let err = normalize(&raw("stripe", Some("charge"), &headers, b"{}")).expect_err("none");
        assert!(matches!(err, NormalizeError::UnknownResource { .. }));
    }

    #[test]
    fn unknown_provider_passes_through_generically() {
        let headers = BTreeMap::new();
        let mut event = raw("acme", None, &headers, br#"{"hello":"world"}"#);
        event.event_id = Some("evt-1");
        event.event_type = Some("thing.created");
        let out = normalize(&event).expect("generic pass-through");
        assert_eq!(out.items.len(), 1);
        let meta = out.items[0].meta();
        assert_eq!(meta.adapter, "generic.event");
        assert_eq!(meta.id, "evt-1");
        assert_eq!(meta.change, ChangeKind::Created);
    }

    #[test]
    fn version_mismatch_only_when_both_known_and_different() {
        let headers = BTreeMap::new();
        let body = br#"{"id":"evt_1","type":"invoice.paid","created":1704164645,"api_version":"2024-06-20","data":{"object":{}}}"#;
        let mut event = raw("stripe", None, &headers, body);
        assert_eq!(normalize(&event).map(|n| n.version_mismatch), Ok(None));
        event.pinned_api_version = Some("2024-06-20");
        assert_eq!(normalize(&event).map(|n| n.version_mismatch), Ok(None));
        event.pinned_api_version = Some("2023-10-16");
        let out = normalize(&event).expect("still processed");
        assert_eq!(out.items.len(), 1);
        assert_eq!(
            out.version_mismatch,
            Some(VersionMismatch {
                pinned: "2023-10-16".into(),
                received: "2024-06-20".into()
            })
        );
    }

    #[test]
    fn request_tokens_never_reach_the_output() {
        let headers = BTreeMap::new();
        let body = br#"{"token":"verification-token-value","type":"event_callback","event_id":"Ev1","event_time":1355517523,"event":{"type":"reaction_added","event_ts":"1355517523.000005"}}"#;
        let out = normalize(&raw("slack", None, &headers, body)).expect("pass-through");
        let text = serde_json::to_string(&out).expect("serializable");
        assert!(!text.contains("verification-token-value"), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
    }

    #[test]
    fn an_empty_hubspot_delivery_yields_nothing() {
        let headers = BTreeMap::new();
        let out = normalize(&raw("hubspot", None, &headers, b"[]")).expect("empty array");
        assert!(out.items.is_empty());
    }

    #[test]
    fn salesforce_overflow_asks_for_a_resync() {
        let headers = BTreeMap::new();
        let body = br#"{"ChangeEventHeader":{"entityName":"Opportunity","recordIds":[],"changeType":"GAP_OVERFLOW","commitTimestamp":1707582000000}}"#;
        let out = normalize(&raw("salesforce", Some("opportunity"), &headers, body))
            .expect("overflow maps");
        match out.items.as_slice() {
            [Normalized::NeedsFetch(request)] => {
                assert_eq!(request.meta.id, "*");
                assert_eq!(request.model, Model::PipelineItem);
            }
            other => panic!("expected one fetch request, got {other:?}"),
        }
    }

    #[test]
    fn a_twilio_cloudevent_without_id_is_a_missing_field() {
        let headers = BTreeMap::new();
        let body = br#"[{"specversion":"1.0","type":"com.twilio.messaging.message.sent","time":"2024-01-02T03:04:05Z"}]"#;
        let err = normalize(&raw("twilio", None, &headers, body)).expect_err("no id");
        assert_eq!(
            err,
            NormalizeError::MissingField {
                adapter: "twilio.event",
                field: "[0].id".into()
            }
        );
    }

    #[test]
    fn a_body_that_is_not_json_is_invalid_and_not_quoted() {
        let headers = BTreeMap::new();
        let err =
            normalize(&raw("stripe", None, &headers, b"sk_live_not_json")).expect_err("not JSON");
        assert!(matches!(err, NormalizeError::InvalidBody { .. }), "{err}");
        assert!(!err.to_string().contains("sk_live"), "{err}");
    }

    #[test]
    fn every_adapter_name_is_unique() {
        let mut names: Vec<_> = ADAPTERS.iter().map(|a| a.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ADAPTERS.len());
    }
}
