//! A pasted credential end to end through the local stack: Telegram's own catalog entry
//! (its `[api] base_url` pointed at a fake Bot API on loopback) connected through the
//! real `oauth` binary's form, and used through the real `connections` binary's proxy.
//!
//! The backend mints a connect session; the browser opens the connect URL and gets the
//! form with the binding cookie; a token the Bot API refuses stores nothing and brings
//! the form back; the accepted one is verified with getMe, sealed and stored, and the
//! browser lands on `return_to` with the connection id. A proxied `GET /getMe` reaches the
//! fake as `/bot<token>/getMe`; the connection shows the bot id as its account, nothing
//! to refresh; the disconnect deletes it. No function wrote either token.

use crate::common;
use common::{
    browser, connect_url, first_cookie, location, session_for, start_with_overlay,
    stop_and_check_processes_are_gone, watch,
};

use std::sync::{Arc, Mutex};

use axum::{Router, extract::State, http::StatusCode, routing::any};
use local_stack::{http_api::LOCAL_IAM_HEADER, stack::LocalStack};
use serde_json::{Value, json};

const RETURN_TO: &str = "https://app.example.com/integrations";
/// The token the fake Bot API knows (the shape of core.telegram.org's example).
const GOOD: &str = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11";
/// Well formed, unknown to the fake.
const UNKNOWN: &str = "654321:ZYX-wvu9876tsRqp-onm42K8j9i876kl22";

/// The paths the fake Bot API received.
type Seen = Arc<Mutex<Vec<String>>>;

/// Answers `/bot<GOOD>/<method>` as the Bot API does, anything else 401.
async fn bot_api(State(seen): State<Seen>, uri: axum::http::Uri) -> (StatusCode, String) {
    seen.lock().expect("lock").push(uri.path().to_owned());
    if uri.path().starts_with(&format!("/bot{GOOD}/")) {
        (
            StatusCode::OK,
            json!({"ok": true, "result": {"id": 123456, "is_bot": true, "first_name": "Junction test"}})
                .to_string(),
        )
    } else {
        (
            StatusCode::UNAUTHORIZED,
            json!({"ok": false, "error_code": 401, "description": "Unauthorized"}).to_string(),
        )
    }
}

/// Telegram's built-in entry as an overlay (`[[provider]]`), its API on `base`.
fn telegram_overlay(base: &str) -> String {
    let entry = include_str!("../../../../shared/catalog/providers/telegram.toml");
    let mut overlay = String::from("[[provider]]\n");
    for line in entry.lines() {
        if let Some(section) = line.strip_prefix('[') {
            overlay.push_str(&format!("[provider.{section}\n"));
        } else if line.starts_with("base_url = ") {
            overlay.push_str(&format!("base_url = \"{base}\"\n"));
        } else {
            overlay.push_str(line);
            overlay.push('\n');
        }
    }
    overlay
}

/// The hidden `state` field of the form page.
fn form_state(page: &str) -> String {
    let marker = "name=\"state\" value=\"";
    let start = page.find(marker).expect("a state field") + marker.len();
    page[start..].split('"').next().expect("a value").to_owned()
}

async fn submit(stack: &LocalStack, state: &str, token: &str, cookie: &str) -> reqwest::Response {
    browser()
        .post(format!("{}/oauth/telegram/callback", stack.api_url()))
        .header("cookie", cookie)
        .form(&[("state", state), ("credential", token)])
        .send()
        .await
        .expect("form posted")
}

async fn management(
    stack: &LocalStack,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(
            method,
            format!("{}/v1/tenants/acme/{path}", stack.api_url()),
        )
        .header(LOCAL_IAM_HEADER, stack.local_iam_key());
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("management API");
    let status = response.status().as_u16();
    let body = response.bytes().await.expect("body");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_telegram_bot_is_connected_with_its_pasted_token_and_used_through_the_proxy() {
    watch("a Telegram bot token", GOOD);
    watch("a refused Telegram bot token", UNKNOWN);
    let seen: Seen = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let app = Router::new()
        .route("/{*path}", any(bot_api))
        .with_state(seen.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let paths = || seen.lock().expect("lock").clone();
    let (stack, _prefix, dir) = start_with_overlay("credentials", &telegram_overlay(&base)).await;

    // The backend mints a session; the browser opens the link and gets the form.
    let start_url = connect_url(&stack, &session_for("telegram", "acme", RETURN_TO)).await;
    let start = browser().get(&start_url).send().await.expect("start");
    assert_eq!(start.status(), 200);
    let csp = start
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let cookie = first_cookie(&start);
    let page = start.text().await.expect("page");
    assert!(page.contains("Bot token"), "{page}");
    let state = form_state(&page);

    // A token the Bot API refuses: nothing stored, the form again.
    let refused = submit(&stack, &state, UNKNOWN, &cookie).await;
    assert_eq!(refused.status(), 400);
    let page = refused.text().await.expect("page");
    assert!(page.contains("nothing was saved"), "{page}");
    assert!(!page.contains(UNKNOWN));
    assert_eq!(paths(), vec![format!("/bot{UNKNOWN}/getMe")]);
    let (status, listed) = management(&stack, reqwest::Method::GET, "connections", None).await;
    assert_eq!((status, &listed["connections"]), (200, &json!([])));

    // The right token: verified, stored, back to return_to.
    let connected = submit(&stack, &form_state(&page), GOOD, &cookie).await;
    assert_eq!(connected.status(), 303);
    let back = location(&connected);
    assert!(back.starts_with(RETURN_TO), "{back}");
    let id = url::Url::parse(&back)
        .expect("return_to")
        .query_pairs()
        .find(|(k, _)| k == "connection_id")
        .map(|(_, v)| v.into_owned())
        .expect("a connection id");
    assert_eq!(paths().last(), Some(&format!("/bot{GOOD}/getMe")));
    let (status, shown) = management(
        &stack,
        reqwest::Method::GET,
        &format!("connections/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["provider"], "telegram");
    assert_eq!(shown["account_id"], "123456", "the bot id");
    assert_eq!(shown["token"]["connected"], true);
    assert_eq!(shown["token"]["refreshable"], false);
    assert_eq!(shown["token"]["expires_at"], Value::Null);

    // The proxy puts the token in the path, as the Bot API wants it.
    let (status, proxied) = management(
        &stack,
        reqwest::Method::POST,
        &format!("connections/{id}/proxy"),
        Some(json!({ "method": "GET", "path": "/getMe" })),
    )
    .await;
    assert_eq!(status, 200, "{proxied}");
    assert_eq!(paths().last(), Some(&format!("/bot{GOOD}/getMe")));
    assert_eq!(paths().len(), 3);

    // Disconnect: deleted, nothing sent to Telegram (it has no revocation).
    let (status, deleted) = management(
        &stack,
        reqwest::Method::DELETE,
        &format!("connections/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(paths().len(), 3);
    let (status, _) = management(
        &stack,
        reqwest::Method::GET,
        &format!("connections/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 404);

    stop_and_check_processes_are_gone(stack).await;
    std::fs::remove_dir_all(dir).ok();
}
