//! Checks a flow as a whole and compiles it: templates parsed, step names
//! resolved to indexes, the graph searched for loops that would spin.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::step::{Api, Step, StepKind};
use super::{Diagnostic, list_names};
use crate::condition::{CompiledRule, Operator, RuleField, RuleProblem};
use crate::http::Method;
use crate::template::{JsonTemplate, Root, Segment, Template, TemplateError};

/// A flow ready to run.
#[derive(Debug)]
pub(crate) struct Program {
    pub(crate) steps: Vec<CompiledStep>,
    pub(crate) by_name: HashMap<Arc<str>, usize>,
    pub(crate) vars_used: BTreeSet<String>,
    pub(crate) secrets_used: BTreeSet<String>,
    /// Per Api step, the paths into its result that some template reads;
    /// `None` keeps the whole result (a template reads `step.X` or
    /// `step.X.response` whole).
    pub(crate) retained: Vec<Option<Vec<Vec<Segment>>>>,
    /// Whether some template reads `conversation.start_text`: only then does
    /// a conversation keep its first message's text.
    pub(crate) reads_start_text: bool,
}

#[derive(Debug)]
pub(crate) struct CompiledStep {
    pub(crate) name: Arc<str>,
    /// The default successor; `None` ends the conversation.
    pub(crate) next: Option<usize>,
    pub(crate) kind: CompiledKind,
}

#[derive(Debug)]
pub(crate) enum CompiledKind {
    Question {
        text: Template,
        /// Plain text, checked at load (see `question_options`).
        options: Vec<super::QuestionOption>,
    },
    ContactUpdate {
        set: Vec<(String, JsonTemplate)>,
    },
    Api(Box<CompiledApi>),
    Condition {
        any: bool,
        rules: Vec<CompiledRule>,
        then: Option<usize>,
        otherwise: Option<usize>,
    },
    Delay {
        /// One wait, or a backoff whose last value repeats.
        durations: Vec<Duration>,
    },
    GoTo {
        target: usize,
        max_visits: Option<u32>,
        fallback: Option<usize>,
    },
    Message {
        text: Template,
        /// The template a WhatsApp conversation gets outside its window.
        whatsapp_template: Option<JsonTemplate>,
    },
    Assign {
        team: Option<Template>,
        agent: Option<Template>,
        note: Option<Template>,
    },
}

#[derive(Debug)]
pub(crate) struct CompiledApi {
    pub(crate) method: Method,
    pub(crate) url: Template,
    pub(crate) headers: Vec<(Arc<str>, Template)>,
    pub(crate) body: Option<JsonTemplate>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) on_error: Option<usize>,
    pub(crate) retry: super::RetrySettings,
    pub(crate) max_response_bytes: Option<usize>,
    pub(crate) error_hints: BTreeMap<u16, String>,
    /// The events that end a streamed answer (empty: read the whole body).
    pub(crate) stream_until: Vec<String>,
}

impl CompiledKind {
    /// The step type's name, for logs.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            CompiledKind::Question { .. } => "question",
            CompiledKind::ContactUpdate { .. } => "contact_update",
            CompiledKind::Api(_) => "api",
            CompiledKind::Condition { .. } => "condition",
            CompiledKind::Delay { .. } => "delay",
            CompiledKind::GoTo { .. } => "goto",
            CompiledKind::Message { .. } => "message",
            CompiledKind::Assign { .. } => "assign",
        }
    }

    /// Whether the conversation can pause here (for the loop check).
    fn waits(&self) -> bool {
        matches!(self, CompiledKind::Question { .. } | CompiledKind::Delay { .. })
    }

    fn templates(&self) -> Vec<&Template> {
        match self {
            CompiledKind::Question { text, .. } => vec![text],
            CompiledKind::Message {
                text,
                whatsapp_template,
            } => {
                let mut out = vec![text];
                if let Some(template) = whatsapp_template {
                    out.extend(template.templates());
                }
                out
            }
            CompiledKind::ContactUpdate { set } => set.iter().flat_map(|(_, t)| t.templates()).collect(),
            CompiledKind::Api(api) => {
                let mut out = vec![&api.url];
                out.extend(api.headers.iter().map(|(_, t)| t));
                if let Some(body) = &api.body {
                    out.extend(body.templates());
                }
                out
            }
            CompiledKind::Condition { rules, .. } => rules.iter().flat_map(CompiledRule::templates).collect(),
            CompiledKind::Assign { team, agent, note } => [team, agent, note].into_iter().flatten().collect(),
            CompiledKind::Delay { .. } | CompiledKind::GoTo { .. } => Vec::new(),
        }
    }

    /// Every step this one can go to, other than its default successor.
    fn targets(&self) -> Vec<usize> {
        match self {
            CompiledKind::Api(api) => api.on_error.into_iter().collect(),
            CompiledKind::Condition { then, otherwise, .. } => {
                then.iter().chain(otherwise).copied().collect()
            }
            CompiledKind::GoTo {
                target,
                max_visits,
                fallback,
            } => {
                // A bounded jump cannot loop forever: only its fallback counts.
                let mut out: Vec<usize> = fallback.iter().copied().collect();
                if max_visits.is_none() {
                    out.push(*target);
                }
                out
            }
            _ => Vec::new(),
        }
    }

    /// Whether the default successor is reachable from this step.
    fn falls_through(&self) -> bool {
        match self {
            CompiledKind::GoTo { .. } | CompiledKind::Assign { .. } => false,
            CompiledKind::Condition { then, otherwise, .. } => then.is_none() || otherwise.is_none(),
            _ => true,
        }
    }
}

