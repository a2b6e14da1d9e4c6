//! The subscription manager: creates a connection's push subscription at connect,
//! renews it before it expires, answers Graph's lifecycle notifications, and deletes
//! it at disconnect, all from the catalog's `[subscription]` data and through the
//! outbound client (the connection's token, refreshed once on a 401, the provider's
//! breaker and rate limit).
//!
//! A provider that fails a request does not fail the caller: the record turns
//! `failing`, `connection.subscription_failed` is published, and the renewal sweep
//! retries with a growing backoff. Once the expiry has passed, deliveries may have been
//! lost: the connection's sync jobs are forced due (a reconciliation poll) and the
//! subscription is created again. Only Junction's own stores failing is an error.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::settings::SubscriptionSettings;
use crate::store::{StoreError, Subscription, SubscriptionState, SubscriptionStore};
use junction_aws::clock::{Clock, rfc3339_millis};
use junction_aws::events::{CloudEvent, EventBus};
use junction_aws::secrets::{SecretSource, parse_webhook_secret_set, webhook_secret_name};
use junction_catalog::{
    Catalog, ExpiryFormat, FailureClass, LifecycleAction, SubscriptionMethod, SubscriptionRequest,
    SubscriptionSpec,
};
use junction_oauth::{
    Connection, ConnectionSetup, ConnectionSetupError, ConnectionTeardown, ConnectionTeardownError,
    TokenVault, VaultError,
};
use junction_outbound::{Call, CallError, OutboundClient};
use junction_polling::jobs::{Forced, JobStoreError, SyncJobStore, force_poll, job_key};
use junction_telemetry::error_chain;

/// How many due records one sweep reads.
const SWEEP_LIMIT: usize = 100;
/// The first retry after a failure; doubled by each further failure in a row.
const FIRST_RETRY_SECONDS: i64 = 300;
/// The longest wait between two retries.
const MAX_RETRY_SECONDS: i64 = 6 * 3600;
/// Graph's limit on `clientState` (subscription resource: "Maximum length is 128
/// characters"); a longer secret would be refused by every create.
const MAX_CLIENT_STATE: usize = 128;
/// What one connect or disconnect may spend waiting for the provider's rate limit,
/// beyond the one call itself ([`call_budget`]).
const RATE_WAIT_BUDGET: Duration = Duration::from_secs(3);

