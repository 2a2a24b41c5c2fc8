//! The interpreter, driven through a fake transport in virtual time.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chatflow::http::{HttpError, HttpResponse};
use chatflow::{Engine, EngineOptions, Event, EventLog, Flow, ReplyMode, RunError, Status, VirtualClock};
use common::{FakeHttp, with_header};
use serde_json::json;

/// A flow with all eight step types.
const ALL_TYPES: &str = r#"{
  "name": "all types",
  "steps": [
    {"type": "question", "name": "Ask", "text": "Order number?"},
    {"type": "contact_update", "name": "Save", "set": {"order": "<<step.Ask.response>>", "asked": true}},
    {"type": "api", "name": "Lookup", "method": "POST", "url": "<<var.base>>/orders/<<contact.order>>",
     "headers": {"Authorization": "Bearer <<secret.KEY>>"},
     "body": {"order": "<<contact.order>>", "asked": "<<contact.asked>>"}},
    {"type": "condition", "name": "Shipped?",
     "all": [{"left": "<<step.Lookup.response.state>>", "op": "equals", "right": "shipped"}],
     "then": "Tell shipped", "else": "Wait"},
    {"type": "delay", "name": "Wait", "seconds": 10},
    {"type": "goto", "name": "Check again", "target": "Lookup", "max_visits": 2, "fallback": "Give up"},
    {"type": "message", "name": "Tell shipped", "text": "Order <<contact.order>> has shipped.", "next": "Done"},
    {"type": "message", "name": "Give up", "text": "Still waiting on order <<contact.order>>."},
    {"type": "assign", "name": "Done", "team": "support", "note": "order <<contact.order>>"}
  ]
}"#;

fn engine_with(flow: &str, http: FakeHttp, clock: Arc<VirtualClock>) -> Engine {
    Engine::builder(Flow::from_json(flow).unwrap())
        .http_client(http)
        .shared_clock(clock)
        .var("base", "http://api.test/v1")
        .secret("KEY", "sk-test-secret")
        .build()
        .unwrap()
}

#[tokio::test]
async fn all_eight_step_types_run() {
    let http = FakeHttp::json(json!({"state": "packing"}));
    http.push(Ok(HttpResponse::json(200, &json!({"state": "packing"}))));
    http.push(Ok(HttpResponse::json(200, &json!({"state": "shipped"}))));
    let clock = Arc::new(VirtualClock::new());
    let engine = engine_with(ALL_TYPES, http.clone(), clock.clone());
    let events = EventLog::new();

    let mut conversation = engine.start("c1");
    assert_eq!(
        engine.run(&mut conversation, &events).await.unwrap(),
        Status::AwaitingReply
    );
    engine.receive(&mut conversation, "A/17 ?").unwrap();
    let status = engine.run(&mut conversation, &events).await.unwrap();

    let Status::HandedOff { assignment } = status else {
        panic!("{status:?}")
    };
    assert_eq!(assignment.team.as_deref(), Some("support"));
    assert_eq!(assignment.note.as_deref(), Some("order A/17 ?"));
    assert_eq!(events.texts(), ["Order number?", "Order A/17 ? has shipped."]);
    assert!(
        matches!(events.events().last(), Some(Event::Handoff { contact, .. }) if contact["order"] == "A/17 ?")
    );

    let seen = http.seen();
    assert_eq!(seen.len(), 2, "one poll, one Delay, one poll");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].url, "http://api.test/v1/orders/A%2F17%20%3F");
    assert!(
        seen[0]
            .headers
            .contains(&("Authorization".into(), "Bearer sk-test-secret".into()))
    );
    assert!(
        seen[0]
            .headers
            .contains(&("Content-Type".into(), "application/json".into()))
    );
    assert_eq!(seen[0].body, Some(json!({"order": "A/17 ?", "asked": true})));
    assert_eq!(clock.elapsed(), Duration::from_secs(10));
    assert_eq!(conversation.step_result("Lookup").unwrap()["status"], 200);
}

