//! connections: the management API (`GET /connections?tenant=…`, `GET /connections/{id}`,
//! `DELETE /connections/{id}`), behind IAM authorization in the template: no
//! unauthenticated caller reaches it. The logic is `shared::oauth::web`.

use std::collections::BTreeMap;

use lambda_http::{Body, Request, RequestExt, Response, service_fn};
use shared::{
    config::{OAuthSettings, load_aws_config, load_catalog, process_env},
    oauth::{aws_vault, web},
    telemetry,
};

// One invocation at a time: a single-threaded runtime spares the worker threads, their
// wake-ups and their stacks (measured in infra/bench).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let settings = OAuthSettings::from_env(&process_env())?;
    let aws = load_aws_config().await;
    let vault = aws_vault(&aws, load_catalog(&aws, &process_env()).await?, &settings);
    let vault = &vault;
    lambda_http::run(service_fn(move |request: Request| async move {
        let id = request.path_parameters().first("id").map(str::to_owned);
        let query: BTreeMap<String, String> = web::parse_query(request.uri().query())
            .into_iter()
            .collect();
        let reply =
            web::connections_route(vault, request.method().as_str(), id.as_deref(), &query).await;
        tracing::info!(
            method = request.method().as_str(),
            connection = id.as_deref().unwrap_or(""),
            status = reply.status,
            "management API request"
        );
        Ok::<Response<Body>, std::convert::Infallible>(reply.into_http().map(Body::from))
    }))
    .await
}
