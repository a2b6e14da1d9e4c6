//! The `[oauth]` section of a catalog entry: how Junction connects an account of the
//! provider (authorize, exchange, refresh, revoke), as data.
//!
//! Providers differ in ways that cause most integration support tickets, so each
//! difference is a field here rather than a code path: the scope separator, PKCE, how
//! the client authenticates, JSON or form token requests, a lifetime that is absent
//! (Salesforce) or shorter than stated, rotating refresh tokens, the error codes that
//! mean "the user must reconnect", and the revocation call. URL placeholders such as
//! `{shop}` take values from the connect request, each checked against an anchored
//! pattern so no user input can point Junction's HTTP client at another host.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::endpoint::{EndpointRules, template_probe};

/// One provider's OAuth 2.0 definition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthSpec {
    /// The authorization endpoint; may contain `{parameter}` placeholders.
    pub authorize_url: String,
    /// The token endpoint (code exchange and refresh); may contain placeholders.
    pub token_url: String,
    /// Scopes requested by default.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// How scopes are joined (`" "` per RFC 6749; Slack, Linear and Shopify use `","`).
    #[serde(default = "default_scope_separator")]
    pub scope_separator: String,
    /// The authorize parameter carrying the scopes (Slack user tokens: `user_scope`).
    #[serde(default = "default_scope_param")]
    pub scope_param: String,
    /// Send a PKCE S256 challenge (RFC 7636).
    pub pkce: bool,
    /// How the client authenticates at the token endpoint.
    pub client_auth: ClientAuth,
    /// The token request body's encoding.
    #[serde(default)]
    pub token_request: TokenRequestFormat,
    /// Extra authorize parameters (Google `access_type=offline`).
    #[serde(default)]
    pub authorize_params: BTreeMap<String, String>,
    /// Seconds subtracted from a token's stated lifetime: it is refreshed this much
    /// before it would expire.
    pub lifetime_margin_seconds: u32,
    /// The lifetime assumed when a token response has no `expires_in` (Salesforce: the
    /// session timeout). Absent: such tokens do not expire (Stripe, GitHub OAuth Apps).
    #[serde(default)]
    pub default_lifetime_seconds: Option<u32>,
    /// Whether a refresh returns a new refresh token that replaces the old one.
    pub refresh_token_rotation: bool,
    /// Token-endpoint error codes meaning the grant is gone and the user must reconnect,
    /// besides `invalid_grant` (Slack `token_revoked`, GitHub `bad_refresh_token`).
    #[serde(default)]
    pub reauth_errors: Vec<String>,
    /// JSON pointer to the connected account's id in the token response (Slack
    /// `/team/id`, Stripe `/stripe_user_id`).
    #[serde(default)]
    pub account_id: Option<String>,
    /// Token-response values kept on the connection for later API calls, by name →
    /// JSON pointer (Salesforce `instance_url`).
    #[serde(default)]
    pub response_params: BTreeMap<String, String>,
    /// Placeholders in the URLs, filled from the connect request's query.
    #[serde(default)]
    pub url_parameters: BTreeMap<String, UrlParameter>,
    /// A signature the provider adds to the callback (Shopify's `hmac`).
    #[serde(default)]
    pub callback_signature: Option<CallbackSignature>,
    /// How a connection is revoked at the provider on disconnect.
    pub revocation: Revocation,
    /// Why the values above are what they are: sources, quirks, unverified points.
    #[serde(default)]
    pub notes: Option<String>,
    /// Set on specs resolved from an issuer's metadata when the scopes include `openid`:
    /// the ID token must validate before a connection is stored. Never read from TOML.
    #[serde(skip)]
    pub openid: Option<OpenIdRule>,
    /// Set on specs resolved from metadata that states
    /// `authorization_response_iss_parameter_supported`: the callback's `iss` must be
    /// this issuer (RFC 9207 mix-up defence). Never read from TOML.
    #[serde(skip)]
    pub callback_issuer: Option<String>,
}

