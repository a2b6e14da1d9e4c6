//! The whole local stack: emulator, stack, function processes, HTTP API, event source
//! mappings and schedules, started together and stopped together.
//!
//! Everything the stack serves is read from the stack description that
//! `infra/emulator.py` makes out of the template: routes, schedules, mappings and bus
//! rules are never listed here. [`LocalStack::stop`] stops every process it started; dropping a
//! `LocalStack` without stopping it (a failing test) still kills them, because every
//! child is spawned with `kill_on_drop` inside a task that the drop aborts.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State},
    http::{HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use junction_catalog::EndpointRules;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    binaries::{self, BuildError, Profile},
    bus_rules::{BusDispatch, BusRuleSpec, RetryPolicy},
    dev_secrets::{self, SeedError, SeededSecret},
    emulator::{self, EmulatorError, Moto, StackDescription},
    http_api::{ApiResponse, IncomingRequest, RouteTable},
    iam::{Decision, ExecuteApiPolicy, LocalIam},
    jwt_keys::{self, DevelopmentKeys, JwtKeysError, KeyServer, LocalJwt},
    leaks::{LeakReport, MIN_SECRET_LEN, Needle, NeedleSet, WatchError, Watched},
    runtime::{FunctionRuntime, FunctionSpec, FunctionSummary, InvokeError, request_id},
    schedule::{ScheduleError, ScheduleExpression},
    sqs_poller::{Mapping, MappingSpec},
};

/// Where the stack's resources live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The AWS emulator: the one at this endpoint, or else `JUNCTION_EMULATOR_ENDPOINT`,
    /// or else a new moto server. The template is deployed into it.
    Emulator { endpoint: Option<String> },
    /// A stack already deployed to real AWS with `sam deploy`: nothing is deployed or
    /// seeded; the functions run here against the real resources with the caller's
    /// own credentials.
    DeployedStack,
}

/// How to run the local stack.
#[derive(Debug, Clone)]
pub struct LocalStackConfig {
    /// The repository root (the cargo workspace).
    pub root: PathBuf,
    /// The SAM template.
    pub template: PathBuf,
    pub stack_name: String,
    /// The template's `Prefix` parameter (secret names); `None` for templates without it.
    pub prefix: Option<String>,
    /// Other template parameter overrides.
    pub parameters: Vec<(String, String)>,
    pub backend: Backend,
    /// Port of the HTTP API on 127.0.0.1; 0 picks a free one.
    pub api_port: u16,
    /// Port of the control API (summary, firing schedules); 0 picks a free one.
    pub control_port: u16,
    pub profile: Profile,
    /// Create development signing secrets where none exist (emulator only).
    pub seed_secrets: bool,
    /// Fire schedules at their times (they can always be fired on demand).
    pub run_schedules: bool,
    /// A catalog overlay file (TOML, `[[provider]]` entries): stored in the emulator as
    /// the secret `<prefix>/catalog/local-overlay` and named by the template's
    /// `CatalogOverlaySecret` parameter, as an operator would after `sam deploy`.
    pub catalog_overlay: Option<PathBuf>,
    /// Publish development keys for the JWT providers (Gmail push, Plaid) on a loopback
    /// key server, seed their secrets with them and point their catalog entries there
    /// (appended to the overlay above, whose own entries win), so that `junction
    /// send-webhook gmail|plaid` verifies. Only with the emulator, a prefix and seeding,
    /// and not when `parameters` names `CatalogOverlaySecret` itself. Off in
    /// [`LocalStackConfig::new`]: it sets `CATALOG_OVERLAY_SECRET` in every function's
    /// environment, which callers that reuse those environments elsewhere (the
    /// benchmarks' timing runs) must not inherit; `junction-local up` turns it on.
    pub serve_jwt_keys: bool,
    /// Already built executables (binary name → path) to run instead of building with
    /// `profile`: the benchmarks run the very files `cargo lambda build` packages.
    pub executables: Option<BTreeMap<String, PathBuf>>,
}

impl LocalStackConfig {
    /// The defaults of `junction-local up` (but for [`LocalStackConfig::serve_jwt_keys`]):
    /// the repository's template in a new emulator.
    pub fn new(root: PathBuf) -> LocalStackConfig {
        LocalStackConfig {
            template: root.join("template.yaml"),
            root,
            stack_name: "junction-local".into(),
            prefix: Some("junction".into()),
            parameters: Vec::new(),
            backend: Backend::Emulator { endpoint: None },
            api_port: 0,
            control_port: 0,
            profile: Profile::Debug,
            seed_secrets: true,
            run_schedules: true,
            catalog_overlay: None,
            serve_jwt_keys: false,
            executables: None,
        }
    }
}

