//! `junction`: try providers without the provider, and operate the queues.
//!
//! Points at the AWS emulator when `--endpoint` / `AWS_ENDPOINT_URL` is set (the local
//! stack prints the exports), and at real AWS otherwise.

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use junction_catalog::EndpointRules;
use junction_cli::{
    connect::{ApiAuth, create_session, parse_params},
    connections::{connection_table, connections_in, find_stack_table, stack_table},
    events::{self, Reading},
    output::{Output, causes},
    overlays::{overlay_statuses, overlay_table},
    polls::force_poll,
    queues::{RedriveMethod, StackQueues, list_dead_letters, redrive, with_reasons},
    samples::{Sample, sample_for},
    sdk_config,
    stack::expected_queues,
    stack_catalog::{OverlaySource, StackCatalog, stack_catalog},
    webhook::{post, sign_webhook, sign_webhook_for_public_url, signing_key, webhook_url},
};
use junction_pipeline::dead_letters::DynamoDeadLetterNotes;
use junction_webhooks::SigningSecret;
use time::OffsetDateTime;

#[derive(Debug, Parser)]
#[command(
    name = "junction",
    about = "Send signed sample webhooks, inspect and redrive the DLQ, show queue depths"
)]
struct Cli {
    /// The AWS endpoint (the emulator); real AWS when unset.
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL")]
    endpoint: Option<String>,
    /// The AWS region (default: your AWS configuration; us-east-1 for the emulator).
    #[arg(long, global = true)]
    region: Option<String>,
    /// The stack's name: its queues are named `<stack>-…`.
    #[arg(
        long = "stack-name",
        visible_alias = "stack",
        global = true,
        env = "JUNCTION_STACK",
        default_value = "junction-local"
    )]
    stack: String,
    /// The stack's `Prefix` parameter: secrets are `<prefix>/webhooks/<provider>`.
    #[arg(
        long,
        global = true,
        env = "JUNCTION_PREFIX",
        default_value = "junction"
    )]
    prefix: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sign a realistic sample (or your payload) the way the provider does, and post it.
    SendWebhook(SendWebhookArgs),
    /// Run a connection's sync jobs now (a provider's missed window): from their cursors,
    /// or with --full from scratch.
    Poll {
        /// The connection id (`conn_…`).
        connection: String,
        /// Only this model's job (default: every model the catalog polls for the
        /// connection's provider).
        #[arg(long)]
        model: Option<String>,
        /// Clear the cursors: a full resync; records already stored unchanged are not
        /// published again.
        #[arg(long)]
        full: bool,
    },
    /// Mint a connect session through the management API and print its URL: send the
    /// user there to connect an account (or, with --connection, to reconnect it).
    Connect(ConnectArgs),
    /// Dead-letter queue: list or redrive.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Depth of each queue and dead-letter queue of the stack, whether each catalog
    /// overlay (`<prefix>/catalog/*`) is valid, and every connection's state, token and
    /// last successful sync. Exits non-zero when a queue or table of the stack is
    /// missing or an overlay is invalid.
    Status,
    /// Show the CloudEvents the stack publishes on its event bus. The first run
    /// subscribes a queue of the CLI's own to the bus (rule `junction-cli-events`, queue
    /// `junction-cli-events-<stack>`); events published from then on wait there until
    /// shown.
    Events(EventsArgs),
    /// Check each sandbox connection's contract requests (through the management API's
    /// proxy) against the recorded schemas and print a table; without a sandbox
    /// connection (or --api-url), check the recorded fixtures. Exits non-zero when a
    /// contract is broken.
    ContractTest(ContractTestArgs),
}

mod contract_test;

#[derive(Debug, clap::Args)]
struct ContractTestArgs {
    /// Only this provider's contracts.
    #[arg(long)]
    provider: Option<String>,
    /// Base URL of the HTTP API (the local stack prints it; a deployed stack's
    /// ManagementApiUrl output). Without it, the recorded fixtures are checked.
    #[arg(long, env = "JUNCTION_API_URL")]
    api_url: Option<String>,
    /// The local stack's stand-in IAM credential; without it requests are signed with
    /// SigV4 with your AWS credentials.
    #[arg(long, env = "JUNCTION_LOCAL_IAM_KEY", hide_env_values = true)]
    local_iam_key: Option<String>,
    /// The pinned versions and contract reads come from the catalog the stack runs
    /// with, as the nightly check's do.
    #[command(flatten)]
    overlay: OverlayArgs,
}

