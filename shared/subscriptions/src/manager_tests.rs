//! The manager against fake Gmail and Graph subscription endpoints on loopback: the
//! fake provider's OAuth server (its API answers only live access tokens) serving
//! `users.watch`/`users.stop` and `/subscriptions` as their docs describe them, with
//! the real `[subscription]` sections of gmail.toml and microsoft.toml under a test
//! provider. Stores, bus and key service are in memory; the clock is fixed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_provider::{ApiRequest, AuthServerConfig, ScriptedResponse};
use serde_json::{Value, json};

use crate::*;
use junction_aws::clock::Clock;
use junction_aws::retry::Backoff;
use junction_aws::secrets::InMemorySecretSource;
use junction_oauth::ConnectionSetup;
use junction_oauth::testing::{BASE, Harness, harness_with};
use junction_outbound::{InMemorySharedState, OutboundClient, RetryPolicy};
use junction_polling::{InMemorySyncJobStore, SyncJobStore, ensure_jobs, job_key};

const GMAIL: &str = include_str!("../../catalog/providers/gmail.toml");
const GRAPH: &str = include_str!("../../catalog/providers/microsoft.toml");
const TOPIC: &str = "projects/junction-test/topics/gmail";
const CLIENT_STATE: &str = "graph-client-state-0123";
const WEBHOOKS: &str = "https://hub.example.com/webhooks/";
const DAY: i64 = 86_400;

/// The real `[subscription]` section (and what follows it) of a catalog file.
fn subscription_section(file: &str) -> &str {
    file.split_once("\n[subscription]\n")
        .map(|(_, rest)| rest)
        .expect("a [subscription] section")
}

/// What the fake provider holds: Graph subscriptions by id, Gmail's one watch, and
/// failures to answer next.
#[derive(Debug, Default)]
struct FakeState {
    now: i64,
    next_id: u32,
    /// id → expirationDateTime as sent.
    graph: std::collections::BTreeMap<String, String>,
    watching: bool,
    fail_next: Vec<u16>,
}

type Shared = Arc<Mutex<FakeState>>;

fn answer(status: u16, body: &Value) -> ScriptedResponse {
    ScriptedResponse::with_status(status, body)
}

/// Gmail `users.watch` / `users.stop` and Graph `/subscriptions`, as documented.
fn serve(request: &ApiRequest, state: &Shared) -> ScriptedResponse {
    let mut state = state.lock().expect("fake state");
    if !state.fail_next.is_empty() {
        let status = state.fail_next.remove(0);
        return answer(status, &json!({"error": {"code": "failed"}}));
    }
    let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
    let path = request.path.as_str();
    match (request.method.as_str(), path) {
        ("POST", "/gmail/v1/users/me/watch") => {
            state.watching = true;
            let expiration = (state.now + 7 * DAY) * 1000;
            answer(
                200,
                &json!({"historyId": "4242", "expiration": expiration.to_string()}),
            )
        }
        ("POST", "/gmail/v1/users/me/stop") => {
            state.watching = false;
            answer(204, &Value::Null)
        }
        ("POST", "/v1.0/subscriptions") => {
            state.next_id += 1;
            let id = format!("7f105c7d-2dc5-4530-97cd-4e7a{:08}", state.next_id);
            let expiry = body["expirationDateTime"].as_str().unwrap_or("").to_owned();
            state.graph.insert(id.clone(), expiry.clone());
            answer(
                201,
                &json!({"id": id, "resource": body["resource"], "expirationDateTime": expiry, "clientState": body["clientState"]}),
            )
        }
        (method, path) if path.starts_with("/v1.0/subscriptions/") => {
            let rest = &path["/v1.0/subscriptions/".len()..];
            let (id, action) = rest.split_once('/').unwrap_or((rest, ""));
            if !state.graph.contains_key(id) {
                return answer(404, &json!({"error": {"code": "ResourceNotFound"}}));
            }
            match (method, action) {
                ("PATCH", "") => {
                    let expiry = body["expirationDateTime"].as_str().unwrap_or("").to_owned();
                    state.graph.insert(id.to_owned(), expiry.clone());
                    answer(200, &json!({"id": id, "expirationDateTime": expiry}))
                }
                ("POST", "reauthorize") => answer(204, &Value::Null),
                ("DELETE", "") => {
                    state.graph.remove(id);
                    answer(204, &Value::Null)
                }
                _ => answer(405, &Value::Null),
            }
        }
        _ => answer(404, &Value::Null),
    }
}

