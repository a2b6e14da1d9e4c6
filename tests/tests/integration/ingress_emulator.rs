//! The ingress against the AWS emulator: real Secrets Manager, SQS and S3 calls through
//! the same adapters the Lambda uses. Every valid request lands as exactly one message
//! with the right attributes; every invalid one lands as none, with the right status.

use std::{collections::BTreeMap, sync::Arc};

use http::{HeaderMap, HeaderName, HeaderValue};
use junction_aws::clock::{Clock, FixedClock};
use junction_aws::payloads::S3PayloadStore;
use junction_aws::queue::{SqsEventQueue, attribute};
use junction_aws::secrets::{CachePolicy, SecretsManagerSource, WebhookSecrets};
use junction_catalog::Catalog;
use junction_tests::emulator;
use junction_webhooks::{
    Ingress, IngressConfig, SigningSecret, WebhookReason, WebhookRequest, WebhookResult,
    ed25519_public_key, sign_into, url_with_body_hash,
};
use local_stack::emulator::Moto;

const SECRET: &str = "integration-secret";
const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const DISCORD_SEED: [u8; 32] = [42; 32];
const BUCKET: &str = "payloads";

struct Stack {
    moto: Moto,
    aws: aws_config::SdkConfig,
    queue_url: String,
    clock: Arc<FixedClock>,
    ingress: Ingress,
}

/// The secret a provider is configured with (what `sign` is given may differ: Discord).
fn configured_secret(provider: &str) -> String {
    match provider {
        "standard-webhooks" => STANDARD_SECRET.to_owned(),
        "discord" => ed25519_public_key(junction_catalog::SecretEncoding::Hex, &DISCORD_SEED),
        _ => SECRET.to_owned(),
    }
}

fn hex_seed() -> String {
    DISCORD_SEED.iter().map(|b| format!("{b:02x}")).collect()
}

async fn stack(config: IngressConfig) -> Stack {
    let (moto, aws) = emulator().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let queue_url = sqs
        .create_queue()
        .queue_name("ingest")
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url");
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&aws)
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("create bucket");
    let secrets = aws_sdk_secretsmanager::Client::new(&aws);
    for provider in Catalog::embedded().expect("catalog").providers() {
        let value = serde_json::json!({ "signing_secrets": [configured_secret(&provider.id)] });
        secrets
            .create_secret()
            .name(format!("junction/webhooks/{}", provider.id))
            .secret_string(value.to_string())
            .send()
            .await
            .expect("create secret");
    }
    let clock = Arc::new(FixedClock::at_unix(
        time::OffsetDateTime::now_utc().unix_timestamp(),
    ));
    let ingress = Ingress::new(
        Catalog::embedded().expect("catalog"),
        WebhookSecrets::new(
            Arc::new(SecretsManagerSource::from_config(&aws)),
            "junction",
            CachePolicy::default(),
        ),
        Arc::new(SqsEventQueue::from_config(&aws, &queue_url).expect("queue client")),
        Arc::new(S3PayloadStore::from_config(&aws, BUCKET)),
        clock.clone(),
        config,
    );
    Stack {
        moto,
        aws,
        queue_url,
        clock,
        ingress,
    }
}

/// A realistic delivery for `provider`, signed with `secret` at `now`.
fn delivery(
    provider: &str,
    secret: &str,
    body: &[u8],
    extra: &[(&str, &str)],
    now: time::OffsetDateTime,
) -> WebhookRequest {
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("hooks.example.com"));
    for (name, value) in extra {
        headers.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    let spec = Catalog::embedded()
        .expect("catalog")
        .get(provider)
        .and_then(|p| p.verification())
        .expect("spec");
    let path = format!("/webhooks/{provider}");
    let url = url_with_body_hash(
        spec,
        &format!("https://hooks.example.com{path}"),
        &headers,
        body,
    );
    let raw_query = url
        .split_once('?')
        .map(|(_, q)| q.to_owned())
        .unwrap_or_default();
    sign_into(
        spec,
        &SigningSecret::new(secret),
        "POST",
        &url,
        &mut headers,
        body,
        now,
    )
    .expect("sign");
    WebhookRequest {
        method: "POST".into(),
        provider: provider.into(),
        endpoint: None,
        path,
        raw_query,
        headers,
        body: body.to_vec(),
    }
}