/// `junction contract-test`: see [`contract_test`].
async fn run_contract_test(
    aws: &aws_config::SdkConfig,
    stack: &str,
    prefix: &str,
    rules: EndpointRules,
    args: ContractTestArgs,
    out: &mut Output<std::io::Stdout>,
) -> anyhow::Result<ExitCode> {
    // The overlay defining a checked provider, as `send-webhook` finds it.
    let built_in = junction_catalog::Catalog::embedded()?;
    let checked: Vec<&str> = match &args.provider {
        Some(provider) => vec![provider.as_str()],
        None => built_in
            .providers()
            .map(|provider| provider.id.as_str())
            .filter(|id| !junction_catalog::contract_reads(id).is_empty())
            .collect(),
    };
    let stack_catalog = stack_catalog(
        &aws_sdk_secretsmanager::Client::new(aws),
        &args.overlay.source(prefix),
        rules,
        &checked,
    )
    .await?;
    if let Some(overlay) = &stack_catalog.overlay {
        eprintln!("contracts as the catalog overlay {overlay} pins them");
    }
    let catalog: &'static junction_catalog::Catalog = Box::leak(Box::new(stack_catalog.catalog));
    let (sandboxes, client) = match args.api_url {
        Some(api_url) => {
            let table = stack_table(
                &aws_sdk_dynamodb::Client::new(aws),
                stack,
                "ConnectionsTable",
            )
            .await?;
            let auth = match args.local_iam_key {
                Some(key) => ApiAuth::LocalIam(key),
                None => ApiAuth::from_sdk_config(aws).await?,
            };
            (
                Some(junction_contracts::aws::DynamoSandboxConnections::from_config(aws, table)),
                Some(contract_test::ProxyContractClient {
                    http: reqwest::Client::new(),
                    api_url,
                    auth,
                }),
            )
        }
        None => (None, None),
    };
    let sandboxes = sandboxes
        .as_ref()
        .map(|s| s as &dyn junction_contracts::check::SandboxConnections);
    let (results, live) =
        contract_test::contract_test(catalog, sandboxes, client, args.provider.as_deref()).await?;
    if !live {
        out.line("no sandbox connection checked: comparing the recorded fixtures with the recorded schemas")?;
    }
    out.print(&contract_test::table(&results))?;
    Ok(if results.iter().any(|c| c.verdict.is_failure()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Debug, clap::Args)]
struct EventsArgs {
    /// Keep showing events as they come, until Ctrl-C.
    #[arg(long, conflicts_with = "unsubscribe")]
    follow: bool,
    /// Seconds to wait for the first event.
    #[arg(long, default_value_t = 10)]
    wait: u64,
    /// Remove the rule and the queue (and any events still waiting).
    #[arg(long)]
    unsubscribe: bool,
}

#[derive(Debug, clap::Args)]
struct SendWebhookArgs {
    /// The catalog provider (github, stripe, slack, twilio, …).
    provider: String,
    /// Post this file as the body instead of the built-in sample.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Content type of --file (default application/json).
    #[arg(long)]
    content_type: Option<String>,
    /// The full URL to post to (default `<api-url>/webhooks/<provider>[/<endpoint>]`).
    #[arg(long)]
    url: Option<String>,
    /// Base URL of the HTTP API (printed by the local stack; for a deployed stack the
    /// API's URL without `/webhooks/`).
    #[arg(long, env = "JUNCTION_API_URL")]
    api_url: Option<String>,
    /// The `{endpoint}` path segment, for per-endpoint secrets.
    #[arg(long = "webhook-endpoint")]
    webhook_endpoint: Option<String>,
    /// Sign over this public base URL (the stack's `PublicBaseUrl`, such as
    /// `https://hooks.example.com`) followed by the posted path and query, while still
    /// posting to --api-url or --url: the URL a URL-signing provider (Twilio, Square,
    /// HubSpot) registered, which the ingress verifies against when `PublicBaseUrl` is set.
    #[arg(long, value_name = "BASE_URL")]
    public_url: Option<String>,
    /// An extra header, `Name: value` (repeatable; replaces the sample's).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Sign with this secret instead of the configured one (Gmail, Plaid: a private JWK,
    /// or `{"key": <private JWK>, "claims": {"aud": …, "email": …}}`).
    #[arg(long, env = "JUNCTION_SIGNING_SECRET", hide_env_values = true)]
    secret: Option<String>,
    #[command(flatten)]
    overlay: OverlayArgs,
}

/// Which catalog overlay the stack runs with (see [`stack_catalog`]).
#[derive(Debug, clap::Args)]
struct OverlayArgs {
    /// The catalog overlay the stack runs with, as a file (what `infra/dev
    /// --catalog-overlay` was given, which reads the same variable). Default: the
    /// stack's overlay secret under `<prefix>/catalog/` that defines the provider.
    #[arg(long, env = "JUNCTION_CATALOG_OVERLAY", value_name = "FILE")]
    catalog_overlay: Option<PathBuf>,
    /// The catalog overlay the stack runs with, as the secret its `CatalogOverlaySecret`
    /// parameter names.
    #[arg(
        long,
        env = "JUNCTION_CATALOG_OVERLAY_SECRET",
        value_name = "NAME",
        conflicts_with = "catalog_overlay"
    )]
    catalog_overlay_secret: Option<String>,
}

