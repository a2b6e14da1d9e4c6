//! `template.yaml`, translated with aws-sam-translator, created as a CloudFormation stack
//! in the emulator: it must reach CREATE_COMPLETE with the ingest and poll queues' redrive
//! policies, the DLQs' retention, the polling schedule and tables, and the functions'
//! environments in place.
//!
//! The security properties are read from the translated template (what CloudFormation
//! is given on `sam deploy`; the emulator enforces no IAM or key policy): who may use the
//! token key and under which encryption context, that the OAuth function never
//! decrypts, the key's rotation, what the webhook ingress may write in Secrets Manager,
//! and the HTTP API's access log.

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
    sync::OnceLock,
};

use junction_aws::crypto::EncryptionContext;
use junction_aws::secrets::webhook_secret_name;
use junction_catalog::{Catalog, Handshake};
use junction_oauth::web::ManagementRoute;
use local_stack::emulator::{Moto, deploy, ensure_venv, repo_root};
use serde_json::Value;

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
        } else if route.path.starts_with("/v1/tenants/{tenant}/") {
            // Every management route is under its tenant, so that an IAM policy on
            // `…/v1/tenants/<tenant>/*` scopes a backend to one tenant.
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
        if function == "ConnectionsFunction" {
            assert!(
                ManagementRoute::from_route_key(&route.path).is_some(),
                "the connections function dispatches on its route key: {route:?}"
            );
        }
    }
    for (method, path) in [
        ("GET", "/oauth/{provider}/start"),
        ("GET", "/oauth/{provider}/callback"),
        // The pasted-credential form's submission (`junction_oauth::pasted`).
        ("POST", "/oauth/{provider}/callback"),
        ("POST", "/v1/tenants/{tenant}/connect-sessions"),
        ("GET", "/v1/tenants/{tenant}/connections"),
        ("GET", "/v1/tenants/{tenant}/connections/{id}"),
        ("DELETE", "/v1/tenants/{tenant}/connections/{id}"),
        ("POST", "/v1/tenants/{tenant}/connections/{id}/test"),
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
    let management_env = stack.functions["ConnectionsFunction"].environment_strings();
    for env in [&oauth_env, &management_env] {
        assert_eq!(
            env["CONNECT_SESSIONS_TABLE"], stack.resources["ConnectSessionsTable"],
            "the management API mints the sessions start consumes"
        );
        assert!(env.contains_key("OAUTH_RETURN_TO_ORIGINS"), "{env:?}");
    }

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

    // Actions: queued by the management API, run by the action runner with backoff
    // across receives; the DLQ only past the runner's own attempts.
    let actions = &stack.queues["ActionsQueue"];
    let actions_dlq = &stack.queues["ActionsDeadLetterQueue"];
    let actions_redrive: serde_json::Value =
        serde_json::from_str(&actions.attributes["RedrivePolicy"]).expect("a redrive policy");
    assert_eq!(
        actions_redrive["deadLetterTargetArn"],
        actions_dlq.arn.clone().expect("actions dlq arn").as_str()
    );
    assert!(
        actions_redrive["maxReceiveCount"].as_u64()
            > Some(u64::from(junction_outbound::actions::MAX_ACTION_ATTEMPTS)),
        "the runner fails an action itself before the DLQ takes it"
    );
    let runner = &stack.functions["ActionRunnerFunction"];
    assert_eq!(runner.binary.as_deref(), Some("action-runner"));
    let runner_env = runner.environment_strings();
    assert_eq!(runner_env["ACTIONS_QUEUE_URL"], actions.url);
    assert_eq!(
        runner_env["PROXY_IDEMPOTENCY_TABLE"],
        stack.resources["ProxyIdempotencyTable"]
    );
    assert_eq!(runner_env["EVENT_BUS_NAME"], stack.outputs["EventBusName"]);
    let runner_mapping = stack
        .event_source_mappings
        .iter()
        .find(|m| m.function.as_deref() == Some("ActionRunnerFunction"))
        .expect("the runner reads the actions queue");
    assert_eq!(runner_mapping.queue, "ActionsQueue");
    assert!(runner_mapping.report_batch_item_failures);
    let actions_visibility: u64 = actions.attributes["VisibilityTimeout"]
        .parse()
        .expect("number");
    assert!(actions_visibility >= 6 * runner.timeout);
    assert_eq!(management_env["ACTIONS_QUEUE_URL"], actions.url);
    assert_eq!(
        management_env["PROXY_IDEMPOTENCY_TABLE"],
        stack.resources["ProxyIdempotencyTable"]
    );
    for env in [&management_env, &runner_env] {
        assert_eq!(
            env["ACTION_STATUS_TABLE"],
            stack.resources["ActionStatusTable"]
        );
    }

    // Health alarms, all notifying the alarm topic, and the dashboard showing them.
    let topic = &stack.resources["AlarmTopic"];
    for (name, metric) in [
        ("ingest-dlq-not-empty", "ApproximateNumberOfMessagesVisible"),
        ("poll-dlq-not-empty", "ApproximateNumberOfMessagesVisible"),
        (
            "actions-dlq-not-empty",
            "ApproximateNumberOfMessagesVisible",
        ),
        ("end-to-end-latency-p95", "EndToEndLatency"),
        ("signature-failures", "SignatureFailures"),
        ("token-refresh-failures", "TokenRefreshFailures"),
        ("ingest-oldest-message-age", "ApproximateAgeOfOldestMessage"),
        ("outbound-latency-p95", "OutboundLatency"),
        ("api-version-mismatches", "ApiVersionMismatches"),
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
    // Issue 28, point 4: more than 10 failed calls a minute to any one provider (a
    // Metrics Insights query, one contributor per provider), p95 latency over 5 s.
    let errors = &stack.alarms["junction-test-outbound-errors-per-provider"];
    assert_eq!(
        errors.expressions,
        ["SELECT SUM(OutboundErrors) FROM SCHEMA(Junction, Provider) GROUP BY Provider"]
    );
    assert_eq!(
        (errors.threshold, errors.comparison.as_deref()),
        (Some(10.0), Some("GreaterThanThreshold"))
    );
    assert_eq!(errors.actions, std::slice::from_ref(topic));
    let latency = &stack.alarms["junction-test-outbound-latency-p95"];
    assert_eq!(latency.threshold, Some(5_000.0));
    let mismatches = &stack.alarms["junction-test-api-version-mismatches"];
    assert_eq!(
        (mismatches.threshold, mismatches.comparison.as_deref()),
        (Some(0.0), Some("GreaterThanThreshold"))
    );
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

/// The CloudFormation `template.yaml` becomes (`infra/emulator.py translate`: the
/// aws-sam-translator transform `sam deploy` runs), translated once per test binary.
/// `JUNCTION_TEMPLATE` names another template to check instead (a changed copy, to see
/// these tests fail).
fn translated() -> &'static Value {
    static TRANSLATED: OnceLock<Value> = OnceLock::new();
    TRANSLATED.get_or_init(|| {
        let root = repo_root();
        let template = std::env::var_os("JUNCTION_TEMPLATE")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| root.join("template.yaml"));
        let venv = ensure_venv(&root).expect("the project venv (infra/venv)");
        let output = Command::new(venv.join("bin/python"))
            .arg(root.join("infra/emulator.py"))
            .arg("translate")
            .arg("--template")
            .arg(&template)
            .output()
            .expect("run infra/emulator.py translate");
        assert!(
            output.status.success(),
            "translate failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("the translation is JSON")
    })
}

fn resource(logical_id: &str) -> &'static Value {
    &translated()["Resources"][logical_id]
}

