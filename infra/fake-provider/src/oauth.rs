//! A strict OAuth 2.0 authorization server on loopback.
//!
//! Endpoints: `GET /authorize`, `POST /token`, `POST /revoke`, a protected
//! resource `GET /api/me`, and a protected provider API under `/provider/…` whose
//! answers a test supplies ([`FakeAuthServer::serve_provider_api`]): the pollers'
//! tests put a provider's documented request and response shapes there. Every check a real provider makes that Junction's
//! client could get wrong is made here too, so a bug in the client shows up as
//! a failing test rather than as a failure in production.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, LOCATION, PRAGMA, RETRY_AFTER, WWW_AUTHENTICATE,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::serve::ListenerExt;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use crate::ledger::{self, IssuedSecret};

/// How long an authorization code can be exchanged (RFC 6749 §4.1.2
/// recommends at most 10 minutes; real providers use about a minute).
const CODE_LIFETIME: Duration = Duration::from_secs(60);

/// What the server accepts; [`Default`] matches the client Junction's tests use.
#[derive(Debug, Clone)]
pub struct AuthServerConfig {
    /// The only registered client.
    pub client_id: String,
    /// That client's secret.
    pub client_secret: String,
    /// Exact-match allow-list (RFC 6749 §3.1.2.3: no prefix matching).
    pub redirect_uris: Vec<String>,
    /// How the client must authenticate at `/token` and `/revoke`.
    pub client_auth: ClientAuth,
    /// Reject authorization requests without a PKCE challenge (and so code
    /// exchanges without a verifier), as OAuth 2.1 and the Security BCP ask.
    pub require_pkce: bool,
    /// `expires_in` sent in token responses.
    pub advertised_lifetime: Duration,
    /// "Providers lie": access tokens stop working at `/api/me` after this
    /// long (`None` = the advertised lifetime).
    pub actual_lifetime: Option<Duration>,
    /// Issue a new refresh token on each refresh; the old one becomes invalid,
    /// and presenting it again revokes the whole grant (reuse detection).
    pub rotate_refresh_tokens: bool,
    /// Include a `refresh_token` in the authorization-code response.
    pub issue_refresh_token: bool,
}

impl Default for AuthServerConfig {
    fn default() -> Self {
        AuthServerConfig {
            client_id: "junction-test-client".to_owned(),
            client_secret: "junction-test-secret".to_owned(),
            redirect_uris: Vec::new(),
            client_auth: ClientAuth::Either,
            require_pkce: true,
            advertised_lifetime: Duration::from_secs(3600),
            actual_lifetime: None,
            rotate_refresh_tokens: true,
            issue_refresh_token: true,
        }
    }
}

/// Which client authentication methods (RFC 6749 §2.3.1) the server accepts;
/// providers differ, and a client sending the wrong one gets `invalid_client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic with the form-urlencoded client id and secret.
    Basic,
    /// `client_id` and `client_secret` in the request body.
    Post,
    /// Either of the above (never both in one request).
    Either,
}

/// How the next token-endpoint calls fail (failure injection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenFailure {
    /// That HTTP status with a JSON body `{"error":"server_error"}`.
    Status(u16),
    /// 429 with a `Retry-After` header.
    TooManyRequests {
        /// The `Retry-After` value, in seconds.
        retry_after_seconds: u64,
    },
    /// Sleep this long, then answer normally (so a client timeout fires).
    Hang(Duration),
    /// 502 with an HTML body, as a proxy in front of the provider would send.
    HtmlErrorPage,
}

/// What the "user" answers at `/authorize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Grant access: redirect with a code.
    Approve,
    /// Refuse: redirect with `error=access_denied`.
    Deny,
}

/// How often each endpoint was called, so tests can assert, for example,
/// that a refresh race produced exactly one refresh.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// Requests to `/authorize`, whatever their outcome.
    pub authorize: usize,
    /// `authorization_code` token requests from an authenticated client.
    pub code_exchanges: usize,
    /// `refresh_token` token requests from an authenticated client.
    pub refreshes: usize,
    /// Token requests answered by an injected failure.
    pub failed_token_calls: usize,
    /// Successful `/revoke` requests (including unknown tokens, RFC 7009 §2.2).
    pub revocations: usize,
    /// Requests to `/api/me`.
    pub api_calls: usize,
    /// `/api/me` requests answered 401.
    pub api_rejections: usize,
    /// `/api/me` requests refused with a bare 429 by the undocumented rate limit.
    pub api_throttled: usize,
}

/// The account a user signs in to unless a test says otherwise.
pub const DEFAULT_ACCOUNT: &str = "test-user";

/// One grant as [`FakeAuthServer::grants`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantSummary {
    /// The account that authorized it.
    pub account: String,
    /// Revoked (at `/revoke`, by reuse detection or by the user).
    pub revoked: bool,
}

/// A running fake authorization server. Dropping it (or [`stop`]) closes the
/// listener; open connections finish their current request and close.
///
/// [`stop`]: FakeAuthServer::stop
#[derive(Debug)]
pub struct FakeAuthServer {
    base_url: String,
    shared: Shared,
    task: JoinHandle<()>,
}

