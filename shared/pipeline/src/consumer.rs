//! The event consumer: one SQS batch from the ingest queue in, batch item failures out.
//!
//! Per message: read the ingress's attributes and the raw body (from S3 when it was too
//! large), claim the idempotency key, find whose the delivery is (`accounts`: the
//! connections of its provider account, or of the connection a record was polled
//! through), normalize the event, apply each record to the record store under the
//! conflict rules (`records`), publish the CloudEvents (one per tenant that owns the
//! delivery, stamped with its `tenant` and `connection`; one too large for the bus by
//! claim check: its data in the payload bucket), mark the key completed, and only then
//! let the message be deleted (by not reporting it); after the batch, record on each
//! connection its webhook deliveries were attributed to when it last heard from its
//! provider (`last_events`, bookkeeping that never fails a delivery). Any
//! failure releases the claim and reports the item failed; transient failures get a
//! visibility timeout from exponential backoff with full jitter, permanent ones
//! become visible at once so the redrive policy moves them to the DLQ after
//! maxReceiveCount, body intact. Nothing sleeps.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use sha2::{Digest, Sha256};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::accounts::{AccountIndex, Owner, owners};
use crate::dead_letters::{DeadLetterNote, DeadLetterNotes};
use crate::drift::{DriftDetector, ShapeKey};
use crate::idempotency::{Claim, ClaimOutcome, Idempotency, IdempotencyKey, IdempotencyStore};
use crate::last_events::{LastEventRecorder, LastEvents};
use crate::normalize::{Normalized, RawEvent, normalize};
use crate::records::{ApplyOutcome, FieldPriority, Origin, RecordStore, RecordWrite, apply};
use junction_aws::clock::{Clock, rfc3339_millis};
use junction_aws::events::{ClaimCheckError, CloudEvent, EventBus, Refusal, claim_check};
use junction_aws::payloads::PayloadStore;
use junction_aws::queue::{RetryScheduler, attribute};
use junction_aws::retry::Backoff;
use junction_catalog::Catalog;
use junction_telemetry::error_chain;

/// SQS's receives before the dead-letter queue when none is configured (the template's
/// `IngestMaxReceiveCount` default).
pub const DEFAULT_MAX_RECEIVE_COUNT: u32 = 5;

/// One SQS record as the consumer needs it.
#[derive(Debug, Clone)]
pub struct InboundMessage {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// String message attributes.
    pub attributes: BTreeMap<String, String>,
    /// SQS's `ApproximateReceiveCount` (1 on the first delivery).
    pub receive_count: u32,
}

/// What the consumer did with a message: callers match variants, not text;
/// [`ItemResult::as_str`] is the log line's `result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ItemResult {
    /// Its events are on the bus and its claim completed.
    Processed,
    /// Completed before (or earlier in the batch): acknowledged with no side effect.
    Duplicate,
    /// Left on the queue for a later receive.
    Retry,
    /// Cannot succeed as it is: left on the queue for the redrive policy's DLQ.
    Failed,
}

impl ItemResult {
    /// The code the log lines carry.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemResult::Processed => "processed",
            ItemResult::Duplicate => "duplicate",
            ItemResult::Retry => "retry",
            ItemResult::Failed => "failed",
        }
    }
}

impl std::fmt::Display for ItemResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a message is retried or failed: a closed set, so callers match variants, not
/// text. [`ItemReason::as_str`] is the code in the log line and the dead-letter note.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemReason {
    // Retried: a dependency, or another claim, stands in the way for now.
    /// Another worker holds the event's claim until its lease ends.
    InProgressElsewhere,
    IdempotencyStoreUnavailable,
    /// The large body the message points at could not be read.
    PayloadUnavailable,
    /// An event's data too large for the bus could not be stored.
    PayloadStoreUnavailable,
    RecordStoreUnavailable,
    PublishFailed,
    /// A copy of an event earlier in the batch, which failed: retried with it.
    CopyInBatchFailed,
    /// Whose the delivery is could not be read: retried rather than published without
    /// the tenant it belongs to.
    AccountIndexUnavailable,
    // Failed: the same bytes will fail again.
    MissingProvider,
    MissingEventId,
    MalformedBase64Body,
    UnknownBodyEncoding,
    UnknownOrigin,
    UnmappablePayload,
    UnserializableRecord,
    /// An event the bus refuses for its size even with its data in the payload bucket.
    EventTooLarge,
}

impl ItemReason {
    /// The code the log lines and dead-letter notes carry (never a payload value).
    pub fn as_str(self) -> &'static str {
        match self {
            ItemReason::InProgressElsewhere => "in_progress_elsewhere",
            ItemReason::IdempotencyStoreUnavailable => "idempotency_store_unavailable",
            ItemReason::PayloadUnavailable => "payload_unavailable",
            ItemReason::PayloadStoreUnavailable => "payload_store_unavailable",
            ItemReason::RecordStoreUnavailable => "record_store_unavailable",
            ItemReason::PublishFailed => "publish_failed",
            ItemReason::CopyInBatchFailed => "copy_in_batch_failed",
            ItemReason::AccountIndexUnavailable => "account_index_unavailable",
            ItemReason::MissingProvider => "missing_provider",
            ItemReason::MissingEventId => "missing_event_id",
            ItemReason::MalformedBase64Body => "malformed_base64_body",
            ItemReason::UnknownBodyEncoding => "unknown_body_encoding",
            ItemReason::UnknownOrigin => "unknown_origin",
            ItemReason::UnmappablePayload => "unmappable_payload",
            ItemReason::UnserializableRecord => "unserializable_record",
            ItemReason::EventTooLarge => "event_too_large",
        }
    }
}

