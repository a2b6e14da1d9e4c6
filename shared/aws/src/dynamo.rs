//! The conditional write every versioned store uses: put the item only if its key is
//! new, or only if its stored `version` is the expected one; `false` when the condition
//! fails (another writer got there first), an error for anything else.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

/// The condition of a [`put_if`].
#[derive(Debug, Clone, Copy)]
pub enum PutCondition<'a> {
    /// No item with this key attribute exists.
    New { key_attribute: &'a str },
    /// The stored item's `version` attribute equals this.
    Version(u64),
}

/// Puts `item` into `table` under `condition`.
pub async fn put_if(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    item: HashMap<String, AttributeValue>,
    condition: PutCondition<'_>,
) -> Result<bool, aws_sdk_dynamodb::Error> {
    let request = client.put_item().table_name(table).set_item(Some(item));
    let request = match condition {
        PutCondition::New { key_attribute } => request
            .condition_expression("attribute_not_exists(#key)")
            .expression_attribute_names("#key", key_attribute),
        PutCondition::Version(expected) => request
            .condition_expression("#version = :expected")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":expected", AttributeValue::N(expected.to_string())),
    };
    match request.send().await {
        Ok(_) => Ok(true),
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
        {
            Ok(false)
        }
        Err(err) => Err(err.into()),
    }
}
