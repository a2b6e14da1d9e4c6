//! `junction dlq redrive` against the emulator's SQS: it ends. Messages that keep failing
//! used to go round (DLQ → source → DLQ) for as long as the command ran: 3 poison
//! messages made 5,255 failures before it was killed after 90 s.

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use junction_cli::queues::{RedriveMethod, StackQueues, redrive};
use junction_tests::emulator;

/// A consumer that fails everything at once: it receives from the source queue with no
/// visibility timeout and never deletes, so each message reaches the DLQ at its second
/// receive (maxReceiveCount 1), within moments of being redriven.
async fn fail_everything(sqs: aws_sdk_sqs::Client, url: String) {
    loop {
        let _ = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .send()
            .await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> usize {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .expect("attributes")
        .attributes
        .and_then(|a| {
            a.get(&QueueAttributeName::ApproximateNumberOfMessages)
                .cloned()
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redrive_of_messages_that_keep_failing_moves_each_once_and_stops() {
    let (_moto, aws) = emulator().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let dlq_url = sqs
        .create_queue()
        .queue_name("redrivestack-work-dlq")
        .send()
        .await
        .expect("dlq")
        .queue_url
        .expect("url");
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("arn")
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("arn");
    let work_url = sqs
        .create_queue()
        .queue_name("redrivestack-work")
        .attributes(
            QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1}).to_string(),
        )
        .send()
        .await
        .expect("work queue")
        .queue_url
        .expect("url");
    // GIVEN three poison messages in the DLQ
    for n in 0..3 {
        sqs.send_message()
            .queue_url(&dlq_url)
            .message_body(format!("poison {n}"))
            .send()
            .await
            .expect("sent");
    }
    // Sent strictly before the redrive starts (SentTimestamp has millisecond steps).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let consumer = tokio::spawn(fail_everything(sqs.clone(), work_url.clone()));

    // WHEN they are redriven while everything sent to the source fails again at once
    let queues = StackQueues::discover(&sqs, "redrivestack")
        .await
        .expect("queues");
    let dlq = queues.dead_letter_queue(None).expect("the DLQ");
    // A guard against the old endless loop, not a timing assertion.
    let report = tokio::time::timeout(
        Duration::from_secs(300),
        redrive(&sqs, &queues, dlq, None, RedriveMethod::Copy),
    )
    .await
    .expect("the redrive ends")
    .expect("redriven");
    consumer.abort();

    // THEN each was moved once and the copies that failed again were left in the DLQ
    assert_eq!(report.moved, 3, "{report:?}");
    assert!(report.left <= 3, "{report:?}");
    let settled = {
        let mut total = 0;
        for _ in 0..50 {
            total = depth(&sqs, &dlq_url).await + depth(&sqs, &work_url).await;
            if total == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        total
    };
    assert_eq!(
        settled, 3,
        "three messages in all: nothing lost, nothing duplicated"
    );
}
