//! The catalog the stack's functions run with, so `send-webhook` signs a provider the
//! way the stack's ingress verifies it: the built-in catalog, plus the catalog overlay
//! that adds or replaces the provider.
//!
//! The functions read one overlay, the secret their `CatalogOverlaySecret` parameter
//! names (`infra/dev --catalog-overlay FILE` stores the file as
//! `<prefix>/catalog/local-overlay` and names it). The CLI takes, in this order:
//!
//! 1. `--catalog-overlay FILE` (env `JUNCTION_CATALOG_OVERLAY`, which `infra/dev` reads
//!    too, so one export serves both);
//! 2. `--catalog-overlay-secret NAME` (env `JUNCTION_CATALOG_OVERLAY_SECRET`);
//! 3. otherwise the stack's own: the secret under `<prefix>/catalog/` that defines the
//!    provider. Only the overlay defining a provider changes that provider's entry, so
//!    which of several overlays the stack names matters only when more than one
//!    defines it; then the CLI asks which.
//!
//! Overlays are validated exactly as the functions validate them, with the endpoint
//! rules they run with (loopback HTTP allowed against the local stack's emulator).

use std::path::{Path, PathBuf};

use junction_catalog::{Catalog, CatalogError, EndpointRules};

/// Where the overlay comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlaySource {
    /// A TOML file of `[[provider]]` entries.
    File(PathBuf),
    /// A Secrets Manager secret holding one.
    Secret(String),
    /// The secret under `<prefix>/catalog/` that defines the provider, if any.
    Stack { prefix: String },
}

/// The catalog to sign with, and the overlay it came from.
#[derive(Debug, Clone)]
pub struct StackCatalog {
    pub catalog: Catalog,
    /// The overlay applied (a file path or secret name); `None` for the built-in
    /// catalog alone.
    pub overlay: Option<String>,
    /// The providers that overlay adds or replaces.
    pub overlay_ids: Vec<String>,
}

impl StackCatalog {
    /// The built-in catalog alone, under `rules`.
    pub fn built_in(rules: EndpointRules) -> Result<StackCatalog, StackCatalogError> {
        Ok(StackCatalog {
            catalog: built_in(rules)?,
            overlay: None,
            overlay_ids: Vec::new(),
        })
    }

    /// The overlay's name when it defines `provider`.
    pub fn overlay_defining(&self, provider: &str) -> Option<&str> {
        self.overlay
            .as_deref()
            .filter(|_| self.overlay_ids.iter().any(|id| id == provider))
    }
}

/// Why the stack's catalog could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum StackCatalogError {
    #[error("the built-in catalog is invalid")]
    BuiltIn(#[source] CatalogError),
    #[error("reading the catalog overlay {path}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the catalog overlay secret {name}")]
    ReadSecret {
        name: String,
        #[source]
        source: Box<aws_sdk_secretsmanager::Error>,
    },
    #[error("listing the catalog overlays under {prefix}/catalog/")]
    List {
        prefix: String,
        #[source]
        source: Box<aws_sdk_secretsmanager::Error>,
    },
    /// The overlay is invalid; the functions using it fail at init with the same error.
    #[error("the catalog overlay is invalid (functions using it fail at init)")]
    Invalid(#[source] CatalogError),
    #[error(
        "several catalog overlays define {provider} ({}): name the one the stack uses \
         with --catalog-overlay-secret",
        names.join(", ")
    )]
    Ambiguous {
        provider: String,
        names: Vec<String>,
    },
}

/// Every secret name under `<prefix>/catalog/`, sorted.
pub async fn overlay_secret_names(
    client: &aws_sdk_secretsmanager::Client,
    prefix: &str,
) -> Result<Vec<String>, StackCatalogError> {
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
        let page = page.map_err(|err| StackCatalogError::List {
            prefix: prefix.to_owned(),
            source: Box::new(err.into()),
        })?;
        names.extend(
            page.secret_list()
                .iter()
                .filter_map(|secret| secret.name().map(str::to_owned))
                // The name filter is a prefix match on words; keep exact prefixes only.
                .filter(|name| name.starts_with(&wanted)),
        );
    }
    names.sort();
    Ok(names)
}

/// The text of the overlay secret `name`.
pub async fn read_overlay_secret(
    client: &aws_sdk_secretsmanager::Client,
    name: &str,
) -> Result<String, StackCatalogError> {
    let output = client
        .get_secret_value()
        .secret_id(name)
        .send()
        .await
        .map_err(|err| StackCatalogError::ReadSecret {
            name: name.to_owned(),
            source: Box::new(err.into()),
        })?;
    Ok(output.secret_string.unwrap_or_default())
}