/// Why the local stack could not start or serve a request.
#[derive(Debug, thiserror::Error)]
pub enum LocalStackError {
    #[error(transparent)]
    Emulator(#[from] EmulatorError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Seed(#[from] SeedError),
    #[error("the provider catalog is invalid: {0}")]
    Catalog(#[from] junction_catalog::CatalogError),
    #[error("development JWT keys: {0}")]
    JwtKeys(#[from] JwtKeysError),
    #[error("could not listen on 127.0.0.1:{port}: {source}")]
    Listen {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("function {function} has no cargo binary (Metadata.BuildProperties.Binary)")]
    NoBinary { function: String },
    #[error("{what} refers to function {function}, which the stack does not have")]
    UnknownFunction { what: String, function: String },
    #[error("mapping on queue {queue}: the stack has no such queue")]
    UnknownQueue { queue: String },
    #[error("no schedule named {0}")]
    UnknownSchedule(String),
    #[error("no event source mapping of function {function} on queue {queue}")]
    UnknownMapping { function: String, queue: String },
    #[error("schedule {name}: {source}")]
    Schedule {
        name: String,
        #[source]
        source: ScheduleError,
    },
    #[error(transparent)]
    Invoke(#[from] InvokeError),
    #[error("could not write the state file {path}: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What `junction-local` writes to `.local/junction-local/<stack>.json` so other
/// commands (and scripts) find the running stack.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateFile {
    pub stack_name: String,
    pub prefix: Option<String>,
    pub pid: u32,
    /// `None` when running against real AWS.
    pub emulator_endpoint: Option<String>,
    pub api_url: String,
    pub control_url: String,
    /// Queue logical id → URL.
    pub queues: BTreeMap<String, String>,
}

/// The state file of `stack_name` under `root`.
pub fn state_path(root: &std::path::Path, stack_name: &str) -> PathBuf {
    root.join(".local/junction-local")
        .join(format!("{stack_name}.json"))
}

/// A schedule of the template, ready to fire.
#[derive(Debug, Clone)]
pub struct ScheduleTarget {
    pub name: String,
    pub expression_text: String,
    pub expression: ScheduleExpression,
    pub function: FunctionRuntime,
    pub enabled: bool,
    source: String,
    input: Option<serde_json::Value>,
    region: String,
}

impl ScheduleTarget {
    /// The payload the schedule delivers: its configured input, else the EventBridge
    /// "Scheduled Event" for rules and `{}` for Scheduler schedules.
    pub fn payload(&self, now: OffsetDateTime) -> serde_json::Value {
        if let Some(input) = &self.input {
            return match input {
                serde_json::Value::String(text) => serde_json::from_str(text)
                    .unwrap_or_else(|_| serde_json::Value::String(text.clone())),
                other => other.clone(),
            };
        }
        if self.source == "scheduler" {
            return serde_json::json!({});
        }
        serde_json::json!({
            "version": "0",
            "id": request_id(),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": crate::ACCOUNT_ID,
            "time": now
                .replace_nanosecond(0)
                .unwrap_or(now)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            "region": self.region,
            "resources": [format!("arn:aws:events:{}:{}:rule/{}", self.region, crate::ACCOUNT_ID, self.name)],
            "detail": {},
        })
    }

    /// Invokes the target now.
    pub async fn fire(&self) -> Result<Vec<u8>, InvokeError> {
        let payload = self.payload(OffsetDateTime::now_utc());
        self.function.invoke(payload.to_string().into_bytes()).await
    }
}

#[derive(Debug)]
struct Served {
    routes: RouteTable,
    functions: BTreeMap<String, FunctionRuntime>,
    schedules: BTreeMap<String, ScheduleTarget>,
    mappings: Vec<Mapping>,
    bus_rules: Vec<BusDispatch>,
    api_port: u16,
    /// The local credentials IAM-authorized routes require, and their policies.
    iam: LocalIam,
}

/// A running local stack.
#[derive(Debug)]
pub struct LocalStack {
    served: Arc<Served>,
    description: StackDescription,
    seeded: Vec<SeededSecret>,
    api_url: String,
    control_url: String,
    sqs: aws_sdk_sqs::Client,
    sdk_config: aws_config::SdkConfig,
    state_path: Option<PathBuf>,
    /// Provider id → where the key server publishes its development keys.
    jwt_key_urls: BTreeMap<String, String>,
    shutdown: watch::Sender<bool>,
    /// Function supervisors, mapping pollers and schedules: they end on `shutdown`.
    tasks: Vec<JoinHandle<()>>,
    /// The HTTP API and control servers: aborted.
    servers: Vec<JoinHandle<()>>,
    /// Values registered with [`LocalStack::watch_for_leaks`].
    watched: Watched,
    /// Declared last so it is dropped after the tasks are aborted.
    moto: Option<Moto>,
}

/// Creates (or replaces) the overlay secret before any function starts.
async fn store_overlay(
    sdk_config: &aws_config::SdkConfig,
    name: &str,
    text: &str,
) -> Result<(), LocalStackError> {
    let client = aws_sdk_secretsmanager::Client::new(sdk_config);
    let failed = |err: String| EmulatorError::Failed {
        what: format!("storing the catalog overlay as {name}"),
        detail: err,
    };
    let created = client
        .create_secret()
        .name(name)
        .secret_string(text)
        .send()
        .await;
    if let Err(err) = created {
        let exists = err
            .as_service_error()
            .is_some_and(|e| e.is_resource_exists_exception());
        if !exists {
            return Err(failed(aws_sdk_secretsmanager::Error::from(err).to_string()).into());
        }
        client
            .put_secret_value()
            .secret_id(name)
            .secret_string(text)
            .send()
            .await
            .map_err(|err| failed(aws_sdk_secretsmanager::Error::from(err).to_string()))?;
    }
    Ok(())
}

impl LocalStack {
    /// The value of the [`crate::http_api::LOCAL_IAM_HEADER`] header that IAM-authorized
    /// routes (the management API) require locally, in place of a SigV4 signature: the
    /// stack's own credential, which may call every route.
    pub fn local_iam_key(&self) -> &str {
        self.served.iam.stack_key()
    }

    /// The stand-in for IAM: the region its resource ARNs name, its credentials. A key
    /// it issues ([`LocalIam::issue`]) is limited by its policy as an IAM principal's
    /// would be, and scanned for in the functions' output like the stack's.
    pub fn iam(&self) -> &LocalIam {
        &self.served.iam
    }

    /// Starts everything; returns once every function process has been started (not
    /// necessarily initialized: see [`LocalStack::wait_ready`]).
    pub async fn start(config: LocalStackConfig) -> Result<LocalStack, LocalStackError> {
        let mut parameters: Vec<(String, String)> = config.parameters.clone();
        let overlay_name = format!(
            "{}/catalog/local-overlay",
            config.prefix.as_deref().unwrap_or("junction")
        );
        let user_overlay = match &config.catalog_overlay {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|err| EmulatorError::Failed {
                    what: format!("reading the catalog overlay {}", path.display()),
                    detail: err.to_string(),
                })?;
                parameters.push(("CatalogOverlaySecret".into(), overlay_name.clone()));
                Some(text)
            }
            None => None,
        };
        // `Prefix` is Junction's; fixture templates without it are deployed all the same.
        let mut optional: Vec<(String, String)> = config
            .prefix
            .iter()
            .map(|prefix| ("Prefix".to_owned(), prefix.clone()))
            .collect();
        let serve_jwt_keys = config.serve_jwt_keys
            && config.seed_secrets
            && config.prefix.is_some()
            && matches!(config.backend, Backend::Emulator { .. })
            && !config
                .parameters
                .iter()
                .any(|(key, _)| key == "CatalogOverlaySecret");
        // The key server's port goes into the overlay, so it is bound first; the RSA key
        // is generated while the emulator starts and the template deploys.
        let jwt_plan = if serve_jwt_keys {
            let server = KeyServer::bind()
                .await
                .map_err(|source| LocalStackError::Listen { port: 0, source })?;
            let local = jwt_keys::local_overlay(
                &config.root,
                server.base_url(),
                user_overlay
                    .as_deref()
                    .map(|text| (overlay_name.as_str(), text)),
            )?;
            for id in &local.overridden {
                eprintln!(
                    "[local-stack] the catalog overlay replaces {id}: its tokens are verified with \
                     the keys its entry names, not the local development keys, so `junction \
                     send-webhook {id}` will be refused"
                );
            }
            if user_overlay.is_none() {
                optional.push(("CatalogOverlaySecret".into(), overlay_name.clone()));
            }
            let keys = tokio::task::spawn_blocking(DevelopmentKeys::generate);
            Some((server, local, keys))
        } else {
            None
        };
        let overlay = match (&jwt_plan, user_overlay) {
            (Some((_, local, _)), _) => Some((overlay_name.clone(), local.text.clone())),
            (None, Some(text)) => Some((overlay_name.clone(), text)),
            (None, None) => None,
        };
        let (moto, description, sdk_config, endpoint_env) = match &config.backend {
            Backend::Emulator { endpoint } => {
                let root = config.root.clone();
                let endpoint = endpoint.clone();
                let moto = tokio::task::spawn_blocking(move || match endpoint {
                    Some(endpoint) => Ok(Moto::existing(endpoint)),
                    None => Moto::from_env_or_start(&root),
                })
                .await
                .map_err(|err| EmulatorError::Failed {
                    what: "starting the emulator".into(),
                    detail: err.to_string(),
                })??;
                let (root, template, stack) = (
                    config.root.clone(),
                    config.template.clone(),
                    config.stack_name.clone(),
                );
                let endpoint = moto.endpoint().to_owned();
                let (owned, optional) = (parameters.clone(), optional.clone());
                let description = tokio::task::spawn_blocking(move || {
                    let refs = as_refs(&owned);
                    let optional_refs = as_refs(&optional);
                    emulator::deploy_template(
                        &root,
                        &template,
                        &endpoint,
                        &stack,
                        &refs,
                        &optional_refs,
                    )
                })
                .await
                .map_err(|err| EmulatorError::Failed {
                    what: "deploying the template".into(),
                    detail: err.to_string(),
                })??;
                let sdk_config = moto.sdk_config().await;
                let env: Vec<(String, String)> = moto
                    .process_env()
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect();
                (Some(moto), description, sdk_config, env)
            }
            Backend::DeployedStack => {
                let description = emulator::describe_deployed(
                    &config.root,
                    &config.template,
                    &config.stack_name,
                    &as_refs(&parameters),
                )?;
                let sdk_config =
                    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
                // The caller's own AWS configuration, minus any endpoint override.
                let env = std::env::vars()
                    .filter(|(k, _)| {
                        (k.starts_with("AWS_") && k != "AWS_ENDPOINT_URL") || k == "HOME"
                    })
                    .collect();
                (None, description, sdk_config, env)
            }
        };
        let region = sdk_config
            .region()
            .map(|r| r.as_ref().to_owned())
            .unwrap_or_else(|| emulator::REGION.to_owned());
        let sqs = aws_sdk_sqs::Client::new(&sdk_config);
        if let (Some((name, text)), Some(_)) = (&overlay, &moto) {
            store_overlay(&sdk_config, name, text).await?;
        }

        let (key_server, local_jwt) = match jwt_plan {
            Some((server, local, keys)) => {
                let keys = keys.await.map_err(|err| EmulatorError::Failed {
                    what: "generating the development JWT keys".into(),
                    detail: err.to_string(),
                })??;
                let local = LocalJwt {
                    keys,
                    base_url: server.base_url().to_owned(),
                    served: local.served,
                };
                (Some(server), Some(local))
            }
            None => (None, None),
        };
        let seeded = if config.seed_secrets && moto.is_some() {
            match &config.prefix {
                Some(prefix) => {
                    // Overlay providers get development secrets like built-in ones.
                    // Checked as the functions check it: they run with loopback allowed.
                    let embedded = junction_catalog::Catalog::embedded()?
                        .with_endpoint_rules(EndpointRules::LoopbackHttpForTests);
                    let catalog = match &overlay {
                        Some((name, text)) => embedded.with_overlay(name, text)?,
                        None => embedded,
                    };
                    let client = aws_sdk_secretsmanager::Client::new(&sdk_config);
                    dev_secrets::seed(&client, &catalog, prefix, local_jwt.as_ref()).await?
                }
                None => Vec::new(),
            }
        } else {
            Vec::new()
        };
        let jwt_key_urls: BTreeMap<String, String> = local_jwt
            .iter()
            .flat_map(|local| {
                local
                    .served
                    .keys()
                    .filter_map(|id| Some((id.clone(), local.url(id)?)))
            })
            .collect();

        let binaries: BTreeSet<String> = description
            .functions
            .iter()
            .map(|(logical_id, function)| {
                function
                    .binary
                    .clone()
                    .ok_or_else(|| LocalStackError::NoBinary {
                        function: logical_id.clone(),
                    })
            })
            .collect::<Result<_, _>>()?;
        let executables = match &config.executables {
            Some(built) => built.clone(),
            None => binaries::build(&config.root, &binaries, config.profile).await?,
        };

        // Bound before the functions start: their PUBLIC_BASE_URL is this API's URL.
        let api_listener = listen(config.api_port).await?;
        let api_port = api_listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_default();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut functions = BTreeMap::new();
        let public_base_url_given = config
            .parameters
            .iter()
            .any(|(key, value)| key == "PublicBaseUrl" && !value.trim().is_empty());
        for (logical_id, function) in &description.functions {
            let binary = function.binary.clone().unwrap_or_default();
            let Some(executable) = executables.get(&binary).cloned() else {
                return Err(BuildError::Missing(binary).into());
            };
            let mut environment: BTreeMap<String, String> = BTreeMap::new();
            if let Ok(path) = std::env::var("PATH") {
                environment.insert("PATH".into(), path);
            }
            environment.extend(endpoint_env.iter().cloned());
            environment.extend(lambda_environment(
                &function.name,
                function.memory,
                &region,
                &executable,
            ));
            environment.extend(function.environment_strings());
            // The local stack's providers (the fake provider, the OpenID provider) listen
            // on loopback over http; a deploy never sets this.
            environment.insert(
                junction_catalog::LOOPBACK_TEST_SETTING.into(),
                "allow".into(),
            );
            // The template's public base URL is API Gateway's, or the `PublicBaseUrl`
            // parameter. Given that parameter, the functions keep the template's value,
            // as a deploy does (so the ingress verifies URL-signing providers against
            // the registered URL, not the Host header); otherwise callers reach the
            // functions through this stack's API.
            if environment.contains_key("PUBLIC_BASE_URL") && !public_base_url_given {
                environment.insert(
                    "PUBLIC_BASE_URL".into(),
                    format!("http://127.0.0.1:{api_port}"),
                );
            }
            // Other URLs on the API's domain (`WEBHOOK_BASE_URL`, where a provider is
            // told to deliver) point at this stack's API likewise.
            if !public_base_url_given {
                let api_url = format!("http://127.0.0.1:{api_port}");
                for value in environment.values_mut() {
                    if let Some(local) = on_local_api(value, &region, &api_url) {
                        *value = local;
                    }
                }
            }
            let spec = FunctionSpec {
                logical_id: logical_id.clone(),
                name: function.name.clone(),
                arn: function.arn.clone().unwrap_or_else(|| {
                    format!(
                        "arn:aws:lambda:{region}:{}:function:{}",
                        crate::ACCOUNT_ID,
                        function.name
                    )
                }),
                executable,
                args: Vec::new(),
                timeout: Duration::from_secs(function.timeout.max(1)),
                memory_mb: function.memory,
                environment,
                echo: true,
            };
            let (runtime, task) = FunctionRuntime::start(spec, shutdown_rx.clone());
            tasks.push(task);
            functions.insert(logical_id.clone(), runtime);
        }

        let mut mappings = Vec::new();
        for mapping in &description.event_source_mappings {
            let function_id = mapping.function.clone().unwrap_or_default();
            let function = functions.get(&function_id).cloned().ok_or_else(|| {
                LocalStackError::UnknownFunction {
                    what: format!("the event source mapping on {}", mapping.queue),
                    function: function_id.clone(),
                }
            })?;
            let queue = description.queues.get(&mapping.queue).ok_or_else(|| {
                LocalStackError::UnknownQueue {
                    queue: mapping.queue.clone(),
                }
            })?;
            let spec = MappingSpec {
                queue: mapping.queue.clone(),
                queue_url: queue.url.clone(),
                queue_arn: queue.arn.clone().unwrap_or_default(),
                region: region.clone(),
                batch_size: usize::try_from(mapping.batch_size.clamp(1, 10_000)).unwrap_or(10),
                batching_window: Duration::from_secs(mapping.maximum_batching_window_seconds),
                report_batch_item_failures: mapping.report_batch_item_failures,
            };
            let (running, task) = Mapping::start(
                spec,
                function,
                sqs.clone(),
                mapping.enabled,
                shutdown_rx.clone(),
            );
            tasks.push(task);
            mappings.push(running);
        }

        let mut bus_rules = Vec::new();
        // Without a queue the rule is real AWS's to dispatch (a deployed stack).
        for rule in description.bus_rules.iter().filter(|r| r.queue.is_some()) {
            let queue_id = rule.queue.clone().unwrap_or_default();
            let function = functions.get(&rule.function).cloned().ok_or_else(|| {
                LocalStackError::UnknownFunction {
                    what: format!("the bus rule {}", rule.name),
                    function: rule.function.clone(),
                }
            })?;
            let queue = description
                .queues
                .get(&queue_id)
                .ok_or(LocalStackError::UnknownQueue { queue: queue_id })?;
            let spec = BusRuleSpec {
                rule: rule.name.clone(),
                queue_url: queue.url.clone(),
                pattern: rule.pattern.clone(),
                retry: RetryPolicy::local(rule.maximum_retry_attempts),
            };
            let (running, task) =
                BusDispatch::start(spec, function, sqs.clone(), shutdown_rx.clone());
            tasks.push(task);
            bus_rules.push(running);
        }

        let mut schedules = BTreeMap::new();
        for schedule in &description.schedules {
            let expression_text = schedule.expression.clone().unwrap_or_default();
            let expression = ScheduleExpression::parse(&expression_text).map_err(|source| {
                LocalStackError::Schedule {
                    name: schedule.name.clone(),
                    source,
                }
            })?;
            let function_id = schedule.function.clone().unwrap_or_default();
            let function = functions.get(&function_id).cloned().ok_or_else(|| {
                LocalStackError::UnknownFunction {
                    what: format!("schedule {}", schedule.name),
                    function: function_id.clone(),
                }
            })?;
            if let Some(zone) = &schedule.timezone {
                eprintln!(
                    "[local-stack] schedule {}: fires in UTC here, not in {zone}",
                    schedule.name
                );
            }
            let target = ScheduleTarget {
                name: schedule.name.clone(),
                expression_text,
                expression,
                function,
                enabled: schedule.enabled,
                source: schedule.source.clone().unwrap_or_else(|| "events".into()),
                input: schedule.input.clone(),
                region: region.clone(),
            };
            if config.run_schedules && target.enabled {
                tasks.push(tokio::spawn(run_schedule(
                    target.clone(),
                    shutdown_rx.clone(),
                )));
            }
            schedules.insert(schedule.name.clone(), target);
        }

        let control_listener = listen(config.control_port).await?;
        let control_port = control_listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_default();
        let served = Arc::new(Served {
            routes: RouteTable::new(&description.routes),
            functions,
            schedules,
            mappings,
            bus_rules,
            api_port,
            iam: LocalIam::new(region.clone()),
        });
        let mut servers = vec![
            serve(api_listener, api_router(served.clone())),
            serve(control_listener, control_router(served.clone())),
        ];
        if let (Some(server), Some(local), Some(prefix)) =
            (key_server, local_jwt, config.prefix.clone())
        {
            let secrets = Arc::new(junction_aws::secrets::SecretsManagerSource::from_config(
                &sdk_config,
            ));
            servers.push(server.serve(secrets, prefix, local.served));
        }

        let mut stack = LocalStack {
            served,
            description,
            seeded,
            api_url: format!("http://127.0.0.1:{api_port}"),
            control_url: format!("http://127.0.0.1:{control_port}"),
            sqs,
            sdk_config,
            state_path: None,
            jwt_key_urls,
            shutdown,
            tasks,
            servers,
            watched: Watched::default(),
            moto,
        };
        stack.write_state(&config)?;
        Ok(stack)
    }

    fn write_state(&mut self, config: &LocalStackConfig) -> Result<(), LocalStackError> {
        let path = state_path(&config.root, &config.stack_name);
        let state = StateFile {
            stack_name: config.stack_name.clone(),
            prefix: config.prefix.clone(),
            pid: std::process::id(),
            emulator_endpoint: self.emulator_endpoint().map(str::to_owned),
            api_url: self.api_url.clone(),
            control_url: self.control_url.clone(),
            queues: self
                .description
                .queues
                .iter()
                .map(|(id, queue)| (id.clone(), queue.url.clone()))
                .collect(),
        };
        let text = serde_json::to_string_pretty(&state).unwrap_or_default();
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, text));
        written.map_err(|source| LocalStackError::State {
            path: path.clone(),
            source,
        })?;
        self.state_path = Some(path);
        Ok(())
    }

