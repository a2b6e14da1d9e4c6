//! The proxy against a provider on loopback (`fake-provider`'s API under `/provider`),
//! with the in-memory vault, shared state and idempotency record; and its checks of the
//! caller's path and headers, played as an attacker would.

use std::{sync::Arc, time::Duration};

use fake_provider::{AuthServerConfig, ScriptedResponse};

use super::*;
use crate::idempotency::InMemoryProxyIdempotencyStore;
use crate::{InMemorySharedState, RetryPolicy};
use junction_aws::clock::SystemClock;
use junction_aws::retry::Backoff;
use junction_oauth::testing::{Harness, harness_with};

/// The fake provider's `[api]`, without (`NATIVE` false) or with its own idempotency
/// header.
fn api(native: bool) -> String {
    let header = if native {
        "idempotency_header = \"Idempotency-Key\"\n"
    } else {
        ""
    };
    format!(
        "[api]\nbase_url = \"{{provider_api}}\"\nrate_limit = {{ requests_per_second = 100.0, burst = 20, scope = \"connection\" }}\n{header}"
    )
}

struct Setup {
    harness: Harness,
    client: OutboundClient,
    store: InMemoryProxyIdempotencyStore,
    connection: String,
}

async fn setup_with(native: bool) -> Setup {
    let harness = harness_with(AuthServerConfig::default(), &api(native)).await;
    harness
        .server
        .serve_provider_api(|request| ScriptedResponse {
            status: if request.method == "POST" { 201 } else { 200 },
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-ratelimit-remaining".into(), "99".into()),
                ("set-cookie".into(), "session=provider-internal".into()),
                ("x-internal-host".into(), "10.0.0.7".into()),
            ],
            body: json!({ "path": request.path, "query": request.query, "body": request.json() })
                .to_string(),
            ..ScriptedResponse::default()
        });
    let connection = harness.connect().await;
    let client = OutboundClient::new(
        harness.vault.catalog(),
        harness.vault.clone(),
        Arc::new(InMemorySharedState::default()),
        Arc::new(SystemClock),
    )
    .with_policy(RetryPolicy {
        backoff: Backoff {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(40),
        },
        max_attempts: 3,
    })
    .with_call_timeout(Duration::from_millis(500))
    .with_body_cap(PROXY_RESPONSE_CAP);
    Setup {
        harness,
        client,
        store: InMemoryProxyIdempotencyStore::default(),
        connection,
    }
}

async fn setup() -> Setup {
    setup_with(false).await
}

impl Setup {
    fn proxy(&self) -> Proxy<'_> {
        Proxy {
            client: &self.client,
            vault: &self.harness.vault,
            store: &self.store,
            clock: self.harness.clock.as_ref(),
        }
    }

    async fn send_as(&self, tenant: &str, request: serde_json::Value) -> BinaryReply {
        proxy_route(
            self.proxy(),
            tenant,
            "POST",
            &self.connection,
            request.to_string().as_bytes(),
            Instant::now() + Duration::from_secs(30),
        )
        .await
    }

    async fn send(&self, request: serde_json::Value) -> BinaryReply {
        self.send_as("tenant-1", request).await
    }

    fn provider_calls(&self) -> usize {
        self.harness.server.provider_requests().len()
    }
}

fn body(reply: &BinaryReply) -> serde_json::Value {
    serde_json::from_slice(&reply.body).expect("JSON")
}

fn header<'a>(reply: &'a BinaryReply, name: &str) -> Option<&'a str> {
    reply
        .headers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn scripted(status: u16, body: &str) -> ScriptedResponse {
    ScriptedResponse {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.into(),
        ..ScriptedResponse::default()
    }
}

