//! `POST /v1/tenants/{tenant}/connections/{id}/proxy`: the product's request to a
//! provider's API through a connection, with Junction adding the authorization. It goes
//! through the outbound client like every provider call (breaker, token bucket, one
//! refresh on a 401, error-body rules, Retry-After), and the asynchronous actions run
//! the same way ([`Proxy::run`]).
//!
//! What the caller controls is checked before anything is sent:
//!
//! - the path is relative to the catalog's `[api] base_url`: no absolute URL, no other
//!   host (`//host`, `@`, `\`), no `.` or `..` segment, also percent-encoded (once or
//!   more: the URL standard resolves `%2e%2e` as `..`), no control character;
//! - request headers come from an allow-list ([`REQUEST_HEADERS`]): `Authorization`,
//!   `Cookie`, `Host` and the like are refused, never forwarded; a value with CR, LF or
//!   another control character is refused (no header smuggling);
//! - only the provider's allow-listed response headers ([`passes_response_header`]) come
//!   back, with the status and the body, whose size is capped ([`PROXY_RESPONSE_CAP`]).
//!
//! Retries: a `GET`, `HEAD` or `OPTIONS` is retried like any call; a write only when
//! the provider takes the caller's idempotency key itself (the catalog's `[api]
//! idempotency_header`, passed on). For other providers a write with an
//! `idempotency_key` is recorded in Junction's [`ProxyIdempotencyStore`]: a repeat within
//! 24 hours is answered from the record, the same key with another request is refused
//! (422), a repeat while the first still runs is told so (409).
//!
//! Pages: a `GET` with `"paginate": {"max_pages": N}` (1 to [`MAX_PAGINATE_PAGES`])
//! follows the catalog's `[pagination]` scheme through [`crate::pagination::Listing`]
//! (a next link on another host refused, a repeated cursor stopped) and answers one
//! JSON document with the pages' items concatenated ([`paginated_route`]).

use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::idempotency::{
    Begin, KEPT_BODY_CAP, KeptAnswer, ProxyIdempotencyStore, record_key, request_hash, valid_key,
};
use super::pagination::{self, Listing, Step};
use super::{Call, CallError, CallFailure, OutboundClient, RequeueReason, RetryPolicy};
use junction_aws::clock::Clock;
use junction_catalog::{ApiSpec, FailureClass, PaginationSpec};
use junction_oauth::web::{self, HttpReply};
use junction_oauth::{Connection, TokenVault};

/// The largest provider body the proxy hands back. Lambda answers API Gateway with at
/// most 6 MB (6,291,456 bytes), and the proxy sends every provider body base64-encoded
/// (`isBase64Encoded`: bytes pass unchanged, and the size is known: 4/3 of the body,
/// where JSON-escaping a text body could double it). 4 MiB is 5,592,408 bytes in
/// base64, which leaves about 700 KB for the status, the headers and the envelope.
pub const PROXY_RESPONSE_CAP: usize = 4 * 1024 * 1024;

/// The largest proxy request (the JSON the caller sends): Lambda takes at most 6 MB per
/// invocation, API Gateway's event around it included.
pub const MAX_PROXY_REQUEST_BYTES: usize = 5 * 1024 * 1024;

/// The longest path accepted.
const MAX_PATH_LEN: usize = 2048;

/// The request headers a caller may set (lowercase): content negotiation, conditional
/// requests, and the API-version headers of the catalog's providers. Everything else
/// is refused with its name; Junction sets `Authorization` itself.
pub const REQUEST_HEADERS: &[&str] = &[
    "accept",
    "accept-language",
    "content-language",
    "content-type",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-unmodified-since",
    "prefer",
    "range",
    // Provider API versions.
    "asana-disable",
    "asana-enable",
    "notion-version",
    "stripe-version",
    "x-github-api-version",
];

/// The response headers passed back (lowercase): the body's type, caching validators,
/// pagination, where a created resource is, and rate-limit state.
pub fn passes_response_header(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "content-type",
        "content-language",
        "etag",
        "last-modified",
        "link",
        "location",
        "retry-after",
        "request-id",
        "x-request-id",
        "idempotent-replayed",
    ];
    const PREFIXES: &[&str] = &["x-ratelimit-", "ratelimit", "x-rate-limit-"];
    EXACT.contains(&name) || PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// The header on every proxy answer that says who answered: `provider` (the provider's
