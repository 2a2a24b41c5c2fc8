//! Fault tests: the engine with its DEFAULT transport (reqwest) against a
//! real local server (wiremock, or the crate's mock OpenAI), with Delays and
//! retry backoff in virtual time. Every test asserts the behaviour that would
//! break on a regression: what is retried and how often, how long the engine
//! waited, what the error says, what the server received.

#![cfg(feature = "reqwest")]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use chatflow::http::{HttpError, Method};
use chatflow::mock::{Endpoint, Fault, MockOpenAi, Reply, ReplyInput};
use chatflow::{
    Conversation, Engine, EngineOptions, Event, EventLog, Flow, RenderError, ReplyError, RunError, Status,
    VirtualClock,
};
use serde_json::{Value, json};
use wiremock::matchers::{any, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A flow of these steps.
fn flow_of(name: &str, steps: Value) -> Flow {
    let flow = json!({"name": name, "steps": steps});
    Flow::from_json(&flow.to_string()).unwrap_or_else(|e| panic!("{e}"))
}

/// One Api step "Call" on `<<var.base>>/thing` with these extra fields, then
/// "Done" showing its response. A step's `on_error` may go to "Recover",
/// which shows the error kind.
fn call_flow(api: Value) -> Flow {
    let mut call = json!({"type": "api", "name": "Call", "url": "<<var.base>>/thing"});
    for (key, value) in api.as_object().expect("an object") {
        call[key] = value.clone();
    }
    flow_of(
        "faults",
        json!([
            call,
            {"type": "message", "name": "Done", "text": "<<step.Call.response>>", "next": "End"},
            {"type": "message", "name": "Recover", "text": "recovered from <<step.Call.error.kind>>"},
            {"type": "message", "name": "End", "text": "end"}
        ]),
    )
}

/// An engine on the default (reqwest) transport: no `.http_client`.
fn engine(flow: Flow, base: &str, clock: &Arc<VirtualClock>) -> Engine {
    Engine::builder(flow)
        .shared_clock(clock.clone())
        .var("base", base)
        .build()
        .unwrap()
}

/// Starts a conversation, queues `replies`, runs it once.
async fn run_with(engine: &Engine, replies: &[&str]) -> (Conversation, EventLog, Result<Status, RunError>) {
    let events = EventLog::new();
    let mut conversation = engine.start("c");
    for reply in replies {
        engine.receive(&mut conversation, *reply).unwrap();
    }
    let result = engine.run(&mut conversation, &events).await;
    (conversation, events, result)
}

async fn received(server: &MockServer) -> Vec<wiremock::Request> {
    server.received_requests().await.expect("request recording is on")
}

/// A 200 `{"ok": true}` for anything not otherwise mounted.
async fn ok_by_default(server: &MockServer) {
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .with_priority(10)
        .mount(server)
        .await;
}

/// The first `n` requests get `response`; later ones fall through to
/// lower-priority mocks.
async fn first_n(server: &MockServer, n: u64, response: ResponseTemplate) {
    Mock::given(any())
        .respond_with(response)
        .up_to_n_times(n)
        .with_priority(1)
        .mount(server)
        .await;
}

/// The sum of the two default backoffs (0.5 s and 1 s), each with up to 25% jitter off.
fn assert_two_default_backoffs(waited: Duration) {
    let full = Duration::from_millis(1500);
    assert!(
        waited >= full.mul_f64(0.75) && waited <= full,
        "waited {waited:?}, expected two backoffs in [1.125 s, 1.5 s]"
    );
}

fn shipped_flow_text(name: &str) -> String {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "flows", name].iter().collect();
    std::fs::read_to_string(path).unwrap()
}

/// The guide's flow (or an edit of it) against the mock OpenAI.
fn guide_engine(flow: Flow, mock: &MockOpenAi, clock: &Arc<VirtualClock>, options: EngineOptions) -> Engine {
    Engine::builder(flow)
        .shared_clock(clock.clone())
        .options(options)
        .secret("OPENAI_API_KEY", mock.api_key())
        .var("openai_base_url", mock.base_url())
        .var("assistant_id", mock.assistant_id())
        .build()
        .unwrap()
}