/// How a discovered OpenID Connect provider's ID tokens are validated (OIDC Core
/// §3.1.3.7): signature against the issuer's JWKS, `iss`, `aud` (and `azp`), `exp`,
/// and the `nonce` sent with the authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenIdRule {
    /// The issuer identifier, exactly as configured and as the metadata states it.
    pub issuer: String,
    /// The issuer's JSON Web Key Set.
    pub jwks_uri: String,
    /// The `alg` values accepted: the metadata's `id_token_signing_alg_values_supported`
    /// that Junction verifies (RS256, ES256); never `none` or an HMAC.
    pub algorithms: Vec<super::JwtAlgorithm>,
}

/// An OAuth 2.0 / OpenID Connect provider described by its issuer alone: the endpoints,
/// PKCE support, client authentication method and revocation endpoint come from the
/// issuer's published metadata (OpenID Connect Discovery 1.0, RFC 8414), fetched with a
/// timeout and cached. For the identity server or niche provider nobody catalogued.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoverySpec {
    /// The issuer identifier (`https://id.example.com` or `https://host/realms/main`).
    pub issuer: String,
    /// Scopes requested; with `openid`, an ID token is required and validated.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Extra authorize parameters (`prompt = "consent"`, which OpenID Connect requires
    /// before it issues a refresh token for `offline_access`).
    #[serde(default)]
    pub authorize_params: BTreeMap<String, String>,
    /// Seconds subtracted from a token's stated lifetime (default 300).
    #[serde(default = "default_discovered_margin")]
    pub lifetime_margin_seconds: u32,
    /// The lifetime assumed when a token response has no `expires_in`.
    #[serde(default)]
    pub default_lifetime_seconds: Option<u32>,
    /// Token-endpoint error codes meaning the user must reconnect, besides `invalid_grant`.
    #[serde(default)]
    pub reauth_errors: Vec<String>,
    /// Sources and quirks.
    #[serde(default)]
    pub notes: Option<String>,
}

fn default_discovered_margin() -> u32 {
    300
}

impl DiscoverySpec {
    /// Whether this is an OpenID Connect provider (the `openid` scope is requested).
    pub fn is_openid(&self) -> bool {
        self.scopes.iter().any(|scope| scope == "openid")
    }

    /// Checks what the types cannot; returns `(field, message)` for the first fault.
    pub(crate) fn check(&self, rules: EndpointRules) -> Result<(), (String, String)> {
        let field = |name: &str| format!("oauth_discovery.{name}");
        if let Err(err) = rules.check(&self.issuer) {
            return Err((field("issuer"), err.to_string()));
        }
        if self.issuer.contains(['?', '#']) {
            return Err((
                field("issuer"),
                "an issuer has no query or fragment (RFC 8414 §2)".to_owned(),
            ));
        }
        if self.lifetime_margin_seconds > 3_600 {
            return Err((
                field("lifetime_margin_seconds"),
                "more than an hour: most tokens would never be fresh".to_owned(),
            ));
        }
        Ok(())
    }
}

fn default_scope_separator() -> String {
    " ".to_owned()
}

fn default_scope_param() -> String {
    "scope".to_owned()
}

/// Client authentication at the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// `client_id` and `client_secret` in the request body.
    ClientSecretPost,
    /// HTTP Basic with the form-urlencoded id and secret.
    ClientSecretBasic,
    /// `Authorization: Bearer <client_secret>` (Stripe Connect: the platform's secret
    /// key), `client_id` in the body.
    SecretKeyBearer,
}

/// The token request body's encoding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenRequestFormat {
    /// `application/x-www-form-urlencoded` (RFC 6749).
    #[default]
    Form,
    /// `application/json` (Shopify).
    Json,
}

/// A `{name}` placeholder in the provider's URLs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UrlParameter {
    /// A regular expression every value must match as a whole: it is compiled as
    /// `^(?:pattern)$` ([`UrlParameter::regex`]), so an alternation such as `^a|b$` cannot
    /// match `b` at the end of a longer value. Written anchored (`^…$`) in the catalog.
    pub pattern: String,
    /// The value when the connect request gives none; absent: the parameter is required.
    #[serde(default)]
    pub default: Option<String>,
    /// What the value is, for the connect page's error message.
    pub description: String,
}

impl UrlParameter {
    /// The pattern, compiled to match whole values only.
    pub fn regex(&self) -> Result<regex_lite::Regex, regex_lite::Error> {
        regex_lite::Regex::new(&format!("^(?:{})$", self.pattern))
    }

