//! Actions against a provider on loopback: accepted and queued by the route, run by the
//! runner through the proxy, retried across receives with backoff or the provider's
//! wait, and announced on the (in-memory) bus.

use std::{sync::Arc, time::Duration};

use fake_provider::{AuthServerConfig, ScriptedResponse};
use rand::{SeedableRng, rngs::StdRng};

use super::*;
use crate::idempotency::InMemoryProxyIdempotencyStore;
use crate::{InMemorySharedState, RetryPolicy};
use junction_aws::clock::SystemClock;
use junction_aws::events::InMemoryEventBus;
use junction_aws::queue::{InMemoryEventQueue, InMemoryRetryScheduler};
use junction_aws::retry::Backoff;
use junction_oauth::testing::{Harness, harness_with};

const API: &str = r#"
[api]
base_url = "{provider_api}"
rate_limit = { requests_per_second = 100.0, burst = 20, scope = "connection" }
"#;

/// A client with fresh shared state (buckets, breakers) and quick retries.
fn client(harness: &Harness) -> OutboundClient {
    OutboundClient::new(
        harness.vault.catalog(),
        harness.vault.clone(),
        Arc::new(InMemorySharedState::default()),
        Arc::new(SystemClock),
    )
    .with_policy(RetryPolicy {
        backoff: Backoff {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(40),
        },
        max_attempts: 2,
    })
    .with_call_timeout(Duration::from_millis(500))
}

struct Setup {
    harness: Harness,
    runner: ActionRunner,
    queue: InMemoryEventQueue,
    bus: Arc<InMemoryEventBus>,
    retries: Arc<InMemoryRetryScheduler>,
    statuses: Arc<InMemoryActionStatusStore>,
    connection: String,
}

async fn setup() -> Setup {
    let harness = harness_with(AuthServerConfig::default(), API).await;
    harness
        .server
        .serve_provider_api(|request| ScriptedResponse {
            status: if request.method == "POST" { 201 } else { 200 },
            headers: vec![("content-type".into(), "application/json".into())],
            body: json!({ "id": "obj_1", "path": request.path }).to_string(),
            ..ScriptedResponse::default()
        });
    let connection = harness.connect().await;
    let client = client(&harness);
    let bus = Arc::new(InMemoryEventBus::default());
    let retries = Arc::new(InMemoryRetryScheduler::default());
    let statuses = Arc::new(InMemoryActionStatusStore::default());
    let runner = ActionRunner {
        client,
        vault: harness.vault.clone(),
        store: Arc::new(InMemoryProxyIdempotencyStore::default()),
        clock: harness.clock.clone(),
        bus: bus.clone(),
        retries: retries.clone(),
        statuses: statuses.clone(),
    };
    Setup {
        harness,
        runner,
        queue: InMemoryEventQueue::default(),
        bus,
        retries,
        statuses,
        connection,
    }
}

impl Setup {
    async fn accept_as(&self, tenant: &str, request: serde_json::Value) -> HttpReply {
        actions_route(
            ActionPorts {
                vault: &self.harness.vault,
                queue: &self.queue,
                statuses: self.statuses.as_ref(),
                clock: self.harness.clock.as_ref(),
            },
            tenant,
            "POST",
            &self.connection,
            request.to_string().as_bytes(),
        )
        .await
    }

    /// Accepts `request`; the queued message's body.
    async fn accept(&self, request: serde_json::Value) -> String {
        let reply = self.accept_as("tenant-1", request).await;
        assert_eq!(reply.status, 202, "{}", reply.body);
        self.queue
            .messages()
            .last()
            .expect("a queued action")
            .body
            .clone()
    }

    async fn run(&self, body: &str, receive: u32) -> Result<Finished, ActionError> {
        self.runner
            .handle(
                body,
                receive,
                &format!("receipt-{receive}"),
                // Short: a provider's wait of seconds goes back to the queue.
                Instant::now() + Duration::from_secs(5),
            )
            .await
    }

    /// `GET …/actions/{action}` as `tenant` on this connection.
    async fn status_as(&self, tenant: &str, action: &str) -> HttpReply {
        action_status_route(
            self.statuses.as_ref(),
            tenant,
            "GET",
            &self.connection,
            action,
        )
        .await
    }

    async fn state(&self, action: &str) -> serde_json::Value {
        let reply = self.status_as("tenant-1", action).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        serde_json::from_str(&reply.body).expect("JSON")
    }

    fn provider_calls(&self) -> usize {
        self.harness.server.provider_requests().len()
    }
}

fn scripted(status: u16, headers: &[(&str, &str)]) -> ScriptedResponse {
    ScriptedResponse {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
        body: r#"{"error":"busy"}"#.into(),
        ..ScriptedResponse::default()
    }
}

