//! `salesforce-opportunities`: Salesforce opportunities (resource `opportunity`, adapter
//! `salesforce.opportunity`) by SOQL over REST, incrementally on `SystemModstamp`.
//!
//! Requests (`GET`, bearer token) under the catalog's base URL
//! `{instance_url}/services/data/v67.0` (the connection's `instance_url` from its token
//! response; the version is the catalog's pinned one):
//! - `/queryAll?q=<SOQL>` with `Sforce-Query-Options: batchSize=200` (REST API
//!   `resources_queryall`: "returns records that are soft deleted due to a merge or
//!   delete", so one query carries changes and deletions; `headers_queryoptions`: batch
//!   size 200 to 2,000, "no guarantee that the requested batch size is the actual batch
//!   size"). The answer is `{totalSize, done, nextRecordsUrl?, records: [sObject]}`.
//! - `nextRecordsUrl` (`/services/data/v67.0/query/01gD…-200`) for the following pages,
//!   relative to the instance: "These requests use nextRecordsUrl, and don't include any
//!   parameters" (`dome_query`). Only a path under `/services/data/` is followed, so a
//!   token never goes anywhere else.
//!
//! SOQL: `SELECT <fields> FROM Opportunity WHERE SystemModstamp >= <watermark> ORDER BY
//! SystemModstamp ASC, Id ASC`; the first pass has `WHERE IsDeleted = FALSE` instead (the
//! backfill covers every live opportunity; old deletions are nothing to announce).
//! `SystemModstamp` rather than `LastModifiedDate`: the sObject Get Updated call "uses the
//! `SystemModstamp` field to determine an object's add or change date", and it also moves
//! on changes by automated processes. SOQL wants dateTime literals unquoted as
//! `YYYY-MM-DDThh:mm:ssZ` (SOQL reference, "Date Formats and Date Literals"), while
//! records carry `2013-05-20T20:49:32.000+0000`: the watermark is converted, and since
//! Salesforce times have whole seconds, nothing is lost by dropping the fraction.
//!
//! - **Deletions**: soft-deleted opportunities come back from `queryAll` with
//!   `IsDeleted = true`, which the adapter maps to a deletion. Unconfirmed: that deleting
//!   moves `SystemModstamp` (if not, a deletion is only seen through the outbound
//!   message or Change Data Capture path). Records purged from the recycle bin leave no
//!   trace.
//! - **Errors** come as a JSON array `[{"message", "errorCode"}]` with a real status; the
//!   catalog's `[api] error_rules` read `/0/errorCode` (`INVALID_SESSION_ID`,
//!   `REQUEST_LIMIT_EXCEEDED`, `MALFORMED_QUERY`, `INVALID_FIELD`).
//!
//! `updated_at` of each record is its `SystemModstamp` as Salesforce wrote it.
//!
//! Cursor: a [`Watermark`] on `SystemModstamp`, its `page` the `nextRecordsUrl` of the
//! pass under way.

use async_trait::async_trait;
use serde_json::Value;
use time::{
    OffsetDateTime, UtcOffset,
    format_description::{BorrowedFormatItem, well_known::Rfc3339},
    macros::format_description,
};

use super::{Api, PollTarget, unexpected, watermark::Watermark};
use crate::{Page, Poller};
use junction_outbound::CallError;

/// The fields the `salesforce.opportunity` adapter reads (`CurrencyIsoCode` exists only
/// in multi-currency orgs, so it is not asked for).
const FIELDS: &str = "Id, Name, Amount, StageName, Probability, CloseDate, IsClosed, IsWon, \
     OwnerId, AccountId, IsDeleted, CreatedDate, LastModifiedDate, SystemModstamp";

/// Records per page asked for (Salesforce's minimum batch size).
const BATCH: &str = "batchSize=200";

/// Where a query's next pages live.
const DATA_PATH: &str = "/services/data/";

/// Salesforce's dateTime format in records: `2013-05-20T20:49:32.000+0000`.
const RECORD_TIME: &[BorrowedFormatItem<'static>] = format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3][offset_hour sign:mandatory][offset_minute]"
);

