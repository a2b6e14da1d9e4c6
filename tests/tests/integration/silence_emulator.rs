//! Silence detection on the emulator (issue 28, point 3), with the stack `template.yaml`
//! creates: the detector's CloudWatch adapter reads hourly `WebhooksReceived` put with
//! `PutMetricData` (`ListMetrics`, then one `GetMetricData`), its DynamoDB adapter scans
//! the connections table's last-event items, learns on them beside the consumer's
//! `last_event_at` and keeps a provider's silence in an item of its own, and the real
//! EventBridge bus carries the two events to a subscriber's queue. A second run announces
//! nothing new; a disconnect's tombstone is never written over.

use std::time::Duration;

use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use aws_sdk_dynamodb::types::AttributeValue;
use junction_aws::events::{CloudEvent, EventBridgeBus};
use junction_catalog::Catalog;
use junction_health::silence::cloudwatch::CloudWatchReceiptHistory;
use junction_health::silence::dynamo::DynamoSilenceStore;
use junction_health::silence::{HOUR, SERIES_HOURS, SilenceDetector, SilenceSettings};
use junction_oauth::{ConnectionStore, DynamoConnectionStore, sample_connection};
use junction_pipeline::last_events::{DynamoLastEvents, LastEvents};
use junction_polling::{DynamoSyncJobStore, SyncJobStore, ensure_jobs, job_key};
use local_stack::emulator::{Moto, deploy, repo_root};

use crate::schema_support::{Schemas, check, file_uri, repo};

const STACK: &str = "junction-silence";

/// Puts `hourly` (oldest first, the last one the hour ending at `end`) as `provider`'s
/// `WebhooksReceived`, one datapoint half-way through each hour, as the ingress's EMF
/// lines would have: a later run whose window ends a 5-minute step further still finds
/// each in the same hour.
async fn put_receipts(aws: &aws_config::SdkConfig, provider: &str, end: i64, hourly: &[f64]) {
    let cloudwatch = aws_sdk_cloudwatch::Client::new(aws);
    let start = end - HOUR * hourly.len() as i64;
    let data: Vec<MetricDatum> = hourly
        .iter()
        .enumerate()
        .filter(|(_, count)| **count > 0.0)
        .map(|(index, count)| {
            MetricDatum::builder()
                .metric_name("WebhooksReceived")
                .dimensions(
                    Dimension::builder()
                        .name("Provider")
                        .value(provider)
                        .build(),
                )
                .timestamp(DateTime::from_secs(start + HOUR * index as i64 + HOUR / 2))
                .value(*count)
                .unit(StandardUnit::Count)
                .build()
        })
        .collect();
    for chunk in data.chunks(500) {
        cloudwatch
            .put_metric_data()
            .namespace("Junction")
            .set_metric_data(Some(chunk.to_vec()))
            .send()
            .await
            .expect("put metric data");
    }
}

