//! Flow validation: a corpus of broken flows, each with the exact problems it
//! must report, plus focused checks of loading.
//!
//! The corpus lives in `tests/fixtures/bad_flows/`: every `NAME.json` there
//! has an insta snapshot, `tests/snapshots/validation__bad_flow@NAME.json.snap`,
//! holding the Display of each diagnostic, one per line. Adding a case means
//! adding the `.json` file, running the test once (`INSTA_UPDATE=always`, or
//! `cargo insta test` then `cargo insta review`) and reading the new snapshot
//! before committing it.

use std::fs;
use std::path::{Path, PathBuf};

use chatflow::{Flow, LoadError};

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn corpus_dir() -> PathBuf {
    manifest_dir().join("tests/fixtures/bad_flows")
}

/// The files in `dir` whose name ends with `.{ext}`, sorted.
fn files_with_extension(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

/// Every file of the corpus fails to load, and its problems are exactly its snapshot.
#[test]
fn bad_flow() {
    let cases = files_with_extension(&corpus_dir(), "json");
    assert!(
        cases.len() >= 30,
        "the corpus in {} looks incomplete",
        corpus_dir().display()
    );
    insta::glob!("fixtures/bad_flows/*.json", |path| {
        let err = match Flow::from_path(path) {
            Ok(flow) => panic!(
                "{}: loaded without problems (flow {:?}, {} steps), but it is in the bad corpus",
                path.display(),
                flow.name(),
                flow.steps().len()
            ),
            Err(err) => err,
        };
        let problems: Vec<String> = err.diagnostics().iter().map(ToString::to_string).collect();
        assert!(
            !problems.is_empty(),
            "{}: failed with no diagnostics: {err}",
            path.display()
        );
        insta::assert_snapshot!(problems.join("\n"));
    });
}

/// A snapshot whose case was deleted or renamed is an error, not dead weight.
#[test]
fn every_bad_flow_snapshot_has_its_case() {
    let snapshots = manifest_dir().join("tests/snapshots");
    if !snapshots.is_dir() {
        return; // the first run of `bad_flow` writes them
    }
    let orphans: Vec<String> = files_with_extension(&snapshots, "snap")
        .iter()
        .filter_map(|snap| {
            let name = snap.file_name()?.to_str()?;
            let case = name
                .strip_prefix("validation__bad_flow@")?
                .strip_suffix(".snap")?;
            (!corpus_dir().join(case).exists()).then(|| name.to_string())
        })
        .collect();
    assert!(
        orphans.is_empty(),
        "snapshots without a case in tests/fixtures/bad_flows: {orphans:?}"
    );
}

/// A flow with all eight step types, defaults for some vars, and secrets.
const ALL_TYPES: &str = r#"{
  "name": "all types",
  "description": "every step type once",
  "vars": {"base_url": "https://api.example.com/v1"},
  "steps": [
    {"type": "question", "name": "Ask order", "text": "Hi <<contact.name>>! Your order number?"},
    {"type": "contact_update", "name": "Save order", "set": {"order": "<<step.Ask order.response>>", "asked": true}},
    {"type": "api", "name": "Lookup", "method": "POST", "url": "<<var.base_url>>/orders/<<contact.order>>",
     "headers": {"Authorization": "Bearer <<secret.SHOP_KEY>>", "X-Tenant": "<<var.tenant>>"},
     "body": {"order": "<<contact.order>>", "trace": "<<secret.TRACE_TOKEN>>"},
     "timeout_seconds": 5, "retry": {"max_attempts": 2}, "error_hints": {"404": "unknown order"},
     "on_error": "Sorry"},
    {"type": "condition", "name": "Shipped?",
     "all": [{"left": "<<step.Lookup.response.state>>", "op": "equals", "right": "shipped", "ignore_case": true},
             {"left": "<<step.Lookup.status>>", "op": "less_than", "right": 300}],
     "then": "Tell shipped", "else": "Wait"},
    {"type": "delay", "name": "Wait", "seconds": 1.5},
    {"type": "goto", "name": "Check again", "target": "Lookup", "max_visits": 3, "fallback": "Sorry"},
    {"type": "message", "name": "Tell shipped", "text": "Order <<contact.order>> has shipped.", "next": "Handoff"},
    {"type": "message", "name": "Sorry", "text": "Sorry, I cannot find order <<contact.order>>."},
    {"type": "assign", "name": "Handoff", "team": "<<var.team>>", "note": "order <<contact.order>>"}
  ]
}"#;

