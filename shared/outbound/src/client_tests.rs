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

/// Where the credential and the catalog's headers go (issue 29): a bare loopback
/// server records each request as it arrives, whatever its authorization, because the
/// fake provider answers only bearer tokens.
mod placement {
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use junction_oauth::ConnectionStore;

    /// One request as the server read it: the request line and the headers, lowercased
    /// names.
    #[derive(Debug, Clone)]
    struct Seen {
        line: String,
        headers: Vec<(String, String)>,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    /// Answers every request with `status` and a small JSON body; what it read.
    async fn recording_server(status: u16) -> (String, Arc<Mutex<Vec<Seen>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut read = Vec::new();
                let mut buffer = [0u8; 4096];
                while !read.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => read.extend_from_slice(&buffer[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&read).into_owned();
                let mut lines = text.split("\r\n");
                let line = lines.next().unwrap_or_default().to_owned();
                let headers = lines
                    .filter_map(|l| l.split_once(": "))
                    .map(|(n, v)| (n.to_ascii_lowercase(), v.to_owned()))
                    .collect();
                if let Ok(mut seen) = record.lock() {
                    seen.push(Seen { line, headers });
                }
                let body = r#"{"ok":true}"#;
                let answer = format!(
                    "HTTP/1.1 {status} Answer\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        (base, seen)
    }

    fn seen(record: &Mutex<Vec<Seen>>) -> Vec<Seen> {
        record.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// A connected `fakeauth` whose `[api]` is `api` (with `{base}` the recording
    /// server's address), its client, and its access token.
    async fn connected(api: &str, base: &str) -> (Harness, OutboundClient, String, String) {
        let harness = harness_with(AuthServerConfig::default(), &api.replace("{base}", base)).await;
        let connection = harness.connect().await;
        let token = harness
            .vault
            .access_token(&connection)
            .await
            .expect("token")
            .value
            .expose()
            .to_owned();
        let client = OutboundClient::new(
            harness.vault.catalog(),
            harness.vault.clone(),
            Arc::new(InMemorySharedState::default()),
            Arc::new(SystemClock),
        )
        .with_policy(RetryPolicy {
            backoff: Backoff {
                base: Duration::from_millis(5),
                cap: Duration::from_millis(20),
            },
            max_attempts: 2,
        })
        .with_call_timeout(Duration::from_millis(500));
        (harness, client, connection, token)
    }

    async fn get(
        client: &OutboundClient,
        connection: &str,
        url: &str,
    ) -> Result<ApiResponse, CallError> {
        client
            .send(
                Call {
                    provider: "fakeauth",
                    connection,
                    operation: "bot.get_me",
                    deadline: Instant::now() + Duration::from_secs(30),
                    accept: &[],
                },
                |http, token| http.get(url).bearer_auth(token.value.expose()),
            )
            .await
    }

    const TELEGRAM: &str = r#"
[api]
base_url = "{base}"
credential = { style = "path_prefix", prefix = "/bot" }
rate_limit = { requests_per_second = 100.0, burst = 20, scope = "provider" }
"#;

    /// Telegram's `https://api.telegram.org/bot<token>/METHOD_NAME`: the token is the
    /// path's first segment after `bot`, and no Authorization header goes with it.
    #[tokio::test]
    async fn a_path_credential_goes_in_the_path_and_nowhere_else() {
        let (base, record) = recording_server(200).await;
        let (_harness, client, connection, token) = connected(TELEGRAM, &base).await;
        let answer = get(&client, &connection, &format!("{base}/getMe?x=1"))
            .await
            .expect("answered");
        assert_eq!(answer.status, 200);
        let requests = seen(&record);
        assert_eq!(requests.len(), 1);
        assert_eq!(
            requests[0].line,
            format!("GET /bot{token}/getMe?x=1 HTTP/1.1")
        );
        assert_eq!(
            requests[0].header("authorization"),
            None,
            "no bearer header"
        );
    }

    /// The URL now holds a secret: neither the client's log lines (at every level, the
    /// HTTP stack's own included) nor its errors may show it, whether the provider
    /// failed or could not be reached at all.
    #[tokio::test]
    async fn a_token_in_the_path_is_in_no_log_line_and_no_error() {
        let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
        let writer = buffer.clone();
        let subscriber = junction_telemetry::json_subscriber(
            tracing_subscriber::filter::Targets::new()
                .with_default(tracing::level_filters::LevelFilter::TRACE),
            move || LogWriter(writer.clone()),
        );
        let _guard = tracing::subscriber::set_default(subscriber);
        // Callsites another test thread reached first (with no subscriber) may have cached
        // "never": ask again now that this thread has one.
        tracing::callsite::rebuild_interest_cache();

        let (base, _record) = recording_server(503).await;
        let (_harness, client, connection, token) = connected(TELEGRAM, &base).await;
        let failed = get(&client, &connection, &format!("{base}/getMe"))
            .await
            .expect_err("a 503 every time");
        assert!(
            matches!(&failed, CallError::Failed(f) if f.code == "http_503"),
            "{failed:?}"
        );

        // Nothing listens there: a transport error, which carries URLs in reqwest.
        let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let dead = format!("http://{}", closed.local_addr().expect("addr"));
        drop(closed);
        let unreachable = get(&client, &connection, &format!("{dead}/getMe"))
            .await
            .expect_err("refused");

        let logs = String::from_utf8_lossy(&buffer.lock().map(|b| b.clone()).unwrap_or_default())
            .into_owned();
        assert!(logs.contains("provider call"), "the client logged: {logs}");
        for shown in [
            logs.as_str(),
            &failed.to_string(),
            &format!("{failed:?}"),
            &unreachable.to_string(),
            &format!("{unreachable:?}"),
        ] {
            assert!(!shown.contains(&token), "the token leaked: {shown}");
            assert!(!shown.contains("/bot"), "a URL leaked: {shown}");
        }
    }

    struct LogWriter(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for LogWriter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut buffer) = self.0.lock() {
                buffer.extend_from_slice(bytes);
            }
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Shopify's `X-Shopify-Access-Token`: the token alone in its own header.
    #[tokio::test]
    async fn a_header_credential_replaces_the_bearer_header() {
        let (base, record) = recording_server(200).await;
        let api = r#"
[api]
base_url = "{base}"
credential = { style = "header", name = "X-Shopify-Access-Token" }
rate_limit = { requests_per_second = 100.0, burst = 20, scope = "connection" }
"#;
        let (_harness, client, connection, token) = connected(api, &base).await;
        get(&client, &connection, &format!("{base}/shop.json"))
            .await
            .expect("answered");
        let requests = seen(&record);
        assert_eq!(requests[0].line, "GET /shop.json HTTP/1.1");
        assert_eq!(
            requests[0].header("x-shopify-access-token"),
            Some(token.as_str())
        );
        assert_eq!(requests[0].header("authorization"), None);
    }

    const XERO: &str = r#"
[api]
base_url = "{base}"
headers = { "xero-tenant-id" = "{account}" }
rate_limit = { requests_per_second = 100.0, burst = 20, scope = "connection" }
"#;

    /// Xero's `xero-tenant-id`: every call names the connection's tenant; a connection
    /// without one sends nothing (the provider would answer for no organisation).
    #[tokio::test]
    async fn a_header_names_the_connection_s_account_or_the_call_is_not_sent() {
        let (base, record) = recording_server(200).await;
        let (harness, client, connection, token) = connected(XERO, &base).await;
        let stored = harness
            .connections
            .get(&connection)
            .await
            .expect("store")
            .expect("connection");
        assert_eq!(stored.account_id, None, "the fake names no account");
        let refused = get(&client, &connection, &format!("{base}/Organisation")).await;
        assert!(
            matches!(&refused, Err(CallError::Failed(f)) if f.class == FailureClass::Permanent && f.code.contains("no provider account")),
            "{refused:?}"
        );
        assert!(seen(&record).is_empty(), "nothing sent");

        let tenant = "fe79f7dd-b6d4-4a92-ba7b-538af6289c58";
        let mut next = stored.clone();
        next.account_id = Some(tenant.into());
        assert!(
            harness
                .connections
                .replace(&next, stored.version)
                .await
                .expect("store")
        );
        get(&client, &connection, &format!("{base}/Organisation"))
            .await
            .expect("answered");
        let requests = seen(&record);
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].header("xero-tenant-id"), Some(tenant));
        assert_eq!(
            requests[0].header("authorization"),
            Some(format!("Bearer {token}").as_str()),
            "the bearer token as before"
        );
    }
}
