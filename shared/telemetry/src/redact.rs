//! Redaction of payloads before they reach a log line. Nothing raw is ever logged: the
//! ingress logs a verified webhook's payload only when the operator turns it on
//! (`LOG_PAYLOADS`), and then only through a [`Redactor`]:
//! - values under keys that name a credential are replaced: any key containing `secret`,
//!   `token`, `password`, `passwd`, `authorization`, `cookie`, `api_key`, `apikey`,
//!   `private_key`, `signature` or `credential` (case-insensitive, `-` and `_` alike), plus
//!   the operator's own field list (`LOG_REDACT_FIELDS`, exact key names);
//! - e-mail addresses anywhere in a string are replaced when `LOG_REDACT_EMAILS` is on
//!   (the default);
//! - bodies that are neither JSON nor a form are not logged, only their size.

use serde_json::{Map, Value};

/// What replaces a redacted value.
pub const REDACTED: &str = "[redacted]";
/// What replaces an e-mail address.
pub const EMAIL: &str = "[email]";

/// Parts of key names that always mark a credential.
const CREDENTIAL_WORDS: [&str; 11] = [
    "secret",
    "token",
    "password",
    "passwd",
    "authorization",
    "cookie",
    "api_key",
    "apikey",
    "private_key",
    "signature",
    "credential",
];

/// Redacts payloads for logging (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redactor {
    /// Extra key names to redact, normalized (lowercase, `-` as `_`).
    fields: Vec<String>,
    emails: bool,
}

impl Redactor {
    /// A redactor for the credential words, `fields` and (when `emails`) e-mail
    /// addresses.
    pub fn new<S: AsRef<str>>(fields: &[S], emails: bool) -> Self {
        Redactor {
            fields: fields
                .iter()
                .map(|field| normalize(field.as_ref()))
                .filter(|field| !field.is_empty())
                .collect(),
            emails,
        }
    }

    /// This redactor plus `fields` (exact key names, normalized as in [`Redactor::new`]):
    /// the ingress adds the body fields its signature schemes read a signature from.
    pub fn with_fields<S: AsRef<str>>(mut self, fields: impl IntoIterator<Item = S>) -> Self {
        for field in fields {
            let field = normalize(field.as_ref());
            if !field.is_empty() && !self.fields.contains(&field) {
                self.fields.push(field);
            }
        }
        self
    }

    /// Whether values under `key` are redacted.
    pub fn redacts_key(&self, key: &str) -> bool {
        let key = normalize(key);
        CREDENTIAL_WORDS.iter().any(|word| key.contains(word)) || self.fields.contains(&key)
    }

    /// `value` with every redacted key's value replaced and, if enabled, every e-mail
    /// address masked.
    pub fn json(&self, value: &Value) -> Value {
        match value {
            Value::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(key, item)| {
                        let item = if self.redacts_key(key) {
                            Value::String(REDACTED.to_owned())
                        } else {
                            self.json(item)
                        };
                        (key.clone(), item)
                    })
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(|item| self.json(item)).collect()),
            Value::String(text) if self.emails => Value::String(mask_emails(text)),
            other => other.clone(),
        }
    }

    /// A body as it may be logged: JSON redacted, a form's fields as a redacted JSON
    /// object, anything else only as its size.
    pub fn payload(&self, content_type: Option<&str>, body: &[u8]) -> Value {
        let media = content_type
            .and_then(|value| value.split(';').next())
            .map(|media| media.trim().to_ascii_lowercase());
        if media.as_deref() == Some("application/x-www-form-urlencoded") {
            let mut fields = Map::new();
            for (key, value) in form_urlencoded::parse(body) {
                fields.insert(key.into_owned(), Value::String(value.into_owned()));
            }
            return self.json(&Value::Object(fields));
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(value) => self.json(&value),
            Err(_) => Value::String(format!("[{} bytes, not logged]", body.len())),
        }
    }
}

fn normalize(key: &str) -> String {
    key.trim().to_ascii_lowercase().replace('-', "_")
}

/// `text` with each e-mail-shaped word (`local@domain.tld`) replaced by [`EMAIL`].
fn mask_emails(text: &str) -> String {
    if !text.contains('@') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        // A sentence's full stop is not part of the address.
        let address = word.trim_end_matches('.');
        if is_email(address) {
            out.push_str(EMAIL);
            out.push_str(&word[address.len()..]);
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_alphanumeric() || "@._%+-".contains(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn is_email(word: &str) -> bool {
    let Some((local, domain)) = word.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain
            .split_once('.')
            .is_some_and(|(host, tld)| !host.is_empty() && !tld.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn credentials_configured_fields_and_emails_are_redacted() {
        let redactor = Redactor::new(&["customer_name", "X-Phone"], true);
        let payload = json!({
            "id": "evt_1",
            "api_token": "tok_live_123",
            "client-secret": "s3cr3t",
            "Authorization": "Bearer abc",
            "nested": {"password": "hunter2", "items": [{"x_phone": "+15550100"}]},
            "customer_name": "Ada",
            "note": "reply to ada@example.com, or bob@example.org.",
            "amount": 100,
        });
        let redacted = redactor.json(&payload);
        assert_eq!(
            redacted,
            json!({
                "id": "evt_1",
                "api_token": REDACTED,
                "client-secret": REDACTED,
                "Authorization": REDACTED,
                "nested": {"password": REDACTED, "items": [{"x_phone": REDACTED}]},
                "customer_name": REDACTED,
                "note": "reply to [email], or [email].",
                "amount": 100,
            })
        );
        let keeping_emails = Redactor::new::<&str>(&[], false);
        assert_eq!(
            keeping_emails.json(&json!({"to": "ada@example.com"})),
            json!({"to": "ada@example.com"})
        );
    }

    #[test]
    fn forms_are_logged_as_redacted_fields_and_other_bodies_only_by_size() {
        let redactor = Redactor::new::<&str>(&[], true);
        assert_eq!(
            redactor.payload(
                Some("application/x-www-form-urlencoded; charset=utf-8"),
                b"AccountSid=AC1&AuthToken=abc&From=%2B1555&Email=ada%40example.com",
            ),
            json!({"AccountSid": "AC1", "AuthToken": REDACTED, "From": "+1555", "Email": "[email]"})
        );
        assert_eq!(
            redactor.payload(Some("application/xml"), b"<a>secret</a>"),
            json!("[13 bytes, not logged]")
        );
    }

    proptest! {
        /// Whatever the payload's shape, no value under a credential key survives.
        #[test]
        fn no_credential_value_survives(
            secret in "[A-Za-z0-9]{12,24}",
            key in prop::sample::select(vec!["token", "refresh_token", "X-Api-Key", "clientSecret", "password", "Cookie"]),
            depth in 0usize..4,
            in_array in any::<bool>(),
        ) {
            let mut value = json!({ key: secret.clone(), "id": "evt" });
            for _ in 0..depth {
                value = if in_array { json!([value]) } else { json!({"data": value}) };
            }
            let text = Redactor::new::<&str>(&[], true).json(&value).to_string();
            prop_assert!(!text.contains(&secret), "{}", text);
        }
    }
}