impl OverlayArgs {
    fn source(&self, prefix: &str) -> OverlaySource {
        match (&self.catalog_overlay, &self.catalog_overlay_secret) {
            (Some(path), _) => OverlaySource::File(path.clone()),
            (None, Some(name)) => OverlaySource::Secret(name.clone()),
            (None, None) => OverlaySource::Stack {
                prefix: prefix.to_owned(),
            },
        }
    }
}

#[derive(Debug, clap::Args)]
struct ConnectArgs {
    /// The catalog provider to connect.
    provider: String,
    /// The tenant the connection belongs to.
    #[arg(long)]
    tenant: String,
    /// Reconnect this connection (`conn_…`): the same provider account must sign in.
    #[arg(long)]
    connection: Option<String>,
    /// With --connection: accept another provider account than the connection's.
    #[arg(long)]
    allow_account_change: bool,
    /// The account is the provider's sandbox: the nightly contract check runs against
    /// the connection (`junction contract-test` too).
    #[arg(long)]
    sandbox: bool,
    /// Where the user goes afterwards (an origin in OAuthReturnToOrigins; default: the
    /// stack's OAuthDefaultReturnTo).
    #[arg(long = "return-to")]
    return_to: Option<String>,
    /// A provider URL parameter, `NAME=VALUE` (Shopify: `shop=acme.myshopify.com`).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Your product's id of the user.
    #[arg(long)]
    end_user_id: Option<String>,
    /// Your product's name for the user (with --end-user-id).
    #[arg(long)]
    end_user_name: Option<String>,
    /// The session's lifetime in seconds (10 to 1800; default 600).
    #[arg(long)]
    ttl: Option<u32>,
    /// Base URL of the HTTP API (printed by the local stack; for a deployed stack its
    /// ManagementApiUrl output, or the API's URL).
    #[arg(long, env = "JUNCTION_API_URL")]
    api_url: Option<String>,
    /// The local stack's stand-in IAM credential (it prints it); without it the request
    /// is signed with SigV4 with your AWS credentials.
    #[arg(long, env = "JUNCTION_LOCAL_IAM_KEY", hide_env_values = true)]
    local_iam_key: Option<String>,
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Show the messages of a dead-letter queue (they stay in it).
    List {
        /// The DLQ (name or suffix): `ingest-dlq` (webhooks and polled records) or
        /// `poll-dlq` (poll jobs).
        #[arg(long, default_value = "ingest-dlq")]
        queue: String,
        /// At most this many messages.
        #[arg(long, default_value_t = 100)]
        max: usize,
    },
    /// Move messages back to the queue they came from.
    Redrive {
        /// The DLQ (name or suffix): `ingest-dlq` or `poll-dlq`.
        #[arg(long, default_value = "ingest-dlq")]
        queue: String,
        /// At most this many messages (uses the copy method).
        #[arg(long)]
        max: Option<usize>,
        /// `auto`: StartMessageMoveTask on real AWS, copy on the emulator or with --max.
        #[arg(long, value_enum, default_value_t = Method::Auto)]
        method: Method,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Method {
    Auto,
    MoveTask,
    Copy,
}

/// Errors are printed as their chain of causes ([`causes`]), never with `Debug`: returning
/// an `anyhow::Error` from `main` would print a backtrace under `RUST_BACKTRACE`, which
/// says nothing a user can act on.
#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = Output::stdout();
    match run(cli, &mut out).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("junction: {}", causes(err.chain()));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, out: &mut Output<std::io::Stdout>) -> anyhow::Result<ExitCode> {
    let endpoint = cli.endpoint.as_deref().filter(|e| !e.is_empty());
    let aws = sdk_config(endpoint, cli.region.as_deref()).await;
    // An --endpoint is the local stack's emulator: its functions call loopback providers
    // over http, and overlays are checked as they check them.
    let rules = match endpoint {
        Some(_) => EndpointRules::LoopbackHttpForTests,
        None => EndpointRules::Public,
    };
    match cli.command {
        Command::SendWebhook(args) => send_webhook(&aws, &cli.prefix, rules, args, out).await,
        Command::Connect(args) => connect(&aws, args, out).await,
        Command::Status => status(&aws, &cli.stack, &cli.prefix, rules, out).await,
        Command::Events(args) => watch_events(&aws, &cli.stack, args, out).await,
        Command::ContractTest(args) => {
            run_contract_test(&aws, &cli.stack, &cli.prefix, rules, args, out).await
        }
        Command::Poll {
            connection,
            model,
            full,
        } => {
            let now = OffsetDateTime::now_utc().unix_timestamp();
            let forced =
                force_poll(&aws, &cli.stack, &connection, model.as_deref(), full, now).await?;
            for job in &forced {
                out.line(&format!("{}: {}", job.job, job.result))?;
            }
            if forced.iter().any(|job| job.result == "no such job") {
                bail!("no sync job for some of those models");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq { command } => {
            let sqs = aws_sdk_sqs::Client::new(&aws);
            let queues = StackQueues::discover(&sqs, &cli.stack).await?;
            match command {
                DlqCommand::List { queue, max } => {
                    let dlq = queues.dead_letter_queue(Some(&queue))?;
                    let mut letters = list_dead_letters(&sqs, dlq, max).await?;
                    // The consumer notes why it gave up on each ingest message, keyed by
                    // message id, in the idempotency table (poll jobs have no notes).
                    if !letters.is_empty() && dlq.name.ends_with("-ingest-dlq") {
                        let noted = async {
                            let table = stack_table(
                                &aws_sdk_dynamodb::Client::new(&aws),
                                &cli.stack,
                                "IdempotencyTable",
                            )
                            .await?;
                            let notes = DynamoDeadLetterNotes::from_config(&aws, table);
                            with_reasons(&mut letters, &notes)
                                .await
                                .context("reading the dead-letter notes")
                        };
                        if let Err(err) = noted.await {
                            eprintln!("reasons unavailable: {}", causes(err.chain()));
                        }
                    }
                    out.line(&format!("{}: {} message(s)", dlq.name, letters.len()))?;
                    if !letters.is_empty() {
                        out.line(&format!(
                            "{:<38} {:>8} {:<24} {:<20} last failure",
                            "message id", "receives", "sent", "provider/event"
                        ))?;
                    }
                    for letter in letters {
                        let sent = letter
                            .sent_at_ms
                            .and_then(|ms| {
                                OffsetDateTime::from_unix_timestamp_nanos(
                                    i128::from(ms) * 1_000_000,
                                )
                                .ok()
                            })
                            .and_then(|at| {
                                at.format(&time::format_description::well_known::Rfc3339)
                                    .ok()
                            })
                            .unwrap_or_else(|| "-".into());
                        let origin = match (&letter.provider, &letter.event_id) {
                            (Some(provider), Some(id)) => format!("{provider}/{id}"),
                            (Some(provider), None) => provider.clone(),
                            _ => format!("{} bytes", letter.body_bytes),
                        };
                        out.line(&format!(
                            "{:<38} {:>8} {:<24} {:<20} {}",
                            letter.message_id,
                            letter.receive_count,
                            sent,
                            origin,
                            letter
                                .reason
                                .as_deref()
                                .or(letter.first_error.as_deref())
                                .unwrap_or("-")
                        ))?;
                    }
                    Ok(ExitCode::SUCCESS)
                }
                DlqCommand::Redrive { queue, max, method } => {
                    let dlq = queues.dead_letter_queue(Some(&queue))?;
                    let method = match method {
                        Method::MoveTask => RedriveMethod::MoveTask,
                        Method::Copy => RedriveMethod::Copy,
                        // The emulator has no StartMessageMoveTask, and a move task
                        // cannot stop after N messages.
                        Method::Auto if endpoint.is_some() || max.is_some() => RedriveMethod::Copy,
                        Method::Auto => RedriveMethod::MoveTask,
                    };
                    let report = redrive(&sqs, &queues, dlq, max, method).await?;
                    let sources: Vec<&str> = queues
                        .sources_of(dlq)
                        .iter()
                        .map(|q| q.name.as_str())
                        .collect();
                    match report.task_handle {
                        Some(handle) => out.line(&format!(
                            "moved {} message(s) from {} to {} (StartMessageMoveTask {handle})",
                            report.moved,
                            dlq.name,
                            sources.join(", ")
                        ))?,
                        None => out.line(&format!(
                            "moved {} message(s) from {} to {} (each re-sent, then deleted); {} sent after the redrive started left in {}",
                            report.moved,
                            dlq.name,
                            sources.join(", "),
                            report.left,
                            dlq.name
                        ))?,
                    }
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
    }
}

/// `junction status`: every section it can read, each missing resource said on stderr
/// (and as a `MISSING` row), and a non-zero exit when anything is missing or invalid.
async fn status(
    aws: &aws_config::SdkConfig,
    stack: &str,
    prefix: &str,
    rules: EndpointRules,
    out: &mut Output<std::io::Stdout>,
) -> anyhow::Result<ExitCode> {
    let mut problems: Vec<String> = Vec::new();
    let sqs = aws_sdk_sqs::Client::new(aws);
    let queues = StackQueues::discover(&sqs, stack).await?;
    let missing = queues.missing(stack, &expected_queues());
    out.print(&queues.status_table_with_missing(&missing))?;
    problems.extend(
        missing
            .iter()
            .map(|queue| format!("the stack has no queue {} ({})", queue.name, queue.why)),
    );

    let secrets = aws_sdk_secretsmanager::Client::new(aws);
    let overlays = overlay_statuses(&secrets, prefix, rules).await?;
    out.print(&overlay_table(&overlays))?;
    problems.extend(
        overlays
            .iter()
            .filter(|overlay| overlay.result.is_err())
            .map(|overlay| {
                format!(
                    "the catalog overlay {} is invalid: functions using it fail at init",
                    overlay.name
                )
            }),
    );

    let dynamodb = aws_sdk_dynamodb::Client::new(aws);
    match find_stack_table(&dynamodb, stack, "ConnectionsTable").await? {
        Some(table) => {
            let connections = connections_in(aws, table).await?;
            let now = OffsetDateTime::now_utc().unix_timestamp();
            out.print(&connection_table(&connections, now))?;
        }
        None => {
            out.line(&format!(
                "connections: MISSING (no table {stack}-ConnectionsTable-…)"
            ))?;
            problems.push(format!(
                "the stack has no connections table ({stack}-ConnectionsTable-…)"
            ));
        }
    }

    for problem in &problems {
        eprintln!("warning: {problem}");
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `junction events`: subscribes on first use, then shows what arrives.
async fn watch_events(
    aws: &aws_config::SdkConfig,
    stack: &str,
    args: EventsArgs,
    out: &mut Output<std::io::Stdout>,
) -> anyhow::Result<ExitCode> {
    let bus = aws_sdk_eventbridge::Client::new(aws);
    let sqs = aws_sdk_sqs::Client::new(aws);
    if args.unsubscribe {
        events::unsubscribe(&bus, &sqs, stack).await?;
        eprintln!(
            "removed the rule {} and the queue {}",
            events::RULE,
            events::tap_queue_name(stack)
        );
        return Ok(ExitCode::SUCCESS);
    }
    let tap = events::subscribe(&bus, &sqs, stack).await?;
    if tap.created {
        eprintln!(
            "subscribed to the bus {}: rule {} → queue {}. Events published from now on wait \
             there until `junction events` shows them (`--unsubscribe` removes both).",
            tap.bus,
            events::RULE,
            tap.queue_name
        );
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
    }
    let reading = Reading {
        deadline: Instant::now() + Duration::from_secs(args.wait),
        follow: args.follow,
    };
    let mut shown_total = 0;
    let mut seen = 0;
    while let Some(wait) = reading.next_wait(seen, Instant::now()) {
        let received = events::receive(&sqs, &tap, wait).await?;
        seen = received.len();
        let mut shown = Vec::new();
        for event in received {
            let text =
                serde_json::to_string_pretty(&event.cloud_event).context("formatting an event")?;
            out.line(&text)?;
            if out.is_closed() {
                break;
            }
            shown.push(event);
        }
        events::acknowledge(&sqs, &tap, &shown).await?;
        shown_total += shown.len();
        if out.is_closed() {
            break;
        }
    }
    if shown_total == 0 {
        eprintln!(
            "no events on {} in {} s (since the last `junction events`)",
            tap.bus, args.wait
        );
    } else {
        eprintln!("{shown_total} event(s) from {}", tap.bus);
    }
    Ok(ExitCode::SUCCESS)
}

async fn connect(
    aws: &aws_config::SdkConfig,
    args: ConnectArgs,
    out: &mut Output<std::io::Stdout>,
) -> anyhow::Result<ExitCode> {
    let Some(api_url) = args.api_url.as_deref() else {
        bail!(
            "where to? set JUNCTION_API_URL (junction-local prints it) or pass --api-url \
             (for a deployed stack: its ManagementApiUrl output)"
        );
    };
    let auth = match args.local_iam_key {
        Some(key) => ApiAuth::LocalIam(key),
        None => ApiAuth::from_sdk_config(aws).await?,
    };
    let end_user = match (args.end_user_id, args.end_user_name) {
        (Some(id), display_name) => Some(junction_oauth::EndUser { id, display_name }),
        (None, Some(_)) => bail!("--end-user-name needs --end-user-id"),
        (None, None) => None,
    };
    let request = junction_oauth::ConnectSessionRequest {
        tenant: args.tenant,
        provider: args.provider,
        connection: args.connection,
        return_to: args.return_to,
        end_user,
        params: parse_params(&args.params)?,
        allow_account_change: args.allow_account_change,
        sandbox: args.sandbox,
        ttl_seconds: args.ttl,
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;
    let session = create_session(&http, api_url, &auth, &request).await?;
    // The URL alone on stdout (for scripts); when it stops working on stderr.
    out.line(&session.connect_url)?;
    if let Some(expires_at) = &session.expires_at {
        eprintln!("single use, until {expires_at}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn send_webhook(
    aws: &aws_config::SdkConfig,
    prefix: &str,
    rules: EndpointRules,
    args: SendWebhookArgs,
    out: &mut Output<std::io::Stdout>,
) -> anyhow::Result<ExitCode> {
    let secrets = aws_sdk_secretsmanager::Client::new(aws);
    let source = args.overlay.source(prefix);
    let loaded = stack_catalog(&secrets, &source, rules, &[&args.provider]).await;
    let stack = match (loaded, &source) {
        (Ok(stack), _) => stack,
        // Without access to the stack's secrets (a deployed stack, `--secret` and
        // `--url`, no credentials), a built-in provider is still signed as built in.
        (Err(err), OverlaySource::Stack { .. })
            if junction_catalog::Catalog::embedded()
                .is_ok_and(|catalog| catalog.get(&args.provider).is_some()) =>
        {
            let err = anyhow::Error::new(err);
            eprintln!(
                "junction: the stack's catalog overlays are unreadable ({}); signing {} \
                 as the built-in catalog defines it",
                causes(err.chain()),
                args.provider
            );
            StackCatalog::built_in(rules)?
        }
        (Err(err), _) => return Err(err.into()),
    };
    let provider = stack.catalog.get(&args.provider).with_context(|| match &source {
        OverlaySource::Stack { prefix } => format!(
            "provider {} is not in the catalog, nor in a catalog overlay under {prefix}/catalog/",
            args.provider
        ),
        _ => format!(
            "provider {} is in neither the built-in catalog nor the overlay {}",
            args.provider,
            stack.overlay.as_deref().unwrap_or_default()
        ),
    })?;
    if let Some(overlay) = stack.overlay_defining(&args.provider) {
        eprintln!(
            "{}: as the catalog overlay {overlay} defines it",
            provider.id
        );
    }
    let endpoint = args.webhook_endpoint.as_deref();
    let url = match (&args.url, &args.api_url) {
        (Some(url), _) => url.clone(),
        (None, Some(base)) => webhook_url(base, &provider.id, endpoint),
        (None, None) => bail!(
            "where to? set JUNCTION_API_URL (junction-local prints it) or pass --url \
             (for a deployed stack: its WebhookBaseUrl output followed by the provider)"
        ),
    };
    let key = match args.secret {
        Some(secret) => SigningSecret::new(secret),
        None => signing_key(&secrets, prefix, provider, endpoint).await?,
    };
    let now = OffsetDateTime::now_utc();
    let mut delivery: Sample = sample_for(provider, now);
    if let Some(path) = &args.file {
        delivery.body =
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        delivery.content_type = args
            .content_type
            .clone()
            .unwrap_or_else(|| "application/json".into());
    }
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .with_context(|| format!("--header {header}: expected `Name: value`"))?;
        let name = name.trim().to_owned();
        delivery
            .headers
            .retain(|(existing, _)| !existing.eq_ignore_ascii_case(&name));
        delivery.headers.push((name, value.trim().to_owned()));
    }
    let signed = match &args.public_url {
        Some(public_base) => {
            sign_webhook_for_public_url(provider, &key, &url, public_base, &delivery, now)?
        }
        None => sign_webhook(provider, &key, &url, &delivery, now)?,
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;
    let answer = post(&client, &signed).await?;
    if signed.signed_url == signed.url {
        out.line(&format!("POST {} → {}", signed.url, answer.status))?;
    } else {
        out.line(&format!(
            "POST {} (signed over {}) → {}",
            signed.url, signed.signed_url, answer.status
        ))?;
    }
    if !answer.body.is_empty() {
        out.line(&answer.body)?;
    }
    if !(200..300).contains(&answer.status) {
        bail!("{} answered {}", signed.url, answer.status);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `send-webhook --public-url` reaches the signing: posted to the API URL, signed
    /// over the public one (`junction_cli::webhook::sign_webhook_for_public_url`).
    #[test]
    fn send_webhook_takes_a_public_base_url_to_sign_over() {
        let cli = Cli::try_parse_from([
            "junction",
            "send-webhook",
            "twilio",
            "--api-url",
            "http://127.0.0.1:3000",
            "--public-url",
            "https://hooks.example.com",
        ])
        .expect("parsed");
        let Command::SendWebhook(args) = cli.command else {
            panic!("not send-webhook: {:?}", cli.command);
        };
        assert_eq!(
            args.public_url.as_deref(),
            Some("https://hooks.example.com")
        );
        assert_eq!(args.api_url.as_deref(), Some("http://127.0.0.1:3000"));
    }
}
