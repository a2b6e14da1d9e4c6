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

/// A connection to the fake provider whose catalog entry declares `pagination` (a
/// `[pagination]` section, TOML), its API answering with `handler`.
async fn paginated_setup(
    pagination: &str,
    handler: impl Fn(&fake_provider::ApiRequest, &str) -> ScriptedResponse + Send + Sync + 'static,
) -> Setup {
    let harness = harness_with(
        AuthServerConfig::default(),
        &format!("{}\n{pagination}", api(false)),
    )
    .await;
    let base = harness.server.provider_api_base();
    harness
        .server
        .serve_provider_api(move |request| handler(request, &base));
    let connection = harness.connect().await;
    let client = OutboundClient::new(
        harness.vault.catalog(),
        harness.vault.clone(),
        Arc::new(InMemorySharedState::default()),
        Arc::new(SystemClock),
    )
    .with_call_timeout(Duration::from_millis(500))
    .with_body_cap(PROXY_RESPONSE_CAP);
    Setup {
        harness,
        client,
        store: InMemoryProxyIdempotencyStore::default(),
        connection,
    }
}

const CURSOR_PAGES: &str = "[pagination]\nstyle = \"cursor\"\nitems = \"/data\"\nnext_cursor = \"/next\"\ncursor_param = \"cursor\"\nlimit_param = \"limit\"\npage_size = 2\n";

