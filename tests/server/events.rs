//! `GET /conversations/{id}/events` (server-sent events) and push beside
//! `/chat`: the stream's events and resume, its errors and auth, the end of
//! streams on shutdown and on a store error, replies owned by exactly one
//! `/chat` response when messages overlap, a Delay's follow-up reaching the
//! stream after its request returned, and the undelivered-replies metric.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use chatflow::channel::{Channel, Delivery, DeliveryOutcome};
use chatflow::http::{HttpClient, HttpError, HttpRequest, HttpResponse};
use chatflow::server::{Metrics, ServerSettings, Shutdown, router, serve};
use chatflow::store::{
    Claim, ConversationCounts, DeliveryRecord, Enqueued, InboundMessage, MemoryStore, PendingDeliveries,
    Save, Store, StoreError, TranscriptEntry,
};
use chatflow::{Conversation, DeliveryReport, Engine, Flow, Runtime, RuntimeOptions};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tower::ServiceExt;

use super::sse_reader::{EventReader, SseEvent};

/// A menu whose options make `question` events; "Talk to a person" hands off.
const MENU: &str = r#"{"name": "events", "steps": [
  {"type": "question", "name": "Menu", "text": "How can I help?", "options": [
    {"id": "track", "title": "Track an order"}, {"id": "human", "title": "Talk to a person"}]},
  {"type": "condition", "name": "Person?", "all": [{"left": "<<step.Menu.option>>", "op": "equals", "right": "human"}],
   "then": "Bye", "else": "Track"},
  {"type": "message", "name": "Track", "text": "Your order is on its way", "next": "Menu"},
  {"type": "message", "name": "Bye", "text": "A person will take over."},
  {"type": "assign", "name": "Assign", "team": "support"}
]}"#;

/// Every answer takes one Api call (gated in the overlap test).
const LOOKUP: &str = r#"{"name": "lookup", "steps": [
  {"type": "question", "name": "Ask", "text": "What do you need?"},
  {"type": "api", "name": "Lookup", "method": "POST", "url": "https://api.test/answer", "body": {"q": "<<step.Ask.response>>"}},
  {"type": "message", "name": "Answer", "text": "Answer to: <<step.Ask.response>>", "next": "Ask"}
]}"#;

/// A follow-up 50 ms after the answer: longer than the turn timeout the
/// test sets, so it is committed after `/chat` returned.
const FOLLOW_UP: &str = r#"{"name": "follow-up", "steps": [
  {"type": "question", "name": "Ask", "text": "What do you need?"},
  {"type": "message", "name": "Checking", "text": "Checking <<step.Ask.response>>…"},
  {"type": "delay", "name": "Wait", "seconds": 0.05},
  {"type": "message", "name": "Done", "text": "Done: <<step.Ask.response>>", "next": "Ask"}
]}"#;

/// The flow's API: `{"answer": "ok"}`, after a permit of `gate`.
struct GatedApi {
    gate: Arc<Semaphore>,
    calls: AtomicUsize,
}

#[async_trait]
impl HttpClient for GatedApi {
    async fn send(&self, _request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let _permit = self.gate.acquire().await;
        Ok(HttpResponse::json(200, &json!({"answer": "ok"})))
    }
}

fn runtime(flow: &str, store: Arc<dyn Store>) -> Runtime {
    Runtime::new(
        Engine::builder(Flow::from_json(flow).unwrap()).build().unwrap(),
        store,
    )
}

fn memory_runtime(flow: &str) -> Runtime {
    runtime(flow, Arc::new(MemoryStore::new()))
}

fn events_request(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::get(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::empty()).unwrap()
}

async fn chat(app: &Router, id: &str, text: &str) -> (StatusCode, Value) {
    let request = Request::post("/chat")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"conversation_id": id, "text": text}).to_string(),
        ))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// `GET /conversations/{id}`'s transcript.
async fn transcript(app: &Router, id: &str) -> Vec<Value> {
    let response = app
        .clone()
        .oneshot(events_request(&format!("/conversations/{id}"), &[]))
        .await
        .unwrap();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    body["transcript"].as_array().unwrap().clone()
}

