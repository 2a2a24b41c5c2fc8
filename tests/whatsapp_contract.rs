//! Every body `WhatsAppChannel` sends, checked against Meta's published
//! description of the Cloud API (`../shared/whatsapp/business-messaging-api_v23.0.yaml`,
//! beside the repository): the request schema of
//! `POST /{Version}/{Phone-Number-ID}/messages` (`Message`), validated by
//! the `jsonschema` crate (JSON Schema 2020-12, as OpenAPI 3.1 uses) with
//! every `$ref` resolved inside the document.
//!
//! One adjustment: `TextMessage` and `InteractiveMessage` are `allOf` a
//! base (`messaging_product`, `recipient_type`, `to`, …) and a part with
//! `additionalProperties: false` that lists only its own properties. Read
//! literally, JSON Schema then rejects every message (the base's
//! properties are "additional" to that part); OpenAPI tools and Meta's
//! mock read it as "no properties beyond those the whole `allOf`
//! declares", so the base's names are added to such a part (see
//! [`allow_sibling_properties`]).
//!
//! The read receipt is not a `Message` (it has no `type`): the spec gives
//! it only as the example "Send typing indicator and read receipt", and it
//! is checked against that example's fields.

use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use chatflow::channel::{Channel, Delivery, DeliveryOutcome};
use chatflow::http::{HttpClient, HttpError, HttpRequest, HttpResponse};
use chatflow::store::{Direction, TranscriptEntry};
use chatflow::whatsapp::{WhatsAppChannel, WhatsAppSettings};
use chatflow::{Clock, QuestionOption, VirtualClock};
use serde_json::{Map, Value, json};
use yaml_rust2::{Yaml, YamlLoader};

const SPEC_FILE: &str = "whatsapp/business-messaging-api_v23.0.yaml";
const OPERATION: &str = "/{Version}/{Phone-Number-ID}/messages";

/// `shared/` beside the repository (or beside the worktrees' folder).
fn spec_path() -> Option<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    [manifest.join("../shared"), manifest.join("../../shared")]
        .into_iter()
        .map(|shared| shared.join(SPEC_FILE))
        .find(|path| path.is_file())
}

/// The spec as JSON, parsed once, or `None` when it is absent outside CI
/// (the caller skips). On CI a missing spec is a failure.
fn spec(test: &str) -> Option<&'static Value> {
    static SPEC: OnceLock<Value> = OnceLock::new();
    if let Some(spec) = SPEC.get() {
        return Some(spec);
    }
    let Some(path) = spec_path() else {
        let on_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(!on_ci, "CI must have shared/{SPEC_FILE} beside the repository");
        eprintln!("skipping {test}: shared/{SPEC_FILE} not found beside the repository");
        return None;
    };
    Some(SPEC.get_or_init(|| {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut documents =
            YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
        assert_eq!(
            documents.len(),
            1,
            "{}: expected one YAML document",
            path.display()
        );
        to_json(documents.remove(0))
    }))
}

/// A YAML value as JSON.
fn to_json(yaml: Yaml) -> Value {
    match yaml {
        Yaml::Real(text) => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::String(text), Value::Number),
        Yaml::Integer(integer) => integer.into(),
        Yaml::String(text) => text.into(),
        Yaml::Boolean(boolean) => boolean.into(),
        Yaml::Array(items) => items.into_iter().map(to_json).collect(),
        Yaml::Hash(entries) => entries
            .into_iter()
            .map(|(key, value)| {
                let key = match to_json(key) {
                    Value::String(key) => key,
                    other => other.to_string(),
                };
                (key, to_json(value))
            })
            .collect(),
        Yaml::Null | Yaml::Alias(_) | Yaml::BadValue => Value::Null,
    }
}