fn guide_flow() -> Flow {
    Flow::from_json(&shipped_flow_text("openai_assistant.json")).unwrap()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------
// 1-4: what is retried, and how long the engine waits
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_get_answered_500_twice_succeeds_on_the_third_attempt_after_backing_off() {
    let server = MockServer::start().await;
    first_n(&server, 2, ResponseTemplate::new(500).set_body_string("flaky")).await;
    ok_by_default(&server).await;
    let clock = Arc::new(VirtualClock::new());
    let engine = engine(call_flow(json!({"method": "GET"})), &server.uri(), &clock);

    let (conversation, events, result) = run_with(&engine, &[]).await;

    assert_eq!(result.unwrap(), Status::Finished);
    assert_eq!(events.texts(), [r#"{"ok":true}"#, "end"]);
    assert_eq!(conversation.step_result("Call").unwrap()["status"], 200);
    let requests = received(&server).await;
    assert_eq!(requests.len(), 3);
    assert!(
        requests
            .iter()
            .all(|r| r.method.as_str() == "GET" && r.url.path() == "/thing")
    );
    assert_two_default_backoffs(clock.elapsed());
}

#[tokio::test]
async fn a_post_answered_500_is_not_retried_unless_the_step_opts_in() {
    // Not retried: the server may have processed it.
    let server = MockServer::start().await;
    first_n(&server, 2, ResponseTemplate::new(500).set_body_string("boom")).await;
    ok_by_default(&server).await;
    let clock = Arc::new(VirtualClock::new());
    let engine_default = engine(
        call_flow(json!({"method": "POST", "body": {"n": 1}})),
        &server.uri(),
        &clock,
    );
    let (conversation, _, result) = run_with(&engine_default, &[]).await;
    let err = result.unwrap_err();
    assert!(
        matches!(&err, RunError::Status { status: 500, method: Method::Post, step, .. } if step == "Call"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("step \"Call\": POST {}/thing answered 500: boom", server.uri())
    );
    assert_eq!(
        received(&server).await.len(),
        1,
        "a POST answered 500 is not repeated"
    );
    assert_eq!(clock.elapsed(), Duration::ZERO);
    assert!(matches!(conversation.status(), Status::Failed { .. }));

    // The same step with `retry_non_idempotent`: retried, and the third attempt succeeds.
    let server = MockServer::start().await;
    first_n(&server, 2, ResponseTemplate::new(500).set_body_string("boom")).await;
    ok_by_default(&server).await;
    let clock = Arc::new(VirtualClock::new());
    let opted_in = engine(
        call_flow(json!({"method": "POST", "body": {"n": 1}, "retry": {"retry_non_idempotent": true}})),
        &server.uri(),
        &clock,
    );
    let (_, events, result) = run_with(&opted_in, &[]).await;
    assert_eq!(result.unwrap(), Status::Finished);
    assert_eq!(events.texts(), [r#"{"ok":true}"#, "end"]);
    let requests = received(&server).await;
    assert_eq!(requests.len(), 3);
    assert!(
        requests.iter().all(|r| r.body == br#"{"n":1}"#),
        "the same body each time"
    );
    assert_two_default_backoffs(clock.elapsed());
}

/// A POST answered 429 with `header` once, then 200: returns the requests
/// the server saw and the virtual time waited.
async fn rate_limited_once(header: (&str, String), clock: Arc<VirtualClock>) -> (usize, Duration) {
    let server = MockServer::start().await;
    first_n(
        &server,
        1,
        ResponseTemplate::new(429)
            .insert_header(header.0, header.1.as_str())
            .set_body_json(json!({"error": {"message": "Rate limit reached"}})),
    )
    .await;
    ok_by_default(&server).await;
    let engine = engine(
        call_flow(json!({"method": "POST", "body": {}})),
        &server.uri(),
        &clock,
    );
    let (_, events, result) = run_with(&engine, &[]).await;
    assert_eq!(result.unwrap(), Status::Finished, "{header:?}");
    assert_eq!(events.texts(), [r#"{"ok":true}"#, "end"]);
    (received(&server).await.len(), clock.elapsed())
}

#[tokio::test]
async fn a_rate_limited_post_is_retried_after_exactly_the_servers_wait() {
    let (requests, waited) =
        rate_limited_once(("retry-after", "2".into()), Arc::new(VirtualClock::new())).await;
    assert_eq!(requests, 2);
    assert_eq!(waited, Duration::from_secs(2));

    let (requests, waited) =
        rate_limited_once(("retry-after-ms", "1500".into()), Arc::new(VirtualClock::new())).await;
    assert_eq!(requests, 2);
    assert_eq!(waited, Duration::from_millis(1500));

    // An HTTP date is read against the engine's clock: start it at the real
    // now, and ask for now + 3 s (whole seconds on the wire, so 2 to 3 s).
    let start = SystemTime::now();
    let date = httpdate::fmt_http_date(start + Duration::from_secs(3));
    let (requests, waited) = rate_limited_once(
        ("retry-after", date.clone()),
        Arc::new(VirtualClock::starting_at(start)),
    )
    .await;
    assert_eq!(requests, 2);
    assert!(
        waited >= Duration::from_secs(2) && waited <= Duration::from_secs(3),
        "retry-after: {date} waited {waited:?}"
    );
}

#[tokio::test]
async fn x_should_retry_false_stops_the_retry_of_a_503() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503).insert_header("x-should-retry", "false"))
        .mount(&server)
        .await;
    let clock = Arc::new(VirtualClock::new());
    let told_not_to = engine(call_flow(json!({"method": "GET"})), &server.uri(), &clock);
    let (_, _, result) = run_with(&told_not_to, &[]).await;
    let err = result.unwrap_err();
    assert!(matches!(err, RunError::Status { status: 503, .. }), "{err:?}");
    assert_eq!(received(&server).await.len(), 1);
    assert_eq!(clock.elapsed(), Duration::ZERO);

    // The control: the same 503 without the header is retried.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let control = engine(call_flow(json!({"method": "GET"})), &server.uri(), &clock);
    let (_, _, result) = run_with(&control, &[]).await;
    assert!(matches!(result, Err(RunError::Status { status: 503, .. })));
    assert_eq!(received(&server).await.len(), 3);
}

// ---------------------------------------------------------------------------
// 5-8: transport failures and odd responses
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_step_timeout_is_retried_then_fails_or_goes_to_on_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"late": true}))
                .set_delay(Duration::from_millis(1500)),
        )
        .mount(&server)
        .await;
    let clock = Arc::new(VirtualClock::new());
    let started = Instant::now();
    let engine_plain = engine(
        call_flow(json!({
            "method": "GET",
            "timeout_seconds": 0.2,
            "retry": {"max_attempts": 2, "initial_backoff_seconds": 0.01}
        })),
        &server.uri(),
        &clock,
    );
    let (conversation, _, result) = run_with(&engine_plain, &[]).await;
    let err = result.unwrap_err();
    match &err {
        RunError::Transport {
            step,
            method,
            attempts,
            source,
            ..
        } => {
            assert_eq!(step, "Call");
            assert_eq!(*method, Method::Get);
            assert_eq!(*attempts, 2);
            assert_eq!(source, &HttpError::Timeout(Duration::from_millis(200)));
        }
        other => panic!("expected a transport error, got {other:?}"),
    }
    assert_eq!(received(&server).await.len(), 2);
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "the timeout cut the 1.5 s answer short: {:?}",
        started.elapsed()
    );
    assert!(clock.elapsed() <= Duration::from_millis(10), "one 10 ms backoff");
    assert_eq!(
        conversation.step_result("Call").unwrap()["error"]["kind"],
        "timeout"
    );

    // With on_error (one attempt, to keep real time short): the flow recovers.
    let engine_recovering = engine(
        call_flow(json!({
            "method": "GET",
            "timeout_seconds": 0.2,
            "retry": {"max_attempts": 1},
            "on_error": "Recover"
        })),
        &server.uri(),
        &clock,
    );
    let (conversation, events, result) = run_with(&engine_recovering, &[]).await;
    assert_eq!(result.unwrap(), Status::Finished);
    assert_eq!(events.texts(), ["recovered from timeout", "end"]);
    assert_eq!(conversation.step_result("Call").unwrap()["status"], Value::Null);
}

