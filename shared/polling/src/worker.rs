//! The poll worker's core: run one sync job from its stored cursor, page by page,
//! sending every record into the ingest queue (the webhooks' path, so polled and pushed
//! data are deduplicated and normalized the same way) and advancing the cursor after
//! each page with a conditional write.
//!
//! - A lease (a conditional write) makes one worker run a job at a time; a worker whose
//!   lease was taken over fails its next cursor write and stops ([`RunOutcome::LostLease`]).
//!   Records it sent before stopping carry the same event ids the new owner sends, so
//!   the consumer's idempotency drops the repeats: no page is lost, none is processed
//!   twice.
//! - The cursor only moves after a page's records are all on the queue: a crash or a
//!   queue failure repeats the page, never skips it.
//! - Long syncs continue over several invocations: when too little time is left for
//!   another page, the worker stops with [`RunOutcome::Continue`] and the job stays due.

use std::{sync::Arc, time::Instant};

use async_trait::async_trait;

use super::{
    jobs::{JobLease, JobStoreError, SyncJob, SyncJobStore},
    pollers::PollTarget,
};
use junction_aws::clock::Clock;
use junction_aws::queue::{EventQueue, QueueMessage, attribute};
use junction_oauth::{ConnectionState, TokenVault, VaultError};
use junction_outbound::CallError;

/// One record as a poller fetched it.
#[derive(Debug, Clone, PartialEq)]
pub struct PolledRecord {
    /// The provider's id of the record.
    pub id: String,
    /// Its last modification as the provider states it (part of the event id, so a
    /// later change is a new event and a repeat of the same version is not).
    pub updated_at: String,
    pub body: serde_json::Value,
}

/// One page of a sync.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub records: Vec<PolledRecord>,
    /// The cursor to store once this page is sent (the next page's start, or the new
    /// watermark after the last page).
    pub cursor: Option<String>,
    /// Whether another page follows now.
    pub more: bool,
}

/// Fetches pages of one provider model, incrementally from a cursor.
#[async_trait]
pub trait Poller: Send + Sync + std::fmt::Debug {
    /// The resource name put on queue messages (selects the normalization adapter).
    fn resource(&self) -> &str;

    /// Fetches the page that starts at `cursor` (`None`: the first sync).
    async fn page(&self, target: &PollTarget<'_>, cursor: Option<&str>) -> Result<Page, CallError>;
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// The sync caught up; the next run is due after the job's interval.
    Done { pages: u32, records: u64 },
    /// Time ran out with pages left; run the job again now.
    Continue { pages: u32, records: u64 },
    /// Another worker holds the job.
    Busy,
    /// Another worker took the job over mid-run; this one stopped.
    LostLease,
    /// The provider asked to wait (or its breaker is open): due again after `after`.
    Requeue { after: std::time::Duration },
    /// The sync failed; noted on the job and the connection, due after the interval.
    Failed { error: String },
    /// The connection is gone (disconnected), or the catalog no longer polls the model:
    /// the job was removed.
    Removed,
}

/// The worker over its ports.
#[derive(Debug, Clone)]
pub struct PollWorker {
    jobs: Arc<dyn SyncJobStore>,
    queue: Arc<dyn EventQueue>,
    clock: Arc<dyn Clock>,
    /// Notes sync results on the connection (`last_successful_sync`, last error).
    vault: Option<TokenVault>,
    /// How long a lease lasts (longer than one page takes).
    pub lease_seconds: i64,
    /// The time a page may take: below this much time left, the run stops.
    pub page_budget: std::time::Duration,
}

impl PollWorker {
    pub fn new(
        jobs: Arc<dyn SyncJobStore>,
        queue: Arc<dyn EventQueue>,
        clock: Arc<dyn Clock>,
        vault: Option<TokenVault>,
    ) -> Self {
        PollWorker {
            jobs,
            queue,
            clock,
            vault,
            lease_seconds: 120,
            page_budget: std::time::Duration::from_secs(15),
        }
    }

    fn now(&self) -> i64 {
        self.clock.now().unix_timestamp()
    }

