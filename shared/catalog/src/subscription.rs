//! The `[subscription]` section of a catalog entry: a push subscription the app must
//! create per connection and keep alive (Gmail `users.watch`, Microsoft Graph
//! `/subscriptions`), as data, so that another provider of the same pattern needs no
//! code. `junction_subscriptions` reads it: it fills the templates, sends the requests
//! through the outbound client with the connection's token, and reads the id and the
//! expiry out of the answer.
//!
//! Requests are relative to the entry's `[api] base_url` (an overlay points both at a
//! sandbox at once). String values of a body may hold placeholders, filled at run time:
//!
//! | placeholder | value |
//! |---|---|
//! | `{webhook_url}` | the stack's webhook URL for the provider (`…/webhooks/<provider>`) |
//! | `{client_state}` | the newest signing secret of the provider's webhook secret |
//! | `{expiration}` | now + `lifetime_seconds`, in the `expiry` format |
//! | `{topic}` | the provider's push topic, a stack parameter (Gmail's Pub/Sub topic) |
//! | `{subscription_id}` | the id the create answer named (also in paths) |
//!
//! This module must not depend on AWS or on the HTTP stack.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Placeholders a subscription template may use.
pub const SUBSCRIPTION_PLACEHOLDERS: &[&str] = &[
    "webhook_url",
    "client_state",
    "expiration",
    "topic",
    "subscription_id",
];

/// A managed push subscription per connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSpec {
    /// Creates the subscription (or, for Gmail, sets up the mailbox's one watch).
    pub create: SubscriptionRequest,
    /// Extends it. `None`: renewing is creating again (Gmail: "call watch again").
    #[serde(default)]
    pub renew: Option<SubscriptionRequest>,
    /// Ends it at disconnect, while the connection's tokens still exist.
    pub delete: SubscriptionRequest,
    /// Answers the provider's "reauthorization required" challenge (Graph's
    /// `POST /subscriptions/{id}/reauthorize`). `None`: such a challenge renews.
    #[serde(default)]
    pub reauthorize: Option<SubscriptionRequest>,
    /// JSON pointer to the subscription's id in the create answer (Graph `/id`);
    /// `None` when the provider keeps one subscription per account and names none
    /// (Gmail's watch is the mailbox's).
    #[serde(default)]
    pub id: Option<String>,
    /// Where the answer of a create or renew says when the subscription ends.
    pub expiry: ExpirySource,
    /// The lifetime asked for (filled into `{expiration}`); `None` when the provider
    /// decides it alone (Gmail: 7 days).
    #[serde(default)]
    pub lifetime_seconds: Option<u64>,
    /// Renew when the stored expiry is this close (Gmail: 6 of its 7 days, so daily).
    pub renew_before_seconds: u64,
    /// How the provider's lifecycle notifications (Graph's) are read from a delivery,
    /// and what each asks for; `None` when it sends none.
    #[serde(default)]
    pub lifecycle: Option<LifecycleSpec>,
}

/// One request: a method, a path under `[api] base_url`, and a JSON body template.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionRequest {
    pub method: SubscriptionMethod,
    /// Starts with `/`; may hold `{subscription_id}`.
    pub path: String,
    /// The JSON body; string values may hold placeholders. `None`: no body.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
}

/// The methods a subscription request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SubscriptionMethod {
    #[serde(rename = "POST")]
    Post,
    #[serde(rename = "PATCH")]
    Patch,
    #[serde(rename = "DELETE")]
    Delete,
}

impl SubscriptionMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionMethod::Post => "POST",
            SubscriptionMethod::Patch => "PATCH",
            SubscriptionMethod::Delete => "DELETE",
        }
    }
}

/// Where the expiry is in an answer, and how it is written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpirySource {
    /// JSON pointer (Gmail `/expiration`, Graph `/expirationDateTime`).
    pub pointer: String,
    pub format: ExpiryFormat,
}

/// How an expiry (and `{expiration}`) is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpiryFormat {
    /// Milliseconds since the epoch, as a number or a string of digits (Gmail's int64).
    UnixMillis,
    /// RFC 3339 (Graph's `DateTimeOffset`, UTC).
    Rfc3339,
}

/// How lifecycle notifications are recognised in a delivery, per item.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleSpec {
    /// Pointer to the list of notifications (Graph `/value`).
    pub items: String,
    /// Pointer, inside an item, to the lifecycle event's name (`/lifecycleEvent`).
    pub event: String,
    /// Pointer, inside an item, to the subscription's id (`/subscriptionId`).
    pub subscription_id: String,
    /// What each event asks for, by its name.
    pub actions: BTreeMap<String, LifecycleAction>,
}

