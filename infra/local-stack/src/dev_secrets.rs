//! Development signing secrets for every catalog provider that has webhooks.
//!
//! A provider whose secret `<prefix>/webhooks/<provider>` does not exist gets a random
//! one, marked `"development_only": true` in the document, in the secret's description
//! and in a tag, so it is never mistaken for a real one. For Ed25519 providers
//! (Discord), whose configured "secret" is the provider's public key, the document also
//! carries the private seed as `development_signing_key` so `junction send-webhook` can
//! sign like the provider. Existing secrets are never touched.

use aws_sdk_secretsmanager::types::Tag;
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use serde_json::json;
use shared::{
    catalog::{Catalog, Provider, Scheme, SecretEncoding},
    secrets::webhook_secret_name,
    webhooks::ed25519_public_key,
};

/// The description every seeded secret carries.
pub const DEVELOPMENT_DESCRIPTION: &str = "DEVELOPMENT ONLY: random webhook signing secret created by the Junction local stack. Never use in production.";

/// Why seeding failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("could not read secret {name}: {source}")]
    Read {
        name: String,
        #[source]
        source: Box<aws_sdk_secretsmanager::Error>,
    },
    #[error("could not create secret {name}: {source}")]
    Create {
        name: String,
        #[source]
        source: Box<aws_sdk_secretsmanager::Error>,
    },
}

/// What seeding did for one provider.
#[derive(Debug, Clone)]
pub struct SeededSecret {
    pub provider: String,
    pub name: String,
    /// `None` when the secret already existed and was left alone.
    pub created: Option<CreatedSecret>,
}

/// A secret this run created (printed for the developer; these are local and random).
#[derive(Debug, Clone)]
pub struct CreatedSecret {
    /// What the ingress verifies with (for Ed25519, the public key).
    pub signing_secret: String,
    /// For Ed25519, the private seed the CLI signs with.
    pub signing_key: Option<String>,
}

/// A random secret shaped like the provider's real ones.
pub fn development_secret(provider: &Provider) -> Option<CreatedSecret> {
    let verification = &provider.webhook.as_ref()?.verification;
    let prefix = verification.secret_prefix.clone().unwrap_or_default();
    let random: [u8; 32] = rand::random();
    let encode = |bytes: &[u8]| match verification.secret_encoding {
        SecretEncoding::Base64 => BASE64.encode(bytes),
        SecretEncoding::Hex => hex::encode(bytes),
        SecretEncoding::Utf8 => format!("localdev_{}", hex::encode(&bytes[..16])),
    };
    Some(if verification.scheme == Scheme::Ed25519 {
        CreatedSecret {
            signing_secret: ed25519_public_key(verification.secret_encoding, &random),
            signing_key: Some(encode(&random)),
        }
    } else {
        CreatedSecret {
            signing_secret: format!("{prefix}{}", encode(&random)),
            signing_key: None,
        }
    })
}

/// Creates the missing development secrets of every webhook provider of `catalog`.
pub async fn seed(
    client: &aws_sdk_secretsmanager::Client,
    catalog: &Catalog,
    prefix: &str,
) -> Result<Vec<SeededSecret>, SeedError> {
    let mut seeded = Vec::new();
    for provider in catalog.providers().filter(|p| p.webhook.is_some()) {
        let name = webhook_secret_name(prefix, &provider.id, None);
        match client.describe_secret().secret_id(&name).send().await {
            Ok(_) => {
                seeded.push(SeededSecret {
                    provider: provider.id.clone(),
                    name,
                    created: None,
                });
                continue;
            }
            Err(err) => {
                let err = aws_sdk_secretsmanager::Error::from(err);
                if !matches!(
                    err,
                    aws_sdk_secretsmanager::Error::ResourceNotFoundException(_)
                ) {
                    return Err(SeedError::Read {
                        name,
                        source: Box::new(err),
                    });
                }
            }
        }
        let Some(secret) = development_secret(provider) else {
            continue;
        };
        let mut document = json!({
            "signing_secrets": [secret.signing_secret],
            "development_only": true,
        });
        if let Some(key) = &secret.signing_key {
            document["development_signing_key"] = json!(key);
        }
        client
            .create_secret()
            .name(&name)
            .description(DEVELOPMENT_DESCRIPTION)
            .secret_string(document.to_string())
            .tags(
                Tag::builder()
                    .key("junction:development-only")
                    .value("true")
                    .build(),
            )
            .send()
            .await
            .map_err(|err| SeedError::Create {
                name: name.clone(),
                source: Box::new(err.into()),
            })?;
        seeded.push(SeededSecret {
            provider: provider.id.clone(),
            name,
            created: Some(secret),
        });
    }
    Ok(seeded)
}

#[cfg(test)]
mod tests {
    use shared::webhooks::{SignedRequest, SigningSecret, sign, verify};

    use super::*;

    /// Every generated secret must verify what it signs, or the local stack would
    /// seed secrets that reject the CLI's webhooks.
    #[test]
    fn every_development_secret_signs_and_verifies() {
        let catalog = Catalog::embedded().expect("catalog");
        let now = time::OffsetDateTime::now_utc();
        for provider in catalog.providers() {
            let Some(webhook) = &provider.webhook else {
                continue;
            };
            let secret = development_secret(provider).expect("webhook provider");
            let signing = SigningSecret::new(
                secret
                    .signing_key
                    .clone()
                    .unwrap_or_else(|| secret.signing_secret.clone()),
            );
            let mut headers = http::HeaderMap::new();
            headers.insert(
                "content-type",
                http::HeaderValue::from_static("application/json"),
            );
            for part in &webhook.verification.signed {
                if let shared::catalog::SignedPart::Header(names) = part
                    && let Ok(name) = http::HeaderName::try_from(names.names()[0].as_str())
                {
                    headers.insert(name, http::HeaderValue::from_static("1"));
                }
            }
            let body = format!(
                r#"{{"id":"evt_1","webhookTimestamp":{}}}"#,
                now.unix_timestamp() * 1000
            );
            let body = body.as_bytes();
            let url = shared::webhooks::url_with_body_hash(
                &webhook.verification,
                "http://127.0.0.1:3000/webhooks/x",
                &headers,
                body,
            );
            let unsigned = SignedRequest {
                method: "POST",
                url: &url,
                headers: &headers.clone(),
                body,
            };
            let added = sign(&webhook.verification, &signing, &unsigned, now)
                .unwrap_or_else(|err| panic!("{}: {err}", provider.id));
            for (name, value) in added {
                headers.insert(
                    http::HeaderName::try_from(name).expect("header name"),
                    http::HeaderValue::try_from(value).expect("header value"),
                );
            }
            let request = SignedRequest {
                method: "POST",
                url: &url,
                headers: &headers,
                body,
            };
            let result = verify(
                &webhook.verification,
                &[SigningSecret::new(secret.signing_secret.clone())],
                &request,
                now,
            );
            assert_eq!(result, Ok(()), "{}", provider.id);
        }
    }
}