/// status, headers and body, or their replay) or `junction` (Junction's own JSON error).
pub const SOURCE_HEADER: &str = "junction-source";
/// On an answer served from Junction's idempotency record: `true`.
pub const REPLAY_HEADER: &str = "junction-idempotent-replay";
/// On a replay whose body was too large to keep: `omitted`.
pub const REPLAY_BODY_HEADER: &str = "junction-replay-body";
/// [`SOURCE_HEADER`]'s value on a `paginate` answer: Junction's JSON envelope around
/// the provider's pages.
pub const SOURCE_PAGES: &str = "pages";

/// The most pages one `paginate` request follows: each page is a provider call inside
/// one Lambda invocation, and all of them share [`PROXY_RESPONSE_CAP`].
pub const MAX_PAGINATE_PAGES: u32 = 20;

/// A read request's ask to follow the provider's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paginate {
    /// How many pages at most (1 to [`MAX_PAGINATE_PAGES`]).
    pub max_pages: u32,
}

/// A query parameter's value: one, or several (`?id=1&id=2`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum QueryValue {
    One(String),
    Many(Vec<String>),
}

/// What the caller asks to send (the proxy's request body, and an action's request).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyRequest {
    /// `GET`, `HEAD`, `OPTIONS`, `POST`, `PUT`, `PATCH` or `DELETE`.
    pub method: String,
    /// Relative to the API base, starting with `/`.
    pub path: String,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub query: std::collections::BTreeMap<String, QueryValue>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: std::collections::BTreeMap<String, String>,
    /// A string is sent as it is (form-encoded, XML, text); any other JSON value is sent
    /// as JSON (`content-type: application/json` unless the caller set one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Follow the provider's pages (a `GET` only; the proxy route, not actions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paginate: Option<Paginate>,
}

/// Why a proxy request is refused before anything is sent: each names its reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("path: {0}")]
    Path(String),
    #[error("method: {0}")]
    Method(String),
    #[error("header {name}: {reason}")]
    Header { name: String, reason: String },
    #[error("idempotency_key: {0}")]
    IdempotencyKey(String),
    #[error("body: {0}")]
    Body(String),
}

impl Refusal {
    /// The error code of the 400 answer.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Path(_) => "invalid_path",
            Refusal::Method(_) => "invalid_method",
            Refusal::Header { .. } => "header_not_allowed",
            Refusal::IdempotencyKey(_) => "invalid_idempotency_key",
            Refusal::Body(_) => "invalid_body",
        }
    }
}

/// A checked request, ready to send through a connection.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub method: reqwest::Method,
    /// The whole URL: the connection's API base, the path and the encoded query.
    pub url: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<Vec<u8>>,
    pub idempotency_key: Option<String>,
    /// Whether the provider takes the key itself (then it is sent in this header).
    pub native_idempotency: Option<HeaderName>,
    /// What makes two requests the same, for Junction's idempotency record.
    pub hash: String,
}

impl Prepared {
    /// A request the client may send more than once: a safe method, or a write the
    /// provider deduplicates by its idempotency key.
    pub fn retry_safe(&self) -> bool {
        is_safe(&self.method)
            || (self.idempotency_key.is_some() && self.native_idempotency.is_some())
    }

    /// Whether Junction keeps the key itself: a write with a key, for a provider that
    /// takes none.
    pub fn recorded(&self) -> bool {
        !is_safe(&self.method)
            && self.idempotency_key.is_some()
            && self.native_idempotency.is_none()
    }
}

fn is_safe(method: &reqwest::Method) -> bool {
    matches!(
        *method,
        reqwest::Method::GET | reqwest::Method::HEAD | reqwest::Method::OPTIONS
    )
}

