//! The in-process driver: an [`Engine`] runs any number of conversations of
//! one flow at once, each a plain [`Conversation`] value, performing the
//! core's effects ([`crate::core`]) through its HTTP client and clock.
//!
//! - `mod.rs`: the engine, its builder, and starting/feeding conversations;
//! - [`drive`]: the loop behind [`Engine::run`], [`Engine::run_until_parked`]
//!   and [`Engine::spawn`];
//! - [`handle`]: a spawned conversation's handle;
//! - [`options`]: the engine's settings.

mod drive;
mod handle;
mod options;

pub use handle::{ConversationHandle, SendError};
pub use options::{EngineOptions, ReplyError, ReplyMode};

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::conversation::{Conversation, Cursor, FlowStamp, Status};
use crate::core::{Interpreter, Jitter, Machine, RandomJitter};
use crate::error::{BuildError, RunError};
use crate::event::EventSink;
use crate::flow::Flow;
use crate::http::HttpClient;
use crate::secrets::Secret;
use crate::time::{Clock, SystemClock};

/// Runs conversations of one flow. Cheap to clone; `Send + Sync`; share one
/// engine between all conversations.
///
/// ```
/// use chatflow::{Engine, EventLog, Flow, Status};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let flow = Flow::from_json(r#"{
///   "name": "greeter",
///   "steps": [
///     {"type": "question", "name": "Ask name", "text": "What is your name?"},
///     {"type": "contact_update", "name": "Save", "set": {"name": "<<step.Ask name.response>>"}},
///     {"type": "message", "name": "Greet", "text": "Hello, <<contact.name>>!"}
///   ]
/// }"#)?;
/// let engine = Engine::builder(flow).build()?;
/// let events = EventLog::new();
///
/// let mut conversation = engine.start("user-1");
/// engine.run(&mut conversation, &events).await?;          // asks, then waits
/// assert_eq!(conversation.status(), &Status::AwaitingReply);
///
/// engine.receive(&mut conversation, "Ada")?;              // the user answers
/// engine.run(&mut conversation, &events).await?;
/// assert_eq!(events.texts(), ["What is your name?", "Hello, Ada!"]);
/// assert_eq!(conversation.status(), &Status::Finished);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

pub(crate) struct EngineInner {
    /// The deterministic part: flow, values, secrets, options.
    pub(crate) core: Interpreter,
    pub(crate) http: Arc<dyn HttpClient>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("flow", &self.inner.core.flow)
            .field("vars", &self.inner.core.vars)
            .field("secrets", &self.inner.core.secrets)
            .field("options", &self.inner.core.options)
            .finish()
    }
}

/// Builds an [`Engine`]: flow, transport, clock, host values and secrets.
pub struct EngineBuilder {
    flow: Flow,
    http: Option<Arc<dyn HttpClient>>,
    clock: Arc<dyn Clock>,
    vars: BTreeMap<String, Value>,
    secrets: BTreeMap<String, Secret>,
    options: EngineOptions,
    jitter: Arc<dyn Jitter>,
}

impl fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("flow", &self.flow)
            .field("vars", &self.vars)
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

impl EngineBuilder {
    /// Sends Api calls through `client` instead of the default reqwest client.
    pub fn http_client(mut self, client: impl HttpClient + 'static) -> Self {
        self.http = Some(Arc::new(client));
        self
    }

    /// Reads time and sleeps through `clock` (e.g. a [`crate::VirtualClock`] in tests).
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Shares a clock the caller keeps a handle to.
    pub fn shared_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets a host value, `<<var.NAME>>` in templates; overrides the flow's default.
    pub fn var(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.vars.insert(name.into(), value.into());
        self
    }

    /// Sets a secret, `<<secret.NAME>>` in templates. It is sent where the
    /// flow says and shown nowhere else: `***` in logs, errors and `Debug`.
    pub fn secret(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.secrets.insert(name.into(), Secret::new(value.into()));
        self
    }

    /// Replaces the engine options.
    pub fn options(mut self, options: EngineOptions) -> Self {
        self.options = options;
        self
    }

    /// Draws retry jitter from `jitter` instead of at random (e.g. `|| 0.0`
    /// for backoffs a test can predict).
    pub fn jitter(mut self, jitter: impl Jitter + 'static) -> Self {
        self.jitter = Arc::new(jitter);
        self
    }

    /// Checks that every host value and secret the flow uses was given, and
    /// builds the engine.
    pub fn build(self) -> Result<Engine, BuildError> {
        let flow = self.flow;
        let mut vars = flow.default_vars().clone();
        vars.extend(self.vars);
        let missing_vars: Vec<String> = flow
            .required_vars()
            .filter(|v| !vars.contains_key(*v))
            .map(str::to_string)
            .collect();
        let missing_secrets: Vec<String> = flow
            .required_secrets()
            .filter(|s| !self.secrets.contains_key(*s))
            .map(str::to_string)
            .collect();
        if !missing_vars.is_empty() || !missing_secrets.is_empty() {
            return Err(BuildError::Missing {
                flow: flow.name().to_string(),
                vars: missing_vars,
                secrets: missing_secrets,
            });
        }
        let http = match self.http {
            Some(http) => http,
            None => default_client()?,
        };
        Ok(Engine {
            inner: Arc::new(EngineInner {
                core: Interpreter::new(flow, vars, self.secrets, self.options, self.jitter),
                http,
                clock: self.clock,
            }),
        })
    }
}

