//! Calls to a provider's OAuth endpoints: code exchange, refresh, revocation.
//!
//! One HTTP client, built once, with a connect and a total timeout on every call and no
//! redirects followed (a token endpoint that redirects is not trusted with credentials).
//! Responses are classified before anything is stored: an `error` member makes a
//! response an error whatever its status (GitHub and Slack answer errors with 200), a
//! 429, 5xx or timeout is transient and leaves the tokens alone, and only
//! `invalid_grant` or the catalog's re-auth codes mean the user must reconnect.

use std::{collections::BTreeMap, time::Duration};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::Mutex;

use junction_aws::crypto::SecretString;
use junction_aws::response_body::{BodyError, TOKEN_RESPONSE_CAP, read_capped};
use junction_aws::secrets::SecretSource;
use junction_catalog::{
    ClientAuth, EndpointRules, OAuthSpec, Revocation, RevokedToken, TokenRequestFormat,
};

use crate::vault::UnreachableReason;

/// The client's credentials for one provider (`<prefix>/oauth/<provider>`).
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: SecretString,
}

/// Why credentials could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("secret {0} does not exist: store client_id and client_secret there")]
    Missing(String),
    #[error("secret {name} is not a JSON object with string client_id and client_secret")]
    Malformed { name: String },
    #[error("secrets unavailable")]
    Unavailable(#[source] junction_aws::secrets::SecretError),
}

/// Where client credentials come from.
#[async_trait]
pub trait OAuthCredentials: Send + Sync + std::fmt::Debug {
    async fn credentials(&self, provider: &str) -> Result<ClientCredentials, CredentialsError>;
}

/// Credentials from Secrets Manager, `<prefix>/oauth/<provider>`, cached per process for
/// five minutes (a rotated secret is picked up within that).
#[derive(Debug)]
pub struct SecretCredentials<S> {
    source: S,
    prefix: String,
    cache: Mutex<BTreeMap<String, (std::time::Instant, ClientCredentials)>>,
}

impl<S: SecretSource> SecretCredentials<S> {
    pub fn new(source: S, prefix: impl Into<String>) -> Self {
        SecretCredentials {
            source,
            prefix: prefix.into(),
            cache: Mutex::new(BTreeMap::new()),
        }
    }
}

const CREDENTIALS_TTL: Duration = Duration::from_secs(300);

#[async_trait]
impl<S: SecretSource> OAuthCredentials for SecretCredentials<S> {
    async fn credentials(&self, provider: &str) -> Result<ClientCredentials, CredentialsError> {
        let mut cache = self.cache.lock().await;
        if let Some((at, credentials)) = cache.get(provider)
            && at.elapsed() < CREDENTIALS_TTL
        {
            return Ok(credentials.clone());
        }
        let name = format!("{}/oauth/{provider}", self.prefix);
        let text = self
            .source
            .secret_string(&name)
            .await
            .map_err(CredentialsError::Unavailable)?
            .ok_or_else(|| CredentialsError::Missing(name.clone()))?;
        // serde's message would quote the secret: only the secret's name is kept.
        let json: Value = serde_json::from_str(&text)
            .map_err(|_| CredentialsError::Malformed { name: name.clone() })?;
        let field = |key: &str| json.get(key).and_then(Value::as_str).map(str::to_owned);
        let (Some(client_id), Some(client_secret)) = (field("client_id"), field("client_secret"))
        else {
            return Err(CredentialsError::Malformed { name });
        };
        let credentials = ClientCredentials {
            client_id,
            client_secret: SecretString::new(client_secret),
        };
        cache.insert(
            provider.to_owned(),
            (std::time::Instant::now(), credentials.clone()),
        );
        Ok(credentials)
    }
}

/// A successful token response, reduced to what Junction keeps.
#[derive(Debug, Clone)]
pub struct TokenResponse {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    /// Seconds, as stated (`None` when the response has none).
    pub expires_in: Option<u64>,
    /// Granted scopes, when stated.
    pub scopes: Option<Vec<String>>,
    /// The account id at the catalog's pointer.
    pub account_id: Option<String>,
    /// The catalog's `response_params`.
    pub params: BTreeMap<String, String>,
    /// The OpenID Connect ID token, when the response has one (validated by the flow
    /// for discovered OpenID providers; never stored).
    pub id_token: Option<SecretString>,
}

