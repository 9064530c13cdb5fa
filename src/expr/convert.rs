//! serde_json → CEL values, borrowing strings from the object and converting only the fields
//! the policy's expressions read.

use std::collections::{BTreeMap, HashMap};

use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString,
};
use cel::common::value::Val;
use serde_json::Value as Json;

/// The object fields a set of expressions reads: a trie of field names whose leaves are bound
/// whole. An empty trie reads nothing; `whole` at the root binds the entire object. `each` is
/// what a comprehension reads of every element of a list (`containers.all(c, c.name != '')`
/// reads only `name` of each container).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldTree {
    whole: bool,
    children: BTreeMap<String, FieldTree>,
    each: Option<Box<FieldTree>>,
}

impl FieldTree {
    /// The tree that binds everything.
    pub fn everything() -> FieldTree {
        FieldTree {
            whole: true,
            children: BTreeMap::new(),
            each: None,
        }
    }

    /// Whether the value here is read whole, as far as a reader that cuts objects by field
    /// name only is concerned: a node whose elements are iterated counts as whole for it.
    pub fn is_whole(&self) -> bool {
        self.whole || self.each.is_some()
    }

    /// The subtree under field `name`, if any of it is read.
    pub fn child(&self, name: &str) -> Option<&FieldTree> {
        self.children.get(name)
    }

