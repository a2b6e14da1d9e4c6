//! `template.yaml`, translated with aws-sam-translator, created as a CloudFormation stack
//! in the emulator: it must reach CREATE_COMPLETE with the ingest and poll queues' redrive
//! policies, the DLQs' retention, the polling schedule and tables, and the functions'
//! environments in place.

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

    let consumer = &stack.functions["EventConsumerFunction"];
    assert_eq!(consumer.binary.as_deref(), Some("event-consumer"));
    let consumer_env = consumer.environment_strings();
    assert_eq!(
        consumer_env["IDEMPOTENCY_TABLE"],
        stack.resources["IdempotencyTable"]
    );
    assert_eq!(
        consumer_env["EVENT_BUS_NAME"],
        stack.outputs["EventBusName"]
    );
    assert_eq!(consumer_env["INGEST_QUEUE_URL"], ingest.url);
    assert_eq!(
        consumer_env["MAX_RECEIVE_COUNT"], "3",
        "the consumer knows a message's last receive (DLQ arrivals)"
    );
    let mapping = stack
        .event_source_mappings
        .iter()
        .find(|m| m.function.as_deref() == Some("EventConsumerFunction"))
        .expect("the consumer reads the ingest queue");
    assert_eq!(mapping.queue, "IngestQueue");
    assert!(mapping.report_batch_item_failures);
    let visibility: u64 = ingest.attributes["VisibilityTimeout"]
        .parse()
        .expect("number");
    assert!(
        visibility >= 6 * consumer.timeout,
        "AWS guidance: visibility timeout ({visibility} s) at least 6 x the consumer's timeout ({} s)",
        consumer.timeout
    );

    let routes: Vec<(String, String)> = stack
        .routes
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    for path in ["/webhooks/{provider}", "/webhooks/{provider}/{endpoint}"] {
        assert!(routes.contains(&("POST".into(), path.into())), "{routes:?}");
    }
    for route in &stack.routes {
        let (function, auth) = if route.path.starts_with("/webhooks/") {
            ("WebhookIngressFunction", None)
        } else if route.path.starts_with("/oauth/") {
            ("OAuthFunction", None)
        } else if route.path.starts_with("/connections") {
            ("ConnectionsFunction", Some("AWS_IAM"))
        } else {
            panic!("unexpected route {route:?}");
        };
        assert_eq!(route.function.as_deref(), Some(function), "{route:?}");
        assert_eq!(
            route.auth.as_deref(),
            auth,
            "only the management API is IAM-authorized, and all of it is: {route:?}"
        );
    }
    for (method, path) in [
        ("GET", "/oauth/{provider}/start"),
        ("GET", "/oauth/{provider}/callback"),
        ("GET", "/connections"),
        ("GET", "/connections/{id}"),
        ("DELETE", "/connections/{id}"),
    ] {
        assert!(
            routes.contains(&(method.into(), path.into())),
            "{method} {path}: {routes:?}"
        );
    }

    let refresher = stack
        .schedules
        .iter()
        .find(|s| s.function.as_deref() == Some("TokenRefresherFunction"))
        .expect("the token refresher runs on a schedule");
    assert_eq!(refresher.expression.as_deref(), Some("rate(5 minutes)"));
    let oauth_env = stack.functions["OAuthFunction"].environment_strings();
    assert_eq!(
        oauth_env["CONNECTIONS_TABLE"],
        stack.resources["ConnectionsTable"]
    );
    assert_eq!(
        oauth_env["OAUTH_STATE_TABLE"],
        stack.resources["OAuthStateTable"]
    );
    assert!(
        oauth_env["TOKEN_KEY_ID"].contains(&stack.resources["TokenKey"]),
        "the token key: {}",
        oauth_env["TOKEN_KEY_ID"]
    );
    assert_eq!(
        oauth_env["SYNC_JOBS_TABLE"], stack.resources["SyncJobsTable"],
        "a new connection's sync jobs are created by the callback"
    );

    // Polling: the scheduler every minute → the poll queue (redrive to its DLQ) → the
    // worker, which sends records to the ingest queue.
    let scheduler = stack
        .schedules
        .iter()
        .find(|s| s.function.as_deref() == Some("PollSchedulerFunction"))
        .expect("the poll scheduler runs on a schedule");
    assert_eq!(scheduler.expression.as_deref(), Some("rate(1 minute)"));
    let poll = &stack.queues["PollQueue"];
    let poll_dlq = &stack.queues["PollDeadLetterQueue"];
    let poll_redrive: serde_json::Value =
        serde_json::from_str(&poll.attributes["RedrivePolicy"]).expect("a redrive policy");
    assert_eq!(
        poll_redrive["deadLetterTargetArn"],
        poll_dlq.arn.clone().expect("poll dlq arn").as_str()
    );
    let scheduler_env = stack.functions["PollSchedulerFunction"].environment_strings();
    assert_eq!(scheduler_env["POLL_QUEUE_URL"], poll.url);
    assert_eq!(
        scheduler_env["EVENT_BUS_NAME"], stack.outputs["EventBusName"],
        "connection.stale goes to the bus"
    );
    assert_eq!(
        scheduler_env["SYNC_JOBS_TABLE"],
        stack.resources["SyncJobsTable"]
    );
    let worker = &stack.functions["PollWorkerFunction"];
    assert_eq!(worker.binary.as_deref(), Some("poll-worker"));
    let worker_env = worker.environment_strings();
    assert_eq!(worker_env["INGEST_QUEUE_URL"], ingest.url);
    assert_eq!(worker_env["POLL_QUEUE_URL"], poll.url);
    assert_eq!(
        worker_env["OUTBOUND_STATE_TABLE"],
        stack.resources["OutboundStateTable"]
    );
    let worker_mapping = stack
        .event_source_mappings
        .iter()
        .find(|m| m.function.as_deref() == Some("PollWorkerFunction"))
        .expect("the worker reads the poll queue");
    assert_eq!(worker_mapping.queue, "PollQueue");
    assert!(worker_mapping.report_batch_item_failures);
    let poll_visibility: u64 = poll.attributes["VisibilityTimeout"]
        .parse()
        .expect("number");
    assert!(poll_visibility >= 6 * worker.timeout);

    // Health alarms, all notifying the alarm topic, and the dashboard showing them.
    let topic = &stack.resources["AlarmTopic"];
    for (name, metric) in [
        ("ingest-dlq-not-empty", "ApproximateNumberOfMessagesVisible"),
        ("poll-dlq-not-empty", "ApproximateNumberOfMessagesVisible"),
        ("end-to-end-latency-p95", "EndToEndLatency"),
        ("signature-failures", "SignatureFailures"),
        ("token-refresh-failures", "TokenRefreshFailures"),
        ("ingest-oldest-message-age", "ApproximateAgeOfOldestMessage"),
    ] {
        let alarm = &stack.alarms[&format!("junction-test-{name}")];
        assert_eq!(alarm.metric.as_deref(), Some(metric), "{name}");
        assert_eq!(alarm.actions, std::slice::from_ref(topic), "{name}");
    }
    let success = &stack.alarms["junction-test-processing-success-rate"];
    assert_eq!(
        (success.threshold, success.comparison.as_deref()),
        (Some(99.0), Some("LessThanThreshold"))
    );
    assert_eq!(success.expressions.len(), 1);
    assert!(
        !stack.resources.contains_key("AlarmEmailSubscription"),
        "no e-mail subscription without an AlarmEmail"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&stack.dashboards["junction-test-junction"]).expect("JSON body");
    let shown: Vec<String> = dashboard["widgets"]
        .as_array()
        .expect("widgets")
        .iter()
        .filter(|w| w["type"] == "alarm")
        .flat_map(|w| {
            w["properties"]["alarms"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|arn| arn.as_str().map(str::to_owned))
        .collect();
    for alarm in stack.alarms.values() {
        let arn = alarm.arn.as_deref().expect("arn");
        assert!(
            shown.iter().any(|shown| shown == arn),
            "the dashboard shows {arn}: {shown:?}"
        );
    }
    assert_eq!(shown.len(), stack.alarms.len());
}
