//! The runtime over a store: exactly-once, in-order messages, Delays that
//! survive a restart, and crashes at every await point.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chatflow::http::{HttpClient, HttpError, HttpRequest, HttpResponse, ReqwestClient};
use chatflow::mock::{MockOpenAi, Reply, ReplyInput};
use chatflow::store::{
    Claim, ConversationCounts, Direction, Enqueued, MemoryStore, Save, Store, StoreError, TranscriptEntry,
};
use chatflow::{Clock, Engine, EngineOptions, Flow, ReplyMode, Runtime, Status, VirtualClock};

fn assistant_flow() -> Flow {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "flows", "openai_assistant.json"]
        .iter()
        .collect();
    Flow::from_path(path).unwrap()
}

fn scripted(input: &ReplyInput) -> Reply {
    if input.user_text.contains("human") {
        Reply::text("HANDOFF")
    } else {
        Reply::text(format!("Answer to: {}", input.user_text))
    }
}

/// Forwards to reqwest, except that call number `hang_at` never answers:
/// the process "dies" there.
struct HangAt {
    inner: ReqwestClient,
    hang_at: usize,
    calls: AtomicUsize,
}

#[async_trait]
impl HttpClient for HangAt {
    async fn send(&self, request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == self.hang_at {
            std::future::pending::<()>().await;
        }
        self.inner.send(request).await
    }
}

fn engine(
    flow: Flow,
    mock: &MockOpenAi,
    clock: Arc<VirtualClock>,
    http: impl HttpClient + 'static,
) -> Engine {
    Engine::builder(flow)
        .http_client(http)
        .shared_clock(clock)
        .secret("OPENAI_API_KEY", mock.api_key())
        .var("openai_base_url", mock.base_url())
        .var("assistant_id", mock.assistant_id())
        .build()
        .unwrap()
}

/// Runs the scheduler, jumping the clock to each wake-up, until nothing is due.
async fn settle(runtime: &Runtime, store: &dyn Store, clock: &VirtualClock) {
    loop {
        if runtime.wake_due().await.unwrap() > 0 {
            continue;
        }
        let now = chatflow::Clock::now(clock);
        match store.next_wake().await.unwrap() {
            Some(at) if at > now => clock.advance(at.duration_since(now).unwrap()),
            _ => return,
        }
    }
}

fn texts(entries: &[chatflow::store::TranscriptEntry]) -> Vec<(Direction, String)> {
    entries.iter().map(|e| (e.direction, e.text.clone())).collect()
}

#[tokio::test]
async fn a_conversation_through_the_runtime_answers_and_hands_off() {
    let mock = MockOpenAi::builder()
        .polls_until_complete(2)
        .reply_with(scripted)
        .start()
        .await;
    let clock = Arc::new(VirtualClock::new());
    let store = Arc::new(MemoryStore::new());
    let runtime = Runtime::new(
        engine(
            assistant_flow(),
            &mock,
            clock.clone(),
            ReqwestClient::new().unwrap(),
        ),
        store.clone(),
    );
    let turn = runtime
        .handle_message("c1", Some("m1"), "Where is my order?")
        .await
        .unwrap();
    assert_eq!(turn.status, Status::AwaitingReply);
    assert_eq!(
        texts(&turn.replies),
        [
            (
                Direction::Out,
                "Hi! I'm the support assistant. What can I help you with today?".to_string()
            ),
            (Direction::Out, "Answer to: Where is my order?".to_string()),
        ]
    );
    let parked = serde_json::to_string(&store.load("c1").await.unwrap().unwrap()).unwrap();
    // Small: the texts it holds plus well under 2 KB (only what templates read is kept).
    let texts_held = "Where is my order?".len() * 2 + "Answer to: Where is my order?".len();
    assert!(
        parked.len() < texts_held + 1024,
        "{} bytes: {parked}",
        parked.len()
    );
    // A redelivered webhook: nothing runs, nothing is answered.
    let requests = mock.requests().len();
    let again = runtime
        .handle_message("c1", Some("m1"), "Where is my order?")
        .await
        .unwrap();
    assert!(again.duplicate && again.replies.is_empty());
    assert_eq!(mock.requests().len(), requests);

    let turn = runtime
        .handle_message("c1", Some("m2"), "a human please")
        .await
        .unwrap();
    assert!(turn.handed_off());
    assert_eq!(turn.replies.last().unwrap().direction, Direction::Handoff);
    let transcript = texts(&store.transcript("c1", 0).await.unwrap());
    assert_eq!(transcript.len(), 6, "{transcript:?}");
    assert_eq!(transcript[0], (Direction::In, "Where is my order?".to_string()));
    assert_eq!(transcript[3], (Direction::In, "a human please".to_string()));
}

const ECHO: &str = r#"{"name": "echo", "steps": [
  {"type": "question", "name": "Ask", "text": "?"},
  {"type": "message", "name": "Echo", "text": "echo <<step.Ask.response>>", "next": "Ask"}
]}"#;

