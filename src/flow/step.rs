//! The step types a flow is made of, as they appear in flow JSON.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::condition::Rule;
use crate::http::Method;

/// One step of a flow: a unique name, an optional explicit successor, and
/// what the step does.
///
/// In JSON the kind's fields sit beside `type`, `name` and `next`:
///
/// ```json
/// {"type": "message", "name": "Thanks", "text": "Thanks, <<contact.name>>!", "next": "Bye"}
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Unique within the flow; spaces allowed (`step.Start GPT thread` refers to it).
    pub name: String,
    /// The step to run after this one; by default the next one in the list
    /// (the end of the list ends the conversation).
    pub next: Option<String>,
    /// What the step does.
    pub kind: StepKind,
}

/// What a step does. In JSON, `type` selects the variant by its snake_case
/// name (`"contact_update"`); the PascalCase name (`"ContactUpdate"`) is accepted too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepKind {
    /// Sends a text and waits for the user's reply.
    #[serde(alias = "Question")]
    Question(Question),
    /// Sets contact attributes.
    #[serde(alias = "ContactUpdate")]
    ContactUpdate(ContactUpdate),
    /// Calls an HTTP API.
    #[serde(alias = "Api", alias = "API")]
    Api(Api),
    /// Branches on rules.
    #[serde(alias = "Condition")]
    Condition(Condition),
    /// Waits before going on.
    #[serde(alias = "Delay")]
    Delay(Delay),
    /// Jumps to another step.
    #[serde(rename = "goto", alias = "GoTo", alias = "go_to")]
    GoTo(GoTo),
    /// Sends a text.
    #[serde(alias = "Message")]
    Message(Message),
    /// Hands the conversation to a human and ends the bot's part.
    #[serde(alias = "Assign")]
    Assign(Assign),
}

impl StepKind {
    /// The `type` names a flow file may use.
    pub const TYPE_NAMES: &'static [&'static str] = &[
        "question",
        "contact_update",
        "api",
        "condition",
        "delay",
        "goto",
        "message",
        "assign",
    ];

    /// The JSON `type` of this kind.
    pub fn type_name(&self) -> &'static str {
        match self {
            StepKind::Question(_) => "question",
            StepKind::ContactUpdate(_) => "contact_update",
            StepKind::Api(_) => "api",
            StepKind::Condition(_) => "condition",
            StepKind::Delay(_) => "delay",
            StepKind::GoTo(_) => "goto",
            StepKind::Message(_) => "message",
            StepKind::Assign(_) => "assign",
        }
    }
}

/// Sends `text` and suspends until the user replies; the reply is
/// `step.<name>.response`. Replies that arrived earlier (while the bot was
/// busy) are taken at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Question {
    /// The question (a template).
    pub text: String,
    /// Choices a channel can show as buttons or a list, 1 to 10: texts, or
    /// objects with an `id`, a `title` and a `description`. The chosen
    /// option's id is `step.<name>.option`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 10))]
    pub options: Option<Vec<super::OptionSpec>>,
}

/// Sets contact attributes (`contact.<attribute>`) to templated values.
///
/// A value that is exactly one placeholder keeps the referenced JSON value
/// (a number stays a number); other strings are interpolated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactUpdate {
    /// Attribute name → value (templates inside strings).
    pub set: BTreeMap<String, Value>,
}

/// Calls an HTTP API. The result is kept as `step.<name>.status`,
/// `step.<name>.response` (the JSON body, or the text when it is not JSON)
/// and `step.<name>.headers`; on failure also `step.<name>.error`
/// (`kind`, `message`).
///
/// With `stream_until`, a `text/event-stream` answer (a run or response
/// created with `"stream": true`) becomes the JSON data of the first event
/// named there:
///
/// ```json
/// {"type": "api", "name": "Get GPT response", "method": "POST", "url": "<<var.base_url>>/responses",
///  "body": {"model": "<<var.model>>", "input": "<<contact.question>>", "stream": true},
///  "stream_until": ["response.completed", "response.failed", "response.incomplete"]}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// The method.
    #[schemars(schema_with = "super::schema::method_schema")]
    pub method: Method,
    /// The URL (a template). Only a `var.*` placeholder may start it (a base
    /// URL, inserted as it is); all other placeholders are percent-encoded.
    pub url: String,
    /// Headers (templated values; a line break or other control character
    /// in a value is refused).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// A JSON body, templated structurally: a string that is exactly one
    /// placeholder takes the referenced value; other strings are interpolated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// How long one attempt may take; default 30 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<f64>,
    /// Where to go when the call fails (transport error, or a non-2xx status
    /// once retries are spent). Without it the conversation fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<String>,
    /// Retry settings for this step; unset fields take the engine's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySettings>,
    /// The largest response body accepted; default 10 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_response_bytes: Option<usize>,
    /// Extra text for the error when the call fails with a given status
    /// (`{"404": "this API was retired; use …"}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub error_hints: BTreeMap<String, String>,
    /// The server-sent events that end the wait, by name (the `event:` field,
    /// or the data's `"type"` when there is none); in JSON one name or a
    /// list. When the answer is `text/event-stream`, the step's response is
    /// the JSON data of the first such event, and the transport may stop
    /// reading there. A stream that ends without one gives its last JSON
    /// event (a failed run's `thread.run.failed` run, say); an `error` event
    /// before one fails the step (`error.kind` `event_stream`). An answer of
    /// another type is read as usual.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "one_or_many"
    )]
    #[schemars(schema_with = "super::schema::one_or_many_schema")]
    pub stream_until: Vec<String>,
}