    /// Waits until every function process has asked for its first invocation.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self
                .served
                .functions
                .values()
                .all(FunctionRuntime::is_ready)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// `http://127.0.0.1:<port>`, where the template's HTTP API is served.
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// `http://127.0.0.1:<port>` of the control API (`/summary`, `/schedules/{name}/fire`).
    pub fn control_url(&self) -> &str {
        &self.control_url
    }

    /// Provider id → the URL where the key server publishes its development keys (empty
    /// unless [`LocalStackConfig::serve_jwt_keys`] applied).
    pub fn jwt_key_urls(&self) -> &BTreeMap<String, String> {
        &self.jwt_key_urls
    }

    /// The emulator's endpoint, or `None` against real AWS.
    pub fn emulator_endpoint(&self) -> Option<&str> {
        self.moto.as_ref().map(Moto::endpoint)
    }

    /// The emulator's process id when this stack started it (tests check it is gone).
    pub fn emulator_pid(&self) -> Option<u32> {
        self.moto.as_ref().and_then(Moto::pid)
    }

    /// Makes the leak scan of [`LocalStack::stop_and_scan`] look for `value` (as written,
    /// percent-encoded and JSON-escaped) in everything the functions write: a token, code,
    /// verifier or signature a test created or saw that no function may log. `what` names
    /// it in the report; the value never appears there. Values shorter than
    /// [`crate::leaks::MIN_WATCHED_LEN`] bytes are refused: they would match by accident.
    pub fn watch_for_leaks(&self, what: impl Into<String>, value: &str) -> Result<(), WatchError> {
        self.watched.add(what.into(), value)
    }

