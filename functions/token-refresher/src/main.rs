//! token-refresher: runs on an EventBridge Scheduler schedule and refreshes every
//! active connection whose token is due within the look-ahead, one refresh at a time per
//! connection (the vault's lease). The logic is `TokenVault::refresh_due`.

use std::time::Duration;

use lambda_runtime::{LambdaEvent, service_fn};
use shared::{
    config::{OAuthSettings, load_aws_config, load_catalog, process_env},
    oauth::aws_vault,
    telemetry,
};

/// Refresh what expires before the next run (every 5 minutes) plus a margin.
const LOOK_AHEAD: Duration = Duration::from_secs(10 * 60);

// One invocation at a time: a single-threaded runtime spares the worker threads, their
// wake-ups and their stacks (measured in infra/bench).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let settings = OAuthSettings::from_env(&process_env())?;
    let aws = load_aws_config().await;
    let vault = aws_vault(&aws, load_catalog(&aws, &process_env()).await?, &settings);
    let vault = &vault;
    lambda_runtime::run(service_fn(
        move |_event: LambdaEvent<serde_json::Value>| async move {
            let report = vault.refresh_due(LOOK_AHEAD).await?;
            tracing::info!(
                due = report.due,
                refreshed = report.refreshed,
                needs_reauth = report.needs_reauth,
                failed = report.failed,
                outcome = "refresh_run",
                "scheduled token refresh"
            );
            Ok::<_, lambda_runtime::Error>(serde_json::json!({
                "due": report.due,
                "refreshed": report.refreshed,
                "needs_reauth": report.needs_reauth,
                "failed": report.failed,
            }))
        },
    ))
    .await
}
