//! JWT-authenticated deliveries (Gmail's Pub/Sub push, Plaid): the token is verified with
//! keys the provider publishes, fetched over HTTPS with a timeout and cached with an
//! expiry ([`KeySetCache`] over a [`KeySetSource`] port): a public JSON Web Key Set
//! (Google), or one key per `kid` from an endpoint that needs the caller's API
//! credentials (Plaid's `POST /webhook_verification_key/get`, [`KeySetCache::key_by_id`]).
//!
//! [`verify_jwt`] is pure: the header's `alg` must be the catalog's (no `none`, no
//! algorithm confusion), the `kid` must name a published key of the right type, the
//! signature must verify, `exp` must be in the future (`iat` and `nbf` not), and the
//! catalog's claim rules (issuer, configured audience and email, `email_verified`, a body
//! hash) must hold. The JWS itself (header, algorithm pinning, signature) is checked by
//! `jsonwebtoken` on aws-lc-rs; the claim rules are checked here, against an injected
//! `now`, because they are richer than its `Validation` and shared with [`precheck_jwt`].
//!
//! Key sets are read with a timeout and [`KEY_SET_CAP`]: a key endpoint that answers
//! without end is cut off, not buffered.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use async_trait::async_trait;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::{Duration, OffsetDateTime};
use tokio::sync::Mutex;

use super::{SigningSecret, VerifyError};
use junction_aws::response_body::{BodyError, KEY_SET_CAP, read_capped};
use junction_catalog::{JwtAlgorithm, JwtRule};

/// Tokens longer than this are refused before any decoding.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Allowed clock difference for `exp`, `nbf` and `iat`.
const LEEWAY_SECONDS: i64 = 60;

/// One published key (RSA or P-256); other members are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct Jwk {
    pub kid: String,
    pub kty: String,
    #[serde(default)]
    pub alg: Option<String>,
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
}

/// A JSON Web Key Set.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

impl JwkSet {
    fn get(&self, kid: &str) -> Option<&Jwk> {
        self.keys.iter().find(|key| key.kid == kid)
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// The `kid` a token's header names, if it is a well-formed JWT.
pub fn jwt_kid(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let header: Header = serde_json::from_slice(&BASE64URL.decode(header).ok()?).ok()?;
    header.kid
}

/// A well-formed token of at most [`MAX_TOKEN_BYTES`] whose header names the rule's
/// algorithm: its header and its base64url claims part.
fn split_token<'t>(rule: &JwtRule, token: &'t str) -> Result<(Header, &'t str), VerifyError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(VerifyError::MalformedSignature);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(claims_b64), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::MalformedSignature);
    };
    let header = BASE64URL
        .decode(header_b64)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Header>(&bytes).ok())
        .ok_or(VerifyError::MalformedSignature)?;
    if header.alg != rule.algorithm.name() {
        return Err(VerifyError::MalformedSignature);
    }
    Ok((header, claims_b64))
}

