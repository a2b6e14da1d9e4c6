//! The outbound client's shared state in DynamoDB (the emulator's): several "instances"
//! (separate clients over one table) taking tokens and tripping the breaker at once
//! lose no update, exactly one of them probes a half-open provider, a window's budget
//! is shared without being exceeded, and a rate learned from 429s outlives the instance
//! that learned it (and the table's one-day TTL) without snapping back.

use std::{sync::Arc, time::Duration};

use junction_aws::clock::FixedClock;
use junction_outbound::limiter::{Acquired, Window};
use junction_outbound::{
    Admission, CircuitBreaker, DynamoSharedState, Limit, RateLimiter, SharedState,
};
use junction_tests::{create_table, emulator};

const TABLE: &str = "outbound-state";

fn instance(aws: &aws_config::SdkConfig) -> Arc<dyn SharedState> {
    Arc::new(DynamoSharedState::from_config(aws, TABLE))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_instances_share_one_bucket_without_losing_tokens() {
    let (_moto, aws) = emulator().await;
    create_table(&aws, TABLE, "key").await;
    let clock = Arc::new(FixedClock::at_unix(1_700_000_000));
    let limit = Limit::rate(2.0, 2);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let limiter = RateLimiter::new(instance(&aws), clock.clone());
        let limit = limit.clone();
        tasks.push(tokio::spawn(async move {
            let mut waits = Vec::new();
            for _ in 0..5 {
                waits.push(
                    limiter
                        .acquire("bucket#hubspot", &limit)
                        .await
                        .expect("acquired"),
                );
            }
            waits
        }));
    }
    let mut waits: Vec<u128> = Vec::new();
    for task in tasks {
        waits.extend(task.await.expect("task").iter().map(Duration::as_millis));
    }
    waits.sort_unstable();
    let expected: Vec<u128> = [0, 0]
        .into_iter()
        .chain((1..=18).map(|n| n * 500))
        .collect();
    assert_eq!(
        waits, expected,
        "20 callers, one slot each: none lost, none shared"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_is_shared_and_half_open_lets_one_probe_through() {
    let (_moto, aws) = emulator().await;
    create_table(&aws, TABLE, "key").await;
    let clock = Arc::new(FixedClock::at_unix(1_700_000_000));
    let breakers: Vec<CircuitBreaker> = (0..5)
        .map(|_| CircuitBreaker::new(instance(&aws), clock.clone()))
        .collect();
    let mut tasks = Vec::new();
    for breaker in &breakers {
        let breaker = breaker.clone();
        tasks.push(tokio::spawn(async move {
            breaker.failed("breaker#linear").await.expect("recorded")
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    assert!(
        matches!(
            breakers[0].admit("breaker#linear").await.expect("admit"),
            Admission::Open { .. }
        ),
        "5 failures from 5 instances open it"
    );
    clock.advance(time::Duration::seconds(60));
    let mut tasks = Vec::new();
    for breaker in &breakers {
        let breaker = breaker.clone();
        tasks.push(tokio::spawn(async move {
            breaker.admit("breaker#linear").await.expect("admit")
        }));
    }
    let mut probes = 0;
    for task in tasks {
        match task.await.expect("task") {
            Admission::Probe => probes += 1,
            Admission::Open { .. } => {}
            Admission::Closed => panic!("closed before the probe succeeded"),
        }
    }
    assert_eq!(probes, 1, "exactly one probe across instances");
    breakers[3]
        .succeeded("breaker#linear")
        .await
        .expect("recorded");
    assert_eq!(
        breakers[1].admit("breaker#linear").await.expect("admit"),
        Admission::Closed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_budget_is_shared_by_instances_and_refusals_book_nothing() {
    let (_moto, aws) = emulator().await;
    create_table(&aws, TABLE, "key").await;
    let clock = Arc::new(FixedClock::at_unix(1_700_000_000));
    // Exact Online's shape: a pace, 60 a minute and 5,000 a day (here 8 a minute).
    let limit = Limit {
        rate: 100.0,
        burst: 100,
        windows: vec![
            Window {
                requests: 8,
                seconds: 60,
            },
            Window {
                requests: 5_000,
                seconds: 86_400,
            },
        ],
    };
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let limiter = RateLimiter::new(instance(&aws), clock.clone());
        let limit = limit.clone();
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..4 {
                answers.push(
                    limiter
                        .acquire_within(
                            &[("bucket#exact-online#c1", &limit)],
                            Duration::from_secs(5),
                        )
                        .await
                        .expect("answered"),
                );
            }
            answers
        }));
    }
    let mut granted = 0;
    let mut refused = 0;
    for task in tasks {
        for answer in task.await.expect("task") {
            match answer {
                Acquired::Wait(wait) => {
                    assert_eq!(wait, Duration::ZERO);
                    granted += 1;
                }
                Acquired::Refused { retry_in } => {
                    assert!(retry_in >= Duration::from_secs(60), "{retry_in:?}");
                    refused += 1;
                }
            }
        }
    }
    assert_eq!(
        (granted, refused),
        (8, 8),
        "the minute's 8, no more, none lost"
    );
    clock.advance(time::Duration::seconds(64));
    let limiter = RateLimiter::new(instance(&aws), clock.clone());
    assert_eq!(
        limiter
            .acquire_within(
                &[("bucket#exact-online#c1", &limit)],
                Duration::from_secs(5)
            )
            .await
            .expect("answered"),
        Acquired::Wait(Duration::ZERO),
        "the refusals booked nothing: the next minute has room"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learned_ceiling_persists_across_instances_and_decays_without_snapping_back() {
    let (_moto, aws) = emulator().await;
    create_table(&aws, TABLE, "key").await;
    let clock = Arc::new(FixedClock::at_unix(1_700_000_000));
    let key = "bucket#fakeauth#c1";
    // The catalog says 10/s; the provider takes 2/s without saying so.
    let limit = Limit::rate(10.0, 10);
    let learner = RateLimiter::new(instance(&aws), clock.clone());
    let mut rates = Vec::new();
    for _ in 0..3 {
        clock.advance(time::Duration::seconds(1));
        let before = learner.effective_rate(key, &limit).await.expect("rate");
        let lowered = learner
            .throttled(key, &limit, None)
            .await
            .expect("throttled");
        assert!(
            (lowered - before / 2.0).abs() < 1e-6,
            "{before} -> {lowered}"
        );
        rates.push(lowered);
    }
    let failed = 2.0 * rates[2];
    assert!((2.5..2.7).contains(&failed), "{rates:?}");
    drop(learner);

    // Another instance, another client, ten minutes later (the old code was back at
    // the catalog's rate by then): still under the rate that drew the last 429.
    clock.advance(time::Duration::minutes(10));
    let other = RateLimiter::new(instance(&aws), clock.clone());
    let rate = other.effective_rate(key, &limit).await.expect("rate");
    assert!(
        rate > 0.9 * failed && rate < failed,
        "90% of the rate that drew the last 429, a little more trusted: {failed} -> {rate}"
    );
    let expires_at: i64 = aws_sdk_dynamodb::Client::new(&aws)
        .get_item()
        .table_name(TABLE)
        .key(
            "key",
            aws_sdk_dynamodb::types::AttributeValue::S(key.to_owned()),
        )
        .send()
        .await
        .expect("read")
        .item
        .and_then(|item| item.get("expires_at")?.as_n().ok()?.parse().ok())
        .expect("expires_at");
    assert!(
        expires_at > 1_700_000_000 + 86_400,
        "kept until the ceiling has grown back, not one day: {expires_at}"
    );

    // Hours later it has risen gradually, not jumped.
    let mut previous = rate;
    for hour in 1..=20 {
        clock.advance(time::Duration::hours(1));
        let now = other.effective_rate(key, &limit).await.expect("rate");
        assert!(now >= previous, "hour {hour}: {previous} -> {now}");
        assert!(
            now <= previous * 1.11 || now == 10.0,
            "hour {hour}: at most 10% more: {previous} -> {now}"
        );
        previous = now;
    }
    assert_eq!(
        previous, 10.0,
        "back at the catalog's rate after about 17 quiet hours"
    );
}
