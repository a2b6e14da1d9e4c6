//! A minimal AWS endpoint on loopback for the timing runs.
//!
//! The emulator (moto) takes milliseconds per call, which would swamp a Rust handler's
//! few hundred microseconds, so timing runs point every SDK at this stub instead. It
//! answers the calls the measured functions make (SQS, DynamoDB, KMS, EventBridge,
//! Secrets Manager) with well-formed success responses, counts every call per service
//! and operation (the "AWS calls per event" figures), and keeps the messages sent to
//! SQS so the consumer runs can replay what the ingress really enqueued. Correctness is
//! checked separately against the emulator (`correctness`).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    serve::ListenerExt,
};
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use md5::{Digest, Md5};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// One message an SDK sent with `SendMessage`.
#[derive(Debug, Clone)]
pub struct SentMessage {
    pub body: String,
    /// String message attributes.
    pub attributes: BTreeMap<String, String>,
}

/// Calls per `service:Operation`, e.g. `sqs:SendMessage`.
pub type CallCounts = BTreeMap<String, u64>;

#[derive(Debug, Default)]
struct StubState {
    calls: CallCounts,
    sent: Vec<SentMessage>,
    secrets: BTreeMap<String, String>,
}

/// The running stub; stopped when dropped.
#[derive(Debug)]
pub struct StubAws {
    address: SocketAddr,
    state: Arc<Mutex<StubState>>,
    server: JoinHandle<()>,
}

impl Drop for StubAws {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl StubAws {
    /// Starts the stub on a free loopback port, answering `GetSecretValue` for `secrets`
    /// (secret id → `SecretString`) and `ResourceNotFoundException` for any other id.
    pub async fn start(secrets: BTreeMap<String, String>) -> std::io::Result<StubAws> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        // Nagle plus delayed ACKs would add ~40 ms to small responses.
        let listener = listener.tap_io(|stream| {
            let _ = stream.set_nodelay(true);
        });
        let state = Arc::new(Mutex::new(StubState {
            secrets,
            ..StubState::default()
        }));
        let app = Router::new().fallback(answer).with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(StubAws {
            address,
            state,
            server,
        })
    }

    /// The endpoint to give the SDKs (`AWS_ENDPOINT_URL`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every call so far.
    pub fn calls(&self) -> CallCounts {
        lock(&self.state).calls.clone()
    }

    /// Takes the messages sent so far.
    pub fn take_sent(&self) -> Vec<SentMessage> {
        std::mem::take(&mut lock(&self.state).sent)
    }
}

fn lock(state: &Mutex<StubState>) -> std::sync::MutexGuard<'_, StubState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The difference `after - before`, leaving out operations that did not change.
pub fn calls_between(before: &CallCounts, after: &CallCounts) -> CallCounts {
    after
        .iter()
        .filter_map(|(operation, count)| {
            let delta = count - before.get(operation).copied().unwrap_or(0);
            (delta > 0).then(|| (operation.clone(), delta))
        })
        .collect()
}

