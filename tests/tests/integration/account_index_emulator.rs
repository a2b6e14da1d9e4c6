//! Events name their tenant and connection (issue 24, part 4), on the emulator with the
//! tables, the key and the bus `template.yaml` creates: a tenant connects an account
//! through the real connect flow (a loopback authorization server whose token response
//! names the account), and webhooks for that account go through the consumer onto the
//! EventBridge bus (observed through a rule targeting an SQS queue) stamped with the
//! tenant and the connection; a delivery for another account goes out without them and
//! is counted as unmatched; a second tenant on the same account gets its own copy; a
//! disconnect removes the index entry. GitHub and Gmail connections record the account
//! their account request verified (an installation the user can access, the profile's
//! mailbox) and their deliveries, through the ingress, are stamped; a spoofed
//! `installation_id` records nothing.

use std::{sync::Arc, time::Duration};

use aws_sdk_dynamodb::types::AttributeValue;

use junction_aws::clock::{FixedClock, SystemClock};
use junction_aws::crypto::KmsKeyService;
use junction_aws::events::{CloudEvent, EventBridgeBus, InMemoryEventBus};
use junction_aws::payloads::InMemoryPayloadStore;
use junction_aws::payloads::S3PayloadStore;
use junction_aws::queue::InMemoryEventQueue;
use junction_aws::queue::{InMemoryRetryScheduler, attribute};
use junction_aws::retry::Backoff;
use junction_aws::secrets::SecretsManagerSource;
use junction_aws::secrets::{CachePolicy, InMemorySecretSource, WebhookSecrets};
use junction_catalog::Catalog;
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
use junction_webhooks::{Ingress, IngressConfig, SigningSecret, WebhookRequest, sign_into};
use local_stack::emulator::{Moto, StackDescription, repo_root};

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
    let (moto, aws, stack) = junction_tests::deployed("junction-accounts").await;
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

