//! Calls to an AWS service's JSON protocol (`awsJson1_0`: `POST /` with `X-Amz-Target`)
//! without the SDK's orchestrator, for the one call on the webhook ingress's hot path
//! (SQS `SendMessage`).
//!
//! Per call the SDK merges its configuration layers, runs a dozen interceptors, resolves
//! the endpoint through its rules engine and signs with a general SigV4 signer: about a
//! third of the ingress's CPU per delivery, more than verifying and everything else of
//! Junction's own (infra/bench, BENCHMARKS.md). This client takes from the same
//! [`aws_config::SdkConfig`] what the SDK would use (credentials provider, region,
//! configured endpoint URL, timeouts, retry settings) and does the rest directly: the
//! credentials cached until five minutes before they expire, [`crate::sigv4`] with the
//! day's signing key kept, one HTTPS connection pool on the roots AWS endpoints chain to
//! ([`crate::tls::aws_client_builder`]), and the SDK's standard retry behaviour
//! (transport errors, timeouts, 5xx and throttling errors retried with full-jitter
//! exponential backoff, the same attempts and bounds).
//!
//! In Lambda, the invocation's X-Ray trace header goes with each call, as the SDK's
//! recursion detection sends it.
//!
//! The endpoint is chosen as the SDK chooses a configured one: an endpoint URL set in
//! code, else the service's own (`AWS_ENDPOINT_URL_SQS`, or the profile's `services`
//! section), else `AWS_ENDPOINT_URL`, with `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`
//! honoured. With none configured it is the resource's own URL (a queue URL names its
//! regional endpoint) rather than the SDK's endpoint rules.
//!
//! Not done here: the FIPS and dual-stack endpoint variants (a configuration asking
//! for either is refused at start, naming the setting, since they cannot be honoured
//! silently; the variant's URL can be configured as the service's endpoint instead),
//! clock-skew correction and the SDK's retry quota.

use std::{sync::Mutex, time::Duration};

use aws_credential_types::{
    Credentials,
    provider::{ProvideCredentials, SharedCredentialsProvider},
};
use bytes::Bytes;
use time::OffsetDateTime;

use crate::{retry::Backoff, sigv4::Signer};

/// Credentials are renewed this long before they expire.
const CREDENTIALS_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum AwsJsonError {
    /// The service answered with an error (after retries, when it was retryable).
    #[error("{service} {operation}: {code} (HTTP {status}): {message}")]
    Service {
        service: &'static str,
        operation: &'static str,
        status: u16,
        code: String,
        message: String,
    },
    /// No answer: connection, TLS or I/O failure, or a timeout (after retries).
    #[error("{service} {operation}: {source}")]
    Transport {
        service: &'static str,
        operation: &'static str,
        #[source]
        source: reqwest::Error,
    },
    /// The whole call, retries included, ran past the operation timeout.
    #[error("{service} {operation}: no answer within {timeout:?}")]
    OperationTimeout {
        service: &'static str,
        operation: &'static str,
        timeout: Duration,
    },
    /// No credentials to sign with.
    #[error("{service}: no AWS credentials: {reason}")]
    Credentials {
        service: &'static str,
        reason: String,
    },
    /// The configuration cannot be used (missing region, unusable endpoint URL).
    #[error("{service}: {reason}")]
    Config {
        service: &'static str,
        reason: String,
    },
}