#[tokio::test]
async fn connection_refused_is_retried_even_for_a_post_then_fails() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let base = format!("http://127.0.0.1:{port}");
    let clock = Arc::new(VirtualClock::new());
    let engine_plain = engine(call_flow(json!({"method": "POST", "body": {}})), &base, &clock);
    let (conversation, _, result) = run_with(&engine_plain, &[]).await;
    let err = result.unwrap_err();
    match &err {
        RunError::Transport {
            step,
            method,
            url,
            attempts,
            source,
        } => {
            assert_eq!(step, "Call");
            assert_eq!(*method, Method::Post);
            assert_eq!(url, &format!("{base}/thing"));
            assert_eq!(*attempts, 3, "the default max_attempts");
            assert!(matches!(source, HttpError::Connect(_)), "{source:?}");
        }
        other => panic!("expected a transport error, got {other:?}"),
    }
    assert!(err.to_string().starts_with(&format!(
        "step \"Call\": POST {base}/thing failed after 3 attempt(s): could not connect"
    )));
    assert_two_default_backoffs(clock.elapsed());
    assert_eq!(
        conversation.step_result("Call").unwrap()["error"]["kind"],
        "connect"
    );
}

#[tokio::test]
async fn a_response_that_is_not_json_is_kept_as_text() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_raw("<h1>oops</h1>", "text/html"))
        .mount(&server)
        .await;
    let clock = Arc::new(VirtualClock::new());
    let engine = engine(call_flow(json!({"method": "GET"})), &server.uri(), &clock);
    let (conversation, events, result) = run_with(&engine, &[]).await;
    assert_eq!(result.unwrap(), Status::Finished);
    assert_eq!(events.texts(), ["<h1>oops</h1>", "end"]);
    let call = conversation.step_result("Call").unwrap();
    assert_eq!(call["response"], "<h1>oops</h1>");
    assert_eq!(call["headers"]["content-type"], "text/html");
}