#[tokio::test]
async fn bounded_goto_takes_its_fallback() {
    let http = FakeHttp::json(json!({"state": "packing"}));
    let clock = Arc::new(VirtualClock::new());
    let engine = engine_with(ALL_TYPES, http.clone(), clock.clone());
    let events = EventLog::new();
    let mut conversation = engine.start("c1");
    engine.receive(&mut conversation, "9").unwrap();
    let status = engine.run(&mut conversation, &events).await.unwrap();
    assert!(matches!(status, Status::HandedOff { .. }));
    assert_eq!(events.texts(), ["Order number?", "Still waiting on order 9."]);
    assert_eq!(http.seen().len(), 3, "first call and two jumps back");
    assert_eq!(clock.elapsed(), Duration::from_secs(30));
}

const ECHO: &str = r#"{
  "name": "echo",
  "steps": [
    {"type": "question", "name": "Q1", "text": "first?"},
    {"type": "question", "name": "Q2", "text": "second?"},
    {"type": "message", "name": "Echo", "text": "[<<step.Q1.response>>][<<step.Q2.response>>]"}
  ]
}"#;

#[tokio::test]
async fn replies_queued_early_are_joined_by_default() {
    let engine = engine_with(ECHO, FakeHttp::json(json!({})), Arc::default());
    let events = EventLog::new();
    let mut conversation = engine.start("c");
    for text in ["a", "b", "c"] {
        engine.receive(&mut conversation, text).unwrap();
    }
    engine.run(&mut conversation, &events).await.unwrap();
    assert_eq!(conversation.status(), &Status::AwaitingReply);
    assert_eq!(conversation.current_step(), Some("Q2"));
    engine.receive(&mut conversation, "d").unwrap();
    engine.run(&mut conversation, &events).await.unwrap();
    assert_eq!(events.texts(), ["first?", "second?", "[a\nb\nc][d]"]);
}

#[tokio::test]
async fn one_reply_per_question_when_asked() {
    let engine = Engine::builder(Flow::from_json(ECHO).unwrap())
        .http_client(FakeHttp::json(json!({})))
        .options(EngineOptions::default().with_reply_mode(ReplyMode::OnePerQuestion))
        .build()
        .unwrap();
    let events = EventLog::new();
    let mut conversation = engine.start("c");
    for text in ["a", "b", "c"] {
        engine.receive(&mut conversation, text).unwrap();
    }
    assert_eq!(
        engine.run(&mut conversation, &events).await.unwrap(),
        Status::Finished
    );
    assert_eq!(events.texts(), ["first?", "second?", "[a][b]"]);
    assert_eq!(conversation.pending_replies().collect::<Vec<_>>(), ["c"]);
}

// The transport blocks its thread while the test sends: needs a second worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_during_an_api_call_wait_for_the_next_question() {
    const FLOW: &str = r#"{
      "name": "busy",
      "steps": [
        {"type": "question", "name": "Q1", "text": "first?"},
        {"type": "api", "name": "Slow", "method": "GET", "url": "http://api.test/slow"},
        {"type": "question", "name": "Q2", "text": "second?"},
        {"type": "message", "name": "Echo", "text": "<<step.Q2.response>>"}
      ]
    }"#;
    // The transport holds the call until the test has sent two messages.
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = std::sync::Mutex::new(release_rx);
    let (entered_tx, mut entered_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let http = FakeHttp::new(move |_| {
        entered_tx.send(()).unwrap();
        release_rx.lock().unwrap().recv().unwrap();
        Ok(HttpResponse::json(200, &json!({})))
    });
    let engine = engine_with(FLOW, http, Arc::default());
    let events = Arc::new(EventLog::new());
    let sink = events.clone();
    let handle = engine.spawn(engine.start("c"), move |e| sink.emit(e));
    handle.send("go").unwrap();
    entered_rx.recv().await.unwrap();
    handle.send("one").unwrap();
    handle.send("two").unwrap();
    release_tx.send(()).unwrap();
    let (conversation, result) = handle.finish().await.unwrap();
    assert_eq!(result.unwrap(), Status::Finished);
    assert_eq!(events.texts(), ["first?", "second?", "one\ntwo"]);
    assert_eq!(conversation.status(), &Status::Finished);
}

use chatflow::EventSink as _;

