//! Managed push subscriptions (issue 28, point 1) on the emulator and in the template:
//! the DynamoDB store meets the in-memory store's contract on the table `template.yaml`
//! creates (the sparse `by-renewal` index, `by-subscription`), and the template gives
//! each function that gains work exactly the access it needs: the oauth function
//! schedules (no token is opened there), the connections function deletes, the
//! refresher renews, and the subscription manager answers Graph's lifecycle
//! notifications from a rule on Junction's bus.

use junction_subscriptions::{
    DynamoSubscriptionStore, RENEWAL_INDEX, SUBSCRIPTION_INDEX, check_subscription_store_contract,
};
use serde_json::Value;

use crate::schema_support::read_yaml;

#[tokio::test]
async fn the_dynamodb_store_meets_the_contract_on_the_stacks_table() {
    let (_moto, aws, stack) = junction_tests::deployed("junction-subscriptions").await;
    let store =
        DynamoSubscriptionStore::from_config(&aws, stack.resources["SubscriptionsTable"].clone());
    check_subscription_store_contract(&store).await;
}

fn template() -> Value {
    read_yaml("template.yaml")
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items
            .iter()
            .filter_map(|item| item.as_str().map(str::to_owned))
            .collect(),
        Value::String(text) => vec![text.clone()],
        _ => Vec::new(),
    }
}

fn statement(template: &Value, function: &str, sid: &str) -> Value {
    template["Resources"][function]["Properties"]["Policies"]
        .as_array()
        .expect("policies")
        .iter()
        .flat_map(|policy| policy["Statement"].as_array().cloned().unwrap_or_default())
        .find(|s| s["Sid"] == sid)
        .unwrap_or_else(|| panic!("{function}: statement {sid}"))
}

/// The actions of every statement of `function` on the subscriptions table.
fn table_actions(template: &Value, function: &str) -> Vec<String> {
    let mut actions: Vec<String> = template["Resources"][function]["Properties"]["Policies"]
        .as_array()
        .expect("policies")
        .iter()
        .flat_map(|policy| policy["Statement"].as_array().cloned().unwrap_or_default())
        .filter(|s| s["Resource"].to_string().contains("SubscriptionsTable"))
        .flat_map(|s| strings(&s["Action"]))
        .collect();
    actions.sort();
    actions
}

fn env(template: &Value, function: &str, key: &str) -> Value {
    template["Resources"][function]["Properties"]["Environment"]["Variables"][key].clone()
}

#[test]
fn the_table_has_a_sparse_renewal_index_and_a_subscription_index() {
    let template = template();
    let table = &template["Resources"]["SubscriptionsTable"]["Properties"];
    assert_eq!(table["KeySchema"][0]["AttributeName"], "connection");
    let indexes = table["GlobalSecondaryIndexes"].as_array().expect("indexes");
    let index = |name: &str| {
        indexes
            .iter()
            .find(|i| i["IndexName"] == name)
            .unwrap_or_else(|| panic!("index {name}"))
            .clone()
    };
    let renewal = index(RENEWAL_INDEX);
    assert_eq!(renewal["KeySchema"][0]["AttributeName"], "renewal");
    assert_eq!(renewal["KeySchema"][1]["AttributeName"], "renew_at");
    let by_id = index(SUBSCRIPTION_INDEX);
    assert_eq!(by_id["KeySchema"][0]["AttributeName"], "subscription_key");
    assert_eq!(by_id["Projection"]["ProjectionType"], "KEYS_ONLY");
    assert_eq!(table["SSESpecification"]["SSEEnabled"], true);
}

