//! Actions through a connection, end to end through the local stack: the real HTTP API
//! with its IAM stand-in, the real `connections` and `action-runner` binaries, the
//! emulator's DynamoDB, SQS and EventBridge, and the fake provider's API behind an
//! overlay provider connected through the connect flow.
//!
//! The proxy: a GET answered 503 twice is retried; attacks on the path and headers are
//! refused before anything is sent; a write with an idempotency key sent twice makes one
//! effect at the provider (the repeat answered from the DynamoDB record), the same key
//! with another body is 422; a rejected token is refreshed exactly once. The actions: one
//! that succeeds, one the provider refuses for good, and one answered 503 first and
//! retried by the runner after its backoff, each announced on the bus with the action
//! id, the tenant and the connection, and shown by `GET …/actions/{action}`; and a
//! dead-lettered action brought back by `junction dlq redrive`, run once.

use crate::common;
use common::{
    BusObserver, browser, connect_url, first_cookie, location, session_for, start_with_overlay,
    stop_and_check_processes_are_gone,
};

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use fake_provider::{AuthServerConfig, FakeAuthServer, ScriptedResponse};
use junction_cli::queues::{RedriveMethod, StackQueues, redrive};
use local_stack::{http_api::LOCAL_IAM_HEADER, stack::LocalStack};
use serde_json::{Value, json};

const RETURN_TO: &str = "https://app.example.com/integrations";

/// `fakeauth` with its OAuth section and its API on the fake server.
fn overlay(server: &FakeAuthServer) -> String {
    format!(
        "[[provider]]\nid = \"fakeauth\"\nname = \"Fake authorization server\"\ndocs = \"https://example.com/fake\"\n\n[provider.oauth]\n{}account_id = \"/account_id\"\n\n[provider.api]\nbase_url = \"{}\"\nrate_limit = {{ requests_per_second = 50.0, burst = 20, scope = \"connection\" }}\n",
        server.oauth_catalog_fields(),
        server.provider_api_base()
    )
}

/// Connects tenant `acme`'s account through the browser flow; the connection id.
async fn connect(stack: &LocalStack, prefix: &str, server: &FakeAuthServer) -> String {
    server.set_redirect_uris(vec![format!("{}/oauth/fakeauth/callback", stack.api_url())]);
    aws_sdk_secretsmanager::Client::new(stack.sdk_config())
        .create_secret()
        .name(format!("{prefix}/oauth/fakeauth"))
        .secret_string(
            r#"{"client_id":"junction-test-client","client_secret":"junction-test-secret"}"#,
        )
        .send()
        .await
        .expect("client credentials stored");
    let http = browser();
    let start_url = connect_url(stack, &session_for("fakeauth", "acme", RETURN_TO)).await;
    let start = http.get(&start_url).send().await.expect("start");
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

/// One answer of the management API: status, headers, body.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn post(stack: &LocalStack, route: &str, id: &str, body: &Value) -> Answer {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/v1/tenants/acme/connections/{id}/{route}",
            stack.api_url()
        ))
        .header(LOCAL_IAM_HEADER, stack.local_iam_key())
        .json(body)
        .send()
        .await
        .expect("management API");
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.bytes().await.expect("body").to_vec(),
    }
}

