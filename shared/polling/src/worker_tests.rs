//! The worker against an in-memory poller of 5 pages: complete runs, runs continued over
//! invocations, two workers overlapping, a provider asking to wait, and failures. Every
//! test checks the queue: nothing lost, and any repeat carries the same event id (the
//! consumer's idempotency drops it).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use super::*;
use crate::{InMemorySyncJobStore, sample_job};
use junction_aws::clock::FixedClock;
use junction_aws::queue::InMemoryEventQueue;

const PAGES: usize = 5;
const PER_PAGE: usize = 3;

/// 5 pages of 3 records; the cursor is the next page's number, `done` after the last.
#[derive(Debug, Default)]
struct FakePoller {
    fetched: Mutex<Vec<Option<String>>>,
    /// The base URL each page was asked of.
    base_urls: Mutex<Vec<String>>,
    /// Answers for the next calls, before the pages.
    failures: Mutex<Vec<CallError>>,
    /// Called before each page (tests make another worker run meanwhile).
    pause: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
    /// How long each page takes.
    delay: Duration,
}

#[async_trait::async_trait]
impl Poller for FakePoller {
    fn resource(&self) -> &str {
        "issue"
    }

    async fn page(&self, target: &PollTarget<'_>, cursor: Option<&str>) -> Result<Page, CallError> {
        self.base_urls
            .lock()
            .expect("lock")
            .push(target.base_url.to_owned());
        self.fetched
            .lock()
            .expect("lock")
            .push(cursor.map(str::to_owned));
        tokio::time::sleep(self.delay).await;
        let waiting = self.pause.lock().expect("lock").take();
        if let Some(waiting) = waiting {
            let _ = waiting.await;
        }
        if let Some(failure) = self.failures.lock().expect("lock").pop() {
            return Err(failure);
        }
        let number: usize = match cursor {
            None => 0,
            Some("done") => {
                return Ok(Page {
                    records: vec![],
                    cursor: Some("done".into()),
                    more: false,
                });
            }
            Some(n) => n.parse().expect("page cursor"),
        };
        let records = (0..PER_PAGE)
            .map(|i| PolledRecord {
                id: format!("ISS-{}", number * PER_PAGE + i),
                updated_at: "2026-11-23T10:00:00.000Z".into(),
                body: serde_json::json!({ "id": format!("ISS-{}", number * PER_PAGE + i) }),
            })
            .collect();
        let last = number + 1 == PAGES;
        Ok(Page {
            records,
            cursor: Some(if last {
                "done".into()
            } else {
                (number + 1).to_string()
            }),
            more: !last,
        })
    }
}

struct Setup {
    jobs: Arc<InMemorySyncJobStore>,
    queue: Arc<InMemoryEventQueue>,
    clock: Arc<FixedClock>,
    worker: PollWorker,
    key: String,
}

async fn setup() -> Setup {
    let jobs = Arc::new(InMemorySyncJobStore::default());
    let queue = Arc::new(InMemoryEventQueue::default());
    let clock = Arc::new(FixedClock::at_unix(1_800_000_000));
    let job = sample_job("conn_a", "issues", 1_800_000_000);
    jobs.insert(&job).await.expect("job");
    let worker = PollWorker::new(jobs.clone(), queue.clone(), clock.clone(), None);
    Setup {
        jobs,
        queue,
        clock,
        worker,
        key: job.key(),
    }
}

impl Setup {
    fn event_ids(&self) -> Vec<String> {
        self.queue
            .messages()
            .iter()
            .map(|m| m.attributes[attribute::EVENT_ID].clone())
            .collect()
    }

    async fn job(&self) -> SyncJob {
        self.jobs.get(&self.key).await.expect("get").expect("job")
    }
}

fn plenty() -> Instant {
    Instant::now() + Duration::from_secs(600)
}

