//! OAuth connections on the emulator, with the tables and the KMS key `template.yaml`
//! creates: the KMS envelope refuses a sealed token copied onto another connection, the
//! DynamoDB stores meet their contracts (indexes included), and the connect flow and a
//! 50-way refresh race run against a loopback authorization server with every AWS
//! adapter real.

use std::{sync::Arc, time::Duration};

use fake_provider::{AuthServerConfig, FakeAuthServer};
use local_stack::emulator::{Moto, StackDescription, deploy, repo_root};
use shared::{
    catalog::Catalog,
    clock::FixedClock,
    crypto::{KmsKeyService, check_key_service_contract},
    events::EventBridgeBus,
    oauth::{
        CallbackOutcome, CallbackQuery, ConnectFlow, ConnectionStore, DynamoConnectionStore,
        DynamoStateStore, FlowSettings, PendingAuthorization, ProviderClient, SecretCredentials,
        StartRequest, StateStore, TokenVault, VaultError, VaultSettings,
        check_connection_store_contract,
    },
    secrets::SecretsManagerSource,
};

const BASE: &str = "https://hub.example.com";
const RETURN_TO: &str = "https://app.example.com/done";

struct Deployed {
    _moto: Moto,
    aws: aws_config::SdkConfig,
    stack: StackDescription,
}

async fn deployed() -> Deployed {
    let root = repo_root();
    let moto = Moto::start(&root).expect("the emulator starts (run infra/test to install it)");
    let endpoint = moto.endpoint().to_owned();
    let stack = tokio::task::spawn_blocking(move || {
        deploy(&repo_root(), &endpoint, "junction-oauth", &[]).expect("the template deploys")
    })
    .await
    .expect("deploy");
    let aws = moto
        .sdk_config()
        .await
        .into_builder()
        .timeout_config(shared::config::aws_timeouts())
        .build();
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
        pkce_verifier: None,
        params: Default::default(),
        reconnect: None,
        browser_binding: "b".into(),
        expires_at: 2_000_000_000,
        nonce: None,
    };
    states.put("state-hash", &pending).await.expect("put");
    assert_eq!(
        states.take("state-hash").await.expect("take"),
        Some(pending)
    );
    assert_eq!(
        states.take("state-hash").await.expect("take"),
        None,
        "a state is consumed once"
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
            shared::catalog::EndpointRules::LoopbackHttpForTests,
        )
        .expect("catalog"),
    ))
}

struct Hub {
    server: FakeAuthServer,
    flow: ConnectFlow,
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
            public_base_url: BASE.into(),
            poll_interval: Duration::from_millis(50),
            ..VaultSettings::default()
        },
    );
    let flow = ConnectFlow::new(
        vault.clone(),
        Arc::new(DynamoStateStore::from_config(
            &d.aws,
            d.resource("OAuthStateTable"),
        )),
        FlowSettings {
            return_to_origins: vec!["https://app.example.com".into()],
            default_return_to: None,
        },
    );
    Hub {
        server,
        flow,
        vault,
        clock,
    }
}

impl Hub {
    /// Start → the authorization server over HTTP → callback.
    async fn connect(&self, tenant: &str) -> String {
        let start = self
            .flow
            .start(
                "fakeauth",
                &StartRequest {
                    tenant: Some(tenant.into()),
                    return_to: Some(RETURN_TO.into()),
                    ..StartRequest::default()
                },
                BASE,
            )
            .await
            .expect("start");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let response = http.get(&start.location).send().await.expect("authorize");
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("redirect to the callback")
            .to_owned();
        let pairs = url::Url::parse(&location)
            .expect("url")
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let cookie = start
            .set_cookie
            .split(';')
            .next()
            .and_then(|p| p.split_once('='))
            .map(|(_, v)| v.to_owned());
        match self
            .flow
            .callback(
                "fakeauth",
                &CallbackQuery {
                    pairs,
                    binding_cookie: cookie,
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
    let first = tokens[0].as_ref().expect("token").value.clone();
    for token in &tokens {
        assert_eq!(
            token.as_ref().expect("every caller gets a token").value,
            first
        );
    }
}
