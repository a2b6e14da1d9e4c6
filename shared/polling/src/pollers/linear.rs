//! `linear-issues`: Linear issues (resource `issue`, adapter `linear.issue`) through the
//! GraphQL API, incrementally on `updatedAt`.
//!
//! Linear pushes issue changes through webhooks (the `linear.webhook` adapter) and
//! "especially discourage[s] … polling the API to fetch updates"
//! (<https://linear.app/developers/rate-limiting>), so this poll is reconciliation: a slow
//! pass that catches what the webhooks missed.
//!
//! One request per page: `POST /graphql` (under the catalog's `https://api.linear.app`,
//! bearer token; the SDK's default `apiUrl` in `linear/linear` `packages/sdk/src/client.ts`)
//! with [`QUERY`] (or [`BACKFILL_QUERY`] on the first pass). From the schema
//! (`packages/sdk/src/schema.graphql`, `Query.issues`): `first`/`after` Relay paging with
//! `pageInfo { hasNextPage endCursor }`; `orderBy: updatedAt` ("Available options are
//! createdAt (default) and updatedAt"; the direction is not stated, so the watermark only
//! moves once a pass has read every page); `includeArchived: true` ("Should archived
//! resources be included (default: false)") so archived and trashed issues come back with
//! `archivedAt` / `trashed` set; `filter: { updatedAt: { gte } }` (`IssueFilter.updatedAt`,
//! a `DateComparator` of `DateTimeOrDuration`).
//!
//! - **First pass** (no cursor): every issue the token can read, archived and trashed ones
//!   included.
//! - **Later passes**: issues with `updatedAt` at or after the watermark (the newest
//!   `updatedAt` the previous pass saw). `gte` rather than `gt` so issues that share the
//!   watermark's millisecond but were written after the pass read it are not lost; the ids
//!   already sent at exactly the watermark are kept in the cursor and skipped.
//! - **Deletions**: a deleted issue goes to the trash (`trashed: true`), which the adapter
//!   maps to a deletion. Whether trashing moves `updatedAt` (and so reaches this filter)
//!   is not documented: the webhook's `remove` is the primary signal. Issues purged from
//!   the trash leave no trace in this query.
//! - GraphQL errors come with HTTP 200 or 400 in `errors`; the catalog's `[api]
//!   error_rules` classify the documented ones (`RATELIMITED`, the SDK's
//!   `extensions.type` values). Any other answer without `data.issues` is refused as
//!   unreadable, never read as "no issues".
//!
//! Pages are bounded by [`PAGE_SIZE`]; the query's complexity (0.1 a field, 1 an object,
//! connections multiplied by their `first`) stays near 3,500 points, under the documented
//! 10,000 per query.
//!
//! `updated_at` of each record is the issue's `updatedAt` as Linear states it.
//!
//! Cursor: a [`Watermark`] on `updatedAt`, its `page` the connection's `endCursor`.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::{Api, PollTarget, unexpected, watermark::Watermark};
use crate::{Page, Poller};
use junction_outbound::CallError;

const GRAPHQL: &str = "/graphql";

/// Issues per request. Each node costs about 70 complexity points, its 50 labels most of
/// them.
const PAGE_SIZE: u32 = 50;

/// The fields of an issue the `linear.issue` adapter reads.
const FIELDS: &str = "id identifier title description priority priorityLabel url \
     createdAt updatedAt completedAt canceledAt archivedAt trashed dueDate \
     state { name type } assignee { id name } labels(first: 50) { nodes { id name } } \
     project { id } parent { id }";

/// An incremental page: issues updated at or after `$since`.
const QUERY: &str = "query JunctionIssues($first: Int!, $after: String, $since: DateTimeOrDuration!) { \
     issues(first: $first, after: $after, orderBy: updatedAt, includeArchived: true, \
     filter: { updatedAt: { gte: $since } }) { nodes { FIELDS } pageInfo { hasNextPage endCursor } } }";

/// A first-pass page: every issue.
const BACKFILL_QUERY: &str = "query JunctionIssuesBackfill($first: Int!, $after: String) { \
     issues(first: $first, after: $after, orderBy: updatedAt, includeArchived: true) { \
     nodes { FIELDS } pageInfo { hasNextPage endCursor } } }";

/// Polls Linear issues changed since the last pass.
#[derive(Debug)]
pub struct LinearIssues {
    api: Api,
}

impl LinearIssues {
    pub fn new(api: Api) -> Self {
        LinearIssues { api }
    }
}

/// Linear's `updatedAt` (RFC 3339).
fn instant(text: &str) -> Result<OffsetDateTime, CallError> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|_| unexpected("updatedAt is not RFC 3339"))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PageInfo {
    has_next_page: bool,
    #[serde(default)]
    end_cursor: Option<String>,
}