impl AwsJsonError {
    /// The service's error code (`QueueDoesNotExist`, `AWS.SimpleQueueService.NonExistentQueue`, …).
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsJsonError::Service { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// What names an AWS service to this client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// The SigV4 signing name (`sqs`).
    pub signing_name: &'static str,
    /// The SDK's service id (`SQS`), as in `AWS_ENDPOINT_URL_SQS`.
    pub id: &'static str,
    /// `X-Amz-Target`'s prefix (`AmazonSQS`).
    pub target_prefix: &'static str,
}

/// Amazon SQS.
pub const SQS: Service = Service {
    signing_name: "sqs",
    id: "SQS",
    target_prefix: "AmazonSQS",
};

/// One service's JSON-protocol client.
#[derive(Debug)]
pub struct AwsJsonClient {
    /// The signing name, which errors and logs name the service by.
    service: &'static str,
    /// `X-Amz-Target`'s prefix (`AmazonSQS`).
    target_prefix: &'static str,
    http: reqwest::Client,
    /// `scheme://host[:port]/`, parsed once (reqwest would parse a string per request).
    url: reqwest::Url,
    /// `host[:port]`, as the `Host` header carries it.
    host: String,
    signer: Signer,
    credentials: CredentialsCache,
    max_attempts: u32,
    backoff: Backoff,
    attempt_timeout: Option<Duration>,
    operation_timeout: Option<Duration>,
    /// Running in Lambda: the invocation's X-Ray trace header goes with each call.
    in_lambda: bool,
}

impl AwsJsonClient {
    /// A client for `service` at its configured endpoint URL (see the module), else
    /// at `default_endpoint`.
    pub fn from_config(
        aws: &aws_config::SdkConfig,
        service: Service,
        default_endpoint: &str,
    ) -> Result<AwsJsonClient, AwsJsonError> {
        let Service {
            signing_name,
            target_prefix,
            ..
        } = service;
        let config = |reason: String| AwsJsonError::Config {
            service: signing_name,
            reason,
        };
        let region = aws
            .region()
            .ok_or_else(|| config("no AWS region configured (AWS_REGION)".to_owned()))?;
        for (asked, setting) in [
            (aws.use_fips(), "AWS_USE_FIPS_ENDPOINT (use_fips_endpoint)"),
            (
                aws.use_dual_stack(),
                "AWS_USE_DUALSTACK_ENDPOINT (use_dualstack_endpoint)",
            ),
        ] {
            if asked == Some(true) {
                return Err(config(format!(
                    "{setting} is set, and this client does not derive endpoint variants; \
                     unset it and configure the variant's URL as AWS_ENDPOINT_URL_{}",
                    service.id
                )));
            }
        }
        let configured = configured_endpoint(aws, service.id);
        let endpoint = configured.as_deref().unwrap_or(default_endpoint);
        let parsed = url::Url::parse(endpoint)
            .map_err(|err| config(format!("endpoint {endpoint:?}: {err}")))?;
        let host = match (parsed.host_str(), parsed.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => return Err(config(format!("endpoint {endpoint:?} has no host"))),
        };
        if !matches!(parsed.scheme(), "https" | "http") {
            return Err(config(format!("endpoint {endpoint:?} is not http(s)")));
        }
        let timeouts = aws.timeout_config();
        let connect_timeout = timeouts.and_then(|t| t.connect_timeout());
        let mut http = crate::tls::aws_client_builder()
            .user_agent(concat!("junction/", env!("CARGO_PKG_VERSION")))
            .tcp_nodelay(true);
        if let Some(connect_timeout) = connect_timeout {
            http = http.connect_timeout(connect_timeout);
        }
        let http = http
            .build()
            .map_err(|err| config(format!("HTTPS client: {err}")))?;
        let retry = aws.retry_config();
        Ok(AwsJsonClient {
            service: signing_name,
            target_prefix,
            http,
            url: reqwest::Url::parse(&format!("{}://{host}/", parsed.scheme()))
                .map_err(|err| config(format!("endpoint {endpoint:?}: {err}")))?,
            host,
            signer: Signer::new(region.as_ref(), signing_name),
            credentials: CredentialsCache {
                provider: aws.credentials_provider(),
                cached: Mutex::new(None),
            },
            max_attempts: retry.map_or(3, |r| r.max_attempts()).max(1),
            backoff: Backoff {
                base: retry.map_or(Duration::from_secs(1), |r| r.initial_backoff()),
                cap: retry.map_or(Duration::from_secs(20), |r| r.max_backoff()),
            },
            attempt_timeout: timeouts.and_then(|t| t.operation_attempt_timeout()),
            operation_timeout: timeouts.and_then(|t| t.operation_timeout()),
            in_lambda: std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some(),
        })
    }

