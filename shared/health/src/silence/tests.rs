//! The two rules on synthetic series, and the detector over in-memory ports.
//!
//! "Normal" here, as in docs/operations.md: a provider delivering about 300 webhooks an
//! hour by day, 5 an hour between 00:00 and 06:00 UTC (a quiet night), and 8 an hour on
//! Saturdays and Sundays (a quiet weekend), for four weeks; a connection that hears
//! from its provider every 15 minutes from 08:00 to 23:00 and never at night (a nightly
//! gap of 9 hours).

use std::sync::Arc;

use junction_aws::config::Env;
use junction_aws::events::{CloudEvent, InMemoryEventBus};
use junction_catalog::Catalog;
use junction_polling::{InMemorySyncJobStore, SyncJobStore, ensure_jobs, job_key};

use super::*;

/// Monday 2026-11-02 00:00 UTC.
const MONDAY: i64 = 1_793_577_600;
const DAY: i64 = 24 * HOUR;
const MINUTE: i64 = 60;

fn catalog() -> &'static Catalog {
    Catalog::embedded().expect("catalog")
}

/// The hour of day and the day of the week (0 = Monday) of `at`.
fn hour_and_weekday(at: i64) -> (i64, i64) {
    let since = at - MONDAY;
    (
        since.rem_euclid(DAY) / HOUR,
        since.div_euclid(DAY).rem_euclid(7),
    )
}

/// A normal provider's hourly rate: 300 by day, 5 at night, 8 all weekend.
fn normal_rate(hour_start: i64) -> f64 {
    let (hour, weekday) = hour_and_weekday(hour_start);
    if weekday >= 5 {
        8.0
    } else if hour < 6 {
        5.0
    } else {
        300.0
    }
}

/// [`SERIES_HOURS`] hours ending at `end` (an hour boundary) by `rate`, starting only
/// `days_of_data` days back (zero before).
fn series(end: i64, days_of_data: i64, rate: impl Fn(i64) -> f64) -> Vec<f64> {
    (0..SERIES_HOURS)
        .map(|index| {
            let hour_start = end - HOUR * (SERIES_HOURS - index) as i64;
            if end - hour_start > days_of_data * DAY {
                0.0
            } else {
                rate(hour_start)
            }
        })
        .collect()
}

/// Four weeks of normal receipts, then `last_hour` in the hour ending at `end`.
fn normal_then(end: i64, last_hour: f64) -> Vec<f64> {
    let mut hourly = series(end, 29, normal_rate);
    if let Some(last) = hourly.last_mut() {
        *last = last_hour;
    }
    hourly
}

struct World {
    receipts: Arc<InMemoryReceiptHistory>,
    store: Arc<InMemorySilenceStore>,
    jobs: Arc<InMemorySyncJobStore>,
    bus: Arc<InMemoryEventBus>,
    detector: SilenceDetector,
}

fn world() -> World {
    let receipts = Arc::new(InMemoryReceiptHistory::default());
    let store = Arc::new(InMemorySilenceStore::default());
    let jobs = Arc::new(InMemorySyncJobStore::default());
    let bus = Arc::new(InMemoryEventBus::default());
    let detector = SilenceDetector::new(
        receipts.clone(),
        store.clone(),
        jobs.clone(),
        bus.clone(),
        catalog(),
        SilenceSettings::default(),
    );
    World {
        receipts,
        store,
        jobs,
        bus,
        detector,
    }
}

fn of_type(events: &[CloudEvent], kind: &str) -> Vec<CloudEvent> {
    events
        .iter()
        .filter(|event| event.event_type == kind)
        .cloned()
        .collect()
}

// --- The provider rule -------------------------------------------------------------

#[test]
fn a_normal_quiet_night_is_not_silent() {
    // Wednesday 03:00: the last hour (02:00-03:00) is a night hour.
    let end = MONDAY + 4 * 7 * DAY + 2 * DAY + 3 * HOUR;
    for last_hour in [5.0, 1.0, 0.0] {
        let verdict = provider_verdict(&normal_then(end, last_hour), &SilenceSettings::default());
        assert_eq!(
            verdict,
            ProviderVerdict::Undecided {
                current: last_hour,
                baseline: Some(5.0),
                weeks: 4
            },
            "a night hour's baseline is under the minimum of 20"
        );
    }
}

