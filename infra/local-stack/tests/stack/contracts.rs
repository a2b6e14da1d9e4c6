//! The contract check end to end through the local stack (issue 30): HubSpot's catalog
//! entry pointed at a fake provider on loopback by an overlay, as an operator would point
//! it at a sandbox; one connection made through the real connect flow with a session
//! marked `sandbox: true`, another without. The contract check's schedule (off by
//! default in the template) is fired by hand, as EventBridge would: with the deal served
//! in its recorded shape it checks the sandbox only and announces nothing; with the deal
//! evolved (a field removed, one changed in type, one added) it announces
//! `provider.contract_failed` and `provider.schema_changed` with the diff, naming the
//! tenant and the connection, and writes the metric the template's alarm reads (the same
//! change found again is announced under the same ids); with a property added only, it
//! announces the new shape and no failure. The real `junction contract-test` binary
//! checks the same sandbox through the stack's management API proxy and prints the
//! table, with and without `--provider` (a provider without a sandbox: the fixtures).

use crate::common;
use common::{
    BusObserver, RETURN_TO_ORIGIN, browser, connect_url, first_cookie, location, session_for,
    start_with_overlay, stop_and_check_processes_are_gone,
};

use std::{
    collections::BTreeSet,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use fake_provider::{ApiRequest, AuthServerConfig, FakeAuthServer, ScriptedResponse};
use junction_aws::events::CloudEvent;
use junction_catalog::Catalog;
use local_stack::{
    binaries::{self, Profile},
    emulator::repo_root,
    leaks::MIN_SECRET_LEN,
    stack::LocalStack,
};
use serde_json::{Value, json};

/// The types the contract check announces.
const CONTRACT_FAILED: &str = "provider.contract_failed";
const SCHEMA_CHANGED: &str = "provider.schema_changed";

/// HubSpot's pinned version (the recorded schema's directory).
const PINNED: &str = "2026-03";

/// The contract read's path and the connection test's, relative to the API base.
const DEALS_PATH: &str = "/crm/v3/objects/deals";
const TEST_PATH: &str = "/account-info/2026-03/details";

/// The diff the evolved deal shows against the recorded schema, as the table and the
/// log line write it.
const EVOLVED_DIFF: &str =
    "added $.url (string); removed $.archived (boolean); changed $.id string -> number";

/// The fake HubSpot: its account details, and one deal (the recorded fixture unless the
/// test evolves it) as `GET /crm/v3/objects/deals` lists it.
struct FakeHubSpot {
    deal: Mutex<Value>,
}

impl FakeHubSpot {
    fn answer(&self, request: &ApiRequest) -> ScriptedResponse {
        match (request.method.as_str(), request.path.as_str()) {
            ("GET", TEST_PATH) => ScriptedResponse::json(&json!({
                "portalId": 62515,
                "accountType": "DEVELOPER_TEST",
                "timeZone": "Europe/Berlin",
                "companyCurrency": "EUR",
                "utcOffset": "+01:00",
            })),
            ("GET", DEALS_PATH) => {
                let deal = self.deal.lock().expect("deal").clone();
                ScriptedResponse::json(&json!({ "results": [deal] }))
            }
            _ => ScriptedResponse::with_status(
                404,
                &json!({"status": "error", "message": "not found", "category": "OBJECT_NOT_FOUND"}),
            ),
        }
    }

    /// A field removed, a type changed, a field added: what a provider's silent API
    /// change looks like to an adapter.
    fn evolve(&self) {
        let mut deal = self.deal.lock().expect("deal");
        let fields = deal.as_object_mut().expect("a deal object");
        fields.remove("archived");
        fields.insert("id".into(), json!(512));
        fields.insert(
            "url".into(),
            json!("https://app.hubspot.com/contacts/62515/deal/512"),
        );
    }

    /// The recorded deal with one property added and nothing else changed: the adapters
    /// still work, the recorded schema is behind.
    fn add_property(&self) {
        let mut deal = recorded_deal();
        deal["properties"]["hs_forecast_amount"] = json!("1350.00");
        *self.deal.lock().expect("deal") = deal;
    }
}

/// The recorded HubSpot deal fixture (what `contracts/hubspot/2026-03/deal.json` was
/// recorded from).
fn recorded_deal() -> Value {
    let path = repo_root().join("tests/fixtures/hubspot/deal.json");
    let text = std::fs::read_to_string(&path).expect("the HubSpot deal fixture");
    serde_json::from_str::<Value>(&text).expect("JSON")["body"].clone()
}

/// HubSpot's built-in entry with its OAuth and API pointed at `server` (the pinned
/// version, test request and everything else as built in).
fn overlay(server: &FakeAuthServer) -> String {
    let builtin = Catalog::embedded().expect("catalog");
    assert_eq!(
        builtin
            .get("hubspot")
            .and_then(|p| p.api_version.as_deref()),
        Some(PINNED)
    );
    let mut entry: toml::Table = toml::from_str(include_str!(
        "../../../../shared/catalog/providers/hubspot.toml"
    ))
    .expect("hubspot.toml");
    let oauth: toml::Table = toml::from_str(&format!(
        "{}account_id = \"/account_id\"\n",
        server.oauth_catalog_fields()
    ))
    .expect("oauth");
    entry.insert("oauth".into(), toml::Value::Table(oauth));
    let api = entry
        .get_mut("api")
        .and_then(toml::Value::as_table_mut)
        .expect("[api]");
    api.insert(
        "base_url".into(),
        toml::Value::String(server.provider_api_base()),
    );
    assert_eq!(
        api.get("test_request")
            .and_then(|t| t.get("path"))
            .and_then(toml::Value::as_str),
        Some(TEST_PATH)
    );
    let overlay: toml::Table = [(
        "provider".to_owned(),
        toml::Value::Array(vec![toml::Value::Table(entry)]),
    )]
    .into_iter()
    .collect();
    toml::to_string(&overlay).expect("overlay")
}

/// Connects `tenant`'s account `account` through the browser flow, with a connect
/// session marked `sandbox` or not; returns the connection id.
async fn connect(
    stack: &LocalStack,
    server: &FakeAuthServer,
    tenant: &str,
    account: &str,
    sandbox: bool,
) -> String {
    server.sign_in_as(account);
    let http = browser();
    let mut request = session_for("hubspot", tenant, &format!("{RETURN_TO_ORIGIN}/connected"));
    request.sandbox = sandbox;
    let start_url = connect_url(stack, &request).await;
    let start = http.get(start_url).send().await.expect("start");
    assert_eq!(start.status(), 302);
    let cookie = first_cookie(&start);
    let authorize = http.get(location(&start)).send().await.expect("authorize");
    let callback = http
        .get(location(&authorize))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("callback");
    assert_eq!(callback.status(), 302, "connected");
    url::Url::parse(&location(&callback))
        .expect("return_to")
        .query_pairs()
        .find(|(k, _)| k == "connection_id")
        .map(|(_, v)| v.into_owned())
        .expect("connection id")
}

/// Every stored connection: id → (tenant, document).
async fn stored_connections(stack: &LocalStack) -> Vec<(String, String, Value)> {
    let table = stack.description().resources["ConnectionsTable"].clone();
    let output = aws_sdk_dynamodb::Client::new(stack.sdk_config())
        .scan()
        .table_name(table)
        .send()
        .await
        .expect("connections scanned");
    output
        .items()
        .iter()
        .filter_map(|item| {
            let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
            let doc = serde_json::from_str(&text("doc")?).ok()?;
            Some((text("id")?, text("tenant")?, doc))
        })
        .collect()
}

/// The contract check's schedule: present, off as the template's default leaves it.
fn contract_check_schedule(stack: &LocalStack) -> String {
    let (name, target) = stack
        .schedules()
        .iter()
        .find(|(_, target)| target.function.logical_id() == "ContractCheckFunction")
        .expect("the contract check's schedule");
    assert!(
        !target.enabled,
        "ContractCheckSchedule defaults to DISABLED: the schedule is off"
    );
    assert_eq!(target.expression_text, "cron(0 3 * * ? *)");
    name.clone()
}

/// Fires the schedule once, as EventBridge Scheduler would; the function's answer.
async fn fire(stack: &LocalStack, schedule: &str) -> Value {
    let answer = stack
        .fire_schedule(schedule)
        .await
        .expect("the contract check ran");
    serde_json::from_slice(&answer).expect("a JSON answer")
}

/// The contract check's announcements the bus delivered within `limit` (after which the
/// queue is drained once more, so a late or duplicate event would show).
async fn announced(observer: &BusObserver, count: usize, limit: Duration) -> Vec<CloudEvent> {
    let mut seen = Vec::new();
    let started = std::time::Instant::now();
    let contract = |seen: &[CloudEvent]| {
        seen.iter()
            .filter(|e| e.event_type == CONTRACT_FAILED || e.event_type == SCHEMA_CHANGED)
            .count()
    };
    while contract(&seen) < count && started.elapsed() < limit {
        observer.drain(&mut seen).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    observer.drain(&mut seen).await;
    seen.retain(|e| e.event_type == CONTRACT_FAILED || e.event_type == SCHEMA_CHANGED);
    seen
}

/// The function's `contract check` lines so far, parsed.
fn contract_lines(stack: &LocalStack) -> Vec<Value> {
    stack.functions()["ContractCheckFunction"]
        .logs()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == "contract check")
        .collect()
}

/// The requests the fake provider's API received for `path`.
fn requests_to(server: &FakeAuthServer, path: &str) -> usize {
    server
        .provider_requests()
        .iter()
        .filter(|r| r.path == path)
        .count()
}

/// The `junction` CLI binary, built as the stack's functions are.
async fn cli_binary() -> PathBuf {
    let wanted: BTreeSet<String> = ["junction".to_owned()].into();
    let built = binaries::build(&repo_root(), &wanted, Profile::Debug)
        .await
        .expect("the junction CLI builds");
    built["junction"].clone()
}

/// What one run of the CLI printed, and how it exited.
struct CliRun {
    success: bool,
    stdout: String,
    stderr: String,
}

impl CliRun {
    /// The table's rows: provider, connection, request, result and the details.
    fn rows(&self) -> Vec<[String; 5]> {
        self.stdout
            .lines()
            .skip_while(|line| !line.starts_with("PROVIDER"))
            .skip(1)
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let mut cells = line.split_whitespace();
                let mut next = || cells.next().unwrap_or_default().to_owned();
                let (provider, connection, request, result) = (next(), next(), next(), next());
                let details = cells.collect::<Vec<_>>().join(" ");
                [provider, connection, request, result, details]
            })
            .collect()
    }
}

