//! Junction's common models: what the product team consumes instead of each provider's
//! own shapes. `docs/models.md` has the same fields as tables.
//!
//! Every record starts with a [`RecordMeta`] (flattened into the record's JSON) that the
//! record store and the CloudEvent envelope need: which provider and adapter produced
//! it, the record id, the provider's own timestamp for last-write-wins, and what kind of
//! change the payload reported.
//!
//! This module only defines data; it must not depend on any provider module.

use serde::Serialize;

use super::dates::Timestamp;

/// Which common model a record (or a [`FetchRequest`]) belongs to. The CloudEvent `type`
/// is `<model>.<change>`, e.g. `work_item.updated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    MessageGroup,
    PipelineItem,
    WorkItem,
    ProviderEvent,
}

impl Model {
    /// The snake-case name used in event types and record keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Model::MessageGroup => "message_group",
            Model::PipelineItem => "pipeline_item",
            Model::WorkItem => "work_item",
            Model::ProviderEvent => "provider_event",
        }
    }

    /// The models whose records the record store keeps (all but pass-through events).
    pub const RECORDS: [Model; 3] = [Model::MessageGroup, Model::PipelineItem, Model::WorkItem];

    /// The model by its snake-case name.
    pub fn from_name(name: &str) -> Option<Model> {
        [
            Model::MessageGroup,
            Model::PipelineItem,
            Model::WorkItem,
            Model::ProviderEvent,
        ]
        .into_iter()
        .find(|model| model.as_str() == name)
    }

    /// The model's own fields (besides [`RecordMeta`]'s), as named in its JSON: what a
    /// source-of-truth priority rule may name. A fixture test keeps this list in step
    /// with the structs.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Model::MessageGroup => &[
                "kind",
                "name",
                "summary",
                "participants",
                "message_count",
                "member_count",
                "last_message_at",
                "created_at",
                "archived",
                "labels",
            ],
            Model::PipelineItem => &[
                "name",
                "amount",
                "currency",
                "stage",
                "pipeline",
                "status",
                "probability",
                "close_at",
                "owner_id",
                "account_id",
                "created_at",
            ],
            Model::WorkItem => &[
                "key",
                "title",
                "description",
                "status",
                "status_name",
                "priority",
                "assignee_id",
                "assignee_name",
                "due_at",
                "completed_at",
                "created_at",
                "project_ids",
                "labels",
                "parent_id",
                "url",
            ],
            Model::ProviderEvent => &["event_type", "api_version", "raw"],
        }
    }
}

/// What the payload says happened to the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// The provider reported a creation.
    Created,
    /// The provider reported a change.
    Updated,
    /// The provider reported a deletion (or archived/removed state it treats as one).
    Deleted,
    /// The provider reported that a deleted record came back (HubSpot `restore`,
    /// Salesforce `UNDELETE`, Asana `undeleted`).
    Restored,
    /// The payload is the current state (a polled resource) and does not say whether it
    /// is new: the record store decides between created and updated.
    Snapshot,
    /// A provider event that is not a change to a record (`payment_intent.succeeded`).
    Occurred,
}

impl ChangeKind {
    /// The snake-case name used in event types.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Updated => "updated",
            ChangeKind::Deleted => "deleted",
            ChangeKind::Restored => "restored",
            ChangeKind::Snapshot => "snapshot",
            ChangeKind::Occurred => "occurred",
        }
    }
}

