//! Catalog overlays as `junction status` shows them: every secret under
//! `<prefix>/catalog/`, validated with exactly the rules the functions apply at init, so
//! an operator sees the provider and field at fault before (or after) a deploy fails.

use anyhow::Context as _;
use junction_catalog::{Catalog, EndpointRules};

use crate::stack_catalog::{overlay_ids, overlay_secret_names, read_overlay_secret};

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
    let names = overlay_secret_names(client, prefix).await?;
    let mut statuses = Vec::new();
    for name in names {
        let text = read_overlay_secret(client, &name).await?;
        let result = match base.with_overlay(&name, &text) {
            Ok(_) => Ok(overlay_ids(&text)),
            Err(err) => Err(err.to_string()),
        };
        statuses.push(OverlayStatus { name, result });
    }
    Ok(statuses)
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
