//! The OAuth 1.0a flow end to end against the loopback fake (which checks every
//! signature itself), through the same route the Lambda serves, and the attacks that
//! must store nothing.

use std::{sync::Arc, time::Duration};

use super::fake::{CONSUMER_KEY, CONSUMER_SECRET, FakeOAuth1};
use crate::testing::{BASE, RETURN_TO, flow_settings, get, query_of, session_request};
use crate::web::{HttpReply, oauth_route};
use crate::*;
use junction_aws::clock::FixedClock;
use junction_aws::crypto::InMemoryKeyService;
use junction_aws::events::InMemoryEventBus;
use junction_aws::secrets::InMemorySecretSource;
use junction_catalog::Catalog;

const PROVIDER: &str = "fakeone";

struct Harness {
    fake: FakeOAuth1,
    flow: ConnectFlow,
    minter: ConnectSessions,
    states: Arc<InMemoryStateStore>,
    vault: TokenVault,
    connections: Arc<InMemoryConnectionStore>,
    keys: Arc<InMemoryKeyService>,
    http: reqwest::Client,
}

async fn harness(api_auth: &str) -> Harness {
    let fake = FakeOAuth1::start().await;
    let entry = fake.catalog_entry(PROVIDER, api_auth);
    let catalog: &'static Catalog = Box::leak(Box::new(
        Catalog::from_files_with_rules(
            &[("fakeone.toml", entry.as_str())],
            junction_catalog::EndpointRules::LoopbackHttpForTests,
        )
        .expect("catalog"),
    ));
    let secrets = InMemorySecretSource::default();
    secrets.put(
        format!("junction/oauth/{PROVIDER}"),
        format!(r#"{{"client_id":"{CONSUMER_KEY}","client_secret":"{CONSUMER_SECRET}"}}"#),
    );
    let connections = Arc::new(InMemoryConnectionStore::default());
    let keys = Arc::new(InMemoryKeyService::default());
    let vault = TokenVault::new(
        catalog,
        connections.clone(),
        keys.clone(),
        Arc::new(SecretCredentials::new(secrets, "junction")),
        ProviderClient::new(),
        Arc::new(InMemoryEventBus::default()),
        Arc::new(FixedClock::at_unix(1_800_000_000)),
        VaultSettings {
            poll_interval: Duration::from_millis(20),
            ..VaultSettings::default()
        },
    );
    let sessions = Arc::new(InMemoryConnectSessionStore::default());
    let states = Arc::new(InMemoryStateStore::default());
    Harness {
        fake,
        flow: ConnectFlow::new(
            vault.clone(),
            states.clone(),
            sessions.clone(),
            flow_settings(),
        ),
        minter: ConnectSessions::new(vault.clone(), sessions, flow_settings()),
        states,
        vault,
        connections,
        keys,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
    }
}

fn location(reply: &HttpReply) -> &str {
    reply
        .headers
        .iter()
        .find(|(name, _)| name == "location")
        .map(|(_, value)| value.as_str())
        .unwrap_or_else(|| panic!("no redirect: {} {}", reply.status, reply.body))
}

fn cookie(reply: &HttpReply) -> String {
    reply
        .headers
        .iter()
        .find(|(name, _)| name == "set-cookie")
        .and_then(|(_, value)| value.split(';').next())
        .expect("binding cookie")
        .to_owned()
}

/// What the user's browser brings back: the callback URL's query and the cookie.
struct Authorized {
    query: Vec<(String, String)>,
    cookie: String,
}

impl Harness {
    async fn session(&self, reconnect: Option<String>) -> String {
        self.session_for(ConnectSessionRequest {
            connection: reconnect,
            ..session_request(PROVIDER)
        })
        .await
    }

    async fn session_for(&self, request: ConnectSessionRequest) -> String {
        let minted = self.minter.mint(&request, BASE).await.expect("minted");
        minted.token.expose().to_owned()
    }

    async fn start(&self, session: Option<&str>) -> HttpReply {
        let query = session
            .map(|token| vec![("session".to_owned(), token.to_owned())])
            .unwrap_or_default();
        oauth_route(&self.flow, PROVIDER, "start", query, None, BASE).await
    }

    /// Start with a fresh session, then the provider's authorize page (the user
    /// approves), up to the redirect to Junction's callback.
    async fn authorize(&self, reconnect: Option<String>) -> Authorized {
        let token = self.session(reconnect).await;
        self.authorize_with(&token).await
    }

