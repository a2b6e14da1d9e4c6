//! The `SecretSource` port and the webhook signing-secret cache.
//!
//! Secret layout (DESIGN.md contract): `<prefix>/webhooks/<provider>` or
//! `<prefix>/webhooks/<provider>/<endpoint>`, a JSON object whose `signing_secrets` is a
//! list of secrets, newest first. Secrets are cached per process with a TTL; after a
//! verification failure the entry is re-read at most once per refresh interval, so a
//! rotation takes effect without a redeploy and a flood of bad requests cannot turn
//! into a flood of Secrets Manager calls.
//!
//! An endpoint (`/webhooks/<provider>/<endpoint>`) exists only when configured: by a
//! secret of its own, or by its name in the provider secret's `endpoints` list (it then
//! verifies with the provider's secrets). Any other name is unknown, so a delivery
//! captured at one URL cannot be posted again under made-up names.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    sync::Mutex as StdMutex,
};

use async_trait::async_trait;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use time::{Duration, OffsetDateTime};
use tokio::sync::Mutex;

/// A failure to read a secret. Never carries the secret's value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The secret store could not be reached or refused; retryable.
    #[error("secret {name} could not be read")]
    Unavailable {
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The secret exists but is not of the documented shape.
    #[error("secret {name} is malformed: {reason}")]
    Malformed { name: String, reason: String },
}

/// Reads secrets by name.
#[async_trait]
pub trait SecretSource: Send + Sync + std::fmt::Debug {
    /// The secret's string value; `None` when no such secret exists.
    async fn secret_string(&self, name: &str) -> Result<Option<String>, SecretError>;

    /// Every secret whose name starts with `prefix`, as `(name, value)`, in as few calls
    /// as the store allows (the ingress reads all its signing secrets at init with it).
    async fn secrets_with_prefix(&self, prefix: &str)
    -> Result<Vec<(String, String)>, SecretError>;
}

/// AWS Secrets Manager.
#[derive(Debug, Clone)]
pub struct SecretsManagerSource {
    client: aws_sdk_secretsmanager::Client,
}

impl SecretsManagerSource {
    /// A Secrets Manager client from shared AWS configuration.
    pub fn from_config(aws: &aws_config::SdkConfig) -> Self {
        SecretsManagerSource::new(aws_sdk_secretsmanager::Client::new(aws))
    }

    pub fn new(client: aws_sdk_secretsmanager::Client) -> Self {
        SecretsManagerSource { client }
    }
}

#[async_trait]
impl SecretSource for SecretsManagerSource {
    async fn secret_string(&self, name: &str) -> Result<Option<String>, SecretError> {
        match self.client.get_secret_value().secret_id(name).send().await {
            Ok(output) => Ok(output.secret_string),
            Err(err) => {
                let err = aws_sdk_secretsmanager::Error::from(err);
                if matches!(
                    err,
                    aws_sdk_secretsmanager::Error::ResourceNotFoundException(_)
                ) {
                    Ok(None)
                } else {
                    Err(SecretError::Unavailable {
                        name: name.to_owned(),
                        source: Box::new(err),
                    })
                }
            }
        }
    }

    /// `BatchGetSecretValue` filtered on the name prefix: one call per 20 secrets.
    /// Secrets it could not return (listed in its `Errors`) are left out; they are read
    /// one by one when first needed.
    async fn secrets_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, SecretError> {
        use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
        let filter = Filter::builder()
            .key(FilterNameStringType::Name)
            .values(prefix)
            .build();
        let mut secrets = Vec::new();
        let mut next_token = None;
        loop {
            let output = self
                .client
                .batch_get_secret_value()
                .filters(filter.clone())
                .max_results(20)
                .set_next_token(next_token)
                .send()
                .await
                .map_err(|err| SecretError::Unavailable {
                    name: format!("{prefix}*"),
                    source: Box::new(aws_sdk_secretsmanager::Error::from(err)),
                })?;
            secrets.extend(
                output
                    .secret_values
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|secret| Some((secret.name?, secret.secret_string?)))
                    // The name filter matches prefixes case-insensitively.
                    .filter(|(name, _)| name.starts_with(prefix)),
            );
            next_token = output.next_token;
            if next_token.is_none() {
                return Ok(secrets);
            }
        }
    }
}

/// Secrets in memory, counting reads (tests assert the cache's behaviour with it).
#[derive(Debug, Default)]
pub struct InMemorySecretSource {
    secrets: StdMutex<HashMap<String, String>>,
    reads: std::sync::atomic::AtomicUsize,
}

impl InMemorySecretSource {
    /// Creates or replaces a secret.
    pub fn put(&self, name: impl Into<String>, value: impl Into<String>) {
        self.secrets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(name.into(), value.into());
    }

