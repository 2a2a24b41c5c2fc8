//! The `chatflow-server` binary on a SQLite file with WhatsApp on, SIGKILLed
//! while replies are on their way to the Graph API, then restarted on the
//! same file: every reply reaches the Graph API stand-in, in order, and a
//! reply goes twice only when the process died between the send and its
//! record — at most once more per entry in flight at the kill, as
//! `chatflow::channel` states.
//!
//! - A kill between the webhook's 200 and the reply's send: the stand-in
//!   holds every request (the first call of a delivery is the mark-read,
//!   before any text), and some conversations are killed right after their
//!   200, their turns possibly not run. No text reached the stand-in before
//!   the kill; after the restart each reply arrives exactly once.
//! - A kill between the send and its record: the stand-in has received each
//!   conversation's first text and holds its response. After the restart
//!   that text is sent again (once: the duplicates are counted), the
//!   others once.
//!
//! The dead server's leases — a conversation's turn lease (5 minutes) and
//! its delivery lease (60 s); the binary has no setting for either — are
//! ended between the kill and the restart by taking each over through the
//! store's own operations as of an hour later and giving it up: what
//! waiting them out would do, without the wait. Everything runs on
//! loopback; the only real waits are the processes' start and the
//! deliveries themselves (polled every 10 ms, bounded).
#![cfg(all(feature = "cli", feature = "whatsapp", feature = "sqlite"))]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chatflow::channel::DeliveryStatus;
use chatflow::store::{Direction, SqliteStore, Store};
use chatflow::whatsapp::sign;
use serde_json::{Value, json};

const SERVER: &str = env!("CARGO_BIN_EXE_chatflow-server");
const VERIFY_TOKEN: &str = "verify-kill";
const APP_SECRET: &str = "app-secret-kill";
const ACCESS_TOKEN: &str = "EAAG-kill-token";
const PHONE_NUMBER_ID: &str = "106540352242922";
/// How long any one wait of these tests may take.
const LIMIT: Duration = Duration::from_secs(10);

const ECHO_FLOW: &str = r#"{"name": "echo", "steps": [
  {"type": "question", "name": "Ask", "text": "Say something"},
  {"type": "message", "name": "Echo", "text": "You said <<step.Ask.response>>", "next": "Ask"}
]}"#;

/// What a conversation's first message `text` is answered with, in order.
fn replies_to_first(text: &str) -> Vec<String> {
    vec![
        "Say something".to_string(),
        format!("You said {text}"),
        "Say something".to_string(),
    ]
}

/// How the Graph API stand-in answers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Mode {
    /// Every request at once.
    Answer = 0,
    /// No request, ever (the mark-read that starts a delivery included).
    HoldAll = 1,
    /// Mark-reads at once; texts are recorded, then never answered.
    HoldTexts = 2,
}

/// The Graph API stand-in: records every text it receives (answered or
/// not), by recipient.
#[derive(Default)]
struct Graph {
    mode: AtomicU8,
    /// (recipient, text) in the order received.
    texts: Mutex<Vec<(String, String)>>,
    /// Requests received and not answered.
    held: Mutex<u64>,
}

