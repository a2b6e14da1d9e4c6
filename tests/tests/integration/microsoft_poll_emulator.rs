//! Microsoft Graph's `missed` → reconcile through the poll path, with the sync jobs in
//! DynamoDB and the poll and ingest queues in SQS (the emulator's): a Microsoft
//! connection (microsoft.toml's real `[api]` error rules, `[polling]` and
//! `[subscription]`, its OAuth and API pointed at the fake provider on loopback) gets
//! its `microsoft-messages` job at connect; the scheduler hands it to the poll queue,
//! the poll runner pages Graph's message delta into the ingest queue, and the consumer
//! normalizes each message into a `message_group.updated` CloudEvent (its conversation) naming the tenant and the
//! connection. A `missed` lifecycle notification makes the job due again, and the next
//! tick brings the message whose change notification Graph could not deliver.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use fake_provider::{ApiRequest, AuthServerConfig, FakeAuthServer, ScriptedResponse};
use serde_json::{Value, json};

use junction_aws::clock::FixedClock;
use junction_aws::events::{CloudEvent, InMemoryEventBus};
use junction_aws::payloads::InMemoryPayloadStore;
use junction_aws::queue::{InMemoryRetryScheduler, SqsEventQueue};
use junction_aws::retry::Backoff;
use junction_aws::secrets::InMemorySecretSource;
use junction_catalog::Catalog;
use junction_oauth::ConnectionSetup;
use junction_oauth::testing::{BASE, harness_over, start_server};
use junction_outbound::{InMemorySharedState, OutboundClient};
use junction_pipeline::accounts::{AccountConnection, InMemoryAccountIndex};
use junction_pipeline::consumer::{Consumer, InboundMessage, Ports};
use junction_pipeline::idempotency::{Idempotency, IdempotencyPolicy, InMemoryIdempotencyStore};
use junction_pipeline::records::InMemoryRecordStore;
use junction_polling::{
    DynamoSyncJobStore, PollRunner, PollScheduler, PollWorker, RunOutcome, SyncJobSetup,
    SyncJobStore, job_key,
};
use junction_subscriptions::{
    ConnectionSetups, InMemorySubscriptionStore, Outcome, SubscriptionManager, SubscriptionPorts,
    SubscriptionSettings, SubscriptionStore,
};
use junction_tests::emulator;

const GRAPH: &str = include_str!("../../../shared/catalog/providers/microsoft.toml");
const CLIENT_STATE: &str = "graph-client-state-0123";

/// A `microsoft` entry: the fake provider's OAuth fields, an `[api]` on its loopback API
/// with microsoft.toml's error rules, and microsoft.toml from `[polling]` on.
fn catalog(server: &FakeAuthServer) -> &'static Catalog {
    let (_, from_polling) = GRAPH
        .split_once("\n[polling]\n")
        .expect("microsoft.toml polls");
    let start = GRAPH.find("error_rules = [").expect("error rules");
    let end = GRAPH[start..].find("\n]").expect("rules end") + start + 2;
    let text = format!(
        "id = \"microsoft\"\nname = \"Microsoft Graph\"\ndocs = \"https://learn.microsoft.com/graph\"\napi_version = \"v1.0\"\n\n[oauth]\n{}\n\n[api]\nbase_url = \"{}\"\nrate_limit = {{ requests_per_second = 100.0, burst = 20, scope = \"connection\" }}\n{}\n\n[polling]\n{from_polling}",
        server.oauth_catalog_fields(),
        server.provider_api_base(),
        &GRAPH[start..end]
    );
    let catalog = Catalog::from_files_with_rules(
        &[("microsoft.toml", text.as_str())],
        junction_catalog::EndpointRules::LoopbackHttpForTests,
    )
    .expect("catalog");
    Box::leak(Box::new(catalog))
}

