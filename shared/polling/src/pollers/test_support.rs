//! The pollers' test bench: the fake provider on loopback (a real OAuth server whose
//! `/provider/…` API answers what each test serves, in the provider's documented
//! shapes), a connected account, and the outbound client with in-memory shared state.

use std::{sync::Arc, time::Duration};

use super::{Api, PollTarget};
use crate::{Page, PolledRecord, Poller, SyncJob, sample_job};
use junction_aws::clock::SystemClock;
use junction_aws::retry::Backoff;
use junction_oauth::testing::{Harness, harness_with};
use junction_outbound::{InMemorySharedState, OutboundClient, RetryPolicy};

pub(crate) use fake_provider::{ApiRequest, AuthServerConfig, ScriptedResponse};

/// The fake provider's `[api]` section; `{provider_api}` is its base URL. A generous
/// rate (the limiter has its own tests).
const API: &str = r#"
[api]
base_url = "{provider_api}"
rate_limit = { requests_per_second = 200.0, burst = 50, scope = "connection" }
"#;

pub(crate) struct Bench {
    pub harness: Harness,
    pub api: Api,
    pub job: SyncJob,
}

/// A bench whose provider API adds `error_rules` (TOML lines inside `[api]`, may be "").
pub(crate) async fn bench_with_rules(error_rules: &str) -> Bench {
    let harness = harness_with(
        AuthServerConfig::default(),
        &format!("{API}{error_rules}\n"),
    )
    .await;
    let connection = harness.connect().await;
    let client = OutboundClient::new(
        harness.vault.catalog(),
        harness.vault.clone(),
        Arc::new(InMemorySharedState::default()),
        Arc::new(SystemClock),
    )
    .with_policy(RetryPolicy {
        backoff: Backoff {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(80),
        },
        max_attempts: 5,
    })
    .with_call_timeout(Duration::from_millis(500));
    let mut job = sample_job(&connection, "records", 0);
    job.provider = "fakeauth".into();
    Bench {
        harness,
        api: Api { client },
        job,
    }
}

pub(crate) async fn bench() -> Bench {
    bench_with_rules("").await
}

impl Bench {
    /// Serves the provider API with `handler`.
    pub fn serve(&self, handler: impl Fn(&ApiRequest) -> ScriptedResponse + Send + Sync + 'static) {
        self.harness.server.serve_provider_api(handler);
    }

    /// The requests the provider API received.
    pub fn requests(&self) -> Vec<ApiRequest> {
        self.harness.server.provider_requests()
    }

    /// One page from `cursor`.
    pub async fn page(
        &self,
        poller: &dyn Poller,
        cursor: Option<&str>,
    ) -> Result<Page, junction_outbound::CallError> {
        let base = self.harness.server.provider_api_base();
        let target = PollTarget {
            job: &self.job,
            base_url: &base,
            deadline: std::time::Instant::now() + Duration::from_secs(60),
        };
        poller.page(&target, cursor).await
    }

    /// Pages from `cursor` until the poller says no more follow (at most `limit` pages):
    /// the records in order and the final cursor.
    pub async fn sync(
        &self,
        poller: &dyn Poller,
        cursor: Option<&str>,
        limit: usize,
    ) -> (Vec<PolledRecord>, Option<String>) {
        let mut cursor = cursor.map(str::to_owned);
        let mut records = Vec::new();
        for _ in 0..limit {
            let page = self
                .page(poller, cursor.as_deref())
                .await
                .expect("page fetched");
            records.extend(page.records);
            cursor = page.cursor;
            if !page.more {
                return (records, cursor);
            }
        }
        panic!("the sync did not end within {limit} pages");
    }
}

/// The `error_rules = [...]` line of a catalog entry (its TOML text), as
/// [`bench_with_rules`] takes it: the bench classifies errors by the provider's own rules.
pub(crate) fn catalog_error_rules(catalog_toml: &str) -> String {
    let start = catalog_toml
        .find("error_rules = [")
        .expect("the entry has error_rules");
    let end = catalog_toml[start..].find("\n]").expect("error_rules ends") + start + 2;
    catalog_toml[start..end].to_owned()
}

/// What a polled record normalizes to, through the adapter the consumer would use.
pub(crate) fn normalize_polled(
    provider: &str,
    resource: &str,
    record: &PolledRecord,
) -> Vec<junction_pipeline::normalize::Normalized> {
    let headers = std::collections::BTreeMap::new();
    let body = record.body.to_string();
    let raw = junction_pipeline::normalize::RawEvent {
        provider,
        resource: Some(resource),
        event_type: None,
        event_id: None,
        headers: &headers,
        body: body.as_bytes(),
        pinned_api_version: None,
    };
    junction_pipeline::normalize::normalize(&raw)
        .expect("the record maps")
        .items
}
