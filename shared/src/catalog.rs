//! The provider catalog: every provider Junction knows, as data.
//!
//! One TOML file per provider lives in `shared/catalog/`; `build.rs` embeds them all at
//! build time, and [`Catalog::embedded`] parses and validates them once per process.
//! Adding a provider whose webhooks use a known signature scheme is a new file, never
//! new code. The types here are strict (`deny_unknown_fields`, closed enums) so that a
//! typo fails the catalog test, naming the file and the field, instead of silently
//! weakening verification at run time.
//!
//! The verification model is deliberately generic: a signature *scheme* (the
//! primitive), where the signature sits in the request ([`SignatureFormat`]), which bytes
//! are signed ([`SignedPart`], concatenated in order), how the secret is encoded
//! ([`SecretEncoding`]) and an optional replay window ([`TimestampRule`]). The
//! provider table in `../shared/reference/webhook-signatures.md` maps onto it as
//! documented in `docs/catalog.md`.
//!
//! This module must not depend on AWS or on the HTTP stack.

use std::{collections::BTreeMap, fmt, sync::OnceLock};

use serde::Deserialize;

mod oauth;

pub use oauth::{
    CallbackSignature, ClientAuth, OAuthSpec, Revocation, TokenRequestFormat, UrlParameter,
    placeholders,
};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/catalog_files.rs"));
}

/// Why the catalog could not be loaded. Every variant names the file, and the field
/// where one is at fault, so a contributor knows what to fix.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CatalogError {
    /// The file is not valid TOML for the catalog's types (unknown scheme, missing or
    /// unknown field, wrong type). `detail` is the parser's message, which quotes the
    /// offending line and names the field.
    #[error("catalog file {file}: {detail}")]
    Parse { file: String, detail: String },
    /// The file parses but breaks a rule the types cannot express.
    #[error("catalog file {file}: field `{field}`: {message}")]
    Invalid {
        file: String,
        field: String,
        message: String,
    },
    /// Two files declare the same provider id.
    #[error("catalog file {file}: field `id`: provider `{id}` is already defined in {first_file}")]
    Duplicate {
        file: String,
        id: String,
        first_file: String,
    },
}

/// All providers, keyed by id (the `{provider}` path segment of webhook URLs).
#[derive(Debug, Clone)]
pub struct Catalog {
    providers: BTreeMap<String, Provider>,
}

impl Catalog {
    /// The catalog compiled into this binary, parsed and validated on first use.
    pub fn embedded() -> Result<&'static Catalog, CatalogError> {
        static CATALOG: OnceLock<Result<Catalog, CatalogError>> = OnceLock::new();
        CATALOG
            .get_or_init(|| Catalog::from_files(embedded::FILES))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Parses and validates `(file name, TOML text)` pairs.
    pub fn from_files(files: &[(&str, &str)]) -> Result<Catalog, CatalogError> {
        let mut providers: BTreeMap<String, Provider> = BTreeMap::new();
        let mut origin: BTreeMap<String, String> = BTreeMap::new();
        for (file, text) in files {
            let provider: Provider = toml::from_str(text).map_err(|err| CatalogError::Parse {
                file: (*file).to_owned(),
                detail: err.to_string().trim_end().to_owned(),
            })?;
            provider.validate(file)?;
            if let Some(first_file) = origin.get(&provider.id) {
                return Err(CatalogError::Duplicate {
                    file: (*file).to_owned(),
                    id: provider.id.clone(),
                    first_file: first_file.clone(),
                });
            }
            origin.insert(provider.id.clone(), (*file).to_owned());
            providers.insert(provider.id.clone(), provider);
        }
        Ok(Catalog { providers })
    }

