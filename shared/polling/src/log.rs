//! A poll run's log line and metrics.

use junction_telemetry::{count_if, print_provider_metrics};

/// Logs one poll job run (one line: provider, connection, model, outcome, pages,
/// records, error) and prints its metrics (dimension `Provider`): `PollRuns`,
/// `PollFailures`, `RecordsPolled`.
pub fn record_poll_run(provider: &str, connection: &str, model: &str, outcome: &crate::RunOutcome) {
    use crate::RunOutcome;
    let (name, pages, records, error) = match outcome {
        RunOutcome::Done { pages, records } => ("done", *pages, *records, None),
        RunOutcome::Continue { pages, records } => ("continue", *pages, *records, None),
        RunOutcome::Busy => ("busy", 0, 0, None),
        RunOutcome::LostLease => ("lost_lease", 0, 0, None),
        RunOutcome::Requeue { .. } => ("requeued", 0, 0, None),
        RunOutcome::Failed { error } => ("failed", 0, 0, Some(error.as_str())),
        RunOutcome::Removed => ("removed", 0, 0, None),
    };
    if let Some(error) = error {
        tracing::warn!(
            provider,
            connection,
            model,
            outcome = name,
            error,
            "poll job ran"
        );
    } else {
        tracing::info!(
            provider,
            connection,
            model,
            outcome = name,
            pages,
            records,
            "poll job ran"
        );
    }
    print_provider_metrics(
        provider,
        &[
            ("PollRuns", 1.0, "Count"),
            ("PollFailures", count_if(error.is_some()), "Count"),
            ("RecordsPolled", records as f64, "Count"),
        ],
    );
}
