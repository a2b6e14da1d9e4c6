//! The pollers: one per provider model, each fetching pages incrementally from a cursor
//! through the [`OutboundClient`] (so every call is rate-limited, retried, circuit-broken
//! and logged the same way). The catalog's `[polling]` section names which poller each
//! model uses ([`junction_catalog::POLLERS`]); [`build`] makes it.
//!
//! | poller | provider API | cursor | deletions |
//! |---|---|---|---|
//! | `gmail-history` | `users.history.list` (+ `threads.get`) | `historyId` | `messagesDeleted` |
//! | `hubspot-deals` | CRM search on `hs_lastmodifieddate` | last modified time | archived deals list |
//! | `salesforce-opportunities` | SOQL on `SystemModstamp` | last modstamp | `queryAll` `IsDeleted` |
//! | `asana-tasks` | `GET /tasks?modified_since` per project | pass start (+ events tokens) | `deleted` events per project |
//! | `linear-issues` | GraphQL `issues(filter: updatedAt)` | last `updatedAt` (+ ids at it) | `trashed` |
//! | `slack-history` | `conversations.list` + `conversations.history` | per-pass `oldest` watermark | `channel.is_archived` |
//! | `microsoft-messages` | Graph `mailFolders/inbox/messages/delta` | `@odata.deltaLink` | `@removed` |
//!
//! Each poller's module documents its requests and responses with their sources.
//!
//! Pages: where the provider's lists page generically, the poller reads the next
//! continuation through the catalog's `[pagination]` scheme ([`Paging`], backed by
//! `junction_outbound::pagination`, which refuses a repeated cursor): Slack
//! (`response_metadata.next_cursor`), Gmail (`nextPageToken`), HubSpot
//! (`paging.next.after`, also for the search's `POST` body) and Asana
//! (`next_page.offset`). Each keeps its continuation in its own stored cursor, one page
//! per call, so the page limit is the worker's invocation budget. Salesforce
//! (`nextRecordsUrl`, a path on the connection's instance, checked there), Linear
//! (GraphQL `pageInfo` inside each query's own connection field) and Microsoft Graph's
//! delta query (whole `@odata.nextLink`/`@odata.deltaLink` URLs in the body, checked
//! against the API base) page in their own code: none is a query parameter scheme of
//! the whole API.

use std::{sync::Arc, time::Instant};

use serde_json::Value;

use super::{jobs::SyncJob, worker::Poller};
use junction_catalog::{Catalog, FailureClass};
use junction_outbound::{Call, CallError, CallFailure, OutboundClient};

mod asana;
mod gmail;
mod hubspot;
mod linear;
mod microsoft;
mod salesforce;
mod slack;
mod watermark;

#[cfg(test)]
pub(crate) mod test_support;

/// What a poller needs to fetch one page: the job (provider, connection, cursor owner),
/// the provider API's base URL for this connection (the catalog's `[api] base_url` with
/// the connection's values filled in), and when the invocation must be done.
#[derive(Debug, Clone, Copy)]
pub struct PollTarget<'a> {
    pub job: &'a SyncJob,
    pub base_url: &'a str,
    pub deadline: Instant,
}

/// Makes the poller a catalog `[polling]` model names; `None` for an unknown name (the
/// catalog check rejects those first).
pub fn build(name: &str, client: OutboundClient) -> Option<Arc<dyn Poller>> {
    let api = Api { client };
    let poller: Arc<dyn Poller> = match name {
        "gmail-history" => Arc::new(gmail::GmailHistory::new(api)),
        "hubspot-deals" => Arc::new(hubspot::HubspotDeals::new(api)),
        "salesforce-opportunities" => Arc::new(salesforce::SalesforceOpportunities::new(api)),
        "asana-tasks" => Arc::new(asana::AsanaTasks::new(api)),
        "linear-issues" => Arc::new(linear::LinearIssues::new(api)),
        "slack-history" => Arc::new(slack::SlackHistory::new(api)),
        "microsoft-messages" => Arc::new(microsoft::MicrosoftMessages::new(api)),
        _ => return None,
    };
    Some(poller)
}

/// The provider API's base URL for a connection: the catalog's `[api] base_url` with
/// each `{name}` filled from the connection's kept values (Salesforce's
/// `{instance_url}`). The result must be an endpoint Junction may send a token to.
pub fn base_url(
    catalog: &Catalog,
    provider: &str,
    params: &std::collections::BTreeMap<String, String>,
) -> Result<String, String> {
    let template = catalog
        .get(provider)
        .and_then(|p| p.api.as_ref())
        .and_then(|api| api.base_url.as_deref())
        .ok_or_else(|| format!("provider {provider} has no [api] base_url"))?;
    let mut url = template.to_owned();
    for name in junction_catalog::placeholders(template) {
        let value = params
            .get(name)
            .ok_or_else(|| format!("connection has no `{name}` for the API base URL"))?;
        url = url.replace(&format!("{{{name}}}"), value.trim_end_matches('/'));
    }
    catalog
        .endpoint_rules()
        .check_filled(template, &url)
        .map_err(|err| format!("API base URL of {provider} {err}"))?;
    Ok(url)
}

