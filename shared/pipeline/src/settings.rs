//! Settings of the event-consumer function, read once at cold start from the environment the template
//! sets; a missing or invalid value fails the start with a message naming the key.

use junction_aws::{
    config::{ConfigError, Env},
    retry::Backoff,
};

use crate::idempotency::IdempotencyPolicy;
use crate::records::FieldPriority;

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

#[cfg(test)]
mod tests {

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        Env::from_pairs(pairs)
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
}
