//! Polling end to end through the local stack: a user connects an account (the provider
//! is Linear's catalog entry pointed at a fake provider on loopback by an overlay, as an
//! operator would point it at a sandbox); the callback creates its sync job; the
//! poll-scheduler (fired by hand, as its schedule would) hands it to the poll queue; the
//! poll-worker pages through the provider's GraphQL API into the ingest queue; the
//! consumer publishes one CloudEvent per issue. Then a webhook delivers a change, the
//! reconciliation poll fetches it again and publishes nothing twice, while a change the
//! webhook missed is caught. A disconnect removes the job.

use crate::common;
use common::{
    BusObserver, RETURN_TO_ORIGIN, browser, connect_url, eventually, first_cookie, location,
    session_for, start_with_overlay, watch_signature,
};

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use fake_provider::{ApiRequest, AuthServerConfig, FakeAuthServer, ScriptedResponse};
use junction_aws::events::CloudEvent;
use junction_catalog::Catalog;
use junction_cli::{
    connections::{connection_statuses, connection_table},
    polls::force_poll,
    samples::Sample,
    webhook::{post, sign_webhook, signing_key, webhook_url},
};
use junction_polling::{DynamoSyncJobStore, SyncJobStore};
use local_stack::{http_api::LOCAL_IAM_HEADER, stack::LocalStack};
use serde_json::{Value, json};
use time::OffsetDateTime;

/// Issues per page the fake answers (fewer than asked for, as a server may).
const PAGE: usize = 4;

/// The fake Linear: issues by `updatedAt`, served to `issues(filter: {updatedAt: {gte}})`
/// queries, `PAGE` at a time with `pageInfo`.
#[derive(Default)]
struct Issues(Mutex<Vec<Value>>);

