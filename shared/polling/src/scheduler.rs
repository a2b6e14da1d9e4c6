//! The poll scheduler: on each tick (EventBridge Scheduler, every minute) it finds the
//! sync jobs that are due and hands each to the poll queue with a random delay, so a
//! thousand connections do not all call their providers in the same second. The window
//! grows with the number of jobs due (0.1 s per job, at most `jitter`, at most half a
//! job's interval): one due job starts at once, 600 spread over a minute.
//!
//! A handed-out job is *held*: its due time moves `hold` ahead with a conditional write,
//! so the next tick does not hand it out again while it waits in the queue or runs. The
//! worker sets the real next due time when it finishes; if the message is lost or the
//! worker dies, the hold expires and the job is handed out again. Jobs a worker is
//! running (live lease) are left alone.
//!
//! Staleness: a job whose last successful run (or, if it never had one, its creation) is
//! more than `stale_after_intervals` intervals ago is announced once as a
//! `connection.stale` CloudEvent when it is next handed out (a failing job is still due
//! every interval, so the scheduler sees it); the worker's next success clears the mark.

use std::{sync::Arc, time::Duration};

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::jobs::{JobStoreError, SyncJob, SyncJobStore};
use junction_aws::clock::{Clock, rfc3339_millis};
use junction_aws::events::{CloudEvent, EventBus};
use junction_aws::queue::{EventQueue, QueueMessage};

/// Intervals without a successful run before a connection is announced stale, unless
/// configured (`STALE_AFTER_INTERVALS`).
pub const DEFAULT_STALE_AFTER_INTERVALS: u32 = 3;

/// How far apart, on average, due jobs start.
const SPACING: Duration = Duration::from_millis(100);

/// The poll queue's message: which job to run, and the provider (which picks the
/// poller without another read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollMessage {
    pub connection: String,
    pub provider: String,
    pub model: String,
}

impl PollMessage {
    pub fn for_job(job: &SyncJob) -> PollMessage {
        PollMessage {
            connection: job.connection.clone(),
            provider: job.provider.clone(),
            model: job.model.clone(),
        }
    }

    /// The job's key.
    pub fn job_key(&self) -> String {
        super::jobs::job_key(&self.connection, &self.model)
    }

    pub fn to_queue_message(&self) -> QueueMessage {
        QueueMessage {
            body: serde_json::to_string(self).unwrap_or_default(),
            attributes: Default::default(),
        }
    }

    /// Reads a poll queue message body.
    pub fn parse(body: &str) -> Result<PollMessage, serde_json::Error> {
        serde_json::from_str(body)
    }
}

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DispatchReport {
    /// Jobs found due.
    pub due: usize,
    /// Handed to the poll queue.
    pub dispatched: usize,
    /// Left alone: a worker is running them.
    pub running: usize,
    /// Changed by somebody else between the read and the hold (handled there).
    pub raced: usize,
    /// Held but not queued (the queue failed): handed out again after the hold.
    pub failed: usize,
    /// Announced as `connection.stale` on this tick.
    pub stale: usize,
}

#[derive(Debug, Clone)]
pub struct PollScheduler {
    jobs: Arc<dyn SyncJobStore>,
    queue: Arc<dyn EventQueue>,
    clock: Arc<dyn Clock>,
    /// How far a handed-out job's due time moves (longer than the jitter plus a run's
    /// start).
    pub hold: Duration,
    /// The widest spread of start times.
    pub jitter: Duration,
    /// Jobs handed out per tick at most; the rest wait for the next tick.
    pub batch: usize,
    /// Where `connection.stale` goes; `None` announces nothing.
    bus: Option<Arc<dyn EventBus>>,
    /// Intervals without success before a job's connection is stale.
    pub stale_after_intervals: u32,
}

impl PollScheduler {
    pub fn new(
        jobs: Arc<dyn SyncJobStore>,
        queue: Arc<dyn EventQueue>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        PollScheduler {
            jobs,
            queue,
            clock,
            hold: Duration::from_secs(600),
            jitter: Duration::from_secs(60),
            batch: 500,
            bus: None,
            stale_after_intervals: DEFAULT_STALE_AFTER_INTERVALS,
        }
    }

