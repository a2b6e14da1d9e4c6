//! Reading payloads: JSON and form bodies, typed structs, ids and dates, each failure
//! turned into a [`NormalizeError`] that names the adapter and the field but never
//! quotes payload values.

use serde::{Deserialize, Deserializer, de::DeserializeOwned};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{
    Adapter, NormalizeError,
    dates::{self, Timestamp},
    models::ChangeKind,
};

/// The body as JSON.
pub(crate) fn json_body(adapter: Adapter, body: &[u8]) -> Result<Value, NormalizeError> {
    serde_json::from_slice(body).map_err(|err| NormalizeError::InvalidBody {
        adapter: adapter.name,
        expected: "JSON",
        detail: format!(
            "{:?} error at line {} column {}",
            err.classify(),
            err.line(),
            err.column()
        )
        .to_lowercase(),
    })
}

/// An `application/x-www-form-urlencoded` body as a JSON object of strings (the last
/// value wins for repeated names).
pub(crate) fn form_body(adapter: Adapter, body: &[u8]) -> Result<Value, NormalizeError> {
    if std::str::from_utf8(body).is_err() {
        return Err(NormalizeError::InvalidBody {
            adapter: adapter.name,
            expected: "a UTF-8 form body",
            detail: "invalid UTF-8".to_owned(),
        });
    }
    let map = form_urlencoded::parse(body)
        .map(|(name, value)| (name.into_owned(), Value::String(value.into_owned())))
        .collect::<serde_json::Map<_, _>>();
    Ok(Value::Object(map))
}

/// Converts a JSON value into an adapter's typed struct. `what` names the documented
/// resource, e.g. "a HubSpot CRM v3 deal object".
pub(crate) fn typed<T: DeserializeOwned>(
    adapter: Adapter,
    what: &'static str,
    value: Value,
) -> Result<T, NormalizeError> {
    serde_json::from_value(value).map_err(|err| NormalizeError::InvalidBody {
        adapter: adapter.name,
        expected: what,
        detail: without_quoted_values(&err.to_string()),
    })
}

/// serde's messages quote offending values (`invalid type: string "…"`); field names
/// are in backticks and kept.
fn without_quoted_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut in_quotes = false;
    for c in message.chars() {
        match c {
            '"' => {
                if in_quotes {
                    out.push_str("<value>");
                }
                in_quotes = !in_quotes;
            }
            _ if in_quotes => {}
            _ => out.push(c),
        }
    }
    out
}

/// The error for an absent required field.
pub(crate) fn missing(adapter: Adapter, field: &str) -> NormalizeError {
    NormalizeError::MissingField {
        adapter: adapter.name,
        field: field.to_owned(),
    }
}

/// A required field.
pub(crate) fn required<T>(
    adapter: Adapter,
    field: &str,
    value: Option<T>,
) -> Result<T, NormalizeError> {
    value.ok_or_else(|| missing(adapter, field))
}

/// A required, non-empty string field.
pub(crate) fn required_str(
    adapter: Adapter,
    field: &str,
    value: Option<String>,
) -> Result<String, NormalizeError> {
    required(adapter, field, value.filter(|v| !v.trim().is_empty()))
}

/// An optional date in any supported format; an empty string is `None` (HubSpot writes
/// unset properties as `""`).
pub(crate) fn date(
    adapter: Adapter,
    field: &str,
    value: Option<&str>,
) -> Result<Option<Timestamp>, NormalizeError> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => dates::parse(text)
            .map(Some)
            .map_err(|err| invalid(adapter, field, err.to_string())),
    }
}