    /// Stops the stack like [`LocalStack::stop`], then scans every byte every function
    /// process wrote (stdout and stderr, every process of a function that was started
    /// again) for every secret value stored in the emulator's Secrets Manager (each
    /// secret's string values under keys naming a secret, key, token or password, or the
    /// whole value when it is not JSON; catalog overlays, which are configuration,
    /// excepted), the local IAM credential, and every watched value. The scan runs after
    /// the processes are gone, so their last lines are in it, and against the secrets as
    /// they are then, so one a function created is in it too.
    pub async fn stop_and_scan(mut self) -> LeakReport {
        self.shut_down().await;
        for function in self.served.functions.values() {
            function.finish_output(OUTPUT_DRAIN_LIMIT).await;
        }
        let mut report = LeakReport::default();
        let mut needles = self.secret_needles(&mut report).await;
        for key in self.served.iam.keys() {
            needles.extend(Needle::with_encodings("a local IAM credential", &key));
        }
        needles.extend(self.watched.needles());
        let needles = NeedleSet::new(needles);
        report.needles = needles.len();
        let functions: Vec<FunctionRuntime> = self.served.functions.values().cloned().collect();
        let scanned = tokio::task::spawn_blocking(move || {
            for function in &functions {
                function.scan_output(&needles, &mut report);
            }
            report
        })
        .await;
        let mut report = scanned.unwrap_or_else(|err| LeakReport {
            incomplete: vec![format!("the scan did not finish: {err}")],
            ..LeakReport::default()
        });
        report.leaks.sort();
        report.leaks.dedup();
        report
    }

