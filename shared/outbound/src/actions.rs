//! Asynchronous actions: a proxy request to run later. `POST
//! /v1/tenants/{tenant}/connections/{id}/actions` checks the request as the proxy does,
//! puts it on the actions queue and answers 202 with the action's id; the action runner
//! (the queue's Lambda) sends it through the [`Proxy`] until it succeeds or fails for
//! good, and announces the outcome on the bus: `action.succeeded` or `action.failed`,
//! stamped with the tenant and the connection.
//!
//! Every action is idempotent: its key is the caller's `idempotency_key`, else the
//! action's own id, so a write runs once however often its message is received (a
//! provider that takes keys deduplicates; for the others Junction's record does). A
//! caller's key also names the action ([`keyed_action_id`]): queuing the same key again
//! answers the same action id.
//!
//! Retries go across invocations: a transient failure (a 5xx, a 429, a timeout, the
//! breaker open) makes the message visible again after a backoff (exponential with full
//! jitter, or the provider's own `Retry-After`) through `ChangeMessageVisibility`, and
//! the runner reports it as a batch item failure. After [`MAX_ACTION_ATTEMPTS`]
//! receives the action fails for good (`retries_exhausted`). The queue's redrive limit is
//! above that, so the DLQ only takes messages the runner cannot handle at all (not an
//! action, or the bus down for every attempt).

use std::{sync::Arc, time::Duration, time::Instant};

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::idempotency::ProxyIdempotencyStore;
use super::proxy::{self, Outcome, Proxy, ProxyAnswer, ProxyRequest};
use super::{CallFailure, OutboundClient, RateLimitHeaders};
use junction_aws::clock::{Clock, rfc3339_millis};
use junction_aws::events::{CloudEvent, EventBus};
use junction_aws::queue::{EventQueue, QueueMessage, RetryScheduler};
use junction_catalog::FailureClass;
use junction_oauth::web::{self, HttpReply};
use junction_oauth::{Connection, TokenVault};

/// Receives of an action's message before the runner gives up on it.
pub const MAX_ACTION_ATTEMPTS: u32 = 8;

/// The first retry's backoff ceiling; doubled per attempt up to [`MAX_BACKOFF`].
pub const BASE_BACKOFF: Duration = Duration::from_secs(10);
/// The longest backoff between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// The longest wait a provider may ask for (SQS's longest visibility timeout, 12 h).
const MAX_PROVIDER_WAIT: Duration = Duration::from_secs(43_200);

/// The largest provider body carried in an `action.succeeded` or `action.failed` event:
/// the bus takes 256 KB an event, and a body escaped into JSON can double.
pub const EVENT_BODY_CAP: usize = 64 * 1024;

/// An action as it travels on the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// `act_` and 32 hex characters.
    pub id: String,
    pub tenant: String,
    pub connection: String,
    /// The connection's provider, when the action was accepted.
    pub provider: String,
    /// The request; its `idempotency_key` is set (the caller's, else the action id).
    pub request: ProxyRequest,
    /// When it was accepted (RFC 3339).
    pub accepted_at: String,
}

/// A new action id: 128 random bits.
pub fn new_action_id() -> String {
    format!("act_{}", hex::encode(rand::random::<[u8; 16]>()))
}

/// The id of the action a caller's `idempotency_key` names on `connection`: the same
/// key always names the same action, so queuing it again is a repeat, not a second
/// action (its events have the same ids, its write runs once).
pub fn keyed_action_id(connection: &str, key: &str) -> String {
    let hash = super::idempotency::request_hash([connection.as_bytes(), key.as_bytes()]);
    format!("act_{}", &hash[..32])
}

/// What queuing an action takes: the connections, the actions queue, the statuses and
/// the clock.
#[derive(Debug, Clone, Copy)]
pub struct ActionPorts<'a> {
    pub vault: &'a TokenVault,
    pub queue: &'a dyn EventQueue,
    pub statuses: &'a dyn ActionStatusStore,
    pub clock: &'a dyn Clock,
}