fn echo_runtime(store: Arc<dyn Store>) -> Runtime {
    let engine = Engine::builder(Flow::from_json(ECHO).unwrap())
        .options(EngineOptions::default().with_reply_mode(ReplyMode::OnePerQuestion))
        .build()
        .unwrap();
    Runtime::new(engine, store)
}

/// Every user message is echoed once, in the order the store received them.
async fn assert_each_echoed_once_in_order(store: &dyn Store, id: &str) {
    let transcript = store.transcript(id, 0).await.unwrap();
    let inbound: Vec<String> = transcript
        .iter()
        .filter(|e| e.direction == Direction::In)
        .map(|e| e.text.clone())
        .collect();
    let echoes: Vec<String> = transcript
        .iter()
        .filter_map(|e| e.text.strip_prefix("echo ").map(str::to_string))
        .collect();
    assert_eq!(echoes, inbound, "{id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_messages_for_one_conversation_apply_once_in_order() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    // Two runtimes (two "processes") share the store.
    let runtimes = [echo_runtime(store.clone()), echo_runtime(store.clone())];
    let mut tasks = Vec::new();
    for i in 0..40 {
        let runtime = runtimes[fastrand::usize(..2)].clone();
        let conversation = format!("c{}", i % 4);
        tasks.push(tokio::spawn(async move {
            let id = format!("m{i}");
            runtime
                .handle_message(&conversation, Some(&id), &format!("message {i}"))
                .await
                .unwrap();
            // Redelivered to the other runtime too.
            runtime
                .handle_message(&conversation, Some(&id), "redelivered")
                .await
                .unwrap()
        }));
    }
    for task in tasks {
        assert!(task.await.unwrap().duplicate);
    }
    for c in 0..4 {
        let id = format!("c{c}");
        assert_each_echoed_once_in_order(&*store, &id).await;
        let inbound = store
            .transcript(&id, 0)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.direction == Direction::In)
            .count();
        assert_eq!(inbound, 10);
    }
}

const SLEEPY: &str = r#"{"name": "sleepy", "steps": [
  {"type": "question", "name": "Ask", "text": "?"},
  {"type": "message", "name": "Before", "text": "checking"},
  {"type": "delay", "name": "Wait", "seconds": 3600},
  {"type": "message", "name": "After", "text": "done with <<step.Ask.response>>"}
]}"#;

