//! Keeping only what a flow reads of an API response: stored conversations
//! stay small, and the parts nobody reads are never built.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::template::Segment;

/// The parts of `value` that `paths` can reach, and nothing else: what a
/// conversation keeps of an API response so its stored state stays small.
/// An empty path keeps everything below it; a filter (`[type=message]`)
/// keeps the whole array it filters. Kept parts are moved, not copied.
pub(crate) fn project(value: Value, paths: &[&[Segment]]) -> Value {
    if paths.iter().any(|p| p.is_empty()) {
        return value;
    }
    match value {
        Value::Object(mut map) => {
            let mut out = serde_json::Map::new();
            // Walk the paths, not the object: responses have many more keys
            // than a flow reads.
            for (i, path) in paths.iter().enumerate() {
                let key = &path[0].key;
                let seen = paths[..i]
                    .iter()
                    .any(|p| p[0].filter.is_none() && p[0].key == *key);
                if path[0].filter.is_some() || seen {
                    continue;
                }
                let Some(item) = map.remove(key.as_str()) else {
                    continue;
                };
                let rests = below_key(paths, key);
                out.insert(key.clone(), project(item, &rests));
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            if paths.iter().any(|p| p[0].filter.is_some()) {
                return Value::Array(items);
            }
            let Some(last) = paths.iter().filter_map(|p| p[0].index).max() else {
                return Value::Array(Vec::new());
            };
            let kept = items.into_iter().take(last + 1).enumerate().map(|(i, item)| {
                let rests = below_index(paths, i);
                if rests.is_empty() {
                    Value::Null
                } else {
                    project(item, &rests)
                }
            });
            Value::Array(kept.collect())
        }
        scalar => scalar,
    }
}

/// What the (non-empty) `paths` reach below the object key `key`.
fn below_key<'p>(paths: &[&'p [Segment]], key: &str) -> Vec<&'p [Segment]> {
    paths
        .iter()
        .filter(|p| p[0].filter.is_none() && p[0].key == key)
        .map(|p| &p[1..])
        .collect()
}

/// What the (non-empty) `paths` reach below the array index `i`.
fn below_index<'p>(paths: &[&'p [Segment]], i: usize) -> Vec<&'p [Segment]> {
    paths
        .iter()
        .filter(|p| p[0].index == Some(i))
        .map(|p| &p[1..])
        .collect()
}

