//! The connect flow and the vault against a real authorization server on loopback
//! (`fake-provider`: client authentication, exact redirect URIs, PKCE, single-use codes,
//! rotating refresh tokens with reuse detection, revocation), with in-memory stores and
//! key service. The same flows run against the emulator's DynamoDB and KMS in
//! `tests/tests/oauth_emulator.rs`.

use std::{sync::Arc, time::Duration};

use fake_provider::{AuthServerConfig, Decision, FakeAuthServer, TokenFailure};

use super::*;
use crate::{
    catalog::Catalog, clock::FixedClock, crypto::InMemoryKeyService, events::InMemoryEventBus,
    secrets::InMemorySecretSource,
};

const RETURN_TO: &str = "https://app.example.com/integrations";
const BASE: &str = "https://hub.example.com";

/// A catalog with one provider, `fakeauth`, whose endpoints are the fake server's.
pub(crate) fn fake_catalog(server: &FakeAuthServer, extra: &str) -> &'static Catalog {
    let extra = extra.replace("{provider_api}", &server.provider_api_base());
    let text = format!(
        "id = \"fakeauth\"\nname = \"Fake authorization server\"\ndocs = \"https://example.com/fake\"\n\n[oauth]\n{}\n{extra}",
        server.oauth_catalog_fields()
    );
    let catalog = Catalog::from_files_with_rules(
        &[("fakeauth.toml", text.as_str())],
        crate::catalog::EndpointRules::LoopbackHttpForTests,
    )
    .expect("catalog");
    Box::leak(Box::new(catalog))
}

pub(crate) struct Harness {
    pub server: FakeAuthServer,
    pub flow: ConnectFlow,
    pub vault: TokenVault,
    pub connections: Arc<InMemoryConnectionStore>,
    pub bus: Arc<InMemoryEventBus>,
    pub clock: Arc<FixedClock>,
    pub http: reqwest::Client,
}

async fn harness(config: AuthServerConfig) -> Harness {
    harness_with(config, "").await
}

