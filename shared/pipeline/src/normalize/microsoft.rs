//! Microsoft Graph (Outlook mail) → [`MessageGroup`].
//!
//! - `microsoft.message`: one item of a message delta page
//!   (<https://learn.microsoft.com/graph/api/message-delta>) as the `microsoft-messages`
//!   poller sends it: a `message` resource
//!   (<https://learn.microsoft.com/graph/api/resources/message>) with the properties the
//!   poller selects: `conversationId` ("The ID of the conversation the email belongs
//!   to"), `subject`, `bodyPreview` ("The first 255 characters of the message body"),
//!   `from` and `toRecipients`/`ccRecipients` (`recipient` resources,
//!   `{"emailAddress": {"name", "address"}}`), `receivedDateTime` (ISO 8601, UTC).
//!
//!   Gmail's poller sends whole threads; Graph's delta query sends messages, one at a
//!   time. A message maps to its conversation as a partial [`MessageGroup`]
//!   (`complete: false`, [`ChangeKind::Updated`], as a Slack message event does): the
//!   conversation's `name`, `summary`, `participants` and `last_message_at` as this
//!   message states them, and `receivedDateTime` as the source time, so the record store
//!   takes a message over the stored conversation only when it is the newest seen (an
//!   older message's later change, a read flag, is stale there). What one message cannot
//!   say is left out: the message count, the conversation's start, and `labels` (Outlook
//!   `categories` change on a message without changing its received time, so they would
//!   make the same version differ: a conflict, not an update).
//! - `microsoft.message` removals: `{"id", "@removed": {"reason"}}` ("Removed instances
//!   are represented by their id and an @removed object",
//!   <https://learn.microsoft.com/graph/delta-query-overview>): a deleted message, or one
//!   moved out of the polled folder. The item names no conversation, and a conversation
//!   does not end with one of its messages, so it passes through as a
//!   [`ProviderEvent`] of type `message.removed` carrying the message id.

use serde::Deserialize;
use serde_json::Value;

use super::{
    Adapted, Adapter, NormalizeError, Normalized, RawEvent, meta,
    models::{ChangeKind, MessageGroup, MessageGroupKind, ProviderEvent},
    read,
};

pub(crate) const MESSAGE: Adapter = Adapter {
    name: "microsoft.message",
    mapping_version: 1,
};

