//! Api steps that consume server-sent events (`stream_until`): the streaming
//! flows against the mock OpenAI, the mock's event streams, the engine's
//! choice of event, and the reqwest transport returning at the awaited event.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatflow::http::sse::{SseEvent, SseParser, parse};
use chatflow::http::{HttpClient, HttpError, HttpRequest, HttpResponse, Method, ReqwestClient};
use chatflow::mock::{Endpoint, Fault, MockOpenAi, RecordedRequest, Reply};
use chatflow::{Engine, EventLog, Flow, RunError, Status, VirtualClock};
use common::{
    FakeHttp, mock_engine as engine, scripted_reply as scripted, shipped_flow as flow, with_header,
};
use proptest::prelude::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn paths(requests: &[RecordedRequest]) -> Vec<String> {
    requests
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

const APOLOGY: &str =
    "Sorry, I couldn't get an answer to that just now. I'm passing you to a member of our support team.";

// ---------------------------------------------------------------------------
// The streaming flows, end to end.

#[tokio::test]
async fn the_streaming_assistant_flow_answers_without_polling() {
    let mock = MockOpenAi::builder()
        .polls_until_complete(5) // ignored by streamed runs: they never poll
        .reply_with(scripted)
        .start()
        .await;
    let clock = Arc::new(VirtualClock::new());
    let engine = engine(flow("openai_assistant_streaming.json"), &mock, clock.clone());
    let events = EventLog::new();
    let mut conversation = engine.start("user-1");
    engine.receive(&mut conversation, "Where is my order?").unwrap();
    assert_eq!(
        engine.run(&mut conversation, &events).await.unwrap(),
        Status::AwaitingReply
    );
    assert_eq!(conversation.current_step(), Some("Answer"));
    // Kept: the parts of the thread.message.completed message the flow reads.
    let run = conversation.step_result("Run assistant").unwrap();
    assert_eq!(run["status"], 200);
    assert_eq!(run["response"]["role"], "assistant");

    engine.receive(&mut conversation, "a human please").unwrap();
    let status = engine.run(&mut conversation, &events).await.unwrap();
    let Status::HandedOff { assignment } = status else {
        panic!("{status:?}")
    };
    assert_eq!(assignment.note.as_deref(), Some("a human please"));
    assert_eq!(
        events.texts(),
        [
            "Hi! I'm the support assistant. What can I help you with today?",
            "Answer to: Where is my order?",
            "I'm passing you to a member of our support team. They'll reply here shortly.",
        ]
    );
    assert_eq!(clock.elapsed(), Duration::ZERO, "no Delay ran");

    let requests = mock.requests();
    assert_eq!(
        paths(&requests),
        [
            "POST /v1/threads",
            "POST /v1/threads/thread_1/messages",
            "POST /v1/threads/thread_1/runs",
            "POST /v1/threads/thread_1/messages",
            "POST /v1/threads/thread_1/runs",
        ],
        "no GET: nothing polls"
    );
    assert_eq!(
        requests[2].body,
        Some(json!({"assistant_id": "asst_mock", "stream": true}))
    );
    assert_eq!(mock.runs_created(), 2);
    assert_eq!(
        mock.thread_messages("thread_1"),
        [
            ("user".to_string(), "Where is my order?".to_string()),
            (
                "assistant".to_string(),
                "Answer to: Where is my order?".to_string()
            ),
            ("user".to_string(), "a human please".to_string()),
            ("assistant".to_string(), "HANDOFF: connecting you".to_string()),
        ]
    );
}

#[tokio::test]
async fn the_streaming_responses_flow_answers_without_polling() {
    let mock = MockOpenAi::builder().reply_with(scripted).start().await;
    let engine = engine(
        flow("openai_responses_streaming.json"),
        &mock,
        Arc::new(VirtualClock::new()),
    );
    let events = EventLog::new();
    let mut conversation = engine.start("user-1");
    engine.receive(&mut conversation, "Where is my order?").unwrap();
    assert_eq!(
        engine.run(&mut conversation, &events).await.unwrap(),
        Status::AwaitingReply
    );
    let kept = conversation.step_result("Get GPT response").unwrap();
    assert_eq!(kept["response"]["response"]["status"], "completed");

    engine.receive(&mut conversation, "a human please").unwrap();
    let status = engine.run(&mut conversation, &events).await.unwrap();
    assert!(matches!(status, Status::HandedOff { .. }), "{status:?}");
    assert_eq!(events.texts()[1], "Answer to: Where is my order?");

    let requests = mock.requests();
    assert_eq!(
        paths(&requests),
        [
            "POST /v1/conversations",
            "POST /v1/responses",
            "POST /v1/responses"
        ]
    );
    assert_eq!(requests[1].body.as_ref().unwrap()["stream"], true);
    assert_eq!(mock.responses_created(), 2);
    assert_eq!(
        mock.conversation_items("conv_1"),
        [
            ("user".to_string(), "Where is my order?".to_string()),
            (
                "assistant".to_string(),
                "Answer to: Where is my order?".to_string()
            ),
            ("user".to_string(), "a human please".to_string()),
            ("assistant".to_string(), "HANDOFF: connecting you".to_string()),
        ]
    );
}

async fn one_turn(flow_file: &str, reply: Reply) -> (Vec<String>, Status, Vec<RecordedRequest>) {
    let mock = MockOpenAi::builder()
        .reply_with(move |_| reply.clone())
        .start()
        .await;
    let engine = engine(flow(flow_file), &mock, Arc::new(VirtualClock::new()));
    let events = EventLog::new();
    let mut conversation = engine.start("c");
    engine.receive(&mut conversation, "hello").unwrap();
    let status = engine.run(&mut conversation, &events).await.unwrap();
    (events.texts(), status, mock.requests())
}

#[tokio::test]
async fn a_streamed_run_that_ends_without_an_answer_ends_in_the_apology_and_the_handoff() {
    for flow_file in [
        "openai_assistant_streaming.json",
        "openai_responses_streaming.json",
    ] {
        for reply in [
            Reply::fail("server_error", "boom"),
            Reply::Expire,
            Reply::Cancel,
            Reply::Incomplete,
        ] {
            let (texts, status, requests) = one_turn(flow_file, reply.clone()).await;
            assert!(
                matches!(&status, Status::HandedOff { assignment } if assignment.step == "Assign to agent"),
                "{flow_file} {reply:?}: {status:?}"
            );
            assert_eq!(texts[1..], [APOLOGY], "{flow_file} {reply:?}");
            assert!(
                requests.iter().all(|r| r.method == "POST"),
                "{flow_file} {reply:?}: {:?}",
                paths(&requests)
            );
        }
    }
}

#[tokio::test]
async fn a_failed_run_keeps_the_failed_run_object() {
    let mock = MockOpenAi::builder()
        .reply_with(|_| Reply::fail("rate_limit_exceeded", "slow down"))
        .start()
        .await;
    let flow = Flow::from_json(
        r#"{"name": "failed", "steps": [
          {"type": "api", "name": "Thread", "method": "POST", "url": "<<var.openai_base_url>>/threads",
           "headers": {"Authorization": "Bearer <<secret.OPENAI_API_KEY>>", "OpenAI-Beta": "assistants=v2"},
           "body": {"messages": [{"role": "user", "content": "hello"}]}},
          {"type": "api", "name": "Run", "method": "POST",
           "url": "<<var.openai_base_url>>/threads/<<step.Thread.response.id>>/runs",
           "headers": {"Authorization": "Bearer <<secret.OPENAI_API_KEY>>", "OpenAI-Beta": "assistants=v2"},
           "body": {"assistant_id": "<<var.assistant_id>>", "stream": true},
           "stream_until": "thread.message.completed"},
          {"type": "message", "name": "Show",
           "text": "<<step.Run.response.object>> <<step.Run.response.status>>: <<step.Run.response.last_error.code>>"}
        ]}"#,
    )
    .unwrap();
    let engine = engine(flow, &mock, Arc::new(VirtualClock::new()));
    let events = EventLog::new();
    let mut conversation = engine.start("c");
    assert_eq!(
        engine.run(&mut conversation, &events).await.unwrap(),
        Status::Finished
    );
    // No thread.message.completed: the stream's last JSON event, the failed run.
    assert_eq!(events.texts(), ["thread.run failed: rate_limit_exceeded"]);
    assert_eq!(mock.thread_messages("thread_1").len(), 1, "no assistant message");
}

