//! OAuth connections on the emulator, with the tables and the KMS key `template.yaml`
//! creates: the KMS envelope refuses a sealed token copied onto another connection, the
//! DynamoDB stores meet their contracts (indexes, lifetime observations with their TTL,
//! the binding-conditional take of a state included; a connect session taken once even
//! by concurrent starts, never when expired or by another provider's), and the connect
//! flow, a 50-way
//! refresh race, learned lifetimes and a sweep over an unreadable item run against a
//! loopback authorization server with every AWS adapter real.

use std::{sync::Arc, time::Duration};

use aws_sdk_dynamodb::types::AttributeValue;

use fake_provider::{AuthServerConfig, FakeAuthServer};
use junction_aws::clock::FixedClock;
use junction_aws::crypto::{KmsKeyService, SecretString, check_key_service_contract};
use junction_aws::events::EventBridgeBus;
use junction_aws::secrets::SecretsManagerSource;
use junction_catalog::Catalog;
use junction_oauth::{
    BoundTake, ConnectFlow, ConnectSession, ConnectSessionStore, ConnectSessions, ConnectionStore,
    DynamoConnectSessionStore, DynamoConnectionStore, DynamoStateStore, FlowSettings,
    LifetimeObservation, OBSERVATION_WINDOW_SECONDS, PendingAuthorization, ProviderClient,
    RefreshReport, SecretCredentials, SessionTake, StateStore, TokenVault, VaultError,
    VaultSettings, check_connection_store_contract,
};
use local_stack::emulator::{Moto, StackDescription};

const BASE: &str = "https://hub.example.com";
const RETURN_TO: &str = "https://app.example.com/done";

struct Deployed {
    _moto: Moto,
    aws: aws_config::SdkConfig,
    stack: StackDescription,
}

async fn deployed() -> Deployed {
    let (moto, aws, stack) = junction_tests::deployed("junction-oauth").await;
    Deployed {
        _moto: moto,
        aws,
        stack,
    }
}

impl Deployed {
    fn resource(&self, logical_id: &str) -> String {
        self.stack.resources[logical_id].clone()
    }

    fn connections(&self) -> DynamoConnectionStore {
        DynamoConnectionStore::from_config(&self.aws, self.resource("ConnectionsTable"))
    }

    fn keys(&self) -> KmsKeyService {
        KmsKeyService::from_config(&self.aws, self.resource("TokenKey"))
    }
}

#[tokio::test]
async fn kms_envelope_binds_each_token_to_its_connection() {
    let d = deployed().await;
    check_key_service_contract(&d.keys()).await;
}