/// `POST /v1/tenants/{tenant}/connections/{id}/actions`: 202 `{action_id, status:
/// "queued"}`; 400 for a request the proxy would refuse (the reason named), 404 for
/// another tenant's connection as for a missing one, 413, 422 `not_proxyable`, 503 when
/// the queue or the connections table is unavailable.
pub async fn actions_route(
    ports: ActionPorts<'_>,
    tenant: &str,
    method: &str,
    id: &str,
    body: &[u8],
) -> HttpReply {
    let ActionPorts {
        vault,
        queue,
        statuses,
        clock,
    } = ports;
    let error = |status: u16, code: &str, message: &str| {
        HttpReply::json(status, json!({ "error": code, "message": message }))
    };
    if method != "POST" {
        return error(405, "method_not_allowed", "POST");
    }
    let mut request = match proxy::parse_request(body) {
        Ok(request) => request,
        Err(reply) => {
            return HttpReply::json(
                reply.status,
                serde_json::from_slice(&reply.body).unwrap_or_default(),
            );
        }
    };
    let connection = match web::tenant_connection_or_reply(vault, tenant, id).await {
        Ok(connection) => connection,
        Err(reply) => return reply,
    };
    let (api, base) = match proxy::api_of(vault, &connection) {
        Ok(found) => found,
        Err((status, code, reason)) => return error(status, code, &reason),
    };
    let action_id = match &request.idempotency_key {
        Some(key) => keyed_action_id(&connection.id, key),
        None => new_action_id(),
    };
    request
        .idempotency_key
        .get_or_insert_with(|| action_id.clone());
    // Refused now rather than at run time: the caller learns why at once.
    if let Err(refusal) = proxy::prepare(api, &base, &request) {
        return error(400, refusal.code(), &refusal.to_string());
    }
    let action = Action {
        id: action_id.clone(),
        tenant: connection.tenant.clone(),
        connection: connection.id.clone(),
        provider: connection.provider.clone(),
        request,
        accepted_at: rfc3339_millis(clock.now()),
    };
    let body = match serde_json::to_string(&action) {
        Ok(body) => body,
        Err(err) => return error(400, "invalid_body", &err.to_string()),
    };
    let message = QueueMessage {
        body,
        attributes: [
            ("tenant".to_owned(), action.tenant.clone()),
            ("connection".to_owned(), action.connection.clone()),
        ]
        .into_iter()
        .collect(),
    };
    if message.size() > 256 * 1024 {
        return error(
            413,
            "too_large",
            "an action must fit an SQS message (256 KiB); send large writes through the proxy",
        );
    }
    match queue.send(message).await {
        Ok(()) => {
            tracing::info!(provider = %connection.provider, connection = %connection.id, action = %action_id, outcome = "action_queued", "action queued");
            // The action is queued either way; without its status the events still tell.
            let queued = ActionStatus {
                id: action_id.clone(),
                tenant: action.tenant.clone(),
                connection: action.connection.clone(),
                state: ActionState::Queued,
                attempts: 0,
                reason: None,
                status: None,
                accepted_at: action.accepted_at.clone(),
                updated_at: clock.now().unix_timestamp(),
            };
            if let Err(err) = statuses.record(&queued).await {
                tracing::warn!(action = %action_id, error = %err, "action status not recorded");
            }
            HttpReply::json(202, json!({ "action_id": action_id, "status": "queued" }))
        }
        Err(err) => {
            tracing::error!(action = %action_id, error = %junction_telemetry::error_chain(&err), outcome = "management_unavailable", "action not queued");
            error(503, "unavailable", "temporarily unavailable; try again")
        }
    }
}

/// How long an action's status is kept after its last change (the table's TTL): longer
/// than an action can take (8 attempts, the longest waits 15 minutes or a provider's 12
/// hours).
pub const STATUS_TTL_SECONDS: i64 = 7 * 24 * 60 * 60;

/// Where an action stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionState {
    Queued,
    Retrying,
    Succeeded,
    Failed,
}

impl ActionState {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::Queued => "queued",
            ActionState::Retrying => "retrying",
            ActionState::Succeeded => "succeeded",
            ActionState::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<ActionState> {
        match text {
            "queued" => Some(ActionState::Queued),
            "retrying" => Some(ActionState::Retrying),
            "succeeded" => Some(ActionState::Succeeded),
            "failed" => Some(ActionState::Failed),
            _ => None,
        }
    }

    /// Succeeded and failed are final: nothing later replaces them.
    pub fn is_final(self) -> bool {
        matches!(self, ActionState::Succeeded | ActionState::Failed)
    }
}

/// What `GET …/actions/{action}` shows: never the provider's body (the event has it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionStatus {
    pub id: String,
    pub tenant: String,
    pub connection: String,
    pub state: ActionState,
    /// Receives so far (0 while queued).
    pub attempts: u32,
    /// Why it failed, or why it is being retried.
    pub reason: Option<String>,
    /// The provider's status when its answer decided.
    pub status: Option<u16>,
    /// RFC 3339, as the action carries it.
    pub accepted_at: String,
    /// Unix seconds.
    pub updated_at: i64,
}

