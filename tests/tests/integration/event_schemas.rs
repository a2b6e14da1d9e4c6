//! Every CloudEvent Junction publishes matches the schemas in `docs/schemas`: its
//! envelope `cloudevent.schema.json`, its `data` `events/<type>.schema.json`.
//!
//! The events come from the real code paths over in-memory ports: the event consumer
//! over every normalization fixture in `tests/fixtures` (and over a few edits of them,
//! for the types no fixture produces alone: a Slack `channel_created`, a Salesforce
//! `CREATE` and `UNDELETE`, a Linear `create`, HubSpot contact deletions and restores,
//! conflicting versions of a record, an event too large for the bus; a polled record and
//! a webhook of an account two tenants connected, stamped with `tenant` and
//! `connection` by the consumer's account index), the OAuth vault
//! (`connection.needs_reauth`, `connection.deleted`) and the poll scheduler
//! (`connection.stale`), the action runner (`action.succeeded`, `action.failed`,
//! over the fake provider's API), and the silence detector (`provider.silent`,
//! `connection.silent`). Every type seen must have a schema, and every schema's type
//! must have been seen: a schema for an event nothing publishes is a lie too.

use crate::schema_support;

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    sync::Arc,
    time::Duration,
};

use junction_aws::clock::FixedClock;
use junction_aws::events::{CloudEvent, InMemoryEventBus};
use junction_aws::payloads::{InMemoryPayloadStore, PayloadStore};
use junction_aws::queue::{InMemoryEventQueue, InMemoryRetryScheduler, attribute};
use junction_aws::retry::Backoff;
use junction_catalog::Catalog;
use junction_oauth::testing::{harness, harness_with};
use junction_outbound::actions::{ActionRunner, InMemoryActionStatusStore, actions_route};
use junction_outbound::idempotency::InMemoryProxyIdempotencyStore;
use junction_outbound::{InMemorySharedState, OutboundClient};
use junction_pipeline::accounts::{AccountConnection, InMemoryAccountIndex};
use junction_pipeline::consumer::{Consumer, InboundMessage, ItemResult, Ports};
use junction_pipeline::idempotency::{Idempotency, IdempotencyPolicy, InMemoryIdempotencyStore};
use junction_pipeline::records::InMemoryRecordStore;
use junction_polling::{InMemorySyncJobStore, PollScheduler, SyncJobStore, sample_job};
use schema_support::{Schemas, check, file_uri, json_files, repo};
use serde_json::Value;

/// An edit of a fixture before it is delivered: a JSON pointer into the fixture file
/// (`/body/…` for the payload, `/event_id`, `/event_type` for queue attributes) and the
/// JSON that replaces what is there.
type Edit = (&'static str, &'static str);

/// One delivery: a fixture, edited.
struct Delivery {
    fixture: &'static str,
    edits: &'static [Edit],
}

/// Deliveries to one fresh consumer, the type the last one must publish, and the
/// tenants its events of that type are stamped with (none: unmatched).
struct Scenario {
    expect: &'static str,
    tenants: &'static [&'static str],
    deliveries: &'static [Delivery],
}

