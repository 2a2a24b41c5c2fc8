//! An interactive terminal support bot running a chatflow flow file.
//!
//! ```sh
//! cargo run --example support_bot                       # built-in mock assistant, no key needed
//! OPENAI_API_KEY=sk-... OPENAI_MODEL=gpt-4.1-mini \
//!   cargo run --example support_bot -- --flow flows/openai_responses.json
//! ```
//!
//! Each line on stdin is the user's reply; each bot message is printed as
//! soon as it is sent. Works with stdin as a pipe. Exits 0 on a handoff, at
//! the end of the flow or at the end of input; non-zero on an error.
//!
//! Environment: `OPENAI_API_KEY`, `OPENAI_BASE_URL` (default
//! `https://api.openai.com/v1`), `OPENAI_ASSISTANT_ID` (Assistants flow),
//! `OPENAI_MODEL` and `OPENAI_INSTRUCTIONS` (Responses flow). Arguments:
//! `--flow PATH`, `--handoff-marker TEXT`.

use std::io::Write;
use std::process::ExitCode;

use chatflow::mock::MockOpenAi;
use chatflow::{Engine, Event, Flow, Status};
use tokio::io::{AsyncBufReadExt, BufReader};

const DEFAULT_FLOW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/flows/openai_assistant.json");
const DEMO_INSTRUCTIONS: &str = "You are a friendly customer-support assistant. Answer briefly. \
     When the user asks for a person or the question needs an account change, reply with HANDOFF.";

/// Flow variable ← environment variable, for the values the shipped flows use.
const ENV_VARS: &[(&str, &str)] = &[
    ("openai_base_url", "OPENAI_BASE_URL"),
    ("assistant_id", "OPENAI_ASSISTANT_ID"),
    ("model", "OPENAI_MODEL"),
    ("instructions", "OPENAI_INSTRUCTIONS"),
];

struct Args {
    flow: String,
    handoff_marker: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        flow: DEFAULT_FLOW.to_string(),
        handoff_marker: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--flow" => args.flow = it.next().ok_or("--flow needs a path")?,
            "--handoff-marker" => {
                args.handoff_marker = Some(it.next().ok_or("--handoff-marker needs a text")?)
            }
            "-h" | "--help" => return Err("usage: support_bot [--flow PATH] [--handoff-marker TEXT]".into()),
            other => return Err(format!("unknown argument `{other}` (try --help)")),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("support_bot: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let args = parse_args()?;
    let flow = Flow::from_path(&args.flow).map_err(|e| e.to_string())?;
    let mut builder = Engine::builder(flow.clone());
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());

    // Without a key, talk to the built-in mock so the demo runs offline.
    let _mock;
    match env("OPENAI_API_KEY") {
        Some(key) => builder = builder.secret("OPENAI_API_KEY", key),
        None => {
            let mock = MockOpenAi::start().await;
            eprintln!(
                "support_bot: OPENAI_API_KEY is not set; talking to the built-in demo assistant at {}",
                mock.base_url()
            );
            builder = builder
                .secret("OPENAI_API_KEY", mock.api_key())
                .var("openai_base_url", mock.base_url())
                .var("assistant_id", mock.assistant_id())
                .var("model", "demo-model")
                .var("instructions", DEMO_INSTRUCTIONS);
            _mock = mock;
        }
    }
    for (var, name) in ENV_VARS {
        if let Some(value) = env(name) {
            builder = builder.var(*var, value);
        }
    }
    if let Some(marker) = args.handoff_marker {
        builder = builder.var("handoff_marker", marker);
    }
    let engine = builder.build().map_err(|e| explain_missing(e, &flow))?;

    let print = |event: Event| {
        let mut out = std::io::stdout().lock();
        let _ = match &event {
            Event::Message { text, .. } => writeln!(out, "bot: {text}"),
            Event::Handoff { assignment, .. } => writeln!(
                out,
                "handoff: conversation assigned to {}",
                assignment
                    .team
                    .as_deref()
                    .or(assignment.agent.as_deref())
                    .unwrap_or("a human agent")
            ),
            _ => Ok(()),
        };
        let _ = out.flush();
    };

    let mut conversation = engine.start("terminal");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        match engine
            .run(&mut conversation, &print)
            .await
            .map_err(|e| e.to_string())?
        {
            Status::AwaitingReply => {}
            _ => return Ok(()),
        }
        let Some(line) = lines
            .next_line()
            .await
            .map_err(|e| format!("reading stdin: {e}"))?
        else {
            return Ok(());
        };
        engine
            .receive(&mut conversation, line)
            .map_err(|e| e.to_string())?;
    }
}

/// Names missing values by the environment variable that sets them.
fn explain_missing(error: chatflow::BuildError, flow: &Flow) -> String {
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
