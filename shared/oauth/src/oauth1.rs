//! OAuth 1.0a connections (RFC 5849): the three-legged flow for providers with an
//! `[oauth1]` catalog section (Trello), request signing, and what the vault does for
//! such a connection (its grant for API calls, revocation at disconnect).
//!
//! The flow shares everything with OAuth 2.0 but the legs: `start` consumes the same
//! connect session, the callback the same single-use `state` bound to the same browser
//! cookie, and the tokens land in the same vault under the same KMS envelope and
//! encryption context (`tenant`, `provider`, `connection_id`). What differs:
//!
//! - Start asks the provider for temporary credentials (§2.1: a signed `POST` with
//!   `oauth_callback` = Junction's callback URL carrying its own `state`), keeps them in
//!   the pending authorization (server-side, as the PKCE verifier is kept; never in a
//!   URL), and sends the user to the authorize URL with `oauth_token`.
//! - The callback takes the state, checks that `oauth_token` is the one it was started
//!   with (in constant time) and that there is an `oauth_verifier`, and asks for token
//!   credentials (§2.3: signed with the temporary secret, carrying the verifier). The
//!   access token and its secret are sealed as one token set.
//! - There is no refresh: a token that expires, or is revoked, needs a reconnect.
//!
//! Signing is [`sign`]; API requests of a connection are signed, or carry the key and
//! token, as the catalog's `api_auth` says ([`OAuth1Grant`]).

mod flow;
pub mod sign;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::{sync::OnceLock, time::Duration};

use serde::{Deserialize, Serialize};

use junction_aws::crypto::SecretString;
use junction_catalog::{ApiAuth, OAuth1Revocation, OAuth1Spec};

use crate::{Connection, TokenVault, VaultError};
pub use sign::{ProtocolParams, SigningKeys, authorization_header, authorization_header_at};

/// The temporary credentials of a started authorization (RFC 5849 §2.1), kept with its
/// pending state: the token to compare with the callback's, and the secret, stored as
/// the PKCE verifier is (in the server-side state item that expires with it, never in a
/// URL or a cookie, redacted in logs). It is not KMS-sealed: the OAuth function may
/// only generate data keys for connections (`conn_*` contexts), never decrypt, and the
/// secret alone signs nothing without the consumer secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemporaryCredentials {
    pub token: String,
    #[serde(with = "junction_aws::crypto::stored")]
    pub secret: SecretString,
}

/// A provider's answer to a credentials request that Junction cannot use, or no answer.
#[derive(Debug, thiserror::Error)]
pub enum OAuth1Error {
    /// No answer (connect, timeout, transport): worth a retry.
    #[error("the provider's OAuth 1.0a endpoint did not answer")]
    Unreachable(#[source] reqwest::Error),
    /// The provider refused the request (a bad signature, an expired verifier).
    #[error("the provider refused the request with HTTP {0}")]
    Refused(u16),
    /// A 5xx: the provider's trouble, worth a retry.
    #[error("the provider failed with HTTP {0}")]
    ProviderFailed(u16),
    /// The answer lacks what RFC 5849 requires (`oauth_token`, `oauth_token_secret`,
    /// `oauth_callback_confirmed=true`).
    #[error("the provider's answer is not usable: {0}")]
    Malformed(&'static str),
}

impl OAuth1Error {
    /// The code a page shows (never transport text).
    pub fn code(&self) -> &'static str {
        match self {
            OAuth1Error::Unreachable(_) | OAuth1Error::ProviderFailed(_) => "provider_unavailable",
            OAuth1Error::Refused(_) => "access_denied",
            OAuth1Error::Malformed(_) => "server_error",
        }
    }

    fn is_transient(&self) -> bool {
        matches!(
            self,
            OAuth1Error::Unreachable(_) | OAuth1Error::ProviderFailed(_)
        )
    }
}

/// What an API request of an OAuth 1.0a connection is authenticated with: the consumer
/// credentials, the access token and its secret, and how the catalog says to use them.
#[derive(Debug, Clone)]
pub struct OAuth1Grant {
    pub keys: SigningKeys,
    pub api_auth: ApiAuth,
    /// Connection values kept for API calls.
    pub params: std::collections::BTreeMap<String, String>,
}

impl OAuth1Grant {
    /// Authenticates one request: for `signed`, the `Authorization` header value to send
    /// (`form` is the body's pairs when it is `application/x-www-form-urlencoded`);
    /// for `key_and_token`, the URL gains the two query parameters and no header is
    /// needed. The outbound client calls this for each request of such a connection.
    pub fn authenticate(
        &self,
        method: &str,
        url: &mut url::Url,
        form: &[(String, String)],
    ) -> Option<String> {
        match &self.api_auth {
            ApiAuth::Signed => Some(authorization_header(
                method,
                url,
                form,
                &self.keys,
                &ProtocolParams::default(),
            )),
            ApiAuth::KeyAndToken {
                key_param,
                token_param,
            } => {
                let token = self.keys.token.as_ref().map_or("", |(token, _)| token);
                url.query_pairs_mut()
                    .append_pair(key_param, &self.keys.consumer_key)
                    .append_pair(token_param, token);
                None
            }
        }
    }
}

/// One HTTP client for the three legs and revocation: a timeout on every call, no
/// redirects (a credentials endpoint that redirects is misconfigured, not followed).
fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default()
    })
}

