//! The proxy's idempotency record in DynamoDB (the emulator's) keeps the contract the
//! in-memory store keeps: a key runs once, its answer (body included, binary) replays
//! for a day, another request under it is a mismatch, a repeat while it runs is in
//! flight, a freed or abandoned key runs again; and of concurrent claims of one key,
//! exactly one starts.

use junction_outbound::idempotency::{
    Begin, DynamoProxyIdempotencyStore, IDEMPOTENCY_TTL_SECONDS, IN_FLIGHT_LEASE_SECONDS,
    InMemoryProxyIdempotencyStore, KeptAnswer, ProxyIdempotencyStore,
};
use junction_tests::{create_table, emulator};

const TABLE: &str = "proxy-idempotency";

fn answer() -> KeptAnswer {
    KeptAnswer {
        status: 201,
        headers: vec![
            ("content-type".into(), "application/octet-stream".into()),
            ("etag".into(), "\"v1\"".into()),
        ],
        body: Some(vec![0, 159, 146, 150, b'{']),
    }
}

/// The contract, for any store.
async fn contract(store: &dyn ProxyIdempotencyStore) {
    let now = 1_800_000_000;
    assert_eq!(store.begin("c#k", "h1", now).await, Ok(Begin::Started));
    assert_eq!(store.begin("c#k", "h1", now + 1).await, Ok(Begin::InFlight));
    assert_eq!(store.begin("c#k", "h2", now + 1).await, Ok(Begin::Mismatch));
    store
        .complete("c#k", "h1", &answer(), now + 2)
        .await
        .expect("kept");
    assert_eq!(
        store.begin("c#k", "h1", now + 3).await,
        Ok(Begin::Replay(answer()))
    );
    assert_eq!(store.begin("c#k", "h2", now + 3).await, Ok(Begin::Mismatch));
    store
        .release("c#k", "h1")
        .await
        .expect("an answered key stays");
    assert_eq!(
        store.begin("c#k", "h1", now + 4).await,
        Ok(Begin::Replay(answer()))
    );
    let later = now + 2 + IDEMPOTENCY_TTL_SECONDS + 1;
    assert_eq!(store.begin("c#k", "h2", later).await, Ok(Begin::Started));

    // Freed, then abandoned by a runner that died.
    assert_eq!(store.begin("c#f", "h1", now).await, Ok(Begin::Started));
    store.release("c#f", "h1").await.expect("freed");
    assert_eq!(store.begin("c#f", "h1", now + 1).await, Ok(Begin::Started));
    let lapsed = now + 1 + IN_FLIGHT_LEASE_SECONDS + 1;
    assert_eq!(store.begin("c#f", "h2", lapsed).await, Ok(Begin::Mismatch));
    assert_eq!(store.begin("c#f", "h1", lapsed).await, Ok(Begin::Started));

    // A body too large to keep is kept as absent.
    let mut large = answer();
    large.body = None;
    assert_eq!(store.begin("c#l", "h1", now).await, Ok(Begin::Started));
    store
        .complete("c#l", "h1", &large, now)
        .await
        .expect("kept");
    assert_eq!(
        store.begin("c#l", "h1", now).await,
        Ok(Begin::Replay(large))
    );
}

#[tokio::test]
async fn the_in_memory_store_keeps_the_contract() {
    contract(&InMemoryProxyIdempotencyStore::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dynamodb_store_keeps_the_contract_and_one_concurrent_claim_wins() {
    let (_moto, aws) = emulator().await;
    create_table(&aws, TABLE, "key").await;
    let store = DynamoProxyIdempotencyStore::from_config(&aws, TABLE);
    contract(&store).await;

    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = DynamoProxyIdempotencyStore::from_config(&aws, TABLE);
        tasks.push(tokio::spawn(async move {
            store.begin("c#race", "h1", 1_800_000_000).await
        }));
    }
    let mut started = 0;
    for task in tasks {
        match task.await.expect("task").expect("answered") {
            Begin::Started => started += 1,
            Begin::InFlight => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(started, 1, "exactly one claim runs the request");
}