/// The fields every record carries, flattened into its JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordMeta {
    /// Catalog id of the provider (`hubspot`).
    pub provider: String,
    /// The provider's id of the record (HubSpot deal id, Linear issue UUID, Slack channel
    /// id); for a [`ProviderEvent`], the provider's event id.
    pub id: String,
    /// The adapter that produced the record (`hubspot.deal`).
    pub adapter: &'static str,
    /// The adapter's mapping version: bumped whenever the same payload would map to a
    /// different record, so stored records can be told apart and re-derived.
    pub mapping_version: u32,
    /// What the payload reported.
    pub change: ChangeKind,
    /// The provider's last-modified (or occurred) time of this state, in UTC: what
    /// last-write-wins compares. `None` when the payload has no such time; the record
    /// store then falls back to the time Junction received it.
    pub source_timestamp: Option<Timestamp>,
    /// `true` when the payload carries the whole record. `false` for partial payloads
    /// (a Slack message event updates only `last_message_at`, a Salesforce CDC update
    /// carries only changed fields, a deletion carries only the id): the record store
    /// must merge the fields present (`Some`/non-empty) into the stored record, never
    /// replace it.
    pub complete: bool,
    /// Model fields the provider explicitly set to null in a partial payload (Salesforce
    /// CDC `nulledFields`), which a merge must clear rather than keep.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cleared_fields: Vec<&'static str>,
    /// The provider's event/delivery id this record came from, when there was one.
    pub provider_event_id: Option<String>,
}

/// A conversation: a Gmail thread or a Slack channel, private channel or DM.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageGroup {
    #[serde(flatten)]
    pub meta: RecordMeta,
    /// What kind of conversation this is.
    pub kind: Option<MessageGroupKind>,
    /// Human name: the Gmail thread's subject (from its first message), the Slack channel
    /// name. `None` for DMs and when the payload lacks it.
    pub name: Option<String>,
    /// A short description: Gmail's thread `snippet`, the Slack channel topic (or its
    /// purpose when the topic is empty).
    pub summary: Option<String>,
    /// Who takes part, as the provider identifies them: e-mail addresses (lower-case,
    /// from `From`/`To`/`Cc` of every message) for Gmail, the other user's id for a
    /// Slack DM. Empty when unknown.
    pub participants: Vec<String>,
    /// Number of messages, when the payload lists them (Gmail).
    pub message_count: Option<u64>,
    /// Number of members (Slack `num_members`).
    pub member_count: Option<u64>,
    /// Time of the newest message.
    pub last_message_at: Option<Timestamp>,
    /// When the conversation started (Slack `created`, Gmail's oldest message).
    pub created_at: Option<Timestamp>,
    /// Whether the conversation is archived (Slack); `None` when the provider has no such
    /// notion or the payload does not say.
    pub archived: Option<bool>,
    /// Provider labels (Gmail label ids across the thread's messages, sorted).
    pub labels: Vec<String>,
}

/// The kinds of [`MessageGroup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageGroupKind {
    /// An e-mail thread.
    EmailThread,
    /// A public channel.
    Channel,
    /// A private channel.
    PrivateChannel,
    /// A one-to-one direct message.
    DirectMessage,
    /// A multi-person direct message.
    GroupDirectMessage,
}

/// A deal moving through a sales pipeline: a HubSpot deal or a Salesforce opportunity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineItem {
    #[serde(flatten)]
    pub meta: RecordMeta,
    /// The deal's name (HubSpot `dealname`, Salesforce `Name`).
    pub name: Option<String>,
    /// The amount as decimal text, exactly as the provider wrote it, so no precision is
    /// lost to floating point (`"1500.00"`).
    pub amount: Option<String>,
    /// ISO 4217 currency (HubSpot `deal_currency_code`, Salesforce `CurrencyIsoCode`,
    /// present only in multi-currency orgs).
    pub currency: Option<String>,
    /// The provider's stage identifier (HubSpot `dealstage` id, Salesforce `StageName`).
    pub stage: Option<String>,
    /// The pipeline the stage belongs to (HubSpot `pipeline`); `None` for Salesforce.
    pub pipeline: Option<String>,
    /// Open, won or lost, when the payload says.
    pub status: Option<PipelineStatus>,
    /// Win probability as a fraction between 0 and 1 (Salesforce's percent is divided
    /// by 100).
    pub probability: Option<f64>,
    /// The expected or actual close time (Salesforce's `CloseDate` is midnight UTC).
    pub close_at: Option<Timestamp>,
    /// The owning user's provider id.
    pub owner_id: Option<String>,
    /// The account/company the deal is with (Salesforce `AccountId`); HubSpot keeps this
    /// in associations, which a deal object does not carry.
    pub account_id: Option<String>,
    /// When the deal was created.
    pub created_at: Option<Timestamp>,
}