struct Setup {
    h: Harness,
    manager: SubscriptionManager,
    store: Arc<InMemorySubscriptionStore>,
    jobs: Arc<InMemorySyncJobStore>,
    fake: Shared,
}

async fn setup(section: &str, topic: bool) -> Setup {
    let extra = format!(
        "[api]\nbase_url = \"{{provider_api}}\"\nrate_limit = {{ requests_per_second = 100.0, burst = 20, scope = \"connection\" }}\n\n[polling]\nmodels = [{{ name = \"threads\", poller = \"gmail-history\", interval_seconds = 300 }}]\n\n[subscription]\n{section}"
    );
    let h = harness_with(AuthServerConfig::default(), &extra).await;
    let fake: Shared = Arc::new(Mutex::new(FakeState {
        now: h.clock.now().unix_timestamp(),
        ..FakeState::default()
    }));
    let served = fake.clone();
    h.server
        .serve_provider_api(move |request| serve(request, &served));
    let secrets = InMemorySecretSource::default();
    secrets.put(
        "junction/webhooks/fakeauth",
        json!({"signing_secrets": [CLIENT_STATE, "older-secret"]}).to_string(),
    );
    let client = OutboundClient::new(
        h.vault.catalog(),
        h.vault.clone(),
        Arc::new(InMemorySharedState::default()),
        h.clock.clone(),
    )
    .with_policy(RetryPolicy {
        backoff: Backoff {
            base: Duration::from_millis(5),
            cap: Duration::from_millis(20),
        },
        max_attempts: 2,
    });
    let store = Arc::new(InMemorySubscriptionStore::default());
    let jobs = Arc::new(InMemorySyncJobStore::default());
    let mut settings = SubscriptionSettings {
        webhook_base_url: Some(WEBHOOKS.to_owned()),
        secret_prefix: "junction".to_owned(),
        table: "subscriptions".to_owned(),
        ..SubscriptionSettings::default()
    };
    if topic {
        settings
            .topics
            .insert("fakeauth".to_owned(), TOPIC.to_owned());
    }
    let manager = SubscriptionManager::new(SubscriptionPorts {
        catalog: h.vault.catalog(),
        client,
        vault: h.vault.clone(),
        store: store.clone(),
        secrets: Arc::new(secrets),
        jobs: Some(jobs.clone()),
        bus: h.bus.clone(),
        clock: h.clock.clone(),
        settings,
    });
    Setup {
        h,
        manager,
        store,
        jobs,
        fake,
    }
}

impl Setup {
    fn now(&self) -> i64 {
        self.h.clock.now().unix_timestamp()
    }

    /// Moves the test clock and the fake provider's clock together.
    fn advance(&self, seconds: i64) {
        self.h.clock.advance(time::Duration::seconds(seconds));
        self.fake.lock().expect("fake state").now = self.now();
    }

    fn fail_next(&self, statuses: &[u16]) {
        self.fake
            .lock()
            .expect("present")
            .fail_next
            .extend_from_slice(statuses);
    }

    /// Connects through the connect flow with the manager as its setup.
    async fn connect(&self) -> String {
        let flow = self
            .h
            .flow
            .clone()
            .with_setup(Arc::new(ConnectionSetups(vec![
                Arc::new(self.manager.clone()) as Arc<dyn ConnectionSetup>,
            ])));
        let query = self.h.authorize().await;
        match flow
            .callback("fakeauth", &query, BASE)
            .await
            .expect("callback")
        {
            junction_oauth::CallbackOutcome::Connected { connection_id, .. } => connection_id,
            other => panic!("not connected: {other:?}"),
        }
    }

    async fn record(&self, connection: &str) -> Subscription {
        self.store
            .get(connection)
            .await
            .expect("store")
            .expect("a record")
    }

