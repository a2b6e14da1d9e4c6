//! The pasted-credential flow against a Bot-API-like server on loopback that takes the
//! token in the path (`/bot<token>/getMe`, as core.telegram.org/bots/api#making-requests
//! describes), with the in-memory stores and key service of the connect-flow harness.

use std::sync::{Arc, Mutex};

use axum::{Router, extract::State, http::StatusCode, routing::any};

use super::*;
use crate::Connection;
use crate::ConnectionStore as _;
use crate::testing::{BASE, RETURN_TO, get, harness_over, query_of, session_request, start_server};
use crate::tests::{capture_logs, captured};

/// A token the fake Bot API accepts (the shape of the docs' example).
const GOOD: &str = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11";
/// Well formed, but the fake Bot API does not know it.
const UNKNOWN: &str = "654321:ZYX-wvu9876tsRqp-onm42K8j9i876kl22";

/// The fake Bot API: the paths it saw, and the status it answers a known token with.
#[derive(Clone, Default)]
struct BotApi {
    seen: Arc<Mutex<Vec<String>>>,
    failing: Arc<Mutex<Option<u16>>>,
}

async fn bot_api(State(api): State<BotApi>, uri: axum::http::Uri) -> (StatusCode, String) {
    api.seen.lock().expect("lock").push(uri.path().to_owned());
    if let Some(status) = *api.failing.lock().expect("lock") {
        return (
            StatusCode::from_u16(status).expect("status"),
            "{}".to_owned(),
        );
    }
    if uri.path() == format!("/bot{GOOD}/getMe") {
        (
            StatusCode::OK,
            r#"{"ok":true,"result":{"id":123456,"is_bot":true,"first_name":"Test"}}"#.to_owned(),
        )
    } else {
        (
            StatusCode::UNAUTHORIZED,
            r#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#.to_owned(),
        )
    }
}

struct Bot {
    h: crate::testing::Harness,
    api: BotApi,
    api_base: String,
}

impl Bot {
    fn seen(&self) -> Vec<String> {
        self.api.seen.lock().expect("lock").clone()
    }

    async fn stored(&self) -> Vec<Connection> {
        self.h.connections.list_all(100).await.expect("list")
    }

    /// A connect session for `pastebot`, started: the form's state and the cookie.
    async fn start(&self) -> (String, String) {
        self.start_for(session_request("pastebot")).await
    }

