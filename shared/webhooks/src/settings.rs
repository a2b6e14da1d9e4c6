//! Settings of the webhook-ingress function, read once at cold start from the environment the template
//! sets; a missing or invalid value fails the start with a message naming the key.

use junction_aws::{
    config::{ConfigError, Env},
    secrets::CachePolicy,
};

use crate::IngressConfig;

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
    pub payload_log: Option<junction_telemetry::redact::Redactor>,
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
                Ok(junction_telemetry::redact::Redactor::new(
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

#[cfg(test)]
mod tests {

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        Env::from_pairs(pairs)
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