fn resources_of_type(kind: &str) -> Vec<(&'static str, &'static Value)> {
    translated()["Resources"]
        .as_object()
        .expect("resources")
        .iter()
        .filter(|(_, resource)| resource["Type"] == kind)
        .map(|(id, resource)| (id.as_str(), resource))
        .collect()
}

/// A policy element that is one value or a list of them, as a list.
fn one_or_many(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

fn statements(document: &Value) -> Vec<&Value> {
    one_or_many(&document["Statement"])
}

fn actions(statement: &Value) -> Vec<&str> {
    one_or_many(&statement["Action"])
        .into_iter()
        .map(|action| action.as_str().expect("actions are strings"))
        .collect()
}

/// IAM's action matching: case-insensitive, `*` any run of characters, `?` one.
fn action_matches(pattern: &str, action: &str) -> bool {
    fn glob(pattern: &[u8], text: &[u8]) -> bool {
        match (pattern.first(), text.first()) {
            (None, None) => true,
            (Some(b'*'), _) => {
                glob(&pattern[1..], text) || (!text.is_empty() && glob(pattern, &text[1..]))
            }
            (Some(b'?'), Some(_)) => glob(&pattern[1..], &text[1..]),
            (Some(p), Some(t)) if p == t => glob(&pattern[1..], &text[1..]),
            _ => false,
        }
    }
    glob(
        pattern.to_ascii_lowercase().as_bytes(),
        action.to_ascii_lowercase().as_bytes(),
    )
}

/// Whether an Allow `statement` grants `action` (through any wildcard).
fn allows(statement: &Value, action: &str) -> bool {
    statement["Effect"] == "Allow"
        && actions(statement)
            .iter()
            .any(|pattern| action_matches(pattern, action))
}

/// Every statement of every identity policy in the template (the functions' roles, the
/// schedules' roles, any IAM policy resource), with the logical id that holds it.
fn identity_statements() -> Vec<(&'static str, &'static Value)> {
    let mut found = Vec::new();
    for (id, role) in resources_of_type("AWS::IAM::Role") {
        for policy in one_or_many(&role["Properties"]["Policies"]) {
            found.extend(
                statements(&policy["PolicyDocument"])
                    .into_iter()
                    .map(|statement| (id, statement)),
            );
        }
    }
    for kind in ["AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"] {
        for (id, policy) in resources_of_type(kind) {
            found.extend(
                statements(&policy["Properties"]["PolicyDocument"])
                    .into_iter()
                    .map(|statement| (id, statement)),
            );
        }
    }
    found
}

fn key_policy_statements() -> Vec<&'static Value> {
    statements(&resource("TokenKey")["Properties"]["KeyPolicy"])
}

