//! The silence detector's events (`provider.silent`, `connection.silent`; issue 28,
//! point 3) match their schemas in `docs/schemas`: published by the real detector over
//! in-memory ports, a provider whose webhooks dropped by day and a connection quiet for
//! a week after its learning week. `event_schemas` checks the same events with every
//! other type ([`published`]).

use std::sync::Arc;

use junction_aws::events::{CloudEvent, InMemoryEventBus};
use junction_catalog::Catalog;
use junction_health::silence::{
    HOUR, InMemoryReceiptHistory, InMemorySilenceStore, SERIES_HOURS, SilenceDetector,
    SilenceSettings,
};
use junction_polling::{InMemorySyncJobStore, ensure_jobs};

use crate::schema_support::{Schemas, check, file_uri, repo};

/// Tuesday 2026-12-01 14:00 UTC.
const TUESDAY_AFTERNOON: i64 = 1_796_133_600;

/// What the detector publishes when Linear's webhooks drop to 2 in an afternoon hour
/// that normally brings 300, and a Linear connection (with sync jobs) has heard nothing
/// for eight days: one `provider.silent` and one `connection.silent`.
pub async fn published() -> Vec<CloudEvent> {
    let catalog = Catalog::embedded().expect("catalog");
    let receipts = Arc::new(InMemoryReceiptHistory::default());
    let store = Arc::new(InMemorySilenceStore::default());
    let jobs = Arc::new(InMemorySyncJobStore::default());
    let bus = Arc::new(InMemoryEventBus::default());
    let detector = SilenceDetector::new(
        receipts.clone(),
        store.clone(),
        jobs.clone(),
        bus.clone(),
        catalog,
        SilenceSettings::default(),
    );
    let now = TUESDAY_AFTERNOON + 60;
    let week_ago = now - 8 * 24 * HOUR;
    store.connect("conn_silent", "acme", "linear");
    store.record_event("conn_silent", week_ago - HOUR);
    ensure_jobs(
        jobs.as_ref(),
        catalog,
        "linear",
        "conn_silent",
        Some("acme"),
        week_ago,
    )
    .await
    .expect("jobs");
    // The first sight, eight days ago: its learning week starts.
    detector.run(week_ago).await.expect("first run");
    let mut hourly = vec![300.0; SERIES_HOURS];
    *hourly.last_mut().expect("hours") = 2.0;
    receipts.set("linear", hourly);
    let report = detector.run(now).await.expect("run");
    assert_eq!(
        (report.providers_announced, report.connections_announced),
        (1, 1),
        "{report:?}"
    );
    bus.events()
}

#[tokio::test]
async fn the_silence_events_match_their_schemas() {
    let schemas = Schemas::events();
    let envelope = schemas.validator(&file_uri(
        &repo().join("docs/schemas/cloudevent.schema.json"),
    ));
    let events = published().await;
    let mut types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    types.sort_unstable();
    assert_eq!(types, ["connection.silent", "provider.silent"]);
    for event in &events {
        let json = serde_json::to_value(event).expect("JSON");
        check(&envelope, &json).unwrap_or_else(|errors| panic!("envelope: {errors}\n{json:#}"));
        let data = schemas.validator(&file_uri(&repo().join(format!(
            "docs/schemas/events/{}.schema.json",
            event.event_type
        ))));
        check(&data, &event.data)
            .unwrap_or_else(|errors| panic!("{}: {errors}\n{json:#}", event.event_type));
    }
    let connection = events
        .iter()
        .find(|e| e.event_type == "connection.silent")
        .expect("connection.silent");
    assert_eq!(
        (
            connection.tenant.as_deref(),
            connection.connection.as_deref()
        ),
        (Some("acme"), Some("conn_silent")),
        "stamped like the other connection events"
    );
    assert_eq!(connection.data["reconciliation_poll_forced"], true);
}
