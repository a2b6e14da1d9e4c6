//! Schema drift (issue 30, point 2) on the emulator, with the shapes table
//! `template.yaml` creates: the DynamoDB shape store keeps one item per shape, records a
//! shape once (the conditional write decides who announces it), finds the latest shape
//! of a provider's event type, forgets one whose announcement failed; and two consumers'
//! detectors over it announce an evolving schema once per new shape. Also the contract
//! check's listing of sandbox connections (issue 30, point 1) over the stack's
//! connections table.

use std::sync::Arc;

use junction_aws::clock::FixedClock;
use junction_aws::events::InMemoryEventBus;
use junction_pipeline::drift::{
    DriftDetector, DynamoShapeStore, KnownShape, SCHEMA_CHANGED, Shape, ShapeKey, ShapeStore,
};
use local_stack::emulator::Moto;
use serde_json::json;
use time::OffsetDateTime;

struct Table {
    _moto: Moto,
    store: Arc<DynamoShapeStore>,
    aws: aws_config::SdkConfig,
    connections: String,
}

async fn shapes_table() -> Table {
    let (moto, aws, stack) = junction_tests::deployed("junction-schema-drift").await;
    Table {
        _moto: moto,
        store: Arc::new(DynamoShapeStore::from_config(
            &aws,
            stack.resources["SchemaShapesTable"].clone(),
        )),
        connections: stack.resources["ConnectionsTable"].clone(),
        aws,
    }
}

fn known(value: serde_json::Value, at: i64) -> KnownShape {
    let shape = Shape::of(&value);
    KnownShape {
        fingerprint: shape.fingerprint(),
        shape,
        diff: None,
        first_seen: OffsetDateTime::from_unix_timestamp(at).expect("time"),
    }
}

#[tokio::test]
async fn the_dynamo_store_records_each_shape_once_and_finds_the_latest() {
    let table = shapes_table().await;
    let store = &table.store;
    let key = ShapeKey::for_event("stripe", None, Some("invoice.paid"));
    let other = ShapeKey::for_event("stripe", None, Some("invoice.created"));
    let first = known(json!({"id": "evt_1", "amount": 1}), 1_800_000_000);
    let mut second = known(json!({"id": "evt_1", "amount": "1"}), 1_800_000_060);
    second.diff = Some(first.shape.diff(&second.shape));

    assert_eq!(
        store.get(&key, &first.fingerprint).await.expect("get"),
        None
    );
    assert_eq!(store.latest(&key).await.expect("latest"), None);
    assert!(store.record(&key, &first).await.expect("record"));
    assert!(
        !store.record(&key, &first).await.expect("record again"),
        "the conditional write refuses a known shape"
    );
    assert!(store.record(&key, &second).await.expect("record"));
    assert!(
        store
            .record(&other, &first)
            .await
            .expect("another event type")
    );

    assert_eq!(
        store.get(&key, &second.fingerprint).await.expect("get"),
        Some(second.clone()),
        "shape, diff and first-seen time read back"
    );
    assert_eq!(
        store.latest(&key).await.expect("latest"),
        Some(second.clone())
    );
    store
        .forget(&key, &second.fingerprint)
        .await
        .expect("forget");
    assert_eq!(
        store.latest(&key).await.expect("latest"),
        Some(first.clone())
    );
    assert_eq!(
        store.get(&key, &second.fingerprint).await.expect("get"),
        None
    );
}

async fn observe(
    detector: &DriftDetector,
    key: &ShapeKey,
    body: serde_json::Value,
) -> junction_pipeline::drift::Observation {
    detector
        .observe_body(key, "evt", body.to_string().as_bytes(), Some("2026-03"))
        .await
        .expect("JSON")
}

#[tokio::test]
async fn two_consumers_announce_an_evolving_schema_once_per_new_shape() {
    let table = shapes_table().await;
    let bus = Arc::new(InMemoryEventBus::default());
    let clock = Arc::new(FixedClock::at_unix(1_800_000_000));
    let detector = || DriftDetector::new(table.store.clone(), bus.clone(), clock.clone());
    let (a, b) = (detector(), detector());
    let key = ShapeKey::for_event("hubspot", Some("deal"), None);
    let deal =
        json!({"id": "1", "properties": {"amount": "10", "dealname": "A"}, "archived": false});
    assert!(
        !observe(&a, &key, deal.clone()).await.announced,
        "a baseline"
    );
    assert!(!observe(&b, &key, deal).await.announced, "unchanged");
    clock.advance(time::Duration::minutes(1));
    // A field removed (archived), a type changed (amount), a field added (pipeline).
    let evolved =
        json!({"id": "1", "properties": {"amount": 10, "dealname": "A", "pipeline": "default"}});
    let (x, y) = tokio::join!(
        observe(&a, &key, evolved.clone()),
        observe(&b, &key, evolved)
    );
    assert_eq!(u8::from(x.announced) + u8::from(y.announced), 1);
    let events: Vec<_> = bus
        .events()
        .into_iter()
        .filter(|e| e.event_type == SCHEMA_CHANGED)
        .collect();
    assert_eq!(events.len(), 1);
    let data = &events[0].data;
    assert_eq!(data["resource"], "deal");
    assert_eq!(
        data["added"],
        json!([{"path": "$.properties.pipeline", "type": "string"}])
    );
    assert_eq!(
        data["removed"],
        json!([{"path": "$.archived", "type": "boolean"}])
    );
    assert_eq!(
        data["changed"],
        json!([{"path": "$.properties.amount", "from": "string", "to": "number"}])
    );
}

#[tokio::test]
async fn the_contract_check_lists_only_the_connections_marked_sandbox() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use junction_contracts::aws::DynamoSandboxConnections;
    use junction_contracts::check::{SandboxConnection, SandboxConnections};

    let table = shapes_table().await;
    let client = aws_sdk_dynamodb::Client::new(&table.aws);
    // Connection items as the connection store writes them (id, tenant, doc), one marked
    // as a sandbox by its connect session, one not, and a last-event item without a doc.
    let items = [
        (
            "conn_00000000000000000000000000000001",
            Some(
                r#"{"id":"conn_00000000000000000000000000000001","tenant":"acme","provider":"hubspot","sandbox":true}"#,
            ),
        ),
        (
            "conn_00000000000000000000000000000002",
            Some(
                r#"{"id":"conn_00000000000000000000000000000002","tenant":"acme","provider":"hubspot"}"#,
            ),
        ),
        ("last-event#conn_00000000000000000000000000000001", None),
    ];
    for (id, doc) in items {
        let mut put = client
            .put_item()
            .table_name(&table.connections)
            .item("id", AttributeValue::S(id.into()))
            .item("tenant", AttributeValue::S("acme".into()))
            .item("created_at", AttributeValue::N("1".into()));
        if let Some(doc) = doc {
            put = put.item("doc", AttributeValue::S(doc.into()));
        }
        put.send().await.expect("put");
    }
    let sandboxes = DynamoSandboxConnections::from_config(&table.aws, table.connections.clone());
    assert_eq!(
        sandboxes.list().await.expect("listed"),
        [SandboxConnection {
            id: "conn_00000000000000000000000000000001".into(),
            tenant: "acme".into(),
            provider: "hubspot".into(),
        }]
    );
}