    async fn authorize_with(&self, token: &str) -> Authorized {
        let started = self.start(Some(token)).await;
        assert_eq!(started.status, 302, "{}", started.body);
        let authorize = location(&started).to_owned();
        assert!(authorize.starts_with(&format!("{}/authorize?", self.fake.base())));
        let pairs = query_of(&authorize);
        assert!(get(&pairs, "oauth_token").is_some());
        assert_eq!(get(&pairs, "name"), Some("Junction tests"));
        assert_eq!(get(&pairs, "scope"), Some("read"));
        assert!(
            !authorize.contains("secret"),
            "the temporary secret never travels in a URL"
        );
        let response = self.http.get(&authorize).send().await.expect("authorize");
        assert_eq!(response.status(), 302);
        let callback = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("callback")
            .to_owned();
        assert!(callback.starts_with(&format!("{BASE}/oauth/{PROVIDER}/callback?state=")));
        Authorized {
            query: query_of(&callback),
            cookie: cookie(&started),
        }
    }

    async fn callback(&self, authorized: &Authorized) -> HttpReply {
        oauth_route(
            &self.flow,
            PROVIDER,
            "callback",
            authorized.query.clone(),
            Some(&authorized.cookie),
            BASE,
        )
        .await
    }

    async fn connected(&self, reply: &HttpReply) -> String {
        let back = location(reply);
        assert!(back.starts_with(RETURN_TO), "{back}");
        let pairs = query_of(back);
        assert_eq!(get(&pairs, "status"), Some("connected"), "{back}");
        get(&pairs, "connection_id").expect("id").to_owned()
    }

    async fn stored(&self) -> Vec<Connection> {
        self.connections
            .list_for_tenant("tenant-1")
            .await
            .expect("list")
    }
}

fn with(query: &[(String, String)], name: &str, value: Option<&str>) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> =
        query.iter().filter(|(n, _)| n != name).cloned().collect();
    if let Some(value) = value {
        pairs.push((name.to_owned(), value.to_owned()));
    }
    pairs
}

#[tokio::test]
async fn start_authorize_callback_stores_sealed_tokens_that_sign_and_disconnect_revokes() {
    let h = harness("{ style = \"signed\" }").await;
    let authorized = h.authorize(None).await;
    let reply = h.callback(&authorized).await;
    let id = h.connected(&reply).await;
    assert!(h.fake.rejected().is_empty(), "{:?}", h.fake.rejected());
    assert_eq!(
        h.fake.pending_temporary(),
        0,
        "temporary credentials used once"
    );

    // The vault holds the access token and its secret, sealed under the connection's
    // context, as OAuth 2.0 tokens are.
    let stored = h.connections.get(&id).await.expect("get").expect("stored");
    assert_eq!(stored.state, ConnectionState::Active);
    assert!(!stored.refreshable, "OAuth 1.0a tokens have no refresh");
    let access = h.fake.access_tokens();
    assert_eq!(access.len(), 1);
    let sealed = serde_json::to_string(stored.tokens.as_ref().expect("tokens")).expect("json");
    assert!(!sealed.contains(&access[0]), "sealed, not in the clear");
    let context =
        junction_aws::crypto::EncryptionContext::for_connection("tenant-1", PROVIDER, &id);
    let opened = junction_aws::crypto::open(
        h.keys.as_ref(),
        &context,
        stored.tokens.as_ref().expect("tokens"),
    )
    .await
    .expect("opens under the connection's context");
    let set: serde_json::Value = serde_json::from_slice(&opened).expect("token set");
    assert_eq!(set["access_token"], access[0].as_str());
    assert!(
        set["token_secret"]
            .as_str()
            .is_some_and(|s| s.starts_with("access secret/"))
    );
    let other = junction_aws::crypto::EncryptionContext::for_connection("tenant-2", PROVIDER, &id);
    assert!(
        junction_aws::crypto::open(
            h.keys.as_ref(),
            &other,
            stored.tokens.as_ref().expect("tokens")
        )
        .await
        .is_err()
    );

    // The grant signs API requests the fake verifies on its own.
    let grant = h.vault.oauth1_grant(&id).await.expect("grant");
    let mut url =
        url::Url::parse(&format!("{}/api/me?fields=id,name&x=a%20b", h.fake.base())).expect("url");
    let header = grant.authenticate("GET", &mut url, &[]).expect("signed");
    let status = h
        .http
        .get(url)
        .header("authorization", header)
        .send()
        .await
        .expect("api")
        .status();
    assert_eq!(status, 200, "{:?}", h.fake.rejected());
    assert_eq!(h.fake.api_calls(), 1);

    // Through the vault, as the outbound client sends every API request: the callers'
    // OAuth 2.0 builder (a bearer token) is signed instead, and the fake accepts it.
    let api = format!("{}/api/me?fields=id,name", h.fake.base());
    let response = h
        .vault
        .send_authorized(&id, |token| {
            h.http.get(api.as_str()).bearer_auth(token.value.expose())
        })
        .await
        .expect("sent");
    assert_eq!(response.status(), 200, "{:?}", h.fake.rejected());
    assert_eq!(h.fake.api_calls(), 2);

    // Disconnect ends the grant at the provider and deletes the connection.
    h.vault.disconnect(&id, false).await.expect("disconnect");
    assert_eq!(h.fake.revoked(), access);
    assert!(h.fake.access_tokens().is_empty());
    assert!(h.connections.get(&id).await.expect("get").is_none());
}