#[tokio::test]
async fn a_body_over_the_cap_is_an_error_that_is_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_string("x".repeat(5000)))
        .mount(&server)
        .await;
    let clock = Arc::new(VirtualClock::new());
    let engine_plain = engine(
        call_flow(json!({"method": "GET", "max_response_bytes": 1000})),
        &server.uri(),
        &clock,
    );
    let (_, _, result) = run_with(&engine_plain, &[]).await;
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            RunError::Transport {
                attempts: 1,
                source: HttpError::BodyTooLarge { limit: 1000 },
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        received(&server).await.len(),
        1,
        "a too-large body is not fetched again"
    );

    let engine_recovering = engine(
        call_flow(json!({"method": "GET", "max_response_bytes": 1000, "on_error": "Recover"})),
        &server.uri(),
        &clock,
    );
    let (conversation, events, result) = run_with(&engine_recovering, &[]).await;
    assert_eq!(result.unwrap(), Status::Finished);
    assert_eq!(events.texts(), ["recovered from body_too_large", "end"]);
    assert_eq!(
        conversation.step_result("Call").unwrap()["error"]["kind"],
        "body_too_large"
    );
    assert_eq!(received(&server).await.len(), 2);
    assert_eq!(clock.elapsed(), Duration::ZERO);
}

