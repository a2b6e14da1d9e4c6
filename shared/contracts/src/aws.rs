//! The contract check's adapters for the Lambda: the sandbox connections, read from the
//! connections table, and contract requests sent through the outbound client with each
//! connection's token (its breaker, rate limit, one refresh on a 401 and error rules,
//! like any provider call).

use std::collections::HashMap;
use std::time::Instant;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use junction_catalog::Catalog;
use junction_oauth::TokenVault;
use junction_outbound::{Call, CallError, OutboundClient};
use serde_json::Value;

use crate::check::{CallFailed, ContractClient, ListError, SandboxConnection, SandboxConnections};

/// What marks a sandbox in a stored connection's document (`sandbox: true` on its
/// connect session, kept on the connection).
pub const SANDBOX_MARK: &str = "\"sandbox\":true";

/// The connections table, scanned for sandbox connections: a nightly scan of a table of
/// connections (a few kilobytes each) costs a read unit per 4 KB scanned, cents a month
/// for thousands of connections, and needs no index for a flag few connections carry.
#[derive(Debug, Clone)]
pub struct DynamoSandboxConnections {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoSandboxConnections {
    pub fn from_config(aws: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        DynamoSandboxConnections {
            client: aws_sdk_dynamodb::Client::new(aws),
            table: table.into(),
        }
    }
}

fn sandbox_of(item: &HashMap<String, AttributeValue>) -> Option<SandboxConnection> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let doc: Value = serde_json::from_str(&text("doc")?).ok()?;
    if doc.get("sandbox") != Some(&Value::Bool(true)) {
        return None;
    }
    Some(SandboxConnection {
        id: text("id")?,
        tenant: text("tenant")?,
        provider: doc.get("provider")?.as_str()?.to_owned(),
    })
}

#[async_trait]
impl SandboxConnections for DynamoSandboxConnections {
    async fn list(&self) -> Result<Vec<SandboxConnection>, ListError> {
        let mut found = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let output = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("contains(#doc, :mark)")
                .projection_expression("#id, #tenant, #doc")
                .expression_attribute_names("#doc", "doc")
                .expression_attribute_names("#id", "id")
                .expression_attribute_names("#tenant", "tenant")
                .expression_attribute_values(":mark", AttributeValue::S(SANDBOX_MARK.into()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|err| ListError(Box::new(aws_sdk_dynamodb::Error::from(err))))?;
            found.extend(output.items().iter().filter_map(sandbox_of));
            match output.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => return Ok(found),
            }
        }
    }
}

/// Contract requests through the outbound client, until `deadline`.
#[derive(Debug, Clone)]
pub struct OutboundContractClient {
    catalog: &'static Catalog,
    client: OutboundClient,
    vault: TokenVault,
    deadline: Instant,
}

impl OutboundContractClient {
    pub fn new(
        catalog: &'static Catalog,
        client: OutboundClient,
        vault: TokenVault,
        deadline: Instant,
    ) -> Self {
        OutboundContractClient {
            catalog,
            client,
            vault,
            deadline,
        }
    }
}

/// The reason of a failed call, short and free of the provider's body.
fn reason(err: &CallError) -> String {
    let text = match err {
        CallError::Failed(failure) => failure.code.clone(),
        CallError::NeedsReauth(_) => "needs_reauth".to_owned(),
        CallError::Requeue { reason, .. } => reason.to_string(),
        other => other.to_string(),
    };
    text.chars().take(120).collect()
}

#[async_trait]
impl ContractClient for OutboundContractClient {
    async fn send(
        &self,
        connection: &SandboxConnection,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Value, CallFailed> {
        let stored = self
            .vault
            .connection(&connection.id)
            .await
            .map_err(|_| CallFailed("connection_unavailable".into()))?;
        let base =
            junction_polling::pollers::base_url(self.catalog, &connection.provider, &stored.params)
                .map_err(CallFailed)?;
        let url = format!("{base}{path}");
        let method = match method {
            "POST" => reqwest::Method::POST,
            _ => reqwest::Method::GET,
        };
        let call = Call {
            provider: &connection.provider,
            connection: &connection.id,
            operation: "contract.check",
            deadline: self.deadline,
            accept: &[],
        };
        let response = self
            .client
            .send(call, |http, token| {
                let request = http
                    .request(method.clone(), &url)
                    .bearer_auth(token.value.expose());
                match body {
                    Some(body) => request
                        .header("content-type", "application/json")
                        .body(body.to_owned()),
                    None => request,
                }
            })
            .await
            .map_err(|err| CallFailed(reason(&err)))?;
        serde_json::from_slice(&response.body).map_err(|_| CallFailed("not_json".into()))
    }
}
