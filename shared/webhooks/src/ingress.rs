//! The ingress service: one inbound webhook request in, one response and one logged
//! outcome out. Checks run cheapest and safest first: provider known, size within the
//! limit, endpoint configured, signature verified on the raw bytes; only then is the
//! body parsed (its shape, handshake, event id) and one message sent to the queue.

use std::{collections::BTreeMap, sync::Arc};

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::jwt::{
    ApiCredentials, JwkSet, KeySetCache, is_plausible_kid, jwt_kid, precheck_jwt, verify_jwt,
};
use super::{
    HandshakeReply, HandshakeRequest, SignedRequest, SigningSecret, UnsignedHandshake, VerifyError,
    answer_handshake, meta_reply, twitter_crc_reply, unsigned_handshake, verify_matching,
};
use junction_aws::clock::{Clock, rfc3339_millis};
use junction_aws::payloads::PayloadStore;
use junction_aws::queue::{EventQueue, QueueMessage, attribute};
use junction_aws::secrets::{
    FirstSecret, HandshakeSecretStore, WebhookSecrets, is_valid_endpoint_name,
};
use junction_catalog::{
    BodyShape, Catalog, DecodedField, FieldEncoding, FieldLocation, FieldSource, JwtKeys, Scheme,
    SignatureFormat, Verification, WebhookSpec,
};

/// Limits and addresses of the ingress.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// Larger bodies are refused with 413 before any signature work.
    pub max_body_bytes: usize,
    /// Messages larger than this (body plus attributes) go to the payload store and the
    /// message carries a pointer. SQS's limit is 262,144 bytes (1 MiB in newer regions);
    /// the emulator enforces none, so the ingress must.
    pub max_message_bytes: usize,
    /// The public base URL providers call (`https://hooks.example.com`), for schemes that
    /// sign the URL; `None` rebuilds it from `X-Forwarded-Proto` and `Host`.
    pub public_base_url: Option<String>,
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            max_body_bytes: 5 * 1024 * 1024,
            max_message_bytes: 256 * 1024,
            public_base_url: None,
        }
    }
}

/// An inbound request, as the function's HTTP layer received it.
#[derive(Debug, Clone)]
pub struct WebhookRequest {
    pub method: String,
    /// The `{provider}` path segment.
    pub provider: String,
    /// The `{endpoint}` path segment, when present.
    pub endpoint: Option<String>,
    /// The raw request path, as the provider sent it.
    pub path: String,
    /// The raw query string, without `?`.
    pub raw_query: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// The HTTP response to send back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookResponse {
    pub status: u16,
    pub content_type: Option<String>,
    /// Extra headers a handshake needs (Dropbox's `nosniff`, Asana's `X-Hook-Secret`).
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl From<HandshakeReply> for WebhookResponse {
    fn from(reply: HandshakeReply) -> Self {
        WebhookResponse {
            status: reply.status,
            content_type: reply.content_type.map(str::to_owned),
            headers: reply.headers,
            body: reply.body,
        }
    }
}

/// What the ingress did with a request: callers match variants, not text;
/// [`WebhookResult::as_str`] is the log line's `result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookResult {
    /// Verified and enqueued.
    Accepted,
    /// A handshake or challenge answered; nothing enqueued.
    Handshake,
    /// Refused as the sender's fault (4xx).
    Rejected,
    /// Our fault (a dependency or the configuration): 5xx, so the provider retries.
    Failed,
}

impl WebhookResult {
    /// The code the log line carries.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookResult::Accepted => "accepted",
            WebhookResult::Handshake => "handshake",
            WebhookResult::Rejected => "rejected",
            WebhookResult::Failed => "failed",
        }
    }
}

