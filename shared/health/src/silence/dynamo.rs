//! The DynamoDB adapter of [`SilenceStore`], over the connections table (the template's
//! `ConnectionsTable`), the only module here that knows the DynamoDB SDK.
//!
//! - A connection's watch lives on its last-event item (`last-event#<connection>`, which
//!   the consumer creates and moves with `last_event_at` alone,
//!   `junction_pipeline::last_events`): the detector's attributes beside it, written by
//!   an `UpdateItem` that never names `last_event_at`, refused on a deleted connection's
//!   tombstone (`deleted_at`) and on an item that is gone. The item stays far under a
//!   kilobyte, so a write is one write unit, and it has none of the table's index
//!   attributes, so no index is written.
//! - A provider's silence state is an item of its own, `provider-silence#<provider>`,
//!   also without index attributes.
//! - Both are read by one `Scan` a run, filtered on the two key prefixes and projected
//!   to the detector's attributes (the role may read no other, so never a token). A scan
//!   reads, and is billed for, the whole table: about 1.7 KB per connection (its item and
//!   its last-event item), half a read unit per 4 KB, eventually consistent
//!   (docs/cost.md).
//! - A connection's tenant, provider and state: a `GetItem` projected to those, once when
//!   the detector first sees it and again before it announces its silence. The
//!   connection store (`junction_oauth`) writes `id`, `tenant` and `state` as attributes
//!   but the provider only inside `doc` (the connection's JSON without its sealed
//!   tokens), so `doc` is read too, and a top-level `provider`, when the store writes
//!   one, is preferred.
//!
//! Checked on the emulator in `tests/tests/integration/silence_emulator.rs`.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{
    ConnectionWatch, Owner, ProviderWatch, SilenceError, SilenceStore, Tracked, TrackedConnection,
};

/// A connection's last-event item (`junction_pipeline::last_events`, the same prefix).
pub const LAST_EVENT_KEY_PREFIX: &str = "last-event#";
/// A provider's silence state.
pub const PROVIDER_SILENCE_KEY_PREFIX: &str = "provider-silence#";

/// The consumer's attribute, read only.
const LAST_EVENT_AT: &str = "last_event_at";
/// A deleted connection's tombstone carries it.
const DELETED_AT: &str = "deleted_at";

/// The detector's attributes on a last-event item, in [`ConnectionWatch`]'s order.
pub const CONNECTION_ATTRIBUTES: [&str; 8] = [
    "tracked_since",
    "provider",
    "tenant",
    "gap_open_since",
    "longest_gap",
    "longest_gap_at",
    "silent_since",
    "silent_last_event_at",
];

/// The attributes of a provider's silence item.
pub const PROVIDER_ATTRIBUTES: [&str; 2] = ["silent_since", "last_ended_at"];

/// The connections table, as the detector's store.
#[derive(Debug, Clone)]
pub struct DynamoSilenceStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoSilenceStore {
    /// Over the connections table `table`.
    pub fn from_config(aws: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        DynamoSilenceStore {
            client: aws_sdk_dynamodb::Client::new(aws),
            table: table.into(),
        }
    }
}

fn failed<E>(what: &'static str) -> impl FnOnce(E) -> SilenceError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |err| SilenceError::new(what, err)
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|value| value.as_n().ok())
        .and_then(|text| text.parse().ok())
}

fn text(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name).and_then(|value| value.as_s().ok()).cloned()
}

/// The provider named in a connection item's `doc` (the connection's JSON, without its
/// sealed tokens, which are an attribute of their own): the connection store writes no
/// top-level `provider` attribute.
fn provider_in_doc(item: &HashMap<String, AttributeValue>) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_str(&text(item, "doc")?).ok()?;
    doc.get("provider")?.as_str().map(str::to_owned)
}

fn watch_of(item: &HashMap<String, AttributeValue>) -> ConnectionWatch {
    ConnectionWatch {
        tracked_since: number(item, "tracked_since"),
        provider: text(item, "provider"),
        tenant: text(item, "tenant"),
        gap_open_since: number(item, "gap_open_since"),
        longest_gap: number(item, "longest_gap"),
        longest_gap_at: number(item, "longest_gap_at"),
        silent_since: number(item, "silent_since"),
        silent_last_event_at: number(item, "silent_last_event_at"),
    }
}

