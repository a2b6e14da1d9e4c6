//! The DynamoDB adapter of [`LastEvents`]: one conditional `UpdateItem` of the
//! connection item in the connections table that `junction_oauth`'s connection store
//! writes, setting [`LAST_EVENT_AT_ATTRIBUTE`] and nothing else, as the consumer's role
//! allows (template.yaml: the key and that attribute, no values returned). Checked
//! against the writer on the emulator in `tests/tests/integration/last_event_emulator.rs`.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{LastEvents, LastEventsError, Recorded};

/// The attribute of a connection item holding when a webhook delivery was last
/// attributed to it (Unix seconds, a number, like the table's other times);
/// `junction_oauth`'s connection store reads it and keeps it through its replaces.
pub const LAST_EVENT_AT_ATTRIBUTE: &str = "last_event_at";

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
        // `attribute_exists(#id)`: an update would otherwise create an item for a
        // deleted connection. The time only moves forward, whoever writes concurrently.
        let sent = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(id.to_owned()))
            .update_expression("SET #at = :at")
            .condition_expression(
                "attribute_exists(#id) AND (attribute_not_exists(#at) OR #at < :at)",
            )
            .expression_attribute_names("#id", "id")
            .expression_attribute_names("#at", LAST_EVENT_AT_ATTRIBUTE)
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
