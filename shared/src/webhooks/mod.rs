//! Webhook ingress logic: signature verification driven by the catalog, handshakes,
//! and the ingress service that turns a verified request into one queue message.
//!
//! Depends on the ports in [`crate::secrets`], [`crate::queue`] and [`crate::payloads`],
//! never on an SDK directly.

use std::fmt;

mod handshake;
mod ingress;
mod json_pointers;
pub mod jwt;
mod verify;

pub use handshake::{
    HandshakeReply, HandshakeRequest, UnsignedHandshake, answer_handshake, meta_reply,
    twitter_crc_reply, unsigned_handshake,
};
pub use ingress::{
    Ingress, IngressConfig, Outcome, WebhookRequest, WebhookResponse, rfc3339_millis,
};
pub use verify::{
    SignError, Signed, SignedRequest, VerifyError, development_keys, ecdsa_p256_public_key,
    ed25519_public_key, sign, sign_into, sign_request, url_with_body_hash, verify, verify_matching,
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

/// Compared in constant time (tests compare handshake outcomes that carry one).
impl PartialEq for SigningSecret {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq as _;
        bool::from(self.expose().as_bytes().ct_eq(other.expose().as_bytes()))
    }
}

impl Eq for SigningSecret {}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}
