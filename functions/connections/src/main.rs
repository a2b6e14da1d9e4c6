//! connections: the management API (`GET /connections?tenant=…`, `GET /connections/{id}`,
//! `DELETE /connections/{id}`, `POST /v1/connect-sessions`), behind IAM authorization in
//! the template: no unauthenticated caller reaches it, so only the product's backend
//! can mint the connect sessions `start` requires. The logic is `junction_oauth::web`.

use std::{collections::BTreeMap, sync::Arc};

use junction_aws::config::{load_aws_config, load_catalog, process_env};
use junction_oauth::settings::{ConnectSessionSettings, OAuthSettings};
use junction_oauth::{ConnectSessions, DynamoConnectSessionStore, FlowSettings, aws_vault, web};
use junction_telemetry as telemetry;
use lambda_http::{Body, Request, RequestExt, Response, request::RequestContext, service_fn};

// One invocation at a time: a single-threaded runtime spares the worker threads, their
// wake-ups and their stacks (measured in infra/bench).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let env = process_env();
    let settings = OAuthSettings::from_env(&env)?;
    let session_settings = ConnectSessionSettings::from_env(&env)?;
    let aws = load_aws_config().await;
    let vault = aws_vault(&aws, load_catalog(&aws, &env).await?, &settings);
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
    let (vault, sessions, public_base_url) =
        (&vault, &sessions, settings.public_base_url.as_deref());
    lambda_http::run(service_fn(move |request: Request| async move {
        let id = request.path_parameters().first("id").map(str::to_owned);
        let reply = if request.raw_http_path() == "/v1/connect-sessions" {
            // The connect URL is on the API's public address: the configured base URL,
            // else the domain API Gateway received this request on.
            let base_url = match (public_base_url, request.request_context_ref()) {
                (Some(base), _) => base.to_owned(),
                (None, Some(RequestContext::ApiGatewayV2(context))) => format!(
                    "https://{}",
                    context.domain_name.clone().unwrap_or_default()
                ),
                (None, _) => String::new(),
            };
            web::connect_sessions_route(
                sessions,
                request.method().as_str(),
                request.body().as_ref(),
                &base_url,
            )
            .await
        } else {
            let query: BTreeMap<String, String> = web::parse_query(request.uri().query())
                .into_iter()
                .collect();
            web::connections_route(vault, request.method().as_str(), id.as_deref(), &query).await
        };
        tracing::info!(
            method = request.method().as_str(),
            path = request.raw_http_path(),
            connection = id.as_deref().unwrap_or(""),
            status = reply.status,
            "management API request"
        );
        Ok::<Response<Body>, std::convert::Infallible>(reply.into_http().map(Body::from))
    }))
    .await
}
