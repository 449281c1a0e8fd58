//! Stamping a relayed event without parsing it into a tree.
//!
//! Every accepted `claude_event` is relayed and kept as one JSON object: the
//! client's object with `server_id`, `received_at` and `event_id` set (in
//! place where the client sent one of them, else appended in that order), or
//! any other payload wrapped as `{"data": payload, ...}`. Parsing a payload
//! into `serde_json::Value` to do that costs many times its size (a 1 MB
//! `[0,0,...]` about 34 MB, if only for the moment of stamping); here the
//! payload is checked by serde_json (exactly what parsing it into a `Value`
//! accepts: syntax, string escapes, number range, nesting depth) without
//! building anything, and the stamp is spliced into its text. The result
//! parses to the same `Value` the tree path built (the property test in
//! tests/prop_stamp.rs); its bytes are the client's, whitespace and escapes
//! as sent, plus the stamp.
//!
//! Not here: the clock and the offset (the hub passes them in).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// The stamp's keys, in the order they are appended.
pub const STAMP_KEYS: [&str; 3] = ["server_id", "received_at", "event_id"];

/// A payload checked as JSON, with what splicing the stamp needs to know.
#[derive(Debug)]
pub struct Payload<'a> {
    /// The payload's text, without surrounding whitespace.
    text: &'a str,
    shape: Shape,
}

#[derive(Debug)]
enum Shape {
    /// An object: whether it has any key, and the byte ranges (in `text`) of
    /// the values of its top-level stamp keys, to overwrite in place.
    Object {
        empty: bool,
        stamped: Vec<(usize, std::ops::Range<usize>)>,
    },
    /// Anything else: wrapped as `data`.
    Other,
}

/// What the stamp says.
#[derive(Clone, Copy, Debug)]
pub struct Stamp<'a> {
    pub server_id: &'a str,
    /// ISO 8601.
    pub received_at: &'a str,
    pub event_id: &'a str,
}

impl Stamp<'_> {
    fn values(&self) -> [&str; 3] {
        [self.server_id, self.received_at, self.event_id]
    }
}

impl<'a> Payload<'a> {
    /// Checks `text` as one JSON value (the errors serde_json gives when
    /// parsing it into a `Value`).
    pub fn check(text: &'a str) -> Result<Payload<'a>, serde_json::Error> {
        let mut checker = serde_json::Deserializer::from_str(text);
        Valid.deserialize(&mut checker)?;
        checker.end()?;
        let text = text.trim_matches(is_json_whitespace);
        let mut reader = serde_json::Deserializer::from_str(text);
        let shape = (&mut reader).deserialize_any(ShapeVisitor { text })?;
        Ok(Payload { text, shape })
    }

    /// Checks `bytes` as one JSON value in UTF-8.
    pub fn check_bytes(bytes: &'a [u8]) -> Result<Payload<'a>, serde_json::Error> {
        // serde_json's own check first, so that its error (and position) is
        // the one a `Value` parse gives; a checked text is UTF-8.
        let mut checker = serde_json::Deserializer::from_slice(bytes);
        Valid.deserialize(&mut checker)?;
        checker.end()?;
        let text = std::str::from_utf8(bytes).map_err(de::Error::custom)?;
        Payload::check(text)
    }

    /// The stamped event's JSON text.
    pub fn stamp(&self, stamp: &Stamp<'_>) -> String {
        let values = stamp.values().map(json_string);
        let extra: usize = values.iter().map(|v| v.len() + 16).sum();
        let mut out = String::with_capacity(self.text.len() + extra + 12);
        match &self.shape {
            Shape::Other => {
                out.push_str("{\"data\":");
                out.push_str(self.text);
                for (key, value) in STAMP_KEYS.iter().zip(&values) {
                    push_member(&mut out, key, value);
                }
                out.push('}');
            }
            Shape::Object { empty, stamped } => {
                // Drop the closing brace; overwrite the stamp keys' values.
                let body = &self.text[..self.text.len() - 1];
                let mut at = 0;
                for (key, range) in stamped {
                    out.push_str(&body[at..range.start]);
                    out.push_str(&values[*key]);
                    at = range.end;
                }
                out.push_str(&body[at..]);
                let mut first = *empty;
                for (index, (key, value)) in STAMP_KEYS.iter().zip(&values).enumerate() {
                    if stamped.iter().any(|(k, _)| *k == index) {
                        continue;
                    }
                    if first {
                        out.push('"');
                        out.push_str(key);
                        out.push_str("\":");
                        out.push_str(value);
                        first = false;
                    } else {
                        push_member(&mut out, key, value);
                    }
                }
                out.push('}');
            }
        }
        out
    }
}

fn push_member(out: &mut String, key: &str, value: &str) {
    out.push_str(",\"");
    out.push_str(key);
    out.push_str("\":");
    out.push_str(value);
}

fn json_string(text: &str) -> String {
    // Serialising a string cannot fail.
    serde_json::to_string(text).unwrap_or_else(|_| String::from("\"\""))
}

fn is_json_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// Accepts exactly the JSON a `serde_json::Value` accepts, keeping nothing.
struct Valid;

impl<'de> DeserializeSeed<'de> for Valid {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(Valid)
    }
}

impl<'de> de::Deserialize<'de> for Valid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Valid, D::Error> {
        deserializer.deserialize_any(Valid).map(|()| Valid)
    }
}

