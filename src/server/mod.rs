//! An HTTP front for a [`Runtime`]: an axum [`Router`] to serve as it is
//! ([`serve`], or the `chatflow-server` binary) or to mount in your own axum
//! app (feature `server`).
//!
//! Routes:
//!
//! - `POST /chat` with `{"conversation_id", "text", "message_id"?}` answers,
//!   when the bot next waits for the user, hands off or ends,
//!   `200 {"conversation_id", "messages", "reply", "handoff", "status"}`; a
//!   repeated `message_id` answers `200 {"duplicate": true, "messages": []}`.
//!   Errors are `{"error": reason}`: 400 for a malformed body, a bad
//!   conversation id or a text over the engine's `max_reply_bytes`; 401
//!   without the bearer token; 502 when an API refused a call and the
//!   conversation failed; 504 when no answer came within the turn timeout
//!   (the turn goes on in the background and its answer lands in the
//!   transcript and on the event stream).
//! - `GET /conversations/{id}`: `{"conversation_id", "status", "transcript"}`
//!   (404 when unknown).
//! - `GET /conversations/{id}/events`: the conversation's bot entries as
//!   [server-sent events], as turns commit them — a request's replies, a
//!   Delay's follow-up resumed later, an agent's answer — so a web client
//!   sees the replies no request waits for. Each event has `id:` the
//!   entry's transcript seq, a name — `handoff` for a handoff notice,
//!   `question` for a message that offers options, `message` otherwise —
//!   and `data:` the entry's JSON as the transcript shows it. It starts
//!   after the seq in the `Last-Event-ID` header (what an `EventSource`
//!   sends when it reconnects), or in `?after=<seq>` for a client that
//!   cannot set headers (the header wins), or from the start. An unknown
//!   conversation is not a 404: its stream stays open, sending keep-alive
//!   comments ([`ServerSettings::with_event_keep_alive`]), until entries
//!   appear, so a client may open it before its first `POST /chat`. A store
//!   error ends the stream (logged); the client resumes from its last id.
//!   Streams end when the server shuts down ([`Shutdown`]).
//! - `GET /healthz`: `ok`. `GET /metrics`: the [`Metrics`] in the
//!   OpenMetrics text format.
//!
//! With [`ServerSettings::with_api_token`], `/chat` and `/conversations`
//! (with their events) need `Authorization: Bearer <token>`; `/healthz` and
//! `/metrics` stay open. The token is taken from that header only, never
//! from the URL, where proxies' access logs and browser histories would
//! keep it: a browser's `EventSource`, which cannot set headers, works
//! when no token is set (a server behind the host's own authentication);
//! otherwise a page reads the stream with `fetch()` and a
//! `ReadableStream`, which send the header (and `Last-Event-ID` on
//! reconnection).
//!
//! `/chat` is a synchronous channel: each reply belongs to the one response
//! whose message produced it (the transcript's `reply_to`), never to two,
//! even when messages of one conversation overlap; a reply produced after
//! its response was sent (a Delay's follow-up, a turn past the timeout)
//! reaches the client through the event stream or the transcript.
//!
//! [`serve`] runs the runtime's scheduler and its delivery worker
//! ([`Runtime::run_deliveries`]) beside the routes. A host that mounts
//! [`router`] runs them itself, and gives the router a [`Shutdown`] to
//! trigger with its graceful shutdown. To count undelivered replies in
//! `GET /metrics`, pass [`Metrics::event_sink`] to
//! [`RuntimeBuilder::events`](crate::RuntimeBuilder::events) when building
//! the runtime, and the same [`Metrics`] to
//! [`ServerSettings::with_metrics`]; to count and time every delivery
//! attempt, register each channel wrapped in [`Metrics::instrument_channel`]
//! (see [`Metrics`]).
//!
//! [server-sent events]: https://html.spec.whatwg.org/multipage/server-sent-events.html
//!
//! Mounting the routes under a prefix of a host's app:
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Router, body::Body, http::Request, routing::get};
//! use chatflow::server::{ServerSettings, router};
//! use chatflow::{Engine, Flow, Runtime, store::MemoryStore};
//! use tower::ServiceExt; // for `oneshot`
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let flow = Flow::from_json(r#"{"name": "echo", "steps": [
//!   {"type": "question", "name": "Ask", "text": "Say something"},
//!   {"type": "message", "name": "Echo", "text": "You said <<step.Ask.response>>", "next": "Ask"}
//! ]}"#)?;
//! let runtime = Runtime::new(Engine::builder(flow).build()?, Arc::new(MemoryStore::new()));
//!
//! let app = Router::new()
//!     .route("/", get(|| async { "the host's own page" }))
//!     .nest("/bot", router(runtime.clone(), ServerSettings::new()));
//! // Serve `app` with `axum::serve`; run `runtime.run_scheduler(…)` beside
//! // it when flows have Delays, and `runtime.run_deliveries(…)` when the
//! // runtime has channels.
//!
//! let response = app
//!     .oneshot(
//!         Request::post("/bot/chat")
//!             .header("content-type", "application/json")
//!             .body(Body::from(r#"{"conversation_id": "c1", "text": "hello"}"#))?,
//!     )
//!     .await?;
//! assert_eq!(response.status(), 200);
//! let body = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
//! let body: serde_json::Value = serde_json::from_slice(&body)?;
//! assert_eq!(body["messages"], serde_json::json!(["Say something", "You said hello", "Say something"]));
//! # Ok(())
//! # }
//! ```

mod auth;
mod body;
mod chat;
mod conversation;
mod detach;
mod events;
mod metrics;
mod routes;
mod serve;
mod settings;
mod shutdown;
mod state;

#[cfg(feature = "cli")]
pub mod cli;

use axum::Router;

pub use metrics::{InstrumentedClient, Metrics};
pub use serve::serve;
pub use settings::ServerSettings;
pub use shutdown::Shutdown;

use crate::runtime::Runtime;

/// The routes over `runtime`, with their state (settings, metrics, the
/// turns in flight) inside: serve it with `axum::serve` or `.nest()` it in
/// your own app. The scheduler and the delivery worker are not part of it:
/// run [`Runtime::run_scheduler`] and [`Runtime::run_deliveries`] beside it
/// (as [`serve`] does), and end its event streams with a [`Shutdown`]
/// ([`ServerSettings::with_shutdown`]) when you stop serving.
pub fn router(runtime: Runtime, settings: ServerSettings) -> Router {
    routes::app(state::AppState::new(runtime, settings))
}