impl std::fmt::Display for WebhookResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request was rejected or failed: a closed set, so callers match variants, not
/// text. [`WebhookReason::as_str`] is all a provider or a log line sees of it: the code
/// in the response body (`{"error":"…"}`) and the line's `reason`, no detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookReason {
    // Rejected: the sender's fault.
    UnknownProvider,
    UnknownEndpoint,
    MethodNotAllowed,
    BodyTooLarge,
    /// The catalog lists the provider without a way to verify it.
    UnverifiableProvider,
    NotAHandshake,
    MalformedHandshake,
    /// A verified body that is not the JSON object every delivery is.
    NotAJsonObject,
    VerifyTokenMismatch,
    /// A handshake tried to install a secret over a configured one.
    SecretAlreadyConfigured,
    // Rejected by verification ([`VerifyError`]).
    MissingSignature,
    MalformedSignature,
    MissingSignedHeader,
    MissingTimestamp,
    MalformedTimestamp,
    StaleTimestamp,
    FutureTimestamp,
    MissingBodyHash,
    BodyHashMismatch,
    SignatureMismatch,
    UnexpectedHeader,
    MalformedBody,
    ClaimMismatch,
    ExpiredKey,
    // Failed: ours to fix or wait out.
    SecretUnavailable,
    SecretNotConfigured,
    SecretUnusable,
    KeySourceNotConfigured,
    KeyFetchFailed,
    HandshakeStoreNotConfigured,
    SecretStoreFailed,
    PayloadStoreFailed,
    EnqueueFailed,
}

impl WebhookReason {
    /// The stable, non-secret code responses, logs and metrics carry.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookReason::UnknownProvider => "unknown_provider",
            WebhookReason::UnknownEndpoint => "unknown_endpoint",
            WebhookReason::MethodNotAllowed => "method_not_allowed",
            WebhookReason::BodyTooLarge => "body_too_large",
            WebhookReason::UnverifiableProvider => "unverifiable_provider",
            WebhookReason::NotAHandshake => "not_a_handshake",
            WebhookReason::MalformedHandshake => "malformed_handshake",
            WebhookReason::NotAJsonObject => "not_a_json_object",
            WebhookReason::VerifyTokenMismatch => "verify_token_mismatch",
            WebhookReason::SecretAlreadyConfigured => "secret_already_configured",
            WebhookReason::MissingSignature => "missing_signature",
            WebhookReason::MalformedSignature => "malformed_signature",
            WebhookReason::MissingSignedHeader => "missing_signed_header",
            WebhookReason::MissingTimestamp => "missing_timestamp",
            WebhookReason::MalformedTimestamp => "malformed_timestamp",
            WebhookReason::StaleTimestamp => "stale_timestamp",
            WebhookReason::FutureTimestamp => "future_timestamp",
            WebhookReason::MissingBodyHash => "missing_body_hash",
            WebhookReason::BodyHashMismatch => "body_hash_mismatch",
            WebhookReason::SignatureMismatch => "signature_mismatch",
            WebhookReason::UnexpectedHeader => "unexpected_header",
            WebhookReason::MalformedBody => "malformed_body",
            WebhookReason::ClaimMismatch => "claim_mismatch",
            WebhookReason::ExpiredKey => "expired_key",
            WebhookReason::SecretUnavailable => "secret_unavailable",
            WebhookReason::SecretNotConfigured => "secret_not_configured",
            WebhookReason::SecretUnusable => "secret_unusable",
            WebhookReason::KeySourceNotConfigured => "key_source_not_configured",
            WebhookReason::KeyFetchFailed => "key_fetch_failed",
            WebhookReason::HandshakeStoreNotConfigured => "handshake_store_not_configured",
            WebhookReason::SecretStoreFailed => "secret_store_failed",
            WebhookReason::PayloadStoreFailed => "payload_store_failed",
            WebhookReason::EnqueueFailed => "enqueue_failed",
        }
    }
}

impl std::fmt::Display for WebhookReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Exhaustive, so a new verification failure needs a reason here; its code is
/// [`VerifyError::reason`]'s (a test holds them equal).
impl From<VerifyError> for WebhookReason {
    fn from(err: VerifyError) -> Self {
        match err {
            VerifyError::MissingSignature => WebhookReason::MissingSignature,
            VerifyError::MalformedSignature => WebhookReason::MalformedSignature,
            VerifyError::MissingSignedHeader => WebhookReason::MissingSignedHeader,
            VerifyError::MissingTimestamp => WebhookReason::MissingTimestamp,
            VerifyError::MalformedTimestamp => WebhookReason::MalformedTimestamp,
            VerifyError::StaleTimestamp => WebhookReason::StaleTimestamp,
            VerifyError::FutureTimestamp => WebhookReason::FutureTimestamp,
            VerifyError::MissingBodyHash => WebhookReason::MissingBodyHash,
            VerifyError::BodyHashMismatch => WebhookReason::BodyHashMismatch,
            VerifyError::SignatureMismatch => WebhookReason::SignatureMismatch,
            VerifyError::UnexpectedHeader => WebhookReason::UnexpectedHeader,
            VerifyError::MalformedBody => WebhookReason::MalformedBody,
            VerifyError::ClaimMismatch => WebhookReason::ClaimMismatch,
            VerifyError::ExpiredKey => WebhookReason::ExpiredKey,
            VerifyError::NoUsableSecret => WebhookReason::SecretUnusable,
        }
    }
}

