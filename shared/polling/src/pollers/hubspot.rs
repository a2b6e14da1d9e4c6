//! `hubspot-deals`: HubSpot deals (resource `deal`, adapter `hubspot.deal`) through the
//! CRM search API, incrementally on `hs_lastmodifieddate`, then archived deals as
//! deletions.
//!
//! HubSpot pushes deal changes by webhook (`hubspot.webhook`), so this poll is
//! reconciliation. Requests under the catalog's `https://api.hubapi.com` (bearer token):
//! - `POST /crm/v3/objects/deals/search` with `filterGroups: [{filters:
//!   [{propertyName: "hs_lastmodifieddate", operator: "GTE", value: "<epoch ms>"}]}]` (no
//!   filter on the first pass), `sorts: [{propertyName: "hs_lastmodifieddate", direction:
//!   "ASCENDING"}]`, `properties`, `limit: 100`, `after` (developers.hubspot.com
//!   `docs/api-reference/search/guide`: "pass an `after` parameter provided in the
//!   `paging.next.after` property of the previous response"; date values as epoch-ms
//!   strings; "Only one sorting rule"). Answer: `{total, results: [{id, properties,
//!   createdAt, updatedAt, archived}], paging?: {next: {after}}}`.
//! - `GET /crm/v3/objects/deals?archived=true&limit=100&properties=…&after=…`: "Archived
//!   CRM objects won't appear in any search results", so after each incremental search
//!   pass the archived list is read (it has no date filter: `archivedAt` is compared
//!   here) and deals archived since the pass's start are sent; the adapter maps
//!   `archived: true` to a deletion.
//!
//! Limits the search guide states, handled here:
//! - "limited to 10,000 total results for any given query. Attempting to page beyond
//!   10,000 will result in a 400": before `after` would pass it, the search restarts
//!   from the newest `hs_lastmodifieddate` seen (ids at that time are remembered, so
//!   nothing repeats). A single millisecond holding more than 10,000 deals would not
//!   progress (not expected of real portals).
//! - "It may take a few moments for newly created or updated CRM objects to appear in
//!   search results": the watermark never moves past [`INDEX_LAG`] before the pass's
//!   start, so a deal indexed late is found by the next pass (what was already sent
//!   comes again with the same event id, which the consumer drops).
//! - Rate: "The search endpoints are rate limited to five requests per second per
//!   account"; older changelogs said four; the catalog allows four.
//!
//! `updated_at` of a record is its `hs_lastmodifieddate` as HubSpot wrote it; an
//! archived deal's is its `archivedAt`.
//!
//! Cursor (JSON): `{"search": <Watermark on hs_lastmodifieddate, page = after>,
//! "archived": {"since": "<RFC 3339>", "after": "<token>"?}?}`; `archived` present: the
//! archived sweep of a finished search pass is under way.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::{Api, Paging, PollTarget, unexpected, watermark::Watermark};
use crate::{Page, PolledRecord, Poller};
use junction_aws::clock::{Clock, SystemClock};
use junction_outbound::CallError;

const SEARCH: &str = "/crm/v3/objects/deals/search";
const LIST: &str = "/crm/v3/objects/deals";

/// Deals per request (the search allows 200; 100 keeps a page's sends short).
const LIMIT: u64 = 100;
/// The search's result cap.
const SEARCH_CAP: u64 = 10_000;
/// How far behind the pass's start the watermark stays, for the search index.
pub(crate) const INDEX_LAG: Duration = Duration::from_secs(60);

/// The properties the `hubspot.deal` adapter reads.
const PROPERTIES: [&str; 13] = [
    "dealname",
    "amount",
    "deal_currency_code",
    "dealstage",
    "pipeline",
    "closedate",
    "hubspot_owner_id",
    "hs_deal_stage_probability",
    "hs_is_closed",
    "hs_is_closed_won",
    "hs_is_closed_lost",
    "createdate",
    "hs_lastmodifieddate",
];

