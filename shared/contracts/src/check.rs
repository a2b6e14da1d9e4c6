//! The contract check: for a sandbox connection, the provider's connection test request
//! and one read per normalized resource ([`junction_catalog::contract_reads`]), each
//! record compared with its recorded schema ([`crate::recorded`]).
//!
//! A record whose fields were removed or changed in type is a broken contract (the
//! adapter reads fields by path); one with fields added only is a changed schema (the
//! adapters ignore what they do not read, but the recorded schema is out of date). A
//! request that fails is a broken contract too. [`announcements`] turns the results into
//! `provider.contract_failed` and `provider.schema_changed` CloudEvents, and
//! [`report_line`] into the metrics the template's alarm watches (`ContractFailures`).
//!
//! The requests go through a port ([`ContractClient`]): the outbound client with the
//! connection's token in the Lambda (module `outbound`), the management API's proxy from
//! the CLI, recorded fixtures offline. Which connections are sandboxes is another port
//! ([`SandboxConnections`]). Nothing here knows AWS.

use std::sync::Arc;

use async_trait::async_trait;
use junction_aws::clock::rfc3339_millis;
use junction_aws::events::CloudEvent;
use junction_catalog::{Catalog, ContractRead};
use junction_pipeline::drift::{Fingerprint, SCHEMA_CHANGED, Shape, ShapeDiff, ShapeKey};
use junction_telemetry::{Metric, OutcomeLine};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::recorded::{FIXTURES, RecordedSchema, recorded};

/// The CloudEvent type of a broken contract.
pub const CONTRACT_FAILED: &str = "provider.contract_failed";

/// The metric counting broken contracts (namespace `Junction`, dimension `Provider`).
pub const CONTRACT_FAILURES_METRIC: &str = "ContractFailures";

/// The request name of the connection test in results.
pub const TEST_REQUEST: &str = "test";

/// A request could not be answered with JSON: a short reason (`http_404`, `timeout`,
/// `not_json`), never the provider's body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CallFailed(pub String);

/// A sandbox connection to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConnection {
    pub id: String,
    pub tenant: String,
    pub provider: String,
}

/// Sends a contract request for a connection and reads the answer as JSON.
#[async_trait]
pub trait ContractClient: Send + Sync + std::fmt::Debug {
    /// `path` is relative to the provider's API base; a non-2xx answer is an error.
    async fn send(
        &self,
        connection: &SandboxConnection,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Value, CallFailed>;
}

/// The sandbox listing failed.
#[derive(Debug, thiserror::Error)]
#[error("sandbox connections could not be listed")]
pub struct ListError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// The connections marked as sandboxes (`sandbox: true` on their connect session).
#[async_trait]
pub trait SandboxConnections: Send + Sync + std::fmt::Debug {
    async fn list(&self) -> Result<Vec<SandboxConnection>, ListError>;
}

/// Sandboxes in memory (tests).
#[derive(Debug, Default)]
pub struct InMemorySandboxes(pub Vec<SandboxConnection>);

#[async_trait]
impl SandboxConnections for InMemorySandboxes {
    async fn list(&self) -> Result<Vec<SandboxConnection>, ListError> {
        Ok(self.0.clone())
    }
}

/// What one request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The record has the recorded shape (or, for the test request, it answered).
    Passed,
    /// Fields were added, none removed or changed: the recorded schema is behind.
    Changed(ShapeDiff),
    /// Fields were removed or changed in type: an adapter may break.
    Broken(ShapeDiff),
    /// The request failed, or the answer has no record where the read says.
    Failed(String),
    /// No recorded schema for this provider's pinned version and resource.
    Unrecorded,
}

impl Verdict {
    /// The table's and the log's word for it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Passed => "ok",
            Verdict::Changed(_) => "changed",
            Verdict::Broken(_) => "broken",
            Verdict::Failed(_) => "failed",
            Verdict::Unrecorded => "unrecorded",
        }
    }

    /// A broken contract: announced as `provider.contract_failed`, counted.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Verdict::Broken(_) | Verdict::Failed(_) | Verdict::Unrecorded
        )
    }

    /// The diff, when the record's shape differs from the recorded one.
    pub fn diff(&self) -> Option<&ShapeDiff> {
        match self {
            Verdict::Changed(diff) | Verdict::Broken(diff) => Some(diff),
            _ => None,
        }
    }
}

