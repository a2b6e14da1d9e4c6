//! The Lambda Runtime API emulator and the function processes it feeds: the one the
//! local stack runs its functions under, and the one `junction-bench` measures them
//! (and the Node.js and Python references) with.
//!
//! Each function runs as one real process (its cargo binary, or an interpreter and
//! a script) started with `AWS_LAMBDA_RUNTIME_API` pointing at a small server here that
//! speaks the [Runtime API](https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html):
//! `GET /2018-06-01/runtime/invocation/next`, `POST …/{id}/response`, `POST …/{id}/error`
//! and `POST /2018-06-01/runtime/init/error`. Like one Lambda execution environment, a
//! process handles one invocation at a time; callers queue behind each other.
//!
//! Every process generation gets its own listener, so when a process dies its pending
//! `/next` (and any invocation it held) is dropped with it instead of swallowing the next
//! invocation. A process that exits is started again on the next invocation (Lambda
//! starts a new environment the same way); a timed-out invocation kills its process.
//!
//! The emulator measures what the benchmarks need:
//!
//! - **init**: from spawning the process to its first `/next`, and the CPU time it used
//!   until then ([`FunctionRuntime::wait_initialized`]);
//! - **invocation**: from handing the event to the waiting `/next` to its `/response`
//!   (or `/error`); its CPU time runs from the hand-over to the process's next `/next`,
//!   so work done after the response (log flushing, the runtime's own bookkeeping) is
//!   counted too ([`FunctionRuntime::invoke_measured`]);
//! - **peak RSS**: `VmHWM` of `/proc/<pid>/status`, sampled while the process runs and
//!   when it stops.
//!
//! CPU time is the sum of `/proc/<pid>/task/*/schedstat`'s on-CPU nanoseconds (user and
//! kernel) over the process's threads. The listeners set `TCP_NODELAY`, so small
//! responses are not held back by Nagle's algorithm against the runtime's delayed ACKs.
//!
//! What the processes write is echoed to ours line by line (unless the spec says not
//! to: the bench prints its report there), kept in memory (the newest
//! [`LOG_LINES_KEPT`] lines, for tests that look at recent lines) and kept in full on
//! disk in the function's [`OutputArchive`], every byte of stdout and stderr of every
//! process generation and every error document it posted, for the leak scan at the end
//! of a run ([`crate::leaks`]).

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex as StdMutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    serve::ListenerExt as _,
};
use serde::Serialize;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader, BufWriter},
    process::{Child, Command},
    sync::{Mutex, Notify, mpsc, oneshot, watch},
    task::JoinHandle,
};

use crate::leaks::{LeakReport, MAX_OUTPUT_BYTES, NeedleSet, OutputArchive};

/// How long a process may take from start to its first `/next` before an invocation
/// waiting for it gives up. Lambda allows 10 s; debug builds on a busy laptop get more.
pub const INIT_LIMIT: Duration = Duration::from_secs(30);

/// How many invocations may wait for a busy function before callers block on sending.
const QUEUE_DEPTH: usize = 64;

