//! Signing and sending a webhook exactly as the provider would.
//!
//! The signature comes from `junction_webhooks::sign`, driven by the same catalog entry
//! the ingress verifies with, so what verifies here verifies in Lambda. The key is the
//! configured secret read from Secrets Manager (`<prefix>/webhooks/<provider>`), or, for
//! asymmetric providers (Ed25519, ECDSA P-256) whose configured secret is the provider's
//! *public* key, the `development_signing_key` the local stack seeds next to it. Schemes
//! whose signature is in the body (Mailgun, Adyen, Microsoft Graph, Salesforce) get the
//! signed body back. Providers whose deliveries carry a JWT verified with published keys
//! (Gmail's Pub/Sub push, Plaid) get a token minted by [`crate::tokens`] with the
//! development private key the local stack seeds (and whose public half it publishes
//! where the ingress fetches it), carrying the secret's `jwt_claims`.
//!
//! URL-signing providers (Twilio, Square, HubSpot) sign the URL they were registered
//! with. Where that is not the URL posted to (a stack with `PublicBaseUrl`, reached
//! through the local API), [`sign_webhook_for_public_url`] signs over the public URL the
//! ingress rebuilds and posts to the other.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue};
use junction_aws::secrets::webhook_secret_name;
use junction_catalog::{Provider, Scheme, SignatureFormat};
use junction_webhooks::{
    SignError, SignedRequest, SigningSecret, sign_request, url_with_body_hash,
};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::{
    samples::Sample,
    tokens::{TokenError, TokenSigner},
};