    /// The subscription requests the provider received: (method, path, body).
    fn requests(&self) -> Vec<(String, String, Value)> {
        self.h
            .server
            .provider_requests()
            .into_iter()
            .map(|r| {
                (
                    r.method.clone(),
                    r.path.clone(),
                    serde_json::from_slice(&r.body).unwrap_or(Value::Null),
                )
            })
            .collect()
    }

    /// One renewal run; failures queued for it and not consumed are dropped.
    async fn sweep(&self) -> RenewalReport {
        let report = self
            .manager
            .renew_due(Instant::now() + Duration::from_secs(10))
            .await
            .expect("sweep");
        self.fake.lock().expect("fake state").fail_next.clear();
        report
    }

    fn failure_events(&self) -> Vec<junction_aws::events::CloudEvent> {
        self.h
            .bus
            .events()
            .into_iter()
            .filter(|e| e.event_type == "connection.subscription_failed")
            .collect()
    }
}

#[tokio::test]
async fn gmail_watch_is_created_at_connect_with_the_stack_topic() {
    let s = setup(subscription_section(GMAIL), true).await;
    let connection = s.connect().await;
    let requests = s.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let (method, path, body) = &requests[0];
    assert_eq!(
        (method.as_str(), path.as_str()),
        ("POST", "/gmail/v1/users/me/watch")
    );
    assert_eq!(
        body,
        &json!({"topicName": TOPIC, "labelIds": ["INBOX"], "labelFilterBehavior": "INCLUDE"})
    );
    let sent = s.h.server.provider_requests();
    assert!(
        sent[0]
            .header("authorization")
            .is_some_and(|v| v.starts_with("Bearer ")),
        "the connection's token authenticates the watch"
    );
    let record = s.record(&connection).await;
    let now = s.now();
    assert_eq!(record.state, SubscriptionState::Active);
    assert_eq!(record.subscription_id, None, "a watch has no id");
    assert_eq!(
        record.expires_at,
        Some(now + 7 * DAY),
        "the answer's expiration"
    );
    assert_eq!(
        record.renew_at,
        Some(now + DAY),
        "renewed daily, as Google recommends"
    );
    assert_eq!(record.tenant, "tenant-1");
}

#[tokio::test]
async fn without_a_topic_gmail_push_is_off() {
    let s = setup(subscription_section(GMAIL), false).await;
    let connection = s.connect().await;
    assert!(s.requests().is_empty(), "no watch without a topic");
    assert!(s.store.get(&connection).await.expect("present").is_none());
    assert!(s.failure_events().is_empty(), "off is not a failure");
}

#[tokio::test]
async fn a_reconnect_keeps_a_live_subscription() {
    let s = setup(subscription_section(GMAIL), true).await;
    let connection = s.connect().await;
    let outcome = s
        .manager
        .ensure(
            "fakeauth",
            &connection,
            s.now(),
            Instant::now() + Duration::from_secs(5),
        )
        .await
        .expect("ensure");
    assert_eq!(outcome, Outcome::Skipped("already_active"));
    assert_eq!(s.requests().len(), 1);
}

#[tokio::test]
async fn gmail_watch_is_renewed_before_it_expires() {
    let s = setup(subscription_section(GMAIL), true).await;
    let connection = s.connect().await;
    // Not due yet: nothing is sent.
    s.advance(DAY - 60);
    assert_eq!(s.sweep().await, RenewalReport::default());
    assert_eq!(s.requests().len(), 1);
    // Due a day after the watch, six days before it ends.
    s.advance(60);
    let report = s.sweep().await;
    assert_eq!((report.due, report.renewed, report.failed), (1, 1, 0));
    let requests = s.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].1, "/gmail/v1/users/me/watch",
        "renewing is watching again"
    );
    let record = s.record(&connection).await;
    assert_eq!(record.expires_at, Some(s.now() + 7 * DAY));
    assert_eq!(record.renew_at, Some(s.now() + DAY));
}

