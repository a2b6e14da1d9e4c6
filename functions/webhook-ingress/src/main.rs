//! webhook-ingress: `POST /webhooks/{provider}[/{endpoint}]` (and `GET` for the
//! providers whose handshake is a `GET`) behind API Gateway (HTTP API, payload format
//! 2.0). Verifies, answers handshakes, enqueues; the logic is
//! `junction_webhooks::Ingress`, this binary only wires it to Lambda.

mod event;

use std::{convert::Infallible, sync::Arc, time::Instant};

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use junction_aws::clock::{Clock, SystemClock};
use junction_aws::config::{load_aws_config, load_catalog, process_env};
use junction_aws::payloads::S3PayloadStore;
use junction_aws::queue::SqsEventQueue;
use junction_aws::secrets::{SecretsManagerSource, WebhookSecrets};
use junction_telemetry as telemetry;
use junction_telemetry::redact::Redactor;
use junction_webhooks::jwt::{HttpKeySetSource, KeySetCache};
use junction_webhooks::settings::WebhookIngressSettings;
use junction_webhooks::{Ingress, WebhookResult};
use lambda_runtime::{LambdaEvent, service_fn};

// One invocation at a time: a single-threaded runtime spares the worker threads, their
// wake-ups and their stacks (measured in infra/bench).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let settings = WebhookIngressSettings::from_env(&process_env())?;
    // `AWS_ENDPOINT_URL` (set by the local stack) points every client at the emulator.
    let aws = load_aws_config().await;
    let catalog = load_catalog(&aws, &process_env()).await?;
    // One Secrets Manager adapter reads signing secrets and lets Asana's and Notion's
    // handshakes install theirs (only where none is configured).
    let secrets_manager = Arc::new(SecretsManagerSource::from_config(&aws));
    let webhook_secrets = WebhookSecrets::new(
        secrets_manager.clone(),
        settings.secret_prefix,
        settings.secret_cache,
    );
    let queue = SqsEventQueue::from_config(&aws, settings.queue_url)?;
    // At init, so that no delivery waits for them: every signing secret in one call,
    // and the connection to SQS opened. Either failing only leaves it to the first
    // delivery that needs it.
    let (prefetched, warmed) =
        tokio::join!(webhook_secrets.prefetch(SystemClock.now()), queue.warm_up());
    if let Err(err) = prefetched {
        tracing::warn!(error = %err, "webhook secrets not prefetched; read on first use");
    }
    if let Err(err) = warmed {
        tracing::warn!(error = %err, "SQS connection not opened at init");
    }
    let ingress = Ingress::new(
        catalog,
        webhook_secrets,
        Arc::new(queue),
        Arc::new(S3PayloadStore::from_config(&aws, settings.payload_bucket)),
        Arc::new(SystemClock),
        settings.ingress,
    )
    .with_handshake_store(secrets_manager)
    .with_key_sets(Arc::new(KeySetCache::new(
        Arc::new(HttpKeySetSource::new()),
    )));
    let ingress = &ingress;
    let payload_log = &settings
        .payload_log
        .map(|redactor| redactor.with_fields(junction_webhooks::log::signature_fields(catalog)));
    lambda_runtime::run(service_fn(
        move |invocation: LambdaEvent<ApiGatewayV2httpRequest>| async move {
            Ok::<_, Infallible>(handle(invocation.payload, ingress, payload_log.as_ref()).await)
        },
    ))
    .await
}

/// One webhook: the event read, the ingress's answer, its outcome recorded (and the
/// redacted payload, when the operator turned payload logging on).
async fn handle(
    event: ApiGatewayV2httpRequest,
    ingress: &Ingress,
    payload_log: Option<&Redactor>,
) -> ApiGatewayV2httpResponse {
    let started = Instant::now();
    let request = match event::webhook_request(event) {
        Ok(request) => request,
        Err(err) => {
            tracing::warn!(error = %err, "request refused before verification");
            return event::text_response(400, "malformed request body");
        }
    };
    // Only when payload logging is on: a copy of the body is kept, and parsed and
    // redacted only once the delivery verified and was accepted.
    let copy = payload_log.map(|_| {
        let content_type = request
            .headers
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        (content_type, request.body.clone())
    });
    let (response, outcome) = ingress.handle(request).await;
    junction_webhooks::log::record_webhook(&outcome, started.elapsed());
    if let (Some(redactor), Some((content_type, body))) = (payload_log, copy)
        && outcome.result == WebhookResult::Accepted
    {
        let payload = redactor.payload(content_type.as_deref(), &body);
        junction_webhooks::log::record_payload(&outcome, &payload);
    }
    event::http_response(response)
}

