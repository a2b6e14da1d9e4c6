//! `junction`: try providers without the provider, and operate the queues.
//!
//! Points at the AWS emulator when `--endpoint` / `AWS_ENDPOINT_URL` is set (the local
//! stack prints the exports), and at real AWS otherwise.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use junction_cli::{
    connect::{ApiAuth, create_session, parse_params},
    connections::{connection_statuses, connection_table, stack_table},
    overlays::{overlay_statuses, overlay_table},
    polls::force_poll,
    queues::{RedriveMethod, StackQueues, list_dead_letters, redrive, with_reasons},
    samples::{Sample, sample},
    sdk_config,
    webhook::{post, sign_webhook, sign_webhook_for_public_url, signing_key, webhook_url},
};
use shared::{
    catalog::{Catalog, EndpointRules},
    dead_letters::DynamoDeadLetterNotes,
    webhooks::SigningSecret,
};
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
    /// last successful sync.
    Status,
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
    /// ConnectSessionsUrl output).
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let endpoint = cli.endpoint.as_deref().filter(|e| !e.is_empty());
    let aws = sdk_config(endpoint, cli.region.as_deref()).await;
    match cli.command {
        Command::SendWebhook(args) => send_webhook(&aws, &cli.prefix, args).await,
        Command::Connect(args) => connect(&aws, args).await,
        Command::Status => {
            let sqs = aws_sdk_sqs::Client::new(&aws);
            let queues = StackQueues::discover(&sqs, &cli.stack).await?;
            print!("{}", queues.status_table());
            let secrets = aws_sdk_secretsmanager::Client::new(&aws);
            // An --endpoint is the local stack's emulator: its functions call loopback
            // providers over http, and the overlays are checked as they check them.
            let rules = match endpoint {
                Some(_) => EndpointRules::LoopbackHttpForTests,
                None => EndpointRules::Public,
            };
            let overlays = overlay_statuses(&secrets, &cli.prefix, rules).await?;
            print!("{}", overlay_table(&overlays));
            let connections = connection_statuses(&aws, &cli.stack).await?;
            let now = OffsetDateTime::now_utc().unix_timestamp();
            print!("{}", connection_table(&connections, now));
            if overlays.iter().any(|o| o.result.is_err()) {
                bail!("a catalog overlay is invalid: functions using it fail at init");
            }
            Ok(())
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
                println!("{}: {}", job.job, job.result);
            }
            if forced.iter().any(|job| job.result == "no such job") {
                bail!("no sync job for some of those models");
            }
            Ok(())
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
                            eprintln!("reasons unavailable: {err:#}");
                        }
                    }
                    println!("{}: {} message(s)", dlq.name, letters.len());
                    if !letters.is_empty() {
                        println!(
                            "{:<38} {:>8} {:<24} {:<20} last failure",
                            "message id", "receives", "sent", "provider/event"
                        );
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
                        println!(
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
                        );
                    }
                    Ok(())
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
                        Some(handle) => println!(
                            "moved {} message(s) from {} to {} (StartMessageMoveTask {handle})",
                            report.moved,
                            dlq.name,
                            sources.join(", ")
                        ),
                        None => println!(
                            "moved {} message(s) from {} to {} (each re-sent, then deleted); {} sent after the redrive started left in {}",
                            report.moved,
                            dlq.name,
                            sources.join(", "),
                            report.left,
                            dlq.name
                        ),
                    }
                    Ok(())
                }
            }
        }
    }
}

async fn connect(aws: &aws_config::SdkConfig, args: ConnectArgs) -> anyhow::Result<()> {
    let Some(api_url) = args.api_url.as_deref() else {
        bail!(
            "where to? set JUNCTION_API_URL (junction-local prints it) or pass --api-url \
             (for a deployed stack: its ConnectSessionsUrl output)"
        );
    };
    let auth = match args.local_iam_key {
        Some(key) => ApiAuth::LocalIam(key),
        None => ApiAuth::from_sdk_config(aws).await?,
    };
    let end_user = match (args.end_user_id, args.end_user_name) {
        (Some(id), display_name) => Some(shared::oauth::EndUser { id, display_name }),
        (None, Some(_)) => bail!("--end-user-name needs --end-user-id"),
        (None, None) => None,
    };
    let request = shared::oauth::ConnectSessionRequest {
        tenant: args.tenant,
        provider: args.provider,
        connection: args.connection,
        return_to: args.return_to,
        end_user,
        params: parse_params(&args.params)?,
        allow_account_change: args.allow_account_change,
        ttl_seconds: args.ttl,
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;
    let session = create_session(&http, api_url, &auth, &request).await?;
    // The URL alone on stdout (for scripts); when it stops working on stderr.
    println!("{}", session.connect_url);
    if let Some(expires_at) = &session.expires_at {
        eprintln!("single use, until {expires_at}");
    }
    Ok(())
}

async fn send_webhook(
    aws: &aws_config::SdkConfig,
    prefix: &str,
    args: SendWebhookArgs,
) -> anyhow::Result<()> {
    let catalog = Catalog::embedded()?;
    let provider = catalog
        .get(&args.provider)
        .with_context(|| format!("provider {} is not in the catalog", args.provider))?;
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
        None => {
            let client = aws_sdk_secretsmanager::Client::new(aws);
            signing_key(&client, prefix, provider, endpoint).await?
        }
    };
    let now = OffsetDateTime::now_utc();
    let mut delivery: Sample = sample(&provider.id, now);
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
        println!("POST {} → {}", signed.url, answer.status);
    } else {
        println!(
            "POST {} (signed over {}) → {}",
            signed.url, signed.signed_url, answer.status
        );
    }
    if !answer.body.is_empty() {
        println!("{}", answer.body);
    }
    if !(200..300).contains(&answer.status) {
        bail!("{} answered {}", signed.url, answer.status);
    }
    Ok(())
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
