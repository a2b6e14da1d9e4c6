//! Envelope encryption for secrets at rest (OAuth tokens).
//!
//! Each write asks the key service (KMS in AWS) for a fresh AES-256 data key, seals the
//! plaintext with AES-256-GCM under it, and stores only the ciphertext, the nonce and
//! the data key as KMS encrypted it. Reading asks KMS to decrypt the data key. Both
//! calls carry an [`EncryptionContext`] (tenant, provider, connection id): KMS binds the
//! encrypted data key to it, so a sealed blob copied onto another connection does not
//! decrypt. The same context is the AES-GCM associated data, binding the ciphertext too.
//!
//! Plaintext keys and secrets live in [`Zeroizing`] buffers, wiped on drop, and
//! [`SecretString`] never prints its value.

use std::{collections::BTreeMap, fmt, sync::Mutex};

use aes_gcm::{
    Aes256Gcm, Key, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use async_trait::async_trait;
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// A failure to seal or open.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The key service could not be reached or refused the call; retry later.
    #[error("key service unavailable: {0}")]
    Unavailable(String),
    /// The data key or the ciphertext does not open under this context: tampered, or
    /// copied from another connection. Never retried.
    #[error("sealed data does not open under this encryption context")]
    Mismatch,
    /// The key service returned a key of the wrong size, or the sealed blob is malformed.
    #[error("malformed key material: {0}")]
    Malformed(&'static str),
}

/// The key/value pairs a ciphertext is bound to. Sorted, so its canonical form (the
/// AES-GCM associated data) is stable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionContext(BTreeMap<String, String>);

impl EncryptionContext {
    /// The context of a connection's tokens.
    pub fn for_connection(tenant: &str, provider: &str, connection_id: &str) -> Self {
        EncryptionContext(BTreeMap::from([
            ("tenant".to_owned(), tenant.to_owned()),
            ("provider".to_owned(), provider.to_owned()),
            ("connection_id".to_owned(), connection_id.to_owned()),
        ]))
    }

    /// The pairs, for the KMS request.
    pub fn pairs(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Canonical bytes: `k=v` lines, keys sorted, with lengths so no two contexts
    /// produce the same bytes.
    fn canonical(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for (key, value) in &self.0 {
            bytes.extend_from_slice(
                format!("{}:{key}={}:{value}\n", key.len(), value.len()).as_bytes(),
            );
        }
        bytes
    }
}

/// A plaintext data key and the same key encrypted by the key service.
pub struct DataKey {
    pub plaintext: Zeroizing<[u8; 32]>,
    pub encrypted: Vec<u8>,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("plaintext", &"[redacted]")
            .field("encrypted_len", &self.encrypted.len())
            .finish()
    }
}

/// The port to the key service: KMS in AWS, an in-memory key for unit tests.
#[async_trait]
pub trait KeyService: Send + Sync + fmt::Debug {
    /// A fresh AES-256 data key bound to `context`.
    async fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey, CryptoError>;

    /// The plaintext of a data key this service encrypted under the same `context`.
    async fn decrypt_data_key(
        &self,
        encrypted: &[u8],
        context: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; 32]>, CryptoError>;
}

/// What is stored: ciphertext, nonce and the encrypted data key, base64 in JSON.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    #[serde(with = "b64")]
    pub ciphertext: Vec<u8>,
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    #[serde(with = "b64")]
    pub encrypted_key: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

mod b64 {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// Seals `plaintext` under a fresh data key (one GenerateDataKey per write).
pub async fn seal(
    keys: &dyn KeyService,
    context: &EncryptionContext,
    plaintext: &[u8],
) -> Result<Sealed, CryptoError> {
    let data_key = keys.generate_data_key(context).await?;
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ciphertext = aes_seal(&data_key.plaintext, &nonce, context, plaintext)?;
    Ok(Sealed {
        ciphertext,
        nonce: nonce.to_vec(),
        encrypted_key: data_key.encrypted,
    })
}

/// Opens what [`seal`] sealed under the same context.
pub async fn open(
    keys: &dyn KeyService,
    context: &EncryptionContext,
    sealed: &Sealed,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let key = keys
        .decrypt_data_key(&sealed.encrypted_key, context)
        .await?;
    aes_open(&key, &sealed.nonce, context, &sealed.ciphertext)
}

fn aes_seal(
    key: &[u8; 32],
    nonce: &[u8; 12],
    context: &EncryptionContext,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    cipher
        .encrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: plaintext,
                aad: &context.canonical(),
            },
        )
        .map_err(|_| CryptoError::Malformed("plaintext too long"))
}

fn aes_open(
    key: &[u8; 32],
    nonce: &[u8],
    context: &EncryptionContext,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if nonce.len() != 12 {
        return Err(CryptoError::Malformed("nonce must be 12 bytes"));
    }
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    cipher
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: &context.canonical(),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Mismatch)
}

