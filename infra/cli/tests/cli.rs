//! The `junction` binary as a user runs it, against a moto server of each test's own
//! (started from the project venv, `infra/venv`, on a free loopback port, stopped when
//! the test ends): what it prints, on which stream, and its exit status.
//!
//! Every run has `RUST_BACKTRACE=1`, as the project's shells do: no output may carry a
//! backtrace or a panic.

mod common;

use std::{
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::capture_server;

/// The repository root (`infra/cli` is two levels down).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the repository root")
        .to_owned()
}

/// A moto server (`infra/emulator.py serve`), killed on drop.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Moto {
        let root = root();
        let venv_ok = Command::new(root.join("infra/venv"))
            .status()
            .expect("infra/venv runs");
        assert!(venv_ok.success(), "infra/venv installs the emulator");
        let venv = std::env::var_os("JUNCTION_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".venv"));
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(venv.join("bin/python"))
            .arg(root.join("infra/emulator.py"))
            .args(["serve", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto starts");
        let mut moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                moto.child.try_wait().ok().flatten().is_none(),
                "moto exited at start"
            );
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "moto answers within a minute"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    async fn sdk(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "test", "test", None, None, "emulator",
            ))
            .load()
            .await
    }

    /// `junction <args>` pointed at this emulator, stack `stack`, prefix `prefix`, with
    /// nothing of the caller's environment that would change what it does.
    fn junction(&self, stack: &str, prefix: &str, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_junction"));
        command
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("JUNCTION_STACK", stack)
            .env("JUNCTION_PREFIX", prefix)
            .env_remove("AWS_PROFILE")
            .env_remove("JUNCTION_API_URL")
            .env_remove("JUNCTION_CATALOG_OVERLAY")
            .env_remove("JUNCTION_CATALOG_OVERLAY_SECRET")
            .env_remove("JUNCTION_SIGNING_SECRET")
            .env_remove("JUNCTION_LOCAL_IAM_KEY")
            .stdin(Stdio::null());
        command
    }

    fn run(&self, stack: &str, prefix: &str, args: &[&str]) -> Run {
        Run::of(
            self.junction(stack, prefix, args)
                .output()
                .expect("junction runs"),
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a run printed and how it ended.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn of(output: Output) -> Run {
        let run = Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        for text in [&run.stdout, &run.stderr] {
            assert!(
                !text.contains("panicked") && !text.contains("backtrace"),
                "no panic, no backtrace: {run:#?}"
            );
        }
        run
    }
}

/// Creates `template.yaml` as the stack `stack` in the emulator, as `infra/dev` does
/// (`infra/emulator.py deploy`): the queues, tables and bus `status` and `events` read.
fn deploy(moto: &Moto, stack: &str) {
    let root = root();
    let venv = std::env::var_os("JUNCTION_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv"));
    let output = Command::new(venv.join("bin/python"))
        .arg(root.join("infra/emulator.py"))
        .args([
            "deploy",
            "--endpoint",
            &moto.endpoint,
            "--stack-name",
            stack,
        ])
        .output()
        .expect("infra/emulator.py runs");
    assert!(
        output.status.success(),
        "the template deploys: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn queue_url(aws: &aws_config::SdkConfig, name: &str) -> Option<String> {
    aws_sdk_sqs::Client::new(aws)
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .ok()
        .and_then(|output| output.queue_url)
}

#[tokio::test]
async fn status_exits_non_zero_and_says_which_queue_is_missing() {
    let moto = Moto::start();
    let aws = moto.sdk().await;
    deploy(&moto, "s1");

    // GIVEN every queue and table of the stack: a zero exit, no warning
    let healthy = moto.run("s1", "p1", &["status"]);
    assert_eq!(healthy.code, Some(0), "{healthy:#?}");
    assert!(!healthy.stderr.contains("warning"), "{healthy:#?}");
    for queue in ["s1-ingest ", "s1-ingest-dlq ", "s1-poll ", "s1-poll-dlq "] {
        assert!(healthy.stdout.contains(queue), "{queue}: {healthy:#?}");
    }
    assert!(healthy.stdout.contains("connections: 0"), "{healthy:#?}");

    // WHEN the poll DLQ is gone
    let dlq = queue_url(&aws, "s1-poll-dlq").await.expect("the poll DLQ");
    aws_sdk_sqs::Client::new(&aws)
        .delete_queue()
        .queue_url(dlq)
        .send()
        .await
        .expect("deleted");
    let broken = moto.run("s1", "p1", &["status"]);

    // THEN its row says MISSING, stderr says why, and the exit status is 1
    assert_eq!(broken.code, Some(1), "{broken:#?}");
    let row = broken
        .stdout
        .lines()
        .find(|line| line.starts_with("s1-poll-dlq "))
        .unwrap_or_else(|| panic!("a row for the missing queue: {broken:#?}"));
    assert!(
        row.contains(
            "MISSING (the template's PollDeadLetterQueue, the dead-letter queue of s1-poll)"
        ),
        "{row}"
    );
    assert!(
        broken
            .stderr
            .contains("warning: the stack has no queue s1-poll-dlq"),
        "{broken:#?}"
    );
    // The other sections are still shown.
    assert!(
        broken.stdout.contains("catalog overlays: none"),
        "{broken:#?}"
    );
    assert!(broken.stdout.contains("connections: 0"), "{broken:#?}");
}

#[tokio::test]
async fn status_into_a_closed_pipe_ends_quietly() {
    let moto = Moto::start();
    deploy(&moto, "s2");

    // `junction status | head -0`: the reader is gone before the first line is written.
    let mut child = moto
        .junction("s2", "p2", &["status"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("junction starts");
    drop(child.stdout.take());
    let run = Run::of(child.wait_with_output().expect("junction ends"));
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(run.stderr, "", "nothing to say on stderr");

    // And through a real pipe into `head -n 1`.
    let shell = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' status | head -n 1",
            env!("CARGO_BIN_EXE_junction")
        ))
        .env("RUST_BACKTRACE", "1")
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("JUNCTION_STACK", "s2")
        .env("JUNCTION_PREFIX", "p2")
        .output()
        .expect("sh runs");
    let run = Run::of(shell);
    assert!(run.stdout.starts_with("queue "), "{run:#?}");
    assert_eq!(run.stderr, "", "{run:#?}");
}

#[tokio::test]
async fn user_errors_print_their_causes_and_no_backtrace() {
    let moto = Moto::start();

    let unknown = moto.run(
        "s3",
        "p3",
        &[
            "send-webhook",
            "no-such-provider",
            "--api-url",
            "http://127.0.0.1:9",
        ],
    );
    assert_eq!(unknown.code, Some(1), "{unknown:#?}");
    assert_eq!(
        unknown.stderr,
        "junction: provider no-such-provider is not in the catalog, nor in a catalog overlay \
         under p3/catalog/\n"
    );
    assert_eq!(unknown.stdout, "");

    let no_stack = moto.run("nostack", "p3", &["dlq", "list"]);
    assert_eq!(no_stack.code, Some(1), "{no_stack:#?}");
    assert_eq!(
        no_stack.stderr,
        "junction: no queues named nostack-* (is the stack name right?)\n"
    );
}

/// The overlay of the README's "An overlay entry", cut to its HMAC provider.
const BILLING: &str = r#"[[provider]]
id = "billing"
name = "In-house billing service"
docs = "https://wiki.acme.example/billing/webhooks"
[provider.webhook]
event_id = { header = "X-Billing-Delivery" }
[provider.webhook.verification]
scheme = "hmac-sha512"
signature = { format = "single", header = "X-Billing-Signature", prefix = "sha512=", encoding = "hex" }
signed = ["timestamp", { literal = "." }, "body"]
timestamp = { from = { header = "X-Billing-Timestamp" }, unit = "seconds", max_age_seconds = 300, max_future_seconds = 60 }
"#;

/// The billing scheme computed here, not by the code under test: hex HMAC-SHA512 of
/// `timestamp.body` with the secret, after `sha512=`.
fn billing_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA512, secret.as_bytes());
    let mut context = aws_lc_rs::hmac::Context::with_key(&key);
    context.update(timestamp.as_bytes());
    context.update(b".");
    context.update(body);
    format!("sha512={}", hex::encode(context.sign().as_ref()))
}

