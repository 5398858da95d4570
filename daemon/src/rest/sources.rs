//! The `[[name, offset, size], ...]` body of gather and defrag, parsed as Python's
//! server parses it (`json.loads`, then its source validation), and refused with the
//! same words: clients see and match them.

use borgstore_ipc::{Error, Result, Source};

/// The `[[name, offset, size], ...]` body of gather and defrag, refused with the words
/// of Python's source validation.
pub fn sources(body: &[u8]) -> Result<Vec<Source>> {
    use serde_json::Value;
    let value: Value = serde_json::from_slice(body).map_err(|e| Error::invalid(e.to_string()))?;
    let list = match value {
        Value::Array(list) => list,
        other => return Err(Error::invalid(format!("'{}' object is not iterable", py_type(&other)))),
    };
    list.iter()
        .map(|source| {
            let Some([name, offset, size]) = source.as_array().and_then(|a| <&[Value; 3]>::try_from(a.as_slice()).ok())
            else {
                return Err(Error::invalid(format!(
                    "source must be a (name, offset, size) tuple, got {}",
                    py_repr(source)
                )));
            };
            let name = name
                .as_str()
                .ok_or_else(|| Error::invalid(format!("source name must be a str, got {}", py_repr(name))))?;
            let offset = offset
                .as_i64()
                .ok_or_else(|| Error::invalid(format!("source offset must be an int, got {}", py_repr(offset))))?;
            let size = size.as_u64().ok_or_else(|| {
                Error::invalid(format!("source size must be a non-negative int, got {}", py_repr(size)))
            })?;
            Ok(Source { name: name.to_string(), offset, size })
        })
        .collect()
}

/// The name of the Python type a JSON value becomes.
fn py_type(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// A JSON value as Python's `repr` shows what `json.loads` made of it.
fn py_repr(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
            let mut out = String::from(quote);
            for c in s.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c == quote => {
                        out.push('\\');
                        out.push(c);
                    }
                    c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
                    c => out.push(c),
                }
            }
            out.push(quote);
            out
        }
        Value::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{}: {}", py_repr(&Value::String(k.clone())), py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
