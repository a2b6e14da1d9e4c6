//! The token vault: hands out access tokens, refreshing them before they expire.
//!
//! - Expiry is the stated `expires_in` (or the catalog's default lifetime), shortened to
//!   the provider's *learned* lifetime, minus the catalog's margin.
//! - Learning: when an API call gets a 401 before the token's stated expiry *and the
//!   refresh that follows succeeds*, the token's age is recorded as that connection's
//!   lifetime observation (one per connection, its latest). A revoked grant's refresh
//!   fails, so a user leaving teaches nothing. The learned lifetime is the shortest age
//!   that three distinct connections have each seen a token die by: the third-smallest
//!   of their observations from the last seven days. Whoever controls one or two
//!   connections (revoking their tokens right after each refresh, say) can add
//!   observations below it but cannot pull it below what a third, independent
//!   connection saw. It never goes below half the stated lifetime nor below five
//!   minutes ([`effective_lifetime`]), it only shortens a lifetime the provider stated,
//!   and it lapses when no observation confirms it for seven days.
//! - One refresh at a time per connection: callers race for a lease written with a
//!   conditional replace; the winner calls the token endpoint, the others wait for the
//!   new token generation and return it.
//! - The new access and refresh tokens are stored in one conditional write that
//!   replaces the old pair; until that write lands, the old refresh token stays stored,
//!   and the write is retried while the store is briefly unavailable.
//! - A transient token-endpoint failure leaves everything as it was. `invalid_grant` (or
//!   a catalog re-auth code), after re-reading the record in case another worker
//!   refreshed meanwhile, marks the connection `needs_reauth` and announces it.
//! - The scheduled sweep ([`TokenVault::refresh_due`]) refreshes each due connection on
//!   its own task: one connection's failure (its provider down or hung, a key-service
//!   or store error, an unreadable item) is logged with its cause and counted, and the
//!   others go on. A provider failing several times in a row has its
//!   remaining connections skipped for the rest of the run, so a hung token endpoint
//!   costs a few timeouts, not the run.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::{
    connections::{
        Connection, ConnectionState, ConnectionStore, ConnectionStoreError, Lease,
        LifetimeObservation, OBSERVATION_WINDOW_SECONDS,
    },
    discovery::{Discovery, DiscoveryError},
    error_chain,
    provider::{OAuthCredentials, ProviderClient, TokenError, TokenResponse},
    random_token,
};
use crate::log::{RefreshOutcome, record_token_refresh};
use junction_aws::clock::Clock;
use junction_aws::crypto::{CryptoError, EncryptionContext, KeyService, SecretString, open, seal};
use junction_aws::events::{CloudEvent, EventBus};
use junction_catalog::{Catalog, OAuthSpec};

/// What is sealed: the tokens, never stored in the clear. The only record whose
/// serialization exposes them, into the plaintext the data key encrypts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenSet {
    #[serde(with = "junction_aws::crypto::stored")]
    pub access_token: SecretString,
    #[serde(with = "junction_aws::crypto::stored::option", default)]
    pub refresh_token: Option<SecretString>,
    /// OAuth 1.0a: the token secret that signs with the access token (RFC 5849 §2.3);
    /// absent for OAuth 2.0 tokens, whose sealed documents stay as they were.
    #[serde(
        with = "junction_aws::crypto::stored::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub token_secret: Option<SecretString>,
}

/// An access token handed to the outbound path.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub value: SecretString,
    /// The token generation: reported back with [`TokenVault::token_rejected`].
    pub generation: u64,
    /// Connection values for API calls (`instance_url`, `shop`), and the connection's
    /// provider account as `account` (the catalog's `{account}`: Xero's tenant header,
    /// QuickBooks' realm in the path) when it has one.
    pub params: std::collections::BTreeMap<String, String>,
}

/// What an [`AccessToken`] carries for API calls: the connection's kept values and its
/// provider account under the catalog's `{account}` name (no URL parameter or response
/// value may take that name: the catalog refuses it).
fn api_params(connection: &Connection) -> BTreeMap<String, String> {
    let mut params = connection.params.clone();
    if let Some(account) = connection
        .account_id
        .as_ref()
        .filter(|account| !account.is_empty())
    {
        params.insert(
            junction_catalog::ACCOUNT_PLACEHOLDER.to_owned(),
            account.clone(),
        );
    }
    params
}

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("connection {0} not found")]
    NotFound(String),
    #[error("connection needs the user to reconnect: {0}")]
    NeedsReauth(String),
    /// Retry later: `step` names what was unavailable (the connection store, the key
    /// service, the token endpoint, the event bus; a peer's refresh still running). The
    /// cause, when there is one, is the source: SDK or transport text, for the log line
    /// ([`crate::web`] answers a fixed message).
    #[error("temporarily unavailable: {step}")]
    Unavailable {
        step: &'static str,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The provider refused for a reason that retrying won't fix (client credentials,
    /// configuration): an operator must look.
    #[error("provider refused: {0}")]
    Rejected(String),
    /// The provider's API did not answer: the outbound client retries it as a
    /// transient failure. The source is the transport error, its URL removed.
    #[error("provider API unreachable ({reason})")]
    Unreachable {
        reason: UnreachableReason,
        #[source]
        source: reqwest::Error,
    },
}

impl VaultError {
    /// Retry later: `step` was unavailable because of `source`.
    pub fn unavailable(
        step: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        VaultError::Unavailable {
            step,
            source: Some(source.into()),
        }
    }

    /// Retry later: `step` is not done yet, and nothing failed (a peer still working).
    pub fn busy(step: &'static str) -> Self {
        VaultError::Unavailable { step, source: None }
    }

    /// A connection store failure: retry later.
    pub fn store(source: ConnectionStoreError) -> Self {
        VaultError::unavailable("the connection store", source)
    }
}

/// How a provider API call failed to get an answer, by kind only (a URL may carry
/// identifiers): a closed set, so callers match variants, not text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnreachableReason {
    Timeout,
    Connect,
    /// Anything else between sending and a whole response.
    Transport,
}