/// A bare HTTP/1.1 server that answers every request with a chunked body of
/// `chunks` × 1000 bytes and no `content-length`, so only the streaming
/// check can see the body is too large. Returns its base URL and a request count.
fn chunked_server(chunks: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let count = count.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    // One request: its head, up to the empty line (GETs have no body).
                    let mut line = String::new();
                    let mut head_lines = 0;
                    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                        head_lines += 1;
                        if line == "\r\n" {
                            break;
                        }
                        line.clear();
                    }
                    if head_lines == 0 {
                        return;
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let mut response = String::from(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n",
                    );
                    for _ in 0..chunks {
                        response.push_str(&format!("3e8\r\n{}\r\n", "y".repeat(1000)));
                    }
                    response.push_str("0\r\n\r\n");
                    if stream.write_all(response.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (base, requests)
}

#[tokio::test]
async fn a_chunked_body_over_the_cap_is_cut_off_while_streaming() {
    let (base, requests) = chunked_server(5);
    let clock = Arc::new(VirtualClock::new());
    let too_small = engine(
        call_flow(json!({"method": "GET", "max_response_bytes": 1000, "on_error": "Recover"})),
        &base,
        &clock,
    );
    let (conversation, events, result) = run_with(&too_small, &[]).await;
    assert_eq!(result.unwrap(), Status::Finished);
    assert_eq!(events.texts(), ["recovered from body_too_large", "end"]);
    assert_eq!(
        conversation.step_result("Call").unwrap()["error"]["kind"],
        "body_too_large"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 1, "not retried");

    // The control: the same body under a large enough cap is read whole.
    let large_enough = engine(
        call_flow(json!({"method": "GET", "max_response_bytes": 5000})),
        &base,
        &clock,
    );
    let (_, events, result) = run_with(&large_enough, &[]).await;
    assert_eq!(result.unwrap(), Status::Finished);
    assert_eq!(events.texts(), ["y".repeat(5000), "end".to_string()]);
}

// ---------------------------------------------------------------------------
// 9-10: the shipped flow's retirement hint; state after a failure
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_404_on_the_assistant_flows_first_call_points_to_the_responses_flow() {
    let mock = MockOpenAi::start().await;
    mock.push_fault(Endpoint::CreateThread, Fault::Status(404));
    let clock = Arc::new(VirtualClock::new());
    let engine = guide_engine(guide_flow(), &mock, &clock, EngineOptions::default());
    let (conversation, _, result) = run_with(&engine, &["hello"]).await;
    let err = result.unwrap_err();
    assert!(
        matches!(&err, RunError::Status { status: 404, step, .. } if step == "Start GPT thread"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "step \"Start GPT thread\": POST {}/threads answered 404",
            mock.base_url()
        )),
        "{text}"
    );
    assert!(text.contains("retired the Assistants API"), "{text}");
    assert!(text.contains("flows/openai_responses.json"), "{text}");
    assert!(!text.contains(mock.api_key()), "{text}");
    assert_eq!(mock.requests().len(), 1, "a 404 is not retried");
    assert_eq!(mock.threads_created(), 0);
    assert_eq!(conversation.current_step(), Some("Start GPT thread"));
}

#[tokio::test]
async fn after_a_failed_call_the_conversation_state_is_intact() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"error": {"message": "db down"}})))
        .mount(&server)
        .await;
    let flow = flow_of(
        "state",
        json!([
            {"type": "question", "name": "Ask", "text": "Order number?"},
            {"type": "contact_update", "name": "Save", "set": {"order": "<<step.Ask.response>>"}},
            {"type": "api", "name": "Lookup", "method": "GET", "url": "<<var.base>>/orders/<<contact.order>>",
             "retry": {"max_attempts": 1}},
            {"type": "message", "name": "Done", "text": "found"}
        ]),
    );
    let clock = Arc::new(VirtualClock::new());
    let engine = engine(flow, &server.uri(), &clock);
    let (mut conversation, events, result) = run_with(&engine, &["42"]).await;
    let err = result.unwrap_err();
    assert!(matches!(err, RunError::Status { status: 500, .. }), "{err:?}");

    assert_eq!(conversation.current_step(), Some("Lookup"));
    let Status::Failed { error } = conversation.status() else {
        panic!("{:?}", conversation.status())
    };
    assert_eq!(error, &err.to_string());
    assert!(error.contains("db down"), "{error}");
    assert!(
        matches!(events.events().last(), Some(Event::Failed { error: e, .. }) if e == error),
        "{:?}",
        events.events()
    );
    assert_eq!(conversation.step_result("Ask").unwrap()["response"], "42");
    assert_eq!(conversation.contact()["order"], "42");
    let lookup = conversation.step_result("Lookup").unwrap();
    assert_eq!(lookup["status"], 500);
    assert_eq!(lookup["error"]["kind"], "status");
    // No template reads the response body, so only status and error are kept;
    // the server's message travels in the error.
    assert_eq!(lookup["error"]["message"], "GET answered 500: db down");

    let parked = serde_json::to_string(&conversation).unwrap();
    let resumed: Conversation = serde_json::from_str(&parked).unwrap();
    assert_eq!(resumed, conversation);
    assert_eq!(serde_json::to_string(&resumed).unwrap(), parked);

    // A failed conversation stays failed: running it again sends nothing.
    let again = engine.run(&mut conversation, &EventLog::new()).await.unwrap();
    assert!(matches!(again, Status::Failed { .. }));
    assert_eq!(received(&server).await.len(), 1);
}