/// The watch as attribute values, `None` for an attribute to remove.
fn watch_values(watch: &ConnectionWatch) -> [Option<AttributeValue>; 8] {
    let n = |value: Option<i64>| value.map(|v| AttributeValue::N(v.to_string()));
    let s = |value: &Option<String>| value.clone().map(AttributeValue::S);
    [
        n(watch.tracked_since),
        s(&watch.provider),
        s(&watch.tenant),
        n(watch.gap_open_since),
        n(watch.longest_gap),
        n(watch.longest_gap_at),
        n(watch.silent_since),
        n(watch.silent_last_event_at),
    ]
}

/// An update expression that sets each present value and removes each absent one, with
/// its names (`#a0`…) and values (`:a0`…).
struct Update {
    expression: String,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

fn update(attributes: &[&str], values: Vec<Option<AttributeValue>>) -> Update {
    let mut set = Vec::new();
    let mut remove = Vec::new();
    let mut names = HashMap::new();
    let mut bound = HashMap::new();
    for (index, (name, value)) in attributes.iter().zip(values).enumerate() {
        let placeholder = format!("#a{index}");
        names.insert(placeholder.clone(), (*name).to_owned());
        match value {
            Some(value) => {
                set.push(format!("{placeholder} = :a{index}"));
                bound.insert(format!(":a{index}"), value);
            }
            None => remove.push(placeholder),
        }
    }
    let mut expression = String::new();
    if !set.is_empty() {
        expression.push_str("SET ");
        expression.push_str(&set.join(", "));
    }
    if !remove.is_empty() {
        if !expression.is_empty() {
            expression.push(' ');
        }
        expression.push_str("REMOVE ");
        expression.push_str(&remove.join(", "));
    }
    Update {
        expression,
        names,
        values: bound,
    }
}

#[async_trait]
impl SilenceStore for DynamoSilenceStore {
    async fn tracked(&self) -> Result<Tracked, SilenceError> {
        let mut projected: Vec<&str> = vec!["id", LAST_EVENT_AT, DELETED_AT];
        projected.extend(CONNECTION_ATTRIBUTES);
        projected.push("last_ended_at");
        let mut names = HashMap::new();
        let projection: Vec<String> = projected
            .iter()
            .enumerate()
            .map(|(index, name)| {
                names.insert(format!("#p{index}"), (*name).to_owned());
                format!("#p{index}")
            })
            .collect();
        let mut tracked = Tracked::default();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                // Named, as the role's condition on dynamodb:Select expects.
                .select(aws_sdk_dynamodb::types::Select::SpecificAttributes)
                .projection_expression(projection.join(", "))
                .filter_expression("begins_with(#p0, :last_event) OR begins_with(#p0, :silence)")
                .set_expression_attribute_names(Some(names.clone()))
                .expression_attribute_values(
                    ":last_event",
                    AttributeValue::S(LAST_EVENT_KEY_PREFIX.to_owned()),
                )
                .expression_attribute_values(
                    ":silence",
                    AttributeValue::S(PROVIDER_SILENCE_KEY_PREFIX.to_owned()),
                )
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|err| {
                    SilenceError::new(
                        "scanning the connections table",
                        aws_sdk_dynamodb::Error::from(err),
                    )
                })?;
            for item in page.items() {
                let Some(id) = text(item, "id") else {
                    continue;
                };
                if let Some(connection) = id.strip_prefix(LAST_EVENT_KEY_PREFIX) {
                    // A tombstone, or an item the consumer has not timed yet.
                    let (None, Some(last_event_at)) =
                        (item.get(DELETED_AT), number(item, LAST_EVENT_AT))
                    else {
                        continue;
                    };
                    tracked.connections.push(TrackedConnection {
                        id: connection.to_owned(),
                        last_event_at,
                        watch: watch_of(item),
                    });
                } else if let Some(provider) = id.strip_prefix(PROVIDER_SILENCE_KEY_PREFIX) {
                    tracked.providers.insert(
                        provider.to_owned(),
                        ProviderWatch {
                            silent_since: number(item, "silent_since"),
                            last_ended_at: number(item, "last_ended_at"),
                        },
                    );
                }
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(tracked)
    }