#[tokio::test]
async fn a_get_goes_to_the_api_base_with_junctions_token_and_returns_the_answer() {
    let setup = setup().await;
    let reply = setup
        .send(json!({
            "method": "GET",
            "path": "/v1/customers/cus_1",
            "query": { "expand": ["a", "b"], "limit": "3 & more" },
            "headers": { "Accept": "application/json" },
        }))
        .await;
    assert_eq!(
        reply.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&reply.body)
    );
    let answer = body(&reply);
    assert_eq!(answer["path"], "/v1/customers/cus_1");
    assert_eq!(
        answer["query"],
        json!([["expand", "a"], ["expand", "b"], ["limit", "3 & more"]])
    );
    assert_eq!(header(&reply, SOURCE_HEADER), Some("provider"));
    assert_eq!(header(&reply, "x-ratelimit-remaining"), Some("99"));
    assert_eq!(header(&reply, "content-type"), Some("application/json"));
    assert_eq!(header(&reply, "set-cookie"), None, "not allow-listed");
    assert_eq!(header(&reply, "x-internal-host"), None, "not allow-listed");
    let requests = setup.harness.server.provider_requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].header("accept"), Some("application/json"));
    assert!(
        requests[0]
            .header("authorization")
            .is_some_and(|auth| auth.starts_with("Bearer ")),
        "Junction adds the connection's token"
    );
}

#[tokio::test]
async fn a_get_answered_503_is_retried_and_a_404_is_passed_back() {
    let setup = setup().await;
    setup
        .harness
        .server
        .script_api(vec![scripted(503, "{}"), scripted(503, "{}")]);
    let reply = setup.send(json!({"method": "GET", "path": "/items"})).await;
    assert_eq!(reply.status, 200);
    assert_eq!(setup.provider_calls(), 3, "two 503s, then the answer");

    setup.harness.server.script_api(vec![scripted(
        404,
        r#"{"error":{"message":"No such customer"}}"#,
    )]);
    let reply = setup
        .send(json!({"method": "GET", "path": "/items/9"}))
        .await;
    assert_eq!(reply.status, 404, "the provider's status");
    assert_eq!(body(&reply)["error"]["message"], "No such customer");
    assert_eq!(header(&reply, SOURCE_HEADER), Some("provider"));
    assert_eq!(setup.provider_calls(), 4, "a 404 is not retried");
}

