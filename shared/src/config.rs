//! Typed configuration, read once at cold start from the environment the template sets.
//! A missing or invalid value fails the start with a message naming the key.

use std::str::FromStr;

use crate::{
    idempotency::IdempotencyPolicy, records::FieldPriority, retry::Backoff, secrets::CachePolicy,
    webhooks::IngressConfig,
};

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
    // The SDK's default HTTPS client and trust (`tls` says why nothing is pinned).
    loader.load().await
}

/// The provider catalog: the built-in one, with the operator's overlay applied when
/// `CATALOG_OVERLAY_SECRET` names a Secrets Manager secret (read once, at cold start).
///
/// The overlay lives in Secrets Manager because every function already has that client
/// (no extra SDK in the binaries), it is versioned and IAM-scoped, and 64 KB holds
/// dozens of entries. A bad overlay fails the start with the provider and field named.
pub async fn load_catalog<F: Fn(&str) -> Option<String>>(
    aws: &aws_config::SdkConfig,
    env: &Env<F>,
) -> Result<&'static crate::catalog::Catalog, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        key: "CATALOG_OVERLAY_SECRET",
        reason,
    };
    let embedded = crate::catalog::Catalog::embedded()
        .map_err(|err| invalid(format!("built-in catalog: {err}")))?;
    let rules = crate::catalog::EndpointRules::from_setting(
        env.optional(crate::catalog::LOOPBACK_TEST_SETTING)
            .as_deref(),
    );
    let base = if rules == embedded.endpoint_rules() {
        embedded
    } else {
        tracing::warn!(
            setting = crate::catalog::LOOPBACK_TEST_SETTING,
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

/// Lambda's invocation payload limit: a larger body never reaches the function.
const LAMBDA_PAYLOAD_LIMIT: usize = 6 * 1000 * 1000;

/// Settings of the webhook-ingress function.
#[derive(Debug, Clone)]
pub struct WebhookIngressSettings {
    /// `<prefix>` of secret names (`<prefix>/webhooks/<provider>`); key `JUNCTION_PREFIX`.
    pub secret_prefix: String,
    /// Key `INGEST_QUEUE_URL`.
    pub queue_url: String,
    /// Key `PAYLOAD_BUCKET`: where oversized bodies go.
    pub payload_bucket: String,
    /// Keys `MAX_BODY_BYTES`, `MAX_MESSAGE_BYTES`, `PUBLIC_BASE_URL`.
    pub ingress: IngressConfig,
    /// Key `SECRET_CACHE_TTL_SECONDS` (default 300).
    pub secret_cache: CachePolicy,
    /// Keys `LOG_PAYLOADS` (default false), `LOG_REDACT_FIELDS` (comma-separated key
    /// names) and `LOG_REDACT_EMAILS` (default true): when payload logging is on, the
    /// redactor each verified payload passes through before its log line.
    pub payload_log: Option<crate::redact::Redactor>,
}

impl WebhookIngressSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let secret_prefix = env.required("JUNCTION_PREFIX")?;
        let prefix_ok = secret_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+=.@-".contains(&b));
        if !prefix_ok {
            return Err(ConfigError::Invalid {
                key: "JUNCTION_PREFIX",
                reason: "only letters, digits and /_+=.@- are allowed in secret names".into(),
            });
        }
        let defaults = IngressConfig::default();
        let max_body_bytes = env.parse_or("MAX_BODY_BYTES", defaults.max_body_bytes)?;
        if max_body_bytes == 0 || max_body_bytes > LAMBDA_PAYLOAD_LIMIT {
            return Err(ConfigError::Invalid {
                key: "MAX_BODY_BYTES",
                reason: format!(
                    "must be between 1 and {LAMBDA_PAYLOAD_LIMIT} (Lambda's payload limit)"
                ),
            });
        }
        let max_message_bytes = env.parse_or("MAX_MESSAGE_BYTES", defaults.max_message_bytes)?;
        if !(1024..=1024 * 1024).contains(&max_message_bytes) {
            return Err(ConfigError::Invalid {
                key: "MAX_MESSAGE_BYTES",
                reason: "must be between 1024 and 1048576 (SQS's largest message)".into(),
            });
        }
        let public_base_url = env.optional("PUBLIC_BASE_URL");
        if let Some(url) = &public_base_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(ConfigError::Invalid {
                key: "PUBLIC_BASE_URL",
                reason: "must start with https:// (or http:// locally)".into(),
            });
        }
        let ttl_seconds: u32 = env.parse_or("SECRET_CACHE_TTL_SECONDS", 300)?;
        let payload_log = env
            .parse_or("LOG_PAYLOADS", false)?
            .then(|| -> Result<_, ConfigError> {
                let fields: Vec<String> = env
                    .optional("LOG_REDACT_FIELDS")
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .filter(|field| !field.is_empty())
                    .map(str::to_owned)
                    .collect();
                Ok(crate::redact::Redactor::new(
                    &fields,
                    env.parse_or("LOG_REDACT_EMAILS", true)?,
                ))
            })
            .transpose()?;
        Ok(WebhookIngressSettings {
            payload_log,
            secret_prefix,
            queue_url: env.queue_url("INGEST_QUEUE_URL")?,
            payload_bucket: env.required("PAYLOAD_BUCKET")?,
            ingress: IngressConfig {
                max_body_bytes,
                max_message_bytes,
                public_base_url,
            },
            secret_cache: CachePolicy {
                ttl: time::Duration::seconds(i64::from(ttl_seconds)),
                ..CachePolicy::default()
            },
        })
    }
}

