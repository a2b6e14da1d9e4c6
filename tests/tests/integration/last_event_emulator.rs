//! When a connection last heard from its provider (issue 28, point 2), on the emulator
//! with the connections table `template.yaml` creates: the consumer's conditional
//! `UpdateItem` moves `last_event_at` only forward, never recreates a deleted
//! connection, and the connection store reads it back (the management API's and
//! `junction status`'s source) and keeps it through its whole-item replaces.

use junction_oauth::{ConnectionStore, DynamoConnectionStore, sample_connection};
use junction_pipeline::last_events::{
    DynamoLastEvents, LAST_EVENT_AT_ATTRIBUTE, LastEvents, Recorded,
};
use local_stack::emulator::{Moto, deploy, repo_root};

/// The stack's connections table, with the store and the consumer's adapter over it.
struct Table {
    _moto: Moto,
    aws: aws_config::SdkConfig,
    name: String,
}

async fn connections_table() -> Table {
    let moto =
        Moto::start(&repo_root()).expect("the emulator starts (run infra/test to install it)");
    let endpoint = moto.endpoint().to_owned();
    let stack = tokio::task::spawn_blocking(move || {
        deploy(&repo_root(), &endpoint, "junction-last-event", &[]).expect("the template deploys")
    })
    .await
    .expect("deploy");
    let aws = moto
        .sdk_config()
        .await
        .into_builder()
        .timeout_config(junction_aws::config::aws_timeouts())
        .build();
    Table {
        _moto: moto,
        aws,
        name: stack.resources["ConnectionsTable"].clone(),
    }
}

#[tokio::test]
async fn the_last_event_moves_only_forward_and_never_onto_a_deleted_connection() {
    let table = connections_table().await;
    let store = DynamoConnectionStore::from_config(&table.aws, table.name.clone());
    let last_events = DynamoLastEvents::from_config(&table.aws, table.name.clone());
    let connection = sample_connection("conn_last_event", "acme", 1_000);
    store.insert(&connection).await.expect("insert");
    let stored = |store: &DynamoConnectionStore| {
        let store = store.clone();
        async move {
            store
                .get("conn_last_event")
                .await
                .expect("get")
                .map(|c| c.last_event_at)
        }
    };
    assert_eq!(stored(&store).await, Some(None), "none recorded yet");

    assert_eq!(
        last_events
            .record("conn_last_event", 2_000)
            .await
            .expect("record"),
        Recorded::Moved
    );
    assert_eq!(stored(&store).await, Some(Some(2_000)));
    for earlier_or_same in [1_999, 2_000] {
        assert_eq!(
            last_events
                .record("conn_last_event", earlier_or_same)
                .await
                .expect("record"),
            Recorded::Unchanged,
            "{earlier_or_same} is not later than 2000"
        );
    }
    assert_eq!(stored(&store).await, Some(Some(2_000)));
    assert_eq!(
        last_events
            .record("conn_last_event", 2_500)
            .await
            .expect("record"),
        Recorded::Moved
    );

    // Listed with it, as the API and `junction status` read connections.
    let listed = store.list_for_tenant("acme").await.expect("list");
    assert_eq!(listed[0].last_event_at, Some(2_500));
    let all = store.list_all(10).await.expect("list all");
    assert_eq!(all[0].last_event_at, Some(2_500));

    // A replace (a refresh, a sync) writes the whole item: it keeps the time.
    let mut next = listed[0].clone();
    next.version += 1;
    next.last_successful_sync = Some(2_600);
    assert!(
        store
            .replace(&next, listed[0].version)
            .await
            .expect("replace")
    );
    let after = store
        .get("conn_last_event")
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(
        (after.last_successful_sync, after.last_event_at),
        (Some(2_600), Some(2_500))
    );
    let raw = aws_sdk_dynamodb::Client::new(&table.aws)
        .get_item()
        .table_name(&table.name)
        .key(
            "id",
            aws_sdk_dynamodb::types::AttributeValue::S("conn_last_event".into()),
        )
        .send()
        .await
        .expect("raw get")
        .item
        .expect("item");
    assert_eq!(
        raw.get(LAST_EVENT_AT_ATTRIBUTE).and_then(|v| v.as_n().ok()),
        Some(&"2500".to_owned()),
        "a number attribute outside the document, as the consumer's condition compares it"
    );
    assert!(
        !raw["doc"]
            .as_s()
            .expect("doc")
            .contains(LAST_EVENT_AT_ATTRIBUTE),
        "one copy of the time, the one the consumer writes"
    );

    // Deleted: the update must not bring an item back.
    store.delete("conn_last_event").await.expect("delete");
    assert_eq!(
        last_events
            .record("conn_last_event", 3_000)
            .await
            .expect("record"),
        Recorded::Unchanged
    );
    assert_eq!(stored(&store).await, None, "no item recreated");
    assert_eq!(
        last_events
            .record("conn_never_existed", 3_000)
            .await
            .expect("record"),
        Recorded::Unchanged
    );
    assert!(
        store.list_all(10).await.expect("list all").is_empty(),
        "nothing created for a connection that never existed"
    );
}

#[tokio::test]
async fn an_unreachable_table_is_an_error_with_its_cause() {
    let (_moto, aws) = junction_tests::emulator().await;
    let last_events = DynamoLastEvents::from_config(&aws, "no-such-table");
    let err = last_events
        .record("conn_x", 1_000)
        .await
        .expect_err("no table");
    let chain = junction_telemetry::error_chain(&err);
    assert!(
        chain.contains("ResourceNotFound") || chain.contains("non-existent"),
        "the cause is kept: {chain}"
    );
}
