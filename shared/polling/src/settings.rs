//! Settings of the poll functions (`poll-scheduler`, `poll-worker`), read once at cold start from the environment the template
//! sets; a missing or invalid value fails the start with a message naming the key.

use junction_aws::config::{ConfigError, Env};

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
            crate::DEFAULT_STALE_AFTER_INTERVALS,
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
