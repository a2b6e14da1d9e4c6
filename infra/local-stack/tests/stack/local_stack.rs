//! End to end through the local stack: real function processes behind the Runtime API
//! emulator, fed over HTTP, by an SQS event source mapping and by schedules, with the
//! AWS side in a moto server. Everything listens on 127.0.0.1 only.
//!
//! Each test boots its own stack (unique stack name and prefix), so they may share an
//! emulator (`JUNCTION_EMULATOR_ENDPOINT`) or start their own. Every process a test
//! starts is stopped when its `LocalStack` is stopped or dropped, pass or fail; the
//! tests check the processes are gone.

use crate::common;
use common::{
    eventually, pause_ingest_consumers, process_is_gone, queue_depth,
    stop_and_check_processes_are_gone, stop_and_scan, take_providers, unique, watch,
    watch_signature,
};
use junction_cli::tokens::TokenSigner;

use std::{collections::BTreeSet, time::Duration};

use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName};
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use junction_catalog::Catalog;
use junction_cli::{
    queues::{RedriveMethod, StackQueues, list_dead_letters, redrive},
    samples::sample,
    webhook::{post, sign_webhook, signing_key, webhook_url},
};
use junction_webhooks::SigningSecret;
use local_stack::{emulator::repo_root, jwt_keys::generate_jwk_of_size, stack::LocalStackConfig};
use serde_json::Value;
use time::OffsetDateTime;

