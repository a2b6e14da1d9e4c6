//! The outbound client against a provider that limits requests without documenting it
//! (the real case: 2 requests/s, found while syncing 1,200 contacts). Scaled up so the
//! run takes seconds: the catalog says 1,000 requests/s, the fake provider allows 200
//! (bursts of 200) and answers the excess with a bare 429 (no headers). 1,200 records
//! are fetched one request each by 8 concurrent workers sharing one connection.
//!
//! Prints the requests made, the 429s received after the first, the elapsed time and
//! the minimum the limit allows. `cargo bench -p junction-tests --bench
//! undocumented_rate_limit`; under `cargo test` it runs 300 records (past one burst).

use std::{
    sync::{Arc, atomic::AtomicUsize, atomic::Ordering},
    time::{Duration, Instant},
};

use fake_provider::{AuthServerConfig, FakeAuthServer};
use junction_aws::clock::SystemClock;
use junction_aws::crypto::InMemoryKeyService;
use junction_aws::events::InMemoryEventBus;
use junction_aws::secrets::InMemorySecretSource;
use junction_catalog::Catalog;
use junction_oauth::{
    CallbackOutcome, CallbackQuery, ConnectFlow, ConnectSessionRequest, ConnectSessions,
    FlowSettings, InMemoryConnectSessionStore, InMemoryConnectionStore, InMemoryStateStore,
    ProviderClient, SecretCredentials, StartRequest, TokenVault, VaultSettings,
};
use junction_outbound::{Call, InMemorySharedState, OutboundClient};

const BASE: &str = "https://hub.example.com";
const DOCUMENTED: f64 = 1_000.0;
const REAL_LIMIT: f64 = 200.0;
const WORKERS: usize = 8;

/// Connects one account through the public flow: a connect session → start → the
/// fake's authorize → callback.
async fn connect(flow: &ConnectFlow, sessions: &ConnectSessions) -> String {
    let session = ConnectSessionRequest {
        tenant: "bench".into(),
        provider: "fakeauth".into(),
        return_to: Some("https://app.example.com/done".into()),
        ..ConnectSessionRequest::default()
    };
    let minted = sessions.mint(&session, BASE).await.expect("session");
    let request = StartRequest {
        session: Some(minted.token.expose().to_owned()),
    };
    let start = flow.start("fakeauth", &request, BASE).await.expect("start");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let authorized = http.get(&start.location).send().await.expect("authorize");
    let location = authorized
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("redirect")
        .to_owned();
    let pairs = url::Url::parse(&location)
        .expect("callback URL")
        .query_pairs()
        .into_owned()
        .collect();
    let binding = start
        .set_cookie
        .split(';')
        .next()
        .and_then(|c| c.split_once('='))
        .map(|(_, v)| v.to_owned());
    let query = CallbackQuery {
        pairs,
        binding_cookie: binding,
    };
    match flow
        .callback("fakeauth", &query, BASE)
        .await
        .expect("callback")
    {
        CallbackOutcome::Connected { connection_id, .. } => connection_id,
        other => panic!("not connected: {other:?}"),
    }
    .to_owned()
}

#[tokio::main]
async fn main() {
    let records = if std::env::args().any(|arg| arg == "--bench") {
        1_200
    } else {
        300
    };
    let server = FakeAuthServer::start(AuthServerConfig {
        redirect_uris: vec![format!("{BASE}/oauth/fakeauth/callback")],
        ..AuthServerConfig::default()
    })
    .await;
    let entry = format!(
        "id = \"fakeauth\"\nname = \"Fake provider\"\ndocs = \"https://example.com/fake\"\n\n[oauth]\n{}\n[api]\nrate_limit = {{ requests_per_second = {DOCUMENTED:.1}, burst = 50, scope = \"connection\" }}\n",
        server.oauth_catalog_fields()
    );
    let catalog: &'static Catalog = Box::leak(Box::new(
        Catalog::from_files_with_rules(
            &[("fakeauth.toml", entry.as_str())],
            junction_catalog::EndpointRules::LoopbackHttpForTests,
        )
        .expect("catalog"),
    ));
    let secrets = InMemorySecretSource::default();
    secrets.put(
        "junction/oauth/fakeauth",
        r#"{"client_id":"junction-test-client","client_secret":"junction-test-secret"}"#,
    );
    let vault = TokenVault::new(
        catalog,
        Arc::new(InMemoryConnectionStore::default()),
        Arc::new(InMemoryKeyService::default()),
        Arc::new(SecretCredentials::new(secrets, "junction")),
        ProviderClient::new(),
        Arc::new(InMemoryEventBus::default()),
        Arc::new(SystemClock),
        VaultSettings::default(),
    );
    let settings = FlowSettings {
        return_to_origins: vec!["https://app.example.com".into()],
        default_return_to: None,
    };
    let store = Arc::new(InMemoryConnectSessionStore::default());
    let sessions = ConnectSessions::new(vault.clone(), store.clone(), settings.clone());
    let flow = ConnectFlow::new(
        vault.clone(),
        Arc::new(InMemoryStateStore::default()),
        store,
        settings,
    );
    let connection = connect(&flow, &sessions).await;
    let client = OutboundClient::new(
        catalog,
        vault,
        Arc::new(InMemorySharedState::default()),
        Arc::new(SystemClock),
    );
    server.set_undocumented_rate_limit(REAL_LIMIT);
    let before = server.counters();

    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let url = server.api_url();
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (client, next, failed, url, connection) = (
            client.clone(),
            next.clone(),
            failed.clone(),
            url.clone(),
            connection.clone(),
        );
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::SeqCst) < records {
                let call = Call {
                    provider: "fakeauth",
                    connection: &connection,
                    operation: "record.get",
                    deadline: Instant::now() + Duration::from_secs(900),
                    accept: &[],
                };
                let result = client
                    .send(call, |http, token| {
                        http.get(&url).bearer_auth(token.value.expose())
                    })
                    .await;
                if result.is_err() {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for worker in workers {
        worker.await.expect("worker");
    }
    let elapsed = started.elapsed();
    let after = server.counters();
    let requests = after.api_calls - before.api_calls;
    let throttled = after.api_throttled - before.api_throttled;
    let minimum = (records as f64 - REAL_LIMIT).max(0.0) / REAL_LIMIT;
    println!("undocumented rate limit: {records} records, {WORKERS} workers");
    println!("  catalog (documented) rate   {DOCUMENTED:>8.0} requests/s");
    println!("  provider's real limit       {REAL_LIMIT:>8.0} requests/s (burst {REAL_LIMIT:.0})");
    println!("  requests made               {requests:>8}");
    println!(
        "  429s received               {throttled:>8} ({} after the first)",
        throttled.saturating_sub(1)
    );
    println!(
        "  records not fetched         {:>8}",
        failed.load(Ordering::SeqCst)
    );
    println!(
        "  elapsed                     {:>8.2} s",
        elapsed.as_secs_f64()
    );
    println!("  minimum the limit allows    {minimum:>8.2} s (records beyond one burst ÷ rate)");
    println!(
        "  elapsed ÷ minimum           {:>8.2}",
        elapsed.as_secs_f64() / minimum.max(f64::EPSILON)
    );
    assert_eq!(failed.load(Ordering::SeqCst), 0, "every record fetched");
}
