//! A loopback proxy in front of moto that makes DynamoDB writes atomic.
//!
//! moto's server handles requests on threads and its DynamoDB backend takes no lock, so
//! two concurrent conditional writes can both pass `attribute_not_exists` (seen once in
//! a 32-way claim race: two winners). Real DynamoDB evaluates each conditional write
//! atomically. The proxy forwards every request unchanged and lets one DynamoDB request
//! through at a time, which restores that guarantee (more strictly than DynamoDB, whose
//! atomicity is per item). Other services pass through concurrently, so SQS long polls
//! do not block anything.

use std::{net::SocketAddr, sync::Arc, thread::JoinHandle};

use axum::{
    body::{Body, to_bytes},
    extract::{Request, State},
    response::Response,
};
use tokio::sync::{Mutex, oneshot};

#[derive(Debug, Clone)]
struct Upstream {
    base: String,
    http: reqwest::Client,
    dynamodb: Arc<Mutex<()>>,
}

/// The running proxy; stopped (its thread joined) when dropped.
#[derive(Debug)]
pub struct AtomicProxy {
    address: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl AtomicProxy {
    /// Binds a free loopback port and forwards to `upstream` on a thread of its own
    /// (callers may be synchronous code or any runtime).
    pub fn start(upstream: &str) -> std::io::Result<AtomicProxy> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let state = Upstream {
            base: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .tcp_nodelay(true)
                .build()
                .unwrap_or_else(|_| reqwest::Client::new()),
            dynamodb: Arc::new(Mutex::new(())),
        };
        let (shutdown, stopped) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("emulator-proxy".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let app = axum::Router::new().fallback(forward).with_state(state);
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await;
                });
                runtime.shutdown_background();
            })?;
        Ok(AtomicProxy {
            address,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for AtomicProxy {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn forward(State(upstream): State<Upstream>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, 64 * 1024 * 1024).await else {
        return status(413);
    };
    let is_dynamodb = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|target| target.starts_with("DynamoDB_"));
    let _turn = if is_dynamodb {
        Some(upstream.dynamodb.clone().lock_owned().await)
    } else {
        None
    };
    let url = format!(
        "{}{}",
        upstream.base,
        parts.uri.path_and_query().map_or("/", |pq| pq.as_str())
    );
    let mut outgoing = upstream.http.request(parts.method.clone(), url).body(body);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" && name != "connection" {
            outgoing = outgoing.header(name, value);
        }
    }
    let Ok(response) = outgoing.send().await else {
        return status(502);
    };
    let mut builder = Response::builder().status(response.status());
    for (name, value) in response.headers() {
        if name != "content-length" && name != "transfer-encoding" && name != "connection" {
            builder = builder.header(name, value);
        }
    }
    let Ok(bytes) = response.bytes().await else {
        return status(502);
    };
    builder
        .body(Body::from(bytes))
        .unwrap_or_else(|_| status(502))
}

fn status(code: u16) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() =
        axum::http::StatusCode::from_u16(code).unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
    response
}
