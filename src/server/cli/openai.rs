//! The OpenAI settings of the shipped flows, and the built-in mock that
//! answers when no API key is set.

use super::args::{Args, ENV_OF_VAR};
use crate::mock::MockOpenAi;
use crate::{BuildError, EngineBuilder, Flow};

const DEMO_INSTRUCTIONS: &str = "You are a friendly customer-support assistant. Answer briefly. \
     When the user asks for a person or the question needs an account change, reply with HANDOFF.";

/// An environment variable, treating an empty value as unset.
pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Sets the OpenAI key and values. Without `OPENAI_API_KEY`, starts the
/// built-in mock so the server runs offline, and returns it: keep it alive
/// as long as the engine.
pub(crate) async fn configure(
    mut builder: EngineBuilder,
    args: &Args,
) -> (EngineBuilder, Option<MockOpenAi>) {
    let mut mock = None;
    match env("OPENAI_API_KEY") {
        Some(key) => builder = builder.secret("OPENAI_API_KEY", key),
        None => {
            let demo = MockOpenAi::start().await;
            tracing::warn!(
                base_url = %demo.base_url(),
                "OPENAI_API_KEY is not set; talking to the built-in demo assistant"
            );
            builder = builder
                .secret("OPENAI_API_KEY", demo.api_key())
                .var("openai_base_url", demo.base_url())
                .var("assistant_id", demo.assistant_id())
                .var("model", "demo-model")
                .var("instructions", DEMO_INSTRUCTIONS);
            mock = Some(demo);
        }
    }
    for (var, value) in args.openai_vars() {
        if let Some(value) = value {
            builder = builder.var(var, value);
        }
    }
    if let Some(marker) = &args.handoff_marker {
        builder = builder.var("handoff_marker", marker.as_str());
    }
    (builder, mock)
}

/// Names the values a flow misses by the argument or variable that sets them.
pub(crate) fn explain_missing(error: BuildError, flow: &Flow, args: &Args) -> String {
    let given: Vec<&str> = args
        .openai_vars()
        .into_iter()
        .filter_map(|(var, value)| value.map(|_| var))
        .collect();
    let missing: Vec<String> = flow
        .required_vars()
        .filter(|v| !given.contains(v))
        .map(|v| match ENV_OF_VAR.iter().find(|(var, _)| *var == v) {
            Some((_, name)) => format!("{name} (the flow's var.{v})"),
            None => format!("var.{v}"),
        })
        .collect();
    if missing.is_empty() {
        return error.to_string();
    }
    format!(
        "the flow \"{}\" needs {} to be set",
        flow.name(),
        missing.join(", ")
    )
}