    /// Announces stale connections on `bus` after `intervals` intervals without a
    /// successful run.
    pub fn with_stale_events(mut self, bus: Arc<dyn EventBus>, intervals: u32) -> Self {
        self.bus = Some(bus);
        self.stale_after_intervals = intervals.max(1);
        self
    }

    /// One tick: hold and queue every due job (up to `batch`).
    pub async fn dispatch(&self) -> Result<DispatchReport, JobStoreError> {
        let now = self.clock.now().unix_timestamp();
        let due = self.jobs.due(now, self.batch).await?;
        let mut report = DispatchReport {
            due: due.len(),
            ..DispatchReport::default()
        };
        let crowd = SPACING.saturating_mul(u32::try_from(due.len()).unwrap_or(u32::MAX));
        for job in due {
            if job.lease.as_ref().is_some_and(|lease| lease.until > now) {
                report.running += 1;
                continue;
            }
            let mut held = job.clone();
            held.due_at = now + i64::try_from(self.hold.as_secs()).unwrap_or(600);
            held.version = job.version + 1;
            if self.announce_if_stale(&job, now).await {
                held.stale_since = Some(now);
                report.stale += 1;
            }
            if !self.jobs.replace(&held, job.version).await? {
                report.raced += 1;
                continue;
            }
            let delay = self.spread(&job, crowd);
            let message = PollMessage::for_job(&job).to_queue_message();
            match self.queue.send_delayed(message, delay).await {
                Ok(()) => report.dispatched += 1,
                Err(err) => {
                    report.failed += 1;
                    tracing::warn!(job = %job.key(), error = %err, "poll queue refused a job; handed out again after the hold");
                }
            }
        }
        Ok(report)
    }

    /// Publishes `connection.stale` for `job` if it is stale and not yet announced;
    /// whether it was published. A failed publish is logged and tried again the next
    /// time the job is handed out.
    async fn announce_if_stale(&self, job: &SyncJob, now: i64) -> bool {
        let Some(bus) = &self.bus else {
            return false;
        };
        let since = job.last_success_at.unwrap_or(job.created_at);
        let allowed = i64::from(job.interval_seconds) * i64::from(self.stale_after_intervals);
        if job.stale_since.is_some() || since <= 0 || now - since <= allowed {
            return false;
        }
        let at = |unix: i64| {
            time::OffsetDateTime::from_unix_timestamp(unix)
                .map(rfc3339_millis)
                .ok()
        };
        let data = serde_json::json!({
            "connection_id": job.connection,
            "provider": job.provider,
            "model": job.model,
            "last_successful_sync": job.last_success_at.and_then(at),
            "expected_interval_seconds": job.interval_seconds,
            "stale_after_seconds": allowed,
            "last_error": job.last_error,
        });
        let event = CloudEvent::new(
            &job.provider,
            &format!("{}:stale:{since}", job.key()),
            &job.key(),
            "connection.stale".to_owned(),
            Some(job.connection.clone()),
            at(now).unwrap_or_default(),
            data,
        );
        // Named like the connection's other events; a job stored before jobs named
        // their tenant goes out unstamped.
        let event = match &job.tenant {
            Some(tenant) => event.stamped(tenant, &job.connection),
            None => event,
        };
        match bus.publish(std::slice::from_ref(&event)).await {
            Ok(()) => {
                tracing::warn!(
                    connection = %job.connection, provider = %job.provider, model = %job.model,
                    since, outcome = "connection_stale",
                    "no successful sync for longer than the expected interval allows"
                );
                true
            }
            Err(err) => {
                tracing::warn!(job = %job.key(), error = %err, "connection.stale not published; tried again next time");
                false
            }
        }
    }

