//! One measured function process under a minimal Lambda Runtime API.
//!
//! Each process gets its own Runtime API listener on loopback (TCP_NODELAY) and is
//! driven one invocation at a time, the way one Lambda execution environment is:
//!
//! - **init**: from spawning the process to its first `GET /next`, and the CPU time
//!   it used until then;
//! - **invocation**: from handing the event to the waiting `/next` to receiving its
//!   `/response` (or `/error`); its CPU time is measured from the hand-over to the
//!   process's next `/next`, so work done after the response (log flushing, the
//!   runtime's own bookkeeping) is counted too.
//!
//! CPU time is the sum of `/proc/<pid>/task/*/schedstat`'s on-CPU nanoseconds over the
//! process's threads; peak RSS is `VmHWM` from `/proc/<pid>/status`.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    serve::ListenerExt,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
    sync::{Mutex, mpsc, oneshot},
    task::JoinHandle,
};

/// How long init or one invocation may take before the run gives up on the process.
const LIMIT: Duration = Duration::from_secs(30);

/// How to start one variant's process.
#[derive(Debug, Clone)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The whole environment (nothing is inherited) except `AWS_LAMBDA_RUNTIME_API`.
    pub environment: BTreeMap<String, String>,
}

/// Why a measured process failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("could not start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("could not listen on loopback: {0}")]
    Listen(#[source] std::io::Error),
    #[error("{0} did not ask for an invocation within {LIMIT:?}; its last output: {1}")]
    NoNext(String, String),
    #[error("{0} did not answer its invocation within {LIMIT:?}; its last output: {1}")]
    NoResponse(String, String),
    #[error("{0} reported an init error: {1}")]
    InitError(String, String),
}

/// What the process answered.
#[derive(Debug, Clone)]
pub struct Answer {
    /// `false` when the function posted to `/error`.
    pub ok: bool,
    pub payload: Vec<u8>,
}

/// One invocation's measurements.
#[derive(Debug, Clone, Copy)]
pub struct Invocation {
    pub duration: Duration,
    pub cpu: Duration,
}

enum Posted {
    Response(Vec<u8>),
    Error(Vec<u8>),
    InitError(Vec<u8>),
}

struct Event {
    request_id: String,
    payload: Vec<u8>,
}

#[derive(Clone)]
struct Channels {
    nexts: mpsc::Sender<oneshot::Sender<Event>>,
    posted: mpsc::Sender<Posted>,
    function_arn: Arc<str>,
}

/// A running, measured process; killed when dropped.
pub struct MeasuredProcess {
    name: String,
    child: Child,
    pid: u32,
    server: JoinHandle<()>,
    nexts: mpsc::Receiver<oneshot::Sender<Event>>,
    posted: mpsc::Receiver<Posted>,
    waiting: Option<oneshot::Sender<Event>>,
    output: Arc<Mutex<Vec<String>>>,
    sequence: u64,
    /// Process start → first `/next`.
    pub init: Duration,
    /// CPU time used during init.
    pub init_cpu: Duration,
}

impl std::fmt::Debug for MeasuredProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeasuredProcess")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl Drop for MeasuredProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        self.server.abort();
    }
}