#[tokio::test]
async fn a_run_sends_every_page_once_and_stores_the_watermark() {
    let setup = setup().await;
    let mut stale = setup.job().await;
    stale.stale_since = Some(1_799_990_000);
    stale.version += 1;
    assert!(
        setup
            .jobs
            .replace(&stale, stale.version - 1)
            .await
            .expect("marked stale")
    );
    let poller = FakePoller::default();
    let outcome = setup
        .worker
        .run(&setup.key, &poller, plenty())
        .await
        .expect("run");
    assert_eq!(
        outcome,
        RunOutcome::Done {
            pages: 5,
            records: 15
        }
    );
    let ids = setup.event_ids();
    assert_eq!(ids.len(), 15);
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        15,
        "no duplicates"
    );
    assert_eq!(ids[0], "issue:ISS-0:2026-11-23T10:00:00.000Z");
    let message = &setup.queue.messages()[0];
    assert_eq!(message.attributes[attribute::ORIGIN], "poll");
    assert_eq!(message.attributes[attribute::CONNECTION], "conn_a");
    let job = setup.job().await;
    assert_eq!(job.cursor.as_deref(), Some("done"));
    assert_eq!(job.lease, None);
    assert_eq!(
        job.due_at,
        1_800_000_000 + 900,
        "next run after the interval"
    );
    assert_eq!(job.records_sent, 15);
    assert_eq!(job.stale_since, None, "a success ends the stale spell");

    // The next run starts from the watermark: nothing new, nothing re-sent.
    let again = setup
        .worker
        .run(&setup.key, &poller, plenty())
        .await
        .expect("run");
    assert_eq!(
        again,
        RunOutcome::Done {
            pages: 1,
            records: 0
        }
    );
    assert_eq!(setup.queue.messages().len(), 15);
}

#[tokio::test]
async fn a_long_sync_continues_over_invocations_from_the_stored_cursor() {
    let setup = setup().await;
    let poller = FakePoller {
        delay: Duration::from_millis(30),
        ..FakePoller::default()
    };
    let mut worker = setup.worker.clone();
    worker.page_budget = Duration::from_secs(15);
    // Each "invocation" has time for about two pages.
    let mut runs = Vec::new();
    for _ in 0..6 {
        let deadline = Instant::now() + Duration::from_secs(15) + Duration::from_millis(50);
        let outcome = worker
            .run(&setup.key, &poller, deadline)
            .await
            .expect("run");
        runs.push(outcome);
        if matches!(runs.last(), Some(RunOutcome::Done { .. })) {
            break;
        }
    }
    assert!(matches!(runs[0], RunOutcome::Continue { .. }), "{runs:?}");
    assert!(
        matches!(runs.last(), Some(RunOutcome::Done { .. })),
        "{runs:?}"
    );
    assert_eq!(
        setup.event_ids().len(),
        15,
        "every record, over {} runs",
        runs.len()
    );
    let ids = setup.event_ids();
    assert_eq!(
        ids.len(),
        ids.iter().collect::<BTreeSet<_>>().len(),
        "none twice"
    );
    let fetched = poller.fetched.lock().expect("lock").clone();
    let distinct: BTreeSet<_> = fetched.iter().collect();
    assert_eq!(
        fetched.len(),
        distinct.len(),
        "no page fetched twice: {fetched:?}"
    );
    assert_eq!(
        setup.job().await.lease,
        None,
        "the lease is released between runs"
    );
}