    /// How many reads reached this source.
    pub fn reads(&self) -> usize {
        self.reads.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait]
impl SecretSource for InMemorySecretSource {
    async fn secret_string(&self, name: &str) -> Result<Option<String>, SecretError> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(self
            .secrets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(name)
            .cloned())
    }

    async fn secrets_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, SecretError> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(self
            .secrets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect())
    }
}

/// The longest endpoint name: names become part of secret names (512 characters at
/// most) and S3 keys.
pub const MAX_ENDPOINT_NAME_LEN: usize = 64;

/// An endpoint name as URLs, secret names and S3 keys may carry it: 1 to
/// [`MAX_ENDPOINT_NAME_LEN`] ASCII letters, digits, `-` and `_`.
pub fn is_valid_endpoint_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ENDPOINT_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The secret name for a provider's (or one of its endpoints') webhook secrets.
pub fn webhook_secret_name(prefix: &str, provider: &str, endpoint: Option<&str>) -> String {
    match endpoint {
        Some(endpoint) => format!("{prefix}/webhooks/{provider}/{endpoint}"),
        None => format!("{prefix}/webhooks/{provider}"),
    }
}

/// The JSON document stored in a webhook secret.
#[derive(Deserialize)]
struct WebhookSecretDocument {
    signing_secrets: Vec<String>,
    /// The token Meta's `hub.challenge` handshake must present (chosen by the operator
    /// when subscribing; not a signing key).
    #[serde(default)]
    verify_token: Option<String>,
    /// Values JWT claims must equal (Gmail push: `aud`, `email`); not secrets, but
    /// configured per deployment.
    #[serde(default)]
    jwt_claims: BTreeMap<String, String>,
    /// In a provider's secret: the endpoint names that exist and verify with it.
    #[serde(default)]
    endpoints: Vec<String>,
}

/// A parsed webhook secret: the signing secrets, newest first, and the optional
/// handshake verify token.
#[derive(Debug, Clone, Default)]
pub struct WebhookSecretSet {
    pub signing_secrets: Arc<[SigningSecret]>,
    pub verify_token: Option<SigningSecret>,
    pub jwt_claims: BTreeMap<String, String>,
    /// The endpoints a provider's secret declares (`"endpoints": ["eu", "us"]`): they
    /// exist, and verify with this secret unless they have one of their own. Each is a
    /// valid endpoint name ([`is_valid_endpoint_name`]).
    pub endpoints: Arc<[String]>,
}

/// Parses the whole webhook secret document (see [`parse_webhook_secret`]).
pub fn parse_webhook_secret_set(name: &str, text: &str) -> Result<WebhookSecretSet, SecretError> {
    let document = parse_document(name, text)?;
    if let Some(bad) = document
        .endpoints
        .iter()
        .position(|endpoint| !is_valid_endpoint_name(endpoint))
    {
        return Err(SecretError::Malformed {
            name: name.to_owned(),
            // By position: a value pasted into the wrong field may be a secret.
            reason: format!(
                "`endpoints[{bad}]` is not an endpoint name (1 to {MAX_ENDPOINT_NAME_LEN} \
                 letters, digits, `-` and `_`)"
            ),
        });
    }
    Ok(WebhookSecretSet {
        signing_secrets: document
            .signing_secrets
            .into_iter()
            .filter(|secret| !secret.is_empty())
            .map(SigningSecret::new)
            .collect::<Vec<_>>()
            .into(),
        verify_token: document
            .verify_token
            .filter(|token| !token.is_empty())
            .map(SigningSecret::new),
        jwt_claims: document.jwt_claims,
        endpoints: document.endpoints.into(),
    })
}

fn parse_document(name: &str, text: &str) -> Result<WebhookSecretDocument, SecretError> {
    serde_json::from_str(text).map_err(|err| SecretError::Malformed {
        name: name.to_owned(),
        // serde_json's message names the field and position, never the value.
        reason: format!(
            "expected {{\"signing_secrets\": [\"…\"]}} ({})",
            json_error_kind(&err)
        ),
    })
}

/// Whether an unsigned handshake installed its secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstSecret {
    /// No secret of that name existed; one now does, holding this signing secret.
    Stored,
    /// A secret of that name exists (configured, or an empty list): it was left as it
    /// is.
    AlreadyConfigured,
}

