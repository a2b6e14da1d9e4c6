//! Linear → [`WorkItem`] (and pass-through for other models).
//!
//! `linear.webhook`: a data-change webhook (<https://linear.app/developers/webhooks>):
//! `action` (`create`, `update`, `remove`), `type` (`Issue`, `Comment`, `Project`, …),
//! `data` (the entity as it is now), `updatedFrom` (previous values of changed fields, on
//! updates), `url`, `createdAt`, `organizationId`, `webhookTimestamp` (epoch ms),
//! `webhookId`, `actor`. For `Issue`, `data` is the whole issue (`id`, `identifier`,
//! `title`, `description`, `priority` 0–4 / `priorityLabel`, `state{name,type}`,
//! `assignee{id,name}`/`assigneeId`, `labels[]`, `dueDate`, `completedAt`, `canceledAt`,
//! `createdAt`, `updatedAt`, `projectId`, `parentId`, `url`), so every action maps to a
//! complete record. The delivery id is the `Linear-Delivery` header.

use serde::Deserialize;
use serde_json::Value;

use super::{
    Adapted, Adapter, NormalizeError, Normalized, RawEvent,
    dates::Timestamp,
    meta,
    models::{ChangeKind, ProviderEvent, WorkItem, WorkStatus},
    read::{self, NumberOrString},
};

pub(crate) const WEBHOOK: Adapter = Adapter {
    name: "linear.webhook",
    mapping_version: 1,
};

pub(crate) const ISSUE: Adapter = Adapter {
    name: "linear.issue",
    mapping_version: 1,
};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    #[serde(default)]
    action: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    webhook_timestamp: Option<NumberOrString>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Issue {
    id: Option<String>,
    identifier: Option<String>,
    title: Option<String>,
    description: Option<String>,
    priority: Option<i64>,
    priority_label: Option<String>,
    state: Option<State>,
    assignee: Option<Named>,
    assignee_id: Option<String>,
    #[serde(deserialize_with = "read::null_default")]
    labels: Labels,
    due_date: Option<String>,
    completed_at: Option<String>,
    canceled_at: Option<String>,
    created_at: Option<String>,
    updated_at: Option<String>,
    project_id: Option<String>,
    project: Option<Named>,
    parent_id: Option<String>,
    parent: Option<Named>,
    url: Option<String>,
    trashed: Option<bool>,
}

/// Labels as the webhook sends them (an array) or as GraphQL returns them (a
/// connection with `nodes`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Labels {
    List(Vec<Named>),
    Connection {
        #[serde(default, deserialize_with = "read::null_default")]
        nodes: Vec<Named>,
    },
}

impl Default for Labels {
    fn default() -> Self {
        Labels::List(Vec::new())
    }
}