#[tokio::test]
async fn a_write_without_a_native_key_is_sent_once_even_when_it_fails() {
    let setup = setup().await;
    setup
        .harness
        .server
        .script_api(vec![scripted(503, r#"{"busy":true}"#)]);
    let reply = setup
        .send(json!({"method": "POST", "path": "/charges", "body": {"amount": 5}}))
        .await;
    assert_eq!(reply.status, 503, "the provider's answer, not retried");
    assert_eq!(body(&reply)["busy"], true);
    assert_eq!(setup.provider_calls(), 1);
}

#[tokio::test]
async fn a_keyed_write_runs_once_and_its_repeat_is_answered_from_the_record() {
    let setup = setup().await;
    let write = json!({
        "method": "POST",
        "path": "/charges",
        "body": {"amount": 5},
        "idempotency_key": "order-42",
    });
    let first = setup.send(write.clone()).await;
    assert_eq!(first.status, 201);
    assert_eq!(header(&first, REPLAY_HEADER), None);
    let repeat = setup.send(write.clone()).await;
    assert_eq!(repeat.status, 201);
    assert_eq!(repeat.body, first.body, "the same answer");
    assert_eq!(header(&repeat, REPLAY_HEADER), Some("true"));
    assert_eq!(setup.provider_calls(), 1, "one effect at the provider");
    assert_eq!(
        setup.harness.server.provider_requests()[0].header("idempotency-key"),
        None,
        "the provider takes no key: none is sent"
    );

    let other = setup
        .send(json!({
            "method": "POST",
            "path": "/charges",
            "body": {"amount": 6},
            "idempotency_key": "order-42",
        }))
        .await;
    assert_eq!(other.status, 422);
    assert_eq!(body(&other)["error"], "idempotency_key_reused");
    assert_eq!(header(&other, SOURCE_HEADER), Some("junction"));
    assert_eq!(setup.provider_calls(), 1);
}

#[tokio::test]
async fn a_repeat_while_the_first_runs_is_told_so_and_a_failed_write_frees_its_key() {
    let setup = setup().await;
    let write = json!({
        "method": "POST",
        "path": "/charges",
        "body": "amount=5",
        "headers": {"Content-Type": "application/x-www-form-urlencoded"},
        "idempotency_key": "order-43",
    });
    // The first request's claim, as a concurrent invocation holds it.
    let connection = setup.harness.stored(&setup.connection).await;
    let (api, base) = api_of(&setup.harness.vault, &connection).expect("api");
    let request: ProxyRequest = serde_json::from_value(write.clone()).expect("request");
    let prepared = prepare(api, &base, &request).expect("prepared");
    let key = record_key(&setup.connection, "order-43");
    let now = setup.harness.clock.now().unix_timestamp();
    assert_eq!(
        setup.store.begin(&key, &prepared.hash, now).await,
        Ok(Begin::Started)
    );
    let concurrent = setup.send(write.clone()).await;
    assert_eq!(concurrent.status, 409);
    assert_eq!(body(&concurrent)["error"], "idempotency_key_in_use");
    assert_eq!(setup.provider_calls(), 0);
    setup
        .store
        .release(&key, &prepared.hash)
        .await
        .expect("released");

    // A 503 is no outcome: the key is free again, and the retry runs.
    setup.harness.server.script_api(vec![scripted(503, "{}")]);
    assert_eq!(setup.send(write.clone()).await.status, 503);
    let retried = setup.send(write.clone()).await;
    assert_eq!(retried.status, 201);
    assert_eq!(header(&retried, REPLAY_HEADER), None);
    assert_eq!(setup.provider_calls(), 2);
    let sent = &setup.harness.server.provider_requests()[1];
    assert_eq!(sent.body, b"amount=5", "a string body is sent as it is");
    assert_eq!(
        sent.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
}

#[tokio::test]
async fn a_native_key_is_passed_on_and_makes_the_write_retriable() {
    let setup = setup_with(true).await;
    setup.harness.server.script_api(vec![scripted(503, "{}")]);
    let reply = setup
        .send(json!({
            "method": "POST",
            "path": "/charges",
            "body": {"amount": 5},
            "idempotency_key": "order-44",
        }))
        .await;
    assert_eq!(reply.status, 201);
    let requests = setup.harness.server.provider_requests();
    assert_eq!(requests.len(), 2, "retried: the provider deduplicates");
    for request in &requests {
        assert_eq!(request.header("idempotency-key"), Some("order-44"));
    }
    let refused = setup
        .send(json!({
            "method": "POST",
            "path": "/charges",
            "headers": {"Idempotency-Key": "sneaky"},
        }))
        .await;
    assert_eq!(refused.status, 400);
}

#[tokio::test]
async fn a_rejected_token_is_refreshed_once() {
    let setup = setup().await;
    setup.harness.server.expire_access_tokens_now();
    let reply = setup.send(json!({"method": "GET", "path": "/me"})).await;
    assert_eq!(reply.status, 200);
    assert_eq!(setup.harness.server.counters().refreshes, 1, "exactly one");

    setup.harness.server.script_api(vec![
        scripted(401, r#"{"message":"Bad credentials"}"#),
        scripted(401, r#"{"message":"Bad credentials"}"#),
    ]);
    let reply = setup.send(json!({"method": "GET", "path": "/me"})).await;
    assert_eq!(reply.status, 409);
    assert_eq!(body(&reply)["error"], "needs_reauth");
    assert_eq!(
        setup.harness.server.counters().refreshes,
        2,
        "one more, no more"
    );
}

#[tokio::test]
async fn a_body_over_the_cap_answers_502_with_the_reason() {
    let mut setup = setup().await;
    setup.client = setup.client.clone().with_body_cap(64);
    setup
        .harness
        .server
        .script_api(vec![scripted(200, &format!("\"{}\"", "x".repeat(100)))]);
    let reply = setup.send(json!({"method": "GET", "path": "/big"})).await;
    assert_eq!(reply.status, 502);
    let answer = body(&reply);
    assert_eq!(answer["error"], "provider_error");
    assert_eq!(answer["message"], "response_too_large: over 64 bytes");
}

#[tokio::test]
async fn another_tenants_connection_answers_404_and_calls_nothing() {
    let setup = setup().await;
    let reply = setup
        .send_as("tenant-2", json!({"method": "GET", "path": "/me"}))
        .await;
    assert_eq!(reply.status, 404);
    assert_eq!(setup.provider_calls(), 0);
}

#[tokio::test]
async fn attacks_on_the_path_and_headers_are_refused_before_anything_is_sent() {
    let setup = setup().await;
    let paths = [
        ("/a/../../admin", "a . or .. segment"),
        ("/a/%2e%2e/admin", "percent-encoded . or .."),
        ("/a/%2E%2E%2Fadmin", "percent-encoded . or .."),
        ("/a/%252e%252e/admin", "percent-encoded . or .."),
        ("/a/..%2f..%2fadmin", "percent-encoded . or .."),
        ("/a/..;/admin", "a . or .. segment"),
        ("/a/%2e%2e%5cadmin", "backslash"),
        ("https://evil.example/x", "absolute URL"),
        ("//evil.example/x", "another host"),
        ("evil.example/x", "must start with /"),
        ("/@evil.example/x", "an @"),
        ("/\\evil.example/x", "backslash"),
        ("/x\r\nHost: evil.example", "control character"),
        ("/x%0d%0aHost:%20evil", "control character"),
        ("/x?admin=1", "a ?"),
        ("/x#frag", "a #"),
        ("/x y", "whitespace"),
        ("/x%zz", "two hex digits"),
        // A sign is not a hex digit (`u8::from_str_radix` would read `+1` as 1).
        ("/x%+1", "two hex digits"),
        ("/x%2", "two hex digits"),
    ];
    for (path, reason) in paths {
        let reply = setup.send(json!({"method": "GET", "path": path})).await;
        assert_eq!(reply.status, 400, "{path}");
        let answer = body(&reply);
        assert_eq!(answer["error"], "invalid_path", "{path}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(reason), "{path}: {message}");
    }
    let headers = [
        (json!({"Authorization": "Bearer stolen"}), "authorization"),
        (json!({"Cookie": "a=b"}), "authorization"),
        (json!({"Host": "evil.example"}), "allow-list"),
        (json!({"X-Forwarded-Host": "evil.example"}), "allow-list"),
        (
            json!({"Accept": "x\r\nAuthorization: Bearer stolen"}),
            "CR, LF",
        ),
        (json!({"Accept": "x\nHost: evil"}), "CR, LF"),
    ];
    for (headers, reason) in headers {
        let reply = setup
            .send(json!({"method": "GET", "path": "/me", "headers": headers}))
            .await;
        assert_eq!(reply.status, 400, "{headers}");
        let answer = body(&reply);
        assert_eq!(answer["error"], "header_not_allowed");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(reason), "{headers}: {message}");
    }
    for (request, code) in [
        (json!({"method": "TRACE", "path": "/me"}), "invalid_method"),
        (
            json!({"method": "GET", "path": "/me", "body": {"a": 1}}),
            "invalid_body",
        ),
        (
            json!({"method": "POST", "path": "/me", "idempotency_key": "a b"}),
            "invalid_idempotency_key",
        ),
        (
            json!({"method": "GET", "path": "/me", "url": "x"}),
            "bad_request",
        ),
    ] {
        let reply = setup.send(request.clone()).await;
        assert_eq!(reply.status, 400, "{request}");
        assert_eq!(body(&reply)["error"], code, "{request}");
    }
    assert_eq!(setup.provider_calls(), 0, "nothing was sent");
}

#[test]
fn paths_an_api_uses_pass() {
    for path in [
        "/v1/customers",
        "/projects/group%2Fproject/issues",
        "/gmail/v1/users/me/messages",
        "/files/a..b/c.d",
        "/search;type=all",
        "/users/alice%40example.com",
    ] {
        assert_eq!(check_path(path), Ok(()), "{path}");
    }
}

#[test]
fn the_response_cap_fits_lambdas_response_in_base64() {
    let base64 = PROXY_RESPONSE_CAP.div_ceil(3) * 4;
    assert!(base64 + 64 * 1024 < 6 * 1024 * 1024, "{base64}");
}
