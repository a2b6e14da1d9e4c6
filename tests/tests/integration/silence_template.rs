//! Silence detection in `template.yaml` (issue 28, point 3): the detector function on its
//! 15-minute schedule with the four thresholds as stack parameters (whose defaults are
//! the code's), a role that may touch only what the detector's adapters send, the two
//! alarms, and the dashboard showing each. Read from the template as written (tags
//! dropped, values kept); `silence_emulator` deploys it and runs the detector on the
//! emulator.

use std::collections::BTreeSet;

use junction_aws::config::Env;
use junction_health::silence::SilenceSettings;
use junction_health::silence::dynamo::{
    CONNECTION_ATTRIBUTES, LAST_EVENT_KEY_PREFIX, PROVIDER_ATTRIBUTES, PROVIDER_SILENCE_KEY_PREFIX,
};
use serde_json::Value;

use crate::schema_support::read_yaml;

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

/// The detector's policy statements.
fn statements(template: &Value) -> Vec<Value> {
    template["Resources"]["SilenceDetectorFunction"]["Properties"]["Policies"]
        .as_array()
        .expect("policies")
        .iter()
        .flat_map(|policy| policy["Statement"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn statement(template: &Value, sid: &str) -> Value {
    statements(template)
        .into_iter()
        .find(|s| s["Sid"] == sid)
        .unwrap_or_else(|| panic!("statement {sid}"))
}

#[test]
fn the_detector_runs_every_15_minutes_with_the_thresholds_as_parameters() {
    let template = template();
    let function = &template["Resources"]["SilenceDetectorFunction"];
    assert_eq!(function["Type"], "AWS::Serverless::Function");
    assert_eq!(
        function["Metadata"]["BuildProperties"]["Binary"],
        "silence-detector"
    );
    let schedule = &function["Properties"]["Events"]["EveryFifteenMinutes"];
    assert_eq!(schedule["Type"], "ScheduleV2");
    assert_eq!(
        schedule["Properties"]["ScheduleExpression"],
        "rate(15 minutes)"
    );
    let log_group = &template["Resources"]["SilenceDetectorLogGroup"];
    assert_eq!(log_group["Properties"]["RetentionInDays"], 30);

    // Each threshold is a parameter with a description, passed to the function under
    // the key the code reads; the defaults are the code's.
    let env = &function["Properties"]["Environment"]["Variables"];
    let mut defaults = Vec::new();
    for (parameter, key) in [
        (
            "SilenceProviderMinimumHourly",
            "SILENCE_PROVIDER_MINIMUM_HOURLY",
        ),
        ("SilenceProviderRatio", "SILENCE_PROVIDER_RATIO"),
        (
            "SilenceConnectionMinimumGap",
            "SILENCE_CONNECTION_MINIMUM_GAP_HOURS",
        ),
        (
            "SilenceConnectionGapFactor",
            "SILENCE_CONNECTION_GAP_FACTOR",
        ),
    ] {
        let declared = &template["Parameters"][parameter];
        assert_eq!(declared["Type"], "Number", "{parameter}");
        assert!(
            declared["Description"]
                .as_str()
                .is_some_and(|d| d.len() > 40),
            "{parameter} says what it means"
        );
        assert_eq!(env[key], parameter, "{key} is !Ref {parameter}");
        defaults.push((key, declared["Default"].to_string()));
    }
    let pairs: Vec<(&str, &str)> = defaults
        .iter()
        .map(|(key, value)| (*key, value.as_str()))
        .collect();
    assert_eq!(
        SilenceSettings::from_env(&Env::from_pairs(&pairs)).expect("the defaults parse"),
        SilenceSettings::default()
    );
    for key in ["CONNECTIONS_TABLE", "SYNC_JOBS_TABLE", "EVENT_BUS_NAME"] {
        assert!(env[key].is_string(), "{key}");
    }
}

#[test]
fn the_detector_s_role_reaches_only_its_own_items_and_attributes() {
    let template = template();
    let mut detector_attributes: BTreeSet<&str> = CONNECTION_ATTRIBUTES.into_iter().collect();
    detector_attributes.extend(PROVIDER_ATTRIBUTES);

    // The scan: projected to the detector's attributes (tokens out of reach).
    let scan = statement(&template, "ScanSilenceItems");
    assert_eq!(strings(&scan["Action"]), ["dynamodb:Scan"]);
    let scanned: BTreeSet<String> =
        strings(&scan["Condition"]["ForAllValues:StringEquals"]["dynamodb:Attributes"])
            .into_iter()
            .collect();
    for attribute in detector_attributes
        .iter()
        .chain(&["id", "last_event_at", "deleted_at"])
    {
        assert!(
            scanned.contains(*attribute),
            "the scan may read {attribute}"
        );
    }
    for secret in ["tokens", "params", "account_id", "end_user"] {
        assert!(!scanned.contains(secret), "the scan may not read {secret}");
    }

    // A connection's owner: its tenant, provider and state (the provider is inside
    // `doc`, the connection's JSON without its sealed tokens); never `tokens`.
    let owner = statement(&template, "ReadConnectionOwner");
    assert_eq!(strings(&owner["Action"]), ["dynamodb:GetItem"]);
    assert_eq!(
        strings(&owner["Condition"]["ForAllValues:StringEquals"]["dynamodb:Attributes"]),
        ["id", "tenant", "provider", "state", "doc"]
    );

    // Its writes: its two key prefixes, its attributes, never last_event_at.
    let record = statement(&template, "RecordSilenceState");
    assert_eq!(strings(&record["Action"]), ["dynamodb:UpdateItem"]);
    assert_eq!(
        strings(&record["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]),
        [
            format!("{LAST_EVENT_KEY_PREFIX}*"),
            format!("{PROVIDER_SILENCE_KEY_PREFIX}*")
        ]
    );
    let written: BTreeSet<String> =
        strings(&record["Condition"]["ForAllValues:StringEquals"]["dynamodb:Attributes"])
            .into_iter()
            .collect();
    for attribute in &detector_attributes {
        assert!(written.contains(*attribute), "it may write {attribute}");
    }
    assert!(
        !written.contains("last_event_at"),
        "only the consumer moves last_event_at"
    );
    assert_eq!(
        record["Condition"]["StringEqualsIfExists"]["dynamodb:ReturnValues"],
        "NONE"
    );

    // Nothing else of the connections table; sync jobs read and replaced; the bus; the
    // two CloudWatch reads.
    for s in statements(&template) {
        let actions = strings(&s["Action"]);
        assert!(
            !actions.iter().any(|a| a.ends_with('*')),
            "no wildcard action: {s}"
        );
        for action in &actions {
            assert!(
                !matches!(
                    action.as_str(),
                    "dynamodb:PutItem" | "dynamodb:DeleteItem" | "dynamodb:Query"
                ) || s["Sid"] == "ForceReconciliationPolls",
                "{action} only on sync jobs: {s}"
            );
        }
    }
    let jobs = statement(&template, "ForceReconciliationPolls");
    assert_eq!(
        strings(&jobs["Action"]),
        ["dynamodb:GetItem", "dynamodb:PutItem"]
    );
    assert_eq!(jobs["Resource"], "SyncJobsTable.Arn");
    assert_eq!(
        strings(&statement(&template, "AnnounceSilence")["Action"]),
        ["events:PutEvents"]
    );
    assert_eq!(
        strings(&statement(&template, "ReadReceiptMetrics")["Action"]),
        ["cloudwatch:GetMetricData", "cloudwatch:ListMetrics"]
    );
}

/// `${AWS::StackName}` and the other `!Sub` variables of the dashboard body, filled in.
fn dashboard(template: &Value) -> Value {
    let body = &template["Resources"]["OperationsDashboard"]["Properties"]["DashboardBody"];
    let text = match body {
        Value::Array(parts) => parts[0].as_str().expect("the body's text"),
        Value::String(text) => text.as_str(),
        other => panic!("dashboard body {other}"),
    };
    let mut filled = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        filled.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closed") + start;
        filled.push_str(match &rest[start + 2..end] {
            "AWS::StackName" => "stack",
            "AWS::Partition" => "aws",
            "AWS::Region" => "us-east-1",
            "AWS::AccountId" => "123456789012",
            // Anything else (names inside strings, numbers such as a threshold).
            _ => "0",
        });
        rest = &rest[end + 1..];
    }
    filled.push_str(rest);
    serde_json::from_str(&filled).unwrap_or_else(|err| panic!("dashboard JSON: {err}"))
}

#[test]
fn both_alarms_watch_what_they_say_and_each_is_on_the_dashboard() {
    let template = template();
    let silence = &template["Resources"]["WebhookSilenceAlarm"]["Properties"];
    assert_eq!(silence["AlarmName"], "${AWS::StackName}-webhook-silence");
    let metrics = silence["Metrics"].as_array().expect("metric math");
    let watched: BTreeSet<&str> = metrics
        .iter()
        .filter_map(|m| m["MetricStat"]["Metric"]["MetricName"].as_str())
        .collect();
    assert_eq!(
        watched,
        BTreeSet::from(["SilentConnections", "SilentProviders"])
    );
    for metric in metrics.iter().filter(|m| m["MetricStat"].is_object()) {
        assert_eq!(
            (
                &metric["MetricStat"]["Stat"],
                &metric["MetricStat"]["Period"]
            ),
            (&Value::from("Maximum"), &Value::from(1800)),
            "each period holds at least one 15-minute run"
        );
    }
    let expression: Vec<&Value> = metrics.iter().filter(|m| m["ReturnData"] == true).collect();
    assert_eq!(expression.len(), 1);
    assert_eq!(
        expression[0]["Expression"],
        "FILL(providers, 0) + FILL(connections, 0)"
    );
    assert_eq!(
        (
            &silence["ComparisonOperator"],
            &silence["Threshold"],
            &silence["TreatMissingData"]
        ),
        (
            &Value::from("GreaterThanThreshold"),
            &Value::from(0),
            &Value::from("notBreaching")
        )
    );
    assert_eq!(silence["AlarmActions"], Value::from(vec!["AlarmTopic"]));

    let anomaly = &template["Resources"]["WebhookReceiptAnomalyAlarm"]["Properties"];
    assert_eq!(
        anomaly["AlarmName"],
        "${AWS::StackName}-webhook-receipt-anomaly"
    );
    assert_eq!(anomaly["ComparisonOperator"], "LessThanLowerThreshold");
    assert!(anomaly["Threshold"].is_null(), "the band is the threshold");
    let metrics = anomaly["Metrics"].as_array().expect("metrics");
    let band = metrics
        .iter()
        .find(|m| m["Id"] == anomaly["ThresholdMetricId"])
        .expect("ThresholdMetricId names a query");
    let received = metrics
        .iter()
        .find(|m| m["MetricStat"].is_object())
        .expect("the metric");
    assert_eq!(
        band["Expression"],
        format!(
            "ANOMALY_DETECTION_BAND({}, 3)",
            received["Id"].as_str().expect("id")
        )
    );
    let metric = &received["MetricStat"]["Metric"];
    assert_eq!(
        (&metric["Namespace"], &metric["MetricName"]),
        (&Value::from("Junction"), &Value::from("WebhooksReceived"))
    );
    assert!(metric["Dimensions"].is_null(), "the all-provider aggregate");
    assert_eq!(anomaly["AlarmActions"], Value::from(vec!["AlarmTopic"]));

    // Each alarm: a graph of its own (the alarm annotation draws its metrics and its
    // threshold or band) and a place in an alarm status widget.
    let widgets = dashboard(&template)["widgets"]
        .as_array()
        .cloned()
        .expect("widgets");
    for name in ["webhook-silence", "webhook-receipt-anomaly"] {
        let arn = format!("arn:aws:cloudwatch:us-east-1:123456789012:alarm:stack-{name}");
        assert!(
            widgets.iter().any(|w| w["type"] == "metric"
                && strings(&w["properties"]["annotations"]["alarms"]) == [arn.clone()]),
            "a graph of {name}"
        );
        assert!(
            widgets.iter().any(|w| w["type"] == "alarm"
                && strings(&w["properties"]["alarms"]).contains(&arn)),
            "{name} in an alarm status widget"
        );
    }
}