#[tokio::test]
async fn faults_apply_to_streamed_runs() {
    let mock = MockOpenAi::builder().reply_with(scripted).start().await;
    mock.push_fault(Endpoint::CreateRun, Fault::RateLimited { retry_after_secs: 2 });
    let clock = Arc::new(VirtualClock::new());
    let engine = engine(flow("openai_assistant_streaming.json"), &mock, clock.clone());
    let events = EventLog::new();
    let mut conversation = engine.start("c");
    engine.receive(&mut conversation, "hello").unwrap();
    assert_eq!(
        engine.run(&mut conversation, &events).await.unwrap(),
        Status::AwaitingReply
    );
    assert_eq!(events.texts()[1..], ["Answer to: hello"]);
    assert_eq!(clock.elapsed(), Duration::from_secs(2), "the retry-after");
    assert_eq!(mock.runs_created(), 1, "the rate-limited attempt made no run");

    // A server error on the streamed run is a failed call: the flow apologizes.
    mock.push_fault(Endpoint::CreateRun, Fault::Status(400));
    engine.receive(&mut conversation, "again").unwrap();
    let status = engine.run(&mut conversation, &events).await.unwrap();
    assert!(matches!(status, Status::HandedOff { .. }), "{status:?}");
    assert_eq!(events.texts().last().map(String::as_str), Some(APOLOGY));
}

