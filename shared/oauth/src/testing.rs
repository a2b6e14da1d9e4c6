//! A test harness: the connect flow and the vault against a real authorization server on
//! loopback (`fake-provider`: client authentication, exact redirect URIs, PKCE,
//! single-use codes, rotating refresh tokens with reuse detection, revocation), with
//! in-memory stores and key service. This crate's tests use it, and so do the outbound
//! client's and the pollers' (feature `testing`, for tests only).

use std::{sync::Arc, time::Duration};

use fake_provider::{AuthServerConfig, FakeAuthServer};

use crate::*;
use junction_aws::clock::FixedClock;
use junction_aws::crypto::InMemoryKeyService;
use junction_aws::events::InMemoryEventBus;
use junction_aws::secrets::InMemorySecretSource;
use junction_catalog::Catalog;

pub const RETURN_TO: &str = "https://app.example.com/integrations";
pub const BASE: &str = "https://hub.example.com";

/// A catalog with one provider, `fakeauth`, whose endpoints are the fake server's.
pub fn fake_catalog(server: &FakeAuthServer, extra: &str) -> &'static Catalog {
    let extra = extra.replace("{provider_api}", &server.provider_api_base());
    let text = format!(
        "id = \"fakeauth\"\nname = \"Fake authorization server\"\ndocs = \"https://example.com/fake\"\n\n[oauth]\n{}\n{extra}",
        server.oauth_catalog_fields()
    );
    let catalog = Catalog::from_files_with_rules(
        &[("fakeauth.toml", text.as_str())],
        junction_catalog::EndpointRules::LoopbackHttpForTests,
    )
    .expect("catalog");
    Box::leak(Box::new(catalog))
}

#[allow(missing_debug_implementations)]
pub struct Harness {
    pub server: FakeAuthServer,
    pub flow: ConnectFlow,
    /// Mints connect sessions, as the management API does.
    pub minter: ConnectSessions,
    pub sessions: Arc<InMemoryConnectSessionStore>,
    pub states: Arc<InMemoryStateStore>,
    pub vault: TokenVault,
    pub connections: Arc<InMemoryConnectionStore>,
    pub bus: Arc<InMemoryEventBus>,
    pub clock: Arc<FixedClock>,
    pub http: reqwest::Client,
}

pub async fn harness(config: AuthServerConfig) -> Harness {
    harness_with(config, "").await
}

/// The harness with `extra` TOML appended to the provider's catalog entry (an `[api]`
/// section for the outbound client's tests).
pub async fn harness_with(config: AuthServerConfig, extra: &str) -> Harness {
    let server = start_server("fakeauth", config).await;
    let catalog = fake_catalog(&server, extra);
    harness_over(server, catalog, &["fakeauth"])
}

/// A fake authorization server that accepts `provider`'s callback URL.
pub async fn start_server(provider: &str, config: AuthServerConfig) -> FakeAuthServer {
    FakeAuthServer::start(AuthServerConfig {
        redirect_uris: vec![format!("{BASE}/oauth/{provider}/callback")],
        ..config
    })
    .await
}

/// The harness over `catalog`, with client credentials for each of `providers`.
pub fn harness_over(
    server: FakeAuthServer,
    catalog: &'static Catalog,
    providers: &[&str],
) -> Harness {
    let secrets = InMemorySecretSource::default();
    for provider in providers {
        secrets.put(
            format!("junction/oauth/{provider}"),
            r#"{"client_id":"junction-test-client","client_secret":"junction-test-secret"}"#,
        );
    }
    let connections = Arc::new(InMemoryConnectionStore::default());
    let bus = Arc::new(InMemoryEventBus::default());
    let clock = Arc::new(FixedClock::at_unix(1_800_000_000));
    let vault = TokenVault::new(
        catalog,
        connections.clone(),
        Arc::new(InMemoryKeyService::default()),
        Arc::new(SecretCredentials::new(secrets, "junction")),
        ProviderClient::new(),
        bus.clone(),
        clock.clone(),
        VaultSettings {
            poll_interval: Duration::from_millis(20),
            ..VaultSettings::default()
        },
    );
    let sessions = Arc::new(InMemoryConnectSessionStore::default());
    let states = Arc::new(InMemoryStateStore::default());
    let flow = ConnectFlow::new(
        vault.clone(),
        states.clone(),
        sessions.clone(),
        flow_settings(),
    );
    Harness {
        server,
        flow,
        minter: ConnectSessions::new(vault.clone(), sessions.clone(), flow_settings()),
        sessions,
        states,
        vault,
        connections,
        bus,
        clock,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
    }
}