    /// Whether `value` is a valid value of this parameter (a pattern that does not
    /// compile matches nothing; the catalog check refuses such an entry at load).
    pub fn accepts(&self, value: &str) -> bool {
        self.regex().is_ok_and(|re| re.is_match(value))
    }
}

/// A provider-specific signature over the callback's query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackSignature {
    /// Shopify: HMAC-SHA256 (hex, keyed with the client secret) over the sorted query
    /// without `hmac` and `signature`, in the `hmac` parameter.
    ShopifyHmac,
}

/// Which token a [`Revocation::JsonToken`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokedToken {
    /// The refresh token when there is one (revoking it ends the grant), else the
    /// access token.
    Refresh,
    /// The access token.
    Access,
}

/// How a connection is revoked at the provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "style", rename_all = "snake_case", deny_unknown_fields)]
pub enum Revocation {
    /// RFC 7009: `POST url` with `token` and `token_type_hint`, client authenticated as
    /// at the token endpoint. Revoking the refresh token ends the grant.
    Rfc7009 { url: String },
    /// GitHub: `DELETE url` (with `{client_id}`) with HTTP Basic client credentials and
    /// the JSON body `{"access_token": …}`; deletes the whole grant.
    GithubGrant { url: String },
    /// Slack `auth.revoke`: `POST url` authenticated with the token itself.
    SlackAuthRevoke { url: String },
    /// Stripe Connect: `POST url` with `client_id` and `stripe_user_id` (the account
    /// id), authenticated with the platform's secret key.
    StripeDeauthorize { url: String },
    /// Shopify: `DELETE url` with `X-Shopify-Access-Token`: uninstalls the app.
    ShopifyUninstall { url: String },
    /// `POST url` with HTTP Basic client credentials and the JSON body `{"token": …}`
    /// (Intuit, Notion), plus any `headers` the endpoint requires (Notion's
    /// `Notion-Version`); `token` says which token is sent.
    JsonToken {
        url: String,
        token: RevokedToken,
        #[serde(default)]
        headers: BTreeMap<String, String>,
    },
    /// The provider offers no revocation endpoint: tokens are deleted locally only.
    None { reason: String },
}

impl Revocation {
    /// The endpoint, if there is one.
    pub fn url(&self) -> Option<&str> {
        match self {
            Revocation::Rfc7009 { url }
            | Revocation::GithubGrant { url }
            | Revocation::SlackAuthRevoke { url }
            | Revocation::StripeDeauthorize { url }
            | Revocation::ShopifyUninstall { url }
            | Revocation::JsonToken { url, .. } => Some(url),
            Revocation::None { .. } => None,
        }
    }
}

impl OAuthSpec {
    /// Checks what the types cannot: HTTPS endpoints, placeholders that are declared,
    /// anchored patterns that compile. Returns `(field, message)` for the first fault.
    pub(crate) fn check(&self, rules: EndpointRules) -> Result<(), (String, String)> {
        // `{account}` in `[api]` is the connection's provider account, kept apart.
        let reserved = super::ACCOUNT_PLACEHOLDER;
        if self.url_parameters.contains_key(reserved) || self.response_params.contains_key(reserved)
        {
            return Err((
                "oauth".to_owned(),
                format!(
                    "`{reserved}` is the connection's provider account: name the value otherwise"
                ),
            ));
        }
        let patterns = self
            .url_parameters
            .iter()
            .map(|(name, parameter)| {
                let field = format!("oauth.url_parameters.{name}.pattern");
                if !(parameter.pattern.starts_with('^') && parameter.pattern.ends_with('$')) {
                    return Err((field, "must be anchored with ^ and $".to_owned()));
                }
                parameter
                    .regex()
                    .map_err(|err| (field.clone(), format!("does not compile: {err}")))?;
                if let Some(default) = &parameter.default
                    && !parameter.accepts(default)
                {
                    return Err((
                        format!("oauth.url_parameters.{name}.default"),
                        "does not match the pattern".to_owned(),
                    ));
                }
                Ok(())
            })
            .collect::<Result<Vec<()>, _>>();
        patterns?;
        for (field, url) in [
            ("oauth.authorize_url", Some(self.authorize_url.as_str())),
            ("oauth.token_url", Some(self.token_url.as_str())),
            ("oauth.revocation.url", self.revocation.url()),
        ] {
            let Some(url) = url else { continue };
            if let Err(err) = rules.check(&template_probe(url)) {
                return Err((field.to_owned(), err.to_string()));
            }
            for placeholder in placeholders(url) {
                if placeholder != "client_id" && !self.url_parameters.contains_key(placeholder) {
                    return Err((
                        field.to_owned(),
                        format!("placeholder {{{placeholder}}} is not in oauth.url_parameters"),
                    ));
                }
            }
        }
        if self.lifetime_margin_seconds > 3_600 {
            return Err((
                "oauth.lifetime_margin_seconds".to_owned(),
                "more than an hour: most tokens would never be fresh".to_owned(),
            ));
        }
        if let Some(pointer) = &self.account_id
            && !pointer.starts_with('/')
        {
            return Err((
                "oauth.account_id".to_owned(),
                "must be a JSON pointer starting with /".to_owned(),
            ));
        }
        Ok(())
    }
}

