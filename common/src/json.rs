//! Strict JSON for webhook bodies: an object whose keys each appear once.
//!
//! serde_json's `Value` keeps the last of two equal keys, so `{"quantity": 0.001,
//! "quantity": 5}` would trade 5, and two `apiKey`s (a wrong one, then the right one)
//! would authenticate whoever guessed the second. A body that says one thing twice is
//! refused instead, at every depth, naming the key. Nesting is bounded by serde_json's
//! own recursion limit (128), which applies to the key check as to `Value`.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Why a body is not a strict JSON object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// A key appears twice in one object; the dotted path names it (`quantity`, `a.b`).
    #[error("duplicate field: {0}")]
    DuplicateKey(String),
    /// Valid JSON, but not an object.
    #[error("expected an object, got {0}")]
    NotAnObject(&'static str),
    /// Not JSON at all.
    #[error("{0}")]
    Syntax(String),
}

/// Parses `bytes` as one JSON object, refusing a repeated key at any depth.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ObjectError> {
    check_unique_keys(bytes)?;
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(ObjectError::NotAnObject(match other {
            Value::Array(_) => "an array",
            Value::String(_) => "a string",
            Value::Number(_) => "a number",
            Value::Bool(_) => "a boolean",
            _ => "null",
        })),
        Err(err) => Err(ObjectError::Syntax(err.to_string())),
    }
}

/// A first pass over the document that keeps nothing but each object's keys, so that
/// `Value` (second pass) builds numbers from their source text as it always does.
fn check_unique_keys(bytes: &[u8]) -> Result<(), ObjectError> {
    let duplicate = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let checked = UniqueKeys {
        path: "",
        duplicate: &duplicate,
    }
    .deserialize(&mut deserializer)
    .and_then(|()| deserializer.end());
    match (checked, duplicate.into_inner()) {
        (_, Some(path)) => Err(ObjectError::DuplicateKey(path)),
        (Err(err), None) => Err(ObjectError::Syntax(err.to_string())),
        (Ok(()), None) => Ok(()),
    }
}

/// Walks any value; records the first repeated key's dotted path in `duplicate`.
#[derive(Clone, Copy)]
struct UniqueKeys<'a> {
    path: &'a str,
    duplicate: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for UniqueKeys<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueKeys<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
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

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // A number reaches here too, as serde_json's one-entry `arbitrary_precision`
        // map: one key cannot repeat, so it needs no special case.
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            if !seen.insert(key) {
                self.duplicate.borrow_mut().get_or_insert(path.clone());
                return Err(de::Error::custom(format!("duplicate field: {path}")));
            }
            map.next_value_seed(UniqueKeys {
                path: &path,
                duplicate: self.duplicate,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_parses_like_serde_json_value() {
        let body = br#"{"quantity": 0.0050, "nested": {"a": [1, {"b": null}]}, "s": "x"}"#;
        let strict = parse_object(body).unwrap();
        let lax: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(Value::Object(strict.clone()), lax);
        assert_eq!(strict["quantity"].to_string(), "0.0050");
    }

    #[test]
    fn a_repeated_key_is_refused_by_its_path() {
        let cases: [(&[u8], &str); 4] = [
            (br#"{"quantity": 0.001, "quantity": 5}"#, "quantity"),
            (
                br#"{"apiKey": "wrong", "x": 1, "apiKey": "right"}"#,
                "apiKey",
            ),
            (br#"{"a": {"b": 1, "b": 2}}"#, "a.b"),
            (br#"{"a": [{"c": 1, "c": 1}]}"#, "a.c"),
        ];
        for (body, path) in cases {
            assert_eq!(
                parse_object(body),
                Err(ObjectError::DuplicateKey(path.to_owned())),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn non_objects_and_broken_json_are_refused() {
        assert_eq!(
            parse_object(b"[1]"),
            Err(ObjectError::NotAnObject("an array"))
        );
        assert_eq!(parse_object(b"null"), Err(ObjectError::NotAnObject("null")));
        for bad in [
            &b""[..],
            b"{",
            b"{\"a\":1}}",
            b"\xEF\xBB\xBF{}",
            b"{\"a\":\"\xff\"}",
        ] {
            assert!(matches!(parse_object(bad), Err(ObjectError::Syntax(_))));
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            parse_object(deep.as_bytes()),
            Err(ObjectError::Syntax(_))
        ));
    }
}