/// The unverified claims of a well-formed token whose header names the rule's algorithm.
fn unverified_claims(
    rule: &JwtRule,
    token: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, VerifyError> {
    let (_, claims_b64) = split_token(rule, token)?;
    BASE64URL
        .decode(claims_b64)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(VerifyError::MalformedSignature)
}

/// The checks of [`verify_jwt`] that need no key (algorithm, times, body hash), run on
/// the *unverified* claims: before a credentialed key fetch, a token that could not
/// verify anyway is refused without calling the provider. Never a substitute for
/// [`verify_jwt`].
pub fn precheck_jwt(
    rule: &JwtRule,
    token: &str,
    body: &[u8],
    now: OffsetDateTime,
) -> Result<(), VerifyError> {
    let claims = unverified_claims(rule, token)?;
    check_times(rule, &claims, now)?;
    check_body_hash(rule, &claims, body)
}

/// Verifies `token` (without any `Bearer ` prefix) against `keys` and `rule`.
/// `configured` holds the values of the rule's `configured_claims`.
pub fn verify_jwt(
    rule: &JwtRule,
    token: &str,
    body: &[u8],
    keys: &JwkSet,
    configured: &BTreeMap<String, String>,
    now: OffsetDateTime,
) -> Result<(), VerifyError> {
    let (header, _) = split_token(rule, token)?;
    let kid = header.kid.ok_or(VerifyError::MalformedSignature)?;
    let key = keys.get(&kid).ok_or(VerifyError::SignatureMismatch)?;
    let key = decoding_key(rule.algorithm, key).ok_or(VerifyError::SignatureMismatch)?;

    // The JWS: `jsonwebtoken` pins the algorithm again (header, key family), refuses
    // unknown `crit` extensions and verifies the signature before it reads the claims.
    // Its own claim checks are off: they read the system clock, and ours follow.
    install_jws_provider();
    let claims: serde_json::Map<String, serde_json::Value> =
        match jsonwebtoken::decode(token, &key, &jws_validation(rule.algorithm)) {
            Ok(data) => data.claims,
            Err(err)
                if matches!(
                    err.kind(),
                    jsonwebtoken::errors::ErrorKind::InvalidSignature
                ) =>
            {
                return Err(VerifyError::SignatureMismatch);
            }
            Err(_) => return Err(VerifyError::MalformedSignature),
        };

    // Signed: the claims may be read.
    check_times(rule, &claims, now)?;
    let text = |name: &str| claims.get(name).and_then(serde_json::Value::as_str);
    if !rule.issuers.is_empty()
        && !text("iss").is_some_and(|iss| rule.issuers.iter().any(|allowed| allowed == iss))
    {
        return Err(VerifyError::ClaimMismatch);
    }
    for name in &rule.configured_claims {
        let expected = configured.get(name).ok_or(VerifyError::NoUsableSecret)?;
        let matches = |value: &serde_json::Value| {
            value
                .as_str()
                .is_some_and(|value| bool::from(value.as_bytes().ct_eq(expected.as_bytes())))
        };
        let ok = match claims.get(name) {
            Some(serde_json::Value::Array(values)) => values.iter().any(matches),
            Some(value) => matches(value),
            None => false,
        };
        if !ok {
            return Err(VerifyError::ClaimMismatch);
        }
    }
    for name in &rule.true_claims {
        if claims.get(name) != Some(&serde_json::Value::Bool(true)) {
            return Err(VerifyError::ClaimMismatch);
        }
    }
    check_body_hash(rule, &claims, body)
}

/// `exp` (required unless the rule bounds the age by `iat`), `iat` and `nbf` not in the
/// future, and `iat` within the rule's `max_age_seconds`.
fn check_times(
    rule: &JwtRule,
    claims: &serde_json::Map<String, serde_json::Value>,
    now: OffsetDateTime,
) -> Result<(), VerifyError> {
    let now_s = now.unix_timestamp();
    let seconds = |name: &str| claims.get(name).and_then(serde_json::Value::as_i64);
    match (seconds("exp"), rule.max_age_seconds) {
        (Some(exp), _) if exp + LEEWAY_SECONDS < now_s => {
            return Err(VerifyError::StaleTimestamp);
        }
        (None, None) => return Err(VerifyError::MissingTimestamp),
        _ => {}
    }
    for name in ["iat", "nbf"] {
        if let Some(at) = seconds(name)
            && at - LEEWAY_SECONDS > now_s
        {
            return Err(VerifyError::FutureTimestamp);
        }
    }
    if let Some(max_age) = rule.max_age_seconds {
        let iat = seconds("iat").ok_or(VerifyError::MissingTimestamp)?;
        if now_s - iat > i64::try_from(max_age).unwrap_or(i64::MAX) {
            return Err(VerifyError::StaleTimestamp);
        }
    }
    Ok(())
}

/// The rule's body-hash claim must be the hex SHA-256 of the body (constant time).
fn check_body_hash(
    rule: &JwtRule,
    claims: &serde_json::Map<String, serde_json::Value>,
    body: &[u8],
) -> Result<(), VerifyError> {
    let Some(name) = &rule.body_hash_claim else {
        return Ok(());
    };
    let expected = claims
        .get(name)
        .and_then(serde_json::Value::as_str)
        .ok_or(VerifyError::MissingBodyHash)?;
    let actual = hex::encode(Sha256::digest(body));
    if bool::from(
        actual
            .as_bytes()
            .ct_eq(expected.to_ascii_lowercase().as_bytes()),
    ) {
        Ok(())
    } else {
        Err(VerifyError::BodyHashMismatch)
    }
}

/// The JWS algorithm of a catalog rule.
fn jws_algorithm(algorithm: JwtAlgorithm) -> jsonwebtoken::Algorithm {
    match algorithm {
        JwtAlgorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        JwtAlgorithm::ES256 => jsonwebtoken::Algorithm::ES256,
    }
}

/// Installs aws-lc-rs as `jsonwebtoken`'s crypto backend for the process. It picks one
/// from its crate features on its own, but none (and panics) should a build ever enable
/// its `rust_crypto` backend as well; installed explicitly, it stays aws-lc-rs.
fn install_jws_provider() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // Err: a provider is already installed, which is what is needed.
        let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
            &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER,
        );
    });
}

