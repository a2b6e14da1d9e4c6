//! `missed` → reconcile for Microsoft Graph (issue 28, point 1): a connection under
//! microsoft.toml's real `[polling]` and `[subscription]` sections (its `[api]` pointed at
//! the fake provider on loopback) gets its `microsoft-messages` sync job at connect,
//! beside its subscription; the job syncs the Inbox once; a `missed` lifecycle
//! notification makes it due again, and the forced run brings the message the missed
//! notification would have announced. The fake Graph answers `/subscriptions` and the
//! Inbox's message delta in their documented shapes
//! (learn.microsoft.com/graph/api/subscription-post-subscriptions,
//! learn.microsoft.com/graph/delta-query-messages).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fake_provider::{ApiRequest, AuthServerConfig, ScriptedResponse};
use serde_json::{Value, json};

use junction_aws::clock::Clock;
use junction_aws::queue::{InMemoryEventQueue, attribute};
use junction_aws::secrets::InMemorySecretSource;
use junction_oauth::ConnectionSetup;
use junction_oauth::testing::{BASE, harness_with};
use junction_outbound::{InMemorySharedState, OutboundClient};
use junction_polling::{
    InMemorySyncJobStore, PollWorker, RunOutcome, SyncJobSetup, SyncJobStore, job_key, pollers,
};
use junction_subscriptions::{
    ConnectionSetups, InMemorySubscriptionStore, Outcome, SubscriptionManager, SubscriptionPorts,
    SubscriptionSettings, SubscriptionStore,
};

const GRAPH: &str = include_str!("../../catalog/providers/microsoft.toml");
const CLIENT_STATE: &str = "graph-client-state-0123";

/// The real sections of microsoft.toml from `[polling]` on (`[polling]`, `[subscription]`,
/// `[subscription.lifecycle]`), and its error rules under a loopback `[api]`.
fn catalog_extra() -> String {
    let (_, from_polling) = GRAPH
        .split_once("\n[polling]\n")
        .expect("microsoft.toml polls");
    let rules_start = GRAPH.find("error_rules = [").expect("error rules");
    let rules_end = GRAPH[rules_start..].find("\n]").expect("rules end") + rules_start + 2;
    format!(
        "[api]\nbase_url = \"{{provider_api}}\"\nrate_limit = {{ requests_per_second = 100.0, burst = 20, scope = \"connection\" }}\n{}\n\n[polling]\n{from_polling}",
        &GRAPH[rules_start..rules_end]
    )
}

/// Graph's side: subscriptions by id, the Inbox's messages, and the delta generation.
#[derive(Debug, Default)]
struct Graph {
    base: String,
    subscriptions: Vec<String>,
    /// (id, lastModifiedDateTime), the change order.
    inbox: Vec<(String, String)>,
}

fn message(id: &str, modified: &str) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.message",
        "id": id,
        "subject": format!("About {id}"),
        "bodyPreview": "Hello",
        "receivedDateTime": modified,
        "lastModifiedDateTime": modified,
        "conversationId": format!("conv-{id}"),
        "from": {"emailAddress": {"name": "Dana Swope", "address": "danas@contoso.com"}},
        "toRecipients": [],
        "ccRecipients": []
    })
}

