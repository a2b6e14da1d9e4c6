//! Asana → [`WorkItem`] (and pass-through for other resources' events).
//!
//! - `asana.task`: the task resource (<https://developers.asana.com/reference/gettask>),
//!   `{data:{…}}` as the API returns it or bare: `gid`, `name`, `notes`, `completed`,
//!   `completed_at`, `assignee{gid,name}`, `due_on` (`YYYY-MM-DD`), `due_at`,
//!   `created_at`, `modified_at`, `projects[]`, `memberships[].section.name`, `tags[]`,
//!   `parent`, `permalink_url`; or the poller's deletion marker `{gid, deleted: true,
//!   modified_at}` (from a `deleted` event), a partial deleted record.
//! - `asana.webhook`: a webhook delivery `{events:[…]}`
//!   (<https://developers.asana.com/docs/webhooks-guide#receiving-events>,
//!   <https://developers.asana.com/reference/events>). Asana events are "compact": they
//!   name the resource (`resource{gid,resource_type}`), the `action` (`added`, `changed`,
//!   `removed`, `deleted`, `undeleted`) and at most the changed field name, never its new
//!   state. Task events therefore become [`FetchRequest`]s, except `deleted`, which is a
//!   partial deleted record. Events on other resources (stories, projects, …) pass
//!   through. An empty `events` list is Asana's heartbeat and yields nothing.

use serde::Deserialize;
use serde_json::Value;

use super::{
    Adapted, Adapter, NormalizeError, Normalized, RawEvent, meta,
    models::{ChangeKind, FetchRequest, Model, ProviderEvent, WorkItem, WorkStatus},
    read,
};

pub(crate) const TASK: Adapter = Adapter {
    name: "asana.task",
    mapping_version: 1,
};

