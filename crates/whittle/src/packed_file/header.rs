//! Streaming parse of the `.whittle` JSON header with caps, so that memory stays proportional to
//! what a real header needs whatever the file holds (issue 17: a 64 MiB header parsed into a
//! `serde_json::Value` tree took 20-30x its size before any check).
//!
//! The header is read by serde visitors straight from the bytes: `architecture` into a capped
//! string, `tensors` into a capped list, every other field (config, tokenizer, bit map, ...)
//! into a `Value` whose nodes are counted against one budget for the whole header. The caps are
//! our choices, each far above what Whisper large needs (see the constants); `docs/format.md`
//! lists them.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::{keys, MAX_TENSORS};

/// Most JSON values (objects, arrays, strings, numbers, literals) in the whole header, tensor
/// table included. Whisper large's header holds about 30,000 (1,300 tensors of ~22 values,
/// config, bit map; the tokenizer is one string); 2^21 leaves room for 65,536-tensor tables
/// while a tree of that many nodes stays near 200 MB. Without it a 64 MiB header of `[0,0,...]`
/// would be 32 M values (over 1 GiB as a tree).
pub const MAX_HEADER_VALUES: usize = 1 << 21;
/// Most top-level header fields: nine are defined (`keys`); the rest is room for additions.
pub const MAX_HEADER_FIELDS: usize = 64;
/// Longest top-level field name, in bytes.
pub const MAX_FIELD_NAME_LEN: usize = 64;
/// Longest `architecture` string, in bytes (a model family name such as `whisper`).
pub const MAX_ARCHITECTURE_LEN: usize = 64;

/// The header as parsed: the architecture, the tensor table (one small `Value` per entry, each
/// validated by the caller) and the other fields.
pub(super) struct RawHeader {
    pub architecture: String,
    pub tensors: Vec<Value>,
    /// Every field but `tensors`, `architecture` included.
    pub fields: Map<String, Value>,
}

/// Parses `json` (the header bytes); the error is a sentence for [`crate::Error::Malformed`].
pub(super) fn parse_header(json: &[u8]) -> Result<RawHeader, String> {
    let first = json.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err("header is not a JSON object".into());
    }
    let budget = Budget::default();
    let mut de = serde_json::Deserializer::from_slice(json);
    de.deserialize_map(HeaderVisitor { budget: &budget })
        .and_then(|h| de.end().map(|()| h))
        .map_err(|e| format!("header: {e}"))
}

/// Values left to build; shared by every nested visitor of one header.
struct Budget {
    left: Cell<usize>,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            left: Cell::new(MAX_HEADER_VALUES),
        }
    }
}

impl Budget {
    fn take<E: de::Error>(&self) -> Result<(), E> {
        match self.left.get().checked_sub(1) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => Err(E::custom(format!(
                "more than {MAX_HEADER_VALUES} JSON values (cap)"
            ))),
        }
    }
}

struct HeaderVisitor<'b> {
    budget: &'b Budget,
}

impl<'de> Visitor<'de> for HeaderVisitor<'_> {
    type Value = RawHeader;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHeader, A::Error> {
        let mut fields = Map::new();
        let mut architecture = None;
        let mut tensors = None;
        let mut count = 0usize;
        while let Some(key) = map.next_key_seed(CappedString {
            max: MAX_FIELD_NAME_LEN,
            what: "field name",
        })? {
            count += 1;
            if count > MAX_HEADER_FIELDS {
                return Err(de::Error::custom(format!(
                    "more than {MAX_HEADER_FIELDS} fields (cap)"
                )));
            }
            let duplicate = || de::Error::custom(format!("field `{key}` appears twice"));
            if key == keys::TENSORS {
                if tensors.is_some() {
                    return Err(duplicate());
                }
                tensors = Some(map.next_value_seed(TensorTable {
                    budget: self.budget,
                })?);
                continue;
            }
            if fields.contains_key(&key) {
                return Err(duplicate());
            }
            let value = if key == keys::ARCHITECTURE {
                let name = map
                    .next_value_seed(CappedString {
                        max: MAX_ARCHITECTURE_LEN,
                        what: "`architecture`",
                    })
                    .map_err(|e| {
                        de::Error::custom(format!("`architecture` must be a short string: {e}"))
                    })?;
                architecture = Some(name.clone());
                Value::String(name)
            } else {
                map.next_value_seed(BoundedValue {
                    budget: self.budget,
                })?
            };
            fields.insert(key, value);
        }
        let architecture =
            architecture.ok_or_else(|| de::Error::custom("no string `architecture`"))?;
        let tensors = tensors.ok_or_else(|| de::Error::custom("no `tensors` array"))?;
        Ok(RawHeader {
            architecture,
            tensors,
            fields,
        })
    }
}

