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
//!
//! WhatsApp (docs/whatsapp.md): with `WHATSAPP_VERIFY_TOKEN`,
//! `WHATSAPP_APP_SECRET`, `WHATSAPP_ACCESS_TOKEN` (secrets: environment
//! only, never printed) and `WHATSAPP_PHONE_NUMBER_ID` (or
//! `--whatsapp-phone-number-id`) set, it also serves Meta's callback URL
//! `GET`/`POST /webhooks/whatsapp` and sends the replies through the Graph
//! API (`WHATSAPP_GRAPH_URL`, default `https://graph.facebook.com/v23.0`);
//! without `--flow` it then runs `flows/whatsapp_support.json`. Some but not
//! all of the four is a startup error naming the missing ones.
//!
//! ```sh
//! WHATSAPP_VERIFY_TOKEN=… WHATSAPP_APP_SECRET=… WHATSAPP_ACCESS_TOKEN=… \
//! WHATSAPP_PHONE_NUMBER_ID=106540352242922 cargo run --example support_server -- --listen 0.0.0.0:8080
//! ```

use std::process::ExitCode;

// The `chatflow-server` binary's own code, so the two cannot drift apart.
#[path = "../src/bin/chatflow-server.rs"]
mod chatflow_server;

fn main() -> ExitCode {
    chatflow_server::main()
}