#[tokio::test]
async fn a_sleeping_conversation_survives_a_restart() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let clock = Arc::new(VirtualClock::new());
    let make = |clock: Arc<VirtualClock>| {
        let engine = Engine::builder(Flow::from_json(SLEEPY).unwrap())
            .shared_clock(clock)
            .build()
            .unwrap();
        Runtime::new(engine, store.clone())
    };
    // The first process parks the conversation in its Delay, then dies.
    let first = make(clock.clone());
    let handle = {
        let first = first.clone();
        tokio::spawn(async move { first.handle_message("c", Some("m1"), "x").await })
    };
    // Let it reach the Delay (the virtual clock jumps), then kill the task.
    while store.next_wake().await.unwrap().is_none() {
        tokio::task::yield_now().await;
    }
    handle.abort();
    let _ = handle.await;

    let parked = store.load("c").await.unwrap().unwrap();
    assert!(
        matches!(parked.status(), Status::Sleeping { .. } | Status::Finished),
        "{:?}",
        parked.status()
    );
    // A new process, after the wake-up time passed while nobody ran.
    let second = make(clock.clone());
    clock.advance(Duration::from_secs(3600));
    while second.wake_due().await.unwrap() > 0 {}
    let transcript = texts(&store.transcript("c", 0).await.unwrap());
    let after: Vec<_> = transcript.iter().filter(|(_, t)| t == "done with x").collect();
    assert_eq!(after.len(), 1, "{transcript:?}");
    assert_eq!(
        store.load("c").await.unwrap().unwrap().status(),
        &Status::Finished
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_api_call_loses_no_message_and_repeats_no_reply() {
    // The clean run, for comparison.
    let expected = {
        let mock = MockOpenAi::builder()
            .polls_until_complete(2)
            .reply_with(scripted)
            .start()
            .await;
        let store = Arc::new(MemoryStore::new());
        let clock = Arc::new(VirtualClock::new());
        let runtime = Runtime::new(
            engine(assistant_flow(), &mock, clock, ReqwestClient::new().unwrap()),
            store.clone(),
        );
        runtime.handle_message("c", Some("m1"), "order?").await.unwrap();
        runtime.handle_message("c", Some("m2"), "human").await.unwrap();
        texts(&store.transcript("c", 0).await.unwrap())
    };
    let calls = 11; // HTTP calls in the clean run
    for hang_at in 0..calls {
        let mock = MockOpenAi::builder()
            .polls_until_complete(2)
            .reply_with(scripted)
            .start()
            .await;
        let store = Arc::new(MemoryStore::new());
        let clock = Arc::new(VirtualClock::new());
        let dying = Runtime::new(
            engine(
                assistant_flow(),
                &mock,
                clock.clone(),
                HangAt {
                    inner: ReqwestClient::new().unwrap(),
                    hang_at,
                    calls: AtomicUsize::new(0),
                },
            ),
            store.clone(),
        );
        // The process dies while its call hangs.
        let first = tokio::time::timeout(Duration::from_millis(300), async {
            dying.handle_message("c", Some("m1"), "order?").await.unwrap();
            dying.handle_message("c", Some("m2"), "human").await.unwrap();
        })
        .await;
        assert!(first.is_err(), "call {hang_at} should have hung");
        drop(dying);

        // A new process on the same store, once the dead one's lease expired.
        clock.advance(Duration::from_secs(301));
        let fresh = Runtime::new(
            engine(
                assistant_flow(),
                &mock,
                clock.clone(),
                ReqwestClient::new().unwrap(),
            ),
            store.clone(),
        );
        settle(&fresh, &*store, &clock).await;
        // The user's messages are redelivered by the platform, as webhooks are.
        fresh.handle_message("c", Some("m1"), "order?").await.unwrap();
        fresh.handle_message("c", Some("m2"), "human").await.unwrap();
        let got = texts(&store.transcript("c", 0).await.unwrap());
        assert_eq!(got, expected, "crash at call {hang_at}");
    }
}

#[tokio::test]
async fn after_the_end_a_message_starts_again_and_after_a_handoff_it_waits_for_people() {
    const SHORT: &str = r#"{"name": "short", "steps": [
      {"type": "question", "name": "Ask", "text": "?"},
      {"type": "condition", "name": "Human?", "any": [{"left": "<<step.Ask.response>>", "op": "contains", "right": "human"}],
       "then": "Assign", "else": "Bye"},
      {"type": "message", "name": "Bye", "text": "bye <<step.Ask.response>>", "next": "End"},
      {"type": "assign", "name": "Assign", "team": "support"},
      {"type": "message", "name": "End", "text": "the end"}
    ]}"#;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runtime = Runtime::new(
        Engine::builder(Flow::from_json(SHORT).unwrap()).build().unwrap(),
        store.clone(),
    );
    let turn = runtime.handle_message("c", None, "one").await.unwrap();
    assert_eq!(turn.status, Status::Finished);
    let turn = runtime.handle_message("c", None, "two").await.unwrap();
    assert_eq!(
        texts(&turn.replies),
        [
            (Direction::Out, "?".into()),
            (Direction::Out, "bye two".into()),
            (Direction::Out, "the end".into())
        ]
    );

    let turn = runtime.handle_message("h", None, "a human").await.unwrap();
    assert!(turn.handed_off());
    let turn = runtime.handle_message("h", None, "hello?").await.unwrap();
    assert!(turn.handed_off() && turn.replies.is_empty());
    let state = store.load("h").await.unwrap().unwrap();
    assert_eq!(state.pending_replies().count(), 0, "kept in the transcript only");
    assert_eq!(
        store.transcript("h", 0).await.unwrap().last().unwrap().text,
        "hello?"
    );
}

#[tokio::test]
async fn a_stored_conversation_follows_the_flow_change_policy() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let runtime_for = |flow: &str| {
        Runtime::new(
            Engine::builder(Flow::from_json(flow).unwrap()).build().unwrap(),
            store.clone(),
        )
    };
    // Parked at "Ask" under the original flow.
    runtime_for(ECHO).handle_message("c", None, "one").await.unwrap();
    runtime_for(ECHO)
        .handle_message("gone", None, "one")
        .await
        .unwrap();

    // "Ask" moved (a step was added before it): the conversation continues there.
    let moved = ECHO.replace(
        r#"{"type": "question", "name": "Ask""#,
        r#"{"type": "message", "name": "Hello", "text": "hello"}, {"type": "question", "name": "Ask""#,
    );
    let turn = runtime_for(&moved)
        .handle_message("c", None, "two")
        .await
        .unwrap();
    assert_eq!(
        texts(&turn.replies),
        [(Direction::Out, "echo two".into()), (Direction::Out, "?".into())]
    );

    // "Ask" is gone: the conversation ends with an error naming it.
    let renamed = ECHO
        .replace("\"Ask\"", "\"Question\"")
        .replace("step.Ask", "step.Question");
    let turn = runtime_for(&renamed)
        .handle_message("gone", None, "two")
        .await
        .unwrap();
    let Status::Failed { error } = &turn.status else {
        panic!("{:?}", turn.status)
    };
    assert!(error.contains("no longer has step \"Ask\""), "{error}");
}

// The scheduler.

/// Time that moves only when the test moves it; sleeps wait for it (unlike
/// `VirtualClock`, whose sleeps jump it), as on the real clock.
struct ManualClock(tokio::sync::watch::Sender<std::time::SystemTime>);

impl ManualClock {
    fn new() -> Arc<Self> {
        let start = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        Arc::new(ManualClock(tokio::sync::watch::Sender::new(start)))
    }

    fn advance(&self, by: Duration) {
        self.0.send_modify(|now| *now += by);
    }
}

#[async_trait]
impl chatflow::Clock for ManualClock {
    fn now(&self) -> std::time::SystemTime {
        *self.0.borrow()
    }

