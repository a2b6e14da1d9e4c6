//! The provider account a connection stands for, as the provider's webhooks name it:
//! what the account index keys a connection under, so that the event consumer can tell
//! whose a delivery is (`junction_pipeline::accounts`, docs/events.md).
//!
//! A webhook names its account in the field the catalog's `[webhook] account` points at
//! (Slack `team_id`, Stripe `account`, Shopify's shop domain header). A connection knows
//! its account from the connect: the catalog's `[oauth] account_id` in the token
//! response (Slack `/team/id`, Stripe Connect `/stripe_user_id`), the ID token's `sub`
//! for OpenID providers, or a URL parameter that is the account (Shopify's `shop`). For
//! most providers the two agree under the same provider id; [`RULES`] lists the
//! exceptions. Every source is one the connect verified: the token response and the ID
//! token come from the provider, and a shop is the host the tokens were exchanged with;
//! nothing the user's browser could change is indexed.
//!
//! Where the token response names no account, the catalog's `[account_request]` says how
//! the connect asks the provider with the fresh access token ([`AccountLookup`]): Gmail's
//! profile names the mailbox; GitHub lists the App installations the user can access,
//! among which the callback's `installation_id` (which the browser could change) counts
//! only if listed; Xero lists every tenant the user connected, among which the one
//! connected last is this authorization's (`newest_by`). QuickBooks names the company in
//! the callback's `realmId` (`from_callback`): a malformed one is refused before the
//! exchange, and a well-formed one counts only if the company answers the fresh token.

use std::time::Duration;

use serde_json::Value;
use url::Url;

use super::connections::Connection;
use junction_aws::crypto::SecretString;
use junction_aws::link_header::{LinkHeaderError, next_link};
use junction_aws::response_body::{BodyError, read_capped};
use junction_catalog::{
    ACCOUNT_PLACEHOLDER, AccountPagination, AccountRequest, CallbackAccount, EndpointError,
    EndpointRules,
};

/// A provider account as the index keys it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderAccount {
    /// The provider as the webhook URL names it (`/webhooks/<provider>`).
    pub provider: String,
    /// The account as the ingress reads it from a delivery.
    pub account: String,
}

impl ProviderAccount {
    /// `<provider>#<account>`: the index's key (`junction_pipeline::accounts::provider_account_key`).
    pub fn key(&self) -> String {
        format!("{}#{}", self.provider, self.account)
    }
}

/// Where a connection's account is, for the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The account the connect stored ([`Connection::account_id`]).
    AccountId,
    /// A URL parameter of the connect (checked against the catalog's pattern, lowercased).
    Param(&'static str),
}

/// A provider whose webhooks name its connections' accounts otherwise than under its own
/// id and its `account_id`.
#[derive(Debug, Clone, Copy)]
struct Rule {
    connection_provider: &'static str,
    webhook_provider: &'static str,
    source: Source,
}

/// The exceptions; every other provider: its own id and [`Source::AccountId`].
const RULES: [Rule; 2] = [
    // Connected accounts' events arrive on the platform's Stripe endpoint, with the
    // connected account (stripe_user_id) in `account` (catalog: stripe-connect.toml).
    Rule {
        connection_provider: "stripe-connect",
        webhook_provider: "stripe",
        source: Source::AccountId,
    },
    // The connected account is the shop; deliveries name it in X-Shopify-Shop-Domain.
    Rule {
        connection_provider: "shopify",
        webhook_provider: "shopify",
        source: Source::Param("shop"),
    },
];

/// The connection's provider account, when it has one the webhooks can name.
pub(crate) fn of(connection: &Connection) -> Option<ProviderAccount> {
    let (provider, source) = RULES
        .iter()
        .find(|rule| rule.connection_provider == connection.provider)
        .map_or((connection.provider.as_str(), Source::AccountId), |rule| {
            (rule.webhook_provider, rule.source)
        });
    let account = match source {
        Source::AccountId => connection.account_id.as_deref(),
        Source::Param(name) => connection.params.get(name).map(String::as_str),
    }
    .filter(|account| !account.is_empty())?;
    Some(ProviderAccount {
        provider: provider.to_owned(),
        account: account.to_owned(),
    })
}

/// The connect's account request: one client, built once, with a short connect and total
/// timeout per request, no redirects (the token must not follow one), and a deadline on
/// the whole lookup (every page).
#[derive(Debug, Clone)]
pub(crate) struct AccountLookup {
    http: reqwest::Client,
}

/// A request's connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A request's total timeout (one page).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The whole lookup, every page: the user is waiting on the callback.
pub(crate) const LOOKUP_DEADLINE: Duration = Duration::from_secs(10);
/// Pages read at most (GitHub: 100 installations a page).
const MAX_PAGES: usize = 10;
/// One page's body at most. A GitHub installation is about 2 KB of JSON, so 100 are
/// about 200 KB; Gmail's profile is under 200 bytes.
pub(crate) const ACCOUNT_RESPONSE_CAP: usize = 1024 * 1024;
/// The longest account kept (the index key is `<provider>#<account>`).
const MAX_ACCOUNT_CHARS: usize = 512;

