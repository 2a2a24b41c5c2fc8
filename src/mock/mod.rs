//! A stateful mock of the OpenAI endpoints chatflow's flows use, for your
//! integration tests (feature `mock`).
//!
//! [`MockOpenAi`] starts a local HTTP server (on [`wiremock`]) that keeps
//! threads, messages, runs, conversations and responses in memory and
//! answers like the real service: the same JSON shapes, the same checks
//! (API key, `OpenAI-Beta: assistants=v2`, unknown properties, busy
//! threads) and the same error bodies. Answers come from a reply function
//! ([`demo_reply`] unless you pass [`MockOpenAiBuilder::reply_with`]).
//!
//! Served under [`MockOpenAi::base_url`] (`http://127.0.0.1:PORT/v1`):
//!
//! | Endpoint | Route |
//! |---|---|
//! | [`Endpoint::CreateThread`] | `POST /v1/threads` |
//! | [`Endpoint::CreateMessage`] | `POST /v1/threads/{thread_id}/messages` |
//! | [`Endpoint::ListMessages`] | `GET /v1/threads/{thread_id}/messages` |
//! | [`Endpoint::CreateRun`] | `POST /v1/threads/{thread_id}/runs` |
//! | [`Endpoint::GetRun`] | `GET /v1/threads/{thread_id}/runs/{run_id}` |
//! | [`Endpoint::CancelRun`] | `POST /v1/threads/{thread_id}/runs/{run_id}/cancel` |
//! | [`Endpoint::CreateConversation`] | `POST /v1/conversations` |
//! | [`Endpoint::ListConversationItems`] | `GET /v1/conversations/{conversation_id}/items` |
//! | [`Endpoint::CreateResponse`] | `POST /v1/responses` |
//! | [`Endpoint::GetResponse`] | `GET /v1/responses/{response_id}` |
//!
//! # Run lifecycle
//!
//! Runs advance by observation, so tests are deterministic and never wait:
//! every `GET .../messages` or `GET .../runs/{run_id}` on a thread with an
//! active run is one poll. A run is `queued` until the first poll,
//! `in_progress` (with an empty assistant message on the thread) during
//! polls 1 to n-1, and reaches its final state at poll n, where n is
//! [`MockOpenAiBuilder::polls_until_complete`] (default 1). Background
//! responses (`"background": true`) advance the same way on
//! `GET /v1/responses/{id}`. With [`MockOpenAiBuilder::run_duration`], a
//! run also needs that much time on the mock's clock
//! ([`MockOpenAiBuilder::clock`]) before a poll can end it.
//!
//! # Streaming
//!
//! A run or response created with `"stream": true` is answered with
//! `Content-Type: text/event-stream` and the events the service sends:
//! `thread.run.created`, `thread.run.queued`, `thread.run.in_progress`,
//! `thread.run.step.created`, `thread.message.created`,
//! `thread.message.delta`…, `thread.message.completed`,
//! `thread.run.step.completed`, `thread.run.completed` (or
//! `thread.run.failed`, `…expired`, `…cancelled`, `…incomplete`), then
//! `event: done` / `data: [DONE]`; for a response, `response.created`,
//! `response.in_progress`, `response.output_item.added`,
//! `response.content_part.added`, `response.output_text.delta`…,
//! `response.output_text.done`, `response.content_part.done`,
//! `response.output_item.done` and `response.completed` (or
//! `response.failed` / `response.incomplete`), each data carrying its
//! `type` and `sequence_number`. The run or response is settled at once
//! (the answer is stored in the thread or conversation, and counted), and
//! the stream is sent [`MockOpenAiBuilder::run_duration`] after the request
//! (default: at once), in real time.

mod assistants;
mod error;
mod json;
mod reply;
mod responses;
mod state;
pub mod whatsapp;

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::{Clock, SystemClock};

use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub use reply::{HANDOFF_REPLY, Reply, ReplyInput, demo_reply};

