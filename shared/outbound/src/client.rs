//! The one way Junction calls a provider's API. Every call goes through, in order:
//!
//! 1. the provider's circuit breaker (open: the job is requeued until it may probe);
//! 2. the shared rate limit (per provider or per connection, from the catalog's
//!    `[api] rate_limit`: a pace and budgets over windows, each counted per app or per
//!    connection): the caller waits its turn, or is requeued when the wait does not fit
//!    in the invocation (booking nothing);
//! 3. the token vault: the connection's access token, refreshed once on a 401, placed
//!    as the catalog's `[api] credential` says, with its `[api] headers`;
//! 4. a connect timeout (2 s) and a total timeout (10 s);
//! 5. the response's rate-limit headers (a spent quota pauses every instance, a nearly
//!    spent one is spread over the time to its reset) and the
//!    catalog's error-body rules (a "200 OK" carrying an error is that error);
//! 6. the retry policy: transient failures and 429s retried with full-jitter backoff
//!    or the provider's own wait, at most 5 attempts, requeued instead of sleeping past
//!    the invocation's deadline.
//!
//! Each attempt logs one line (provider, connection, operation, status, latency,
//! attempt, outcome; never the URL, a header or a token) and prints its metrics.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use http::HeaderMap;

use super::{
    RateLimitHeaders,
    limiter::{Acquired, Admission, CircuitBreaker, Limit, RateLimiter, Window},
    policy::{CallFailure, Decision, RetryPolicy, classify_response},
    shared_state::SharedState,
};
use junction_aws::clock::Clock;
use junction_aws::response_body::{API_RESPONSE_CAP, BodyError, read_capped};
use junction_catalog::{
    ACCOUNT_PLACEHOLDER, ApiSpec, Catalog, Credential, FailureClass, RateLimitScope, RateLimitSpec,
};
use junction_oauth::{AccessToken, TokenVault, VaultError};

/// Connect timeout and total timeout of every provider API call.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A successful response, read whole.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Why a call did not produce a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Try again later, from the queue: the breaker is open, the rate limit or the
    /// provider's wait does not fit in this invocation.
    #[error("requeue after {after:?}: {reason}")]
    Requeue {
        after: Duration,
        reason: RequeueReason,
    },
    /// The call failed for good (permanent, or retries spent).
    #[error("{}: {}", .0.code, class_name(.0.class))]
    Failed(CallFailure),
    /// The connection needs its user to reconnect.
    #[error("connection needs reauthorization: {0}")]
    NeedsReauth(String),
    /// Junction's own dependencies (store, vault) are unavailable: retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Why a call goes back on the queue rather than waiting here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequeueReason {
    /// The provider's circuit breaker is open.
    CircuitOpen,
    /// The rate limit's wait does not fit in what is left of the invocation.
    RateLimit,
    /// The provider failed transiently or asked to wait longer than is left: its
    /// failure code (`http_429`, a catalog error code).
    Provider(String),
}

impl std::fmt::Display for RequeueReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequeueReason::CircuitOpen => f.write_str("circuit open"),
            RequeueReason::RateLimit => f.write_str("rate limit"),
            RequeueReason::Provider(code) => f.write_str(code),
        }
    }
}

/// The rate-limit keys of one call with what each counts: first the key of the
/// catalog's scope (the pace, and the windows of that scope), then, when some windows
/// count the other scope, that scope's key with those windows only.
fn buckets(spec: &RateLimitSpec, provider: &str, connection: &str) -> Vec<(String, Limit)> {
    let key = |scope| match scope {
        RateLimitScope::Provider => format!("bucket#{provider}"),
        RateLimitScope::Connection => format!("bucket#{provider}#{connection}"),
    };
    let windows = |scope| -> Vec<Window> {
        spec.windows
            .iter()
            .filter(|w| w.scope_or(spec.scope) == scope)
            .map(|w| Window {
                requests: w.requests,
                seconds: w.seconds(),
            })
            .collect()
    };
    let mut buckets = vec![(
        key(spec.scope),
        Limit {
            rate: spec.requests_per_second,
            burst: spec.burst,
            windows: windows(spec.scope),
        },
    )];
    let other = match spec.scope {
        RateLimitScope::Provider => RateLimitScope::Connection,
        RateLimitScope::Connection => RateLimitScope::Provider,
    };
    let other_windows = windows(other);
    if !other_windows.is_empty() {
        buckets.push((key(other), Limit::windows_only(other_windows)));
    }
    buckets
}

