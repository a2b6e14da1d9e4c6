//! silence-detector: runs on an EventBridge Scheduler schedule (every 15 minutes) and
//! looks for webhooks that stopped arriving, per provider and per connection; each
//! silence is announced once (`provider.silent`, `connection.silent`) with a forced
//! reconciliation poll, and every run reports `SilentProviders` and `SilentConnections`.
//! The logic is `junction_health::silence::SilenceDetector`.

use std::sync::Arc;

use junction_aws::config::{load_aws_config, load_catalog, process_env};
use junction_aws::events::EventBridgeBus;
use junction_health::silence::{
    SilenceDetector, SilenceSettings, cloudwatch::CloudWatchReceiptHistory,
    dynamo::DynamoSilenceStore,
};
use junction_polling::DynamoSyncJobStore;
use junction_telemetry as telemetry;
use lambda_runtime::{LambdaEvent, service_fn};

// One invocation at a time: a single-threaded runtime, like the token refresher.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let env = process_env();
    let settings = SilenceSettings::from_env(&env)?;
    let connections_table = env.required("CONNECTIONS_TABLE")?;
    let jobs_table = env.required("SYNC_JOBS_TABLE")?;
    let bus_name = env.required("EVENT_BUS_NAME")?;
    let aws = load_aws_config().await;
    let detector = SilenceDetector::new(
        Arc::new(CloudWatchReceiptHistory::from_config(&aws)),
        Arc::new(DynamoSilenceStore::from_config(&aws, connections_table)),
        Arc::new(DynamoSyncJobStore::from_config(&aws, jobs_table)),
        Arc::new(EventBridgeBus::from_config(&aws, bus_name)),
        load_catalog(&aws, &env).await?,
        settings,
    );
    let detector = &detector;
    lambda_runtime::run(service_fn(
        move |_event: LambdaEvent<serde_json::Value>| async move {
            let now = time::OffsetDateTime::now_utc();
            // Only an unreadable connections table fails the run (Lambda reports the
            // error's message only: the cause is logged).
            let report = detector
                .run(now.unix_timestamp())
                .await
                .inspect_err(|err| {
                    tracing::error!(
                        error = %telemetry::error_chain(err),
                        outcome = "silence_run_failed",
                        "scheduled silence detection"
                    );
                })?;
            println!(
                "{}",
                report.metrics_line(now.unix_timestamp_nanos() / 1_000_000)
            );
            tracing::info!(
                providers_checked = report.providers_checked,
                silent_providers = report.silent_providers,
                providers_announced = report.providers_announced,
                connections_checked = report.connections_checked,
                silent_connections = report.silent_connections,
                connections_announced = report.connections_announced,
                polls_forced = report.polls_forced,
                failures = report.failures,
                outcome = "silence_run",
                "scheduled silence detection"
            );
            Ok::<_, lambda_runtime::Error>(serde_json::json!({
                "silent_providers": report.silent_providers,
                "silent_connections": report.silent_connections,
                "providers_announced": report.providers_announced,
                "connections_announced": report.connections_announced,
                "polls_forced": report.polls_forced,
                "failures": report.failures,
            }))
        },
    ))
    .await
}
