//! Handshake answers, byte-exact, with the providers' documented shapes.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::*;

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    map
}

fn signed(kind: Handshake, header_pairs: &[(&str, &str)], body: &[u8]) -> Option<HandshakeReply> {
    let headers = headers(header_pairs);
    let request = HandshakeRequest {
        query: "",
        headers: &headers,
        body,
    };
    answer_handshake(
        kind,
        &request,
        Some(&SigningSecret::new("zoom-secret-token")),
    )
}

fn unsigned(
    kind: Handshake,
    method: &str,
    query: &str,
    header_pairs: &[(&str, &str)],
    body: &[u8],
) -> Option<UnsignedHandshake> {
    let headers = headers(header_pairs);
    let request = HandshakeRequest {
        query,
        headers: &headers,
        body,
    };
    unsigned_handshake(kind, method, &request)
}

#[test]
fn slack_challenge_is_echoed_as_text() {
    // Shape from https://docs.slack.dev/reference/events/url_verification
    let body = br#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let reply = signed(Handshake::SlackUrlVerification, &[], body).expect("handshake");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type, Some("text/plain"));
    assert_eq!(
        reply.body,
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );
}

#[test]
fn slack_event_callback_is_not_a_handshake() {
    let body = br#"{"type":"event_callback","event_id":"Ev1","challenge":"x"}"#;
    assert_eq!(signed(Handshake::SlackUrlVerification, &[], body), None);
}