    /// This catalog with an operator's overlay applied: each `[[provider]]` entry of the
    /// TOML document `text` adds a provider or replaces the built-in one with the same
    /// id, validated with exactly the built-in rules. `source` names the overlay in
    /// errors (the secret's name), with the provider id.
    pub fn with_overlay(&self, source: &str, text: &str) -> Result<Catalog, CatalogError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Overlay {
            #[serde(default)]
            provider: Vec<toml::Table>,
        }
        let overlay: Overlay = toml::from_str(text).map_err(|err| CatalogError::Parse {
            file: source.to_owned(),
            detail: err.to_string().trim_end().to_owned(),
        })?;
        let mut providers = self.providers.clone();
        let mut seen = BTreeMap::new();
        for (index, table) in overlay.provider.into_iter().enumerate() {
            let id = table
                .get("id")
                .and_then(toml::Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let label = format!("{source} provider[{index}] ({id})");
            let provider: Provider =
                toml::Value::Table(table)
                    .try_into()
                    .map_err(|err: toml::de::Error| CatalogError::Parse {
                        file: label.clone(),
                        detail: err.to_string().trim_end().to_owned(),
                    })?;
            provider.check(&label)?;
            if let Some(first) = seen.insert(provider.id.clone(), label.clone()) {
                return Err(CatalogError::Duplicate {
                    file: label,
                    id: provider.id,
                    first_file: first,
                });
            }
            providers.insert(provider.id.clone(), provider);
        }
        Ok(Catalog { providers })
    }

    /// The provider with this id, if the catalog has it.
    pub fn get(&self, id: &str) -> Option<&Provider> {
        self.providers.get(id)
    }

    /// Every provider, ordered by id.
    pub fn providers(&self) -> impl Iterator<Item = &Provider> {
        self.providers.values()
    }
}

/// One provider's entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// Lowercase id, used in URLs, secret names and events; equals the file stem.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// The provider's own documentation of what this entry encodes.
    pub docs: String,
    /// The API version Junction is built against. Payloads stating another version are
    /// still processed, and the mismatch is logged and counted.
    #[serde(default)]
    pub api_version: Option<String>,
    /// How the provider's webhooks are verified and read; absent for poll-only APIs.
    pub webhook: Option<WebhookSpec>,
    /// How accounts are connected with OAuth 2.0; absent where Junction does not connect.
    #[serde(default)]
    pub oauth: Option<OAuthSpec>,
}

/// How to verify, acknowledge and identify one provider's webhook deliveries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// How the signature is checked.
    pub verification: Verification,
    /// A handshake answered by the ingress itself instead of being enqueued.
    #[serde(default)]
    pub handshake: Option<Handshake>,
    /// Where the provider's own event/delivery id is; the body's SHA-256 is used where
    /// the provider has none (or it is missing from a delivery).
    #[serde(default)]
    pub event_id: Option<FieldSource>,
    /// Where the provider's event type is, when it has one.
    #[serde(default)]
    pub event_type: Option<FieldSource>,
    /// Request headers the consumers need, copied onto the queue message (never the
    /// signature headers). `Content-Type` is always copied.
    #[serde(default)]
    pub forward_headers: Vec<String>,
}

/// A value read from the request after verification.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum FieldSource {
    /// The first of these headers present.
    Header(HeaderNames),
    /// A JSON pointer (RFC 6901) into the body; strings and numbers are accepted.
    JsonPointer(String),
}

/// One header name, or alternatives tried in order (Standard Webhooks' `webhook-id`
/// and Svix's `svix-id` name the same thing).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum HeaderNames {
    One(String),
    FirstOf(Vec<String>),
}

impl HeaderNames {
    /// The names in the order they are tried.
    pub fn names(&self) -> &[String] {
        match self {
            HeaderNames::One(name) => std::slice::from_ref(name),
            HeaderNames::FirstOf(names) => names,
        }
    }
}

impl fmt::Display for HeaderNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(" | "))
    }
}

/// The signature check of one provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verification {
    /// The cryptographic primitive.
    pub scheme: Scheme,
    /// How each configured secret string becomes key bytes.
    #[serde(default)]
    pub secret_encoding: SecretEncoding,
    /// A prefix stripped from the secret before decoding when present (`whsec_`).
    #[serde(default)]
    pub secret_prefix: Option<String>,
    /// Where the signature(s) are in the request.
    pub signature: SignatureFormat,
    /// The signed bytes, concatenated in order.
    pub signed: Vec<SignedPart>,
    /// The replay window, when the provider signs a timestamp.
    #[serde(default)]
    pub timestamp: Option<TimestampRule>,
    /// Percent-escapes decoded in the URL before it is signed (HubSpot v3 decodes
    /// `%3A %2F %3F %40 %21 %24 %27 %28 %29 %2A %2C %3B`; its SDKs do not).
    #[serde(default)]
    pub url_decoded_escapes: Vec<String>,
    /// A query parameter that must carry the hex SHA-256 of the body whenever the body
    /// is not a signed form (Twilio's `bodySHA256` for JSON bodies). Verification fails
    /// closed when it is missing, so an unsigned body is never accepted.
    #[serde(default)]
    pub body_hash_query_param: Option<String>,
}