#[tokio::test]
async fn a_parked_conversation_resumes_in_another_engine() {
    let http = FakeHttp::json(json!({"state": "shipped"}));
    let clock = Arc::new(VirtualClock::new());
    let first = engine_with(ALL_TYPES, http.clone(), clock.clone());
    let events = EventLog::new();
    let mut conversation = first.start("c1");
    first.run(&mut conversation, &events).await.unwrap();
    let parked = serde_json::to_string(&conversation).unwrap();
    assert!(!parked.contains("sk-test-secret"));

    let second = engine_with(ALL_TYPES, http.clone(), clock);
    let mut resumed: chatflow::Conversation = serde_json::from_str(&parked).unwrap();
    assert_eq!(resumed, conversation);
    second.receive(&mut resumed, "7").unwrap();
    let status = second.run(&mut resumed, &events).await.unwrap();
    assert!(matches!(status, Status::HandedOff { .. }));
    assert_eq!(events.texts(), ["Order number?", "Order 7 has shipped."]);
}

#[tokio::test]
async fn run_until_parked_stops_at_a_delay() {
    let http = FakeHttp::json(json!({"state": "packing"}));
    let clock = Arc::new(VirtualClock::new());
    let engine = engine_with(ALL_TYPES, http, clock.clone());
    let events = EventLog::new();
    let mut conversation = engine.start("c1");
    engine.receive(&mut conversation, "1").unwrap();
    let status = engine.run_until_parked(&mut conversation, &events).await.unwrap();
    let Status::Sleeping { until } = status else {
        panic!("{status:?}")
    };
    assert_eq!(until, chatflow::Clock::now(&*clock) + Duration::from_secs(10));
    assert_eq!(conversation.current_step(), Some("Wait"));
    // Round-trips through JSON with its wake-up time.
    let json = serde_json::to_value(&conversation).unwrap();
    assert_eq!(json["status"]["state"], "sleeping");
    clock.advance(Duration::from_secs(10));
    let status = engine.run_until_parked(&mut conversation, &events).await.unwrap();
    assert!(
        matches!(status, Status::Sleeping { .. }),
        "polled again, then slept again"
    );
    assert_eq!(clock.elapsed(), Duration::from_secs(10));
}

#[tokio::test]
async fn the_loop_guard_stops_a_conversation_that_never_waits_for_the_user() {
    const FLOW: &str = r#"{
      "name": "poll forever",
      "steps": [
        {"type": "api", "name": "Poll", "method": "GET", "url": "http://api.test/run"},
        {"type": "delay", "name": "Wait", "seconds": 10},
        {"type": "goto", "name": "Again", "target": "Poll"}
      ]
    }"#;
    let http = FakeHttp::json(json!({"status": "in_progress"}));
    let clock = Arc::new(VirtualClock::new());
    let engine = Engine::builder(Flow::from_json(FLOW).unwrap())
        .http_client(http.clone())
        .shared_clock(clock.clone())
        .options(EngineOptions::default().with_max_steps_without_reply(30))
        .build()
        .unwrap();
    let events = EventLog::new();
    let mut conversation = engine.start("c");
    let err = engine.run(&mut conversation, &events).await.unwrap_err();
    assert!(matches!(err, RunError::StepLimit { limit: 30, .. }), "{err}");
    assert!(err.to_string().contains("seems to loop"));
    assert!(matches!(conversation.status(), Status::Failed { .. }));
    assert_eq!(http.seen().len(), 10);
    assert!(matches!(events.events().last(), Some(Event::Failed { .. })));
}

const CALL: &str = r#"{
  "name": "call",
  "steps": [
    {"type": "api", "name": "Create", "method": "POST", "url": "<<var.base>>/things?key=<<secret.KEY>>",
     "headers": {"Authorization": "Bearer <<secret.KEY>>"}, "body": {},
     "error_hints": {"404": "this API was retired"}},
    {"type": "message", "name": "Ok", "text": "created <<step.Create.response.id>>"}
  ]
}"#;