impl UnreachableReason {
    /// The kind of a failed HTTP call.
    pub fn of(err: &reqwest::Error) -> Self {
        if err.is_timeout() {
            UnreachableReason::Timeout
        } else if err.is_connect() {
            UnreachableReason::Connect
        } else {
            UnreachableReason::Transport
        }
    }

    /// The code the outbound client's log line and failure carry.
    pub fn as_str(self) -> &'static str {
        match self {
            UnreachableReason::Timeout => "timeout",
            UnreachableReason::Connect => "connect",
            UnreachableReason::Transport => "transport",
        }
    }
}

impl std::fmt::Display for UnreachableReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Tunables.
#[derive(Debug, Clone)]
pub struct VaultSettings {
    /// How long a refresh lease lasts (longer than the token call's timeout).
    pub lease: Duration,
    /// How long a caller waits for a peer's refresh before giving up (transient).
    pub wait_for_peer: Duration,
    /// How often a waiting caller re-reads the connection.
    pub poll_interval: Duration,
    /// Refreshes in flight at once during a scheduled sweep.
    pub sweep_concurrency: usize,
}

impl Default for VaultSettings {
    fn default() -> Self {
        VaultSettings {
            lease: Duration::from_secs(30),
            wait_for_peer: Duration::from_secs(15),
            poll_interval: Duration::from_millis(100),
            sweep_concurrency: 8,
        }
    }
}

/// Counts from one refresher run. Every due connection is in exactly one of the other
/// counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshReport {
    pub due: usize,
    pub refreshed: usize,
    pub needs_reauth: usize,
    /// Refreshes that failed (each logged with its cause), unreadable items included.
    pub failed: usize,
    /// Not tried: their provider had failed [`PROVIDER_FAILURE_LIMIT`] times in a row
    /// in this run.
    pub skipped: usize,
    /// Not tried: the run's time budget was spent. The next run picks them up.
    pub deferred: usize,
}

/// One provider's refreshes within a sweep.
#[derive(Debug, Default)]
struct ProviderTally {
    /// Failures since its last success (or needs-reauth).
    in_a_row: usize,
    failed: usize,
    skipped: usize,
    /// The last failure and its causes, for the run's summary line.
    last_error: String,
}

/// How many connections agree before a lifetime is learned (see the module doc).
const CONFIRMING_CONNECTIONS: usize = 3;

/// The shortest learned lifetime, whatever the observations say (seconds); the other
/// floor is half the stated lifetime.
const LEARNED_FLOOR_SECONDS: u64 = 5 * 60;

/// Most due connections one sweep reads: far more than one run refreshes in steady
/// state, so the connections of a provider whose refreshes keep failing (they stay due,
/// the earliest first) cannot fill the read and starve the others.
const SWEEP_READ_LIMIT: usize = 2_000;

/// Failures in a row after which a provider's remaining connections are skipped for
/// the rest of a sweep.
pub const PROVIDER_FAILURE_LIMIT: usize = 3;

/// The provider's learned lifetime from its connections' observations at `now`: the
/// third-smallest of the distinct connections' observations from the last
/// [`OBSERVATION_WINDOW_SECONDS`], or none while fewer than three connections have one
/// (see the module doc for why). Not yet floored: [`effective_lifetime`] does that.
pub(crate) fn learned_lifetime(observations: &[LifetimeObservation], now: i64) -> Option<u64> {
    let since = now.saturating_sub(OBSERVATION_WINDOW_SECONDS);
    let mut latest: BTreeMap<&str, &LifetimeObservation> = BTreeMap::new();
    for observation in observations.iter().filter(|o| o.at > since) {
        let kept = latest.entry(&observation.connection).or_insert(observation);
        if observation.at > kept.at {
            *kept = observation;
        }
    }
    let mut seconds: Vec<u64> = latest.values().map(|o| o.seconds).collect();
    seconds.sort_unstable();
    seconds.get(CONFIRMING_CONNECTIONS - 1).copied()
}

/// The lifetime a token is treated as having: the stated one, shortened to the learned
/// one but never below the floor (half the stated lifetime, and
/// [`LEARNED_FLOOR_SECONDS`]). A token the provider stated no lifetime for is not
/// shortened: it is refreshed when it is rejected.
pub(crate) fn effective_lifetime(stated: Option<u64>, learned: Option<u64>) -> Option<u64> {
    let stated = stated?;
    let Some(learned) = learned else {
        return Some(stated);
    };
    let floor = stated.div_ceil(2).max(LEARNED_FLOOR_SECONDS);
    Some(stated.min(learned.max(floor)))
}

/// A provider's OAuth spec: the catalog's own, or one resolved from its issuer's
/// metadata.
#[derive(Debug, Clone)]
pub(crate) enum ProviderSpec {
    Catalog(&'static OAuthSpec),
    Discovered(Arc<OAuthSpec>),
}

impl std::ops::Deref for ProviderSpec {
    type Target = OAuthSpec;

