//! The management API matches `docs/api/openapi.yaml`:
//!
//! - every `/v1` route of `template.yaml` has an operation in the document, and every
//!   operation a route (a route added without its documentation fails here), each behind
//!   IAM in the template and SigV4 in the document;
//! - the document is valid OpenAPI 3.1 (`openapi-spec-validator`, from the project's
//!   Python environment);
//! - the connections function's handler logic (`junction_oauth::web`, dispatched on the
//!   route key as `functions/connections` does) answers each documented status with a
//!   body that validates against the document's schema for it, and every documented
//!   status is answered by some request here, but those only API Gateway gives. The
//!   proxy's 200 stands for the provider's answer (any status, its own body): checked
//!   here with a JSON one.

use crate::schema_support;

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
    sync::Arc,
};

use async_trait::async_trait;
use junction_aws::clock::FixedClock;
use junction_aws::crypto::InMemoryKeyService;
use junction_aws::events::InMemoryEventBus;
use junction_aws::queue::InMemoryEventQueue;
use junction_aws::secrets::InMemorySecretSource;
use junction_oauth::testing::{
    BASE, RETURN_TO, fake_catalog, flow_settings, harness, harness_with,
};
use junction_oauth::web::{self, HttpReply, ManagementRoute};
use junction_oauth::{
    ConnectSession, ConnectSessionStore, ConnectSessions, Connection, ConnectionState,
    ConnectionStore, ConnectionStoreError, EndUser, LifetimeObservation, ProviderClient,
    SecretCredentials, SessionTake, TokenVault, UnreadableConnection, VaultSettings,
    sample_connection,
};
use junction_outbound::actions::{
    ActionStatus, ActionStatusStore, InMemoryActionStatusStore, StatusError,
};
use junction_outbound::idempotency::InMemoryProxyIdempotencyStore;
use junction_outbound::proxy::{PROXY_RESPONSE_CAP, Proxy};
use junction_outbound::{InMemorySharedState, OutboundClient, actions, connection_test, proxy};
use local_stack::emulator::ensure_venv;
use schema_support::{OPENAPI, Schemas, check, file_uri, read_yaml, repo};
use serde_json::{Value, json};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

/// The `/v1` routes of `template.yaml`'s HTTP API: `(METHOD, path)` → the route's
/// authorizer.
fn template_routes() -> BTreeMap<(String, String), Option<String>> {
    let template = read_yaml("template.yaml");
    let mut routes = BTreeMap::new();
    let resources = template["Resources"].as_object().expect("Resources");
    for resource in resources.values() {
        let Some(events) = resource["Properties"]["Events"].as_object() else {
            continue;
        };
        for event in events.values() {
            let properties = &event["Properties"];
            let path = properties["Path"].as_str().unwrap_or_default();
            if event["Type"] != "HttpApi" || !(path == "/v1" || path.starts_with("/v1/")) {
                continue;
            }
            let method = properties["Method"].as_str().expect("a route's Method");
            let authorizer = properties["Auth"]["Authorizer"].as_str().map(str::to_owned);
            routes.insert((method.to_uppercase(), path.to_owned()), authorizer);
        }
    }
    assert!(!routes.is_empty(), "template.yaml has /v1 routes");
    routes
}

/// The document's operations: `(METHOD, path)` → the operation.
fn operations(openapi: &Value) -> BTreeMap<(String, String), &Value> {
    let paths = openapi["paths"].as_object().expect("paths");
    let mut operations = BTreeMap::new();
    for (path, item) in paths {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                operations.insert((method.to_uppercase(), path.clone()), operation);
            }
        }
    }
    operations
}

#[test]
fn every_v1_route_is_documented_and_every_operation_routed() {
    let openapi = read_yaml(OPENAPI);
    let routes = template_routes();
    let operations = operations(&openapi);
    let undocumented: Vec<_> = routes
        .keys()
        .filter(|key| !operations.contains_key(key))
        .collect();
    assert!(
        undocumented.is_empty(),
        "template.yaml routes without an operation in {OPENAPI}: {undocumented:?}"
    );
    let unrouted: Vec<_> = operations
        .keys()
        .filter(|key| !routes.contains_key(key))
        .collect();
    assert!(
        unrouted.is_empty(),
        "operations in {OPENAPI} that template.yaml does not route: {unrouted:?}"
    );
    let sigv4 = json!([{ "sigv4": [] }]);
    for (key, authorizer) in &routes {
        assert_eq!(
            authorizer.as_deref(),
            Some("AWS_IAM"),
            "{key:?}: the management API is IAM-authorized"
        );
        let operation = operations[key];
        let security = operation.get("security").unwrap_or(&openapi["security"]);
        assert_eq!(security, &sigv4, "{key:?}: documented as SigV4");
        assert!(
            operation["operationId"].is_string(),
            "{key:?}: has an operationId"
        );
    }
}