#[tokio::test]
async fn a_failed_call_names_step_method_url_and_status_without_secrets() {
    let http = FakeHttp::new(|_| {
        Ok(HttpResponse::json(
            404,
            &json!({"error": {"message": "No thing. Key sk-test-secret", "type": "invalid_request_error", "param": null, "code": null}}),
        ))
    });
    let engine = engine_with(CALL, http, Arc::default());
    let events = EventLog::new();
    let mut conversation = engine.start("c");
    let err = engine.run(&mut conversation, &events).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(
        text,
        "step \"Create\": POST http://api.test/v1/things?key=*** answered 404: No thing. Key *** (this API was retired)"
    );
    let Status::Failed { error } = conversation.status() else {
        panic!()
    };
    assert_eq!(error, &text);
    let all = format!("{err:?} {conversation:?} {:?} {engine:?}", events.events());
    assert!(!all.contains("sk-test-secret"), "{all}");
    // The state is intact: the failing step and its result are kept.
    assert_eq!(conversation.current_step(), Some("Create"));
    assert_eq!(conversation.step_result("Create").unwrap()["status"], 404);
}

#[tokio::test]
async fn rate_limits_are_retried_after_the_servers_wait() {
    let http = FakeHttp::json(json!({"id": "t1"}));
    http.push(Ok(with_header(
        HttpResponse::json(429, &json!({})),
        "retry-after",
        "2",
    )));
    let clock = Arc::new(VirtualClock::new());
    let engine = engine_with(CALL, http.clone(), clock.clone());
    let events = EventLog::new();
    let mut conversation = engine.start("c");
    assert_eq!(
        engine.run(&mut conversation, &events).await.unwrap(),
        Status::Finished
    );
    assert_eq!(events.texts(), ["created t1"]);
    assert_eq!(http.seen().len(), 2);
    assert_eq!(clock.elapsed(), Duration::from_secs(2));
}

#[tokio::test]
async fn a_post_that_may_have_been_processed_is_not_retried() {
    let http = FakeHttp::json(json!({"id": "t1"}));
    http.push(Err(HttpError::Timeout(Duration::from_secs(30))));
    let engine = engine_with(CALL, http.clone(), Arc::default());
    let mut conversation = engine.start("c");
    let err = engine.run(&mut conversation, &EventLog::new()).await.unwrap_err();
    assert!(matches!(err, RunError::Transport { attempts: 1, .. }), "{err}");
    assert_eq!(http.seen().len(), 1);
}

#[tokio::test]
async fn on_error_receives_the_failure_details() {
    const FLOW: &str = r#"{
      "name": "on error",
      "steps": [
        {"type": "api", "name": "Call", "method": "GET", "url": "http://api.test/x", "on_error": "Sorry",
         "retry": {"max_attempts": 1}},
        {"type": "message", "name": "Fine", "text": "fine", "next": "End"},
        {"type": "message", "name": "Sorry", "text": "failed with <<step.Call.status>> (<<step.Call.error.kind>>): <<step.Call.response>>"},
        {"type": "message", "name": "End", "text": "end"}
      ]
    }"#;
    let http = FakeHttp::json(json!({}));
    http.push(Ok(HttpResponse::new(503, "overloaded")));
    let engine = engine_with(FLOW, http, Arc::default());
    let events = EventLog::new();
    let mut conversation = engine.start("c");
    assert_eq!(
        engine.run(&mut conversation, &events).await.unwrap(),
        Status::Finished
    );
    assert_eq!(events.texts(), ["failed with 503 (status): overloaded", "end"]);
    assert_eq!(
        conversation.step_result("Call").unwrap()["response"],
        "overloaded"
    );
}

