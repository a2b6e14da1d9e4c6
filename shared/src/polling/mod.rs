//! Scheduled polling: sync jobs with their cursors ([`jobs`]) and the worker that runs
//! one job incrementally into the ingest queue ([`worker`]). The pollers for each
//! provider, the scheduler that finds due jobs and the Lambda functions around them are
//! issue 7's remaining work.

pub mod jobs;
pub mod worker;

pub use jobs::{
    DynamoSyncJobStore, InMemorySyncJobStore, JobLease, JobStoreError, SyncJob, SyncJobStore,
    check_job_store_contract, job_key, sample_job,
};
pub use worker::{Page, PollWorker, PolledRecord, Poller, RunOutcome};
