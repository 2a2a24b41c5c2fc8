//! The flow model: a named list of typed steps, loaded from JSON, checked as
//! a whole, and compiled once (templates parsed, targets resolved) so that
//! running it cannot fail on anything the file says.

mod compile;
mod diagram;
mod question_options;
mod schema;
mod start_mode;
mod step;

pub use step::{
    Api, Assign, Condition, ContactUpdate, Delay, DelaySeconds, GoTo, Message, Question, RetrySettings, Step,
    StepKind,
};

pub use question_options::{MAX_OPTIONS, OptionSpec, QuestionOption};
pub(crate) use question_options::{chosen, waiting as waiting_options};
pub use start_mode::StartMode;

pub(crate) use compile::{CompiledApi, CompiledKind, CompiledStep, Program};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A chatflow flow: a named list of typed steps, run from the first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "chatflow flow", transform = schema::allow_schema_reference)]
struct FlowFile {
    /// The flow's name.
    name: String,
    /// What the flow is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    /// Default values of host variables (`<<var.name>>`); the host's values override them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    vars: BTreeMap<String, Value>,
    /// Whether the message that starts a conversation answers the first
    /// Question (`answer_first_question`, the default) or only starts the
    /// flow (`start_flow`); either way `<<conversation.start_text>>` reads it.
    // Left out when it is the default, so adding the field kept every
    // existing flow's hash.
    #[serde(default, skip_serializing_if = "StartMode::is_default")]
    start: StartMode,
    /// The steps, run from the first.
    steps: Vec<Step>,
}

/// A validated, compiled flow: cheap to clone and share between engines.
///
/// ```
/// let flow = chatflow::Flow::from_json(r#"{
///   "name": "hello",
///   "steps": [
///     {"type": "question", "name": "Ask name", "text": "What is your name?"},
///     {"type": "message", "name": "Greet", "text": "Hello, <<step.Ask name.response>>!"}
///   ]
/// }"#)?;
/// assert_eq!(flow.name(), "hello");
/// assert_eq!(flow.steps().len(), 2);
/// # Ok::<(), chatflow::LoadError>(())
/// ```
#[derive(Clone)]
pub struct Flow {
    inner: Arc<FlowInner>,
}

struct FlowInner {
    file: FlowFile,
    program: Program,
    hash: String,
}

impl Flow {
    /// Loads a flow from JSON text, reporting every problem at once.
    pub fn from_json(text: &str) -> Result<Flow, LoadError> {
        Self::load(text, "<json>")
    }