impl std::fmt::Display for ItemReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to one message: logged as one line and counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemOutcome {
    pub message_id: String,
    pub provider: Option<String>,
    pub event_id: Option<String>,
    pub result: ItemResult,
    /// Why, for a retry or a failure.
    pub reason: Option<ItemReason>,
    /// Events published for this message.
    pub published: usize,
    /// The provider reused an event id for a different payload.
    pub payload_mismatch: bool,
    /// When the message will be seen again, for retries.
    pub retry_in: Option<Duration>,
    /// The specific cause of a permanent failure (never a secret or payload value).
    pub detail: Option<String>,
    /// `(pinned, received)` when the payload states another API version than the
    /// catalog pins: processed anyway, logged and counted so an operator hears of a
    /// provider-side change before it breaks anything.
    pub version_mismatch: Option<(String, String)>,
    /// Items that only identify a resource to fetch from the provider's API; they are
    /// not published until the fetch stage exists (logged and counted).
    pub fetches_pending: usize,
    /// Records older than the stored version: dropped (out-of-order delivery).
    pub stale: usize,
    /// Records the conflict rules could not settle: kept for review, announced.
    pub conflicts: usize,
    /// Records already stored, identical, by another delivery (a reconciliation poll
    /// repeating a webhook): not published again.
    pub already_current: usize,
    /// From the ingress receiving the request (or the poll worker fetching the record)
    /// to its events being on the bus, when events were published: the end-to-end
    /// latency an operator alarms on.
    pub end_to_end: Option<Duration>,
    /// This was the message's last receive (`maxReceiveCount`) and it stays on the
    /// queue: SQS moves it to the dead-letter queue next. Counted as a DLQ arrival.
    pub dead_lettered: bool,
    /// The connection (polled records) or provider account (webhooks) the event
    /// belongs to, when the message names one.
    pub connection: Option<String>,
    /// Whom its events were published for: each tenant that owns the delivery, with the
    /// connection its events carry ([`owners`]). Empty when none does.
    pub owners: Vec<Owner>,
    /// Its events were published without `tenant` and `connection`: no connection
    /// matched its provider account (or it names none). Counted as
    /// `UnmatchedDeliveries`; never set when the consumer has no account index.
    pub unmatched: bool,
    /// The event's idempotency key, once the message decoded.
    pub idempotency_key: Option<String>,
    /// Which receive of the message this was (SQS's `ApproximateReceiveCount`).
    pub attempt: u32,
    /// How long this message took to process here.
    pub latency: Duration,
}

impl ItemOutcome {
    /// Whether the message must stay on the queue (reported as a batch item failure).
    pub fn keeps_message(&self) -> bool {
        matches!(self.result, ItemResult::Retry | ItemResult::Failed)
    }
}

/// A failure processing one message.
#[derive(Debug, Clone, Copy, thiserror::Error)]
enum Failure {
    /// Worth retrying later (infrastructure).
    #[error("transient: {0}")]
    Transient(ItemReason),
    /// Another claim holds the event until its lease ends: retrying earlier is futile.
    /// The claim may be an orphan: after a claim write timed out, the store can still
    /// apply it (found with the emulator paused mid-write), and nobody owns it then.
    #[error("claimed elsewhere for {0:?} more")]
    ClaimedElsewhere(Duration),
    /// Retrying the same bytes cannot succeed; ends in the DLQ for an operator.
    #[error("permanent: {0}")]
    Permanent(ItemReason),
}

/// The consumer's adapters besides the idempotency store.
#[derive(Debug, Clone)]
pub struct Ports {
    pub records: Arc<dyn RecordStore>,
    pub bus: Arc<dyn EventBus>,
    pub payloads: Arc<dyn PayloadStore>,
    pub retries: Arc<dyn RetryScheduler>,
    pub clock: Arc<dyn Clock>,
}

/// The consumer with its ports.
#[derive(Debug)]
pub struct Consumer<S> {
    catalog: &'static Catalog,
    idempotency: Idempotency<S>,
    ports: Ports,
    backoff: Backoff,
    priority: FieldPriority,
    max_receive_count: u32,
    /// Where the reason of a message's last failed receive is noted, for
    /// `junction dlq list` (none: not noted).
    dead_letter_notes: Option<Arc<dyn DeadLetterNotes>>,
    /// Whose a delivery is (none: events are published unstamped, nothing is counted).
    accounts: Option<Arc<dyn AccountIndex>>,
    /// Where each connection's last webhook delivery is recorded (none: not recorded).
    last_events: Option<LastEventRecorder>,
    /// Compares each mapped payload's shape with the known ones (none: not compared).
    drift: Option<Arc<DriftDetector>>,
}