#[tokio::test]
async fn overlapping_workers_lose_nothing_and_repeat_only_what_idempotency_drops() {
    let setup = setup().await;
    let slow = Arc::new(FakePoller::default());
    let (resume, paused) = tokio::sync::oneshot::channel();
    *slow.pause.lock().expect("lock") = Some(paused);
    let first = {
        let worker = setup.worker.clone();
        let key = setup.key.clone();
        let slow = slow.clone();
        tokio::spawn(async move { worker.run(&key, slow.as_ref(), plenty()).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The first worker is stuck on its first page; its lease runs out and a second
    // worker runs the whole job.
    assert_eq!(
        setup
            .worker
            .run(&setup.key, &FakePoller::default(), plenty())
            .await
            .expect("run"),
        RunOutcome::Busy,
        "held while the lease lasts"
    );
    setup.clock.advance(time::Duration::seconds(121));
    let second = setup
        .worker
        .run(&setup.key, &FakePoller::default(), plenty())
        .await
        .expect("run");
    assert_eq!(
        second,
        RunOutcome::Done {
            pages: 5,
            records: 15
        }
    );
    let _ = resume.send(());
    let first = first.await.expect("task").expect("run");
    assert_eq!(first, RunOutcome::LostLease, "its cursor write fails");

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for id in setup.event_ids() {
        *counts.entry(id).or_default() += 1;
    }
    assert_eq!(counts.len(), 15, "every record arrived");
    assert!(counts.values().all(|&n| n <= 2), "{counts:?}");
    assert_eq!(
        counts.values().filter(|&&n| n == 2).count(),
        PER_PAGE,
        "only the overlapping page repeats, with the same event ids"
    );
    assert_eq!(setup.job().await.cursor.as_deref(), Some("done"));
}

#[tokio::test]
async fn a_provider_wait_keeps_the_cursor_and_moves_the_due_time() {
    let setup = setup().await;
    let poller = FakePoller::default();
    poller
        .failures
        .lock()
        .expect("lock")
        .push(CallError::Requeue {
            after: Duration::from_secs(120),
            reason: junction_outbound::RequeueReason::Provider("http_429".into()),
        });
    let outcome = setup
        .worker
        .run(&setup.key, &poller, plenty())
        .await
        .expect("run");
    assert_eq!(
        outcome,
        RunOutcome::Requeue {
            after: Duration::from_secs(120)
        }
    );
    let job = setup.job().await;
    assert_eq!(job.cursor, None, "nothing skipped");
    assert_eq!(job.due_at, 1_800_000_000 + 120);
    assert_eq!(job.lease, None);
    assert!(setup.queue.messages().is_empty());
}

#[tokio::test]
async fn a_queue_failure_repeats_the_page_instead_of_skipping_it() {
    let setup = setup().await;
    setup.queue.set_failing(true);
    let outcome = setup
        .worker
        .run(&setup.key, &FakePoller::default(), plenty())
        .await
        .expect("run");
    assert!(matches!(outcome, RunOutcome::Failed { .. }), "{outcome:?}");
    let job = setup.job().await;
    assert_eq!(
        job.cursor, None,
        "the cursor did not move past unsent records"
    );
    assert!(job.last_error.is_some());
    setup.queue.set_failing(false);
    setup.clock.advance(time::Duration::seconds(900));
    let outcome = setup
        .worker
        .run(&setup.key, &FakePoller::default(), plenty())
        .await
        .expect("run");
    assert_eq!(
        outcome,
        RunOutcome::Done {
            pages: 5,
            records: 15
        }
    );
    assert_eq!(setup.job().await.last_error, None);
}

/// With the vault: the poller gets the connection's API base URL; a connection that
/// needs reauthorization fails the run without a call; a deleted one removes its job.
#[tokio::test]
async fn the_worker_follows_its_connection() {
    use junction_oauth::ConnectionStore;
    let harness = junction_oauth::testing::harness_with(
        fake_provider::AuthServerConfig::default(),
        "[api]\nbase_url = \"{provider_api}\"\nrate_limit = { requests_per_second = 10.0, burst = 5, scope = \"connection\" }\n",
    )
    .await;
    let connection = harness.connect().await;
    let jobs = Arc::new(InMemorySyncJobStore::default());
    let queue = Arc::new(InMemoryEventQueue::default());
    let mut job = sample_job(&connection, "issues", 0);
    job.provider = "fakeauth".into();
    jobs.insert(&job).await.expect("job");
    let worker = PollWorker::new(
        jobs.clone(),
        queue.clone(),
        harness.clock.clone(),
        Some(harness.vault.clone()),
    );
    let poller = FakePoller::default();
    let outcome = worker
        .run(&job.key(), &poller, plenty())
        .await
        .expect("run");
    assert!(
        matches!(outcome, RunOutcome::Done { records: 15, .. }),
        "{outcome:?}"
    );
    assert_eq!(
        poller.base_urls.lock().expect("lock")[0],
        harness.server.provider_api_base()
    );

    let mut lapsed = harness
        .connections
        .get(&connection)
        .await
        .expect("store")
        .expect("connection");
    let version = lapsed.version;
    lapsed.state = junction_oauth::ConnectionState::NeedsReauth;
    lapsed.version += 1;
    assert!(
        harness
            .connections
            .replace(&lapsed, version)
            .await
            .expect("store")
    );
    let mut due = jobs.get(&job.key()).await.expect("get").expect("job");
    let version = due.version;
    due.due_at = 0;
    due.version += 1;
    assert!(jobs.replace(&due, version).await.expect("made due"));
    let calls = poller.fetched.lock().expect("lock").len();
    let outcome = worker
        .run(&job.key(), &poller, plenty())
        .await
        .expect("run");
    assert!(
        matches!(&outcome, RunOutcome::Failed { error } if error.contains("reauthorization")),
        "{outcome:?}"
    );
    assert_eq!(poller.fetched.lock().expect("lock").len(), calls, "no call");

    harness
        .vault
        .disconnect(&connection, true)
        .await
        .expect("disconnected");
    let outcome = worker
        .run(&job.key(), &poller, plenty())
        .await
        .expect("run");
    assert_eq!(outcome, RunOutcome::Removed);
    assert_eq!(jobs.get(&job.key()).await.expect("get"), None);
}

/// The poll-worker function's logic: a message that is not a poll message fails (to the
/// poll DLQ after retries); a model the catalog no longer polls ends its job; a run
/// that runs out of time is put straight back on the poll queue.
#[tokio::test]
async fn the_runner_reads_messages_and_continues_long_syncs() {
    let harness = junction_oauth::testing::harness_with(
        fake_provider::AuthServerConfig::default(),
        "[api]\nbase_url = \"{provider_api}\"\nrate_limit = { requests_per_second = 10.0, burst = 5, scope = \"connection\" }\n[polling]\nmodels = [{ name = \"issues\", poller = \"linear-issues\", interval_seconds = 60 }]\n",
    )
    .await;
    let connection = harness.connect().await;
    let jobs = Arc::new(InMemorySyncJobStore::default());
    let ingest = Arc::new(InMemoryEventQueue::default());
    let poll_queue = Arc::new(InMemoryEventQueue::default());
    let worker = PollWorker::new(
        jobs.clone(),
        ingest.clone(),
        harness.clock.clone(),
        Some(harness.vault.clone()),
    );
    let client = junction_outbound::OutboundClient::new(
        harness.vault.catalog(),
        harness.vault.clone(),
        Arc::new(junction_outbound::InMemorySharedState::default()),
        harness.clock.clone(),
    );
    let runner = PollRunner::new(worker, harness.vault.catalog(), client, poll_queue.clone());

    assert!(matches!(
        runner.handle("not json", plenty()).await,
        Err(PollRunError::BadMessage(_))
    ));

    let mut gone = sample_job(&connection, "contacts", 0);
    gone.provider = "fakeauth".into();
    jobs.insert(&gone).await.expect("job");
    let message = super::super::PollMessage::for_job(&gone).to_queue_message();
    let outcome = runner.handle(&message.body, plenty()).await.expect("run");
    assert_eq!(
        outcome,
        RunOutcome::Removed,
        "the catalog polls no `contacts`"
    );
    assert_eq!(jobs.get(&gone.key()).await.expect("get"), None);

    let mut job = sample_job(&connection, "issues", 0);
    job.provider = "fakeauth".into();
    jobs.insert(&job).await.expect("job");
    let message = super::super::PollMessage::for_job(&job).to_queue_message();
    let short = Instant::now() + Duration::from_secs(5);
    let outcome = runner.handle(&message.body, short).await.expect("run");
    assert_eq!(
        outcome,
        RunOutcome::Continue {
            pages: 0,
            records: 0
        }
    );
    assert_eq!(
        poll_queue.messages(),
        [message],
        "back on the poll queue at once"
    );
}