#[tokio::test]
async fn resuming_after_the_flow_changed() {
    let engine = engine_with(ECHO, FakeHttp::json(json!({})), Arc::default());
    let mut conversation = engine.start("c");
    engine.run(&mut conversation, &EventLog::new()).await.unwrap();
    assert_eq!(conversation.current_step(), Some("Q1"));

    // Q1 still exists, at another position: the conversation continues there.
    let edited = ECHO.replace(
        r#"{"type": "question", "name": "Q1""#,
        r#"{"type": "message", "name": "Hi", "text": "hi"}, {"type": "question", "name": "Q1""#,
    );
    let engine2 = engine_with(&edited, FakeHttp::json(json!({})), Arc::default());
    let mut moved = conversation.clone();
    engine2.receive(&mut moved, "x").unwrap();
    engine2.run(&mut moved, &EventLog::new()).await.unwrap();
    assert_eq!(moved.current_step(), Some("Q2"));
    assert_eq!(moved.flow().hash, engine2.flow().hash());

    // Q1 is gone: the conversation ends with a clear error.
    let renamed = ECHO
        .replace("\"Q1\"", "\"First\"")
        .replace("step.Q1", "step.First");
    let engine3 = engine_with(&renamed, FakeHttp::json(json!({})), Arc::default());
    let mut lost = conversation.clone();
    let err = engine3.run(&mut lost, &EventLog::new()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the flow \"echo\" changed and no longer has step \"Q1\", where this conversation stood"
    );
    assert!(matches!(lost.status(), Status::Failed { .. }));
}

#[tokio::test]
async fn replies_over_the_limit_are_refused() {
    let engine = Engine::builder(Flow::from_json(ECHO).unwrap())
        .http_client(FakeHttp::json(json!({})))
        .options(EngineOptions::default().with_max_reply_bytes(10))
        .build()
        .unwrap();
    let mut conversation = engine.start("c");
    let err = engine.receive(&mut conversation, "x".repeat(11)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "reply of 11 bytes is longer than the limit of 10 bytes"
    );
    assert!(engine.receive(&mut conversation, "x".repeat(10)).is_ok());
}

#[tokio::test]
async fn missing_host_values_and_secrets_are_named() {
    let err = Engine::builder(Flow::from_json(ALL_TYPES).unwrap())
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "flow \"all types\" needs host values base and secrets KEY that were not given"
    );
}

#[tokio::test]
async fn many_conversations_share_one_engine() {
    let engine = engine_with(ECHO, FakeHttp::json(json!({})), Arc::default());
    let mut tasks = Vec::new();
    for i in 0..200 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let events = EventLog::new();
            let mut c = engine.start(format!("c{i}"));
            engine.receive(&mut c, format!("a{i}")).unwrap();
            engine.run(&mut c, &events).await.unwrap();
            engine.receive(&mut c, format!("b{i}")).unwrap();
            engine.run(&mut c, &events).await.unwrap();
            (i, events.texts())
        }));
    }
    for task in tasks {
        let (i, texts) = task.await.unwrap();
        assert_eq!(texts[2], format!("[a{i}][b{i}]"));
    }
}

#[tokio::test]
async fn echoed_secrets_never_reach_the_stored_state() {
    // Escaped JSON forms and headers are caught too.
    let http = FakeHttp::new(|_| {
        let body = r#"{"id": "t1", "plain": "key sk-test/secret", "escaped": "sk-test\/secret", "unicode": "\u0073k-test/secret"}"#;
        Ok(HttpResponse::new(200, body).with_header("x-echo", "sk-test/secret"))
    });
    let flow = CALL.replace("things?key=<<secret.KEY>>", "things");
    // Keep the whole response (a template reads it) and its headers.
    let flow = flow.replace(
        "created <<step.Create.response.id>>",
        "<<step.Create.response>> <<step.Create.headers>>",
    );
    let engine = Engine::builder(Flow::from_json(&flow).unwrap())
        .http_client(http)
        .var("base", "http://api.test/v1")
        .secret("KEY", "sk-test/secret")
        .build()
        .unwrap();
    let mut conversation = engine.start("c");
    engine.run(&mut conversation, &EventLog::new()).await.unwrap();
    let state = serde_json::to_string(&conversation).unwrap();
    assert!(
        !state.contains("sk-test/secret") && !state.contains("sk-test\\/secret"),
        "{state}"
    );
    assert_eq!(
        conversation.step_result("Create").unwrap()["response"]["escaped"],
        "***"
    );
    let result = conversation.step_result("Create").unwrap();
    assert_eq!(result["response"]["plain"], "key ***");
    assert_eq!(result["response"]["unicode"], "***");
    assert_eq!(result["headers"]["x-echo"], "***");
}