/// One request's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub provider: String,
    /// The sandbox connection, or none for a check of the recorded fixtures.
    pub connection: Option<SandboxConnection>,
    /// [`TEST_REQUEST`] or the resource read.
    pub request: String,
    pub api_version: Option<String>,
    pub verdict: Verdict,
    /// The recorded schema's fingerprint, and the record's.
    pub recorded: Option<Fingerprint>,
    pub fingerprint: Option<Fingerprint>,
}

/// Compares `record` with the recorded schema.
pub fn compare(schema: &RecordedSchema, record: &Value) -> (Verdict, Fingerprint) {
    let shape = Shape::of(record);
    let fingerprint = shape.fingerprint();
    let diff = schema.shape.diff(&shape);
    let verdict = if diff.is_empty() {
        Verdict::Passed
    } else if diff.removed.is_empty() && diff.changed.is_empty() {
        Verdict::Changed(diff)
    } else {
        Verdict::Broken(diff)
    };
    (verdict, fingerprint)
}

/// Runs contract requests and compares their answers.
#[derive(Debug, Clone)]
pub struct ContractChecker {
    catalog: &'static Catalog,
    client: Arc<dyn ContractClient>,
}

impl ContractChecker {
    pub fn new(catalog: &'static Catalog, client: Arc<dyn ContractClient>) -> Self {
        ContractChecker { catalog, client }
    }

    fn pinned(&self, provider: &str) -> Option<String> {
        self.catalog
            .get(provider)
            .and_then(|p| p.api_version.clone())
    }

    /// The connection test request, then each contract read, for one sandbox connection.
    pub async fn check_connection(&self, connection: &SandboxConnection) -> Vec<Checked> {
        let provider = connection.provider.as_str();
        let mut results = Vec::new();
        let test = self
            .catalog
            .get(provider)
            .and_then(|p| p.api.as_ref())
            .and_then(|api| api.test_request.as_ref());
        if let Some(test) = test {
            let verdict = match self
                .client
                .send(connection, test.method.as_str(), &test.path, None)
                .await
            {
                Ok(_) => Verdict::Passed,
                Err(failed) => Verdict::Failed(failed.0),
            };
            results.push(self.checked(connection, TEST_REQUEST, verdict, None, None));
        }
        for read in junction_catalog::contract_reads(provider) {
            results.push(self.check_read(connection, read).await);
        }
        results
    }

    async fn check_read(&self, connection: &SandboxConnection, read: &ContractRead) -> Checked {
        let provider = connection.provider.as_str();
        let Some(schema) = recorded(self.catalog, provider, read.resource) else {
            return self.checked(connection, read.resource, Verdict::Unrecorded, None, None);
        };
        let recorded_print = Some(schema.fingerprint.clone());
        let answer = match self.answer(connection, read).await {
            Ok(answer) => answer,
            Err(failed) => {
                return self.checked(
                    connection,
                    read.resource,
                    Verdict::Failed(failed.0),
                    recorded_print,
                    None,
                );
            }
        };
        let Some(record) = answer.pointer(read.record) else {
            let reason = format!("no_record_at {}", read.record);
            return self.checked(
                connection,
                read.resource,
                Verdict::Failed(reason),
                recorded_print,
                None,
            );
        };
        let (verdict, fingerprint) = compare(&schema, record);
        self.checked(
            connection,
            read.resource,
            verdict,
            recorded_print,
            Some(fingerprint),
        )
    }

