//! poll-scheduler: runs on an EventBridge Scheduler schedule (every minute) and hands
//! every due sync job to the poll queue, spread over a jitter window, announcing
//! `connection.stale` for jobs that have not succeeded for too long. The logic is
//! `junction_polling::PollScheduler`.

use std::sync::Arc;

use junction_aws::clock::SystemClock;
use junction_aws::config::{load_aws_config, process_env};
use junction_aws::events::EventBridgeBus;
use junction_aws::queue::SqsEventQueue;
use junction_polling::settings::{PollSchedulerSettings, PollingSettings};
use junction_polling::{DynamoSyncJobStore, PollScheduler};
use junction_telemetry as telemetry;
use lambda_runtime::{LambdaEvent, service_fn};

// One invocation at a time: a single-threaded runtime spares the worker threads, their
// wake-ups and their stacks (measured in infra/bench).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let settings = PollingSettings::from_env(&process_env())?;
    let scheduler_settings = PollSchedulerSettings::from_env(&process_env())?;
    let aws = load_aws_config().await;
    let scheduler = PollScheduler::new(
        Arc::new(DynamoSyncJobStore::from_config(
            &aws,
            settings.sync_jobs_table,
        )),
        Arc::new(SqsEventQueue::from_config(&aws, settings.poll_queue_url)?),
        Arc::new(SystemClock),
    )
    .with_stale_events(
        Arc::new(EventBridgeBus::from_config(
            &aws,
            scheduler_settings.event_bus,
        )),
        scheduler_settings.stale_after_intervals,
    );
    let scheduler = &scheduler;
    lambda_runtime::run(service_fn(
        move |_event: LambdaEvent<serde_json::Value>| async move {
            let report = scheduler.dispatch().await?;
            tracing::info!(
                due = report.due,
                dispatched = report.dispatched,
                running = report.running,
                raced = report.raced,
                failed = report.failed,
                stale = report.stale,
                outcome = "poll_dispatch",
                "due sync jobs handed out"
            );
            Ok::<_, lambda_runtime::Error>(serde_json::to_value(&report)?)
        },
    ))
    .await
}