/// Polls deals changed (or archived) since the last pass.
#[derive(Debug)]
pub struct HubspotDeals {
    api: Api,
    clock: Arc<dyn Clock>,
}

impl HubspotDeals {
    pub fn new(api: Api) -> Self {
        HubspotDeals {
            api,
            clock: Arc::new(SystemClock),
        }
    }

    #[cfg(test)]
    fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cursor {
    #[serde(default)]
    search: Watermark,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    archived: Option<ArchivedSweep>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchivedSweep {
    since: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    after: Option<String>,
}

impl Cursor {
    fn parse(text: &str) -> Result<Cursor, CallError> {
        let refused = || unexpected("stored cursor is not a hubspot-deals cursor");
        match serde_json::from_str::<Value>(text) {
            Ok(value) if value.is_object() => serde_json::from_value(value).map_err(|_| refused()),
            _ => Err(refused()),
        }
    }

    fn encode(&self) -> Result<String, CallError> {
        serde_json::to_string(self).map_err(|_| unexpected("cursor does not encode"))
    }
}

/// HubSpot's times (RFC 3339).
fn instant(text: &str) -> Result<OffsetDateTime, CallError> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|_| unexpected("a time is not RFC 3339"))
}

fn rfc3339(at: OffsetDateTime) -> Result<String, CallError> {
    at.format(&Rfc3339)
        .map_err(|_| unexpected("a time does not format"))
}

impl HubspotDeals {
    async fn search_page(
        &self,
        target: &PollTarget<'_>,
        mut cursor: Cursor,
    ) -> Result<Page, CallError> {
        let started = self.clock.now();
        let mut body = json!({
            "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
            "properties": PROPERTIES,
            "limit": LIMIT,
        });
        if let Some(since) = &cursor.search.since {
            let ms = instant(since)?.unix_timestamp_nanos() / 1_000_000;
            body["filterGroups"] = json!([{"filters": [{
                "propertyName": "hs_lastmodifieddate",
                "operator": "GTE",
                "value": ms.to_string(),
            }]}]);
        }
        if let Some(after) = &cursor.search.page {
            body["after"] = json!(after);
        }
        let answer = self.api.post(target, "search_deals", SEARCH, &body).await?;
        // The search takes the list's `after` in its body; its answer pages the same way
        // (`paging.next.after`, the catalog's scheme).
        let next_after = Paging::of("hubspot")?.next(cursor.search.page.as_deref(), &answer)?;
        let Some(Value::Array(results)) = answer.get("results").cloned() else {
            return Err(unexpected("no results in the search answer"));
        };
        let search = &mut cursor.search;
        let records = search.admit(results, "/id", "/properties/hs_lastmodifieddate", instant)?;

        if let Some(after) = next_after {
            let offset: u64 = after
                .parse()
                .map_err(|_| unexpected("paging.next.after is not an integer"))?;
            if offset + LIMIT <= SEARCH_CAP {
                search.page = Some(after);
                return Ok(Page {
                    records,
                    cursor: Some(cursor.encode()?),
                    more: true,
                });
            }
            // The next page would pass the cap: a new search from the newest time seen.
            let restarted = std::mem::take(search).finish(instant)?;
            cursor.search = restarted;
            return Ok(Page {
                records,
                cursor: Some(cursor.encode()?),
                more: true,
            });
        }

        // The pass is complete. The watermark moves to the newest time seen, but not
        // past the search index's lag, and never backwards.
        let pass_start = cursor.search.since.clone();
        let pass_seen = cursor.search.seen.clone();
        let mut next = std::mem::take(&mut cursor.search).finish(instant)?;
        let ceiling = started - INDEX_LAG;
        if let Some(since) = next.since.as_deref()
            && instant(since)? > ceiling
        {
            match pass_start.as_deref().map(instant).transpose()? {
                Some(start) if start >= ceiling => {
                    next.since = pass_start.clone();
                    next.seen = pass_seen;
                }
                _ => {
                    next.since = Some(rfc3339(ceiling)?);
                    next.seen = Vec::new();
                }
            }
        }
        cursor.search = next;
        // Deletions: deals archived since this pass began (none on the first pass: old
        // archives are nothing to announce).
        match pass_start {
            Some(since) => {
                cursor.archived = Some(ArchivedSweep { since, after: None });
                Ok(Page {
                    records,
                    cursor: Some(cursor.encode()?),
                    more: true,
                })
            }
            None => Ok(Page {
                records,
                cursor: Some(cursor.encode()?),
                more: false,
            }),
        }
    }