/// The logical id of a function's execution role (`Role: !GetAtt <id>.Arn`).
fn role_of(function: &str) -> &'static str {
    let role = &resource(function)["Properties"]["Role"]["Fn::GetAtt"];
    assert_eq!(role[1], "Arn", "{function}'s role: {role}");
    role[0].as_str().expect("a role logical id")
}

/// The function roles a key policy statement names (`!GetAtt <role>.Arn`), and whether
/// it names anything else (the account, `*`, another ARN).
fn principals(statement: &Value) -> (BTreeSet<&'static str>, Vec<String>) {
    let mut roles = BTreeSet::new();
    let mut others = Vec::new();
    let principal = &statement["Principal"];
    let aws = if principal.is_string() {
        vec![principal]
    } else {
        assert!(
            principal
                .as_object()
                .is_some_and(|p| p.keys().all(|k| k == "AWS")),
            "only AWS principals in the key policy: {principal}"
        );
        one_or_many(&principal["AWS"])
    };
    for entry in aws {
        match entry["Fn::GetAtt"].as_array() {
            Some(att) if att.get(1) == Some(&Value::from("Arn")) => {
                let id = att[0].as_str().expect("logical id");
                roles.insert(
                    translated()["Resources"]
                        .as_object()
                        .expect("resources")
                        .get_key_value(id)
                        .map(|(id, _)| id.as_str())
                        .expect("the named role exists"),
                );
            }
            _ => others.push(entry.to_string()),
        }
    }
    (roles, others)
}

fn is_account_root(principal: &str) -> bool {
    principal == r#"{"Fn::Sub":"arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}"#
}

/// Every KMS operation that uses key material or hands out its use; none of them may
/// reach the account root, so no IAM policy in the account can grant them.
const KMS_USE: [&str; 14] = [
    "kms:Decrypt",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:GenerateDataKeyPair",
    "kms:GenerateDataKeyPairWithoutPlaintext",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:CreateGrant",
    "kms:Sign",
    "kms:Verify",
    "kms:GenerateMac",
    "kms:VerifyMac",
    "kms:DeriveSharedSecret",
];

