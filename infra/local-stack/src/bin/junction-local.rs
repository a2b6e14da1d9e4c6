//! `junction-local`: runs the whole hub on one machine from `template.yaml`.
//!
//! `up` starts the AWS emulator, deploys the template into it, seeds development
//! secrets, builds and runs the function binaries and serves the HTTP API, the SQS
//! event source mappings and the schedules until Ctrl-C. The other subcommands talk to
//! a running `up` through its control API (found in `.local/junction-local/<stack>.json`).

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use local_stack::{
    binaries::Profile,
    emulator::{StackDescription, repo_root},
    runtime::{FunctionSummary, summary_table},
    stack::{Backend, LocalStack, LocalStackConfig, StateFile, state_path},
};

#[derive(Debug, Parser)]
#[command(
    name = "junction-local",
    about = "Run Junction on one machine from template.yaml"
)]
struct Cli {
    /// The stack's name (in the emulator, or in AWS with --aws).
    #[arg(
        long,
        global = true,
        env = "JUNCTION_STACK",
        default_value = "junction-local"
    )]
    stack_name: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start everything and serve until Ctrl-C.
    Up(UpArgs),
    /// Fire a schedule of the running stack now and print the function's response.
    Fire {
        /// The schedule's logical id (see `up`'s output).
        schedule: String,
    },
    /// Print the Runtime API emulator's measurements of the running stack.
    Summary {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Issue a credential for the running stack's IAM-authorized routes, limited as an
    /// IAM principal's policy would be: to one tenant's management routes (--tenant), or
    /// to what an IAM policy document allows (--policy). Prints the key alone on stdout
    /// (`export JUNCTION_LOCAL_IAM_KEY=$(infra/junction-local credential --tenant acme)`).
    Credential {
        /// Grant `execute-api:Invoke` on `…/*/*/v1/tenants/<TENANT>/*` only.
        #[arg(long, required_unless_present = "policy", conflicts_with = "policy")]
        tenant: Option<String>,
        /// An IAM policy document (JSON: Allow/Deny statements with Action and Resource),
        /// e.g. the README's example with the local API's ARN.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
    },
    /// Enable or disable an SQS event source mapping of the running stack.
    Mapping {
        #[arg(value_parser = ["enable", "disable"])]
        action: String,
        /// The function's logical id.
        function: String,
        /// The queue's logical id.
        queue: String,
    },
}

#[derive(Debug, clap::Args)]
struct UpArgs {
    /// The template's `Prefix` parameter: secrets are `<prefix>/webhooks/<provider>`.
    #[arg(long, env = "JUNCTION_PREFIX", default_value = "junction")]
    prefix: String,
    /// A template parameter override (repeatable).
    #[arg(long = "parameter", value_name = "KEY=VALUE")]
    parameters: Vec<String>,
    /// The SAM template.
    #[arg(long)]
    template: Option<PathBuf>,
    /// Port of the HTTP API on 127.0.0.1 (0 picks a free one).
    #[arg(long, env = "JUNCTION_API_PORT", default_value_t = 3000)]
    api_port: u16,
    /// Port of the control API (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    control_port: u16,
    /// Build the functions with the release profile (what Lambda runs; slow to build).
    #[arg(long)]
    release: bool,
    /// Use this running emulator instead of starting one.
    #[arg(long, env = "JUNCTION_EMULATOR_ENDPOINT")]
    emulator_endpoint: Option<String>,
    /// Run the functions against the stack deployed in real AWS (`sam deploy`) with
    /// your own credentials: no emulator, no deploy, no seeded secrets.
    #[arg(long, conflicts_with = "emulator_endpoint")]
    aws: bool,
    /// Do not create development signing secrets.
    #[arg(long)]
    no_seed: bool,
    /// A catalog overlay (TOML `[[provider]]` entries) to add or replace providers
    /// without rebuilding, stored as `<prefix>/catalog/local-overlay`.
    #[arg(long, env = "JUNCTION_CATALOG_OVERLAY")]
    catalog_overlay: Option<std::path::PathBuf>,
    /// Do not fire schedules on time (`fire` still works).
    #[arg(long)]
    no_schedules: bool,
    /// Do not publish development keys for the JWT providers (Gmail push, Plaid): their
    /// entries keep the providers' key URLs and `send-webhook gmail|plaid` is refused.
    #[arg(long)]
    no_jwt_keys: bool,
}

