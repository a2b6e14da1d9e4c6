//! Slack → [`MessageGroup`] (and pass-through for other events).
//!
//! - `slack.conversation`: the `conversations.info` response `{ok, channel}` or a bare
//!   conversation object (<https://docs.slack.dev/reference/methods/conversations.info>,
//!   <https://docs.slack.dev/reference/objects/conversation-object>): `id`, `name`,
//!   `is_channel`/`is_group`/`is_im`/`is_mpim`/`is_private`, `is_archived`, `created`
//!   (epoch seconds), `updated` (epoch milliseconds), `topic.value`, `purpose.value`,
//!   `num_members`, `user` for DMs, and `latest` (the newest message object, or null;
//!   `objs_conversation` in slackapi/slack-api-specs `web-api/slack_web_openapi_v2.json`),
//!   whose `ts` is the conversation's `last_message_at`. The `slack-history` poller sends
//!   the `conversations.list` object with `latest` filled from `conversations.history`.
//!   The record's source time is the later of `updated` and `latest.ts` (else `created`),
//!   so a new message makes a newer version even when `updated` did not move.
//! - `slack.event`: the Events API `event_callback` envelope
//!   (<https://docs.slack.dev/apis/events-api/#callback-field>): `event_id`, `event_time`,
//!   `event{…}`. `message` events (<https://docs.slack.dev/reference/events/message>)
//!   update the conversation's `last_message_at` (a partial record); `channel_created`,
//!   `channel_rename`, `channel_archive`, `channel_unarchive`, `channel_deleted` and the
//!   private-channel `group_*` equivalents map to created/updated/deleted conversations.
//!   Edits, deletions and thread-reply notices of messages, and every other event type,
//!   pass through as [`ProviderEvent`]s, with the envelope's deprecated verification
//!   `token` redacted.

use serde::Deserialize;
use serde_json::Value;

use super::{
    Adapted, Adapter, NormalizeError, Normalized, RawEvent, dates, meta,
    models::{ChangeKind, MessageGroup, MessageGroupKind, ProviderEvent},
    read,
};

pub(crate) const CONVERSATION: Adapter = Adapter {
    name: "slack.conversation",
    mapping_version: 1,
};

pub(crate) const EVENT: Adapter = Adapter {
    name: "slack.event",
    mapping_version: 1,
};