/// What happened to one request: logged as one line and counted in metrics. Holds no
/// secret, signature or body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub provider: String,
    pub endpoint: Option<String>,
    pub result: WebhookResult,
    /// Why, for anything but [`WebhookResult::Accepted`] and [`WebhookResult::Handshake`].
    pub reason: Option<WebhookReason>,
    pub status: u16,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    /// The body was stored in the payload store, not in the message.
    pub offloaded: bool,
    /// The request verified only after the secrets were re-read (a rotation).
    pub secrets_refreshed: bool,
    pub body_bytes: usize,
    /// Why an infrastructure step failed ([`junction_telemetry::error_chain`]): for the
    /// log line only, never the response.
    pub cause: Option<String>,
}

impl Outcome {
    /// True for a bad, missing or stale signature: the security signal.
    pub fn is_verification_failure(&self) -> bool {
        self.status == 401
    }
}

/// The ingress with its ports.
#[derive(Debug)]
pub struct Ingress {
    catalog: &'static Catalog,
    secrets: WebhookSecrets,
    queue: Arc<dyn EventQueue>,
    payloads: Arc<dyn PayloadStore>,
    clock: Arc<dyn Clock>,
    config: IngressConfig,
    handshake_store: Option<Arc<dyn HandshakeSecretStore>>,
    key_sets: Option<Arc<KeySetCache>>,
}

/// A short-circuit: status, reason and result kind.
struct Stop {
    status: u16,
    result: WebhookResult,
    reason: WebhookReason,
    /// The failed dependency's error chain, for the log line.
    cause: Option<String>,
}

impl Stop {
    fn rejected(status: u16, reason: impl Into<WebhookReason>) -> Self {
        Stop {
            status,
            result: WebhookResult::Rejected,
            reason: reason.into(),
            cause: None,
        }
    }

    fn failed(reason: impl Into<WebhookReason>) -> Self {
        Stop {
            status: 503,
            result: WebhookResult::Failed,
            reason: reason.into(),
            cause: None,
        }
    }

    /// A dependency failed: `reason` is the code the provider sees, `err` goes to the log.
    fn failed_because(reason: WebhookReason, err: &(dyn std::error::Error + 'static)) -> Self {
        Stop {
            cause: Some(junction_telemetry::error_chain(err)),
            ..Stop::failed(reason)
        }
    }
}

impl Ingress {
    pub fn new(
        catalog: &'static Catalog,
        secrets: WebhookSecrets,
        queue: Arc<dyn EventQueue>,
        payloads: Arc<dyn PayloadStore>,
        clock: Arc<dyn Clock>,
        config: IngressConfig,
    ) -> Self {
        Ingress {
            catalog,
            secrets,
            queue,
            payloads,
            clock,
            config,
            handshake_store: None,
            key_sets: None,
        }
    }

    /// Where JWT-authenticated providers' keys come from (Gmail push's key set, Plaid's
    /// key endpoint); without it their deliveries are answered 503.
    pub fn with_key_sets(mut self, key_sets: Arc<KeySetCache>) -> Self {
        self.key_sets = Some(key_sets);
        self
    }

    /// Where handshakes that deliver a secret (Asana, Notion) install it; without one
    /// those handshakes are answered 503.
    pub fn with_handshake_store(mut self, store: Arc<dyn HandshakeSecretStore>) -> Self {
        self.handshake_store = Some(store);
        self
    }

