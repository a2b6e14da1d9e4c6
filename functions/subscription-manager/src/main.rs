//! subscription-manager: the target of two EventBridge rules on Junction's own bus.
//!
//! - `connection.subscription_pending`, published by the connect flow's setup (the
//!   oauth function, which never opens tokens): the connection's subscription is
//!   created now (`SubscriptionManager::ensure`), not at the next renewal run.
//! - The events the consumer publishes for a provider's lifecycle notifications
//!   (Microsoft Graph: `provider_event.occurred` from `junction/microsoft` with no event
//!   type, a delivery without a `changeType`; items without a `lifecycleEvent` are
//!   skipped). The delivery was verified by the ingress (each item's `clientState`)
//!   before it reached the bus. Each notification is handled as the catalog's
//!   `[subscription.lifecycle]` says: reauthorize, recreate, or force a reconciliation
//!   poll (`SubscriptionManager::handle_lifecycle`).

use std::time::{Duration, Instant, SystemTime};

use junction_aws::config::{load_aws_config, load_catalog, process_env};
use junction_aws::events::CloudEvent;
use junction_oauth::aws_vault;
use junction_oauth::settings::OAuthSettings;
use junction_subscriptions::{SUBSCRIPTION_PENDING, SubscriptionSettings, aws_manager};
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
        if cloud_event.event_type == SUBSCRIPTION_PENDING {
            let connection = cloud_event.subject.unwrap_or_default();
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |since| i64::try_from(since.as_secs()).unwrap_or(i64::MAX));
            // A store failure fails the invocation (EventBridge retries it); a provider
            // failure is recorded on the subscription for the renewal run to retry.
            let outcome = manager
                .ensure(&provider, &connection, now, deadline)
                .await
                .inspect_err(|err| {
                    tracing::error!(
                        provider = %provider,
                        connection = %connection,
                        error = %telemetry::error_chain(err),
                        outcome = "subscription_create_failed",
                        "pending subscription"
                    );
                })?;
            tracing::info!(provider = %provider, connection = %connection, result = ?outcome, outcome = "subscription_ensured", "pending subscription");
            return Ok(serde_json::json!({ "ensured": format!("{outcome:?}") }));
        }
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
