//! The client stack against a provider on loopback (`fake-provider`: a real OAuth server
//! whose API answers what each test scripts), with the in-memory vault and shared state.
//! Every test asserts how many requests reached the provider: no retry storms.

use std::{sync::Arc, time::Duration};

use fake_provider::{AuthServerConfig, ScriptedResponse};

use super::*;
use crate::InMemorySharedState;
use junction_aws::clock::SystemClock;
use junction_aws::retry::Backoff;
use junction_oauth::testing::{Harness, harness_with};

/// The fake provider's `[api]`: a generous rate (the limiter has its own tests) and
/// Slack-style error bodies.
const API: &str = r#"
[api]
rate_limit = { requests_per_second = 100.0, burst = 20, scope = "connection" }
error_rules = [
  { pointer = "/error", values = ["ratelimited"], class = "rate_limited", code = "/error" },
  { pointer = "/ok", values = [false], class = "permanent", code = "/error" },
]
"#;

struct Setup {
    harness: Harness,
    client: OutboundClient,
    connection: String,
}

async fn setup() -> Setup {
    let harness = harness_with(AuthServerConfig::default(), API).await;
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
            cap: Duration::from_millis(160),
        },
        max_attempts: 5,
    })
    .with_call_timeout(Duration::from_millis(300));
    Setup {
        harness,
        client,
        connection,
    }
}

impl Setup {
    async fn call(&self, within: Duration) -> Result<ApiResponse, CallError> {
        let url = self.harness.server.api_url();
        self.client
            .send(
                Call {
                    provider: "fakeauth",
                    connection: &self.connection,
                    operation: "me",
                    deadline: Instant::now() + within,
                    accept: &[],
                },
                |http, token| http.get(&url).bearer_auth(token.value.expose()),
            )
            .await
    }

    fn api_calls(&self) -> usize {
        self.harness.server.counters().api_calls
    }
}

fn answer(status: u16, body: &str) -> ScriptedResponse {
    ScriptedResponse {
        status,
        body: body.to_owned(),
        ..ScriptedResponse::default()
    }
}

#[tokio::test]
async fn a_burst_of_503s_is_retried_with_bounded_attempts() {
    let setup = setup().await;
    setup
        .harness
        .server
        .script_api([answer(503, "down"), answer(503, "down")]);
    let response = setup
        .call(Duration::from_secs(60))
        .await
        .expect("third try");
    assert_eq!(response.status, 200);
    assert_eq!(setup.api_calls(), 3);

    setup.harness.server.script_api(vec![answer(502, ""); 10]);
    let failed = setup.call(Duration::from_secs(60)).await;
    assert!(
        matches!(&failed, Err(CallError::Failed(f)) if f.class == FailureClass::Transient),
        "{failed:?}"
    );
    assert_eq!(setup.api_calls(), 3 + 5, "at most 5 attempts");
}

#[tokio::test]
async fn a_429_waits_for_retry_after_and_a_long_wait_is_requeued() {
    let setup = setup().await;
    setup.harness.server.script_api([ScriptedResponse {
        status: 429,
        headers: vec![("Retry-After".into(), "1".into())],
        ..ScriptedResponse::default()
    }]);
    let started = Instant::now();
    setup
        .call(Duration::from_secs(60))
        .await
        .expect("after the wait");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert_eq!(setup.api_calls(), 2);

    setup.harness.server.script_api([ScriptedResponse {
        status: 429,
        headers: vec![("Retry-After".into(), "120".into())],
        ..ScriptedResponse::default()
    }]);
    let requeued = setup.call(Duration::from_secs(30)).await;
    assert_eq!(
        requeued.map(|r| r.status),
        Err(CallError::Requeue {
            after: Duration::from_secs(120),
            reason: RequeueReason::Provider("http_429".into())
        }),
        "a wait past the deadline goes back on the queue"
    );
    assert_eq!(setup.api_calls(), 3, "no retry storm");
    let held = setup.call(Duration::from_secs(30)).await;
    assert!(
        matches!(held, Err(CallError::Requeue { after, .. }) if after > Duration::from_secs(100)),
        "every caller is held back by the shared bucket: {held:?}"
    );
    assert_eq!(setup.api_calls(), 3, "nothing sent while held back");
}

