//! The interpreter: an [`Engine`] runs any number of conversations of one
//! flow at once, each a plain [`Conversation`] value it advances.

mod retry;
mod run;

pub use retry::RetryPolicy;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::conversation::{Conversation, Cursor, FlowStamp, Status};
use crate::error::{BuildError, RunError};
use crate::event::{Event, EventSink};
use crate::flow::Flow;
use crate::http::{DEFAULT_MAX_RESPONSE_BYTES, HttpClient};
use crate::time::{Clock, SystemClock};

/// What a Question does with several replies queued while the bot was busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ReplyMode {
    /// Join all queued replies into one, separated by newlines (default):
    /// three short chat messages in a row are one answer.
    #[default]
    Join,
    /// Give each Question one reply; the rest wait for the following Questions.
    OnePerQuestion,
}

/// Engine settings. Change a few with struct update syntax:
/// `EngineOptions { max_steps_without_reply: 200, ..EngineOptions::default() }`.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineOptions {
    /// Steps a conversation may run without a user reply before it fails
    /// (default 1,000): the last guard against a flow that loops.
    pub max_steps_without_reply: u32,
    /// How queued replies reach Questions.
    pub reply_mode: ReplyMode,
    /// Retry policy for Api steps; steps override fields.
    pub retry: RetryPolicy,
    /// Timeout of one Api attempt when the step sets none (default 30 s).
    pub api_timeout: Duration,
    /// Largest response body an Api step accepts when the step sets none (default 10 MiB).
    pub max_response_bytes: usize,
    /// Longest user reply accepted by [`Engine::receive`], in bytes (default 1 MiB).
    pub max_reply_bytes: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            max_steps_without_reply: 1000,
            reply_mode: ReplyMode::default(),
            retry: RetryPolicy::default(),
            api_timeout: Duration::from_secs(30),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_reply_bytes: 1024 * 1024,
        }
    }
}

/// A user reply the engine refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// Longer than [`EngineOptions::max_reply_bytes`].
    #[error("reply of {len} bytes is longer than the limit of {limit} bytes")]
    TooLong {
        /// The reply's length.
        len: usize,
        /// The limit.
        limit: usize,
    },
}

/// A secret value: never printed, not even by `Debug`. Kept as a JSON
/// string so that rendering a request borrows it instead of copying it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(Value);

impl Secret {
    pub(crate) fn new(value: String) -> Secret {
        Secret(Value::String(value))
    }

    /// The secret as a template value.
    pub(crate) fn value(&self) -> &Value {
        &self.0
    }