pub fn flow_settings() -> FlowSettings {
    FlowSettings {
        return_to_origins: vec!["https://app.example.com".into()],
        default_return_to: None,
    }
}

/// A session request for `provider` in `tenant-1`, back to [`RETURN_TO`].
pub fn session_request(provider: &str) -> ConnectSessionRequest {
    ConnectSessionRequest {
        tenant: "tenant-1".into(),
        provider: provider.into(),
        return_to: Some(RETURN_TO.into()),
        ..ConnectSessionRequest::default()
    }
}

pub fn query_of(location: &str) -> Vec<(String, String)> {
    url::Url::parse(location)
        .expect("absolute URL")
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub fn get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

impl Harness {
    /// Start → the provider's authorize endpoint over HTTP → the callback query the
    /// provider redirects the browser to, and the binding cookie.
    pub async fn authorize(&self) -> CallbackQuery {
        self.authorize_as(None).await
    }

    /// [`Harness::authorize`], re-authorizing the connection `reconnect` when given.
    pub async fn authorize_as(&self, reconnect: Option<String>) -> CallbackQuery {
        self.authorize_to("fakeauth", reconnect).await
    }

    /// [`Harness::authorize_as`] at `provider`.
    pub async fn authorize_to(&self, provider: &str, reconnect: Option<String>) -> CallbackQuery {
        self.authorize_with(ConnectSessionRequest {
            connection: reconnect,
            ..session_request(provider)
        })
        .await
    }

    /// A connect session minted for `request`, its token.
    pub async fn mint(&self, request: &ConnectSessionRequest) -> String {
        let minted = self.minter.mint(request, BASE).await.expect("minted");
        assert_eq!(
            minted.connect_url,
            format!(
                "{BASE}/oauth/{}/start?session={}",
                request.provider,
                minted.token.expose()
            )
        );
        minted.token.expose().to_owned()
    }

    /// Mints a session for `request`, starts with it, and follows the provider's
    /// authorize endpoint to the callback query and the binding cookie.
    pub async fn authorize_with(&self, request: ConnectSessionRequest) -> CallbackQuery {
        let provider = request.provider.clone();
        let provider = provider.as_str();
        let token = self.mint(&request).await;
        let start = self
            .flow
            .start(
                provider,
                &StartRequest {
                    session: Some(token),
                },
                BASE,
            )
            .await
            .expect("start");
        let authorize = query_of(&start.location);
        assert_eq!(get(&authorize, "code_challenge_method"), Some("S256"));
        assert_eq!(get(&authorize, "scope"), Some("read write"));
        assert_eq!(
            get(&authorize, "state").map(str::len),
            Some(43),
            "256 random bits"
        );
        let response = self
            .http
            .get(&start.location)
            .send()
            .await
            .expect("authorize");
        assert_eq!(response.status(), 302);
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("redirect")
            .to_owned();
        assert!(location.starts_with(&format!("{BASE}/oauth/{provider}/callback?")));
        let cookie = start
            .set_cookie
            .split(';')
            .next()
            .and_then(|pair| pair.split_once('='))
            .map(|(_, value)| value.to_owned());
        CallbackQuery {
            pairs: query_of(&location),
            binding_cookie: cookie,
        }
    }

    pub async fn connect(&self) -> String {
        self.connect_to("fakeauth").await
    }

    /// Connects a new account at `provider`; its id.
    pub async fn connect_to(&self, provider: &str) -> String {
        let query = self.authorize_to(provider, None).await;
        match self
            .flow
            .callback(provider, &query, BASE)
            .await
            .expect("callback")
        {
            CallbackOutcome::Connected {
                location,
                connection_id,
            } => {
                assert!(location.starts_with(RETURN_TO), "{location}");
                assert_eq!(
                    get(&query_of(&location), "connection_id"),
                    Some(connection_id.as_str())
                );
                connection_id
            }
            other => panic!("not connected: {other:?}"),
        }
    }

    pub async fn api_status(&self, token: &AccessToken) -> u16 {
        self.http
            .get(self.server.api_url())
            .bearer_auth(token.value.expose())
            .send()
            .await
            .expect("api")
            .status()
            .as_u16()
    }

    pub async fn stored(&self, id: &str) -> Connection {
        self.connections
            .get(id)
            .await
            .expect("store")
            .expect("connection")
    }

    /// Moves the clock past the token's refresh time.
    pub fn make_due(&self) {
        self.clock.advance(time::Duration::seconds(3_400));
    }
}