/// The SOQL dateTime literal: `2013-05-20T20:49:32Z`.
const SOQL_TIME: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// Polls opportunities changed (or deleted) since the last pass.
#[derive(Debug)]
pub struct SalesforceOpportunities {
    api: Api,
}

impl SalesforceOpportunities {
    pub fn new(api: Api) -> Self {
        SalesforceOpportunities { api }
    }
}

/// A `SystemModstamp` as Salesforce writes it (or RFC 3339).
fn instant(text: &str) -> Result<OffsetDateTime, CallError> {
    OffsetDateTime::parse(text, RECORD_TIME)
        .or_else(|_| OffsetDateTime::parse(text, &Rfc3339))
        .map_err(|_| unexpected("SystemModstamp is not a Salesforce dateTime"))
}

/// The SOQL literal of a record time, in UTC.
fn soql_time(text: &str) -> Result<String, CallError> {
    instant(text)?
        .to_offset(UtcOffset::UTC)
        .format(SOQL_TIME)
        .map_err(|_| unexpected("SystemModstamp does not format"))
}

/// The query of a pass starting at `since` (none: the first pass).
fn soql(since: Option<&str>) -> Result<String, CallError> {
    let filter = match since {
        Some(since) => format!("SystemModstamp >= {}", soql_time(since)?),
        None => "IsDeleted = FALSE".to_owned(),
    };
    Ok(format!(
        "SELECT {FIELDS} FROM Opportunity WHERE {filter} ORDER BY SystemModstamp ASC, Id ASC"
    ))
}

/// The instance's root (`https://acme.my.salesforce.com`) from the API base URL.
fn instance_root(base_url: &str) -> &str {
    base_url
        .find(DATA_PATH)
        .map_or(base_url, |at| &base_url[..at])
}

#[async_trait]
impl Poller for SalesforceOpportunities {
    fn resource(&self) -> &str {
        "opportunity"
    }

    async fn page(&self, target: &PollTarget<'_>, cursor: Option<&str>) -> Result<Page, CallError> {
        let mut state = cursor
            .map(|text| Watermark::parse(text, "salesforce-opportunities"))
            .transpose()?
            .unwrap_or_default();
        let headers = [("Sforce-Query-Options", BATCH)];
        let answer = match &state.page {
            Some(next) => {
                if !next.starts_with(DATA_PATH) || next.contains("..") || next.contains("://") {
                    return Err(unexpected(
                        "nextRecordsUrl is not a query page of this instance",
                    ));
                }
                let root = PollTarget {
                    base_url: instance_root(target.base_url),
                    ..*target
                };
                self.api
                    .get_with_headers(&root, "query_more", next, &[], &headers)
                    .await?
            }
            None => {
                let query = soql(state.since.as_deref())?;
                self.api
                    .get_with_headers(target, "query_all", "/queryAll", &[("q", &query)], &headers)
                    .await?
            }
        };
        let Some(Value::Array(found)) = answer.get("records").cloned() else {
            return Err(unexpected("no records in the query answer"));
        };
        let done = answer
            .get("done")
            .and_then(Value::as_bool)
            .ok_or_else(|| unexpected("no done in the query answer"))?;

        let records = state.admit(found, "/Id", "/SystemModstamp", instant)?;

        let next = match done {
            true => None,
            false => Some(
                answer
                    .get("nextRecordsUrl")
                    .and_then(Value::as_str)
                    .filter(|next| !next.is_empty())
                    .ok_or_else(|| unexpected("done is false without a nextRecordsUrl"))?
                    .to_owned(),
            ),
        };
        state.into_page(records, next, instant)
    }
}

#[cfg(test)]
mod tests {
    //! A fake org behind the bench answers SOQL like the REST API: opportunities as
    //! sObjects with `attributes` and Salesforce's dateTime format (the field reference's
    //! Opportunity; REST API `dome_query` for the page shape `{totalSize, done,
    //! nextRecordsUrl, records}`), `queryAll` including soft-deleted rows, pages of
    //! `PAGE` records behind `nextRecordsUrl`, and errors as `[{message, errorCode}]`
    //! (`errorcodes`). The fake parses only the two filters this poller writes.

