//! The DynamoDB adapter of [`AccountIndex`]: reads the connections table that
//! `junction_oauth`'s connection store writes, through what the consumer's role may read
//! of it and nothing more (template.yaml): a `Query` of the `by-provider-account` index,
//! which projects only the keys and `tenant`, and a `GetItem` that asks for `id` and
//! `tenant` alone. Never the tokens, never the rest of a connection. Checked against the
//! writer on the emulator in `tests/tests/integration/account_index_emulator.rs`.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{AccountConnection, AccountIndex, AccountIndexError, provider_account_key};

/// The connections table's index by provider account (`junction_oauth`'s connection
/// store writes its key attribute, [`PROVIDER_ACCOUNT_ATTRIBUTE`]); its sort key is
/// `created_at`, and it projects `tenant` besides the keys.
pub const PROVIDER_ACCOUNT_INDEX: &str = "by-provider-account";

/// The attribute of a connection item holding `<provider>#<account>`
/// ([`provider_account_key`]); absent on a connection without a provider account.
pub const PROVIDER_ACCOUNT_ATTRIBUTE: &str = "provider_account";

/// The connections table, as the account index.
#[derive(Debug, Clone)]
pub struct DynamoAccountIndex {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoAccountIndex {
    /// Over the connections table `table` (the template's `ConnectionsTable`).
    pub fn from_config(aws: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        DynamoAccountIndex {
            client: aws_sdk_dynamodb::Client::new(aws),
            table: table.into(),
        }
    }
}

fn dynamo_error<E: std::error::Error + Send + Sync + 'static>(err: E) -> AccountIndexError {
    AccountIndexError(Box::new(err))
}

fn text<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a String> {
    item.get(name).and_then(|value| value.as_s().ok())
}

#[async_trait]
impl AccountIndex for DynamoAccountIndex {
    async fn connections_of(
        &self,
        provider: &str,
        account: &str,
    ) -> Result<Vec<AccountConnection>, AccountIndexError> {
        let key = provider_account_key(provider, account);
        let mut found = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(PROVIDER_ACCOUNT_INDEX)
                .key_condition_expression("#account = :account")
                .projection_expression("#id, #tenant, #created")
                .expression_attribute_names("#account", PROVIDER_ACCOUNT_ATTRIBUTE)
                .expression_attribute_names("#id", "id")
                .expression_attribute_names("#tenant", "tenant")
                .expression_attribute_names("#created", "created_at")
                .expression_attribute_values(":account", AttributeValue::S(key.clone()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|err| dynamo_error(aws_sdk_dynamodb::Error::from(err)))?;
            for item in output.items() {
                let (Some(connection), Some(tenant)) = (text(item, "id"), text(item, "tenant"))
                else {
                    continue;
                };
                found.push(AccountConnection {
                    tenant: tenant.clone(),
                    connection: connection.clone(),
                    created_at: item
                        .get("created_at")
                        .and_then(|value| value.as_n().ok())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_default(),
                });
            }
            match output.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => return Ok(found),
            }
        }
    }

    async fn tenant_of(&self, id: &str) -> Result<Option<String>, AccountIndexError> {
        // Exactly `id` and `tenant`: the role may read no other attribute of the table.
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", AttributeValue::S(id.to_owned()))
            .projection_expression("#id, #tenant")
            .expression_attribute_names("#id", "id")
            .expression_attribute_names("#tenant", "tenant")
            .send()
            .await
            .map_err(|err| dynamo_error(aws_sdk_dynamodb::Error::from(err)))?;
        Ok(output
            .item
            .as_ref()
            .and_then(|item| text(item, "tenant"))
            .cloned())
    }
}
