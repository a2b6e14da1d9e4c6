//! subscription-manager: the target of an EventBridge rule on Junction's own bus that
//! matches the events the consumer publishes for a provider's lifecycle notifications
//! (Microsoft Graph: `provider_event.occurred` from `junction/microsoft`, a delivery
//! without a `changeType`; items without a `lifecycleEvent` are skipped). The delivery was verified by the ingress (each item's
//! `clientState`) before it reached the bus. Each notification is handled as the
//! catalog's `[subscription.lifecycle]` says: reauthorize, recreate, or force a
//! reconciliation poll (`SubscriptionManager::handle_lifecycle`).

use std::time::{Duration, Instant, SystemTime};

use junction_aws::config::{load_aws_config, load_catalog, process_env};
use junction_aws::events::CloudEvent;
use junction_oauth::aws_vault;
use junction_oauth::settings::OAuthSettings;
use junction_subscriptions::{SubscriptionSettings, aws_manager};
use junction_telemetry as telemetry;
use lambda_runtime::{LambdaEvent, service_fn};

/// Time left at the deadline when no further request is started.
const FINISH_MARGIN: Duration = Duration::from_secs(5);

/// The part of EventBridge's envelope this function reads: the CloudEvent as `detail`.
#[derive(Debug, serde::Deserialize)]
struct BusEvent {
    detail: CloudEvent,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let env = process_env();
    let settings = OAuthSettings::from_env(&env)?;
    let aws = load_aws_config().await;
    let catalog = load_catalog(&aws, &env).await?;
    let manager = aws_manager(
        &aws,
        aws_vault(&aws, catalog, &settings),
        env.required("OUTBOUND_STATE_TABLE")?,
        Some(env.required("SYNC_JOBS_TABLE")?),
        settings.event_bus.clone(),
        SubscriptionSettings::from_env(&env, catalog)?,
    );
    let manager = &manager;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<BusEvent>| async move {
        let deadline = Instant::now()
            + event
                .context
                .deadline()
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .saturating_sub(FINISH_MARGIN);
        let cloud_event = event.payload.detail;
        let provider = cloud_event
            .source
            .strip_prefix("junction/")
            .unwrap_or_default()
            .to_owned();
        // The provider's body as received (`data.raw` of a provider event). An event
        // that travelled by claim check carries no data: lifecycle bodies are small.
        let Some(raw) = cloud_event.data.get("raw") else {
            tracing::warn!(provider = %provider, event = %cloud_event.id, outcome = "lifecycle_without_body", "no raw body on the event");
            return Ok::<_, lambda_runtime::Error>(serde_json::json!({ "handled": 0 }));
        };
        // A store failure fails the invocation: EventBridge retries it (its retry
        // policy), and the error's chain is logged.
        let outcomes = manager
            .handle_lifecycle(&provider, raw, deadline)
            .await
            .inspect_err(|err| {
                tracing::error!(
                    provider = %provider,
                    error = %telemetry::error_chain(err),
                    outcome = "lifecycle_failed",
                    "lifecycle notification"
                );
            })?;
        Ok(serde_json::json!({ "handled": outcomes.len() }))
    }))
    .await
}
