//! The fake authorization server, driven over HTTP the way a client would.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fake_provider::{AuthServerConfig, ClientAuth, Decision, FakeAuthServer, TokenFailure};
use rand::RngCore;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

const REDIRECT: &str = "http://127.0.0.1:9/callback";
const CLIENT_ID: &str = "junction-test-client";
const CLIENT_SECRET: &str = "junction-test-secret";

async fn start(config: AuthServerConfig) -> FakeAuthServer {
    let server = FakeAuthServer::start(config).await;
    server.set_redirect_uris(vec![REDIRECT.to_owned()]);
    server
}

thread_local! {
    /// One client per test (each test runs on its own thread): building one
    /// loads the TLS roots, which is slow. It shows redirects instead of
    /// following them.
    static CLIENT: reqwest::Client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("build reqwest client");
}

fn http() -> reqwest::Client {
    CLIENT.with(reqwest::Client::clone)
}

fn verifier() -> String {
    let mut bytes = [0u8; 48];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

async fn authorize(server: &FakeAuthServer, params: &[(&str, &str)]) -> reqwest::Response {
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    http()
        .get(format!("{}?{query}", server.authorize_url()))
        .send()
        .await
        .expect("send authorization request")
}

/// The query parameters of a redirect's `Location`.
fn redirect_params(response: &reqwest::Response) -> HashMap<String, String> {
    assert_eq!(response.status(), StatusCode::FOUND, "expected a redirect");
    let location = response
        .headers()
        .get("location")
        .expect("Location header")
        .to_str()
        .expect("Location is ASCII");
    let (_, query) = location.split_once('?').expect("Location has a query");
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// Runs `/authorize` with a fresh PKCE pair; returns the code and verifier.
async fn code_for(server: &FakeAuthServer) -> (String, String) {
    let verifier = verifier();
    let challenge = challenge(&verifier);
    let response = authorize(
        server,
        &[
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT),
            ("scope", "read write"),
            ("state", "xyz"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    let params = redirect_params(&response);
    let code = params.get("code").expect("code in redirect").clone();
    (code, verifier)
}

/// POSTs a form to the token endpoint with the credentials in the body.
async fn token_call(server: &FakeAuthServer, form: &[(&str, &str)]) -> reqwest::Response {
    let mut form = form.to_vec();
    form.extend([("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)]);
    http()
        .post(server.token_url())
        .form(&form)
        .send()
        .await
        .expect("send token request")
}

async fn exchange(server: &FakeAuthServer, code: &str, verifier: &str) -> reqwest::Response {
    token_call(
        server,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
    )
    .await
}

async fn refresh(server: &FakeAuthServer, refresh_token: &str) -> reqwest::Response {
    token_call(
        server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

async fn json(response: reqwest::Response) -> Value {
    response.json().await.expect("JSON body")
}

/// Status and body of an error response.
async fn error_of(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body = json(response).await;
    let error = body["error"].as_str().expect("error field").to_owned();
    (status, error)
}

/// A full connect: returns the token response.
async fn connect(server: &FakeAuthServer) -> Value {
    let (code, verifier) = code_for(server).await;
    let response = exchange(server, &code, &verifier).await;
    assert_eq!(response.status(), StatusCode::OK);
    json(response).await
}

fn field<'a>(body: &'a Value, name: &str) -> &'a str {
    body[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} missing in {body}"))
}

async fn api_status(server: &FakeAuthServer, access_token: &str) -> StatusCode {
    http()
        .get(server.api_url())
        .bearer_auth(access_token)
        .send()
        .await
        .expect("send API request")
        .status()
}

#[tokio::test]
async fn full_code_flow_with_pkce_issues_working_tokens() {
    let server = start(AuthServerConfig::default()).await;
    let verifier = verifier();
    let response = authorize(
        &server,
        &[
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT),
            ("scope", "read write"),
            ("state", "s t&a=te"),
            ("code_challenge", &challenge(&verifier)),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    let location = response.headers()["location"]
        .to_str()
        .expect("ASCII Location");
    assert!(
        location.starts_with(&format!("{REDIRECT}?code=")),
        "{location}"
    );
    let params = redirect_params(&response);
    assert_eq!(params["state"], "s t&a=te");

    // HTTP Basic this time; the helpers use the body.
    let response = http()
        .post(server.token_url())
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", params["code"].as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .expect("send token request");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body = json(response).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "read write");
    let access = field(&body, "access_token");
    assert!(access.len() >= 43);
    assert!(!field(&body, "refresh_token").is_empty());

    let me = http()
        .get(server.api_url())
        .bearer_auth(access)
        .send()
        .await
        .expect("send API request");
    assert_eq!(me.status(), StatusCode::OK);
    let me = json(me).await;
    assert_eq!(me["id"], "user-1");
    assert!(me["grant"].is_string());

    let counters = server.counters();
    assert_eq!(counters.authorize, 1);
    assert_eq!(counters.code_exchanges, 1);
    assert_eq!(counters.api_calls, 1);
    assert_eq!(counters.api_rejections, 0);
}

#[tokio::test]
async fn redirect_uri_with_a_query_gets_the_code_appended() {
    let server = FakeAuthServer::start(AuthServerConfig::default()).await;
    let redirect = "http://127.0.0.1:9/callback?tenant=a";
    server.set_redirect_uris(vec![redirect.to_owned()]);
    let verifier = verifier();
    let response = authorize(
        &server,
        &[
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", redirect),
            ("code_challenge", &challenge(&verifier)),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    let params = redirect_params(&response);
    assert_eq!(params["tenant"], "a");
    assert!(params.contains_key("code"));
    assert!(!params.contains_key("state"), "no state was sent");
}

#[tokio::test]
async fn replayed_code_is_invalid_grant_and_revokes_the_first_tokens() {
    let server = start(AuthServerConfig::default()).await;
    let (code, verifier) = code_for(&server).await;
    let first = json(exchange(&server, &code, &verifier).await).await;
    let access = field(&first, "access_token");
    assert_eq!(api_status(&server, access).await, StatusCode::OK);

    let replay = exchange(&server, &code, &verifier).await;
    assert_eq!(
        error_of(replay).await,
        (StatusCode::BAD_REQUEST, "invalid_grant".to_owned())
    );
    assert_eq!(api_status(&server, access).await, StatusCode::UNAUTHORIZED);
    let refreshed = refresh(&server, field(&first, "refresh_token")).await;
    assert_eq!(error_of(refreshed).await.1, "invalid_grant");
}

#[tokio::test]
async fn unregistered_redirect_uri_or_client_at_authorize_is_400_without_redirect() {
    let server = start(AuthServerConfig::default()).await;
    let challenge = challenge(&verifier());
    let cases = [
        (CLIENT_ID, "http://127.0.0.1:9/callback/extra"), // no prefix matching
        (CLIENT_ID, "http://127.0.0.1:9/other"),
        ("someone-else", REDIRECT),
    ];
    for (client_id, redirect_uri) in cases {
        let response = authorize(
            &server,
            &[
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", redirect_uri),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ],
        )
        .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{redirect_uri}");
        assert!(response.headers().get("location").is_none());
        let content_type = response.headers()["content-type"]
            .to_str()
            .expect("ASCII content type");
        assert!(content_type.starts_with("text/html"));
    }
}

#[tokio::test]
async fn different_redirect_uri_at_token_is_invalid_grant() {
    let server = start(AuthServerConfig::default()).await;
    server.set_redirect_uris(vec![
        REDIRECT.to_owned(),
        "http://127.0.0.1:9/other".to_owned(),
    ]);
    let (code, verifier) = code_for(&server).await;
    let response = token_call(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1:9/other"),
            ("code_verifier", &verifier),
        ],
    )
    .await;
    assert_eq!(
        error_of(response).await,
        (StatusCode::BAD_REQUEST, "invalid_grant".to_owned())
    );
}

#[tokio::test]
async fn wrong_or_missing_code_verifier_is_invalid_grant() {
    let server = start(AuthServerConfig::default()).await;
    let (code, _) = code_for(&server).await;
    let response = exchange(&server, &code, &verifier()).await;
    assert_eq!(
        error_of(response).await,
        (StatusCode::BAD_REQUEST, "invalid_grant".to_owned())
    );

    let (code, _) = code_for(&server).await;
    let response = token_call(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
        ],
    )
    .await;
    assert_eq!(error_of(response).await.1, "invalid_grant");
}

#[tokio::test]
async fn bad_authorization_requests_redirect_with_an_error() {
    let server = start(AuthServerConfig::default()).await;
    let challenge = challenge(&verifier());
    let base = [
        ("client_id", CLIENT_ID),
        ("redirect_uri", REDIRECT),
        ("state", "st"),
    ];
    let cases: [(&[(&str, &str)], &str); 3] = [
        (
            &[
                ("response_type", "token"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ],
            "unsupported_response_type",
        ),
        (
            &[
                ("response_type", "code"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "plain"),
            ],
            "invalid_request",
        ),
        // PKCE required and no challenge.
        (&[("response_type", "code")], "invalid_request"),
    ];
    for (extra, expected) in cases {
        let mut params = base.to_vec();
        params.extend_from_slice(extra);
        let response = authorize(&server, &params).await;
        let params = redirect_params(&response);
        assert_eq!(params["error"], expected, "{extra:?}");
        assert_eq!(params["state"], "st");
    }
    assert_eq!(server.counters().authorize, 3);
}

#[tokio::test]
async fn deny_redirects_with_access_denied() {
    let server = start(AuthServerConfig::default()).await;
    server.set_decision(Decision::Deny);
    let response = authorize(
        &server,
        &[
            ("response_type", "code"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", REDIRECT),
            ("state", "abc"),
            ("code_challenge", &challenge(&verifier())),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    let params = redirect_params(&response);
    assert_eq!(params["error"], "access_denied");
    assert!(params.contains_key("error_description"));
    assert_eq!(params["state"], "abc");
    assert!(!params.contains_key("code"));
}

async fn assert_invalid_client(response: reqwest::Response) {
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .expect("ASCII WWW-Authenticate");
    assert!(challenge.starts_with("Basic"), "{challenge}");
    assert_eq!(json(response).await["error"], "invalid_client");
}

#[tokio::test]
async fn wrong_client_secret_is_invalid_client_with_basic() {
    let server = start(AuthServerConfig::default()).await;
    let (code, verifier) = code_for(&server).await;
    let response = http()
        .post(server.token_url())
        .basic_auth(CLIENT_ID, Some("wrong"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .expect("send token request");
    assert_invalid_client(response).await;
}

#[tokio::test]
async fn wrong_client_secret_is_invalid_client_with_post() {
    let server = start(AuthServerConfig::default()).await;
    let (code, verifier) = code_for(&server).await;
    let response = http()
        .post(server.token_url())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier.as_str()),
            ("client_id", CLIENT_ID),
            ("client_secret", "wrong"),
        ])
        .send()
        .await
        .expect("send token request");
    assert_invalid_client(response).await;
}

#[tokio::test]
async fn client_auth_method_is_enforced() {
    let server = start(AuthServerConfig {
        client_auth: ClientAuth::Basic,
        ..AuthServerConfig::default()
    })
    .await;
    // Correct credentials, but in the body where only Basic is accepted.
    let response = refresh(&server, "whatever").await;
    assert_invalid_client(response).await;

    // Both methods at once.
    let response = http()
        .post(server.token_url())
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "whatever"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .expect("send token request");
    assert_eq!(
        error_of(response).await,
        (StatusCode::BAD_REQUEST, "invalid_request".to_owned())
    );

    // No credentials at all.
    let response = http()
        .post(server.token_url())
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
        .send()
        .await
        .expect("send token request");
    assert_invalid_client(response).await;
}

#[tokio::test]
async fn unsupported_grant_type_is_rejected() {
    let server = start(AuthServerConfig::default()).await;
    let response = token_call(&server, &[("grant_type", "password")]).await;
    assert_eq!(
        error_of(response).await,
        (StatusCode::BAD_REQUEST, "unsupported_grant_type".to_owned())
    );
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_grant() {
    let server = start(AuthServerConfig::default()).await;
    let first = connect(&server).await;
    let old_refresh = field(&first, "refresh_token");

    let response = refresh(&server, old_refresh).await;
    assert_eq!(response.status(), StatusCode::OK);
    let second = json(response).await;
    let new_refresh = field(&second, "refresh_token");
    assert_ne!(new_refresh, old_refresh);
    assert_eq!(second["scope"], "read write");
    let new_access = field(&second, "access_token");
    assert_eq!(api_status(&server, new_access).await, StatusCode::OK);

    // The old token again: reuse detected, the whole family is revoked.
    let reuse = refresh(&server, old_refresh).await;
    assert_eq!(
        error_of(reuse).await,
        (StatusCode::BAD_REQUEST, "invalid_grant".to_owned())
    );
    assert_eq!(
        error_of(refresh(&server, new_refresh).await).await.1,
        "invalid_grant"
    );
    assert_eq!(
        api_status(&server, new_access).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(server.counters().refreshes, 3);

    assert_eq!(
        error_of(refresh(&server, "never-issued").await).await.1,
        "invalid_grant"
    );
}

#[tokio::test]
async fn concurrent_refreshes_with_one_token_trip_reuse_detection() {
    let server = start(AuthServerConfig::default()).await;
    let tokens = connect(&server).await;
    let refresh_token = field(&tokens, "refresh_token");
    server.set_token_delay(Duration::from_millis(200));

    let (a, b) = tokio::join!(
        refresh(&server, refresh_token),
        refresh(&server, refresh_token)
    );
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::BAD_REQUEST]);
    let winner = if a.status() == StatusCode::OK { a } else { b };
    let winner = json(winner).await;
    // The loser's reuse revoked the winner's tokens too.
    assert_eq!(
        api_status(&server, field(&winner, "access_token")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(server.counters().refreshes, 2);
}

#[tokio::test]
async fn refresh_without_rotation_keeps_the_refresh_token() {
    let server = start(AuthServerConfig {
        rotate_refresh_tokens: false,
        ..AuthServerConfig::default()
    })
    .await;
    let tokens = connect(&server).await;
    let refresh_token = field(&tokens, "refresh_token");
    for _ in 0..2 {
        let response = refresh(&server, refresh_token).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body = json(response).await;
        assert!(body.get("refresh_token").is_none());
        assert_eq!(
            api_status(&server, field(&body, "access_token")).await,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn no_refresh_token_when_not_issued() {
    let server = start(AuthServerConfig {
        issue_refresh_token: false,
        ..AuthServerConfig::default()
    })
    .await;
    let tokens = connect(&server).await;
    assert!(tokens.get("refresh_token").is_none());
}

async fn revoke_call(server: &FakeAuthServer, form: &[(&str, &str)]) -> reqwest::Response {
    let mut form = form.to_vec();
    form.extend([("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)]);
    http()
        .post(server.revoke_url())
        .form(&form)
        .send()
        .await
        .expect("send revocation request")
}

#[tokio::test]
async fn revoking_a_refresh_token_revokes_its_grant() {
    let server = start(AuthServerConfig::default()).await;
    let tokens = connect(&server).await;
    let other = connect(&server).await;
    let response = revoke_call(
        &server,
        &[
            ("token", field(&tokens, "refresh_token")),
            ("token_type_hint", "refresh_token"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        api_status(&server, field(&tokens, "access_token")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        error_of(refresh(&server, field(&tokens, "refresh_token")).await)
            .await
            .1,
        "invalid_grant"
    );
    // Another grant is untouched.
    assert_eq!(
        api_status(&server, field(&other, "access_token")).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn revoking_an_access_token_and_edge_cases() {
    let server = start(AuthServerConfig::default()).await;
    let tokens = connect(&server).await;
    // A wrong hint is only a hint.
    let response = revoke_call(
        &server,
        &[
            ("token", field(&tokens, "access_token")),
            ("token_type_hint", "refresh_token"),
        ],
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        api_status(&server, field(&tokens, "access_token")).await,
        StatusCode::UNAUTHORIZED
    );
    // The refresh token still works.
    let response = refresh(&server, field(&tokens, "refresh_token")).await;
    assert_eq!(response.status(), StatusCode::OK);

    // Unknown tokens: 200 (RFC 7009 §2.2).
    let response = revoke_call(&server, &[("token", "never-issued")]).await;
    assert_eq!(response.status(), StatusCode::OK);
    // Missing token: invalid_request.
    let response = revoke_call(&server, &[]).await;
    assert_eq!(
        error_of(response).await,
        (StatusCode::BAD_REQUEST, "invalid_request".to_owned())
    );
    // Client authentication is required.
    let response = http()
        .post(server.revoke_url())
        .basic_auth(CLIENT_ID, Some("wrong"))
        .form(&[("token", "x")])
        .send()
        .await
        .expect("send revocation request");
    assert_invalid_client(response).await;
    assert_eq!(server.counters().revocations, 2);
}

#[tokio::test]
async fn actual_lifetime_shorter_than_advertised_makes_api_reject() {
    let server = start(AuthServerConfig {
        advertised_lifetime: Duration::from_secs(3600),
        actual_lifetime: Some(Duration::from_secs(1)),
        ..AuthServerConfig::default()
    })
    .await;
    let tokens = connect(&server).await;
    assert_eq!(tokens["expires_in"], 3600);
    let access = field(&tokens, "access_token");
    assert_eq!(api_status(&server, access).await, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let response = http()
        .get(server.api_url())
        .bearer_auth(access)
        .send()
        .await
        .expect("send API request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer error="invalid_token""#
    );
    assert_eq!(json(response).await["error"], "invalid_token");
    let counters = server.counters();
    assert_eq!((counters.api_calls, counters.api_rejections), (2, 1));
}

#[tokio::test]
async fn expire_now_and_revoke_all_grants() {
    let server = start(AuthServerConfig::default()).await;
    let tokens = connect(&server).await;
    server.expire_access_tokens_now();
    assert_eq!(
        api_status(&server, field(&tokens, "access_token")).await,
        StatusCode::UNAUTHORIZED
    );
    // Refreshing recovers.
    let refreshed = json(refresh(&server, field(&tokens, "refresh_token")).await).await;
    assert_eq!(
        api_status(&server, field(&refreshed, "access_token")).await,
        StatusCode::OK
    );

    server.revoke_all_grants();
    assert_eq!(
        api_status(&server, field(&refreshed, "access_token")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        error_of(refresh(&server, field(&refreshed, "refresh_token")).await)
            .await
            .1,
        "invalid_grant"
    );
    // A new connect works again.
    let again = connect(&server).await;
    assert_eq!(
        api_status(&server, field(&again, "access_token")).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn injected_status_failures_then_recovery() {
    let server = start(AuthServerConfig::default()).await;
    let tokens = connect(&server).await;
    let refresh_token = field(&tokens, "refresh_token");
    server.fail_next_token_calls(2, TokenFailure::Status(503));
    for _ in 0..2 {
        let response = refresh(&server, refresh_token).await;
        assert_eq!(
            error_of(response).await,
            (StatusCode::SERVICE_UNAVAILABLE, "server_error".to_owned())
        );
    }
    // The failures did not consume the refresh token.
    assert_eq!(
        refresh(&server, refresh_token).await.status(),
        StatusCode::OK
    );
    let counters = server.counters();
    assert_eq!((counters.failed_token_calls, counters.refreshes), (2, 1));
}

#[tokio::test]
async fn injected_too_many_requests_carries_retry_after() {
    let server = start(AuthServerConfig::default()).await;
    server.fail_next_token_calls(
        1,
        TokenFailure::TooManyRequests {
            retry_after_seconds: 7,
        },
    );
    let response = refresh(&server, "x").await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "7");
}

#[tokio::test]
async fn injected_html_error_page() {
    let server = start(AuthServerConfig::default()).await;
    server.fail_next_token_calls(1, TokenFailure::HtmlErrorPage);
    let response = refresh(&server, "x").await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let content_type = response.headers()["content-type"]
        .to_str()
        .expect("ASCII content type");
    assert!(content_type.starts_with("text/html"));
    let body = response.text().await.expect("body");
    assert!(serde_json::from_str::<Value>(&body).is_err());
}

#[tokio::test]
async fn injected_hang_makes_a_client_timeout_fire() {
    let server = start(AuthServerConfig::default()).await;
    let tokens = connect(&server).await;
    server.fail_next_token_calls(1, TokenFailure::Hang(Duration::from_secs(2)));
    let result = http()
        .post(server.token_url())
        .timeout(Duration::from_millis(300))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", field(&tokens, "refresh_token")),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await;
    let error = result.expect_err("the client should time out");
    assert!(error.is_timeout(), "{error}");
    assert_eq!(server.counters().failed_token_calls, 1);
}

#[tokio::test]
async fn stopped_server_closes_its_connections() {
    let server = start(AuthServerConfig::default()).await;
    let client = http();
    let url = server.api_url();
    // Leaves a pooled keep-alive connection behind.
    let response = client.get(&url).send().await.expect("send API request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    server.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(client.get(&url).send().await.is_err());
}
