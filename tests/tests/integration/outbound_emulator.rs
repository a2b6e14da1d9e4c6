//! The outbound client's shared state in DynamoDB (the emulator's): several "instances"
//! (separate clients over one table) taking tokens and tripping the breaker at once
//! lose no update, and exactly one of them probes a half-open provider.

use std::{sync::Arc, time::Duration};

use junction_aws::clock::FixedClock;
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
    let limit = Limit {
        rate: 2.0,
        burst: 2,
    };
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let limiter = RateLimiter::new(instance(&aws), clock.clone());
        tasks.push(tokio::spawn(async move {
            let mut waits = Vec::new();
            for _ in 0..5 {
                waits.push(
                    limiter
                        .acquire("bucket#hubspot", limit)
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
