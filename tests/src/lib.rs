//! Cross-function tests live in `tests/tests/integration/` (one test binary): each
//! starts its own AWS emulator on a free loopback port and stops it when it ends. Run them with the README's test
//! command (`infra/test`), which first installs the emulator into the project venv.

pub mod call_counter;

use local_stack::emulator::{Moto, repo_root};

/// A moto server of the test's own (stopped when dropped) and SDK configuration pointing
/// at it with Junction's call timeouts.
pub async fn emulator() -> (Moto, aws_config::SdkConfig) {
    let moto =
        Moto::start(&repo_root()).expect("the emulator starts (run infra/test to install it)");
    let aws = moto
        .sdk_config()
        .await
        .into_builder()
        .timeout_config(junction_aws::config::aws_timeouts())
        .build();
    (moto, aws)
}

/// Creates an on-demand DynamoDB table keyed by the string attribute `key`.
pub async fn create_table(aws: &aws_config::SdkConfig, name: &str, key: &str) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    aws_sdk_dynamodb::Client::new(aws)
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(key)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attribute"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(key)
                .key_type(KeyType::Hash)
                .build()
                .expect("key"),
        )
        .send()
        .await
        .expect("create table");
}

/// Connects an account of `tenant` at `provider` the way a user's browser does: a connect
/// session, `start`, the authorization server's redirect over HTTP (`http` must not
/// follow redirects), then the callback with the browser-binding cookie. The new
/// connection's id.
pub async fn connect_through(
    flow: &junction_oauth::ConnectFlow,
    sessions: &junction_oauth::ConnectSessions,
    http: &reqwest::Client,
    provider: &str,
    tenant: &str,
    return_to: &str,
    base: &str,
) -> String {
    use junction_oauth::{CallbackOutcome, CallbackQuery, ConnectSessionRequest, StartRequest};
    let minted = sessions
        .mint(
            &ConnectSessionRequest {
                tenant: tenant.into(),
                provider: provider.into(),
                return_to: Some(return_to.into()),
                ..ConnectSessionRequest::default()
            },
            base,
        )
        .await
        .expect("session");
    let start = flow
        .start(
            provider,
            &StartRequest {
                session: Some(minted.token.expose().to_owned()),
            },
            base,
        )
        .await
        .expect("start");
    let response = http.get(&start.location).send().await.expect("authorize");
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("redirect to the callback")
        .to_owned();
    let pairs = url::Url::parse(&location)
        .expect("url")
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let cookie = start
        .set_cookie
        .split(';')
        .next()
        .and_then(|p| p.split_once('='))
        .map(|(_, v)| v.to_owned());
    let query = CallbackQuery {
        pairs,
        binding_cookie: cookie,
    };
    match flow
        .callback(provider, &query, base)
        .await
        .expect("callback")
    {
        CallbackOutcome::Connected { connection_id, .. } => connection_id,
        other => panic!("{other:?}"),
    }
}

/// The events on an SQS queue subscribed to the bus (each EventBridge envelope's
/// `detail`, a CloudEvent as JSON), deleted as they are read, until `enough` says the
/// number read is enough or `wait` has passed. Tests count what arrived themselves.
pub async fn bus_events(
    aws: &aws_config::SdkConfig,
    url: &str,
    wait: std::time::Duration,
    enough: impl Fn(usize) -> bool,
) -> Vec<serde_json::Value> {
    let sqs = aws_sdk_sqs::Client::new(aws);
    let deadline = std::time::Instant::now() + wait;
    let mut events = Vec::new();
    while !enough(events.len()) && std::time::Instant::now() < deadline {
        let batch = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive")
            .messages
            .unwrap_or_default();
        for message in batch {
            let envelope: serde_json::Value =
                serde_json::from_str(message.body().unwrap_or_default())
                    .expect("an EventBridge envelope");
            events.push(envelope["detail"].clone());
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(message.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("delete");
        }
    }
    events
}

/// The emulator with `template.yaml` deployed as stack `stack_name`: the emulator (kept
/// alive by the caller), an SDK configuration for it with Junction's timeouts, and what
/// the stack created.
pub async fn deployed(
    stack_name: &'static str,
) -> (
    Moto,
    aws_config::SdkConfig,
    local_stack::emulator::StackDescription,
) {
    let moto =
        Moto::start(&repo_root()).expect("the emulator starts (run infra/test to install it)");
    let endpoint = moto.endpoint().to_owned();
    let stack = tokio::task::spawn_blocking(move || {
        local_stack::emulator::deploy(&repo_root(), &endpoint, stack_name, &[])
            .expect("the template deploys")
    })
    .await
    .expect("deploy");
    let aws = moto
        .sdk_config()
        .await
        .into_builder()
        .timeout_config(junction_aws::config::aws_timeouts())
        .build();
    (moto, aws, stack)
}