#[test]
fn the_gmail_topic_is_a_parameter_that_defaults_to_off() {
    let template = template();
    let parameter = &template["Parameters"]["GmailPushTopic"];
    assert_eq!(parameter["Default"], "", "empty: Gmail push off");
    for function in [
        "OAuthFunction",
        "TokenRefresherFunction",
        "SubscriptionManagerFunction",
    ] {
        assert_eq!(
            env(&template, function, "SUBSCRIPTION_TOPIC_GMAIL"),
            "GmailPushTopic",
            "{function}"
        );
    }
    assert_eq!(
        junction_subscriptions::settings::topic_key("gmail"),
        "SUBSCRIPTION_TOPIC_GMAIL"
    );
}

#[test]
fn each_function_gets_only_the_subscription_access_its_work_needs() {
    let template = template();
    // The oauth function schedules: a read and a conditional put, no token opened.
    assert_eq!(
        table_actions(&template, "OAuthFunction"),
        ["dynamodb:GetItem", "dynamodb:PutItem"]
    );
    assert!(env(&template, "OAuthFunction", "OUTBOUND_STATE_TABLE").is_null());
    // The connections function deletes at disconnect.
    assert_eq!(
        table_actions(&template, "ConnectionsFunction"),
        ["dynamodb:DeleteItem", "dynamodb:GetItem"]
    );
    // The refresher renews what is due, through the renewal index only.
    let renew = statement(&template, "TokenRefresherFunction", "RenewSubscriptions");
    assert_eq!(
        strings(&renew["Action"]).len(),
        4,
        "get, put, delete, query: {renew}"
    );
    assert!(renew["Resource"].to_string().contains("/index/by-renewal"));
    // The subscription manager finds notifications' subscriptions by id.
    let keep = statement(
        &template,
        "SubscriptionManagerFunction",
        "KeepSubscriptions",
    );
    assert!(
        keep["Resource"]
            .to_string()
            .contains("/index/by-subscription")
    );
    assert!(!strings(&keep["Action"]).contains(&"dynamodb:DeleteItem".to_owned()));
    // Both renewing functions read only the webhook secrets (clientState) besides the
    // OAuth and catalog ones, and force sync jobs due.
    for function in ["TokenRefresherFunction", "SubscriptionManagerFunction"] {
        let secrets = statement(&template, function, "ReadWebhookSecretsForClientState");
        assert!(
            secrets["Resource"].to_string().contains("/webhooks/*"),
            "{function}"
        );
        let jobs = statement(&template, function, "ForceReconciliationPolls");
        assert_eq!(
            strings(&jobs["Action"]),
            ["dynamodb:GetItem", "dynamodb:PutItem"],
            "{function}"
        );
        assert!(
            env(&template, function, "WEBHOOK_BASE_URL")
                .to_string()
                .contains("/webhooks/"),
            "{function}"
        );
    }
}

#[test]
fn graph_lifecycle_events_reach_the_subscription_manager_by_a_rule_on_the_bus() {
    let template = template();
    let function = &template["Resources"]["SubscriptionManagerFunction"];
    assert_eq!(
        function["Metadata"]["BuildProperties"]["Binary"],
        "subscription-manager"
    );
    let rule = &function["Properties"]["Events"]["GraphLifecycleNotifications"];
    assert_eq!(rule["Type"], "EventBridgeRule");
    assert!(
        rule["Properties"]["EventBusName"]
            .to_string()
            .contains("EventBus")
    );
    let pattern = &rule["Properties"]["Pattern"];
    assert_eq!(strings(&pattern["source"]), ["junction/microsoft"]);
    // Only lifecycle bodies lack a changeType, so only they are published as
    // provider_event.occurred with no event type
    // (a_graph_lifecycle_delivery_is_published_with_its_body_as_raw); the messages
    // poller's removals are occurred too, but typed message.removed.
    assert_eq!(
        strings(&pattern["detail"]["type"]),
        ["provider_event.occurred"]
    );
    assert_eq!(
        pattern["detail"]["data"]["event_type"],
        serde_json::json!([null])
    );

    // A connect's announced create (connection.subscription_pending) from any provider.
    let pending = &function["Properties"]["Events"]["PendingSubscriptions"];
    assert_eq!(pending["Type"], "EventBridgeRule");
    assert_eq!(
        pending["Properties"]["Pattern"]["source"],
        serde_json::json!([{"prefix": "junction/"}])
    );
    assert_eq!(
        strings(&pending["Properties"]["Pattern"]["detail"]["type"]),
        [junction_subscriptions::SUBSCRIPTION_PENDING]
    );
    let catalog = junction_catalog::Catalog::embedded().expect("catalog");
    let lifecycle = catalog
        .get("microsoft")
        .and_then(|p| p.subscription.as_ref())
        .and_then(|s| s.lifecycle.as_ref())
        .expect("lifecycle");
    assert_eq!(
        (lifecycle.items.as_str(), lifecycle.event.as_str()),
        ("/value", "/lifecycleEvent"),
        "the rule's pattern follows the catalog's pointers"
    );
    assert_eq!(
        template["Resources"]["SubscriptionManagerLogGroup"]["Properties"]["RetentionInDays"],
        30
    );
}

