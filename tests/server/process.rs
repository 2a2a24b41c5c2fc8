//! The `chatflow-server` binary as a process, driven over HTTP against the
//! crate's mock OpenAI: the `POST /chat` contract, its error codes, the
//! bearer token, the transcript endpoint, metrics, SQLite and Postgres
//! durability, a conversation resumed after SIGKILL, graceful shutdown on
//! SIGTERM, and the arguments with their environment fallbacks (the
//! `support_server` example runs the same code). The routes without a
//! process (`oneshot`) are in routes.rs beside this file.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use chatflow::mock::{Endpoint, Fault, MockOpenAi, Reply, ReplyInput};
use serde_json::{Value, json};

const SHIPPED_FLOW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/flows/openai_assistant.json");

/// The installed binary; the `support_server` example runs the same code.
const SERVER: &str = env!("CARGO_BIN_EXE_chatflow-server");

/// Answers every question, hands off when the user asks for a human.
fn scripted(input: &ReplyInput) -> Reply {
    if input.user_text.contains("human") {
        Reply::text("HANDOFF: connecting you")
    } else {
        Reply::text(format!("Answer to: {}", input.user_text))
    }
}

async fn mock(polls_until_complete: u32) -> MockOpenAi {
    MockOpenAi::builder()
        .reply_with(scripted)
        .polls_until_complete(polls_until_complete)
        .start()
        .await
}

/// The shipped flow's JSON.
fn shipped_flow() -> Value {
    serde_json::from_str(&std::fs::read_to_string(SHIPPED_FLOW).unwrap()).unwrap()
}