/// Where secrets delivered by a provider's handshake (Asana's `X-Hook-Secret`,
/// Notion's verification token) are kept.
#[async_trait]
pub trait HandshakeSecretStore: Send + Sync + std::fmt::Debug {
    /// Creates the webhook secret `name` with `secret` as its only signing secret when
    /// no secret of that name exists. An existing one is never read or changed, even
    /// an empty list: an unsigned request must not be able to set the key, so the
    /// function holds only `secretsmanager:CreateSecret` for these names (to re-arm,
    /// the operator deletes the secret).
    async fn store_first_secret(
        &self,
        name: &str,
        secret: &SigningSecret,
    ) -> Result<FirstSecret, SecretError>;
}

fn first_secret_document(secret: &SigningSecret) -> String {
    serde_json::json!({ "signing_secrets": [secret.expose()] }).to_string()
}

#[async_trait]
impl HandshakeSecretStore for SecretsManagerSource {
    /// One `CreateSecret`, which fails with `ResourceExistsException` when the name is
    /// taken (atomically, so two racing handshakes cannot both install theirs).
    async fn store_first_secret(
        &self,
        name: &str,
        secret: &SigningSecret,
    ) -> Result<FirstSecret, SecretError> {
        let created = self
            .client
            .create_secret()
            .name(name)
            .description("Webhook signing secret installed by the provider's handshake")
            .secret_string(first_secret_document(secret))
            .send()
            .await;
        match created.map_err(aws_sdk_secretsmanager::Error::from) {
            Ok(_) => Ok(FirstSecret::Stored),
            Err(aws_sdk_secretsmanager::Error::ResourceExistsException(_)) => {
                Ok(FirstSecret::AlreadyConfigured)
            }
            Err(err) => Err(SecretError::Unavailable {
                name: name.to_owned(),
                source: Box::new(err),
            }),
        }
    }
}

#[async_trait]
impl HandshakeSecretStore for InMemorySecretSource {
    async fn store_first_secret(
        &self,
        name: &str,
        secret: &SigningSecret,
    ) -> Result<FirstSecret, SecretError> {
        let mut secrets = self
            .secrets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match secrets.entry(name.to_owned()) {
            std::collections::hash_map::Entry::Occupied(_) => Ok(FirstSecret::AlreadyConfigured),
            std::collections::hash_map::Entry::Vacant(vacant) => {
                vacant.insert(first_secret_document(secret));
                Ok(FirstSecret::Stored)
            }
        }
    }
}

/// Parses a webhook secret document; an empty list counts as not configured.
pub fn parse_webhook_secret(name: &str, text: &str) -> Result<Vec<SigningSecret>, SecretError> {
    Ok(parse_webhook_secret_set(name, text)?
        .signing_secrets
        .iter()
        .cloned()
        .collect())
}

/// What kind of JSON error, without serde_json's message (which can quote the value).
fn json_error_kind(err: &serde_json::Error) -> &'static str {
    match err.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "not JSON",
        serde_json::error::Category::Data => "wrong shape",
    }
}

/// How long cached secrets live.
#[derive(Debug, Clone, Copy)]
pub struct CachePolicy {
    /// A cached entry is re-read after this long.
    pub ttl: Duration,
    /// After a verification failure, an entry is re-read at most this often.
    pub refresh_interval: Duration,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            ttl: Duration::minutes(5),
            refresh_interval: Duration::minutes(1),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    /// `None`: no secret of that name (for an endpoint, none of its own).
    set: Option<WebhookSecretSet>,
    fetched_at: OffsetDateTime,
}

/// Entries keyed by provider and endpoint (`None`: the provider's own secret).
type Cache = HashMap<(String, Option<String>), Entry>;

/// At most this many endpoint names without a secret of their own are remembered; past
/// it they are all forgotten, so made-up names cannot grow the cache without bound.
const MAX_ABSENT_ENDPOINTS: usize = 1024;

/// The signing secrets of each provider (and endpoint), cached.
#[derive(Debug)]
pub struct WebhookSecrets {
    source: Arc<dyn SecretSource>,
    prefix: String,
    policy: CachePolicy,
    cache: Mutex<Cache>,
}