#[tokio::test]
async fn a_failed_renewal_is_published_and_retried_with_backoff() {
    let s = setup(subscription_section(GMAIL), true).await;
    let connection = s.connect().await;
    s.advance(DAY);
    // Two 503s: the client's two attempts are spent.
    s.fail_next(&[503, 503]);
    let report = s.sweep().await;
    assert_eq!((report.renewed, report.failed), (0, 1));
    let record = s.record(&connection).await;
    assert_eq!(record.state, SubscriptionState::Failing);
    assert_eq!(record.failures, 1);
    assert_eq!(record.last_error.as_deref(), Some("http_503"));
    assert_eq!(record.renew_at, Some(s.now() + 300), "retried in 5 minutes");

    let events = s.failure_events();
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(event.tenant.as_deref(), Some("tenant-1"));
    assert_eq!(event.connection.as_deref(), Some(connection.as_str()));
    assert_eq!(event.data["operation"], "renew");
    assert_eq!(event.data["reason"], "http_503");
    assert_eq!(event.data["failures"], 1);
    assert_eq!(event.data["expired"], false);

    // A second failure waits twice as long.
    s.advance(300);
    s.fail_next(&[403]);
    assert_eq!(s.sweep().await.failed, 1);
    let record = s.record(&connection).await;
    assert_eq!(record.failures, 2);
    assert_eq!(record.renew_at, Some(s.now() + 600));
    assert_eq!(s.failure_events().len(), 2);

    // Before then, nothing; after, the retry succeeds and the failures are cleared.
    s.advance(599);
    assert_eq!(s.sweep().await.due, 0);
    s.advance(1);
    let report = s.sweep().await;
    assert_eq!(
        report.renewed,
        1,
        "{report:?} {:?}",
        s.record(&connection).await
    );
    let record = s.record(&connection).await;
    assert_eq!(record.state, SubscriptionState::Active);
    assert_eq!((record.failures, record.last_error), (0, None));
}

#[tokio::test]
async fn after_the_expiry_a_reconciliation_poll_is_forced_and_the_watch_recreated() {
    let s = setup(subscription_section(GMAIL), true).await;
    let connection = s.connect().await;
    ensure_jobs(
        s.jobs.as_ref(),
        s.h.vault.catalog(),
        "fakeauth",
        &connection,
        Some("tenant-1"),
        s.now(),
    )
    .await
    .expect("jobs");
    let key = job_key(&connection, "threads");
    let mut job = s.jobs.get(&key).await.expect("present").expect("present");
    job.due_at = s.now() + 10 * DAY;
    assert!(
        s.jobs
            .replace(
                &{
                    let mut next = job.clone();
                    next.version += 1;
                    next
                },
                job.version
            )
            .await
            .expect("present")
    );

    // Every renewal fails until the watch has ended.
    s.advance(DAY);
    let mut failures = 0;
    while s.now() < s.record(&connection).await.expires_at.expect("present") {
        s.fail_next(&[403]);
        failures += s.sweep().await.failed;
        let next = s.record(&connection).await.renew_at.expect("present");
        s.advance((next - s.now()).max(1));
    }
    assert!(failures >= 3, "retried until the end: {failures}");
    let report = s.sweep().await;
    assert_eq!((report.expired, report.created), (1, 1), "{report:?}");
    let job = s.jobs.get(&key).await.expect("present").expect("present");
    assert_eq!(job.due_at, s.now(), "the reconciliation poll is due now");
    let record = s.record(&connection).await;
    assert_eq!(record.state, SubscriptionState::Active);
    assert_eq!(record.expires_at, Some(s.now() + 7 * DAY));
    assert!(s.fake.lock().expect("fake state").watching);
}

#[tokio::test]
async fn an_expired_watch_whose_recreate_fails_forces_one_poll_only() {
    let s = setup(subscription_section(GMAIL), true).await;
    let connection = s.connect().await;
    ensure_jobs(
        s.jobs.as_ref(),
        s.h.vault.catalog(),
        "fakeauth",
        &connection,
        Some("tenant-1"),
        s.now(),
    )
    .await
    .expect("jobs");
    s.advance(8 * DAY);
    s.fail_next(&[403]);
    let report = s.sweep().await;
    assert_eq!((report.expired, report.failed), (1, 1));
    let event = s.failure_events().pop().expect("an event");
    assert_eq!(event.data["expired"], true);
    assert_eq!(event.data["operation"], "recreate");
    let key = job_key(&connection, "threads");
    let forced_at = s
        .jobs
        .get(&key)
        .await
        .expect("present")
        .expect("present")
        .due_at;
    assert_eq!(forced_at, s.now());
    // The retry does not force again.
    s.advance(300);
    s.fail_next(&[403]);
    s.sweep().await;
    assert_eq!(
        s.jobs
            .get(&key)
            .await
            .expect("present")
            .expect("present")
            .due_at,
        forced_at
    );
}