/// Checks `path` (see the module's documentation); the reason when refused.
pub fn check_path(path: &str) -> Result<(), String> {
    if path.len() > MAX_PATH_LEN {
        return Err(format!("longer than {MAX_PATH_LEN} characters"));
    }
    if path.contains("://") {
        return Err("an absolute URL; send a path relative to the provider's API base".into());
    }
    if path.starts_with("//") {
        return Err("starts with // (another host); send a path relative to the API base".into());
    }
    if !path.starts_with('/') {
        return Err("must start with / (relative to the provider's API base)".into());
    }
    for c in path.chars() {
        let reason = match c {
            '\\' => "a backslash (another host or path on some servers)",
            '@' => "an @ (user information before a host); percent-encode it as %40",
            '?' => "a ? (send query parameters in `query`)",
            '#' => "a # (fragments are not sent)",
            c if c.is_control() => "a control character",
            c if c.is_whitespace() => "whitespace",
            c if c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:/%".contains(c) => continue,
            _ => "a character that must be percent-encoded",
        };
        return Err(format!("contains {reason}"));
    }
    for segment in path.split('/') {
        // Decoded until it stops changing: `%252e` is `%2e` once decoded, `.` twice.
        let mut decoded = segment.to_owned();
        for _ in 0..4 {
            let bytes = percent_decode(&decoded)
                .ok_or_else(|| "contains a % not followed by two hex digits".to_owned())?;
            let next = String::from_utf8_lossy(&bytes).into_owned();
            if next == decoded {
                break;
            }
            decoded = next;
        }
        if decoded.chars().any(|c| c.is_control() || c == '\\') {
            return Err("contains a percent-encoded control character or backslash".to_owned());
        }
        // `..;x` is `..` to servers that take `;` as a path parameter (Tomcat).
        let dot = |part: &str| {
            let part = part.split(';').next().unwrap_or_default();
            part == "." || part == ".."
        };
        if decoded.split(['/', '\\']).any(dot) {
            let how = if dot(segment) {
                "a . or .. segment"
            } else {
                "a percent-encoded . or .. segment"
            };
            return Err(format!("contains {how} (no way out of the API base)"));
        }
    }
    Ok(())
}