#[async_trait]
impl Poller for LinearIssues {
    fn resource(&self) -> &str {
        "issue"
    }

    async fn page(&self, target: &PollTarget<'_>, cursor: Option<&str>) -> Result<Page, CallError> {
        let mut state = cursor
            .map(|text| Watermark::parse(text, "linear-issues"))
            .transpose()?
            .unwrap_or_default();
        let mut variables = Map::new();
        variables.insert("first".into(), json!(PAGE_SIZE));
        variables.insert("after".into(), json!(state.page));
        let query = match &state.since {
            Some(since) => {
                variables.insert("since".into(), json!(since));
                QUERY
            }
            None => BACKFILL_QUERY,
        };
        let body = json!({
            "query": query.replace("FIELDS", FIELDS),
            "variables": variables,
        });
        let mut answer = self.api.post(target, "issues", GRAPHQL, &body).await?;
        let connection = answer
            .pointer_mut("/data/issues")
            .map(Value::take)
            .filter(Value::is_object)
            .ok_or_else(|| unexpected("no data.issues in the GraphQL answer"))?;
        let page_info: PageInfo = connection
            .get("pageInfo")
            .cloned()
            .and_then(|info| serde_json::from_value(info).ok())
            .ok_or_else(|| unexpected("no pageInfo in the issues connection"))?;
        let Some(Value::Array(nodes)) = connection.get("nodes").cloned() else {
            return Err(unexpected("no nodes in the issues connection"));
        };

        let records = state.admit(nodes, "/id", "/updatedAt", instant)?;

        let next = match page_info.has_next_page {
            true => Some(
                page_info
                    .end_cursor
                    .filter(|after| !after.is_empty())
                    .ok_or_else(|| unexpected("hasNextPage without an endCursor"))?,
            ),
            false => None,
        };
        state.into_page(records, next, instant)
    }
}

#[cfg(test)]
mod tests {
    //! A fake Linear behind the bench answers the `issues` query like the schema says:
    //! nodes ordered by `updatedAt` (descending, the harder case for a watermark), Relay
    //! paging with opaque `endCursor`s, `updatedAt.gte` filtering and `includeArchived`.
    //! Issue nodes follow the fields of `Issue` in `packages/sdk/src/schema.graphql`;
    //! the error bodies are the documented `RATELIMITED` shape
    //! (<https://linear.app/developers/rate-limiting>) and the SDK's `extensions.type`.

    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::PolledRecord;
    use crate::pollers::test_support::{
        ApiRequest, Bench, ScriptedResponse, bench_with_rules, catalog_error_rules,
        normalize_polled,
    };
    use junction_catalog::FailureClass;
    use junction_outbound::CallFailure;
    use junction_pipeline::normalize::{ChangeKind, Normalized};

    fn issue(n: usize, updated_at: &str) -> Value {
        json!({
            "id": format!("00000000-0000-4000-a000-{n:012}"),
            "identifier": format!("ENG-{n}"),
            "title": format!("Issue {n}"),
            "description": null,
            "priority": 3,
            "priorityLabel": "Medium",
            "url": format!("https://linear.app/acme/issue/ENG-{n}"),
            "createdAt": "2026-11-01T09:00:00.000Z",
            "updatedAt": updated_at,
            "completedAt": null,
            "canceledAt": null,
            "archivedAt": null,
            "trashed": null,
            "dueDate": null,
            "state": { "name": "Todo", "type": "unstarted" },
            "assignee": null,
            "labels": { "nodes": [{ "id": "label-1", "name": "Bug" }] },
            "project": { "id": "project-1" },
            "parent": null,
        })
    }

    fn stamp(second: usize) -> String {
        format!("2026-11-20T10:{:02}:{:02}.000Z", second / 60, second % 60)
    }

    #[derive(Debug, Default)]
    struct Workspace {
        issues: Vec<Value>,
        /// Nodes per answer (the fake ignores `first`, as a server may answer fewer).
        page: usize,
    }

