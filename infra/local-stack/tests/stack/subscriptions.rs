//! Microsoft Graph's managed subscription end to end through the local stack (issue 28,
//! point 1): a user connects Microsoft through the real connect flow, the connect's
//! `connection.subscription_pending` reaches the subscription manager by its rule on the
//! bus, which creates the subscription at a fake Graph (`POST /v1.0/subscriptions`,
//! `clientState` the stored webhook secret) with no renewal run, Graph's lifecycle
//! notifications travel as in AWS (ingress → ingest queue → consumer → Junction's bus →
//! the subscription manager's rule on it) and are answered (reauthorize, recreate,
//! reconcile: the connection's sync jobs forced due), and the disconnect deletes the
//! subscription.
//!
//! Microsoft's catalog entry is replaced by a copy of `microsoft.toml` whose OAuth
//! endpoints and Graph API base are the loopback fake's: everything else (webhook
//! verification, `[subscription]`, `[subscription.lifecycle]`) is the built-in entry's.

use crate::common;
use common::{
    RETURN_TO_ORIGIN, browser, connect_url, first_cookie, location, session_for,
    start_with_overlay, stop_and_check_processes_are_gone,
};

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use fake_provider::{ApiRequest, AuthServerConfig, FakeAuthServer, ScriptedResponse};
use junction_cli::{
    samples::Sample,
    webhook::{post, sign_webhook, signing_key, webhook_url},
};
use local_stack::{bus_rules::Delivery, http_api::LOCAL_IAM_HEADER, stack::LocalStack};
use serde_json::{Value, json};

const RETURN_TO: &str = "https://app.example.com/integrations";
const REFRESHER: &str = "TokenRefresherFunctionEveryFiveMinutes";
/// How long a lifecycle notification may take from the ingress to the provider.
const LIFECYCLE_LIMIT: Duration = Duration::from_secs(60);

/// `microsoft.toml` as an overlay entry: `[[provider]]`, its tables under `provider.`,
/// the OAuth endpoints the fake's and the Graph API the fake's `/provider`.
fn microsoft_overlay(server: &FakeAuthServer) -> String {
    let toml = std::fs::read_to_string(
        local_stack::emulator::repo_root().join("shared/catalog/providers/microsoft.toml"),
    )
    .expect("microsoft.toml");
    let mut overlay = String::from("[[provider]]\n");
    let mut skipping = false;
    for line in toml.lines() {
        if let Some(table) = line.strip_prefix('[') {
            // The identity platform's endpoints and tenant parameter give way to the fake's.
            skipping = table.starts_with("oauth");
            if table.starts_with("oauth]") {
                overlay.push_str("[provider.oauth]\n");
                overlay.push_str(&server.oauth_catalog_fields());
            } else if !skipping {
                overlay.push_str(&format!("[provider.{table}\n"));
            }
            continue;
        }
        if skipping {
            continue;
        }
        if line.starts_with("base_url = ") {
            overlay.push_str(&format!("base_url = \"{}\"\n", server.provider_api_base()));
        } else {
            overlay.push_str(line);
            overlay.push('\n');
        }
    }
    overlay
}

/// Graph's `/subscriptions` as the fake answers it: creates get `sub-1`, `sub-2`, …
/// with the expiry asked for; reauthorize and delete answer 204; anything else 404.
fn serve_graph(server: &FakeAuthServer) {
    let created = Arc::new(AtomicUsize::new(0));
    server.serve_provider_api(move |request: &ApiRequest| {
        let no_content = ScriptedResponse {
            status: 204,
            headers: Vec::new(),
            body: String::new(),
            delay: Duration::ZERO,
        };
        let path = request.path.as_str();
        match (request.method.as_str(), path) {
            ("POST", "/v1.0/subscriptions") => {
                let asked: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
                let id = format!("sub-{}", created.fetch_add(1, Ordering::SeqCst) + 1);
                ScriptedResponse::with_status(
                    201,
                    &json!({
                        "id": id,
                        "resource": asked["resource"],
                        "changeType": asked["changeType"],
                        "expirationDateTime": asked["expirationDateTime"],
                    }),
                )
            }
            ("POST", _) if path.ends_with("/reauthorize") => no_content,
            ("DELETE", _) if path.starts_with("/v1.0/subscriptions/") => no_content,
            _ => ScriptedResponse::with_status(404, &json!({"error": {"code": "NotFound"}})),
        }
    });
}

