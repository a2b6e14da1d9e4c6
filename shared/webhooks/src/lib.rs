//! Webhook ingress logic: signature verification driven by the catalog, handshakes,
//! and the ingress service that turns a verified request into one queue message.
//!
//! Depends on the ports in [`junction_aws::secrets`], [`junction_aws::queue`] and [`junction_aws::payloads`],
//! never on an SDK directly.

mod handshake;
mod ingress;
mod json_pointers;
pub mod jwt;
pub mod log;
mod raw_json;
pub mod settings;
mod verify;

pub use handshake::{
    HandshakeReply, HandshakeRequest, UnsignedHandshake, answer_handshake, meta_reply,
    twitter_crc_reply, unsigned_handshake,
};
pub use ingress::{
    Ingress, IngressConfig, Outcome, WebhookReason, WebhookRequest, WebhookResponse, WebhookResult,
};
pub use verify::{
    SignError, Signed, SignedRequest, VerifyError, development_keys, ecdsa_p256_public_key,
    ed25519_public_key, sign, sign_into, sign_request, url_with_body_hash, verify, verify_matching,
};

pub use junction_aws::secrets::SigningSecret;
