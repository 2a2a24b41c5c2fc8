//! The requests the shipped flows send, checked against OpenAI's published
//! API description (`../shared/openai/openapi.yaml`, beside the repository):
//! every request must hit an operation the spec declares, with query
//! parameters it declares and a JSON body its request schema accepts.
//!
//! The schema check is a small JSON-Schema subset (see [`Validator`]), enough
//! for the request schemas involved; keywords it does not know pass.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use chatflow::mock::{MockOpenAi, RecordedRequest, Reply, ReplyInput};
use chatflow::{Engine, EventLog, Flow, Status, VirtualClock};
use serde_json::{Value, json};
use yaml_rust2::{Yaml, YamlLoader};

const SPEC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/openai/openapi.yaml");

/// The parsed spec (about 3 MB of YAML, parsed once for all tests), or `None`
/// when the file is absent outside CI: the caller then skips. On CI a missing
/// spec is a failure.
fn spec(test: &str) -> Option<&'static Value> {
    static SPEC: OnceLock<Value> = OnceLock::new();
    if let Some(spec) = SPEC.get() {
        return Some(spec);
    }
    let text = match std::fs::read_to_string(SPEC_PATH) {
        Ok(text) => text,
        Err(error) => {
            let on_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
            assert!(
                !on_ci,
                "{SPEC_PATH}: {error}; CI must have shared/ (with openai/openapi.yaml) beside the repository"
            );
            eprintln!("skipping {test}: {SPEC_PATH} not readable ({error})");
            return None;
        }
    };
    Some(SPEC.get_or_init(|| {
        let mut documents =
            YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{SPEC_PATH} is not valid YAML: {e}"));
        assert_eq!(documents.len(), 1, "{SPEC_PATH}: expected one YAML document");
        to_json(documents.remove(0))
    }))
}

/// A YAML value as JSON. The spec's integers beyond 64 bits
/// (`minimum: -9223372036854776000`) are YAML reals here, so become floats.
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

// ---------------------------------------------------------------------------
// A JSON-Schema subset: $ref, type (+ OpenAPI's nullable), enum, const,
// required, properties, additionalProperties, items, allOf, anyOf, oneOf.

/// Validates values against the schemas of one OpenAPI document.
struct Validator<'s> {
    document: &'s Value,
}

impl<'s> Validator<'s> {
    /// Every violation, as `#/json/pointer: message`; empty when `value` is valid.
    fn validate(&self, schema: &'s Value, value: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(schema, value, "#", &BTreeSet::new(), &mut errors, 0);
        errors
    }