/// The class's name in log lines and errors (the catalog's spelling of it).
fn class_name(class: FailureClass) -> &'static str {
    match class {
        FailureClass::RateLimited => "rate_limited",
        FailureClass::Unauthorized => "unauthorized",
        FailureClass::Transient => "transient",
        FailureClass::Permanent => "permanent",
    }
}

/// One logical call: which provider and connection, what for (logged), and when the
/// invocation must be done.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub provider: &'a str,
    pub connection: &'a str,
    /// A name for logs (`history.list`, `deals.search`); never a URL.
    pub operation: &'a str,
    /// When the invocation ends (Lambda's deadline minus a margin).
    pub deadline: Instant,
    /// Statuses that are answers rather than failures for this call (Asana's events
    /// answer a first or expired sync token with `412` and the fresh token in the body);
    /// usually empty.
    pub accept: &'a [u16],
}

/// The provider's last answer to a call made with [`OutboundClient::send_answered`]:
/// the response, and what it means when it is a failure (a permanent status, an
/// error-body rule's match, or a transient one whose retries are spent or do not fit).
#[derive(Debug, Clone)]
pub struct Answered {
    pub response: ApiResponse,
    pub failure: Option<CallFailure>,
}

/// What one attempt came to, before the stack reacts to it.
enum Attempt {
    Succeeded(ApiResponse),
    /// `answer`: the status and headers, when the provider answered at all; `body`
    /// when it was read whole.
    Failed {
        failure: CallFailure,
        answer: Option<(u16, HeaderMap)>,
        body: Option<Vec<u8>>,
    },
}

/// The client stack; built once per process.
#[derive(Debug, Clone)]
pub struct OutboundClient {
    http: reqwest::Client,
    vault: TokenVault,
    catalog: &'static Catalog,
    limiter: RateLimiter,
    breaker: CircuitBreaker,
    /// The limiter's clock: when a request was booked, for its 429.
    clock: Arc<dyn Clock>,
    policy: RetryPolicy,
    call_timeout: Duration,
    /// The largest response body read; a larger one is a permanent failure.
    body_cap: usize,
}

