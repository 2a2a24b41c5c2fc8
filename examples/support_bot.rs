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

use chatflow::{Engine, Event, Flow, Status};
use tokio::io::{AsyncBufReadExt, BufReader};

mod common;

const DEFAULT_FLOW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/flows/openai_assistant.json");

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
    let builder = Engine::builder(flow.clone());

    // Without a key, the built-in mock answers; it lives as long as `_mock`.
    let (builder, _mock) = common::configure_openai(builder, "support_bot", args.handoff_marker).await;
    let engine = builder.build().map_err(|e| common::explain_missing(e, &flow))?;

    let print = |event: Event| {
        let mut out = std::io::stdout().lock();
        let _ = match &event {
            Event::Message { text, options, .. } => writeln!(out, "bot: {text}").and_then(|()| {
                // Numbered, as the user may answer by number, title or id.
                for (n, option) in options.iter().enumerate() {
                    writeln!(out, "  {}. {}", n + 1, option.title)?;
                }
                Ok(())
            }),
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