#[test]
fn a_normal_weekend_is_not_silent() {
    // Saturday noon and Sunday 23:00.
    for end in [
        MONDAY + 4 * 7 * DAY + 5 * DAY + 12 * HOUR,
        MONDAY + 4 * 7 * DAY + 6 * DAY + 23 * HOUR,
    ] {
        let verdict = provider_verdict(&normal_then(end, 2.0), &SilenceSettings::default());
        assert!(
            matches!(verdict, ProviderVerdict::Undecided { baseline: Some(b), .. } if b == 8.0),
            "{verdict:?}"
        );
    }
    // Monday 10:00 after it: the weekday baseline again, and a normal hour.
    let monday = MONDAY + 5 * 7 * DAY + 10 * HOUR;
    assert!(matches!(
        provider_verdict(&normal_then(monday, 280.0), &SilenceSettings::default()),
        ProviderVerdict::Normal { baseline, .. } if baseline == 300.0
    ));
}

#[test]
fn a_real_drop_by_day_is_silent_and_a_mere_dip_is_not() {
    let end = MONDAY + 4 * 7 * DAY + DAY + 14 * HOUR; // Tuesday 14:00
    let settings = SilenceSettings::default();
    assert_eq!(
        provider_verdict(&normal_then(end, 3.0), &settings),
        ProviderVerdict::Silent {
            current: 3.0,
            baseline: 300.0,
            weeks: 4
        }
    );
    assert!(
        matches!(
            provider_verdict(&normal_then(end, 30.0), &settings),
            ProviderVerdict::Normal { .. }
        ),
        "a tenth of the baseline is still normal"
    );
    assert!(matches!(
        provider_verdict(&normal_then(end, 150.0), &settings),
        ProviderVerdict::Normal { .. }
    ));
}

#[test]
fn one_odd_week_does_not_move_the_baseline() {
    // A holiday three weeks ago: nothing at all that Tuesday.
    let end = MONDAY + 4 * 7 * DAY + DAY + 14 * HOUR;
    let holiday = end - 3 * 7 * DAY - HOUR;
    let mut hourly = series(end, 29, |at| {
        if (holiday - 12 * HOUR..holiday + 12 * HOUR).contains(&at) {
            0.0
        } else {
            normal_rate(at)
        }
    });
    *hourly.last_mut().expect("hours") = 3.0;
    assert!(matches!(
        provider_verdict(&hourly, &SilenceSettings::default()),
        ProviderVerdict::Silent { baseline, .. } if baseline == 300.0
    ));
}

#[test]
fn a_new_provider_is_learned_for_two_weeks_first() {
    let end = MONDAY + 4 * 7 * DAY + DAY + 14 * HOUR;
    let settings = SilenceSettings::default();
    for days in [0, 3, 10] {
        let mut hourly = series(end, days, normal_rate);
        *hourly.last_mut().expect("hours") = 0.0;
        assert!(
            matches!(
                provider_verdict(&hourly, &settings),
                ProviderVerdict::Undecided { baseline: None, .. }
            ),
            "{days} days of data decide nothing"
        );
    }
    let mut hourly = series(end, 15, normal_rate);
    *hourly.last_mut().expect("hours") = 0.0;
    assert!(matches!(
        provider_verdict(&hourly, &settings),
        ProviderVerdict::Silent { weeks: 2, .. }
    ));
}

