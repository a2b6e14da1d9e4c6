//! `asana-tasks`: Asana tasks (resource `task`, adapter `asana.task`), project by project,
//! incrementally with `modified_since`.
//!
//! Asana pushes task changes by webhook (`asana.webhook`), so this poll is
//! reconciliation. Requests (`GET`, bearer token) under the catalog's
//! `https://app.asana.com/api/1.0`, from Asana's OpenAPI description (`Asana/openapi`
//! `defs/asana_oas.yaml`):
//! - `/workspaces?limit=100[&offset=…]` and `/projects?workspace=<gid>&limit=100&opt_fields=gid[&offset=…]`:
//!   the projects the token can read. `getTasks` needs "a `project` or `tag` if you do not
//!   specify `assignee` and `workspace`", so tasks are listed per project.
//! - `/tasks?project=<gid>&modified_since=<RFC 3339>&opt_fields=<the adapter's
//!   fields>&limit=100[&offset=…]`: `modified_since` "Only return tasks that have been
//!   modified since the given time" (assigning, renaming, completing, adding stories, and
//!   being added to a project all count); `limit` "between 1 and 100"; `offset` "You can
//!   only pass in an offset that was returned to you via a previously paginated request"
//!   and it "will expire after some time": an expired one (`400`) restarts that
//!   project's listing.
//! - Every answer is `{data: [...], next_page: {offset, path, uri} | null}`.
//!
//! A pass lists the projects, then each project's tasks modified since the watermark:
//! - **First pass** (no cursor): every task of every project (no `modified_since`).
//! - **Later passes**: `modified_since` = the previous pass's start minus [`OVERLAP`]
//!   (taken from Junction's clock before the first listing), so a change made while a
//!   pass ran is found by the next one; what it finds again has the same version
//!   (`modified_at`) and so the same event id.
//! - A task in several projects is sent once per project listing, with the same event
//!   id; the consumer drops the repeats.
//! - **Deletions** are not reported by `modified_since`: after a project's tasks, its
//!   events are read (`GET /projects/<gid>/events?sync=<token>`: "Returns the full record
//!   for all events that have occurred since the sync token was created"; a project's
//!   stream includes its tasks' events). Each `deleted` event of a task becomes
//!   `{gid, resource_type: "task", deleted: true, modified_at: <created_at>}`, which the
//!   adapter maps to a deletion; `has_more` pages on. "On your first request, omit the
//!   sync token. The response will be the same as for an expired sync token": `412` with
//!   a fresh token (the first pass only collects tokens; an expired token loses that
//!   window, which webhooks still carry). Tokens "expire after 24 hours" (Asana's SDK
//!   docs), so an hourly interval keeps them alive. A `403` (the token's scopes may not
//!   cover events: unconfirmed) or `404` skips that project's deletions, not its tasks.
//!   Tasks of archived projects are not listed (`archived=false`).
//!
//! `updated_at` of each record is the task's `modified_at` as Asana wrote it.
//!
//! Cursor (JSON): `{"since": "<RFC 3339>"?, "started": "<RFC 3339>"?, "workspaces":
//! ["<gid>", …]?, "projects": ["<gid>", …]?, "found": ["<gid>", …]?, "listing": "<offset
//! of the listing under way>"?, "offset": "<offset of the current project's tasks>"?}`.
//! A pass moves from listing workspaces (`found` so far), to listing their projects
//! (`workspaces` left), to their tasks (`projects` left, the first is current), then that
//! project's events (`events`); no `started`: between passes. `sync` holds the events
//! tokens by project from the previous pass, `next_sync` this pass's.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::{Api, Paging, PollTarget, unexpected};
use crate::{Page, PolledRecord, Poller};
use junction_aws::clock::{Clock, SystemClock};
use junction_outbound::{CallError, CallFailure};

/// How far before a pass's start the next pass looks.
pub(crate) const OVERLAP: Duration = Duration::from_secs(300);

/// The fields the `asana.task` adapter reads.
const TASK_FIELDS: &str = "gid,name,notes,completed,completed_at,assignee.name,due_on,due_at,\
     created_at,modified_at,projects.gid,memberships.section.name,tags.name,parent.gid,permalink_url";