/// The harness with `extra` TOML appended to the provider's catalog entry (an `[api]`
/// section for the outbound client's tests).
pub(crate) async fn harness_with(config: AuthServerConfig, extra: &str) -> Harness {
    let server = FakeAuthServer::start(AuthServerConfig {
        redirect_uris: vec![format!("{BASE}/oauth/fakeauth/callback")],
        ..config
    })
    .await;
    let catalog = fake_catalog(&server, extra);
    let secrets = InMemorySecretSource::default();
    secrets.put(
        "junction/oauth/fakeauth",
        r#"{"client_id":"junction-test-client","client_secret":"junction-test-secret"}"#,
    );
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
            public_base_url: BASE.into(),
            ..VaultSettings::default()
        },
    );
    let flow = ConnectFlow::new(
        vault.clone(),
        Arc::new(InMemoryStateStore::default()),
        FlowSettings {
            return_to_origins: vec!["https://app.example.com".into()],
            default_return_to: None,
        },
    );
    Harness {
        server,
        flow,
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

fn query_of(location: &str) -> Vec<(String, String)> {
    url::Url::parse(location)
        .expect("absolute URL")
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

impl Harness {
    /// Start → the provider's authorize endpoint over HTTP → the callback query the
    /// provider redirects the browser to, and the binding cookie.
    async fn authorize(&self) -> CallbackQuery {
        self.authorize_as(None).await
    }

    /// [`Harness::authorize`], re-authorizing the connection `reconnect` when given.
    async fn authorize_as(&self, reconnect: Option<String>) -> CallbackQuery {
        let start = self
            .flow
            .start(
                "fakeauth",
                &StartRequest {
                    tenant: Some("tenant-1".into()),
                    return_to: Some(RETURN_TO.into()),
                    reconnect,
                    ..StartRequest::default()
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
        assert!(location.starts_with(&format!("{BASE}/oauth/fakeauth/callback?")));
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

    pub(crate) async fn connect(&self) -> String {
        let query = self.authorize().await;
        match self
            .flow
            .callback("fakeauth", &query, BASE)
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

    async fn api_status(&self, token: &AccessToken) -> u16 {
        self.http
            .get(self.server.api_url())
            .bearer_auth(token.value.expose())
            .send()
            .await
            .expect("api")
            .status()
            .as_u16()
    }

    async fn stored(&self, id: &str) -> Connection {
        self.connections
            .get(id)
            .await
            .expect("store")
            .expect("connection")
    }

    /// Moves the clock past the token's refresh time.
    fn make_due(&self) {
        self.clock.advance(time::Duration::seconds(3_400));
    }
}

#[tokio::test]
async fn the_connect_flow_stores_a_sealed_connection_whose_token_works() {
    let h = harness(AuthServerConfig::default()).await;
    let id = h.connect().await;
    let stored = h.stored(&id).await;
    assert_eq!(stored.tenant, "tenant-1");
    assert_eq!(stored.state, ConnectionState::Active);
    assert!(stored.refreshable);
    assert_eq!(stored.stated_lifetime, Some(3_600));
    assert_eq!(
        stored.refresh_at,
        Some(1_800_000_000 + 3_600 - 300),
        "stated lifetime minus the catalog's margin"
    );
    let token = h.vault.access_token(&id).await.expect("token");
    assert_eq!(h.api_status(&token).await, 200);
    let sealed = format!("{:?}", stored.tokens);
    assert!(!sealed.contains(token.value.expose()));
    assert_eq!(h.server.counters().code_exchanges, 1);
}

#[tokio::test]
async fn a_replayed_expired_or_unbound_state_is_refused() {
    let h = harness(AuthServerConfig::default()).await;
    let query = h.authorize().await;
    let mut no_cookie = query.clone();
    no_cookie.binding_cookie = Some("another-browser".into());
    let err = h
        .flow
        .callback("fakeauth", &no_cookie, BASE)
        .await
        .expect_err("unbound");
    assert!(err.to_string().contains("another browser"), "{err}");
    let err = h
        .flow
        .callback("fakeauth", &query, BASE)
        .await
        .expect_err("replay");
    assert!(
        err.to_string().contains("unknown or already used state"),
        "the state was consumed by the first attempt: {err}"
    );
    assert_eq!(err.status(), 400);

    let query = h.authorize().await;
    h.clock.advance(time::Duration::seconds(601));
    let err = h
        .flow
        .callback("fakeauth", &query, BASE)
        .await
        .expect_err("expired");
    assert!(err.to_string().contains("expired"), "{err}");

    let err = h
        .flow
        .callback(
            "fakeauth",
            &CallbackQuery {
                pairs: vec![("code".into(), "x".into())],
                binding_cookie: None,
            },
            BASE,
        )
        .await
        .expect_err("missing state");
    assert!(err.to_string().contains("no state"));
    assert_eq!(
        h.server.counters().code_exchanges,
        0,
        "no code was exchanged"
    );
}

#[tokio::test]
async fn a_denied_authorization_returns_the_user_with_the_error() {
    let h = harness(AuthServerConfig::default()).await;
    h.server.set_decision(Decision::Deny);
    let query = h.authorize().await;
    match h
        .flow
        .callback("fakeauth", &query, BASE)
        .await
        .expect("handled")
    {
        CallbackOutcome::Failed { location, error } => {
            assert_eq!(error, "access_denied");
            assert!(location.starts_with(RETURN_TO));
            assert_eq!(get(&query_of(&location), "status"), Some("error"));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        h.connections
            .list_for_tenant("tenant-1")
            .await
            .expect("list")
            .is_empty()
    );
}

#[tokio::test]
async fn start_checks_return_to_tenant_and_url_parameters() {
    let h = harness(AuthServerConfig::default()).await;
    let start = |tenant: &str, return_to: &str| StartRequest {
        tenant: Some(tenant.into()),
        return_to: Some(return_to.into()),
        ..StartRequest::default()
    };
    for (request, message) in [
        (
            start("t", "https://evil.example.net/x"),
            "not in the allow-list",
        ),
        (start("t", "/relative"), "not an absolute URL"),
        (start("bad tenant!", RETURN_TO), "tenant is required"),
    ] {
        let err = h
            .flow
            .start("fakeauth", &request, BASE)
            .await
            .expect_err(message);
        assert!(err.to_string().contains(message), "{err}");
    }
    let err = h
        .flow
        .start("nope", &start("t", RETURN_TO), BASE)
        .await
        .expect_err("404");
    assert_eq!(err.status(), 404);

    // Shopify's shop must be a myshopify.com domain: no user input picks the host.
    let shopify = ConnectFlow::new(
        TokenVault {
            catalog: Catalog::embedded().expect("catalog"),
            ..h.vault.clone()
        },
        Arc::new(InMemoryStateStore::default()),
        FlowSettings {
            return_to_origins: vec!["https://app.example.com".into()],
            default_return_to: None,
        },
    );
    for shop in [
        "evil.com",
        "acme.myshopify.com.evil.com",
        "acme.myshopify.com/x",
        "",
    ] {
        let mut request = start("t", RETURN_TO);
        request.params.insert("shop".into(), shop.into());
        let err = shopify
            .start("shopify", &request, BASE)
            .await
            .expect_err(shop);
        assert!(
            err.to_string().contains("shop is not valid"),
            "{shop}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_callers_share_one_refresh() {
    let h = harness(AuthServerConfig::default()).await;
    let id = h.connect().await;
    h.make_due();
    h.server.set_token_delay(Duration::from_millis(300));
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let vault = h.vault.clone();
        let id = id.clone();
        calls.spawn(async move { vault.access_token(&id).await });
    }
    let tokens = calls.join_all().await;
    assert_eq!(h.server.counters().refreshes, 1, "exactly one token call");
    let first = tokens[0].as_ref().expect("token").value.clone();
    for token in &tokens {
        let token = token.as_ref().expect("every caller gets a token");
        assert_eq!(token.value, first, "every caller gets the new token");
    }
    let token = tokens[0].as_ref().expect("token");
    assert_eq!(h.api_status(token).await, 200);
    assert_eq!(h.stored(&id).await.token_generation, 2);
    assert!(h.stored(&id).await.lease.is_none(), "the lease is released");
}

#[tokio::test]
async fn an_early_rejection_teaches_the_provider_s_real_lifetime() {
    let h = harness(AuthServerConfig::default()).await;
    let id = h.connect().await;
    // The provider said 3,600 s; the token dies at 2,820 s (as observed in the wild).
    h.clock.advance(time::Duration::seconds(2_820));
    h.server.expire_access_tokens_now();
    let response = h
        .vault
        .send_authorized(&id, |token| {
            h.http
                .get(h.server.api_url())
                .bearer_auth(token.value.expose())
        })
        .await
        .expect("sent");
    assert_eq!(response.status(), 200, "refreshed once and retried once");
    assert_eq!(h.server.counters().refreshes, 1);
    assert_eq!(h.server.counters().api_rejections, 1);
    assert_eq!(
        h.connections
            .learned_lifetime("fakeauth")
            .await
            .expect("read"),
        Some(2_820)
    );
    let stored = h.stored(&id).await;
    assert_eq!(
        stored.refresh_at,
        Some(1_800_000_000 + 2_820 + 2_820 - 300),
        "the next token is refreshed before the learned lifetime runs out"
    );
}

#[tokio::test]
async fn a_revoked_grant_marks_the_connection_and_announces_it() {
    let h = harness(AuthServerConfig::default()).await;
    let id = h.connect().await;
    h.server.revoke_all_grants();
    h.make_due();
    let err = h.vault.access_token(&id).await.expect_err("revoked");
    assert!(
        matches!(err, VaultError::NeedsReauth(ref code) if code == "invalid_grant"),
        "{err}"
    );
    let stored = h.stored(&id).await;
    assert_eq!(stored.state, ConnectionState::NeedsReauth);
    assert!(
        stored.tokens.is_some(),
        "kept until the user reconnects or disconnects"
    );
    let events = h.bus.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "connection.needs_reauth");
    assert_eq!(events[0].subject.as_deref(), Some(id.as_str()));
    assert_eq!(
        events[0].data["reconnect_url"],
        format!("{BASE}/oauth/fakeauth/start?tenant=tenant-1&connection={id}")
    );
    let err = h
        .vault
        .access_token(&id)
        .await
        .expect_err("still needs reauth");
    assert!(matches!(err, VaultError::NeedsReauth(_)));
    assert_eq!(h.server.counters().refreshes, 1, "no more token calls");
}

#[tokio::test]
async fn transient_token_endpoint_failures_leave_the_tokens_alone() {
    let h = harness(AuthServerConfig::default()).await;
    let id = h.connect().await;
    h.make_due();
    let before = h.stored(&id).await;
    for failure in [
        TokenFailure::Status(503),
        TokenFailure::TooManyRequests {
            retry_after_seconds: 30,
        },
        TokenFailure::HtmlErrorPage,
    ] {
        h.server.fail_next_token_calls(1, failure.clone());
        let err = h.vault.access_token(&id).await.expect_err("transient");
        assert!(
            matches!(err, VaultError::Unavailable(_)),
            "{failure:?}: {err}"
        );
        let after = h.stored(&id).await;
        assert_eq!(after.tokens, before.tokens, "{failure:?}: tokens untouched");
        assert_eq!(
            after.state,
            ConnectionState::Active,
            "never a reason to disconnect"
        );
        assert!(after.lease.is_none(), "the lease is released");
        assert!(after.last_error.is_some());
    }
    let token = h.vault.access_token(&id).await.expect("recovers");
    assert_eq!(h.api_status(&token).await, 200);
}

#[tokio::test]
async fn rotated_refresh_tokens_survive_a_store_outage_after_the_token_call() {
    let h = harness(AuthServerConfig::default()).await;
    let id = h.connect().await;
    h.make_due();
    // The lease is taken (one write), the token call succeeds (the old refresh token is
    // now dead at the provider), then the next two writes fail: the new pair must still
    // be stored.
    h.connections.fail_replaces(1, 2);
    let token = h.vault.access_token(&id).await;
    assert_eq!(
        h.connections.injected_failures_left(),
        0,
        "both failures were hit"
    );
    let token = token.expect("stored after retries");
    assert_eq!(h.api_status(&token).await, 200);
    h.make_due();
    let again = h
        .vault
        .access_token(&id)
        .await
        .expect("the stored refresh token works");
    assert_ne!(again.value, token.value);
    assert_eq!(h.server.counters().refreshes, 2);
}

#[tokio::test]
async fn disconnect_revokes_at_the_provider_and_deletes_the_connection() {
    let h = harness(AuthServerConfig::default()).await;
    let id = h.connect().await;
    let token = h.vault.access_token(&id).await.expect("token");
    h.vault.disconnect(&id, false).await.expect("disconnect");
    assert_eq!(h.server.counters().revocations, 1);
    assert_eq!(h.api_status(&token).await, 401, "revoked at the provider");
    assert!(h.connections.get(&id).await.expect("store").is_none());
    let events = h.bus.events();
    assert_eq!(
        events.last().map(|e| e.event_type.as_str()),
        Some("connection.deleted")
    );
    assert!(matches!(
        h.vault.access_token(&id).await,
        Err(VaultError::NotFound(_))
    ));
}

#[tokio::test]
async fn reconnecting_a_needs_reauth_connection_keeps_its_id() {
    let h = harness(AuthServerConfig::default()).await;
    let id = h.connect().await;
    h.server.revoke_all_grants();
    h.make_due();
    assert!(h.vault.access_token(&id).await.is_err());
    let query = h.authorize_as(Some(id.clone())).await;
    let outcome = h
        .flow
        .callback("fakeauth", &query, BASE)
        .await
        .expect("callback");
    assert!(
        matches!(outcome, CallbackOutcome::Connected { ref connection_id, .. } if *connection_id == id)
    );
    let stored = h.stored(&id).await;
    assert_eq!(stored.state, ConnectionState::Active);
    let token = h.vault.access_token(&id).await.expect("token");
    assert_eq!(h.api_status(&token).await, 200);
}

#[tokio::test]
async fn the_scheduled_refresher_renews_what_is_due_and_reports_lost_grants() {
    let h = harness(AuthServerConfig::default()).await;
    let healthy = h.connect().await;
    let revoked = h.connect().await;
    let report = h
        .vault
        .refresh_due(Duration::from_secs(600))
        .await
        .expect("run");
    assert_eq!(report, RefreshReport::default(), "nothing due yet");
    // Revoke the second connection's grant only: revoke its refresh token at the provider.
    let tokens = h
        .vault
        .tokens(&h.stored(&revoked).await)
        .await
        .expect("tokens");
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair(
            "token",
            tokens.refresh_token.expect("refresh token").expose(),
        )
        .append_pair("client_id", "junction-test-client")
        .append_pair("client_secret", "junction-test-secret")
        .finish();
    let response = h
        .http
        .post(h.server.revoke_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("revoked");
    assert_eq!(response.status(), 200);
    h.clock.advance(time::Duration::seconds(3_000));
    let report = h
        .vault
        .refresh_due(Duration::from_secs(600))
        .await
        .expect("run");
    assert_eq!(
        report,
        RefreshReport {
            due: 2,
            refreshed: 1,
            needs_reauth: 1,
            failed: 0
        }
    );
    assert_eq!(h.stored(&healthy).await.token_generation, 2);
    assert_eq!(h.stored(&revoked).await.state, ConnectionState::NeedsReauth);
}