    async fn archived_page(
        &self,
        target: &PollTarget<'_>,
        mut cursor: Cursor,
        sweep: ArchivedSweep,
    ) -> Result<Page, CallError> {
        let since = instant(&sweep.since)?;
        let properties = PROPERTIES.join(",");
        let limit = LIMIT.to_string();
        let mut query = vec![
            ("archived", "true"),
            ("limit", limit.as_str()),
            ("properties", properties.as_str()),
        ];
        let paging = Paging::of("hubspot")?;
        if let Some(after) = &sweep.after {
            query.push((paging.param()?, after.as_str()));
        }
        let answer = self
            .api
            .get(target, "list_archived_deals", LIST, &query)
            .await?;
        let next_after = paging.next(sweep.after.as_deref(), &answer)?;
        let Some(Value::Array(results)) = answer.get("results").cloned() else {
            return Err(unexpected("no results in the archived list"));
        };
        let mut records = Vec::new();
        for deal in results {
            let Some(archived_at) = deal.get("archivedAt").and_then(Value::as_str) else {
                continue;
            };
            if instant(archived_at)? < since {
                continue;
            }
            records.push(PolledRecord {
                id: deal_id(&deal)?,
                updated_at: archived_at.to_owned(),
                body: deal,
            });
        }
        match next_after {
            Some(after) => {
                cursor.archived = Some(ArchivedSweep {
                    since: sweep.since,
                    after: Some(after),
                });
                Ok(Page {
                    records,
                    cursor: Some(cursor.encode()?),
                    more: true,
                })
            }
            None => {
                cursor.archived = None;
                Ok(Page {
                    records,
                    cursor: Some(cursor.encode()?),
                    more: false,
                })
            }
        }
    }
}

fn deal_id(deal: &Value) -> Result<String, CallError> {
    match deal.get("id") {
        Some(Value::String(id)) if !id.is_empty() => Ok(id.clone()),
        Some(Value::Number(id)) => Ok(id.to_string()),
        _ => Err(unexpected("a deal without id")),
    }
}

#[async_trait]
impl Poller for HubspotDeals {
    fn resource(&self) -> &str {
        "deal"
    }

    async fn page(&self, target: &PollTarget<'_>, cursor: Option<&str>) -> Result<Page, CallError> {
        let cursor = cursor.map(Cursor::parse).transpose()?.unwrap_or_default();
        match cursor.archived.clone() {
            Some(sweep) => self.archived_page(target, cursor, sweep).await,
            None => self.search_page(target, cursor).await,
        }
    }
}

#[cfg(test)]
mod tests {
    //! A fake portal behind the bench answers like the CRM v3 API: the search's
    //! `{total, results, paging: {next: {after}}}` with deals as `{id, properties (all
    //! strings), createdAt, updatedAt, archived}` (developers.hubspot.com search guide and
    //! the deals guide's sample objects), the `GTE` filter on `hs_lastmodifieddate` in
    //! epoch ms, the archived list with `archivedAt`, and errors as `{status: "error",
    //! message, correlationId, category}` (recorded 429 bodies, `category: RATE_LIMITS`).

    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::pollers::test_support::{
        ApiRequest, Bench, ScriptedResponse, bench_with_rules, catalog_error_rules,
        normalize_polled,
    };
    use junction_aws::clock::FixedClock;
    use junction_catalog::FailureClass;
    use junction_outbound::CallFailure;
    use junction_pipeline::normalize::{ChangeKind, Normalized};