#[tokio::test]
async fn an_error_inside_a_200_is_that_error() {
    let setup = setup().await;
    setup.harness.server.script_api([
        answer(200, r#"{"ok":false,"error":"ratelimited"}"#),
        answer(200, r#"{"ok":false,"error":"channel_not_found"}"#),
    ]);
    let failed = setup.call(Duration::from_secs(60)).await;
    assert_eq!(
        failed.map(|r| r.status),
        Err(CallError::Failed(CallFailure {
            class: FailureClass::Permanent,
            code: "channel_not_found".into()
        })),
        "the rate-limited body was retried, the permanent one was not"
    );
    assert_eq!(setup.api_calls(), 2);
}

#[tokio::test]
async fn a_slow_answer_times_out_and_is_retried() {
    let setup = setup().await;
    setup.harness.server.script_api([ScriptedResponse {
        status: 200,
        delay: Duration::from_secs(2),
        ..ScriptedResponse::default()
    }]);
    let started = Instant::now();
    let response = setup
        .call(Duration::from_secs(60))
        .await
        .expect("second try");
    assert_eq!(response.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the timeout cut the wait"
    );
    assert_eq!(setup.api_calls(), 2);
}

#[tokio::test]
async fn the_breaker_opens_after_five_failures_and_stops_calls() {
    let setup = setup().await;
    setup.harness.server.script_api(vec![answer(503, ""); 5]);
    let failed = setup.call(Duration::from_secs(60)).await;
    assert!(matches!(failed, Err(CallError::Failed(_))), "{failed:?}");
    assert_eq!(setup.api_calls(), 5);
    let refused = setup.call(Duration::from_secs(60)).await;
    assert!(
        matches!(&refused, Err(CallError::Requeue { reason, .. }) if *reason == RequeueReason::CircuitOpen),
        "{refused:?}"
    );
    assert_eq!(setup.api_calls(), 5, "an open breaker sends nothing");
}

#[tokio::test]
async fn a_token_that_expires_early_is_refreshed_once() {
    let setup = setup().await;
    setup.harness.server.expire_access_tokens_now();
    let response = setup
        .call(Duration::from_secs(60))
        .await
        .expect("refreshed");
    assert_eq!(response.status, 200);
    let counters = setup.harness.server.counters();
    assert_eq!(counters.refreshes, 1);
    assert_eq!(
        counters.api_calls, 2,
        "the 401, then the retry with the new token"
    );
}

#[tokio::test]
async fn permanent_failures_are_not_retried() {
    let setup = setup().await;
    setup.harness.server.script_api([answer(404, "")]);
    let failed = setup.call(Duration::from_secs(60)).await;
    assert_eq!(
        failed.map(|r| r.status),
        Err(CallError::Failed(CallFailure {
            class: FailureClass::Permanent,
            code: "http_404".into()
        }))
    );
    assert_eq!(setup.api_calls(), 1);
}

/// A page past the cap is refused while it streams, and not retried: the same page
/// would be as large again.
#[tokio::test]
async fn a_response_over_the_cap_fails_without_retries() {
    let setup = setup().await;
    let huge = "x".repeat(junction_aws::response_body::API_RESPONSE_CAP + 1);
    setup.harness.server.script_api([answer(200, &huge)]);
    let failed = setup.call(Duration::from_secs(60)).await;
    assert!(
        matches!(&failed, Err(CallError::Failed(f))
            if f.class == FailureClass::Permanent && f.code.starts_with("response_too_large")),
        "{failed:?}"
    );
    assert_eq!(setup.api_calls(), 1);
}

/// A `Remaining` nearing zero paces every later call over the time to the reset, before
/// the quota is spent: 20 of 1,000 left for 10 s is 2 a second, not the catalog's 100.
#[tokio::test]
async fn a_nearly_spent_quota_paces_the_next_calls() {
    let setup = setup().await;
    setup.harness.server.script_api([ScriptedResponse {
        status: 200,
        headers: vec![
            ("X-RateLimit-Limit".into(), "1000".into()),
            ("X-RateLimit-Remaining".into(), "20".into()),
            ("X-RateLimit-Reset".into(), "10".into()),
        ],
        body: "{}".into(),
        ..ScriptedResponse::default()
    }]);
    setup.call(Duration::from_secs(5)).await.expect("answered");
    // The deadline leaves no room to wait: a call that would have to is requeued.
    let within = setup.client.call_timeout() + Duration::from_millis(20);
    setup.call(within).await.expect("within the burst");
    let paced = setup.call(within).await;
    assert!(
        matches!(paced, Err(CallError::Requeue { after, reason: RequeueReason::RateLimit })
            if after >= Duration::from_millis(200) && after <= Duration::from_millis(500)),
        "spaced about 500 ms apart: {paced:?}"
    );
    assert_eq!(setup.api_calls(), 2, "the paced call was not sent");
}

#[test]
fn windows_of_the_other_scope_are_counted_on_their_own_key() {
    let spec: RateLimitSpec = serde_json::from_str(
        r#"{"requests_per_second": 4.0, "burst": 4, "scope": "connection", "windows": [
            {"requests": 100, "per": 10},
            {"requests": 250000, "per": "day", "scope": "provider"}
        ]}"#,
    )
    .expect("spec");
    let split = buckets(&spec, "hubspot", "c1");
    assert_eq!(
        split,
        [
            (
                "bucket#hubspot#c1".to_owned(),
                Limit {
                    rate: 4.0,
                    burst: 4,
                    windows: vec![Window {
                        requests: 100,
                        seconds: 10
                    }],
                }
            ),
            (
                "bucket#hubspot".to_owned(),
                Limit::windows_only(vec![Window {
                    requests: 250_000,
                    seconds: 86_400
                }])
            ),
        ]
    );
    let single: RateLimitSpec =
        serde_json::from_str(r#"{"requests_per_second": 1.0, "burst": 1, "scope": "provider"}"#)
            .expect("spec");
    assert_eq!(
        buckets(&single, "telegram", "c1"),
        [("bucket#telegram".to_owned(), Limit::rate(1.0, 1))]
    );
}

/// A 429 that says its window is spent (`Remaining: 0` and a reset) is a documented
/// quota running out: every caller waits for the reset, and the rate is not lowered.
#[tokio::test]
async fn a_429_for_a_spent_quota_holds_until_the_reset_without_lowering_the_rate() {
    let setup = setup().await;
    setup.harness.server.script_api([ScriptedResponse {
        status: 429,
        headers: vec![
            ("X-RateLimit-Limit".into(), "1000".into()),
            ("X-RateLimit-Remaining".into(), "0".into()),
            ("X-RateLimit-Reset".into(), "120".into()),
        ],
        ..ScriptedResponse::default()
    }]);
    let requeued = setup.call(Duration::from_secs(30)).await;
    assert!(
        matches!(requeued, Err(CallError::Requeue { after, .. }) if after >= Duration::from_secs(119)),
        "{requeued:?}"
    );
    let api = setup
        .client
        .catalog
        .get("fakeauth")
        .and_then(|p| p.api.as_ref())
        .expect("api");
    let (key, limit) = &buckets(&api.rate_limit, "fakeauth", &setup.connection)[0];
    assert_eq!(
        setup
            .client
            .limiter
            .effective_rate(key, limit)
            .await
            .expect("rate"),
        100.0,
        "not lowered"
    );
    let held = setup.call(Duration::from_secs(30)).await;
    assert!(
        matches!(held, Err(CallError::Requeue { after, reason: RequeueReason::RateLimit }) if after >= Duration::from_secs(100)),
        "every caller waits for the reset: {held:?}"
    );
    assert_eq!(setup.api_calls(), 1);
}