/// Settings of the event-consumer function.
#[derive(Debug, Clone)]
pub struct EventConsumerSettings {
    /// Key `INGEST_QUEUE_URL`: the queue whose messages' visibility is set for retries.
    pub queue_url: String,
    /// Key `IDEMPOTENCY_TABLE`.
    pub idempotency_table: String,
    /// Key `RECORDS_TABLE`: the latest normalized record per key.
    pub records_table: String,
    /// Key `EVENT_BUS_NAME`.
    pub event_bus: String,
    /// Key `PAYLOAD_BUCKET`.
    pub payload_bucket: String,
    /// Keys `IDEMPOTENCY_LEASE_SECONDS` (default 60) and `IDEMPOTENCY_TTL_DAYS` (default 7).
    pub idempotency: IdempotencyPolicy,
    /// Keys `RETRY_BASE_SECONDS` (default 5) and `RETRY_CAP_SECONDS` (default 900).
    pub backoff: Backoff,
    /// Key `FIELD_PRIORITY` (default empty): source-of-truth rules such as
    /// `pipeline_item.amount=poll>webhook`; see [`FieldPriority`].
    pub field_priority: FieldPriority,
    /// Key `MAX_RECEIVE_COUNT` (default 5): the ingest queue's redrive
    /// `maxReceiveCount`, so the last receive of a failing message is counted as a
    /// dead-letter arrival.
    pub max_receive_count: u32,
}

