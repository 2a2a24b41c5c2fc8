//! # chatflow
//!
//! Run customer-support conversation flows — ask a question, save the
//! answer, call an API, branch, wait, send a message, hand off to a human —
//! inside your Rust application.
//!
//! A [`Flow`] is data (JSON): a list of typed steps. An [`Engine`] runs any
//! number of conversations of it at once; each [`Conversation`] is a plain
//! serializable value the host can park between user messages and resume
//! anywhere. HTTP goes through the [`http::HttpClient`] trait (reqwest by
//! default) and time through the [`Clock`] trait, so tests run against a
//! mock server in virtual time.
//!
//! Inside, a deterministic core ([`core`]) turns a conversation, its input
//! and the time into the next effect — send this reply, make this HTTP call,
//! sleep until then, wait for the user — with no I/O and no clock of its own;
//! [`Engine::run`] and the durable [`Runtime`] are the drivers that perform
//! those effects. Replies reach customers where they are through a
//! [`channel::Channel`] (WhatsApp's ships with the crate), delivered from a
//! durable outbox.
//!
//! ```
//! use chatflow::{Engine, EventLog, Flow, Status};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let flow = Flow::from_json(r#"{
//!   "name": "support",
//!   "steps": [
//!     {"type": "question", "name": "Welcome", "text": "Hi! What do you need help with?"},
//!     {"type": "contact_update", "name": "Save question", "set": {"question": "<<step.Welcome.response>>"}},
//!     {"type": "condition", "name": "Wants a human?",
//!      "any": [{"left": "<<contact.question>>", "op": "contains", "right": "human", "ignore_case": true}],
//!      "then": "Assign", "else": "Answer"},
//!     {"type": "message", "name": "Answer", "text": "You asked: <<contact.question>>", "next": "Welcome"},
//!     {"type": "assign", "name": "Assign", "team": "support", "note": "<<contact.question>>"}
//!   ]
//! }"#)?;
//! let engine = Engine::builder(flow).build()?;
//! let events = EventLog::new();
//! let mut conversation = engine.start("user-1");
//!
//! engine.receive(&mut conversation, "I want a HUMAN please")?;
//! let status = engine.run(&mut conversation, &events).await?;
//! assert!(matches!(status, Status::HandedOff { .. }));
//! assert_eq!(events.texts(), ["Hi! What do you need help with?"]);
//! # Ok(())
//! # }
//! ```
//!
//! # Cargo features
//!
//! - `reqwest` (default): the HTTP transport, `http::ReqwestClient`. Without
//!   it, give the engine your own [`http::HttpClient`].
//! - `mock`: `chatflow::mock`, stateful mocks of the OpenAI endpoints the
//!   shipped flows use and of the WhatsApp Cloud API, for your tests.
//! - `sqlite`: `store::SqliteStore` (rusqlite, SQLite built in), for one host.
//! - `postgres`: `store::PostgresStore` (sqlx), for several processes
//!   sharing one database.
//! - `testing`: `chatflow::testing`, conversation tests from YAML files, run
//!   from your own `#[test]`s.
//! - `server`: `chatflow::server`, the HTTP routes (`/chat`,
//!   `/conversations/{id}`, `/healthz`, `/metrics`) as an axum `Router` to
//!   serve or mount in your own app.
//! - `whatsapp`: `chatflow::whatsapp`, the WhatsApp Cloud API channel and
//!   its webhook routes (brings `server`).
//! - `cli`: the `chatflow-server` binary (`cargo install chatflow --features
//!   cli`); it brings `server`, `whatsapp`, `reqwest`, `sqlite`, `postgres`
//!   and `mock`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod channel;
mod condition;
mod conversation;
pub mod core;
mod engine;
mod error;
mod event;
mod flow;
pub mod http;
mod projection;
mod runtime;
mod secrets;
pub mod store;
mod template;
mod time;

pub use crate::core::{Jitter, RandomJitter, RetryPolicy};
pub use condition::{Operand, Operator, Rule};
pub use conversation::{Assignment, Conversation, FlowStamp, Status};
pub use engine::{
    ConversationHandle, Engine, EngineBuilder, EngineOptions, ReplyError, ReplyMode, SendError,
};
pub use error::{BuildError, RunError};
pub use event::{Event, EventLog, EventSink};
pub use flow::{
    Api, Assign, Condition, ContactUpdate, Delay, DelaySeconds, Diagnostic, Flow, GoTo, LoadError,
    MAX_OPTIONS, Message, OptionSpec, Question, QuestionOption, RetrySettings, StartMode, Step, StepKind,
};
pub use runtime::{
    DeliveryReport, Runtime, RuntimeBuilder, RuntimeError, RuntimeOptions, Subscription, Turn,
};
pub use template::{RenderError, TemplateError};
pub use time::{Clock, SystemClock, VirtualClock};

#[cfg(feature = "mock")]
pub mod mock;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "whatsapp")]
pub mod whatsapp;