/// A secret string (token, client secret, PKCE verifier): a [`secrecy::SecretString`],
/// wiped on drop, printed as `[redacted]`, and neither comparable with `==` nor
/// serializable. The two records that must store one (the sealed token set, a pending
/// authorization) opt in field by field with [`stored`].
#[derive(Clone)]
pub struct SecretString(secrecy::SecretString);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        SecretString(secrecy::SecretString::from(value.into()))
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        use secrecy::ExposeSecret as _;
        self.0.expose_secret()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `#[serde(with = "stored")]` for a [`SecretString`] field of a record that is stored
/// (sealed, or in a server-side table): the one deliberate way a secret is serialized.
pub mod stored {
    use serde::{Deserialize as _, Deserializer, Serializer};

    use super::SecretString;

    pub fn serialize<S: Serializer>(
        secret: &SecretString,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(secret.expose())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<SecretString, D::Error> {
        String::deserialize(deserializer).map(SecretString::new)
    }

    /// The same for an `Option<SecretString>` field.
    pub mod option {
        use serde::{Deserialize as _, Deserializer, Serializer};

        use super::SecretString;

        pub fn serialize<S: Serializer>(
            secret: &Option<SecretString>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match secret {
                Some(secret) => serializer.serialize_some(secret.expose()),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<SecretString>, D::Error> {
            Option::<String>::deserialize(deserializer).map(|value| value.map(SecretString::new))
        }
    }
}

/// KMS: `GenerateDataKey` (AES_256) and `Decrypt`, both with the encryption context.
#[derive(Debug, Clone)]
pub struct KmsKeyService {
    client: aws_sdk_kms::Client,
    key_id: String,
}

impl KmsKeyService {
    pub fn from_config(aws: &aws_config::SdkConfig, key_id: impl Into<String>) -> Self {
        KmsKeyService {
            client: aws_sdk_kms::Client::new(aws),
            key_id: key_id.into(),
        }
    }
}

fn to_key(bytes: &[u8]) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return Err(CryptoError::Malformed("data key must be 32 bytes"));
    }
    key.copy_from_slice(bytes);
    Ok(key)
}

#[async_trait]
impl KeyService for KmsKeyService {
    async fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey, CryptoError> {
        let output = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
            .set_encryption_context(Some(context.pairs().clone().into_iter().collect()))
            .send()
            .await
            .map_err(|err| CryptoError::Unavailable(aws_sdk_kms::Error::from(err).to_string()))?;
        let plaintext = output
            .plaintext
            .ok_or(CryptoError::Malformed("no plaintext data key"))?;
        let encrypted = output
            .ciphertext_blob
            .ok_or(CryptoError::Malformed("no encrypted data key"))?;
        let plaintext = Zeroizing::new(plaintext.into_inner());
        Ok(DataKey {
            plaintext: to_key(&plaintext)?,
            encrypted: encrypted.into_inner(),
        })
    }

    async fn decrypt_data_key(
        &self,
        encrypted: &[u8],
        context: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        let result = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(encrypted))
            .set_encryption_context(Some(context.pairs().clone().into_iter().collect()))
            .send()
            .await;
        match result {
            Ok(output) => {
                let plaintext = Zeroizing::new(
                    output
                        .plaintext
                        .ok_or(CryptoError::Malformed("no plaintext data key"))?
                        .into_inner(),
                );
                to_key(&plaintext)
            }
            Err(err) => {
                let err = aws_sdk_kms::Error::from(err);
                if matches!(
                    err,
                    aws_sdk_kms::Error::InvalidCiphertextException(_)
                        | aws_sdk_kms::Error::IncorrectKeyException(_)
                ) {
                    Err(CryptoError::Mismatch)
                } else {
                    Err(CryptoError::Unavailable(err.to_string()))
                }
            }
        }
    }
}

/// A key service in memory: data keys are wrapped with AES-GCM under a master key, with
/// the context as associated data, so a context mismatch fails as it does with KMS.
pub struct InMemoryKeyService {
    master: Zeroizing<[u8; 32]>,
    calls: Mutex<(usize, usize)>,
}

impl fmt::Debug for InMemoryKeyService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryKeyService").finish_non_exhaustive()
    }
}

impl Default for InMemoryKeyService {
    fn default() -> Self {
        let mut master = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(master.as_mut());
        InMemoryKeyService {
            master,
            calls: Mutex::new((0, 0)),
        }
    }
}

impl InMemoryKeyService {
    /// `(generate_data_key, decrypt_data_key)` calls so far.
    pub fn calls(&self) -> (usize, usize) {
        *self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl KeyService for InMemoryKeyService {
    async fn generate_data_key(&self, context: &EncryptionContext) -> Result<DataKey, CryptoError> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).0 += 1;
        let mut plaintext = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(plaintext.as_mut());
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let wrapped = aes_seal(&self.master, &nonce, context, plaintext.as_ref())?;
        let encrypted = [nonce.as_slice(), &wrapped].concat();
        Ok(DataKey {
            plaintext,
            encrypted,
        })
    }