/// The component schema names a schema refers to, transitively.
fn reachable(schemas: &Map<String, Value>, root: &str) -> BTreeSet<String> {
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, item) in map {
                    match (key.as_str(), item) {
                        ("$ref", Value::String(target)) => {
                            if let Some(name) = target.strip_prefix("#/components/schemas/") {
                                out.push(name.to_string());
                            }
                        }
                        _ => refs(item, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| refs(item, out)),
            _ => {}
        }
    }
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.to_string()];
    while let Some(name) = todo.pop() {
        if seen.insert(name.clone()) {
            let schema = schemas
                .get(&name)
                .unwrap_or_else(|| panic!("the spec has no schema {name}"));
            refs(schema, &mut todo);
        }
    }
    seen
}

/// The property names a schema declares for the object itself, through
/// `$ref`s and `allOf` parts.
fn declared(schemas: &Map<String, Value>, schema: &Value, names: &mut BTreeSet<String>, depth: usize) {
    if depth > 32 {
        return;
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        names.extend(properties.keys().cloned());
    }
    if let Some(name) = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
        && let Some(target) = schemas.get(name)
    {
        declared(schemas, target, names, depth + 1);
    }
    for part in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        declared(schemas, part, names, depth + 1);
    }
}

/// In every `allOf`, a part with `additionalProperties: false` also allows
/// the properties its sibling parts declare (see the file's docs).
fn allow_sibling_properties(schemas: &Map<String, Value>, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(parts)) = map.get("allOf") {
                let mut names = BTreeSet::new();
                for part in parts {
                    declared(schemas, part, &mut names, 0);
                }
                if let Some(Value::Array(parts)) = map.get_mut("allOf") {
                    for part in parts.iter_mut() {
                        if part.get("additionalProperties") == Some(&Value::Bool(false)) {
                            let properties = part
                                .as_object_mut()
                                .unwrap()
                                .entry("properties")
                                .or_insert_with(|| json!({}));
                            for name in &names {
                                properties
                                    .as_object_mut()
                                    .unwrap()
                                    .entry(name.clone())
                                    .or_insert(Value::Bool(true));
                            }
                        }
                    }
                }
            }
            for item in map.values_mut() {
                allow_sibling_properties(schemas, item);
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| allow_sibling_properties(schemas, item)),
        _ => {}
    }
}

/// The validator of the operation's request body (`Message`).
fn message_validator(spec: &Value) -> jsonschema::Validator {
    let operation = &spec["paths"][OPERATION]["post"];
    let body_schema = &operation["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(body_schema["$ref"], "#/components/schemas/Message");
    let schemas = spec["components"]["schemas"]
        .as_object()
        .expect("components.schemas");
    let mut kept: Map<String, Value> = reachable(schemas, "Message")
        .into_iter()
        .map(|name| {
            let schema = schemas[&name].clone();
            (name, schema)
        })
        .collect();
    let snapshot = kept.clone();
    for schema in kept.values_mut() {
        allow_sibling_properties(&snapshot, schema);
    }
    let document = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": "#/components/schemas/Message",
        "components": {"schemas": kept},
    });
    jsonschema::draft202012::new(&document)
        .unwrap_or_else(|e| panic!("the Message schema does not compile: {e}"))
}

