//! Custom providers added by configuration alone, end to end through the local stack:
//! one overlay file defines
//! - `acme-sso`, a generic OpenID Connect provider given only by its issuer. The issuer
//!   is a real OpenID Provider on loopback (panva's `oidc-provider` from npm, OpenID
//!   Certified, `infra/oidc-provider/server.mjs`): discovery, connect with PKCE, ID
//!   token validation, refresh with rotation (twice, so a rotated token that was not
//!   stored would fail), revocation on disconnect;
//! - `billing`, an in-house sender signing with HMAC-SHA512 over timestamp and body;
//! - `ledger`, an in-house sender that uses Standard Webhooks, by name.
//!
//! Signatures are computed here from the providers' rules, independently of Junction's
//! signing code.

use crate::common;
use common::{
    browser, connect_url, first_cookie, location, pause_ingest_consumers, session_for,
    start_with_overlay, stop_and_check_processes_are_gone, take_providers, watch,
};

use std::time::Duration;

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use fake_provider::oidc::OidcProvider;
use hmac::{Hmac, Mac};
use local_stack::{emulator::repo_root, http_api::LOCAL_IAM_HEADER, stack::LocalStack};
use serde_json::Value;

const RETURN_TO: &str = "https://app.example.com/integrations";

fn overlay(issuer: &str) -> String {
    format!(
        r#"[[provider]]
id = "acme-sso"
name = "Acme SSO"
docs = "https://github.com/panva/node-oidc-provider"
[provider.oauth_discovery]
issuer = "{issuer}"
scopes = ["openid", "offline_access", "email"]
# OpenID Connect issues a refresh token for offline_access only with prompt=consent.
authorize_params = {{ prompt = "consent" }}

[[provider]]
id = "billing"
name = "In-house billing service"
docs = "https://wiki.example.com/billing/webhooks"
[provider.webhook]
event_id = {{ header = "X-Billing-Delivery" }}
[provider.webhook.verification]
scheme = "hmac-sha512"
signature = {{ format = "single", header = "X-Billing-Signature", prefix = "sha512=", encoding = "hex" }}
signed = ["timestamp", {{ literal = "." }}, "body"]
timestamp = {{ from = {{ header = "X-Billing-Timestamp" }}, unit = "seconds", max_age_seconds = 300, max_future_seconds = 60 }}

[[provider]]
id = "ledger"
name = "In-house ledger service"
docs = "https://wiki.example.com/ledger/webhooks"
[provider.webhook]
verification_from = "standard-webhooks"
event_id = {{ header = "webhook-id" }}
"#
    )
}

async fn signing_secret(stack: &LocalStack, prefix: &str, provider: &str) -> String {
    let text = aws_sdk_secretsmanager::Client::new(stack.sdk_config())
        .get_secret_value()
        .secret_id(format!("{prefix}/webhooks/{provider}"))
        .send()
        .await
        .expect("seeded development secret")
        .secret_string
        .unwrap_or_default();
    let document: Value = serde_json::from_str(&text).expect("JSON secret");
    document["signing_secrets"][0]
        .as_str()
        .expect("a signing secret")
        .to_owned()
}

