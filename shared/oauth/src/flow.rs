//! The connect flow: `GET /oauth/{provider}/start` and `GET /oauth/{provider}/callback`.
//!
//! Start consumes the connect session the product's backend minted
//! ([`super::session`]: single use, for this provider, unexpired; without one, a 401 page
//! and nothing stored), checks it again (`return_to` against the allow-list, URL
//! parameters against the catalog's patterns, the connection to reconnect), stores a
//! pending authorization under the hash of a fresh 256-bit `state` (ten minutes, single
//! use) with the PKCE verifier, sets a browser-binding cookie and redirects to the
//! provider. The callback consumes the
//! state with one delete conditional on the binding cookie (a replay finds nothing; a
//! callback from another browser is refused and leaves the state for the real user),
//! checks the provider's own callback signature where it has one, exchanges the code,
//! seals the tokens and stores the connection, then sends the user back to `return_to`
//! with the connection id (or with the provider's error). A reconnect must bring back
//! the connection's provider account (the ID token's `sub`, or the catalog's account
//! field): another account is refused, the stored tokens stay, and the new grant is
//! revoked, unless the session allowed an account change. Where the token response names
//! no account, the catalog's `[account_request]` asks the provider with the fresh token
//! (`super::provider_account`); its failure connects without an account rather than not
//! at all.
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
    provider_account::{AccountLookup, LookedUp},
    random_token,
    session::{ConnectSession, ConnectSessionStore, SessionTake, session_key},
    state_key,
    vault::ProviderSpec,
};
use junction_aws::crypto::SecretString;
use junction_catalog::{CallbackSignature, UrlParameter};

/// How long a started authorization may take.
pub(crate) const STATE_TTL_SECONDS: i64 = 600;

/// A start request, from the query string: only the connect session's token counts
/// (what to connect is the session's, as the product's backend asked for it).
#[derive(Debug, Clone, Default)]
pub struct StartRequest {
    /// `session=`: the token of a connect session minted for this provider.
    pub session: Option<String>,
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
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
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
    /// 401: no usable connect session (none, unknown, used, expired, another
    /// provider's); the message says which.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: a reconnect brought back another provider account than the connection's;
    /// nothing was stored and the new grant was revoked.
    #[error("the reconnect signed in to another {provider} account than the connection's")]
    AccountMismatch { provider: String },
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
            FlowError::Unauthorized(_) => 401,
            FlowError::AccountMismatch { .. } => 403,
            FlowError::Unavailable { .. } => 503,
        }
    }

    /// What a page may say: the message for a refused request, a fixed sentence for an
    /// infrastructure failure (its cause is in the log, not in front of the user).
    pub fn public_message(&self) -> String {
        match self {
            FlowError::UnknownProvider(_)
            | FlowError::BadRequest(_)
            | FlowError::Unauthorized(_) => self.to_string(),
            FlowError::AccountMismatch { provider } => format!(
                "You signed in to another {provider} account than the one this connection \
                 uses. Nothing was changed and the access just granted was withdrawn: sign \
                 in with the same account, or connect the other account as a new connection."
            ),
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
    pub(crate) vault: TokenVault,
    pub(crate) states: Arc<dyn StateStore>,
    pub(crate) sessions: Arc<dyn ConnectSessionStore>,
    pub(crate) settings: FlowSettings,
    /// What a new connection needs before the user hears it is connected (its sync jobs).
    pub(crate) setup: Option<Arc<dyn ConnectionSetup>>,
    /// The catalog's `[account_request]`, made with the fresh access token.
    accounts: AccountLookup,
}

/// Work a new connection needs before the callback answers "connected", such as the
/// sync jobs of a provider with `[polling]` (`junction_polling::SyncJobSetup`). A port,
/// so the connect flow does not depend on polling. Must be idempotent: a user who
/// connects again after a failure resumes it.
#[async_trait::async_trait]
pub trait ConnectionSetup: Send + Sync + std::fmt::Debug {
    async fn prepare(
        &self,
        provider: &str,
        connection_id: &str,
        now: i64,
    ) -> Result<(), ConnectionSetupError>;
}

/// A [`ConnectionSetup`] failed; the cause is kept.
#[derive(Debug, thiserror::Error)]
#[error("preparing the connection failed")]
pub struct ConnectionSetupError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// An infrastructure failure at `step`, keeping the error as its cause.
pub(super) fn unavailable<E: std::error::Error + Send + Sync + 'static>(
    step: &'static str,
) -> impl FnOnce(E) -> FlowError {
    move |source| FlowError::Unavailable {
        step,
        source: Box::new(source),
    }
}

