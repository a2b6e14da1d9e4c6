//! Development keys for the providers whose deliveries carry a JWT verified with keys
//! the provider publishes (Gmail's Pub/Sub push, Plaid), and a loopback server that
//! publishes them the way those providers do, so that `junction send-webhook gmail` and
//! `plaid` go through the real ingress locally.
//!
//! - [`DevelopmentKeys`]: an RSA-2048 key (RS256, made by aws-lc-rs) and a P-256 key
//!   (ES256), generated at start, each a private JSON Web Key with a fresh `kid`. The
//!   development secret seeded for such a provider stores it as
//!   `development_signing_key`, which only the CLI reads.
//! - [`KeyServer`]: on `127.0.0.1`, per provider, the public half of the key in that
//!   provider's secret (`<prefix>/webhooks/<provider>`, read on each request, so a secret
//!   seeded by an earlier run against the same emulator keeps verifying): a JSON Web Key
//!   Set at the path of Google's (`GET /gmail/oauth2/v3/certs`), and Plaid's `POST
//!   /plaid/webhook_verification_key/get`, which checks the `client_id` and `secret`
//!   against the secret's `<client_id>:<secret>` and answers Plaid's key or Plaid's error.
//! - [`local_overlay`]: the catalog overlay that points the ingress there: copies of the
//!   built-in JWT entries with `jwt.jwks_url` replaced, after the user's own overlay.
//!
//! Nothing here is used outside the local stack: the catalog's URLs stay the providers'.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::Arc,
};
use subtle::ConstantTimeEq as _;

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    serve::ListenerExt as _,
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL};
use junction_aws::secrets::{SecretSource, webhook_secret_name};
use junction_catalog::{Catalog, CatalogError, JwtAlgorithm, JwtKeys, Provider, Scheme};
use junction_webhooks::SigningSecret;
use junction_webhooks::jwt::ApiCredentials;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// Why the development keys or the overlay could not be made.
#[derive(Debug, thiserror::Error)]
pub enum JwtKeysError {
    #[error("could not generate the development RSA key")]
    Generate(#[source] aws_lc_rs::error::Unspecified),
    #[error("could not read the members of the generated RSA key")]
    Export(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("RSA keys are made with 2048, 3072, 4096 or 8192 bits, not {0}")]
    UnsupportedSize(usize),
    #[error("could not read the catalog entry {path}: {source}")]
    ReadEntry {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("catalog entry {id}: {reason}")]
    Entry { id: String, reason: String },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// A fresh `kid`: 40 hex digits for RSA (Google's shape), a UUID for P-256 (Plaid's).
fn key_id(algorithm: JwtAlgorithm) -> String {
    let hex = hex::encode(rand::random::<[u8; 20]>());
    match algorithm {
        JwtAlgorithm::RS256 => hex,
        JwtAlgorithm::ES256 => format!(
            "{}-{}-4{}-a{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[13..16],
            &hex[17..20],
            &hex[20..32]
        ),
    }
}

/// A new private JWK for `algorithm` named `kid` (RSA-2048 or P-256), with the members
/// of RFC 7518 §6 and `created_at` (Unix seconds, which Plaid's key endpoint reports).
pub fn generate_jwk(algorithm: JwtAlgorithm, kid: &str) -> Result<Value, JwtKeysError> {
    generate_jwk_of_size(algorithm, kid, 2048)
}

/// [`generate_jwk`] with an RSA key of `rsa_bits`: 2048 (what Google uses, and the least
/// that aws-lc-rs makes or verifies), 3072, 4096 or 8192.
pub fn generate_jwk_of_size(
    algorithm: JwtAlgorithm,
    kid: &str,
    rsa_bits: usize,
) -> Result<Value, JwtKeysError> {
    let b64 = |bytes: &[u8]| BASE64URL.encode(bytes);
    let created_at = time::OffsetDateTime::now_utc().unix_timestamp();
    Ok(match algorithm {
        JwtAlgorithm::RS256 => {
            let mut jwk = rsa_private_members(rsa_bits)?;
            for (name, value) in [
                ("kty", "RSA"),
                ("alg", "RS256"),
                ("use", "sig"),
                ("kid", kid),
            ] {
                jwk.insert(name.to_owned(), json!(value));
            }
            jwk.insert("created_at".to_owned(), json!(created_at));
            Value::Object(jwk)
        }
        JwtAlgorithm::ES256 => {
            use p256::elliptic_curve::sec1::ToEncodedPoint as _;
            let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
            let point = key.public_key().to_encoded_point(false);
            let coordinate = |c: Option<&p256::FieldBytes>| c.map(|c| b64(c)).unwrap_or_default();
            json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
                "x": coordinate(point.x()), "y": coordinate(point.y()),
                "d": b64(&key.to_bytes()),
                "created_at": created_at,
            })
        }
    })
}

