//! The connect flow: `GET /oauth/{provider}/start` and `GET /oauth/{provider}/callback`.
//!
//! Start checks the request (tenant, `return_to` against the allow-list, URL parameters
//! against the catalog's patterns), stores a pending authorization under the hash of a
//! fresh 256-bit `state` (ten minutes, single use) with the PKCE verifier, sets a
//! browser-binding cookie and redirects to the provider. The callback consumes the
//! state with one delete conditional on the binding cookie (a replay finds nothing; a
//! callback from another browser is refused and leaves the state for the real user),
//! checks the provider's own callback signature where it has one, exchanges the code,
//! seals the tokens and stores the connection, then sends the user back to `return_to`
//! with the connection id (or with the provider's error).
//!
//! A [`FlowError`] is what the user's browser is told: its message is safe to show.
//! An infrastructure failure keeps its cause as the error's source, for the log line
//! only.

use std::{collections::BTreeMap, sync::Arc};

use sha2::{Digest, Sha256};
use url::Url;

use super::{
    BoundTake, PendingAuthorization, StateStore, TokenVault, VaultError,
    connections::{Connection, ConnectionState},
    discovery::IdTokenError,
    new_connection_id, pkce_pair,
    provider::{TokenError, fill, shopify_callback_hmac_ok},
    random_token, state_key,
};
use crate::{catalog::CallbackSignature, crypto::SecretString};

/// How long a started authorization may take.
const STATE_TTL_SECONDS: i64 = 600;

/// A start request, from the query string.
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    pub tenant: Option<String>,
    pub return_to: Option<String>,
    /// An existing connection to re-authorize (`connection=`).
    pub reconnect: Option<String>,
    /// Every other query parameter (URL parameters such as `shop`).
    pub params: BTreeMap<String, String>,
}

/// The redirect to the provider and the cookie binding it to this browser.
#[derive(Debug, Clone)]
pub struct StartRedirect {
    pub location: String,
    pub set_cookie: String,
}

/// The callback's query, in order, and the binding cookie's value.
#[derive(Debug, Clone, Default)]
pub struct CallbackQuery {
    pub pairs: Vec<(String, String)>,
    pub binding_cookie: Option<String>,
}

impl CallbackQuery {
    fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Where the callback sends the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackOutcome {
    /// Connected: `return_to?status=connected&connection_id=…`.
    Connected {
        location: String,
        connection_id: String,
    },
    /// The provider or the exchange failed after a valid state: `return_to?status=error&error=…`.
    Failed { location: String, error: String },
}

/// A request the flow refuses, with the status and a message safe to show.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("unknown provider {0}")]
    UnknownProvider(String),
    /// 400: the message says what is wrong (never a secret).
    #[error("{0}")]
    BadRequest(String),
    /// 503: storage, KMS, Secrets Manager, the provider's metadata or the catalog
    /// unusable. `step` says which step failed; the cause (SDK or transport text) is
    /// the source, for the log only: a page shows [`FlowError::public_message`].
    #[error("{step}")]
    Unavailable {
        step: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl FlowError {
    pub fn status(&self) -> u16 {
        match self {
            FlowError::UnknownProvider(_) => 404,
            FlowError::BadRequest(_) => 400,
            FlowError::Unavailable { .. } => 503,
        }
    }

    /// What a page may say: the message for a refused request, a fixed sentence for an
    /// infrastructure failure (its cause is in the log, not in front of the user).
    pub fn public_message(&self) -> String {
        match self {
            FlowError::UnknownProvider(_) | FlowError::BadRequest(_) => self.to_string(),
            FlowError::Unavailable { .. } => {
                "Connecting is temporarily unavailable. Please try again in a few minutes.".into()
            }
        }
    }

    /// The error and its causes, for the log line.
    pub fn log_detail(&self) -> String {
        super::error_chain(self)
    }
}

/// The flow's settings.
#[derive(Debug, Clone)]
pub struct FlowSettings {
    /// Origins (`scheme://host[:port]`) a `return_to` may point at.
    pub return_to_origins: Vec<String>,
    /// Where users go when the start request names no `return_to`.
    pub default_return_to: Option<String>,
}

/// Start and callback, over the vault's ports.
#[derive(Debug, Clone)]
pub struct ConnectFlow {
    vault: TokenVault,
    states: Arc<dyn StateStore>,
    settings: FlowSettings,
    /// Where a new connection's sync jobs are created (providers with `[polling]`).
    jobs: Option<Arc<dyn crate::polling::SyncJobStore>>,
}

/// An infrastructure failure at `step`, keeping the error as its cause.
fn unavailable<E: std::error::Error + Send + Sync + 'static>(
    step: &'static str,
) -> impl FnOnce(E) -> FlowError {
    move |source| FlowError::Unavailable {
        step,
        source: Box::new(source),
    }
}

fn valid_tenant(tenant: &str) -> bool {
    (1..=128).contains(&tenant.len())
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b))
}

