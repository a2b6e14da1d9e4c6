//! The DynamoDB adapter of [`SyncJobStore`]: jobs as items with a due-time index, each
//! change a `PutItem` conditional on the stored version
//! ([`junction_aws::dynamo::put_if`]). The scheduler and the worker over it know nothing
//! of it; it meets the same contract as the in-memory store
//! ([`super::check_job_store_contract`], run on the emulator in
//! `tests/tests/integration/polling_emulator.rs`).

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use junction_aws::dynamo::{PutCondition, put_if};

use super::{JobStoreError, SyncJob, SyncJobStore};

/// DynamoDB: key `pk` (`<connection>#<model>`), `doc` (JSON), `version`, and `due`
/// (constant `"job"`) + `due_at` for the `by-due` index.
#[derive(Debug, Clone)]
pub struct DynamoSyncJobStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

/// The due-time index of the sync job table.
pub const DUE_INDEX: &str = "by-due";

impl DynamoSyncJobStore {
    pub fn from_config(aws: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        DynamoSyncJobStore {
            client: aws_sdk_dynamodb::Client::new(aws),
            table: table.into(),
        }
    }

    fn item(
        job: &SyncJob,
    ) -> Result<std::collections::HashMap<String, AttributeValue>, JobStoreError> {
        let doc = serde_json::to_string(job).map_err(|err| JobStoreError(err.to_string()))?;
        Ok([
            ("pk".to_owned(), AttributeValue::S(job.key())),
            ("doc".to_owned(), AttributeValue::S(doc)),
            (
                "version".to_owned(),
                AttributeValue::N(job.version.to_string()),
            ),
            ("due".to_owned(), AttributeValue::S("job".to_owned())),
            (
                "due_at".to_owned(),
                AttributeValue::N(job.due_at.to_string()),
            ),
        ]
        .into_iter()
        .collect())
    }

    fn parse(
        item: &std::collections::HashMap<String, AttributeValue>,
    ) -> Result<SyncJob, JobStoreError> {
        let doc = item
            .get("doc")
            .and_then(|v| v.as_s().ok())
            .ok_or_else(|| JobStoreError("item without doc".into()))?;
        serde_json::from_str(doc).map_err(|err| JobStoreError(err.to_string()))
    }
}

/// Keeps the whole chain: an SDK error's own text is only "service error".
fn store_error(err: impl std::error::Error + 'static) -> JobStoreError {
    JobStoreError(junction_telemetry::error_chain(&err))
}

#[async_trait]
impl SyncJobStore for DynamoSyncJobStore {
    async fn get(&self, key: &str) -> Result<Option<SyncJob>, JobStoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| store_error(aws_sdk_dynamodb::Error::from(err)))?;
        output.item.as_ref().map(Self::parse).transpose()
    }

    async fn insert(&self, job: &SyncJob) -> Result<bool, JobStoreError> {
        put_if(
            &self.client,
            &self.table,
            Self::item(job)?,
            PutCondition::New {
                key_attribute: "pk",
            },
        )
        .await
        .map_err(store_error)
    }

    async fn replace(&self, job: &SyncJob, expected: u64) -> Result<bool, JobStoreError> {
        put_if(
            &self.client,
            &self.table,
            Self::item(job)?,
            PutCondition::Version(expected),
        )
        .await
        .map_err(store_error)
    }

    async fn due(&self, before: i64, limit: usize) -> Result<Vec<SyncJob>, JobStoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(DUE_INDEX)
            .key_condition_expression("due = :job AND due_at <= :before")
            .expression_attribute_values(":job", AttributeValue::S("job".to_owned()))
            .expression_attribute_values(":before", AttributeValue::N(before.to_string()))
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|err| store_error(aws_sdk_dynamodb::Error::from(err)))?;
        output.items().iter().map(Self::parse).collect()
    }

    async fn remove(&self, key: &str) -> Result<(), JobStoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key.to_owned()))
            .send()
            .await
            .map_err(|err| store_error(aws_sdk_dynamodb::Error::from(err)))?;
        Ok(())
    }
}