#[tokio::test]
async fn a_silent_provider_is_announced_once_per_episode_and_its_connections_are_polled() {
    let w = world();
    let end = MONDAY + 4 * 7 * DAY + DAY + 14 * HOUR;
    // A Linear connection webhooks fed, with its sync jobs.
    w.store.connect("conn_lin", "acme", "linear");
    w.store.record_event("conn_lin", end - 20 * MINUTE);
    ensure_jobs(
        w.jobs.as_ref(),
        catalog(),
        "linear",
        "conn_lin",
        Some("acme"),
        0,
    )
    .await
    .expect("jobs");
    let key = job_key(
        "conn_lin",
        &catalog()
            .get("linear")
            .and_then(|p| p.polling.as_ref())
            .expect("Linear polls")
            .models[0]
            .name,
    );
    let mut job = w.jobs.get(&key).await.expect("get").expect("job");
    job.due_at = end + HOUR;
    job.version += 1;
    assert!(
        w.jobs
            .replace(&job, job.version - 1)
            .await
            .expect("replace")
    );

    w.receipts.set("linear", normal_then(end, 300.0));
    let report = w.detector.run(end + MINUTE).await.expect("run");
    assert_eq!(
        (report.silent_providers, report.providers_announced),
        (0, 0)
    );

    w.receipts.set("linear", normal_then(end, 2.0));
    let report = w.detector.run(end + 2 * MINUTE).await.expect("run");
    assert_eq!(
        (report.silent_providers, report.providers_announced),
        (1, 1)
    );
    let announced = of_type(&w.bus.events(), "provider.silent");
    assert_eq!(announced.len(), 1);
    let event = &announced[0];
    assert_eq!(event.source, "junction/linear");
    assert_eq!(event.tenant, None, "a provider's silence is no tenant's");
    assert_eq!(event.data["provider"], "linear");
    assert_eq!(event.data["received_last_hour"], 2.0);
    assert_eq!(event.data["baseline_hourly"], 300.0);
    assert_eq!(event.data["threshold_hourly"], 30.0);
    assert_eq!(event.data["minimum_hourly"], 20.0);
    assert_eq!(event.data["reconciliation_polls_forced"], 1);
    assert_eq!(
        w.jobs.get(&key).await.expect("get").map(|j| j.due_at),
        Some(end + 2 * MINUTE),
        "the connection's job is due now"
    );

    // The next runs of the same episode announce nothing more; the metric stays.
    for minutes in [17, 32] {
        let report = w.detector.run(end + minutes * MINUTE).await.expect("run");
        assert_eq!(
            (report.silent_providers, report.providers_announced),
            (1, 0)
        );
    }
    // Still nothing at night: the episode lasts while nothing arrives.
    w.receipts.set("linear", normal_then(end + 12 * HOUR, 0.0));
    let report = w.detector.run(end + 12 * HOUR + MINUTE).await.expect("run");
    assert_eq!(
        (report.silent_providers, report.providers_announced),
        (1, 0)
    );
    assert_eq!(of_type(&w.bus.events(), "provider.silent").len(), 1);

    // Back: the episode ends, and a later drop is a new one.
    w.receipts.set("linear", normal_then(end + DAY, 290.0));
    let report = w.detector.run(end + DAY + MINUTE).await.expect("run");
    assert_eq!(report.silent_providers, 0);
    assert_eq!(
        w.store.provider("linear"),
        Some(ProviderWatch {
            silent_since: None,
            last_ended_at: Some(end + DAY + MINUTE)
        })
    );
    w.receipts.set("linear", normal_then(end + DAY + HOUR, 0.0));
    let report = w
        .detector
        .run(end + DAY + HOUR + MINUTE)
        .await
        .expect("run");
    assert_eq!(
        (report.silent_providers, report.providers_announced),
        (1, 1)
    );
    let announced = of_type(&w.bus.events(), "provider.silent");
    assert_eq!(announced.len(), 2);
    assert_ne!(announced[0].id, announced[1].id);
}

#[tokio::test]
async fn an_announcement_that_fails_is_tried_again_next_run() {
    let w = world();
    let end = MONDAY + 4 * 7 * DAY + DAY + 14 * HOUR;
    w.receipts.set("stripe", normal_then(end, 0.0));
    w.bus.set_failing(true);
    let report = w.detector.run(end + MINUTE).await.expect("run");
    assert_eq!(
        (
            report.providers_announced,
            report.silent_providers,
            report.failures
        ),
        (0, 1, 1),
        "counted (the alarm does not depend on the bus), not recorded"
    );
    assert_eq!(
        w.store.provider("stripe"),
        None,
        "not recorded as announced"
    );
    w.bus.set_failing(false);
    let report = w.detector.run(end + 16 * MINUTE).await.expect("run");
    assert_eq!(
        (report.providers_announced, report.silent_providers),
        (1, 1)
    );
}