    /// Loads a flow from a JSON file, reporting every problem at once.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Flow, LoadError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
            path: path.display().to_string(),
            source: Arc::new(source),
        })?;
        Self::load(&text, &path.display().to_string())
    }

    /// Builds a flow from steps made in code.
    pub fn from_steps(name: impl Into<String>, steps: Vec<Step>) -> Result<Flow, LoadError> {
        let file = FlowFile {
            name: name.into(),
            description: None,
            vars: BTreeMap::new(),
            start: StartMode::default(),
            steps,
        };
        Self::finish(file, Vec::new(), true, &[], "<code>")
    }

    fn load(text: &str, origin: &str) -> Result<Flow, LoadError> {
        let invalid = |diagnostics| LoadError::Invalid {
            origin: origin.to_string(),
            diagnostics,
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        if text.trim().is_empty() {
            return Err(invalid(vec![Diagnostic::new(
                "the file is empty: a flow is a JSON object with \"name\" and \"steps\"".to_string(),
            )]));
        }
        let value: Value = serde_json::from_str(text).map_err(|e| {
            let (line, column) = char_position(text, e.line(), e.column());
            invalid(vec![Diagnostic {
                line: Some(line),
                column: Some(column),
                ..Diagnostic::new(format!("invalid JSON: {}", strip_position(&e.to_string())))
            }])
        })?;
        let positions = step_positions(text);
        let Value::Object(mut top) = value else {
            return Err(invalid(vec![Diagnostic::new(format!(
                "a flow must be a JSON object with \"name\" and \"steps\", found {}",
                step::json_kind(&value)
            ))]));
        };
        let mut diagnostics = Vec::new();
        let mut header_problem = |field: &str, message: String| {
            diagnostics.push(Diagnostic {
                field: Some(field.to_string()),
                ..Diagnostic::new(message)
            })
        };
        let name = match top.remove("name") {
            Some(Value::String(name)) => name,
            Some(other) => {
                header_problem(
                    "name",
                    format!("must be a string, found {}", step::json_kind(&other)),
                );
                String::new()
            }
            None => {
                header_problem("name", "missing: every flow needs a name".to_string());
                String::new()
            }
        };
        let description = match top.remove("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(d)) => Some(d),
            Some(other) => {
                header_problem(
                    "description",
                    format!("must be a string, found {}", step::json_kind(&other)),
                );
                None
            }
        };
        let vars = match top.remove("vars") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(vars)) => vars.into_iter().collect(),
            Some(other) => {
                header_problem(
                    "vars",
                    format!(
                        "must be an object of default values, found {}",
                        step::json_kind(&other)
                    ),
                );
                BTreeMap::new()
            }
        };
        let start = match top.remove("start") {
            None | Some(Value::Null) => StartMode::default(),
            Some(Value::String(mode)) => match mode.as_str() {
                "answer_first_question" => StartMode::AnswerFirstQuestion,
                "start_flow" => StartMode::StartFlow,
                _ => {
                    header_problem(
                        "start",
                        format!(
                            "unknown start mode `{mode}`, expected `answer_first_question` (the starting \
                             message answers the first Question) or `start_flow` (it only starts the flow)"
                        ),
                    );
                    StartMode::default()
                }
            },
            Some(other) => {
                header_problem(
                    "start",
                    format!("must be a string, found {}", step::json_kind(&other)),
                );
                StartMode::default()
            }
        };
        // Editors read `$schema` (flow.schema.json); the flow itself does
        // not, and it is not kept, so it changes no flow's hash.
        if let Some(schema) = top.remove("$schema")
            && !schema.is_string()
        {
            header_problem(
                "$schema",
                format!(
                    "must be a string (the schema's URL or path), found {}",
                    step::json_kind(&schema)
                ),
            );
        }
        let mut steps_ok = true;
        let raw_steps = match top.remove("steps") {
            Some(Value::Array(steps)) => steps,
            Some(other) => {
                header_problem(
                    "steps",
                    format!("must be an array of steps, found {}", step::json_kind(&other)),
                );
                steps_ok = false;
                Vec::new()
            }
            None => {
                header_problem(
                    "steps",
                    "missing: a flow needs \"steps\", an array of steps".to_string(),
                );
                steps_ok = false;
                Vec::new()
            }
        };
        for key in top.keys() {
            header_problem(
                key,
                format!(
                    "unknown field `{key}`, expected one of `name`, `description`, `vars`, `start`, `steps`, `$schema`"
                ),
            );
        }
        let mut steps = Vec::with_capacity(raw_steps.len());
        for (index, raw) in raw_steps.into_iter().enumerate() {
            let (line, column) = positions.get(index).copied().unzip();
            match Step::from_value(raw) {
                Ok(step) => steps.push(step),
                Err(e) => {
                    steps_ok = false;
                    diagnostics.push(Diagnostic {
                        step: e.name,
                        index: Some(index),
                        field: e.field,
                        message: e.message,
                        line,
                        column,
                    })
                }
            }
        }
        let file = FlowFile {
            name,
            description,
            vars,
            start,
            steps,
        };
        Self::finish(file, diagnostics, steps_ok, &positions, origin)
    }

    fn finish(
        file: FlowFile,
        mut diagnostics: Vec<Diagnostic>,
        steps_ok: bool,
        positions: &[(usize, usize)],
        origin: &str,
    ) -> Result<Flow, LoadError> {
        // Only check the graph when every step parsed: a step that failed to
        // parse would show up as a dangling target everywhere.
        if steps_ok {
            match Program::compile(&file.steps) {
                Ok(program) if diagnostics.is_empty() => {
                    let hash = content_hash(&file);
                    return Ok(Flow {
                        inner: Arc::new(FlowInner { file, program, hash }),
                    });
                }
                Ok(_) => {}
                Err(found) => diagnostics.extend(found),
            }
        }
        for d in &mut diagnostics {
            if let Some((line, column)) = d.index.and_then(|i| positions.get(i)) {
                d.line = Some(*line);
                d.column = Some(*column);
            }
        }
        // File order: flow-level problems first, then by step.
        diagnostics.sort_by_key(|d| d.index.map_or(0, |i| i + 1));
        Err(LoadError::Invalid {
            origin: origin.to_string(),
            diagnostics,
        })
    }

    /// The flow's name.
    pub fn name(&self) -> &str {
        &self.inner.file.name
    }

    /// The flow's description, if it has one.
    pub fn description(&self) -> Option<&str> {
        self.inner.file.description.as_deref()
    }

    /// Whether the message that starts a conversation answers the first
    /// Question (the default) or only starts the flow.
    pub fn start_mode(&self) -> StartMode {
        self.inner.file.start
    }

    /// The steps, in file order.
    pub fn steps(&self) -> &[Step] {
        &self.inner.file.steps
    }

    /// Default values of host variables (`var.*`) declared by the flow; the
    /// engine's values override them.
    pub fn default_vars(&self) -> &BTreeMap<String, Value> {
        &self.inner.file.vars
    }

    /// A hash of the flow's content (hex SHA-256 of its canonical JSON), so a
    /// stored conversation can tell whether its flow changed.
    pub fn hash(&self) -> &str {
        &self.inner.hash
    }

    /// Host variables (`var.*`) the flow uses that it gives no default for:
    /// the host must provide them.
    pub fn required_vars(&self) -> impl Iterator<Item = &str> {
        self.inner
            .program
            .vars_used
            .iter()
            .filter(|v| !self.inner.file.vars.contains_key(*v))
            .map(String::as_str)
    }

    /// Secrets (`secret.*`) the flow uses: the host must provide them.
    pub fn required_secrets(&self) -> impl Iterator<Item = &str> {
        self.inner.program.secrets_used.iter().map(String::as_str)
    }

    /// The JSON Schema (draft 7) of flow files: the content of the
    /// repository's `flow.schema.json`, for editors and for checking flows
    /// with other tools. chatflow's own loader checks more than the schema
    /// can say (step names, templates, loops).
    pub fn json_schema() -> Value {
        schema::flow_schema()
    }

    /// The flow as a Mermaid flowchart: one node per step (name and type),
    /// one arrow per edge labelled with its kind (`next`, `then`, `else`,
    /// `on_error`, `goto`, `fallback`), and an `end` node where a path ends
    /// the conversation. Paste it into a GitHub comment inside a
    /// ```` ```mermaid ```` block. Step names are escaped, so any name is safe.
    ///
    /// ```
    /// let flow = chatflow::Flow::from_json(r#"{"name": "f", "steps": [
    ///   {"type": "question", "name": "Ask", "text": "Order?"},
    ///   {"type": "message", "name": "Thanks", "text": "Thanks!"}
    /// ]}"#)?;
    /// assert!(flow.to_mermaid().contains("s0 -->|next| s1"));
    /// # Ok::<(), chatflow::LoadError>(())
    /// ```
    pub fn to_mermaid(&self) -> String {
        diagram::mermaid(&self.inner.program)
    }

    /// The flow as a standalone SVG image with the same nodes and edges as
    /// [`Flow::to_mermaid`], laid out locally (no network, no graphviz).
    /// Text is escaped, so it is safe to serve to a browser.
    pub fn to_svg(&self) -> String {
        diagram::svg(&self.inner.program)
    }

    /// The flow as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.inner.file).unwrap_or_default()
    }

    pub(crate) fn program(&self) -> &Program {
        &self.inner.program
    }
}

