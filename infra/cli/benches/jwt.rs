//! The JWT webhook schemes, as `shared/benches/webhooks.rs` measures the signature
//! schemes: Gmail's Pub/Sub push (an RS256 token, 2048-bit key as Google's) and Plaid
//! (an ES256 token over the body's SHA-256), verified against the published key set
//! (already cached: the ingress fetches it once) on 1 KiB and 64 KiB bodies.
//!
//! Here rather than in `shared` because minting the tokens is the CLI's
//! (`junction send-webhook gmail|plaid`, [`junction_cli::tokens`]).
//!
//! `cargo bench -p junction-cli --bench jwt` prints the figures; `cargo test` runs each
//! once so the benchmark keeps working.

use std::{collections::BTreeMap, hint::black_box};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use junction_catalog::{Catalog, JwtRule};
use junction_cli::tokens::{
    TokenSigner,
    test_keys::{es256_keys, rs256_keys},
};
use junction_webhooks::jwt::{JwkSet, verify_jwt};
use time::OffsetDateTime;

const SIZES: [(usize, &str); 2] = [(1024, "1KiB"), (64 * 1024, "64KiB")];

fn rule<'c>(catalog: &'c Catalog, provider: &str) -> &'c JwtRule {
    catalog
        .get(provider)
        .and_then(|p| p.verification())
        .and_then(|v| v.jwt.as_ref())
        .expect("a jwt rule")
}

fn jwt(c: &mut Criterion) {
    let catalog = Catalog::embedded().expect("catalog");
    let now = OffsetDateTime::now_utc();
    let gmail_claims: BTreeMap<String, String> = [
        ("aud", "junction-bench-gmail"),
        ("email", "gmail-push@junction-bench.iam.gserviceaccount.com"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let cases = [
        (
            "rs256_verify",
            "gmail",
            rs256_keys("bench-rsa"),
            gmail_claims,
        ),
        (
            "es256_verify",
            "plaid",
            es256_keys("bench-ec"),
            BTreeMap::new(),
        ),
    ];
    let mut group = c.benchmark_group("verify");
    for (name, provider, (private, public), configured) in cases {
        let rule = rule(catalog, provider);
        let signer = TokenSigner::parse(
            &TokenSigner::document(&private, &configured).expect("signing document"),
        )
        .expect("signer");
        let keys = JwkSet { keys: vec![public] };
        for (len, label) in SIZES {
            let body = vec![b'x'; len];
            let token = signer.mint(rule, &body, now).expect("minted");
            assert_eq!(
                verify_jwt(rule, &token, &body, &keys, &configured, now),
                Ok(()),
                "{provider}: the minted token verifies"
            );
            group.throughput(Throughput::Bytes(len as u64));
            group.bench_with_input(BenchmarkId::new(name, label), &body, |b, body| {
                b.iter(|| {
                    verify_jwt(rule, black_box(&token), body, &keys, &configured, now)
                        .expect("verifies")
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, jwt);
criterion_main!(benches);
