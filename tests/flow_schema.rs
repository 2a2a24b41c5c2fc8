//! `flow.schema.json` is current, and every shipped flow follows it.
//!
//! The schema is generated from the flow types (`Flow::json_schema()`); after
//! changing them, rewrite the file with
//! `UPDATE_SCHEMA=1 cargo test --test flow_schema` and commit it.

use std::fs;
use std::path::{Path, PathBuf};

use chatflow::Flow;
use serde_json::{Value, json};

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn schema_file() -> PathBuf {
    manifest_dir().join("flow.schema.json")
}

fn shipped_flows() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(manifest_dir().join("flows"))
        .expect("flows/ is readable")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

fn validator() -> jsonschema::Validator {
    jsonschema::draft7::new(&Flow::json_schema())
        .unwrap_or_else(|e| panic!("the schema is not valid draft 7: {e}"))
}

fn schema_errors(validator: &jsonschema::Validator, flow: &Value) -> Vec<String> {
    validator
        .iter_errors(flow)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn the_checked_in_schema_is_current() {
    let generated = serde_json::to_string_pretty(&Flow::json_schema()).expect("the schema serializes") + "\n";
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        fs::write(schema_file(), &generated).expect("flow.schema.json is writable");
        return;
    }
    let checked_in = fs::read_to_string(schema_file()).unwrap_or_default();
    assert!(
        checked_in == generated,
        "flow.schema.json is out of date with the flow types: run `UPDATE_SCHEMA=1 cargo test --test flow_schema` and commit it"
    );
}

#[test]
fn every_shipped_flow_follows_the_schema_and_names_it() {
    let validator = validator();
    let flows = shipped_flows();
    assert!(!flows.is_empty());
    for path in flows {
        let text = fs::read_to_string(&path).expect("a shipped flow is readable");
        let flow: Value = serde_json::from_str(&text).expect("a shipped flow is JSON");
        let errors = schema_errors(&validator, &flow);
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        assert_eq!(flow["$schema"], "../flow.schema.json", "{}", path.display());
    }
}

#[test]
fn the_schema_accepts_every_step_type_and_refuses_what_the_loader_refuses() {
    let validator = validator();
    let flow = json!({
        "$schema": "../flow.schema.json",
        "name": "all types",
        "start": "start_flow",
        "vars": {"base_url": "https://api.example.com"},
        "steps": [
            {"type": "question", "name": "Ask", "text": "Order?"},
            {"type": "ContactUpdate", "name": "Save", "set": {"order": "<<step.Ask.response>>"}},
            {"type": "api", "name": "Lookup", "method": "GET", "url": "<<var.base_url>>/o",
             "retry": {"max_attempts": 2}, "stream_until": "done", "on_error": "Sorry"},
            {"type": "condition", "name": "Found?",
             "any": [{"left": "<<step.Lookup.status>>", "op": "equals", "right": 200},
                     {"left": "<<step.Ask.response>>", "op": "matches", "right": "^A-\\d+$"},
                     {"left": "<<step.Ask.response>>", "op": "is_number"}],
             "then": "Done", "else": "Wait"},
            {"type": "delay", "name": "Wait", "seconds": [0.5, 1]},
            {"type": "goto", "name": "Again", "target": "Lookup", "max_visits": 3, "fallback": "Sorry"},
            {"type": "message", "name": "Done", "text": "Found", "next": "Handoff"},
            {"type": "message", "name": "Sorry", "text": "Sorry"},
            {"type": "assign", "name": "Handoff", "team": "support"}
        ]
    });
    assert_eq!(schema_errors(&validator, &flow), Vec::<String>::new());
    Flow::from_json(&flow.to_string()).unwrap_or_else(|e| panic!("the loader disagrees: {e}"));

    for (what, broken) in [
        (
            "a misspelt step field",
            json!({"type": "message", "name": "M", "txt": "hi"}),
        ),
        (
            "an unknown step type",
            json!({"type": "email", "name": "M", "text": "hi"}),
        ),
        ("a step without a name", json!({"type": "message", "text": "hi"})),
        (
            "a lowercase method",
            json!({"type": "api", "name": "A", "method": "get", "url": "https://x"}),
        ),
        (
            "an unknown operator",
            json!({"type": "condition", "name": "C", "all": [{"left": "x", "op": "=="}]}),
        ),
        (
            "a delay in words",
            json!({"type": "delay", "name": "D", "seconds": "ten"}),
        ),
    ] {
        let flow = json!({"name": "f", "steps": [broken]});
        assert!(!validator.is_valid(&flow), "the schema accepts {what}");
        assert!(
            Flow::from_json(&flow.to_string()).is_err(),
            "the loader accepts {what}"
        );
    }
    for (what, broken) in [
        (
            "an unknown start mode",
            json!({"name": "f", "start": "later", "steps": []}),
        ),
        ("a misspelt top-level field", json!({"name": "f", "step": []})),
    ] {
        assert!(!validator.is_valid(&broken), "the schema accepts {what}");
    }
}