/// `connection.subscription_failed` as the manager publishes it, for the event schema
/// check (`event_schemas`): a Graph create on a connection whose provider has no webhook
/// secret to send as `clientState` (no request goes out), then a renewal the provider
/// refuses after the subscription has expired.
pub async fn published() -> Vec<junction_aws::events::CloudEvent> {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use junction_aws::clock::Clock;
    use junction_aws::secrets::InMemorySecretSource;
    use junction_subscriptions::{
        InMemorySubscriptionStore, Outcome, SubscriptionManager, SubscriptionPorts,
        SubscriptionSettings, SubscriptionStore,
    };

    let graph = include_str!("../../../shared/catalog/providers/microsoft.toml");
    let section = graph
        .split_once("\n[subscription]\n")
        .map(|(_, rest)| rest)
        .expect("microsoft.toml has [subscription]");
    let extra = format!(
        "[api]\nbase_url = \"{{provider_api}}\"\nrate_limit = {{ requests_per_second = 100.0, burst = 20, scope = \"connection\" }}\n\n[subscription]\n{section}"
    );
    let h =
        junction_oauth::testing::harness_with(fake_provider::AuthServerConfig::default(), &extra)
            .await;
    let connection = h.connect().await;
    let store = Arc::new(InMemorySubscriptionStore::default());
    let manager = SubscriptionManager::new(SubscriptionPorts {
        catalog: h.vault.catalog(),
        client: junction_outbound::OutboundClient::new(
            h.vault.catalog(),
            h.vault.clone(),
            Arc::new(junction_outbound::InMemorySharedState::default()),
            h.clock.clone(),
        ),
        vault: h.vault.clone(),
        store: store.clone(),
        secrets: Arc::new(InMemorySecretSource::default()),
        jobs: None,
        bus: h.bus.clone(),
        clock: h.clock.clone(),
        settings: SubscriptionSettings {
            webhook_base_url: Some("https://hub.example.com/webhooks/".to_owned()),
            secret_prefix: "junction".to_owned(),
            table: "subscriptions".to_owned(),
            ..SubscriptionSettings::default()
        },
    });
    let now = h.clock.now().unix_timestamp();
    let deadline = || Instant::now() + Duration::from_secs(5);
    let outcome = manager
        .ensure("fakeauth", &connection, now, deadline())
        .await
        .expect("ensure");
    assert_eq!(outcome, Outcome::Failed("no_webhook_secret".into()));

    // A subscription that expired while its renewals failed.
    let mut record = store
        .get(&connection)
        .await
        .expect("store")
        .expect("record");
    let expected = record.version;
    record.subscription_id = Some("7f105c7d-2dc5-4530-97cd-4e7a00000001".to_owned());
    record.expires_at = Some(now - 60);
    record.renew_at = Some(now);
    record.version += 1;
    assert!(store.put(&record, Some(expected)).await.expect("store"));
    h.server.serve_provider_api(|_| {
        fake_provider::ScriptedResponse::with_status(
            403,
            &serde_json::json!({"error": {"code": "Forbidden"}}),
        )
    });
    manager.renew_due(deadline()).await.expect("sweep");

    let events: Vec<_> = h
        .bus
        .events()
        .into_iter()
        .filter(|e| e.event_type == "connection.subscription_failed")
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1].data["expired"], true);

    // A connect's setup in the oauth function: the create announced.
    let scheduler = junction_subscriptions::SubscriptionScheduler {
        catalog: h.vault.catalog(),
        store: store.clone(),
        connections: h.connections.clone(),
        bus: h.bus.clone(),
        settings: SubscriptionSettings::default(),
    };
    scheduler
        .schedule("fakeauth", &connection, now)
        .await
        .expect("scheduled");
    let pending: Vec<_> = h
        .bus
        .events()
        .into_iter()
        .filter(|e| e.event_type == junction_subscriptions::SUBSCRIPTION_PENDING)
        .collect();
    assert_eq!(pending.len(), 1, "{pending:?}");
    events.into_iter().chain(pending).collect()
}

