//! The shipped flows, end to end, against the crate's mock OpenAI: the real
//! reqwest transport on loopback, Delays in virtual time.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

mod common;

use async_trait::async_trait;
use chatflow::mock::{Endpoint, Fault, MockOpenAi, RecordedRequest, Reply, ReplyInput};
use chatflow::{Clock, Event, EventLog, EventSink, RunError, Status, VirtualClock};
use tokio::sync::{Semaphore, mpsc};

use common::{mock_engine as engine, scripted_reply as scripted, shipped_flow as flow};

const TRICKY: &str =
    "Where's my \"order\"? C:\\path\\n\nline two 📦 مرحبا <<secret.OPENAI_API_KEY>> {{contact.x}}";

fn paths(requests: &[RecordedRequest]) -> Vec<String> {
    requests
        .iter()
        .map(|r| {
            let query: Vec<String> = r.query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let query = if query.is_empty() {
                String::new()
            } else {
                format!("?{}", query.join("&"))
            };
            format!("{} {}{query}", r.method, r.path)
        })
        .collect()
}

#[tokio::test]
async fn the_guide_flow_holds_a_whole_conversation() {
    let mock = MockOpenAi::builder()
        .polls_until_complete(2)
        .reply_with(scripted)
        .start()
        .await;
    let clock = Arc::new(VirtualClock::new());
    let engine = engine(flow("openai_assistant.json"), &mock, clock.clone());
    let events = EventLog::new();
    let mut conversation = engine.start("user-1");

    assert_eq!(
        engine.run(&mut conversation, &events).await.unwrap(),
        Status::AwaitingReply
    );
    engine.receive(&mut conversation, TRICKY).unwrap();
    assert_eq!(
        engine.run(&mut conversation, &events).await.unwrap(),
        Status::AwaitingReply
    );
    assert_eq!(conversation.current_step(), Some("Answer"));
    assert_eq!(
        clock.elapsed(),
        Duration::from_millis(250),
        "one empty poll, one Delay: the backoff's first wait"
    );

    engine
        .receive(&mut conversation, "let me talk to a human")
        .unwrap();
    let status = engine.run(&mut conversation, &events).await.unwrap();
    let Status::HandedOff { assignment } = status else {
        panic!("{status:?}")
    };
    assert_eq!(assignment.team.as_deref(), Some("support"));
    assert_eq!(assignment.note.as_deref(), Some("let me talk to a human"));

    assert_eq!(
        events.texts(),
        [
            "Hi! I'm the support assistant. What can I help you with today?".to_string(),
            format!("Answer to: {TRICKY}"),
            "I'm passing you to a member of our support team. They'll reply here shortly.".to_string(),
        ]
    );
    assert!(matches!(events.events().last(), Some(Event::Handoff { .. })));

    let requests = mock.requests();
    assert_eq!(
        paths(&requests),
        [
            "POST /v1/threads",
            "POST /v1/threads/thread_1/messages",
            "POST /v1/threads/thread_1/runs",
            "GET /v1/threads/thread_1/messages?run_id=run_1&limit=1",
            "GET /v1/threads/thread_1/runs/run_1",
            "GET /v1/threads/thread_1/messages?run_id=run_1&limit=1",
            "POST /v1/threads/thread_1/messages",
            "POST /v1/threads/thread_1/runs",
            "GET /v1/threads/thread_1/messages?run_id=run_2&limit=1",
            "GET /v1/threads/thread_1/runs/run_2",
            "GET /v1/threads/thread_1/messages?run_id=run_2&limit=1",
        ]
    );
    for request in &requests {
        assert_eq!(request.header("authorization"), Some("Bearer sk-mock-key"));
        assert_eq!(request.header("openai-beta"), Some("assistants=v2"));
        assert_eq!(request.header("content-type"), Some("application/json"));
    }
    assert_eq!(requests[0].body, Some(serde_json::json!({})));
    assert_eq!(
        requests[1].body,
        Some(serde_json::json!({"role": "user", "content": TRICKY}))
    );
    assert_eq!(
        requests[2].body,
        Some(serde_json::json!({"assistant_id": "asst_mock"}))
    );
    assert_eq!(
        requests[6].body,
        Some(serde_json::json!({"role": "user", "content": "let me talk to a human"}))
    );
    assert_eq!(mock.threads_created(), 1);
    assert_eq!(
        mock.thread_messages("thread_1"),
        [
            ("user".to_string(), TRICKY.to_string()),
            ("assistant".to_string(), format!("Answer to: {TRICKY}")),
            ("user".to_string(), "let me talk to a human".to_string()),
            ("assistant".to_string(), "HANDOFF: connecting you".to_string()),
        ]
    );
}