#[tokio::test]
async fn an_action_is_queued_run_once_and_announced_with_its_tenant_and_connection() {
    let setup = setup().await;
    let reply = setup
        .accept_as(
            "tenant-1",
            json!({"method": "POST", "path": "/tasks", "body": {"title": "Ship"}}),
        )
        .await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let answer: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON");
    let action_id = answer["action_id"].as_str().expect("an id").to_owned();
    assert!(action_id.starts_with("act_") && action_id.len() == 36);
    assert_eq!(answer["status"], "queued");
    let message = setup.queue.messages().pop().expect("queued");
    let action: Action = serde_json::from_str(&message.body).expect("an action");
    assert_eq!(action.id, action_id);
    assert_eq!(
        action.request.idempotency_key.as_deref(),
        Some(action_id.as_str()),
        "its own id is its idempotency key"
    );

    let queued = setup.state(&action_id).await;
    assert_eq!(
        (queued["state"].as_str(), queued["attempts"].as_u64()),
        (Some("queued"), Some(0))
    );
    assert_eq!(
        setup.run(&message.body, 1).await.expect("ran"),
        Finished::Succeeded { status: 201 }
    );
    let done = setup.state(&action_id).await;
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["status"], 201);
    assert_eq!(done["attempts"], 1);
    // Another tenant, another connection, or no such action: 404 alike.
    assert_eq!(setup.status_as("tenant-2", &action_id).await.status, 404);
    assert_eq!(
        action_status_route(
            setup.statuses.as_ref(),
            "tenant-1",
            "GET",
            "conn_other",
            &action_id
        )
        .await
        .status,
        404
    );
    assert_eq!(setup.status_as("tenant-1", "act_missing").await.status, 404);
    // Received again (the runner died before deleting it): no second effect.
    assert_eq!(
        setup.run(&message.body, 2).await.expect("ran"),
        Finished::Succeeded { status: 201 }
    );
    assert_eq!(setup.provider_calls(), 1, "one effect at the provider");
    let events = setup.bus.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].id, events[1].id, "the same event, deduplicable");
    let event = &events[0];
    assert_eq!(event.event_type, "action.succeeded");
    assert_eq!(event.source, "junction/fakeauth");
    assert_eq!(event.tenant.as_deref(), Some("tenant-1"));
    assert_eq!(event.connection.as_deref(), Some(setup.connection.as_str()));
    assert_eq!(event.data["action_id"], action_id.as_str());
    assert_eq!(event.data["response"]["status"], 201);
    assert_eq!(event.data["response"]["body"]["id"], "obj_1");
}

#[tokio::test]
async fn a_transient_failure_is_retried_later_with_backoff_or_the_providers_wait() {
    let mut setup = setup().await;
    let body = setup
        .accept(json!({"method": "GET", "path": "/report"}))
        .await;
    // Two 503s (both of this receive's attempts): back on the queue with a backoff.
    setup
        .harness
        .server
        .script_api(vec![scripted(503, &[]), scripted(503, &[])]);
    assert!(matches!(
        setup.run(&body, 1).await,
        Err(ActionError::Retry { .. })
    ));
    let id = serde_json::from_str::<Action>(&body).expect("action").id;
    let retrying = setup.state(&id).await;
    assert_eq!(retrying["state"], "retrying");
    assert_eq!(retrying["reason"], "http_503");
    // A 429 asking for 7 seconds, longer than this receive has left: that wait.
    setup
        .harness
        .server
        .script_api(vec![scripted(429, &[("retry-after", "7")])]);
    assert!(matches!(
        setup.run(&body, 2).await,
        Err(ActionError::Retry { .. })
    ));
    let scheduled = setup.retries.scheduled();
    assert_eq!(scheduled.len(), 2);
    assert_eq!(scheduled[0].0, "receipt-1");
    assert!(
        (Duration::from_secs(1)..=BASE_BACKOFF).contains(&scheduled[0].1),
        "{scheduled:?}"
    );
    assert_eq!(scheduled[1], ("receipt-2".into(), Duration::from_secs(7)));
    assert!(setup.bus.events().is_empty(), "nothing announced yet");
    // The third receive, once the wait is over (here: another instance's bucket),
    // succeeds.
    setup.runner.client = client(&setup.harness);
    assert_eq!(
        setup.run(&body, 3).await.expect("ran"),
        Finished::Succeeded { status: 200 }
    );
    assert_eq!(setup.bus.events()[0].data["attempts"], 3);
}