/// A new RSA key's members as a private JWK has them (RFC 7518 §6.3: `n`, `e`, `d`, `p`,
/// `q`, `dp`, `dq`, `qi`). aws-lc-rs generates the key but shows its private members only
/// in its PKCS#8 export, which wraps a PKCS#1 `RSAPrivateKey`; they are read from there.
fn rsa_private_members(bits: usize) -> Result<serde_json::Map<String, Value>, JwtKeysError> {
    use aws_lc_rs::{encoding::AsDer as _, rsa::KeySize};
    let size = match bits {
        2048 => KeySize::Rsa2048,
        3072 => KeySize::Rsa3072,
        4096 => KeySize::Rsa4096,
        8192 => KeySize::Rsa8192,
        other => return Err(JwtKeysError::UnsupportedSize(other)),
    };
    let pair = aws_lc_rs::rsa::KeyPair::generate(size).map_err(JwtKeysError::Generate)?;
    let pkcs8 = pair.as_der().map_err(JwtKeysError::Generate)?;
    let info = pkcs8::PrivateKeyInfo::try_from(pkcs8.as_ref())
        .map_err(|err| JwtKeysError::Export(Box::new(err)))?;
    let key = pkcs1::RsaPrivateKey::try_from(info.private_key)
        .map_err(|err| JwtKeysError::Export(Box::new(err)))?;
    let number = |n: pkcs1::UintRef<'_>| json!(BASE64URL.encode(n.as_bytes()));
    Ok([
        ("n", key.modulus),
        ("e", key.public_exponent),
        ("d", key.private_exponent),
        ("p", key.prime1),
        ("q", key.prime2),
        ("dp", key.exponent1),
        ("dq", key.exponent2),
        ("qi", key.coefficient),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), number(value)))
    .collect())
}

/// The public half of a private JWK: its public members only (RFC 7518 §6.2.1, §6.3.1),
/// `None` when it is not an RSA or EC key with a `kid`.
pub fn public_jwk(private: &Value) -> Option<Value> {
    let members: &[&str] = match private.get("kty")?.as_str()? {
        "RSA" => &["kty", "alg", "use", "kid", "n", "e"],
        "EC" => &["kty", "alg", "use", "kid", "crv", "x", "y"],
        _ => return None,
    };
    private.get("kid")?.as_str()?;
    Some(Value::Object(
        members
            .iter()
            .filter_map(|name| Some(((*name).to_owned(), private.get(*name)?.clone())))
            .collect(),
    ))
}

/// One run's development keys, one per algorithm the catalog's JWT providers use.
#[derive(Clone)]
pub struct DevelopmentKeys {
    rs256: Value,
    es256: Value,
}

impl std::fmt::Debug for DevelopmentKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevelopmentKeys")
            .field("rs256_kid", &self.rs256["kid"])
            .field("es256_kid", &self.es256["kid"])
            .finish_non_exhaustive()
    }
}

impl DevelopmentKeys {
    /// Generates both keys (the stack does it while the emulator deploys the template).
    pub fn generate() -> Result<DevelopmentKeys, JwtKeysError> {
        Ok(DevelopmentKeys {
            rs256: generate_jwk(JwtAlgorithm::RS256, &key_id(JwtAlgorithm::RS256))?,
            es256: generate_jwk(JwtAlgorithm::ES256, &key_id(JwtAlgorithm::ES256))?,
        })
    }

    /// The private JWK that signs `algorithm`'s tokens.
    pub fn private_jwk(&self, algorithm: JwtAlgorithm) -> &Value {
        match algorithm {
            JwtAlgorithm::RS256 => &self.rs256,
            JwtAlgorithm::ES256 => &self.es256,
        }
    }
}

/// How one provider's keys are published: the kind of endpoint and its path under
/// `/<provider>` (the path of the provider's own URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedKeys {
    pub kind: JwtKeys,
    pub path: String,
}