    /// Every secret value in the emulator's Secrets Manager, in the forms
    /// [`Needle::with_encodings`] makes. Secrets that cannot be listed or read make
    /// the report incomplete; one deleted since it was listed is skipped.
    async fn secret_needles(&self, report: &mut LeakReport) -> Vec<Needle> {
        if self.moto.is_none() {
            report
                .incomplete
                .push("Secrets Manager was not read: the stack runs against real AWS".to_owned());
            return Vec::new();
        }
        let client = aws_sdk_secretsmanager::Client::new(&self.sdk_config);
        let mut pages = client.list_secrets().into_paginator().send();
        let mut names = Vec::new();
        while let Some(page) = pages.next().await {
            match page {
                Ok(page) => names.extend(
                    page.secret_list()
                        .iter()
                        .filter_map(|s| s.name().map(str::to_owned)),
                ),
                Err(err) => {
                    report.incomplete.push(format!(
                        "the emulator's secrets could not be listed: {}",
                        aws_sdk_secretsmanager::Error::from(err)
                    ));
                    break;
                }
            }
        }
        let mut needles = Vec::new();
        for name in names.iter().filter(|name| !name.contains("/catalog/")) {
            let value = match client.get_secret_value().secret_id(name).send().await {
                Ok(value) => value,
                Err(err) => {
                    let err = aws_sdk_secretsmanager::Error::from(err);
                    if !matches!(
                        err,
                        aws_sdk_secretsmanager::Error::ResourceNotFoundException(_)
                    ) {
                        report
                            .incomplete
                            .push(format!("secret {name} could not be read: {err}"));
                    }
                    continue;
                }
            };
            let what = format!("a value of secret {name}");
            if let Some(binary) = value.secret_binary() {
                needles.push(Needle::new(what.clone(), binary.as_ref()));
            }
            let text = value.secret_string().unwrap_or_default();
            let mut values = Vec::new();
            match serde_json::from_str::<serde_json::Value>(text) {
                Ok(json) => secret_strings(&json, false, &mut values),
                Err(_) => values.push(text.to_owned()),
            }
            for value in values.iter().filter(|value| value.len() >= MIN_SECRET_LEN) {
                needles.extend(Needle::with_encodings(&what, value));
            }
        }
        needles
    }

