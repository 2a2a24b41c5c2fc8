//! The mock's shared state, and the front door every request goes through:
//! record, route, inject faults, check credentials, dispatch.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use wiremock::{Request, ResponseTemplate};

use super::assistants::{self, Thread};
use super::error::{ApiError, safe_status};
use super::reply::ReplyFn;
use super::responses::{self, Conversation, StoredResponse};
use super::{Endpoint, Fault, RecordedRequest};

/// What the builder fixed.
pub(crate) struct Config {
    pub api_key: String,
    pub assistant_id: String,
    pub polls_until_complete: u32,
    /// How long a run or background response takes (on `clock`); a streamed
    /// one is sent this long after the request, in real time.
    pub run_duration: Option<Duration>,
    pub clock: Arc<dyn crate::Clock>,
    pub reply: ReplyFn,
}

impl Config {
    /// When runs and background responses are due, as of now.
    pub fn completion(&self) -> Completion {
        Completion {
            polls: self.polls_until_complete,
            duration: self.run_duration,
            now: self.clock.now(),
        }
    }
}

/// Whether a pending run or background response reaches its final state at a poll.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Completion {
    polls: u32,
    duration: Option<Duration>,
    now: SystemTime,
}

impl Completion {
    /// Due at the n-th poll or later, once its duration has passed since `started`.
    pub fn due(&self, polls: u32, started: SystemTime) -> bool {
        polls >= self.polls
            && self
                .duration
                .is_none_or(|d| started.checked_add(d).is_none_or(|end| self.now >= end))
    }
}

/// A successful answer: a JSON object, or a `text/event-stream` body.
pub(crate) enum Answer {
    Json(Value),
    /// `(event, data)` pairs, sent as `event: …` / `data: …` blocks.
    Events(Vec<(String, String)>),
}

impl From<Value> for Answer {
    fn from(value: Value) -> Self {
        Answer::Json(value)
    }
}

impl Answer {
    /// An event whose data is JSON.
    pub fn event(name: &str, data: &Value) -> (String, String) {
        (name.to_owned(), data.to_string())
    }
}

/// Per-prefix counters: `thread_1`, `msg_1`, `run_1`, … unique within one mock.
#[derive(Default)]
pub(crate) struct Ids {
    counters: HashMap<&'static str, u64>,
}

impl Ids {
    pub fn next(&mut self, prefix: &'static str) -> String {
        let n = self.counters.entry(prefix).or_insert(0);
        *n = n.saturating_add(1);
        format!("{prefix}_{n}")
    }
}

/// Everything the mock remembers, behind one mutex.
pub(crate) struct State {
    pub config: Config,
    pub ids: Ids,
    pub requests: Vec<RecordedRequest>,
    pub faults: HashMap<Endpoint, VecDeque<Fault>>,
    pub threads: HashMap<String, Thread>,
    pub conversations: HashMap<String, Conversation>,
    pub responses: HashMap<String, StoredResponse>,
    pub runs_created: usize,
    pub responses_created: usize,
}