    /// Handles one request. Never panics on input; every path yields a response.
    pub async fn handle(&self, request: WebhookRequest) -> (WebhookResponse, Outcome) {
        let mut outcome = Outcome {
            provider: request.provider.clone(),
            endpoint: request.endpoint.clone(),
            result: WebhookResult::Accepted,
            reason: None,
            status: 200,
            event_id: None,
            event_type: None,
            offloaded: false,
            secrets_refreshed: false,
            body_bytes: request.body.len(),
            cause: None,
        };
        let response = match self.process(&request, &mut outcome).await {
            Ok(response) => response,
            Err(stop) => {
                outcome.result = stop.result;
                outcome.reason = Some(stop.reason);
                outcome.cause = stop.cause;
                WebhookResponse {
                    status: stop.status,
                    content_type: Some("application/json".to_owned()),
                    headers: Vec::new(),
                    body: format!(r#"{{"error":"{}"}}"#, stop.reason.as_str()),
                }
            }
        };
        outcome.status = response.status;
        (response, outcome)
    }

    async fn process(
        &self,
        request: &WebhookRequest,
        outcome: &mut Outcome,
    ) -> Result<WebhookResponse, Stop> {
        let spec = self
            .catalog
            .get(&request.provider)
            .and_then(|provider| provider.webhook.as_ref())
            .ok_or(Stop::rejected(404, WebhookReason::UnknownProvider))?;
        let endpoint = request.endpoint.as_deref();
        if endpoint.is_some_and(|endpoint| !is_valid_endpoint_name(endpoint)) {
            return Err(Stop::rejected(404, WebhookReason::UnknownEndpoint));
        }
        let get_handshake = spec.handshake.filter(|kind| kind.is_get());
        let allowed =
            request.method == "POST" || (request.method == "GET" && get_handshake.is_some());
        if !allowed {
            return Err(Stop::rejected(405, WebhookReason::MethodNotAllowed));
        }
        let declared_length = request
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<usize>().ok());
        if request.body.len() > self.config.max_body_bytes
            || declared_length.is_some_and(|length| length > self.config.max_body_bytes)
        {
            return Err(Stop::rejected(413, WebhookReason::BodyTooLarge));
        }
        let Some(verification) = &spec.verification else {
            // Listed but impossible to authenticate: refused, never enqueued.
            return Err(Stop::rejected(401, WebhookReason::UnverifiableProvider));
        };

        let now = self.clock.now();
        // Only configured endpoints exist: a name of its own secret, or one the
        // provider's secret declares. Otherwise one captured delivery, posted to any
        // number of made-up names, would verify under each of them.
        if let Some(endpoint) = endpoint {
            let exists = self
                .secrets
                .endpoint_exists(&request.provider, endpoint, now)
                .await
                .map_err(|err| Stop::failed_because(WebhookReason::SecretUnavailable, &err))?;
            if !exists {
                return Err(Stop::rejected(404, WebhookReason::UnknownEndpoint));
            }
        }
        let handshake_request = HandshakeRequest {
            query: &request.raw_query,
            headers: &request.headers,
            body: &request.body,
        };
        if let Some(kind) = spec.handshake
            && let Some(handshake) = unsigned_handshake(kind, &request.method, &handshake_request)
        {
            outcome.result = WebhookResult::Handshake;
            return self.unsigned(handshake, request, now).await;
        }
        if request.method == "GET" && get_handshake.is_some_and(|kind| kind.before_verification()) {
            return Err(Stop::rejected(400, WebhookReason::NotAHandshake));
        }

        let url = self.public_url(request);
        let signed = SignedRequest {
            method: &request.method,
            url: &url,
            headers: &request.headers,
            body: &request.body,
        };
        let secret = if verification.scheme == Scheme::Jwt {
            self.verified_jwt(verification, request, now).await?;
            None
        } else {
            Some(
                self.verified_secret(verification, request, &signed, now, outcome)
                    .await?,
            )
        };

        // Verified: from here on the body may be parsed.
        if spec.body == BodyShape::JsonObject
            && request.method == "POST"
            && !is_json_object(&request.body)
        {
            // A valid signature over something no delivery is: a handshake's answer
            // (X's CRC signs any token), replayed as a delivery.
            return Err(Stop::rejected(401, WebhookReason::NotAJsonObject));
        }
        if let Some(kind) = spec.handshake
            && let Some(reply) = answer_handshake(kind, &handshake_request, secret.as_ref())
        {
            outcome.result = WebhookResult::Handshake;
            return Ok(reply.into());
        }
        if request.method != "POST" {
            return Err(Stop::rejected(400, WebhookReason::NotAHandshake));
        }

        let message = self
            .message(spec, verification, request, now, outcome)
            .await?;
        self.queue
            .send(message)
            .await
            .map_err(|err| Stop::failed_because(WebhookReason::EnqueueFailed, &err))?;
        Ok(match &spec.ack {
            Some(ack) => WebhookResponse {
                status: ack.status,
                content_type: ack.content_type.clone(),
                headers: Vec::new(),
                body: ack.body.clone(),
            },
            None => WebhookResponse {
                status: 200,
                content_type: None,
                headers: Vec::new(),
                body: String::new(),
            },
        })
    }

