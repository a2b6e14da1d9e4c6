//! The AWS emulator (moto server) and the stack provisioned into it.
//!
//! [`Moto::start`] runs moto's server from the project venv (created by `infra/venv` on
//! first use) with AWS's EventBridge and SQS size limits (`infra/emulator.py serve`) on
//! a free port of 127.0.0.1 and stops it when dropped, so a test that starts one cannot
//! leave it behind. [`deploy`] translates `template.yaml` with
//! aws-sam-translator and creates it as a CloudFormation stack in the emulator
//! (`infra/emulator.py`), returning what the stack made. Clients reach a server started
//! here through [`crate::atomic_proxy`], which makes moto's DynamoDB writes atomic.

use std::{
    collections::BTreeMap,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde::Deserialize;

/// Region and credentials the emulator answers to.
pub const REGION: &str = "us-east-1";

/// Why the emulator or the stack could not be brought up.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("could not run {what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed: {detail}")]
    Failed { what: String, detail: String },
    #[error("the emulator did not answer on {endpoint} within {seconds} s")]
    NotReady { endpoint: String, seconds: u64 },
    #[error("could not read the stack description: {0}")]
    Description(#[from] serde_json::Error),
}

/// The repository root (where `template.yaml` is).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The project venv (`JUNCTION_VENV` or `<root>/.venv`), created or updated by
/// `infra/venv` if needed.
pub fn ensure_venv(root: &Path) -> Result<PathBuf, EmulatorError> {
    run(Command::new(root.join("infra/venv")), "infra/venv")?;
    Ok(std::env::var_os("JUNCTION_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv")))
}

