//! `template.yaml`, translated with aws-sam-translator, created as a CloudFormation stack
//! in the emulator: it must reach CREATE_COMPLETE with the ingest queue's redrive policy,
//! the DLQ's retention and the function's environment in place.

use local_stack::emulator::{Moto, deploy, repo_root};

#[test]
fn template_creates_a_complete_stack_with_the_redrive_policy() {
    let root = repo_root();
    let moto = Moto::start(&root).expect("the emulator starts (run infra/test to install it)");
    let stack = deploy(
        &root,
        moto.endpoint(),
        "junction-test",
        &[("IngestMaxReceiveCount", "3")],
    )
    .expect("the template deploys");
    assert_eq!(stack.status, "CREATE_COMPLETE");

    let ingest = &stack.queues["IngestQueue"];
    let dlq = &stack.queues["IngestDeadLetterQueue"];
    let redrive: serde_json::Value =
        serde_json::from_str(&ingest.attributes["RedrivePolicy"]).expect("a redrive policy");
    assert_eq!(
        redrive["deadLetterTargetArn"],
        dlq.arn.clone().expect("dlq arn").as_str()
    );
    assert_eq!(
        redrive["maxReceiveCount"], 3,
        "maxReceiveCount is the stack parameter"
    );
    assert_eq!(
        dlq.attributes["MessageRetentionPeriod"], "1209600",
        "14 days"
    );
    assert!(
        ingest.url.ends_with("/junction-test-ingest"),
        "{}",
        ingest.url
    );

    let ingress = &stack.functions["WebhookIngressFunction"];
    assert_eq!(ingress.binary.as_deref(), Some("webhook-ingress"));
    let env = ingress.environment_strings();
    assert_eq!(env["INGEST_QUEUE_URL"], ingest.url);
    assert_eq!(env["JUNCTION_PREFIX"], "junction");
    assert_eq!(env["PAYLOAD_BUCKET"], stack.resources["PayloadBucket"]);
    assert_eq!(env["MAX_BODY_BYTES"], "5242880");

    let routes: Vec<(String, String)> = stack
        .routes
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    for path in ["/webhooks/{provider}", "/webhooks/{provider}/{endpoint}"] {
        assert!(routes.contains(&("POST".into(), path.into())), "{routes:?}");
    }
    assert!(
        stack
            .routes
            .iter()
            .all(|r| r.function.as_deref() == Some("WebhookIngressFunction"))
    );
}
