//! Managed provider push subscriptions (issue 28): Gmail's `users.watch` and Microsoft
//! Graph's `/subscriptions` last days, not forever, so Junction creates one per
//! connection at connect ([`ConnectionSetup`](junction_oauth::ConnectionSetup)), renews
//! it before it expires (the token refresher's schedule), handles Graph's lifecycle
//! notifications, and deletes it at disconnect
//! ([`ConnectionTeardown`](junction_oauth::ConnectionTeardown)). What to send is the
//! catalog's `[subscription]` data; this crate has no provider names in its code.
//!
//! The store ([`SubscriptionStore`]) is a port with a DynamoDB adapter and an in-memory
//! one; the provider is reached only through the outbound client.

mod manager;
pub mod settings;
pub mod store;

pub use manager::{
    ConnectionSetups, DeleteError, Outcome, PENDING_HEAD_START_SECONDS, RenewalReport,
    SUBSCRIPTION_PENDING, SubscriptionError, SubscriptionManager, SubscriptionPorts,
    SubscriptionScheduler,
};
pub use settings::SubscriptionSettings;
pub use store::dynamo::{DynamoSubscriptionStore, RENEWAL_INDEX, SUBSCRIPTION_INDEX};
pub use store::{
    InMemorySubscriptionStore, StoreError, Subscription, SubscriptionState, SubscriptionStore,
    check_subscription_store_contract, sample_subscription,
};

#[cfg(test)]
mod manager_tests;

/// The manager over AWS: the outbound client (its shared buckets and breakers in
/// `outbound_state_table`), the subscriptions table, Secrets Manager for the webhook
/// secrets, the event bus, and the sync jobs table where a function forces
/// reconciliation polls (`None`: it does not).
pub fn aws_manager(
    aws: &aws_config::SdkConfig,
    vault: junction_oauth::TokenVault,
    outbound_state_table: String,
    jobs_table: Option<String>,
    event_bus: String,
    settings: SubscriptionSettings,
) -> SubscriptionManager {
    use std::sync::Arc;
    let catalog = vault.catalog();
    let clock = Arc::new(junction_aws::clock::SystemClock);
    let client = junction_outbound::OutboundClient::new(
        catalog,
        vault.clone(),
        Arc::new(junction_outbound::DynamoSharedState::from_config(
            aws,
            outbound_state_table,
        )),
        clock.clone(),
    );
    SubscriptionManager::new(SubscriptionPorts {
        catalog,
        client,
        vault,
        store: Arc::new(DynamoSubscriptionStore::from_config(
            aws,
            settings.table.clone(),
        )),
        secrets: Arc::new(junction_aws::secrets::SecretsManagerSource::from_config(
            aws,
        )),
        jobs: jobs_table.map(|table| {
            Arc::new(junction_polling::DynamoSyncJobStore::from_config(
                aws, table,
            )) as Arc<dyn junction_polling::SyncJobStore>
        }),
        bus: Arc::new(junction_aws::events::EventBridgeBus::from_config(
            aws, event_bus,
        )),
        clock,
        settings,
    })
}