    fn resolve(&self, reference: &str) -> &'s Value {
        reference
            .strip_prefix('#')
            .and_then(|pointer| self.document.pointer(pointer))
            .unwrap_or_else(|| panic!("unresolvable $ref {reference}"))
    }

    /// The property names a schema declares for the object itself: its own
    /// `properties` and those of its `$ref` target and `allOf` parts. With
    /// `additionalProperties: false`, these are the allowed keys, so a part of
    /// an `allOf` does not reject the properties its sibling parts declare.
    fn declared(&self, schema: &'s Value, names: &mut BTreeSet<&'s str>, depth: usize) {
        if depth > 64 {
            return;
        }
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            names.extend(properties.keys().map(String::as_str));
        }
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            self.declared(self.resolve(reference), names, depth + 1);
        }
        for part in schema
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.declared(part, names, depth + 1);
        }
    }

    /// `inherited`: property names declared by the schemas this one is
    /// combined with for the same value (see [`Validator::declared`]).
    fn check(
        &self,
        schema: &'s Value,
        value: &Value,
        at: &str,
        inherited: &BTreeSet<&'s str>,
        errors: &mut Vec<String>,
        depth: usize,
    ) {
        let Some(keywords) = schema.as_object() else {
            if schema == &Value::Bool(false) {
                errors.push(format!("{at}: no value is allowed here"));
            }
            return;
        };
        if depth > 200 {
            errors.push(format!("{at}: schema nesting too deep (a $ref cycle?)"));
            return;
        }
        // OpenAPI 3.0's `nullable`, also where it has no sibling `type`.
        if value.is_null() && keywords.get("nullable") == Some(&Value::Bool(true)) {
            return;
        }
        let mut declared = inherited.clone();
        self.declared(schema, &mut declared, 0);

        if let Some(reference) = keywords.get("$ref").and_then(Value::as_str) {
            self.check(self.resolve(reference), value, at, &declared, errors, depth + 1);
        }
        if let Some(types) = keywords.get("type") {
            let types: Vec<&str> = match types {
                Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
                other => other.as_str().into_iter().collect(),
            };
            if !types.iter().any(|ty| type_matches(ty, value)) {
                let found = json_type(value);
                errors.push(format!("{at}: expected {}, found {found}", types.join(" or ")));
                return;
            }
        }
        if let Some(allowed) = keywords.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            errors.push(format!(
                "{at}: {value} is not one of {}",
                Value::Array(allowed.clone())
            ));
        }
        if let Some(constant) = keywords.get("const")
            && constant != value
        {
            errors.push(format!("{at}: {value} is not {constant}"));
        }
        for part in keywords
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.check(part, value, at, &declared, errors, depth + 1);
        }
        for combinator in ["anyOf", "oneOf"] {
            let Some(branches) = keywords.get(combinator).and_then(Value::as_array) else {
                continue;
            };
            // Valid if any branch validates (oneOf's exclusivity is not checked:
            // OpenAI's unions overlap, e.g. EasyInputMessage and InputMessage).
            let mut closest: Option<Vec<String>> = None;
            for branch in branches {
                let mut branch_errors = Vec::new();
                self.check(branch, value, at, &declared, &mut branch_errors, depth + 1);
                if branch_errors.is_empty() {
                    closest = None;
                    break;
                }
                if closest
                    .as_ref()
                    .is_none_or(|c| closeness(&branch_errors) > closeness(c))
                {
                    closest = Some(branch_errors);
                }
            }
            if let Some(closest) = closest {
                errors.push(format!(
                    "{at}: matches none of the {} {combinator} branches; the closest fails with: [{}]",
                    branches.len(),
                    closest.join("; ")
                ));
            }
        }
        if let Some(object) = value.as_object() {
            for name in keywords
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(name) = name.as_str().filter(|name| !object.contains_key(*name)) {
                    errors.push(format!("{at}: missing required property {name:?}"));
                }
            }
            let properties = keywords.get("properties").and_then(Value::as_object);
            let additional = keywords.get("additionalProperties");
            for (name, item) in object {
                let item_at = format!("{at}/{}", name.replace('~', "~0").replace('/', "~1"));
                if let Some(property) = properties.and_then(|p| p.get(name)) {
                    self.check(property, item, &item_at, &BTreeSet::new(), errors, depth + 1);
                } else if additional == Some(&Value::Bool(false)) {
                    if !declared.contains(name.as_str()) {
                        errors.push(format!(
                            "{at}: unknown property {name:?} (additionalProperties is false)"
                        ));
                    }
                } else if let Some(additional) = additional.filter(|a| a.is_object()) {
                    self.check(additional, item, &item_at, &BTreeSet::new(), errors, depth + 1);
                }
            }
        }
        if let (Some(array), Some(items)) = (value.as_array(), keywords.get("items")) {
            for (index, item) in array.iter().enumerate() {
                self.check(
                    items,
                    item,
                    &format!("{at}/{index}"),
                    &BTreeSet::new(),
                    errors,
                    depth + 1,
                );
            }
        }
    }
}

/// How close a failed branch came: the deepest pointer it reached into the
/// value (a branch of the wrong type fails at the top), then fewer errors.
fn closeness(errors: &[String]) -> (usize, std::cmp::Reverse<usize>) {
    let deepest = errors
        .iter()
        .map(|e| e.split(": ").next().unwrap_or("").matches('/').count())
        .max();
    (deepest.unwrap_or(0), std::cmp::Reverse(errors.len()))
}

fn type_matches(ty: &str, value: &Value) -> bool {
    match ty {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "null" => value.is_null(),
        _ => true, // not a JSON-Schema type: pass
    }
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

// ---------------------------------------------------------------------------
// Operations: a recorded request matched to the spec's path templates.

/// One operation of the spec.
struct Operation<'s> {
    /// `operationId`, or `METHOD template` when the spec gives none.
    id: String,
    template: &'s str,
    definition: &'s Value,
}