/// A new connection for `pending`'s tenant, active, its tokens not yet sealed: every
/// connect flow (OAuth 2.0, OAuth 1.0a, a pasted credential) starts one so.
pub(super) fn new_connection(
    pending: &PendingAuthorization,
    provider: &str,
    scopes: Vec<String>,
    account_id: Option<String>,
    now: i64,
) -> Connection {
    Connection {
        id: new_connection_id(),
        tenant: pending.tenant.clone(),
        provider: provider.to_owned(),
        state: ConnectionState::Active,
        scopes,
        account_id,
        end_user: pending.end_user.clone(),
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
        last_verified_at: None,
        last_event_at: None,
        sandbox: pending.sandbox,
        version: 0,
    }
}

/// `base` with `tokens` sealed under its own context (the vault's envelope and context,
/// as for OAuth 2.0 tokens): active, a new token generation, no expiry, nothing to
/// refresh. OAuth 1.0a's token credentials and a pasted credential are kept so.
pub(super) async fn sealed_without_refresh(
    vault: &TokenVault,
    base: &Connection,
    tokens: &crate::TokenSet,
    now: i64,
) -> Result<Connection, FlowError> {
    let plaintext = zeroize::Zeroizing::new(
        serde_json::to_vec(tokens).map_err(unavailable("serializing the tokens"))?,
    );
    let context = junction_aws::crypto::EncryptionContext::for_connection(
        &base.tenant,
        &base.provider,
        &base.id,
    );
    let sealed = junction_aws::crypto::seal(vault.keys.as_ref(), &context, &plaintext)
        .await
        .map_err(|err| {
            unavailable("sealing the tokens")(crate::VaultError::unavailable(
                "the key service",
                err,
            ))
        })?;
    let mut next = base.clone();
    next.state = ConnectionState::Active;
    next.tokens = Some(sealed);
    next.token_generation += 1;
    next.token_issued_at = Some(now);
    next.stated_lifetime = None;
    next.refreshable = false;
    next.refresh_at = None;
    next.lease = None;
    next.last_error = None;
    next.updated_at = now;
    next.version = base.version + 1;
    Ok(next)
}

/// Stores a new connection (its tokens sealed).
pub(super) async fn insert_new(
    vault: &TokenVault,
    connection: &Connection,
) -> Result<(), FlowError> {
    vault
        .connections
        .insert(connection)
        .await
        .map_err(unavailable("storing the connection"))
}

/// Writes a reconnect's `next` over the connection read at `version`; another writer
/// in between is a failure the user retries by connecting again.
pub(super) async fn replace_reconnected(
    vault: &TokenVault,
    next: &Connection,
    version: u64,
) -> Result<(), FlowError> {
    if vault
        .connections
        .replace(next, version)
        .await
        .map_err(unavailable("storing the connection"))?
    {
        Ok(())
    } else {
        Err(FlowError::Unavailable {
            step: "storing the connection",
            source: "another writer changed the connection meanwhile".into(),
        })
    }
}

pub(super) fn valid_tenant(tenant: &str) -> bool {
    (1..=128).contains(&tenant.len())
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b))
}

impl ConnectFlow {
    /// Consumes the connect session `token` names for `provider` (once: a second take
    /// finds nothing). A refusal is a 401 page saying why (expired, made for another
    /// provider, unknown or already used), logged; a store failure is `Unavailable`.
    pub(crate) async fn take_session(
        &self,
        token: &str,
        provider: &str,
        now: i64,
    ) -> Result<ConnectSession, FlowError> {
        match self
            .sessions
            .take(&session_key(token), provider, now)
            .await
            .map_err(unavailable("consuming the connect session"))?
        {
            SessionTake::Taken(session) => Ok(*session),
            refused => {
                let (outcome, message) = match refused {
                    SessionTake::Expired => (
                        "session_expired",
                        "This connect link has expired. Go back to the application and connect again.",
                    ),
                    SessionTake::OtherProvider => (
                        "session_other_provider",
                        "This connect link was made for another provider.",
                    ),
                    _ => (
                        "session_unknown",
                        "This connect link is unknown or was already used. Go back to the application and connect again.",
                    ),
                };
                tracing::warn!(
                    provider,
                    outcome,
                    "start refused: no usable connect session"
                );
                Err(FlowError::Unauthorized(message.into()))
            }
        }
    }