#[test]
fn the_document_is_valid_openapi_3_1() {
    assert!(
        read_yaml(OPENAPI)["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1."))
    );
    let root = repo();
    // openapi-spec-validator comes with moto[server] (infra/requirements.txt).
    let venv = ensure_venv(&root).expect("the project's Python environment (infra/venv)");
    let output = Command::new(venv.join("bin/python"))
        .args(["-m", "openapi_spec_validator"])
        .arg(root.join(OPENAPI))
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "{OPENAPI} is not valid OpenAPI:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A connection store that is down: every call fails as DynamoDB unreachable would.
#[derive(Debug)]
struct DownConnections;

fn down() -> ConnectionStoreError {
    ConnectionStoreError("dispatch failure: connection refused".into())
}

#[async_trait]
impl ConnectionStore for DownConnections {
    async fn insert(&self, _: &Connection) -> Result<(), ConnectionStoreError> {
        Err(down())
    }
    async fn get(&self, _: &str) -> Result<Option<Connection>, ConnectionStoreError> {
        Err(down())
    }
    async fn replace(&self, _: &Connection, _: u64) -> Result<bool, ConnectionStoreError> {
        Err(down())
    }
    async fn delete(&self, _: &str) -> Result<(), ConnectionStoreError> {
        Err(down())
    }
    async fn list_for_tenant(&self, _: &str) -> Result<Vec<Connection>, ConnectionStoreError> {
        Err(down())
    }
    async fn list_all(&self, _: usize) -> Result<Vec<Connection>, ConnectionStoreError> {
        Err(down())
    }
    async fn due_for_refresh(
        &self,
        _: i64,
        _: usize,
    ) -> Result<Vec<Result<Connection, UnreadableConnection>>, ConnectionStoreError> {
        Err(down())
    }
    async fn lifetime_observations(
        &self,
        _: &str,
    ) -> Result<Vec<LifetimeObservation>, ConnectionStoreError> {
        Err(down())
    }
    async fn record_lifetime(
        &self,
        _: &str,
        _: LifetimeObservation,
    ) -> Result<(), ConnectionStoreError> {
        Err(down())
    }

    async fn last_events(
        &self,
        _: &[&str],
    ) -> Result<std::collections::HashMap<String, i64>, ConnectionStoreError> {
        Err(down())
    }
}

/// A connect session store that is down.
#[derive(Debug)]
struct DownSessions;

#[async_trait]
impl ConnectSessionStore for DownSessions {
    async fn put(&self, _: &str, _: &ConnectSession) -> Result<(), ConnectionStoreError> {
        Err(down())
    }
    async fn take(&self, _: &str, _: &str, _: i64) -> Result<SessionTake, ConnectionStoreError> {
        Err(down())
    }
}

/// What the connections function serves from.
struct Api {
    vault: TokenVault,
    sessions: ConnectSessions,
    /// The outbound client the connection test and the proxy call the provider through.
    client: OutboundClient,
    /// The proxy's idempotency record and the actions queue.
    store: InMemoryProxyIdempotencyStore,
    queue: InMemoryEventQueue,
    statuses: Arc<dyn ActionStatusStore>,
}

impl Api {
    fn new(vault: TokenVault, sessions: ConnectSessions) -> Api {
        Api {
            client: outbound(&vault),
            vault,
            sessions,
            store: InMemoryProxyIdempotencyStore::default(),
            queue: InMemoryEventQueue::default(),
            statuses: Arc::new(InMemoryActionStatusStore::default()),
        }
    }
}

/// An action status table that cannot be reached.
#[derive(Debug)]
struct DownStatuses;

#[async_trait]
impl ActionStatusStore for DownStatuses {
    async fn record(&self, _: &ActionStatus) -> Result<(), StatusError> {
        Err(StatusError("unreachable".into()))
    }
    async fn get(&self, _: &str) -> Result<Option<ActionStatus>, StatusError> {
        Err(StatusError("unreachable".into()))
    }
}

