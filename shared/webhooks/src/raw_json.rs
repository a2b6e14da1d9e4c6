//! The top-level members of a JSON object, each value's bytes exactly as they were sent.
//!
//! A provider that signs part of its body as text (Exact Online's `HashCode` is an HMAC
//! of the `Content` member's bytes, from `{"Content":` to `,"HashCode":`) must be
//! verified over those bytes, never over a re-serialization: a parser that normalizes
//! whitespace, key order or number formats would change them. serde_json parses the
//! body, so anything but one well-formed object (whitespace around it allowed) fails
//! closed, and lends each key and value as a [`RawValue`], a slice of the body.
//!
//! Keys are compared as written, escapes not decoded: `"\u0043ontent"` is not `Content`
//! but another key, which no name matches (catalog names hold no quote or backslash), so
//! it is neither read as the signed member nor allowed beside it.

use std::fmt;
use std::ops::Range;

use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, Visitor};
use serde_json::value::RawValue;

/// A top-level member: its key between its quotes, as written, and its value as sent.
type Member<'b> = (&'b str, &'b RawValue);

/// The members of the top-level object in order, duplicates kept: serde_json's maps
/// keep one of two same-named members, and which of them was signed is ambiguous.
struct Members<'b>(Vec<Member<'b>>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MembersVisitor)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::new();
        // A key read raw is the string literal as written, so its escapes stay undecoded.
        while let Some((key, value)) = map.next_entry::<&RawValue, &RawValue>()? {
            let key = key
                .get()
                .strip_prefix('"')
                .and_then(|k| k.strip_suffix('"'));
            members.push((
                key.ok_or_else(|| A::Error::custom("key not a string"))?,
                value,
            ));
        }
        Ok(Members(members))
    }
}

/// The members of the top-level object of `body`; `None` when `body` is not one JSON
/// object.
fn members(body: &[u8]) -> Option<Vec<Member<'_>>> {
    serde_json::from_slice(body)
        .ok()
        .map(|Members(members)| members)
}

/// The bytes of the value of the one top-level member named `name` (its key written
/// without escapes); `None` when the body is not an object, or has none or several.
pub(crate) fn member_value<'b>(body: &'b [u8], name: &str) -> Option<&'b [u8]> {
    let members = members(body)?;
    let mut named = members.iter().filter(|(key, _)| *key == name);
    let (_, value) = named.next()?;
    named.next().is_none().then_some(value.get().as_bytes())
}

/// Whether every top-level member of the JSON object `body` is one of `names` (each
/// written without escapes); `false` when `body` is not one JSON object.
pub(crate) fn only_members(body: &[u8], names: &[&str]) -> bool {
    members(body).is_some_and(|members| members.iter().all(|(key, _)| names.contains(key)))
}

/// `body` with the top-level member `name` set to the JSON string `value`: the first
/// such member's value replaced, else the member added last. Every other byte is kept,
/// so a raw member signed beside it still verifies. `None` when the body is not a JSON
/// object.
pub(crate) fn with_string_member(body: &[u8], name: &str, value: &str) -> Option<Vec<u8>> {
    let members = members(body)?;
    let encoded = serde_json::to_string(value).ok()?;
    let (replaced, insert) = match members.iter().find(|(key, _)| *key == name) {
        Some((_, old)) => (range_in(body, old.get())?, encoded),
        None => {
            // The closing brace: serde_json admitted only whitespace after it.
            let close = body.trim_ascii_end().len() - 1;
            let comma = if members.is_empty() { "" } else { "," };
            let key = serde_json::to_string(name).ok()?;
            (close..close, format!("{comma}{key}:{encoded}"))
        }
    };
    Some(
        [
            &body[..replaced.start],
            insert.as_bytes(),
            &body[replaced.end..],
        ]
        .concat(),
    )
}

