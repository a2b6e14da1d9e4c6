//! The contract check (issue 30, point 1) against the fake provider serving an evolving
//! schema: a sandbox HubSpot connection, connected through the real connect flow, whose
//! API answers the contract requests through the real outbound client; first as the
//! recorded schema says (no event), then with a field removed, a type changed and a
//! field added (`provider.contract_failed` and `provider.schema_changed` with the diff,
//! and the alarm's metric). Also what [`published`] hands `event_schemas` to check
//! against the event schemas.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};
use std::time::{Duration, Instant};

use junction_aws::clock::FixedClock;
use junction_aws::events::{CloudEvent, InMemoryEventBus};
use junction_aws::payloads::InMemoryPayloadStore;
use junction_aws::queue::{InMemoryRetryScheduler, attribute};
use junction_aws::retry::Backoff;
use junction_catalog::Catalog;
use junction_contracts::aws::OutboundContractClient;
use junction_contracts::check::{
    CONTRACT_FAILED, CONTRACT_FAILURES_METRIC, Checked, ContractChecker, InMemorySandboxes,
    SandboxConnection, Verdict, announcements, check_sandboxes, report_lines,
};
use junction_oauth::testing::{Harness, harness_over, start_server};
use junction_outbound::{InMemorySharedState, OutboundClient};
use junction_pipeline::consumer::{Consumer, InboundMessage, ItemResult, Ports};
use junction_pipeline::drift::{DriftDetector, InMemoryShapeStore, SCHEMA_CHANGED};
use junction_pipeline::idempotency::{Idempotency, IdempotencyPolicy, InMemoryIdempotencyStore};
use junction_pipeline::records::InMemoryRecordStore;
use serde_json::{Value, json};
use time::OffsetDateTime;

/// The recorded HubSpot deal (the fixture the schema was recorded from).
fn recorded_deal() -> Value {
    let path = junction_contracts::recorded::repo_root().join("tests/fixtures/hubspot/deal.json");
    let text = std::fs::read_to_string(path).expect("fixture");
    serde_json::from_str::<Value>(&text).expect("JSON")["body"].clone()
}

/// The deal after the provider's change: `archived` removed, `id` a number, `url` added.
fn evolved_deal() -> Value {
    let mut deal = recorded_deal();
    let fields = deal.as_object_mut().expect("an object");
    fields.remove("archived");
    fields.insert("id".into(), json!(512));
    fields.insert(
        "url".into(),
        json!("https://app.hubspot.com/contacts/1/deal/512"),
    );
    deal
}

/// A fake HubSpot: the catalog entry `hubspot` (pinned 2026-03, its test request) over
/// the fake provider, a sandbox connection to it, and the deal shape it serves (0: as
/// recorded, 1: evolved).
struct FakeHubspot {
    harness: Harness,
    connection: SandboxConnection,
    version: Arc<AtomicUsize>,
}

async fn fake_hubspot() -> FakeHubspot {
    let server = start_server("hubspot", fake_provider::AuthServerConfig::default()).await;
    let text = format!(
        "id = \"hubspot\"\nname = \"HubSpot (fake)\"\ndocs = \"https://example.com/fake\"\napi_version = \"2026-03\"\n\n[oauth]\n{}\n[api]\nbase_url = \"{}\"\nrate_limit = {{ requests_per_second = 100.0, burst = 20, scope = \"connection\" }}\ntest_request = {{ method = \"GET\", path = \"/account-info/2026-03/details\" }}\n",
        server.oauth_catalog_fields(),
        server.provider_api_base()
    );
    let catalog = Catalog::from_files_with_rules(
        &[("hubspot.toml", text.as_str())],
        junction_catalog::EndpointRules::LoopbackHttpForTests,
    )
    .expect("catalog");
    let catalog: &'static Catalog = Box::leak(Box::new(catalog));
    let harness = harness_over(server, catalog, &["hubspot"]);
    let version = Arc::new(AtomicUsize::new(0));
    let serving = version.clone();
    harness.server.serve_provider_api(move |request| {
        let body = if request.path.starts_with("/account-info/") {
            json!({"portalId": 62515, "timeZone": "US/Eastern"})
        } else if request.path == "/crm/v3/objects/deals" {
            let deal = match serving.load(Ordering::SeqCst) {
                0 => recorded_deal(),
                _ => evolved_deal(),
            };
            json!({"results": [deal], "paging": {"next": {"after": "2"}}})
        } else {
            return fake_provider::ScriptedResponse::with_status(404, &json!({}));
        };
        fake_provider::ScriptedResponse::json(&body)
    });
    let id = harness.connect_to("hubspot").await;
    let tenant = harness
        .vault
        .connection(&id)
        .await
        .expect("the connection")
        .tenant;
    let connection = SandboxConnection {
        id,
        tenant,
        provider: "hubspot".into(),
    };
    FakeHubspot {
        harness,
        connection,
        version,
    }
}

impl FakeHubspot {
    /// One contract check run through the outbound client.
    async fn check(&self) -> Vec<Checked> {
        let vault = self.harness.vault.clone();
        let catalog = vault.catalog();
        let client = OutboundClient::new(
            catalog,
            vault.clone(),
            Arc::new(InMemorySharedState::default()),
            Arc::new(junction_aws::clock::SystemClock),
        );
        let checker = ContractChecker::new(
            catalog,
            Arc::new(OutboundContractClient::new(
                catalog,
                client,
                vault,
                Instant::now() + Duration::from_secs(20),
            )),
        );
        check_sandboxes(
            &checker,
            &InMemorySandboxes(vec![self.connection.clone()]),
            None,
        )
        .await
        .expect("listed")
    }
}

