//! Webhook benchmarks: signature verification for every scheme the catalog uses, on
//! 1 KiB and 64 KiB bodies, and the whole ingress path (catalog lookup, size check,
//! cached secrets, verification, event-id extraction, message build) with in-memory
//! ports.
//!
//! Verification runs on every delivery before anything else, so its cost per KiB bounds
//! ingress throughput (the issue's ballpark: HMAC ≤ 2 µs per KiB on one core). One
//! representative provider per scheme is enough: within a scheme, providers differ
//! only in how the signature header is spelled, which is noise next to hashing the body.
//!
//! `cargo bench -p shared --bench webhooks` prints the figures; `cargo test` runs each
//! once so the benchmarks keep working.

use std::{hint::black_box, sync::Arc};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue};
use junction_aws::clock::FixedClock;
use junction_aws::payloads::InMemoryPayloadStore;
use junction_aws::queue::{EventQueue, QueueError, QueueMessage};
use junction_aws::secrets::{CachePolicy, InMemorySecretSource, WebhookSecrets};
use junction_catalog::{Catalog, Scheme, SignedPart, Verification};
use junction_webhooks::{
    Ingress, IngressConfig, SignedRequest, SigningSecret, WebhookRequest, development_keys,
    sign_into, url_with_body_hash, verify,
};
use time::OffsetDateTime;

const NOW: i64 = 1_700_000_000;
const SEED: [u8; 32] = [5; 32];

/// Body sizes the verification group runs at.
const SIZES: [(usize, &str); 2] = [(1024, "1KiB"), (64 * 1024, "64KiB")];

/// One provider per scheme the catalog uses: (benchmark name, provider, scheme).
///
/// Not here: `jwt` (Gmail's RS256 Pub/Sub push, Plaid's ES256): the tokens are minted
/// by the CLI's `tokens` module, so that benchmark is `junction-cli`'s
/// (`infra/cli/benches/jwt.rs`). `hmac-sha512` has no built-in provider; it is
/// benchmarked through an overlay entry ([`IN_HOUSE_SHA512`]), as an operator would
/// configure one.
const REPRESENTATIVES: [(&str, &str, Scheme); 6] = [
    ("hmac_sha256_verify", "github", Scheme::HmacSha256),
    ("hmac_sha1_verify", "intercom", Scheme::HmacSha1),
    ("sha256_verify", "hubspot-v1", Scheme::Sha256),
    ("ed25519_verify", "discord", Scheme::Ed25519),
    ("ecdsa_p256_verify", "sendgrid", Scheme::EcdsaP256),
    ("token_verify", "gitlab", Scheme::Token),
];

/// An in-house sender signing with HMAC-SHA512 (the scheme exists for overlay entries).
const IN_HOUSE_SHA512: &str = r#"
id = "in-house"
name = "In-house sender"
docs = "https://wiki.example.com/webhooks"

[webhook.verification]
scheme = "hmac-sha512"
signature = { format = "single", header = "X-Signature", prefix = "sha512=", encoding = "hex" }
signed = ["body"]
replay_window = "none"
"#;

/// A JSON body of exactly `len` bytes (with Linear's signed timestamp), padded with a
/// string field.
fn body(len: usize) -> Vec<u8> {
    let head = format!(
        r#"{{"id":"evt_bench","type":"bench.created","webhookTimestamp":{},"pad":""#,
        NOW * 1000
    );
    let mut body = head.into_bytes();
    assert!(body.len() + 2 <= len, "body too small for its head");
    body.resize(len - 2, b'x');
    body.extend_from_slice(b"\"}");
    body
}

/// (what to sign with, what to configure) for `spec`, made like the CLI makes them.
fn secrets(spec: &Verification) -> (SigningSecret, SigningSecret) {
    let (signing, configured) = development_keys(spec, &SEED).expect("valid key");
    (SigningSecret::new(signing), SigningSecret::new(configured))
}

fn spec<'c>(catalog: &'c Catalog, provider: &str) -> &'c Verification {
    catalog
        .get(provider)
        .and_then(|p| p.verification())
        .expect("spec")
}

/// Headers and URL of a request for `provider` signed with the library's signer.
fn signed(spec: &Verification, provider: &str, body: &[u8]) -> (HeaderMap, String) {
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
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let url = url_with_body_hash(
        spec,
        &format!("https://hooks.example.com/webhooks/{provider}"),
        &headers,
        body,
    );
    let now = OffsetDateTime::from_unix_timestamp(NOW).expect("time");
    let replaced = sign_into(
        spec,
        &secrets(spec).0,
        "POST",
        &url,
        &mut headers,
        body,
        now,
    )
    .expect("sign");
    assert!(
        replaced.is_none(),
        "{provider}: signature must be in a header"
    );
    (headers, url)
}

fn verification(c: &mut Criterion) {
    let catalog = Catalog::embedded().expect("catalog");
    let in_house = Catalog::from_files(&[("in-house.toml", IN_HOUSE_SHA512)]).expect("overlay");
    let mut cases: Vec<(&str, &str, &Verification)> = REPRESENTATIVES
        .iter()
        .map(|(name, provider, scheme)| {
            let spec = spec(catalog, provider);
            assert_eq!(spec.scheme, *scheme, "{provider} changed scheme");
            (*name, *provider, spec)
        })
        .collect();
    cases.push((
        "hmac_sha512_verify",
        "in-house",
        spec(&in_house, "in-house"),
    ));

    let now = OffsetDateTime::from_unix_timestamp(NOW).expect("time");
    let mut group = c.benchmark_group("verify");
    for (name, provider, spec) in cases {
        let configured = [secrets(spec).1];
        for (len, label) in SIZES {
            let body = body(len);
            let (headers, url) = signed(spec, provider, &body);
            let request = SignedRequest {
                method: "POST",
                url: &url,
                headers: &headers,
                body: &body,
            };
            verify(spec, &configured, &request, now).expect("the benchmark request verifies");
            group.throughput(Throughput::Bytes(len as u64));
            group.bench_with_input(BenchmarkId::new(name, label), &request, |b, request| {
                b.iter(|| verify(spec, black_box(&configured), black_box(request), now))
            });
        }
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
    let catalog = Catalog::embedded().expect("catalog");
    for provider in ["github", "stripe"] {
        source.put(
            format!("junction/webhooks/{provider}"),
            serde_json::json!({ "signing_secrets": [secrets(spec(catalog, provider)).1.expose()] })
                .to_string(),
        );
    }
    let ingress = Ingress::new(
        catalog,
        WebhookSecrets::new(source, "junction", CachePolicy::default()),
        Arc::new(DiscardingQueue),
        Arc::new(InMemoryPayloadStore::default()),
        Arc::new(FixedClock::at_unix(NOW)),
        IngressConfig::default(),
    );
    let mut group = c.benchmark_group("ingress_handle_2KiB");
    group.throughput(Throughput::Elements(1));
    for provider in ["github", "stripe"] {
        let body = body(2048);
        let (headers, _) = signed(spec(catalog, provider), provider, &body);
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
