//! The `[api]` section of a catalog entry: how the provider's API answers, as data, for
//! the outbound client ([`junction_outbound`]).

use std::collections::BTreeMap;

use serde::Deserialize;

/// The placeholder the connection's provider account fills, in `base_url` (a path
/// segment: QuickBooks' `/v3/company/{account}`) and in `headers` values (Xero's
/// `xero-tenant-id`). Its value is the connection's stored account, not a URL parameter.
pub const ACCOUNT_PLACEHOLDER: &str = "account";

/// How Junction reads the provider's API responses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSpec {
    /// Where the API lives, joined with each poller's paths. `{name}` placeholders are
    /// filled from the connection's stored token-response values (Salesforce
    /// `{instance_url}`) and connect URL parameters (Shopify `{shop}`), and `{account}`
    /// (in the path only) from the connection's provider account (QuickBooks' realm), so
    /// a per-account host or path needs no code. An overlay can point a built-in
    /// provider elsewhere (a sandbox, a regional host) by replacing its entry.
    #[serde(default)]
    pub base_url: Option<String>,
    /// How each call carries the connection's credential: `Authorization: Bearer` (the
    /// default), or in the path (Telegram's `https://api.telegram.org/bot<token>/…`).
    #[serde(default)]
    pub credential: Credential,
    /// Headers the outbound client adds to every call, `{account}` in a value filled
    /// with the connection's provider account (Xero's `xero-tenant-id`). A call of a
    /// connection without an account is not sent when a value needs it.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The rate Junction allows itself (the documented limit, or below it); 429s lower
    /// it further at run time.
    pub rate_limit: RateLimitSpec,
    /// Responses that are errors whatever their status (Slack's `200 {"ok": false}`,
    /// GraphQL `errors`), tried in order; the first match decides.
    #[serde(default)]
    pub error_rules: Vec<ErrorRule>,
    /// One cheap authenticated call ("who am I") that proves a connection works:
    /// what `POST …/connections/{id}/test` sends. `None`: the provider cannot be tested.
    #[serde(default)]
    pub test_request: Option<TestRequest>,
    /// The request header the provider reads an idempotency key from (Stripe
    /// `Idempotency-Key`): a proxied write's `idempotency_key` is passed on in it, and the
    /// provider deduplicates, so Junction may retry the write. `None`: Junction keeps
    /// keys itself and answers repeats from its own record.
    #[serde(default)]
    pub idempotency_header: Option<String>,
}

/// Where the outbound client puts the connection's credential.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(tag = "style", rename_all = "snake_case", deny_unknown_fields)]
pub enum Credential {
    /// `Authorization: Bearer <access token>` (RFC 6750 §2.1).
    #[default]
    Bearer,
    /// `prefix` and the credential as the path's first segment, before the request's
    /// own path, and no `Authorization` header (Telegram: `/bot<token>/getMe`). The URL
    /// then holds a secret: the client never logs a URL, and its transport errors are
    /// stripped of theirs.
    PathPrefix { prefix: String },
    /// The credential alone as this header's value, and no `Authorization` header
    /// (Shopify's `X-Shopify-Access-Token`).
    Header { name: String },
}

/// A request relative to the API base, with no body: the connection test.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    /// `GET` or `POST` (Slack's Web API methods take a body-less `POST`).
    pub method: TestMethod,
    /// The path after `base_url`, starting with `/` (GitHub `/user`).
    pub path: String,
}

/// The methods a connection test may use: neither changes anything at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TestMethod {
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "POST")]
    Post,
}

impl TestMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            TestMethod::Get => "GET",
            TestMethod::Post => "POST",
        }
    }
}

/// A client-side rate limit: a pacing rate with its burst, and any budgets over longer
/// windows the provider also enforces (HubSpot's 100 per 10 seconds, Exact Online's 60 a
/// minute and 5,000 a day). A request goes out only when every one of them allows it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Sustained requests per second.
    pub requests_per_second: f64,
    /// Requests allowed at once after a quiet period.
    pub burst: u32,
    /// Whether the provider limits per app (`provider`) or per connected account
    /// (`connection`).
    pub scope: RateLimitScope,
    /// Budgets over windows (`{ requests = 60, per = "minute" }`); none for the many
    /// providers that state only a rate. Optional, so the single-rate form stays valid.
    #[serde(default)]
    pub windows: Vec<RateWindow>,
}

