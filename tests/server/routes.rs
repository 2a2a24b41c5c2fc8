//! `chatflow::server::router` without a socket: requests go through
//! `tower::ServiceExt::oneshot`, the flow's Api step through a stub
//! `HttpClient`. Then `chatflow::server::serve` on a loopback listener, for
//! its shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use chatflow::http::{HttpClient, HttpError, HttpRequest, HttpResponse};
use chatflow::server::{Metrics, ServerSettings, router};
use chatflow::store::MemoryStore;
use chatflow::{Engine, Flow, Runtime};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tower::ServiceExt;

const API_KEY: &str = "sk-stub-key-31337";

/// Asks, hands off when the user asks for a human, otherwise looks the
/// answer up with one Api call and asks again.
const FLOW: &str = r#"{"name": "routes", "steps": [
  {"type": "question", "name": "Ask", "text": "What do you need?"},
  {"type": "condition", "name": "Human?",
   "any": [{"left": "<<step.Ask.response>>", "op": "contains", "right": "human"}],
   "then": "Say goodbye", "else": "Lookup"},
  {"type": "api", "name": "Lookup", "method": "POST", "url": "https://api.test/answer",
   "headers": {"Authorization": "Bearer <<secret.API_KEY>>"}, "body": {"q": "<<step.Ask.response>>"}},
  {"type": "message", "name": "Answer", "text": "<<step.Lookup.response.answer>> to: <<step.Ask.response>>", "next": "Ask"},
  {"type": "message", "name": "Say goodbye", "text": "A person will take over."},
  {"type": "assign", "name": "Assign", "team": "support"}
]}"#;

/// The flow's API: answers `{"answer": "Answer"}`, or with `status` and a
/// body that echoes the key (as an API that quotes a wrong key would);
/// waits for a permit first when `gate` is set.
struct StubApi {
    status: u16,
    gate: Option<Arc<Semaphore>>,
    calls: AtomicUsize,
}

#[async_trait]
impl HttpClient for StubApi {
    async fn send(&self, _request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = &self.gate {
            let _permit = gate.acquire().await;
        }
        Ok(match self.status {
            200 => HttpResponse::json(200, &json!({"answer": "Answer"})),
            status => HttpResponse::json(status, &json!({"error": format!("invalid key {API_KEY}")})),
        })
    }
}

struct Bot {
    app: Router,
    api: Arc<StubApi>,
    runtime: Runtime,
}

impl Bot {
    fn new(settings: ServerSettings) -> Bot {
        Bot::with_api(settings, 200, None)
    }

    fn with_api(settings: ServerSettings, status: u16, gate: Option<Arc<Semaphore>>) -> Bot {
        let api = Arc::new(StubApi {
            status,
            gate,
            calls: AtomicUsize::new(0),
        });
        let metrics = Metrics::new();
        let engine = Engine::builder(Flow::from_json(FLOW).unwrap())
            .http_client(metrics.instrument(api.clone()))
            .secret("API_KEY", API_KEY)
            .build()
            .unwrap();
        let runtime = Runtime::new(engine, Arc::new(MemoryStore::new()));
        Bot {
            app: router(runtime.clone(), settings.with_metrics(metrics)),
            api,
            runtime,
        }
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
    text: String,
}

async fn send(app: &Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        text,
    }
}

fn post(path: &str, body: impl Into<Body>, token: Option<&str>) -> Request<Body> {
    let mut request = Request::post(path).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request.body(body.into()).unwrap()
}

fn get(path: &str, token: Option<&str>) -> Request<Body> {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request.body(Body::empty()).unwrap()
}

async fn chat(app: &Router, body: Value) -> Answer {
    send(app, post("/chat", body.to_string(), None)).await
}

