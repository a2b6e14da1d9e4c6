//! Development signing secrets for every catalog provider that has webhooks.
//!
//! A provider whose secret `<prefix>/webhooks/<provider>` does not exist gets a random
//! one, marked `"development_only": true` in the document, in the secret's description
//! and in a tag, so it is never mistaken for a real one. For Ed25519 providers
//! (Discord), whose configured "secret" is the provider's public key, the document also
//! carries the private seed as `development_signing_key` so `junction send-webhook` can
//! sign like the provider. Providers whose deliveries carry a JWT (Gmail push, Plaid) get
//! a secret only when the running catalog fetches their keys from the local stack's key
//! server ([`crate::jwt_keys`]): the private JWK of this run's development key as
//! `development_signing_key`, the claim values the ingress expects as `jwt_claims`
//! (Gmail's audience and service account) and, for Plaid, random API credentials the
//! key server's `/webhook_verification_key/get` accepts as `signing_secrets`. Existing
//! secrets are never touched.

use std::collections::BTreeMap;

use aws_sdk_secretsmanager::types::Tag;
use junction_aws::secrets::webhook_secret_name;
use junction_catalog::{Catalog, JwtKeys, Provider, Scheme};
use junction_webhooks::development_keys;
use serde_json::json;

use crate::jwt_keys::{LocalJwt, development_claim};

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
    /// What the ingress verifies with (for Ed25519, the public key; for Plaid, the
    /// `<client_id>:<secret>` its key endpoint is called with); empty for Gmail.
    pub signing_secret: String,
    /// For asymmetric schemes, the private key the CLI signs with (for JWT providers a
    /// private JWK).
    pub signing_key: Option<String>,
    /// For JWT providers, the `kid` of `signing_key`.
    pub key_id: Option<String>,
    /// For JWT providers, the values the token's configured claims must have.
    pub jwt_claims: BTreeMap<String, String>,
}

/// The JSON stored in the secret.
pub fn secret_document(secret: &CreatedSecret) -> serde_json::Value {
    let signing_secrets: Vec<&str> = Some(secret.signing_secret.as_str())
        .filter(|s| !s.is_empty())
        .into_iter()
        .collect();
    let mut document = json!({
        "signing_secrets": signing_secrets,
        "development_only": true,
    });
    if !secret.jwt_claims.is_empty() {
        document["jwt_claims"] = json!(secret.jwt_claims);
    }
    if let Some(key) = &secret.signing_key {
        document["development_signing_key"] = json!(key);
    }
    document
}

/// A random secret shaped like the provider's real ones (for asymmetric schemes, a key
/// pair: the public key is configured, the CLI signs with the private one). A JWT
/// provider gets one only when `jwt` serves its keys.
pub fn development_secret(provider: &Provider, jwt: Option<&LocalJwt>) -> Option<CreatedSecret> {
    let verification = provider.webhook.as_ref()?.verification.as_ref()?;
    if verification.scheme == Scheme::Jwt {
        let (jwt, rule) = (jwt?, verification.jwt.as_ref()?);
        if !jwt.serves(provider) {
            // Its keys come from elsewhere: no local key can sign what it accepts.
            return None;
        }
        let key = jwt.keys.private_jwk(rule.algorithm);
        let signing_secret = match verification.jwt_keys {
            // Plaid's client ids are 24 hex digits, its secrets 30.
            JwtKeys::PlaidVerificationKey => format!(
                "{}:{}",
                hex::encode(rand::random::<[u8; 12]>()),
                hex::encode(rand::random::<[u8; 15]>())
            ),
            JwtKeys::JwkSet => String::new(),
        };
        return Some(CreatedSecret {
            signing_secret,
            signing_key: Some(key.to_string()),
            key_id: key
                .get("kid")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
            jwt_claims: rule
                .configured_claims
                .iter()
                .map(|claim| (claim.clone(), development_claim(&provider.id, claim)))
                .collect(),
        });
    }
    let (signing, configured) = loop {
        let random: [u8; 32] = rand::random();
        // Only an ECDSA scalar can be invalid, with negligible probability.
        if let Some(keys) = development_keys(verification, &random) {
            break keys;
        }
    };
    let asymmetric = matches!(verification.scheme, Scheme::Ed25519 | Scheme::EcdsaP256);
    Some(CreatedSecret {
        signing_secret: configured,
        signing_key: asymmetric.then_some(signing),
        key_id: None,
        jwt_claims: BTreeMap::new(),
    })
}

/// Creates the missing development secrets of every webhook provider of `catalog` (JWT
/// providers' only where `jwt` serves their keys).
pub async fn seed(
    client: &aws_sdk_secretsmanager::Client,
    catalog: &Catalog,
    prefix: &str,
    jwt: Option<&LocalJwt>,
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
        let Some(secret) = development_secret(provider, jwt) else {
            continue;
        };
        let document = secret_document(&secret);
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
    use junction_webhooks::{SignedRequest, SigningSecret, sign, verify};

    use super::*;

    /// Every generated secret must verify what it signs, or the local stack would
    /// seed secrets that reject the CLI's webhooks.
    #[test]
    fn every_development_secret_signs_and_verifies() {
        let catalog = Catalog::embedded().expect("catalog");
        let now = time::OffsetDateTime::now_utc();
        for provider in catalog.providers() {
            let Some(verification) = provider.verification() else {
                continue;
            };
            // In-body signatures need the provider's body shape: the CLI's
            // `every_sample_verifies` covers those with the same development keys. JWT
            // providers: `jwt_keys::tests::cli_tokens_verify_against_the_served_keys`.
            if verification.signature.header().is_none() || verification.scheme == Scheme::Jwt {
                assert!(
                    verification.scheme != Scheme::Jwt
                        || development_secret(provider, None).is_none(),
                    "{}: no JWT secret without the key server",
                    provider.id
                );
                continue;
            }
            let secret = development_secret(provider, None).expect("webhook provider");
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
            for part in &verification.signed {
                if let junction_catalog::SignedPart::Header(names) = part
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
            let url = junction_webhooks::url_with_body_hash(
                verification,
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
            let added = sign(verification, &signing, &unsigned, now)
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
                verification,
                &[SigningSecret::new(secret.signing_secret.clone())],
                &request,
                now,
            );
            assert_eq!(result, Ok(()), "{}", provider.id);
        }
    }
}