/// Why the manager could not do its part: Junction's own stores, never the provider.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error("the subscription store is unavailable")]
    Store(#[source] StoreError),
    #[error("the connection could not be read")]
    Connection(#[source] VaultError),
    #[error("the sync job store is unavailable")]
    Jobs(#[source] JobStoreError),
}

impl From<StoreError> for SubscriptionError {
    fn from(err: StoreError) -> Self {
        SubscriptionError::Store(err)
    }
}

/// What one operation on one subscription came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Renewed,
    Reauthorized,
    Deleted,
    /// Sync jobs forced due (a reconciliation poll); how many.
    Reconciled(usize),
    /// Nothing to do, and why (`no_subscription`, `push_off`, `already_active`, …).
    Skipped(&'static str),
    /// The provider (or what the request needs) failed; retried by the sweep.
    Failed(String),
}

/// What a renewal sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenewalReport {
    pub due: usize,
    pub renewed: usize,
    pub created: usize,
    pub failed: usize,
    /// Records whose expiry had passed: a reconciliation poll was forced for them.
    pub expired: usize,
    /// Records left for the next run (the budget ran out).
    pub deferred: usize,
}

/// The ports and settings the manager works with.
#[derive(Debug, Clone)]
pub struct SubscriptionPorts {
    pub catalog: &'static Catalog,
    pub client: OutboundClient,
    pub vault: TokenVault,
    pub store: Arc<dyn SubscriptionStore>,
    /// Where the webhook secrets are (`{client_state}`).
    pub secrets: Arc<dyn SecretSource>,
    /// The sync jobs a reconciliation poll forces due; `None` where the function
    /// cannot write them.
    pub jobs: Option<Arc<dyn SyncJobStore>>,
    pub bus: Arc<dyn EventBus>,
    pub clock: Arc<dyn Clock>,
    pub settings: SubscriptionSettings,
}

/// Creates, renews, reauthorizes and deletes subscriptions.
#[derive(Debug, Clone)]
pub struct SubscriptionManager {
    ports: SubscriptionPorts,
}

/// The values a request's placeholders are filled with.
#[derive(Debug, Default)]
struct Values {
    filled: BTreeMap<&'static str, String>,
    /// The expiry asked for, unix seconds.
    requested_expiry: Option<i64>,
}

impl SubscriptionManager {
    pub fn new(ports: SubscriptionPorts) -> Self {
        SubscriptionManager { ports }
    }

    /// The ports it was built with (tests build a variant).
    #[cfg(test)]
    pub(crate) fn ports(&self) -> SubscriptionPorts {
        self.ports.clone()
    }

    fn spec(&self, provider: &str) -> Option<&'static SubscriptionSpec> {
        self.ports
            .catalog
            .get(provider)
            .and_then(|p| p.subscription.as_ref())
    }

    fn now(&self) -> i64 {
        self.ports.clock.now().unix_timestamp()
    }

    /// Creates the connection's subscription unless it has a live one (a reconnect).
    /// Push a stack turned off (no topic) is skipped; a provider failure is recorded
    /// for the sweep to retry and published, and is not an error.
    pub async fn ensure(
        &self,
        provider: &str,
        connection_id: &str,
        now: i64,
        deadline: Instant,
    ) -> Result<Outcome, SubscriptionError> {
        let Some(spec) = self.spec(provider) else {
            return Ok(Outcome::Skipped("no_subscription"));
        };
        if spec.uses("topic") && !self.ports.settings.topics.contains_key(provider) {
            tracing::info!(
                provider,
                connection = connection_id,
                outcome = "subscription_off",
                "no push topic configured: no subscription"
            );
            return Ok(Outcome::Skipped("push_off"));
        }
        let connection = self
            .ports
            .vault
            .connection(connection_id)
            .await
            .map_err(SubscriptionError::Connection)?;
        let existing = self.ports.store.get(connection_id).await?;
        if let Some(record) = &existing
            && record.state == SubscriptionState::Active
            && record.expires_at.is_some_and(|at| at > now)
        {
            return Ok(Outcome::Skipped("already_active"));
        }
        let expected = existing.as_ref().map(|r| r.version);
        let mut record = existing.unwrap_or_else(|| Subscription {
            connection: connection.id.clone(),
            provider: provider.to_owned(),
            tenant: connection.tenant.clone(),
            subscription_id: None,
            expires_at: None,
            renew_at: None,
            state: SubscriptionState::Active,
            failures: 0,
            last_error: None,
            reconciled_expiry: None,
            version: 0,
        });
        let outcome = self
            .create(spec, &mut record, now, deadline, "create")
            .await;
        self.save(&mut record, expected).await?;
        Ok(outcome)
    }

    /// Acts on every record due by now: renews it, retries a failed attempt, or, once
    /// its expiry has passed, forces a reconciliation poll and creates it again.
    /// Starts nothing after `deadline`.
    pub async fn renew_due(&self, deadline: Instant) -> Result<RenewalReport, SubscriptionError> {
        let now = self.now();
        let due = self.ports.store.due(now, SWEEP_LIMIT).await?;
        let mut report = RenewalReport {
            due: due.len(),
            ..RenewalReport::default()
        };
        for (index, record) in due.into_iter().enumerate() {
            if Instant::now() >= deadline {
                report.deferred = report.due - index;
                break;
            }
            let connection = record.connection.clone();
            match self.renew_one(record, now, deadline, &mut report).await {
                Ok(Outcome::Failed(_)) => report.failed += 1,
                Ok(Outcome::Renewed | Outcome::Reauthorized) => report.renewed += 1,
                Ok(Outcome::Created) => report.created += 1,
                Ok(_) => {}
                Err(err) => {
                    // One record's store failure does not stop the others.
                    tracing::warn!(
                        connection = %connection,
                        error = %error_chain(&err),
                        outcome = "subscription_renewal_failed",
                        "subscription renewal"
                    );
                    report.failed += 1;
                }
            }
        }
        Ok(report)
    }

    async fn renew_one(
        &self,
        mut record: Subscription,
        now: i64,
        deadline: Instant,
        report: &mut RenewalReport,
    ) -> Result<Outcome, SubscriptionError> {
        let expected = Some(record.version);
        let Some(spec) = self.spec(&record.provider) else {
            // The catalog (an overlay) no longer declares it: nothing to renew with.
            self.ports.store.delete(&record.connection).await?;
            return Ok(Outcome::Skipped("no_subscription"));
        };
        match self.ports.vault.connection(&record.connection).await {
            Ok(_) => {}
            Err(VaultError::NotFound(_)) => {
                self.ports.store.delete(&record.connection).await?;
                return Ok(Outcome::Skipped("connection_gone"));
            }
            Err(err) => return Err(SubscriptionError::Connection(err)),
        }
        let expiry = record.expires_at;
        let outcome = match expiry {
            Some(at) if at <= now => {
                report.expired += 1;
                if record.reconciled_expiry != Some(at) {
                    // Deliveries since `at` never came: poll for them.
                    self.reconcile(&record, now).await?;
                    record.reconciled_expiry = Some(at);
                }
                self.create(spec, &mut record, now, deadline, "recreate")
                    .await
            }
            Some(_) => self.renew(spec, &mut record, now, deadline).await,
            None => {
                self.create(spec, &mut record, now, deadline, "create")
                    .await
            }
        };
        self.save(&mut record, expected).await?;
        Ok(outcome)
    }

    /// Handles the lifecycle notifications in one delivery of `provider` (Graph's
    /// `{"value": [{"lifecycleEvent", "subscriptionId", …}]}`): each item's event is
    /// looked up in the catalog's `actions`. Items that are no lifecycle notification,
    /// or name an unknown subscription, are skipped (logged).
    pub async fn handle_lifecycle(
        &self,
        provider: &str,
        body: &Value,
        deadline: Instant,
    ) -> Result<Vec<Outcome>, SubscriptionError> {
        let Some(spec) = self.spec(provider) else {
            return Ok(Vec::new());
        };
        let Some(lifecycle) = &spec.lifecycle else {
            return Ok(Vec::new());
        };
        let items = body
            .pointer(&lifecycle.items)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut outcomes = Vec::new();
        for item in items {
            let Some(event) = item.pointer(&lifecycle.event).and_then(Value::as_str) else {
                continue;
            };
            let Some(action) = lifecycle.actions.get(event).copied() else {
                tracing::info!(
                    provider,
                    lifecycle_event = event,
                    outcome = "lifecycle_ignored",
                    "lifecycle event without an action"
                );
                continue;
            };
            let Some(id) = item
                .pointer(&lifecycle.subscription_id)
                .and_then(Value::as_str)
            else {
                continue;
            };
            let Some(mut record) = self.ports.store.by_subscription_id(provider, id).await? else {
                tracing::info!(
                    provider,
                    lifecycle_event = event,
                    outcome = "lifecycle_unknown_subscription",
                    "lifecycle event for a subscription Junction does not hold"
                );
                continue;
            };
            let now = self.now();
            let expected = Some(record.version);
            let outcome = match action {
                LifecycleAction::Reauthorize => match &spec.reauthorize {
                    Some(request) => {
                        self.reauthorize(spec, request, &mut record, now, deadline)
                            .await
                    }
                    None => self.renew(spec, &mut record, now, deadline).await,
                },
                LifecycleAction::Recreate => {
                    self.create(spec, &mut record, now, deadline, "recreate")
                        .await
                }
                LifecycleAction::Reconcile => {
                    Outcome::Reconciled(self.reconcile(&record, now).await?)
                }
            };
            if !matches!(outcome, Outcome::Reconciled(_)) {
                self.save(&mut record, expected).await?;
            }
            tracing::info!(
                provider,
                connection = %record.connection,
                lifecycle_event = event,
                outcome = ?outcome,
                "lifecycle notification handled"
            );
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    /// Deletes the connection's subscription at the provider, then its record. Gone
    /// already, or refused for good (the grant revoked): done, it ends at its expiry.
    pub async fn delete(
        &self,
        connection: &Connection,
        deadline: Instant,
    ) -> Result<Outcome, DeleteError> {
        let Some(record) = self.ports.store.get(&connection.id).await? else {
            return Ok(Outcome::Skipped("no_subscription"));
        };
        let now = self.now();
        let live = record.expires_at.is_some_and(|at| at > now);
        let outcome = match self.spec(&record.provider) {
            Some(spec) if live => {
                let values = match self.values(spec, &spec.delete, &record, now) {
                    Ok(values) => values,
                    Err(reason) => return Err(DeleteError::Provider(reason)),
                };
                match self
                    .send(
                        &record,
                        "subscription.delete",
                        &spec.delete,
                        &values,
                        &[404, 410],
                        deadline,
                    )
                    .await
                {
                    Ok(_) => Outcome::Deleted,
                    Err(failure) if failure.retryable => {
                        return Err(DeleteError::Provider(failure.code));
                    }
                    Err(failure) => {
                        tracing::warn!(
                            provider = %record.provider,
                            connection = %record.connection,
                            error = %failure.code,
                            outcome = "subscription_delete_refused",
                            "the provider refused the delete; the subscription ends at its expiry"
                        );
                        Outcome::Skipped("refused")
                    }
                }
            }
            _ => Outcome::Skipped("not_live"),
        };
        self.ports.store.delete(&connection.id).await?;
        Ok(outcome)
    }

    /// Sends `create` and records what the answer says.
    async fn create(
        &self,
        spec: &SubscriptionSpec,
        record: &mut Subscription,
        now: i64,
        deadline: Instant,
        operation: &'static str,
    ) -> Outcome {
        let values = match self.values(spec, &spec.create, record, now) {
            Ok(values) => values,
            Err(reason) => return self.failed(record, operation, reason, now).await,
        };
        let answer = match self
            .send(
                record,
                "subscription.create",
                &spec.create,
                &values,
                &[],
                deadline,
            )
            .await
        {
            Ok(answer) => answer,
            Err(failure) => return self.failed(record, operation, failure.code, now).await,
        };
        let id = match &spec.id {
            Some(pointer) => match answer.pointer(pointer).and_then(Value::as_str) {
                Some(id) => Some(id.to_owned()),
                None => {
                    return self
                        .failed(record, operation, "no_subscription_id".into(), now)
                        .await;
                }
            },
            None => None,
        };
        let Some(expires_at) = expiry_of(spec, &answer.body()).or(values.requested_expiry) else {
            return self
                .failed(record, operation, "no_expiry".into(), now)
                .await;
        };
        record.subscription_id = id;
        self.succeeded(spec, record, expires_at, now);
        tracing::info!(
            provider = %record.provider,
            connection = %record.connection,
            operation,
            expires_at,
            outcome = "subscription_created",
            "subscription created"
        );
        Outcome::Created
    }

    /// Sends `renew` (or `create` again where renewing is creating); a subscription the
    /// provider no longer has is created again.
    async fn renew(
        &self,
        spec: &SubscriptionSpec,
        record: &mut Subscription,
        now: i64,
        deadline: Instant,
    ) -> Outcome {
        let Some(request) = &spec.renew else {
            return match self.create(spec, record, now, deadline, "renew").await {
                Outcome::Created => Outcome::Renewed,
                other => other,
            };
        };
        if record.subscription_id.is_none() && spec.id.is_some() {
            return self.create(spec, record, now, deadline, "create").await;
        }
        let values = match self.values(spec, request, record, now) {
            Ok(values) => values,
            Err(reason) => return self.failed(record, "renew", reason, now).await,
        };
        match self
            .send(
                record,
                "subscription.renew",
                request,
                &values,
                &[404],
                deadline,
            )
            .await
        {
            Ok(Answer::Gone) => self.create(spec, record, now, deadline, "recreate").await,
            Ok(answer) => {
                let Some(expires_at) = expiry_of(spec, &answer.body()).or(values.requested_expiry)
                else {
                    return self.failed(record, "renew", "no_expiry".into(), now).await;
                };
                self.succeeded(spec, record, expires_at, now);
                tracing::info!(
                    provider = %record.provider,
                    connection = %record.connection,
                    expires_at,
                    outcome = "subscription_renewed",
                    "subscription renewed"
                );
                Outcome::Renewed
            }
            Err(failure) => self.failed(record, "renew", failure.code, now).await,
        }
    }

    /// Answers a reauthorization challenge; the expiry is unchanged.
    async fn reauthorize(
        &self,
        spec: &SubscriptionSpec,
        request: &SubscriptionRequest,
        record: &mut Subscription,
        now: i64,
        deadline: Instant,
    ) -> Outcome {
        let values = match self.values(spec, request, record, now) {
            Ok(values) => values,
            Err(reason) => return self.failed(record, "reauthorize", reason, now).await,
        };
        match self
            .send(
                record,
                "subscription.reauthorize",
                request,
                &values,
                &[404],
                deadline,
            )
            .await
        {
            Ok(Answer::Gone) => self.create(spec, record, now, deadline, "recreate").await,
            Ok(_) => {
                record.state = SubscriptionState::Active;
                record.failures = 0;
                record.last_error = None;
                Outcome::Reauthorized
            }
            Err(failure) => self.failed(record, "reauthorize", failure.code, now).await,
        }
    }

    /// Forces the connection's sync jobs due: a reconciliation poll. How many.
    async fn reconcile(&self, record: &Subscription, now: i64) -> Result<usize, SubscriptionError> {
        let models = self
            .ports
            .catalog
            .get(&record.provider)
            .and_then(|p| p.polling.as_ref())
            .map(|polling| polling.models.as_slice())
            .unwrap_or_default();
        let Some(jobs) = &self.ports.jobs else {
            return Ok(0);
        };
        let mut forced = 0;
        for model in models {
            let key = job_key(&record.connection, &model.name);
            let result = force_poll(jobs.as_ref(), &key, now, false)
                .await
                .map_err(SubscriptionError::Jobs)?;
            if result.is_due() || result == Forced::Running {
                forced += 1;
            }
        }
        tracing::info!(
            provider = %record.provider,
            connection = %record.connection,
            forced,
            outcome = if forced > 0 { "reconciliation_forced" } else { "no_sync_job" },
            "reconciliation poll"
        );
        Ok(forced)
    }

    /// Records a success: active, the expiry, when to renew.
    fn succeeded(
        &self,
        spec: &SubscriptionSpec,
        record: &mut Subscription,
        expires_at: i64,
        now: i64,
    ) {
        let renew_before = i64::try_from(spec.renew_before_seconds).unwrap_or(i64::MAX);
        // A provider that grants less than `renew_before` is renewed halfway instead of
        // at once, every run.
        let ahead = expires_at.saturating_sub(renew_before);
        let renew_at = if ahead > now {
            ahead
        } else {
            now + (expires_at - now).max(0) / 2
        };
        record.expires_at = Some(expires_at);
        record.renew_at = Some(renew_at);
        record.state = SubscriptionState::Active;
        record.failures = 0;
        record.last_error = None;
    }

    /// Records a failure (retry with backoff) and publishes
    /// `connection.subscription_failed`.
    async fn failed(
        &self,
        record: &mut Subscription,
        operation: &'static str,
        reason: String,
        now: i64,
    ) -> Outcome {
        record.failures = record.failures.saturating_add(1);
        record.state = SubscriptionState::Failing;
        record.last_error = Some(reason.clone());
        let retry_at = now + retry_delay(record.failures);
        record.renew_at = Some(retry_at);
        tracing::warn!(
            provider = %record.provider,
            connection = %record.connection,
            operation,
            error = %reason,
            failures = record.failures,
            retry_at,
            outcome = "subscription_failed",
            "subscription request failed"
        );
        let event = subscription_failed_event(record, operation, &reason, now, retry_at);
        if let Err(err) = self.ports.bus.publish(std::slice::from_ref(&event)).await {
            // The record keeps the failure; the next failed retry publishes again.
            tracing::error!(
                provider = %record.provider,
                connection = %record.connection,
                error = %error_chain(&err),
                outcome = "publish_failed",
                "connection.subscription_failed not published"
            );
        }
        Outcome::Failed(reason)
    }

    /// Writes `record` over version `expected`.
    async fn save(
        &self,
        record: &mut Subscription,
        expected: Option<u64>,
    ) -> Result<(), StoreError> {
        record.version = expected.map_or(1, |v| v + 1);
        if !self.ports.store.put(record, expected).await? {
            // Another run wrote first; the next sweep reads what it left.
            tracing::warn!(
                provider = %record.provider,
                connection = %record.connection,
                outcome = "subscription_write_lost",
                "the subscription record changed meanwhile"
            );
        }
        Ok(())
    }

    /// The values `request` needs, or the short reason one is missing.
    fn values(
        &self,
        spec: &SubscriptionSpec,
        request: &SubscriptionRequest,
        record: &Subscription,
        now: i64,
    ) -> Result<Values, String> {
        let mut values = Values::default();
        let provider = record.provider.as_str();
        if request.uses("webhook_url") {
            let base = self.ports.settings.webhook_base_url.clone();
            let Some(base) = base else {
                return Err("webhook_url_unknown".into());
            };
            let base = if base.ends_with('/') {
                base
            } else {
                format!("{base}/")
            };
            values
                .filled
                .insert("webhook_url", format!("{base}{provider}"));
        }
        if request.uses("topic") {
            let Some(topic) = self.ports.settings.topics.get(provider) else {
                return Err("no_topic".into());
            };
            values.filled.insert("topic", topic.clone());
        }
        if request.uses("expiration") {
            let lifetime = spec.lifetime_seconds.unwrap_or_default();
            let at = now.saturating_add(i64::try_from(lifetime).unwrap_or(i64::MAX));
            values.requested_expiry = Some(at);
            values.filled.insert("expiration", format_expiry(spec, at)?);
        }
        if request.uses("subscription_id") {
            let Some(id) = record.subscription_id.as_deref() else {
                return Err("no_subscription_id".into());
            };
            // It goes into a path: only an id's characters.
            if id.is_empty()
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err("bad_subscription_id".into());
            }
            values.filled.insert("subscription_id", id.to_owned());
        }
        Ok(values)
    }

    /// The newest signing secret of the provider's webhook secret: what every
    /// notification must carry as its `clientState`.
    async fn client_state(&self, provider: &str) -> Result<String, String> {
        let name = webhook_secret_name(&self.ports.settings.secret_prefix, provider, None);
        let text = match self.ports.secrets.secret_string(&name).await {
            Ok(Some(text)) => text,
            Ok(None) => return Err("no_webhook_secret".into()),
            Err(err) => {
                tracing::warn!(provider, error = %error_chain(&err), "webhook secret unreadable");
                return Err("webhook_secret_unavailable".into());
            }
        };
        let set = parse_webhook_secret_set(&name, &text).map_err(|_| "webhook_secret_malformed")?;
        let secret = set
            .signing_secrets
            .first()
            .ok_or("no_webhook_secret")?
            .expose()
            .to_owned();
        if secret.len() > MAX_CLIENT_STATE {
            return Err("client_state_too_long".into());
        }
        Ok(secret)
    }

    /// Sends one filled request through the outbound client. `gone`: statuses that mean
    /// the subscription no longer exists at the provider.
    async fn send(
        &self,
        record: &Subscription,
        operation: &'static str,
        request: &SubscriptionRequest,
        values: &Values,
        gone: &[u16],
        deadline: Instant,
    ) -> Result<Answer, Failure> {
        let provider = record.provider.as_str();
        let base = self
            .ports
            .catalog
            .get(provider)
            .and_then(|p| p.api.as_ref())
            .and_then(|api| api.base_url.as_deref())
            .ok_or_else(|| Failure::permanent("no_api_base_url"))?;
        let url = format!(
            "{}{}",
            base.trim_end_matches('/'),
            fill(&request.path, &values.filled)
        );
        let url = self
            .ports
            .catalog
            .endpoint_rules()
            .check(&url)
            .map_err(|_| Failure::permanent("endpoint_not_allowed"))?;
        let body = match &request.body {
            Some(template) => {
                let mut body = fill_json(template, &values.filled);
                if request.uses("client_state") {
                    let state = self
                        .client_state(provider)
                        .await
                        .map_err(Failure::retryable)?;
                    replace_in_strings(&mut body, "{client_state}", &state);
                }
                Some(serde_json::to_vec(&body).map_err(|_| Failure::permanent("body"))?)
            }
            None => None,
        };
        let method = match request.method {
            SubscriptionMethod::Post => reqwest::Method::POST,
            SubscriptionMethod::Patch => reqwest::Method::PATCH,
            SubscriptionMethod::Delete => reqwest::Method::DELETE,
        };
        let call = Call {
            provider,
            connection: &record.connection,
            operation,
            deadline,
            accept: gone,
        };
        let result = self
            .ports
            .client
            .send(call, |http, token| {
                let builder = http
                    .request(method.clone(), url.clone())
                    .bearer_auth(token.value.expose());
                match &body {
                    Some(body) => builder
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.clone()),
                    None => builder,
                }
            })
            .await;
        match result {
            Ok(response) if gone.contains(&response.status) => Ok(Answer::Gone),
            Ok(response) => Ok(Answer::Body(
                serde_json::from_slice(&response.body).unwrap_or(Value::Null),
            )),
            Err(CallError::Failed(failure)) => Err(Failure {
                code: failure.code.clone(),
                retryable: failure.class == FailureClass::Transient
                    || failure.class == FailureClass::RateLimited,
            }),
            Err(CallError::NeedsReauth(_)) => Err(Failure::permanent("needs_reauth")),
            Err(CallError::Requeue { reason, .. }) => Err(Failure::retryable(reason.to_string())),
            Err(CallError::Unavailable(reason)) => {
                tracing::warn!(provider, error = %reason, "outbound client unavailable");
                Err(Failure::retryable("junction_unavailable"))
            }
        }
    }
}