/// What seeding needs for the JWT providers: this run's keys, and which providers'
/// entries point at the key server.
#[derive(Debug, Clone)]
pub struct LocalJwt {
    pub keys: DevelopmentKeys,
    pub base_url: String,
    pub served: BTreeMap<String, ServedKeys>,
}

impl LocalJwt {
    /// The URL the key server publishes `id`'s keys at.
    pub fn url(&self, id: &str) -> Option<String> {
        self.served
            .get(id)
            .map(|served| format!("{}/{id}{}", self.base_url, served.path))
    }

    /// Whether `provider` (as the running catalog has it) fetches its keys from the key
    /// server: only then can a development key sign what it accepts.
    pub fn serves(&self, provider: &Provider) -> bool {
        let rule = provider.verification().and_then(|v| v.jwt.as_ref());
        rule.is_some_and(|rule| self.url(&provider.id).as_deref() == Some(rule.jwks_url.as_str()))
    }
}

/// The catalog overlay the local stack stores, and what it points at the key server.
#[derive(Debug, Clone)]
pub struct LocalOverlay {
    /// The user's overlay verbatim (when there is one), then the local entries.
    pub text: String,
    /// Provider id → where its keys are served.
    pub served: BTreeMap<String, ServedKeys>,
    /// Built-in JWT providers the user's overlay replaces: their entries are kept as
    /// written, so their keys come from wherever those say (not the key server).
    pub overridden: Vec<String>,
}

/// The path of an absolute URL (`/` when it has none).
fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.find('/').map_or("/", |index| &rest[index..])
}

/// Builds the overlay: for every built-in provider of the `jwt` scheme that `user` (the
/// overlay the developer passed, `(name, text)`) does not replace, a copy of its catalog
/// file (`<root>/shared/catalog/providers/<id>.toml`, the source the function binaries embed)
/// whose `jwt.jwks_url` is the key server's `<base_url>/<id><path of the provider's
/// URL>`. A user entry with the same id wins: it was written on purpose (a Plaid Sandbox
/// URL, say), so it is left alone and reported in `overridden`. The result is validated
/// with the functions' own rules.
pub fn local_overlay(
    root: &Path,
    base_url: &str,
    user: Option<(&str, &str)>,
) -> Result<LocalOverlay, JwtKeysError> {
    // The served key endpoints are on loopback: checked as the local functions check.
    let embedded = Catalog::embedded()?
        .with_endpoint_rules(junction_catalog::EndpointRules::LoopbackHttpForTests);
    let mut user_ids = BTreeSet::new();
    if let Some((name, text)) = user {
        embedded.with_overlay(name, text)?;
        let table: toml::Table =
            text.parse()
                .map_err(|err: toml::de::Error| CatalogError::Parse {
                    file: name.to_owned(),
                    detail: err.to_string(),
                })?;
        user_ids.extend(
            table
                .get("provider")
                .and_then(toml::Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|entry| entry.get("id")?.as_str().map(str::to_owned)),
        );
    }
    let mut entries = Vec::new();
    let mut served = BTreeMap::new();
    let mut overridden = Vec::new();
    for provider in embedded.providers() {
        let Some(verification) = provider.verification().filter(|v| v.scheme == Scheme::Jwt) else {
            continue;
        };
        if user_ids.contains(&provider.id) {
            overridden.push(provider.id.clone());
            continue;
        }
        let failed = |reason: String| JwtKeysError::Entry {
            id: provider.id.clone(),
            reason,
        };
        let path = root
            .join("shared/catalog/providers")
            .join(format!("{}.toml", provider.id));
        let text = std::fs::read_to_string(&path).map_err(|source| JwtKeysError::ReadEntry {
            path: path.clone(),
            source,
        })?;
        let mut entry: toml::Table = text.parse().map_err(|err| failed(format!("{err}")))?;
        let rule = ["webhook", "verification", "jwt"]
            .iter()
            .try_fold(&mut entry, |table, key| {
                table.get_mut(*key).and_then(toml::Value::as_table_mut)
            })
            .ok_or_else(|| {
                failed("no [webhook.verification] jwt rule to point at local keys".into())
            })?;
        let keys_path = rule
            .get("jwks_url")
            .and_then(toml::Value::as_str)
            .map(|url| url_path(url).to_owned())
            .ok_or_else(|| failed("the jwt rule has no jwks_url".into()))?;
        rule.insert(
            "jwks_url".into(),
            toml::Value::String(format!("{base_url}/{}{keys_path}", provider.id)),
        );
        entries.push(toml::Value::Table(entry));
        served.insert(
            provider.id.clone(),
            ServedKeys {
                kind: verification.jwt_keys,
                path: keys_path,
            },
        );
    }
    let mut local = toml::Table::new();
    local.insert("provider".into(), toml::Value::Array(entries.clone()));
    let local_text = toml::to_string(&local).map_err(|err| JwtKeysError::Entry {
        id: "(overlay)".into(),
        reason: err.to_string(),
    })?;
    let header = "# Added by the Junction local stack: the built-in JWT providers with their \
                  keys fetched from its development key server.\n";
    let text = match user {
        None => format!("{header}{local_text}"),
        Some((_, user_text)) if entries.is_empty() => user_text.to_owned(),
        Some((_, user_text)) => {
            let appended = format!("{}\n\n{header}{local_text}", user_text.trim_end());
            // Appending `[[provider]]` tables cannot extend an inline `provider = […]`
            // array: then the user's entries are re-written as tables.
            if appended.parse::<toml::Table>().is_ok() {
                appended
            } else {
                let mut merged: toml::Table = user_text.parse().unwrap_or_default();
                let mut all = merged
                    .remove("provider")
                    .and_then(|p| p.as_array().cloned())
                    .unwrap_or_default();
                all.extend(entries);
                merged.insert("provider".into(), toml::Value::Array(all));
                let merged = toml::to_string(&merged).map_err(|err| JwtKeysError::Entry {
                    id: "(overlay)".into(),
                    reason: err.to_string(),
                })?;
                format!("{header}{merged}")
            }
        }
    };
    embedded.with_overlay("the local stack's catalog overlay", &text)?;
    Ok(LocalOverlay {
        text,
        served,
        overridden,
    })
}