/// `%XX` decoded; `None` for a `%` without two hex digits.
fn percent_decode(text: &str) -> Option<Vec<u8>> {
    // A `%` not followed by two hex digits is refused (the crate would keep it as it is).
    let malformed = text.match_indices('%').any(|(at, _)| {
        !text
            .get(at + 1..at + 3)
            .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    (!malformed).then(|| percent_encoding::percent_decode_str(text).collect())
}

/// Checks `request` against the connection's API base `base` and the provider's
/// `api`; the request to send, or why not. A request with `paginate` is refused here:
/// one request is sent (an action), and only the proxy route follows pages.
pub fn prepare(api: &ApiSpec, base: &str, request: &ProxyRequest) -> Result<Prepared, Refusal> {
    if request.paginate.is_some() {
        return Err(Refusal::Method(
            "paginate is for the proxy's GET; an action sends one request".into(),
        ));
    }
    prepare_one(api, base, request)
}

/// [`prepare`] without the `paginate` refusal: the proxy route checks it first.
fn prepare_one(api: &ApiSpec, base: &str, request: &ProxyRequest) -> Result<Prepared, Refusal> {
    let method = match request.method.to_ascii_uppercase().as_str() {
        "GET" => reqwest::Method::GET,
        "HEAD" => reqwest::Method::HEAD,
        "OPTIONS" => reqwest::Method::OPTIONS,
        "POST" => reqwest::Method::POST,
        "PUT" => reqwest::Method::PUT,
        "PATCH" => reqwest::Method::PATCH,
        "DELETE" => reqwest::Method::DELETE,
        other => {
            return Err(Refusal::Method(format!(
                "{} is not one of GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE",
                other.chars().take(16).collect::<String>()
            )));
        }
    };
    check_path(&request.path).map_err(Refusal::Path)?;
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in &request.query {
        match value {
            QueryValue::One(value) => {
                query.append_pair(name, value);
            }
            QueryValue::Many(values) => {
                for value in values {
                    query.append_pair(name, value);
                }
            }
        }
    }
    let query = query.finish();
    let url = if query.is_empty() {
        format!("{base}{}", request.path)
    } else {
        format!("{base}{}?{query}", request.path)
    };
    // The URL as a client will send it: the same origin as the base, under its path,
    // and nothing normalized away.
    let parsed_base = url::Url::parse(base).map_err(|err| Refusal::Path(err.to_string()))?;
    let parsed = url::Url::parse(&url).map_err(|err| Refusal::Path(err.to_string()))?;
    let base_path = parsed_base.path().trim_end_matches('/');
    if parsed.origin() != parsed_base.origin()
        || parsed.path() != format!("{base_path}{}", request.path)
    {
        return Err(Refusal::Path(
            "would leave the provider's API base once resolved".into(),
        ));
    }

    let native = api
        .idempotency_header
        .as_deref()
        .and_then(|name| HeaderName::try_from(name.to_ascii_lowercase()).ok());
    let mut headers = Vec::new();
    let mut canonical = Vec::new();
    let mut content_type = false;
    for (name, value) in &request.headers {
        let lower = name.to_ascii_lowercase();
        let refuse = |reason: &str| Refusal::Header {
            name: name.chars().take(64).collect(),
            reason: reason.to_owned(),
        };
        if !REQUEST_HEADERS.contains(&lower.as_str()) {
            let reason = match lower.as_str() {
                "authorization" | "proxy-authorization" | "cookie" => {
                    "Junction adds the connection's authorization; the caller's is refused"
                }
                "idempotency-key" => "send the key in `idempotency_key`",
                _ if native.as_ref().is_some_and(|h| h.as_str() == lower) => {
                    "send the key in `idempotency_key`"
                }
                _ => "not on the proxy's allow-list of request headers",
            };
            return Err(refuse(reason));
        }
        if value
            .chars()
            .any(|c| (c.is_control() && c != '\t') || !c.is_ascii())
        {
            return Err(refuse(
                "its value contains CR, LF, another control character or non-ASCII",
            ));
        }
        let header_name =
            HeaderName::try_from(lower.as_str()).map_err(|_| refuse("not a header name"))?;
        let header_value =
            HeaderValue::from_str(value).map_err(|_| refuse("not a header value"))?;
        content_type |= lower == "content-type";
        canonical.push(format!("{lower}:{value}"));
        headers.push((header_name, header_value));
    }

    let body = match &request.body {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(text)) => Some(text.as_bytes().to_vec()),
        Some(value) => {
            if !content_type {
                headers.push((
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ));
            }
            Some(serde_json::to_vec(value).map_err(|err| Refusal::Body(err.to_string()))?)
        }
    };
    if body.is_some() && matches!(method, reqwest::Method::GET | reqwest::Method::HEAD) {
        return Err(Refusal::Body(format!("a {method} request carries no body")));
    }

    if let Some(key) = &request.idempotency_key
        && !valid_key(key)
    {
        return Err(Refusal::IdempotencyKey(
            "1-255 visible ASCII characters".into(),
        ));
    }
    let method_text = method.as_str().to_owned();
    let headers_text = canonical.join("\n");
    let hash = request_hash([
        method_text.as_bytes(),
        request.path.as_bytes(),
        query.as_bytes(),
        headers_text.as_bytes(),
        body.as_deref().unwrap_or_default(),
    ]);
    Ok(Prepared {
        method,
        url,
        headers,
        body,
        idempotency_key: request.idempotency_key.clone(),
        native_idempotency: native,
        hash,
    })
}

/// The provider's answer, as the proxy passes it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyAnswer {
    pub status: u16,
    /// The allow-listed response headers.
    pub headers: Vec<(String, String)>,
    /// `None`: a replay whose body was too large to keep.
    pub body: Option<Vec<u8>>,
    /// What the answer means when it is a failure (a 4xx, an error-body rule's match, a
    /// 5xx or 429 whose retries are spent); `None` for a success. A replay is classified
    /// again from its status.
    pub failure: Option<CallFailure>,
    /// Served from Junction's idempotency record.
    pub replayed: bool,
}

/// What running a proxy request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The provider answered (perhaps earlier, replayed from the record).
    Answered(ProxyAnswer),
    /// The same idempotency key is running now.
    InFlight,
    /// The idempotency key was used for another request.
    KeyMismatch,
    /// The connection needs its user to reconnect (the grant is gone, or the provider
    /// refused the token after one refresh).
    NeedsReauth(String),
    /// The call failed without an answer to pass on (a timeout, a body over the cap).
    Failed(CallFailure),
    /// Nothing was sent, or the provider asked to wait: try again after `after`.
    RetryLater {
        after: Duration,
        reason: RequeueReason,
    },
    /// Junction's own stores are unavailable.
    Unavailable(String),
}

/// The proxy: the outbound client, the vault the connections are read from, and
/// Junction's idempotency record.
#[derive(Debug, Clone, Copy)]
pub struct Proxy<'a> {
    pub client: &'a OutboundClient,
    pub vault: &'a TokenVault,
    pub store: &'a dyn ProxyIdempotencyStore,
    pub clock: &'a dyn Clock,
}