/// The `id`s of an overlay document's `[[provider]]` entries (none when it does not
/// parse: validation reports that).
pub fn overlay_ids(text: &str) -> Vec<String> {
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

/// The built-in catalog with `text` (named `source` in errors) applied under `rules`.
pub fn with_overlay(
    rules: EndpointRules,
    source: &str,
    text: &str,
) -> Result<StackCatalog, StackCatalogError> {
    let catalog = built_in(rules)?
        .with_overlay(source, text)
        .map_err(StackCatalogError::Invalid)?;
    Ok(StackCatalog {
        catalog,
        overlay: Some(source.to_owned()),
        overlay_ids: overlay_ids(text),
    })
}

fn built_in(rules: EndpointRules) -> Result<Catalog, StackCatalogError> {
    Ok(Catalog::embedded()
        .map_err(StackCatalogError::BuiltIn)?
        .with_endpoint_rules(rules))
}

/// The catalog `providers` are used with: the built-in one with the overlay `source`
/// names (see the module docs for the order), under `rules`. From the stack's own
/// overlays, the one defining any of `providers` is taken; two such are ambiguous.
pub async fn stack_catalog(
    client: &aws_sdk_secretsmanager::Client,
    source: &OverlaySource,
    rules: EndpointRules,
    providers: &[&str],
) -> Result<StackCatalog, StackCatalogError> {
    match source {
        OverlaySource::File(path) => {
            let text = read_file(path)?;
            with_overlay(rules, &path.display().to_string(), &text)
        }
        OverlaySource::Secret(name) => {
            let text = read_overlay_secret(client, name).await?;
            with_overlay(rules, name, &text)
        }
        OverlaySource::Stack { prefix } => {
            let mut defining = Vec::new();
            for name in overlay_secret_names(client, prefix).await? {
                let text = read_overlay_secret(client, &name).await?;
                if overlay_ids(&text)
                    .iter()
                    .any(|id| providers.contains(&id.as_str()))
                {
                    defining.push((name, text));
                }
            }
            match defining.as_slice() {
                [] => StackCatalog::built_in(rules),
                [(name, text)] => with_overlay(rules, name, text),
                many => Err(StackCatalogError::Ambiguous {
                    provider: providers.join(", "),
                    names: many.iter().map(|(name, _)| name.clone()).collect(),
                }),
            }
        }
    }
}

fn read_file(path: &Path) -> Result<String, StackCatalogError> {
    std::fs::read_to_string(path).map_err(|source| StackCatalogError::ReadFile {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BILLING: &str = r#"[[provider]]
id = "billing"
name = "In-house billing service"
docs = "https://wiki.example.com/billing"
[provider.webhook]
event_id = { header = "X-Billing-Delivery" }
[provider.webhook.verification]
scheme = "hmac-sha512"
signature = { format = "single", header = "X-Billing-Signature", prefix = "sha512=", encoding = "hex" }
signed = ["timestamp", { literal = "." }, "body"]
timestamp = { from = { header = "X-Billing-Timestamp" }, unit = "seconds", max_age_seconds = 300, max_future_seconds = 60 }
"#;

    #[test]
    fn an_overlay_file_adds_its_provider_to_the_built_in_catalog() {
        let dir = std::env::temp_dir().join(format!("junction-cli-overlay-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("overlay.toml");
        std::fs::write(&path, BILLING).expect("written");
        let text = read_file(&path).expect("read");
        let loaded = with_overlay(EndpointRules::Public, "overlay.toml", &text).expect("valid");
        std::fs::remove_dir_all(&dir).ok();
        assert!(loaded.catalog.get("billing").is_some());
        assert!(loaded.catalog.get("github").is_some(), "built-ins stay");
        assert_eq!(loaded.overlay_defining("billing"), Some("overlay.toml"));
        assert_eq!(loaded.overlay_defining("github"), None);
        assert_eq!(overlay_ids(BILLING), ["billing"]);
    }

    #[test]
    fn an_invalid_overlay_names_itself_the_provider_and_the_field() {
        let broken = BILLING.replace("hmac-sha512", "hmac-sha384");
        let err = with_overlay(EndpointRules::Public, "overlay.toml", &broken)
            .expect_err("an unknown scheme");
        let chain = format!("{:#}", anyhow::Error::new(err));
        assert!(
            chain.contains("overlay.toml")
                && chain.contains("(billing)")
                && chain.contains("hmac-sha384"),
            "{chain}"
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = read_file(Path::new("no/such/overlay.toml")).expect_err("missing");
        assert!(err.to_string().contains("no/such/overlay.toml"), "{err}");
    }
}