    /// Verifies `signed` and returns the secret that verified it, re-reading the
    /// secrets once (rate-limited) when none matched: perhaps they were rotated.
    async fn verified_secret(
        &self,
        verification: &Verification,
        request: &WebhookRequest,
        signed: &SignedRequest<'_>,
        now: OffsetDateTime,
        outcome: &mut Outcome,
    ) -> Result<SigningSecret, Stop> {
        let endpoint = request.endpoint.as_deref();
        let secrets = self
            .secrets
            .get(&request.provider, endpoint, now)
            .await
            .map_err(|err| Stop::failed_because(WebhookReason::SecretUnavailable, &err))?;
        if secrets.is_empty() {
            return Err(Stop::failed(WebhookReason::SecretNotConfigured));
        }
        let first = match verify_matching(verification, &secrets, signed, now) {
            Ok(index) => {
                return secrets
                    .get(index)
                    .cloned()
                    .ok_or(Stop::failed(WebhookReason::SecretUnavailable));
            }
            Err(first @ (VerifyError::SignatureMismatch | VerifyError::NoUsableSecret)) => first,
            Err(err) => return Err(Stop::rejected(401, err)),
        };
        let refreshed = self
            .secrets
            .refresh_after_failure(&request.provider, endpoint, now)
            .await
            .map_err(|err| Stop::failed_because(WebhookReason::SecretUnavailable, &err))?;
        let retried = match &refreshed {
            Some(secrets) => verify_matching(verification, secrets, signed, now),
            None => Err(first),
        };
        match (retried, refreshed) {
            (Ok(index), Some(secrets)) => {
                outcome.secrets_refreshed = true;
                secrets
                    .get(index)
                    .cloned()
                    .ok_or(Stop::failed(WebhookReason::SecretUnavailable))
            }
            (Ok(_), None) => Err(Stop::failed(WebhookReason::SecretUnavailable)),
            (Err(err), _) if err.is_configuration_error() => Err(Stop::failed(err)),
            (Err(err), _) => Err(Stop::rejected(401, err)),
        }
    }

    /// Verifies a JWT-authenticated request with the provider's published keys and the
    /// claim values configured in the webhook secret (`jwt_claims`).
    async fn verified_jwt(
        &self,
        verification: &Verification,
        request: &WebhookRequest,
        now: OffsetDateTime,
    ) -> Result<(), Stop> {
        let (Some(rule), SignatureFormat::Single { header, prefix, .. }) =
            (&verification.jwt, &verification.signature)
        else {
            return Err(Stop::failed(WebhookReason::SecretUnusable));
        };
        let raw = header
            .names()
            .iter()
            .find_map(|name| request.headers.get(name.as_str()))
            .ok_or(Stop::rejected(401, VerifyError::MissingSignature))?;
        let token = raw
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix(prefix.as_str()))
            .ok_or(Stop::rejected(401, VerifyError::MalformedSignature))?;
        let set = self
            .secrets
            .get_set(&request.provider, request.endpoint.as_deref(), now)
            .await
            .map_err(|err| Stop::failed_because(WebhookReason::SecretUnavailable, &err))?;
        let key_sets = self
            .key_sets
            .as_ref()
            .ok_or(Stop::failed(WebhookReason::KeySourceNotConfigured))?;
        let refused = |err: VerifyError| {
            if err.is_configuration_error() {
                Stop::failed(err)
            } else {
                Stop::rejected(401, err)
            }
        };
        let keys = match verification.jwt_keys {
            JwtKeys::JwkSet => key_sets
                .keys_for(&rule.jwks_url, jwt_kid(token).as_deref(), now)
                .await
                .map_err(|err| Stop::failed_because(WebhookReason::KeyFetchFailed, &err))?,
            JwtKeys::PlaidVerificationKey => {
                // The key is fetched with our API credentials for a `kid` the request
                // chose: only for a token that would verify if its signature does.
                precheck_jwt(rule, token, &request.body, now).map_err(refused)?;
                let kid = jwt_kid(token)
                    .filter(|kid| is_plausible_kid(kid))
                    .ok_or(refused(VerifyError::MalformedSignature))?;
                let credentials = set
                    .signing_secrets
                    .iter()
                    .find_map(ApiCredentials::parse)
                    .ok_or(Stop::failed(WebhookReason::SecretNotConfigured))?;
                let fetched = key_sets
                    .key_by_id(&rule.jwks_url, &credentials, &kid, now)
                    .await
                    .map_err(|err| Stop::failed_because(WebhookReason::KeyFetchFailed, &err))?;
                if fetched.expired {
                    return Err(refused(VerifyError::ExpiredKey));
                }
                Arc::new(JwkSet {
                    keys: vec![fetched.key.clone()],
                })
            }
        };
        verify_jwt(rule, token, &request.body, &keys, &set.jwt_claims, now).map_err(refused)
    }

