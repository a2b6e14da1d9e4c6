//! An OAuth 1.0a provider on loopback for tests: temporary credentials, the user's
//! authorization (approved at once, redirecting to the callback as RFC 5849 §2.2 says),
//! token credentials, a signed API route and Trello-style token deletion.
//!
//! It checks what a real provider checks, and computes every signature itself from RFC
//! 5849 §3.4 (its own §3.6 encoding, base string and HMAC-SHA1 with `hmac` + `sha1`),
//! independently of the signer under test: a request whose signature does not verify,
//! whose nonce was seen before, whose temporary token is unknown or whose verifier is
//! wrong is refused with a 401.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    extract::{Path, Query, State},
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha1::Sha1;

pub const CONSUMER_KEY: &str = "fake-consumer-key";
pub const CONSUMER_SECRET: &str = "fake-consumer-secret";

#[derive(Debug, Default)]
struct Ledger {
    /// temporary token → (secret, callback, verifier once authorized)
    temporary: BTreeMap<String, (String, String, Option<String>)>,
    /// access token → secret
    access: BTreeMap<String, String>,
    nonces: BTreeSet<(String, String)>,
    counter: u64,
    rejected: Vec<String>,
    revoked: Vec<String>,
    api_calls: u64,
    /// Who the user signs in as (the `user_id` of the token answer).
    account: Option<String>,
}

#[derive(Debug, Clone)]
struct Shared {
    ledger: Arc<Mutex<Ledger>>,
    base: String,
}

/// A running fake; dropped with the test's runtime.
#[derive(Debug, Clone)]
pub struct FakeOAuth1 {
    shared: Shared,
}