impl FakeAuthServer {
    /// Binds `127.0.0.1:0` and serves on a spawned task (TCP_NODELAY on every
    /// connection so small requests are not delayed by Nagle).
    ///
    /// # Panics
    /// If the loopback listener cannot be bound: a test cannot go on without it.
    pub async fn start(config: AuthServerConfig) -> FakeAuthServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake authorization server to 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("local address of the fake authorization server");
        let shared: Shared = Arc::new(Mutex::new(ServerState::new(config)));
        let app = Router::new()
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/revoke", post(revoke))
            .route("/api/me", get(api_me))
            .route("/provider/{*path}", any(provider_api))
            .with_state(shared.clone());
        let listener = listener.tap_io(|tcp| {
            // Best effort: a connection without TCP_NODELAY still works.
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeAuthServer {
            base_url: format!("http://{addr}"),
            shared,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The authorization endpoint.
    pub fn authorize_url(&self) -> String {
        format!("{}/authorize", self.base_url)
    }

    /// The token endpoint.
    pub fn token_url(&self) -> String {
        format!("{}/token", self.base_url)
    }

    /// The revocation endpoint (RFC 7009).
    pub fn revoke_url(&self) -> String {
        format!("{}/revoke", self.base_url)
    }

    /// The body of a Junction catalog `[oauth]` table for this server (PKCE, client
    /// secret in the body, RFC 7009 revocation), so every test describes it the same way.
    pub fn oauth_catalog_fields(&self) -> String {
        format!(
            "authorize_url = \"{}\"\ntoken_url = \"{}\"\nscopes = [\"read\", \"write\"]\npkce = true\nclient_auth = \"client_secret_post\"\nlifetime_margin_seconds = 300\nrefresh_token_rotation = {}\nrevocation = {{ style = \"rfc7009\", url = \"{}\" }}\n",
            self.authorize_url(),
            self.token_url(),
            self.lock().config.rotate_refresh_tokens,
            self.revoke_url()
        )
    }

    /// A protected resource that accepts only live access tokens.
    pub fn api_url(&self) -> String {
        format!("{}/api/me", self.base_url)
    }

    /// The provider API's base URL (`http://127.0.0.1:PORT/provider`), for a catalog
    /// entry's `[api] base_url`.
    pub fn provider_api_base(&self) -> String {
        format!("{}/provider", self.base_url)
    }

    /// Answers authorized requests under `/provider/…` with `handler` (after any
    /// scripted answers and the undocumented rate limit, like `/api/me`).
    pub fn serve_provider_api(
        &self,
        handler: impl Fn(&ApiRequest) -> ScriptedResponse + Send + Sync + 'static,
    ) {
        self.lock().provider_api = Some(ApiHandler(Arc::new(handler)));
    }

    /// The authorized requests the provider API received, in order.
    pub fn provider_requests(&self) -> Vec<ApiRequest> {
        self.lock().provider_requests.clone()
    }

    /// Replaces the redirect URI allow-list: tests learn their callback URL
    /// only after starting.
    pub fn set_redirect_uris(&self, uris: Vec<String>) {
        self.lock().config.redirect_uris = uris;
    }

    /// Sets what the user answers at the next authorization requests.
    pub fn set_decision(&self, decision: Decision) {
        self.lock().decision = decision;
    }

    /// The account the user signs in to at the next authorization requests (default
    /// [`DEFAULT_ACCOUNT`]); token responses name it in `account_id`.
    pub fn sign_in_as(&self, account: &str) {
        self.lock().account = account.to_owned();
    }

    /// Every grant issued so far, oldest first: whose it is and whether it was revoked.
    pub fn grants(&self) -> Vec<GrantSummary> {
        let state = self.lock();
        let mut grants: Vec<&Grant> = state.grants.values().collect();
        grants.sort_by_key(|grant| grant.issued);
        grants
            .into_iter()
            .map(|grant| GrantSummary {
                account: grant.account.clone(),
                revoked: grant.revoked,
            })
            .collect()
    }

    /// Every token call waits this long before anything else (widens races).
    pub fn set_token_delay(&self, delay: Duration) {
        self.lock().token_delay = delay;
    }

    /// The next `count` token calls fail with `failure` (replacing any
    /// failures still pending).
    pub fn fail_next_token_calls(&self, count: usize, failure: TokenFailure) {
        self.lock().pending_failures = (count > 0).then_some((count, failure));
    }

    /// The user revoked access at the provider: every refresh token so far
    /// gets `invalid_grant`, every access token so far gets 401.
    pub fn revoke_all_grants(&self) {
        for grant in self.lock().grants.values_mut() {
            grant.revoked = true;
        }
    }

    /// Limits `/api/me` to `per_second` requests (bursts of as many) without saying
    /// so: excess requests get a bare 429, no rate-limit headers, no Retry-After.
    pub fn set_undocumented_rate_limit(&self, per_second: f64) {
        lock(&self.shared).api_limit = Some((per_second, per_second, Instant::now()));
    }

    /// Queues answers for the next authorized `/api/me` requests.
    pub fn script_api(&self, responses: impl IntoIterator<Item = ScriptedResponse>) {
        lock(&self.shared).api_script.extend(responses);
    }

    /// All current access tokens stop working at `/api/me` (early expiry,
    /// before the advertised `expires_in`).
    pub fn expire_access_tokens_now(&self) {
        let now = Instant::now();
        for token in self.lock().access_tokens.values_mut() {
            token.dies_at = token.dies_at.min(now);
        }
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.lock().counters.clone()
    }

    /// The secrets this server issued (codes, access and refresh tokens) or was handed
    /// (its client secret, PKCE verifiers, `state` values), oldest first: what must never
    /// appear in a client's logs. [`crate::issued_secrets`] has every server's.
    pub fn issued_secrets(&self) -> Vec<IssuedSecret> {
        self.lock().issued.clone()
    }

    /// Stops the server (same as dropping it), e.g. to simulate an outage.
    pub fn stop(self) {
        drop(self);
    }

    fn lock(&self) -> MutexGuard<'_, ServerState> {
        lock(&self.shared)
    }
}

impl Drop for FakeAuthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Shared = Arc<Mutex<ServerState>>;

fn lock(shared: &Shared) -> MutexGuard<'_, ServerState> {
    // A panicking handler leaves the state consistent enough for a test fake.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug)]
struct ServerState {
    config: AuthServerConfig,
    decision: Decision,
    /// Who signs in at `/authorize`.
    account: String,
    token_delay: Duration,
    pending_failures: Option<(usize, TokenFailure)>,
    codes: HashMap<String, CodeRecord>,
    grants: HashMap<String, Grant>,
    access_tokens: HashMap<String, AccessToken>,
    refresh_tokens: HashMap<String, RefreshToken>,
    counters: Counters,
    api_script: std::collections::VecDeque<ScriptedResponse>,
    /// An undocumented limit on `/api/me`: (requests per second, tokens, last refill).
    api_limit: Option<(f64, f64, Instant)>,
    provider_api: Option<ApiHandler>,
    provider_requests: Vec<ApiRequest>,
    /// What [`FakeAuthServer::issued_secrets`] lists (also in the process-wide ledger).
    issued: Vec<IssuedSecret>,
}

/// One authorized request to the provider API, as its handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    pub method: String,
    /// The path after `/provider` (`/gmail/v1/users/me/history`).
    pub path: String,
    /// Query parameters, decoded, in order (repeats kept).
    pub query: Vec<(String, String)>,
    /// The request's headers, lowercase names, in order (`authorization` included).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ApiRequest {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The first value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The body as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl ScriptedResponse {
    /// A 200 with a JSON body.
    pub fn json(body: &Value) -> ScriptedResponse {
        ScriptedResponse::with_status(200, body)
    }

    /// A JSON body with `status`.
    pub fn with_status(status: u16, body: &Value) -> ScriptedResponse {
        ScriptedResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }
}

#[derive(Clone)]
struct ApiHandler(Arc<dyn Fn(&ApiRequest) -> ScriptedResponse + Send + Sync>);

impl std::fmt::Debug for ApiHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiHandler")
    }
}

