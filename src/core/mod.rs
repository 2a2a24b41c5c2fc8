//! The deterministic core: the interpreter that turns a conversation, its
//! input and the time into the next [`Effect`], and takes each effect's
//! outcome back. It performs no I/O, reads no clock and draws no global
//! randomness (retry jitter comes from the engine's [`Jitter`] source), so
//! the same inputs give the same effects.
//!
//! The drivers perform the effects: [`crate::Engine::run`],
//! [`crate::Engine::run_until_parked`] and [`crate::Engine::spawn`] through
//! the engine's [`crate::http::HttpClient`] and [`crate::Clock`];
//! [`crate::Runtime`] through those and its [`crate::store::Store`], saving
//! where the effects say a crash would cost something.
//!
//! A driver's loop, in short:
//!
//! ```text
//! let mut machine = engine.machine(&mut conversation);
//! loop {
//!     match machine.poll(&mut conversation, clock.now()) {
//!         Effect::Send(entry)          => deliver(entry),
//!         Effect::Http { request, .. } => { let r = http.send(request).await;
//!                                           machine.http_done(&mut conversation, r, clock.now()) }
//!         Effect::Sleep { until, .. }  => clock.sleep_until(until).await,
//!         Effect::AwaitReply           => engine.receive(&mut conversation, next_message().await)?,
//!         _                            => break, // handed off, finished, failed, ended
//!     }
//! }
//! ```
//!
//! Inputs: a user reply is queued in the conversation
//! ([`crate::Engine::receive`]) before the next poll; "the time has come" is
//! a poll with a later `now`; an HTTP outcome goes to [`Machine::http_done`].

mod api;
mod effect;
mod machine;
pub(crate) mod retry;
pub(crate) mod scope;

pub use effect::{Effect, Outbound, Wake};
pub use machine::Machine;
pub use retry::{Jitter, RandomJitter, RetryPolicy};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use serde_json::Value;

use crate::engine::EngineOptions;
use crate::flow::Flow;
use crate::http::Header;
use crate::secrets::{Redactor, Secret};

/// What the core knows of an engine: the compiled flow, host values and
/// secrets, options and the jitter source. No transport, no clock.
pub(crate) struct Interpreter {
    pub(crate) flow: Flow,
    pub(crate) vars: BTreeMap<String, Value>,
    pub(crate) secrets: BTreeMap<String, Secret>,
    /// Masks the secrets out of whatever is kept or shown.
    pub(crate) redactor: Redactor,
    pub(crate) options: EngineOptions,
    /// Per step, its requests' headers when they are the same for every
    /// conversation (see [`scope::constant_headers`]): rendered once here
    /// instead of per request.
    pub(crate) constant_headers: Vec<Option<Vec<Header>>>,
    pub(crate) jitter: Arc<dyn Jitter>,
    /// Steps run, over all conversations, for metrics.
    pub(crate) steps_run: AtomicU64,
}

impl Interpreter {
    pub(crate) fn new(
        flow: Flow,
        vars: BTreeMap<String, Value>,
        secrets: BTreeMap<String, Secret>,
        options: EngineOptions,
        jitter: Arc<dyn Jitter>,
    ) -> Interpreter {
        let redactor = Redactor::new(&secrets);
        let constant_headers = scope::constant_headers(&flow.program().steps, &vars, &secrets);
        Interpreter {
            flow,
            vars,
            secrets,
            redactor,
            options,
            constant_headers,
            jitter,
            steps_run: AtomicU64::new(0),
        }
    }
}