#[tokio::test]
async fn graph_subscription_is_created_with_the_stored_client_state() {
    let s = setup(subscription_section(GRAPH), false).await;
    let connection = s.connect().await;
    let requests = s.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let (method, path, body) = &requests[0];
    assert_eq!(
        (method.as_str(), path.as_str()),
        ("POST", "/v1.0/subscriptions")
    );
    let url = format!("{WEBHOOKS}fakeauth");
    assert_eq!(body["notificationUrl"], url.as_str());
    assert_eq!(body["lifecycleNotificationUrl"], url.as_str());
    assert_eq!(
        body["clientState"], CLIENT_STATE,
        "the newest signing secret"
    );
    assert_eq!(body["resource"], "me/messages");
    assert_eq!(body["changeType"], "created,updated,deleted");
    let record = s.record(&connection).await;
    let now = s.now();
    assert_eq!(
        body["expirationDateTime"],
        junction_aws::clock::rfc3339_millis(
            time::OffsetDateTime::from_unix_timestamp(now + 600_000).expect("present")
        )
        .as_str()
    );
    assert!(record.subscription_id.is_some());
    assert_eq!(record.expires_at, Some(now + 600_000));
    assert_eq!(record.renew_at, Some(now + 600_000 - 2 * DAY));
}

#[tokio::test]
async fn graph_subscription_is_renewed_by_patch_and_recreated_when_gone() {
    let s = setup(subscription_section(GRAPH), false).await;
    let connection = s.connect().await;
    let first = s
        .record(&connection)
        .await
        .subscription_id
        .expect("present");
    s.advance(600_000 - 2 * DAY);
    assert_eq!(s.sweep().await.renewed, 1);
    let requests = s.requests();
    let (method, path, body) = &requests[1];
    assert_eq!(method, "PATCH");
    assert_eq!(path, &format!("/v1.0/subscriptions/{first}"));
    assert_eq!(
        body.as_object().expect("present").len(),
        1,
        "only the new expiry: {body}"
    );
    assert_eq!(
        s.record(&connection).await.expires_at,
        Some(s.now() + 600_000)
    );

    // Graph dropped it meanwhile: the PATCH answers 404 and a new one is created.
    s.fake.lock().expect("fake state").graph.clear();
    s.advance(600_000 - 2 * DAY);
    let report = s.sweep().await;
    assert_eq!((report.created, report.failed), (1, 0), "{report:?}");
    let record = s.record(&connection).await;
    assert_ne!(record.subscription_id.as_deref(), Some(first.as_str()));
    assert_eq!(record.state, SubscriptionState::Active);
}

fn lifecycle(event: &str, id: &str) -> Value {
    json!({"value": [{
        "subscriptionId": id,
        "subscriptionExpirationDateTime": "2027-01-20T08:00:00.0000000Z",
        "tenantId": "bb8775a4-4d8c-42cf-a1d4-4d58c2bb668f",
        "clientState": CLIENT_STATE,
        "lifecycleEvent": event,
    }]})
}

