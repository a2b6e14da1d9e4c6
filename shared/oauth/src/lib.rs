//! OAuth connections: connect sessions, the connect flow (start + callback with state
//! and PKCE), the token vault (KMS envelope encryption, refresh ahead of expiry under a
//! lease, learned lifetimes, re-auth detection) and disconnect (revocation at the
//! provider).
//!
//! Provider differences are data in the catalog's `[oauth]` sections
//! ([`junction_catalog::OAuthSpec`]); this module holds the one implementation of each
//! step. A provider with `[pasted_credential]` (Telegram's bot token) is connected
//! through a form on the same connect sessions and pending states ([`pasted`]). Storage is behind ports ([`ConnectionStore`], [`StateStore`],
//! [`ConnectSessionStore`]) with DynamoDB and in-memory adapters; provider calls go
//! through [`ProviderClient`] (HTTP, a timeout on every call). A connect starts only
//! from a connect session the product's backend minted ([`session`]).

mod connections;
pub mod discovery;
mod flow;
pub mod log;
pub mod oauth1;
pub mod pasted;
mod provider;
mod provider_account;
pub mod session;
pub mod settings;
mod state;
mod vault;
pub mod web;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};

pub use connections::{
    Connection, ConnectionState, ConnectionStore, ConnectionStoreError, DynamoConnectionStore,
    InMemoryConnectionStore, Lease, LifetimeObservation, OBSERVATION_WINDOW_SECONDS,
    PROVIDER_ACCOUNT_ATTRIBUTE, UnreadableConnection, check_connection_store_contract,
    sample_connection, with_last_events,
};
pub use flow::{
    CallbackOutcome, CallbackQuery, ConnectFlow, ConnectionSetup, ConnectionSetupError, FlowError,
    FlowSettings, StartRedirect, StartRequest,
};
pub use provider::{
    ClientCredentials, CredentialsError, OAuthCredentials, ProviderClient, SecretCredentials,
    TokenError, TokenResponse,
};
pub use provider_account::ProviderAccount;
pub use session::{
    ConnectSession, ConnectSessionRequest, ConnectSessionStore, ConnectSessions,
    DynamoConnectSessionStore, EndUser, InMemoryConnectSessionStore, MintedSession, SessionTake,
};
pub use state::{
    BoundTake, DynamoStateStore, InMemoryStateStore, PendingAuthorization, StateStore,
};
pub use vault::{
    AccessToken, PROVIDER_FAILURE_LIMIT, RefreshReport, TokenSet, TokenVault, UnreachableReason,
    VaultError, VaultSettings,
};
pub use vault::{ConnectionTeardown, ConnectionTeardownError};

/// An error and its causes, for a log line (never for a page a user sees).
pub(crate) use junction_telemetry::error_chain;

/// 256 random bits, base64url: OAuth `state` values and connection ids.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A PKCE verifier (RFC 7636 §4.1: 43 characters from 32 random bytes) and its S256
/// challenge.
pub(crate) fn pkce_pair() -> (String, String) {
    let verifier = random_token();
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// `hex(sha256(value))`: how state values are keyed in storage, so a read of the table
/// does not hand out usable states.
pub(crate) fn state_key(state: &str) -> String {
    hex::encode(Sha256::digest(state.as_bytes()))
}

/// A new connection id: `conn_` and 32 hex characters (128 random bits).
pub(crate) fn new_connection_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("conn_{}", hex::encode(bytes))
}

/// The vault over AWS: DynamoDB connections, KMS, Secrets Manager credentials, the
/// EventBridge bus and the system clock. Built once per cold start.
pub fn aws_vault(
    aws: &aws_config::SdkConfig,
    catalog: &'static junction_catalog::Catalog,
    settings: &crate::settings::OAuthSettings,
) -> TokenVault {
    TokenVault::new(
        catalog,
        std::sync::Arc::new(DynamoConnectionStore::from_config(
            aws,
            settings.connections_table.clone(),
        )),
        std::sync::Arc::new(junction_aws::crypto::KmsKeyService::from_config(
            aws,
            settings.token_key_id.clone(),
        )),
        std::sync::Arc::new(SecretCredentials::new(
            junction_aws::secrets::SecretsManagerSource::from_config(aws),
            settings.secret_prefix.clone(),
        )),
        ProviderClient::new(),
        std::sync::Arc::new(junction_aws::events::EventBridgeBus::from_config(
            aws,
            settings.event_bus.clone(),
        )),
        std::sync::Arc::new(junction_aws::clock::SystemClock),
        VaultSettings::default(),
    )
}