/// What the rule matches is what the consumer publishes for a Graph lifecycle delivery:
/// microsoft.toml's `event_type` (`/value/0/changeType`) finds nothing in it, so the
/// delivery passes through as `provider_event.occurred` with the body as `data.raw`,
/// where `value[].lifecycleEvent` is.
#[test]
fn a_graph_lifecycle_delivery_is_published_with_its_body_as_raw() {
    use std::collections::BTreeMap;

    use junction_pipeline::normalize::{Normalized, RawEvent, normalize};

    let body = serde_json::json!({"value": [{
        "subscriptionId": "7f105c7d-2dc5-4530-97cd-4e7a00000001",
        "subscriptionExpirationDateTime": "2027-01-20T08:00:00.0000000Z",
        "tenantId": "bb8775a4-4d8c-42cf-a1d4-4d58c2bb668f",
        "clientState": "secret",
        "lifecycleEvent": "missed",
    }]})
    .to_string();
    let headers = BTreeMap::new();
    let normalization = normalize(&RawEvent {
        provider: "microsoft",
        resource: None,
        event_type: None,
        event_id: Some("sha256-of-the-body"),
        headers: &headers,
        body: body.as_bytes(),
        pinned_api_version: Some("v1.0"),
    })
    .expect("normalized");
    let [item] = normalization.items.as_slice() else {
        panic!("one item: {:?}", normalization.items);
    };
    assert!(matches!(item, Normalized::ProviderEvent(_)));
    assert_eq!(item.model().as_str(), "provider_event");
    assert_eq!(item.meta().change.as_str(), "occurred");
    let data = serde_json::to_value(item).expect("data");
    assert_eq!(data["raw"]["value"][0]["lifecycleEvent"], "missed");
    assert_eq!(
        data["event_type"],
        serde_json::Value::Null,
        "the rule's data.event_type"
    );

    // A change notification names its changeType (the ingress reads it as the event
    // type): created, updated or deleted, never occurred, so the rule leaves it alone.
    for change in ["created", "updated", "deleted"] {
        let body = serde_json::json!({"value": [{
            "subscriptionId": "7f105c7d-2dc5-4530-97cd-4e7a00000001",
            "changeType": change,
            "resource": "Users/u-1/Messages/m-1",
            "tenantId": "bb8775a4-4d8c-42cf-a1d4-4d58c2bb668f",
        }]})
        .to_string();
        let normalization = normalize(&RawEvent {
            provider: "microsoft",
            resource: None,
            event_type: Some(change),
            event_id: Some("sha256-of-the-body"),
            headers: &headers,
            body: body.as_bytes(),
            pinned_api_version: Some("v1.0"),
        })
        .expect("normalized");
        assert_eq!(
            normalization.items[0].meta().change.as_str(),
            change,
            "not occurred"
        );
    }
}
