//! Actions' statuses in DynamoDB (the emulator's) keep the in-memory store's contract:
//! a status reads back as written, and a later write that is not final never replaces a
//! final one (a late or repeated receive cannot turn a finished action back into a
//! running one).

use junction_outbound::actions::{
    ActionState, ActionStatus, ActionStatusStore, DynamoActionStatusStore,
    InMemoryActionStatusStore,
};
use junction_tests::{create_table, emulator};

fn status(state: ActionState, attempts: u32) -> ActionStatus {
    ActionStatus {
        id: "act_00000000000000000000000000000001".into(),
        tenant: "acme".into(),
        connection: "conn_1".into(),
        state,
        attempts,
        reason: (state == ActionState::Retrying).then(|| "http_503".to_owned()),
        status: (state == ActionState::Succeeded).then_some(201),
        accepted_at: "2027-01-01T00:00:00.000Z".into(),
        updated_at: 1_800_000_000 + i64::from(attempts),
    }
}

async fn contract(store: &dyn ActionStatusStore) {
    let id = status(ActionState::Queued, 0).id;
    assert_eq!(store.get(&id).await, Ok(None));
    for written in [
        status(ActionState::Queued, 0),
        status(ActionState::Retrying, 1),
        status(ActionState::Succeeded, 2),
    ] {
        store.record(&written).await.expect("recorded");
        assert_eq!(store.get(&id).await, Ok(Some(written)));
    }
    for late in [
        status(ActionState::Retrying, 3),
        status(ActionState::Queued, 0),
    ] {
        store.record(&late).await.expect("no error");
        assert_eq!(
            store.get(&id).await,
            Ok(Some(status(ActionState::Succeeded, 2))),
            "a finished action stays finished"
        );
    }
    let mut failed = status(ActionState::Failed, 8);
    failed.reason = Some("retries_exhausted: http_503".into());
    store
        .record(&failed)
        .await
        .expect("a final status replaces a final one");
    assert_eq!(store.get(&id).await, Ok(Some(failed)));
}

#[tokio::test]
async fn the_in_memory_store_keeps_the_contract() {
    contract(&InMemoryActionStatusStore::default()).await;
}

#[tokio::test]
async fn the_dynamodb_store_keeps_the_contract() {
    let (_moto, aws) = emulator().await;
    create_table(&aws, "action-status", "id").await;
    contract(&DynamoActionStatusStore::from_config(&aws, "action-status")).await;
}
