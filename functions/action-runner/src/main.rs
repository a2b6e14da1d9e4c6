//! action-runner: the actions queue's Lambda (SQS event source with
//! `ReportBatchItemFailures`). Each message is an action (a proxy request queued by
//! `POST /v1/tenants/{tenant}/connections/{id}/actions`); it runs through the outbound
//! client, and its outcome goes to the bus as `action.succeeded` or `action.failed`. A
//! transient failure makes the message visible again after a backoff (its receive
//! count says which attempt this is) and is reported as a batch item failure. The logic
//! is `junction_outbound::actions::ActionRunner`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use junction_aws::clock::SystemClock;
use junction_aws::config::{load_aws_config, load_catalog, process_env};
use junction_aws::events::EventBridgeBus;
use junction_aws::queue::SqsRetryScheduler;
use junction_oauth::aws_vault;
use junction_oauth::settings::OAuthSettings;
use junction_outbound::actions::{ActionError, ActionRunner, DynamoActionStatusStore};
use junction_outbound::idempotency::DynamoProxyIdempotencyStore;
use junction_outbound::{DynamoSharedState, OutboundClient};
use junction_telemetry as telemetry;
use lambda_runtime::{LambdaEvent, service_fn};

/// Kept back from the Lambda deadline: recording the outcome and announcing it.
const DEADLINE_MARGIN: Duration = Duration::from_secs(5);

// One invocation at a time: a single-threaded runtime spares the worker threads, their
// wake-ups and their stacks (measured in infra/bench).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let env = process_env();
    let oauth = OAuthSettings::from_env(&env)?;
    let aws = load_aws_config().await;
    let catalog = load_catalog(&aws, &env).await?;
    let vault = aws_vault(&aws, catalog, &oauth);
    let clock = Arc::new(SystemClock);
    let client = OutboundClient::new(
        catalog,
        vault.clone(),
        Arc::new(DynamoSharedState::from_config(
            &aws,
            env.required("OUTBOUND_STATE_TABLE")?,
        )),
        clock.clone(),
    );
    let runner = ActionRunner {
        client,
        vault,
        store: Arc::new(DynamoProxyIdempotencyStore::from_config(
            &aws,
            env.required("PROXY_IDEMPOTENCY_TABLE")?,
        )),
        clock,
        bus: Arc::new(EventBridgeBus::from_config(&aws, oauth.event_bus.clone())),
        retries: Arc::new(SqsRetryScheduler::from_config(
            &aws,
            env.required("ACTIONS_QUEUE_URL")?,
        )),
        statuses: Arc::new(DynamoActionStatusStore::from_config(
            &aws,
            env.required("ACTION_STATUS_TABLE")?,
        )),
    };
    let runner = &runner;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline = deadline(&event.context);
        let mut response = SqsBatchResponse::default();
        for record in event.payload.records {
            let id = record.message_id.clone().unwrap_or_default();
            let receive_count = record
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            let receipt = record.receipt_handle.clone().unwrap_or_default();
            let body = record.body.unwrap_or_default();
            match runner.handle(&body, receive_count, &receipt, deadline).await {
                // The run logged its own outcome line.
                Ok(_) => {}
                Err(err) => {
                    // A retry was scheduled and logged; anything else is worth an error.
                    if !matches!(err, ActionError::Retry { .. }) {
                        let permanent = matches!(err, ActionError::BadMessage(_));
                        tracing::error!(message = %id, error = %err, permanent, outcome = "action_not_run", "action not run; the message stays on the queue (its DLQ after the redrive limit)");
                    }
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