const LIMIT: &str = "100";

/// Polls Asana tasks modified since the last pass.
#[derive(Debug)]
pub struct AsanaTasks {
    api: Api,
    clock: Arc<dyn Clock>,
}

impl AsanaTasks {
    pub fn new(api: Api) -> Self {
        AsanaTasks {
            api,
            clock: Arc::new(SystemClock),
        }
    }

    #[cfg(test)]
    fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

/// The stored cursor (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cursor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    workspaces: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    projects: Option<Vec<String>>,
    /// Workspaces found by the listing under way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    found: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    listing: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offset: Option<String>,
    /// The current project's tasks are listed; its events are next.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    events: bool,
    /// Events sync tokens by project, from the previous pass.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    sync: BTreeMap<String, String>,
    /// Events sync tokens by project, from this pass (the projects it listed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    next_sync: BTreeMap<String, String>,
}

impl Cursor {
    fn parse(text: &str) -> Result<Cursor, CallError> {
        let refused = || unexpected("stored cursor is not an asana-tasks cursor");
        match serde_json::from_str::<Value>(text) {
            Ok(value) if value.is_object() => serde_json::from_value(value).map_err(|_| refused()),
            _ => Err(refused()),
        }
    }

    fn encode(&self) -> Result<String, CallError> {
        serde_json::to_string(self).map_err(|_| unexpected("cursor does not encode"))
    }

    fn more(&self, records: Vec<PolledRecord>) -> Result<Page, CallError> {
        Ok(Page {
            records,
            cursor: Some(self.encode()?),
            more: true,
        })
    }
}

/// `data` and the next page's offset (`next_page.offset`, by the catalog's
/// `[pagination]`) of an Asana list answer to a request that carried `sent`.
fn list(answer: &Value, sent: Option<&str>) -> Result<(Vec<Value>, Option<String>), CallError> {
    let Some(Value::Array(data)) = answer.get("data") else {
        return Err(unexpected("no data in the list answer"));
    };
    let next = Paging::of("asana")?.next(sent, answer)?;
    Ok((data.clone(), next))
}

