//! A counting proxy in front of the emulator: every AWS call a test makes through it is
//! forwarded unchanged and counted by service and operation, so "AWS calls per event"
//! is measured at the endpoint, not inferred from the code.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use axum::{
    body::{Body, to_bytes},
    extract::{Request, State},
    response::Response,
};

type Counts = Arc<Mutex<BTreeMap<String, usize>>>;

#[derive(Debug, Clone)]
struct Upstream {
    base: String,
    http: reqwest::Client,
    counts: Counts,
}

/// The proxy; stopped when dropped.
#[derive(Debug)]
pub struct CallCounter {
    endpoint: String,
    counts: Counts,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CallCounter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CallCounter {
    /// Listens on a free loopback port and forwards to `upstream` (the emulator).
    pub async fn start(upstream: &str) -> CallCounter {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("a loopback port");
        let endpoint = format!("http://{}", listener.local_addr().expect("bound address"));
        let counts = Counts::default();
        let state = Upstream {
            base: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            counts: counts.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        CallCounter {
            endpoint,
            counts,
            task,
        }
    }

    /// Where to point the SDK.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Calls counted since the last `take`, as `service:Operation` → count.
    pub fn take(&self) -> BTreeMap<String, usize> {
        std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// `service:Operation` from a signed request: the service from the SigV4 credential
/// scope, the operation from `X-Amz-Target` (JSON protocols) or `Action=` (query
/// protocol), or the method for REST services (S3).
fn operation(request: &Request, body: &[u8]) -> String {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let service = header("authorization")
        .split("Credential=")
        .nth(1)
        .and_then(|scope| scope.split('/').nth(3))
        .unwrap_or("unknown")
        .to_owned();
    let target = header("x-amz-target");
    let operation = if let Some((_, op)) = target.rsplit_once('.') {
        op.to_owned()
    } else if let Some(action) = form_action(body) {
        action
    } else {
        request.method().as_str().to_owned()
    };
    format!("{service}:{operation}")
}

fn form_action(body: &[u8]) -> Option<String> {
    std::str::from_utf8(body)
        .ok()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("Action=").map(str::to_owned))
}

async fn forward(State(upstream): State<Upstream>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, 64 * 1024 * 1024).await.unwrap_or_default();
    let key = operation(&Request::from_parts(parts.clone(), Body::empty()), &body);
    *upstream
        .counts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default() += 1;
    let url = format!(
        "{}{}",
        upstream.base,
        parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/")
    );
    let mut outgoing = upstream.http.request(parts.method.clone(), url).body(body);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            outgoing = outgoing.header(name, value);
        }
    }
    match outgoing.send().await {
        Ok(response) => {
            let mut builder = Response::builder().status(response.status());
            for (name, value) in response.headers() {
                if name != "content-length" && name != "transfer-encoding" {
                    builder = builder.header(name, value);
                }
            }
            let bytes = response.bytes().await.unwrap_or_default();
            builder
                .body(Body::from(bytes))
                .unwrap_or_else(|_| Response::new(Body::empty()))
        }
        Err(_) => Response::builder()
            .status(502)
            .body(Body::empty())
            .unwrap_or_else(|_| Response::new(Body::empty())),
    }
}