/// An answer `/api/me` gives to an authorized request instead of its usual 200, in
/// order (misbehaviour for the outbound client's tests: 429s, 503 bursts, slow or
/// "200 with an error" answers).
#[derive(Debug, Clone, Default)]
pub struct ScriptedResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Waited before answering (past the client's timeout: a timeout).
    pub delay: Duration,
}

#[derive(Debug)]
struct CodeRecord {
    client_id: String,
    redirect_uri: String,
    scope: String,
    challenge: Option<String>,
    expires_at: Instant,
    /// Set on the first exchange attempt: codes are single-use.
    used: bool,
    /// The grant issued from this code, revoked if the code is replayed.
    grant_id: Option<String>,
    /// The account that signed in.
    account: String,
}

/// One authorization: the family of tokens descending from one code.
#[derive(Debug)]
struct Grant {
    client_id: String,
    revoked: bool,
    account: String,
    /// Its rank among the grants issued (for [`FakeAuthServer::grants`]).
    issued: usize,
}

#[derive(Debug)]
struct AccessToken {
    grant_id: String,
    dies_at: Instant,
    revoked: bool,
}

#[derive(Debug)]
struct RefreshToken {
    grant_id: String,
    scope: String,
    /// Replaced by a newer refresh token; presenting it again is reuse.
    rotated: bool,
}

impl ServerState {
    fn new(config: AuthServerConfig) -> Self {
        let mut state = ServerState {
            config,
            decision: Decision::Approve,
            account: DEFAULT_ACCOUNT.to_owned(),
            token_delay: Duration::ZERO,
            pending_failures: None,
            codes: HashMap::new(),
            grants: HashMap::new(),
            access_tokens: HashMap::new(),
            refresh_tokens: HashMap::new(),
            counters: Counters::default(),
            api_script: std::collections::VecDeque::new(),
            api_limit: None,
            provider_api: None,
            provider_requests: Vec::new(),
            issued: Vec::new(),
        };
        let client_secret = state.config.client_secret.clone();
        state.note(
            "the fake authorization server's client secret",
            &client_secret,
        );
        state
    }

    /// Keeps `value` for [`FakeAuthServer::issued_secrets`] and the process-wide ledger.
    fn note(&mut self, what: &'static str, value: &str) {
        self.issued.extend(ledger::record(what, value));
    }

