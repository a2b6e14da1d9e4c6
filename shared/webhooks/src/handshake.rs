//! Handshakes and challenges a provider expects the endpoint itself to answer. None of
//! them is ever enqueued.
//!
//! Two kinds: those that arrive signed run only after the request verified
//! ([`answer_handshake`]); those the provider sends unsigned (Meta, Twitter/X CRC,
//! Dropbox, Microsoft Graph validation, Notion's verification token, Asana's
//! `X-Hook-Secret`) are recognised before verification ([`unsigned_handshake`]) and
//! answered without touching anything a delivery could change. An unsigned handshake
//! that would install a secret only does so when none is configured yet.
//!
//! No answer may pass for a delivery's signature. Only two answers are MACs keyed with
//! the delivery key: X's CRC, of any token-shaped string anyone sends (the catalog
//! requires `body = "json_object"` of its entry, which no token is), and Zoom's, of a
//! token-shaped `plainToken` from a verified request (Zoom signs `v0:<ts>:<body>`).

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::SigningSecret;
use junction_catalog::Handshake;

/// Challenge values longer than this are not echoed (none of the providers sends more).
const MAX_CHALLENGE_BYTES: usize = 1024;

/// The response a handshake needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeReply {
    pub status: u16,
    pub content_type: Option<&'static str>,
    /// Extra response headers (Dropbox's `nosniff`, Asana's `X-Hook-Secret` echo).
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl HandshakeReply {
    fn text(body: String) -> Self {
        HandshakeReply {
            status: 200,
            content_type: Some("text/plain"),
            headers: vec![("x-content-type-options", "nosniff".to_owned())],
            body,
        }
    }

    fn json(body: String) -> Self {
        HandshakeReply {
            status: 200,
            content_type: Some("application/json"),
            headers: Vec::new(),
            body,
        }
    }

    fn empty(status: u16) -> Self {
        HandshakeReply {
            status,
            content_type: None,
            headers: Vec::new(),
            body: String::new(),
        }
    }
}

/// The parts of a request a handshake reads.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeRequest<'a> {
    /// The raw query string, without `?`.
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

impl HandshakeRequest<'_> {
    fn query_param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// A challenge worth echoing: present, short, and plain printable ASCII.
