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

use std::process::ExitCode;

// The `chatflow-server` binary's own code, so the two cannot drift apart.
#[path = "../src/bin/chatflow-server.rs"]
mod chatflow_server;

fn main() -> ExitCode {
    chatflow_server::main()
}