    async fn sleep_until(&self, deadline: std::time::SystemTime) {
        let mut moved = self.0.subscribe();
        let _ = moved.wait_for(|now| *now >= deadline).await;
    }
}

/// A manual clock whose sleeps never end: a runtime on it parks
/// conversations in their Delay and leaves them there, as a host that
/// dropped the request (or died) would.
struct Parked(Arc<ManualClock>);

#[async_trait]
impl chatflow::Clock for Parked {
    fn now(&self) -> std::time::SystemTime {
        chatflow::Clock::now(&*self.0)
    }

    async fn sleep_until(&self, _deadline: std::time::SystemTime) {
        std::future::pending::<()>().await
    }
}

/// Sleeps for as long as the answer says, then says "after".
const NAPS: &str = r#"{"name": "naps", "steps": [
  {"type": "question", "name": "Ask", "text": "?"},
  {"type": "condition", "name": "Short?", "any": [{"left": "<<step.Ask.response>>", "op": "equals", "right": "short"}],
   "then": "Short", "else": "Long"},
  {"type": "delay", "name": "Short", "seconds": 2, "next": "After"},
  {"type": "delay", "name": "Long", "seconds": 600},
  {"type": "message", "name": "After", "text": "after <<step.Ask.response>>"}
]}"#;

fn runtime_on(
    flow: &str,
    clock: Arc<dyn chatflow::Clock>,
    store: Arc<dyn Store>,
    http: impl HttpClient + 'static,
    options: chatflow::RuntimeOptions,
) -> Runtime {
    let engine = Engine::builder(Flow::from_json(flow).unwrap())
        .shared_clock(clock)
        .http_client(http)
        .build()
        .unwrap();
    Runtime::with_options(engine, store, options)
}

/// Starts a conversation with `text` and leaves it asleep in its Delay.
async fn put_to_sleep(runtime: &Runtime, store: &dyn Store, id: &str, text: &str) {
    let task = {
        let (runtime, id, text) = (runtime.clone(), id.to_string(), text.to_string());
        tokio::spawn(async move { runtime.handle_message(&id, None, &text).await })
    };
    let asleep =
        |c: Option<chatflow::Conversation>| c.is_some_and(|c| matches!(c.status(), Status::Sleeping { .. }));
    while !asleep(store.load(id).await.unwrap()) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    task.abort();
    let _ = task.await;
}

/// How many "after …" (or "done …") messages a conversation has, once
/// `expected` show up (or after two seconds of real time, a failure).
async fn afters(store: &dyn Store, id: &str, expected: usize) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let n = store
            .transcript(id, 0)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.text.starts_with("after ") || e.text.starts_with("done "))
            .count();
        if n >= expected || std::time::Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// No HTTP: the flows here call none, except where a test says.
struct NoHttp;

#[async_trait]
impl HttpClient for NoHttp {
    async fn send(&self, request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        if request.url().contains("stuck") {
            std::future::pending::<()>().await;
        }
        Ok(HttpResponse::new(200, "{}"))
    }
}

#[tokio::test]
async fn the_scheduler_wakes_for_an_earlier_wake_up_stored_while_it_sleeps() {
    let clock = ManualClock::new();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let options = chatflow::RuntimeOptions::default()
        // Long, so that only the wake-ups themselves can wake the scheduler.
        .with_scheduler_poll(Duration::from_secs(3600));
    let runtime = runtime_on(NAPS, clock.clone(), store.clone(), NoHttp, options.clone());
    // Another process put "long" to sleep for 600 s.
    let other = runtime_on(
        NAPS,
        Arc::new(Parked(clock.clone())),
        store.clone(),
        NoHttp,
        options,
    );
    put_to_sleep(&other, &*store, "long", "long").await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scheduler = tokio::spawn({
        let runtime = runtime.clone();
        async move {
            runtime
                .run_scheduler(async {
                    let _ = stopped.await;
                })
                .await
        }
    });
    // The scheduler goes to sleep until the 600 s wake-up.
    tokio::time::sleep(Duration::from_millis(20)).await;
    // This process puts "short" to sleep for 2 s; its request is then dropped.
    put_to_sleep(&runtime, &*store, "short", "short").await;

    clock.advance(Duration::from_secs(2));
    assert_eq!(afters(&*store, "short", 1).await, 1, "resumed at its wake-up");
    assert_eq!(afters(&*store, "long", 0).await, 0);
    clock.advance(Duration::from_secs(598));
    assert_eq!(afters(&*store, "long", 1).await, 1);
    let _ = stop.send(());
    scheduler.await.unwrap();
}