use reply::ReplyFn;
use state::{Config, State};

/// The API key the mock accepts unless [`MockOpenAiBuilder::api_key`] says otherwise.
pub const DEFAULT_API_KEY: &str = "sk-mock-key";
/// The assistant id the mock knows unless [`MockOpenAiBuilder::assistant_id`] says otherwise.
pub const DEFAULT_ASSISTANT_ID: &str = "asst_mock";

/// A running mock of the OpenAI API. Dropping it stops the server.
///
/// ```
/// use chatflow::mock::{Endpoint, Fault, MockOpenAi, Reply};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mock = MockOpenAi::builder()
///     .reply_with(|input| Reply::Text(format!("You said: {}", input.user_text)))
///     .polls_until_complete(2)
///     .start()
///     .await;
///
/// // Point the code under test at the mock.
/// let base_url = mock.base_url(); // "http://127.0.0.1:PORT/v1"
/// let api_key = mock.api_key(); // "sk-mock-key"
/// assert!(base_url.ends_with("/v1"));
/// assert_eq!(api_key, "sk-mock-key");
/// assert_eq!(mock.assistant_id(), "asst_mock");
///
/// // Make the first run creation hit a rate limit, to exercise retries.
/// mock.push_fault(Endpoint::CreateRun, Fault::RateLimited { retry_after_secs: 1 });
///
/// // ... run the flow against `base_url`, then assert on what the mock saw:
/// assert_eq!(mock.threads_created(), 0);
/// assert!(mock.requests().is_empty());
/// # }
/// ```
pub struct MockOpenAi {
    server: MockServer,
    state: Arc<Mutex<State>>,
    api_key: String,
    assistant_id: String,
}

impl MockOpenAi {
    /// Starts a mock with the defaults: key [`DEFAULT_API_KEY`], assistant
    /// [`DEFAULT_ASSISTANT_ID`], one poll per run, [`demo_reply`].
    pub async fn start() -> MockOpenAi {
        MockOpenAi::builder().start().await
    }

    /// A builder to configure the mock before starting it.
    pub fn builder() -> MockOpenAiBuilder {
        MockOpenAiBuilder::default()
    }

    /// The base URL to give an OpenAI client: `http://127.0.0.1:PORT/v1`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.server.uri())
    }

    /// The API key the mock accepts (`Authorization: Bearer <key>`).
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// The only assistant id runs may use.
    pub fn assistant_id(&self) -> &str {
        &self.assistant_id
    }

    /// Every request received so far, in order, including rejected ones.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state).requests.clone()
    }

    /// Queues a fault for `endpoint`: the next request to it gets the fault
    /// instead of normal handling (faults for one endpoint are used first in,
    /// first out). The request is still recorded; the fault is consumed even
    /// if the request would have been rejected anyway.
    pub fn push_fault(&self, endpoint: Endpoint, fault: Fault) {
        lock(&self.state)
            .faults
            .entry(endpoint)
            .or_default()
            .push_back(fault);
    }

    /// The messages of a thread as `(role, text)`, oldest first (empty for an
    /// unknown thread). The assistant message of a run still in progress
    /// appears with empty text.
    pub fn thread_messages(&self, thread_id: &str) -> Vec<(String, String)> {
        lock(&self.state).thread_messages(thread_id)
    }

    /// The items of a conversation as `(role, text)`, oldest first (empty for
    /// an unknown conversation).
    pub fn conversation_items(&self, conversation_id: &str) -> Vec<(String, String)> {
        lock(&self.state).conversation_items(conversation_id)
    }

    /// How many threads were created.
    pub fn threads_created(&self) -> usize {
        lock(&self.state).threads.len()
    }

    /// How many runs were created.
    pub fn runs_created(&self) -> usize {
        lock(&self.state).runs_created
    }

    /// How many conversations were created.
    pub fn conversations_created(&self) -> usize {
        lock(&self.state).conversations.len()
    }

    /// How many responses were created (stored or not).
    pub fn responses_created(&self) -> usize {
        lock(&self.state).responses_created
    }
}

