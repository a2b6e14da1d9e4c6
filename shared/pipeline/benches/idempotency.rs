//! Idempotency state machine benchmarks: `Idempotency<InMemoryIdempotencyStore>` through
//! each path the consumer takes per message.
//!
//! Every message is claimed before any side effect and completed (or released) after,
//! so these transitions are a fixed cost on every delivery. The in-memory store has the
//! DynamoDB store's conditions without the network, so the figures are the algorithm's
//! own overhead (token generation, key and record copies, the store's lock), the floor
//! under the real store's round trips.
//!
//! - `claim_complete_new`: claim a key never seen, then complete it (the normal path).
//! - `claim_duplicate_completed`: claim a key already completed (a provider retry).
//! - `claim_in_progress_elsewhere`: claim a key another worker holds a live lease on.
//! - `claim_release_claim`: claim, release after a failure, claim again at once.
//!
//! The paths that write start from an empty store each time (criterion's batched
//! setup, not timed), so the map does not grow over the run.
//!
//! - `dynamo_claim_cpu/batch_of_10`: the DynamoDB adapter claiming a batch of 10 new
//!   keys against a stub endpoint on loopback (another thread answers every call with
//!   `{}`), measured in the calling thread's CPU time (`/proc/thread-self/schedstat`),
//!   not wall time: what the consumer's Lambda pays in CPU for its batch claim (SDK
//!   request building, signing, serialization, HTTP), without the stub's own work or
//!   the wait for the answers. The cost model in BENCHMARKS.md adds it to the
//!   consumer's measured CPU.
//!
//! `cargo bench -p shared --bench idempotency`.

use std::{hint::black_box, time::Duration};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use junction_pipeline::idempotency::{
    Claim, ClaimOutcome, DynamoIdempotencyStore, Idempotency, IdempotencyKey, IdempotencyPolicy,
    InMemoryIdempotencyStore,
};
use time::OffsetDateTime;

type Machine = Idempotency<InMemoryIdempotencyStore>;

const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn at(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_700_000_000 + seconds).expect("time")
}

fn machine() -> Machine {
    Idempotency::new(
        InMemoryIdempotencyStore::default(),
        IdempotencyPolicy::default(),
    )
}

fn key() -> IdempotencyKey {
    IdempotencyKey::new("stripe", Some("conn-1"), "evt_1NG8Du2eZvKYlo2CUI79vXWy")
}

/// Claims `key`, panicking unless this worker gets it.
async fn claimed(machine: &Machine, key: &IdempotencyKey, now: OffsetDateTime) -> Claim {
    match machine
        .claim(key, HASH, now)
        .await
        .expect("in-memory store")
    {
        ClaimOutcome::Claimed(claim) => claim,
        other => panic!("expected a claim, got {other:?}"),
    }
}

fn state_machine(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let key = key();
    let mut group = c.benchmark_group("idempotency");
    group.throughput(Throughput::Elements(1));

    group.bench_function("claim_complete_new", |b| {
        b.to_async(&runtime).iter_batched(
            || (machine(), key.clone()),
            |(machine, key)| async move {
                let claim = claimed(&machine, &key, at(0)).await;
                let completed = machine.complete(&claim, at(1)).await.expect("store");
                assert!(completed, "the claim is still ours");
                machine
            },
            BatchSize::SmallInput,
        )
    });

    let completed = machine();
    runtime.block_on(async {
        let claim = claimed(&completed, &key, at(0)).await;
        assert!(completed.complete(&claim, at(1)).await.expect("store"));
        assert_eq!(
            completed.claim(&key, HASH, at(2)).await.expect("store"),
            ClaimOutcome::AlreadyCompleted { same_payload: true }
        );
    });
    group.bench_function("claim_duplicate_completed", |b| {
        b.to_async(&runtime)
            .iter(|| completed.claim(black_box(&key), black_box(HASH), at(2)))
    });

    let leased = machine();
    runtime.block_on(async {
        claimed(&leased, &key, at(0)).await;
        assert!(matches!(
            leased.claim(&key, HASH, at(10)).await.expect("store"),
            ClaimOutcome::InProgressElsewhere { .. }
        ));
    });
    group.bench_function("claim_in_progress_elsewhere", |b| {
        b.to_async(&runtime)
            .iter(|| leased.claim(black_box(&key), black_box(HASH), at(10)))
    });

    group.bench_function("claim_release_claim", |b| {
        b.to_async(&runtime).iter_batched(
            || (machine(), key.clone()),
            |(machine, key)| async move {
                let claim = claimed(&machine, &key, at(0)).await;
                machine.release(&claim).await.expect("store");
                claimed(&machine, &key, at(1)).await;
                machine
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

/// A loopback endpoint answering every request `200 {}` (a successful `PutItem`,
/// `TransactWriteItems` or `BatchWriteItem` with nothing returned), on a thread of its
/// own so its work is not counted in the caller's CPU time.
fn stub_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let address = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("stub runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let app = axum::Router::new().fallback(|| async {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/x-amz-json-1.0",
                    )],
                    "{}",
                )
            });
            axum::serve(listener, app).await.expect("stub serves");
        });
    });
    format!("http://{address}")
}

/// This thread's time on CPU so far (`/proc/thread-self/schedstat`, first field, ns).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    let nanos = stat
        .split_whitespace()
        .next()
        .and_then(|field| field.parse::<u64>().ok())
        .expect("on-CPU nanoseconds");
    Duration::from_nanos(nanos)
}

fn dynamo_claim_cpu(c: &mut Criterion) {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDBENCH", "bench", None, None, "bench"))
        .endpoint_url(stub_endpoint())
        .build();
    let machine = Idempotency::new(
        DynamoIdempotencyStore::new(aws_sdk_dynamodb::Client::from_conf(config), "idempotency"),
        IdempotencyPolicy::default(),
    );
    let mut round = 0u64;
    let mut batch = move || {
        round += 1;
        (0..10)
            .map(|n| {
                let key = IdempotencyKey::new("github", None, &format!("delivery-{round}-{n}"));
                (key, HASH.to_owned())
            })
            .collect::<Vec<_>>()
    };
    // Connections opened and credentials resolved before the measurement.
    runtime.block_on(async {
        let outcomes = machine.claim_all(&batch(), at(0)).await;
        assert!(
            outcomes
                .iter()
                .all(|outcome| matches!(outcome, Ok(ClaimOutcome::Claimed(_)))),
            "the stub answers: {outcomes:?}"
        );
    });
    let mut group = c.benchmark_group("dynamo_claim_cpu");
    group.throughput(Throughput::Elements(10));
    group.bench_function("batch_of_10", |b| {
        b.iter_custom(|iterations| {
            let batches: Vec<_> = (0..iterations).map(|_| batch()).collect();
            let started = thread_cpu();
            runtime.block_on(async {
                for batch in &batches {
                    black_box(machine.claim_all(batch, at(0)).await);
                }
            });
            thread_cpu() - started
        })
    });
    group.finish();
}

criterion_group!(benches, state_machine, dynamo_claim_cpu);
criterion_main!(benches);