/// The primitive a signature is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// HMAC-SHA256 keyed with the secret.
    HmacSha256,
    /// HMAC-SHA1 keyed with the secret (Twilio, Intercom, Vercel).
    HmacSha1,
    /// A plain SHA-256 digest whose input includes the secret as a [`SignedPart::Secret`]
    /// (HubSpot v1/v2).
    Sha256,
    /// An Ed25519 signature; the configured "secret" is the provider's public key.
    Ed25519,
}

/// How a configured secret string becomes key bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretEncoding {
    /// The UTF-8 bytes of the string, prefix included (Stripe's `whsec_` is *not* decoded).
    #[default]
    Utf8,
    /// Standard base64 (after `secret_prefix` is stripped).
    Base64,
    /// Hex (Discord public keys, Adyen HMAC keys).
    Hex,
}

/// The encoding of a signature value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureEncoding {
    Hex,
    Base64,
}

/// Where the signature(s) sit in the request.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "format", rename_all = "snake_case", deny_unknown_fields)]
pub enum SignatureFormat {
    /// One signature in one header, after an optional fixed prefix (`sha256=`, `v0=`).
    Single {
        header: HeaderNames,
        #[serde(default)]
        prefix: String,
        encoding: SignatureEncoding,
    },
    /// `key=value` pairs in one header: Stripe `t=…,v1=…,v1=…`, Paddle `ts=…;h1=…`.
    /// Every pair named `key` is a candidate signature; other pairs are parameters
    /// (see [`TimestampSource::SignatureParam`]).
    KeyValueList {
        header: HeaderNames,
        pair_separator: String,
        key: String,
        encoding: SignatureEncoding,
    },
    /// `version<sep>signature` entries: Standard Webhooks' space-separated `v1,<b64>`.
    /// Entries of other versions are ignored.
    VersionedList {
        header: HeaderNames,
        entry_separator: String,
        version: String,
        version_separator: String,
        encoding: SignatureEncoding,
    },
}

impl SignatureFormat {
    /// The header(s) holding the signature.
    pub fn header(&self) -> &HeaderNames {
        match self {
            SignatureFormat::Single { header, .. }
            | SignatureFormat::KeyValueList { header, .. }
            | SignatureFormat::VersionedList { header, .. } => header,
        }
    }
}

/// One piece of the signed bytes.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SignedPart {
    /// The raw body, exactly as received.
    Body,
    /// The HTTP method, uppercase.
    Method,
    /// The public URL the provider called (scheme, host, path and query).
    Url,
    /// The timestamp exactly as received (see [`TimestampRule`]).
    Timestamp,
    /// For `application/x-www-form-urlencoded` bodies, each parameter's name followed by
    /// its value, sorted by name then value (Twilio); nothing for other bodies.
    SortedFormParams,
    /// The secret itself (plain-digest schemes only).
    Secret,
    /// Fixed bytes, such as a `.` separator or Slack's `v0:` prefix.
    Literal(String),
    /// The value of a header (the first of the names present); missing fails closed.
    Header(HeaderNames),
}

/// A signed timestamp and its replay window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampRule {
    /// Where the timestamp is.
    pub from: TimestampSource,
    /// How it is written.
    pub unit: TimestampUnit,
    /// Oldest accepted age; `None` accepts any age.
    #[serde(default)]
    pub max_age_seconds: Option<u64>,
    /// Furthest accepted distance into the future; `None` accepts any.
    #[serde(default)]
    pub max_future_seconds: Option<u64>,
}

/// Where a signed timestamp is found.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TimestampSource {
    /// A request header.
    Header(HeaderNames),
    /// A parameter of a [`SignatureFormat::KeyValueList`] header (Stripe's `t`).
    SignatureParam(String),
    /// A field inside the signed JSON body (Linear's `webhookTimestamp`); checked only
    /// after the signature verified.
    JsonPointer(String),
}