    /// "Now" for the tests: well after the deals' times (2026-11-20T10:…).
    const NOW: i64 = 1_795_000_000;

    fn at(second: i64) -> String {
        OffsetDateTime::from_unix_timestamp(1_795_000_000 - 86_400 + second)
            .expect("time")
            .format(&Rfc3339)
            .expect("format")
    }

    fn deal(n: usize, modified: &str) -> Value {
        json!({
            "id": format!("{}", 9_000 + n),
            "properties": {
                "dealname": format!("Deal {n}"),
                "amount": format!("{}", 100 * n),
                "dealstage": "appointmentscheduled",
                "pipeline": "default",
                "closedate": "2026-12-31T00:00:00Z",
                "createdate": "2026-11-01T09:00:00Z",
                "hs_lastmodifieddate": modified,
                "hs_object_id": format!("{}", 9_000 + n),
            },
            "createdAt": "2026-11-01T09:00:00Z",
            "updatedAt": modified,
            "archived": false,
        })
    }

    #[derive(Debug, Default)]
    struct Portal {
        deals: Vec<Value>,
        archived: Vec<Value>,
        /// Results per answer (the fake ignores `limit`, as a server may).
        page: usize,
        /// Added to every `after` the fake hands out (to bring the 10,000 cap near).
        after_base: u64,
        /// Deals the search index has not caught up with yet (ids).
        unindexed: Vec<String>,
    }

    impl Portal {
        fn answer(&self, req: &ApiRequest) -> ScriptedResponse {
            let (rows, offset): (Vec<&Value>, u64) = match (req.method.as_str(), req.path.as_str())
            {
                ("POST", SEARCH) => {
                    let body = req.json();
                    assert_eq!(body["limit"], json!(LIMIT));
                    assert_eq!(body["sorts"][0]["direction"], "ASCENDING");
                    assert_eq!(
                        body["properties"].as_array().map(Vec::len),
                        Some(PROPERTIES.len())
                    );
                    let since: Option<i128> =
                        body.pointer("/filterGroups/0/filters/0").map(|filter| {
                            assert_eq!(filter["operator"], "GTE");
                            assert_eq!(filter["propertyName"], "hs_lastmodifieddate");
                            filter["value"]
                                .as_str()
                                .and_then(|v| v.parse().ok())
                                .expect("epoch ms")
                        });
                    let offset = body["after"]
                        .as_str()
                        .map(|after| after.parse::<u64>().expect("integer after") - self.after_base)
                        .unwrap_or(0);
                    let ms = |deal: &Value| {
                        instant(
                            deal["properties"]["hs_lastmodifieddate"]
                                .as_str()
                                .unwrap_or_default(),
                        )
                        .map(|t| t.unix_timestamp_nanos() / 1_000_000)
                        .unwrap_or_default()
                    };
                    let mut rows: Vec<&Value> = self
                        .deals
                        .iter()
                        .filter(|d| !self.unindexed.iter().any(|id| d["id"] == json!(id)))
                        .filter(|d| since.is_none_or(|since| ms(d) >= since))
                        .collect();
                    rows.sort_by_key(|d| (ms(d), d["id"].as_str().unwrap_or_default().to_owned()));
                    (rows, offset)
                }
                ("GET", LIST) => {
                    assert_eq!(req.query_param("archived"), Some("true"));
                    let offset = req
                        .query_param("after")
                        .map(|after| after.parse::<u64>().expect("after") - self.after_base)
                        .unwrap_or(0);
                    (self.archived.iter().collect(), offset)
                }
                other => panic!("unexpected request {other:?}"),
            };
            let start = usize::try_from(offset).expect("offset");
            let page: Vec<&Value> = rows.iter().skip(start).take(self.page).copied().collect();
            let next = start + page.len();
            let mut body = json!({"total": rows.len(), "results": page});
            if next < rows.len() {
                body["paging"] =
                    json!({"next": {"after": format!("{}", next as u64 + self.after_base)}});
            }
            ScriptedResponse::json(&body)
        }
    }