#[tokio::test]
async fn dynamodb_connection_and_state_stores_meet_their_contracts() {
    let d = deployed().await;
    check_connection_store_contract(&d.connections()).await;
    let states = DynamoStateStore::from_config(&d.aws, d.resource("OAuthStateTable"));
    let pending = PendingAuthorization {
        provider: "github".into(),
        tenant: "t".into(),
        return_to: RETURN_TO.into(),
        redirect_uri: format!("{BASE}/oauth/github/callback"),
        scopes: vec![],
        pkce_verifier: Some(SecretString::new("verifier-kept-with-the-state")),
        params: Default::default(),
        reconnect: None,
        browser_binding: "b".into(),
        expires_at: 2_000_000_000,
        nonce: None,
        allow_account_change: false,
        sandbox: true,
        end_user: None,
        // An OAuth 1.0a attempt's temporary credentials round-trip with the state.
        oauth1: Some(junction_oauth::oauth1::TemporaryCredentials {
            token: "temporary-token".into(),
            secret: SecretString::new("temporary-secret-kept-with-the-state"),
        }),
    };
    states.put("state-hash", &pending).await.expect("put");
    // A pending authorization holds the PKCE verifier, so it is not comparable with ==:
    // compared here through its stored document (which is what a store keeps).
    let document = |pending: &PendingAuthorization| serde_json::to_value(pending).expect("json");
    let taken = |take: BoundTake| match take {
        BoundTake::Taken(pending) => Some(document(&pending)),
        _ => None,
    };
    assert!(matches!(
        states
            .take_bound("state-hash", "another-browser")
            .await
            .expect("take"),
        BoundTake::OtherBrowser
    ));
    assert_eq!(
        taken(states.take_bound("state-hash", "b").await.expect("take")),
        Some(document(&pending)),
        "another browser's attempt left the state in place"
    );
    assert!(
        matches!(
            states.take_bound("state-hash", "b").await.expect("take"),
            BoundTake::Missing
        ),
        "a state is consumed once"
    );
    // A state stored before the binding attribute existed: checked on its document.
    aws_sdk_dynamodb::Client::new(&d.aws)
        .put_item()
        .table_name(d.resource("OAuthStateTable"))
        .item("state", AttributeValue::S("legacy-hash".into()))
        .item("expires_at", AttributeValue::N("2000000000".into()))
        .item(
            "doc",
            AttributeValue::S(serde_json::to_string(&pending).expect("json")),
        )
        .send()
        .await
        .expect("put");
    assert!(matches!(
        states.take_bound("legacy-hash", "c").await.expect("take"),
        BoundTake::OtherBrowser
    ));
    let Some(back) = taken(states.take_bound("legacy-hash", "b").await.expect("take")) else {
        panic!("the legacy state is taken with its binding");
    };
    assert_eq!(back, document(&pending));
    assert_eq!(back["pkce_verifier"], "verifier-kept-with-the-state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connect_session_is_taken_once_for_its_provider_before_it_expires() {
    let d = deployed().await;
    let table = d.resource("ConnectSessionsTable");
    let store = DynamoConnectSessionStore::from_config(&d.aws, table.clone());
    let session = ConnectSession {
        provider: "github".into(),
        tenant: "t".into(),
        connection: Some("conn_1".into()),
        return_to: RETURN_TO.into(),
        end_user: None,
        params: Default::default(),
        allow_account_change: false,
        sandbox: true,
        created_at: 1_800_000_000,
        expires_at: 1_800_000_600,
    };
    store.put("session-hash", &session).await.expect("put");
    assert!(
        store.put("session-hash", &session).await.is_err(),
        "never overwritten"
    );
    let item = aws_sdk_dynamodb::Client::new(&d.aws)
        .get_item()
        .table_name(&table)
        .key("session", AttributeValue::S("session-hash".into()))
        .send()
        .await
        .expect("get")
        .item
        .expect("stored");
    assert_eq!(
        item.get("expires_at").and_then(|v| v.as_n().ok()),
        Some(&"1800000600".to_owned()),
        "the table's TTL attribute"
    );
    assert_eq!(
        store
            .take("session-hash", "slack", 1_800_000_100)
            .await
            .expect("take"),
        SessionTake::OtherProvider
    );
    assert_eq!(
        store
            .take("session-hash", "github", 1_800_000_600)
            .await
            .expect("take"),
        SessionTake::Expired
    );
    // Sixteen starts at once with the same token: exactly one gets the session.
    let takes = (0..16).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.take("session-hash", "github", 1_800_000_599).await })
    });
    let mut taken = Vec::new();
    for take in takes {
        match take.await.expect("joined").expect("take") {
            SessionTake::Taken(found) => taken.push(*found),
            other => assert_eq!(other, SessionTake::Missing),
        }
    }
    assert_eq!(taken, vec![session]);
    assert_eq!(
        store.take("never-minted", "github", 0).await.expect("take"),
        SessionTake::Missing
    );
}

#[tokio::test]
async fn lifetime_observations_carry_the_table_s_ttl_attribute() {
    let d = deployed().await;
    let store = d.connections();
    let seen = |connection: &str, at: i64| LifetimeObservation {
        connection: connection.into(),
        seconds: 2_820,
        at,
    };
    store
        .record_lifetime("fakeauth", seen("conn_a", 1_800_000_000))
        .await
        .expect("record");
    store
        .record_lifetime("fakeauth", seen("conn_b", 1_800_000_500))
        .await
        .expect("record");
    let dynamo = aws_sdk_dynamodb::Client::new(&d.aws);
    let item = dynamo
        .get_item()
        .table_name(d.resource("ConnectionsTable"))
        .key("id", AttributeValue::S("lifetime#fakeauth".into()))
        .send()
        .await
        .expect("get")
        .item
        .expect("the provider's observations");
    assert_eq!(
        item.get("expires_at").and_then(|v| v.as_n().ok()),
        Some(&(1_800_000_500 + OBSERVATION_WINDOW_SECONDS).to_string()),
        "a week after the newest observation"
    );
    let connection = junction_oauth::sample_connection("conn_ttl", "tenant-ttl", 1_000);
    store.insert(&connection).await.expect("insert");
    let stored = dynamo
        .get_item()
        .table_name(d.resource("ConnectionsTable"))
        .key("id", AttributeValue::S("conn_ttl".into()))
        .send()
        .await
        .expect("get")
        .item
        .expect("the connection");
    assert!(
        !stored.contains_key("expires_at"),
        "connections never expire"
    );
}