    /// Runs job `key` until it catches up, time runs out, or it fails.
    pub async fn run(
        &self,
        key: &str,
        poller: &dyn Poller,
        deadline: Instant,
    ) -> Result<RunOutcome, JobStoreError> {
        let owner = junction_oauth::random_token();
        let Some(found) = self.jobs.get(key).await? else {
            return Ok(RunOutcome::Failed {
                error: format!("no sync job {key}"),
            });
        };
        let now = self.now();
        if found.lease.as_ref().is_some_and(|lease| lease.until > now) {
            return Ok(RunOutcome::Busy);
        }
        let mut job = found.clone();
        job.lease = Some(JobLease {
            owner,
            until: now + self.lease_seconds,
        });
        job.version = found.version + 1;
        if !self.jobs.replace(&job, found.version).await? {
            return Ok(RunOutcome::Busy);
        }
        let base_url = match self.base_url(&job).await {
            Ok(base_url) => base_url,
            Err(Stop::Removed) => {
                self.jobs.remove(key).await?;
                tracing::info!(job = key, "connection deleted; sync job removed");
                return Ok(RunOutcome::Removed);
            }
            Err(Stop::Requeue(reason)) => {
                let after = std::time::Duration::from_secs(60);
                let due = self.now() + 60;
                self.finish(&job, Some(due), Some(&reason)).await?;
                return Ok(RunOutcome::Requeue { after });
            }
            Err(Stop::Failed(error)) => return self.fail(&job, error).await,
        };
        let (mut pages, mut records) = (0u32, 0u64);
        loop {
            if deadline.saturating_duration_since(Instant::now()) < self.page_budget {
                self.finish(&job, None, None).await?;
                return Ok(RunOutcome::Continue { pages, records });
            }
            let target = PollTarget {
                job: &job,
                base_url: &base_url,
                deadline,
            };
            let page = match poller.page(&target, job.cursor.as_deref()).await {
                Ok(page) => page,
                Err(CallError::Requeue { after, .. }) => {
                    let due = self.now() + i64::try_from(after.as_secs()).unwrap_or(900);
                    self.finish(&job, Some(due), None).await?;
                    return Ok(RunOutcome::Requeue { after });
                }
                Err(err) => return self.fail(&job, err.to_string()).await,
            };
            for record in &page.records {
                if let Err(err) = self
                    .queue
                    .send(message(
                        &job,
                        poller.resource(),
                        record,
                        self.clock.as_ref(),
                    ))
                    .await
                {
                    return self.fail(&job, format!("ingest queue: {err}")).await;
                }
            }
            pages += 1;
            records += page.records.len() as u64;
            let mut next = job.clone();
            next.cursor = page.cursor.clone();
            next.records_sent += page.records.len() as u64;
            next.version = job.version + 1;
            if let Some(lease) = next.lease.as_mut() {
                lease.until = self.now() + self.lease_seconds;
            }
            if !page.more {
                next.due_at = self.now() + i64::from(job.interval_seconds);
                next.last_success_at = Some(self.now());
                next.last_error = None;
                next.stale_since = None;
                next.lease = None;
            }
            if !self.jobs.replace(&next, job.version).await? {
                tracing::warn!(job = key, "sync job taken over by another worker; stopping");
                return Ok(RunOutcome::LostLease);
            }
            job = next;
            if !page.more {
                if let Some(vault) = &self.vault
                    && let Err(err) = vault.record_sync(&job.connection, None).await
                {
                    tracing::warn!(connection = %job.connection, error = %junction_telemetry::error_chain(&err), "sync not noted on the connection");
                }
                return Ok(RunOutcome::Done { pages, records });
            }
        }
    }

    /// The provider API's base URL for the job's connection, after checking the
    /// connection is still there and authorized. Without a vault (unit tests of the
    /// worker alone) the poller gets an empty base URL.
    async fn base_url(&self, job: &SyncJob) -> Result<String, Stop> {
        let Some(vault) = &self.vault else {
            return Ok(String::new());
        };
        let connection = match vault.connection(&job.connection).await {
            Ok(connection) => connection,
            Err(VaultError::NotFound(_)) => return Err(Stop::Removed),
            // The job's last error reaches the product (`connection.stale`): a fixed
            // code there, the store's own words only in the log.
            Err(err) => {
                tracing::warn!(
                    job = %job.key(), connection = %job.connection,
                    error = %junction_telemetry::error_chain(&err),
                    outcome = "poll_requeued",
                    "the connection could not be read; the job is requeued"
                );
                return Err(Stop::Requeue("connection_unavailable".into()));
            }
        };
        if connection.state == ConnectionState::NeedsReauth {
            return Err(Stop::Failed(
                "connection needs reauthorization; polling resumes after a reconnect".into(),
            ));
        }
        super::pollers::base_url(vault.catalog(), &job.provider, &connection.params)
            .map_err(Stop::Failed)
    }

    /// Releases the lease (when still ours), optionally moving the due time and noting
    /// an error; the cursor stays.
    async fn finish(
        &self,
        job: &SyncJob,
        due_at: Option<i64>,
        error: Option<&str>,
    ) -> Result<(), JobStoreError> {
        let mut next = job.clone();
        next.lease = None;
        next.version = job.version + 1;
        if let Some(due_at) = due_at {
            next.due_at = due_at;
        }
        if let Some(error) = error {
            next.last_error = Some(error.to_owned());
        }
        if !self.jobs.replace(&next, job.version).await? {
            tracing::warn!(job = %job.key(), "sync job taken over before its lease was released");
        }
        Ok(())
    }