impl EventConsumerSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let lease: u32 = env.parse_or("IDEMPOTENCY_LEASE_SECONDS", 60)?;
        let ttl_days: u32 = env.parse_or("IDEMPOTENCY_TTL_DAYS", 7)?;
        if ttl_days == 0 {
            return Err(ConfigError::Invalid {
                key: "IDEMPOTENCY_TTL_DAYS",
                reason: "must be at least 1: providers retry for days".into(),
            });
        }
        let base: u32 = env.parse_or("RETRY_BASE_SECONDS", 5)?;
        let cap: u32 = env.parse_or("RETRY_CAP_SECONDS", 900)?;
        if base == 0 || cap < base || cap > 43_200 {
            return Err(ConfigError::Invalid {
                key: "RETRY_CAP_SECONDS",
                reason: "need 0 < RETRY_BASE_SECONDS <= RETRY_CAP_SECONDS <= 43200 (SQS's longest visibility)".into(),
            });
        }
        let max_receive_count: u32 = env.parse_or(
            "MAX_RECEIVE_COUNT",
            crate::consumer::DEFAULT_MAX_RECEIVE_COUNT,
        )?;
        if max_receive_count == 0 {
            return Err(ConfigError::Invalid {
                key: "MAX_RECEIVE_COUNT",
                reason: "must be at least 1 (the queue's maxReceiveCount)".into(),
            });
        }
        let field_priority = FieldPriority::parse(
            &env.optional("FIELD_PRIORITY").unwrap_or_default(),
        )
        .map_err(|err| ConfigError::Invalid {
            key: "FIELD_PRIORITY",
            reason: err.to_string(),
        })?;
        Ok(EventConsumerSettings {
            field_priority,
            max_receive_count,
            queue_url: env.queue_url("INGEST_QUEUE_URL")?,
            idempotency_table: env.required("IDEMPOTENCY_TABLE")?,
            records_table: env.required("RECORDS_TABLE")?,
            event_bus: env.required("EVENT_BUS_NAME")?,
            payload_bucket: env.required("PAYLOAD_BUCKET")?,
            idempotency: IdempotencyPolicy {
                lease: time::Duration::seconds(i64::from(lease)),
                completed_ttl: time::Duration::days(i64::from(ttl_days)),
            },
            backoff: Backoff {
                base: std::time::Duration::from_secs(u64::from(base)),
                cap: std::time::Duration::from_secs(u64::from(cap)),
            },
        })
    }
}

/// Settings shared by the OAuth functions (`oauth`, `connections`, `token-refresher`).
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    /// Key `JUNCTION_PREFIX`: client credentials live at `<prefix>/oauth/<provider>`.
    pub secret_prefix: String,
    /// Key `CONNECTIONS_TABLE`.
    pub connections_table: String,
    /// Key `TOKEN_KEY_ID`: the KMS key that encrypts each token write's data key.
    pub token_key_id: String,
    /// Key `EVENT_BUS_NAME`: `connection.*` events go there.
    pub event_bus: String,
    /// Key `PUBLIC_BASE_URL`: the API's public base (redirect URIs, reconnect links);
    /// when empty, the oauth function uses the request's own domain.
    pub public_base_url: Option<String>,
}

impl OAuthSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let public_base_url = env
            .optional("PUBLIC_BASE_URL")
            .map(|url| url.trim_end_matches('/').to_owned());
        if let Some(url) = &public_base_url
            && !(url.starts_with("https://") || url.starts_with("http://127.0.0.1"))
        {
            return Err(ConfigError::Invalid {
                key: "PUBLIC_BASE_URL",
                reason: "must start with https:// (or http://127.0.0.1 locally)".into(),
            });
        }
        Ok(OAuthSettings {
            secret_prefix: env.required("JUNCTION_PREFIX")?,
            connections_table: env.required("CONNECTIONS_TABLE")?,
            token_key_id: env.required("TOKEN_KEY_ID")?,
            event_bus: env.required("EVENT_BUS_NAME")?,
            public_base_url,
        })
    }
}

/// Settings of the connect flow (the `oauth` function) besides [`OAuthSettings`].
#[derive(Debug, Clone)]
pub struct ConnectFlowSettings {
    /// Key `OAUTH_STATE_TABLE`: pending authorizations.
    pub state_table: String,
    /// Key `OAUTH_RETURN_TO_ORIGINS`: comma-separated origins (`https://app.example.com`)
    /// that `return_to` may point at.
    pub return_to_origins: Vec<String>,
    /// Key `OAUTH_DEFAULT_RETURN_TO` (optional): where users go when `return_to` is not
    /// given; must be under an allowed origin.
    pub default_return_to: Option<String>,
    /// Key `SYNC_JOBS_TABLE`: a new connection's sync jobs are created there.
    pub sync_jobs_table: String,
    /// Key `CONNECT_SESSIONS_TABLE`: the connect sessions `start` consumes.
    pub sessions_table: String,
}