fn fake_catalog(server: &FakeAuthServer) -> &'static Catalog {
    let text = format!(
        "id = \"fakeauth\"\nname = \"Fake authorization server\"\ndocs = \"https://example.com/fake\"\n\n[oauth]\n{}",
        server.oauth_catalog_fields()
    );
    Box::leak(Box::new(
        Catalog::from_files_with_rules(
            &[("fakeauth.toml", text.as_str())],
            junction_catalog::EndpointRules::LoopbackHttpForTests,
        )
        .expect("catalog"),
    ))
}

struct Hub {
    server: FakeAuthServer,
    flow: ConnectFlow,
    sessions: ConnectSessions,
    vault: TokenVault,
    clock: Arc<FixedClock>,
}

async fn hub(d: &Deployed) -> Hub {
    let server = FakeAuthServer::start(AuthServerConfig {
        redirect_uris: vec![format!("{BASE}/oauth/fakeauth/callback")],
        ..AuthServerConfig::default()
    })
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
    let clock = Arc::new(FixedClock::at_unix(1_800_000_000));
    let vault = TokenVault::new(
        fake_catalog(&server),
        Arc::new(d.connections()),
        Arc::new(d.keys()),
        Arc::new(SecretCredentials::new(
            SecretsManagerSource::from_config(&d.aws),
            "junction",
        )),
        ProviderClient::new(),
        Arc::new(EventBridgeBus::from_config(
            &d.aws,
            d.stack.functions["OAuthFunction"].environment["EVENT_BUS_NAME"]
                .as_str()
                .expect("bus name")
                .to_owned(),
        )),
        clock.clone(),
        VaultSettings {
            poll_interval: Duration::from_millis(50),
            ..VaultSettings::default()
        },
    );
    let settings = FlowSettings {
        return_to_origins: vec!["https://app.example.com".into()],
        default_return_to: None,
    };
    let session_store = Arc::new(DynamoConnectSessionStore::from_config(
        &d.aws,
        d.resource("ConnectSessionsTable"),
    ));
    let flow = ConnectFlow::new(
        vault.clone(),
        Arc::new(DynamoStateStore::from_config(
            &d.aws,
            d.resource("OAuthStateTable"),
        )),
        session_store.clone(),
        settings.clone(),
    );
    Hub {
        server,
        sessions: ConnectSessions::new(vault.clone(), session_store, settings),
        flow,
        vault,
        clock,
    }
}

impl Hub {
    /// A connect session → start → the authorization server over HTTP → callback.
    async fn connect(&self, tenant: &str) -> String {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        junction_tests::connect_through(
            &self.flow,
            &self.sessions,
            &http,
            "fakeauth",
            tenant,
            RETURN_TO,
            BASE,
        )
        .await
    }
}

