//! `gmail-history`: Gmail threads (resource `thread`, adapter `gmail.thread`), from a
//! backfill of the mailbox followed by its change history.
//!
//! Requests (all `GET`, paths under the catalog's `https://gmail.googleapis.com`; shapes from
//! the Gmail REST reference and Google's discovery document, googleapis/google-api-go-client
//! `gmail/v1/gmail-api.json`):
//! - `/gmail/v1/users/me/profile` (`users.getProfile`): `historyId` is "The ID of the
//!   mailbox's current history record"
//!   (<https://developers.google.com/workspace/gmail/api/reference/rest/v1/users/getProfile>).
//! - `/gmail/v1/users/me/threads?maxResults=20[&pageToken=…]` (`users.threads.list`):
//!   `{threads: [{id, snippet, historyId}], nextPageToken}`; spam and trash are left out
//!   (`includeSpamTrash` defaults to false)
//!   (<https://developers.google.com/workspace/gmail/api/reference/rest/v1/users.threads/list>).
//! - `/gmail/v1/users/me/threads/{id}?format=metadata&metadataHeaders=Subject&…From&…To&…Cc`
//!   (`users.threads.get`): the thread with its messages' ids, labels, `internalDate` and
//!   those headers; `historyId` is "The ID of the last history record that modified this
//!   thread" (<https://developers.google.com/workspace/gmail/api/reference/rest/v1/users.threads/get>,
//!   <https://developers.google.com/workspace/gmail/api/reference/rest/v1/users.threads#Thread>).
//! - `/gmail/v1/users/me/history?startHistoryId=…&maxResults=100&historyTypes=messageAdded&historyTypes=messageDeleted&historyTypes=labelAdded&historyTypes=labelRemoved[&pageToken=…]`
//!   (`users.history.list`; `historyTypes` is a repeated parameter in the discovery
//!   document): `{history: [{id, messagesAdded, messagesDeleted, labelsAdded,
//!   labelsRemoved}], nextPageToken, historyId}`, records "in chronological order
//!   (increasing historyId)"; each change names a message with its `threadId`. "If you
//!   receive no nextPageToken in the response, there are no updates to retrieve and you can
//!   store the returned historyId"; "Supplying an invalid or out of date startHistoryId
//!   typically returns an HTTP 404 … your application should perform a full sync"
//!   (<https://developers.google.com/workspace/gmail/api/reference/rest/v1/users.history/list>,
//!   <https://developers.google.com/workspace/gmail/api/guides/sync>).
//!
//! The sync:
//! - **Backfill** (no cursor, or after a 404 on `history.list`): the profile's `historyId`
//!   is read *first*, then every thread outside spam and trash is listed and fetched, 20 a
//!   page. Changes made while the backfill runs are in the history after that id, so they
//!   are not lost (a thread fetched during the backfill and changed again later comes once
//!   per version).
//! - **History**: from the stored `historyId`, the threads named by each history page are
//!   fetched (at most 20 per page; the rest wait in the cursor). After the last history
//!   page is done, the response's `historyId` becomes the watermark. The history covers
//!   every thread, so a thread moved to spam or trash comes again with that label.
//! - **Deletions**: Gmail has no tombstones. A thread the history named whose
//!   `threads.get` answers 404 is gone; it becomes `{"id", "historyId", "deleted": true}`
//!   (Junction's marker, mapped to a deleted `MessageGroup` by `gmail.thread`), versioned
//!   `deleted-<id of the last history record that named it>`. A thread that disappears
//!   between `threads.list` and `threads.get` in the backfill is skipped: its deletion is
//!   in the history after the backfill's start.
//! - Record versions: `updated_at` is the thread's `historyId` as Gmail states it, so a
//!   repeat of the same version (a thread named on two history pages, a page repeated
//!   after a crash) has the same event id.
//! - A page's calls share a 25 s deadline. When the outbound client asks to wait past it
//!   in the middle of a page (rate limit), the page returns the threads already fetched
//!   and keeps the rest in the cursor, so a tight quota slows the sync down but never
//!   makes it repeat itself.
//!
//! Cursor (JSON): `{"phase": "backfill" | "history", "start": "<historyId>", "page":
//! "<threads.list or history.list pageToken>"?, "pending": [{"id": "<threadId>", "at":
//! "<history record id>"?}]?}`. In the backfill, `start` is the profile's `historyId`
//! taken before listing and `page` the next `threads.list` page (absent: listing done). In
//! the history, `start` is the `startHistoryId` of the query being paged with `page`, or,
//! with no `page`, the watermark to query from next. `pending` holds threads listed or
//! named but not fetched yet.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use super::{Api, Paging, PollTarget, unexpected};
use crate::{Page, PolledRecord, Poller};
use junction_outbound::CallError;

const PROFILE: &str = "/gmail/v1/users/me/profile";
const THREADS: &str = "/gmail/v1/users/me/threads";
const HISTORY: &str = "/gmail/v1/users/me/history";

/// Threads listed per `threads.list` page and fetched per poller page: with the listing,
/// 21 calls, about 6 s at the catalog's 2 requests/s after its burst of 10, inside the
/// worker's 15 s page budget.
const THREADS_PER_PAGE: usize = 20;
/// History records per `history.list` page: Gmail's default (at most 500).
const HISTORY_RECORDS_PER_PAGE: &str = "100";
/// Every change that alters what the `gmail.thread` adapter maps (messages, labels).
const HISTORY_TYPES: [&str; 4] = [
    "messageAdded",
    "messageDeleted",
    "labelAdded",
    "labelRemoved",
];
/// The headers `gmail.thread` reads.
const METADATA_HEADERS: [&str; 4] = ["Subject", "From", "To", "Cc"];

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

