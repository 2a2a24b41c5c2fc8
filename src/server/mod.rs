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
//!   transcript).
//! - `GET /conversations/{id}`: `{"conversation_id", "status", "transcript"}`
//!   (404 when unknown).
//! - `GET /healthz`: `ok`. `GET /metrics`: the [`Metrics`] in the
//!   OpenMetrics text format.
//!
//! With [`ServerSettings::with_api_token`], `/chat` and `/conversations` need
//! `Authorization: Bearer <token>`; `/healthz` and `/metrics` stay open.
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
//! // it when flows have Delays.
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
mod metrics;
mod routes;
mod serve;
mod settings;
mod state;

#[cfg(feature = "cli")]
pub mod cli;

use axum::Router;

pub use metrics::{InstrumentedClient, Metrics};
pub use serve::serve;
pub use settings::ServerSettings;

use crate::runtime::Runtime;

/// The routes over `runtime`, with their state (settings, metrics, the
/// turns in flight) inside: serve it with `axum::serve` or `.nest()` it in
/// your own app. The scheduler is not part of it: run
/// [`Runtime::run_scheduler`] beside it (as [`serve`] does).
pub fn router(runtime: Runtime, settings: ServerSettings) -> Router {
    routes::app(state::AppState::new(runtime, settings))
}