fn violations(validator: &jsonschema::Validator, body: &Value) -> Vec<String> {
    validator
        .iter_errors(body)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// The fake Graph API: records bodies, accepts everything.
#[derive(Default)]
struct Recorder {
    bodies: Mutex<Vec<Value>>,
    script: Mutex<VecDeque<HttpResponse>>,
}

#[async_trait]
impl HttpClient for Recorder {
    async fn send(&self, request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        let body: Value = serde_json::from_slice(request.body().unwrap_or_default()).unwrap();
        self.bodies.lock().unwrap().push(body);
        Ok(self.script.lock().unwrap().pop_front().unwrap_or_else(|| {
            HttpResponse::json(
                200,
                &json!({"messaging_product": "whatsapp", "messages": [{"id": "wamid.X"}]}),
            )
        }))
    }
}

/// Every kind of body the channel produces: (what, the bodies).
async fn produced() -> Vec<(&'static str, Vec<Value>)> {
    let clock = Arc::new(VirtualClock::new());
    let now_ms = clock.now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let recorder = Arc::new(Recorder::default());
    let settings = WhatsAppSettings::new("verify", "secret", "token", "PNID");
    let channel = WhatsAppChannel::new(settings, recorder.clone()).with_clock(clock.clone());

    let mut user = TranscriptEntry::new(1, Direction::In, "hi", now_ms);
    user.message_id = Some("wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUYzMjEzNDM2RTZGQ0MzMDJBRgA=".into());
    let fresh =
        |entry: TranscriptEntry| Delivery::new("whatsapp:16505551234", entry).with_last_inbound(user.clone());
    let mut stale_user = user.clone();
    stale_user.at_ms = now_ms - Duration::from_secs(2 * 24 * 3600).as_millis() as u64;
    let stale = |entry: TranscriptEntry| {
        Delivery::new("whatsapp:16505551234", entry).with_last_inbound(stale_user.clone())
    };
    let question = |text: &str, options: Vec<QuestionOption>| {
        let mut entry = TranscriptEntry::new(5, Direction::Out, text, now_ms);
        entry.options = options;
        entry
    };

    let mut cases: Vec<(&'static str, Delivery)> = vec![
        // seq 2 follows the user's message: a read receipt goes first.
        (
            "mark-read and text",
            fresh(TranscriptEntry::new(
                2,
                Direction::Out,
                "Hello! 👋 https://example.com/a?b=c",
                now_ms,
            )),
        ),
        (
            "split text",
            fresh(TranscriptEntry::new(
                5,
                Direction::Out,
                "word ".repeat(1500),
                now_ms,
            )),
        ),
        (
            "reply buttons",
            fresh(question(
                "How can I help?",
                vec![
                    QuestionOption::new("track", "Track an order"),
                    QuestionOption::new("human", "Talk to a person"),
                    QuestionOption::new("x", "Twenty characters!!!"),
                ],
            )),
        ),
        (
            "list",
            fresh(question(
                "Pick a topic",
                (1..=10)
                    .map(|i| {
                        QuestionOption::new("i".repeat(200 - i), format!("Topic {i} {}", "t".repeat(15)))
                            .with_description("d".repeat(72))
                    })
                    .collect(),
            )),
        ),
        (
            "long question with buttons",
            fresh(question(
                &"Read this. ".repeat(200),
                vec![QuestionOption::new("ok", "OK")],
            )),
        ),
        (
            "numbered options",
            fresh(question("Pick", vec![QuestionOption::new("a", "t".repeat(30))])),
        ),
        (
            "handoff",
            fresh(TranscriptEntry::new(5, Direction::Handoff, "team", now_ms)),
        ),
    ];
    for (name, template) in [
        ("template", json!({"name": "order_update", "language": "en_US"})),
        (
            "template with components",
            json!({"name": "order_update", "language": {"code": "en_US"},
            "components": [{"type": "body", "parameters": [{"type": "text", "text": "A-1"}]}]}),
        ),
    ] {
        let mut entry = TranscriptEntry::new(5, Direction::Out, "Your order shipped", now_ms);
        entry.details = Some(json!({"whatsapp_template": template}));
        cases.push((name, stale(entry)));
    }

    let mut produced = Vec::new();
    for (name, delivery) in cases {
        let outcome = channel.deliver(&delivery).await;
        assert!(
            matches!(outcome, DeliveryOutcome::Accepted { .. }),
            "{name}: {outcome:?}"
        );
        let bodies = std::mem::take(&mut *recorder.bodies.lock().unwrap());
        produced.push((name, bodies));
    }
    produced
}

fn is_read_receipt(body: &Value) -> bool {
    body.get("status").is_some()
}

#[tokio::test]
async fn every_message_body_validates_against_metas_schema() {
    let Some(spec) = spec("every_message_body_validates_against_metas_schema") else {
        return;
    };
    let validator = message_validator(spec);
    let produced = produced().await;
    let mut checked = BTreeSet::new();
    for (name, bodies) in &produced {
        assert!(!bodies.is_empty(), "{name}: nothing sent");
        for body in bodies.iter().filter(|b| !is_read_receipt(b)) {
            let errors = violations(&validator, body);
            assert!(errors.is_empty(), "{name}: {body}\n  {}", errors.join("\n  "));
            checked.insert(body["type"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        checked,
        BTreeSet::from(["interactive".into(), "template".into(), "text".into()])
    );
    // The cases produced what they are named after.
    let kinds = |name: &str| -> Vec<String> {
        produced
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1
            .iter()
            .map(|b| {
                b.get("interactive").map_or_else(
                    || b["type"].as_str().unwrap_or("read").to_string(),
                    |i| i["type"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(kinds("mark-read and text"), ["read", "text"]);
    assert_eq!(kinds("split text"), ["text", "text"]);
    assert_eq!(kinds("reply buttons"), ["button"]);
    assert_eq!(kinds("list"), ["list"]);
    assert_eq!(kinds("long question with buttons"), ["text", "button"]);
    assert_eq!(kinds("numbered options"), ["text"]);
    assert_eq!(kinds("template with components"), ["template"]);
}

#[tokio::test]
async fn the_read_receipt_matches_the_specs_example() {
    let Some(spec) = spec("the_read_receipt_matches_the_specs_example") else {
        return;
    };
    let example = &spec["paths"][OPERATION]["post"]["requestBody"]["content"]["application/json"]["examples"]
        ["Send typing indicator and read receipt"]["value"];
    assert!(
        example.is_object(),
        "the spec no longer has the read receipt example"
    );
    let produced = produced().await;
    let receipt = produced[0]
        .1
        .iter()
        .find(|b| is_read_receipt(b))
        .expect("a read receipt");
    let receipt = receipt.as_object().unwrap();
    for (key, value) in receipt {
        let expected = example
            .get(key)
            .unwrap_or_else(|| panic!("the example has no `{key}`"));
        assert_eq!(json_type(value), json_type(expected), "{key}");
    }
    assert_eq!(receipt["messaging_product"], example["messaging_product"]);
    assert_eq!(receipt["status"], example["status"]);
    assert!(receipt.contains_key("message_id"));
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The check has teeth: bodies that break Meta's rules fail it.
#[test]
fn the_schema_check_rejects_broken_bodies() {
    let Some(spec) = spec("the_schema_check_rejects_broken_bodies") else {
        return;
    };
    let validator = message_validator(spec);
    let text = json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "1",
        "type": "text", "text": {"preview_url": false, "body": "hi"}});
    assert!(violations(&validator, &text).is_empty());
    let button = |title: &str| {
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "1",
        "type": "interactive", "interactive": {"type": "button", "body": {"text": "Pick"},
        "action": {"buttons": [{"type": "reply", "reply": {"id": "a", "title": title}}]}}})
    };
    assert!(violations(&validator, &button("Twenty characters!!!")).is_empty());

    let mut broken = Vec::new();
    let mut no_recipient_type = text.clone();
    no_recipient_type
        .as_object_mut()
        .unwrap()
        .remove("recipient_type");
    broken.push(("no recipient_type", no_recipient_type));
    let mut unknown_field = text.clone();
    unknown_field["text"]["colour"] = json!("red");
    broken.push(("unknown field in text", unknown_field));
    broken.push(("a 21-character button title", button("Twenty-one characters")));
    let mut four_buttons = button("a");
    four_buttons["interactive"]["action"]["buttons"] =
        json!([1, 2, 3, 4].map(|i| json!({"type": "reply", "reply": {"id": i.to_string(), "title": "t"}})));
    broken.push(("four buttons", four_buttons));
    let template = json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "1",
        "type": "template", "template": {"name": "n", "language": {"code": "en_US"}}});
    broken.push(("a template language without policy", template));
    for (what, body) in broken {
        assert!(!violations(&validator, &body).is_empty(), "{what} passed: {body}");
    }
}