#[test]
fn discord_ping_gets_pong() {
    let reply = signed(Handshake::DiscordPing, &[], br#"{"type":1,"id":"1"}"#).expect("pong");
    assert_eq!(reply.body, r#"{"type":1}"#);
    assert_eq!(reply.content_type, Some("application/json"));
    assert_eq!(signed(Handshake::DiscordPing, &[], br#"{"type":2}"#), None);
}

/// discord-api-docs `developers/events/webhook-events.mdx`: PING is `type` 0, answered
/// 204 with no body; events are `type` 1.
#[test]
fn discord_webhook_events_ping_gets_204() {
    let body = br#"{"version":1,"application_id":"1234560123453231555","type":0}"#;
    let reply = signed(Handshake::DiscordWebhookPing, &[], body).expect("ping");
    assert_eq!((reply.status, reply.body.as_str()), (204, ""));
    assert_eq!(reply.content_type, None);
    let event =
        br#"{"version":1,"application_id":"1","type":1,"event":{"type":"APPLICATION_AUTHORIZED"}}"#;
    assert_eq!(signed(Handshake::DiscordWebhookPing, &[], event), None);
}

/// Zoom's docs ("Validate your webhook endpoint"): encryptedToken is the hex
/// HMAC-SHA256 of plainToken keyed with the secret token; the expected value here is an
/// independent computation of that formula.
#[test]
fn zoom_url_validation_answers_plain_and_encrypted_token() {
    let body = br#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#;
    let reply = signed(Handshake::ZoomUrlValidation, &[], body).expect("validation");
    let mut mac = Hmac::<Sha256>::new_from_slice(b"zoom-secret-token").expect("key");
    mac.update(b"qgg8vlvZRS6UYooatFL8Aw");
    let expected = hex::encode(mac.finalize().into_bytes());
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type, Some("application/json"));
    assert_eq!(
        reply.body,
        format!(r#"{{"plainToken":"qgg8vlvZRS6UYooatFL8Aw","encryptedToken":"{expected}"}}"#)
    );
    let event = br#"{"event":"meeting.started","payload":{"plainToken":"x"}}"#;
    assert_eq!(signed(Handshake::ZoomUrlValidation, &[], event), None);
    // A plainToken shaped like Zoom's signed text `v0:<ts>:<body>` is never MACed with
    // the delivery key (nor is anything that is not token-shaped).
    for token in ["v0:1700000000:{}", "a b", "{\"a\":1}"] {
        let body = serde_json::json!({
            "event": "endpoint.url_validation",
            "payload": { "plainToken": token },
        })
        .to_string();
        assert_eq!(
            signed(Handshake::ZoomUrlValidation, &[], body.as_bytes()),
            None,
            "{token}"
        );
    }
}

/// dev.twitch.tv "Handling webhook events": respond with the raw challenge, text/plain.
#[test]
fn twitch_challenge_is_echoed_only_for_the_verification_message_type() {
    let body = br#"{"challenge":"pogchamp-kappa-360noscope-vohiyo","subscription":{"id":"f1c2a387-161a-49f9-a165-0f21d7a4e1c4","status":"webhook_callback_verification_pending","type":"channel.follow","version":"1"}}"#;
    let reply = signed(
        Handshake::TwitchCallbackVerification,
        &[(
            "Twitch-Eventsub-Message-Type",
            "webhook_callback_verification",
        )],
        body,
    )
    .expect("challenge");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type, Some("text/plain"));
    assert_eq!(reply.body, "pogchamp-kappa-360noscope-vohiyo");
    assert_eq!(
        signed(
            Handshake::TwitchCallbackVerification,
            &[("Twitch-Eventsub-Message-Type", "notification")],
            body
        ),
        None
    );
}

#[test]
fn xero_intent_to_receive_is_an_empty_200_and_real_events_are_not() {
    let body =
        br#"{"events":[],"lastEventSequence":0,"firstEventSequence":0,"entropy":"S0m3r4Nd0mt3xt"}"#;
    let reply = signed(Handshake::XeroIntentToReceive, &[], body).expect("itr");
    assert_eq!((reply.status, reply.body.as_str()), (200, ""));
    let events = br#"{"events":[{"resourceId":"1","eventCategory":"INVOICE"}]}"#;
    assert_eq!(signed(Handshake::XeroIntentToReceive, &[], events), None);
}

/// developer.okta.com "Event hooks": `{"verification":"<challenge>"}`.
#[test]
fn okta_verification_echoes_the_challenge_as_json() {
    let reply = signed(
        Handshake::OktaVerification,
        &[("x-okta-verification-challenge", "X4uL2Lwlg8pdwmxLmpUxlWRa")],
        b"",
    )
    .expect("verification");
    assert_eq!(reply.body, r#"{"verification":"X4uL2Lwlg8pdwmxLmpUxlWRa"}"#);
    assert_eq!(reply.content_type, Some("application/json"));
    assert_eq!(signed(Handshake::OktaVerification, &[], b""), None);
}

#[test]
fn dropbox_challenge_is_echoed_with_nosniff() {
    let reply = unsigned(
        Handshake::DropboxChallenge,
        "GET",
        "challenge=7Zu2xRzVm2bM",
        &[],
        b"",
    );
    let Some(UnsignedHandshake::Reply(reply)) = reply else {
        panic!("{reply:?}");
    };
    assert_eq!(reply.body, "7Zu2xRzVm2bM");
    assert_eq!(reply.content_type, Some("text/plain"));
    assert_eq!(
        reply.headers,
        vec![("x-content-type-options", "nosniff".to_owned())]
    );
    assert!(matches!(
        unsigned(Handshake::DropboxChallenge, "GET", "", &[], b""),
        Some(UnsignedHandshake::Malformed)
    ));
    assert!(
        unsigned(
            Handshake::DropboxChallenge,
            "POST",
            "challenge=x",
            &[],
            b"{}"
        )
        .is_none(),
        "a POST is a delivery"
    );
}

/// learn.microsoft.com "Receive change notifications through webhooks": the token is
/// URL-encoded in the query and must be returned decoded, as text/plain.
#[test]
fn graph_validation_token_is_returned_decoded() {
    let reply = unsigned(
        Handshake::GraphValidationToken,
        "POST",
        "validationToken=Validation%3A%20Testing%20client%20application%20reachability%20for%20subscription%20Request-Id%3A%2025b3e2b2",
        &[],
        b"",
    );
    let Some(UnsignedHandshake::Reply(reply)) = reply else {
        panic!("{reply:?}");
    };
    assert_eq!(
        reply.body,
        "Validation: Testing client application reachability for subscription Request-Id: 25b3e2b2"
    );
    assert!(
        unsigned(Handshake::GraphValidationToken, "POST", "", &[], b"{}").is_none(),
        "a notification"
    );
}

#[test]
fn meta_challenge_needs_the_configured_verify_token() {
    let query = "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhock";
    let Some(UnsignedHandshake::CheckVerifyToken {
        presented,
        challenge,
    }) = unsigned(Handshake::MetaHubChallenge, "GET", query, &[], b"")
    else {
        panic!("a subscription check");
    };
    let configured = SigningSecret::new("meatyhamhock");
    let ok = meta_reply(&presented, challenge.clone(), Some(&configured));
    assert_eq!(
        ok,
        HandshakeReply {
            status: 200,
            content_type: Some("text/plain"),
            headers: vec![("x-content-type-options", "nosniff".to_owned())],
            body: "1158201444".to_owned(),
        }
    );
    let other = SigningSecret::new("another-token");
    assert_eq!(
        meta_reply(&presented, challenge.clone(), Some(&other)).status,
        403
    );
    assert_eq!(meta_reply(&presented, challenge, None).status, 403);
    assert!(matches!(
        unsigned(
            Handshake::MetaHubChallenge,
            "GET",
            "hub.mode=unsubscribe&hub.challenge=1&hub.verify_token=t",
            &[],
            b""
        ),
        Some(UnsignedHandshake::Malformed)
    ));
}

/// X's CRC (docs.x.com "Securing webhooks"): `sha256=` + base64 HMAC-SHA256 of the
/// crc_token keyed with the consumer secret; an independent computation here.
#[test]
fn twitter_crc_answers_the_hmac_of_token_shaped_input_only() {
    let Some(UnsignedHandshake::SignChallenge { token }) = unsigned(
        Handshake::TwitterCrc,
        "GET",
        "crc_token=Y2hhbGxlbmdl-_token",
        &[],
        b"",
    ) else {
        panic!("a CRC");
    };
    let reply = twitter_crc_reply(&token, &SigningSecret::new("consumer-secret")).expect("reply");
    let mut mac = Hmac::<Sha256>::new_from_slice(b"consumer-secret").expect("key");
    mac.update(b"Y2hhbGxlbmdl-_token");
    let expected = BASE64.encode(mac.finalize().into_bytes());
    assert_eq!(
        reply.body,
        format!(r#"{{"response_token":"sha256={expected}"}}"#)
    );
    // A token that could be a JSON body is never signed (the CRC would be a signing oracle).
    assert!(matches!(
        unsigned(
            Handshake::TwitterCrc,
            "GET",
            "crc_token=%7B%22a%22%3A1%7D",
            &[],
            b""
        ),
        Some(UnsignedHandshake::Malformed)
    ));
}

#[test]
fn notion_verification_token_is_stored_not_echoed() {
    let body = br#"{"verification_token":"secret_tMrlL1qK5vuQAh1b6cZGhFChZTSYJlce98V0pYn7yBl"}"#;
    let Some(UnsignedHandshake::StoreSecret { secret, reply }) =
        unsigned(Handshake::NotionVerificationToken, "POST", "", &[], body)
    else {
        panic!("a verification request");
    };
    assert_eq!(
        secret.expose(),
        "secret_tMrlL1qK5vuQAh1b6cZGhFChZTSYJlce98V0pYn7yBl"
    );
    assert_eq!((reply.status, reply.body.as_str()), (200, ""));
    // A signed request is a delivery, whatever its body says.
    assert!(
        unsigned(
            Handshake::NotionVerificationToken,
            "POST",
            "",
            &[("X-Notion-Signature", "sha256=00")],
            body
        )
        .is_none()
    );
    assert!(
        unsigned(
            Handshake::NotionVerificationToken,
            "POST",
            "",
            &[],
            br#"{"type":"page.created"}"#
        )
        .is_none()
    );
}

#[test]
fn asana_hook_secret_is_echoed_and_stored() {
    let Some(UnsignedHandshake::StoreSecret { secret, reply }) = unsigned(
        Handshake::AsanaHookSecret,
        "POST",
        "",
        &[(
            "X-Hook-Secret",
            "b537207f20cbfa02357cf448134da559e8bd39d61597dcd5631b8012eae53e81",
        )],
        b"",
    ) else {
        panic!("a handshake");
    };
    assert_eq!(
        secret.expose(),
        "b537207f20cbfa02357cf448134da559e8bd39d61597dcd5631b8012eae53e81"
    );
    assert_eq!(
        reply,
        HandshakeReply {
            status: 200,
            content_type: None,
            headers: vec![(
                "x-hook-secret",
                "b537207f20cbfa02357cf448134da559e8bd39d61597dcd5631b8012eae53e81".to_owned()
            )],
            body: String::new(),
        }
    );
    assert!(
        unsigned(
            Handshake::AsanaHookSecret,
            "POST",
            "",
            &[],
            b"{\"events\":[]}"
        )
        .is_none()
    );
}

#[test]
fn non_json_body_is_not_a_handshake() {
    assert_eq!(signed(Handshake::DiscordPing, &[], b"\xff"), None);
    assert_eq!(
        signed(Handshake::SlackUrlVerification, &[], b"token=x"),
        None
    );
}

#[test]
fn control_characters_are_never_echoed() {
    assert!(matches!(
        unsigned(
            Handshake::DropboxChallenge,
            "GET",
            "challenge=a%0D%0ASet-Cookie%3A%20x",
            &[],
            b""
        ),
        Some(UnsignedHandshake::Malformed)
    ));
}