    impl Workspace {
        fn answer(&self, req: &ApiRequest) -> ScriptedResponse {
            assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", GRAPHQL));
            let body = req.json();
            let query = body["query"].as_str().unwrap_or_default();
            let variables = &body["variables"];
            assert_eq!(variables["first"], json!(PAGE_SIZE));
            assert!(query.contains("includeArchived: true"), "{query}");
            let since = variables["since"].as_str();
            assert_eq!(since.is_some(), query.contains("gte: $since"), "{query}");
            let mut matching: Vec<&Value> = self
                .issues
                .iter()
                .filter(|i| since.is_none_or(|since| i["updatedAt"].as_str() >= Some(since)))
                .collect();
            // Descending, newest first; the cursor is the position after the last node.
            matching.sort_by(|a, b| b["updatedAt"].as_str().cmp(&a["updatedAt"].as_str()));
            let offset: usize = variables["after"]
                .as_str()
                .and_then(|after| after.strip_prefix("pos:"))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let nodes: Vec<&Value> = matching
                .iter()
                .skip(offset)
                .take(self.page)
                .copied()
                .collect();
            let next = offset + nodes.len();
            ScriptedResponse::json(&json!({ "data": { "issues": {
                "nodes": nodes,
                "pageInfo": { "hasNextPage": next < matching.len(), "endCursor": format!("pos:{next}") },
            }}}))
        }
    }

    /// The catalog's own `error_rules`.
    fn catalog_rules() -> String {
        catalog_error_rules(include_str!("../../../catalog/providers/linear.toml"))
    }

    async fn linear_bench(workspace: &Arc<Mutex<Workspace>>) -> Bench {
        let bench = bench_with_rules(&catalog_rules()).await;
        let serving = workspace.clone();
        bench.serve(move |req| serving.lock().expect("workspace").answer(req));
        bench
    }

    fn ids(records: &[PolledRecord]) -> Vec<String> {
        let mut ids: Vec<String> = records
            .iter()
            .map(|r| format!("{}@{}", &r.id[r.id.len() - 2..], r.updated_at))
            .collect();
        ids.sort();
        ids
    }

    fn workspace(count: usize, page: usize) -> Arc<Mutex<Workspace>> {
        Arc::new(Mutex::new(Workspace {
            issues: (1..=count).map(|n| issue(n, &stamp(n))).collect(),
            page,
        }))
    }

    #[tokio::test]
    async fn a_backfill_pages_through_every_issue_then_only_changes_follow() {
        let workspace = workspace(23, 5);
        let bench = linear_bench(&workspace).await;
        let poller = LinearIssues::new(bench.api.clone());

        let (records, cursor) = bench.sync(&poller, None, 10).await;
        assert_eq!(records.len(), 23);
        assert_eq!(ids(&records).len(), 23);
        let requests = bench.requests();
        assert_eq!(requests.len(), 5, "23 issues in pages of 5");
        assert!(
            requests
                .iter()
                .all(|r| r.json()["variables"].get("since").is_none())
        );
        let cursor = cursor.expect("cursor");
        let stored = Watermark::parse(&cursor, "linear-issues").expect("cursor");
        assert_eq!(stored.since.as_deref(), Some(stamp(23).as_str()));
        assert_eq!(stored.seen.len(), 1);
        assert_eq!(stored.page, None);

        // Nothing changed: one request, nothing sent, the cursor stays.
        let (records, again) = bench.sync(&poller, Some(&cursor), 3).await;
        assert!(records.is_empty(), "{:?}", ids(&records));
        assert_eq!(again.as_deref(), Some(cursor.as_str()));
        assert_eq!(
            bench.requests().last().expect("request").json()["variables"]["since"],
            json!(stamp(23))
        );

        // Three issues change; a fourth is trashed.
        {
            let mut ws = workspace.lock().expect("workspace");
            for n in [2, 9, 17] {
                ws.issues[n - 1] = issue(n, &stamp(100 + n));
            }
            let mut trashed = issue(4, &stamp(130));
            trashed["trashed"] = json!(true);
            trashed["archivedAt"] = json!(stamp(130));
            ws.issues[3] = trashed;
        }
        let (records, cursor) = bench.sync(&poller, Some(&cursor), 3).await;
        assert_eq!(
            ids(&records),
            [
                format!("02@{}", stamp(102)),
                format!("04@{}", stamp(130)),
                format!("09@{}", stamp(109)),
                format!("17@{}", stamp(117)),
            ]
        );
        let deleted = records
            .iter()
            .find(|r| r.id.ends_with("04"))
            .expect("ENG-4");
        assert_eq!(map(deleted).meta.change, ChangeKind::Deleted);
        assert_eq!(
            Watermark::parse(&cursor.expect("cursor"), "linear-issues")
                .expect("cursor")
                .since,
            Some(stamp(130))
        );
    }