/// Everything needed to run one function of the stack.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// The template's logical id, used as the log prefix and in summaries.
    pub logical_id: String,
    /// The physical function name (`AWS_LAMBDA_FUNCTION_NAME`).
    pub name: String,
    /// The ARN passed as `Lambda-Runtime-Invoked-Function-Arn`.
    pub arn: String,
    /// The built binary (or the interpreter of a script runtime).
    pub executable: PathBuf,
    /// Arguments after the executable: none for a Lambda `bootstrap`; the handler
    /// script for the bench's Node.js and Python references.
    pub args: Vec<String>,
    /// The function's configured timeout.
    pub timeout: Duration,
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` (not enforced locally).
    pub memory_mb: u64,
    /// The full environment of the process except `AWS_LAMBDA_RUNTIME_API`, which is
    /// set per process: the stack's variables, the Lambda ones and the AWS endpoint ones.
    /// Nothing else is inherited.
    pub environment: BTreeMap<String, String>,
    /// Whether each line the processes write is echoed to our stdout, prefixed with the
    /// logical id (the local stack's console). The output is kept either way.
    pub echo: bool,
}

/// Why an invocation did not produce a response payload.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvokeError {
    /// The function reported an error (`/error`): Lambda's "function error".
    #[error("function error {error_type}: {message}")]
    Function {
        error_type: String,
        message: String,
        /// The error document as the runtime posted it.
        payload: Vec<u8>,
    },
    /// The function did not answer within its timeout; its process was stopped.
    #[error("the invocation timed out after {0:?}")]
    Timeout(Duration),
    /// The process failed to initialize or exited before answering.
    #[error("the runtime exited or failed to initialize: {0}")]
    RuntimeExited(String),
    /// The local stack is shutting down.
    #[error("the local stack is shutting down")]
    ShuttingDown,
}

/// A process's init, as [`FunctionRuntime::wait_initialized`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Init {
    /// Process start → its first `/next`.
    pub duration: Duration,
    /// The CPU time the process used until then.
    pub cpu: Duration,
}

/// One invocation, as [`FunctionRuntime::invoke_measured`] reports it.
#[derive(Debug, Clone)]
pub struct MeasuredInvocation {
    /// The response payload, or the error the function posted
    /// ([`InvokeError::Function`]).
    pub answer: Result<Vec<u8>, InvokeError>,
    /// Hand-over of the event → the response (or error) posted.
    pub duration: Duration,
    /// The CPU time the process used from the hand-over to its next `/next`.
    pub cpu: Duration,
}

/// What the runtime posted for an invocation, and how long after the hand-over.
#[derive(Debug)]
struct Answered {
    answer: Result<Vec<u8>, InvokeError>,
    duration: Duration,
}

/// One invocation waiting for, or held by, the runtime.
#[derive(Debug)]
struct Invocation {
    request_id: String,
    payload: Vec<u8>,
    /// Signalled when the runtime picks the invocation up; closed means the caller
    /// gave up and the invocation must be skipped.
    picked: oneshot::Sender<()>,
    done: oneshot::Sender<Answered>,
    /// Given the invocation's CPU time when the process asks for its next invocation.
    settled: oneshot::Sender<Duration>,
}

#[derive(Debug)]
struct InFlight {
    done: oneshot::Sender<Answered>,
    settled: oneshot::Sender<Duration>,
    started: Instant,
    cpu_at_pickup: Duration,
}

/// An answered invocation whose CPU time ends at the process's next `/next`.
#[derive(Debug)]
struct Settling {
    settled: oneshot::Sender<Duration>,
    cpu_at_pickup: Duration,
}

#[derive(Debug, Default)]
struct ProcessInfo {
    generation: u64,
    pid: Option<u32>,
    spawned_at: Option<Instant>,
    /// Set at the process's first `/next`.
    init: Option<Init>,
    init_error: Option<String>,
    /// The process of `generation` exited (or could not start); cleared by the next.
    ended: bool,
    settling: Option<Settling>,
}

/// What the emulator measured for one function.
#[derive(Debug, Default, Clone)]
struct Measurements {
    init: Vec<Duration>,
    invocations: Vec<Duration>,
    errors: u64,
    timeouts: u64,
    /// Work the function answered as failed without an invocation error: SQS records it
    /// reported in `batchItemFailures`, HTTP requests it answered with a 5xx.
    failed: u64,
    peak_rss_kib: Option<u64>,
}

#[derive(Debug)]
struct Shared {
    spec: FunctionSpec,
    pending_tx: mpsc::Sender<Invocation>,
    pending_rx: Mutex<mpsc::Receiver<Invocation>>,
    /// One invocation at a time per process, in arrival order (tokio's mutex is fair).
    turn: Mutex<()>,
    in_flight: StdMutex<HashMap<String, InFlight>>,
    process: StdMutex<ProcessInfo>,
    measurements: StdMutex<Measurements>,
    /// An invocation arrived: start the process if it is not running.
    wake: Notify,
    /// The process initialized, reported an init error, or ended.
    changed: Notify,
    /// Stop the current process (after a timeout); the next invocation starts another.
    restart: Notify,
    /// The newest [`LOG_LINES_KEPT`] lines the function's processes wrote (stdout and
    /// stderr), for tests that check what a deployment would ship to CloudWatch Logs.
    logs: Arc<StdMutex<std::collections::VecDeque<String>>>,
    /// Every byte every process wrote, on disk: what the leak scan reads.
    output: Arc<OutputArchive>,
    /// The tasks copying each process's stdout and stderr: (process, stream, task).
    readers: StdMutex<Vec<(u64, &'static str, JoinHandle<()>)>>,
}

/// Lines of output kept in memory per function (the oldest are dropped beyond this; the
/// archive on disk keeps them all).
pub const LOG_LINES_KEPT: usize = 100_000;

/// The longest line kept in memory and echoed; the rest of a longer line is counted, and
/// kept only in the archive.
const MAX_LINE_KEPT: usize = 64 * 1024;

fn lock<T>(mutex: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One function: its process supervisor and the Runtime API it polls.
#[derive(Debug, Clone)]
pub struct FunctionRuntime {
    shared: Arc<Shared>,
}

impl FunctionRuntime {
    /// Starts the function's process (and its Runtime API listener) in the background.
    /// The process and listener stop when `shutdown` becomes true, or when the task
    /// holding the returned handle is dropped (the child is killed on drop).
    pub fn start(spec: FunctionSpec, shutdown: watch::Receiver<bool>) -> (Self, JoinHandle<()>) {
        let (pending_tx, pending_rx) = mpsc::channel(QUEUE_DEPTH);
        let spec_id = spec.logical_id.clone();
        let shared = Arc::new(Shared {
            spec,
            pending_tx,
            pending_rx: Mutex::new(pending_rx),
            turn: Mutex::new(()),
            in_flight: StdMutex::new(HashMap::new()),
            process: StdMutex::new(ProcessInfo::default()),
            measurements: StdMutex::new(Measurements::default()),
            wake: Notify::new(),
            changed: Notify::new(),
            restart: Notify::new(),
            logs: Arc::new(StdMutex::new(std::collections::VecDeque::new())),
            output: Arc::new(OutputArchive::new(&spec_id)),
            readers: StdMutex::new(Vec::new()),
        });
        let task = tokio::spawn(supervise(shared.clone(), shutdown));
        (FunctionRuntime { shared }, task)
    }

    /// The function's logical id.
    pub fn logical_id(&self) -> &str {
        &self.shared.spec.logical_id
    }

    /// The function's configuration.
    pub fn spec(&self) -> &FunctionSpec {
        &self.shared.spec
    }

    /// Every line the function's processes wrote so far (the newest
    /// [`LOG_LINES_KEPT`]): what CloudWatch Logs would receive.
    pub fn logs(&self) -> Vec<String> {
        lock(&self.shared.logs).iter().cloned().collect()
    }

    /// Waits, at most `limit`, until the output of every process so far has been read
    /// to its end, which comes when the process has exited and its pipes closed: call it
    /// after the stack stopped. A copy still running then is stopped and recorded, so
    /// the leak scan reports itself incomplete instead of missing what was not read.
    pub async fn finish_output(&self, limit: Duration) {
        let readers = std::mem::take(&mut *lock(&self.shared.readers));
        let deadline = tokio::time::Instant::now() + limit;
        for (generation, stream, mut reader) in readers {
            let problem = match tokio::time::timeout_at(deadline, &mut reader).await {
                Ok(Ok(())) => continue,
                Ok(Err(err)) => {
                    format!("copying the {stream} of process {generation} failed: {err}")
                }
                Err(_) => {
                    reader.abort();
                    format!(
                        "the {stream} of process {generation} was still open {limit:?} after the stop"
                    )
                }
            };
            self.shared.output.problem(problem);
        }
    }

    /// Scans everything the function's processes wrote for `needles` (blocking reads;
    /// after [`FunctionRuntime::finish_output`]).
    pub(crate) fn scan_output(&self, needles: &NeedleSet, report: &mut LeakReport) {
        self.shared
            .output
            .scan(&self.shared.spec.logical_id, needles, report);
    }

    /// The running process's id, if one is running.
    pub fn pid(&self) -> Option<u32> {
        lock(&self.shared.process).pid
    }

    /// True once the current process has asked for its first invocation.
    pub fn is_ready(&self) -> bool {
        lock(&self.shared.process).init.is_some()
    }

    /// Waits, at most `limit`, until the current process asks for its first invocation
    /// and returns its [`Init`]: the cold start the bench measures. Fails when the
    /// process reports an init error, exits or cannot start first.
    pub async fn wait_initialized(&self, limit: Duration) -> Result<Init, InvokeError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // Registered before the state is read, so a change in between is not missed.
            let changed = self.shared.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            {
                let process = lock(&self.shared.process);
                if let Some(init) = process.init {
                    return Ok(init);
                }
                if let Some(error) = &process.init_error {
                    return Err(InvokeError::RuntimeExited(error.clone()));
                }
                if process.ended {
                    return Err(InvokeError::RuntimeExited(
                        "the process exited before its first /next".into(),
                    ));
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(InvokeError::RuntimeExited(format!(
                    "no /next within {limit:?} of the start"
                )));
            }
        }
    }

    /// Counts `count` records or requests the function answered as failed in a response
    /// that was not an invocation error (partial batch failures, 5xx answers), so the
    /// summary table shows permanent failures, not only crashes.
    pub fn record_failed(&self, count: u64) {
        lock(&self.shared.measurements).failed += count;
    }

    /// Invokes the function synchronously (`RequestResponse`) with `payload` and returns
    /// its response payload as soon as the function posts it.
    pub async fn invoke(&self, payload: Vec<u8>) -> Result<Vec<u8>, InvokeError> {
        let _turn = self.shared.turn.lock().await;
        let (answered, _settled) = self.call(payload).await?;
        answered.answer
    }

    /// Invokes the function like [`FunctionRuntime::invoke`], then waits for the process
    /// to ask for its next invocation, so the invocation's CPU time is complete (and so
    /// is whatever it did after answering, such as its AWS calls) when this returns.
    pub async fn invoke_measured(
        &self,
        payload: Vec<u8>,
    ) -> Result<MeasuredInvocation, InvokeError> {
        let shared = &self.shared;
        let _turn = shared.turn.lock().await;
        let (answered, settled) = self.call(payload).await?;
        let cpu = match tokio::time::timeout(shared.spec.timeout, settled).await {
            Ok(Ok(cpu)) => cpu,
            Ok(Err(_)) => {
                return Err(InvokeError::RuntimeExited(
                    "the process exited after answering, before its next /next".into(),
                ));
            }
            Err(_) => {
                shared.restart.notify_one();
                return Err(InvokeError::RuntimeExited(format!(
                    "no /next within {:?} of the answer",
                    shared.spec.timeout
                )));
            }
        };
        Ok(MeasuredInvocation {
            answer: answered.answer,
            duration: answered.duration,
            cpu,
        })
    }

    /// Queues one invocation and waits for its answer; the caller holds the turn.
    async fn call(
        &self,
        payload: Vec<u8>,
    ) -> Result<(Answered, oneshot::Receiver<Duration>), InvokeError> {
        let shared = &self.shared;
        let (picked_tx, picked_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let (settled_tx, settled_rx) = oneshot::channel();
        let invocation = Invocation {
            request_id: request_id(),
            payload,
            picked: picked_tx,
            done: done_tx,
            settled: settled_tx,
        };
        shared
            .pending_tx
            .send(invocation)
            .await
            .map_err(|_| InvokeError::ShuttingDown)?;
        shared.wake.notify_one();
        match tokio::time::timeout(INIT_LIMIT, picked_rx).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                let reason = lock(&shared.process)
                    .init_error
                    .clone()
                    .unwrap_or_else(|| "the process exited before its first /next".into());
                return Err(InvokeError::RuntimeExited(reason));
            }
            Err(_) => {
                shared.restart.notify_one();
                return Err(InvokeError::RuntimeExited(format!(
                    "no /next within {INIT_LIMIT:?} of the invocation"
                )));
            }
        }
        match tokio::time::timeout(shared.spec.timeout, done_rx).await {
            Ok(Ok(answered)) => Ok((answered, settled_rx)),
            Ok(Err(_)) => Err(InvokeError::RuntimeExited(
                "the process exited during the invocation".into(),
            )),
            Err(_) => {
                lock(&shared.measurements).timeouts += 1;
                shared.restart.notify_one();
                eprintln!(
                    "[{}] invocation timed out after {:?}; stopping the process like Lambda does",
                    shared.spec.logical_id, shared.spec.timeout
                );
                Err(InvokeError::Timeout(shared.spec.timeout))
            }
        }
    }

    /// The measurements so far.
    pub fn summary(&self) -> FunctionSummary {
        let measurements = lock(&self.shared.measurements).clone();
        let process = lock(&self.shared.process);
        let mut sorted = measurements.invocations.clone();
        sorted.sort();
        let millis = |duration: Duration| duration.as_secs_f64() * 1000.0;
        let percentile = |p: f64| {
            let last = sorted.len().checked_sub(1)?;
            // Nearest rank; the index is bounded by `last`, so the cast cannot truncate.
            let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, last + 1) - 1;
            sorted.get(rank).copied().map(millis)
        };
        FunctionSummary {
            function: self.shared.spec.logical_id.clone(),
            pid: process.pid,
            starts: measurements.init.len(),
            first_init_ms: measurements.init.first().copied().map(millis),
            last_init_ms: measurements.init.last().copied().map(millis),
            invocations: measurements.invocations.len(),
            errors: measurements.errors,
            timeouts: measurements.timeouts,
            failed: measurements.failed,
            p50_ms: percentile(0.5),
            p95_ms: percentile(0.95),
            max_ms: sorted.last().copied().map(millis),
            peak_rss_kib: measurements.peak_rss_kib,
        }
    }
}

/// One function's measurements, as the summary table shows them.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct FunctionSummary {
    pub function: String,
    pub pid: Option<u32>,
    /// Processes started (cold starts).
    pub starts: usize,
    /// Process start → first `/next` of the first process.
    pub first_init_ms: Option<f64>,
    /// The same for the latest process.
    pub last_init_ms: Option<f64>,
    pub invocations: usize,
    /// Invocations answered with `/error`.
    pub errors: u64,
    pub timeouts: u64,
    /// Records or requests the function answered as failed ([`FunctionRuntime::record_failed`]).
    #[serde(default)]
    pub failed: u64,
    /// Invocation duration percentiles (pickup by `/next` → `/response` or `/error`).
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Peak resident set (`VmHWM`) over every process of the function.
    pub peak_rss_kib: Option<u64>,
}

/// Renders summaries as a fixed-width table.
pub fn summary_table(summaries: &[FunctionSummary]) -> String {
    let ms = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    let mut out = format!(
        "{:<32} {:>6} {:>10} {:>7} {:>6} {:>6} {:>8} {:>8} {:>8} {:>10}\n",
        "function",
        "starts",
        "init ms",
        "invokes",
        "errors",
        "failed",
        "p50 ms",
        "p95 ms",
        "max ms",
        "peak RSS"
    );
    for s in summaries {
        let rss = s.peak_rss_kib.map_or_else(
            || "-".to_owned(),
            |kib| format!("{:.1} MiB", kib as f64 / 1024.0),
        );
        out.push_str(&format!(
            "{:<32} {:>6} {:>10} {:>7} {:>6} {:>6} {:>8} {:>8} {:>8} {:>10}\n",
            s.function,
            s.starts,
            ms(s.first_init_ms),
            s.invocations,
            s.errors + s.timeouts,
            s.failed,
            ms(s.p50_ms),
            ms(s.p95_ms),
            ms(s.max_ms),
            rss
        ));
    }
    out
}

/// A Lambda-style request id (a random UUID v4).
pub fn request_id() -> String {
    let bytes: [u8; 16] = rand::random();
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-4{}-{:x}{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        (bytes[8] & 0x3) | 0x8,
        &hex[17..20],
        &hex[20..32]
    )
}

/// An X-Ray style trace header for `Lambda-Runtime-Trace-Id`.
fn trace_id() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let root: [u8; 12] = rand::random();
    let parent: [u8; 8] = rand::random();
    format!(
        "Root=1-{seconds:08x}-{};Parent={};Sampled=0",
        hex::encode(root),
        hex::encode(parent)
    )
}

/// Peak resident set size of a process in KiB (`VmHWM` of `/proc/<pid>/status`).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// On-CPU time of every thread of `pid` so far (user and kernel), from
/// `/proc/<pid>/task/*/schedstat`; zero when the process is gone.
fn cpu_time(pid: u32) -> Duration {
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

/// Per-process state of a Runtime API listener.
#[derive(Debug, Clone)]
struct Generation {
    shared: Arc<Shared>,
    number: u64,
}

async fn supervise(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let name = shared.spec.logical_id.clone();
    let mut generation = 0u64;
    loop {
        if *shutdown.borrow() {
            break;
        }
        generation += 1;
        let (mut child, server) = match spawn_process(&shared, generation).await {
            Ok(started) => started,
            Err(err) => {
                eprintln!("[{name}] could not start: {err}");
                {
                    let mut process = lock(&shared.process);
                    process.init_error = Some(format!("could not start: {err}"));
                    process.ended = true;
                }
                shared.changed.notify_waiters();
                fail_pending(&shared).await;
                if !wait_for_work(&shared, &mut shutdown).await {
                    break;
                }
                continue;
            }
        };
        let pid = child.id();
        let mut sampler = tokio::time::interval(Duration::from_millis(500));
        let outcome = loop {
            tokio::select! {
                status = child.wait() => break Exit::Exited(status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())),
                () = shared.restart.notified() => break Exit::Restart,
                _ = shutdown.changed() => break Exit::Shutdown,
                _ = sampler.tick() => sample_rss(&shared, pid),
            }
        };
        sample_rss(&shared, pid);
        if !matches!(outcome, Exit::Exited(_)) {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        server.abort();
        let _ = server.await;
        let was_initialized = {
            let mut process = lock(&shared.process);
            process.pid = None;
            process.ended = true;
            process.settling = None;
            process.init.take().is_some()
        };
        shared.changed.notify_waiters();
        // Whatever the dead process held fails now, like a crashed Lambda environment.
        lock(&shared.in_flight).clear();
        match outcome {
            Exit::Shutdown => break,
            Exit::Restart => {
                eprintln!("[{name}] process stopped; the next invocation starts a new one");
            }
            Exit::Exited(status) => {
                eprintln!("[{name}] process exited ({status})");
                if !was_initialized {
                    fail_pending(&shared).await;
                }
            }
        }
        if !wait_for_work(&shared, &mut shutdown).await {
            break;
        }
    }
    fail_pending(&shared).await;
}

#[derive(Debug)]
enum Exit {
    Exited(String),
    Restart,
    Shutdown,
}

fn sample_rss(shared: &Shared, pid: Option<u32>) {
    if let Some(kib) = pid.and_then(peak_rss_kib) {
        let mut measurements = lock(&shared.measurements);
        measurements.peak_rss_kib = Some(measurements.peak_rss_kib.map_or(kib, |old| old.max(kib)));
    }
}

/// Fails invocations queued for a process that could not start.
async fn fail_pending(shared: &Shared) {
    let mut pending = shared.pending_rx.lock().await;
    while let Ok(invocation) = pending.try_recv() {
        drop(invocation);
    }
}

/// Waits until an invocation is queued (true) or the stack shuts down (false).
async fn wait_for_work(shared: &Shared, shutdown: &mut watch::Receiver<bool>) -> bool {
    loop {
        let queued = shared.pending_tx.max_capacity() - shared.pending_tx.capacity();
        if queued > 0 {
            return true;
        }
        tokio::select! {
            () = shared.wake.notified() => {}
            _ = shutdown.changed() => return false,
        }
        if *shutdown.borrow() {
            return false;
        }
    }
}

async fn spawn_process(
    shared: &Arc<Shared>,
    generation: u64,
) -> std::io::Result<(Child, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(Generation {
            shared: shared.clone(),
            number: generation,
        });
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let spec = &shared.spec;
    let mut command = Command::new(&spec.executable);
    command
        .args(&spec.args)
        .env_clear()
        .envs(&spec.environment)
        .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // The process's state is replaced in the same critical section as the spawn, so its
    // first `/next` always finds its own generation, start time and pid.
    let spawned = {
        let mut process = lock(&shared.process);
        let spawned_at = Instant::now();
        let spawned = command.spawn();
        *process = ProcessInfo {
            generation,
            pid: spawned.as_ref().ok().and_then(Child::id),
            spawned_at: Some(spawned_at),
            ..ProcessInfo::default()
        };
        spawned
    };
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            server.abort();
            return Err(err);
        }
    };
    let mut readers = lock(&shared.readers);
    // Copies of earlier processes that ended are done with; the others are waited for.
    readers.retain(|(_, _, reader)| !reader.is_finished());
    let copy = |stream: &'static str, output: Box<dyn AsyncRead + Send + Unpin>| {
        let target = OutputCopy {
            name: spec.logical_id.clone(),
            echo: spec.echo,
            generation,
            stream,
            kept: shared.logs.clone(),
            archive: shared.output.clone(),
        };
        (generation, stream, tokio::spawn(target.run(output)))
    };
    if let Some(stdout) = child.stdout.take() {
        readers.push(copy("stdout", Box::new(stdout)));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.push(copy("stderr", Box::new(stderr)));
    }
    drop(readers);
    Ok((child, server))
}

/// Where one output stream of one process goes.
struct OutputCopy {
    /// The function's logical id, the prefix of each echoed line.
    name: String,
    /// Whether lines are echoed to our stdout ([`FunctionSpec::echo`]).
    echo: bool,
    generation: u64,
    stream: &'static str,
    kept: Arc<StdMutex<std::collections::VecDeque<String>>>,
    archive: Arc<OutputArchive>,
}

impl OutputCopy {
    /// Copies the stream until it ends: every byte to its file in the archive, each
    /// line (at most [`MAX_LINE_KEPT`] bytes of it) to our output, prefixed with the
    /// function's name, and to the kept lines. Reads bytes, not text, so output that is
    /// not UTF-8 neither ends the copy nor escapes the archive.
    async fn run(self, stream: impl AsyncRead + Unpin) {
        let mut file = self
            .archive
            .create(self.generation, self.stream)
            .await
            .map(|file| BufWriter::with_capacity(64 * 1024, file));
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        let mut cut = 0usize;
        loop {
            let chunk = match reader.fill_buf().await {
                Ok([]) => break,
                Ok(chunk) => chunk,
                Err(err) => {
                    self.not_kept(&format!("reading it failed: {err}"));
                    break;
                }
            };
            if let Some(open) = file.as_mut() {
                let written = if self.archive.reserve(chunk.len()) {
                    open.write_all(chunk).await.map_err(|err| err.to_string())
                } else {
                    Err(format!(
                        "the function wrote more than {MAX_OUTPUT_BYTES} bytes"
                    ))
                };
                if let Err(why) = written {
                    self.not_kept(&why);
                    file = None;
                }
            }
            for piece in chunk.split_inclusive(|byte| *byte == b'\n') {
                let (text, ends) = match piece.strip_suffix(b"\n") {
                    Some(text) => (text, true),
                    None => (piece, false),
                };
                let room = MAX_LINE_KEPT.saturating_sub(line.len()).min(text.len());
                line.extend_from_slice(&text[..room]);
                cut += text.len() - room;
                if ends {
                    self.emit(&mut line, &mut cut);
                }
            }
            let read = chunk.len();
            reader.consume(read);
        }
        if !line.is_empty() || cut > 0 {
            self.emit(&mut line, &mut cut);
        }
        if let Some(mut open) = file
            && let Err(err) = open.flush().await
        {
            self.not_kept(&err.to_string());
        }
    }

    /// Echoes and keeps one line (a carriage return before its newline dropped), then
    /// empties it.
    fn emit(&self, line: &mut Vec<u8>, cut: &mut usize) {
        let bytes = line.strip_suffix(b"\r").unwrap_or(line);
        let mut text = String::from_utf8_lossy(bytes).into_owned();
        if *cut > 0 {
            text.push_str(&format!(" [… {cut} more bytes]"));
        }
        if self.echo {
            println!("[{}] {text}", self.name);
        }
        keep_newest(&mut lock(&self.kept), text, LOG_LINES_KEPT);
        line.clear();
        *cut = 0;
    }

    fn not_kept(&self, why: &str) {
        self.archive.problem(format!(
            "the {} of process {} was not kept in full: {why}",
            self.stream, self.generation
        ));
    }
}

/// Appends `line` to `kept`, dropping the oldest line once `kept` holds `limit`.
pub(crate) fn keep_newest(
    kept: &mut std::collections::VecDeque<String>,
    line: String,
    limit: usize,
) {
    if kept.len() == limit {
        kept.pop_front();
    }
    kept.push_back(line);
}

/// The process of `generation` is waiting in `/next`: the end of its init the first
/// time, and of the previous invocation's CPU time after that.
fn arrived_at_next(generation: &Generation) {
    let shared = &generation.shared;
    let arrived = Instant::now();
    let mut process = lock(&shared.process);
    if process.generation != generation.number {
        return;
    }
    let cpu = process.pid.map(cpu_time).unwrap_or_default();
    if process.init.is_none() {
        let duration = process
            .spawned_at
            .map(|spawned_at| arrived.saturating_duration_since(spawned_at))
            .unwrap_or_default();
        process.init = Some(Init { duration, cpu });
        lock(&shared.measurements).init.push(duration);
        drop(process);
        shared.changed.notify_waiters();
    } else if let Some(settling) = process.settling.take() {
        let _ = settling
            .settled
            .send(cpu.saturating_sub(settling.cpu_at_pickup));
    }
}

/// Keeps the CPU reading taken at an answered invocation's hand-over until the process
/// asks for its next one.
fn settle_at_next(
    generation: &Generation,
    settled: oneshot::Sender<Duration>,
    cpu_at_pickup: Duration,
) {
    let mut process = lock(&generation.shared.process);
    if process.generation == generation.number {
        process.settling = Some(Settling {
            settled,
            cpu_at_pickup,
        });
    }
}

async fn next(State(generation): State<Generation>) -> Response {
    let shared = &generation.shared;
    arrived_at_next(&generation);
    loop {
        let received = shared.pending_rx.lock().await.recv().await;
        let Some(invocation) = received else {
            return (StatusCode::INTERNAL_SERVER_ERROR, "shutting down").into_response();
        };
        if invocation.picked.is_closed() {
            continue; // The caller gave up waiting for this process to start.
        }
        let timeout = shared.spec.timeout;
        let deadline_ms = SystemTime::now()
            .checked_add(timeout)
            .and_then(|deadline| deadline.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default()
            .as_millis();
        let pid = lock(&shared.process).pid;
        let cpu_at_pickup = pid.map(cpu_time).unwrap_or_default();
        lock(&shared.in_flight).insert(
            invocation.request_id.clone(),
            InFlight {
                done: invocation.done,
                settled: invocation.settled,
                started: Instant::now(),
                cpu_at_pickup,
            },
        );
        let _ = invocation.picked.send(());
        let mut headers = HeaderMap::new();
        let mut set = |name: &'static str, value: String| {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        };
        set("lambda-runtime-aws-request-id", invocation.request_id);
        set("lambda-runtime-deadline-ms", deadline_ms.to_string());
        set(
            "lambda-runtime-invoked-function-arn",
            shared.spec.arn.clone(),
        );
        set("lambda-runtime-trace-id", trace_id());
        set("content-type", "application/json".to_owned());
        return (StatusCode::OK, headers, invocation.payload).into_response();
    }
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        [("content-type", "application/json")],
        r#"{"status":"OK"}"#,
    )
        .into_response()
}

fn unknown_request(id: &str) -> Response {
    let body = serde_json::json!({
        "errorMessage": format!("Invalid request ID: {id}"),
        "errorType": "InvalidRequestID",
    });
    (
        StatusCode::BAD_REQUEST,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn response(
    State(generation): State<Generation>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let shared = &generation.shared;
    let Some(in_flight) = lock(&shared.in_flight).remove(&id) else {
        return unknown_request(&id);
    };
    let duration = in_flight.started.elapsed();
    lock(&shared.measurements).invocations.push(duration);
    settle_at_next(&generation, in_flight.settled, in_flight.cpu_at_pickup);
    let _ = in_flight.done.send(Answered {
        answer: Ok(body.to_vec()),
        duration,
    });
    accepted()
}

async fn error(
    State(generation): State<Generation>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shared = &generation.shared;
    let Some(in_flight) = lock(&shared.in_flight).remove(&id) else {
        return unknown_request(&id);
    };
    let duration = in_flight.started.elapsed();
    {
        let mut measurements = lock(&shared.measurements);
        measurements.invocations.push(duration);
        measurements.errors += 1;
    }
    settle_at_next(&generation, in_flight.settled, in_flight.cpu_at_pickup);
    shared
        .output
        .append(generation.number, "errors", &body)
        .await;
    let (error_type, message) = error_fields(&headers, &body);
    let _ = in_flight.done.send(Answered {
        answer: Err(InvokeError::Function {
            error_type,
            message,
            payload: body.to_vec(),
        }),
        duration,
    });
    accepted()
}

async fn init_error(
    State(generation): State<Generation>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    generation
        .shared
        .output
        .append(generation.number, "errors", &body)
        .await;
    let (error_type, message) = error_fields(&headers, &body);
    eprintln!(
        "[{}] init error {error_type}: {message}",
        generation.shared.spec.logical_id
    );
    {
        let mut process = lock(&generation.shared.process);
        if process.generation == generation.number {
            process.init_error = Some(format!("{error_type}: {message}"));
        }
    }
    generation.shared.changed.notify_waiters();
    accepted()
}

/// `errorType` and `errorMessage` from an error document, falling back to the
/// `Lambda-Runtime-Function-Error-Type` header.
fn error_fields(headers: &HeaderMap, body: &[u8]) -> (String, String) {
    let document: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let header_type = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|value| value.to_str().ok());
    let error_type = document["errorType"]
        .as_str()
        .or(header_type)
        .unwrap_or("Unhandled")
        .to_owned();
    let message = document["errorMessage"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    (error_type, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leaks::Needle;

    #[test]
    fn request_ids_look_like_uuid_v4() {
        let id = request_id();
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'), "{id}");
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{id}");
    }

    #[test]
    fn peak_rss_of_this_process_is_read() {
        let kib = peak_rss_kib(std::process::id()).expect("Linux /proc");
        assert!(kib > 0);
    }

    #[test]
    fn cpu_time_of_this_process_grows_with_its_work() {
        let pid = std::process::id();
        let before = cpu_time(pid);
        assert!(before > Duration::ZERO, "Linux /proc");
        let started = Instant::now();
        let mut spins = 0u64;
        while cpu_time(pid) < before + Duration::from_millis(20) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no CPU time counted after {spins} spins"
            );
            for _ in 0..100_000 {
                spins = std::hint::black_box(spins.wrapping_add(1));
            }
        }
        assert_eq!(cpu_time(u32::MAX), Duration::ZERO, "no such process");
    }

    /// A "function" that never asks for an invocation: each process writes its number
    /// and a planted value on stderr, then, on the same stream (the two pipes are read
    /// apart, so only a stream's own lines come after its first), more lines than are
    /// kept in memory; then on stdout a byte that is not UTF-8 and a line longer than is
    /// kept, each followed by another planted value, and exits; an invocation starts the
    /// next process.
    const LEAKY_FUNCTION: &str = r#"#!/bin/sh
n=$(cat "$COUNTER" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" > "$COUNTER"
echo "starting with planted-first-line-of-process-$n" >&2
yes "a clean line" | head -n 100010 >&2
printf 'a byte that is not UTF-8: \377\n'
echo "after it: planted-after-invalid-utf8"
head -c 200000 /dev/zero | tr '\0' 'a'
echo "planted-at-the-end-of-a-long-line"
echo "process $n done"
"#;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_byte_of_every_process_and_stream_is_scanned() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!(
            "junction-leaky-{}",
            hex::encode(rand::random::<[u8; 6]>())
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let script = dir.join("leaky.sh");
        std::fs::write(&script, LEAKY_FUNCTION).expect("script written");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .expect("executable");
        let environment = BTreeMap::from([
            ("PATH".to_owned(), std::env::var("PATH").unwrap_or_default()),
            (
                "COUNTER".to_owned(),
                dir.join("count").display().to_string(),
            ),
        ]);
        let spec = FunctionSpec {
            logical_id: "LeakyFunction".into(),
            name: "leaky".into(),
            arn: "arn:aws:lambda:us-east-1:123456789012:function:leaky".into(),
            executable: script,
            args: Vec::new(),
            timeout: Duration::from_secs(5),
            memory_mb: 128,
            environment,
            echo: false,
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (function, task) = FunctionRuntime::start(spec, shutdown_rx);
        let done = |n: u32| {
            let function = function.clone();
            async move {
                let line = format!("process {n} done");
                for _ in 0..600 {
                    if function.pid().is_none() && function.logs().contains(&line) {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                false
            }
        };
        assert!(done(1).await, "the first process ran and exited");
        let invoked = function.invoke(b"{}".to_vec()).await;
        assert!(
            matches!(invoked, Err(InvokeError::RuntimeExited(_))),
            "{invoked:?}"
        );
        assert!(done(2).await, "the invocation started a second process");

        shutdown.send_replace(true);
        task.await.expect("the supervisor ends");
        function.finish_output(Duration::from_secs(10)).await;
        let planted = [
            "planted-first-line-of-process-1",
            "planted-first-line-of-process-2",
            "planted-after-invalid-utf8",
            "planted-at-the-end-of-a-long-line",
        ];
        let logs = function.logs();
        assert!(
            !logs
                .iter()
                .any(|line| line.contains(planted[0]) || line.contains(planted[1])),
            "the first lines are no longer kept in memory"
        );
        assert!(
            logs.iter()
                .any(|line| line.len() < 70_000 && line.ends_with(" more bytes]")),
            "the long line is kept cut short"
        );
        let mut needles: Vec<Needle> = planted
            .iter()
            .map(|value| Needle::new(*value, *value))
            .collect();
        needles.push(Needle::new("a value never written", "planted-nowhere"));
        let mut report = LeakReport::default();
        function.scan_output(&NeedleSet::new(needles), &mut report);
        report.leaks.sort();
        assert_eq!(
            report.leaks,
            [
                "LeakyFunction (process 1, stderr) wrote planted-first-line-of-process-1",
                "LeakyFunction (process 1, stdout) wrote planted-after-invalid-utf8",
                "LeakyFunction (process 1, stdout) wrote planted-at-the-end-of-a-long-line",
                "LeakyFunction (process 2, stderr) wrote planted-first-line-of-process-2",
                "LeakyFunction (process 2, stdout) wrote planted-after-invalid-utf8",
                "LeakyFunction (process 2, stdout) wrote planted-at-the-end-of-a-long-line",
            ],
            "{report}"
        );
        assert!(report.incomplete.is_empty(), "{report}");
        assert_eq!(report.files, 4, "stdout and stderr of two processes");
        assert!(report.bytes > 2 * 1_300_000, "{report}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn error_fields_prefer_the_document() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "lambda-runtime-function-error-type",
            HeaderValue::from_static("Header.Type"),
        );
        let (kind, message) =
            error_fields(&headers, br#"{"errorType":"Boom","errorMessage":"bad"}"#);
        assert_eq!((kind.as_str(), message.as_str()), ("Boom", "bad"));
        let (kind, message) = error_fields(&headers, b"not json");
        assert_eq!(
            (kind.as_str(), message.as_str()),
            ("Header.Type", "not json")
        );
    }
}
