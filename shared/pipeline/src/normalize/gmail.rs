//! Gmail → [`MessageGroup`].
//!
//! - `gmail.thread`: the `users.threads` resource as returned by `users.threads.get`
//!   (<https://developers.google.com/gmail/api/reference/rest/v1/users.threads#Thread>):
//!   `id`, `snippet`, `historyId`, `messages[]` of `users.messages` resources
//!   (<https://developers.google.com/gmail/api/reference/rest/v1/users.messages#Message>)
//!   with `labelIds`, `internalDate` (epoch milliseconds as a string) and
//!   `payload.headers[]` (`Subject`, `From`, `To`, `Cc`). A thread from `threads.list`
//!   has no `messages`: it maps, marked incomplete.
//! - `gmail.thread` deletions: Gmail keeps no tombstone, so when `users.threads.get`
//!   answers 404 for a thread the mailbox history named, the `gmail-history` poller sends
//!   `{"id", "historyId", "deleted": true}` (Junction's own marker, not a Gmail field;
//!   `historyId` is the last history record that named the thread). It maps to a
//!   [`ChangeKind::Deleted`] record carrying only the id.
//! - `gmail.push`: a push notification (<https://developers.google.com/gmail/api/guides/push>)
//!   is a Pub/Sub push envelope whose base64 `message.data` decodes to
//!   `{"emailAddress", "historyId"}`: it says only that the mailbox changed, so it
//!   becomes a [`FetchRequest`] for the mailbox's history since that id.

use base64::Engine;
use serde::Deserialize;

use super::{
    Adapted, Adapter, NormalizeError, Normalized, RawEvent,
    dates::Timestamp,
    meta,
    models::{ChangeKind, FetchRequest, MessageGroup, MessageGroupKind, Model},
    read::{self, NumberOrString},
};

pub(crate) const THREAD: Adapter = Adapter {
    name: "gmail.thread",
    mapping_version: 1,
};