impl fmt::Debug for MockOpenAi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockOpenAi")
            .field("base_url", &self.base_url())
            .field("assistant_id", &self.assistant_id)
            .finish_non_exhaustive()
    }
}

/// Configures a [`MockOpenAi`]; see [`MockOpenAi::builder`].
pub struct MockOpenAiBuilder {
    api_key: String,
    assistant_id: String,
    polls_until_complete: u32,
    run_duration: Option<Duration>,
    clock: Arc<dyn Clock>,
    reply: ReplyFn,
}

impl Default for MockOpenAiBuilder {
    fn default() -> Self {
        MockOpenAiBuilder {
            api_key: DEFAULT_API_KEY.to_owned(),
            assistant_id: DEFAULT_ASSISTANT_ID.to_owned(),
            polls_until_complete: 1,
            run_duration: None,
            clock: Arc::new(SystemClock),
            reply: Arc::new(demo_reply),
        }
    }
}

impl MockOpenAiBuilder {
    /// The API key to accept (default [`DEFAULT_API_KEY`]).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = key.into();
        self
    }

    /// The assistant id runs must name (default [`DEFAULT_ASSISTANT_ID`]).
    pub fn assistant_id(mut self, id: impl Into<String>) -> Self {
        self.assistant_id = id.into();
        self
    }

    /// The poll at which a run (or background response) reaches its final
    /// state (default 1: the first poll already sees the answer). With 2, the
    /// first poll sees `in_progress` and an empty assistant message. 0 counts as 1.
    pub fn polls_until_complete(mut self, n: u32) -> Self {
        self.polls_until_complete = n.max(1);
        self
    }

    /// How long a run (or background or streamed response) takes. A polled
    /// one ends at the first poll at least this long after its creation on
    /// the mock's [`clock`](MockOpenAiBuilder::clock) (and not before poll
    /// [`polls_until_complete`](MockOpenAiBuilder::polls_until_complete)). A
    /// streamed one's events are sent this long after the request, in real
    /// time: an HTTP answer cannot wait on a virtual clock. Default: none.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use chatflow::VirtualClock;
    /// use chatflow::mock::MockOpenAi;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // Runs end at the first poll 3 s (virtual) after they started: give the
    /// // engine the same clock, and its Delays decide when that poll comes.
    /// let clock = Arc::new(VirtualClock::new());
    /// let mock = MockOpenAi::builder()
    ///     .run_duration(Duration::from_secs(3))
    ///     .clock(clock.clone())
    ///     .start()
    ///     .await;
    /// # drop(mock);
    /// # }
    /// ```
    pub fn run_duration(mut self, duration: Duration) -> Self {
        self.run_duration = Some(duration);
        self
    }

    /// The clock a [`run_duration`](MockOpenAiBuilder::run_duration) is
    /// measured on (default [`SystemClock`]); pass the engine's
    /// [`crate::VirtualClock`] to run polling loops in virtual time.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The function deciding every answer (default [`demo_reply`]). It runs
    /// when a run or response is created, with the conversation so far.
    pub fn reply_with<F>(mut self, f: F) -> Self
    where
        F: Fn(&ReplyInput) -> Reply + Send + Sync + 'static,
    {
        self.reply = Arc::new(f);
        self
    }

    /// Starts the server. Needs a Tokio runtime with timers enabled.
    pub async fn start(self) -> MockOpenAi {
        let state = Arc::new(Mutex::new(State::new(Config {
            api_key: self.api_key.clone(),
            assistant_id: self.assistant_id.clone(),
            polls_until_complete: self.polls_until_complete,
            run_duration: self.run_duration,
            clock: self.clock,
            reply: self.reply,
        })));
        // A server of its own rather than one from wiremock's pool, so that
        // dropping the mock really shuts it down. The mock keeps its own log.
        let server = MockServer::builder().disable_request_recording().start().await;
        Mock::given(any())
            .respond_with(Responder {
                state: Arc::clone(&state),
            })
            .named("chatflow mock OpenAI")
            .mount(&server)
            .await;
        MockOpenAi {
            server,
            state,
            api_key: self.api_key,
            assistant_id: self.assistant_id,
        }
    }
}

