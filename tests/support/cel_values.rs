//! CEL values as tools/k8s-cel-library and tools/cel-conformance write them (each with its CEL
//! type as the JSON key), read back into the cel crate's values or into the plain JSON an object
//! holds, and an equality that keeps CEL types apart: shared by tests/cel_k8s_library.rs,
//! tests/cel_differential.rs and tests/cel_conformance.rs.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use cel::Value;
use cel::objects::{Key, Map, Opaque, OptionalValue};
use retainer::expr::{Cidr, Ip, NamedFormat, Quantity, Semver, Url};
use serde_json::Value as Json;

/// What kube-apiserver returned, in the form retainer's values are compared with.
#[derive(Debug)]
pub enum Want {
    Value(Value),
    /// An opaque value of the Kubernetes libraries, by its tag and its canonical text.
    Opaque(&'static str, String),
}

/// The tags of opaque values and how retainer writes each in the form kube-apiserver's encoder
/// does (the quantity's canonical form, the address or prefix, the URL's String(), the named
/// format's Name).
pub const OPAQUE: &[&str] = &["semver", "quantity", "ip", "cidr", "url", "format"];

pub fn opaque_text(v: &Value) -> Option<(&'static str, String)> {
    let Value::Opaque(o) = v else { return None };
    if let Some(s) = o.downcast_ref::<Semver>() {
        return Some(("semver", s.0.to_string()));
    }
    if let Some(q) = o.downcast_ref::<Quantity>() {
        return Some(("quantity", q.canonical()));
    }
    if let Some(ip) = o.downcast_ref::<Ip>() {
        return Some(("ip", ip.to_string()));
    }
    if let Some(cidr) = o.downcast_ref::<Cidr>() {
        return Some(("cidr", cidr.to_string()));
    }
    if let Some(url) = o.downcast_ref::<Url>() {
        return Some(("url", url.to_string()));
    }
    if let Some(format) = o.downcast_ref::<NamedFormat>() {
        return Some(("format", format.name().to_string()));
    }
    None
}

/// A library value Kubernetes returned inside a list, a map or an optional, by its tag and
/// text as `opaque_text` writes retainer's.
#[derive(Debug, PartialEq, Eq)]
struct OpaqueText(&'static str, String);

impl Opaque for OpaqueText {
    fn runtime_type_name(&self) -> &str {
        "test.OpaqueText"
    }
}

pub fn expected(j: &Json) -> Result<Want, String> {
    let obj = j
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or_else(|| format!("not a typed value: {j}"))?;
    let (tag, v) = obj.iter().next().ok_or("empty typed value")?;
    if let Some(tag) = OPAQUE.iter().find(|t| **t == tag) {
        return Ok(Want::Opaque(tag, v.as_str().ok_or(*tag)?.to_string()));
    }
    Ok(Want::Value(to_value(j)?))
}

pub fn to_value(j: &Json) -> Result<Value, String> {
    let obj = j
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or_else(|| format!("not a typed value: {j}"))?;
    let (tag, v) = obj.iter().next().ok_or("empty typed value")?;
    if let Some(tag) = OPAQUE.iter().find(|t| **t == tag) {
        let text = v.as_str().ok_or(*tag)?.to_string();
        return Ok(Value::Opaque(Arc::new(OpaqueText(tag, text))));
    }
    Ok(match tag.as_str() {
        // The cel crate hands a type value out as its name (`type(x)` is a string once it
        // leaves the interpreter), so the name is what can be compared; that it is a type, not
        // a string, the type checker sees to (`type(x) == 'int'` does not compile).
        "type" => Value::String(Arc::new(v.as_str().ok_or("type")?.to_string())),
        "null" => Value::Null,
        "bool" => Value::Bool(v.as_bool().ok_or("bool")?),
        "int" => Value::Int(v.as_i64().ok_or("int")?),
        "uint" => Value::UInt(v.as_u64().ok_or("uint")?),
        "double" => Value::Float(match v.as_str().ok_or("double")? {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            // Rust's parser rounds correctly, as Go's that wrote the text does.
            other => other.parse().map_err(|e| format!("double {other}: {e}"))?,
        }),
        "string" => Value::String(Arc::new(v.as_str().ok_or("string")?.to_string())),
        "bytes" => Value::Bytes(Arc::new(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().ok_or("bytes")?)
                .map_err(|e| e.to_string())?,
        )),
        "timestamp" => Value::Timestamp(
            chrono::DateTime::parse_from_rfc3339(v.as_str().ok_or("timestamp")?)
                .map_err(|e| e.to_string())?,
        ),
        "duration" => {
            let secs = v["seconds"].as_i64().ok_or("duration seconds")?;
            let nanos = v["nanos"].as_i64().ok_or("duration nanos")?;
            Value::Duration(chrono::Duration::seconds(secs) + chrono::Duration::nanoseconds(nanos))
        }
        "list" => Value::List(Arc::new(
            v.as_array()
                .ok_or("list")?
                .iter()
                .map(to_value)
                .collect::<Result<_, _>>()?,
        )),
        // Entries as [key, value] pairs; an empty map is written as null.
        "map" => {
            let mut map = HashMap::new();
            for entry in v.as_array().map(Vec::as_slice).unwrap_or_default() {
                let key = match to_value(&entry[0])? {
                    Value::String(s) => Key::String(s),
                    Value::Int(i) => Key::Int(i),
                    Value::UInt(u) => Key::Uint(u),
                    Value::Bool(b) => Key::Bool(b),
                    other => return Err(format!("map key {other:?}")),
                };
                map.insert(key, to_value(&entry[1])?);
            }
            Value::Map(Map { map: Arc::new(map) })
        }
        "optional" => Value::Opaque(Arc::new(if v.is_null() {
            OptionalValue::none()
        } else {
            OptionalValue::of(to_value(v)?)
        })),
        other => return Err(format!("no comparison for {other} values")),
    })
}

/// The typed value as the plain JSON an object holds, when JSON can say it without losing its
/// CEL type: ints, finite doubles, strings, bools, null, and lists and string-keyed maps of
/// those.
pub fn plain_json(j: &Json) -> Option<Json> {
    let (tag, v) = j.as_object().filter(|o| o.len() == 1)?.iter().next()?;
    Some(match tag.as_str() {
        "null" => Json::Null,
        "bool" | "string" => v.clone(),
        "int" => Json::from(v.as_i64()?),
        // serde_json keeps 1.0 a float, as it does when it parses an object's text.
        "double" => Json::from(serde_json::Number::from_f64(v.as_str()?.parse().ok()?)?),
        "list" => Json::Array(
            v.as_array()?
                .iter()
                .map(plain_json)
                .collect::<Option<_>>()?,
        ),
        // An empty map is written as null.
        "map" => Json::Object(
            v.as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|e| {
                    let key = e[0].get("string")?.as_str()?.to_string();
                    Some((key, plain_json(&e[1])?))
                })
                .collect::<Option<_>>()?,
        ),
        _ => return None,
    })
}