pub(crate) const PUSH: Adapter = Adapter {
    name: "gmail.push",
    mapping_version: 1,
};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Thread {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    snippet: Option<String>,
    #[serde(default, deserialize_with = "read::null_default")]
    messages: Vec<Message>,
    /// Set by the poller for a thread that no longer exists (see the module docs).
    #[serde(default)]
    deleted: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Message {
    #[serde(default, deserialize_with = "read::null_default")]
    label_ids: Vec<String>,
    #[serde(default)]
    internal_date: Option<NumberOrString>,
    #[serde(default)]
    payload: Option<MessagePart>,
}

#[derive(Debug, Deserialize)]
struct MessagePart {
    #[serde(default, deserialize_with = "read::null_default")]
    headers: Vec<Header>,
}

#[derive(Debug, Deserialize)]
struct Header {
    #[serde(default)]
    name: String,
    #[serde(default)]
    value: String,
}

pub(crate) fn thread(raw: &RawEvent<'_>) -> Result<Adapted, NormalizeError> {
    let value = read::json_body(THREAD, raw.body)?;
    let thread: Thread = read::typed(THREAD, "a Gmail users.threads resource", value)?;
    let id = read::required_str(THREAD, "id", thread.id)?;
    if thread.deleted == Some(true) {
        return Ok((vec![Normalized::MessageGroup(deleted(raw, id))], None));
    }

    let mut times: Vec<Timestamp> = Vec::new();
    let mut labels: Vec<String> = Vec::new();
    let mut participants: Vec<String> = Vec::new();
    let mut subject = None;
    for (index, message) in thread.messages.iter().enumerate() {
        let field = format!("messages[{index}].internalDate");
        if let Some(time) = read::millis(THREAD, &field, message.internal_date.as_ref())? {
            times.push(time);
        }
        labels.extend(message.label_ids.iter().cloned());
        let headers = message.payload.iter().flat_map(|p| p.headers.iter());
        for header in headers {
            let name = header.name.to_ascii_lowercase();
            match name.as_str() {
                "subject" if subject.is_none() => {
                    subject = read::non_empty(Some(header.value.clone()))
                }
                "from" | "to" | "cc" => {
                    for address in addresses(&header.value) {
                        if !participants.contains(&address) {
                            participants.push(address);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    labels.sort_unstable();
    labels.dedup();
    let last = times.iter().max().copied();
    let first = times.iter().min().copied();
    let complete = !thread.messages.is_empty();
    let record = MessageGroup {
        meta: meta(raw, THREAD, id, ChangeKind::Snapshot, last, complete),
        kind: Some(MessageGroupKind::EmailThread),
        name: subject,
        summary: read::non_empty(thread.snippet),
        participants,
        message_count: complete.then_some(thread.messages.len() as u64),
        member_count: None,
        last_message_at: last,
        created_at: first,
        archived: None,
        labels,
    };
    Ok((vec![Normalized::MessageGroup(record)], None))
}

/// A thread the mailbox no longer has: only its id is known, and Gmail states no time.
fn deleted(raw: &RawEvent<'_>, id: String) -> MessageGroup {
    MessageGroup {
        meta: meta(raw, THREAD, id, ChangeKind::Deleted, None, false),
        kind: Some(MessageGroupKind::EmailThread),
        name: None,
        summary: None,
        participants: Vec::new(),
        message_count: None,
        member_count: None,
        last_message_at: None,
        created_at: None,
        archived: None,
        labels: Vec::new(),
    }
}

/// The addresses in an address-list header, lower-case: `"Ann <ann@x.io>, bob@y.io"` →
/// `ann@x.io`, `bob@y.io`. Display names are dropped (they are not identities).
fn addresses(header: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_quotes = false;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, c) in header.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => {
                parts.push(&header[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&header[start..]);
    for part in parts {
        let address = match (part.rfind('<'), part.rfind('>')) {
            (Some(open), Some(close)) if open < close => &part[open + 1..close],
            _ => part,
        };
        let address = address.trim();
        if address.contains('@') {
            out.push(address.to_lowercase());
        }
    }
    out
}

#[derive(Debug, Deserialize)]
struct PushEnvelope {
    #[serde(default)]
    message: Option<PubSubMessage>,
    // A bare notification (already unwrapped by a relay) is accepted too.
    #[serde(default, rename = "emailAddress")]
    email_address: Option<String>,
    #[serde(default, rename = "historyId")]
    history_id: Option<NumberOrString>,
}

#[derive(Debug, Deserialize)]
struct PubSubMessage {
    #[serde(default)]
    data: Option<String>,
    // Pub/Sub sends both spellings of these two fields.
    #[serde(default, rename = "messageId")]
    message_id: Option<String>,
    #[serde(default, rename = "message_id")]
    message_id_snake: Option<String>,
    #[serde(default, rename = "publishTime")]
    publish_time: Option<String>,
    #[serde(default, rename = "publish_time")]
    publish_time_snake: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Notification {
    #[serde(default)]
    email_address: Option<String>,
    #[serde(default)]
    history_id: Option<NumberOrString>,
}

pub(crate) fn push(raw: &RawEvent<'_>) -> Result<Adapted, NormalizeError> {
    let value = read::json_body(PUSH, raw.body)?;
    let envelope: PushEnvelope = read::typed(PUSH, "a Gmail Pub/Sub push notification", value)?;
    let (notification, message_id, published) = match envelope.message {
        Some(message) => {
            let data = read::required_str(PUSH, "message.data", message.data)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(data.trim()))
                .map_err(|_| read::invalid(PUSH, "message.data", "is not base64"))?;
            let inner = read::json_body(PUSH, &bytes)?;
            let notification: Notification = read::typed(
                PUSH,
                "a Gmail notification {emailAddress, historyId}",
                inner,
            )?;
            (
                notification,
                message.message_id.or(message.message_id_snake),
                message.publish_time.or(message.publish_time_snake),
            )
        }
        None => (
            Notification {
                email_address: envelope.email_address,
                history_id: envelope.history_id,
            },
            None,
            None,
        ),
    };
    let history_id = read::required(PUSH, "historyId", notification.history_id)?.into_string();
    let account = read::required_str(PUSH, "emailAddress", notification.email_address)?;
    let published = read::date(PUSH, "message.publishTime", published.as_deref())?;
    let mut meta = meta(raw, PUSH, history_id, ChangeKind::Updated, published, false);
    if let Some(message_id) = message_id {
        meta.provider_event_id = Some(message_id);
    }
    let request = FetchRequest {
        meta,
        model: Model::MessageGroup,
        resource: "history".to_owned(),
        account: Some(account),
        reason: "Gmail push notifications carry only the mailbox and a history id: list the \
                 mailbox history since the last stored id and fetch the changed threads",
    };
    Ok((vec![Normalized::NeedsFetch(request)], None))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn raw<'a>(headers: &'a BTreeMap<String, String>, body: &'a [u8]) -> RawEvent<'a> {
        RawEvent {
            provider: "gmail",
            resource: Some("thread"),
            event_type: None,
            event_id: None,
            headers,
            body,
            pinned_api_version: None,
        }
    }

    #[test]
    fn a_polled_deletion_is_a_deleted_thread_with_only_its_id() {
        let headers = BTreeMap::new();
        let body = br#"{"id":"18c8f2a1b2c3d4e5","historyId":"9876600","deleted":true}"#;
        let (items, version) = thread(&raw(&headers, body)).expect("maps");
        assert_eq!(version, None);
        match items.as_slice() {
            [Normalized::MessageGroup(group)] => {
                assert_eq!(group.meta.id, "18c8f2a1b2c3d4e5");
                assert_eq!(group.meta.change, ChangeKind::Deleted);
                assert!(!group.meta.complete, "a deletion carries only the id");
                assert_eq!(group.meta.source_timestamp, None);
                assert_eq!(group.kind, Some(MessageGroupKind::EmailThread));
                assert_eq!(group.message_count, None);
                assert!(group.labels.is_empty());
            }
            other => panic!("expected one message group, got {other:?}"),
        }
    }

    #[test]
    fn deleted_false_is_an_ordinary_thread() {
        let headers = BTreeMap::new();
        let body = br#"{"id":"t1","historyId":"5","deleted":false,"messages":[{"id":"m1","internalDate":"1704164645000","labelIds":["INBOX"]}]}"#;
        let (items, _) = thread(&raw(&headers, body)).expect("maps");
        assert_eq!(items[0].meta().change, ChangeKind::Snapshot);
        assert!(items[0].meta().complete);
    }

    #[test]
    fn addresses_drop_display_names_and_keep_quoted_commas() {
        assert_eq!(
            addresses(r#""Doe, Jane" <Jane@Example.com>, bob@y.io, undisclosed-recipients:;"#),
            vec!["jane@example.com".to_owned(), "bob@y.io".to_owned()]
        );
    }
}
