//! Providers without a common model → [`ProviderEvent`].
//!
//! Each adapter reads only what routing and deduplication need (event id, type, when it
//! occurred, the API version it was rendered with) from the provider's documented
//! envelope and keeps the rest as raw JSON:
//! - `stripe.event`: the Event object (<https://docs.stripe.com/api/events/object>):
//!   `id`, `type`, `created` (epoch seconds; RFC 3339 in v2 thin events), `api_version`;
//! - `github.event`: `X-GitHub-Event` + the body's `action`, `X-GitHub-Delivery`
//!   (<https://docs.github.com/en/webhooks/webhook-events-and-payloads#delivery-headers>);
//!   GitHub payloads have no common occurred-at field;
//! - `shopify.event`: `X-Shopify-Topic`, `X-Shopify-Webhook-Id`, `X-Shopify-Triggered-At`,
//!   `X-Shopify-API-Version` (or their unprefixed `Shopify-*` forms), falling back to
//!   the resource's `updated_at`
//!   (<https://shopify.dev/docs/apps/build/webhooks/webhook-events#headers>);
//! - `square.event`: `event_id`, `type`, `created_at`
//!   (<https://developer.squareup.com/docs/webhooks/overview#webhook-event-notification>);
//! - `twilio.event`: form-encoded status callbacks (`MessageSid`/`MessageStatus`,
//!   `CallSid`/`CallStatus`, `ApiVersion`, RFC 2822 `Timestamp`;
//!   <https://www.twilio.com/docs/messaging/guides/track-outbound-message-status>), or
//!   Event Streams JSON arrays of CloudEvents (`id`, `type`, `time`;
//!   <https://www.twilio.com/docs/events/webhook-quickstart>);
//! - `discord.event`: interactions (`id` snowflake, numeric `type`; the interaction
//!   `token` is redacted;
//!   <https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-object>)
//!   and webhook events (`event{type,timestamp}`;
//!   <https://discord.com/developers/docs/events/webhook-events>);
//! - `standard-webhooks.event`: `type`, `timestamp`, `data` with the `webhook-id` header
//!   (<https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md#payload-structure>);
//! - `generic.event`: any other provider: the ingress's event type and id, no time.

use serde::Deserialize;
use serde_json::Value;

use super::{
    Adapted, Adapter, NormalizeError, Normalized, RawEvent, Timestamp, dates, meta,
    models::{ChangeKind, ProviderEvent},
    read::{self, NumberOrString},
};

pub(crate) const STRIPE: Adapter = Adapter {
    name: "stripe.event",
    mapping_version: 1,
};
pub(crate) const GITHUB: Adapter = Adapter {
    name: "github.event",
    mapping_version: 1,
};
pub(crate) const SHOPIFY: Adapter = Adapter {
    name: "shopify.event",
    mapping_version: 1,
};
pub(crate) const SQUARE: Adapter = Adapter {
    name: "square.event",
    mapping_version: 1,
};
pub(crate) const TWILIO: Adapter = Adapter {
    name: "twilio.event",
    mapping_version: 1,
};
pub(crate) const DISCORD: Adapter = Adapter {
    name: "discord.event",
    mapping_version: 1,
};
pub(crate) const STANDARD_WEBHOOKS: Adapter = Adapter {
    name: "standard-webhooks.event",
    mapping_version: 1,
};
pub(crate) const GENERIC: Adapter = Adapter {
    name: "generic.event",
    mapping_version: 1,
};

/// Dispatches a webhook of a provider without a common model.
pub(crate) fn event(raw: &RawEvent<'_>) -> Result<Adapted, NormalizeError> {
    match raw.provider {
        "stripe" => stripe(raw),
        "github" => github(raw),
        "shopify" => shopify(raw),
        "square" => square(raw),
        "twilio" => twilio(raw),
        "discord" => discord(raw),
        "standard-webhooks" => standard_webhooks(raw),
        _ => generic(raw),
    }
}

