//! JSON lookups on the hot path of evaluation, and parsing only the fields that are read.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value as Json};

use crate::expr::FieldTree;

/// `obj.pointer(path)` without its allocations: serde_json unescapes every segment into a new
/// String, which dominated evaluation outside CEL (callgrind: over half of the instructions of
/// `engine::evaluate`). Segments are unescaped (`~1` is `/`, `~0` is `~`) only when they contain
/// a `~`, and array indexes are decimal, as RFC 6901 says.
pub fn at<'a>(obj: &'a Json, pointer: &str) -> Option<&'a Json> {
    if pointer.is_empty() {
        return Some(obj);
    }
    let rest = pointer.strip_prefix('/')?;
    rest.split('/').try_fold(obj, |node, segment| {
        let key: std::borrow::Cow<'_, str> = if segment.contains('~') {
            segment.replace("~1", "/").replace("~0", "~").into()
        } else {
            segment.into()
        };
        match node {
            Json::Object(m) => m.get(key.as_ref()),
            Json::Array(a) => key
                .parse::<usize>()
                .ok()
                .filter(|_| key == "0" || !key.starts_with('0'))
                .and_then(|i| a.get(i)),
            _ => None,
        }
    })
}

/// Parses `text` keeping only the fields `keep` names: an object's other fields are skipped
/// without being built, what `keep` names whole is kept whole, and a list's elements are cut
/// as `keep` says of each when it iterates the list (whole otherwise). The same cut as
/// `FieldTree::prune`, made while parsing, so that a large object costs its pruned size.
pub fn parse_pruned(text: &str, keep: &FieldTree) -> serde_json::Result<Json> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Pruned(keep).deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

struct Pruned<'t>(&'t FieldTree);

impl<'de> DeserializeSeed<'de> for Pruned<'_> {
    type Value = Json;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        if self.0.keeps_whole() {
            Json::deserialize(d)
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Pruned<'_> {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut out = Map::new();
        if self.0.element().is_some() {
            // An iterated map: its keys are what is iterated, and it is kept whole.
            while let Some(key) = map.next_key::<Key<'de>>()? {
                let value = map.next_value::<Json>()?;
                out.insert(key.into_string(), value);
            }
            return Ok(Json::Object(out));
        }
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match self.0.child(key.as_str()) {
                Some(sub) => {
                    let value = map.next_value_seed(Pruned(sub))?;
                    out.insert(key.into_string(), value);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Json::Object(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        match self.0.element() {
            Some(each) => {
                while let Some(item) = seq.next_element_seed(Pruned(each))? {
                    out.push(item);
                }
            }
            None => {
                while let Some(item) = seq.next_element::<Json>()? {
                    out.push(item);
                }
            }
        }
        Ok(Json::Array(out))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        Ok(Json::from(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
}

/// An object key, borrowed from the text when it has no escapes, so that skipped fields cost
/// no allocation.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }

    fn into_string(self) -> String {
        match self {
            Key::Borrowed(s) => s.to_string(),
            Key::Owned(s) => s,
        }
    }
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key::Owned(v))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn agrees_with_serde_json_pointer() {
        let obj = json!({"a": {"b/c": [1, {"d~e": "x"}], "": 2}, "l": [0, 1]});
        for p in [
            "",
            "/a",
            "/a/b~1c",
            "/a/b~1c/1/d~0e",
            "/a/b~1c/0",
            "/a/",
            "/l/01",
            "/l/1",
            "/l/x",
            "/missing/x",
            "a",
            "/a/b~1c/9",
        ] {
            assert_eq!(at(&obj, p), obj.pointer(p), "{p}");
        }
    }

    #[test]
    fn parse_pruned_keeps_what_project_binds() {
        let text = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"a","labels":{"x":"1"},
            "annotations":{"k":"v"}},"data":{"big":"AAAA"},"spec":{"a":{"b":1,"c":[{"d":2}]},
            "e":"\u0041"},"n":null,"f":1.5,"l":[1,{"m":{"o":true}}]}"#;
        let full: Json = serde_json::from_str(text).unwrap();
        let cases: [(&[&[&str]], Json); 6] = [
            (&[], json!({})),
            (&[&[]], full.clone()),
            (
                &[&["metadata", "labels"]],
                json!({"metadata": {"labels": {"x": "1"}}}),
            ),
            (
                &[&["spec", "a", "c"], &["spec", "e"], &["f"], &["n"]],
                json!({"spec": {"a": {"c": [{"d": 2}]}, "e": "A"}, "f": 1.5, "n": null}),
            ),
            // Below an array nothing is cut: project binds arrays whole.
            (&[&["l", "m"]], json!({"l": [1, {"m": {"o": true}}]})),
            (&[&["missing", "x"], &["kind"]], json!({"kind": "Secret"})),
        ];
        for (paths, want) in cases {
            let tree = FieldTree::of(paths);
            assert_eq!(parse_pruned(text, &tree).unwrap(), want, "{paths:?}");
        }
        assert!(parse_pruned("{\"a\":1} x", &FieldTree::default()).is_err());
        assert!(parse_pruned("{\"a\":", &FieldTree::default()).is_err());
    }
}