/// Three pages of a cursor listing: `[1, 2]` → `c2` → `[3, 4]` → `c3` → `[5]`.
fn cursor_pages(request: &fake_provider::ApiRequest, _base: &str) -> ScriptedResponse {
    let (data, next) = match request.query_param("cursor") {
        None => (json!([1, 2]), json!("c2")),
        Some("c2") => (json!([3, 4]), json!("c3")),
        Some("c3") => (json!([5]), json!(null)),
        Some(_) => return scripted(400, r#"{"error":"invalid_cursor"}"#),
    };
    scripted(200, &json!({ "data": data, "next": next }).to_string())
}

#[tokio::test]
async fn paginate_follows_three_cursor_pages_and_concatenates_their_items() {
    let setup = paginated_setup(CURSOR_PAGES, cursor_pages).await;
    let reply = setup
        .send(json!({
            "method": "GET",
            "path": "/v1/records",
            "query": { "status": "open" },
            "paginate": { "max_pages": 10 }
        }))
        .await;
    assert_eq!(
        reply.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(header(&reply, SOURCE_HEADER), Some(SOURCE_PAGES));
    assert_eq!(
        body(&reply),
        json!({ "pages": 3, "complete": true, "items": [1, 2, 3, 4, 5] })
    );
    let requests = setup.harness.server.provider_requests();
    assert_eq!(requests.len(), 3);
    let cursors: Vec<Option<&str>> = requests.iter().map(|r| r.query_param("cursor")).collect();
    assert_eq!(cursors, vec![None, Some("c2"), Some("c3")]);
    for request in &requests {
        // The caller's query, the scheme's page size and Junction's token on every page.
        assert_eq!(request.query_param("status"), Some("open"));
        assert_eq!(request.query_param("limit"), Some("2"));
        assert!(
            request
                .header("authorization")
                .is_some_and(|h| h.starts_with("Bearer "))
        );
        assert_eq!(request.path, "/v1/records");
    }
}

const LINK_PAGES: &str = "[pagination]\nstyle = \"link_header\"\nitems = \"\"\n";

/// Three pages linked by `Link: <…?page=N>; rel="next"` (absolute URLs on the base).
fn link_pages(request: &fake_provider::ApiRequest, base: &str) -> ScriptedResponse {
    let page: u32 = request
        .query_param("page")
        .and_then(|page| page.parse().ok())
        .unwrap_or(1);
    let mut response = scripted(200, &json!([format!("item-{page}")]).to_string());
    if page < 3 {
        response.headers.push((
            "link".into(),
            format!(
                "<{base}/v1/records?page=1>; rel=\"first\", <{base}/v1/records?page={}>; rel=\"next\"",
                page + 1
            ),
        ));
    }
    response
}

#[tokio::test]
async fn paginate_follows_link_headers_and_stops_at_max_pages_with_a_continuation() {
    let setup = paginated_setup(LINK_PAGES, link_pages).await;
    let all = setup
        .send(json!({ "method": "GET", "path": "/v1/records", "paginate": { "max_pages": 3 } }))
        .await;
    assert_eq!(
        body(&all),
        json!({ "pages": 3, "complete": true, "items": ["item-1", "item-2", "item-3"] })
    );
    let two = setup
        .send(json!({ "method": "GET", "path": "/v1/records", "paginate": { "max_pages": 2 } }))
        .await;
    assert_eq!(
        body(&two),
        json!({
            "pages": 2,
            "complete": false,
            "items": ["item-1", "item-2"],
            "next": { "path": "/v1/records", "query": { "page": "3" } }
        })
    );
    assert_eq!(setup.provider_calls(), 5);
}

#[tokio::test]
async fn paginate_refuses_a_link_to_another_host_and_sends_nothing_there() {
    // The same server and path under another host name: followed, it would be answered.
    let setup = paginated_setup(LINK_PAGES, |_, base| {
        let mut response = scripted(200, "[1]");
        let elsewhere = base.replace("127.0.0.1", "localhost");
        response.headers.push((
            "link".into(),
            format!("<{elsewhere}/v1/records?page=2>; rel=\"next\""),
        ));
        response
    })
    .await;
    let reply = setup
        .send(json!({ "method": "GET", "path": "/v1/records", "paginate": { "max_pages": 5 } }))
        .await;
    assert_eq!(reply.status, 502);
    assert_eq!(body(&reply)["error"], "pagination_error");
    assert_eq!(setup.provider_calls(), 1);
}

#[tokio::test]
async fn paginate_stops_on_a_repeated_cursor() {
    let setup = paginated_setup(CURSOR_PAGES, |_, _| {
        scripted(200, r#"{"data": [1], "next": "same"}"#)
    })
    .await;
    let reply = setup
        .send(json!({ "method": "GET", "path": "/v1/records", "paginate": { "max_pages": 20 } }))
        .await;
    assert_eq!(reply.status, 502);
    assert_eq!(body(&reply)["error"], "pagination_error");
    assert_eq!(
        setup.provider_calls(),
        2,
        "the second page repeats the cursor it was sent"
    );
}

#[tokio::test]
async fn paginate_is_refused_for_writes_for_providers_without_a_scheme_and_out_of_range() {
    let paged = paginated_setup(CURSOR_PAGES, cursor_pages).await;
    let write = paged
        .send(json!({ "method": "POST", "path": "/v1/records", "body": {}, "paginate": { "max_pages": 2 } }))
        .await;
    assert_eq!(write.status, 422);
    assert_eq!(body(&write)["error"], "not_paginable");
    for pages in [0, MAX_PAGINATE_PAGES + 1] {
        let reply = paged
            .send(json!({ "method": "GET", "path": "/v1/records", "paginate": { "max_pages": pages } }))
            .await;
        assert_eq!(reply.status, 400, "{pages}");
        assert_eq!(body(&reply)["error"], "invalid_paginate");
    }
    let unpaged = setup().await;
    let reply = unpaged
        .send(json!({ "method": "GET", "path": "/v1/records", "paginate": { "max_pages": 2 } }))
        .await;
    assert_eq!(reply.status, 422);
    assert_eq!(body(&reply)["error"], "not_paginable");
    assert_eq!(paged.provider_calls() + unpaged.provider_calls(), 0);
}

#[tokio::test]
async fn paginate_passes_a_refused_page_through() {
    let setup = paginated_setup(CURSOR_PAGES, |request, _| {
        match request.query_param("cursor") {
            None => scripted(200, r#"{"data": [1], "next": "c2"}"#),
            Some(_) => scripted(404, r#"{"error": "gone"}"#),
        }
    })
    .await;
    let reply = setup
        .send(json!({ "method": "GET", "path": "/v1/records", "paginate": { "max_pages": 5 } }))
        .await;
    assert_eq!(reply.status, 404);
    assert_eq!(header(&reply, SOURCE_HEADER), Some("provider"));
}

#[test]
fn an_action_with_paginate_is_refused_it_sends_one_request() {
    let catalog = junction_catalog::Catalog::embedded().expect("catalog");
    let api = catalog
        .get("slack")
        .and_then(|slack| slack.api.as_ref())
        .expect("slack's [api]");
    let request: ProxyRequest = serde_json::from_value(
        json!({ "method": "GET", "path": "/users.list", "paginate": { "max_pages": 2 } }),
    )
    .expect("request");
    assert!(matches!(
        prepare(api, "https://slack.com/api", &request),
        Err(Refusal::Method(_))
    ));
}