fn echoable(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_CHALLENGE_BYTES
        && value.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

/// The reply to a *verified* request when it is the provider's handshake, `None` when
/// it is an ordinary delivery. `secret` is the secret that verified it (Zoom answers
/// with an HMAC keyed with it).
pub fn answer_handshake(
    kind: Handshake,
    request: &HandshakeRequest<'_>,
    secret: Option<&SigningSecret>,
) -> Option<HandshakeReply> {
    let body = request.body;
    match kind {
        Handshake::SlackUrlVerification => {
            #[derive(Deserialize)]
            struct UrlVerification {
                r#type: String,
                challenge: String,
            }
            let request: UrlVerification = serde_json::from_slice(body).ok()?;
            (request.r#type == "url_verification" && echoable(&request.challenge))
                .then(|| HandshakeReply::text(request.challenge))
        }
        Handshake::DiscordPing => {
            #[derive(Deserialize)]
            struct Interaction {
                r#type: u8,
            }
            let request: Interaction = serde_json::from_slice(body).ok()?;
            (request.r#type == 1).then(|| HandshakeReply::json(r#"{"type":1}"#.to_owned()))
        }
        Handshake::DiscordWebhookPing => {
            #[derive(Deserialize)]
            struct Event {
                r#type: u8,
            }
            let request: Event = serde_json::from_slice(body).ok()?;
            (request.r#type == 0).then(|| HandshakeReply::empty(204))
        }
        Handshake::ZoomUrlValidation => {
            #[derive(Deserialize)]
            struct Validation {
                event: String,
                payload: Payload,
            }
            #[derive(Deserialize)]
            struct Payload {
                #[serde(rename = "plainToken")]
                plain_token: String,
            }
            let request: Validation = serde_json::from_slice(body).ok()?;
            // Only token-shaped input is MACed with the delivery key: Zoom's delivery
            // signatures cover `v0:<timestamp>:<body>`, which no token is.
            if request.event != "endpoint.url_validation" || !is_token(&request.payload.plain_token)
            {
                return None;
            }
            let mut mac = Hmac::<Sha256>::new_from_slice(secret?.expose().as_bytes()).ok()?;
            mac.update(request.payload.plain_token.as_bytes());
            let encrypted = hex::encode(mac.finalize().into_bytes());
            // The order of Zoom's documented example; both values are JSON-escaped.
            let plain = serde_json::Value::from(request.payload.plain_token).to_string();
            Some(HandshakeReply::json(format!(
                r#"{{"plainToken":{plain},"encryptedToken":"{encrypted}"}}"#
            )))
        }
        Handshake::TwitchCallbackVerification => {
            #[derive(Deserialize)]
            struct Verification {
                challenge: String,
            }
            if request.header("twitch-eventsub-message-type")
                != Some("webhook_callback_verification")
            {
                return None;
            }
            let verification: Verification = serde_json::from_slice(body).ok()?;
            echoable(&verification.challenge).then(|| HandshakeReply::text(verification.challenge))
        }
        Handshake::XeroIntentToReceive => {
            #[derive(Deserialize)]
            struct Delivery {
                events: Vec<serde_json::Value>,
            }
            let delivery: Delivery = serde_json::from_slice(body).ok()?;
            delivery
                .events
                .is_empty()
                .then(|| HandshakeReply::empty(200))
        }
        Handshake::OktaVerification => {
            let challenge = request.header("x-okta-verification-challenge")?;
            echoable(challenge).then(|| {
                HandshakeReply::json(serde_json::json!({ "verification": challenge }).to_string())
            })
        }
        Handshake::MetaHubChallenge
        | Handshake::TwitterCrc
        | Handshake::DropboxChallenge
        | Handshake::GraphValidationToken
        | Handshake::NotionVerificationToken
        | Handshake::AsanaHookSecret => None,
    }
}

/// What an unsigned handshake needs from the ingress. Not comparable: it can carry a
/// secret.
#[derive(Debug, Clone)]
pub enum UnsignedHandshake {
    /// Send this reply.
    Reply(HandshakeReply),
    /// Compare `presented` with the configured `verify_token` (Meta), then answer
    /// [`meta_reply`].
    CheckVerifyToken {
        presented: String,
        challenge: String,
    },
    /// Answer with an HMAC of `token` keyed with the signing secret (Twitter/X CRC):
    /// [`twitter_crc_reply`].
    SignChallenge { token: String },
    /// Install `secret` as the signing secret if none is configured yet, then send
    /// `reply` (Notion, Asana). Otherwise refuse: a configured secret is never replaced
    /// by an unsigned request.
    StoreSecret {
        secret: SigningSecret,
        reply: HandshakeReply,
    },
    /// The request is the handshake's method but not a well-formed handshake.
    Malformed,
}

/// Recognises an unsigned handshake before verification; `None` means "not a handshake,
/// verify as a delivery". `method` is the HTTP method as received.
pub fn unsigned_handshake(
    kind: Handshake,
    method: &str,
    request: &HandshakeRequest<'_>,
) -> Option<UnsignedHandshake> {
    if !kind.before_verification() {
        return None;
    }
    if kind.is_get() {
        if method != "GET" {
            return None;
        }
    } else if method != "POST" {
        return None;
    }
    let echo = |value: Option<String>| match value {
        Some(value) if echoable(&value) => UnsignedHandshake::Reply(HandshakeReply::text(value)),
        _ => UnsignedHandshake::Malformed,
    };
    match kind {
        Handshake::DropboxChallenge => Some(echo(request.query_param("challenge"))),
        Handshake::GraphValidationToken => request
            .query_param("validationToken")
            .map(|token| echo(Some(token))),
        Handshake::MetaHubChallenge => {
            let mode = request.query_param("hub.mode");
            let presented = request.query_param("hub.verify_token");
            let challenge = request.query_param("hub.challenge");
            Some(match (mode.as_deref(), presented, challenge) {
                (Some("subscribe"), Some(presented), Some(challenge))
                    if echoable(&challenge) && !presented.is_empty() =>
                {
                    UnsignedHandshake::CheckVerifyToken {
                        presented,
                        challenge,
                    }
                }
                _ => UnsignedHandshake::Malformed,
            })
        }
        Handshake::TwitterCrc => Some(match request.query_param("crc_token") {
            // A CRC answer is an HMAC of the token with the key that signs deliveries,
            // for anyone who asks: only token-shaped input is answered, and the entry's
            // `body = "json_object"` makes the ingress refuse any body that is not a
            // JSON object (which no token is), so no answer verifies as a delivery.
            Some(token) if is_token(&token) => UnsignedHandshake::SignChallenge { token },
            _ => UnsignedHandshake::Malformed,
        }),
        Handshake::NotionVerificationToken => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Verification {
                verification_token: String,
            }
            if request.headers.contains_key("x-notion-signature") {
                return None;
            }
            let verification: Verification = serde_json::from_slice(request.body).ok()?;
            let token = verification.verification_token;
            Some(if echoable(&token) {
                UnsignedHandshake::StoreSecret {
                    secret: SigningSecret::new(token),
                    reply: HandshakeReply::empty(200),
                }
            } else {
                UnsignedHandshake::Malformed
            })
        }
        Handshake::AsanaHookSecret => {
            let secret = request.header("x-hook-secret")?;
            Some(if echoable(secret) {
                UnsignedHandshake::StoreSecret {
                    secret: SigningSecret::new(secret),
                    reply: HandshakeReply {
                        headers: vec![("x-hook-secret", secret.to_owned())],
                        ..HandshakeReply::empty(200)
                    },
                }
            } else {
                UnsignedHandshake::Malformed
            })
        }
        _ => None,
    }
}

/// Letters, digits and `+ / = - _`, at most 256 bytes: the base64 and base64url
/// strings X's `crc_token` and Zoom's `plainToken` are, and never JSON or a colon.
fn is_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'))
}

/// Meta's answer: the challenge when the presented token equals the configured one
/// (compared in constant time), 403 otherwise (and when none is configured).
pub fn meta_reply(
    presented: &str,
    challenge: String,
    configured: Option<&SigningSecret>,
) -> HandshakeReply {
    let matches = configured.is_some_and(|configured| {
        bool::from(presented.as_bytes().ct_eq(configured.expose().as_bytes()))
    });
    if matches {
        HandshakeReply::text(challenge)
    } else {
        HandshakeReply {
            content_type: Some("application/json"),
            body: r#"{"error":"verify_token_mismatch"}"#.to_owned(),
            ..HandshakeReply::empty(403)
        }
    }
}

/// Twitter/X's CRC answer: `{"response_token":"sha256=<base64 HMAC-SHA256>"}`.
pub fn twitter_crc_reply(token: &str, secret: &SigningSecret) -> Option<HandshakeReply> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).ok()?;
    mac.update(token.as_bytes());
    let response = format!("sha256={}", BASE64.encode(mac.finalize().into_bytes()));
    Some(HandshakeReply::json(
        serde_json::json!({ "response_token": response }).to_string(),
    ))
}

#[cfg(test)]
#[path = "handshake_tests.rs"]
mod tests;