struct Pass {
    id: Option<String>,
    event_type: Option<String>,
    change: Option<ChangeKind>,
    occurred: Option<Timestamp>,
    api_version: Option<String>,
}

fn item(raw: &RawEvent<'_>, adapter: Adapter, pass: Pass, value: Value) -> Normalized {
    let id = pass
        .id
        .or_else(|| raw.event_id.map(str::to_owned))
        .unwrap_or_else(|| read::sha256_of_value(&value));
    let change = pass.change.unwrap_or_else(|| {
        pass.event_type
            .as_deref()
            .map(read::change_from_verb)
            .unwrap_or(ChangeKind::Occurred)
    });
    let mut meta = meta(raw, adapter, id.clone(), change, pass.occurred, true);
    meta.provider_event_id = Some(id);
    Normalized::ProviderEvent(ProviderEvent {
        meta,
        event_type: pass.event_type,
        api_version: pass.api_version,
        raw: value,
    })
}

#[derive(Debug, Deserialize)]
struct StripeEvent {
    #[serde(default)]
    id: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    created: Option<NumberOrString>,
    #[serde(default)]
    api_version: Option<String>,
}

fn stripe(raw: &RawEvent<'_>) -> Result<Adapted, NormalizeError> {
    let value = read::json_body(STRIPE, raw.body)?;
    let event: StripeEvent = read::typed(STRIPE, "a Stripe Event object", value.clone())?;
    let id = read::required_str(STRIPE, "id", event.id)?;
    let kind = read::required_str(STRIPE, "type", event.kind)?;
    let occurred = match event.created {
        None => None,
        Some(NumberOrString::Number(seconds)) => read::seconds(STRIPE, "created", Some(seconds))?,
        Some(NumberOrString::String(text)) => read::date(STRIPE, "created", Some(&text))?,
    };
    let version = read::non_empty(event.api_version);
    let pass = Pass {
        id: Some(id),
        event_type: Some(kind),
        change: None,
        occurred,
        api_version: version.clone(),
    };
    Ok((vec![item(raw, STRIPE, pass, value)], version))
}

fn github(raw: &RawEvent<'_>) -> Result<Adapted, NormalizeError> {
    let value = read::json_body(GITHUB, raw.body)?;
    let name = raw
        .header(&["x-github-event"])
        .or(raw.event_type)
        .ok_or_else(|| read::missing(GITHUB, "X-GitHub-Event header"))?;
    let action = value.get("action").and_then(Value::as_str);
    let event_type = match action {
        Some(action) => format!("{name}.{action}"),
        None => name.to_owned(),
    };
    let pass = Pass {
        id: raw.header(&["x-github-delivery"]).map(str::to_owned),
        change: Some(
            action
                .map(read::change_from_verb)
                .unwrap_or(ChangeKind::Occurred),
        ),
        event_type: Some(event_type),
        occurred: None,
        api_version: None,
    };
    Ok((vec![item(raw, GITHUB, pass, value)], None))
}

fn shopify(raw: &RawEvent<'_>) -> Result<Adapted, NormalizeError> {
    let value = read::json_body(SHOPIFY, raw.body)?;
    let topic = raw
        .header(&["x-shopify-topic", "shopify-topic"])
        .or(raw.event_type)
        .ok_or_else(|| read::missing(SHOPIFY, "X-Shopify-Topic header"))?;
    let occurred = match raw.header(&["x-shopify-triggered-at", "shopify-triggered-at"]) {
        Some(at) => read::date(SHOPIFY, "X-Shopify-Triggered-At header", Some(at))?,
        None => {
            let updated = value.get("updated_at").and_then(Value::as_str);
            read::date(SHOPIFY, "updated_at", updated)?
        }
    };
    let version = raw
        .header(&["x-shopify-api-version", "shopify-api-version"])
        .map(str::to_owned);
    let pass = Pass {
        id: raw
            .header(&["x-shopify-webhook-id", "shopify-webhook-id"])
            .map(str::to_owned),
        event_type: Some(topic.to_owned()),
        change: None,
        occurred,
        api_version: version.clone(),
    };
    Ok((vec![item(raw, SHOPIFY, pass, value)], version))
}

