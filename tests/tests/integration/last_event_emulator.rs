//! When a connection last heard from its provider (issue 28, point 2), on the emulator
//! with the connections table `template.yaml` creates: the consumer's conditional
//! `UpdateItem` of a small item of its own moves `last_event_at` only forward, never
//! brings back a deleted connection's, and the connection store reads it back (the
//! management API's and `junction status`'s source); a replace of the connection cannot
//! undo it.

use junction_oauth::{ConnectionStore, DynamoConnectionStore, sample_connection, with_last_events};
use junction_pipeline::last_events::{
    DELETED_AT_ATTRIBUTE, DynamoLastEvents, LAST_EVENT_AT_ATTRIBUTE, LAST_EVENT_KEY_PREFIX,
    LastEvents, Recorded,
};
use local_stack::emulator::Moto;

/// The stack's connections table, with the store and the consumer's adapter over it.
struct Table {
    _moto: Moto,
    aws: aws_config::SdkConfig,
    name: String,
}

async fn connections_table() -> Table {
    let (moto, aws, stack) = junction_tests::deployed("junction-last-event").await;
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
                .last_events(&["conn_last_event"])
                .await
                .expect("last events")
                .get("conn_last_event")
                .copied()
        }
    };
    assert_eq!(stored(&store).await, None, "none recorded yet");

    assert_eq!(
        last_events
            .record("conn_last_event", 2_000)
            .await
            .expect("record"),
        Recorded::Moved
    );
    assert_eq!(stored(&store).await, Some(2_000));
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
    assert_eq!(stored(&store).await, Some(2_000));
    assert_eq!(
        last_events
            .record("conn_last_event", 2_500)
            .await
            .expect("record"),
        Recorded::Moved
    );

    // Shown with it, as the API and `junction status` read connections; `get` and the
    // listings alone do not read it (a token read must not pay for it).
    let listed = store.list_for_tenant("acme").await.expect("list");
    assert_eq!(listed.len(), 1, "the last-event item is not a connection");
    assert_eq!(listed[0].last_event_at, None);
    let shown = with_last_events(&store, listed.clone())
        .await
        .expect("with last events");
    assert_eq!(shown[0].last_event_at, Some(2_500));
    let all = store.list_all(10).await.expect("list all");
    assert_eq!(all.len(), 1, "the last-event item is not a connection");

    // A replace (a refresh, a sync) writes the whole connection item: it cannot undo a
    // time written between its read and its write, because the time is not in it.
    let mut next = listed[0].clone();
    next.version += 1;
    next.last_successful_sync = Some(2_600);
    assert_eq!(
        last_events
            .record("conn_last_event", 2_550)
            .await
            .expect("record"),
        Recorded::Moved,
        "recorded between the replace's read and its write"
    );
    assert!(
        store
            .replace(&next, listed[0].version)
            .await
            .expect("replace")
    );
    assert_eq!(stored(&store).await, Some(2_550));

    // What the write costs: an item of its own, far under a kilobyte (one write unit),
    // with none of the indexes' key attributes (no index write).
    let raw = |id: &str| {
        let client = aws_sdk_dynamodb::Client::new(&table.aws);
        let table = table.name.clone();
        let id = id.to_owned();
        async move {
            client
                .get_item()
                .table_name(table)
                .key("id", aws_sdk_dynamodb::types::AttributeValue::S(id))
                .send()
                .await
                .expect("raw get")
                .item
        }
    };
    let item = raw(&format!("{LAST_EVENT_KEY_PREFIX}conn_last_event"))
        .await
        .expect("the last-event item");
    let mut names: Vec<&str> = item.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["id", LAST_EVENT_AT_ATTRIBUTE]);
    assert!(
        !raw("conn_last_event")
            .await
            .expect("the connection item")
            .contains_key(LAST_EVENT_AT_ATTRIBUTE),
        "the connection item does not carry it"
    );

    // Deleted: the connection and its time are gone, and a delivery attributed just
    // before (the account index's cache) cannot bring the time back.
    store.delete("conn_last_event").await.expect("delete");
    assert_eq!(store.get("conn_last_event").await.expect("get"), None);
    assert_eq!(stored(&store).await, None);
    assert_eq!(
        last_events
            .record("conn_last_event", 3_000)
            .await
            .expect("record"),
        Recorded::Unchanged
    );
    assert_eq!(stored(&store).await, None, "refused by the tombstone");
    let tombstone = raw(&format!("{LAST_EVENT_KEY_PREFIX}conn_last_event"))
        .await
        .expect("tombstone");
    assert!(tombstone.contains_key(DELETED_AT_ATTRIBUTE));
    assert!(
        tombstone.contains_key("expires_at"),
        "the table's TTL removes it"
    );
    assert!(
        store.list_all(10).await.expect("list all").is_empty(),
        "no connection listed"
    );
}

/// A page of connections reads its times in batches of at most 100 keys.
#[tokio::test]
async fn more_than_a_batch_of_connections_read_their_times() {
    let table = connections_table().await;
    let store = DynamoConnectionStore::from_config(&table.aws, table.name.clone());
    let last_events = DynamoLastEvents::from_config(&table.aws, table.name.clone());
    let ids: Vec<String> = (0..130).map(|n| format!("conn_many_{n:03}")).collect();
    for (n, id) in ids.iter().enumerate() {
        store
            .insert(&sample_connection(id, "many", 1_000 + n as i64))
            .await
            .expect("insert");
        if n % 2 == 0 {
            last_events
                .record(id, 5_000 + n as i64)
                .await
                .expect("record");
        }
    }
    let shown = with_last_events(&store, store.list_for_tenant("many").await.expect("list"))
        .await
        .expect("with last events");
    assert_eq!(shown.len(), 130);
    for (n, connection) in shown.iter().enumerate() {
        assert_eq!(
            connection.last_event_at,
            (n % 2 == 0).then_some(5_000 + n as i64),
            "{}",
            connection.id
        );
    }
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