/// Equality that keeps CEL types apart: `1 == 1.0` is true in CEL, but a library returning a
/// double where Kubernetes returns an int is a difference.
pub fn same(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Float(a), Value::Float(b)) => (a.is_nan() && b.is_nan()) || a == b,
        (Value::List(a), Value::List(b)) => {
            a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| same(x, y))
        }
        (Value::Null, Value::Null) => true,
        (Value::Map(a), Value::Map(b)) => {
            a.map.len() == b.map.len()
                && a.map
                    .iter()
                    .all(|(k, x)| b.map.get(k).is_some_and(|y| same(x, y)))
        }
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Int(a), Value::Int(b)) => a == b,
        (Value::UInt(a), Value::UInt(b)) => a == b,
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Bytes(a), Value::Bytes(b)) => a == b,
        (Value::Timestamp(a), Value::Timestamp(b)) => a == b,
        (Value::Duration(a), Value::Duration(b)) => a == b,
        (Value::Opaque(a), Value::Opaque(b)) => {
            if let Some(OpaqueText(tag, text)) = a.downcast_ref::<OpaqueText>() {
                return opaque_text(got).is_some_and(|(t, s)| t == *tag && s == *text);
            }
            match (
                a.downcast_ref::<OptionalValue>(),
                b.downcast_ref::<OptionalValue>(),
            ) {
                (Some(a), Some(b)) => match (a.value(), b.value()) {
                    (Some(x), Some(y)) => same(x, y),
                    (None, None) => true,
                    _ => false,
                },
                // Two of retainer's own library values (folded against unfolded).
                _ => opaque_text(want).is_some_and(|w| opaque_text(got) == Some(w)),
            }
        }
        _ => false,
    }
}
