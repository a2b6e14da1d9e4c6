//! Webhook ingress logic: signature verification driven by the catalog, handshakes,
//! and the ingress service that turns a verified request into one queue message.
//!
//! Depends on the ports in [`crate::secrets`], [`crate::queue`] and [`crate::payloads`],
//! never on an SDK directly.

use std::fmt;

mod handshake;
mod ingress;
mod verify;

pub use handshake::{HandshakeReply, answer_handshake};
pub use ingress::{
    Ingress, IngressConfig, Outcome, WebhookRequest, WebhookResponse, rfc3339_millis,
};
pub use verify::{
    SignError, SignedRequest, VerifyError, ed25519_public_key, sign, sign_into, url_with_body_hash,
    verify,
};

/// One signing secret (or, for Ed25519 schemes, the provider's public key) as
/// configured. Zeroized on drop; never printed.
#[derive(Clone)]
pub struct SigningSecret(zeroize::Zeroizing<String>);

impl SigningSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        SigningSecret(zeroize::Zeroizing::new(secret.into()))
    }

    /// The secret text, for key derivation only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}