/// The outbound client over `vault`, as `functions/connections` builds it (in-memory
/// shared state).
fn outbound(vault: &TokenVault) -> OutboundClient {
    OutboundClient::new(
        vault.catalog(),
        vault.clone(),
        Arc::new(InMemorySharedState::default()),
        Arc::new(junction_aws::clock::SystemClock),
    )
    .with_body_cap(PROXY_RESPONSE_CAP)
}

/// One request: the route (method and path template, as API Gateway's route key names
/// it), its path parameters, query and body.
struct Request<'a> {
    method: &'a str,
    route: &'a str,
    tenant: &'a str,
    id: Option<&'a str>,
    query: &'a [(&'a str, &'a str)],
    body: Vec<u8>,
    /// The `{action}` of `…/actions/{action}`.
    action: &'a str,
}

impl Api {
    /// The request as `functions/connections` handles it: dispatched on the route key.
    async fn call(&self, request: &Request<'_>) -> HttpReply {
        let key = format!("{} {}", request.method, request.route);
        match ManagementRoute::from_route_key(&key) {
            Some(ManagementRoute::ConnectSessions) => {
                web::connect_sessions_route(
                    &self.sessions,
                    request.tenant,
                    request.method,
                    &request.body,
                    BASE,
                )
                .await
            }
            Some(ManagementRoute::Connections | ManagementRoute::Connection) => {
                let query = request
                    .query
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect();
                web::connections_route(
                    &self.vault,
                    request.tenant,
                    request.method,
                    request.id,
                    &query,
                )
                .await
            }
            Some(ManagementRoute::ConnectionTest) => {
                connection_test::connection_test_route(
                    &self.client,
                    &self.vault,
                    request.tenant,
                    request.method,
                    request.id.unwrap_or_default(),
                    std::time::Instant::now() + std::time::Duration::from_secs(12),
                )
                .await
            }
            Some(ManagementRoute::ConnectionProxy) => {
                let reply = proxy::proxy_route(
                    Proxy {
                        client: &self.client,
                        vault: &self.vault,
                        store: &self.store,
                        clock: &junction_aws::clock::SystemClock,
                    },
                    request.tenant,
                    request.method,
                    request.id.unwrap_or_default(),
                    &request.body,
                    std::time::Instant::now() + std::time::Duration::from_secs(25),
                )
                .await;
                HttpReply {
                    status: reply.status,
                    headers: reply.headers,
                    body: String::from_utf8(reply.body).expect("a UTF-8 body here"),
                }
            }
            Some(ManagementRoute::ConnectionActions) => {
                actions::actions_route(
                    actions::ActionPorts {
                        vault: &self.vault,
                        queue: &self.queue,
                        statuses: self.statuses.as_ref(),
                        clock: &junction_aws::clock::SystemClock,
                    },
                    request.tenant,
                    request.method,
                    request.id.unwrap_or_default(),
                    &request.body,
                )
                .await
            }
            Some(ManagementRoute::ConnectionAction) => {
                actions::action_status_route(
                    self.statuses.as_ref(),
                    request.tenant,
                    request.method,
                    request.id.unwrap_or_default(),
                    request.action,
                )
                .await
            }
            None => panic!("{key}: not a route of the connections function"),
        }
    }
}

/// The document's schema for `status` of the operation, as a URI into the document, and
/// its media type. Responses may be `$ref`s to `components/responses`; their schema must
/// be a `$ref` to `components/schemas`, so each shape is named once.
fn response_schema(
    openapi: &Value,
    method: &str,
    route: &str,
    status: u16,
) -> Result<(String, String), String> {
    let operation = &openapi["paths"][route][method.to_lowercase()];
    let mut response = &operation["responses"][status.to_string()];
    if let Some(reference) = response["$ref"].as_str() {
        response = reference
            .strip_prefix('#')
            .and_then(|pointer| openapi.pointer(pointer))
            .ok_or(format!("{reference} does not resolve"))?;
    }
    let content = response["content"].as_object().ok_or(format!(
        "{method} {route} documents no {status} with a body"
    ))?;
    let [(media_type, media)] = content.iter().collect::<Vec<_>>()[..] else {
        return Err(format!("{method} {route} {status}: one media type"));
    };
    let schema = media["schema"]["$ref"]
        .as_str()
        .filter(|r| r.starts_with("#/components/schemas/"))
        .ok_or(format!(
            "{method} {route} {status}: the schema is a $ref to #/components/schemas/"
        ))?;
    Ok((
        format!("{}{schema}", file_uri(&repo().join(OPENAPI))),
        media_type.clone(),
    ))
}