impl Proxy<'_> {
    /// Sends `prepared` through `connection` (whose API base it was prepared on).
    /// `operation` names the call in logs (`proxy`, `action`).
    pub async fn run(
        &self,
        connection: &Connection,
        prepared: &Prepared,
        operation: &str,
        deadline: Instant,
    ) -> Outcome {
        let record = prepared
            .idempotency_key
            .as_deref()
            .filter(|_| prepared.recorded())
            .map(|key| record_key(&connection.id, key));
        if let Some(key) = &record {
            let now = self.clock.now().unix_timestamp();
            match self.store.begin(key, &prepared.hash, now).await {
                Ok(Begin::Started) => {}
                Ok(Begin::Replay(kept)) => return Outcome::Answered(replayed(kept)),
                Ok(Begin::InFlight) => return Outcome::InFlight,
                Ok(Begin::Mismatch) => return Outcome::KeyMismatch,
                Err(err) => return Outcome::Unavailable(junction_telemetry::error_chain(&err)),
            }
        }
        let outcome = self.send(connection, prepared, operation, deadline).await;
        if let Some(key) = &record {
            let kept = match &outcome {
                Outcome::Answered(answer) if is_final(answer.failure.as_ref()) => {
                    Some(KeptAnswer {
                        status: answer.status,
                        headers: answer.headers.clone(),
                        body: answer
                            .body
                            .clone()
                            .filter(|body| body.len() <= KEPT_BODY_CAP),
                    })
                }
                _ => None,
            };
            let stored = match &kept {
                Some(kept) => {
                    let now = self.clock.now().unix_timestamp();
                    self.store.complete(key, &prepared.hash, kept, now).await
                }
                // Not sent, or failed in a way worth trying again: the key is free.
                None => self.store.release(key, &prepared.hash).await,
            };
            if let Err(err) = stored {
                // The provider's answer stands; a repeat may run the request again.
                tracing::error!(provider = %connection.provider, connection = %connection.id, error = %err, outcome = "idempotency_record_failed", "the outcome of a keyed write was not recorded");
            }
        }
        outcome
    }

    async fn send(
        &self,
        connection: &Connection,
        prepared: &Prepared,
        operation: &str,
        deadline: Instant,
    ) -> Outcome {
        let client = if prepared.retry_safe() {
            self.client.clone()
        } else {
            // One attempt: the provider may have acted on a failed write.
            self.client.clone().with_policy(RetryPolicy {
                max_attempts: 1,
                ..self.client.policy()
            })
        };
        let call = Call {
            provider: &connection.provider,
            connection: &connection.id,
            operation,
            deadline,
            accept: &[],
        };
        let sent = client
            .send_answered(call, |http, token| {
                let mut request = http
                    .request(prepared.method.clone(), &prepared.url)
                    .bearer_auth(token.value.expose());
                for (name, value) in &prepared.headers {
                    request = request.header(name, value);
                }
                if let (Some(header), Some(key)) =
                    (&prepared.native_idempotency, &prepared.idempotency_key)
                {
                    request = request.header(header, key.as_str());
                }
                if let Some(body) = &prepared.body {
                    request = request.body(body.clone());
                }
                request
            })
            .await;
        match sent {
            Ok(answered) => Outcome::Answered(ProxyAnswer {
                status: answered.response.status,
                headers: answered
                    .response
                    .headers
                    .iter()
                    .filter(|(name, _)| passes_response_header(name.as_str()))
                    .filter_map(|(name, value)| {
                        Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
                    })
                    .collect(),
                body: Some(answered.response.body),
                failure: answered.failure,
                replayed: false,
            }),
            Err(CallError::NeedsReauth(reason)) => Outcome::NeedsReauth(reason),
            Err(CallError::Failed(failure)) if failure.class == FailureClass::Unauthorized => {
                Outcome::NeedsReauth(format!("refused after a refresh: {}", failure.code))
            }
            Err(CallError::Failed(failure)) => Outcome::Failed(failure),
            Err(CallError::Requeue { after, reason }) => Outcome::RetryLater { after, reason },
            Err(CallError::Unavailable(reason)) => Outcome::Unavailable(reason),
        }
    }
}