    fn take_failure(&mut self) -> Option<TokenFailure> {
        let (count, failure) = self.pending_failures.take()?;
        if count > 1 {
            self.pending_failures = Some((count - 1, failure.clone()));
        }
        self.counters.failed_token_calls += 1;
        Some(failure)
    }

    fn revoke_grant(&mut self, grant_id: &str) {
        if let Some(grant) = self.grants.get_mut(grant_id) {
            grant.revoked = true;
        }
    }

    fn grant_revoked(&self, grant_id: &str) -> bool {
        self.grants.get(grant_id).is_none_or(|grant| grant.revoked)
    }

    /// Issues an access token for `scope` (and a refresh token for
    /// `refresh_scope` when given) and builds the RFC 6749 §5.1 response.
    fn issue_tokens(
        &mut self,
        grant_id: &str,
        scope: &str,
        refresh_scope: Option<&str>,
    ) -> Response {
        let access = format!("{TOKEN_MARKER}{}", random_token());
        self.note("an access token of the fake authorization server", &access);
        let lifetime = self
            .config
            .actual_lifetime
            .unwrap_or(self.config.advertised_lifetime);
        self.access_tokens.insert(
            access.clone(),
            AccessToken {
                grant_id: grant_id.to_owned(),
                dies_at: Instant::now() + lifetime,
                revoked: false,
            },
        );
        let mut body = json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.config.advertised_lifetime.as_secs(),
            "scope": scope,
        });
        if let Some(grant) = self.grants.get(grant_id) {
            body["account_id"] = Value::String(grant.account.clone());
        }
        if let Some(refresh_scope) = refresh_scope {
            let refresh = format!("{TOKEN_MARKER}{}", random_token());
            self.note("a refresh token of the fake authorization server", &refresh);
            self.refresh_tokens.insert(
                refresh.clone(),
                RefreshToken {
                    grant_id: grant_id.to_owned(),
                    scope: refresh_scope.to_owned(),
                    rotated: false,
                },
            );
            body["refresh_token"] = Value::String(refresh);
        }
        json_response(StatusCode::OK, &body)
    }
}

// ---------------------------------------------------------------- /authorize

async fn authorize(State(shared): State<Shared>, RawQuery(query): RawQuery) -> Response {
    let mut state = lock(&shared);
    state.counters.authorize += 1;
    let params = Params::parse(query.as_deref().unwrap_or("").as_bytes());
    if let Some(state_param) = params.get("state") {
        state.note(
            "a state value sent to the fake authorization server",
            state_param,
        );
    }

    // Until client and redirect URI are known good, never redirect
    // (RFC 6749 §4.1.2.1): an open redirector would leak the error to anyone.
    if matches!(
        params.duplicated.as_deref(),
        Some("client_id" | "redirect_uri")
    ) {
        return html_page(
            StatusCode::BAD_REQUEST,
            "client_id or redirect_uri repeated",
        );
    }
    if params.get("client_id") != Some(state.config.client_id.as_str()) {
        return html_page(StatusCode::BAD_REQUEST, "Unknown client");
    }
    let Some(redirect_uri) = params.get("redirect_uri") else {
        return html_page(StatusCode::BAD_REQUEST, "Missing redirect_uri");
    };
    if !state.config.redirect_uris.iter().any(|u| u == redirect_uri) {
        return html_page(StatusCode::BAD_REQUEST, "redirect_uri is not registered");
    }

    let state_param = params.get("state");
    let fail = |error: &str, description: &str| {
        redirect(
            redirect_uri,
            &[
                ("error", Some(error)),
                ("error_description", Some(description)),
                ("state", state_param),
            ],
        )
    };
    if let Some(name) = &params.duplicated {
        return fail("invalid_request", &format!("{name} repeated"));
    }
    match params.get("response_type") {
        None => return fail("invalid_request", "response_type missing"),
        Some("code") => {}
        Some(_) => {
            return fail(
                "unsupported_response_type",
                "only response_type=code is supported",
            );
        }
    }
    let challenge = params.get("code_challenge");
    match (challenge, params.get("code_challenge_method")) {
        (None, None) => {}
        (None, Some(_)) => {
            return fail(
                "invalid_request",
                "code_challenge_method without code_challenge",
            );
        }
        (Some(_), Some("S256")) => {}
        (Some(_), _) => {
            return fail("invalid_request", "code_challenge_method must be S256");
        }
    }
    if challenge.is_some_and(|c| !is_pkce_string(c)) {
        return fail("invalid_request", "malformed code_challenge");
    }
    if challenge.is_none() && state.config.require_pkce {
        return fail("invalid_request", "PKCE code_challenge required");
    }
    if state.decision == Decision::Deny {
        return fail("access_denied", "the user denied access");
    }

    let code = random_token();
    state.note(
        "an authorization code of the fake authorization server",
        &code,
    );
    let record = CodeRecord {
        client_id: state.config.client_id.clone(),
        redirect_uri: redirect_uri.to_owned(),
        scope: params.get("scope").unwrap_or("").to_owned(),
        challenge: challenge.map(str::to_owned),
        expires_at: Instant::now() + CODE_LIFETIME,
        used: false,
        grant_id: None,
        account: state.account.clone(),
    };
    state.codes.insert(code.clone(), record);
    redirect(
        redirect_uri,
        &[("code", Some(&code)), ("state", state_param)],
    )
}