#[test]
fn every_grant_of_the_token_key_is_bound_to_the_encryption_context_the_code_sends() {
    // What `KmsKeyService` sends with GenerateDataKey and Decrypt.
    let context = EncryptionContext::for_connection("tenant-a", "github", "conn_0");
    let keys: BTreeSet<&str> = context.pairs().keys().map(String::as_str).collect();
    // Connection ids are `conn_` and 32 hex characters (`oauth::new_connection_id`).
    let connection_id = "conn_0123456789abcdef0123456789abcdef";

    let in_key_policy = key_policy_statements();
    let in_identity_policies = identity_statements();
    let grants: Vec<&Value> = in_key_policy
        .iter()
        .copied()
        .chain(in_identity_policies.iter().map(|(_, statement)| *statement))
        .filter(|s| allows(s, "kms:Decrypt") || allows(s, "kms:GenerateDataKey"))
        .collect();
    assert!(
        grants.len() >= 2,
        "the key is used to seal and to open: {grants:?}"
    );
    for grant in grants {
        let condition = &grant["Condition"];
        let listed: BTreeSet<&str> =
            one_or_many(&condition["ForAllValues:StringEquals"]["kms:EncryptionContextKeys"])
                .into_iter()
                .filter_map(Value::as_str)
                .collect();
        assert_eq!(
            listed, keys,
            "only the context keys the code sends: {grant}"
        );
        for key in &keys {
            assert_eq!(
                condition["Null"][format!("kms:EncryptionContext:{key}")],
                "false",
                "{key} must be present (ForAllValues alone accepts no context): {grant}"
            );
        }
        let pattern = condition["StringLike"]["kms:EncryptionContext:connection_id"]
            .as_str()
            .unwrap_or_else(|| panic!("connection ids are constrained: {grant}"));
        assert!(
            action_matches(pattern, connection_id),
            "{pattern} accepts the ids the code makes"
        );
        assert!(
            !action_matches(pattern, "tenant-a"),
            "{pattern} accepts only connection ids"
        );
    }
}

/// Connect sessions are the proof that the product's backend asked for a connection: only
/// the IAM-authorized management API may create them, only the OAuth function may
/// consume them (one conditional delete), and nothing may read, change or list them.
#[test]
fn only_the_management_api_mints_connect_sessions_and_only_start_consumes_them() {
    let table = resource("ConnectSessionsTable");
    assert_eq!(table["Type"], "AWS::DynamoDB::Table");
    assert_eq!(
        table["Properties"]["TimeToLiveSpecification"],
        serde_json::json!({ "AttributeName": "expires_at", "Enabled": true })
    );
    assert_eq!(
        table["Properties"]["KeySchema"],
        serde_json::json!([{ "AttributeName": "session", "KeyType": "HASH" }])
    );
    let (minter, consumer) = (role_of("ConnectionsFunction"), role_of("OAuthFunction"));
    let on_sessions = |statement: &Value| {
        one_or_many(&statement["Resource"]).iter().any(|resource| {
            resource == &&Value::String("*".into())
                || resource.to_string().contains("ConnectSessionsTable")
        })
    };
    let mut granted = BTreeSet::new();
    for (holder, statement) in identity_statements() {
        if !on_sessions(statement) {
            continue;
        }
        for action in [
            "dynamodb:PutItem",
            "dynamodb:DeleteItem",
            "dynamodb:GetItem",
            "dynamodb:UpdateItem",
            "dynamodb:Query",
            "dynamodb:Scan",
            "dynamodb:BatchGetItem",
            "dynamodb:BatchWriteItem",
        ] {
            if allows(statement, action) {
                granted.insert((holder, action));
            }
        }
    }
    assert_eq!(
        granted,
        BTreeSet::from([
            (minter, "dynamodb:PutItem"),
            (consumer, "dynamodb:DeleteItem")
        ]),
        "who may do what to the connect sessions"
    );
}

#[test]
fn the_oauth_function_can_seal_tokens_but_never_open_them() {
    let role = role_of("OAuthFunction");
    // Every statement that could let the OAuth role use the key: its own policies, and
    // the key policy's statements naming it, the account (which IAM could delegate) or
    // anyone.
    let mut reaching: Vec<&Value> = identity_statements()
        .into_iter()
        .filter(|(holder, _)| *holder == role)
        .map(|(_, statement)| statement)
        .collect();
    reaching.extend(key_policy_statements().into_iter().filter(|statement| {
        let (roles, others) = principals(statement);
        roles.contains(role) || !others.is_empty()
    }));
    for statement in &reaching {
        for action in ["kms:Decrypt", "kms:ReEncryptFrom", "kms:CreateGrant"] {
            assert!(
                !allows(statement, action),
                "the OAuth function (internet-facing) must not be able to {action}: {statement}"
            );
        }
    }
    assert!(
        reaching.iter().any(|s| allows(s, "kms:GenerateDataKey")),
        "the callback seals a new connection's tokens"
    );
}