/// Collects problems while compiling one step.
struct StepCheck<'a> {
    index: usize,
    name: &'a str,
    names: &'a HashMap<Arc<str>, usize>,
    step_names: &'a [&'a str],
    problems: &'a mut Vec<Diagnostic>,
}

impl StepCheck<'_> {
    fn problem(&mut self, field: &str, message: String) {
        self.problems.push(Diagnostic {
            step: Some(self.name.to_string()),
            index: Some(self.index),
            field: (!field.is_empty()).then(|| field.to_string()),
            ..Diagnostic::new(message)
        });
    }

    fn template(&mut self, field: &str, text: &str) -> Option<Template> {
        Template::parse(text, self.step_names)
            .map_err(|e| self.template_problem(field, e))
            .ok()
    }

    fn template_problem(&mut self, field: &str, e: TemplateError) {
        self.problem(field, e.to_string());
    }

    fn json(&mut self, field: &str, value: &Value) -> Option<JsonTemplate> {
        JsonTemplate::parse(value, self.step_names)
            .map_err(|(pointer, e)| {
                self.template_problem(&format!("{field}{}", pointer.replace('/', ".")), e)
            })
            .ok()
    }

    fn target(&mut self, field: &str, target: &str) -> Option<usize> {
        let found = self.names.get(target).copied();
        if found.is_none() {
            let message = format!(
                "`{target}` is not a step in this flow (steps: {})",
                list_names(self.names.keys().map(|n| &**n))
            );
            self.problem(field, message);
        }
        found
    }

    fn seconds(&mut self, field: &str, seconds: f64) -> Option<Duration> {
        let duration = Duration::try_from_secs_f64(seconds).ok();
        match duration {
            None => self.problem(field, format!("must be a number of seconds ≥ 0, found {seconds}")),
            // Longer would overflow a wake-up time; no support flow waits a decade.
            Some(d) if d > MAX_SECONDS => self.problem(
                field,
                format!(
                    "must be at most {} seconds (10 years), found {seconds}",
                    MAX_SECONDS.as_secs()
                ),
            ),
            Some(_) => return duration,
        }
        None
    }
}

/// The longest wait a flow may set (a Delay, a retry setting).
const MAX_SECONDS: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

