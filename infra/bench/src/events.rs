//! The events every variant is fed: a signed GitHub delivery as API Gateway (HTTP API,
//! payload format 2.0) delivers it to the ingress, and SQS batches of what the ingress
//! enqueued as Lambda's event source mapping delivers them to the consumer.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::stub::SentMessage;

/// The GitHub delivery body every ingress invocation carries (the repository's
/// `pull_request` fixture, 1.2 KiB; real deliveries are often 10–30 KiB, which only
/// adds HMAC and JSON time, at about the same rate for every variant).
pub const GITHUB_BODY: &str =
    include_str!("../../../tests/fixtures/github/pull-request-opened.json");

/// Records per consumer invocation: the template's `BatchSize` for the ingest queue.
pub const BATCH_SIZE: usize = 10;

/// A GitHub `pull_request` delivery signed with `secret` as GitHub does
/// (`X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`).
pub fn github_delivery(secret: &str, delivery: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(GITHUB_BODY.as_bytes());
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let now = OffsetDateTime::now_utc();
    json!({
        "version": "2.0",
        "routeKey": "POST /webhooks/{provider}",
        "rawPath": "/webhooks/github",
        "rawQueryString": "",
        "headers": {
            "accept": "*/*",
            "content-type": "application/json",
            "content-length": GITHUB_BODY.len().to_string(),
            "host": "bench.execute-api.us-east-1.amazonaws.com",
            "user-agent": "GitHub-Hookshot/7c4d2a1",
            "x-github-delivery": delivery,
            "x-github-event": "pull_request",
            "x-github-hook-id": "459166789",
            "x-github-hook-installation-target-id": "79929171",
            "x-github-hook-installation-target-type": "repository",
            "x-hub-signature-256": signature,
            "x-forwarded-for": "192.0.2.10",
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https",
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "bench",
            "domainName": "bench.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "bench",
            "http": {
                "method": "POST",
                "path": "/webhooks/github",
                "protocol": "HTTP/1.1",
                "sourceIp": "192.0.2.10",
                "userAgent": "GitHub-Hookshot/7c4d2a1",
            },
            "requestId": delivery,
            "routeKey": "POST /webhooks/{provider}",
            "stage": "$default",
            "time": "24/Nov/2026:09:00:00 +0000",
            "timeEpoch": now.unix_timestamp() * 1000,
        },
        "pathParameters": {"provider": "github"},
        "body": GITHUB_BODY,
        "isBase64Encoded": false,
    })
    .to_string()
    .into_bytes()
}

/// An SQS event of `messages` as Lambda delivers it, each message with a fresh id
/// (and a fresh `event_id` attribute, so every record is a new event to the consumer).
pub fn sqs_batch(messages: &[SentMessage], sequence: usize) -> Vec<u8> {
    let now = OffsetDateTime::now_utc();
    let sent = (now.unix_timestamp_nanos() / 1_000_000).to_string();
    let records: Vec<Value> = messages
        .iter()
        .enumerate()
        .map(|(index, message)| {
            let id = format!("00000000-bench-{sequence:08}-{index:04}");
            let mut attributes = message.attributes.clone();
            attributes.insert("event_id".into(), format!("bench-{sequence}-{index}"));
            attributes.insert(
                "received_at".into(),
                now.format(&Rfc3339).unwrap_or_default(),
            );
            let message_attributes: BTreeMap<String, Value> = attributes
                .into_iter()
                .map(|(name, value)| {
                    (
                        name,
                        json!({
                            "stringValue": value,
                            "stringListValues": [],
                            "binaryListValues": [],
                            "dataType": "String",
                        }),
                    )
                })
                .collect();
            json!({
                "messageId": id,
                "receiptHandle": format!("bench-receipt-{sequence}-{index}"),
                "body": message.body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": sent,
                    "SenderId": "AIDAEXAMPLE",
                    "ApproximateFirstReceiveTimestamp": sent,
                },
                "messageAttributes": message_attributes,
                "md5OfBody": "00000000000000000000000000000000",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:junction-ingest",
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    json!({ "Records": records }).to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delivery_carries_githubs_signature_of_the_body() {
        let event: Value =
            serde_json::from_slice(&github_delivery("It's a Secret to Everybody", "d-1"))
                .expect("json");
        let signature = event["headers"]["x-hub-signature-256"]
            .as_str()
            .expect("signature");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"It's a Secret to Everybody").expect("key");
        mac.update(event["body"].as_str().expect("body").as_bytes());
        assert_eq!(
            signature,
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        );
        assert_eq!(event["headers"]["x-github-delivery"], "d-1");
    }

    #[test]
    fn batches_give_every_record_a_new_identity() {
        let message = SentMessage {
            body: "{}".into(),
            attributes: BTreeMap::from([
                ("provider".into(), "github".into()),
                ("event_id".into(), "same".into()),
            ]),
        };
        let event: Value =
            serde_json::from_slice(&sqs_batch(&[message.clone(), message], 3)).expect("json");
        let records = event["Records"].as_array().expect("records");
        assert_eq!(records.len(), 2);
        assert_ne!(records[0]["messageId"], records[1]["messageId"]);
        assert_ne!(
            records[0]["messageAttributes"]["event_id"]["stringValue"],
            records[1]["messageAttributes"]["event_id"]["stringValue"]
        );
        assert_eq!(
            records[0]["messageAttributes"]["provider"]["stringValue"],
            "github"
        );
    }
}
