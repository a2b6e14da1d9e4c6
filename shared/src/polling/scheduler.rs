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

use std::{sync::Arc, time::Duration};

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::jobs::{JobStoreError, SyncJob, SyncJobStore};
use crate::{
    clock::Clock,
    queue::{EventQueue, QueueMessage},
};

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
        }
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
    use crate::{
        clock::FixedClock,
        polling::{InMemorySyncJobStore, JobLease, sample_job},
        queue::InMemoryEventQueue,
    };

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

    #[test]
    fn the_spread_grows_with_the_crowd_within_the_jitter_and_half_the_interval() {
        let jobs = Arc::new(InMemorySyncJobStore::default());
        let scheduler = PollScheduler::new(
            jobs,
            Arc::new(InMemoryEventQueue::default()),
            Arc::new(crate::clock::SystemClock),
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