    /// Answers a handshake that arrived unsigned. Nothing here is enqueued, and a
    /// configured secret is never replaced.
    async fn unsigned(
        &self,
        handshake: UnsignedHandshake,
        request: &WebhookRequest,
        now: OffsetDateTime,
    ) -> Result<WebhookResponse, Stop> {
        let endpoint = request.endpoint.as_deref();
        match handshake {
            UnsignedHandshake::Reply(reply) => Ok(reply.into()),
            UnsignedHandshake::Malformed => {
                Err(Stop::rejected(400, WebhookReason::MalformedHandshake))
            }
            UnsignedHandshake::CheckVerifyToken {
                presented,
                challenge,
            } => {
                let set = self
                    .secrets
                    .get_set(&request.provider, endpoint, now)
                    .await
                    .map_err(|err| Stop::failed_because(WebhookReason::SecretUnavailable, &err))?;
                let reply = meta_reply(&presented, challenge, set.verify_token.as_ref());
                if reply.status == 403 {
                    return Err(Stop::rejected(403, WebhookReason::VerifyTokenMismatch));
                }
                Ok(reply.into())
            }
            UnsignedHandshake::SignChallenge { token } => {
                let secrets = self
                    .secrets
                    .get(&request.provider, endpoint, now)
                    .await
                    .map_err(|err| Stop::failed_because(WebhookReason::SecretUnavailable, &err))?;
                let secret = secrets
                    .first()
                    .ok_or(Stop::failed(WebhookReason::SecretNotConfigured))?;
                twitter_crc_reply(&token, secret)
                    .map(Into::into)
                    .ok_or(Stop::failed(WebhookReason::SecretUnusable))
            }
            UnsignedHandshake::StoreSecret { secret, reply } => {
                let store = self
                    .handshake_store
                    .as_ref()
                    .ok_or(Stop::failed(WebhookReason::HandshakeStoreNotConfigured))?;
                let name = self.secrets.secret_name(&request.provider, endpoint);
                let stored = store
                    .store_first_secret(&name, &secret)
                    .await
                    .map_err(|err| Stop::failed_because(WebhookReason::SecretStoreFailed, &err))?;
                self.secrets.invalidate(&request.provider, endpoint).await;
                match stored {
                    FirstSecret::Stored => Ok(reply.into()),
                    FirstSecret::AlreadyConfigured => {
                        Err(Stop::rejected(403, WebhookReason::SecretAlreadyConfigured))
                    }
                }
            }
        }
    }

    /// The URL the provider called: the configured public base URL, or the scheme and
    /// host API Gateway forwarded, plus the raw path and query.
    fn public_url(&self, request: &WebhookRequest) -> String {
        let query = if request.raw_query.is_empty() {
            String::new()
        } else {
            format!("?{}", request.raw_query)
        };
        if let Some(base) = &self.config.public_base_url {
            return format!("{}{}{query}", base.trim_end_matches('/'), request.path);
        }
        let header = |name: &str| {
            request
                .headers
                .get(name)
                .and_then(|value| value.to_str().ok())
        };
        let scheme = header("x-forwarded-proto").unwrap_or("https");
        let host = header("host").unwrap_or_default();
        format!("{scheme}://{host}{}{query}", request.path)
    }

