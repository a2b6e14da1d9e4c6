//! Sync jobs: one per connection and model (`conn_…` + `deals`), holding the cursor the
//! next poll starts from, when it is due, and who is running it. Every change is a
//! conditional replace on the job's version, so two workers that overlap can never both
//! advance the cursor: the one whose lease was lost fails its write and stops.
//!
//! Jobs are kept behind a port ([`SyncJobStore`]): DynamoDB ([`DynamoSyncJobStore`], in
//! its own module `dynamo`, the only one here that knows the SDK) and memory.

use std::{collections::BTreeMap, sync::Mutex};

use async_trait::async_trait;
use junction_oauth::{ConnectionSetup, ConnectionSetupError, ConnectionStore};
use serde::{Deserialize, Serialize};

mod dynamo;

pub use dynamo::{DUE_INDEX, DynamoSyncJobStore};

/// A store failure (transient: retry later).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sync job store unavailable: {0}")]
pub struct JobStoreError(pub String);

/// Who runs a job, until when (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLease {
    pub owner: String,
    pub until: i64,
}

/// One connection's sync of one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncJob {
    pub connection: String,
    /// The tenant that owns the connection, so the job's own events (`connection.stale`)
    /// name it as the connection's other events do. `None` for jobs stored before the
    /// field existed, until their connection is set up again (a reconnect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub provider: String,
    /// The model the poller fetches (`deals`, `issues`, `history`).
    pub model: String,
    /// Where the next page starts; `None` before the first sync.
    pub cursor: Option<String>,
    /// When the next run is due (unix seconds).
    pub due_at: i64,
    /// Seconds between runs.
    pub interval_seconds: u32,
    pub lease: Option<JobLease>,
    /// Records sent over the job's life (reports).
    pub records_sent: u64,
    pub last_success_at: Option<i64>,
    pub last_error: Option<String>,
    pub version: u64,
    /// When the job was created (unix seconds): how long a job that never succeeded
    /// has been waiting. 0 for jobs stored before the field existed.
    #[serde(default)]
    pub created_at: i64,
    /// When the scheduler announced `connection.stale` for this job; cleared by the
    /// next successful run, so each stale spell is announced once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_since: Option<i64>,
}

impl SyncJob {
    /// The job's storage key.
    pub fn key(&self) -> String {
        job_key(&self.connection, &self.model)
    }
}

/// `<connection>#<model>`.
pub fn job_key(connection: &str, model: &str) -> String {
    format!("{connection}#{model}")
}

/// Where sync jobs live.
#[async_trait]
pub trait SyncJobStore: Send + Sync + std::fmt::Debug {
    async fn get(&self, key: &str) -> Result<Option<SyncJob>, JobStoreError>;
    /// Stores a new job; `false` if one exists.
    async fn insert(&self, job: &SyncJob) -> Result<bool, JobStoreError>;
    /// Replaces the job if its stored version is `expected`; `false` otherwise.
    async fn replace(&self, job: &SyncJob, expected: u64) -> Result<bool, JobStoreError>;
    /// Jobs due at or before `before`, earliest first, at most `limit`.
    async fn due(&self, before: i64, limit: usize) -> Result<Vec<SyncJob>, JobStoreError>;
    /// Deletes the job (its connection is gone); absent is fine.
    async fn remove(&self, key: &str) -> Result<(), JobStoreError>;
}

/// In memory, for unit tests.
#[derive(Debug, Default)]
pub struct InMemorySyncJobStore {
    jobs: Mutex<BTreeMap<String, SyncJob>>,
}