#[tokio::test]
async fn one_stuck_api_call_holds_back_no_other_due_conversation() {
    const CALLS: &str = r#"{"name": "calls", "steps": [
      {"type": "question", "name": "Ask", "text": "?"},
      {"type": "delay", "name": "Wait", "seconds": 10},
      {"type": "api", "name": "Call", "method": "GET", "url": "http://api.test/<<step.Ask.response>>"},
      {"type": "message", "name": "Done", "text": "done <<step.Ask.response>>"}
    ]}"#;
    let clock = ManualClock::new();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let options = chatflow::RuntimeOptions::default()
        .with_scheduler_batch(2)
        .with_scheduler_poll(Duration::from_secs(3600));
    let parker = runtime_on(
        CALLS,
        Arc::new(Parked(clock.clone())),
        store.clone(),
        NoHttp,
        options.clone(),
    );
    // "stuck" wakes first, and its call never answers.
    put_to_sleep(&parker, &*store, "stuck", "stuck").await;
    clock.advance(Duration::from_secs(1));
    let others = ["a", "b", "c", "d", "e"];
    for id in others {
        put_to_sleep(&parker, &*store, id, id).await;
    }

    // One pass: the other one of the batch ends while "stuck" hangs.
    let runtime = runtime_on(CALLS, clock.clone(), store.clone(), NoHttp, options);
    clock.advance(Duration::from_secs(10));
    let pass = tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.wake_due().await }
    });
    assert_eq!(afters(&*store, "a", 1).await, 1);
    assert!(!pass.is_finished());
    pass.abort();
    let _ = pass.await;

    // The scheduler: two at once; "stuck" holds one slot, the rest go through the other.
    clock.advance(Duration::from_secs(301)); // the aborted pass's lease on "stuck" expires
    let scheduler = tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.run_scheduler(std::future::pending()).await }
    });
    for id in others {
        assert_eq!(afters(&*store, id, 1).await, 1, "{id}");
    }
    assert_eq!(afters(&*store, "stuck", 0).await, 0);
    scheduler.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_resume_each_sleeper_exactly_once() {
    let clock = ManualClock::new();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let options = chatflow::RuntimeOptions::default().with_scheduler_batch(4);
    let parker = runtime_on(
        NAPS,
        Arc::new(Parked(clock.clone())),
        store.clone(),
        NoHttp,
        options.clone(),
    );
    let ids: Vec<String> = (0..24).map(|i| format!("c{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        put_to_sleep(&parker, &*store, id, if i % 2 == 0 { "short" } else { "long" }).await;
        clock.advance(Duration::from_millis(100));
    }
    let schedulers: Vec<_> = (0..2)
        .map(|_| {
            let runtime = runtime_on(NAPS, clock.clone(), store.clone(), NoHttp, options.clone());
            tokio::spawn(async move { runtime.run_scheduler(std::future::pending()).await })
        })
        .collect();
    // Time moves in steps, as both schedulers race for the same wake-ups.
    for _ in 0..600 {
        clock.advance(Duration::from_secs(1));
        tokio::task::yield_now().await;
    }
    for id in &ids {
        assert_eq!(afters(&*store, id, 1).await, 1, "{id}");
    }
    // Nothing more comes: a second resume would have shown by now.
    tokio::time::sleep(Duration::from_millis(20)).await;
    for id in &ids {
        assert_eq!(afters(&*store, id, 0).await, 1, "{id}");
    }
    for scheduler in schedulers {
        scheduler.abort();
    }
}

/// Answers every request with a JSON array nested `depth` levels deep.
struct Deep {
    depth: usize,
}

#[async_trait]
impl HttpClient for Deep {
    async fn send(&self, _request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        let body = format!("{}1{}", "[".repeat(self.depth), "]".repeat(self.depth));
        Ok(HttpResponse::new(200, body))
    }
}

/// A response nested just below serde_json's parse limit must not make the
/// stored state, which nests it a few levels deeper, unreadable.
#[tokio::test]
async fn a_deeply_nested_response_keeps_the_conversation_readable() {
    let flow = Flow::from_json(
        r#"{"name": "deep", "steps": [
          {"type": "question", "name": "Ask", "text": "?"},
          {"type": "api", "name": "Call", "method": "GET", "url": "https://api.example.com/x"},
          {"type": "message", "name": "Show", "text": "got <<step.Call.response>>", "next": "Ask"}
        ]}"#,
    )
    .unwrap();
    for store in [
        Arc::new(MemoryStore::new()) as Arc<dyn Store>,
        Arc::new(
            chatflow::store::SqliteStore::connect("sqlite::memory:")
                .await
                .unwrap(),
        ),
    ] {
        let engine = Engine::builder(flow.clone())
            .http_client(Deep { depth: 126 })
            .build()
            .unwrap();
        let runtime = Runtime::new(engine, store.clone());
        runtime.handle_message("c", Some("m1"), "hi").await.unwrap();
        let second = runtime.handle_message("c", Some("m2"), "again").await.unwrap();
        assert_eq!(second.status, Status::AwaitingReply);
        assert!(store.load("c").await.unwrap().is_some());
    }
}

/// A store that forwards to a [`MemoryStore`] and records which operations
/// were asked of it.
#[derive(Default)]
struct Recording {
    inner: MemoryStore,
    calls: std::sync::Mutex<Vec<&'static str>>,
    /// Each save's wake-up and clock.
    wakes: std::sync::Mutex<Vec<(Option<std::time::SystemTime>, std::time::SystemTime)>>,
}

