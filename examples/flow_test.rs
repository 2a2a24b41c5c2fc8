//! Runs a folder of conversation test files (see `chatflow::testing`) and
//! prints pass or fail for each; exits non-zero when any fails.
//!
//! ```text
//! cargo run --example flow_test -- tests/conversations
//! cargo run --example flow_test -- tests/conversations/openai_responses_rate_limited.yaml
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use chatflow::testing::{run_file, test_files};

fn main() -> ExitCode {
    let paths: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if paths.is_empty() {
        eprintln!("usage: flow_test <folder or file.yaml>...");
        return ExitCode::from(2);
    }
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            match test_files(&path) {
                Ok(found) => files.extend(found),
                Err(error) => {
                    eprintln!("{error}");
                    return ExitCode::from(2);
                }
            }
        } else {
            files.push(path);
        }
    }
    let mut failed = 0;
    for file in &files {
        match run_file(file) {
            Ok(report) => println!(
                "ok    {} ({} turns, {} API calls, {:?} virtual)",
                file.display(),
                report.turns,
                report.api_calls,
                report.elapsed
            ),
            Err(error) => {
                failed += 1;
                println!("FAIL  {}\n{error}\n", file.display());
            }
        }
    }
    println!("\n{} passed, {failed} failed", files.len() - failed);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
