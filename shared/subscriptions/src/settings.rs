//! What the subscription manager reads from its function's environment, once at init.

use std::collections::BTreeMap;

use junction_aws::config::{ConfigError, Env};
use junction_catalog::Catalog;

/// The stack's side of each subscription.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionSettings {
    /// The webhook routes' base (`https://<api>/webhooks/`): `{webhook_url}` is it plus
    /// the provider id. Key `WEBHOOK_BASE_URL`; without it a create fails with
    /// `webhook_url_unknown` (the functions API Gateway routes to cannot name the API
    /// without a dependency cycle, so only the refresher and the subscription manager
    /// create).
    pub webhook_base_url: Option<String>,
    /// Push topics by provider (`{topic}`, Gmail's Pub/Sub topic): key
    /// `SUBSCRIPTION_TOPIC_<PROVIDER>` (`SUBSCRIPTION_TOPIC_GMAIL`, the GmailPushTopic
    /// parameter). A provider whose requests need a topic and have none gets no
    /// subscription: push is off for it.
    pub topics: BTreeMap<String, String>,
    /// `<prefix>` of webhook secret names (`{client_state}`); key `JUNCTION_PREFIX`.
    pub secret_prefix: String,
    /// The subscriptions table; key `SUBSCRIPTIONS_TABLE`.
    pub table: String,
}

impl SubscriptionSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(
        env: &Env<F>,
        catalog: &Catalog,
    ) -> Result<Self, ConfigError> {
        let mut topics = BTreeMap::new();
        for provider in catalog.providers() {
            if provider
                .subscription
                .as_ref()
                .is_some_and(|spec| spec.uses("topic"))
                && let Some(topic) =
                    (env.0)(&topic_key(&provider.id)).filter(|topic| !topic.trim().is_empty())
            {
                topics.insert(provider.id.clone(), topic.trim().to_owned());
            }
        }
        Ok(SubscriptionSettings {
            webhook_base_url: env.optional("WEBHOOK_BASE_URL"),
            topics,
            secret_prefix: env
                .optional("JUNCTION_PREFIX")
                .unwrap_or_else(|| "junction".to_owned()),
            table: env.required("SUBSCRIPTIONS_TABLE")?,
        })
    }
}

/// `SUBSCRIPTION_TOPIC_<PROVIDER>`, the provider id upper-cased, `-` as `_`.
pub fn topic_key(provider: &str) -> String {
    format!(
        "SUBSCRIPTION_TOPIC_{}",
        provider.to_ascii_uppercase().replace('-', "_")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_read_for_the_providers_that_use_one() {
        let catalog = Catalog::embedded().expect("catalog");
        let env = Env(|key: &str| match key {
            "SUBSCRIPTIONS_TABLE" => Some("subs".to_owned()),
            "SUBSCRIPTION_TOPIC_GMAIL" => Some("projects/p/topics/t".to_owned()),
            "SUBSCRIPTION_TOPIC_MICROSOFT" => Some("ignored".to_owned()),
            "WEBHOOK_BASE_URL" => Some("https://api.example.com/webhooks/".to_owned()),
            _ => None,
        });
        let settings = SubscriptionSettings::from_env(&env, catalog).expect("settings");
        assert_eq!(
            settings.topics.get("gmail").map(String::as_str),
            Some("projects/p/topics/t")
        );
        assert!(
            !settings.topics.contains_key("microsoft"),
            "Graph takes no topic"
        );
        assert_eq!(settings.secret_prefix, "junction");

        let empty = Env(|key: &str| match key {
            "SUBSCRIPTIONS_TABLE" => Some("subs".to_owned()),
            "SUBSCRIPTION_TOPIC_GMAIL" => Some(String::new()),
            _ => None,
        });
        let settings = SubscriptionSettings::from_env(&empty, catalog).expect("settings");
        assert!(
            settings.topics.is_empty(),
            "an empty parameter turns Gmail push off"
        );
        assert!(settings.webhook_base_url.is_none());
    }
}
