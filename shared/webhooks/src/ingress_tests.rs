//! Ingress service tests with in-memory ports: status codes, what is (and is not)
//! enqueued, handshakes, secret rotation and oversized bodies.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};

use super::*;
use crate::{SigningSecret, sign_into};
use junction_aws::clock::FixedClock;
use junction_aws::payloads::InMemoryPayloadStore;
use junction_aws::queue::InMemoryEventQueue;
use junction_aws::secrets::{CachePolicy, InMemorySecretSource, SecretSource as _};

const NOW: i64 = 1_700_000_000;
const SECRET: &str = "dev-secret-for-tests";

struct Harness {
    ingress: Ingress,
    secrets: Arc<InMemorySecretSource>,
    queue: Arc<InMemoryEventQueue>,
    payloads: Arc<InMemoryPayloadStore>,
    clock: Arc<FixedClock>,
}

fn harness(config: IngressConfig) -> Harness {
    let secrets = Arc::new(InMemorySecretSource::default());
    for provider in [
        "github",
        "stripe",
        "slack",
        "square",
        "hubspot",
        "shopify",
        "zoom",
        "twitter",
        "adyen",
        "microsoft",
        "salesforce",
        "xero",
        "okta",
        "twitch",
    ] {
        secrets.put(
            format!("junction/webhooks/{provider}"),
            format!(r#"{{"signing_secrets":["{SECRET}"]}}"#),
        );
    }
    let queue = Arc::new(InMemoryEventQueue::default());
    let payloads = Arc::new(InMemoryPayloadStore::default());
    let clock = Arc::new(FixedClock::at_unix(NOW));
    let ingress = Ingress::new(
        Catalog::embedded().expect("catalog"),
        WebhookSecrets::new(secrets.clone(), "junction", CachePolicy::default()),
        queue.clone(),
        payloads.clone(),
        clock.clone(),
        config,
    )
    .with_handshake_store(secrets.clone());
    Harness {
        ingress,
        secrets,
        queue,
        payloads,
        clock,
    }
}

fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    headers
}

/// A request to `/webhooks/<provider>` signed with `secret` the way the provider does.
fn signed(
    provider: &str,
    secret: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    now: i64,
) -> WebhookRequest {
    let mut headers = header_map(extra);
    headers.insert("host", HeaderValue::from_static("hooks.example.com"));
    let path = format!("/webhooks/{provider}");
    let url = format!("https://hooks.example.com{path}");
    let spec = Catalog::embedded()
        .expect("catalog")
        .get(provider)
        .and_then(|p| p.verification())
        .expect("spec");
    let at = time::OffsetDateTime::from_unix_timestamp(now).expect("time");
    let secret = SigningSecret::new(secret);
    let signed_body = sign_into(spec, &secret, "POST", &url, &mut headers, body, at).expect("sign");
    WebhookRequest {
        method: "POST".into(),
        provider: provider.into(),
        endpoint: None,
        path,
        raw_query: String::new(),
        headers,
        body: signed_body.unwrap_or_else(|| body.to_vec()),
    }
}

fn github(body: &[u8]) -> WebhookRequest {
    signed(
        "github",
        SECRET,
        &[
            ("x-github-event", "push"),
            ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            ("content-type", "application/json"),
            ("x-hub-signature", "sha1=ignored"),
        ],
        body,
        NOW,
    )
}

#[tokio::test]
async fn verified_webhook_becomes_exactly_one_message_with_its_attributes() {
    let h = harness(IngressConfig::default());
    let body = br#"{"ref":"refs/heads/main"}"#;
    let (response, outcome) = h.ingress.handle(github(body)).await;
    assert_eq!(response.status, 200);
    assert_eq!(outcome.result, WebhookResult::Accepted);
    let messages = h.queue.messages();
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.body.as_bytes(), body);
    let attr = |name: &str| message.attributes.get(name).map(String::as_str);
    assert_eq!(attr(attribute::PROVIDER), Some("github"));
    assert_eq!(
        attr(attribute::EVENT_ID),
        Some("72d3162e-cc78-11e3-81ab-4c9367dc0958")
    );
    assert_eq!(attr(attribute::EVENT_ID_SOURCE), Some("header"));
    assert_eq!(attr(attribute::EVENT_TYPE), Some("push"));
    assert_eq!(
        attr(attribute::RECEIVED_AT),
        Some("2023-11-14T22:13:20.000Z")
    );
    assert_eq!(attr(attribute::BODY_ENCODING), Some("utf8"));
    assert_eq!(attr(attribute::ENDPOINT), None);
    let headers: serde_json::Value =
        serde_json::from_str(attr(attribute::HEADERS).expect("headers")).expect("json");
    assert_eq!(headers["x-github-event"], "push");
    assert_eq!(headers["content-type"], "application/json");
    assert!(
        headers.get("x-hub-signature-256").is_none(),
        "signatures are not forwarded"
    );
    assert!(
        message.attributes.len() <= 10,
        "SQS allows at most 10 attributes"
    );
}

