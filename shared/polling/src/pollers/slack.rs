//! `slack-history`: Slack conversations (resource `conversation`, adapter
//! `slack.conversation`), one record per conversation that changed since the last pass.
//!
//! Slack pushes changes through the Events API (the `slack.event` adapter), so this poll
//! is reconciliation: a slow pass over every conversation that catches what the events
//! missed. Requests (all `GET`, under the catalog's `https://slack.com/api`, bearer token):
//! - `/conversations.list?types=public_channel,private_channel,mpim,im&exclude_archived=false&limit=10[&cursor=…]`:
//!   `{ok, channels: [conversation object], response_metadata: {next_cursor}}`; "An empty,
//!   null, or non-existent next_cursor in the response indicates no further results"
//!   (<https://docs.slack.dev/reference/methods/conversations.list>,
//!   <https://docs.slack.dev/apis/web-api/pagination>; shapes and the scopes
//!   `channels:read groups:read im:read mpim:read` from slackapi/slack-api-specs
//!   `web-api/slack_web_openapi_v2.json`).
//! - `/conversations.history?channel=…&limit=1[&oldest=<watermark>]`: `{ok, messages,
//!   has_more, …}`; "The most recent messages in the time range are returned first", and
//!   `oldest` is exclusive ("If a message has the same timestamp as oldest or latest it
//!   will not be included") (<https://docs.slack.dev/reference/methods/conversations.history>).
//!   `limit=1` also fits the 2025 cap for new non-Marketplace apps (1 request a minute,
//!   `limit` at most 15).
//! - Errors are HTTP 200 `{"ok": false, "error": "<code>"}`; the catalog's `[api]
//!   error_rules` classify them. `not_in_channel` and `channel_not_found` from
//!   `conversations.history` mean "this conversation's messages cannot be read" (a bot
//!   sees only conversations it is a member of) and do not stop the pass;
//!   `invalid_cursor` from `conversations.list` restarts the pass's listing.
//!
//! A pass walks `conversations.list` (archived conversations included) and, for each
//! conversation whose messages the token can read, asks `conversations.history` for the
//! newest message after the watermark:
//! - **First pass** (no cursor): every conversation is sent, with its newest message.
//! - **Later passes**: a conversation is sent when it has a message after the watermark,
//!   or when its `updated` (epoch ms) is after it (metadata: rename, topic, archive); in
//!   that case a second `conversations.history` call without `oldest` finds its newest
//!   message so the record stays whole. Archiving and renaming also post messages
//!   (`channel_archive`, `channel_name`), so readable conversations are caught either way.
//! - The record body is the `conversations.list` object with `latest` set to
//!   `{"type": "message", "ts": <newest ts>}` (the conversation object's own `latest`
//!   field, a message object; only `ts` is kept). `updated_at` is
//!   `<updated>:<newest ts>` (`-` for a missing part): a new message or a metadata change
//!   makes a new version, a repeat of the same state the same event id.
//! - The watermark of the next pass is this pass's start time minus 300 s, taken from
//!   Junction's clock before the first listing page: a message posted in a conversation
//!   after the pass visited it has a later `ts` and is found next pass. The overlap
//!   absorbs clock skew; what it finds again has the same version.
//! - Deleted conversations leave `conversations.list`; the Events API's `channel_deleted`
//!   reports them. Edits and deletions of older messages are not seen through `oldest`.
//!
//! Pages are bounded: one `conversations.list` page of 10 and at most 12
//! `conversations.history` calls (about 10 s at the catalog's 0.8 requests/s after its
//! burst of 5), sharing a 25 s deadline. When the budget runs out, or the outbound client
//! asks to wait past the deadline (a 429's `Retry-After`), the page returns what it has
//! and the cursor remembers which conversations of the current listing page are done.
//!
//! Cursor (JSON): `{"since": <watermark, epoch s>?, "started": <this pass's start, epoch
//! s>?, "page": "<conversations.list cursor of the current page>"?, "done": ["<id>", …]?}`.
//! No `since`: the first pass. No `started`: between passes (the next page starts one).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Api, Paging, PollTarget, unexpected};
use crate::{Page, PolledRecord, Poller};
use junction_aws::clock::{Clock, SystemClock};
use junction_outbound::CallError;

const LIST: &str = "/conversations.list";
const HISTORY: &str = "/conversations.history";
/// Every conversation type (`conversations.list` `types`).
const TYPES: &str = "public_channel,private_channel,mpim,im";
/// Conversations per `conversations.list` page.
const LIST_LIMIT: usize = 10;
/// `conversations.history` calls per poller page: one per listed conversation, plus a
/// few second calls for metadata-only changes.
const HISTORY_CALLS_PER_PAGE: usize = 12;
/// How far before the pass's start the next pass looks.
const OVERLAP_SECONDS: i64 = 300;
/// `conversations.history` errors that mean "not readable with this token".
const UNREADABLE: [&str; 2] = ["not_in_channel", "channel_not_found"];