/// Errors are printed as their chain of causes, never with a backtrace (`anyhow`'s
/// `Debug`, which `RUST_BACKTRACE` turns on, is for bugs, not for a user's mistake).
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("junction-local: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let root = repo_root();
    match cli.command {
        Command::Up(args) => up(root, cli.stack_name, args).await,
        Command::Fire { schedule } => {
            let state = read_state(&root, &cli.stack_name)?;
            let url = format!("{}/schedules/{schedule}/fire", state.control_url);
            let (status, body) = control_request(reqwest::Method::POST, &url).await?;
            println!("{body}");
            if !status.is_success() {
                bail!("firing {schedule} failed ({status})");
            }
            Ok(())
        }
        Command::Summary { json } => {
            let state = read_state(&root, &cli.stack_name)?;
            let url = format!("{}/summary", state.control_url);
            let (status, body) = control_request(reqwest::Method::GET, &url).await?;
            if !status.is_success() {
                bail!("the control API answered {status}: {body}");
            }
            if json {
                println!("{body}");
            } else {
                let summaries: Vec<FunctionSummary> =
                    serde_json::from_str(&body).context("reading the summary")?;
                print!("{}", summary_table(&summaries));
            }
            Ok(())
        }
        Command::Credential { tenant, policy } => {
            let state = read_state(&root, &cli.stack_name)?;
            let mut url = reqwest::Url::parse(&format!("{}/iam/credentials", state.control_url))
                .context("the control URL")?;
            let body = match (&tenant, &policy) {
                (Some(tenant), _) => {
                    url.query_pairs_mut().append_pair("tenant", tenant);
                    String::new()
                }
                (None, Some(path)) => std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
                (None, None) => bail!("--tenant or --policy"),
            };
            let response = reqwest::Client::new()
                .post(url.clone())
                .timeout(Duration::from_secs(30))
                .body(body)
                .send()
                .await
                .with_context(|| {
                    format!("calling the local stack at {url}; is `up` still running?")
                })?;
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            if !status.is_success() {
                bail!(
                    "the stack refused the credential ({status}): {}",
                    text.trim()
                );
            }
            let issued: serde_json::Value =
                serde_json::from_str(&text).context("reading the issued credential")?;
            let (Some(header), Some(key)) = (issued["header"].as_str(), issued["key"].as_str())
            else {
                bail!("the control API answered without a key: {text}");
            };
            println!("{key}");
            eprintln!("allowed by: {}", issued["policy"]);
            eprintln!(
                "send it as {header}: <key>, or set JUNCTION_LOCAL_IAM_KEY for infra/junction connect; outside the policy the API answers 403"
            );
            Ok(())
        }
        Command::Mapping {
            action,
            function,
            queue,
        } => {
            let state = read_state(&root, &cli.stack_name)?;
            let url = format!("{}/mappings/{function}/{queue}/{action}", state.control_url);
            let (status, body) = control_request(reqwest::Method::POST, &url).await?;
            print!("{body}");
            if !status.is_success() {
                bail!("{action} failed ({status})");
            }
            Ok(())
        }
    }
}

fn read_state(root: &std::path::Path, stack_name: &str) -> anyhow::Result<StateFile> {
    let path = state_path(root, stack_name);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no running local stack {stack_name} ({} is missing); start one with infra/dev",
            path.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))
}

async fn control_request(
    method: reqwest::Method,
    url: &str,
) -> anyhow::Result<(reqwest::StatusCode, String)> {
    let response = reqwest::Client::new()
        .request(method, url)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .with_context(|| format!("calling the local stack at {url}; is `up` still running?"))?;
    let status = response.status();
    Ok((status, response.text().await.unwrap_or_default()))
}