// -------------------------------------------------------------------- /token

async fn token(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (failure, delay) = {
        let mut state = lock(&shared);
        (state.take_failure(), state.token_delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match failure {
        None => {}
        Some(TokenFailure::Status(status)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return json_response(status, &json!({"error": "server_error"}));
        }
        Some(TokenFailure::TooManyRequests {
            retry_after_seconds,
        }) => {
            let mut response = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                &json!({"error": "temporarily_unavailable"}),
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after_seconds));
            return response;
        }
        Some(TokenFailure::Hang(duration)) => tokio::time::sleep(duration).await,
        Some(TokenFailure::HtmlErrorPage) => {
            return html_page(StatusCode::BAD_GATEWAY, "502 Bad Gateway");
        }
    }
    let mut state = lock(&shared);
    handle_token(&mut state, &headers, &body).unwrap_or_else(IntoResponse::into_response)
}

fn handle_token(
    state: &mut ServerState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, Refusal> {
    let params = parse_form_body(headers, body)?;
    if let Some(verifier) = params.get("code_verifier") {
        state.note(
            "a PKCE verifier sent to the fake authorization server",
            verifier,
        );
    }
    let client_id = authenticate_client(&state.config, headers, &params)?;
    match params.get("grant_type") {
        Some("authorization_code") => {
            state.counters.code_exchanges += 1;
            exchange_code(state, &client_id, &params)
        }
        Some("refresh_token") => {
            state.counters.refreshes += 1;
            refresh(state, &client_id, &params)
        }
        Some(_) => Err(oauth_error(
            "unsupported_grant_type",
            "only authorization_code and refresh_token are supported",
        )),
        None => Err(oauth_error("invalid_request", "grant_type missing")),
    }
}

fn exchange_code(
    state: &mut ServerState,
    client_id: &str,
    params: &Params,
) -> Result<Response, Refusal> {
    let code = params
        .get("code")
        .ok_or_else(|| oauth_error("invalid_request", "code missing"))?;
    let record = state
        .codes
        .get_mut(code)
        .filter(|record| record.client_id == client_id)
        .ok_or_else(|| invalid_grant("unknown authorization code"))?;
    if record.used {
        // RFC 6749 §4.1.2: a replayed code revokes what it issued.
        let grant_id = record.grant_id.clone();
        if let Some(grant_id) = grant_id {
            state.revoke_grant(&grant_id);
        }
        return Err(invalid_grant("authorization code already used"));
    }
    record.used = true;
    if Instant::now() >= record.expires_at {
        return Err(invalid_grant("authorization code expired"));
    }
    let redirect_uri = params
        .get("redirect_uri")
        .ok_or_else(|| oauth_error("invalid_request", "redirect_uri missing"))?;
    if redirect_uri != record.redirect_uri {
        return Err(invalid_grant(
            "redirect_uri differs from the authorization request",
        ));
    }
    match (&record.challenge, params.get("code_verifier")) {
        (Some(challenge), Some(verifier)) => {
            if !is_pkce_string(verifier) || pkce_s256(verifier) != *challenge {
                return Err(invalid_grant("PKCE verification failed"));
            }
        }
        (Some(_), None) => return Err(invalid_grant("code_verifier missing")),
        // Security BCP §4.8.2: a verifier without a challenge is a downgrade.
        (None, Some(_)) => {
            return Err(invalid_grant("code_verifier sent but no code_challenge"));
        }
        (None, None) if state.config.require_pkce => {
            return Err(invalid_grant("PKCE required"));
        }
        (None, None) => {}
    }

    let grant_id = random_token();
    record.grant_id = Some(grant_id.clone());
    let scope = record.scope.clone();
    let account = record.account.clone();
    let issued = state.grants.len();
    state.grants.insert(
        grant_id.clone(),
        Grant {
            client_id: client_id.to_owned(),
            revoked: false,
            account,
            issued,
        },
    );
    let refresh_scope = state.config.issue_refresh_token.then_some(scope.as_str());
    Ok(state.issue_tokens(&grant_id, &scope, refresh_scope))
}

fn refresh(state: &mut ServerState, client_id: &str, params: &Params) -> Result<Response, Refusal> {
    let presented = params
        .get("refresh_token")
        .ok_or_else(|| oauth_error("invalid_request", "refresh_token missing"))?;
    let Some(record) = state.refresh_tokens.get(presented) else {
        return Err(invalid_grant("unknown refresh token"));
    };
    let grant_id = record.grant_id.clone();
    let granted_scope = record.scope.clone();
    let rotated = record.rotated;
    if state
        .grants
        .get(&grant_id)
        .is_none_or(|grant| grant.client_id != client_id)
    {
        return Err(invalid_grant("refresh token issued to another client"));
    }
    if state.grant_revoked(&grant_id) {
        return Err(invalid_grant("refresh token revoked"));
    }
    if rotated {
        // Security BCP §4.14.2: reuse of a rotated token means it leaked;
        // revoke the whole family.
        state.revoke_grant(&grant_id);
        return Err(invalid_grant("refresh token reused; grant revoked"));
    }
    // RFC 6749 §6: a narrower scope may be asked for, never a wider one.
    let scope = match params.get("scope") {
        None => granted_scope.clone(),
        Some(requested) => {
            let granted: Vec<&str> = granted_scope.split(' ').collect();
            if requested.split(' ').any(|s| !granted.contains(&s)) {
                return Err(oauth_error(
                    "invalid_scope",
                    "scope exceeds the original grant",
                ));
            }
            requested.to_owned()
        }
    };
    let rotate = state.config.rotate_refresh_tokens;
    if rotate && let Some(record) = state.refresh_tokens.get_mut(presented) {
        record.rotated = true;
    }
    // The new refresh token keeps the whole grant's scope.
    let refresh_scope = rotate.then_some(granted_scope.as_str());
    Ok(state.issue_tokens(&grant_id, &scope, refresh_scope))
}

// ------------------------------------------------------------------- /revoke

async fn revoke(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let mut state = lock(&shared);
    handle_revoke(&mut state, &headers, &body).unwrap_or_else(IntoResponse::into_response)
}

fn handle_revoke(
    state: &mut ServerState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, Refusal> {
    let params = parse_form_body(headers, body)?;
    let client_id = authenticate_client(&state.config, headers, &params)?;
    let token = params
        .get("token")
        .ok_or_else(|| oauth_error("invalid_request", "token missing"))?;
    // token_type_hint is only a hint (RFC 7009 §2.1): look in both places.
    let refresh_grant = state.refresh_tokens.get(token).map(|r| r.grant_id.clone());
    let access_grant = state.access_tokens.get(token).map(|a| a.grant_id.clone());
    if let Some(grant_id) = refresh_grant.as_ref().or(access_grant.as_ref())
        && state
            .grants
            .get(grant_id)
            .is_none_or(|grant| grant.client_id != client_id)
    {
        return Err(oauth_error(
            "unauthorized_client",
            "token issued to another client",
        ));
    }
    if let Some(grant_id) = refresh_grant {
        // Revoking a refresh token revokes the access tokens of its grant.
        state.revoke_grant(&grant_id);
    } else if let Some(access) = state.access_tokens.get_mut(token) {
        access.revoked = true;
    }
    // Unknown tokens are not an error (RFC 7009 §2.2).
    state.counters.revocations += 1;
    let mut response = StatusCode::OK.into_response();
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

// ------------------------------------------------------------------- /api/me

async fn api_me(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    answer_api(&shared, &headers, None).await
}

async fn provider_api(
    State(shared): State<Shared>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = ApiRequest {
        method: method.to_string(),
        path: uri
            .path()
            .strip_prefix("/provider")
            .unwrap_or(uri.path())
            .to_owned(),
        query: form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect(),
        headers: headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    answer_api(&shared, &headers, Some(request)).await
}

/// `/api/me` (no `request`) or the provider API: the rate limit, the token check, the
/// scripted answers, then the handler's (or `/api/me`'s own) answer.
async fn answer_api(shared: &Shared, headers: &HeaderMap, request: Option<ApiRequest>) -> Response {
    let scripted = match api_me_now(shared, headers, request) {
        Ok(response) => return response,
        Err(scripted) => scripted,
    };
    tokio::time::sleep(scripted.delay).await;
    let mut response = (
        StatusCode::from_u16(scripted.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        scripted.body,
    )
        .into_response();
    for (name, value) in scripted.headers {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// The answer when it needs no waiting; `Err` with the scripted answer otherwise.
fn api_me_now(
    shared: &Shared,
    headers: &HeaderMap,
    request: Option<ApiRequest>,
) -> Result<Response, ScriptedResponse> {
    let mut state = lock(shared);
    state.counters.api_calls += 1;
    if let Some((rate, tokens, at)) = state.api_limit {
        let now = Instant::now();
        let tokens = (tokens + now.duration_since(at).as_secs_f64() * rate).min(rate);
        let allowed = tokens >= 1.0;
        state.api_limit = Some((rate, if allowed { tokens - 1.0 } else { tokens }, now));
        if !allowed {
            state.counters.api_throttled += 1;
            return Ok(StatusCode::TOO_MANY_REQUESTS.into_response());
        }
    }
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| strip_scheme(value, "Bearer"));
    let live_grant = token.and_then(|token| {
        let access = state.access_tokens.get(token)?;
        let live = !access.revoked
            && Instant::now() < access.dies_at
            && !state.grant_revoked(&access.grant_id);
        live.then(|| access.grant_id.clone())
    });
    match live_grant {
        Some(grant_id) => {
            if let Some(request) = &request {
                state.provider_requests.push(request.clone());
            }
            if let Some(scripted) = state.api_script.pop_front() {
                return Err(scripted);
            }
            match (request, state.provider_api.clone()) {
                (Some(request), Some(handler)) => {
                    drop(state);
                    Err((handler.0)(&request))
                }
                (Some(_), None) => Ok(json_response(
                    StatusCode::NOT_FOUND,
                    &json!({"error": "no provider API served"}),
                )),
                (None, _) => Ok(json_response(
                    StatusCode::OK,
                    &json!({"id": "user-1", "grant": grant_id}),
                )),
            }
        }
        None => {
            state.counters.api_rejections += 1;
            let mut response =
                json_response(StatusCode::UNAUTHORIZED, &json!({"error": "invalid_token"}));
            // RFC 6750 §3.1: no error code when no credentials were sent.
            let challenge = if token.is_some() {
                r#"Bearer error="invalid_token""#
            } else {
                "Bearer"
            };
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
            Ok(response)
        }
    }
}

// ------------------------------------------------------------------- helpers

/// Request parameters with empty values dropped (RFC 6749 §3.1: "sent
/// without a value MUST be treated as if omitted") and repeats noted (they
/// "MUST NOT be included more than once").
#[derive(Debug)]
struct Params {
    values: HashMap<String, String>,
    duplicated: Option<String>,
}

impl Params {
    fn parse(input: &[u8]) -> Params {
        let mut values = HashMap::new();
        let mut duplicated = None;
        for (name, value) in form_urlencoded::parse(input) {
            if value.is_empty() {
                continue;
            }
            if values
                .insert(name.clone().into_owned(), value.into_owned())
                .is_some()
            {
                duplicated.get_or_insert_with(|| name.into_owned());
            }
        }
        Params { values, duplicated }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
}

/// Parses a token or revocation request body, which must be
/// `application/x-www-form-urlencoded` (RFC 6749 §4.1.3, RFC 7009 §2.1).
fn parse_form_body(headers: &HeaderMap, body: &[u8]) -> Result<Params, Refusal> {
    let is_form = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            mime.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(oauth_error(
            "invalid_request",
            "body must be application/x-www-form-urlencoded",
        ));
    }
    let params = Params::parse(body);
    if let Some(name) = &params.duplicated {
        return Err(oauth_error("invalid_request", &format!("{name} repeated")));
    }
    Ok(params)
}

/// Authenticates the client per the configured method and returns its id.
fn authenticate_client(
    config: &AuthServerConfig,
    headers: &HeaderMap,
    params: &Params,
) -> Result<String, Refusal> {
    let header = headers
        .get(AUTHORIZATION)
        .map(|value| value.to_str().unwrap_or(""));
    let body_secret = params.get("client_secret");
    let (id, secret) = match (header, body_secret) {
        (Some(_), Some(_)) => {
            // RFC 6749 §2.3: one authentication method per request.
            return Err(oauth_error(
                "invalid_request",
                "client authenticated by both HTTP Basic and the request body",
            ));
        }
        (Some(header), None) => {
            if config.client_auth == ClientAuth::Post {
                return Err(invalid_client());
            }
            let (id, secret) = decode_basic(header).ok_or_else(invalid_client)?;
            if params.get("client_id").is_some_and(|body_id| body_id != id) {
                return Err(invalid_client());
            }
            (id, secret)
        }
        (None, Some(secret)) => {
            if config.client_auth == ClientAuth::Basic {
                return Err(invalid_client());
            }
            let id = params.get("client_id").ok_or_else(invalid_client)?;
            (id.to_owned(), secret.to_owned())
        }
        (None, None) => return Err(invalid_client()),
    };
    if id == config.client_id && secret == config.client_secret {
        Ok(id)
    } else {
        Err(invalid_client())
    }
}

/// Decodes `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1).
fn decode_basic(header: &str) -> Option<(String, String)> {
    let encoded = strip_scheme(header, "Basic")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id)?, form_decode(secret)?))
}

/// Decodes one application/x-www-form-urlencoded component.
fn form_decode(component: &str) -> Option<String> {
    // A raw `&` or `=` cannot appear in an encoded component.
    if component.contains(['&', '=']) {
        return None;
    }
    let probe = format!("x={component}");
    let (_, value) = form_urlencoded::parse(probe.as_bytes()).next()?;
    Some(value.into_owned())
}

/// The credentials after a case-insensitive auth scheme, if it matches.
fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (found, rest) = value.split_once(' ')?;
    found
        .eq_ignore_ascii_case(scheme)
        .then(|| rest.trim_start())
        .filter(|rest| !rest.is_empty())
}

/// 43–128 characters of `[A-Za-z0-9-._~]` (RFC 7636 §4.1, §4.2).
fn is_pkce_string(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// `BASE64URL-NOPAD(SHA256(verifier))` (RFC 7636 §4.2).
fn pkce_s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The prefix of every access and refresh token the fake issues, so a test can scan
/// logs for tokens without knowing their values.
pub const TOKEN_MARKER: &str = "fkt_";

/// 32 random bytes, base64url without padding: opaque and URL-safe.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn redirect(redirect_uri: &str, params: &[(&str, Option<&str>)]) -> Response {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        if let Some(value) = value {
            query.append_pair(name, value);
        }
    }
    let separator = if redirect_uri.contains('?') { '&' } else { '?' };
    let location = format!("{redirect_uri}{separator}{}", query.finish());
    match HeaderValue::try_from(location) {
        Ok(location) => (StatusCode::FOUND, [(LOCATION, location)]).into_response(),
        Err(_) => html_page(
            StatusCode::BAD_REQUEST,
            "redirect_uri is not a valid header",
        ),
    }
}