impl fmt::Debug for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flow")
            .field("name", &self.name())
            .field("steps", &self.steps().len())
            .field("hash", &self.hash())
            .finish()
    }
}

impl Serialize for Flow {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.inner.file.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Flow {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Flow::load(&value.to_string(), "<json>").map_err(serde::de::Error::custom)
    }
}

fn content_hash(file: &FlowFile) -> String {
    use sha2::{Digest, Sha256};
    let canonical = serde_json::to_vec(file).unwrap_or_default();
    Sha256::digest(&canonical)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// serde_json appends " at line L column C"; diagnostics carry those apart.
fn strip_position(message: &str) -> &str {
    message.find(" at line ").map_or(message, |i| &message[..i])
}

/// serde_json counts columns in bytes; people count characters.
fn char_position(text: &str, line: usize, byte_column: usize) -> (usize, usize) {
    let Some(line_text) = text.split('\n').nth(line.saturating_sub(1)) else {
        return (line, byte_column.max(1));
    };
    let mut end = byte_column.min(line_text.len());
    while !line_text.is_char_boundary(end) {
        end -= 1;
    }
    (line, line_text[..end].chars().count().max(1))
}

/// Line and column (1-based) where each element of the top-level `steps`
/// array starts, so per-step problems can point into the file.
fn step_positions(text: &str) -> Vec<(usize, usize)> {
    #[derive(Deserialize)]
    struct Steps<'a> {
        #[serde(borrow, default)]
        steps: Vec<&'a serde_json::value::RawValue>,
    }
    let Ok(parsed) = serde_json::from_str::<Steps<'_>>(text) else {
        return Vec::new();
    };
    let base = text.as_ptr() as usize;
    parsed
        .steps
        .iter()
        .map(|raw| {
            let offset = (raw.get().as_ptr() as usize).saturating_sub(base).min(text.len());
            let before = &text[..offset];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            (line, column)
        })
        .collect()
}