    async fn fail(&self, job: &SyncJob, error: String) -> Result<RunOutcome, JobStoreError> {
        let due = self.now() + i64::from(job.interval_seconds);
        self.finish(job, Some(due), Some(&error)).await?;
        if let Some(vault) = &self.vault
            && let Err(err) = vault.record_sync(&job.connection, Some(&error)).await
        {
            tracing::warn!(connection = %job.connection, error = %junction_telemetry::error_chain(&err), "sync error not noted on the connection");
        }
        Ok(RunOutcome::Failed { error })
    }
}

/// Why a poll queue message could not be run.
#[derive(Debug, thiserror::Error)]
pub enum PollRunError {
    /// Not a poll message (permanent: the message goes to the poll DLQ for an operator
    /// to look at).
    #[error("bad poll message: {0}")]
    BadMessage(String),
    /// The job store or the poll queue is unavailable (retried by SQS).
    #[error(transparent)]
    Store(#[from] JobStoreError),
    #[error("poll queue: {0}")]
    Queue(String),
}

/// The poll-worker function's logic: reads a poll queue message, picks the poller the
/// catalog names for the job's model, runs the job, and puts a job that ran out of time
/// straight back on the poll queue.
#[derive(Debug, Clone)]
pub struct PollRunner {
    worker: PollWorker,
    catalog: &'static junction_catalog::Catalog,
    pollers: std::collections::BTreeMap<String, Arc<dyn Poller>>,
    poll_queue: Arc<dyn EventQueue>,
}

impl PollRunner {
    /// `client` is the outbound client every poller calls through.
    pub fn new(
        worker: PollWorker,
        catalog: &'static junction_catalog::Catalog,
        client: junction_outbound::OutboundClient,
        poll_queue: Arc<dyn EventQueue>,
    ) -> Self {
        let pollers = junction_catalog::POLLERS
            .iter()
            .filter_map(|name| {
                super::pollers::build(name, client.clone()).map(|p| ((*name).to_owned(), p))
            })
            .collect();
        PollRunner {
            worker,
            catalog,
            pollers,
            poll_queue,
        }
    }

    /// Runs the job a poll queue message names.
    pub async fn handle(&self, body: &str, deadline: Instant) -> Result<RunOutcome, PollRunError> {
        let message = super::PollMessage::parse(body)
            .map_err(|err| PollRunError::BadMessage(err.to_string()))?;
        let poller = self
            .catalog
            .get(&message.provider)
            .and_then(|p| p.polling.as_ref())
            .and_then(|polling| polling.models.iter().find(|m| m.name == message.model))
            .and_then(|model| self.pollers.get(&model.poller));
        let outcome = match poller {
            Some(poller) => {
                self.worker
                    .run(&message.job_key(), poller.as_ref(), deadline)
                    .await?
            }
            // The catalog (an overlay) no longer polls this model: its jobs end.
            None => {
                self.worker.jobs.remove(&message.job_key()).await?;
                RunOutcome::Removed
            }
        };
        crate::log::record_poll_run(
            &message.provider,
            &message.connection,
            &message.model,
            &outcome,
        );
        if let RunOutcome::Continue { .. } = outcome {
            self.poll_queue
                .send(message.to_queue_message())
                .await
                .map_err(|err| PollRunError::Queue(err.to_string()))?;
        }
        Ok(outcome)
    }
}

/// Why a run stops before its first page.
enum Stop {
    Removed,
    Requeue(String),
    Failed(String),
}

/// The queue message of a polled record: the same attributes as a webhook's, with
/// `origin = poll`, the resource, the connection, and an event id that names the record
/// version (`<resource>:<id>:<updated_at>`).
pub fn message(
    job: &SyncJob,
    resource: &str,
    record: &PolledRecord,
    clock: &dyn Clock,
) -> QueueMessage {
    let attributes = [
        (attribute::PROVIDER, job.provider.clone()),
        (
            attribute::EVENT_ID,
            format!("{resource}:{}:{}", record.id, record.updated_at),
        ),
        (attribute::EVENT_ID_SOURCE, "poll".to_owned()),
        (attribute::ORIGIN, "poll".to_owned()),
        (attribute::RESOURCE, resource.to_owned()),
        (attribute::CONNECTION, job.connection.clone()),
        (
            attribute::RECEIVED_AT,
            junction_aws::clock::rfc3339_millis(clock.now()),
        ),
        (attribute::BODY_ENCODING, "utf8".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    QueueMessage {
        body: record.body.to_string(),
        attributes,
    }
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
