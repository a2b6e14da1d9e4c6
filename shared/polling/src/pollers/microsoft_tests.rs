//! A fake Inbox behind the bench answers Graph's delta query in its documented shapes
//! (learn.microsoft.com/graph/delta-query-messages and …/api/message-delta):
//! `{"@odata.context", "value": [message…], "@odata.nextLink" | "@odata.deltaLink"}`, links
//! as absolute URLs of the `mailfolders('<id>')` form the docs' examples show, removals as
//! `{"@odata.type", "id", "@removed": {"reason": "deleted"}}`, pages cut at the `Prefer:
//! odata.maxpagesize` asked for. Expired state answers as the delta overview's
//! "Synchronization reset" (410 with a Location header) or "Token duration" (a 40X with
//! `syncStateNotFound` in Graph's error envelope, learn.microsoft.com/graph/errors) says.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use serde_json::{Value, json};

use super::*;
use crate::pollers::test_support::{
    ApiRequest, Bench, ScriptedResponse, bench, bench_with_rules, catalog_error_rules,
    normalize_polled,
};
use junction_catalog::FailureClass;
use junction_outbound::CallFailure;
use junction_pipeline::normalize::{ChangeKind, Normalized};

const CATALOG: &str = include_str!("../../../catalog/providers/microsoft.toml");
const FIRST: &str = "/v1.0/me/mailFolders/inbox/messages/delta";
const LINKED: &str = "/v1.0/me/mailfolders('inbox')/messages/delta";

/// How expired delta state answers.
#[derive(Debug, Clone, Copy)]
enum Expiry {
    /// 410 with a Location header naming the first request.
    Gone,
    /// 400 `syncStateNotFound`.
    SyncStateNotFound,
}

#[derive(Debug)]
struct Inbox {
    /// The provider API base the links are built on.
    base: String,
    messages: BTreeMap<String, Value>,
    /// Every change in order: the message's state after it, `None` for a removal.
    log: Vec<(String, Option<Value>)>,
    /// Minutes past the epoch of the fixture's times, for `lastModifiedDateTime`.
    minute: u32,
    /// Delta and skip tokens of a generation below this are expired.
    expired_before: usize,
    expiry: Expiry,
}

fn message_id(n: usize) -> String {
    format!("AAMkADNkNAAASq35x{n:04}AAA=")
}

impl Inbox {
    fn new(base: String, count: usize) -> Self {
        let mut inbox = Inbox {
            base,
            messages: BTreeMap::new(),
            log: Vec::new(),
            minute: 0,
            expired_before: 0,
            expiry: Expiry::Gone,
        };
        for n in 0..count {
            inbox.put(&message_id(n), false);
        }
        inbox
    }

    fn time(&mut self) -> String {
        self.minute += 1;
        format!(
            "2024-03-01T{:02}:{:02}:00Z",
            self.minute / 60 % 24,
            self.minute % 60
        )
    }

    /// A new message, or `id` marked read: its new version.
    fn put(&mut self, id: &str, read: bool) -> String {
        let at = self.time();
        let received = self
            .messages
            .get(id)
            .and_then(|m| m["receivedDateTime"].as_str().map(str::to_owned))
            .unwrap_or_else(|| at.clone());
        let message = json!({
            "@odata.type": "#microsoft.graph.message",
            "@odata.etag": format!("W/\"CQAAABYAAAARn2vdzPFjSbaPPxzjlzOT{}\"", self.minute),
            "id": id,
            "subject": format!("Subject of {id}"),
            "bodyPreview": "Hello",
            "receivedDateTime": received,
            "lastModifiedDateTime": at,
            "conversationId": format!("conv-{id}"),
            "isRead": read,
            "isDraft": false,
            "categories": [],
            "from": {"emailAddress": {"name": "Dana Swope", "address": "danas@contoso.com"}},
            "toRecipients": [{"emailAddress": {"name": "Me", "address": "me@contoso.com"}}],
            "ccRecipients": []
        });
        self.messages.insert(id.to_owned(), message.clone());
        self.log.push((id.to_owned(), Some(message)));
        at
    }

    fn remove(&mut self, id: &str) {
        self.messages.remove(id);
        self.log.push((id.to_owned(), None));
    }

