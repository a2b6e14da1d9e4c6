//! Typed configuration, read once at cold start from the environment the template sets.
//! A missing or invalid value fails the start with a message naming the key.

use std::str::FromStr;

/// A configuration value is missing or invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("configuration key {key} is required but not set")]
    Missing { key: &'static str },
    #[error("configuration key {key} is invalid: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// Reads keys from a lookup function (the process environment in Lambda, a map in tests).
#[derive(Debug, Clone, Copy)]
pub struct Env<F>(pub F);

impl<F: Fn(&str) -> Option<String>> Env<F> {
    /// A set, non-empty value.
    pub fn optional(&self, key: &'static str) -> Option<String> {
        (self.0)(key).filter(|value| !value.trim().is_empty())
    }

    pub fn required(&self, key: &'static str) -> Result<String, ConfigError> {
        self.optional(key).ok_or(ConfigError::Missing { key })
    }

    /// A required SQS queue URL (`https://sqs.{region}.amazonaws.com/{account}/{name}`):
    /// an absolute http(s) URL with a host and a path, so that a queue name or ARN
    /// given by mistake fails the start rather than every send.
    pub fn queue_url(&self, key: &'static str) -> Result<String, ConfigError> {
        let text = self.required(key)?.trim().to_owned();
        let invalid = |reason: &str| ConfigError::Invalid {
            key,
            reason: format!("{text:?}: {reason}"),
        };
        let url = url::Url::parse(&text).map_err(|err| invalid(&err.to_string()))?;
        if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
            return Err(invalid("not an http(s) URL with a host"));
        }
        if url.path().trim_matches('/').is_empty() {
            return Err(invalid("no queue path (/{account}/{name})"));
        }
        Ok(text)
    }

    /// The parsed value, or `default` when unset.
    pub fn parse_or<T: FromStr>(&self, key: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.optional(key) {
            None => Ok(default),
            Some(text) => text
                .trim()
                .parse()
                .map_err(|err: T::Err| ConfigError::Invalid {
                    key,
                    reason: format!("{text:?}: {err}"),
                }),
        }
    }
}

impl Env<Box<dyn Fn(&str) -> Option<String>>> {
    /// An environment of the given pairs, for tests.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Env(Box::new(move |key: &str| map.get(key).cloned()))
    }
}

/// The process environment.
pub fn process_env() -> Env<fn(&str) -> Option<String>> {
    Env(|key| std::env::var(key).ok())
}

/// Timeouts on every AWS call: a provider is waiting on the ingress, so no call may hang
/// (a hung call would outlive the function and the provider would see a timeout instead
/// of the 5xx that makes it retry).
pub fn aws_timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(1))
        .operation_attempt_timeout(std::time::Duration::from_secs(2))
        .operation_timeout(std::time::Duration::from_secs(5))
        .build()
}

/// AWS configuration from the environment (region, credentials, `AWS_ENDPOINT_URL`)
/// with [`aws_timeouts`]; built once at cold start.
pub async fn load_aws_config() -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(aws_timeouts())
        // Every attempt is bounded by `aws_timeouts`, so the stalled-stream monitor
        // (a throughput check wrapped around each request and response body) would only
        // repeat that bound, at a cost on every call (infra/bench).
        .stalled_stream_protection(
            aws_config::stalled_stream_protection::StalledStreamProtectionConfig::disabled(),
        );
    // On Lambda the credentials and the region are always in the environment: naming
    // the environment as their source spares building the default provider chains
    // (profile files, SSO, web identity, container and IMDS clients) at every cold
    // start. Elsewhere (the CLI on a laptop) the default chains stay.
    let set = |name: &str| std::env::var_os(name).is_some_and(|value| !value.is_empty());
    if set("AWS_ACCESS_KEY_ID") && set("AWS_SECRET_ACCESS_KEY") {
        loader = loader.credentials_provider(
            aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
        );
    }
    if let Some(region) = std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()) {
        loader = loader.region(aws_config::Region::new(region));
    }
    // The SDK's HTTPS client on the process's one root store (`tls` says why).
    loader
        .http_client(crate::tls::aws_http_client())
        .load()
        .await
}

/// The provider catalog: the built-in one, with the operator's overlay applied when
/// `CATALOG_OVERLAY_SECRET` names a Secrets Manager secret (read once, at cold start).
///
/// The overlay lives in Secrets Manager because every function already has that client
/// (no extra SDK in the binaries), it is versioned and IAM-scoped, and 64 KB holds
/// dozens of entries. A bad overlay fails the start with the provider and field named.
#[cfg(feature = "secretsmanager")]
pub async fn load_catalog<F: Fn(&str) -> Option<String>>(
    aws: &aws_config::SdkConfig,
    env: &Env<F>,
) -> Result<&'static junction_catalog::Catalog, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        key: "CATALOG_OVERLAY_SECRET",
        reason,
    };
    let embedded = junction_catalog::Catalog::embedded()
        .map_err(|err| invalid(format!("built-in catalog: {err}")))?;
    let rules = junction_catalog::EndpointRules::from_setting(
        env.optional(junction_catalog::LOOPBACK_TEST_SETTING)
            .as_deref(),
    );
    let base = if rules == embedded.endpoint_rules() {
        embedded
    } else {
        tracing::warn!(
            setting = junction_catalog::LOOPBACK_TEST_SETTING,
            "loopback http endpoints allowed: a test or local-stack setting, never for a deploy"
        );
        Box::leak(Box::new(embedded.with_endpoint_rules(rules)))
    };
    let Some(name) = env.optional("CATALOG_OVERLAY_SECRET") else {
        return Ok(base);
    };
    use crate::secrets::SecretSource;
    let text = crate::secrets::SecretsManagerSource::from_config(aws)
        .secret_string(&name)
        .await
        .map_err(|err| invalid(format!("secret {name} could not be read: {err}")))?
        .ok_or_else(|| invalid(format!("secret {name} does not exist")))?;
    let catalog = base
        .with_overlay(&name, &text)
        .map_err(|err| invalid(err.to_string()))?;
    tracing::info!(overlay = %name, providers = catalog.providers().count(), "catalog overlay applied");
    Ok(Box::leak(Box::new(catalog)))
}