#[tokio::test]
async fn the_streamed_answer_is_sent_after_the_run_duration() {
    let mock = MockOpenAi::builder()
        .run_duration(Duration::from_millis(60))
        .reply_with(scripted)
        .start()
        .await;
    let engine = engine(
        flow("openai_assistant_streaming.json"),
        &mock,
        Arc::new(VirtualClock::new()),
    );
    let answered = Arc::new(std::sync::Mutex::new(None));
    let at = answered.clone();
    let sink = move |event: chatflow::Event| {
        if let chatflow::Event::Message { step, .. } = event
            && step == "Answer"
        {
            *at.lock().unwrap() = Some(Instant::now());
        }
    };
    let mut conversation = engine.start("c");
    engine.receive(&mut conversation, "hello").unwrap();
    engine.run(&mut conversation, &sink).await.unwrap();
    let run = mock
        .requests()
        .into_iter()
        .find(|r| r.endpoint == Some(Endpoint::CreateRun))
        .unwrap();
    let answered = answered.lock().unwrap().expect("answered");
    let after = answered.duration_since(run.received_at);
    assert!(after >= Duration::from_millis(60), "{after:?}");
}

// ---------------------------------------------------------------------------
// The mock's event streams.

async fn post(mock: &MockOpenAi, path: &str, body: Value) -> reqwest::Response {
    let client = reqwest::Client::new();
    client
        .post(format!("{}{path}", mock.base_url()))
        .bearer_auth(mock.api_key())
        .header("OpenAI-Beta", "assistants=v2")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

fn names(events: &[SseEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.event.clone().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn the_mock_streams_a_run_as_the_service_does() {
    let mock = MockOpenAi::builder()
        .reply_with(|_| Reply::text("Hello there, friend"))
        .start()
        .await;
    let thread = post(
        &mock,
        "/threads",
        json!({"messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    let thread: Value = serde_json::from_slice(&thread.bytes().await.unwrap()).unwrap();
    let thread_id = thread["id"].as_str().unwrap();
    let response = post(
        &mock,
        &format!("/threads/{thread_id}/runs"),
        json!({"assistant_id": mock.assistant_id(), "stream": true}),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let events = parse(&response.bytes().await.unwrap());
    assert_eq!(
        names(&events),
        [
            "thread.run.created",
            "thread.run.queued",
            "thread.run.in_progress",
            "thread.run.step.created",
            "thread.run.step.in_progress",
            "thread.message.created",
            "thread.message.in_progress",
            "thread.message.delta",
            "thread.message.delta",
            "thread.message.delta",
            "thread.message.completed",
            "thread.run.step.completed",
            "thread.run.completed",
            "done",
        ]
    );
    let data: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    assert_eq!(data[0]["status"], "queued");
    assert_eq!(data[2]["status"], "in_progress");
    let deltas: String = data[7..10]
        .iter()
        .map(|d| d["delta"]["content"][0]["text"]["value"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, "Hello there, friend");
    assert_eq!(data[10]["content"][0]["text"]["value"], "Hello there, friend");
    assert_eq!(data[10]["status"], "completed");
    assert_eq!(data[12]["status"], "completed");
    assert_eq!(events.last().unwrap().data, "[DONE]");

    // The run is as final as its stream says: stored, counted, not busy.
    assert_eq!(mock.runs_created(), 1);
    assert_eq!(mock.thread_messages(thread_id)[1].1, "Hello there, friend");
    let run_id = data[0]["id"].as_str().unwrap();
    let run = reqwest::Client::new()
        .get(format!("{}/threads/{thread_id}/runs/{run_id}", mock.base_url()))
        .bearer_auth(mock.api_key())
        .header("OpenAI-Beta", "assistants=v2")
        .send()
        .await
        .unwrap();
    let run: Value = serde_json::from_slice(&run.bytes().await.unwrap()).unwrap();
    assert_eq!(run["status"], "completed");
    let again = post(
        &mock,
        &format!("/threads/{thread_id}/messages"),
        json!({"role": "user", "content": "more"}),
    )
    .await;
    assert_eq!(again.status(), 200, "the thread is free again");
}

#[tokio::test]
async fn the_mock_streams_a_response_as_the_service_does() {
    let mock = MockOpenAi::builder()
        .reply_with(|_| Reply::text("Hi you"))
        .start()
        .await;
    let response = post(
        &mock,
        "/responses",
        json!({"model": "gpt-test", "input": "hello", "stream": true}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let events = parse(&response.bytes().await.unwrap());
    assert_eq!(
        names(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (i, event) in events.iter().enumerate() {
        let data: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(
            data["type"],
            event.event.as_deref().unwrap(),
            "the data names its event"
        );
        assert_eq!(data["sequence_number"], i);
    }
    let created: Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(created["response"]["status"], "in_progress");
    assert_eq!(created["response"]["output"], json!([]));
    let completed: Value = serde_json::from_str(&events[9].data).unwrap();
    assert_eq!(completed["response"]["status"], "completed");
    assert_eq!(completed["response"]["output"][0]["content"][0]["text"], "Hi you");
    assert_eq!(mock.responses_created(), 1);

    let failed = MockOpenAi::builder()
        .reply_with(|_| Reply::fail("server_error", "boom"))
        .start()
        .await;
    let response = post(
        &failed,
        "/responses",
        json!({"model": "gpt-test", "input": "hello", "stream": true}),
    )
    .await;
    let events = parse(&response.bytes().await.unwrap());
    assert_eq!(
        names(&events),
        ["response.created", "response.in_progress", "response.failed"]
    );
    let last: Value = serde_json::from_str(&events[2].data).unwrap();
    assert_eq!(last["response"]["error"]["code"], "server_error");
}

// ---------------------------------------------------------------------------
// The engine's choice of event, with a client that returns whole bodies.

fn sse(body: &str) -> HttpResponse {
    with_header(
        HttpResponse::new(200, body.as_bytes().to_vec()),
        "content-type",
        "text/event-stream",
    )
}

fn stream_flow(on_error: bool) -> Flow {
    let on_error = if on_error { r#", "on_error": "Sorry""# } else { "" };
    Flow::from_json(&format!(
        r#"{{"name": "s", "steps": [
          {{"type": "api", "name": "Ask", "method": "POST", "url": "https://api.example.com/x",
            "body": {{"stream": true}}, "stream_until": "answer.done"{on_error}}},
          {{"type": "message", "name": "Said", "text": "<<step.Ask.response.type>>: <<step.Ask.response.text>>", "next": "End"}},
          {{"type": "message", "name": "Sorry", "text": "sorry: <<step.Ask.error.kind>>"}},
          {{"type": "message", "name": "End", "text": "end"}}
        ]}}"#
    ))
    .unwrap()
}

async fn run_stream(flow: Flow, http: FakeHttp) -> (Result<Status, RunError>, Vec<String>) {
    let engine = Engine::builder(flow).http_client(http).build().unwrap();
    let events = EventLog::new();
    let mut conversation = engine.start("c");
    let result = engine.run(&mut conversation, &events).await;
    (result, events.texts())
}

#[tokio::test]
async fn a_client_that_returns_the_whole_stream_gets_the_same_event() {
    let http = FakeHttp::new(|request: &HttpRequest| {
        assert_eq!(request.stream_until(), ["answer.done"]);
        Ok(sse(concat!(
            ": keep-alive\n\n",
            "data: {\"type\": \"answer.delta\", \"text\": \"Hel\"}\n\n",
            "data: {\"type\": \"answer.done\", \"text\": \"Hello\"}\n\n",
            "event: error\ndata: {\"message\": \"too late to matter\"}\n\n",
            "data: [DONE]\n\n",
        )))
    });
    let (result, texts) = run_stream(stream_flow(false), http).await;
    assert_eq!(result.unwrap(), Status::Finished);
    assert_eq!(texts, ["answer.done: Hello", "end"]);
}

#[tokio::test]
async fn a_json_answer_to_a_streaming_step_is_read_as_usual() {
    let http = FakeHttp::json(json!({"text": "plain"}));
    let (result, texts) = run_stream(stream_flow(false), http).await;
    assert_eq!(result.unwrap(), Status::Finished);
    assert_eq!(texts, [": plain", "end"]);
}

#[tokio::test]
async fn an_error_event_fails_the_step_by_name_or_takes_on_error() {
    let body = "data: {\"type\": \"answer.delta\"}\n\nevent: error\ndata: {\"error\": {\"message\": \"The server is overloaded\"}}\n\n";
    let (result, _) = run_stream(stream_flow(false), FakeHttp::new(move |_| Ok(sse(body)))).await;
    let error = result.unwrap_err();
    let RunError::Transport { step, source, .. } = &error else {
        panic!("{error:?}")
    };
    assert_eq!(step, "Ask");
    assert_eq!(source.kind(), "event_stream");
    assert_eq!(
        error.to_string(),
        "step \"Ask\": POST https://api.example.com/x failed after 1 attempt(s): event stream: \
         the stream sent an `error` event: The server is overloaded"
    );

    let (result, texts) = run_stream(stream_flow(true), FakeHttp::new(move |_| Ok(sse(body)))).await;
    assert_eq!(result.unwrap(), Status::Finished);
    assert_eq!(texts, ["sorry: event_stream", "end"]);
}

#[tokio::test]
async fn an_awaited_event_without_json_or_a_stream_without_json_fails_clearly() {
    let (result, _) = run_stream(
        stream_flow(false),
        FakeHttp::new(|_| Ok(sse("event: answer.done\ndata: not json\n\n"))),
    )
    .await;
    let text = result.unwrap_err().to_string();
    assert!(
        text.starts_with("step \"Ask\"") && text.ends_with("the data of event `answer.done` is not JSON"),
        "{text}"
    );

    let (result, _) = run_stream(
        stream_flow(false),
        FakeHttp::new(|_| Ok(sse("event: done\ndata: [DONE]\n\n"))),
    )
    .await;
    let text = result.unwrap_err().to_string();
    assert!(
        text.contains("without any of the events [\"answer.done\"]"),
        "{text}"
    );
}

#[tokio::test]
async fn a_secret_echoed_in_a_stream_is_not_kept() {
    let flow = Flow::from_json(
        r#"{"name": "s", "steps": [
          {"type": "api", "name": "Ask", "method": "POST", "url": "https://api.example.com/x",
           "headers": {"Authorization": "Bearer <<secret.KEY>>"}, "stream_until": ["done"]},
          {"type": "question", "name": "Show", "text": "<<step.Ask.response.echo>>"}
        ]}"#,
    )
    .unwrap();
    let http = FakeHttp::new(|_| Ok(sse("event: done\ndata: {\"echo\": \"key sk-stream-secret\"}\n\n")));
    let engine = Engine::builder(flow)
        .http_client(http)
        .secret("KEY", "sk-stream-secret")
        .build()
        .unwrap();
    let events = EventLog::new();
    let mut conversation = engine.start("c");
    engine.run(&mut conversation, &events).await.unwrap();
    assert_eq!(events.texts(), ["key ***"]);
    assert!(
        !serde_json::to_string(&conversation)
            .unwrap()
            .contains("sk-stream-secret")
    );
}

/// A secret the server escapes in its JSON (`\/`, `\u0073`) is still masked
/// in the failure it causes: an error event without a message, and a
/// failing status with an event-stream body.
#[tokio::test]
async fn an_escaped_secret_in_a_stream_error_is_masked() {
    let escaped = r#"{"echo": "key \u0073k-stream\/secret"}"#;
    for (status, body) in [
        (200, format!("event: error\ndata: {escaped}\n\n")),
        (500, format!("data: {escaped}\n\n")),
    ] {
        let http = FakeHttp::new(move |_| {
            Ok(with_header(
                HttpResponse::new(status, body.clone().into_bytes()),
                "content-type",
                "text/event-stream",
            ))
        });
        let engine = Engine::builder(stream_flow(false))
            .http_client(http)
            .secret("KEY", "sk-stream/secret")
            .build()
            .unwrap();
        let mut conversation = engine.start("c");
        let error = engine
            .run(&mut conversation, &EventLog::new())
            .await
            .expect_err("the stream fails the step");
        let outputs = [
            error.to_string(),
            format!("{error:?}"),
            serde_json::to_string(&conversation).unwrap(),
        ];
        for output in outputs {
            assert!(!output.contains("sk-stream/secret"), "status {status}: {output}");
            assert!(output.contains("***"), "status {status}: {output}");
        }
    }
}

#[test]
fn stream_until_is_checked_when_the_flow_loads() {
    let load = |value: &str| {
        Flow::from_json(&format!(
            r#"{{"name": "s", "steps": [{{"type": "api", "name": "Ask", "method": "POST",
                "url": "https://x.example", "stream_until": {value}}}]}}"#
        ))
    };
    assert!(load(r#""response.completed""#).is_ok());
    assert!(load(r#"["a", "b"]"#).is_ok());
    let error = load("[1]").unwrap_err().to_string();
    assert!(
        error.contains("stream_until") && error.contains("a number"),
        "{error}"
    );
    let error = load(r#"["ok", " "]"#).unwrap_err().to_string();
    assert!(error.contains("stream_until[1]"), "{error}");
    let error = load("true").unwrap_err().to_string();
    assert!(error.contains("an event name or a list of them"), "{error}");
}

// ---------------------------------------------------------------------------
// ReqwestClient: it returns at the awaited event, within its limits.

/// A server that answers one request with an event stream: writes `events`,
/// then keeps the connection open, without ending the body, until dropped.
async fn endless_stream(events: Vec<String>) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/stream", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        // Read the request head (the client sends no body).
        let mut request = Vec::new();
        let mut buffer = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buffer[..n]),
            }
        }
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        if socket.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for event in events {
            let chunk = format!("{:x}\r\n{event}\r\n", event.len());
            if socket.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
            let _ = socket.flush().await;
        }
        // Never finish the body: only the client may end this exchange.
        let mut rest = [0u8; 64];
        while let Ok(n) = socket.read(&mut rest).await {
            if n == 0 {
                return;
            }
        }
    });
    (url, server)
}

fn streaming_request(url: &str) -> HttpRequest {
    let mut request = HttpRequest::new(Method::Get, url).with_stream_until(["thread.message.completed"]);
    request = request.with_timeout(Duration::from_secs(30));
    request
}

#[tokio::test]
async fn the_reqwest_client_returns_at_the_awaited_event_while_the_stream_stays_open() {
    let (url, server) = endless_stream(vec![
        "event: thread.run.created\ndata: {\"status\": \"queued\"}\n\n".into(),
        // The awaited event, split between two chunks.
        "event: thread.message.completed\r\ndata: {\"content\": ".into(),
        "\"hi\"}\r\n\r\n".into(),
    ])
    .await;
    let client = ReqwestClient::new().unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.send(&streaming_request(&url)))
        .await
        .expect("the client returns without the stream ending")
        .unwrap();
    assert_eq!(response.status(), 200);
    let events = parse(response.body());
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].data, "{\"content\": \"hi\"}");
    server.abort();
}

