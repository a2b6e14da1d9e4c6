//! The `[polling]` section of a catalog entry: which models Junction polls for each
//! connection, with which poller and how often.
//!
//! For providers without webhooks the poll is the sync. For providers with webhooks it
//! is the safety net (reconciliation): a slower poll that catches deliveries that never
//! arrived; what the webhooks already delivered is dropped by the record store's
//! conflict rules, so the two paths never double-publish.

use serde::Deserialize;

/// The pollers Junction has, by the name a catalog entry uses (`polling::pollers`
/// builds each; a test checks that every name here builds).
pub const POLLERS: &[&str] = &[
    "gmail-history",
    "hubspot-deals",
    "salesforce-opportunities",
    "asana-tasks",
    "linear-issues",
    "slack-history",
    "microsoft-messages",
];

/// Shortest interval between two runs of a job: polling faster than this spends rate
/// limit a webhook would not.
pub const MIN_INTERVAL_SECONDS: u32 = 60;

/// What is polled for each connection of the provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollingSpec {
    pub models: Vec<PollModel>,
}

/// One model: a sync job per connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollModel {
    /// The job's model name (`deals`, `threads`); part of the job key, so renaming it
    /// starts a new sync from scratch.
    pub name: String,
    /// The poller (one of [`POLLERS`]).
    pub poller: String,
    /// Seconds between the end of one run and the next.
    pub interval_seconds: u32,
}

impl PollingSpec {
    /// Checks what the types cannot; returns `(field, message)` for the first fault.
    pub(crate) fn check(&self) -> Result<(), (String, String)> {
        if self.models.is_empty() {
            return Err(("polling.models".into(), "list at least one model".into()));
        }
        let mut names = std::collections::BTreeSet::new();
        for (index, model) in self.models.iter().enumerate() {
            let field = |name: &str| format!("polling.models[{index}].{name}");
            let name_ok = !model.name.is_empty()
                && model
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !name_ok {
                return Err((field("name"), "must be lowercase a-z, 0-9 and -".into()));
            }
            if !names.insert(model.name.as_str()) {
                return Err((field("name"), format!("`{}` is listed twice", model.name)));
            }
            if !POLLERS.contains(&model.poller.as_str()) {
                return Err((
                    field("poller"),
                    format!(
                        "unknown poller `{}`; known: {}",
                        model.poller,
                        POLLERS.join(", ")
                    ),
                ));
            }
            if model.interval_seconds < MIN_INTERVAL_SECONDS {
                return Err((
                    field("interval_seconds"),
                    format!("must be at least {MIN_INTERVAL_SECONDS}"),
                ));
            }
        }
        Ok(())
    }
}
