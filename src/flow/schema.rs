//! `flow.schema.json`: the JSON Schema of a flow file, derived from the step
//! types with schemars so that it cannot drift from what the loader reads.
//!
//! Most of it is derived; two pieces are written here because their JSON is
//! not the plain shape of a Rust type: a step (its kind's fields sit beside
//! `name`, `next` and `type`) and the flow's `$schema` reference.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Map, Value, json};

use super::step::{
    Api, Assign, Condition, ContactUpdate, Delay, GoTo, Message, Question, Step, StepKind, TYPE_ALIASES,
};
use crate::http::Method;

/// The schema of a flow file (JSON Schema draft 7, which editors support best).
pub(crate) fn flow_schema() -> Value {
    let mut schema = schemars::generate::SchemaSettings::draft07()
        .into_generator()
        .into_root_schema_for::<super::FlowFile>()
        .to_value();
    plain_descriptions(&mut schema);
    schema
}

/// Descriptions come from doc comments; an editor shows them as text, so
/// rustdoc links (``[`Operator::Equals`]``) become plain code spans.
fn plain_descriptions(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                match item {
                    Value::String(text) if key == "description" => {
                        *text = text.replace("[`", "`").replace("`]", "`");
                    }
                    other => plain_descriptions(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(plain_descriptions),
        _ => {}
    }
}

/// Lets a flow name its schema (`"$schema": "../flow.schema.json"`), which
/// the loader accepts and drops.
pub(super) fn allow_schema_reference(schema: &mut Schema) {
    if let Some(Value::Object(properties)) = schema.get_mut("properties") {
        properties.insert(
            "$schema".into(),
            json!({
                "description": "The JSON Schema this file follows, for editors (e.g. \"../flow.schema.json\"); ignored by chatflow.",
                "type": "string"
            }),
        );
    }
}

/// The methods an Api step may use, as written in flow JSON.
pub(super) fn method_schema(_: &mut SchemaGenerator) -> Schema {
    const ALL: [Method; 6] = [
        Method::Get,
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
        Method::Head,
    ];
    // A new method fails to compile here, so ALL is revisited.
    let _ = |m: Method| match m {
        Method::Get | Method::Post | Method::Put | Method::Patch | Method::Delete | Method::Head => {}
    };
    let names: Vec<&str> = ALL.iter().map(|m| m.as_str()).collect();
    json_schema!({
        "description": "The HTTP method, in capitals.",
        "type": "string",
        "enum": names
    })
}

/// `stream_until`: one event name, or a list of them.
pub(super) fn one_or_many_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "anyOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}}
        ]
    })
}

/// The schema of one kind's fields, as an object schema.
fn kind_fields(type_name: &str, generator: &mut SchemaGenerator) -> Option<Schema> {
    Some(match type_name {
        "question" => Question::json_schema(generator),
        "contact_update" => ContactUpdate::json_schema(generator),
        "api" => Api::json_schema(generator),
        "condition" => Condition::json_schema(generator),
        "delay" => Delay::json_schema(generator),
        "goto" => GoTo::json_schema(generator),
        "message" => Message::json_schema(generator),
        "assign" => Assign::json_schema(generator),
        _ => return None,
    })
}

impl JsonSchema for Step {
    fn schema_name() -> Cow<'static, str> {
        "Step".into()
    }

    /// One branch per step type: the kind's own fields, plus `name`, `next`
    /// and `type`, and nothing else.
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let mut branches = Vec::with_capacity(StepKind::TYPE_NAMES.len());
        for type_name in StepKind::TYPE_NAMES {
            let Some(mut schema) = kind_fields(type_name, generator) else {
                continue;
            };
            let mut names = vec![Value::from(*type_name)];
            names.extend(
                TYPE_ALIASES
                    .iter()
                    .filter(|(_, canonical)| canonical == type_name)
                    .map(|(alias, _)| Value::from(*alias)),
            );
            let object = schema.ensure_object();
            let properties = object
                .entry("properties")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(properties) = properties {
                properties.insert(
                    "type".into(),
                    json!({"description": "The step type.", "enum": names}),
                );
                properties.insert(
                    "name".into(),
                    json!({
                        "description": "Unique within the flow; spaces allowed (`step.<name>.response` reads its result).",
                        "type": "string",
                        "minLength": 1
                    }),
                );
                properties.insert(
                    "next".into(),
                    json!({
                        "description": "The step to run after this one; by default the next in the list (the end of the list ends the conversation).",
                        "type": ["string", "null"]
                    }),
                );
            }
            let required = object
                .entry("required")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(required) = required {
                required.splice(0..0, [Value::from("type"), Value::from("name")]);
            }
            object.insert("title".into(), Value::from(*type_name));
            object.insert("type".into(), Value::from("object"));
            branches.push(schema.to_value());
        }
        json_schema!({
            "description": "One step: `type` and `name`, an optional `next`, and the type's own fields.",
            "oneOf": branches
        })
    }
}
