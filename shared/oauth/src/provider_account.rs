//! The provider account a connection stands for, as the provider's webhooks name it:
//! what the account index keys a connection under, so that the event consumer can tell
//! whose a delivery is (`junction_pipeline::accounts`, docs/events.md).
//!
//! A webhook names its account in the field the catalog's `[webhook] account` points at
//! (Slack `team_id`, Stripe `account`, Shopify's shop domain header). A connection knows
//! its account from the connect: the catalog's `[oauth] account_id` in the token
//! response (Slack `/team/id`, Stripe Connect `/stripe_user_id`), the ID token's `sub`
//! for OpenID providers, or a URL parameter that is the account (Shopify's `shop`). For
//! most providers the two agree under the same provider id; [`RULES`] lists the
//! exceptions. Every source is one the connect verified: the token response and the ID
//! token come from the provider, and a shop is the host the tokens were exchanged with;
//! nothing the user's browser could change is indexed.

use super::connections::Connection;

/// A provider account as the index keys it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderAccount {
    /// The provider as the webhook URL names it (`/webhooks/<provider>`).
    pub provider: String,
    /// The account as the ingress reads it from a delivery.
    pub account: String,
}

impl ProviderAccount {
    /// `<provider>#<account>`: the index's key (`junction_pipeline::accounts::provider_account_key`).
    pub fn key(&self) -> String {
        format!("{}#{}", self.provider, self.account)
    }
}

/// Where a connection's account is, for the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The account the connect stored ([`Connection::account_id`]).
    AccountId,
    /// A URL parameter of the connect (checked against the catalog's pattern, lowercased).
    Param(&'static str),
}

/// A provider whose webhooks name its connections' accounts otherwise than under its own
/// id and its `account_id`.
#[derive(Debug, Clone, Copy)]
struct Rule {
    connection_provider: &'static str,
    webhook_provider: &'static str,
    source: Source,
}

/// The exceptions; every other provider: its own id and [`Source::AccountId`].
const RULES: [Rule; 2] = [
    // Connected accounts' events arrive on the platform's Stripe endpoint, with the
    // connected account (stripe_user_id) in `account` (catalog: stripe-connect.toml).
    Rule {
        connection_provider: "stripe-connect",
        webhook_provider: "stripe",
        source: Source::AccountId,
    },
    // The connected account is the shop; deliveries name it in X-Shopify-Shop-Domain.
    Rule {
        connection_provider: "shopify",
        webhook_provider: "shopify",
        source: Source::Param("shop"),
    },
];

/// The connection's provider account, when it has one the webhooks can name.
pub(crate) fn of(connection: &Connection) -> Option<ProviderAccount> {
    let (provider, source) = RULES
        .iter()
        .find(|rule| rule.connection_provider == connection.provider)
        .map_or((connection.provider.as_str(), Source::AccountId), |rule| {
            (rule.webhook_provider, rule.source)
        });
    let account = match source {
        Source::AccountId => connection.account_id.as_deref(),
        Source::Param(name) => connection.params.get(name).map(String::as_str),
    }
    .filter(|account| !account.is_empty())?;
    Some(ProviderAccount {
        provider: provider.to_owned(),
        account: account.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use crate::connections::sample_connection;
    use crate::testing::harness_with;

    use super::*;

    fn connection(provider: &str, account_id: Option<&str>, params: &[(&str, &str)]) -> Connection {
        let mut connection = sample_connection("conn_1", "acme", 1_000);
        connection.provider = provider.into();
        connection.account_id = account_id.map(str::to_owned);
        connection.params = params
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        connection
    }

    fn key(connection: &Connection) -> Option<String> {
        connection.provider_account().map(|account| account.key())
    }

    #[test]
    fn the_account_is_keyed_as_the_provider_s_webhooks_name_it() {
        assert_eq!(
            key(&connection("slack", Some("T0123"), &[])).as_deref(),
            Some("slack#T0123"),
            "Slack: the team of the token response, the team_id of event callbacks"
        );
        assert_eq!(
            key(&connection("stripe-connect", Some("acct_1Ab"), &[])).as_deref(),
            Some("stripe#acct_1Ab"),
            "Stripe Connect: the connected account, on the platform's Stripe webhooks"
        );
        assert_eq!(
            key(&connection(
                "shopify",
                None,
                &[("shop", "acme.myshopify.com")]
            ))
            .as_deref(),
            Some("shopify#acme.myshopify.com"),
            "Shopify: the shop"
        );
        assert_eq!(key(&connection("shopify", Some("x"), &[])), None, "no shop");
        assert_eq!(
            key(&connection("github", None, &[])),
            None,
            "no account: not indexed"
        );
        assert_eq!(key(&connection("slack", Some(""), &[])), None);
    }

    /// HubSpot: the token endpoint's `hub_id` (a number) is read as the same text the
    /// ingress reads from a webhook's `portalId` (`62515`, junction-webhooks'
    /// ingress tests), so a HubSpot connection is indexed as its webhooks name it.
    #[tokio::test]
    async fn a_hubspot_connection_is_keyed_by_the_hub_id_of_its_token_response() {
        use std::collections::BTreeMap;

        use crate::provider::{ClientCredentials, ProviderClient};
        use junction_aws::crypto::SecretString;
        use junction_catalog::EndpointRules;

        // HubSpot's documented token response (changelog "additional details returned
        // when generating OAuth access tokens").
        const HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 150\r\n\r\n{\"token_type\":\"bearer\",\"refresh_token\":\"na1-ab12\",\"hub_id\":62515,\"scopes\":[\"oauth\"],\"access_token\":\"AAA1234-TOKEN\",\"expires_in\":1800,\"user_id\":123456}";
        let base = junction_aws::response_body::testing::stream_answer(HEAD, 0).await;
        let mut spec = junction_catalog::Catalog::embedded()
            .expect("catalog")
            .get("hubspot")
            .and_then(|provider| provider.oauth.clone())
            .expect("HubSpot's OAuth spec");
        spec.token_url = format!("{base}/token");
        let response = ProviderClient::new()
            .with_endpoint_rules(EndpointRules::LoopbackHttpForTests)
            .exchange_code(
                &spec,
                &ClientCredentials {
                    client_id: "client".into(),
                    client_secret: SecretString::new("secret".to_owned()),
                },
                &BTreeMap::new(),
                "code",
                "https://junction.example/oauth/hubspot/callback",
                None,
            )
            .await
            .expect("token response");
        assert_eq!(response.account_id.as_deref(), Some("62515"));
        assert_eq!(
            key(&connection("hubspot", response.account_id.as_deref(), &[])).as_deref(),
            Some("hubspot#62515"),
            "HubSpot: the hub id, as webhooks' portalId names it"
        );
    }

    #[tokio::test]
    async fn a_connect_stores_the_account_the_token_response_names() {
        let h = harness_with(Default::default(), "account_id = \"/account_id\"\n").await;
        let id = h.connect().await;
        let stored = h.stored(&id).await;
        assert_eq!(
            stored.provider_account(),
            Some(ProviderAccount {
                provider: "fakeauth".into(),
                account: fake_provider::DEFAULT_ACCOUNT.into(),
            })
        );
    }
}