impl Recording {
    fn note(&self, call: &'static str) {
        self.calls.lock().unwrap().push(call);
    }

    fn note_save(&self, save: &Save<'_>) {
        self.wakes.lock().unwrap().push((save.wake_at, save.now));
    }

    fn take(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

#[async_trait]
impl Store for Recording {
    async fn enqueue_message(
        &self,
        id: &str,
        message: chatflow::store::InboundMessage<'_>,
        now: std::time::SystemTime,
    ) -> Result<Option<u64>, StoreError> {
        self.note("enqueue");
        self.inner.enqueue_message(id, message, now).await
    }

    async fn acquire(
        &self,
        id: &str,
        owner: &str,
        lease_until: std::time::SystemTime,
        now: std::time::SystemTime,
    ) -> Result<Option<Claim>, StoreError> {
        self.note("acquire");
        self.inner.acquire(id, owner, lease_until, now).await
    }

    async fn enqueue_and_acquire(
        &self,
        id: &str,
        message_id: &str,
        text: &str,
        owner: &str,
        lease_until: std::time::SystemTime,
        now: std::time::SystemTime,
    ) -> Result<Option<Enqueued>, StoreError> {
        self.note("enqueue_and_acquire");
        self.inner
            .enqueue_and_acquire(id, message_id, text, owner, lease_until, now)
            .await
    }

    async fn save(&self, id: &str, owner: &str, save: Save<'_>) -> Result<(), StoreError> {
        self.note("save");
        self.note_save(&save);
        self.inner.save(id, owner, save).await
    }

    async fn save_and_read_replies(
        &self,
        id: &str,
        owner: &str,
        save: Save<'_>,
        after_seq: u64,
    ) -> Result<Vec<TranscriptEntry>, StoreError> {
        self.note("save_and_read_replies");
        self.note_save(&save);
        self.inner.save_and_read_replies(id, owner, save, after_seq).await
    }

    async fn release(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        self.note("release");
        self.inner.release(id, owner).await
    }

    async fn due(&self, now: std::time::SystemTime, limit: usize) -> Result<Vec<String>, StoreError> {
        self.note("due");
        self.inner.due(now, limit).await
    }

    async fn counts(&self, now: std::time::SystemTime) -> Result<ConversationCounts, StoreError> {
        self.note("counts");
        self.inner.counts(now).await
    }

    async fn next_wake(&self) -> Result<Option<std::time::SystemTime>, StoreError> {
        self.note("next_wake");
        self.inner.next_wake().await
    }

    async fn load(&self, id: &str) -> Result<Option<chatflow::Conversation>, StoreError> {
        self.note("load");
        self.inner.load(id).await
    }

    async fn transcript(&self, id: &str, after_seq: u64) -> Result<Vec<TranscriptEntry>, StoreError> {
        self.note("transcript");
        self.inner.transcript(id, after_seq).await
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        lease_until: std::time::SystemTime,
        now: std::time::SystemTime,
        limit: usize,
    ) -> Result<Vec<chatflow::store::PendingDeliveries>, StoreError> {
        self.inner.claim_deliveries(owner, lease_until, now, limit).await
    }

    async fn record_delivery(
        &self,
        id: &str,
        owner: &str,
        seq: u64,
        record: chatflow::store::DeliveryRecord<'_>,
        now: std::time::SystemTime,
    ) -> Result<(), StoreError> {
        self.inner.record_delivery(id, owner, seq, record, now).await
    }

    async fn release_deliveries(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        self.inner.release_deliveries(id, owner).await
    }

    async fn next_delivery_after(
        &self,
        after: std::time::SystemTime,
    ) -> Result<Option<std::time::SystemTime>, StoreError> {
        self.inner.next_delivery_after(after).await
    }

    async fn record_receipt(
        &self,
        channel_message_id: &str,
        receipt: &chatflow::channel::Receipt,
    ) -> Result<Option<(String, u64)>, StoreError> {
        self.inner.record_receipt(channel_message_id, receipt).await
    }

    async fn prune_seen(&self, before: std::time::SystemTime, limit: usize) -> Result<u64, StoreError> {
        self.inner.prune_seen(before, limit).await
    }
}

/// Answers every call with `{}`; with a clock, a second later.
struct EmptyJson(Option<Arc<VirtualClock>>);

#[async_trait]
impl HttpClient for EmptyJson {
    async fn send(&self, _: &HttpRequest) -> Result<HttpResponse, HttpError> {
        if let Some(clock) = &self.0 {
            clock.advance(Duration::from_secs(1));
        }
        Ok(HttpResponse::json(200, &serde_json::json!({})))
    }
}

/// A save protects a call that changed something (or a reply) from being
/// repeated, and makes the call a crash repeats the same call: the
/// responses of idempotent calls need none before more idempotent calls,
/// as a crash merely repeats them, like a retry would.
#[tokio::test]
async fn responses_of_idempotent_calls_are_saved_only_before_a_call_that_changes_something() {
    let flow = Flow::from_json(
        r#"{"name": "saves", "steps": [
          {"type": "question", "name": "Ask", "text": "?"},
          {"type": "api", "name": "Create", "method": "POST", "url": "https://api.example.com/x"},
          {"type": "api", "name": "Read", "method": "GET", "url": "https://api.example.com/x"},
          {"type": "api", "name": "Read again", "method": "GET", "url": "https://api.example.com/x"},
          {"type": "api", "name": "Replace", "method": "PUT", "url": "https://api.example.com/x"},
          {"type": "api", "name": "Update", "method": "PATCH", "url": "https://api.example.com/x"},
          {"type": "message", "name": "Done", "text": "done", "next": "Ask"}
        ]}"#,
    )
    .unwrap();
    let store = Arc::new(Recording::default());
    let engine = Engine::builder(flow)
        .http_client(EmptyJson(None))
        .build()
        .unwrap();
    let runtime = Runtime::new(engine, store.clone());
    runtime.handle_message("c", Some("m1"), "hi").await.unwrap();
    let saves = |calls: Vec<&str>| calls.iter().filter(|c| c.starts_with("save")).count();
    let first = saves(store.take());
    let turn = runtime.handle_message("c", Some("m2"), "again").await.unwrap();
    assert_eq!(turn.replies.len(), 2, "done, and the question again");
    // First turn: before "Create" (the question was sent), before "Read"
    // (after the POST), before "Update" (a PATCH built on the GETs' and the
    // PUT's answers), at the end. Second: the same but the first. The GETs
    // and the PUT between are repeated after a crash, like a retry.
    // (Saving after every response wrote 6 and 5 times.)
    let second = saves(store.take());
    assert_eq!((first, second), (4, 3), "saves in the first and second turn");
}