/// A string of at most `max` bytes, refused before it is copied.
struct CappedString {
    max: usize,
    what: &'static str,
}

impl<'de> DeserializeSeed<'de> for CappedString {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for CappedString {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a string of at most {} bytes", self.max)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        if v.len() > self.max {
            return Err(E::custom(format!(
                "{} is {} bytes, above the cap of {}",
                self.what,
                v.len(),
                self.max
            )));
        }
        Ok(v.to_string())
    }
}

/// The `tensors` array: at most [`MAX_TENSORS`] entries, each a bounded `Value` (the caller
/// validates each into a typed entry and names it in errors).
struct TensorTable<'b> {
    budget: &'b Budget,
}

impl<'de> DeserializeSeed<'de> for TensorTable<'_> {
    type Value = Vec<Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for TensorTable<'_> {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the `tensors` array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = seq.next_element_seed(BoundedValue {
            budget: self.budget,
        })? {
            if entries.len() == MAX_TENSORS {
                return Err(de::Error::custom(format!(
                    "`tensors`: more than {MAX_TENSORS} tensors (cap)"
                )));
            }
            entries.push(entry);
        }
        Ok(entries)
    }
}

/// Any JSON value, each node counted against the header's [`Budget`]. Nesting depth is bounded
/// by serde_json's recursion limit (128).
struct BoundedValue<'b> {
    budget: &'b Budget,
}

impl<'de> DeserializeSeed<'de> for BoundedValue<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BoundedValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.budget.take()?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.budget.take()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(BoundedValue {
            budget: self.budget,
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.budget.take()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // The key and its value count as one more node each.
            self.budget.take()?;
            let value = map.next_value_seed(BoundedValue {
                budget: self.budget,
            })?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_header_keeps_its_fields() {
        let h = parse_header(
            br#"{"architecture":"whisper","config":{"d":[1,2.5,null,true]},"tensors":[{"name":"a"}]}"#,
        )
        .unwrap();
        assert_eq!(h.architecture, "whisper");
        assert_eq!(h.tensors, vec![serde_json::json!({"name": "a"})]);
        assert_eq!(
            h.fields["config"],
            serde_json::json!({"d": [1, 2.5, null, true]})
        );
        assert!(!h.fields.contains_key("tensors"));
    }

    #[test]
    fn caps_and_duplicates_are_refused() {
        let refused = |json: String, expect: &str| {
            let err = parse_header(json.as_bytes()).err().unwrap();
            assert!(err.contains(expect), "expected `{expect}` in: {err}");
        };
        let many = vec!["0"; MAX_HEADER_VALUES + 1].join(",");
        refused(
            format!(r#"{{"architecture":"w","tensors":[],"extra":[{many}]}}"#),
            "JSON values (cap)",
        );
        let long = "x".repeat(MAX_ARCHITECTURE_LEN + 1);
        refused(
            format!(r#"{{"architecture":"{long}","tensors":[]}}"#),
            "architecture",
        );
        let fields: String = (0..MAX_HEADER_FIELDS)
            .map(|i| format!(r#""f{i}":0,"#))
            .collect();
        refused(
            format!(r#"{{{fields}"architecture":"w","tensors":[]}}"#),
            "fields (cap)",
        );
        refused(
            r#"{"architecture":"w","tensors":[],"tensors":[]}"#.into(),
            "appears twice",
        );
        refused(
            r#"{"architecture":"w","config":1,"config":2,"tensors":[]}"#.into(),
            "appears twice",
        );
        refused(r#"{"tensors":[]}"#.into(), "architecture");
        refused(r#"{"architecture":"w"}"#.into(), "tensors");
        refused(r#"{"architecture":"w","tensors":[]} x"#.into(), "trailing");
    }
}