/// The most of a credentials response read: a few form pairs.
const MAX_RESPONSE_BYTES: usize = 16 * 1024;

/// Sends a signed `POST` to a credentials endpoint and reads its form answer (§2.1,
/// §2.3: `application/x-www-form-urlencoded` with `oauth_token` and
/// `oauth_token_secret`).
async fn credentials_request(
    url: &str,
    keys: &SigningKeys,
    protocol: &ProtocolParams<'_>,
) -> Result<Vec<(String, String)>, OAuth1Error> {
    let parsed = url::Url::parse(url).map_err(|_| OAuth1Error::Malformed("endpoint URL"))?;
    let header = authorization_header("POST", &parsed, &[], keys, protocol);
    let response = http()
        .post(parsed)
        .header(http::header::AUTHORIZATION, header)
        .header(http::header::CONTENT_LENGTH, "0")
        .send()
        .await
        .map_err(|err| OAuth1Error::Unreachable(err.without_url()))?;
    let status = response.status();
    if status.is_server_error() {
        return Err(OAuth1Error::ProviderFailed(status.as_u16()));
    }
    if !status.is_success() {
        return Err(OAuth1Error::Refused(status.as_u16()));
    }
    // Capped while it is read (a declared length over the cap is refused unread), not
    // after the whole body is in memory.
    let body = junction_aws::response_body::read_capped(response, MAX_RESPONSE_BYTES)
        .await
        .map_err(|err| match err {
            junction_aws::response_body::BodyError::TooLarge { .. } => {
                OAuth1Error::Malformed("answer too large")
            }
            junction_aws::response_body::BodyError::Interrupted(err) => {
                OAuth1Error::Unreachable(err.without_url())
            }
        })?;
    Ok(form_urlencoded::parse(&body)
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect())
}

/// A token and its secret from a credentials answer.
fn token_pair(pairs: &[(String, String)]) -> Result<(String, SecretString), OAuth1Error> {
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .filter(|value| !value.is_empty())
    };
    let token = get("oauth_token").ok_or(OAuth1Error::Malformed("no oauth_token"))?;
    let secret =
        get("oauth_token_secret").ok_or(OAuth1Error::Malformed("no oauth_token_secret"))?;
    Ok((token.to_owned(), SecretString::new(secret)))
}

impl TokenVault {
    /// The consumer credentials (the same secret as an OAuth 2.0 client's: `client_id`
    /// is the consumer key, `client_secret` the consumer secret).
    pub(crate) async fn consumer_keys(&self, provider: &str) -> Result<SigningKeys, VaultError> {
        let credentials = self
            .credentials
            .credentials(provider)
            .await
            .map_err(|err| VaultError::unavailable("the client credentials", err))?;
        Ok(SigningKeys {
            consumer_key: credentials.client_id.clone(),
            consumer_secret: credentials.client_secret.clone(),
            token: None,
        })
    }

    /// What an API request of OAuth 1.0a connection `id` is authenticated with. A
    /// connection that needs a reconnect, or has no tokens, is refused as
    /// [`TokenVault::access_token`] refuses it.
    pub async fn oauth1_grant(&self, id: &str) -> Result<OAuth1Grant, VaultError> {
        let connection = self.connection(id).await?;
        self.oauth1_grant_of(connection).await
    }

    /// [`TokenVault::oauth1_grant`] of a connection already read.
    pub(crate) async fn oauth1_grant_of(
        &self,
        connection: Connection,
    ) -> Result<OAuth1Grant, VaultError> {
        if connection.state == crate::ConnectionState::NeedsReauth {
            return Err(VaultError::NeedsReauth(
                connection.last_error.unwrap_or_default(),
            ));
        }
        let spec = self.oauth1_spec(&connection.provider)?;
        let tokens = self.tokens(&connection).await?;
        let secret = tokens.token_secret.ok_or_else(|| {
            VaultError::Rejected("the sealed tokens have no OAuth 1.0a token secret".into())
        })?;
        let mut keys = self.consumer_keys(&connection.provider).await?;
        keys.token = Some((tokens.access_token.expose().to_owned(), secret));
        Ok(OAuth1Grant {
            keys,
            api_auth: spec.api_auth.clone(),
            params: connection.params,
        })
    }