#[tokio::test]
async fn unknown_provider_is_404_and_nothing_is_read_or_enqueued() {
    let h = harness(IngressConfig::default());
    let mut request = github(b"{}");
    request.provider = "nope".into();
    let (response, outcome) = h.ingress.handle(request).await;
    assert_eq!(
        (response.status, outcome.reason),
        (404, Some(WebhookReason::UnknownProvider))
    );
    assert_eq!(response.body, r#"{"error":"unknown_provider"}"#);
    assert_eq!(h.secrets.reads(), 0);
    assert!(h.queue.messages().is_empty());
}

#[tokio::test]
async fn odd_endpoint_names_are_404() {
    let h = harness(IngressConfig::default());
    let mut request = github(b"{}");
    request.endpoint = Some("../../etc".into());
    let (response, _) = h.ingress.handle(request).await;
    assert_eq!(response.status, 404);
    assert!(h.queue.messages().is_empty());
}

/// `github` posted to `/webhooks/github/<endpoint>`, signed with `secret`.
fn github_at(endpoint: &str, secret: &str, body: &[u8]) -> WebhookRequest {
    let mut request = signed(
        "github",
        secret,
        &[
            ("x-github-event", "installation"),
            ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            ("content-type", "application/json"),
        ],
        body,
        NOW,
    );
    request.endpoint = Some(endpoint.to_owned());
    request.path = format!("/webhooks/github/{endpoint}");
    request
}

/// Regression ("Nothing lost at the edges", point 2): any endpoint name verified with
/// the provider's secret and was deduplicated apart, so one captured GitHub delivery
/// posted to N fresh names became N CloudEvents. Now an endpoint exists only when
/// configured, and everything else is 404 with nothing read past the secret lookup.
#[tokio::test]
async fn one_delivery_posted_to_made_up_endpoint_names_is_404_every_time() {
    let h = harness(IngressConfig::default());
    let body = br#"{"action":"created","installation":{"id":4242}}"#;
    assert_eq!(
        h.ingress
            .handle(github_at("x", SECRET, body))
            .await
            .0
            .status,
        404
    );
    for n in 0..20 {
        let (response, outcome) = h
            .ingress
            .handle(github_at(&format!("fresh-{n}"), SECRET, body))
            .await;
        assert_eq!(
            (response.status, outcome.reason),
            (404, Some(WebhookReason::UnknownEndpoint))
        );
        assert!(!outcome.is_verification_failure());
    }
    assert!(h.queue.messages().is_empty(), "nothing was enqueued");
    // The provider's own URL still takes it.
    let mut at_provider = github_at("x", SECRET, body);
    at_provider.endpoint = None;
    at_provider.path = "/webhooks/github".into();
    assert_eq!(h.ingress.handle(at_provider).await.0.status, 200);
}

/// Endpoints the provider's secret declares verify with it; an endpoint with a secret
/// of its own verifies only with that one. The messages of one delivery name the same
/// provider, account and event id wherever it was posted: what the consumer claims.
#[tokio::test]
async fn configured_endpoints_exist_and_their_messages_share_the_claim_key_parts() {
    let h = harness(IngressConfig::default());
    h.secrets.put(
        "junction/webhooks/github",
        format!(r#"{{"signing_secrets":["{SECRET}"],"endpoints":["team-a","team_b"]}}"#),
    );
    h.secrets.put(
        "junction/webhooks/github/own",
        r#"{"signing_secrets":["own-secret"]}"#,
    );
    let body = br#"{"action":"created","installation":{"id":4242}}"#;
    for endpoint in ["team-a", "team_b"] {
        let (response, _) = h.ingress.handle(github_at(endpoint, SECRET, body)).await;
        assert_eq!(response.status, 200, "{endpoint}");
    }
    assert_eq!(
        h.ingress
            .handle(github_at("own", "own-secret", body))
            .await
            .0
            .status,
        200
    );
    let (response, outcome) = h.ingress.handle(github_at("own", SECRET, body)).await;
    assert_eq!(
        (response.status, outcome.reason),
        (401, Some(WebhookReason::SignatureMismatch)),
        "the provider's secret does not verify an endpoint with its own"
    );
    assert_eq!(
        h.ingress
            .handle(github_at("team-c", SECRET, body))
            .await
            .0
            .status,
        404
    );
    let messages = h.queue.messages();
    assert_eq!(messages.len(), 3);
    let parts = |message: &QueueMessage| {
        [attribute::PROVIDER, attribute::ACCOUNT, attribute::EVENT_ID]
            .map(|name| message.attributes.get(name).cloned())
    };
    assert_eq!(
        parts(&messages[0]),
        [
            Some("github".to_owned()),
            Some("4242".to_owned()),
            Some("72d3162e-cc78-11e3-81ab-4c9367dc0958".to_owned())
        ]
    );
    assert!(messages.iter().all(|m| parts(m) == parts(&messages[0])));
    let endpoints: Vec<_> = messages
        .iter()
        .map(|m| m.attributes.get(attribute::ENDPOINT).cloned())
        .collect();
    assert_eq!(
        endpoints,
        [
            Some("team-a".to_owned()),
            Some("team_b".to_owned()),
            Some("own".to_owned())
        ]
    );
}

/// An unconfigured endpoint cannot be claimed by a handshake either: Asana's would
/// otherwise create a secret under any name anyone posts to.
#[tokio::test]
async fn a_handshake_to_an_unconfigured_endpoint_installs_nothing() {
    let h = harness(IngressConfig::default());
    let mut request = unsigned_request(
        "asana",
        "POST",
        "",
        &[("x-hook-secret", "attacker-secret")],
        b"",
    );
    request.endpoint = Some("anything".into());
    request.path = "/webhooks/asana/anything".into();
    let (response, outcome) = h.ingress.handle(request).await;
    assert_eq!(
        (response.status, outcome.reason),
        (404, Some(WebhookReason::UnknownEndpoint))
    );
    assert_eq!(
        h.secrets
            .secret_string("junction/webhooks/asana/anything")
            .await
            .expect("read"),
        None
    );
}

#[tokio::test]
async fn only_post_is_accepted() {
    let h = harness(IngressConfig::default());
    let mut request = github(b"{}");
    request.method = "GET".into();
    let (response, _) = h.ingress.handle(request).await;
    assert_eq!(response.status, 405);
}

#[tokio::test]
async fn oversized_body_is_413_before_any_signature_work() {
    let h = harness(IngressConfig {
        max_body_bytes: 16,
        ..IngressConfig::default()
    });
    let (response, outcome) = h.ingress.handle(github(&[b'a'; 17])).await;
    assert_eq!(
        (response.status, outcome.reason),
        (413, Some(WebhookReason::BodyTooLarge))
    );
    assert_eq!(
        h.secrets.reads(),
        0,
        "no secret is read for a body over the limit"
    );
    // A declared length over the limit is refused even if the body seen is short.
    let mut request = github(b"{}");
    request
        .headers
        .insert("content-length", HeaderValue::from_static("17"));
    let (response, _) = h.ingress.handle(request).await;
    assert_eq!(response.status, 413);
    assert!(h.queue.messages().is_empty());
}

#[tokio::test]
async fn bad_signature_is_401_with_a_reason_code_only() {
    let h = harness(IngressConfig::default());
    let mut request = github(br#"{"a":1}"#);
    request.body = br#"{"a":2}"#.to_vec();
    let (response, outcome) = h.ingress.handle(request).await;
    assert_eq!(response.status, 401);
    assert_eq!(response.body, r#"{"error":"signature_mismatch"}"#);
    assert!(outcome.is_verification_failure());
    assert!(h.queue.messages().is_empty());

    let mut request = github(b"{}");
    request.headers.remove("x-hub-signature-256");
    let (response, outcome) = h.ingress.handle(request).await;
    assert_eq!(
        (response.status, outcome.reason),
        (401, Some(WebhookReason::MissingSignature))
    );
}

#[tokio::test]
async fn stale_timestamp_is_401() {
    let h = harness(IngressConfig::default());
    let request = signed(
        "stripe",
        SECRET,
        &[],
        br#"{"id":"evt_1","type":"a.b"}"#,
        NOW - 301,
    );
    let (response, outcome) = h.ingress.handle(request).await;
    assert_eq!(
        (response.status, outcome.reason),
        (401, Some(WebhookReason::StaleTimestamp))
    );
    assert!(h.queue.messages().is_empty());
}

#[tokio::test]
async fn provider_without_a_configured_secret_is_503_so_the_provider_retries() {
    let h = harness(IngressConfig::default());
    let request = signed(
        "linear",
        SECRET,
        &[],
        br#"{"webhookTimestamp":1700000000000}"#,
        NOW,
    );
    let (response, outcome) = h.ingress.handle(request).await;
    assert_eq!(
        (response.status, outcome.reason),
        (503, Some(WebhookReason::SecretNotConfigured))
    );
}

#[tokio::test]
async fn queue_failure_is_503_so_the_provider_retries() {
    let h = harness(IngressConfig::default());
    h.queue.set_failing(true);
    let (response, outcome) = h.ingress.handle(github(b"{}")).await;
    assert_eq!(
        (response.status, outcome.reason),
        (503, Some(WebhookReason::EnqueueFailed))
    );
    // On-call sees why (an SQS AccessDenied, say); the provider sees only the code.
    assert_eq!(
        outcome.cause.as_deref(),
        Some("could not send to the queue: in-memory queue set to fail")
    );
    assert!(!response.body.contains("in-memory"), "{}", response.body);
}

#[tokio::test]
async fn slack_url_verification_is_answered_and_not_enqueued() {
    let h = harness(IngressConfig::default());
    let body = br#"{"token":"t","challenge":"c-123","type":"url_verification"}"#;
    let (response, outcome) = h
        .ingress
        .handle(signed("slack", SECRET, &[], body, NOW))
        .await;
    assert_eq!(
        (response.status, response.body.as_str(), outcome.result),
        (200, "c-123", WebhookResult::Handshake)
    );
    assert!(h.queue.messages().is_empty());
    // An unsigned challenge is not answered.
    let mut request = signed("slack", "wrong", &[], body, NOW);
    request.headers.remove("x-slack-signature");
    let (response, _) = h.ingress.handle(request).await;
    assert_eq!(response.status, 401);
}

#[tokio::test]
async fn rotated_secret_takes_effect_without_a_restart_but_at_most_once_a_minute() {
    let h = harness(IngressConfig::default());
    assert_eq!(h.ingress.handle(github(b"{}")).await.0.status, 200);
    h.secrets.put(
        "junction/webhooks/github",
        r#"{"signing_secrets":["rotated-secret","dev-secret-for-tests"]}"#,
    );
    let rotated = || {
        signed(
            "github",
            "rotated-secret",
            &[("x-github-delivery", "d2")],
            b"{}",
            NOW,
        )
    };
    h.clock.advance(time::Duration::seconds(30));
    let (response, _) = h.ingress.handle(rotated()).await;
    assert_eq!(
        response.status, 401,
        "the cache is not re-read within a minute of the last read"
    );
    h.clock.advance(time::Duration::seconds(31));
    let (response, outcome) = h.ingress.handle(rotated()).await;
    assert_eq!(response.status, 200);
    assert!(outcome.secrets_refreshed);
    assert_eq!(h.secrets.reads(), 2);
}

#[tokio::test]
async fn body_too_large_for_a_message_goes_to_the_payload_store() {
    let h = harness(IngressConfig {
        max_message_bytes: 2048,
        ..IngressConfig::default()
    });
    let body = format!(r#"{{"blob":"{}"}}"#, "x".repeat(4096));
    let (response, outcome) = h.ingress.handle(github(body.as_bytes())).await;
    assert_eq!(response.status, 200);
    assert!(outcome.offloaded);
    let messages = h.queue.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0]
            .attributes
            .get(attribute::BODY_ENCODING)
            .map(String::as_str),
        Some("s3")
    );
    let key = messages[0]
        .body
        .strip_prefix("s3://in-memory/")
        .expect("s3 pointer");
    assert!(key.starts_with("webhooks/github/2023-11-14/"), "{key}");
    assert_eq!(h.payloads.get(key).as_deref(), Some(body.as_bytes()));
    assert!(messages[0].size() <= 2048);
}

#[tokio::test]
async fn bodies_sqs_cannot_carry_as_text_are_base64() {
    let h = harness(IngressConfig::default());
    let body = b"\x00\x01binary\xff";
    let (response, _) = h.ingress.handle(github(body)).await;
    assert_eq!(response.status, 200);
    let message = &h.queue.messages()[0];
    assert_eq!(
        message
            .attributes
            .get(attribute::BODY_ENCODING)
            .map(String::as_str),
        Some("base64")
    );
    use base64::Engine as _;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(&message.body)
            .expect("b64"),
        body
    );
}

#[tokio::test]
async fn event_id_comes_from_the_body_or_falls_back_to_its_hash() {
    let h = harness(IngressConfig::default());
    let stripe = signed(
        "stripe",
        SECRET,
        &[],
        br#"{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","type":"invoice.paid"}"#,
        NOW,
    );
    assert_eq!(h.ingress.handle(stripe).await.0.status, 200);
    let hubspot_body = br#"[{"eventId":1,"subscriptionType":"contact.creation"}]"#;
    let hubspot = signed("hubspot", SECRET, &[], hubspot_body, NOW);
    assert_eq!(h.ingress.handle(hubspot).await.0.status, 200);
    let messages = h.queue.messages();
    let attr = |i: usize, name: &str| messages[i].attributes.get(name).cloned();
    assert_eq!(
        attr(0, attribute::EVENT_ID).as_deref(),
        Some("evt_1NG8Du2eZvKYlo2CUI79vXWy")
    );
    assert_eq!(attr(0, attribute::EVENT_ID_SOURCE).as_deref(), Some("json"));
    assert_eq!(
        attr(0, attribute::EVENT_TYPE).as_deref(),
        Some("invoice.paid")
    );
    assert_eq!(
        attr(1, attribute::EVENT_ID),
        Some(hex::encode(Sha256::digest(hubspot_body)))
    );
    assert_eq!(
        attr(1, attribute::EVENT_ID_SOURCE).as_deref(),
        Some("body_sha256")
    );
}

#[tokio::test]
async fn url_signing_providers_verify_against_the_public_url() {
    // Behind API Gateway: scheme from X-Forwarded-Proto, host from Host.
    let h = harness(IngressConfig::default());
    let mut request = signed(
        "square",
        SECRET,
        &[("x-forwarded-proto", "https")],
        br#"{"event_id":"e1"}"#,
        NOW,
    );
    assert_eq!(h.ingress.handle(request.clone()).await.0.status, 200);
    // Behind a custom domain the configured base URL is what the provider signed.
    let h = harness(IngressConfig {
        public_base_url: Some("https://hooks.example.com/".into()),
        ..IngressConfig::default()
    });
    request.headers.insert(
        "host",
        HeaderValue::from_static("abc123.execute-api.us-east-1.amazonaws.com"),
    );
    assert_eq!(h.ingress.handle(request).await.0.status, 200);
}

fn unsigned_request(
    provider: &str,
    method: &str,
    query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> WebhookRequest {
    let mut headers = header_map(headers);
    headers.insert("host", HeaderValue::from_static("hooks.example.com"));
    WebhookRequest {
        method: method.into(),
        provider: provider.into(),
        endpoint: None,
        path: format!("/webhooks/{provider}"),
        raw_query: query.into(),
        headers,
        body: body.to_vec(),
    }
}

#[tokio::test]
async fn account_named_by_the_payload_is_carried_on_the_message() {
    let h = harness(IngressConfig::default());
    let slack = br#"{"type":"event_callback","team_id":"T0001","event_id":"Ev1","event":{"type":"app_mention"}}"#;
    assert_eq!(
        h.ingress
            .handle(signed("slack", SECRET, &[], slack, NOW))
            .await
            .0
            .status,
        200
    );
    let shopify = signed(
        "shopify",
        SECRET,
        &[
            ("x-shopify-shop-domain", "junction-dev.myshopify.com"),
            ("x-shopify-webhook-id", "w1"),
        ],
        b"{}",
        NOW,
    );
    assert_eq!(h.ingress.handle(shopify).await.0.status, 200);
    let hubspot = br#"[{"eventId":1,"portalId":62515}]"#;
    assert_eq!(
        h.ingress
            .handle(signed("hubspot", SECRET, &[], hubspot, NOW))
            .await
            .0
            .status,
        200
    );
    let github = br#"{"action":"opened","installation":{"id":79929171}}"#;
    assert_eq!(
        h.ingress
            .handle(signed(
                "github",
                SECRET,
                &[("x-github-delivery", "d-acct")],
                github,
                NOW
            ))
            .await
            .0
            .status,
        200
    );
    let accounts: Vec<Option<String>> = h
        .queue
        .messages()
        .iter()
        .map(|m| m.attributes.get(attribute::ACCOUNT).cloned())
        .collect();
    assert_eq!(
        accounts,
        [
            Some("T0001".to_owned()),
            Some("junction-dev.myshopify.com".to_owned()),
            Some("62515".to_owned()),
            Some("79929171".to_owned()),
        ]
    );
    // A delivery that names no account has no attribute, rather than an empty one.
    let h = harness(IngressConfig::default());
    let stripe = br#"{"id":"evt_1","type":"invoice.paid"}"#;
    assert_eq!(
        h.ingress
            .handle(signed("stripe", SECRET, &[], stripe, NOW))
            .await
            .0
            .status,
        200
    );
    assert_eq!(
        h.queue.messages()[0].attributes.get(attribute::ACCOUNT),
        None
    );
}

#[tokio::test]
async fn zoom_url_validation_is_answered_with_the_verifying_secret_and_not_enqueued() {
    let h = harness(IngressConfig::default());
    let body = br#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#;
    let request = signed(
        "zoom",
        SECRET,
        &[("x-zm-request-timestamp", "1700000000")],
        body,
        NOW,
    );
    let (response, outcome) = h.ingress.handle(request).await;
    assert_eq!(
        (response.status, outcome.result),
        (200, WebhookResult::Handshake)
    );
    let mut mac =
        <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(SECRET.as_bytes()).expect("key");
    hmac::Mac::update(&mut mac, b"qgg8vlvZRS6UYooatFL8Aw");
    let expected = hex::encode(hmac::Mac::finalize(mac).into_bytes());
    assert_eq!(
        response.body,
        format!(r#"{{"plainToken":"qgg8vlvZRS6UYooatFL8Aw","encryptedToken":"{expected}"}}"#)
    );
    assert!(h.queue.messages().is_empty());
    // Unsigned, it is a 401 like any forgery.
    let forged = signed(
        "zoom",
        "wrong",
        &[("x-zm-request-timestamp", "1700000000")],
        body,
        NOW,
    );
    assert_eq!(h.ingress.handle(forged).await.0.status, 401);
}

#[tokio::test]
async fn get_is_refused_unless_the_provider_has_a_get_handshake() {
    let h = harness(IngressConfig::default());
    let (response, _) = h
        .ingress
        .handle(unsigned_request("github", "GET", "", &[], b""))
        .await;
    assert_eq!(response.status, 405);
    let (response, _) = h
        .ingress
        .handle(unsigned_request("twitter", "GET", "", &[], b""))
        .await;
    assert_eq!(response.status, 400, "a GET that is not a CRC");
}

#[tokio::test]
async fn twitter_crc_is_signed_with_the_consumer_secret() {
    let h = harness(IngressConfig::default());
    let (response, outcome) = h
        .ingress
        .handle(unsigned_request(
            "twitter",
            "GET",
            "crc_token=abc123",
            &[],
            b"",
        ))
        .await;
    assert_eq!(
        (response.status, outcome.result),
        (200, WebhookResult::Handshake)
    );
    let mut mac =
        <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(SECRET.as_bytes()).expect("key");
    hmac::Mac::update(&mut mac, b"abc123");
    let expected = BASE64.encode(hmac::Mac::finalize(mac).into_bytes());
    assert_eq!(
        response.body,
        format!(r#"{{"response_token":"sha256={expected}"}}"#)
    );
    assert_eq!(response.content_type.as_deref(), Some("application/json"));
    assert!(h.queue.messages().is_empty());
}

/// Regression ("Nothing lost at the edges", point 3): anyone could ask the CRC to sign a
/// string and post that string with the answer as its signature; it verified, was
/// enqueued and dead-lettered (firing the DLQ alarm). The answer is still given (X needs
/// it), but no body that is not a JSON object is a delivery.
#[tokio::test]
async fn a_crc_answer_posted_back_as_a_delivery_is_refused_and_nothing_is_enqueued() {
    let h = harness(IngressConfig::default());
    let mut forged_pairs = Vec::new();
    for token in ["abc123", "ZXZpbA==", "1", "null", "true", "a-b_c"] {
        let (response, outcome) = h
            .ingress
            .handle(unsigned_request(
                "twitter",
                "GET",
                &format!("crc_token={token}"),
                &[],
                b"",
            ))
            .await;
        assert_eq!(
            (response.status, outcome.result),
            (200, WebhookResult::Handshake)
        );
        let answer: serde_json::Value = serde_json::from_str(&response.body).expect("JSON");
        let signature = answer["response_token"]
            .as_str()
            .expect("a token")
            .to_owned();
        forged_pairs.push((token, signature));
    }
    for (token, signature) in &forged_pairs {
        let request = unsigned_request(
            "twitter",
            "POST",
            "",
            &[
                ("x-twitter-webhooks-signature", signature),
                ("content-type", "application/json"),
            ],
            token.as_bytes(),
        );
        let (response, outcome) = h.ingress.handle(request).await;
        assert_eq!(
            (response.status, outcome.reason),
            (401, Some(WebhookReason::NotAJsonObject)),
            "{token}"
        );
        assert!(outcome.is_verification_failure());
    }
    assert!(h.queue.messages().is_empty(), "nothing was enqueued");
    // Signed JSON that is not an object, or an object cut short, is refused the same way.
    for body in [
        &b"[1,2]"[..],
        b"\"text\"",
        b"{\"for_user_id\":\"1\"",
        b" 12 ",
    ] {
        let (response, outcome) = h
            .ingress
            .handle(signed("twitter", SECRET, &[], body, NOW))
            .await;
        assert_eq!(
            (response.status, outcome.reason),
            (401, Some(WebhookReason::NotAJsonObject)),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    assert!(h.queue.messages().is_empty());
    // A genuine delivery, a JSON object (whitespace first included), is accepted.
    let delivery = b" \n{\"for_user_id\":\"2244994945\",\"tweet_create_events\":[]}";
    let (response, _) = h
        .ingress
        .handle(signed("twitter", SECRET, &[], delivery, NOW))
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(h.queue.messages().len(), 1);
}

/// Zoom's `plainToken` is MACed with the delivery key only when token-shaped: a signed
/// validation whose token looks like Zoom's signed text (`v0:<ts>:<body>`) gets no MAC.
#[tokio::test]
async fn zoom_url_validation_macs_only_token_shaped_plain_tokens() {
    let h = harness(IngressConfig::default());
    let body = br#"{"payload":{"plainToken":"v0:1700000000:{}"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#;
    let request = signed(
        "zoom",
        SECRET,
        &[("x-zm-request-timestamp", "1700000000")],
        body,
        NOW,
    );
    let (response, outcome) = h.ingress.handle(request).await;
    assert_ne!(outcome.result, WebhookResult::Handshake);
    assert!(
        !response.body.contains("encryptedToken"),
        "{}",
        response.body
    );
}

#[tokio::test]
async fn meta_challenge_uses_the_verify_token_from_the_secret() {
    let h = harness(IngressConfig::default());
    h.secrets.put(
        "junction/webhooks/meta",
        r#"{"signing_secrets":["app-secret"],"verify_token":"meatyhamhock"}"#,
    );
    let query = "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhock";
    let (response, _) = h
        .ingress
        .handle(unsigned_request("meta", "GET", query, &[], b""))
        .await;
    assert_eq!(
        (response.status, response.body.as_str()),
        (200, "1158201444")
    );
    assert_eq!(response.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        response.headers,
        vec![("x-content-type-options", "nosniff".to_owned())]
    );
    let wrong = "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=guess";
    let (response, outcome) = h
        .ingress
        .handle(unsigned_request("meta", "GET", wrong, &[], b""))
        .await;
    assert_eq!(
        (response.status, outcome.reason),
        (403, Some(WebhookReason::VerifyTokenMismatch))
    );
    assert!(!response.body.contains("1158201444"));
    assert!(
        h.queue.messages().is_empty(),
        "a subscription check is not enqueued"
    );
}

#[tokio::test]
async fn graph_validation_and_notifications_with_their_acks() {
    let h = harness(IngressConfig::default());
    let (response, _) = h
        .ingress
        .handle(unsigned_request(
            "microsoft",
            "POST",
            "validationToken=abc%20def",
            &[],
            b"",
        ))
        .await;
    assert_eq!(
        (
            response.status,
            response.body.as_str(),
            response.content_type.as_deref()
        ),
        (200, "abc def", Some("text/plain"))
    );
    assert!(
        h.queue.messages().is_empty(),
        "a subscription validation is not enqueued"
    );
    let body = format!(
        r#"{{"value":[{{"clientState":"{SECRET}","tenantId":"t-1","changeType":"created"}},{{"clientState":"{SECRET}","tenantId":"t-1"}}]}}"#
    );
    let request = unsigned_request(
        "microsoft",
        "POST",
        "",
        &[("content-type", "application/json")],
        body.as_bytes(),
    );
    let (response, outcome) = h.ingress.handle(request).await;
    assert_eq!(
        (response.status, outcome.result),
        (202, WebhookResult::Accepted)
    );
    assert_eq!(
        h.queue.messages()[0]
            .attributes
            .get(attribute::ACCOUNT)
            .map(String::as_str),
        Some("t-1")
    );
    // The shared secret stays at the door: the enqueued body has every item without its
    // clientState, and the rest as sent.
    let enqueued: serde_json::Value =
        serde_json::from_str(&h.queue.messages()[0].body).expect("JSON body");
    assert_eq!(
        enqueued,
        serde_json::json!({"value": [
            {"tenantId": "t-1", "changeType": "created"},
            {"tenantId": "t-1"},
        ]})
    );
    assert!(!h.queue.messages()[0].body.contains(SECRET));
    // One item with another clientState spoils the delivery.
    let mixed = body.replacen(SECRET, "forged", 1);
    let request = unsigned_request("microsoft", "POST", "", &[], mixed.as_bytes());
    assert_eq!(h.ingress.handle(request).await.0.status, 401);
    assert_eq!(h.queue.messages().len(), 1);
}

#[tokio::test]
async fn adyen_and_salesforce_get_their_acknowledgements() {
    let h = harness(IngressConfig::default());
    let adyen = br#"{"live":"false","notificationItems":[{"NotificationRequestItem":{"pspReference":"7914073381342284","merchantAccountCode":"TestMerchant","merchantReference":"TestPayment-1407325143704","amount":{"currency":"EUR","value":1130},"eventCode":"AUTHORISATION","success":"true"}}]}"#;
    let hex_key = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056";
    h.secrets.put(
        "junction/webhooks/adyen",
        format!(r#"{{"signing_secrets":["{hex_key}"]}}"#),
    );
    let (response, _) = h
        .ingress
        .handle(signed("adyen", hex_key, &[], adyen, NOW))
        .await;
    assert_eq!(
        (
            response.status,
            response.body.as_str(),
            response.content_type.as_deref()
        ),
        (200, "[accepted]", Some("text/plain"))
    );
    h.secrets.put(
        "junction/webhooks/salesforce",
        r#"{"signing_secrets":["00D5A000000abcdEAA"]}"#,
    );
    let soap = br#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><notifications xmlns="http://soap.sforce.com/2005/09/outbound"><OrganizationId>00D5A000000abcdEAA</OrganizationId></notifications></soapenv:Body></soapenv:Envelope>"#;
    let (response, _) = h
        .ingress
        .handle(unsigned_request("salesforce", "POST", "", &[], soap))
        .await;
    // Byte-exact: the notificationsResponse Salesforce's outbound messaging WSDL expects
    // (an independent copy, not read from the catalog).
    assert_eq!(
        response,
        WebhookResponse {
            status: 200,
            content_type: Some("text/xml".to_owned()),
            headers: Vec::new(),
            body: r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"#.to_owned(),
        }
    );
    let other_org = String::from_utf8_lossy(soap).replace("00D5A000000abcdEAA", "00D000000000001");
    let (response, _) = h
        .ingress
        .handle(unsigned_request(
            "salesforce",
            "POST",
            "",
            &[],
            other_org.as_bytes(),
        ))
        .await;
    assert_eq!(response.status, 401);
    assert_eq!(h.queue.messages().len(), 2);
}

#[tokio::test]
async fn xero_intent_to_receive_is_200_empty_when_signed_and_401_when_not() {
    let h = harness(IngressConfig::default());
    let body =
        br#"{"events":[],"lastEventSequence":0,"firstEventSequence":0,"entropy":"S0m3r4Nd0mt3xt"}"#;
    let (response, outcome) = h
        .ingress
        .handle(signed("xero", SECRET, &[], body, NOW))
        .await;
    assert_eq!(
        (response.status, response.body.as_str(), outcome.result),
        (200, "", WebhookResult::Handshake)
    );
    let (response, _) = h
        .ingress
        .handle(signed("xero", "wrong", &[], body, NOW))
        .await;
    assert_eq!(response.status, 401);
    assert!(h.queue.messages().is_empty());
}

#[tokio::test]
async fn okta_verification_requires_the_authorization_value() {
    let h = harness(IngressConfig::default());
    let challenge = [("x-okta-verification-challenge", "X4uL2Lwlg8pdwmxLmpUxlWRa")];
    let (response, _) = h
        .ingress
        .handle(unsigned_request("okta", "GET", "", &challenge, b""))
        .await;
    assert_eq!(response.status, 401, "no Authorization header");
    let with_auth = [challenge[0], ("authorization", SECRET)];
    let (response, outcome) = h
        .ingress
        .handle(unsigned_request("okta", "GET", "", &with_auth, b""))
        .await;
    assert_eq!(
        (response.status, outcome.result),
        (200, WebhookResult::Handshake)
    );
    assert_eq!(
        response.body,
        r#"{"verification":"X4uL2Lwlg8pdwmxLmpUxlWRa"}"#
    );
    assert_eq!(response.content_type.as_deref(), Some("application/json"));
    assert!(
        h.queue.messages().is_empty(),
        "a verification is not enqueued"
    );
}

#[tokio::test]
async fn asana_handshake_installs_the_first_secret_only() {
    let h = harness(IngressConfig::default());
    // The endpoint exists before its secret does: the provider's secret declares it.
    h.secrets.put(
        "junction/webhooks/asana",
        r#"{"signing_secrets":[],"endpoints":["projects"]}"#,
    );
    let mut request = unsigned_request(
        "asana",
        "POST",
        "",
        &[("x-hook-secret", "first-hook-secret")],
        b"",
    );
    request.endpoint = Some("projects".into());
    request.path = "/webhooks/asana/projects".into();
    let (response, outcome) = h.ingress.handle(request.clone()).await;
    assert_eq!(
        response,
        WebhookResponse {
            status: 200,
            content_type: None,
            headers: vec![("x-hook-secret", "first-hook-secret".to_owned())],
            body: String::new(),
        }
    );
    assert_eq!(outcome.result, WebhookResult::Handshake);
    assert!(h.queue.messages().is_empty());
    // The stored secret now verifies deliveries to that endpoint at once.
    let mut delivery = signed("asana", "first-hook-secret", &[], br#"{"events":[]}"#, NOW);
    delivery.endpoint = Some("projects".into());
    assert_eq!(h.ingress.handle(delivery).await.0.status, 200);
    // A second handshake cannot replace it.
    let mut again = request;
    again
        .headers
        .insert("x-hook-secret", HeaderValue::from_static("attacker-secret"));
    let (response, outcome) = h.ingress.handle(again).await;
    assert_eq!(
        (response.status, outcome.reason),
        (403, Some(WebhookReason::SecretAlreadyConfigured))
    );
    let mut forged = signed("asana", "attacker-secret", &[], br#"{"events":[]}"#, NOW);
    forged.endpoint = Some("projects".into());
    assert_eq!(h.ingress.handle(forged).await.0.status, 401);
}

#[tokio::test]
async fn twitch_challenge_is_answered_after_verification() {
    let h = harness(IngressConfig::default());
    let body = br#"{"challenge":"pogchamp-kappa-360noscope-vohiyo","subscription":{"type":"channel.follow"}}"#;
    let headers = [
        (
            "twitch-eventsub-message-id",
            "e76c6bd4-55c9-4987-8304-da1588d8988b",
        ),
        (
            "twitch-eventsub-message-type",
            "webhook_callback_verification",
        ),
    ];
    let (response, outcome) = h
        .ingress
        .handle(signed("twitch", SECRET, &headers, body, NOW))
        .await;
    assert_eq!(
        (response.status, response.body.as_str(), outcome.result),
        (
            200,
            "pogchamp-kappa-360noscope-vohiyo",
            WebhookResult::Handshake
        )
    );
    assert_eq!(response.content_type.as_deref(), Some("text/plain"));
    assert!(h.queue.messages().is_empty(), "a challenge is not enqueued");
}

#[tokio::test]
async fn dropbox_challenge_is_echoed_with_nosniff_and_a_post_is_a_delivery() {
    let h = harness(IngressConfig::default());
    let (response, outcome) = h
        .ingress
        .handle(unsigned_request(
            "dropbox",
            "GET",
            "challenge=7Zu2xRzVm2bM",
            &[],
            b"",
        ))
        .await;
    assert_eq!(
        (response.status, response.body.as_str(), outcome.result),
        (200, "7Zu2xRzVm2bM", WebhookResult::Handshake)
    );
    assert_eq!(response.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        response.headers,
        vec![("x-content-type-options", "nosniff".to_owned())]
    );
    // An unsigned POST is not a challenge: it is a delivery without a signature.
    let (response, _) = h
        .ingress
        .handle(unsigned_request(
            "dropbox",
            "POST",
            "challenge=x",
            &[],
            b"{}",
        ))
        .await;
    assert_eq!(response.status, 503, "no Dropbox secret is configured here");
    assert!(h.queue.messages().is_empty());
}

#[tokio::test]
async fn notion_verification_token_becomes_the_secret_and_is_not_enqueued() {
    let h = harness(IngressConfig::default());
    let token = "secret_tMrlL1qK5vuQAh1b6cZGhFChZTSYJlce98V0pYn7yBl";
    let body = format!(r#"{{"verification_token":"{token}"}}"#);
    let (response, outcome) = h
        .ingress
        .handle(unsigned_request("notion", "POST", "", &[], body.as_bytes()))
        .await;
    assert_eq!(
        (response.status, response.body.as_str(), outcome.result),
        (200, "", WebhookResult::Handshake)
    );
    assert!(h.queue.messages().is_empty());
    assert!(
        !format!("{outcome:?}").contains(token),
        "the token never reaches the logged outcome"
    );
    // Deliveries signed with it verify at once.
    let delivery = signed(
        "notion",
        token,
        &[],
        br#"{"id":"e1","type":"page.created"}"#,
        NOW,
    );
    assert_eq!(h.ingress.handle(delivery).await.0.status, 200);
    assert_eq!(h.queue.messages().len(), 1);
}

#[tokio::test]
async fn an_unverifiable_entry_is_refused_not_accepted() {
    let catalog: &'static Catalog = Box::leak(Box::new(
        Catalog::from_files(&[(
            "acme.toml",
            "id = \"acme\"\nname = \"Acme\"\ndocs = \"https://acme.example\"\n\n[webhook]\nunverifiable = \"Acme posts unsigned JSON from unpublished addresses.\"\n",
        )])
        .expect("valid"),
    ));
    let secrets = Arc::new(InMemorySecretSource::default());
    let queue = Arc::new(InMemoryEventQueue::default());
    let ingress = Ingress::new(
        catalog,
        WebhookSecrets::new(secrets, "junction", CachePolicy::default()),
        queue.clone(),
        Arc::new(InMemoryPayloadStore::default()),
        Arc::new(FixedClock::at_unix(NOW)),
        IngressConfig::default(),
    );
    let (response, outcome) = ingress
        .handle(unsigned_request("acme", "POST", "", &[], b"{}"))
        .await;
    assert_eq!(
        (response.status, outcome.reason),
        (401, Some(WebhookReason::UnverifiableProvider))
    );
    assert!(queue.messages().is_empty());
}

#[tokio::test]
async fn a_handshake_that_installs_a_secret_needs_a_store() {
    let h = harness(IngressConfig::default());
    let ingress = Ingress::new(
        Catalog::embedded().expect("catalog"),
        WebhookSecrets::new(h.secrets.clone(), "junction", CachePolicy::default()),
        h.queue.clone(),
        h.payloads.clone(),
        h.clock.clone(),
        IngressConfig::default(),
    );
    let request = unsigned_request("asana", "POST", "", &[("x-hook-secret", "s")], b"");
    let (response, outcome) = ingress.handle(request).await;
    assert_eq!(
        (response.status, outcome.reason),
        (503, Some(WebhookReason::HandshakeStoreNotConfigured))
    );
}

#[tokio::test]
async fn gmail_push_is_verified_with_googles_cached_keys_and_configured_claims() {
    use crate::jwt::{InMemoryKeySetSource, JwkSet, KeySetCache};
    let h = harness(IngressConfig::default());
    h.secrets.put(
        "junction/webhooks/gmail",
        r#"{"signing_secrets":[],"jwt_claims":{"aud":"https://hooks.example.com/webhooks/gmail","email":"push@junction-dev.iam.gserviceaccount.com"}}"#,
    );
    let keys = Arc::new(InMemoryKeySetSource::default());
    keys.put(
        "https://www.googleapis.com/oauth2/v3/certs",
        JwkSet::default(),
    );
    let ingress = |key_sets: Option<Arc<KeySetCache>>| {
        let ingress = Ingress::new(
            Catalog::embedded().expect("catalog"),
            WebhookSecrets::new(h.secrets.clone(), "junction", CachePolicy::default()),
            h.queue.clone(),
            h.payloads.clone(),
            h.clock.clone(),
            IngressConfig::default(),
        );
        match key_sets {
            Some(key_sets) => ingress.with_key_sets(key_sets),
            None => ingress,
        }
    };
    let body = br#"{"message":{"data":"e30=","messageId":"2070443601311540"},"subscription":"projects/p/subscriptions/s"}"#;
    let request = |authorization: Option<&str>| {
        let mut pairs = vec![("content-type", "application/json")];
        if let Some(value) = authorization {
            pairs.push(("authorization", value));
        }
        unsigned_request("gmail", "POST", "", &pairs, body)
    };
    // No key source: the ingress cannot verify, so the provider must retry.
    let (response, outcome) = ingress(None).handle(request(Some("Bearer a.b.c"))).await;
    assert_eq!(
        (response.status, outcome.reason),
        (503, Some(WebhookReason::KeySourceNotConfigured))
    );
    let with_keys = ingress(Some(Arc::new(KeySetCache::new(keys.clone()))));
    let (response, outcome) = with_keys.handle(request(None)).await;
    assert_eq!(
        (response.status, outcome.reason),
        (401, Some(WebhookReason::MissingSignature))
    );
    let (response, outcome) = with_keys.handle(request(Some("Basic a.b.c"))).await;
    assert_eq!(
        (response.status, outcome.reason),
        (401, Some(WebhookReason::MalformedSignature))
    );
    // A well-formed token under a kid Google does not publish.
    let header = BASE64URL_NO_PAD.encode(r#"{"alg":"RS256","kid":"gone"}"#);
    let claims = BASE64URL_NO_PAD.encode(r#"{"exp":1700003600}"#);
    let token = format!("Bearer {header}.{claims}.c2ln");
    let (response, outcome) = with_keys.handle(request(Some(&token))).await;
    assert_eq!(
        (response.status, outcome.reason),
        (401, Some(WebhookReason::SignatureMismatch))
    );
    assert!(h.queue.messages().is_empty());
    assert_eq!(
        keys.fetches(),
        1,
        "one fetch, then the unknown kid is rate-limited"
    );
}

const BASE64URL_NO_PAD: base64::engine::GeneralPurpose =
    base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Plaid end to end through the ingress: the key comes from Plaid's key endpoint (here a
/// loopback stand-in on 127.0.0.1, named by an overlay entry as an operator would for
/// Sandbox), with the API credentials configured as the webhook secret.
#[tokio::test]
async fn plaid_deliveries_are_verified_with_keys_from_its_credentialed_endpoint() {
    use crate::jwt::{HttpKeySetSource, KeySetCache, es256_test_jwk};
    use p256::ecdsa::signature::Signer as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    // The stand-in: answers key ids `new` and `old` (both current: Plaid rotated) and
    // `retired` (expired_at set), counts calls, and checks the credentials.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let url = format!(
        "http://{}/webhook_verification_key/get",
        listener.local_addr().expect("address")
    );
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = calls.clone();
    let key = |seed: u8| p256::ecdsa::SigningKey::from_slice(&[seed; 32]).expect("scalar");
    let jwks: std::collections::HashMap<&str, (crate::jwt::Jwk, bool)> = [
        ("new", (es256_test_jwk(&key(9), "new"), false)),
        ("old", (es256_test_jwk(&key(8), "old"), false)),
        ("retired", (es256_test_jwk(&key(7), "retired"), true)),
    ]
    .into_iter()
    .collect();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut raw = Vec::new();
            let mut buffer = [0u8; 4096];
            let body = loop {
                let Ok(n) = socket.read(&mut buffer).await else {
                    break None;
                };
                if n == 0 {
                    break None;
                }
                raw.extend_from_slice(&buffer[..n]);
                let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .and_then(|value| value.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if raw.len() >= end + 4 + length {
                    break serde_json::from_slice::<serde_json::Value>(&raw[end + 4..]).ok();
                }
            };
            let body = body.unwrap_or_default();
            let answer = match (
                body["client_id"].as_str(),
                body["secret"].as_str(),
                body["key_id"].as_str().and_then(|kid| jwks.get(kid)),
            ) {
                (Some("client-1"), Some("plaid-secret"), Some((jwk, expired))) => {
                    let mut key = serde_json::to_value(jwk_json(jwk)).expect("jwk");
                    key["expired_at"] = if *expired {
                        serde_json::json!(NOW - 86_400)
                    } else {
                        serde_json::Value::Null
                    };
                    key["created_at"] = serde_json::json!(1_560_466_150);
                    key["use"] = serde_json::json!("sig");
                    (200, serde_json::json!({"key": key, "request_id": "r1"}))
                }
                _ => (
                    400,
                    serde_json::json!({"error_type": "INVALID_INPUT", "error_code": "INVALID_FIELD"}),
                ),
            };
            let text = answer.1.to_string();
            let response = format!(
                "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                answer.0,
                text.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });

    let overlay = format!(
        r#"[[provider]]
id = "plaid"
name = "Plaid (Sandbox stand-in)"
docs = "https://plaid.com/docs/api/webhooks/webhook-verification/"
[provider.webhook]
event_type = {{ json_pointer = "/webhook_code" }}
account = {{ json_pointer = "/item_id" }}
[provider.webhook.verification]
scheme = "jwt"
signature = {{ format = "single", header = "Plaid-Verification", encoding = "text" }}
signed = []
jwt = {{ algorithm = "ES256", jwks_url = "{url}", max_age_seconds = 300, body_hash_claim = "request_body_sha256" }}
jwt_keys = "plaid_verification_key"
"#
    );
    let catalog: &'static Catalog = Box::leak(Box::new(
        Catalog::embedded()
            .expect("catalog")
            .with_endpoint_rules(junction_catalog::EndpointRules::LoopbackHttpForTests)
            .with_overlay("test", &overlay)
            .expect("overlay"),
    ));
    let secrets = Arc::new(InMemorySecretSource::default());
    let queue = Arc::new(InMemoryEventQueue::default());
    let ingress = Ingress::new(
        catalog,
        WebhookSecrets::new(secrets.clone(), "junction", CachePolicy::default()),
        queue.clone(),
        Arc::new(InMemoryPayloadStore::default()),
        Arc::new(FixedClock::at_unix(NOW)),
        IngressConfig::default(),
    )
    .with_key_sets(Arc::new(KeySetCache::new(
        Arc::new(HttpKeySetSource::new()),
    )));

    let body = b"{\n  \"environment\": \"sandbox\",\n  \"item_id\": \"wz666MBjYWTp2PDzzggYhM6oWWmBb\",\n  \"webhook_code\": \"SYNC_UPDATES_AVAILABLE\",\n  \"webhook_type\": \"TRANSACTIONS\"\n}";
    let token = |seed: u8, kid: &str, iat: i64, body: &[u8]| {
        let encode = |value: serde_json::Value| BASE64URL_NO_PAD.encode(value.to_string());
        let input = format!(
            "{}.{}",
            encode(serde_json::json!({"alg": "ES256", "kid": kid, "typ": "JWT"})),
            encode(
                serde_json::json!({"iat": iat, "request_body_sha256": hex::encode(Sha256::digest(body))})
            )
        );
        let signature: p256::ecdsa::Signature = key(seed).sign(input.as_bytes());
        format!("{input}.{}", BASE64URL_NO_PAD.encode(signature.to_bytes()))
    };
    let request = |verification: Option<&str>, body: &[u8]| {
        let mut pairs = vec![("content-type", "application/json")];
        if let Some(value) = verification {
            pairs.push(("plaid-verification", value));
        }
        unsigned_request("plaid", "POST", "", &pairs, body)
    };
    let send = |verification: Option<String>, body: &'static [u8]| {
        let ingress = &ingress;
        let request = request(verification.as_deref(), body);
        async move {
            let (response, outcome) = ingress.handle(request).await;
            (response.status, outcome.reason)
        }
    };

    secrets.put(
        "junction/webhooks/plaid",
        r#"{"signing_secrets":["client-1:plaid-secret"]}"#,
    );
    // An endpoint whose secret holds no `<client_id>:<secret>`: nothing can be fetched.
    secrets.put(
        "junction/webhooks/plaid/nocreds",
        r#"{"signing_secrets":["only-a-secret"]}"#,
    );
    let mut without_credentials = request(Some(&token(9, "new", NOW, body)), body);
    without_credentials.endpoint = Some("nocreds".to_owned());
    let (response, outcome) = ingress.handle(without_credentials).await;
    assert_eq!(
        (response.status, outcome.reason),
        (503, Some(WebhookReason::SecretNotConfigured))
    );
    let ingress_calls = || calls.load(std::sync::atomic::Ordering::SeqCst);
    // Refused before any call: no header, a stale token, a token for another body.
    assert_eq!(
        send(None, body).await,
        (401, Some(WebhookReason::MissingSignature))
    );
    assert_eq!(
        send(Some(token(9, "new", NOW - 301, body)), body).await,
        (401, Some(WebhookReason::StaleTimestamp))
    );
    assert_eq!(
        send(Some(token(9, "new", NOW, body)), b"{}").await,
        (401, Some(WebhookReason::BodyHashMismatch))
    );
    assert_eq!(
        ingress_calls(),
        0,
        "no call to Plaid for a token that cannot verify"
    );
    // Valid, and the key is cached.
    assert_eq!(
        send(Some(token(9, "new", NOW, body)), body).await,
        (200, None)
    );
    assert_eq!(
        send(Some(token(9, "new", NOW - 10, body)), body).await,
        (200, None)
    );
    assert_eq!(ingress_calls(), 1);
    let messages = queue.messages();
    assert_eq!(messages.len(), 2);
    assert_eq!(
        messages[0].attributes.get("event_type").map(String::as_str),
        Some("SYNC_UPDATES_AVAILABLE")
    );
    assert_eq!(
        messages[0].attributes.get("account").map(String::as_str),
        Some("wz666MBjYWTp2PDzzggYhM6oWWmBb")
    );
    // Rotation: a token under Plaid's other current key verifies too.
    assert_eq!(
        send(Some(token(8, "old", NOW, body)), body).await,
        (200, None)
    );
    // Signed with a key that is not the one published under the kid: a forgery.
    assert_eq!(
        send(Some(token(8, "new", NOW, body)), body).await,
        (401, Some(WebhookReason::SignatureMismatch))
    );
    // A key Plaid has expired verifies nothing.
    assert_eq!(
        send(Some(token(7, "retired", NOW, body)), body).await,
        (401, Some(WebhookReason::ExpiredKey))
    );
    // A kid Plaid does not know: the provider must retry later, and we ask once.
    assert_eq!(
        send(Some(token(9, "made-up", NOW, body)), body).await,
        (503, Some(WebhookReason::KeyFetchFailed))
    );
    assert_eq!(
        send(Some(token(9, "made-up", NOW, body)), body).await,
        (503, Some(WebhookReason::KeyFetchFailed))
    );
    assert_eq!(ingress_calls(), 4);
    assert_eq!(queue.messages().len(), 3);
}

/// A JWK as JSON, the way Plaid's endpoint writes it.
fn jwk_json(jwk: &crate::jwt::Jwk) -> serde_json::Value {
    serde_json::json!({
        "alg": jwk.alg, "crv": jwk.crv, "kid": jwk.kid, "kty": jwk.kty, "x": jwk.x, "y": jwk.y,
    })
}

/// Issue #10, attribution: the account a delivery names reaches the message, whether it
/// is a field of a form body (Twilio's `AccountSid`) or nested JSON (Adyen's balance
/// platform). Paddle and Dropbox name no single account, so their messages carry none;
/// nor does Salesforce, whose org id is the configured verification value.
#[tokio::test]
async fn the_message_carries_the_account_from_form_xml_and_json_bodies() {
    let h = harness(IngressConfig::default());
    let account = |h: &Harness| {
        h.queue
            .messages()
            .last()
            .and_then(|m| m.attributes.get(attribute::ACCOUNT).cloned())
    };
    // Twilio: an SMS webhook as Twilio posts it (form fields, signed with the URL).
    h.secrets.put(
        "junction/webhooks/twilio",
        format!(r#"{{"signing_secrets":["{SECRET}"]}}"#),
    );
    let form = b"ToCountry=US&SmsMessageSid=SM1a2b3c&NumMedia=0&Body=Hello&To=%2B15005550006&MessageSid=SM1a2b3c&AccountSid=AC0123456789abcdef0123456789abcdef&From=%2B14155552671&ApiVersion=2010-04-01";
    let twilio = signed(
        "twilio",
        SECRET,
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("i-twilio-idempotency-token", "8f5a0e2c-idem"),
        ],
        form,
        NOW,
    );
    let (response, outcome) = h.ingress.handle(twilio).await;
    assert_eq!(
        (response.status, outcome.result),
        (200, WebhookResult::Accepted)
    );
    assert_eq!(
        account(&h).as_deref(),
        Some("AC0123456789abcdef0123456789abcdef")
    );
    assert_eq!(h.queue.messages()[0].body.as_bytes(), form);

    // Salesforce: the org id in the envelope is the stored verification value, so it is
    // kept off the message (secrets never reach messages or logs).
    h.secrets.put(
        "junction/webhooks/salesforce",
        r#"{"signing_secrets":["00D5A000000abcdEAA"]}"#,
    );
    let soap = br#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><notifications xmlns="http://soap.sforce.com/2005/09/outbound"><OrganizationId>00D5A000000abcdEAA</OrganizationId><ActionId>04k5A000000Gmn1QAC</ActionId><Notification><Id>04l5A000000Xyz1QAC</Id></Notification></notifications></soapenv:Body></soapenv:Envelope>"#;
    let (response, _) = h
        .ingress
        .handle(unsigned_request(
            "salesforce",
            "POST",
            "",
            &[("content-type", "text/xml; charset=utf-8")],
            soap,
        ))
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(account(&h), None, "the org id is the stored secret");

    // Adyen balance platform: `data.balancePlatform`, signed with the hex HMAC key.
    let hex_key = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056";
    h.secrets.put(
        "junction/webhooks/adyen-platform",
        format!(r#"{{"signing_secrets":["{hex_key}"]}}"#),
    );
    let platform = br#"{"data":{"balancePlatform":"YOUR_BALANCE_PLATFORM","accountHolder":{"id":"AH00000000000000000000001","status":"active"}},"environment":"test","timestamp":"2023-11-14T22:13:20+01:00","type":"balancePlatform.accountHolder.created"}"#;
    let (response, _) = h
        .ingress
        .handle(signed("adyen-platform", hex_key, &[], platform, NOW))
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(account(&h).as_deref(), Some("YOUR_BALANCE_PLATFORM"));

    // Paddle: notification_id names the delivery, not an account.
    h.secrets.put(
        "junction/webhooks/paddle",
        format!(r#"{{"signing_secrets":["{SECRET}"]}}"#),
    );
    let paddle = br#"{"event_id":"evt_01hv6y1jtn1fr98zq3cvarxx2e","event_type":"customer.created","occurred_at":"2023-11-14T22:13:20.205966Z","notification_id":"ntf_01hv6y1jx2m6n1qk95m0cj69dg","data":{"id":"ctm_01hv6y1jedq4p1n0yqn5ba3ky4"}}"#;
    let (response, _) = h
        .ingress
        .handle(signed("paddle", SECRET, &[], paddle, NOW))
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(account(&h), None, "paddle names no account");

    // Dropbox: several accounts in a list, so none on the message.
    h.secrets.put(
        "junction/webhooks/dropbox",
        format!(r#"{{"signing_secrets":["{SECRET}"]}}"#),
    );
    let dropbox = br#"{"list_folder":{"accounts":["dbid:AAH4f99T0taONIb-OurWxbNQ6ywGRopQngc","dbid:AACb0UAY3m0nXVTxd9GJi0XhkyJCxUBk4Cw"]},"delta":{"users":[12345678,23456789]}}"#;
    let (response, _) = h
        .ingress
        .handle(signed("dropbox", SECRET, &[], dropbox, NOW))
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(account(&h), None, "a list is not one account");
    assert_eq!(h.queue.messages().len(), 5);
}

/// Discord interactions through the ingress: a PING signed with the application's key
/// (Ed25519 over `X-Signature-Timestamp + body`, signed here with ed25519-dalek directly
/// as discord-api-docs `developers/interactions/overview.mdx` describes) is answered
/// `{"type":1}` and not enqueued; Discord's probe with a bad signature gets 401.
#[tokio::test]
async fn discord_ping_is_answered_pong_and_a_bad_signature_is_401() {
    use ed25519_dalek::Signer as _;
    let h = harness(IngressConfig::default());
    let application = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let public_key = hex::encode(application.verifying_key().to_bytes());
    h.secrets.put(
        "junction/webhooks/discord",
        format!(r#"{{"signing_secrets":["{public_key}"]}}"#),
    );
    let body = br#"{"application_id":"1234560123453231555","id":"1234560123453231556","token":"aW50ZXJhY3Rpb246MTIzNDU2","type":1,"user":{"id":"53908232506183680"},"version":1}"#;
    let timestamp = "1700000000";
    let request = |key: &ed25519_dalek::SigningKey| {
        let mut message = timestamp.as_bytes().to_vec();
        message.extend_from_slice(body);
        let signature = hex::encode(key.sign(&message).to_bytes());
        unsigned_request(
            "discord",
            "POST",
            "",
            &[
                ("content-type", "application/json"),
                ("x-signature-ed25519", &signature),
                ("x-signature-timestamp", timestamp),
            ],
            body,
        )
    };
    let (response, outcome) = h.ingress.handle(request(&application)).await;
    assert_eq!(
        response,
        WebhookResponse {
            status: 200,
            content_type: Some("application/json".to_owned()),
            headers: Vec::new(),
            body: r#"{"type":1}"#.to_owned(),
        }
    );
    assert_eq!(outcome.result, WebhookResult::Handshake);
    assert!(h.queue.messages().is_empty(), "a PING is not enqueued");

    let impostor = ed25519_dalek::SigningKey::from_bytes(&[8u8; 32]);
    let (response, outcome) = h.ingress.handle(request(&impostor)).await;
    assert_eq!(
        (response.status, outcome.reason),
        (401, Some(WebhookReason::SignatureMismatch))
    );
    assert_eq!(response.body, r#"{"error":"signature_mismatch"}"#);
    let mut unsigned = request(&application);
    unsigned.headers.remove("x-signature-ed25519");
    let (response, outcome) = h.ingress.handle(unsigned).await;
    assert_eq!(
        (response.status, outcome.reason),
        (401, Some(WebhookReason::MissingSignature))
    );
    assert!(h.queue.messages().is_empty());
}

/// (signing secret, configured secret) for a catalog entry's key format.
fn key_pair(spec: &junction_catalog::Verification) -> (String, String) {
    use junction_catalog::{Scheme, SecretEncoding};
    match (spec.scheme, spec.secret_encoding) {
        (Scheme::Ed25519, encoding) => (
            hex::encode([9u8; 32]),
            crate::ed25519_public_key(encoding, &[9u8; 32]),
        ),
        (Scheme::EcdsaP256, _) => (
            BASE64.encode([9u8; 32]),
            crate::ecdsa_p256_public_key(&[9u8; 32]).expect("scalar"),
        ),
        (_, SecretEncoding::Base64) => {
            let key = format!(
                "{}MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                spec.secret_prefix.as_deref().unwrap_or_default()
            );
            (key.clone(), key)
        }
        (_, SecretEncoding::Hex) => {
            let key = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056";
            (key.to_owned(), key.to_owned())
        }
        (_, SecretEncoding::Utf8) => (SECRET.to_owned(), SECRET.to_owned()),
    }
}

/// Issue #10: for every provider with a replay window (read from the catalog, so a new
/// one is covered without being listed), a delivery whose timestamp is missing (its
/// header, its parameter of the signature header, or its field of the signed body) is
/// refused with 401 `missing_timestamp` and nothing is enqueued, while the same delivery
/// with its timestamp is accepted.
#[tokio::test]
async fn every_windowed_provider_refuses_a_delivery_without_its_timestamp() {
    use junction_catalog::{SignatureFormat, SignedPart, TimestampSource, TimestampUnit};
    let catalog = Catalog::embedded().expect("catalog");
    let mut checked = Vec::new();
    for provider in catalog.providers() {
        let Some(spec) = provider.verification() else {
            continue;
        };
        let Some(rule) = &spec.timestamp else {
            continue;
        };
        if spec.scheme == junction_catalog::Scheme::Jwt {
            continue;
        }
        let id = provider.id.as_str();
        let h = harness(IngressConfig::default());
        let (signing, configured) = key_pair(spec);
        h.secrets.put(
            format!("junction/webhooks/{id}"),
            serde_json::json!({ "signing_secrets": [configured] }).to_string(),
        );
        // Every signed header the provider sends besides the signature and timestamp.
        let mut extra = vec![("content-type".to_owned(), "application/json".to_owned())];
        for part in &spec.signed {
            if let SignedPart::Header(names) = part {
                extra.push((names.names()[0].to_ascii_lowercase(), format!("msg-{id}")));
            }
        }
        let extra: Vec<(&str, &str)> = extra
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let mut json = serde_json::json!({ "id": format!("evt-{id}"), "type": "thing.created" });
        let with_timestamp = |json: &serde_json::Value| {
            let mut json = json.clone();
            if let TimestampSource::JsonPointer(pointer) = &rule.from {
                let value = match rule.unit {
                    TimestampUnit::Milliseconds => serde_json::json!(NOW * 1000),
                    _ => serde_json::json!(NOW.to_string()),
                };
                let (parent, field) = pointer.rsplit_once('/').expect("pointer");
                let mut at = &mut json;
                for token in parent.split('/').skip(1) {
                    at = at
                        .as_object_mut()
                        .expect("object")
                        .entry(token)
                        .or_insert_with(|| serde_json::json!({}));
                }
                at.as_object_mut()
                    .expect("object")
                    .insert(field.to_owned(), value);
            }
            json
        };
        if let TimestampSource::JsonPointer(_) = &rule.from {
            // The signed token Mailgun puts next to its timestamp.
            json["signature"] = serde_json::json!({ "token": "0123456789abcdef0123456789" });
            json["token"] = serde_json::json!("0123456789abcdef0123456789");
        }
        let complete = serde_json::to_vec(&with_timestamp(&json)).expect("json");
        let intact = signed(id, &signing, &extra, &complete, NOW);
        let (response, outcome) = h.ingress.handle(intact.clone()).await;
        assert!(
            (200..300).contains(&response.status) && outcome.reason.is_none(),
            "{id}: the delivery with its timestamp is accepted: {response:?}"
        );
        let accepted = h.queue.messages().len();

        let without = match &rule.from {
            TimestampSource::Header(names) => {
                let mut request = intact;
                for name in names.names() {
                    request.headers.remove(name.as_str());
                }
                request
            }
            TimestampSource::SignatureParam(param) => {
                let (header, separator) = match &spec.signature {
                    SignatureFormat::KeyValueList {
                        header,
                        pair_separator,
                        ..
                    } => (header.names()[0].to_ascii_lowercase(), pair_separator),
                    other => panic!("{id}: a signature_param needs key_value_list: {other:?}"),
                };
                let mut request = intact;
                let value = request.headers[header.as_str()]
                    .to_str()
                    .expect("text")
                    .to_owned();
                let kept: Vec<&str> = value
                    .split(separator.as_str())
                    .filter(|pair| !pair.starts_with(&format!("{param}=")))
                    .collect();
                assert_ne!(
                    kept.join(separator),
                    value,
                    "{id}: {param} was in the header"
                );
                request.headers.insert(
                    HeaderName::from_bytes(header.as_bytes()).expect("name"),
                    HeaderValue::from_str(&kept.join(separator)).expect("value"),
                );
                request
            }
            // In the body: a body signed without it (the signature verifies; the
            // timestamp check that follows refuses it).
            TimestampSource::JsonPointer(_) => {
                let body = serde_json::to_vec(&json).expect("json");
                signed(id, &signing, &extra, &body, NOW)
            }
        };
        let (response, outcome) = h.ingress.handle(without).await;
        assert_eq!(
            (response.status, outcome.reason),
            (401, Some(WebhookReason::MissingTimestamp)),
            "{id}"
        );
        assert_eq!(response.body, r#"{"error":"missing_timestamp"}"#, "{id}");
        assert_eq!(h.queue.messages().len(), accepted, "{id}: nothing enqueued");
        checked.push(id.to_owned());
    }
    for id in [
        "stripe",
        "slack",
        "standard-webhooks",
        "hubspot",
        "linear",
        "calendly",
        "paddle",
        "box",
        "twitch",
        "mailgun",
        "mailgun-legacy",
        "coinbase-cdp",
    ] {
        assert!(
            checked.iter().any(|c| c == id),
            "{id} was checked: {checked:?}"
        );
    }
}

/// Responses, log lines and alarms keep the codes `VerifyError::reason` gives.
#[test]
fn a_verification_failure_keeps_its_reason_code() {
    for err in [
        VerifyError::MissingSignature,
        VerifyError::MalformedSignature,
        VerifyError::MissingSignedHeader,
        VerifyError::MissingTimestamp,
        VerifyError::MalformedTimestamp,
        VerifyError::StaleTimestamp,
        VerifyError::FutureTimestamp,
        VerifyError::MissingBodyHash,
        VerifyError::BodyHashMismatch,
        VerifyError::SignatureMismatch,
        VerifyError::UnexpectedHeader,
        VerifyError::MalformedBody,
        VerifyError::ClaimMismatch,
        VerifyError::ExpiredKey,
        VerifyError::NoUsableSecret,
    ] {
        assert_eq!(WebhookReason::from(err).as_str(), err.reason(), "{err:?}");
    }
}

/// A Gmail push as Pub/Sub posts it: the mailbox is inside `message.data`, base64 of
/// `{"emailAddress","historyId"}` (developers.google.com/workspace/gmail/api/guides/push).
fn pubsub_push(data: &str) -> Vec<u8> {
    serde_json::json!({
        "message": {"data": data, "messageId": "2070443601311540", "publishTime": "2021-02-26T19:13:55.749Z"},
        "subscription": "projects/myproject/subscriptions/mysubscription"
    })
    .to_string()
    .into_bytes()
}

/// The Gmail entry's `account`: the push's address, decoded from `message.data` and
/// lowercased (as the connect records the profile's), padded or not; nothing from data
/// that is not base64 of a JSON object with the field, or from an oversized field.
#[test]
fn gmail_s_account_is_the_decoded_lowercased_address() {
    let catalog = Catalog::embedded().expect("catalog");
    let source = catalog
        .get("gmail")
        .and_then(|p| p.webhook.as_ref())
        .and_then(|w| w.account.clone())
        .expect("gmail's account");
    assert!(matches!(&source.location, FieldLocation::JsonPointer(p) if p == "/message/data"));
    assert!(source.lowercase);
    let decoded = source.decoded.as_ref().expect("decoded");
    let data = BASE64.encode(r#"{"emailAddress": "User@Example.com", "historyId": "9876543210"}"#);
    let read = |data: &str| decoded_field(&serde_json::Value::String(data.to_owned()), decoded);
    assert_eq!(read(&data).as_deref(), Some("User@Example.com"));
    assert_eq!(
        read(data.trim_end_matches('=')).as_deref(),
        Some("User@Example.com"),
        "unpadded"
    );
    assert_eq!(read("not base64!"), None);
    assert_eq!(read(&BASE64.encode("not json")), None);
    assert_eq!(read(&BASE64.encode(r#"{"historyId":"1"}"#)), None);
    assert_eq!(read(&BASE64.encode(r#"{"emailAddress":{"a":1}}"#)), None);
    let padded = format!(
        r#"{{"emailAddress":"user@example.com","pad":"{}"}}"#,
        "x".repeat(MAX_ENCODED_FIELD_BYTES)
    );
    assert_eq!(
        read(&BASE64.encode(padded)),
        None,
        "over the cap: not decoded"
    );
    assert_eq!(
        decoded_field(&serde_json::json!(12), decoded),
        None,
        "not a string"
    );
}

/// End to end through the ingress: a delivery whose account is inside base64 JSON
/// (Gmail's shape) reaches the queue with the decoded, lowercased account and its body
/// byte for byte; the signature is checked on the raw bytes first. An entry verifying
/// like GitHub (HMAC over the body) stands in for Gmail's Google-signed token.
#[tokio::test]
async fn a_decoded_account_reaches_the_message_lowercased() {
    let overlay = r#"[[provider]]
id = "pushmail"
name = "Pub/Sub push stand-in"
docs = "https://developers.google.com/workspace/gmail/api/guides/push"
[provider.webhook]
verification_from = "github"
event_id = { json_pointer = "/message/messageId" }
account = { json_pointer = "/message/data", decode = "base64_json", decoded_pointer = "/emailAddress", lowercase = true }
"#;
    let catalog: &'static Catalog = Box::leak(Box::new(
        Catalog::embedded()
            .expect("catalog")
            .with_overlay("test", overlay)
            .expect("overlay"),
    ));
    let secrets = Arc::new(InMemorySecretSource::default());
    secrets.put(
        "junction/webhooks/pushmail",
        format!(r#"{{"signing_secrets":["{SECRET}"]}}"#),
    );
    let queue = Arc::new(InMemoryEventQueue::default());
    let ingress = Ingress::new(
        catalog,
        WebhookSecrets::new(secrets, "junction", CachePolicy::default()),
        queue.clone(),
        Arc::new(InMemoryPayloadStore::default()),
        Arc::new(FixedClock::at_unix(NOW)),
        IngressConfig::default(),
    );
    let as_pushmail = |mut request: WebhookRequest| {
        request.provider = "pushmail".into();
        request.path = "/webhooks/pushmail".into();
        request
    };
    let data = BASE64.encode(r#"{"emailAddress":"Ada.Lovelace@Example.COM","historyId":"1234"}"#);
    let body = pubsub_push(&data);
    let (response, outcome) = ingress
        .handle(as_pushmail(signed("github", SECRET, &[], &body, NOW)))
        .await;
    assert_eq!(
        (response.status, outcome.result),
        (200, WebhookResult::Accepted)
    );
    let messages = queue.messages();
    assert_eq!(
        messages[0]
            .attributes
            .get(attribute::ACCOUNT)
            .map(String::as_str),
        Some("ada.lovelace@example.com")
    );
    assert_eq!(
        messages[0]
            .attributes
            .get(attribute::EVENT_ID)
            .map(String::as_str),
        Some("2070443601311540")
    );
    assert_eq!(
        messages[0].body.as_bytes(),
        body.as_slice(),
        "body untouched"
    );

    // Data that does not decode: accepted, no account attribute (unmatched downstream).
    let body = pubsub_push("%%%");
    let (response, _) = ingress
        .handle(as_pushmail(signed("github", SECRET, &[], &body, NOW)))
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(queue.messages()[1].attributes.get(attribute::ACCOUNT), None);

    // A changed byte fails the signature before anything is decoded.
    let mut request = as_pushmail(signed("github", SECRET, &[], &pubsub_push(&data), NOW));
    let last = request.body.len() - 2;
    request.body[last] ^= 1;
    let (response, outcome) = ingress.handle(request).await;
    assert_eq!(
        (response.status, outcome.reason),
        (401, Some(WebhookReason::SignatureMismatch))
    );
    assert_eq!(queue.messages().len(), 2);
}