/// The development claim value the ingress expects for `claim` of `provider`'s tokens
/// (Gmail: the push subscription's audience and service account).
pub fn development_claim(provider: &str, claim: &str) -> String {
    match claim {
        "aud" => format!("junction-local-{provider}"),
        "email" => format!("{provider}-push@junction-dev.iam.gserviceaccount.com"),
        other => format!("localdev-{other}"),
    }
}

/// The part of a webhook secret the key server reads.
#[derive(Debug, Default, Deserialize)]
struct SecretDocument {
    #[serde(default)]
    signing_secrets: Vec<String>,
    #[serde(default)]
    development_signing_key: Option<String>,
}

impl SecretDocument {
    fn private_jwk(&self) -> Option<Value> {
        serde_json::from_str(self.development_signing_key.as_deref()?).ok()
    }
}

#[derive(Debug)]
struct KeyState {
    secrets: Arc<dyn SecretSource>,
    prefix: String,
    served: BTreeMap<String, ServedKeys>,
}

/// The loopback server publishing the development keys; stopped by aborting its task.
#[derive(Debug)]
pub struct KeyServer {
    listener: tokio::net::TcpListener,
    base_url: String,
}

impl KeyServer {
    /// Binds a free port on 127.0.0.1 (before the overlay naming it is written).
    pub async fn bind() -> std::io::Result<KeyServer> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        Ok(KeyServer { listener, base_url })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Serves `served`'s keys, read from the webhook secrets under `prefix`, until the
    /// returned task is aborted.
    pub fn serve(
        self,
        secrets: Arc<dyn SecretSource>,
        prefix: String,
        served: BTreeMap<String, ServedKeys>,
    ) -> JoinHandle<()> {
        let state = Arc::new(KeyState {
            secrets,
            prefix,
            served,
        });
        let router = Router::new().fallback(answer).with_state(state);
        // Small JSON answers on loopback: Nagle would only add latency.
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, router).await {
                eprintln!("[local-stack] key server stopped: {err}");
            }
        })
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