/// Graph: subscriptions, and the Inbox as (id, receivedDateTime) in arrival order; a
/// delta token is how many messages the last round had seen.
#[derive(Debug, Default)]
struct Graph {
    base: String,
    subscriptions: Vec<String>,
    inbox: Vec<(String, String)>,
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
            let from: usize = request
                .query_param("$deltatoken")
                .map_or(0, |token| token.parse().expect("our token"));
            let value: Vec<Value> = graph.inbox[from..]
                .iter()
                .map(|(id, at)| {
                    json!({
                        "@odata.type": "#microsoft.graph.message",
                        "@odata.etag": format!("W/\"CQAAABYAAAARn2vd{id}\""),
                        "id": id,
                        "subject": format!("About {id}"),
                        "bodyPreview": "Hello",
                        "receivedDateTime": at,
                        "lastModifiedDateTime": at,
                        "conversationId": format!("conv-{id}"),
                        "from": {"emailAddress": {"name": "Dana Swope", "address": "danas@contoso.com"}},
                        "toRecipients": [{"emailAddress": {"name": "Me", "address": "me@contoso.com"}}],
                        "ccRecipients": []
                    })
                })
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

use crate::polling_emulator::sync_jobs_table;

async fn queue(aws: &aws_config::SdkConfig, name: &str) -> String {
    aws_sdk_sqs::Client::new(aws)
        .create_queue()
        .queue_name(name)
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url")
}

/// Every message on the queue (received and deleted), as the consumer gets them.
async fn drain(aws: &aws_config::SdkConfig, url: &str) -> Vec<InboundMessage> {
    let sqs = aws_sdk_sqs::Client::new(aws);
    let mut messages = Vec::new();
    loop {
        let batch = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive")
            .messages
            .unwrap_or_default();
        if batch.is_empty() {
            return messages;
        }
        for message in batch {
            let receipt = message.receipt_handle.clone().unwrap_or_default();
            let attributes: BTreeMap<String, String> = message
                .message_attributes
                .unwrap_or_default()
                .into_iter()
                .map(|(name, value)| (name, value.string_value.unwrap_or_default()))
                .collect();
            messages.push(InboundMessage {
                message_id: message.message_id.unwrap_or_default(),
                receipt_handle: receipt.clone(),
                body: message.body.unwrap_or_default(),
                attributes,
                receive_count: 1,
            });
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(receipt)
                .send()
                .await
                .expect("delete");
        }
    }
}

/// The consumer over memory, publishing to `bus`, knowing `connection` as `tenant`'s.
fn consumer(
    bus: Arc<InMemoryEventBus>,
    tenant: &str,
    connection: &str,
) -> Consumer<Arc<InMemoryIdempotencyStore>> {
    let accounts = Arc::new(InMemoryAccountIndex::default());
    accounts.connect(
        AccountConnection {
            tenant: tenant.into(),
            connection: connection.into(),
            created_at: 1_800_000_000,
        },
        None,
    );
    Consumer::new(
        Catalog::embedded().expect("the embedded catalog"),
        Idempotency::new(
            Arc::new(InMemoryIdempotencyStore::default()),
            IdempotencyPolicy::default(),
        ),
        Ports {
            records: Arc::new(InMemoryRecordStore::default()),
            bus,
            payloads: Arc::new(InMemoryPayloadStore::default()),
            retries: Arc::new(InMemoryRetryScheduler::default()),
            clock: Arc::new(FixedClock::at_unix(1_800_000_000)),
        },
        Backoff {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(900),
        },
    )
    .with_account_index(accounts)
}

/// One scheduler tick and the poll runner on what it queued: the runs' outcomes.
async fn tick(
    aws: &aws_config::SdkConfig,
    scheduler: &PollScheduler,
    runner: &PollRunner,
    poll_url: &str,
) -> Vec<RunOutcome> {
    scheduler.dispatch().await.expect("dispatch");
    let mut outcomes = Vec::new();
    for message in drain(aws, poll_url).await {
        let deadline = Instant::now() + Duration::from_secs(60);
        outcomes.push(runner.handle(&message.body, deadline).await.expect("run"));
    }
    outcomes
}

#[tokio::test]
async fn a_missed_notification_reconciles_a_microsoft_connection_into_events() {
    let (_moto, aws) = emulator().await;
    sync_jobs_table(&aws).await;
    let poll_url = queue(&aws, "poll").await;
    let ingest_url = queue(&aws, "ingest").await;

    let server = start_server("microsoft", AuthServerConfig::default()).await;
    let catalog = catalog(&server);
    let h = harness_over(server, catalog, &["microsoft"]);
    let graph = Arc::new(Mutex::new(Graph {
        base: h.server.provider_api_base(),
        inbox: vec![("AAMkAD-1".into(), "2027-01-15T09:00:00Z".into())],
        ..Graph::default()
    }));
    let served = graph.clone();
    h.server
        .serve_provider_api(move |request| serve(request, &served));

    let jobs: Arc<dyn SyncJobStore> = Arc::new(DynamoSyncJobStore::from_config(&aws, "sync-jobs"));
    let client = OutboundClient::new(
        catalog,
        h.vault.clone(),
        Arc::new(InMemorySharedState::default()),
        h.clock.clone(),
    );
    let secrets = InMemorySecretSource::default();
    secrets.put(
        "junction/webhooks/microsoft",
        json!({"signing_secrets": [CLIENT_STATE]}).to_string(),
    );
    let subscriptions = Arc::new(InMemorySubscriptionStore::default());
    let manager = SubscriptionManager::new(SubscriptionPorts {
        catalog,
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

    // GIVEN tenant-1 connects a Microsoft account: the setups create its sync job (naming
    // the tenant, as the oauth function's do) and its subscription
    let query = h.authorize_to("microsoft", None).await;
    let flow = h.flow.clone().with_setup(Arc::new(ConnectionSetups(vec![
        Arc::new(SyncJobSetup::new(jobs.clone(), catalog).with_connections(h.connections.clone()))
            as Arc<dyn ConnectionSetup>,
        Arc::new(manager.clone()) as Arc<dyn ConnectionSetup>,
    ])));
    let connection = match flow
        .callback("microsoft", &query, BASE)
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
        .expect("jobs")
        .expect("a job at connect");
    assert_eq!(
        (job.provider.as_str(), job.tenant.as_deref()),
        ("microsoft", Some("tenant-1"))
    );
    let subscription = subscriptions
        .get(&connection)
        .await
        .expect("store")
        .and_then(|record| record.subscription_id)
        .expect("a subscription at connect");

    let scheduler = PollScheduler::new(
        jobs.clone(),
        Arc::new(SqsEventQueue::from_config(&aws, &poll_url).expect("sqs")),
        h.clock.clone(),
    );
    let runner = PollRunner::new(
        PollWorker::new(
            jobs.clone(),
            Arc::new(SqsEventQueue::from_config(&aws, &ingest_url).expect("sqs")),
            h.clock.clone(),
            Some(h.vault.clone()),
        ),
        catalog,
        client,
        Arc::new(SqsEventQueue::from_config(&aws, &poll_url).expect("sqs")),
    );
    let bus = Arc::new(InMemoryEventBus::default());
    let consumer = consumer(bus.clone(), "tenant-1", &connection);
    let publish = |messages: Vec<InboundMessage>| {
        let consumer = &consumer;
        async move {
            for message in messages {
                consumer.process(message).await;
            }
        }
    };

    // WHEN the first tick runs THEN the Inbox's message is a message_group event of the
    // tenant's connection
    let outcomes = tick(&aws, &scheduler, &runner, &poll_url).await;
    assert_eq!(
        outcomes,
        [RunOutcome::Done {
            pages: 1,
            records: 1
        }]
    );
    publish(drain(&aws, &ingest_url).await).await;
    let stamped = |events: &[CloudEvent]| -> Vec<(String, String, Option<String>, Option<String>)> {
        events
            .iter()
            .map(|e| {
                (
                    e.event_type.clone(),
                    e.data["id"].as_str().unwrap_or_default().to_owned(),
                    e.tenant.clone(),
                    e.connection.clone(),
                )
            })
            .collect()
    };
    let first = bus.events();
    assert_eq!(
        stamped(&first),
        [(
            "message_group.updated".to_owned(),
            "conv-AAMkAD-1".to_owned(),
            Some("tenant-1".to_owned()),
            Some(connection.clone())
        )]
    );
    assert!(
        tick(&aws, &scheduler, &runner, &poll_url).await.is_empty(),
        "not due again before its interval"
    );

    // WHEN a message arrives whose notification Graph could not deliver: `missed`
    graph
        .lock()
        .expect("graph")
        .inbox
        .push(("AAMkAD-2".into(), "2027-01-15T09:05:00Z".into()));
    h.clock.advance(time::Duration::seconds(60));
    let outcomes = manager
        .handle_lifecycle(
            "microsoft",
            &json!({"value": [{
                "subscriptionId": subscription,
                "subscriptionExpirationDateTime": "2027-01-20T08:00:00.0000000Z",
                "tenantId": "bb8775a4-4d8c-42cf-a1d4-4d58c2bb668f",
                "clientState": CLIENT_STATE,
                "lifecycleEvent": "missed",
            }]}),
            Instant::now() + Duration::from_secs(10),
        )
        .await
        .expect("lifecycle");
    assert_eq!(outcomes, [Outcome::Reconciled(1)]);

    // THEN the next tick polls the Inbox's delta, and the missed message is published
    let outcomes = tick(&aws, &scheduler, &runner, &poll_url).await;
    assert_eq!(
        outcomes,
        [RunOutcome::Done {
            pages: 1,
            records: 1
        }]
    );
    publish(drain(&aws, &ingest_url).await).await;
    let events = bus.events();
    assert_eq!(
        stamped(&events[first.len()..]),
        [(
            "message_group.updated".to_owned(),
            "conv-AAMkAD-2".to_owned(),
            Some("tenant-1".to_owned()),
            Some(connection.clone())
        )]
    );
}