impl ConnectFlow {
    pub fn new(vault: TokenVault, states: Arc<dyn StateStore>, settings: FlowSettings) -> Self {
        ConnectFlow {
            vault,
            states,
            settings,
            jobs: None,
        }
    }

    /// Creates each new connection's sync jobs in `jobs` (the `[polling]` models of its
    /// provider), so polling starts with the connection.
    pub fn with_sync_jobs(mut self, jobs: Arc<dyn crate::polling::SyncJobStore>) -> Self {
        self.jobs = Some(jobs);
        self
    }

    /// The redirect URI registered with the provider: `<base>/oauth/<provider>/callback`,
    /// where `base` is the API's public base URL (`https://…`, no trailing slash).
    pub fn redirect_uri(base_url: &str, provider: &str) -> String {
        format!(
            "{}/oauth/{provider}/callback",
            base_url.trim_end_matches('/')
        )
    }

    /// The cookie that binds a started authorization to the browser that started it.
    pub fn binding_cookie_name(provider: &str) -> String {
        format!("junction_oauth_{}", provider.replace('-', "_"))
    }

    async fn spec(&self, provider: &str) -> Result<super::vault::ProviderSpec, FlowError> {
        let connectable = self
            .vault
            .catalog
            .get(provider)
            .is_some_and(|p| p.oauth.is_some() || p.oauth_discovery.is_some());
        if !connectable {
            return Err(FlowError::UnknownProvider(provider.to_owned()));
        }
        self.vault.spec(provider).await.map_err(|err| match err {
            VaultError::Rejected(_) => unavailable("the provider's configuration is unusable")(err),
            other => unavailable("the provider's configuration is unavailable")(other),
        })
    }

    fn checked_return_to(&self, return_to: Option<&str>) -> Result<String, FlowError> {
        let Some(return_to) = return_to.or(self.settings.default_return_to.as_deref()) else {
            return Err(FlowError::BadRequest("return_to is required".into()));
        };
        // The parser's reason adds nothing the user can act on.
        let url = Url::parse(return_to)
            .map_err(|_| FlowError::BadRequest("return_to is not an absolute URL".into()))?;
        let origin = url.origin().ascii_serialization();
        if !self.settings.return_to_origins.contains(&origin) {
            return Err(FlowError::BadRequest(format!(
                "return_to origin {origin} is not in the allow-list"
            )));
        }
        Ok(url.to_string())
    }