async fn answer(
    State(state): State<Arc<KeyState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let found = uri
        .path()
        .strip_prefix('/')
        .and_then(|path| path.split_once('/'))
        .and_then(|(id, rest)| {
            let served = state.served.get(id)?;
            (served.path.strip_prefix('/') == Some(rest)).then_some((id, served.kind))
        });
    let Some((id, kind)) = found else {
        return (StatusCode::NOT_FOUND, "no such key endpoint\n").into_response();
    };
    let name = webhook_secret_name(&state.prefix, id, None);
    let document = match state.secrets.secret_string(&name).await {
        Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_default(),
        Ok(None) => SecretDocument::default(),
        Err(_) => {
            return (StatusCode::SERVICE_UNAVAILABLE, "secret unavailable\n").into_response();
        }
    };
    match (kind, method) {
        (JwtKeys::JwkSet, Method::GET) => jwk_set(&document),
        (JwtKeys::PlaidVerificationKey, Method::POST) => plaid_key(&document, &headers, &body),
        _ => (StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n").into_response(),
    }
}

/// Google's `GET /oauth2/v3/certs`: `{"keys": [<public JWK>]}` (empty without a
/// development key), cacheable for five minutes.
fn jwk_set(document: &SecretDocument) -> Response {
    let keys: Vec<Value> = document
        .private_jwk()
        .as_ref()
        .and_then(public_jwk)
        .into_iter()
        .collect();
    let mut response = json_response(StatusCode::OK, &json!({ "keys": keys }));
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300, must-revalidate, no-transform"),
    );
    response
}

fn request_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..15)
        .map(|_| char::from(ALPHABET[usize::from(rand::random::<u8>()) % ALPHABET.len()]))
        .collect()
}

/// Plaid's error object (<https://plaid.com/docs/errors/>), always HTTP 400 here.
fn plaid_error(error_type: &str, code: &str, message: &str) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({
            "display_message": null,
            "documentation_url": "https://plaid.com/docs/errors/",
            "error_code": code,
            "error_message": message,
            "error_type": error_type,
            "request_id": request_id(),
            "causes": [],
            "status": 400,
            "suggested_action": null,
        }),
    )
}

/// Plaid's `POST /webhook_verification_key/get`: `{"client_id", "secret", "key_id"}`
/// (the credentials may also come as `PLAID-CLIENT-ID` / `PLAID-SECRET` headers),
/// answered `{"key": {alg, crv, kid, kty, use, x, y, created_at, expired_at}, "request_id"}`
/// when the credentials are the secret's and `key_id` is its development key's `kid`.
fn plaid_key(document: &SecretDocument, headers: &HeaderMap, body: &[u8]) -> Response {
    #[derive(Deserialize)]
    struct Request {
        #[serde(default)]
        client_id: Option<String>,
        #[serde(default)]
        secret: Option<String>,
        #[serde(default)]
        key_id: Option<String>,
    }
    let Ok(request) = serde_json::from_slice::<Request>(body) else {
        return plaid_error(
            "INVALID_REQUEST",
            "INVALID_BODY",
            "body could not be parsed as JSON",
        );
    };
    let from_header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let client_id = request.client_id.or_else(|| from_header("plaid-client-id"));
    let secret = request.secret.or_else(|| from_header("plaid-secret"));
    let missing: Vec<&str> = [
        ("client_id", client_id.is_none()),
        ("secret", secret.is_none()),
        ("key_id", request.key_id.is_none()),
    ]
    .into_iter()
    .filter_map(|(name, absent)| absent.then_some(name))
    .collect();
    let (Some(client_id), Some(secret), Some(key_id)) = (client_id, secret, request.key_id) else {
        return plaid_error(
            "INVALID_REQUEST",
            "MISSING_FIELDS",
            &format!(
                "the following required fields are missing: {}",
                missing.join(", ")
            ),
        );
    };
    let known = document
        .signing_secrets
        .iter()
        .filter_map(|configured| ApiCredentials::parse(&SigningSecret::new(configured.clone())))
        .any(|credentials| {
            credentials.client_id() == client_id
                && bool::from(credentials.secret().as_bytes().ct_eq(secret.as_bytes()))
        });
    if !known {
        return plaid_error(
            "INVALID_INPUT",
            "INVALID_API_KEYS",
            "invalid client_id or secret provided",
        );
    }
    let private = document.private_jwk();
    let key = private
        .as_ref()
        .filter(|jwk| jwk.get("kid").and_then(Value::as_str) == Some(key_id.as_str()))
        .and_then(|jwk| {
            let mut key = public_jwk(jwk)?;
            key["created_at"] = jwk.get("created_at").cloned().unwrap_or(json!(0));
            key["expired_at"] = Value::Null;
            Some(key)
        });
    match key {
        Some(key) => json_response(
            StatusCode::OK,
            &json!({ "key": key, "request_id": request_id() }),
        ),
        None => plaid_error(
            "INVALID_INPUT",
            "INVALID_WEBHOOK_VERIFICATION_KEY_ID",
            "invalid key_id provided",
        ),
    }
}