    /// The changes after generation `from` up to `to`, each id once at its last state.
    fn changes(&self, from: usize, to: usize) -> Vec<Value> {
        let mut last: Vec<(String, Option<Value>)> = Vec::new();
        for (id, state) in &self.log[from..to] {
            last.retain(|(seen, _)| seen != id);
            last.push((id.clone(), state.clone()));
        }
        last.into_iter()
            .map(|(id, state)| {
                state.unwrap_or_else(|| {
                    json!({"@odata.type": "#microsoft.graph.message", "id": id, "@removed": {"reason": "deleted"}})
                })
            })
            .collect()
    }

    fn link(&self, token: &str, value: &str) -> String {
        format!("{}{LINKED}?{token}={value}", self.base)
    }

    fn expired(&self) -> ScriptedResponse {
        match self.expiry {
            Expiry::Gone => {
                let mut gone = ScriptedResponse::with_status(
                    410,
                    &json!({"error": {"code": "generalException", "message": "Gone"}}),
                );
                gone.headers.push((
                    "Location".into(),
                    format!("{}{FIRST}?$deltatoken=", self.base),
                ));
                gone
            }
            Expiry::SyncStateNotFound => ScriptedResponse::with_status(
                400,
                &json!({"error": {"code": "syncStateNotFound", "message": "The sync state generation is not found.", "innerError": {"request-id": "r1", "date": "2024-03-01T00:00:00"}}}),
            ),
        }
    }

    fn answer(&self, request: &ApiRequest) -> ScriptedResponse {
        if request.path != FIRST && request.path != LINKED {
            return ScriptedResponse::with_status(
                404,
                &json!({"error": {"code": "itemNotFound", "message": "Not found"}}),
            );
        }
        let size = request
            .header("prefer")
            .and_then(|prefer| prefer.strip_prefix("odata.maxpagesize="))
            .and_then(|size| size.parse::<usize>().ok())
            .unwrap_or(10);
        // (items, offset, round end generation, skip token prefix)
        let (items, offset, end, prefix) = if let Some(token) = request.query_param("$deltatoken") {
            let from: usize = token.parse().expect("a delta token");
            if from < self.expired_before {
                return self.expired();
            }
            let end = self.log.len();
            (self.changes(from, end), 0, end, format!("d.{from}.{end}"))
        } else if let Some(token) = request.query_param("$skiptoken") {
            let parts: Vec<&str> = token.split('.').collect();
            match parts.as_slice() {
                ["i", end, offset] => {
                    let end: usize = end.parse().expect("generation");
                    if end < self.expired_before {
                        return self.expired();
                    }
                    let items = self.messages.values().cloned().collect();
                    (
                        items,
                        offset.parse().expect("offset"),
                        end,
                        format!("i.{end}"),
                    )
                }
                ["d", from, end, offset] => {
                    let (from, end): (usize, usize) =
                        (from.parse().expect("from"), end.parse().expect("end"));
                    if from < self.expired_before {
                        return self.expired();
                    }
                    (
                        self.changes(from, end),
                        offset.parse().expect("offset"),
                        end,
                        format!("d.{from}.{end}"),
                    )
                }
                _ => panic!("not a skip token of this inbox: {token}"),
            }
        } else {
            assert_eq!(
                request.query_param("$select"),
                Some(SELECT),
                "the first request names the properties"
            );
            let end = self.log.len();
            (
                self.messages.values().cloned().collect(),
                0,
                end,
                format!("i.{end}"),
            )
        };
        let page: Vec<Value> = items.iter().skip(offset).take(size).cloned().collect();
        let mut body = json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(message)",
            "value": page,
        });
        if offset + size < items.len() {
            body["@odata.nextLink"] =
                json!(self.link("$skiptoken", &format!("{prefix}.{}", offset + size)));
        } else {
            body["@odata.deltaLink"] = json!(self.link("$deltatoken", &end.to_string()));
        }
        ScriptedResponse::json(&body)
    }
}

fn serve(bench: &Bench, inbox: &Arc<Mutex<Inbox>>) {
    let inbox = inbox.clone();
    bench.serve(move |request| inbox.lock().expect("inbox").answer(request));
}

fn inbox(bench: &Bench, count: usize) -> Arc<Mutex<Inbox>> {
    let inbox = Arc::new(Mutex::new(Inbox::new(
        bench.harness.server.provider_api_base(),
        count,
    )));
    serve(bench, &inbox);
    inbox
}

