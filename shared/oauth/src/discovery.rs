//! Providers described by their issuer alone (`[oauth_discovery]` in the catalog).
//!
//! The issuer's metadata (OpenID Connect Discovery 1.0 §4, RFC 8414 §3) is fetched with
//! a timeout, checked (its `issuer` must equal the configured one exactly, every
//! endpoint must be https) and turned into the same [`OAuthSpec`] a built-in entry
//! has, so the connect flow, the vault and revocation have one code path:
//! - PKCE S256 when `code_challenge_methods_supported` lists it;
//! - `client_secret_basic` when the token endpoint supports it (RFC 8414's default
//!   when the list is absent), else `client_secret_post`;
//! - RFC 7009 revocation at `revocation_endpoint` when there is one;
//! - with the `openid` scope, an [`OpenIdRule`]: the ID token of the code exchange is
//!   validated (JWKS signature, `iss`, `aud`/`azp`, `exp`, `nonce`) before anything
//!   is stored;
//! - when the metadata says so, the callback's `iss` must be the issuer (RFC 9207).
//!
//! Resolved specs are cached per issuer (the response's `max-age`, else an hour, a day
//! at most); when a refetch fails, the last good metadata keeps being used.

use std::{collections::HashMap, sync::Arc, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL};
use serde::Deserialize;
use time::OffsetDateTime;
use tokio::sync::Mutex;

use junction_aws::response_body::{BodyError, METADATA_CAP, read_capped};
use junction_catalog::{
    ClientAuth, DiscoverySpec, EndpointRules, JwtAlgorithm, JwtRule, OAuthSpec, OpenIdRule,
    Revocation, TokenRequestFormat,
};
use junction_webhooks::VerifyError;
use junction_webhooks::jwt::{HttpKeySetSource, KeySetCache, KeySetError, jwt_kid, verify_jwt};

use crate::vault::UnreachableReason;

/// The metadata members Junction reads; others are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct IssuerMetadata {
    pub issuer: String,
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    #[serde(default)]
    pub token_endpoint: Option<String>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    #[serde(default)]
    pub code_challenge_methods_supported: Vec<String>,
    /// Absent means `client_secret_basic` only (RFC 8414 §2).
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// Absent means RS256 (OpenID Connect Discovery §3 requires RS256 support).
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Option<Vec<String>>,
    /// RFC 9207: the authorization response carries `iss`.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
}