/// The Graph requests the fake received: `METHOD path`.
fn graph_calls(server: &FakeAuthServer) -> Vec<String> {
    server
        .provider_requests()
        .iter()
        .filter(|r| r.path.starts_with("/v1.0/subscriptions"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// Waits until the fake received `call` as its Graph request number `index` (0-based).
async fn graph_receives(server: &FakeAuthServer, index: usize, call: &str) {
    let seen = common::eventually(LIFECYCLE_LIMIT, || async move {
        let calls = graph_calls(server);
        (calls.len() > index).then_some(calls)
    })
    .await
    .unwrap_or_else(|| panic!("no Graph request {call}: {:?}", graph_calls(server)));
    assert_eq!(seen[index], call, "{seen:?}");
}

/// The connection's subscription record as the stack's table holds it (its `doc`).
async fn record(stack: &LocalStack, connection: &str) -> Option<Value> {
    let item = aws_sdk_dynamodb::Client::new(stack.sdk_config())
        .get_item()
        .table_name(&stack.description().resources["SubscriptionsTable"])
        .key(
            "connection",
            aws_sdk_dynamodb::types::AttributeValue::S(connection.to_owned()),
        )
        .consistent_read(true)
        .send()
        .await
        .expect("subscription read")
        .item?;
    let doc = item.get("doc").and_then(|v| v.as_s().ok()).expect("a doc");
    Some(serde_json::from_str(doc).expect("the record as JSON"))
}

#[tokio::test]
async fn a_graph_subscription_is_created_answers_its_lifecycle_and_is_deleted() {
    let server = FakeAuthServer::start(AuthServerConfig::default()).await;
    serve_graph(&server);
    let overlay = microsoft_overlay(&server);
    let (stack, prefix, dir) = start_with_overlay("subscriptions", &overlay).await;
    let api = stack.api_url().to_owned();

    // The template's rule on the bus is dispatched to the subscription manager.
    let mut rules: Vec<(&str, &str)> = stack
        .bus_rules()
        .iter()
        .map(|r| (r.rule(), r.function()))
        .collect();
    rules.sort_unstable();
    assert_eq!(
        rules,
        [
            (
                "SubscriptionManagerFunctionGraphLifecycleNotifications",
                "SubscriptionManagerFunction"
            ),
            (
                "SubscriptionManagerFunctionPendingSubscriptions",
                "SubscriptionManagerFunction"
            )
        ]
    );
    let rule = |name: &str| {
        stack
            .bus_rules()
            .iter()
            .find(|r| r.rule() == name)
            .cloned()
            .expect("the rule is dispatched")
    };
    let dispatch = rule("SubscriptionManagerFunctionGraphLifecycleNotifications");
    let pending_dispatch = rule("SubscriptionManagerFunctionPendingSubscriptions");

    server.set_redirect_uris(vec![format!("{api}/oauth/microsoft/callback")]);
    let secrets = aws_sdk_secretsmanager::Client::new(stack.sdk_config());
    secrets
        .create_secret()
        .name(format!("{prefix}/oauth/microsoft"))
        .secret_string(
            r#"{"client_id":"junction-test-client","client_secret":"junction-test-secret"}"#,
        )
        .send()
        .await
        .expect("client credentials stored");

    // GIVEN a connection made through the connect flow
    let before = time::OffsetDateTime::now_utc().unix_timestamp();
    let http = browser();
    let start_url = connect_url(&stack, &session_for("microsoft", "acme", RETURN_TO)).await;
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
    let back = url::Url::parse(&location(&callback)).expect("return_to");
    assert!(back.as_str().starts_with(RETURN_TO_ORIGIN));
    let connection = back
        .query_pairs()
        .find(|(k, _)| k == "connection_id")
        .map(|(_, v)| v.into_owned())
        .expect("connection id");
    // THEN the connect's announced create (the OAuth function opens no token) reaches
    // the subscription manager by its rule, which creates it: no renewal run needed
    graph_receives(&server, 0, "POST /v1.0/subscriptions").await;
    let announced = common::eventually(LIFECYCLE_LIMIT, || {
        let pending_dispatch = &pending_dispatch;
        async move {
            let deliveries = pending_dispatch.deliveries();
            (!deliveries.is_empty()).then_some(deliveries)
        }
    })
    .await
    .expect("connection.subscription_pending reached the subscription manager");
    assert!(
        matches!(announced.as_slice(), [Delivery::Succeeded { attempt: 1 }]),
        "{announced:?}"
    );
    let active = common::eventually(LIFECYCLE_LIMIT, || {
        let (stack, connection) = (&stack, &connection);
        async move {
            record(stack, connection)
                .await
                .filter(|r| r["state"] == "active")
        }
    })
    .await
    .expect("the record active");
    assert_eq!(active["subscription_id"], "sub-1");
    // The renewal run, the safety net, finds nothing left to create.
    let ran: Value =
        serde_json::from_slice(&stack.fire_schedule(REFRESHER).await.expect("refresher ran"))
            .expect("the refresher's report");
    assert_eq!(ran["subscriptions"]["created"], 0, "{ran}");

    // AND Graph got the create, with the stored webhook secret as clientState
    assert_eq!(graph_calls(&server), ["POST /v1.0/subscriptions"]);
    let create = server.provider_requests()[0].clone();
    assert!(
        create
            .header("authorization")
            .is_some_and(|value| value.starts_with("Bearer ")),
        "sent with the connection's token"
    );
    let body: Value = serde_json::from_slice(&create.body).expect("a JSON body");
    let catalog = junction_catalog::Catalog::embedded()
        .expect("catalog")
        .with_endpoint_rules(junction_catalog::EndpointRules::LoopbackHttpForTests)
        .with_overlay("test", &overlay)
        .expect("overlay");
    let microsoft = catalog.get("microsoft").expect("microsoft");
    let key = signing_key(&secrets, &prefix, microsoft, None)
        .await
        .expect("the seeded webhook secret");
    assert!(
        body["clientState"] == key.expose(),
        "clientState is the stored secret"
    );
    assert_eq!(body["changeType"], "created,updated,deleted");
    assert_eq!(body["resource"], "me/messages");
    assert_eq!(body["notificationUrl"], format!("{api}/webhooks/microsoft"));
    assert_eq!(body["lifecycleNotificationUrl"], body["notificationUrl"]);
    let expiry = time::OffsetDateTime::parse(
        body["expirationDateTime"].as_str().expect("an expiry"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339")
    .unix_timestamp();
    assert!(
        (before + 600_000..=before + 600_000 + 60).contains(&expiry),
        "the catalog's lifetime asked for: {expiry}"
    );
    let created = record(&stack, &connection).await.expect("a record");
    assert_eq!(created["subscription_id"], "sub-1");
    assert_eq!(created["state"], "active");
    assert_eq!(created["expires_at"], expiry);

    // Graph's lifecycle notifications, signed as Graph signs them (clientState).
    let client = reqwest::Client::new();
    let notify = |subscription: &'static str, event: &'static str| {
        let (client, api, key, expires) = (&client, api.clone(), &key, &body["expirationDateTime"]);
        async move {
            let sample = Sample {
                content_type: "application/json".into(),
                headers: Vec::new(),
                body: json!({"value": [{
                    "subscriptionId": subscription,
                    "subscriptionExpirationDateTime": expires,
                    "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95",
                    "clientState": "replaced-by-the-configured-value",
                    "lifecycleEvent": event,
                }]})
                .to_string()
                .into_bytes(),
            };
            let signed = sign_webhook(
                microsoft,
                key,
                &webhook_url(&api, "microsoft", None),
                &sample,
                time::OffsetDateTime::now_utc(),
            )
            .expect("signed");
            let delivered = post(client, &signed).await.expect("posted");
            assert_eq!(delivered.status, 202, "{event}: {}", delivered.body);
        }
    };

    // reauthorizationRequired → POST /subscriptions/{id}/reauthorize
    notify("sub-1", "reauthorizationRequired").await;
    graph_receives(&server, 1, "POST /v1.0/subscriptions/sub-1/reauthorize").await;

    // subscriptionRemoved → a new subscription
    notify("sub-1", "subscriptionRemoved").await;
    graph_receives(&server, 2, "POST /v1.0/subscriptions").await;
    let recreated = common::eventually(LIFECYCLE_LIMIT, || {
        let (stack, connection) = (&stack, &connection);
        async move {
            record(stack, connection)
                .await
                .filter(|r| r["subscription_id"] == "sub-2")
        }
    })
    .await
    .expect("the record names the new subscription");
    assert_eq!(recreated["state"], "active");

    // missed → reconcile: the connection's sync jobs (microsoft.toml's `[polling]`,
    // set up at connect) are forced due, for the next scheduler tick to poll.
    let jobs = junction_polling::DynamoSyncJobStore::from_config(
        stack.sdk_config(),
        stack.description().resources["SyncJobsTable"].clone(),
    );
    let models: Vec<String> = microsoft
        .polling
        .as_ref()
        .map(|p| p.models.iter().map(|m| m.name.clone()).collect())
        .unwrap_or_default();
    assert!(!models.is_empty(), "microsoft.toml declares a poller");
    let job = |model: &str| {
        let (jobs, key) = (&jobs, junction_polling::job_key(&connection, model));
        async move {
            junction_polling::SyncJobStore::get(jobs, &key)
                .await
                .expect("job read")
                .unwrap_or_else(|| panic!("the connect set up job {key}"))
        }
    };
    let mut before = Vec::new();
    for model in &models {
        before.push(job(model).await.version);
    }
    let notified = time::OffsetDateTime::now_utc().unix_timestamp();
    notify("sub-2", "missed").await;
    let delivered = common::eventually(LIFECYCLE_LIMIT, || {
        let dispatch = &dispatch;
        async move {
            let deliveries = dispatch.deliveries();
            (deliveries.len() >= 3).then_some(deliveries)
        }
    })
    .await
    .expect("three lifecycle events reached the subscription manager");
    assert!(
        delivered
            .iter()
            .all(|d| matches!(d, Delivery::Succeeded { attempt: 1 })),
        "each handled at the first attempt: {delivered:?}"
    );
    for (model, version) in models.iter().zip(before) {
        let forced = job(model).await;
        assert!(
            forced.version > version && forced.due_at <= notified + 60,
            "job {model} forced due: {forced:?}"
        );
    }
    let manager_logs = stack.functions()["SubscriptionManagerFunction"].logs();
    assert!(
        manager_logs
            .iter()
            .any(|line| line.contains(r#""lifecycle_event":"missed""#)
                && line.contains(&format!("Reconciled({})", models.len()))),
        "the missed notification reconciled: {manager_logs:#?}"
    );
    assert_eq!(graph_calls(&server).len(), 3, "missed sends Graph nothing");
    assert_eq!(
        record(&stack, &connection).await.expect("a record")["subscription_id"],
        "sub-2"
    );

    // WHEN the operator disconnects THEN Graph's subscription is deleted
    let deleted = http
        .delete(format!("{api}/v1/tenants/acme/connections/{connection}"))
        .header(LOCAL_IAM_HEADER, stack.local_iam_key())
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 200);
    assert_eq!(
        graph_calls(&server),
        [
            "POST /v1.0/subscriptions",
            "POST /v1.0/subscriptions/sub-1/reauthorize",
            "POST /v1.0/subscriptions",
            "DELETE /v1.0/subscriptions/sub-2",
        ]
    );
    assert!(
        record(&stack, &connection).await.is_none(),
        "the record is gone"
    );

    stop_and_check_processes_are_gone(stack).await;
    let _ = std::fs::remove_dir_all(dir);
}