async fn up(root: PathBuf, stack_name: String, args: UpArgs) -> anyhow::Result<()> {
    let mut config = LocalStackConfig::new(root.clone());
    config.stack_name = stack_name;
    config.prefix = Some(args.prefix);
    if let Some(template) = args.template {
        config.template = template;
    }
    for pair in &args.parameters {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--parameter {pair}: expected KEY=VALUE"))?;
        config.parameters.push((key.to_owned(), value.to_owned()));
    }
    config.api_port = args.api_port;
    config.control_port = args.control_port;
    config.profile = if args.release {
        Profile::Release
    } else {
        Profile::Debug
    };
    config.backend = if args.aws {
        Backend::DeployedStack
    } else {
        Backend::Emulator {
            endpoint: args.emulator_endpoint,
        }
    };
    config.seed_secrets = !args.no_seed;
    config.catalog_overlay = args.catalog_overlay.clone();
    config.run_schedules = !args.no_schedules;
    config.serve_jwt_keys = !args.no_jwt_keys;

    eprintln!(
        "junction-local: deploying {} as stack {} …",
        config.template.display(),
        config.stack_name
    );
    let stack = LocalStack::start(config.clone())
        .await
        .context("starting the local stack")?;
    if !stack.wait_ready(Duration::from_secs(30)).await {
        eprintln!("junction-local: some functions have not asked for work yet; see their logs");
    }
    print_banner(&stack, &config);

    wait_for_signal().await?;
    eprintln!("\njunction-local: stopping …");
    let summaries = stack.summary();
    stack.stop().await;
    print!("{}", summary_table(&summaries));
    eprintln!("junction-local: stopped every process it started.");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}