#[test]
fn the_key_policy_names_each_function_role_and_the_account_only_administers() {
    // What each function that holds the key's id does with it (junction_oauth):
    // `with_tokens` seals (GenerateDataKey), `tokens` opens (Decrypt).
    let needs: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::from([
        ("OAuthFunction", BTreeSet::from(["kms:GenerateDataKey"])),
        // The management API opens tokens to revoke and to test a connection, and
        // seals the new ones when the test's 401 refreshes.
        (
            "ConnectionsFunction",
            BTreeSet::from(["kms:Decrypt", "kms:GenerateDataKey"]),
        ),
        (
            "TokenRefresherFunction",
            BTreeSet::from(["kms:Decrypt", "kms:GenerateDataKey"]),
        ),
        (
            "PollWorkerFunction",
            BTreeSet::from(["kms:Decrypt", "kms:GenerateDataKey"]),
        ),
        // The action runner sends actions with a connection's token, refreshed on a 401.
        (
            "ActionRunnerFunction",
            BTreeSet::from(["kms:Decrypt", "kms:GenerateDataKey"]),
        ),
        // The subscription manager answers Graph's lifecycle notifications with the
        // connection's token, refreshed on a 401.
        (
            "SubscriptionManagerFunction",
            BTreeSet::from(["kms:Decrypt", "kms:GenerateDataKey"]),
        ),
        // The contract check reads sandbox connections' APIs with their tokens, refreshed
        // on a 401.
        (
            "ContractCheckFunction",
            BTreeSet::from(["kms:Decrypt", "kms:GenerateDataKey"]),
        ),
    ]);
    let functions = resources_of_type("AWS::Lambda::Function");
    let holders: BTreeSet<&str> = functions
        .iter()
        .filter(|(_, f)| !f["Properties"]["Environment"]["Variables"]["TOKEN_KEY_ID"].is_null())
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(
        holders,
        needs.keys().copied().collect(),
        "a function given the key's id needs its use decided here"
    );

    let mut granted: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut root_statements = 0;
    for statement in key_policy_statements() {
        assert_eq!(statement["Effect"], "Allow", "{statement}");
        let (roles, others) = principals(statement);
        if others.iter().any(|p| is_account_root(p)) {
            root_statements += 1;
            assert!(
                roles.is_empty(),
                "the account's statement is its own: {statement}"
            );
            for action in KMS_USE {
                assert!(
                    !allows(statement, action),
                    "the account only administers the key, never {action}: {statement}"
                );
            }
            // Without these the key could never be administered again.
            for action in [
                "kms:PutKeyPolicy",
                "kms:DescribeKey",
                "kms:ScheduleKeyDeletion",
            ] {
                assert!(allows(statement, action), "{action}: {statement}");
            }
            continue;
        }
        assert!(
            others.is_empty(),
            "only the account and function roles are named: {statement}"
        );
        for role in roles {
            for action in KMS_USE {
                if allows(statement, action) {
                    granted.entry(role).or_default().insert(action);
                }
            }
        }
    }
    assert_eq!(root_statements, 1, "one administration statement");
    let expected: BTreeMap<&str, BTreeSet<&str>> = needs
        .into_iter()
        .map(|(function, actions)| (role_of(function), actions))
        .collect();
    assert_eq!(
        granted, expected,
        "each function role may do what its code does, and nothing else may use the key"
    );

    // The key policy is the one place: no role policy grants KMS (which would also
    // make role -> key -> role a dependency cycle).
    for (holder, statement) in identity_statements() {
        assert!(
            !actions(statement)
                .iter()
                .any(|a| a.to_ascii_lowercase().starts_with("kms:") || a.starts_with('*')),
            "{holder} has a KMS grant outside the key policy: {statement}"
        );
    }
}

/// The resources `value` refers to (`Ref`, `Fn::GetAtt`, `${…}` in `Fn::Sub`).
fn references(
    value: &Value,
    resources: &serde_json::Map<String, Value>,
    found: &mut BTreeSet<String>,
) {
    let note = |name: &str, found: &mut BTreeSet<String>| {
        let id = name.split('.').next().unwrap_or(name);
        if resources.contains_key(id) {
            found.insert(id.to_owned());
        }
    };
    match value {
        Value::Object(object) => {
            for (key, inner) in object {
                match (key.as_str(), inner) {
                    ("Ref", Value::String(name)) | ("Fn::GetAtt", Value::String(name)) => {
                        note(name, found)
                    }
                    ("Fn::GetAtt", Value::Array(parts)) => {
                        if let Some(name) = parts.first().and_then(Value::as_str) {
                            note(name, found);
                        }
                    }
                    ("Fn::Sub", Value::String(text)) => {
                        for part in text.split("${").skip(1) {
                            if let Some((name, _)) = part.split_once('}') {
                                note(name, found);
                            }
                        }
                    }
                    _ => {}
                }
                references(inner, resources, found);
            }
        }
        Value::Array(items) => {
            for item in items {
                references(item, resources, found);
            }
        }
        _ => {}
    }
}

