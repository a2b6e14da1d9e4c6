//! Handshakes a provider expects the endpoint itself to answer. They run only after the
//! request verified, and a handshake is never enqueued.

use serde::Deserialize;

use crate::catalog::Handshake;

/// The response a handshake needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// The reply to a verified request when it is the provider's handshake, `None` when it
/// is an ordinary delivery.
pub fn answer_handshake(kind: Handshake, body: &[u8]) -> Option<HandshakeReply> {
    match kind {
        Handshake::SlackUrlVerification => {
            #[derive(Deserialize)]
            struct UrlVerification {
                r#type: String,
                challenge: String,
            }
            let request: UrlVerification = serde_json::from_slice(body).ok()?;
            (request.r#type == "url_verification").then_some(HandshakeReply {
                status: 200,
                content_type: "text/plain",
                body: request.challenge,
            })
        }
        Handshake::DiscordPing => {
            #[derive(Deserialize)]
            struct Interaction {
                r#type: u8,
            }
            let request: Interaction = serde_json::from_slice(body).ok()?;
            (request.r#type == 1).then(|| HandshakeReply {
                status: 200,
                content_type: "application/json",
                body: r#"{"type":1}"#.to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_challenge_is_echoed_as_text() {
        // Shape from https://docs.slack.dev/reference/events/url_verification
        let body = br#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
        let reply = answer_handshake(Handshake::SlackUrlVerification, body).expect("handshake");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.content_type, "text/plain");
        assert_eq!(
            reply.body,
            "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
        );
    }

    #[test]
    fn slack_event_callback_is_not_a_handshake() {
        let body = br#"{"type":"event_callback","event_id":"Ev1","challenge":"x"}"#;
        assert_eq!(
            answer_handshake(Handshake::SlackUrlVerification, body),
            None
        );
    }

    #[test]
    fn discord_ping_gets_pong() {
        let reply =
            answer_handshake(Handshake::DiscordPing, br#"{"type":1,"id":"1"}"#).expect("pong");
        assert_eq!(reply.body, r#"{"type":1}"#);
        assert_eq!(
            answer_handshake(Handshake::DiscordPing, br#"{"type":2}"#),
            None
        );
    }

    #[test]
    fn non_json_body_is_not_a_handshake() {
        assert_eq!(answer_handshake(Handshake::DiscordPing, b"\xff"), None);
        assert_eq!(
            answer_handshake(Handshake::SlackUrlVerification, b"token=x"),
            None
        );
    }
}