pub(crate) const WEBHOOK: Adapter = Adapter {
    name: "asana.webhook",
    mapping_version: 1,
};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Task {
    gid: Option<String>,
    name: Option<String>,
    notes: Option<String>,
    completed: Option<bool>,
    completed_at: Option<String>,
    assignee: Option<Compact>,
    due_on: Option<String>,
    due_at: Option<String>,
    created_at: Option<String>,
    modified_at: Option<String>,
    #[serde(deserialize_with = "read::null_default")]
    projects: Vec<Compact>,
    #[serde(deserialize_with = "read::null_default")]
    memberships: Vec<Membership>,
    #[serde(deserialize_with = "read::null_default")]
    tags: Vec<Compact>,
    parent: Option<Compact>,
    permalink_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Compact {
    gid: Option<String>,
    name: Option<String>,
    resource_type: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Membership {
    section: Option<Compact>,
}

pub(crate) fn task(raw: &RawEvent<'_>) -> Result<Adapted, NormalizeError> {
    let mut value = read::json_body(TASK, raw.body)?;
    if let Some(data) = value.get_mut("data").map(Value::take) {
        value = data;
    }
    // The `asana-tasks` poller reports a task the Events API says was deleted as
    // `{gid, resource_type: "task", deleted: true, modified_at: <the event's created_at>}`.
    let deleted = value.get("deleted") == Some(&Value::Bool(true));
    let task: Task = read::typed(TASK, "an Asana task resource", value)?;
    let id = read::required_str(TASK, "gid", task.gid)?;
    let modified = read::date(TASK, "modified_at", task.modified_at.as_deref())?;
    if deleted {
        let record = deleted_task(meta(raw, TASK, id, ChangeKind::Deleted, modified, false));
        return Ok((vec![Normalized::WorkItem(record)], None));
    }
    let due_at = match read::date(TASK, "due_at", task.due_at.as_deref())? {
        Some(t) => Some(t),
        None => read::date(TASK, "due_on", task.due_on.as_deref())?,
    };
    let status = task.completed.map(|done| {
        if done {
            WorkStatus::Done
        } else {
            WorkStatus::Open
        }
    });
    let (assignee_id, assignee_name) = match task.assignee {
        Some(a) => (read::non_empty(a.gid), read::non_empty(a.name)),
        None => (None, None),
    };
    let record = WorkItem {
        meta: meta(raw, TASK, id, ChangeKind::Snapshot, modified, true),
        key: None,
        title: read::non_empty(task.name),
        description: read::non_empty(task.notes),
        status,
        status_name: task
            .memberships
            .into_iter()
            .find_map(|m| m.section.and_then(|s| read::non_empty(s.name))),
        priority: None,
        assignee_id,
        assignee_name,
        due_at,
        completed_at: read::date(TASK, "completed_at", task.completed_at.as_deref())?,
        created_at: read::date(TASK, "created_at", task.created_at.as_deref())?,
        project_ids: task
            .projects
            .into_iter()
            .filter_map(|p| read::non_empty(p.gid))
            .collect(),
        labels: task
            .tags
            .into_iter()
            .filter_map(|t| read::non_empty(t.name))
            .collect(),
        parent_id: task.parent.and_then(|p| read::non_empty(p.gid)),
        url: read::non_empty(task.permalink_url),
    };
    Ok((vec![Normalized::WorkItem(record)], None))
}

#[derive(Debug, Deserialize)]
struct Delivery {
    #[serde(default)]
    events: Option<Vec<Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Event {
    action: Option<String>,
    resource: Option<Compact>,
    created_at: Option<String>,
}

pub(crate) fn webhook(raw: &RawEvent<'_>) -> Result<Adapted, NormalizeError> {
    let value = read::json_body(WEBHOOK, raw.body)?;
    let delivery: Delivery = read::typed(WEBHOOK, "an Asana webhook delivery", value)?;
    let events = read::required(WEBHOOK, "events", delivery.events)?;
    let mut items = Vec::with_capacity(events.len());
    for (index, value) in events.into_iter().enumerate() {
        let field = |name: &str| format!("events[{index}].{name}");
        let event: Event = read::typed(WEBHOOK, "an Asana event", value.clone())?;
        let action = read::required_str(WEBHOOK, &field("action"), event.action)?;
        let resource = read::required(WEBHOOK, &field("resource"), event.resource)?;
        let resource_type = read::required_str(
            WEBHOOK,
            &field("resource.resource_type"),
            resource.resource_type,
        )?;
        let occurred = read::date(WEBHOOK, &field("created_at"), event.created_at.as_deref())?;
        // Asana events have no id; the event's own content is stable across retries.
        let event_id = read::sha256_of_value(&value);
        let item = if resource_type == "task" {
            let gid = read::required_str(WEBHOOK, &field("resource.gid"), resource.gid)?;
            let change = match action.as_str() {
                "deleted" => ChangeKind::Deleted,
                "undeleted" => ChangeKind::Restored,
                _ => ChangeKind::Updated,
            };
            let mut meta = meta(raw, WEBHOOK, gid, change, occurred, false);
            meta.provider_event_id = Some(event_id);
            if change == ChangeKind::Deleted {
                Normalized::WorkItem(deleted_task(meta))
            } else {
                Normalized::NeedsFetch(FetchRequest {
                    meta,
                    model: Model::WorkItem,
                    resource: "task".to_owned(),
                    account: None,
                    reason: "Asana events name the task and the action, never its new state",
                })
            }
        } else {
            let event_type = format!("{resource_type}.{action}");
            let mut meta = meta(
                raw,
                WEBHOOK,
                event_id.clone(),
                read::change_from_verb(&action),
                occurred,
                true,
            );
            meta.provider_event_id = Some(event_id);
            Normalized::ProviderEvent(ProviderEvent {
                meta,
                event_type: Some(event_type),
                api_version: None,
                raw: value,
            })
        };
        items.push(item);
    }
    Ok((items, None))
}

fn deleted_task(meta: super::RecordMeta) -> WorkItem {
    WorkItem {
        meta,
        key: None,
        title: None,
        description: None,
        status: None,
        status_name: None,
        priority: None,
        assignee_id: None,
        assignee_name: None,
        due_at: None,
        completed_at: None,
        created_at: None,
        project_ids: Vec::new(),
        labels: Vec::new(),
        parent_id: None,
        url: None,
    }
}