#[tokio::test]
async fn a_permanent_failure_or_spent_retries_fail_the_action() {
    let setup = setup().await;
    let body = setup
        .accept(json!({"method": "POST", "path": "/tasks", "body": {"title": ""}}))
        .await;
    setup.harness.server.script_api(vec![ScriptedResponse {
        status: 422,
        headers: vec![("content-type".into(), "application/json".into())],
        body: r#"{"error":"title is required"}"#.into(),
        ..ScriptedResponse::default()
    }]);
    assert_eq!(
        setup.run(&body, 1).await.expect("done"),
        Finished::Failed {
            reason: "http_422".into()
        }
    );
    let event = &setup.bus.events()[0];
    assert_eq!(event.event_type, "action.failed");
    assert_eq!(event.data["reason"], "http_422");
    assert_eq!(event.data["response"]["status"], 422);
    let failed = setup
        .state(event.data["action_id"].as_str().expect("id"))
        .await;
    assert_eq!(
        (failed["state"].as_str(), failed["status"].as_u64()),
        (Some("failed"), Some(422))
    );
    assert_eq!(event.data["response"]["body"]["error"], "title is required");

    let body = setup
        .accept(json!({"method": "GET", "path": "/report"}))
        .await;
    setup
        .harness
        .server
        .script_api(vec![scripted(503, &[]), scripted(503, &[])]);
    let last = setup.run(&body, MAX_ACTION_ATTEMPTS).await.expect("done");
    assert_eq!(
        last,
        Finished::Failed {
            reason: "retries_exhausted: http_503".into()
        }
    );
    assert!(setup.retries.scheduled().is_empty(), "not retried again");
}

#[tokio::test]
async fn the_route_refuses_what_the_proxy_would_and_hides_other_tenants() {
    let setup = setup().await;
    let bad = setup
        .accept_as("tenant-1", json!({"method": "GET", "path": "/../admin"}))
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.body.contains("invalid_path"));
    let other = setup
        .accept_as("tenant-2", json!({"method": "GET", "path": "/me"}))
        .await;
    assert_eq!(other.status, 404);
    setup.queue.set_failing(true);
    let down = setup
        .accept_as("tenant-1", json!({"method": "GET", "path": "/me"}))
        .await;
    assert_eq!(down.status, 503);
    assert!(setup.queue.messages().is_empty(), "nothing queued");
    assert_eq!(
        setup
            .run("not an action", 1)
            .await
            .map_err(|e| e.to_string()),
        Err("not an action: expected ident at line 1 column 2".into())
    );
}

#[tokio::test]
async fn an_action_queued_twice_under_one_key_is_one_action_and_one_effect() {
    let setup = setup().await;
    let request = json!({"method": "POST", "path": "/tasks", "body": {"title": "Once"}, "idempotency_key": "task-7"});
    let first = setup.accept(request.clone()).await;
    let second = setup.accept(request).await;
    let id = |body: &str| serde_json::from_str::<Action>(body).expect("an action").id;
    assert_eq!(id(&first), id(&second), "the same action");
    assert_eq!(id(&first), keyed_action_id(&setup.connection, "task-7"));
    setup.run(&first, 1).await.expect("ran");
    setup.run(&second, 1).await.expect("ran");
    assert_eq!(setup.provider_calls(), 1, "one effect");
    let events = setup.bus.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].id, events[1].id, "one event, announced twice");
}

#[tokio::test]
async fn an_action_that_cannot_finish_in_the_invocation_goes_back_at_once() {
    let setup = setup().await;
    let body = setup
        .accept(json!({"method": "GET", "path": "/report"}))
        .await;
    let late = setup
        .runner
        .handle(
            &body,
            1,
            "receipt-late",
            Instant::now() + Duration::from_millis(100),
        )
        .await;
    assert!(matches!(late, Err(ActionError::Retry { .. })), "{late:?}");
    assert_eq!(
        setup.retries.scheduled(),
        [("receipt-late".to_owned(), Duration::ZERO)]
    );
    assert_eq!(setup.provider_calls(), 0, "nothing started");
}

#[test]
fn the_backoff_grows_with_full_jitter_up_to_its_cap() {
    let mut rng = StdRng::seed_from_u64(7);
    for attempt in 1..=12 {
        let ceiling = (BASE_BACKOFF * 2u32.pow(attempt - 1)).min(MAX_BACKOFF);
        for _ in 0..50 {
            let wait = backoff(attempt, &mut rng);
            assert!(
                wait >= Duration::from_secs(1) && wait <= ceiling,
                "{attempt}: {wait:?}"
            );
        }
    }
    assert!(
        MAX_BACKOFF.as_secs() <= 43_200,
        "within SQS's visibility limit"
    );
}