impl ConnectFlowSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let (return_to_origins, default_return_to) = return_to_settings(env)?;
        Ok(ConnectFlowSettings {
            state_table: env.required("OAUTH_STATE_TABLE")?,
            return_to_origins,
            default_return_to,
            sync_jobs_table: env.required("SYNC_JOBS_TABLE")?,
            sessions_table: env.required("CONNECT_SESSIONS_TABLE")?,
        })
    }
}

/// Settings of the management API's `POST /v1/connect-sessions` (the `connections`
/// function): where sessions are stored and what `return_to` may be, as `start` checks.
#[derive(Debug, Clone)]
pub struct ConnectSessionSettings {
    /// Key `CONNECT_SESSIONS_TABLE`.
    pub sessions_table: String,
    /// Key `OAUTH_RETURN_TO_ORIGINS`, as [`ConnectFlowSettings::return_to_origins`].
    pub return_to_origins: Vec<String>,
    /// Key `OAUTH_DEFAULT_RETURN_TO`, as [`ConnectFlowSettings::default_return_to`].
    pub default_return_to: Option<String>,
}

impl ConnectSessionSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let (return_to_origins, default_return_to) = return_to_settings(env)?;
        Ok(ConnectSessionSettings {
            sessions_table: env.required("CONNECT_SESSIONS_TABLE")?,
            return_to_origins,
            default_return_to,
        })
    }
}

/// `OAUTH_RETURN_TO_ORIGINS` (origins) and `OAUTH_DEFAULT_RETURN_TO` (under one of them).
fn return_to_settings<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
) -> Result<(Vec<String>, Option<String>), ConfigError> {
    let origins_text = env.required("OAUTH_RETURN_TO_ORIGINS")?;
    let mut return_to_origins = Vec::new();
    for origin in origins_text
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
    {
        let parsed = url::Url::parse(origin).map_err(|_| ConfigError::Invalid {
            key: "OAUTH_RETURN_TO_ORIGINS",
            reason: format!("{origin:?} is not a URL"),
        })?;
        let serialized = parsed.origin().ascii_serialization();
        if serialized != origin.trim_end_matches('/') {
            return Err(ConfigError::Invalid {
                key: "OAUTH_RETURN_TO_ORIGINS",
                reason: format!(
                    "{origin:?} is not an origin (scheme://host[:port]); use {serialized:?}"
                ),
            });
        }
        return_to_origins.push(serialized);
    }
    let default_return_to = env.optional("OAUTH_DEFAULT_RETURN_TO");
    if let Some(default) = &default_return_to {
        let origin = url::Url::parse(default)
            .map(|url| url.origin().ascii_serialization())
            .unwrap_or_default();
        if !return_to_origins.contains(&origin) {
            return Err(ConfigError::Invalid {
                key: "OAUTH_DEFAULT_RETURN_TO",
                reason: "must be a URL under one of OAUTH_RETURN_TO_ORIGINS".into(),
            });
        }
    }
    Ok((return_to_origins, default_return_to))
}

/// Settings of the poll functions (`poll-scheduler`, `poll-worker`).
#[derive(Debug, Clone)]
pub struct PollingSettings {
    /// Key `SYNC_JOBS_TABLE`: the sync jobs (cursor, due time, lease).
    pub sync_jobs_table: String,
    /// Key `POLL_QUEUE_URL`: due jobs wait there for a worker.
    pub poll_queue_url: String,
}

impl PollingSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        Ok(PollingSettings {
            sync_jobs_table: env.required("SYNC_JOBS_TABLE")?,
            poll_queue_url: env.queue_url("POLL_QUEUE_URL")?,
        })
    }
}