/// The request a connect makes, with the fresh access token, to learn the connection's
/// provider account where the token response does not name it (`[account_request]` of a
/// catalog entry). Either the response is the account's own (`account` points at it:
/// Gmail's profile `emailAddress`), or it lists the accounts the user can access (`list`
/// points at an array, `account` into each element: GitHub's installations), and the
/// account is the one the callback's `chosen_by` parameter names if it is in the list,
/// else (with no such parameter) the one the connection already had if still listed,
/// else the only one listed; otherwise none. A callback parameter is never recorded
/// unless the list, fetched with the user's own token, contains it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountRequest {
    /// `GET` this https URL, `Authorization: Bearer <access token>`. No placeholders,
    /// except `{account}` in the path with `from_callback`.
    pub url: String,
    /// Extra request headers (`Accept`, an API version); never `Authorization` or `Cookie`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// JSON pointer to the account: in the response, or in each element of `list`.
    /// Strings and numbers are accepted (a number as its decimal text). Required unless
    /// `from_callback` names the account.
    #[serde(default)]
    pub account: Option<String>,
    /// The account is this callback query parameter (QuickBooks' `realmId`), and `url`,
    /// with it as `{account}`, confirms it: a 2xx answer to the fresh token. The
    /// browser carries the parameter, so a user could edit it to name another
    /// company; the value is recorded only when the provider serves that account to
    /// this grant.
    #[serde(default)]
    pub from_callback: Option<CallbackAccount>,
    /// With `list`: when neither the callback nor the connection names one of several
    /// listed accounts, the one whose value at this JSON pointer is the greatest, if
    /// only one has it (Xero's `updatedDateUtc`: the organisation connected last, the
    /// one this authorization just granted). Values are compared as text, which orders
    /// ISO 8601 timestamps written in one format.
    #[serde(default)]
    pub newest_by: Option<String>,
    /// JSON pointer to an array of the accounts the user can access (`""`: the answer is
    /// the array).
    #[serde(default)]
    pub list: Option<String>,
    /// The callback query parameter naming the account the user chose (GitHub's
    /// `installation_id`); needs `list`.
    #[serde(default)]
    pub chosen_by: Option<String>,
    /// How further pages of `list` are found.
    #[serde(default)]
    pub pagination: AccountPagination,
    /// The account is lowercased on the way in (email addresses), as the webhook side's
    /// `account` must be too, so the two compare without case.
    #[serde(default)]
    pub lowercase: bool,
}

/// A callback query parameter that names the connection's account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackAccount {
    /// The query parameter (`realmId`).
    pub parameter: String,
    /// What a value must match as a whole (anchored `^…$`); a callback whose value does
    /// not is refused before the code is exchanged. Only letters, digits, `-`, `_` and
    /// `.` pass in any case: the value becomes a path segment.
    pub pattern: String,
}

impl CallbackAccount {
    /// Whether `value` may be this parameter's value: the pattern, and a plain path
    /// segment (never `.` or `..`).
    pub fn accepts(&self, value: &str) -> bool {
        let segment = !value.is_empty()
            && value != "."
            && value != ".."
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        segment
            && regex_lite::Regex::new(&format!("^(?:{})$", self.pattern))
                .is_ok_and(|re| re.is_match(value))
    }
}