/// Parses `json`, building only the parts `paths` reach: the same value as
/// `project(serde_json::from_slice(json)?, paths)`, without allocating what
/// it would drop. Invalid JSON is an error, as it is for a full parse.
pub(crate) fn parse_projected(json: &[u8], paths: &[&[Segment]]) -> serde_json::Result<Value> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let value = Projected(paths).deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// A value seen through the paths that reach into it.
struct Projected<'p>(&'p [&'p [Segment]]);

impl<'de> DeserializeSeed<'de> for Projected<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        if self.0.iter().any(|p| p.is_empty()) {
            return Value::deserialize(deserializer);
        }
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Projected<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key_seed(Key)? {
            let rests = below_key(self.0, &key);
            if rests.is_empty() {
                map.next_value::<IgnoredAny>()?;
            } else {
                let value = map.next_value_seed(Projected(&rests))?;
                out.insert(key.into_owned(), value);
            }
        }
        Ok(Value::Object(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        // A filter picks an element by content: keep them all.
        if self.0.iter().any(|p| p[0].filter.is_some()) {
            while let Some(item) = seq.next_element::<Value>()? {
                items.push(item);
            }
            return Ok(Value::Array(items));
        }
        let last = self.0.iter().filter_map(|p| p[0].index).max();
        for i in 0.. {
            let rests = below_index(self.0, i);
            let item = if rests.is_empty() {
                seq.next_element::<IgnoredAny>()?.map(|_| Value::Null)
            } else {
                seq.next_element_seed(Projected(&rests))?
            };
            match item {
                Some(item) if last.is_some_and(|last| i <= last) => items.push(item),
                Some(_) => {}
                None => break,
            }
        }
        Ok(Value::Array(items))
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Template;
    use serde_json::json;

    #[test]
    fn projection_keeps_only_reachable_parts() {
        let names: &[&str] = &["S"];
        let parse = |t: &str| Template::parse(t, names).unwrap();
        let templates = [
            parse("<<step.S.response.data.1.role>>"),
            parse("<<step.S.response.id>>"),
            parse("<<step.S.response.output[type=message].text>>"),
        ];
        let paths: Vec<&[Segment]> = templates
            .iter()
            .flat_map(|t| t.paths())
            .map(|p| p.segments.as_slice())
            .collect();
        let value = json!({
            "status": 200,
            "response": {
                "id": "x", "object": "list", "big": "drop me",
                "data": [{"role": "a", "extra": 1}, {"role": "b", "extra": 2}, {"role": "c"}],
                "output": [{"type": "message", "text": "t"}, {"type": "other"}]
            }
        });
        assert_eq!(
            project(value.clone(), &paths),
            json!({"response": {
                "id": "x",
                "data": [null, {"role": "b"}],
                "output": [{"type": "message", "text": "t"}, {"type": "other"}]
            }})
        );
        // An empty path keeps everything.
        assert_eq!(project(value.clone(), &[&[]]), value);
    }

    #[test]
    fn parsing_projected_equals_projecting_the_parsed_value() {
        let names: &[&str] = &["S"];
        let documents = [
            r#"{"id": "x", "object": "list", "big": "drop me", "n": 1.5, "neg": -3,
               "data": [{"role": "a", "extra": 1}, {"role": "b", "extra": [2, {"z": null}]}, {"role": "c"}],
               "output": [{"type": "message", "text": "t"}, {"type": "other"}],
               "esc\u0061ped": "k\"ey", "data": [{"role": "dup"}]}"#,
            r#"[1, 2, {"id": 3}]"#,
            r#""just text""#,
            r#"{"data": "not an array", "id": {"nested": true}}"#,
            r#"{"data": []}"#,
        ];
        let template_sets: &[&[&str]] = &[
            &["<<step.S.response.data.1.role>>", "<<step.S.response.id>>"],
            &["<<step.S.response.output[type=message].text>>"],
            &["<<step.S.response>>"],
            &["<<step.S.response.escaped>>", "<<step.S.response.data.0>>"],
            &["<<step.S.status>>"],
        ];
        for document in documents {
            let full: Value = serde_json::from_str(document).unwrap();
            for set in template_sets {
                let templates: Vec<Template> =
                    set.iter().map(|t| Template::parse(t, names).unwrap()).collect();
                let paths: Vec<&[Segment]> = templates
                    .iter()
                    .flat_map(|t| t.paths())
                    .map(|p| &p.segments[1..])
                    .collect();
                assert_eq!(
                    parse_projected(document.as_bytes(), &paths).unwrap(),
                    project(full.clone(), &paths),
                    "{document} through {set:?}"
                );
            }
        }
        assert!(parse_projected(b"{\"a\": 1} trailing", &[]).is_err());
        assert!(parse_projected(b"{\"a\": ", &[]).is_err());
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-c\\\\\"é]{0,3}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 40, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-c]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn projected_parsing_agrees_with_projection(
            value in json_value(),
            raw_paths in proptest::collection::vec("(a|b|c)(\\.(a|b|c|0|1)|\\[type=a\\]){0,3}", 0..4),
        ) {
            let templates: Vec<Template> = raw_paths
                .iter()
                .filter_map(|p| Template::parse(&format!("<<step.S.response.{p}>>"), &["S"]).ok())
                .collect();
            proptest::prop_assert_eq!(templates.len(), raw_paths.len(), "every generated path parses");
            let paths: Vec<&[Segment]> = templates
                .iter()
                .flat_map(|t| t.paths())
                .map(|p| &p.segments[1..])
                .collect();
            let text = value.to_string();
            proptest::prop_assert_eq!(
                parse_projected(text.as_bytes(), &paths).unwrap(),
                project(value, &paths)
            );
        }
    }
}