// ---------------------------------------------------------------------------
// 11: loops that never end
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_run_that_never_completes_ends_in_the_apology_and_the_handoff() {
    let mock = MockOpenAi::builder().polls_until_complete(u32::MAX).start().await;
    let clock = Arc::new(VirtualClock::new());
    let engine = guide_engine(guide_flow(), &mock, &clock, EngineOptions::default());
    let (conversation, events, result) = run_with(&engine, &["hello"]).await;
    let status = result.unwrap();
    let Status::HandedOff { assignment } = &status else {
        panic!("{status:?}")
    };
    assert_eq!(assignment.step, "Assign to agent");
    assert_eq!(assignment.note.as_deref(), Some("hello"));
    assert!(
        events
            .texts()
            .last()
            .unwrap()
            .starts_with("Sorry, I couldn't get an answer"),
        "{:?}",
        events.texts()
    );
    assert!(matches!(events.events().last(), Some(Event::Handoff { .. })));
    assert_eq!(conversation.current_step(), None);
    let polls = mock
        .requests()
        .iter()
        .filter(|r| r.endpoint == Some(Endpoint::ListMessages))
        .count();
    assert_eq!(polls, 42, "the first poll and 41 jumps back");
    // The backoff 0.25 + 0.5 + 1 + 2 + 4 + 8 s, then 8 s for the other 36 waits.
    assert_eq!(clock.elapsed(), Duration::from_millis(303_750));
}

#[tokio::test]
async fn an_unbounded_polling_loop_is_stopped_by_the_step_limit() {
    let mut flow: Value = serde_json::from_str(&shipped_flow_text("openai_assistant.json")).unwrap();
    let check_again = flow["steps"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|s| s["name"] == "Check again")
        .unwrap()
        .as_object_mut()
        .unwrap();
    assert!(check_again.remove("max_visits").is_some());
    assert!(check_again.remove("fallback").is_some());
    let flow = Flow::from_json(&flow.to_string()).unwrap();

    let mock = MockOpenAi::builder().polls_until_complete(u32::MAX).start().await;
    let clock = Arc::new(VirtualClock::new());
    let options = EngineOptions::default().with_max_steps_without_reply(50);
    let engine = guide_engine(flow.clone(), &mock, &clock, options);
    // A regression of the guard would spin forever: fail instead of hanging.
    let (conversation, events, result) =
        tokio::time::timeout(Duration::from_secs(30), run_with(&engine, &["hello"]))
            .await
            .expect("the step limit stops the loop");
    let err = result.unwrap_err();
    let RunError::StepLimit { step, limit } = &err else {
        panic!("expected the step limit, got {err:?}")
    };
    assert_eq!(*limit, 50);
    assert!(flow.steps().iter().any(|s| &s.name == step), "{step}");
    assert_eq!(conversation.current_step(), Some(step.as_str()));
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("step \"{step}\": 50 steps ran")),
        "{text}"
    );
    assert!(matches!(conversation.status(), Status::Failed { error } if *error == text));
    assert!(matches!(events.events().last(), Some(Event::Failed { .. })));
    assert!(clock.elapsed() > Duration::ZERO, "it did wait between polls");
    assert!(mock.requests().len() < 50);
}

// ---------------------------------------------------------------------------
// 12: hostile input arrives verbatim
// ---------------------------------------------------------------------------

const HOSTILE: &str = "He said \"hi\" and 'bye' \\ C:\\path\\n\r\nline\u{0}two 📦🧑‍💻 \
                       مرحبا بالعالم \u{202E}txt.exe <<secret.OPENAI_API_KEY>> {{contact.x}} <<var.base>>";