/// The store is unavailable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("action status store unavailable: {0}")]
pub struct StatusError(pub String);

/// Actions' statuses by id.
#[async_trait::async_trait]
pub trait ActionStatusStore: Send + Sync + std::fmt::Debug {
    /// Writes `status`, unless the stored one is final and this one is not (a late or
    /// repeated receive never turns a finished action back into a running one).
    async fn record(&self, status: &ActionStatus) -> Result<(), StatusError>;

    async fn get(&self, id: &str) -> Result<Option<ActionStatus>, StatusError>;
}

/// In memory, for unit tests.
#[derive(Debug, Default)]
pub struct InMemoryActionStatusStore {
    statuses: std::sync::Mutex<std::collections::HashMap<String, ActionStatus>>,
}

#[async_trait::async_trait]
impl ActionStatusStore for InMemoryActionStatusStore {
    async fn record(&self, status: &ActionStatus) -> Result<(), StatusError> {
        let mut statuses = self
            .statuses
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let keep = statuses
            .get(&status.id)
            .is_some_and(|stored| stored.state.is_final() && !status.state.is_final());
        if !keep {
            statuses.insert(status.id.clone(), status.clone());
        }
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<ActionStatus>, StatusError> {
        Ok(self
            .statuses
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(id)
            .cloned())
    }
}

/// DynamoDB: item `id` (partition key), `tenant`, `connection`, `state`, `attempts`,
/// `reason`, `status`, `accepted_at`, `updated_at`, `expires_at` (TTL).
#[derive(Debug, Clone)]
pub struct DynamoActionStatusStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoActionStatusStore {
    pub fn from_config(aws: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        DynamoActionStatusStore {
            client: aws_sdk_dynamodb::Client::new(aws),
            table: table.into(),
        }
    }
}

fn status_error<E>(err: E) -> StatusError
where
    aws_sdk_dynamodb::Error: From<E>,
{
    StatusError(junction_telemetry::error_chain(
        &aws_sdk_dynamodb::Error::from(err),
    ))
}

#[async_trait::async_trait]
impl ActionStatusStore for DynamoActionStatusStore {
    async fn record(&self, status: &ActionStatus) -> Result<(), StatusError> {
        use aws_sdk_dynamodb::types::AttributeValue as V;
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("id", V::S(status.id.clone()))
            .item("tenant", V::S(status.tenant.clone()))
            .item("connection", V::S(status.connection.clone()))
            .item("state", V::S(status.state.as_str().to_owned()))
            .item("attempts", V::N(status.attempts.to_string()))
            .item("accepted_at", V::S(status.accepted_at.clone()))
            .item("updated_at", V::N(status.updated_at.to_string()))
            .item(
                "expires_at",
                V::N((status.updated_at + STATUS_TTL_SECONDS).to_string()),
            );
        if let Some(reason) = &status.reason {
            put = put.item("reason", V::S(reason.clone()));
        }
        if let Some(code) = status.status {
            put = put.item("status", V::N(code.to_string()));
        }
        if !status.state.is_final() {
            put = put
                .condition_expression(
                    "attribute_not_exists(#state) OR #state IN (:queued, :retrying)",
                )
                .expression_attribute_names("#state", "state")
                .expression_attribute_values(":queued", V::S("queued".into()))
                .expression_attribute_values(":retrying", V::S("retrying".into()));
        }
        match put.send().await {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(err) => Err(status_error(err)),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<ActionStatus>, StatusError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(
                "id",
                aws_sdk_dynamodb::types::AttributeValue::S(id.to_owned()),
            )
            .consistent_read(true)
            .send()
            .await
            .map_err(status_error)?;
        let Some(item) = output.item else {
            return Ok(None);
        };
        let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        let number = |name: &str| {
            item.get(name)
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse::<i64>().ok())
        };
        let state = text("state")
            .as_deref()
            .and_then(ActionState::parse)
            .ok_or_else(|| StatusError(format!("{id}: an item without a known state")))?;
        Ok(Some(ActionStatus {
            id: id.to_owned(),
            tenant: text("tenant").unwrap_or_default(),
            connection: text("connection").unwrap_or_default(),
            state,
            attempts: number("attempts")
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or_default(),
            reason: text("reason"),
            status: number("status").and_then(|n| u16::try_from(n).ok()),
            accepted_at: text("accepted_at").unwrap_or_default(),
            updated_at: number("updated_at").unwrap_or_default(),
        }))
    }
}

/// The status's JSON, as the route shows it.
pub fn status_view(status: &ActionStatus) -> serde_json::Value {
    let time = |at: i64| {
        time::OffsetDateTime::from_unix_timestamp(at)
            .ok()
            .map(rfc3339_millis)
    };
    json!({
        "action_id": status.id,
        "connection_id": status.connection,
        "state": status.state.as_str(),
        "attempts": status.attempts,
        "reason": status.reason,
        "status": status.status,
        "accepted_at": status.accepted_at,
        "updated_at": time(status.updated_at),
    })
}

/// `GET /v1/tenants/{tenant}/connections/{id}/actions/{action}`: 200 with the status;
/// 404 for an action of another tenant or connection as for a missing (or expired) one;
/// 400 for a bad tenant; 503 when the store is unavailable.
pub async fn action_status_route(
    store: &dyn ActionStatusStore,
    tenant: &str,
    method: &str,
    id: &str,
    action: &str,
) -> HttpReply {
    if method != "GET" {
        return HttpReply::json(
            405,
            json!({ "error": "method_not_allowed", "message": "GET" }),
        );
    }
    if let Err(reply) = web::check_path_tenant(tenant) {
        return reply;
    }
    match store.get(action).await {
        Ok(Some(status)) if status.tenant == tenant && status.connection == id => {
            HttpReply::json(200, status_view(&status))
        }
        Ok(_) => HttpReply::json(
            404,
            json!({ "error": "not_found", "message": format!("no action {action} on connection {id}") }),
        ),
        Err(err) => {
            tracing::error!(error = %err, outcome = "management_unavailable", "action status not read");
            HttpReply::json(
                503,
                json!({ "error": "unavailable", "message": "temporarily unavailable; try again" }),
            )
        }
    }
}

/// Why the runner could not finish a message (it stays on the queue).
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// Not an action: it will never run (the DLQ keeps it for a look).
    #[error("not an action: {0}")]
    BadMessage(String),
    /// Retried later: after the backoff the message was given.
    #[error("retry in {after:?}: {reason}")]
    Retry { after: Duration, reason: String },
    /// The outcome could not be announced, or a store is unavailable.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// What the runner did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    Succeeded { status: u16 },
    Failed { reason: String },
}

