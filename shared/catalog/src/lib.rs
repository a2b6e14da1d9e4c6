//! The provider catalog: every provider Junction knows, as data.
//!
//! One TOML file per provider lives in `shared/catalog/providers/`; `build.rs` embeds them all at
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

mod api;
mod contract;
mod endpoint;
mod oauth;
mod oauth1;
mod pagination;
mod pasted_credential;
mod polling;
mod subscription;

pub use api::{
    ACCOUNT_PLACEHOLDER, ApiSpec, Credential, ErrorRule, FailureClass, RateLimitScope,
    RateLimitSpec,
};
pub use contract::{CONTRACT_READS, ContractRead, ContractStep, contract_reads, version_dir};
pub use endpoint::{EndpointError, EndpointRules, LOOPBACK_TEST_SETTING, is_internal_address};
pub use oauth::{AccountPagination, AccountRequest, CallbackAccount};
pub use oauth::{
    CallbackSignature, ClientAuth, DiscoverySpec, OAuthSpec, OpenIdRule, Revocation, RevokedToken,
    TokenRequestFormat, UrlParameter, placeholders,
};
pub use oauth1::{ApiAuth, OAuth1Revocation, OAuth1Spec, SignatureMethod};
pub use pagination::{MAX_PAGE_SIZE, PaginationSpec};
pub use pasted_credential::{MAX_PASTED_CREDENTIAL_BYTES, PastedCredentialSpec};
pub use polling::{MIN_INTERVAL_SECONDS, POLLERS, PollModel, PollingSpec};
pub use subscription::{
    ExpiryFormat, ExpirySource, LifecycleAction, LifecycleSpec, SUBSCRIPTION_PLACEHOLDERS,
    SubscriptionMethod, SubscriptionRequest, SubscriptionSpec,
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
    /// The endpoints this catalog's entries (and overlays applied to it) may name, and
    /// that values filled into its URL templates may produce.
    endpoints: EndpointRules,
}

impl Catalog {
    /// The catalog compiled into this binary, parsed and validated on first use.
    pub fn embedded() -> Result<&'static Catalog, CatalogError> {
        static CATALOG: OnceLock<Result<Catalog, CatalogError>> = OnceLock::new();
        CATALOG
            .get_or_init(|| {
                Catalog::parse(embedded::FILES, EndpointRules::Public, |text| {
                    serde_json::from_str(text).map_err(|err| err.to_string())
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Parses and validates `(file name, TOML text)` pairs; their endpoints must be
    /// public ([`EndpointRules::Public`]).
    pub fn from_files(files: &[(&str, &str)]) -> Result<Catalog, CatalogError> {
        Catalog::from_files_with_rules(files, EndpointRules::Public)
    }

    /// [`Catalog::from_files`] under other endpoint rules: tests whose providers listen on
    /// loopback use [`EndpointRules::LoopbackHttpForTests`].
    pub fn from_files_with_rules(
        files: &[(&str, &str)],
        endpoints: EndpointRules,
    ) -> Result<Catalog, CatalogError> {
        Catalog::parse(files, endpoints, |text| {
            toml::from_str(text).map_err(|err| err.to_string())
        })
    }

    /// Parses each file with `parse` (TOML, or the JSON the build made of the embedded
    /// files), then checks the whole.
    fn parse(
        files: &[(&str, &str)],
        endpoints: EndpointRules,
        parse: impl Fn(&str) -> Result<Provider, String>,
    ) -> Result<Catalog, CatalogError> {
        let mut parsed: Vec<(String, Provider)> = Vec::new();
        let mut origin: BTreeMap<String, String> = BTreeMap::new();
        for (file, text) in files {
            let provider = parse(text).map_err(|detail| CatalogError::Parse {
                file: (*file).to_owned(),
                detail: detail.trim_end().to_owned(),
            })?;
            if let Some(first_file) = origin.get(&provider.id) {
                return Err(CatalogError::Duplicate {
                    file: (*file).to_owned(),
                    id: provider.id.clone(),
                    first_file: first_file.clone(),
                });
            }
            origin.insert(provider.id.clone(), (*file).to_owned());
            parsed.push(((*file).to_owned(), provider));
        }
        let declared: BTreeMap<String, Provider> = parsed
            .iter()
            .map(|(_, provider)| (provider.id.clone(), provider.clone()))
            .collect();
        let mut providers = BTreeMap::new();
        for (file, mut provider) in parsed {
            provider.inherit_verification(&declared, &file)?;
            provider.validate(&file, endpoints)?;
            providers.insert(provider.id.clone(), provider);
        }
        Ok(Catalog {
            providers,
            endpoints,
        })
    }

    /// This catalog, with `rules` for the endpoints of overlays applied to it and of
    /// URLs filled from its templates. Only tests and the local stack ask for
    /// [`EndpointRules::LoopbackHttpForTests`].
    pub fn with_endpoint_rules(&self, rules: EndpointRules) -> Catalog {
        Catalog {
            providers: self.providers.clone(),
            endpoints: rules,
        }
    }

    /// The endpoints this catalog allows ([`EndpointRules`]).
    pub fn endpoint_rules(&self) -> EndpointRules {
        self.endpoints
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
        let mut parsed = Vec::new();
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
            if let Some(first) = seen.insert(provider.id.clone(), label.clone()) {
                return Err(CatalogError::Duplicate {
                    file: label,
                    id: provider.id,
                    first_file: first,
                });
            }
            parsed.push((label, provider));
        }
        let mut declared = self.providers.clone();
        declared.extend(
            parsed
                .iter()
                .map(|(_, provider)| (provider.id.clone(), provider.clone())),
        );
        let mut providers = self.providers.clone();
        for (label, mut provider) in parsed {
            provider.inherit_verification(&declared, &label)?;
            provider.check(&label, self.endpoints)?;
            providers.insert(provider.id.clone(), provider);
        }
        Ok(Catalog {
            providers,
            endpoints: self.endpoints,
        })
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
    /// How accounts are connected when the provider publishes OAuth / OpenID Connect
    /// metadata: its issuer alone (instead of `[oauth]`).
    #[serde(default)]
    pub oauth_discovery: Option<DiscoverySpec>,
    /// How accounts are connected with OAuth 1.0a (instead of `[oauth]`).
    #[serde(default)]
    pub oauth1: Option<OAuth1Spec>,
    /// How accounts are connected with a credential the user pastes (Telegram's bot
    /// token), instead of any OAuth section.
    #[serde(default)]
    pub pasted_credential: Option<PastedCredentialSpec>,
    /// How the provider's API answers (error rules for the outbound client).
    #[serde(default)]
    pub api: Option<ApiSpec>,
    /// What is polled for each connection (needs `[api]` with a `base_url`).
    #[serde(default)]
    pub polling: Option<PollingSpec>,
    /// How the provider's list endpoints continue on the next page (cursor, offset,
    /// `Link` header, page token): read by the pollers and the proxy's `paginate`.
    #[serde(default)]
    pub pagination: Option<PaginationSpec>,
    /// How a connect learns the connection's provider account when the token response
    /// does not name it: one authenticated request with the fresh access token (Gmail's
    /// profile, GitHub's installations the user can access). Needs `[oauth]` or
    /// `[oauth_discovery]`.
    #[serde(default)]
    pub account_request: Option<AccountRequest>,
    /// A push subscription Junction creates per connection and renews before it
    /// expires (Gmail `users.watch`, Graph `/subscriptions`). Needs `[api]` with a
    /// `base_url` and `[oauth]` or `[oauth_discovery]`.
    #[serde(default)]
    pub subscription: Option<SubscriptionSpec>,
}

/// How to verify, acknowledge and identify one provider's webhook deliveries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// How the signature is checked. Required unless `unverifiable` gives the reason
    /// the provider cannot be verified (the catalog test enforces exactly one of them).
    #[serde(default)]
    pub verification: Option<Verification>,
    /// Verify exactly as this other catalog provider does (`standard-webhooks`,
    /// `github`): an in-house sender that copied a well-known scheme needs no scheme of
    /// its own. Resolved when the catalog loads; the named entry must have its own
    /// `verification`.
    #[serde(default)]
    pub verification_from: Option<String>,
    /// Why this provider's deliveries cannot be authenticated at all. The ingress
    /// refuses them (fails closed); the entry documents the gap.
    #[serde(default)]
    pub unverifiable: Option<String>,
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
    /// Where the delivery names the provider account it is about (HubSpot `portalId`,
    /// Slack `team_id`, Shopify's shop domain, Stripe `account`, a GitHub installation
    /// id): copied onto the queue message as the `account` attribute, so the consumer
    /// can find the connection.
    #[serde(default)]
    pub account: Option<FieldSource>,
    /// The answer to an accepted (verified and enqueued) delivery; an empty 200 when
    /// absent. Adyen wants `[accepted]`, Microsoft Graph 202, Salesforce a SOAP ack.
    #[serde(default)]
    pub ack: Option<Ack>,
    /// Request headers the consumers need, copied onto the queue message (never the
    /// signature headers). `Content-Type` is always copied.
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// What every genuine delivery's body is; anything else is refused with 401 once
    /// verified, never enqueued. Required to be `json_object` beside a handshake that
    /// signs what a caller chooses ([`Handshake::signs_caller_input`]): its answers are
    /// valid signatures of the chosen text, which must never pass for a delivery.
    #[serde(default)]
    pub body: BodyShape,
}

/// The shape of a provider's delivery bodies ([`WebhookSpec::body`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyShape {
    /// Any bytes the signature covers.
    #[default]
    Any,
    /// A JSON object (`{…}`, optionally after whitespace), well-formed to the end.
    JsonObject,
}

/// A value read from the request after verification: `{ header = … }` or
/// `{ json_pointer = … }`, optionally with a decoding step (`decode = "base64_json"`,
/// `decoded_pointer = …`: the value found is base64 of a JSON document, and the field is
/// at `decoded_pointer` inside it, as in a Pub/Sub push's `message.data`) and
/// `lowercase = true` (for identifiers compared without case, such as email addresses).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "FieldSourceTable")]
pub struct FieldSource {
    /// Where the value is in the request.
    pub location: FieldLocation,
    /// A JSON document encoded in that value, and the field read from it.
    pub decoded: Option<DecodedField>,
    /// The value is lowercased (ASCII and Unicode) before use.
    pub lowercase: bool,
}

/// Where a [`FieldSource`] is in the request.
#[derive(Debug, Clone)]
pub enum FieldLocation {
    /// The first of these headers present.
    Header(HeaderNames),
    /// A JSON pointer (RFC 6901) into the body; strings and numbers are accepted.
    JsonPointer(String),
}

/// The field read from a JSON document carried encoded in a request value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedField {
    /// How the document is encoded.
    pub encoding: FieldEncoding,
    /// A JSON pointer into the decoded document; strings and numbers are accepted.
    pub pointer: String,
}

/// How a JSON document is encoded inside a request value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldEncoding {
    /// Base64 (RFC 4648 §4, padded or not; Pub/Sub push `message.data`) of a JSON document.
    Base64Json,
}