/// JSON calls to a provider API through the outbound client, with the connection's
/// bearer token.
#[derive(Debug, Clone)]
pub struct Api {
    client: OutboundClient,
}

/// A response the poller cannot read: permanent (the same answer fails again).
pub(crate) fn unexpected(what: &str) -> CallError {
    CallError::Failed(CallFailure {
        class: FailureClass::Permanent,
        code: format!("unexpected_response: {what}"),
    })
}

/// How a poller's provider continues a list: the catalog's `[pagination]` scheme of
/// `provider` (each poller is one provider's, so its entry is read by id from the
/// embedded catalog). The poller keeps the continuation in its own stored cursor, one
/// page per call; [`Paging::next`] reads it from an answer by the scheme, refusing a
/// repeat of the one just sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Paging {
    scheme: &'static junction_catalog::PaginationSpec,
}

impl Paging {
    /// The scheme of `provider`; a permanent failure if the catalog declares none.
    pub(crate) fn of(provider: &str) -> Result<Self, CallError> {
        Catalog::embedded()
            .ok()
            .and_then(|catalog| catalog.get(provider))
            .and_then(|entry| entry.pagination.as_ref())
            .map(|scheme| Paging { scheme })
            .ok_or_else(|| unexpected("the catalog declares no [pagination] for the poller"))
    }

    /// The query parameter the continuation is sent in (`cursor`, `pageToken`, …).
    pub(crate) fn param(&self) -> Result<&'static str, CallError> {
        junction_outbound::pagination::continuation_param(self.scheme)
            .ok_or_else(|| unexpected("the poller needs a body-read pagination scheme"))
    }

    /// The continuation `body` gives after the request that carried `sent`; `None`:
    /// the listing is done.
    pub(crate) fn next(
        &self,
        sent: Option<&str>,
        body: &Value,
    ) -> Result<Option<String>, CallError> {
        junction_outbound::pagination::next_continuation(self.scheme, sent, None, body).map_err(
            |err| {
                CallError::Failed(CallFailure {
                    class: FailureClass::Permanent,
                    code: format!("pagination: {err}"),
                })
            },
        )
    }
}