/// "At most `requests` in any `per`", counted per app or per connection.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateWindow {
    pub requests: u64,
    pub per: WindowLength,
    /// Defaults to the rate limit's own scope.
    #[serde(default)]
    pub scope: Option<RateLimitScope>,
}

/// A window's length: a named unit, or a number of seconds (HubSpot's 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum WindowLength {
    Seconds(u32),
    Unit(WindowUnit),
}

/// The units providers state their budgets in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowUnit {
    Second,
    Minute,
    Hour,
    Day,
}

impl WindowLength {
    /// The window in seconds.
    pub fn seconds(self) -> u32 {
        match self {
            WindowLength::Seconds(seconds) => seconds,
            WindowLength::Unit(WindowUnit::Second) => 1,
            WindowLength::Unit(WindowUnit::Minute) => 60,
            WindowLength::Unit(WindowUnit::Hour) => 3_600,
            WindowLength::Unit(WindowUnit::Day) => 86_400,
        }
    }
}

impl RateWindow {
    /// The window in seconds.
    pub fn seconds(&self) -> u32 {
        self.per.seconds()
    }

    /// Whom the window counts: its own scope, else the rate limit's.
    pub fn scope_or(&self, default: RateLimitScope) -> RateLimitScope {
        self.scope.unwrap_or(default)
    }
}

/// What a provider's limit applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitScope {
    Provider,
    Connection,
}

/// "When the JSON body has one of `values` at `pointer`, the call failed with `class`."
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorRule {
    /// A JSON pointer into the response body (`/ok`, `/errors/0/extensions/code`).
    pub pointer: String,
    /// The values there that mean this failure (`[false]`, `["RATELIMITED"]`).
    pub values: Vec<serde_json::Value>,
    /// What the failure is.
    pub class: FailureClass,
    /// A JSON pointer to the provider's error code, for logs and metrics.
    #[serde(default)]
    pub code: Option<String>,
}

/// What a failed call means for retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Slow down: retried after the provider's wait (or backoff).
    RateLimited,
    /// The token was refused: refreshed once by the vault, then permanent.
    Unauthorized,
    /// Retried with backoff.
    Transient,
    /// Not retried.
    Permanent,
}