/// [`FieldSource`] as written in a catalog file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldSourceTable {
    #[serde(default)]
    header: Option<HeaderNames>,
    #[serde(default)]
    json_pointer: Option<String>,
    #[serde(default)]
    decode: Option<FieldEncoding>,
    #[serde(default)]
    decoded_pointer: Option<String>,
    #[serde(default)]
    lowercase: bool,
}

impl TryFrom<FieldSourceTable> for FieldSource {
    type Error = String;

    fn try_from(table: FieldSourceTable) -> Result<Self, String> {
        let location = match (table.header, table.json_pointer) {
            (Some(names), None) => FieldLocation::Header(names),
            (None, Some(pointer)) => FieldLocation::JsonPointer(pointer),
            _ => return Err("exactly one of `header` and `json_pointer` is required".to_owned()),
        };
        let decoded = match (table.decode, table.decoded_pointer) {
            (Some(encoding), Some(pointer)) if pointer.starts_with('/') => {
                Some(DecodedField { encoding, pointer })
            }
            (Some(_), Some(_)) => {
                return Err("`decoded_pointer` must be a JSON pointer starting with /".to_owned());
            }
            (None, None) => None,
            _ => return Err("`decode` and `decoded_pointer` go together".to_owned()),
        };
        Ok(FieldSource {
            location,
            decoded,
            lowercase: table.lowercase,
        })
    }
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

/// The response to an accepted delivery.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// A 2xx status.
    pub status: u16,
    /// The response's content type, when it has a body.
    #[serde(default)]
    pub content_type: Option<String>,
    /// The exact response body.
    #[serde(default)]
    pub body: String,
}

/// What a verified signature vouches for. Schemes that leave (part of) the body
/// unauthenticated must say so, and the catalog test checks the claim against the
/// signed parts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Coverage {
    /// Every byte of the body is signed (directly, as sorted form parameters, or via a
    /// signed body hash).
    #[default]
    Body,
    /// Only some fields are signed (Mailgun's `signature` object, Adyen's eight fields);
    /// the rest of the body could be altered by anyone who saw a delivery.
    Partial,
    /// Nothing in the body is signed: a shared token proves only that the sender knows
    /// it (GitLab `X-Gitlab-Token`, Microsoft Graph `clientState`, Okta, Salesforce).
    None,
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
    /// The replay window stated outright where there is no `timestamp` rule: required
    /// then (except for the `jwt` scheme, whose window is the token's own `exp` or
    /// `jwt.max_age_seconds`), refused beside one. An entry never has no window by
    /// omission.
    #[serde(default)]
    pub replay_window: Option<ReplayWindow>,
    /// Percent-escapes decoded in the URL before it is signed (HubSpot v3 decodes
    /// `%3A %2F %3F %40 %21 %24 %27 %28 %29 %2A %2C %3B`; its SDKs do not).
    #[serde(default)]
    pub url_decoded_escapes: Vec<String>,
    /// A query parameter that must carry the hex SHA-256 of the body whenever the body
    /// is not a signed form (Twilio's `bodySHA256` for JSON bodies). Verification fails
    /// closed when it is missing, so an unsigned body is never accepted.
    #[serde(default)]
    pub body_hash_query_param: Option<String>,
    /// Headers that must be present with exactly these values (Box's
    /// `box-signature-version = "1"`); a different value fails closed.
    #[serde(default)]
    pub required_headers: BTreeMap<String, String>,
    /// What the signature vouches for; `body` unless set. Anything else needs
    /// `coverage_note`.
    #[serde(default)]
    pub coverage: Coverage,
    /// What is and is not authenticated, in a sentence (README's provider table).
    #[serde(default)]
    pub coverage_note: Option<String>,
    /// The JWT rule of the `jwt` scheme.
    #[serde(default)]
    pub jwt: Option<JwtRule>,
    /// Also accept a signature over the body with its non-ASCII characters escaped as
    /// `\uXXXX` (and backslashes doubled), as Box's official SDKs do when the plain body
    /// does not verify. Box only.
    #[serde(default)]
    pub escaped_body_retry: bool,
    /// Also accept a signature over the URL with its port written the other way: the
    /// scheme's default port (443 for https, 80 for http) added when the URL has none,
    /// its port removed when it has one, as Twilio's SDKs do (Twilio signs either form).
    /// Needs `url` in `signed`. Twilio only.
    #[serde(default)]
    pub url_port_retry: bool,
    /// The HMAC the request names for itself in a header, instead of always `scheme`
    /// (Twilio's SharedKey signing: `X-Twilio-Webhooks-Signature-Settings:
    /// key=<id>,algorithm=HMAC_SHA256`). Without the header, or without the parameter in
    /// it, `scheme` applies; a value not listed fails closed.
    #[serde(default)]
    pub scheme_from: Option<SchemeFromHeader>,
    /// Where the `jwt` scheme's keys come from: a public JSON Web Key Set (the default),
    /// or Plaid's credentialed key endpoint.
    #[serde(default)]
    pub jwt_keys: JwtKeys,
}

/// How `jwt.jwks_url` is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JwtKeys {
    /// `GET` a public JSON Web Key Set, cached per its max-age (Google).
    #[default]
    JwkSet,
    /// Plaid's `POST /webhook_verification_key/get`
    /// (<https://plaid.com/docs/api/webhooks/webhook-verification/>): the body
    /// `{"client_id","secret","key_id"}` with the API credentials configured as the
    /// webhook secret's first `"<client_id>:<secret>"` signing secret, answered
    /// `{"key": <JWK with created_at and expired_at>, "request_id"}`. One key per `kid`,
    /// cached; a key with a non-null `expired_at` verifies nothing.
    PlaidVerificationKey,
}

/// Where a request names its own HMAC ([`Verification::scheme_from`]): a `name=value`
/// parameter of a header. The signed bytes, the key and the signature's place stay the
/// entry's; only the hash changes, and only between HMAC schemes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemeFromHeader {
    /// The header carrying the parameter.
    pub header: HeaderNames,
    /// The separator between its `name=value` pairs.
    pub pair_separator: String,
    /// The pair naming the algorithm (the first one with a value counts).
    pub param: String,
    /// The accepted values, compared ignoring ASCII case, and the scheme each names.
    pub values: BTreeMap<String, Scheme>,
}