    #[tokio::test]
    async fn issues_sharing_the_watermark_are_neither_lost_nor_sent_twice() {
        // Six issues share one millisecond across a page boundary (pages of 4).
        let workspace = workspace(10, 4);
        {
            let mut ws = workspace.lock().expect("workspace");
            for n in 5..=10 {
                ws.issues[n - 1] = issue(n, &stamp(50));
            }
        }
        let bench = linear_bench(&workspace).await;
        let poller = LinearIssues::new(bench.api.clone());
        let (records, cursor) = bench.sync(&poller, None, 5).await;
        assert_eq!(ids(&records).len(), 10);
        let cursor = cursor.expect("cursor");
        let stored = Watermark::parse(&cursor, "linear-issues").expect("cursor");
        assert_eq!(stored.since, Some(stamp(50)));
        assert_eq!(
            stored.seen.len(),
            6,
            "every id at the watermark is remembered"
        );

        // A seventh issue lands on the same millisecond after the pass: found, and only it.
        workspace
            .lock()
            .expect("workspace")
            .issues
            .push(issue(11, &stamp(50)));
        let (records, cursor) = bench.sync(&poller, Some(&cursor), 5).await;
        assert_eq!(ids(&records), [format!("11@{}", stamp(50))]);
        let stored = Watermark::parse(&cursor.expect("cursor"), "linear-issues").expect("cursor");
        assert_eq!(stored.seen.len(), 7);

        // The next pass repeats nothing.
        let (records, _) = bench
            .sync(&poller, Some(&stored.encode().expect("cursor")), 5)
            .await;
        assert!(records.is_empty());
    }

    #[tokio::test]
    async fn an_issue_updated_during_a_pass_is_found_by_the_next() {
        let workspace = workspace(12, 4);
        let bench = linear_bench(&workspace).await;
        let poller = LinearIssues::new(bench.api.clone());
        let first = bench.page(&poller, None).await.expect("page");
        assert!(first.more);
        // Issue 1 (not read yet: the oldest comes last) moves to the front, already read.
        workspace.lock().expect("workspace").issues[0] = issue(1, &stamp(200));
        let (rest, cursor) = bench.sync(&poller, first.cursor.as_deref(), 5).await;
        let mut seen = ids(&first.records);
        seen.extend(ids(&rest));
        assert!(!seen.iter().any(|id| id.starts_with("01@")), "{seen:?}");
        let (records, _) = bench.sync(&poller, cursor.as_deref(), 5).await;
        assert_eq!(ids(&records), [format!("01@{}", stamp(200))]);
    }

    #[tokio::test]
    async fn graphql_errors_are_classified_and_an_answer_without_data_is_refused() {
        let workspace = workspace(1, 5);
        let bench = linear_bench(&workspace).await;
        let poller = LinearIssues::new(bench.api.clone());
        let cases = [
            (
                json!({"errors": [{"message": "Forbidden", "extensions": {"type": "forbidden", "userPresentableMessage": "You don't have access."}}], "data": null}),
                FailureClass::Permanent,
                "forbidden",
            ),
            (
                json!({"errors": [{"message": "Authentication required", "extensions": {"type": "authentication error"}}], "data": null}),
                FailureClass::Unauthorized,
                "authentication error",
            ),
            (
                json!({"data": null}),
                FailureClass::Permanent,
                "unexpected_response: no data.issues in the GraphQL answer",
            ),
        ];
        for (body, class, code) in cases {
            let answer = body.clone();
            bench.serve(move |_| ScriptedResponse::json(&answer));
            let failure = bench.page(&poller, None).await.expect_err("refused");
            match failure {
                CallError::Failed(CallFailure {
                    class: got,
                    code: got_code,
                }) => {
                    assert_eq!((got, got_code.as_str()), (class, code), "{body}");
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_rate_limited_answer_is_retried_not_read_as_empty() {
        let workspace = workspace(3, 5);
        let bench = linear_bench(&workspace).await;
        let poller = LinearIssues::new(bench.api.clone());
        let serving = workspace.clone();
        let limited = Arc::new(Mutex::new(1));
        bench.serve(move |req| {
            let mut left = limited.lock().expect("count");
            if *left > 0 {
                *left -= 1;
                return ScriptedResponse::with_status(
                    400,
                    &json!({"errors": [{"message": "Rate limit exceeded", "extensions": {"code": "RATELIMITED"}}]}),
                );
            }
            serving.lock().expect("workspace").answer(req)
        });
        let (records, _) = bench.sync(&poller, None, 3).await;
        assert_eq!(records.len(), 3);
        assert_eq!(bench.requests().len(), 2, "one retry after the rate limit");
    }

    fn map(record: &PolledRecord) -> junction_pipeline::normalize::WorkItem {
        match normalize_polled("linear", "issue", record)
            .into_iter()
            .next()
        {
            Some(Normalized::WorkItem(item)) => item,
            other => panic!("expected one WorkItem, got {other:?}"),
        }
    }
}