/// `(direction, text)` of each transcript entry, checking `seq` runs 1, 2, 3, …
fn transcript(body: &Value) -> Vec<(String, String)> {
    let entries = body["transcript"].as_array().unwrap();
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            assert_eq!(e["seq"], json!(i + 1), "{body}");
            (
                e["direction"].as_str().unwrap().to_string(),
                e["text"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn entry(direction: &str, text: &str) -> (String, String) {
    (direction.to_string(), text.to_string())
}

#[tokio::test]
async fn a_conversation_gets_answers_then_a_handoff_and_its_transcript() {
    let bot = Bot::new(ServerSettings::new());

    let health = send(&bot.app, get("/healthz", None)).await;
    assert_eq!((health.status, health.text.as_str()), (StatusCode::OK, "ok"));

    let first = chat(
        &bot.app,
        json!({"conversation_id": "c1", "text": "Where is my order?", "message_id": "m1"}),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(
        first.body,
        json!({
            "conversation_id": "c1",
            "handoff": false,
            "messages": ["What do you need?", "Answer to: Where is my order?", "What do you need?"],
            "reply": "What do you need?\nAnswer to: Where is my order?\nWhat do you need?",
            "status": {"state": "awaiting_reply"},
        })
    );

    let second = chat(
        &bot.app,
        json!({"conversation_id": "c1", "text": "a human please"}),
    )
    .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    assert_eq!(second.body["messages"], json!(["A person will take over."]));
    assert_eq!(second.body["reply"], json!("A person will take over."));
    assert_eq!(second.body["handoff"], json!(true));

    let conversation = send(&bot.app, get("/conversations/c1", None)).await;
    assert_eq!(conversation.status, StatusCode::OK);
    assert_eq!(conversation.body["conversation_id"], json!("c1"));
    assert_eq!(conversation.body["status"]["state"], json!("handed_off"));
    assert_eq!(
        transcript(&conversation.body),
        [
            entry("in", "Where is my order?"),
            entry("out", "What do you need?"),
            entry("out", "Answer to: Where is my order?"),
            entry("out", "What do you need?"),
            entry("in", "a human please"),
            entry("out", "A person will take over."),
            entry("handoff", "support"),
        ]
    );

    let unknown = send(&bot.app, get("/conversations/nobody", None)).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.body["error"].as_str().unwrap().contains("nobody"));
    let bad_id = send(&bot.app, get("/conversations/a%20b", None)).await;
    assert_eq!(bad_id.status, StatusCode::BAD_REQUEST);
    assert!(bad_id.body["error"].is_string());
}

#[tokio::test]
async fn a_repeated_message_id_is_applied_once() {
    let bot = Bot::new(ServerSettings::new());
    let message = json!({"conversation_id": "d1", "text": "Where is my order?", "message_id": "m-1"});

    let first = chat(&bot.app, message.clone()).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert!(first.body.get("duplicate").is_none(), "{}", first.text);

    let again = chat(&bot.app, message).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.body["duplicate"], json!(true));
    assert_eq!(again.body["messages"], json!([]));
    assert_eq!(again.body["handoff"], json!(false));
    assert_eq!(bot.api.calls.load(Ordering::SeqCst), 1);

    let conversation = send(&bot.app, get("/conversations/d1", None)).await;
    assert_eq!(transcript(&conversation.body).len(), 4);
}

#[tokio::test]
async fn malformed_requests_are_4xx_with_a_reason() {
    let bot = Bot::new(
        ServerSettings::new()
            .with_body_limit(4096)
            .with_max_message_id_bytes(8),
    );
    let cases: Vec<(&str, String, StatusCode)> = vec![
        (
            "not JSON",
            "{\"conversation_id\": ".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "no text",
            json!({"conversation_id": "c1"}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "text not a string",
            json!({"conversation_id": "c1", "text": 5}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "no id",
            json!({"text": "hi"}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "empty id",
            json!({"conversation_id": "", "text": "hi"}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "id of 129 bytes",
            json!({"conversation_id": "a".repeat(129), "text": "hi"}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "id with a slash",
            json!({"conversation_id": "a/b", "text": "hi"}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "empty message id",
            json!({"conversation_id": "c1", "text": "hi", "message_id": ""}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "message id over the setting",
            json!({"conversation_id": "c1", "text": "hi", "message_id": "123456789"}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "body over the limit",
            json!({"conversation_id": "c1", "text": "x".repeat(5000)}).to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (case, body, expected) in cases {
        let got = send(&bot.app, post("/chat", body, None)).await;
        assert_eq!(got.status, expected, "{case}: {}", got.text);
        let reason = got.body["error"].as_str().unwrap_or_default();
        assert!(!reason.is_empty(), "{case}: no reason in {}", got.text);
    }
    assert_eq!(
        bot.api.calls.load(Ordering::SeqCst),
        0,
        "no bad request may run a turn"
    );

    let longest: String = "aZ09._:@-".chars().cycle().take(128).collect();
    let got = chat(
        &bot.app,
        json!({"conversation_id": longest, "text": "hi", "message_id": "12345678"}),
    )
    .await;
    assert_eq!(
        got.status,
        StatusCode::OK,
        "the limits themselves are fine: {}",
        got.text
    );

    let nowhere = send(&bot.app, get("/nowhere", None)).await;
    assert_eq!(nowhere.status, StatusCode::NOT_FOUND);
    assert_eq!(nowhere.body, json!({"error": "no such endpoint"}));
}

#[tokio::test]
async fn a_text_over_the_engines_reply_limit_is_a_400() {
    // The default body limit leaves room for the longest text even if JSON-escaped.
    let bot = Bot::new(ServerSettings::new());
    let limit = bot.runtime.engine().options().max_reply_bytes();
    let got = chat(
        &bot.app,
        json!({"conversation_id": "c1", "text": "x".repeat(limit + 1)}),
    )
    .await;
    assert_eq!(
        got.status,
        StatusCode::BAD_REQUEST,
        "{}",
        &got.text[..got.text.len().min(200)]
    );
    assert!(got.body["error"].as_str().unwrap().contains("limit"));
}

#[tokio::test]
async fn the_bearer_token_guards_chat_and_conversations_only() {
    let token = "s3cret-server-token";
    let bot = Bot::new(ServerSettings::new().with_api_token(token));
    let body = json!({"conversation_id": "t1", "text": "Where is my order?"}).to_string();

    for wrong in [None, Some("wrong"), Some("s3cret-server-token-x"), Some("")] {
        let got = send(&bot.app, post("/chat", body.clone(), wrong)).await;
        assert_eq!(got.status, StatusCode::UNAUTHORIZED, "{wrong:?}: {}", got.text);
        assert!(got.body["error"].is_string());
        assert_eq!(got.headers["www-authenticate"], "Bearer");
        assert_eq!(
            send(&bot.app, get("/conversations/t1", wrong)).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // Checked before the body is read: an oversized body without a token is a 401.
    let huge = send(&bot.app, post("/chat", "x".repeat(8 << 20), None)).await;
    assert_eq!(huge.status, StatusCode::UNAUTHORIZED);
    assert_eq!(bot.api.calls.load(Ordering::SeqCst), 0);

    let got = send(&bot.app, post("/chat", body, Some(token))).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text);
    let lower_case_scheme = Request::get("/conversations/t1")
        .header("authorization", format!("bearer {token}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&bot.app, lower_case_scheme).await.status, StatusCode::OK);
    assert_eq!(send(&bot.app, get("/healthz", None)).await.status, StatusCode::OK);
    assert_eq!(send(&bot.app, get("/metrics", None)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn mounted_under_a_prefix_the_routes_and_the_token_work_the_same() {
    let token = "nested-token";
    let bot = Bot::new(ServerSettings::new().with_api_token(token));
    let app = Router::new()
        .route("/", axum::routing::get(|| async { "host" }))
        .nest("/bot", bot.app.clone());

    assert_eq!(send(&app, get("/", None)).await.text, "host");
    let body = json!({"conversation_id": "n1", "text": "Where is my order?"}).to_string();
    assert_eq!(
        send(&app, post("/bot/chat", body.clone(), None)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let got = send(&app, post("/bot/chat", body, Some(token))).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text);
    assert_eq!(
        send(&app, get("/bot/conversations/n1", Some(token))).await.status,
        StatusCode::OK
    );
    assert_eq!(send(&app, get("/bot/healthz", None)).await.text, "ok");
}

#[tokio::test]
async fn a_refused_api_call_is_a_502_with_the_masked_error() {
    let bot = Bot::with_api(ServerSettings::new(), 401, None);
    let got = chat(
        &bot.app,
        json!({"conversation_id": "r1", "text": "Where is my order?"}),
    )
    .await;
    assert_eq!(got.status, StatusCode::BAD_GATEWAY, "{}", got.text);
    assert!(!got.body["error"].as_str().unwrap().is_empty());
    assert_eq!(got.body["status"]["state"], json!("failed"));
    assert!(!got.text.contains(API_KEY), "{}", got.text);

    let conversation = send(&bot.app, get("/conversations/r1", None)).await;
    assert_eq!(conversation.body["status"]["state"], json!("failed"));
    assert!(!conversation.text.contains(API_KEY));
}

/// Polls `GET /conversations/{id}` until `done` holds, at most 5 s.
async fn wait_for(app: &Router, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = send(app, get(&format!("/conversations/{id}"), None)).await;
        if got.status == StatusCode::OK && done(&got.body) {
            return got.body;
        }
        assert!(
            Instant::now() < deadline,
            "not reached; last: {} {}",
            got.status,
            got.text
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn metric_line(metrics: &str, prefix: &str) -> String {
    metrics
        .lines()
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_past_the_timeout_is_a_504_and_its_answer_lands_in_the_transcript() {
    let gate = Arc::new(Semaphore::new(0));
    let bot = Bot::with_api(
        ServerSettings::new().with_turn_timeout(Duration::from_millis(50)),
        200,
        Some(gate.clone()),
    );

    let got = chat(
        &bot.app,
        json!({"conversation_id": "slow-1", "text": "Where is my order?"}),
    )
    .await;
    assert_eq!(got.status, StatusCode::GATEWAY_TIMEOUT, "{}", got.text);
    assert!(
        got.body["error"]
            .as_str()
            .unwrap()
            .contains("/conversations/slow-1")
    );
    assert_eq!(got.headers["x-conversation-id"], "slow-1");
    let metrics = send(&bot.app, get("/metrics", None)).await.text;
    assert_eq!(
        metric_line(&metrics, "chatflow_turns_in_flight "),
        "chatflow_turns_in_flight 1"
    );

    // The Api call answers after the request gave up: the turn goes on.
    gate.add_permits(1);
    let body = wait_for(&bot.app, "slow-1", |b| b["status"]["state"] == "awaiting_reply").await;
    let answers = transcript(&body)
        .into_iter()
        .filter(|(_, text)| text == "Answer to: Where is my order?")
        .count();
    assert_eq!(answers, 1, "{body}");
    let metrics = send(&bot.app, get("/metrics", None)).await.text;
    assert_eq!(
        metric_line(&metrics, "chatflow_turns_in_flight "),
        "chatflow_turns_in_flight 0"
    );
    assert!(
        metrics.contains("chatflow_chat_requests_total{code=\"504\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn metrics_live_in_each_routers_state() {
    let bot = Bot::new(ServerSettings::new());
    let other = Bot::new(ServerSettings::new());
    chat(
        &bot.app,
        json!({"conversation_id": "m1", "text": "Where is my order?"}),
    )
    .await;
    chat(
        &bot.app,
        json!({"conversation_id": "m1", "text": "a human please"}),
    )
    .await;
    send(&bot.app, post("/chat", "{", None)).await;

    let got = send(&bot.app, get("/metrics", None)).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(
        got.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let metrics = got.text;
    for expected in [
        "chatflow_turns_total{status=\"handed_off\"} 1",
        "chatflow_turns_total{status=\"awaiting_reply\"} 1",
        "chatflow_messages_total{direction=\"in\"} 2",
        "chatflow_messages_total{direction=\"out\"} 4",
        "chatflow_messages_total{direction=\"handoff\"} 1",
        "chatflow_turn_seconds_count 2",
        "chatflow_chat_requests_total{code=\"200\"} 2",
        "chatflow_chat_requests_total{code=\"400\"} 1",
        "chatflow_api_calls_total{status=\"200\"} 1",
        "chatflow_api_seconds_count{status=\"200\"} 1",
        "chatflow_turns_in_flight 0",
        "chatflow_conversations{state=\"parked\"} 1",
        "chatflow_conversations{state=\"sleeping\"} 0",
        "chatflow_start_time_seconds ",
        "# EOF",
    ] {
        assert!(metrics.contains(expected), "no {expected} in\n{metrics}");
    }
    let steps = bot.runtime.engine().steps_run();
    assert!(steps > 0);
    assert_eq!(
        metric_line(&metrics, "chatflow_steps_total "),
        format!("chatflow_steps_total {steps}")
    );

    // Another router counts for itself: no global recorder.
    let untouched = send(&other.app, get("/metrics", None)).await.text;
    assert!(
        untouched.contains("chatflow_turns_total{status=\"handed_off\"} 0"),
        "{untouched}"
    );
    assert!(
        !untouched.contains("chatflow_chat_requests_total{"),
        "{untouched}"
    );
}

#[test]
fn the_token_never_prints() {
    let settings = ServerSettings::new().with_api_token("s3cret-token");
    assert!(!format!("{settings:?}").contains("s3cret-token"));
    assert!(!format!("{settings:#?}").contains("s3cret-token"));
}

/// `serve` on a real listener, stopped by its shutdown future.
mod serving {
    use super::*;
    use chatflow::server::serve;
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    async fn post_chat(addr: std::net::SocketAddr, id: &str) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("http://{addr}/chat"))
            .header("content-type", "application/json")
            .body(json!({"conversation_id": id, "text": "Where is my order?"}).to_string())
            .send()
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serve_answers_until_told_to_stop_then_waits_for_turns_still_running() {
        let gate = Arc::new(Semaphore::new(0));
        let bot = Bot::with_api(ServerSettings::new(), 200, Some(gate.clone()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let settings = ServerSettings::new()
            .with_turn_timeout(Duration::from_millis(50))
            .with_shutdown_grace(Duration::from_secs(10));
        let served = tokio::spawn(serve(listener, bot.runtime.clone(), settings, async {
            let _ = stopped.await;
        }));

        assert_eq!(post_chat(addr, "s1").await.status(), 504);
        stop.send(()).unwrap();
        // The turn whose request timed out holds the shutdown...
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!served.is_finished(), "serve returned with a turn still running");
        // ...until it reaches its end.
        gate.add_permits(1);
        let result = tokio::time::timeout(Duration::from_secs(5), served).await;
        assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
        let transcript = bot.runtime.store().transcript("s1", 0).await.unwrap();
        assert!(
            transcript
                .iter()
                .any(|e| e.text == "Answer to: Where is my order?"),
            "{transcript:?}"
        );
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "still listening after the shutdown"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_shutdown_grace_bounds_the_wait_for_a_stuck_turn() {
        let gate = Arc::new(Semaphore::new(0));
        let bot = Bot::with_api(ServerSettings::new(), 200, Some(gate));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let settings = ServerSettings::new()
            .with_turn_timeout(Duration::from_millis(50))
            .with_shutdown_grace(Duration::from_millis(200));
        let served = tokio::spawn(serve(listener, bot.runtime.clone(), settings, async {
            let _ = stopped.await;
        }));

        assert_eq!(post_chat(addr, "stuck").await.status(), 504);
        let started = Instant::now();
        stop.send(()).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(5), served).await;
        assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
    }
}

/// A menu: the answer names an option, or the Question is asked again.
const MENU: &str = r#"{"name": "menu", "steps": [
  {"type": "question", "name": "Menu", "text": "How can I help?", "options": [
    {"id": "track", "title": "Track an order", "description": "Where is my parcel?"}, "Talk to a person"]},
  {"type": "condition", "name": "Picked?", "all": [{"left": "<<step.Menu.option>>", "op": "is_empty"}],
   "then": "Menu", "else": "Tell"},
  {"type": "message", "name": "Tell", "text": "You picked <<step.Menu.option>>"}
]}"#;

#[tokio::test]
async fn chat_answers_carry_the_options_of_the_question_asked() {
    let engine = Engine::builder(Flow::from_json(MENU).unwrap()).build().unwrap();
    let runtime = Runtime::new(engine, Arc::new(MemoryStore::new()));
    let app = router(runtime.clone(), ServerSettings::new());
    let options = json!([
        {"id": "track", "title": "Track an order", "description": "Where is my parcel?"},
        {"id": "Talk to a person", "title": "Talk to a person"}
    ]);

    // The start message answers the menu with no option: asked again, with its options.
    let got = chat(&app, json!({"conversation_id": "m1", "text": "hello"})).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text);
    assert_eq!(
        got.body["messages"],
        json!(["How can I help?", "How can I help?"])
    );
    assert_eq!(got.body["options"], options);

    // A tapped button's id picks the option; the flow ends, no options left.
    let got = chat(&app, json!({"conversation_id": "m1", "text": "track"})).await;
    assert_eq!(got.body["messages"], json!(["You picked track"]), "{}", got.text);
    assert!(got.body.get("options").is_none(), "{}", got.text);

    // The runtime's Turn carries them too.
    let turn = runtime.handle_message("m2", None, "2").await.unwrap();
    assert_eq!(turn.texts(), ["How can I help?", "You picked Talk to a person"]);
    assert!(turn.options.is_empty());
    let turn = runtime.handle_message("m3", None, "?").await.unwrap();
    assert_eq!(serde_json::to_value(&turn.options).unwrap(), options);
}