impl Issues {
    fn answer(&self, request: &ApiRequest) -> ScriptedResponse {
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", "/graphql")
        );
        let body = request.json();
        let variables = &body["variables"];
        let since = variables
            .as_object()
            .into_iter()
            .flatten()
            .find(|(name, _)| name.as_str() != "after" && name.as_str() != "first")
            .and_then(|(_, value)| value.as_str())
            .unwrap_or("")
            .to_owned();
        let offset: usize = variables["after"]
            .as_str()
            .and_then(|after| after.strip_prefix("offset-"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let mut matching: Vec<Value> = self
            .0
            .lock()
            .expect("issues")
            .iter()
            .filter(|issue| issue["updatedAt"].as_str().unwrap_or("") >= since.as_str())
            .cloned()
            .collect();
        matching.sort_by(|a, b| a["updatedAt"].as_str().cmp(&b["updatedAt"].as_str()));
        let page: Vec<Value> = matching.iter().skip(offset).take(PAGE).cloned().collect();
        let next = offset + page.len();
        ScriptedResponse::json(&json!({
            "data": { "issues": {
                "nodes": page,
                "pageInfo": {
                    "hasNextPage": next < matching.len(),
                    "endCursor": format!("offset-{next}"),
                },
            }},
        }))
    }
}

fn issue(number: usize, updated_at: &str) -> Value {
    json!({
        "id": format!("00000000-0000-4000-a000-{number:012}"),
        "identifier": format!("ENG-{number}"),
        "title": format!("Issue {number}"),
        "description": null,
        "priority": 2,
        "priorityLabel": "High",
        "url": format!("https://linear.app/acme/issue/ENG-{number}"),
        "createdAt": "2026-11-01T09:00:00.000Z",
        "updatedAt": updated_at,
        "completedAt": null,
        "canceledAt": null,
        "archivedAt": null,
        "trashed": null,
        "dueDate": null,
        "state": { "name": "In Progress", "type": "started" },
        "assignee": { "id": "user-1", "name": "Ada" },
    })
}

/// Linear's built-in entry with its OAuth and API pointed at `server`, polled every
/// minute.
fn overlay(server: &FakeAuthServer) -> String {
    let builtin = Catalog::embedded().expect("catalog");
    let mut entry: toml::Table = toml::from_str(include_str!(
        "../../../../shared/catalog/providers/linear.toml"
    ))
    .expect("linear.toml");
    let oauth: toml::Table = toml::from_str(&server.oauth_catalog_fields()).expect("oauth");
    entry.insert("oauth".into(), toml::Value::Table(oauth));
    let api = entry
        .get_mut("api")
        .and_then(toml::Value::as_table_mut)
        .expect("[api]");
    api.insert(
        "base_url".into(),
        toml::Value::String(server.provider_api_base()),
    );
    api.insert(
        "rate_limit".into(),
        toml::Value::Table(
            toml::from_str("requests_per_second = 20.0\nburst = 10\nscope = \"connection\"")
                .expect("rate"),
        ),
    );
    let polling: toml::Table = toml::from_str(
        "models = [{ name = \"issues\", poller = \"linear-issues\", interval_seconds = 60 }]",
    )
    .expect("polling");
    entry.insert("polling".into(), toml::Value::Table(polling));
    assert!(builtin.get("linear").is_some());
    let overlay: toml::Table = [(
        "provider".to_owned(),
        toml::Value::Array(vec![toml::Value::Table(entry)]),
    )]
    .into_iter()
    .collect();
    toml::to_string(&overlay).expect("overlay")
}

async fn connect(stack: &LocalStack, server: &FakeAuthServer, prefix: &str) -> String {
    let api = stack.api_url().to_owned();
    server.set_redirect_uris(vec![format!("{api}/oauth/linear/callback")]);
    aws_sdk_secretsmanager::Client::new(stack.sdk_config())
        .create_secret()
        .name(format!("{prefix}/oauth/linear"))
        .secret_string(
            r#"{"client_id":"junction-test-client","client_secret":"junction-test-secret"}"#,
        )
        .send()
        .await
        .expect("client credentials stored");
    let http = browser();
    let start_url = connect_url(
        stack,
        &session_for("linear", "acme", &format!("{RETURN_TO_ORIGIN}/connected")),
    )
    .await;
    let start = http.get(start_url).send().await.expect("start");
    assert_eq!(start.status(), 302);
    let cookie = first_cookie(&start);
    let authorize = http.get(location(&start)).send().await.expect("authorize");
    let callback = http
        .get(location(&authorize))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("callback");
    assert_eq!(callback.status(), 302, "connected");
    url::Url::parse(&location(&callback))
        .expect("return_to")
        .query_pairs()
        .find(|(k, _)| k == "connection_id")
        .map(|(_, v)| v.into_owned())
        .expect("connection id")
}

/// Fires the poll scheduler's schedule once.
async fn tick(stack: &LocalStack) {
    let (name, _) = stack
        .schedules()
        .iter()
        .find(|(_, target)| target.function.logical_id() == "PollSchedulerFunction")
        .expect("the poll scheduler's schedule");
    let report = stack.fire_schedule(name).await.expect("scheduler ran");
    let report: Value = serde_json::from_slice(&report).expect("report");
    assert_eq!(report["failed"], 0, "{report}");
}

/// Drains the bus observer until `count` events arrived (or the limit), then once more
/// after a pause so a late duplicate would show.
async fn events(observer: &BusObserver, count: usize, limit: Duration) -> Vec<CloudEvent> {
    let mut seen = Vec::new();
    let started = std::time::Instant::now();
    while seen.len() < count && started.elapsed() < limit {
        observer.drain(&mut seen).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    observer.drain(&mut seen).await;
    seen
}

fn keys(events: &[CloudEvent]) -> Vec<String> {
    let mut keys: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e.event_type,
                e.data["key"].as_str().unwrap_or_default()
            )
        })
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn a_connected_account_is_polled_into_events_and_reconciliation_repeats_nothing() {
    let server = FakeAuthServer::start(AuthServerConfig::default()).await;
    let issues = Arc::new(Issues::default());
    *issues.0.lock().expect("issues") = (1..=18)
        .map(|n| issue(n, &format!("2026-11-20T10:00:{n:02}.000Z")))
        .collect();
    let serving = issues.clone();
    server.serve_provider_api(move |request| serving.answer(request));
    let (stack, prefix, dir) = start_with_overlay("polling", &overlay(&server)).await;
    let observer = BusObserver::subscribe(&stack).await;

    // Connecting creates the job, due at once.
    let connection = connect(&stack, &server, &prefix).await;
    let table = stack.description().resources["SyncJobsTable"].clone();
    let jobs = DynamoSyncJobStore::from_config(stack.sdk_config(), table);
    let key = format!("{connection}#issues");
    let job = jobs.get(&key).await.expect("jobs").expect("the sync job");
    assert_eq!(
        (job.provider.as_str(), job.cursor.as_ref()),
        ("linear", None)
    );

    // The initial sync: 18 issues in 5 pages, each published once.
    tick(&stack).await;
    let first = events(&observer, 18, Duration::from_secs(120)).await;
    assert_eq!(first.len(), 18, "{:?}", keys(&first));
    assert!(first.iter().all(|e| e.event_type.starts_with("work_item.")));
    let mut ids: Vec<&str> = first.iter().map(|e| e.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 18, "no duplicates");
    let synced = eventually(Duration::from_secs(30), || async {
        jobs.get(&key)
            .await
            .ok()
            .flatten()
            .filter(|job| job.last_success_at.is_some() && job.lease.is_none())
    })
    .await
    .expect("the job finished");
    assert_eq!(synced.records_sent, 18);
    assert!(synced.cursor.is_some());
    let pages = server.provider_requests().len();
    assert_eq!(pages, 5, "one request per page, no retries");

    // The operator's view: `junction status` lists the connection, synced just now.
    let statuses = connection_statuses(stack.sdk_config(), &stack.description().stack_name)
        .await
        .expect("connections read");
    let listed = statuses
        .iter()
        .find(|c| c.id == connection)
        .expect("the connection is listed");
    assert!(listed.last_successful_sync.is_some());
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let table = connection_table(&statuses, now);
    let line = table
        .lines()
        .find(|line| line.starts_with(&connection))
        .expect("a line for the connection");
    assert!(
        line.contains("linear") && line.contains(" ago") && line.contains("active"),
        "{table}"
    );

    // A webhook delivers a change to issue 3; the poll repeats it; issue 7 changed and
    // its webhook never arrived.
    let changed = issue(3, "2026-11-21T08:00:00.000Z");
    let missed = issue(7, "2026-11-21T08:00:05.000Z");
    {
        let mut all = issues.0.lock().expect("issues");
        all[2] = changed.clone();
        all[6] = missed;
    }
    let now = OffsetDateTime::now_utc();
    let spec = Catalog::embedded()
        .expect("catalog")
        .with_endpoint_rules(junction_catalog::EndpointRules::LoopbackHttpForTests)
        .with_overlay("test", &overlay(&server))
        .expect("overlay")
        .get("linear")
        .cloned()
        .expect("linear");
    let key_material = signing_key(
        &aws_sdk_secretsmanager::Client::new(stack.sdk_config()),
        &prefix,
        &spec,
        None,
    )
    .await
    .expect("the development webhook secret");
    let body = json!({
        "action": "update", "type": "Issue", "data": changed,
        "createdAt": "2026-11-21T08:00:00.000Z", "organizationId": "org-1",
        "webhookTimestamp": now.unix_timestamp() * 1000, "webhookId": "hook-1",
        "url": "https://linear.app/acme/issue/ENG-3",
    });
    let sample = Sample {
        content_type: "application/json".into(),
        headers: vec![
            ("Linear-Delivery".into(), "delivery-eng-3".into()),
            ("Linear-Event".into(), "Issue".into()),
        ],
        body: body.to_string().into_bytes(),
    };
    let signed = sign_webhook(
        &spec,
        &key_material,
        &webhook_url(stack.api_url(), "linear", None),
        &sample,
        now,
    )
    .expect("signed");
    watch_signature(&spec, &signed);
    let answer = post(&reqwest::Client::new(), &signed)
        .await
        .expect("posted");
    assert!(answer.status < 300, "{}: {}", answer.status, answer.body);
    let pushed = events(&observer, 1, Duration::from_secs(60)).await;
    assert_eq!(keys(&pushed), ["work_item.updated ENG-3"]);

    // The reconciliation run, forced the way the runbook does (`junction poll`).
    let stack_name = stack.description().stack_name.clone();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let forced = force_poll(
        stack.sdk_config(),
        &stack_name,
        &connection,
        None,
        false,
        now,
    )
    .await
    .expect("forced");
    assert_eq!(
        forced
            .iter()
            .map(|f| (f.job.as_str(), f.result))
            .collect::<Vec<_>>(),
        [(key.as_str(), "due now")]
    );
    tick(&stack).await;
    let reconciled = events(&observer, 1, Duration::from_secs(60)).await;
    assert_eq!(
        keys(&reconciled),
        ["work_item.snapshot ENG-7"],
        "only the missed change is published (as polled state, docs/models.md); the \
         webhook's is not repeated"
    );

    // Replaying everything (`junction poll --full`): every issue is fetched again, and
    // nothing already current is published again.
    let requests_before = server.provider_requests().len();
    let forced = force_poll(
        stack.sdk_config(),
        &stack_name,
        &connection,
        None,
        true,
        now,
    )
    .await
    .expect("forced");
    assert_eq!(forced[0].result, "due now, from scratch");
    tick(&stack).await;
    let replayed = eventually(Duration::from_secs(60), || async {
        jobs.get(&key)
            .await
            .ok()
            .flatten()
            .filter(|job| job.lease.is_none() && job.records_sent >= 18 + 2 + 18)
    })
    .await
    .expect("the full resync ran");
    assert_eq!(replayed.records_sent, 18 + 2 + 18);
    assert_eq!(server.provider_requests().len() - requests_before, 5);
    let ingest = stack.description().queues["IngestQueue"].url.clone();
    let drained = eventually(Duration::from_secs(60), || async {
        (common::queue_depth(stack.sqs(), &ingest).await == (0, 0)).then_some(())
    })
    .await;
    assert!(drained.is_some(), "the consumer took every replayed record");
    let repeated = events(&observer, 0, Duration::from_secs(1)).await;
    assert!(repeated.is_empty(), "{:?}", keys(&repeated));

    // Disconnecting: the next run removes the job.
    let deleted = reqwest::Client::new()
        .delete(format!(
            "{}/v1/tenants/acme/connections/{connection}",
            stack.api_url()
        ))
        .header(LOCAL_IAM_HEADER, stack.local_iam_key())
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 200);
    let mut due = jobs.get(&key).await.expect("jobs").expect("job");
    let version = due.version;
    due.due_at = 0;
    due.version += 1;
    assert!(jobs.replace(&due, version).await.expect("made due"));
    tick(&stack).await;
    let removed = eventually(Duration::from_secs(30), || async {
        matches!(jobs.get(&key).await, Ok(None)).then_some(())
    })
    .await;
    assert!(
        removed.is_some(),
        "the job of a deleted connection is removed"
    );

    common::stop_and_check_processes_are_gone(stack).await;
    let _ = std::fs::remove_dir_all(dir);
}