/// How an [`AccountRequest`]'s list continues on further pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountPagination {
    /// One page only.
    #[default]
    None,
    /// RFC 8288 `Link` response header, `rel="next"` (GitHub), followed only on the
    /// first page's origin.
    LinkHeader,
}

impl AccountRequest {
    /// Checks what the types cannot; returns `(field, message)` for the first fault.
    pub(crate) fn check(
        &self,
        rules: EndpointRules,
        oauth: Option<&OAuthSpec>,
        discovery: Option<&DiscoverySpec>,
    ) -> Result<(), (String, String)> {
        let field = |name: &str| format!("account_request.{name}");
        if oauth.is_none() && discovery.is_none() {
            return Err((
                field("url"),
                "needs [oauth] or [oauth_discovery]: it is made at connect".to_owned(),
            ));
        }
        if oauth.is_some_and(|oauth| oauth.account_id.is_some()) {
            return Err((
                field("url"),
                "the token response already names the account (oauth.account_id): one source only"
                    .to_owned(),
            ));
        }
        if discovery.is_some_and(DiscoverySpec::is_openid) {
            return Err((
                field("url"),
                "an OpenID provider's account is the ID token's sub: one source only".to_owned(),
            ));
        }
        if let Err(err) = rules.check(&template_probe(&self.url)) {
            return Err((field("url"), err.to_string()));
        }
        match &self.from_callback {
            None => {
                if placeholders(&self.url).next().is_some() {
                    return Err((field("url"), "takes no placeholders".to_owned()));
                }
                if self.account.is_none() {
                    return Err((
                        field("account"),
                        "a JSON pointer to the account is required (or from_callback)".to_owned(),
                    ));
                }
            }
            Some(callback) => {
                // The value fills a path segment, never the host.
                let host = self
                    .url
                    .split_once("://")
                    .map(|(_, rest)| rest.split('/').next().unwrap_or_default())
                    .unwrap_or_default();
                if placeholders(&self.url).any(|name| name != "account") || host.contains('{') {
                    return Err((field("url"), "takes only {account}, in the path".to_owned()));
                }
                if self.account.is_some()
                    || self.list.is_some()
                    || self.chosen_by.is_some()
                    || self.newest_by.is_some()
                {
                    return Err((
                        field("from_callback"),
                        "the callback names the account: no account, list, chosen_by or newest_by"
                            .to_owned(),
                    ));
                }
                if callback.parameter.is_empty() {
                    return Err((
                        field("from_callback.parameter"),
                        "must name a query parameter".to_owned(),
                    ));
                }
                let anchored = callback.pattern.starts_with('^') && callback.pattern.ends_with('$');
                if !anchored || regex_lite::Regex::new(&callback.pattern).is_err() {
                    return Err((
                        field("from_callback.pattern"),
                        "must be an anchored (^…$) pattern that compiles".to_owned(),
                    ));
                }
            }
        }
        if self.newest_by.is_some() && self.list.is_none() {
            return Err((
                field("newest_by"),
                "chooses among a list: list is required".to_owned(),
            ));
        }
        for (name, pointer) in [
            ("account", self.account.as_ref()),
            ("list", self.list.as_ref()),
            ("newest_by", self.newest_by.as_ref()),
        ] {
            // The list may be the whole answer (Xero's connections are a top-level array).
            let whole = name == "list" && pointer.is_some_and(String::is_empty);
            if let Some(pointer) = pointer
                && !pointer.starts_with('/')
                && !whole
            {
                return Err((
                    field(name),
                    "must be a JSON pointer starting with / (a list: or \"\", the whole answer)"
                        .to_owned(),
                ));
            }
        }
        if self.list.is_none()
            && (self.chosen_by.is_some() || self.pagination != AccountPagination::None)
        {
            return Err((
                field("list"),
                "chosen_by and pagination choose among a list: list is required".to_owned(),
            ));
        }
        if self.chosen_by.as_deref().is_some_and(str::is_empty) {
            return Err((field("chosen_by"), "must name a query parameter".to_owned()));
        }
        for (name, value) in &self.headers {
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err((field("headers"), format!("{name:?} is not a header name")));
            }
            if name.eq_ignore_ascii_case("authorization") || name.eq_ignore_ascii_case("cookie") {
                return Err((
                    field("headers"),
                    format!("{name} is set by Junction, never by the catalog"),
                ));
            }
            if !value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
                return Err((
                    field("headers"),
                    format!("the value of {name} is not printable ASCII"),
                ));
            }
        }
        Ok(())
    }
}