    /// Sends an API request of an OAuth 1.0a connection, authenticated as its catalog
    /// entry says: `build` is the callers' OAuth 2.0 builder (the outbound client's, the
    /// proxy's, the pollers'), given a placeholder bearer token whose header is removed,
    /// then the request is signed (or gains the key and token parameters) as sent. There
    /// is no refresh: a 401 is the caller's to classify (OAuth 1.0a tokens do not expire;
    /// a revoked one needs a reconnect).
    pub(crate) async fn send_oauth1<F>(
        &self,
        connection: Connection,
        build: F,
    ) -> Result<reqwest::Response, VaultError>
    where
        F: Fn(&crate::AccessToken) -> reqwest::RequestBuilder,
    {
        let grant = self.oauth1_grant_of(connection).await?;
        let placeholder = crate::AccessToken {
            value: SecretString::new(String::new()),
            generation: 0,
            params: grant.params.clone(),
        };
        let (client, request) = build(&placeholder).build_split();
        let mut request = request.map_err(|err| VaultError::Unreachable {
            reason: crate::vault::UnreachableReason::of(&err),
            source: err.without_url(),
        })?;
        request.headers_mut().remove(reqwest::header::AUTHORIZATION);
        let form: Vec<(String, String)> = match (
            request.headers().get(reqwest::header::CONTENT_TYPE),
            request.body().and_then(reqwest::Body::as_bytes),
        ) {
            (Some(kind), Some(body))
                if kind
                    .as_bytes()
                    .starts_with(b"application/x-www-form-urlencoded") =>
            {
                url::form_urlencoded::parse(body).into_owned().collect()
            }
            _ => Vec::new(),
        };
        let method = request.method().as_str().to_owned();
        if let Some(header) = grant.authenticate(&method, request.url_mut(), &form) {
            let value = reqwest::header::HeaderValue::from_str(&header).map_err(|_| {
                VaultError::Rejected("the OAuth 1.0a header is not a header value".into())
            })?;
            request
                .headers_mut()
                .insert(reqwest::header::AUTHORIZATION, value);
        }
        client
            .execute(request)
            .await
            .map_err(|err| VaultError::Unreachable {
                reason: crate::vault::UnreachableReason::of(&err),
                // The URL may carry the token (Trello's key and token parameters).
                source: err.without_url(),
            })
    }

    pub(crate) fn oauth1_spec(&self, provider: &str) -> Result<&'static OAuth1Spec, VaultError> {
        self.catalog
            .get(provider)
            .and_then(|p| p.oauth1.as_ref())
            .ok_or_else(|| {
                VaultError::Rejected(format!("provider {provider} has no oauth1 section"))
            })
    }

    /// Ends an OAuth 1.0a grant at the provider as its `revocation` says. A token
    /// already gone (404) is done; a transient failure keeps the connection for a retry;
    /// a refusal (401, 403: the credentials or the catalog are wrong) keeps it too, for
    /// an operator (a forced disconnect deletes without revoking).
    pub(crate) async fn revoke_oauth1(&self, connection: &Connection) -> Result<(), VaultError> {
        let grant = self.oauth1_grant(&connection.id).await?;
        self.revoke_oauth1_grant(&connection.provider, &grant).await
    }

    /// Ends `grant` at `provider` (a connection's, or one the callback refused).
    pub(crate) async fn revoke_oauth1_grant(
        &self,
        provider: &str,
        grant: &OAuth1Grant,
    ) -> Result<(), VaultError> {
        let spec = self.oauth1_spec(provider)?;
        let OAuth1Revocation::DeleteToken { url } = &spec.revocation else {
            return Ok(());
        };
        let token = grant
            .keys
            .token
            .as_ref()
            .map_or("", |(token, _)| token.as_str());
        let filled = url.replace("{token}", &sign::percent_encode(token));
        let mut target = url::Url::parse(&filled)
            .map_err(|err| VaultError::Rejected(format!("revocation URL: {err}")))?;
        let header = grant.authenticate("DELETE", &mut target, &[]);
        let mut request = http().delete(target);
        if let Some(header) = header {
            request = request.header(http::header::AUTHORIZATION, header);
        }
        let response = request.send().await.map_err(|err| {
            VaultError::unavailable(
                "revoking the grant at the provider",
                OAuth1Error::Unreachable(err.without_url()),
            )
        })?;
        let status = response.status().as_u16();
        match status {
            200..=299 | 404 => Ok(()),
            500..=599 => Err(VaultError::unavailable(
                "revoking the grant at the provider",
                OAuth1Error::ProviderFailed(status),
            )),
            _ => Err(VaultError::Rejected(format!(
                "revocation refused with HTTP {status}"
            ))),
        }
    }
}