    async fn message(
        &self,
        spec: &WebhookSpec,
        verification: &Verification,
        request: &WebhookRequest,
        now: OffsetDateTime,
        outcome: &mut Outcome,
    ) -> Result<QueueMessage, Stop> {
        let pointers = json_pointers(spec);
        // A shared secret carried in the body (Graph's clientState) stops here: nothing
        // downstream verifies again, and the queue, the payload store, the DLQs, the
        // payload log and every bus subscriber would otherwise all hold it.
        let stripped = without_body_secret(verification, &request.body);
        let request_body: &[u8] = stripped.as_deref().unwrap_or(&request.body);
        let json = if pointers.is_empty() {
            Vec::new()
        } else {
            super::verify::body_values(&request.headers, request_body, &pointers)
        };
        let read = |source: &FieldSource| -> Option<String> {
            let value = match &source.location {
                FieldLocation::Header(names) => names
                    .names()
                    .iter()
                    .find_map(|name| request.headers.get(name.as_str()))
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned),
                FieldLocation::JsonPointer(pointer) => {
                    let position = pointers.iter().position(|p| p == pointer)?;
                    let found = json.get(position)?.as_ref()?;
                    match &source.decoded {
                        None => scalar_text(found),
                        Some(decoded) => decoded_field(found, decoded),
                    }
                }
            }?;
            let value = if source.lowercase {
                value.to_lowercase()
            } else {
                value
            };
            (!value.is_empty() && value.len() <= 1024 && is_sqs_text(&value)).then_some(value)
        };
        let (event_id, event_id_source) = match spec
            .event_id
            .as_ref()
            .and_then(|source| read(source).map(|id| (id, source)))
        {
            Some((id, source)) => match source.location {
                FieldLocation::Header(_) => (id, "header"),
                FieldLocation::JsonPointer(_) => (id, "json"),
            },
            None => (hex::encode(Sha256::digest(request_body)), "body_sha256"),
        };
        let event_type = spec.event_type.as_ref().and_then(read);
        let account = spec.account.as_ref().and_then(read);

        let mut attributes = BTreeMap::new();
        attributes.insert(attribute::PROVIDER.to_owned(), request.provider.clone());
        if let Some(endpoint) = &request.endpoint {
            attributes.insert(attribute::ENDPOINT.to_owned(), endpoint.clone());
        }
        attributes.insert(attribute::EVENT_ID.to_owned(), event_id.clone());
        attributes.insert(
            attribute::EVENT_ID_SOURCE.to_owned(),
            event_id_source.to_owned(),
        );
        if let Some(event_type) = &event_type {
            attributes.insert(attribute::EVENT_TYPE.to_owned(), event_type.clone());
        }
        if let Some(account) = &account {
            attributes.insert(attribute::ACCOUNT.to_owned(), account.clone());
        }
        attributes.insert(attribute::RECEIVED_AT.to_owned(), rfc3339_millis(now));
        attributes.insert(
            attribute::HEADERS.to_owned(),
            forwarded_headers(spec, &request.headers),
        );

        let (body, encoding) = match std::str::from_utf8(request_body) {
            Ok(text) if is_sqs_text(text) => (text.to_owned(), "utf8"),
            _ => (BASE64.encode(request_body), "base64"),
        };
        attributes.insert(attribute::BODY_ENCODING.to_owned(), encoding.to_owned());
        let mut message = QueueMessage { body, attributes };
        if message.size() > self.config.max_message_bytes {
            let key = payload_key(request, &event_id, now);
            let location = self
                .payloads
                .put(&key, request_body)
                .await
                .map_err(|err| Stop::failed_because(WebhookReason::PayloadStoreFailed, &err))?;
            message.body = location;
            message
                .attributes
                .insert(attribute::BODY_ENCODING.to_owned(), "s3".to_owned());
            outcome.offloaded = true;
        }
        outcome.event_id = Some(event_id);
        outcome.event_type = event_type;
        Ok(message)
    }
}

/// The body without the shared secret a `token` scheme reads from it (a JSON pointer, or
/// one per item: Graph's `value[i].clientState`); `None` when the scheme keeps no secret
/// in the body (a MAC in the body, Mailgun's or Adyen's, proves but reveals nothing, so
/// it stays) or the body is not JSON. The rest is re-serialized: its members may change
/// order, which JSON objects do not give meaning to.
fn without_body_secret(verification: &Verification, body: &[u8]) -> Option<Vec<u8>> {
    if verification.scheme != Scheme::Token {
        return None;
    }
    let mut json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let removed = match &verification.signature {
        SignatureFormat::JsonPointer { pointer, .. } => remove_at(&mut json, pointer),
        SignatureFormat::PerItem {
            items, signature, ..
        } => json
            .pointer_mut(items)
            .and_then(serde_json::Value::as_array_mut)
            .map(|items| {
                items
                    .iter_mut()
                    .map(|item| remove_at(item, signature))
                    .fold(false, |any, removed| any | removed)
            })
            .unwrap_or(false),
        _ => false,
    };
    removed.then(|| serde_json::to_vec(&json).ok()).flatten()
}