#[cfg(test)]
mod tests {
    use junction_aws::secrets::InMemorySecretSource;
    use junction_cli::tokens::TokenSigner;
    use junction_webhooks::jwt::{HttpKeySetSource, KeySetCache, verify_jwt};
    use time::OffsetDateTime;

    use super::*;
    use crate::emulator::repo_root;

    /// GIVEN the overlay for a key server at a loopback URL WHEN the catalog takes it
    /// THEN Gmail and Plaid fetch their keys there, everything else is the built-in.
    #[test]
    fn the_overlay_points_every_builtin_jwt_provider_at_the_key_server() {
        let base = "http://127.0.0.1:4555";
        let overlay = local_overlay(&repo_root(), base, None).expect("overlay");
        assert_eq!(
            overlay
                .served
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["gmail", "plaid"]
        );
        let catalog = Catalog::embedded()
            .expect("catalog")
            .with_endpoint_rules(junction_catalog::EndpointRules::LoopbackHttpForTests)
            .with_overlay("o", &overlay.text)
            .expect("valid");
        let url = |id: &str| {
            catalog
                .get(id)
                .and_then(|p| p.verification())
                .and_then(|v| v.jwt.as_ref())
                .map(|rule| rule.jwks_url.clone())
        };
        assert_eq!(
            url("gmail").as_deref(),
            Some("http://127.0.0.1:4555/gmail/oauth2/v3/certs")
        );
        assert_eq!(
            url("plaid").as_deref(),
            Some("http://127.0.0.1:4555/plaid/webhook_verification_key/get")
        );
        let gmail = catalog.get("gmail").expect("gmail");
        assert!(gmail.oauth.is_some(), "the rest of the entry is kept");
        assert_eq!(
            catalog.providers().count(),
            Catalog::embedded().expect("c").providers().count()
        );
    }

    /// A user overlay is kept verbatim, its own Plaid entry (Sandbox) wins, and Gmail
    /// is still pointed at the key server.
    #[test]
    fn a_user_entry_for_a_jwt_provider_wins() {
        let plaid =
            std::fs::read_to_string(repo_root().join("shared/catalog/providers/plaid.toml"))
                .expect("plaid.toml")
                .replace("https://production.plaid.com", "https://sandbox.plaid.com");
        let user = format!(
            "# mine\n[[provider]]\nid = \"billing\"\nname = \"Billing\"\ndocs = \"https://wiki.example.com\"\n[provider.webhook]\nverification_from = \"standard-webhooks\"\n\n{}",
            to_overlay_entry(&plaid)
        );
        let overlay =
            local_overlay(&repo_root(), "http://127.0.0.1:1", Some(("u", &user))).expect("overlay");
        assert!(overlay.text.starts_with("# mine\n"), "{}", overlay.text);
        assert_eq!(overlay.overridden, ["plaid"]);
        assert_eq!(overlay.served.keys().collect::<Vec<_>>(), ["gmail"]);
        let catalog = Catalog::embedded()
            .expect("catalog")
            .with_endpoint_rules(junction_catalog::EndpointRules::LoopbackHttpForTests)
            .with_overlay("o", &overlay.text)
            .expect("valid");
        assert!(catalog.get("billing").is_some());
        let plaid_url = catalog
            .get("plaid")
            .and_then(|p| p.webhook.as_ref()?.verification.as_ref()?.jwt.clone())
            .map(|rule| rule.jwks_url);
        assert_eq!(
            plaid_url.as_deref(),
            Some("https://sandbox.plaid.com/webhook_verification_key/get")
        );
        // An inline `provider = [...]` array cannot be appended to: rewritten as tables.
        let inline = "provider = [{ id = \"billing\", name = \"Billing\", docs = \"https://wiki.example.com\", webhook = { verification_from = \"standard-webhooks\" } }]\n";
        let overlay = local_overlay(&repo_root(), "http://127.0.0.1:1", Some(("u", inline)))
            .expect("overlay");
        let catalog = Catalog::embedded()
            .expect("catalog")
            .with_endpoint_rules(junction_catalog::EndpointRules::LoopbackHttpForTests)
            .with_overlay("o", &overlay.text)
            .expect("valid");
        assert!(catalog.get("billing").is_some());
        assert_eq!(overlay.served.len(), 2);
    }

