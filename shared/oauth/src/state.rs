//! Pending authorizations, keyed by the hash of their OAuth `state`: written at start,
//! consumed once at the callback by a conditional delete, so a replayed state finds
//! nothing. The delete is also conditional on the browser binding: a callback from
//! another browser (a stolen callback URL) is refused without consuming the state, so
//! it cannot burn the real user's attempt. They expire after ten minutes (checked by
//! the flow; DynamoDB's TTL only sweeps them later).
//!
//! They are kept behind a port ([`StateStore`]): DynamoDB ([`DynamoStateStore`], in its
//! own module `dynamo`, the only one here that knows the SDK) and memory.

use std::{collections::BTreeMap, sync::Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::connections::ConnectionStoreError;
use junction_aws::crypto::SecretString;

mod dynamo;

pub use dynamo::DynamoStateStore;

/// What the callback needs to finish what the start began. Not comparable: it holds
/// the PKCE verifier.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingAuthorization {
    pub provider: String,
    pub tenant: String,
    /// Where the user goes afterwards (already checked against the allow-list).
    pub return_to: String,
    /// The exact redirect URI sent to the authorize endpoint (the token call repeats it).
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    /// The PKCE verifier, where the provider takes PKCE: stored with the state (a
    /// server-side item that expires with it), the one place it is serialized.
    #[serde(with = "junction_aws::crypto::stored::option", default)]
    pub pkce_verifier: Option<SecretString>,
    /// Validated URL parameters (`shop`, `tenant`, `login_domain`).
    pub params: BTreeMap<String, String>,
    /// The connection being re-authorized, if any.
    pub reconnect: Option<String>,
    /// `sha256` of the browser-binding cookie set at start (login CSRF protection).
    pub browser_binding: String,
    /// Unix seconds after which the state is refused.
    pub expires_at: i64,
    /// The OpenID Connect `nonce` sent to the authorize endpoint; the ID token must
    /// carry it.
    #[serde(default)]
    pub nonce: Option<String>,
    /// The connect session allowed a reconnect to bring back another provider account.
    #[serde(default)]
    pub allow_account_change: bool,
    /// The connect session marked the connection a sandbox.
    #[serde(default)]
    pub sandbox: bool,
    /// The product's user the connect session named.
    #[serde(default)]
    pub end_user: Option<super::session::EndUser>,
    /// OAuth 1.0a: the temporary credentials the callback's `oauth_token` must match and
    /// whose secret signs the token-credentials request (stored as the PKCE verifier is).
    #[serde(default)]
    pub oauth1: Option<super::oauth1::TemporaryCredentials>,
}

/// What [`StateStore::take_bound`] found.
#[derive(Debug, Clone)]
pub enum BoundTake {
    /// Removed and returned: the binding matched.
    Taken(Box<PendingAuthorization>),
    /// It exists but was started in another browser: left in place.
    OtherBrowser,
    /// Never issued, or already used.
    Missing,
}

/// Single-use storage of pending authorizations.
#[async_trait]
pub trait StateStore: Send + Sync + std::fmt::Debug {
    async fn put(
        &self,
        key: &str,
        pending: &PendingAuthorization,
    ) -> Result<(), ConnectionStoreError>;

    /// Removes and returns the pending authorization if its `browser_binding` is
    /// `binding` (the hash of the cookie the callback came with); one conditional
    /// operation, so of two callbacks with the same state at most one gets it, and one
    /// from another browser leaves it for the real user.
    async fn take_bound(&self, key: &str, binding: &str)
    -> Result<BoundTake, ConnectionStoreError>;
}

/// Whether two binding hashes are equal, in constant time.
fn bindings_match(stored: &str, presented: &str) -> bool {
    subtle::ConstantTimeEq::ct_eq(stored.as_bytes(), presented.as_bytes()).into()
}

/// Pending authorizations in memory.
#[derive(Debug, Default)]
pub struct InMemoryStateStore {
    pending: Mutex<BTreeMap<String, PendingAuthorization>>,
}

impl InMemoryStateStore {
    /// How many pending authorizations are stored.
    pub fn len(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl StateStore for InMemoryStateStore {
    async fn put(
        &self,
        key: &str,
        pending: &PendingAuthorization,
    ) -> Result<(), ConnectionStoreError> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_owned(), pending.clone());
        Ok(())
    }

    async fn take_bound(
        &self,
        key: &str,
        binding: &str,
    ) -> Result<BoundTake, ConnectionStoreError> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        Ok(match pending.get(key) {
            None => BoundTake::Missing,
            Some(stored) if !bindings_match(&stored.browser_binding, binding) => {
                BoundTake::OtherBrowser
            }
            Some(_) => pending
                .remove(key)
                .map_or(BoundTake::Missing, |p| BoundTake::Taken(Box::new(p))),
        })
    }
}