    fn deref(&self) -> &OAuthSpec {
        match self {
            ProviderSpec::Catalog(spec) => spec,
            ProviderSpec::Discovered(spec) => spec,
        }
    }
}

/// The vault and its ports.
#[derive(Debug, Clone)]
pub struct TokenVault {
    pub(crate) catalog: &'static Catalog,
    pub(crate) connections: Arc<dyn ConnectionStore>,
    pub(crate) keys: Arc<dyn KeyService>,
    pub(crate) credentials: Arc<dyn OAuthCredentials>,
    pub(crate) client: ProviderClient,
    pub(crate) bus: Arc<dyn EventBus>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) settings: VaultSettings,
    /// Issuer metadata and keys of `[oauth_discovery]` providers, cached; built on
    /// first use, so functions without such providers build no HTTP clients for it.
    pub(crate) discovery: Arc<std::sync::OnceLock<Discovery>>,
    /// What `disconnect` undoes at the provider while the tokens still exist (the
    /// connection's push subscription), before revoking them.
    pub(crate) teardown: Option<Arc<dyn ConnectionTeardown>>,
}

/// Work a disconnect does at the provider with the connection's tokens before they are
/// revoked and deleted, such as deleting its push subscription
/// (`junction_subscriptions`). A port, so the vault does not depend on what is torn
/// down. Something already gone at the provider is done, not a failure.
#[async_trait::async_trait]
pub trait ConnectionTeardown: Send + Sync + std::fmt::Debug {
    async fn teardown(&self, connection: &Connection) -> Result<(), ConnectionTeardownError>;
}

/// A [`ConnectionTeardown`] failed (retry later); the cause is kept.
#[derive(Debug, thiserror::Error)]
#[error("tearing the connection down at the provider failed")]
pub struct ConnectionTeardownError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

fn unix(at: OffsetDateTime) -> i64 {
    at.unix_timestamp()
}

/// A failed API call: its kind, and the transport error without its URL (a URL may
/// carry identifiers) as the cause.
fn unreachable(err: reqwest::Error) -> VaultError {
    VaultError::Unreachable {
        reason: UnreachableReason::of(&err),
        source: err.without_url(),
    }
}

fn crypto_error(err: CryptoError) -> VaultError {
    match err {
        CryptoError::Mismatch => {
            VaultError::Rejected("sealed tokens do not open under this connection's context".into())
        }
        other => VaultError::unavailable("the key service", other),
    }
}

/// What a failed token-endpoint call leaves on the connection record (`last_error`,
/// which the management API shows): the class and the provider's code or the kind of
/// failure, never transport or SDK text.
fn token_error_note(err: &TokenError) -> String {
    match err {
        TokenError::Unreachable { reason, .. } => format!("refresh_transient: {reason}"),
        TokenError::Transient(code) => format!("refresh_transient: {code}"),
        TokenError::Reauth(code) => format!("needs_reauth: {code}"),
        TokenError::Rejected(code) => format!("refresh_rejected: {code}"),
        TokenError::TooLarge(_) => "refresh_rejected: token_response_too_large".to_owned(),
        TokenError::Endpoint(_) => "refresh_rejected: token_endpoint_not_usable".to_owned(),
    }
}

/// When a token issued at `issued_at` should be refreshed, if ever.
pub(crate) fn refresh_at(
    spec: &OAuthSpec,
    issued_at: i64,
    stated: Option<u64>,
    learned: Option<u64>,
) -> Option<i64> {
    let lifetime = effective_lifetime(stated, learned)?;
    let margin = u64::from(spec.lifetime_margin_seconds);
    let usable = lifetime.saturating_sub(margin).max(lifetime / 2);
    Some(issued_at.saturating_add(i64::try_from(usable).unwrap_or(i64::MAX)))
}

