//! Connect sessions: the product's backend's proof that it asked for a connection.
//!
//! `POST /v1/connect-sessions` (IAM-authorized) checks what the backend asks for
//! (tenant, provider, the connection to reconnect, `return_to` against the allow-list,
//! the provider's URL parameters) and stores it under the SHA-256 of a fresh 256-bit
//! token, for ten minutes by default and never more than thirty. The token travels only
//! in the connect URL (`<base>/oauth/<provider>/start?session=<token>`) the backend
//! hands its user; `start` consumes it with one conditional delete, so a link works
//! once, for its provider, before it expires, even when two requests race. Tenant and
//! connection ids are not secrets: without a session, `start` does nothing.
//!
//! The same role as Nango's connect session tokens
//! (<https://docs.nango.dev/reference/api/connect/sessions/create>).
//!
//! Sessions are kept behind a port ([`ConnectSessionStore`]): DynamoDB
//! ([`DynamoConnectSessionStore`], in its own module `dynamo`, the only one here that
//! knows the SDK) and memory.

use std::{collections::BTreeMap, sync::Arc, sync::Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{
    TokenVault,
    connections::ConnectionStoreError,
    flow::{FlowError, FlowSettings, checked_params, checked_return_to, unavailable},
    random_token, state_key,
};
use junction_aws::crypto::SecretString;

mod dynamo;

pub use dynamo::DynamoConnectSessionStore;

/// How long a session lasts unless the request says otherwise (ten minutes).
pub const DEFAULT_SESSION_TTL_SECONDS: u32 = 600;
/// The shortest lifetime a request may ask for.
pub const MIN_SESSION_TTL_SECONDS: u32 = 10;
/// The longest lifetime a request may ask for (thirty minutes): a leaked link stops
/// working soon.
pub const MAX_SESSION_TTL_SECONDS: u32 = 1_800;

/// The product's user a session is for, as the product knows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndUser {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// The body of `POST /v1/connect-sessions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectSessionRequest {
    pub tenant: String,
    pub provider: String,
    /// An existing connection to re-authorize: the callback then requires the same
    /// provider account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// Where the user goes afterwards (an allowed origin); the stack's default when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_user: Option<EndUser>,
    /// The provider's URL parameters (Shopify's `shop`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// A reconnect may bring back another provider account than the connection's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_account_change: bool,
    /// The account is the provider's sandbox (a test account): the nightly contract
    /// check runs against the connection (docs/contracts.md).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sandbox: bool,
    /// The session's lifetime, 10 to 1,800 seconds (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u32>,
}

/// A stored session: what `start` will do, already checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectSession {
    pub provider: String,
    pub tenant: String,
    /// The connection to re-authorize, if any.
    pub connection: Option<String>,
    /// Checked against the allow-list.
    pub return_to: String,
    pub end_user: Option<EndUser>,
    /// Validated URL parameters.
    pub params: BTreeMap<String, String>,
    pub allow_account_change: bool,
    /// The connection will be marked a sandbox ([`ConnectSessionRequest::sandbox`]).
    #[serde(default)]
    pub sandbox: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds after which `start` refuses it.
    pub expires_at: i64,
}

/// A new session: its token (given out once, stored only as a hash) and connect URL.
#[derive(Debug, Clone)]
pub struct MintedSession {
    pub token: SecretString,
    /// `<base>/oauth/<provider>/start?session=<token>`.
    pub connect_url: String,
    pub session: ConnectSession,
}

/// What [`ConnectSessionStore::take`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionTake {
    /// Removed and returned: it was unexpired and for this provider.
    Taken(Box<ConnectSession>),
    /// It exists but its time is up (DynamoDB's TTL removes it later).
    Expired,
    /// It was minted for another provider: left in place.
    OtherProvider,
    /// Never minted, or already used.
    Missing,
}

/// Single-use storage of connect sessions, keyed by the hash of their token.
#[async_trait]
pub trait ConnectSessionStore: Send + Sync + std::fmt::Debug {
    /// Stores a new session; fails rather than overwrite an existing key.
    async fn put(&self, key: &str, session: &ConnectSession) -> Result<(), ConnectionStoreError>;

    /// Removes and returns the session if it is for `provider` and `now` (Unix seconds)
    /// is before its expiry: one conditional operation, so of two requests with the same
    /// token at most one gets it.
    async fn take(
        &self,
        key: &str,
        provider: &str,
        now: i64,
    ) -> Result<SessionTake, ConnectionStoreError>;
}

/// `hex(sha256(token))`: the storage key, so a read of the table hands out no usable
/// session.
pub fn session_key(token: &str) -> String {
    state_key(token)
}

fn store_error(err: impl std::error::Error + Send + Sync + 'static) -> ConnectionStoreError {
    ConnectionStoreError(Box::new(err))
}

/// Connect sessions in memory.
#[derive(Debug, Default)]
pub struct InMemoryConnectSessionStore {
    sessions: Mutex<BTreeMap<String, ConnectSession>>,
}