#[tokio::test]
async fn key_and_token_api_auth_adds_the_two_query_parameters() {
    let h = harness("{ style = \"key_and_token\", key_param = \"key\", token_param = \"token\" }")
        .await;
    let authorized = h.authorize(None).await;
    let id = h.connected(&h.callback(&authorized).await).await;
    let grant = h.vault.oauth1_grant(&id).await.expect("grant");
    let mut url = url::Url::parse("https://api.trello.com/1/members/me").expect("url");
    assert!(grant.authenticate("GET", &mut url, &[]).is_none());
    let pairs = query_of(url.as_str());
    assert_eq!(get(&pairs, "key"), Some(CONSUMER_KEY));
    assert_eq!(
        get(&pairs, "token"),
        Some(h.fake.access_tokens()[0].as_str())
    );
    // Trello's revocation: DELETE /tokens/{token} with the key and the token.
    let access = h.fake.access_tokens();
    h.vault.disconnect(&id, false).await.expect("disconnect");
    assert_eq!(h.fake.revoked(), access);
    assert!(h.stored().await.is_empty());
}

#[tokio::test]
async fn a_reconnect_keeps_the_connection_id_and_replaces_the_tokens() {
    let h = harness("{ style = \"signed\" }").await;
    let id = h
        .connected(&h.callback(&h.authorize(None).await).await)
        .await;
    let first = h.connections.get(&id).await.expect("get").expect("stored");
    let again = h.authorize(Some(id.clone())).await;
    let reconnected = h.connected(&h.callback(&again).await).await;
    assert_eq!(reconnected, id);
    let second = h.connections.get(&id).await.expect("get").expect("stored");
    assert_eq!(second.token_generation, first.token_generation + 1);
    assert_eq!(h.stored().await.len(), 1);
}

#[tokio::test]
async fn a_forged_oauth_token_is_refused_and_stores_nothing() {
    let h = harness("{ style = \"signed\" }").await;
    let authorized = h.authorize(None).await;
    let forged = Authorized {
        query: with(&authorized.query, "oauth_token", Some("temp-999")),
        cookie: authorized.cookie.clone(),
    };
    let reply = h.callback(&forged).await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.body.contains("oauth_token does not belong"),
        "{}",
        reply.body
    );
    assert!(h.stored().await.is_empty());
    assert!(
        h.fake.access_tokens().is_empty(),
        "no token credentials were asked for"
    );
    // The state was consumed: the genuine callback cannot be replayed after a forgery.
    assert_eq!(h.callback(&authorized).await.status, 400);
    assert!(h.stored().await.is_empty());
}

#[tokio::test]
async fn a_replayed_state_is_refused_and_stores_nothing_more() {
    let h = harness("{ style = \"signed\" }").await;
    let authorized = h.authorize(None).await;
    h.connected(&h.callback(&authorized).await).await;
    let replay = h.callback(&authorized).await;
    assert_eq!(replay.status, 400);
    assert!(
        replay.body.contains("already used state"),
        "{}",
        replay.body
    );
    assert_eq!(h.stored().await.len(), 1);
    assert_eq!(h.fake.access_tokens().len(), 1);
}

#[tokio::test]
async fn a_missing_verifier_is_refused_and_stores_nothing() {
    let h = harness("{ style = \"signed\" }").await;
    let authorized = h.authorize(None).await;
    let reply = h
        .callback(&Authorized {
            query: with(&authorized.query, "oauth_verifier", None),
            cookie: authorized.cookie.clone(),
        })
        .await;
    assert_eq!(reply.status, 400);
    assert!(reply.body.contains("no oauth_verifier"), "{}", reply.body);
    assert!(h.stored().await.is_empty());
    assert!(h.fake.access_tokens().is_empty());
}

#[tokio::test]
async fn a_wrong_verifier_returns_the_user_with_an_error_and_stores_nothing() {
    let h = harness("{ style = \"signed\" }").await;
    let authorized = h.authorize(None).await;
    let reply = h
        .callback(&Authorized {
            query: with(&authorized.query, "oauth_verifier", Some("guessed")),
            cookie: authorized.cookie.clone(),
        })
        .await;
    let back = query_of(location(&reply));
    assert_eq!(get(&back, "status"), Some("error"));
    assert_eq!(get(&back, "error"), Some("access_denied"));
    assert!(h.stored().await.is_empty());
    assert_eq!(h.fake.rejected(), vec!["wrong verifier".to_owned()]);
}