#[tokio::test]
async fn hostile_text_reaches_the_assistant_and_comes_back_verbatim() {
    let mock = MockOpenAi::builder()
        .reply_with(|input: &ReplyInput| Reply::text(format!("echo: {}", input.user_text)))
        .start()
        .await;
    let clock = Arc::new(VirtualClock::new());
    let engine = guide_engine(guide_flow(), &mock, &clock, EngineOptions::default());
    let (conversation, events, result) = run_with(&engine, &[HOSTILE]).await;
    assert_eq!(result.unwrap(), Status::AwaitingReply);

    let requests = mock.requests();
    let message = requests
        .iter()
        .find(|r| r.endpoint == Some(Endpoint::CreateMessage))
        .unwrap();
    let body: Value = serde_json::from_str(&message.body_text).expect("the body is valid JSON");
    assert_eq!(body["content"].as_str().unwrap().as_bytes(), HOSTILE.as_bytes());
    assert_eq!(body, json!({"role": "user", "content": HOSTILE}));
    assert!(
        requests.iter().all(|r| !r.body_text.contains(mock.api_key())),
        "a secret placeholder in user text is never expanded"
    );
    let thread = conversation.step_result("Start GPT thread").unwrap()["response"]["id"]
        .as_str()
        .unwrap();
    assert_eq!(
        mock.thread_messages(thread),
        pairs(&[("user", HOSTILE), ("assistant", &format!("echo: {HOSTILE}"))])
    );
    // The answer, full of template syntax, is shown as it is.
    assert_eq!(events.texts()[1], format!("echo: {HOSTILE}"));
    assert_eq!(conversation.contact()["gpt_response"], HOSTILE);
}

/// Question "Ask", then Api "Call" with these fields.
fn ask_then_call(api: Value) -> Flow {
    let mut call = json!({"type": "api", "name": "Call"});
    for (key, value) in api.as_object().expect("an object") {
        call[key] = value.clone();
    }
    flow_of(
        "ask then call",
        json!([
            {"type": "question", "name": "Ask", "text": "?"},
            call,
            {"type": "message", "name": "Done", "text": "done"}
        ]),
    )
}

#[tokio::test]
async fn a_reply_of_exactly_the_cap_is_sent_whole_and_one_byte_more_is_refused() {
    const CAP: usize = 1024 * 1024;
    let server = MockServer::start().await;
    ok_by_default(&server).await;
    let clock = Arc::new(VirtualClock::new());
    let engine = engine(
        ask_then_call(json!({
            "method": "POST", "url": "<<var.base>>/echo",
            "body": {"content": "<<step.Ask.response>>"}
        })),
        &server.uri(),
        &clock,
    );
    assert_eq!(engine.options().max_reply_bytes(), CAP, "the default cap");

    let mut text = String::with_capacity(CAP + 1);
    while text.len() + HOSTILE.len() <= CAP {
        text.push_str(HOSTILE);
    }
    while text.len() < CAP {
        text.push('x');
    }
    assert_eq!(text.len(), CAP);

    let mut conversation = engine.start("big");
    let mut too_long = text.clone();
    too_long.push('y');
    assert_eq!(
        engine.receive(&mut conversation, too_long),
        Err(ReplyError::TooLong {
            len: CAP + 1,
            limit: CAP
        })
    );
    assert_eq!(conversation.pending_replies().len(), 0, "nothing was queued");

    engine.receive(&mut conversation, text.clone()).unwrap();
    let status = engine.run(&mut conversation, &EventLog::new()).await.unwrap();
    assert_eq!(status, Status::Finished);
    let requests = received(&server).await;
    assert_eq!(requests.len(), 1);
    let body: Value = serde_json::from_slice(&requests[0].body).expect("the body is valid JSON");
    let content = body["content"].as_str().unwrap();
    assert_eq!(content.len(), CAP);
    assert!(
        content.as_bytes() == text.as_bytes(),
        "the 1 MiB reply arrived byte for byte"
    );
}

#[tokio::test]
async fn a_reply_in_a_url_path_segment_stays_in_its_segment() {
    let server = MockServer::start().await;
    ok_by_default(&server).await;
    let clock = Arc::new(VirtualClock::new());
    let engine = engine(
        ask_then_call(json!({"method": "GET", "url": "<<var.base>>/users/<<step.Ask.response>>/profile"})),
        &server.uri(),
        &clock,
    );
    let (_, _, result) = run_with(&engine, &["../../admin?x=1"]).await;
    assert_eq!(result.unwrap(), Status::Finished);
    let requests = received(&server).await;
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].url.path(), "/users/..%2F..%2Fadmin%3Fx%3D1/profile");
    assert_eq!(requests[0].url.query(), None);

    // A bare `..` would climb a level: refused before anything is sent.
    let (_, _, result) = run_with(&engine, &[".."]).await;
    let err = result.unwrap_err();
    assert!(
        matches!(&err, RunError::Render { step, field, source: RenderError::DotSegmentInUrl { .. } }
            if step == "Call" && field == "url"),
        "{err:?}"
    );
    assert_eq!(received(&server).await.len(), 1);
}