/// What Junction does for a lifecycle event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleAction {
    /// Answer the challenge (the `reauthorize` request, else a renewal).
    Reauthorize,
    /// The subscription is gone: create a new one.
    Recreate,
    /// Notifications were lost: force a reconciliation poll.
    Reconcile,
}

impl SubscriptionSpec {
    /// Checks what the types cannot; returns `(field, message)` for the first fault.
    pub(crate) fn check(&self, has_base_url: bool) -> Result<(), (String, String)> {
        let field = |name: &str| format!("subscription.{name}");
        if !has_base_url {
            return Err((
                field("create"),
                "needs [api] with a base_url: its paths are relative to it".to_owned(),
            ));
        }
        let requests = [
            ("create", Some(&self.create)),
            ("renew", self.renew.as_ref()),
            ("delete", Some(&self.delete)),
            ("reauthorize", self.reauthorize.as_ref()),
        ];
        for (name, request) in requests {
            let Some(request) = request else { continue };
            if !request.path.starts_with('/') {
                return Err((field(&format!("{name}.path")), "must start with /".into()));
            }
            let mut used: Vec<String> = crate::placeholders(&request.path)
                .map(str::to_owned)
                .collect();
            if let Some(body) = &request.body {
                strings(body, &mut |text| {
                    used.extend(crate::placeholders(text).map(str::to_owned));
                });
            }
            for placeholder in &used {
                if !SUBSCRIPTION_PLACEHOLDERS.contains(&placeholder.as_str()) {
                    return Err((
                        field(name),
                        format!(
                            "unknown placeholder {{{placeholder}}}; known: {}",
                            SUBSCRIPTION_PLACEHOLDERS.join(", ")
                        ),
                    ));
                }
                if placeholder == "subscription_id" && (name == "create" || self.id.is_none()) {
                    return Err((
                        field(name),
                        "{subscription_id} needs `id`, and exists only after the create".into(),
                    ));
                }
                if placeholder == "expiration" && self.lifetime_seconds.is_none() {
                    return Err((field(name), "{expiration} needs lifetime_seconds".into()));
                }
            }
        }
        for (name, pointer) in [
            ("id", self.id.as_deref()),
            ("expiry.pointer", Some(self.expiry.pointer.as_str())),
        ] {
            if let Some(pointer) = pointer
                && !pointer.starts_with('/')
            {
                return Err((field(name), "must be a JSON pointer (start with /)".into()));
            }
        }
        if self.renew_before_seconds == 0 {
            return Err((field("renew_before_seconds"), "must be above 0".into()));
        }
        if let Some(lifetime) = self.lifetime_seconds
            && self.renew_before_seconds >= lifetime
        {
            return Err((
                field("renew_before_seconds"),
                "must be shorter than lifetime_seconds".into(),
            ));
        }
        if let Some(lifecycle) = &self.lifecycle {
            for (name, pointer) in [
                ("items", &lifecycle.items),
                ("event", &lifecycle.event),
                ("subscription_id", &lifecycle.subscription_id),
            ] {
                if !pointer.starts_with('/') {
                    return Err((
                        field(&format!("lifecycle.{name}")),
                        "must be a JSON pointer (start with /)".into(),
                    ));
                }
            }
            if lifecycle.actions.is_empty() {
                return Err((field("lifecycle.actions"), "name at least one event".into()));
            }
            if self.id.is_none() {
                return Err((
                    field("lifecycle"),
                    "needs `id`: notifications name the subscription by it".into(),
                ));
            }
        }
        Ok(())
    }

    /// Whether any request uses `{name}`.
    pub fn uses(&self, name: &str) -> bool {
        [
            Some(&self.create),
            self.renew.as_ref(),
            Some(&self.delete),
            self.reauthorize.as_ref(),
        ]
        .into_iter()
        .flatten()
        .any(|request| request.uses(name))
    }
}

impl SubscriptionRequest {
    /// Whether the path or the body uses `{name}`.
    pub fn uses(&self, name: &str) -> bool {
        let mut found = crate::placeholders(&self.path).any(|p| p == name);
        if let Some(body) = &self.body {
            strings(body, &mut |text| {
                found |= crate::placeholders(text).any(|p| p == name);
            });
        }
        found
    }
}