/// The bot entries of a transcript, as the events that carry them.
fn as_events(transcript: &[Value]) -> Vec<SseEvent> {
    transcript
        .iter()
        .filter(|entry| entry["direction"] != "in")
        .map(|entry| SseEvent {
            id: entry["seq"].to_string(),
            name: match entry["direction"].as_str().unwrap() {
                "handoff" => "handoff",
                _ if entry.get("options").is_some() => "question",
                _ => "message",
            }
            .to_string(),
            data: entry.clone(),
        })
        .collect()
}

async fn take(reader: &mut EventReader, n: usize) -> Vec<SseEvent> {
    let mut events = Vec::new();
    for _ in 0..n {
        events.push(reader.next().await.expect("the stream ended early"));
    }
    events
}

#[tokio::test]
async fn the_stream_sends_each_bot_entry_as_it_is_committed_and_resumes_after_the_last_id() {
    let app = router(
        memory_runtime(MENU),
        ServerSettings::new().with_event_keep_alive(Duration::from_millis(10)),
    );

    // Opened before the conversation exists: no 404, nothing but keep-alives.
    let (status, headers, mut live) =
        EventReader::open(&app, events_request("/conversations/e1/events", &[])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(headers["x-accel-buffering"], "no");
    live.assert_quiet(Duration::from_millis(50)).await;
    assert!(live.comments > 0, "no keep-alive comment");

    let (status, body) = chat(&app, "e1", "hello").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let first = take(&mut live, 3).await;
    let (status, body) = chat(&app, "e1", "human").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["handoff"], json!(true));
    let second = take(&mut live, 2).await;

    let transcript = transcript(&app, "e1").await;
    let expected = as_events(&transcript);
    assert_eq!([first, second].concat(), expected);
    let names: Vec<(&str, &str)> = expected
        .iter()
        .map(|e| (e.name.as_str(), e.data["text"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("question", "How can I help?"),
            ("message", "Your order is on its way"),
            ("question", "How can I help?"),
            ("message", "A person will take over."),
            ("handoff", "support"),
        ]
    );
    assert_eq!(
        expected.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["2", "3", "4", "6", "7"]
    );
    live.assert_quiet(Duration::from_millis(30)).await;

    // Resumed: only the entries after the id given; the header wins over the query.
    for (path, headers, first_id) in [
        ("/conversations/e1/events", vec![("last-event-id", "4")], "6"),
        ("/conversations/e1/events?after=3", vec![], "4"),
        (
            "/conversations/e1/events?after=1",
            vec![("last-event-id", "6")],
            "7",
        ),
        ("/conversations/e1/events", vec![("last-event-id", "")], "2"),
    ] {
        let (status, _, mut resumed) = EventReader::open(&app, events_request(path, &headers)).await;
        assert_eq!(status, StatusCode::OK, "{path} {headers:?}");
        let rest: Vec<SseEvent> = expected
            .iter()
            .skip_while(|e| e.id != first_id)
            .cloned()
            .collect();
        assert_eq!(take(&mut resumed, rest.len()).await, rest, "{path} {headers:?}");
        resumed.assert_quiet(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_a_client_resumes_after_a_restart_from_its_last_event_id() {
    let dir = std::env::temp_dir().join(format!(
        "chatflow-events-{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("chatflow.db").display());

    let before = {
        let store = Arc::new(chatflow::store::SqliteStore::connect(&url).await.unwrap());
        let app = router(runtime(MENU, store), ServerSettings::new());
        let (_, _, mut live) = EventReader::open(&app, events_request("/conversations/r1/events", &[])).await;
        chat(&app, "r1", "hello").await;
        take(&mut live, 2).await
    };
    // Another process on the same file, after the first one stopped.
    let store = Arc::new(chatflow::store::SqliteStore::connect(&url).await.unwrap());
    let app = router(runtime(MENU, store), ServerSettings::new());
    let last = before.last().unwrap().id.clone();
    let (_, _, mut resumed) = EventReader::open(
        &app,
        events_request("/conversations/r1/events", &[("last-event-id", &last)]),
    )
    .await;
    chat(&app, "r1", "human").await;
    let after = take(&mut resumed, 3).await;
    let expected = as_events(&transcript(&app, "r1").await);
    assert_eq!([before, after].concat(), expected);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_bad_id_or_resume_point_is_a_400_with_a_reason() {
    let app = router(memory_runtime(MENU), ServerSettings::new());
    let long = format!("/conversations/{}/events", "a".repeat(129));
    for (path, headers) in [
        ("/conversations/a%20b/events", vec![]),
        (long.as_str(), vec![]),
        ("/conversations/e1/events", vec![("last-event-id", "seven")]),
        ("/conversations/e1/events", vec![("last-event-id", "-1")]),
        ("/conversations/e1/events?after=x", vec![]),
    ] {
        let response = app.clone().oneshot(events_request(path, &headers)).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path} {headers:?}");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(!body["error"].as_str().unwrap().is_empty(), "{path}: {body}");
    }
}

#[tokio::test]
async fn with_a_token_the_stream_needs_the_bearer_header_not_a_query_parameter() {
    let token = "s3cret-events-token";
    let app = router(memory_runtime(MENU), ServerSettings::new().with_api_token(token));
    let bearer = format!("Bearer {token}");
    let with_query = format!("/conversations/t1/events?access_token={token}");
    for (path, headers) in [
        ("/conversations/t1/events", vec![]),
        (
            "/conversations/t1/events",
            vec![("authorization", "Bearer wrong")],
        ),
        (with_query.as_str(), vec![]),
    ] {
        let response = app.clone().oneshot(events_request(path, &headers)).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path} {headers:?}");
    }
    let (status, _, _) = EventReader::open(
        &app,
        events_request("/conversations/t1/events", &[("authorization", &bearer)]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_chat_requests_never_return_the_same_reply() {
    let gate = Arc::new(Semaphore::new(0));
    let api = Arc::new(GatedApi {
        gate: gate.clone(),
        calls: AtomicUsize::new(0),
    });
    let engine = Engine::builder(Flow::from_json(LOOKUP).unwrap())
        .http_client(api.clone())
        .build()
        .unwrap();
    let runtime = Runtime::new(engine, Arc::new(MemoryStore::new()));
    let app = router(runtime.clone(), ServerSettings::new());
    let (_, _, mut live) = EventReader::open(&app, events_request("/conversations/o1/events", &[])).await;

    // The first message's turn waits in its Api call…
    let first = tokio::spawn({
        let app = app.clone();
        async move { chat(&app, "o1", "first").await }
    });
    wait_until(|| api.calls.load(Ordering::SeqCst) == 1).await;
    // …when the second message arrives (recorded, its turn waiting for the first).
    let second = tokio::spawn({
        let app = app.clone();
        async move { chat(&app, "o1", "second").await }
    });
    let store = runtime.store().clone();
    wait_for_entry(&*store, "o1", "second").await;
    gate.add_permits(2);
    let (first, second) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!(first.0, StatusCode::OK, "{}", first.1);
    assert_eq!(second.0, StatusCode::OK, "{}", second.1);

    let texts = |body: &Value| -> Vec<String> {
        body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        texts(&first.1),
        ["What do you need?", "Answer to: first", "What do you need?"]
    );
    assert_eq!(texts(&second.1), ["Answer to: second", "What do you need?"]);

    // Together they are every bot entry, each answering its own message.
    let transcript = transcript(&app, "o1").await;
    let bot: Vec<&Value> = transcript.iter().filter(|e| e["direction"] != "in").collect();
    assert_eq!(bot.len(), texts(&first.1).len() + texts(&second.1).len());
    let seq_of = |text: &str| {
        transcript
            .iter()
            .find(|e| e["direction"] == "in" && e["text"] == text)
            .unwrap()["seq"]
            .clone()
    };
    let owned: Vec<(String, Value)> = bot
        .iter()
        .map(|e| (e["text"].as_str().unwrap().to_string(), e["reply_to"].clone()))
        .collect();
    assert_eq!(
        owned,
        [
            ("What do you need?".to_string(), seq_of("first")),
            ("Answer to: first".to_string(), seq_of("first")),
            ("What do you need?".to_string(), seq_of("first")),
            ("Answer to: second".to_string(), seq_of("second")),
            ("What do you need?".to_string(), seq_of("second")),
        ]
    );
    // The stream carries each of them once.
    assert_eq!(take(&mut live, 5).await, as_events(&transcript));
    live.assert_quiet(Duration::from_millis(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_committed_after_chat_returned_arrives_on_the_stream_of_a_served_router() {
    let runtime = memory_runtime(FOLLOW_UP);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let settings = ServerSettings::new()
        .with_turn_timeout(Duration::from_millis(10))
        .with_shutdown_grace(Duration::from_secs(5));
    let served = tokio::spawn(serve(listener, runtime.clone(), settings, async {
        let _ = stopped.await;
    }));
    let mut live = EventReader::connect(&format!("http://{addr}/conversations/f1/events")).await;

    let answer = reqwest::Client::new()
        .post(format!("http://{addr}/chat"))
        .header("content-type", "application/json")
        .body(json!({"conversation_id": "f1", "text": "my order"}).to_string())
        .send()
        .await
        .unwrap();
    // The request gave up while the turn slept in its Delay, pointing to the stream.
    assert_eq!(answer.status(), 504);
    let reason: Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    assert!(reason["error"].as_str().unwrap().contains("/events"), "{reason}");
    let texts: Vec<String> = take(&mut live, 4)
        .await
        .into_iter()
        .map(|e| e.data["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        texts,
        [
            "What do you need?",
            "Checking my order…",
            "Done: my order",
            "What do you need?"
        ]
    );
    let transcript = runtime.store().transcript("f1", 0).await.unwrap();
    assert!(
        transcript[1..].iter().all(|e| e.reply_to == Some(1)),
        "{transcript:?}"
    );

    // The shutdown ends the open stream: serve does not wait on it.
    stop.send(()).unwrap();
    assert_eq!(live.next().await, None);
    let result = tokio::time::timeout(Duration::from_secs(5), served).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_promptly_with_event_streams_open() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(serve(
        listener,
        memory_runtime(MENU),
        ServerSettings::new(),
        async {
            let _ = stopped.await;
        },
    ));
    let mut streams = Vec::new();
    for id in ["s1", "s2"] {
        streams.push(EventReader::connect(&format!("http://{addr}/conversations/{id}/events")).await);
    }
    let started = Instant::now();
    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), served).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    for stream in &mut streams {
        assert_eq!(stream.next().await, None);
    }
}

#[tokio::test]
async fn a_hosts_shutdown_signal_ends_its_routers_streams() {
    let shutdown = Shutdown::new();
    let app = router(
        memory_runtime(MENU),
        ServerSettings::new().with_shutdown(shutdown.clone()),
    );
    let (_, _, mut open) = EventReader::open(&app, events_request("/conversations/h1/events", &[])).await;
    open.assert_quiet(Duration::from_millis(20)).await;
    shutdown.trigger();
    assert_eq!(open.next().await, None);
    // One opened after the signal ends at once.
    let (status, _, mut late) =
        EventReader::open(&app, events_request("/conversations/h1/events", &[])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(late.next().await, None);
}

#[tokio::test]
async fn a_store_error_ends_the_stream_cleanly_and_the_client_resumes() {
    let store = Arc::new(FailingTranscripts::default());
    let metrics = Metrics::new();
    let app = router(
        runtime(MENU, store.clone()),
        ServerSettings::new().with_metrics(metrics.clone()),
    );
    let (_, _, mut live) = EventReader::open(&app, events_request("/conversations/x1/events", &[])).await;
    chat(&app, "x1", "hello").await;
    let seen = take(&mut live, 3).await;
    assert!(metrics.encode().contains("chatflow_event_streams 1"));

    store.failing.store(true, Ordering::SeqCst);
    let (status, body) = chat(&app, "x1", "human").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(live.next().await, None, "the stream did not end");
    assert!(metrics.encode().contains("chatflow_event_streams 0"));

    // Back up: the client resumes after the last id it saw, missing nothing.
    store.failing.store(false, Ordering::SeqCst);
    let last = seen.last().unwrap().id.clone();
    let (_, _, mut resumed) = EventReader::open(
        &app,
        events_request("/conversations/x1/events", &[("last-event-id", &last)]),
    )
    .await;
    let rest: Vec<String> = take(&mut resumed, 2)
        .await
        .into_iter()
        .map(|e| e.data["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(rest, ["A person will take over.", "support"]);
}

/// A channel that asks to retry each reply once, then refuses it for good.
struct Refusing;

#[async_trait]
impl Channel for Refusing {
    async fn deliver(&self, delivery: &Delivery) -> DeliveryOutcome {
        match delivery.attempt {
            1 => DeliveryOutcome::retry_after(Duration::ZERO, "busy"),
            _ => DeliveryOutcome::refused("no such number"),
        }
    }
}

#[tokio::test]
async fn delivery_attempts_and_undelivered_replies_are_counted_by_channel() {
    let metrics = Metrics::new();
    let engine = Engine::builder(Flow::from_json(MENU).unwrap()).build().unwrap();
    let runtime = Runtime::builder(engine, Arc::new(MemoryStore::new()))
        .options(RuntimeOptions::default().with_delivery_backoff(Duration::ZERO))
        .channel("push", metrics.instrument_channel("push", Arc::new(Refusing)))
        .events(metrics.event_sink())
        .build();
    let app = router(
        runtime.clone(),
        ServerSettings::new().with_metrics(metrics.clone()),
    );

    runtime
        .handle_message("push:ada", Some("m1"), "hello")
        .await
        .unwrap();
    let mut total = DeliveryReport::default();
    for _ in 0..10 {
        let report = runtime.deliver_due().await.unwrap();
        if report == DeliveryReport::default() {
            break;
        }
        total.retried += report.retried;
        total.refused += report.refused;
    }
    // The menu, the answer, the menu again: each retried once, then refused.
    assert_eq!((total.retried, total.refused), (3, 3), "{total:?}");
    let response = app
        .clone()
        .oneshot(events_request("/metrics", &[]))
        .await
        .unwrap();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    for expected in [
        "chatflow_undelivered_total{channel=\"push\"} 3",
        "chatflow_delivery_attempts_total{channel=\"push\",outcome=\"retry\"} 3",
        "chatflow_delivery_attempts_total{channel=\"push\",outcome=\"refused\"} 3",
        "chatflow_delivery_attempts_total{channel=\"push\",outcome=\"accepted\"} 0",
        "chatflow_delivery_seconds_count{channel=\"push\"} 6",
    ] {
        assert!(text.contains(expected), "no {expected} in\n{text}");
    }
}

/// A channel that keeps every reply it is given.
#[derive(Default)]
struct Keeping {
    sent: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl Channel for Keeping {
    async fn deliver(&self, delivery: &Delivery) -> DeliveryOutcome {
        let mut sent = self.sent.lock().unwrap();
        sent.push(delivery.entry.text.clone());
        DeliveryOutcome::accepted(format!("kept-{}", sent.len()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_the_delivery_worker_until_it_stops() {
    let channel = Arc::new(Keeping::default());
    let engine = Engine::builder(Flow::from_json(MENU).unwrap()).build().unwrap();
    let runtime = Runtime::builder(engine, Arc::new(MemoryStore::new()))
        .channel("push", channel.clone())
        .build();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(serve(listener, runtime.clone(), ServerSettings::new(), async {
        let _ = stopped.await;
    }));

    // No one calls deliver_due: the worker serve runs delivers the replies.
    runtime
        .handle_message("push:ada", Some("m1"), "hello")
        .await
        .unwrap();
    wait_until(|| channel.sent.lock().unwrap().len() == 3).await;
    assert_eq!(
        *channel.sent.lock().unwrap(),
        ["How can I help?", "Your order is on its way", "How can I help?"]
    );
    // Each recorded as accepted, with the channel's id.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let transcript = runtime.store().transcript("push:ada", 0).await.unwrap();
        let ids: Vec<Option<&str>> = transcript[1..]
            .iter()
            .map(|e| e.delivery.as_ref().and_then(|d| d.channel_message_id.as_deref()))
            .collect();
        if ids == [Some("kept-1"), Some("kept-2"), Some("kept-3")] {
            break;
        }
        assert!(Instant::now() < deadline, "{transcript:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), served).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
    // Stopped: a later reply waits in the outbox for the next start.
    runtime
        .handle_message("push:ada", Some("m2"), "human")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(channel.sent.lock().unwrap().len(), 3);
}

/// Polls `done` every millisecond, at most 5 s.
async fn wait_until(done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "not reached within 5 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits until the transcript holds a user message with this text.
async fn wait_for_entry(store: &dyn Store, id: &str, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let transcript = store.transcript(id, 0).await.unwrap();
        if transcript.iter().any(|e| e.text == text) {
            return;
        }
        assert!(Instant::now() < deadline, "{text} not recorded: {transcript:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A memory store whose `transcript` reads fail while `failing` is set
/// (the turns' own writes and reads go on).
#[derive(Default)]
struct FailingTranscripts {
    inner: MemoryStore,
    failing: AtomicBool,
}

#[async_trait]
impl Store for FailingTranscripts {
    async fn enqueue_message(
        &self,
        id: &str,
        message: InboundMessage<'_>,
        now: SystemTime,
    ) -> Result<Option<u64>, StoreError> {
        self.inner.enqueue_message(id, message, now).await
    }

    async fn enqueue(
        &self,
        id: &str,
        message_id: &str,
        text: &str,
        now: SystemTime,
    ) -> Result<Option<u64>, StoreError> {
        self.inner.enqueue(id, message_id, text, now).await
    }

    async fn acquire(
        &self,
        id: &str,
        owner: &str,
        lease_until: SystemTime,
        now: SystemTime,
    ) -> Result<Option<Claim>, StoreError> {
        self.inner.acquire(id, owner, lease_until, now).await
    }

    async fn enqueue_and_acquire(
        &self,
        id: &str,
        message_id: &str,
        text: &str,
        owner: &str,
        lease_until: SystemTime,
        now: SystemTime,
    ) -> Result<Option<Enqueued>, StoreError> {
        self.inner
            .enqueue_and_acquire(id, message_id, text, owner, lease_until, now)
            .await
    }

    async fn save(&self, id: &str, owner: &str, save: Save<'_>) -> Result<(), StoreError> {
        self.inner.save(id, owner, save).await
    }

    async fn save_and_read_replies(
        &self,
        id: &str,
        owner: &str,
        save: Save<'_>,
        reply_to: u64,
    ) -> Result<Vec<TranscriptEntry>, StoreError> {
        self.inner.save_and_read_replies(id, owner, save, reply_to).await
    }

    async fn release(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        self.inner.release(id, owner).await
    }

    async fn due(&self, now: SystemTime, limit: usize) -> Result<Vec<String>, StoreError> {
        self.inner.due(now, limit).await
    }

    async fn counts(&self, now: SystemTime) -> Result<ConversationCounts, StoreError> {
        self.inner.counts(now).await
    }

    async fn next_wake(&self) -> Result<Option<SystemTime>, StoreError> {
        self.inner.next_wake().await
    }

    async fn next_wake_after(&self, after: SystemTime) -> Result<Option<SystemTime>, StoreError> {
        self.inner.next_wake_after(after).await
    }

    async fn load(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        self.inner.load(id).await
    }

    async fn transcript(&self, id: &str, after_seq: u64) -> Result<Vec<TranscriptEntry>, StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::backend("test transcript", "the database is gone"));
        }
        self.inner.transcript(id, after_seq).await
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        lease_until: SystemTime,
        now: SystemTime,
        limit: usize,
    ) -> Result<Vec<PendingDeliveries>, StoreError> {
        self.inner.claim_deliveries(owner, lease_until, now, limit).await
    }

    async fn record_delivery(
        &self,
        id: &str,
        owner: &str,
        seq: u64,
        record: DeliveryRecord<'_>,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.inner.record_delivery(id, owner, seq, record, now).await
    }

    async fn release_deliveries(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        self.inner.release_deliveries(id, owner).await
    }

    async fn next_delivery_after(&self, after: SystemTime) -> Result<Option<SystemTime>, StoreError> {
        self.inner.next_delivery_after(after).await
    }

    async fn record_receipt(
        &self,
        channel_message_id: &str,
        receipt: &chatflow::channel::Receipt,
    ) -> Result<Option<(String, u64)>, StoreError> {
        self.inner.record_receipt(channel_message_id, receipt).await
    }

    async fn prune_seen(&self, before: SystemTime, limit: usize) -> Result<u64, StoreError> {
        self.inner.prune_seen(before, limit).await
    }
}
