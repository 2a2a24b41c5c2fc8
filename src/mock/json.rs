//! Request parsing shared by the handlers: JSON bodies checked the way the
//! service checks them (unknown keys, missing keys, wrong types all answer 400
//! with `param` set), and the list query parameters with their pagination.

use serde_json::{Map, Value};

use super::error::ApiError;

/// A JSON object body.
pub(crate) type Object = Map<String, Value>;

/// The message OpenAI sends when the body is not JSON at all.
const NOT_JSON: &str = "We could not parse the JSON body of your request. (HINT: This likely \
     means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, \
     but what was sent was not valid JSON. If you have trouble figuring out how to fix this, \
     please visit https://help.openai.com/.)";

/// Parses a body that must be a JSON object; an empty body counts as `{}`.
pub(crate) fn body_object(body: &[u8]) -> Result<Object, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Object::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ApiError::invalid(
            format!(
                "Invalid type for request body: expected an object, but got {} instead.",
                type_name(&other)
            ),
            None,
            Some("invalid_type"),
        )),
        Err(_) => Err(ApiError::invalid(NOT_JSON, None, None)),
    }
}

/// "an integer", "a string", … as in the service's `invalid_type` messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a decimal",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The `param` for `key` inside `prefix` (`content[0]` + `text` → `content[0].text`).
pub(crate) fn param(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

pub(crate) fn invalid_type(param: &str, expected: &str, got: &Value) -> ApiError {
    ApiError::invalid(
        format!(
            "Invalid type for '{param}': expected {expected}, but got {} instead.",
            type_name(got)
        ),
        Some(param),
        Some("invalid_type"),
    )
}

/// 400 `missing_required_parameter`.
pub(crate) fn missing(param: &str) -> ApiError {
    ApiError::invalid(
        format!("Missing required parameter: '{param}'."),
        Some(param),
        Some("missing_required_parameter"),
    )
}

/// 400 `invalid_value` listing the accepted values.
pub(crate) fn invalid_value(param: &str, got: &str, supported: &[&str]) -> ApiError {
    let list = supported
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ");
    ApiError::invalid(
        format!("Invalid value: '{got}'. Supported values are: {list}."),
        Some(param),
        Some("invalid_value"),
    )
}

/// Rejects keys the schema does not declare (`additionalProperties: false`).
pub(crate) fn reject_unknown(obj: &Object, allowed: &[&str], prefix: &str) -> Result<(), ApiError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => {
            let p = param(prefix, key);
            Err(ApiError::invalid(
                format!("Unknown parameter: '{p}'."),
                Some(&p),
                Some("unknown_parameter"),
            ))
        }
        None => Ok(()),
    }
}

/// An optional string; `null` counts as absent.
pub(crate) fn opt_str(obj: &Object, key: &str, prefix: &str) -> Result<Option<String>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid_type(&param(prefix, key), "a string", other)),
    }
}

/// A required string.
pub(crate) fn req_str(obj: &Object, key: &str, prefix: &str) -> Result<String, ApiError> {
    opt_str(obj, key, prefix)?.ok_or_else(|| missing(&param(prefix, key)))
}

/// An optional boolean; `null` counts as absent.
pub(crate) fn opt_bool(obj: &Object, key: &str, prefix: &str) -> Result<Option<bool>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(invalid_type(&param(prefix, key), "a boolean", other)),
    }
}

/// An optional number within `min..=max`.
pub(crate) fn opt_number(obj: &Object, key: &str, min: f64, max: f64) -> Result<Option<f64>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let v = n.as_f64().unwrap_or(f64::NAN);
            if (min..=max).contains(&v) {
                Ok(Some(v))
            } else {
                Err(ApiError::invalid(
                    format!(
                        "Invalid '{key}': expected a value between {min} and {max}, but got {n} instead."
                    ),
                    Some(key),
                    Some("invalid_value"),
                ))
            }
        }
        Some(other) => Err(invalid_type(key, "a number", other)),
    }
}

/// An optional integer of at least `min`.
pub(crate) fn opt_int_min(obj: &Object, key: &str, min: i64) -> Result<Option<i64>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if v >= min => Ok(Some(v)),
            Some(v) => Err(ApiError::invalid(
                format!(
                    "Invalid '{key}': integer below minimum value. Expected a value >= {min}, but got {v} instead."
                ),
                Some(key),
                Some("integer_below_min_value"),
            )),
            None if n.is_u64() => Ok(Some(i64::MAX)),
            None => Err(invalid_type(key, "an integer", &Value::Number(n.clone()))),
        },
        Some(other) => Err(invalid_type(key, "an integer", other)),
    }
}

/// An optional array.
pub(crate) fn opt_array<'a>(
    obj: &'a Object,
    key: &str,
    prefix: &str,
) -> Result<Option<&'a Vec<Value>>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items)),
        Some(other) => Err(invalid_type(&param(prefix, key), "an array", other)),
    }
}

