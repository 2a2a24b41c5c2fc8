//! The stub transport: answers each request from the test file's stubs, in
//! virtual time, and remembers what was sent and what no stub answered.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::Value;

use super::format::{SseSpec, Stub, StubResponse, TransportFailure};
use crate::VirtualClock;
use crate::http::{HttpClient, HttpError, HttpRequest, HttpResponse, Method};

/// A request the stub saw.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    /// The step that sent it.
    pub(crate) step: Option<String>,
    pub(crate) method: Method,
    /// The URL with secrets masked.
    pub(crate) url: String,
    /// The body, when the stub that answered says what it must hold: the
    /// body as JSON (text when it is not), and that expectation.
    pub(crate) body_check: Option<(Value, Value)>,
}

impl Call {
    /// How a test file names the call: its step, else method and URL.
    pub(crate) fn label(&self) -> String {
        match &self.step {
            Some(step) => step.clone(),
            None => format!("{} {}", self.method, self.url),
        }
    }
}

#[derive(Debug, Default)]
struct Log {
    calls: Vec<Call>,
    unstubbed: Vec<Call>,
}

/// One stub with its place in its sequence of answers.
#[derive(Debug)]
struct Armed {
    stub: Stub,
    answers: Vec<StubResponse>,
    next: AtomicUsize,
}

/// Answers requests from stubs; shared between the engine and the runner.
#[derive(Debug, Clone)]
pub(crate) struct StubHttp {
    stubs: Arc<Vec<Armed>>,
    clock: Arc<VirtualClock>,
    log: Arc<Mutex<Log>>,
}

impl StubHttp {
    /// A transport over `stubs`, each with its answers (checked non-empty
    /// by the caller), moving `clock` on delays and timeouts.
    pub(crate) fn new(stubs: Vec<(Stub, Vec<StubResponse>)>, clock: Arc<VirtualClock>) -> Self {
        let stubs = stubs
            .into_iter()
            .map(|(stub, answers)| Armed {
                stub,
                answers,
                next: AtomicUsize::new(0),
            })
            .collect();
        StubHttp {
            stubs: Arc::new(stubs),
            clock,
            log: Arc::default(),
        }
    }

    /// The requests sent since the last call, and those no stub answered.
    pub(crate) fn take(&self) -> (Vec<Call>, Vec<Call>) {
        let mut log = self.lock();
        (std::mem::take(&mut log.calls), std::mem::take(&mut log.unstubbed))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        // The log holds plain records: a poisoned lock still holds valid ones.
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn find(&self, request: &HttpRequest) -> Option<&Armed> {
        self.stubs.iter().find(|armed| matches(&armed.stub, request))
    }
}

fn matches(stub: &Stub, request: &HttpRequest) -> bool {
    let step = stub
        .step
        .as_deref()
        .is_none_or(|step| request.step() == Some(step));
    let method = stub.method.is_none_or(|method| method == request.method);
    let url = stub.url.as_deref().is_none_or(|url| {
        if url.starts_with('/') {
            request.display_url.ends_with(url)
        } else {
            request.display_url == url
        }
    });
    step && method && url
}

#[async_trait]
impl HttpClient for StubHttp {
    async fn send(&self, request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        let mut call = Call {
            step: request.step().map(str::to_string),
            method: request.method,
            url: request.display_url.clone(),
            body_check: None,
        };
        let Some(armed) = self.find(request) else {
            self.lock().unstubbed.push(call);
            // Not retried by the engine: the runner reports it after the turn.
            return Err(HttpError::InvalidRequest(format!(
                "no stub answers {} {}",
                request.method, request.display_url
            )));
        };
        if let Some(expected) = &armed.stub.request_body {
            let body = request.body.as_deref().unwrap_or_default();
            let got = serde_json::from_slice(body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
            call.body_check = Some((got, expected.clone()));
        }
        self.lock().calls.push(call);
        let nth = armed.next.fetch_add(1, Ordering::Relaxed);
        let Some(answer) = armed.answers.get(nth).or(armed.answers.last()) else {
            return Err(HttpError::InvalidRequest("the stub has no answers".into()));
        };
        answer_with(answer, request, &self.clock)
    }
}

/// The stubbed outcome of one exchange, moving the clock as the exchange would.
fn answer_with(
    answer: &StubResponse,
    request: &HttpRequest,
    clock: &VirtualClock,
) -> Result<HttpResponse, HttpError> {
    let delay = answer.delay.unwrap_or_default();
    if delay >= request.timeout || answer.error == Some(TransportFailure::Timeout) {
        clock.advance(request.timeout);
        return Err(HttpError::Timeout(request.timeout));
    }
    clock.advance(delay);
    match answer.error {
        Some(TransportFailure::Connect) => {
            return Err(HttpError::Connect("stubbed connection failure".into()));
        }
        Some(TransportFailure::Transport) => {
            return Err(HttpError::Transport("stubbed broken connection".into()));
        }
        Some(TransportFailure::Timeout) | None => {}
    }
    let mut response = if let Some(events) = &answer.sse {
        let mut response = HttpResponse::new(answer.status, event_stream(events));
        response
            .headers
            .push(("content-type".into(), crate::http::sse::CONTENT_TYPE.into()));
        response
    } else if let Some(text) = &answer.text {
        HttpResponse::new(answer.status, text.as_bytes())
    } else if let Some(body) = &answer.body {
        HttpResponse::json(answer.status, body)
    } else {
        HttpResponse::new(answer.status, Vec::new())
    };
    for (name, value) in &answer.headers {
        response.headers.push((name.to_ascii_lowercase(), value.clone()));
    }
    if response.body.len() > request.max_response_bytes {
        return Err(HttpError::BodyTooLarge {
            limit: request.max_response_bytes,
        });
    }
    Ok(response)
}

/// The body of a `text/event-stream` answer made of `events`.
fn event_stream(events: &[SseSpec]) -> Vec<u8> {
    let mut body = String::new();
    for event in events {
        if let Some(name) = &event.event {
            body.push_str("event: ");
            body.push_str(name);
            body.push('\n');
        }
        let data = match &event.data {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        for line in data.lines() {
            body.push_str("data: ");
            body.push_str(line);
            body.push('\n');
        }
        body.push('\n');
    }
    body.into_bytes()
}
