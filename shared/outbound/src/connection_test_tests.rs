//! The connection test against a provider on loopback (`fake-provider`: its provider API
//! answers `GET /me`, the "who am I" call), with the in-memory vault and shared state.

use std::{sync::Arc, time::Duration};

use fake_provider::{AuthServerConfig, ScriptedResponse};

use super::*;
use crate::{InMemorySharedState, RetryPolicy};
use junction_aws::clock::{Clock, SystemClock};
use junction_aws::retry::Backoff;
use junction_oauth::testing::{Harness, harness_with};

/// The fake provider's `[api]`, with its connection test.
const API: &str = r#"
[api]
base_url = "{provider_api}"
rate_limit = { requests_per_second = 100.0, burst = 20, scope = "connection" }
test_request = { method = "GET", path = "/me" }
"#;

struct Setup {
    harness: Harness,
    client: OutboundClient,
    connection: String,
}

async fn setup() -> Setup {
    let harness = harness_with(AuthServerConfig::default(), API).await;
    harness.server.serve_provider_api(|_| ScriptedResponse {
        status: 200,
        body: r#"{"id":"test-user","secret_detail":"not for the answer"}"#.into(),
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
    .with_call_timeout(Duration::from_millis(300));
    Setup {
        harness,
        client,
        connection,
    }
}

impl Setup {
    async fn test(&self, tenant: &str, id: &str) -> HttpReply {
        connection_test_route(
            &self.client,
            &self.harness.vault,
            tenant,
            "POST",
            id,
            Instant::now() + Duration::from_secs(30),
        )
        .await
    }

    fn provider_calls(&self) -> usize {
        self.harness.server.provider_requests().len()
    }
}

fn body(reply: &HttpReply) -> serde_json::Value {
    serde_json::from_str(&reply.body).expect("JSON")
}

#[tokio::test]
async fn a_working_connection_answers_ok_and_records_when() {
    let setup = setup().await;
    let reply = setup.test("tenant-1", &setup.connection).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let answer = body(&reply);
    assert_eq!(answer["ok"], true);
    assert_eq!(answer["status"], "active");
    assert!(answer["verified_at"].is_string(), "{answer}");
    assert!(!reply.body.contains("secret_detail"), "no provider body");
    let requests = setup.harness.server.provider_requests();
    assert_eq!(requests.len(), 1, "one call");
    assert_eq!(
        (requests[0].method.as_str(), requests[0].path.as_str()),
        ("GET", "/me")
    );
    let stored = setup.harness.stored(&setup.connection).await;
    assert_eq!(
        stored.last_verified_at,
        Some(setup.harness.clock.now().unix_timestamp())
    );
    assert_eq!(stored.last_error, None);
    // The management API shows it.
    let shown = web::connection_view(&stored);
    assert_eq!(shown["last_verified_at"], answer["verified_at"]);
}

#[tokio::test]
async fn a_rejected_token_is_refreshed_once_and_the_test_succeeds() {
    let setup = setup().await;
    setup.harness.server.expire_access_tokens_now();
    let reply = setup.test("tenant-1", &setup.connection).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        setup.harness.server.counters().refreshes,
        1,
        "exactly one refresh"
    );
    assert_eq!(setup.harness.server.counters().api_rejections, 1, "one 401");
    assert_eq!(
        setup.provider_calls(),
        1,
        "then the call with the new token"
    );
    assert!(
        setup
            .harness
            .stored(&setup.connection)
            .await
            .last_verified_at
            .is_some()
    );
}

#[tokio::test]
async fn a_provider_that_is_down_answers_502_and_records_the_error() {
    let setup = setup().await;
    let down = ScriptedResponse {
        status: 503,
        body: "<html>upstream exploded at 10.0.0.7</html>".into(),
        ..ScriptedResponse::default()
    };
    setup.harness.server.script_api(vec![down; 3]);
    let reply = setup.test("tenant-1", &setup.connection).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    let answer = body(&reply);
    assert_eq!(answer["error"], "provider_error");
    assert_eq!(answer["message"], "http_503");
    assert!(!reply.body.contains("exploded"), "no provider body");
    assert_eq!(
        setup.provider_calls(),
        3,
        "the retry policy's attempts, no more"
    );
    let stored = setup.harness.stored(&setup.connection).await;
    assert_eq!(
        stored.last_error.as_deref(),
        Some("connection_test: http_503")
    );
    assert_eq!(
        stored.last_error_at,
        Some(setup.harness.clock.now().unix_timestamp())
    );
    assert_eq!(stored.last_verified_at, None);
    assert_eq!(
        stored.state,
        junction_oauth::ConnectionState::Active,
        "still active"
    );
}

#[tokio::test]
async fn a_token_refused_after_its_refresh_answers_needs_reauth() {
    let setup = setup().await;
    let refused = ScriptedResponse {
        status: 401,
        body: r#"{"message":"Bad credentials"}"#.into(),
        ..ScriptedResponse::default()
    };
    setup.harness.server.script_api(vec![refused; 2]);
    let reply = setup.test("tenant-1", &setup.connection).await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert_eq!(body(&reply)["error"], "needs_reauth");
    assert!(!reply.body.contains("Bad credentials"), "no provider body");
    assert_eq!(
        setup.harness.server.counters().refreshes,
        1,
        "one refresh only"
    );
    // The connection needs its user to reconnect, as when a refresh token is refused:
    // marked so, and announced once.
    let stored = setup.harness.stored(&setup.connection).await;
    assert_eq!(stored.state, junction_oauth::ConnectionState::NeedsReauth);
    assert_eq!(stored.last_error.as_deref(), Some("needs_reauth: http_401"));
    assert_eq!(stored.refresh_at, None);
    let announced: Vec<_> = setup
        .harness
        .bus
        .events()
        .into_iter()
        .filter(|e| e.event_type == "connection.needs_reauth")
        .collect();
    assert_eq!(announced.len(), 1, "{announced:?}");
    assert_eq!(announced[0].data["reason"], "http_401");
    assert_eq!(announced[0].data["tenant"], "tenant-1");
    // A second test finds the grant gone without calling the provider again.
    let calls = setup.provider_calls();
    let again = setup.test("tenant-1", &setup.connection).await;
    assert_eq!(again.status, 409);
    assert_eq!(setup.provider_calls(), calls);
    assert_eq!(
        setup
            .harness
            .bus
            .events()
            .iter()
            .filter(|e| e.event_type == "connection.needs_reauth")
            .count(),
        1,
        "announced once"
    );
}

#[tokio::test]
async fn another_tenants_connection_answers_like_a_missing_one_and_calls_nothing() {
    let setup = setup().await;
    let other = setup.test("tenant-2", &setup.connection).await;
    let missing = setup.test("tenant-2", "conn_does_not_exist").await;
    assert_eq!(other.status, 404, "{}", other.body);
    assert_eq!(
        other.body.replace(&setup.connection, "<id>"),
        missing.body.replace("conn_does_not_exist", "<id>")
    );
    assert_eq!(other.headers, missing.headers);
    assert_eq!(setup.provider_calls(), 0, "no provider call");
    let stored = setup.harness.stored(&setup.connection).await;
    assert_eq!((stored.last_verified_at, stored.last_error), (None, None));
    let refused = connection_test_route(
        &setup.client,
        &setup.harness.vault,
        "tenant-1",
        "GET",
        &setup.connection,
        Instant::now() + Duration::from_secs(30),
    )
    .await;
    assert_eq!(refused.status, 405);
}

#[tokio::test]
async fn a_provider_without_a_test_request_is_not_testable() {
    let harness = harness_with(
        AuthServerConfig::default(),
        "[api]\nrate_limit = { requests_per_second = 10.0, burst = 1, scope = \"provider\" }\n",
    )
    .await;
    let connection = harness.connect().await;
    let client = OutboundClient::new(
        harness.vault.catalog(),
        harness.vault.clone(),
        Arc::new(InMemorySharedState::default()),
        Arc::new(SystemClock),
    );
    let reply = connection_test_route(
        &client,
        &harness.vault,
        "tenant-1",
        "POST",
        &connection,
        Instant::now() + Duration::from_secs(30),
    )
    .await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert_eq!(body(&reply)["error"], "not_testable");
}

#[test]
fn only_short_codes_are_shown() {
    assert_eq!(short("http_503"), "http_503");
    assert_eq!(short("invalid_auth"), "invalid_auth");
    assert_eq!(short("<html>oops</html>"), "provider_error");
    assert_eq!(short(&"x".repeat(65)), "provider_error");
}

/// The API base of a connection is filled from what the connection keeps: Shopify's
/// `{shop}` (the connect's URL parameter) and QuickBooks' `{account}` (the realm the
/// connect confirmed); the same for the test request's path.
#[test]
fn the_api_base_is_filled_from_the_connection_s_shop_and_account() {
    let catalog = junction_catalog::Catalog::embedded().expect("catalog");
    let mut shop = junction_oauth::sample_connection("conn_1", "acme", 1_000);
    shop.provider = "shopify".into();
    shop.params
        .insert("shop".into(), "acme-store.myshopify.com".into());
    assert_eq!(
        base_url(catalog, "shopify", &shop).as_deref(),
        Ok("https://acme-store.myshopify.com/admin/api/2026-07")
    );
    shop.params.clear();
    assert!(
        base_url(catalog, "shopify", &shop).is_err(),
        "no shop, no base"
    );

    let mut books = junction_oauth::sample_connection("conn_2", "acme", 1_000);
    books.provider = "intuit".into();
    assert!(
        base_url(catalog, "intuit", &books)
            .is_err_and(|reason| reason.contains("no provider account")),
        "no realm, no base"
    );
    books.account_id = Some("9130355377369466".into());
    assert_eq!(
        base_url(catalog, "intuit", &books).as_deref(),
        Ok("https://quickbooks.api.intuit.com/v3/company/9130355377369466")
    );
    assert_eq!(
        fill_account("/companyinfo/{account}", &books).as_deref(),
        Ok("/companyinfo/9130355377369466")
    );
    for hostile in ["../1", "1/../../x", "1?x=", "..", "a b"] {
        books.account_id = Some(hostile.into());
        assert!(base_url(catalog, "intuit", &books).is_err(), "{hostile}");
    }

    let mut xero = junction_oauth::sample_connection("conn_3", "acme", 1_000);
    xero.provider = "xero".into();
    assert!(
        base_url(catalog, "xero", &xero).is_err(),
        "its header needs the tenant"
    );
    xero.account_id = Some("fe79f7dd-b6d4-4a92-ba7b-538af6289c58".into());
    assert_eq!(
        base_url(catalog, "xero", &xero).as_deref(),
        Ok("https://api.xero.com/api.xro/2.0")
    );
    let mut bot = junction_oauth::sample_connection("conn_4", "acme", 1_000);
    bot.provider = "telegram".into();
    assert_eq!(
        base_url(catalog, "telegram", &bot).as_deref(),
        Ok("https://api.telegram.org"),
        "the token is placed per call, never in the base"
    );
}

/// The connection test of a provider whose test path names the account: the request
/// reaches `/companyinfo/<realm>` under `/company/<realm>`.
#[tokio::test]
async fn a_test_request_path_names_the_account() {
    let api = r#"
[api]
base_url = "{provider_api}/v3/company/{account}"
rate_limit = { requests_per_second = 100.0, burst = 20, scope = "connection" }
test_request = { method = "GET", path = "/companyinfo/{account}" }
"#;
    let harness = harness_with(AuthServerConfig::default(), api).await;
    harness
        .server
        .serve_provider_api(|_| ScriptedResponse::json(&serde_json::json!({"CompanyInfo": {}})));
    let id = harness.connect().await;
    let client = OutboundClient::new(
        harness.vault.catalog(),
        harness.vault.clone(),
        Arc::new(InMemorySharedState::default()),
        Arc::new(SystemClock),
    );
    let stored = harness.stored(&id).await;
    let tenant = stored.tenant.clone();
    let reply = connection_test_route(
        &client,
        &harness.vault,
        &tenant,
        "POST",
        &id,
        Instant::now() + Duration::from_secs(30),
    )
    .await;
    assert_eq!(reply.status, 502, "no realm yet: {}", reply.body);
    assert!(harness.server.provider_requests().is_empty());

    use junction_oauth::ConnectionStore;
    // The failed test recorded its error: the connection as it is now.
    let stored = harness.stored(&id).await;
    let mut next = stored.clone();
    next.account_id = Some("4620816365".into());
    assert!(
        harness
            .connections
            .replace(&next, stored.version)
            .await
            .expect("store")
    );
    let reply = connection_test_route(
        &client,
        &harness.vault,
        &tenant,
        "POST",
        &id,
        Instant::now() + Duration::from_secs(30),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let requests = harness.server.provider_requests();
    assert_eq!(
        requests.last().map(|r| r.path.as_str()),
        Some("/v3/company/4620816365/companyinfo/4620816365")
    );
}