    /// The read's answer: its first step for the id, then the read itself.
    async fn answer(
        &self,
        connection: &SandboxConnection,
        read: &ContractRead,
    ) -> Result<Value, CallFailed> {
        let version = self.pinned(&connection.provider).unwrap_or_default();
        let mut path = read.path.replace("{api_version}", &version);
        if let Some(first) = read.first {
            let listed = self
                .client
                .send(connection, first.method, first.path, None)
                .await?;
            let id = listed
                .pointer(first.id)
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
                .ok_or_else(|| CallFailed(format!("no_id_at {}", first.id)))?;
            // Ids are the provider's own; kept to what a path segment or query value
            // may hold without escaping.
            if !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(CallFailed("unexpected_id".into()));
            }
            path = path.replace("{id}", id);
        }
        self.client
            .send(connection, read.method, &path, read.body)
            .await
    }

    fn checked(
        &self,
        connection: &SandboxConnection,
        request: &str,
        verdict: Verdict,
        recorded: Option<Fingerprint>,
        fingerprint: Option<Fingerprint>,
    ) -> Checked {
        Checked {
            provider: connection.provider.clone(),
            connection: Some(connection.clone()),
            request: request.to_owned(),
            api_version: self.pinned(&connection.provider),
            verdict,
            recorded,
            fingerprint,
        }
    }
}

/// Checks each sandbox connection (of `provider`, when given) in turn.
pub async fn check_sandboxes(
    checker: &ContractChecker,
    sandboxes: &dyn SandboxConnections,
    provider: Option<&str>,
) -> Result<Vec<Checked>, ListError> {
    let mut results = Vec::new();
    for connection in sandboxes.list().await? {
        if provider.is_some_and(|p| p != connection.provider) {
            continue;
        }
        results.extend(checker.check_connection(&connection).await);
    }
    Ok(results)
}

/// Compares the recorded fixtures (`tests/fixtures`, [`FIXTURES`]) of each normalized
/// resource (of `provider`, when given) with the recorded schemas: what
/// `junction contract-test` checks where no sandbox connection exists.
pub fn check_fixtures(
    catalog: &'static Catalog,
    root: &std::path::Path,
    provider: Option<&str>,
) -> Vec<Checked> {
    let mut results = Vec::new();
    for (id, resource, _, _) in FIXTURES {
        if provider.is_some_and(|p| p != *id) {
            continue;
        }
        let pinned = catalog.get(id).and_then(|p| p.api_version.clone());
        let mut checked = Checked {
            provider: (*id).to_owned(),
            connection: None,
            request: (*resource).to_owned(),
            api_version: pinned,
            verdict: Verdict::Unrecorded,
            recorded: None,
            fingerprint: None,
        };
        if let Some(schema) = recorded(catalog, id, resource) {
            checked.recorded = Some(schema.fingerprint.clone());
            match crate::recorded::record_from_fixture(catalog, root, id, resource) {
                Ok(fixture) => {
                    let diff = schema.shape.diff(&fixture.shape);
                    checked.fingerprint = Some(fixture.fingerprint);
                    checked.verdict = if diff.is_empty() {
                        Verdict::Passed
                    } else if diff.removed.is_empty() && diff.changed.is_empty() {
                        Verdict::Changed(diff)
                    } else {
                        Verdict::Broken(diff)
                    };
                }
                Err(err) => checked.verdict = Verdict::Failed(err.to_string()),
            }
        }
        results.push(checked);
    }
    results
}