/// The action runner: the proxy's parts, the bus, and the queue's visibility.
#[derive(Debug, Clone)]
pub struct ActionRunner {
    pub client: OutboundClient,
    pub vault: TokenVault,
    pub store: Arc<dyn ProxyIdempotencyStore>,
    pub clock: Arc<dyn Clock>,
    pub bus: Arc<dyn EventBus>,
    pub retries: Arc<dyn RetryScheduler>,
    pub statuses: Arc<dyn ActionStatusStore>,
}

impl ActionRunner {
    /// Runs the action in `body`, received for the `receive_count`th time (SQS's
    /// `ApproximateReceiveCount`); `receipt` is its receipt handle. `Ok` when the message
    /// is done with (its outcome announced); `Err` when it stays on the queue.
    pub async fn handle(
        &self,
        body: &str,
        receive_count: u32,
        receipt: &str,
        deadline: Instant,
    ) -> Result<Finished, ActionError> {
        let action: Action =
            serde_json::from_str(body).map_err(|err| ActionError::BadMessage(err.to_string()))?;
        // A batch's last actions may find the invocation nearly over: they go back on the
        // queue at once rather than start a call that cannot finish.
        if deadline.saturating_duration_since(Instant::now()) < self.client.call_timeout() {
            self.retries
                .retry_after(receipt, Duration::ZERO)
                .await
                .map_err(|err| ActionError::Unavailable(junction_telemetry::error_chain(&err)))?;
            return Err(ActionError::Retry {
                after: Duration::ZERO,
                reason: "no time left in this invocation".into(),
            });
        }
        let provider = action.provider.as_str();
        let verdict = self.run(&action, deadline).await;
        let verdict = match verdict {
            Verdict::Retry { reason, .. } if receive_count >= MAX_ACTION_ATTEMPTS => {
                Verdict::Failed(Failure {
                    reason: format!("retries_exhausted: {reason}"),
                    answer: None,
                })
            }
            Verdict::Retry { after, reason } => {
                let after = after.unwrap_or_else(|| backoff(receive_count, &mut rand::rngs::OsRng));
                self.retries
                    .retry_after(receipt, after)
                    .await
                    .map_err(|err| {
                        ActionError::Unavailable(junction_telemetry::error_chain(&err))
                    })?;
                tracing::info!(action = %action.id, connection = %action.connection, attempt = receive_count, retry_in_s = after.as_secs(), error = %reason, outcome = "action_retry", "action will be retried");
                self.record_status(
                    &action,
                    ActionState::Retrying,
                    receive_count,
                    Some(&reason),
                    None,
                )
                .await;
                return Err(ActionError::Retry { after, reason });
            }
            other => other,
        };
        let (event_type, data, finished) = match &verdict {
            Verdict::Succeeded(answer) => (
                "action.succeeded",
                event_data(&action, receive_count, Some(answer), None),
                Finished::Succeeded {
                    status: answer.status,
                },
            ),
            Verdict::Failed(failure) => (
                "action.failed",
                event_data(
                    &action,
                    receive_count,
                    failure.answer.as_ref(),
                    Some(&failure.reason),
                ),
                Finished::Failed {
                    reason: failure.reason.clone(),
                },
            ),
            Verdict::Retry { .. } => unreachable!("handled above"),
        };
        let event = CloudEvent::new(
            provider,
            &action.id,
            event_type,
            event_type.to_owned(),
            Some(action.connection.clone()),
            rfc3339_millis(self.clock.now()),
            data,
        )
        .stamped(&action.tenant, &action.connection);
        self.bus
            .publish(&[event])
            .await
            .map_err(|err| ActionError::Unavailable(junction_telemetry::error_chain(&err)))?;
        tracing::info!(provider = %provider, action = %action.id, connection = %action.connection, attempt = receive_count, outcome = event_type, "action finished");
        let (state, reason, status) = match &verdict {
            Verdict::Succeeded(answer) => (ActionState::Succeeded, None, Some(answer.status)),
            Verdict::Failed(failure) => (
                ActionState::Failed,
                Some(failure.reason.as_str()),
                failure.answer.as_ref().map(|answer| answer.status),
            ),
            Verdict::Retry { .. } => unreachable!("handled above"),
        };
        self.record_status(&action, state, receive_count, reason, status)
            .await;
        Ok(finished)
    }

