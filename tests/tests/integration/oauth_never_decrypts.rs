//! The OAuth function is internet-facing, so `template.yaml` lets it generate data keys
//! but never decrypt (`the_oauth_function_can_seal_tokens_but_never_open_them` in
//! `template.rs`). This proves the code needs no more: every route the function serves
//! (`web::oauth_route`, as `functions/oauth` calls it) — start, callback, and a reconnect
//! (a connect session for the connection, start, then its callback) — seals tokens and
//! never opens one; so does the pasted-credential form (its start and its submission,
//! refused and accepted).

use std::sync::Arc;

use fake_provider::{AuthServerConfig, FakeAuthServer};
use junction_aws::clock::FixedClock;
use junction_aws::crypto::InMemoryKeyService;
use junction_aws::events::InMemoryEventBus;
use junction_aws::secrets::InMemorySecretSource;
use junction_catalog::{Catalog, EndpointRules};
use junction_oauth::{
    ConnectFlow, ConnectSessionRequest, ConnectSessions, FlowSettings, InMemoryConnectSessionStore,
    InMemoryConnectionStore, InMemoryStateStore, ProviderClient, SecretCredentials, TokenVault,
    VaultSettings, web,
};

const BASE: &str = "https://hub.example.com";
const RETURN_TO: &str = "https://app.example.com/done";

fn header<'a>(reply: &'a web::HttpReply, name: &str) -> &'a str {
    reply
        .headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
        .unwrap_or_else(|| panic!("no {name} header: {reply:?}"))
}

/// A connect session (reconnecting `connection` when given) → start → the
/// authorization server → callback, through the function's routes; returns the
/// connection id the user is sent back with.
async fn connect(
    flow: &ConnectFlow,
    sessions: &ConnectSessions,
    connection: Option<&str>,
) -> String {
    let session = ConnectSessionRequest {
        tenant: "tenant-a".into(),
        provider: "fakeauth".into(),
        connection: connection.map(str::to_owned),
        return_to: Some(RETURN_TO.into()),
        ..ConnectSessionRequest::default()
    };
    let minted = sessions.mint(&session, BASE).await.expect("session");
    let query = vec![("session".to_owned(), minted.token.expose().to_owned())];
    let start = web::oauth_route(flow, "fakeauth", "start", query, None, BASE).await;
    assert_eq!(start.status, 302, "{start:?}");
    let cookie = header(&start, "set-cookie")
        .split(';')
        .next()
        .expect("name=value")
        .to_owned();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let authorized = http
        .get(header(&start, "location"))
        .send()
        .await
        .expect("authorize");
    let callback = url::Url::parse(
        authorized
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("redirect to the callback"),
    )
    .expect("callback URL");
    let pairs = callback
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let done = web::oauth_route(flow, "fakeauth", "callback", pairs, Some(&cookie), BASE).await;
    assert_eq!(done.status, 302, "{done:?}");
    let back = url::Url::parse(header(&done, "location")).expect("return_to");
    let value = |name: &str| {
        back.query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    };
    assert_eq!(value("status").as_deref(), Some("connected"), "{back}");
    value("connection_id").expect("a connection id")
}

#[tokio::test]
async fn start_callback_and_reconnect_seal_tokens_and_never_open_one() {
    let server = FakeAuthServer::start(AuthServerConfig {
        redirect_uris: vec![format!("{BASE}/oauth/fakeauth/callback")],
        ..AuthServerConfig::default()
    })
    .await;
    let entry = format!(
        "id = \"fakeauth\"\nname = \"Fake authorization server\"\ndocs = \"https://example.com/fake\"\n\n[oauth]\n{}",
        server.oauth_catalog_fields()
    );
    let catalog: &'static Catalog = Box::leak(Box::new(
        Catalog::from_files_with_rules(
            &[("fakeauth.toml", entry.as_str())],
            EndpointRules::LoopbackHttpForTests,
        )
        .expect("catalog"),
    ));
    let secrets = InMemorySecretSource::default();
    secrets.put(
        "junction/oauth/fakeauth",
        r#"{"client_id":"junction-test-client","client_secret":"junction-test-secret"}"#,
    );
    let keys = Arc::new(InMemoryKeyService::default());
    let vault = TokenVault::new(
        catalog,
        Arc::new(InMemoryConnectionStore::default()),
        keys.clone(),
        Arc::new(SecretCredentials::new(secrets, "junction")),
        ProviderClient::new(),
        Arc::new(InMemoryEventBus::default()),
        Arc::new(FixedClock::at_unix(1_800_000_000)),
        VaultSettings::default(),
    );
    let settings = FlowSettings {
        return_to_origins: vec!["https://app.example.com".into()],
        default_return_to: None,
    };
    let store = Arc::new(InMemoryConnectSessionStore::default());
    let sessions = ConnectSessions::new(vault.clone(), store.clone(), settings.clone());
    let flow = ConnectFlow::new(
        vault.clone(),
        Arc::new(InMemoryStateStore::default()),
        store,
        settings,
    );

    let id = connect(&flow, &sessions, None).await;
    assert_eq!(keys.calls(), (1, 0), "a new connection: sealed, not opened");
    let again = connect(&flow, &sessions, Some(&id)).await;
    assert_eq!(again, id, "a reconnect keeps the connection");
    assert_eq!(keys.calls(), (2, 0), "a reconnect: sealed, not opened");

    // The counter sees a decrypt when one happens (the refresher's and the poll
    // worker's path), so the zeros above are measured, not assumed.
    vault
        .access_token(&id)
        .await
        .expect("the sealed tokens open");
    assert_eq!(keys.calls(), (2, 1));
}