/// A token-endpoint failure, classified. The text a variant carries is the provider's
/// (an OAuth `error` code, the status it answered); a failure of ours or of the
/// transport keeps its cause as the source, for the log line.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No whole answer (timeout, connection refused, the body broken off): transient,
    /// tokens untouched. The source is the transport error, its URL removed.
    #[error("token endpoint unreachable ({reason})")]
    Unreachable {
        reason: UnreachableReason,
        #[source]
        source: reqwest::Error,
    },
    /// Try again later; tokens untouched (429, 5xx, `temporarily_unavailable`): the
    /// status or the provider's code.
    #[error("transient token endpoint failure: {0}")]
    Transient(String),
    /// The grant is gone (`invalid_grant` or a catalog re-auth code): reconnect.
    #[error("grant no longer valid: {0}")]
    Reauth(String),
    /// The provider refused the request for another reason (`invalid_client`, a bad
    /// redirect URI), or answered no token response: a configuration problem, not the
    /// user's. The provider's code, or what it answered.
    #[error("token endpoint refused the request: {0}")]
    Rejected(String),
    /// The answer was larger than a token response can be: refused unread.
    #[error("token endpoint answer refused")]
    TooLarge(#[source] BodyError),
    /// The endpoint could not be filled in from the connection's parameters, or the URL
    /// it became is not one the rules allow: nothing was sent.
    #[error("token endpoint not usable")]
    Endpoint(#[source] FillError),
}

impl TokenError {
    /// Whether the same call may succeed later (tokens untouched meanwhile).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            TokenError::Unreachable { .. } | TokenError::Transient(_)
        )
    }
}

/// The HTTP side of OAuth.
#[derive(Debug, Clone)]
pub struct ProviderClient {
    http: reqwest::Client,
    /// What a filled-in endpoint must be ([`EndpointRules::check_filled`]).
    rules: EndpointRules,
}

/// Connect timeout and total timeout of every OAuth call.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const TOTAL_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for ProviderClient {
    fn default() -> Self {
        Self::new()
    }
}

impl ProviderClient {
    pub fn new() -> Self {
        let http = junction_aws::tls::http_client_builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(TOTAL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .user_agent("junction-oauth/1")
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        ProviderClient {
            http,
            rules: EndpointRules::Public,
        }
    }

    /// This client, calling only endpoints that pass `rules` (the catalog's).
    pub fn with_endpoint_rules(self, rules: EndpointRules) -> Self {
        ProviderClient { rules, ..self }
    }

    /// The authorization code grant (RFC 6749 §4.1.3), with the PKCE verifier.
    pub async fn exchange_code(
        &self,
        spec: &OAuthSpec,
        credentials: &ClientCredentials,
        params: &BTreeMap<String, String>,
        code: &str,
        redirect_uri: &str,
        verifier: Option<&SecretString>,
    ) -> Result<TokenResponse, TokenError> {
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", redirect_uri.to_owned()),
        ];
        if let Some(verifier) = verifier {
            form.push(("code_verifier", verifier.expose().to_owned()));
        }
        self.token_call(spec, credentials, params, form).await
    }