fn html_page(status: StatusCode, message: &str) -> Response {
    let escaped = message
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let body = format!(
        "<!DOCTYPE html><html><head><title>Error</title></head><body><h1>{escaped}</h1></body></html>"
    );
    (
        status,
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// A JSON response that must not be cached (RFC 6749 §5.1).
fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (PRAGMA, HeaderValue::from_static("no-cache")),
        ],
        body.to_string(),
    )
        .into_response()
}

/// Why a token or revocation request is refused (RFC 6749 §5.2).
#[derive(Debug)]
enum Refusal {
    /// 400 with `error` and `error_description`.
    BadRequest {
        error: &'static str,
        description: String,
    },
    /// 401 `invalid_client` with `WWW-Authenticate: Basic`.
    InvalidClient,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::BadRequest { error, description } => json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": error, "error_description": description}),
            ),
            Refusal::InvalidClient => {
                let mut response = json_response(
                    StatusCode::UNAUTHORIZED,
                    &json!({
                        "error": "invalid_client",
                        "error_description": "client authentication failed",
                    }),
                );
                response.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Basic realm="fake-provider""#),
                );
                response
            }
        }
    }
}

fn oauth_error(error: &'static str, description: &str) -> Refusal {
    Refusal::BadRequest {
        error,
        description: description.to_owned(),
    }
}