/// Calls `visit` on every string value in `value`.
fn strings(value: &serde_json::Value, visit: &mut impl FnMut(&str)) {
    match value {
        serde_json::Value::String(text) => visit(text),
        serde_json::Value::Array(items) => items.iter().for_each(|item| strings(item, visit)),
        serde_json::Value::Object(map) => map.values().for_each(|item| strings(item, visit)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Catalog, CatalogError};

    const ENTRY: &str = r#"id = "acme"
name = "Acme"
docs = "https://acme.example.com/docs"

[oauth]
authorize_url = "https://acme.example.com/authorize"
token_url = "https://acme.example.com/token"
scopes = ["read"]
pkce = true
client_auth = "client_secret_post"
lifetime_margin_seconds = 300
refresh_token_rotation = false
revocation = { style = "none", reason = "none to call" }

[api]
base_url = "https://api.acme.example.com"
rate_limit = { requests_per_second = 1.0, burst = 1, scope = "connection" }
"#;

    fn parse(subscription: &str) -> Result<Catalog, CatalogError> {
        let text = format!("{ENTRY}\n[subscription]\n{subscription}");
        Catalog::from_files(&[("acme.toml", &text)])
    }

    const VALID: &str = r#"create = { method = "POST", path = "/subs", body = { url = "{webhook_url}", until = "{expiration}" } }
renew = { method = "PATCH", path = "/subs/{subscription_id}", body = { until = "{expiration}" } }
delete = { method = "DELETE", path = "/subs/{subscription_id}" }
id = "/id"
expiry = { pointer = "/until", format = "rfc3339" }
lifetime_seconds = 3600
renew_before_seconds = 600
"#;

    #[test]
    fn a_complete_section_parses_and_names_its_placeholders() {
        let catalog = parse(VALID).expect("valid");
        let spec = catalog
            .get("acme")
            .expect("present")
            .subscription
            .as_ref()
            .expect("present");
        assert!(spec.uses("webhook_url"));
        assert!(spec.uses("subscription_id"));
        assert!(!spec.uses("client_state"));
        assert_eq!(spec.expiry.format, ExpiryFormat::Rfc3339);
    }

    #[test]
    fn faults_name_the_field() {
        let cases = [
            (
                VALID.replace("/subs\"", "subs\""),
                "subscription.create.path",
            ),
            (
                VALID.replace("{webhook_url}", "{callback}"),
                "subscription.create",
            ),
            (VALID.replace("id = \"/id\"\n", ""), "subscription.renew"),
            (
                VALID.replace("lifetime_seconds = 3600\n", ""),
                "subscription.create",
            ),
            (
                VALID.replace("renew_before_seconds = 600", "renew_before_seconds = 3600"),
                "subscription.renew_before_seconds",
            ),
            (
                VALID.replace("pointer = \"/until\"", "pointer = \"until\""),
                "subscription.expiry.pointer",
            ),
        ];
        for (text, field) in cases {
            match parse(&text) {
                Err(CatalogError::Invalid { field: got, .. }) => assert_eq!(got, field, "{text}"),
                other => panic!("{field}: expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_section_needs_the_api_base_url() {
        let text = format!(
            "{}\n[subscription]\n{VALID}",
            ENTRY.replace("base_url = \"https://api.acme.example.com\"\n", "")
        );
        match Catalog::from_files(&[("acme.toml", &text)]) {
            Err(CatalogError::Invalid { field, .. }) => assert_eq!(field, "subscription.create"),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn gmail_and_graph_declare_their_subscriptions() {
        let catalog = Catalog::embedded().expect("embedded catalog");
        let gmail = catalog
            .get("gmail")
            .expect("present")
            .subscription
            .as_ref()
            .expect("present");
        assert!(gmail.create.uses("topic"));
        assert!(gmail.renew.is_none() && gmail.id.is_none());
        assert_eq!(gmail.expiry.format, ExpiryFormat::UnixMillis);
        // Renewed daily, as Google recommends, inside the 7-day watch.
        assert_eq!(gmail.renew_before_seconds, 6 * 86_400);

        let graph = catalog
            .get("microsoft")
            .expect("present")
            .subscription
            .as_ref()
            .expect("present");
        assert!(graph.create.uses("client_state") && graph.create.uses("webhook_url"));
        // Under the 10,080-minute maximum of Outlook message subscriptions.
        assert!(graph.lifetime_seconds.expect("present") < 10_080 * 60);
        let lifecycle = graph.lifecycle.as_ref().expect("present");
        assert_eq!(
            lifecycle.actions.get("reauthorizationRequired"),
            Some(&LifecycleAction::Reauthorize)
        );
        assert_eq!(
            lifecycle.actions.get("subscriptionRemoved"),
            Some(&LifecycleAction::Recreate)
        );
        assert_eq!(
            lifecycle.actions.get("missed"),
            Some(&LifecycleAction::Reconcile)
        );
    }
}
