//! An HTTP support-bot server: a chatflow flow behind `POST /chat`, with a
//! durable store, the Delay scheduler, Prometheus metrics and graceful
//! shutdown. It is the `chatflow-server` binary under the name the
//! benchmark kit and the README use; `chatflow::server` describes the
//! routes, `--help` the arguments.
//!
//! ```sh
//! cargo run --example support_server     # built-in mock assistant, SQLite file ./chatflow.db
//! DATABASE_URL=memory cargo run --example support_server -- --listen 127.0.0.1:8099
//! curl -s localhost:8099/chat -H 'content-type: application/json' \
//!      -d '{"conversation_id": "c1", "text": "Where is my order?"}'
//! ```
//!
//! Arguments: `--flow PATH`, `--listen ADDR` (default `127.0.0.1:8080`;
//! port 0 picks a free port; the bound address is printed on stdout as
//! `listening on http://ADDR`), `--handoff-marker TEXT`. Environment:
//! `DATABASE_URL` (`sqlite://FILE` — default `sqlite://chatflow.db` —,
//! `postgres://…` or `memory`), `CHATFLOW_TURN_TIMEOUT_SECS` (default 60),
//! `CHATFLOW_API_TOKEN` (when set, `/chat` and `/conversations` need
//! `Authorization: Bearer <token>`), `CHATFLOW_SHUTDOWN_GRACE_SECS` (default
//! 30), `RUST_LOG` (default `info`), `OPENAI_API_KEY` (without it the
//! built-in mock answers), `OPENAI_BASE_URL`, `OPENAI_ASSISTANT_ID`,
//! `OPENAI_MODEL`, `OPENAI_INSTRUCTIONS`.

use std::io::Write;
use std::process::ExitCode;

use chatflow::server::cli::{self, Args};

#[tokio::main]
async fn main() -> ExitCode {
    cli::init_tracing();
    let args = Args::from_command_line();
    let announce = |addr| {
        // The address on stdout, flushed at once: scripts wait for this line.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on http://{addr}").and_then(|()| out.flush());
    };
    match cli::run(args, announce).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("support_server: {}", cli::report(&e));
            ExitCode::FAILURE
        }
    }
}
