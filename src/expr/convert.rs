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

    /// Whether the value here is kept whole by `prune` and `json::parse_pruned`, whatever it
    /// is.
    pub fn keeps_whole(&self) -> bool {
        self.whole
    }

    /// What is read of every element of a list here, if the list is iterated. A map here is
    /// kept whole when it is (its keys are what a comprehension iterates, and binding keeps
    /// an iterated map whole).
    pub fn element(&self) -> Option<&FieldTree> {
        self.each.as_deref()
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
        if self.whole {
            return true;
        }
        if other.whole {
            return false;
        }
        // An object here: kept whole when this tree iterates it, otherwise cut to the fields
        // named, which must include every field `other` reads and keep them as it reads them.
        let objects = self.each.is_some()
            || (other.each.is_none()
                && other
                    .children
                    .iter()
                    .all(|(k, sub)| self.children.get(k).is_some_and(|mine| mine.covers(sub))));
        // A list here: kept whole unless this tree iterates it, and then each element is cut
        // as `each` says, which must keep what `other` reads of each.
        let lists = match (&self.each, &other.each) {
            (None, _) => true,
            (Some(mine), Some(theirs)) => mine.covers(theirs),
            (Some(_), None) => false,
        };
        objects && lists
    }

    /// Drops from `obj` what this tree does not name, in place: the cut `json::parse_pruned`
    /// makes while parsing. Named leaves are kept whole; a list's elements are cut as `each`
    /// says when it is iterated and kept whole otherwise.
    pub fn prune(&self, obj: &mut Json) {
        if self.whole {
            return;
        }
        match (obj, &self.each) {
            (Json::Array(items), Some(each)) => {
                for item in items {
                    each.prune(item);
                }
            }
            (Json::Object(map), None) => map.retain(|k, v| match self.children.get(k) {
                Some(sub) => {
                    sub.prune(v);
                    true
                }
                None => false,
            }),
            // An iterated map (whose keys are what is iterated), a list nothing iterates, and
            // scalars are kept as they are.
            _ => {}
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

    /// A list that is iterated keeps of each element what `each` reads; an iterated map is
    /// kept whole; `covers` compares what each tree keeps of elements.
    #[test]
    fn iterated_lists_are_cut_element_by_element() {
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let each = |fields: &[&[&str]]| {
            let mut t = FieldTree::of(&[&["metadata", "name"]]);
            t.insert_each(&path(&["status", "conditions"]), &FieldTree::of(fields));
            t
        };
        let type_status = each(&[&["type"], &["status"]]);
        let text = r#"{"metadata": {"name": "a", "uid": "u"},
            "status": {"conditions": [
                {"type": "Complete", "status": "True", "reason": "Done", "message": "long"},
                "odd", 3, {"status": "False", "lastTransitionTime": "t"}],
              "succeeded": 1}}"#;
        let want = json!({"metadata": {"name": "a"}, "status": {"conditions": [
            {"type": "Complete", "status": "True"}, "odd", 3, {"status": "False"}]}});
        let mut pruned: Json = serde_json::from_str(text).unwrap();
        type_status.prune(&mut pruned);
        assert_eq!(pruned, want);
        assert_eq!(crate::json::parse_pruned(text, &type_status).unwrap(), want);

        // A map where a list was expected: it is what a comprehension iterates the keys of,
        // and is kept whole.
        let text = r#"{"metadata": {"name": "a"}, "status": {"conditions": {"k": {"x": 1}}}}"#;
        let want = json!({"metadata": {"name": "a"}, "status": {"conditions": {"k": {"x": 1}}}});
        let mut pruned: Json = serde_json::from_str(text).unwrap();
        type_status.prune(&mut pruned);
        assert_eq!(pruned, want);
        assert_eq!(crate::json::parse_pruned(text, &type_status).unwrap(), want);

        let just_type = each(&[&["type"]]);
        let type_reason = each(&[&["type"], &["reason"]]);
        let whole_list = FieldTree::of(&[&["metadata", "name"], &["status", "conditions"]]);
        let table = [
            ("more of each covers less", &type_status, &just_type, true),
            (
                "less of each does not cover more",
                &just_type,
                &type_status,
                false,
            ),
            ("other fields of each", &type_status, &type_reason, false),
            (
                "a whole list covers its elements",
                &whole_list,
                &type_status,
                true,
            ),
            (
                "elements do not cover the whole list",
                &type_status,
                &whole_list,
                false,
            ),
        ];
        for (name, a, b, want) in table {
            assert_eq!(a.covers(b), want, "{name}");
        }
    }
}