fn gids(data: &[Value]) -> Vec<String> {
    data.iter()
        .filter_map(|item| item.get("gid").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

fn rfc3339(at: OffsetDateTime) -> Result<String, CallError> {
    at.format(&Rfc3339)
        .map_err(|_| unexpected("a time does not format"))
}

/// Asana's answer to an offset it no longer accepts.
fn expired_offset(err: &CallError) -> bool {
    matches!(err, CallError::Failed(CallFailure { code, .. }) if code == "http_400")
}

#[async_trait]
impl Poller for AsanaTasks {
    fn resource(&self) -> &str {
        "task"
    }

    async fn page(&self, target: &PollTarget<'_>, cursor: Option<&str>) -> Result<Page, CallError> {
        let mut cursor = cursor.map(Cursor::parse).transpose()?.unwrap_or_default();
        if cursor.started.is_none() {
            cursor.started = Some(rfc3339(self.clock.now())?);
        }

        // 1. The workspaces.
        let Some(workspaces) = cursor.workspaces.clone() else {
            let mut query = vec![("limit", LIMIT)];
            if let Some(offset) = &cursor.listing {
                query.push((Paging::of("asana")?.param()?, offset));
            }
            let answer = self
                .api
                .get(target, "list_workspaces", "/workspaces", &query)
                .await?;
            let (data, next) = list(&answer, cursor.listing.as_deref())?;
            cursor.found.extend(gids(&data));
            cursor.listing = next;
            if cursor.listing.is_none() {
                cursor.workspaces = Some(std::mem::take(&mut cursor.found));
                cursor.projects = Some(Vec::new());
            }
            return cursor.more(Vec::new());
        };

        // 2. Their projects.
        if let Some(workspace) = workspaces.first().cloned() {
            let mut query = vec![
                ("workspace", workspace.as_str()),
                ("archived", "false"),
                ("limit", LIMIT),
                ("opt_fields", "gid"),
            ];
            if let Some(offset) = &cursor.listing {
                query.push((Paging::of("asana")?.param()?, offset));
            }
            let answer = self
                .api
                .get(target, "list_projects", "/projects", &query)
                .await?;
            let (data, next) = list(&answer, cursor.listing.as_deref())?;
            cursor
                .projects
                .get_or_insert_with(Vec::new)
                .extend(gids(&data));
            cursor.listing = next;
            if cursor.listing.is_none()
                && let Some(left) = cursor.workspaces.as_mut()
            {
                left.remove(0);
            }
            return cursor.more(Vec::new());
        }

        // 3. Each project's tasks.
        let Some(project) = cursor
            .projects
            .as_ref()
            .and_then(|projects| projects.first())
            .cloned()
        else {
            // No project at all: the pass is complete.
            return self.finish(&cursor, Vec::new());
        };
        if cursor.events {
            return self.events_page(target, cursor, &project).await;
        }
        let mut query = vec![
            ("project", project.as_str()),
            ("opt_fields", TASK_FIELDS),
            ("limit", LIMIT),
        ];
        if let Some(since) = &cursor.since {
            query.push(("modified_since", since.as_str()));
        }
        if let Some(offset) = &cursor.offset {
            query.push((Paging::of("asana")?.param()?, offset.as_str()));
        }
        let answer = match self.api.get(target, "list_tasks", "/tasks", &query).await {
            Ok(answer) => answer,
            Err(err) if cursor.offset.is_some() && expired_offset(&err) => {
                // The offset expired: this project's listing starts over.
                cursor.offset = None;
                return cursor.more(Vec::new());
            }
            Err(err) => return Err(err),
        };
        let (data, next) = list(&answer, cursor.offset.as_deref())?;
        let mut records = Vec::with_capacity(data.len());
        for task in data {
            let gid = task
                .get("gid")
                .and_then(Value::as_str)
                .filter(|gid| !gid.is_empty())
                .ok_or_else(|| unexpected("a task without gid"))?
                .to_owned();
            let modified = task
                .get("modified_at")
                .and_then(Value::as_str)
                .ok_or_else(|| unexpected("a task without modified_at"))?
                .to_owned();
            records.push(PolledRecord {
                id: gid,
                updated_at: modified,
                body: task,
            });
        }
        cursor.offset = next;
        // The project's tasks are listed: its deletions (events) come next.
        cursor.events = cursor.offset.is_none();
        cursor.more(records)
    }
}

impl AsanaTasks {
    /// One page of a project's events: the tasks deleted since its sync token, as
    /// deletion markers. A first request (no token) and an expired token are answered
    /// `412` with a fresh token: nothing to report then (deletions in an expired window
    /// are not recoverable from the API; webhooks carry them).
    async fn events_page(
        &self,
        target: &PollTarget<'_>,
        mut cursor: Cursor,
        project: &str,
    ) -> Result<Page, CallError> {
        let token = cursor
            .next_sync
            .get(project)
            .or_else(|| cursor.sync.get(project))
            .cloned();
        let mut query = Vec::new();
        if let Some(token) = &token {
            query.push(("sync", token.as_str()));
        }
        let path = format!("/projects/{project}/events");
        let (status, answer) = match self
            .api
            .get_answer(target, "project_events", &path, &query, &[412])
            .await
        {
            Ok(answer) => answer,
            // The token may not carry the events scope, or the project went away since it
            // was listed: no deletions from this project this pass; its tasks were read.
            Err(CallError::Failed(CallFailure { code, .. }))
                if code == "http_403" || code == "http_404" =>
            {
                tracing::warn!(
                    project,
                    code,
                    "Asana events not readable; deletions of this project are not polled"
                );
                return self.next_project(cursor, project, Vec::new());
            }
            Err(err) => return Err(err),
        };
        let fresh = answer
            .get("sync")
            .and_then(Value::as_str)
            .filter(|sync| !sync.is_empty())
            .ok_or_else(|| unexpected("no sync token in the events answer"))?
            .to_owned();
        let mut records = Vec::new();
        let mut more = false;
        if status == 412 {
            if token.is_some() {
                tracing::warn!(
                    project,
                    "Asana events sync token expired; deletions since then are not reported by polling"
                );
            }
        } else {
            let Some(Value::Array(events)) = answer.get("data") else {
                return Err(unexpected("no data in the events answer"));
            };
            for event in events {
                let deleted_task = event.pointer("/resource/resource_type") == Some(&json!("task"))
                    && event.get("action") == Some(&json!("deleted"));
                if !deleted_task {
                    continue;
                }
                let (Some(gid), Some(at)) = (
                    event.pointer("/resource/gid").and_then(Value::as_str),
                    event.get("created_at").and_then(Value::as_str),
                ) else {
                    return Err(unexpected(
                        "a deleted event without resource gid or created_at",
                    ));
                };
                records.push(PolledRecord {
                    id: gid.to_owned(),
                    updated_at: at.to_owned(),
                    body: json!({"gid": gid, "resource_type": "task", "deleted": true, "modified_at": at}),
                });
            }
            more = answer.get("has_more").and_then(Value::as_bool) == Some(true);
        }
        cursor.next_sync.insert(project.to_owned(), fresh);
        if more {
            return cursor.more(records);
        }
        self.next_project(cursor, project, records)
    }

    /// `project` is done: on to the next, or the pass is complete.
    fn next_project(
        &self,
        mut cursor: Cursor,
        project: &str,
        records: Vec<PolledRecord>,
    ) -> Result<Page, CallError> {
        cursor.events = false;
        if let Some(left) = cursor.projects.as_mut() {
            left.retain(|gid| gid != project);
            if left.is_empty() {
                return self.finish(&cursor, records);
            }
        }
        cursor.more(records)
    }

    /// The last page of a pass: the next pass looks from this one's start, less the
    /// overlap, with the events tokens of the projects this pass listed.
    fn finish(&self, cursor: &Cursor, records: Vec<PolledRecord>) -> Result<Page, CallError> {
        let started = match cursor.started.as_deref() {
            Some(at) => OffsetDateTime::parse(at, &Rfc3339)
                .map_err(|_| unexpected("stored pass start is not RFC 3339"))?,
            None => self.clock.now(),
        };
        let next = Cursor {
            since: Some(rfc3339(started - OVERLAP)?),
            sync: cursor.next_sync.clone(),
            ..Cursor::default()
        };
        Ok(Page {
            records,
            cursor: Some(next.encode()?),
            more: false,
        })
    }
}

#[cfg(test)]
mod tests {
    //! A fake Asana behind the bench answers like the API's OpenAPI description: lists as
    //! `{data, next_page: {offset, path, uri} | null}` with opaque offsets, `GET /tasks`
    //! filtered by `project` and `modified_since`, tasks with the asked `opt_fields`
    //! (values shaped like the `getTask` example), and errors as `{errors: [{message}]}`
    //! with a real status (429 with `Retry-After`).

    use std::{
        collections::BTreeMap,
        sync::{Arc, Mutex},
    };

    use serde_json::json;

    use super::*;
    use crate::pollers::test_support::{
        ApiRequest, Bench, ScriptedResponse, bench, normalize_polled,
    };
    use junction_aws::clock::FixedClock;
    use junction_pipeline::normalize::{ChangeKind, Normalized};

    const NOW: i64 = 1_795_000_000;
    /// Items per list answer.
    const PAGE: usize = 4;

    fn ago(seconds: i64) -> String {
        rfc3339(OffsetDateTime::from_unix_timestamp(NOW - seconds).expect("time")).expect("format")
    }

    fn task(gid: &str, project: &str, modified: &str) -> Value {
        json!({
            "gid": gid,
            "resource_type": "task",
            "name": format!("Task {gid}"),
            "notes": "",
            "completed": false,
            "completed_at": null,
            "assignee": {"gid": "12345", "resource_type": "user", "name": "Greg Sanchez"},
            "due_on": "2026-12-01",
            "due_at": null,
            "created_at": "2026-11-01T09:00:00.000Z",
            "modified_at": modified,
            "projects": [{"gid": project, "resource_type": "project"}],
            "memberships": [{"section": {"gid": "s1", "resource_type": "section", "name": "Next actions"}}],
            "tags": [],
            "parent": null,
            "permalink_url": format!("https://app.asana.com/0/{project}/{gid}"),
        })
    }

    #[derive(Debug, Default)]
    struct Domain {
        /// Workspace → its projects.
        workspaces: BTreeMap<String, Vec<String>>,
        /// Project → its tasks.
        tasks: BTreeMap<String, Vec<Value>>,
        /// Offsets handed out: token → (list key, position).
        offsets: BTreeMap<String, (String, usize)>,
        expired: bool,
        /// Project → its event stream (`GET /projects/{gid}/events`).
        events: BTreeMap<String, Vec<Value>>,
    }

    impl Domain {
        fn answer(&mut self, req: &ApiRequest) -> ScriptedResponse {
            assert_eq!(req.method, "GET");
            if let Some(project) = req
                .path
                .strip_prefix("/projects/")
                .and_then(|rest| rest.strip_suffix("/events"))
            {
                return self.events(project, req.query_param("sync"));
            }
            assert_eq!(req.query_param("limit"), Some(LIMIT));
            let (key, items): (String, Vec<Value>) = match req.path.as_str() {
                "/workspaces" => (
                    "workspaces".into(),
                    self.workspaces
                        .keys()
                        .map(|gid| json!({"gid": gid, "resource_type": "workspace", "name": gid}))
                        .collect(),
                ),
                "/projects" => {
                    assert_eq!(req.query_param("archived"), Some("false"));
                    let workspace = req.query_param("workspace").expect("workspace").to_owned();
                    let projects = self.workspaces.get(&workspace).cloned().unwrap_or_default();
                    (
                        format!("projects:{workspace}"),
                        projects
                            .iter()
                            .map(|gid| json!({"gid": gid, "resource_type": "project"}))
                            .collect(),
                    )
                }
                "/tasks" => {
                    assert_eq!(req.query_param("opt_fields"), Some(TASK_FIELDS));
                    let project = req.query_param("project").expect("project").to_owned();
                    let since = req
                        .query_param("modified_since")
                        .map(|since| OffsetDateTime::parse(since, &Rfc3339).expect("RFC 3339"));
                    let tasks = self.tasks.get(&project).cloned().unwrap_or_default();
                    (
                        format!("tasks:{project}:{since:?}"),
                        tasks
                            .into_iter()
                            .filter(|t| {
                                since.is_none_or(|since| {
                                    OffsetDateTime::parse(
                                        t["modified_at"].as_str().unwrap_or_default(),
                                        &Rfc3339,
                                    )
                                    .is_ok_and(|at| at >= since)
                                })
                            })
                            .collect(),
                    )
                }
                other => panic!("unexpected path {other}"),
            };
            let start = match req.query_param("offset") {
                Some(token) => {
                    if self.expired {
                        self.expired = false;
                        return ScriptedResponse::with_status(
                            400,
                            &json!({"errors": [{"message": "offset: Your pagination token has expired."}]}),
                        );
                    }
                    let (list, position) =
                        self.offsets.get(token).cloned().expect("a known offset");
                    assert_eq!(list, key, "an offset is only valid for its own list");
                    position
                }
                None => 0,
            };
            let page: Vec<Value> = items.iter().skip(start).take(PAGE).cloned().collect();
            let next = start + page.len();
            let next_page = if next < items.len() {
                let token = format!("eyJ0eXAi{}", self.offsets.len());
                self.offsets.insert(token.clone(), (key, next));
                json!({"offset": token, "path": format!("{}?offset={token}", req.path), "uri": "https://app.asana.com/api/1.0"})
            } else {
                Value::Null
            };
            ScriptedResponse::json(&json!({"data": page, "next_page": next_page}))
        }
    }

    impl Domain {
        /// The events API: sync tokens are `<project>:<position>`; no (or an unknown)
        /// token is answered 412 with a fresh one, as Asana documents; at most `PAGE`
        /// events per answer, `has_more` when more wait.
        fn events(&self, project: &str, sync: Option<&str>) -> ScriptedResponse {
            let log = self.events.get(project).cloned().unwrap_or_default();
            let position = sync
                .and_then(|token| token.strip_prefix(&format!("{project}:")))
                .and_then(|n| n.parse::<usize>().ok());
            let Some(position) = position else {
                return ScriptedResponse::with_status(
                    412,
                    &json!({
                        "errors": [{"message": "Sync token invalid or too old. If you are attempting to keep resources in sync, you must fetch the full dataset for this query now and use the new sync token for the next sync."}],
                        "sync": format!("{project}:{}", log.len()),
                    }),
                );
            };
            let page: Vec<Value> = log.iter().skip(position).take(PAGE).cloned().collect();
            let next = position + page.len();
            ScriptedResponse::json(&json!({
                "data": page,
                "sync": format!("{project}:{next}"),
                "has_more": next < log.len(),
            }))
        }
    }

    fn deleted_event(gid: &str, project: &str, at: &str) -> Value {
        json!({
            "user": {"gid": "12345", "resource_type": "user", "name": "Greg Sanchez"},
            "resource": {"gid": gid, "resource_type": "task", "name": format!("Task {gid}")},
            "type": "task",
            "action": "deleted",
            "parent": {"gid": project, "resource_type": "project"},
            "created_at": at,
        })
    }

    fn domain() -> Arc<Mutex<Domain>> {
        let mut domain = Domain::default();
        domain
            .workspaces
            .insert("ws1".into(), (1..=6).map(|n| format!("p{n}")).collect());
        domain.workspaces.insert("ws2".into(), vec!["p7".into()]);
        let tasks: Vec<Value> = (1..=9)
            .map(|n| task(&format!("t{n}"), "p1", &ago(86_400 + n)))
            .collect();
        domain.tasks.insert("p1".into(), tasks);
        domain.tasks.insert(
            "p7".into(),
            vec![
                task("t20", "p7", &ago(90_000)),
                task("t1", "p7", &ago(86_401)),
            ],
        );
        Arc::new(Mutex::new(domain))
    }

    async fn domain_bench(domain: &Arc<Mutex<Domain>>) -> Bench {
        let bench = bench().await;
        let serving = domain.clone();
        bench.serve(move |req| serving.lock().expect("domain").answer(req));
        bench
    }

    fn poller(bench: &Bench, clock: &Arc<FixedClock>) -> AsanaTasks {
        AsanaTasks::new(bench.api.clone()).with_clock(clock.clone())
    }

    fn versions(records: &[PolledRecord]) -> Vec<String> {
        let mut versions: Vec<String> = records
            .iter()
            .map(|r| format!("{}@{}", r.id, r.updated_at))
            .collect();
        versions.sort();
        versions.dedup();
        versions
    }

    #[tokio::test]
    async fn a_pass_lists_every_project_then_only_modified_tasks_follow() {
        let domain = domain();
        let bench = domain_bench(&domain).await;
        let clock = Arc::new(FixedClock::at_unix(NOW));
        let poller = poller(&bench, &clock);

        let (records, cursor) = bench.sync(&poller, None, 30).await;
        assert_eq!(
            versions(&records).len(),
            10,
            "t1..t9 and t20; t1 in two projects, once per version"
        );
        let paths: Vec<String> = bench.requests().iter().map(|r| r.path.clone()).collect();
        assert_eq!(paths.iter().filter(|p| *p == "/workspaces").count(), 1);
        assert_eq!(
            paths.iter().filter(|p| *p == "/projects").count(),
            3,
            "ws1 in two pages, ws2"
        );
        assert_eq!(
            paths.iter().filter(|p| *p == "/tasks").count(),
            9,
            "p1 in three pages, p2..p7"
        );
        assert_eq!(
            paths.iter().filter(|p| p.ends_with("/events")).count(),
            7,
            "one events call per project: each is answered 412 with a first sync token"
        );
        assert!(
            bench
                .requests()
                .iter()
                .all(|r| r.query_param("modified_since").is_none())
        );
        let cursor = Cursor::parse(cursor.as_deref().expect("cursor")).expect("cursor");
        assert_eq!(
            cursor.since,
            Some(ago(300)),
            "the pass's start less the overlap"
        );
        let t3 = records.iter().find(|r| r.id == "t3").expect("t3");
        match normalize_polled("asana", "task", t3).pop() {
            Some(Normalized::WorkItem(item)) => {
                assert_eq!(item.meta.change, ChangeKind::Snapshot);
                assert_eq!(item.status_name.as_deref(), Some("Next actions"));
            }
            other => panic!("{other:?}"),
        }

        assert_eq!(cursor.sync.len(), 7, "an events token per project");

        // An hour later: t2 changed (during the last pass), t30 is new in p3, and five
        // tasks of p1 were deleted (more events than one answer holds).
        {
            let mut domain = domain.lock().expect("domain");
            domain.tasks.get_mut("p1").expect("p1")[1] = task("t2", "p1", &ago(100));
            domain
                .tasks
                .insert("p3".into(), vec![task("t30", "p3", &ago(-1_000))]);
            let mut story = deleted_event("t9", "p1", &ago(-500));
            story["resource"]["resource_type"] = json!("story");
            let mut events = vec![story];
            for n in 4..=8 {
                events.push(deleted_event(&format!("t{n}"), "p1", &ago(-600 - n)));
            }
            domain.events.insert("p1".into(), events);
            for n in 4..=8 {
                let gid = json!(format!("t{n}"));
                domain
                    .tasks
                    .get_mut("p1")
                    .expect("p1")
                    .retain(|t| t["gid"] != gid);
            }
        }
        clock.advance(time::Duration::hours(1));
        let before = bench.requests().len();
        let (records, _) = bench
            .sync(&poller, Some(&cursor.encode().expect("cursor")), 30)
            .await;
        let deleted: Vec<&PolledRecord> = records
            .iter()
            .filter(|r| r.body.get("deleted") == Some(&json!(true)))
            .collect();
        assert_eq!(
            deleted.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["t4", "t5", "t6", "t7", "t8"],
            "every deleted task, across two events answers; the story event is not a task"
        );
        match normalize_polled("asana", "task", deleted[0]).pop() {
            Some(Normalized::WorkItem(item)) => {
                assert_eq!(
                    (item.meta.change, item.meta.complete),
                    (ChangeKind::Deleted, false)
                );
            }
            other => panic!("{other:?}"),
        }
        let changed: Vec<PolledRecord> = records
            .into_iter()
            .filter(|r| r.body.get("deleted").is_none())
            .collect();
        assert_eq!(
            versions(&changed),
            [format!("t2@{}", ago(100)), format!("t30@{}", ago(-1_000))]
        );
        assert!(
            bench.requests()[before..]
                .iter()
                .filter(|r| r.path == "/tasks")
                .all(|r| r.query_param("modified_since") == Some(ago(300).as_str()))
        );
    }

    #[tokio::test]
    async fn an_expired_offset_restarts_that_projects_listing() {
        let domain = domain();
        let bench = domain_bench(&domain).await;
        let clock = Arc::new(FixedClock::at_unix(NOW));
        let poller = poller(&bench, &clock);
        // Walk to p1's second task page, then let its offset expire.
        let mut cursor: Option<String> = None;
        loop {
            let page = bench.page(&poller, cursor.as_deref()).await.expect("page");
            cursor = page.cursor;
            let state = Cursor::parse(cursor.as_deref().expect("cursor")).expect("cursor");
            if state.offset.is_some() {
                break;
            }
        }
        domain.lock().expect("domain").expired = true;
        let (records, _) = bench.sync(&poller, cursor.as_deref(), 30).await;
        assert!(
            versions(&records).len() >= 9,
            "p1 listed again from its start"
        );
        assert!(records.iter().any(|r| r.id == "t1"));
    }

    #[tokio::test]
    async fn a_rate_limited_answer_waits_for_retry_after_and_is_retried() {
        let domain = domain();
        let bench = domain_bench(&domain).await;
        let clock = Arc::new(FixedClock::at_unix(NOW));
        let mut limited = ScriptedResponse::with_status(
            429,
            &json!({"errors": [{"message": "You've made too many requests and hit a rate limit. Please retry after the given amount of time."}]}),
        );
        limited.headers.push(("Retry-After".into(), "1".into()));
        bench.harness.server.script_api([limited]);
        let (records, _) = bench.sync(&poller(&bench, &clock), None, 30).await;
        assert_eq!(versions(&records).len(), 10);
    }
}