impl Connector {
    /// The flow over the stack's tables, key and secrets, with `catalog`'s providers
    /// served by `server`; each of `providers` gets the test client's credentials.
    async fn over(
        d: &Deployed,
        catalog: &'static Catalog,
        server: fake_provider::FakeAuthServer,
        providers: &[&str],
    ) -> Connector {
        let secrets = aws_sdk_secretsmanager::Client::new(&d.aws);
        for provider in providers {
            secrets
                .create_secret()
                .name(format!("junction/oauth/{provider}"))
                .secret_string(
                    r#"{"client_id":"junction-test-client","client_secret":"junction-test-secret"}"#,
                )
                .send()
                .await
                .expect("client credentials stored");
        }
        let vault = TokenVault::new(
            catalog,
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
}

async fn connector(d: &Deployed) -> Connector {
    let server = junction_oauth::testing::start_server(
        "fakeauth",
        fake_provider::AuthServerConfig::default(),
    )
    .await;
    Connector::over(
        d,
        fake_catalog(&server, "account_id = \"/account_id\"\n"),
        server,
        &["fakeauth"],
    )
    .await
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
    let mut found =
        junction_tests::bus_events(&d.aws, url, Duration::from_secs(30), |n| n >= count).await;
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

/// A GitHub App installation the test user can access, and one they cannot.
const INSTALLATION: u64 = 79_929_171;
const OTHERS_INSTALLATION: u64 = 424_242;

/// `github` and `gmail` entries whose OAuth endpoints are the loopback server's and whose
/// `[account_request]` is the built-in entries' (checked against them below), with the
/// provider API's address in place of api.github.com and gmail.googleapis.com.
fn github_and_gmail_catalog(server: &fake_provider::FakeAuthServer) -> &'static Catalog {
    let oauth = server.oauth_catalog_fields();
    let api = server.provider_api_base();
    let entry = |id: &str, request: &str| {
        format!(
            "id = \"{id}\"\nname = \"{id}\"\ndocs = \"https://example.com/{id}\"\n\n[oauth]\n{oauth}\n[account_request]\n{request}"
        )
    };
    let github = entry(
        "github",
        &format!(
            "url = \"{api}/user/installations?per_page=100\"\nheaders = {{ Accept = \"application/vnd.github+json\" }}\nlist = \"/installations\"\naccount = \"/id\"\nchosen_by = \"installation_id\"\npagination = \"link_header\"\n"
        ),
    );
    let gmail = entry(
        "gmail",
        &format!(
            "url = \"{api}/gmail/v1/users/me/profile\"\naccount = \"/emailAddress\"\nlowercase = true\n"
        ),
    );
    let catalog = Catalog::from_files_with_rules(
        &[
            ("github.toml", github.as_str()),
            ("gmail.toml", gmail.as_str()),
        ],
        junction_catalog::EndpointRules::LoopbackHttpForTests,
    )
    .expect("catalog");
    let embedded = Catalog::embedded().expect("catalog");
    for id in ["github", "gmail"] {
        let (test, real) = (
            catalog.get(id).and_then(|p| p.account_request.as_ref()),
            embedded.get(id).and_then(|p| p.account_request.as_ref()),
        );
        let (Some(test), Some(real)) = (test, real) else {
            panic!("{id}: no account request");
        };
        assert_eq!(
            (
                &test.account,
                &test.list,
                &test.chosen_by,
                test.pagination,
                test.lowercase
            ),
            (
                &real.account,
                &real.list,
                &real.chosen_by,
                real.pagination,
                real.lowercase
            ),
            "{id}: the test's account request is the catalog's"
        );
        let (test_url, real_url) = (
            url::Url::parse(&test.url).expect("url"),
            url::Url::parse(&real.url).expect("url"),
        );
        assert!(
            test_url.path() == format!("/provider{}", real_url.path())
                && test_url.query() == real_url.query(),
            "{id}: {test_url} is {real_url} on the loopback server"
        );
    }
    Box::leak(Box::new(catalog))
}

/// Connects `tenant` at `provider` like [`junction_tests::connect_through`], with `extra`
/// added to the callback's query as the provider (or someone editing the URL) would.
async fn connect_with(
    connector: &Connector,
    provider: &str,
    tenant: &str,
    extra: &[(&str, &str)],
) -> String {
    use junction_oauth::{CallbackOutcome, CallbackQuery, ConnectSessionRequest, StartRequest};
    let minted = connector
        .sessions
        .mint(
            &ConnectSessionRequest {
                tenant: tenant.into(),
                provider: provider.into(),
                return_to: Some(RETURN_TO.into()),
                ..ConnectSessionRequest::default()
            },
            BASE,
        )
        .await
        .expect("session");
    let start = connector
        .flow
        .start(
            provider,
            &StartRequest {
                session: Some(minted.token.expose().to_owned()),
            },
            BASE,
        )
        .await
        .expect("start");
    let response = connector
        .http
        .get(&start.location)
        .send()
        .await
        .expect("authorize");
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("redirect to the callback")
        .to_owned();
    let mut pairs: Vec<(String, String)> = url::Url::parse(&location)
        .expect("url")
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    pairs.extend(
        extra
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
    );
    let binding_cookie = start
        .set_cookie
        .split(';')
        .next()
        .and_then(|p| p.split_once('='))
        .map(|(_, v)| v.to_owned());
    match connector
        .flow
        .callback(
            provider,
            &CallbackQuery {
                pairs,
                binding_cookie,
            },
            BASE,
        )
        .await
        .expect("callback")
    {
        CallbackOutcome::Connected { connection_id, .. } => connection_id,
        other => panic!("{other:?}"),
    }
}

/// The connect flow over the stack's tables and key for `github` and `gmail`, against a
/// loopback server that also answers the account requests: the test user can access
/// two installations, and their mailbox is `Ada.Lovelace@Example.com`.
async fn github_and_gmail_connector(d: &Deployed) -> Connector {
    let server = fake_provider::FakeAuthServer::start(fake_provider::AuthServerConfig {
        redirect_uris: vec![
            format!("{BASE}/oauth/github/callback"),
            format!("{BASE}/oauth/gmail/callback"),
        ],
        ..fake_provider::AuthServerConfig::default()
    })
    .await;
    server.serve_provider_api(|request| match request.path.as_str() {
        "/user/installations" => fake_provider::ScriptedResponse::json(&serde_json::json!({
            "total_count": 2,
            "installations": [
                {"id": INSTALLATION, "account": {"login": "acme-org"}, "target_type": "Organization"},
                {"id": 5, "account": {"login": "ada"}, "target_type": "User"}
            ]
        })),
        _ => fake_provider::ScriptedResponse::json(&serde_json::json!({
            "emailAddress": "Ada.Lovelace@Example.com",
            "messagesTotal": 10,
            "threadsTotal": 4,
            "historyId": "1234"
        })),
    });
    let catalog = github_and_gmail_catalog(&server);
    Connector::over(d, catalog, server, &["github", "gmail"]).await
}

/// The ingress as the webhook function builds it, over the built-in catalog with `gmail`
/// verified like GitHub (an HMAC of the body: a Google-signed push token cannot be made
/// here) and otherwise as built in, its `account` line copied from gmail.toml. Its queue.
fn ingress() -> (Ingress, Arc<InMemoryEventQueue>) {
    let gmail = std::fs::read_to_string(repo_root().join("shared/catalog/providers/gmail.toml"))
        .expect("gmail.toml");
    let account = gmail
        .lines()
        .find(|line| line.starts_with("account = "))
        .expect("gmail's [webhook] account");
    let overlay = format!(
        "[[provider]]\nid = \"gmail\"\nname = \"Gmail (HMAC stand-in)\"\ndocs = \"https://developers.google.com/workspace/gmail/api/guides/push\"\n[provider.webhook]\nverification_from = \"github\"\nevent_id = {{ json_pointer = \"/message/messageId\" }}\n{account}\n"
    );
    let catalog: &'static Catalog = Box::leak(Box::new(
        Catalog::embedded()
            .expect("catalog")
            .with_overlay("test", &overlay)
            .expect("overlay"),
    ));
    let secrets = Arc::new(InMemorySecretSource::default());
    for provider in ["github", "gmail"] {
        secrets.put(
            format!("junction/webhooks/{provider}"),
            format!(r#"{{"signing_secrets":["{WEBHOOK_SECRET}"]}}"#),
        );
    }
    let queue = Arc::new(InMemoryEventQueue::default());
    let ingress = Ingress::new(
        catalog,
        WebhookSecrets::new(secrets, "junction", CachePolicy::default()),
        queue.clone(),
        Arc::new(InMemoryPayloadStore::default()),
        Arc::new(SystemClock),
        IngressConfig::default(),
    );
    (ingress, queue)
}

const WEBHOOK_SECRET: &str = "account-index-webhook-secret";

/// `body` posted to `/webhooks/<provider>`, signed as GitHub signs (X-Hub-Signature-256).
fn signed_delivery(provider: &str, body: &[u8], extra: &[(&str, &str)]) -> WebhookRequest {
    let mut headers = http::HeaderMap::new();
    headers.insert("host", http::HeaderValue::from_static("hooks.example.com"));
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    for (name, value) in extra {
        headers.insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            http::HeaderValue::from_str(value).expect("value"),
        );
    }
    let spec = Catalog::embedded()
        .expect("catalog")
        .get("github")
        .and_then(|p| p.verification())
        .expect("GitHub's verification");
    let url = format!("https://hooks.example.com/webhooks/{provider}");
    sign_into(
        spec,
        &SigningSecret::new(WEBHOOK_SECRET),
        "POST",
        &url,
        &mut headers,
        body,
        time::OffsetDateTime::now_utc(),
    )
    .expect("signed");
    WebhookRequest {
        method: "POST".into(),
        provider: provider.into(),
        endpoint: None,
        path: format!("/webhooks/{provider}"),
        raw_query: String::new(),
        headers,
        body: body.to_vec(),
    }
}

