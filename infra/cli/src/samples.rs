//! Realistic sample deliveries, one per catalog provider: the body and the non-signature
//! headers the provider sends with it. Shapes follow each provider's documented
//! examples, trimmed; ids and timestamps are fresh on every call so deliveries are not
//! deduplicated away and replay windows pass.

use junction_catalog::Provider;
use serde_json::json;
use time::OffsetDateTime;

/// A delivery before signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub content_type: String,
    /// Headers the provider sends besides its signature (event ids, topics).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

fn uuid() -> String {
    let hex = hex::encode(rand::random::<[u8; 16]>());
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

fn digits(count: usize) -> String {
    (0..count)
        .map(|_| char::from(b'0' + rand::random::<u8>() % 10))
        .collect()
}

fn rfc3339(now: OffsetDateTime) -> String {
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn json_sample(headers: Vec<(&str, String)>, body: serde_json::Value) -> Sample {
    Sample {
        content_type: "application/json".into(),
        headers: headers
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect(),
        body: body.to_string().into_bytes(),
    }
}

/// The sample delivery of `provider` at `now`; a generic JSON event for providers
/// without a dedicated sample. Where a delivery states its API version, the sample
/// states the one the built-in catalog pins (see [`sample_at_version`]).
pub fn sample(provider: &str, now: OffsetDateTime) -> Sample {
    let pinned = junction_catalog::Catalog::embedded()
        .ok()
        .and_then(|catalog| catalog.get(provider))
        .and_then(|entry| entry.api_version.as_deref());
    sample_at_version(provider, pinned, now)
}

/// [`sample`] stating `api_version` where the provider's deliveries state theirs
/// (Stripe's `api_version`, Shopify's `X-Shopify-API-Version`, Twilio's `ApiVersion`):
/// the version the stack's catalog entry pins, so the consumer sees no mismatch. A
/// provider pins its version in the endpoint's settings, so a real delivery states the
/// pinned one too. Without a pinned version, the provider's current one.
pub fn sample_at_version(provider: &str, api_version: Option<&str>, now: OffsetDateTime) -> Sample {
    dedicated(provider, api_version, now).unwrap_or_else(|| generic(now))
}

/// The sample for a catalog entry, overlay entries included: its own, else, for an entry
/// that copies another provider's verification (`verification_from`, an in-house sender
/// that adopted a well-known scheme), that provider's sample, which carries the headers
/// the copied scheme signs (Standard Webhooks' `webhook-id`); else a generic JSON event.
pub fn sample_for(provider: &Provider, now: OffsetDateTime) -> Sample {
    let version = provider.api_version.as_deref();
    let copied = provider
        .webhook
        .as_ref()
        .and_then(|webhook| webhook.verification_from.as_deref());
    dedicated(&provider.id, version, now)
        .or_else(|| copied.and_then(|from| dedicated(from, version, now)))
        .unwrap_or_else(|| generic(now))
}

/// A JSON event for providers without a sample of their own.
fn generic(now: OffsetDateTime) -> Sample {
    json_sample(
        vec![],
        json!({ "id": uuid(), "type": "junction.sample", "created_at": rfc3339(now) }),
    )
}

/// The provider's own sample, if it has one.
fn dedicated(provider: &str, api_version: Option<&str>, now: OffsetDateTime) -> Option<Sample> {
    let version = |current: &str| api_version.unwrap_or(current).to_owned();
    let seconds = now.unix_timestamp();
    let millis = seconds * 1000 + i64::from(now.millisecond());
    Some(match provider {
        "github" => json_sample(
            vec![
                ("X-GitHub-Event", "issues".into()),
                ("X-GitHub-Delivery", uuid()),
                ("X-GitHub-Hook-ID", "421337".into()),
                ("X-GitHub-Hook-Installation-Target-ID", "79929171".into()),
                (
                    "X-GitHub-Hook-Installation-Target-Type",
                    "repository".into(),
                ),
                ("User-Agent", "GitHub-Hookshot/7c0e4f2".into()),
            ],
            json!({
                "action": "opened",
                "issue": {
                    "id": 2_000_000_000_u64 + rand::random::<u16>() as u64,
                    "number": 42,
                    "title": "Webhook deliveries are delayed",
                    "state": "open",
                    "user": { "login": "octocat", "id": 1 },
                    "created_at": rfc3339(now),
                },
                "repository": { "id": 79_929_171, "full_name": "acme/junction", "private": true },
                "sender": { "login": "octocat", "id": 1 },
            }),
        ),
        "stripe" => json_sample(
            vec![(
                "User-Agent",
                "Stripe/1.0 (+https://stripe.com/docs/webhooks)".into(),
            )],
            json!({
                "id": format!("evt_{}", &hex::encode(rand::random::<[u8; 12]>())),
                "object": "event",
                "api_version": version("2026-07-29.dahlia"),
                "created": seconds,
                "type": "payment_intent.succeeded",
                "livemode": false,
                "pending_webhooks": 1,
                "request": { "id": null, "idempotency_key": null },
                "data": { "object": {
                    "id": format!("pi_{}", &hex::encode(rand::random::<[u8; 12]>())),
                    "object": "payment_intent",
                    "amount": 2000,
                    "currency": "usd",
                    "status": "succeeded",
                    "customer": "cus_Q1a2b3c4d5",
                }},
            }),
        ),
        "slack" => {
            let event_ts = format!("{seconds}.{}", digits(6));
            json_sample(
                vec![(
                    "User-Agent",
                    "Slackbot 1.0 (+https://api.slack.com/robots)".into(),
                )],
                json!({
                    "token": "deprecated-verification-token",
                    "team_id": "T0001ABCD",
                    "api_app_id": "A0001ABCD",
                    "type": "event_callback",
                    "event_id": format!("Ev{}", digits(10)),
                    "event_time": seconds,
                    "event": {
                        "type": "app_mention",
                        "user": "U0001ABCD",
                        "text": "<@U0JUNCTION> hello from the local stack",
                        "ts": event_ts,
                        "channel": "C0001ABCD",
                        "event_ts": event_ts,
                    },
                }),
            )
        }
        "shopify" => json_sample(
            vec![
                ("X-Shopify-Topic", "orders/create".into()),
                ("X-Shopify-Shop-Domain", "junction-dev.myshopify.com".into()),
                ("X-Shopify-API-Version", version("2026-07")),
                ("X-Shopify-Webhook-Id", uuid()),
                ("X-Shopify-Triggered-At", rfc3339(now)),
                ("X-Shopify-Event-Id", uuid()),
            ],
            json!({
                "id": 820_982_911_946_154_508_u64,
                "email": "jon@example.com",
                "created_at": rfc3339(now),
                "currency": "USD",
                "total_price": "199.00",
                "financial_status": "paid",
                "line_items": [{ "id": 866_550_311_766_439_020_u64, "title": "IPod Nano - 8GB", "quantity": 1, "price": "199.00" }],
            }),
        ),
        "linear" => json_sample(
            vec![
                ("Linear-Delivery", uuid()),
                ("Linear-Event", "Issue".into()),
                ("User-Agent", "Linear-Webhook".into()),
            ],
            json!({
                "action": "create",
                "type": "Issue",
                "createdAt": rfc3339(now),
                "organizationId": uuid(),
                "url": "https://linear.app/acme/issue/ENG-42",
                "webhookTimestamp": millis,
                "webhookId": uuid(),
                "data": {
                    "id": uuid(),
                    "identifier": "ENG-42",
                    "title": "Webhook deliveries are delayed",
                    "priority": 2,
                    "teamId": uuid(),
                },
            }),
        ),
        "square" => json_sample(
            vec![
                ("Square-Initial-Delivery-Timestamp", rfc3339(now)),
                ("Square-Retry-Number", "0".into()),
            ],
            json!({
                "merchant_id": "6SSW7HV8K2ST5",
                "type": "payment.created",
                "event_id": uuid(),
                "created_at": rfc3339(now),
                "data": {
                    "type": "payment",
                    "id": "KkAkhdMsgzn59SM8A89WgKwekxLZY",
                    "object": { "payment": {
                        "id": "KkAkhdMsgzn59SM8A89WgKwekxLZY",
                        "amount_money": { "amount": 100, "currency": "USD" },
                        "status": "APPROVED",
                        "created_at": rfc3339(now),
                    }},
                },
            }),
        ),
        "hubspot" => json_sample(
            vec![(
                "User-Agent",
                "HubSpot Connect 2.0 (http://dev.hubspot.com/)".into(),
            )],
            json!([{
                "eventId": rand::random::<u32>(),
                "subscriptionId": 2_415_867,
                "portalId": 62_515,
                "appId": 1_160_452,
                "occurredAt": millis,
                "subscriptionType": "contact.creation",
                "attemptNumber": 0,
                "objectId": 123,
                "changeFlag": "CREATED",
                "changeSource": "CRM",
            }]),
        ),
        "discord" => json_sample(
            vec![
                ("X-Signature-Timestamp", seconds.to_string()),
                (
                    "User-Agent",
                    "Discord-Interactions/1.0 (+https://discord.com)".into(),
                ),
            ],
            json!({
                "type": 2,
                "id": digits(18),
                "application_id": "1187000000000000000",
                "token": format!("aW50ZXJhY3Rpb246{}", digits(12)),
                "version": 1,
                "guild_id": "1186000000000000000",
                "channel_id": "1186000000000000001",
                "data": { "id": "1187000000000000001", "name": "status", "type": 1 },
                "member": { "user": { "id": "80351110224678912", "username": "junction" } },
            }),
        ),
        "standard-webhooks" => json_sample(
            vec![(
                "webhook-id",
                format!("msg_{}", hex::encode(rand::random::<[u8; 12]>())),
            )],
            json!({
                "type": "email.delivered",
                "created_at": rfc3339(now),
                "data": {
                    "email_id": uuid(),
                    "from": "Junction <hello@example.com>",
                    "to": ["user@example.com"],
                    "subject": "Welcome",
                },
            }),
        ),
        "twilio" => {
            let sid = |prefix: &str| format!("{prefix}{}", hex::encode(rand::random::<[u8; 16]>()));
            let message_sid = sid("SM");
            let body: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("ToCountry", "US")
                .append_pair("SmsMessageSid", &message_sid)
                .append_pair("NumMedia", "0")
                .append_pair("SmsSid", &message_sid)
                .append_pair("SmsStatus", "received")
                .append_pair("Body", "Hello from the local stack")
                .append_pair("To", "+15005550006")
                .append_pair("MessageSid", &message_sid)
                .append_pair("AccountSid", &sid("AC"))
                .append_pair("From", "+14155552671")
                .append_pair("ApiVersion", &version("2010-04-01"))
                .finish();
            Sample {
                content_type: "application/x-www-form-urlencoded".into(),
                headers: vec![
                    ("I-Twilio-Idempotency-Token".into(), uuid()),
                    ("User-Agent".into(), "TwilioProxy/1.1".into()),
                ],
                body: body.into_bytes(),
            }
        }
        "svix" | "resend" | "clerk" => json_sample(
            vec![(
                "svix-id",
                format!("msg_{}", hex::encode(rand::random::<[u8; 12]>())),
            )],
            json!({
                "type": if provider == "clerk" { "user.created" } else { "email.delivered" },
                "created_at": rfc3339(now),
                "instance_id": "ins_2abc",
                "data": { "id": uuid(), "email_address": "user@example.com" },
            }),
        ),
        "gitlab" | "gitlab-signed" => json_sample(
            vec![
                ("X-Gitlab-Event", "Push Hook".into()),
                ("X-Gitlab-Event-UUID", uuid()),
                ("X-Gitlab-Webhook-UUID", uuid()),
                ("webhook-id", uuid()),
            ],
            json!({
                "object_kind": "push",
                "ref": "refs/heads/main",
                "checkout_sha": hex::encode(rand::random::<[u8; 20]>()),
                "project": { "id": 15, "path_with_namespace": "acme/junction" },
            }),
        ),
        "zoom" => json_sample(
            vec![("x-zm-request-timestamp", seconds.to_string())],
            json!({
                "event": "meeting.started",
                "event_ts": millis,
                "payload": {
                    "account_id": "AAAAAABBBB",
                    "object": { "id": digits(11), "uuid": uuid(), "topic": "Standup", "start_time": rfc3339(now) },
                },
            }),
        ),
        "zendesk" => json_sample(
            vec![
                ("X-Zendesk-Webhook-Signature-Timestamp", rfc3339(now)),
                ("X-Zendesk-Webhook-Invocation-Id", digits(10)),
                ("X-Zendesk-Webhook-Id", "01GX5RZ1VQ0ZPJ3K3X5Q2Y0ABC".into()),
            ],
            json!({
                "type": "zen:event-type:ticket.created",
                "account_id": 22_129_848,
                "id": uuid(),
                "time": rfc3339(now),
                "detail": { "id": digits(5), "subject": "Webhook deliveries are delayed" },
            }),
        ),
        "twitch" => json_sample(
            vec![
                ("Twitch-Eventsub-Message-Id", uuid()),
                ("Twitch-Eventsub-Message-Type", "notification".into()),
                ("Twitch-Eventsub-Subscription-Type", "channel.follow".into()),
                ("Twitch-Eventsub-Subscription-Version", "2".into()),
            ],
            json!({
                "subscription": {
                    "id": uuid(),
                    "type": "channel.follow",
                    "version": "2",
                    "condition": { "broadcaster_user_id": "1337", "moderator_user_id": "1337" },
                    "created_at": rfc3339(now),
                },
                "event": { "user_id": digits(7), "user_login": "viewer", "broadcaster_user_id": "1337", "followed_at": rfc3339(now) },
            }),
        ),
        "sendgrid" => {
            let events = json!([{
                "email": "user@example.com",
                "event": "delivered",
                "sg_event_id": hex::encode(rand::random::<[u8; 16]>()),
                "sg_message_id": format!("{}.filterdrecv-1", hex::encode(rand::random::<[u8; 8]>())),
                "timestamp": seconds,
            }]);
            Sample {
                content_type: "application/json".into(),
                headers: vec![(
                    "X-Twilio-Email-Event-Webhook-Timestamp".into(),
                    seconds.to_string(),
                )],
                // SendGrid ends its JSON array with CRLF, and signs it.
                body: format!("{events}\r\n").into_bytes(),
            }
        }
        "discord-events" => json_sample(
            vec![("X-Signature-Timestamp", seconds.to_string())],
            json!({
                "version": 1,
                "application_id": "1187000000000000000",
                "type": 1,
                "event": {
                    "type": "APPLICATION_AUTHORIZED",
                    "timestamp": rfc3339(now),
                    "data": { "integration_type": 0, "user": { "id": digits(18), "username": "junction" }, "scopes": ["applications.commands"] },
                },
            }),
        ),
        "coinbase-cdp" => json_sample(
            vec![
                ("x-event-id", uuid()),
                ("x-event-type", "onramp.transaction.success".to_owned()),
            ],
            json!({
                "eventType": "onramp.transaction.success",
                "transactionId": uuid(),
                "status": "ONRAMP_TRANSACTION_STATUS_SUCCESS",
                "purchaseCurrency": "USDC",
                "purchaseAmount": { "value": "100.00", "currency": "USDC" },
                "completedAt": rfc3339(now),
            }),
        ),
        "mailgun-legacy" => {
            // The legacy form: the signature triple as top-level fields
            // (documentation.mailgun.com, securing webhooks).
            let body: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("event", "delivered")
                .append_pair("recipient", "user@example.com")
                .append_pair("domain", "mg.example.com")
                .append_pair("Message-Id", &format!("<{}@mg.example.com>", uuid()))
                .append_pair("timestamp", &seconds.to_string())
                .append_pair("token", &hex::encode(rand::random::<[u8; 25]>()))
                .finish();
            Sample {
                content_type: "application/x-www-form-urlencoded".into(),
                headers: vec![],
                body: body.into_bytes(),
            }
        }
        "mailgun" => json_sample(
            vec![],
            json!({
                "signature": { "timestamp": seconds.to_string(), "token": hex::encode(rand::random::<[u8; 25]>()) },
                "event-data": { "id": uuid(), "event": "delivered", "timestamp": seconds, "recipient": "user@example.com" },
            }),
        ),
        "adyen" => json_sample(
            vec![],
            json!({
                "live": "false",
                "notificationItems": [{ "NotificationRequestItem": {
                    "pspReference": digits(16),
                    "merchantReference": format!("order-{}", digits(6)),
                    "merchantAccountCode": "JunctionECOM",
                    "amount": { "currency": "EUR", "value": 1130 },
                    "eventCode": "AUTHORISATION",
                    "eventDate": rfc3339(now),
                    "success": "true",
                    "paymentMethod": "visa",
                }}],
            }),
        ),
        "microsoft" => json_sample(
            vec![],
            json!({
                "value": [{
                    "subscriptionId": uuid(),
                    "subscriptionExpirationDateTime": rfc3339(now + time::Duration::days(2)),
                    "changeType": "created",
                    "resource": format!("Users/{}/Messages/{}", uuid(), uuid()),
                    "tenantId": uuid(),
                    "clientState": "replaced-by-the-configured-value",
                }],
            }),
        ),
        "salesforce" => Sample {
            content_type: "text/xml; charset=utf-8".into(),
            headers: vec![("SOAPAction".into(), "\"\"".into())],
            body: format!(
                r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><notifications xmlns="http://soap.sforce.com/2005/09/outbound"><OrganizationId>replaced-by-the-configured-value</OrganizationId><ActionId>04k5A000000Gmn1QAC</ActionId><Notification><Id>04l5A0000{}</Id><sObject xsi:type="sf:Opportunity" xmlns:sf="urn:sobject.enterprise.soap.sforce.com" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><sf:Id>0065A00000{}</sf:Id><sf:StageName>Closed Won</sf:StageName></sObject></Notification></notifications></soapenv:Body></soapenv:Envelope>"#,
                digits(9),
                digits(8)
            )
            .into_bytes(),
        },
        "asana" => json_sample(
            vec![],
            json!({
                "events": [{
                    "action": "changed",
                    "created_at": rfc3339(now),
                    "resource": { "gid": digits(16), "resource_type": "task", "resource_subtype": "default_task" },
                    "user": { "gid": digits(16), "resource_type": "user" },
                    "change": { "field": "name", "action": "changed" },
                }],
            }),
        ),
        "box" => json_sample(
            vec![("box-delivery-id", uuid())],
            json!({
                "type": "webhook_event",
                "id": uuid(),
                "created_at": rfc3339(now),
                "trigger": "FILE.UPLOADED",
                "source": { "id": digits(11), "type": "file", "name": "report.pdf" },
            }),
        ),
        "gmail" => {
            use base64::Engine as _;
            let data = json!({ "emailAddress": "user@example.com", "historyId": rand::random::<u32>() });
            json_sample(
                vec![],
                json!({
                    "message": {
                        "data": base64::engine::general_purpose::STANDARD.encode(data.to_string()),
                        "messageId": digits(16),
                        "publishTime": rfc3339(now),
                    },
                    "subscription": "projects/junction-dev/subscriptions/gmail-push",
                }),
            )
        }
        // plaid/plaid-openapi `SyncUpdatesAvailableWebhook`.
        "plaid" => json_sample(
            vec![],
            json!({
                "webhook_type": "TRANSACTIONS",
                "webhook_code": "SYNC_UPDATES_AVAILABLE",
                "item_id": hex::encode(rand::random::<[u8; 16]>()),
                "initial_update_complete": true,
                "historical_update_complete": false,
                "environment": "sandbox",
            }),
        ),
        "okta" => json_sample(
            vec![],
            json!({
                "eventType": "com.okta.event_hook",
                "eventId": uuid(),
                "eventTime": rfc3339(now),
                "data": { "events": [{ "uuid": uuid(), "eventType": "user.session.start", "published": rfc3339(now) }] },
            }),
        ),
        // getsentry/sentry `AppPlatformEvent`: headers and the
        // {action, installation, data, actor} body.
        "sentry" => json_sample(
            vec![
                ("Request-ID", hex::encode(rand::random::<[u8; 16]>())),
                ("Sentry-Hook-Resource", "issue".to_owned()),
                ("Sentry-Hook-Timestamp", seconds.to_string()),
            ],
            json!({
                "action": "created",
                "installation": { "uuid": uuid() },
                "data": { "issue": { "id": digits(10), "title": "TypeError: x is undefined", "status": "unresolved" } },
                "actor": { "type": "application", "id": "sentry", "name": "Sentry" },
            }),
        ),
        // The HTTP Webhook destination's default body, {"event": …, "person": …}.
        "posthog" => json_sample(
            vec![],
            json!({
                "event": { "uuid": uuid(), "event": "$pageview", "distinct_id": uuid(), "timestamp": rfc3339(now), "properties": { "$current_url": "https://example.com/" } },
                "person": { "id": uuid(), "properties": { "email": "user@example.com" } },
            }),
        ),
        // An Airtable notification: base, webhook and timestamp only.
        "airtable" => json_sample(
            vec![],
            json!({
                "base": { "id": format!("app{}", &hex::encode(rand::random::<[u8; 7]>())[..14]) },
                "webhook": { "id": format!("ach{}", &hex::encode(rand::random::<[u8; 7]>())[..14]) },
                "timestamp": rfc3339(now),
            }),
        ),
        // docs.crisp.chat references/web-hooks/v1, "Delivery".
        "crisp" => json_sample(
            vec![("X-Crisp-Request-Timestamp", millis.to_string())],
            json!({
                "website_id": uuid(),
                "event": "message:send",
                "data": { "session_id": format!("session_{}", uuid()), "type": "text", "from": "user", "content": "Hello", "fingerprint": rand::random::<u32>() },
                "timestamp": millis,
            }),
        ),
        // Pipedrive webhooks v2: {meta, data, previous}.
        "pipedrive" => json_sample(
            vec![],
            json!({
                "meta": { "id": uuid(), "action": "change", "entity": "deal", "entity_id": digits(4), "company_id": 12345, "version": "2.0", "timestamp": rfc3339(now) },
                "data": { "id": 1, "title": "Sample deal", "status": "open", "value": 1000, "currency": "EUR" },
                "previous": { "value": 900 },
            }),
        ),
        // picqer/exact-php-client tests/WebhookTest.php's Content, with a fresh key; the
        // HashCode is spliced in when signing.
        "exact-online" => json_sample(
            vec![],
            json!({
                "Content": { "Topic": "Items", "ClientId": uuid(), "Division": 1234567, "Action": "Update", "Key": uuid() },
            }),
        ),
        // A Telegram Update (core.telegram.org/bots/api#update).
        "telegram" => json_sample(
            vec![],
            json!({
                "update_id": rand::random::<u32>(),
                "message": { "message_id": rand::random::<u16>(), "date": seconds, "chat": { "id": 1111, "type": "private" }, "from": { "id": 1111, "is_bot": false, "first_name": "Sample" }, "text": "hello" },
            }),
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_fresh_and_well_formed() {
        let now = OffsetDateTime::now_utc();
        for provider in ["github", "stripe", "slack", "linear", "unknown"] {
            let first = sample(provider, now);
            let second = sample(provider, now);
            assert_ne!(first.body, second.body, "{provider} ids must be fresh");
            serde_json::from_slice::<serde_json::Value>(&first.body).expect("JSON");
        }
        let twilio = sample("twilio", now);
        assert_eq!(twilio.content_type, "application/x-www-form-urlencoded");
        assert!(
            form_urlencoded::parse(&twilio.body).any(|(name, _)| name == "MessageSid"),
            "a Twilio form post"
        );
    }

    /// `send-webhook` samples must flow all the way: every one is mappable by the
    /// consumer's adapters (an unmappable sample would end in the dead-letter queue).
    #[test]
    fn every_catalog_sample_normalizes() {
        let now = OffsetDateTime::now_utc();
        let catalog = junction_catalog::Catalog::embedded().expect("catalog");
        for provider in catalog.providers().filter(|p| p.webhook.is_some()) {
            let sample = sample(&provider.id, now);
            let mut headers: std::collections::BTreeMap<String, String> = sample
                .headers
                .iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
                .collect();
            headers.insert("content-type".into(), sample.content_type.clone());
            let raw = junction_pipeline::normalize::RawEvent {
                provider: &provider.id,
                resource: None,
                event_type: None,
                event_id: Some("sample-event-id"),
                headers: &headers,
                body: &sample.body,
                pinned_api_version: provider.api_version.as_deref(),
            };
            let normalized = junction_pipeline::normalize::normalize(&raw);
            let Ok(normalized) = normalized else {
                panic!("{}: {normalized:?}", provider.id);
            };
            // A sample states the version the catalog pins, or none.
            assert_eq!(
                normalized.version_mismatch, None,
                "{}: the sample states another API version than the catalog pins",
                provider.id
            );
        }
    }

    /// An overlay's in-house sender that names another provider's scheme gets that
    /// provider's sample, with the headers the scheme signs; one with a scheme of its own
    /// gets the generic event.
    #[test]
    fn an_entry_copying_a_scheme_gets_the_sample_of_its_source() {
        let now = OffsetDateTime::now_utc();
        let overlay = r#"[[provider]]
id = "ledger"
name = "In-house ledger service"
docs = "https://wiki.example.com/ledger"
[provider.webhook]
verification_from = "standard-webhooks"
event_id = { header = "webhook-id" }

[[provider]]
id = "billing"
name = "In-house billing service"
docs = "https://wiki.example.com/billing"
[provider.webhook]
[provider.webhook.verification]
scheme = "hmac-sha512"
signature = { format = "single", header = "X-Billing-Signature", encoding = "hex" }
signed = ["body"]
replay_window = "none"
"#;
        let catalog = junction_catalog::Catalog::embedded()
            .expect("catalog")
            .with_overlay("overlay", overlay)
            .expect("valid");
        let ledger = sample_for(catalog.get("ledger").expect("ledger"), now);
        assert!(
            ledger.headers.iter().any(|(name, _)| name == "webhook-id"),
            "{ledger:?}"
        );
        let billing = sample_for(catalog.get("billing").expect("billing"), now);
        assert!(billing.headers.is_empty(), "{billing:?}");
        let github = sample_for(catalog.get("github").expect("github"), now);
        assert!(
            github
                .headers
                .iter()
                .any(|(name, _)| name == "X-GitHub-Event")
        );
    }

    /// The Shopify sample said 2024-07 while the catalog pinned 2026-07: every sample
    /// that states a version states the pinned one, and another pin is followed.
    #[test]
    fn samples_state_the_api_version_the_catalog_pins() {
        let now = OffsetDateTime::now_utc();
        let catalog = junction_catalog::Catalog::embedded().expect("catalog");
        let stated = |provider: &str, sample: &Sample| -> Option<String> {
            let headers: std::collections::BTreeMap<String, String> = sample
                .headers
                .iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
                .chain([("content-type".to_owned(), sample.content_type.clone())])
                .collect();
            let raw = junction_pipeline::normalize::RawEvent {
                provider,
                resource: None,
                event_type: None,
                event_id: Some("sample-event-id"),
                headers: &headers,
                body: &sample.body,
                pinned_api_version: None,
            };
            junction_pipeline::normalize::normalize(&raw)
                .expect("normalized")
                .received_api_version
        };
        for provider in ["stripe", "shopify", "twilio"] {
            let pinned = catalog
                .get(provider)
                .and_then(|entry| entry.api_version.clone());
            assert!(pinned.is_some(), "{provider} pins a version");
            assert_eq!(
                stated(provider, &sample(provider, now)),
                pinned,
                "{provider}"
            );
            let other = sample_at_version(provider, Some("2099-01"), now);
            assert_eq!(
                stated(provider, &other).as_deref(),
                Some("2099-01"),
                "{provider}"
            );
        }
    }
}