#[tokio::test]
async fn a_failed_conversation_can_be_retried_where_it_stopped() {
    let http = FakeHttp::json(json!({"id": "t9"}));
    http.push(Ok(HttpResponse::new(400, "bad")));
    let engine = engine_with(CALL, http.clone(), Arc::default());
    let events = EventLog::new();
    let mut conversation = engine.start("c");
    assert!(!engine.retry_failed(&mut conversation), "nothing to retry yet");
    engine.run(&mut conversation, &events).await.unwrap_err();
    // Parked and resumed elsewhere, then retried: the failed step runs again.
    let mut conversation: chatflow::Conversation =
        serde_json::from_str(&serde_json::to_string(&conversation).unwrap()).unwrap();
    assert!(engine.retry_failed(&mut conversation));
    assert_eq!(
        engine.run(&mut conversation, &events).await.unwrap(),
        Status::Finished
    );
    assert_eq!(events.texts(), ["created t9"]);
    assert_eq!(http.seen().len(), 2);
}

#[tokio::test]
async fn joined_replies_stay_within_the_reply_cap() {
    let engine = Engine::builder(Flow::from_json(ECHO).unwrap())
        .http_client(FakeHttp::json(json!({})))
        .options(EngineOptions::default().with_max_reply_bytes(10))
        .build()
        .unwrap();
    let events = EventLog::new();
    let mut conversation = engine.start("c");
    for text in ["aaaa", "bbbb", "cccc"] {
        engine.receive(&mut conversation, text).unwrap();
    }
    engine.run(&mut conversation, &events).await.unwrap();
    // "aaaa\nbbbb" is 9 bytes; adding "\ncccc" would pass 10, so it waits for Q2.
    assert_eq!(events.texts(), ["first?", "second?", "[aaaa\nbbbb][cccc]"]);
}

#[tokio::test]
async fn only_what_templates_read_is_kept_of_api_results() {
    let http = FakeHttp::json(json!({"id": "t1", "big": "x".repeat(10_000), "nested": {"a": 1}}));
    let engine = engine_with(CALL, http, Arc::default());
    let mut conversation = engine.start("c");
    engine.run(&mut conversation, &EventLog::new()).await.unwrap();
    // CALL reads only `step.Create.response.id`.
    assert_eq!(
        conversation.step_result("Create").unwrap(),
        &json!({"status": 200, "response": {"id": "t1"}})
    );
}

#[tokio::test]
async fn a_delay_can_back_off_and_starts_over_each_turn() {
    const FLOW: &str = r#"{
      "name": "backoff",
      "steps": [
        {"type": "question", "name": "Ask", "text": "?"},
        {"type": "api", "name": "Poll", "method": "GET", "url": "http://api.test/run"},
        {"type": "condition", "name": "Done?", "all": [{"left": "<<step.Poll.response.done>>", "op": "equals", "right": true}],
         "then": "Answer", "else": "Wait"},
        {"type": "delay", "name": "Wait", "seconds": [0.25, 0.5, 1]},
        {"type": "goto", "name": "Again", "target": "Poll"},
        {"type": "message", "name": "Answer", "text": "done", "next": "Ask"}
      ]
    }"#;
    let http = FakeHttp::json(json!({"done": true}));
    let not_yet = || Ok(HttpResponse::json(200, &json!({"done": false})));
    for _ in 0..4 {
        http.push(not_yet());
    }
    let clock = Arc::new(VirtualClock::new());
    let engine = engine_with(FLOW, http.clone(), clock.clone());
    let events = EventLog::new();
    let mut conversation = engine.start("c");
    engine.receive(&mut conversation, "go").unwrap();
    engine.run(&mut conversation, &events).await.unwrap();
    // Four waits: 0.25, 0.5, 1, then the last value repeats.
    assert_eq!(clock.elapsed(), Duration::from_millis(2750));
    // A new turn starts the backoff over.
    http.push(not_yet());
    engine.receive(&mut conversation, "again").unwrap();
    engine.run(&mut conversation, &events).await.unwrap();
    assert_eq!(clock.elapsed(), Duration::from_millis(3000));
    assert_eq!(events.texts(), ["?", "done", "?", "done", "?"]);
}

/// Keeps the headers of every request it answers.
#[derive(Clone, Default)]
struct HeaderLog(Arc<std::sync::Mutex<Vec<Vec<chatflow::http::Header>>>>);