    /// Consumes the pending authorization a callback's `state` names, in the browser
    /// that started it (the binding cookie), and checks it was issued for this provider
    /// and callback address and has not expired. Every refusal is a 400 page saying why;
    /// a store failure is `Unavailable`.
    pub(crate) async fn take_pending(
        &self,
        provider: &str,
        query: &CallbackQuery,
        base_url: &str,
    ) -> Result<PendingAuthorization, FlowError> {
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
        Ok(pending)
    }

    /// The flow over the vault, pending authorizations (`states`) and the connect
    /// sessions `start` consumes.
    pub fn new(
        vault: TokenVault,
        states: Arc<dyn StateStore>,
        sessions: Arc<dyn ConnectSessionStore>,
        settings: FlowSettings,
    ) -> Self {
        ConnectFlow {
            vault,
            states,
            sessions,
            settings,
            setup: None,
            accounts: AccountLookup::new(),
        }
    }

    /// Runs `setup` for each new connection before the success answer (its sync jobs,
    /// so polling starts with the connection).
    pub fn with_setup(mut self, setup: Arc<dyn ConnectionSetup>) -> Self {
        self.setup = Some(setup);
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

    /// Handles `GET /oauth/{provider}/start?session=…`: nothing happens without a
    /// connect session minted for `provider`, unexpired and unused; it is consumed
    /// here, so the link works once.
    pub async fn start(
        &self,
        provider: &str,
        request: &StartRequest,
        base_url: &str,
    ) -> Result<StartRedirect, FlowError> {
        let Some(token) = request.session.as_deref().filter(|t| !t.is_empty()) else {
            return Err(FlowError::Unauthorized(
                "This link has no connect session. Connections are started from the \
                 application: go back to it and connect again."
                    .into(),
            ));
        };
        let spec = connectable_spec(&self.vault, provider).await?;
        // Read before the session is consumed: an outage here leaves the link usable.
        let credentials = self
            .vault
            .credentials
            .credentials(provider)
            .await
            .map_err(unavailable("reading the client credentials"))?;
        let now = self.vault.clock.now().unix_timestamp();
        let session = self.take_session(token, provider, now).await?;
        // Checked when it was minted; checked again against today's settings.
        let return_to = checked_return_to(&self.settings, Some(&session.return_to))?;
        let params = checked_params(&spec.url_parameters, &session.params)?;
        if let Some(id) = &session.connection {
            reconnect_target(
                &self.vault,
                &spec.url_parameters,
                id,
                &session.tenant,
                provider,
                &params,
            )
            .await?;
        }
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
            tenant: session.tenant.clone(),
            return_to,
            redirect_uri: redirect_uri.clone(),
            scopes: spec.scopes.clone(),
            pkce_verifier: verifier,
            params: params.clone(),
            reconnect: session.connection.clone(),
            browser_binding: hex::encode(Sha256::digest(binding.as_bytes())),
            expires_at: now + STATE_TTL_SECONDS,
            nonce: nonce.clone(),
            allow_account_change: session.allow_account_change,
            sandbox: session.sandbox,
            end_user: session.end_user.clone(),
            oauth1: None,
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
        let spec = connectable_spec(&self.vault, provider).await?;
        let pending = self.take_pending(provider, query, base_url).await?;
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
        // A callback that names the connection's account (QuickBooks' realmId) names it
        // in the catalog's form, or nothing is exchanged: the value comes through the
        // browser and becomes a path segment of every API call. Whether the grant covers
        // it is confirmed after the exchange ([`ConnectFlow::account`]).
        if let Some(callback) = self
            .vault
            .catalog
            .get(provider)
            .and_then(|entry| entry.account_request.as_ref())
            .and_then(|request| request.from_callback.as_ref())
            && !query
                .get(&callback.parameter)
                .is_some_and(|value| callback.accepts(value))
        {
            tracing::info!(provider, tenant = %pending.tenant, parameter = %callback.parameter, outcome = "callback_account_malformed", "callback refused: its account parameter is missing or malformed");
            return Err(FlowError::BadRequest(format!(
                "the callback's {} is missing or malformed",
                callback.parameter
            )));
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
                tracing::warn!(provider, tenant = %pending.tenant, error = %super::error_chain(&err), outcome = "exchange_failed", "code exchange failed");
                // The page shows a code: the provider's, or a fixed one for a failure
                // whose detail (transport, the answer's size, the endpoint) is ours.
                return match err {
                    TokenError::Unreachable { .. } | TokenError::Transient(_) => {
                        fail("provider_unavailable")
                    }
                    TokenError::Reauth(code) | TokenError::Rejected(code) => fail(&code),
                    TokenError::TooLarge(_) | TokenError::Endpoint(_) => fail("server_error"),
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
                    self.revoke_refused_grant(
                        provider,
                        &spec,
                        &credentials,
                        &pending.params,
                        &response,
                    )
                    .await;
                    return fail(match err {
                        IdTokenError::KeysUnavailable(_) => "provider_unavailable",
                        _ => "invalid_id_token",
                    });
                }
            }
        }
        let now = self.vault.clock.now().unix_timestamp();
        let existing = self.reconnect_of(&pending).await?;
        let account = self
            .account(
                provider,
                &pending.tenant,
                query,
                &response,
                existing.as_ref(),
            )
            .await;
        match &account {
            AccountDecision::FromToken => {}
            AccountDecision::Own(own) => response.account_id = Some(own.clone()),
            AccountDecision::Chosen(chosen) => response.account_id = chosen.clone(),
            AccountDecision::Failed => response.account_id = None,
        }
        let connection_id = match existing {
            Some(existing) => {
                if existing.tenant != pending.tenant || existing.provider != provider {
                    // Checked at start; a connection id is never reused, so only a
                    // store gone wrong gets here. Nothing of the new grant is kept.
                    self.revoke_refused_grant(
                        provider,
                        &spec,
                        &credentials,
                        &pending.params,
                        &response,
                    )
                    .await;
                    return Err(FlowError::BadRequest(
                        "connection not found for this tenant and provider".into(),
                    ));
                }
                // An account chosen among those the user can access is where events
                // come from, not who signed in: the new choice replaces the old. One the
                // lookup could not learn is not compared: the connection keeps its own.
                let account_changed = match &account {
                    AccountDecision::FromToken | AccountDecision::Own(_) => !same_account(
                        existing.account_id.as_deref(),
                        response.account_id.as_deref(),
                    ),
                    AccountDecision::Chosen(_) | AccountDecision::Failed => false,
                };
                if account_changed && !pending.allow_account_change {
                    tracing::warn!(
                        provider,
                        tenant = %pending.tenant,
                        connection = %existing.id,
                        outcome = "reconnect_account_mismatch",
                        "reconnect refused: another provider account; connection unchanged, new grant revoked"
                    );
                    self.revoke_refused_grant(
                        provider,
                        &spec,
                        &credentials,
                        &pending.params,
                        &response,
                    )
                    .await;
                    return Err(FlowError::AccountMismatch {
                        provider: provider.to_owned(),
                    });
                }
                let mut next = self
                    .vault
                    .with_tokens(&existing, &spec, &response, None)
                    .await
                    .map_err(unavailable("sealing the tokens"))?;
                if account_changed {
                    tracing::info!(
                        provider,
                        tenant = %pending.tenant,
                        connection = %existing.id,
                        outcome = "reconnect_account_changed",
                        "reconnect brought another provider account, as the session allowed"
                    );
                    // The old account's id would now describe someone else's tokens.
                    next.account_id = response.account_id.clone();
                }
                if let AccountDecision::Chosen(chosen) = &account {
                    next.account_id = chosen.clone();
                }
                if pending.end_user.is_some() {
                    next.end_user = pending.end_user.clone();
                }
                replace_reconnected(&self.vault, &next, existing.version).await?;
                next.id
            }
            None => {
                let base = new_connection(&pending, provider, pending.scopes.clone(), None, now);
                let connection = self
                    .vault
                    .with_tokens(&base, &spec, &response, None)
                    .await
                    .map_err(unavailable("sealing the tokens"))?;
                insert_new(&self.vault, &connection).await?;
                connection.id
            }
        };
        let location = self
            .connected(&pending, provider, &connection_id, now)
            .await?;
        Ok(CallbackOutcome::Connected {
            location,
            connection_id,
        })
    }
}