    use std::{
        collections::BTreeMap,
        sync::{Arc, Mutex},
    };

    use serde_json::json;

    use super::*;
    use crate::PolledRecord;
    use crate::pollers::test_support::{
        ApiRequest, Bench, ScriptedResponse, bench_with_rules, catalog_error_rules,
        normalize_polled,
    };
    use junction_catalog::FailureClass;
    use junction_outbound::CallFailure;
    use junction_pipeline::normalize::{ChangeKind, Normalized};

    const PAGE: usize = 4;

    fn stamp(second: usize) -> String {
        format!(
            "2026-11-20T10:{:02}:{:02}.000+0000",
            second / 60,
            second % 60
        )
    }

    fn opportunity(n: usize, modstamp: &str) -> Value {
        let id = format!("006Dn00000{n:08}");
        json!({
            "attributes": {"type": "Opportunity", "url": format!("/services/data/v67.0/sobjects/Opportunity/{id}")},
            "Id": id,
            "Name": format!("Deal {n}"),
            "Amount": 1000.0 * n as f64,
            "StageName": "Prospecting",
            "Probability": 10.0,
            "CloseDate": "2026-12-31",
            "IsClosed": false,
            "IsWon": false,
            "OwnerId": "005Dn000001",
            "AccountId": "001Dn000001",
            "IsDeleted": false,
            "CreatedDate": "2026-11-01T09:00:00.000+0000",
            "LastModifiedDate": modstamp,
            "SystemModstamp": modstamp,
        })
    }

    #[derive(Debug, Default)]
    struct Org {
        opportunities: Vec<Value>,
        /// Query locator → the remaining records of a query.
        cursors: BTreeMap<String, Vec<Value>>,
        issued: usize,
    }

    impl Org {
        fn answer(&mut self, req: &ApiRequest) -> ScriptedResponse {
            assert_eq!(req.method, "GET");
            let rows = if let Some(locator) = req.path.strip_prefix("/services/data/v67.0/query/") {
                self.cursors.remove(locator).unwrap_or_default()
            } else {
                assert_eq!(req.path, "/queryAll");
                let q = req.query_param("q").unwrap_or_default();
                assert!(
                    q.starts_with(&format!("SELECT {FIELDS} FROM Opportunity WHERE ")),
                    "{q}"
                );
                assert!(q.ends_with(" ORDER BY SystemModstamp ASC, Id ASC"), "{q}");
                let since = q
                    .split("SystemModstamp >= ")
                    .nth(1)
                    .and_then(|rest| rest.split(' ').next())
                    .map(|literal| {
                        OffsetDateTime::parse(literal, &Rfc3339).expect("a SOQL dateTime literal")
                    });
                let live_only = q.contains("WHERE IsDeleted = FALSE ");
                let mut rows: Vec<Value> = self
                    .opportunities
                    .iter()
                    .filter(|o| !(live_only && o["IsDeleted"] == json!(true)))
                    .filter(|o| {
                        since.is_none_or(|since| {
                            instant(o["SystemModstamp"].as_str().unwrap_or_default())
                                .is_ok_and(|at| at >= since)
                        })
                    })
                    .cloned()
                    .collect();
                rows.sort_by_key(|o| {
                    (
                        instant(o["SystemModstamp"].as_str().unwrap_or_default()).ok(),
                        o["Id"].as_str().unwrap_or_default().to_owned(),
                    )
                });
                rows
            };
            let total = rows.len();
            let (page, rest) = rows.split_at(PAGE.min(total));
            let mut body = json!({"totalSize": total, "done": rest.is_empty(), "records": page});
            if !rest.is_empty() {
                self.issued += 1;
                let locator = format!("01gD0000002HU6K-{}", self.issued);
                body["nextRecordsUrl"] = json!(format!("/services/data/v67.0/query/{locator}"));
                self.cursors.insert(locator, rest.to_vec());
            }
            ScriptedResponse::json(&body)
        }
    }