    /// The catalog's own `error_rules`.
    fn catalog_rules() -> String {
        catalog_error_rules(include_str!("../../../catalog/providers/hubspot.toml"))
    }

    async fn portal_bench(portal: &Arc<Mutex<Portal>>) -> Bench {
        let bench = bench_with_rules(&catalog_rules()).await;
        let serving = portal.clone();
        bench.serve(move |req| serving.lock().expect("portal").answer(req));
        bench
    }

    fn portal(count: usize, page: usize) -> Arc<Mutex<Portal>> {
        Arc::new(Mutex::new(Portal {
            deals: (1..=count).map(|n| deal(n, &at(n as i64))).collect(),
            page,
            ..Portal::default()
        }))
    }

    fn poller(bench: &Bench, clock: &Arc<FixedClock>) -> HubspotDeals {
        HubspotDeals::new(bench.api.clone()).with_clock(clock.clone())
    }

    fn ids(records: &[PolledRecord]) -> Vec<String> {
        let mut ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        ids.sort();
        ids
    }

    fn map(record: &PolledRecord) -> junction_pipeline::normalize::PipelineItem {
        match normalize_polled("hubspot", "deal", record)
            .into_iter()
            .next()
        {
            Some(Normalized::PipelineItem(item)) => item,
            other => panic!("expected one PipelineItem, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_backfill_pages_through_every_deal_then_changes_and_archived_deals_follow() {
        let portal = portal(22, 4);
        let bench = portal_bench(&portal).await;
        let clock = Arc::new(FixedClock::at_unix(NOW));
        let poller = poller(&bench, &clock);

        let (records, cursor) = bench.sync(&poller, None, 10).await;
        assert_eq!(ids(&records).len(), 22);
        assert_eq!(
            bench.requests().len(),
            6,
            "22 deals in pages of 4, no archived sweep"
        );
        assert!(bench.requests()[0].json().get("filterGroups").is_none());
        let cursor = cursor.expect("cursor");
        let stored = Cursor::parse(&cursor).expect("cursor");
        assert_eq!(stored.search.since, Some(at(22)));
        assert_eq!(stored.archived, None);

        // Two deals change and one is archived.
        {
            let mut portal = portal.lock().expect("portal");
            portal.deals[1] = deal(2, &at(102));
            portal.deals[7] = deal(8, &at(108));
            let mut gone = portal.deals.remove(14);
            gone["archived"] = json!(true);
            gone["archivedAt"] = json!(at(115));
            let mut long_gone = deal(99, &at(1));
            long_gone["archived"] = json!(true);
            long_gone["archivedAt"] = json!(at(5));
            portal.archived = vec![long_gone, gone];
        }
        let before = bench.requests().len();
        let (records, cursor) = bench.sync(&poller, Some(&cursor), 5).await;
        assert_eq!(ids(&records), ["9002", "9008", "9015"]);
        let search = &bench.requests()[before];
        assert_eq!(
            search.json().pointer("/filterGroups/0/filters/0/value"),
            Some(&json!(format!(
                "{}",
                instant(&at(22)).expect("t").unix_timestamp_nanos() / 1_000_000
            )))
        );
        let archived = records
            .iter()
            .find(|r| r.id == "9015")
            .expect("archived deal");
        assert_eq!(archived.updated_at, at(115));
        assert_eq!(map(archived).meta.change, ChangeKind::Deleted);
        assert_eq!(map(&records[0]).meta.change, ChangeKind::Snapshot);
        let stored = Cursor::parse(&cursor.expect("cursor")).expect("cursor");
        assert_eq!(
            (stored.search.since, stored.archived),
            (Some(at(108)), None)
        );
    }

    #[tokio::test]
    async fn the_search_restarts_from_the_newest_time_before_the_ten_thousand_cap() {
        let portal = portal(12, 4);
        portal.lock().expect("portal").after_base = SEARCH_CAP - LIMIT - 5;
        let bench = portal_bench(&portal).await;
        let clock = Arc::new(FixedClock::at_unix(NOW));
        let (records, _) = bench.sync(&poller(&bench, &clock), None, 10).await;
        assert_eq!(ids(&records).len(), 12, "every deal once");
        for request in bench.requests() {
            if let Some(after) = request.json()["after"].as_str() {
                let after: u64 = after.parse().expect("after");
                assert!(
                    after + LIMIT <= SEARCH_CAP,
                    "never pages past the cap: {after}"
                );
            }
        }
        let restarts = bench
            .requests()
            .iter()
            .filter(|r| r.json().get("after").is_none() && r.json().get("filterGroups").is_some())
            .count();
        assert!(restarts >= 1, "the search restarted from a watermark");
    }

    #[tokio::test]
    async fn the_watermark_stays_behind_the_search_index_so_late_deals_are_found() {
        let portal = portal(3, 10);
        {
            let mut portal = portal.lock().expect("portal");
            // Deal 3 changed 10 s ago and is not in the index yet; deal 2, 20 s ago, is.
            let now = OffsetDateTime::from_unix_timestamp(NOW).expect("now");
            portal.deals[1] = deal(2, &rfc3339(now - Duration::from_secs(20)).expect("t"));
            portal.deals[2] = deal(3, &rfc3339(now - Duration::from_secs(30)).expect("t"));
            portal.unindexed = vec!["9003".into()];
        }
        let bench = portal_bench(&portal).await;
        let clock = Arc::new(FixedClock::at_unix(NOW));
        let poller = poller(&bench, &clock);
        let (first, cursor) = bench.sync(&poller, None, 3).await;
        assert_eq!(ids(&first), ["9001", "9002"]);
        let stored = Cursor::parse(cursor.as_deref().expect("cursor")).expect("cursor");
        let ceiling = OffsetDateTime::from_unix_timestamp(NOW).expect("now") - INDEX_LAG;
        assert_eq!(stored.search.since, Some(rfc3339(ceiling).expect("t")));

        portal.lock().expect("portal").unindexed.clear();
        clock.advance(time::Duration::minutes(5));
        let (second, _) = bench.sync(&poller, cursor.as_deref(), 3).await;
        assert!(
            ids(&second).contains(&"9003".to_owned()),
            "{:?}",
            ids(&second)
        );
    }

    #[tokio::test]
    async fn hubspot_error_bodies_are_classified_by_the_catalog_rules() {
        let portal = portal(1, 4);
        let bench = portal_bench(&portal).await;
        let clock = Arc::new(FixedClock::at_unix(NOW));
        let poller = poller(&bench, &clock);
        let body = json!({
            "status": "error",
            "message": "There was a problem with the request.",
            "correlationId": "aeb5f871-7f07-4993-9211-075dc63e7cbf",
            "category": "VALIDATION_ERROR",
        });
        let answer = body.clone();
        bench.serve(move |_| ScriptedResponse::with_status(400, &answer));
        match bench.page(&poller, None).await.expect_err("refused") {
            CallError::Failed(CallFailure { class, code }) => {
                assert_eq!(
                    (class, code.as_str()),
                    (FailureClass::Permanent, "VALIDATION_ERROR")
                );
            }
            other => panic!("{other:?}"),
        }

        // The secondly limit answers 429 once; the call is retried, not failed.
        let limited = Arc::new(Mutex::new(1));
        let serving = portal.clone();
        bench.serve(move |req| {
            let mut left = limited.lock().expect("count");
            if *left > 0 {
                *left -= 1;
                return ScriptedResponse::with_status(
                    429,
                    &json!({"status": "error", "message": "You have reached your secondly limit.", "errorType": "RATE_LIMIT", "correlationId": "c1", "category": "RATE_LIMITS"}),
                );
            }
            serving.lock().expect("portal").answer(req)
        });
        let before = bench.requests().len();
        let (records, _) = bench.sync(&poller, None, 3).await;
        assert_eq!(records.len(), 1);
        assert_eq!(bench.requests().len() - before, 2);
    }
}
