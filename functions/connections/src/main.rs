//! connections: the management API under `/v1/tenants/{tenant}/` (`POST
//! …/connect-sessions`, `GET …/connections`, `GET` and `DELETE …/connections/{id}`,
//! `POST …/connections/{id}/test`, `…/proxy` and `…/actions`, `GET
//! …/actions/{action}`),
//! behind IAM authorization in the template: no unauthenticated caller reaches it, so
//! only the product's backend can mint the connect sessions `start` requires, and a
//! policy on the path can limit a backend to one tenant. The logic is
//! `junction_oauth::web`, and for the routes that call a provider through the outbound
//! client `junction_outbound` (`connection_test`, `proxy`, `actions`).

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use junction_aws::clock::SystemClock;
use junction_aws::config::{load_aws_config, load_catalog, process_env};
use junction_aws::queue::SqsEventQueue;
use junction_oauth::settings::{ConnectSessionSettings, OAuthSettings};
use junction_oauth::web::{self, HttpReply, ManagementRoute};
use junction_oauth::{ConnectSessions, DynamoConnectSessionStore, FlowSettings, aws_vault};
use junction_outbound::actions::DynamoActionStatusStore;
use junction_outbound::idempotency::DynamoProxyIdempotencyStore;
use junction_outbound::proxy::{PROXY_RESPONSE_CAP, Proxy};
use junction_outbound::{DynamoSharedState, OutboundClient, actions, connection_test, proxy};
use junction_subscriptions::{SubscriptionSettings, aws_manager};
use junction_telemetry as telemetry;
use lambda_http::{Body, Request, RequestExt, Response, request::RequestContext, service_fn};

/// How long a connection test may take: the template's `Timeout` (15 s) less a margin
/// to store its outcome and answer.
const TEST_BUDGET: Duration = Duration::from_secs(12);

/// How long a proxied request may take, retries included: the template's `Timeout`
/// (29 s, under API Gateway's 30 s) less a margin to record its outcome and answer.
const PROXY_BUDGET: Duration = Duration::from_secs(25);

