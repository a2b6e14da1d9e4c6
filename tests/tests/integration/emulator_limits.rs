//! The local emulator refuses what AWS refuses for its size, so a test fails the way a
//! deploy would (moto alone takes any `PutEvents` entry and 1 MiB SQS messages):
//! `PutEvents` over 256 KB a request (one entry alone included) is a
//! `ValidationException`, more than 10 entries too; an SQS message over 262,144 bytes,
//! body plus attributes, is `InvalidParameterValue`, a batch over it
//! `BatchRequestTooLong`. Sizes are counted as AWS documents them.

use aws_sdk_eventbridge::{error::ProvideErrorMetadata as _, types::PutEventsRequestEntry};
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use junction_aws::events::{PUT_EVENTS_MAX_BYTES, put_events_entry_size};
use junction_tests::emulator;

/// An entry whose size as EventBridge counts it is exactly `size` bytes.
fn entry(bus: &str, size: usize) -> PutEventsRequestEntry {
    let empty = put_events_entry_size(false, "test", "sized", Some(r#"{"pad":""}"#), &[]);
    let detail = format!(r#"{{"pad":"{}"}}"#, "x".repeat(size - empty));
    assert_eq!(
        put_events_entry_size(false, "test", "sized", Some(&detail), &[]),
        size
    );
    PutEventsRequestEntry::builder()
        .event_bus_name(bus)
        .source("test")
        .detail_type("sized")
        .detail(detail)
        .build()
}

#[tokio::test]
async fn put_events_over_256_kb_is_refused_as_eventbridge_refuses_it() {
    let (_moto, aws) = emulator().await;
    let events = aws_sdk_eventbridge::Client::new(&aws);
    // A long bus name: EventBridge does not count it.
    let bus = "b".repeat(200);
    events
        .create_event_bus()
        .name(&bus)
        .send()
        .await
        .expect("bus");
    let put =
        |entries: Vec<PutEventsRequestEntry>| events.put_events().set_entries(Some(entries)).send();

    let at_limit = put(vec![entry(&bus, PUT_EVENTS_MAX_BYTES)])
        .await
        .expect("an entry of exactly 256 KB is taken");
    assert_eq!(at_limit.failed_entry_count, 0);

    let err = put(vec![entry(&bus, 300 * 1024)])
        .await
        .expect_err("a 300 KB entry is refused");
    assert_eq!(err.code(), Some("ValidationException"), "{err:?}");
    assert_eq!(
        err.message(),
        Some("Total size of the entries in the request is over the limit.")
    );
    let err = put(vec![entry(&bus, PUT_EVENTS_MAX_BYTES + 1)])
        .await
        .expect_err("a byte over");
    assert_eq!(err.code(), Some("ValidationException"));

    // The limit is per request too: two halves fit, a byte more does not.
    let half = PUT_EVENTS_MAX_BYTES / 2;
    put(vec![entry(&bus, half), entry(&bus, half)])
        .await
        .expect("two halves");
    let err = put(vec![entry(&bus, half), entry(&bus, half + 1)])
        .await
        .expect_err("over in total");
    assert_eq!(err.code(), Some("ValidationException"));

    // At most 10 entries a call.
    put((0..10).map(|_| entry(&bus, 100)).collect())
        .await
        .expect("10 entries");
    let err = put((0..11).map(|_| entry(&bus, 100)).collect())
        .await
        .expect_err("11 entries");
    assert_eq!(err.code(), Some("ValidationException"), "{err:?}");
}

#[tokio::test]
async fn sqs_messages_over_262_144_bytes_are_refused_as_sqs_refuses_them() {
    let (_moto, aws) = emulator().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let url = sqs
        .create_queue()
        .queue_name("sized")
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url");
    let send = |body: String, attribute: Option<String>| {
        let mut request = sqs.send_message().queue_url(&url).message_body(body);
        if let Some(value) = attribute {
            request = request.message_attributes(
                "note",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(value)
                    .build()
                    .expect("attribute"),
            );
        }
        request.send()
    };

    send("x".repeat(262_144), None)
        .await
        .expect("exactly 262,144 bytes");
    let err = send("x".repeat(262_145), None)
        .await
        .expect_err("a byte over");
    assert_eq!(err.code(), Some("InvalidParameterValue"), "{err:?}");
    // Attributes count: name ("note", 4), type ("String", 6) and value.
    send("x".repeat(262_144 - 4 - 6 - 100), Some("y".repeat(100)))
        .await
        .expect("body and attribute at the limit");
    let err = send("x".repeat(262_144 - 4 - 6 - 100), Some("y".repeat(101)))
        .await
        .expect_err("the attribute takes it over");
    assert_eq!(err.code(), Some("InvalidParameterValue"), "{err:?}");
    // UTF-8 bytes, not characters.
    let err = send("é".repeat(131_073), None)
        .await
        .expect_err("262,146 bytes in 131,073 characters");
    assert_eq!(err.code(), Some("InvalidParameterValue"), "{err:?}");

    let batch = |sizes: &[usize]| {
        sqs.send_message_batch()
            .queue_url(&url)
            .set_entries(Some(
                sizes
                    .iter()
                    .enumerate()
                    .map(|(n, size)| {
                        SendMessageBatchRequestEntry::builder()
                            .id(format!("m{n}"))
                            .message_body("x".repeat(*size))
                            .build()
                            .expect("entry")
                    })
                    .collect(),
            ))
            .send()
    };
    let sent = batch(&[131_072, 131_072])
        .await
        .expect("a batch at the limit");
    assert_eq!(sent.successful.len(), 2);
    let err = batch(&[100_000, 100_000, 100_000])
        .await
        .expect_err("300,000 bytes in one batch");
    let code = err.code().unwrap_or_default();
    assert!(code.ends_with("BatchRequestTooLong"), "{err:?}");
}