/// The `{name}` placeholders of a URL template.
pub fn placeholders(template: &str) -> impl Iterator<Item = &str> {
    template
        .split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
}

#[cfg(test)]
mod tests {
    use crate::{Catalog, CatalogError, FieldEncoding, FieldLocation};

    const ENTRY: &str = r#"id = "acme"
name = "Acme"
docs = "https://acme.example.com/docs"

[oauth]
authorize_url = "https://acme.example.com/authorize"
token_url = "https://acme.example.com/token"
pkce = true
client_auth = "client_secret_post"
lifetime_margin_seconds = 300
refresh_token_rotation = false
revocation = { style = "none", reason = "none offered" }

[account_request]
url = "https://api.acme.example.com/user/installations?per_page=100"
headers = { Accept = "application/json" }
list = "/installations"
account = "/id"
chosen_by = "installation_id"
pagination = "link_header"
"#;

    fn field_of(text: &str) -> Option<String> {
        match Catalog::from_files(&[("acme.toml", text)]) {
            Ok(_) => None,
            Err(CatalogError::Invalid { field, .. }) => Some(field),
            Err(other) => Some(other.to_string()),
        }
    }

    #[test]
    fn an_account_request_is_checked_and_its_faults_named() {
        let catalog = Catalog::from_files(&[("acme.toml", ENTRY)]).expect("valid");
        let request = catalog
            .get("acme")
            .and_then(|p| p.account_request.as_ref())
            .expect("account request");
        assert_eq!(request.chosen_by.as_deref(), Some("installation_id"));
        assert_eq!(request.pagination, super::AccountPagination::LinkHeader);
        for (broken, field) in [
            (
                ENTRY.replace("https://api.acme", "http://api.acme"),
                "account_request.url",
            ),
            (
                ENTRY.replace("/user/installations", "/{user}/installations"),
                "account_request.url",
            ),
            (
                ENTRY.replace("account = \"/id\"", "account = \"id\""),
                "account_request.account",
            ),
            (
                ENTRY.replace("list = \"/installations\"\n", ""),
                "account_request.list",
            ),
            (
                ENTRY.replace("Accept = ", "Authorization = "),
                "account_request.headers",
            ),
            (
                ENTRY.replace(
                    "revocation = {",
                    "account_id = \"/account\"\nrevocation = {",
                ),
                "account_request.url",
            ),
        ] {
            assert_eq!(field_of(&broken).as_deref(), Some(field), "{broken}");
        }
        let without_oauth = ENTRY
            .split("[oauth]")
            .next()
            .map(|head| {
                format!(
                    "{head}{}",
                    &ENTRY[ENTRY.find("[account_request]").unwrap_or(0)..]
                )
            })
            .unwrap_or_default();
        assert_eq!(
            field_of(&without_oauth).as_deref(),
            Some("account_request.url")
        );
    }

    /// Xero's form: the answer is the list, the newest connected tenant chosen.
    #[test]
    fn a_list_may_be_the_whole_answer_and_choose_the_newest() {
        let head = &ENTRY[..ENTRY.find("[account_request]").unwrap_or(0)];
        let newest = format!(
            "{head}[account_request]\nurl = \"https://api.acme.example.com/connections\"\nlist = \"\"\naccount = \"/tenantId\"\nnewest_by = \"/updatedDateUtc\"\n"
        );
        assert_eq!(field_of(&newest), None);
        for (broken, field) in [
            (
                newest.replace(
                    "newest_by = \"/updatedDateUtc\"",
                    "newest_by = \"updatedDateUtc\"",
                ),
                "account_request.newest_by",
            ),
            (
                newest.replace("list = \"\"\n", ""),
                "account_request.newest_by",
            ),
            (
                newest.replace("account = \"/tenantId\"\n", ""),
                "account_request.account",
            ),
        ] {
            assert_eq!(field_of(&broken).as_deref(), Some(field), "{broken}");
        }
    }