#[tokio::test]
async fn unreadable_metrics_keep_open_episodes_and_still_judge_connections() {
    let w = world();
    let end = MONDAY + 4 * 7 * DAY + DAY + 14 * HOUR;
    w.receipts.set("stripe", normal_then(end, 0.0));
    w.detector.run(end + MINUTE).await.expect("run");
    w.receipts.set_failing(true);
    w.store.connect("conn_1", "acme", "stripe");
    w.store.record_event("conn_1", end);
    let report = w.detector.run(end + 16 * MINUTE).await.expect("run");
    assert_eq!(
        (
            report.silent_providers,
            report.failures,
            report.connections_checked
        ),
        (1, 1, 1)
    );
}

// --- The connection rule -------------------------------------------------------------

/// Whether a connection with the nightly rhythm hears from its provider at `at`.
fn by_day(at: i64) -> bool {
    let (hour, _) = hour_and_weekday(at);
    (8..23).contains(&hour)
}

#[tokio::test]
async fn a_nightly_gap_is_learned_and_only_a_longer_silence_is_flagged() {
    let w = world();
    w.store.connect("conn_lin", "acme", "linear");
    ensure_jobs(
        w.jobs.as_ref(),
        catalog(),
        "linear",
        "conn_lin",
        Some("acme"),
        0,
    )
    .await
    .expect("jobs");
    let start = MONDAY + 8 * HOUR;
    let mut now = start;
    // Ten days of the rhythm, a run every 15 minutes (each after the events before it).
    while now < start + 10 * DAY {
        if by_day(now) {
            w.store.record_event("conn_lin", now);
        }
        let report = w.detector.run(now).await.expect("run");
        assert_eq!(
            report.connections_announced,
            0,
            "nothing flagged at {}h on day {}",
            (now - MONDAY).rem_euclid(DAY) / HOUR,
            (now - MONDAY) / DAY
        );
        now += 15 * MINUTE;
    }
    let watch = w.store.watch("conn_lin").expect("tracked");
    assert_eq!(
        watch.longest_gap,
        Some(9 * HOUR + 15 * MINUTE),
        "the nightly gap, to within a run"
    );
    assert_eq!(watch.tracked_since, Some(start));
    assert_eq!(watch.provider.as_deref(), Some("linear"));

    // Then nothing more after the last event of an evening (22:45).
    let last = now - now.rem_euclid(DAY) + 22 * HOUR + 45 * MINUTE;
    while now <= last {
        w.store.record_event("conn_lin", now.min(last));
        w.detector.run(now).await.expect("run");
        now += 15 * MINUTE;
    }
    let threshold = 2 * (9 * HOUR + 15 * MINUTE);
    let mut flagged_at = None;
    while now <= last + 20 * HOUR {
        let report = w.detector.run(now).await.expect("run");
        if report.connections_announced > 0 {
            assert!(flagged_at.is_none(), "announced once");
            flagged_at = Some(now);
        }
        assert_eq!(report.silent_connections, usize::from(flagged_at.is_some()));
        now += 15 * MINUTE;
    }
    let flagged_at = flagged_at.expect("flagged");
    assert!(
        flagged_at - last > threshold && flagged_at - last <= threshold + 15 * MINUTE,
        "flagged at the first run past twice the nightly gap: after {} s",
        flagged_at - last
    );
    assert!(
        flagged_at - last <= 19 * HOUR,
        "flagged within 19 hours of silence"
    );
    let events = of_type(&w.bus.events(), "connection.silent");
    assert_eq!(events.len(), 1);
    let event = &events[0];
    assert_eq!(
        (event.tenant.as_deref(), event.connection.as_deref()),
        (Some("acme"), Some("conn_lin"))
    );
    assert_eq!(event.subject.as_deref(), Some("conn_lin"));
    assert_eq!(event.data["provider"], "linear");
    assert_eq!(event.data["silent_for_seconds"], flagged_at - last);
    assert_eq!(event.data["threshold_seconds"], threshold);
    assert_eq!(event.data["reconciliation_poll_forced"], true);
    let polled = catalog()
        .get("linear")
        .and_then(|p| p.polling.as_ref())
        .expect("Linear polls");
    for model in &polled.models {
        let job = w
            .jobs
            .get(&job_key("conn_lin", &model.name))
            .await
            .expect("get")
            .expect("job");
        assert_eq!(
            job.due_at, flagged_at,
            "{} forced at the announcement",
            model.name
        );
    }

    // The outage ends: the episode with it, and its gap is not learned.
    w.store.record_event("conn_lin", now);
    let report = w.detector.run(now).await.expect("run");
    assert_eq!(report.silent_connections, 0);
    let watch = w.store.watch("conn_lin").expect("tracked");
    assert_eq!(
        watch.longest_gap,
        Some(9 * HOUR + 15 * MINUTE),
        "an outage does not raise the threshold"
    );
    assert_eq!((watch.silent_since, watch.gap_open_since), (None, None));
}