/// RFC 5849 §3.6, written out: unreserved octets pass, every other octet is `%XX`.
fn encode(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&value[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The header's protocol parameters (§3.5.1), decoded.
fn header_params(headers: &HeaderMap) -> Option<BTreeMap<String, String>> {
    let header = headers.get("authorization")?.to_str().ok()?;
    let rest = header.strip_prefix("OAuth ")?;
    let mut params = BTreeMap::new();
    for part in rest.split(',') {
        let (name, value) = part.trim().split_once('=')?;
        let value = value.strip_prefix('"')?.strip_suffix('"')?;
        params.insert(name.to_owned(), decode(value));
    }
    Some(params)
}

impl Shared {
    /// Verifies the request's signature with `token_secret` (§3.4.1-3.4.2) and its nonce
    /// (§3.3); returns its protocol parameters.
    fn verify(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        token_secret: impl FnOnce(&BTreeMap<String, String>, &Ledger) -> Option<String>,
    ) -> Result<BTreeMap<String, String>, Box<Response>> {
        let refuse = |ledger: &mut Ledger, why: &str| {
            ledger.rejected.push(why.to_owned());
            Box::new((StatusCode::UNAUTHORIZED, why.to_owned()).into_response())
        };
        let mut ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        let Some(oauth) = header_params(headers) else {
            return Err(refuse(&mut ledger, "no OAuth header"));
        };
        if oauth.get("oauth_consumer_key").map(String::as_str) != Some(CONSUMER_KEY)
            || oauth.get("oauth_signature_method").map(String::as_str) != Some("HMAC-SHA1")
        {
            return Err(refuse(&mut ledger, "unknown consumer or method"));
        }
        let Some(secret) = token_secret(&oauth, &ledger) else {
            return Err(refuse(&mut ledger, "unknown token"));
        };
        let mut pairs: Vec<(String, String)> = uri
            .query()
            .map(|query| {
                form_urlencoded::parse(query.as_bytes())
                    .map(|(n, v)| (encode(&n), encode(&v)))
                    .collect()
            })
            .unwrap_or_default();
        pairs.extend(
            oauth
                .iter()
                .filter(|(name, _)| *name != "oauth_signature" && *name != "realm")
                .map(|(n, v)| (encode(n), encode(v))),
        );
        pairs.sort();
        let normalized = pairs
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let base_string = format!(
            "{}&{}&{}",
            method.as_str(),
            encode(&format!("{}{}", self.base, uri.path())),
            encode(&normalized)
        );
        let key = format!("{}&{}", encode(CONSUMER_SECRET), encode(&secret));
        let mut mac = Hmac::<Sha1>::new_from_slice(key.as_bytes()).expect("any key length");
        mac.update(base_string.as_bytes());
        let Some(presented) = oauth
            .get("oauth_signature")
            .and_then(|s| STANDARD.decode(s).ok())
        else {
            return Err(refuse(&mut ledger, "no signature"));
        };
        if mac.verify_slice(&presented).is_err() {
            return Err(refuse(&mut ledger, "signature does not verify"));
        }
        let nonce = (
            oauth.get("oauth_nonce").cloned().unwrap_or_default(),
            oauth.get("oauth_timestamp").cloned().unwrap_or_default(),
        );
        if nonce.0.is_empty() || !ledger.nonces.insert(nonce) {
            return Err(refuse(&mut ledger, "nonce missing or reused"));
        }
        Ok(oauth)
    }
}

async fn initiate(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let oauth = match shared.verify(&method, &uri, &headers, |_, _| Some(String::new())) {
        Ok(oauth) => oauth,
        Err(refused) => return *refused,
    };
    let Some(callback) = oauth.get("oauth_callback").cloned() else {
        return (StatusCode::BAD_REQUEST, "no oauth_callback").into_response();
    };
    let mut ledger = shared.ledger.lock().unwrap_or_else(|p| p.into_inner());
    ledger.counter += 1;
    let token = format!("temp-{}", ledger.counter);
    let secret = format!("temp-secret-{}&=", ledger.counter);
    ledger
        .temporary
        .insert(token.clone(), (secret.clone(), callback, None));
    form(&[
        ("oauth_token", &token),
        ("oauth_token_secret", &secret),
        ("oauth_callback_confirmed", "true"),
    ])
}

async fn authorize(
    State(shared): State<Shared>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let mut ledger = shared.ledger.lock().unwrap_or_else(|p| p.into_inner());
    ledger.counter += 1;
    let verifier = format!("verifier-{}", ledger.counter);
    let Some(token) = query.get("oauth_token") else {
        return (StatusCode::BAD_REQUEST, "no oauth_token").into_response();
    };
    let Some(entry) = ledger.temporary.get_mut(token) else {
        return (StatusCode::BAD_REQUEST, "unknown oauth_token").into_response();
    };
    entry.2 = Some(verifier.clone());
    let callback = entry.1.clone();
    let separator = if callback.contains('?') { '&' } else { '?' };
    let location = format!(
        "{callback}{separator}oauth_token={}&oauth_verifier={}",
        encode(token),
        encode(&verifier)
    );
    (StatusCode::FOUND, [("location", location)]).into_response()
}

async fn access(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let oauth = match shared.verify(&method, &uri, &headers, |oauth, ledger| {
        let token = oauth.get("oauth_token")?;
        ledger.temporary.get(token).map(|entry| entry.0.clone())
    }) {
        Ok(oauth) => oauth,
        Err(refused) => return *refused,
    };
    let mut ledger = shared.ledger.lock().unwrap_or_else(|p| p.into_inner());
    let token = oauth.get("oauth_token").cloned().unwrap_or_default();
    // Single use: the temporary credentials go whatever the verifier says.
    let Some((_, _, Some(verifier))) = ledger.temporary.remove(&token) else {
        return (StatusCode::UNAUTHORIZED, "not authorized").into_response();
    };
    if oauth.get("oauth_verifier") != Some(&verifier) {
        ledger.rejected.push("wrong verifier".into());
        return (StatusCode::UNAUTHORIZED, "wrong verifier").into_response();
    }
    ledger.counter += 1;
    let access = format!("access-{}", ledger.counter);
    let secret = format!("access secret/{}", ledger.counter);
    ledger.access.insert(access.clone(), secret.clone());
    let account = ledger
        .account
        .clone()
        .unwrap_or_else(|| "user-1".to_owned());
    form(&[
        ("oauth_token", &access),
        ("oauth_token_secret", &secret),
        ("user_id", &account),
    ])
}

async fn signed_api(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match shared.verify(&method, &uri, &headers, |oauth, ledger| {
        ledger.access.get(oauth.get("oauth_token")?).cloned()
    }) {
        Ok(_) => {
            shared
                .ledger
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .api_calls += 1;
            (StatusCode::OK, "{\"id\":\"me\"}").into_response()
        }
        Err(refused) => *refused,
    }
}

/// Trello's `DELETE /1/tokens/{token}?key=…&token=…`, or the same request signed with
/// the token (a provider whose API calls are signed).
async fn delete_token(
    State(shared): State<Shared>,
    Path(token): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if headers.contains_key("authorization") {
        let signed = shared.verify(&method, &uri, &headers, |oauth, ledger| {
            let presented = oauth.get("oauth_token")?;
            (presented == &token).then(|| ledger.access.get(presented).cloned())?
        });
        if let Err(refused) = signed {
            return *refused;
        }
    } else if query.get("key").map(String::as_str) != Some(CONSUMER_KEY)
        || query.get("token") != Some(&token)
    {
        return (StatusCode::UNAUTHORIZED, "invalid key or token").into_response();
    }
    let mut ledger = shared.ledger.lock().unwrap_or_else(|p| p.into_inner());
    if ledger.access.remove(&token).is_none() {
        return (StatusCode::NOT_FOUND, "no such token").into_response();
    }
    ledger.revoked.push(token);
    StatusCode::OK.into_response()
}

fn form(pairs: &[(&str, &str)]) -> Response {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    (
        [("content-type", "application/x-www-form-urlencoded")],
        body,
    )
        .into_response()
}

impl FakeOAuth1 {
    pub async fn start() -> FakeOAuth1 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let address = listener.local_addr().expect("address");
        let shared = Shared {
            ledger: Arc::default(),
            base: format!("http://{address}"),
        };
        let app = Router::new()
            .route("/initiate", post(initiate))
            .route("/authorize", get(authorize))
            .route("/token", post(access))
            .route("/api/me", get(signed_api))
            .route("/tokens/{token}", delete(delete_token))
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeOAuth1 { shared }
    }

    pub fn base(&self) -> &str {
        &self.shared.base
    }

    /// The catalog entry of provider `id` served by this fake; `api_auth` as given.
    pub fn catalog_entry(&self, id: &str, api_auth: &str) -> String {
        let base = self.base();
        format!(
            "id = \"{id}\"\nname = \"Fake OAuth 1.0a\"\ndocs = \"https://example.com/fake\"\n\n\
             [oauth1]\nrequest_token_url = \"{base}/initiate\"\nauthorize_url = \"{base}/authorize\"\n\
             access_token_url = \"{base}/token\"\nsignature_method = \"HMAC-SHA1\"\n\
             account_param = \"user_id\"\n\
             api_auth = {api_auth}\n\
             revocation = {{ style = \"delete_token\", url = \"{base}/tokens/{{token}}\" }}\n\
             [oauth1.authorize_params]\nname = \"Junction tests\"\nscope = \"read\"\n"
        )
    }

    /// The account the next authorizations sign in as.
    pub fn sign_in_as(&self, account: &str) {
        self.ledger().account = Some(account.to_owned());
    }

    pub fn access_tokens(&self) -> Vec<String> {
        self.ledger().access.keys().cloned().collect()
    }

    pub fn pending_temporary(&self) -> usize {
        self.ledger().temporary.len()
    }

    pub fn rejected(&self) -> Vec<String> {
        self.ledger().rejected.clone()
    }

    pub fn revoked(&self) -> Vec<String> {
        self.ledger().revoked.clone()
    }

    pub fn api_calls(&self) -> u64 {
        self.ledger().api_calls
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.shared.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }
}