impl Program {
    /// Compiles `steps`, or returns every problem found.
    pub(crate) fn compile(steps: &[Step]) -> Result<Program, Vec<Diagnostic>> {
        let mut problems = Vec::new();
        if steps.is_empty() {
            problems.push(Diagnostic {
                field: Some("steps".into()),
                ..Diagnostic::new("the flow has no steps".to_string())
            });
        }
        let mut names: HashMap<Arc<str>, usize> = HashMap::with_capacity(steps.len());
        for (index, step) in steps.iter().enumerate() {
            if step.name.trim().is_empty() {
                problems.push(Diagnostic {
                    index: Some(index),
                    field: Some("name".into()),
                    ..Diagnostic::new("a step name cannot be empty".to_string())
                });
            } else if let Some(first) = names.get(step.name.as_str()) {
                problems.push(Diagnostic {
                    step: Some(step.name.clone()),
                    index: Some(index),
                    field: Some("name".into()),
                    ..Diagnostic::new(format!(
                        "\"{}\" is already the name of step {}; step names must be unique",
                        step.name,
                        first + 1
                    ))
                });
            } else {
                names.insert(Arc::from(step.name.as_str()), index);
            }
        }
        let step_names: Vec<&str> = names.keys().map(|n| &**n).collect();

        let mut compiled = Vec::with_capacity(steps.len());
        for (index, step) in steps.iter().enumerate() {
            let mut check = StepCheck {
                index,
                name: &step.name,
                names: &names,
                step_names: &step_names,
                problems: &mut problems,
            };
            let next = match &step.next {
                Some(target) => check.target("next", target),
                None => (index + 1 < steps.len()).then_some(index + 1),
            };
            if let Some(kind) = compile_kind(&step.kind, &mut check) {
                // Secrets go to APIs only: anywhere else they would reach the
                // user, the stored state or a log.
                if !matches!(kind, CompiledKind::Api(_)) && kind.templates().iter().any(|t| t.uses_secret()) {
                    check.problem(
                        "",
                        "secrets (`secret.*`) may only be used in an Api step's url, headers or body".into(),
                    );
                }
                compiled.push(CompiledStep {
                    name: Arc::from(step.name.as_str()),
                    next,
                    kind,
                });
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let program = Program {
            retained: vec![Some(Vec::new()); compiled.len()],
            steps: compiled,
            by_name: names,
            vars_used: BTreeSet::new(),
            secrets_used: BTreeSet::new(),
            reads_start_text: false,
        };
        program.check_loops(&mut problems);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(program.with_host_values())
    }

    /// Records what the templates read: host values, secrets, and which
    /// parts of each step's result must be kept.
    fn with_host_values(mut self) -> Program {
        let paths: Vec<crate::template::Path> = self
            .steps
            .iter()
            .flat_map(|step| step.kind.templates())
            .flat_map(|template| template.paths().cloned().collect::<Vec<_>>())
            .collect();
        for path in paths {
            match &path.root {
                Root::Step(step) => {
                    let Some(&index) = self.by_name.get(step.as_str()) else {
                        continue;
                    };
                    let keeps_all = path.segments.is_empty()
                        || (path.segments.len() == 1 && path.segments[0].key == "response");
                    match &mut self.retained[index] {
                        Some(_) if keeps_all => self.retained[index] = None,
                        Some(kept) => kept.push(path.segments.clone()),
                        None => {}
                    }
                }
                Root::Var => {
                    if let Some(name) = path.first_key() {
                        self.vars_used.insert(name.to_string());
                    }
                }
                Root::Secret => {
                    if let Some(name) = path.first_key() {
                        self.secrets_used.insert(name.to_string());
                    }
                }
                Root::Conversation => {
                    if path.first_key() == Some("start_text") {
                        self.reads_start_text = true;
                    }
                }
                Root::Contact => {}
            }
        }
        self
    }

    /// Reports every group of steps that can cycle with no Question or Delay
    /// in it: such a loop would spin without pause until the step limit.
    fn check_loops(&self, problems: &mut Vec<Diagnostic>) {
        let n = self.steps.len();
        let edges: Vec<Vec<usize>> = self
            .steps
            .iter()
            .map(|step| {
                if step.kind.waits() {
                    return Vec::new();
                }
                let mut out = step.kind.targets();
                if step.kind.falls_through() {
                    out.extend(step.next);
                }
                out.retain(|&t| !self.steps[t].kind.waits());
                out
            })
            .collect();
        for component in strongly_connected(n, &edges) {
            let cyclic = component.len() > 1 || edges[component[0]].contains(&component[0]);
            if !cyclic {
                continue;
            }
            let first = component.iter().copied().min().unwrap_or(0);
            let names: Vec<&str> = component.iter().map(|&i| &*self.steps[i].name).collect();
            problems.push(Diagnostic {
                step: Some(self.steps[first].name.to_string()),
                index: Some(first),
                ..Diagnostic::new(format!(
                    "steps {} form a loop with no Question or Delay in it: it would spin without pause \
                     (add a Delay, or give the GoTo a `max_visits` and `fallback`)",
                    list_names(names)
                ))
            });
        }
    }

    /// The index of the step with this name.
    pub(crate) fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }
}

fn compile_kind(kind: &StepKind, check: &mut StepCheck<'_>) -> Option<CompiledKind> {
    Some(match kind {
        StepKind::Question(q) => {
            let options = match &q.options {
                Some(specs) if specs.is_empty() => {
                    check.problem(
                        "options",
                        "the list is empty: give at least one option, or leave `options` out".into(),
                    );
                    Vec::new()
                }
                Some(specs) => {
                    super::question_options::check(specs, |field, message| check.problem(&field, message))
                }
                None => Vec::new(),
            };
            CompiledKind::Question {
                text: check.template("text", &q.text)?,
                options,
            }
        }
        StepKind::Message(m) => {
            let whatsapp_template = match &m.whatsapp_template {
                Some(value) => {
                    check_whatsapp_template(check, value);
                    Some(check.json("whatsapp_template", value)?)
                }
                None => None,
            };
            CompiledKind::Message {
                text: check.template("text", &m.text)?,
                whatsapp_template,
            }
        }
        StepKind::ContactUpdate(c) => {
            if c.set.is_empty() {
                check.problem("set", "sets no attribute".into());
            }
            let mut set = Vec::with_capacity(c.set.len());
            let mut valid = true;
            for (attribute, value) in &c.set {
                if attribute.trim().is_empty() {
                    check.problem("set", "an attribute name cannot be empty".into());
                }
                match check.json(&format!("set.{attribute}"), value) {
                    Some(template) => set.push((attribute.clone(), template)),
                    None => valid = false,
                }
            }
            if !valid {
                return None;
            }
            CompiledKind::ContactUpdate { set }
        }
        StepKind::Api(api) => CompiledKind::Api(Box::new(compile_api(api, check)?)),
        StepKind::Condition(c) => {
            let (any, rules) = match (&c.all, &c.any) {
                (Some(rules), None) => (false, rules),
                (None, Some(rules)) => (true, rules),
                (Some(_), Some(_)) => {
                    check.problem("any", "has both `all` and `any`; keep one".into());
                    return None;
                }
                (None, None) => {
                    check.problem(
                        "",
                        "needs rules: give `all` (every rule must hold) or `any` (one must)".into(),
                    );
                    return None;
                }
            };
            let field = if any { "any" } else { "all" };
            if rules.is_empty() {
                check.problem(field, "has no rules".into());
            }
            let mut compiled = Vec::with_capacity(rules.len());
            for (i, rule) in rules.iter().enumerate() {
                let right = format!("{field}[{i}].right");
                match (rule.op.takes_right(), &rule.right) {
                    (true, None) => {
                        check.problem(&right, format!("`{}` needs a `right` operand", rule.op.as_str()))
                    }
                    // A `right` that is ignored would mislead whoever reads the
                    // flow; flows written before `is_number` may give one to
                    // `is_empty`/`is_not_empty`, so those still load, with a warning.
                    (false, Some(_)) if matches!(rule.op, Operator::IsEmpty | Operator::IsNotEmpty) => {
                        tracing::warn!(
                            step = check.name,
                            field = %right,
                            "`{}` ignores its `right` operand",
                            rule.op.as_str()
                        )
                    }
                    (false, Some(_)) => {
                        check.problem(&right, format!("`{}` takes no `right` operand", rule.op.as_str()))
                    }
                    _ => {}
                }
                match CompiledRule::compile(rule, check.step_names) {
                    Ok(rule) => compiled.push(rule),
                    Err(RuleProblem::Template(side, e)) => {
                        let side = match side {
                            RuleField::Left => "left",
                            RuleField::Right => "right",
                        };
                        check.template_problem(&format!("{field}[{i}].{side}"), e);
                    }
                    Err(RuleProblem::Pattern(message)) => check.problem(&right, message),
                }
            }
            let then = c.then.as_deref().map(|t| check.target("then", t));
            let otherwise = c.otherwise.as_deref().map(|t| check.target("else", t));
            CompiledKind::Condition {
                any,
                rules: compiled,
                then: then.map(|t| t.unwrap_or(0)),
                otherwise: otherwise.map(|t| t.unwrap_or(0)),
            }
        }
        StepKind::Delay(d) => {
            let durations = match &d.seconds {
                super::step::DelaySeconds::Fixed(s) => vec![check.seconds("seconds", *s)],
                super::step::DelaySeconds::Backoff(list) if list.is_empty() => {
                    check.problem("seconds", "the backoff list is empty".into());
                    return None;
                }
                super::step::DelaySeconds::Backoff(list) => list
                    .iter()
                    .enumerate()
                    .map(|(i, s)| check.seconds(&format!("seconds[{i}]"), *s))
                    .collect(),
            };
            CompiledKind::Delay {
                durations: durations.into_iter().collect::<Option<Vec<_>>>()?,
            }
        }
        StepKind::GoTo(g) => {
            if g.target == check.name {
                // Each visit would only jump back here: with `max_visits` it
                // spins that many times and goes to the fallback, without one forever.
                check.problem(
                    "target",
                    format!(
                        "`{}` is this GoTo itself: the jump can only spin, even with `max_visits`; \
                         jump to the step to repeat instead",
                        g.target
                    ),
                );
                return None;
            }
            let target = check.target("target", &g.target);
            let fallback = g.fallback.as_deref().and_then(|f| check.target("fallback", f));
            match (g.max_visits, &g.fallback) {
                (Some(_), None) => check.problem("fallback", "`max_visits` needs a `fallback` step".into()),
                (None, Some(_)) => {
                    check.problem("max_visits", "`fallback` is only used with `max_visits`".into())
                }
                (Some(0), _) => check.problem("max_visits", "must be at least 1".into()),
                _ => {}
            }
            CompiledKind::GoTo {
                target: target?,
                max_visits: g.max_visits,
                fallback,
            }
        }
        StepKind::Assign(a) => CompiledKind::Assign {
            team: a
                .team
                .as_deref()
                .map(|t| check.template("team", t))
                .flatten_checked()?,
            agent: a
                .agent
                .as_deref()
                .map(|t| check.template("agent", t))
                .flatten_checked()?,
            note: a
                .note
                .as_deref()
                .map(|t| check.template("note", t))
                .flatten_checked()?,
        },
    })
}

fn compile_api(api: &Api, check: &mut StepCheck<'_>) -> Option<CompiledApi> {
    let url = check.template("url", &api.url);
    if let Some(url) = &url {
        check_url_shape(&api.url, url, check);
    }
    let mut headers = Vec::with_capacity(api.headers.len());
    for (name, value) in &api.headers {
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid_name {
            check.problem(
                &format!("headers.{name}"),
                format!("`{name}` is not a valid header name"),
            );
        }
        if value.contains(['\r', '\n']) {
            check.problem(
                &format!("headers.{name}"),
                "a header value cannot contain a line break".into(),
            );
        }
        if let Some(t) = check.template(&format!("headers.{name}"), value) {
            headers.push((Arc::from(name.as_str()), t));
        }
    }
    // Checked in full before giving up, so every problem of the step is reported.
    let body = api.body.as_ref().map(|body| check.json("body", body));
    if api.body.is_some() && matches!(api.method, Method::Get | Method::Head) {
        // The guide sends "an empty JSON body" with its GET; HTTP gives a GET
        // body no meaning, so it is dropped rather than sent.
        tracing::debug!(step = check.name, "body of a {} request is ignored", api.method);
    }
    let timeout = match api.timeout_seconds {
        Some(s) if s <= 0.0 => {
            check.problem("timeout_seconds", format!("must be more than 0, found {s}"));
            None
        }
        Some(s) => check.seconds("timeout_seconds", s),
        None => None,
    };
    let on_error = api.on_error.as_deref().and_then(|t| check.target("on_error", t));
    let retry = &api.retry.clone().unwrap_or_default();
    for (field, value) in [
        ("retry.initial_backoff_seconds", retry.initial_backoff_seconds),
        ("retry.max_backoff_seconds", retry.max_backoff_seconds),
        ("retry.max_elapsed_seconds", retry.max_elapsed_seconds),
    ] {
        if let Some(v) = value {
            check.seconds(field, v);
        }
    }
    if retry.max_attempts == Some(0) {
        check.problem(
            "retry.max_attempts",
            "must be at least 1 (1 means no retries)".into(),
        );
    }
    let mut error_hints = BTreeMap::new();
    for (status, hint) in &api.error_hints {
        match status.parse::<u16>() {
            Ok(code) if (100..=599).contains(&code) => {
                error_hints.insert(code, hint.clone());
            }
            _ => check.problem(
                &format!("error_hints.{status}"),
                format!("`{status}` is not an HTTP status code"),
            ),
        }
    }
    if api.max_response_bytes == Some(0) {
        check.problem("max_response_bytes", "must be more than 0".into());
    }
    for (i, name) in api.stream_until.iter().enumerate() {
        if name.trim().is_empty() || name.contains(['\r', '\n']) {
            check.problem(
                &format!("stream_until[{i}]"),
                format!("{name:?} is not an event name"),
            );
        }
    }
    Some(CompiledApi {
        method: api.method,
        url: url?,
        headers,
        body: body
            .flatten_checked()?
            .filter(|_| !matches!(api.method, Method::Get | Method::Head)),
        timeout,
        on_error,
        retry: retry.clone(),
        max_response_bytes: api.max_response_bytes,
        error_hints,
        stream_until: api.stream_until.clone(),
    })
}

/// A URL must start with `http://`, `https://` or a host value (`var.*`)
/// holding the base URL; anything else could let a reply pick the host.
fn check_url_shape(text: &str, url: &Template, check: &mut StepCheck<'_>) {
    let t = text.trim_start();
    let leading = (t.starts_with("<<") || t.starts_with("{{"))
        .then(|| url.paths().next())
        .flatten();
    let lower = text.to_ascii_lowercase();
    match leading {
        Some(path) if path.root != Root::Var => check.problem(
            "url",
            format!(
                "`{text}` starts with `{}`: only a host value (`var.*`) may supply the start of a URL, \
                 so a reply or an API result cannot choose where the request goes",
                path.as_str()
            ),
        ),
        Some(_) => {}
        None if lower.starts_with("http://") || lower.starts_with("https://") => {}
        None => check.problem(
            "url",
            format!("`{text}` must start with http://, https:// or a base URL placeholder such as <<var.base_url>>"),
        ),
    }
}

trait FlattenChecked<T> {
    /// `None` (field absent) → `Some(None)`; `Some(None)` (invalid) → `None`.
    fn flatten_checked(self) -> Option<Option<T>>;
}

impl<T> FlattenChecked<T> for Option<Option<T>> {
    fn flatten_checked(self) -> Option<Option<T>> {
        match self {
            None => Some(None),
            Some(None) => None,
            Some(Some(t)) => Some(Some(t)),
        }
    }
}

/// Tarjan's algorithm, iterative; returns the strongly connected components.
fn strongly_connected(n: usize, edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut components = Vec::new();
    let mut counter = 0;
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work: Vec<(usize, usize)> = vec![(root, 0)];
        while let Some(&mut (v, ref mut next_edge)) = work.last_mut() {
            if *next_edge == 0 && index[v] == usize::MAX {
                index[v] = counter;
                low[v] = counter;
                counter += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if let Some(&w) = edges[v].get(*next_edge) {
                *next_edge += 1;
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }
    components
}

/// A Message's `whatsapp_template` must name a template and its language,
/// as the Cloud API requires.
fn check_whatsapp_template(check: &mut StepCheck<'_>, value: &Value) {
    let name_ok = value
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.trim().is_empty());
    // `"language": "en_US"` or, as the Cloud API writes it, `{"code": "en_US"}`.
    let code_ok = value
        .pointer("/language/code")
        .or_else(|| value.get("language"))
        .and_then(Value::as_str)
        .is_some_and(|c| !c.trim().is_empty());
    if !value.is_object() {
        check.problem(
            "whatsapp_template",
            "must be an object: {\"name\", \"language\": {\"code\"}}".into(),
        );
    } else if !name_ok {
        check.problem("whatsapp_template.name", "must name the approved template".into());
    } else if !code_ok {
        check.problem(
            "whatsapp_template.language.code",
            "must give the template's language code, e.g. \"en_US\"".into(),
        );
    }
    if let Some(components) = value.get("components")
        && !components.is_array()
    {
        check.problem("whatsapp_template.components", "must be a list".into());
    }
}