/// One problem found in a flow, saying where.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Diagnostic {
    /// The step's name, when known.
    pub step: Option<String>,
    /// The step's position in `steps` (0-based), when the problem is in a step.
    pub index: Option<usize>,
    /// The field at fault (`url`, `all[0].right`, …), when known.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
    /// 1-based line in the file (syntax errors; for step problems, where the step starts).
    pub line: Option<usize>,
    /// 1-based column, with `line`.
    pub column: Option<usize>,
}

impl Diagnostic {
    pub(crate) fn new(message: String) -> Diagnostic {
        Diagnostic {
            step: None,
            index: None,
            field: None,
            message,
            line: None,
            column: None,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut wrote = false;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, "line {line}, column {column}")?;
            wrote = true;
        }
        let mut sep = |f: &mut fmt::Formatter<'_>| {
            let s = if wrote { ", " } else { "" };
            wrote = true;
            f.write_str(s)
        };
        match (&self.step, self.index) {
            (Some(name), Some(i)) => {
                sep(f)?;
                write!(f, "step {} \"{name}\"", i + 1)?
            }
            (Some(name), None) => {
                sep(f)?;
                write!(f, "step \"{name}\"")?
            }
            (None, Some(i)) => {
                sep(f)?;
                write!(f, "step {}", i + 1)?
            }
            (None, None) => {}
        }
        if let Some(field) = &self.field {
            sep(f)?;
            write!(f, "field `{field}`")?;
        }
        if wrote {
            f.write_str(": ")?;
        }
        f.write_str(&self.message)
    }
}

/// A flow that could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read flow file `{path}`: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: Arc<std::io::Error>,
    },
    /// The flow has problems; every one found is listed.
    #[error("{}", render_problems(origin, diagnostics))]
    Invalid {
        /// Where the flow came from (a file path, `<json>` or `<code>`).
        origin: String,
        /// Every problem found.
        diagnostics: Vec<Diagnostic>,
    },
}

impl LoadError {
    /// The problems found (empty for an I/O error).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            LoadError::Invalid { diagnostics, .. } => diagnostics,
            LoadError::Io { .. } => &[],
        }
    }
}

fn render_problems(origin: &str, diagnostics: &[Diagnostic]) -> String {
    let count = diagnostics.len();
    let mut out = format!(
        "flow {origin} has {count} problem{}:",
        if count == 1 { "" } else { "s" }
    );
    for d in diagnostics {
        out.push_str("\n  - ");
        out.push_str(&d.to_string());
    }
    out
}

/// The set of names, for messages.
pub(crate) fn list_names<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let names: BTreeSet<&str> = names.into_iter().collect();
    names
        .into_iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}