    /// The stack as deployed.
    pub fn description(&self) -> &StackDescription {
        &self.description
    }

    /// SDK configuration for the stack's backend (the emulator, or real AWS).
    pub fn sdk_config(&self) -> &aws_config::SdkConfig {
        &self.sdk_config
    }

    /// An SQS client for the stack's backend.
    pub fn sqs(&self) -> &aws_sdk_sqs::Client {
        &self.sqs
    }

    /// The development secrets this run created or found.
    pub fn seeded_secrets(&self) -> &[SeededSecret] {
        &self.seeded
    }

    /// The template's routes, most specific first.
    pub fn routes(&self) -> &RouteTable {
        &self.served.routes
    }

    /// The running functions by logical id.
    pub fn functions(&self) -> &BTreeMap<String, FunctionRuntime> {
        &self.served.functions
    }

    /// The schedules by name.
    pub fn schedules(&self) -> &BTreeMap<String, ScheduleTarget> {
        &self.served.schedules
    }

    /// The event source mappings.
    pub fn mappings(&self) -> &[Mapping] {
        &self.served.mappings
    }

    /// The rules on the stack's bus that invoke a function (empty against real AWS,
    /// which dispatches them itself).
    pub fn bus_rules(&self) -> &[BusDispatch] {
        &self.served.bus_rules
    }

    /// Fires schedule `name` now and returns the function's response payload.
    pub async fn fire_schedule(&self, name: &str) -> Result<Vec<u8>, LocalStackError> {
        let target = self
            .served
            .schedules
            .get(name)
            .ok_or_else(|| LocalStackError::UnknownSchedule(name.to_owned()))?;
        Ok(target.fire().await?)
    }

    /// Enables or disables the mapping of `function` on `queue` (logical ids); returns
    /// once a batch in progress has finished.
    pub async fn set_mapping_enabled(
        &self,
        function: &str,
        queue: &str,
        enabled: bool,
    ) -> Result<(), LocalStackError> {
        set_mapping_enabled(&self.served, function, queue, enabled).await
    }

    /// The Runtime API emulator's measurements per function.
    pub fn summary(&self) -> Vec<FunctionSummary> {
        self.served
            .functions
            .values()
            .map(FunctionRuntime::summary)
            .collect()
    }

    /// Stops every function process and server and waits for them to end: each
    /// process is killed and reaped, each poller and schedule returns.
    pub async fn stop(mut self) {
        self.shut_down().await;
    }