impl Graph {
    fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            1 => Mode::HoldAll,
            2 => Mode::HoldTexts,
            _ => Mode::Answer,
        }
    }

    fn texts(&self) -> Vec<(String, String)> {
        self.texts.lock().unwrap().clone()
    }

    /// What `wa_id` was sent, in order.
    fn texts_to(&self, wa_id: &str) -> Vec<String> {
        self.texts()
            .into_iter()
            .filter(|(to, _)| to == wa_id)
            .map(|(_, text)| text)
            .collect()
    }

    fn held(&self) -> u64 {
        *self.held.lock().unwrap()
    }

    /// Waits until `count` requests are held.
    async fn wait_held(&self, count: u64) {
        let deadline = Instant::now() + LIMIT;
        while self.held() < count {
            assert!(
                Instant::now() < deadline,
                "{} requests held, not {count}",
                self.held()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// `POST /v23.0/{phone-number-id}/messages`.
async fn graph_messages(State(graph): State<Arc<Graph>>, body: Bytes) -> Response {
    let message: Value = serde_json::from_slice(&body).unwrap_or_default();
    let read = message["status"] == "read";
    let mode = graph.mode();
    if !read {
        let to = message["to"].as_str().unwrap_or_default().to_string();
        let text = message["text"]["body"].as_str().unwrap_or_default().to_string();
        graph.texts.lock().unwrap().push((to, text));
    }
    if mode == Mode::HoldAll || (mode == Mode::HoldTexts && !read) {
        *graph.held.lock().unwrap() += 1;
        // Until the server under test dies and the connection with it.
        std::future::pending::<()>().await;
    }
    if read {
        return axum::Json(json!({"success": true})).into_response();
    }
    let n = graph.texts.lock().unwrap().len();
    axum::Json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": message["to"], "wa_id": message["to"]}],
        "messages": [{"id": format!("wamid.out.{n}")}]
    }))
    .into_response()
}

async fn start_graph() -> (Arc<Graph>, SocketAddr) {
    let graph = Arc::new(Graph::default());
    let app = Router::new()
        .route(
            &format!("/v23.0/{PHONE_NUMBER_ID}/messages"),
            post(graph_messages),
        )
        .with_state(graph.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (graph, addr)
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = std::env::temp_dir().join(format!("chatflow-kill-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn database_url(&self) -> String {
        format!("sqlite://{}", self.0.join("chatflow.db").display())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `chatflow-server`: SIGKILLed on drop, its log printed when the
/// test failed.
struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Server {
    /// The binary on the directory's SQLite file and the echo flow, with
    /// WhatsApp sending to the stand-in at `graph`.
    fn start(dir: &TempDir, graph: SocketAddr) -> Server {
        let flow = dir.path().join("echo.json");
        std::fs::write(&flow, ECHO_FLOW).unwrap();
        let starts = std::fs::read_dir(dir.path()).unwrap().count();
        let log = dir.path().join(format!("server-{starts}.log"));
        let mut command = Command::new(SERVER);
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy().into_owned();
            if name.starts_with("WHATSAPP_")
                || name.starts_with("OPENAI_")
                || name.starts_with("CHATFLOW_")
                || name == "DATABASE_URL"
            {
                command.env_remove(name);
            }
        }
        command
            .args(["--listen", "127.0.0.1:0", "--flow"])
            .arg(&flow)
            .env("DATABASE_URL", dir.database_url())
            .env("WHATSAPP_VERIFY_TOKEN", VERIFY_TOKEN)
            .env("WHATSAPP_APP_SECRET", APP_SECRET)
            .env("WHATSAPP_ACCESS_TOKEN", ACCESS_TOKEN)
            .env("WHATSAPP_PHONE_NUMBER_ID", PHONE_NUMBER_ID)
            .env("WHATSAPP_GRAPH_URL", format!("http://{graph}/v23.0"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap());
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
            log,
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

    /// SIGKILL, and reap.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// POSTs a signed notification of one text from `wa_id`; asserts the
    /// 200 recorded it.
    async fn text(&self, wa_id: &str, wamid: &str, body: &str) {
        let notification = json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA_ID", "changes": [{
            "field": "messages",
            "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550001111", "phone_number_id": PHONE_NUMBER_ID},
                "contacts": [{"profile": {"name": "Ada"}, "wa_id": wa_id}],
                "messages": [{"from": wa_id, "id": wamid, "timestamp": "1767225600",
                              "type": "text", "text": {"body": body}}]
            }
        }]}]});
        let raw = serde_json::to_vec(&notification).unwrap();
        let response = reqwest::Client::new()
            .post(format!("{}/webhooks/whatsapp", self.base))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sign(APP_SECRET, &raw))
            .body(raw)
            .timeout(LIMIT)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let applied: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!(applied["messages"], 1, "{applied}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- chatflow-server log ({}) ---\n{}",
                self.base,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

fn wa_id(i: usize) -> String {
    format!("1555000{i:04}")
}

/// Ends the dead server's turn and delivery leases on `conversations` (see
/// the module's docs), with the server down.
async fn end_dead_leases(dir: &TempDir, conversations: &[String]) {
    const OWNER: &str = "lease-expiry";
    let store = SqliteStore::connect(&dir.database_url()).await.unwrap();
    let later = SystemTime::now() + Duration::from_secs(3600);
    for id in conversations {
        if store.acquire(id, OWNER, later, later).await.unwrap().is_some() {
            store.release(id, OWNER).await.unwrap();
        }
    }
    for pending in store
        .claim_deliveries(OWNER, later, later, conversations.len())
        .await
        .unwrap()
    {
        store
            .release_deliveries(&pending.conversation_id, OWNER)
            .await
            .unwrap();
    }
}

/// The bot's entries of each of `conversations`, once each has at least
/// `entries` of them (its turn has committed), and when `accepted`, all
/// recorded as accepted by the channel (then nothing more goes out).
async fn wait_out_entries(
    dir: &TempDir,
    conversations: &[String],
    entries: usize,
    accepted: bool,
) -> Vec<Vec<String>> {
    let store = SqliteStore::connect(&dir.database_url()).await.unwrap();
    let deadline = Instant::now() + LIMIT;
    'poll: loop {
        assert!(
            Instant::now() < deadline,
            "fewer than {entries} replies{} after {LIMIT:?}",
            if accepted { " accepted" } else { "" }
        );
        let mut all = Vec::new();
        for id in conversations {
            let out: Vec<_> = store
                .transcript(id, 0)
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.direction == Direction::Out)
                .collect();
            let done = out.len() >= entries
                && (!accepted
                    || out.iter().all(|e| {
                        e.delivery
                            .as_ref()
                            .is_some_and(|d| d.status == DeliveryStatus::Accepted)
                    }));
            if !done {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue 'poll;
            }
            all.push(out.into_iter().map(|e| e.text).collect());
        }
        return all;
    }
}