/// What `jsonwebtoken` checks: the one algorithm, and no claim (see [`verify_jwt`]).
fn jws_validation(algorithm: JwtAlgorithm) -> jsonwebtoken::Validation {
    let mut validation = jsonwebtoken::Validation::new(jws_algorithm(algorithm));
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation
}

/// The verification key `key` gives for `algorithm`, if it is a key of that type: an
/// RSA modulus and exponent for RS256 (2048 to 8192 bits, checked by aws-lc-rs), a
/// P-256 point for ES256. A published `alg` other than the rule's disqualifies it.
fn decoding_key(algorithm: JwtAlgorithm, key: &Jwk) -> Option<jsonwebtoken::DecodingKey> {
    if key
        .alg
        .as_deref()
        .is_some_and(|alg| alg != algorithm.name())
    {
        return None;
    }
    match algorithm {
        JwtAlgorithm::RS256 => {
            let (Some(n), Some(e)) = (&key.n, &key.e) else {
                return None;
            };
            if key.kty != "RSA" {
                return None;
            }
            // RFC 7518 §6.3.1.1 wants no leading zero octet, yet notes libraries that
            // add one; aws-lc-rs refuses it, so it is dropped here.
            let number = |value: &str| {
                let bytes = BASE64URL.decode(value).ok()?;
                let start = bytes.iter().position(|b| *b != 0)?;
                Some(bytes[start..].to_vec())
            };
            Some(jsonwebtoken::DecodingKey::from_rsa_raw_components(
                &number(n)?,
                &number(e)?,
            ))
        }
        JwtAlgorithm::ES256 => {
            let (Some(x), Some(y)) = (&key.x, &key.y) else {
                return None;
            };
            let coordinate = |value: &str| BASE64URL.decode(value).ok().filter(|c| c.len() == 32);
            if key.kty != "EC"
                || key.crv.as_deref() != Some("P-256")
                || coordinate(x).is_none()
                || coordinate(y).is_none()
            {
                return None;
            }
            jsonwebtoken::DecodingKey::from_ec_components(x, y).ok()
        }
    }
}

/// A failure to fetch a key set; the ingress answers 503 so the provider retries.
#[derive(Debug, thiserror::Error)]
#[error("could not fetch the key set {url}")]
pub struct KeySetError {
    pub url: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// A fetched key set and how long the provider says it may be cached.
#[derive(Debug, Clone)]
pub struct FetchedKeySet {
    pub keys: JwkSet,
    pub max_age: Option<Duration>,
}

/// The API credentials a credentialed key endpoint needs (Plaid's `client_id` and
/// `secret`), configured as a signing secret written `<client_id>:<secret>`. The secret
/// is never printed.
#[derive(Clone)]
pub struct ApiCredentials {
    client_id: String,
    secret: SigningSecret,
}

impl ApiCredentials {
    pub fn new(client_id: impl Into<String>, secret: SigningSecret) -> Self {
        ApiCredentials {
            client_id: client_id.into(),
            secret,
        }
    }