impl InMemoryConnectSessionStore {
    /// How many sessions are stored (used or not yet).
    pub fn len(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl ConnectSessionStore for InMemoryConnectSessionStore {
    async fn put(&self, key: &str, session: &ConnectSession) -> Result<(), ConnectionStoreError> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.contains_key(key) {
            return Err(store_error(std::io::Error::other("the session key exists")));
        }
        sessions.insert(key.to_owned(), session.clone());
        Ok(())
    }

    async fn take(
        &self,
        key: &str,
        provider: &str,
        now: i64,
    ) -> Result<SessionTake, ConnectionStoreError> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        Ok(match sessions.get(key) {
            None => SessionTake::Missing,
            Some(stored) if stored.provider != provider => SessionTake::OtherProvider,
            Some(stored) if stored.expires_at <= now => SessionTake::Expired,
            Some(_) => sessions
                .remove(key)
                .map_or(SessionTake::Missing, |s| SessionTake::Taken(Box::new(s))),
        })
    }
}

/// Mints connect sessions (the management API's `POST /v1/connect-sessions`).
#[derive(Debug, Clone)]
pub struct ConnectSessions {
    vault: TokenVault,
    sessions: Arc<dyn ConnectSessionStore>,
    settings: FlowSettings,
}

impl ConnectSessions {
    pub fn new(
        vault: TokenVault,
        sessions: Arc<dyn ConnectSessionStore>,
        settings: FlowSettings,
    ) -> Self {
        ConnectSessions {
            vault,
            sessions,
            settings,
        }
    }

    /// Checks `request` as `start` will, stores the session and returns its token and
    /// connect URL under `base_url` (the API's public base URL).
    pub async fn mint(
        &self,
        request: &ConnectSessionRequest,
        base_url: &str,
    ) -> Result<MintedSession, FlowError> {
        let ttl = request.ttl_seconds.unwrap_or(DEFAULT_SESSION_TTL_SECONDS);
        if !(MIN_SESSION_TTL_SECONDS..=MAX_SESSION_TTL_SECONDS).contains(&ttl) {
            return Err(FlowError::BadRequest(format!(
                "ttl_seconds must be between {MIN_SESSION_TTL_SECONDS} and {MAX_SESSION_TTL_SECONDS}"
            )));
        }
        if !super::flow::valid_tenant(&request.tenant) {
            return Err(FlowError::BadRequest(
                "tenant is required: 1-128 characters of letters, digits and -_.:@".into(),
            ));
        }
        if let Some(end_user) = &request.end_user {
            let fits = |text: &str| text.chars().count() <= 256 && !text.contains(char::is_control);
            if end_user.id.is_empty()
                || !fits(&end_user.id)
                || !end_user.display_name.as_deref().is_none_or(fits)
            {
                return Err(FlowError::BadRequest(
                    "end_user.id is required and end_user fields are at most 256 characters of text"
                        .into(),
                ));
            }
        }
        let provider = request.provider.as_str();
        let entry = self
            .vault
            .catalog
            .get(provider)
            .filter(|p| {
                p.oauth.is_some()
                    || p.oauth_discovery.is_some()
                    || p.oauth1.is_some()
                    || p.pasted_credential.is_some()
            })
            .ok_or_else(|| FlowError::UnknownProvider(provider.to_owned()))?;
        // Only a catalog `[oauth]` section has URL parameters: a discovered provider's
        // metadata is for `start` to fetch, not for the management API.
        let none = BTreeMap::new();
        let url_parameters = entry
            .oauth
            .as_ref()
            .map_or(&none, |spec| &spec.url_parameters);
        let return_to = checked_return_to(&self.settings, request.return_to.as_deref())?;
        let params = checked_params(url_parameters, &request.params)?;
        if let Some(id) = &request.connection {
            super::flow::reconnect_target(
                &self.vault,
                url_parameters,
                id,
                &request.tenant,
                provider,
                &params,
            )
            .await?;
        }
        let now = self.vault.clock.now().unix_timestamp();
        let session = ConnectSession {
            provider: provider.to_owned(),
            tenant: request.tenant.clone(),
            connection: request.connection.clone(),
            return_to,
            end_user: request.end_user.clone(),
            params,
            allow_account_change: request.allow_account_change,
            sandbox: request.sandbox,
            created_at: now,
            expires_at: now + i64::from(ttl),
        };
        let token = random_token();
        self.sessions
            .put(&session_key(&token), &session)
            .await
            .map_err(unavailable("storing the connect session"))?;
        tracing::info!(
            provider,
            tenant = %session.tenant,
            connection = session.connection.as_deref().unwrap_or(""),
            expires_at = session.expires_at,
            outcome = "session_created",
            "connect session created"
        );
        Ok(MintedSession {
            connect_url: connect_url(base_url, provider, &token),
            token: SecretString::new(token),
            session,
        })
    }
}

/// `<base>/oauth/<provider>/start?session=<token>`.
pub fn connect_url(base_url: &str, provider: &str, token: &str) -> String {
    format!(
        "{}/oauth/{provider}/start?session={token}",
        base_url.trim_end_matches('/')
    )
}
