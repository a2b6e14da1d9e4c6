//! The token refresher's log line and metrics.

use junction_telemetry::{count_if, print_provider_metrics};

/// How one token refresh attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// A new token was stored.
    Refreshed,
    /// The provider or the network failed; the refresh is retried.
    TransientFailure,
    /// The provider refused the request (not the grant); the refresh is retried.
    Rejected,
    /// The grant is gone: the connection needs the user to reconnect.
    NeedsReauth,
}

impl RefreshOutcome {
    /// The name in log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshOutcome::Refreshed => "refreshed",
            RefreshOutcome::TransientFailure => "transient_failure",
            RefreshOutcome::Rejected => "rejected",
            RefreshOutcome::NeedsReauth => "needs_reauth",
        }
    }
}

/// Logs one token refresh attempt and prints its metrics (dimension `Provider`):
/// `TokenRefreshes` for a stored new token, `TokenRefreshFailures` otherwise (the
/// outcome is anything but [`RefreshOutcome::Refreshed`]).
pub fn record_token_refresh(provider: &str, outcome: RefreshOutcome) {
    let refreshed = outcome == RefreshOutcome::Refreshed;
    tracing::info!(provider, outcome = outcome.as_str(), "token refresh");
    print_provider_metrics(
        provider,
        &[
            ("TokenRefreshes", count_if(refreshed), "Count"),
            (
                "TokenRefreshFailures",
                if refreshed { 0.0 } else { 1.0 },
                "Count",
            ),
        ],
    );
}