#[cfg(test)]
mod tests {
    use aws_lambda_events::{
        encodings::Body,
        http::{HeaderMap, HeaderValue},
    };
    use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
    use junction_aws::clock::FixedClock;
    use junction_aws::payloads::InMemoryPayloadStore;
    use junction_aws::queue::InMemoryEventQueue;
    use junction_aws::secrets::{CachePolicy, InMemorySecretSource};
    use junction_catalog::Catalog;
    use junction_webhooks::{IngressConfig, SigningSecret, sign_into};

    use super::*;

    const SECRET: &str = "ingress-main-test-secret";

    fn ingress(queue: Arc<InMemoryEventQueue>, clock: Arc<FixedClock>) -> Ingress {
        let secrets = Arc::new(InMemorySecretSource::default());
        secrets.put(
            "junction/webhooks/github",
            format!(r#"{{"signing_secrets":["{SECRET}"]}}"#),
        );
        Ingress::new(
            Catalog::embedded().expect("catalog"),
            WebhookSecrets::new(secrets, "junction", CachePolicy::default()),
            queue,
            Arc::new(InMemoryPayloadStore::default()),
            clock,
            IngressConfig::default(),
        )
    }

    /// A GitHub delivery as API Gateway hands it over: headers as one object, the body
    /// in base64 (as for any binary media type).
    fn event(headers: serde_json::Value, body_base64: &str) -> ApiGatewayV2httpRequest {
        serde_json::from_value(serde_json::json!({
            "version": "2.0",
            "rawPath": "/webhooks/github",
            "rawQueryString": "",
            "headers": headers,
            "requestContext": {"http": {"method": "POST", "path": "/webhooks/github"}},
            "pathParameters": {"provider": "github"},
            "body": body_base64,
            "isBase64Encoded": true,
        }))
        .expect("event")
    }

    fn text(response: &ApiGatewayV2httpResponse) -> &str {
        match &response.body {
            Some(Body::Text(text)) => text,
            other => panic!("a text body, not {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_signed_delivery_in_the_http_api_event_is_enqueued_byte_for_byte() {
        let queue = Arc::new(InMemoryEventQueue::default());
        let clock = Arc::new(FixedClock::at_unix(1_700_000_000));
        let ingress = ingress(queue.clone(), clock.clone());
        let body = br#"{"zen":"Design for failure.","hook_id":1}"#;
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("hooks.example.com"));
        headers.insert("x-github-delivery", HeaderValue::from_static("d-42"));
        let spec = Catalog::embedded()
            .expect("catalog")
            .get("github")
            .and_then(|provider| provider.verification())
            .expect("github verifies");
        sign_into(
            spec,
            &SigningSecret::new(SECRET),
            "POST",
            "https://hooks.example.com/webhooks/github",
            &mut headers,
            body,
            clock.now(),
        )
        .expect("signed");
        let headers: serde_json::Map<String, serde_json::Value> = headers
            .iter()
            .map(|(name, value)| {
                let value = value.to_str().expect("ASCII header");
                (name.as_str().to_owned(), value.into())
            })
            .collect();
        let response = handle(event(headers.into(), &BASE64.encode(body)), &ingress, None).await;
        assert_eq!(response.status_code, 200, "{}", text(&response));
        let messages = queue.messages();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].body.as_bytes(), body);
    }

    #[tokio::test]
    async fn a_body_that_does_not_decode_is_answered_400_and_nothing_is_enqueued() {
        let queue = Arc::new(InMemoryEventQueue::default());
        let ingress = ingress(queue.clone(), Arc::new(FixedClock::at_unix(1_700_000_000)));
        let response = handle(
            event(
                serde_json::json!({"x-github-delivery": "d-43"}),
                "not base64!",
            ),
            &ingress,
            None,
        )
        .await;
        assert_eq!(response.status_code, 400);
        assert_eq!(text(&response), "malformed request body");
        assert_eq!(
            response
                .headers
                .get("content-type")
                .and_then(|value| value.to_str().ok()),
            Some("text/plain; charset=utf-8")
        );
        assert!(queue.messages().is_empty());
    }
}