/// The message, decoded.
struct Event {
    provider: String,
    origin: Origin,
    resource: Option<String>,
    scope: Option<String>,
    /// The provider account: with the provider and event id, the claim key (never the
    /// URL's endpoint segment).
    account: Option<String>,
    /// The connection a polled record was fetched through (the poll worker's
    /// `connection` attribute; the ingress never sets it).
    connection: Option<String>,
    event_id: String,
    event_type: Option<String>,
    received_at: Option<String>,
    /// The forwarded request headers (lowercase names).
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// Whose a decoded event is, before its claim.
enum Owners {
    /// No account index: published unstamped, not counted.
    NotLookedUp,
    /// Its owners ([`owners`]); none: an unmatched delivery.
    Found(Vec<Owner>),
    /// The index could not be read: the cause, for the outcome's detail.
    Unavailable(String),
}

/// What identifies whose a message is: the connection a record was polled through, or
/// the provider account a webhook names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Lookup {
    Connection(String),
    Account { provider: String, account: String },
}

impl Lookup {
    /// None: the message names neither, so nothing can match it.
    fn of(event: &Event) -> Option<Lookup> {
        match (&event.connection, &event.account) {
            (Some(connection), _) => Some(Lookup::Connection(connection.clone())),
            (None, Some(account)) => Some(Lookup::Account {
                provider: event.provider.clone(),
                account: account.clone(),
            }),
            (None, None) => None,
        }
    }

    /// The owners, or the index's error chain.
    async fn run(&self, accounts: &dyn AccountIndex) -> Result<Vec<Owner>, String> {
        let found = match self {
            Lookup::Connection(connection) => accounts.tenant_of(connection).await.map(|tenant| {
                tenant
                    .map(|tenant| Owner {
                        tenant,
                        connection: connection.clone(),
                    })
                    .into_iter()
                    .collect()
            }),
            Lookup::Account { provider, account } => {
                accounts.connections_of(provider, account).await.map(owners)
            }
        };
        found.map_err(|err| error_chain(&err))
    }
}

/// A message on its way through [`Consumer::process_batch`].
struct Item {
    message: InboundMessage,
    outcome: ItemOutcome,
    started: std::time::Instant,
    state: Result<State, Failure>,
    /// For a webhook delivery, when it arrived (Unix seconds): its connections'
    /// `last_event_at` once processed.
    webhook_at: Option<i64>,
}

/// Where a message stands in its batch.
enum State {
    /// Decoded, waiting for the batch's claim.
    ToClaim,
    /// Claimed, records applied, events built: to publish and complete.
    Claimed(Ready),
    /// Completed earlier: acknowledged with no side effect.
    Duplicate { same_payload: bool },
    /// A copy of the event of the batch's item at this index, with its payload hash.
    CopyOf(usize, String),
    /// Published and completed.
    Done,
}

/// A claimed message's work, waiting for the batch's publish.
struct Ready {
    claim: Claim,
    events: Vec<CloudEvent>,
    received_at: Option<String>,
}

impl<S: IdempotencyStore> Consumer<S> {
    pub fn new(
        catalog: &'static Catalog,
        idempotency: Idempotency<S>,
        ports: Ports,
        backoff: Backoff,
    ) -> Self {
        Consumer {
            catalog,
            idempotency,
            ports,
            backoff,
            priority: FieldPriority::default(),
            max_receive_count: DEFAULT_MAX_RECEIVE_COUNT,
            dead_letter_notes: None,
            accounts: None,
            last_events: None,
            drift: None,
        }
    }

    /// Fingerprints the payloads it maps (sampled; every mapping failure) and announces
    /// a new shape once (`provider.schema_changed`); a mapping failure's detail names
    /// the diff of its shape against the last known one ([`crate::drift`]).
    pub fn with_drift(mut self, drift: Arc<DriftDetector>) -> Self {
        self.drift = Some(drift);
        self
    }

    /// Records on each connection a processed webhook delivery was attributed to (its
    /// owners, so only with an account index) when the delivery arrived: at most one
    /// write per connection per batch, none when this container wrote a time within
    /// [`crate::last_events::SKIP_WITHIN`] (the cost is in [`crate::last_events`]).
    /// Polled records do not count: a poll records its own last successful sync.
    pub fn with_last_events(mut self, store: Arc<dyn LastEvents>) -> Self {
        self.last_events = Some(LastEventRecorder::new(store));
        self
    }

    /// Stamps each event with the `tenant` and `connection` it belongs to, found in
    /// `accounts` (wrap it in [`crate::accounts::CachedAccountIndex`]); events that no
    /// connection owns are published without them and counted as unmatched.
    pub fn with_account_index(mut self, accounts: Arc<dyn AccountIndex>) -> Self {
        self.accounts = Some(accounts);
        self
    }

    /// Notes why each message failed on its last receive, keyed by its message id, so
    /// the dead-letter queue's listing can show it (SQS cannot add it to the message).
    pub fn with_dead_letter_notes(mut self, notes: Arc<dyn DeadLetterNotes>) -> Self {
        self.dead_letter_notes = Some(notes);
        self
    }

    /// The queue's `maxReceiveCount` (the template's `IngestMaxReceiveCount`), so the
    /// outcome of a message's last receive can say it goes to the dead-letter queue.
    pub fn with_max_receive_count(mut self, count: u32) -> Self {
        self.max_receive_count = count.max(1);
        self
    }