impl TokenVault {
    /// The catalog the vault reads provider facts from.
    pub fn catalog(&self) -> &'static Catalog {
        self.catalog
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        catalog: &'static Catalog,
        connections: Arc<dyn ConnectionStore>,
        keys: Arc<dyn KeyService>,
        credentials: Arc<dyn OAuthCredentials>,
        client: ProviderClient,
        bus: Arc<dyn EventBus>,
        clock: Arc<dyn Clock>,
        settings: VaultSettings,
    ) -> Self {
        TokenVault {
            catalog,
            connections,
            keys,
            credentials,
            client: client.with_endpoint_rules(catalog.endpoint_rules()),
            bus,
            clock,
            settings,
            discovery: Arc::new(std::sync::OnceLock::new()),
            teardown: None,
        }
    }

    /// Runs `teardown` at each disconnect, before revocation.
    pub fn with_teardown(mut self, teardown: Arc<dyn ConnectionTeardown>) -> Self {
        self.teardown = Some(teardown);
        self
    }

    /// Discovery of `[oauth_discovery]` providers (built on first use).
    pub(crate) fn discovery(&self) -> &Discovery {
        self.discovery
            .get_or_init(|| Discovery::new(self.catalog.endpoint_rules()))
    }

    /// The provider's OAuth spec; for a discovered provider, from its (cached) metadata.
    pub(crate) async fn spec(&self, provider: &str) -> Result<ProviderSpec, VaultError> {
        let entry = self.catalog.get(provider);
        if let Some(spec) = entry.and_then(|p| p.oauth.as_ref()) {
            return Ok(ProviderSpec::Catalog(spec));
        }
        let Some(discovered) = entry.and_then(|p| p.oauth_discovery.as_ref()) else {
            return Err(VaultError::Rejected(format!(
                "provider {provider} has no oauth section"
            )));
        };
        self.discovery()
            .spec(discovered)
            .await
            .map(ProviderSpec::Discovered)
            .map_err(|err| match err {
                DiscoveryError::Unavailable { .. } => {
                    VaultError::unavailable("the provider's metadata", err)
                }
                DiscoveryError::Invalid { .. } => VaultError::Rejected(error_chain(&err)),
            })
    }

    /// The connection's record (state and kept parameters; never the tokens' plaintext):
    /// what the poll worker checks before a run.
    pub async fn connection(&self, id: &str) -> Result<Connection, VaultError> {
        self.load(id).await
    }

    async fn load(&self, id: &str) -> Result<Connection, VaultError> {
        self.connections
            .get(id)
            .await
            .map_err(VaultError::store)?
            .ok_or_else(|| VaultError::NotFound(id.to_owned()))
    }

    /// Seals a token response onto `base`: new tokens (keeping the stored refresh token
    /// when the provider sent none), lifetimes, scopes, account and kept parameters.
    pub(crate) async fn with_tokens(
        &self,
        base: &Connection,
        spec: &OAuthSpec,
        response: &TokenResponse,
        previous_refresh: Option<SecretString>,
    ) -> Result<Connection, VaultError> {
        let now = unix(self.clock.now());
        let learned = self.learned(&base.provider).await;
        let tokens = TokenSet {
            access_token: response.access_token.clone(),
            refresh_token: response.refresh_token.clone().or(previous_refresh),
            token_secret: None,
        };
        let plaintext = Zeroizing::new(
            serde_json::to_vec(&tokens)
                .map_err(|err| VaultError::unavailable("serializing the tokens", err))?,
        );
        let context = EncryptionContext::for_connection(&base.tenant, &base.provider, &base.id);
        let sealed = seal(self.keys.as_ref(), &context, &plaintext)
            .await
            .map_err(crypto_error)?;
        let stated = response
            .expires_in
            .or(spec.default_lifetime_seconds.map(u64::from));
        let mut next = base.clone();
        next.state = ConnectionState::Active;
        next.tokens = Some(sealed);
        next.token_generation += 1;
        next.token_issued_at = Some(now);
        next.stated_lifetime = stated;
        next.refreshable = tokens.refresh_token.is_some();
        next.refresh_at = if next.refreshable {
            refresh_at(spec, now, stated, learned)
        } else {
            None
        };
        next.lease = None;
        if let Some(scopes) = &response.scopes {
            next.scopes = scopes.clone();
        }
        if response.account_id.is_some() {
            next.account_id = response.account_id.clone();
        }
        next.params.extend(response.params.clone());
        next.last_error = None;
        next.updated_at = now;
        next.version = base.version + 1;
        Ok(next)
    }

    /// Opens a connection's tokens.
    pub(crate) async fn tokens(&self, connection: &Connection) -> Result<TokenSet, VaultError> {
        let sealed = connection
            .tokens
            .as_ref()
            .ok_or_else(|| VaultError::NeedsReauth("no tokens stored".into()))?;
        let context = EncryptionContext::for_connection(
            &connection.tenant,
            &connection.provider,
            &connection.id,
        );
        let plaintext = open(self.keys.as_ref(), &context, sealed)
            .await
            .map_err(crypto_error)?;
        // serde's message can quote the plaintext (a token): only its kind and place.
        serde_json::from_slice(&plaintext).map_err(|err| {
            VaultError::Rejected(format!(
                "sealed tokens are not a token set ({:?} error at line {} column {})",
                err.classify(),
                err.line(),
                err.column()
            ))
        })
    }

    /// The provider's learned lifetime now (not yet floored). Learning only shortens
    /// refresh times, so observations that cannot be read mean "none learned" rather
    /// than a failed refresh or connect.
    async fn learned(&self, provider: &str) -> Option<u64> {
        match self.connections.lifetime_observations(provider).await {
            Ok(observations) => learned_lifetime(&observations, unix(self.clock.now())),
            Err(err) => {
                tracing::warn!(provider, error = %error_chain(&err), "lifetime observations unreadable; using the stated lifetime");
                None
            }
        }
    }

    async fn hand_out(&self, connection: &Connection) -> Result<AccessToken, VaultError> {
        let tokens = self.tokens(connection).await?;
        Ok(AccessToken {
            value: tokens.access_token,
            generation: connection.token_generation,
            params: api_params(connection),
        })
    }

    /// Whether the connection's token is due for refresh now (with the provider's
    /// current learned lifetime).
    async fn due(&self, connection: &Connection, spec: &OAuthSpec) -> Result<bool, VaultError> {
        if !connection.refreshable {
            return Ok(false);
        }
        let Some(issued_at) = connection.token_issued_at else {
            return Ok(true);
        };
        let learned = self.learned(&connection.provider).await;
        Ok(
            refresh_at(spec, issued_at, connection.stated_lifetime, learned)
                .is_some_and(|at| unix(self.clock.now()) >= at),
        )
    }

    /// A usable access token, refreshed first if it is due.
    pub async fn access_token(&self, id: &str) -> Result<AccessToken, VaultError> {
        let connection = self.load(id).await?;
        self.access_token_of(connection).await
    }

    /// [`TokenVault::access_token`] of a connection already read.
    async fn access_token_of(&self, connection: Connection) -> Result<AccessToken, VaultError> {
        if connection.state == ConnectionState::NeedsReauth {
            return Err(VaultError::NeedsReauth(
                connection.last_error.unwrap_or_default(),
            ));
        }
        // A pasted credential has no expiry and nothing to refresh (`crate::pasted`).
        if self.is_pasted(&connection.provider) {
            return self.hand_out(&connection).await;
        }
        let spec = self.spec(&connection.provider).await?;
        if !self.due(&connection, &spec).await? {
            return self.hand_out(&connection).await;
        }
        let generation = connection.token_generation;
        self.refresh_from(connection, generation).await
    }

    /// The provider rejected `rejected` (a 401 on an API call): the token is refreshed
    /// once (or the newer token a peer already got is returned). If it was rejected
    /// before its stated expiry and that refresh succeeded, its age is recorded as this
    /// connection's lifetime observation (the module doc says how they are used).
    pub async fn token_rejected(
        &self,
        id: &str,
        rejected: &AccessToken,
    ) -> Result<AccessToken, VaultError> {
        let connection = self.load(id).await?;
        if connection.state == ConnectionState::NeedsReauth {
            return Err(VaultError::NeedsReauth(
                connection.last_error.unwrap_or_default(),
            ));
        }
        let now = unix(self.clock.now());
        let observation = match (connection.token_issued_at, connection.stated_lifetime) {
            (Some(issued_at), Some(stated))
                if connection.token_generation == rejected.generation =>
            {
                u64::try_from(now.saturating_sub(issued_at))
                    .ok()
                    .filter(|age| (1..stated).contains(age))
                    .map(|seconds| {
                        (
                            stated,
                            LifetimeObservation {
                                connection: connection.id.clone(),
                                seconds,
                                at: now,
                            },
                        )
                    })
            }
            _ => None,
        };
        let provider = connection.provider.clone();
        // A revoked grant's refresh fails here: nothing is learned from it.
        let token = self.refresh_from(connection, rejected.generation).await?;
        if let Some((stated, observation)) = observation {
            tracing::warn!(
                provider = %provider,
                connection = %observation.connection,
                observed_seconds = observation.seconds,
                stated_seconds = stated,
                "token rejected before its stated expiry, then refreshed; its age is recorded as a lifetime observation"
            );
            if let Err(err) = self
                .connections
                .record_lifetime(&provider, observation)
                .await
            {
                tracing::warn!(provider = %provider, error = %error_chain(&err), "lifetime observation not recorded");
            }
        }
        Ok(token)
    }

    /// Refreshes unless a token newer than `generation` exists; one caller refreshes,
    /// the others wait for its result.
    async fn refresh_from(
        &self,
        mut connection: Connection,
        generation: u64,
    ) -> Result<AccessToken, VaultError> {
        let owner = random_token();
        let started = std::time::Instant::now();
        let leased = loop {
            if connection.token_generation > generation {
                return self.hand_out(&connection).await;
            }
            if connection.state == ConnectionState::NeedsReauth {
                return Err(VaultError::NeedsReauth(
                    connection.last_error.unwrap_or_default(),
                ));
            }
            let now = unix(self.clock.now());
            let held = connection
                .lease
                .as_ref()
                .is_some_and(|lease| lease.until > now);
            if !held {
                let mut next = connection.clone();
                next.lease = Some(Lease {
                    owner: owner.clone(),
                    until: now + i64::try_from(self.settings.lease.as_secs()).unwrap_or(30),
                });
                next.version = connection.version + 1;
                if self
                    .connections
                    .replace(&next, connection.version)
                    .await
                    .map_err(VaultError::store)?
                {
                    break next;
                }
            } else if started.elapsed() > self.settings.wait_for_peer {
                return Err(VaultError::busy(
                    "another refresh of this connection is still running",
                ));
            } else {
                tokio::time::sleep(self.settings.poll_interval).await;
            }
            connection = self.load(&connection.id).await?;
        };
        self.refresh_holding_lease(leased).await
    }

    async fn refresh_holding_lease(&self, leased: Connection) -> Result<AccessToken, VaultError> {
        let spec = match self.spec(&leased.provider).await {
            Ok(spec) => spec,
            Err(err) => {
                self.release(&leased, Some("provider_metadata_unavailable"))
                    .await;
                return Err(err);
            }
        };
        let tokens = match self.tokens(&leased).await {
            Ok(tokens) => tokens,
            Err(err) => {
                self.release(&leased, Some("tokens_unreadable")).await;
                return Err(err);
            }
        };
        let Some(refresh_token) = tokens.refresh_token.clone() else {
            self.release(&leased, None).await;
            return Err(VaultError::NeedsReauth("no refresh token".into()));
        };
        let credentials = match self.credentials.credentials(&leased.provider).await {
            Ok(credentials) => credentials,
            Err(err) => {
                self.release(&leased, Some("client_credentials_unavailable"))
                    .await;
                return Err(VaultError::unavailable("the client credentials", err));
            }
        };
        let result = self
            .client
            .refresh(&spec, &credentials, &leased.params, &refresh_token)
            .await;
        let provider = leased.provider.as_str();
        match result {
            Ok(response) => {
                record_token_refresh(provider, RefreshOutcome::Refreshed);
                self.store_refreshed(&leased, &spec, &response, Some(refresh_token))
                    .await
            }
            Err(err @ (TokenError::Unreachable { .. } | TokenError::Transient(_))) => {
                record_token_refresh(provider, RefreshOutcome::TransientFailure);
                self.release(&leased, Some(&token_error_note(&err))).await;
                Err(VaultError::unavailable("the token endpoint", err))
            }
            Err(TokenError::Rejected(code)) => {
                record_token_refresh(provider, RefreshOutcome::Rejected);
                self.release(&leased, Some(&format!("refresh_rejected: {code}")))
                    .await;
                Err(VaultError::Rejected(code))
            }
            Err(err @ (TokenError::TooLarge(_) | TokenError::Endpoint(_))) => {
                record_token_refresh(provider, RefreshOutcome::Rejected);
                self.release(&leased, Some(&token_error_note(&err))).await;
                Err(VaultError::Rejected(error_chain(&err)))
            }
            Err(TokenError::Reauth(code)) => {
                let current = self.load(&leased.id).await?;
                if current.token_generation > leased.token_generation {
                    // Another worker refreshed meanwhile (and rotated the token we used).
                    return self.hand_out(&current).await;
                }
                record_token_refresh(provider, RefreshOutcome::NeedsReauth);
                self.mark_needs_reauth(current, &code).await?;
                Err(VaultError::NeedsReauth(code))
            }
        }
    }

    /// Stores refreshed tokens: one conditional write replacing the old pair, retried
    /// while the store is briefly unavailable (the new refresh token may be the only
    /// valid one now).
    async fn store_refreshed(
        &self,
        leased: &Connection,
        spec: &OAuthSpec,
        response: &TokenResponse,
        previous_refresh: Option<SecretString>,
    ) -> Result<AccessToken, VaultError> {
        let mut base = leased.clone();
        let mut delay = Duration::from_millis(100);
        let mut last_error = None;
        for attempt in 1..=5 {
            // Sealing (the key service) and the write are both retried: the token call
            // already happened, and a rotated refresh token lives only in `response`.
            let written = match self
                .with_tokens(&base, spec, response, previous_refresh.clone())
                .await
            {
                Ok(next) => self
                    .connections
                    .replace(&next, base.version)
                    .await
                    .map(|stored| stored.then_some(next))
                    .map_err(VaultError::store),
                Err(err) => Err(err),
            };
            match written {
                Ok(Some(next)) => {
                    return Ok(AccessToken {
                        value: response.access_token.clone(),
                        generation: next.token_generation,
                        params: api_params(&next),
                    });
                }
                Ok(None) => {
                    // Someone else wrote: a sync note, or (lease lost) newer tokens.
                    match self.connections.get(&base.id).await {
                        Ok(Some(current)) => {
                            if current.token_generation > leased.token_generation {
                                return self.hand_out(&current).await;
                            }
                            base = current;
                            continue;
                        }
                        Ok(None) => return Err(VaultError::NotFound(base.id.clone())),
                        Err(err) => last_error = Some(VaultError::store(err)),
                    }
                }
                Err(err) => last_error = Some(err),
            }
            tracing::error!(
                provider = %leased.provider,
                connection = %leased.id,
                attempt,
                error = %last_error.as_ref().map(|err| error_chain(err)).unwrap_or_default(),
                "refreshed tokens not stored yet; retrying"
            );
            tokio::time::sleep(delay).await;
            delay *= 2;
            if let Ok(Some(current)) = self.connections.get(&base.id).await {
                if current.token_generation > leased.token_generation {
                    return self.hand_out(&current).await;
                }
                base = current;
            }
        }
        Err(match last_error {
            Some(err) => VaultError::unavailable("storing the refreshed tokens", err),
            None => VaultError::busy("storing the refreshed tokens: the connection kept changing"),
        })
    }

    /// Drops the lease (when it is still ours), noting an error if there is one.
    async fn release(&self, leased: &Connection, error: Option<&str>) {
        let mut next = leased.clone();
        next.lease = None;
        next.version = leased.version + 1;
        if let Some(error) = error {
            let now = unix(self.clock.now());
            next.last_error = Some(error.to_owned());
            next.last_error_at = Some(now);
        }
        if let Err(err) = self.connections.replace(&next, leased.version).await {
            tracing::warn!(connection = %leased.id, error = %error_chain(&err), "refresh lease not released; it expires on its own");
        }
    }

    /// Applies `change` to the connection with a conditional write, re-reading and
    /// re-applying it when another writer got there first; returns what was written.
    async fn update(
        &self,
        mut current: Connection,
        change: impl Fn(&mut Connection, i64),
    ) -> Result<Connection, VaultError> {
        loop {
            let mut next = current.clone();
            change(&mut next, unix(self.clock.now()));
            next.version = current.version + 1;
            if self
                .connections
                .replace(&next, current.version)
                .await
                .map_err(VaultError::store)?
            {
                return Ok(next);
            }
            current = self.load(&current.id).await?;
        }
    }

    async fn mark_needs_reauth(&self, current: Connection, code: &str) -> Result<(), VaultError> {
        let marked = self
            .update(current, |next, now| {
                next.state = ConnectionState::NeedsReauth;
                next.lease = None;
                next.refresh_at = None;
                next.last_error = Some(format!("needs_reauth: {code}"));
                next.last_error_at = Some(now);
                next.updated_at = now;
            })
            .await?;
        tracing::warn!(
            provider = %marked.provider,
            connection = %marked.id,
            tenant = %marked.tenant,
            reason = code,
            outcome = "needs_reauth",
            "connection needs the user to reconnect"
        );
        self.announce(&marked, "needs_reauth", code).await
    }

    /// Publishes `connection.<change>`. It names the tenant and the connection, never a
    /// usable link: the product's backend reconnects by minting a connect session for
    /// that connection (`POST /v1/connect-sessions`), as only it can.
    pub(crate) async fn announce(
        &self,
        connection: &Connection,
        change: &str,
        reason: &str,
    ) -> Result<(), VaultError> {
        let data = serde_json::json!({
            "connection_id": connection.id,
            "tenant": connection.tenant,
            "provider": connection.provider,
            "account_id": connection.account_id,
            "state": connection.state.as_str(),
            "reason": reason,
        });
        let event = CloudEvent::new(
            &connection.provider,
            &format!("{}:{}", connection.id, connection.version),
            change,
            format!("connection.{change}"),
            Some(connection.id.clone()),
            junction_aws::clock::rfc3339_millis(self.clock.now()),
            data,
        )
        // Like every event about a connection, it names its tenant and connection as
        // extension attributes, so a subscriber filters all of one tenant's events alike.
        .stamped(&connection.tenant, &connection.id);
        self.bus
            .publish(std::slice::from_ref(&event))
            .await
            .map_err(|err| VaultError::unavailable("the event bus", err))
    }

    /// Refreshes every active connection whose token is due within `ahead` (the
    /// scheduled refresher), starting none after `budget` has passed (so the run ends
    /// before its Lambda timeout cuts a refresh between the token call and the write).
    ///
    /// Each connection is refreshed on its own task, at most
    /// [`VaultSettings::sweep_concurrency`] at once, taking the providers in turn; a
    /// failure is logged with its cause and counted, and the sweep goes on. After [`PROVIDER_FAILURE_LIMIT`] failures in a
    /// row of one provider, its remaining connections are skipped for this run (their
    /// tokens are still refreshed on use). Only the read of what is due can fail the run.
    pub async fn refresh_due(
        &self,
        ahead: Duration,
        budget: Duration,
    ) -> Result<RefreshReport, VaultError> {
        let started = std::time::Instant::now();
        let before = unix(self.clock.now()) + i64::try_from(ahead.as_secs()).unwrap_or_default();
        let due = self
            .connections
            .due_for_refresh(before, SWEEP_READ_LIMIT)
            .await
            .map_err(VaultError::store)?;
        let mut report = RefreshReport {
            due: due.len(),
            ..RefreshReport::default()
        };
        let mut by_provider: BTreeMap<String, VecDeque<Connection>> = BTreeMap::new();
        for entry in due {
            match entry {
                Ok(connection) => by_provider
                    .entry(connection.provider.clone())
                    .or_default()
                    .push_back(connection),
                Err(unreadable) => {
                    tracing::error!(
                        connection = %unreadable.id,
                        error = %error_chain(&unreadable),
                        outcome = "refresh_failed",
                        "due connection unreadable; not refreshed"
                    );
                    report.failed += 1;
                }
            }
        }
        // The providers in turn, so one with many due connections does not go first
        // with all of them.
        let mut order = Vec::new();
        while !by_provider.is_empty() {
            by_provider.retain(|_, queue| {
                if let Some(connection) = queue.pop_front() {
                    order.push(connection);
                }
                !queue.is_empty()
            });
        }
        let mut providers: BTreeMap<String, ProviderTally> = BTreeMap::new();
        let mut running = tokio::task::JoinSet::new();
        let mut started_tasks: HashMap<tokio::task::Id, (String, String)> = HashMap::new();
        let mut pending = order.into_iter();
        loop {
            while running.len() < self.settings.sweep_concurrency.max(1) {
                let Some(connection) = pending.next() else {
                    break;
                };
                let tally = providers.entry(connection.provider.clone()).or_default();
                if started.elapsed() >= budget {
                    report.deferred += 1;
                } else if tally.in_a_row >= PROVIDER_FAILURE_LIMIT {
                    report.skipped += 1;
                    tally.skipped += 1;
                } else {
                    let vault = self.clone();
                    let names = (connection.id.clone(), connection.provider.clone());
                    let generation = connection.token_generation;
                    let task = running.spawn(async move {
                        vault.refresh_from(connection, generation).await.map(|_| ())
                    });
                    started_tasks.insert(task.id(), names);
                }
            }
            let Some(joined) = running.join_next_with_id().await else {
                break;
            };
            let (task, result) = match joined {
                Ok((task, result)) => (task, result),
                // A panicking refresh (where panics unwind: the release profile
                // aborts) or a cancelled task.
                Err(join_error) => (
                    join_error.id(),
                    Err(VaultError::unavailable(
                        "the refresh task ended abnormally",
                        join_error,
                    )),
                ),
            };
            let (id, provider) = started_tasks.remove(&task).unwrap_or_default();
            let tally = providers.entry(provider.clone()).or_default();
            match result {
                Ok(()) => {
                    report.refreshed += 1;
                    tally.in_a_row = 0;
                }
                // The grant is gone: that user's doing, not the provider failing.
                Err(VaultError::NeedsReauth(_)) => {
                    report.needs_reauth += 1;
                    tally.in_a_row = 0;
                }
                Err(err) => {
                    tracing::warn!(
                        provider = %provider,
                        connection = %id,
                        error = %error_chain(&err),
                        outcome = "refresh_failed",
                        "scheduled refresh failed"
                    );
                    report.failed += 1;
                    tally.failed += 1;
                    tally.in_a_row += 1;
                    tally.last_error = error_chain(&err);
                }
            }
        }
        for (provider, tally) in providers.iter().filter(|(_, t)| t.failed > 0) {
            tracing::warn!(
                provider = %provider,
                failed = tally.failed,
                skipped = tally.skipped,
                last_error = %tally.last_error,
                "provider's scheduled refreshes failed"
            );
        }
        Ok(report)
    }

    /// Disconnects: revokes at the provider, deletes the tokens and the connection, and
    /// announces `connection.deleted`. A transient revocation failure keeps the
    /// connection (the caller retries); `force` deletes without revoking.
    pub async fn disconnect(&self, id: &str, force: bool) -> Result<(), VaultError> {
        let connection = self.load(id).await?;
        // While the tokens exist. A forced disconnect goes on without it: the provider
        // ends what is left at its own expiry.
        if let Some(teardown) = &self.teardown
            && let Err(err) = teardown.teardown(&connection).await
        {
            if !force {
                return Err(VaultError::unavailable("tearing the connection down", err));
            }
            tracing::warn!(
                provider = %connection.provider,
                connection = %connection.id,
                error = %error_chain(&err),
                outcome = "teardown_failed",
                "forced disconnect goes on without the teardown"
            );
        }
        // OAuth 1.0a grants end as their `[oauth1]` section says (`crate::oauth1`).
        let oauth1 = self
            .catalog
            .get(&connection.provider)
            .and_then(|p| p.oauth1.as_ref());
        if !force && connection.tokens.is_some() && oauth1.is_some() {
            self.revoke_oauth1(&connection).await?;
        }
        // Forced, nothing of the provider's entry is needed: a connection whose provider
        // lost its OAuth section (an overlay, a release) can still be deleted.
        // A pasted credential has no revocation: only Junction's copy is deleted.
        let pasted = self.is_pasted(&connection.provider);
        if !force && connection.tokens.is_some() && oauth1.is_none() && !pasted {
            let spec = self.spec(&connection.provider).await?;
            let tokens = self.tokens(&connection).await?;
            let credentials = self
                .credentials
                .credentials(&connection.provider)
                .await
                .map_err(|err| VaultError::unavailable("the client credentials", err))?;
            self.client
                .revoke(
                    &spec,
                    &credentials,
                    &connection.params,
                    &tokens.access_token,
                    tokens.refresh_token.as_ref(),
                    connection.account_id.as_deref(),
                )
                .await
                .map_err(|err| match err {
                    TokenError::Unreachable { .. } | TokenError::Transient(_) => {
                        VaultError::unavailable("revoking the grant at the provider", err)
                    }
                    TokenError::Reauth(code) | TokenError::Rejected(code) => {
                        VaultError::Rejected(code)
                    }
                    TokenError::TooLarge(_) | TokenError::Endpoint(_) => {
                        VaultError::Rejected(error_chain(&err))
                    }
                })?;
        }
        self.connections
            .delete(id)
            .await
            .map_err(VaultError::store)?;
        let mut gone = connection;
        gone.tokens = None;
        tracing::info!(
            provider = %gone.provider,
            connection = %gone.id,
            tenant = %gone.tenant,
            outcome = "deleted",
            revoked = !force,
            "connection deleted"
        );
        self.announce(
            &gone,
            "deleted",
            if force {
                "deleted_without_revocation"
            } else {
                "revoked"
            },
        )
        .await
    }

    /// Sends a provider API request with the connection's token; on a 401 the token is
    /// reported rejected (refreshed once, its lifetime learned) and the request is sent
    /// once more with the new token. Any other status is the caller's to interpret.
    pub async fn send_authorized<F>(
        &self,
        id: &str,
        build: F,
    ) -> Result<reqwest::Response, VaultError>
    where
        F: Fn(&AccessToken) -> reqwest::RequestBuilder,
    {
        let connection = self.load(id).await?;
        // OAuth 1.0a connections sign each request instead (`crate::oauth1`).
        if self
            .catalog
            .get(&connection.provider)
            .is_some_and(|provider| provider.oauth1.is_some())
        {
            return self.send_oauth1(connection, build).await;
        }
        // A pasted credential cannot be refreshed: a 401 means the provider no longer
        // takes it (revoked where it was issued), so only the user can mend it: the
        // connection needs a reconnect, announced like a refused refresh token. The
        // answer still goes to the caller.
        if self.is_pasted(&connection.provider) {
            let token = self.access_token_of(connection).await?;
            let response = build(&token).send().await.map_err(unreachable)?;
            if response.status() == reqwest::StatusCode::UNAUTHORIZED {
                let marked = match self.load(id).await {
                    Ok(current) if current.state == ConnectionState::Active => {
                        self.mark_needs_reauth(current, "credential_rejected").await
                    }
                    Ok(_) => Ok(()),
                    Err(err) => Err(err),
                };
                if let Err(err) = marked {
                    tracing::warn!(
                        connection = %id,
                        error = %junction_telemetry::error_chain(&err),
                        outcome = "needs_reauth_not_recorded",
                        "a refused pasted credential could not be marked"
                    );
                }
            }
            return Ok(response);
        }
        let token = self.access_token_of(connection).await?;
        let response = build(&token).send().await.map_err(unreachable)?;
        if response.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let token = self.token_rejected(id, &token).await?;
        build(&token).send().await.map_err(unreachable)
    }

    /// Notes a sync's result on the connection (the poll worker and the outbound path).
    pub async fn record_sync(&self, id: &str, error: Option<&str>) -> Result<(), VaultError> {
        let current = self.load(id).await?;
        self.update(current, |next, now| match error {
            None => next.last_successful_sync = Some(now),
            Some(error) => {
                next.last_error = Some(error.to_owned());
                next.last_error_at = Some(now);
            }
        })
        .await
        .map(|_| ())
    }
}
