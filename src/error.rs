//! Errors of running a conversation and of building an engine. Loading
//! errors live with the flow model ([`crate::LoadError`]), template errors
//! with templates, transport errors with HTTP.

use crate::http::{HttpError, Method};
use crate::template::RenderError;

/// Why a conversation stopped. Every message names the step; URLs and
/// bodies have secrets masked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A template could not be rendered with this conversation's values.
    #[error("step \"{step}\", field `{field}`: {source}")]
    Render {
        /// The step.
        step: String,
        /// The field (`url`, `headers.Authorization`, …).
        field: String,
        /// What went wrong.
        source: RenderError,
    },
    /// An Api step's request got no response (after retries).
    #[error("step \"{step}\": {method} {url} failed after {attempts} attempt(s): {source}")]
    Transport {
        /// The step.
        step: String,
        /// The method.
        method: Method,
        /// The URL, secrets masked.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last transport error.
        source: HttpError,
    },
    /// An Api step's request was answered with a non-2xx status (after
    /// retries) and the step has no `on_error`.
    #[error(
        "step \"{step}\": {method} {url} answered {status}{}{}",
        detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default(),
        hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    Status {
        /// The step.
        step: String,
        /// The method.
        method: Method,
        /// The URL, secrets masked.
        url: String,
        /// The status code.
        status: u16,
        /// The server's error message, when it sent one (secrets masked).
        detail: Option<String>,
        /// The step's `error_hints` entry for this status.
        hint: Option<String>,
    },
    /// More steps ran without a user reply than the engine allows.
    #[error(
        "step \"{step}\": {limit} steps ran without a reply from the user; the flow seems to loop \
         (raise EngineOptions::max_steps_without_reply if this is expected)"
    )]
    StepLimit {
        /// The step that would have run next.
        step: String,
        /// The limit.
        limit: u32,
    },
    /// The conversation was started by another flow.
    #[error("conversation runs flow \"{found}\", but this engine runs \"{expected}\"")]
    WrongFlow {
        /// The engine's flow.
        expected: String,
        /// The conversation's flow.
        found: String,
    },
    /// The conversation's flow changed and its current step is gone.
    #[error("the flow \"{flow}\" changed and no longer has step \"{step}\", where this conversation stood")]
    StepGone {
        /// The flow.
        flow: String,
        /// The missing step.
        step: String,
    },
}

/// Why an engine could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The flow uses host values or secrets that were not given.
    #[error("flow \"{flow}\" needs {}", describe_missing(vars, secrets))]
    Missing {
        /// The flow.
        flow: String,
        /// Missing `var.*` names.
        vars: Vec<String>,
        /// Missing `secret.*` names.
        secrets: Vec<String>,
    },
    /// No HTTP client was given and the `reqwest` feature is off.
    #[error("no HTTP client: enable the `reqwest` feature or call EngineBuilder::http_client")]
    NoHttpClient,
    /// The default HTTP client could not be created.
    #[error("cannot create the HTTP client: {0}")]
    HttpClient(String),
}

fn describe_missing(vars: &[String], secrets: &[String]) -> String {
    let mut parts = Vec::new();
    if !vars.is_empty() {
        parts.push(format!("host values {}", vars.join(", ")));
    }
    if !secrets.is_empty() {
        parts.push(format!("secrets {}", secrets.join(", ")));
    }
    format!("{} that were not given", parts.join(" and "))
}