impl<'de> Visitor<'de> for Valid {
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
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(Valid)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<Valid>()?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key::<IgnoredKey>()?.is_some() {
            map.next_value::<Valid>()?;
        }
        Ok(())
    }
}

/// A map key, checked (its escapes decoded) and dropped.
struct IgnoredKey;

impl<'de> de::Deserialize<'de> for IgnoredKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<IgnoredKey, D::Error> {
        deserializer.deserialize_str(Valid).map(|()| IgnoredKey)
    }
}

/// Which stamp key a map key is, if any.
struct StampKey(Option<usize>);

impl<'de> de::Deserialize<'de> for StampKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StampKey, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = StampKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E>(self, key: &str) -> Result<StampKey, E> {
                Ok(StampKey(STAMP_KEYS.iter().position(|k| *k == key)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Reads an already checked payload's top level: an object's stamp keys
/// and where their values lie, or that it is not an object.
struct ShapeVisitor<'a> {
    text: &'a str,
}

impl<'de> Visitor<'de> for ShapeVisitor<'_> {
    type Value = Shape;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_unit<E>(self) -> Result<Shape, E> {
        Ok(Shape::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Shape::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
        let base = self.text.as_ptr() as usize;
        let mut empty = true;
        let mut stamped = Vec::new();
        while let Some(StampKey(key)) = map.next_key::<StampKey>()? {
            empty = false;
            let value: &'de RawValue = map.next_value()?;
            if let Some(key) = key {
                // The raw value borrows from `text` (a `from_str` reader).
                let start = (value.get().as_ptr() as usize).wrapping_sub(base);
                if start > self.text.len() {
                    return Err(de::Error::custom("a value outside the payload"));
                }
                stamped.push((key, start..start + value.get().len()));
            }
        }
        Ok(Shape::Object { empty, stamped })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const STAMP: Stamp<'static> = Stamp {
        server_id: "srv",
        received_at: "1970-01-01T00:00:00.000Z",
        event_id: "0000000000000abc-1",
    };

    fn stamped(text: &str) -> Value {
        serde_json::from_str(&Payload::check(text).unwrap().stamp(&STAMP)).unwrap()
    }

    #[test]
    fn an_object_gains_the_stamp_at_its_end_in_order() {
        let out = Payload::check(r#"{"type":"hook","a":1}"#)
            .unwrap()
            .stamp(&STAMP);
        assert_eq!(
            out,
            r#"{"type":"hook","a":1,"server_id":"srv","received_at":"1970-01-01T00:00:00.000Z","event_id":"0000000000000abc-1"}"#
        );
        assert_eq!(
            Payload::check(" {} ").unwrap().stamp(&STAMP),
            r#"{"server_id":"srv","received_at":"1970-01-01T00:00:00.000Z","event_id":"0000000000000abc-1"}"#
        );
    }

    #[test]
    fn a_forged_stamp_is_overwritten_in_place() {
        let out = Payload::check(r#"{"server_id":{"deep":[1]},"x":1,"event_id":"forged"}"#)
            .unwrap()
            .stamp(&STAMP);
        assert_eq!(
            out,
            r#"{"server_id":"srv","x":1,"event_id":"0000000000000abc-1","received_at":"1970-01-01T00:00:00.000Z"}"#
        );
        let escaped = stamped(r#"{"server\u005fid":"forged","x":1}"#);
        assert_eq!(escaped["server_id"], "srv");
    }

    #[test]
    fn anything_else_is_wrapped_as_data() {
        assert_eq!(stamped("[1, 2]")["data"], json!([1, 2]));
        assert_eq!(stamped("null")["data"], Value::Null);
        assert_eq!(stamped("\"x\"")["server_id"], "srv");
    }

    #[test]
    fn what_a_value_refuses_is_refused() {
        for bad in [
            "",
            "{",
            "[1,]",
            "{\"a\":1} x",
            "\"\\ud800\"",
            "1e400",
            "{\"a\":\"\\ud800\"}",
            &"[".repeat(200),
        ] {
            assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad}");
            assert!(Payload::check(bad).is_err(), "{bad}");
        }
        let deep = format!("{}{}", "[".repeat(127), "]".repeat(127));
        assert!(Payload::check(&deep).is_ok());
    }
}