impl ApiSpec {
    /// Checks what the types cannot; returns `(field, message)` for the first fault.
    pub(crate) fn check(&self, rules: super::EndpointRules) -> Result<(), (String, String)> {
        let rate = self.rate_limit.requests_per_second;
        if !(rate.is_finite() && rate > 0.0 && rate <= 10_000.0) {
            return Err((
                "api.rate_limit.requests_per_second".into(),
                "must be above 0 and at most 10000".into(),
            ));
        }
        if let Some(base) = &self.base_url {
            // A base that starts with a placeholder (Salesforce's `{instance_url}`) is an
            // origin the provider returns; it is checked once filled, at each call.
            if !base.starts_with('{')
                && let Err(err) = rules.check(&super::endpoint::template_probe(base))
            {
                return Err((
                    "api.base_url".into(),
                    format!("{err} (or start with a {{placeholder}} filled from the connection)"),
                ));
            }
            if base.ends_with('/') {
                return Err(("api.base_url".into(), "must not end with /".into()));
            }
            // The account fills a path segment, never the host: a value the connect
            // learned must not choose where the token goes.
            let account = format!("{{{ACCOUNT_PLACEHOLDER}}}");
            if let Some(at) = base.find(&account) {
                let host_end = base
                    .split_once("://")
                    .map(|(scheme, rest)| scheme.len() + 3 + rest.find('/').unwrap_or(rest.len()))
                    .unwrap_or(0);
                if at < host_end || base.starts_with(&account) {
                    return Err((
                        "api.base_url".into(),
                        "{account} may stand only in the path".into(),
                    ));
                }
            }
        }
        if let Credential::PathPrefix { prefix } = &self.credential {
            let plain = prefix.len() > 1
                && prefix.starts_with('/')
                && prefix[1..]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !plain {
                return Err((
                    "api.credential.prefix".into(),
                    "must be / and letters, digits, - or _ (Telegram's /bot)".into(),
                ));
            }
        }
        if let Credential::Header { name } = &self.credential
            && !plain_header_name(name)
        {
            return Err((
                "api.credential.name".into(),
                "must be a header name of letters, digits, - and _ (not one Junction sets)".into(),
            ));
        }
        for (name, value) in &self.headers {
            let field = || format!("api.headers.{name}");
            if !plain_header_name(name) {
                return Err((
                    field(),
                    "must be a header name of letters, digits, - and _ (not one Junction sets)"
                        .into(),
                ));
            }
            if !value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
                return Err((field(), "must be printable ASCII".into()));
            }
            if let Some(other) =
                super::placeholders(value).find(|name| *name != ACCOUNT_PLACEHOLDER)
            {
                return Err((
                    field(),
                    format!("only {{account}} is filled in a header, not {{{other}}}"),
                ));
            }
        }
        if let Some(test) = &self.test_request {
            if self.base_url.is_none() {
                return Err(("api.test_request".into(), "needs api.base_url".into()));
            }
            // A path, never a URL of its own: the token goes to the API base's host only.
            let path = &test.path;
            if !path.starts_with('/')
                || path.starts_with("//")
                || path.contains("://")
                || path.split(['/', '?']).any(|segment| segment == "..")
                || path
                    .chars()
                    .any(|c| c.is_whitespace() || c == '#' || c == '\\')
            {
                return Err((
                    "api.test_request.path".into(),
                    "must be a path starting with / (no host, no .., no #)".into(),
                ));
            }
        }
        if let Some(header) = &self.idempotency_header {
            let reserved = [
                "authorization",
                "cookie",
                "host",
                "content-length",
                "content-type",
            ];
            if header.is_empty()
                || !header
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                || reserved.contains(&header.to_ascii_lowercase().as_str())
            {
                return Err((
                    "api.idempotency_header".into(),
                    "must be a header name of letters, digits and - (not one Junction sets)".into(),
                ));
            }
        }
        if self.rate_limit.burst == 0 {
            return Err(("api.rate_limit.burst".into(), "must be at least 1".into()));
        }
        for (index, window) in self.rate_limit.windows.iter().enumerate() {
            let seconds = window.seconds();
            // Up to a week: a longer budget is a billing plan, not a rate limit.
            if !(1..=604_800).contains(&seconds) {
                return Err((
                    format!("api.rate_limit.windows[{index}].per"),
                    "must be second, minute, hour, day or 1 to 604800 seconds".into(),
                ));
            }
            if window.requests == 0 {
                return Err((
                    format!("api.rate_limit.windows[{index}].requests"),
                    "must be at least 1".into(),
                ));
            }
        }
        for (index, rule) in self.error_rules.iter().enumerate() {
            let field = |name: &str| format!("api.error_rules[{index}].{name}");
            for (name, pointer) in [
                ("pointer", Some(&rule.pointer)),
                ("code", rule.code.as_ref()),
            ] {
                if pointer.is_some_and(|p| !p.starts_with('/')) {
                    return Err((field(name), "must be a JSON pointer starting with /".into()));
                }
            }
            if rule.values.is_empty() {
                return Err((field("values"), "list at least one value".into()));
            }
        }
        Ok(())
    }
}