/// One valid delivery per provider, with the event id the message must carry.
fn valid_deliveries(now: time::OffsetDateTime) -> Vec<(WebhookRequest, String)> {
    let ms = now.unix_timestamp() * 1000;
    let json = [("content-type", "application/json")];
    vec![
        (
            delivery(
                "stripe",
                SECRET,
                br#"{"id":"evt_int_1","type":"invoice.paid"}"#,
                &json,
                now,
            ),
            "evt_int_1".into(),
        ),
        (
            delivery(
                "github",
                SECRET,
                br#"{"zen":"Keep it logically awesome."}"#,
                &[
                    ("x-github-delivery", "gh-int-1"),
                    ("x-github-event", "ping"),
                ],
                now,
            ),
            "gh-int-1".into(),
        ),
        (
            delivery(
                "slack",
                SECRET,
                br#"{"type":"event_callback","event_id":"Ev-int-1","event":{"type":"message"}}"#,
                &json,
                now,
            ),
            "Ev-int-1".into(),
        ),
        (
            delivery(
                "shopify",
                SECRET,
                br#"{"id":1}"#,
                &[
                    ("x-shopify-webhook-id", "shop-int-1"),
                    ("x-shopify-topic", "orders/create"),
                ],
                now,
            ),
            "shop-int-1".into(),
        ),
        (
            delivery(
                "standard-webhooks",
                STANDARD_SECRET,
                br#"{"type":"user.created"}"#,
                &[("svix-id", "msg_int_1")],
                now,
            ),
            "msg_int_1".into(),
        ),
        (
            delivery(
                "twilio",
                SECRET,
                b"MessageSid=SM1&Body=hi",
                &[
                    ("content-type", "application/x-www-form-urlencoded"),
                    ("i-twilio-idempotency-token", "tw-int-1"),
                ],
                now,
            ),
            "tw-int-1".into(),
        ),
        (
            delivery(
                "twilio",
                SECRET,
                br#"{"sid":"SM2"}"#,
                &[
                    ("content-type", "application/json"),
                    ("i-twilio-idempotency-token", "tw-int-2"),
                ],
                now,
            ),
            "tw-int-2".into(),
        ),
        (
            delivery(
                "square",
                SECRET,
                br#"{"event_id":"sq-int-1","type":"payment.created"}"#,
                &json,
                now,
            ),
            "sq-int-1".into(),
        ),
        (
            delivery(
                "linear",
                SECRET,
                format!(r#"{{"type":"Issue","webhookTimestamp":{ms}}}"#).as_bytes(),
                &[("linear-delivery", "lin-int-1")],
                now,
            ),
            "lin-int-1".into(),
        ),
        (
            delivery(
                "discord",
                &hex_seed(),
                br#"{"id":"di-int-1","type":2}"#,
                &[("x-signature-timestamp", &now.unix_timestamp().to_string())],
                now,
            ),
            "di-int-1".into(),
        ),
    ]
}

/// Every message on the queue (received and deleted), with string attributes.
async fn drain(stack: &Stack) -> Vec<(String, BTreeMap<String, String>)> {
    let sqs = aws_sdk_sqs::Client::new(&stack.aws);
    let mut messages = Vec::new();
    loop {
        let output = sqs
            .receive_message()
            .queue_url(&stack.queue_url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .visibility_timeout(300)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        let batch = output.messages.unwrap_or_default();
        if batch.is_empty() {
            return messages;
        }
        for message in batch {
            let attributes = message
                .message_attributes
                .unwrap_or_default()
                .into_iter()
                .map(|(name, value)| (name, value.string_value.unwrap_or_default()))
                .collect();
            messages.push((message.body.unwrap_or_default(), attributes));
            sqs.delete_message()
                .queue_url(&stack.queue_url)
                .receipt_handle(message.receipt_handle.unwrap_or_default())
                .send()
                .await
                .expect("delete");
        }
    }
}

#[tokio::test]
async fn valid_requests_land_once_each_and_invalid_ones_never() {
    let stack = stack(IngressConfig::default()).await;
    let now = stack.clock.now();
    let valid = valid_deliveries(now);
    let mut expected_ids: Vec<String> = Vec::new();
    for (request, event_id) in &valid {
        let (response, outcome) = stack.ingress.handle(request.clone()).await;
        assert_eq!(response.status, 200, "{}: {outcome:?}", request.provider);
        expected_ids.push(event_id.clone());
    }

    let stale = now - time::Duration::seconds(400);
    let mut tampered = delivery(
        "github",
        SECRET,
        br#"{"a":1}"#,
        &[("x-github-delivery", "bad-1")],
        now,
    );
    tampered.body = br#"{"a":2}"#.to_vec();
    let mut unsigned = delivery("shopify", SECRET, b"{}", &[], now);
    unsigned.headers.remove("x-shopify-hmac-sha256");
    let mut unknown = delivery("github", SECRET, b"{}", &[], now);
    unknown.provider = "not-a-provider".into();
    let invalid: Vec<(WebhookRequest, u16, WebhookReason)> = vec![
        (tampered, 401, WebhookReason::SignatureMismatch),
        (
            delivery("github", "wrong-secret", b"{}", &[], now),
            401,
            WebhookReason::SignatureMismatch,
        ),
        (unsigned, 401, WebhookReason::MissingSignature),
        (
            delivery("stripe", SECRET, br#"{"id":"evt_old"}"#, &[], stale),
            401,
            WebhookReason::StaleTimestamp,
        ),
        (
            delivery(
                "slack",
                SECRET,
                b"{}",
                &[],
                now + time::Duration::seconds(400),
            ),
            401,
            WebhookReason::FutureTimestamp,
        ),
        (
            delivery("github", SECRET, &vec![b'x'; 5 * 1024 * 1024 + 1], &[], now),
            413,
            WebhookReason::BodyTooLarge,
        ),
        (unknown, 404, WebhookReason::UnknownProvider),
    ];
    for (request, status, reason) in invalid {
        let (response, outcome) = stack.ingress.handle(request).await;
        assert_eq!((response.status, outcome.reason), (status, Some(reason)));
    }

    let messages = drain(&stack).await;
    let mut ids: Vec<String> = messages
        .iter()
        .map(|(_, a)| a[attribute::EVENT_ID].clone())
        .collect();
    ids.sort();
    expected_ids.sort();
    assert_eq!(ids, expected_ids, "exactly the valid requests, once each");
    for (body, attributes) in &messages {
        let (request, _) = valid
            .iter()
            .find(|(_, id)| *id == attributes[attribute::EVENT_ID])
            .expect("a message for a sent request");
        assert_eq!(
            body.as_bytes(),
            request.body.as_slice(),
            "raw body, byte for byte"
        );
        assert_eq!(attributes[attribute::PROVIDER], request.provider);
        assert_eq!(attributes[attribute::BODY_ENCODING], "utf8");
        assert!(attributes.contains_key(attribute::RECEIVED_AT));
        assert!(attributes.contains_key(attribute::HEADERS));
    }
}

#[tokio::test]
async fn oversized_body_is_stored_in_s3_and_the_message_points_at_it() {
    let stack = stack(IngressConfig::default()).await;
    let body = format!(r#"{{"id":1,"blob":"{}"}}"#, "y".repeat(300 * 1024));
    let request = delivery(
        "shopify",
        SECRET,
        body.as_bytes(),
        &[("x-shopify-webhook-id", "big-1")],
        stack.clock.now(),
    );
    let (response, outcome) = stack.ingress.handle(request).await;
    assert_eq!(response.status, 200);
    assert!(outcome.offloaded);
    let messages = drain(&stack).await;
    assert_eq!(messages.len(), 1);
    let (pointer, attributes) = &messages[0];
    assert_eq!(attributes[attribute::BODY_ENCODING], "s3");
    let key = pointer
        .strip_prefix("s3://payloads/")
        .expect("an s3 URI in the payload bucket");
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&stack.aws)
            .force_path_style(true)
            .build(),
    );
    let object = s3
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .expect("stored object");
    let stored = object.body.collect().await.expect("read").into_bytes();
    assert_eq!(stored.as_ref(), body.as_bytes());
}

#[tokio::test]
async fn a_secret_rotated_in_secrets_manager_takes_effect_without_a_restart() {
    let stack = stack(IngressConfig::default()).await;
    let now = stack.clock.now();
    let first = delivery(
        "github",
        SECRET,
        b"{}",
        &[("x-github-delivery", "rot-1")],
        now,
    );
    assert_eq!(stack.ingress.handle(first).await.0.status, 200);
    aws_sdk_secretsmanager::Client::new(&stack.aws)
        .put_secret_value()
        .secret_id("junction/webhooks/github")
        .secret_string(r#"{"signing_secrets":["rotated","integration-secret"]}"#)
        .send()
        .await
        .expect("rotate");
    stack.clock.advance(time::Duration::seconds(61));
    let rotated = delivery(
        "github",
        "rotated",
        b"{}",
        &[("x-github-delivery", "rot-2")],
        stack.clock.now(),
    );
    let (response, outcome) = stack.ingress.handle(rotated).await;
    assert_eq!(response.status, 200);
    assert!(outcome.secrets_refreshed);
    assert_eq!(drain(&stack).await.len(), 2);
}

#[tokio::test]
async fn an_emulator_outage_is_a_5xx_so_the_provider_retries() {
    let stack = stack(IngressConfig::default()).await;
    let now = stack.clock.now();
    // Warm the secret cache, then pause the emulator: the SQS call must time out.
    let warm = delivery(
        "github",
        SECRET,
        b"{}",
        &[("x-github-delivery", "out-1")],
        now,
    );
    assert_eq!(stack.ingress.handle(warm).await.0.status, 200);
    let pid = stack.moto.pid().expect("own emulator").to_string();
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    signal("-STOP");
    let during = delivery(
        "github",
        SECRET,
        b"{}",
        &[("x-github-delivery", "out-2")],
        now,
    );
    let result = stack.ingress.handle(during).await;
    signal("-CONT");
    let (response, outcome) = result;
    assert_eq!(
        (response.status, outcome.reason),
        (503, Some(WebhookReason::EnqueueFailed))
    );
}

/// What the ingress does at init: every signing secret in `BatchGetSecretValue` pages
/// (the catalog's providers are more than one page of 20), and the SQS connection
/// opened with one `GetQueueAttributes`.
#[tokio::test]
async fn init_prefetches_every_signing_secret_and_opens_the_queue_connection() {
    let stack = stack(IngressConfig::default()).await;
    let secrets = WebhookSecrets::new(
        Arc::new(SecretsManagerSource::from_config(&stack.aws)),
        "junction",
        CachePolicy::default(),
    );
    let providers = Catalog::embedded().expect("catalog").providers().count();
    assert!(providers > 20, "{providers} providers: more than one page");
    let prefetched = secrets.prefetch(stack.clock.now()).await.expect("prefetch");
    assert_eq!(prefetched, providers);
    let github = secrets
        .get("github", None, stack.clock.now())
        .await
        .expect("cached");
    assert_eq!(github.len(), 1);
    assert_eq!(github[0].expose(), SECRET);
    SqsEventQueue::from_config(&stack.aws, &stack.queue_url)
        .expect("queue client")
        .warm_up()
        .await
        .expect("GetQueueAttributes");
}

/// `SendMessage` through the SDK: the body byte for byte, every attribute as a `String`
/// attribute with its value, and a delay (cut to SQS's 15 minutes) that keeps the
/// message from being received.
#[tokio::test]
async fn send_message_carries_the_body_and_every_attribute_to_the_queue() {
    use junction_aws::queue::{EventQueue, QueueMessage};
    let stack = stack(IngressConfig::default()).await;
    let queue = SqsEventQueue::from_config(&stack.aws, &stack.queue_url).expect("queue client");
    let attributes: BTreeMap<String, String> = [
        (attribute::PROVIDER, "github"),
        (attribute::ENDPOINT, "acme"),
        (attribute::EVENT_ID, "d-1"),
        (attribute::EVENT_ID_SOURCE, "header"),
        (attribute::RECEIVED_AT, "2026-01-02T03:04:05.678Z"),
        (
            attribute::HEADERS,
            r#"{"x-github-event":"push","x-note":"caf\u00e9 \"q\""}"#,
        ),
        (attribute::BODY_ENCODING, "utf8"),
        (attribute::ACCOUNT, "Ünïcode & <markup>"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect();
    let body = "{\"emoji\":\"🦀\",\"quote\":\"\\\"\",\"newline\":\"a\\nb\"}\n\ttrailing";
    queue
        .send(QueueMessage {
            body: body.to_owned(),
            attributes: attributes.clone(),
        })
        .await
        .expect("SendMessage");
    let messages = drain(&stack).await;
    assert_eq!(messages, [(body.to_owned(), attributes.clone())]);

    let sqs = aws_sdk_sqs::Client::new(&stack.aws);
    let received = sqs
        .receive_message()
        .queue_url(&stack.queue_url)
        .message_attribute_names("All")
        .send()
        .await
        .expect("receive");
    assert!(received.messages.unwrap_or_default().is_empty());
    queue
        .send_delayed(
            QueueMessage {
                body: "later".to_owned(),
                attributes,
            },
            std::time::Duration::from_secs(3600),
        )
        .await
        .expect("SendMessage with a delay");
    assert!(drain(&stack).await.is_empty(), "delayed, not yet visible");
    let counts = sqs
        .get_queue_attributes()
        .queue_url(&stack.queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .unwrap_or_default();
    assert_eq!(
        counts
            .get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .map(String::as_str),
        Some("1")
    );
}

/// A queue URL names a queue, not the endpoint: with the emulator configured as the
/// endpoint, the production form of the URL (another region and account than the
/// emulator's, on a host this machine cannot reach) and the legacy `queue.amazonaws.com`
/// form reach the queue of that name through the configured endpoint.
#[tokio::test]
async fn a_queue_url_of_another_region_and_account_goes_to_the_configured_endpoint() {
    use junction_aws::queue::{EventQueue, QueueMessage};
    let stack = stack(IngressConfig::default()).await;
    assert!(
        stack.queue_url.starts_with("http://127.0.0.1:"),
        "{}",
        stack.queue_url
    );
    for (n, url) in [
        "https://sqs.ap-southeast-2.amazonaws.com/210987654321/ingest",
        "https://eu-central-1.queue.amazonaws.com/111122223333/ingest",
    ]
    .into_iter()
    .enumerate()
    {
        let queue = SqsEventQueue::from_config(&stack.aws, url).expect("queue client");
        queue.warm_up().await.expect("GetQueueAttributes");
        queue
            .send(QueueMessage {
                body: format!("via {url}"),
                attributes: BTreeMap::from([(attribute::EVENT_ID.to_owned(), n.to_string())]),
            })
            .await
            .expect("SendMessage");
    }
    let mut bodies: Vec<String> = drain(&stack)
        .await
        .into_iter()
        .map(|(body, _)| body)
        .collect();
    bodies.sort();
    assert_eq!(
        bodies,
        [
            "via https://eu-central-1.queue.amazonaws.com/111122223333/ingest",
            "via https://sqs.ap-southeast-2.amazonaws.com/210987654321/ingest",
        ]
    );
}

/// An SQS error is a 503 (the provider retries) whose logged outcome names the
/// service's error code, so on-call sees why without reproducing it.
#[tokio::test]
async fn an_sqs_error_code_reaches_the_outcome_cause() {
    let stack = stack(IngressConfig::default()).await;
    let missing = stack.queue_url.replace("/ingest", "/no-such-queue");
    let ingress = Ingress::new(
        Catalog::embedded().expect("catalog"),
        WebhookSecrets::new(
            Arc::new(SecretsManagerSource::from_config(&stack.aws)),
            "junction",
            CachePolicy::default(),
        ),
        Arc::new(SqsEventQueue::from_config(&stack.aws, &missing).expect("queue client")),
        Arc::new(S3PayloadStore::from_config(&stack.aws, BUCKET)),
        stack.clock.clone(),
        IngressConfig::default(),
    );
    let request = delivery(
        "github",
        SECRET,
        b"{}",
        &[("x-github-delivery", "no-queue-1")],
        stack.clock.now(),
    );
    let (response, outcome) = ingress.handle(request).await;
    assert_eq!(
        (response.status, outcome.reason),
        (503, Some(WebhookReason::EnqueueFailed))
    );
    let cause = outcome.cause.expect("a cause");
    assert!(cause.contains("QueueDoesNotExist"), "{cause}");
    assert!(
        !response.body.contains("QueueDoesNotExist"),
        "{}",
        response.body
    );
}

/// Without a region every SQS call would fail; the client is refused at start instead.
#[tokio::test]
async fn a_queue_client_without_a_region_is_refused_at_start() {
    let aws = aws_config::SdkConfig::builder().build();
    let err = SqsEventQueue::from_config(&aws, "https://sqs.eu-west-1.amazonaws.com/1/q")
        .expect_err("no region");
    assert!(err.to_string().contains("AWS_REGION"), "{err}");
}

/// Asana's and Notion's unsigned handshakes through the Secrets Manager adapter the
/// Lambda uses (`HandshakeSecretStore`): a name without a secret gets the delivered one;
/// an existing secret, configured or an empty list, is refused with 403 and left exactly
/// as it was (same value, no new version), since the function may only CreateSecret.
#[tokio::test]
async fn a_handshake_creates_a_missing_secret_and_never_changes_an_existing_one() {
    let stack = stack(IngressConfig::default()).await;
    let source = Arc::new(SecretsManagerSource::from_config(&stack.aws));
    let ingress = Ingress::new(
        Catalog::embedded().expect("catalog"),
        WebhookSecrets::new(source.clone(), "junction", CachePolicy::default()),
        Arc::new(SqsEventQueue::from_config(&stack.aws, &stack.queue_url).expect("queue client")),
        Arc::new(S3PayloadStore::from_config(&stack.aws, BUCKET)),
        stack.clock.clone(),
        IngressConfig::default(),
    )
    .with_handshake_store(source);
    let client = aws_sdk_secretsmanager::Client::new(&stack.aws);
    let stored = |name: &'static str| {
        let client = client.clone();
        async move {
            let value = client
                .get_secret_value()
                .secret_id(name)
                .send()
                .await
                .expect("the secret exists");
            let versions = client
                .list_secret_version_ids()
                .secret_id(name)
                .send()
                .await
                .expect("versions")
                .versions
                .unwrap_or_default()
                .len();
            let value: serde_json::Value =
                serde_json::from_str(value.secret_string().expect("a string")).expect("JSON");
            (value, versions)
        }
    };
    let request = |provider: &str, endpoint: Option<&str>, header: Option<&str>, body: &str| {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("hooks.example.com"));
        if let Some(secret) = header {
            headers.insert(
                "x-hook-secret",
                HeaderValue::from_str(secret).expect("value"),
            );
        }
        WebhookRequest {
            method: "POST".into(),
            provider: provider.into(),
            endpoint: endpoint.map(str::to_owned),
            path: match endpoint {
                Some(endpoint) => format!("/webhooks/{provider}/{endpoint}"),
                None => format!("/webhooks/{provider}"),
            },
            raw_query: String::new(),
            headers,
            body: body.as_bytes().to_vec(),
        }
    };

    // An endpoint nobody configured does not exist: its handshake creates nothing.
    let (response, outcome) = ingress
        .handle(request(
            "asana",
            Some("made-up"),
            Some("attacker-secret"),
            "",
        ))
        .await;
    assert_eq!(
        (response.status, outcome.reason),
        (404, Some(WebhookReason::UnknownEndpoint))
    );
    let created = client
        .get_secret_value()
        .secret_id("junction/webhooks/asana/made-up")
        .send()
        .await
        .map_err(aws_sdk_secretsmanager::Error::from);
    assert!(
        matches!(
            created,
            Err(aws_sdk_secretsmanager::Error::ResourceNotFoundException(_))
        ),
        "{created:?}"
    );

    // GIVEN no secret for Asana's `projects` endpoint, which the provider's secret
    // declares: the handshake installs its own.
    client
        .put_secret_value()
        .secret_id("junction/webhooks/asana")
        .secret_string(
            serde_json::json!({
                "signing_secrets": [configured_secret("asana")],
                "endpoints": ["projects"],
            })
            .to_string(),
        )
        .send()
        .await
        .expect("declare the endpoint");
    // The provider's secret was read a moment ago; a declared endpoint exists once the
    // ingress reads it again, after at most the refresh interval (a minute).
    stack.clock.advance(time::Duration::seconds(61));
    let (response, outcome) = ingress
        .handle(request(
            "asana",
            Some("projects"),
            Some("first-hook-secret"),
            "",
        ))
        .await;
    assert_eq!(
        (response.status, outcome.result),
        (200, WebhookResult::Handshake)
    );
    assert_eq!(
        response.headers,
        [("x-hook-secret", "first-hook-secret".to_owned())]
    );
    assert_eq!(
        stored("junction/webhooks/asana/projects").await,
        (
            serde_json::json!({ "signing_secrets": ["first-hook-secret"] }),
            1
        )
    );

    // WHEN a second handshake comes for the same endpoint THEN it is refused and the
    // installed secret is untouched.
    let (response, outcome) = ingress
        .handle(request(
            "asana",
            Some("projects"),
            Some("attacker-secret"),
            "",
        ))
        .await;
    assert_eq!(
        (response.status, outcome.reason),
        (403, Some(WebhookReason::SecretAlreadyConfigured))
    );
    assert_eq!(
        stored("junction/webhooks/asana/projects").await,
        (
            serde_json::json!({ "signing_secrets": ["first-hook-secret"] }),
            1
        )
    );

    // An operator's empty list is an existing secret too: not filled in.
    client
        .create_secret()
        .name("junction/webhooks/asana/reserved")
        .secret_string(r#"{"signing_secrets":[]}"#)
        .send()
        .await
        .expect("create placeholder");
    let (response, _) = ingress
        .handle(request(
            "asana",
            Some("reserved"),
            Some("attacker-secret"),
            "",
        ))
        .await;
    assert_eq!(response.status, 403);
    assert_eq!(
        stored("junction/webhooks/asana/reserved").await,
        (serde_json::json!({ "signing_secrets": [] }), 1)
    );

    // Notion's configured provider secret is never replaced by a verification token.
    let (response, _) = ingress
        .handle(request(
            "notion",
            None,
            None,
            r#"{"verification_token":"secret_forged"}"#,
        ))
        .await;
    assert_eq!(response.status, 403);
    assert_eq!(
        stored("junction/webhooks/notion").await,
        (
            serde_json::json!({ "signing_secrets": [configured_secret("notion")] }),
            1
        )
    );
    assert!(
        drain(&stack).await.is_empty(),
        "handshakes are never enqueued"
    );
}
