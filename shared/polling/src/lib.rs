//! Scheduled polling: sync jobs with their cursors ([`jobs`]), the scheduler that hands
//! due jobs to the poll queue ([`scheduler`]), the worker that runs one job
//! incrementally into the ingest queue ([`worker`]), and the provider pollers it runs
//! ([`pollers`]).

pub mod jobs;
pub mod log;
pub mod pollers;
pub mod scheduler;
pub mod settings;
pub mod worker;

pub use jobs::{
    DynamoSyncJobStore, InMemorySyncJobStore, JobLease, JobStoreError, SyncJob, SyncJobSetup,
    SyncJobStore, check_job_store_contract, ensure_jobs, job_key, sample_job,
};
pub use pollers::PollTarget;
pub use scheduler::{DEFAULT_STALE_AFTER_INTERVALS, DispatchReport, PollMessage, PollScheduler};
pub use worker::{Page, PollRunError, PollRunner, PollWorker, PolledRecord, Poller, RunOutcome};