/// An optional object of any shape (tool resources, response formats, …).
pub(crate) fn opt_object<'a>(
    obj: &'a Object,
    key: &str,
    prefix: &str,
) -> Result<Option<&'a Object>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(other) => Err(invalid_type(&param(prefix, key), "an object", other)),
    }
}

/// `metadata`: at most 16 string values, keys up to 64 and values up to 512 characters.
pub(crate) fn metadata(obj: &Object, prefix: &str) -> Result<Object, ApiError> {
    let p = param(prefix, "metadata");
    let Some(map) = opt_object(obj, "metadata", prefix)? else {
        return Ok(Object::new());
    };
    if map.len() > 16 {
        return Err(ApiError::invalid(
            format!(
                "Invalid '{p}': too many properties. Expected an object with at most 16 properties, but got {} instead.",
                map.len()
            ),
            Some(&p),
            Some("object_above_max_properties"),
        ));
    }
    for (key, value) in map {
        let Value::String(s) = value else {
            return Err(invalid_type(&format!("{p}.{key}"), "a string", value));
        };
        if key.chars().count() > 64 || s.chars().count() > 512 {
            return Err(ApiError::invalid(
                format!("Invalid '{p}': keys are limited to 64 characters and values to 512."),
                Some(&p),
                Some("invalid_value"),
            ));
        }
    }
    Ok(map.clone())
}

/// Query parameters of the list endpoints.
#[derive(Debug, Default)]
pub(crate) struct ListParams {
    pub limit: usize,
    pub desc: bool,
    pub after: Option<String>,
    pub before: Option<String>,
    pub run_id: Option<String>,
}

impl ListParams {
    /// Parses `limit` (1..=100, default 20), `order` (default desc) and the cursors.
    pub fn parse(query: &[(String, String)]) -> Result<ListParams, ApiError> {
        let mut params = ListParams {
            limit: 20,
            desc: true,
            ..ListParams::default()
        };
        for (key, value) in query {
            match key.as_str() {
                "limit" => params.limit = parse_limit(value)?,
                "order" => {
                    params.desc = match value.as_str() {
                        "desc" => true,
                        "asc" => false,
                        other => return Err(invalid_value("order", other, &["asc", "desc"])),
                    }
                }
                "after" => params.after = Some(value.clone()),
                "before" => params.before = Some(value.clone()),
                "run_id" => params.run_id = Some(value.clone()),
                // Like the service, ignore parameters this endpoint does not know.
                _ => {}
            }
        }
        Ok(params)
    }

    /// One page of `items` (given oldest first) in the requested order, and
    /// whether more items lie beyond it.
    pub fn page<T>(&self, mut items: Vec<T>, id: impl Fn(&T) -> &str) -> (Vec<T>, bool) {
        if self.desc {
            items.reverse();
        }
        // An unknown cursor yields an empty page rather than the whole list.
        if let Some(after) = &self.after {
            let start = items.iter().position(|x| id(x) == after.as_str());
            items = match start {
                Some(i) => items.split_off(i + 1),
                None => Vec::new(),
            };
        }
        if let Some(before) = &self.before {
            let end = items.iter().position(|x| id(x) == before.as_str());
            items.truncate(end.unwrap_or(0));
            // The page just before the cursor: its last `limit` items.
            let skip = items.len().saturating_sub(self.limit);
            let has_more = skip > 0;
            return (items.split_off(skip), has_more);
        }
        let has_more = items.len() > self.limit;
        items.truncate(self.limit);
        (items, has_more)
    }
}

fn parse_limit(value: &str) -> Result<usize, ApiError> {
    let Ok(n) = value.trim().parse::<i64>() else {
        return Err(ApiError::invalid(
            format!("Invalid 'limit': expected an integer, but got '{value}' instead."),
            Some("limit"),
            Some("invalid_type"),
        ));
    };
    if n < 1 {
        return Err(ApiError::invalid(
            format!(
                "Invalid 'limit': integer below minimum value. Expected a value >= 1, but got {n} instead."
            ),
            Some("limit"),
            Some("integer_below_min_value"),
        ));
    }
    if n > 100 {
        return Err(ApiError::invalid(
            format!(
                "Invalid 'limit': integer above maximum value. Expected a value <= 100, but got {n} instead."
            ),
            Some("limit"),
            Some("integer_above_max_value"),
        ));
    }
    // 1..=100 always fits.
    Ok(usize::try_from(n).unwrap_or(100))
}

/// `{"object": "list", "data", "first_id", "last_id", "has_more"}`; ids are null for an empty page.
pub(crate) fn list_body(data: Vec<Value>, has_more: bool) -> Value {
    let first = data.first().and_then(|v| v.get("id")).cloned();
    let last = data.last().and_then(|v| v.get("id")).cloned();
    serde_json::json!({
        "object": "list",
        "data": data,
        "first_id": first,
        "last_id": last,
        "has_more": has_more,
    })
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A rough token count for `usage` (about four characters per token).
pub(crate) fn tokens(text: &str) -> u64 {
    let chars = u64::try_from(text.chars().count()).unwrap_or(u64::MAX);
    chars.div_ceil(4)
}