#[tokio::test]
async fn each_graph_lifecycle_notification_is_handled() {
    let s = setup(subscription_section(GRAPH), false).await;
    let connection = s.connect().await;
    ensure_jobs(
        s.jobs.as_ref(),
        s.h.vault.catalog(),
        "fakeauth",
        &connection,
        Some("tenant-1"),
        s.now() + DAY,
    )
    .await
    .expect("jobs");
    let id = s
        .record(&connection)
        .await
        .subscription_id
        .expect("present");
    let deadline = || Instant::now() + Duration::from_secs(5);

    // reauthorizationRequired → POST /subscriptions/{id}/reauthorize.
    let outcomes = s
        .manager
        .handle_lifecycle(
            "fakeauth",
            &lifecycle("reauthorizationRequired", &id),
            deadline(),
        )
        .await
        .expect("lifecycle");
    assert_eq!(outcomes, [Outcome::Reauthorized]);
    let requests = s.requests();
    assert_eq!(
        (requests[1].0.as_str(), requests[1].1.as_str()),
        (
            "POST",
            format!("/v1.0/subscriptions/{id}/reauthorize").as_str()
        )
    );

    // missed → the connection's sync jobs are due now.
    s.advance(60);
    let outcomes = s
        .manager
        .handle_lifecycle("fakeauth", &lifecycle("missed", &id), deadline())
        .await
        .expect("lifecycle");
    assert_eq!(outcomes, [Outcome::Reconciled(1)]);
    let job = s
        .jobs
        .get(&job_key(&connection, "threads"))
        .await
        .expect("present")
        .expect("present");
    assert_eq!(job.due_at, s.now());
    assert_eq!(s.requests().len(), 2, "a missed notification sends nothing");

    // subscriptionRemoved → a new subscription, found by its new id afterwards.
    s.fake.lock().expect("fake state").graph.clear();
    let outcomes = s
        .manager
        .handle_lifecycle(
            "fakeauth",
            &lifecycle("subscriptionRemoved", &id),
            deadline(),
        )
        .await
        .expect("lifecycle");
    assert_eq!(outcomes, [Outcome::Created]);
    let record = s.record(&connection).await;
    let new_id = record.subscription_id.clone().expect("present");
    assert_ne!(new_id, id);
    assert!(
        s.fake
            .lock()
            .expect("fake state")
            .graph
            .contains_key(&new_id)
    );

    // The old id and unknown events are skipped; a change notification is no lifecycle.
    for body in [
        lifecycle("reauthorizationRequired", &id),
        lifecycle("somethingNew", &new_id),
        json!({"value": [{"subscriptionId": new_id, "changeType": "created", "clientState": CLIENT_STATE}]}),
    ] {
        let outcomes = s
            .manager
            .handle_lifecycle("fakeauth", &body, deadline())
            .await
            .expect("lifecycle");
        assert!(outcomes.is_empty(), "{body}");
    }
    assert_eq!(s.requests().len(), 3);
}

#[tokio::test]
async fn a_failed_reauthorization_is_published_and_retried() {
    let s = setup(subscription_section(GRAPH), false).await;
    let connection = s.connect().await;
    let id = s
        .record(&connection)
        .await
        .subscription_id
        .expect("present");
    s.fail_next(&[503, 503]);
    let outcomes = s
        .manager
        .handle_lifecycle(
            "fakeauth",
            &lifecycle("reauthorizationRequired", &id),
            Instant::now() + Duration::from_secs(5),
        )
        .await
        .expect("lifecycle");
    assert_eq!(outcomes, [Outcome::Failed("http_503".into())]);
    assert_eq!(s.failure_events()[0].data["operation"], "reauthorize");
    let record = s.record(&connection).await;
    assert_eq!(record.renew_at, Some(s.now() + 300), "the sweep retries it");
}

#[tokio::test]
async fn disconnect_deletes_the_subscription_while_the_tokens_exist() {
    let s = setup(subscription_section(GRAPH), false).await;
    let connection = s.connect().await;
    let id = s
        .record(&connection)
        .await
        .subscription_id
        .expect("present");
    let vault = s.h.vault.clone().with_teardown(Arc::new(s.manager.clone()));
    vault
        .disconnect(&connection, false)
        .await
        .expect("disconnect");
    let requests = s.requests();
    assert_eq!(
        (requests[1].0.as_str(), requests[1].1.as_str()),
        ("DELETE", format!("/v1.0/subscriptions/{id}").as_str()),
        "sent with a live token: before the revocation"
    );
    assert!(s.fake.lock().expect("fake state").graph.is_empty());
    assert!(s.store.get(&connection).await.expect("present").is_none());
    assert_eq!(s.h.server.counters().revocations, 1);
}