    /// Records where `action` stands; a failure is logged only (the events tell too).
    async fn record_status(
        &self,
        action: &Action,
        state: ActionState,
        attempts: u32,
        reason: Option<&str>,
        status: Option<u16>,
    ) {
        let recorded = self
            .statuses
            .record(&ActionStatus {
                id: action.id.clone(),
                tenant: action.tenant.clone(),
                connection: action.connection.clone(),
                state,
                attempts,
                reason: reason.map(str::to_owned),
                status,
                accepted_at: action.accepted_at.clone(),
                updated_at: self.clock.now().unix_timestamp(),
            })
            .await;
        if let Err(err) = recorded {
            tracing::warn!(action = %action.id, error = %err, "action status not recorded");
        }
    }

    /// Runs the action once: what came of it.
    async fn run(&self, action: &Action, deadline: Instant) -> Verdict {
        let gone = |reason: &str| {
            Verdict::Failed(Failure {
                reason: reason.to_owned(),
                answer: None,
            })
        };
        let connection: Connection =
            match web::tenant_connection_or_reply(&self.vault, &action.tenant, &action.connection)
                .await
            {
                Ok(connection) => connection,
                Err(reply) if reply.status == 404 => return gone("connection_not_found"),
                Err(reply) if reply.status == 400 => return gone("bad_tenant"),
                Err(_) => {
                    return Verdict::Retry {
                        after: None,
                        reason: "connections_unavailable".into(),
                    };
                }
            };
        let prepared = match proxy::api_of(&self.vault, &connection)
            .map_err(|(_, code, _)| code.to_owned())
            .and_then(|(api, base)| {
                proxy::prepare(api, &base, &action.request).map_err(|r| r.code().to_owned())
            }) {
            Ok(prepared) => prepared,
            Err(code) => return gone(&code),
        };
        let proxy = Proxy {
            client: &self.client,
            vault: &self.vault,
            store: self.store.as_ref(),
            clock: self.clock.as_ref(),
        };
        verdict_of(proxy.run(&connection, &prepared, "action", deadline).await)
    }
}

