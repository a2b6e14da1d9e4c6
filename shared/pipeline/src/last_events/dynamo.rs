//! The DynamoDB adapter of [`LastEvents`]: one conditional `UpdateItem` of a small item
//! of its own in the connections table, `id` = [`LAST_EVENT_KEY_PREFIX`] + the
//! connection id, holding [`LAST_EVENT_AT_ATTRIBUTE`] and nothing else. It has none of
//! the table's index attributes, so no index is written with it, and at well under a
//! kilobyte it costs one write unit. `junction_oauth`'s connection store reads these
//! items for the management API and `junction status`, and on a disconnect replaces one
//! with a tombstone ([`DELETED_AT_ATTRIBUTE`], expiring a day later) that refuses a
//! late write. The consumer's role allows this update and no other (template.yaml: the
//! key prefix, those attributes, no values returned). Checked against the store on the
//! emulator in `tests/tests/integration/last_event_emulator.rs`.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{LastEvents, LastEventsError, Recorded};

/// The key prefix of a connection's last-event item (`last-event#<connection id>`);
/// `junction_oauth`'s connection store uses the same.
pub const LAST_EVENT_KEY_PREFIX: &str = "last-event#";

/// When a webhook delivery was last attributed to the connection (Unix seconds, a
/// number, like the table's other times).
pub const LAST_EVENT_AT_ATTRIBUTE: &str = "last_event_at";

/// Present on the item of a deleted connection: a delivery attributed to it just before
/// the delete (the account index's cache may be a minute behind) must not bring its
/// item back.
pub const DELETED_AT_ATTRIBUTE: &str = "deleted_at";

/// The connections table, as the store of last event times.
#[derive(Debug, Clone)]
pub struct DynamoLastEvents {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoLastEvents {
    /// Over the connections table `table` (the template's `ConnectionsTable`).
    pub fn from_config(aws: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        DynamoLastEvents {
            client: aws_sdk_dynamodb::Client::new(aws),
            table: table.into(),
        }
    }
}

#[async_trait]
impl LastEvents for DynamoLastEvents {
    async fn record(&self, id: &str, at: i64) -> Result<Recorded, LastEventsError> {
        // The time only moves forward, whoever writes concurrently, and never onto a
        // deleted connection's tombstone.
        let sent = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(
                "id",
                AttributeValue::S(format!("{LAST_EVENT_KEY_PREFIX}{id}")),
            )
            .update_expression("SET #at = :at")
            .condition_expression(
                "attribute_not_exists(#deleted) AND (attribute_not_exists(#at) OR #at < :at)",
            )
            .expression_attribute_names("#at", LAST_EVENT_AT_ATTRIBUTE)
            .expression_attribute_names("#deleted", DELETED_AT_ATTRIBUTE)
            .expression_attribute_values(":at", AttributeValue::N(at.to_string()))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(Recorded::Moved),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(Recorded::Unchanged)
            }
            Err(err) => Err(LastEventsError(Box::new(aws_sdk_dynamodb::Error::from(
                err,
            )))),
        }
    }
}
