//! Events name their tenant and connection (issue 24, part 4), on the emulator with the
//! tables, the key and the bus `template.yaml` creates: a tenant connects an account
//! through the real connect flow (a loopback authorization server whose token response
//! names the account), and webhooks for that account go through the consumer onto the
//! EventBridge bus (observed through a rule targeting an SQS queue) stamped with the
//! tenant and the connection; a delivery for another account goes out without them and
//! is counted as unmatched; a second tenant on the same account gets its own copy; a
//! disconnect removes the index entry.

use std::{sync::Arc, time::Duration};

use aws_sdk_dynamodb::types::AttributeValue;

use junction_aws::clock::{FixedClock, SystemClock};
use junction_aws::crypto::KmsKeyService;
use junction_aws::events::{CloudEvent, EventBridgeBus, InMemoryEventBus};
use junction_aws::payloads::S3PayloadStore;
use junction_aws::queue::{InMemoryRetryScheduler, attribute};
use junction_aws::retry::Backoff;
use junction_aws::secrets::SecretsManagerSource;
use junction_oauth::testing::{BASE, RETURN_TO, fake_catalog, flow_settings};
use junction_oauth::{
    ConnectFlow, ConnectSessions, ConnectionStore, DynamoConnectSessionStore,
    DynamoConnectionStore, DynamoStateStore, ProviderClient, SecretCredentials, TokenVault,
    VaultSettings, sample_connection,
};
use junction_pipeline::accounts::{
    AccountIndex, DynamoAccountIndex, PROVIDER_ACCOUNT_ATTRIBUTE, PROVIDER_ACCOUNT_INDEX,
};
use junction_pipeline::consumer::{Consumer, InboundMessage, ItemResult, Ports};
use junction_pipeline::idempotency::{DynamoIdempotencyStore, Idempotency, IdempotencyPolicy};
use junction_pipeline::records::DynamoRecordStore;
use local_stack::emulator::{Moto, StackDescription, deploy, repo_root};

struct Deployed {
    _moto: Moto,
    aws: aws_config::SdkConfig,
    stack: StackDescription,
}

impl Deployed {
    fn resource(&self, logical_id: &str) -> String {
        self.stack.resources[logical_id].clone()
    }
}

async fn deployed() -> Deployed {
    let moto =
        Moto::start(&repo_root()).expect("the emulator starts (run infra/test to install it)");
    let endpoint = moto.endpoint().to_owned();
    let stack = tokio::task::spawn_blocking(move || {
        deploy(&repo_root(), &endpoint, "junction-accounts", &[]).expect("the template deploys")
    })
    .await
    .expect("deploy");
    let aws = moto
        .sdk_config()
        .await
        .into_builder()
        .timeout_config(junction_aws::config::aws_timeouts())
        .build();
    Deployed {
        _moto: moto,
        aws,
        stack,
    }
}

/// The connect flow over the stack's tables and key, for the provider `fakeauth`, whose
/// token response names the account (`account_id`).
struct Connector {
    /// Kept running for the test's connects.
    _server: fake_provider::FakeAuthServer,
    flow: ConnectFlow,
    sessions: ConnectSessions,
    vault: TokenVault,
    http: reqwest::Client,
}