/// The text of a step of the shipped flow.
fn step_text(name: &str) -> String {
    let flow = shipped_flow();
    let step = flow["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name}"));
    step["text"].as_str().unwrap().to_string()
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = std::env::temp_dir().join(format!("chatflow-server-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// A copy of the shipped flow whose poll Delay ("Wait") lasts `seconds`.
    fn flow_with_wait(&self, seconds: u64) -> PathBuf {
        let mut flow = shipped_flow();
        let wait = flow["steps"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|s| s["name"] == "Wait")
            .unwrap();
        wait["seconds"] = json!(seconds);
        let path = self.0.join("flow.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&flow).unwrap()).unwrap();
        path
    }

    fn sqlite_url(&self) -> String {
        format!("sqlite://{}", self.0.join("chatflow.db").display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `chatflow-server`; killed on drop, its log printed when the test failed.
struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

/// How to start a server.
struct Setup<'a> {
    mock: &'a MockOpenAi,
    dir: &'a TempDir,
    database_url: String,
    flow: Option<PathBuf>,
    env: Vec<(&'static str, String)>,
}

impl<'a> Setup<'a> {
    fn memory(mock: &'a MockOpenAi, dir: &'a TempDir) -> Self {
        Setup {
            mock,
            dir,
            database_url: "memory".into(),
            flow: None,
            env: Vec::new(),
        }
    }

    fn sqlite(mock: &'a MockOpenAi, dir: &'a TempDir) -> Self {
        Setup {
            database_url: dir.sqlite_url(),
            ..Setup::memory(mock, dir)
        }
    }

    fn database(mut self, url: &str) -> Self {
        self.database_url = url.to_string();
        self
    }

    fn flow(mut self, path: PathBuf) -> Self {
        self.flow = Some(path);
        self
    }

    fn env(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.env.push((name, value.into()));
        self
    }

    fn start(&self) -> Server {
        self.start_with_key(self.mock.api_key())
    }

    fn start_with_key(&self, api_key: &str) -> Server {
        let starts = std::fs::read_dir(self.dir.path()).unwrap().count();
        let log = self.dir.path().join(format!("server-{starts}.log"));
        let mut command = Command::new(SERVER);
        command.args(["--listen", "127.0.0.1:0"]);
        if let Some(flow) = &self.flow {
            command.arg("--flow").arg(flow);
        }
        for name in [
            "OPENAI_MODEL",
            "OPENAI_INSTRUCTIONS",
            "CHATFLOW_API_TOKEN",
            "CHATFLOW_TURN_TIMEOUT_SECS",
            "CHATFLOW_SHUTDOWN_GRACE_SECS",
        ] {
            command.env_remove(name);
        }
        command
            .env("OPENAI_API_KEY", api_key)
            .env("OPENAI_BASE_URL", self.mock.base_url())
            .env("OPENAI_ASSISTANT_ID", self.mock.assistant_id())
            .env("DATABASE_URL", &self.database_url)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        start_command(command, &log)
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reap.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `limit`.
    async fn exit_status(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- chatflow-server log ({}) ---\n{}", self.base, self.logs());
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

struct Answer {
    status: u16,
    body: Value,
    headers: reqwest::header::HeaderMap,
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    Answer {
        status,
        body,
        headers,
    }
}

async fn post_raw(server: &Server, body: impl Into<reqwest::Body>, token: Option<&str>) -> Answer {
    let mut request = client()
        .post(server.url("/chat"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    answer(request.send().await.unwrap()).await
}

async fn chat(server: &Server, body: Value) -> Answer {
    post_raw(server, body.to_string(), None).await
}

async fn get(server: &Server, path: &str) -> Answer {
    answer(client().get(server.url(path)).send().await.unwrap()).await
}

fn texts(messages: &Value) -> Vec<&str> {
    messages
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {messages}"))
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect()
}

/// `(direction, text)` of each transcript entry, checking `seq` runs 1, 2, 3, …
fn transcript(body: &Value) -> Vec<(String, String)> {
    let entries = body["transcript"].as_array().unwrap();
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry["seq"], json!(i + 1), "{body}");
    }
    entries
        .iter()
        .map(|e| {
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

/// Polls `GET /conversations/{id}` until `done` holds, at most `limit`.
async fn wait_for(server: &Server, id: &str, limit: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let got = get(server, &format!("/conversations/{id}")).await;
        if got.status == 200 && done(&got.body) {
            return got.body;
        }
        assert!(
            Instant::now() < deadline,
            "condition not reached within {limit:?}; last: {} {}",
            got.status,
            got.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count(body: &Value, text: &str) -> usize {
    transcript(body).iter().filter(|(_, t)| t == text).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_gets_an_answer_then_a_handoff() {
    let mock = mock(1).await;
    let dir = TempDir::new("handoff");
    let server = Setup::memory(&mock, &dir).start();

    let health = get(&server, "/healthz").await;
    assert_eq!((health.status, health.body), (200, json!("ok")));

    let first = chat(
        &server,
        json!({"conversation_id": "user-1", "text": "Where is my order?", "message_id": "m1"}),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let welcome = step_text("Welcome");
    assert_eq!(
        texts(&first.body["messages"]),
        [welcome.as_str(), "Answer to: Where is my order?"]
    );
    assert_eq!(
        first.body["reply"],
        json!(format!("{welcome}\nAnswer to: Where is my order?"))
    );
    assert_eq!(first.body["handoff"], json!(false));
    assert_eq!(first.body["conversation_id"], json!("user-1"));

    let second = chat(
        &server,
        json!({"conversation_id": "user-1", "text": "I want a human", "message_id": "m2"}),
    )
    .await;
    assert_eq!(second.status, 200, "{}", second.body);
    let handoff_message = step_text("Handoff message");
    assert_eq!(texts(&second.body["messages"]), [handoff_message.as_str()]);
    assert_eq!(second.body["reply"], json!(handoff_message));
    assert_eq!(second.body["handoff"], json!(true));

    let conversation = get(&server, "/conversations/user-1").await;
    assert_eq!(conversation.status, 200);
    assert_eq!(conversation.body["conversation_id"], json!("user-1"));
    assert_eq!(conversation.body["status"]["state"], json!("handed_off"));
    assert_eq!(
        transcript(&conversation.body),
        [
            entry("in", "Where is my order?"),
            entry("out", &welcome),
            entry("out", "Answer to: Where is my order?"),
            entry("in", "I want a human"),
            entry("out", &handoff_message),
            entry("handoff", "support"),
        ]
    );
    assert_eq!(mock.threads_created(), 1);
    assert_eq!(mock.runs_created(), 2);

    assert_eq!(get(&server, "/conversations/nobody").await.status, 404);

    let metrics = get(&server, "/metrics").await;
    assert_eq!(metrics.status, 200);
    let metrics = metrics.body.as_str().unwrap().to_string();
    for expected in [
        "chatflow_turns_total{status=\"handed_off\"} 1",
        "chatflow_turns_total{status=\"awaiting_reply\"} 1",
        "chatflow_messages_total{direction=\"in\"} 2",
        "chatflow_messages_total{direction=\"out\"} 3",
        "chatflow_turn_seconds_count 2",
        "chatflow_api_calls_total{status=\"200\"}",
        "chatflow_api_seconds_bucket",
        "chatflow_turns_in_flight 0",
        "chatflow_conversations{state=\"parked\"} 1",
        "chatflow_conversations{state=\"sleeping\"} 0",
        "chatflow_steps_total ",
    ] {
        assert!(metrics.contains(expected), "no {expected} in\n{metrics}");
    }
    assert!(
        !server.logs().contains(mock.api_key()),
        "the API key leaked into the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_message_id_is_applied_once() {
    let mock = mock(1).await;
    let dir = TempDir::new("duplicate");
    let server = Setup::memory(&mock, &dir).start();
    let message = json!({"conversation_id": "dup-1", "text": "Where is my order?", "message_id": "m-1"});

    let first = chat(&server, message.clone()).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(texts(&first.body["messages"]).len(), 2);
    assert_ne!(first.body["duplicate"], json!(true));

    let again = chat(&server, message).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["duplicate"], json!(true));
    assert_eq!(again.body["messages"], json!([]));
    assert_eq!(again.body["handoff"], json!(false));

    let conversation = get(&server, "/conversations/dup-1").await;
    assert_eq!(count(&conversation.body, "Where is my order?"), 1);
    assert_eq!(transcript(&conversation.body).len(), 3);
    assert_eq!(mock.runs_created(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_400_with_a_reason() {
    let mock = mock(1).await;
    let dir = TempDir::new("bad");
    let server = Setup::memory(&mock, &dir).start();

    let too_long_text = "x".repeat(1024 * 1024 + 1);
    let cases: Vec<(&str, String)> = vec![
        ("not JSON", "{\"conversation_id\": ".to_string()),
        ("no text", json!({"conversation_id": "c1"}).to_string()),
        (
            "text not a string",
            json!({"conversation_id": "c1", "text": 5}).to_string(),
        ),
        ("no id", json!({"text": "hi"}).to_string()),
        (
            "empty id",
            json!({"conversation_id": "", "text": "hi"}).to_string(),
        ),
        (
            "id of 129 bytes",
            json!({"conversation_id": "a".repeat(129), "text": "hi"}).to_string(),
        ),
        (
            "id with a space",
            json!({"conversation_id": "a b", "text": "hi"}).to_string(),
        ),
        (
            "id with a slash",
            json!({"conversation_id": "a/b", "text": "hi"}).to_string(),
        ),
        (
            "id with non-ASCII",
            json!({"conversation_id": "é", "text": "hi"}).to_string(),
        ),
        (
            "text over max_reply_bytes",
            json!({"conversation_id": "c1", "text": too_long_text}).to_string(),
        ),
    ];
    for (case, body) in cases {
        let got = post_raw(&server, body, None).await;
        assert_eq!(got.status, 400, "{case}: {}", got.body);
        let reason = got.body["error"].as_str().unwrap_or_default();
        assert!(!reason.is_empty(), "{case}: no reason in {}", got.body);
    }
    assert_eq!(
        mock.threads_created(),
        0,
        "no bad request may start a conversation"
    );
    assert_eq!(get(&server, "/conversations/a%20b").await.status, 400);

    // The limits themselves are fine.
    let longest: String = "aZ09._:@-".chars().cycle().take(128).collect();
    let got = chat(&server, json!({"conversation_id": longest, "text": "hi"})).await;
    assert_eq!(got.status, 200, "{}", got.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_token_guards_chat() {
    let mock = mock(1).await;
    let dir = TempDir::new("token");
    let token = "s3cret-server-token";
    let server = Setup::memory(&mock, &dir)
        .env("CHATFLOW_API_TOKEN", token)
        .start();
    let body = json!({"conversation_id": "t1", "text": "Where is my order?"}).to_string();

    for wrong in [None, Some("wrong"), Some("s3cret-server-token-x"), Some("")] {
        let got = post_raw(&server, body.clone(), wrong).await;
        assert_eq!(got.status, 401, "{wrong:?}: {}", got.body);
        assert!(got.body["error"].is_string());
        assert_eq!(
            got.headers.get("www-authenticate").map(|v| v.to_str().unwrap()),
            Some("Bearer")
        );
    }
    assert_eq!(mock.threads_created(), 0);

    let got = post_raw(&server, body, Some(token)).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(get(&server, "/healthz").await.status, 200);
    assert_eq!(get(&server, "/metrics").await.status, 200);
    assert_eq!(get(&server, "/conversations/t1").await.status, 401);
    assert!(!server.logs().contains(token), "the token leaked into the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_api_call_is_a_502_with_the_masked_error() {
    let mock = mock(1).await;
    let dir = TempDir::new("refused");
    let wrong_key = "sk-not-the-mock-key-4242";
    let server = Setup::memory(&mock, &dir).start_with_key(wrong_key);

    let got = chat(
        &server,
        json!({"conversation_id": "r1", "text": "Where is my order?"}),
    )
    .await;
    assert_eq!(got.status, 502, "{}", got.body);
    let error = got.body["error"].as_str().unwrap();
    assert!(!error.is_empty());
    assert!(!got.body.to_string().contains(wrong_key), "{}", got.body);
    let conversation = get(&server, "/conversations/r1").await;
    assert_eq!(conversation.body["status"]["state"], json!("failed"));
    assert!(!conversation.body.to_string().contains(wrong_key));
    assert!(
        !server.logs().contains(wrong_key),
        "the API key leaked into the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_turn_is_a_504_and_its_answer_lands_in_the_transcript() {
    let mock = mock(3).await;
    let dir = TempDir::new("timeout");
    let server = Setup::memory(&mock, &dir)
        .flow(dir.flow_with_wait(1))
        .env("CHATFLOW_TURN_TIMEOUT_SECS", "0.2")
        .start();

    let started = Instant::now();
    let got = chat(
        &server,
        json!({"conversation_id": "slow-1", "text": "Where is my order?"}),
    )
    .await;
    assert_eq!(got.status, 504, "{}", got.body);
    assert!(got.body["error"].is_string());
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    let body = wait_for(&server, "slow-1", Duration::from_secs(10), |b| {
        b["status"]["state"] == "awaiting_reply"
    })
    .await;
    assert_eq!(count(&body, "Answer to: Where is my order?"), 1, "{body}");
}

/// A turn outlives its request: when the turn timeout passes (or the
/// client hangs up) in the middle of an Api call, the turn goes on by itself
/// and its answer lands in the transcript. (An Api call, not a Delay: a
/// sleeping conversation would be resumed by the scheduler anyway.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_cut_off_in_an_api_call_goes_on_and_its_answer_lands_in_the_transcript() {
    let mock = mock(1).await;
    mock.push_fault(Endpoint::CreateRun, Fault::Delay(Duration::from_millis(800)));
    let dir = TempDir::new("cutoff");
    let server = Setup::memory(&mock, &dir)
        .env("CHATFLOW_TURN_TIMEOUT_SECS", "0.2")
        .start();

    let got = chat(
        &server,
        json!({"conversation_id": "cut-1", "text": "Where is my order?"}),
    )
    .await;
    assert_eq!(got.status, 504, "{}", got.body);

    let body = wait_for(&server, "cut-1", Duration::from_secs(10), |b| {
        b["status"]["state"] == "awaiting_reply"
    })
    .await;
    assert_eq!(count(&body, "Answer to: Where is my order?"), 1, "{body}");
}

/// A conversation parked waiting for the user survives a restart: state,
/// transcript, message ids and the assistant thread.
async fn restart_keeps_the_conversation(mock: &MockOpenAi, setup: &Setup<'_>) {
    let mut server = setup.start();
    let first = chat(
        &server,
        json!({"conversation_id": "s1", "text": "Where is my order?", "message_id": "m1"}),
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.body["handoff"], json!(false));
    // A clean stop: a SIGKILL could land while the scheduler holds the
    // conversation's lease for a pass, which would keep it from the next
    // process for the whole lease (5 min).
    server.signal("TERM");
    assert!(server.exit_status(Duration::from_secs(10)).await.success());

    let server = setup.start();
    let before = get(&server, "/conversations/s1").await;
    assert_eq!(before.status, 200);
    assert_eq!(before.body["status"]["state"], json!("awaiting_reply"));
    assert_eq!(transcript(&before.body).len(), 3);
    let again = chat(
        &server,
        json!({"conversation_id": "s1", "text": "Where is my order?", "message_id": "m1"}),
    )
    .await;
    assert_eq!(
        again.body["duplicate"],
        json!(true),
        "message ids are durable too"
    );

    let second = chat(
        &server,
        json!({"conversation_id": "s1", "text": "I want a human", "message_id": "m2"}),
    )
    .await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.body["handoff"], json!(true));
    assert_eq!(
        mock.threads_created(),
        1,
        "the second turn continues the same thread"
    );
    let after = get(&server, "/conversations/s1").await;
    assert_eq!(transcript(&after.body).len(), 6);
}

/// A conversation SIGKILLed while it sleeps in the poll Delay is resumed by
/// the next process's scheduler, and its answer lands exactly once. The mock's
/// runs complete at the third poll: the flow polls twice, then sleeps in "Wait"
/// (1 s in this copy of the flow).
async fn sigkill_while_asleep_then_resume(mock: &MockOpenAi, setup: &Setup<'_>) {
    let mut server = setup.start();
    let got = chat(
        &server,
        json!({"conversation_id": "k1", "text": "Where is my order?"}),
    )
    .await;
    assert_eq!(got.status, 504, "{}", got.body);
    let asleep = wait_for(&server, "k1", Duration::from_secs(5), |b| {
        b["status"]["state"] == "sleeping"
    })
    .await;
    // The state says "sleeping" a moment before the runner gives the lease
    // up (a second write); were the process killed in between, the next one
    // could not take the conversation before the lease (5 min) expired.
    tokio::time::sleep(Duration::from_millis(250)).await;
    server.kill();
    let killed_at_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let until_ms = asleep["status"]["until"].as_u64().unwrap();
    assert!(
        until_ms > killed_at_ms,
        "killed {} ms after the Delay ended: the test is too slow to mean anything",
        killed_at_ms - until_ms
    );
    assert_eq!(count(&asleep, "Answer to: Where is my order?"), 0);

    let started = Instant::now();
    let server = setup.start();
    let done = wait_for(&server, "k1", Duration::from_secs(10), |b| {
        b["status"]["state"] == "awaiting_reply"
    })
    .await;
    let resumed_after = started.elapsed();
    assert_eq!(count(&done, "Answer to: Where is my order?"), 1, "{done}");
    assert_eq!(count(&done, &step_text("Welcome")), 1, "{done}");
    // Nothing more comes later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = get(&server, "/conversations/k1").await;
    assert_eq!(transcript(&later.body), transcript(&done));
    assert_eq!(mock.threads_created(), 1);
    assert_eq!(mock.runs_created(), 1);
    eprintln!("resumed {resumed_after:?} after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_conversations_survive_a_restart() {
    let mock = mock(1).await;
    let dir = TempDir::new("sqlite");
    restart_keeps_the_conversation(&mock, &Setup::sqlite(&mock, &dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_conversation_asleep_at_sigkill_resumes_after_a_restart() {
    let mock = mock(3).await;
    let dir = TempDir::new("sigkill");
    let setup = Setup::sqlite(&mock, &dir)
        .flow(dir.flow_with_wait(1))
        .env("CHATFLOW_TURN_TIMEOUT_SECS", "0.2");
    sigkill_while_asleep_then_resume(&mock, &setup).await;
}

/// A schema of its own in the database `CHATFLOW_TEST_POSTGRES_URL` names
/// (the variable the store conformance tests use), dropped on drop.
struct PgSchema {
    admin_url: String,
    name: String,
    url: String,
}

impl PgSchema {
    async fn create() -> Option<PgSchema> {
        let url = match std::env::var("CHATFLOW_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => url,
            _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
                panic!("CI=true but CHATFLOW_TEST_POSTGRES_URL is not set: the Postgres store must be tested")
            }
            _ => {
                eprintln!(
                    "skipped: set CHATFLOW_TEST_POSTGRES_URL=postgres://… to run the server on Postgres"
                );
                return None;
            }
        };
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("chatflow_server_{}_{nanos}", std::process::id());
        run_sql(&url, &format!("CREATE SCHEMA {name}")).await;
        let separator = if url.contains('?') { '&' } else { '?' };
        let schema_url = format!("{url}{separator}options[search_path]={name}");
        Some(PgSchema {
            admin_url: url,
            name,
            url: schema_url,
        })
    }
}

async fn run_sql(url: &str, sql: &str) {
    use sqlx::Connection;
    let mut connection = sqlx::PgConnection::connect(url)
        .await
        .expect("cannot connect to CHATFLOW_TEST_POSTGRES_URL");
    sqlx::query(sql).execute(&mut connection).await.unwrap();
    let _ = connection.close().await;
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        // Also after a failure; on a thread of its own, as drop cannot await.
        let (url, sql) = (
            self.admin_url.clone(),
            format!("DROP SCHEMA {} CASCADE", self.name),
        );
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(run_sql(&url, &sql))
        })
        .join();
        if dropped.is_err() {
            eprintln!("could not drop the test schema {}", self.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_conversations_survive_a_restart() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let mock = mock(1).await;
    let dir = TempDir::new("postgres");
    let setup = Setup::memory(&mock, &dir).database(&schema.url);
    restart_keeps_the_conversation(&mock, &setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_conversation_asleep_at_sigkill_resumes_after_a_restart() {
    let Some(schema) = PgSchema::create().await else {
        return;
    };
    let mock = mock(3).await;
    let dir = TempDir::new("pg-sigkill");
    let setup = Setup::memory(&mock, &dir)
        .database(&schema.url)
        .flow(dir.flow_with_wait(1))
        .env("CHATFLOW_TURN_TIMEOUT_SECS", "0.2");
    sigkill_while_asleep_then_resume(&mock, &setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_turn_in_flight_finish_then_exits_0() {
    let mock = mock(3).await;
    let dir = TempDir::new("sigterm");
    let mut server = Setup::memory(&mock, &dir).flow(dir.flow_with_wait(1)).start();

    let url = server.url("/chat");
    let request = tokio::spawn(async move {
        answer(
            client()
                .post(url)
                .header("content-type", "application/json")
                .body(json!({"conversation_id": "g1", "text": "Where is my order?"}).to_string())
                .send()
                .await
                .unwrap(),
        )
        .await
    });
    wait_for(&server, "g1", Duration::from_secs(5), |b| {
        b["status"]["state"] == "sleeping"
    })
    .await;
    server.signal("TERM");

    let got = request.await.unwrap();
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(
        texts(&got.body["messages"]).last(),
        Some(&"Answer to: Where is my order?")
    );
    let status = server.exit_status(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_reach_an_open_event_stream_and_sigterm_ends_it_then_exits_0() {
    let mock = mock(1).await;
    let dir = TempDir::new("events");
    let mut server = Setup::memory(&mock, &dir).start();
    let mut events =
        super::sse_reader::EventReader::connect(&server.url("/conversations/sse-1/events")).await;

    let got = chat(
        &server,
        json!({"conversation_id": "sse-1", "text": "Where is my order?"}),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    for expected in texts(&got.body["messages"]) {
        let event = events.next().await.expect("the stream ended early");
        assert_eq!(event.data["text"], json!(expected));
    }

    // An open stream does not hold the graceful shutdown.
    let started = Instant::now();
    server.signal("TERM");
    assert_eq!(events.next().await, None);
    let status = server.exit_status(Duration::from_secs(5)).await;
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// The binary with nothing of the environment that could configure it.
fn bare_command(dir: &TempDir) -> Command {
    let mut command = Command::new(SERVER);
    for name in [
        "DATABASE_URL",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_ASSISTANT_ID",
        "OPENAI_MODEL",
        "OPENAI_INSTRUCTIONS",
        "CHATFLOW_API_TOKEN",
        "CHATFLOW_TURN_TIMEOUT_SECS",
        "CHATFLOW_SHUTDOWN_GRACE_SECS",
    ] {
        command.env_remove(name);
    }
    // Not the source tree: an installed binary has none to read a flow from.
    command.current_dir(dir.path()).stdin(Stdio::null());
    command
}

#[test]
fn help_lists_the_flags_and_the_variables() {
    let dir = TempDir::new("help");
    let output = bare_command(&dir).arg("--help").output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let help = String::from_utf8(output.stdout).unwrap();
    for expected in [
        "--flow",
        "--listen",
        "--handoff-marker",
        "DATABASE_URL",
        "CHATFLOW_TURN_TIMEOUT_SECS",
        "CHATFLOW_SHUTDOWN_GRACE_SECS",
        "CHATFLOW_API_TOKEN",
        "RUST_LOG",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_ASSISTANT_ID",
        "OPENAI_MODEL",
        "OPENAI_INSTRUCTIONS",
    ] {
        assert!(help.contains(expected), "no {expected} in\n{help}");
    }

    let output = bare_command(&dir).arg("--no-such-flag").output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--no-such-flag"));
}

#[test]
fn a_bad_store_url_exits_1_naming_it_without_its_password() {
    let dir = TempDir::new("bad-store");
    // (A store that fails to open is named by the same redaction, unit-tested
    // in the crate: a Postgres that does not answer takes the pool's whole
    // connect timeout.)
    let url = "mysql://bot:hunter2@db.example/chat";
    let output = bare_command(&dir)
        .args(["--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{url}: {output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bot:***@"), "{url}: {stderr}");
    assert!(
        !stderr.contains("hunter2"),
        "{url}: the password leaked: {stderr}"
    );
    assert!(output.stdout.is_empty(), "{url}: it never listened");
}

/// Starts `command`, returns it with the base URL it printed.
fn start_command(mut command: Command, log: &Path) -> Server {
    command.stdout(Stdio::piped()).stderr(File::create(log).unwrap());
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        for _ in lines {}
    });
    let mut server = Server {
        child,
        base: String::new(),
        log: log.to_path_buf(),
    };
    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Some(Ok(line))) => line,
        other => panic!("no listening line: {other:?}"),
    };
    let addr = line
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    server.base = format!("http://{addr}");
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_the_built_in_flow_talks_to_the_built_in_mock() {
    let dir = TempDir::new("defaults");
    let mut command = bare_command(&dir);
    // Flags beat variables; an empty variable counts as unset.
    command
        .args(["--listen", "127.0.0.1:0", "--database-url", "memory"])
        .env("DATABASE_URL", "mysql://not-this-one")
        .env("CHATFLOW_TURN_TIMEOUT_SECS", "")
        .env("RUST_LOG", "info");
    let mut server = start_command(command, &dir.path().join("server.log"));

    let got = chat(
        &server,
        json!({"conversation_id": "d1", "text": "Where is my order?"}),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let messages = texts(&got.body["messages"]);
    assert_eq!(messages.first(), Some(&step_text("Welcome").as_str()));
    assert_eq!(messages.len(), 2, "{}", got.body);
    assert!(
        server.logs().contains("OPENAI_API_KEY is not set"),
        "{}",
        server.logs()
    );
    assert!(
        !dir.path().join("chatflow.db").exists(),
        "--database-url memory was not used"
    );

    server.signal("INT");
    assert!(server.exit_status(Duration::from_secs(10)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handoff_marker_flag_sets_the_flows_marker() {
    let mock = mock(1).await;
    let dir = TempDir::new("marker");
    for (marker, handed_off) in [("connecting", true), ("no-such-marker", false)] {
        let mut command = bare_command(&dir);
        command
            .args(["--listen", "127.0.0.1:0", "--handoff-marker", marker])
            .env("DATABASE_URL", "memory")
            .env("OPENAI_API_KEY", mock.api_key())
            .env("OPENAI_BASE_URL", mock.base_url())
            .env("OPENAI_ASSISTANT_ID", mock.assistant_id());
        let server = start_command(command, &dir.path().join(format!("{marker}.log")));
        let got = chat(
            &server,
            json!({"conversation_id": "h1", "text": "I want a human"}),
        )
        .await;
        assert_eq!(got.status, 200, "{}", got.body);
        assert_eq!(got.body["handoff"], json!(handed_off), "{marker}: {}", got.body);
    }
}