/// A header name the catalog may set: letters, digits, `-` and `_`, and none that
/// Junction or the HTTP client sets itself.
fn plain_header_name(name: &str) -> bool {
    let reserved = [
        "authorization",
        "cookie",
        "host",
        "content-length",
        "content-type",
        "transfer-encoding",
    ];
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !reserved.contains(&name.to_ascii_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(test: &str) -> ApiSpec {
        toml::from_str(&format!(
            "base_url = \"https://api.example.com\"\nrate_limit = {{ requests_per_second = 1.0, burst = 1, scope = \"provider\" }}\n{test}"
        ))
        .expect("spec")
    }

    #[test]
    fn a_test_request_is_a_path_on_the_api_base() {
        let ok = spec(r#"test_request = { method = "GET", path = "/user" }"#);
        assert_eq!(ok.check(super::super::EndpointRules::default()), Ok(()));
        for path in [
            "user",
            "//evil.example",
            "https://evil.example/",
            "/a/../b",
            "/a#b",
        ] {
            let bad = spec(&format!(
                r#"test_request = {{ method = "GET", path = "{path}" }}"#
            ));
            assert_eq!(
                bad.check(super::super::EndpointRules::default())
                    .map_err(|(field, _)| field),
                Err("api.test_request.path".to_owned()),
                "{path}"
            );
        }
    }

    #[test]
    fn windows_are_optional_and_read_in_units_or_seconds() {
        let single = spec("");
        assert!(single.rate_limit.windows.is_empty(), "the single-rate form");
        let windowed: ApiSpec = toml::from_str(
            r#"rate_limit = { requests_per_second = 1.0, burst = 10, scope = "connection", windows = [
  { requests = 60, per = "minute" },
  { requests = 5000, per = "day", scope = "provider" },
  { requests = 100, per = 10 },
] }"#,
        )
        .expect("spec");
        let read: Vec<(u64, u32, RateLimitScope)> = windowed
            .rate_limit
            .windows
            .iter()
            .map(|w| {
                (
                    w.requests,
                    w.seconds(),
                    w.scope_or(windowed.rate_limit.scope),
                )
            })
            .collect();
        assert_eq!(
            read,
            [
                (60, 60, RateLimitScope::Connection),
                (5000, 86_400, RateLimitScope::Provider),
                (100, 10, RateLimitScope::Connection),
            ]
        );
        assert_eq!(
            windowed.check(super::super::EndpointRules::default()),
            Ok(())
        );
        for (window, field) in [
            ("{ requests = 0, per = \"minute\" }", "requests"),
            ("{ requests = 5, per = 0 }", "per"),
            ("{ requests = 5, per = 2000000 }", "per"),
        ] {
            let bad: ApiSpec = toml::from_str(&format!(
                "rate_limit = {{ requests_per_second = 1.0, burst = 1, scope = \"provider\", windows = [{window}] }}"
            ))
            .expect("spec");
            assert_eq!(
                bad.check(super::super::EndpointRules::default())
                    .map_err(|(field, _)| field),
                Err(format!("api.rate_limit.windows[0].{field}")),
                "{window}"
            );
        }
        assert!(
            toml::from_str::<ApiSpec>(
                r#"rate_limit = { requests_per_second = 1.0, burst = 1, scope = "provider", windows = [{ requests = 5, per = "fortnight" }] }"#
            )
            .is_err(),
            "an unknown unit"
        );
    }

    #[test]
    fn an_idempotency_header_is_a_plain_header_name() {
        let ok = spec(r#"idempotency_header = "Idempotency-Key""#);
        assert_eq!(ok.check(super::super::EndpointRules::default()), Ok(()));
        for header in ["", "Idempotency Key", "X-Key:Host", "Authorization"] {
            let bad = spec(&format!(r#"idempotency_header = "{header}""#));
            assert_eq!(
                bad.check(super::super::EndpointRules::default())
                    .map_err(|(field, _)| field),
                Err("api.idempotency_header".to_owned()),
                "{header}"
            );
        }
    }
}

#[cfg(test)]
mod credential_tests {
    use super::*;
    use crate::{Catalog, EndpointRules};

    fn api(extra: &str) -> ApiSpec {
        toml::from_str(&format!(
            "rate_limit = {{ requests_per_second = 1.0, burst = 1, scope = \"provider\" }}\n{extra}"
        ))
        .expect("spec")
    }

    fn fault(extra: &str) -> Option<String> {
        api(extra)
            .check(EndpointRules::default())
            .err()
            .map(|(field, _)| field)
    }

    #[test]
    fn the_credential_is_a_bearer_token_unless_the_entry_says_otherwise() {
        assert_eq!(api("").credential, Credential::Bearer);
        assert_eq!(
            api(r#"credential = { style = "path_prefix", prefix = "/bot" }"#).credential,
            Credential::PathPrefix {
                prefix: "/bot".into()
            }
        );
        for prefix in ["bot", "/", "/bot/x", "/b?t", "/bo t"] {
            assert_eq!(
                fault(&format!(
                    r#"credential = {{ style = "path_prefix", prefix = "{prefix}" }}"#
                ))
                .as_deref(),
                Some("api.credential.prefix"),
                "{prefix}"
            );
        }
        for name in ["Authorization", "X Token", ""] {
            assert_eq!(
                fault(&format!(
                    r#"credential = {{ style = "header", name = "{name}" }}"#
                ))
                .as_deref(),
                Some("api.credential.name"),
                "{name}"
            );
        }
        assert!(
            toml::from_str::<ApiSpec>(
                "rate_limit = { requests_per_second = 1.0, burst = 1, scope = \"provider\" }\ncredential = { style = \"query\" }"
            )
            .is_err()
        );
    }

    #[test]
    fn headers_take_only_the_account_and_the_account_stays_in_the_path() {
        assert_eq!(
            fault(r#"headers = { "xero-tenant-id" = "{account}" }"#),
            None
        );
        assert_eq!(
            fault(r#"headers = { "xero-tenant-id" = "{shop}" }"#).as_deref(),
            Some("api.headers.xero-tenant-id")
        );
        assert_eq!(
            fault(r#"headers = { Cookie = "a" }"#).as_deref(),
            Some("api.headers.Cookie")
        );
        assert_eq!(
            fault("headers = { X-A = \"line\\nbreak\" }").as_deref(),
            Some("api.headers.X-A")
        );
        assert_eq!(
            fault(r#"base_url = "https://api.example.com/v3/company/{account}""#),
            None
        );
        for base in [
            "https://{account}.example.com/v3",
            "https://api.example.com{account}/v3",
            "{account}/v3",
        ] {
            assert_eq!(
                fault(&format!(r#"base_url = "{base}""#)).as_deref(),
                Some("api.base_url"),
                "{base}"
            );
        }
    }

    /// Issue 29's gaps: each of these entries can be called through the outbound client.
    #[test]
    fn telegram_xero_quickbooks_and_shopify_declare_how_calls_reach_them() {
        let catalog = Catalog::embedded().expect("catalog");
        let api = |id: &str| {
            catalog
                .get(id)
                .and_then(|provider| provider.api.clone())
                .unwrap_or_else(|| panic!("{id} has [api]"))
        };
        let telegram = api("telegram");
        assert_eq!(
            telegram.credential,
            Credential::PathPrefix {
                prefix: "/bot".into()
            }
        );
        assert_eq!(
            telegram.test_request.map(|t| t.path).as_deref(),
            Some("/getMe")
        );
        let xero = api("xero");
        assert_eq!(
            xero.headers.get("xero-tenant-id").map(String::as_str),
            Some("{account}")
        );
        let xero_account = catalog
            .get("xero")
            .and_then(|p| p.account_request.clone())
            .expect("xero account request");
        assert_eq!(xero_account.list.as_deref(), Some(""));
        assert_eq!(xero_account.newest_by.as_deref(), Some("/updatedDateUtc"));
        let intuit = api("intuit");
        assert_eq!(
            intuit.base_url.as_deref(),
            Some("https://quickbooks.api.intuit.com/v3/company/{account}")
        );
        let realm = catalog
            .get("intuit")
            .and_then(|p| p.account_request.clone())
            .and_then(|request| request.from_callback)
            .expect("intuit callback account");
        assert_eq!(realm.parameter, "realmId");
        assert!(realm.accepts("123146096291789"));
        for hostile in ["", "12a", "1/2", "../1", "1%2F2", "1 2"] {
            assert!(!realm.accepts(hostile), "{hostile}");
        }
        let shopify = api("shopify");
        assert_eq!(
            shopify.base_url.as_deref(),
            Some("https://{shop}/admin/api/2026-07")
        );
        assert_eq!(
            shopify.credential,
            Credential::Header {
                name: "X-Shopify-Access-Token".into()
            }
        );
        assert_eq!(
            shopify.test_request.map(|t| t.path).as_deref(),
            Some("/shop.json")
        );
        assert_eq!(
            (
                shopify.rate_limit.requests_per_second,
                shopify.rate_limit.burst
            ),
            (2.0, 40)
        );
    }
}
