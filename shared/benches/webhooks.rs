//! Webhook benchmarks: signature verification per provider scheme on a 2 KiB body, and
//! the whole ingress path (catalog lookup, size check, cached secrets, verification,
//! event-id extraction, message build) with in-memory ports.
//!
//! `cargo bench -p shared --bench webhooks` prints the figures; `cargo test` runs each
//! once so the benchmarks keep working.

use std::{hint::black_box, sync::Arc};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue};
use shared::{
    catalog::{Catalog, Scheme, SignedPart, Verification},
    clock::FixedClock,
    payloads::InMemoryPayloadStore,
    queue::{EventQueue, QueueError, QueueMessage},
    secrets::{CachePolicy, InMemorySecretSource, WebhookSecrets},
    webhooks::{
        Ingress, IngressConfig, SignedRequest, SigningSecret, WebhookRequest, development_keys,
        sign_into, url_with_body_hash, verify,
    },
};
use time::OffsetDateTime;

const NOW: i64 = 1_700_000_000;
const SEED: [u8; 32] = [5; 32];

/// A 2 KiB JSON body (with Linear's signed timestamp where it needs one).
fn body(provider: &str) -> Vec<u8> {
    let head = format!(
        r#"{{"id":"evt_bench","type":"bench.created","webhookTimestamp":{},"pad":""#,
        NOW * 1000
    );
    let mut body = head.into_bytes();
    body.resize(2048 - 2, b'x');
    body.extend_from_slice(b"\"}");
    if provider == "twilio" {
        body = body
            .iter()
            .map(|b| if *b == b'"' { b'x' } else { *b })
            .collect();
        body[..2].copy_from_slice(b"A=");
    }
    body
}

/// (what to sign with, what to configure) for `provider`, from the catalog entry.
fn secrets(provider: &str) -> (SigningSecret, SigningSecret) {
    let (signing, configured) = development_keys(spec(provider), &SEED).expect("valid key");
    (SigningSecret::new(signing), SigningSecret::new(configured))
}

fn spec(provider: &str) -> &'static Verification {
    Catalog::embedded()
        .expect("catalog")
        .get(provider)
        .and_then(|p| p.webhook.as_ref())
        .and_then(|w| w.verification.as_ref())
        .expect("spec")
}

/// The providers benchmarked: every one whose signature is in a header (in-body
/// signatures need the provider's own body shape, not a padded 2 KiB blob).
fn benchmarked(catalog: &'static Catalog) -> impl Iterator<Item = &'static str> {
    catalog
        .providers()
        .filter(|p| {
            p.webhook
                .as_ref()
                .and_then(|w| w.verification.as_ref())
                .is_some_and(|v| v.signature.header().is_some() && v.scheme != Scheme::Jwt)
        })
        .map(|p| p.id.as_str())
}

/// Headers and URL of a signed request for `provider`.
fn signed(provider: &str, body: &[u8]) -> (HeaderMap, String) {
    let spec = spec(provider);
    let mut headers = HeaderMap::new();
    // Every header the provider signs besides its signature and timestamp.
    for part in &spec.signed {
        if let SignedPart::Header(names) = part {
            headers.insert(
                HeaderName::try_from(names.names()[0].as_str()).expect("header name"),
                HeaderValue::from_static("1700000000"),
            );
        }
    }
    headers.insert("webhook-id", HeaderValue::from_static("msg_bench"));
    headers.insert(
        "x-signature-timestamp",
        HeaderValue::from_static("1700000000"),
    );
    headers.insert(
        "x-github-delivery",
        HeaderValue::from_static("delivery-bench"),
    );
    let content_type = if provider == "twilio" {
        "application/x-www-form-urlencoded"
    } else {
        "application/json"
    };
    headers.insert("content-type", HeaderValue::from_static(content_type));
    let url = url_with_body_hash(
        spec,
        &format!("https://hooks.example.com/webhooks/{provider}"),
        &headers,
        body,
    );
    let now = OffsetDateTime::from_unix_timestamp(NOW).expect("time");
    sign_into(
        spec,
        &secrets(provider).0,
        "POST",
        &url,
        &mut headers,
        body,
        now,
    )
    .expect("sign");
    (headers, url)
}

fn verification(c: &mut Criterion) {
    let catalog = Catalog::embedded().expect("catalog");
    let now = OffsetDateTime::from_unix_timestamp(NOW).expect("time");
    let mut group = c.benchmark_group("verify_2KiB");
    group.throughput(Throughput::Bytes(2048));
    for provider in benchmarked(catalog) {
        let spec = spec(provider);
        let body = body(provider);
        let (headers, url) = signed(provider, &body);
        let configured = [secrets(provider).1];
        let request = SignedRequest {
            method: "POST",
            url: &url,
            headers: &headers,
            body: &body,
        };
        verify(spec, &configured, &request, now).expect("the benchmark request verifies");
        group.bench_with_input(
            BenchmarkId::from_parameter(provider),
            &request,
            |b, request| b.iter(|| verify(spec, black_box(&configured), black_box(request), now)),
        );
    }
    group.finish();
}

/// Accepts and drops messages: the in-memory queue would grow by one per iteration.
#[derive(Debug)]
struct DiscardingQueue;

#[async_trait::async_trait]
impl EventQueue for DiscardingQueue {
    async fn send_delayed(
        &self,
        message: QueueMessage,
        _delay: std::time::Duration,
    ) -> Result<(), QueueError> {
        black_box(message);
        Ok(())
    }
}

fn ingress_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let source = Arc::new(InMemorySecretSource::default());
    for provider in ["github", "stripe"] {
        source.put(
            format!("junction/webhooks/{provider}"),
            serde_json::json!({ "signing_secrets": [secrets(provider).1.expose()] }).to_string(),
        );
    }
    let ingress = Ingress::new(
        Catalog::embedded().expect("catalog"),
        WebhookSecrets::new(source, "junction", CachePolicy::default()),
        Arc::new(DiscardingQueue),
        Arc::new(InMemoryPayloadStore::default()),
        Arc::new(FixedClock::at_unix(NOW)),
        IngressConfig::default(),
    );
    let mut group = c.benchmark_group("ingress_handle_2KiB");
    group.throughput(Throughput::Elements(1));
    for provider in ["github", "stripe"] {
        let body = body(provider);
        let (headers, _) = signed(provider, &body);
        let request = WebhookRequest {
            method: "POST".into(),
            provider: provider.into(),
            endpoint: None,
            path: format!("/webhooks/{provider}"),
            raw_query: String::new(),
            headers,
            body,
        };
        let (response, _) = runtime.block_on(ingress.handle(request.clone()));
        assert_eq!(response.status, 200, "the benchmark request is accepted");
        group.bench_function(provider, |b| {
            b.to_async(&runtime)
                .iter(|| ingress.handle(black_box(request.clone())))
        });
    }
    group.finish();
}

criterion_group!(benches, verification, ingress_path);
criterion_main!(benches);