/// Polls Gmail threads through the mailbox history.
#[derive(Debug)]
pub struct GmailHistory {
    api: Api,
}

impl GmailHistory {
    pub fn new(api: Api) -> Self {
        GmailHistory { api }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    Backfill,
    History,
}

/// The stored cursor (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cursor {
    phase: Phase,
    start: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pending: Vec<Pending>,
}

/// A thread to fetch; `at` is the last history record that named it (none for threads
/// from the backfill's listing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Pending {
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<String>,
}

impl Cursor {
    fn parse(text: &str) -> Result<Cursor, CallError> {
        let refused = || unexpected("stored cursor is not a gmail-history cursor");
        match serde_json::from_str::<Value>(text) {
            Ok(value) if value.is_object() => serde_json::from_value(value).map_err(|_| refused()),
            _ => Err(refused()),
        }
    }

    fn encode(&self) -> Result<String, CallError> {
        serde_json::to_string(self).map_err(|_| unexpected("cursor does not serialize"))
    }
}

/// Gmail writes `historyId` (a uint64) as a JSON string; a number is accepted too.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum HistoryId {
    Text(String),
    Number(u64),
}

impl HistoryId {
    fn into_text(self) -> Option<String> {
        let text = match self {
            HistoryId::Text(text) => text,
            HistoryId::Number(number) => number.to_string(),
        };
        (!text.trim().is_empty()).then_some(text)
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    #[serde(default)]
    history_id: Option<HistoryId>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ThreadList {
    #[serde(default)]
    threads: Vec<ThreadRef>,
}

#[derive(Debug, Deserialize)]
struct ThreadRef {
    id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryList {
    #[serde(default)]
    history: Vec<HistoryRecord>,
    #[serde(default)]
    history_id: Option<HistoryId>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryRecord {
    #[serde(default)]
    id: Option<HistoryId>,
    #[serde(default)]
    messages_added: Vec<Change>,
    #[serde(default)]
    messages_deleted: Vec<Change>,
    #[serde(default)]
    labels_added: Vec<Change>,
    #[serde(default)]
    labels_removed: Vec<Change>,
}

/// `messagesAdded[]`, `messagesDeleted[]`, `labelsAdded[]`, `labelsRemoved[]`: each
/// names a message, which "will typically only have id and threadId".
#[derive(Debug, Deserialize)]
struct Change {
    #[serde(default)]
    message: Option<MessageRef>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MessageRef {
    #[serde(default)]
    thread_id: Option<String>,
}

/// What fetching the pending threads came to.
#[derive(Debug)]
struct Fetched {
    records: Vec<PolledRecord>,
    /// How many pending threads were handled (fetched, or found gone).
    done: usize,
    /// The client asked to wait before the batch was done.
    stopped: Option<CallError>,
}

fn read<T: DeserializeOwned>(value: Value, what: &str) -> Result<T, CallError> {
    serde_json::from_value(value).map_err(|_| unexpected(what))
}

fn non_empty(token: Option<String>) -> Option<String> {
    token.filter(|token| !token.is_empty())
}

/// A 404: on `history.list` the start id is too old, on `threads.get` the thread is gone.
fn not_found(err: &CallError) -> bool {
    matches!(err, CallError::Failed(failure) if failure.code == "http_404")
}

/// A path segment, percent-encoded (thread ids are hex in practice, but come from the
/// provider).
fn path_segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The threads a history page names, in order of first mention, each with the last
/// history record that named it (`fallback` when a record has no id).
fn changed_threads(history: Vec<HistoryRecord>, fallback: &str) -> Vec<Pending> {
    let mut pending: Vec<Pending> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for record in history {
        let at = record
            .id
            .and_then(HistoryId::into_text)
            .unwrap_or_else(|| fallback.to_owned());
        let changes = record
            .messages_added
            .into_iter()
            .chain(record.messages_deleted)
            .chain(record.labels_added)
            .chain(record.labels_removed);
        for thread in changes.filter_map(|change| non_empty(change.message?.thread_id)) {
            match index.get(&thread) {
                Some(&at_index) => {
                    if let Some(entry) = pending.get_mut(at_index) {
                        entry.at = Some(at.clone());
                    }
                }
                None => {
                    index.insert(thread.clone(), pending.len());
                    pending.push(Pending {
                        id: thread,
                        at: Some(at.clone()),
                    });
                }
            }
        }
    }
    pending
}

/// A page that made no progress at all before the client asked to wait is the client's
/// error (the worker requeues the job); otherwise the progress is kept.
fn check_progress(listed: bool, fetched: &Fetched) -> Result<(), CallError> {
    match &fetched.stopped {
        Some(err) if !listed && fetched.done == 0 => Err(err.clone()),
        _ => Ok(()),
    }
}

impl GmailHistory {
    /// A full sync: the mailbox's current `historyId` first, then the first listing page.
    async fn start(&self, target: &PollTarget<'_>) -> Result<Page, CallError> {
        let profile: Profile = read(
            self.api
                .get(target, "users.getProfile", PROFILE, &[])
                .await?,
            "users.getProfile body",
        )?;
        let start = profile
            .history_id
            .and_then(HistoryId::into_text)
            .ok_or_else(|| unexpected("users.getProfile without historyId"))?;
        let cursor = Cursor {
            phase: Phase::Backfill,
            start,
            page: None,
            pending: Vec::new(),
        };
        self.backfill(target, cursor, true).await
    }

    /// One backfill page: list the next threads (when none are pending), fetch them.
    async fn backfill(
        &self,
        target: &PollTarget<'_>,
        mut cursor: Cursor,
        first: bool,
    ) -> Result<Page, CallError> {
        let mut listed = false;
        if cursor.pending.is_empty() && (first || cursor.page.is_some()) {
            let per_page = THREADS_PER_PAGE.to_string();
            let mut query = vec![("maxResults", per_page.as_str())];
            let paging = Paging::of("gmail")?;
            if let Some(token) = cursor.page.as_deref() {
                query.push((paging.param()?, token));
            }
            let response = self
                .api
                .get(target, "threads.list", THREADS, &query)
                .await?;
            let next_page = paging.next(cursor.page.as_deref(), &response)?;
            let list: ThreadList = read(response, "threads.list body")?;
            cursor.pending = list
                .threads
                .into_iter()
                .map(|thread| Pending {
                    id: thread.id,
                    at: None,
                })
                .collect();
            cursor.page = next_page;
            listed = true;
        }
        let fetched = self.fetch(target, &mut cursor.pending).await?;
        check_progress(listed, &fetched)?;
        let next = if cursor.pending.is_empty() && cursor.page.is_none() {
            // Listing done: the history since the backfill's start follows at once.
            Cursor {
                phase: Phase::History,
                start: cursor.start,
                page: None,
                pending: Vec::new(),
            }
        } else {
            cursor
        };
        Ok(Page {
            records: fetched.records,
            cursor: Some(next.encode()?),
            more: true,
        })
    }

    /// One history page: read the next history page (when no threads are pending), fetch
    /// the threads it names.
    async fn history(
        &self,
        target: &PollTarget<'_>,
        mut cursor: Cursor,
    ) -> Result<Page, CallError> {
        let mut listed = false;
        if cursor.pending.is_empty() {
            let mut query = vec![
                ("startHistoryId", cursor.start.as_str()),
                ("maxResults", HISTORY_RECORDS_PER_PAGE),
            ];
            query.extend(HISTORY_TYPES.iter().map(|kind| ("historyTypes", *kind)));
            let paging = Paging::of("gmail")?;
            if let Some(token) = cursor.page.as_deref() {
                query.push((paging.param()?, token));
            }
            let response = match self.api.get(target, "history.list", HISTORY, &query).await {
                Ok(response) => response,
                Err(err) if not_found(&err) => {
                    tracing::warn!(
                        provider = %target.job.provider,
                        connection = %target.job.connection,
                        "Gmail no longer has the stored history id (404); starting a full sync"
                    );
                    return self.start(target).await;
                }
                Err(err) => return Err(err),
            };
            let next_page = paging.next(cursor.page.as_deref(), &response)?;
            let list: HistoryList = read(response, "history.list body")?;
            // The newest record of this page: the watermark when Gmail leaves out its own.
            let last_record = list
                .history
                .last()
                .and_then(|record| record.id.clone())
                .and_then(HistoryId::into_text);
            cursor.pending = changed_threads(list.history, &cursor.start);
            match next_page {
                Some(token) => cursor.page = Some(token),
                None => {
                    cursor.page = None;
                    if let Some(newest) = list
                        .history_id
                        .and_then(HistoryId::into_text)
                        .or(last_record)
                    {
                        cursor.start = newest;
                    }
                }
            }
            listed = true;
        }
        let fetched = self.fetch(target, &mut cursor.pending).await?;
        check_progress(listed, &fetched)?;
        let more = !cursor.pending.is_empty() || cursor.page.is_some();
        Ok(Page {
            records: fetched.records,
            cursor: Some(cursor.encode()?),
            more,
        })
    }

    /// Fetches the first [`THREADS_PER_PAGE`] pending threads and removes those handled;
    /// stops early when the client asks to wait.
    async fn fetch(
        &self,
        target: &PollTarget<'_>,
        pending: &mut Vec<Pending>,
    ) -> Result<Fetched, CallError> {
        let mut records = Vec::new();
        let mut done = 0;
        let mut stopped = None;
        for item in pending.iter().take(THREADS_PER_PAGE) {
            match self.thread(target, item).await {
                Ok(record) => records.extend(record),
                Err(err @ CallError::Requeue { .. }) => {
                    stopped = Some(err);
                    break;
                }
                Err(err) => return Err(err),
            }
            done += 1;
        }
        pending.drain(..done);
        Ok(Fetched {
            records,
            done,
            stopped,
        })
    }

    /// `threads.get` of one pending thread: its record, its deletion (404 for a thread the
    /// history named), or nothing (404 for a thread from the listing).
    async fn thread(
        &self,
        target: &PollTarget<'_>,
        item: &Pending,
    ) -> Result<Option<PolledRecord>, CallError> {
        let path = format!("{THREADS}/{}", path_segment(&item.id));
        let mut query = vec![("format", "metadata")];
        query.extend(
            METADATA_HEADERS
                .iter()
                .map(|name| ("metadataHeaders", *name)),
        );
        match self.api.get(target, "threads.get", &path, &query).await {
            Ok(thread) => {
                let version = thread
                    .get("historyId")
                    .cloned()
                    .and_then(|value| serde_json::from_value::<HistoryId>(value).ok())
                    .and_then(HistoryId::into_text)
                    .ok_or_else(|| unexpected("threads.get without historyId"))?;
                Ok(Some(PolledRecord {
                    id: item.id.clone(),
                    updated_at: version,
                    body: thread,
                }))
            }
            Err(err) if not_found(&err) => {
                if item.at.is_none() {
                    tracing::debug!(
                        connection = %target.job.connection,
                        "a listed Gmail thread was gone before it was fetched"
                    );
                }
                Ok(item.at.as_ref().map(|at| PolledRecord {
                    id: item.id.clone(),
                    updated_at: format!("deleted-{at}"),
                    body: json!({ "id": item.id, "historyId": at, "deleted": true }),
                }))
            }
            Err(err) => Err(err),
        }
    }
}

#[async_trait]
impl Poller for GmailHistory {
    fn resource(&self) -> &str {
        "thread"
    }

    async fn page(&self, target: &PollTarget<'_>, cursor: Option<&str>) -> Result<Page, CallError> {
        let target = &page_target(target);
        let Some(text) = cursor else {
            return self.start(target).await;
        };
        let cursor = Cursor::parse(text)?;
        match cursor.phase {
            Phase::Backfill => self.backfill(target, cursor, false).await,
            Phase::History => self.history(target, cursor).await,
        }
    }
}

#[cfg(test)]
mod tests {
    //! A fake mailbox behind the bench answers in the documented shapes: thread bodies
    //! follow the `users.threads` resource (the fixture `tests/fixtures/gmail/thread.json`,
    //! from developers.google.com/workspace/gmail/api/reference/rest/v1/users.threads),
    //! history pages the `users.history.list` response (ids as strings, records in
    //! increasing id order with gaps, empty lists left out as Gmail's JSON does), errors
    //! Google's envelope (guides/handle-errors). The 404 body's message "Requested entity
    //! was not found." and reason `notFound` are third-party observations: the poller
    //! only reads the status.

    use std::{
        collections::{BTreeMap, BTreeSet},
        sync::{Arc, Mutex},
    };

    use serde_json::{Value, json};

    use super::*;
    use crate::pollers::test_support::{
        ApiRequest, Bench, ScriptedResponse, bench, bench_with_rules, catalog_error_rules,
    };
    use junction_catalog::FailureClass;
    use junction_outbound::CallFailure;
    use junction_pipeline::normalize::ChangeKind;

    #[derive(Debug, Clone)]
    struct FakeThread {
        history_id: u64,
        messages: u64,
        labels: Vec<String>,
    }

    #[derive(Debug, Default)]
    struct Mailbox {
        threads: BTreeMap<String, FakeThread>,
        /// `(record id, record)`, increasing ids.
        history: Vec<(u64, Value)>,
        /// The mailbox's current history id.
        current: u64,
        /// `startHistoryId` below this answers 404.
        oldest: u64,
        /// Threads whose `threads.get` answers 429 with a long Retry-After.
        throttled: BTreeSet<String>,
    }

    fn thread_id(n: usize) -> String {
        format!("18c8f2a1b2c3{n:04x}")
    }

    impl Mailbox {
        /// `count` threads, each last modified at `version`, the mailbox at `current`.
        fn with_threads(count: usize, version: impl Fn(usize) -> u64, current: u64) -> Self {
            let threads = (0..count)
                .map(|n| {
                    let thread = FakeThread {
                        history_id: version(n),
                        messages: 1,
                        labels: vec!["INBOX".into()],
                    };
                    (thread_id(n), thread)
                })
                .collect();
            Mailbox {
                threads,
                current,
                oldest: 100,
                ..Mailbox::default()
            }
        }

        fn record(&mut self, gap: u64, record: impl Fn(u64) -> Value) -> u64 {
            self.current += gap;
            let id = self.current;
            self.history.push((id, record(id)));
            id
        }

        /// A new message in `thread` (a new thread when it does not exist).
        fn add_message(&mut self, thread: &str) -> u64 {
            let message = format!("{thread}m{}", self.current);
            let id = self.record(7, |id| {
                json!({
                    "id": id.to_string(),
                    "messages": [{"id": message, "threadId": thread}],
                    "messagesAdded": [{"message": {"id": message, "threadId": thread, "labelIds": ["UNREAD", "INBOX"]}}]
                })
            });
            let entry = self.threads.entry(thread.to_owned()).or_insert(FakeThread {
                history_id: id,
                messages: 0,
                labels: vec!["INBOX".into()],
            });
            entry.history_id = id;
            entry.messages += 1;
            id
        }

        fn add_label(&mut self, thread: &str, label: &str) -> u64 {
            let id = self.record(3, |id| {
                json!({
                    "id": id.to_string(),
                    "messages": [{"id": format!("{thread}m0"), "threadId": thread}],
                    "labelsAdded": [{"message": {"id": format!("{thread}m0"), "threadId": thread}, "labelIds": [label]}]
                })
            });
            if let Some(entry) = self.threads.get_mut(thread) {
                entry.history_id = id;
                entry.labels.push(label.to_owned());
            }
            id
        }

        /// Deletes the thread's messages for good (not trash): the thread is gone.
        fn delete(&mut self, thread: &str) -> u64 {
            let id = self.record(5, |id| {
                json!({
                    "id": id.to_string(),
                    "messages": [{"id": format!("{thread}m0"), "threadId": thread}],
                    "messagesDeleted": [{"message": {"id": format!("{thread}m0"), "threadId": thread}}]
                })
            });
            self.threads.remove(thread);
            id
        }

        fn thread_body(&self, id: &str, thread: &FakeThread) -> Value {
            let messages: Vec<Value> = (0..thread.messages)
                .map(|n| {
                    json!({
                        "id": format!("{id}m{n}"),
                        "threadId": id,
                        "labelIds": thread.labels,
                        "snippet": "Can we meet next week to go over the Q1 plan?",
                        "historyId": thread.history_id.to_string(),
                        "internalDate": (1_704_164_645_000_u64 + n * 60_000).to_string(),
                        "sizeEstimate": 4312,
                        "payload": {
                            "partId": "",
                            "mimeType": "multipart/alternative",
                            "filename": "",
                            "headers": [
                                {"name": "From", "value": "\"Doe, Jane\" <Jane.Doe@example.com>"},
                                {"name": "To", "value": "Bob Smith <bob@example.org>"},
                                {"name": "Subject", "value": "Q1 planning"}
                            ],
                            "body": {"size": 0}
                        }
                    })
                })
                .collect();
            json!({
                "id": id,
                "snippet": "Can we meet next week to go over the Q1 plan?",
                "historyId": thread.history_id.to_string(),
                "messages": messages
            })
        }

        fn answer(&self, req: &ApiRequest) -> ScriptedResponse {
            let offset = |req: &ApiRequest| {
                req.query_param("pageToken")
                    .and_then(|t| t.strip_prefix("page-"))
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(0)
            };
            let max = |req: &ApiRequest, default: usize| {
                req.query_param("maxResults")
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(default)
            };
            match req.path.as_str() {
                "/gmail/v1/users/me/profile" => ScriptedResponse::json(&json!({
                    "emailAddress": "jane.doe@example.com",
                    "messagesTotal": self.threads.values().map(|t| t.messages).sum::<u64>(),
                    "threadsTotal": self.threads.len(),
                    "historyId": self.current.to_string()
                })),
                "/gmail/v1/users/me/threads" => {
                    let (from, size) = (offset(req), max(req, 100));
                    let ids: Vec<&String> = self.threads.keys().collect();
                    let page: Vec<Value> = ids
                        .iter()
                        .skip(from)
                        .take(size)
                        .filter_map(|id| {
                            let thread = self.threads.get(*id)?;
                            Some(json!({"id": id, "snippet": "Can we meet", "historyId": thread.history_id.to_string()}))
                        })
                        .collect();
                    let mut body = json!({"threads": page, "resultSizeEstimate": ids.len()});
                    if from + size < ids.len() {
                        body["nextPageToken"] = json!(format!("page-{}", from + size));
                    }
                    ScriptedResponse::json(&body)
                }
                "/gmail/v1/users/me/history" => {
                    let Some(start) = req
                        .query_param("startHistoryId")
                        .and_then(|s| s.parse::<u64>().ok())
                    else {
                        return google_error(400, "badRequest", "Invalid startHistoryId");
                    };
                    if start < self.oldest {
                        return google_error(404, "notFound", "Requested entity was not found.");
                    }
                    let newer: Vec<&Value> = self
                        .history
                        .iter()
                        .filter(|(id, _)| *id > start)
                        .map(|(_, record)| record)
                        .collect();
                    let (from, size) = (offset(req), max(req, 100));
                    let page: Vec<&Value> = newer.iter().skip(from).take(size).copied().collect();
                    let mut body = json!({"historyId": self.current.to_string()});
                    if !page.is_empty() {
                        body["history"] = json!(page);
                    }
                    if from + size < newer.len() {
                        body["nextPageToken"] = json!(format!("page-{}", from + size));
                    }
                    ScriptedResponse::json(&body)
                }
                path => match path.strip_prefix("/gmail/v1/users/me/threads/") {
                    Some(id) if self.throttled.contains(id) => ScriptedResponse {
                        status: 429,
                        headers: vec![
                            ("content-type".into(), "application/json".into()),
                            ("retry-after".into(), "120".into()),
                        ],
                        body: google_body(429, "rateLimitExceeded", "Too many requests")
                            .to_string(),
                        ..ScriptedResponse::default()
                    },
                    Some(id) => match self.threads.get(id) {
                        Some(thread) => ScriptedResponse::json(&self.thread_body(id, thread)),
                        None => google_error(404, "notFound", "Requested entity was not found."),
                    },
                    None => google_error(404, "notFound", "Not Found"),
                },
            }
        }
    }

    fn google_body(code: u16, reason: &str, message: &str) -> Value {
        json!({"error": {"code": code, "message": message, "errors": [{"domain": "global", "reason": reason, "message": message}]}})
    }

    fn google_error(code: u16, reason: &str, message: &str) -> ScriptedResponse {
        ScriptedResponse::with_status(code, &google_body(code, reason, message))
    }

    fn serve(bench: &Bench, mailbox: &Arc<Mutex<Mailbox>>) {
        let mailbox = Arc::clone(mailbox);
        bench.serve(move |req| {
            mailbox
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .answer(req)
        });
    }

    fn edit(mailbox: &Arc<Mutex<Mailbox>>) -> std::sync::MutexGuard<'_, Mailbox> {
        mailbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn cursor(text: Option<&str>) -> Cursor {
        Cursor::parse(text.expect("a cursor")).expect("a gmail-history cursor")
    }

    /// `(id, updated_at)` of each record: the event id's variable part.
    fn versions(records: &[PolledRecord]) -> Vec<(String, String)> {
        records
            .iter()
            .map(|r| (r.id.clone(), r.updated_at.clone()))
            .collect()
    }

    fn requests_to<'a>(requests: &'a [ApiRequest], path: &str) -> Vec<&'a ApiRequest> {
        requests.iter().filter(|r| r.path == path).collect()
    }

    fn values<'a>(req: &'a ApiRequest, name: &str) -> Vec<&'a str> {
        req.query
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .collect()
    }

    /// The catalog's own `error_rules`.
    fn catalog_rules() -> String {
        catalog_error_rules(include_str!("../../../catalog/providers/gmail.toml"))
    }

    #[tokio::test]
    async fn backfill_then_history_gives_every_thread_version_once() {
        let bench = bench().await;
        let mailbox = Arc::new(Mutex::new(Mailbox::with_threads(
            95,
            |n| 500 + n as u64,
            1000,
        )));
        serve(&bench, &mailbox);
        let poller = GmailHistory::new(bench.api.clone());

        // GIVEN a mailbox of 95 threads WHEN it is synced from scratch
        let (records, last) = bench.sync(&poller, None, 20).await;

        // THEN every thread comes once, versioned by its historyId
        let expected: Vec<(String, String)> = (0..95)
            .map(|n| (thread_id(n), (500 + n).to_string()))
            .collect();
        assert_eq!(versions(&records), expected);
        assert!(records.iter().all(|r| r.body["messages"].is_array()));
        assert_eq!(
            cursor(last.as_deref()),
            Cursor {
                phase: Phase::History,
                start: "1000".into(),
                page: None,
                pending: Vec::new()
            }
        );
        // and the requests are the documented ones, the profile first
        let requests = bench.requests();
        assert_eq!(requests[0].path, "/gmail/v1/users/me/profile");
        assert!(requests.iter().all(|r| r.method == "GET"));
        let lists = requests_to(&requests, "/gmail/v1/users/me/threads");
        assert_eq!(lists.len(), 5, "95 threads, 20 a page");
        for (n, list) in lists.iter().enumerate() {
            assert_eq!(list.query_param("maxResults"), Some("20"));
            let token = (n > 0).then(|| format!("page-{}", n * 20));
            assert_eq!(list.query_param("pageToken"), token.as_deref());
        }
        let gets: Vec<&ApiRequest> = requests
            .iter()
            .filter(|r| r.path.starts_with("/gmail/v1/users/me/threads/"))
            .collect();
        assert_eq!(gets.len(), 95);
        for get in &gets {
            assert_eq!(get.query_param("format"), Some("metadata"));
            assert_eq!(
                values(get, "metadataHeaders"),
                ["Subject", "From", "To", "Cc"]
            );
        }
        let histories = requests_to(&requests, "/gmail/v1/users/me/history");
        assert_eq!(histories.len(), 1);
        assert_eq!(histories[0].query_param("startHistoryId"), Some("1000"));
        assert_eq!(histories[0].query_param("maxResults"), Some("100"));
        assert_eq!(
            values(histories[0], "historyTypes"),
            [
                "messageAdded",
                "messageDeleted",
                "labelAdded",
                "labelRemoved"
            ]
        );

        // WHEN three threads get messages, one a label, one is deleted, one is new
        let (a, b, c, d) = {
            let mut m = edit(&mailbox);
            let a = m.add_message(&thread_id(3));
            let b = m.add_message(&thread_id(40));
            let c = m.add_label(&thread_id(41), "STARRED");
            let d = m.delete(&thread_id(90));
            (a, b, c, d)
        };
        let (e, current) = {
            let mut m = edit(&mailbox);
            let e = m.add_message("18c9000000000001");
            (e, m.current)
        };
        let (records, last) = bench.sync(&poller, last.as_deref(), 5).await;

        // THEN each change comes once, the deletion as Junction's marker
        assert_eq!(
            versions(&records),
            [
                (thread_id(3), a.to_string()),
                (thread_id(40), b.to_string()),
                (thread_id(41), c.to_string()),
                (thread_id(90), format!("deleted-{d}")),
                ("18c9000000000001".to_owned(), e.to_string()),
            ]
        );
        assert_eq!(
            records[3].body,
            json!({"id": thread_id(90), "historyId": d.to_string(), "deleted": true})
        );
        assert_eq!(cursor(last.as_deref()).start, current.to_string());

        // WHEN nothing changed THEN one history call, nothing polled, the same watermark
        let before = bench.requests().len();
        let (records, again) = bench.sync(&poller, last.as_deref(), 1).await;
        assert!(records.is_empty());
        assert_eq!(again, last);
        assert_eq!(bench.requests().len(), before + 1);
    }

    #[tokio::test]
    async fn polled_bodies_map_through_the_gmail_thread_adapter() {
        let bench = bench().await;
        let mailbox = Arc::new(Mutex::new(Mailbox::with_threads(2, |_| 700, 800)));
        serve(&bench, &mailbox);
        let poller = GmailHistory::new(bench.api.clone());
        let (_, last) = bench.sync(&poller, None, 5).await;
        edit(&mailbox).delete(&thread_id(1));
        edit(&mailbox).add_message(&thread_id(0));
        let (records, _) = bench.sync(&poller, last.as_deref(), 5).await;
        let headers = BTreeMap::new();
        let changes: Vec<_> = records
            .iter()
            .map(|record| {
                let body = record.body.to_string();
                let raw = junction_pipeline::normalize::RawEvent {
                    provider: "gmail",
                    resource: Some(poller.resource()),
                    event_type: None,
                    event_id: None,
                    headers: &headers,
                    body: body.as_bytes(),
                    pinned_api_version: None,
                };
                let out = junction_pipeline::normalize::normalize(&raw).expect("maps");
                let meta = out.items[0].meta();
                (meta.id.clone(), meta.change)
            })
            .collect();
        assert_eq!(
            changes,
            [
                (thread_id(1), ChangeKind::Deleted),
                (thread_id(0), ChangeKind::Snapshot)
            ]
        );
    }

    #[tokio::test]
    async fn changes_during_the_backfill_come_from_the_history() {
        let bench = bench().await;
        let mailbox = Arc::new(Mutex::new(Mailbox::with_threads(45, |_| 900, 1000)));
        serve(&bench, &mailbox);
        let poller = GmailHistory::new(bench.api.clone());

        // GIVEN the first backfill page is done
        let first = bench.page(&poller, None).await.expect("page");
        assert_eq!(first.records.len(), 20);
        assert!(first.more);
        // WHEN a thread already polled changes and a new thread arrives
        let (changed, new) = {
            let mut m = edit(&mailbox);
            (
                m.add_message(&thread_id(2)),
                m.add_message("0000000000000001"),
            )
        };
        let (rest, last) = bench.sync(&poller, first.cursor.as_deref(), 20).await;

        // THEN both are polled at their new version, after the backfill's listing
        let all: BTreeSet<(String, String)> = versions(&first.records)
            .into_iter()
            .chain(versions(&rest))
            .collect();
        assert!(all.contains(&(thread_id(2), "900".into())));
        assert!(all.contains(&(thread_id(2), changed.to_string())));
        assert!(all.contains(&("0000000000000001".into(), new.to_string())));
        assert_eq!(all.len(), 47, "45 backfilled, one changed, one new");
        assert_eq!(cursor(last.as_deref()).start, new.to_string());
    }

    #[tokio::test]
    async fn a_too_old_history_id_starts_a_full_sync() {
        let bench = bench().await;
        let mailbox = Arc::new(Mutex::new(Mailbox::with_threads(25, |_| 400, 1000)));
        edit(&mailbox).oldest = 600;
        serve(&bench, &mailbox);
        let poller = GmailHistory::new(bench.api.clone());
        let stale = Cursor {
            phase: Phase::History,
            start: "450".into(),
            page: None,
            pending: Vec::new(),
        }
        .encode()
        .expect("cursor");

        // WHEN the stored history id is older than Gmail keeps
        let page = bench.page(&poller, Some(&stale)).await.expect("page");

        // THEN the page is the first of a new backfill from the current history id
        let paths: Vec<String> = bench
            .requests()
            .iter()
            .take(3)
            .map(|r| r.path.clone())
            .collect();
        assert_eq!(
            paths,
            [
                "/gmail/v1/users/me/history",
                "/gmail/v1/users/me/profile",
                "/gmail/v1/users/me/threads"
            ]
        );
        assert_eq!(page.records.len(), 20);
        let next = cursor(page.cursor.as_deref());
        assert_eq!((next.phase, next.start.as_str()), (Phase::Backfill, "1000"));
        let (rest, last) = bench.sync(&poller, page.cursor.as_deref(), 5).await;
        assert_eq!(page.records.len() + rest.len(), 25);
        assert_eq!(cursor(last.as_deref()).phase, Phase::History);
    }

    #[tokio::test]
    async fn shared_versions_across_page_boundaries_are_neither_lost_nor_doubled() {
        let bench = bench().await;
        // GIVEN 40 threads that all share one historyId (two listing pages)
        let mailbox = Arc::new(Mutex::new(Mailbox::with_threads(40, |_| 900, 1000)));
        serve(&bench, &mailbox);
        let poller = GmailHistory::new(bench.api.clone());
        let (records, last) = bench.sync(&poller, None, 10).await;
        let ids: BTreeSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!((records.len(), ids.len()), (40, 40));
        assert!(records.iter().all(|r| r.updated_at == "900"));

        // AND 150 history records (two history pages) where thread 7 is named on both
        // sides of the boundary: records 1..=99 label threads 0..=32, 100 and 101 thread 7.
        {
            let mut m = edit(&mailbox);
            for n in 0..99 {
                m.add_label(&thread_id(n % 33), &format!("L{n}"));
            }
            m.add_label(&thread_id(7), "EDGE1");
            m.add_label(&thread_id(7), "EDGE2");
            for n in 0..49 {
                m.add_label(&thread_id(33 + n % 7), &format!("M{n}"));
            }
        }
        let (records, _) = bench.sync(&poller, last.as_deref(), 40).await;
        let latest: BTreeMap<String, String> = edit(&mailbox)
            .threads
            .iter()
            .map(|(id, t)| (id.clone(), t.history_id.to_string()))
            .collect();
        // THEN every thread's current version is polled, each distinct version once (a
        // thread named on both pages comes again with the same event id)
        let polled: BTreeSet<(String, String)> = versions(&records).into_iter().collect();
        assert_eq!(polled, latest.into_iter().collect::<BTreeSet<_>>());
        let thread7 = records.iter().filter(|r| r.id == thread_id(7)).count();
        assert_eq!(thread7, 2, "named on both history pages");
        let requests = bench.requests();
        let histories = requests_to(&requests, "/gmail/v1/users/me/history");
        let last_two: Vec<Option<&str>> = histories
            .iter()
            .rev()
            .take(2)
            .rev()
            .map(|r| r.query_param("pageToken"))
            .collect();
        assert_eq!(last_two, [None, Some("page-100")]);
    }

    #[tokio::test]
    async fn a_throttled_page_keeps_the_threads_already_fetched() {
        let mailbox = Arc::new(Mutex::new(Mailbox::with_threads(30, |_| 900, 1000)));
        edit(&mailbox).throttled.insert(thread_id(4));
        let bench_one = bench().await;
        serve(&bench_one, &mailbox);
        let poller = GmailHistory::new(bench_one.api.clone());

        // WHEN the provider asks to wait at the fifth thread
        let page = bench_one.page(&poller, None).await.expect("partial page");

        // THEN the four threads fetched are returned and the rest stay pending
        assert_eq!(
            page.records
                .iter()
                .map(|r| r.id.clone())
                .collect::<Vec<_>>(),
            (0..4).map(thread_id).collect::<Vec<_>>()
        );
        assert!(page.more);
        let next = cursor(page.cursor.as_deref());
        assert_eq!(
            next.pending.first().map(|p| p.id.clone()),
            Some(thread_id(4))
        );
        assert_eq!(next.pending.len(), 16);
        // and with nothing fetched at all, the wait is the page's error
        let err = bench_one.page(&poller, page.cursor.as_deref()).await;
        assert!(matches!(err, Err(CallError::Requeue { .. })), "{err:?}");

        // WHEN the sync resumes later (a fresh client) THEN nothing is repeated or lost
        edit(&mailbox).throttled.clear();
        let bench_two = bench().await;
        serve(&bench_two, &mailbox);
        let poller = GmailHistory::new(bench_two.api.clone());
        let (rest, _) = bench_two.sync(&poller, page.cursor.as_deref(), 10).await;
        let mut ids: Vec<String> = page
            .records
            .iter()
            .chain(&rest)
            .map(|r| r.id.clone())
            .collect();
        ids.sort();
        assert_eq!(ids, (0..30).map(thread_id).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn google_rate_limit_reasons_are_retried_and_other_403s_are_permanent() {
        let bench = bench_with_rules(&catalog_rules()).await;
        let mailbox = Arc::new(Mutex::new(Mailbox::with_threads(3, |_| 900, 1000)));
        serve(&bench, &mailbox);
        let poller = GmailHistory::new(bench.api.clone());

        // GIVEN Google's 403 userRateLimitExceeded body (guides/handle-errors) first
        bench
            .harness
            .server
            .script_api([ScriptedResponse::with_status(
                403,
                &google_body(403, "userRateLimitExceeded", "User Rate Limit Exceeded"),
            )]);
        let page = bench
            .page(&poller, None)
            .await
            .expect("retried after the limit");
        assert_eq!(page.records.len(), 3);

        // GIVEN a 403 for another reason: a permission problem, not retried
        bench
            .harness
            .server
            .script_api([ScriptedResponse::with_status(
                403,
                &google_body(403, "insufficientPermissions", "Insufficient Permission"),
            )]);
        let err = bench.page(&poller, page.cursor.as_deref()).await;
        assert_eq!(
            err,
            Err(CallError::Failed(CallFailure {
                class: FailureClass::Permanent,
                code: "http_403".into()
            }))
        );
    }

    #[test]
    fn history_pages_name_each_thread_once_with_its_last_record() {
        let list: HistoryList = serde_json::from_value(json!({
            "history": [
                {"id": "11", "messagesAdded": [{"message": {"id": "m1", "threadId": "t1"}}]},
                {"id": "15", "labelsAdded": [{"message": {"id": "m2", "threadId": "t2"}, "labelIds": ["STARRED"]}],
                 "labelsRemoved": [{"message": {"id": "m1", "threadId": "t1"}, "labelIds": ["UNREAD"]}]},
                {"messagesDeleted": [{"message": {"id": "m3", "threadId": "t3"}}]},
                {"id": "30", "messages": [{"id": "m9", "threadId": "t9"}]}
            ],
            "historyId": "31"
        }))
        .expect("a history.list response");
        assert_eq!(
            changed_threads(list.history, "10"),
            [
                Pending {
                    id: "t1".into(),
                    at: Some("15".into())
                },
                Pending {
                    id: "t2".into(),
                    at: Some("15".into())
                },
                Pending {
                    id: "t3".into(),
                    at: Some("10".into())
                },
            ],
            "`messages` alone is not a change type; a record without id falls back"
        );
    }

    #[test]
    fn cursors_round_trip_and_foreign_ones_are_refused() {
        let cursor = Cursor {
            phase: Phase::History,
            start: "9876543".into(),
            page: Some("token".into()),
            pending: vec![Pending {
                id: "t1".into(),
                at: Some("9876550".into()),
            }],
        };
        let text = cursor.encode().expect("encodes");
        assert_eq!(
            text,
            r#"{"phase":"history","start":"9876543","page":"token","pending":[{"id":"t1","at":"9876550"}]}"#
        );
        assert_eq!(Cursor::parse(&text), Ok(cursor));
        assert!(Cursor::parse(r#"{"since": 5}"#).is_err(), "a Slack cursor");
        assert!(Cursor::parse(r#"["history", "5"]"#).is_err());
        assert_eq!(path_segment("18c8f2a1/..?x"), "18c8f2a1%2F..%3Fx");
    }
}