/// How long a page's calls may run: the client starts no call that could end after this
/// (its call timeout is 10 s) and requeues instead of waiting past it, so a page returns
/// within about 25 s however the provider throttles, well inside the worker's 120 s lease.
const PAGE_TIME: Duration = Duration::from_secs(25);

/// `target` with its deadline brought forward to the page's.
fn page_target<'a>(target: &PollTarget<'a>) -> PollTarget<'a> {
    PollTarget {
        deadline: target.deadline.min(Instant::now() + PAGE_TIME),
        ..*target
    }
}

/// Polls Slack conversations for new messages and metadata changes.
#[derive(Debug)]
pub struct SlackHistory {
    api: Api,
    clock: Arc<dyn Clock>,
}

impl SlackHistory {
    pub fn new(api: Api) -> Self {
        SlackHistory {
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
    since: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    done: Vec<String>,
}

impl Cursor {
    fn parse(text: &str) -> Result<Cursor, CallError> {
        let refused = || unexpected("stored cursor is not a slack-history cursor");
        match serde_json::from_str::<Value>(text) {
            Ok(value) if value.is_object() => serde_json::from_value(value).map_err(|_| refused()),
            _ => Err(refused()),
        }
    }

    fn encode(&self) -> Result<String, CallError> {
        serde_json::to_string(self).map_err(|_| unexpected("cursor does not serialize"))
    }
}

#[derive(Debug, Deserialize)]
struct ChannelList {
    #[serde(default)]
    channels: Vec<Value>,
    /// The next page's cursor, read by the catalog's `[pagination]` scheme.
    #[serde(skip)]
    next_page: Option<String>,
}

/// What `conversations.history` said about a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Newest {
    /// The newest message's `ts`.
    Message(String),
    /// No message (in the range asked).
    Empty,
    /// The token cannot read it.
    Unreadable,
}

fn failure_code(err: &CallError) -> Option<&str> {
    match err {
        CallError::Failed(failure) => Some(failure.code.as_str()),
        _ => None,
    }
}

impl SlackHistory {
    async fn list(
        &self,
        target: &PollTarget<'_>,
        cursor: Option<&str>,
    ) -> Result<ChannelList, CallError> {
        let limit = LIST_LIMIT.to_string();
        let mut query = vec![
            ("types", TYPES),
            ("exclude_archived", "false"),
            ("limit", limit.as_str()),
        ];
        let paging = Paging::of("slack")?;
        if let Some(cursor) = cursor {
            query.push((paging.param()?, cursor));
        }
        let response = self
            .api
            .get(target, "conversations.list", LIST, &query)
            .await?;
        let next = paging.next(cursor, &response)?;
        let mut list: ChannelList =
            serde_json::from_value(response).map_err(|_| unexpected("conversations.list body"))?;
        list.next_page = next;
        Ok(list)
    }

    /// The newest message of `channel` after `oldest` (or at all).
    async fn newest(
        &self,
        target: &PollTarget<'_>,
        channel: &str,
        oldest: Option<i64>,
        calls: &mut usize,
    ) -> Result<Newest, CallError> {
        *calls += 1;
        let oldest = oldest.map(|seconds| seconds.to_string());
        let mut query = vec![("channel", channel), ("limit", "1")];
        if let Some(oldest) = oldest.as_deref() {
            query.push(("oldest", oldest));
        }
        let response = match self
            .api
            .get(target, "conversations.history", HISTORY, &query)
            .await
        {
            Ok(response) => response,
            Err(err) if failure_code(&err).is_some_and(|code| UNREADABLE.contains(&code)) => {
                return Ok(Newest::Unreadable);
            }
            Err(err) => return Err(err),
        };
        let Some(message) = response
            .get("messages")
            .and_then(Value::as_array)
            .and_then(|messages| messages.first())
        else {
            return Ok(Newest::Empty);
        };
        message
            .get("ts")
            .and_then(Value::as_str)
            .filter(|ts| !ts.is_empty())
            .map(|ts| Newest::Message(ts.to_owned()))
            .ok_or_else(|| unexpected("conversations.history message without ts"))
    }