/// Where a [`PipelineItem`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineStatus {
    Open,
    Won,
    Lost,
}

/// A unit of work: an Asana task or a Linear issue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkItem {
    #[serde(flatten)]
    pub meta: RecordMeta,
    /// Human key where the provider has one (Linear `ENG-123`).
    pub key: Option<String>,
    /// The title (Asana `name`, Linear `title`).
    pub title: Option<String>,
    /// The description as plain text or Markdown (Asana `notes`, Linear `description`).
    pub description: Option<String>,
    /// The status, mapped to four buckets.
    pub status: Option<WorkStatus>,
    /// The provider's own status name (Linear workflow state name, Asana section name).
    pub status_name: Option<String>,
    /// Priority, lower-case: `urgent`, `high`, `medium`, `low`; `None` when unset.
    pub priority: Option<String>,
    /// The assignee's provider id.
    pub assignee_id: Option<String>,
    /// The assignee's display name, when the payload includes it.
    pub assignee_name: Option<String>,
    /// When it is due (a due date alone is midnight UTC).
    pub due_at: Option<Timestamp>,
    /// When it was completed (or canceled, for Linear).
    pub completed_at: Option<Timestamp>,
    /// When it was created.
    pub created_at: Option<Timestamp>,
    /// Projects it belongs to (Asana project gids, Linear `projectId`).
    pub project_ids: Vec<String>,
    /// Label/tag names.
    pub labels: Vec<String>,
    /// The parent item's id for subtasks/sub-issues.
    pub parent_id: Option<String>,
    /// The provider's web URL for it.
    pub url: Option<String>,
}

/// Where a [`WorkItem`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkStatus {
    /// Not started (Linear `triage`, `backlog`, `unstarted`; Asana incomplete).
    Open,
    /// Being worked on (Linear `started`).
    InProgress,
    /// Finished (Linear `completed`; Asana `completed`).
    Done,
    /// Abandoned (Linear `canceled`).
    Canceled,
}

/// An event from a provider without a common model (Stripe, GitHub, Shopify, Square,
/// Twilio, Discord, Standard Webhooks, and other events of the mapped providers), passed
/// through typed enough to route and deduplicate. `meta.id` is the provider's event id
/// (a SHA-256 of the event when the provider has none) and `meta.source_timestamp` is
/// when the event occurred, where the payload says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderEvent {
    #[serde(flatten)]
    pub meta: RecordMeta,
    /// The provider's event type (`invoice.paid`, `pull_request.opened`, `orders/create`).
    pub event_type: Option<String>,
    /// The API version the payload states it was rendered with, if any.
    pub api_version: Option<String>,
    /// The event exactly as received, as JSON (form bodies become an object of strings),
    /// with per-request tokens (Slack's verification `token`, Discord's interaction
    /// `token`) replaced by `"[redacted]"`.
    pub raw: serde_json::Value,
}

/// The payload only identifies a resource: the record must be fetched from the
/// provider's API before it can be normalized (a later stage does this). Nothing is
/// invented from the id alone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FetchRequest {
    /// `meta.id` is the id of the resource to fetch; `complete` is always `false`.
    #[serde(flatten)]
    pub meta: RecordMeta,
    /// The model the fetched resource will map to.
    pub model: Model,
    /// The provider's resource type to fetch (`deal`, `task`, `Opportunity`, `history`).
    pub resource: String,
    /// The account the resource lives in, when the payload names it (HubSpot
    /// `portalId`, the Gmail mailbox address).
    pub account: Option<String>,
    /// Why a fetch is needed, for logs.
    pub reason: &'static str,
}
