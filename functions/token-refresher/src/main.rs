//! token-refresher: runs on an EventBridge Scheduler schedule and refreshes every
//! active connection whose token is due within the look-ahead, one refresh at a time per
//! connection (the vault's lease), each isolated from the others' failures. The logic is
//! `TokenVault::refresh_due`. Then, with what is left of the run, it creates and renews
//! the providers' push subscriptions that are due (`SubscriptionManager::renew_due`).

use std::time::Duration;

use junction_aws::config::{load_aws_config, load_catalog, process_env};
use junction_oauth::aws_vault;
use junction_oauth::settings::OAuthSettings;
use junction_subscriptions::{SubscriptionSettings, aws_manager};
use junction_telemetry as telemetry;
use lambda_runtime::{LambdaEvent, service_fn};

/// Refresh what expires before the next run (every 5 minutes) plus a margin.
const LOOK_AHEAD: Duration = Duration::from_secs(10 * 60);

/// Time left at the invocation's deadline when the sweep stops starting refreshes: one
/// refresh started just before must still finish (token call, key service, the write
/// and its retries) rather than be cut between the token call and the write.
const FINISH_MARGIN: Duration = Duration::from_secs(40);

// One invocation at a time: a single-threaded runtime spares the worker threads, their
// wake-ups and their stacks (measured in infra/bench).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let env = process_env();
    let settings = OAuthSettings::from_env(&env)?;
    let aws = load_aws_config().await;
    let catalog = load_catalog(&aws, &env).await?;
    let vault = aws_vault(&aws, catalog, &settings);
    let subscriptions = aws_manager(
        &aws,
        vault.clone(),
        env.required("OUTBOUND_STATE_TABLE")?,
        Some(env.required("SYNC_JOBS_TABLE")?),
        settings.event_bus.clone(),
        SubscriptionSettings::from_env(&env, catalog)?,
    );
    let (vault, subscriptions) = (&vault, &subscriptions);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            // Both sweeps stop starting work at the same instant.
            let deadline = std::time::Instant::now()
                + event
                    .context
                    .deadline()
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default()
                    .saturating_sub(FINISH_MARGIN);
            // A failed sweep (the connection store unreadable) fails the invocation,
            // which Lambda reports by the error's message only: the cause is logged.
            let report = vault
                .refresh_due(
                    LOOK_AHEAD,
                    deadline.saturating_duration_since(std::time::Instant::now()),
                )
                .await
                .inspect_err(|err| {
                    tracing::error!(
                        error = %telemetry::error_chain(err),
                        outcome = "refresh_run_failed",
                        "scheduled token refresh"
                    );
                })?;
            tracing::info!(
                due = report.due,
                refreshed = report.refreshed,
                needs_reauth = report.needs_reauth,
                failed = report.failed,
                skipped = report.skipped,
                deferred = report.deferred,
                outcome = "refresh_run",
                "scheduled token refresh"
            );
            // Subscriptions after tokens: a renewal needs a live token. Their own
            // failures are recorded per subscription; only the store failing is logged
            // here, and it does not undo the refreshes.
            let renewals = subscriptions
                .renew_due(deadline)
                .await
                .inspect_err(|err| {
                    tracing::error!(
                        error = %telemetry::error_chain(err),
                        outcome = "subscription_run_failed",
                        "scheduled subscription renewal"
                    );
                })
                .unwrap_or_default();
            tracing::info!(
                due = renewals.due,
                renewed = renewals.renewed,
                created = renewals.created,
                failed = renewals.failed,
                expired = renewals.expired,
                deferred = renewals.deferred,
                outcome = "subscription_run",
                "scheduled subscription renewal"
            );
            Ok::<_, lambda_runtime::Error>(serde_json::json!({
                "subscriptions": {
                    "due": renewals.due,
                    "renewed": renewals.renewed,
                    "created": renewals.created,
                    "failed": renewals.failed,
                    "expired": renewals.expired,
                    "deferred": renewals.deferred,
                },
                "due": report.due,
                "refreshed": report.refreshed,
                "needs_reauth": report.needs_reauth,
                "failed": report.failed,
                "skipped": report.skipped,
                "deferred": report.deferred,
            }))
        },
    ))
    .await
}
