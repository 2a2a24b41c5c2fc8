//! What the example programs share: OpenAI settings from the environment,
//! and the built-in mock when no API key is set.

use chatflow::mock::MockOpenAi;
use chatflow::{EngineBuilder, Flow};

pub const DEMO_INSTRUCTIONS: &str = "You are a friendly customer-support assistant. Answer briefly. \
     When the user asks for a person or the question needs an account change, reply with HANDOFF.";

/// Flow variable ← environment variable, for the values the shipped flows use.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("openai_base_url", "OPENAI_BASE_URL"),
    ("assistant_id", "OPENAI_ASSISTANT_ID"),
    ("model", "OPENAI_MODEL"),
    ("instructions", "OPENAI_INSTRUCTIONS"),
];

/// An environment variable, treating an empty value as unset.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Sets the OpenAI secret and host values from the environment. Without
/// `OPENAI_API_KEY`, starts the built-in mock so the demo runs offline, says
/// so on stderr as `program`, and returns it: keep it alive as long as the engine.
pub async fn configure_openai(
    mut builder: EngineBuilder,
    program: &str,
    handoff_marker: Option<String>,
) -> (EngineBuilder, Option<MockOpenAi>) {
    let mut mock = None;
    match env("OPENAI_API_KEY") {
        Some(key) => builder = builder.secret("OPENAI_API_KEY", key),
        None => {
            let demo = MockOpenAi::start().await;
            eprintln!(
                "{program}: OPENAI_API_KEY is not set; talking to the built-in demo assistant at {}",
                demo.base_url()
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
    for (var, name) in ENV_VARS {
        if let Some(value) = env(name) {
            builder = builder.var(*var, value);
        }
    }
    if let Some(marker) = handoff_marker {
        builder = builder.var("handoff_marker", marker);
    }
    (builder, mock)
}

/// Names missing values by the environment variable that sets them.
pub fn explain_missing(error: chatflow::BuildError, flow: &Flow) -> String {
    let missing: Vec<String> = flow
        .required_vars()
        .filter(|v| {
            !ENV_VARS
                .iter()
                .any(|(var, name)| var == v && std::env::var(name).is_ok())
        })
        .map(|v| match ENV_VARS.iter().find(|(var, _)| *var == v) {
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