    /// The record for one listed conversation, when it changed since `since`.
    async fn check(
        &self,
        target: &PollTarget<'_>,
        id: &str,
        channel: &Value,
        since: Option<i64>,
        calls: &mut usize,
    ) -> Result<Option<PolledRecord>, CallError> {
        // DMs carry no `is_member`; only `false` means the token cannot read it.
        let readable = channel.get("is_member").and_then(Value::as_bool) != Some(false);
        let updated = channel.get("updated").and_then(Value::as_i64);
        let metadata_changed = match since {
            None => true,
            Some(since) => updated.is_some_and(|updated| updated > since.saturating_mul(1000)),
        };
        let mut newest = Newest::Unreadable;
        if readable {
            newest = self.newest(target, id, since, calls).await?;
            if newest == Newest::Empty && since.is_some() && metadata_changed {
                newest = self.newest(target, id, None, calls).await?;
            }
        }
        let has_new_message = since.is_some() && matches!(newest, Newest::Message(_));
        if !(metadata_changed || has_new_message) {
            return Ok(None);
        }
        let mut body = channel.clone();
        let Some(object) = body.as_object_mut() else {
            return Err(unexpected("conversations.list channel is not an object"));
        };
        if let Newest::Message(ts) = &newest {
            object.insert("latest".into(), json!({ "type": "message", "ts": ts }));
        }
        let latest = object
            .get("latest")
            .and_then(|latest| latest.get("ts"))
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_owned();
        let updated = updated.map_or_else(|| "-".to_owned(), |updated| updated.to_string());
        Ok(Some(PolledRecord {
            id: id.to_owned(),
            updated_at: format!("{updated}:{latest}"),
            body,
        }))
    }
}

#[async_trait]
impl Poller for SlackHistory {
    fn resource(&self) -> &str {
        "conversation"
    }

    async fn page(&self, target: &PollTarget<'_>, cursor: Option<&str>) -> Result<Page, CallError> {
        let target = &page_target(target);
        let mut cursor = match cursor {
            None => Cursor::default(),
            Some(text) => Cursor::parse(text)?,
        };
        let started = match cursor.started {
            Some(started) => started,
            None => {
                let now = self.clock.now().unix_timestamp();
                cursor.started = Some(now);
                now
            }
        };
        let list = match self.list(target, cursor.page.as_deref()).await {
            Ok(list) => list,
            Err(err) if cursor.page.is_some() && failure_code(&err) == Some("invalid_cursor") => {
                tracing::warn!(
                    provider = %target.job.provider,
                    connection = %target.job.connection,
                    "Slack refused the stored conversations.list cursor; listing again from the start"
                );
                cursor.page = None;
                cursor.done.clear();
                return Ok(Page {
                    records: Vec::new(),
                    cursor: Some(cursor.encode()?),
                    more: true,
                });
            }
            Err(err) => return Err(err),
        };

        let mut records = Vec::new();
        let mut calls = 0;
        let mut finished = true;
        let mut progressed = false;
        for channel in &list.channels {
            let id = channel
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
                .ok_or_else(|| unexpected("conversations.list channel without id"))?;
            if cursor.done.iter().any(|done| done == id) {
                continue;
            }
            if calls >= HISTORY_CALLS_PER_PAGE {
                finished = false;
                break;
            }
            match self
                .check(target, id, channel, cursor.since, &mut calls)
                .await
            {
                Ok(record) => records.extend(record),
                Err(err @ CallError::Requeue { .. }) if !progressed => return Err(err),
                Err(CallError::Requeue { .. }) => {
                    finished = false;
                    break;
                }
                Err(err) => return Err(err),
            }
            cursor.done.push(id.to_owned());
            progressed = true;
        }

        let next_page = list.next_page;
        let next = if !finished {
            cursor
        } else if let Some(next_page) = next_page {
            Cursor {
                since: cursor.since,
                started: cursor.started,
                page: Some(next_page),
                done: Vec::new(),
            }
        } else {
            // The pass is complete: the next one looks from shortly before it began.
            Cursor {
                since: Some(started - OVERLAP_SECONDS),
                ..Cursor::default()
            }
        };
        let more = next.started.is_some();
        Ok(Page {
            records,
            cursor: Some(next.encode()?),
            more,
        })
    }
}

#[cfg(test)]
mod tests {
    //! A fake workspace behind the bench answers in Slack's documented shapes: channel
    //! objects and the `conversations.list` / `conversations.history` envelopes follow the
    //! examples in slackapi/slack-api-specs `web-api/slack_web_openapi_v2.json` (channel
    //! `general`, `{"ok": true, "messages": […], "has_more", "pin_count",
    //! "response_metadata"}`, errors `{"ok": false, "error": "channel_not_found"}`), plus
    //! `updated` (epoch ms) from the conversation object page
    //! (docs.slack.dev/reference/objects/conversation-object). The bench runs the catalog's
    //! own Slack `error_rules`, so `ok: false` answers are errors as in production.