fn edit(inbox: &Arc<Mutex<Inbox>>) -> std::sync::MutexGuard<'_, Inbox> {
    inbox.lock().expect("inbox")
}

fn cursor(text: Option<&str>) -> Cursor {
    Cursor::parse(text.expect("a cursor")).expect("our cursor")
}

fn versions(records: &[PolledRecord]) -> Vec<(String, String)> {
    records
        .iter()
        .map(|r| (r.id.clone(), r.updated_at.clone()))
        .collect()
}

async fn graph_bench() -> Bench {
    bench_with_rules(&catalog_error_rules(CATALOG)).await
}

#[tokio::test]
async fn a_first_round_pages_the_inbox_and_keeps_the_delta_link() {
    let bench = graph_bench().await;
    let inbox = inbox(&bench, 120);
    let poller = MicrosoftMessages::new(bench.api.clone());

    // WHEN the first sync runs
    let first = bench.page(&poller, None).await.expect("page");
    assert_eq!(first.records.len(), 50);
    assert!(first.more);
    assert!(matches!(cursor(first.cursor.as_deref()), Cursor::Next(_)));
    let (rest, last) = bench.sync(&poller, first.cursor.as_deref(), 5).await;

    // THEN every message comes once at its version and the delta link is kept
    let mut all = versions(&first.records);
    all.extend(versions(&rest));
    assert_eq!(all.len(), 120);
    let expected: Vec<(String, String)> = edit(&inbox)
        .messages
        .values()
        .map(|m| {
            (
                m["id"].as_str().expect("id").to_owned(),
                m["lastModifiedDateTime"].as_str().expect("time").to_owned(),
            )
        })
        .collect();
    assert_eq!(all, expected);
    match cursor(last.as_deref()) {
        Cursor::Delta(link) => assert!(link.ends_with("$deltatoken=120"), "{link}"),
        other => panic!("a delta cursor, got {other:?}"),
    }
    // three requests: the first with $select, the others the next links as given, all
    // with the page size preference
    let requests = bench.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].path, FIRST);
    assert_eq!(requests[1].path, LINKED);
    assert_eq!(requests[1].query_param("$skiptoken"), Some("i.120.50"));
    assert_eq!(requests[2].query_param("$skiptoken"), Some("i.120.100"));
    assert_eq!(requests[1].query_param("$select"), None);
    for request in &requests {
        assert_eq!(request.header("prefer"), Some("odata.maxpagesize=50"));
        assert!(
            request
                .header("authorization")
                .is_some_and(|auth| auth.starts_with("Bearer "))
        );
    }
}

#[tokio::test]
async fn the_next_round_brings_changes_and_removals_and_an_idle_round_nothing() {
    let bench = graph_bench().await;
    let inbox = inbox(&bench, 3);
    let poller = MicrosoftMessages::new(bench.api.clone());
    let (records, last) = bench.sync(&poller, None, 3).await;
    assert_eq!(records.len(), 3);

    // WHEN one message is read, one deleted and one arrives
    let (read, new) = {
        let mut inbox = edit(&inbox);
        let read = inbox.put(&message_id(0), true);
        inbox.remove(&message_id(1));
        let new = inbox.put(&message_id(7), false);
        (read, new)
    };
    let (records, next) = bench.sync(&poller, last.as_deref(), 3).await;

    // THEN each comes once, the removal as Graph's @removed item
    assert_eq!(
        versions(&records),
        [
            (message_id(0), read),
            (message_id(1), "removed".to_owned()),
            (message_id(7), new),
        ]
    );
    assert_eq!(
        records[1].body["@removed"],
        json!({"reason": "deleted"}),
        "the body is Graph's item as sent"
    );
    assert!(matches!(cursor(next.as_deref()), Cursor::Delta(_)));

    // WHEN nothing changed THEN one request, nothing polled
    let before = bench.requests().len();
    let (records, again) = bench.sync(&poller, next.as_deref(), 1).await;
    assert!(records.is_empty());
    assert_eq!(again, next);
    assert_eq!(bench.requests().len(), before + 1);
}