    async fn owner(&self, connection: &str) -> Result<Option<Owner>, SilenceError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(connection.to_owned()))
            .projection_expression("id, tenant, provider, #state, doc")
            .expression_attribute_names("#state", "state")
            .send()
            .await
            .map_err(|err| {
                SilenceError::new("reading a connection", aws_sdk_dynamodb::Error::from(err))
            })?;
        Ok(output.item.and_then(|item| {
            Some(Owner {
                tenant: text(&item, "tenant")?,
                provider: text(&item, "provider").or_else(|| provider_in_doc(&item))?,
                state: text(&item, "state").unwrap_or_default(),
            })
        }))
    }

    async fn save_connection(
        &self,
        connection: &str,
        watch: &ConnectionWatch,
    ) -> Result<bool, SilenceError> {
        let Update {
            expression,
            mut names,
            values,
        } = update(&CONNECTION_ATTRIBUTES, watch_values(watch).into());
        names.insert("#id".to_owned(), "id".to_owned());
        names.insert("#deleted".to_owned(), DELETED_AT.to_owned());
        let sent = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(
                "id",
                AttributeValue::S(format!("{LAST_EVENT_KEY_PREFIX}{connection}")),
            )
            .update_expression(expression)
            .condition_expression("attribute_exists(#id) AND attribute_not_exists(#deleted)")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values((!values.is_empty()).then_some(values))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(err) => Err(failed("recording a connection's watch")(
                aws_sdk_dynamodb::Error::from(err),
            )),
        }
    }

    async fn save_provider(
        &self,
        provider: &str,
        watch: &ProviderWatch,
    ) -> Result<(), SilenceError> {
        let n = |value: Option<i64>| value.map(|v| AttributeValue::N(v.to_string()));
        let Update {
            expression,
            names,
            values,
        } = update(
            &PROVIDER_ATTRIBUTES,
            vec![n(watch.silent_since), n(watch.last_ended_at)],
        );
        self.client
            .update_item()
            .table_name(&self.table)
            .key(
                "id",
                AttributeValue::S(format!("{PROVIDER_SILENCE_KEY_PREFIX}{provider}")),
            )
            .update_expression(expression)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values((!values.is_empty()).then_some(values))
            .send()
            .await
            .map(|_| ())
            .map_err(|err| {
                SilenceError::new(
                    "recording a provider's silence",
                    aws_sdk_dynamodb::Error::from(err),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_is_read_from_the_attribute_or_else_the_doc() {
        let mut item = HashMap::from([(
            "doc".to_owned(),
            AttributeValue::S(r#"{"id":"conn_1","provider":"linear"}"#.into()),
        )]);
        assert_eq!(provider_in_doc(&item).as_deref(), Some("linear"));
        item.insert("doc".into(), AttributeValue::S("not json".into()));
        assert_eq!(provider_in_doc(&item), None);
    }

    #[test]
    fn an_update_sets_what_is_present_and_removes_what_is_not() {
        let watch = ConnectionWatch {
            tracked_since: Some(10),
            provider: Some("slack".into()),
            tenant: Some("acme".into()),
            ..ConnectionWatch::default()
        };
        let built = update(&CONNECTION_ATTRIBUTES, watch_values(&watch).into());
        assert_eq!(
            built.expression,
            "SET #a0 = :a0, #a1 = :a1, #a2 = :a2 REMOVE #a3, #a4, #a5, #a6, #a7"
        );
        assert_eq!(built.names["#a0"], "tracked_since");
        assert_eq!(built.names["#a7"], "silent_last_event_at");
        assert!(
            !built.names.values().any(|name| name == LAST_EVENT_AT),
            "the consumer's attribute is never written"
        );
        assert_eq!(built.values[":a0"], AttributeValue::N("10".into()));
        assert_eq!(built.values.len(), 3);
    }
}