/// A string or a list of strings, as a list.
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let expected = "an event name or a list of them";
    match Value::deserialize(deserializer)? {
        Value::String(one) => Ok(vec![one]),
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::String(name) => Ok(name),
                other => Err(serde::de::Error::custom(format!(
                    "expected {expected}, found a list with {}",
                    json_kind(&other)
                ))),
            })
            .collect(),
        other => Err(serde::de::Error::custom(format!(
            "expected {expected}, found {}",
            json_kind(&other)
        ))),
    }
}

/// Retry settings of an Api step or of the engine; unset fields take the
/// engine's value. See [`crate::RetryPolicy`] for the meaning.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// Attempts in all, the first included (1 = no retries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// First backoff, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_backoff_seconds: Option<f64>,
    /// Largest backoff, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backoff_seconds: Option<f64>,
    /// No retry starts after this many seconds since the first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_elapsed_seconds: Option<f64>,
    /// Retry POST/PATCH even when the server may have processed the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_non_idempotent: Option<bool>,
}

/// Branches: `then` when the rules hold, `else` otherwise. Exactly one of
/// `all` (every rule holds) or `any` (at least one holds) is given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Rules that must all hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<Rule>>,
    /// Rules of which one must hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<Rule>>,
    /// Where to go when the rules hold; default: the next step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub then: Option<String>,
    /// Where to go otherwise; default: the next step.
    #[serde(default, rename = "else", skip_serializing_if = "Option::is_none")]
    pub otherwise: Option<String>,
}

/// Waits, then goes on. Messages the user sends meanwhile are queued for
/// the next Question.
///
/// `seconds` is one number, or a list that backs off: the n-th visit in a
/// user turn waits the n-th value, and the last value repeats —
/// `[0.25, 0.5, 1, 2, 4, 8]` polls soon at first, then less often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Delay {
    /// Seconds to wait (≥ 0), or a backoff list.
    pub seconds: DelaySeconds,
}

/// A Delay's wait: fixed, or a backoff list.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum DelaySeconds {
    /// The same wait every time.
    Fixed(f64),
    /// The n-th visit per user turn waits the n-th value; the last repeats.
    Backoff(Vec<f64>),
}

/// Jumps to `target`. With `max_visits`, the jump is taken at most that many
/// times per user turn; after that the conversation goes to `fallback`.
/// Visits are counted from the last reply the user gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GoTo {
    /// The step to jump to.
    pub target: String,
    /// How often the jump may be taken per user turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_visits: Option<u32>,
    /// Where to go once `max_visits` is spent (required with `max_visits`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// Sends a text to the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// The text (a template).
    pub text: String,
    /// What a WhatsApp conversation gets instead when its 24-hour window
    /// has closed (the user last wrote more than 24 hours ago, so only an
    /// approved template may be sent): the Cloud API's `template` object,
    /// `{"name", "language": {"code"}, "components"?}` (or `"language":
    /// "en_US"`), whose strings may hold placeholders. Without it such a message is refused, with that
    /// reason, and the flow goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<WhatsAppTemplateSchema>")]
    pub whatsapp_template: Option<Value>,
}

/// The shape of [`Message::whatsapp_template`] in `flow.schema.json`.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct WhatsAppTemplateSchema {
    /// The approved template's name.
    name: String,
    /// Its language.
    language: WhatsAppTemplateLanguage,
    /// Parameters for its header, body and buttons, as the Cloud API takes them.
    #[serde(default)]
    components: Option<Vec<Value>>,
}

/// A template's language: its code (`"en_US"`), or the Cloud API's
/// `{"code": "en_US"}`.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum WhatsAppTemplateLanguage {
    /// The language code, e.g. `en_US`.
    Code(String),
    /// As the Cloud API writes it.
    Object {
        /// The language code.
        code: String,
    },
}

/// Hands the conversation to a human agent or team and ends the bot's part.
/// The host receives an [`crate::Event::Handoff`] with the rendered fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Assign {
    /// The team to assign to (a template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// The agent to assign to (a template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// A note for the agent (a template), e.g. the user's last question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl<'de> Deserialize<'de> for DelaySeconds {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let expected = "a number of seconds, or a list of them";
        match Value::deserialize(deserializer)? {
            Value::Number(n) => n
                .as_f64()
                .map(DelaySeconds::Fixed)
                .ok_or_else(|| serde::de::Error::custom(format!("expected {expected}"))),
            Value::Array(items) => items
                .iter()
                .map(Value::as_f64)
                .collect::<Option<Vec<f64>>>()
                .map(DelaySeconds::Backoff)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!("expected {expected}, found a list with a non-number"))
                }),
            other => Err(serde::de::Error::custom(format!(
                "expected {expected}, found {} {other}",
                json_kind(&other)
            ))),
        }
    }
}