async fn view(http: &reqwest::Client, stack: &LocalStack, id: &str) -> Value {
    let text = http
        .get(format!(
            "{}/v1/tenants/acme/connections/{id}",
            stack.api_url()
        ))
        .header(LOCAL_IAM_HEADER, stack.local_iam_key())
        .send()
        .await
        .expect("show")
        .text()
        .await
        .expect("body");
    serde_json::from_str(&text).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_defined_only_in_an_overlay_connect_and_verify() {
    let idp = OidcProvider::start(&repo_root(), 600)
        .await
        .expect("oidc-provider starts");
    let (stack, prefix, dir) = start_with_overlay("oidc", &overlay(idp.issuer())).await;
    pause_ingest_consumers(&stack).await;
    let api = stack.api_url().to_owned();
    let http = browser();

    // --- Generic webhook schemes -----------------------------------------------------
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let billing_secret = signing_secret(&stack, &prefix, "billing").await;
    let body = br#"{"type":"invoice.paid","invoice":"inv_1"}"#;
    let billing = |timestamp: i64, body: &[u8], secret: &str| {
        let mut mac = Hmac::<sha2::Sha512>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(body);
        let signature = hex::encode(mac.finalize().into_bytes());
        watch("a billing signature", &signature);
        let signature = format!("sha512={signature}");
        http.post(format!("{api}/webhooks/billing"))
            .header("content-type", "application/json")
            .header("X-Billing-Delivery", format!("dlv_{timestamp}"))
            .header("X-Billing-Timestamp", timestamp.to_string())
            .header("X-Billing-Signature", signature)
            .body(body.to_vec())
            .send()
    };
    let status = |response: reqwest::Result<reqwest::Response>| {
        response.expect("answered").status().as_u16()
    };
    assert_eq!(status(billing(now, body, &billing_secret).await), 200);
    assert_eq!(
        status(
            billing(
                now,
                b"{\"type\":\"invoice.paid\",\"invoice\":\"inv_2\"}",
                &billing_secret
            )
            .await
        ),
        200
    );
    let tampered = {
        let mut mac = Hmac::<sha2::Sha512>::new_from_slice(billing_secret.as_bytes()).expect("key");
        mac.update(format!("{now}.").as_bytes());
        mac.update(body);
        let signature = hex::encode(mac.finalize().into_bytes());
        watch("a billing signature", &signature);
        let signature = format!("sha512={signature}");
        http.post(format!("{api}/webhooks/billing"))
            .header("X-Billing-Timestamp", now.to_string())
            .header("X-Billing-Signature", signature)
            .body(b"{\"type\":\"invoice.paid\",\"invoice\":\"inv_9\"}".to_vec())
            .send()
            .await
    };
    assert_eq!(status(tampered), 401, "a changed body");
    assert_eq!(
        status(billing(now - 600, body, &billing_secret).await),
        401,
        "outside the window"
    );
    assert_eq!(
        status(billing(now, body, "not-the-secret").await),
        401,
        "another secret"
    );

    let ledger_secret = signing_secret(&stack, &prefix, "ledger").await;
    let key = BASE64
        .decode(ledger_secret.trim_start_matches("whsec_"))
        .expect("Standard Webhooks secrets are whsec_ + base64");
    let ledger_body = br#"{"type":"entry.posted","data":{"id":"le_1"}}"#;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("key");
    mac.update(format!("msg_ledger_1.{now}.").as_bytes());
    mac.update(ledger_body);
    let signature = BASE64.encode(mac.finalize().into_bytes());
    watch("a ledger signature", &signature);
    let signature = format!("v1,{signature}");
    let ledger = http
        .post(format!("{api}/webhooks/ledger"))
        .header("content-type", "application/json")
        .header("webhook-id", "msg_ledger_1")
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", &signature)
        .body(ledger_body.to_vec())
        .send()
        .await;
    assert_eq!(status(ledger), 200, "Standard Webhooks by name");

    let ingest = stack.description().queues["IngestQueue"].url.clone();
    let mut providers = take_providers(stack.sqs(), &ingest, 3, Duration::from_secs(30)).await;
    providers.sort();
    assert_eq!(
        providers,
        ["billing", "billing", "ledger"],
        "verified deliveries only"
    );

    // --- Generic OpenID Connect provider ------------------------------------------------
    let callback = format!("{api}/oauth/acme-sso/callback");
    let client = idp.register_client(&callback).await.expect("registered");
    aws_sdk_secretsmanager::Client::new(stack.sdk_config())
        .create_secret()
        .name(format!("{prefix}/oauth/acme-sso"))
        .secret_string(
            serde_json::json!({
                "client_id": client.client_id,
                "client_secret": client.client_secret,
            })
            .to_string(),
        )
        .send()
        .await
        .expect("client credentials stored");

    let sso_session = session_for("acme-sso", "acme", RETURN_TO);
    let start_url = connect_url(&stack, &sso_session).await;
    let start = http.get(&start_url).send().await.expect("start");
    assert_eq!(start.status(), 302);
    let cookie = first_cookie(&start);
    let authorize = url::Url::parse(&location(&start)).expect("authorize URL");
    assert!(
        authorize
            .as_str()
            .starts_with(&format!("{}/auth?", idp.issuer())),
        "the discovered authorization endpoint: {authorize}"
    );
    let query: std::collections::BTreeMap<String, String> =
        authorize.query_pairs().into_owned().collect();
    assert_eq!(query["code_challenge_method"], "S256", "PKCE from metadata");
    assert_eq!(query["scope"], "openid offline_access email");
    assert_eq!(query["prompt"], "consent");
    assert!(query["nonce"].len() >= 43, "a fresh nonce");

    let callback_url = idp.authorize(authorize.as_str()).await.expect("authorized");
    assert!(
        callback_url.starts_with(&format!("{callback}?")),
        "{callback_url}"
    );
    assert!(
        callback_url.contains("iss="),
        "RFC 9207 iss on the callback"
    );
    let connected = http
        .get(&callback_url)
        .header("cookie", &cookie)
        .send()
        .await
        .expect("callback");
    assert_eq!(connected.status(), 302);
    let back = url::Url::parse(&location(&connected)).expect("return_to");
    let id = back
        .query_pairs()
        .find(|(k, _)| k == "connection_id")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("connected: {back}"));
    let shown = view(&http, &stack, &id).await;
    assert_eq!(shown["state"], "active");
    assert_eq!(
        shown["account_id"], "user-1",
        "the validated ID token's subject"
    );
    assert_eq!(shown["token"]["refreshable"], true);

    // A callback whose iss names another issuer is refused (mix-up defence).
    let second = http
        .get(connect_url(&stack, &sso_session).await)
        .send()
        .await
        .expect("start");
    let second_cookie = first_cookie(&second);
    let second_callback = idp.authorize(&location(&second)).await.expect("authorized");
    let mut forged = url::Url::parse(&second_callback).expect("callback URL");
    let pairs: Vec<(String, String)> = forged
        .query_pairs()
        .into_owned()
        .map(|(k, v)| {
            if k == "iss" {
                (k, "https://attacker.example.com".to_owned())
            } else {
                (k, v)
            }
        })
        .collect();
    forged.query_pairs_mut().clear().extend_pairs(pairs);
    let refused = http
        .get(forged.as_str())
        .header("cookie", &second_cookie)
        .send()
        .await
        .expect("forged callback");
    assert_eq!(refused.status(), 400);

    // Refresh twice: each refresh rotates the refresh token; the second works only if
    // the first stored the new one.
    let refresher = stack
        .schedules()
        .iter()
        .find(|(_, s)| s.function.logical_id() == "TokenRefresherFunction")
        .map(|(name, _)| name.clone())
        .expect("the refresher's schedule");
    for round in 1..=2 {
        let report: Value =
            serde_json::from_slice(&stack.fire_schedule(&refresher).await.expect("fired"))
                .expect("report");
        assert_eq!(report["refreshed"], 1, "round {round}: {report}");
        assert_eq!(report["needs_reauth"], 0, "round {round}: {report}");
    }
    let counters = idp.counters().await.expect("counters");
    assert_eq!(
        counters["code_grants"], 1,
        "the forged callback never reached the token endpoint: {counters}"
    );
    assert_eq!(counters["refresh_grants"], 2, "{counters}");
    assert_eq!(counters["refresh_tokens_consumed"], 2, "{counters}");
    assert_eq!(counters["errors"], serde_json::json!([]), "{counters}");
    assert!(
        counters["discovery"].as_u64().unwrap_or(99) <= 2,
        "metadata is fetched once per process (oauth, refresher): {counters}"
    );
    assert_eq!(view(&http, &stack, &id).await["state"], "active");

    let deleted = http
        .delete(format!("{api}/v1/tenants/acme/connections/{id}"))
        .header(LOCAL_IAM_HEADER, stack.local_iam_key())
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 200);
    let counters = idp.counters().await.expect("counters");
    assert_eq!(counters["revocations"], 1, "{counters}");
    assert_eq!(counters["grants_revoked"], 1, "{counters}");

    // The provider reported every kind of token it issued, so the scan looks for them.
    let issued: std::collections::BTreeSet<&str> = idp
        .issued_secrets()
        .iter()
        .map(|secret| secret.what)
        .collect();
    for kind in [
        "an access token of the OpenID provider",
        "a refresh token of the OpenID provider",
        "an ID token of the OpenID provider",
        "a PKCE verifier sent to the OpenID provider",
        "an authorization code of the OpenID provider",
        "a state value sent to the OpenID provider",
    ] {
        assert!(issued.contains(kind), "{kind}: {issued:?}");
    }
    stop_and_check_processes_are_gone(stack).await;
    drop(idp);
    let _ = std::fs::remove_dir_all(dir);
}
