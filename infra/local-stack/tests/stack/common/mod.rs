//! Helpers shared by the end-to-end tests of this crate.
// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::{
    future::Future,
    ops::Deref,
    path::Path,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use aws_sdk_sqs::types::QueueAttributeName;
use junction_catalog::{Provider, SignatureFormat};
use junction_cli::webhook::SignedWebhook;
use local_stack::{
    emulator::repo_root,
    leaks::{LeakReport, MIN_SECRET_LEN},
    stack::{LocalStack, LocalStackConfig},
};
use serde_json::Value;

/// `label` with a random suffix: a stack name and prefix no other test uses.
pub fn unique(label: &str) -> String {
    format!("{label}-{}", hex::encode(rand::random::<[u8; 4]>()))
}

/// Polls `check` until it returns `Some` or `limit` passes.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(value) = check().await {
            return Some(value);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

pub fn process_is_gone(pid: u32) -> bool {
    // A zombie still has a /proc entry; a reaped process has none.
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// A running stack that a test must end with [`stop_and_check_processes_are_gone`] (or
/// [`stop_and_scan`]): dropping one unchecked outside a panic fails the test, so no
/// end-to-end test skips the leak scan by forgetting it. It derefs to the stack.
pub struct CheckedStack(Option<LocalStack>);

impl Deref for CheckedStack {
    type Target = LocalStack;

    fn deref(&self) -> &LocalStack {
        self.0
            .as_ref()
            .expect("a CheckedStack holds its stack until it is checked")
    }
}

impl Drop for CheckedStack {
    fn drop(&mut self) {
        // A failing test drops its stack while panicking: that failure is the news.
        if self.0.take().is_some() && !std::thread::panicking() {
            panic!(
                "the test ended without stop_and_check_processes_are_gone: its functions' \
                 output was never scanned for secrets"
            );
        }
    }
}

/// Starts a stack from `config`, checked: every end-to-end test starts its stacks here.
pub async fn start(config: LocalStackConfig) -> CheckedStack {
    CheckedStack(Some(
        LocalStack::start(config).await.expect("local stack starts"),
    ))
}

/// Values the tests of this binary created or saw (signatures, cookies): every stack's
/// scan looks for all of them, so a helper can register one without its stack at hand.
static WATCHED: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Makes the leak scan at the end of every test of this binary look for `value`.
pub fn watch(what: impl Into<String>, value: &str) {
    WATCHED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((what.into(), value.to_owned()));
}

/// Watches the signature(s) of `signed`, read where `provider`'s catalog entry says they
/// are: a signature in a log line lets its reader replay the delivery within the window.
/// A `token` scheme's "signature" is the secret itself, which the scan reads from
/// Secrets Manager.
pub fn watch_signature(provider: &Provider, signed: &SignedWebhook) {
    let Some(verification) = provider
        .webhook
        .as_ref()
        .and_then(|webhook| webhook.verification.as_ref())
    else {
        return;
    };
    let header = |name: &str| {
        signed
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let body: Value = serde_json::from_slice(&signed.body).unwrap_or(Value::Null);
    let mut signatures: Vec<String> = Vec::new();
    match &verification.signature {
        SignatureFormat::Single {
            header: names,
            prefix,
            ..
        } => signatures.extend(names.names().iter().filter_map(|name| {
            header(name).map(|value| {
                value
                    .strip_prefix(prefix.as_str())
                    .unwrap_or(&value)
                    .to_owned()
            })
        })),
        SignatureFormat::KeyValueList {
            header: names,
            pair_separator,
            key,
            ..
        } => {
            for value in names.names().iter().filter_map(|name| header(name)) {
                signatures.extend(value.split(pair_separator.as_str()).filter_map(|pair| {
                    let (name, value) = pair.trim().split_once('=')?;
                    (name.trim() == key).then(|| value.trim().to_owned())
                }));
            }
        }
        SignatureFormat::VersionedList {
            header: names,
            entry_separator,
            version,
            version_separator,
            ..
        } => {
            let tag = format!("{version}{version_separator}");
            for value in names.names().iter().filter_map(|name| header(name)) {
                signatures.extend(
                    value
                        .split(entry_separator.as_str())
                        .filter_map(|entry| entry.trim().strip_prefix(tag.as_str()))
                        .map(str::to_owned),
                );
            }
        }
        SignatureFormat::EachHeader {
            header: names,
            numbered,
            ..
        } => {
            for name in names.names() {
                if *numbered {
                    signatures.extend((1..=100).filter_map(|n| header(&format!("{name}{n}"))));
                } else {
                    signatures.extend(header(name));
                }
            }
        }
        SignatureFormat::JsonPointer { pointer, .. } => {
            signatures.extend(
                body.pointer(pointer)
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            );
        }
        SignatureFormat::PerItem {
            items, signature, ..
        } => signatures.extend(
            body.pointer(items)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|item| item.pointer(signature).and_then(Value::as_str))
                .map(str::to_owned),
        ),
        SignatureFormat::XmlElement { .. } => {}
    }
    for signature in signatures.iter().filter(|s| s.len() >= MIN_SECRET_LEN) {
        watch(format!("a {} webhook signature", provider.id), signature);
    }
}

/// Stops the stack, scans everything its functions wrote for every secret in the
/// emulator, every value the fake providers issued or were handed, their token prefix
/// and every value the tests watched, and checks every process the stack started
/// (functions, emulator) is gone. Returns the scan's report.
pub async fn stop_and_scan(mut stack: CheckedStack) -> LeakReport {
    let stack = stack.0.take().expect("a stack not yet checked");
    stack
        .watch_for_leaks(
            "a token marked as the fake provider's",
            fake_provider::TOKEN_MARKER,
        )
        .expect("the marker is watched");
    let watched = WATCHED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let issued = fake_provider::issued_secrets()
        .into_iter()
        .map(|secret| (secret.what.to_owned(), secret.value));
    for (what, value) in watched.into_iter().chain(issued) {
        // The fakes' own tests hand them short values (`state=xyz`); Junction's are long.
        if value.len() >= MIN_SECRET_LEN {
            stack
                .watch_for_leaks(what.clone(), &value)
                .unwrap_or_else(|err| panic!("{what}: {err}"));
        }
    }
    let mut pids: Vec<u32> = stack.functions().values().filter_map(|f| f.pid()).collect();
    pids.extend(stack.emulator_pid());
    assert!(!pids.is_empty(), "the stack started processes");
    let report = stack.stop_and_scan().await;
    for pid in pids {
        let gone = eventually(Duration::from_secs(10), || async move {
            process_is_gone(pid).then_some(())
        })
        .await;
        assert!(gone.is_some(), "process {pid} outlived the stack");
    }
    report
}

/// Stops the stack and checks, as every end-to-end test ends: nothing any function
/// wrote carries a secret or token ([`stop_and_scan`]), and every process is gone.
pub async fn stop_and_check_processes_are_gone(stack: CheckedStack) {
    let report = stop_and_scan(stack).await;
    println!("leak scan: {report}");
    assert!(
        report.is_clean(),
        "secrets or tokens in the functions' output: {report}"
    );
}

/// Every end-to-end test file gets its stacks from [`start`] (or
/// [`start_with_overlay`]), whose [`CheckedStack`] fails a test that ends without the
/// leak scan; a stack started directly would escape that.
#[test]
fn end_to_end_tests_start_their_stacks_checked() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stack");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).expect("the tests directory") {
        let path = entry.expect("an entry").path();
        if path.extension().is_some_and(|ext| ext == "rs") && !path.ends_with("main.rs") {
            files += 1;
            let text = std::fs::read_to_string(&path).expect("a test file");
            assert!(
                !text.contains("LocalStack::start("),
                "{} starts a LocalStack directly: use common::start",
                path.display()
            );
        }
    }
    assert!(
        files >= 5,
        "found the end-to-end test files in {}",
        dir.display()
    );
}

