//! The Lambda Runtime API loop of the webhook ingress: `GET /next`, call the handler,
//! `POST` its response (or error), over one kept-alive HTTP/1.1 connection.
//!
//! `lambda_runtime` does the same through tower layers, a pooled client, a `Context`
//! built from every header, path-tracking deserialization and an environment write per
//! invocation: 14% of the ingress's CPU per delivery, the largest share left after its
//! own work (BENCHMARKS.md). The ingress answers every webhook synchronously, so it
//! runs on this loop; the other functions keep `lambda_runtime`.
//!
//! Protocol: <https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html>.

use std::{future::Future, sync::Mutex};

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::{Serialize, de::DeserializeOwned};

const NEXT: &str = "/2018-06-01/runtime/invocation/next";

/// One invocation's facts from the `/next` response's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// `Lambda-Runtime-Aws-Request-Id`.
    pub request_id: String,
    /// `Lambda-Runtime-Deadline-Ms`: when Lambda stops the invocation (Unix ms).
    pub deadline_ms: Option<u64>,
    /// `Lambda-Runtime-Trace-Id`: the X-Ray trace header of the invocation.
    pub trace_id: Option<String>,
}

/// The loop cannot go on (the process then exits and Lambda starts a new one).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeApiError {
    #[error("AWS_LAMBDA_RUNTIME_API is not set: not running in Lambda")]
    NotInLambda,
    #[error("Lambda Runtime API at {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Lambda Runtime API: {0}")]
    Http(#[from] hyper::Error),
    #[error("Lambda Runtime API: {0}")]
    Request(#[from] http::Error),
    #[error("Lambda Runtime API answered {status} to /next")]
    Next { status: StatusCode },
    #[error("Lambda Runtime API: /next carried no request id")]
    NoRequestId,
}

/// The trace header of the invocation in progress, for AWS calls made during it
/// ([`crate::aws_json`]); `lambda_runtime` puts it in `_X_AMZN_TRACE_ID` instead.
static TRACE_ID: Mutex<Option<String>> = Mutex::new(None);

/// The X-Ray trace header of the invocation in progress, when this loop runs it.
pub fn current_trace_id() -> Option<String> {
    TRACE_ID.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Runs `handler` for every invocation, at `AWS_LAMBDA_RUNTIME_API`. An event that does
/// not deserialize as `E`, or a handler error, is reported to the invocation's
/// `/error` (Lambda then answers the caller with a 5xx); only a failing Runtime API
/// ends the loop.
pub async fn run<E, R, H, F>(handler: H) -> Result<(), RuntimeApiError>
where
    E: DeserializeOwned,
    R: Serialize,
    H: Fn(E, Invocation) -> F,
    F: Future<Output = Result<R, Box<dyn std::error::Error + Send + Sync>>>,
{
    let address = std::env::var("AWS_LAMBDA_RUNTIME_API")
        .ok()
        .filter(|address| !address.is_empty())
        .ok_or(RuntimeApiError::NotInLambda)?;
    run_at(&address, handler).await
}

/// [`run`] against the Runtime API at `address` (`host:port`).
pub async fn run_at<E, R, H, F>(address: &str, handler: H) -> Result<(), RuntimeApiError>
where
    E: DeserializeOwned,
    R: Serialize,
    H: Fn(E, Invocation) -> F,
    F: Future<Output = Result<R, Box<dyn std::error::Error + Send + Sync>>>,
{
    let mut api = Connection {
        address: address.to_owned(),
        sender: None,
    };
    loop {
        let (status, headers, event) = api.send(Method::GET, NEXT, &[], Bytes::new()).await?;
        if !status.is_success() {
            return Err(RuntimeApiError::Next { status });
        }
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let invocation = Invocation {
            request_id: header("lambda-runtime-aws-request-id")
                .ok_or(RuntimeApiError::NoRequestId)?,
            deadline_ms: header("lambda-runtime-deadline-ms").and_then(|ms| ms.parse().ok()),
            trace_id: header("lambda-runtime-trace-id"),
        };
        *TRACE_ID.lock().unwrap_or_else(|p| p.into_inner()) = invocation.trace_id.clone();
        let id = invocation.request_id.clone();
        let outcome = match serde_json::from_slice::<E>(&event) {
            Err(err) => Err(("Runtime.UnmarshalError", err.to_string())),
            Ok(event) => match handler(event, invocation).await {
                Err(err) => Err(("Runtime.HandlerError", err.to_string())),
                Ok(response) => serde_json::to_vec(&response)
                    .map_err(|err| ("Runtime.MarshalError", err.to_string())),
            },
        };
        let (path, error_type, body) = match outcome {
            Ok(body) => (
                format!("/2018-06-01/runtime/invocation/{id}/response"),
                None,
                body,
            ),
            Err((error_type, message)) => {
                tracing::error!(error_type, error = %message, "invocation failed");
                let body = serde_json::json!({"errorType": error_type, "errorMessage": message});
                (
                    format!("/2018-06-01/runtime/invocation/{id}/error"),
                    Some(error_type),
                    body.to_string().into_bytes(),
                )
            }
        };
        let extra: &[(&str, &str)] = match error_type {
            Some(error_type) => &[("lambda-runtime-function-error-type", error_type)],
            None => &[],
        };
        let (status, _, answer) = api
            .send(Method::POST, &path, extra, Bytes::from(body))
            .await?;
        if !status.is_success() {
            // 410: the invocation timed out meanwhile; 413: the response was too
            // large. Either way Lambda has answered the caller; the loop goes on.
            tracing::warn!(
                status = status.as_u16(),
                answer = %String::from_utf8_lossy(&answer),
                "Lambda Runtime API refused the invocation's result"
            );
        }
    }
}

/// A Runtime API answer: status, headers, body.
type Answer = (StatusCode, http::HeaderMap, Bytes);

/// One kept-alive HTTP/1.1 connection to the Runtime API, opened again when it closed.
struct Connection {
    address: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    /// Sends one request. A `GET` that fails on a kept-alive connection (closed by the
    /// other side as the request went out) is sent once more on a new one, as the
    /// pooled client `lambda_runtime` uses retries a request its pooled connection
    /// dropped; a `POST` is not repeated.
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Answer, RuntimeApiError> {
        let build = || {
            let mut request = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(header::HOST, &self.address);
            if !body.is_empty() {
                request = request.header(header::CONTENT_TYPE, "application/json");
            }
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            request.body(Full::new(body.clone()))
        };
        let request = build()?;
        let kept = self.sender.take().filter(|sender| !sender.is_closed());
        let reused = kept.is_some();
        let sender = match kept {
            Some(sender) => sender,
            None => self.connect().await?,
        };
        match Self::exchange(sender, request).await {
            Err(err) if reused && method == Method::GET => {
                tracing::debug!(error = %err, "Runtime API connection dropped; sending again on a new one");
                let sender = self.connect().await?;
                let (sender, answer) = Self::exchange(sender, build()?).await?;
                self.sender = Some(sender);
                Ok(answer)
            }
            Err(err) => Err(err.into()),
            Ok((sender, answer)) => {
                self.sender = Some(sender);
                Ok(answer)
            }
        }
    }

    /// One request and its whole answer on `sender`, which is handed back for reuse.
    async fn exchange(
        mut sender: SendRequest<Full<Bytes>>,
        request: Request<Full<Bytes>>,
    ) -> Result<(SendRequest<Full<Bytes>>, Answer), hyper::Error> {
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok((sender, (parts.status, parts.headers, body)))
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, RuntimeApiError> {
        let connect = |source| RuntimeApiError::Connect {
            address: self.address.clone(),
            source,
        };
        let stream = tokio::net::TcpStream::connect(&self.address)
            .await
            .map_err(connect)?;
        stream.set_nodelay(true).map_err(connect)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::warn!(error = %err, "Lambda Runtime API connection closed");
            }
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::VecDeque, sync::Arc};

    use axum::{
        Router,
        extract::{Path, State},
        http::HeaderMap,
        routing::{get, post},
    };

    use super::*;

    /// What came back for one invocation: request id, `response` or `error`, the
    /// error type header, the body.
    type Reported = (String, String, Option<String>, serde_json::Value);

    /// A Runtime API on loopback: hands out `events`, records what comes back, and
    /// answers `/next` with a 500 once the events run out (which ends the loop).
    #[derive(Debug, Default)]
    struct Fake {
        events: Mutex<VecDeque<(&'static str, &'static str)>>,
        results: Mutex<Vec<Reported>>,
    }

    async fn next(State(fake): State<Arc<Fake>>) -> axum::response::Response {
        use axum::response::IntoResponse;
        let event = fake.events.lock().expect("events").pop_front();
        match event {
            Some((id, body)) => (
                [
                    ("lambda-runtime-aws-request-id", id),
                    ("lambda-runtime-deadline-ms", "1700000003000"),
                    (
                        "lambda-runtime-trace-id",
                        "Root=1-5759e988-bd862e3fe1be46a994272793",
                    ),
                ],
                body,
            )
                .into_response(),
            None => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "no more").into_response(),
        }
    }

    async fn result(
        State(fake): State<Arc<Fake>>,
        Path((id, kind)): Path<(String, String)>,
        headers: HeaderMap,
        body: String,
    ) -> axum::http::StatusCode {
        let error_type = headers
            .get("lambda-runtime-function-error-type")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
        fake.results
            .lock()
            .expect("results")
            .push((id, kind, error_type, body));
        axum::http::StatusCode::ACCEPTED
    }

    #[derive(Debug, serde::Deserialize)]
    struct Event {
        n: i64,
    }

    #[tokio::test]
    async fn responses_handler_errors_and_unreadable_events_are_reported() {
        let fake = Arc::new(Fake::default());
        fake.events.lock().expect("events").extend([
            ("a", r#"{"n":1}"#),
            ("b", r#"{"n":-1}"#),
            ("c", "not json"),
        ]);
        let app = Router::new()
            .route(NEXT, get(next))
            .route("/2018-06-01/runtime/invocation/{id}/{kind}", post(result))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });

        let ended = run_at(
            &address,
            |event: Event, invocation: Invocation| async move {
                if event.n < 0 {
                    return Err("negative".into());
                }
                Ok(serde_json::json!({
                    "double": event.n * 2,
                    "id": invocation.request_id,
                    "deadline": invocation.deadline_ms,
                    "trace": current_trace_id(),
                }))
            },
        )
        .await;
        server.abort();
        assert!(
            matches!(ended, Err(RuntimeApiError::Next { status }) if status == 500),
            "{ended:?}"
        );
        let results = fake.results.lock().expect("results").clone();
        assert_eq!(
            results,
            [
                (
                    "a".to_owned(),
                    "response".to_owned(),
                    None,
                    serde_json::json!({
                        "double": 2,
                        "id": "a",
                        "deadline": 1_700_000_003_000_u64,
                        "trace": "Root=1-5759e988-bd862e3fe1be46a994272793",
                    })
                ),
                (
                    "b".to_owned(),
                    "error".to_owned(),
                    Some("Runtime.HandlerError".to_owned()),
                    serde_json::json!({"errorType": "Runtime.HandlerError", "errorMessage": "negative"})
                ),
                (
                    "c".to_owned(),
                    "error".to_owned(),
                    Some("Runtime.UnmarshalError".to_owned()),
                    results[2].3.clone()
                ),
            ]
        );
        assert_eq!(results[2].3["errorType"], "Runtime.UnmarshalError");
        assert!(
            results[2].3["errorMessage"]
                .as_str()
                .is_some_and(|message| message.contains("expected ident")),
            "{}",
            results[2].3
        );
    }

    /// Reads one HTTP/1.1 request (head and `Content-Length` body) and returns its
    /// request line; `None` when the client closed the connection.
    async fn read_request(
        stream: &mut tokio::io::BufReader<tokio::net::TcpStream>,
    ) -> Option<String> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt};
        let mut request_line = String::new();
        if stream.read_line(&mut request_line).await.ok()? == 0 {
            return None;
        }
        let mut length = 0;
        loop {
            let mut line = String::new();
            stream.read_line(&mut line).await.ok()?;
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().ok()?;
            }
        }
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await.ok()?;
        Some(request_line.trim_end().to_owned())
    }

    #[tokio::test]
    async fn a_next_dropped_by_a_kept_alive_connection_is_sent_again_on_a_new_one() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let server = tokio::spawn(async move {
            let mut seen = Vec::new();
            // First connection: one invocation, then the next `/next` is read and the
            // connection closed without an answer.
            let (stream, _) = listener.accept().await.expect("accept");
            let mut stream = tokio::io::BufReader::new(stream);
            seen.push(read_request(&mut stream).await.expect("next"));
            let event = r#"{"n":1}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\nlambda-runtime-aws-request-id: a\r\ncontent-length: {}\r\n\r\n{event}",
                event.len()
            );
            stream.write_all(answer.as_bytes()).await.expect("write");
            seen.push(read_request(&mut stream).await.expect("response"));
            stream
                .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
                .await
                .expect("write");
            seen.push(read_request(&mut stream).await.expect("second next"));
            drop(stream);
            // Second connection: the repeated `/next`, answered with a 500 to end the loop.
            let (stream, _) = listener.accept().await.expect("accept again");
            let mut stream = tokio::io::BufReader::new(stream);
            seen.push(read_request(&mut stream).await.expect("repeated next"));
            stream
                .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n")
                .await
                .expect("write");
            seen
        });
        let ended = run_at(&address, |event: Event, _| async move {
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(event.n)
        })
        .await;
        assert!(
            matches!(ended, Err(RuntimeApiError::Next { status }) if status == 500),
            "{ended:?}"
        );
        let next = format!("GET {NEXT} HTTP/1.1");
        assert_eq!(
            server.await.expect("server"),
            [
                next.clone(),
                "POST /2018-06-01/runtime/invocation/a/response HTTP/1.1".to_owned(),
                next.clone(),
                next,
            ]
        );
    }

    #[tokio::test]
    async fn without_a_runtime_api_there_is_nothing_to_run() {
        let refused = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("address").to_string()
        };
        let ended = run_at(&refused, |_: Event, _| async {
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .await;
        assert!(
            matches!(ended, Err(RuntimeApiError::Connect { .. })),
            "{ended:?}"
        );
    }
}