    pub(crate) fn as_str(&self) -> &str {
        self.0.as_str().unwrap_or_default()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The forms secrets take in text, each with its searcher built once:
/// masking looks for every form in every kept string and key long enough
/// to hold one, and in numbers when a form could be written as one.
pub(crate) struct SecretForms {
    forms: Vec<(String, memchr::memmem::Finder<'static>)>,
    /// Whether some form could occur in a number's text; when none can,
    /// numbers need no look.
    numeric: bool,
    /// The shortest form's length: a shorter text (most keys, many values)
    /// holds no form.
    shortest: usize,
}

impl SecretForms {
    fn new(forms: Vec<String>) -> SecretForms {
        // A JSON number's text (serde_json's, any precision) has no other bytes.
        let numeric = forms
            .iter()
            .any(|f| f.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)));
        let shortest = forms.iter().map(String::len).min().unwrap_or(0);
        let forms = forms
            .into_iter()
            .map(|form| {
                let finder = memchr::memmem::Finder::new(form.as_bytes()).into_owned();
                (form, finder)
            })
            .collect();
        SecretForms {
            forms,
            numeric,
            shortest,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// Whether a number's text may hold a secret.
    pub(crate) fn numeric(&self) -> bool {
        self.numeric
    }

    /// Whether `text` is too short to hold any form.
    pub(crate) fn too_short(&self, text: &str) -> bool {
        text.len() < self.shortest
    }

    /// The forms, longest first, with their searchers.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &memchr::memmem::Finder<'static>)> {
        self.forms.iter().map(|(form, finder)| (form.as_str(), finder))
    }
}

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
    pub(crate) flow: Flow,
    pub(crate) http: Arc<dyn HttpClient>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) vars: BTreeMap<String, Value>,
    pub(crate) secrets: BTreeMap<String, Secret>,
    /// Every form a secret may take in text (as is, percent-encoded),
    /// longest first so a secret containing another is masked whole.
    pub(crate) secret_forms: SecretForms,
    pub(crate) options: EngineOptions,
    /// Per step, its requests' headers when they are the same for every
    /// conversation (see [`run::constant_headers`]): rendered once here
    /// instead of per request.
    pub(crate) constant_headers: Vec<Option<Vec<crate::http::Header>>>,
    /// Steps run by this engine, for metrics.
    pub(crate) steps_run: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("flow", &self.inner.flow)
            .field("vars", &self.inner.vars)
            .field("secrets", &self.inner.secrets)
            .field("options", &self.inner.options)
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
        let mut secret_forms: Vec<String> = self
            .secrets
            .values()
            .map(Secret::as_str)
            .filter(|s| !s.is_empty())
            .flat_map(|s| [s.to_string(), crate::template::url_encode(s)])
            .collect();
        secret_forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
        secret_forms.dedup();
        let secret_forms = SecretForms::new(secret_forms);
        let constant_headers = run::constant_headers(&flow.program().steps, &vars, &self.secrets);
        Ok(Engine {
            inner: Arc::new(EngineInner {
                flow,
                http,
                clock: self.clock,
                vars,
                secrets: self.secrets,
                secret_forms,
                options: self.options,
                constant_headers,
                steps_run: Default::default(),
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
        }
    }

    /// The flow this engine runs.
    pub fn flow(&self) -> &Flow {
        &self.inner.flow
    }

    /// How many steps this engine has run, over all conversations.
    pub fn steps_run(&self) -> u64 {
        self.inner.steps_run.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The engine's clock.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock.clone()
    }

    /// The engine's options.
    pub fn options(&self) -> &EngineOptions {
        &self.inner.options
    }

    /// A new conversation at the flow's first step. Nothing runs until
    /// [`Engine::run`].
    pub fn start(&self, id: impl Into<String>) -> Conversation {
        let flow = &self.inner.flow;
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
        let limit = self.inner.options.max_reply_bytes;
        if text.len() > limit {
            return Err(ReplyError::TooLong {
                len: text.len(),
                limit,
            });
        }
        conversation.push_reply(text);
        Ok(())
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
            max_reply_bytes: self.inner.options.max_reply_bytes,
        }
    }
}

/// A conversation running on its own task (see [`Engine::spawn`]).
#[derive(Debug)]
pub struct ConversationHandle {
    sender: mpsc::UnboundedSender<String>,
    task: tokio::task::JoinHandle<(Conversation, Result<Status, RunError>)>,
    max_reply_bytes: usize,
}

impl ConversationHandle {
    /// Sends a user message. It reaches the next Question, in order.
    /// Returns an error when the text is too long or the conversation has
    /// already ended.
    pub fn send(&self, text: impl Into<String>) -> Result<(), SendError> {
        let text = text.into();
        if text.len() > self.max_reply_bytes {
            return Err(SendError::Reply(ReplyError::TooLong {
                len: text.len(),
                limit: self.max_reply_bytes,
            }));
        }
        self.sender.send(text).map_err(|_| SendError::Ended)
    }

    /// Stops taking messages and waits until the conversation waits for a
    /// reply with none queued, or ends; returns its state to park or inspect.
    pub async fn finish(self) -> Result<(Conversation, Result<Status, RunError>), SendError> {
        drop(self.sender);
        self.task.await.map_err(|_| SendError::Ended)
    }
}

/// Why a message could not be sent to a running conversation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The reply was refused.
    #[error(transparent)]
    Reply(ReplyError),
    /// The conversation's task has ended.
    #[error("the conversation has ended")]
    Ended,
}

pub(crate) fn emit_failed(events: &dyn EventSink, conversation: &Conversation, error: &str) {
    events.emit(Event::Failed {
        conversation_id: conversation.id.clone(),
        error: error.to_string(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_forms_a_number_could_spell_make_numbers_searched() {
        let forms = |forms: &[&str]| SecretForms::new(forms.iter().map(|f| f.to_string()).collect());
        assert!(!forms(&["sk-live-1", "sk%2Dlive"]).numeric());
        for numeric in ["987654321", "-12.5e+3", "1E7", "0.5"] {
            assert!(forms(&["sk-live-1", numeric]).numeric(), "{numeric}");
        }
        assert!(forms(&[]).is_empty());
        let some = forms(&["sk-live-1", "sk%2Dlive-1"]);
        assert!(some.too_short("sk-live") && !some.too_short("sk-live-1"));
    }
}