/// The types no fixture publishes alone, each from an edit of a fixture that keeps it
/// the provider's documented shape, and events stamped with their tenants.
const SCENARIOS: &[Scenario] = &[
    // A record polled through a connection, and a webhook of an account two tenants
    // connected (see `Pipeline::new`'s account index).
    Scenario {
        expect: "pipeline_item.snapshot",
        tenants: &["tenant-1"],
        deliveries: &[Delivery {
            fixture: "hubspot/deal.json",
            edits: &[("/connection", r#""conn_polled""#)],
        }],
    },
    Scenario {
        expect: "provider_event.occurred",
        tenants: &["tenant-1", "tenant-2"],
        deliveries: &[Delivery {
            fixture: "stripe/invoice-paid.json",
            edits: &[("/account", r#""acct_shared""#)],
        }],
    },
    Scenario {
        expect: "message_group.created",
        tenants: &[],
        deliveries: &[Delivery {
            fixture: "slack/channel-rename.json",
            edits: &[
                ("/event_type", r#""channel_created""#),
                ("/body/event/type", r#""channel_created""#),
            ],
        }],
    },
    Scenario {
        expect: "pipeline_item.created",
        tenants: &[],
        deliveries: &[Delivery {
            fixture: "salesforce/cdc-update-cometd.json",
            edits: &[(
                "/body/data/payload/ChangeEventHeader/changeType",
                r#""CREATE""#,
            )],
        }],
    },
    Scenario {
        expect: "pipeline_item.restored",
        tenants: &[],
        deliveries: &[Delivery {
            fixture: "salesforce/cdc-update-cometd.json",
            edits: &[(
                "/body/data/payload/ChangeEventHeader/changeType",
                r#""UNDELETE""#,
            )],
        }],
    },
    Scenario {
        expect: "work_item.created",
        tenants: &[],
        deliveries: &[Delivery {
            fixture: "linear/issue-update.json",
            edits: &[("/body/action", r#""create""#)],
        }],
    },
    Scenario {
        expect: "provider_event.deleted",
        tenants: &[],
        deliveries: &[Delivery {
            fixture: "hubspot/webhook-events.json",
            edits: &[("/body/3/subscriptionType", r#""contact.deletion""#)],
        }],
    },
    Scenario {
        expect: "provider_event.restored",
        tenants: &[],
        deliveries: &[Delivery {
            fixture: "hubspot/webhook-events.json",
            edits: &[("/body/3/subscriptionType", r#""contact.restore""#)],
        }],
    },
    // Two polls of one record with the same modification time and different content.
    Scenario {
        expect: "message_group.conflict",
        tenants: &[],
        deliveries: &[
            Delivery {
                fixture: "slack/conversations-info.json",
                edits: &[],
            },
            Delivery {
                fixture: "slack/conversations-info.json",
                edits: &[
                    ("/event_id", r#""poll-2""#),
                    ("/body/channel/name", r#""general-renamed""#),
                ],
            },
        ],
    },
    Scenario {
        expect: "pipeline_item.conflict",
        tenants: &[],
        deliveries: &[
            Delivery {
                fixture: "hubspot/deal.json",
                edits: &[],
            },
            Delivery {
                fixture: "hubspot/deal.json",
                edits: &[
                    ("/event_id", r#""poll-2""#),
                    (
                        "/body/properties/dealname",
                        r#""Acme renewal 2024 (edited)""#,
                    ),
                ],
            },
        ],
    },
    Scenario {
        expect: "work_item.conflict",
        tenants: &[],
        deliveries: &[
            Delivery {
                fixture: "asana/task.json",
                edits: &[],
            },
            Delivery {
                fixture: "asana/task.json",
                edits: &[
                    ("/event_id", r#""poll-2""#),
                    ("/body/data/name", r#""Ship the Q1 report (edited)""#),
                ],
            },
        ],
    },
];

/// A consumer over in-memory ports, and the bus and payload bucket it publishes to. Its
/// account index knows connection `conn_polled` of tenant-1, and Stripe account
/// `acct_shared`, connected by tenant-1 and tenant-2; other deliveries are unmatched.
struct Pipeline {
    consumer: Consumer<Arc<InMemoryIdempotencyStore>>,
    bus: Arc<InMemoryEventBus>,
    payloads: Arc<InMemoryPayloadStore>,
}

impl Pipeline {
    fn new() -> Pipeline {
        let bus = Arc::new(InMemoryEventBus::default());
        let payloads = Arc::new(InMemoryPayloadStore::default());
        let accounts = Arc::new(InMemoryAccountIndex::default());
        let connection = |tenant: &str, connection: &str| AccountConnection {
            tenant: tenant.into(),
            connection: connection.into(),
            created_at: 1_700_000_000,
        };
        accounts.connect(connection("tenant-1", "conn_polled"), None);
        for (tenant, id) in [("tenant-1", "conn_a"), ("tenant-2", "conn_b")] {
            accounts.connect(connection(tenant, id), Some(("stripe", "acct_shared")));
        }
        let consumer = Consumer::new(
            Catalog::embedded().expect("the embedded catalog"),
            Idempotency::new(
                Arc::new(InMemoryIdempotencyStore::default()),
                IdempotencyPolicy::default(),
            ),
            Ports {
                records: Arc::new(InMemoryRecordStore::default()),
                bus: bus.clone(),
                payloads: payloads.clone(),
                retries: Arc::new(InMemoryRetryScheduler::default()),
                clock: Arc::new(FixedClock::at_unix(1_800_000_000)),
            },
            Backoff {
                base: Duration::from_secs(5),
                cap: Duration::from_secs(900),
            },
        )
        .with_account_index(accounts);
        Pipeline {
            consumer,
            bus,
            payloads,
        }
    }

    /// Delivers the fixture as the ingress (a webhook) or the poll worker (a fixture
    /// with a `resource`) would queue it; the events it published.
    async fn deliver(&self, name: &str, fixture: &Value) -> Vec<CloudEvent> {
        let before = self.bus.events().len();
        let text = |field: &str| fixture.get(field).and_then(Value::as_str);
        let body = match (text("body_text"), fixture.get("body")) {
            (Some(text), _) => text.to_owned(),
            (None, Some(body)) => body.to_string(),
            (None, None) => panic!("{name}: a fixture has a body"),
        };
        let mut attributes = BTreeMap::from([
            (attribute::PROVIDER, text("provider").expect("a provider")),
            // Fixtures of providers without an event id stand in for the ingress's
            // body hash with their own name.
            (attribute::EVENT_ID, text("event_id").unwrap_or(name)),
            (attribute::BODY_ENCODING, "utf8"),
            (attribute::RECEIVED_AT, "2026-01-02T03:04:05.000Z"),
        ]);
        if let Some(event_type) = text("event_type") {
            attributes.insert(attribute::EVENT_TYPE, event_type);
        }
        // Whose it is: the provider account the ingress read from the payload, or the
        // connection the poll worker fetched it through.
        if let Some(account) = text("account") {
            attributes.insert(attribute::ACCOUNT, account);
        }
        if let Some(connection) = text("connection") {
            attributes.insert(attribute::CONNECTION, connection);
        }
        if let Some(resource) = text("resource") {
            attributes.insert(attribute::RESOURCE, resource);
            attributes.insert(attribute::ORIGIN, "poll");
        }
        let headers = fixture
            .get("headers")
            .map(Value::to_string)
            .unwrap_or_default();
        if !headers.is_empty() {
            attributes.insert(attribute::HEADERS, &headers);
        }
        let outcome = self
            .consumer
            .process(InboundMessage {
                message_id: format!("m-{name}"),
                receipt_handle: format!("rh-{name}"),
                body,
                attributes: attributes
                    .into_iter()
                    .map(|(key, value)| (key.to_owned(), value.to_owned()))
                    .collect(),
                receive_count: 1,
            })
            .await;
        let events = self.bus.events().split_off(before);
        if outcome.result == ItemResult::Processed {
            assert!(
                outcome.published == events.len(),
                "{name}: the outcome counts what reached the bus: {outcome:?}"
            );
        } else {
            assert!(
                events.is_empty(),
                "{name}: {outcome:?} published {events:?}"
            );
        }
        events
    }
}

/// Fixture JSON with its edits applied.
fn edited(fixture: &str, edits: &[Edit]) -> Value {
    let path = repo().join("tests/fixtures").join(fixture);
    let text = fs::read_to_string(&path).unwrap_or_else(|err| panic!("{fixture}: {err}"));
    let mut value: Value =
        serde_json::from_str(&text).unwrap_or_else(|err| panic!("{fixture}: {err}"));
    for (pointer, json) in edits {
        let replacement: Value = serde_json::from_str(json).expect("an edit is JSON");
        match value.pointer_mut(pointer) {
            Some(slot) => *slot = replacement,
            None => {
                // A queue attribute the fixture does not have (`/event_id`, `/account`).
                let field = pointer.strip_prefix('/').filter(|f| !f.contains('/'));
                let field = field.unwrap_or_else(|| panic!("{fixture}: no {pointer}"));
                value[field] = replacement;
            }
        }
    }
    value
}

/// Every fixture (not its `.expected.json`), relative to `tests/fixtures`.
fn fixtures() -> Vec<String> {
    let root = repo().join("tests/fixtures");
    let names: Vec<String> = json_files("tests/fixtures")
        .iter()
        .filter_map(|path| {
            let relative = path.strip_prefix(&root).ok()?.to_str()?.to_owned();
            (!relative.ends_with(".expected.json")).then_some(relative)
        })
        .collect();
    assert!(names.len() > 30, "the fixtures are found: {names:?}");
    names
}

/// What the events' checks found: each type's count, and every failure.
#[derive(Default)]
struct Checked {
    types: BTreeMap<String, usize>,
    failures: Vec<String>,
}

struct Checker {
    envelope: jsonschema::Validator,
    data: BTreeMap<String, jsonschema::Validator>,
}

impl Checker {
    fn new() -> Checker {
        let schemas = Schemas::events();
        let envelope = schemas.validator(&file_uri(
            &repo().join("docs/schemas/cloudevent.schema.json"),
        ));
        let data = json_files("docs/schemas/events")
            .iter()
            .map(|path| {
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".schema.json"))
                    .unwrap_or_else(|| panic!("{}: <type>.schema.json", path.display()))
                    .to_owned();
                (name, schemas.validator(&file_uri(path)))
            })
            .collect();
        Checker { envelope, data }
    }

    /// Checks `event` (from `origin`) with its data (read back from the payload bucket
    /// for a claim-checked event).
    async fn check(
        &self,
        origin: &str,
        event: &CloudEvent,
        payloads: Option<&InMemoryPayloadStore>,
        checked: &mut Checked,
    ) {
        *checked.types.entry(event.event_type.clone()).or_default() += 1;
        let json = serde_json::to_value(event).expect("a CloudEvent serializes");
        let mut fail = |what: &str, errors: String| {
            checked.failures.push(format!(
                "{origin}: {} {what}:\n{errors}\n{json:#}",
                event.event_type
            ));
        };
        if let Err(errors) = check(&self.envelope, &json) {
            fail("envelope", errors);
        }
        let data = match (&event.dataref, payloads) {
            (Some(uri), Some(payloads)) => {
                let bytes = PayloadStore::get(payloads, uri)
                    .await
                    .expect("the claim-checked data");
                serde_json::from_slice(&bytes).expect("the claim-checked data is JSON")
            }
            _ => event.data.clone(),
        };
        match self.data.get(&event.event_type) {
            Some(validator) => {
                if let Err(errors) = check(validator, &data) {
                    fail("data", errors);
                }
            }
            None => fail(
                "has no schema",
                "add docs/schemas/events/<type>.schema.json".into(),
            ),
        }
    }
}

#[tokio::test]
async fn every_published_event_matches_its_schemas_and_every_schema_is_published() {
    let checker = Checker::new();
    let mut checked = Checked::default();

    // The consumer over every fixture, each delivered to a fresh consumer.
    for name in fixtures() {
        let pipeline = Pipeline::new();
        let fixture = edited(&name, &[]);
        for event in pipeline.deliver(&name, &fixture).await {
            let origin = format!("fixture {name}");
            checker
                .check(&origin, &event, Some(&pipeline.payloads), &mut checked)
                .await;
        }
    }

    // The types no fixture publishes alone.
    for scenario in SCENARIOS {
        let pipeline = Pipeline::new();
        let mut last = Vec::new();
        for (n, delivery) in scenario.deliveries.iter().enumerate() {
            let name = format!("{} #{n}", delivery.fixture);
            last = pipeline
                .deliver(&name, &edited(delivery.fixture, delivery.edits))
                .await;
            for event in &last {
                let origin = format!("{} ({name})", scenario.expect);
                checker
                    .check(&origin, event, Some(&pipeline.payloads), &mut checked)
                    .await;
            }
        }
        let tenants: Vec<Option<&str>> = last
            .iter()
            .filter(|e| e.event_type == scenario.expect)
            .map(|e| e.tenant.as_deref())
            .collect();
        let expected: Vec<Option<&str>> = if scenario.tenants.is_empty() {
            vec![None]
        } else {
            scenario.tenants.iter().copied().map(Some).collect()
        };
        assert_eq!(
            tenants,
            expected,
            "{}: what the scenario's last delivery publishes, for whom (all: {:?})",
            scenario.expect,
            last.iter().map(|e| &e.event_type).collect::<Vec<_>>()
        );
    }

    // An event over the bus's entry limit: published by claim check, its data in the
    // payload bucket, read back and checked there.
    let pipeline = Pipeline::new();
    let mut large = edited("stripe/invoice-paid.json", &[]);
    large["body"]["data"]["object"]["description"] = Value::String("x".repeat(300 * 1024));
    let events = pipeline.deliver("stripe, 300 KiB", &large).await;
    assert!(
        events.len() == 1 && events[0].dataref.is_some() && events[0].data.is_null(),
        "one claim-checked event: {events:?}"
    );
    checker
        .check(
            "claim check",
            &events[0],
            Some(&pipeline.payloads),
            &mut checked,
        )
        .await;

    // The vault: a refused refresh, then a disconnect with and without revocation.
    let h = harness(fake_provider::AuthServerConfig::default()).await;
    let id = h.connect().await;
    h.server.revoke_all_grants();
    h.make_due();
    assert!(
        h.vault.access_token(&id).await.is_err(),
        "the grant is gone"
    );
    h.vault.disconnect(&id, false).await.expect("disconnected");
    let forced = h.connect().await;
    h.vault.disconnect(&forced, true).await.expect("deleted");
    let vault_events = h.bus.events();
    assert_eq!(
        vault_events
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        [
            "connection.needs_reauth",
            "connection.deleted",
            "connection.deleted"
        ]
    );
    for event in &vault_events {
        checker.check("vault", event, None, &mut checked).await;
    }

    // The poll scheduler: a job failing for longer than three intervals, and one that
    // never succeeded since it was created.
    let now = 1_800_000_000;
    let jobs = Arc::new(InMemorySyncJobStore::default());
    let bus = Arc::new(InMemoryEventBus::default());
    let scheduler = PollScheduler::new(
        jobs.clone(),
        Arc::new(InMemoryEventQueue::default()),
        Arc::new(FixedClock::at_unix(now)),
    )
    .with_stale_events(bus.clone(), 3);
    let mut failing = sample_job("conn_failing", "issues", now - 5);
    failing.last_success_at = Some(now - 10_000);
    failing.last_error = Some("http_503".into());
    let mut never = sample_job("conn_never", "issues", now - 5);
    never.created_at = now - 10_000;
    for job in [&failing, &never] {
        jobs.insert(job).await.expect("a job");
    }
    scheduler.dispatch().await.expect("dispatched");
    let stale = bus.events();
    assert_eq!(stale.len(), 2, "{stale:?}");
    for event in &stale {
        checker
            .check("poll scheduler", event, None, &mut checked)
            .await;
    }

    // The action runner: a queued write the provider accepts, one it refuses for good
    // (with its answer), and one whose retries are spent.
    let actions = harness_with(
        fake_provider::AuthServerConfig::default(),
        "[api]\nbase_url = \"{provider_api}\"\nrate_limit = { requests_per_second = 100.0, burst = 20, scope = \"connection\" }\n",
    )
    .await;
    actions.server.serve_provider_api(|request| {
        fake_provider::ScriptedResponse::with_status(
            201,
            &serde_json::json!({ "id": "task_1", "path": request.path }),
        )
    });
    let connection = actions.connect().await;
    let bus = Arc::new(InMemoryEventBus::default());
    let runner = ActionRunner {
        client: OutboundClient::new(
            actions.vault.catalog(),
            actions.vault.clone(),
            Arc::new(InMemorySharedState::default()),
            Arc::new(junction_aws::clock::SystemClock),
        )
        .with_policy(junction_outbound::RetryPolicy {
            backoff: Backoff {
                base: Duration::from_millis(1),
                cap: Duration::from_millis(2),
            },
            max_attempts: 1,
        }),
        vault: actions.vault.clone(),
        store: Arc::new(InMemoryProxyIdempotencyStore::default()),
        clock: actions.clock.clone(),
        bus: bus.clone(),
        retries: Arc::new(InMemoryRetryScheduler::default()),
        statuses: Arc::new(InMemoryActionStatusStore::default()),
    };
    let queue = InMemoryEventQueue::default();
    actions.server.script_api([
        fake_provider::ScriptedResponse::json(&serde_json::json!({})),
        fake_provider::ScriptedResponse::with_status(
            422,
            &serde_json::json!({ "error": "title is required" }),
        ),
        fake_provider::ScriptedResponse::with_status(503, &serde_json::json!({})),
    ]);
    for (request, receive) in [
        (
            serde_json::json!({ "method": "POST", "path": "/tasks", "body": { "title": "Ship" } }),
            1,
        ),
        (
            serde_json::json!({ "method": "POST", "path": "/tasks", "body": { "title": "" } }),
            1,
        ),
        (
            serde_json::json!({ "method": "GET", "path": "/report", "query": { "q": "x" } }),
            junction_outbound::actions::MAX_ACTION_ATTEMPTS,
        ),
    ] {
        let reply = actions_route(
            junction_outbound::actions::ActionPorts {
                vault: &actions.vault,
                queue: &queue,
                statuses: runner.statuses.as_ref(),
                clock: actions.clock.as_ref(),
            },
            "tenant-1",
            "POST",
            &connection,
            request.to_string().as_bytes(),
        )
        .await;
        assert_eq!(reply.status, 202, "{}", reply.body);
        let message = queue.messages().pop().expect("queued");
        runner
            .handle(
                &message.body,
                receive,
                "receipt",
                std::time::Instant::now() + Duration::from_secs(30),
            )
            .await
            .expect("finished");
    }
    let announced = bus.events();
    assert_eq!(
        announced
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        ["action.succeeded", "action.failed", "action.failed"]
    );
    for event in &announced {
        checker
            .check("action runner", event, None, &mut checked)
            .await;
    }

    // The silence detector: a provider and a connection gone quiet.
    for event in crate::silence_events::published().await {
        checker
            .check("silence detector", &event, None, &mut checked)
            .await;
    }

    // Managed push subscriptions (issue 28, point 1): subscriptions_emulator.rs.
    for event in crate::subscriptions_emulator::published().await {
        checker
            .check("subscription manager", &event, None, &mut checked)
            .await;
    }

    // Schema drift and the contract check (issue 30): contract_check.rs.
    for (origin, event) in crate::contract_check::published().await {
        checker.check(&origin, &event, None, &mut checked).await;
    }

    assert!(
        checked.failures.is_empty(),
        "{} events do not match their schemas:\n\n{}",
        checked.failures.len(),
        checked.failures.join("\n\n")
    );
    let seen: BTreeSet<&str> = checked.types.keys().map(String::as_str).collect();
    let documented: BTreeSet<&str> = checker.data.keys().map(String::as_str).collect();
    assert_eq!(
        documented.difference(&seen).collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "schemas for types nothing published here: publish them in a test above, or \
         remove the schema (seen: {:?})",
        checked.types
    );
}

/// The schemas reject what they must: a record with a field no model has, a
/// connection event naming a usable link, an envelope with `data` and `dataref`.
#[test]
fn the_schemas_refuse_undocumented_fields() {
    let checker = Checker::new();
    let fixture = edited("linear/issue-update.expected.json", &[]);
    let mut record = fixture["ok"]["items"][0].clone();
    assert_eq!(record["item"], "work_item");
    assert!(check(&checker.data["work_item.updated"], &record).is_ok());
    record["reconnect_url"] = Value::from("https://hub.example.com/oauth/x/start");
    assert!(check(&checker.data["work_item.updated"], &record).is_err());
    record
        .as_object_mut()
        .map(|fields| fields.remove("reconnect_url"));
    assert!(
        check(&checker.data["work_item.created"], &record).is_err(),
        "an update is not a work_item.created"
    );

    let event = CloudEvent::new(
        "linear",
        "delivery-1",
        "0:work_item:ISS-1",
        "work_item.updated".into(),
        None,
        "2024-01-05T10:00:00Z".into(),
        record,
    );
    let mut envelope = serde_json::to_value(&event).expect("JSON");
    assert!(check(&checker.envelope, &envelope).is_ok());
    envelope["dataref"] = Value::from("s3://bucket/events/x.json");
    envelope["datasize"] = Value::from(10);
    assert!(
        check(&checker.envelope, &envelope).is_err(),
        "both data and dataref"
    );
}