impl InMemorySyncJobStore {
    fn jobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SyncJob>> {
        self.jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl SyncJobStore for InMemorySyncJobStore {
    async fn get(&self, key: &str) -> Result<Option<SyncJob>, JobStoreError> {
        Ok(self.jobs().get(key).cloned())
    }

    async fn insert(&self, job: &SyncJob) -> Result<bool, JobStoreError> {
        let mut jobs = self.jobs();
        if jobs.contains_key(&job.key()) {
            return Ok(false);
        }
        jobs.insert(job.key(), job.clone());
        Ok(true)
    }

    async fn replace(&self, job: &SyncJob, expected: u64) -> Result<bool, JobStoreError> {
        let mut jobs = self.jobs();
        match jobs.get(&job.key()) {
            Some(current) if current.version == expected => {
                jobs.insert(job.key(), job.clone());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn due(&self, before: i64, limit: usize) -> Result<Vec<SyncJob>, JobStoreError> {
        let mut due: Vec<SyncJob> = self
            .jobs()
            .values()
            .filter(|job| job.due_at <= before)
            .cloned()
            .collect();
        due.sort_by_key(|job| job.due_at);
        due.truncate(limit);
        Ok(due)
    }

    async fn remove(&self, key: &str) -> Result<(), JobStoreError> {
        self.jobs().remove(key);
        Ok(())
    }
}

/// Creates the sync jobs of a new connection: one per model the catalog's `[polling]`
/// lists for its provider, due now (the first run is the initial sync), naming
/// `tenant`. Existing jobs are kept (a reconnect resumes from the stored cursor); one
/// stored before jobs named their tenant is given it. Returns how many were created.
pub async fn ensure_jobs(
    store: &dyn SyncJobStore,
    catalog: &junction_catalog::Catalog,
    provider: &str,
    connection: &str,
    tenant: Option<&str>,
    now: i64,
) -> Result<usize, JobStoreError> {
    let Some(polling) = catalog.get(provider).and_then(|p| p.polling.as_ref()) else {
        return Ok(0);
    };
    let mut created = 0;
    for model in &polling.models {
        let job = SyncJob {
            connection: connection.to_owned(),
            tenant: tenant.map(str::to_owned),
            provider: provider.to_owned(),
            model: model.name.clone(),
            cursor: None,
            due_at: now,
            interval_seconds: model.interval_seconds,
            lease: None,
            records_sent: 0,
            last_success_at: None,
            last_error: None,
            version: 1,
            created_at: now,
            stale_since: None,
        };
        if store.insert(&job).await? {
            created += 1;
        } else if let Some(tenant) = tenant {
            name_tenant(store, &job.key(), tenant).await?;
        }
    }
    Ok(created)
}

/// Gives an existing job without a tenant its tenant. A job whose write races with a
/// worker's is left for the next setup: the tenant only names its events.
async fn name_tenant(
    store: &dyn SyncJobStore,
    key: &str,
    tenant: &str,
) -> Result<(), JobStoreError> {
    let Some(existing) = store.get(key).await? else {
        return Ok(());
    };
    if existing.tenant.is_some() {
        return Ok(());
    }
    let next = SyncJob {
        tenant: Some(tenant.to_owned()),
        version: existing.version + 1,
        ..existing.clone()
    };
    if !store.replace(&next, existing.version).await? {
        tracing::info!(
            job = key,
            "job changed meanwhile; its tenant is named at the next setup"
        );
    }
    Ok(())
}

/// What [`force_poll`] did to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forced {
    /// The job is due now: the next scheduler tick (within a minute) hands it out.
    DueNow,
    /// Due now with its cursor cleared: it syncs from scratch.
    DueNowFromScratch,
    /// A worker holds its lease: it is running, so it was left alone.
    Running,
    /// The connection has no such job.
    NoSuchJob,
}

impl Forced {
    /// How `junction poll` and the logs say it.
    pub fn as_str(self) -> &'static str {
        match self {
            Forced::DueNow => "due now",
            Forced::DueNowFromScratch => "due now, from scratch",
            Forced::Running => "running",
            Forced::NoSuchJob => "no such job",
        }
    }

    /// Whether the job was made due (a reconciliation poll follows).
    pub fn is_due(self) -> bool {
        matches!(self, Forced::DueNow | Forced::DueNowFromScratch)
    }
}

/// Makes job `key` due at `now` (a reconciliation poll: `junction poll`, a detected
/// silence); `full` also clears its cursor. A job a worker holds (its lease runs past
/// `now`) is left alone: it is already polling, and a replace would take its lease.
/// Each change is a versioned replace; when the scheduler or a worker moved the job
/// between the read and the write, it is read again.
pub async fn force_poll(
    store: &dyn SyncJobStore,
    key: &str,
    now: i64,
    full: bool,
) -> Result<Forced, JobStoreError> {
    loop {
        let Some(job) = store.get(key).await? else {
            return Ok(Forced::NoSuchJob);
        };
        if job.lease.as_ref().is_some_and(|lease| lease.until > now) {
            return Ok(Forced::Running);
        }
        let mut next = job.clone();
        next.due_at = now;
        next.version = job.version + 1;
        if full {
            next.cursor = None;
        }
        if store.replace(&next, job.version).await? {
            return Ok(if full {
                Forced::DueNowFromScratch
            } else {
                Forced::DueNow
            });
        }
    }
}

/// The connect flow's [`ConnectionSetup`]: creates a new connection's sync jobs
/// ([`ensure_jobs`]) before the callback answers "connected".
#[derive(Debug, Clone)]
pub struct SyncJobSetup {
    store: std::sync::Arc<dyn SyncJobStore>,
    catalog: &'static junction_catalog::Catalog,
    /// Where the connection's tenant is read, for the jobs to name it; `None` creates
    /// jobs without a tenant (their `connection.stale` is then not stamped).
    connections: Option<std::sync::Arc<dyn ConnectionStore>>,
}

impl SyncJobSetup {
    pub fn new(
        store: std::sync::Arc<dyn SyncJobStore>,
        catalog: &'static junction_catalog::Catalog,
    ) -> Self {
        SyncJobSetup {
            store,
            catalog,
            connections: None,
        }
    }

    /// Reads each new connection's tenant from `connections` (one consistent read at
    /// connect), so its jobs and their `connection.stale` events name it. The connect
    /// flow's port passes only the provider and the connection id.
    pub fn with_connections(mut self, connections: std::sync::Arc<dyn ConnectionStore>) -> Self {
        self.connections = Some(connections);
        self
    }
}

#[async_trait]
impl ConnectionSetup for SyncJobSetup {
    async fn prepare(
        &self,
        provider: &str,
        connection_id: &str,
        now: i64,
    ) -> Result<(), ConnectionSetupError> {
        let tenant = match &self.connections {
            Some(connections) => connections
                .get(connection_id)
                .await
                .map_err(|err| ConnectionSetupError(Box::new(err)))?
                .map(|connection| connection.tenant),
            None => None,
        };
        ensure_jobs(
            self.store.as_ref(),
            self.catalog,
            provider,
            connection_id,
            tenant.as_deref(),
            now,
        )
        .await
        .map(|_| ())
        .map_err(|err| ConnectionSetupError(Box::new(err)))
    }
}

/// A job for tests and contracts.
pub fn sample_job(connection: &str, model: &str, due_at: i64) -> SyncJob {
    SyncJob {
        connection: connection.to_owned(),
        tenant: None,
        provider: "linear".to_owned(),
        model: model.to_owned(),
        cursor: None,
        due_at,
        interval_seconds: 900,
        lease: None,
        records_sent: 0,
        last_success_at: None,
        last_error: None,
        version: 1,
        created_at: due_at,
        stale_since: None,
    }
}

/// What every adapter must do (run against DynamoDB on the emulator too).
pub async fn check_job_store_contract(store: &dyn SyncJobStore) {
    let job = sample_job("conn_a", "issues", 100);
    assert!(store.insert(&job).await.expect("insert"), "new job stored");
    let mut named = sample_job("conn_named", "issues", 10_000);
    named.tenant = Some("acme".into());
    assert!(store.insert(&named).await.expect("insert"));
    assert_eq!(
        store.get(&named.key()).await.expect("get"),
        Some(named.clone()),
        "the tenant is kept"
    );
    store.remove(&named.key()).await.expect("remove");
    assert!(
        !store.insert(&job).await.expect("insert"),
        "no second job for the same key"
    );
    assert_eq!(store.get(&job.key()).await.expect("get"), Some(job.clone()));
    let mut advanced = job.clone();
    advanced.cursor = Some("page-2".into());
    advanced.version = 2;
    assert!(store.replace(&advanced, 1).await.expect("replace"));
    let mut stale = job.clone();
    stale.cursor = Some("page-1-again".into());
    stale.version = 2;
    assert!(
        !store.replace(&stale, 1).await.expect("replace"),
        "a stale writer loses"
    );
    assert_eq!(
        store
            .get(&job.key())
            .await
            .expect("get")
            .and_then(|j| j.cursor),
        Some("page-2".into())
    );
    store
        .insert(&sample_job("conn_b", "issues", 50))
        .await
        .expect("insert");
    store
        .insert(&sample_job("conn_c", "issues", 500))
        .await
        .expect("insert");
    let due: Vec<String> = store
        .due(100, 10)
        .await
        .expect("due")
        .iter()
        .map(|j| j.connection.clone())
        .collect();
    assert_eq!(due, ["conn_b", "conn_a"], "due ones, earliest first");
    assert_eq!(store.get("conn_z#issues").await.expect("get"), None);
    store.remove(&job.key()).await.expect("remove");
    assert_eq!(store.get(&job.key()).await.expect("get"), None, "removed");
    store
        .remove(&job.key())
        .await
        .expect("removing twice is fine");
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use junction_oauth::{InMemoryConnectionStore, sample_connection};

    use super::*;

    fn catalog() -> &'static junction_catalog::Catalog {
        junction_catalog::Catalog::embedded().expect("catalog")
    }

    #[tokio::test]
    async fn a_forced_poll_makes_the_job_due_now_and_leaves_a_running_one_alone() {
        let jobs = InMemorySyncJobStore::default();
        let mut job = sample_job("conn_1", "issues", 5_000);
        job.cursor = Some("page-7".into());
        jobs.insert(&job).await.expect("insert");
        assert_eq!(
            force_poll(&jobs, &job.key(), 1_000, false).await.ok(),
            Some(Forced::DueNow)
        );
        let forced = jobs.get(&job.key()).await.expect("get").expect("job");
        assert_eq!(
            (forced.due_at, forced.version, forced.cursor.as_deref()),
            (1_000, 2, Some("page-7")),
            "due now, from its cursor"
        );

        assert_eq!(
            force_poll(&jobs, &job.key(), 1_100, true).await.ok(),
            Some(Forced::DueNowFromScratch)
        );
        let full = jobs.get(&job.key()).await.expect("get").expect("job");
        assert_eq!((full.due_at, full.cursor.as_deref()), (1_100, None));

        let mut leased = full.clone();
        leased.lease = Some(JobLease {
            owner: "worker".into(),
            until: 2_000,
        });
        leased.due_at = 9_000;
        leased.version += 1;
        assert!(jobs.replace(&leased, full.version).await.expect("lease"));
        assert_eq!(
            force_poll(&jobs, &job.key(), 1_500, false).await.ok(),
            Some(Forced::Running)
        );
        assert_eq!(
            jobs.get(&job.key()).await.expect("get").map(|j| j.due_at),
            Some(9_000),
            "a running job is not touched"
        );
        assert_eq!(
            force_poll(&jobs, &job.key(), 2_001, false).await.ok(),
            Some(Forced::DueNow),
            "a lease that ran out does not hold it"
        );
        assert_eq!(
            force_poll(&jobs, "conn_none#issues", 1_000, false)
                .await
                .ok(),
            Some(Forced::NoSuchJob)
        );
    }

    /// A store whose first replace loses to a concurrent writer, as when the scheduler
    /// moves the job between the read and the write.
    #[derive(Debug, Default)]
    struct Contended {
        inner: InMemorySyncJobStore,
        lost: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl SyncJobStore for Contended {
        async fn get(&self, key: &str) -> Result<Option<SyncJob>, JobStoreError> {
            self.inner.get(key).await
        }
        async fn insert(&self, job: &SyncJob) -> Result<bool, JobStoreError> {
            self.inner.insert(job).await
        }
        async fn replace(&self, job: &SyncJob, expected: u64) -> Result<bool, JobStoreError> {
            if !self.lost.swap(true, std::sync::atomic::Ordering::SeqCst) {
                let mut moved = job.clone();
                moved.due_at = 7_777;
                moved.cursor = Some("moved".into());
                assert!(self.inner.replace(&moved, expected).await?);
                return Ok(false);
            }
            self.inner.replace(job, expected).await
        }
        async fn due(&self, before: i64, limit: usize) -> Result<Vec<SyncJob>, JobStoreError> {
            self.inner.due(before, limit).await
        }
        async fn remove(&self, key: &str) -> Result<(), JobStoreError> {
            self.inner.remove(key).await
        }
    }

    #[tokio::test]
    async fn a_forced_poll_that_loses_a_race_reads_the_job_again() {
        let jobs = Contended::default();
        let job = sample_job("conn_1", "issues", 5_000);
        jobs.insert(&job).await.expect("insert");
        assert_eq!(
            force_poll(&jobs, &job.key(), 1_000, false).await.ok(),
            Some(Forced::DueNow)
        );
        let forced = jobs.get(&job.key()).await.expect("get").expect("job");
        assert_eq!(
            (forced.due_at, forced.cursor.as_deref(), forced.version),
            (1_000, Some("moved"), 3),
            "the concurrent write is kept, and the job is due now"
        );
    }

    #[test]
    fn a_job_stored_before_jobs_named_their_tenant_is_still_read() {
        let mut job = sample_job("conn_old", "issues", 100);
        let mut document = serde_json::to_value(&job).expect("JSON");
        assert!(
            document.get("tenant").is_none(),
            "no tenant, no attribute: {document}"
        );
        document.as_object_mut().expect("object").remove("tenant");
        let read: SyncJob = serde_json::from_value(document).expect("an old job parses");
        assert_eq!(read, job);
        job.tenant = Some("acme".into());
        let round: SyncJob =
            serde_json::from_str(&serde_json::to_string(&job).expect("JSON")).expect("parse");
        assert_eq!(round.tenant.as_deref(), Some("acme"));
    }

    #[tokio::test]
    async fn a_connection_s_jobs_name_its_tenant() {
        let jobs = Arc::new(InMemorySyncJobStore::default());
        let connections = Arc::new(InMemoryConnectionStore::default());
        let mut connection = sample_connection("conn_1", "acme", 1_000);
        connection.provider = "linear".into();
        connections.insert(&connection).await.expect("stored");
        let setup = SyncJobSetup::new(jobs.clone(), catalog()).with_connections(connections);
        setup
            .prepare("linear", "conn_1", 1_000)
            .await
            .expect("set up");
        let created: Vec<SyncJob> = jobs.due(i64::MAX, 10).await.expect("due");
        assert!(!created.is_empty(), "Linear polls");
        assert!(
            created
                .iter()
                .all(|job| job.tenant.as_deref() == Some("acme") && job.connection == "conn_1"),
            "{created:?}"
        );

        // Without a connection store (or a connection gone meanwhile): no tenant.
        SyncJobSetup::new(jobs.clone(), catalog())
            .prepare("linear", "conn_2", 1_000)
            .await
            .expect("set up");
        let unnamed = jobs.due(i64::MAX, 10).await.expect("due");
        assert!(
            unnamed
                .iter()
                .filter(|job| job.connection == "conn_2")
                .all(|job| job.tenant.is_none())
        );
    }

    #[tokio::test]
    async fn a_reconnect_names_the_tenant_of_a_job_stored_without_one() {
        let jobs = InMemorySyncJobStore::default();
        let provider = "linear";
        ensure_jobs(&jobs, catalog(), provider, "conn_1", None, 1_000)
            .await
            .expect("created");
        let before = jobs.due(i64::MAX, 10).await.expect("due");
        assert!(before.iter().all(|job| job.tenant.is_none()));
        let created = ensure_jobs(&jobs, catalog(), provider, "conn_1", Some("acme"), 2_000)
            .await
            .expect("set up again");
        assert_eq!(created, 0, "the jobs are kept");
        for job in jobs.due(i64::MAX, 10).await.expect("due") {
            let old = before
                .iter()
                .find(|b| b.key() == job.key())
                .expect("same job");
            assert_eq!(job.tenant.as_deref(), Some("acme"));
            assert_eq!(
                (job.cursor.clone(), job.due_at, job.version),
                (old.cursor.clone(), old.due_at, old.version + 1),
                "the cursor and due time are kept"
            );
        }
        // A tenant already named is not rewritten.
        ensure_jobs(&jobs, catalog(), provider, "conn_1", Some("other"), 3_000)
            .await
            .expect("set up again");
        assert!(
            jobs.due(i64::MAX, 10)
                .await
                .expect("due")
                .iter()
                .all(|job| job.tenant.as_deref() == Some("acme"))
        );
    }
}