// One invocation at a time: a single-threaded runtime spares the worker threads, their
// wake-ups and their stacks (measured in infra/bench).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let env = process_env();
    let settings = OAuthSettings::from_env(&env)?;
    let session_settings = ConnectSessionSettings::from_env(&env)?;
    let aws = load_aws_config().await;
    let catalog = load_catalog(&aws, &env).await?;
    let vault = aws_vault(&aws, catalog, &settings);
    // The connection test's provider call shares the rate-limit buckets and circuit
    // breakers of every other outbound call.
    let client = OutboundClient::new(
        catalog,
        vault.clone(),
        Arc::new(DynamoSharedState::from_config(
            &aws,
            env.required("OUTBOUND_STATE_TABLE")?,
        )),
        Arc::new(SystemClock),
    )
    .with_body_cap(PROXY_RESPONSE_CAP);
    // A disconnect deletes the connection's push subscription at the provider first,
    // while its tokens still exist.
    let subscriptions = aws_manager(
        &aws,
        vault.clone(),
        env.required("OUTBOUND_STATE_TABLE")?,
        None,
        settings.event_bus.clone(),
        SubscriptionSettings::from_env(&env, catalog)?,
    );
    let vault = vault.with_teardown(Arc::new(subscriptions));
    let idempotency =
        DynamoProxyIdempotencyStore::from_config(&aws, env.required("PROXY_IDEMPOTENCY_TABLE")?);
    let actions_queue = SqsEventQueue::from_config(&aws, env.required("ACTIONS_QUEUE_URL")?)?;
    let statuses = DynamoActionStatusStore::from_config(&aws, env.required("ACTION_STATUS_TABLE")?);
    let clock = SystemClock;
    let sessions = ConnectSessions::new(
        vault.clone(),
        Arc::new(DynamoConnectSessionStore::from_config(
            &aws,
            session_settings.sessions_table,
        )),
        FlowSettings {
            return_to_origins: session_settings.return_to_origins,
            default_return_to: session_settings.default_return_to,
        },
    );
    let (vault, sessions, client, public_base_url) = (
        &vault,
        &sessions,
        &client,
        settings.public_base_url.as_deref(),
    );
    let (idempotency, actions_queue, statuses, clock) =
        (&idempotency, &actions_queue, &statuses, &clock);
    lambda_http::run(service_fn(move |request: Request| async move {
        let id = request.path_parameters().first("id").map(str::to_owned);
        let tenant = request
            .path_parameters()
            .first("tenant")
            .unwrap_or_default()
            .to_owned();
        let (route, domain) = match request.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(context)) => (
                context
                    .route_key
                    .as_deref()
                    .and_then(ManagementRoute::from_route_key),
                context.domain_name.clone(),
            ),
            _ => (None, None),
        };
        let method = request.method().as_str();
        let reply = match route {
            Some(ManagementRoute::ConnectSessions) => {
                // The connect URL is on the API's public address: the configured base
                // URL, else the domain API Gateway received this request on.
                let base_url = match (public_base_url, domain) {
                    (Some(base), _) => base.to_owned(),
                    (None, Some(domain)) => format!("https://{domain}"),
                    (None, None) => String::new(),
                };
                web::connect_sessions_route(
                    sessions,
                    &tenant,
                    method,
                    request.body().as_ref(),
                    &base_url,
                )
                .await
            }
            Some(ManagementRoute::Connections | ManagementRoute::Connection) => {
                let query: BTreeMap<String, String> = web::parse_query(request.uri().query())
                    .into_iter()
                    .collect();
                web::connections_route(vault, &tenant, method, id.as_deref(), &query).await
            }
            Some(ManagementRoute::ConnectionTest) => {
                connection_test::connection_test_route(
                    client,
                    vault,
                    &tenant,
                    method,
                    id.as_deref().unwrap_or_default(),
                    Instant::now() + TEST_BUDGET,
                )
                .await
            }
            Some(ManagementRoute::ConnectionProxy) => {
                let reply = proxy::proxy_route(
                    Proxy {
                        client,
                        vault,
                        store: idempotency,
                        clock,
                    },
                    &tenant,
                    method,
                    id.as_deref().unwrap_or_default(),
                    request.body().as_ref(),
                    Instant::now() + PROXY_BUDGET,
                )
                .await;
                tracing::info!(
                    method,
                    path = request.raw_http_path(),
                    tenant = %tenant,
                    connection = id.as_deref().unwrap_or(""),
                    status = reply.status,
                    "management API request"
                );
                // The provider's bytes as they came (sent base64-encoded).
                return Ok(reply.into_http().map(Body::from));
            }
            Some(ManagementRoute::ConnectionActions) => {
                actions::actions_route(
                    actions::ActionPorts {
                        vault,
                        queue: actions_queue,
                        statuses,
                        clock,
                    },
                    &tenant,
                    method,
                    id.as_deref().unwrap_or_default(),
                    request.body().as_ref(),
                )
                .await
            }
            Some(ManagementRoute::ConnectionAction) => {
                let action = request
                    .path_parameters()
                    .first("action")
                    .unwrap_or_default()
                    .to_owned();
                actions::action_status_route(
                    statuses,
                    &tenant,
                    method,
                    id.as_deref().unwrap_or_default(),
                    &action,
                )
                .await
            }
            // Only the template's routes reach this function.
            None => HttpReply {
                status: 404,
                headers: vec![("content-type".into(), "application/json".into())],
                body: r#"{"error":"not_found","message":"no such route"}"#.into(),
            },
        };
        tracing::info!(
            method,
            path = request.raw_http_path(),
            tenant = %tenant,
            connection = id.as_deref().unwrap_or(""),
            status = reply.status,
            "management API request"
        );
        Ok::<Response<Body>, std::convert::Infallible>(reply.into_http().map(Body::from))
    }))
    .await
}