/// Whether an answer is the request's outcome for good (kept for replay): a success or
/// a permanent failure. A 5xx or 429 is not: the key is freed for a retry.
fn is_final(failure: Option<&CallFailure>) -> bool {
    failure.is_none_or(|failure| failure.class == FailureClass::Permanent)
}

fn replayed(kept: KeptAnswer) -> ProxyAnswer {
    let failure = super::class_of_status(kept.status).map(|class| CallFailure {
        class,
        code: format!("http_{}", kept.status),
    });
    ProxyAnswer {
        status: kept.status,
        headers: kept.headers,
        body: kept.body,
        failure,
        replayed: true,
    }
}

/// A reply with a binary body: the proxy's answers (the provider's bytes, unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl BinaryReply {
    /// As an `http` response (what `lambda_http` sends, base64-encoded).
    pub fn into_http(self) -> http::Response<Vec<u8>> {
        let mut response = http::Response::new(self.body);
        *response.status_mut() = http::StatusCode::from_u16(self.status)
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        for (name, value) in self.headers {
            if let (Ok(name), Ok(value)) =
                (HeaderName::try_from(name), HeaderValue::try_from(value))
            {
                response.headers_mut().append(name, value);
            }
        }
        response
    }

    /// Junction's own answer (a JSON error), marked as Junction's.
    fn junction(reply: HttpReply) -> Self {
        let mut headers = reply.headers;
        headers.push((SOURCE_HEADER.into(), "junction".into()));
        BinaryReply {
            status: reply.status,
            headers,
            body: reply.body.into_bytes(),
        }
    }
}

fn error(status: u16, code: &str, message: &str) -> BinaryReply {
    BinaryReply::junction(HttpReply::json(
        status,
        json!({ "error": code, "message": message }),
    ))
}

/// A failure code safe to show: short words (`http_503`, `timeout`,
/// `response_too_large: over 4194304 bytes`), else a fixed one, so no provider text is
/// echoed.
fn short(code: &str) -> String {
    let plain = code.len() <= 64
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " _-.:".contains(c));
    if plain {
        code.to_owned()
    } else {
        "provider_error".to_owned()
    }
}

/// The connection's API base and the provider's `[api]`, or Junction's answer why the
/// connection cannot be proxied through.
pub fn api_of<'c>(
    vault: &'c TokenVault,
    connection: &Connection,
) -> Result<(&'c ApiSpec, String), (u16, &'static str, String)> {
    let provider = connection.provider.as_str();
    let api = vault
        .catalog()
        .get(provider)
        .and_then(|p| p.api.as_ref())
        .filter(|api| api.base_url.is_some())
        .ok_or_else(|| {
            (
                422,
                "not_proxyable",
                format!("the catalog declares no [api] base_url for {provider}"),
            )
        })?;
    let base = super::connection_test::base_url(vault.catalog(), provider, connection)
        .map_err(|reason| (502, "provider_error", reason))?;
    Ok((api, base))
}

/// The answer to the caller for `outcome`.
pub fn reply_for(outcome: Outcome) -> BinaryReply {
    match outcome {
        Outcome::Answered(answer) => {
            let mut headers = answer.headers;
            headers.push((SOURCE_HEADER.into(), "provider".into()));
            if answer.replayed {
                headers.push((REPLAY_HEADER.into(), "true".into()));
                if answer.body.is_none() {
                    headers.push((REPLAY_BODY_HEADER.into(), "omitted".into()));
                }
            }
            BinaryReply {
                status: answer.status,
                headers,
                body: answer.body.unwrap_or_default(),
            }
        }
        Outcome::InFlight => {
            let mut reply = error(
                409,
                "idempotency_key_in_use",
                "a request with this idempotency_key is still running; repeat it once that one answered",
            );
            reply.headers.push(("retry-after".into(), "1".into()));
            reply
        }
        Outcome::KeyMismatch => error(
            422,
            "idempotency_key_reused",
            "this idempotency_key was used for another request in the last 24 hours",
        ),
        Outcome::NeedsReauth(reason) => error(409, "needs_reauth", &short(&reason)),
        Outcome::Failed(failure) => error(502, "provider_error", &short(&failure.code)),
        Outcome::RetryLater { after, reason } => {
            let mut reply = error(502, "provider_unavailable", &short(&reason.to_string()));
            reply
                .headers
                .push(("retry-after".into(), after.as_secs().max(1).to_string()));
            reply
        }
        Outcome::Unavailable(reason) => {
            tracing::error!(error = %reason, outcome = "management_unavailable", "proxy request failed");
            error(503, "unavailable", "temporarily unavailable; try again")
        }
    }
}