/// The events of a run: `provider.contract_failed` per broken or failed request, and
/// `provider.schema_changed` (origin `contract_check`) per record whose shape differs
/// from the recorded one, both stamped with the sandbox connection's tenant and id. A
/// contract failure's id is new each day (one announcement per nightly run); a schema
/// change's derives from the shape (and the tenant), so the same change found again
/// deduplicates, as the consumer's does.
pub fn announcements(results: &[Checked], now: OffsetDateTime) -> Vec<CloudEvent> {
    let day = now.date().to_string();
    let time = rfc3339_millis(now);
    let mut events = Vec::new();
    for checked in results {
        let connection = checked.connection.as_ref();
        let connection_id = connection.map(|c| c.id.as_str());
        let diff = checked.verdict.diff();
        let lists = diff
            .map(ShapeDiff::to_json)
            .unwrap_or_else(|| json!({ "added": [], "removed": [], "changed": [] }));
        if checked.verdict.is_failure() {
            let reason = match &checked.verdict {
                Verdict::Failed(reason) => Some(reason.clone()),
                Verdict::Unrecorded => Some("no_recorded_schema".to_owned()),
                _ => None,
            };
            let mut data = json!({
                "provider": checked.provider,
                "connection_id": connection_id,
                "request": checked.request,
                "api_version": checked.api_version,
                "reason": reason,
                "recorded_fingerprint": checked.recorded.as_ref().map(|f| f.0.clone()),
                "fingerprint": checked.fingerprint.as_ref().map(|f| f.0.clone()),
            });
            merge(&mut data, &lists);
            let mut event = CloudEvent::new(
                &checked.provider,
                &format!("contract:{day}"),
                &format!(
                    "{}:{}",
                    connection_id.unwrap_or("fixtures"),
                    checked.request
                ),
                CONTRACT_FAILED.to_owned(),
                connection_id.map(str::to_owned),
                time.clone(),
                data,
            );
            if let Some(connection) = connection {
                event = event.stamped(&connection.tenant, &connection.id);
            }
            events.push(event);
        }
        if let (Some(diff), Some(fingerprint), Some(recorded)) =
            (diff, &checked.fingerprint, &checked.recorded)
        {
            let key = ShapeKey::for_contract(&checked.provider, &checked.request);
            let mut data = json!({
                "provider": checked.provider,
                "subject": key.subject,
                "event_type": null,
                "resource": checked.request,
                "api_version": checked.api_version,
                "origin": "contract_check",
                "fingerprint": fingerprint.0,
                "previous_fingerprint": recorded.0,
            });
            merge(&mut data, &diff.to_json());
            let mut event = CloudEvent::new(
                &checked.provider,
                &fingerprint.0,
                &format!("{SCHEMA_CHANGED}:{}", key.subject),
                SCHEMA_CHANGED.to_owned(),
                connection_id.map(str::to_owned),
                time.clone(),
                data,
            );
            event.providereventid = format!("contract:{day}");
            // The sandbox that showed the shape, as on the contract failure: the
            // operator's lead to the account (stamping keeps the id per shape and tenant).
            if let Some(connection) = connection {
                event = event.stamped(&connection.tenant, &connection.id);
            }
            events.push(event);
        }
    }
    events
}

fn merge(data: &mut Value, lists: &Value) {
    if let (Value::Object(data), Value::Object(lists)) = (data, lists) {
        data.extend(lists.clone());
    }
}

/// One provider's results as a log line with its metrics: `ContractChecks` (requests
/// run) and `ContractFailures` (broken or failed, the alarm's metric, zero included so
/// the alarm sees each run).
pub fn report_line(provider: &str, results: &[&Checked]) -> Vec<u8> {
    let failures = results.iter().filter(|c| c.verdict.is_failure()).count();
    let mut line = OutcomeLine::new(
        if failures > 0 { "ERROR" } else { "INFO" },
        "contract check",
    );
    line = line.texts(
        "results",
        results
            .iter()
            .map(|c| format!("{}={}", c.request, c.verdict.as_str()))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
    );
    let diffs: Vec<String> = results
        .iter()
        .filter_map(|c| {
            let detail = match &c.verdict {
                Verdict::Failed(reason) => reason.clone(),
                other => other.diff()?.to_string(),
            };
            Some(format!("{}: {detail}", c.request))
        })
        .collect();
    if !diffs.is_empty() {
        line = line.texts("details", diffs.iter().map(String::as_str));
    }
    line.with_metrics(
        provider,
        &[
            Metric::one("ContractChecks", results.len() as f64, "Count"),
            Metric::one(CONTRACT_FAILURES_METRIC, failures as f64, "Count"),
        ],
    )
}

/// Every provider's [`report_line`].
pub fn report_lines(results: &[Checked]) -> Vec<u8> {
    let mut providers: Vec<&str> = results.iter().map(|c| c.provider.as_str()).collect();
    providers.sort_unstable();
    providers.dedup();
    providers
        .into_iter()
        .flat_map(|provider| {
            let mine: Vec<&Checked> = results.iter().filter(|c| c.provider == provider).collect();
            report_line(provider, &mine)
        })
        .collect()
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
