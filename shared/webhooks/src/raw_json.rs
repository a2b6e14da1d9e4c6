//! The byte ranges of a JSON object's top-level members, exactly as they were sent.
//!
//! A provider that signs part of its body as text (Exact Online's `HashCode` is an HMAC
//! of the `Content` member's bytes, from `{"Content":` to `,"HashCode":`) must be
//! verified over those bytes, never over a re-serialization: a parser that normalizes
//! whitespace, key order or number formats would change them. This scanner finds the
//! members without interpreting them; each value it returns is checked to be one
//! well-formed JSON value, so a malformed body fails closed.

use std::ops::Range;

use serde::de::IgnoredAny;

/// A top-level member: where its key (with its quotes) and its value sit in the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// The key's bytes between its quotes, as sent (escapes are not decoded).
    pub(crate) key: Range<usize>,
    /// The value's bytes, without surrounding whitespace.
    pub(crate) value: Range<usize>,
}

/// The members of the top-level object of `body`, and the offset of its closing `}`;
/// `None` when `body` is not one JSON object (trailing whitespace allowed).
pub(crate) fn top_level_members(body: &[u8]) -> Option<(Vec<Member>, usize)> {
    let mut at = skip_whitespace(body, 0);
    if body.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_whitespace(body, at + 1);
    let mut members = Vec::new();
    if body.get(at) == Some(&b'}') {
        return only_whitespace_after(body, at).then_some((members, at));
    }
    loop {
        if body.get(at) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(body, at)?;
        let key = at + 1..key_end - 1;
        at = skip_whitespace(body, key_end);
        if body.get(at) != Some(&b':') {
            return None;
        }
        let start = skip_whitespace(body, at + 1);
        let end = value_end(body, start)?;
        serde_json::from_slice::<IgnoredAny>(&body[start..end]).ok()?;
        members.push(Member {
            key,
            value: start..end,
        });
        at = skip_whitespace(body, end);
        match body.get(at) {
            Some(b',') => at = skip_whitespace(body, at + 1),
            Some(b'}') => return only_whitespace_after(body, at).then_some((members, at)),
            _ => return None,
        }
    }
}

/// The bytes of the value of the one top-level member named `name` (its key written
/// without escapes); `None` when the body is not an object, or has none or several.
pub(crate) fn member_value<'b>(body: &'b [u8], name: &str) -> Option<&'b [u8]> {
    let (members, _) = top_level_members(body)?;
    let mut named = members
        .iter()
        .filter(|member| &body[member.key.clone()] == name.as_bytes());
    let member = named.next()?;
    if named.next().is_some() {
        return None;
    }
    Some(&body[member.value.clone()])
}

/// Whether every top-level member of the JSON object `body` is one of `names` (each
/// written without escapes); `false` when `body` is not one JSON object.
pub(crate) fn only_members(body: &[u8], names: &[&str]) -> bool {
    top_level_members(body).is_some_and(|(members, _)| {
        members.iter().all(|member| {
            names
                .iter()
                .any(|name| &body[member.key.clone()] == name.as_bytes())
        })
    })
}

/// `body` with the top-level member `name` set to the JSON string `value`: its value
/// replaced where the member exists, else the member added last. Every other byte is
/// kept, so a raw member signed beside it still verifies. `None` when the body is not a
/// JSON object.
pub(crate) fn with_string_member(body: &[u8], name: &str, value: &str) -> Option<Vec<u8>> {
    let (members, close) = top_level_members(body)?;
    let encoded = serde_json::to_string(value).ok()?;
    let existing = members
        .iter()
        .find(|member| &body[member.key.clone()] == name.as_bytes());
    let mut out = Vec::with_capacity(body.len() + name.len() + encoded.len() + 4);
    match existing {
        Some(member) => {
            out.extend_from_slice(&body[..member.value.start]);
            out.extend_from_slice(encoded.as_bytes());
            out.extend_from_slice(&body[member.value.end..]);
        }
        None => {
            let key = serde_json::to_string(name).ok()?;
            out.extend_from_slice(&body[..close]);
            if !members.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(key.as_bytes());
            out.push(b':');
            out.extend_from_slice(encoded.as_bytes());
            out.extend_from_slice(&body[close..]);
        }
    }
    Some(out)
}

fn skip_whitespace(body: &[u8], mut at: usize) -> usize {
    while body
        .get(at)
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        at += 1;
    }
    at
}

fn only_whitespace_after(body: &[u8], close: usize) -> bool {
    skip_whitespace(body, close + 1) == body.len()
}

/// The offset just past the string starting with the quote at `start`.
fn string_end(body: &[u8], start: usize) -> Option<usize> {
    let mut at = start + 1;
    loop {
        match body.get(at)? {
            b'"' => return Some(at + 1),
            b'\\' => at += 2,
            _ => at += 1,
        }
    }
}

/// The offset just past the value starting at `start`: a string, an object or array
/// (brackets counted outside strings), or a scalar up to the next delimiter.
fn value_end(body: &[u8], start: usize) -> Option<usize> {
    match body.get(start)? {
        b'"' => string_end(body, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut at = start;
            loop {
                match body.get(at)? {
                    b'"' => {
                        at = string_end(body, at)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(at + 1);
                        }
                    }
                    _ => {}
                }
                at += 1;
            }
        }
        _ => {
            let mut at = start;
            while body
                .get(at)
                .is_some_and(|b| !matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
            {
                at += 1;
            }
            (at > start).then_some(at)
        }
    }
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
        assert_eq!(top_level_members(b" {} ").map(|(m, _)| m.len()), Some(0));
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