/// A request's route, with its path parameters.
enum Route<'a> {
    CreateThread,
    CreateMessage(&'a str),
    ListMessages(&'a str),
    CreateRun(&'a str),
    GetRun(&'a str, &'a str),
    CancelRun(&'a str, &'a str),
    CreateConversation,
    ListConversationItems(&'a str),
    CreateResponse,
    GetResponse(&'a str),
    Unknown,
}

impl<'a> Route<'a> {
    fn parse(method: &str, path: &'a str) -> Route<'a> {
        let Some(rest) = path.strip_prefix("/v1/") else {
            return Route::Unknown;
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let segments: Vec<&str> = rest.split('/').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Route::Unknown;
        }
        match (method, segments.as_slice()) {
            ("POST", ["threads"]) => Route::CreateThread,
            ("POST", ["threads", t, "messages"]) => Route::CreateMessage(t),
            ("GET", ["threads", t, "messages"]) => Route::ListMessages(t),
            ("POST", ["threads", t, "runs"]) => Route::CreateRun(t),
            ("GET", ["threads", t, "runs", r]) => Route::GetRun(t, r),
            ("POST", ["threads", t, "runs", r, "cancel"]) => Route::CancelRun(t, r),
            ("POST", ["conversations"]) => Route::CreateConversation,
            ("GET", ["conversations", c, "items"]) => Route::ListConversationItems(c),
            ("POST", ["responses"]) => Route::CreateResponse,
            ("GET", ["responses", r]) => Route::GetResponse(r),
            _ => Route::Unknown,
        }
    }

    fn endpoint(&self) -> Option<Endpoint> {
        Some(match self {
            Route::CreateThread => Endpoint::CreateThread,
            Route::CreateMessage(_) => Endpoint::CreateMessage,
            Route::ListMessages(_) => Endpoint::ListMessages,
            Route::CreateRun(_) => Endpoint::CreateRun,
            Route::GetRun(..) => Endpoint::GetRun,
            Route::CancelRun(..) => Endpoint::CancelRun,
            Route::CreateConversation => Endpoint::CreateConversation,
            Route::ListConversationItems(_) => Endpoint::ListConversationItems,
            Route::CreateResponse => Endpoint::CreateResponse,
            Route::GetResponse(_) => Endpoint::GetResponse,
            Route::Unknown => return None,
        })
    }

    /// The Assistants API (`/threads...`) wants `OpenAI-Beta: assistants=v2`.
    fn is_assistants(&self) -> bool {
        matches!(
            self,
            Route::CreateThread
                | Route::CreateMessage(_)
                | Route::ListMessages(_)
                | Route::CreateRun(_)
                | Route::GetRun(..)
                | Route::CancelRun(..)
        )
    }
}

impl State {
    pub fn new(config: Config) -> Self {
        State {
            config,
            ids: Ids::default(),
            requests: Vec::new(),
            faults: HashMap::new(),
            threads: HashMap::new(),
            conversations: HashMap::new(),
            responses: HashMap::new(),
            runs_created: 0,
            responses_created: 0,
        }
    }

    /// Answers one request. `record` turns it into the log entry.
    pub fn handle(
        &mut self,
        request: &Request,
        record: impl FnOnce(&Request, Option<Endpoint>) -> RecordedRequest,
    ) -> ResponseTemplate {
        let method = request.method.as_str();
        let path = request.url.path();
        let route = Route::parse(method, path);
        let endpoint = route.endpoint();
        self.requests.push(record(request, endpoint));
        let request_id = self.ids.next("req");

        let mut delay = None;
        if let Some(endpoint) = endpoint {
            match self.faults.get_mut(&endpoint).and_then(VecDeque::pop_front) {
                Some(Fault::Delay(d)) => delay = Some(d),
                Some(fault) => return finish(Err(fault_error(fault)), &request_id, None, None),
                None => {}
            }
        }

        let result = self
            .check_auth(request)
            .and_then(|()| {
                if route.is_assistants() {
                    check_beta(request)
                } else {
                    Ok(())
                }
            })
            .and_then(|()| self.dispatch(&route, request));
        if let Err(error) = &result {
            tracing::debug!(%method, %path, status = error.status, message = %error.message, "mock OpenAI rejected a request");
        }
        finish(result, &request_id, delay, self.config.run_duration)
    }

    fn dispatch(&mut self, route: &Route<'_>, request: &Request) -> Result<Answer, ApiError> {
        let body = request.body.as_slice();
        let query = || -> Vec<(String, String)> {
            request
                .url
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        };
        let json = match *route {
            Route::CreateRun(thread) => return assistants::create_run(self, thread, body),
            Route::CreateResponse => return responses::create_response(self, body),
            Route::CreateThread => assistants::create_thread(self, body),
            Route::CreateMessage(thread) => assistants::create_message(self, thread, body),
            Route::ListMessages(thread) => assistants::list_messages(self, thread, &query()),
            Route::GetRun(thread, run) => assistants::get_run(self, thread, run),
            Route::CancelRun(thread, run) => assistants::cancel_run(self, thread, run),
            Route::CreateConversation => responses::create_conversation(self, body),
            Route::ListConversationItems(conversation) => responses::list_items(self, conversation, &query()),
            Route::GetResponse(id) => responses::get_response(self, id),
            Route::Unknown => Err(ApiError::not_found(format!(
                "Invalid URL ({} {})",
                request.method.as_str(),
                request.url.path()
            ))),
        };
        json.map(Answer::Json)
    }

    fn check_auth(&self, request: &Request) -> Result<(), ApiError> {
        let header = request
            .headers
            .get("authorization")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let key = header.as_deref().and_then(|h| {
            let (scheme, key) = h.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
        });
        match key {
            Some(key) if key == self.config.api_key => Ok(()),
            Some(key) if !key.is_empty() => Err(unauthorized(format!(
                "Incorrect API key provided: {}. You can find your API key at \
                 https://platform.openai.com/account/api-keys.",
                mask_key(key)
            ))),
            _ => Err(unauthorized(
                "You didn't provide an API key. You need to provide your API key in an \
                 Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). \
                 You can obtain an API key from https://platform.openai.com/account/api-keys.",
            )),
        }
    }

    pub fn thread_messages(&self, thread_id: &str) -> Vec<(String, String)> {
        self.threads
            .get(thread_id)
            .map(Thread::history)
            .unwrap_or_default()
    }

    pub fn conversation_items(&self, conversation_id: &str) -> Vec<(String, String)> {
        self.conversations
            .get(conversation_id)
            .map(Conversation::history)
            .unwrap_or_default()
    }
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError {
        status: 401,
        ..ApiError::invalid(message, None, Some("invalid_api_key"))
    }
}

/// Shows only the shape of a wrong key (`sk-***wxyz`), never the key itself.
fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() < 12 {
        return "***".to_owned();
    }
    let head: String = chars.iter().take(3).collect();
    let tail: String = chars.iter().skip(chars.len() - 4).collect();
    format!("{head}***{tail}")
}

fn check_beta(request: &Request) -> Result<(), ApiError> {
    let ok = request.headers.get_all("openai-beta").iter().any(|value| {
        String::from_utf8_lossy(value.as_bytes())
            .split(',')
            .any(|part| part.trim().eq_ignore_ascii_case("assistants=v2"))
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "You must provide the 'OpenAI-Beta' header to access the Assistants API. Please try \
             again by setting the header 'OpenAI-Beta: assistants=v2'.",
            None,
            Some("invalid_beta"),
        ))
    }
}

fn fault_error(fault: Fault) -> ApiError {
    match fault {
        Fault::RateLimited { retry_after_secs } => {
            let mut error = ApiError::with_status(
                429,
                format!("Rate limit reached for requests. Please try again in {retry_after_secs}s."),
            );
            error.headers = vec![
                ("retry-after", retry_after_secs.to_string()),
                (
                    "retry-after-ms",
                    retry_after_secs.saturating_mul(1000).to_string(),
                ),
                ("x-ratelimit-remaining-requests", "0".to_owned()),
                ("x-ratelimit-reset-requests", format!("{retry_after_secs}s")),
            ];
            error
        }
        Fault::ServerError => ApiError::with_status(
            500,
            "The server had an error while processing your request. Sorry about that!",
        ),
        Fault::Overloaded => {
            ApiError::with_status(503, "The engine is currently overloaded, please try again later.")
        }
        Fault::Status(status) => {
            let status = safe_status(status);
            ApiError::with_status(status, format!("Injected fault: HTTP {status}."))
        }
        // Handled before dispatch; kept total so a new variant cannot slip through.
        Fault::Delay(_) => ApiError::with_status(500, "Unexpected delay fault."),
    }
}

/// The HTTP answer. A stream is sent `stream_delay` late (on top of any
/// delay fault): the time its run takes.
fn finish(
    result: Result<Answer, ApiError>,
    request_id: &str,
    delay: Option<Duration>,
    stream_delay: Option<Duration>,
) -> ResponseTemplate {
    let mut delay = delay.unwrap_or_default();
    let template = match result {
        Ok(Answer::Json(body)) => ResponseTemplate::new(200).set_body_json(body),
        Ok(Answer::Events(events)) => {
            delay = delay.saturating_add(stream_delay.unwrap_or_default());
            let mut body = String::new();
            for (event, data) in events {
                body.push_str("event: ");
                body.push_str(&event);
                body.push_str("\ndata: ");
                body.push_str(&data);
                body.push_str("\n\n");
            }
            ResponseTemplate::new(200)
                .set_body_raw(body, "text/event-stream; charset=utf-8")
                .insert_header("cache-control", "no-cache")
        }
        Err(error) => error.into_template(),
    };
    let template = template.insert_header("x-request-id", request_id);
    if delay.is_zero() {
        template
    } else {
        template.set_delay(delay)
    }
}
