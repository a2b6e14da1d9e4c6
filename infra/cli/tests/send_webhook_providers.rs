//! `junction send-webhook` for the providers of issue 29, run as a user runs it: the
//! binary signs its built-in sample with `--secret` and posts it to a loopback server
//! (no AWS: the catalog overlay is an empty file), and each captured request is checked
//! against the provider's recipe computed here, independently of the signing code:
//! Sentry's and Crisp's HMACs, Airtable's MAC with the decoded secret, Exact Online's
//! HashCode over the bytes between `{"Content":` and `,"HashCode":"` (the anchored
//! pattern of picqer/exact-php-client), Telegram's and PostHog's tokens and Pipedrive's
//! HTTP Basic credentials.

mod common;

use std::{process::Command, time::Duration};

use base64::Engine as _;
use common::{Captured, capture_server};

/// `junction send-webhook <provider> --secret <secret> --url <url>`, with an empty
/// catalog overlay file so nothing reaches AWS; panics unless it exits 0.
fn send(provider: &str, secret: &str, url: &str, overlay: &std::path::Path) {
    let output = Command::new(env!("CARGO_BIN_EXE_junction"))
        .args([
            "send-webhook",
            provider,
            "--secret",
            secret,
            "--url",
            url,
            "--catalog-overlay",
        ])
        .arg(overlay)
        .env("RUST_BACKTRACE", "1")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .output()
        .expect("junction runs");
    assert!(
        output.status.success(),
        "{provider}: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    hex::encode(aws_lc_rs::hmac::sign(&key, message).as_ref())
}

#[test]
fn send_webhook_signs_each_issue_29_provider_as_it_sends() {
    let (base, captured) = capture_server();
    let overlay = std::env::temp_dir().join(format!(
        "junction-empty-overlay-{}.toml",
        std::process::id()
    ));
    std::fs::write(&overlay, "").expect("overlay file");
    let receive = |provider: &str, secret: &str| {
        send(
            provider,
            secret,
            &format!("{base}/webhooks/{provider}"),
            &overlay,
        );
        let request = captured
            .recv_timeout(Duration::from_secs(30))
            .expect("a request");
        assert_eq!(request.path, format!("/webhooks/{provider}"));
        request
    };
    let header = |request: &Captured, name: &str| -> String {
        request
            .headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name}: {request:?}"))
            .clone()
    };

    // Sentry: hex HMAC-SHA256 of the body with the client secret, no prefix.
    let sentry = receive("sentry", "sentry-client-secret");
    assert_eq!(
        header(&sentry, "sentry-hook-signature"),
        hmac_sha256_hex(b"sentry-client-secret", &sentry.body)
    );

    // Crisp: hex HMAC-SHA256 of "[" + timestamp + ";" + body + "]".
    let crisp = receive("crisp", "crisp-secret");
    let timestamp = header(&crisp, "x-crisp-request-timestamp");
    let message = [
        b"[".as_slice(),
        timestamp.as_bytes(),
        b";",
        &crisp.body,
        b"]",
    ]
    .concat();
    assert_eq!(
        header(&crisp, "x-crisp-signature"),
        hmac_sha256_hex(b"crisp-secret", &message)
    );

    // Airtable: "hmac-sha256=" + hex HMAC-SHA256 keyed with macSecretBase64 decoded.
    let mac_secret = "c2VjcmV0LWJ5dGVzLWZyb20tYWlydGFibGU=";
    let airtable = receive("airtable", mac_secret);
    let key = base64::engine::general_purpose::STANDARD
        .decode(mac_secret)
        .expect("base64");
    assert_eq!(
        header(&airtable, "x-airtable-content-mac"),
        format!("hmac-sha256={}", hmac_sha256_hex(&key, &airtable.body))
    );

    // Exact Online: the body is {"Content":C,"HashCode":H}, H the uppercase hex
    // HMAC-SHA256 of C's bytes, read as picqer's pattern reads them.
    let exact = receive("exact-online", "webhook-secret");
    let text = String::from_utf8(exact.body.clone()).expect("utf-8");
    let rest = text
        .strip_prefix(r#"{"Content":"#)
        .expect("starts with Content");
    let (content, hash_code) = rest
        .rsplit_once(r#","HashCode":""#)
        .expect("ends with HashCode");
    let hash_code = hash_code.strip_suffix(r#""}"#).expect("the object ends");
    assert_eq!(
        hash_code,
        hmac_sha256_hex(b"webhook-secret", content.as_bytes()).to_ascii_uppercase()
    );

    // Telegram: the secret_token itself.
    let telegram = receive("telegram", "bot_secret-token-1");
    assert_eq!(
        header(&telegram, "x-telegram-bot-api-secret-token"),
        "bot_secret-token-1"
    );

    // PostHog: the bearer token added to the destination's headers.
    let posthog = receive("posthog", "ph-token");
    assert_eq!(header(&posthog, "authorization"), "Bearer ph-token");

    // Pipedrive: HTTP Basic with the webhook's user and password (RFC 7617).
    let pipedrive = receive("pipedrive", "junction:pass word");
    assert_eq!(
        header(&pipedrive, "authorization"),
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("junction:pass word")
        )
    );
    let _ = std::fs::remove_file(&overlay);
}