impl ConnectFlow {
    /// The connection a reconnect names, as stored (`None` for a new connection, or
    /// one that is gone). Each flow checks it is the pending tenant's, for the provider.
    pub(super) async fn reconnect_of(
        &self,
        pending: &PendingAuthorization,
    ) -> Result<Option<Connection>, FlowError> {
        match &pending.reconnect {
            Some(id) => self
                .vault
                .connections
                .get(id)
                .await
                .map_err(unavailable("reading the connection to reconnect")),
            None => Ok(None),
        }
    }

    /// The end of every connect once the connection is stored: its setups (before the
    /// success answer: a connection without its sync jobs would never be polled; on
    /// failure the user connects again, which resumes here), the outcome line, and
    /// where the user goes back to.
    pub(super) async fn connected(
        &self,
        pending: &PendingAuthorization,
        provider: &str,
        connection_id: &str,
        now: i64,
    ) -> Result<String, FlowError> {
        if let Some(setup) = &self.setup {
            setup
                .prepare(provider, connection_id, now)
                .await
                .map_err(unavailable("preparing the connection"))?;
        }
        tracing::info!(provider, tenant = %pending.tenant, connection = %connection_id, outcome = "connected", "connection stored");
        Ok(with_query(
            &pending.return_to,
            &[("status", "connected"), ("connection_id", connection_id)],
        ))
    }
}

