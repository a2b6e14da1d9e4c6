//! `junction contract-test [--provider P]`: the contract check of a deployed or local
//! stack from a laptop, printed as a table.
//!
//! The stack's sandbox connections (its connections table, as the nightly function reads
//! it) are checked through the management API's proxy
//! (`POST /v1/tenants/{tenant}/connections/{id}/proxy`, IAM-authorized: SigV4, or the
//! local stack's key), so each request goes out with the connection's token through
//! the stack's own outbound client; the answers are compared with the recorded schemas
//! here. Without a sandbox connection (or without `--api-url`), the recorded fixtures
//! are checked against the recorded schemas instead. Nothing is published: the table
//! is the answer, and the exit status says whether a contract is broken.

use std::time::Duration;

use anyhow::{Context as _, bail};
use async_trait::async_trait;
use junction_catalog::Catalog;
use junction_cli::connect::{ApiAuth, LOCAL_IAM_HEADER, sigv4_headers, tenant_url};
use junction_contracts::check::{
    CallFailed, Checked, ContractChecker, ContractClient, SandboxConnection, SandboxConnections,
    Verdict, check_fixtures, check_sandboxes,
};
use serde_json::{Value, json};

/// The largest proxied answer read (the proxy's own cap is 4 MiB).
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// Contract requests through the management API's proxy.
#[derive(Debug)]
pub struct ProxyContractClient {
    pub http: reqwest::Client,
    pub api_url: String,
    pub auth: ApiAuth,
}

/// A contract path (`/tasks?limit=1`) as the proxy takes it: the path, and the query as
/// a map (the proxy refuses a `?` in `path`).
pub fn proxy_request(method: &str, path: &str, body: Option<&str>) -> Value {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let query: serde_json::Map<String, Value> = form_urlencoded::parse(query.as_bytes())
        .map(|(name, value)| (name.into_owned(), Value::String(value.into_owned())))
        .collect();
    let mut request = json!({ "method": method, "path": path, "query": query });
    if let Some(body) = body.and_then(|body| serde_json::from_str::<Value>(body).ok()) {
        request["body"] = body;
    }
    request
}

impl ProxyContractClient {
    fn signed(&self, url: &reqwest::Url, body: &[u8]) -> anyhow::Result<reqwest::RequestBuilder> {
        let mut builder = self
            .http
            .post(url.clone())
            .timeout(Duration::from_secs(30))
            .header("content-type", "application/json");
        match &self.auth {
            ApiAuth::LocalIam(key) => builder = builder.header(LOCAL_IAM_HEADER, key),
            ApiAuth::SigV4 {
                credentials,
                region,
            } => {
                for (name, value) in sigv4_headers(url, body, credentials, region)? {
                    builder = builder.header(name, value);
                }
            }
        }
        Ok(builder.body(body.to_vec()))
    }

    async fn proxy(
        &self,
        connection: &SandboxConnection,
        request: &Value,
    ) -> anyhow::Result<Result<Value, CallFailed>> {
        let url = tenant_url(
            &self.api_url,
            &connection.tenant,
            &["connections", &connection.id, "proxy"],
        )?;
        let body = serde_json::to_vec(request)?;
        let mut response = self
            .signed(&url, &body)?
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        let status = response.status().as_u16();
        let from_provider = response
            .headers()
            .get("junction-source")
            .is_some_and(|source| source == "provider");
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.context("reading the answer")? {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Ok(Err(CallFailed("answer_too_large".into())));
            }
            bytes.extend_from_slice(&chunk);
        }
        if !from_provider {
            // Junction's own refusal: its error code says why (never a token).
            let code = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("junction_http_{status}"));
            return Ok(Err(CallFailed(code)));
        }
        if !(200..300).contains(&status) {
            return Ok(Err(CallFailed(format!("http_{status}"))));
        }
        Ok(serde_json::from_slice(&bytes).map_err(|_| CallFailed("not_json".into())))
    }
}

#[async_trait]
impl ContractClient for ProxyContractClient {
    async fn send(
        &self,
        connection: &SandboxConnection,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<Value, CallFailed> {
        match self
            .proxy(connection, &proxy_request(method, path, body))
            .await
        {
            Ok(answer) => answer,
            Err(err) => Err(CallFailed(format!("proxy unreachable: {err:#}"))),
        }
    }
}

/// The results as a table: provider, connection, request, result, details.
pub fn table(results: &[Checked]) -> String {
    let rows: Vec<[String; 5]> = results
        .iter()
        .map(|checked| {
            let details = match &checked.verdict {
                Verdict::Failed(reason) => reason.clone(),
                Verdict::Unrecorded => "no recorded schema for the pinned version".into(),
                other => other.diff().map(ToString::to_string).unwrap_or_default(),
            };
            [
                checked.provider.clone(),
                checked
                    .connection
                    .as_ref()
                    .map_or_else(|| "(fixtures)".to_owned(), |c| c.id.clone()),
                checked.request.clone(),
                checked.verdict.as_str().to_owned(),
                details,
            ]
        })
        .collect();
    let heading = ["PROVIDER", "CONNECTION", "REQUEST", "RESULT", "DETAILS"].map(str::to_owned);
    let mut widths = [0usize; 4];
    for row in std::iter::once(&heading).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in std::iter::once(&heading).chain(&rows) {
        let mut line = String::new();
        for (width, cell) in widths.iter().zip(row) {
            line.push_str(&format!("{cell:<width$}  "));
        }
        line.push_str(&row[4]);
        // A row without details ends at its result, not in padding.
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// Runs the check: the sandbox connections through the proxy, or the fixtures.
pub async fn contract_test(
    catalog: &'static Catalog,
    sandboxes: Option<&dyn SandboxConnections>,
    client: Option<ProxyContractClient>,
    provider: Option<&str>,
) -> anyhow::Result<(Vec<Checked>, bool)> {
    if let Some(provider) = provider
        && junction_catalog::contract_reads(provider).is_empty()
    {
        bail!("{provider} has no contract reads (Junction normalizes none of its resources)");
    }
    if let (Some(sandboxes), Some(client)) = (sandboxes, client) {
        let checker = ContractChecker::new(catalog, std::sync::Arc::new(client));
        let results = check_sandboxes(&checker, sandboxes, provider).await?;
        if !results.is_empty() {
            return Ok((results, true));
        }
    }
    let root = junction_contracts::recorded::repo_root();
    Ok((check_fixtures(catalog, &root, provider), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contract_path_becomes_a_proxy_request_with_its_query() {
        let request = proxy_request("GET", "/crm/v3/objects/deals?limit=1&properties=a,b", None);
        assert_eq!(
            request,
            json!({"method": "GET", "path": "/crm/v3/objects/deals", "query": {"limit": "1", "properties": "a,b"}})
        );
        let graphql = proxy_request("POST", "/graphql", Some(r#"{"query":"query X { a }"}"#));
        assert_eq!(graphql["body"]["query"], "query X { a }");
    }

    #[tokio::test]
    async fn without_a_sandbox_the_fixtures_are_checked_and_tabled() {
        let catalog = Catalog::embedded().expect("catalog");
        let (results, live) = contract_test(catalog, None, None, Some("hubspot"))
            .await
            .expect("checked");
        assert!(!live);
        let text = table(&results);
        assert!(text.starts_with("PROVIDER"), "{text}");
        assert!(text.contains("hubspot   (fixtures)  deal"), "{text}");
        assert!(
            text.lines().all(|line| line == line.trim_end()),
            "no trailing padding: {text:?}"
        );
        assert!(
            contract_test(catalog, None, None, Some("stripe"))
                .await
                .is_err()
        );
    }
}