    /// The refresh token grant (RFC 6749 §6).
    pub async fn refresh(
        &self,
        spec: &OAuthSpec,
        credentials: &ClientCredentials,
        params: &BTreeMap<String, String>,
        refresh_token: &SecretString,
    ) -> Result<TokenResponse, TokenError> {
        let form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token.expose().to_owned()),
        ];
        self.token_call(spec, credentials, params, form).await
    }

    async fn token_call(
        &self,
        spec: &OAuthSpec,
        credentials: &ClientCredentials,
        params: &BTreeMap<String, String>,
        mut form: Vec<(&str, String)>,
    ) -> Result<TokenResponse, TokenError> {
        let url = fill(&spec.token_url, params, &credentials.client_id, self.rules)?;
        let mut request = self
            .http
            .post(url)
            .header(http::header::ACCEPT, "application/json");
        match spec.client_auth {
            ClientAuth::ClientSecretPost => {
                form.push(("client_id", credentials.client_id.clone()));
                form.push((
                    "client_secret",
                    credentials.client_secret.expose().to_owned(),
                ));
            }
            ClientAuth::ClientSecretBasic => {
                request = request.header(http::header::AUTHORIZATION, basic(credentials));
            }
            ClientAuth::SecretKeyBearer => {
                form.push(("client_id", credentials.client_id.clone()));
                request = request.bearer_auth(credentials.client_secret.expose());
            }
        }
        let request = match spec.token_request {
            TokenRequestFormat::Form => request
                .header(
                    http::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(encode_form(&form)),
            TokenRequestFormat::Json => {
                let body: serde_json::Map<String, Value> = form
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), Value::String(v.clone())))
                    .collect();
                request
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Value::Object(body).to_string())
            }
        };
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        let body = read_token_response(response).await?;
        classify(spec, status.as_u16(), &body)
    }

    /// Revokes the grant at the provider, in the catalog's style. A token the provider
    /// no longer knows counts as revoked.
    pub async fn revoke(
        &self,
        spec: &OAuthSpec,
        credentials: &ClientCredentials,
        params: &BTreeMap<String, String>,
        access_token: &SecretString,
        refresh_token: Option<&SecretString>,
        account_id: Option<&str>,
    ) -> Result<(), TokenError> {
        let request = match &spec.revocation {
            Revocation::None { .. } => return Ok(()),
            Revocation::Rfc7009 { url } => {
                let url = fill(url, params, &credentials.client_id, self.rules)?;
                let (token, hint) = match refresh_token {
                    Some(refresh) => (refresh, "refresh_token"),
                    None => (access_token, "access_token"),
                };
                let mut form = vec![
                    ("token", token.expose().to_owned()),
                    ("token_type_hint", hint.to_owned()),
                ];
                let mut request = self.http.post(&url);
                match spec.client_auth {
                    ClientAuth::ClientSecretBasic => {
                        request = request.header(http::header::AUTHORIZATION, basic(credentials));
                    }
                    ClientAuth::ClientSecretPost | ClientAuth::SecretKeyBearer => {
                        form.push(("client_id", credentials.client_id.clone()));
                        form.push((
                            "client_secret",
                            credentials.client_secret.expose().to_owned(),
                        ));
                    }
                }
                request
                    .header(
                        http::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(encode_form(&form))
            }
            Revocation::GithubGrant { url } => {
                let url = fill(url, params, &credentials.client_id, self.rules)?;
                let body = serde_json::json!({ "access_token": access_token.expose() });
                self.http
                    .delete(&url)
                    .header(http::header::AUTHORIZATION, basic(credentials))
                    .header(http::header::ACCEPT, "application/vnd.github+json")
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(body.to_string())
            }
            Revocation::SlackAuthRevoke { url } => {
                let url = fill(url, params, &credentials.client_id, self.rules)?;
                self.http.post(&url).bearer_auth(access_token.expose())
            }
            Revocation::StripeDeauthorize { url } => {
                let url = fill(url, params, &credentials.client_id, self.rules)?;
                let form = vec![
                    ("client_id", credentials.client_id.clone()),
                    ("stripe_user_id", account_id.unwrap_or_default().to_owned()),
                ];
                self.http
                    .post(&url)
                    .bearer_auth(credentials.client_secret.expose())
                    .header(
                        http::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(encode_form(&form))
            }
            Revocation::ShopifyUninstall { url } => {
                let url = fill(url, params, &credentials.client_id, self.rules)?;
                self.http
                    .delete(&url)
                    .header("X-Shopify-Access-Token", access_token.expose())
            }
            Revocation::JsonToken {
                url,
                token,
                headers,
            } => {
                let url = fill(url, params, &credentials.client_id, self.rules)?;
                let token = match (token, refresh_token) {
                    (RevokedToken::Refresh, Some(refresh)) => refresh,
                    _ => access_token,
                };
                let body = serde_json::json!({ "token": token.expose() });
                let mut request = self
                    .http
                    .post(&url)
                    .header(http::header::AUTHORIZATION, basic(credentials))
                    .header(http::header::ACCEPT, "application/json")
                    .header(http::header::CONTENT_TYPE, "application/json");
                for (name, value) in headers {
                    request = request.header(name.as_str(), value.as_str());
                }
                request.body(body.to_string())
            }
        };
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status().as_u16();
        let body = read_token_response(response).await?;
        let error = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|json| json.get("error").and_then(Value::as_str).map(str::to_owned));
        match (status, error.as_deref()) {
            (429, _) | (500..=599, _) => Err(TokenError::Transient(format!(
                "revocation answered {status}"
            ))),
            // Already invalid at the provider: nothing left to revoke.
            (_, Some("invalid_token" | "token_revoked" | "invalid_auth" | "account_inactive")) => {
                Ok(())
            }
            // A 2xx is what RFC 7009 §2.2 answers, known token or not. A 404 (wrong URL)
            // or a bare 401 (the client's credentials refused) revoked nothing.
            (200..=299, None) => Ok(()),
            (_, Some(code)) => Err(TokenError::Rejected(code.to_owned())),
            _ => Err(TokenError::Rejected(format!(
                "revocation answered {status}"
            ))),
        }
    }
}