/// What the callback records as the connection's provider account.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AccountDecision {
    /// The provider has no `[account_request]`: the token response's account (or the ID
    /// token's subject), as the catalog's `account_id` says.
    FromToken,
    /// The token's own account (Gmail's address): compared on a reconnect.
    Own(String),
    /// The account chosen among those the user can access (GitHub's installation), or
    /// none: recorded as is, on a reconnect too.
    Chosen(Option<String>),
    /// The request failed: a new connection has no account, a reconnect keeps its own.
    Failed,
}

impl ConnectFlow {
    /// The connection's account from the catalog's `[account_request]`, asked with the
    /// fresh access token. A failure does not fail the connect: the user granted access
    /// and the tokens work; only the matching of webhooks to this connection waits for
    /// a reconnect. It is logged with its cause.
    async fn account(
        &self,
        provider: &str,
        tenant: &str,
        query: &CallbackQuery,
        response: &super::TokenResponse,
        existing: Option<&Connection>,
    ) -> AccountDecision {
        let Some(request) = self
            .vault
            .catalog
            .get(provider)
            .and_then(|entry| entry.account_request.as_ref())
        else {
            return AccountDecision::FromToken;
        };
        // The account the callback names: a choice among a list (GitHub's installation),
        // or the account itself, still to be confirmed (QuickBooks' realm).
        let chosen = request
            .chosen_by
            .as_deref()
            .or(request
                .from_callback
                .as_ref()
                .map(|callback| callback.parameter.as_str()))
            .and_then(|name| query.get(name))
            .filter(|value| !value.is_empty());
        let stored = existing.and_then(|connection| connection.account_id.as_deref());
        match self
            .accounts
            .look_up(
                request,
                self.vault.catalog.endpoint_rules(),
                &response.access_token,
                chosen,
                stored,
            )
            .await
        {
            Ok(LookedUp::Own(account)) => AccountDecision::Own(account),
            Ok(LookedUp::Chosen(Ok(account))) => AccountDecision::Chosen(Some(account)),
            Ok(LookedUp::Chosen(Err(reason))) => {
                tracing::warn!(
                    provider,
                    tenant,
                    outcome = reason.code(),
                    chosen_given = chosen.is_some(),
                    "no provider account recorded: the callback named none the user can access, or several are possible; webhooks stay unmatched"
                );
                AccountDecision::Chosen(None)
            }
            Err(err) => {
                tracing::warn!(
                    provider,
                    tenant,
                    error = %super::error_chain(&err),
                    outcome = "account_lookup_failed",
                    "the account request failed: connected without a provider account (a reconnect keeps its own); webhooks stay unmatched until a reconnect"
                );
                AccountDecision::Failed
            }
        }
    }