fn verdicts(results: &[Checked]) -> Vec<(&str, &str)> {
    results
        .iter()
        .map(|c| (c.request.as_str(), c.verdict.as_str()))
        .collect()
}

fn metric(results: &[Checked], name: &str) -> Value {
    let line: Value = serde_json::from_slice(&report_lines(results)).expect("one JSON line");
    line[name].clone()
}

#[tokio::test]
async fn an_evolving_sandbox_schema_is_announced_with_its_diff_and_counted() {
    let fake = fake_hubspot().await;
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time");

    // As recorded: every request passes, nothing is announced, the alarm sees zero.
    let unchanged = fake.check().await;
    assert_eq!(verdicts(&unchanged), [("test", "ok"), ("deal", "ok")]);
    assert!(announcements(&unchanged, now).is_empty());
    assert_eq!(metric(&unchanged, CONTRACT_FAILURES_METRIC), 0);
    let paths: Vec<String> = fake
        .harness
        .server
        .provider_requests()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        paths,
        ["/account-info/2026-03/details", "/crm/v3/objects/deals"]
    );
    let deals = &fake.harness.server.provider_requests()[1];
    assert_eq!(deals.query_param("limit"), Some("1"));
    assert!(
        deals
            .header("authorization")
            .is_some_and(|h| h.starts_with("Bearer ")),
        "sent with the connection's token"
    );

    // The provider removes a field, changes a type and adds one.
    fake.version.store(1, Ordering::SeqCst);
    let evolved = fake.check().await;
    assert_eq!(verdicts(&evolved), [("test", "ok"), ("deal", "broken")]);
    let Verdict::Broken(diff) = &evolved[1].verdict else {
        panic!("{:?}", evolved[1].verdict)
    };
    assert_eq!(
        diff.to_string(),
        "added $.url (string); removed $.archived (boolean); changed $.id string -> number"
    );
    assert_eq!(metric(&evolved, CONTRACT_FAILURES_METRIC), 1);
    let events = announcements(&evolved, now);
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, [CONTRACT_FAILED, SCHEMA_CHANGED]);
    let failed = &events[0];
    assert_eq!(failed.source, "junction/hubspot");
    assert_eq!(
        failed.connection.as_deref(),
        Some(fake.connection.id.as_str())
    );
    assert_eq!(
        failed.tenant.as_deref(),
        Some(fake.connection.tenant.as_str())
    );
    assert_eq!(
        failed.data["removed"],
        json!([{"path": "$.archived", "type": "boolean"}])
    );
    assert_eq!(
        failed.data["changed"],
        json!([{"path": "$.id", "from": "string", "to": "number"}])
    );
    assert_eq!(
        failed.data["added"],
        json!([{"path": "$.url", "type": "string"}])
    );
    assert_eq!(events[1].data["origin"], "contract_check");
    assert_eq!(events[1].data["added"], failed.data["added"]);

    // A provider outage is a failed contract too, with its reason and no diff.
    fake.harness
        .server
        .script_api([fake_provider::ScriptedResponse::with_status(
            404,
            &json!({}),
        )]);
    let outage = fake.check().await;
    assert_eq!(outage[0].verdict.as_str(), "failed", "{outage:?}");
}

/// Events of the new types from their real code paths, for `event_schemas` to check:
/// the contract check over the fake provider (a broken contract and a changed schema)
/// and the consumer's passive drift (a changed webhook schema).
pub async fn published() -> Vec<(String, CloudEvent)> {
    let fake = fake_hubspot().await;
    fake.version.store(1, Ordering::SeqCst);
    let mut events: Vec<(String, CloudEvent)> =
        announcements(&fake.check().await, OffsetDateTime::UNIX_EPOCH)
            .into_iter()
            .map(|event| ("contract check".to_owned(), event))
            .collect();

    let bus = Arc::new(InMemoryEventBus::default());
    let clock = Arc::new(FixedClock::at_unix(1_800_000_000));
    let consumer = Consumer::new(
        Catalog::embedded().expect("catalog"),
        Idempotency::new(
            Arc::new(InMemoryIdempotencyStore::default()),
            IdempotencyPolicy::default(),
        ),
        Ports {
            records: Arc::new(InMemoryRecordStore::default()),
            bus: bus.clone(),
            payloads: Arc::new(InMemoryPayloadStore::default()),
            retries: Arc::new(InMemoryRetryScheduler::default()),
            clock: clock.clone(),
        },
        Backoff {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(900),
        },
    )
    .with_drift(Arc::new(DriftDetector::new(
        Arc::new(InMemoryShapeStore::default()),
        bus.clone(),
        clock.clone(),
    )));
    let stripe = |id: &str, amount: Value| InboundMessage {
        message_id: id.into(),
        receipt_handle: id.into(),
        body: json!({"id": id, "object": "event", "type": "invoice.paid", "created": 1_700_000_000,
            "data": {"object": {"id": "in_1", "amount_paid": amount}}})
        .to_string(),
        attributes: [
            (attribute::PROVIDER, "stripe"),
            (attribute::EVENT_ID, id),
            (attribute::EVENT_TYPE, "invoice.paid"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
        receive_count: 1,
    };
    let first = consumer.process(stripe("evt_1", json!(100))).await;
    assert_eq!(first.result, ItemResult::Processed);
    clock.advance(time::Duration::minutes(1));
    let changed = consumer.process(stripe("evt_2", json!("100"))).await;
    assert_eq!(changed.result, ItemResult::Processed);
    events.extend(
        bus.events()
            .into_iter()
            .filter(|event| event.event_type == SCHEMA_CHANGED)
            .map(|event| ("consumer drift".to_owned(), event)),
    );
    assert_eq!(
        events
            .iter()
            .filter(|(_, e)| e.event_type == SCHEMA_CHANGED)
            .count(),
        2
    );
    events
}