impl Serialize for Step {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Flat<'a> {
            name: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            next: &'a Option<String>,
            #[serde(flatten)]
            kind: &'a StepKind,
        }
        Flat {
            name: &self.name,
            next: &self.next,
            kind: &self.kind,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Step::from_value(value).map_err(|e| serde::de::Error::custom(e.message))
    }
}

/// A step that could not be read, with the field at fault when known.
pub(crate) struct StepParseError {
    pub(crate) name: Option<String>,
    pub(crate) field: Option<String>,
    pub(crate) message: String,
}

impl Step {
    /// Reads one step from its JSON object, naming the field at fault.
    pub(crate) fn from_value(value: Value) -> Result<Step, StepParseError> {
        let Value::Object(mut map) = value else {
            return Err(StepParseError {
                name: None,
                field: None,
                message: format!("a step must be a JSON object, found {}", json_kind(&value)),
            });
        };
        let fail = |name: Option<String>, field: &str, message: String| StepParseError {
            name,
            field: Some(field.to_string()),
            message,
        };
        let name = match map.remove("name") {
            Some(Value::String(name)) => name,
            Some(other) => {
                return Err(fail(
                    None,
                    "name",
                    format!("must be a string, found {}", json_kind(&other)),
                ));
            }
            None => return Err(fail(None, "name", "missing field `name`".into())),
        };
        let next = match map.remove("next") {
            None | Some(Value::Null) => None,
            Some(Value::String(next)) => Some(next),
            Some(other) => {
                return Err(fail(
                    Some(name),
                    "next",
                    format!("must be a step name, found {}", json_kind(&other)),
                ));
            }
        };
        let type_name = match map.remove("type") {
            Some(Value::String(t)) => t,
            Some(other) => {
                return Err(fail(
                    Some(name),
                    "type",
                    format!("must be a string, found {}", json_kind(&other)),
                ));
            }
            None => {
                return Err(fail(
                    Some(name),
                    "type",
                    format!(
                        "missing field `type` (one of {})",
                        StepKind::TYPE_NAMES.join(", ")
                    ),
                ));
            }
        };
        let rest = Value::Object(map);
        // Each kind is read as its own struct, so errors carry the field's path
        // (`seconds`, `retry.max_attempts`); an internally tagged enum loses it.
        let kind = match canonical_type(&type_name) {
            Some("question") => parse_kind(rest).map(StepKind::Question),
            Some("contact_update") => parse_kind(rest).map(StepKind::ContactUpdate),
            Some("api") => parse_kind(rest).map(StepKind::Api),
            Some("condition") => parse_kind(rest).map(StepKind::Condition),
            Some("delay") => parse_kind(rest).map(StepKind::Delay),
            Some("goto") => parse_kind(rest).map(StepKind::GoTo),
            Some("message") => parse_kind(rest).map(StepKind::Message),
            Some("assign") => parse_kind(rest).map(StepKind::Assign),
            _ => {
                return Err(fail(
                    Some(name),
                    "type",
                    format!(
                        "unknown step type `{type_name}`; expected one of {}",
                        StepKind::TYPE_NAMES.join(", ")
                    ),
                ));
            }
        };
        let kind = kind.map_err(|(field, message)| StepParseError {
            name: Some(name.clone()),
            field,
            message,
        })?;
        Ok(Step { name, next, kind })
    }
}

/// Other spellings of a `type` that are accepted: the PascalCase names
/// (flows written for Hilos' guide) and a few more, each with its snake_case name.
pub(crate) const TYPE_ALIASES: &[(&str, &str)] = &[
    ("Question", "question"),
    ("ContactUpdate", "contact_update"),
    ("Api", "api"),
    ("API", "api"),
    ("Condition", "condition"),
    ("Delay", "delay"),
    ("GoTo", "goto"),
    ("go_to", "goto"),
    ("Message", "message"),
    ("Assign", "assign"),
];

/// The snake_case type name for a `type` as written (PascalCase accepted).
fn canonical_type(t: &str) -> Option<&'static str> {
    if let Some(known) = StepKind::TYPE_NAMES.iter().find(|n| **n == t) {
        return Some(known);
    }
    TYPE_ALIASES
        .iter()
        .find(|(alias, _)| *alias == t)
        .map(|(_, canonical)| *canonical)
}

/// Reads one kind's fields, returning the path of the field at fault.
fn parse_kind<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, (Option<String>, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        // serde reports a missing field at its parent: name the field itself.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
            .map(str::to_string);
        let field = match (path.as_str(), missing) {
            (".", Some(m)) => Some(m),
            (".", None) => None,
            (p, Some(m)) => Some(format!("{p}.{m}")),
            (p, None) => Some(p.to_string()),
        };
        (field, message)
    })
}

pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