    /// Ends a grant the callback refused (an invalid ID token, another account on a
    /// reconnect) rather than leave it behind at the provider; a failure is logged, the
    /// refusal stands.
    async fn revoke_refused_grant(
        &self,
        provider: &str,
        spec: &ProviderSpec,
        credentials: &super::ClientCredentials,
        params: &BTreeMap<String, String>,
        response: &super::TokenResponse,
    ) {
        if let Err(err) = self
            .vault
            .client
            .revoke(
                spec,
                credentials,
                params,
                &response.access_token,
                response.refresh_token.as_ref(),
                response.account_id.as_deref(),
            )
            .await
        {
            tracing::warn!(provider, error = %super::error_chain(&err), outcome = "revoke_failed", "revoking the refused grant failed");
        }
    }
}

/// Whether a reconnect brought back the connection's provider account. A connection
/// that never recorded one (the catalog names no account field and the provider is not
/// OpenID) has nothing to compare; one that did needs the same id back.
pub(super) fn same_account(stored: Option<&str>, returned: Option<&str>) -> bool {
    match (stored, returned) {
        (None, _) => true,
        (Some(stored), Some(returned)) => stored == returned,
        (Some(_), None) => false,
    }
}

/// The provider's OAuth spec, if the catalog can connect it (404 otherwise).
pub(super) async fn connectable_spec(
    vault: &TokenVault,
    provider: &str,
) -> Result<ProviderSpec, FlowError> {
    let connectable = vault
        .catalog
        .get(provider)
        .is_some_and(|p| p.oauth.is_some() || p.oauth_discovery.is_some());
    if !connectable {
        return Err(FlowError::UnknownProvider(provider.to_owned()));
    }
    vault.spec(provider).await.map_err(|err| match err {
        VaultError::Rejected(_) => unavailable("the provider's configuration is unusable")(err),
        other => unavailable("the provider's configuration is unavailable")(other),
    })
}

/// `return_to` (or the default) if its origin is allowed.
pub(super) fn checked_return_to(
    settings: &FlowSettings,
    return_to: Option<&str>,
) -> Result<String, FlowError> {
    let Some(return_to) = return_to.or(settings.default_return_to.as_deref()) else {
        return Err(FlowError::BadRequest("return_to is required".into()));
    };
    // The parser's reason adds nothing the user can act on.
    let url = Url::parse(return_to)
        .map_err(|_| FlowError::BadRequest("return_to is not an absolute URL".into()))?;
    let origin = url.origin().ascii_serialization();
    if !settings.return_to_origins.contains(&origin) {
        return Err(FlowError::BadRequest(format!(
            "return_to origin {origin} is not in the allow-list"
        )));
    }
    Ok(url.to_string())
}

/// The catalog's URL parameters from `given` (or their defaults), each matching its
/// pattern, lowercased: no user input picks a host.
pub(super) fn checked_params(
    url_parameters: &BTreeMap<String, UrlParameter>,
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, FlowError> {
    let mut params = BTreeMap::new();
    for (name, parameter) in url_parameters {
        let value = given
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
    Ok(params)
}

/// The connection `id` to reconnect: it must belong to `tenant` and `provider`, and
/// keep its URL parameters (the same shop, the same domain).
pub(super) async fn reconnect_target(
    vault: &TokenVault,
    url_parameters: &BTreeMap<String, UrlParameter>,
    id: &str,
    tenant: &str,
    provider: &str,
    params: &BTreeMap<String, String>,
) -> Result<Connection, FlowError> {
    let existing = vault
        .connections
        .get(id)
        .await
        .map_err(unavailable("reading the connection to reconnect"))?
        .filter(|c| c.tenant == tenant && c.provider == provider)
        .ok_or_else(|| {
            FlowError::BadRequest("connection not found for this tenant and provider".into())
        })?;
    for (name, value) in &existing.params {
        if url_parameters.contains_key(name) && params.get(name) != Some(value) {
            return Err(FlowError::BadRequest(format!(
                "{name} differs from the connection's"
            )));
        }
    }
    Ok(existing)
}

pub(crate) fn with_query(base: &str, pairs: &[(&str, &str)]) -> String {
    match Url::parse(base) {
        Ok(mut url) => {
            url.query_pairs_mut().extend_pairs(pairs);
            url.to_string()
        }
        Err(_) => base.to_owned(),
    }
}