/// Why a delete could not be done now.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error("the subscription store is unavailable")]
    Store(#[from] StoreError),
    /// A transient provider failure (or a missing value): retry the disconnect.
    #[error("the provider did not delete the subscription: {0}")]
    Provider(String),
}

/// The provider's answer to one request.
#[derive(Debug)]
enum Answer {
    Body(Value),
    /// The subscription does not exist there (any more).
    Gone,
}

impl Answer {
    fn body(&self) -> Value {
        match self {
            Answer::Body(body) => body.clone(),
            Answer::Gone => Value::Null,
        }
    }

    fn pointer(&self, pointer: &str) -> Option<&Value> {
        match self {
            Answer::Body(body) => body.pointer(pointer),
            Answer::Gone => None,
        }
    }
}

/// A failed request: a short code, and whether trying again soon may help.
#[derive(Debug)]
struct Failure {
    code: String,
    retryable: bool,
}

impl Failure {
    fn permanent(code: impl Into<String>) -> Self {
        Failure {
            code: code.into(),
            retryable: false,
        }
    }

    fn retryable(code: impl Into<String>) -> Self {
        Failure {
            code: code.into(),
            retryable: true,
        }
    }
}

/// What one connect or disconnect may spend on the provider's subscription call: the
/// outbound client's whole call timeout and a short wait for the rate limit. The
/// client lets a request wait for its rate limit only as long as the deadline leaves
/// beyond the call timeout, so a budget under the timeout refused every request.
fn call_budget(call_timeout: Duration) -> Duration {
    call_timeout + RATE_WAIT_BUDGET
}