impl Api {
    /// `GET base_url + path` with `query`, parsed as JSON.
    pub async fn get(
        &self,
        target: &PollTarget<'_>,
        operation: &str,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Value, CallError> {
        self.get_with_headers(target, operation, path, query, &[])
            .await
    }

    /// [`Api::get`] with extra request headers (Salesforce's `Sforce-Query-Options`).
    pub async fn get_with_headers(
        &self,
        target: &PollTarget<'_>,
        operation: &str,
        path: &str,
        query: &[(&str, &str)],
        headers: &[(&'static str, &str)],
    ) -> Result<Value, CallError> {
        let url = self.url(target, path, query)?;
        self.get_link(target, operation, url, headers).await
    }

    /// `GET` of a whole URL the provider handed out (Graph's `@odata.nextLink` and
    /// `@odata.deltaLink`), with extra request headers, parsed as JSON. The caller
    /// checks the URL stays on the connection's API base first
    /// (`junction_outbound::pagination::resolve_next`).
    pub async fn get_link(
        &self,
        target: &PollTarget<'_>,
        operation: &str,
        url: url::Url,
        headers: &[(&'static str, &str)],
    ) -> Result<Value, CallError> {
        self.json(target, operation, &[], |http| {
            headers
                .iter()
                .fold(http.get(url.clone()), |request, (name, value)| {
                    request.header(*name, *value)
                })
        })
        .await
        .map(|(_, value)| value)
    }

    /// [`Api::get`] where the statuses in `accept` are answers too (Asana's `412` with
    /// a fresh sync token): the status and the JSON body.
    pub async fn get_answer(
        &self,
        target: &PollTarget<'_>,
        operation: &str,
        path: &str,
        query: &[(&str, &str)],
        accept: &[u16],
    ) -> Result<(u16, Value), CallError> {
        let url = self.url(target, path, query)?;
        self.json(target, operation, accept, |http| http.get(url.clone()))
            .await
    }

    /// `POST base_url + path` with a JSON body, parsed as JSON.
    pub async fn post(
        &self,
        target: &PollTarget<'_>,
        operation: &str,
        path: &str,
        body: &Value,
    ) -> Result<Value, CallError> {
        let url = self.url(target, path, &[])?;
        let body = body.to_string();
        self.json(target, operation, &[], |http| {
            http.post(url.clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
        })
        .await
        .map(|(_, value)| value)
    }

    fn url(
        &self,
        target: &PollTarget<'_>,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<url::Url, CallError> {
        let mut url = url::Url::parse(&format!("{}{path}", target.base_url))
            .map_err(|_| unexpected("API URL does not parse"))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    async fn json<F>(
        &self,
        target: &PollTarget<'_>,
        operation: &str,
        accept: &[u16],
        build: F,
    ) -> Result<(u16, Value), CallError>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let response = self
            .client
            .send(
                Call {
                    provider: &target.job.provider,
                    connection: &target.job.connection,
                    operation,
                    deadline: target.deadline,
                    accept,
                },
                |http, token| {
                    build(http)
                        .bearer_auth(token.value.expose())
                        .header(http::header::ACCEPT, "application/json")
                },
            )
            .await?;
        let value =
            serde_json::from_slice(&response.body).map_err(|_| unexpected("body is not JSON"))?;
        Ok((response.status, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_catalog_poller_name_builds() {
        let bench = test_support::bench().await;
        for name in junction_catalog::POLLERS {
            assert!(
                build(name, bench.api.client.clone()).is_some(),
                "poller `{name}` is listed in the catalog but not built"
            );
        }
        assert!(build("no-such-poller", bench.api.client.clone()).is_none());
    }

    #[test]
    fn every_paging_pollers_provider_declares_a_body_read_scheme() {
        for provider in ["slack", "gmail", "hubspot", "asana"] {
            let paging = Paging::of(provider).expect(provider);
            assert!(paging.param().is_ok(), "{provider}");
        }
        assert!(Paging::of("fakeauth").is_err());
    }

    #[test]
    fn paging_reads_the_next_continuation_and_refuses_a_repeat_as_permanent() {
        let asana = Paging::of("asana").expect("asana");
        assert_eq!(asana.param().ok(), Some("offset"));
        let page = serde_json::json!({"data": [{"gid": "1"}], "next_page": {"offset": "b", "path": "/tasks?offset=b"}});
        assert_eq!(
            asana.next(Some("a"), &page).ok(),
            Some(Some("b".to_owned()))
        );
        let last = serde_json::json!({"data": [], "next_page": null});
        assert_eq!(asana.next(Some("b"), &last).ok(), Some(None));
        match asana.next(Some("b"), &page) {
            Err(CallError::Failed(failure)) => {
                assert_eq!(failure.class, FailureClass::Permanent);
                assert!(failure.code.starts_with("pagination:"), "{}", failure.code);
            }
            other => panic!("a repeated offset must fail: {other:?}"),
        }
    }

    #[test]
    fn base_urls_are_filled_from_the_connection_and_must_be_https() {
        let catalog = Catalog::from_files(&[(
            "sf.toml",
            "id = \"sf\"\nname = \"SF\"\ndocs = \"https://example.com\"\n[api]\nbase_url = \"{instance_url}/services/data/v65.0\"\nrate_limit = { requests_per_second = 1.0, burst = 1, scope = \"provider\" }\n",
        )])
        .expect("catalog");
        let params = |url: &str| {
            [("instance_url".to_owned(), url.to_owned())]
                .into_iter()
                .collect()
        };
        assert_eq!(
            base_url(&catalog, "sf", &params("https://acme.my.salesforce.com/")),
            Ok("https://acme.my.salesforce.com/services/data/v65.0".to_owned())
        );
        assert!(base_url(&catalog, "sf", &params("http://evil.example")).is_err());
        // A stored value that names an internal host or smuggles one in user-info.
        for hostile in [
            "https://169.254.169.254",
            "https://127.0.0.1:@[::1]:8080",
            "https://acme.my.salesforce.com@evil.example",
            "http://127.0.0.1:8080",
        ] {
            assert!(
                base_url(&catalog, "sf", &params(hostile)).is_err(),
                "{hostile}"
            );
        }
        // Only a test catalog takes a loopback provider over http.
        let local =
            catalog.with_endpoint_rules(junction_catalog::EndpointRules::LoopbackHttpForTests);
        assert!(base_url(&local, "sf", &params("http://127.0.0.1:8080")).is_ok());
        assert!(base_url(&catalog, "sf", &Default::default()).is_err());
        assert!(base_url(&catalog, "other", &Default::default()).is_err());
    }
}