#[async_trait::async_trait]
impl chatflow::http::HttpClient for HeaderLog {
    async fn send(&self, request: &chatflow::http::HttpRequest) -> Result<HttpResponse, HttpError> {
        self.0.lock().unwrap().push(request.headers().to_vec());
        Ok(HttpResponse::json(200, &json!({"state": "shipped"})))
    }
}

/// Headers that read only host values and secrets are rendered once, when
/// the engine is built: each request shares their text instead of copying
/// it, and a header that reads the conversation is rendered per request.
#[tokio::test]
async fn requests_share_the_headers_rendered_at_build() {
    let flow = r#"{"name": "headers", "steps": [
      {"type": "api", "name": "Constant", "method": "POST", "url": "<<var.base>>/a",
       "headers": {"Authorization": "Bearer <<secret.KEY>>"}, "body": {}},
      {"type": "api", "name": "Per conversation", "method": "GET", "url": "<<var.base>>/b",
       "headers": {"X-Conversation": "<<conversation.id>>"}}
    ]}"#;
    let log = HeaderLog::default();
    let engine = Engine::builder(Flow::from_json(flow).unwrap())
        .http_client(log.clone())
        .var("base", "http://api.test/v1")
        .secret("KEY", "sk-test-secret")
        .build()
        .unwrap();
    for id in ["c1", "c2"] {
        let mut conversation = engine.start(id);
        engine.run(&mut conversation, &EventLog::new()).await.unwrap();
    }
    let sent = log.0.lock().unwrap().clone();
    assert_eq!(sent.len(), 4);
    let (first, second) = (&sent[0], &sent[2]);
    assert_eq!(first[0].value(), "Bearer sk-test-secret");
    assert!(first[0].is_sensitive());
    assert_eq!(first[1].name(), "Content-Type");
    for (a, b) in first.iter().zip(second) {
        assert!(std::ptr::eq(a.value(), b.value()), "{} copied", a.name());
    }
    assert_eq!(sent[1][0].value(), "c1");
    assert_eq!(sent[3][0].value(), "c2");
}

/// A flow whose first message only starts it, and a Question after it.
const STARTS_FLOW: &str = r#"{
  "name": "trigger",
  "start": "start_flow",
  "steps": [
    {"type": "message", "name": "Echo", "text": "You wrote: <<conversation.start_text>>"},
    {"type": "question", "name": "Ask", "text": "Your order number?"},
    {"type": "message", "name": "Got", "text": "Order <<step.Ask.response>>, first said <<conversation.start_text>>."}
  ]
}"#;

#[tokio::test]
async fn a_start_flow_message_starts_the_flow_without_answering_the_first_question() {
    let engine = engine_with(
        STARTS_FLOW,
        FakeHttp::json(json!({})),
        Arc::new(VirtualClock::new()),
    );
    let events = EventLog::new();
    let mut conversation = engine.start("c1");
    engine.receive(&mut conversation, "where is my parcel").unwrap();
    assert_eq!(
        engine.run(&mut conversation, &events).await.unwrap(),
        Status::AwaitingReply
    );
    assert_eq!(events.take().len(), 2);
    assert_eq!(conversation.start_text(), Some("where is my parcel"));
    assert_eq!(conversation.pending_replies().len(), 0);

    engine.receive(&mut conversation, "42").unwrap();
    assert_eq!(
        engine.run(&mut conversation, &events).await.unwrap(),
        Status::Finished
    );
    assert_eq!(events.texts(), ["Order 42, first said where is my parcel."]);
}