impl WebhookSecrets {
    pub fn new(
        source: Arc<dyn SecretSource>,
        prefix: impl Into<String>,
        policy: CachePolicy,
    ) -> Self {
        WebhookSecrets {
            source,
            prefix: prefix.into(),
            policy,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The secrets for `provider` (and `endpoint`), from the cache while fresh. An empty
    /// list means none are configured (an unknown endpoint included: see
    /// [`WebhookSecrets::endpoint_exists`]).
    pub async fn get(
        &self,
        provider: &str,
        endpoint: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Arc<[SigningSecret]>, SecretError> {
        Ok(self.get_set(provider, endpoint, now).await?.signing_secrets)
    }

    /// The whole secret document (signing secrets and verify token), cached like
    /// [`WebhookSecrets::get`]: for an endpoint, its own secret where it has one, else
    /// the provider's when that declares the endpoint, else an empty set.
    pub async fn get_set(
        &self,
        provider: &str,
        endpoint: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<WebhookSecretSet, SecretError> {
        let mut cache = self.cache.lock().await;
        let (set, _) = self
            .resolve(&mut cache, provider, endpoint, now, self.policy.ttl)
            .await?;
        Ok(set.unwrap_or_default())
    }

    /// True when `endpoint` of `provider` is configured: a secret of its own exists, or
    /// the provider's secret lists it in `endpoints`. An endpoint not found in the cache
    /// is looked up again if what the cache holds is older than the refresh interval,
    /// so a newly configured endpoint works within a minute while made-up names cost
    /// one read each at most once a minute.
    pub async fn endpoint_exists(
        &self,
        provider: &str,
        endpoint: &str,
        now: OffsetDateTime,
    ) -> Result<bool, SecretError> {
        let mut cache = self.cache.lock().await;
        let endpoint = Some(endpoint);
        let (cached, _) = self
            .resolve(&mut cache, provider, endpoint, now, self.policy.ttl)
            .await?;
        if cached.is_some() {
            return Ok(true);
        }
        let max_age = self.policy.refresh_interval.min(self.policy.ttl);
        let (fresh, _) = self
            .resolve(&mut cache, provider, endpoint, now, max_age)
            .await?;
        Ok(fresh.is_some())
    }

    /// Reads every webhook secret under the prefix in one go (at init, so that no
    /// delivery waits for a secret read) and caches them as [`WebhookSecrets::get_set`]
    /// would. Returns how many were cached. A malformed secret is skipped here: the
    /// delivery that needs it reads it again and fails with the secret named.
    pub async fn prefetch(&self, now: OffsetDateTime) -> Result<usize, SecretError> {
        let prefix = format!("{}/webhooks/", self.prefix);
        let secrets = self.source.secrets_with_prefix(&prefix).await?;
        let mut cache = self.cache.lock().await;
        let mut cached = 0;
        for (name, text) in secrets {
            let Some(rest) = name.strip_prefix(&prefix) else {
                continue;
            };
            let (provider, endpoint) = match rest.split_once('/') {
                Some((provider, endpoint)) => (provider, Some(endpoint)),
                None => (rest, None),
            };
            if endpoint.is_some_and(|endpoint| !is_valid_endpoint_name(endpoint)) {
                continue;
            }
            if let Ok(set) = parse_level(&name, &text, endpoint) {
                cache.insert(
                    (provider.to_owned(), endpoint.map(str::to_owned)),
                    Entry {
                        set: Some(set),
                        fetched_at: now,
                    },
                );
                cached += 1;
            }
        }
        Ok(cached)
    }

    /// Forgets the cached entry (after a handshake installed a secret).
    pub async fn invalidate(&self, provider: &str, endpoint: Option<&str>) {
        let key = (provider.to_owned(), endpoint.map(str::to_owned));
        self.cache.lock().await.remove(&key);
    }

    /// The secret name a handshake installs its secret under: the endpoint's own
    /// secret when the URL names an endpoint (Asana: one secret per webhook).
    pub fn secret_name(&self, provider: &str, endpoint: Option<&str>) -> String {
        webhook_secret_name(&self.prefix, provider, endpoint)
    }

    /// After a verification failure: re-reads the secrets if the cached entry is older
    /// than the refresh interval and returns them if they changed; `None` otherwise
    /// (nothing new to try).
    pub async fn refresh_after_failure(
        &self,
        provider: &str,
        endpoint: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Option<Arc<[SigningSecret]>>, SecretError> {
        let mut cache = self.cache.lock().await;
        let (before, _) = self
            .resolve(&mut cache, provider, endpoint, now, self.policy.ttl)
            .await?;
        let (after, read) = self
            .resolve(
                &mut cache,
                provider,
                endpoint,
                now,
                self.policy.refresh_interval,
            )
            .await?;
        if !read {
            return Ok(None);
        }
        let before = before.map(|set| set.signing_secrets).unwrap_or_default();
        let after = after.map(|set| set.signing_secrets).unwrap_or_default();
        let changed = before.len() != after.len()
            || before
                .iter()
                .zip(after.iter())
                .any(|(old, new)| old.expose() != new.expose());
        Ok(changed.then_some(after))
    }

    /// The set that verifies `provider`'s requests to `endpoint`: the endpoint's own
    /// secret, else the provider's when it declares the endpoint; `None` for an
    /// endpoint that is not configured. For no endpoint, the provider's (empty when it
    /// has none). Entries older than `max_age` are read again; the flag says whether
    /// anything was.
    async fn resolve(
        &self,
        cache: &mut Cache,
        provider: &str,
        endpoint: Option<&str>,
        now: OffsetDateTime,
        max_age: Duration,
    ) -> Result<(Option<WebhookSecretSet>, bool), SecretError> {
        let Some(name) = endpoint else {
            let (set, read) = self.entry(cache, provider, None, now, max_age).await?;
            return Ok((Some(set.unwrap_or_default()), read));
        };
        let (own, read_own) = self
            .entry(cache, provider, Some(name), now, max_age)
            .await?;
        if own.is_some() {
            return Ok((own, read_own));
        }
        let (shared, read_shared) = self.entry(cache, provider, None, now, max_age).await?;
        let declared = shared.filter(|set| set.endpoints.iter().any(|declared| declared == name));
        Ok((declared, read_own || read_shared))
    }

    /// One secret, from the cache when younger than `max_age`, else read (and cached,
    /// absence included); the flag says whether it was read.
    async fn entry(
        &self,
        cache: &mut Cache,
        provider: &str,
        endpoint: Option<&str>,
        now: OffsetDateTime,
        max_age: Duration,
    ) -> Result<(Option<WebhookSecretSet>, bool), SecretError> {
        let key = (provider.to_owned(), endpoint.map(str::to_owned));
        if let Some(entry) = cache.get(&key)
            && now - entry.fetched_at < max_age
        {
            return Ok((entry.set.clone(), false));
        }
        let name = webhook_secret_name(&self.prefix, provider, endpoint);
        let set = match self.source.secret_string(&name).await? {
            Some(text) => Some(parse_level(&name, &text, endpoint)?),
            None => None,
        };
        if endpoint.is_some() && set.is_none() {
            let absent = cache
                .iter()
                .filter(|((_, endpoint), entry)| endpoint.is_some() && entry.set.is_none())
                .count();
            if absent >= MAX_ABSENT_ENDPOINTS {
                cache.retain(|(_, endpoint), entry| endpoint.is_none() || entry.set.is_some());
            }
        }
        cache.insert(
            key,
            Entry {
                set: set.clone(),
                fetched_at: now,
            },
        );
        Ok((set, true))
    }
}

/// Parses a provider's (`endpoint` `None`) or an endpoint's secret: only a provider's
/// may declare `endpoints`.
fn parse_level(
    name: &str,
    text: &str,
    endpoint: Option<&str>,
) -> Result<WebhookSecretSet, SecretError> {
    let set = parse_webhook_secret_set(name, text)?;
    if endpoint.is_some() && !set.endpoints.is_empty() {
        return Err(SecretError::Malformed {
            name: name.to_owned(),
            reason: "`endpoints` belongs in the provider's secret, not an endpoint's".to_owned(),
        });
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + seconds).expect("valid time")
    }

    fn cache(source: &Arc<InMemorySecretSource>) -> WebhookSecrets {
        WebhookSecrets::new(source.clone(), "junction", CachePolicy::default())
    }

    fn texts(secrets: &[SigningSecret]) -> Vec<&str> {
        secrets.iter().map(SigningSecret::expose).collect()
    }

    #[tokio::test]
    async fn reads_once_within_the_ttl_and_again_after_it() {
        let source = Arc::new(InMemorySecretSource::default());
        source.put(
            "junction/webhooks/github",
            r#"{"signing_secrets":["new","old"]}"#,
        );
        let secrets = cache(&source);
        let first = secrets.get("github", None, at(0)).await.expect("read");
        assert_eq!(texts(&first), ["new", "old"]);
        secrets.get("github", None, at(299)).await.expect("cached");
        assert_eq!(source.reads(), 1);
        secrets.get("github", None, at(300)).await.expect("re-read");
        assert_eq!(source.reads(), 2);
    }

    #[tokio::test]
    async fn endpoint_secret_wins_and_the_provider_secret_serves_only_declared_endpoints() {
        let source = Arc::new(InMemorySecretSource::default());
        source.put(
            "junction/webhooks/stripe",
            r#"{"signing_secrets":["provider"],"endpoints":["us","eu"]}"#,
        );
        source.put(
            "junction/webhooks/stripe/eu",
            r#"{"signing_secrets":["endpoint"]}"#,
        );
        source.put(
            "junction/webhooks/stripe/apac",
            r#"{"signing_secrets":["apac"]}"#,
        );
        let secrets = cache(&source);
        let get = |endpoint| secrets.get("stripe", Some(endpoint), at(0));
        assert_eq!(texts(&get("eu").await.expect("read")), ["endpoint"]);
        assert_eq!(texts(&get("apac").await.expect("read")), ["apac"]);
        assert_eq!(texts(&get("us").await.expect("read")), ["provider"]);
        // Regression ("Nothing lost at the edges", point 2): any other name used to
        // verify with the provider's secret.
        assert!(get("made-up").await.expect("read").is_empty());
        for (endpoint, exists) in [
            ("eu", true),
            ("apac", true),
            ("us", true),
            ("made-up", false),
        ] {
            assert_eq!(
                secrets
                    .endpoint_exists("stripe", endpoint, at(0))
                    .await
                    .expect("answered"),
                exists,
                "{endpoint}"
            );
        }
        // A provider without a secret has no endpoints.
        assert!(
            !secrets
                .endpoint_exists("github", "eu", at(0))
                .await
                .expect("answered")
        );
    }

    #[tokio::test]
    async fn a_newly_configured_endpoint_exists_within_the_refresh_interval() {
        let source = Arc::new(InMemorySecretSource::default());
        source.put("junction/webhooks/asana", r#"{"signing_secrets":[]}"#);
        let secrets = cache(&source);
        assert!(
            !secrets
                .endpoint_exists("asana", "p1", at(0))
                .await
                .expect("ok")
        );
        let reads = source.reads();
        // Asked again at once: answered from the cache.
        assert!(
            !secrets
                .endpoint_exists("asana", "p1", at(30))
                .await
                .expect("ok")
        );
        assert_eq!(source.reads(), reads);
        source.put(
            "junction/webhooks/asana",
            r#"{"signing_secrets":[],"endpoints":["p1"]}"#,
        );
        assert!(
            secrets
                .endpoint_exists("asana", "p1", at(61))
                .await
                .expect("ok")
        );
        // So does one whose own secret was created (Asana's handshake, elsewhere).
        source.put("junction/webhooks/asana/p2", r#"{"signing_secrets":["s"]}"#);
        assert!(
            secrets
                .endpoint_exists("asana", "p2", at(62))
                .await
                .expect("ok")
        );
    }

    #[tokio::test]
    async fn declared_endpoints_are_valid_names_and_only_in_the_provider_secret() {
        let source = Arc::new(InMemorySecretSource::default());
        let secrets = cache(&source);
        for (at_s, bad) in [
            (0, r#"["whsec_c2VjcmV0+/="]"#),
            (400, r#"[""]"#),
            (800, &format!(r#"["{}"]"#, "a".repeat(65))),
        ] {
            source.put(
                "junction/webhooks/github",
                format!(r#"{{"signing_secrets":["s"],"endpoints":{bad}}}"#),
            );
            let err = secrets
                .get("github", None, at(at_s))
                .await
                .expect_err("malformed");
            assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
            assert!(
                matches!(&err, SecretError::Malformed { name, reason }
                    if name == "junction/webhooks/github" && reason.contains("endpoints[0]")),
                "{err}"
            );
        }
        let longest = "a".repeat(MAX_ENDPOINT_NAME_LEN);
        assert!(is_valid_endpoint_name(&longest));
        source.put(
            "junction/webhooks/github",
            format!(r#"{{"signing_secrets":["s"],"endpoints":["{longest}"]}}"#),
        );
        assert!(
            secrets
                .endpoint_exists("github", &longest, at(1200))
                .await
                .expect("a valid name")
        );
        source.put(
            "junction/webhooks/github/eu",
            r#"{"signing_secrets":["s"],"endpoints":["x"]}"#,
        );
        let err = secrets
            .get("github", Some("eu"), at(1200))
            .await
            .expect_err("endpoints in an endpoint's secret");
        assert!(err.to_string().contains("provider's secret"), "{err}");
    }

    #[tokio::test]
    async fn made_up_endpoint_names_do_not_grow_the_cache_without_bound() {
        let source = Arc::new(InMemorySecretSource::default());
        source.put("junction/webhooks/github", r#"{"signing_secrets":["s"]}"#);
        let secrets = cache(&source);
        for n in 0..MAX_ABSENT_ENDPOINTS + 10 {
            let name = format!("probe-{n}");
            assert!(
                !secrets
                    .endpoint_exists("github", &name, at(0))
                    .await
                    .expect("ok")
            );
        }
        let cached = secrets.cache.lock().await.len();
        assert!(cached <= MAX_ABSENT_ENDPOINTS + 1, "{cached} entries");
        // The provider's own entry survives the purge.
        let reads = source.reads();
        secrets.get("github", None, at(1)).await.expect("cached");
        assert_eq!(source.reads(), reads);
    }

    #[tokio::test]
    async fn refresh_after_failure_is_rate_limited_and_reports_changes() {
        let source = Arc::new(InMemorySecretSource::default());
        source.put("junction/webhooks/github", r#"{"signing_secrets":["old"]}"#);
        let secrets = cache(&source);
        secrets.get("github", None, at(0)).await.expect("read");
        source.put(
            "junction/webhooks/github",
            r#"{"signing_secrets":["rotated","old"]}"#,
        );
        let too_soon = secrets
            .refresh_after_failure("github", None, at(30))
            .await
            .expect("ok");
        assert!(too_soon.is_none());
        assert_eq!(source.reads(), 1);
        let refreshed = secrets
            .refresh_after_failure("github", None, at(61))
            .await
            .expect("ok")
            .expect("changed");
        assert_eq!(texts(&refreshed), ["rotated", "old"]);
        let unchanged = secrets
            .refresh_after_failure("github", None, at(122))
            .await
            .expect("ok");
        assert!(
            unchanged.is_none(),
            "same secrets are not worth a second try"
        );
        assert_eq!(source.reads(), 3);
    }

    #[tokio::test]
    async fn missing_secret_is_an_empty_list_and_malformed_names_the_secret() {
        let source = Arc::new(InMemorySecretSource::default());
        let secrets = cache(&source);
        assert!(
            secrets
                .get("slack", None, at(0))
                .await
                .expect("ok")
                .is_empty()
        );
        source.put(
            "junction/webhooks/slack",
            r#"{"signing_secret":"s3cr3t-value"}"#,
        );
        let err = secrets
            .get("slack", None, at(400))
            .await
            .expect_err("malformed");
        let message = err.to_string();
        assert!(message.contains("junction/webhooks/slack"), "{message}");
        assert!(!message.contains("s3cr3t-value"), "{message}");
    }

    #[tokio::test]
    async fn prefetch_caches_every_webhook_secret_in_one_read() {
        let source = Arc::new(InMemorySecretSource::default());
        source.put("junction/webhooks/github", r#"{"signing_secrets":["gh"]}"#);
        source.put(
            "junction/webhooks/asana/project-1",
            r#"{"signing_secrets":["asana-1"]}"#,
        );
        source.put("junction/webhooks/slack", "not json");
        source.put("junction/catalog/local", r#"{"signing_secrets":["no"]}"#);
        let secrets = cache(&source);
        assert_eq!(secrets.prefetch(at(0)).await.expect("prefetch"), 2);
        assert_eq!(source.reads(), 1);
        let github = secrets.get("github", None, at(10)).await.expect("cached");
        assert_eq!(texts(&github), ["gh"]);
        let asana = secrets
            .get("asana", Some("project-1"), at(10))
            .await
            .expect("cached");
        assert_eq!(texts(&asana), ["asana-1"]);
        assert_eq!(source.reads(), 1, "served from the prefetched cache");
        // The malformed one was skipped: reading it names it.
        let err = secrets
            .get("slack", None, at(10))
            .await
            .expect_err("malformed");
        assert!(err.to_string().contains("junction/webhooks/slack"));
        // Prefetched entries expire like any other.
        secrets.get("github", None, at(300)).await.expect("re-read");
        assert_eq!(source.reads(), 3);
    }

    #[tokio::test]
    async fn the_in_memory_handshake_store_never_touches_an_existing_secret() {
        let source = InMemorySecretSource::default();
        // An empty list is a secret too: it stays as the operator left it.
        source.put("junction/webhooks/notion", r#"{"signing_secrets":[]}"#);
        let stored = source
            .store_first_secret("junction/webhooks/notion", &SigningSecret::new("forged"))
            .await
            .expect("answered");
        assert_eq!(stored, FirstSecret::AlreadyConfigured);
        assert_eq!(
            source
                .secret_string("junction/webhooks/notion")
                .await
                .expect("read"),
            Some(r#"{"signing_secrets":[]}"#.to_owned())
        );
        let stored = source
            .store_first_secret("junction/webhooks/asana/p1", &SigningSecret::new("first"))
            .await
            .expect("answered");
        assert_eq!(stored, FirstSecret::Stored);
        let text = source
            .secret_string("junction/webhooks/asana/p1")
            .await
            .expect("read")
            .expect("created");
        let set = parse_webhook_secret_set("junction/webhooks/asana/p1", &text).expect("parsed");
        assert_eq!(texts(&set.signing_secrets), ["first"]);
    }

    /// A loopback Secrets Manager answering each call with the next of `replies`
    /// (status, error type, body) and recording each call's `X-Amz-Target`.
    async fn secrets_manager(
        replies: Vec<(u16, Option<&'static str>, &'static str)>,
    ) -> (
        SecretsManagerSource,
        Arc<StdMutex<Vec<(String, serde_json::Value)>>>,
    ) {
        use axum::{
            extract::State,
            http::{HeaderMap, StatusCode},
            response::IntoResponse,
        };
        type Replies =
            StdMutex<std::collections::VecDeque<(u16, Option<&'static str>, &'static str)>>;
        type Calls = StdMutex<Vec<(String, serde_json::Value)>>;
        async fn answer(
            State((replies, calls)): State<(Arc<Replies>, Arc<Calls>)>,
            headers: HeaderMap,
            body: axum::body::Bytes,
        ) -> axum::response::Response {
            let target = headers
                .get("x-amz-target")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            calls.lock().expect("calls").push((target, body));
            let Some((status, error, body)) = replies.lock().expect("replies").pop_front() else {
                return (StatusCode::INTERNAL_SERVER_ERROR, "no more replies").into_response();
            };
            let mut response = (
                StatusCode::from_u16(status).expect("status"),
                [("content-type", "application/x-amz-json-1.1")],
                body,
            )
                .into_response();
            if let Some(error) = error {
                response.headers_mut().insert(
                    "x-amzn-errortype",
                    axum::http::HeaderValue::from_static(error),
                );
            }
            response
        }
        let calls = Arc::new(Calls::default());
        let state = (Arc::new(Replies::new(replies.into())), calls.clone());
        let app = axum::Router::new()
            .route("/", axum::routing::post(answer))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let aws = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("eu-west-1"))
            .endpoint_url(endpoint)
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    aws_credential_types::Credentials::new(
                        "AKIDTEST", "secret", None, None, "test",
                    ),
                ),
            )
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build();
        (SecretsManagerSource::from_config(&aws), calls)
    }

    #[tokio::test]
    async fn the_handshake_store_creates_with_one_call_and_never_overwrites() {
        // GIVEN a name that is free: one CreateSecret with the document.
        let (store, calls) = secrets_manager(vec![(
            200,
            None,
            r#"{"ARN":"arn:aws:secretsmanager:eu-west-1:1:secret:junction/webhooks/asana/p1-AbCdEf","Name":"junction/webhooks/asana/p1"}"#,
        )])
        .await;
        let stored = store
            .store_first_secret("junction/webhooks/asana/p1", &SigningSecret::new("first"))
            .await
            .expect("stored");
        assert_eq!(stored, FirstSecret::Stored);
        let calls = calls.lock().expect("calls").clone();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0].0, "secretsmanager.CreateSecret");
        assert_eq!(calls[0].1["Name"], "junction/webhooks/asana/p1");
        let document: serde_json::Value =
            serde_json::from_str(calls[0].1["SecretString"].as_str().expect("a string"))
                .expect("JSON");
        assert_eq!(
            document,
            serde_json::json!({ "signing_secrets": ["first"] })
        );

        // GIVEN a name that is taken: CreateSecret fails and nothing else is called
        // (no read, no PutSecretValue), so the existing secret stays as it was.
        let (store, calls) = secrets_manager(vec![(
            400,
            Some("ResourceExistsException"),
            r#"{"__type":"ResourceExistsException","Message":"the secret already exists"}"#,
        )])
        .await;
        let stored = store
            .store_first_secret("junction/webhooks/notion", &SigningSecret::new("forged"))
            .await
            .expect("answered");
        assert_eq!(stored, FirstSecret::AlreadyConfigured);
        let targets: Vec<String> = calls
            .lock()
            .expect("calls")
            .iter()
            .map(|(target, _)| target.clone())
            .collect();
        assert_eq!(targets, ["secretsmanager.CreateSecret"]);

        // GIVEN another failure: an error naming the secret, never its value.
        let (store, _) = secrets_manager(vec![(
            400,
            Some("AccessDeniedException"),
            r#"{"__type":"AccessDeniedException","Message":"not authorized"}"#,
        )])
        .await;
        let err = store
            .store_first_secret(
                "junction/webhooks/acme",
                &SigningSecret::new("s3cr3t-value"),
            )
            .await
            .expect_err("refused");
        assert!(matches!(err, SecretError::Unavailable { .. }), "{err:?}");
        assert!(err.to_string().contains("junction/webhooks/acme"), "{err}");
        assert!(!format!("{err:?}").contains("s3cr3t-value"), "{err:?}");
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let secret = SigningSecret::new("whsec_topsecret");
        assert_eq!(format!("{secret:?}"), "SigningSecret(<redacted>)");
    }
}

/// One signing secret (or, for Ed25519 schemes, the provider's public key) as
/// configured: a [`SecretString`], zeroized on drop and never printed, serialized or
/// compared with `==`.
#[derive(Clone)]
pub struct SigningSecret(SecretString);

impl SigningSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        SigningSecret(SecretString::from(secret.into()))
    }

    /// The secret text, for key derivation only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}