    /// A random start delay within `crowd`, the jitter window and half the job's
    /// interval.
    fn spread(&self, job: &SyncJob, crowd: Duration) -> Duration {
        let window = crowd
            .min(self.jitter)
            .min(Duration::from_secs(u64::from(job.interval_seconds) / 2));
        let millis = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        if millis == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(rand::thread_rng().gen_range(0..=millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InMemorySyncJobStore, JobLease, sample_job};
    use junction_aws::clock::FixedClock;
    use junction_aws::queue::InMemoryEventQueue;

    const NOW: i64 = 1_800_000_000;

    async fn setup() -> (
        Arc<InMemorySyncJobStore>,
        Arc<InMemoryEventQueue>,
        PollScheduler,
    ) {
        let jobs = Arc::new(InMemorySyncJobStore::default());
        let queue = Arc::new(InMemoryEventQueue::default());
        let clock = Arc::new(FixedClock::at_unix(NOW));
        let scheduler = PollScheduler::new(jobs.clone(), queue.clone(), clock);
        (jobs, queue, scheduler)
    }

    #[tokio::test]
    async fn due_jobs_are_queued_once_with_jitter_and_held() {
        let (jobs, queue, scheduler) = setup().await;
        for (connection, due_at) in [("conn_a", NOW - 5), ("conn_b", NOW), ("conn_c", NOW + 60)] {
            jobs.insert(&sample_job(connection, "issues", due_at))
                .await
                .expect("insert");
        }
        let report = scheduler.dispatch().await.expect("tick");
        assert_eq!((report.due, report.dispatched), (2, 2));
        let queued: Vec<String> = queue
            .messages()
            .iter()
            .map(|m| PollMessage::parse(&m.body).expect("poll message").job_key())
            .collect();
        assert_eq!(queued, ["conn_a#issues", "conn_b#issues"]);
        assert!(
            queue
                .delays()
                .iter()
                .all(|d| *d <= Duration::from_millis(200)),
            "two due jobs spread over 0.2 s: {:?}",
            queue.delays()
        );
        let held = jobs.get("conn_a#issues").await.expect("get").expect("job");
        assert_eq!(held.due_at, NOW + 600, "held while queued");

        let again = scheduler.dispatch().await.expect("next tick");
        assert_eq!(again.dispatched, 0, "a held job is not handed out twice");
        assert_eq!(queue.messages().len(), 2);
    }

    #[tokio::test]
    async fn running_jobs_are_left_alone_and_a_failed_send_is_retried_after_the_hold() {
        let (jobs, queue, scheduler) = setup().await;
        let mut running = sample_job("conn_a", "issues", NOW - 5);
        running.lease = Some(JobLease {
            owner: "worker".into(),
            until: NOW + 30,
        });
        jobs.insert(&running).await.expect("insert");
        jobs.insert(&sample_job("conn_b", "issues", NOW - 5))
            .await
            .expect("insert");
        queue.set_failing(true);
        let report = scheduler.dispatch().await.expect("tick");
        assert_eq!(
            (report.running, report.failed, report.dispatched),
            (1, 1, 0)
        );
        let unchanged = jobs.get("conn_a#issues").await.expect("get").expect("job");
        assert_eq!(unchanged, running, "the running job was not touched");
        let held = jobs.get("conn_b#issues").await.expect("get").expect("job");
        assert_eq!(held.due_at, NOW + 600);
    }

    #[tokio::test]
    async fn a_job_without_success_for_three_intervals_is_announced_stale_once() {
        let (jobs, _queue, scheduler) = setup().await;
        let bus = Arc::new(junction_aws::events::InMemoryEventBus::default());
        let scheduler = scheduler.with_stale_events(bus.clone(), 3);
        // interval 900 s: stale after 2,700 s without success.
        let mut healthy = sample_job("conn_ok", "issues", NOW - 5);
        healthy.last_success_at = Some(NOW - 2_700);
        let mut stale = sample_job("conn_stale", "issues", NOW - 5);
        stale.tenant = Some("acme".into());
        stale.last_success_at = Some(NOW - 2_701);
        stale.last_error = Some("http_503".into());
        let mut never = sample_job("conn_new", "issues", NOW - 5);
        never.created_at = NOW - 4_000;
        for job in [&healthy, &stale, &never] {
            jobs.insert(job).await.expect("insert");
        }
        bus.set_failing(true);
        let report = scheduler.dispatch().await.expect("tick");
        assert_eq!(
            (report.dispatched, report.stale),
            (3, 0),
            "bus down: not marked"
        );
        assert_eq!(
            jobs.get("conn_stale#issues")
                .await
                .expect("get")
                .expect("job")
                .stale_since,
            None
        );

        bus.set_failing(false);
        for key in ["conn_ok#issues", "conn_stale#issues", "conn_new#issues"] {
            let mut job = jobs.get(key).await.expect("get").expect("job");
            let version = job.version;
            job.due_at = NOW - 1;
            job.version += 1;
            assert!(jobs.replace(&job, version).await.expect("due again"));
        }
        let report = scheduler.dispatch().await.expect("tick");
        assert_eq!(report.stale, 2);
        let events = bus.events();
        let mut subjects: Vec<&str> = events.iter().filter_map(|e| e.subject.as_deref()).collect();
        subjects.sort_unstable();
        assert_eq!(subjects, ["conn_new", "conn_stale"]);
        let event = events
            .iter()
            .find(|e| e.subject.as_deref() == Some("conn_stale"))
            .expect("stale event");
        assert_eq!(event.event_type, "connection.stale");
        assert_eq!(event.source, "junction/linear");
        assert_eq!(
            (event.tenant.as_deref(), event.connection.as_deref()),
            (Some("acme"), Some("conn_stale")),
            "stamped with the job's tenant and connection"
        );
        let unstamped = junction_aws::events::CloudEvent::new(
            "linear",
            &format!("conn_stale#issues:stale:{}", NOW - 2_701),
            "conn_stale#issues",
            "connection.stale".to_owned(),
            None,
            String::new(),
            serde_json::Value::Null,
        );
        assert_eq!(
            event.id,
            unstamped.stamped("acme", "conn_stale").id,
            "the stamped id, stable across ticks"
        );
        let old = events
            .iter()
            .find(|e| e.subject.as_deref() == Some("conn_new"))
            .expect("stale event");
        assert_eq!(
            (old.tenant.as_deref(), old.connection.as_deref()),
            (None, None),
            "a job stored before jobs named their tenant: unstamped"
        );
        assert_eq!(event.data["model"], "issues");
        assert_eq!(event.data["expected_interval_seconds"], 900);
        assert_eq!(event.data["last_error"], "http_503");
        assert!(event.data["last_successful_sync"].is_string());
        assert!(
            event.data["last_successful_sync"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
        assert_eq!(
            jobs.get("conn_stale#issues")
                .await
                .expect("get")
                .expect("job")
                .stale_since,
            Some(NOW)
        );

        // Due again, still failing: not announced twice.
        let mut job = jobs
            .get("conn_stale#issues")
            .await
            .expect("get")
            .expect("job");
        let version = job.version;
        job.due_at = NOW - 1;
        job.version += 1;
        assert!(jobs.replace(&job, version).await.expect("due again"));
        let report = scheduler.dispatch().await.expect("tick");
        assert_eq!((report.dispatched, report.stale), (1, 0));
        assert_eq!(bus.events().len(), 2);
    }

    #[test]
    fn the_spread_grows_with_the_crowd_within_the_jitter_and_half_the_interval() {
        let jobs = Arc::new(InMemorySyncJobStore::default());
        let scheduler = PollScheduler::new(
            jobs,
            Arc::new(InMemoryEventQueue::default()),
            Arc::new(junction_aws::clock::SystemClock),
        );
        let mut job = sample_job("conn_a", "issues", 0);
        let crowd = |jobs: u32| SPACING * jobs;
        let spreads = |crowd: Duration, job: &SyncJob| -> Vec<Duration> {
            (0..200).map(|_| scheduler.spread(job, crowd)).collect()
        };
        assert!(spreads(crowd(1), &job).iter().all(|d| *d <= SPACING));
        let thousand = spreads(crowd(1000), &job);
        assert!(thousand.iter().all(|d| *d <= Duration::from_secs(60)));
        assert!(
            thousand.iter().any(|d| *d > Duration::from_secs(10)),
            "a crowd is spread out"
        );
        job.interval_seconds = 60;
        assert!(
            spreads(crowd(1000), &job)
                .iter()
                .all(|d| *d <= Duration::from_secs(30))
        );
    }
}