/// The request body schema of an operation, as a URI into the document.
fn request_schema(openapi: &Value, method: &str, route: &str) -> String {
    let reference = openapi["paths"][route][method.to_lowercase()]["requestBody"]["content"]
        ["application/json"]["schema"]["$ref"]
        .as_str()
        .unwrap_or_else(|| panic!("{method} {route}: a JSON request body schema"));
    format!("{}{reference}", file_uri(&repo().join(OPENAPI)))
}

const SESSIONS: &str = "/v1/tenants/{tenant}/connect-sessions";
const LIST: &str = "/v1/tenants/{tenant}/connections";
const ONE: &str = "/v1/tenants/{tenant}/connections/{id}";
const TEST: &str = "/v1/tenants/{tenant}/connections/{id}/test";
const PROXY: &str = "/v1/tenants/{tenant}/connections/{id}/proxy";
const ACTIONS: &str = "/v1/tenants/{tenant}/connections/{id}/actions";
const ACTION: &str = "/v1/tenants/{tenant}/connections/{id}/actions/{action}";

/// A provider API with a connection test (`GET /me` on the fake provider's API).
const TESTABLE_API: &str = r#"
[api]
base_url = "{provider_api}"
rate_limit = { requests_per_second = 100.0, burst = 20, scope = "connection" }
test_request = { method = "GET", path = "/me" }
"#;