#[tokio::test]
async fn a_callback_from_another_browser_leaves_the_state_for_the_real_one() {
    let h = harness("{ style = \"signed\" }").await;
    let authorized = h.authorize(None).await;
    let stolen = h
        .callback(&Authorized {
            query: authorized.query.clone(),
            cookie: "junction_oauth_fakeone=another".into(),
        })
        .await;
    assert_eq!(stolen.status, 400);
    assert!(h.stored().await.is_empty());
    h.connected(&h.callback(&authorized).await).await;
}

#[tokio::test]
async fn a_start_without_a_usable_session_is_refused_and_asks_the_provider_nothing() {
    let h = harness("{ style = \"signed\" }").await;
    for session in [None, Some("made-up-session")] {
        let reply = h.start(session).await;
        assert_eq!(reply.status, 401, "{}", reply.body);
        assert!(reply.body.contains("connect"), "{}", reply.body);
    }
    let token = h.session(None).await;
    assert_eq!(h.start(Some(&token)).await.status, 302);
    assert_eq!(
        h.start(Some(&token)).await.status,
        401,
        "a session works once"
    );
    assert_eq!(
        h.states.len(),
        1,
        "only the one real start left a pending state"
    );
    assert_eq!(h.fake.pending_temporary(), 1, "the provider was asked once");
    assert!(h.stored().await.is_empty());
}

#[tokio::test]
async fn the_temporary_secret_stays_server_side_and_out_of_logs() {
    let h = harness("{ style = \"signed\" }").await;
    let token = h.session(None).await;
    let started = h.start(Some(&token)).await;
    let temporary = get(&query_of(location(&started)), "oauth_token")
        .expect("oauth_token")
        .to_owned();
    assert_eq!(h.states.len(), 1);
    // The fake's temporary secrets are "temp-secret-<n>&=": not in the redirect, not in
    // the cookie, redacted when the pending state is printed.
    assert!(!location(&started).contains("temp-secret-"));
    assert!(!cookie(&started).contains("temp-secret-"));
    let printed = format!("{:?}", h.states);
    assert!(printed.contains(&temporary));
    assert!(!printed.contains("temp-secret-"), "{printed}");
}

#[tokio::test]
async fn a_reconnect_with_another_account_is_refused_and_its_grant_revoked() {
    let h = harness("{ style = \"signed\" }").await;
    let id = h
        .connected(&h.callback(&h.authorize(None).await).await)
        .await;
    let before = h.connections.get(&id).await.expect("get").expect("stored");
    assert_eq!(
        before.account_id.as_deref(),
        Some("user-1"),
        "the answer's user_id"
    );
    let kept = h.fake.access_tokens();

    h.fake.sign_in_as("user-2");
    let other = h.authorize(Some(id.clone())).await;
    let refused = h.callback(&other).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let after = h.connections.get(&id).await.expect("get").expect("stored");
    assert_eq!(after.account_id.as_deref(), Some("user-1"));
    assert_eq!(
        after.token_generation, before.token_generation,
        "tokens unchanged"
    );
    assert_eq!(
        h.fake.access_tokens(),
        kept,
        "the refused grant was revoked"
    );
    assert_eq!(h.fake.revoked().len(), 1);

    // A session that allows an account change may bring another one.
    let token = h
        .session_for(ConnectSessionRequest {
            connection: Some(id.clone()),
            allow_account_change: true,
            ..session_request(PROVIDER)
        })
        .await;
    let allowed = h.authorize_with(&token).await;
    assert_eq!(h.connected(&h.callback(&allowed).await).await, id);
    let changed = h.connections.get(&id).await.expect("get").expect("stored");
    assert_eq!(changed.account_id.as_deref(), Some("user-2"));
}

/// A credentials endpoint answering 300 MB is refused at the cap while the body is read
/// (declared or not), never held whole in memory, and nothing is parsed from it.
#[tokio::test]
async fn an_oversized_credentials_answer_is_refused_at_the_cap() {
    for head in [
        "HTTP/1.1 200 OK\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 314572800\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-type: application/x-www-form-urlencoded\r\nconnection: close\r\n\r\n",
    ] {
        let base =
            junction_aws::response_body::testing::stream_answer(head, 300 * 1024 * 1024).await;
        let keys = super::sign::SigningKeys {
            consumer_key: CONSUMER_KEY.to_owned(),
            consumer_secret: junction_aws::crypto::SecretString::new(CONSUMER_SECRET),
            token: None,
        };
        let answer = super::credentials_request(
            &format!("{base}/initiate"),
            &keys,
            &super::ProtocolParams::default(),
        )
        .await;
        assert!(
            matches!(
                answer,
                Err(super::OAuth1Error::Malformed("answer too large"))
            ),
            "{head}: {answer:?}"
        );
    }
}