impl fmt::Debug for MockOpenAiBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockOpenAiBuilder")
            .field("assistant_id", &self.assistant_id)
            .field("polls_until_complete", &self.polls_until_complete)
            .field("run_duration", &self.run_duration)
            .finish_non_exhaustive()
    }
}

/// One request the mock received.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RecordedRequest {
    /// The HTTP method, upper case (`"POST"`).
    pub method: String,
    /// The path, e.g. `"/v1/threads/thread_1/messages"`.
    pub path: String,
    /// The query parameters, decoded, in order.
    pub query: Vec<(String, String)>,
    /// The headers with lower-case names, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body as JSON; `None` if it was empty or not JSON.
    pub body: Option<serde_json::Value>,
    /// The body as text (invalid UTF-8 replaced).
    pub body_text: String,
    /// The endpoint the request was routed to; `None` for an unknown route.
    pub endpoint: Option<Endpoint>,
    /// When the mock received it (real time). A streamed run's events go out
    /// [`MockOpenAiBuilder::run_duration`] later.
    pub received_at: Instant,
}

impl RecordedRequest {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn from_wiremock(request: &Request, endpoint: Option<Endpoint>) -> Self {
        let body_text = String::from_utf8_lossy(&request.body).into_owned();
        RecordedRequest {
            method: request.method.as_str().to_owned(),
            path: request.url.path().to_owned(),
            query: request
                .url
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            headers: request
                .headers
                .iter()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                    (name.as_str().to_ascii_lowercase(), value)
                })
                .collect(),
            body: serde_json::from_slice(&request.body).ok(),
            body_text,
            endpoint,
            received_at: Instant::now(),
        }
    }
}

/// The endpoints the mock serves, for [`MockOpenAi::push_fault`] and
/// [`RecordedRequest::endpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// `POST /v1/threads`
    CreateThread,
    /// `POST /v1/threads/{thread_id}/messages`
    CreateMessage,
    /// `GET /v1/threads/{thread_id}/messages`
    ListMessages,
    /// `POST /v1/threads/{thread_id}/runs`
    CreateRun,
    /// `GET /v1/threads/{thread_id}/runs/{run_id}`
    GetRun,
    /// `POST /v1/threads/{thread_id}/runs/{run_id}/cancel`
    CancelRun,
    /// `POST /v1/conversations`
    CreateConversation,
    /// `POST /v1/responses`
    CreateResponse,
    /// `GET /v1/responses/{response_id}`
    GetResponse,
    /// `GET /v1/conversations/{conversation_id}/items`
    ListConversationItems,
}

/// A failure to inject with [`MockOpenAi::push_fault`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// 429, code `rate_limit_exceeded`, with headers `retry-after: <secs>`
    /// and `retry-after-ms: <secs * 1000>`.
    RateLimited {
        /// The value of `retry-after`.
        retry_after_secs: u64,
    },
    /// 500, type `server_error`.
    ServerError,
    /// 503, "The engine is currently overloaded".
    Overloaded,
    /// This status with an OpenAI error body (an unusable status becomes 500).
    Status(u16),
    /// Handle the request normally, but answer only after this delay.
    Delay(Duration),
}

/// The single catch-all responder: everything goes through [`State::handle`].
struct Responder {
    state: Arc<Mutex<State>>,
}

impl Respond for Responder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        lock(&self.state).handle(request, RecordedRequest::from_wiremock)
    }
}

/// Locks the state. A poisoned lock is still usable: every handler leaves the
/// state consistent before doing anything that could panic.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}