/// A queue subscribed to every `junction/*` event of the stack's bus; its URL.
async fn subscriber(aws: &aws_config::SdkConfig, bus: &str) -> String {
    let sqs = aws_sdk_sqs::Client::new(aws);
    let url = sqs
        .create_queue()
        .queue_name("silence-observed")
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url");
    let events = aws_sdk_eventbridge::Client::new(aws);
    events
        .put_rule()
        .name("silence-observed")
        .event_bus_name(bus)
        .event_pattern(r#"{"source":[{"prefix":"junction/"}]}"#)
        .send()
        .await
        .expect("rule");
    events
        .put_targets()
        .rule("silence-observed")
        .event_bus_name(bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("observed")
                .arn("arn:aws:sqs:us-east-1:123456789012:silence-observed")
                .build()
                .expect("target"),
        )
        .send()
        .await
        .expect("target");
    url
}

/// The CloudEvents the subscriber received within `wait`.
async fn received(aws: &aws_config::SdkConfig, url: &str, wait: Duration) -> Vec<CloudEvent> {
    junction_tests::bus_events(aws, url, wait, |_| false)
        .await
        .into_iter()
        .map(|event| serde_json::from_value(event).expect("a CloudEvent"))
        .collect()
}

#[tokio::test]
async fn the_detector_announces_each_silence_once_and_forces_the_poll_on_the_emulator() {
    let moto =
        Moto::start(&repo_root()).expect("the emulator starts (run infra/test to install it)");
    let endpoint = moto.endpoint().to_owned();
    let stack = tokio::task::spawn_blocking(move || {
        deploy(&repo_root(), &endpoint, STACK, &[]).expect("the template deploys")
    })
    .await
    .expect("deploy");
    // The alarms are accepted by CloudWatch as written.
    let silence = &stack.alarms[&format!("{STACK}-webhook-silence")];
    assert_eq!(
        silence.expressions,
        ["FILL(providers, 0) + FILL(connections, 0)"]
    );
    let anomaly = &stack.alarms[&format!("{STACK}-webhook-receipt-anomaly")];
    assert_eq!(anomaly.expressions, ["ANOMALY_DETECTION_BAND(received, 3)"]);
    assert_eq!(
        anomaly.comparison.as_deref(),
        Some("LessThanLowerThreshold")
    );
    let detector_env = stack.functions["SilenceDetectorFunction"].environment_strings();
    assert_eq!(
        detector_env["CONNECTIONS_TABLE"],
        stack.resources["ConnectionsTable"]
    );

    let aws = moto
        .sdk_config()
        .await
        .into_builder()
        .timeout_config(junction_aws::config::aws_timeouts())
        .build();
    let connections_table = stack.resources["ConnectionsTable"].clone();
    let bus_name = detector_env["EVENT_BUS_NAME"].clone();
    let observed = subscriber(&aws, &bus_name).await;
    let catalog = Catalog::embedded().expect("catalog");
    let jobs = DynamoSyncJobStore::from_config(&aws, detector_env["SYNC_JOBS_TABLE"].clone());
    let detector = SilenceDetector::new(
        std::sync::Arc::new(CloudWatchReceiptHistory::from_config(&aws)),
        std::sync::Arc::new(DynamoSilenceStore::from_config(
            &aws,
            connections_table.clone(),
        )),
        std::sync::Arc::new(jobs.clone()),
        std::sync::Arc::new(EventBridgeBus::from_config(&aws, bus_name.clone())),
        catalog,
        SilenceSettings::default(),
    );

    // Linear: 300 webhooks every hour for four weeks, then 2 in the last hour. Stripe:
    // steady all along, the last hour included.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let end = now - now.rem_euclid(300);
    let mut linear = vec![300.0; SERIES_HOURS];
    *linear.last_mut().expect("hours") = 2.0;
    put_receipts(&aws, "linear", end, &linear).await;
    put_receipts(&aws, "stripe", end, &vec![40.0; SERIES_HOURS]).await;

    // A Linear connection whose last webhook was eight days ago, with its sync jobs not
    // due for a day, and one that was disconnected.
    let store = DynamoConnectionStore::from_config(&aws, connections_table.clone());
    let last_events = DynamoLastEvents::from_config(&aws, connections_table.clone());
    let week_ago = now - 8 * 24 * HOUR;
    for id in ["conn_quiet", "conn_gone"] {
        let mut connection = sample_connection(id, "acme", week_ago - 2 * HOUR);
        connection.provider = "linear".into();
        store.insert(&connection).await.expect("insert");
        last_events
            .record(id, week_ago - HOUR)
            .await
            .expect("last event");
    }
    ensure_jobs(
        &jobs,
        catalog,
        "linear",
        "conn_quiet",
        Some("acme"),
        week_ago,
    )
    .await
    .expect("jobs");
    let model = &catalog
        .get("linear")
        .and_then(|p| p.polling.as_ref())
        .expect("Linear polls")
        .models[0]
        .name;
    let key = job_key("conn_quiet", model);
    let job = jobs.get(&key).await.expect("get").expect("job");
    let later = junction_polling::SyncJob {
        due_at: now + 24 * HOUR,
        version: job.version + 1,
        ..job.clone()
    };
    assert!(jobs.replace(&later, job.version).await.expect("replace"));

    // First sight, eight days ago: the connections' learning week starts.
    let first = detector.run(week_ago).await.expect("first run");
    assert_eq!(
        (first.connections_checked, first.connections_announced),
        (2, 0),
        "{first:?}"
    );
    store.delete("conn_gone").await.expect("disconnect");

    let report = detector.run(now).await.expect("run");
    assert_eq!(
        (
            report.silent_providers,
            report.providers_announced,
            report.silent_connections,
            report.connections_announced,
            report.failures
        ),
        (1, 1, 1, 1, 0),
        "{report:?}"
    );

    // Both events reach the subscriber, and match their schemas.
    let mut events = received(&aws, &observed, Duration::from_secs(5)).await;
    events.sort_by(|a, b| a.event_type.cmp(&b.event_type));
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["connection.silent", "provider.silent"]);
    let schemas = Schemas::events();
    let envelope = schemas.validator(&file_uri(
        &repo().join("docs/schemas/cloudevent.schema.json"),
    ));
    for event in &events {
        let json = serde_json::to_value(event).expect("JSON");
        check(&envelope, &json).unwrap_or_else(|errors| panic!("{errors}\n{json:#}"));
        let data = schemas.validator(&file_uri(&repo().join(format!(
            "docs/schemas/events/{}.schema.json",
            event.event_type
        ))));
        check(&data, &event.data).unwrap_or_else(|errors| panic!("{errors}\n{json:#}"));
    }
    let connection = &events[0];
    assert_eq!(
        (
            connection.tenant.as_deref(),
            connection.connection.as_deref()
        ),
        (Some("acme"), Some("conn_quiet"))
    );
    assert_eq!(
        connection.data["silent_for_seconds"],
        now - (week_ago - HOUR)
    );
    assert_eq!(connection.data["threshold_seconds"], 6 * HOUR);
    assert_eq!(connection.data["reconciliation_poll_forced"], true);
    let provider = &events[1];
    assert_eq!(provider.source, "junction/linear");
    assert_eq!(provider.data["received_last_hour"], 2.0);
    assert_eq!(provider.data["baseline_hourly"], 300.0);
    assert_eq!(provider.data["reconciliation_polls_forced"], 1);

    // The reconciliation poll: the job is due now.
    assert_eq!(
        jobs.get(&key).await.expect("get").map(|j| j.due_at),
        Some(now)
    );

    // What the detector keeps sits beside last_event_at, which it left alone; the
    // tombstone was not written over.
    let dynamo = aws_sdk_dynamodb::Client::new(&aws);
    let item = |id: String| {
        let dynamo = dynamo.clone();
        let table = connections_table.clone();
        async move {
            dynamo
                .get_item()
                .table_name(table)
                .key("id", AttributeValue::S(id))
                .consistent_read(true)
                .send()
                .await
                .expect("get")
                .item
                .unwrap_or_default()
        }
    };
    let quiet = item("last-event#conn_quiet".into()).await;
    let number = |item: &std::collections::HashMap<String, AttributeValue>, name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<i64>().ok())
    };
    assert_eq!(number(&quiet, "last_event_at"), Some(week_ago - HOUR));
    assert_eq!(number(&quiet, "tracked_since"), Some(week_ago));
    assert_eq!(number(&quiet, "silent_since"), Some(now));
    assert_eq!(
        quiet
            .get("provider")
            .and_then(|v| v.as_s().ok())
            .map(String::as_str),
        Some("linear")
    );
    let gone = item("last-event#conn_gone".into()).await;
    assert!(gone.contains_key("deleted_at"), "{gone:?}");
    assert!(!gone.contains_key("tracked_since"), "{gone:?}");
    let linear_state = item("provider-silence#linear".into()).await;
    assert_eq!(number(&linear_state, "silent_since"), Some(now));

    // The next run: the same silences, nothing announced again.
    let again = detector.run(now + 60).await.expect("second run");
    assert_eq!(
        (
            again.silent_providers,
            again.providers_announced,
            again.silent_connections,
            again.connections_announced
        ),
        (1, 0, 1, 0),
        "{again:?}"
    );
    assert!(
        received(&aws, &observed, Duration::from_secs(3))
            .await
            .is_empty(),
        "nothing new on the bus"
    );

    // The consumer records a new event: the connection's silence ends.
    last_events
        .record("conn_quiet", now + 100)
        .await
        .expect("last event");
    let after = detector.run(now + 200).await.expect("third run");
    assert_eq!(after.silent_connections, 0, "{after:?}");
    let quiet = item("last-event#conn_quiet".into()).await;
    assert_eq!(number(&quiet, "last_event_at"), Some(now + 100));
    assert!(!quiet.contains_key("silent_since"), "{quiet:?}");
}