#[tokio::test]
async fn the_responses_flow_holds_a_whole_conversation() {
    let mock = MockOpenAi::builder().reply_with(scripted).start().await;
    let engine = engine(
        flow("openai_responses.json"),
        &mock,
        Arc::new(VirtualClock::new()),
    );
    let events = EventLog::new();
    let mut conversation = engine.start("user-1");
    engine.receive(&mut conversation, TRICKY).unwrap();
    assert_eq!(
        engine.run(&mut conversation, &events).await.unwrap(),
        Status::AwaitingReply
    );
    engine.receive(&mut conversation, "a human please").unwrap();
    let status = engine.run(&mut conversation, &events).await.unwrap();
    assert!(matches!(status, Status::HandedOff { .. }), "{status:?}");
    assert_eq!(events.texts()[1], format!("Answer to: {TRICKY}"));

    let requests = mock.requests();
    assert_eq!(
        paths(&requests),
        [
            "POST /v1/conversations",
            "POST /v1/responses",
            "POST /v1/responses"
        ]
    );
    for request in &requests {
        assert_eq!(request.header("authorization"), Some("Bearer sk-mock-key"));
        assert_eq!(request.header("openai-beta"), None);
    }
    let body = |text: &str| {
        serde_json::json!({
            "model": "gpt-test",
            "instructions": "Be brief. Say HANDOFF for humans.",
            "conversation": "conv_1",
            "input": [{"role": "user", "content": text}]
        })
    };
    assert_eq!(requests[1].body, Some(body(TRICKY)));
    assert_eq!(requests[2].body, Some(body("a human please")));
    assert_eq!(mock.conversations_created(), 1);
    assert_eq!(mock.conversation_items("conv_1").len(), 4);
}

async fn run_ending_with(reply: Reply) -> (Vec<String>, Status, Vec<RecordedRequest>) {
    let mock = MockOpenAi::builder()
        .polls_until_complete(2)
        .reply_with(move |_| reply.clone())
        .start()
        .await;
    let engine = engine(
        flow("openai_assistant.json"),
        &mock,
        Arc::new(VirtualClock::new()),
    );
    let events = EventLog::new();
    let mut conversation = engine.start("c");
    engine.receive(&mut conversation, "hello").unwrap();
    let status = engine.run(&mut conversation, &events).await.unwrap();
    (events.texts(), status, mock.requests())
}

#[tokio::test]
async fn failed_or_expired_runs_end_in_an_apology_and_a_handoff() {
    for reply in [
        Reply::fail("server_error", "boom"),
        Reply::Expire,
        Reply::Cancel,
        Reply::Incomplete,
    ] {
        let (texts, status, requests) = run_ending_with(reply.clone()).await;
        assert!(
            matches!(status, Status::HandedOff { .. }),
            "{reply:?}: {status:?}"
        );
        assert!(
            texts
                .last()
                .unwrap()
                .starts_with("Sorry, I couldn't get an answer"),
            "{reply:?}: {texts:?}"
        );
        // It noticed at the first check of the run, without polling on.
        assert!(requests.len() <= 7, "{reply:?}: {}", requests.len());
    }
}

#[tokio::test]
async fn a_run_that_never_finishes_is_abandoned_after_a_bounded_wait() {
    let mock = MockOpenAi::builder().polls_until_complete(10_000).start().await;
    let clock = Arc::new(VirtualClock::new());
    let engine = engine(flow("openai_assistant.json"), &mock, clock.clone());
    let events = EventLog::new();
    let mut conversation = engine.start("c");
    engine.receive(&mut conversation, "hello").unwrap();
    let status = engine.run(&mut conversation, &events).await.unwrap();
    assert!(matches!(status, Status::HandedOff { .. }), "{status:?}");
    assert!(events.texts().last().unwrap().starts_with("Sorry"));
    // 41 jumps back, 42 waits: 0.25 + 0.5 + 1 + 2 + 4 + 8, then 8 s 36 times.
    assert_eq!(
        clock.elapsed(),
        Duration::from_millis(15_750 + 36 * 8_000),
        "about five minutes, as with the guide's 31 waits of 10 s"
    );
    let polls = mock
        .requests()
        .iter()
        .filter(|r| r.endpoint == Some(Endpoint::ListMessages))
        .count();
    assert_eq!(polls, 42, "the first poll and 41 jumps back");
}

#[tokio::test]
async fn a_retired_assistants_api_says_so() {
    let mock = MockOpenAi::start().await;
    mock.push_fault(Endpoint::CreateThread, Fault::Status(404));
    let engine = engine(
        flow("openai_assistant.json"),
        &mock,
        Arc::new(VirtualClock::new()),
    );
    let mut conversation = engine.start("c");
    engine.receive(&mut conversation, "hello").unwrap();
    let err = engine.run(&mut conversation, &EventLog::new()).await.unwrap_err();
    assert!(matches!(err, RunError::Status { status: 404, .. }));
    let text = err.to_string();
    assert!(text.contains("retired the Assistants API"), "{text}");
    assert!(text.contains("flows/openai_responses.json"), "{text}");
}

