//! The Runtime API emulator ([`local_stack::runtime`]) on its own, without the AWS
//! emulator: the probe binary, a real `lambda_runtime` function, run the way the local
//! stack runs every function and the bench measures them.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use local_stack::runtime::{FunctionRuntime, FunctionSpec, InvokeError};
use serde_json::{Value, json};
use tokio::{sync::watch, task::JoinHandle};

/// A function runtime of its own, stopped by [`Running::stop`].
struct Running {
    function: FunctionRuntime,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    fn start(spec: FunctionSpec) -> Running {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (function, task) = FunctionRuntime::start(spec, shutdown_rx);
        Running {
            function,
            shutdown,
            task,
        }
    }

    async fn stop(self) -> FunctionRuntime {
        self.shutdown.send_replace(true);
        self.task.await.expect("the supervisor ends");
        self.function
    }
}

fn probe(name: &str, timeout: Duration) -> FunctionSpec {
    let environment = [
        ("AWS_LAMBDA_FUNCTION_NAME", name.to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2026/01/01/[$LATEST]0".to_owned(),
        ),
        ("PROBE_SETTING", "from the spec".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    FunctionSpec {
        logical_id: name.to_owned(),
        name: name.to_owned(),
        arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{name}"),
        executable: PathBuf::from(env!("CARGO_BIN_EXE_local-stack-probe")),
        args: Vec::new(),
        timeout,
        memory_mb: 128,
        environment,
        echo: false,
    }
}

fn sqs_batch(body: &str) -> Vec<u8> {
    json!({ "Records": [{ "messageId": "m-1", "body": body }] })
        .to_string()
        .into_bytes()
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_start_and_each_invocation_are_measured() {
    let spec = probe("MeasuredProbe", Duration::from_secs(5));
    let arn = spec.arn.clone();
    let running = Running::start(spec);
    let function = &running.function;

    let init = function
        .wait_initialized(Duration::from_secs(30))
        .await
        .expect("the probe initializes");
    assert!(init.duration > Duration::ZERO, "{init:?}");
    assert!(
        init.cpu > Duration::ZERO,
        "the probe's own CPU time: {init:?}"
    );
    assert!(function.is_ready());
    let pid = function.pid().expect("running");

    // The event, the environment and the headers the runtime read its context from.
    let sent_at = now_ms();
    let measured = function
        .invoke_measured(br#"{"job":"measure"}"#.to_vec())
        .await
        .expect("invoked");
    let answer: Value =
        serde_json::from_slice(measured.answer.as_ref().expect("answered")).expect("JSON");
    assert_eq!(answer["event"], json!({"job": "measure"}));
    assert_eq!(answer["env"]["PROBE_SETTING"], "from the spec");
    assert_eq!(answer["context"]["invoked_function_arn"], arn);
    let request_id = answer["context"]["request_id"].as_str().expect("an id");
    assert_eq!(request_id.len(), 36, "a UUID: {request_id}");
    let deadline = u128::from(
        answer["context"]["deadline_ms"]
            .as_u64()
            .expect("a deadline"),
    );
    assert!(
        (sent_at + 4_000..=now_ms() + 5_000).contains(&deadline),
        "the deadline is the timeout from the hand-over: {deadline} against {sent_at}"
    );
    assert!(
        answer["context"]["trace_id"]
            .as_str()
            .is_some_and(|trace| trace.starts_with("Root=1-")),
        "{answer}"
    );
    assert!(measured.duration > Duration::ZERO, "{measured:?}");
    assert!(measured.cpu > Duration::ZERO, "{measured:?}");

    // CPU time is the process's work, not the wall time: a sleep costs almost none.
    let measured = function
        .invoke_measured(sqs_batch("sleep:400"))
        .await
        .expect("invoked");
    assert_eq!(
        serde_json::from_slice::<Value>(measured.answer.as_ref().expect("answered")).expect("JSON"),
        json!({ "batchItemFailures": [] })
    );
    assert!(
        measured.duration >= Duration::from_millis(400),
        "{measured:?}"
    );
    assert!(measured.cpu < Duration::from_millis(200), "{measured:?}");
    assert_eq!(function.pid(), Some(pid), "one process served them all");

    let function = running.stop().await;
    assert_eq!(function.pid(), None, "the process is stopped");
    let summary = function.summary();
    assert_eq!((summary.starts, summary.invocations), (1, 2), "{summary:?}");
    assert_eq!((summary.errors, summary.timeouts), (0, 0), "{summary:?}");
    assert!(
        summary.peak_rss_kib.is_some_and(|kib| kib > 0),
        "{summary:?}"
    );
    let first_init_ms = summary.first_init_ms.expect("an init");
    assert!(
        (first_init_ms - init.duration.as_secs_f64() * 1000.0).abs() < 1e-6,
        "the summary's init is the one measured: {summary:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_timeouts_and_crashes_end_like_on_lambda() {
    let running = Running::start(probe("FailingProbe", Duration::from_secs(1)));
    let function = &running.function;
    function
        .wait_initialized(Duration::from_secs(30))
        .await
        .expect("the probe initializes");
    let pid = function.pid().expect("running");

    // A function error is an answer: measured, and the process keeps serving.
    let measured = function
        .invoke_measured(sqs_batch("crash"))
        .await
        .expect("answered with an error");
    match &measured.answer {
        Err(InvokeError::Function { message, .. }) => {
            assert!(message.contains("asked the probe to crash"), "{message}");
        }
        other => panic!("expected a function error, got {other:?}"),
    }
    assert!(measured.cpu > Duration::ZERO, "{measured:?}");
    assert_eq!(function.pid(), Some(pid));

    // A timeout stops the process; the next invocation starts another.
    let timed_out = function.invoke(sqs_batch("sleep:5000")).await;
    assert!(
        matches!(timed_out, Err(InvokeError::Timeout(_))),
        "{timed_out:?}"
    );
    let answered = function.invoke(br#"{"after":"timeout"}"#.to_vec()).await;
    assert!(answered.is_ok(), "{answered:?}");
    let second = function.pid().expect("running");
    assert_ne!(second, pid, "a new process");

    // A process that exits mid-invocation fails it; the next invocation starts another.
    let crashed = function.invoke(sqs_batch("exit")).await;
    assert!(
        matches!(crashed, Err(InvokeError::RuntimeExited(_))),
        "{crashed:?}"
    );
    let measured = function
        .invoke_measured(br#"{"after":"exit"}"#.to_vec())
        .await
        .expect("invoked");
    assert!(measured.answer.is_ok(), "{measured:?}");
    assert_ne!(function.pid(), Some(second), "a new process");

    let summary = running.stop().await.summary();
    assert_eq!(summary.starts, 3, "{summary:?}");
    assert_eq!((summary.errors, summary.timeouts), (1, 1), "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_never_asks_for_work_fails_its_init() {
    // The executable's arguments are passed, and what it wrote is kept (not echoed).
    let mut spec = probe("ExitingRuntime", Duration::from_secs(5));
    spec.executable = PathBuf::from("/bin/sh");
    spec.args = [
        "-c",
        "echo \"init failed: $1\" >&2; exit 3",
        "sh",
        "an-argument",
    ]
    .map(String::from)
    .to_vec();
    let running = Running::start(spec);
    let init = running
        .function
        .wait_initialized(Duration::from_secs(30))
        .await;
    assert!(
        matches!(&init, Err(InvokeError::RuntimeExited(why)) if why.contains("exited before its first /next")),
        "{init:?}"
    );
    let function = running.stop().await;
    function.finish_output(Duration::from_secs(10)).await;
    assert!(
        function
            .logs()
            .contains(&"init failed: an-argument".to_owned()),
        "{:?}",
        function.logs()
    );

    let mut spec = probe("MissingRuntime", Duration::from_secs(5));
    spec.executable = PathBuf::from("/nonexistent/bootstrap");
    let running = Running::start(spec);
    let init = running
        .function
        .wait_initialized(Duration::from_secs(30))
        .await;
    assert!(
        matches!(&init, Err(InvokeError::RuntimeExited(why)) if why.starts_with("could not start")),
        "{init:?}"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_is_the_specs_and_the_runtime_api_address() {
    let mut spec = probe("IsolatedProbe", Duration::from_secs(5));
    spec.environment.insert("PROBE_ONLY".into(), "1".into());
    let expected: BTreeMap<String, String> = spec
        .environment
        .iter()
        .filter(|(name, _)| name.starts_with("PROBE_") || name.starts_with("AWS_LAMBDA_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain([(
            "AWS_LAMBDA_RUNTIME_API".to_owned(),
            "set per process".to_owned(),
        )])
        .collect();
    let running = Running::start(spec);
    let answer = running
        .function
        .invoke(b"{}".to_vec())
        .await
        .expect("invoked");
    let answer: Value = serde_json::from_slice(&answer).expect("JSON");
    let mut env: BTreeMap<String, String> =
        serde_json::from_value(answer["env"].clone()).expect("strings");
    let api = env
        .insert("AWS_LAMBDA_RUNTIME_API".into(), "set per process".into())
        .expect("the Runtime API address");
    assert!(api.starts_with("127.0.0.1:"), "{api}");
    assert_eq!(env, expected);
    running.stop().await;
}