/// `FIRST_RETRY_SECONDS`, doubled per failure in a row, at most `MAX_RETRY_SECONDS`.
fn retry_delay(failures: u32) -> i64 {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_RETRY_SECONDS << doublings).min(MAX_RETRY_SECONDS)
}

/// The expiry an answer states, unix seconds.
fn expiry_of(spec: &SubscriptionSpec, body: &Value) -> Option<i64> {
    let value = body.pointer(&spec.expiry.pointer)?;
    match spec.expiry.format {
        ExpiryFormat::UnixMillis => {
            let millis = match value {
                Value::Number(n) => n.as_i64()?,
                Value::String(s) => s.parse::<i64>().ok()?,
                _ => return None,
            };
            Some(millis.div_euclid(1000))
        }
        ExpiryFormat::Rfc3339 => OffsetDateTime::parse(
            value.as_str()?,
            &time::format_description::well_known::Rfc3339,
        )
        .ok()
        .map(OffsetDateTime::unix_timestamp),
    }
}

/// `at` as the provider writes expiries.
fn format_expiry(spec: &SubscriptionSpec, at: i64) -> Result<String, String> {
    match spec.expiry.format {
        ExpiryFormat::UnixMillis => Ok(at.saturating_mul(1000).to_string()),
        ExpiryFormat::Rfc3339 => OffsetDateTime::from_unix_timestamp(at)
            .map(rfc3339_millis)
            .map_err(|_| "bad_expiration".to_owned()),
    }
}