/// Where `part`, a slice of `body` lent by serde_json, sits in it.
fn range_in(body: &[u8], part: &str) -> Option<Range<usize>> {
    let start = part.as_ptr().addr().checked_sub(body.as_ptr().addr())?;
    let end = start + part.len();
    (end <= body.len()).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z0-9 {}\\[\\],:\"\\\\\\u{e9}]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-c\"{}]{0,3}", inner, 0..5)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever the members hold, and however the object is laid out (compact or
        /// pretty), each member's bytes are exactly its value as serialized there, and
        /// setting a string member keeps every other member's bytes.
        #[test]
        fn members_are_found_byte_exactly(
            members in prop::collection::btree_map("[A-Za-z]{1,6}", json_value(), 1..5),
            pretty in any::<bool>(),
        ) {
            let object = Value::Object(members.clone().into_iter().collect());
            let body = if pretty {
                serde_json::to_vec_pretty(&object)
            } else {
                serde_json::to_vec(&object)
            }
            .expect("json");
            for (name, value) in &members {
                let bytes = member_value(&body, name).expect("found");
                let reparsed: Value = serde_json::from_slice(bytes).expect("one value");
                prop_assert_eq!(&reparsed, value);
                if !pretty {
                    let compact = serde_json::to_vec(value).expect("json");
                    prop_assert_eq!(bytes, compact.as_slice());
                }
            }
            let signed = with_string_member(&body, "Sig", "AB").expect("object");
            for name in members.keys() {
                prop_assert_eq!(member_value(&signed, name), member_value(&body, name));
            }
            prop_assert_eq!(member_value(&signed, "Sig"), Some(&br#""AB""#[..]));
        }
    }

    #[test]
    fn members_are_the_bytes_as_sent() {
        let body = br#" { "Content" : {"Topic":"Accounts","Key":"a,b}c"} ,"HashCode":"AB12", "n": -1.50e2 } "#;
        assert_eq!(
            member_value(body, "Content"),
            Some(&br#"{"Topic":"Accounts","Key":"a,b}c"}"#[..])
        );
        assert_eq!(member_value(body, "HashCode"), Some(&br#""AB12""#[..]));
        assert_eq!(member_value(body, "n"), Some(&b"-1.50e2"[..]));
        assert_eq!(member_value(body, "missing"), None);
    }

    #[test]
    fn anything_but_one_well_formed_object_is_refused() {
        for body in [
            &b""[..],
            b"[]",
            br#"{"Content":{"a":1}"#,
            br#"{"Content":{"a":1}} x"#,
            br#"{"Content":{"a":}}"#,
            br#"{"Content" {"a":1}}"#,
            br#"{"Content":"unterminated}"#,
            br#"{"Content":tru}"#,
        ] {
            assert_eq!(
                member_value(body, "Content"),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // Two members of the signed name: which one was signed is ambiguous.
        assert_eq!(
            member_value(br#"{"Content":{"a":1},"Content":{"a":2}}"#, "Content"),
            None
        );
        assert_eq!(members(b" {} ").map(|m| m.len()), Some(0));
    }

    #[test]
    fn only_the_named_members_may_be_present() {
        let body = br#"{"Content":{"a":1},"HashCode":"F0"}"#;
        assert!(only_members(body, &["Content", "HashCode"]));
        assert!(!only_members(body, &["Content"]));
        assert!(!only_members(
            br#"{"Content":{"a":1},"HashCode":"F0","Extra":1}"#,
            &["Content", "HashCode"]
        ));
        // An escaped spelling is another key here: refused, never read as "Content".
        assert!(!only_members(
            br#"{"\u0043ontent":{"a":1},"HashCode":"F0"}"#,
            &["Content", "HashCode"]
        ));
        assert!(!only_members(b"[]", &["Content"]));
    }

    #[test]
    fn a_string_member_is_set_without_touching_other_bytes() {
        let body = br#"{ "Content" : {"b":1, "a":2} }"#;
        let added = with_string_member(body, "HashCode", "F00").expect("object");
        assert_eq!(
            added,
            br#"{ "Content" : {"b":1, "a":2} ,"HashCode":"F00"}"#.to_vec()
        );
        let replaced = with_string_member(&added, "HashCode", "BA2").expect("object");
        assert_eq!(
            replaced,
            br#"{ "Content" : {"b":1, "a":2} ,"HashCode":"BA2"}"#.to_vec()
        );
        assert_eq!(
            with_string_member(b"{}", "HashCode", "1"),
            Some(br#"{"HashCode":"1"}"#.to_vec())
        );
        assert_eq!(with_string_member(b"[1]", "HashCode", "1"), None);
    }
}