/// How a timestamp is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampUnit {
    /// Unix seconds.
    Seconds,
    /// Unix milliseconds.
    Milliseconds,
    /// An RFC 3339 date-time.
    Rfc3339,
}

/// Handshakes the ingress answers itself, after verification, without enqueueing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Handshake {
    /// Slack Events API `{"type":"url_verification","challenge":…}`: echo the challenge.
    SlackUrlVerification,
    /// Discord interactions `{"type":1}` (PING): answer `{"type":1}` (PONG).
    DiscordPing,
}

const ID_ALPHABET: &str = "lowercase letters, digits and '-'";

impl Provider {
    /// Validates a built-in entry: [`Provider::check`] plus the id equals the file name.
    fn validate(&self, file: &str) -> Result<(), CatalogError> {
        let stem = file.strip_suffix(".toml").unwrap_or(file);
        if stem != self.id {
            return Err(CatalogError::Invalid {
                file: file.to_owned(),
                field: "id".to_owned(),
                message: format!("`{}` must equal the file name `{stem}`", self.id),
            });
        }
        self.check(file)
    }

    /// The rules every entry meets, built-in or overlay.
    fn check(&self, file: &str) -> Result<(), CatalogError> {
        let invalid = |field: &str, message: String| CatalogError::Invalid {
            file: file.to_owned(),
            field: field.to_owned(),
            message,
        };
        let id_ok = !self.id.is_empty()
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !id_ok {
            return Err(invalid("id", format!("must be {ID_ALPHABET}")));
        }
        if !self.docs.starts_with("https://") {
            return Err(invalid("docs", "must be an https:// link".to_owned()));
        }
        if let Some(oauth) = &self.oauth {
            oauth
                .check()
                .map_err(|(field, message)| invalid(&field, message))?;
        }
        if let Some(webhook) = &self.webhook {
            webhook
                .verification
                .validate()
                .map_err(|(field, message)| {
                    invalid(&format!("webhook.verification.{field}"), message)
                })?;
        }
        Ok(())
    }
}