fn run(mut command: Command, what: &str) -> Result<String, EmulatorError> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| EmulatorError::Spawn {
            what: what.to_owned(),
            source,
        })?;
    if !output.status.success() {
        return Err(EmulatorError::Failed {
            what: what.to_owned(),
            detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A free TCP port on 127.0.0.1 (released for the caller to bind).
pub fn free_port() -> Result<u16, EmulatorError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|source| EmulatorError::Spawn {
            what: "a loopback listener".into(),
            source,
        })
}

/// A running moto server, stopped on drop.
#[derive(Debug)]
pub struct Moto {
    child: Option<Child>,
    /// Where clients connect: the [`AtomicProxy`] in front of a server started here.
    endpoint: String,
    proxy: Option<crate::atomic_proxy::AtomicProxy>,
    /// moto's request log, removed when the server stops.
    log_path: Option<PathBuf>,
}

impl Moto {
    /// Starts a moto server from the venv on a free loopback port.
    pub fn start(root: &Path) -> Result<Moto, EmulatorError> {
        let venv = ensure_venv(root)?;
        let port = free_port()?;
        let log_path = std::env::temp_dir().join(format!("junction-moto-{port}.log"));
        let log = std::fs::File::create(&log_path).map_err(|source| EmulatorError::Spawn {
            what: format!("log file {}", log_path.display()),
            source,
        })?;
        // `infra/emulator.py serve` is moto's server with AWS's size limits applied.
        let child = Command::new(venv.join("bin/python"))
            .arg(root.join("infra/emulator.py"))
            .args(["serve", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|source| EmulatorError::Spawn {
                what: "moto_server".into(),
                source,
            })?;
        let mut moto = Moto {
            child: Some(child),
            endpoint: format!("http://127.0.0.1:{port}"),
            proxy: None,
            log_path: Some(log_path),
        };
        moto.wait_ready(port, Duration::from_secs(60))?;
        // moto's DynamoDB is not atomic under concurrent requests; the proxy makes it so.
        let proxy = crate::atomic_proxy::AtomicProxy::start(&moto.endpoint).map_err(|source| {
            EmulatorError::Spawn {
                what: "the emulator proxy".into(),
                source,
            }
        })?;
        moto.endpoint = proxy.endpoint();
        moto.proxy = Some(proxy);
        Ok(moto)
    }

    /// An emulator someone else runs (`JUNCTION_EMULATOR_ENDPOINT`), not stopped on drop.
    pub fn existing(endpoint: impl Into<String>) -> Moto {
        Moto {
            child: None,
            endpoint: endpoint.into(),
            proxy: None,
            log_path: None,
        }
    }

    /// The emulator named by `JUNCTION_EMULATOR_ENDPOINT`, or a new one.
    pub fn from_env_or_start(root: &Path) -> Result<Moto, EmulatorError> {
        match std::env::var("JUNCTION_EMULATOR_ENDPOINT") {
            Ok(endpoint) if !endpoint.is_empty() => Ok(Moto::existing(endpoint)),
            _ => Moto::start(root),
        }
    }

    fn wait_ready(&mut self, port: u16, limit: Duration) -> Result<(), EmulatorError> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let log = self
                    .log_path
                    .as_ref()
                    .and_then(|path| std::fs::read_to_string(path).ok())
                    .unwrap_or_default();
                return Err(EmulatorError::Failed {
                    what: "moto_server".into(),
                    detail: format!("exited with {status}: {}", log.trim()),
                });
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(EmulatorError::NotReady {
            endpoint: self.endpoint.clone(),
            seconds: limit.as_secs(),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The process id, for tests that pause the emulator (SIGSTOP) to fake an outage.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SDK configuration pointing at the emulator with its test credentials.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(aws_config::Region::new(REGION))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "test", "test", None, None, "emulator",
            ))
            .load()
            .await
    }

    /// Environment variables that point an AWS SDK process at the emulator.
    pub fn process_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_DEFAULT_REGION", REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ]
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(path) = self.log_path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What [`deploy`] made, as described by `infra/emulator.py`.
#[derive(Debug, Clone, Deserialize)]
pub struct StackDescription {
    pub stack_name: String,
    pub status: String,
    pub outputs: BTreeMap<String, String>,
    /// Logical id → physical id.
    pub resources: BTreeMap<String, String>,
    pub functions: BTreeMap<String, FunctionDescription>,
    pub queues: BTreeMap<String, QueueDescription>,
    pub routes: Vec<Route>,
    pub schedules: Vec<Schedule>,
    pub event_source_mappings: Vec<EventSourceMapping>,
    /// Function targets of the rules with an event pattern (SAM `EventBridgeRule`).
    #[serde(default)]
    pub bus_rules: Vec<BusRule>,
    /// Resource types the emulator does not create, served by the local stack instead.
    pub served_locally: Vec<String>,
    /// The stack's CloudWatch alarms by name (created through the CloudWatch API: the
    /// emulator's CloudFormation does not model them).
    #[serde(default)]
    pub alarms: BTreeMap<String, AlarmDescription>,
    /// The stack's CloudWatch dashboards: name → body (JSON text).
    #[serde(default)]
    pub dashboards: BTreeMap<String, String>,
}

/// One CloudWatch alarm as the service describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct AlarmDescription {
    pub arn: Option<String>,
    pub namespace: Option<String>,
    /// The metric of a single-metric alarm.
    pub metric: Option<String>,
    /// The expressions of a metric-math alarm.
    #[serde(default)]
    pub expressions: Vec<String>,
    pub threshold: Option<f64>,
    pub comparison: Option<String>,
    /// Where it notifies (the alarm topic's ARN).
    #[serde(default)]
    pub actions: Vec<String>,
}

/// One function of the template.
#[derive(Debug, Clone, Deserialize)]
pub struct FunctionDescription {
    /// Physical function name.
    pub name: String,
    /// The function's ARN as the stack made it (passed to the runtime as the invoked ARN).
    #[serde(default)]
    pub arn: Option<String>,
    /// The cargo binary (`BuildProperties.Binary`).
    pub binary: Option<String>,
    pub timeout: u64,
    pub memory: u64,
    /// The function's environment as the stack resolved it (values may be numbers).
    pub environment: BTreeMap<String, serde_json::Value>,
}

impl FunctionDescription {
    /// The environment as strings, the way Lambda passes it.
    pub fn environment_strings(&self) -> BTreeMap<String, String> {
        self.environment
            .iter()
            .map(|(key, value)| {
                let text = match value {
                    serde_json::Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                (key.clone(), text)
            })
            .collect()
    }
}

/// One queue of the template.
#[derive(Debug, Clone, Deserialize)]
pub struct QueueDescription {
    pub url: String,
    pub arn: Option<String>,
    pub attributes: BTreeMap<String, String>,
}

/// An HTTP API route: method, OpenAPI path (`/webhooks/{provider}`) and function.
#[derive(Debug, Clone, Deserialize)]
pub struct Route {
    pub method: String,
    pub path: String,
    pub function: Option<String>,
    /// `AWS_IAM` for routes behind IAM authorization in the template.
    #[serde(default)]
    pub auth: Option<String>,
}

/// A schedule: `rate(...)` or `cron(...)` and the function it invokes.
#[derive(Debug, Clone, Deserialize)]
pub struct Schedule {
    pub name: String,
    pub expression: Option<String>,
    pub function: Option<String>,
    pub input: Option<serde_json::Value>,
    /// `events` (an EventBridge rule) or `scheduler` (EventBridge Scheduler): they
    /// deliver different payloads when no input is set.
    #[serde(default)]
    pub source: Option<String>,
    /// A disabled schedule still fires on demand.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// Scheduler's `ScheduleExpressionTimezone`; the local stack fires in UTC.
    #[serde(default)]
    pub timezone: Option<String>,
}

fn enabled_by_default() -> bool {
    true
}

/// An SQS event source mapping.
#[derive(Debug, Clone, Deserialize)]
pub struct EventSourceMapping {
    pub function: Option<String>,
    /// Logical id of the queue.
    pub queue: String,
    pub batch_size: u64,
    pub maximum_batching_window_seconds: u64,
    pub report_batch_item_failures: bool,
    /// A mapping created disabled is not polled until enabled.
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
}

/// A function target of an EventBridge rule with an event pattern.
#[derive(Debug, Clone, Deserialize)]
pub struct BusRule {
    /// The rule's logical id.
    pub name: String,
    /// The target's id.
    pub target: Option<String>,
    pub function: String,
    pub pattern: serde_json::Value,
    /// Logical id of the queue the emulator delivers the rule's events to in place of
    /// the function; `None` against real AWS, where EventBridge invokes the function.
    pub queue: Option<String>,
    /// The function's `EventInvokeConfig`, else Lambda's defaults (2, 6 hours).
    pub maximum_retry_attempts: u32,
    pub maximum_event_age_seconds: u64,
}

/// Translates `template.yaml` and creates it as stack `stack_name` in the emulator at
/// `endpoint`, with template parameter overrides.
pub fn deploy(
    root: &Path,
    endpoint: &str,
    stack_name: &str,
    parameters: &[(&str, &str)],
) -> Result<StackDescription, EmulatorError> {
    deploy_template(
        root,
        &root.join("template.yaml"),
        endpoint,
        stack_name,
        parameters,
        &[],
    )
}

/// [`deploy`] for another SAM template (test fixtures use their own small ones).
/// `optional_parameters` are passed only when the template declares them (the local
/// stack's `Prefix`, which fixture templates do not have).
pub fn deploy_template(
    root: &Path,
    template: &Path,
    endpoint: &str,
    stack_name: &str,
    parameters: &[(&str, &str)],
    optional_parameters: &[(&str, &str)],
) -> Result<StackDescription, EmulatorError> {
    let venv = ensure_venv(root)?;
    let mut command = Command::new(venv.join("bin/python"));
    command
        .arg(root.join("infra/emulator.py"))
        .args(["deploy", "--endpoint", endpoint, "--stack-name", stack_name])
        .arg("--template")
        .arg(template)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", REGION);
    for (key, value) in parameters {
        command.arg("--parameter").arg(format!("{key}={value}"));
    }
    for (key, value) in optional_parameters {
        command
            .arg("--optional-parameter")
            .arg(format!("{key}={value}"));
    }
    let stdout = run(command, "infra/emulator.py deploy")?;
    Ok(serde_json::from_str(&stdout)?)
}

/// Describes a stack already deployed to real AWS (`sam deploy`), with the caller's own
/// credentials: the local stack then runs the functions against the real resources.
pub fn describe_deployed(
    root: &Path,
    template: &Path,
    stack_name: &str,
    parameters: &[(&str, &str)],
) -> Result<StackDescription, EmulatorError> {
    let venv = ensure_venv(root)?;
    let mut command = Command::new(venv.join("bin/python"));
    command
        .arg(root.join("infra/emulator.py"))
        .args(["describe", "--real-aws", "--stack-name", stack_name])
        .arg("--template")
        .arg(template)
        .env_remove("AWS_ENDPOINT_URL");
    for (key, value) in parameters {
        command.arg("--parameter").arg(format!("{key}={value}"));
    }
    let stdout = run(command, "infra/emulator.py describe --real-aws")?;
    Ok(serde_json::from_str(&stdout)?)
}