    /// QuickBooks' form: the callback's realmId, confirmed at a URL that names it.
    #[test]
    fn a_callback_account_is_a_checked_path_segment_confirmed_by_its_url() {
        let head = &ENTRY[..ENTRY.find("[account_request]").unwrap_or(0)];
        let realm = format!(
            "{head}[account_request]\nurl = \"https://api.acme.example.com/v3/company/{{account}}/companyinfo/{{account}}\"\nfrom_callback = {{ parameter = \"realmId\", pattern = \"^[0-9]{{1,32}}$\" }}\n"
        );
        assert_eq!(field_of(&realm), None);
        let catalog = Catalog::from_files(&[("acme.toml", realm.as_str())]).expect("valid");
        let callback = catalog
            .get("acme")
            .and_then(|p| p.account_request.as_ref())
            .and_then(|r| r.from_callback.as_ref())
            .expect("from_callback");
        assert!(callback.accepts("9130355377369466"));
        for refused in ["", "12a", "..", "1/2", "-1"] {
            assert!(!callback.accepts(refused), "{refused}");
        }
        for (broken, field) in [
            (
                realm.replace("https://api.acme", "https://{account}.acme"),
                "account_request.url",
            ),
            (
                realm.replace("/companyinfo/{account}", "/companyinfo/{other}"),
                "account_request.url",
            ),
            (
                realm.replace("\"^[0-9]{1,32}$\"", "\"[0-9]+\""),
                "account_request.from_callback.pattern",
            ),
            (
                realm.replace("parameter = \"realmId\"", "parameter = \"\""),
                "account_request.from_callback.parameter",
            ),
            (
                realm.replace("from_callback", "account = \"/id\"\nfrom_callback"),
                "account_request.from_callback",
            ),
        ] {
            assert_eq!(field_of(&broken).as_deref(), Some(field), "{broken}");
        }
    }

    #[test]
    fn the_account_placeholder_is_not_a_url_parameter() {
        let head = &ENTRY[..ENTRY.find("[account_request]").unwrap_or(0)];
        let text = format!(
            "{head}\n[oauth.url_parameters.account]\npattern = \"^[a-z]+$\"\ndescription = \"x\"\n"
        );
        assert_eq!(field_of(&text).as_deref(), Some("oauth"));
    }

    #[test]
    fn a_field_source_may_decode_base64_json_and_lowercase() {
        let webhook = r#"
[webhook]
unverifiable = "This test entry has no signature to check, so nothing can verify its deliveries."
event_id = { header = "X-Id" }
account = { json_pointer = "/message/data", decode = "base64_json", decoded_pointer = "/emailAddress", lowercase = true }
"#;
        let text = format!("{}{webhook}", &ENTRY[..ENTRY.find("[oauth]").unwrap_or(0)]);
        let catalog = Catalog::from_files(&[("acme.toml", text.as_str())]).expect("valid");
        let spec = catalog
            .get("acme")
            .and_then(|p| p.webhook.as_ref())
            .expect("webhook");
        let account = spec.account.as_ref().expect("account");
        assert!(matches!(&account.location, FieldLocation::JsonPointer(p) if p == "/message/data"));
        let decoded = account.decoded.as_ref().expect("decoded");
        assert_eq!(decoded.encoding, FieldEncoding::Base64Json);
        assert_eq!(decoded.pointer, "/emailAddress");
        assert!(account.lowercase);
        let id = spec.event_id.as_ref().expect("event id");
        assert!(matches!(&id.location, FieldLocation::Header(_)) && !id.lowercase);
        for broken in [
            webhook.replace(", decoded_pointer = \"/emailAddress\"", ""),
            webhook.replace("\"/emailAddress\"", "\"emailAddress\""),
            webhook.replace(
                "json_pointer = \"/message/data\"",
                "header = \"X-A\", json_pointer = \"/a\"",
            ),
            webhook.replace("base64_json", "rot13"),
        ] {
            let text = format!("{}{broken}", &ENTRY[..ENTRY.find("[oauth]").unwrap_or(0)]);
            assert!(
                matches!(
                    Catalog::from_files(&[("acme.toml", text.as_str())]),
                    Err(CatalogError::Parse { .. })
                ),
                "{broken}"
            );
        }
    }
}