    use std::{
        collections::{BTreeMap, BTreeSet},
        sync::{Arc, Mutex, MutexGuard},
    };

    use super::*;
    use crate::pollers::test_support::{
        ApiRequest, Bench, ScriptedResponse, bench_with_rules, catalog_error_rules,
        normalize_polled,
    };
    use junction_aws::clock::FixedClock;
    use junction_catalog::FailureClass;
    use junction_outbound::CallFailure;
    use junction_pipeline::normalize::{ChangeKind, Normalized, dates};

    /// When the first pass starts.
    const T0: i64 = 1_700_000_000;
    /// Every channel's `updated` before the test changes it (the docs' example value).
    const UPDATED: i64 = 1_689_965_803_820;

    #[derive(Debug, Clone)]
    struct FakeChannel {
        object: Value,
        member: bool,
        /// Message timestamps, ascending.
        messages: Vec<String>,
    }

    #[derive(Debug, Default)]
    struct Workspace {
        channels: Vec<FakeChannel>,
        /// `conversations.history` of these answers 429 `ratelimited`, Retry-After 120.
        throttled: BTreeSet<String>,
        /// `conversations.history` of these answers `not_in_channel` although listed as
        /// a member (the bot was removed between the two calls).
        refused: BTreeSet<String>,
    }

    fn channel_id(n: usize) -> String {
        format!("C{n:08}")
    }

    fn public(n: usize, member: bool) -> FakeChannel {
        FakeChannel {
            object: json!({
                "id": channel_id(n),
                "name": format!("project-{n}"),
                "is_channel": true,
                "is_group": false,
                "is_im": false,
                "is_mpim": false,
                "is_private": false,
                "created": 1_449_252_889,
                "creator": "U012A3CDE",
                "is_archived": false,
                "is_general": n == 0,
                "unlinked": 0,
                "name_normalized": format!("project-{n}"),
                "is_shared": false,
                "is_ext_shared": false,
                "is_org_shared": false,
                "is_pending_ext_shared": false,
                "pending_shared": [],
                "is_member": member,
                "topic": {"value": "Company-wide announcements and work-based matters", "creator": "", "last_set": 0},
                "purpose": {"value": "This channel is for team-wide communication and announcements.", "creator": "", "last_set": 0},
                "previous_names": [],
                "num_members": 4,
                "updated": UPDATED
            }),
            member,
            messages: Vec::new(),
        }
    }

    /// A DM, with the fields `objs_conversation` requires for one (no `is_member`).
    fn im(n: usize) -> FakeChannel {
        FakeChannel {
            object: json!({
                "id": channel_id(n).replacen('C', "D", 1),
                "created": 1_498_500_348,
                "is_im": true,
                "is_org_shared": false,
                "user": "U0BS9U4SV",
                "is_user_deleted": false,
                "priority": 0
            }),
            member: true,
            messages: Vec::new(),
        }
    }

    /// `ts` as `(seconds, microseconds)`, for exact comparisons.
    fn ts_key(ts: &str) -> (i64, i64) {
        let (seconds, fraction) = ts.split_once('.').unwrap_or((ts, "0"));
        let micros = format!("{fraction:0<6}");
        (
            seconds.parse().unwrap_or(0),
            micros.get(..6).and_then(|m| m.parse().ok()).unwrap_or(0),
        )
    }

    fn slack(body: Value) -> ScriptedResponse {
        ScriptedResponse::json(&body)
    }

    fn slack_error(code: &str) -> ScriptedResponse {
        slack(json!({"ok": false, "error": code}))
    }