/// Parses and checks a proxy request body for `connection`: what to send, or the 400.
pub fn parse_request(body: &[u8]) -> Result<ProxyRequest, BinaryReply> {
    if body.len() > MAX_PROXY_REQUEST_BYTES {
        return Err(error(413, "too_large", "the request body is over 5 MiB"));
    }
    serde_json::from_slice(body).map_err(|err| {
        error(
            400,
            "bad_request",
            &format!("the body must be a JSON proxy request: {err}"),
        )
    })
}

/// `POST /v1/tenants/{tenant}/connections/{id}/proxy`: 400 for a request refused before
/// sending (the reason named), 404 for another tenant's connection as for a missing one,
/// 422 for a provider without an API base; else the provider's status, allow-listed
/// headers and body (`junction-source: provider`), or Junction's JSON error
/// (`junction-source: junction`): 409 `needs_reauth` or `idempotency_key_in_use`, 422
/// `idempotency_key_reused`, 502 `provider_error` (a timeout, a body over
/// [`PROXY_RESPONSE_CAP`]) or `provider_unavailable` with `Retry-After`, 503.
pub async fn proxy_route(
    proxy: Proxy<'_>,
    tenant: &str,
    method: &str,
    id: &str,
    body: &[u8],
    deadline: Instant,
) -> BinaryReply {
    if method != "POST" {
        return error(405, "method_not_allowed", "POST");
    }
    let request = match parse_request(body) {
        Ok(request) => request,
        Err(reply) => return reply,
    };
    let connection = match web::tenant_connection_or_reply(proxy.vault, tenant, id).await {
        Ok(connection) => connection,
        Err(reply) => return BinaryReply::junction(reply),
    };
    let (api, base) = match api_of(proxy.vault, &connection) {
        Ok(found) => found,
        Err((status, code, reason)) => return error(status, code, &reason),
    };
    let scheme = match request.paginate {
        None => None,
        Some(paginate) => match paginable(proxy.vault, &connection.provider, &request, paginate) {
            Ok(scheme) => Some((scheme, paginate)),
            Err(reply) => return reply,
        },
    };
    let prepared = match prepare_one(api, &base, &request) {
        Ok(prepared) => prepared,
        Err(refusal) => {
            tracing::info!(provider = %connection.provider, connection = %connection.id, error = %refusal, outcome = "proxy_refused", "proxy request refused");
            return error(400, refusal.code(), &refusal.to_string());
        }
    };
    if let Some((scheme, paginate)) = scheme {
        return paginated_route(
            proxy,
            &connection,
            scheme,
            &base,
            &prepared,
            paginate,
            deadline,
        )
        .await;
    }
    let outcome = proxy.run(&connection, &prepared, "proxy", deadline).await;
    reply_for(outcome)
}

/// The provider's `[pagination]` when `request` may follow it; else the answer: 422
/// `not_paginable` for a method other than `GET` or a provider without a declared
/// scheme, 400 `invalid_paginate` for a page count out of range.
fn paginable(
    vault: &TokenVault,
    provider: &str,
    request: &ProxyRequest,
    paginate: Paginate,
) -> Result<&'static PaginationSpec, BinaryReply> {
    if !request.method.eq_ignore_ascii_case("GET") {
        return Err(error(
            422,
            "not_paginable",
            "paginate follows the pages of a GET (a read) only",
        ));
    }
    if paginate.max_pages == 0 || paginate.max_pages > MAX_PAGINATE_PAGES {
        return Err(error(
            400,
            "invalid_paginate",
            &format!("paginate.max_pages must be 1 to {MAX_PAGINATE_PAGES}"),
        ));
    }
    vault
        .catalog()
        .get(provider)
        .and_then(|p| p.pagination.as_ref())
        .ok_or_else(|| {
            error(
                422,
                "not_paginable",
                &format!("the catalog declares no [pagination] for {provider}"),
            )
        })
}