#[tokio::test]
async fn every_response_matches_the_documented_schema_for_its_status() {
    let schemas = Schemas::api();
    let openapi = &schemas.openapi;

    // GIVEN tenant-1 with a connection made through the connect flow, and one whose
    // provider has no OAuth section any more (it cannot be revoked), in need of a
    // reconnect, with every optional field set.
    let h = harness(fake_provider::AuthServerConfig::default()).await;
    let connected = h.connect().await;
    let second = h.connect().await;
    let mut stranded = sample_connection("conn_stranded", "tenant-1", 1_790_000_000);
    stranded.state = ConnectionState::NeedsReauth;
    stranded.account_id = Some("acct-42".into());
    stranded.end_user = Some(EndUser {
        id: "user-42".into(),
        display_name: Some("Ada Lovelace".into()),
    });
    stranded.params.insert("shop".into(), "acme".into());
    stranded.last_successful_sync = Some(1_790_000_100);
    stranded.last_error = Some("needs_reauth: invalid_grant".into());
    stranded.last_error_at = Some(1_790_000_200);
    stranded.last_verified_at = Some(1_790_000_050);
    stranded.stated_lifetime = None;
    stranded.refresh_at = None;
    h.connections.insert(&stranded).await.expect("inserted");
    // AND another such connection, for a forced delete.
    h.connections
        .insert(&sample_connection(
            "conn_abandoned",
            "tenant-1",
            1_790_000_000,
        ))
        .await
        .expect("inserted");

    let api = Api::new(
        h.vault.clone(),
        ConnectSessions::new(h.vault.clone(), h.sessions.clone(), flow_settings()),
    );
    // AND a provider with a connection test, its connection, and one in need of a
    // reconnect; the provider refuses the first test call for good (a 400).
    let testable = harness_with(fake_provider::AuthServerConfig::default(), TESTABLE_API).await;
    testable.server.serve_provider_api(|_| {
        fake_provider::ScriptedResponse::json(&json!({ "id": "test-user" }))
    });
    // Then a proxied call's answer over the proxy's cap.
    testable.server.script_api([
        fake_provider::ScriptedResponse {
            status: 400,
            body: r#"{"message":"nope"}"#.into(),
            ..fake_provider::ScriptedResponse::default()
        },
        fake_provider::ScriptedResponse {
            status: 200,
            body: "x".repeat(PROXY_RESPONSE_CAP + 1),
            ..fake_provider::ScriptedResponse::default()
        },
    ]);
    let tested = testable.connect().await;
    let mut lapsed = sample_connection("conn_lapsed", "tenant-1", 1_790_000_000);
    lapsed.provider = "fakeauth".into();
    lapsed.state = ConnectionState::NeedsReauth;
    lapsed.last_error = Some("needs_reauth: invalid_grant".into());
    testable
        .connections
        .insert(&lapsed)
        .await
        .expect("inserted");
    let testable_api = Api::new(
        testable.vault.clone(),
        ConnectSessions::new(
            testable.vault.clone(),
            testable.sessions.clone(),
            flow_settings(),
        ),
    );
    // AND the same API with its tables unreachable.
    let down_vault = TokenVault::new(
        fake_catalog(&h.server, ""),
        Arc::new(DownConnections),
        Arc::new(InMemoryKeyService::default()),
        Arc::new(SecretCredentials::new(
            InMemorySecretSource::default(),
            "junction",
        )),
        ProviderClient::new(),
        Arc::new(InMemoryEventBus::default()),
        Arc::new(FixedClock::at_unix(1_800_000_000)),
        VaultSettings::default(),
    );
    let mut down_api = Api::new(
        down_vault,
        ConnectSessions::new(h.vault.clone(), Arc::new(DownSessions), flow_settings()),
    );
    down_api.statuses = Arc::new(DownStatuses);

    let session = |body: Value| body.to_string().into_bytes();
    let post = |tenant, body| Request {
        method: "POST",
        route: SESSIONS,
        tenant,
        id: None,
        query: &[],
        body,
        action: "",
    };
    let list = |tenant| Request {
        method: "GET",
        route: LIST,
        tenant,
        id: None,
        query: &[],
        body: Vec::new(),
        action: "",
    };
    let show = |tenant, id| Request {
        method: "GET",
        route: ONE,
        tenant,
        id: Some(id),
        query: &[],
        body: Vec::new(),
        action: "",
    };
    let delete = |tenant, id, query| Request {
        method: "DELETE",
        route: ONE,
        tenant,
        id: Some(id),
        query,
        body: Vec::new(),
        action: "",
    };
    let test = |tenant, id| Request {
        method: "POST",
        route: TEST,
        tenant,
        id: Some(id),
        query: &[],
        body: Vec::new(),
        action: "",
    };
    let send = |route, tenant, id, body: &Value| Request {
        method: "POST",
        route,
        tenant,
        id: Some(id),
        query: &[],
        body: body.to_string().into_bytes(),
        action: "",
    };
    let too_large = |route, id| Request {
        method: "POST",
        route,
        tenant: "tenant-1",
        id: Some(id),
        query: &[],
        body: vec![b' '; 5 * 1024 * 1024 + 1],
        action: "",
    };
    let get_me =
        json!({ "method": "GET", "path": "/me", "headers": { "accept": "application/json" } });
    let write = json!({
        "method": "POST",
        "path": "/tasks",
        "query": { "expand": ["owner", "tags"] },
        "body": { "title": "Ship" },
        "idempotency_key": "order-42",
    });
    let traversal = json!({ "method": "GET", "path": "/a/%2e%2e/admin" });
    let paginated = json!({ "method": "GET", "path": "/me", "paginate": { "max_pages": 3 } });
    // The queued write's id: its key names it.
    let queued = actions::keyed_action_id(&tested, "order-42");
    let status = |tenant, action| Request {
        method: "GET",
        route: ACTION,
        tenant,
        id: Some(tested.as_str()),
        query: &[],
        body: Vec::new(),
        action,
    };
    let minimal = json!({ "provider": "fakeauth", "return_to": RETURN_TO });
    let reconnect = json!({
        "tenant": "tenant-1",
        "provider": "fakeauth",
        "connection": connected,
        "return_to": RETURN_TO,
        "end_user": { "id": "user-7", "display_name": "Grace Hopper" },
        "allow_account_change": true,
        "ttl_seconds": 1800,
    });
    // WHEN each request is made, THEN it gets the status it says.
    let cases: Vec<(&str, &Api, Request, u16)> = vec![
        (
            "a new connection",
            &api,
            post("tenant-1", session(minimal.clone())),
            201,
        ),
        (
            "a reconnect, every field",
            &api,
            post("tenant-1", session(reconnect.clone())),
            201,
        ),
        (
            "not JSON",
            &api,
            post("tenant-1", b"provider=fakeauth".to_vec()),
            400,
        ),
        (
            "an unknown field",
            &api,
            post(
                "tenant-1",
                session(json!({ "provider": "fakeauth", "scope": "admin" })),
            ),
            400,
        ),
        (
            "another origin",
            &api,
            post(
                "tenant-1",
                session(
                    json!({ "provider": "fakeauth", "return_to": "https://evil.example.net/" }),
                ),
            ),
            400,
        ),
        (
            "another tenant in the body",
            &api,
            post(
                "tenant-1",
                session(json!({ "tenant": "tenant-2", "provider": "fakeauth" })),
            ),
            400,
        ),
        (
            "a path tenant no session could have",
            &api,
            post("..", session(minimal.clone())),
            400,
        ),
        (
            "an unknown provider",
            &api,
            post(
                "tenant-1",
                session(json!({ "provider": "nope", "return_to": RETURN_TO })),
            ),
            404,
        ),
        (
            "a body over 16 KiB",
            &api,
            post("tenant-1", vec![b' '; 16 * 1024 + 1]),
            413,
        ),
        (
            "the session table down",
            &down_api,
            post("tenant-1", session(minimal.clone())),
            503,
        ),
        ("the tenant's connections", &api, list("tenant-1"), 200),
        ("a tenant without connections", &api, list("tenant-2"), 200),
        ("a bad tenant", &api, list("a b"), 400),
        (
            "the connections table down",
            &down_api,
            list("tenant-1"),
            503,
        ),
        ("a connection", &api, show("tenant-1", &connected), 200),
        (
            "every optional field",
            &api,
            show("tenant-1", "conn_stranded"),
            200,
        ),
        (
            "another tenant's connection",
            &api,
            show("tenant-2", &connected),
            404,
        ),
        (
            "no such connection",
            &api,
            show("tenant-1", "conn_missing"),
            404,
        ),
        ("a bad tenant", &api, show("", &connected), 400),
        (
            "the connections table down",
            &down_api,
            show("tenant-1", &connected),
            503,
        ),
        (
            "cannot be revoked",
            &api,
            delete("tenant-1", "conn_stranded", &[]),
            502,
        ),
        (
            "forced",
            &api,
            delete("tenant-1", &second, &[("force", "true")]),
            200,
        ),
        (
            "forced, though its provider lost its OAuth section",
            &api,
            delete("tenant-1", "conn_abandoned", &[("force", "true")]),
            200,
        ),
        ("revoked", &api, delete("tenant-1", &connected, &[]), 200),
        (
            "already deleted",
            &api,
            delete("tenant-1", &connected, &[]),
            404,
        ),
        ("a bad tenant", &api, delete("a/b", &connected, &[]), 400),
        (
            "the provider refuses the test call",
            &testable_api,
            test("tenant-1", &tested),
            502,
        ),
        (
            "an answer over the cap",
            &testable_api,
            send(PROXY, "tenant-1", &tested, &get_me),
            502,
        ),
        (
            "a working connection",
            &testable_api,
            test("tenant-1", &tested),
            200,
        ),
        (
            "the provider's answer",
            &testable_api,
            send(PROXY, "tenant-1", &tested, &get_me),
            200,
        ),
        (
            "an encoded traversal",
            &testable_api,
            send(PROXY, "tenant-1", &tested, &traversal),
            400,
        ),
        (
            "another tenant's connection",
            &testable_api,
            send(PROXY, "tenant-2", &tested, &get_me),
            404,
        ),
        (
            "a connection that needs a reconnect",
            &testable_api,
            send(PROXY, "tenant-1", "conn_lapsed", &get_me),
            409,
        ),
        ("over 5 MiB", &testable_api, too_large(PROXY, &tested), 413),
        (
            "a provider without an API base",
            &api,
            send(PROXY, "tenant-1", "conn_stranded", &get_me),
            422,
        ),
        (
            "paginate for a provider without [pagination]",
            &testable_api,
            send(PROXY, "tenant-1", &tested, &paginated),
            422,
        ),
        (
            "the connections table down",
            &down_api,
            send(PROXY, "tenant-1", &tested, &get_me),
            503,
        ),
        (
            "a queued write",
            &testable_api,
            send(ACTIONS, "tenant-1", &tested, &write),
            202,
        ),
        (
            "an encoded traversal",
            &testable_api,
            send(ACTIONS, "tenant-1", &tested, &traversal),
            400,
        ),
        (
            "another tenant's connection",
            &testable_api,
            send(ACTIONS, "tenant-2", &tested, &write),
            404,
        ),
        (
            "over 5 MiB",
            &testable_api,
            too_large(ACTIONS, &tested),
            413,
        ),
        (
            "a provider without an API base",
            &api,
            send(ACTIONS, "tenant-1", "conn_stranded", &write),
            422,
        ),
        (
            "the connections table down",
            &down_api,
            send(ACTIONS, "tenant-1", &tested, &write),
            503,
        ),
        (
            "a queued action",
            &testable_api,
            status("tenant-1", &queued),
            200,
        ),
        (
            "another tenant's action",
            &testable_api,
            status("tenant-2", &queued),
            404,
        ),
        ("a bad tenant", &testable_api, status("a b", &queued), 400),
        (
            "the status table down",
            &down_api,
            status("tenant-1", &queued),
            503,
        ),
        (
            "a connection that needs a reconnect",
            &testable_api,
            test("tenant-1", "conn_lapsed"),
            409,
        ),
        (
            "a provider without a test request",
            &api,
            test("tenant-1", "conn_stranded"),
            422,
        ),
        (
            "another tenant's connection",
            &testable_api,
            test("tenant-2", &tested),
            404,
        ),
        ("a bad tenant", &testable_api, test("a b", &tested), 400),
        (
            "the connections table down",
            &down_api,
            test("tenant-1", &tested),
            503,
        ),
        (
            "the connections table down",
            &down_api,
            delete("tenant-1", &connected, &[]),
            503,
        ),
    ];

    let mut answered: BTreeSet<(String, String, u16)> = BTreeSet::new();
    let mut failures = Vec::new();
    for (what, api, request, expected) in &cases {
        let reply = api.call(request).await;
        let label = format!("{} {} ({what})", request.method, request.route);
        if reply.status != *expected {
            failures.push(format!(
                "{label}: {} not {expected}: {}",
                reply.status, reply.body
            ));
            continue;
        }
        answered.insert((
            request.method.to_owned(),
            request.route.to_owned(),
            reply.status,
        ));
        let (schema, media_type) =
            match response_schema(openapi, request.method, request.route, reply.status) {
                Ok(found) => found,
                Err(err) => {
                    failures.push(format!("{label}: {err}"));
                    continue;
                }
            };
        let content_type = reply
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            .map(|(_, value)| value.as_str());
        if content_type != Some(media_type.as_str()) {
            failures.push(format!(
                "{label}: content-type {content_type:?}, documented {media_type}"
            ));
        }
        let body: Value = match serde_json::from_str(&reply.body) {
            Ok(body) => body,
            Err(err) => {
                failures.push(format!("{label}: not JSON ({err}): {}", reply.body));
                continue;
            }
        };
        if let Err(errors) = check(&schemas.validator(&schema), &body) {
            failures.push(format!(
                "{label}: {} {schema}:\n{errors}\n{body:#}",
                reply.status
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // The requests the API took are ones the document describes.
    let request_body = schemas.validator(&request_schema(openapi, "POST", SESSIONS));
    for body in [&minimal, &reconnect] {
        check(&request_body, body).unwrap_or_else(|errors| panic!("{body}:\n{errors}"));
    }
    assert!(
        check(
            &request_body,
            &json!({ "provider": "fakeauth", "scope": "admin" })
        )
        .is_err(),
        "the document refuses the unknown field the API refuses"
    );
    let proxy_body = schemas.validator(&request_schema(openapi, "POST", PROXY));
    for body in [&get_me, &write, &traversal, &paginated] {
        check(&proxy_body, body).unwrap_or_else(|errors| panic!("{body}:\n{errors}"));
    }
    assert!(
        check(
            &proxy_body,
            &json!({ "method": "GET", "path": "/me", "url": "x" })
        )
        .is_err(),
        "the document refuses the unknown field the API refuses"
    );

    // Every documented status was answered above, but those Junction never sends.
    let only_api_gateway = BTreeSet::from([403]);
    let mut unanswered = Vec::new();
    for ((method, route), operation) in operations(openapi) {
        for status in operation["responses"]
            .as_object()
            .expect("responses")
            .keys()
        {
            let status: u16 = status.parse().expect("a status code");
            if !only_api_gateway.contains(&status)
                && !answered.contains(&(method.clone(), route.clone(), status))
            {
                unanswered.push(format!("{method} {route} {status}"));
            }
        }
    }
    assert!(
        unanswered.is_empty(),
        "documented statuses no request here produced (produce each, or stop documenting \
         it): {unanswered:?}"
    );
}