#[test]
fn the_translated_template_has_no_dependency_cycle() {
    // CloudFormation refuses a template whose resources depend on each other in a
    // circle (key policy -> role, role policy -> key is the easy one to write); the
    // SAM template's lint does not see through the transform, and the emulator's
    // stack creation resolves references lazily, so the translation is checked here.
    let resources = translated()["Resources"].as_object().expect("resources");
    let mut edges: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (id, resource) in resources {
        let mut found = BTreeSet::new();
        references(&resource["Properties"], resources, &mut found);
        for dependency in one_or_many(&resource["DependsOn"]) {
            found.insert(dependency.as_str().expect("a logical id").to_owned());
        }
        edges.insert(id, found);
    }
    // Depth-first search; a resource met again while still on the path closes a cycle.
    fn visit<'a>(
        id: &'a str,
        edges: &'a BTreeMap<&str, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(id) {
            return;
        }
        if let Some(start) = path.iter().position(|on| *on == id) {
            panic!("dependency cycle: {} -> {id}", path[start..].join(" -> "));
        }
        path.push(id);
        for next in edges.get(id).into_iter().flatten() {
            visit(next, edges, path, done);
        }
        path.pop();
        done.insert(id);
    }
    let mut done = BTreeSet::new();
    for id in edges.keys() {
        visit(id, &edges, &mut Vec::new(), &mut done);
    }
    assert!(
        edges["TokenKey"].contains(role_of("OAuthFunction")),
        "the key policy names the roles, so the walk sees that edge"
    );
}

#[test]
fn the_token_key_rotates_quarterly() {
    let key = &resource("TokenKey")["Properties"];
    assert_eq!(key["EnableKeyRotation"], true);
    assert_eq!(key["RotationPeriodInDays"], 90);
}

/// Whether a handshake stores the secret it delivers (`UnsignedHandshake::StoreSecret`
/// in shared/src/webhooks/handshake.rs). Exhaustive, so a new handshake is decided here.
fn installs_secret(handshake: Handshake) -> bool {
    match handshake {
        Handshake::AsanaHookSecret | Handshake::NotionVerificationToken => true,
        Handshake::SlackUrlVerification
        | Handshake::DiscordPing
        | Handshake::DiscordWebhookPing
        | Handshake::ZoomUrlValidation
        | Handshake::TwitchCallbackVerification
        | Handshake::XeroIntentToReceive
        | Handshake::OktaVerification
        | Handshake::MetaHubChallenge
        | Handshake::TwitterCrc
        | Handshake::DropboxChallenge
        | Handshake::GraphValidationToken => false,
    }
}

/// Secrets Manager operations that change a secret or who may read it.
const SECRET_WRITES: [&str; 15] = [
    "secretsmanager:CreateSecret",
    "secretsmanager:PutSecretValue",
    "secretsmanager:UpdateSecret",
    "secretsmanager:UpdateSecretVersionStage",
    "secretsmanager:RestoreSecret",
    "secretsmanager:DeleteSecret",
    "secretsmanager:RotateSecret",
    "secretsmanager:CancelRotateSecret",
    "secretsmanager:PutResourcePolicy",
    "secretsmanager:DeleteResourcePolicy",
    "secretsmanager:TagResource",
    "secretsmanager:UntagResource",
    "secretsmanager:ReplicateSecretToRegions",
    "secretsmanager:RemoveRegionsFromReplication",
    "secretsmanager:StopReplicationToReplica",
];