impl<'s> Operation<'s> {
    /// The operation serving `method` on `path` (`/v1/threads/thread_1/runs`).
    /// The spec's paths have no `/v1` prefix; `{name}` matches one non-empty
    /// segment, and the template with the most literal segments wins
    /// (`/threads/runs` over `/threads/{thread_id}`).
    fn find(spec: &'s Value, method: &str, path: &str) -> Option<Operation<'s>> {
        let path = path.strip_prefix("/v1")?;
        let segments: Vec<&str> = path.split('/').collect();
        let method = method.to_ascii_lowercase();
        let (template, definition, _) = spec["paths"]
            .as_object()?
            .iter()
            .filter_map(|(template, item)| {
                let parts: Vec<&str> = template.split('/').collect();
                let matches = parts.len() == segments.len()
                    && parts.iter().zip(&segments).all(|(part, segment)| {
                        part == segment
                            || (part.starts_with('{') && part.ends_with('}') && !segment.is_empty())
                    });
                let literal = parts.iter().filter(|part| !part.starts_with('{')).count();
                Some((template.as_str(), item.get(&method).filter(|_| matches)?, literal))
            })
            .max_by_key(|(_, _, literal)| *literal)?;
        let id = definition["operationId"]
            .as_str()
            .map_or_else(|| format!("{method} {template}"), str::to_owned);
        Some(Operation {
            id,
            template,
            definition,
        })
    }

    fn body_schema(&self) -> Option<&'s Value> {
        self.definition
            .pointer("/requestBody/content/application~1json/schema")
    }

    /// The schema of the query parameter `name`, if the operation declares it.
    fn query_parameter(&self, spec: &Validator<'s>, name: &str) -> Option<&'s Value> {
        let parameters = self.definition.get("parameters")?.as_array()?;
        parameters
            .iter()
            .map(|p| match p.get("$ref").and_then(Value::as_str) {
                Some(reference) => spec.resolve(reference),
                None => p,
            })
            .find(|p| p["in"] == "query" && p["name"] == name)
            .map(|p| p.get("schema").unwrap_or(&Value::Bool(true)))
    }
}

/// Every way `request` departs from the spec, as readable lines.
fn contract_errors<'s>(spec: &'s Value, request: &RecordedRequest) -> (Option<Operation<'s>>, Vec<String>) {
    let label = format!("{} {}", request.method, request.path);
    let Some(operation) = Operation::find(spec, &request.method, &request.path) else {
        return (
            None,
            vec![format!(
                "{label}: no operation in the spec serves this method and path"
            )],
        );
    };
    let validator = Validator { document: spec };
    let mut errors = Vec::new();
    for (name, value) in &request.query {
        let Some(schema) = operation.query_parameter(&validator, name) else {
            errors.push(format!(
                "{label} ({}): undeclared query parameter {name:?}",
                operation.id
            ));
            continue;
        };
        // Query values arrive as text: accept them as a string or as the JSON
        // value they spell (`limit=1` for an integer).
        let as_string = validator.validate(schema, &Value::String(value.clone()));
        let parsed = serde_json::from_str::<Value>(value).ok();
        if !as_string.is_empty()
            && parsed.is_none_or(|parsed| !validator.validate(schema, &parsed).is_empty())
        {
            for error in as_string {
                errors.push(format!("{label} ({}): query {name}: {error}", operation.id));
            }
        }
    }
    match (&request.body, operation.body_schema()) {
        (Some(body), Some(schema)) => {
            for error in validator.validate(schema, body) {
                errors.push(format!("{label} ({}): body {error}", operation.id));
            }
        }
        (Some(_), None) => errors.push(format!(
            "{label} ({}): sends a JSON body, but the operation declares no application/json request body",
            operation.id
        )),
        (None, _) if !request.body_text.is_empty() => errors.push(format!(
            "{label} ({}): the body is not JSON: {:?}",
            operation.id, request.body_text
        )),
        (None, _) => {
            if operation.definition.pointer("/requestBody/required") == Some(&Value::Bool(true)) {
                errors.push(format!(
                    "{label} ({}): the operation requires a body",
                    operation.id
                ));
            }
        }
    }
    (Some(operation), errors)
}

// ---------------------------------------------------------------------------
// The shipped flows, run against the crate's mock.

fn flow(name: &str) -> Flow {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "flows", name].iter().collect();
    Flow::from_path(path).unwrap()
}

/// Runs a whole conversation of a shipped flow against a fresh mock (question,
/// answer, second question, handoff) and returns every request it sent.
async fn conversation_requests(flow_file: &str) -> Vec<RecordedRequest> {
    let mock = MockOpenAi::builder()
        .polls_until_complete(2)
        .reply_with(|input: &ReplyInput| {
            if input.user_text.contains("human") {
                Reply::text("HANDOFF")
            } else {
                Reply::text(format!("Answer to: {}", input.user_text))
            }
        })
        .start()
        .await;
    let engine = Engine::builder(flow(flow_file))
        .shared_clock(Arc::new(VirtualClock::new()))
        .secret("OPENAI_API_KEY", mock.api_key())
        .var("openai_base_url", mock.base_url())
        .var("assistant_id", mock.assistant_id())
        .var("model", "gpt-test")
        .var("instructions", "Be brief.")
        .build()
        .unwrap();
    let events = EventLog::new();
    let mut conversation = engine.start("user-1");

    let status = engine.run(&mut conversation, &events).await.unwrap();
    assert_eq!(status, Status::AwaitingReply, "{flow_file}: welcome");
    engine.receive(&mut conversation, "Where is my order?").unwrap();
    let status = engine.run(&mut conversation, &events).await.unwrap();
    assert_eq!(status, Status::AwaitingReply, "{flow_file}: answer");
    assert_eq!(conversation.current_step(), Some("Answer"), "{flow_file}");
    engine.receive(&mut conversation, "I want a human").unwrap();
    let status = engine.run(&mut conversation, &events).await.unwrap();
    assert!(
        matches!(status, Status::HandedOff { .. }),
        "{flow_file}: {status:?}"
    );
    mock.requests()
}

