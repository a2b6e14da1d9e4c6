use std::collections::BTreeMap;
use std::sync::Mutex;

use junction_pipeline::drift::SCHEMA_CHANGED;
use serde_json::json;

use super::*;
use crate::recorded::repo_root;

fn catalog() -> &'static Catalog {
    Catalog::embedded().expect("catalog")
}

/// A provider sandbox answering from a table of paths (the HubSpot deal as recorded,
/// unless a test evolves it).
#[derive(Debug, Default)]
struct Sandbox {
    answers: Mutex<BTreeMap<String, Result<Value, CallFailed>>>,
}

impl Sandbox {
    fn answer(&self, path_prefix: &str, answer: Result<Value, CallFailed>) {
        self.answers
            .lock()
            .expect("lock")
            .insert(path_prefix.to_owned(), answer);
    }
}

#[async_trait]
impl ContractClient for Sandbox {
    async fn send(
        &self,
        _: &SandboxConnection,
        _: &str,
        path: &str,
        _: Option<&str>,
    ) -> Result<Value, CallFailed> {
        self.answers
            .lock()
            .expect("lock")
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .map(|(_, answer)| answer.clone())
            .unwrap_or_else(|| Err(CallFailed("http_404".into())))
    }
}

fn hubspot_deal() -> Value {
    let text = std::fs::read_to_string(repo_root().join("tests/fixtures/hubspot/deal.json"))
        .expect("fixture");
    serde_json::from_str::<Value>(&text).expect("JSON")["body"].clone()
}

fn sandbox_connection() -> SandboxConnection {
    SandboxConnection {
        id: "conn_sandbox".into(),
        tenant: "acme".into(),
        provider: "hubspot".into(),
    }
}

async fn run(sandbox: Arc<Sandbox>) -> Vec<Checked> {
    let checker = ContractChecker::new(catalog(), sandbox);
    check_sandboxes(
        &checker,
        &InMemorySandboxes(vec![sandbox_connection()]),
        Some("hubspot"),
    )
    .await
    .expect("listed")
}

#[tokio::test]
async fn an_unchanged_schema_passes_and_announces_nothing() {
    let sandbox = Arc::new(Sandbox::default());
    sandbox.answer("/account-info/", Ok(json!({"portalId": 1})));
    sandbox.answer(
        "/crm/v3/objects/deals",
        Ok(json!({"results": [hubspot_deal()]})),
    );
    let results = run(sandbox).await;
    let verdicts: Vec<_> = results
        .iter()
        .map(|c| (c.request.as_str(), c.verdict.as_str()))
        .collect();
    assert_eq!(verdicts, [("test", "ok"), ("deal", "ok")]);
    assert!(announcements(&results, OffsetDateTime::UNIX_EPOCH).is_empty());
    let line: Value = serde_json::from_slice(&report_lines(&results)).expect("a JSON line");
    assert_eq!(line[CONTRACT_FAILURES_METRIC], 0);
    assert_eq!(line["ContractChecks"], 2);
}

#[tokio::test]
async fn an_evolved_schema_is_a_broken_contract_with_its_diff() {
    let sandbox = Arc::new(Sandbox::default());
    sandbox.answer("/account-info/", Ok(json!({"portalId": 1})));
    let mut deal = hubspot_deal();
    // A field removed, a type changed, a field added.
    let deal_fields = deal.as_object_mut().expect("object");
    deal_fields.remove("archived");
    deal_fields.insert("id".into(), json!(123));
    deal_fields.insert("url".into(), json!("https://app.hubspot.com/x"));
    sandbox.answer("/crm/v3/objects/deals", Ok(json!({"results": [deal]})));
    let results = run(sandbox).await;
    let deal = results.iter().find(|c| c.request == "deal").expect("deal");
    let Verdict::Broken(diff) = &deal.verdict else {
        panic!("{:?}", deal.verdict)
    };
    assert_eq!(
        diff.to_string(),
        "added $.url (string); removed $.archived (boolean); changed $.id string -> number"
    );
    let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time");
    let events = announcements(&results, now);
    let types: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, [CONTRACT_FAILED, SCHEMA_CHANGED]);
    let failed = &events[0];
    assert_eq!(failed.tenant.as_deref(), Some("acme"));
    assert_eq!(failed.connection.as_deref(), Some("conn_sandbox"));
    assert_eq!(failed.data["request"], "deal");
    assert_eq!(failed.data["api_version"], "2026-03");
    assert_eq!(
        failed.data["removed"],
        json!([{"path": "$.archived", "type": "boolean"}])
    );
    assert_eq!(
        failed.data["changed"],
        json!([{"path": "$.id", "from": "string", "to": "number"}])
    );
    assert_eq!(
        failed.data["added"],
        json!([{"path": "$.url", "type": "string"}])
    );
    let changed = &events[1];
    assert_eq!(changed.data["origin"], "contract_check");
    assert_eq!(changed.data["subject"], "contract:deal");
    // The schema change names the sandbox that showed it, as the failure does.
    assert_eq!(changed.tenant.as_deref(), Some("acme"));
    assert_eq!(changed.connection.as_deref(), Some("conn_sandbox"));
    assert_eq!(changed.subject.as_deref(), Some("conn_sandbox"));
    assert_eq!(changed.data["removed"], failed.data["removed"]);
    // The same change found the next night is the same schema_changed event.
    let later = announcements(&results, now + time::Duration::days(1));
    assert_eq!(later[1].id, changed.id);
    assert_ne!(
        later[0].id, failed.id,
        "a contract failure is announced each run"
    );
    let line: Value = serde_json::from_slice(&report_lines(&results)).expect("a JSON line");
    assert_eq!(line[CONTRACT_FAILURES_METRIC], 1);
}

#[tokio::test]
async fn an_added_field_only_changes_the_schema_and_a_failed_request_breaks_the_contract() {
    let sandbox = Arc::new(Sandbox::default());
    sandbox.answer("/account-info/", Err(CallFailed("http_503".into())));
    let mut deal = hubspot_deal();
    deal["properties"]["hs_forecast_amount"] = json!("10");
    sandbox.answer("/crm/v3/objects/deals", Ok(json!({"results": [deal]})));
    let results = run(sandbox).await;
    assert_eq!(results[0].verdict, Verdict::Failed("http_503".into()));
    assert!(matches!(results[1].verdict, Verdict::Changed(_)));
    let events = announcements(&results, OffsetDateTime::UNIX_EPOCH);
    let types: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, [CONTRACT_FAILED, SCHEMA_CHANGED]);
    assert_eq!(events[0].data["reason"], "http_503");
    assert_eq!(events[0].data["request"], "test");
}

#[tokio::test]
async fn a_read_that_finds_no_record_is_a_failure() {
    let sandbox = Arc::new(Sandbox::default());
    sandbox.answer("/account-info/", Ok(json!({})));
    sandbox.answer("/crm/v3/objects/deals", Ok(json!({"results": []})));
    let results = run(sandbox).await;
    assert_eq!(
        results[1].verdict,
        Verdict::Failed("no_record_at /results/0".into())
    );
}

#[test]
fn the_recorded_fixtures_match_their_schemas() {
    let results = check_fixtures(catalog(), &repo_root(), None);
    assert_eq!(results.len(), 7);
    for checked in &results {
        assert_eq!(checked.verdict, Verdict::Passed, "{checked:?}");
    }
}