/// Why the account request did not answer with an account list or an account; the
/// connection is stored without one (a reconnect keeps the one it had) and this is
/// logged. Never carries the token; transport errors have their URL removed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AccountLookupError {
    /// The catalog's URL, or a next page's, is not one Junction calls.
    #[error("the account request's URL is refused")]
    Endpoint(#[source] EndpointError),
    /// A next page on another origin than the first: the token is not sent there.
    #[error("the account list's next page is on another origin")]
    ForeignNextPage,
    /// No whole answer (timeout, connection refused, broken off).
    #[error("the account request failed in transit")]
    Unreachable(#[source] reqwest::Error),
    /// The lookup as a whole ran past [`LOOKUP_DEADLINE`].
    #[error("the account lookup took longer than {0:?}")]
    TimedOut(Duration),
    /// The provider answered with a status other than 2xx (GitHub: 403 for an OAuth App's
    /// token, 401 for a revoked one).
    #[error("the account request answered HTTP {0}")]
    Status(u16),
    /// The answer's `Link` header is not one (RFC 8288): which page comes next is
    /// unknown, and a partial list could choose the wrong installation.
    #[error("the account list's Link header is unreadable")]
    Link(#[source] LinkHeaderError),
    /// The answer is over [`ACCOUNT_RESPONSE_CAP`] or broke off.
    #[error("the account request's answer could not be read")]
    Body(#[source] BodyError),
    /// The answer is not JSON.
    #[error("the account request's answer is not JSON")]
    NotJson(#[source] serde_json::Error),
    /// The answer has no usable value at the catalog's pointer (a string or a number, not
    /// empty, at most 512 characters).
    #[error("the account request's answer has no account at {0}")]
    NoAccount(String),
    /// The list goes on past [`MAX_PAGES`] pages.
    #[error("the account list goes on past {0} pages")]
    TooManyPages(usize),
}

/// What the account request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LookedUp {
    /// The token's own account (a response without `list`): the connection's identity,
    /// compared on a reconnect like an account the token response names.
    Own(String),
    /// One of the accounts the user can access, chosen (or [`NotChosen`]): where the
    /// connection's events come from, not who the user is, so a reconnect records the
    /// new choice instead of comparing it.
    Chosen(Result<String, NotChosen>),
}

/// Why no account was chosen from the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotChosen {
    /// The callback named an account the user's token cannot access (spoofed, or not
    /// the user's): it is not recorded, and no other is.
    Inaccessible,
    /// The callback named none and the list has none, or several (none the connection
    /// already had): which one is meant is unknown.
    Ambiguous { listed: usize },
}

impl NotChosen {
    /// For the log line.
    pub(crate) fn code(self) -> &'static str {
        match self {
            NotChosen::Inaccessible => "account_not_accessible",
            NotChosen::Ambiguous { .. } => "account_ambiguous",
        }
    }
}

impl Default for AccountLookup {
    fn default() -> Self {
        AccountLookup::new()
    }
}

impl AccountLookup {
    pub(crate) fn new() -> Self {
        let http = junction_aws::tls::http_client_builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .user_agent("junction-oauth/1")
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        AccountLookup { http }
    }

    /// Asks the provider for the account, within [`LOOKUP_DEADLINE`]. `chosen` is the
    /// callback's `chosen_by` parameter, `stored` the account of the connection being
    /// reconnected.
    pub(crate) async fn look_up(
        &self,
        request: &AccountRequest,
        rules: EndpointRules,
        token: &SecretString,
        chosen: Option<&str>,
        stored: Option<&str>,
    ) -> Result<LookedUp, AccountLookupError> {
        tokio::time::timeout(
            LOOKUP_DEADLINE,
            self.look_up_now(request, rules, token, chosen, stored),
        )
        .await
        .map_err(|_| AccountLookupError::TimedOut(LOOKUP_DEADLINE))?
    }

    async fn look_up_now(
        &self,
        request: &AccountRequest,
        rules: EndpointRules,
        token: &SecretString,
        chosen: Option<&str>,
        stored: Option<&str>,
    ) -> Result<LookedUp, AccountLookupError> {
        if let Some(callback) = &request.from_callback {
            return self
                .confirm(request, callback, rules, token, chosen)
                .await
                .map(LookedUp::Own);
        }
        let first = rules
            .check(&request.url)
            .map_err(AccountLookupError::Endpoint)?;
        let normalize = |text: String| {
            if request.lowercase {
                text.to_lowercase()
            } else {
                text
            }
        };
        let pointer = request.account.as_deref().unwrap_or_default();
        let Some(list) = &request.list else {
            let (body, _) = self.get(request, &first, token).await?;
            return body
                .pointer(pointer)
                .and_then(account_text)
                .map(|account| LookedUp::Own(normalize(account)))
                .ok_or_else(|| AccountLookupError::NoAccount(pointer.to_owned()));
        };
        let chosen = chosen.map(|value| normalize(value.to_owned()));
        let mut listed: Vec<Listed> = Vec::new();
        let mut url = first.clone();
        for _ in 0..MAX_PAGES {
            let (body, next) = self.get(request, &url, token).await?;
            let items = body
                .pointer(list)
                .and_then(Value::as_array)
                .ok_or_else(|| AccountLookupError::NoAccount(list.clone()))?;
            listed.extend(items.iter().filter_map(|item| {
                let account = item.pointer(pointer).and_then(account_text)?;
                let stamp = request
                    .newest_by
                    .as_deref()
                    .and_then(|newest| item.pointer(newest))
                    .and_then(account_text);
                Some(Listed {
                    account: normalize(account),
                    stamp,
                })
            }));
            // Found what is looked for: later pages cannot change the answer.
            let wanted = chosen.as_deref().or(stored);
            if wanted.is_some_and(|wanted| listed.iter().any(|item| item.account == wanted)) {
                return Ok(LookedUp::Chosen(choose(&listed, chosen.as_deref(), stored)));
            }
            let next = match (request.pagination, next) {
                (AccountPagination::LinkHeader, Some(next)) => next,
                _ => return Ok(LookedUp::Chosen(choose(&listed, chosen.as_deref(), stored))),
            };
            let next = first
                .join(&next)
                .map_err(|err| AccountLookupError::Endpoint(EndpointError::NotAUrl(err)))?;
            if next.origin() != first.origin() {
                return Err(AccountLookupError::ForeignNextPage);
            }
            url = rules
                .check(next.as_str())
                .map_err(AccountLookupError::Endpoint)?;
        }
        Err(AccountLookupError::TooManyPages(MAX_PAGES))
    }

    /// The callback's account (QuickBooks' `realmId`), confirmed: the catalog's URL with
    /// it as `{account}` must answer 2xx to the fresh token. The value came through the
    /// user's browser; the state proves whose callback it is, not that the user did not
    /// edit the parameter to name another company. The flow refused a malformed value
    /// before the exchange; one that is well formed but not served to this grant is
    /// refused here ([`AccountLookupError::Status`]), so another company's webhooks are
    /// never matched to this connection.
    async fn confirm(
        &self,
        request: &AccountRequest,
        callback: &CallbackAccount,
        rules: EndpointRules,
        token: &SecretString,
        value: Option<&str>,
    ) -> Result<String, AccountLookupError> {
        let value = value
            .filter(|value| callback.accepts(value))
            .ok_or_else(|| AccountLookupError::NoAccount(callback.parameter.clone()))?;
        let url = request
            .url
            .replace(&format!("{{{ACCOUNT_PLACEHOLDER}}}"), value);
        let url = rules.check(&url).map_err(AccountLookupError::Endpoint)?;
        self.get(request, &url, token).await?;
        Ok(value.to_owned())
    }

    /// One authenticated `GET`: the JSON body and the `Link` header's `rel="next"`.
    async fn get(
        &self,
        request: &AccountRequest,
        url: &Url,
        token: &SecretString,
    ) -> Result<(Value, Option<String>), AccountLookupError> {
        let mut call = self.http.get(url.clone()).bearer_auth(token.expose());
        if !request
            .headers
            .keys()
            .any(|name| name.eq_ignore_ascii_case("accept"))
        {
            call = call.header(http::header::ACCEPT, "application/json");
        }
        for (name, value) in &request.headers {
            call = call.header(name.as_str(), value.as_str());
        }
        let response = call
            .send()
            .await
            .map_err(|err| AccountLookupError::Unreachable(err.without_url()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(AccountLookupError::Status(status.as_u16()));
        }
        // Several Link fields are one list (RFC 9110 §5.3).
        let links: Vec<&str> = response
            .headers()
            .get_all(http::header::LINK)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        let next = next_link(&links.join(", ")).map_err(AccountLookupError::Link)?;
        let body = read_capped(response, ACCOUNT_RESPONSE_CAP)
            .await
            .map_err(AccountLookupError::Body)?;
        let body = serde_json::from_slice(&body).map_err(AccountLookupError::NotJson)?;
        Ok((body, next))
    }
}

/// An account as the webhooks name it: a string as is, a number as its decimal text
/// (GitHub's installation id, as the ingress reads `installation.id`).
fn account_text(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        _ => return None,
    };
    (!text.is_empty() && text.chars().count() <= MAX_ACCOUNT_CHARS).then_some(text)
}

/// One account of a list, with its value at the catalog's `newest_by` when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    pub(crate) account: String,
    pub(crate) stamp: Option<String>,
}