#[derive(Debug, Deserialize)]
struct InfoResponse {
    #[serde(default)]
    ok: Option<bool>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    channel: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Conversation {
    id: Option<String>,
    name: Option<String>,
    is_channel: bool,
    is_group: bool,
    is_im: bool,
    is_mpim: bool,
    is_private: bool,
    is_archived: Option<bool>,
    created: Option<i64>,
    updated: Option<i64>,
    user: Option<String>,
    topic: Option<Text>,
    purpose: Option<Text>,
    num_members: Option<u64>,
    /// A message object (`ts` is read) or null.
    latest: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Text {
    value: Option<String>,
}

pub(crate) fn conversation(raw: &RawEvent<'_>) -> Result<Adapted, NormalizeError> {
    let value = read::json_body(CONVERSATION, raw.body)?;
    let object = if value.get("ok").is_some() {
        let response: InfoResponse =
            read::typed(CONVERSATION, "a Slack conversations.info response", value)?;
        if response.ok != Some(true) {
            // Slack's error codes (`channel_not_found`) are fixed identifiers, safe to log.
            let code = response.error.unwrap_or_else(|| "no error code".to_owned());
            return Err(NormalizeError::Unsupported {
                adapter: CONVERSATION.name,
                reason: format!("conversations.info answered ok=false ({code})"),
            });
        }
        read::required(CONVERSATION, "channel", response.channel)?
    } else {
        value
    };
    let channel: Conversation = read::typed(CONVERSATION, "a Slack conversation object", object)?;
    let id = read::required_str(CONVERSATION, "channel.id", channel.id)?;
    let created = read::seconds(CONVERSATION, "channel.created", channel.created)?;
    let updated = channel
        .updated
        .map(dates::from_unix_millis)
        .transpose()
        .map_err(|err| read::invalid(CONVERSATION, "channel.updated", err.to_string()))?;
    let latest_ts = channel
        .latest
        .as_ref()
        .and_then(|latest| latest.get("ts"))
        .and_then(Value::as_str);
    let last_message_at = read::date(CONVERSATION, "channel.latest.ts", latest_ts)?;
    let source = updated.into_iter().chain(last_message_at).max().or(created);
    let kind = if channel.is_im {
        MessageGroupKind::DirectMessage
    } else if channel.is_mpim {
        MessageGroupKind::GroupDirectMessage
    } else if channel.is_private || (channel.is_group && !channel.is_channel) {
        MessageGroupKind::PrivateChannel
    } else {
        MessageGroupKind::Channel
    };
    let summary = read::non_empty(channel.topic.and_then(|t| t.value))
        .or_else(|| read::non_empty(channel.purpose.and_then(|p| p.value)));
    let participants = if channel.is_im {
        channel.user.into_iter().collect()
    } else {
        Vec::new()
    };
    let record = MessageGroup {
        meta: meta(raw, CONVERSATION, id, ChangeKind::Snapshot, source, true),
        kind: Some(kind),
        name: read::non_empty(channel.name),
        summary,
        participants,
        message_count: None,
        member_count: channel.num_members,
        last_message_at,
        created_at: created,
        archived: channel.is_archived,
        labels: Vec::new(),
    };
    Ok((vec![Normalized::MessageGroup(record)], None))
}

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    event_time: Option<i64>,
    #[serde(default)]
    event: Option<Event>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Event {
    #[serde(rename = "type")]
    kind: Option<String>,
    subtype: Option<String>,
    /// A channel id (message, archive, delete events) or a channel object
    /// (`channel_created`, `channel_rename`).
    channel: Option<Value>,
    channel_type: Option<String>,
    ts: Option<String>,
    event_ts: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ChannelRef {
    id: Option<String>,
    name: Option<String>,
    created: Option<i64>,
}

/// Message subtypes that do not mean "a message was posted".
const NOT_NEW_MESSAGE: &[&str] = &["message_changed", "message_deleted", "message_replied"];

pub(crate) fn event(raw: &RawEvent<'_>) -> Result<Adapted, NormalizeError> {
    let mut value = read::json_body(EVENT, raw.body)?;
    read::redact(&mut value, "token");
    let envelope: Envelope = read::typed(EVENT, "a Slack Events API envelope", value.clone())?;
    let event_id = envelope
        .event_id
        .clone()
        .or_else(|| raw.event_id.map(str::to_owned))
        .unwrap_or_else(|| read::sha256_id(raw.body));
    let envelope_time = read::seconds(EVENT, "event_time", envelope.event_time)?;
    let callback = envelope.kind.as_deref() == Some("event_callback");
    let inner = match (callback, envelope.event) {
        (true, Some(inner)) => inner,
        (true, None) => return Err(read::missing(EVENT, "event")),
        (false, _) => {
            return Ok((
                vec![pass_through(
                    raw,
                    event_id,
                    envelope.kind,
                    envelope_time,
                    value,
                )],
                None,
            ));
        }
    };
    let event_type = read::required_str(EVENT, "event.type", inner.kind.clone())?;
    let event_time = read::date(
        EVENT,
        "event.event_ts",
        inner.event_ts.as_deref().or(inner.ts.as_deref()),
    )?
    .or(envelope_time);

    let private = event_type.starts_with("group_");
    let channel_kind = if private {
        MessageGroupKind::PrivateChannel
    } else {
        MessageGroupKind::Channel
    };
    let record = |id: String, change: ChangeKind| MessageGroup {
        meta: {
            let mut m = meta(raw, EVENT, id, change, event_time, false);
            m.provider_event_id = Some(event_id.clone());
            m
        },
        kind: None,
        name: None,
        summary: None,
        participants: Vec::new(),
        message_count: None,
        member_count: None,
        last_message_at: None,
        created_at: None,
        archived: None,
        labels: Vec::new(),
    };

    let mapped = match event_type.as_str() {
        "message" if !NOT_NEW_MESSAGE.contains(&inner.subtype.as_deref().unwrap_or_default()) => {
            let channel = channel_id(&inner, "event.channel")?;
            let posted = read::date(EVENT, "event.ts", inner.ts.as_deref())?;
            let mut group = record(channel, ChangeKind::Updated);
            group.kind = inner
                .channel_type
                .as_deref()
                .and_then(kind_from_channel_type);
            group.last_message_at = posted;
            group.meta.source_timestamp = posted.or(event_time);
            Some(group)
        }
        "channel_created" => {
            let channel = channel_object(&inner)?;
            let mut group = record(channel.0, ChangeKind::Created);
            group.kind = Some(channel_kind);
            group.name = channel.1;
            group.created_at = channel.2;
            group.archived = Some(false);
            Some(group)
        }
        "channel_rename" | "group_rename" => {
            let channel = channel_object(&inner)?;
            let mut group = record(channel.0, ChangeKind::Updated);
            group.kind = Some(channel_kind);
            group.name = channel.1;
            group.created_at = channel.2;
            Some(group)
        }
        "channel_archive" | "group_archive" | "channel_unarchive" | "group_unarchive" => {
            let mut group = record(channel_id(&inner, "event.channel")?, ChangeKind::Updated);
            group.kind = Some(channel_kind);
            group.archived = Some(!event_type.ends_with("_unarchive"));
            Some(group)
        }
        "channel_deleted" | "group_deleted" => {
            let mut group = record(channel_id(&inner, "event.channel")?, ChangeKind::Deleted);
            group.kind = Some(channel_kind);
            Some(group)
        }
        _ => None,
    };
    let item = match mapped {
        Some(group) => Normalized::MessageGroup(group),
        None => {
            let full_type = match inner.subtype {
                Some(subtype) => format!("{event_type}.{subtype}"),
                None => event_type,
            };
            pass_through(raw, event_id, Some(full_type), event_time, value)
        }
    };
    Ok((vec![item], None))
}

fn kind_from_channel_type(channel_type: &str) -> Option<MessageGroupKind> {
    match channel_type {
        "channel" => Some(MessageGroupKind::Channel),
        "group" => Some(MessageGroupKind::PrivateChannel),
        "im" => Some(MessageGroupKind::DirectMessage),
        "mpim" => Some(MessageGroupKind::GroupDirectMessage),
        _ => None,
    }
}

fn channel_id(event: &Event, field: &str) -> Result<String, NormalizeError> {
    let id = match &event.channel {
        Some(Value::String(id)) => Some(id.clone()),
        Some(Value::Object(map)) => map.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    read::required_str(EVENT, field, id)
}

/// `(id, name, created)` of an event's channel object.
fn channel_object(
    event: &Event,
) -> Result<(String, Option<String>, Option<super::Timestamp>), NormalizeError> {
    let value = read::required(EVENT, "event.channel", event.channel.clone())?;
    let channel: ChannelRef = read::typed(EVENT, "a Slack channel event", value)?;
    let id = read::required_str(EVENT, "event.channel.id", channel.id)?;
    let created = read::seconds(EVENT, "event.channel.created", channel.created)?;
    Ok((id, read::non_empty(channel.name), created))
}

fn pass_through(
    raw: &RawEvent<'_>,
    event_id: String,
    event_type: Option<String>,
    occurred: Option<super::Timestamp>,
    value: Value,
) -> Normalized {
    let change = event_type
        .as_deref()
        .map(read::change_from_verb)
        .unwrap_or(ChangeKind::Occurred);
    let mut meta = meta(raw, EVENT, event_id.clone(), change, occurred, true);
    meta.provider_event_id = Some(event_id);
    Normalized::ProviderEvent(ProviderEvent {
        meta,
        event_type,
        api_version: None,
        raw: value,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn map(body: &[u8]) -> MessageGroup {
        let headers = BTreeMap::new();
        let raw = RawEvent {
            provider: "slack",
            resource: Some("conversation"),
            event_type: None,
            event_id: None,
            headers: &headers,
            body,
            pinned_api_version: None,
        };
        match conversation(&raw) {
            Ok((items, _)) => match items.into_iter().next() {
                Some(Normalized::MessageGroup(group)) => group,
                other => panic!("expected a message group, got {other:?}"),
            },
            Err(err) => panic!("does not map: {err}"),
        }
    }

    /// The `conversations.list` example channel (slackapi/slack-api-specs
    /// `web-api/slack_web_openapi_v2.json`) with `updated` and the `latest` the poller adds.
    #[test]
    fn latest_sets_last_message_at_and_a_newer_source_time() {
        let group = map(br#"{"id":"C012AB3CD","name":"general","is_channel":true,"is_member":true,"created":1449252889,"updated":1714140253251,"is_archived":false,"num_members":4,"latest":{"type":"message","ts":"1714150000.000200"}}"#);
        let posted = dates::parse("1714150000.000200").expect("ts");
        assert_eq!(group.last_message_at, Some(posted));
        assert_eq!(group.meta.source_timestamp, Some(posted));
        assert!(group.meta.complete);
    }

    #[test]
    fn updated_wins_when_it_is_later_than_the_newest_message() {
        let group = map(br#"{"id":"C1","created":1449252889,"updated":1714140253251,"latest":{"ts":"1449300000.000100"}}"#);
        assert_eq!(
            group.meta.source_timestamp,
            Some(dates::from_unix_millis(1_714_140_253_251).expect("ms"))
        );
        assert_eq!(
            group.last_message_at,
            Some(dates::parse("1449300000.000100").expect("ts"))
        );
    }

    #[test]
    fn a_null_latest_leaves_last_message_at_unset() {
        let group =
            map(br#"{"id":"D1","is_im":true,"user":"U1","created":1449252889,"latest":null}"#);
        assert_eq!(group.last_message_at, None);
        assert_eq!(
            group.meta.source_timestamp,
            Some(dates::from_unix_seconds(1_449_252_889).expect("s"))
        );
    }

    #[test]
    fn an_unreadable_latest_ts_is_an_invalid_field() {
        let headers = BTreeMap::new();
        let raw = RawEvent {
            provider: "slack",
            resource: Some("conversation"),
            event_type: None,
            event_id: None,
            headers: &headers,
            body: br#"{"id":"C1","latest":{"ts":"yesterday"}}"#,
            pinned_api_version: None,
        };
        let err = conversation(&raw).expect_err("bad ts");
        assert!(
            matches!(&err, NormalizeError::InvalidField { field, .. } if field == "channel.latest.ts"),
            "{err}"
        );
    }
}