/// Runs `junction contract-test --api-url <stack> <args>` against the stack's emulator,
/// with the local stack's stand-in IAM credential. Its output never holds a token the
/// fake provider issued (the requests go out through the stack's proxy with the
/// connection's token, which never reaches the laptop), nor that credential.
async fn contract_test(
    stack: &LocalStack,
    server: &FakeAuthServer,
    binary: &PathBuf,
    args: &[&str],
) -> CliRun {
    let endpoint = stack.emulator_endpoint().expect("the emulator's endpoint");
    let region = stack
        .sdk_config()
        .region()
        .map(ToString::to_string)
        .unwrap_or_else(|| "us-east-1".into());
    let mut command = tokio::process::Command::new(binary);
    command
        .args([
            "--endpoint",
            endpoint,
            "--region",
            &region,
            "--stack-name",
            &stack.description().stack_name,
            "contract-test",
            "--api-url",
            stack.api_url(),
        ])
        .args(args)
        .env("JUNCTION_LOCAL_IAM_KEY", stack.local_iam_key())
        .env_remove("JUNCTION_API_URL")
        .env_remove("AWS_PROFILE")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("junction contract-test finished in time")
        .expect("junction contract-test ran");
    let run = CliRun {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    println!(
        "junction contract-test {}\n{}{}",
        args.join(" "),
        run.stdout,
        run.stderr
    );
    let issued = server.issued_secrets();
    assert!(
        !issued.is_empty(),
        "the fake issued the connections' tokens"
    );
    let secrets = issued
        .iter()
        .map(|secret| (secret.what, secret.value.as_str()))
        .chain([("the local IAM credential", stack.local_iam_key())]);
    for (what, value) in secrets.filter(|(_, value)| value.len() >= MIN_SECRET_LEN) {
        assert!(
            !run.stdout.contains(value) && !run.stderr.contains(value),
            "junction contract-test printed {what}"
        );
    }
    run
}

fn row(connection: &str, request: &str, result: &str, details: &str) -> [String; 5] {
    [
        "hubspot".to_owned(),
        connection.to_owned(),
        request.to_owned(),
        result.to_owned(),
        details.to_owned(),
    ]
}

#[tokio::test]
async fn a_sandbox_connection_is_contract_checked_by_the_schedule_and_the_cli() {
    let server = FakeAuthServer::start(AuthServerConfig::default()).await;
    let hubspot = Arc::new(FakeHubSpot {
        deal: Mutex::new(recorded_deal()),
    });
    let serving = hubspot.clone();
    server.serve_provider_api(move |request| serving.answer(request));
    let (stack, prefix, dir) = start_with_overlay("contracts", &overlay(&server)).await;
    server.set_redirect_uris(vec![format!("{}/oauth/hubspot/callback", stack.api_url())]);
    aws_sdk_secretsmanager::Client::new(stack.sdk_config())
        .create_secret()
        .name(format!("{prefix}/oauth/hubspot"))
        .secret_string(
            r#"{"client_id":"junction-test-client","client_secret":"junction-test-secret"}"#,
        )
        .send()
        .await
        .expect("client credentials stored");
    let observer = BusObserver::subscribe(&stack).await;
    let schedule = contract_check_schedule(&stack);

    // A sandbox account, connected through the real connect flow with `sandbox: true`,
    // and a customer's account without it: only the first is ever checked.
    let sandbox = connect(&stack, &server, "acme", "hubspot-sandbox", true).await;
    let customer = connect(&stack, &server, "globex", "hubspot-customer", false).await;
    let stored = stored_connections(&stack).await;
    let marked: Vec<(&str, &str)> = stored
        .iter()
        .filter(|(_, _, doc)| doc["sandbox"] == true)
        .map(|(id, tenant, _)| (id.as_str(), tenant.as_str()))
        .collect();
    assert_eq!(marked, [(sandbox.as_str(), "acme")], "{stored:?}");
    assert!(stored.iter().any(|(id, _, _)| *id == customer));

    // The recorded shape: the check runs both requests for the sandbox alone, passes,
    // and announces nothing; its line counts two checks and no failure.
    let answer = fire(&stack, &schedule).await;
    assert_eq!(
        answer,
        json!({"checked": 2, "failures": 0, "announced": 0}),
        "the unchanged schema passes"
    );
    assert_eq!(
        requests_to(&server, TEST_PATH),
        1,
        "the connection test, once"
    );
    let reads: Vec<ApiRequest> = server
        .provider_requests()
        .into_iter()
        .filter(|r| r.path == DEALS_PATH)
        .collect();
    assert_eq!(reads.len(), 1, "one deal read, for the sandbox only");
    assert_eq!(reads[0].query_param("limit"), Some("1"));
    assert!(
        reads[0]
            .query_param("properties")
            .is_some_and(|p| p.split(',').any(|name| name == "dealname")),
        "the read asks for the recorded properties: {:?}",
        reads[0].query
    );
    let lines = contract_lines(&stack);
    let [line] = lines.as_slice() else {
        panic!("one contract check line: {lines:?}")
    };
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["Provider"], "hubspot");
    assert_eq!(line["ContractChecks"], 2);
    assert_eq!(line["ContractFailures"], 0);
    assert_eq!(line["results"], json!(["test=ok", "deal=ok"]));
    let quiet = announced(&observer, 1, Duration::from_secs(6)).await;
    assert!(
        quiet.is_empty(),
        "an unchanged schema announces nothing: {quiet:?}"
    );

    // The CLI against the running stack: the sandbox, through the management API's
    // proxy, both requests ok; the customer's connection is not in the table.
    let binary = cli_binary().await;
    let run = contract_test(&stack, &server, &binary, &[]).await;
    assert!(run.success, "nothing broken: {}", run.stderr);
    assert!(
        !run.stdout.contains("no sandbox connection checked"),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.rows(),
        [
            row(&sandbox, "test", "ok", ""),
            row(&sandbox, "deal", "ok", "")
        ]
    );
    assert!(!run.stdout.contains(&customer), "{}", run.stdout);
    assert_eq!(
        requests_to(&server, DEALS_PATH),
        2,
        "the CLI read the deal once"
    );

    // The provider changes its answer: a field removed, a type changed, a field added.
    hubspot.evolve();
    let answer = fire(&stack, &schedule).await;
    assert_eq!(
        answer,
        json!({"checked": 2, "failures": 1, "announced": 2}),
        "the evolved deal breaks the contract"
    );
    let events = announced(&observer, 2, Duration::from_secs(60)).await;
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let failed = events
        .iter()
        .find(|e| e.event_type == CONTRACT_FAILED)
        .unwrap_or_else(|| panic!("provider.contract_failed on the bus: {types:?}"));
    let changed = events
        .iter()
        .find(|e| e.event_type == SCHEMA_CHANGED)
        .unwrap_or_else(|| panic!("provider.schema_changed on the bus: {types:?}"));
    assert_eq!(events.len(), 2, "one of each: {types:?}");
    let added = json!([{"path": "$.url", "type": "string"}]);
    let removed = json!([{"path": "$.archived", "type": "boolean"}]);
    let retyped = json!([{"path": "$.id", "from": "string", "to": "number"}]);
    let recorded: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("contracts/hubspot/2026-03/deal.json"))
            .expect("the recorded schema"),
    )
    .expect("JSON");
    for event in [failed, changed] {
        assert_eq!(event.source, "junction/hubspot");
        assert_eq!(event.tenant.as_deref(), Some("acme"), "{event:?}");
        assert_eq!(event.connection.as_deref(), Some(sandbox.as_str()));
        assert_eq!(event.subject.as_deref(), Some(sandbox.as_str()));
        assert_eq!(event.data["provider"], "hubspot");
        assert_eq!(event.data["api_version"], PINNED);
        assert_eq!(event.data["added"], added, "{event:?}");
        assert_eq!(event.data["removed"], removed);
        assert_eq!(event.data["changed"], retyped);
    }
    assert_eq!(failed.data["connection_id"], sandbox.as_str());
    assert_eq!(failed.data["request"], "deal");
    assert_eq!(failed.data["reason"], Value::Null);
    assert_eq!(failed.data["recorded_fingerprint"], recorded["fingerprint"]);
    assert_eq!(changed.data["origin"], "contract_check");
    assert_eq!(changed.data["subject"], "contract:deal");
    assert_eq!(changed.data["resource"], "deal");
    assert_eq!(
        changed.data["previous_fingerprint"],
        recorded["fingerprint"]
    );
    assert_ne!(changed.data["fingerprint"], recorded["fingerprint"]);

    // The metric the template's alarm reads: namespace Junction, ContractFailures, no
    // dimensions (the EMF line's aggregate dimension set), more than 0 in a day.
    let alarm = &stack.description().alarms
        [&format!("{}-contract-check-failures", stack.description().stack_name)];
    assert_eq!(alarm.namespace.as_deref(), Some("Junction"));
    assert_eq!(alarm.metric.as_deref(), Some("ContractFailures"));
    assert_eq!(alarm.threshold, Some(0.0));
    assert_eq!(alarm.comparison.as_deref(), Some("GreaterThanThreshold"));
    let lines = contract_lines(&stack);
    let line = lines.last().expect("the second run's line");
    assert_eq!(lines.len(), 2);
    assert_eq!(line["level"], "ERROR");
    assert_eq!(line["Provider"], "hubspot");
    assert_eq!(line["ContractFailures"], 1, "{line}");
    assert_eq!(line["results"], json!(["test=ok", "deal=broken"]));
    assert_eq!(line["details"], json!([format!("deal: {EVOLVED_DIFF}")]));
    let emf = &line["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(
        emf["Namespace"],
        alarm.namespace.as_deref().unwrap_or_default()
    );
    assert!(
        emf["Metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["Name"] == alarm.metric.as_deref().unwrap_or_default()),
        "{emf}"
    );
    assert!(
        emf["Dimensions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|set| set == &json!([])),
        "the aggregate, without dimensions, is what the alarm reads: {emf}"
    );
    assert!(line["ContractFailures"].as_f64().unwrap_or_default() > alarm.threshold.unwrap_or(0.0));

    // The same change found again the same day: the same ids, which subscribers
    // deduplicate on.
    let answer = fire(&stack, &schedule).await;
    assert_eq!(answer["announced"], 2);
    let again = announced(&observer, 2, Duration::from_secs(60)).await;
    let ids = |events: &[CloudEvent]| {
        let mut ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&again), ids(&events));

    // The CLI sees the broken contract: its table names the sandbox and the diff, and
    // it exits non-zero; `--provider hubspot` checks the same, `--provider linear` (no
    // sandbox) falls back to the recorded fixtures.
    let broken = [
        row(&sandbox, "test", "ok", ""),
        row(&sandbox, "deal", "broken", EVOLVED_DIFF),
    ];
    let run = contract_test(&stack, &server, &binary, &[]).await;
    assert!(!run.success, "a broken contract exits non-zero");
    assert_eq!(run.rows(), broken);
    let run = contract_test(&stack, &server, &binary, &["--provider", "hubspot"]).await;
    assert!(!run.success);
    assert_eq!(run.rows(), broken);
    let run = contract_test(&stack, &server, &binary, &["--provider", "linear"]).await;
    assert!(run.success, "{}", run.stderr);
    assert!(
        run.stdout.contains("no sandbox connection checked"),
        "{}",
        run.stdout
    );
    let rows = run.rows();
    assert_eq!(
        rows,
        [[
            "linear".to_owned(),
            "(fixtures)".to_owned(),
            "issue".to_owned(),
            "ok".to_owned(),
            String::new()
        ]]
    );
    let run = contract_test(&stack, &server, &binary, &["--provider", "stripe"]).await;
    assert!(!run.success, "stripe has no contract reads");
    assert!(run.stderr.contains("no contract reads"), "{}", run.stderr);

    // A property added, nothing removed or retyped: a changed schema, not a broken
    // contract. Announced as a new shape (no contract failure, no alarm metric), and
    // the CLI passes with the row marked changed.
    hubspot.add_property();
    let answer = fire(&stack, &schedule).await;
    assert_eq!(
        answer,
        json!({"checked": 2, "failures": 0, "announced": 1}),
        "an added field changes the schema only"
    );
    let events = announced(&observer, 1, Duration::from_secs(60)).await;
    let [changed] = events.as_slice() else {
        panic!("one provider.schema_changed, no contract failure: {events:?}")
    };
    assert_eq!(changed.event_type, SCHEMA_CHANGED);
    assert_eq!(changed.tenant.as_deref(), Some("acme"));
    assert_eq!(changed.connection.as_deref(), Some(sandbox.as_str()));
    assert_eq!(
        changed.data["added"],
        json!([{"path": "$.properties.hs_forecast_amount", "type": "string"}])
    );
    assert_eq!(changed.data["removed"], json!([]));
    assert_eq!(changed.data["changed"], json!([]));
    assert!(
        !ids(&again).contains(&changed.id),
        "a new shape is a new event"
    );
    let lines = contract_lines(&stack);
    let line = lines.last().expect("the fourth run's line");
    assert_eq!(lines.len(), 4);
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["ContractFailures"], 0, "{line}");
    assert_eq!(line["results"], json!(["test=ok", "deal=changed"]));
    let run = contract_test(&stack, &server, &binary, &["--provider", "hubspot"]).await;
    assert!(run.success, "a changed schema is not a broken contract");
    assert_eq!(
        run.rows(),
        [
            row(&sandbox, "test", "ok", ""),
            row(
                &sandbox,
                "deal",
                "changed",
                "added $.properties.hs_forecast_amount (string)"
            ),
        ]
    );
    assert_eq!(
        requests_to(&server, DEALS_PATH),
        8,
        "each run read the sandbox's deal once, the linear and stripe runs none"
    );

    stop_and_check_processes_are_gone(stack).await;
    let _ = std::fs::remove_dir_all(dir);
}