    /// Calls `operation` with `body` (the JSON input) and returns the JSON output.
    pub async fn call(
        &self,
        operation: &'static str,
        body: Vec<u8>,
    ) -> Result<Bytes, AwsJsonError> {
        // Shared, not copied, by every attempt's request.
        let body = Bytes::from(body);
        match self.operation_timeout {
            Some(timeout) => tokio::time::timeout(timeout, self.attempts(operation, body))
                .await
                .unwrap_or(Err(AwsJsonError::OperationTimeout {
                    service: self.service,
                    operation,
                    timeout,
                })),
            None => self.attempts(operation, body).await,
        }
    }

    async fn attempts(&self, operation: &'static str, body: Bytes) -> Result<Bytes, AwsJsonError> {
        let credentials = self.credentials.get(self.service).await?;
        let target = format!("{}.{operation}", self.target_prefix);
        let mut attempt = 1;
        loop {
            let result = self.attempt(operation, &target, &credentials, &body).await;
            match result {
                Err(failure) if failure.retryable && attempt < self.max_attempts => {
                    let delay = self.backoff.delay(attempt, &mut rand::thread_rng());
                    tracing::debug!(service = self.service, operation, attempt, error = %failure.error, ?delay, "retrying AWS call");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(failure) => return Err(failure.error),
                Ok(output) => return Ok(output),
            }
        }
    }

    async fn attempt(
        &self,
        operation: &'static str,
        target: &str,
        credentials: &Credentials,
        body: &Bytes,
    ) -> Result<Bytes, Failure> {
        const CONTENT_TYPE: &str = "application/x-amz-json-1.0";
        let signature = self.signer.sign_post(
            credentials,
            OffsetDateTime::now_utc(),
            &self.host,
            &[("content-type", CONTENT_TYPE), ("x-amz-target", target)],
            body,
        );
        let mut request = self
            .http
            .post(self.url.clone())
            .header("content-type", CONTENT_TYPE)
            .header("x-amz-target", target)
            .header("x-amz-date", signature.amz_date)
            .header("authorization", signature.authorization);
        if let Some(token) = signature.security_token {
            request = request.header("x-amz-security-token", token);
        }
        // As the SDK's recursion detection does: the invocation's trace header (from
        // `runtime_api`, or `_X_AMZN_TRACE_ID` where `lambda_runtime` runs the loop)
        // goes with the call (unsigned), so X-Ray traces continue and Lambda's
        // recursive-loop detection sees the chain.
        if self.in_lambda
            && let Some(trace) = crate::runtime_api::current_trace_id()
                .or_else(|| std::env::var("_X_AMZN_TRACE_ID").ok())
                .and_then(|trace| reqwest::header::HeaderValue::from_str(&trace).ok())
        {
            request = request.header("x-amzn-trace-id", trace);
        }
        if let Some(timeout) = self.attempt_timeout {
            request = request.timeout(timeout);
        }
        let transport = |source: reqwest::Error| Failure {
            retryable: true,
            error: AwsJsonError::Transport {
                service: self.service,
                operation,
                source,
            },
        };
        let response = request.body(body.clone()).send().await.map_err(transport)?;
        let status = response.status().as_u16();
        let query_error = response
            .headers()
            .get("x-amzn-query-error")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let output = response.bytes().await.map_err(transport)?;
        if (200..300).contains(&status) {
            return Ok(output);
        }
        let (code, message) = error_code_and_message(query_error.as_deref(), &output);
        Err(Failure {
            retryable: is_retryable(status, &code),
            error: AwsJsonError::Service {
                service: self.service,
                operation,
                status,
                code,
                message,
            },
        })
    }
}

struct Failure {
    retryable: bool,
    error: AwsJsonError,
}

/// The credentials provider's credentials, kept until shortly before they expire (on
/// Lambda: the execution role's, from the environment, for the environment's life).
#[derive(Debug)]
struct CredentialsCache {
    provider: Option<SharedCredentialsProvider>,
    cached: Mutex<Option<Credentials>>,
}

impl CredentialsCache {
    async fn get(&self, service: &'static str) -> Result<Credentials, AwsJsonError> {
        let fresh = |credentials: &Credentials| {
            credentials.expiry().is_none_or(|expiry| {
                expiry
                    .duration_since(std::time::SystemTime::now())
                    .is_ok_and(|left| left > CREDENTIALS_REFRESH_MARGIN)
            })
        };
        if let Some(credentials) = self
            .cached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|credentials| fresh(credentials))
        {
            return Ok(credentials.clone());
        }
        let failed = |reason: String| AwsJsonError::Credentials { service, reason };
        let provider = self
            .provider
            .as_ref()
            .ok_or_else(|| failed("no credentials provider configured".to_owned()))?;
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|err| failed(err.to_string()))?;
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some(credentials.clone());
        Ok(credentials)
    }
}