#[tokio::test]
async fn proxy_and_actions_through_a_connection() {
    let server = FakeAuthServer::start(AuthServerConfig::default()).await;
    let (stack, prefix, dir) = start_with_overlay("actions", &overlay(&server)).await;
    let id = connect(&stack, &prefix, &server).await;
    // The provider's API: writes create, `/reject` refuses for good, `/flaky` is down
    // at its first request.
    let flaky = Arc::new(AtomicUsize::new(0));
    let flaky_seen = flaky.clone();
    server.serve_provider_api(move |request| {
        if request.path == "/reject" {
            return ScriptedResponse::with_status(422, &json!({ "error": "invalid" }));
        }
        if request.path == "/flaky" && flaky_seen.fetch_add(1, Ordering::SeqCst) == 0 {
            return ScriptedResponse::with_status(503, &json!({ "error": "down" }));
        }
        let status = if request.method == "POST" { 201 } else { 200 };
        ScriptedResponse::with_status(
            status,
            &json!({ "path": request.path, "query": request.query, "body": request.json() }),
        )
    });
    let calls = || server.provider_requests().len();

    // A GET answered 503 twice: retried, the third answer comes back.
    let busy = ScriptedResponse::with_status(503, &json!({}));
    server.script_api([busy.clone(), busy]);
    let got = post(
        &stack,
        "proxy",
        &id,
        &json!({ "method": "GET", "path": "/items", "query": { "limit": "2" } }),
    )
    .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.header("junction-source"), Some("provider"));
    assert_eq!(got.json()["query"], json!([["limit", "2"]]));
    assert_eq!(calls(), 3, "two 503s, then the answer");

    // Attacks, refused before anything is sent.
    for (request, code) in [
        (
            json!({ "method": "GET", "path": "/a/../../admin" }),
            "invalid_path",
        ),
        (
            json!({ "method": "GET", "path": "/a/%2e%2e/admin" }),
            "invalid_path",
        ),
        (
            json!({ "method": "GET", "path": "//evil.example/x" }),
            "invalid_path",
        ),
        (
            json!({ "method": "GET", "path": "/@evil.example" }),
            "invalid_path",
        ),
        (
            json!({ "method": "GET", "path": "/me", "headers": { "Authorization": "Bearer stolen" } }),
            "header_not_allowed",
        ),
        (
            json!({ "method": "GET", "path": "/me", "headers": { "Accept": "a\r\nHost: evil" } }),
            "header_not_allowed",
        ),
    ] {
        let refused = post(&stack, "proxy", &id, &request).await;
        assert_eq!(refused.status, 400, "{request}");
        assert_eq!(refused.json()["error"], code, "{request}");
        assert_eq!(refused.header("junction-source"), Some("junction"));
    }
    assert_eq!(calls(), 3, "nothing sent");

    // A keyed write twice: one effect; another body under the key: 422.
    let write = json!({
        "method": "POST",
        "path": "/tasks",
        "body": { "title": "Ship" },
        "idempotency_key": "order-42",
    });
    let first = post(&stack, "proxy", &id, &write).await;
    assert_eq!(first.status, 201);
    let repeat = post(&stack, "proxy", &id, &write).await;
    assert_eq!(repeat.status, 201);
    assert_eq!(repeat.body, first.body);
    assert_eq!(repeat.header("junction-idempotent-replay"), Some("true"));
    let posts = || {
        server
            .provider_requests()
            .iter()
            .filter(|r| r.method == "POST")
            .count()
    };
    assert_eq!(posts(), 1, "one effect at the provider");
    let mut other = write.clone();
    other["body"]["title"] = json!("Other");
    let reused = post(&stack, "proxy", &id, &other).await;
    assert_eq!(reused.status, 422);
    assert_eq!(reused.json()["error"], "idempotency_key_reused");
    assert_eq!(posts(), 1);

    // A token the provider stopped taking: refreshed exactly once.
    let refreshes = server.counters().refreshes;
    server.expire_access_tokens_now();
    let again = post(
        &stack,
        "proxy",
        &id,
        &json!({ "method": "GET", "path": "/me" }),
    )
    .await;
    assert_eq!(again.status, 200);
    assert_eq!(server.counters().refreshes, refreshes + 1, "one refresh");

    // Actions: queued, run by the action runner, announced on the bus.
    let observer = BusObserver::subscribe(&stack).await;
    let mut queued = Vec::new();
    for request in [
        json!({ "method": "POST", "path": "/tasks", "body": { "title": "Queued" } }),
        json!({ "method": "POST", "path": "/reject", "body": { "title": "" } }),
        // A write without a native key is sent once per receive: the 503 is retried
        // by the runner, on the next receive after its backoff.
        json!({ "method": "POST", "path": "/flaky", "body": { "n": 1 } }),
    ] {
        let accepted = post(&stack, "actions", &id, &request).await;
        assert_eq!(
            accepted.status,
            202,
            "{}",
            String::from_utf8_lossy(&accepted.body)
        );
        queued.push(
            accepted.json()["action_id"]
                .as_str()
                .expect("an action id")
                .to_owned(),
        );
    }
    let mut events = Vec::new();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(90)
        && events
            .iter()
            .filter(|e: &&junction_aws::events::CloudEvent| e.event_type.starts_with("action."))
            .count()
            < 3
    {
        observer.drain(&mut events).await;
    }
    let all = (events.len() >= 3).then_some(());
    assert!(all.is_some(), "three action events: {events:?}");
    let outcome = |action: &str| {
        events
            .iter()
            .find(|e| e.data["action_id"] == action)
            .unwrap_or_else(|| panic!("an event for {action}: {events:?}"))
    };
    let created = outcome(&queued[0]);
    assert_eq!(created.event_type, "action.succeeded");
    assert_eq!(created.tenant.as_deref(), Some("acme"));
    assert_eq!(created.connection.as_deref(), Some(id.as_str()));
    assert_eq!(created.data["response"]["status"], 201);
    let rejected = outcome(&queued[1]);
    assert_eq!(rejected.event_type, "action.failed");
    assert_eq!(rejected.data["reason"], "http_422");
    let retried = outcome(&queued[2]);
    assert_eq!(retried.event_type, "action.succeeded");
    assert_eq!(retried.data["attempts"], 2, "after one 503 and its backoff");
    assert_eq!(flaky.load(Ordering::SeqCst), 2);

    // Where each action stands, through the management API.
    for (action, state, attempts) in [
        (&queued[0], "succeeded", 1),
        (&queued[1], "failed", 1),
        (&queued[2], "succeeded", 2),
    ] {
        let shown = reqwest::Client::new()
            .get(format!(
                "{}/v1/tenants/acme/connections/{id}/actions/{action}",
                stack.api_url()
            ))
            .header(LOCAL_IAM_HEADER, stack.local_iam_key())
            .send()
            .await
            .expect("action status");
        assert_eq!(shown.status(), 200);
        let shown: Value = shown.json().await.expect("JSON");
        assert_eq!(shown["state"], state, "{shown}");
        assert_eq!(shown["attempts"], attempts, "{shown}");
    }

    // An action in the DLQ (its runner could not announce it ten times: the bus down),
    // brought back with `junction dlq redrive`: it runs and is announced; a write that
    // already reached the provider is answered from its record, not sent again.
    let sqs = stack.sqs().clone();
    let stack_name = stack.description().stack_name.clone();
    stack
        .set_mapping_enabled("ActionRunnerFunction", "ActionsQueue", false)
        .await
        .expect("mapping paused");
    let keyed = json!({
        "method": "POST",
        "path": "/tasks",
        "body": { "title": "Redriven" },
        "idempotency_key": "task-redriven",
    });
    let accepted = post(&stack, "actions", &id, &keyed).await;
    assert_eq!(accepted.status, 202);
    let redriven_id = accepted.json()["action_id"]
        .as_str()
        .expect("an action id")
        .to_owned();
    let queues = StackQueues::discover(&sqs, &stack_name)
        .await
        .expect("queues");
    let source = queues
        .queues
        .iter()
        .find(|q| q.name == format!("{stack_name}-actions"))
        .expect("the actions queue")
        .url
        .clone();
    let dlq = queues
        .dead_letter_queue(Some("actions-dlq"))
        .expect("the actions DLQ");
    let message = sqs
        .receive_message()
        .queue_url(&source)
        .wait_time_seconds(5)
        .send()
        .await
        .expect("received")
        .messages
        .unwrap_or_default()
        .pop()
        .expect("the queued action");
    sqs.send_message()
        .queue_url(&dlq.url)
        .message_body(message.body.clone().expect("a body"))
        .send()
        .await
        .expect("dead-lettered");
    sqs.delete_message()
        .queue_url(&source)
        .receipt_handle(message.receipt_handle.clone().expect("a receipt"))
        .send()
        .await
        .expect("deleted");
    let posts_before = posts();
    // The same write queued again under its key is the same action: it runs once.
    let again = post(&stack, "actions", &id, &keyed).await;
    assert_eq!(again.json()["action_id"], redriven_id.as_str());
    stack
        .set_mapping_enabled("ActionRunnerFunction", "ActionsQueue", true)
        .await
        .expect("mapping resumed");
    let report = redrive(&sqs, &queues, dlq, None, RedriveMethod::Copy)
        .await
        .expect("redriven");
    assert_eq!(report.moved, 1);
    let mut later = Vec::new();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(60)
        && later
            .iter()
            .filter(|e: &&junction_aws::events::CloudEvent| {
                e.data["action_id"] == redriven_id.as_str()
            })
            .count()
            < 2
    {
        observer.drain(&mut later).await;
    }
    let announced: Vec<_> = later
        .iter()
        .filter(|e| e.data["action_id"] == redriven_id.as_str())
        .collect();
    assert_eq!(
        announced.len(),
        2,
        "the queued copy and the redriven one: {later:?}"
    );
    assert!(announced.iter().all(|e| e.event_type == "action.succeeded"));
    assert_eq!(announced[0].id, announced[1].id, "one event, deduplicable");
    assert_eq!(posts(), posts_before + 1, "one effect at the provider");

    stop_and_check_processes_are_gone(stack).await;
    let _ = std::fs::remove_dir_all(dir);
}