#[tokio::test]
async fn the_reqwest_client_returns_at_an_error_event_too() {
    let (url, server) = endless_stream(vec![
        "event: error\ndata: {\"message\": \"overloaded\"}\n\n".into(),
    ])
    .await;
    let client = ReqwestClient::new().unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.send(&streaming_request(&url)))
        .await
        .expect("an error event ends the wait")
        .unwrap();
    assert_eq!(parse(response.body())[0].event.as_deref(), Some("error"));
    server.abort();
}

#[tokio::test]
async fn the_cap_holds_while_streaming() {
    let filler = format!("data: {{\"pad\": \"{}\"}}\n\n", "x".repeat(400));
    let (url, server) = endless_stream(vec![filler.clone(); 5]).await;
    let client = ReqwestClient::new().unwrap();
    let mut request = streaming_request(&url);
    request = request.with_max_response_bytes(1000);
    let error = tokio::time::timeout(Duration::from_secs(10), client.send(&request))
        .await
        .expect("the cap ends the wait")
        .unwrap_err();
    assert_eq!(error, HttpError::BodyTooLarge { limit: 1000 });
    server.abort();

    // Under the cap, the awaited event ends the read before the cap matters.
    let mut events = vec![filler.clone()];
    events.push("event: thread.message.completed\ndata: {}\n\n".into());
    events.extend(vec![filler; 5]);
    let (url, server) = endless_stream(events).await;
    let mut request = streaming_request(&url);
    request = request.with_max_response_bytes(1000);
    let response = tokio::time::timeout(Duration::from_secs(10), client.send(&request))
        .await
        .unwrap();
    let response = response.expect("the awaited event came before the cap");
    assert_eq!(parse(response.body())[1].data, "{}");
    server.abort();
}