#[tokio::test]
async fn a_sealed_token_copied_onto_another_connection_does_not_open() {
    let d = deployed().await;
    let hub = hub(&d).await;
    let first = hub.connect("tenant-a").await;
    let second = hub.connect("tenant-b").await;
    let store = d.connections();
    let token = hub.vault.access_token(&first).await.expect("token");
    let stolen = store.get(&first).await.expect("get").expect("first");
    let mut target = store.get(&second).await.expect("get").expect("second");
    target.tokens = stolen.tokens.clone();
    target.version += 1;
    assert!(
        store
            .replace(&target, target.version - 1)
            .await
            .expect("replace")
    );
    let err = hub
        .vault
        .access_token(&second)
        .await
        .expect_err("KMS refuses the other connection's encryption context");
    assert!(matches!(err, VaultError::Rejected(_)), "{err}");
    assert!(hub.vault.access_token(&first).await.is_ok());
    assert!(!token.value.expose().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_refreshes_make_one_token_call_on_dynamodb() {
    let d = deployed().await;
    let hub = hub(&d).await;
    let id = hub.connect("tenant-race").await;
    hub.clock.advance(time::Duration::seconds(3_400));
    hub.server.set_token_delay(Duration::from_millis(300));
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let vault = hub.vault.clone();
        let id = id.clone();
        calls.spawn(async move { vault.access_token(&id).await });
    }
    let tokens = calls.join_all().await;
    assert_eq!(hub.server.counters().refreshes, 1, "exactly one token call");
    let first = tokens[0].as_ref().expect("token").value.expose().to_owned();
    for token in &tokens {
        assert_eq!(
            token
                .as_ref()
                .expect("every caller gets a token")
                .value
                .expose(),
            first
        );
    }
}

impl Hub {
    /// Reports the connection's current token rejected by the provider's API (a 401)
    /// and returns the generation handed out after.
    async fn reject(&self, id: &str) -> u64 {
        let token = self.vault.access_token(id).await.expect("token");
        self.vault
            .token_rejected(id, &token)
            .await
            .expect("refreshed")
            .generation
    }

    fn now(&self) -> i64 {
        use junction_aws::clock::Clock as _;
        self.clock.now().unix_timestamp()
    }
}

#[tokio::test]
async fn one_connection_s_early_401_does_not_change_another_s_refresh_time_on_dynamodb() {
    let d = deployed().await;
    let hub = hub(&d).await;
    let store = d.connections();
    let honest = hub.connect("tenant-honest").await;
    let attackers = [
        hub.connect("tenant-evil").await,
        hub.connect("tenant-evil").await,
    ];
    let honest_refresh_at = store
        .get(&honest)
        .await
        .expect("get")
        .expect("stored")
        .refresh_at;
    hub.clock.advance(time::Duration::seconds(60));
    for id in &attackers {
        assert_eq!(hub.reject(id).await, 2);
    }
    assert_eq!(
        store
            .lifetime_observations("fakeauth")
            .await
            .expect("read")
            .len(),
        2
    );
    assert_eq!(
        store
            .get(&honest)
            .await
            .expect("get")
            .expect("stored")
            .refresh_at,
        honest_refresh_at
    );
    hub.clock.advance(time::Duration::seconds(1_800));
    let token = hub.vault.access_token(&honest).await.expect("token");
    assert_eq!(token.generation, 1, "not refreshed early");
    assert_eq!(hub.server.counters().refreshes, 2, "the attackers' only");

    // Honest connections see their tokens die at 2,820 s of a stated 3,600 s.
    let seeds = [
        hub.connect("tenant-1").await,
        hub.connect("tenant-2").await,
        hub.connect("tenant-3").await,
    ];
    hub.clock.advance(time::Duration::seconds(2_820));
    for id in &seeds {
        // Learned after the first: the attackers' two observations and one honest one
        // make three connections, and the honest one is what counts.
        hub.reject(id).await;
    }
    let fresh = hub.connect("tenant-4").await;
    assert_eq!(
        store
            .get(&fresh)
            .await
            .expect("get")
            .expect("stored")
            .refresh_at,
        Some(hub.now() + 2_820 - 300),
        "the real lifetime minus the margin"
    );
}

#[tokio::test]
async fn a_sweep_goes_past_an_unreadable_item() {
    let d = deployed().await;
    let hub = hub(&d).await;
    let good = hub.connect("tenant-a").await;
    // A corrupt item the refresh index finds (and the tenant index does not).
    aws_sdk_dynamodb::Client::new(&d.aws)
        .put_item()
        .table_name(d.resource("ConnectionsTable"))
        .item("id", AttributeValue::S("conn_corrupt".into()))
        .item("version", AttributeValue::N("1".into()))
        .item("state", AttributeValue::S("active".into()))
        .item("refresh_at", AttributeValue::N("1".into()))
        .item("doc", AttributeValue::S("{not json".into()))
        .send()
        .await
        .expect("put");
    hub.clock.advance(time::Duration::seconds(3_400));
    let report = hub
        .vault
        .refresh_due(Duration::from_secs(600), Duration::from_secs(60))
        .await
        .expect("one bad item does not fail the run");
    assert_eq!(
        report,
        RefreshReport {
            due: 2,
            refreshed: 1,
            failed: 1,
            ..RefreshReport::default()
        }
    );
    let stored = d
        .connections()
        .get(&good)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(stored.token_generation, 2);
}