    /// `<client_id>:<secret>`, both non-empty; `None` for anything else.
    pub fn parse(configured: &SigningSecret) -> Option<Self> {
        let (client_id, secret) = configured.expose().split_once(':')?;
        (!client_id.trim().is_empty() && !secret.trim().is_empty())
            .then(|| ApiCredentials::new(client_id.trim(), SigningSecret::new(secret.trim())))
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The secret, for the request body only.
    pub fn secret(&self) -> &str {
        self.secret.expose()
    }
}

impl std::fmt::Debug for ApiCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiCredentials")
            .field("client_id", &self.client_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// One key from a credentialed key endpoint, and whether the provider says it expired.
#[derive(Debug, Clone)]
pub struct FetchedKey {
    pub key: Jwk,
    /// Plaid's `expired_at` is not null: the key must not verify anything.
    pub expired: bool,
}

/// Fetches a provider's published keys.
#[async_trait]
pub trait KeySetSource: Send + Sync + std::fmt::Debug {
    /// Must time out; never called with anything but the catalog's https URLs.
    async fn fetch(&self, url: &str) -> Result<FetchedKeySet, KeySetError>;

    /// One key by id from an endpoint that needs API credentials (Plaid's `POST
    /// /webhook_verification_key/get` with `{"client_id","secret","key_id"}`). Must time
    /// out and must not follow redirects: the credentials are in the body. Sources that
    /// cannot fetch such keys refuse.
    async fn fetch_key(
        &self,
        url: &str,
        credentials: &ApiCredentials,
        kid: &str,
    ) -> Result<FetchedKey, KeySetError> {
        let _ = (credentials, kid);
        Err(KeySetError {
            url: url.to_owned(),
            source: "this key source fetches public key sets only".into(),
        })
    }
}

/// HTTPS with a short timeout and no redirects: a key set's location is part of what
/// the catalog (or the issuer's checked metadata) vouches for, and a redirect could lead
/// past the endpoint rules ([`junction_catalog::EndpointRules`]) to an internal host, or
/// carry Plaid's credentials elsewhere. The client is built on first use: only the
/// providers that sign with JWTs (Gmail, Plaid) need one, and building it (its trust
/// store from the process's roots) is about a millisecond of the ingress's init.
#[derive(Debug, Clone, Default)]
pub struct HttpKeySetSource {
    client: Arc<std::sync::OnceLock<Option<reqwest::Client>>>,
}

impl HttpKeySetSource {
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
    const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

    /// A client with a 3 s timeout (2 s to connect), built when first needed.
    pub fn new() -> Self {
        HttpKeySetSource::default()
    }

    fn client(&self) -> Option<&reqwest::Client> {
        self.client
            .get_or_init(|| {
                junction_aws::tls::http_client_builder()
                    .timeout(Self::TIMEOUT)
                    .connect_timeout(Self::CONNECT_TIMEOUT)
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .ok()
            })
            .as_ref()
    }
}

/// Plaid's `{"key": {…JWK…, "created_at", "expired_at"}, "request_id"}`.
fn parse_verification_key(bytes: &[u8]) -> Result<FetchedKey, serde_json::Error> {
    #[derive(Deserialize)]
    struct Answer {
        key: serde_json::Value,
    }
    let answer: Answer = serde_json::from_slice(bytes)?;
    let expired = answer
        .key
        .get("expired_at")
        .is_some_and(|value| !value.is_null());
    Ok(FetchedKey {
        key: serde_json::from_value(answer.key)?,
        expired,
    })
}

#[async_trait]
impl KeySetSource for HttpKeySetSource {
    async fn fetch(&self, url: &str) -> Result<FetchedKeySet, KeySetError> {
        let failed = |source: Box<dyn std::error::Error + Send + Sync>| KeySetError {
            url: url.to_owned(),
            source,
        };
        let client = self
            .client()
            .ok_or_else(|| failed("no HTTP client for key sets".into()))?;
        let response = client
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|err| failed(Box::new(err)))?;
        let max_age = response
            .headers()
            .get(http::header::CACHE_CONTROL)
            .and_then(|value| value.to_str().ok())
            .and_then(cache_max_age);
        let bytes = read_capped(response, KEY_SET_CAP)
            .await
            .map_err(|err| failed(Box::new(err)))?;
        let keys = serde_json::from_slice(&bytes).map_err(|err| failed(Box::new(err)))?;
        Ok(FetchedKeySet { keys, max_age })
    }

    async fn fetch_key(
        &self,
        url: &str,
        credentials: &ApiCredentials,
        kid: &str,
    ) -> Result<FetchedKey, KeySetError> {
        let failed = |source: Box<dyn std::error::Error + Send + Sync>| KeySetError {
            url: url.to_owned(),
            source,
        };
        let client = self
            .client()
            .ok_or_else(|| failed("no HTTP client for credentialed key requests".into()))?;
        let body = serde_json::json!({
            "client_id": credentials.client_id(),
            "secret": credentials.secret(),
            "key_id": kid,
        })
        .to_string();
        let response = client
            .post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|err| failed(Box::new(err.without_url())))?;
        let bytes = read_capped(response, KEY_SET_CAP)
            .await
            .map_err(|err| match err {
                BodyError::Interrupted(err) => {
                    failed(Box::new(BodyError::Interrupted(err.without_url())))
                }
                too_large => failed(Box::new(too_large)),
            })?;
        parse_verification_key(&bytes).map_err(|err| failed(Box::new(err)))
    }
}

/// `max-age=N` of a Cache-Control value.
fn cache_max_age(value: &str) -> Option<Duration> {
    value.split(',').find_map(|directive| {
        let seconds = directive
            .trim()
            .strip_prefix("max-age=")?
            .parse::<i64>()
            .ok()?;
        Some(Duration::seconds(seconds))
    })
}

/// Key sets in memory, counting fetches (tests assert the cache with it).
#[derive(Debug, Default)]
pub struct InMemoryKeySetSource {
    sets: std::sync::Mutex<HashMap<String, JwkSet>>,
    /// Keys by (url, client id, kid), for credentialed key endpoints.
    keys: std::sync::Mutex<HashMap<(String, String, String), FetchedKey>>,
    fetches: std::sync::atomic::AtomicUsize,
}

impl InMemoryKeySetSource {
    pub fn put(&self, url: impl Into<String>, keys: JwkSet) {
        self.sets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(url.into(), keys);
    }