#[tokio::test]
async fn a_connection_is_not_judged_in_its_learning_week() {
    let w = world();
    w.store.connect("conn_1", "acme", "slack");
    let start = MONDAY;
    w.store.record_event("conn_1", start);
    w.detector.run(start).await.expect("run");
    // Silent for six days: learning still.
    let report = w.detector.run(start + 6 * DAY).await.expect("run");
    assert_eq!(
        (report.silent_connections, report.connections_announced),
        (0, 0)
    );
    // Past the week, still silent: flagged (Slack polls nothing, so no poll forced).
    let report = w.detector.run(start + 7 * DAY + MINUTE).await.expect("run");
    assert_eq!(
        (report.silent_connections, report.connections_announced),
        (1, 1)
    );
    let events = of_type(&w.bus.events(), "connection.silent");
    assert_eq!(events[0].data["reconciliation_poll_forced"], false);
    assert_eq!(events[0].data["threshold_seconds"], 6 * HOUR);
}

#[tokio::test]
async fn a_connection_that_needs_reauth_or_is_deleted_is_not_announced() {
    let w = world();
    for id in ["conn_reauth", "conn_gone"] {
        w.store.connect(id, "acme", "slack");
        w.store.record_event(id, MONDAY);
    }
    w.detector.run(MONDAY).await.expect("run");
    w.store.set_state("conn_reauth", "needs_reauth");
    w.store.disconnect("conn_gone");
    let report = w.detector.run(MONDAY + 8 * DAY).await.expect("run");
    assert_eq!(
        (report.connections_checked, report.connections_announced),
        (1, 0)
    );
    assert!(w.bus.events().is_empty());
    assert_eq!(
        w.store.watch("conn_gone"),
        None,
        "a tombstone is not written over"
    );
}

#[test]
fn a_gap_is_measured_once_it_ends() {
    let settings = SilenceSettings::default();
    let watched = ConnectionWatch {
        tracked_since: Some(0),
        ..ConnectionWatch::default()
    };
    // 2 h of quiet: not worth measuring (under 6 h / 2).
    let (next, _) = connection_step(10 * DAY, 10 * DAY - 2 * HOUR, &watched, &settings);
    assert_eq!(next.gap_open_since, None);
    // 3 h: opened at the last event.
    let last = 10 * DAY - 3 * HOUR;
    let (next, verdict) = connection_step(10 * DAY, last, &watched, &settings);
    assert_eq!(next.gap_open_since, Some(last));
    assert_eq!((verdict.threshold, verdict.silent), (6 * HOUR, false));
    // An event 5 h after it: a 5 h gap learned, the threshold 10 h.
    let (next, verdict) = connection_step(10 * DAY + 2 * HOUR, last + 5 * HOUR, &next, &settings);
    assert_eq!(
        (next.gap_open_since, next.longest_gap),
        (None, Some(5 * HOUR))
    );
    assert_eq!(verdict.threshold, 10 * HOUR);
    // A shorter one later does not lower it.
    let mut shorter = next.clone();
    shorter.gap_open_since = Some(11 * DAY);
    let (next, _) = connection_step(
        11 * DAY + 5 * HOUR,
        11 * DAY + 4 * HOUR,
        &shorter,
        &settings,
    );
    assert_eq!(next.longest_gap, Some(5 * HOUR));
}

#[test]
fn a_longest_gap_older_than_four_weeks_gives_way_to_the_next() {
    let settings = SilenceSettings::default();
    let now = 100 * DAY;
    let old = ConnectionWatch {
        tracked_since: Some(0),
        longest_gap: Some(20 * HOUR),
        longest_gap_at: Some(now - 29 * DAY),
        gap_open_since: Some(now - 5 * HOUR),
        ..ConnectionWatch::default()
    };
    let (next, verdict) = connection_step(now, now - HOUR, &old, &settings);
    assert_eq!(
        (next.longest_gap, next.longest_gap_at),
        (Some(4 * HOUR), Some(now)),
        "a 4 h gap replaces a 20 h one learned 29 days ago"
    );
    assert_eq!(verdict.threshold, 8 * HOUR);
    let recent = ConnectionWatch {
        longest_gap_at: Some(now - 27 * DAY),
        ..old
    };
    let (next, _) = connection_step(now, now - HOUR, &recent, &settings);
    assert_eq!(next.longest_gap, Some(20 * HOUR), "27 days old: kept");
}