    /// Source-of-truth priority rules for the record store (none by default:
    /// last-write-wins on every field).
    pub fn with_field_priority(mut self, priority: FieldPriority) -> Self {
        self.priority = priority;
        self
    }

    /// Processes a batch; the messages whose outcome [`ItemOutcome::keeps_message`] must
    /// be reported as batch item failures.
    ///
    /// The messages are decoded and claimed together (one conditional `PutItem` per
    /// message, sent at once), each claimed message's records applied in turn; then the events of
    /// every claimed message are published together (one `PutEvents` for a batch of 10
    /// messages with one event each) and the claims completed together (one
    /// `BatchWriteItem`). A message whose events did not all reach the bus is released
    /// and retried alone; a later copy of an event claimed earlier in the same batch
    /// follows that copy's fate instead of waiting out its lease.
    pub async fn process_batch(&self, messages: Vec<InboundMessage>) -> Vec<ItemOutcome> {
        let mut items: Vec<Item> = Vec::with_capacity(messages.len());
        // Decoded, each with its key and payload hash, waiting for the batch's claim.
        let mut to_claim: Vec<(usize, Event)> = Vec::new();
        let mut keys: Vec<(IdempotencyKey, String)> = Vec::new();
        // The item of each of `keys`.
        let mut claimed_items: Vec<usize> = Vec::new();
        for message in messages {
            let started = std::time::Instant::now();
            let mut outcome = self.blank_outcome(&message);
            let mut webhook_at = None;
            let state = match self.decode(&message, &mut outcome).await {
                Err(failure) => Err(failure),
                Ok(event) => {
                    webhook_at = self.webhook_time(&event);
                    let payload_hash = hex::encode(Sha256::digest(&event.body));
                    let key = IdempotencyKey::new(
                        &event.provider,
                        event.account.as_deref(),
                        &event.event_id,
                    );
                    outcome.idempotency_key = Some(key.as_str().to_owned());
                    match keys.iter().position(|(claimed, _)| *claimed == key) {
                        Some(earlier) => Ok(State::CopyOf(claimed_items[earlier], payload_hash)),
                        None => {
                            to_claim.push((items.len(), event));
                            claimed_items.push(items.len());
                            keys.push((key, payload_hash));
                            Ok(State::ToClaim)
                        }
                    }
                }
            };
            items.push(Item {
                message,
                outcome,
                started,
                state,
                webhook_at,
            });
        }
        let owners = self.resolve_owners(&to_claim).await;
        self.claim_and_apply(&mut items, to_claim, owners, &keys)
            .await;
        self.publish_and_complete(&mut items).await;
        let mut outcomes = Vec::with_capacity(items.len());
        for index in 0..items.len() {
            let state = match &items[index].state {
                Ok(State::CopyOf(earlier, payload_hash)) => match &items[*earlier].state {
                    Ok(State::Claimed(ready)) => Ok(State::Duplicate {
                        same_payload: ready.claim.payload_hash == *payload_hash,
                    }),
                    // The event was processed before this batch: so is its copy (the
                    // same payload only if it matches the first copy, which matched).
                    Ok(State::Duplicate { same_payload }) => Ok(State::Duplicate {
                        same_payload: *same_payload
                            && keys
                                .iter()
                                .zip(&claimed_items)
                                .any(|((_, hash), item)| item == earlier && hash == payload_hash),
                    }),
                    // Held by another worker: so is the copy, retried as late.
                    Err(failure @ Failure::ClaimedElsewhere(_)) => Err(*failure),
                    _ => Err(Failure::Transient(ItemReason::CopyInBatchFailed)),
                },
                Ok(State::Duplicate { same_payload }) => Ok(State::Duplicate {
                    same_payload: *same_payload,
                }),
                Ok(_) => Ok(State::Done),
                Err(failure) => Err(*failure),
            };
            let item = &mut items[index];
            if let Ok(State::Duplicate { same_payload }) = state {
                item.outcome.result = ItemResult::Duplicate;
                item.outcome.payload_mismatch = !same_payload;
            }
            item.outcome.latency = item.started.elapsed();
            outcomes.push(match state {
                Ok(_) => item.outcome.clone(),
                Err(failure) => {
                    self.fail(&item.message, item.outcome.clone(), failure)
                        .await
                }
            });
        }
        self.record_last_events(&items, &outcomes).await;
        outcomes
    }