/// Why an action failed for good, and the provider's answer when there was one.
#[derive(Debug, Clone)]
struct Failure {
    reason: String,
    answer: Option<ProxyAnswer>,
}

#[derive(Debug, Clone)]
enum Verdict {
    Succeeded(ProxyAnswer),
    Failed(Failure),
    /// `after`: the provider's wait when it said one; else the backoff decides.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
}

fn verdict_of(outcome: Outcome) -> Verdict {
    let failed = |reason: String| {
        Verdict::Failed(Failure {
            reason,
            answer: None,
        })
    };
    match outcome {
        Outcome::Answered(answer) => match &answer.failure {
            None => Verdict::Succeeded(answer),
            Some(CallFailure {
                class: FailureClass::Transient | FailureClass::RateLimited,
                code,
            }) => Verdict::Retry {
                after: provider_wait(&answer),
                reason: code.clone(),
            },
            Some(failure) => {
                let reason = failure.code.clone();
                Verdict::Failed(Failure {
                    reason,
                    answer: Some(answer),
                })
            }
        },
        // Another receive of this message is running it now.
        Outcome::InFlight => Verdict::Retry {
            after: None,
            reason: "in_flight".into(),
        },
        Outcome::KeyMismatch => failed("idempotency_key_reused".into()),
        Outcome::NeedsReauth(_) => failed("needs_reauth".into()),
        Outcome::Failed(failure) if failure.class == FailureClass::Transient => Verdict::Retry {
            after: None,
            reason: failure.code,
        },
        Outcome::Failed(failure) => failed(failure.code),
        Outcome::RetryLater { after, reason } => Verdict::Retry {
            after: Some(after),
            reason: reason.to_string(),
        },
        // The cause is logged here; the action's reason, which its status and its
        // `action.failed` show the product, is a fixed code, never a store's text.
        Outcome::Unavailable(cause) => {
            tracing::warn!(error = %cause, outcome = "action_store_unavailable", "junction's stores unavailable; the action will be retried");
            Verdict::Retry {
                after: None,
                reason: "junction_unavailable".into(),
            }
        }
    }
}

/// The wait a provider's answer asks for (`Retry-After`, a spent quota's reset).
fn provider_wait(answer: &ProxyAnswer) -> Option<Duration> {
    let mut headers = http::HeaderMap::new();
    for (name, value) in &answer.headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::try_from(name.as_str()),
            http::HeaderValue::try_from(value.as_str()),
        ) {
            headers.append(name, value);
        }
    }
    RateLimitHeaders::parse(&headers, time::OffsetDateTime::now_utc())
        .wait()
        .map(|wait| wait.min(MAX_PROVIDER_WAIT))
}

/// The wait before the attempt after `attempt` (1 after the first): full jitter under
/// `BASE_BACKOFF · 2^(attempt-1)`, capped at [`MAX_BACKOFF`], and at least a second.
pub fn backoff(attempt: u32, rng: &mut impl Rng) -> Duration {
    let ceiling = BASE_BACKOFF
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let millis = rng.gen_range(
        1_000
            ..=u64::try_from(ceiling.as_millis())
                .unwrap_or(1_000)
                .max(1_000),
    );
    Duration::from_millis(millis)
}

/// The `data` of an action event (see `docs/schemas/events/action.*.schema.json`).
fn event_data(
    action: &Action,
    attempts: u32,
    answer: Option<&ProxyAnswer>,
    reason: Option<&str>,
) -> serde_json::Value {
    let mut data = json!({
        "action_id": action.id,
        "tenant": action.tenant,
        "connection_id": action.connection,
        "provider": action.provider,
        "method": action.request.method.to_ascii_uppercase(),
        "path": action.request.path,
        "attempts": attempts,
        "accepted_at": action.accepted_at,
    });
    if let Some(reason) = reason {
        data["reason"] = reason.into();
    }
    if let Some(answer) = answer {
        let body = answer.body.as_deref().unwrap_or_default();
        let (body, omitted) = if body.len() > EVENT_BODY_CAP {
            (serde_json::Value::Null, true)
        } else if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) {
            (json, false)
        } else {
            match std::str::from_utf8(body) {
                Ok(text) => (text.into(), false),
                Err(_) => (serde_json::Value::Null, true),
            }
        };
        data["response"] = json!({
            "status": answer.status,
            "headers": answer.headers.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "body": body,
            "body_omitted": omitted,
        });
    }
    data
}

#[cfg(test)]
#[path = "actions_tests.rs"]
mod tests;
