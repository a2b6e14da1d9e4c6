//! `junction poll`: run a connection's sync jobs now, the runbook for a provider's missed
//! window (an outage on their side, webhooks that never came). The next scheduler tick
//! (within a minute) hands the jobs to the poll queue.
//!
//! By default each job continues from its cursor: whatever changed since the last
//! successful run is fetched. `--full` clears the cursor, so the job syncs from scratch
//! (the poller's initial backfill): every record comes again, and the record store
//! publishes only those that differ from what it holds (`AlreadyCurrentRecords`).

use anyhow::{Context as _, bail};
use junction_catalog::Catalog;
use junction_oauth::{ConnectionStore, DynamoConnectionStore};
use junction_polling::{DynamoSyncJobStore, job_key, jobs};

use crate::connections::stack_table;

/// What happened to one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forced {
    pub job: String,
    /// `due now`, `due now, from scratch`, `running` (a worker holds it; left alone), or
    /// `no such job`.
    pub result: &'static str,
}

/// Makes the connection's jobs (the catalog's polled models of its provider, or just
/// `model`) due now; `full` also clears their cursors. Each job goes through
/// `junction_polling::jobs::force_poll`, as the silence detector's reconciliation polls do.
pub async fn force_poll(
    aws: &aws_config::SdkConfig,
    stack: &str,
    connection: &str,
    model: Option<&str>,
    full: bool,
    now: i64,
) -> anyhow::Result<Vec<Forced>> {
    let dynamo = aws_sdk_dynamodb::Client::new(aws);
    let models: Vec<String> = match model {
        Some(model) => vec![model.to_owned()],
        None => {
            let table = stack_table(&dynamo, stack, "ConnectionsTable").await?;
            let found = DynamoConnectionStore::from_config(aws, table)
                .get(connection)
                .await
                .context("reading the connection")?
                .with_context(|| format!("no connection {connection}"))?;
            let catalog = Catalog::embedded().context("the built-in catalog")?;
            let polled: Vec<String> = catalog
                .get(&found.provider)
                .and_then(|provider| provider.polling.as_ref())
                .map(|polling| polling.models.iter().map(|m| m.name.clone()).collect())
                .unwrap_or_default();
            if polled.is_empty() {
                bail!(
                    "the built-in catalog polls nothing for {}: name the model (--model)",
                    found.provider
                );
            }
            polled
        }
    };
    let jobs =
        DynamoSyncJobStore::from_config(aws, stack_table(&dynamo, stack, "SyncJobsTable").await?);
    let mut forced = Vec::new();
    for model in models {
        let key = job_key(connection, &model);
        let result = jobs::force_poll(&jobs, &key, now, full)
            .await
            .context("updating the sync job")?
            .as_str();
        forced.push(Forced { job: key, result });
    }
    Ok(forced)
}
