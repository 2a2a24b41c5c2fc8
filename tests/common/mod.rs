//! Test support: a scripted in-process HTTP transport, and the shipped
//! flows against the crate's mock OpenAI.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chatflow::http::{HttpClient, HttpError, HttpRequest, HttpResponse};
use serde_json::Value;

/// A request as the fake transport saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
}

type Handler = dyn Fn(&HttpRequest) -> Result<HttpResponse, HttpError> + Send + Sync;

/// Answers from a queue of scripted outcomes first, then from a handler.
#[derive(Clone)]
pub struct FakeHttp {
    seen: Arc<Mutex<Vec<Seen>>>,
    queue: Arc<Mutex<VecDeque<Result<HttpResponse, HttpError>>>>,
    handler: Arc<Handler>,
}

impl FakeHttp {
    pub fn new(
        handler: impl Fn(&HttpRequest) -> Result<HttpResponse, HttpError> + Send + Sync + 'static,
    ) -> Self {
        FakeHttp {
            seen: Arc::default(),
            queue: Arc::default(),
            handler: Arc::new(handler),
        }
    }

    /// Always answers 200 with this JSON.
    pub fn json(value: Value) -> Self {
        Self::new(move |_| Ok(HttpResponse::json(200, &value)))
    }

    /// The next requests get these outcomes, in order.
    pub fn push(&self, outcome: Result<HttpResponse, HttpError>) {
        self.queue.lock().unwrap().push_back(outcome);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

#[async_trait]
impl HttpClient for FakeHttp {
    async fn send(&self, request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        self.seen.lock().unwrap().push(Seen {
            method: request.method().to_string(),
            url: request.url().to_string(),
            headers: request
                .headers()
                .iter()
                .map(|h| (h.name().to_string(), h.value().to_string()))
                .collect(),
            body: request
                .body()
                .as_ref()
                .map(|b| serde_json::from_slice(b).unwrap()),
        });
        if let Some(outcome) = self.queue.lock().unwrap().pop_front() {
            return outcome;
        }
        (self.handler)(request)
    }
}

pub fn with_header(response: HttpResponse, name: &str, value: &str) -> HttpResponse {
    response.with_header(name, value)
}

/// A flow shipped in `flows/`.
pub fn shipped_flow(name: &str) -> chatflow::Flow {
    let path: std::path::PathBuf = [env!("CARGO_MANIFEST_DIR"), "flows", name].iter().collect();
    chatflow::Flow::from_path(path).unwrap()
}

/// An engine running a shipped flow against `mock`, on `clock`.
pub fn mock_engine(
    flow: chatflow::Flow,
    mock: &chatflow::mock::MockOpenAi,
    clock: Arc<dyn chatflow::Clock>,
) -> chatflow::Engine {
    chatflow::Engine::builder(flow)
        .shared_clock(clock)
        .secret("OPENAI_API_KEY", mock.api_key())
        .var("openai_base_url", mock.base_url())
        .var("assistant_id", mock.assistant_id())
        .var("model", "gpt-test")
        .var("instructions", "Be brief. Say HANDOFF for humans.")
        .build()
        .unwrap()
}

/// The mock's assistant: answers every question, hands off when the user
/// asks for a human.
pub fn scripted_reply(input: &chatflow::mock::ReplyInput) -> chatflow::mock::Reply {
    if input.user_text.contains("human") {
        chatflow::mock::Reply::text("HANDOFF: connecting you")
    } else {
        chatflow::mock::Reply::text(format!("Answer to: {}", input.user_text))
    }
}