    /// The tree reading the given paths, each a list of field names from the root.
    pub fn of(paths: &[&[&str]]) -> FieldTree {
        let mut tree = FieldTree::default();
        for path in paths {
            tree.insert(&path.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        }
        tree
    }

    pub fn insert(&mut self, path: &[String]) {
        if self.whole {
            return;
        }
        match path.split_first() {
            None => {
                self.whole = true;
                self.children.clear();
                self.each = None;
            }
            Some((head, rest)) => self.children.entry(head.clone()).or_default().insert(rest),
        }
    }

    /// Whether everything `other` reads is read here too: an object pruned to this tree
    /// evaluates under `other` as the whole object would. Like the pruned parse, it counts a
    /// list whose elements are iterated as read whole.
    pub fn covers(&self, other: &FieldTree) -> bool {
        if self.is_whole() {
            return true;
        }
        if other.is_whole() {
            return false;
        }
        other
            .children
            .iter()
            .all(|(k, sub)| self.children.get(k).is_some_and(|mine| mine.covers(sub)))
    }

    /// Drops from `obj` what this tree does not name, in place: the cut `json::parse_pruned`
    /// makes while parsing (arrays and named leaves are kept whole).
    pub fn prune(&self, obj: &mut Json) {
        if self.is_whole() {
            return;
        }
        if let Json::Object(map) = obj {
            map.retain(|k, v| match self.children.get(k) {
                Some(sub) => {
                    sub.prune(v);
                    true
                }
                None => false,
            });
        }
    }

    /// Records that every element of the list at `path` is read as `each` says.
    pub fn insert_each(&mut self, path: &[String], each: &FieldTree) {
        if self.whole {
            return;
        }
        match path.split_first() {
            None => self.each.get_or_insert_with(Default::default).merge(each),
            Some((head, rest)) => self
                .children
                .entry(head.clone())
                .or_default()
                .insert_each(rest, each),
        }
    }

    pub fn merge(&mut self, other: &FieldTree) {
        if other.whole {
            self.insert(&[]);
            return;
        }
        if let Some(e) = &other.each {
            self.insert_each(&[], e);
        }
        for (k, v) in &other.children {
            if self.whole {
                return;
            }
            self.children.entry(k.clone()).or_default().merge(v);
        }
    }
}

/// The whole JSON value as a CEL value. Strings are borrowed.
pub fn json_to_val(j: &Json) -> Box<dyn Val + '_> {
    match j {
        Json::Null => Box::new(CelNull),
        Json::Bool(b) => Box::new(CelBool::from(*b)),
        // As kube-apiserver decodes unstructured JSON (k8s.io/apimachinery/pkg/util/json): an
        // integral number that fits int64 is an int, any other number a double, including an
        // integer between 2^63 and 2^64 (a uint here would compare and add differently).
        Json::Number(n) => match n.as_i64() {
            Some(i) => Box::new(CelInt::from(i)),
            None => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        Json::String(s) => Box::new(CelString::from(s.as_str())),
        Json::Array(items) => Box::new(CelList::from(
            items.iter().map(json_to_val).collect::<Vec<_>>(),
        )),
        Json::Object(map) => Box::new(CelMap::from(
            map.iter()
                .map(|(k, v)| (CelMapKey::from(k.as_str()), json_to_val(v)))
                .collect::<HashMap<_, _>>(),
        )),
    }
}

/// Only the fields `tree` names. Absent fields stay absent, so `has()` and missing-key errors
/// behave as on the whole object.
pub fn project<'j>(j: &'j Json, tree: &FieldTree) -> Box<dyn Val + 'j> {
    match j {
        // Each element of a list, as the comprehensions over it read them; a list also read
        // some other way (a field of it, which fails as on the whole list) is bound whole.
        Json::Array(items) if !tree.whole && tree.children.is_empty() => match &tree.each {
            Some(each) => Box::new(CelList::from(
                items.iter().map(|i| project(i, each)).collect::<Vec<_>>(),
            )),
            None => json_to_val(j),
        },
        // A map a comprehension iterates yields its keys, all of which are needed.
        Json::Object(map) if !tree.whole && tree.each.is_none() => Box::new(CelMap::from(
            tree.children
                .iter()
                .filter_map(|(k, sub)| {
                    map.get_key_value(k.as_str())
                        .map(|(k, v)| (CelMapKey::from(k.as_str()), project(v, sub)))
                })
                .collect::<HashMap<_, _>>(),
        )),
        _ => json_to_val(j),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Numbers bind as kube-apiserver decodes them: int when integral and within int64, else
    /// double (2^63 and 2^64-1 included, which JSON can hold and int64 cannot).
    #[test]
    fn numbers_bind_as_kubernetes_decodes_them() {
        use cel::Value;
        let table: [(&str, Value); 7] = [
            ("0", Value::Int(0)),
            ("-9223372036854775808", Value::Int(i64::MIN)),
            ("9223372036854775807", Value::Int(i64::MAX)),
            (
                "9223372036854775808",
                Value::Float(9_223_372_036_854_775_808.0),
            ),
            (
                "18446744073709551615",
                Value::Float(18_446_744_073_709_551_615.0),
            ),
            ("1.0", Value::Float(1.0)),
            ("1e3", Value::Float(1000.0)),
        ];
        for (text, want) in table {
            let json: Json = serde_json::from_str(text).unwrap();
            let got = Value::try_from(json_to_val(&json).as_ref()).unwrap();
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn covers_and_prune() {
        let labels = FieldTree::of(&[&["metadata", "labels"]]);
        let meta = FieldTree::of(&[&["metadata"]]);
        let both = FieldTree::of(&[&["metadata"], &["status", "succeeded"]]);
        let table = [
            (
                "whole covers all",
                FieldTree::everything(),
                both.clone(),
                true,
            ),
            (
                "nothing covers whole",
                both.clone(),
                FieldTree::everything(),
                false,
            ),
            (
                "leaf covers its subtree",
                meta.clone(),
                labels.clone(),
                true,
            ),
            (
                "subtree does not cover its leaf",
                labels.clone(),
                meta.clone(),
                false,
            ),
            ("missing branch", meta.clone(), both.clone(), false),
            (
                "empty is covered",
                labels.clone(),
                FieldTree::default(),
                true,
            ),
        ];
        for (name, a, b, want) in table {
            assert_eq!(a.covers(&b), want, "{name}");
        }

        let mut obj = json!({"metadata": {"name": "a", "labels": {"x": "1"}},
            "spec": {"template": {}}, "status": {"succeeded": 1, "conditions": [1, 2]}});
        both.prune(&mut obj);
        assert_eq!(
            obj,
            json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "status": {"succeeded": 1}})
        );
        // The same cut as parsing pruned: what one keeps the other keeps.
        let text = r#"{"a": {"b": [1, {"c": 2}], "d": 3}, "e": "s"}"#;
        let tree = FieldTree::of(&[&["a", "b"], &["e", "f"]]);
        let mut parsed: Json = serde_json::from_str(text).unwrap();
        tree.prune(&mut parsed);
        assert_eq!(parsed, crate::json::parse_pruned(text, &tree).unwrap());
    }
}
