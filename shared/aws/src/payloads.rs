//! The `PayloadStore` port: where bodies too large for a queue message are kept, so no
//! verified webhook is dropped for its size (`webhooks/…`), and the data of CloudEvents
//! too large for the bus (`events/…`, the claim check of [`crate::events`]). The S3
//! adapter writes to the stack's encrypted payload bucket (which expires objects by
//! lifecycle rule).

use std::{collections::BTreeMap, sync::Mutex};

use async_trait::async_trait;

/// A failure to store a payload; the caller answers 5xx so the provider retries.
#[derive(Debug, thiserror::Error)]
#[error("could not store the payload")]
pub struct PayloadError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// The largest object [`PayloadStore::get`] reads: what the ingress stores is bounded by
/// Lambda's 6 MB request payload, so anything larger is not ours to read whole.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;

/// A store of raw payloads.
#[async_trait]
pub trait PayloadStore: Send + Sync + std::fmt::Debug {
    /// Stores `body` under `key` (overwriting: the same event stores the same bytes) and
    /// returns its `s3://bucket/key` URI.
    async fn put(&self, key: &str, body: &[u8]) -> Result<String, PayloadError> {
        self.put_with_type(key, body, "application/octet-stream")
            .await
    }

    /// [`PayloadStore::put`] with the object's content type (`application/json` for a
    /// CloudEvent's data), for whoever reads it back by its URI.
    async fn put_with_type(
        &self,
        key: &str,
        body: &[u8],
        content_type: &str,
    ) -> Result<String, PayloadError>;

    /// Reads back the bytes at a URI returned by [`PayloadStore::put`].
    async fn get(&self, uri: &str) -> Result<Vec<u8>, PayloadError>;
}

/// Splits `s3://bucket/key`.
fn parse_uri(uri: &str) -> Result<(&str, &str), PayloadError> {
    uri.strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(bucket, key)| !bucket.is_empty() && !key.is_empty())
        .ok_or_else(|| PayloadError(format!("not an s3://bucket/key URI: {uri:?}").into()))
}

/// Amazon S3.
#[derive(Debug, Clone)]
pub struct S3PayloadStore {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3PayloadStore {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        S3PayloadStore {
            client,
            bucket: bucket.into(),
        }
    }

    /// A store on `bucket` from shared AWS configuration. With an endpoint override (the
    /// emulator) requests use path-style addressing, as loopback has no bucket subdomains.
    pub fn from_config(aws: &aws_config::SdkConfig, bucket: impl Into<String>) -> Self {
        let config = aws_sdk_s3::config::Builder::from(aws)
            .force_path_style(aws.endpoint_url().is_some())
            .build();
        S3PayloadStore::new(aws_sdk_s3::Client::from_conf(config), bucket)
    }
}

#[async_trait]
impl PayloadStore for S3PayloadStore {
    async fn put_with_type(
        &self,
        key: &str,
        body: &[u8],
        content_type: &str,
    ) -> Result<String, PayloadError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(aws_sdk_s3::primitives::ByteStream::from(body.to_vec()))
            .send()
            .await
            .map_err(|err| PayloadError(Box::new(aws_sdk_s3::Error::from(err))))?;
        Ok(format!("s3://{}/{key}", self.bucket))
    }

    async fn get(&self, uri: &str) -> Result<Vec<u8>, PayloadError> {
        let (bucket, key) = parse_uri(uri)?;
        let object = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|err| PayloadError(Box::new(aws_sdk_s3::Error::from(err))))?;
        let declared = object.content_length.and_then(|n| usize::try_from(n).ok());
        let too_large = || {
            PayloadError(format!("{uri} is over the {MAX_PAYLOAD_BYTES} bytes read back").into())
        };
        if declared.is_some_and(|length| length > MAX_PAYLOAD_BYTES) {
            return Err(too_large());
        }
        let mut body = object.body;
        let mut bytes = Vec::with_capacity(declared.unwrap_or(0));
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|err| PayloadError(Box::new(err)))?
        {
            if bytes.len() + chunk.len() > MAX_PAYLOAD_BYTES {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
}

/// Keeps payloads in memory; can be told to fail.
#[derive(Debug, Default)]
pub struct InMemoryPayloadStore {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
    failing: std::sync::atomic::AtomicBool,
}

impl InMemoryPayloadStore {
    /// Makes every later `put` fail (an S3 outage), or not.
    pub fn set_failing(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }

    /// The stored object under `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.objects
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(key)
            .cloned()
    }
}

#[async_trait]
impl PayloadStore for InMemoryPayloadStore {
    async fn put_with_type(
        &self,
        key: &str,
        body: &[u8],
        _content_type: &str,
    ) -> Result<String, PayloadError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(PayloadError("in-memory payload store set to fail".into()));
        }
        self.objects
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(key.to_owned(), body.to_vec());
        Ok(format!("s3://in-memory/{key}"))
    }

    async fn get(&self, uri: &str) -> Result<Vec<u8>, PayloadError> {
        let (_, key) = parse_uri(uri)?;
        self.get(key)
            .ok_or_else(|| PayloadError(format!("no payload at {uri}").into()))
    }
}