    /// A key a credentialed endpoint answers for `client_id` (any secret).
    pub fn put_key(&self, url: impl Into<String>, client_id: impl Into<String>, key: FetchedKey) {
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert((url.into(), client_id.into(), key.key.kid.clone()), key);
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait]
impl KeySetSource for InMemoryKeySetSource {
    async fn fetch(&self, url: &str) -> Result<FetchedKeySet, KeySetError> {
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let keys = self
            .sets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(url)
            .cloned();
        match keys {
            Some(keys) => Ok(FetchedKeySet {
                keys,
                max_age: None,
            }),
            None => Err(KeySetError {
                url: url.to_owned(),
                source: "no such key set".into(),
            }),
        }
    }

    async fn fetch_key(
        &self,
        url: &str,
        credentials: &ApiCredentials,
        kid: &str,
    ) -> Result<FetchedKey, KeySetError> {
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&(
                url.to_owned(),
                credentials.client_id().to_owned(),
                kid.to_owned(),
            ))
            .cloned()
            .ok_or_else(|| KeySetError {
                url: url.to_owned(),
                source: "no such key".into(),
            })
    }
}

#[derive(Debug)]
struct CachedSet {
    keys: Arc<JwkSet>,
    fetched_at: OffsetDateTime,
    expires_at: OffsetDateTime,
}

/// Keys fetched one `kid` at a time with credentials, and the fetches that failed.
#[derive(Debug, Default)]
struct KeysById {
    /// By (url, client id, kid): the key and until when it is used without a re-read.
    keys: HashMap<(String, String, String), (Arc<FetchedKey>, OffsetDateTime)>,
    /// When a fetch for this (url, client id, kid) last failed.
    misses: HashMap<(String, String, String), OffsetDateTime>,
    /// When the fetches of the last minute started (the budget).
    recent: Vec<OffsetDateTime>,
}

/// Key sets cached until the provider's max-age (an hour when it gives none, a day at
/// most); a token naming an unknown `kid` re-reads the set at most once a minute.
/// Keys from credentialed endpoints ([`KeySetCache::key_by_id`]) are cached an hour per
/// `kid`.
#[derive(Debug)]
pub struct KeySetCache {
    source: Arc<dyn KeySetSource>,
    cache: Mutex<HashMap<String, CachedSet>>,
    by_id: Mutex<KeysById>,
}

impl KeySetCache {
    const DEFAULT_TTL: Duration = Duration::hours(1);
    const MAX_TTL: Duration = Duration::days(1);
    const REFRESH_INTERVAL: Duration = Duration::minutes(1);
    /// At most this many credentialed key fetches a minute per process: the `kid` comes
    /// from an unauthenticated request, so junk tokens must not drive calls (and use up
    /// the provider's rate limit) with our credentials.
    const MAX_KEY_FETCHES_PER_MINUTE: usize = 10;

    pub fn new(source: Arc<dyn KeySetSource>) -> Self {
        KeySetCache {
            source,
            cache: Mutex::new(HashMap::new()),
            by_id: Mutex::new(KeysById::default()),
        }
    }