// --- Settings -------------------------------------------------------------------------

#[test]
fn the_thresholds_come_from_the_environment_with_defaults() {
    let defaults = SilenceSettings::from_env(&Env::from_pairs(&[])).expect("defaults");
    assert_eq!(defaults, SilenceSettings::default());
    let set = SilenceSettings::from_env(&Env::from_pairs(&[
        ("SILENCE_PROVIDER_MINIMUM_HOURLY", "50"),
        ("SILENCE_PROVIDER_RATIO", "0.25"),
        ("SILENCE_CONNECTION_MINIMUM_GAP_HOURS", "1.5"),
        ("SILENCE_CONNECTION_GAP_FACTOR", "3"),
    ]))
    .expect("set");
    assert_eq!(
        set,
        SilenceSettings {
            provider_minimum_hourly: 50.0,
            provider_ratio: 0.25,
            connection_minimum_gap: 5_400,
            connection_gap_factor: 3.0,
        }
    );
    for (key, value) in [
        ("SILENCE_PROVIDER_RATIO", "1.5"),
        ("SILENCE_PROVIDER_RATIO", "-0.1"),
        ("SILENCE_PROVIDER_MINIMUM_HOURLY", "lots"),
        ("SILENCE_CONNECTION_GAP_FACTOR", "0.5"),
        ("SILENCE_CONNECTION_MINIMUM_GAP_HOURS", "0"),
    ] {
        let err =
            SilenceSettings::from_env(&Env::from_pairs(&[(key, value)])).expect_err("out of range");
        assert!(err.to_string().contains(key), "{err}");
    }
}

#[test]
fn the_run_s_metrics_are_one_emf_line() {
    let report = RunReport {
        silent_providers: 2,
        silent_connections: 5,
        ..RunReport::default()
    };
    let line: serde_json::Value =
        serde_json::from_str(&report.metrics_line(1_700_000_000_000)).expect("JSON");
    assert_eq!(
        line["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "Junction"
    );
    assert_eq!(line["SilentProviders"], 2);
    assert_eq!(line["SilentConnections"], 5);
}

#[tokio::test]
async fn a_connection_silence_the_bus_refused_counts_and_is_announced_next_run() {
    let w = world();
    w.store.connect("conn_1", "acme", "slack");
    w.store.record_event("conn_1", MONDAY);
    w.detector.run(MONDAY).await.expect("run");
    w.bus.set_failing(true);
    let report = w.detector.run(MONDAY + 8 * DAY).await.expect("run");
    assert_eq!(
        (
            report.silent_connections,
            report.connections_announced,
            report.failures
        ),
        (1, 0, 1),
        "the alarm does not depend on the bus"
    );
    assert_eq!(
        w.store.watch("conn_1").and_then(|watch| watch.silent_since),
        None,
        "not recorded as announced"
    );
    w.bus.set_failing(false);
    let report = w
        .detector
        .run(MONDAY + 8 * DAY + 15 * MINUTE)
        .await
        .expect("run");
    assert_eq!(
        (report.silent_connections, report.connections_announced),
        (1, 1)
    );
}

#[tokio::test]
async fn a_first_run_over_many_connections_reads_a_bounded_number_of_them() {
    let w = world();
    for n in 0..FIRST_SIGHTS_PER_RUN + 5 {
        let id = format!("conn_{n:05}");
        w.store.connect(&id, "acme", "slack");
        w.store.record_event(&id, MONDAY);
    }
    let report = w.detector.run(MONDAY).await.expect("run");
    assert_eq!(report.connections_checked, FIRST_SIGHTS_PER_RUN);
    let report = w.detector.run(MONDAY + 15 * MINUTE).await.expect("run");
    assert_eq!(
        report.connections_checked,
        FIRST_SIGHTS_PER_RUN + 5,
        "the rest at the next run"
    );
}
