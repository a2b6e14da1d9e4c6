//! Cross-function tests live in `tests/tests/`: each starts its own AWS emulator on a
//! free loopback port and stops it when it ends. Run them with the README's test
//! command (`infra/test`), which first installs the emulator into the project venv.

pub mod call_counter;

use local_stack::emulator::{Moto, repo_root};

/// A moto server of the test's own (stopped when dropped) and SDK configuration pointing
/// at it with Junction's call timeouts.
pub async fn emulator() -> (Moto, aws_config::SdkConfig) {
    let moto =
        Moto::start(&repo_root()).expect("the emulator starts (run infra/test to install it)");
    let aws = moto
        .sdk_config()
        .await
        .into_builder()
        .timeout_config(junction_aws::config::aws_timeouts())
        .build();
    (moto, aws)
}

/// Creates an on-demand DynamoDB table keyed by the string attribute `key`.
pub async fn create_table(aws: &aws_config::SdkConfig, name: &str, key: &str) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    aws_sdk_dynamodb::Client::new(aws)
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(key)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attribute"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(key)
                .key_type(KeyType::Hash)
                .build()
                .expect("key"),
        )
        .send()
        .await
        .expect("create table");
}