    /// A catalog file as an overlay `[[provider]]` entry.
    fn to_overlay_entry(file: &str) -> String {
        let table: toml::Table = file.parse().expect("toml");
        let mut overlay = toml::Table::new();
        overlay.insert(
            "provider".into(),
            toml::Value::Array(vec![toml::Value::Table(table)]),
        );
        toml::to_string(&overlay).expect("toml")
    }

    #[test]
    fn public_halves_carry_no_private_member() {
        let ec = generate_jwk(JwtAlgorithm::ES256, "k").expect("key");
        let public = public_jwk(&ec).expect("public");
        assert_eq!(
            public
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>()),
            Some(
                ["alg", "crv", "kid", "kty", "use", "x", "y"]
                    .map(String::from)
                    .to_vec()
            )
        );
        assert!(public_jwk(&json!({"kty": "oct", "kid": "k", "k": "AA"})).is_none());
        assert!(
            public_jwk(&json!({"kty": "EC", "x": "AA"})).is_none(),
            "no kid"
        );
    }

    /// GIVEN the key server with the development secrets the stack seeds WHEN the CLI
    /// mints Gmail's and Plaid's tokens THEN shared's HTTP key source fetches the keys
    /// from it exactly as the ingress does and shared's verifier accepts the tokens; a
    /// token from another key under the same `kid` is refused, and Plaid's endpoint
    /// answers Plaid's errors for unknown credentials and key ids.
    #[tokio::test]
    async fn cli_tokens_verify_against_the_served_keys() {
        let server = KeyServer::bind().await.expect("bound");
        let base = server.base_url().to_owned();
        let overlay = local_overlay(&repo_root(), &base, None).expect("overlay");
        let catalog: &'static Catalog = Box::leak(Box::new(
            Catalog::embedded()
                .expect("catalog")
                .with_endpoint_rules(junction_catalog::EndpointRules::LoopbackHttpForTests)
                .with_overlay("o", &overlay.text)
                .expect("valid"),
        ));
        let keys = tokio::task::spawn_blocking(DevelopmentKeys::generate)
            .await
            .expect("joined")
            .expect("keys");
        let local = LocalJwt {
            keys,
            base_url: base.clone(),
            served: overlay.served.clone(),
        };
        let secrets = Arc::new(InMemorySecretSource::default());
        let mut signers = BTreeMap::new();
        for id in ["gmail", "plaid"] {
            let provider = catalog.get(id).expect("provider");
            assert!(local.serves(provider), "{id}");
            let created = crate::dev_secrets::development_secret(provider, Some(&local)).expect(id);
            secrets.put(
                format!("junction/webhooks/{id}"),
                crate::dev_secrets::secret_document(&created).to_string(),
            );
            let key = created.signing_key.clone().expect("a private key");
            signers.insert(
                id,
                (
                    TokenSigner::document(&key, &created.jwt_claims).expect("doc"),
                    created,
                ),
            );
        }
        let task = server.serve(secrets, "junction".into(), overlay.served.clone());
        let cache = KeySetCache::new(Arc::new(HttpKeySetSource::new()));
        let now = OffsetDateTime::now_utc();
        let body = br#"{"message":{"data":"e30=","messageId":"1"}}"#;

        // Gmail: the JWKS.
        let gmail = catalog.get("gmail").expect("gmail");
        let rule = gmail
            .verification()
            .and_then(|v| v.jwt.as_ref())
            .expect("rule");
        let (document, created) = &signers["gmail"];
        let signer = TokenSigner::parse(document).expect("signer");
        let token = signer.mint(rule, body, now).expect("minted");
        let set = cache
            .keys_for(&rule.jwks_url, Some(signer.key_id()), now)
            .await
            .expect("fetched the JWKS");
        assert_eq!(
            verify_jwt(rule, &token, body, &set, &created.jwt_claims, now),
            Ok(())
        );
        let forged = impostor(signer.algorithm(), signer.key_id(), &created.jwt_claims)
            .mint(rule, body, now)
            .expect("minted");
        assert_eq!(
            verify_jwt(rule, &forged, body, &set, &created.jwt_claims, now),
            Err(junction_webhooks::VerifyError::SignatureMismatch)
        );

        // Plaid: the credentialed key endpoint.
        let plaid = catalog.get("plaid").expect("plaid");
        let rule = plaid
            .verification()
            .and_then(|v| v.jwt.as_ref())
            .expect("rule");
        let (document, created) = &signers["plaid"];
        let signer = TokenSigner::parse(document).expect("signer");
        let token = signer.mint(rule, body, now).expect("minted");
        let credentials =
            ApiCredentials::parse(&SigningSecret::new(created.signing_secret.clone()))
                .expect("creds");
        let fetched = cache
            .key_by_id(&rule.jwks_url, &credentials, signer.key_id(), now)
            .await
            .expect("fetched the key");
        assert!(!fetched.expired);
        let set = junction_webhooks::jwt::JwkSet {
            keys: vec![fetched.key.clone()],
        };
        assert_eq!(
            verify_jwt(rule, &token, body, &set, &BTreeMap::new(), now),
            Ok(())
        );
        let forged = impostor(signer.algorithm(), signer.key_id(), &BTreeMap::new())
            .mint(rule, body, now)
            .expect("minted");
        assert_eq!(
            verify_jwt(rule, &forged, body, &set, &BTreeMap::new(), now),
            Err(junction_webhooks::VerifyError::SignatureMismatch)
        );

        // Plaid's errors, as its API answers them.
        let http = reqwest::Client::new();
        let ask = |request: Value| {
            let http = http.clone();
            let url = rule.jwks_url.clone();
            async move {
                let response = http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(request.to_string())
                    .send()
                    .await
                    .expect("answered");
                let status = response.status().as_u16();
                let body = response.bytes().await.expect("a body");
                (
                    status,
                    serde_json::from_slice::<Value>(&body).expect("JSON"),
                )
            }
        };
        let (client_id, secret) = created.signing_secret.split_once(':').expect("id:secret");
        let (status, answer) =
            ask(json!({"client_id": client_id, "secret": secret, "key_id": signer.key_id()})).await;
        assert_eq!(status, 200);
        assert_eq!(answer["key"]["expired_at"], Value::Null);
        assert!(answer["key"].get("d").is_none(), "never the private key");
        assert!(answer["key"]["created_at"].is_i64() && answer["request_id"].is_string());
        let (status, answer) =
            ask(json!({"client_id": client_id, "secret": "wrong", "key_id": signer.key_id()}))
                .await;
        assert_eq!(
            (status, answer["error_code"].as_str()),
            (400, Some("INVALID_API_KEYS"))
        );
        assert_eq!(answer["error_type"], "INVALID_INPUT");
        let (status, answer) =
            ask(json!({"client_id": "someone", "secret": secret, "key_id": signer.key_id()})).await;
        assert_eq!(
            (status, answer["error_code"].as_str()),
            (400, Some("INVALID_API_KEYS"))
        );
        let (status, answer) =
            ask(json!({"client_id": client_id, "secret": secret, "key_id": "bfbd5111-0000"})).await;
        assert_eq!(
            (status, answer["error_code"].as_str()),
            (400, Some("INVALID_WEBHOOK_VERIFICATION_KEY_ID"))
        );
        let (status, answer) = ask(json!({"client_id": client_id, "key_id": "k"})).await;
        assert_eq!(
            (status, answer["error_code"].as_str()),
            (400, Some("MISSING_FIELDS"))
        );
        let wrong_method = http.get(&rule.jwks_url).send().await.expect("answered");
        assert_eq!(wrong_method.status().as_u16(), 405);
        let elsewhere = http
            .get(format!("{base}/github/keys"))
            .send()
            .await
            .expect("answered");
        assert_eq!(elsewhere.status().as_u16(), 404);
        task.abort();
    }

    /// A signer with another key of the same algorithm under `kid`.
    fn impostor(
        algorithm: JwtAlgorithm,
        kid: &str,
        claims: &BTreeMap<String, String>,
    ) -> TokenSigner {
        let key = generate_jwk(algorithm, kid).expect("key");
        TokenSigner::parse(&TokenSigner::document(&key.to_string(), claims).expect("doc"))
            .expect("signer")
    }
}