/// The endpoint URL the SDK's client for `service_id` would take from `aws`: one set in
/// code, else the service's own (`AWS_ENDPOINT_URL_{service_id}`, the profile's
/// `services` section), else the global one; the same steps as the generated clients'
/// `From<&SdkConfig>`.
fn configured_endpoint(aws: &aws_config::SdkConfig, service_id: &str) -> Option<String> {
    if aws.get_origin("endpoint_url").is_client_config() {
        return aws.endpoint_url().map(str::to_owned);
    }
    aws.service_config()
        .and_then(|config| {
            let key = aws_types::service_config::ServiceConfigKey::builder()
                .service_id(service_id)
                .env("AWS_ENDPOINT_URL")
                .profile("endpoint_url")
                .build()
                .ok()?;
            config.load_config(key)
        })
        .or_else(|| aws.endpoint_url().map(str::to_owned))
}

/// The error's code and message: the code from `x-amzn-query-error` (`Code;Sender`, what
/// services that moved from the query protocol send, SQS among them) or the body's
/// `__type` (its shape name, after any `namespace#`), the message from `message` or
/// `Message`.
fn error_code_and_message(query_error: Option<&str>, body: &[u8]) -> (String, String) {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        #[serde(rename = "__type", default)]
        kind: Option<String>,
        #[serde(alias = "Message", default)]
        message: Option<String>,
    }
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let code = query_error
        .and_then(|value| value.split(';').next())
        .filter(|code| !code.is_empty())
        .map(str::to_owned)
        .or_else(|| {
            let kind = parsed.as_ref()?.kind.as_deref()?;
            let name = kind.rsplit_once('#').map_or(kind, |(_, name)| name);
            Some(name.split(':').next().unwrap_or(name).to_owned())
        })
        .unwrap_or_else(|| "Unknown".to_owned());
    let message = parsed
        .and_then(|body| body.message)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned());
    (code, message)
}