fn load(text: &str) -> Flow {
    Flow::from_json(text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_flow_with_all_eight_step_types_loads() {
    let flow = load(ALL_TYPES);
    assert_eq!(flow.name(), "all types");
    assert_eq!(flow.description(), Some("every step type once"));
    let types: Vec<&str> = flow.steps().iter().map(|s| s.kind.type_name()).collect();
    assert_eq!(
        types,
        [
            "question",
            "contact_update",
            "api",
            "condition",
            "delay",
            "goto",
            "message",
            "message",
            "assign"
        ]
    );
    let mut distinct = types.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let mut all = chatflow::StepKind::TYPE_NAMES.to_vec();
    all.sort_unstable();
    assert_eq!(distinct, all);
    assert_eq!(flow.steps()[6].next.as_deref(), Some("Handoff"));
}

#[test]
fn a_multi_problem_file_lists_every_problem_under_a_count() {
    let path = corpus_dir().join("several_graph_problems.json");
    let err = Flow::from_path(&path).expect_err("the file has problems");
    let n = err.diagnostics().len();
    assert!(n >= 5, "expected many problems, got {n}: {err}");
    let text = err.to_string();
    let header = format!("flow {} has {n} problems:", path.display());
    assert!(text.starts_with(&header), "{text}");
    let listed: Vec<&str> = text.lines().skip(1).collect();
    let wanted: Vec<String> = err.diagnostics().iter().map(|d| format!("  - {d}")).collect();
    assert_eq!(listed, wanted);

    let one = Flow::from_json(r#"{"name": "x", "steps": []}"#).expect_err("no steps");
    assert!(
        one.to_string().starts_with("flow <json> has 1 problem:\n"),
        "{one}"
    );
}

#[test]
fn json_syntax_errors_carry_line_and_column() {
    let err = Flow::from_json("{\n  \"name\": \"x\"\n  \"steps\": []\n}").expect_err("missing comma");
    let [d] = err.diagnostics() else {
        panic!("one problem expected: {err}")
    };
    assert_eq!((d.line, d.column), (Some(3), Some(3)), "{d}");
    assert!(d.message.starts_with("invalid JSON: "), "{d}");
    assert!(
        !d.message.contains(" at line "),
        "the position is kept apart: {d}"
    );
    assert!(d.to_string().starts_with("line 3, column 3: invalid JSON"), "{d}");

    // Problems inside a step point at where the step starts.
    let err = Flow::from_json(
        "{\"name\": \"x\", \"steps\": [\n  {\"type\": \"message\", \"name\": \"A\", \"text\": \"a\"},\n    {\"type\": \"delay\", \"name\": \"B\", \"seconds\": -1}\n]}",
    )
    .expect_err("negative delay");
    let [d] = err.diagnostics() else {
        panic!("one problem expected: {err}")
    };
    assert_eq!((d.line, d.column, d.index), (Some(3), Some(5), Some(1)), "{d}");
    assert_eq!(d.step.as_deref(), Some("B"));
    assert_eq!(d.field.as_deref(), Some("seconds"));
}

#[test]
fn a_missing_file_is_an_io_error_naming_the_path() {
    let path = manifest_dir().join("tests/fixtures/no such flow.json");
    let err = Flow::from_path(&path).expect_err("the file does not exist");
    match &err {
        LoadError::Io { path: named, source } => {
            assert_eq!(named, &path.display().to_string());
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected LoadError::Io, got {other:?}"),
    }
    assert!(err.diagnostics().is_empty());
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
}

#[test]
fn required_vars_and_secrets_are_what_templates_use_minus_defaults() {
    let flow = load(ALL_TYPES);
    // `base_url` has a default in `vars`; `team` and `tenant` do not.
    assert_eq!(flow.required_vars().collect::<Vec<_>>(), ["team", "tenant"]);
    assert_eq!(
        flow.required_secrets().collect::<Vec<_>>(),
        ["SHOP_KEY", "TRACE_TOKEN"]
    );
    assert!(flow.default_vars().contains_key("base_url"));

    let plain = load(r#"{"name": "p", "steps": [{"type": "message", "name": "Hi", "text": "Hi"}]}"#);
    assert_eq!(plain.required_vars().count(), 0);
    assert_eq!(plain.required_secrets().count(), 0);
}

#[test]
fn a_flow_round_trips_through_serde_json() {
    let flow = load(ALL_TYPES);
    let text = serde_json::to_string(&flow).expect("a flow serializes");
    let again: Flow = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(again.to_json(), flow.to_json());
    assert_eq!(again.hash(), flow.hash());
    assert_eq!(again.steps(), flow.steps());
    assert_eq!(again.default_vars(), flow.default_vars());
    // `to_json` output loads back to the same flow too.
    assert_eq!(load(&flow.to_json()).hash(), flow.hash());

    // Deserializing a bad flow fails with its problems.
    let err = serde_json::from_str::<Flow>(
        r#"{"name": "x", "steps": [{"type": "delay", "name": "W", "seconds": -5}]}"#,
    )
    .expect_err("negative delay");
    assert!(err.to_string().contains("must be a number of seconds"), "{err}");
}

#[test]
fn shipped_flows_load_without_problems() {
    let dir = manifest_dir().join("flows");
    if !dir.is_dir() {
        return;
    }
    let problems: Vec<String> = files_with_extension(&dir, "json")
        .iter()
        .filter_map(|path| Flow::from_path(path).err().map(|e| e.to_string()))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
fn a_utf8_byte_order_mark_is_accepted() {
    // Windows editors save one; it is not a problem of the flow.
    let flow = Flow::from_json(
        "\u{feff}{\"name\": \"f\", \"steps\": [{\"type\": \"message\", \"name\": \"M\", \"text\": \"hi\"}]}",
    );
    assert!(flow.is_ok(), "{flow:?}");
}

#[test]
fn matches_and_is_number_rules_load() {
    let flow = Flow::from_json(
        r#"{"name": "order", "steps": [
          {"type": "question", "name": "Ask", "text": "Order number or quantity?"},
          {"type": "condition", "name": "Order?",
           "any": [{"left": "<<step.Ask.response>>", "op": "matches", "right": "^[A-Z]-\\d{6}$", "ignore_case": true},
                   {"left": "<<step.Ask.response>>", "op": "is_number"}],
           "then": "Thanks", "else": "Ask"},
          {"type": "message", "name": "Thanks", "text": "Thanks!"}
        ]}"#,
    );
    assert!(flow.is_ok(), "{flow:?}");
}

#[test]
fn start_mode_defaults_to_answering_the_first_question() {
    use chatflow::StartMode;
    let steps = r#""steps": [{"type": "question", "name": "Ask", "text": "You said <<conversation.start_text>>; more?"}]"#;
    let default = load(&format!(r#"{{"name": "f", {steps}}}"#));
    assert_eq!(default.start_mode(), StartMode::AnswerFirstQuestion);
    let explicit = load(&format!(
        r#"{{"name": "f", "start": "answer_first_question", {steps}}}"#
    ));
    assert_eq!(explicit.start_mode(), StartMode::AnswerFirstQuestion);
    // The default is left out when written, so existing flows keep their hash.
    assert_eq!(explicit.hash(), default.hash());
    assert!(!default.to_json().contains("\"start\""));

    let triggered = load(&format!(r#"{{"name": "f", "start": "start_flow", {steps}}}"#));
    assert_eq!(triggered.start_mode(), StartMode::StartFlow);
    assert_ne!(triggered.hash(), default.hash());
    let again = load(&triggered.to_json());
    assert_eq!(again.start_mode(), StartMode::StartFlow);
    assert_eq!(again.hash(), triggered.hash());
}

#[test]
fn a_schema_reference_is_accepted_and_ignored() {
    let plain = load(r#"{"name": "f", "steps": [{"type": "message", "name": "M", "text": "hi"}]}"#);
    let with_schema = load(
        r#"{"$schema": "../flow.schema.json", "name": "f", "steps": [{"type": "message", "name": "M", "text": "hi"}]}"#,
    );
    assert_eq!(with_schema.hash(), plain.hash());
    assert_eq!(with_schema.to_json(), plain.to_json());
}