async fn connector(d: &Deployed) -> Connector {
    let server = junction_oauth::testing::start_server(
        "fakeauth",
        fake_provider::AuthServerConfig::default(),
    )
    .await;
    aws_sdk_secretsmanager::Client::new(&d.aws)
        .create_secret()
        .name("junction/oauth/fakeauth")
        .secret_string(
            r#"{"client_id":"junction-test-client","client_secret":"junction-test-secret"}"#,
        )
        .send()
        .await
        .expect("client credentials stored");
    let vault = TokenVault::new(
        fake_catalog(&server, "account_id = \"/account_id\"\n"),
        Arc::new(DynamoConnectionStore::from_config(
            &d.aws,
            d.resource("ConnectionsTable"),
        )),
        Arc::new(KmsKeyService::from_config(&d.aws, d.resource("TokenKey"))),
        Arc::new(SecretCredentials::new(
            SecretsManagerSource::from_config(&d.aws),
            "junction",
        )),
        ProviderClient::new(),
        Arc::new(InMemoryEventBus::default()),
        Arc::new(FixedClock::at_unix(1_800_000_000)),
        VaultSettings::default(),
    );
    let session_store = Arc::new(DynamoConnectSessionStore::from_config(
        &d.aws,
        d.resource("ConnectSessionsTable"),
    ));
    Connector {
        flow: ConnectFlow::new(
            vault.clone(),
            Arc::new(DynamoStateStore::from_config(
                &d.aws,
                d.resource("OAuthStateTable"),
            )),
            session_store.clone(),
            flow_settings(),
        ),
        sessions: ConnectSessions::new(vault.clone(), session_store, flow_settings()),
        _server: server,
        vault,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
    }
}

impl Connector {
    /// A connect session for `tenant` → start → the authorization server → callback: the
    /// new connection's id.
    async fn connect(&self, tenant: &str) -> String {
        junction_tests::connect_through(
            &self.flow,
            &self.sessions,
            &self.http,
            "fakeauth",
            tenant,
            RETURN_TO,
            BASE,
        )
        .await
    }
}

