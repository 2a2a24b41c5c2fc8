//! What the WhatsApp channel costs on top of chatflow's own turns, on one
//! SQLite file (WAL), with an echo flow (a Question, then a Message looping
//! back to it: no OpenAI, so every figure is chatflow's own cost).
//!
//! One server (`chatflow::server::serve`: the routes, the scheduler and the
//! delivery worker) serves both `POST /chat` and the WhatsApp webhook
//! routes over the same store and flow, on loopback; its WhatsApp channel
//! sends through the crate's reqwest client to a fast in-process Graph API
//! stand-in (axum, answering every send at once with a `wamid`; not
//! `chatflow::mock::whatsapp`, which validates every body and is slower).
//! The load comes from the same process, with the same client concurrency
//! for each case:
//!
//! - `whatsapp/webhook_turn/C`: C conversations in parallel, each sending a
//!   signed text notification and waiting until the Graph stand-in has
//!   accepted the turn's replies ("You said …" and the next "Say
//!   something"; the mark-read call comes first), then the next. Turns/s,
//!   end to end, with the delivery worker running.
//! - `whatsapp/chat_turn/C`: the same turns through `POST /chat` (the reply
//!   is in the response). Turns/s. Target: webhook ≥ 0.8 × `/chat`.
//! - `whatsapp/intake/…`: signed notifications acknowledged (200) per
//!   second, one message each (`reaction`) or ten (`reaction_x10`):
//!   reactions are recorded exactly as a text is (signature, parsing, the
//!   seen id, the transcript entry, durable before the 200) but answer no
//!   Question, so no turn runs and nothing competes with the intake for the
//!   store; a text also takes an inbox row. Target ≥ 10,000 messages/s.
//!   `intake/text_with_turns` is the same for texts to new conversations,
//!   whose turns (and their sends) run meanwhile and compete: it runs last.
//!
//! `cargo bench --bench whatsapp` measures and prints, after criterion's
//! report, each case's turns or messages per second over all its runs
//! and the webhook ÷ `/chat` ratios. `cargo test --benches` runs each case
//! once, as a check.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chatflow::server::{ServerSettings, serve};
use chatflow::store::SqliteStore;
use chatflow::whatsapp::{WhatsAppChannel, WhatsAppSettings, sign};
use chatflow::{Engine, Flow, Runtime};
use criterion::{Criterion, Throughput, criterion_group};
use serde_json::{Value, json};
use tokio::sync::watch;

const ECHO_FLOW: &str = r#"{"name": "echo", "steps": [
  {"type": "question", "name": "Ask", "text": "Say something"},
  {"type": "message", "name": "Echo", "text": "You said <<step.Ask.response>>", "next": "Ask"}
]}"#;

const APP_SECRET: &str = "bench-app-secret";
const PHONE_NUMBER_ID: &str = "106540352242922";
/// Texts the Graph stand-in receives per turn after the first: the echo
/// and the next question.
const SENDS_PER_TURN: u64 = 2;
/// A conversation's first turn also asks the question before reading the
/// message.
const SENDS_FIRST_TURN: u64 = 3;
/// Client concurrencies of the turn cases.
const CONCURRENCY: [usize; 2] = [8, 32];
/// Client concurrency of the intake cases.
const INTAKE_CONCURRENCY: usize = 32;
/// How long one turn may take before the bench gives up (a lost reply).
const TURN_LIMIT: Duration = Duration::from_secs(30);

/// Unique message ids across the whole run.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// The fast Graph API stand-in: takes every send at once, counting the
/// texts each recipient got.
#[derive(Default)]
struct Graph {
    sent: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl Graph {
    fn counter(&self, to: &str) -> watch::Sender<u64> {
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        sent.entry(to.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .clone()
    }

    /// Waits until `to` has been sent at least `count` texts.
    async fn wait_for(&self, to: &str, count: u64) {
        let mut sent = self.counter(to).subscribe();
        let reached = tokio::time::timeout(TURN_LIMIT, sent.wait_for(|n| *n >= count)).await;
        assert!(
            matches!(reached, Ok(Ok(_))),
            "{to}: fewer than {count} texts reached the Graph stand-in within {TURN_LIMIT:?}"
        );
    }
}

/// `POST /v23.0/{phone-number-id}/messages`.
async fn graph_messages(State(graph): State<Arc<Graph>>, body: Bytes) -> Response {
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    if message["status"] == "read" {
        return axum::Json(json!({"success": true})).into_response();
    }
    let to = message["to"].as_str().unwrap_or_default().to_string();
    graph.counter(&to).send_modify(|n| *n += 1);
    axum::Json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": to}],
        "messages": [{"id": format!("wamid.out.{}", next_id())}]
    }))
    .into_response()
}