    async fn start_for(&self, request: crate::ConnectSessionRequest) -> (String, String) {
        let token = self.h.mint(&request).await;
        let reply = pasted_route(
            &self.h.flow,
            "pastebot",
            "start",
            "GET",
            vec![("session".into(), token)],
            None,
            b"",
            BASE,
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let header = |name: &str| {
            reply
                .headers
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        let cookie = header("set-cookie")
            .and_then(|c| {
                c.split(';')
                    .next()
                    .and_then(|pair| pair.split_once('='))
                    .map(|(_, v)| v.to_owned())
            })
            .expect("binding cookie");
        (form_state(&reply.body), cookie)
    }

    async fn post(&self, state: &str, credential: &str, cookie: Option<&str>) -> HttpReply {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("state", state)
            .append_pair("credential", credential)
            .finish();
        let header = cookie.map(|c| format!("other=1; junction_oauth_pastebot={c}"));
        pasted_route(
            &self.h.flow,
            "pastebot",
            "callback",
            "POST",
            Vec::new(),
            header.as_deref(),
            body.as_bytes(),
            BASE,
        )
        .await
    }
}

/// The hidden `state` field of a form page.
fn form_state(page: &str) -> String {
    let marker = "name=\"state\" value=\"";
    let start = page.find(marker).expect("a state field") + marker.len();
    page[start..]
        .split('"')
        .next()
        .expect("state value")
        .to_owned()
}

async fn bot() -> Bot {
    let api = BotApi::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let app = Router::new()
        .route("/{*path}", any(bot_api))
        .with_state(api.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let text = format!(
        r#"id = "pastebot"
name = "Paste <Bot> & co"
docs = "https://example.com/bot"

[pasted_credential]
label = "Bot token"
help = "From @BotFather <b>\"here\"</b>"
pattern = "^(?P<bot_id>[0-9]{{1,20}}):[A-Za-z0-9_-]{{1,200}}$"
account_group = "bot_id"

[api]
base_url = "{base}"
credential = {{ style = "path_prefix", prefix = "/bot" }}
rate_limit = {{ requests_per_second = 30.0, burst = 30, scope = "provider" }}
test_request = {{ method = "GET", path = "/getMe" }}
"#
    );
    let catalog = junction_catalog::Catalog::from_files_with_rules(
        &[("pastebot.toml", text.as_str())],
        EndpointRules::LoopbackHttpForTests,
    )
    .expect("catalog");
    let catalog: &'static junction_catalog::Catalog = Box::leak(Box::new(catalog));
    let server = start_server("pastebot", fake_provider::AuthServerConfig::default()).await;
    Bot {
        h: harness_over(server, catalog, &[]),
        api,
        api_base: base,
    }
}

#[tokio::test]
async fn a_verified_token_is_sealed_and_the_user_goes_back_connected() {
    let (_guard, logs) = capture_logs();
    let bot = bot().await;
    let (state, cookie) = bot.start().await;
    assert_eq!(state.len(), 43, "256 random bits");

    let reply = bot.post(&state, GOOD, Some(&cookie)).await;

    assert_eq!(reply.status, 303, "{}", reply.body);
    let location = reply
        .headers
        .iter()
        .find(|(key, _)| key == "location")
        .map(|(_, value)| value.clone())
        .expect("location");
    assert!(location.starts_with(RETURN_TO), "{location}");
    let back = query_of(&location);
    assert_eq!(get(&back, "status"), Some("connected"));
    assert_eq!(
        bot.seen(),
        vec![format!("/bot{GOOD}/getMe")],
        "verified with getMe before it was stored"
    );
    let stored = bot.stored().await;
    assert_eq!(stored.len(), 1);
    let connection = &stored[0];
    assert_eq!(get(&back, "connection_id"), Some(connection.id.as_str()));
    assert_eq!(
        connection.account_id.as_deref(),
        Some("123456"),
        "the bot id"
    );
    assert_eq!(connection.tenant, "tenant-1");
    assert!(!connection.refreshable && connection.refresh_at.is_none());
    assert_eq!(connection.stated_lifetime, None, "no expiry");
    // Sealed under the connection's own context, as OAuth tokens are.
    let sealed = connection.tokens.as_ref().expect("sealed");
    assert!(
        !String::from_utf8_lossy(&sealed.ciphertext).contains("ABC-DEF"),
        "not in the clear"
    );
    let opened = bot.h.vault.tokens(connection).await.expect("opens");
    assert_eq!(opened.access_token.expose(), GOOD);
    assert!(opened.refresh_token.is_none());
    let token = bot
        .h
        .vault
        .access_token(&connection.id)
        .await
        .expect("token");
    assert_eq!(token.value.expose(), GOOD);
    assert_eq!(
        token.params.get("account").map(String::as_str),
        Some("123456")
    );

    // The refresher never selects it; a disconnect deletes it without revocation.
    let report = bot
        .h
        .vault
        .refresh_due(
            std::time::Duration::from_secs(10 * 365 * 86_400),
            std::time::Duration::from_secs(10),
        )
        .await
        .expect("sweep");
    assert_eq!(report.due, 0, "{report:?}");
    bot.h
        .vault
        .disconnect(&connection.id, false)
        .await
        .expect("disconnect");
    assert!(bot.stored().await.is_empty());
    assert_eq!(bot.seen().len(), 1, "nothing sent to revoke");
    let events = bot.h.bus.events();
    assert!(
        events.iter().any(|e| e.event_type == "connection.deleted"),
        "{events:?}"
    );
    for event in &events {
        assert!(
            !serde_json::to_string(event)
                .expect("json")
                .contains("ABC-DEF")
        );
    }
    let logs = captured(&logs);
    assert!(logs.contains("connection stored"), "{logs}");
    assert!(!logs.contains("ABC-DEF"), "the token is in no log line");
}

#[tokio::test]
async fn the_form_escapes_the_catalog_s_text_and_allows_no_third_party_content() {
    let bot = bot().await;
    let token = bot.h.mint(&session_request("pastebot")).await;
    let reply = pasted_route(
        &bot.h.flow,
        "pastebot",
        "start",
        "GET",
        vec![("session".into(), token)],
        None,
        b"",
        BASE,
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.body.contains("Paste &lt;Bot&gt; &amp; co"),
        "{}",
        reply.body
    );
    assert!(
        reply
            .body
            .contains("From @BotFather &lt;b&gt;&quot;here&quot;&lt;/b&gt;"),
        "{}",
        reply.body
    );
    assert!(!reply.body.contains("<b>"));
    assert!(reply.body.contains("action=\"callback\""));
    let csp = reply
        .headers
        .iter()
        .find(|(key, _)| key == "content-security-policy")
        .map(|(_, value)| value.as_str())
        .expect("a CSP");
    assert!(csp.contains("default-src 'none'") && csp.contains("form-action 'self'"));
    let cookie = reply
        .headers
        .iter()
        .find(|(key, _)| key == "set-cookie")
        .map(|(_, value)| value.as_str())
        .expect("cookie");
    assert!(cookie.contains("Path=/oauth/pastebot/callback") && cookie.contains("HttpOnly"));
    // The link works once.
    let again = bot.h.mint(&session_request("pastebot")).await;
    let first = pasted_route(
        &bot.h.flow,
        "pastebot",
        "start",
        "GET",
        vec![("session".into(), again.clone())],
        None,
        b"",
        BASE,
    )
    .await;
    assert_eq!(first.status, 200);
    let replayed = pasted_route(
        &bot.h.flow,
        "pastebot",
        "start",
        "GET",
        vec![("session".into(), again)],
        None,
        b"",
        BASE,
    )
    .await;
    assert_eq!(replayed.status, 401, "{}", replayed.body);
}

#[tokio::test]
async fn a_value_the_pattern_refuses_stores_nothing_and_costs_no_provider_call() {
    let (_guard, logs) = capture_logs();
    let bot = bot().await;
    let (state, cookie) = bot.start().await;

    let reply = bot
        .post(&state, "123456:ABC DEF/../secret-typo", Some(&cookie))
        .await;

    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body.contains("not a bot token"), "{}", reply.body);
    assert!(
        !reply.body.contains("secret-typo"),
        "the value is not echoed"
    );
    assert!(bot.stored().await.is_empty());
    assert!(bot.seen().is_empty(), "no provider call");
    // The form comes back with a new state for the same browser; the old one is used.
    let retry = form_state(&reply.body);
    assert_ne!(retry, state);
    let replay = bot.post(&state, GOOD, Some(&cookie)).await;
    assert_eq!(replay.status, 400, "{}", replay.body);
    assert!(replay.body.contains("already used"), "{}", replay.body);
    let fixed = bot.post(&retry, GOOD, Some(&cookie)).await;
    assert_eq!(fixed.status, 303, "{}", fixed.body);
    assert_eq!(bot.stored().await.len(), 1);
    assert!(!captured(&logs).contains("secret-typo"));
}

#[tokio::test]
async fn a_token_the_provider_refuses_stores_nothing_and_says_so() {
    let (_guard, logs) = capture_logs();
    let bot = bot().await;
    let (state, cookie) = bot.start().await;

    let reply = bot.post(&state, UNKNOWN, Some(&cookie)).await;

    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(
        reply
            .body
            .contains("did not accept this bot token: nothing was saved"),
        "{}",
        reply.body
    );
    assert_eq!(bot.seen(), vec![format!("/bot{UNKNOWN}/getMe")]);
    assert!(bot.stored().await.is_empty(), "nothing stored");
    assert!(bot.h.bus.events().is_empty(), "nothing announced");
    assert!(!reply.body.contains(UNKNOWN));
    let logs = captured(&logs);
    assert!(logs.contains("credential_refused"), "{logs}");
    assert!(
        !logs.contains("ZYX-wvu"),
        "the token is in no log line: {logs}"
    );

    // A provider that cannot answer is not a refusal: try again later.
    *bot.api.failing.lock().expect("lock") = Some(502);
    let retry = form_state(&reply.body);
    let reply = bot.post(&retry, GOOD, Some(&cookie)).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(reply.body.contains("try again"), "{}", reply.body);
    assert!(bot.stored().await.is_empty());
}

#[tokio::test]
async fn a_form_from_another_browser_or_a_replayed_one_is_refused() {
    let bot = bot().await;
    let (state, cookie) = bot.start().await;

    for other in [None, Some("not-the-cookie")] {
        let reply = bot.post(&state, GOOD, other).await;
        assert_eq!(reply.status, 400, "{}", reply.body);
        assert!(reply.body.contains("another browser"), "{}", reply.body);
    }
    assert!(bot.seen().is_empty() && bot.stored().await.is_empty());

    // The state was left for the browser that started it.
    let reply = bot.post(&state, GOOD, Some(&cookie)).await;
    assert_eq!(reply.status, 303, "{}", reply.body);
    let replay = bot.post(&state, GOOD, Some(&cookie)).await;
    assert_eq!(replay.status, 400, "{}", replay.body);
    assert!(replay.body.contains("already used"), "{}", replay.body);
    assert_eq!(bot.stored().await.len(), 1, "one connection");
    assert_eq!(bot.seen().len(), 1, "the replay sent nothing");
}

#[tokio::test]
async fn an_expired_attempt_an_oversized_form_and_other_methods_are_refused() {
    let bot = bot().await;
    let (state, cookie) = bot.start().await;
    let huge = "a".repeat(MAX_FORM_BYTES);
    let reply = bot.post(&state, &huge, Some(&cookie)).await;
    assert_eq!(reply.status, 413, "{}", reply.body);
    let get_callback = pasted_route(
        &bot.h.flow,
        "pastebot",
        "callback",
        "GET",
        vec![("state".into(), state.clone())],
        None,
        b"",
        BASE,
    )
    .await;
    assert_eq!(get_callback.status, 405, "{}", get_callback.body);
    bot.h.clock.advance(time::Duration::seconds(601));
    let reply = bot.post(&state, GOOD, Some(&cookie)).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body.contains("expired"), "{}", reply.body);
    assert!(bot.seen().is_empty() && bot.stored().await.is_empty());
}

#[tokio::test]
async fn a_reconnect_must_paste_the_same_bot_s_token() {
    let bot = bot().await;
    let (state, cookie) = bot.start().await;
    assert_eq!(bot.post(&state, GOOD, Some(&cookie)).await.status, 303);
    let id = bot.stored().await[0].id.clone();
    let before = bot.h.stored(&id).await;

    // Another bot's token (the fake accepts only GOOD: make it accept everything).
    *bot.api.failing.lock().expect("lock") = Some(200);
    let (state, cookie) = bot
        .start_for(crate::ConnectSessionRequest {
            connection: Some(id.clone()),
            ..session_request("pastebot")
        })
        .await;
    let reply = bot.post(&state, UNKNOWN, Some(&cookie)).await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(
        reply.body.contains("another account") && reply.body.contains("nothing was changed"),
        "{}",
        reply.body
    );
    let after = bot.h.stored(&id).await;
    assert_eq!(after.token_generation, before.token_generation, "unchanged");

    // The same bot's (new) token replaces the old one.
    let (state, cookie) = bot
        .start_for(crate::ConnectSessionRequest {
            connection: Some(id.clone()),
            ..session_request("pastebot")
        })
        .await;
    let renewed = "123456:NEW-token_value";
    assert_eq!(bot.post(&state, renewed, Some(&cookie)).await.status, 303);
    let after = bot.h.stored(&id).await;
    assert_eq!(after.token_generation, before.token_generation + 1);
    let opened = bot.h.vault.tokens(&after).await.expect("opens");
    assert_eq!(opened.access_token.expose(), renewed);
    assert_eq!(bot.stored().await.len(), 1);
}

/// A token revoked where it was issued (@BotFather's /revoke): the provider's 401 on an
/// API call marks the connection for a reconnect and announces it, as a refused refresh
/// token does; the answer still reaches the caller, and later calls are refused here.
#[tokio::test]
async fn a_revoked_token_s_401_marks_the_connection_for_a_reconnect() {
    let bot = bot().await;
    let (state, cookie) = bot.start().await;
    assert_eq!(bot.post(&state, GOOD, Some(&cookie)).await.status, 303);
    let connection = bot.stored().await.remove(0);
    let url = format!("{}/getMe", bot.api_base);
    let http = reqwest::Client::new();
    let send = || {
        bot.h.vault.send_authorized(&connection.id, |token| {
            http.get(format!("{url}?length={}", token.value.expose().len()))
        })
    };
    // Accepted: nothing changes.
    *bot.api.failing.lock().expect("lock") = Some(200);
    assert_eq!(send().await.expect("sent").status(), 200);
    assert_eq!(bot.stored().await[0].state, crate::ConnectionState::Active);

    *bot.api.failing.lock().expect("lock") = Some(401);
    let refused = send().await.expect("the answer reaches the caller");
    assert_eq!(refused.status(), 401);
    let stored = bot.stored().await.remove(0);
    assert_eq!(stored.state, crate::ConnectionState::NeedsReauth);
    assert_eq!(
        stored.last_error.as_deref(),
        Some("needs_reauth: credential_rejected")
    );
    let announced: Vec<_> = bot
        .h
        .bus
        .events()
        .into_iter()
        .filter(|e| e.event_type == "connection.needs_reauth")
        .collect();
    assert_eq!(announced.len(), 1, "{announced:?}");
    assert_eq!(announced[0].data["reason"], "credential_rejected");
    let calls = bot.seen().len();
    assert!(send().await.is_err(), "no call with a refused credential");
    assert_eq!(bot.seen().len(), calls);
}

/// A path credential stays one segment whatever it holds: a bot token's characters as
/// they are, a separator, query, fragment, escape or non-ASCII byte percent-encoded.
#[test]
fn a_path_credential_cannot_leave_its_segment() {
    assert_eq!(path_safe(GOOD), GOOD);
    assert_eq!(path_safe("a.b~c_d-e:f"), "a.b~c_d-e:f");
    assert_eq!(
        path_safe("1:x/../admin?q=1#f %é"),
        "1:x%2F..%2Fadmin%3Fq%3D1%23f%20%25%C3%A9"
    );
}