    /// What [`LocalStack::stop`] does, leaving the emulator running (it stops when the
    /// stack is dropped).
    async fn shut_down(&mut self) {
        self.shutdown.send_replace(true);
        for server in std::mem::take(&mut self.servers) {
            server.abort();
            let _ = server.await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        for mut task in std::mem::take(&mut self.tasks) {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                // Dropping the aborted task drops its child, which kills it.
                task.abort();
                let _ = task.await;
            }
        }
        if let Some(path) = self.state_path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for LocalStack {
    /// A stack dropped without [`LocalStack::stop`] (a panicking test) still stops
    /// everything: aborting a supervisor drops its `kill_on_drop` child.
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        for task in self.servers.iter().chain(&self.tasks) {
            task.abort();
        }
        if let Some(path) = self.state_path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn set_mapping_enabled(
    served: &Served,
    function: &str,
    queue: &str,
    enabled: bool,
) -> Result<(), LocalStackError> {
    let mapping = served
        .mappings
        .iter()
        .find(|m| m.function() == function && m.queue() == queue)
        .ok_or_else(|| LocalStackError::UnknownMapping {
            function: function.to_owned(),
            queue: queue.to_owned(),
        })?;
    mapping.set_enabled(enabled).await;
    Ok(())
}

/// `value` on this stack's API when it is a URL on the HTTP API's domain as the
/// emulator resolved it (the API is served locally, so its id became `local`).
fn on_local_api(value: &str, region: &str, api_url: &str) -> Option<String> {
    let domain = format!("https://local.execute-api.{region}.amazonaws.com");
    let rest = value.strip_prefix(&domain)?;
    (rest.is_empty() || rest.starts_with('/')).then(|| format!("{api_url}{rest}"))
}

fn as_refs(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// The variables Lambda sets for every function (those `lambda_runtime` reads included).
fn lambda_environment(
    name: &str,
    memory: u64,
    region: &str,
    executable: &std::path::Path,
) -> Vec<(String, String)> {
    let task_root = executable
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let today = OffsetDateTime::now_utc().date();
    [
        ("AWS_LAMBDA_FUNCTION_NAME", name.to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory.to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            format!(
                "{}/{:02}/{:02}/[$LATEST]{}",
                today.year(),
                u8::from(today.month()),
                today.day(),
                request_id().replace('-', "")
            ),
        ),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
        ("AWS_REGION", region.to_owned()),
        ("AWS_DEFAULT_REGION", region.to_owned()),
        ("LAMBDA_TASK_ROOT", task_root),
        ("_HANDLER", "bootstrap".to_owned()),
        ("TZ", ":UTC".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

async fn listen(port: u16) -> Result<tokio::net::TcpListener, LocalStackError> {
    tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|source| LocalStackError::Listen { port, source })
}

fn serve(listener: tokio::net::TcpListener, router: Router) -> JoinHandle<()> {
    tokio::spawn(async move {
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(err) = axum::serve(listener, service).await {
            eprintln!("[local-stack] server stopped: {err}");
        }
    })
}

async fn run_schedule(target: ScheduleTarget, mut shutdown: watch::Receiver<bool>) {
    let created = OffsetDateTime::now_utc();
    let mut after = created;
    while let Some(next) = target.expression.next_after(created, after) {
        let wait = (next - OffsetDateTime::now_utc())
            .try_into()
            .unwrap_or(Duration::ZERO);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        after = next;
        println!(
            "[local-stack] schedule {} ({}) → {}",
            target.name,
            target.expression_text,
            target.function.logical_id()
        );
        // Schedules invoke asynchronously: an error is logged, not returned anywhere.
        if let Err(err) = target.fire().await {
            eprintln!("[local-stack] schedule {}: {err}", target.name);
        }
    }
}

/// API Gateway HTTP API body limit.
const MAX_API_BODY: usize = 10 * 1024 * 1024;

/// How long [`LocalStack::stop_and_scan`] waits for a stopped function's output to end.
const OUTPUT_DRAIN_LIMIT: Duration = Duration::from_secs(10);

fn api_router(served: Arc<Served>) -> Router {
    Router::new()
        .fallback(handle_api_request)
        .layer(DefaultBodyLimit::max(MAX_API_BODY))
        .with_state(served)
}

async fn handle_api_request(
    State(served): State<Arc<Served>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_API_BODY).await {
        Ok(bytes) => bytes,
        Err(_) => return to_response(ApiResponse::payload_too_large(), ""),
    };
    let method = parts.method.as_str();
    let raw_path = parts.uri.path();
    let raw_query = parts.uri.query().unwrap_or_default();
    let request_id = request_id();
    let matched = served.routes.find(method, raw_path);
    let decision = match &matched {
        Some(matched) if matched.route.iam => {
            let presented = parts
                .headers
                .get(crate::http_api::LOCAL_IAM_HEADER)
                .map(HeaderValue::as_bytes);
            served.iam.decide(presented, method, raw_path)
        }
        _ => Decision::Allowed,
    };
    let api_response = match matched {
        None => ApiResponse::not_found(),
        // API Gateway answers an unsigned request to an IAM route, or one its
        // principal's policies do not allow, with 403 Forbidden.
        Some(_) if decision != Decision::Allowed => {
            if let Decision::Denied { resource } = &decision {
                println!(
                    "[api] {method} {raw_path}: the credential's policy does not allow {resource}"
                );
            }
            ApiResponse::forbidden()
        }
        Some(matched) => {
            let headers: Vec<(String, String)> = parts
                .headers
                .iter()
                .map(|(name, value)| {
                    (
                        name.as_str().to_owned(),
                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let source_ip = peer.ip().to_string();
            let incoming = IncomingRequest {
                method,
                raw_path,
                raw_query,
                headers: &headers,
                body: &body,
                source_ip: &source_ip,
                port: served.api_port,
            };
            let event = crate::http_api::build_event(
                &incoming,
                &matched,
                &request_id,
                OffsetDateTime::now_utc(),
            );
            match served.functions.get(&matched.route.function) {
                None => ApiResponse::internal_error(),
                Some(function) => match function.invoke(event.to_string().into_bytes()).await {
                    Ok(payload) => {
                        let response = ApiResponse::from_payload(&payload);
                        if response.status >= 500 {
                            function.record_failed(1);
                        }
                        response
                    }
                    Err(InvokeError::Timeout(_)) => ApiResponse::service_unavailable(),
                    Err(err) => {
                        eprintln!("[api] {method} {raw_path}: {err}");
                        ApiResponse::internal_error()
                    }
                },
            }
        }
    };
    println!(
        "[api] {method} {raw_path} → {} ({} ms)",
        api_response.status,
        started.elapsed().as_millis()
    );
    to_response(api_response, &request_id)
}

fn to_response(api: ApiResponse, request_id: &str) -> Response {
    let mut response = Response::new(Body::from(Bytes::from(api.body)));
    *response.status_mut() = StatusCode::from_u16(api.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let headers = response.headers_mut();
    for (name, value) in api.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            headers.append(name, value);
        }
    }
    if let Ok(value) = HeaderValue::try_from(request_id) {
        headers.insert("apigw-requestid", value);
    }
    response
}

fn control_router(served: Arc<Served>) -> Router {
    Router::new()
        .route("/summary", get(control_summary))
        .route("/schedules", get(control_schedules))
        .route("/schedules/{name}/fire", post(control_fire))
        .route("/iam/credentials", post(control_issue_credential))
        .route(
            "/mappings/{function}/{queue}/{action}",
            post(control_mapping),
        )
        .with_state(served)
}

#[derive(Debug, Deserialize)]
struct SummaryQuery {
    format: Option<String>,
}

async fn control_summary(
    State(served): State<Arc<Served>>,
    Query(query): Query<SummaryQuery>,
) -> Response {
    let summaries: Vec<FunctionSummary> = served
        .functions
        .values()
        .map(FunctionRuntime::summary)
        .collect();
    if query.format.as_deref() == Some("table") {
        return crate::runtime::summary_table(&summaries).into_response();
    }
    axum::Json(summaries).into_response()
}

async fn control_schedules(State(served): State<Arc<Served>>) -> Response {
    let schedules: Vec<serde_json::Value> = served
        .schedules
        .values()
        .map(|s| {
            serde_json::json!({
                "name": s.name,
                "expression": s.expression_text,
                "function": s.function.logical_id(),
                "enabled": s.enabled,
            })
        })
        .collect();
    axum::Json(schedules).into_response()
}

#[derive(Debug, Deserialize)]
struct CredentialQuery {
    tenant: Option<String>,
}

/// Issues a local credential (what `junction-local credential` asks for): limited to one
/// tenant's management routes with `?tenant=<id>`, else by the IAM policy document in
/// the body. 201 `{"header", "key", "policy"}`, or 400 saying why the policy is refused.
async fn control_issue_credential(
    State(served): State<Arc<Served>>,
    Query(query): Query<CredentialQuery>,
    body: Bytes,
) -> Response {
    let policy = match &query.tenant {
        Some(tenant) => crate::iam::tenant_policy(served.iam.region(), tenant),
        None => ExecuteApiPolicy::parse(&String::from_utf8_lossy(&body)),
    };
    match policy {
        Ok(policy) => {
            let document = policy.document();
            let key = served.iam.issue(policy);
            println!("[local-stack] IAM credential issued for {document}");
            (
                StatusCode::CREATED,
                axum::Json(serde_json::json!({
                    "header": crate::iam::LOCAL_IAM_HEADER,
                    "key": key,
                    "policy": document,
                })),
            )
                .into_response()
        }
        Err(err) => (StatusCode::BAD_REQUEST, format!("{err}\n")).into_response(),
    }
}

async fn control_fire(State(served): State<Arc<Served>>, Path(name): Path<String>) -> Response {
    let Some(target) = served.schedules.get(&name) else {
        return (StatusCode::NOT_FOUND, format!("no schedule named {name}\n")).into_response();
    };
    println!(
        "[local-stack] schedule {name} fired on demand → {}",
        target.function.logical_id()
    );
    match target.fire().await {
        Ok(payload) => (
            StatusCode::OK,
            [("content-type", "application/json")],
            payload,
        )
            .into_response(),
        Err(err) => (StatusCode::BAD_GATEWAY, format!("{err}\n")).into_response(),
    }
}

async fn control_mapping(
    State(served): State<Arc<Served>>,
    Path((function, queue, action)): Path<(String, String, String)>,
) -> Response {
    let enabled = match action.as_str() {
        "enable" => true,
        "disable" => false,
        _ => return (StatusCode::NOT_FOUND, "use enable or disable\n").into_response(),
    };
    match set_mapping_enabled(&served, &function, &queue, enabled).await {
        Ok(()) => (StatusCode::OK, format!("{action}d\n")).into_response(),
        Err(err) => (StatusCode::NOT_FOUND, format!("{err}\n")).into_response(),
    }
}

/// The string values under keys naming a secret (`signing_secrets`, `client_secret`,
/// `private_key`, `token`, `password`), at any depth.
fn secret_strings(value: &serde_json::Value, secret: bool, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(text) if secret => out.push(text.clone()),
        serde_json::Value::Array(items) => {
            for item in items {
                secret_strings(item, secret, out);
            }
        }
        serde_json::Value::Object(fields) => {
            for (key, item) in fields {
                let key = key.to_ascii_lowercase();
                let named = ["secret", "key", "token", "password"]
                    .iter()
                    .any(|word| key.contains(word));
                secret_strings(item, secret || named, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_on_the_emulated_apis_domain_move_to_the_local_api() {
        let api = "http://127.0.0.1:4000";
        assert_eq!(
            on_local_api(
                "https://local.execute-api.us-east-1.amazonaws.com/webhooks/",
                "us-east-1",
                api
            )
            .as_deref(),
            Some("http://127.0.0.1:4000/webhooks/")
        );
        assert_eq!(
            on_local_api(
                "https://local.execute-api.us-east-1.amazonaws.com",
                "us-east-1",
                api
            )
            .as_deref(),
            Some(api)
        );
        for other in [
            "https://hub.example.com/webhooks/",
            "https://local.execute-api.us-east-1.amazonaws.com.evil.example/",
            "https://local.execute-api.eu-west-1.amazonaws.com/webhooks/",
            "junction",
        ] {
            assert_eq!(on_local_api(other, "us-east-1", api), None, "{other}");
        }
    }
}