/// How a JWT-authenticated delivery is checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtRule {
    /// The only accepted `alg` (a token naming another is refused).
    pub algorithm: JwtAlgorithm,
    /// The provider's JSON Web Key Set (https), fetched with a timeout and cached
    /// (Cache-Control max-age, else an hour); re-read at most once a minute when a
    /// token names an unknown `kid`. With `jwt_keys = "plaid_verification_key"`, Plaid's
    /// key endpoint instead.
    pub jwks_url: String,
    /// Accepted `iss` values; empty accepts any.
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Claims that must equal the value configured in the webhook secret's
    /// `jwt_claims` (`aud`, `email`); a claim holding an array matches when any element
    /// does.
    #[serde(default)]
    pub configured_claims: Vec<String>,
    /// Claims that must be JSON `true` (`email_verified`).
    #[serde(default)]
    pub true_claims: Vec<String>,
    /// The oldest accepted `iat`, when set: `iat` is then required, and `exp` is
    /// enforced when present (Plaid's tokens are bounded by `iat` alone). Without it,
    /// `exp` is required and enforced.
    #[serde(default)]
    pub max_age_seconds: Option<u64>,
    /// A claim carrying the hex SHA-256 of the body (Plaid's `request_body_sha256`).
    #[serde(default)]
    pub body_hash_claim: Option<String>,
}

/// The JWS algorithms Junction verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum JwtAlgorithm {
    RS256,
    ES256,
}

impl JwtAlgorithm {
    /// The algorithm a JOSE `alg` name stands for, if Junction verifies it.
    pub fn from_name(name: &str) -> Option<JwtAlgorithm> {
        match name {
            "RS256" => Some(JwtAlgorithm::RS256),
            "ES256" => Some(JwtAlgorithm::ES256),
            _ => None,
        }
    }

    /// The JOSE `alg` name.
    pub fn name(self) -> &'static str {
        match self {
            JwtAlgorithm::RS256 => "RS256",
            JwtAlgorithm::ES256 => "ES256",
        }
    }
}

/// The primitive a signature is made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// HMAC-SHA256 keyed with the secret.
    HmacSha256,
    /// HMAC-SHA1 keyed with the secret (Twilio, Intercom, Vercel).
    HmacSha1,
    /// HMAC-SHA512 keyed with the secret (for overlay entries of in-house senders).
    HmacSha512,
    /// A plain SHA-256 digest whose input includes the secret as a [`SignedPart::Secret`]
    /// (HubSpot v1/v2).
    Sha256,
    /// An Ed25519 signature; the configured "secret" is the provider's public key.
    Ed25519,
    /// An ECDSA P-256 / SHA-256 signature, DER-encoded (SendGrid); the configured
    /// "secret" is the provider's public key as base64 SubjectPublicKeyInfo DER.
    EcdsaP256,
    /// A JWT in a header, verified with keys fetched from `jwt.jwks_url` (cached), its
    /// claims checked per the `jwt` rule (Gmail's Pub/Sub push, RS256).
    Jwt,
    /// No signature: the request carries the shared secret itself (GitLab's
    /// `X-Gitlab-Token`, Microsoft Graph `clientState`), compared in constant time.
    /// `signed` must be empty and `coverage` must be `none`.
    Token,
    /// HTTP Basic authentication (RFC 7617) on the delivery: the provider sends
    /// `Authorization: Basic base64(user:password)` with credentials the operator chose
    /// when registering the webhook (Pipedrive's `http_auth_user` and
    /// `http_auth_password`). The configured secret is `user:password`; the decoded
    /// credentials are compared with it in constant time. The scheme name `Basic` is
    /// matched ignoring case, as HTTP authentication schemes are (RFC 7617 §2). Like [`Scheme::Token`] it
    /// signs nothing: `signed` must be empty, `coverage` must be `none`, and the
    /// signature must be a `single` header with the prefix `Basic ` and `base64`
    /// encoding.
    BasicAuth,
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
    /// Uppercase hex, and only uppercase (Exact Online's `HashCode`, which its clients
    /// compare with `strtoupper(hash_hmac(…))`); lowercase is refused as [`Self::Hex`]
    /// refuses uppercase.
    HexUpper,
    /// The value's bytes as sent (shared tokens).
    Text,
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
    /// One signature in each of several headers, every present one a candidate: Box's
    /// `box-signature-primary` and `-secondary`, DocuSign's `X-DocuSign-Signature-1…N`
    /// (`numbered = true`: the header names are `<header>1`, `<header>2`, … up to 100).
    EachHeader {
        header: HeaderNames,
        #[serde(default)]
        numbered: bool,
        encoding: SignatureEncoding,
    },
    /// The signature is a value inside the JSON body (Mailgun's
    /// `/signature/signature`).
    JsonPointer {
        pointer: String,
        encoding: SignatureEncoding,
    },
    /// Every element of the JSON array at `items` carries its own signature at
    /// `signature` (a pointer relative to the element), over signed parts whose JSON
    /// pointers are relative to the element too; every element must verify. Adyen's
    /// `notificationItems[i].NotificationRequestItem`, Microsoft Graph's
    /// `value[i].clientState`.
    PerItem {
        items: String,
        signature: String,
        encoding: SignatureEncoding,
    },
    /// A token in the text of the first XML element with this local name (Salesforce
    /// outbound messages' `OrganizationId`); only for the `token` scheme.
    XmlElement { element: String },
}