/// Mid-turn saves leave the conversation due at once (a runner that dies
/// leaves it to the next), all at the same instant: the turn's start. A
/// store then need not touch its wake-up index after the first of them.
#[tokio::test]
async fn the_mid_turn_saves_of_a_turn_share_one_wake_up() {
    let flow = Flow::from_json(
        r#"{"name": "wakes", "steps": [
          {"type": "question", "name": "Ask", "text": "?"},
          {"type": "api", "name": "Create", "method": "POST", "url": "https://api.example.com/x"},
          {"type": "api", "name": "Create more", "method": "POST", "url": "https://api.example.com/x"},
          {"type": "api", "name": "Create again", "method": "POST", "url": "https://api.example.com/x"},
          {"type": "message", "name": "Done", "text": "done", "next": "Ask"}
        ]}"#,
    )
    .unwrap();
    let clock = Arc::new(VirtualClock::new());
    let store = Arc::new(Recording::default());
    let engine = Engine::builder(flow)
        .http_client(EmptyJson(Some(clock.clone())))
        .shared_clock(clock.clone())
        .build()
        .unwrap();
    let runtime = Runtime::new(engine, store.clone());
    runtime.handle_message("c", Some("m1"), "hi").await.unwrap();
    store.wakes.lock().unwrap().clear();
    let started = clock.now();
    runtime.handle_message("c", Some("m2"), "again").await.unwrap();
    let wakes = std::mem::take(&mut *store.wakes.lock().unwrap());
    // Before "Create more" and "Create again", then the last save.
    assert_eq!(wakes.len(), 3, "{wakes:?}");
    let (mid, last) = wakes.split_at(2);
    for (i, (wake_at, now)) in mid.iter().enumerate() {
        assert_eq!(*wake_at, Some(started), "mid-turn save {i}");
        assert!(*now > started, "the clock moved on by save {i}");
    }
    assert_eq!(
        last[0].0, None,
        "the last save parks the conversation at the question"
    );
}

/// A turn costs the store one write to take the message and the lease, one
/// per save point, and one for its last save, which also reads its replies:
/// on a database, each is a round trip.
#[tokio::test]
async fn a_turn_asks_the_store_once_per_save_point() {
    let mock = MockOpenAi::builder().reply_with(scripted).start().await;
    let store = Arc::new(Recording::default());
    let clock = Arc::new(VirtualClock::new());
    let runtime = Runtime::new(
        engine(assistant_flow(), &mock, clock, ReqwestClient::new().unwrap()),
        store.clone(),
    );
    // The welcome, then four Api calls: a save before each (the first
    // follows the welcome, the others a response).
    let turn = runtime.handle_message("c", Some("m1"), "hi").await.unwrap();
    assert_eq!(turn.status, Status::AwaitingReply);
    assert_eq!(
        store.take(),
        [
            "enqueue_and_acquire",
            "save",
            "save",
            "save",
            "save",
            "save_and_read_replies"
        ]
    );
    // Three Api calls: saves before the second and the third.
    let turn = runtime.handle_message("c", Some("m2"), "order?").await.unwrap();
    assert_eq!(
        texts(&turn.replies),
        [(Direction::Out, "Answer to: order?".to_string())]
    );
    assert_eq!(
        store.take(),
        ["enqueue_and_acquire", "save", "save", "save_and_read_replies"]
    );
    // A repeat only reads the status.
    let again = runtime.handle_message("c", Some("m2"), "order?").await.unwrap();
    assert!(again.duplicate);
    assert_eq!(store.take(), ["enqueue_and_acquire", "load"]);
}

