//! The correctness pass: the same release binaries the timing runs measure, run by the
//! local stack against the emulator from the real `template.yaml`. A signed GitHub
//! delivery (the very event the timing runs replay) goes over HTTP through the ingress,
//! the ingest queue and the consumer, and must come out as exactly one CloudEvent on
//! the bus. The functions' environments (the template's variables) are kept for the
//! timing runs.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use aws_sdk_eventbridge::types::{RuleState, Target};
use aws_sdk_sqs::types::QueueAttributeName;
use local_stack::stack::{LocalStack, LocalStackConfig};
use serde_json::Value;

use crate::events;

/// What the timing runs need from the correctness pass.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Logical id → the function's environment as the stack runs it.
    pub environments: BTreeMap<String, BTreeMap<String, String>>,
    /// Logical id → binary name.
    pub binaries: BTreeMap<String, String>,
}

/// Runs the pass; fails with what went wrong.
pub async fn run(root: PathBuf, executables: BTreeMap<String, PathBuf>) -> anyhow::Result<Checked> {
    let mut config = LocalStackConfig::new(root);
    config.stack_name = "junction-bench".into();
    config.run_schedules = false;
    config.executables = Some(executables);
    let stack = LocalStack::start(config)
        .await
        .context("starting the local stack")?;
    let result = check(&stack).await;
    let checked = Checked {
        environments: stack
            .functions()
            .iter()
            .map(|(id, function)| (id.clone(), function.spec().environment.clone()))
            .collect(),
        binaries: stack
            .description()
            .functions
            .iter()
            .filter_map(|(id, function)| Some((id.clone(), function.binary.clone()?)))
            .collect(),
    };
    stack.stop().await;
    result.map(|()| checked)
}

async fn check(stack: &LocalStack) -> anyhow::Result<()> {
    if !stack.wait_ready(Duration::from_secs(60)).await {
        bail!("the local stack's functions did not start");
    }
    let config = stack.sdk_config();
    let secrets = aws_sdk_secretsmanager::Client::new(config);
    let document = secrets
        .get_secret_value()
        .secret_id("junction/webhooks/github")
        .send()
        .await
        .context("reading the seeded GitHub secret")?
        .secret_string
        .unwrap_or_default();
    let document: Value = serde_json::from_str(&document)?;
    let secret = document["signing_secrets"][0]
        .as_str()
        .context("the GitHub secret has no signing secret")?
        .to_owned();
    let observer = subscribe(stack).await?;

    let delivery = format!("bench-correctness-{}", rand::random::<u32>());
    let event: Value = serde_json::from_slice(&events::github_delivery(&secret, &delivery))?;
    let http = reqwest::Client::new();
    let mut request = http
        .post(format!("{}/webhooks/github", stack.api_url()))
        .body(events::GITHUB_BODY);
    for (name, value) in event["headers"].as_object().into_iter().flatten() {
        if name != "content-length" && name != "host" {
            request = request.header(name, value.as_str().unwrap_or_default());
        }
    }
    let response = request.send().await.context("posting the delivery")?;
    let status = response.status();
    if !status.is_success() {
        bail!(
            "the ingress answered {status}: {}",
            response.text().await.unwrap_or_default()
        );
    }

    // The consumer publishes within seconds (moto handles ~15 SQS messages/s).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut published = Vec::new();
    while Instant::now() < deadline {
        published.extend(observer.drain().await?);
        if !published.is_empty() {
            // Give a duplicate the chance to show up.
            tokio::time::sleep(Duration::from_secs(3)).await;
            published.extend(observer.drain().await?);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ours: Vec<&Value> = published
        .iter()
        .filter(|event| event.to_string().contains(&delivery))
        .collect();
    if ours.len() != 1 {
        bail!(
            "expected exactly one CloudEvent for delivery {delivery}, the bus got {} ({} in all)",
            ours.len(),
            published.len()
        );
    }
    Ok(())
}

struct Observer {
    sqs: aws_sdk_sqs::Client,
    url: String,
}

impl Observer {
    async fn drain(&self) -> anyhow::Result<Vec<Value>> {
        let output = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .send()
            .await?;
        let mut events = Vec::new();
        for message in output.messages.unwrap_or_default() {
            if let Some(body) = &message.body {
                events.push(serde_json::from_str(body)?);
            }
            if let Some(handle) = &message.receipt_handle {
                self.sqs
                    .delete_message()
                    .queue_url(&self.url)
                    .receipt_handle(handle)
                    .send()
                    .await?;
            }
        }
        Ok(events)
    }
}

/// An EventBridge rule on the stack's bus sending every Junction event to a new queue.
async fn subscribe(stack: &LocalStack) -> anyhow::Result<Observer> {
    let description = stack.description();
    let bus = description
        .outputs
        .get("EventBusName")
        .context("the stack has no EventBusName output")?
        .clone();
    let sqs = stack.sqs().clone();
    let url = sqs
        .create_queue()
        .queue_name("junction-bench-observed")
        .send()
        .await?
        .queue_url
        .context("no queue URL")?;
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .context("no queue ARN")?;
    let events = aws_sdk_eventbridge::Client::new(stack.sdk_config());
    let rule = "junction-bench-observer";
    events
        .put_rule()
        .name(rule)
        .event_bus_name(&bus)
        .event_pattern(r#"{"source":[{"prefix":"junction/"}]}"#)
        .state(RuleState::Enabled)
        .send()
        .await?;
    events
        .put_targets()
        .rule(rule)
        .event_bus_name(&bus)
        .targets(Target::builder().id("observer").arn(arn).build()?)
        .send()
        .await?;
    Ok(Observer { sqs, url })
}