#[derive(Debug, Deserialize)]
struct SquareEvent {
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
}

fn square(raw: &RawEvent<'_>) -> Result<Adapted, NormalizeError> {
    let value = read::json_body(SQUARE, raw.body)?;
    let event: SquareEvent = read::typed(SQUARE, "a Square webhook event", value.clone())?;
    let id = read::required_str(SQUARE, "event_id", event.event_id)?;
    let kind = read::required_str(SQUARE, "type", event.kind)?;
    let pass = Pass {
        id: Some(id),
        event_type: Some(kind),
        change: None,
        occurred: read::date(SQUARE, "created_at", event.created_at.as_deref())?,
        api_version: None,
    };
    Ok((vec![item(raw, SQUARE, pass, value)], None))
}

fn twilio(raw: &RawEvent<'_>) -> Result<Adapted, NormalizeError> {
    let token = raw
        .header(&["i-twilio-idempotency-token"])
        .map(str::to_owned);
    if raw.is_form() {
        let value = read::form_body(TWILIO, raw.body)?;
        let field = |name: &str| value.get(name).and_then(Value::as_str);
        let event_type = match (
            field("MessageStatus").or(field("SmsStatus")),
            field("CallStatus"),
        ) {
            (Some(status), _) => Some(format!("message.{status}")),
            (None, Some(status)) => Some(format!("call.{status}")),
            (None, None) => raw.event_type.map(str::to_owned),
        };
        let occurred = read::date(TWILIO, "Timestamp", field("Timestamp"))?;
        let version = field("ApiVersion").map(str::to_owned);
        let pass = Pass {
            id: token,
            event_type,
            change: Some(ChangeKind::Occurred),
            occurred,
            api_version: version.clone(),
        };
        return Ok((vec![item(raw, TWILIO, pass, value)], version));
    }
    let value = read::json_body(TWILIO, raw.body)?;
    let events = match value {
        Value::Array(events) => events,
        single => vec![single],
    };
    let mut items = Vec::with_capacity(events.len());
    let many = events.len() > 1;
    for (index, event) in events.into_iter().enumerate() {
        let field = |name: &str| event.get(name).and_then(Value::as_str).map(str::to_owned);
        let path = |name: &str| format!("[{index}].{name}");
        // A CloudEvent of Event Streams has its own id; a single JSON callback uses the
        // idempotency token.
        let id = match (field("specversion"), field("id")) {
            (Some(_), None) => return Err(read::missing(TWILIO, &path("id"))),
            (Some(_), Some(id)) => Some(id),
            (None, _) if many => None,
            (None, _) => token.clone(),
        };
        let occurred = read::date(TWILIO, &path("time"), field("time").as_deref())?;
        let pass = Pass {
            id,
            event_type: field("type").or_else(|| raw.event_type.map(str::to_owned)),
            change: Some(ChangeKind::Occurred),
            occurred,
            api_version: None,
        };
        items.push(item(raw, TWILIO, pass, event));
    }
    Ok((items, None))
}

/// Discord's epoch for snowflakes, 2015-01-01T00:00:00Z in Unix milliseconds
/// (<https://discord.com/developers/docs/reference#snowflakes>).
const DISCORD_EPOCH_MILLIS: u64 = 1_420_070_400_000;

fn snowflake_time(id: &str) -> Option<Timestamp> {
    let id: u64 = id.parse().ok()?;
    let millis = (id >> 22).checked_add(DISCORD_EPOCH_MILLIS)?;
    dates::from_unix_millis(i64::try_from(millis).ok()?).ok()
}