/// Waits until every bot entry of `conversations` is recorded as accepted,
/// at least `entries` each; returns their texts.
async fn wait_all_accepted(dir: &TempDir, conversations: &[String], entries: usize) -> Vec<Vec<String>> {
    wait_out_entries(dir, conversations, entries, true).await
}

fn conversation_ids(all: &[usize]) -> Vec<String> {
    all.iter().map(|&i| format!("whatsapp:{}", wa_id(i))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_the_webhooks_200_and_the_send_every_reply_arrives_once() {
    let dir = TempDir::new("before-send");
    let (graph, graph_addr) = start_graph().await;
    graph.set_mode(Mode::HoldAll);
    let mut server = Server::start(&dir, graph_addr);

    // Conversations 0..4: their turns have committed and a delivery has
    // begun (its mark-read is held): the replies are in the outbox, unsent.
    let ran: Vec<usize> = (0..4).collect();
    for &i in &ran {
        server
            .text(&wa_id(i), &format!("wamid.in.{i}"), &format!("hello {i}"))
            .await;
    }
    wait_out_entries(&dir, &conversation_ids(&ran), 3, false).await;
    graph.wait_held(1).await;
    // Conversations 4..8: killed right after their 200s, their turns run
    // or not.
    let fresh: Vec<usize> = (4..8).collect();
    let posts = fresh.iter().map(|&i| {
        let (wa_id, wamid, text) = (wa_id(i), format!("wamid.in.{i}"), format!("hello {i}"));
        let server = &server;
        async move { server.text(&wa_id, &wamid, &text).await }
    });
    futures_util::future::join_all(posts).await;
    server.kill();

    let all: Vec<usize> = ran.iter().chain(&fresh).copied().collect();
    let conversations = conversation_ids(&all);
    end_dead_leases(&dir, &conversations).await;
    graph.set_mode(Mode::Answer);
    assert!(graph.texts().is_empty(), "no text went out before the restart");
    let _server = Server::start(&dir, graph_addr);

    let transcripts = wait_all_accepted(&dir, &conversations, 3).await;
    for (&i, transcript) in all.iter().zip(&transcripts) {
        let expected = replies_to_first(&format!("hello {i}"));
        assert_eq!(*transcript, expected, "conversation {i}'s transcript");
        assert_eq!(
            graph.texts_to(&wa_id(i)),
            expected,
            "conversation {i}: each reply once, in order"
        );
    }
    assert_eq!(graph.texts().len(), 3 * all.len(), "no duplicate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_the_send_and_its_record_the_send_is_repeated_at_most_once() {
    let dir = TempDir::new("after-send");
    let (graph, graph_addr) = start_graph().await;
    graph.set_mode(Mode::HoldTexts);
    let mut server = Server::start(&dir, graph_addr);

    let all: Vec<usize> = (0..6).collect();
    let conversations = conversation_ids(&all);
    for &i in &all {
        server
            .text(&wa_id(i), &format!("wamid.in.{i}"), &format!("hello {i}"))
            .await;
    }
    // Every turn has committed its three replies, and a reply has reached
    // the Graph API, whose answer is held: an entry in flight.
    wait_out_entries(&dir, &conversations, 3, false).await;
    graph.wait_held(1).await;
    server.kill();
    end_dead_leases(&dir, &conversations).await;
    graph.set_mode(Mode::Answer);
    // What reached the Graph API from the dead server: the entries in
    // flight, each a conversation's first reply (entries go in order, and
    // none was answered).
    let in_flight: Vec<(String, String)> = graph.texts();
    assert!(!in_flight.is_empty());
    let _server = Server::start(&dir, graph_addr);

    let transcripts = wait_all_accepted(&dir, &conversations, 3).await;
    let mut duplicates = 0;
    for (&i, transcript) in all.iter().zip(&transcripts) {
        let expected = replies_to_first(&format!("hello {i}"));
        assert_eq!(*transcript, expected, "conversation {i}'s transcript");
        let before: Vec<String> = in_flight
            .iter()
            .filter(|(to, _)| *to == wa_id(i))
            .map(|(_, text)| text.clone())
            .collect();
        assert!(
            before.len() <= 1 && before.iter().all(|t| *t == expected[0]),
            "conversation {i}: {before:?}"
        );
        // The entry in flight at the kill went again; then the rest, once
        // each, in order.
        let got = graph.texts_to(&wa_id(i));
        assert_eq!(
            got,
            [before.clone(), expected.clone()].concat(),
            "conversation {i}"
        );
        duplicates += before.len();
    }
    eprintln!(
        "{duplicates} duplicate send(s) for {} entries in flight at the kill",
        in_flight.len()
    );
    assert!(duplicates <= in_flight.len());
    assert_eq!(graph.texts().len(), 3 * all.len() + duplicates);
}

/// Found while writing these tests: a delivery worker that waited for every
/// conversation of its pass before claiming again let one send the Graph
/// API holds (up to the channel's 20 s timeout) hold every other
/// conversation's replies. `run_deliveries` now keeps conversations in
/// flight independently, as the scheduler does with turns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_held_send_does_not_hold_other_conversations_replies() {
    let dir = TempDir::new("head-of-line");
    let (graph, graph_addr) = start_graph().await;
    graph.set_mode(Mode::HoldTexts);
    let server = Server::start(&dir, graph_addr);
    let all: Vec<usize> = (0..4).collect();
    for &i in &all {
        server
            .text(&wa_id(i), &format!("wamid.in.{i}"), &format!("hello {i}"))
            .await;
    }
    // Each conversation's first reply reaches the Graph API, though none
    // is answered.
    graph.wait_held(all.len() as u64).await;
}