#[tokio::test]
async fn gmail_disconnect_stops_the_watch() {
    let s = setup(subscription_section(GMAIL), true).await;
    let connection = s.connect().await;
    let vault = s.h.vault.clone().with_teardown(Arc::new(s.manager.clone()));
    vault
        .disconnect(&connection, false)
        .await
        .expect("disconnect");
    assert_eq!(s.requests()[1].1, "/gmail/v1/users/me/stop");
    assert!(!s.fake.lock().expect("fake state").watching);
}

#[tokio::test]
async fn a_failed_delete_blocks_a_disconnect_but_not_a_forced_one() {
    let s = setup(subscription_section(GRAPH), false).await;
    let connection = s.connect().await;
    let vault = s.h.vault.clone().with_teardown(Arc::new(s.manager.clone()));
    s.fail_next(&[503, 503]);
    let err = vault
        .disconnect(&connection, false)
        .await
        .expect_err("the delete failed");
    assert!(
        matches!(err, junction_oauth::VaultError::Unavailable { .. }),
        "{err:?}"
    );
    assert!(
        s.h.vault.connection(&connection).await.is_ok(),
        "kept for the retry"
    );
    assert!(s.store.get(&connection).await.expect("present").is_some());

    s.fail_next(&[503, 503]);
    vault.disconnect(&connection, true).await.expect("forced");
    assert!(s.h.vault.connection(&connection).await.is_err(), "deleted");
}

#[tokio::test]
async fn a_subscription_already_gone_does_not_block_the_disconnect() {
    let s = setup(subscription_section(GRAPH), false).await;
    let connection = s.connect().await;
    s.fake.lock().expect("fake state").graph.clear();
    let vault = s.h.vault.clone().with_teardown(Arc::new(s.manager.clone()));
    vault
        .disconnect(&connection, false)
        .await
        .expect("disconnect");
    assert!(s.store.get(&connection).await.expect("present").is_none());
}

#[tokio::test]
async fn a_missing_webhook_secret_fails_the_create_not_the_connect() {
    let s = setup(subscription_section(GRAPH), false).await;
    let manager = SubscriptionManager::new(SubscriptionPorts {
        secrets: Arc::new(InMemorySecretSource::default()),
        ..s.manager.ports()
    });
    let connection = s.h.connect().await;
    let outcome = manager
        .ensure(
            "fakeauth",
            &connection,
            s.now(),
            Instant::now() + Duration::from_secs(5),
        )
        .await
        .expect("ensure");
    assert_eq!(outcome, Outcome::Failed("no_webhook_secret".into()));
    assert!(
        s.requests().is_empty(),
        "nothing sent without a clientState"
    );
    let record = s.record(&connection).await;
    assert_eq!(record.state, SubscriptionState::Failing);
    assert_eq!(s.failure_events()[0].data["operation"], "create");
}

/// Lifecycle notifications come to the same webhook URL with the subscription's
/// `clientState` in each item: microsoft.toml's per-item check accepts them with the
/// stored secret (the one the create sent) and refuses a forged one.
#[test]
fn lifecycle_notifications_pass_the_graph_verification_and_forgeries_do_not() {
    let catalog = junction_catalog::Catalog::embedded().expect("catalog");
    let verification = catalog
        .get("microsoft")
        .and_then(|p| p.webhook.as_ref())
        .and_then(|w| w.verification.as_ref())
        .expect("microsoft verification");
    let secrets = [junction_webhooks::SigningSecret::new(CLIENT_STATE)];
    let headers = http::HeaderMap::new();
    let check = |body: &Value| {
        let body = body.to_string();
        junction_webhooks::verify(
            verification,
            &secrets,
            &junction_webhooks::SignedRequest {
                method: "POST",
                url: "https://hub.example.com/webhooks/microsoft",
                headers: &headers,
                body: body.as_bytes(),
            },
            time::OffsetDateTime::now_utc(),
        )
    };
    for event in ["reauthorizationRequired", "subscriptionRemoved", "missed"] {
        assert_eq!(check(&lifecycle(event, "sub-1")), Ok(()), "{event}");
        let mut forged = lifecycle(event, "sub-1");
        forged["value"][0]["clientState"] = json!("forged");
        assert_eq!(
            check(&forged),
            Err(junction_webhooks::VerifyError::SignatureMismatch),
            "{event}"
        );
        let mut missing = lifecycle(event, "sub-1");
        missing["value"][0]
            .as_object_mut()
            .expect("present")
            .remove("clientState");
        assert!(check(&missing).is_err(), "{event}: no clientState");
    }
}