impl Verification {
    /// Rules the types cannot express; returns the field (relative to `verification`).
    fn validate(&self) -> Result<(), (String, String)> {
        let err = |field: &str, message: &str| Err((field.to_owned(), message.to_owned()));
        if self.signed.is_empty() {
            return err("signed", "must list at least one part");
        }
        for (index, part) in self.signed.iter().enumerate() {
            let field = format!("signed[{index}]");
            match part {
                SignedPart::Timestamp => match &self.timestamp {
                    None => return Err((field, "`timestamp` needs a `timestamp` rule".into())),
                    Some(rule) if matches!(rule.from, TimestampSource::JsonPointer(_)) => {
                        return Err((
                            field,
                            "a timestamp read from the body cannot be a signed part".into(),
                        ));
                    }
                    Some(_) => {}
                },
                SignedPart::Secret if self.scheme != Scheme::Sha256 => {
                    return Err((
                        field,
                        "`secret` is only allowed in the sha256 scheme".into(),
                    ));
                }
                SignedPart::Literal(text) if text.is_empty() => {
                    return Err((field, "a literal must not be empty".into()));
                }
                _ => {}
            }
        }
        if self.scheme == Scheme::Sha256
            && !self.signed.iter().any(|p| matches!(p, SignedPart::Secret))
        {
            return err("signed", "the sha256 scheme must include the `secret` part");
        }
        if let Some(rule) = &self.timestamp {
            if let TimestampSource::SignatureParam(_) = rule.from
                && !matches!(self.signature, SignatureFormat::KeyValueList { .. })
            {
                return err(
                    "timestamp.from",
                    "`signature_param` needs a `key_value_list` signature",
                );
            }
            if rule.max_age_seconds.is_none() && rule.max_future_seconds.is_none() {
                return err(
                    "timestamp",
                    "set `max_age_seconds` and/or `max_future_seconds`; a window of none protects nothing",
                );
            }
        }
        if self.scheme == Scheme::Ed25519 && self.secret_encoding == SecretEncoding::Utf8 {
            return err(
                "secret_encoding",
                "an Ed25519 public key must be hex or base64",
            );
        }
        for escape in &self.url_decoded_escapes {
            let bytes = escape.as_bytes();
            let ok = bytes.len() == 3
                && bytes[0] == b'%'
                && bytes[1..].iter().all(u8::is_ascii_hexdigit);
            if !ok {
                return err("url_decoded_escapes", "each entry must look like `%3A`");
            }
        }
        match &self.signature {
            SignatureFormat::KeyValueList {
                pair_separator,
                key,
                ..
            } if pair_separator.is_empty() || key.is_empty() => {
                err("signature", "`pair_separator` and `key` must not be empty")
            }
            SignatureFormat::VersionedList {
                entry_separator,
                version,
                version_separator,
                ..
            } if entry_separator.is_empty()
                || version.is_empty()
                || version_separator.is_empty() =>
            {
                err("signature", "separators and `version` must not be empty")
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
id = "acme"
name = "Acme"
docs = "https://acme.example/webhooks"

[webhook.verification]
scheme = "hmac-sha256"
signature = { format = "single", header = "X-Acme-Signature", encoding = "hex" }
signed = ["body"]
"#;

    #[test]
    fn embedded_catalog_is_valid_and_has_the_first_providers() {
        let catalog = Catalog::embedded().expect("the embedded catalog must validate");
        for id in [
            "stripe",
            "github",
            "slack",
            "shopify",
            "standard-webhooks",
            "hubspot",
            "twilio",
            "square",
            "linear",
            "discord",
        ] {
            let provider = catalog.get(id).unwrap_or_else(|| panic!("{id} missing"));
            assert!(provider.webhook.is_some(), "{id} has no webhook spec");
        }
    }

    #[test]
    fn minimal_file_parses() {
        let catalog = Catalog::from_files(&[("acme.toml", MINIMAL)]).expect("valid");
        assert_eq!(catalog.get("acme").map(|p| p.name.as_str()), Some("Acme"));
    }

    #[test]
    fn unknown_scheme_names_the_file_and_the_field() {
        let text = MINIMAL.replace("hmac-sha256", "hmac-md5");
        let err = Catalog::from_files(&[("acme.toml", &text)]).expect_err("must fail");
        let message = err.to_string();
        assert!(message.contains("acme.toml"), "{message}");
        assert!(message.contains("scheme"), "{message}");
        assert!(message.contains("hmac-md5"), "{message}");
    }

    #[test]
    fn missing_parameter_names_the_file_and_the_field() {
        let text = MINIMAL.replace(", encoding = \"hex\"", "");
        let err = Catalog::from_files(&[("acme.toml", &text)]).expect_err("must fail");
        let message = err.to_string();
        assert!(message.contains("acme.toml"), "{message}");
        assert!(message.contains("missing field `encoding`"), "{message}");
    }

    #[test]
    fn oauth_sections_are_checked_and_faults_named() {
        let oauth = r#"
[oauth]
authorize_url = "https://{shop}/admin/oauth/authorize"
token_url = "https://{shop}/admin/oauth/access_token"
pkce = false
client_auth = "client_secret_post"
lifetime_margin_seconds = 300
refresh_token_rotation = true
revocation = { style = "none", reason = "none offered" }

[oauth.url_parameters.shop]
pattern = "^[a-z0-9-]+\\.myshopify\\.com$"
description = "the shop"
"#;
        let valid = format!("{MINIMAL}{oauth}");
        Catalog::from_files(&[("acme.toml", &valid)]).expect("valid oauth section");
        for (broken, field, message) in [
            (
                valid.replace("^[a-z0-9-]+", "[a-z0-9-]+"),
                "oauth.url_parameters.shop.pattern",
                "anchored",
            ),
            (
                valid.replace("https://{shop}/admin/oauth/access_token", "http://{shop}/t"),
                "oauth.token_url",
                "https://",
            ),
            (
                valid.replace(
                    "https://{shop}/admin/oauth/authorize",
                    "https://{region}.example.com/a",
                ),
                "oauth.authorize_url",
                "{region}",
            ),
            (
                valid.replace(
                    "style = \"none\", reason = \"none offered\"",
                    "style = \"rfc7009\"",
                ),
                "url",
                "missing field",
            ),
            (
                valid.replace("client_secret_post", "client_secret_jwt"),
                "client_auth",
                "unknown variant",
            ),
        ] {
            let err = Catalog::from_files(&[("acme.toml", &broken)]).expect_err(field);
            let text = err.to_string();
            assert!(
                text.contains("acme.toml") && text.contains(field) && text.contains(message),
                "{field}: {text}"
            );
        }
    }

    #[test]
    fn an_overlay_adds_and_replaces_providers_with_the_same_rules() {
        let base = Catalog::embedded().expect("catalog");
        let overlay = format!(
            "[[provider]]\n{}\n[[provider]]\n{}",
            MINIMAL.replace("\n[webhook", "\n[provider.webhook"),
            "id = \"stripe\"\nname = \"Stripe (overridden)\"\ndocs = \"https://docs.stripe.com\"\n"
        );
        let merged = base
            .with_overlay("junction/catalog/overlay", &overlay)
            .expect("valid overlay");
        assert!(merged.get("acme").is_some(), "added");
        assert_eq!(
            merged.get("stripe").map(|p| p.name.as_str()),
            Some("Stripe (overridden)")
        );
        assert!(merged.get("github").is_some(), "the rest stays");
        let broken = overlay.replace("hmac-sha256", "hmac-md5");
        let err = base
            .with_overlay("junction/catalog/overlay", &broken)
            .expect_err("bad scheme");
        let text = err.to_string();
        assert!(
            text.contains("junction/catalog/overlay")
                && text.contains("(acme)")
                && text.contains("hmac-md5"),
            "{text}"
        );
        let err = base
            .with_overlay(
                "o",
                "[[provider]]\nid = \"x\"\nname = \"X\"\ndocs = \"http://x\"\n",
            )
            .expect_err("http docs");
        assert!(err.to_string().contains("field `docs`"), "{err}");
    }

    #[test]
    fn unknown_field_is_rejected() {
        let text = MINIMAL.replace("signed = [", "tolerance = 300\nsigned = [");
        let err = Catalog::from_files(&[("acme.toml", &text)]).expect_err("must fail");
        let message = err.to_string();
        assert!(
            message.contains("acme.toml") && message.contains("tolerance"),
            "{message}"
        );
    }

    #[test]
    fn duplicate_provider_names_both_files_and_the_id_field() {
        let copy = MINIMAL.replace("name = \"Acme\"", "name = \"Acme again\"");
        let err = Catalog::from_files(&[("acme.toml", MINIMAL), ("acme.toml", &copy)])
            .expect_err("must fail");
        assert_eq!(
            err,
            CatalogError::Duplicate {
                file: "acme.toml".into(),
                id: "acme".into(),
                first_file: "acme.toml".into()
            }
        );
        assert!(err.to_string().contains("field `id`"));
    }

    #[test]
    fn id_must_match_the_file_name() {
        let err = Catalog::from_files(&[("other.toml", MINIMAL)]).expect_err("must fail");
        assert!(
            matches!(err, CatalogError::Invalid { ref field, .. } if field == "id"),
            "{err}"
        );
    }

    #[test]
    fn signed_timestamp_without_a_rule_is_invalid() {
        let text = MINIMAL.replace("signed = [\"body\"]", "signed = [\"timestamp\", \"body\"]");
        let err = Catalog::from_files(&[("acme.toml", &text)]).expect_err("must fail");
        assert_eq!(
            err.to_string(),
            "catalog file acme.toml: field `webhook.verification.signed[0]`: `timestamp` needs a `timestamp` rule"
        );
    }

    #[test]
    fn a_window_of_none_is_invalid() {
        let text = format!(
            "{MINIMAL}timestamp = {{ from = {{ header = \"X-Ts\" }}, unit = \"seconds\" }}\n"
        );
        let err = Catalog::from_files(&[("acme.toml", &text)]).expect_err("must fail");
        assert!(
            err.to_string().contains("webhook.verification.timestamp"),
            "{err}"
        );
    }

    #[test]
    fn header_alternatives_parse() {
        let text = MINIMAL.replace(
            "\"X-Acme-Signature\"",
            "[\"webhook-signature\", \"svix-signature\"]",
        );
        let catalog = Catalog::from_files(&[("acme.toml", &text)]).expect("valid");
        let provider = catalog.get("acme").expect("acme");
        let names = provider
            .webhook
            .as_ref()
            .map(|w| w.verification.signature.header().names().to_vec());
        assert_eq!(
            names,
            Some(vec![
                "webhook-signature".to_owned(),
                "svix-signature".to_owned()
            ])
        );
    }
}