    impl Workspace {
        fn id(&self, n: usize) -> String {
            self.channels[n].object["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }

        fn post(&mut self, n: usize, ts: &str) {
            let messages = &mut self.channels[n].messages;
            messages.push(ts.to_owned());
            messages.sort_by_key(|ts| ts_key(ts));
        }

        fn set(&mut self, n: usize, field: &str, value: Value) {
            self.channels[n].object[field] = value;
        }

        fn answer(&self, req: &ApiRequest) -> ScriptedResponse {
            match req.path.as_str() {
                "/conversations.list" => {
                    let from = match req.query_param("cursor") {
                        None => 0,
                        Some(cursor) => {
                            match cursor.strip_prefix("next:").and_then(|n| n.parse().ok()) {
                                Some(from) => from,
                                None => return slack_error("invalid_cursor"),
                            }
                        }
                    };
                    let limit = req
                        .query_param("limit")
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(100);
                    let page: Vec<&Value> = self
                        .channels
                        .iter()
                        .skip(from)
                        .take(limit)
                        .map(|c| &c.object)
                        .collect();
                    let next = if from + limit < self.channels.len() {
                        format!("next:{}", from + limit)
                    } else {
                        String::new()
                    };
                    slack(
                        json!({"ok": true, "channels": page, "response_metadata": {"next_cursor": next}}),
                    )
                }
                "/conversations.history" => {
                    let id = req.query_param("channel").unwrap_or_default();
                    let Some(channel) = self.channels.iter().find(|c| c.object["id"] == id) else {
                        return slack_error("channel_not_found");
                    };
                    if self.throttled.contains(id) {
                        return ScriptedResponse {
                            status: 429,
                            headers: vec![
                                ("content-type".into(), "application/json".into()),
                                ("retry-after".into(), "120".into()),
                            ],
                            body: json!({"ok": false, "error": "ratelimited"}).to_string(),
                            ..ScriptedResponse::default()
                        };
                    }
                    if !channel.member || self.refused.contains(id) {
                        return slack_error("not_in_channel");
                    }
                    let oldest = req.query_param("oldest").map(ts_key).unwrap_or((0, 0));
                    let limit = req
                        .query_param("limit")
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(100);
                    let newer: Vec<&String> = channel
                        .messages
                        .iter()
                        .rev()
                        .filter(|ts| ts_key(ts) > oldest)
                        .collect();
                    let messages: Vec<Value> = newer
                        .iter()
                        .take(limit)
                        .map(|ts| json!({"type": "message", "user": "U012AB3CDE", "text": "I find you punny", "ts": ts}))
                        .collect();
                    slack(json!({
                        "ok": true,
                        "messages": messages,
                        "has_more": newer.len() > limit,
                        "pin_count": 0,
                        "response_metadata": {"next_cursor": ""}
                    }))
                }
                _ => ScriptedResponse::with_status(
                    404,
                    &json!({"ok": false, "error": "unknown_method"}),
                ),
            }
        }
    }

    /// The catalog's own `error_rules`.
    fn catalog_rules() -> String {
        catalog_error_rules(include_str!("../../../catalog/providers/slack.toml"))
    }

    async fn slack_bench(workspace: &Arc<Mutex<Workspace>>) -> Bench {
        let bench = bench_with_rules(&catalog_rules()).await;
        let workspace = Arc::clone(workspace);
        bench.serve(move |req| edit(&workspace).answer(req));
        bench
    }

    fn edit(workspace: &Arc<Mutex<Workspace>>) -> MutexGuard<'_, Workspace> {
        workspace
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn poller(bench: &Bench, clock: &Arc<FixedClock>) -> SlackHistory {
        SlackHistory::new(bench.api.clone()).with_clock(clock.clone())
    }

    fn cursor(text: Option<&str>) -> Cursor {
        Cursor::parse(text.expect("a cursor")).expect("a slack-history cursor")
    }

    fn versions(records: &[PolledRecord]) -> Vec<(String, String)> {
        records
            .iter()
            .map(|r| (r.id.clone(), r.updated_at.clone()))
            .collect()
    }

    fn latest(record: &PolledRecord) -> Option<&str> {
        record.body.pointer("/latest/ts").and_then(Value::as_str)
    }

    fn history_calls(requests: &[ApiRequest]) -> Vec<&ApiRequest> {
        requests
            .iter()
            .filter(|r| r.path == "/conversations.history")
            .collect()
    }

    fn ts(seconds: i64, micros: u32) -> String {
        format!("{seconds}.{micros:06}")
    }

    /// 45 public channels (5, 17 and 33 not joined; 30 joined but unreadable) and 2 DMs;
    /// channel n has n % 3 messages.
    fn workspace() -> Workspace {
        let mut workspace = Workspace::default();
        for n in 0..45 {
            workspace
                .channels
                .push(public(n, ![5, 17, 33].contains(&n)));
        }
        workspace.channels.push(im(45));
        workspace.channels.push(im(46));
        for n in 0..47 {
            for k in 0..(n % 3) {
                workspace.post(n, &ts(T0 - 5000 + n as i64, 100 * (k as u32 + 1)));
            }
        }
        workspace.refused.insert(channel_id(30));
        workspace
    }

    fn map(record: &PolledRecord) -> junction_pipeline::normalize::MessageGroup {
        match normalize_polled("slack", "conversation", record)
            .into_iter()
            .next()
        {
            Some(Normalized::MessageGroup(item)) => item,
            other => panic!("expected one MessageGroup, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_first_pass_sends_every_conversation_then_only_the_changed_ones() {
        let workspace = Arc::new(Mutex::new(workspace()));
        let bench = slack_bench(&workspace).await;
        let clock = Arc::new(FixedClock::at_unix(T0));
        let poller = poller(&bench, &clock);

        // GIVEN 47 conversations WHEN the first pass runs
        let (records, last) = bench.sync(&poller, None, 30).await;

        // THEN each is sent once, in listing order, with its newest message when readable
        let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        let expected: Vec<String> = (0..47).map(|n| edit(&workspace).id(n)).collect();
        assert_eq!(ids, expected);
        for (n, record) in records.iter().enumerate() {
            let newest = edit(&workspace).channels[n].messages.last().cloned();
            let readable = ![5, 17, 30, 33].contains(&n);
            let want = if readable { newest } else { None };
            assert_eq!(latest(record).map(str::to_owned), want, "channel {n}");
            let updated = if n < 45 {
                UPDATED.to_string()
            } else {
                "-".to_owned()
            };
            assert_eq!(
                record.updated_at,
                format!("{updated}:{}", want.as_deref().unwrap_or("-"))
            );
        }
        assert_eq!(
            cursor(last.as_deref()),
            Cursor {
                since: Some(T0 - 300),
                ..Cursor::default()
            }
        );
        // and the requests are the documented ones
        let requests = bench.requests();
        let lists: Vec<&ApiRequest> = requests
            .iter()
            .filter(|r| r.path == "/conversations.list")
            .collect();
        assert_eq!(lists.len(), 5, "47 conversations, 10 a page");
        for (n, list) in lists.iter().enumerate() {
            assert_eq!(list.method, "GET");
            assert_eq!(
                list.query_param("types"),
                Some("public_channel,private_channel,mpim,im")
            );
            assert_eq!(list.query_param("exclude_archived"), Some("false"));
            assert_eq!(list.query_param("limit"), Some("10"));
            let cursor = (n > 0).then(|| format!("next:{}", n * 10));
            assert_eq!(list.query_param("cursor"), cursor.as_deref());
        }
        let histories = history_calls(&requests);
        assert_eq!(
            histories.len(),
            44,
            "not for the three channels the bot is not in"
        );
        for call in &histories {
            assert_eq!(call.query_param("limit"), Some("1"));
            assert_eq!(
                call.query_param("oldest"),
                None,
                "the first pass reads the newest"
            );
        }

        // WHEN, an hour later, messages arrive in 2, 20 and a DM, 8 is archived, 11's
        // topic changes without a message, and 17 (not joined) is renamed
        clock.advance(time::Duration::hours(1));
        {
            let mut w = edit(&workspace);
            w.post(2, &ts(T0 + 100, 1));
            w.post(20, &ts(T0 + 200, 1));
            w.post(45, &ts(T0 + 300, 1));
            w.set(8, "is_archived", json!(true));
            w.set(8, "updated", json!((T0 + 400) * 1000));
            w.post(8, &ts(T0 + 400, 2));
            w.set(
                11,
                "topic",
                json!({"value": "Q3 planning", "creator": "U1", "last_set": T0 + 450}),
            );
            w.set(11, "updated", json!((T0 + 450) * 1000));
            w.set(17, "name", json!("renamed"));
            w.set(17, "updated", json!((T0 + 500) * 1000));
        }
        let before = bench.requests().len();
        let (records, last) = bench.sync(&poller, last.as_deref(), 30).await;

        // THEN exactly those are sent, each once, at a new version
        let newest = |n: usize| {
            edit(&workspace).channels[n]
                .messages
                .last()
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(
            versions(&records),
            [
                (channel_id(2), format!("{UPDATED}:{}", ts(T0 + 100, 1))),
                (
                    channel_id(8),
                    format!("{}:{}", (T0 + 400) * 1000, ts(T0 + 400, 2))
                ),
                (
                    channel_id(11),
                    format!("{}:{}", (T0 + 450) * 1000, newest(11))
                ),
                (channel_id(17), format!("{}:-", (T0 + 500) * 1000)),
                (channel_id(20), format!("{UPDATED}:{}", ts(T0 + 200, 1))),
                (edit(&workspace).id(45), format!("-:{}", ts(T0 + 300, 1))),
            ]
        );
        assert_eq!(
            cursor(last.as_deref()),
            Cursor {
                since: Some(T0 + 3600 - 300),
                ..Cursor::default()
            }
        );
        let requests = bench.requests();
        let second: Vec<&ApiRequest> = history_calls(&requests[before..]);
        let oldest = (T0 - 300).to_string();
        assert_eq!(
            second
                .iter()
                .filter(|r| r.query_param("oldest") == Some(oldest.as_str()))
                .count(),
            44
        );
        let without: Vec<Option<&str>> = second
            .iter()
            .filter(|r| r.query_param("oldest").is_none())
            .map(|r| r.query_param("channel"))
            .collect();
        assert_eq!(
            without,
            [Some(channel_id(11).as_str())],
            "11 changed without a message"
        );

        // AND the bodies map: archived, and last_message_at from the newest message
        let archived = map(&records[1]);
        assert_eq!(archived.archived, Some(true));
        assert_eq!(archived.meta.change, ChangeKind::Snapshot);
        assert_eq!(
            archived.last_message_at,
            Some(dates::parse(&ts(T0 + 400, 2)).expect("ts"))
        );
        assert_eq!(map(&records[3]).last_message_at, None, "not readable");
    }

    #[tokio::test]
    async fn messages_at_page_boundaries_and_during_a_pass_are_not_lost() {
        let mut fresh = Workspace::default();
        for n in 0..20 {
            fresh.channels.push(public(n, true));
        }
        // 9 and 10 sit on both sides of the first listing boundary with one `ts`; 3's
        // newest message is exactly at the next pass's watermark.
        fresh.post(9, &ts(T0 - 1000, 100));
        fresh.post(10, &ts(T0 - 1000, 100));
        fresh.post(3, &ts(T0 - 300, 0));
        let workspace = Arc::new(Mutex::new(fresh));
        let bench = slack_bench(&workspace).await;
        let clock = Arc::new(FixedClock::at_unix(T0));
        let poller = poller(&bench, &clock);

        let first = bench.page(&poller, None).await.expect("page");
        assert_eq!(first.records.len(), 10);
        // WHEN messages arrive mid-pass in a visited (0) and an unvisited (15) channel
        clock.advance(time::Duration::seconds(5));
        edit(&workspace).post(0, &ts(T0 + 5, 0));
        edit(&workspace).post(15, &ts(T0 + 6, 0));
        let (rest, last) = bench.sync(&poller, first.cursor.as_deref(), 10).await;
        let pass_one: Vec<PolledRecord> = first.records.into_iter().chain(rest).collect();
        assert_eq!(pass_one.len(), 20, "each conversation once");
        let one: BTreeMap<String, String> = versions(&pass_one).into_iter().collect();
        assert_eq!(
            one[&channel_id(9)],
            one[&channel_id(10)],
            "the same ts on both pages"
        );
        assert_eq!(one[&channel_id(15)], format!("{UPDATED}:{}", ts(T0 + 6, 0)));
        assert_eq!(
            one[&channel_id(0)],
            format!("{UPDATED}:-"),
            "visited before its message"
        );

        // WHEN the next pass runs with new messages sharing a ts across the boundary
        clock.advance(time::Duration::hours(1));
        edit(&workspace).post(9, &ts(T0 + 1000, 500));
        edit(&workspace).post(10, &ts(T0 + 1000, 500));
        let (pass_two, _) = bench.sync(&poller, last.as_deref(), 10).await;

        // THEN the mid-pass message in 0 is found now, 9 and 10 both come, 15 repeats its
        // version (the same event id), and 3's message at the watermark is not sent again
        assert_eq!(
            versions(&pass_two),
            [
                (channel_id(0), format!("{UPDATED}:{}", ts(T0 + 5, 0))),
                (channel_id(9), format!("{UPDATED}:{}", ts(T0 + 1000, 500))),
                (channel_id(10), format!("{UPDATED}:{}", ts(T0 + 1000, 500))),
                (channel_id(15), one[&channel_id(15)].clone()),
            ]
        );
    }

    #[tokio::test]
    async fn a_throttled_history_call_keeps_the_conversations_already_checked() {
        let mut fresh = Workspace::default();
        for n in 0..25 {
            fresh.channels.push(public(n, true));
            fresh.post(n, &ts(T0 - 100, n as u32));
        }
        fresh.throttled.insert(channel_id(4));
        let workspace = Arc::new(Mutex::new(fresh));
        let clock = Arc::new(FixedClock::at_unix(T0));
        let bench_one = slack_bench(&workspace).await;
        let poller_one = poller(&bench_one, &clock);

        // WHEN Slack answers 429 ratelimited (Retry-After 120) for the fifth conversation
        let page = bench_one
            .page(&poller_one, None)
            .await
            .expect("partial page");

        // THEN the four checked are sent and remembered; the rest wait
        assert_eq!(
            page.records
                .iter()
                .map(|r| r.id.clone())
                .collect::<Vec<_>>(),
            (0..4).map(channel_id).collect::<Vec<_>>()
        );
        assert!(page.more);
        assert_eq!(
            cursor(page.cursor.as_deref()),
            Cursor {
                since: None,
                started: Some(T0),
                page: None,
                done: (0..4).map(channel_id).collect(),
            }
        );
        // and with no progress at all, the wait is the page's error (the job is requeued)
        let err = bench_one.page(&poller_one, page.cursor.as_deref()).await;
        assert!(matches!(err, Err(CallError::Requeue { .. })), "{err:?}");

        // WHEN the job runs again later THEN nothing is lost or sent twice
        edit(&workspace).throttled.clear();
        clock.advance(time::Duration::minutes(2));
        let bench_two = slack_bench(&workspace).await;
        let (rest, last) = bench_two
            .sync(&poller(&bench_two, &clock), page.cursor.as_deref(), 10)
            .await;
        let ids: Vec<String> = page
            .records
            .iter()
            .chain(&rest)
            .map(|r| r.id.clone())
            .collect();
        assert_eq!(ids, (0..25).map(channel_id).collect::<Vec<_>>());
        assert_eq!(
            cursor(last.as_deref()).since,
            Some(T0 - 300),
            "the pass's own start"
        );
    }

    #[tokio::test]
    async fn an_invalid_list_cursor_restarts_the_listing() {
        let mut fresh = Workspace::default();
        for n in 0..12 {
            fresh.channels.push(public(n, true));
        }
        let workspace = Arc::new(Mutex::new(fresh));
        let bench = slack_bench(&workspace).await;
        let clock = Arc::new(FixedClock::at_unix(T0 + 60));
        let poller = poller(&bench, &clock);
        let stale = Cursor {
            since: Some(T0 - 3600),
            started: Some(T0),
            page: Some("dGVhbTpDMDYxRkE1UEI=".into()),
            done: vec![channel_id(0)],
        }
        .encode()
        .expect("cursor");

        let page = bench.page(&poller, Some(&stale)).await.expect("page");

        assert!(page.records.is_empty());
        assert!(page.more);
        assert_eq!(
            cursor(page.cursor.as_deref()),
            Cursor {
                since: Some(T0 - 3600),
                started: Some(T0),
                ..Cursor::default()
            }
        );
        let (_, last) = bench.sync(&poller, page.cursor.as_deref(), 10).await;
        assert_eq!(cursor(last.as_deref()).since, Some(T0 - 300));
    }

    #[tokio::test]
    async fn slack_error_bodies_are_classified_by_the_catalog_rules() {
        let mut fresh = Workspace::default();
        fresh.channels.push(public(0, true));
        fresh.post(0, &ts(T0 - 10, 0));
        let workspace = Arc::new(Mutex::new(fresh));
        let bench = slack_bench(&workspace).await;
        let clock = Arc::new(FixedClock::at_unix(T0));
        let poller = poller(&bench, &clock);

        // GIVEN Slack's 429 with Retry-After and `ratelimited` (docs.slack.dev rate limits)
        bench.harness.server.script_api([ScriptedResponse {
            status: 429,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("retry-after".into(), "1".into()),
            ],
            body: r#"{"ok":false,"error":"ratelimited"}"#.into(),
            ..ScriptedResponse::default()
        }]);
        // THEN the call waits and is retried
        let page = bench.page(&poller, None).await.expect("retried");
        assert_eq!(page.records.len(), 1);

        // GIVEN `invalid_auth` inside an HTTP 200 THEN it is an authorization failure
        bench
            .harness
            .server
            .script_api([slack_error("invalid_auth")]);
        let err = bench.page(&poller, page.cursor.as_deref()).await;
        assert_eq!(
            err,
            Err(CallError::Failed(CallFailure {
                class: FailureClass::Unauthorized,
                code: "invalid_auth".into()
            }))
        );

        // GIVEN any other `ok: false` from conversations.list THEN it is permanent
        bench
            .harness
            .server
            .script_api([slack_error("invalid_types")]);
        let err = bench.page(&poller, page.cursor.as_deref()).await;
        assert_eq!(
            err,
            Err(CallError::Failed(CallFailure {
                class: FailureClass::Permanent,
                code: "invalid_types".into()
            }))
        );
    }

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let cursor = Cursor {
            since: Some(T0 - 300),
            started: Some(T0 + 3600),
            page: Some("next:10".into()),
            done: vec!["C1".into()],
        };
        let text = cursor.encode().expect("encodes");
        assert_eq!(
            text,
            r#"{"since":1699999700,"started":1700003600,"page":"next:10","done":["C1"]}"#
        );
        assert_eq!(Cursor::parse(&text), Ok(cursor));
        assert_eq!(Cursor::parse("{}"), Ok(Cursor::default()));
        assert!(
            Cursor::parse(r#"{"phase":"history","start":"5"}"#).is_err(),
            "a Gmail cursor"
        );
        assert!(Cursor::parse("[]").is_err());
        assert!(Cursor::parse("not json").is_err());
    }
}