fn invalid_grant(description: &str) -> Refusal {
    oauth_error("invalid_grant", description)
}

fn invalid_client() -> Refusal {
    Refusal::InvalidClient
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        assert_eq!(
            pkce_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let header = format!("Basic {}", STANDARD.encode("my+client%3A1:s%26cret"));
        assert_eq!(
            decode_basic(&header),
            Some(("my client:1".to_owned(), "s&cret".to_owned()))
        );
        assert_eq!(decode_basic("Bearer abc"), None);
    }

    /// Runs `/authorize` and `/token` (code exchange, then a rotating refresh) on the
    /// handlers; returns the state, the code, the verifier and both token responses.
    async fn code_flow(shared: &Shared) -> (String, String, String, Value, Value) {
        let redirect_uri = "http://127.0.0.1:9/callback";
        lock(shared).config.redirect_uris = vec![redirect_uri.to_owned()];
        let (state, verifier) = (random_token(), random_token());
        let query = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("response_type", "code"),
                ("client_id", "junction-test-client"),
                ("redirect_uri", redirect_uri),
                ("state", state.as_str()),
                ("code_challenge", pkce_s256(&verifier).as_str()),
                ("code_challenge_method", "S256"),
            ])
            .finish();
        let redirect = authorize(State(shared.clone()), RawQuery(Some(query))).await;
        let location = redirect.headers()[LOCATION]
            .to_str()
            .expect("ASCII")
            .to_owned();
        let (_, callback_query) = location.split_once('?').expect("a query");
        let code = form_urlencoded::parse(callback_query.as_bytes())
            .find(|(name, _)| name == "code")
            .map(|(_, value)| value.into_owned())
            .expect("a code");
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let call = |form: &[(&str, &str)]| {
            let mut body = form_urlencoded::Serializer::new(String::new());
            body.extend_pairs(form).extend_pairs([
                ("client_id", "junction-test-client"),
                ("client_secret", "junction-test-secret"),
            ]);
            let response = handle_token(&mut lock(shared), &headers, body.finish().as_bytes())
                .unwrap_or_else(|_| panic!("the token call {form:?} is refused"));
            async move {
                let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .expect("a body");
                serde_json::from_slice::<Value>(&bytes).expect("JSON")
            }
        };
        let exchanged = call(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", &verifier),
        ])
        .await;
        let refresh_token = exchanged["refresh_token"]
            .as_str()
            .expect("a refresh token");
        let refreshed = call(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await;
        (state, code, verifier, exchanged, refreshed)
    }

    #[tokio::test]
    async fn every_issued_or_received_secret_is_listed_and_in_the_ledger() {
        let shared: Shared = Arc::new(Mutex::new(ServerState::new(AuthServerConfig::default())));
        let (state, code, verifier, exchanged, refreshed) = code_flow(&shared).await;
        let issued = lock(&shared).issued.clone();
        let values: Vec<&str> = issued.iter().map(|s| s.value.as_str()).collect();
        let text =
            |document: &Value, field: &str| document[field].as_str().expect(field).to_owned();
        for (what, value) in [
            ("client secret", "junction-test-secret".to_owned()),
            ("state", state),
            ("code", code),
            ("verifier", verifier),
            ("first access token", text(&exchanged, "access_token")),
            ("first refresh token", text(&exchanged, "refresh_token")),
            ("second access token", text(&refreshed, "access_token")),
            ("rotated refresh token", text(&refreshed, "refresh_token")),
        ] {
            assert!(values.contains(&value.as_str()), "the {what} is listed");
        }
        let ledger = crate::issued_secrets();
        assert!(issued.iter().all(|secret| ledger.contains(secret)));
    }

    #[test]
    fn random_tokens_carry_32_bytes() {
        let token = random_token();
        assert_eq!(token.len(), 43);
        assert!(is_pkce_string(&token));
        assert_ne!(token, random_token());
    }
}