/// The SDK's standard retry classes: 5xx and 429, and the throttling and transient
/// error codes of its list.
fn is_retryable(status: u16, code: &str) -> bool {
    const THROTTLING: [&str; 15] = [
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
        "KmsThrottled",
    ];
    const TRANSIENT: [&str; 4] = [
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalFailure",
    ];
    let name = code.rsplit('.').next().unwrap_or(code);
    status >= 500 || status == 429 || THROTTLING.contains(&name) || TRANSIENT.contains(&name)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;
    use aws_types::origin::Origin;

    /// One request as the loopback server read it.
    #[derive(Debug, Clone)]
    struct Seen {
        head: String,
        body: Vec<u8>,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.head.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case(name).then(|| value.trim())
            })
        }
    }

    /// A loopback HTTP/1.1 server answering each request with the next of `answers`
    /// (status, extra header lines, body, delay before answering).
    async fn server(
        answers: Vec<(u16, &'static str, &'static str, Duration)>,
    ) -> (String, Arc<Mutex<Vec<Seen>>>, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            // Each connection is answered on its own task (a slow answer does not hold
            // up the next attempt), with the next answer in order of arrival.
            for answer in answers {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(answer_one(stream, answer, log.clone()));
            }
        });
        (format!("http://{address}"), seen, task)
    }

    /// Reads one request from `stream`, logs it and answers it (then closes).
    async fn answer_one(
        mut stream: tokio::net::TcpStream,
        (status, headers, body, delay): (u16, &'static str, &'static str, Duration),
        log: Arc<Mutex<Vec<Seen>>>,
    ) {
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        let request = loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
            }
            let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            let seen = Seen {
                head,
                body: Vec::new(),
            };
            let length: usize = seen
                .header("content-length")
                .and_then(|value| value.parse().ok())
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                break Seen {
                    body: buffer[end + 4..end + 4 + length].to_vec(),
                    ..seen
                };
            }
        };
        log.lock().expect("log").push(request);
        tokio::time::sleep(delay).await;
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/x-amz-json-1.0\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
    }

    fn config(endpoint: &str, token: Option<&str>) -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("eu-west-1"))
            .endpoint_url(endpoint)
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "AKIDTEST",
                "secret",
                token.map(str::to_owned),
                None,
                "test",
            )))
            .retry_config(
                aws_config::retry::RetryConfig::standard()
                    .with_initial_backoff(Duration::from_millis(5))
                    .with_max_attempts(3),
            )
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_millis(300))
                    .operation_timeout(Duration::from_secs(5))
                    .build(),
            )
            .build()
    }

    const NOW: Duration = Duration::ZERO;

    /// A client at `endpoint`, without a session token.
    fn sqs_client(endpoint: &str) -> AwsJsonClient {
        AwsJsonClient::from_config(&config(endpoint, None), SQS, endpoint).expect("client")
    }

    #[tokio::test]
    async fn a_call_is_signed_and_sent_as_the_json_protocol() {
        let (endpoint, seen, _server) =
            server(vec![(200, "", r#"{"MessageId":"m-1"}"#, NOW)]).await;
        let client = AwsJsonClient::from_config(
            &config(&endpoint, Some("session-token")),
            SQS,
            "https://sqs.eu-west-1.amazonaws.com/1/q",
        )
        .expect("client");
        let output = client
            .call("SendMessage", br#"{"QueueUrl":"q"}"#.to_vec())
            .await
            .expect("sent");
        assert_eq!(&output[..], br#"{"MessageId":"m-1"}"#);
        let seen = seen.lock().expect("log")[0].clone();
        assert!(seen.head.starts_with("POST / HTTP/1.1"), "{}", seen.head);
        assert_eq!(seen.body, br#"{"QueueUrl":"q"}"#);
        assert_eq!(seen.header("x-amz-target"), Some("AmazonSQS.SendMessage"));
        assert_eq!(
            seen.header("content-type"),
            Some("application/x-amz-json-1.0")
        );
        assert_eq!(seen.header("x-amz-security-token"), Some("session-token"));
        let host = endpoint.trim_start_matches("http://");
        assert_eq!(seen.header("host"), Some(host));
        // The signature the server can check: the same request signed again.
        let amz_date = seen.header("x-amz-date").expect("x-amz-date");
        let time = time::PrimitiveDateTime::parse(
            amz_date,
            time::macros::format_description!("[year][month][day]T[hour][minute][second]Z"),
        )
        .expect("x-amz-date format")
        .assume_utc();
        let expected = Signer::new("eu-west-1", "sqs").sign_post(
            &Credentials::new(
                "AKIDTEST",
                "secret",
                Some("session-token".into()),
                None,
                "t",
            ),
            time,
            host,
            &[
                ("content-type", "application/x-amz-json-1.0"),
                ("x-amz-target", "AmazonSQS.SendMessage"),
            ],
            &seen.body,
        );
        assert_eq!(
            seen.header("authorization"),
            Some(expected.authorization.as_str())
        );
    }

    #[tokio::test]
    async fn server_errors_and_slow_answers_are_retried_then_succeed() {
        let (endpoint, seen, _server) = server(vec![
            (
                500,
                "",
                r#"{"__type":"InternalError","message":"oops"}"#,
                NOW,
            ),
            (200, "", "{}", Duration::from_secs(2)), // past the 300 ms attempt timeout
            (200, "", "{}", NOW),
        ])
        .await;
        let client = sqs_client(&endpoint);
        client
            .call("SendMessage", b"{}".to_vec())
            .await
            .expect("third attempt");
        let seen = seen.lock().expect("log");
        assert_eq!(seen.len(), 3);
        assert!(
            seen.iter()
                .all(|request| request.header("x-amz-security-token").is_none())
        );
    }

    #[tokio::test]
    async fn a_client_error_is_not_retried_and_names_the_code() {
        let (endpoint, seen, _server) = server(vec![(
            400,
            "x-amzn-query-error: AWS.SimpleQueueService.NonExistentQueue;Sender\r\n",
            r#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"The specified queue does not exist."}"#,
            NOW,
        )])
        .await;
        let err = sqs_client(&endpoint)
            .call("SendMessage", b"{}".to_vec())
            .await
            .expect_err("no such queue");
        assert_eq!(err.code(), Some("AWS.SimpleQueueService.NonExistentQueue"));
        assert_eq!(
            err.to_string(),
            "sqs SendMessage: AWS.SimpleQueueService.NonExistentQueue (HTTP 400): The specified queue does not exist."
        );
        assert_eq!(seen.lock().expect("log").len(), 1);
    }

    #[tokio::test]
    async fn throttling_is_retried_until_the_attempts_run_out() {
        let throttled = (
            400,
            "",
            r#"{"__type":"ThrottlingException","message":"slow down"}"#,
            NOW,
        );
        let (endpoint, seen, _server) = server(vec![throttled; 4]).await;
        let err = sqs_client(&endpoint)
            .call("SendMessage", b"{}".to_vec())
            .await
            .expect_err("still throttled");
        assert_eq!(err.code(), Some("ThrottlingException"));
        assert_eq!(seen.lock().expect("log").len(), 3, "max attempts");
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_transport_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        drop(listener);
        let err = sqs_client(&endpoint)
            .call("SendMessage", b"{}".to_vec())
            .await
            .expect_err("nobody listens");
        assert!(matches!(err, AwsJsonError::Transport { .. }), "{err}");
    }

    #[test]
    fn unusable_configuration_is_refused() {
        let no_region = aws_config::SdkConfig::builder().build();
        let err = AwsJsonClient::from_config(&no_region, SQS, "https://sqs.x/1/q")
            .expect_err("no region");
        assert!(err.to_string().contains("AWS_REGION"), "{err}");
        let with_region = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("eu-west-1"))
            .build();
        for endpoint in ["not a url", "ftp://host/"] {
            assert!(
                AwsJsonClient::from_config(&with_region, SQS, endpoint).is_err(),
                "{endpoint}"
            );
        }
    }

    /// What `AWS_ENDPOINT_URL_SQS` (or a profile's `services` section) gives the SDK.
    #[derive(Debug)]
    struct ServiceEndpoint(&'static str);

    impl aws_types::service_config::LoadServiceConfig for ServiceEndpoint {
        fn load_config(
            &self,
            key: aws_types::service_config::ServiceConfigKey<'_>,
        ) -> Option<String> {
            let asked = (key.service_id(), key.env(), key.profile());
            (asked == ("SQS", "AWS_ENDPOINT_URL", "endpoint_url")).then(|| self.0.to_owned())
        }
    }

    #[test]
    fn the_endpoint_is_chosen_as_the_sdk_chooses_a_configured_one() {
        let queue_url = "https://sqs.eu-west-1.amazonaws.com/1/q";
        let endpoint = |builder: aws_config::SdkConfig| {
            let client = AwsJsonClient::from_config(&builder, SQS, queue_url).expect("client");
            client.url.to_string()
        };
        let base = || aws_config::SdkConfig::builder().region(aws_config::Region::new("eu-west-1"));
        assert_eq!(
            endpoint(base().build()),
            "https://sqs.eu-west-1.amazonaws.com/"
        );
        // AWS_ENDPOINT_URL alone.
        let mut global = base().endpoint_url("http://global:1");
        global.insert_origin("endpoint_url", Origin::shared_environment_variable());
        assert_eq!(endpoint(global.build()), "http://global:1/");
        // AWS_ENDPOINT_URL_SQS wins over AWS_ENDPOINT_URL.
        let mut both = base()
            .endpoint_url("http://global:1")
            .service_config(ServiceEndpoint("http://sqs-only:2"));
        both.insert_origin("endpoint_url", Origin::shared_environment_variable());
        assert_eq!(endpoint(both.build()), "http://sqs-only:2/");
        // An endpoint set in code wins over both.
        let mut in_code = base()
            .endpoint_url("http://in-code:3")
            .service_config(ServiceEndpoint("http://sqs-only:2"));
        in_code.insert_origin("endpoint_url", Origin::shared_config());
        assert_eq!(endpoint(in_code.build()), "http://in-code:3/");
    }

    #[test]
    fn fips_and_dual_stack_are_refused_naming_the_setting() {
        let base = || aws_config::SdkConfig::builder().region(aws_config::Region::new("eu-west-1"));
        for (config, setting) in [
            (base().use_fips(true).build(), "AWS_USE_FIPS_ENDPOINT"),
            (
                base().use_dual_stack(true).build(),
                "AWS_USE_DUALSTACK_ENDPOINT",
            ),
        ] {
            let err =
                AwsJsonClient::from_config(&config, SQS, "https://sqs.x/1/q").expect_err("refused");
            assert!(err.to_string().contains(setting), "{err}");
            assert!(err.to_string().contains("AWS_ENDPOINT_URL_SQS"), "{err}");
        }
        let explicit_off = base().use_fips(false).use_dual_stack(false).build();
        assert!(AwsJsonClient::from_config(&explicit_off, SQS, "https://sqs.x/1/q").is_ok());
    }

    #[test]
    fn error_codes_come_from_the_query_header_then_the_type() {
        assert_eq!(
            error_code_and_message(
                Some("AWS.SimpleQueueService.NonExistentQueue;Sender"),
                br#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","message":"The specified queue does not exist."}"#
            ),
            (
                "AWS.SimpleQueueService.NonExistentQueue".to_owned(),
                "The specified queue does not exist.".to_owned()
            )
        );
        assert_eq!(
            error_code_and_message(
                None,
                br#"{"__type":"com.amazonaws.sqs#QueueDoesNotExist","Message":"gone"}"#
            ),
            ("QueueDoesNotExist".to_owned(), "gone".to_owned())
        );
        assert_eq!(
            error_code_and_message(
                None,
                br#"{"__type":"aws.protocoltests#ValidationException:http://internal"}"#
            )
            .0,
            "ValidationException"
        );
        assert_eq!(
            error_code_and_message(None, b"<html>bad gateway</html>"),
            ("Unknown".to_owned(), "<html>bad gateway</html>".to_owned())
        );
    }

    #[test]
    fn server_errors_throttling_and_timeouts_are_retried_client_errors_are_not() {
        assert!(is_retryable(500, "InternalError"));
        assert!(is_retryable(503, "Unknown"));
        assert!(is_retryable(429, "Unknown"));
        assert!(is_retryable(400, "ThrottlingException"));
        assert!(is_retryable(400, "AWS.SimpleQueueService.RequestThrottled"));
        assert!(is_retryable(400, "RequestThrottled"));
        assert!(is_retryable(400, "KmsThrottled"));
        assert!(!is_retryable(
            400,
            "AWS.SimpleQueueService.NonExistentQueue"
        ));
        assert!(!is_retryable(400, "InvalidParameterValue"));
        assert!(!is_retryable(403, "AccessDenied"));
        assert!(!is_retryable(400, "InvalidSignatureException"));
    }
}
