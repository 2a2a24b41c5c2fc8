//! Checks flow files and reports every problem in each.
//!
//! ```text
//! cargo run --example validate -- FILE...
//! ```
//!
//! For each file, prints either every problem found (with step, field and
//! line/column) or a one-line summary such as
//! `flows/x.json: ok — flow "support", 12 steps, needs vars: base_url; secrets: OPENAI_API_KEY`.
//! Exits 0 when every file is valid, 1 when any has problems, 2 on bad usage.

use std::process::ExitCode;

use chatflow::Flow;

fn main() -> ExitCode {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        eprintln!("usage: cargo run --example validate -- FILE...");
        eprintln!("Checks chatflow flow files (JSON) and lists every problem in each.");
        return ExitCode::from(2);
    }
    let mut failed = false;
    for file in &files {
        match Flow::from_path(file) {
            Ok(flow) => println!("{file}: ok — {}", summary(&flow)),
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