fn basic(credentials: &ClientCredentials) -> String {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    // RFC 6749 §2.3.1: the id and secret are form-urlencoded before Basic encoding.
    let encode =
        |value: &str| form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        STANDARD.encode(format!(
            "{}:{}",
            encode(&credentials.client_id),
            encode(credentials.client_secret.expose())
        ))
    )
}

fn encode_form(pairs: &[(&str, String)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        serializer.append_pair(key, value);
    }
    serializer.finish()
}

/// A transport failure, by kind, keeping the error (without its URL: a URL may carry
/// identifiers) as the cause.
fn transport_error(err: reqwest::Error) -> TokenError {
    TokenError::Unreachable {
        reason: UnreachableReason::of(&err),
        source: err.without_url(),
    }
}

/// Reads a token-endpoint or revocation answer, at most [`TOKEN_RESPONSE_CAP`] bytes.
async fn read_token_response(response: reqwest::Response) -> Result<bytes::Bytes, TokenError> {
    read_capped(response, TOKEN_RESPONSE_CAP)
        .await
        .map_err(|err| match err {
            BodyError::TooLarge { .. } => TokenError::TooLarge(err),
            BodyError::Interrupted(cause) => transport_error(cause),
        })
}

/// Why a URL template could not be filled in.
#[derive(Debug, thiserror::Error)]
pub enum FillError {
    #[error("missing URL parameter {0}")]
    Missing(String),
    #[error("the filled-in endpoint {0}")]
    Endpoint(#[source] junction_catalog::EndpointError),
}

impl From<FillError> for TokenError {
    fn from(err: FillError) -> Self {
        TokenError::Endpoint(err)
    }
}

/// Fills `{name}` placeholders from validated parameters (and `{client_id}`), then
/// checks the URL it became against `rules`, keeping the template's host shape.
pub(crate) fn fill(
    template: &str,
    params: &BTreeMap<String, String>,
    client_id: &str,
    rules: EndpointRules,
) -> Result<String, FillError> {
    let mut url = template.to_owned();
    for name in junction_catalog::placeholders(template) {
        let value = if name == "client_id" {
            client_id
        } else {
            params
                .get(name)
                .map(String::as_str)
                .ok_or_else(|| FillError::Missing(name.to_owned()))?
        };
        url = url.replace(&format!("{{{name}}}"), value);
    }
    rules
        .check_filled(template, &url)
        .map_err(FillError::Endpoint)?;
    Ok(url)
}

const TRANSIENT_CODES: [&str; 3] = ["temporarily_unavailable", "server_error", "slow_down"];

/// Classifies a token-endpoint answer.
fn classify(spec: &OAuthSpec, status: u16, body: &[u8]) -> Result<TokenResponse, TokenError> {
    if status == 429 || status >= 500 {
        return Err(TokenError::Transient(format!(
            "token endpoint answered {status}"
        )));
    }
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let error_code = json
        .as_ref()
        .and_then(|json| json.get("error"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let Some(code) = error_code {
        return Err(
            if code == "invalid_grant" || spec.reauth_errors.contains(&code) {
                TokenError::Reauth(code)
            } else if TRANSIENT_CODES.contains(&code.as_str()) {
                TokenError::Transient(code)
            } else {
                TokenError::Rejected(code)
            },
        );
    }
    let Some(json) = json.filter(|_| (200..300).contains(&status)) else {
        return Err(TokenError::Rejected(format!(
            "token endpoint answered {status} without a JSON token response"
        )));
    };
    let text = |pointer: &str| {
        json.pointer(pointer).and_then(|v| match v {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    };
    let access_token = text("/access_token")
        .ok_or_else(|| TokenError::Rejected("token response without access_token".into()))?;
    let expires_in = json.get("expires_in").and_then(|v| match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    });
    let scopes = text("/scope").map(|scope| {
        scope
            .split([' ', ','])
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    });
    Ok(TokenResponse {
        access_token: SecretString::new(access_token),
        refresh_token: text("/refresh_token").map(SecretString::new),
        id_token: text("/id_token").map(SecretString::new),
        expires_in,
        scopes,
        account_id: spec.account_id.as_deref().and_then(text),
        params: spec
            .response_params
            .iter()
            .filter_map(|(name, pointer)| text(pointer).map(|value| (name.clone(), value)))
            .collect(),
    })
}

/// Checks a Shopify callback's `hmac`: HMAC-SHA256 (hex) keyed with the client secret over
/// the query without `hmac` and `signature`, keys sorted, `k=v` joined by `&`
/// (Shopify/shopify-app-js lib/utils/hmac-validator.ts).
pub(crate) fn shopify_callback_hmac_ok(query: &[(String, String)], secret: &SecretString) -> bool {
    use hmac::{Hmac, Mac};
    let Some(given) = query.iter().find(|(k, _)| k == "hmac").map(|(_, v)| v) else {
        return false;
    };
    let Ok(given) = hex::decode(given) else {
        return false;
    };
    let mut pairs: Vec<&(String, String)> = query
        .iter()
        .filter(|(k, _)| k != "hmac" && k != "signature")
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        serializer.append_pair(key, value);
    }
    let message = serializer.finish().replace('+', "%20");
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.expose().as_bytes()) else {
        return false;
    };
    mac.update(message.as_bytes());
    mac.verify_slice(&given).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use junction_catalog::Catalog;

    fn spec(id: &str) -> OAuthSpec {
        Catalog::embedded()
            .expect("catalog")
            .get(id)
            .and_then(|p| p.oauth.clone())
            .expect("oauth spec")
    }

    fn credentials() -> ClientCredentials {
        ClientCredentials {
            client_id: "cid".to_owned(),
            client_secret: SecretString::new("csecret".to_owned()),
        }
    }

    fn local_client() -> ProviderClient {
        ProviderClient::new().with_endpoint_rules(EndpointRules::LoopbackHttpForTests)
    }

    /// A refresh of GitHub's spec with its token endpoint at `base`/token.
    async fn refresh_at(client: &ProviderClient, base: &str) -> Result<TokenResponse, TokenError> {
        let mut spec = spec("github");
        spec.token_url = format!("{base}/token");
        client
            .refresh(
                &spec,
                &credentials(),
                &BTreeMap::new(),
                &SecretString::new("rt".to_owned()),
            )
            .await
    }

    /// A loopback address nothing listens on: the port of a listener just closed.
    fn closed_loopback() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        drop(listener);
        format!("http://127.0.0.1:{port}")
    }

    /// A token endpoint that cannot be reached is a transient failure whose cause (the
    /// transport error down to the refused connection) survives into the log line's
    /// chain, without the URL.
    #[tokio::test]
    async fn an_unreachable_token_endpoint_keeps_the_transport_error_as_its_cause() {
        let base = closed_loopback();
        let err = refresh_at(&local_client(), &base)
            .await
            .expect_err("nothing listens");
        assert!(err.is_transient(), "{err:?}");
        assert!(
            matches!(
                err,
                TokenError::Unreachable {
                    reason: UnreachableReason::Connect,
                    ..
                }
            ),
            "{err:?}"
        );
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        let mut refused = None;
        while let Some(current) = cause {
            if let Some(io) = current.downcast_ref::<std::io::Error>() {
                refused = Some(io);
            }
            cause = current.source();
        }
        let refused = refused.expect("an io error in the chain");
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        let chain = junction_telemetry::error_chain(&err);
        assert!(
            chain.starts_with("token endpoint unreachable (connect): "),
            "{chain}"
        );
        assert!(chain.contains(&refused.to_string()), "{chain}");
        assert!(!chain.contains(&base), "no URL in the chain: {chain}");
    }

    /// The review's reproducer: a token endpoint answering 300 MB (it took the refresher
    /// to 331 MiB). The read stops at the cap, whether the length is declared or not.
    #[tokio::test]
    async fn a_300_mb_token_response_is_refused_at_the_cap() {
        for head in [
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 314572800\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n",
        ] {
            let base =
                junction_aws::response_body::testing::stream_answer(head, 300 * 1024 * 1024).await;
            let refused = refresh_at(&local_client(), &base).await;
            assert!(
                matches!(
                    &refused,
                    Err(TokenError::TooLarge(BodyError::TooLarge { .. }))
                ),
                "{refused:?}"
            );
        }
    }

    /// A client with the public rules refuses a loopback token endpoint before sending
    /// anything (the refresh token never leaves).
    #[tokio::test]
    async fn the_public_rules_send_nothing_to_loopback() {
        let base = junction_aws::response_body::testing::stream_answer(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n",
            2,
        )
        .await;
        let refused = refresh_at(&ProviderClient::new(), &base).await;
        assert!(
            matches!(&refused, Err(err @ TokenError::Endpoint(_)) if junction_telemetry::error_chain(err).contains("https")),
            "{refused:?}"
        );
    }

    /// A revocation is reported done only when the provider said so: a 2xx, or an error
    /// code meaning the token is already gone. A bare 401 (the client refused) or a 404
    /// (no such endpoint) revoked nothing.
    #[tokio::test]
    async fn only_a_real_revocation_is_reported_revoked() {
        let cases: [(&'static str, bool); 5] = [
            ("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", true),
            (
                "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 25\r\n\r\n{\"error\":\"invalid_token\"}",
                true,
            ),
            (
                "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n",
                false,
            ),
            (
                "HTTP/1.1 401 Unauthorized\r\ncontent-type: text/html\r\ncontent-length: 9\r\n\r\nForbidden",
                false,
            ),
            ("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n", false),
        ];
        for (head, revoked) in cases {
            let base = junction_aws::response_body::testing::stream_answer(head, 0).await;
            let mut spec = spec("github");
            spec.revocation = Revocation::Rfc7009 {
                url: format!("{base}/revoke"),
            };
            let outcome = local_client()
                .revoke(
                    &spec,
                    &credentials(),
                    &BTreeMap::new(),
                    &SecretString::new("at".to_owned()),
                    None,
                    None,
                )
                .await;
            assert_eq!(outcome.is_ok(), revoked, "{head}: {outcome:?}");
        }
    }

    /// Intuit's and Notion's revocation: a JSON body with the chosen token, HTTP Basic
    /// client credentials and the catalog's extra headers, as the built-in entries say.
    #[tokio::test]
    async fn a_json_token_revocation_sends_the_chosen_token_as_json_with_basic_auth() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let catalog = junction_catalog::Catalog::embedded().expect("catalog");
        for (provider, sent, header) in [
            ("intuit", "rt", None),
            ("notion", "at", Some(("notion-version", "2025-09-03"))),
        ] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let base = format!("http://{}", listener.local_addr().expect("addr"));
            let captured = tokio::spawn(async move {
                let (mut socket, _) = listener.accept().await.expect("accept");
                let mut request = Vec::new();
                let mut buffer = [0_u8; 4096];
                // Headers, then the body its content-length announces.
                loop {
                    let read = socket.read(&mut buffer).await.expect("read");
                    request.extend_from_slice(&buffer[..read]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|line| {
                                line.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|n| n.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length || read == 0 {
                            break;
                        }
                    }
                }
                socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await
                    .expect("answer");
                String::from_utf8(request).expect("text")
            });
            let mut spec = catalog
                .get(provider)
                .and_then(|p| p.oauth.clone())
                .expect("an [oauth] section");
            let Revocation::JsonToken { url, .. } = &mut spec.revocation else {
                panic!("{provider} revokes with a JSON token");
            };
            *url = format!("{base}/revoke");
            local_client()
                .revoke(
                    &spec,
                    &credentials(),
                    &BTreeMap::new(),
                    &SecretString::new("at".to_owned()),
                    Some(&SecretString::new("rt".to_owned())),
                    None,
                )
                .await
                .expect("revoked");
            let request = captured.await.expect("captured");
            let lower = request.to_ascii_lowercase();
            assert!(request.starts_with("POST /revoke "), "{request}");
            assert!(lower.contains("authorization: basic "), "{request}");
            assert!(
                lower.contains("content-type: application/json"),
                "{request}"
            );
            if let Some((name, value)) = header {
                assert!(lower.contains(&format!("{name}: {value}")), "{request}");
            }
            let body = &request[request.find("\r\n\r\n").expect("body") + 4..];
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(body).expect("JSON"),
                serde_json::json!({ "token": sent }),
                "{provider}"
            );
        }
    }