#[tokio::test]
async fn a_turn_lists_its_texts_and_serializes() {
    let flow = Flow::from_json(
        r#"{"name": "handoff", "steps": [
          {"type": "message", "name": "Hello", "text": "Hello"},
          {"type": "message", "name": "Wait", "text": "Passing you on"},
          {"type": "assign", "name": "Assign", "team": "billing"}
        ]}"#,
    )
    .unwrap();
    let runtime = Runtime::new(
        Engine::builder(flow).build().unwrap(),
        Arc::new(MemoryStore::new()),
    );
    let turn = runtime.handle_message("c", Some("m1"), "help").await.unwrap();
    // The handoff notice is a reply, not a text.
    assert_eq!(turn.replies.len(), 3);
    assert_eq!(turn.texts(), ["Hello", "Passing you on"]);
    let json = serde_json::to_value(&turn).unwrap();
    assert_eq!(json["replies"][2]["direction"], "handoff");
    assert_eq!(json["replies"][2]["text"], "billing");
    assert_eq!(json["status"]["state"], "handed_off");
    let back: chatflow::Turn = serde_json::from_value(json).unwrap();
    assert_eq!(back, turn);
}

/// Fails the first attempt of every call with a 503, then forwards.
struct FirstAttemptBusy<C> {
    inner: C,
    calls: AtomicUsize,
}

#[async_trait]
impl<C: HttpClient> HttpClient for FirstAttemptBusy<C> {
    async fn send(&self, request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        if self.calls.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
            return Ok(HttpResponse::new(503, "busy"));
        }
        self.inner.send(request).await
    }
}

/// Answers every request, noting the step that sent it.
#[derive(Default)]
struct Lookups(std::sync::Mutex<Vec<String>>);

#[async_trait]
impl HttpClient for Lookups {
    async fn send(&self, request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        self.0
            .lock()
            .unwrap()
            .push(request.step().unwrap_or("?").to_string());
        Ok(HttpResponse::json(200, &serde_json::json!({"ok": true})))
    }
}

#[tokio::test]
async fn a_turn_saves_before_a_retry_backoff_what_it_would_otherwise_repeat() {
    // Two GETs: the first's answer is unsaved when the second backs off; the
    // backoff saves it, so a crash during the backoff does not repeat it.
    let flow = Flow::from_json(
        r#"{"name": "reads", "steps": [
          {"type": "api", "name": "First", "method": "GET", "url": "https://api.test/first"},
          {"type": "api", "name": "Second", "method": "GET", "url": "https://api.test/second"},
          {"type": "message", "name": "Done", "text": "done"}
        ]}"#,
    )
    .unwrap();
    let store = Arc::new(Recording::default());
    let clock = Arc::new(VirtualClock::new());
    let seen = Arc::new(Lookups::default());
    let http = FirstAttemptBusy {
        inner: seen.clone(),
        calls: AtomicUsize::new(1), // the first call passes, the second's first attempt is busy
    };
    let engine = Engine::builder(flow)
        .http_client(http)
        .shared_clock(clock.clone())
        .jitter(|| 0.0)
        .build()
        .unwrap();
    let runtime = Runtime::new(engine, store.clone());
    let turn = runtime.handle_message("c", Some("m1"), "hi").await.unwrap();
    assert_eq!(turn.texts(), ["done"]);
    // The one mid-turn save is the backoff's: idempotent reads alone need none.
    assert_eq!(
        store.take(),
        ["enqueue_and_acquire", "save", "save_and_read_replies"]
    );
    assert_eq!(*seen.0.lock().unwrap(), ["First", "Second"]);
    // Exactly the backoff of the injected jitter passed.
    assert_eq!(clock.elapsed(), Duration::from_millis(500));
}

#[tokio::test]
async fn a_start_flow_conversation_is_started_by_its_first_message_through_the_runtime() {
    let flow = Flow::from_json(
        r#"{"name": "trigger", "start": "start_flow", "steps": [
          {"type": "message", "name": "Echo", "text": "You wrote: <<conversation.start_text>>"},
          {"type": "question", "name": "Ask", "text": "Your order number?"},
          {"type": "message", "name": "Got", "text": "Order <<step.Ask.response>>."}
        ]}"#,
    )
    .unwrap();
    let runtime = Runtime::new(
        Engine::builder(flow).build().unwrap(),
        Arc::new(MemoryStore::new()),
    );
    let turn = runtime
        .handle_message("c1", Some("m1"), "hi there")
        .await
        .unwrap();
    assert_eq!(turn.texts(), ["You wrote: hi there", "Your order number?"]);
    let turn = runtime.handle_message("c1", Some("m2"), "42").await.unwrap();
    assert_eq!(turn.texts(), ["Order 42."]);
    // A redelivery of the first message starts nothing again.
    assert!(
        runtime
            .handle_message("c1", Some("m1"), "hi there")
            .await
            .unwrap()
            .duplicate
    );
}