/// Visible and in-flight messages of a queue.
pub async fn queue_depth(sqs: &aws_sdk_sqs::Client, url: &str) -> (u64, u64) {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .unwrap_or_default();
    let read = |name: QueueAttributeName| {
        attributes
            .get(&name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (
        read(QueueAttributeName::ApproximateNumberOfMessages),
        read(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

/// The `Location` of a redirect.
pub fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("a redirect")
        .to_owned()
}

/// `name=value` of the response's first `Set-Cookie` (the connect flow's binding
/// cookie); its value is watched for leaks.
pub fn first_cookie(response: &reqwest::Response) -> String {
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("a cookie")
        .to_owned();
    if let Some((name, value)) = cookie.split_once('=') {
        watch(format!("the value of cookie {name}"), value);
    }
    cookie
}

/// Pauses the ingest queue's consumers, so delivered messages stay on the queue.
pub async fn pause_ingest_consumers(stack: &LocalStack) {
    for mapping in stack
        .mappings()
        .iter()
        .filter(|m| m.queue() == "IngestQueue")
    {
        mapping.set_enabled(false).await;
    }
}

/// Receives and deletes messages from the queue until `count` arrived or `limit`
/// passed; returns each message's `provider` attribute, in arrival order.
pub async fn take_providers(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    count: usize,
    limit: Duration,
) -> Vec<String> {
    let mut providers = Vec::new();
    let started = Instant::now();
    while providers.len() < count && started.elapsed() < limit {
        let output = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send()
            .await
            .expect("received");
        for message in output.messages.unwrap_or_default() {
            providers.push(
                message
                    .message_attributes
                    .as_ref()
                    .and_then(|a| a.get("provider"))
                    .and_then(|a| a.string_value.clone())
                    .unwrap_or_default(),
            );
            if let Some(receipt) = message.receipt_handle {
                sqs.delete_message()
                    .queue_url(url)
                    .receipt_handle(receipt)
                    .send()
                    .await
                    .expect("deleted");
            }
        }
    }
    providers
}

/// The origin the OAuth tests' `return_to` URLs use.
pub const RETURN_TO_ORIGIN: &str = "https://app.example.com";

/// A running stack whose catalog overlay is `overlay` (TOML), with `RETURN_TO_ORIGIN`
/// allowed and schedules fired only by hand, once every function has initialized.
/// Returns the stack, its secret prefix, and the temporary directory holding the
/// overlay file (the caller removes it).
pub async fn start_with_overlay(
    label: &str,
    overlay: &str,
) -> (CheckedStack, String, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(unique(&format!("{label}-overlay")));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("overlay.toml");
    std::fs::write(&path, overlay).expect("overlay written");
    let prefix = unique(label);
    let mut config = LocalStackConfig::new(repo_root());
    config.stack_name = unique(&format!("{label}-e2e"));
    config.prefix = Some(prefix.clone());
    config.catalog_overlay = Some(path);
    config.run_schedules = false;
    config.parameters = vec![("OAuthReturnToOrigins".into(), RETURN_TO_ORIGIN.into())];
    let stack = start(config).await;
    assert!(
        stack.wait_ready(Duration::from_secs(90)).await,
        "functions initialize with the overlay"
    );
    (stack, prefix, dir)
}

/// An HTTP client that, like a test's browser, shows redirects instead of following them.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A connect session request for `provider` in `tenant`, back to `return_to`.
pub fn session_for(
    provider: &str,
    tenant: &str,
    return_to: &str,
) -> junction_oauth::ConnectSessionRequest {
    junction_oauth::ConnectSessionRequest {
        tenant: tenant.to_owned(),
        provider: provider.to_owned(),
        return_to: Some(return_to.to_owned()),
        ..junction_oauth::ConnectSessionRequest::default()
    }
}

/// Mints a connect session as the product's backend does, `POST
/// /v1/tenants/{tenant}/connect-sessions` with the stack's stand-in for IAM, through
/// `junction connect`'s code; returns the connect URL to send the browser to. The
/// session token is watched for leaks.
pub async fn connect_url(
    stack: &LocalStack,
    request: &junction_oauth::ConnectSessionRequest,
) -> String {
    let session = junction_cli::connect::create_session(
        &reqwest::Client::new(),
        stack.api_url(),
        &junction_cli::connect::ApiAuth::LocalIam(stack.local_iam_key().to_owned()),
        request,
    )
    .await
    .expect("a connect session");
    watch("a connect session token", &session.token);
    assert_eq!(
        session.connect_url,
        format!(
            "{}/oauth/{}/start?session={}",
            stack.api_url(),
            request.provider,
            session.token
        )
    );
    session.connect_url
}

/// An SQS queue subscribed to the stack's bus with a rule on
/// `{"source":[{"prefix":"junction/"}]}`: what a subscriber of Junction's events sees.
pub struct BusObserver {
    sqs: aws_sdk_sqs::Client,
    url: String,
}

impl BusObserver {
    pub async fn subscribe(stack: &LocalStack) -> BusObserver {
        use aws_sdk_eventbridge::types::{RuleState, Target};
        let description = stack.description();
        let bus = description.outputs["EventBusName"].clone();
        let sqs = stack.sqs().clone();
        let url = sqs
            .create_queue()
            .queue_name(format!("{}-observed", description.stack_name))
            .send()
            .await
            .expect("observer queue created")
            .queue_url
            .expect("a queue URL");
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("observer queue attributes")
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .expect("observer queue ARN");
        let events = aws_sdk_eventbridge::Client::new(stack.sdk_config());
        let rule = "junction-events-to-observer";
        events
            .put_rule()
            .name(rule)
            .event_bus_name(&bus)
            .event_pattern(r#"{"source":[{"prefix":"junction/"}]}"#)
            .state(RuleState::Enabled)
            .send()
            .await
            .expect("rule created");
        let targets = events
            .put_targets()
            .rule(rule)
            .event_bus_name(&bus)
            .targets(
                Target::builder()
                    .id("observer")
                    .arn(arn)
                    .build()
                    .expect("target"),
            )
            .send()
            .await
            .expect("target added");
        assert_eq!(targets.failed_entry_count, 0);
        BusObserver { sqs, url }
    }

    /// Receives and deletes what the observer queue holds now, as CloudEvents.
    pub async fn drain(&self, into: &mut Vec<junction_aws::events::CloudEvent>) -> usize {
        let output = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("observer queue received");
        let messages = output.messages.unwrap_or_default();
        for message in &messages {
            let envelope: serde_json::Value =
                serde_json::from_str(message.body.as_deref().unwrap_or_default())
                    .expect("an EventBridge envelope");
            // The envelope's `detail` is the CloudEvent (an object; accept a string too).
            let detail = match &envelope["detail"] {
                serde_json::Value::String(text) => serde_json::from_str(text).expect("JSON detail"),
                other => other.clone(),
            };
            let event: junction_aws::events::CloudEvent = serde_json::from_value(detail)
                .unwrap_or_else(|err| panic!("detail is not a CloudEvent ({err}): {envelope}"));
            assert_eq!(
                envelope["source"], event.source,
                "the envelope carries the CloudEvent's source"
            );
            assert_eq!(envelope["detail-type"], event.event_type);
            into.push(event);
            if let Some(receipt) = &message.receipt_handle {
                self.sqs
                    .delete_message()
                    .queue_url(&self.url)
                    .receipt_handle(receipt)
                    .send()
                    .await
                    .expect("observed message deleted");
            }
        }
        messages.len()
    }
}
