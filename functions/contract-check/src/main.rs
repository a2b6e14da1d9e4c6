//! contract-check: the optional nightly schedule's Lambda (template parameter
//! `ContractCheckSchedule`, off by default). The logic is `junction_contracts::check`;
//! this binary lists the sandbox connections, sends the contract requests through the
//! outbound client, publishes the announcements and writes the metrics line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use junction_aws::clock::{Clock, SystemClock};
use junction_aws::config::{load_aws_config, load_catalog, process_env};
use junction_aws::events::{EventBridgeBus, EventBus};
use junction_contracts::aws::{DynamoSandboxConnections, OutboundContractClient};
use junction_contracts::check::{ContractChecker, announcements, check_sandboxes, report_lines};
use junction_oauth::aws_vault;
use junction_oauth::settings::OAuthSettings;
use junction_outbound::{DynamoSharedState, OutboundClient};
use junction_telemetry as telemetry;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::{Value, json};

/// Time kept back from the invocation's deadline to publish what was found.
const DEADLINE_MARGIN: Duration = Duration::from_secs(10);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let env = process_env();
    let oauth = OAuthSettings::from_env(&env)?;
    let outbound_state_table = env.required("OUTBOUND_STATE_TABLE")?;
    let aws = load_aws_config().await;
    let catalog = load_catalog(&aws, &env).await?;
    let vault = aws_vault(&aws, catalog, &oauth);
    let clock = Arc::new(SystemClock);
    let client = OutboundClient::new(
        catalog,
        vault.clone(),
        Arc::new(DynamoSharedState::from_config(&aws, outbound_state_table)),
        clock.clone(),
    );
    let sandboxes = DynamoSandboxConnections::from_config(&aws, oauth.connections_table.clone());
    let bus = EventBridgeBus::from_config(&aws, oauth.event_bus.clone());
    let (client, vault, sandboxes, bus, clock) = (&client, &vault, &sandboxes, &bus, &clock);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let left = event
            .context
            .deadline
            .saturating_sub(now_ms())
            .saturating_sub(u64::try_from(DEADLINE_MARGIN.as_millis()).unwrap_or(u64::MAX));
        let deadline = Instant::now() + Duration::from_millis(left);
        let checker = ContractChecker::new(
            catalog,
            Arc::new(OutboundContractClient::new(
                catalog,
                client.clone(),
                vault.clone(),
                deadline,
            )),
        );
        let provider = event.payload.get("provider").and_then(Value::as_str);
        let results = check_sandboxes(&checker, sandboxes, provider).await?;
        telemetry::write_lines(&report_lines(&results));
        let events = announcements(&results, clock.now());
        if let Err(err) = bus.publish(&events).await {
            tracing::error!(error = %telemetry::error_chain(&err), "contract check announcements not published");
            return Err(err.into());
        }
        let failures = results.iter().filter(|c| c.verdict.is_failure()).count();
        Ok::<_, lambda_runtime::Error>(json!({
            "checked": results.len(),
            "failures": failures,
            "announced": events.len(),
        }))
    }))
    .await
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}