/// Why a webhook could not be signed or sent.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("provider {0} is not in the catalog")]
    UnknownProvider(String),
    #[error("provider {0} has no webhooks in the catalog")]
    NoWebhooks(String),
    #[error("provider {0}'s webhooks cannot be verified, so Junction refuses them")]
    Unverifiable(String),
    #[error("no secret {name}: run the local stack (it seeds one) or create it")]
    NoSecret { name: String },
    #[error("could not read secret {name}: {source}")]
    ReadSecret {
        name: String,
        #[source]
        source: Box<aws_sdk_secretsmanager::Error>,
    },
    #[error("secret {name} is not {{\"signing_secrets\": [\"…\"]}}")]
    MalformedSecret { name: String },
    #[error(
        "secret {name} has no `development_signing_key`: {provider} signs with a private key \
         the ingress never holds (the local stack seeds one), or pass --secret"
    )]
    NoSigningKey { name: String, provider: String },
    #[error("header {0} is not a valid HTTP header")]
    Header(String),
    #[error("{what} {url} is not an absolute http(s) URL with a host (and no credentials)")]
    Url { what: &'static str, url: String },
    #[error("could not sign: {0}")]
    Sign(#[from] SignError),
    #[error("could not mint the token: {0}")]
    Token(#[from] TokenError),
    #[error("could not post to {url}: {source}")]
    Send {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

/// The secret document: the ingress reads `signing_secrets` and `jwt_claims`; the CLI
/// also reads the development-only private key of asymmetric and JWT providers.
#[derive(Debug, Deserialize)]
struct SecretDocument {
    signing_secrets: Vec<String>,
    #[serde(default)]
    jwt_claims: BTreeMap<String, String>,
    #[serde(default)]
    development_signing_key: Option<String>,
}

/// Reads the key to sign `provider`'s webhooks with: the endpoint's secret where one
/// exists, else the provider's (the ingress's own lookup order). For JWT providers it is
/// a [`TokenSigner`] document: the development private key and the secret's
/// `jwt_claims`.
pub async fn signing_key(
    client: &aws_sdk_secretsmanager::Client,
    prefix: &str,
    provider: &Provider,
    endpoint: Option<&str>,
) -> Result<SigningSecret, WebhookError> {
    let mut names = Vec::new();
    if endpoint.is_some() {
        names.push(webhook_secret_name(prefix, &provider.id, endpoint));
    }
    names.push(webhook_secret_name(prefix, &provider.id, None));
    let last = names.last().cloned().unwrap_or_default();
    for name in names {
        let text = match client.get_secret_value().secret_id(&name).send().await {
            Ok(output) => output.secret_string.unwrap_or_default(),
            Err(err) => {
                let err = aws_sdk_secretsmanager::Error::from(err);
                if matches!(
                    err,
                    aws_sdk_secretsmanager::Error::ResourceNotFoundException(_)
                ) {
                    continue;
                }
                return Err(WebhookError::ReadSecret {
                    name,
                    source: Box::new(err),
                });
            }
        };
        let document: SecretDocument = serde_json::from_str(&text)
            .map_err(|_| WebhookError::MalformedSecret { name: name.clone() })?;
        let scheme = provider.verification().map(|v| v.scheme);
        let asymmetric = matches!(
            scheme,
            Some(Scheme::Ed25519 | Scheme::EcdsaP256 | Scheme::Jwt)
        );
        let key = if scheme == Some(Scheme::Jwt) {
            document
                .development_signing_key
                .map(|jwk| TokenSigner::document(&jwk, &document.jwt_claims))
                .transpose()?
        } else if asymmetric {
            document.development_signing_key
        } else {
            document.signing_secrets.into_iter().find(|s| !s.is_empty())
        };
        return match key {
            Some(key) => Ok(SigningSecret::new(key)),
            None if asymmetric => Err(WebhookError::NoSigningKey {
                name,
                provider: provider.id.clone(),
            }),
            None => Err(WebhookError::MalformedSecret { name }),
        };
    }
    Err(WebhookError::NoSecret { name: last })
}

/// A request ready to post.
#[derive(Debug, Clone)]
pub struct SignedWebhook {
    /// The URL to post to (for Twilio JSON bodies, with `bodySHA256`).
    pub url: String,
    /// The URL the signature covers, where the provider signs one: `url`, or the public
    /// URL of [`sign_webhook_for_public_url`].
    pub signed_url: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Signs `sample` for `provider` as posted to `url` at `now` (for JWT providers, mints
/// the token with `key`, a [`TokenSigner`] document or a bare private JWK).
pub fn sign_webhook(
    provider: &Provider,
    key: &SigningSecret,
    url: &str,
    sample: &Sample,
    now: OffsetDateTime,
) -> Result<SignedWebhook, WebhookError> {
    sign(provider, key, url, None, sample, now)
}

/// [`sign_webhook`], but the signature covers [`public_url`]`(public_base, url)`: the
/// URL the ingress verifies a request posted to `url` against when its public base URL
/// (the stack's `PublicBaseUrl`) is `public_base`. The request still goes to `url`.
pub fn sign_webhook_for_public_url(
    provider: &Provider,
    key: &SigningSecret,
    url: &str,
    public_base: &str,
    sample: &Sample,
    now: OffsetDateTime,
) -> Result<SignedWebhook, WebhookError> {
    sign(provider, key, url, Some(public_base), sample, now)
}

/// The URL the ingress rebuilds for a request to `posted` when its public base URL is
/// `public_base`: the base (without a trailing `/`) followed by the path and query the
/// request carries (`junction_webhooks::Ingress`'s `public_url`). Both are parsed; the
/// path and query are those `posted` is sent with.
pub fn public_url(public_base: &str, posted: &str) -> Result<String, WebhookError> {
    let parse = |what: &'static str, url: &str| {
        reqwest::Url::parse(url)
            .ok()
            .filter(|parsed| {
                matches!(parsed.scheme(), "http" | "https")
                    && parsed.host_str().is_some()
                    && parsed.username().is_empty()
                    && parsed.password().is_none()
            })
            .ok_or_else(|| WebhookError::Url {
                what,
                url: url.to_owned(),
            })
    };
    let base = parse("the public base URL", public_base)?;
    if base.query().is_some() || base.fragment().is_some() {
        return Err(WebhookError::Url {
            what: "the public base URL (no query or fragment)",
            url: public_base.to_owned(),
        });
    }
    let posted = parse("the URL posted to", posted)?;
    let query = posted
        .query()
        .map(|query| format!("?{query}"))
        .unwrap_or_default();
    Ok(format!(
        "{}{}{query}",
        public_base.trim_end_matches('/'),
        posted.path()
    ))
}

fn sign(
    provider: &Provider,
    key: &SigningSecret,
    url: &str,
    public_base: Option<&str>,
    sample: &Sample,
    now: OffsetDateTime,
) -> Result<SignedWebhook, WebhookError> {
    let webhook = provider
        .webhook
        .as_ref()
        .ok_or_else(|| WebhookError::NoWebhooks(provider.id.clone()))?;
    let verification = webhook
        .verification
        .as_ref()
        .ok_or_else(|| WebhookError::Unverifiable(provider.id.clone()))?;
    let mut headers = HeaderMap::new();
    insert(&mut headers, "content-type", &sample.content_type)?;
    for (name, value) in &sample.headers {
        insert(&mut headers, name, value)?;
    }
    if let (Some(rule), SignatureFormat::Single { header, prefix, .. }) =
        (&verification.jwt, &verification.signature)
    {
        let token = TokenSigner::parse(key.expose())?.mint(rule, &sample.body, now)?;
        let name = header
            .names()
            .first()
            .ok_or_else(|| WebhookError::Unverifiable(provider.id.clone()))?;
        insert(&mut headers, name, &format!("{prefix}{token}"))?;
        return Ok(SignedWebhook {
            url: url.to_owned(),
            signed_url: url.to_owned(),
            headers,
            body: sample.body.clone(),
        });
    }
    let url = url_with_body_hash(verification, url, &headers, &sample.body);
    let signed_url = match public_base {
        Some(base) => public_url(base, &url)?,
        None => url.clone(),
    };
    let request = SignedRequest {
        method: "POST",
        url: &signed_url,
        headers: &headers,
        body: &sample.body,
    };
    let signed = sign_request(verification, key, &request, now)?;
    for (name, value) in signed.headers {
        insert(&mut headers, &name, &value)?;
    }
    Ok(SignedWebhook {
        url,
        signed_url,
        headers,
        body: signed.body.unwrap_or_else(|| sample.body.clone()),
    })
}

fn insert(headers: &mut HeaderMap, name: &str, value: &str) -> Result<(), WebhookError> {
    let header = HeaderName::try_from(name).map_err(|_| WebhookError::Header(name.to_owned()))?;
    let value = HeaderValue::try_from(value).map_err(|_| WebhookError::Header(name.to_owned()))?;
    headers.insert(header, value);
    Ok(())
}

/// The provider's answer.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub status: u16,
    pub body: String,
}

/// Posts a signed webhook.
pub async fn post(
    client: &reqwest::Client,
    webhook: &SignedWebhook,
) -> Result<Delivery, WebhookError> {
    let mut request = client
        .post(&webhook.url)
        .timeout(std::time::Duration::from_secs(30))
        .body(webhook.body.clone());
    for (name, value) in &webhook.headers {
        request = request.header(name.as_str(), value.as_bytes());
    }
    let response = request.send().await.map_err(|source| WebhookError::Send {
        url: webhook.url.clone(),
        source,
    })?;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    Ok(Delivery { status, body })
}

/// `<base>/webhooks/<provider>[/<endpoint>]`.
pub fn webhook_url(api_base: &str, provider: &str, endpoint: Option<&str>) -> String {
    let base = api_base.trim_end_matches('/');
    match endpoint {
        Some(endpoint) => format!("{base}/webhooks/{provider}/{endpoint}"),
        None => format!("{base}/webhooks/{provider}"),
    }
}

#[cfg(test)]
mod tests {
    use junction_catalog::{Catalog, JwtAlgorithm};
    use junction_webhooks::jwt::{JwkSet, verify_jwt};
    use junction_webhooks::verify;

    use super::*;
    use crate::{
        samples::sample,
        tokens::test_keys::{es256_keys, rs256_keys},
    };

    /// Every provider's sample, signed here, verifies with the catalog's verifier (JWT
    /// providers' tokens with shared's JWT verifier and the key's public half).
    #[test]
    fn every_sample_verifies() {
        let catalog = Catalog::embedded().expect("catalog");
        let now = OffsetDateTime::now_utc();
        let mut jwt_providers = Vec::new();
        for provider in catalog.providers() {
            let Some(verification) = provider.verification() else {
                continue;
            };
            if let Some(rule) = &verification.jwt {
                // Minted with a development key whose public half the ingress fetches.
                let (jwk, public) = match rule.algorithm {
                    JwtAlgorithm::RS256 => rs256_keys("dev-rsa"),
                    JwtAlgorithm::ES256 => es256_keys("dev-ec"),
                };
                let configured: BTreeMap<String, String> = rule
                    .configured_claims
                    .iter()
                    .map(|name| (name.clone(), format!("localdev-{name}")))
                    .collect();
                let signer = TokenSigner::document(&jwk, &configured).expect("document");
                let url = webhook_url("http://127.0.0.1:3000", &provider.id, None);
                let delivery = sample(&provider.id, now);
                let signed =
                    sign_webhook(provider, &SigningSecret::new(signer), &url, &delivery, now)
                        .unwrap_or_else(|err| panic!("{}: {err}", provider.id));
                assert_eq!(signed.body, delivery.body, "{}", provider.id);
                let SignatureFormat::Single { header, prefix, .. } = &verification.signature else {
                    panic!("{}: a JWT sits in one header", provider.id);
                };
                let token = signed
                    .headers
                    .get(header.names()[0].as_str())
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| value.strip_prefix(prefix.as_str()))
                    .unwrap_or_else(|| panic!("{}: no token", provider.id));
                let keys = JwkSet { keys: vec![public] };
                assert_eq!(
                    verify_jwt(rule, token, &signed.body, &keys, &configured, now),
                    Ok(()),
                    "{}",
                    provider.id
                );
                jwt_providers.push(provider.id.as_str());
                continue;
            }
            let (key, configured) =
                junction_webhooks::development_keys(verification, &[7u8; 32]).expect("valid key");
            let url = webhook_url("http://127.0.0.1:3000", &provider.id, None);
            let signed = sign_webhook(
                provider,
                &SigningSecret::new(key),
                &url,
                &sample(&provider.id, now),
                now,
            )
            .unwrap_or_else(|err| panic!("{}: {err}", provider.id));
            let request = SignedRequest {
                method: "POST",
                url: &signed.url,
                headers: &signed.headers,
                body: &signed.body,
            };
            assert_eq!(
                verify(
                    verification,
                    &[SigningSecret::new(configured)],
                    &request,
                    now
                ),
                Ok(()),
                "{}",
                provider.id
            );
        }
        assert_eq!(jwt_providers, ["gmail", "plaid"]);
    }

    /// Issue 29: `send-webhook` signs the new providers as they send: Sentry's and
    /// Crisp's HMACs in their headers, Airtable's MAC with the base64 secret, Exact
    /// Online's HashCode spliced into the body, Telegram's and PostHog's tokens, and
    /// Pipedrive's HTTP Basic credentials; each verifies with the configured secret.
    #[test]
    fn the_issue_29_providers_are_signed_as_they_send() {
        let catalog = Catalog::embedded().expect("catalog");
        let now = OffsetDateTime::now_utc();
        for (provider, secret, header, starts) in [
            (
                "sentry",
                "sentry-client-secret",
                Some("sentry-hook-signature"),
                "",
            ),
            ("crisp", "crisp-secret", Some("x-crisp-signature"), ""),
            (
                "airtable",
                "c2VjcmV0LWJ5dGVzLWZyb20tYWlydGFibGU=",
                Some("x-airtable-content-mac"),
                "hmac-sha256=",
            ),
            ("exact-online", "webhook-secret", None, ""),
            (
                "telegram",
                "telegram_secret-token",
                Some("x-telegram-bot-api-secret-token"),
                "telegram_secret-token",
            ),
            (
                "posthog",
                "ph-token",
                Some("authorization"),
                "Bearer ph-token",
            ),
            (
                "pipedrive",
                "junction:pass word",
                Some("authorization"),
                "Basic anVuY3Rpb246cGFzcyB3b3Jk",
            ),
        ] {
            let spec = catalog.get(provider).expect(provider);
            let verification = spec.verification().expect("verification");
            let key = SigningSecret::new(secret);
            let url = webhook_url("http://127.0.0.1:3000", provider, None);
            let delivery = sample(provider, now);
            let signed = sign_webhook(spec, &key, &url, &delivery, now).expect("signed");
            match header {
                Some(name) => {
                    let value = signed
                        .headers
                        .get(name)
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or_else(|| panic!("{provider}: no {name}"));
                    assert!(value.starts_with(starts), "{provider}: {value}");
                    assert_eq!(signed.body, delivery.body, "{provider}");
                }
                None => {
                    let body: serde_json::Value =
                        serde_json::from_slice(&signed.body).expect("json");
                    let code = body["HashCode"].as_str().expect("a HashCode");
                    assert!(
                        code.len() == 64 && !code.bytes().any(|b| b.is_ascii_lowercase()),
                        "{code}"
                    );
                    assert!(
                        signed
                            .body
                            .starts_with(&delivery.body[..delivery.body.len() - 1])
                    );
                }
            }
            let request = SignedRequest {
                method: "POST",
                url: &signed.url,
                headers: &signed.headers,
                body: &signed.body,
            };
            assert_eq!(
                verify(verification, std::slice::from_ref(&key), &request, now),
                Ok(()),
                "{provider}"
            );
        }
    }

    /// `send-webhook twilio --header 'X-Twilio-Webhooks-Signature-Settings:
    /// key=…,algorithm=HMAC_SHA256' --secret <SharedKey secret>` signs as a Twilio
    /// SharedKey setting does: HMAC-SHA256 over the same bytes.
    #[test]
    fn a_twilio_shared_key_delivery_is_signed_with_the_algorithm_it_names() {
        let catalog = Catalog::embedded().expect("catalog");
        let twilio = catalog.get("twilio").expect("twilio");
        let verification = twilio.verification().expect("verification");
        let now = OffsetDateTime::now_utc();
        let mut delivery = sample("twilio", now);
        delivery.headers.push((
            "X-Twilio-Webhooks-Signature-Settings".into(),
            "key=webhooks_sharedkey_01jexample,algorithm=HMAC_SHA256".into(),
        ));
        let url = webhook_url("http://127.0.0.1:3000", "twilio", None);
        let key = SigningSecret::new("shared-key-secret");
        let signed = sign_webhook(twilio, &key, &url, &delivery, now).expect("signed");
        let verify_with = |headers: &HeaderMap| {
            let request = SignedRequest {
                method: "POST",
                url: &signed.url,
                headers,
                body: &signed.body,
            };
            verify(verification, std::slice::from_ref(&key), &request, now)
        };
        assert_eq!(verify_with(&signed.headers), Ok(()));
        let mut without = signed.headers.clone();
        without.remove("x-twilio-webhooks-signature-settings");
        assert!(
            verify_with(&without).is_err(),
            "signed with SHA-256, not SHA-1"
        );
    }

    /// `send-webhook --public-url`: a Twilio delivery posted to the local API but signed
    /// over the registered public URL verifies against that URL (what the ingress
    /// rebuilds from `PUBLIC_BASE_URL`) and not against the one it was posted to; the
    /// body hash query of a JSON body is in both.
    #[test]
    fn a_delivery_can_be_signed_over_the_public_url_and_posted_elsewhere() {
        let catalog = Catalog::embedded().expect("catalog");
        let now = OffsetDateTime::now_utc();
        let key = SigningSecret::new("twilio-auth-token");
        for (provider, content_type) in [
            ("twilio", None),
            ("twilio", Some("application/json")),
            ("square", None),
            ("hubspot", None),
        ] {
            let spec = catalog.get(provider).expect(provider);
            let verification = spec.verification().expect("verification");
            let mut delivery = sample(provider, now);
            if let Some(content_type) = content_type {
                delivery.content_type = content_type.to_owned();
                delivery.body = br#"{"CallSid":"CA1"}"#.to_vec();
            }
            let posted = webhook_url("http://127.0.0.1:3000", provider, None);
            let signed = sign_webhook_for_public_url(
                spec,
                &key,
                &posted,
                "https://hooks.example.com/",
                &delivery,
                now,
            )
            .expect("signed");
            assert!(signed.url.starts_with(&posted), "{}", signed.url);
            let query = signed.url.strip_prefix(&posted).unwrap_or_default();
            assert_eq!(
                signed.signed_url,
                format!("https://hooks.example.com/webhooks/{provider}{query}")
            );
            assert_eq!(query.is_empty(), content_type.is_none(), "{provider}");
            let verify_over = |url: &str| {
                let request = SignedRequest {
                    method: "POST",
                    url,
                    headers: &signed.headers,
                    body: &signed.body,
                };
                verify(verification, std::slice::from_ref(&key), &request, now)
            };
            assert_eq!(verify_over(&signed.signed_url), Ok(()), "{provider}");
            assert!(verify_over(&signed.url).is_err(), "{provider}");
        }
        for bad in [
            "hooks.example.com",
            "ftp://hooks.example.com",
            "https://u:p@h.example",
        ] {
            assert!(
                matches!(
                    public_url(bad, "http://127.0.0.1:3000/webhooks/twilio"),
                    Err(WebhookError::Url { .. })
                ),
                "{bad}"
            );
        }
        assert!(public_url("https://h.example?x=1", "http://127.0.0.1/webhooks/a").is_err());
    }

    #[test]
    fn urls_are_built_from_the_api_base() {
        assert_eq!(
            webhook_url("http://127.0.0.1:3000/", "stripe", Some("eu")),
            "http://127.0.0.1:3000/webhooks/stripe/eu"
        );
    }
}