    async fn decrypt_data_key(
        &self,
        encrypted: &[u8],
        context: &EncryptionContext,
    ) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).1 += 1;
        if encrypted.len() < 12 {
            return Err(CryptoError::Mismatch);
        }
        let (nonce, wrapped) = encrypted.split_at(12);
        let plaintext = aes_open(&self.master, nonce, context, wrapped)?;
        to_key(&plaintext)
    }
}

/// Base64 of sealed JSON, for storing in one attribute.
pub fn sealed_to_text(sealed: &Sealed) -> String {
    BASE64.encode(serde_json::to_vec(sealed).unwrap_or_default())
}

/// The inverse of [`sealed_to_text`].
pub fn sealed_from_text(text: &str) -> Result<Sealed, CryptoError> {
    let bytes = BASE64
        .decode(text)
        .map_err(|_| CryptoError::Malformed("sealed text is not base64"))?;
    serde_json::from_slice(&bytes).map_err(|_| CryptoError::Malformed("sealed text is not JSON"))
}

/// The checks every key service adapter must pass (run against KMS on the emulator too).
pub async fn check_key_service_contract(keys: &dyn KeyService) {
    let context = EncryptionContext::for_connection("tenant-a", "github", "conn_1");
    let sealed = seal(keys, &context, b"refresh-token-value")
        .await
        .expect("seal");
    assert!(
        !sealed
            .ciphertext
            .windows(b"refresh-token-value".len())
            .any(|w| w == b"refresh-token-value"),
        "the ciphertext does not contain the plaintext"
    );
    let opened = open(keys, &context, &sealed).await.expect("open");
    assert_eq!(opened.as_slice(), b"refresh-token-value");
    for other in [
        EncryptionContext::for_connection("tenant-a", "github", "conn_2"),
        EncryptionContext::for_connection("tenant-b", "github", "conn_1"),
        EncryptionContext::for_connection("tenant-a", "slack", "conn_1"),
    ] {
        assert!(
            matches!(
                open(keys, &other, &sealed).await,
                Err(CryptoError::Mismatch)
            ),
            "a blob copied onto another connection must not open: {other:?}"
        );
    }
    let mut tampered = sealed.clone();
    if let Some(byte) = tampered.ciphertext.first_mut() {
        *byte ^= 1;
    }
    assert!(matches!(
        open(keys, &context, &tampered).await,
        Err(CryptoError::Mismatch)
    ));
    let again = seal(keys, &context, b"refresh-token-value")
        .await
        .expect("seal");
    assert_ne!(
        again.encrypted_key, sealed.encrypted_key,
        "a data key per write"
    );
    assert_ne!(again.nonce, sealed.nonce);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_memory_key_service_meets_the_contract() {
        let keys = InMemoryKeyService::default();
        check_key_service_contract(&keys).await;
        assert_eq!(keys.calls().0, 2);
    }

    /// A record opts in to storing a secret field by field; the value round-trips.
    #[test]
    fn a_stored_field_round_trips_and_a_missing_option_is_none() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Record {
            #[serde(with = "stored")]
            token: SecretString,
            #[serde(with = "stored::option", default)]
            refresh: Option<SecretString>,
        }
        let text = serde_json::to_string(&Record {
            token: SecretString::new("at-1"),
            refresh: Some(SecretString::new("rt-1")),
        })
        .expect("json");
        assert_eq!(text, r#"{"token":"at-1","refresh":"rt-1"}"#);
        let back: Record = serde_json::from_str(&text).expect("back");
        assert_eq!(back.token.expose(), "at-1");
        assert_eq!(
            back.refresh.as_ref().map(SecretString::expose),
            Some("rt-1")
        );
        let without: Record = serde_json::from_str(r#"{"token":"at-2"}"#).expect("back");
        assert!(without.refresh.is_none());
    }

    #[test]
    fn secrets_never_print() {
        let secret = SecretString::new("xoxb-very-secret");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        let sealed = Sealed {
            ciphertext: vec![1, 2, 3],
            nonce: vec![0; 12],
            encrypted_key: vec![9; 8],
        };
        assert!(!format!("{sealed:?}").contains('9'));
        let round = sealed_from_text(&sealed_to_text(&sealed)).expect("round trip");
        assert_eq!(round, sealed);
    }

    #[test]
    fn contexts_do_not_collide() {
        let a = EncryptionContext(BTreeMap::from([("a".into(), "b=c".into())]));
        let b = EncryptionContext(BTreeMap::from([("a=b".into(), "c".into())]));
        assert_ne!(a.canonical(), b.canonical());
    }
}