#[cfg(feature = "reqwest")]
fn default_client() -> Result<Arc<dyn HttpClient>, BuildError> {
    crate::http::ReqwestClient::new()
        .map(|c| Arc::new(c) as Arc<dyn HttpClient>)
        .map_err(|e| BuildError::HttpClient(e.to_string()))
}

#[cfg(not(feature = "reqwest"))]
fn default_client() -> Result<Arc<dyn HttpClient>, BuildError> {
    Err(BuildError::NoHttpClient)
}

impl Engine {
    /// Starts building an engine for `flow`.
    pub fn builder(flow: Flow) -> EngineBuilder {
        EngineBuilder {
            flow,
            http: None,
            clock: Arc::new(SystemClock),
            vars: BTreeMap::new(),
            secrets: BTreeMap::new(),
            options: EngineOptions::default(),
            jitter: Arc::new(RandomJitter),
        }
    }

    /// The flow this engine runs.
    pub fn flow(&self) -> &Flow {
        &self.inner.core.flow
    }

    /// How many steps this engine has run, over all conversations.
    pub fn steps_run(&self) -> u64 {
        self.inner
            .core
            .steps_run
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The engine's clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock.clone()
    }

    /// The engine's HTTP client.
    pub(crate) fn http(&self) -> &Arc<dyn HttpClient> {
        &self.inner.http
    }

    /// The engine's options.
    pub fn options(&self) -> &EngineOptions {
        &self.inner.core.options
    }

    /// The deterministic core's step machine for `conversation` (see
    /// [`crate::core`]): for a host that performs the effects itself, and for
    /// tests that step a conversation without a transport or a clock. It
    /// makes the conversation this engine's first: after a flow edit it finds
    /// its step again by name, or fails it (the first poll says so).
    pub fn machine(&self, conversation: &mut Conversation) -> Machine<'_> {
        Machine::new(&self.inner.core, conversation)
    }

    /// A new conversation at the flow's first step. Nothing runs until
    /// [`Engine::run`].
    pub fn start(&self, id: impl Into<String>) -> Conversation {
        let flow = &self.inner.core.flow;
        let first = &flow.program().steps[0];
        Conversation {
            id: id.into(),
            flow: FlowStamp {
                name: flow.name().to_string(),
                hash: flow.hash().to_string(),
            },
            status: Status::Running,
            cursor: Some(Cursor {
                index: 0,
                name: first.name.clone(),
            }),
            contact: Default::default(),
            steps: Default::default(),
            inbox: Default::default(),
            steps_since_reply: 0,
            visits: BTreeMap::new(),
            start_text: None,
            message: None,
            replying_to: None,
        }
    }

    /// Queues a user reply, refusing one longer than
    /// [`EngineOptions::max_reply_bytes`]. The text is kept verbatim and is
    /// never read as a template.
    pub fn receive(
        &self,
        conversation: &mut Conversation,
        text: impl Into<String>,
    ) -> Result<(), ReplyError> {
        let text = text.into();
        let limit = self.inner.core.options.max_reply_bytes;
        if text.len() > limit {
            return Err(ReplyError::TooLong {
                len: text.len(),
                limit,
            });
        }
        self.accept(conversation, text, None);
        Ok(())
    }

    /// Takes a user message into the conversation as the flow's start mode
    /// says (see [`Conversation::accept_message`]).
    pub(crate) fn accept(&self, conversation: &mut Conversation, text: String, details: Option<Value>) {
        let flow = &self.inner.core.flow;
        conversation.accept_message(text, details, flow.start_mode(), flow.program().reads_start_text);
    }

    /// Puts a failed conversation back at the step that failed, so the next
    /// [`Engine::run`] tries that step again (after an outage, say). Returns
    /// `false`, changing nothing, when the conversation has not failed or has
    /// no step to go back to.
    pub fn retry_failed(&self, conversation: &mut Conversation) -> bool {
        if !matches!(conversation.status, Status::Failed { .. }) || conversation.cursor.is_none() {
            return false;
        }
        conversation.status = Status::Running;
        conversation.steps_since_reply = 0;
        true
    }

    /// Runs the conversation until it waits for a reply with none queued,
    /// hands off, finishes or fails. Delays are slept on the engine's clock.
    ///
    /// Returns the new status; on failure the status is
    /// [`Status::Failed`] and the error is returned as well. The
    /// conversation stays a valid value either way.
    pub async fn run(
        &self,
        conversation: &mut Conversation,
        events: &dyn EventSink,
    ) -> Result<Status, RunError> {
        self.drive(conversation, events, None, false).await
    }

    /// Like [`Engine::run`], but also returns when the conversation enters a
    /// Delay ([`Status::Sleeping`]), so a host can park it and resume it when
    /// the Delay ends. Calling it again before then sleeps the rest.
    pub async fn run_until_parked(
        &self,
        conversation: &mut Conversation,
        events: &dyn EventSink,
    ) -> Result<Status, RunError> {
        self.drive(conversation, events, None, true).await
    }

    /// Runs the conversation on a tokio task, with a handle to send user
    /// messages at any time: a message that arrives while the bot is calling
    /// an API or in a Delay is queued, in order, for the next Question, and
    /// never runs concurrently with the step in progress. Events go to `events`.
    pub fn spawn(&self, conversation: Conversation, events: impl EventSink + 'static) -> ConversationHandle {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let engine = self.clone();
        let task = tokio::spawn(async move {
            let mut conversation = conversation;
            let result = engine
                .drive(&mut conversation, &events, Some(&mut rx), false)
                .await;
            (conversation, result)
        });
        ConversationHandle {
            sender: tx,
            task,
            max_reply_bytes: self.inner.core.options.max_reply_bytes,
        }
    }
}
