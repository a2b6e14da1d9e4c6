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
    ConnectionSetups, DeleteError, Outcome, RenewalReport, SubscriptionError, SubscriptionManager,
    SubscriptionPorts,
};
pub use settings::SubscriptionSettings;
pub use store::dynamo::{DynamoSubscriptionStore, RENEWAL_INDEX, SUBSCRIPTION_INDEX};
pub use store::{
    InMemorySubscriptionStore, StoreError, Subscription, SubscriptionState, SubscriptionStore,
    check_subscription_store_contract, sample_subscription,
};

#[cfg(test)]
mod manager_tests;