/// Removes the member a JSON pointer names; whether there was one.
fn remove_at(json: &mut serde_json::Value, pointer: &str) -> bool {
    let Some((parent, member)) = pointer.rsplit_once('/') else {
        return false;
    };
    let member = member.replace("~1", "/").replace("~0", "~");
    json.pointer_mut(parent)
        .and_then(serde_json::Value::as_object_mut)
        .is_some_and(|object| object.remove(&member).is_some())
}

/// The JSON pointers the spec reads from the body (event id, type, account).
fn json_pointers(spec: &WebhookSpec) -> Vec<&str> {
    [&spec.event_id, &spec.event_type, &spec.account]
        .into_iter()
        .flatten()
        .filter_map(|source| match &source.location {
            FieldLocation::JsonPointer(pointer) => Some(pointer.as_str()),
            FieldLocation::Header(_) => None,
        })
        .collect()
}

/// A string as it is, a number as its decimal text; nothing else is a field's value.
fn scalar_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(text) => Some(text.clone()),
        serde_json::Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// The longest encoded value decoded (Gmail's push data is under 100 bytes): a larger
/// one is not read, so a delivery cannot make the ingress decode megabytes twice.
const MAX_ENCODED_FIELD_BYTES: usize = 16 * 1024;

/// Base64 as Pub/Sub writes it (standard alphabet), padded or not.
const BASE64_ANY_PADDING: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// The field at `decoded.pointer` of the JSON document `encoded` carries (a Pub/Sub
/// push's `message.data`); `None` when it is not a string of that encoding, not JSON,
/// or has no such field. Read after verification, like every other field: the signature
/// was checked on the raw bytes, untouched by this.
fn decoded_field(encoded: &serde_json::Value, decoded: &DecodedField) -> Option<String> {
    let serde_json::Value::String(text) = encoded else {
        return None;
    };
    if text.len() > MAX_ENCODED_FIELD_BYTES {
        return None;
    }
    let document = match decoded.encoding {
        FieldEncoding::Base64Json => BASE64_ANY_PADDING.decode(text.trim()).ok()?,
    };
    let values = super::json_pointers::values_at(&document, &[decoded.pointer.as_str()])?;
    scalar_text(&values.into_iter().next()??)
}

/// A JSON object, well-formed to its end (`{…}` after optional whitespace).
fn is_json_object(body: &[u8]) -> bool {
    body.trim_ascii_start().first() == Some(&b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

/// True when SQS accepts `text` as a message body or attribute value (XML 1.0 chars:
/// tab, LF, CR, U+0020–U+D7FF, U+E000–U+FFFD, U+10000 and above).
fn is_sqs_text(text: &str) -> bool {
    text.chars().all(|c| {
        matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
    })
}

fn forwarded_headers(spec: &WebhookSpec, headers: &HeaderMap) -> String {
    let mut forwarded = BTreeMap::new();
    let names =
        std::iter::once("content-type").chain(spec.forward_headers.iter().map(String::as_str));
    for name in names {
        if let Some(value) = headers.get(name).and_then(|value| value.to_str().ok()) {
            forwarded.insert(name.to_ascii_lowercase(), value);
        }
    }
    serde_json::to_string(&forwarded).unwrap_or_else(|_| "{}".to_owned())
}

/// The same event always maps to the same key, so a provider's retry overwrites rather
/// than duplicates.
fn payload_key(request: &WebhookRequest, event_id: &str, now: OffsetDateTime) -> String {
    let mut digest = Sha256::new();
    digest.update(request.provider.as_bytes());
    digest.update([0]);
    digest.update(request.endpoint.as_deref().unwrap_or_default().as_bytes());
    digest.update([0]);
    digest.update(event_id.as_bytes());
    format!(
        "webhooks/{}/{:04}-{:02}-{:02}/{}",
        request.provider,
        now.year(),
        u8::from(now.month()),
        now.day(),
        hex::encode(digest.finalize())
    )
}

#[cfg(test)]
#[path = "ingress_tests.rs"]
mod tests;