async fn json_body(response: reqwest::Response) -> Value {
    let bytes = response.bytes().await.expect("a body");
    serde_json::from_slice(&bytes).expect("a JSON body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_signed_by_the_cli_reach_the_ingest_queue() {
    let root = repo_root();
    let prefix = unique("e2e");
    let mut config = LocalStackConfig::new(root);
    config.stack_name = unique("ls-webhooks");
    config.prefix = Some(prefix.clone());
    // Payload logging on, as an operator debugging an integration would turn it on: the
    // log scan at the end proves it leaks nothing.
    config.parameters = vec![
        ("LogPayloads".into(), "true".into()),
        ("LogRedactFields".into(), "customer_name".into()),
    ];
    // As `junction-local up` runs it: Gmail's and Plaid's keys served locally.
    config.serve_jwt_keys = true;
    let stack = common::start(config).await;
    assert!(
        stack.wait_ready(Duration::from_secs(60)).await,
        "functions initialize"
    );
    // Pause the ingest consumer so the messages stay put.
    pause_ingest_consumers(&stack).await;

    // GIVEN the development secrets the stack seeded for every webhook provider (Gmail's
    // and Plaid's with development keys the stack's key server publishes)
    let catalog = Catalog::embedded().expect("catalog");
    let providers: Vec<_> = catalog
        .providers()
        .filter(|p| p.webhook.is_some())
        .collect();
    assert_eq!(
        stack
            .jwt_key_urls()
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["gmail", "plaid"]
    );
    assert!(providers.len() >= 40, "{} providers", providers.len());
    let seeded: BTreeSet<&str> = stack
        .seeded_secrets()
        .iter()
        .filter(|s| s.created.is_some())
        .map(|s| s.provider.as_str())
        .collect();
    assert_eq!(
        seeded,
        providers
            .iter()
            .map(|p| p.id.as_str())
            .collect::<BTreeSet<_>>()
    );
    let secrets = aws_sdk_secretsmanager::Client::new(stack.sdk_config());
    let document = secrets
        .get_secret_value()
        .secret_id(format!("{prefix}/webhooks/github"))
        .send()
        .await
        .expect("seeded secret")
        .secret_string
        .unwrap_or_default();
    let document: Value = serde_json::from_str(&document).expect("JSON secret");
    assert_eq!(document["development_only"], true);

    // WHEN the CLI's signing code sends each provider's sample over HTTP
    let http = reqwest::Client::new();
    let now = OffsetDateTime::now_utc();
    for provider in &providers {
        let key = signing_key(&secrets, &prefix, provider, None)
            .await
            .unwrap_or_else(|err| panic!("{}: {err}", provider.id));
        let url = webhook_url(stack.api_url(), &provider.id, None);
        let signed = sign_webhook(provider, &key, &url, &sample(&provider.id, now), now)
            .unwrap_or_else(|err| panic!("{}: {err}", provider.id));
        watch_signature(provider, &signed);
        let delivery = post(&http, &signed).await.expect("posted");
        assert!(
            (200..300).contains(&delivery.status),
            "{} answered {}: {}",
            provider.id,
            delivery.status,
            delivery.body
        );
    }
    // ... and forged ones: a GitHub signature with the wrong secret, and Gmail and Plaid
    // tokens signed by another key under the published key's `kid`
    let github = catalog.get("github").expect("github");
    let url = webhook_url(stack.api_url(), "github", None);
    let mut forged = vec![
        sign_webhook(
            github,
            &SigningSecret::new("not-the-secret"),
            &url,
            &sample("github", now),
            now,
        )
        .expect("signed"),
    ];
    for id in ["gmail", "plaid"] {
        let provider = catalog.get(id).expect(id);
        let key = signing_key(&secrets, &prefix, provider, None)
            .await
            .expect("the seeded key");
        let mut document: Value = serde_json::from_str(key.expose()).expect("a signer document");
        let genuine = TokenSigner::parse(key.expose()).expect("signer");
        document["key"] =
            generate_jwk_of_size(genuine.algorithm(), genuine.key_id(), 2048).expect("another key");
        let impostor = SigningSecret::new(document.to_string());
        let url = webhook_url(stack.api_url(), id, None);
        let minted =
            sign_webhook(provider, &impostor, &url, &sample(id, now), now).expect("minted");
        watch_signature(provider, &minted);
        forged.push(minted);
    }
    watch_signature(github, &forged[0]);
    for request in &forged {
        let answer = post(&http, request).await.expect("posted");
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (401, r#"{"error":"signature_mismatch"}"#),
            "{}",
            request.url
        );
    }
    let missing = http
        .get(format!("{}/no/such/route", stack.api_url()))
        .send()
        .await
        .expect("answered");
    assert_eq!(missing.status().as_u16(), 404);
    assert_eq!(
        json_body(missing).await,
        serde_json::json!({"message": "Not Found"})
    );

    // THEN exactly one message per verified webhook is on the ingest queue
    let ingest = stack.description().queues["IngestQueue"].url.clone();
    let expected = providers.len();
    let mut seen = take_providers(stack.sqs(), &ingest, expected, Duration::from_secs(60)).await;
    let complete = (seen.len() == expected).then_some(());
    assert!(complete.is_some(), "only {seen:?} arrived");
    seen.sort();
    let mut want: Vec<String> = providers.iter().map(|p| p.id.clone()).collect();
    want.sort();
    assert_eq!(
        seen, want,
        "one message per provider, none for the forged requests"
    );
    assert_eq!(
        queue_depth(stack.sqs(), &ingest).await,
        (0, 0),
        "nothing else was enqueued"
    );

    // AND the Runtime API emulator measured the function
    let summary = stack.summary();
    let ingress = summary
        .iter()
        .find(|s| s.function == "WebhookIngressFunction")
        .expect("ingress summary");
    assert_eq!(ingress.starts, 1, "one process served every request");
    assert_eq!(
        ingress.invocations,
        expected + forged.len(),
        "404s never reach the function"
    );
    assert!(ingress.first_init_ms.is_some() && ingress.peak_rss_kib.is_some());

    // AND payloads were logged only redacted: a verified delivery carrying a credential,
    // a configured field and an e-mail address shows none of them in the logs.
    let mut carrying = sample("github", now);
    let token = format!("ghp_{}", hex::encode(rand::random::<[u8; 16]>()));
    watch("a credential in a webhook payload", &token);
    carrying.body = serde_json::json!({
        "action": "opened",
        "api_token": token,
        "customer_name": "Ada Lovelace",
        "sender": {"login": "redaction-probe", "email": "ada@example.com"},
    })
    .to_string()
    .into_bytes();
    let key = signing_key(&secrets, &prefix, github, None)
        .await
        .expect("github key");
    let signed = sign_webhook(github, &key, &url, &carrying, now).expect("signed");
    watch_signature(github, &signed);
    assert_eq!(post(&http, &signed).await.expect("posted").status, 200);
    let ingress_logs = || stack.functions()["WebhookIngressFunction"].logs();
    let logged = eventually(Duration::from_secs(10), || async {
        ingress_logs()
            .into_iter()
            .find(|line| line.contains("redaction-probe"))
    })
    .await
    .expect("the payload was logged");
    assert!(logged.contains("webhook payload (redacted)"), "{logged}");
    for hidden in [token.as_str(), "Ada Lovelace", "ada@example.com"] {
        assert!(!logged.contains(hidden), "{hidden} in {logged}");
    }
    assert!(
        logged.contains("[redacted]") && logged.contains("[email]"),
        "{logged}"
    );
    let payload_lines = ingress_logs()
        .iter()
        .filter(|line| line.contains("webhook payload (redacted)"))
        .count();
    assert_eq!(
        payload_lines,
        expected + 1,
        "one per accepted delivery, none for the forged ones"
    );
    assert!(
        ingress_logs().iter().all(|line| !line.contains(&token)),
        "the token appears nowhere"
    );

    stop_and_check_processes_are_gone(stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_stack_serves_routes_schedules_and_dead_letters_that_redrive_brings_back() {
    let root = repo_root();
    let mut config = LocalStackConfig::new(root.clone());
    config.template = root.join("infra/local-stack/tests/fixtures/probe.yaml");
    config.stack_name = unique("ls-probe");
    config.prefix = None;
    config.seed_secrets = false;
    let stack = common::start(config).await;
    assert!(
        stack.wait_ready(Duration::from_secs(60)).await,
        "functions initialize"
    );
    let http = reqwest::Client::new();

    // HTTP API: path parameters, repeated query values, cookies, the response mapping
    let response = http
        .get(format!("{}/items/abc%20d?x=1&x=2", stack.api_url()))
        .header("cookie", "session=s1; theme=dark")
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["x-probe"], "yes");
    assert_eq!(response.headers()["set-cookie"], "probe=1; Path=/");
    let event = json_body(response).await;
    assert_eq!(event["routeKey"], "GET /items/{id}");
    assert_eq!(event["rawPath"], "/items/abc%20d");
    assert_eq!(event["pathParameters"]["id"], "abc d");
    assert_eq!(event["queryStringParameters"]["x"], "1,2");
    assert_eq!(
        event["cookies"],
        serde_json::json!(["session=s1", "theme=dark"])
    );
    assert_eq!(event["requestContext"]["http"]["method"], "GET");
    // Binary bodies arrive base64-encoded; greedy paths take the rest of the path.
    let response = http
        .post(format!("{}/echo/a/b", stack.api_url()))
        .header("content-type", "application/octet-stream")
        .body(vec![0u8, 1, 2, 255])
        .send()
        .await
        .expect("answered");
    let event = json_body(response).await;
    assert_eq!(event["pathParameters"]["proxy"], "a/b");
    assert_eq!(event["isBase64Encoded"], true);
    assert_eq!(event["body"], BASE64.encode([0u8, 1, 2, 255]));

    // Schedules fire on demand with the payload their kind delivers
    let work_queue_url = stack.description().queues["WorkQueue"].url.clone();
    let fired: Value = serde_json::from_slice(
        &stack
            .fire_schedule("ProbeFunctionHourly")
            .await
            .expect("rule fires"),
    )
    .expect("JSON");
    assert_eq!(fired["event"]["detail-type"], "Scheduled Event");
    assert_eq!(fired["event"]["source"], "aws.events");
    assert_eq!(
        fired["env"]["PROBE_WORK_QUEUE_URL"], work_queue_url,
        "the function's environment is the stack's"
    );
    let fired: Value = serde_json::from_slice(
        &stack
            .fire_schedule("ProbeFunctionNightly")
            .await
            .expect("schedule fires"),
    )
    .expect("JSON");
    assert_eq!(fired["event"], serde_json::json!({"job": "nightly"}));

    // SQS: a record the function reports as failed reaches the DLQ after
    // maxReceiveCount receives; the others are deleted
    let sqs = stack.sqs().clone();
    let dlq_url = stack.description().queues["WorkDeadLetterQueue"]
        .url
        .clone();
    let marker = MessageAttributeValue::builder()
        .data_type("String")
        .string_value("kept across redrive")
        .build()
        .expect("attribute");
    for body in ["ok-1", "please fail", "ok-2"] {
        sqs.send_message()
            .queue_url(&work_queue_url)
            .message_body(body)
            .message_attributes("marker", marker.clone())
            .send()
            .await
            .expect("sent");
    }
    let settled = eventually(Duration::from_secs(60), || {
        let (sqs, work, dlq) = (sqs.clone(), work_queue_url.clone(), dlq_url.clone());
        async move {
            let work = queue_depth(&sqs, &work).await;
            let dlq = queue_depth(&sqs, &dlq).await;
            (work == (0, 0) && dlq == (1, 0)).then_some(())
        }
    })
    .await;
    assert!(
        settled.is_some(),
        "the failing record is dead-lettered, the others deleted"
    );
    let queues = StackQueues::discover(&sqs, &stack.description().stack_name)
        .await
        .expect("queues");
    let dlq = queues
        .dead_letter_queue(None)
        .expect("the probe stack's one DLQ");
    let letters = list_dead_letters(&sqs, dlq, 10).await.expect("listed");
    assert_eq!(letters.len(), 1);
    assert!(letters[0].receive_count >= 2, "{:?}", letters[0]);

    // `dlq redrive` brings it back (the mapping is paused so the message stays put)
    stack
        .set_mapping_enabled("ProbeFunction", "WorkQueue", false)
        .await
        .expect("mapping paused");
    let report = redrive(&sqs, &queues, dlq, None, RedriveMethod::Copy)
        .await
        .expect("redriven");
    assert_eq!(report.moved, 1);
    assert_eq!(
        queue_depth(&sqs, &dlq_url).await,
        (0, 0),
        "nothing left behind"
    );
    let back = sqs
        .receive_message()
        .queue_url(&work_queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(2)
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .send()
        .await
        .expect("received")
        .messages
        .unwrap_or_default();
    assert_eq!(back.len(), 1, "exactly one copy came back");
    assert_eq!(back[0].body.as_deref(), Some("please fail"));
    assert_eq!(
        back[0]
            .message_attributes
            .as_ref()
            .and_then(|a| a.get("marker"))
            .and_then(|a| a.string_value.as_deref()),
        Some("kept across redrive")
    );

    let summary = stack.summary();
    let probe = summary
        .iter()
        .find(|s| s.function == "ProbeFunction")
        .expect("probe summary");
    assert!(probe.invocations >= 5, "{probe:?}");
    // Regression: the table said 0 errors after thousands of permanent failures. The
    // failing record was reported failed on each of its receives before the DLQ.
    assert!(probe.failed >= 2, "{probe:?}");
    let table = local_stack::runtime::summary_table(&summary);
    let row = table
        .lines()
        .find(|line| line.starts_with("ProbeFunction"))
        .expect("a row for the probe");
    assert!(
        row.split_whitespace().nth(5) == Some(probe.failed.to_string().as_str()),
        "{table}"
    );
    stop_and_check_processes_are_gone(stack).await;
}

/// The leak scan reads everything a function wrote, not only the ingress's newest lines:
/// the probe writes a secret stored in the emulator on stderr, its process is killed
/// (as a crashed consumer would be), and the next process writes a watched value on
/// stdout; the scan names both, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leak_scan_finds_what_any_process_of_a_function_wrote() {
    let root = repo_root();
    let mut config = LocalStackConfig::new(root.clone());
    config.template = root.join("infra/local-stack/tests/fixtures/probe.yaml");
    config.stack_name = unique("ls-leaks");
    config.prefix = None;
    config.seed_secrets = false;
    config.run_schedules = false;
    let stack = common::start(config).await;
    assert!(
        stack.wait_ready(Duration::from_secs(60)).await,
        "functions initialize"
    );
    let probe = &stack.functions()["ProbeFunction"];
    let sqs = stack.sqs().clone();
    let work_queue_url = stack.description().queues["WorkQueue"].url.clone();
    let write = |line: String| {
        let (sqs, url) = (sqs.clone(), work_queue_url.clone());
        async move {
            sqs.send_message()
                .queue_url(&url)
                .message_body(&line)
                .send()
                .await
                .expect("sent");
            let (_, text) = line.split_once(':').expect("stream:text");
            let written = eventually(Duration::from_secs(30), || async {
                probe
                    .logs()
                    .iter()
                    .any(|logged| logged == text)
                    .then_some(())
            })
            .await;
            assert!(written.is_some(), "the probe wrote {text:?}");
        }
    };

    // GIVEN a secret in the emulator's Secrets Manager and a watched value
    let secret_name = unique("leak-probe/credentials");
    let secret_value = format!("planted-secret-{}", hex::encode(rand::random::<[u8; 12]>()));
    aws_sdk_secretsmanager::Client::new(stack.sdk_config())
        .create_secret()
        .name(&secret_name)
        .secret_string(serde_json::json!({ "api_key": secret_value, "region": "eu" }).to_string())
        .send()
        .await
        .expect("secret stored");
    let watched = format!("planted+token/{}", hex::encode(rand::random::<[u8; 12]>()));
    stack
        .watch_for_leaks("a planted token", &watched)
        .expect("watched");

    // WHEN the first process writes the secret on stderr and is killed
    write(format!("stderr:the key is {secret_value}")).await;
    let first = probe.pid().expect("the probe runs");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success(), "kill -KILL {first}");
    let gone = eventually(Duration::from_secs(10), || async {
        (process_is_gone(first) && probe.pid().is_none()).then_some(())
    })
    .await;
    assert!(gone.is_some(), "the first process is gone");
    // ... and the next one writes the watched value, percent-encoded, on stdout
    let encoded: String = form_urlencoded::byte_serialize(watched.as_bytes()).collect();
    assert!(!encoded.contains(&watched));
    write(format!("stdout:GET /callback?token={encoded}")).await;
    assert_ne!(probe.pid(), Some(first), "a new process wrote it");

    // THEN the scan names both, by process and stream, and nothing else
    let report = stop_and_scan(stack).await;
    assert_eq!(
        report.leaks,
        [
            format!("ProbeFunction (process 1, stderr) wrote a value of secret {secret_name}"),
            "ProbeFunction (process 2, stdout) wrote a planted token (percent-encoded)".to_owned(),
        ],
        "{report}"
    );
    assert!(report.incomplete.is_empty(), "{report}");
}

/// Regression ("Nothing lost at the edges", point 2), end to end: one captured GitHub
/// delivery posted to any number of made-up endpoint names used to verify under each
/// and become as many CloudEvents. Now those names are 404, and the endpoints that are
/// configured (here each with a secret of its own, the same value) take it, but the
/// claim key is provider + account + event id: one CloudEvent on the bus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_delivery_posted_to_many_endpoint_names_is_one_event() {
    let prefix = unique("e2e");
    let mut config = LocalStackConfig::new(repo_root());
    config.stack_name = unique("ls-endpoints");
    config.prefix = Some(prefix.clone());
    let stack = common::start(config).await;
    assert!(
        stack.wait_ready(Duration::from_secs(60)).await,
        "functions initialize"
    );
    let observer = common::BusObserver::subscribe(&stack).await;

    // GIVEN two configured endpoints, whose own secrets hold the provider's
    let secrets = aws_sdk_secretsmanager::Client::new(stack.sdk_config());
    let catalog = Catalog::embedded().expect("catalog");
    let github = catalog.get("github").expect("github");
    let key = signing_key(&secrets, &prefix, github, None)
        .await
        .expect("the seeded key");
    for endpoint in ["team-a", "team-b"] {
        secrets
            .create_secret()
            .name(format!("{prefix}/webhooks/github/{endpoint}"))
            .secret_string(serde_json::json!({ "signing_secrets": [key.expose()] }).to_string())
            .send()
            .await
            .expect("endpoint secret created");
    }

    // WHEN one signed delivery is posted to them, to made-up names and to the
    // provider's own URL
    let now = OffsetDateTime::now_utc();
    let delivery = sample("github", now);
    let delivery_id = delivery
        .headers
        .iter()
        .find(|(name, _)| name == "X-GitHub-Delivery")
        .map(|(_, id)| id.clone())
        .expect("a delivery id");
    let signed = sign_webhook(
        github,
        &key,
        &webhook_url(stack.api_url(), "github", None),
        &delivery,
        now,
    )
    .expect("signed");
    common::watch_signature(github, &signed);
    let http = reqwest::Client::new();
    let post_to = |endpoint: Option<&str>| {
        let to = junction_cli::webhook::SignedWebhook {
            url: webhook_url(stack.api_url(), "github", endpoint),
            ..signed.clone()
        };
        let http = http.clone();
        async move { post(&http, &to).await.expect("posted") }
    };
    for endpoint in [Some("team-a"), Some("team-b"), None] {
        let answer = post_to(endpoint).await;
        assert_eq!(answer.status, 200, "{endpoint:?}: {}", answer.body);
    }
    for n in 0..5 {
        let answer = post_to(Some(&format!("fresh-{n}"))).await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (404, r#"{"error":"unknown_endpoint"}"#)
        );
    }

    // THEN the bus sees exactly one CloudEvent for it, once the pipeline is at rest
    let ingest = stack.description().queues["IngestQueue"].url.clone();
    let dlq = stack.description().queues["IngestDeadLetterQueue"]
        .url
        .clone();
    let mut events = Vec::new();
    let started = std::time::Instant::now();
    loop {
        observer.drain(&mut events).await;
        let at_rest = queue_depth(stack.sqs(), &ingest).await == (0, 0)
            && queue_depth(stack.sqs(), &dlq).await == (0, 0);
        if !events.is_empty() && at_rest {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "not at rest; published: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A late duplicate would be on the observer queue by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    observer.drain(&mut events).await;
    let ids: Vec<&str> = events
        .iter()
        .map(|event| event.providereventid.as_str())
        .collect();
    assert_eq!(
        ids,
        [delivery_id.as_str()],
        "one event for three deliveries"
    );

    stop_and_check_processes_are_gone(stack).await;
}

/// `--parameter PublicBaseUrl=https://hooks.example.com` (point 5): the functions keep
/// it as their `PUBLIC_BASE_URL`, so the ingress verifies URL-signing providers against
/// the registered URL, not the local API's Host header. A Twilio delivery signed over
/// the registered URL (as `send-webhook --public-url` signs it), and one signed over it
/// with the default port `:443` (point 4), are accepted; one signed over the local URL
/// it was posted to is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_base_url_parameter_is_the_url_twilio_deliveries_are_verified_against() {
    let prefix = unique("e2e");
    let mut config = LocalStackConfig::new(repo_root());
    config.stack_name = unique("ls-public-url");
    config.prefix = Some(prefix.clone());
    config.parameters = vec![("PublicBaseUrl".into(), "https://hooks.example.com".into())];
    let stack = common::start(config).await;
    assert!(
        stack.wait_ready(Duration::from_secs(60)).await,
        "functions initialize"
    );
    pause_ingest_consumers(&stack).await;

    let secrets = aws_sdk_secretsmanager::Client::new(stack.sdk_config());
    let twilio = Catalog::embedded()
        .expect("catalog")
        .get("twilio")
        .expect("twilio");
    let key = signing_key(&secrets, &prefix, twilio, None)
        .await
        .expect("the seeded key");
    let http = reqwest::Client::new();
    let posted = webhook_url(stack.api_url(), "twilio", None);
    assert!(posted.starts_with("http://127.0.0.1:"), "{posted}");
    let now = OffsetDateTime::now_utc();
    for public_base in ["https://hooks.example.com", "https://hooks.example.com:443"] {
        let signed = junction_cli::webhook::sign_webhook_for_public_url(
            twilio,
            &key,
            &posted,
            public_base,
            &sample("twilio", now),
            now,
        )
        .expect("signed");
        assert_eq!(signed.signed_url, format!("{public_base}/webhooks/twilio"));
        common::watch_signature(twilio, &signed);
        let answer = post(&http, &signed).await.expect("posted");
        assert_eq!(answer.status, 200, "{public_base}: {}", answer.body);
    }
    let local = sign_webhook(twilio, &key, &posted, &sample("twilio", now), now).expect("signed");
    common::watch_signature(twilio, &local);
    let answer = post(&http, &local).await.expect("posted");
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (401, r#"{"error":"signature_mismatch"}"#),
        "the parameter wins over the Host header"
    );

    let ingest = stack.description().queues["IngestQueue"].url.clone();
    let seen = take_providers(stack.sqs(), &ingest, 2, Duration::from_secs(60)).await;
    assert_eq!(seen, ["twilio", "twilio"]);
    assert_eq!(
        queue_depth(stack.sqs(), &ingest).await,
        (0, 0),
        "nothing else"
    );

    stop_and_check_processes_are_gone(stack).await;
}

/// A rule on an event bus invokes its function target as EventBridge does: events its
/// pattern matches arrive as EventBridge's envelope (moto matched them), one the
/// pattern does not match never arrives, and a failing invocation is tried three times
/// in all (Lambda's two retries of an asynchronous invocation) before it is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_rule_invokes_its_function_with_matching_events_and_retries_failures() {
    use local_stack::bus_rules::Delivery;

    let root = repo_root();
    let mut config = LocalStackConfig::new(root.clone());
    config.template = root.join("infra/local-stack/tests/fixtures/probe.yaml");
    config.stack_name = unique("ls-bus");
    config.prefix = None;
    config.seed_secrets = false;
    config.run_schedules = false;
    let stack = common::start(config).await;
    assert!(
        stack.wait_ready(Duration::from_secs(60)).await,
        "functions initialize"
    );
    let rules = stack.bus_rules();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        (rules[0].rule(), rules[0].function()),
        ("ProbeFunctionBus", "ProbeFunction")
    );
    let dispatch = rules[0].clone();

    let events = aws_sdk_eventbridge::Client::new(stack.sdk_config());
    let bus = format!("{}-bus", stack.description().stack_name);
    let entry = |source: &str, detail: Value| {
        aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .event_bus_name(&bus)
            .source(source)
            .detail_type("probe.asked")
            .detail(detail.to_string())
            .build()
    };
    let put = events
        .put_events()
        .entries(entry("probe", serde_json::json!({"n": 1})))
        .entries(entry("elsewhere", serde_json::json!({"n": 2})))
        .entries(entry("probe", serde_json::json!({"fail": true})))
        .send()
        .await
        .expect("events put");
    assert_eq!(put.failed_entry_count, 0);

    let deliveries = eventually(Duration::from_secs(30), || {
        let dispatch = &dispatch;
        async move {
            let deliveries = dispatch.deliveries();
            (deliveries.len() >= 2).then_some(deliveries)
        }
    })
    .await
    .unwrap_or_else(|| panic!("two deliveries: {:?}", dispatch.deliveries()));
    assert_eq!(deliveries[0], Delivery::Succeeded { attempt: 1 });
    assert!(
        matches!(&deliveries[1], Delivery::Dropped { attempts: 3, error } if error.contains("asked the probe to fail")),
        "{deliveries:?}"
    );
    // The non-matching event never came (nothing more within a while).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(dispatch.deliveries().len(), 2);

    let probe = stack
        .summary()
        .into_iter()
        .find(|s| s.function == "ProbeFunction")
        .expect("probe summary");
    assert_eq!((probe.invocations, probe.errors), (4, 3), "{probe:?}");
    stop_and_check_processes_are_gone(stack).await;
}