async fn listen(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path =
            std::env::temp_dir().join(format!("chatflow-bench-whatsapp-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The server under test, its Graph stand-in and a client.
struct Bench {
    base: String,
    graph: Arc<Graph>,
    client: reqwest::Client,
    _dir: TempDir,
}

impl Bench {
    async fn start() -> Bench {
        let dir = TempDir::new();
        let graph = Arc::new(Graph::default());
        let graph_addr = listen(
            Router::new()
                .route(
                    &format!("/v23.0/{PHONE_NUMBER_ID}/messages"),
                    post(graph_messages),
                )
                .with_state(graph.clone()),
        )
        .await;
        let settings = WhatsAppSettings::new("verify", APP_SECRET, "EAAG-bench-token", PHONE_NUMBER_ID)
            .with_graph_url(format!("http://{graph_addr}/v23.0"));
        let store = SqliteStore::connect(&format!("sqlite://{}", dir.0.join("bench.db").display()))
            .await
            .unwrap();
        let engine = Engine::builder(Flow::from_json(ECHO_FLOW).unwrap())
            .build()
            .unwrap();
        let channel = WhatsAppChannel::with_reqwest(settings.clone())
            .unwrap()
            .with_clock(engine.clock());
        let runtime = Runtime::builder(engine, Arc::new(store))
            .channel("whatsapp", Arc::new(channel))
            .build();
        let server_settings =
            ServerSettings::new().with_routes(chatflow::whatsapp::router(runtime.clone(), settings));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Served until the process exits.
        tokio::spawn(serve(listener, runtime, server_settings, std::future::pending()));
        Bench {
            base: format!("http://{addr}"),
            graph,
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .timeout(TURN_LIMIT)
                .build()
                .unwrap(),
            _dir: dir,
        }
    }

    /// POSTs a notification signed with the app secret; returns how many
    /// messages the 200 says were recorded.
    async fn notify(&self, notification: &Value) -> u64 {
        let raw = serde_json::to_vec(notification).unwrap();
        let response = self
            .client
            .post(format!("{}/webhooks/whatsapp", self.base))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sign(APP_SECRET, &raw))
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let applied: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        applied["messages"].as_u64().unwrap_or(0)
    }

    /// One turn through `POST /chat`; returns how many replies it got.
    async fn chat(&self, conversation_id: &str, text: &str) -> usize {
        let response = self
            .client
            .post(format!("{}/chat", self.base))
            .header("content-type", "application/json")
            .body(
                json!({"conversation_id": conversation_id, "text": text, "message_id": format!("m{}", next_id())})
                    .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        body["messages"].as_array().map_or(0, Vec::len)
    }
}

/// A notification from `wa_id` carrying `messages`.
fn notification(wa_id: &str, messages: Vec<Value>) -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA_ID", "changes": [{
        "field": "messages",
        "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": PHONE_NUMBER_ID},
            "contacts": [{"profile": {"name": "Ada"}, "wa_id": wa_id}],
            "messages": messages
        }
    }]}]})
}

fn text(wa_id: &str, body: &str) -> Value {
    json!({"from": wa_id, "id": format!("wamid.in.{}", next_id()), "timestamp": "1767225600",
           "type": "text", "text": {"body": body}})
}

fn reaction(wa_id: &str) -> Value {
    json!({"from": wa_id, "id": format!("wamid.in.{}", next_id()), "timestamp": "1767225600",
           "type": "reaction", "reaction": {"message_id": "wamid.out.1", "emoji": "👍"}})
}

/// One WhatsApp conversation of the turn case, with the texts it has been
/// sent so far.
struct WaConversation {
    wa_id: String,
    sent: u64,
}

impl WaConversation {
    /// One signed text in, its replies accepted by the Graph stand-in.
    async fn turn(&mut self, bench: &Bench, first: bool) {
        let recorded = bench
            .notify(&notification(&self.wa_id, vec![text(&self.wa_id, "hello")]))
            .await;
        assert_eq!(recorded, 1);
        self.sent += if first { SENDS_FIRST_TURN } else { SENDS_PER_TURN };
        bench.graph.wait_for(&self.wa_id, self.sent).await;
    }
}

/// Figures over all of a case's runs (warm-up included): (units, time).
fn totals() -> &'static Mutex<Vec<(String, u64, Duration)>> {
    static TOTALS: OnceLock<Mutex<Vec<(String, u64, Duration)>>> = OnceLock::new();
    TOTALS.get_or_init(Mutex::default)
}

fn record(case: &str, units: u64, took: Duration) {
    let mut totals = totals().lock().unwrap();
    match totals.iter_mut().find(|(name, _, _)| name == case) {
        Some((_, n, t)) => {
            *n += units;
            *t += took;
        }
        None => totals.push((case.to_string(), units, took)),
    }
}

/// `iters` units of work split over `workers` in parallel: worker `w` runs
/// `work(w, its share)`.
async fn split<F, Fut>(iters: u64, workers: usize, work: F) -> Duration
where
    F: Fn(usize, u64) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let workers_u64 = workers as u64;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..workers {
        let share = iters / workers_u64 + u64::from((w as u64) < iters % workers_u64);
        if share > 0 {
            tasks.spawn(work(w, share));
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    started.elapsed()
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The load's runtime, for every case: the client's pooled connections
/// live on it.
fn load() -> &'static tokio::runtime::Runtime {
    static LOAD: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    LOAD.get_or_init(tokio_runtime)
}

fn bench() -> &'static Arc<Bench> {
    static BENCH: OnceLock<Arc<Bench>> = OnceLock::new();
    BENCH.get_or_init(|| {
        let started = std::sync::mpsc::channel();
        // The server and the stand-in live on this runtime, for the whole run.
        std::thread::spawn(move || {
            let runtime = tokio_runtime();
            let bench = Arc::new(runtime.block_on(Bench::start()));
            started.0.send(bench).unwrap();
            runtime.block_on(std::future::pending::<()>());
        });
        started.1.recv().unwrap()
    })
}