fn discord(raw: &RawEvent<'_>) -> Result<Adapted, NormalizeError> {
    let mut value = read::json_body(DISCORD, raw.body)?;
    read::redact(&mut value, "token");
    if let Some(event) = value.get("event").filter(|e| e.is_object()) {
        // Webhook events: {version, application_id, type: 1, event: {type, timestamp, data}}.
        let kind = event
            .get("type")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| read::missing(DISCORD, "event.type"))?;
        let timestamp = event.get("timestamp").and_then(Value::as_str);
        let occurred = read::date(DISCORD, "event.timestamp", timestamp)?;
        let pass = Pass {
            id: None,
            event_type: Some(kind),
            change: Some(ChangeKind::Occurred),
            occurred,
            api_version: None,
        };
        return Ok((vec![item(raw, DISCORD, pass, value)], None));
    }
    let kind = value
        .get("type")
        .and_then(Value::as_u64)
        .ok_or_else(|| read::missing(DISCORD, "type"))?;
    if kind == 0 {
        // A webhook-events PING ({version, application_id, type: 0}): no id, no event.
        let pass = Pass {
            id: None,
            event_type: Some("PING".to_owned()),
            change: Some(ChangeKind::Occurred),
            occurred: None,
            api_version: None,
        };
        return Ok((vec![item(raw, DISCORD, pass, value)], None));
    }
    let id = value
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| read::missing(DISCORD, "id"))?;
    // Interaction types (<https://discord.com/developers/docs/interactions/receiving-and-responding#interaction-object-interaction-type>).
    let name = match kind {
        1 => "ping",
        2 => "application_command",
        3 => "message_component",
        4 => "application_command_autocomplete",
        5 => "modal_submit",
        _ => "unknown",
    };
    let pass = Pass {
        occurred: snowflake_time(&id),
        id: Some(id),
        event_type: Some(format!("interaction.{name}")),
        change: Some(ChangeKind::Occurred),
        api_version: None,
    };
    Ok((vec![item(raw, DISCORD, pass, value)], None))
}

fn standard_webhooks(raw: &RawEvent<'_>) -> Result<Adapted, NormalizeError> {
    let value = read::json_body(STANDARD_WEBHOOKS, raw.body)?;
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| read::missing(STANDARD_WEBHOOKS, "type"))?;
    let timestamp = value.get("timestamp").and_then(Value::as_str);
    let pass = Pass {
        id: raw.header(&["webhook-id", "svix-id"]).map(str::to_owned),
        event_type: Some(kind),
        change: None,
        occurred: read::date(STANDARD_WEBHOOKS, "timestamp", timestamp)?,
        api_version: None,
    };
    Ok((vec![item(raw, STANDARD_WEBHOOKS, pass, value)], None))
}

fn generic(raw: &RawEvent<'_>) -> Result<Adapted, NormalizeError> {
    let value = if raw.is_form() {
        read::form_body(GENERIC, raw.body)?
    } else if raw.is_xml() {
        // SOAP (Salesforce outbound messages): carried as text for the subscriber.
        let text = std::str::from_utf8(raw.body).map_err(|_| NormalizeError::Unsupported {
            adapter: GENERIC.name,
            reason: "an XML body that is not UTF-8".to_owned(),
        })?;
        serde_json::json!({ "xml": text })
    } else {
        read::json_body(GENERIC, raw.body)?
    };
    let pass = Pass {
        id: None,
        event_type: raw.event_type.map(str::to_owned),
        change: None,
        occurred: None,
        api_version: None,
    };
    Ok((vec![item(raw, GENERIC, pass, value)], None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snowflake_time_follows_discords_documented_example() {
        // Discord's docs: 175928847299117063 → 2016-04-30 11:18:25.796 UTC.
        assert_eq!(
            snowflake_time("175928847299117063").map(|t| t.to_string()),
            Some("2016-04-30T11:18:25.796Z".to_owned())
        );
        assert_eq!(snowflake_time("not a snowflake"), None);
    }
}
