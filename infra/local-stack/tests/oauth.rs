//! The OAuth connect flow end to end through the local stack: a browser's requests over
//! HTTP to the real `oauth` binary (start → the authorization server on loopback →
//! callback), the connection visible through the IAM-protected management API (the
//! `connections` binary), and a disconnect that revokes at the provider. The provider is
//! not built in: it comes from a catalog overlay file, as an operator would add one.

mod common;
use common::{
    browser, first_cookie, location, start_with_overlay, stop_and_check_processes_are_gone,
};

use fake_provider::{AuthServerConfig, FakeAuthServer};
use local_stack::http_api::LOCAL_IAM_HEADER;

const RETURN_TO: &str = "https://app.example.com/integrations";

#[tokio::test]
async fn a_user_connects_an_overlay_provider_and_an_operator_disconnects_it() {
    let server = FakeAuthServer::start(AuthServerConfig::default()).await;
    let (stack, prefix, dir) = start_with_overlay(
        "oauth",
        &format!(
            "[[provider]]\nid = \"fakeauth\"\nname = \"Fake authorization server\"\ndocs = \"https://example.com/fake\"\n\n[provider.oauth]\n{}",
            server.oauth_catalog_fields()
        ),
    )
    .await;
    let api = stack.api_url().to_owned();
    server.set_redirect_uris(vec![format!("{api}/oauth/fakeauth/callback")]);
    aws_sdk_secretsmanager::Client::new(stack.sdk_config())
        .create_secret()
        .name(format!("{prefix}/oauth/fakeauth"))
        .secret_string(
            r#"{"client_id":"junction-test-client","client_secret":"junction-test-secret"}"#,
        )
        .send()
        .await
        .expect("client credentials stored");
    let http = browser();

    // The browser: start → provider → callback.
    let start = http
        .get(format!(
            "{api}/oauth/fakeauth/start?tenant=acme&return_to={}",
            form_urlencoded::byte_serialize(RETURN_TO.as_bytes()).collect::<String>()
        ))
        .send()
        .await
        .expect("start");
    assert_eq!(start.status(), 302);
    let cookie = first_cookie(&start);
    assert!(cookie.starts_with("junction_oauth_fakeauth="));
    let authorize = http.get(location(&start)).send().await.expect("authorize");
    assert_eq!(authorize.status(), 302);
    let callback_url = location(&authorize);
    assert!(callback_url.starts_with(&format!("{api}/oauth/fakeauth/callback?")));
    let callback = http
        .get(&callback_url)
        .header("cookie", &cookie)
        .send()
        .await
        .expect("callback");
    assert_eq!(callback.status(), 302);
    let back = url::Url::parse(&location(&callback)).expect("return_to");
    assert!(back.as_str().starts_with(RETURN_TO));
    let id = back
        .query_pairs()
        .find(|(k, _)| k == "connection_id")
        .map(|(_, v)| v.into_owned())
        .expect("connection id");
    assert_eq!(server.counters().code_exchanges, 1);

    let replay = http
        .get(&callback_url)
        .header("cookie", &cookie)
        .send()
        .await
        .expect("replay");
    assert_eq!(replay.status(), 400, "a state works once");
    assert!(
        replay
            .text()
            .await
            .unwrap_or_default()
            .contains("already used")
    );

    // The management API: IAM-protected (locally, the stack's credential).
    let show = format!("{api}/connections/{id}");
    let anonymous = http.get(&show).send().await.expect("anonymous");
    assert_eq!(anonymous.status(), 403, "no unauthenticated access");
    let shown = http
        .get(&show)
        .header(LOCAL_IAM_HEADER, stack.local_iam_key())
        .send()
        .await
        .expect("show");
    assert_eq!(shown.status(), 200);
    let view: serde_json::Value =
        serde_json::from_str(&shown.text().await.expect("body")).expect("json");
    assert_eq!(view["state"], "active");
    assert_eq!(view["tenant"], "acme");
    assert_eq!(view["token"]["refreshable"], true);
    assert!(view.get("access_token").is_none() && !view.to_string().contains("refresh_token\""));
    let listed = http
        .get(format!("{api}/connections?tenant=acme"))
        .header(LOCAL_IAM_HEADER, stack.local_iam_key())
        .send()
        .await
        .expect("list")
        .text()
        .await
        .expect("body");
    let listed: serde_json::Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(listed["connections"][0]["id"], id.as_str());

    let deleted = http
        .delete(&show)
        .header(LOCAL_IAM_HEADER, stack.local_iam_key())
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 200);
    assert_eq!(server.counters().revocations, 1, "revoked at the provider");
    let gone = http
        .get(&show)
        .header(LOCAL_IAM_HEADER, stack.local_iam_key())
        .send()
        .await
        .expect("show");
    assert_eq!(gone.status(), 404);

    stop_and_check_processes_are_gone(stack).await;
    let _ = std::fs::remove_dir_all(dir);
}