#[test]
fn the_ingress_may_only_create_the_secrets_of_handshakes_that_install_one() {
    let providers: BTreeSet<&str> = Catalog::embedded()
        .expect("catalog")
        .providers()
        .filter(|p| {
            p.webhook
                .as_ref()
                .and_then(|w| w.handshake)
                .is_some_and(installs_secret)
        })
        .map(|p| p.id.as_str())
        .collect();
    assert_eq!(providers, BTreeSet::from(["asana", "notion"]));
    // The names `HandshakeSecretStore` is given (`WebhookSecrets::secret_name`), as ARNs:
    // a secret's ARN is its name, `-` and six random characters.
    let arn = "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:";
    let expected: BTreeSet<String> = providers
        .iter()
        .flat_map(|provider| {
            [
                format!(
                    "{arn}{}-??????",
                    webhook_secret_name("${Prefix}", provider, None)
                ),
                format!(
                    "{arn}{}",
                    webhook_secret_name("${Prefix}", provider, Some("*"))
                ),
            ]
        })
        .collect();

    let ingress = role_of("WebhookIngressFunction");
    let mut creatable = BTreeSet::new();
    for (holder, statement) in identity_statements() {
        for action in SECRET_WRITES {
            if !allows(statement, action) {
                continue;
            }
            assert!(
                holder == ingress && action == "secretsmanager:CreateSecret",
                "{holder} may {action}: {statement}"
            );
            for resource in one_or_many(&statement["Resource"]) {
                creatable.insert(
                    resource["Fn::Sub"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| resource.to_string()),
                );
            }
        }
    }
    assert_eq!(
        creatable, expected,
        "CreateSecret only for the handshake providers' secret names"
    );
}

/// `$context` variables an access log line may carry: none holds the query string.
const LOGGED_CONTEXT: [&str; 15] = [
    "requestId",
    "requestTime",
    "identity.sourceIp",
    "identity.userAgent",
    "identity.userArn",
    "httpMethod",
    "routeKey",
    "path",
    "protocol",
    "status",
    "responseLength",
    "responseLatency",
    "integrationStatus",
    "integrationLatency",
    "integrationErrorMessage",
];

#[test]
fn the_http_api_logs_each_request_to_a_retained_group_without_query_strings() {
    let stages: Vec<_> = resources_of_type("AWS::ApiGatewayV2::Stage")
        .into_iter()
        .filter(|(_, stage)| stage["Properties"]["ApiId"]["Ref"] == "HttpApi")
        .collect();
    assert_eq!(stages.len(), 1, "{stages:?}");
    let settings = &stages[0].1["Properties"]["AccessLogSettings"];
    let destination = &settings["DestinationArn"]["Fn::GetAtt"];
    assert_eq!(destination[1], "Arn", "{settings}");
    let group = resource(destination[0].as_str().expect("a log group"));
    assert_eq!(group["Type"], "AWS::Logs::LogGroup");
    let retention = group["Properties"]["RetentionInDays"]
        .as_u64()
        .expect("the access log group has a retention");
    assert!(retention > 0);

    let format = settings["Format"].as_str().expect("a format");
    let line: serde_json::Map<String, Value> =
        serde_json::from_str(format).expect("each line is a JSON object");
    let mut logged = BTreeSet::new();
    for (field, value) in &line {
        let variable = value
            .as_str()
            .and_then(|v| v.strip_prefix("$context."))
            .unwrap_or_else(|| panic!("{field}: one $context variable, got {value}"));
        assert!(
            LOGGED_CONTEXT.contains(&variable),
            "{field}: $context.{variable} is not known to leave the query string out"
        );
        logged.insert(variable);
    }
    for needed in ["requestId", "routeKey", "status", "identity.sourceIp"] {
        assert!(logged.contains(needed), "the log names {needed}: {format}");
    }
    assert!(
        !format.to_ascii_lowercase().contains("query"),
        "no query string in access logs (OAuth callbacks carry code and state): {format}"
    );
}