#[tokio::test]
async fn by_default_the_first_message_answers_the_first_question_and_is_the_start_text() {
    let flow = STARTS_FLOW.replace(r#""start": "start_flow","#, "");
    let engine = engine_with(&flow, FakeHttp::json(json!({})), Arc::new(VirtualClock::new()));
    let events = EventLog::new();
    let mut conversation = engine.start("c1");
    engine.receive(&mut conversation, "42").unwrap();
    assert_eq!(
        engine.run(&mut conversation, &events).await.unwrap(),
        Status::Finished
    );
    assert_eq!(
        events.texts(),
        ["You wrote: 42", "Your order number?", "Order 42, first said 42."]
    );
}

#[tokio::test]
async fn a_start_flow_conversation_already_asking_takes_the_first_message_as_its_answer() {
    // The host ran the flow before any message: the Question is out, so the
    // first message answers it.
    let engine = engine_with(
        STARTS_FLOW,
        FakeHttp::json(json!({})),
        Arc::new(VirtualClock::new()),
    );
    let events = EventLog::new();
    let mut conversation = engine.start("c1");
    engine.run(&mut conversation, &events).await.unwrap();
    engine.receive(&mut conversation, "42").unwrap();
    assert_eq!(
        engine.run(&mut conversation, &events).await.unwrap(),
        Status::Finished
    );
    assert_eq!(
        events.texts().last().map(String::as_str),
        Some("Order 42, first said 42.")
    );
}

#[tokio::test]
async fn a_spawned_start_flow_conversation_waits_for_its_first_message() {
    let engine = engine_with(
        STARTS_FLOW,
        FakeHttp::json(json!({})),
        Arc::new(VirtualClock::new()),
    );
    let events = Arc::new(EventLog::new());
    let sink = events.clone();
    let handle = engine.spawn(engine.start("c1"), move |event| sink.emit(event));
    // Let the task run first: it must not ask the Question before the start.
    for _ in 0..5 {
        tokio::task::yield_now().await;
    }
    assert!(events.texts().is_empty());
    handle.send("where is my parcel").unwrap();
    handle.send("42").unwrap();
    let (conversation, status) = handle.finish().await.unwrap();
    assert_eq!(status.unwrap(), Status::Finished);
    assert_eq!(conversation.start_text(), Some("where is my parcel"));
    assert_eq!(
        events.texts(),
        [
            "You wrote: where is my parcel",
            "Your order number?",
            "Order 42, first said where is my parcel."
        ]
    );
}

#[tokio::test]
async fn a_flow_that_never_reads_the_start_text_keeps_no_copy_of_it() {
    let flow = r#"{"name": "plain", "steps": [
      {"type": "question", "name": "Ask", "text": "Your order number?"},
      {"type": "message", "name": "Got", "text": "Order <<step.Ask.response>>."}
    ]}"#;
    let engine = engine_with(flow, FakeHttp::json(json!({})), Arc::new(VirtualClock::new()));
    let mut conversation = engine.start("c1");
    engine
        .receive(&mut conversation, "a long first message that nothing reads")
        .unwrap();
    assert_eq!(conversation.start_text(), None);
    let state = serde_json::to_string(&conversation).unwrap();
    assert_eq!(
        state.matches("a long first message").count(),
        1,
        "only the queued reply: {state}"
    );
}

#[tokio::test]
async fn a_questions_event_carries_its_options_and_the_answer_names_the_option() {
    let flow = r#"{"name": "menu", "steps": [
      {"type": "question", "name": "Menu", "text": "Pick", "options": ["Yes", {"id": "no", "title": "No"}]},
      {"type": "message", "name": "Tell", "text": "<<step.Menu.option>>/<<step.Menu.response>>"}
    ]}"#;
    let engine = engine_with(flow, FakeHttp::json(json!({})), Arc::new(VirtualClock::new()));
    let events = EventLog::new();
    let mut conversation = engine.start("c1");
    engine.run(&mut conversation, &events).await.unwrap();
    let asked = events.take();
    assert_eq!(
        serde_json::to_value(&asked).unwrap(),
        json!([{"event": "message", "conversation_id": "c1", "step": "Menu", "text": "Pick", "question": true,
                "options": [{"id": "Yes", "title": "Yes"}, {"id": "no", "title": "No"}]}])
    );
    engine.receive(&mut conversation, " NO ").unwrap();
    engine.run(&mut conversation, &events).await.unwrap();
    let said = events.take();
    // A Message's event has no options field at all.
    assert_eq!(
        serde_json::to_value(&said[0]).unwrap(),
        json!({"event": "message", "conversation_id": "c1", "step": "Tell", "text": "no/ NO ", "question": false})
    );
    assert_eq!(conversation.current_step(), None);
}