#[tokio::test]
async fn a_line_break_in_a_header_value_fails_before_sending() {
    let server = MockServer::start().await;
    ok_by_default(&server).await;
    let clock = Arc::new(VirtualClock::new());
    let engine = engine(
        ask_then_call(json!({
            "method": "GET", "url": "<<var.base>>/note",
            "headers": {"X-Note": "note: <<step.Ask.response>>"}
        })),
        &server.uri(),
        &clock,
    );
    let (conversation, _, result) = run_with(&engine, &["hi\nX-Admin: true"]).await;
    let err = result.unwrap_err();
    assert!(
        matches!(&err, RunError::Render { step, field, source: RenderError::LineBreakInHeader { .. } }
            if step == "Call" && field == "headers.X-Note"),
        "{err:?}"
    );
    assert!(matches!(conversation.status(), Status::Failed { .. }));
    assert!(received(&server).await.is_empty(), "no request is sent");

    // The control: the same flow without the line break sends the header.
    let (_, _, result) = run_with(&engine, &["hi X-Admin: true"]).await;
    assert_eq!(result.unwrap(), Status::Finished);
    let requests = received(&server).await;
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].headers.get("x-note").unwrap(),
        "note: hi X-Admin: true"
    );
    assert!(requests[0].headers.get("x-admin").is_none());

    // Other control characters (NUL) are refused too, before sending; today
    // by the transport (invalid_request) rather than by the template.
    let (_, _, result) = run_with(&engine, &["hi\u{0}there"]).await;
    let err = result.unwrap_err();
    assert!(
        matches!(
            &err,
            RunError::Render { field, .. } if field == "headers.X-Note"
        ) || matches!(
            &err,
            RunError::Transport {
                attempts: 1,
                source: HttpError::InvalidRequest(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("X-Note"), "{err}");
    assert_eq!(received(&server).await.len(), 1, "nothing more was sent");
}

// ---------------------------------------------------------------------------
// 13: many conversations at once
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_conversations_each_get_their_own_answer() {
    const N: usize = 1000;
    let mock = MockOpenAi::builder()
        .polls_until_complete(2)
        .reply_with(|input: &ReplyInput| Reply::text(format!("answer for {}", input.user_text)))
        .start()
        .await;
    let clock = Arc::new(VirtualClock::new());
    let engine = guide_engine(guide_flow(), &mock, &clock, EngineOptions::default());
    let started = Instant::now();

    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let engine = engine.clone();
            tokio::spawn(async move {
                let events = EventLog::new();
                let mut conversation = engine.start(format!("user-{i}"));
                engine
                    .receive(&mut conversation, format!("question {i}"))
                    .unwrap();
                let result = engine.run(&mut conversation, &events).await;
                (conversation, events, result)
            })
        })
        .collect();

    let mut threads = HashSet::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let (conversation, events, result) = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .unwrap_or_else(|_| panic!("conversation {i} did not end within 60 s"))
            .unwrap();
        let question = format!("question {i}");
        let answer = format!("answer for {question}");
        assert_eq!(result.unwrap(), Status::AwaitingReply, "conversation {i}");
        assert_eq!(conversation.id(), format!("user-{i}"));
        assert_eq!(conversation.current_step(), Some("Answer"), "conversation {i}");
        let texts = events.texts();
        assert_eq!(texts.len(), 2, "conversation {i}: {texts:?}");
        assert_eq!(texts[1], answer, "conversation {i}");
        assert!(
            events
                .events()
                .iter()
                .all(|e| e.conversation_id() == conversation.id())
        );
        let thread = conversation.step_result("Start GPT thread").unwrap()["response"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            mock.thread_messages(&thread),
            pairs(&[("user", &question), ("assistant", &answer)]),
            "thread {thread} of conversation {i}"
        );
        assert!(threads.insert(thread), "conversation {i} shares a thread");
    }
    assert_eq!(mock.threads_created(), N);
    assert_eq!(threads.len(), N);
    eprintln!("{N} conversations in {:?}", started.elapsed());
}