#[tokio::test]
async fn send_webhook_signs_a_provider_of_the_stacks_catalog_overlay() {
    let moto = Moto::start();
    let aws = moto.sdk().await;
    let secrets = aws_sdk_secretsmanager::Client::new(&aws);
    secrets
        .create_secret()
        .name("p4/webhooks/billing")
        .secret_string(r#"{"signing_secrets": ["billing-dev-secret"]}"#)
        .send()
        .await
        .expect("signing secret stored");
    let (url, captured) = capture_server();
    let send = |extra: &[&str]| {
        let mut args = vec!["send-webhook", "billing", "--api-url", &url];
        args.extend_from_slice(extra);
        moto.run("s4", "p4", &args)
    };

    // GIVEN no overlay: billing is no provider of the stack
    let refused = send(&[]);
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    assert!(
        refused.stderr.contains(
            "provider billing is not in the catalog, nor in a catalog overlay under p4/catalog/"
        ),
        "{refused:#?}"
    );

    // WHEN the stack runs with an overlay that adds it, stored as `infra/dev
    // --catalog-overlay FILE` stores it
    secrets
        .create_secret()
        .name("p4/catalog/local-overlay")
        .secret_string(BILLING)
        .send()
        .await
        .expect("overlay stored");
    let sent = send(&[]);

    // THEN the delivery is signed as the overlay's entry says
    assert_eq!(sent.code, Some(0), "{sent:#?}");
    assert_eq!(sent.stdout, format!("POST {url}/webhooks/billing → 200\n"));
    assert!(
        sent.stderr
            .contains("billing: as the catalog overlay p4/catalog/local-overlay defines it"),
        "{sent:#?}"
    );
    let request = captured
        .recv_timeout(Duration::from_secs(10))
        .expect("a request");
    assert_eq!(request.path, "/webhooks/billing");
    let timestamp = request
        .headers
        .get("x-billing-timestamp")
        .expect("the timestamp header the overlay names");
    let age = time::OffsetDateTime::now_utc().unix_timestamp()
        - timestamp.parse::<i64>().expect("unix seconds");
    assert!((0..60).contains(&age), "{timestamp}");
    assert_eq!(
        request.headers.get("x-billing-signature"),
        Some(&billing_signature(
            "billing-dev-secret",
            timestamp,
            &request.body
        ))
    );

    // AND the same overlay as a file (JUNCTION_CATALOG_OVERLAY, which infra/dev reads
    // too) signs the same way without the stack's secret
    let dir = std::env::temp_dir().join(format!("junction-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("overlay.toml");
    std::fs::write(&file, BILLING).expect("overlay written");
    let from_file = Run::of(
        moto.junction("s4", "p4", &["send-webhook", "billing", "--api-url", &url])
            .env("JUNCTION_CATALOG_OVERLAY", &file)
            .env("JUNCTION_PREFIX", "other-prefix")
            .env("JUNCTION_SIGNING_SECRET", "from-the-environment")
            .output()
            .expect("junction runs"),
    );
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(from_file.code, Some(0), "{from_file:#?}");
    let request = captured
        .recv_timeout(Duration::from_secs(10))
        .expect("a request");
    let timestamp = request.headers["x-billing-timestamp"].clone();
    assert_eq!(
        request.headers.get("x-billing-signature"),
        Some(&billing_signature(
            "from-the-environment",
            &timestamp,
            &request.body
        ))
    );
}

#[tokio::test]
async fn events_shows_what_the_bus_received_since_it_subscribed() {
    let moto = Moto::start();
    let aws = moto.sdk().await;
    deploy(&moto, "s5");
    let bus = aws_sdk_eventbridge::Client::new(&aws);

    // The first run subscribes; nothing can be waiting yet.
    let first = moto.run("s5", "p5", &["events"]);
    assert_eq!(first.code, Some(0), "{first:#?}");
    assert!(
        first.stderr.contains(
            "subscribed to the bus s5-events: rule junction-cli-events → queue \
             junction-cli-events-s5"
        ),
        "{first:#?}"
    );
    assert_eq!(first.stdout, "");

    // A CloudEvent as the consumer publishes it, and one from another source.
    let cloud_event = serde_json::json!({
        "specversion": "1.0",
        "id": "2c4a24953a260348de900bf9cf3158f8",
        "source": "junction/github",
        "type": "provider_event.occurred",
        "data": { "item": "provider_event" },
    });
    for (source, detail) in [
        ("junction/github", cloud_event.to_string()),
        ("acme.billing", "{}".to_owned()),
    ] {
        bus.put_events()
            .entries(
                aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
                    .event_bus_name("s5-events")
                    .source(source)
                    .detail_type("provider_event.occurred")
                    .detail(detail)
                    .build(),
            )
            .send()
            .await
            .expect("published");
    }

    let shown = moto.run("s5", "p5", &["events", "--wait", "5"]);
    assert_eq!(shown.code, Some(0), "{shown:#?}");
    let printed: serde_json::Value =
        serde_json::from_str(&shown.stdout).expect("one pretty-printed CloudEvent");
    assert_eq!(printed, cloud_event);
    assert!(
        shown.stderr.contains("1 event(s) from s5-events"),
        "{shown:#?}"
    );

    // Shown events are gone; the CLI's queue is no queue of the stack.
    let again = moto.run("s5", "p5", &["events", "--wait", "1"]);
    assert_eq!(again.stdout, "", "{again:#?}");
    let status = moto.run("s5", "p5", &["status"]);
    assert_eq!(status.code, Some(0), "{status:#?}");
    assert!(
        !status.stdout.contains("junction-cli-events"),
        "{status:#?}"
    );

    let removed = moto.run("s5", "p5", &["events", "--unsubscribe"]);
    assert_eq!(removed.code, Some(0), "{removed:#?}");
    assert_eq!(queue_url(&aws, "junction-cli-events-s5").await, None);
}
