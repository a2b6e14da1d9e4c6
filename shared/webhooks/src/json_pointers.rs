//! The values at a few JSON pointers of a document, read without building the document.
//!
//! The ingress reads one to three fields of a delivery's body (an event id, a type, the
//! account). Parsing a 2 KB GitHub delivery into a `serde_json::Value` to read one of
//! them allocated every key and string of it: a tenth of the ingress's own CPU per
//! delivery (infra/bench). Here the parser walks the document once and keeps only the
//! values the pointers lead to; everything else is validated and skipped. The result
//! equals `Value::pointer` on the parsed document (a property test checks it).

use std::fmt;

use serde::{
    Deserialize as _,
    de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor},
};
use serde_json::Value;

/// The values at `pointers` (RFC 6901, as `Value::pointer` reads them) in the JSON
/// document `body`, each `None` where the document has nothing there; `None` when
/// `body` is not one JSON document.
pub(crate) fn values_at(body: &[u8], pointers: &[&str]) -> Option<Vec<Option<Value>>> {
    let paths: Vec<Option<Vec<String>>> = pointers.iter().map(|p| tokens(p)).collect();
    let wanted: Vec<(usize, &[String])> = paths
        .iter()
        .enumerate()
        .filter_map(|(index, path)| Some((index, path.as_deref()?)))
        .collect();
    let mut found = vec![None; pointers.len()];
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    Select {
        wanted,
        found: &mut found,
    }
    .deserialize(&mut deserializer)
    .ok()?;
    deserializer.end().ok()?;
    Some(found)
}

/// A pointer's reference tokens (`~1` is `/`, `~0` is `~`); `None` for a pointer that
/// is neither empty nor starts with `/` (it points nowhere).
fn tokens(pointer: &str) -> Option<Vec<String>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    let rest = pointer.strip_prefix('/')?;
    Some(
        rest.split('/')
            .map(|token| token.replace("~1", "/").replace("~0", "~"))
            .collect(),
    )
}

/// An array index token as `Value::pointer` reads it: digits, no leading `+` or zero.
fn index_of(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

/// Deserializes one value, recording the values of the wanted paths that lead into it
/// (each path relative to this value, with the index of its pointer).
struct Select<'a, 'p> {
    wanted: Vec<(usize, &'p [String])>,
    found: &'a mut Vec<Option<Value>>,
}

impl<'de> DeserializeSeed<'de> for Select<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.wanted.iter().any(|(_, path)| path.is_empty()) {
            // A pointer ends here: this value is kept whole, and any longer pointer
            // through it is read from the copy.
            let value = Value::deserialize(deserializer)?;
            for (index, path) in self.wanted {
                self.found[index] = if path.is_empty() {
                    Some(value.clone())
                } else {
                    let pointer: String = path
                        .iter()
                        .map(|token| format!("/{}", token.replace('~', "~0").replace('/', "~1")))
                        .collect();
                    value.pointer(&pointer).cloned()
                };
            }
            return Ok(());
        }
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Select<'_, '_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Text<'de>>()? {
            let wanted: Vec<(usize, &[String])> = self
                .wanted
                .iter()
                .filter(|(_, path)| path[0] == *key.0)
                .map(|(index, path)| (*index, &path[1..]))
                .collect();
            if wanted.is_empty() {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            // A repeated key: the last one counts, as when parsing into a `Value`.
            for (index, _) in &wanted {
                self.found[*index] = None;
            }
            map.next_value_seed(Select {
                wanted,
                found: &mut *self.found,
            })?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut position = 0usize;
        loop {
            let wanted: Vec<(usize, &[String])> = self
                .wanted
                .iter()
                .filter(|(_, path)| index_of(&path[0]) == Some(position))
                .map(|(index, path)| (*index, &path[1..]))
                .collect();
            let more = if wanted.is_empty() {
                seq.next_element::<IgnoredAny>()?.is_some()
            } else {
                seq.next_element_seed(Select {
                    wanted,
                    found: &mut *self.found,
                })?
                .is_some()
            };
            if !more {
                return Ok(());
            }
            position += 1;
        }
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// A JSON string (an object key, a header value), borrowed from the document where it
/// has no escapes.
pub(super) struct Text<'de>(pub(super) std::borrow::Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;

        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(std::borrow::Cow::Borrowed(text)))
            }

            fn visit_str<E>(self, text: &str) -> Result<Text<'de>, E> {
                Ok(Text(std::borrow::Cow::Owned(text.to_owned())))
            }
        }

        deserializer.deserialize_str(TextVisitor)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn pointer_values(document: &Value, pointers: &[&str]) -> Vec<Option<Value>> {
        pointers
            .iter()
            .map(|pointer| document.pointer(pointer).cloned())
            .collect()
    }

    #[test]
    fn reads_what_value_pointer_reads() {
        let document = json!({
            "installation": {"id": 42, "account": {"login": "acme"}},
            "a/b": {"m~n": "escaped"},
            "list": [{"id": "first"}, {"id": "second"}],
            "ids": [1, 2, 3],
            "": "empty key",
            "nested": {"inner": {"deep": [true, null, 1.5]}},
        });
        let body = serde_json::to_vec(&document).expect("json");
        let pointers = [
            "/installation/id",
            "/installation",
            "/installation/account/login",
            "/a~1b/m~0n",
            "/list/1/id",
            "/list/01/id",
            "/list/+1/id",
            "/ids/2",
            "/ids/3",
            "/",
            "/nested/inner/deep/2",
            "/missing",
            "/installation/id/deeper",
            "",
            "no-slash",
        ];
        assert_eq!(
            values_at(&body, &pointers),
            Some(pointer_values(&document, &pointers))
        );
    }

    #[test]
    fn a_repeated_key_reads_as_its_last_occurrence() {
        let body = br#"{"a": {"b": 1}, "a": {"c": 2}}"#;
        let parsed: Value = serde_json::from_slice(body).expect("json");
        let pointers = ["/a/b", "/a/c"];
        assert_eq!(
            values_at(body, &pointers),
            Some(pointer_values(&parsed, &pointers))
        );
    }

    #[test]
    fn not_json_is_none() {
        for body in [&b"{\"a\": 1"[..], b"{\"a\": 1} trailing", b"", b"key=value"] {
            assert_eq!(values_at(body, &["/a"]), None, "{body:?}");
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z0-9 ~/]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map("[a-c~/0-2]{0,3}", inner, 0..5)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// Every pointer to something in `value`, and some to nothing.
    fn pointers_into(value: &Value, prefix: String, out: &mut Vec<String>) {
        out.push(prefix.clone());
        out.push(format!("{prefix}/absent"));
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    let token = key.replace('~', "~0").replace('/', "~1");
                    pointers_into(inner, format!("{prefix}/{token}"), out);
                }
            }
            Value::Array(items) => {
                for (index, inner) in items.iter().enumerate() {
                    pointers_into(inner, format!("{prefix}/{index}"), out);
                }
                out.push(format!("{prefix}/{}", items.len()));
            }
            _ => {}
        }
    }

    proptest! {
        #[test]
        fn agrees_with_value_pointer(document in json_value(), picks in prop::collection::vec(any::<prop::sample::Index>(), 1..4)) {
            let mut all = Vec::new();
            pointers_into(&document, String::new(), &mut all);
            let pointers: Vec<&str> = picks.iter().map(|pick| all[pick.index(all.len())].as_str()).collect();
            let body = serde_json::to_vec(&document).expect("json");
            prop_assert_eq!(values_at(&body, &pointers), Some(pointer_values(&document, &pointers)));
        }
    }
}
