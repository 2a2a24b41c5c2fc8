//! Flow validation: a corpus of broken flows, each with the exact problems it
//! must report, plus focused checks of loading.
//!
//! The corpus lives in `tests/fixtures/bad_flows/`: every `NAME.json` sits
//! beside `NAME.expected`, which holds the Display of each diagnostic, one per
//! line. Adding a case means adding those two files. Run with
//! `CHATFLOW_BLESS=1` to (re)write the `.expected` files from the current
//! output — then read the diff before committing it.

use std::fmt::Write as _;
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

/// A line diff (longest common subsequence): ` ` both, `-` expected only, `+` actual only.
fn diff(expected: &[String], actual: &[String]) -> String {
    let (n, m) = (expected.len(), actual.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if expected[i] == actual[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < n || j < m {
        if i < n && j < m && expected[i] == actual[j] {
            let _ = writeln!(out, "      {}", expected[i]);
            (i, j) = (i + 1, j + 1);
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            let _ = writeln!(out, "    - {}", expected[i]);
            i += 1;
        } else {
            let _ = writeln!(out, "    + {}", actual[j]);
            j += 1;
        }
    }
    out
}

#[test]
fn bad_flow_corpus_reports_exactly_the_expected_problems() {
    let dir = corpus_dir();
    let bless = std::env::var_os("CHATFLOW_BLESS").is_some();
    let cases = files_with_extension(&dir, "json");
    assert!(
        cases.len() >= 30,
        "the corpus in {} looks incomplete",
        dir.display()
    );

    let mut failures = Vec::new();
    for expected_file in files_with_extension(&dir, "expected") {
        if !expected_file.with_extension("json").exists() {
            failures.push(format!(
                "{}: no .json beside this .expected file",
                expected_file.display()
            ));
        }
    }
    for case in &cases {
        let name = case
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let expected_file = case.with_extension("expected");
        let err = match Flow::from_path(case) {
            Ok(flow) => {
                failures.push(format!(
                    "{name}: loaded without problems (flow {:?}, {} steps), but it is in the bad corpus",
                    flow.name(),
                    flow.steps().len()
                ));
                continue;
            }
            Err(err) => err,
        };
        let actual: Vec<String> = err.diagnostics().iter().map(|d| d.to_string()).collect();
        if actual.is_empty() {
            failures.push(format!("{name}: failed with no diagnostics: {err}"));
            continue;
        }
        if bless {
            fs::write(&expected_file, actual.join("\n") + "\n")
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", expected_file.display()));
            continue;
        }
        let Ok(text) = fs::read_to_string(&expected_file) else {
            failures.push(format!(
                "{name}: missing {}; the current output is:\n{}",
                expected_file.display(),
                actual.join("\n")
            ));
            continue;
        };
        let expected: Vec<String> = text.lines().map(str::to_string).collect();
        if expected != actual {
            failures.push(format!(
                "{name}: the problems differ from {} (- expected, + actual):\n{}",
                expected_file.file_name().unwrap_or_default().to_string_lossy(),
                diff(&expected, &actual)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus cases failed (CHATFLOW_BLESS=1 rewrites the .expected files):\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
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