impl Labels {
    fn into_names(self) -> Vec<Option<String>> {
        let (Labels::List(labels) | Labels::Connection { nodes: labels }) = self;
        labels.into_iter().map(|label| label.name).collect()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct State {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Named {
    id: Option<String>,
    name: Option<String>,
}

pub(crate) fn webhook(raw: &RawEvent<'_>) -> Result<Adapted, NormalizeError> {
    let value = read::json_body(WEBHOOK, raw.body)?;
    let payload: Payload = read::typed(WEBHOOK, "a Linear webhook payload", value.clone())?;
    let action = read::required_str(WEBHOOK, "action", payload.action)?;
    let kind = read::required_str(WEBHOOK, "type", payload.kind)?;
    let delivered = read::millis(
        WEBHOOK,
        "webhookTimestamp",
        payload.webhook_timestamp.as_ref(),
    )?;
    let delivery_id = raw
        .header(&["linear-delivery"])
        .or(raw.event_id)
        .map(str::to_owned);
    let change = match action.as_str() {
        "create" => ChangeKind::Created,
        "update" => ChangeKind::Updated,
        "remove" => ChangeKind::Deleted,
        _ => ChangeKind::Occurred,
    };

    if kind != "Issue" || change == ChangeKind::Occurred {
        let id = delivery_id
            .clone()
            .unwrap_or_else(|| read::sha256_id(raw.body));
        let mut meta = meta(raw, WEBHOOK, id, change, delivered, true);
        meta.provider_event_id = delivery_id;
        let event = ProviderEvent {
            meta,
            event_type: Some(format!("{kind}.{action}")),
            api_version: None,
            raw: value,
        };
        return Ok((vec![Normalized::ProviderEvent(event)], None));
    }

    let data = read::required(WEBHOOK, "data", payload.data)?;
    let issue: Issue = read::typed(WEBHOOK, "a Linear Issue", data)?;
    let mut record = work_item(raw, WEBHOOK, "data.", issue, change, delivered)?;
    record.meta.provider_event_id = delivery_id;
    Ok((vec![Normalized::WorkItem(record)], None))
}

/// `linear.issue`: one node of the GraphQL `issues` connection the `linear-issues`
/// poller reads (type `Issue` in `linear/linear` `packages/sdk/src/schema.graphql`): the
/// webhook's issue fields, with `labels { nodes }`, `project { id }` and `parent { id }`
/// in place of the webhook's `labels[]`, `projectId` and `parentId`. A trashed issue
/// (`trashed`: "in the trash bin", i.e. deleted in Linear) is a deletion; an archived one
/// (Linear archives closed issues after a while) still exists.
pub(crate) fn issue(raw: &RawEvent<'_>) -> Result<Adapted, NormalizeError> {
    let value = read::json_body(ISSUE, raw.body)?;
    let issue: Issue = read::typed(ISSUE, "a Linear Issue node", value)?;
    let change = if issue.trashed == Some(true) {
        ChangeKind::Deleted
    } else {
        ChangeKind::Snapshot
    };
    let record = work_item(raw, ISSUE, "", issue, change, None)?;
    Ok((vec![Normalized::WorkItem(record)], None))
}

/// Maps an issue, whichever way it arrived; `prefix` names where its fields sit in the
/// payload (for error messages), `fallback` is the time to use when it has no
/// `updatedAt`.
fn work_item(
    raw: &RawEvent<'_>,
    adapter: Adapter,
    prefix: &str,
    issue: Issue,
    change: ChangeKind,
    fallback: Option<Timestamp>,
) -> Result<WorkItem, NormalizeError> {
    let field = |name: &str| format!("{prefix}{name}");
    let id = read::required_str(adapter, &field("id"), issue.id)?;
    let updated = read::date(adapter, &field("updatedAt"), issue.updated_at.as_deref())?;
    let (status, status_name) = match issue.state {
        Some(state) => (
            state.kind.as_deref().and_then(status_from_state_type),
            read::non_empty(state.name),
        ),
        None => (None, None),
    };
    let priority = read::non_empty(issue.priority_label)
        .map(|label| label.to_lowercase())
        .filter(|label| label != "no priority")
        .or_else(|| issue.priority.and_then(priority_name).map(str::to_owned));
    let (assignee_id, assignee_name) = match issue.assignee {
        Some(a) => (
            read::non_empty(a.id).or(issue.assignee_id),
            read::non_empty(a.name),
        ),
        None => (read::non_empty(issue.assignee_id), None),
    };
    let completed_at = match read::date(
        adapter,
        &field("completedAt"),
        issue.completed_at.as_deref(),
    )? {
        Some(t) => Some(t),
        None => read::date(adapter, &field("canceledAt"), issue.canceled_at.as_deref())?,
    };
    let project_id = read::non_empty(issue.project_id)
        .or_else(|| issue.project.and_then(|p| read::non_empty(p.id)));
    let parent_id = read::non_empty(issue.parent_id)
        .or_else(|| issue.parent.and_then(|p| read::non_empty(p.id)));
    Ok(WorkItem {
        meta: meta(raw, adapter, id, change, updated.or(fallback), true),
        key: read::non_empty(issue.identifier),
        title: read::non_empty(issue.title),
        description: read::non_empty(issue.description),
        status,
        status_name,
        priority,
        assignee_id,
        assignee_name,
        due_at: read::date(adapter, &field("dueDate"), issue.due_date.as_deref())?,
        completed_at,
        created_at: read::date(adapter, &field("createdAt"), issue.created_at.as_deref())?,
        project_ids: project_id.into_iter().collect(),
        labels: issue
            .labels
            .into_names()
            .into_iter()
            .filter_map(read::non_empty)
            .collect(),
        parent_id,
        url: read::non_empty(issue.url),
    })
}

/// Linear's workflow state types
/// (<https://linear.app/docs/configuring-workflows>).
fn status_from_state_type(state_type: &str) -> Option<WorkStatus> {
    match state_type {
        "triage" | "backlog" | "unstarted" => Some(WorkStatus::Open),
        "started" => Some(WorkStatus::InProgress),
        "completed" => Some(WorkStatus::Done),
        "canceled" => Some(WorkStatus::Canceled),
        _ => None,
    }
}

/// Linear's numeric priority: 0 none, 1 urgent, 2 high, 3 medium, 4 low.
fn priority_name(priority: i64) -> Option<&'static str> {
    match priority {
        1 => Some("urgent"),
        2 => Some("high"),
        3 => Some("medium"),
        4 => Some("low"),
        _ => None,
    }
}