/// An optional date that is known to be epoch milliseconds as a string or number.
pub(crate) fn millis(
    adapter: Adapter,
    field: &str,
    value: Option<&NumberOrString>,
) -> Result<Option<Timestamp>, NormalizeError> {
    let parsed = match value {
        None => return Ok(None),
        Some(NumberOrString::Number(n)) => dates::from_unix_millis(*n),
        Some(NumberOrString::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(NumberOrString::String(s)) => dates::parse_unix_millis(s),
    };
    parsed
        .map(Some)
        .map_err(|err| invalid(adapter, field, err.to_string()))
}

/// An optional epoch-seconds number.
pub(crate) fn seconds(
    adapter: Adapter,
    field: &str,
    value: Option<i64>,
) -> Result<Option<Timestamp>, NormalizeError> {
    value
        .map(dates::from_unix_seconds)
        .transpose()
        .map_err(|err| invalid(adapter, field, err.to_string()))
}

pub(crate) fn invalid(adapter: Adapter, field: &str, reason: impl Into<String>) -> NormalizeError {
    NormalizeError::InvalidField {
        adapter: adapter.name,
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Ids and epochs that providers write as numbers in some payloads and strings in
/// others (HubSpot `objectId` is a number in webhooks and a string in the CRM API).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub(crate) enum NumberOrString {
    Number(i64),
    String(String),
}

impl NumberOrString {
    pub(crate) fn into_string(self) -> String {
        match self {
            NumberOrString::Number(n) => n.to_string(),
            NumberOrString::String(s) => s,
        }
    }
}

/// Deserializes an optional id given as a string or an integer into a string.
pub(crate) fn opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<NumberOrString>::deserialize(d)?.map(NumberOrString::into_string))
}

/// Deserializes `null` as the type's default (providers send `null` for empty lists).
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `sha256:<hex>` of some bytes: the id of an event whose provider gives none.
pub(crate) fn sha256_id(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// `sha256:<hex>` of a JSON value's canonical text (object keys sorted).
pub(crate) fn sha256_of_value(value: &Value) -> String {
    sha256_id(value.to_string().as_bytes())
}

/// The change an event type or action verb names (`customer.created`, `orders/delete`,
/// GitHub's `edited`), or [`ChangeKind::Occurred`].
pub(crate) fn change_from_verb(event_type: &str) -> ChangeKind {
    let verb = event_type
        .rsplit(['.', '/', '_', ':'])
        .next()
        .unwrap_or(event_type)
        .to_ascii_lowercase();
    match verb.as_str() {
        "created" | "create" | "creation" | "added" | "opened" => ChangeKind::Created,
        "updated" | "update" | "edited" | "changed" | "propertychange" => ChangeKind::Updated,
        "deleted" | "delete" | "deletion" | "removed" | "remove" => ChangeKind::Deleted,
        "restored" | "restore" | "undeleted" => ChangeKind::Restored,
        _ => ChangeKind::Occurred,
    }
}

/// Replaces the string at `key` of a JSON object with `"[redacted]"` when present.
pub(crate) fn redact(value: &mut Value, key: &str) {
    if let Some(slot) = value.as_object_mut().and_then(|map| map.get_mut(key))
        && slot.is_string()
    {
        *slot = Value::String("[redacted]".to_owned());
    }
}

/// A non-empty string, trimmed.
pub(crate) fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST: Adapter = Adapter {
        name: "test.adapter",
        mapping_version: 1,
    };

    #[test]
    fn quoted_values_are_removed_from_serde_messages() {
        #[derive(Debug, Deserialize)]
        struct S {
            #[allow(dead_code)]
            flag: bool,
        }
        let err = typed::<S>(TEST, "an S", serde_json::json!({"flag": "sk_live_secret"}))
            .expect_err("must fail");
        let message = err.to_string();
        assert!(!message.contains("sk_live_secret"), "{message}");
        assert!(message.contains("an S"), "{message}");
    }

    #[test]
    fn json_errors_give_position_not_content() {
        let err = json_body(TEST, b"{\"token\": xoxb-secret}").expect_err("must fail");
        let message = err.to_string();
        assert!(!message.contains("xoxb"), "{message}");
        assert!(message.contains("line 1"), "{message}");
    }

    #[test]
    fn verbs_map_to_changes() {
        assert_eq!(change_from_verb("customer.created"), ChangeKind::Created);
        assert_eq!(change_from_verb("orders/delete"), ChangeKind::Deleted);
        assert_eq!(change_from_verb("orders/updated"), ChangeKind::Updated);
        assert_eq!(change_from_verb("edited"), ChangeKind::Updated);
        assert_eq!(
            change_from_verb("payment_intent.succeeded"),
            ChangeKind::Occurred
        );
    }

    #[test]
    fn redact_replaces_only_strings() {
        let mut value = serde_json::json!({"token": "abc", "n": 1});
        redact(&mut value, "token");
        redact(&mut value, "n");
        assert_eq!(value, serde_json::json!({"token": "[redacted]", "n": 1}));
    }
}