#[tokio::test]
async fn a_rate_limited_run_is_retried_after_the_wait() {
    let mock = MockOpenAi::builder().reply_with(scripted).start().await;
    mock.push_fault(Endpoint::CreateRun, Fault::RateLimited { retry_after_secs: 3 });
    let clock = Arc::new(VirtualClock::new());
    let engine = engine(flow("openai_assistant.json"), &mock, clock.clone());
    let events = EventLog::new();
    let mut conversation = engine.start("c");
    engine.receive(&mut conversation, "hello").unwrap();
    assert_eq!(
        engine.run(&mut conversation, &events).await.unwrap(),
        Status::AwaitingReply
    );
    assert_eq!(events.texts()[1], "Answer to: hello");
    assert_eq!(clock.elapsed(), Duration::from_secs(3));
    let runs = mock
        .requests()
        .iter()
        .filter(|r| r.endpoint == Some(Endpoint::CreateRun))
        .count();
    assert_eq!(runs, 2);
}

/// A clock that stops at its first sleep until the test lets it go on.
struct GateClock {
    time: VirtualClock,
    reached: mpsc::UnboundedSender<()>,
    gate: Semaphore,
}

#[async_trait]
impl Clock for GateClock {
    fn now(&self) -> SystemTime {
        self.time.now()
    }

    async fn sleep_until(&self, deadline: SystemTime) {
        let _ = self.reached.send(());
        if let Ok(permit) = self.gate.acquire().await {
            permit.forget();
        }
        self.time.sleep_until(deadline).await;
    }
}

#[tokio::test]
async fn messages_sent_while_the_bot_polls_reach_the_assistant_in_order() {
    let mock = MockOpenAi::builder()
        .polls_until_complete(2)
        .reply_with(|input: &ReplyInput| Reply::text(format!("re: {}", input.user_text)))
        .start()
        .await;
    let (reached_tx, mut reached) = mpsc::unbounded_channel();
    let clock = Arc::new(GateClock {
        time: VirtualClock::new(),
        reached: reached_tx,
        gate: Semaphore::new(0),
    });
    let engine = engine(flow("openai_assistant.json"), &mock, clock.clone());
    let events = Arc::new(EventLog::new());
    let sink = events.clone();
    let handle = engine.spawn(engine.start("c"), move |e| sink.emit(e));
    handle.send("first question").unwrap();

    // The bot is now in the Delay between two polls: the user sends twice.
    reached.recv().await.unwrap();
    handle.send("also this").unwrap();
    handle.send("and this").unwrap();
    clock.gate.add_permits(1000);

    // Wait for the second answer before finishing.
    let answered = async {
        while events.texts().len() < 3 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), answered)
        .await
        .unwrap();
    let (conversation, result) = handle.finish().await.unwrap();
    assert_eq!(result.unwrap(), Status::AwaitingReply);
    assert_eq!(conversation.current_step(), Some("Answer"));
    assert_eq!(
        mock.thread_messages("thread_1"),
        [
            ("user".to_string(), "first question".to_string()),
            ("assistant".to_string(), "re: first question".to_string()),
            ("user".to_string(), "also this\nand this".to_string()),
            ("assistant".to_string(), "re: also this\nand this".to_string()),
        ]
    );
    let messages = mock
        .requests()
        .iter()
        .filter(|r| r.endpoint == Some(Endpoint::CreateMessage))
        .count();
    assert_eq!(messages, 2, "one message per turn, never one during a run");
}

#[test]
fn the_support_bot_example_runs_with_piped_input() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mock = runtime.block_on(MockOpenAi::builder().reply_with(scripted).start());
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("support_bot");
    assert!(example.exists(), "build examples first: {}", example.display());
    let output = std::process::Command::new(&example)
        .env_remove("OPENAI_API_KEY")
        .env("OPENAI_API_KEY", mock.api_key())
        .env("OPENAI_BASE_URL", mock.base_url())
        .env("OPENAI_ASSISTANT_ID", mock.assistant_id())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"Where is my order?\nI want a human\n")?;
            child.wait_with_output()
        })
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("bot: Answer to: Where is my order?"), "{stdout}");
    assert!(stdout.contains("handoff"), "{stdout}");
    assert!(!stdout.contains("sk-mock-key") && !stderr.contains("sk-mock-key"));
    assert_eq!(mock.threads_created(), 1);
    drop(runtime);
}

#[tokio::test]
async fn the_backoff_notices_a_three_second_run_within_a_second() {
    let clock = Arc::new(VirtualClock::new());
    let mock = MockOpenAi::builder()
        .run_duration(Duration::from_secs(3))
        .clock(clock.clone())
        .reply_with(scripted)
        .start()
        .await;
    let engine = engine(flow("openai_assistant.json"), &mock, clock.clone());
    let events = EventLog::new();
    let mut conversation = engine.start("c");
    engine.receive(&mut conversation, "hello").unwrap();
    assert_eq!(
        engine.run(&mut conversation, &events).await.unwrap(),
        Status::AwaitingReply
    );
    assert_eq!(events.texts()[1], "Answer to: hello");
    // Checks at 0, 0.25, 0.75, 1.75 and 3.75 s: the fifth sees the answer.
    assert_eq!(clock.elapsed(), Duration::from_millis(3750));
    let polls = mock
        .requests()
        .iter()
        .filter(|r| r.endpoint == Some(Endpoint::ListMessages))
        .count();
    assert_eq!(polls, 5);
}