impl SignatureFormat {
    /// The header(s) holding the signature; `None` when it is in the body.
    pub fn header(&self) -> Option<&HeaderNames> {
        match self {
            SignatureFormat::Single { header, .. }
            | SignatureFormat::KeyValueList { header, .. }
            | SignatureFormat::VersionedList { header, .. }
            | SignatureFormat::EachHeader { header, .. } => Some(header),
            SignatureFormat::JsonPointer { .. }
            | SignatureFormat::PerItem { .. }
            | SignatureFormat::XmlElement { .. } => None,
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
    /// A string or number in the JSON body (relative to the item for `per_item`
    /// signatures); a missing value counts as empty (Adyen's rule).
    JsonPointer(String),
    /// The exact bytes of the value of a top-level member of the JSON body, as received
    /// (Exact Online signs its `Content` object as sent, between `{"Content":` and
    /// `,"HashCode":`). The body must be a JSON object with exactly one member of that
    /// name, and no top-level members but the raw members and an in-body signature, so
    /// every value but the signature's is signed; anything else fails closed. Names the
    /// member, not a pointer.
    JsonRawMember(String),
    /// The raw value of a parameter of a `key_value_list` signature header (Hook0's
    /// `h`, the space-separated names of the signed headers); it may be empty, but a
    /// header without it fails closed.
    SignatureParam(String),
    /// The values of the request headers named (space-separated) in that signature
    /// parameter, in its order, joined by `separator` (Hook0: `.`); a named header that
    /// is missing fails closed.
    HeadersNamedIn { param: String, separator: String },
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

/// An entry's replay window when it has no [`TimestampRule`] (the windows with one,
/// past-only or symmetric, are that rule's `max_age_seconds` and `max_future_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayWindow {
    /// None: the provider sends no signed timestamp, or signs one it documents no bound
    /// for (Zoom, Zendesk, Discord). A captured delivery verifies for ever; the
    /// idempotency key (the provider's event id, or the body hash) absorbs replays.
    None,
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

/// Handshakes and challenges the ingress answers itself; a handshake is never
/// enqueued. [`Handshake::before_verification`] says which run on an unsigned request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Handshake {
    /// Slack Events API `{"type":"url_verification","challenge":…}` (signed): echo the
    /// challenge as text/plain.
    SlackUrlVerification,
    /// Discord interactions `{"type":1}` (PING, signed): answer `{"type":1}` (PONG).
    DiscordPing,
    /// Discord webhook events PING `{"type":0,…}` (signed): answer 204, no body.
    DiscordWebhookPing,
    /// Zoom `endpoint.url_validation` (signed): answer
    /// `{"plainToken":p,"encryptedToken":hex(HMAC-SHA256(secret, p))}`.
    ZoomUrlValidation,
    /// Twitch EventSub `Twitch-Eventsub-Message-Type: webhook_callback_verification`
    /// (signed): answer the raw `challenge` as text/plain.
    TwitchCallbackVerification,
    /// Xero intent-to-receive (signed, `"events":[]`): 200 with an empty body; a bad
    /// signature is a 401 like any other.
    XeroIntentToReceive,
    /// Okta event hook verification: a `GET` with `x-okta-verification-challenge`
    /// carrying the configured `Authorization` value (checked first): answer
    /// `{"verification":…}`.
    OktaVerification,
    /// Meta `GET ?hub.mode=subscribe&hub.verify_token=T&hub.challenge=C` (unsigned): C
    /// as text/plain when T equals the configured `verify_token`, 403 otherwise.
    MetaHubChallenge,
    /// Twitter/X CRC `GET ?crc_token=T` (unsigned): answer
    /// `{"response_token":"sha256=<base64 HMAC-SHA256(consumer secret, T)>"}`.
    TwitterCrc,
    /// Dropbox `GET ?challenge=X` (unsigned): X as text/plain with `nosniff`.
    DropboxChallenge,
    /// Microsoft Graph subscription validation `POST ?validationToken=…` (unsigned):
    /// the decoded token as text/plain.
    GraphValidationToken,
    /// Notion's setup `POST {"verification_token":"secret_…"}` (unsigned): the token
    /// becomes the signing secret if none is configured yet, where the operator reads it
    /// to paste into Notion; never enqueued, never logged.
    NotionVerificationToken,
    /// Asana's `POST` with `X-Hook-Secret` (unsigned): stored as the signing secret if
    /// none is configured yet, and echoed in the response's `X-Hook-Secret`.
    AsanaHookSecret,
}

impl Handshake {
    /// True when the handshake arrives unsigned and is answered before verification.
    pub fn before_verification(self) -> bool {
        matches!(
            self,
            Handshake::MetaHubChallenge
                | Handshake::TwitterCrc
                | Handshake::DropboxChallenge
                | Handshake::GraphValidationToken
                | Handshake::NotionVerificationToken
                | Handshake::AsanaHookSecret
        )
    }

    /// True when the ingress answers the handshake with a MAC, keyed with the delivery
    /// key, of text an unauthenticated caller chooses: X's CRC (`crc_token`). Such an
    /// answer is a valid delivery signature of that text, so the entry must say
    /// `body = "json_object"` and the token is never one. Zoom's `plainToken` is
    /// MACed too, but only from a verified request, and only when token-shaped (it can
    /// then never be Zoom's signed `v0:<timestamp>:<body>`). The other handshakes echo a
    /// value or answer a constant, and sign nothing.
    pub fn signs_caller_input(self) -> bool {
        self == Handshake::TwitterCrc
    }

    /// True when the handshake is a `GET` (the ingress refuses other `GET`s).
    pub fn is_get(self) -> bool {
        matches!(
            self,
            Handshake::MetaHubChallenge
                | Handshake::TwitterCrc
                | Handshake::DropboxChallenge
                | Handshake::OktaVerification
        )
    }
}

const ID_ALPHABET: &str = "lowercase letters, digits and '-'";

/// The prefix of an `Authorization` header carrying HTTP Basic credentials, as the
/// `basic-auth` scheme's signature format must name it (RFC 7617 §2).
pub const BASIC_AUTH_PREFIX: &str = "Basic ";

impl Provider {
    /// How its webhooks are verified, when it receives webhooks and they are verifiable.
    pub fn verification(&self) -> Option<&Verification> {
        self.webhook.as_ref()?.verification.as_ref()
    }

    /// Validates a built-in entry: [`Provider::check`] plus the id equals the file name.
    fn validate(&self, file: &str, endpoints: EndpointRules) -> Result<(), CatalogError> {
        let stem = file.strip_suffix(".toml").unwrap_or(file);
        if stem != self.id {
            return Err(CatalogError::Invalid {
                file: file.to_owned(),
                field: "id".to_owned(),
                message: format!("`{}` must equal the file name `{stem}`", self.id),
            });
        }
        self.check(file, endpoints)
    }

    /// Copies the verification of the provider named by `webhook.verification_from`
    /// (from `declared`, the entries being loaded and those already loaded).
    fn inherit_verification(
        &mut self,
        declared: &BTreeMap<String, Provider>,
        file: &str,
    ) -> Result<(), CatalogError> {
        let Some(webhook) = self.webhook.as_mut() else {
            return Ok(());
        };
        let Some(from) = webhook.verification_from.as_deref() else {
            return Ok(());
        };
        let invalid = |message: String| CatalogError::Invalid {
            file: file.to_owned(),
            field: "webhook.verification_from".to_owned(),
            message,
        };
        if webhook.verification.is_some() {
            return Err(invalid(
                "give either `verification` or `verification_from`, not both".to_owned(),
            ));
        }
        let source = declared
            .get(from)
            .ok_or_else(|| invalid(format!("no provider `{from}` in the catalog")))?;
        let verification = source.verification().cloned().ok_or_else(|| {
            invalid(format!(
                "provider `{from}` has no verification of its own to copy"
            ))
        })?;
        webhook.verification = Some(verification);
        Ok(())
    }

    /// The rules every entry meets, built-in or overlay.
    fn check(&self, file: &str, endpoints: EndpointRules) -> Result<(), CatalogError> {
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
                .check(endpoints)
                .map_err(|(field, message)| invalid(&field, message))?;
        }
        if let Some(oauth1) = &self.oauth1 {
            if self.oauth.is_some() || self.oauth_discovery.is_some() {
                return Err(invalid(
                    "oauth1",
                    "give one of [oauth], [oauth_discovery] and [oauth1]".to_owned(),
                ));
            }
            oauth1
                .check(endpoints)
                .map_err(|(field, message)| invalid(&field, message))?;
        }
        if let Some(api) = &self.api {
            api.check(endpoints)
                .map_err(|(field, message)| invalid(&field, message))?;
        }
        if let Some(pasted) = &self.pasted_credential {
            // One way to connect: a form and an OAuth grant would make two kinds of
            // connection of one provider, with different credentials in one vault slot.
            if self.oauth.is_some() || self.oauth_discovery.is_some() || self.oauth1.is_some() {
                return Err(invalid(
                    "pasted_credential",
                    "give [pasted_credential] or an OAuth section ([oauth], [oauth_discovery], [oauth1]), not both".to_owned(),
                ));
            }
            pasted
                .check(self.api.as_ref())
                .map_err(|(field, message)| invalid(&field, message))?;
        }
        if let Some(request) = &self.account_request {
            request
                .check(
                    endpoints,
                    self.oauth.as_ref(),
                    self.oauth_discovery.as_ref(),
                )
                .map_err(|(field, message)| invalid(&field, message))?;
        }
        if let Some(pagination) = &self.pagination {
            pagination
                .check()
                .map_err(|(field, message)| invalid(&field, message))?;
        }
        if let Some(subscription) = &self.subscription {
            let base_url = self.api.as_ref().and_then(|api| api.base_url.as_deref());
            subscription
                .check(base_url.is_some_and(|url| placeholders(url).next().is_none()))
                .map_err(|(field, message)| invalid(&field, message))?;
            if self.oauth.is_none() && self.oauth_discovery.is_none() {
                return Err(invalid(
                    "subscription",
                    "needs [oauth] or [oauth_discovery]: it is made with a connection's token"
                        .to_owned(),
                ));
            }
        }
        if let Some(polling) = &self.polling {
            polling
                .check()
                .map_err(|(field, message)| invalid(&field, message))?;
            if self
                .api
                .as_ref()
                .and_then(|api| api.base_url.as_ref())
                .is_none()
            {
                return Err(invalid(
                    "polling",
                    "needs [api] with a base_url to poll".to_owned(),
                ));
            }
            if self.oauth.is_none() && self.oauth_discovery.is_none() {
                return Err(invalid(
                    "polling",
                    "needs [oauth] or [oauth_discovery]: polls run on a connection's token"
                        .to_owned(),
                ));
            }
        }
        if let Some(discovery) = &self.oauth_discovery {
            if self.oauth.is_some() {
                return Err(invalid(
                    "oauth_discovery",
                    "give either [oauth] or [oauth_discovery], not both".to_owned(),
                ));
            }
            discovery
                .check(endpoints)
                .map_err(|(field, message)| invalid(&field, message))?;
        }
        if let Some(webhook) = &self.webhook {
            match (&webhook.verification, &webhook.unverifiable) {
                (Some(verification), None) => {
                    verification
                        .validate(endpoints)
                        .map_err(|(field, message)| {
                            invalid(&format!("webhook.verification.{field}"), message)
                        })?;
                    self.check_replay_window(verification).map_err(|message| {
                        invalid("webhook.verification.replay_window", message)
                    })?;
                }
                (None, Some(reason)) if reason.trim().len() >= 20 => {}
                (None, Some(_)) => {
                    return Err(invalid(
                        "webhook.unverifiable",
                        "give the reason in a sentence".to_owned(),
                    ));
                }
                (None, None) => {
                    return Err(invalid(
                        "webhook.verification",
                        "a webhook needs a verification scheme, or `unverifiable` with the reason"
                            .to_owned(),
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "webhook.unverifiable",
                        "a provider with a verification scheme is not unverifiable".to_owned(),
                    ));
                }
            }
            if let Some(ack) = &webhook.ack
                && !(200..300).contains(&ack.status)
            {
                return Err(invalid("webhook.ack.status", "must be 2xx".to_owned()));
            }
            if let Some(handshake) = webhook.handshake
                && handshake.signs_caller_input()
                && webhook.body != BodyShape::JsonObject
            {
                return Err(invalid(
                    "webhook.body",
                    "this handshake signs any token a caller sends with the key that signs deliveries: set `body = \"json_object\"` so no answer passes for a delivery".to_owned(),
                ));
            }
        }
        Ok(())
    }

    /// Every verified entry states its replay window: a `timestamp` rule, or
    /// `replay_window = "none"` (never both); JWTs carry theirs in the token.
    fn check_replay_window(&self, verification: &Verification) -> Result<(), String> {
        let id = &self.id;
        match (
            verification.scheme,
            &verification.timestamp,
            verification.replay_window,
        ) {
            (Scheme::Jwt, _, Some(_)) => Err(format!(
                "provider `{id}`: a JWT's window is its own `exp` (or `jwt.max_age_seconds`); remove `replay_window`"
            )),
            (Scheme::Jwt, _, None) | (_, Some(_), None) | (_, None, Some(ReplayWindow::None)) => {
                Ok(())
            }
            (_, Some(_), Some(_)) => Err(format!(
                "provider `{id}`: the `timestamp` rule is the window; `replay_window` is only for entries without one"
            )),
            (_, None, None) => Err(format!(
                "provider `{id}` has no `timestamp` rule: state `replay_window = \"none\"` (the provider sends no signed timestamp) or add the rule"
            )),
        }
    }
}

impl Verification {
    /// Rules the types cannot express; returns the field (relative to `verification`).
    fn validate(&self, endpoints: EndpointRules) -> Result<(), (String, String)> {
        let err = |field: &str, message: &str| Err((field.to_owned(), message.to_owned()));
        self.validate_coverage()?;
        let reads_signature_params = self.signed.iter().any(|part| {
            matches!(
                part,
                SignedPart::SignatureParam(_) | SignedPart::HeadersNamedIn { .. }
            )
        });
        if reads_signature_params && !matches!(self.signature, SignatureFormat::KeyValueList { .. })
        {
            return Err((
                "signed".to_owned(),
                "signature_param and headers_named_in read a key_value_list signature header"
                    .to_owned(),
            ));
        }
        self.validate_parts()?;
        self.validate_scheme_from()?;
        if (self.scheme == Scheme::Jwt) != self.jwt.is_some() {
            return err(
                "jwt",
                "the jwt scheme needs a `jwt` rule, and only it has one",
            );
        }
        if let Some(rule) = &self.jwt
            && let Err(fault) = endpoints.check(&rule.jwks_url)
        {
            return Err(("jwt.jwks_url".to_owned(), fault.to_string()));
        }
        if self.jwt_keys == JwtKeys::PlaidVerificationKey
            && self
                .jwt
                .as_ref()
                .is_none_or(|rule| rule.algorithm != JwtAlgorithm::ES256)
        {
            return err(
                "jwt_keys",
                "Plaid's verification keys are ES256 keys of the jwt scheme",
            );
        }
        if matches!(self.scheme, Scheme::Token | Scheme::Jwt | Scheme::BasicAuth) {
            if !self.signed.is_empty() {
                return err(
                    "signed",
                    "the token, basic-auth and jwt schemes sign nothing: leave it empty",
                );
            }
            if matches!(self.scheme, Scheme::Jwt)
                && !matches!(self.signature, SignatureFormat::Single { .. })
            {
                return err("signature", "a JWT is read from one header: `single`");
            }
        } else if self.signed.is_empty() {
            return err("signed", "must list at least one part");
        }
        if self.scheme == Scheme::BasicAuth
            && !matches!(
                &self.signature,
                SignatureFormat::Single { prefix, encoding: SignatureEncoding::Base64, .. }
                    if prefix == BASIC_AUTH_PREFIX
            )
        {
            return err(
                "signature",
                "basic-auth reads one header: `single` with prefix \"Basic \" and encoding \"base64\"",
            );
        }
        if matches!(self.signature, SignatureFormat::XmlElement { .. })
            && self.scheme != Scheme::Token
        {
            return err(
                "signature",
                "`xml_element` holds a token: use the token scheme",
            );
        }
        if self.scheme == Scheme::Token
            && !matches!(
                self.signature,
                SignatureFormat::Single { .. }
                    | SignatureFormat::PerItem { .. }
                    | SignatureFormat::XmlElement { .. }
            )
        {
            return err(
                "signature",
                "the token scheme reads one value: `single`, `per_item` or `xml_element`",
            );
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
        if matches!(self.scheme, Scheme::Ed25519 | Scheme::EcdsaP256)
            && self.secret_encoding == SecretEncoding::Utf8
        {
            return err("secret_encoding", "a public key must be hex or base64");
        }
        if self.url_port_retry
            && !self
                .signed
                .iter()
                .any(|part| matches!(part, SignedPart::Url))
        {
            return err(
                "url_port_retry",
                "only for entries whose `signed` has `url`",
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
            SignatureFormat::JsonPointer { pointer, .. } if !is_pointer(pointer) => {
                err("signature.pointer", "must be a JSON pointer such as `/a/b`")
            }
            SignatureFormat::PerItem {
                items, signature, ..
            } if !is_pointer(items) || !is_pointer(signature) => err(
                "signature",
                "`items` and `signature` must be JSON pointers such as `/a/b`",
            ),
            SignatureFormat::XmlElement { element }
                if element.is_empty()
                    || !element
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                err("signature.element", "must be an XML local name")
            }
            _ => Ok(()),
        }
    }

    /// Rules tying the signature's encoding and the parts to the scheme.
    fn validate_parts(&self) -> Result<(), (String, String)> {
        let err = |field: &str, message: &str| Err((field.to_owned(), message.to_owned()));
        let encoding = match &self.signature {
            SignatureFormat::Single { encoding, .. }
            | SignatureFormat::KeyValueList { encoding, .. }
            | SignatureFormat::VersionedList { encoding, .. }
            | SignatureFormat::EachHeader { encoding, .. }
            | SignatureFormat::JsonPointer { encoding, .. }
            | SignatureFormat::PerItem { encoding, .. } => Some(*encoding),
            SignatureFormat::XmlElement { .. } => None,
        };
        let text = encoding == Some(SignatureEncoding::Text);
        let textual = matches!(self.scheme, Scheme::Token | Scheme::Jwt);
        if textual != (text || encoding.is_none()) {
            return err(
                "signature.encoding",
                "`text` is for the token and jwt schemes, which need it",
            );
        }
        let mut raw_members = Vec::new();
        for (index, part) in self.signed.iter().enumerate() {
            match part {
                SignedPart::JsonPointer(pointer) if !is_pointer(pointer) => {
                    return Err((
                        format!("signed[{index}]"),
                        "must be a JSON pointer such as `/a/b`".into(),
                    ));
                }
                SignedPart::JsonRawMember(name) => {
                    if name.is_empty() || name.contains(['"', '\\']) {
                        return Err((
                            format!("signed[{index}]"),
                            "must name a top-level member (no quote or backslash)".into(),
                        ));
                    }
                    raw_members.push(name.as_str());
                }
                _ => {}
            }
        }
        // A raw member is sliced from the body as sent; a signature in the body beside it
        // is spliced into the same top-level object when signing, so it must be a
        // top-level member too and not the signed one.
        if !raw_members.is_empty() {
            if let SignatureFormat::JsonPointer { pointer, .. } = &self.signature
                && (pointer.matches('/').count() != 1
                    || raw_members.contains(&&pointer[1..])
                    || pointer.contains('~'))
            {
                return err(
                    "signature.pointer",
                    "beside `json_raw_member`, the signature is another top-level member (`/Name`)",
                );
            }
            if matches!(self.signature, SignatureFormat::PerItem { .. }) {
                return err(
                    "signed",
                    "`json_raw_member` reads the top-level object, not per-item elements",
                );
            }
        }
        Ok(())
    }
}

impl Verification {
    /// A request may only choose between HMACs over the same parts with the same key,
    /// and only where the signature is in a header.
    fn validate_scheme_from(&self) -> Result<(), (String, String)> {
        let Some(rule) = &self.scheme_from else {
            return Ok(());
        };
        let err = |field: &str, message: &str| Err((field.to_owned(), message.to_owned()));
        let hmac = |scheme: Scheme| {
            matches!(
                scheme,
                Scheme::HmacSha1 | Scheme::HmacSha256 | Scheme::HmacSha512
            )
        };
        if !hmac(self.scheme) || rule.values.values().any(|scheme| !hmac(*scheme)) {
            return err(
                "scheme_from",
                "a request may only name one HMAC scheme instead of another",
            );
        }
        if self.signature.header().is_none() {
            return err(
                "scheme_from",
                "only for signatures in a header (not in the body or per item)",
            );
        }
        if rule.values.is_empty()
            || rule.values.keys().any(String::is_empty)
            || rule.param.is_empty()
            || rule.pair_separator.is_empty()
        {
            return err(
                "scheme_from",
                "`values`, their names, `param` and `pair_separator` must not be empty",
            );
        }
        Ok(())
    }
}

fn is_pointer(pointer: &str) -> bool {
    pointer.starts_with('/') && pointer.len() > 1
}

impl Verification {
    /// Whether the signed parts cover the whole body.
    fn covers_body(&self) -> bool {
        let has = |wanted: fn(&SignedPart) -> bool| self.signed.iter().any(wanted);
        has(|part| matches!(part, SignedPart::Body))
            || (has(|part| matches!(part, SignedPart::SortedFormParams))
                && has(|part| matches!(part, SignedPart::Url))
                && self.body_hash_query_param.is_some())
            // A body of raw members and the in-body signature only (the verifier refuses
            // any other member): every value but the signature's is signed as sent.
            || has(|part| matches!(part, SignedPart::JsonRawMember(_)))
    }