#[tokio::test]
async fn an_expired_delta_link_restarts_the_sync_on_410_and_on_sync_state_not_found() {
    for expiry in [Expiry::Gone, Expiry::SyncStateNotFound] {
        let bench = graph_bench().await;
        let inbox = inbox(&bench, 4);
        let poller = MicrosoftMessages::new(bench.api.clone());
        let (_, last) = bench.sync(&poller, None, 3).await;

        // GIVEN Graph dropped the delta state
        {
            let mut inbox = edit(&inbox);
            inbox.put(&message_id(9), false);
            inbox.expired_before = inbox.log.len();
            inbox.expiry = expiry;
        }
        let before = bench.requests().len();
        let page = bench.page(&poller, last.as_deref()).await.expect("page");

        // THEN the same page is a first round again: all five messages
        let requests = bench.requests();
        let paths: Vec<&str> = requests[before..].iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, [LINKED, FIRST], "{expiry:?}");
        assert_eq!(page.records.len(), 5, "{expiry:?}");
        match cursor(page.cursor.as_deref()) {
            Cursor::Delta(link) => assert!(link.ends_with("$deltatoken=5"), "{link}"),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn an_expired_next_link_in_the_middle_of_a_round_restarts_it() {
    let bench = graph_bench().await;
    let inbox = inbox(&bench, 60);
    let poller = MicrosoftMessages::new(bench.api.clone());
    let first = bench.page(&poller, None).await.expect("page");
    assert!(first.more);
    {
        let mut inbox = edit(&inbox);
        inbox.expired_before = inbox.log.len() + 1;
        inbox.expiry = Expiry::SyncStateNotFound;
    }
    let page = bench
        .page(&poller, first.cursor.as_deref())
        .await
        .expect("restarted");
    assert_eq!(page.records.len(), 50, "the first page of a new round");
    assert!(page.more);
}

#[tokio::test]
async fn a_reset_on_the_first_request_itself_is_the_page_s_error() {
    let bench = graph_bench().await;
    bench.harness.server.script_api([ScriptedResponse::with_status(
        400,
        &json!({"error": {"code": "syncStateNotFound", "message": "The sync state generation is not found."}}),
    )]);
    let _inbox = inbox(&bench, 1);
    let poller = MicrosoftMessages::new(bench.api.clone());
    let err = bench.page(&poller, None).await;
    assert_eq!(
        err,
        Err(CallError::Failed(CallFailure {
            class: FailureClass::Permanent,
            code: "syncStateNotFound".into()
        })),
        "no loop of restarts"
    );
}

#[tokio::test]
async fn throttling_waits_for_retry_after_and_a_long_wait_requeues() {
    let bench = graph_bench().await;
    let _inbox = inbox(&bench, 3);
    let poller = MicrosoftMessages::new(bench.api.clone());

    // GIVEN Graph's 429 with Retry-After (learn.microsoft.com/graph/throttling) once
    let mut limited = ScriptedResponse::with_status(
        429,
        &json!({"error": {"code": "TooManyRequests", "message": "Please retry again later."}}),
    );
    limited.headers.push(("Retry-After".into(), "1".into()));
    bench.harness.server.script_api([limited]);
    let (records, _) = bench.sync(&poller, None, 3).await;
    assert_eq!(records.len(), 3, "retried after the wait");

    // GIVEN a wait past the page's deadline THEN the worker is asked to requeue
    let mut long = ScriptedResponse::with_status(
        429,
        &json!({"error": {"code": "activityLimitReached", "message": "The app or user has been throttled."}}),
    );
    long.headers.push(("Retry-After".into(), "600".into()));
    bench.harness.server.script_api([long]);
    let err = bench.page(&poller, None).await;
    assert!(matches!(err, Err(CallError::Requeue { .. })), "{err:?}");
}

#[tokio::test]
async fn a_link_off_the_api_base_is_refused_without_sending_the_token() {
    let bench = graph_bench().await;
    let _inbox = inbox(&bench, 1);
    let poller = MicrosoftMessages::new(bench.api.clone());
    for link in [
        "https://evil.example/v1.0/me/mailfolders('inbox')/messages/delta?$deltatoken=1",
        "https://graph.microsoft.com@evil.example/v1.0/me/messages/delta",
    ] {
        let stored = Cursor::Delta(link.into()).encode().expect("cursor");
        let err = bench.page(&poller, Some(&stored)).await;
        assert!(
            matches!(&err, Err(CallError::Failed(f)) if f.class == FailureClass::Permanent),
            "{err:?}"
        );
    }
    assert!(bench.requests().is_empty());

    // AND a next link off the base in an answer is refused before it is stored
    bench.serve(|_| {
        ScriptedResponse::json(&json!({
            "value": [],
            "@odata.nextLink": "https://evil.example/v1.0/me/mailfolders('inbox')/messages/delta?$skiptoken=x"
        }))
    });
    let err = bench.page(&poller, None).await;
    assert!(matches!(err, Err(CallError::Failed(_))), "{err:?}");
}

#[tokio::test]
async fn a_repeated_next_link_or_an_answer_without_links_is_permanent() {
    let bench = graph_bench().await;
    let base = bench.harness.server.provider_api_base();
    let same = format!("{base}{LINKED}?$skiptoken=same");
    let answer = same.clone();
    bench.serve(move |_| ScriptedResponse::json(&json!({"value": [], "@odata.nextLink": answer})));
    let poller = MicrosoftMessages::new(bench.api.clone());
    let stored = Cursor::Next(same).encode().expect("cursor");
    let err = bench.page(&poller, Some(&stored)).await;
    assert!(matches!(err, Err(CallError::Failed(_))), "{err:?}");

    bench.serve(|_| ScriptedResponse::json(&json!({"value": []})));
    let err = bench.page(&poller, None).await;
    assert!(matches!(err, Err(CallError::Failed(_))), "{err:?}");
}

#[tokio::test]
async fn polled_messages_map_through_the_microsoft_message_adapter() {
    let bench = bench().await;
    let inbox = inbox(&bench, 2);
    let poller = MicrosoftMessages::new(bench.api.clone());
    let (_, last) = bench.sync(&poller, None, 3).await;
    edit(&inbox).remove(&message_id(0));
    edit(&inbox).put(&message_id(1), true);
    let (records, _) = bench.sync(&poller, last.as_deref(), 3).await;
    let items: Vec<Normalized> = records
        .iter()
        .flat_map(|record| normalize_polled("microsoft", poller.resource(), record))
        .collect();
    match items.as_slice() {
        [
            Normalized::ProviderEvent(removed),
            Normalized::MessageGroup(group),
        ] => {
            assert_eq!(removed.meta.id, message_id(0));
            assert_eq!(removed.event_type.as_deref(), Some("message.removed"));
            assert_eq!(group.meta.id, format!("conv-{}", message_id(1)));
            assert_eq!(group.meta.change, ChangeKind::Updated);
            assert!(!group.meta.complete);
        }
        other => panic!("a removal and a conversation, got {other:?}"),
    }
}

#[test]
fn cursors_round_trip_and_foreign_ones_are_refused() {
    let next = Cursor::Next(
        "https://graph.microsoft.com/v1.0/me/mailfolders('inbox')/messages/delta?$skiptoken=a"
            .into(),
    );
    let text = next.encode().expect("encodes");
    assert_eq!(
        text,
        r#"{"next":"https://graph.microsoft.com/v1.0/me/mailfolders('inbox')/messages/delta?$skiptoken=a"}"#
    );
    assert_eq!(Cursor::parse(&text), Ok(next));
    assert!(
        Cursor::parse(r#"{"phase":"history","start":"5"}"#).is_err(),
        "a Gmail cursor"
    );
    assert!(Cursor::parse(r#"{"next":"a","delta":"b"}"#).is_err());
    assert!(Cursor::parse("https://graph.microsoft.com/").is_err());
}

#[test]
fn items_are_versioned_by_modification_etag_or_removal() {
    let message = json!({"id": "m1", "lastModifiedDateTime": "2024-03-01T00:01:00Z", "@odata.etag": "W/\"e\""});
    assert_eq!(
        record(message).expect("record").updated_at,
        "2024-03-01T00:01:00Z"
    );
    let update = json!({"id": "m1", "@odata.etag": "W/\"e2\"", "isRead": true});
    assert_eq!(record(update).expect("record").updated_at, "W/\"e2\"");
    let removed = json!({"id": "m1", "@removed": {"reason": "changed"}});
    assert_eq!(record(removed).expect("record").updated_at, "removed");
    assert!(record(json!({"id": "m1", "isRead": true})).is_err());
    assert!(record(json!({"lastModifiedDateTime": "2024-03-01T00:01:00Z"})).is_err());
}
