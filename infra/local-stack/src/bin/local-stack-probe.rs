//! A tiny function for the local stack's own tests (`tests/fixtures/probe.yaml`).
//!
//! - SQS batches: a record whose body contains `fail` is reported in
//!   `batchItemFailures`; a body containing `crash` fails the whole invocation; a body
//!   `stdout:<text>` or `stderr:<text>` writes `<text>` there (for the leak scan's test).
//!   For the Runtime API emulator's tests, a body `sleep:<ms>` waits that long first
//!   (past the function's timeout) and a body `exit` ends the process mid-invocation.
//! - HTTP API events: answers 200 with the event it received as the JSON body, so the
//!   test can check the event's shape.
//! - EventBridge events whose `detail` has `"fail": true` fail the invocation.
//! - Anything else (schedules, other EventBridge events): returns `{"event": <the event>, "env": {...}, "context":
//!   {...}}` with the `PROBE_*` and `AWS_LAMBDA_*` variables and the invocation's context
//!   as the runtime read it from the emulator's headers, so the tests see the payload,
//!   the resolved environment and what the emulator sent.

use lambda_http::{
    Error, LambdaEvent,
    lambda_runtime::{self, service_fn},
};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handle)).await
}

async fn handle(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let payload = event.payload;
    if let Some(records) = payload.get("Records").and_then(Value::as_array) {
        let mut failures = Vec::new();
        for record in records {
            let body = record["body"].as_str().unwrap_or_default();
            if let Some(millis) = body.strip_prefix("sleep:") {
                let millis = millis.parse().unwrap_or_default();
                tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
            }
            if body == "exit" {
                std::process::exit(3);
            }
            if let Some(text) = body.strip_prefix("stdout:") {
                println!("{text}");
            } else if let Some(text) = body.strip_prefix("stderr:") {
                eprintln!("{text}");
            }
            if body.contains("crash") {
                return Err("a record asked the probe to crash".into());
            }
            if body.contains("fail") {
                failures.push(json!({ "itemIdentifier": record["messageId"] }));
            }
        }
        return Ok(json!({ "batchItemFailures": failures }));
    }
    if payload.get("routeKey").is_some() {
        return Ok(json!({
            "statusCode": 200,
            "headers": { "content-type": "application/json", "x-probe": "yes" },
            "cookies": ["probe=1; Path=/"],
            "body": payload.to_string(),
        }));
    }
    if payload["detail"]["fail"] == Value::Bool(true) {
        return Err("the event asked the probe to fail".into());
    }
    let env: serde_json::Map<String, Value> = std::env::vars()
        .filter(|(name, _)| name.starts_with("PROBE_") || name.starts_with("AWS_LAMBDA_"))
        .map(|(name, value)| (name, Value::String(value)))
        .collect();
    let context = &event.context;
    let context = json!({
        "request_id": context.request_id,
        "deadline_ms": context.deadline,
        "invoked_function_arn": context.invoked_function_arn,
        "trace_id": context.xray_trace_id,
    });
    Ok(json!({ "event": payload, "env": env, "context": context }))
}