/// Why a discovered provider cannot be used right now. `reason` says where and what
/// (the document's URL and its status, or what is wrong with it); an error that caused
/// it is the source (the transport's without its URL, the JSON parser's).
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The metadata could not be fetched (timeout, unreachable, 5xx): retry later.
    #[error("the metadata of {issuer} could not be fetched: {reason}")]
    Unavailable {
        issuer: String,
        reason: String,
        #[source]
        source: Option<reqwest::Error>,
    },
    /// The metadata is there but unusable: an operator must look.
    #[error("the metadata of {issuer} is unusable: {reason}")]
    Invalid {
        issuer: String,
        reason: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// Why an ID token was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdTokenError {
    #[error("the token response has no id_token")]
    Missing,
    #[error("the ID token's alg is not one the issuer publishes and Junction verifies")]
    Algorithm,
    #[error("the ID token does not verify: {}", .0.reason())]
    Invalid(VerifyError),
    #[error("the ID token names several audiences but its azp is not this client")]
    AuthorizedParty,
    #[error("the ID token has no subject")]
    Subject,
    #[error("the issuer's keys could not be fetched")]
    KeysUnavailable(#[source] KeySetError),
}

/// The metadata document locations for `issuer`, most likely first: OpenID Connect
/// appends `/.well-known/openid-configuration` to the issuer (Discovery §4); RFC 8414
/// inserts `/.well-known/oauth-authorization-server` between host and path (§3.1).
pub fn metadata_urls(issuer: &str, openid: bool) -> Vec<String> {
    let trimmed = issuer.trim_end_matches('/');
    let oidc = format!("{trimmed}/.well-known/openid-configuration");
    let rfc8414 = match url::Url::parse(trimmed) {
        Ok(url) => {
            let path = url.path().trim_end_matches('/');
            format!(
                "{}/.well-known/oauth-authorization-server{path}",
                url.origin().ascii_serialization()
            )
        }
        Err(_) => format!("{trimmed}/.well-known/oauth-authorization-server"),
    };
    if openid {
        vec![oidc, rfc8414]
    } else {
        vec![rfc8414, oidc]
    }
}

/// Turns an entry and its issuer's metadata into the spec the flow and vault use.
/// Returns the reason when the metadata cannot be used.
pub fn resolve(
    entry: &DiscoverySpec,
    metadata: &IssuerMetadata,
    rules: EndpointRules,
) -> Result<OAuthSpec, String> {
    if metadata.issuer != entry.issuer {
        return Err(format!(
            "it names the issuer {:?}, not {:?} (a mix-up an issuer check exists to stop)",
            metadata.issuer, entry.issuer
        ));
    }
    let endpoint = |name: &str, value: &Option<String>| -> Result<String, String> {
        let value = value.clone().ok_or_else(|| format!("it has no {name}"))?;
        rules
            .check(&value)
            .map_err(|err| format!("its {name} {err}"))?;
        // Junction fills `{name}` placeholders in endpoints; an issuer's are not templates.
        if value.contains(['{', '}']) {
            return Err(format!("its {name} contains a {{placeholder}}"));
        }
        Ok(value)
    };
    let authorize_url = endpoint("authorization_endpoint", &metadata.authorization_endpoint)?;
    let token_url = endpoint("token_endpoint", &metadata.token_endpoint)?;
    let revocation = match &metadata.revocation_endpoint {
        Some(_) => Revocation::Rfc7009 {
            url: endpoint("revocation_endpoint", &metadata.revocation_endpoint)?,
        },
        None => Revocation::None {
            reason: "the issuer's metadata lists no revocation_endpoint".to_owned(),
        },
    };
    let client_auth = match &metadata.token_endpoint_auth_methods_supported {
        None => ClientAuth::ClientSecretBasic,
        Some(methods) if methods.iter().any(|m| m == "client_secret_basic") => {
            ClientAuth::ClientSecretBasic
        }
        Some(methods) if methods.iter().any(|m| m == "client_secret_post") => {
            ClientAuth::ClientSecretPost
        }
        Some(methods) => {
            return Err(format!(
                "its token endpoint takes none of client_secret_basic, client_secret_post (it lists {})",
                methods.join(", ")
            ));
        }
    };
    let openid = if entry.is_openid() {
        let jwks_uri = endpoint("jwks_uri", &metadata.jwks_uri)?;
        let published = metadata
            .id_token_signing_alg_values_supported
            .clone()
            .unwrap_or_else(|| vec!["RS256".to_owned()]);
        let algorithms: Vec<JwtAlgorithm> = published
            .iter()
            .filter_map(|name| JwtAlgorithm::from_name(name))
            .collect();
        if algorithms.is_empty() {
            return Err(format!(
                "it signs ID tokens with none of RS256, ES256 (it lists {})",
                published.join(", ")
            ));
        }
        Some(OpenIdRule {
            issuer: entry.issuer.clone(),
            jwks_uri,
            algorithms,
        })
    } else {
        None
    };
    Ok(OAuthSpec {
        authorize_url,
        token_url,
        scopes: entry.scopes.clone(),
        scope_separator: " ".to_owned(),
        scope_param: "scope".to_owned(),
        pkce: metadata
            .code_challenge_methods_supported
            .iter()
            .any(|m| m == "S256"),
        client_auth,
        token_request: TokenRequestFormat::Form,
        authorize_params: entry.authorize_params.clone(),
        lifetime_margin_seconds: entry.lifetime_margin_seconds,
        default_lifetime_seconds: entry.default_lifetime_seconds,
        refresh_token_rotation: true,
        reauth_errors: entry.reauth_errors.clone(),
        account_id: None,
        response_params: Default::default(),
        url_parameters: Default::default(),
        callback_signature: None,
        revocation,
        notes: entry.notes.clone(),
        openid,
        callback_issuer: metadata
            .authorization_response_iss_parameter_supported
            .then(|| entry.issuer.clone()),
    })
}

/// Validates an ID token (OpenID Connect Core §3.1.3.7) against already fetched keys
/// and returns its subject: the `alg` must be one the rule allows, the signature must
/// verify with the issuer's key, `iss` must be the issuer, `aud` must contain the
/// client id (and `azp` must be the client when there are several audiences), `exp`
/// must not have passed and `nonce` must be the one sent with the authorization request.
pub fn check_id_token(
    rule: &OpenIdRule,
    token: &str,
    keys: &junction_webhooks::jwt::JwkSet,
    client_id: &str,
    nonce: &str,
    now: OffsetDateTime,
) -> Result<String, IdTokenError> {
    let algorithm = token
        .split('.')
        .next()
        .and_then(|header| BASE64URL.decode(header).ok())
        .and_then(|header| serde_json::from_slice::<serde_json::Value>(&header).ok())
        .and_then(|header| {
            header
                .get("alg")
                .and_then(serde_json::Value::as_str)
                .and_then(JwtAlgorithm::from_name)
        })
        .filter(|algorithm| rule.algorithms.contains(algorithm))
        .ok_or(IdTokenError::Algorithm)?;
    let jwt_rule = JwtRule {
        algorithm,
        jwks_url: rule.jwks_uri.clone(),
        issuers: vec![rule.issuer.clone()],
        configured_claims: vec!["aud".to_owned(), "nonce".to_owned()],
        true_claims: Vec::new(),
        max_age_seconds: None,
        body_hash_claim: None,
    };
    let expected = [
        ("aud".to_owned(), client_id.to_owned()),
        ("nonce".to_owned(), nonce.to_owned()),
    ]
    .into_iter()
    .collect();
    verify_jwt(&jwt_rule, token, b"", keys, &expected, now).map_err(IdTokenError::Invalid)?;
    // Verified: the claims can be read.
    let claims: serde_json::Value = token
        .split('.')
        .nth(1)
        .and_then(|claims| BASE64URL.decode(claims).ok())
        .and_then(|claims| serde_json::from_slice(&claims).ok())
        .ok_or(IdTokenError::Invalid(VerifyError::MalformedSignature))?;
    let several_audiences = claims
        .get("aud")
        .and_then(serde_json::Value::as_array)
        .is_some_and(|audiences| audiences.len() > 1);
    if several_audiences && claims.get("azp").and_then(serde_json::Value::as_str) != Some(client_id)
    {
        return Err(IdTokenError::AuthorizedParty);
    }
    claims
        .get("sub")
        .and_then(serde_json::Value::as_str)
        .filter(|sub| !sub.is_empty())
        .map(str::to_owned)
        .ok_or(IdTokenError::Subject)
}

#[derive(Debug)]
struct Cached {
    spec: Arc<OAuthSpec>,
    fresh_until: std::time::Instant,
}

/// Fetches, checks and caches issuer metadata and keys. Built once per process.
#[derive(Debug)]
pub struct Discovery {
    http: reqwest::Client,
    /// The endpoints the issuers' metadata may name (the catalog's rules).
    rules: EndpointRules,
    specs: Mutex<HashMap<String, Cached>>,
    keys: KeySetCache,
}

const DEFAULT_TTL: Duration = Duration::from_secs(3_600);
const MIN_TTL: Duration = Duration::from_secs(60);
const MAX_TTL: Duration = Duration::from_secs(86_400);

impl Default for Discovery {
    fn default() -> Self {
        Self::new(EndpointRules::Public)
    }
}

impl Discovery {
    /// A 2 s connect and 5 s total timeout on every metadata and key fetch; redirects
    /// are not followed (the metadata's location is part of what the issuer vouches for).
    /// Every endpoint the metadata names must pass `rules` (the catalog's).
    pub fn new(rules: EndpointRules) -> Self {
        let http = junction_aws::tls::http_client_builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .user_agent("junction-discovery/1")
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let keys = KeySetCache::new(Arc::new(HttpKeySetSource::new()));
        Discovery {
            http,
            rules,
            specs: Mutex::new(HashMap::new()),
            keys,
        }
    }

    /// The resolved spec of a discovered provider: cached, else fetched. When a refetch
    /// fails and an older spec is cached, the older spec is used (and the failure logged).
    pub async fn spec(&self, entry: &DiscoverySpec) -> Result<Arc<OAuthSpec>, DiscoveryError> {
        let mut specs = self.specs.lock().await;
        let now = std::time::Instant::now();
        if let Some(cached) = specs.get(&entry.issuer)
            && now < cached.fresh_until
        {
            return Ok(cached.spec.clone());
        }
        match self.fetch(entry).await {
            Ok((spec, ttl)) => {
                let spec = Arc::new(spec);
                specs.insert(
                    entry.issuer.clone(),
                    Cached {
                        spec: spec.clone(),
                        fresh_until: now + ttl,
                    },
                );
                Ok(spec)
            }
            Err(err) => match specs.get(&entry.issuer) {
                Some(stale) => {
                    tracing::warn!(issuer = %entry.issuer, error = %super::error_chain(&err), "issuer metadata refetch failed; using the cached metadata");
                    Ok(stale.spec.clone())
                }
                None => Err(err),
            },
        }
    }

    async fn fetch(&self, entry: &DiscoverySpec) -> Result<(OAuthSpec, Duration), DiscoveryError> {
        let unavailable =
            |reason: String, source: Option<reqwest::Error>| DiscoveryError::Unavailable {
                issuer: entry.issuer.clone(),
                reason,
                source: source.map(reqwest::Error::without_url),
            };
        let invalid = |reason: String| DiscoveryError::Invalid {
            issuer: entry.issuer.clone(),
            reason,
            source: None,
        };
        let invalid_because = |reason: String, source: Box<dyn std::error::Error + Send + Sync>| {
            DiscoveryError::Invalid {
                issuer: entry.issuer.clone(),
                reason,
                source: Some(source),
            }
        };
        let mut last = None;
        for url in metadata_urls(&entry.issuer, entry.is_openid()) {
            let response = self
                .http
                .get(&url)
                .header(http::header::ACCEPT, "application/json")
                .send()
                .await
                .map_err(|err| {
                    let reason = match UnreachableReason::of(&err) {
                        UnreachableReason::Timeout => format!("{url} timed out"),
                        UnreachableReason::Connect | UnreachableReason::Transport => {
                            format!("{url} unreachable")
                        }
                    };
                    unavailable(reason, Some(err))
                })?;
            let status = response.status().as_u16();
            if status == 404 {
                last = Some(invalid(format!("{url} answered 404")));
                continue;
            }
            if status == 429 || status >= 500 {
                return Err(unavailable(format!("{url} answered {status}"), None));
            }
            if !(200..300).contains(&status) {
                return Err(invalid(format!("{url} answered {status}")));
            }
            let ttl = response
                .headers()
                .get(http::header::CACHE_CONTROL)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| {
                    value.split(',').find_map(|directive| {
                        directive.trim().strip_prefix("max-age=")?.parse().ok()
                    })
                })
                .map_or(DEFAULT_TTL, Duration::from_secs)
                .clamp(MIN_TTL, MAX_TTL);
            let body = read_capped(response, METADATA_CAP)
                .await
                .map_err(|err| match err {
                    BodyError::TooLarge { .. } => {
                        invalid_because(format!("{url} is too large"), Box::new(err))
                    }
                    BodyError::Interrupted(cause) => {
                        unavailable(format!("{url} broke off"), Some(cause))
                    }
                })?;
            let metadata: IssuerMetadata = serde_json::from_slice(&body).map_err(|err| {
                invalid_because(format!("{url} is not issuer metadata"), Box::new(err))
            })?;
            let spec = resolve(entry, &metadata, self.rules).map_err(invalid)?;
            return Ok((spec, ttl));
        }
        Err(last.unwrap_or_else(|| invalid("no metadata location".to_owned())))
    }

    /// Validates an ID token with the issuer's current keys ([`check_id_token`]).
    pub async fn validate_id_token(
        &self,
        rule: &OpenIdRule,
        token: &str,
        client_id: &str,
        nonce: &str,
        now: OffsetDateTime,
    ) -> Result<String, IdTokenError> {
        let kid = jwt_kid(token);
        let keys = self
            .keys
            .keys_for(&rule.jwks_uri, kid.as_deref(), now)
            .await
            .map_err(IdTokenError::KeysUnavailable)?;
        check_id_token(rule, token, &keys, client_id, nonce, now)
    }
}

#[cfg(test)]
#[path = "discovery_tests.rs"]
mod tests;
