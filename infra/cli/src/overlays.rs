//! Catalog overlays as `junction status` shows them: every secret under
//! `<prefix>/catalog/`, validated with exactly the rules the functions apply at init, so
//! an operator sees the provider and field at fault before (or after) a deploy fails.

use anyhow::Context as _;
use shared::catalog::{Catalog, EndpointRules};

/// One overlay secret and what validating it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayStatus {
    /// The secret's name (what `CatalogOverlaySecret` names).
    pub name: String,
    /// The provider ids it adds or replaces, or the validation error (naming the
    /// provider and field).
    pub result: Result<Vec<String>, String>,
}

/// Reads and validates every overlay secret under `<prefix>/catalog/`, with the
/// endpoint rules the stack's functions apply: `rules` is
/// [`EndpointRules::LoopbackHttpForTests`] for the local stack (whose functions run
/// with that setting) and [`EndpointRules::Public`] for a deployed one.
pub async fn overlay_statuses(
    client: &aws_sdk_secretsmanager::Client,
    prefix: &str,
    rules: EndpointRules,
) -> anyhow::Result<Vec<OverlayStatus>> {
    let base = Catalog::embedded()
        .context("the built-in catalog")?
        .with_endpoint_rules(rules);
    let wanted = format!("{prefix}/catalog/");
    let mut names = Vec::new();
    let mut pages = client
        .list_secrets()
        .filters(
            aws_sdk_secretsmanager::types::Filter::builder()
                .key(aws_sdk_secretsmanager::types::FilterNameStringType::Name)
                .values(&wanted)
                .build(),
        )
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.context("listing catalog overlay secrets")?;
        names.extend(
            page.secret_list()
                .iter()
                .filter_map(|secret| secret.name().map(str::to_owned))
                // The name filter is a prefix match on words; keep exact prefixes only.
                .filter(|name| name.starts_with(&wanted)),
        );
    }
    names.sort();
    let mut statuses = Vec::new();
    for name in names {
        let text = client
            .get_secret_value()
            .secret_id(&name)
            .send()
            .await
            .with_context(|| format!("reading {name}"))?
            .secret_string
            .unwrap_or_default();
        let result = match base.with_overlay(&name, &text) {
            Ok(_) => Ok(overlay_ids(&text)),
            Err(err) => Err(err.to_string()),
        };
        statuses.push(OverlayStatus { name, result });
    }
    Ok(statuses)
}

/// The `id`s of an overlay document's `[[provider]]` entries.
fn overlay_ids(text: &str) -> Vec<String> {
    text.parse::<toml::Table>()
        .ok()
        .and_then(|table| table.get("provider").and_then(|p| p.as_array()).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|entry| {
            entry
                .get("id")
                .and_then(|id| id.as_str())
                .map(str::to_owned)
        })
        .collect()
}

/// The lines `junction status` prints for the overlays.
pub fn overlay_table(statuses: &[OverlayStatus]) -> String {
    if statuses.is_empty() {
        return "catalog overlays: none\n".to_owned();
    }
    let mut out = String::from("catalog overlays:\n");
    for status in statuses {
        match &status.result {
            Ok(ids) => out.push_str(&format!(
                "  {}  valid  providers: {}\n",
                status.name,
                ids.join(", ")
            )),
            Err(error) => out.push_str(&format!("  {}  INVALID  {error}\n", status.name)),
        }
    }
    out
}