/// The rule for a list of accounts the user can access: the callback's choice if listed
/// (never one that is not); without a choice, the connection's own account if still
/// listed, else the only one listed, else (with `newest_by`) the one stamped latest if
/// no other shares its stamp.
pub(crate) fn choose(
    listed: &[Listed],
    chosen: Option<&str>,
    stored: Option<&str>,
) -> Result<String, NotChosen> {
    let is_listed = |account: &str| listed.iter().any(|listed| listed.account == account);
    if let Some(chosen) = chosen {
        return if is_listed(chosen) {
            Ok(chosen.to_owned())
        } else {
            Err(NotChosen::Inaccessible)
        };
    }
    if let Some(stored) = stored.filter(|stored| is_listed(stored)) {
        return Ok(stored.to_owned());
    }
    let mut distinct: Vec<&str> = listed.iter().map(|item| item.account.as_str()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    if let [only] = distinct.as_slice() {
        return Ok((*only).to_owned());
    }
    let newest = listed.iter().filter_map(|item| item.stamp.as_deref()).max();
    let mut latest: Vec<&str> = listed
        .iter()
        .filter(|item| newest.is_some() && item.stamp.as_deref() == newest)
        .map(|item| item.account.as_str())
        .collect();
    latest.sort_unstable();
    latest.dedup();
    match latest.as_slice() {
        [only] => Ok((*only).to_owned()),
        _ => Err(NotChosen::Ambiguous {
            listed: distinct.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use crate::connections::sample_connection;
    use crate::testing::harness_with;

    use super::*;

    fn connection(provider: &str, account_id: Option<&str>, params: &[(&str, &str)]) -> Connection {
        let mut connection = sample_connection("conn_1", "acme", 1_000);
        connection.provider = provider.into();
        connection.account_id = account_id.map(str::to_owned);
        connection.params = params
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        connection
    }

    fn key(connection: &Connection) -> Option<String> {
        connection.provider_account().map(|account| account.key())
    }

    #[test]
    fn the_account_is_keyed_as_the_provider_s_webhooks_name_it() {
        assert_eq!(
            key(&connection("slack", Some("T0123"), &[])).as_deref(),
            Some("slack#T0123"),
            "Slack: the team of the token response, the team_id of event callbacks"
        );
        assert_eq!(
            key(&connection("stripe-connect", Some("acct_1Ab"), &[])).as_deref(),
            Some("stripe#acct_1Ab"),
            "Stripe Connect: the connected account, on the platform's Stripe webhooks"
        );
        assert_eq!(
            key(&connection(
                "shopify",
                None,
                &[("shop", "acme.myshopify.com")]
            ))
            .as_deref(),
            Some("shopify#acme.myshopify.com"),
            "Shopify: the shop"
        );
        assert_eq!(key(&connection("shopify", Some("x"), &[])), None, "no shop");
        assert_eq!(
            key(&connection("github", None, &[])),
            None,
            "no account: not indexed"
        );
        assert_eq!(key(&connection("slack", Some(""), &[])), None);
    }

    /// HubSpot: the token endpoint's `hub_id` (a number) is read as the same text the
    /// ingress reads from a webhook's `portalId` (`62515`, junction-webhooks'
    /// ingress tests), so a HubSpot connection is indexed as its webhooks name it.
    #[tokio::test]
    async fn a_hubspot_connection_is_keyed_by_the_hub_id_of_its_token_response() {
        use std::collections::BTreeMap;

        use crate::provider::{ClientCredentials, ProviderClient};
        use junction_aws::crypto::SecretString;
        use junction_catalog::EndpointRules;

        // HubSpot's documented token response (changelog "additional details returned
        // when generating OAuth access tokens").
        const HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 150\r\n\r\n{\"token_type\":\"bearer\",\"refresh_token\":\"na1-ab12\",\"hub_id\":62515,\"scopes\":[\"oauth\"],\"access_token\":\"AAA1234-TOKEN\",\"expires_in\":1800,\"user_id\":123456}";
        let base = junction_aws::response_body::testing::stream_answer(HEAD, 0).await;
        let mut spec = junction_catalog::Catalog::embedded()
            .expect("catalog")
            .get("hubspot")
            .and_then(|provider| provider.oauth.clone())
            .expect("HubSpot's OAuth spec");
        spec.token_url = format!("{base}/token");
        let response = ProviderClient::new()
            .with_endpoint_rules(EndpointRules::LoopbackHttpForTests)
            .exchange_code(
                &spec,
                &ClientCredentials {
                    client_id: "client".into(),
                    client_secret: SecretString::new("secret".to_owned()),
                },
                &BTreeMap::new(),
                "code",
                "https://junction.example/oauth/hubspot/callback",
                None,
            )
            .await
            .expect("token response");
        assert_eq!(response.account_id.as_deref(), Some("62515"));
        assert_eq!(
            key(&connection("hubspot", response.account_id.as_deref(), &[])).as_deref(),
            Some("hubspot#62515"),
            "HubSpot: the hub id, as webhooks' portalId names it"
        );
    }

    #[tokio::test]
    async fn a_connect_stores_the_account_the_token_response_names() {
        let h = harness_with(Default::default(), "account_id = \"/account_id\"\n").await;
        let id = h.connect().await;
        let stored = h.stored(&id).await;
        assert_eq!(
            stored.provider_account(),
            Some(ProviderAccount {
                provider: "fakeauth".into(),
                account: fake_provider::DEFAULT_ACCOUNT.into(),
            })
        );
    }

    /// The rule for a list: the callback's choice only if listed; else the connection's
    /// own if still listed; else the only one.
    #[test]
    fn an_account_is_chosen_only_among_those_the_user_can_access() {
        let listed = |ids: &[&str]| {
            ids.iter()
                .map(|id| Listed {
                    account: (*id).to_owned(),
                    stamp: None,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            choose(&listed(&["1", "2"]), Some("2"), None),
            Ok("2".into())
        );
        assert_eq!(
            choose(&listed(&["1", "2"]), Some("3"), None),
            Err(NotChosen::Inaccessible),
            "a spoofed choice is never recorded"
        );
        assert_eq!(
            choose(&listed(&["1"]), Some("3"), None),
            Err(NotChosen::Inaccessible),
            "nor replaced by the only one listed"
        );
        assert_eq!(choose(&listed(&["1"]), None, None), Ok("1".into()));
        assert_eq!(
            choose(&listed(&["1", "2"]), None, None),
            Err(NotChosen::Ambiguous { listed: 2 })
        );
        assert_eq!(
            choose(&listed(&[]), None, None),
            Err(NotChosen::Ambiguous { listed: 0 })
        );
        assert_eq!(
            choose(&listed(&["1", "2"]), None, Some("2")),
            Ok("2".into())
        );
        assert_eq!(
            choose(&listed(&["1"]), None, Some("9")),
            Ok("1".into()),
            "the stored one is gone: the only one"
        );
        // Xero: several tenants listed, none named; the one connected last.
        let stamped = |items: &[(&str, Option<&str>)]| {
            items
                .iter()
                .map(|(id, stamp)| Listed {
                    account: (*id).to_owned(),
                    stamp: stamp.map(str::to_owned),
                })
                .collect::<Vec<_>>()
        };
        let tenants = stamped(&[
            ("a", Some("2026-10-01T09:00:00.1234567")),
            ("b", Some("2026-12-07T22:41:07.5000000")),
            ("c", None),
        ]);
        assert_eq!(choose(&tenants, None, None), Ok("b".into()));
        assert_eq!(
            choose(&tenants, None, Some("a")),
            Ok("a".into()),
            "a reconnect keeps its own tenant while it is listed"
        );
        assert_eq!(
            choose(&tenants, Some("z"), None),
            Err(NotChosen::Inaccessible)
        );
        assert_eq!(
            choose(
                &stamped(&[
                    ("a", Some("2026-12-07T22:41:07")),
                    ("b", Some("2026-12-07T22:41:07"))
                ]),
                None,
                None
            ),
            Err(NotChosen::Ambiguous { listed: 2 }),
            "two connected at the same moment: which one is meant is unknown"
        );
        assert_eq!(
            choose(&stamped(&[("a", None), ("b", None)]), None, None),
            Err(NotChosen::Ambiguous { listed: 2 })
        );
    }

    use std::sync::{Arc, Mutex};

    use fake_provider::{ApiRequest, AuthServerConfig, ScriptedResponse};
    use serde_json::json;

    use crate::testing::BASE;
    use crate::{CallbackOutcome, CallbackQuery, FlowError};

    /// A GitHub-like entry: the installations the user can access, two a page, with
    /// `installation_id` on the callback choosing one.
    const INSTALLATIONS: &str = "\n[account_request]\nurl = \"{provider_api}/user/installations?per_page=2\"\nheaders = { Accept = \"application/vnd.github+json\" }\nlist = \"/installations\"\naccount = \"/id\"\nchosen_by = \"installation_id\"\npagination = \"link_header\"\n";

    /// A Gmail-like entry: the profile's address, lowercased.
    const PROFILE: &str = "\n[account_request]\nurl = \"{provider_api}/gmail/v1/users/me/profile\"\naccount = \"/emailAddress\"\nlowercase = true\n";

    /// Serves `/user/installations` as GitHub does: `{"total_count","installations"}`,
    /// `per_page` a page, a `link` header to the next page while there is one.
    fn serve_installations(h: &crate::testing::Harness, ids: Vec<u64>) {
        let base = h.server.provider_api_base();
        h.server.serve_provider_api(move |request: &ApiRequest| {
            assert_eq!(request.path, "/user/installations");
            assert_eq!(request.header("accept"), Some("application/vnd.github+json"));
            let per_page: usize = request
                .query_param("per_page")
                .and_then(|n| n.parse().ok())
                .unwrap_or(30);
            let page: usize = request
                .query_param("page")
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            let items: Vec<_> = ids
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .map(|id| json!({"id": id, "account": {"login": format!("org-{id}")}, "app_id": 1}))
                .collect();
            let mut response = ScriptedResponse::json(&json!({"total_count": ids.len(), "installations": items}));
            if page * per_page < ids.len() {
                response.headers.push((
                    "link".into(),
                    format!(
                        "<{base}/user/installations?per_page={per_page}&page={}>; rel=\"next\", <{base}/user/installations?per_page={per_page}&page=9>; rel=\"last\"",
                        page + 1
                    ),
                ));
            }
            response
        });
    }

    /// The callback query, with `installation_id` added as GitHub adds it.
    fn with_installation(mut query: CallbackQuery, id: &str) -> CallbackQuery {
        query.pairs.push(("installation_id".into(), id.into()));
        query.pairs.push(("setup_action".into(), "install".into()));
        query
    }

    async fn connected(h: &crate::testing::Harness, query: &CallbackQuery) -> Connection {
        match h.flow.callback("fakeauth", query, BASE).await {
            Ok(CallbackOutcome::Connected { connection_id, .. }) => h.stored(&connection_id).await,
            other => panic!("not connected: {other:?}"),
        }
    }

    fn installation_requests(h: &crate::testing::Harness) -> Vec<Option<String>> {
        h.server
            .provider_requests()
            .iter()
            .map(|request| request.query_param("page").map(str::to_owned))
            .collect()
    }

    #[tokio::test]
    async fn a_github_connect_records_the_installation_the_user_can_access() {
        let h = harness_with(AuthServerConfig::default(), INSTALLATIONS).await;
        serve_installations(&h, vec![101, 202, 303]);
        let query = with_installation(h.authorize().await, "303");
        let stored = connected(&h, &query).await;
        assert_eq!(
            stored.provider_account(),
            Some(ProviderAccount {
                provider: "fakeauth".into(),
                account: "303".into()
            })
        );
        assert_eq!(
            installation_requests(&h),
            [None, Some("2".to_owned())],
            "the second page, found by its link header"
        );
        let request = &h.server.provider_requests()[0];
        assert!(
            request
                .header("authorization")
                .is_some_and(|value| value.starts_with("Bearer ")),
            "the user's token"
        );
    }

    /// The attack: a callback URL edited to name an installation the user cannot access
    /// (someone else's organization) must not attach that installation's webhooks to
    /// this tenant. The connect succeeds (the grant is the user's own) without an account.
    #[tokio::test]
    async fn a_spoofed_installation_id_is_not_recorded() {
        let h = harness_with(AuthServerConfig::default(), INSTALLATIONS).await;
        serve_installations(&h, vec![101]);
        let query = with_installation(h.authorize().await, "999999");
        let stored = connected(&h, &query).await;
        assert_eq!(stored.account_id, None);
        assert_eq!(stored.provider_account(), None, "not indexed");
    }

    #[tokio::test]
    async fn without_an_installation_id_only_a_single_installation_is_recorded() {
        let h = harness_with(AuthServerConfig::default(), INSTALLATIONS).await;
        serve_installations(&h, vec![101]);
        let one = connected(&h, &h.authorize().await).await;
        assert_eq!(one.account_id.as_deref(), Some("101"));

        serve_installations(&h, vec![101, 202, 303]);
        let several = connected(&h, &h.authorize().await).await;
        assert_eq!(several.account_id, None, "which one is meant is unknown");
        serve_installations(&h, vec![]);
        let none = connected(&h, &h.authorize().await).await;
        assert_eq!(none.account_id, None);
    }

    /// A reconnect records the installation chosen now (the user's, so a new choice
    /// replaces the old), keeps the one it had when none is named and it is still
    /// accessible, and keeps it when the lookup fails.
    #[tokio::test]
    async fn a_github_reconnect_records_the_installation_chosen_now() {
        let h = harness_with(AuthServerConfig::default(), INSTALLATIONS).await;
        serve_installations(&h, vec![101, 202, 303]);
        let id = match h
            .flow
            .callback(
                "fakeauth",
                &with_installation(h.authorize().await, "101"),
                BASE,
            )
            .await
        {
            Ok(CallbackOutcome::Connected { connection_id, .. }) => connection_id,
            other => panic!("{other:?}"),
        };
        let reconnect = h.authorize_as(Some(id.clone())).await;
        h.flow
            .callback("fakeauth", &reconnect, BASE)
            .await
            .expect("kept");
        assert_eq!(h.stored(&id).await.account_id.as_deref(), Some("101"));

        let reconnect = with_installation(h.authorize_as(Some(id.clone())).await, "303");
        h.flow
            .callback("fakeauth", &reconnect, BASE)
            .await
            .expect("chosen");
        assert_eq!(h.stored(&id).await.account_id.as_deref(), Some("303"));
        assert!(h.server.grants().iter().all(|grant| !grant.revoked));

        h.server.serve_provider_api(|_| {
            ScriptedResponse::with_status(503, &json!({"message": "unavailable"}))
        });
        let reconnect = h.authorize_as(Some(id.clone())).await;
        h.flow
            .callback("fakeauth", &reconnect, BASE)
            .await
            .expect("connected");
        assert_eq!(
            h.stored(&id).await.account_id.as_deref(),
            Some("303"),
            "a failed lookup keeps the account"
        );
    }

    #[tokio::test]
    async fn a_gmail_connect_records_the_profile_s_address_lowercased() {
        let h = harness_with(AuthServerConfig::default(), PROFILE).await;
        let address = Arc::new(Mutex::new("Ada.Lovelace@Example.com".to_owned()));
        let served = address.clone();
        h.server.serve_provider_api(move |request| {
            assert_eq!(request.path, "/gmail/v1/users/me/profile");
            let address = served.lock().map(|a| a.clone()).unwrap_or_default();
            ScriptedResponse::json(&json!({"emailAddress": address, "messagesTotal": 12, "threadsTotal": 7, "historyId": "4321"}))
        });
        let id = h.connect().await;
        let stored = h.stored(&id).await;
        assert_eq!(
            stored
                .provider_account()
                .map(|account| account.key())
                .as_deref(),
            Some("fakeauth#ada.lovelace@example.com")
        );

        // A reconnect to another mailbox is another account: refused, nothing changed.
        if let Ok(mut a) = address.lock() {
            *a = "someone.else@example.com".into();
        }
        let query = h.authorize_as(Some(id.clone())).await;
        let err = h
            .flow
            .callback("fakeauth", &query, BASE)
            .await
            .expect_err("another mailbox");
        assert!(matches!(err, FlowError::AccountMismatch { .. }), "{err}");
        assert_eq!(h.stored(&id).await, stored);

        // The same mailbox, spelled with other capitals, is the same account.
        if let Ok(mut a) = address.lock() {
            *a = "ADA.LOVELACE@example.com".into();
        }
        let query = h.authorize_as(Some(id.clone())).await;
        h.flow
            .callback("fakeauth", &query, BASE)
            .await
            .expect("same mailbox");
        assert_eq!(
            h.stored(&id).await.account_id.as_deref(),
            Some("ada.lovelace@example.com")
        );
    }

    /// A failed lookup does not lose the connection: it is stored, without an account
    /// (logged), for every kind of failure.
    #[tokio::test]
    async fn a_failed_account_lookup_connects_without_an_account() {
        let h = harness_with(AuthServerConfig::default(), PROFILE).await;
        for answer in [
            ScriptedResponse::with_status(403, &json!({"message": "Resource not accessible"})),
            ScriptedResponse::json(&json!({"messagesTotal": 1})),
            ScriptedResponse {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body: "not json".into(),
                delay: Duration::ZERO,
            },
            ScriptedResponse::json(&json!({"emailAddress": "x".repeat(ACCOUNT_RESPONSE_CAP)})),
        ] {
            h.server.serve_provider_api(move |_| answer.clone());
            let id = h.connect().await;
            let stored = h.stored(&id).await;
            assert_eq!(stored.account_id, None);
            assert!(stored.tokens.is_some(), "connected");
        }
    }

    /// Xero's entry: GET /connections answers a top-level array of every tenant the user
    /// ever connected; the one connected last is this authorization's.
    const XERO_TENANTS: &str = "\n[account_request]\nurl = \"{provider_api}/connections\"\nlist = \"\"\naccount = \"/tenantId\"\nnewest_by = \"/updatedDateUtc\"\n";

    fn serve_tenants(h: &crate::testing::Harness, tenants: Vec<(&'static str, &'static str)>) {
        h.server.serve_provider_api(move |request: &ApiRequest| {
            assert_eq!(request.path, "/connections");
            let items: Vec<_> = tenants
                .iter()
                .map(|(tenant, updated)| {
                    json!({
                        "id": format!("conn-{tenant}"),
                        "authEventId": "d99ecdfe-391d-43d2-b834-17636ba90e8d",
                        "tenantId": tenant,
                        "tenantType": "ORGANISATION",
                        "tenantName": format!("Org {tenant}"),
                        "createdDateUtc": "2019-07-09T23:40:30.1833130",
                        "updatedDateUtc": updated,
                    })
                })
                .collect();
            ScriptedResponse::json(&json!(items))
        });
    }

    #[tokio::test]
    async fn a_xero_connect_records_the_tenant_connected_last() {
        let h = harness_with(AuthServerConfig::default(), XERO_TENANTS).await;
        serve_tenants(
            &h,
            vec![
                (
                    "70784a63-d24b-46a9-a4db-0e70a274b056",
                    "2020-05-15T01:35:13.8491980",
                ),
                (
                    "fe79f7dd-b6d4-4a92-ba7b-538af6289c58",
                    "2026-12-07T22:41:07.1000000",
                ),
                (
                    "0c9b1f6a-8a34-4b52-9d2b-1c2f9f0a1234",
                    "2026-10-01T09:00:00.0000000",
                ),
            ],
        );
        let id = h.connect().await;
        assert_eq!(
            h.stored(&id).await.provider_account(),
            Some(ProviderAccount {
                provider: "fakeauth".into(),
                account: "fe79f7dd-b6d4-4a92-ba7b-538af6289c58".into(),
            }),
            "the newest updatedDateUtc"
        );
        let request = &h.server.provider_requests()[0];
        assert!(
            request
                .header("authorization")
                .is_some_and(|value| value.starts_with("Bearer ")),
            "the fresh token"
        );

        // The user connects another organisation later: a reconnect of this connection
        // keeps its own tenant while Xero still lists it.
        serve_tenants(
            &h,
            vec![
                (
                    "fe79f7dd-b6d4-4a92-ba7b-538af6289c58",
                    "2026-12-07T22:41:07.1000000",
                ),
                (
                    "11111111-2222-4333-8444-555555555555",
                    "2026-12-08T08:00:00.0000000",
                ),
            ],
        );
        let reconnect = h.authorize_as(Some(id.clone())).await;
        h.flow
            .callback("fakeauth", &reconnect, BASE)
            .await
            .expect("reconnected");
        assert_eq!(
            h.stored(&id).await.account_id.as_deref(),
            Some("fe79f7dd-b6d4-4a92-ba7b-538af6289c58")
        );
        // A new connection now is the newly connected organisation.
        let other = h.connect().await;
        assert_eq!(
            h.stored(&other).await.account_id.as_deref(),
            Some("11111111-2222-4333-8444-555555555555")
        );
    }

    /// QuickBooks' entry: the realm from the callback, confirmed by companyinfo.
    const REALM: &str = "\n[account_request]\nurl = \"{provider_api}/v3/company/{account}/companyinfo/{account}\"\nfrom_callback = { parameter = \"realmId\", pattern = \"^[0-9]{1,32}$\" }\n";

    /// The user's grant covers realm 4620816365 only, as Intuit's tokens cover the one
    /// company picked on the consent screen.
    fn serve_company(h: &crate::testing::Harness) {
        h.server.serve_provider_api(|request: &ApiRequest| {
            if request.path == "/v3/company/4620816365/companyinfo/4620816365" {
                ScriptedResponse::json(&json!({"CompanyInfo": {"CompanyName": "Acme", "Id": "1"}}))
            } else {
                ScriptedResponse::with_status(
                    403,
                    &json!({"fault": {"error": [{"code": "3100", "message": "ApplicationAuthorizationFailed"}]}}),
                )
            }
        });
    }

    fn with_realm(mut query: CallbackQuery, realm: &str) -> CallbackQuery {
        query.pairs.push(("realmId".into(), realm.into()));
        query
    }

    #[tokio::test]
    async fn a_quickbooks_connect_records_the_confirmed_realm_of_its_callback() {
        let h = harness_with(AuthServerConfig::default(), REALM).await;
        serve_company(&h);
        let stored = connected(&h, &with_realm(h.authorize().await, "4620816365")).await;
        assert_eq!(
            stored
                .provider_account()
                .map(|account| account.key())
                .as_deref(),
            Some("fakeauth#4620816365")
        );
        let request = &h.server.provider_requests()[0];
        assert_eq!(
            request.path,
            "/v3/company/4620816365/companyinfo/4620816365"
        );
        assert_eq!(request.header("accept"), Some("application/json"));
    }

    /// The attack: the user edits realmId in the callback URL to another company's id
    /// (the state still checks out: it is the user's own callback). The grant does not
    /// cover that company, so it is never recorded and its webhooks never reach this
    /// tenant.
    #[tokio::test]
    async fn an_edited_realm_the_grant_does_not_cover_is_not_recorded() {
        let h = harness_with(AuthServerConfig::default(), REALM).await;
        serve_company(&h);
        let stored = connected(&h, &with_realm(h.authorize().await, "9130355377369466")).await;
        assert_eq!(stored.account_id, None);
        assert_eq!(stored.provider_account(), None, "not indexed");
        assert!(stored.tokens.is_some(), "the user's own grant is kept");
    }

    /// A reconnect is the same company or nothing: another confirmed realm is another
    /// account, refused (its grant revoked), the connection unchanged.
    #[tokio::test]
    async fn a_quickbooks_reconnect_to_another_company_is_refused() {
        let h = harness_with(AuthServerConfig::default(), REALM).await;
        h.server.serve_provider_api(|request: &ApiRequest| {
            assert!(request.path.starts_with("/v3/company/"));
            ScriptedResponse::json(&json!({"CompanyInfo": {"Id": "1"}}))
        });
        let first = connected(&h, &with_realm(h.authorize().await, "4620816365")).await;
        let reconnect = with_realm(
            h.authorize_as(Some(first.id.clone())).await,
            "9130355377369466",
        );
        let err = h
            .flow
            .callback("fakeauth", &reconnect, BASE)
            .await
            .expect_err("another company");
        assert!(matches!(err, FlowError::AccountMismatch { .. }), "{err}");
        assert_eq!(h.stored(&first.id).await, first);

        let same = with_realm(h.authorize_as(Some(first.id.clone())).await, "4620816365");
        h.flow
            .callback("fakeauth", &same, BASE)
            .await
            .expect("the same company");
        assert_eq!(
            h.stored(&first.id).await.account_id.as_deref(),
            Some("4620816365")
        );
    }

    /// A realmId that is not digits (or none at all) is refused before the code is
    /// exchanged: it would become a path segment of every API call.
    #[tokio::test]
    async fn a_malformed_or_missing_realm_is_refused_before_the_exchange() {
        let h = harness_with(AuthServerConfig::default(), REALM).await;
        serve_company(&h);
        for realm in [Some("../../v3/company/1"), Some("12a"), Some(""), None] {
            let query = h.authorize().await;
            let query = match realm {
                Some(realm) => with_realm(query, realm),
                None => query,
            };
            let err = h
                .flow
                .callback("fakeauth", &query, BASE)
                .await
                .expect_err("refused");
            assert!(
                matches!(&err, FlowError::BadRequest(message) if message.contains("realmId")),
                "{realm:?}: {err}"
            );
        }
        assert_eq!(h.server.counters().code_exchanges, 0, "nothing exchanged");
        assert!(h.server.provider_requests().is_empty());
    }

    #[tokio::test]
    async fn the_lookup_s_errors_are_typed_and_a_next_page_stays_on_its_origin() {
        let h = harness_with(AuthServerConfig::default(), INSTALLATIONS).await;
        let request = h
            .vault
            .catalog
            .get("fakeauth")
            .and_then(|entry| entry.account_request.clone())
            .expect("account request");
        let id = h.connect().await;
        let token = h.vault.access_token(&id).await.expect("token").value;
        let lookup = AccountLookup::new();
        let rules = EndpointRules::LoopbackHttpForTests;
        h.server.serve_provider_api(|_| {
            let mut response =
                ScriptedResponse::json(&json!({"installations": [{"id": 1}, {"id": 2}]}));
            response.headers.push((
                "link".into(),
                "<https://elsewhere.example/user/installations?page=2>; rel=\"next\"".into(),
            ));
            response
        });
        assert!(matches!(
            lookup
                .look_up(&request, rules, &token, Some("3"), None)
                .await,
            Err(AccountLookupError::ForeignNextPage)
        ));
        assert_eq!(
            lookup
                .look_up(&request, rules, &token, Some("2"), None)
                .await
                .ok(),
            Some(LookedUp::Chosen(Ok("2".into()))),
            "found on the first page: no second page asked for"
        );
        h.server
            .serve_provider_api(|_| ScriptedResponse::with_status(401, &json!({})));
        assert!(matches!(
            lookup.look_up(&request, rules, &token, None, None).await,
            Err(AccountLookupError::Status(401))
        ));
        assert!(matches!(
            lookup
                .look_up(&request, EndpointRules::Public, &token, None, None)
                .await,
            Err(AccountLookupError::Endpoint(_))
        ));
        h.server.serve_provider_api(|_| ScriptedResponse {
            delay: REQUEST_TIMEOUT + Duration::from_secs(1),
            ..ScriptedResponse::json(&json!({}))
        });
        assert!(matches!(
            lookup.look_up(&request, rules, &token, None, None).await,
            Err(AccountLookupError::Unreachable(_))
        ));
    }
}