/// Settings of the `poll-scheduler` besides [`PollingSettings`].
#[derive(Debug, Clone)]
pub struct PollSchedulerSettings {
    /// Key `EVENT_BUS_NAME`: where `connection.stale` is announced.
    pub event_bus: String,
    /// Key `STALE_AFTER_INTERVALS` (default 3): a connection is stale when one of its
    /// sync jobs has not succeeded for this many of its intervals.
    pub stale_after_intervals: u32,
}

impl PollSchedulerSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let stale_after_intervals: u32 = env.parse_or(
            "STALE_AFTER_INTERVALS",
            crate::polling::DEFAULT_STALE_AFTER_INTERVALS,
        )?;
        if stale_after_intervals == 0 {
            return Err(ConfigError::Invalid {
                key: "STALE_AFTER_INTERVALS",
                reason: "must be at least 1".into(),
            });
        }
        Ok(PollSchedulerSettings {
            event_bus: env.required("EVENT_BUS_NAME")?,
            stale_after_intervals,
        })
    }
}

/// Settings of the `poll-worker` besides [`PollingSettings`] and [`OAuthSettings`].
#[derive(Debug, Clone)]
pub struct PollWorkerSettings {
    /// Key `INGEST_QUEUE_URL`: polled records go where webhooks go.
    pub ingest_queue_url: String,
    /// Key `OUTBOUND_STATE_TABLE`: rate-limit buckets and circuit breakers shared by
    /// every instance.
    pub outbound_state_table: String,
}