/// No redirects: a token must not follow a response to another host.
fn http_client(timeout: Duration) -> reqwest::Client {
    junction_aws::tls::http_client_builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .user_agent("junction/1")
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

impl OutboundClient {
    pub fn new(
        catalog: &'static Catalog,
        vault: TokenVault,
        state: Arc<dyn SharedState>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        OutboundClient {
            http: http_client(CALL_TIMEOUT),
            call_timeout: CALL_TIMEOUT,
            body_cap: API_RESPONSE_CAP,
            vault,
            catalog,
            limiter: RateLimiter::new(state.clone(), clock.clone()),
            breaker: CircuitBreaker::new(state, clock.clone()),
            clock,
            policy: RetryPolicy::default(),
        }
    }

    /// The retry policy (tests shorten the backoff).
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Another total timeout per call (tests make slow answers time out quickly).
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.http = http_client(timeout);
        self.call_timeout = timeout;
        self
    }

    /// Another cap on response bodies (the proxy's answer must fit Lambda's response).
    pub fn with_body_cap(mut self, cap: usize) -> Self {
        self.body_cap = cap;
        self
    }

    /// The longest one attempt can take.
    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// The retry policy in use.
    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    /// The HTTP client requests are built with (it carries the timeouts).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn api(&self, provider: &str) -> Result<&'static ApiSpec, CallError> {
        self.catalog
            .get(provider)
            .and_then(|p| p.api.as_ref())
            .ok_or_else(|| {
                CallError::Unavailable(format!("provider {provider} has no [api] section"))
            })
    }

    /// Sends the request `build` makes (with the connection's token) through the stack;
    /// `build` is called once per attempt.
    pub async fn send<F>(&self, call: Call<'_>, build: F) -> Result<ApiResponse, CallError>
    where
        F: Fn(&reqwest::Client, &AccessToken) -> reqwest::RequestBuilder,
    {
        self.run(call, build, false)
            .await
            .map(|answered| answered.response)
    }

    /// As [`OutboundClient::send`], but a failure the provider answered with a body (a
    /// 404, a 400 naming the bad field, a 503 whose retries are spent or whose wait does
    /// not fit) is returned as the provider's answer, with its classification, rather
    /// than as an error: what the proxy hands back to its caller. A 401 after the one
    /// refresh is still [`CallError::Failed`] (the connection, not the request, is at
    /// fault), and failures without an answer (timeouts, the breaker, the bucket) are
    /// still errors.
    pub async fn send_answered<F>(&self, call: Call<'_>, build: F) -> Result<Answered, CallError>
    where
        F: Fn(&reqwest::Client, &AccessToken) -> reqwest::RequestBuilder,
    {
        self.run(call, build, true).await
    }

    async fn run<F>(&self, call: Call<'_>, build: F, answers: bool) -> Result<Answered, CallError>
    where
        F: Fn(&reqwest::Client, &AccessToken) -> reqwest::RequestBuilder,
    {
        let api = self.api(call.provider)?;
        let buckets = buckets(&api.rate_limit, call.provider, call.connection);
        // The first key holds the pace, which 429s and the provider's headers adjust.
        let (bucket, limit) = (&buckets[0].0, &buckets[0].1);
        let keys: Vec<(&str, &Limit)> = buckets.iter().map(|(k, l)| (k.as_str(), l)).collect();
        let breaker = format!("breaker#{}", call.provider);
        // The whole chain: a DynamoDB error's own text is only "service error".
        let unavailable =
            |err: super::StateError| CallError::Unavailable(junction_telemetry::error_chain(&err));
        let mut rng = rand::rngs::OsRng;
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Admission::Open { retry_in } =
                self.breaker.admit(&breaker).await.map_err(unavailable)?
            {
                return Err(CallError::Requeue {
                    after: retry_in,
                    reason: RequeueReason::CircuitOpen,
                });
            }
            let time_left = call.deadline.saturating_duration_since(Instant::now());
            let booked = self.clock.now();
            // A wait that does not fit is refused without booking the time, so a
            // requeued job does not spend the provider's budget.
            match self
                .limiter
                .acquire_within(&keys, time_left.saturating_sub(self.call_timeout))
                .await
                .map_err(unavailable)?
            {
                Acquired::Wait(wait) => tokio::time::sleep(wait).await,
                Acquired::Refused { retry_in } => {
                    return Err(CallError::Requeue {
                        after: retry_in,
                        reason: RequeueReason::RateLimit,
                    });
                }
            }

            let started = Instant::now();
            let (failure, headers) = match self.attempt(call, api, &build).await? {
                Attempt::Succeeded(response) => {
                    self.log(call, attempt, Some(response.status), started, None);
                    self.breaker
                        .succeeded(&breaker)
                        .await
                        .map_err(unavailable)?;
                    let limits =
                        RateLimitHeaders::parse(&response.headers, time::OffsetDateTime::now_utc());
                    if let (Some(remaining), Some(reset)) = (limits.remaining, limits.reset_after) {
                        self.limiter
                            .observe(bucket, limit, remaining, limits.limit, reset)
                            .await
                            .map_err(unavailable)?;
                    }
                    return Ok(Answered {
                        response,
                        failure: None,
                    });
                }
                Attempt::Failed {
                    failure,
                    answer,
                    body,
                } => (failure, answer.zip(body)),
            };
            let status = headers.as_ref().map(|((status, _), _)| *status);
            self.log(call, attempt, status, started, Some(&failure));
            let limits = headers.as_ref().map(|((_, headers), _)| {
                RateLimitHeaders::parse(headers, time::OffsetDateTime::now_utc())
            });
            let provider_wait = limits.and_then(|limits| limits.wait());
            // The provider says which window is spent and when it resets: a documented
            // quota ran out, which teaches nothing about an undocumented limit.
            let quota_spent = limits.and_then(|limits| match limits.remaining {
                Some(0) => limits.reset_after,
                _ => None,
            });
            let time_left = call.deadline.saturating_duration_since(Instant::now());
            let decision = self.policy.decide(
                failure.class,
                attempt,
                provider_wait,
                time_left,
                self.call_timeout,
                &mut rng,
            );
            match failure.class {
                // Every instance slows down and holds back: for the provider's wait,
                // else for this retry's backoff (the provider's window must refill).
                FailureClass::RateLimited => {
                    let hold = match decision {
                        Decision::Retry(wait) | Decision::Requeue(wait) => Some(wait),
                        Decision::GiveUp => provider_wait,
                    };
                    match quota_spent {
                        Some(reset) => self
                            .limiter
                            .pause(bucket, limit, hold.unwrap_or(reset).max(reset))
                            .await
                            .map_err(unavailable)?,
                        None => {
                            self.limiter
                                .throttled_after(bucket, limit, hold, booked)
                                .await
                                .map_err(unavailable)?;
                        }
                    }
                }
                FailureClass::Transient => {
                    self.breaker.failed(&breaker).await.map_err(unavailable)?;
                }
                FailureClass::Unauthorized | FailureClass::Permanent => {}
            }
            // The caller wants the provider's answer rather than a requeue or an error.
            if answers
                && failure.class != FailureClass::Unauthorized
                && !matches!(decision, Decision::Retry(_))
                && let Some(((status, headers), body)) = headers
            {
                return Ok(Answered {
                    response: ApiResponse {
                        status,
                        headers,
                        body,
                    },
                    failure: Some(failure),
                });
            }
            match decision {
                // After a 429 the bucket makes the next acquire wait; no double wait.
                Decision::Retry(wait) => {
                    if failure.class != FailureClass::RateLimited {
                        tokio::time::sleep(wait).await;
                    }
                }
                Decision::Requeue(after) => {
                    return Err(CallError::Requeue {
                        after,
                        reason: RequeueReason::Provider(failure.code),
                    });
                }
                Decision::GiveUp => return Err(CallError::Failed(failure)),
            }
        }
    }

    /// Sends one attempt (with the connection's token) and classifies what came back;
    /// `Err` for what ends the call at once (reauthorization, a missing connection,
    /// Junction's own dependencies down).
    async fn attempt<F>(
        &self,
        call: Call<'_>,
        api: &ApiSpec,
        build: &F,
    ) -> Result<Attempt, CallError>
    where
        F: Fn(&reqwest::Client, &AccessToken) -> reqwest::RequestBuilder,
    {
        let rules = &api.error_rules;
        let permanent = |code: String| {
            CallError::Failed(CallFailure {
                class: FailureClass::Permanent,
                code,
            })
        };
        // Why the request was not sent at all (a header needs an account the connection
        // lacks); the builder handed to the vault then fails before any network use.
        let unsendable = std::sync::Mutex::new(None::<String>);
        let sent = self
            .vault
            .send_authorized(call.connection, |token| {
                match authorize(api, build(&self.http, token), token) {
                    Ok(request) => request,
                    Err(reason) => {
                        if let Ok(mut slot) = unsendable.lock() {
                            *slot = Some(reason);
                        }
                        self.http.get("")
                    }
                }
            })
            .await;
        if let Some(reason) = unsendable.lock().ok().and_then(|mut slot| slot.take()) {
            return Err(permanent(reason));
        }
        let response = match sent {
            Ok(response) => response,
            Err(VaultError::Unreachable { reason: kind, .. }) => {
                return Ok(Attempt::Failed {
                    failure: CallFailure {
                        class: FailureClass::Transient,
                        code: kind.as_str().into(),
                    },
                    answer: None,
                    body: None,
                });
            }
            Err(VaultError::NeedsReauth(reason)) => return Err(CallError::NeedsReauth(reason)),
            Err(VaultError::NotFound(id)) => {
                return Err(permanent(format!("connection {id} not found")));
            }
            Err(VaultError::Rejected(reason)) => return Err(permanent(reason)),
            Err(err @ VaultError::Unavailable { .. }) => {
                return Err(CallError::Unavailable(junction_telemetry::error_chain(
                    &err,
                )));
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut kept = None;
        let classified = match read_capped(response, self.body_cap).await {
            Ok(body) if call.accept.contains(&status) => Ok(body),
            Ok(body) => classify_response(rules, status, &body)
                .map(|()| body.clone())
                .inspect_err(|_| kept = Some(body.to_vec())),
            // The same page will be as large next time: not retried.
            Err(BodyError::TooLarge { cap }) => Err(CallFailure {
                class: FailureClass::Permanent,
                code: format!("response_too_large: over {cap} bytes"),
            }),
            Err(BodyError::Interrupted(cause)) => {
                tracing::warn!(
                    provider = %call.provider,
                    operation = %call.operation,
                    error = %cause.without_url(),
                    "provider response broke off mid-body"
                );
                Err(CallFailure {
                    class: FailureClass::Transient,
                    code: "body_interrupted".into(),
                })
            }
        };
        Ok(match classified {
            Ok(body) => Attempt::Succeeded(ApiResponse {
                status,
                headers,
                body: body.to_vec(),
            }),
            Err(failure) => Attempt::Failed {
                failure,
                answer: Some((status, headers)),
                body: kept,
            },
        })
    }

    fn log(
        &self,
        call: Call<'_>,
        attempt: u32,
        status: Option<u16>,
        started: Instant,
        failure: Option<&CallFailure>,
    ) {
        let latency = started.elapsed();
        let class = failure.map(|f| f.class);
        tracing::info!(
            provider = call.provider,
            connection = call.connection,
            operation = call.operation,
            status,
            latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            attempt,
            outcome = class.map_or("ok", class_name),
            error = failure.map(|f| f.code.as_str()),
            "provider call"
        );
        crate::log::record_outbound_call(call.provider, class, latency);
    }
}

/// `request` (what a caller built, with `Authorization: Bearer`) as the provider takes
/// it, from the catalog's `[api]`: the credential moved where `credential` says (into
/// the path after its prefix, Telegram's `/bot<token>`; or into a header of its own,
/// Shopify's `X-Shopify-Access-Token`), and the `headers` added with `{account}` filled
/// (Xero's `xero-tenant-id`). `Err` names why it must not be sent: a header needs an
/// account the connection has not got.
///
/// A URL that holds the credential is never logged: the client logs no URL, and the
/// vault strips the URL from transport errors.
pub(crate) fn authorize(
    api: &ApiSpec,
    request: reqwest::RequestBuilder,
    token: &AccessToken,
) -> Result<reqwest::RequestBuilder, String> {
    if api.credential == Credential::Bearer && api.headers.is_empty() {
        return Ok(request);
    }
    let (client, built) = request.build_split();
    // A request that does not build fails when sent, as it would have: its error names
    // no URL of ours.
    let Ok(mut built) = built else {
        return Ok(client.get(""));
    };
    let account = token.params.get(ACCOUNT_PLACEHOLDER);
    for (name, template) in &api.headers {
        let needs_account = template.contains(&format!("{{{ACCOUNT_PLACEHOLDER}}}"));
        let value = match (needs_account, account) {
            (false, _) => template.clone(),
            (true, Some(account)) => {
                template.replace(&format!("{{{ACCOUNT_PLACEHOLDER}}}"), account)
            }
            (true, None) => {
                return Err(format!(
                    "connection has no provider account for the {name} header; reconnect it"
                ));
            }
        };
        let (Ok(name), Ok(value)) = (
            http::HeaderName::try_from(name.as_str()),
            http::HeaderValue::try_from(value),
        ) else {
            return Err(format!(
                "the {name} header's value is not one HTTP can carry"
            ));
        };
        built.headers_mut().insert(name, value);
    }
    match &api.credential {
        Credential::Bearer => {}
        Credential::PathPrefix { prefix } => {
            built.headers_mut().remove(http::header::AUTHORIZATION);
            let path = format!(
                "{prefix}{}{}",
                junction_oauth::pasted::path_safe(token.value.expose()),
                built.url().path()
            );
            built.url_mut().set_path(&path);
        }
        Credential::Header { name } => {
            built.headers_mut().remove(http::header::AUTHORIZATION);
            let (Ok(name), Ok(mut value)) = (
                http::HeaderName::try_from(name.as_str()),
                http::HeaderValue::try_from(token.value.expose()),
            ) else {
                return Err("the credential is not a header value".to_owned());
            };
            value.set_sensitive(true);
            built.headers_mut().insert(name, value);
        }
    }
    Ok(reqwest::RequestBuilder::from_parts(client, built))
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