#[tokio::test]
async fn the_timeout_holds_while_streaming() {
    let (url, server) = endless_stream(vec!["event: thread.run.created\ndata: {}\n\n".into()]).await;
    let client = ReqwestClient::new().unwrap();
    let mut request = streaming_request(&url);
    request = request.with_timeout(Duration::from_millis(150));
    let started = Instant::now();
    let error = client.send(&request).await.unwrap_err();
    assert_eq!(error, HttpError::Timeout(Duration::from_millis(150)));
    assert!(started.elapsed() < Duration::from_secs(5));
    server.abort();
}

#[tokio::test]
async fn without_stream_until_the_client_reads_to_the_end() {
    let (url, server) = endless_stream(vec!["event: thread.message.completed\ndata: {}\n\n".into()]).await;
    let client = ReqwestClient::new().unwrap();
    let mut request = HttpRequest::new(Method::Get, &url);
    request = request.with_timeout(Duration::from_millis(150));
    assert!(matches!(client.send(&request).await, Err(HttpError::Timeout(_))));
    server.abort();
}

// ---------------------------------------------------------------------------
// The parser: any chunking gives the same events.

fn encode(events: &[(Option<String>, Vec<String>)], endings: &[&'static str]) -> String {
    let mut out = String::new();
    let mut n = 0;
    let mut previous = "";
    let mut eol = || {
        n += 1;
        let mut ending = endings[n % endings.len()];
        // "\r" then "\n" would read as one "\r\n": keep line endings unambiguous.
        if previous == "\r" && ending.starts_with('\n') {
            ending = "\r";
        }
        previous = ending;
        ending
    };
    for (event, lines) in events {
        if let Some(event) = event {
            out.push_str(&format!("event: {event}{}", eol()));
        }
        out.push_str(&format!(": comment{}", eol()));
        for line in lines {
            out.push_str(&format!("data:{line}{}", eol()));
        }
        out.push_str(eol());
    }
    out
}

proptest! {
    #[test]
    fn chunking_never_changes_the_events(
        events in prop::collection::vec(
            (
                prop::option::of("[a-z.]{1,12}"),
                prop::collection::vec("[^\r\n]{0,12}", 1..4),
            ),
            0..6,
        ),
        endings in prop::sample::subsequence(vec!["\n", "\r\n", "\r"], 1..=3),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let body = encode(&events, &endings);
        let bytes = body.as_bytes();
        let whole = parse(bytes);

        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        at.sort_unstable();
        let mut parser = SseParser::new();
        let mut chunked = Vec::new();
        let mut start = 0;
        for cut in at.into_iter().chain([bytes.len()]) {
            chunked.extend(parser.push(&bytes[start..cut]));
            start = cut;
        }
        prop_assert_eq!(&chunked, &whole);

        prop_assert_eq!(whole.len(), events.len());
        for (got, (event, lines)) in whole.iter().zip(&events) {
            prop_assert_eq!(&got.event, event);
            let expected: Vec<&str> = lines.iter().map(|l| l.strip_prefix(' ').unwrap_or(l)).collect();
            prop_assert_eq!(got.data.clone(), expected.join("\n"));
        }
    }
}