/// A rule on the stack's bus sending every Junction event to a new SQS queue: its URL.
async fn observe_bus(d: &Deployed) -> String {
    let sqs = aws_sdk_sqs::Client::new(&d.aws);
    let url = sqs
        .create_queue()
        .queue_name("observed")
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url");
    let bus = d.stack.outputs["EventBusName"].clone();
    let events = aws_sdk_eventbridge::Client::new(&d.aws);
    events
        .put_rule()
        .name("everything")
        .event_bus_name(&bus)
        .event_pattern(r#"{"source":[{"prefix":"junction/"}]}"#)
        .send()
        .await
        .expect("rule");
    events
        .put_targets()
        .rule("everything")
        .event_bus_name(&bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("observed")
                .arn("arn:aws:sqs:us-east-1:123456789012:observed")
                .build()
                .expect("target"),
        )
        .send()
        .await
        .expect("target");
    url
}

/// The next `count` CloudEvents on the observed queue (the EventBridge events' `detail`,
/// as JSON), in the order of their provider event ids and tenants.
async fn observed(d: &Deployed, url: &str, count: usize) -> Vec<serde_json::Value> {
    let sqs = aws_sdk_sqs::Client::new(&d.aws);
    let mut found = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while found.len() < count && std::time::Instant::now() < deadline {
        let batch = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive")
            .messages
            .unwrap_or_default();
        for message in batch {
            let envelope: serde_json::Value =
                serde_json::from_str(message.body().unwrap_or_default()).expect("envelope");
            found.push(envelope["detail"].clone());
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(message.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("delete");
        }
    }
    assert_eq!(found.len(), count, "{found:?}");
    found.sort_by_key(|event| {
        (
            event["providereventid"].as_str().map(str::to_owned),
            event["tenant"].as_str().map(str::to_owned),
        )
    });
    found
}

/// The consumer as the event-consumer binary builds it, on the stack's tables and bus,
/// reading the account index without a cache (so each phase sees the last connect).
fn consumer(d: &Deployed) -> Consumer<DynamoIdempotencyStore> {
    Consumer::new(
        junction_catalog::Catalog::embedded().expect("catalog"),
        Idempotency::new(
            DynamoIdempotencyStore::from_config(&d.aws, d.resource("IdempotencyTable")),
            IdempotencyPolicy::default(),
        ),
        Ports {
            records: Arc::new(DynamoRecordStore::from_config(
                &d.aws,
                d.resource("RecordsTable"),
            )),
            bus: Arc::new(EventBridgeBus::from_config(
                &d.aws,
                d.stack.outputs["EventBusName"].clone(),
            )),
            payloads: Arc::new(S3PayloadStore::from_config(
                &d.aws,
                d.resource("PayloadBucket"),
            )),
            retries: Arc::new(InMemoryRetryScheduler::default()),
            clock: Arc::new(SystemClock),
        },
        Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(4),
        },
    )
    .with_account_index(Arc::new(DynamoAccountIndex::from_config(
        &d.aws,
        d.resource("ConnectionsTable"),
    )))
}

/// A verified `fakeauth` webhook as the ingress enqueues it, for `account`.
fn webhook(event_id: &str, account: &str) -> InboundMessage {
    let attributes = [
        (attribute::PROVIDER, "fakeauth"),
        (attribute::EVENT_ID, event_id),
        (attribute::EVENT_TYPE, "thing.changed"),
        (attribute::ACCOUNT, account),
        (attribute::BODY_ENCODING, "utf8"),
        (attribute::RECEIVED_AT, "2026-12-07T10:00:00.000Z"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect();
    InboundMessage {
        message_id: format!("m-{event_id}"),
        receipt_handle: format!("rh-{event_id}"),
        body: format!(r#"{{"id":"{event_id}","type":"thing.changed","account":"{account}"}}"#),
        attributes,
        receive_count: 1,
    }
}

fn metrics_line(outcomes: &[junction_pipeline::consumer::ItemOutcome]) -> serde_json::Value {
    let lines = junction_pipeline::log::consumed_lines(outcomes, false);
    let first = lines.split(|b| *b == b'\n').next().expect("a line");
    serde_json::from_slice(first).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_for_a_connected_account_name_its_tenant_and_connection() {
    let d = deployed().await;
    let connector = connector(&d).await;
    let account = fake_provider::DEFAULT_ACCOUNT;
    let acme = connector.connect("acme").await;

    // The index entry: keys and tenant, never the tokens or the connection's document.
    let entries = aws_sdk_dynamodb::Client::new(&d.aws)
        .query()
        .table_name(d.resource("ConnectionsTable"))
        .index_name(PROVIDER_ACCOUNT_INDEX)
        .key_condition_expression("#account = :account")
        .expression_attribute_names("#account", PROVIDER_ACCOUNT_ATTRIBUTE)
        .expression_attribute_values(":account", AttributeValue::S(format!("fakeauth#{account}")))
        .send()
        .await
        .expect("query")
        .items
        .unwrap_or_default();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let mut attributes: Vec<&str> = entries[0].keys().map(String::as_str).collect();
    attributes.sort_unstable();
    assert_eq!(
        attributes,
        ["created_at", "id", PROVIDER_ACCOUNT_ATTRIBUTE, "tenant"]
    );
    assert_eq!(entries[0]["id"], AttributeValue::S(acme.clone()));

    let url = observe_bus(&d).await;
    let consumer = consumer(&d);
    let outcomes = consumer
        .process_batch(vec![
            webhook("evt_matched", account),
            webhook("evt_unmatched", "someone-else"),
        ])
        .await;
    assert!(
        outcomes.iter().all(|o| o.result == ItemResult::Processed),
        "{outcomes:?}"
    );
    assert!(
        !outcomes[0].unmatched && outcomes[1].unmatched,
        "{outcomes:?}"
    );
    assert_eq!(metrics_line(&outcomes)["UnmatchedDeliveries"], 1);

    let events = observed(&d, &url, 2).await;
    let (matched, unmatched) = (&events[0], &events[1]);
    assert_eq!(matched["providereventid"], "evt_matched");
    assert_eq!(matched["tenant"], "acme");
    assert_eq!(matched["connection"], acme.as_str());
    assert_eq!(unmatched["providereventid"], "evt_unmatched");
    assert!(
        unmatched.get("tenant").is_none() && unmatched.get("connection").is_none(),
        "{unmatched}"
    );
    let parsed: CloudEvent = serde_json::from_value(matched.clone()).expect("a CloudEvent");
    assert_eq!(parsed.tenant.as_deref(), Some("acme"));

    // A second tenant connects the same account: each tenant gets its copy.
    let beta = connector.connect("beta").await;
    let outcome = consumer.process(webhook("evt_both", account)).await;
    assert_eq!(outcome.result, ItemResult::Processed, "{outcome:?}");
    assert_eq!(outcome.published, 2);
    let events = observed(&d, &url, 2).await;
    let stamps: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["tenant"].as_str().unwrap_or_default(),
                e["connection"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(stamps, [("acme", acme.as_str()), ("beta", beta.as_str())]);
    assert_ne!(events[0]["id"], events[1]["id"]);

    // A polled record names its connection; the consumer reads that connection's
    // tenant with the GetItem of id and tenant alone that its role allows.
    let index = DynamoAccountIndex::from_config(&d.aws, d.resource("ConnectionsTable"));
    assert_eq!(
        index.tenant_of(&beta).await.expect("read").as_deref(),
        Some("beta")
    );
    assert_eq!(index.tenant_of("conn_never").await.expect("read"), None);

    // acme disconnects: its index entry goes with the connection.
    connector
        .vault
        .disconnect(&acme, true)
        .await
        .expect("disconnected");
    let left = index
        .connections_of("fakeauth", account)
        .await
        .expect("read");
    assert_eq!(
        left.iter().map(|c| c.tenant.as_str()).collect::<Vec<_>>(),
        ["beta"]
    );
    let outcome = consumer.process(webhook("evt_after", account)).await;
    assert_eq!(outcome.published, 1);
    let events = observed(&d, &url, 1).await;
    assert_eq!(events[0]["tenant"], "beta");
}

/// HubSpot: a connection stored with the hub id its token response named (`hub_id`
/// 62515, read as `62515`: junction-oauth's provider_account tests) is indexed as
/// `hubspot#62515`, and a webhook naming that portal (`portalId` 62515, which the ingress
/// reads as `62515`: junction-webhooks' ingress tests) is stamped with its tenant and
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hubspot_delivery_names_the_tenant_that_connected_its_portal() {
    let d = deployed().await;
    let store = DynamoConnectionStore::from_config(&d.aws, d.resource("ConnectionsTable"));
    let mut connection = sample_connection("conn_hubspot", "acme", 1_800_000_000);
    connection.provider = "hubspot".into();
    connection.account_id = Some("62515".into());
    store.insert(&connection).await.expect("stored");

    let url = observe_bus(&d).await;
    let body = r#"[{"eventId":4001,"subscriptionId":2415867,"portalId":62515,"appId":1160452,"occurredAt":1800000000000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeFlag":"CREATED","changeSource":"CRM"}]"#;
    let delivery = |event_id: &str, account: &str| {
        let attributes = [
            (attribute::PROVIDER, "hubspot"),
            (attribute::EVENT_ID, event_id),
            (attribute::ACCOUNT, account),
            (attribute::BODY_ENCODING, "utf8"),
            (attribute::RECEIVED_AT, "2026-12-07T10:00:00.000Z"),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
        InboundMessage {
            message_id: format!("m-{event_id}"),
            receipt_handle: format!("rh-{event_id}"),
            body: body.replace("62515", account),
            attributes,
            receive_count: 1,
        }
    };
    let outcomes = consumer(&d)
        .process_batch(vec![
            delivery("hs-matched", "62515"),
            delivery("hs-unmatched", "99999"),
        ])
        .await;
    assert!(
        outcomes.iter().all(|o| o.result == ItemResult::Processed),
        "{outcomes:?}"
    );
    assert!(
        !outcomes[0].unmatched && outcomes[1].unmatched,
        "{outcomes:?}"
    );
    let events = observed(&d, &url, 2).await;
    let stamps: Vec<(Option<&str>, Option<&str>)> = events
        .iter()
        .map(|e| (e["tenant"].as_str(), e["connection"].as_str()))
        .collect();
    assert!(
        stamps.contains(&(Some("acme"), Some("conn_hubspot"))) && stamps.contains(&(None, None)),
        "{events:?}"
    );
}