fn serve(request: &ApiRequest, graph: &Mutex<Graph>) -> ScriptedResponse {
    let mut graph = graph.lock().expect("graph");
    match (request.method.as_str(), request.path.as_str()) {
        ("POST", "/v1.0/subscriptions") => {
            let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
            let id = format!(
                "7f105c7d-2dc5-4530-97cd-4e7a{:08}",
                graph.subscriptions.len()
            );
            graph.subscriptions.push(id.clone());
            ScriptedResponse::with_status(
                201,
                &json!({"id": id, "resource": body["resource"], "expirationDateTime": body["expirationDateTime"], "clientState": body["clientState"]}),
            )
        }
        ("GET", "/v1.0/me/mailFolders/inbox/messages/delta")
        | ("GET", "/v1.0/me/mailfolders('inbox')/messages/delta") => {
            // The delta token is how many changes the round had seen; one page a round.
            let from: usize = request
                .query_param("$deltatoken")
                .map_or(0, |token| token.parse().expect("our token"));
            let value: Vec<Value> = graph.inbox[from..]
                .iter()
                .map(|(id, modified)| message(id, modified))
                .collect();
            let link = format!(
                "{}/v1.0/me/mailfolders('inbox')/messages/delta?$deltatoken={}",
                graph.base,
                graph.inbox.len()
            );
            ScriptedResponse::json(&json!({"value": value, "@odata.deltaLink": link}))
        }
        _ => ScriptedResponse::with_status(404, &json!({"error": {"code": "itemNotFound"}})),
    }
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
async fn a_missed_notification_forces_the_microsoft_connection_s_message_poll() {
    let h = harness_with(AuthServerConfig::default(), &catalog_extra()).await;
    let graph = Arc::new(Mutex::new(Graph {
        base: h.server.provider_api_base(),
        inbox: vec![("AAMkAD-1".into(), "2024-03-01T09:00:00Z".into())],
        ..Graph::default()
    }));
    let served = graph.clone();
    h.server
        .serve_provider_api(move |request| serve(request, &served));
    let secrets = InMemorySecretSource::default();
    secrets.put(
        "junction/webhooks/fakeauth",
        json!({"signing_secrets": [CLIENT_STATE]}).to_string(),
    );
    let client = OutboundClient::new(
        h.vault.catalog(),
        h.vault.clone(),
        Arc::new(InMemorySharedState::default()),
        h.clock.clone(),
    );
    let jobs = Arc::new(InMemorySyncJobStore::default());
    let subscriptions = Arc::new(InMemorySubscriptionStore::default());
    let manager = SubscriptionManager::new(SubscriptionPorts {
        catalog: h.vault.catalog(),
        client: client.clone(),
        vault: h.vault.clone(),
        store: subscriptions.clone(),
        secrets: Arc::new(secrets),
        jobs: Some(jobs.clone()),
        bus: h.bus.clone(),
        clock: h.clock.clone(),
        settings: SubscriptionSettings {
            webhook_base_url: Some("https://hub.example.com/webhooks/".to_owned()),
            secret_prefix: "junction".to_owned(),
            table: "subscriptions".to_owned(),
            ..SubscriptionSettings::default()
        },
    });

    // GIVEN a connection made through the connect flow, whose setups create the sync jobs
    // (as the oauth function's do) and the subscription
    let flow = h.flow.clone().with_setup(Arc::new(ConnectionSetups(vec![
        Arc::new(SyncJobSetup::new(jobs.clone(), h.vault.catalog())) as Arc<dyn ConnectionSetup>,
        Arc::new(manager.clone()) as Arc<dyn ConnectionSetup>,
    ])));
    let query = h.authorize().await;
    let connection = match flow
        .callback("fakeauth", &query, BASE)
        .await
        .expect("callback")
    {
        junction_oauth::CallbackOutcome::Connected { connection_id, .. } => connection_id,
        other => panic!("not connected: {other:?}"),
    };
    let key = job_key(&connection, "messages");
    let job = jobs
        .get(&key)
        .await
        .expect("store")
        .expect("a sync job at connect");
    assert_eq!(job.interval_seconds, 900);
    let subscription = subscriptions
        .get(&connection)
        .await
        .expect("store")
        .and_then(|record| record.subscription_id)
        .expect("a subscription at connect");

    // AND its first sync ran: one message, the delta link kept, next due in 900 s
    let queue = Arc::new(InMemoryEventQueue::default());
    let worker = PollWorker::new(
        jobs.clone(),
        queue.clone(),
        h.clock.clone(),
        Some(h.vault.clone()),
    );
    let poller = pollers::build("microsoft-messages", client).expect("registered");
    let deadline = || Instant::now() + Duration::from_secs(60);
    let outcome = worker
        .run(&key, poller.as_ref(), deadline())
        .await
        .expect("run");
    assert_eq!(
        outcome,
        RunOutcome::Done {
            pages: 1,
            records: 1
        }
    );
    let now = h.clock.now().unix_timestamp();
    assert_eq!(
        jobs.get(&key).await.expect("store").expect("job").due_at,
        now + 900
    );

    // WHEN a message arrives whose notification Graph could not deliver: `missed`
    graph
        .lock()
        .expect("graph")
        .inbox
        .push(("AAMkAD-2".into(), "2024-03-01T09:05:00Z".into()));
    h.clock.advance(time::Duration::seconds(60));
    let outcomes = manager
        .handle_lifecycle("fakeauth", &lifecycle("missed", &subscription), deadline())
        .await
        .expect("lifecycle");

    // THEN the message poll is due now, and its run brings the missed message
    assert_eq!(outcomes, [Outcome::Reconciled(1)]);
    let now = h.clock.now().unix_timestamp();
    assert_eq!(
        jobs.get(&key).await.expect("store").expect("job").due_at,
        now
    );
    let outcome = worker
        .run(&key, poller.as_ref(), deadline())
        .await
        .expect("run");
    assert_eq!(
        outcome,
        RunOutcome::Done {
            pages: 1,
            records: 1
        }
    );
    let sent = queue.messages();
    let ids: Vec<&str> = sent
        .iter()
        .filter_map(|message| message.attributes.get(attribute::EVENT_ID))
        .map(String::as_str)
        .collect();
    assert_eq!(
        ids,
        [
            "message:AAMkAD-1:2024-03-01T09:00:00Z",
            "message:AAMkAD-2:2024-03-01T09:05:00Z"
        ]
    );
    assert!(
        sent.iter()
            .all(|m| m.attributes.get(attribute::CONNECTION) == Some(&connection))
    );
}
