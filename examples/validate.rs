//! Checks flow files and reports every problem in each; optionally draws them.
//!
//! ```text
//! cargo run --example validate -- FILE...
//! cargo run --example validate -- --mermaid FILE...
//! cargo run --example validate -- --svg FILE > flow.svg
//! ```
//!
//! For each file, prints either every problem found (with step, field and
//! line/column) or a one-line summary such as
//! `flows/x.json: ok — flow "support", 12 steps, needs vars: base_url; secrets: OPENAI_API_KEY`.
//! With `--mermaid`, each valid flow's Mermaid flowchart goes to stdout
//! instead of the summary (which goes to stderr), ready to paste into a
//! GitHub comment in a ```` ```mermaid ```` block; with `--svg` (one file),
//! its SVG diagram does.
//! Exits 0 when every file is valid, 1 when any has problems, 2 on bad usage.

use std::process::ExitCode;

use chatflow::Flow;

/// What to print for a valid flow.
#[derive(Clone, Copy, PartialEq)]
enum Output {
    Summary,
    Mermaid,
    Svg,
}

const USAGE: &str = "usage: cargo run --example validate -- [--mermaid | --svg] FILE...";

fn main() -> ExitCode {
    let mut output = Output::Summary;
    let mut files = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--mermaid" if output == Output::Summary => output = Output::Mermaid,
            "--svg" if output == Output::Summary => output = Output::Svg,
            "--mermaid" | "--svg" => return usage("give one of --mermaid and --svg"),
            flag if flag.starts_with("--") => return usage(&format!("unknown option {flag}")),
            _ => files.push(arg),
        }
    }
    if files.is_empty() {
        return usage("Checks chatflow flow files (JSON) and lists every problem in each.");
    }
    if output == Output::Svg && files.len() > 1 {
        return usage("--svg draws one file");
    }
    let mut failed = false;
    for file in &files {
        match Flow::from_path(file) {
            Ok(flow) => match output {
                Output::Summary => println!("{file}: ok — {}", summary(&flow)),
                Output::Mermaid => {
                    eprintln!("{file}: ok — {}", summary(&flow));
                    print!("{}", flow.to_mermaid());
                }
                Output::Svg => {
                    eprintln!("{file}: ok — {}", summary(&flow));
                    print!("{}", flow.to_svg());
                }
            },
            Err(err) => {
                failed = true;
                println!("{err}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn usage(why: &str) -> ExitCode {
    eprintln!("{USAGE}");
    eprintln!("{why}");
    ExitCode::from(2)
}

/// `flow "name", 12 steps, needs vars: a, b; secrets: K`.
fn summary(flow: &Flow) -> String {
    let count = flow.steps().len();
    let mut out = format!(
        "flow \"{}\", {count} step{}",
        flow.name(),
        if count == 1 { "" } else { "s" }
    );
    let vars: Vec<&str> = flow.required_vars().collect();
    let secrets: Vec<&str> = flow.required_secrets().collect();
    let mut needs = Vec::new();
    if !vars.is_empty() {
        needs.push(format!("vars: {}", vars.join(", ")));
    }
    if !secrets.is_empty() {
        needs.push(format!("secrets: {}", secrets.join(", ")));
    }
    if !needs.is_empty() {
        out.push_str(", needs ");
        out.push_str(&needs.join("; "));
    }
    out
}
