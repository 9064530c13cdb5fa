//! Error texts that depend only on the error: the `cel` crate prints the values in an error with
//! `Debug`, which walks a map in hash order and prints a whole object when one is involved. A
//! policy's status would then change between evaluations of the same inputs, and be rewritten
//! each time. Here every value is printed short, with map keys in order.

use std::fmt::Write;

use cel::objects::Key;
use cel::{ExecutionError, Value};

use super::type_name;

/// Longest text of one value in a message; longer ones end in `…`.
const MAX_VALUE: usize = 80;
/// Elements of a list or entries of a map printed before `…`.
const MAX_ITEMS: usize = 5;

pub fn error_message(e: &ExecutionError) -> String {
    match e {
        ExecutionError::UnsupportedTargetType { target } => {
            format!("invalid argument type: {}", show(target))
        }
        ExecutionError::NotSupportedAsMethod { method, target } => {
            format!(
                "method '{method}' not supported on type '{}'",
                type_name(target)
            )
        }
        ExecutionError::UnsupportedKeyType(v) => {
            format!("unable to use value {} as a key", show(v))
        }
        ExecutionError::ValuesNotComparable(a, b) => {
            format!("{} can not be compared to {}", show(a), show(b))
        }
        ExecutionError::UnsupportedBinaryOperator(op, a, b) => {
            format!(
                "unsupported binary operator '{op}': {}, {}",
                show(a),
                show(b)
            )
        }
        ExecutionError::UnsupportedIndex(i, v) => {
            format!("cannot use value {} to index {}", show(i), show(v))
        }
        ExecutionError::DivisionByZero(v) => format!("division by zero of {}", show(v)),
        ExecutionError::RemainderByZero(v) => format!("remainder by zero of {}", show(v)),
        ExecutionError::Overflow(op, a, b) => {
            format!(
                "overflow from binary operator '{op}': {}, {}",
                show(a),
                show(b)
            )
        }
        ExecutionError::IndexOutOfBounds(v) => format!("index out of bounds: {}", show(v)),
        ExecutionError::DuplicateKey(v) => format!("repeated key: {}", show(v)),
        #[allow(deprecated)]
        ExecutionError::UnsupportedUnaryOperator(op, v) => {
            format!("unsupported unary operator '{op}': {}", show(v))
        }
        #[allow(deprecated)]
        ExecutionError::UnsupportedMapIndex(v) => {
            format!("cannot use value as map index: {}", show(v))
        }
        #[allow(deprecated)]
        ExecutionError::UnsupportedListIndex(v) => {
            format!("cannot use value as list index: {}", show(v))
        }
        // The other variants print names and types only.
        other => other.to_string(),
    }
}

/// A value as CEL would write it, short and in a fixed order.
pub fn show(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v, 0);
    if out.chars().count() > MAX_VALUE {
        out = out.chars().take(MAX_VALUE - 1).collect();
        out.push('…');
    }
    out
}

fn write_value(out: &mut String, v: &Value, depth: usize) {
    // Written into a String, which cannot fail.
    let _ = match v {
        Value::Int(i) => write!(out, "{i}"),
        Value::UInt(u) => write!(out, "{u}u"),
        Value::Float(f) => write!(out, "{f:?}"),
        Value::String(s) => write!(out, "{:?}", short(s)),
        Value::Bytes(b) => write!(out, "b{:?}", short(&String::from_utf8_lossy(b))),
        Value::Bool(b) => write!(out, "{b}"),
        Value::Null => write!(out, "null"),
        Value::Duration(d) => write!(out, "duration('{}s')", d.num_seconds()),
        Value::Timestamp(t) => write!(out, "timestamp('{}')", t.to_rfc3339()),
        Value::List(items) if depth > 1 => write!(out, "[…{} items]", items.len()),
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().take(MAX_ITEMS).enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item, depth + 1);
            }
            if items.len() > MAX_ITEMS {
                out.push_str(", …");
            }
            out.push(']');
            Ok(())
        }
        Value::Map(m) if depth > 1 => write!(out, "{{…{} entries}}", m.map.len()),
        Value::Map(m) => {
            let mut entries: Vec<(String, &Value)> =
                m.map.iter().map(|(k, v)| (show_key(k), v)).collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            out.push('{');
            for (i, (k, v)) in entries.iter().take(MAX_ITEMS).enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(k);
                out.push_str(": ");
                write_value(out, v, depth + 1);
            }
            if entries.len() > MAX_ITEMS {
                out.push_str(", …");
            }
            out.push('}');
            Ok(())
        }
        other => write!(out, "<{}>", type_name(other)),
    };
}

fn show_key(k: &Key) -> String {
    match k {
        Key::Int(i) => i.to_string(),
        Key::Uint(u) => format!("{u}u"),
        Key::Bool(b) => b.to_string(),
        Key::String(s) => format!("{:?}", short(s)),
    }
}

fn short(s: &str) -> String {
    if s.chars().count() > MAX_VALUE {
        let mut t: String = s.chars().take(MAX_VALUE - 1).collect();
        t.push('…');
        t
    } else {
        s.to_string()
    }
}
