//! oauth: `GET /oauth/{provider}/start?session=…` and `GET /oauth/{provider}/callback`
//! (and, for a provider connected with a pasted credential, the form's
//! `POST /oauth/{provider}/callback`) behind API Gateway (HTTP API, payload format 2.0), without IAM by design (the user's
//! browser calls them): `start` needs a connect session the product's backend minted
//! through the IAM-authorized management API. The logic is `junction_oauth`; this binary
//! wires it to Lambda.

use std::sync::Arc;

use junction_aws::config::{load_aws_config, load_catalog, process_env};
use junction_oauth::settings::{ConnectFlowSettings, OAuthSettings};
use junction_oauth::{
    ConnectFlow, DynamoConnectSessionStore, DynamoConnectionStore, DynamoStateStore, FlowSettings,
    aws_vault, pasted, web,
};
use junction_polling::{DynamoSyncJobStore, SyncJobSetup};
use junction_subscriptions::{
    ConnectionSetups, DynamoSubscriptionStore, SubscriptionScheduler, SubscriptionSettings,
};
use junction_telemetry as telemetry;
use lambda_http::{Body, Request, RequestExt, Response, request::RequestContext, service_fn};

// One invocation at a time: a single-threaded runtime spares the worker threads, their
// wake-ups and their stacks (measured in infra/bench).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let env = process_env();
    let settings = OAuthSettings::from_env(&env)?;
    let flow_settings = ConnectFlowSettings::from_env(&env)?;
    let aws = load_aws_config().await;
    let catalog = load_catalog(&aws, &env).await?;
    let flow = ConnectFlow::new(
        aws_vault(&aws, catalog, &settings),
        Arc::new(DynamoStateStore::from_config(
            &aws,
            flow_settings.state_table,
        )),
        Arc::new(DynamoConnectSessionStore::from_config(
            &aws,
            flow_settings.sessions_table,
        )),
        FlowSettings {
            return_to_origins: flow_settings.return_to_origins,
            default_return_to: flow_settings.default_return_to,
        },
    )
    // The sync jobs record their connection's tenant (read from the connection the
    // flow has just stored), so `connection.stale` names it. The push subscription is
    // scheduled, not created: this function never opens a token, so the
    // subscription-manager function creates it on `connection.subscription_pending`
    // (the refresher's run a minute later, if that event is lost).
    .with_setup(Arc::new(ConnectionSetups(vec![
        Arc::new(
            SyncJobSetup::new(
                Arc::new(DynamoSyncJobStore::from_config(
                    &aws,
                    flow_settings.sync_jobs_table,
                )),
                catalog,
            )
            .with_connections(Arc::new(DynamoConnectionStore::from_config(
                &aws,
                settings.connections_table.clone(),
            ))),
        ) as Arc<dyn junction_oauth::ConnectionSetup>,
        Arc::new({
            let subscription_settings = SubscriptionSettings::from_env(&env, catalog)?;
            SubscriptionScheduler {
                catalog,
                store: Arc::new(DynamoSubscriptionStore::from_config(
                    &aws,
                    subscription_settings.table.clone(),
                )),
                connections: Arc::new(DynamoConnectionStore::from_config(
                    &aws,
                    settings.connections_table.clone(),
                )),
                bus: Arc::new(junction_aws::events::EventBridgeBus::from_config(
                    &aws,
                    settings.event_bus.clone(),
                )),
                settings: subscription_settings,
            }
        }),
    ])));
    let (flow, public_base_url) = (&flow, settings.public_base_url.as_deref());
    lambda_http::run(service_fn(move |request: Request| async move {
        let provider = request
            .path_parameters()
            .first("provider")
            .unwrap_or_default()
            .to_owned();
        let step = request
            .raw_http_path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        // Redirect URIs must match what the provider has registered: the configured
        // public base URL, else the domain API Gateway received the request on.
        let base_url = match (public_base_url, request.request_context_ref()) {
            (Some(base), _) => base.to_owned(),
            (None, Some(RequestContext::ApiGatewayV2(context))) => {
                format!(
                    "https://{}",
                    context.domain_name.clone().unwrap_or_default()
                )
            }
            (None, _) => String::new(),
        };
        let query = web::parse_query(request.uri().query());
        let cookies = request
            .headers()
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join("; ");
        let cookies = Some(cookies.as_str()).filter(|c| !c.is_empty());
        let method = request.method().as_str();
        let reply = if flow.connects_with_pasted_credential(&provider) {
            // The form (`GET …/start`) and its submission (`POST …/callback`, the body
            // capped there); the body is read for nothing else.
            pasted::pasted_route(
                flow,
                &provider,
                &step,
                method,
                query,
                cookies,
                request.body().as_ref(),
                &base_url,
            )
            .await
        } else if method == "GET" {
            web::oauth_route(flow, &provider, &step, query, cookies, &base_url).await
        } else {
            web::HttpReply {
                status: 405,
                headers: vec![("allow".into(), "GET".into())],
                body: String::new(),
            }
        };
        Ok::<Response<Body>, std::convert::Infallible>(reply.into_http().map(Body::from))
    }))
    .await
}