/// Follows the pages of `prepared` (a checked `GET`) by `scheme`, at most
/// `paginate.max_pages`, and answers `200` with `{"pages": <count>, "complete":
/// <bool>, "items": [...]}` where the scheme names the items (each page's items in
/// order), else `"bodies": [<each page's JSON body>]`; an incomplete listing (the page
/// limit) adds `"next": {"path", "query"}`, a request that continues it. A page the
/// provider refuses is answered as the plain proxy would (its status and body); a body
/// that is not JSON, a next link off the API base, a repeated cursor or pages over
/// [`PROXY_RESPONSE_CAP`] in all are a 502.
async fn paginated_route(
    proxy: Proxy<'_>,
    connection: &Connection,
    scheme: &PaginationSpec,
    base: &str,
    prepared: &Prepared,
    paginate: Paginate,
    deadline: Instant,
) -> BinaryReply {
    let refuse = |code: &str, message: &str| {
        tracing::warn!(provider = %connection.provider, connection = %connection.id, error = %message, outcome = "proxy_pagination_failed", "proxy pagination stopped");
        error(502, code, message)
    };
    let Ok(mut listing) = Listing::new(scheme, base, paginate.max_pages as usize) else {
        return refuse("provider_error", "the API base does not parse");
    };
    let Ok(first) = url::Url::parse(&prepared.url) else {
        return refuse("provider_error", "the request URL does not parse");
    };
    let mut url = listing.first(first);
    let (mut collected, mut size) = (Vec::new(), 0usize);
    let (complete, next) = loop {
        let page = Prepared {
            url: url.to_string(),
            ..prepared.clone()
        };
        let answer = match proxy.send(connection, &page, "proxy", deadline).await {
            Outcome::Answered(answer) if answer.failure.is_none() => answer,
            other => return reply_for(other),
        };
        let body = answer.body.unwrap_or_default();
        size += body.len();
        if size > PROXY_RESPONSE_CAP {
            return refuse(
                "response_too_large",
                &format!("the pages are over {PROXY_RESPONSE_CAP} bytes in all; ask for fewer"),
            );
        }
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return refuse("provider_error", "a page's body is not JSON");
        };
        let links: Vec<&str> = answer
            .headers
            .iter()
            .filter(|(name, _)| name == "link")
            .map(|(_, value)| value.as_str())
            .collect();
        let link = (!links.is_empty()).then(|| links.join(", "));
        let step = listing.next(&url, link.as_deref(), &value);
        match pagination::items(scheme, &value) {
            Ok(Some(items)) => collected.extend(items.iter().cloned()),
            Ok(None) => collected.push(value),
            Err(err) => return refuse("pagination_error", &err.to_string()),
        }
        match step {
            Ok(Step::Next(next)) => url = next,
            Ok(Step::Done) => break (true, None),
            Ok(Step::Limit(next)) => break (false, Some(next)),
            Err(err) => return refuse("pagination_error", &err.to_string()),
        }
    };
    let list = if scheme.items().is_some() {
        "items"
    } else {
        "bodies"
    };
    let mut document = json!({ "pages": listing.pages(), "complete": complete, list: collected });
    if let Some(next) = next.and_then(|next| continuation(base, &next)) {
        document["next"] = next;
    }
    BinaryReply {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            (SOURCE_HEADER.into(), SOURCE_PAGES.into()),
        ],
        body: document.to_string().into_bytes(),
    }
}

/// A next-page URL as a proxy request's `path` (relative to `base`) and `query`.
fn continuation(base: &str, next: &url::Url) -> Option<serde_json::Value> {
    let base_path = url::Url::parse(base)
        .ok()?
        .path()
        .trim_end_matches('/')
        .to_owned();
    let path = next.path().strip_prefix(&base_path)?;
    let mut query = std::collections::BTreeMap::<String, QueryValue>::new();
    for (name, value) in next.query_pairs() {
        let value = value.into_owned();
        match query.remove(name.as_ref()) {
            None => query.insert(name.into_owned(), QueryValue::One(value)),
            Some(QueryValue::One(first)) => {
                query.insert(name.into_owned(), QueryValue::Many(vec![first, value]))
            }
            Some(QueryValue::Many(mut values)) => {
                values.push(value);
                query.insert(name.into_owned(), QueryValue::Many(values))
            }
        };
    }
    Some(json!({ "path": path, "query": query }))
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