    /// `coverage` must tell the truth about the signed parts, and say why when the body
    /// is not covered.
    fn validate_coverage(&self) -> Result<(), (String, String)> {
        let err = |field: &str, message: &str| Err((field.to_owned(), message.to_owned()));
        let actual = if matches!(self.scheme, Scheme::Token | Scheme::BasicAuth) {
            Coverage::None
        } else if let Some(rule) = &self.jwt {
            if rule.body_hash_claim.is_some() {
                Coverage::Body
            } else {
                Coverage::None
            }
        } else if self.covers_body() {
            Coverage::Body
        } else {
            Coverage::Partial
        };
        if self.coverage != actual {
            return err(
                "coverage",
                match actual {
                    Coverage::Body => "the signed parts cover the whole body: `body`",
                    Coverage::Partial => {
                        "the signed parts leave some of the body unauthenticated: `partial`"
                    }
                    Coverage::None => {
                        "the token and basic-auth schemes (or a JWT without a body hash) authenticate no byte of the body: `none`"
                    }
                },
            );
        }
        match (&self.coverage, &self.coverage_note) {
            (Coverage::Body, _) => Ok(()),
            (_, Some(note)) if note.trim().len() >= 20 => Ok(()),
            _ => err(
                "coverage_note",
                "say in a sentence what is and is not authenticated",
            ),
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
replay_window = "none"
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

    /// Issue #10: every webhook provider of the signature reference has an entry (some
    /// providers have one per mode: GitLab token and signing token, HubSpot v1/v2/v3,
    /// Adyen standard and platform, Discord interactions and webhook events).
    /// The build embeds the provider files as JSON; read as TOML from the repository
    /// they make the same catalog, field for field.
    #[test]
    fn the_embedded_json_is_the_providers_toml() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("providers");
        let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
            .expect("providers dir")
            .map(|entry| entry.expect("entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
            .map(|path| {
                let name = path
                    .file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned();
                (name, std::fs::read_to_string(&path).expect("readable"))
            })
            .collect();
        files.sort();
        let files: Vec<(&str, &str)> = files
            .iter()
            .map(|(name, text)| (name.as_str(), text.as_str()))
            .collect();
        let from_toml = Catalog::from_files(&files).expect("the TOML validates");
        let embedded = Catalog::embedded().expect("the embedded catalog validates");
        assert_eq!(embedded.providers().count(), files.len());
        for provider in from_toml.providers() {
            let twin = embedded.get(&provider.id).expect("embedded");
            assert_eq!(
                format!("{twin:?}"),
                format!("{provider:?}"),
                "{}",
                provider.id
            );
        }
    }

    #[test]
    fn embedded_catalog_covers_the_signature_reference() {
        let catalog = Catalog::embedded().expect("the embedded catalog must validate");
        for id in [
            "adyen",
            "adyen-platform",
            "asana",
            "bitbucket",
            "box",
            "calendly",
            "clerk",
            "coinbase-cdp",
            "coinbase-commerce",
            "discord-events",
            "docusign",
            "dropbox",
            "gitlab",
            "gitlab-signed",
            "gmail",
            "hubspot-v1",
            "hubspot-v2",
            "intercom",
            "intuit",
            "jira",
            "mailgun",
            "mailgun-legacy",
            "meta",
            "microsoft",
            "notion",
            "okta",
            "paddle",
            "pagerduty",
            "plaid",
            "razorpay",
            "resend",
            "salesforce",
            "sendgrid",
            "svix",
            "twitch",
            "twitter",
            "typeform",
            "vercel",
            "xero",
            "zendesk",
            "zoom",
        ] {
            let provider = catalog.get(id).unwrap_or_else(|| panic!("{id} missing"));
            let webhook = provider.webhook.as_ref().expect("a webhook spec");
            assert!(webhook.verification.is_some(), "{id} is verified");
        }
    }

    /// Issue 29, part 1: the providers the requirements name have entries, each with
    /// what its provider really offers: a signature, a shared token, or HTTP Basic
    /// credentials; and the OAuth entries they ask for.
    #[test]
    fn the_issue_29_providers_have_entries() {
        let catalog = Catalog::embedded().expect("catalog");
        for (id, scheme) in [
            ("posthog", Scheme::Token),
            ("sentry", Scheme::HmacSha256),
            ("airtable", Scheme::HmacSha256),
            ("crisp", Scheme::HmacSha256),
            ("pipedrive", Scheme::BasicAuth),
            ("exact-online", Scheme::HmacSha256),
            ("telegram", Scheme::Token),
        ] {
            let provider = catalog.get(id).unwrap_or_else(|| panic!("{id} missing"));
            let verification = provider.verification().expect("verified");
            assert_eq!(verification.scheme, scheme, "{id}");
            let api = provider.api.as_ref().expect("an [api] section");
            assert!(api.base_url.is_some(), "{id}: an API base");
        }
        for id in [
            "xero",
            "intuit",
            "notion",
            "intercom",
            "pipedrive",
            "airtable",
            "exact-online",
        ] {
            let provider = catalog.get(id).unwrap_or_else(|| panic!("{id} missing"));
            assert!(provider.oauth.is_some(), "{id}: an [oauth] section");
        }
        assert!(
            catalog
                .get("airtable")
                .and_then(|p| p.oauth.as_ref())
                .is_some_and(|o| o.pkce)
        );
    }

    #[test]
    fn basic_auth_reads_one_basic_authorization_header_and_signs_nothing() {
        let entry = |signature: &str, signed: &str| {
            webhook_file(&format!(
                "[webhook.verification]\nscheme = \"basic-auth\"\nsignature = {signature}\nsigned = {signed}\ncoverage = \"none\"\ncoverage_note = \"Basic credentials prove the sender; the body is not signed.\"\nreplay_window = \"none\"\n"
            ))
        };
        let good = r#"{ format = "single", header = "Authorization", prefix = "Basic ", encoding = "base64" }"#;
        Catalog::from_files(&[("acme.toml", &entry(good, "[]"))]).expect("valid");
        for (signature, signed, field) in [
            (good, r#"["body"]"#, "webhook.verification.signed"),
            (
                &good.replace("\"Basic \"", "\"Bearer \"") as &str,
                "[]",
                "webhook.verification.signature",
            ),
            (
                &good.replace("base64", "text") as &str,
                "[]",
                "webhook.verification.signature",
            ),
            (
                r#"{ format = "each_header", header = "Authorization", encoding = "base64" }"#,
                "[]",
                "webhook.verification.signature",
            ),
        ] {
            let err = Catalog::from_files(&[("acme.toml", &entry(signature, signed))])
                .expect_err(signature);
            assert!(
                matches!(&err, CatalogError::Invalid { field: f, .. } if f.starts_with(field)),
                "{signature} {signed}: {err}"
            );
        }
        // Basic credentials authenticate no byte of the body: `none`, with the reason.
        let body = entry(good, "[]").replace("coverage = \"none\"\n", "");
        assert!(Catalog::from_files(&[("acme.toml", &body)]).is_err());
    }

    #[test]
    fn a_raw_member_sits_beside_a_top_level_in_body_signature() {
        let entry = |pointer: &str, member: &str| {
            webhook_file(&format!(
                "[webhook.verification]\nscheme = \"hmac-sha256\"\nsignature = {{ format = \"json_pointer\", pointer = \"{pointer}\", encoding = \"hex_upper\" }}\nsigned = [{{ json_raw_member = \"{member}\" }}]\nreplay_window = \"none\"\n"
            ))
        };
        let catalog =
            Catalog::from_files(&[("acme.toml", &entry("/HashCode", "Content"))]).expect("valid");
        let verification = catalog.get("acme").and_then(Provider::verification);
        assert!(verification.is_some_and(|v| matches!(
            v.signature,
            SignatureFormat::JsonPointer {
                encoding: SignatureEncoding::HexUpper,
                ..
            }
        )));
        for (pointer, member, field) in [
            (
                "/Meta/HashCode",
                "Content",
                "webhook.verification.signature.pointer",
            ),
            (
                "/Content",
                "Content",
                "webhook.verification.signature.pointer",
            ),
            ("/HashCode", "", "webhook.verification.signed[0]"),
            ("/HashCode", "Con\\\"tent", "webhook.verification.signed[0]"),
        ] {
            let err =
                Catalog::from_files(&[("acme.toml", &entry(pointer, member))]).expect_err(pointer);
            assert!(
                matches!(&err, CatalogError::Invalid { field: f, .. } if f == field),
                "{pointer} {member}: {err}"
            );
        }
        // The verifier admits no member beside the raw members and the signature, so
        // the body is covered: claiming `partial` is refused.
        let claimed = entry("/HashCode", "Content").replace(
            "replay_window",
            "coverage = \"partial\"\ncoverage_note = \"Only the Content member is signed.\"\nreplay_window",
        );
        assert!(Catalog::from_files(&[("acme.toml", &claimed)]).is_err());
    }

    /// Issue "Nothing lost at the edges", point 3: X's CRC answers sign any token, so
    /// an entry with that handshake must refuse bodies that are not JSON objects.
    #[test]
    fn a_handshake_that_signs_caller_input_needs_json_object_bodies() {
        let crc = |body: &str| {
            webhook_file(&format!(
                "[webhook]\nhandshake = \"twitter_crc\"\n{body}\n[webhook.verification]\nscheme = \"hmac-sha256\"\nsignature = {{ format = \"single\", header = \"x-acme-signature\", prefix = \"sha256=\", encoding = \"base64\" }}\nsigned = [\"body\"]\nreplay_window = \"none\"\n"
            ))
        };
        let err = Catalog::from_files(&[("acme.toml", &crc(""))]).expect_err("refused");
        assert!(
            matches!(&err, CatalogError::Invalid { field, message, .. }
                if field == "webhook.body" && message.contains("json_object")),
            "{err}"
        );
        let catalog = Catalog::from_files(&[("acme.toml", &crc("body = \"json_object\""))])
            .expect("accepted with json_object bodies");
        let webhook = catalog.get("acme").and_then(|p| p.webhook.as_ref());
        assert_eq!(webhook.map(|w| w.body), Some(BodyShape::JsonObject));
        let err = Catalog::from_files(&[("acme.toml", &crc("body = \"json\""))])
            .expect_err("an unknown shape");
        assert!(err.to_string().contains("body"), "{err}");
        // The embedded entries that need it have it.
        for provider in Catalog::embedded().expect("catalog").providers() {
            if let Some(webhook) = &provider.webhook
                && webhook.handshake.is_some_and(Handshake::signs_caller_input)
            {
                assert_eq!(webhook.body, BodyShape::JsonObject, "{}", provider.id);
            }
        }
    }

    fn webhook_file(webhook: &str) -> String {
        format!("id = \"acme\"\nname = \"Acme\"\ndocs = \"https://acme.example\"\n\n{webhook}")
    }

    #[test]
    fn a_webhook_without_a_scheme_must_say_why_it_is_unverifiable() {
        let none = webhook_file("[webhook]\nevent_type = { json_pointer = \"/type\" }\n");
        let err = Catalog::from_files(&[("acme.toml", &none)]).expect_err("must fail");
        assert!(err.to_string().contains("webhook.verification"), "{err}");
        let terse = webhook_file("[webhook]\nunverifiable = \"no\"\n");
        let err = Catalog::from_files(&[("acme.toml", &terse)]).expect_err("must fail");
        assert!(err.to_string().contains("webhook.unverifiable"), "{err}");
        let explained = webhook_file(
            "[webhook]\nunverifiable = \"Acme posts unsigned JSON from unpublished addresses.\"\n",
        );
        let catalog = Catalog::from_files(&[("acme.toml", &explained)]).expect("valid");
        let webhook = catalog
            .get("acme")
            .and_then(|p| p.webhook.as_ref())
            .expect("webhook");
        assert!(webhook.verification.is_none());
    }

    #[test]
    fn coverage_must_match_the_signed_parts() {
        let partial_claim = format!(
            "{MINIMAL}coverage = \"partial\"\ncoverage_note = \"Only some fields are signed, really.\"\n"
        );
        let err = Catalog::from_files(&[("acme.toml", &partial_claim)]).expect_err("must fail");
        assert!(
            err.to_string().contains("webhook.verification.coverage"),
            "{err}"
        );
        let token = webhook_file(
            "[webhook.verification]\nscheme = \"token\"\nsignature = { format = \"single\", header = \"X-Token\", encoding = \"text\" }\nsigned = []\nreplay_window = \"none\"\n",
        );
        let err = Catalog::from_files(&[("acme.toml", &token)]).expect_err("must fail");
        assert!(err.to_string().contains("`none`"), "{err}");
        let unexplained = format!("{token}coverage = \"none\"\n");
        let err = Catalog::from_files(&[("acme.toml", &unexplained)]).expect_err("must fail");
        assert!(err.to_string().contains("coverage_note"), "{err}");
        let explained = format!(
            "{unexplained}coverage_note = \"The token proves the sender; the body is not signed.\"\n"
        );
        Catalog::from_files(&[("acme.toml", &explained)]).expect("valid");
        let signs_parts = token.replace("signed = []", "signed = [\"body\"]");
        let err = Catalog::from_files(&[("acme.toml", &format!("{signs_parts}coverage = \"none\"\ncoverage_note = \"The token proves the sender only.\"\n"))])
            .expect_err("must fail");
        assert!(err.to_string().contains("sign nothing"), "{err}");
    }

    #[test]
    fn the_text_encoding_is_only_for_tokens() {
        let text = MINIMAL.replace("encoding = \"hex\"", "encoding = \"text\"");
        let err = Catalog::from_files(&[("acme.toml", &text)]).expect_err("must fail");
        assert!(err.to_string().contains("signature.encoding"), "{err}");
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

    /// The review's reproducer: `^a|b$` is anchored at each end as text, but as a regular
    /// expression it is `(^a)|(b$)`, so `login.acme.example@evil.com` matched and the
    /// user was sent to `evil.com`. Patterns are compiled as `^(?:…)$`.
    #[test]
    fn an_alternation_pattern_matches_whole_values_only() {
        let parameter = UrlParameter {
            pattern: r"^login\.acme\.example|login\.acme\.dev$".to_owned(),
            default: None,
            description: "the login host".to_owned(),
        };
        assert!(parameter.accepts("login.acme.example"));
        assert!(parameter.accepts("login.acme.dev"));
        for hostile in [
            "login.acme.example@evil.com",
            "login.acme.example.evil.com",
            "evil.com/login.acme.dev",
            "evil.com#login.acme.dev",
        ] {
            assert!(!parameter.accepts(hostile), "{hostile}");
        }
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
                    "https://{shop}/admin/oauth/access_token",
                    "http://127.0.0.1:@[::1]:9/token",
                ),
                "oauth.token_url",
                "user name",
            ),
            (
                valid.replace(
                    "https://{shop}/admin/oauth/access_token",
                    "https://169.254.169.254/latest",
                ),
                "oauth.token_url",
                "own network",
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
    fn an_overlay_entry_can_verify_like_a_named_provider() {
        let base = Catalog::embedded().expect("catalog");
        let overlay = "[[provider]]\nid = \"billing-service\"\nname = \"In-house billing\"\ndocs = \"https://wiki.example.com/billing\"\n[provider.webhook]\nverification_from = \"standard-webhooks\"\nevent_id = { header = \"webhook-id\" }\n";
        let merged = base.with_overlay("o", overlay).expect("valid overlay");
        let copied = merged
            .get("billing-service")
            .and_then(|p| p.verification())
            .expect("verification copied");
        let original = base
            .get("standard-webhooks")
            .and_then(|p| p.verification())
            .expect("standard webhooks");
        assert_eq!(format!("{copied:?}"), format!("{original:?}"));

        let unknown = overlay.replace("\"standard-webhooks\"", "\"standard-hooks\"");
        let err = base
            .with_overlay("o", &unknown)
            .expect_err("unknown source");
        assert!(
            err.to_string()
                .contains("field `webhook.verification_from`")
                && err.to_string().contains("standard-hooks"),
            "{err}"
        );
        let both = overlay.replace(
            "verification_from",
            "verification = { scheme = \"hmac-sha512\", signature = { format = \"single\", header = \"X-Sig\", encoding = \"hex\" }, signed = [\"body\"] }\nverification_from",
        );
        let err = base.with_overlay("o", &both).expect_err("both");
        assert!(err.to_string().contains("not both"), "{err}");
    }

    #[test]
    fn a_discovered_provider_needs_only_its_issuer() {
        let base = Catalog::embedded().expect("catalog");
        let overlay = "[[provider]]\nid = \"acme-sso\"\nname = \"Acme SSO\"\ndocs = \"https://sso.acme.example/docs\"\n[provider.oauth_discovery]\nissuer = \"https://sso.acme.example/realms/main\"\nscopes = [\"openid\", \"offline_access\"]\n";
        let merged = base.with_overlay("o", overlay).expect("valid");
        let entry = merged
            .get("acme-sso")
            .and_then(|p| p.oauth_discovery.as_ref())
            .expect("discovery entry");
        assert!(entry.is_openid());
        assert_eq!(entry.lifetime_margin_seconds, 300);
        for (broken, field) in [
            (
                overlay.replace("issuer = \"https://", "issuer = \"http://"),
                "oauth_discovery.issuer",
            ),
            (
                overlay.replace("realms/main", "realms/main?x=1"),
                "oauth_discovery.issuer",
            ),
            (
                format!(
                    "{overlay}[provider.oauth]\nauthorize_url = \"https://a.example\"\ntoken_url = \"https://a.example/t\"\npkce = true\nclient_auth = \"client_secret_post\"\nlifetime_margin_seconds = 0\nrefresh_token_rotation = false\nrevocation = {{ style = \"none\", reason = \"none\" }}\n"
                ),
                "oauth_discovery",
            ),
        ] {
            let err = base.with_overlay("o", &broken).expect_err("refused");
            assert!(
                err.to_string().contains(&format!("field `{field}`")),
                "{err}"
            );
        }
        let err = base
            .with_overlay("o", &overlay.replace("scopes", "scope"))
            .expect_err("unknown field");
        assert!(err.to_string().contains("scope"), "{err}");
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

    /// Issue #10: windows are explicit. An entry without a `timestamp` rule must say
    /// `replay_window = "none"`; the error names the file, the provider and the key.
    #[test]
    fn an_entry_without_a_timestamp_rule_must_state_its_replay_window() {
        let implicit = MINIMAL.replace("replay_window = \"none\"\n", "");
        let err = Catalog::from_files(&[("acme.toml", &implicit)]).expect_err("must fail");
        assert!(
            matches!(&err, CatalogError::Invalid { file, field, message }
                if file == "acme.toml"
                    && field == "webhook.verification.replay_window"
                    && message.contains("provider `acme`")
                    && message.contains("replay_window = \"none\"")),
            "{err:?}"
        );
        // The same rule for overlay entries, named by the overlay and the provider.
        let overlay = format!(
            "[[provider]]\n{}",
            implicit.replace("\n[webhook", "\n[provider.webhook")
        );
        let err = Catalog::embedded()
            .expect("catalog")
            .with_overlay("junction/catalog/overlay", &overlay)
            .expect_err("must fail");
        let text = err.to_string();
        assert!(
            text.contains("junction/catalog/overlay provider[0] (acme)")
                && text.contains("field `webhook.verification.replay_window`"),
            "{text}"
        );
        // Only `none` is a window without a rule.
        let other = MINIMAL.replace("replay_window = \"none\"", "replay_window = \"300\"");
        let err = Catalog::from_files(&[("acme.toml", &other)]).expect_err("must fail");
        assert!(
            matches!(&err, CatalogError::Parse { detail, .. }
                if detail.contains("replay_window") && detail.contains("unknown variant")),
            "{err:?}"
        );
    }

    #[test]
    fn a_timestamp_rule_and_replay_window_none_are_refused_together() {
        let both = format!(
            "{MINIMAL}timestamp = {{ from = {{ header = \"X-Ts\" }}, unit = \"seconds\", max_age_seconds = 300 }}\n"
        );
        let err = Catalog::from_files(&[("acme.toml", &both)]).expect_err("must fail");
        assert!(
            matches!(&err, CatalogError::Invalid { field, message, .. }
                if field == "webhook.verification.replay_window"
                    && message.contains("provider `acme`")
                    && message.contains("`timestamp` rule is the window")),
            "{err:?}"
        );
        let rule_only = both.replace("replay_window = \"none\"\n", "");
        Catalog::from_files(&[("acme.toml", &rule_only)]).expect("a past-only window");
    }

    /// A JWT is bounded by its own claims (`exp`, or `iat` with `jwt.max_age_seconds`), so
    /// it needs no `replay_window`, and `none` would be false.
    #[test]
    fn a_jwt_entry_has_its_window_in_the_token() {
        let jwt = webhook_file(
            "[webhook.verification]\nscheme = \"jwt\"\nsignature = { format = \"single\", header = \"Authorization\", prefix = \"Bearer \", encoding = \"text\" }\nsigned = []\ncoverage = \"none\"\ncoverage_note = \"The token proves the sender; the body is not signed.\"\njwt = { algorithm = \"RS256\", jwks_url = \"https://acme.example/jwks\" }\n",
        );
        Catalog::from_files(&[("acme.toml", &jwt)]).expect("valid without replay_window");
        let stated = format!("{jwt}replay_window = \"none\"\n");
        let err = Catalog::from_files(&[("acme.toml", &stated)]).expect_err("must fail");
        assert!(
            matches!(&err, CatalogError::Invalid { field, message, .. }
                if field == "webhook.verification.replay_window" && message.contains("`exp`")),
            "{err:?}"
        );
    }

    /// Every verified built-in entry states its window one way: a rule (past-only when
    /// `max_future_seconds` is 0 or absent, else symmetric or bounded both ways),
    /// `none`, or a JWT's claims.
    #[test]
    fn every_embedded_entry_states_its_window_exactly_once() {
        let catalog = Catalog::embedded().expect("catalog");
        let mut none = Vec::new();
        for provider in catalog.providers() {
            let Some(verification) = provider.verification() else {
                continue;
            };
            let ways = [
                verification.timestamp.is_some(),
                verification.replay_window.is_some(),
                verification.scheme == Scheme::Jwt,
            ];
            assert_eq!(
                ways.iter().filter(|way| **way).count(),
                1,
                "{}: {ways:?}",
                provider.id
            );
            if verification.replay_window == Some(ReplayWindow::None) {
                none.push(provider.id.as_str());
            }
        }
        for id in [
            "shopify",
            "square",
            "twilio",
            "adyen",
            "adyen-platform",
            "gitlab",
            "okta",
            "microsoft",
            "salesforce",
            "github",
            "zoom",
            "zendesk",
            "discord",
        ] {
            assert!(none.contains(&id), "{id} states replay_window = \"none\"");
        }
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
            .verification()
            .and_then(|v| v.signature.header())
            .map(|h| h.names().to_vec());
        assert_eq!(
            names,
            Some(vec![
                "webhook-signature".to_owned(),
                "svix-signature".to_owned()
            ])
        );
    }
}