/// Issue 24, part 4: the account index is the connections table's `by-provider-account`
/// index, keyed by the attribute the connection store writes and the consumer's adapter
/// reads, projecting the keys and the tenant only; the consumer finds it in its
/// environment, and may query that index and read a connection's `id` and `tenant`,
/// nothing else of the table (its tokens above all).
#[test]
fn the_consumer_reads_the_account_index_and_a_connection_s_tenant_and_nothing_else_of_it() {
    use junction_pipeline::accounts::{PROVIDER_ACCOUNT_ATTRIBUTE, PROVIDER_ACCOUNT_INDEX};
    assert_eq!(
        junction_oauth::PROVIDER_ACCOUNT_ATTRIBUTE,
        PROVIDER_ACCOUNT_ATTRIBUTE,
        "the writer's and the reader's attribute"
    );
    let table = &resource("ConnectionsTable")["Properties"];
    let index = table["GlobalSecondaryIndexes"]
        .as_array()
        .expect("indexes")
        .iter()
        .find(|index| index["IndexName"] == PROVIDER_ACCOUNT_INDEX)
        .expect("the account index");
    assert_eq!(
        index["KeySchema"],
        serde_json::json!([
            { "AttributeName": PROVIDER_ACCOUNT_ATTRIBUTE, "KeyType": "HASH" },
            { "AttributeName": "created_at", "KeyType": "RANGE" },
        ])
    );
    assert_eq!(
        index["Projection"],
        serde_json::json!({ "ProjectionType": "INCLUDE", "NonKeyAttributes": ["tenant"] }),
        "keys and tenant: no tokens, no connection document"
    );
    assert!(
        table["AttributeDefinitions"]
            .as_array()
            .expect("attributes")
            .contains(&serde_json::json!({
                "AttributeName": PROVIDER_ACCOUNT_ATTRIBUTE,
                "AttributeType": "S"
            }))
    );
    assert_eq!(
        resource("EventConsumerFunction")["Properties"]["Environment"]["Variables"]["CONNECTIONS_TABLE"],
        serde_json::json!({ "Ref": "ConnectionsTable" })
    );

    let consumer = role_of("EventConsumerFunction");
    let index_arn = serde_json::json!({
        "Fn::Sub": format!("${{ConnectionsTable.Arn}}/index/{PROVIDER_ACCOUNT_INDEX}")
    });
    let table_arn = serde_json::json!({ "Fn::GetAtt": ["ConnectionsTable", "Arn"] });
    let mut granted = BTreeSet::new();
    for (holder, statement) in identity_statements() {
        let resources = one_or_many(&statement["Resource"]);
        let on_connections = resources.iter().any(|resource| {
            *resource == &Value::String("*".into())
                || resource.to_string().contains("ConnectionsTable")
        });
        if holder != consumer || !on_connections {
            continue;
        }
        for action in [
            "dynamodb:GetItem",
            "dynamodb:BatchGetItem",
            "dynamodb:Query",
            "dynamodb:Scan",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",
            "dynamodb:BatchWriteItem",
            "dynamodb:PartiQLSelect",
        ] {
            if !allows(statement, action) {
                continue;
            }
            granted.insert(action);
            match action {
                "dynamodb:Query" => assert_eq!(
                    resources,
                    [&index_arn],
                    "the consumer queries the account index only: {statement}"
                ),
                "dynamodb:GetItem" => {
                    assert_eq!(resources, [&table_arn], "{statement}");
                    assert_eq!(
                        statement["Condition"],
                        serde_json::json!({
                            "ForAllValues:StringEquals": { "dynamodb:Attributes": ["id", "tenant"] },
                            "StringEqualsIfExists": { "dynamodb:Select": "SPECIFIC_ATTRIBUTES" },
                        }),
                        "a connection's id and tenant, no other attribute: {statement}"
                    );
                }
                // Issue 28, point 2: the last-event items only, their time, and nothing
                // returned (no token).
                "dynamodb:UpdateItem" => {
                    use junction_pipeline::last_events::{
                        DELETED_AT_ATTRIBUTE, LAST_EVENT_AT_ATTRIBUTE, LAST_EVENT_KEY_PREFIX,
                    };
                    assert_eq!(resources, [&table_arn], "{statement}");
                    assert_eq!(
                        statement["Condition"],
                        serde_json::json!({
                            "ForAllValues:StringLike": {
                                "dynamodb:LeadingKeys": [format!("{LAST_EVENT_KEY_PREFIX}*")]
                            },
                            "ForAllValues:StringEquals": {
                                "dynamodb:Attributes": [
                                    "id",
                                    LAST_EVENT_AT_ATTRIBUTE,
                                    DELETED_AT_ATTRIBUTE
                                ]
                            },
                            "StringEqualsIfExists": { "dynamodb:ReturnValues": "NONE" },
                        }),
                        "a connection's last event item, no other item or attribute: {statement}"
                    );
                }
                other => panic!("the consumer may not {other} the connections: {statement}"),
            }
        }
    }
    assert_eq!(
        granted,
        BTreeSet::from(["dynamodb:GetItem", "dynamodb:Query", "dynamodb:UpdateItem"]),
        "what the consumer's account index and last events call"
    );
}
