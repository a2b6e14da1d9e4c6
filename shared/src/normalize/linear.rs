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
    Adapted, Adapter, NormalizeError, Normalized, RawEvent, meta,
    models::{ChangeKind, ProviderEvent, WorkItem, WorkStatus},
    read::{self, NumberOrString},
};

pub(crate) const WEBHOOK: Adapter = Adapter {
    name: "linear.webhook",
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
    labels: Vec<Named>,
    due_date: Option<String>,
    completed_at: Option<String>,
    canceled_at: Option<String>,
    created_at: Option<String>,
    updated_at: Option<String>,
    project_id: Option<String>,
    parent_id: Option<String>,
    url: Option<String>,
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
    let id = read::required_str(WEBHOOK, "data.id", issue.id)?;
    let updated = read::date(WEBHOOK, "data.updatedAt", issue.updated_at.as_deref())?;
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
    let completed_at = match read::date(WEBHOOK, "data.completedAt", issue.completed_at.as_deref())?
    {
        Some(t) => Some(t),
        None => read::date(WEBHOOK, "data.canceledAt", issue.canceled_at.as_deref())?,
    };
    let mut meta = meta(raw, WEBHOOK, id, change, updated.or(delivered), true);
    meta.provider_event_id = delivery_id;
    let record = WorkItem {
        meta,
        key: read::non_empty(issue.identifier),
        title: read::non_empty(issue.title),
        description: read::non_empty(issue.description),
        status,
        status_name,
        priority,
        assignee_id,
        assignee_name,
        due_at: read::date(WEBHOOK, "data.dueDate", issue.due_date.as_deref())?,
        completed_at,
        created_at: read::date(WEBHOOK, "data.createdAt", issue.created_at.as_deref())?,
        project_ids: read::non_empty(issue.project_id).into_iter().collect(),
        labels: issue
            .labels
            .into_iter()
            .filter_map(|l| read::non_empty(l.name))
            .collect(),
        parent_id: read::non_empty(issue.parent_id),
        url: read::non_empty(issue.url),
    };
    Ok((vec![Normalized::WorkItem(record)], None))
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