async fn answer(
    State(state): State<Arc<Mutex<StubState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let Some((service, operation)) = operation(target) else {
        return error(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            &format!("the bench stub answers the JSON protocols only, not {target:?}"),
        );
    };
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut state = lock(&state);
    *state
        .calls
        .entry(format!("{service}:{operation}"))
        .or_default() += 1;
    match (service, operation) {
        ("sqs", "SendMessage") => {
            let body = request["MessageBody"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let attributes = request["MessageAttributes"]
                .as_object()
                .map(|attributes| {
                    attributes
                        .iter()
                        .filter_map(|(name, value)| {
                            Some((name.clone(), value["StringValue"].as_str()?.to_owned()))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let digest = hex::encode(Md5::digest(body.as_bytes()));
            state.sent.push(SentMessage { body, attributes });
            json_response(
                "1.0",
                json!({"MD5OfMessageBody": digest, "MessageId": uuid()}),
            )
        }
        ("sqs", "GetQueueAttributes") => json_response(
            "1.0",
            json!({"Attributes": {"QueueArn": "arn:aws:sqs:us-east-1:123456789012:junction-ingest"}}),
        ),
        ("sqs", _) => json_response("1.0", json!({})),
        ("dynamodb", "Query" | "Scan") => {
            json_response("1.0", json!({"Items": [], "Count": 0, "ScannedCount": 0}))
        }
        ("dynamodb", "BatchWriteItem") => json_response("1.0", json!({"UnprocessedItems": {}})),
        ("dynamodb", _) => json_response("1.0", json!({})),
        ("kms", "Decrypt") => json_response(
            "1.1",
            json!({
                "KeyId": KEY_ARN,
                "Plaintext": BASE64.encode([7u8; 32]),
                "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
            }),
        ),
        ("kms", "GenerateDataKey") => json_response(
            "1.1",
            json!({
                "KeyId": KEY_ARN,
                "Plaintext": BASE64.encode([7u8; 32]),
                "CiphertextBlob": BASE64.encode([9u8; 64]),
            }),
        ),
        ("kms", _) => json_response(
            "1.1",
            json!({"KeyId": KEY_ARN, "CiphertextBlob": BASE64.encode([9u8; 64])}),
        ),
        ("events", "PutEvents") => {
            let entries = request["Entries"].as_array().map_or(0, Vec::len);
            let ids: Vec<Value> = (0..entries).map(|_| json!({"EventId": uuid()})).collect();
            json_response("1.1", json!({"FailedEntryCount": 0, "Entries": ids}))
        }
        ("secretsmanager", "BatchGetSecretValue") => {
            let prefixes: Vec<&str> = request["Filters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|filter| filter["Key"] == "name")
                .flat_map(|filter| filter["Values"].as_array().into_iter().flatten())
                .filter_map(Value::as_str)
                .collect();
            let values: Vec<Value> = state
                .secrets
                .iter()
                .filter(|(name, _)| prefixes.iter().any(|prefix| name.starts_with(prefix)))
                .map(|(name, secret)| secret_value(name, secret))
                .collect();
            json_response("1.1", json!({"SecretValues": values, "Errors": []}))
        }
        ("secretsmanager", "GetSecretValue") => {
            let id = request["SecretId"].as_str().unwrap_or_default();
            match state.secrets.get(id) {
                Some(secret) => json_response("1.1", secret_value(id, secret)),
                None => error(
                    StatusCode::BAD_REQUEST,
                    "ResourceNotFoundException",
                    "Secrets Manager can't find the specified secret.",
                ),
            }
        }
        (service, operation) => error(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            &format!("the bench stub does not answer {service}:{operation}"),
        ),
    }
}

/// A secret as `GetSecretValue` (and each of `BatchGetSecretValue`'s) answers it.
fn secret_value(name: &str, secret: &str) -> Value {
    json!({
        "ARN": format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbCdEf"),
        "Name": name,
        "SecretString": secret,
        "VersionId": "00000000-0000-0000-0000-000000000001",
        "VersionStages": ["AWSCURRENT"],
        "CreatedDate": 1_700_000_000,
    })
}

const KEY_ARN: &str = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-00000000beef";

/// `(service, operation)` from an `X-Amz-Target` header of the JSON protocols.
fn operation(target: &str) -> Option<(&'static str, &str)> {
    let (prefix, operation) = target.split_once('.')?;
    let service = match prefix {
        "AmazonSQS" => "sqs",
        "DynamoDB_20120810" => "dynamodb",
        "TrentService" => "kms",
        "AWSEvents" => "events",
        "secretsmanager" => "secretsmanager",
        _ => return None,
    };
    Some((service, operation))
}

fn json_response(version: &str, body: Value) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                format!("application/x-amz-json-{version}"),
            ),
            (header::HeaderName::from_static("x-amzn-requestid"), uuid()),
        ],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
        json!({"__type": kind, "message": message}).to_string(),
    )
        .into_response()
}

fn uuid() -> String {
    let bytes: [u8; 16] = rand::random();
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_name_service_and_operation() {
        assert_eq!(
            operation("AmazonSQS.SendMessage"),
            Some(("sqs", "SendMessage"))
        );
        assert_eq!(
            operation("DynamoDB_20120810.PutItem"),
            Some(("dynamodb", "PutItem"))
        );
        assert_eq!(operation("TrentService.Decrypt"), Some(("kms", "Decrypt")));
        assert_eq!(operation("Unknown.Call"), None);
        assert_eq!(operation(""), None);
    }

    /// The SDKs Junction's functions use, against the stub: what they send is kept and
    /// counted, and their answers parse (the SQS client checks `MD5OfMessageBody`).
    #[tokio::test]
    async fn the_rust_sdks_get_answers_they_accept() {
        let stub = StubAws::start(BTreeMap::from([(
            "junction/webhooks/github".to_owned(),
            r#"{"signing_secrets":["s"]}"#.to_owned(),
        )]))
        .await
        .expect("stub");
        let credentials =
            aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "bench");
        let region = aws_sdk_sqs::config::Region::new("us-east-1");
        let sqs = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::Config::builder()
                .behavior_version_latest()
                .endpoint_url(stub.endpoint())
                .region(region.clone())
                .credentials_provider(credentials.clone())
                .build(),
        );
        let secrets = aws_sdk_secretsmanager::Client::from_conf(
            aws_sdk_secretsmanager::Config::builder()
                .behavior_version_latest()
                .endpoint_url(stub.endpoint())
                .region(region)
                .credentials_provider(credentials)
                .build(),
        );
        let queue = "https://sqs.us-east-1.amazonaws.com/123456789012/q";
        sqs.send_message()
            .queue_url(queue)
            .message_body("{\"hello\":1}")
            .message_attributes(
                "provider",
                aws_sdk_sqs::types::MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("github")
                    .build()
                    .expect("attribute"),
            )
            .send()
            .await
            .expect("SendMessage");
        sqs.get_queue_attributes()
            .queue_url(queue)
            .send()
            .await
            .expect("GetQueueAttributes");
        let batch = secrets
            .batch_get_secret_value()
            .filters(
                aws_sdk_secretsmanager::types::Filter::builder()
                    .key(aws_sdk_secretsmanager::types::FilterNameStringType::Name)
                    .values("junction/webhooks/")
                    .build(),
            )
            .send()
            .await
            .expect("BatchGetSecretValue");
        assert_eq!(batch.secret_values().len(), 1);
        let missing = secrets
            .get_secret_value()
            .secret_id("junction/webhooks/none")
            .send()
            .await
            .expect_err("no such secret");
        assert!(format!("{:?}", missing.into_service_error()).contains("ResourceNotFound"));

        let sent = stub.take_sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].body, "{\"hello\":1}");
        assert_eq!(sent[0].attributes["provider"], "github");
        assert_eq!(
            stub.calls(),
            CallCounts::from([
                ("secretsmanager:BatchGetSecretValue".into(), 1),
                ("secretsmanager:GetSecretValue".into(), 1),
                ("sqs:GetQueueAttributes".into(), 1),
                ("sqs:SendMessage".into(), 1),
            ])
        );
    }

    #[test]
    fn calls_between_keeps_only_changes() {
        let before = CallCounts::from([("sqs:SendMessage".into(), 2), ("kms:Decrypt".into(), 1)]);
        let after = CallCounts::from([
            ("sqs:SendMessage".into(), 5),
            ("kms:Decrypt".into(), 1),
            ("dynamodb:PutItem".into(), 3),
        ]);
        assert_eq!(
            calls_between(&before, &after),
            CallCounts::from([
                ("sqs:SendMessage".into(), 3),
                ("dynamodb:PutItem".into(), 3)
            ])
        );
    }
}