    /// The key `kid` from a credentialed endpoint (Plaid): cached an hour (expired keys
    /// too, so tokens under them cost no call); a `kid` whose fetch failed is not
    /// re-read for a minute, and at most [`Self::MAX_KEY_FETCHES_PER_MINUTE`] fetches
    /// start a minute. An answer for another `kid` is refused.
    pub async fn key_by_id(
        &self,
        url: &str,
        credentials: &ApiCredentials,
        kid: &str,
        now: OffsetDateTime,
    ) -> Result<Arc<FetchedKey>, KeySetError> {
        let refused = |reason: &'static str| KeySetError {
            url: url.to_owned(),
            source: reason.into(),
        };
        if !is_plausible_kid(kid) {
            return Err(refused("implausible key id"));
        }
        let id = (
            url.to_owned(),
            credentials.client_id().to_owned(),
            kid.to_owned(),
        );
        let mut state = self.by_id.lock().await;
        if let Some((key, until)) = state.keys.get(&id)
            && now < *until
        {
            return Ok(key.clone());
        }
        if state
            .misses
            .get(&id)
            .is_some_and(|at| now - *at < Self::REFRESH_INTERVAL)
        {
            return Err(refused("this key id failed less than a minute ago"));
        }
        state.recent.retain(|at| now - *at < Self::REFRESH_INTERVAL);
        if state.recent.len() >= Self::MAX_KEY_FETCHES_PER_MINUTE {
            return Err(refused("too many key fetches this minute"));
        }
        state.recent.push(now);
        state
            .misses
            .retain(|_, at| now - *at < Self::REFRESH_INTERVAL);
        let fetched = self
            .source
            .fetch_key(url, credentials, kid)
            .await
            .and_then(|fetched| {
                if fetched.key.kid == kid {
                    Ok(fetched)
                } else {
                    Err(refused("the endpoint answered another key id"))
                }
            });
        match fetched {
            Ok(fetched) => {
                let key = Arc::new(fetched);
                state
                    .keys
                    .insert(id, (key.clone(), now + Self::DEFAULT_TTL));
                Ok(key)
            }
            Err(err) => {
                state.misses.insert(id, now);
                Err(err)
            }
        }
    }

    /// The keys at `url` that can verify a token naming `kid`: from the cache while
    /// fresh and holding `kid`, else re-read (rate-limited for unknown kids).
    pub async fn keys_for(
        &self,
        url: &str,
        kid: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Arc<JwkSet>, KeySetError> {
        let mut cache = self.cache.lock().await;
        if let Some(entry) = cache.get(url) {
            let fresh = now < entry.expires_at;
            let knows_kid = kid.is_none_or(|kid| entry.keys.get(kid).is_some());
            let recently = now - entry.fetched_at < Self::REFRESH_INTERVAL;
            if fresh && (knows_kid || recently) {
                return Ok(entry.keys.clone());
            }
        }
        let fetched = self.source.fetch(url).await?;
        let ttl = fetched
            .max_age
            .unwrap_or(Self::DEFAULT_TTL)
            .clamp(Duration::ZERO, Self::MAX_TTL);
        let keys = Arc::new(fetched.keys);
        cache.insert(
            url.to_owned(),
            CachedSet {
                keys: keys.clone(),
                fetched_at: now,
                expires_at: now + ttl,
            },
        );
        Ok(keys)
    }
}

/// A `kid` worth sending to a provider: 1–128 characters of `[A-Za-z0-9._-]` (Plaid's
/// are UUIDs).
pub fn is_plausible_kid(kid: &str) -> bool {
    (1..=128).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The public JWK of an ES256 test key (tests here and in `junction-oauth` mint their
/// own tokens).
#[doc(hidden)]
pub fn es256_test_jwk(signing: &p256::ecdsa::SigningKey, kid: &str) -> Jwk {
    let point = signing.verifying_key().to_encoded_point(false);
    Jwk {
        kid: kid.to_owned(),
        kty: "EC".to_owned(),
        alg: Some("ES256".to_owned()),
        n: None,
        e: None,
        crv: Some("P-256".to_owned()),
        x: Some(BASE64URL.encode(&point.as_bytes()[1..33])),
        y: Some(BASE64URL.encode(&point.as_bytes()[33..65])),
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