/// The pasted-credential form (`GET …/start`, then its `POST …/callback`), as the
/// function routes it: the bot token is checked with the provider's test request and
/// sealed, and nothing is opened, a refused value included.
#[tokio::test]
async fn the_pasted_credential_form_seals_the_value_and_never_opens_one() {
    use junction_oauth::pasted;

    const TOKEN: &str = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11";
    // A Bot API that knows one token.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api = format!("http://{}", listener.local_addr().expect("addr"));
    let app = axum::Router::new().route(
        "/{*path}",
        axum::routing::get(|uri: axum::http::Uri| async move {
            if uri.path() == format!("/bot{TOKEN}/getMe") {
                (
                    axum::http::StatusCode::OK,
                    r#"{"ok":true,"result":{"id":123456}}"#,
                )
            } else {
                (axum::http::StatusCode::UNAUTHORIZED, r#"{"ok":false}"#)
            }
        }),
    );
    let served = tokio::spawn(async move { axum::serve(listener, app).await });
    let entry = format!(
        r#"id = "pastebot"
name = "Paste bot"
docs = "https://example.com/bot"

[pasted_credential]
label = "Bot token"
help = "From the bot's settings"
pattern = "^(?P<bot_id>[0-9]{{1,20}}):[A-Za-z0-9_-]{{1,200}}$"
account_group = "bot_id"

[api]
base_url = "{api}"
credential = {{ style = "path_prefix", prefix = "/bot" }}
rate_limit = {{ requests_per_second = 30.0, burst = 30, scope = "provider" }}
test_request = {{ method = "GET", path = "/getMe" }}
"#
    );
    let catalog: &'static Catalog = Box::leak(Box::new(
        Catalog::from_files_with_rules(
            &[("pastebot.toml", entry.as_str())],
            EndpointRules::LoopbackHttpForTests,
        )
        .expect("catalog"),
    ));
    let keys = Arc::new(InMemoryKeyService::default());
    let vault = TokenVault::new(
        catalog,
        Arc::new(InMemoryConnectionStore::default()),
        keys.clone(),
        Arc::new(SecretCredentials::new(
            InMemorySecretSource::default(),
            "junction",
        )),
        ProviderClient::new(),
        Arc::new(InMemoryEventBus::default()),
        Arc::new(FixedClock::at_unix(1_800_000_000)),
        VaultSettings::default(),
    );
    let settings = FlowSettings {
        return_to_origins: vec!["https://app.example.com".into()],
        default_return_to: None,
    };
    let store = Arc::new(InMemoryConnectSessionStore::default());
    let sessions = ConnectSessions::new(vault.clone(), store.clone(), settings.clone());
    let flow = ConnectFlow::new(
        vault.clone(),
        Arc::new(InMemoryStateStore::default()),
        store,
        settings,
    );
    assert!(flow.connects_with_pasted_credential("pastebot"));
    let minted = sessions
        .mint(
            &ConnectSessionRequest {
                tenant: "tenant-a".into(),
                provider: "pastebot".into(),
                return_to: Some(RETURN_TO.into()),
                ..ConnectSessionRequest::default()
            },
            BASE,
        )
        .await
        .expect("session");
    let route =
        |step: &'static str, method: &'static str, query, cookie: Option<String>, body: String| {
            let flow = &flow;
            async move {
                pasted::pasted_route(
                    flow,
                    "pastebot",
                    step,
                    method,
                    query,
                    cookie.as_deref(),
                    body.as_bytes(),
                    BASE,
                )
                .await
            }
        };
    let form = |page: &str| {
        let marker = "name=\"state\" value=\"";
        let start = page.find(marker).expect("a state field") + marker.len();
        page[start..].split('"').next().expect("state").to_owned()
    };
    let submit = |state: String, value: &str| {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("state", &state)
            .append_pair("credential", value)
            .finish()
    };

    let start = route(
        "start",
        "GET",
        vec![("session".to_owned(), minted.token.expose().to_owned())],
        None,
        String::new(),
    )
    .await;
    assert_eq!(start.status, 200, "{start:?}");
    let cookie = header(&start, "set-cookie")
        .split(';')
        .next()
        .expect("name=value")
        .to_owned();
    // A token the provider refuses: the form again, nothing sealed or opened.
    let refused = route(
        "callback",
        "POST",
        Vec::new(),
        Some(cookie.clone()),
        submit(form(&start.body), "999:not-the-bots-token"),
    )
    .await;
    assert_ne!(refused.status, 303, "{refused:?}");
    assert_eq!(
        keys.calls(),
        (0, 0),
        "a refused value: nothing sealed or opened"
    );
    let accepted = route(
        "callback",
        "POST",
        Vec::new(),
        Some(cookie),
        submit(form(&refused.body), TOKEN),
    )
    .await;
    assert_eq!(accepted.status, 303, "{accepted:?}");
    assert!(header(&accepted, "location").starts_with(RETURN_TO));
    assert_eq!(keys.calls(), (1, 0), "the token sealed, never opened");
    served.abort();
}