/// Each delivery through the ingress; the messages it enqueued, as the consumer
/// receives them.
async fn through_ingress(requests: Vec<WebhookRequest>) -> Vec<InboundMessage> {
    let (ingress, queue) = ingress();
    for request in requests {
        let (response, outcome) = ingress.handle(request).await;
        assert_eq!(response.status, 200, "{outcome:?}");
    }
    queue
        .messages()
        .into_iter()
        .enumerate()
        .map(|(n, message)| InboundMessage {
            message_id: format!("m-{n}"),
            receipt_handle: format!("rh-{n}"),
            body: message.body,
            attributes: message.attributes,
            receive_count: 1,
        })
        .collect()
}

/// RFC 4648 §4 base64 with padding, as Pub/Sub encodes `message.data`.
fn base64_standard(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A Gmail push for `address` (`message.data` is base64 of `{"emailAddress","historyId"}`).
fn gmail_push(message_id: &str, address: &str) -> Vec<u8> {
    let data = base64_standard(
        serde_json::json!({"emailAddress": address, "historyId": "1234"})
            .to_string()
            .as_bytes(),
    );
    serde_json::json!({
        "message": {"data": data, "messageId": message_id, "publishTime": "2026-12-07T10:00:00.000Z"},
        "subscription": "projects/acme/subscriptions/gmail-push"
    })
    .to_string()
    .into_bytes()
}

/// GitHub and Gmail deliveries name the tenant and connection that connected their
/// installation or mailbox, end to end: the real connect flow records the account its
/// account request verified (a GitHub installation the user can access; the mailbox of
/// the Gmail profile, lowercased), the ingress reads the delivery's account (GitHub's
/// `installation.id`; the push's base64 `message.data`, decoded and lowercased), and the
/// consumer stamps the events. A callback naming an installation the user cannot access
/// (a spoofed `installation_id`) records nothing: that installation's deliveries stay
/// unmatched, not attributed to the tenant that sent the spoofed callback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_and_gmail_deliveries_name_the_tenant_that_connected_them() {
    let d = deployed().await;
    let connector = github_and_gmail_connector(&d).await;
    let installation = INSTALLATION.to_string();
    let github = connect_with(
        &connector,
        "github",
        "acme",
        &[
            ("installation_id", installation.as_str()),
            ("setup_action", "install"),
        ],
    )
    .await;
    let others = OTHERS_INSTALLATION.to_string();
    let spoofed = connect_with(
        &connector,
        "github",
        "mallory",
        &[
            ("installation_id", others.as_str()),
            ("setup_action", "install"),
        ],
    )
    .await;
    let gmail = connect_with(&connector, "gmail", "acme", &[]).await;

    let index = DynamoAccountIndex::from_config(&d.aws, d.resource("ConnectionsTable"));
    let tenants_of = |provider: &'static str, account: String| {
        let index = &index;
        async move {
            index
                .connections_of(provider, &account)
                .await
                .expect("read")
                .into_iter()
                .map(|c| (c.tenant, c.connection))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        tenants_of("github", installation.clone()).await,
        [("acme".to_owned(), github.clone())]
    );
    assert_eq!(
        tenants_of("github", others.clone()).await,
        [],
        "the spoofed installation is not indexed"
    );
    let stored = connector.vault.connection(&spoofed).await.expect("stored");
    assert_eq!(stored.account_id, None, "connected, without an account");
    assert_eq!(
        tenants_of("gmail", "ada.lovelace@example.com".to_owned()).await,
        [("acme".to_owned(), gmail.clone())]
    );

    let issue = |installation: u64| {
        serde_json::json!({
            "action": "opened",
            "issue": {"id": 1, "number": 7, "title": "Broken build"},
            "repository": {"id": 1296269, "full_name": "acme-org/app"},
            "installation": {"id": installation}
        })
        .to_string()
        .into_bytes()
    };
    let messages = through_ingress(vec![
        signed_delivery(
            "github",
            &issue(INSTALLATION),
            &[
                ("x-github-event", "issues"),
                ("x-github-delivery", "gh-matched"),
            ],
        ),
        signed_delivery(
            "github",
            &issue(OTHERS_INSTALLATION),
            &[
                ("x-github-event", "issues"),
                ("x-github-delivery", "gh-spoofed"),
            ],
        ),
        signed_delivery(
            "gmail",
            &gmail_push("gm-matched", "ADA.LOVELACE@example.com"),
            &[],
        ),
        signed_delivery(
            "gmail",
            &gmail_push("gm-unmatched", "someone.else@example.com"),
            &[],
        ),
    ])
    .await;
    let accounts: Vec<Option<&str>> = messages
        .iter()
        .map(|m| m.attributes.get(attribute::ACCOUNT).map(String::as_str))
        .collect();
    assert_eq!(
        accounts,
        [
            Some(installation.as_str()),
            Some(others.as_str()),
            Some("ada.lovelace@example.com"),
            Some("someone.else@example.com"),
        ]
    );

    let url = observe_bus(&d).await;
    let outcomes = consumer(&d).process_batch(messages).await;
    assert!(
        outcomes.iter().all(|o| o.result == ItemResult::Processed),
        "{outcomes:?}"
    );
    let owners: Vec<Vec<(&str, &str)>> = outcomes
        .iter()
        .map(|o| {
            o.owners
                .iter()
                .map(|owner| (owner.tenant.as_str(), owner.connection.as_str()))
                .collect()
        })
        .collect();
    assert_eq!(
        owners,
        [
            vec![("acme", github.as_str())],
            vec![],
            vec![("acme", gmail.as_str())],
            vec![],
        ]
    );
    assert_eq!(
        outcomes.iter().map(|o| o.unmatched).collect::<Vec<_>>(),
        [false, true, false, true]
    );
    // A Gmail push only says the mailbox changed: nothing is published for it until the
    // fetch stage exists (docs/events.md), but it is matched (its owners above).
    assert_eq!(
        outcomes
            .iter()
            .map(|o| (o.published, o.fetches_pending))
            .collect::<Vec<_>>(),
        [(1, 0), (1, 0), (0, 1), (0, 1)]
    );
    let events = observed(&d, &url, 2).await;
    let stamps: Vec<(&str, Option<&str>, Option<&str>)> = events
        .iter()
        .map(|e| {
            (
                e["providereventid"].as_str().unwrap_or_default(),
                e["tenant"].as_str(),
                e["connection"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        stamps,
        [
            ("gh-matched", Some("acme"), Some(github.as_str())),
            ("gh-spoofed", None, None),
        ]
    );
}