/// The oauth function never opens a token: its setup records the subscription as
/// pending and announces it; the subscription-manager function (which may) creates it
/// on that event, and the renewal run a minute later if the event is lost.
#[tokio::test]
async fn a_connect_without_token_access_announces_the_create_and_the_run_is_the_safety_net() {
    let s = setup(subscription_section(GRAPH), false).await;
    let scheduler = SubscriptionScheduler {
        catalog: s.h.vault.catalog(),
        store: s.store.clone(),
        connections: s.h.connections.clone(),
        bus: s.h.bus.clone(),
        settings: s.manager.ports().settings,
    };
    let flow =
        s.h.flow
            .clone()
            .with_setup(Arc::new(ConnectionSetups(vec![Arc::new(scheduler)])));
    let query = s.h.authorize().await;
    let connection = match flow
        .callback("fakeauth", &query, BASE)
        .await
        .expect("callback")
    {
        junction_oauth::CallbackOutcome::Connected { connection_id, .. } => connection_id,
        other => panic!("not connected: {other:?}"),
    };
    assert!(s.requests().is_empty(), "nothing sent at connect");
    let record = s.record(&connection).await;
    assert_eq!(record.state, SubscriptionState::Pending);
    assert_eq!(
        record.renew_at,
        Some(s.now() + crate::PENDING_HEAD_START_SECONDS),
        "the renewal run waits for the event path"
    );
    assert_eq!(record.tenant, "tenant-1");
    let pending: Vec<_> =
        s.h.bus
            .events()
            .into_iter()
            .filter(|e| e.event_type == crate::SUBSCRIPTION_PENDING)
            .collect();
    let [event] = pending.as_slice() else {
        panic!("one connection.subscription_pending: {pending:?}");
    };
    assert_eq!(event.source, "junction/fakeauth");
    assert_eq!(event.subject.as_deref(), Some(connection.as_str()));
    assert_eq!(event.data["tenant"], "tenant-1");
    assert_eq!(event.data["connection_id"], connection.as_str());

    // What the subscription-manager function does with it.
    let outcome = s
        .manager
        .ensure(
            "fakeauth",
            &connection,
            s.now(),
            Instant::now() + Duration::from_secs(5),
        )
        .await
        .expect("ensure");
    assert_eq!(outcome, Outcome::Created);
    let record = s.record(&connection).await;
    assert_eq!(record.state, SubscriptionState::Active);
    assert!(record.subscription_id.is_some());
    assert_eq!(
        s.sweep().await.created,
        0,
        "the run has nothing left to create"
    );
}

/// The event lost (the bus down at connect): the connect still succeeds and the
/// renewal run creates the subscription once its head start has passed.
#[tokio::test]
async fn a_lost_pending_event_leaves_the_create_to_the_renewal_run() {
    let s = setup(subscription_section(GRAPH), false).await;
    let scheduler = SubscriptionScheduler {
        catalog: s.h.vault.catalog(),
        store: s.store.clone(),
        connections: s.h.connections.clone(),
        bus: {
            let bus = Arc::new(junction_aws::events::InMemoryEventBus::default());
            bus.set_failing(true);
            bus
        },
        settings: s.manager.ports().settings,
    };
    let flow =
        s.h.flow
            .clone()
            .with_setup(Arc::new(ConnectionSetups(vec![Arc::new(scheduler)])));
    let query = s.h.authorize().await;
    let connection = match flow
        .callback("fakeauth", &query, BASE)
        .await
        .expect("the connect does not depend on the bus")
    {
        junction_oauth::CallbackOutcome::Connected { connection_id, .. } => connection_id,
        other => panic!("not connected: {other:?}"),
    };
    assert_eq!(s.sweep().await.created, 0, "not due during the head start");
    s.advance(crate::PENDING_HEAD_START_SECONDS);
    let report = s.sweep().await;
    assert_eq!(report.created, 1, "{report:?}");
    let record = s.record(&connection).await;
    assert_eq!(record.state, SubscriptionState::Active);
}