    /// The catalog's own `error_rules`.
    fn catalog_rules() -> String {
        catalog_error_rules(include_str!("../../../catalog/providers/salesforce.toml"))
    }

    async fn org_bench(org: &Arc<Mutex<Org>>) -> Bench {
        let bench = bench_with_rules(&catalog_rules()).await;
        let serving = org.clone();
        bench.serve(move |req| serving.lock().expect("org").answer(req));
        bench
    }

    fn org(count: usize) -> Arc<Mutex<Org>> {
        Arc::new(Mutex::new(Org {
            opportunities: (1..=count).map(|n| opportunity(n, &stamp(n))).collect(),
            ..Org::default()
        }))
    }

    fn ids(records: &[PolledRecord]) -> Vec<String> {
        let mut ids: Vec<String> = records
            .iter()
            .map(|r| format!("{}@{}", &r.id[r.id.len() - 2..], r.updated_at))
            .collect();
        ids.sort();
        ids
    }

    fn map(record: &PolledRecord) -> junction_pipeline::normalize::PipelineItem {
        match normalize_polled("salesforce", "opportunity", record)
            .into_iter()
            .next()
        {
            Some(Normalized::PipelineItem(item)) => item,
            other => panic!("expected one PipelineItem, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_backfill_follows_next_records_urls_then_only_changes_and_deletions_follow() {
        let org = org(22);
        org.lock().expect("org").opportunities[4]["IsDeleted"] = json!(true);
        let bench = org_bench(&org).await;
        let poller = SalesforceOpportunities::new(bench.api.clone());

        let (records, cursor) = bench.sync(&poller, None, 10).await;
        assert_eq!(
            records.len(),
            21,
            "every live opportunity, the deleted one not"
        );
        assert_eq!(ids(&records).len(), 21);
        let requests = bench.requests();
        assert_eq!(requests.len(), 6, "21 records in pages of 4");
        assert_eq!(requests[0].path, "/queryAll");
        assert!(
            requests[0]
                .query_param("q")
                .is_some_and(|q| q.contains("WHERE IsDeleted = FALSE ")),
            "the backfill asks for live records"
        );
        assert!(
            requests[1..]
                .iter()
                .all(|r| r.path.starts_with("/services/data/v67.0/query/"))
        );
        let cursor = cursor.expect("cursor");
        let stored = Watermark::parse(&cursor, "salesforce-opportunities").expect("cursor");
        assert_eq!(stored.since, Some(stamp(22)));
        assert_eq!(stored.page, None);

        // Nothing changed: one query from the watermark, nothing sent.
        let (records, again) = bench.sync(&poller, Some(&cursor), 3).await;
        assert!(records.is_empty(), "{:?}", ids(&records));
        assert_eq!(again.as_deref(), Some(cursor.as_str()));
        let requests = bench.requests();
        let q = requests.last().and_then(|r| r.query_param("q")).expect("q");
        assert!(
            q.contains("WHERE SystemModstamp >= 2026-11-20T10:00:22Z "),
            "{q}"
        );

        // Two change, one is deleted (it moves SystemModstamp too).
        {
            let mut org = org.lock().expect("org");
            org.opportunities[1] = opportunity(2, &stamp(102));
            org.opportunities[8] = opportunity(9, &stamp(109));
            let mut deleted = opportunity(15, &stamp(115));
            deleted["IsDeleted"] = json!(true);
            org.opportunities[14] = deleted;
        }
        let (records, cursor) = bench.sync(&poller, Some(&cursor), 3).await;
        assert_eq!(
            ids(&records),
            [
                format!("02@{}", stamp(102)),
                format!("09@{}", stamp(109)),
                format!("15@{}", stamp(115)),
            ]
        );
        let deleted = records.iter().find(|r| r.id.ends_with("15")).expect("15");
        assert_eq!(map(deleted).meta.change, ChangeKind::Deleted);
        assert_eq!(map(&records[0]).meta.change, ChangeKind::Snapshot);
        assert_eq!(
            Watermark::parse(&cursor.expect("cursor"), "salesforce-opportunities")
                .expect("cursor")
                .since,
            Some(stamp(115))
        );
    }

    #[tokio::test]
    async fn opportunities_sharing_a_modstamp_across_pages_are_neither_lost_nor_repeated() {
        let org = org(10);
        {
            let mut org = org.lock().expect("org");
            for n in 3..=10 {
                org.opportunities[n - 1] = opportunity(n, &stamp(30));
            }
        }
        let bench = org_bench(&org).await;
        let poller = SalesforceOpportunities::new(bench.api.clone());
        let (records, cursor) = bench.sync(&poller, None, 5).await;
        assert_eq!(ids(&records).len(), 10);
        let cursor = cursor.expect("cursor");
        assert_eq!(
            Watermark::parse(&cursor, "salesforce-opportunities")
                .expect("cursor")
                .seen
                .len(),
            8
        );
        // Another one lands on the same second afterwards: found, and only it.
        org.lock()
            .expect("org")
            .opportunities
            .push(opportunity(11, &stamp(30)));
        let (records, _) = bench.sync(&poller, Some(&cursor), 5).await;
        assert_eq!(ids(&records), [format!("11@{}", stamp(30))]);
    }

    #[tokio::test]
    async fn a_next_records_url_off_the_instance_is_never_followed() {
        let org = org(1);
        let bench = org_bench(&org).await;
        let poller = SalesforceOpportunities::new(bench.api.clone());
        for next in [
            "https://evil.example/steal",
            "/services/data/../../oauth",
            "/other/path",
        ] {
            let cursor = Watermark {
                page: Some(next.to_owned()),
                ..Watermark::default()
            };
            let refused = bench
                .page(&poller, Some(&cursor.encode().expect("cursor")))
                .await
                .expect_err("refused");
            assert!(matches!(
                refused,
                CallError::Failed(CallFailure {
                    class: FailureClass::Permanent,
                    ..
                })
            ));
        }
        assert!(bench.requests().is_empty(), "no request was made");
    }

    #[tokio::test]
    async fn salesforce_error_arrays_are_classified_by_the_catalog_rules() {
        let org = org(1);
        let bench = org_bench(&org).await;
        let poller = SalesforceOpportunities::new(bench.api.clone());
        let cases = [
            (
                400,
                "MALFORMED_QUERY",
                "unexpected token: 'FROM'",
                FailureClass::Permanent,
            ),
            (
                400,
                "INVALID_FIELD",
                "No such column 'Foo' on entity 'Opportunity'",
                FailureClass::Permanent,
            ),
            (
                403,
                "REQUEST_LIMIT_EXCEEDED",
                "TotalRequests Limit exceeded.",
                FailureClass::RateLimited,
            ),
        ];
        for (status, code, message, class) in cases {
            let body = json!([{"message": message, "errorCode": code}]);
            let answer = body.clone();
            bench.serve(move |_| ScriptedResponse::with_status(status, &answer));
            let failure = bench.page(&poller, None).await.expect_err("refused");
            match failure {
                CallError::Failed(CallFailure {
                    class: got,
                    code: got_code,
                }) => {
                    assert_eq!((got, got_code.as_str()), (class, code), "{body}");
                }
                CallError::Requeue { .. } => {
                    assert_eq!(class, FailureClass::RateLimited, "{body}");
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn record_times_become_soql_literals_in_utc() {
        assert_eq!(
            soql_time("2013-05-20T20:49:32.000+0000").expect("ok"),
            "2013-05-20T20:49:32Z"
        );
        assert_eq!(
            soql_time("2013-05-20T22:49:32.000+0200").expect("ok"),
            "2013-05-20T20:49:32Z"
        );
        assert_eq!(
            soql_time("2013-05-20T20:49:32Z").expect("ok"),
            "2013-05-20T20:49:32Z"
        );
        assert!(soql_time("20 May 2013").is_err());
        assert_eq!(
            instance_root("https://acme.my.salesforce.com/services/data/v67.0"),
            "https://acme.my.salesforce.com"
        );
    }
}