impl PollWorkerSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        Ok(PollWorkerSettings {
            ingest_queue_url: env.queue_url("INGEST_QUEUE_URL")?,
            outbound_state_table: env.required("OUTBOUND_STATE_TABLE")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Env(move |key: &str| map.get(key).cloned())
    }

    const BASE: [(&str, &str); 3] = [
        ("JUNCTION_PREFIX", "junction"),
        ("INGEST_QUEUE_URL", "http://127.0.0.1:1/000000000000/ingest"),
        ("PAYLOAD_BUCKET", "payloads"),
    ];

    #[test]
    fn defaults_apply() {
        let settings = WebhookIngressSettings::from_env(&env(&BASE)).expect("valid");
        assert_eq!(settings.ingress.max_body_bytes, 5 * 1024 * 1024);
        assert_eq!(settings.ingress.max_message_bytes, 256 * 1024);
        assert_eq!(settings.secret_cache.ttl, time::Duration::minutes(5));
    }

    #[test]
    fn missing_key_is_named() {
        let err = WebhookIngressSettings::from_env(&env(&BASE[..2])).expect_err("missing");
        assert_eq!(
            err.to_string(),
            "configuration key PAYLOAD_BUCKET is required but not set"
        );
    }

    #[test]
    fn invalid_number_is_named() {
        let mut pairs = BASE.to_vec();
        pairs.push(("MAX_BODY_BYTES", "5MB"));
        let err = WebhookIngressSettings::from_env(&env(&pairs)).expect_err("invalid");
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    key: "MAX_BODY_BYTES",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("MAX_BODY_BYTES"));
    }

    #[test]
    fn a_queue_url_that_is_not_one_is_named() {
        for (value, reason) in [
            ("ingest", "relative URL"),
            ("ftp://sqs.example/1/q", "not an http(s) URL"),
            ("https://sqs.us-east-1.amazonaws.com", "no queue path"),
        ] {
            let mut pairs = BASE.to_vec();
            pairs[1] = ("INGEST_QUEUE_URL", value);
            let err = WebhookIngressSettings::from_env(&env(&pairs)).expect_err(value);
            let text = err.to_string();
            assert!(
                text.starts_with("configuration key INGEST_QUEUE_URL is invalid")
                    && text.contains(reason),
                "{text}"
            );
        }
    }

    #[test]
    fn oauth_settings_name_the_bad_key() {
        let base = [
            ("JUNCTION_PREFIX", "junction"),
            ("CONNECTIONS_TABLE", "connections"),
            ("TOKEN_KEY_ID", "alias/junction-tokens"),
            ("EVENT_BUS_NAME", "bus"),
            ("OAUTH_STATE_TABLE", "states"),
            ("SYNC_JOBS_TABLE", "jobs"),
            ("CONNECT_SESSIONS_TABLE", "sessions"),
            (
                "OAUTH_RETURN_TO_ORIGINS",
                "https://app.example.com, http://127.0.0.1:3000",
            ),
        ];
        OAuthSettings::from_env(&env(&base)).expect("valid");
        let flow = ConnectFlowSettings::from_env(&env(&base)).expect("valid");
        assert_eq!(
            flow.return_to_origins,
            ["https://app.example.com", "http://127.0.0.1:3000"]
        );
        let sessions = ConnectSessionSettings::from_env(&env(&base)).expect("valid");
        assert_eq!(sessions.return_to_origins, flow.return_to_origins);
        assert_eq!(sessions.sessions_table, "sessions");
        for (key, value, message) in [
            (
                "OAUTH_RETURN_TO_ORIGINS",
                "https://app.example.com/path",
                "not an origin",
            ),
            ("OAUTH_RETURN_TO_ORIGINS", "app.example.com", "not a URL"),
            (
                "OAUTH_DEFAULT_RETURN_TO",
                "https://evil.example.net/",
                "under one of",
            ),
        ] {
            let mut pairs = base.to_vec();
            pairs.retain(|(k, _)| *k != key);
            pairs.push((key, value));
            let err = ConnectFlowSettings::from_env(&env(&pairs)).expect_err(value);
            let text = err.to_string();
            assert!(text.contains(key) && text.contains(message), "{text}");
        }
        let mut pairs = base.to_vec();
        pairs.push(("PUBLIC_BASE_URL", "http://hub.example.com"));
        let err = OAuthSettings::from_env(&env(&pairs)).expect_err("http");
        assert!(err.to_string().contains("PUBLIC_BASE_URL"));
        let err = OAuthSettings::from_env(&env(&base[1..])).expect_err("missing");
        assert_eq!(
            err.to_string(),
            "configuration key JUNCTION_PREFIX is required but not set"
        );
    }

    #[test]
    fn a_bad_field_priority_rule_is_named() {
        let pairs = [
            ("INGEST_QUEUE_URL", "http://127.0.0.1:1/000000000000/ingest"),
            ("IDEMPOTENCY_TABLE", "idempotency"),
            ("RECORDS_TABLE", "records"),
            ("EVENT_BUS_NAME", "bus"),
            ("PAYLOAD_BUCKET", "payloads"),
            ("FIELD_PRIORITY", "pipeline_item.amont=poll>webhook"),
        ];
        let err = EventConsumerSettings::from_env(&env(&pairs)).expect_err("invalid");
        let text = err.to_string();
        assert!(
            text.contains("FIELD_PRIORITY") && text.contains("unknown field `amont`"),
            "{text}"
        );
        let settings = EventConsumerSettings::from_env(&env(&pairs[..5])).expect("valid");
        assert_eq!(settings.field_priority, FieldPriority::default());
    }

    #[test]
    fn body_limit_above_lambdas_payload_limit_is_refused() {
        let mut pairs = BASE.to_vec();
        pairs.push(("MAX_BODY_BYTES", "7000000"));
        let err = WebhookIngressSettings::from_env(&env(&pairs)).expect_err("invalid");
        assert!(err.to_string().contains("MAX_BODY_BYTES"), "{err}");
    }

    #[test]
    fn public_base_url_must_be_a_url() {
        let mut pairs = BASE.to_vec();
        pairs.push(("PUBLIC_BASE_URL", "hooks.example.com"));
        let err = WebhookIngressSettings::from_env(&env(&pairs)).expect_err("invalid");
        assert!(err.to_string().contains("PUBLIC_BASE_URL"), "{err}");
    }
}