fn turns(c: &mut Criterion) {
    let (bench, load) = (bench(), load());
    let mut group = c.benchmark_group("whatsapp");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    for concurrency in CONCURRENCY {
        // Conversations started before measuring: their first turn differs.
        let conversations: Vec<Arc<tokio::sync::Mutex<WaConversation>>> = load.block_on(async {
            let mut conversations = Vec::new();
            for i in 0..concurrency {
                let mut conversation = WaConversation {
                    wa_id: format!("1555{concurrency:02}{i:05}"),
                    sent: 0,
                };
                conversation.turn(bench, true).await;
                conversations.push(Arc::new(tokio::sync::Mutex::new(conversation)));
            }
            conversations
        });
        let case = format!("webhook_turn/{concurrency}");
        group.bench_function(&case, |b| {
            b.to_async(load).iter_custom(|iters| {
                let conversations = conversations.clone();
                let case = case.clone();
                async move {
                    let took = split(iters, concurrency, |w, share| {
                        let conversation = conversations[w].clone();
                        async move {
                            let mut conversation = conversation.lock().await;
                            for _ in 0..share {
                                conversation.turn(bench, false).await;
                            }
                        }
                    })
                    .await;
                    record(&case, iters, took);
                    took
                }
            });
        });

        let ids: Vec<String> = (0..concurrency)
            .map(|i| format!("chat-{concurrency}-{i}"))
            .collect();
        load.block_on(async {
            for id in &ids {
                assert_eq!(bench.chat(id, "hello").await, SENDS_FIRST_TURN as usize);
            }
        });
        let case = format!("chat_turn/{concurrency}");
        group.bench_function(&case, |b| {
            b.to_async(load).iter_custom(|iters| {
                let ids = ids.clone();
                let case = case.clone();
                async move {
                    let took = split(iters, concurrency, |w, share| {
                        let id = ids[w].clone();
                        async move {
                            for _ in 0..share {
                                assert_eq!(bench.chat(&id, "hello").await, SENDS_PER_TURN as usize);
                            }
                        }
                    })
                    .await;
                    record(&case, iters, took);
                    took
                }
            });
        });
    }
    group.finish();
}

/// Signed notifications of `per_post` messages each, from 1,000 contacts
/// in turn, acknowledged per second.
fn intake_case(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    load: &tokio::runtime::Runtime,
    case: &str,
    per_post: u64,
    message: fn(&str) -> Value,
) {
    let bench = bench();
    group.throughput(Throughput::Elements(per_post));
    group.bench_function(case, |b| {
        b.to_async(load).iter_custom(|iters| async move {
            let took = split(iters, INTAKE_CONCURRENCY, |_, share| async move {
                for _ in 0..share {
                    let wa_id = format!("1666{:07}", next_id() % 1000);
                    let messages = (0..per_post).map(|_| message(&wa_id)).collect();
                    assert_eq!(bench.notify(&notification(&wa_id, messages)).await, per_post);
                }
            })
            .await;
            record(case, iters * per_post, took);
            took
        });
    });
}

fn intake(c: &mut Criterion) {
    let load = load();
    let mut group = c.benchmark_group("whatsapp/intake");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    intake_case(&mut group, load, "reaction", 1, reaction);
    intake_case(&mut group, load, "reaction_x10", 10, reaction);
    // Last: the turns it spawns outlive it.
    intake_case(&mut group, load, "text_with_turns", 1, |_| {
        let wa_id = format!("1777{:07}", next_id());
        text(&wa_id, "hello")
    });
    group.finish();
}

criterion_group!(benches, turns, intake);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let totals = totals().lock().unwrap();
    let rate = |case: &str| {
        totals
            .iter()
            .find(|(name, _, _)| name == case)
            .map(|(_, n, t)| *n as f64 / t.as_secs_f64().max(f64::EPSILON))
    };
    println!("\nover all runs of each case (warm-up included):");
    for (case, n, t) in totals.iter() {
        println!(
            "  {case:<28} {:>10.0} /s  ({n} in {:.2} s)",
            *n as f64 / t.as_secs_f64(),
            t.as_secs_f64()
        );
    }
    for concurrency in CONCURRENCY {
        if let (Some(webhook), Some(chat)) = (
            rate(&format!("webhook_turn/{concurrency}")),
            rate(&format!("chat_turn/{concurrency}")),
        ) {
            println!(
                "  webhook ÷ /chat at C = {concurrency}: {:.2} (target ≥ 0.80)",
                webhook / chat
            );
        }
    }
}