/// `template` with each known `{name}` replaced.
fn fill(template: &str, values: &BTreeMap<&'static str, String>) -> String {
    let mut out = template.to_owned();
    for (name, value) in values {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

/// The body template with its string values filled.
fn fill_json(template: &Value, values: &BTreeMap<&'static str, String>) -> Value {
    match template {
        Value::String(text) => Value::String(fill(text, values)),
        Value::Array(items) => Value::Array(items.iter().map(|v| fill_json(v, values)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), fill_json(v, values)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Replaces `placeholder` in every string of `value` (the secret is filled last, and
/// never kept in [`Values`], which is logged on no path but stays plain data).
fn replace_in_strings(value: &mut Value, placeholder: &str, with: &str) {
    match value {
        Value::String(text) => *text = text.replace(placeholder, with),
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| replace_in_strings(v, placeholder, with)),
        Value::Object(map) => map
            .values_mut()
            .for_each(|v| replace_in_strings(v, placeholder, with)),
        _ => {}
    }
}

/// `connection.subscription_failed`, stamped with the tenant and connection like every
/// `connection.*` event. Its id is stable per connection and attempt time.
pub(crate) fn subscription_failed_event(
    record: &Subscription,
    operation: &str,
    reason: &str,
    now: i64,
    retry_at: i64,
) -> CloudEvent {
    let at = |seconds: i64| {
        OffsetDateTime::from_unix_timestamp(seconds)
            .ok()
            .map(rfc3339_millis)
    };
    let data = json!({
        "connection_id": record.connection,
        "tenant": record.tenant,
        "provider": record.provider,
        "subscription_id": record.subscription_id,
        "operation": operation,
        "reason": reason,
        "failures": record.failures,
        "expires_at": record.expires_at.and_then(at),
        "expired": record.expires_at.is_some_and(|e| e <= now),
        "retry_at": at(retry_at),
    });
    CloudEvent::new(
        &record.provider,
        &format!("{}:subscription:{now}", record.connection),
        "subscription_failed",
        "connection.subscription_failed".to_owned(),
        Some(record.connection.clone()),
        at(now).unwrap_or_default(),
        data,
    )
    .stamped(&record.tenant, &record.connection)
}

#[async_trait::async_trait]
impl ConnectionSetup for SubscriptionManager {
    /// Creates the subscription before the callback answers; only Junction's own
    /// stores failing fails the connect (the user connects again, which resumes).
    async fn prepare(
        &self,
        provider: &str,
        connection_id: &str,
        now: i64,
    ) -> Result<(), ConnectionSetupError> {
        let budget = call_budget(self.ports.client.call_timeout());
        self.ensure(provider, connection_id, now, Instant::now() + budget)
            .await
            .map(|_| ())
            .map_err(|err| ConnectionSetupError(Box::new(err)))
    }
}

#[async_trait::async_trait]
impl ConnectionTeardown for SubscriptionManager {
    async fn teardown(&self, connection: &Connection) -> Result<(), ConnectionTeardownError> {
        let budget = call_budget(self.ports.client.call_timeout());
        self.delete(connection, Instant::now() + budget)
            .await
            .map(|_| ())
            .map_err(|err| ConnectionTeardownError(Box::new(err)))
    }
}

/// The connect flow's setup in a function that never opens tokens (the oauth one):
/// records the connection's subscription as pending and publishes
/// `connection.subscription_pending`, which a rule on the bus hands to the
/// subscription-manager function (it may open tokens) to create the subscription
/// within seconds. The record is also due [`PENDING_HEAD_START_SECONDS`] later, so the
/// renewal run (every 5 minutes) creates it if that event is lost. Push a stack turned
/// off (no topic) gets no record; an existing live subscription (a reconnect) is kept.
#[derive(Debug, Clone)]
pub struct SubscriptionScheduler {
    pub catalog: &'static Catalog,
    pub store: Arc<dyn SubscriptionStore>,
    /// Where the connection's tenant is read (no token is opened).
    pub connections: Arc<dyn junction_oauth::ConnectionStore>,
    pub bus: Arc<dyn EventBus>,
    pub settings: SubscriptionSettings,
}

/// How long the event path has before the renewal run may create a pending
/// subscription too: both creating it at once would leave the provider an orphan
/// subscription until it expires.
pub const PENDING_HEAD_START_SECONDS: i64 = 60;

impl SubscriptionScheduler {
    /// Schedules the create; what it did.
    pub async fn schedule(
        &self,
        provider: &str,
        connection_id: &str,
        now: i64,
    ) -> Result<Outcome, SubscriptionError> {
        let Some(spec) = self
            .catalog
            .get(provider)
            .and_then(|p| p.subscription.as_ref())
        else {
            return Ok(Outcome::Skipped("no_subscription"));
        };
        if spec.uses("topic") && !self.settings.topics.contains_key(provider) {
            return Ok(Outcome::Skipped("push_off"));
        }
        let existing = self.store.get(connection_id).await?;
        if let Some(record) = &existing
            && record.state == SubscriptionState::Active
            && record.expires_at.is_some_and(|at| at > now)
        {
            return Ok(Outcome::Skipped("already_active"));
        }
        let tenant = self
            .connections
            .get(connection_id)
            .await
            .map_err(|err| {
                SubscriptionError::Connection(VaultError::unavailable("the connection store", err))
            })?
            .map(|c| c.tenant)
            .unwrap_or_default();
        let expected = existing.as_ref().map(|r| r.version);
        let mut record = existing.unwrap_or_else(|| Subscription {
            connection: connection_id.to_owned(),
            provider: provider.to_owned(),
            tenant: tenant.clone(),
            subscription_id: None,
            expires_at: None,
            renew_at: None,
            state: SubscriptionState::Pending,
            failures: 0,
            last_error: None,
            reconciled_expiry: None,
            version: 0,
        });
        record.renew_at = Some(now + PENDING_HEAD_START_SECONDS);
        if record.expires_at.is_none() {
            record.state = SubscriptionState::Pending;
        }
        record.version = expected.map_or(1, |v| v + 1);
        self.store.put(&record, expected).await?;
        // A lost event costs minutes, not the subscription: the renewal run creates it.
        let announced = self
            .bus
            .publish(&[subscription_pending_event(&record, now)])
            .await;
        if let Err(err) = &announced {
            tracing::warn!(
                provider,
                connection = connection_id,
                error = %error_chain(err),
                outcome = "subscription_pending_not_published",
                "connection.subscription_pending not published: the renewal run creates it"
            );
        }
        tracing::info!(
            provider,
            connection = connection_id,
            outcome = "subscription_scheduled",
            "subscription to be created by the subscription manager"
        );
        Ok(Outcome::Skipped("scheduled"))
    }
}

/// `connection.subscription_pending`: the connection's subscription is to be created.
/// Its id is stable per connection and record version, so a redelivery is one create.
pub(crate) fn subscription_pending_event(record: &Subscription, now: i64) -> CloudEvent {
    let data = json!({
        "connection_id": record.connection,
        "tenant": record.tenant,
        "provider": record.provider,
    });
    CloudEvent::new(
        &record.provider,
        &format!("{}:subscription:{}", record.connection, record.version),
        "subscription_pending",
        SUBSCRIPTION_PENDING.to_owned(),
        Some(record.connection.clone()),
        OffsetDateTime::from_unix_timestamp(now)
            .map(rfc3339_millis)
            .unwrap_or_default(),
        data,
    )
    .stamped(&record.tenant, &record.connection)
}

/// The type of [`subscription_pending_event`], which the subscription-manager
/// function's rule matches.
pub const SUBSCRIPTION_PENDING: &str = "connection.subscription_pending";

#[async_trait::async_trait]
impl ConnectionSetup for SubscriptionScheduler {
    async fn prepare(
        &self,
        provider: &str,
        connection_id: &str,
        now: i64,
    ) -> Result<(), ConnectionSetupError> {
        self.schedule(provider, connection_id, now)
            .await
            .map(|_| ())
            .map_err(|err| ConnectionSetupError(Box::new(err)))
    }
}

/// Several [`ConnectionSetup`]s run in order (the sync jobs, then the subscription);
/// the first failure stops the connect.
#[derive(Debug, Default)]
pub struct ConnectionSetups(pub Vec<Arc<dyn ConnectionSetup>>);

#[async_trait::async_trait]
impl ConnectionSetup for ConnectionSetups {
    async fn prepare(
        &self,
        provider: &str,
        connection_id: &str,
        now: i64,
    ) -> Result<(), ConnectionSetupError> {
        for setup in &self.0 {
            setup.prepare(provider, connection_id, now).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connect_or_disconnect_leaves_room_for_the_rate_limit_beyond_the_call() {
        let timeout = junction_outbound::client::CALL_TIMEOUT;
        assert!(call_budget(timeout) >= timeout + Duration::from_secs(1));
        assert_eq!(call_budget(timeout) - timeout, RATE_WAIT_BUDGET);
    }

    #[test]
    fn retries_back_off_to_six_hours() {
        assert_eq!(retry_delay(1), 300);
        assert_eq!(retry_delay(2), 600);
        assert_eq!(retry_delay(4), 2400);
        assert_eq!(retry_delay(10), MAX_RETRY_SECONDS);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY_SECONDS);
    }

    #[test]
    fn expiries_are_read_in_either_format() {
        let catalog = Catalog::embedded().expect("catalog");
        let gmail = catalog
            .get("gmail")
            .expect("present")
            .subscription
            .as_ref()
            .expect("present");
        let graph = catalog
            .get("microsoft")
            .expect("present")
            .subscription
            .as_ref()
            .expect("present");
        // Gmail's int64 as a string of milliseconds.
        assert_eq!(
            expiry_of(
                gmail,
                &json!({"historyId": "1", "expiration": "1800604800000"})
            ),
            Some(1_800_604_800)
        );
        // Graph's DateTimeOffset with seven fractional digits, as its docs show it.
        assert_eq!(
            expiry_of(
                graph,
                &json!({"expirationDateTime": "2027-01-15T08:00:00.0000000Z"})
            ),
            Some(1_800_000_000)
        );
        assert_eq!(expiry_of(graph, &json!({})), None);
        assert_eq!(
            format_expiry(graph, 1_800_000_000).expect("present"),
            "2027-01-15T08:00:00.000Z"
        );
    }
}