    #[test]
    fn errors_are_classified_whatever_the_status() {
        let github = spec("github");
        assert!(
            matches!(
                classify(&github, 200, br#"{"error":"bad_refresh_token"}"#),
                Err(TokenError::Reauth(code)) if code == "bad_refresh_token"
            ),
            "GitHub answers errors with 200"
        );
        let slack = spec("slack");
        assert!(matches!(
            classify(
                &slack,
                200,
                br#"{"ok":false,"error":"invalid_refresh_token"}"#
            ),
            Err(TokenError::Reauth(code)) if code == "invalid_refresh_token"
        ));
        assert!(matches!(
            classify(&slack, 400, br#"{"error":"invalid_grant"}"#),
            Err(TokenError::Reauth(code)) if code == "invalid_grant"
        ));
        assert!(matches!(
            classify(&github, 503, b"<html>down</html>"),
            Err(TokenError::Transient(_))
        ));
        assert!(matches!(
            classify(&github, 429, b""),
            Err(TokenError::Transient(_))
        ));
        assert!(matches!(
            classify(&github, 400, br#"{"error":"temporarily_unavailable"}"#),
            Err(TokenError::Transient(_))
        ));
        assert!(matches!(
            classify(&github, 401, br#"{"error":"invalid_client"}"#),
            Err(TokenError::Rejected(code)) if code == "invalid_client"
        ));
        assert!(matches!(
            classify(&github, 200, br#"{"token_type":"bearer"}"#),
            Err(TokenError::Rejected(_))
        ));
    }

    #[test]
    fn a_token_response_keeps_what_the_catalog_names() {
        let salesforce = spec("salesforce");
        let body = br#"{"access_token":"00D!AQ","refresh_token":"5Aep","instance_url":"https://acme.my.salesforce.com","id":"https://login.salesforce.com/id/00Dx/005x","issued_at":"1700000000000","token_type":"Bearer","scope":"api refresh_token"}"#;
        let response = classify(&salesforce, 200, body).expect("token response");
        assert_eq!(response.expires_in, None, "Salesforce states no lifetime");
        assert_eq!(
            response.params.get("instance_url").map(String::as_str),
            Some("https://acme.my.salesforce.com")
        );
        assert_eq!(
            response.account_id.as_deref(),
            Some("https://login.salesforce.com/id/00Dx/005x")
        );
        assert_eq!(
            response.scopes,
            Some(vec!["api".to_owned(), "refresh_token".to_owned()])
        );
        let slack = spec("slack");
        let body = br#"{"ok":true,"access_token":"xoxb-1","expires_in":"43200","scope":"channels:history,channels:read","team":{"id":"T123"}}"#;
        let response = classify(&slack, 200, body).expect("token response");
        assert_eq!(response.account_id.as_deref(), Some("T123"));
        assert_eq!(response.expires_in, Some(43_200));
    }

    #[test]
    fn placeholders_are_filled_from_validated_parameters_only() {
        let public = EndpointRules::Public;
        let params = BTreeMap::from([("shop".to_owned(), "acme.myshopify.com".to_owned())]);
        assert_eq!(
            fill(
                "https://{shop}/admin/oauth/access_token",
                &params,
                "cid",
                public
            )
            .expect("filled"),
            "https://acme.myshopify.com/admin/oauth/access_token"
        );
        assert_eq!(
            fill(
                "https://api.github.com/applications/{client_id}/grant",
                &params,
                "Iv1.abc",
                public
            )
            .expect("filled"),
            "https://api.github.com/applications/Iv1.abc/grant"
        );
        assert!(fill("https://{tenant}/x", &params, "cid", public).is_err());
    }

    /// A value that passed a loose overlay pattern still cannot move the host, smuggle
    /// user-info or reach an internal address once filled in.
    #[test]
    fn a_filled_endpoint_must_keep_its_host_shape_and_be_public() {
        let public = EndpointRules::Public;
        let value = |v: &str| BTreeMap::from([("host".to_owned(), v.to_owned())]);
        for hostile in [
            "login.acme.example@evil.com",
            "169.254.169.254",
            "127.0.0.1:@[::1]:8080",
        ] {
            assert!(
                fill("https://{host}/token", &value(hostile), "cid", public).is_err(),
                "{hostile}"
            );
        }
        for hostile in ["evil.com/x", "a.b", "evil.com#"] {
            assert!(
                fill(
                    "https://{host}.acme.example/token",
                    &value(hostile),
                    "cid",
                    public
                )
                .is_err(),
                "{hostile}"
            );
        }
        assert!(
            fill(
                "https://{host}.acme.example/token",
                &value("eu"),
                "cid",
                public
            )
            .is_ok()
        );
        // The client id is filled too and checked the same way.
        assert!(
            fill(
                "https://api.github.com/applications/{client_id}/grant",
                &BTreeMap::new(),
                "x@evil.com/",
                public
            )
            .is_ok_and(|url| url.starts_with("https://api.github.com/"))
        );
    }

    /// The example from Shopify's OAuth docs ("Verification", shopify.dev/tutorials/
    /// authenticate-with-oauth), as the Shopify client libraries test it (gopify
    /// `TestVerifyRequest`, the Elixir `Shopify.OAuth.verify_hmac` docs): query
    /// `code=0907a61c0c8d55e99db179b68161bc00&hmac=700e2dad…c4bf&shop=some-shop.myshopify.com&state=0.6784241404160823&timestamp=1337178173`
    /// with the secret `hush`.
    #[test]
    fn shopify_callback_hmac_matches_shopifys_example() {
        let query: Vec<(String, String)> = [
            ("code", "0907a61c0c8d55e99db179b68161bc00"),
            (
                "hmac",
                "700e2dadb827fcc8609e9d5ce208b2e9cdaab9df07390d2cbca10d7c328fc4bf",
            ),
            ("shop", "some-shop.myshopify.com"),
            ("state", "0.6784241404160823"),
            ("timestamp", "1337178173"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert!(shopify_callback_hmac_ok(&query, &SecretString::new("hush")));
        assert!(!shopify_callback_hmac_ok(
            &query,
            &SecretString::new("hush!")
        ));
        let mut tampered = query.clone();
        tampered[0].1.push('0');
        assert!(!shopify_callback_hmac_ok(
            &tampered,
            &SecretString::new("hush")
        ));
    }
}