    /// When a webhook delivery arrived (the ingress's `received_at`, else now), in Unix
    /// seconds; `None` for a polled record. Never later than now: the stored time only
    /// moves forward, so a time from a skewed clock would hide later deliveries.
    fn webhook_time(&self, event: &Event) -> Option<i64> {
        if event.origin != Origin::Webhook {
            return None;
        }
        let now = self.ports.clock.now();
        let at = event
            .received_at
            .as_deref()
            .and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok())
            .map_or(now, |at| at.min(now));
        Some(at.unix_timestamp())
    }

    /// Records `last_event_at` on the connections of the batch's processed webhook
    /// deliveries ([`Consumer::with_last_events`]); failures are logged there.
    async fn record_last_events(&self, items: &[Item], outcomes: &[ItemOutcome]) {
        let Some(recorder) = &self.last_events else {
            return;
        };
        let seen: Vec<(String, i64)> = items
            .iter()
            .zip(outcomes)
            .filter(|(_, outcome)| outcome.result == ItemResult::Processed)
            .filter_map(|(item, outcome)| item.webhook_at.map(|at| (at, &outcome.owners)))
            .flat_map(|(at, owners)| {
                owners
                    .iter()
                    .map(move |owner| (owner.connection.clone(), at))
            })
            .collect();
        if !seen.is_empty() {
            recorder.record_batch(&seen).await;
        }
    }

    /// Processes one message and schedules its retry when it fails.
    pub async fn process(&self, message: InboundMessage) -> ItemOutcome {
        self.process_batch(vec![message])
            .await
            .pop()
            .unwrap_or_else(|| unreachable!("one outcome per message"))
    }

    fn blank_outcome(&self, message: &InboundMessage) -> ItemOutcome {
        ItemOutcome {
            message_id: message.message_id.clone(),
            provider: message.attributes.get(attribute::PROVIDER).cloned(),
            event_id: message.attributes.get(attribute::EVENT_ID).cloned(),
            result: ItemResult::Processed,
            reason: None,
            published: 0,
            payload_mismatch: false,
            retry_in: None,
            detail: None,
            version_mismatch: None,
            fetches_pending: 0,
            stale: 0,
            already_current: 0,
            conflicts: 0,
            end_to_end: None,
            dead_lettered: false,
            owners: Vec::new(),
            unmatched: false,
            connection: message
                .attributes
                .get(attribute::CONNECTION)
                .or_else(|| message.attributes.get(attribute::ACCOUNT))
                .filter(|value| !value.is_empty())
                .cloned(),
            idempotency_key: message
                .attributes
                .get(attribute::PROVIDER)
                .zip(message.attributes.get(attribute::EVENT_ID))
                .filter(|(provider, id)| !provider.is_empty() && !id.is_empty())
                .map(|(provider, id)| {
                    let scope = message
                        .attributes
                        .get(attribute::ACCOUNT)
                        .filter(|scope| !scope.is_empty());
                    IdempotencyKey::new(provider, scope.map(String::as_str), id)
                        .as_str()
                        .to_owned()
                }),
            attempt: message.receive_count,
            latency: Duration::ZERO,
        }
    }

    /// Records a failure on the outcome and schedules the message's retry.
    async fn fail(
        &self,
        message: &InboundMessage,
        mut outcome: ItemOutcome,
        failure: Failure,
    ) -> ItemOutcome {
        let (result, reason, delay) = match failure {
            Failure::Transient(reason) => {
                let delay = self
                    .backoff
                    .delay(message.receive_count, &mut rand::thread_rng());
                (ItemResult::Retry, reason, delay)
            }
            Failure::ClaimedElsewhere(lease_left) => {
                let backoff = self
                    .backoff
                    .delay(message.receive_count, &mut rand::thread_rng());
                // Not before the lease ends (plus a second of clock slack), so a
                // crashed or orphaned claim cannot use up the receives and send a
                // valid event to the dead-letter queue.
                let delay = backoff.max(lease_left + Duration::from_secs(1));
                (ItemResult::Retry, ItemReason::InProgressElsewhere, delay)
            }
            Failure::Permanent(reason) => (ItemResult::Failed, reason, Duration::ZERO),
        };
        outcome.result = result;
        outcome.reason = Some(reason);
        outcome.retry_in = Some(delay);
        outcome.dead_lettered = message.receive_count >= self.max_receive_count;
        if outcome.dead_lettered {
            self.note_dead_letter(&outcome).await;
        }
        // If this fails the message keeps the queue's visibility timeout: still retried.
        let _ = self
            .ports
            .retries
            .retry_after(&message.receipt_handle, delay)
            .await;
        outcome
    }

    /// Notes why the message goes to the dead-letter queue: one write per dead letter.
    /// A failed write is logged and changes nothing else (the listing then shows `-`).
    async fn note_dead_letter(&self, outcome: &ItemOutcome) {
        let (Some(notes), Some(reason)) = (&self.dead_letter_notes, outcome.reason) else {
            return;
        };
        let note = DeadLetterNote::new(
            reason.as_str(),
            outcome.detail.as_deref(),
            outcome.attempt,
            self.ports.clock.now(),
        );
        if let Err(err) = notes.record(&outcome.message_id, &note).await {
            tracing::warn!(
                message_id = %outcome.message_id,
                error = %error_chain(&err),
                "dead-letter note not recorded"
            );
        }
    }

    /// Decodes and claims the message, applies its records and builds its events.
    /// Claims the batch's decoded events together (each claim on its own: a failed one
    /// retries only its message), then applies the records and builds the events of
    /// each claimed one in turn. A claim whose records fail is released so that its
    /// retry can claim at once.
    async fn claim_and_apply(
        &self,
        items: &mut [Item],
        decoded: Vec<(usize, Event)>,
        owners: Vec<Owners>,
        keys: &[(IdempotencyKey, String)],
    ) {
        if decoded.is_empty() {
            return;
        }
        let now = self.ports.clock.now();
        let claims = self.idempotency.claim_all(keys, now).await;
        for (((index, event), claim), owners) in decoded.into_iter().zip(claims).zip(owners) {
            let item = &mut items[index];
            item.state = match claim {
                Err(err) => {
                    item.outcome.detail = Some(error_chain(&err));
                    Err(Failure::Transient(ItemReason::IdempotencyStoreUnavailable))
                }
                Ok(ClaimOutcome::Claimed(claim)) => {
                    let built = match owners {
                        Owners::Unavailable(detail) => {
                            item.outcome.detail = Some(detail);
                            Err(Failure::Transient(ItemReason::AccountIndexUnavailable))
                        }
                        Owners::NotLookedUp => {
                            self.apply_records_and_build_events(&event, None, &mut item.outcome)
                                .await
                        }
                        Owners::Found(owners) => {
                            self.apply_records_and_build_events(
                                &event,
                                Some(owners),
                                &mut item.outcome,
                            )
                            .await
                        }
                    };
                    match built {
                        Ok(events) => Ok(State::Claimed(Ready {
                            claim,
                            events,
                            received_at: event.received_at,
                        })),
                        Err(failure) => {
                            // Best effort: if the release fails, the lease runs out first.
                            let _ = self.idempotency.release(&claim).await;
                            Err(failure)
                        }
                    }
                }
                Ok(ClaimOutcome::AlreadyCompleted { same_payload }) => {
                    Ok(State::Duplicate { same_payload })
                }
                Ok(ClaimOutcome::InProgressElsewhere { lease_expires_at }) => {
                    let left = (lease_expires_at - now).max(time::Duration::ZERO);
                    Err(Failure::ClaimedElsewhere(left.unsigned_abs()))
                }
            };
        }
    }

    /// Publishes the events of every claimed item in one bus call, then completes the
    /// claims whose events all reached the bus in one store call. An event too large for
    /// the bus first has its data stored in the payload bucket (claim check). Items that
    /// fail here are released: an event the bus can never take fails permanently with
    /// its cause in the outcome's detail, anything else is a transient failure.
    async fn publish_and_complete(&self, items: &mut [Item]) {
        let mut failures: Vec<(usize, Failure, Option<String>)> = Vec::new();
        for (index, item) in items.iter_mut().enumerate() {
            let Ok(State::Claimed(ready)) = &mut item.state else {
                continue;
            };
            for event in &mut ready.events {
                match claim_check(event, self.ports.payloads.as_ref()).await {
                    Ok(false) => {}
                    Ok(true) => tracing::info!(
                        event_id = %event.id,
                        dataref = event.dataref.as_deref().unwrap_or_default(),
                        datasize = event.datasize.unwrap_or_default(),
                        "event data over the bus's entry limit stored in the payload bucket"
                    ),
                    Err(err) => {
                        let failure = match err {
                            ClaimCheckError::Unserializable { .. } => {
                                Failure::Permanent(ItemReason::UnserializableRecord)
                            }
                            ClaimCheckError::Store { .. } => {
                                Failure::Transient(ItemReason::PayloadStoreUnavailable)
                            }
                        };
                        failures.push((index, failure, Some(err.to_string())));
                        break;
                    }
                }
            }
        }
        let held: HashSet<usize> = failures.iter().map(|(index, ..)| *index).collect();
        let events: Vec<CloudEvent> = items
            .iter()
            .enumerate()
            .filter(|(index, _)| !held.contains(index))
            .filter_map(|(_, item)| match &item.state {
                Ok(State::Claimed(ready)) => Some(ready.events.iter().cloned()),
                _ => None,
            })
            .flatten()
            .collect();
        let (refused, call_error): (HashMap<String, Refusal>, Option<String>) =
            match self.ports.bus.publish(&events).await {
                Ok(()) => (HashMap::new(), None),
                Err(err) => (
                    err.unpublished
                        .into_iter()
                        .map(|unpublished| (unpublished.id, unpublished.refusal))
                        .collect(),
                    err.source.as_deref().map(|source| error_chain(source)),
                ),
            };
        let mut published: Vec<usize> = Vec::new();
        for (index, item) in items.iter_mut().enumerate() {
            let Ok(State::Claimed(ready)) = &item.state else {
                continue;
            };
            if held.contains(&index) {
                continue;
            }
            let refusals: Vec<(&CloudEvent, &Refusal)> = ready
                .events
                .iter()
                .filter_map(|event| refused.get(&event.id).map(|refusal| (event, refusal)))
                .collect();
            if let Some((event, refusal)) = refusals
                .iter()
                .find(|(_, refusal)| refusal.is_permanent())
                .or(refusals.first())
            {
                let failure = match refusal {
                    Refusal::TooLarge { .. } => Failure::Permanent(ItemReason::EventTooLarge),
                    Refusal::Unserializable => Failure::Permanent(ItemReason::UnserializableRecord),
                    Refusal::Rejected { .. } | Refusal::Unavailable => {
                        Failure::Transient(ItemReason::PublishFailed)
                    }
                };
                let mut detail =
                    format!("CloudEvent {} ({}): {refusal}", event.id, event.event_type);
                if let (Refusal::Unavailable, Some(call_error)) = (refusal, &call_error) {
                    detail = format!("{detail} ({call_error})");
                }
                failures.push((index, failure, Some(detail)));
                continue;
            }
            item.outcome.published = ready.events.len();
            if !ready.events.is_empty() {
                item.outcome.end_to_end = ready
                    .received_at
                    .as_deref()
                    .and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok())
                    .map(|at| (self.ports.clock.now() - at).max(time::Duration::ZERO))
                    .map(|latency| latency.unsigned_abs());
            }
            published.push(index);
        }
        let claims: Vec<Claim> = published
            .iter()
            .filter_map(|&index| match &items[index].state {
                Ok(State::Claimed(ready)) => Some(ready.claim.clone()),
                _ => None,
            })
            .collect();
        if self
            .idempotency
            .complete_all(&claims, self.ports.clock.now())
            .await
            .is_err()
        {
            failures.extend(published.into_iter().map(|index| {
                (
                    index,
                    Failure::Transient(ItemReason::IdempotencyStoreUnavailable),
                    None,
                )
            }));
        }
        for (index, failure, detail) in failures {
            if let Ok(State::Claimed(ready)) = &items[index].state {
                // Best effort: if the release fails, the lease runs out before redelivery.
                let _ = self.idempotency.release(&ready.claim).await;
            }
            items[index].outcome.published = 0;
            items[index].outcome.end_to_end = None;
            if detail.is_some() {
                items[index].outcome.detail = detail;
            }
            items[index].state = Err(failure);
        }
    }

    /// Reads the message into an event; a failed payload read leaves its cause in
    /// `outcome.detail`.
    async fn decode(
        &self,
        message: &InboundMessage,
        outcome: &mut ItemOutcome,
    ) -> Result<Event, Failure> {
        let attribute = |name: &str| {
            message
                .attributes
                .get(name)
                .filter(|v| !v.is_empty())
                .cloned()
        };
        let provider = attribute(attribute::PROVIDER)
            .ok_or(Failure::Permanent(ItemReason::MissingProvider))?;
        let event_id =
            attribute(attribute::EVENT_ID).ok_or(Failure::Permanent(ItemReason::MissingEventId))?;
        let body = match attribute(attribute::BODY_ENCODING).as_deref() {
            Some("utf8") | None => message.body.clone().into_bytes(),
            Some("base64") => BASE64
                .decode(&message.body)
                .map_err(|_| Failure::Permanent(ItemReason::MalformedBase64Body))?,
            Some("s3") => self
                .ports
                .payloads
                .get(&message.body)
                .await
                .map_err(|err| {
                    outcome.detail = Some(junction_telemetry::error_chain(&err));
                    Failure::Transient(ItemReason::PayloadUnavailable)
                })?,
            Some(_) => return Err(Failure::Permanent(ItemReason::UnknownBodyEncoding)),
        };
        let origin = match attribute(attribute::ORIGIN).as_deref() {
            None => Origin::Webhook,
            Some(name) => {
                Origin::from_name(name).ok_or(Failure::Permanent(ItemReason::UnknownOrigin))?
            }
        };
        Ok(Event {
            provider,
            origin,
            resource: attribute(attribute::RESOURCE),
            scope: attribute(attribute::ENDPOINT),
            account: attribute(attribute::ACCOUNT),
            connection: attribute(attribute::CONNECTION),
            event_id,
            event_type: attribute(attribute::EVENT_TYPE),
            received_at: attribute(attribute::RECEIVED_AT),
            headers: attribute(attribute::HEADERS)
                .and_then(|json| serde_json::from_str(&json).ok())
                .unwrap_or_default(),
            body,
        })
    }

    /// Normalizes the event and makes one CloudEvent per record or provider event, in
    /// payload order. The record key includes the item's position, so two items about
    /// the same record in one delivery (HubSpot batches) keep distinct, stable ids.
    ///
    /// Each event is published once per owner, stamped ([`CloudEvent::stamped`]), or
    /// once unstamped when there is none; `owners` is `None` without an account index.
    async fn apply_records_and_build_events(
        &self,
        event: &Event,
        owners: Option<Vec<Owner>>,
        outcome: &mut ItemOutcome,
    ) -> Result<Vec<CloudEvent>, Failure> {
        let pinned = self
            .catalog
            .get(&event.provider)
            .and_then(|provider| provider.api_version.as_deref());
        let normalization = normalize(&RawEvent {
            provider: &event.provider,
            resource: event.resource.as_deref(),
            event_type: event.event_type.as_deref(),
            event_id: Some(&event.event_id),
            headers: &event.headers,
            body: &event.body,
            pinned_api_version: pinned,
        });
        let drift = self
            .observe_drift(event, pinned, normalization.is_err())
            .await;
        let normalization = normalization.map_err(|err| {
            outcome.detail = Some(match drift.and_then(|seen| seen.diff) {
                Some(diff) if !diff.is_empty() => {
                    format!("{err}; the payload's shape differs from the last known one: {diff}")
                }
                _ => err.to_string(),
            });
            Failure::Permanent(ItemReason::UnmappablePayload)
        })?;
        outcome.version_mismatch = normalization
            .version_mismatch
            .map(|mismatch| (mismatch.pinned, mismatch.received));
        let mut events = Vec::with_capacity(normalization.items.len());
        for (position, item) in normalization.items.iter().enumerate() {
            if matches!(item, Normalized::NeedsFetch(_)) {
                outcome.fetches_pending += 1;
                continue;
            }
            let meta = item.meta();
            let model = item.model().as_str();
            let time = meta
                .source_timestamp
                .map(|at| at.to_string())
                .or_else(|| event.received_at.clone())
                .unwrap_or_else(|| rfc3339_millis(self.ports.clock.now()));
            let record = serde_json::to_value(item)
                .map_err(|_| Failure::Permanent(ItemReason::UnserializableRecord))?;
            let (change, data) = if matches!(item, Normalized::ProviderEvent(_)) {
                (meta.change.as_str(), record)
            } else {
                let write = RecordWrite {
                    key: RecordWrite::key(&event.provider, event.scope.as_deref(), model, &meta.id),
                    model: item.model(),
                    origin: event.origin,
                    event: event.event_id.clone(),
                    source_ms: meta.source_timestamp.map(|at| at.unix_millis()),
                    complete: meta.complete,
                    record,
                };
                match apply(self.ports.records.as_ref(), &self.priority, &write)
                    .await
                    .map_err(|err| {
                        outcome.detail = Some(junction_telemetry::error_chain(&err));
                        Failure::Transient(ItemReason::RecordStoreUnavailable)
                    })? {
                    ApplyOutcome::Applied(stored) | ApplyOutcome::Unchanged(stored) => {
                        (meta.change.as_str(), stored)
                    }
                    ApplyOutcome::Stale => {
                        outcome.stale += 1;
                        continue;
                    }
                    ApplyOutcome::AlreadyCurrent => {
                        outcome.already_current += 1;
                        continue;
                    }
                    ApplyOutcome::Conflict { stored } => {
                        outcome.conflicts += 1;
                        (
                            "conflict",
                            serde_json::json!({ "incoming": write.record, "stored": stored }),
                        )
                    }
                }
            };
            let built = CloudEvent::new(
                &event.provider,
                &event.event_id,
                &format!("{position}:{model}:{}", meta.id),
                format!("{model}.{change}"),
                event.scope.clone(),
                time,
                data,
            );
            match owners.as_deref() {
                Some(owners) if !owners.is_empty() => events.extend(
                    owners
                        .iter()
                        .map(|owner| built.clone().stamped(&owner.tenant, &owner.connection)),
                ),
                _ => events.push(built),
            }
        }
        if let Some(owners) = owners {
            outcome.unmatched = owners.is_empty();
            outcome.owners = owners;
        }
        Ok(events)
    }

    /// The payload's shape against the known ones, when it is sampled or its mapping
    /// failed (with the drift detector; never fails the delivery).
    async fn observe_drift(
        &self,
        event: &Event,
        pinned: Option<&str>,
        failed: bool,
    ) -> Option<crate::drift::Observation> {
        let drift = self
            .drift
            .as_ref()
            .filter(|drift| failed || drift.sampled())?;
        let key = ShapeKey::for_event(
            &event.provider,
            event.resource.as_deref(),
            event.event_type.as_deref(),
        );
        drift
            .observe_body(&key, &event.event_id, &event.body, pinned)
            .await
    }

    /// Whose each decoded event is, looked up together before the claims: one lookup per
    /// distinct account or connection of the batch, all at once (a cache in front
    /// answers most of them), in the order of `decoded`.
    async fn resolve_owners(&self, decoded: &[(usize, Event)]) -> Vec<Owners> {
        let Some(accounts) = &self.accounts else {
            return decoded.iter().map(|_| Owners::NotLookedUp).collect();
        };
        let wanted: Vec<Option<Lookup>> =
            decoded.iter().map(|(_, event)| Lookup::of(event)).collect();
        let mut distinct: Vec<Lookup> = Vec::new();
        for lookup in wanted.iter().flatten() {
            if !distinct.contains(lookup) {
                distinct.push(lookup.clone());
            }
        }
        let mut answers: Vec<Option<Result<Vec<Owner>, String>>> = vec![None; distinct.len()];
        if let [lookup] = distinct.as_slice() {
            answers[0] = Some(lookup.run(accounts.as_ref()).await);
        } else {
            let mut running = tokio::task::JoinSet::new();
            for (at, lookup) in distinct.iter().cloned().enumerate() {
                let accounts = accounts.clone();
                running.spawn(async move { (at, lookup.run(accounts.as_ref()).await) });
            }
            while let Some(joined) = running.join_next().await {
                // A task that panicked leaves its answer empty (unavailable below).
                if let Ok((at, answer)) = joined {
                    answers[at] = Some(answer);
                }
            }
        }
        wanted
            .into_iter()
            .map(|lookup| {
                let Some(lookup) = lookup else {
                    return Owners::Found(Vec::new());
                };
                let at = distinct
                    .iter()
                    .position(|known| *known == lookup)
                    .unwrap_or_else(|| unreachable!("every lookup is among the distinct ones"));
                match answers[at].clone() {
                    Some(Ok(owners)) => Owners::Found(owners),
                    Some(Err(detail)) => Owners::Unavailable(detail),
                    None => Owners::Unavailable("account lookup task failed".into()),
                }
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "consumer_tests.rs"]
mod tests;
