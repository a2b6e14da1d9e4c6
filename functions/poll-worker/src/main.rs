//! poll-worker: the poll queue's Lambda (SQS event source with
//! `ReportBatchItemFailures`, batch size 1). Each message names a sync job; the job runs
//! from its stored cursor, page by page, into the ingest queue, until it catches up or
//! the invocation's time runs short (then it goes back on the poll queue). The logic is
//! `junction_polling::PollRunner`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use junction_aws::clock::SystemClock;
use junction_aws::config::{load_aws_config, load_catalog, process_env};
use junction_aws::queue::SqsEventQueue;
use junction_oauth::aws_vault;
use junction_oauth::settings::OAuthSettings;
use junction_outbound::{DynamoSharedState, OutboundClient};
use junction_polling::settings::{PollWorkerSettings, PollingSettings};
use junction_polling::{DynamoSyncJobStore, PollRunError, PollRunner, PollWorker};
use junction_telemetry as telemetry;
use lambda_runtime::{LambdaEvent, service_fn};

/// Kept back from the Lambda deadline: the cursor write and the lease release after the
/// last page.
const DEADLINE_MARGIN: Duration = Duration::from_secs(5);

// One invocation at a time: a single-threaded runtime spares the worker threads, their
// wake-ups and their stacks (measured in infra/bench).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let env = process_env();
    let oauth = OAuthSettings::from_env(&env)?;
    let polling = PollingSettings::from_env(&env)?;
    let settings = PollWorkerSettings::from_env(&env)?;
    let aws = load_aws_config().await;
    let catalog = load_catalog(&aws, &env).await?;
    let vault = aws_vault(&aws, catalog, &oauth);
    let clock = Arc::new(SystemClock);
    let client = OutboundClient::new(
        catalog,
        vault.clone(),
        Arc::new(DynamoSharedState::from_config(
            &aws,
            settings.outbound_state_table,
        )),
        clock.clone(),
    );
    let worker = PollWorker::new(
        Arc::new(DynamoSyncJobStore::from_config(
            &aws,
            polling.sync_jobs_table,
        )),
        Arc::new(SqsEventQueue::from_config(&aws, settings.ingest_queue_url)?),
        clock,
        Some(vault),
    );
    let runner = PollRunner::new(
        worker,
        catalog,
        client,
        Arc::new(SqsEventQueue::from_config(&aws, polling.poll_queue_url)?),
    );
    let runner = &runner;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline = deadline(&event.context);
        let mut response = SqsBatchResponse::default();
        for record in event.payload.records {
            let id = record.message_id.clone().unwrap_or_default();
            let body = record.body.unwrap_or_default();
            match runner.handle(&body, deadline).await {
                // The run logged its own outcome line.
                Ok(_) => {}
                Err(err) => {
                    let permanent = matches!(err, PollRunError::BadMessage(_));
                    tracing::error!(message = %id, error = %err, permanent, outcome = "poll_failed", "poll job not run; the message stays on the queue (its DLQ after the redrive limit)");
                    let mut failure = BatchItemFailure::default();
                    failure.item_identifier = id;
                    response.batch_item_failures.push(failure);
                }
            }
        }
        Ok::<_, std::convert::Infallible>(response)
    }))
    .await
}

/// When the invocation must be done (the Lambda deadline less the margin), as an
/// `Instant`.
fn deadline(context: &lambda_runtime::Context) -> Instant {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default();
    let left = Duration::from_millis(context.deadline.saturating_sub(now_ms));
    Instant::now() + left.saturating_sub(DEADLINE_MARGIN)
}