impl MeasuredProcess {
    /// Starts the process and waits for its first `/next` (the end of init).
    pub async fn start(name: &str, launch: &Launch) -> Result<MeasuredProcess, ProcessError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(ProcessError::Listen)?;
        let address = listener.local_addr().map_err(ProcessError::Listen)?;
        let listener = listener.tap_io(|stream| {
            let _ = stream.set_nodelay(true);
        });
        let (nexts_tx, nexts) = mpsc::channel(1);
        let (posted_tx, posted) = mpsc::channel(1);
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/error",
                post(invocation_error),
            )
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(Channels {
                nexts: nexts_tx,
                posted: posted_tx,
                function_arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{name}")
                    .into(),
            });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let mut command = Command::new(&launch.program);
        command
            .args(&launch.args)
            .env_clear()
            .envs(&launch.environment)
            .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = command.spawn().map_err(|source| ProcessError::Spawn {
            program: launch.program.display().to_string(),
            source,
        })?;
        let pid = child.id().unwrap_or_default();
        let output = Arc::new(Mutex::new(Vec::new()));
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(keep_tail(stdout, output.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(keep_tail(stderr, output.clone()));
        }
        let mut process = MeasuredProcess {
            name: name.to_owned(),
            child,
            pid,
            server,
            nexts,
            posted,
            waiting: None,
            output,
            sequence: 0,
            init: Duration::ZERO,
            init_cpu: Duration::ZERO,
        };
        let first = tokio::select! {
            next = tokio::time::timeout(LIMIT, process.nexts.recv()) => next.ok().flatten(),
            posted = process.posted.recv() => {
                let detail = match posted {
                    Some(Posted::InitError(body)) => String::from_utf8_lossy(&body).into_owned(),
                    _ => "no detail".to_owned(),
                };
                return Err(ProcessError::InitError(process.name.clone(), detail));
            }
        };
        process.init = started.elapsed();
        let Some(first) = first else {
            return Err(ProcessError::NoNext(
                process.name.clone(),
                process.tail().await,
            ));
        };
        process.init_cpu = cpu_time(pid);
        process.waiting = Some(first);
        Ok(process)
    }

    /// Runs one invocation and measures it.
    pub async fn invoke(&mut self, payload: Vec<u8>) -> Result<(Answer, Invocation), ProcessError> {
        let waiter = match self.waiting.take() {
            Some(waiter) => waiter,
            None => self.next().await?,
        };
        self.sequence += 1;
        let cpu_before = cpu_time(self.pid);
        let started = Instant::now();
        let _ = waiter.send(Event {
            request_id: format!("bench-{}-{}", self.pid, self.sequence),
            payload,
        });
        let posted = tokio::time::timeout(LIMIT, self.posted.recv()).await;
        let duration = started.elapsed();
        let answer = match posted {
            Ok(Some(Posted::Response(payload))) => Answer { ok: true, payload },
            Ok(Some(Posted::Error(payload) | Posted::InitError(payload))) => {
                Answer { ok: false, payload }
            }
            _ => {
                return Err(ProcessError::NoResponse(
                    self.name.clone(),
                    self.tail().await,
                ));
            }
        };
        let waiter = self.next().await?;
        let cpu = cpu_time(self.pid).saturating_sub(cpu_before);
        self.waiting = Some(waiter);
        Ok((answer, Invocation { duration, cpu }))
    }

    /// Peak resident set so far, in KiB (`VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix("VmHWM:"))
                    .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// The last lines the process printed (for error messages and checks).
    pub async fn tail(&self) -> String {
        self.output.lock().await.join("\n")
    }

    /// Stops the process.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        self.server.abort();
    }

    async fn next(&mut self) -> Result<oneshot::Sender<Event>, ProcessError> {
        match tokio::time::timeout(LIMIT, self.nexts.recv()).await {
            Ok(Some(waiter)) => Ok(waiter),
            _ => Err(ProcessError::NoNext(self.name.clone(), self.tail().await)),
        }
    }
}

/// On-CPU time of every thread of `pid` so far.
pub fn cpu_time(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

async fn keep_tail(stream: impl AsyncRead + Unpin, output: Arc<Mutex<Vec<String>>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut output = output.lock().await;
        if output.len() == 40 {
            output.remove(0);
        }
        output.push(line);
    }
}

async fn next(State(channels): State<Channels>) -> Response {
    let (tx, rx) = oneshot::channel();
    if channels.nexts.send(tx).await.is_err() {
        return StatusCode::GONE.into_response();
    }
    let Ok(event) = rx.await else {
        return StatusCode::GONE.into_response();
    };
    let deadline = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        + LIMIT.as_millis();
    let mut headers = HeaderMap::new();
    let mut insert = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    insert("lambda-runtime-aws-request-id", &event.request_id);
    insert("lambda-runtime-deadline-ms", &deadline.to_string());
    insert(
        "lambda-runtime-invoked-function-arn",
        &channels.function_arn,
    );
    insert(
        "lambda-runtime-trace-id",
        "Root=1-00000000-000000000000000000000000;Sampled=0",
    );
    insert("content-type", "application/json");
    (headers, event.payload).into_response()
}

async fn response(
    State(channels): State<Channels>,
    Path(_id): Path<String>,
    body: Bytes,
) -> StatusCode {
    let _ = channels.posted.send(Posted::Response(body.to_vec())).await;
    StatusCode::ACCEPTED
}

async fn invocation_error(
    State(channels): State<Channels>,
    Path(_id): Path<String>,
    body: Bytes,
) -> StatusCode {
    let _ = channels.posted.send(Posted::Error(body.to_vec())).await;
    StatusCode::ACCEPTED
}

async fn init_error(State(channels): State<Channels>, body: Bytes) -> StatusCode {
    let _ = channels.posted.send(Posted::InitError(body.to_vec())).await;
    StatusCode::ACCEPTED
}