    /// Handles `GET /oauth/{provider}/start`.
    pub async fn start(
        &self,
        provider: &str,
        request: &StartRequest,
        base_url: &str,
    ) -> Result<StartRedirect, FlowError> {
        let spec = self.spec(provider).await?;
        let tenant = request
            .tenant
            .as_deref()
            .filter(|t| valid_tenant(t))
            .ok_or_else(|| {
                FlowError::BadRequest(
                    "tenant is required: 1-128 characters of letters, digits and -_.:@".into(),
                )
            })?;
        let return_to = self.checked_return_to(request.return_to.as_deref())?;
        let mut params = BTreeMap::new();
        for (name, parameter) in &spec.url_parameters {
            let value = request
                .params
                .get(name)
                .cloned()
                .or_else(|| parameter.default.clone())
                .ok_or_else(|| {
                    FlowError::BadRequest(format!("{name} is required: {}", parameter.description))
                })?;
            if !parameter.accepts(&value) {
                return Err(FlowError::BadRequest(format!(
                    "{name} is not valid: expected {}",
                    parameter.description
                )));
            }
            params.insert(name.clone(), value.to_ascii_lowercase());
        }
        if let Some(id) = &request.reconnect {
            let existing = self
                .vault
                .connections
                .get(id)
                .await
                .map_err(unavailable("reading the connection to reconnect"))?
                .filter(|c| c.tenant == tenant && c.provider == provider)
                .ok_or_else(|| {
                    FlowError::BadRequest(
                        "connection not found for this tenant and provider".into(),
                    )
                })?;
            for (name, value) in &existing.params {
                if spec.url_parameters.contains_key(name) && params.get(name) != Some(value) {
                    return Err(FlowError::BadRequest(format!(
                        "{name} differs from the connection's"
                    )));
                }
            }
        }
        let credentials = self
            .vault
            .credentials
            .credentials(provider)
            .await
            .map_err(unavailable("reading the client credentials"))?;
        let state = random_token();
        let binding = random_token();
        let (verifier, challenge) = if spec.pkce {
            let (verifier, challenge) = pkce_pair();
            (Some(SecretString::new(verifier)), Some(challenge))
        } else {
            (None, None)
        };
        let redirect_uri = Self::redirect_uri(base_url, provider);
        let nonce = spec.openid.as_ref().map(|_| random_token());
        let pending = PendingAuthorization {
            provider: provider.to_owned(),
            tenant: tenant.to_owned(),
            return_to,
            redirect_uri: redirect_uri.clone(),
            scopes: spec.scopes.clone(),
            pkce_verifier: verifier,
            params: params.clone(),
            reconnect: request.reconnect.clone(),
            browser_binding: hex::encode(Sha256::digest(binding.as_bytes())),
            expires_at: self.vault.clock.now().unix_timestamp() + STATE_TTL_SECONDS,
            nonce: nonce.clone(),
        };
        self.states
            .put(&state_key(&state), &pending)
            .await
            .map_err(unavailable("storing the pending authorization"))?;
        let base = fill(
            &spec.authorize_url,
            &params,
            &credentials.client_id,
            self.vault.catalog.endpoint_rules(),
        )
        .map_err(|err| FlowError::BadRequest(err.to_string()))?;
        let mut url =
            Url::parse(&base).map_err(unavailable("the catalog's authorize_url is not a URL"))?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &credentials.client_id)
                .append_pair("redirect_uri", &redirect_uri)
                .append_pair("state", &state);
            if !spec.scopes.is_empty() {
                query.append_pair(&spec.scope_param, &spec.scopes.join(&spec.scope_separator));
            }
            if let Some(challenge) = &challenge {
                query
                    .append_pair("code_challenge", challenge)
                    .append_pair("code_challenge_method", "S256");
            }
            if let Some(nonce) = &nonce {
                query.append_pair("nonce", nonce);
            }
            for (key, value) in &spec.authorize_params {
                query.append_pair(key, value);
            }
        }
        let set_cookie = format!(
            "{}={binding}; Path=/oauth/{provider}/callback; Max-Age={STATE_TTL_SECONDS}; HttpOnly; Secure; SameSite=Lax",
            Self::binding_cookie_name(provider)
        );
        Ok(StartRedirect {
            location: url.to_string(),
            set_cookie,
        })
    }

    /// Handles `GET /oauth/{provider}/callback`.
    pub async fn callback(
        &self,
        provider: &str,
        query: &CallbackQuery,
        base_url: &str,
    ) -> Result<CallbackOutcome, FlowError> {
        let spec = self.spec(provider).await?;
        let state = query
            .get("state")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| FlowError::BadRequest("the callback has no state".into()))?;
        // The binding is checked by the same conditional delete that consumes the state:
        // a callback from another browser (a stolen callback URL) is refused and leaves
        // the state for the browser that started the attempt.
        let binding = hex::encode(Sha256::digest(
            query
                .binding_cookie
                .as_deref()
                .unwrap_or_default()
                .as_bytes(),
        ));
        let pending = match self
            .states
            .take_bound(&state_key(state), &binding)
            .await
            .map_err(unavailable("consuming the pending authorization"))?
        {
            BoundTake::Taken(pending) => *pending,
            BoundTake::OtherBrowser => {
                tracing::warn!(
                    provider,
                    outcome = "callback_other_browser",
                    "callback without the binding cookie of the browser that started it; state left in place"
                );
                return Err(FlowError::BadRequest(
                    "this connection was started in another browser: start again here".into(),
                ));
            }
            BoundTake::Missing => {
                return Err(FlowError::BadRequest(
                    "unknown or already used state: start the connection again".into(),
                ));
            }
        };
        if pending.redirect_uri != Self::redirect_uri(base_url, provider) {
            return Err(FlowError::BadRequest(
                "this callback arrived at another address than the one the provider was given"
                    .into(),
            ));
        }
        if pending.provider != provider {
            return Err(FlowError::BadRequest(
                "this state was issued for another provider".into(),
            ));
        }
        if self.vault.clock.now().unix_timestamp() > pending.expires_at {
            return Err(FlowError::BadRequest(
                "this connection attempt expired: start again".into(),
            ));
        }
        let fail = |error: &str| {
            let code: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            Ok(CallbackOutcome::Failed {
                location: with_query(&pending.return_to, &[("status", "error"), ("error", &code)]),
                error: code,
            })
        };
        if let Some(issuer) = &spec.callback_issuer
            && query.get("iss") != Some(issuer.as_str())
        {
            return Err(FlowError::BadRequest(
                "the callback does not come from this provider's issuer".into(),
            ));
        }
        if let Some(error) = query.get("error") {
            tracing::info!(provider, tenant = %pending.tenant, error, outcome = "authorization_refused", "provider returned an error");
            return fail(error);
        }
        let credentials = self
            .vault
            .credentials
            .credentials(provider)
            .await
            .map_err(unavailable("reading the client credentials"))?;
        if spec.callback_signature == Some(CallbackSignature::ShopifyHmac) {
            let shop_ok = query.get("shop").map(str::to_ascii_lowercase).as_deref()
                == pending.params.get("shop").map(String::as_str);
            if !shop_ok || !shopify_callback_hmac_ok(&query.pairs, &credentials.client_secret) {
                return Err(FlowError::BadRequest(
                    "the callback's signature does not verify".into(),
                ));
            }
        }
        let Some(code) = query.get("code").filter(|c| !c.is_empty()) else {
            return Err(FlowError::BadRequest("the callback has no code".into()));
        };
        let mut response = match self
            .vault
            .client
            .exchange_code(
                &spec,
                &credentials,
                &pending.params,
                code,
                &pending.redirect_uri,
                pending.pkce_verifier.as_ref(),
            )
            .await
        {
            Ok(response) => response,
            Err(err) => {
                tracing::warn!(provider, tenant = %pending.tenant, error = %err, outcome = "exchange_failed", "code exchange failed");
                return match err {
                    TokenError::Transient(_) => fail("provider_unavailable"),
                    TokenError::Reauth(code) | TokenError::Rejected(code) => fail(&code),
                };
            }
        };
        if let Some(rule) = &spec.openid {
            let validated = match (&response.id_token, &pending.nonce) {
                (Some(id_token), Some(nonce)) => {
                    self.vault
                        .discovery()
                        .validate_id_token(
                            rule,
                            id_token.expose(),
                            &credentials.client_id,
                            nonce,
                            self.vault.clock.now(),
                        )
                        .await
                }
                _ => Err(IdTokenError::Missing),
            };
            match validated {
                Ok(subject) => response.account_id = Some(subject),
                Err(err) => {
                    tracing::warn!(provider, tenant = %pending.tenant, error = %err, outcome = "id_token_rejected", "ID token refused; nothing stored");
                    // The grant exists at the provider: end it rather than leave it behind.
                    if let Err(revoke) = self
                        .vault
                        .client
                        .revoke(
                            &spec,
                            &credentials,
                            &pending.params,
                            &response.access_token,
                            response.refresh_token.as_ref(),
                            None,
                        )
                        .await
                    {
                        tracing::warn!(provider, error = %revoke, "revoking the refused grant failed");
                    }
                    return fail(match err {
                        IdTokenError::KeysUnavailable(_) => "provider_unavailable",
                        _ => "invalid_id_token",
                    });
                }
            }
        }
        let now = self.vault.clock.now().unix_timestamp();
        let existing = match &pending.reconnect {
            Some(id) => self
                .vault
                .connections
                .get(id)
                .await
                .map_err(unavailable("reading the connection to reconnect"))?,
            None => None,
        };
        let connection_id = match existing {
            Some(existing) => {
                let next = self
                    .vault
                    .with_tokens(&existing, &spec, &response, None)
                    .await
                    .map_err(unavailable("sealing the tokens"))?;
                if !self
                    .vault
                    .connections
                    .replace(&next, existing.version)
                    .await
                    .map_err(unavailable("storing the connection"))?
                {
                    return Err(FlowError::Unavailable {
                        step: "storing the connection",
                        source: "another writer changed the connection meanwhile".into(),
                    });
                }
                next.id
            }
            None => {
                let base = Connection {
                    id: new_connection_id(),
                    tenant: pending.tenant.clone(),
                    provider: provider.to_owned(),
                    state: ConnectionState::Active,
                    scopes: pending.scopes.clone(),
                    account_id: None,
                    params: pending.params.clone(),
                    tokens: None,
                    token_generation: 0,
                    token_issued_at: None,
                    stated_lifetime: None,
                    refreshable: false,
                    refresh_at: None,
                    lease: None,
                    created_at: now,
                    updated_at: now,
                    last_successful_sync: None,
                    last_error: None,
                    last_error_at: None,
                    version: 0,
                };
                let connection = self
                    .vault
                    .with_tokens(&base, &spec, &response, None)
                    .await
                    .map_err(unavailable("sealing the tokens"))?;
                self.vault
                    .connections
                    .insert(&connection)
                    .await
                    .map_err(unavailable("storing the connection"))?;
                connection.id
            }
        };
        if let Some(jobs) = &self.jobs {
            // Before the success answer: a connection without its jobs would never be
            // polled. On failure the user connects again, which resumes here.
            crate::polling::ensure_jobs(
                jobs.as_ref(),
                self.vault.catalog,
                provider,
                &connection_id,
                now,
            )
            .await
            .map_err(unavailable("creating the connection's sync jobs"))?;
        }
        tracing::info!(provider, tenant = %pending.tenant, connection = %connection_id, outcome = "connected", "connection stored");
        Ok(CallbackOutcome::Connected {
            location: with_query(
                &pending.return_to,
                &[("status", "connected"), ("connection_id", &connection_id)],
            ),
            connection_id,
        })
    }
}

fn with_query(base: &str, pairs: &[(&str, &str)]) -> String {
    match Url::parse(base) {
        Ok(mut url) => {
            url.query_pairs_mut().extend_pairs(pairs);
            url.to_string()
        }
        Err(_) => base.to_owned(),
    }
}