fn print_banner(stack: &LocalStack, config: &LocalStackConfig) {
    let description: &StackDescription = stack.description();
    println!();
    println!("Junction local stack `{}` is up.", description.stack_name);
    println!();
    println!("  HTTP API       {}", stack.api_url());
    match stack.emulator_endpoint() {
        Some(endpoint) => println!("  AWS emulator   {endpoint}  (moto)"),
        None => println!("  AWS            real AWS (your credentials), stack deployed by sam"),
    }
    println!(
        "  Control        {}  (GET /summary, POST /schedules/<name>/fire, POST /iam/credentials)",
        stack.control_url()
    );
    println!();
    println!("Functions (Runtime API emulator, one process each)");
    for (id, function) in stack.functions() {
        let spec = function.spec();
        let binary = spec
            .executable
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let pid = function
            .pid()
            .map_or_else(|| "-".to_owned(), |pid| pid.to_string());
        println!(
            "  {id:<32} {binary:<20} pid {pid:<8} timeout {} s",
            spec.timeout.as_secs()
        );
    }
    println!();
    println!("Routes");
    for route in stack.routes().routes() {
        println!("  {:<44} → {}", route.route_key, route.function);
    }
    println!();
    println!("Queues");
    // The queues standing in for bus rules' function targets are listed with the rules.
    let dispatch_queues: Vec<&str> = description
        .bus_rules
        .iter()
        .filter_map(|rule| rule.queue.as_deref())
        .collect();
    for (id, queue) in description
        .queues
        .iter()
        .filter(|(id, _)| !dispatch_queues.contains(&id.as_str()))
    {
        let redrive = queue
            .attributes
            .get("RedrivePolicy")
            .and_then(|policy| serde_json::from_str::<serde_json::Value>(policy).ok())
            .map(|policy| {
                let target = policy["deadLetterTargetArn"].as_str().unwrap_or_default();
                let dlq = description
                    .queues
                    .iter()
                    .find(|(_, q)| q.arn.as_deref() == Some(target))
                    .map_or(target, |(id, _)| id.as_str());
                format!(
                    "  → {dlq} after {} receives",
                    policy["maxReceiveCount"].to_string().trim_matches('"')
                )
            })
            .unwrap_or_default();
        println!("  {id:<32} {}{redrive}", queue.url);
    }
    println!();
    if stack.mappings().is_empty() {
        println!("SQS event source mappings: none in this template");
    } else {
        println!("SQS event source mappings");
        for mapping in stack.mappings() {
            let state = if mapping.is_enabled() {
                ""
            } else {
                " (disabled)"
            };
            println!("  {} → {}{state}", mapping.queue(), mapping.function());
        }
    }
    if stack.schedules().is_empty() {
        println!("Schedules: none in this template");
    } else {
        println!("Schedules (fire now: junction-local fire <name>)");
        for (name, schedule) in stack.schedules() {
            let state = if !schedule.enabled {
                " (disabled)"
            } else if config.run_schedules {
                ""
            } else {
                " (not fired on time: --no-schedules)"
            };
            println!(
                "  {name:<32} {:<28} → {}{state}",
                schedule.expression_text,
                schedule.function.logical_id()
            );
        }
    }
    if !stack.bus_rules().is_empty() {
        println!("Rules on the event bus (events matching the pattern invoke the function)");
        for rule in stack.bus_rules() {
            println!("  {} {} → {}", rule.rule(), rule.pattern(), rule.function());
        }
    }
    let created: Vec<_> = stack
        .seeded_secrets()
        .iter()
        .filter_map(|s| s.created.as_ref().map(|c| (s, c)))
        .collect();
    if !created.is_empty() {
        println!();
        println!("Development signing secrets created (DEVELOPMENT ONLY, random, local):");
        for (seeded, secret) in created {
            match &secret.key_id {
                // A JWT provider: the private key is a JWK in the secret; its kid and the
                // claims are what a developer compares against a token.
                Some(kid) => {
                    let claims: Vec<String> = secret
                        .jwt_claims
                        .iter()
                        .map(|(name, value)| format!("{name}={value}"))
                        .collect();
                    let configured = if secret.signing_secret.is_empty() {
                        claims.join(" ")
                    } else {
                        secret.signing_secret.clone()
                    };
                    println!("  {:<36} {configured}", seeded.name);
                    println!(
                        "  {:<36} token signing key: development_signing_key (JWK, kid {kid})",
                        ""
                    );
                }
                None => {
                    println!("  {:<36} {}", seeded.name, secret.signing_secret);
                    if let Some(key) = &secret.signing_key {
                        println!("  {:<36} signing key (private seed): {key}", "");
                    }
                }
            }
        }
    }
    let kept = stack
        .seeded_secrets()
        .iter()
        .filter(|s| s.created.is_none())
        .count();
    if kept > 0 {
        println!("  ({kept} existing webhook secret(s) left as they were)");
    }
    if !stack.jwt_key_urls().is_empty() {
        println!();
        println!(
            "Development JWT keys (Gmail push, Plaid; the catalog overlay points the ingress here):"
        );
        for (provider, url) in stack.jwt_key_urls() {
            println!("  {provider:<36} {url}");
        }
    }
    println!();
    println!("Point the CLI at it (another terminal):");
    if let Some(endpoint) = stack.emulator_endpoint() {
        println!(
            "  export AWS_ENDPOINT_URL={endpoint} JUNCTION_STACK={} JUNCTION_API_URL={}",
            description.stack_name,
            stack.api_url()
        );
    } else {
        println!(
            "  export JUNCTION_STACK={} JUNCTION_API_URL={}",
            description.stack_name,
            stack.api_url()
        );
    }
    println!("  infra/junction send-webhook github");
    println!("  infra/junction status");
    println!(
        "  JUNCTION_LOCAL_IAM_KEY={} infra/junction connect <provider> --tenant acme --return-to https://app.example.com/integrations",
        stack.local_iam_key()
    );
    println!();
    println!(
        "The management API (/v1/tenants/<tenant>/…) is IAM-authorized in AWS; locally, send the header"
    );
    println!(
        "  {}: {}   e.g. curl -H '{}: {}' '{}/v1/tenants/acme/connections'",
        local_stack::http_api::LOCAL_IAM_HEADER,
        stack.local_iam_key(),
        local_stack::http_api::LOCAL_IAM_HEADER,
        stack.local_iam_key(),
        stack.api_url()
    );
    println!(
        "That credential may call every route. One limited to a tenant, as an IAM policy on /v1/tenants/acme/* would be (403 elsewhere):"
    );
    println!("  infra/junction-local credential --tenant acme      (or --policy policy.json)");
    println!();
    println!("Ctrl-C stops every process; the measurements table is printed on exit.");
}