#[tokio::test]
async fn the_shipped_flows_send_what_the_openapi_spec_accepts() {
    let Some(spec) = spec("the_shipped_flows_send_what_the_openapi_spec_accepts") else {
        return;
    };
    let mut errors = Vec::new();
    let mut exercised = BTreeSet::new();
    let mut bodies = 0;
    for flow_file in ["openai_assistant.json", "openai_responses.json"] {
        let requests = conversation_requests(flow_file).await;
        assert!(!requests.is_empty(), "{flow_file} sent nothing");
        for request in &requests {
            let (operation, request_errors) = contract_errors(spec, request);
            if let Some(operation) = operation {
                exercised.insert(format!(
                    "{} {} {}",
                    operation.id, request.method, operation.template
                ));
            }
            bodies += usize::from(request.body.is_some());
            errors.extend(request_errors.into_iter().map(|e| format!("{flow_file}: {e}")));
        }
    }
    println!("validated {bodies} JSON bodies; operations exercised:");
    for operation in &exercised {
        println!("  {operation}");
    }
    assert!(
        errors.is_empty(),
        "{} departure(s) from {SPEC_PATH}:\n{}",
        errors.len(),
        errors.join("\n")
    );
    for expected in [
        "createThread POST /threads",
        "createMessage POST /threads/{thread_id}/messages",
        "createRun POST /threads/{thread_id}/runs",
        "listMessages GET /threads/{thread_id}/messages",
        "getRun GET /threads/{thread_id}/runs/{run_id}",
        "createConversation POST /conversations",
        "createResponse POST /responses",
    ] {
        assert!(
            exercised.contains(expected),
            "{expected} not exercised; got {exercised:#?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Controls: the check must be able to fail.

fn schema<'s>(spec: &'s Value, method: &str, path: &str) -> &'s Value {
    let operation = Operation::find(spec, method, path).unwrap_or_else(|| panic!("{method} {path}"));
    operation
        .body_schema()
        .unwrap_or_else(|| panic!("{method} {path} has no body schema"))
}

#[test]
fn wrong_bodies_are_rejected() {
    let Some(spec) = spec("wrong_bodies_are_rejected") else {
        return;
    };
    let validator = Validator { document: spec };
    let message = schema(spec, "POST", "/v1/threads/thread_1/messages");
    let run = schema(spec, "POST", "/v1/threads/thread_1/runs");
    let response = schema(spec, "POST", "/v1/responses");

    let errors = validator.validate(message, &json!({"role": "user", "content": "x", "bogus": 1}));
    assert!(errors.iter().any(|e| e.contains("\"bogus\"")), "{errors:?}");
    let errors = validator.validate(message, &json!({"role": "robot", "content": 5}));
    assert!(errors.iter().any(|e| e.starts_with("#/role:")), "{errors:?}");
    assert!(errors.iter().any(|e| e.starts_with("#/content:")), "{errors:?}");
    let errors = validator.validate(run, &json!({}));
    assert!(
        errors.iter().any(|e| e.contains("\"assistant_id\"")),
        "{errors:?}"
    );
    let errors = validator.validate(run, &json!({"assistant_id": "asst_1", "model": 4}));
    assert!(errors.iter().any(|e| e.starts_with("#/model:")), "{errors:?}");
    let errors = validator.validate(
        response,
        &json!({"model": "m", "input": [{"role": "user", "content": 7}]}),
    );
    assert!(errors.iter().any(|e| e.starts_with("#/input:")), "{errors:?}");

    // And the right shapes pass: null where `nullable` stands without `type`,
    // and properties from every part of CreateResponse's allOf together.
    assert_eq!(
        validator.validate(
            run,
            &json!({"assistant_id": "asst_1", "model": null, "stream": true})
        ),
        Vec::<String>::new()
    );
    let full = json!({
        "model": "gpt-test", "instructions": "Be brief.", "conversation": "conv_1",
        "input": [{"role": "user", "content": "hi"}], "store": true, "top_logprobs": 2,
        "metadata": {"k": "v"}, "background": false
    });
    assert_eq!(validator.validate(response, &full), Vec::<String>::new());
}

/// The validator on a small inline document, independent of the spec.
#[test]
fn the_validator_covers_its_keywords() {
    let document = json!({"components": {"schemas": {
        "Base": {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": false},
        "Closed": {"allOf": [{"$ref": "#/components/schemas/Base"}, {"properties": {"b": {"type": "string"}}}]},
        "Choice": {"anyOf": [{"type": "string", "enum": ["x", "y"]}, {"type": "array", "items": {"type": "boolean"}}]},
        "Loose": {"nullable": true, "oneOf": [{"type": "number"}]},
        "Typed": {"type": ["string", "null"], "required": ["never-an-object"]}
    }}});
    let validator = Validator { document: &document };
    let check = |name: &str, value: Value| {
        let schema = document.pointer(&format!("/components/schemas/{name}")).unwrap();
        validator.validate(schema, &value)
    };
    assert!(check("Closed", json!({"a": 1, "b": "ok"})).is_empty());
    assert_eq!(
        check("Closed", json!({"a": 1.5, "b": 2, "c": 0})),
        [
            "#/a: expected integer, found number",
            "#: unknown property \"c\" (additionalProperties is false)",
            "#/b: expected string, found number",
        ]
    );
    assert!(check("Choice", json!("y")).is_empty());
    assert!(check("Choice", json!([true, false])).is_empty());
    let errors = check("Choice", json!([true, "no"]));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("#: matches none of the 2 anyOf branches"),
        "{errors:?}"
    );
    assert!(
        errors[0].contains("#/1: expected boolean, found string"),
        "{errors:?}"
    );
    assert!(check("Loose", Value::Null).is_empty());
    assert!(check("Loose", json!(3)).is_empty());
    assert_eq!(check("Loose", json!("3")).len(), 1);
    assert!(check("Typed", Value::Null).is_empty());
    assert_eq!(
        check("Typed", json!({})),
        ["#: expected string or null, found object"]
    );
}

#[tokio::test]
async fn departures_from_the_spec_are_reported() {
    let Some(spec) = spec("departures_from_the_spec_are_reported") else {
        return;
    };
    let requests = conversation_requests("openai_assistant.json").await;
    let find = |method: &str, suffix: &str| {
        requests
            .iter()
            .find(|r| r.method == method && r.path.ends_with(suffix))
            .cloned()
            .unwrap_or_else(|| panic!("no {method} …{suffix} request"))
    };
    let errors_of = |request: &RecordedRequest| contract_errors(spec, request).1.join("\n");
    let message = find("POST", "/messages");
    let list = find("GET", "/messages");
    assert_eq!(errors_of(&message), "");
    assert_eq!(errors_of(&list), "");

    let mut wrong = message.clone();
    wrong.path = wrong.path.replace("/messages", "/mesages");
    assert!(
        errors_of(&wrong).contains("no operation in the spec"),
        "{}",
        errors_of(&wrong)
    );
    let mut wrong = message.clone();
    wrong.path = wrong.path.replace("/v1/", "/");
    assert!(
        errors_of(&wrong).contains("no operation in the spec"),
        "{}",
        errors_of(&wrong)
    );
    let mut wrong = message.clone();
    wrong.method = "PUT".into();
    assert!(
        errors_of(&wrong).contains("no operation in the spec"),
        "{}",
        errors_of(&wrong)
    );
    let mut wrong = message.clone();
    wrong.body = Some(json!({"role": "user", "content": "x", "bogus": 1}));
    assert!(
        errors_of(&wrong).contains("body #: unknown property \"bogus\""),
        "{}",
        errors_of(&wrong)
    );
    let mut wrong = message;
    wrong.body = None;
    wrong.body_text.clear();
    assert!(
        errors_of(&wrong).contains("requires a body"),
        "{}",
        errors_of(&wrong)
    );
    let mut wrong = list.clone();
    wrong.query.push(("runid".into(), "run_1".into()));
    assert!(
        errors_of(&wrong).contains("undeclared query parameter \"runid\""),
        "{}",
        errors_of(&wrong)
    );
    let mut wrong = list;
    wrong.query.push(("order".into(), "sideways".into()));
    assert!(
        errors_of(&wrong).contains("query order: #: \"sideways\""),
        "{}",
        errors_of(&wrong)
    );
}