/// The event type of a removal's pass-through event.
const REMOVED: &str = "message.removed";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Message {
    #[serde(default)]
    id: Option<String>,
    #[serde(default, rename = "@removed")]
    removed: Option<Value>,
    #[serde(default)]
    conversation_id: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    body_preview: Option<String>,
    #[serde(default)]
    received_date_time: Option<String>,
    #[serde(default)]
    from: Option<Recipient>,
    #[serde(default, deserialize_with = "read::null_default")]
    to_recipients: Vec<Recipient>,
    #[serde(default, deserialize_with = "read::null_default")]
    cc_recipients: Vec<Recipient>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Recipient {
    #[serde(default)]
    email_address: Option<EmailAddress>,
}

#[derive(Debug, Deserialize)]
struct EmailAddress {
    #[serde(default)]
    address: Option<String>,
}

pub(crate) fn message(raw: &RawEvent<'_>) -> Result<Adapted, NormalizeError> {
    let value = read::json_body(MESSAGE, raw.body)?;
    let message: Message = read::typed(MESSAGE, "a Graph message delta item", value.clone())?;
    if message.removed.is_some() {
        let id = read::required_str(MESSAGE, "id", message.id)?;
        let event = ProviderEvent {
            // The event is the whole delta item, as every pass-through carries its event.
            meta: meta(raw, MESSAGE, id, ChangeKind::Occurred, None, true),
            event_type: Some(REMOVED.to_owned()),
            api_version: None,
            raw: value,
        };
        return Ok((vec![Normalized::ProviderEvent(event)], None));
    }
    let conversation = read::required_str(MESSAGE, "conversationId", message.conversation_id)?;
    let received = read::date(
        MESSAGE,
        "receivedDateTime",
        message.received_date_time.as_deref(),
    )?;
    let mut participants: Vec<String> = Vec::new();
    let recipients = message
        .from
        .iter()
        .chain(&message.to_recipients)
        .chain(&message.cc_recipients);
    for recipient in recipients {
        let address = recipient
            .email_address
            .as_ref()
            .and_then(|email| email.address.as_deref())
            .map(str::trim)
            .filter(|address| address.contains('@'))
            .map(str::to_lowercase);
        if let Some(address) = address
            && !participants.contains(&address)
        {
            participants.push(address);
        }
    }
    let group = MessageGroup {
        meta: meta(
            raw,
            MESSAGE,
            conversation,
            ChangeKind::Updated,
            received,
            false,
        ),
        kind: Some(MessageGroupKind::EmailThread),
        name: read::non_empty(message.subject),
        summary: read::non_empty(message.body_preview),
        participants,
        message_count: None,
        member_count: None,
        last_message_at: received,
        created_at: None,
        archived: None,
        labels: Vec::new(),
    };
    Ok((vec![Normalized::MessageGroup(group)], None))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn raw<'a>(headers: &'a BTreeMap<String, String>, body: &'a [u8]) -> RawEvent<'a> {
        RawEvent {
            provider: "microsoft",
            resource: Some("message"),
            event_type: None,
            event_id: Some("message:m1:removed"),
            headers,
            body,
            pinned_api_version: Some("v1.0"),
        }
    }

    #[test]
    fn a_removal_passes_through_with_the_message_id() {
        let headers = BTreeMap::new();
        let body = br##"{"@odata.type":"#microsoft.graph.message","id":"AAMkADk0MGFkODE3LWEAAA=","@removed":{"reason":"deleted"}}"##;
        let (items, version) = message(&raw(&headers, body)).expect("maps");
        assert_eq!(version, None);
        match items.as_slice() {
            [Normalized::ProviderEvent(event)] => {
                assert_eq!(event.meta.id, "AAMkADk0MGFkODE3LWEAAA=");
                assert_eq!(event.meta.change, ChangeKind::Occurred);
                assert_eq!(event.event_type.as_deref(), Some("message.removed"));
                assert_eq!(event.raw["@removed"]["reason"], "deleted");
            }
            other => panic!("expected one provider event, got {other:?}"),
        }
    }

    #[test]
    fn a_message_is_a_partial_conversation_at_its_received_time() {
        let headers = BTreeMap::new();
        let body = br#"{"id":"m2","conversationId":"c1","subject":"Re: Q3","bodyPreview":"Sounds good","receivedDateTime":"2024-03-01T10:00:00Z",
            "from":{"emailAddress":{"name":"Dana","address":"DanaS@contoso.com"}},
            "toRecipients":[{"emailAddress":{"address":"me@contoso.com"}},{"emailAddress":{"address":"danas@contoso.com"}}],
            "ccRecipients":null}"#;
        let (items, _) = message(&raw(&headers, body)).expect("maps");
        match items.as_slice() {
            [Normalized::MessageGroup(group)] => {
                assert_eq!(group.meta.id, "c1");
                assert_eq!(group.meta.change, ChangeKind::Updated);
                assert!(!group.meta.complete);
                assert_eq!(group.meta.source_timestamp, group.last_message_at);
                assert!(group.last_message_at.is_some());
                assert_eq!(group.participants, ["danas@contoso.com", "me@contoso.com"]);
                assert_eq!(group.name.as_deref(), Some("Re: Q3"));
            }
            other => panic!("expected one message group, got {other:?}"),
        }
    }

    #[test]
    fn a_message_without_its_conversation_is_a_missing_field() {
        let headers = BTreeMap::new();
        let err = message(&raw(&headers, br#"{"id":"m3","subject":"x"}"#)).expect_err("no id");
        assert_eq!(
            err,
            NormalizeError::MissingField {
                adapter: "microsoft.message",
                field: "conversationId".into()
            }
        );
    }
}
