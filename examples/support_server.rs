//! An HTTP support-bot server: a chatflow flow behind `POST /chat`, with a
//! durable store, the Delay scheduler, Prometheus metrics and graceful
//! shutdown.
//!
//! ```sh
//! cargo run --example support_server                    # built-in mock assistant, SQLite file ./chatflow.db
//! DATABASE_URL=memory cargo run --example support_server -- --listen 127.0.0.1:8099
//! curl -s localhost:8099/chat -H 'content-type: application/json' \
//!      -d '{"conversation_id": "c1", "text": "Where is my order?"}'
//! ```
//!
//! Endpoints:
//!
//! - `POST /chat` with `{"conversation_id", "text", "message_id"?}` answers,
//!   when the bot next waits for the user, hands off or ends,
//!   `200 {"conversation_id", "messages", "reply", "handoff", "status"}`; a
//!   repeated `message_id` answers `200 {"duplicate": true, "messages": []}`.
//!   Errors are `{"error": reason}`: 400 for a malformed body, a bad
//!   conversation id or a text over the engine's `max_reply_bytes`; 401
//!   without the bearer token; 502 when an API refused a call and the
//!   conversation failed; 504 when no answer came within the turn timeout
//!   (the turn goes on in the background and its answer lands in the
//!   transcript).
//! - `GET /conversations/{id}`: `{"conversation_id", "status", "transcript"}` (404 when unknown).
//! - `GET /healthz`: `ok`. `GET /metrics`: Prometheus text.
//!
//! Environment: `DATABASE_URL` (`sqlite://FILE` — default
//! `sqlite://chatflow.db` —, `postgres://…` or `memory`),
//! `CHATFLOW_TURN_TIMEOUT_SECS` (default 60), `CHATFLOW_API_TOKEN` (when set,
//! `/chat` and `/conversations` need `Authorization: Bearer <token>`),
//! `CHATFLOW_SHUTDOWN_GRACE_SECS` (how long a shutdown waits for turns still
//! running, default 30), `RUST_LOG` (default `info`), and the OpenAI
//! variables of the `support_bot` example: `OPENAI_API_KEY` (without it the
//! built-in mock answers), `OPENAI_BASE_URL`, `OPENAI_ASSISTANT_ID`,
//! `OPENAI_MODEL`, `OPENAI_INSTRUCTIONS`. Arguments: `--flow PATH`,
//! `--listen ADDR` (default `127.0.0.1:8080`; port 0 picks a free port; the
//! bound address is printed on stdout as `listening on http://ADDR`),
//! `--handoff-marker TEXT`.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chatflow::http::{HttpClient, HttpError, HttpRequest, HttpResponse, ReqwestClient};
use chatflow::store::{Direction, MemoryStore, PostgresStore, SqliteStore, Store};
use chatflow::{Engine, Flow, Runtime, RuntimeError, Status, Turn};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

mod common;
use common::env;

const DEFAULT_FLOW: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/flows/openai_assistant.json");
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_DATABASE_URL: &str = "sqlite://chatflow.db";
const DEFAULT_TURN_TIMEOUT_SECS: f64 = 60.0;
const DEFAULT_SHUTDOWN_GRACE_SECS: f64 = 30.0;
const MAX_CONVERSATION_ID_BYTES: usize = 128;
const MAX_MESSAGE_ID_BYTES: usize = 256;
const USAGE: &str = "usage: support_server [--flow PATH] [--listen ADDR] [--handoff-marker TEXT]\n\
     env: DATABASE_URL (sqlite://FILE | postgres://... | memory), CHATFLOW_TURN_TIMEOUT_SECS, \
     CHATFLOW_API_TOKEN, CHATFLOW_SHUTDOWN_GRACE_SECS, RUST_LOG, OPENAI_API_KEY, OPENAI_BASE_URL, \
     OPENAI_ASSISTANT_ID, OPENAI_MODEL, OPENAI_INSTRUCTIONS";

/// Histogram buckets, in seconds, for turn and API call latencies.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

struct Args {
    flow: String,
    listen: String,
    handoff_marker: Option<String>,
}

/// The arguments; `None` for `--help`.
fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        flow: DEFAULT_FLOW.to_string(),
        listen: DEFAULT_LISTEN.to_string(),
        handoff_marker: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--flow" => args.flow = it.next().ok_or("--flow needs a path")?,
            "--listen" => args.listen = it.next().ok_or("--listen needs an address")?,
            "--handoff-marker" => {
                args.handoff_marker = Some(it.next().ok_or("--handoff-marker needs a text")?)
            }
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument `{other}` (try --help)")),
        }
    }
    Ok(Some(args))
}

/// A duration in (fractional) seconds from the environment.
fn env_seconds(name: &str, default: f64) -> Result<Duration, String> {
    let Some(raw) = env(name) else {
        return Ok(Duration::from_secs_f64(default));
    };
    raw.trim()
        .parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("{name} must be a number of seconds, not `{raw}`"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("support_server: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let Some(args) = parse_args()? else {
        println!("{USAGE}");
        return Ok(());
    };
    let turn_timeout = env_seconds("CHATFLOW_TURN_TIMEOUT_SECS", DEFAULT_TURN_TIMEOUT_SECS)?;
    let shutdown_grace = env_seconds("CHATFLOW_SHUTDOWN_GRACE_SECS", DEFAULT_SHUTDOWN_GRACE_SECS)?;
    let api_token = env("CHATFLOW_API_TOKEN");

    let metrics = install_metrics()?;

    let flow = Flow::from_path(&args.flow).map_err(|e| e.to_string())?;
    let http = ReqwestClient::new().map_err(|e| format!("HTTP client: {e}"))?;
    let builder = Engine::builder(flow.clone()).http_client(MetricsClient(http));

    // Without a key, the built-in mock answers; it lives as long as `_mock`.
    let (builder, _mock) = common::configure_openai(builder, "support_server", args.handoff_marker).await;
    let engine = builder.build().map_err(|e| common::explain_missing(e, &flow))?;

    let database_url = env("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string());
    let store = open_store(&database_url).await?;
    let runtime = Runtime::new(engine, store);

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr: SocketAddr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;

    let app = Arc::new(App {
        runtime: runtime.clone(),
        metrics,
        turn_timeout,
        api_token,
        in_flight: Arc::new(InFlight::default()),
    });
    let router = router(app.clone());

    // Signals are counted: the first stops the server and the scheduler, a
    // second stops waiting for turns. Listening starts before the address is
    // announced, so a signal can never find the default handler.
    let mut signals = Signals::install();
    let (signal_tx, signal_rx) = watch::channel(0u32);
    tokio::spawn(async move {
        for n in 1..=2 {
            signals.recv().await;
            if n == 1 {
                tracing::info!("shutting down: no new connections; finishing the requests in flight");
            }
            let _ = signal_tx.send(n);
        }
    });
    let shutdown_rx = signal_rx.clone();
    let scheduler = tokio::spawn({
        let runtime = runtime.clone();
        let shutdown = shutdown_rx.clone();
        async move { runtime.run_scheduler(signalled(shutdown, 1)).await }
    });
    let upkeep = tokio::spawn({
        let handle = app.metrics.clone();
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                every.tick().await;
                handle.run_upkeep();
            }
        }
    });

    tracing::info!(
        flow = flow.name(),
        flow_hash = flow.hash(),
        store = store_kind(&database_url),
        turn_timeout_secs = turn_timeout.as_secs_f64(),
        auth = app.api_token.is_some(),
        "serving"
    );
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}").map_err(|e| format!("stdout: {e}"))?;
        out.flush().map_err(|e| format!("stdout: {e}"))?;
    }

    let served = axum::serve(listener, router)
        .with_graceful_shutdown(signalled(shutdown_rx.clone(), 1))
        .await;
    if let Err(e) = scheduler.await {
        tracing::warn!(error = %e, "the scheduler stopped abnormally");
    }
    // Turns whose requests timed out may still run: give them time to reach
    // a save point. A second signal stops waiting.
    let unfinished = tokio::select! {
        n = app.in_flight.wait_idle(shutdown_grace) => n,
        () = signalled(shutdown_rx, 2) => app.in_flight.count(),
    };
    if unfinished > 0 {
        tracing::warn!(
            unfinished,
            "turns still running at exit; a durable store resumes them on the next start"
        );
    }
    upkeep.abort();
    served.map_err(|e| format!("server error: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes once `n` signals came (or the signal task is gone).
async fn signalled(mut rx: watch::Receiver<u32>, n: u32) {
    let _ = rx.wait_for(|count| *count >= n).await;
}

/// SIGTERM and SIGINT (Ctrl-C), listened for from creation on.
struct Signals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |name: &str, kind: SignalKind| {
                signal(kind)
                    .map_err(|e| tracing::warn!(error = %e, "cannot listen for {name}"))
                    .ok()
            };
            Signals {
                terminate: listen("SIGTERM", SignalKind::terminate()),
                interrupt: listen("SIGINT", SignalKind::interrupt()),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next signal.
    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = next(&mut self.terminate) => {}
                () = next(&mut self.interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    }
}

// ---------------------------------------------------------------------------
// Store

async fn open_store(url: &str) -> Result<Arc<dyn Store>, String> {
    match store_kind(url) {
        "memory" => Ok(Arc::new(MemoryStore::new())),
        "sqlite" => SqliteStore::connect(url)
            .await
            .map(|s| Arc::new(s) as Arc<dyn Store>)
            .map_err(|e| format!("cannot open the SQLite store {}: {e}", redact_url(url))),
        "postgres" => PostgresStore::connect(url)
            .await
            .map(|s| Arc::new(s) as Arc<dyn Store>)
            .map_err(|e| format!("cannot open the Postgres store {}: {e}", redact_url(url))),
        _ => Err(format!(
            "DATABASE_URL `{}` is not sqlite://…, postgres://… or memory",
            redact_url(url)
        )),
    }
}

fn store_kind(url: &str) -> &'static str {
    if url == "memory" || url == "memory://" {
        "memory"
    } else if url.starts_with("sqlite:") {
        "sqlite"
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        "postgres"
    } else {
        "unknown"
    }
}

/// The URL with any password replaced by `***`, for messages.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => url.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Metrics

fn install_metrics() -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)
        .and_then(|b| b.install_recorder())
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    metrics::describe_counter!(
        "chatflow_turns_total",
        "Turns run to completion, by the status they left"
    );
    metrics::describe_histogram!(
        "chatflow_turn_seconds",
        metrics::Unit::Seconds,
        "Time from receiving a message to the bot waiting, handing off or ending"
    );
    metrics::describe_counter!("chatflow_messages_total", "Transcript entries, by direction");
    metrics::describe_counter!(
        "chatflow_duplicates_total",
        "Messages ignored as repeats of a message_id"
    );
    metrics::describe_counter!(
        "chatflow_chat_requests_total",
        "POST /chat answers, by HTTP status"
    );
    metrics::describe_gauge!("chatflow_turns_in_flight", "Turns running now");
    metrics::describe_counter!("chatflow_steps_total", "Flow steps run by this process");
    metrics::describe_gauge!(
        "chatflow_conversations",
        "Stored conversations: sleeping in a Delay, or parked (waiting for the user, handed off, ended)"
    );
    metrics::describe_counter!(
        "chatflow_api_calls_total",
        "Api step requests, by HTTP status or error kind"
    );
    metrics::describe_histogram!(
        "chatflow_api_seconds",
        metrics::Unit::Seconds,
        "Api step request latency, by HTTP status or error kind"
    );
    metrics::describe_gauge!(
        "chatflow_start_time_seconds",
        "When the server started, Unix seconds"
    );
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    metrics::gauge!("chatflow_start_time_seconds").set(started);
    metrics::gauge!("chatflow_turns_in_flight").set(0.0);
    Ok(handle)
}

/// The engine's HTTP client, counting and timing every Api call.
struct MetricsClient(ReqwestClient);

#[async_trait]
impl HttpClient for MetricsClient {
    async fn send(&self, request: &HttpRequest) -> Result<HttpResponse, HttpError> {
        let started = Instant::now();
        let result = self.0.send(request).await;
        let (seconds, calls) = match &result {
            Ok(response) => API_BY_STATUS.get(response.status()),
            Err(error) => api_metrics(error.kind().to_string()),
        };
        seconds.record(started.elapsed().as_secs_f64());
        calls.increment(1);
        result
    }
}

fn api_metrics(status: String) -> (metrics::Histogram, metrics::Counter) {
    (
        metrics::histogram!("chatflow_api_seconds", "status" => status.clone()),
        metrics::counter!("chatflow_api_calls_total", "status" => status),
    )
}

/// Metric handles by HTTP status, registered on first use: looking a
/// labelled metric up in the recorder costs more than recording it, and
/// these are recorded several times per turn.
struct ByStatus<T> {
    slots: LazyLock<Vec<OnceLock<T>>>,
    make: fn(String) -> T,
}

impl<T: Clone> ByStatus<T> {
    const fn new(make: fn(String) -> T) -> Self {
        ByStatus {
            slots: LazyLock::new(|| (0..600).map(|_| OnceLock::new()).collect()),
            make,
        }
    }

    fn get(&self, status: u16) -> T {
        match self.slots.get(usize::from(status)) {
            Some(slot) => slot.get_or_init(|| (self.make)(status.to_string())).clone(),
            None => (self.make)(status.to_string()),
        }
    }
}

static API_BY_STATUS: ByStatus<(metrics::Histogram, metrics::Counter)> = ByStatus::new(api_metrics);
static CHAT_BY_STATUS: ByStatus<metrics::Counter> =
    ByStatus::new(|code| metrics::counter!("chatflow_chat_requests_total", "code" => code));

/// The per-turn metrics, registered once (after the recorder is installed:
/// handles made before it record nothing).
struct TurnMetrics {
    by_state: Vec<(&'static str, metrics::Counter)>,
    errors: metrics::Counter,
    duplicates: metrics::Counter,
    seconds: metrics::Histogram,
    messages_in: metrics::Counter,
    messages_out: metrics::Counter,
    handoffs: metrics::Counter,
    in_flight: metrics::Gauge,
}

static TURN_METRICS: LazyLock<TurnMetrics> = LazyLock::new(|| TurnMetrics {
    by_state: STATE_NAMES
        .iter()
        .map(|&name| (name, metrics::counter!("chatflow_turns_total", "status" => name)))
        .collect(),
    errors: metrics::counter!("chatflow_turns_total", "status" => "error"),
    duplicates: metrics::counter!("chatflow_duplicates_total"),
    seconds: metrics::histogram!("chatflow_turn_seconds"),
    messages_in: metrics::counter!("chatflow_messages_total", "direction" => "in"),
    messages_out: metrics::counter!("chatflow_messages_total", "direction" => "out"),
    handoffs: metrics::counter!("chatflow_messages_total", "direction" => "handoff"),
    in_flight: metrics::gauge!("chatflow_turns_in_flight"),
});

const STATE_NAMES: [&str; 7] = [
    "running",
    "awaiting_reply",
    "sleeping",
    "handed_off",
    "finished",
    "failed",
    "other",
];

fn state_name(status: &Status) -> &'static str {
    match status {
        Status::Running => "running",
        Status::AwaitingReply => "awaiting_reply",
        Status::Sleeping { .. } => "sleeping",
        Status::HandedOff { .. } => "handed_off",
        Status::Finished => "finished",
        Status::Failed { .. } => "failed",
        _ => "other",
    }
}

fn record_turn(result: &Result<Turn, RuntimeError>, elapsed: Duration) {
    let metrics = &*TURN_METRICS;
    let turn = match result {
        Ok(turn) => turn,
        Err(_) => {
            metrics.errors.increment(1);
            return;
        }
    };
    if turn.duplicate {
        metrics.duplicates.increment(1);
        return;
    }
    metrics.messages_in.increment(1);
    let state = state_name(&turn.status);
    if let Some((_, counter)) = metrics.by_state.iter().find(|(name, _)| *name == state) {
        counter.increment(1);
    }
    metrics.seconds.record(elapsed.as_secs_f64());
    let (mut out, mut handoff) = (0u64, 0u64);
    for entry in &turn.replies {
        match entry.direction {
            Direction::Out => out += 1,
            Direction::Handoff => handoff += 1,
            Direction::In => {}
        }
    }
    metrics.messages_out.increment(out);
    metrics.handoffs.increment(handoff);
}

/// Counts turns running (including those whose request already timed out).
#[derive(Default)]
struct InFlight(AtomicUsize);

struct InFlightGuard(Arc<InFlight>);

impl InFlight {
    fn enter(self: &Arc<Self>) -> InFlightGuard {
        let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        TURN_METRICS.in_flight.set(n as f64);
        InFlightGuard(self.clone())
    }

    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// Waits until no turn runs, at most `grace`; returns how many still run.
    async fn wait_idle(&self, grace: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let n = self.count();
            if n == 0 || tokio::time::Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let n = self.0.0.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
        TURN_METRICS.in_flight.set(n as f64);
    }
}

// ---------------------------------------------------------------------------
// HTTP

struct App {
    runtime: Runtime,
    metrics: PrometheusHandle,
    turn_timeout: Duration,
    api_token: Option<String>,
    in_flight: Arc<InFlight>,
}

fn router(app: Arc<App>) -> Router {
    // Room for a text of max_reply_bytes even if every byte is JSON-escaped.
    let max_reply = app.runtime.engine().options().max_reply_bytes();
    let body_limit = max_reply.saturating_mul(6).saturating_add(64 * 1024);
    Router::new()
        .route("/chat", post(chat).layer(DefaultBodyLimit::max(body_limit)))
        .route("/conversations/{id}", get(conversation))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(render_metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(app)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

#[derive(Deserialize)]
struct ChatRequest {
    conversation_id: String,
    text: String,
    #[serde(default)]
    message_id: Option<String>,
}

/// Conversation ids are path segments and log fields: keep them plain.
fn check_conversation_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("conversation_id is empty".into());
    }
    if id.len() > MAX_CONVERSATION_ID_BYTES {
        return Err(format!(
            "conversation_id is longer than {MAX_CONVERSATION_ID_BYTES} bytes"
        ));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-'))
    {
        return Err("conversation_id may only hold letters, digits and . _ : @ -".into());
    }
    Ok(())
}

/// Equal in time independent of where the values differ: both sides are
/// hashed first, so neither the token's bytes nor its length leak.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    let diff = a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl App {
    /// Whether the request may pass: no token is configured, or it carries
    /// `Authorization: Bearer <token>`.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.api_token else {
            return true;
        };
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
    }
}

fn unauthorized() -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

async fn chat(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let response = chat_inner(&app, &headers, body).await;
    CHAT_BY_STATUS.get(response.status().as_u16()).increment(1);
    response
}

async fn chat_inner(app: &App, headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    if !app.authorized(headers) {
        return unauthorized();
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return error(rejection.status(), rejection.body_text()),
    };
    let request: ChatRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed body: {e}")),
    };
    if let Err(reason) = check_conversation_id(&request.conversation_id) {
        return error(StatusCode::BAD_REQUEST, reason);
    }
    if let Some(id) = &request.message_id
        && (id.is_empty() || id.len() > MAX_MESSAGE_ID_BYTES)
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("message_id must be 1 to {MAX_MESSAGE_ID_BYTES} bytes"),
        );
    }
    let limit = app.runtime.engine().options().max_reply_bytes();
    if request.text.len() > limit {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "text of {} bytes is longer than the limit of {limit} bytes",
                request.text.len()
            ),
        );
    }

    let ChatRequest {
        conversation_id,
        text,
        message_id,
    } = request;
    // The turn runs in the request's task while the client waits (no task
    // of its own to schedule, join and wake the request from), and moves to
    // a task of its own if the request is dropped first: when the client
    // gives up or the timeout passes, it still goes on to a save point and
    // its answer lands in the transcript.
    let turn = Detachable::new({
        let runtime = app.runtime.clone();
        let guard = app.in_flight.enter();
        let conversation_id = conversation_id.clone();
        async move {
            let _guard = guard;
            let started = Instant::now();
            let result = runtime
                .handle_message(&conversation_id, message_id.as_deref(), &text)
                .await;
            let elapsed = started.elapsed();
            record_turn(&result, elapsed);
            match &result {
                Ok(turn) => tracing::info!(
                    conversation = %conversation_id,
                    duplicate = turn.duplicate,
                    status = state_name(&turn.status),
                    replies = turn.replies.len(),
                    elapsed_ms = elapsed.as_millis() as u64,
                    "turn"
                ),
                Err(e) => tracing::error!(conversation = %conversation_id, error = %e, "turn failed"),
            }
            result
        }
    });
    let turn = match tokio::time::timeout(app.turn_timeout, turn).await {
        Ok(Ok(Ok(turn))) => turn,
        Ok(Ok(Err(e))) => {
            return error(StatusCode::INTERNAL_SERVER_ERROR, format!("store error: {e}"));
        }
        Ok(Err(Panicked)) => {
            tracing::error!(conversation = %conversation_id, "turn panicked");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "the turn stopped unexpectedly");
        }
        Err(_) => {
            tracing::warn!(conversation = %conversation_id, "turn timeout; the turn goes on in the background");
            let mut response = error(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "no answer within {:.3} s; the turn goes on and its answer will be in GET /conversations/{conversation_id}",
                    app.turn_timeout.as_secs_f64()
                ),
            );
            if let Ok(id) = header::HeaderValue::from_str(&conversation_id) {
                response.headers_mut().insert("x-conversation-id", id);
            }
            return response;
        }
    };
    turn_response(turn)
}

/// A turn's future that panicked (the panic was logged by the hook).
struct Panicked;

type TurnFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A future polled where it is awaited that, if dropped before it
/// completes, is spawned to run to completion as a task of its own. A
/// panic in it is caught, as a task's would be.
struct Detachable<T: Send + 'static> {
    future: Option<TurnFuture<T>>,
}

impl<T: Send + 'static> Detachable<T> {
    fn new(future: impl Future<Output = T> + Send + 'static) -> Self {
        Detachable {
            future: Some(Box::pin(future)),
        }
    }
}

impl<T: Send + 'static> Future for Detachable<T> {
    type Output = Result<T, Panicked>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(future) = self.future.as_mut() else {
            // Polled after it completed: never by `await`.
            return Poll::Pending;
        };
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx)));
        let output = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(output)) => Ok(output),
            Err(_) => Err(Panicked),
        };
        // Done (or panicked, and not to be polled again): nothing to detach.
        self.future = None;
        Poll::Ready(output)
    }
}

impl<T: Send + 'static> Drop for Detachable<T> {
    fn drop(&mut self) {
        if let Some(future) = self.future.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(future)),
                // Only outside a runtime, which the server never drops it
                // in: the turn stops here, as a task does when the runtime
                // shuts down, and a durable store resumes it.
                Err(_) => tracing::warn!("a turn was dropped outside the runtime"),
            }
        }
    }
}

/// The body of a turn's answer, serialized straight from the turn (no
/// intermediate `serde_json::Value` tree); fields in the order `json!` gave
/// them.
#[derive(serde::Serialize)]
struct TurnBody<'a> {
    conversation_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    duplicate: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    handoff: Option<bool>,
    messages: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply: Option<String>,
    status: &'a Status,
}

fn turn_response(turn: Turn) -> Response {
    let mut body = TurnBody {
        conversation_id: &turn.conversation_id,
        duplicate: None,
        error: None,
        handoff: Some(turn.handed_off()),
        messages: Vec::new(),
        reply: Some(String::new()),
        status: &turn.status,
    };
    if turn.duplicate {
        body.duplicate = Some(true);
        return Json(body).into_response();
    }
    body.messages = turn
        .replies
        .iter()
        .filter(|entry| entry.direction == Direction::Out)
        .map(|entry| entry.text.as_str())
        .collect();
    if let Status::Failed { error } = &turn.status {
        // The error is secret-masked by the engine.
        body.error = Some(error);
        body.handoff = None;
        body.reply = None;
        return (StatusCode::BAD_GATEWAY, Json(body)).into_response();
    }
    body.reply = Some(body.messages.join("\n"));
    Json(body).into_response()
}

async fn conversation(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if !app.authorized(&headers) {
        return unauthorized();
    }
    if let Err(reason) = check_conversation_id(&id) {
        return error(StatusCode::BAD_REQUEST, reason);
    }
    let store = app.runtime.store();
    let (state, transcript) = match tokio::try_join!(store.load(&id), store.transcript(&id, 0)) {
        Ok(found) => found,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("store error: {e}")),
    };
    let status = match state {
        Some(conversation) => conversation.status().clone(),
        // A first message is stored before the conversation starts.
        None if !transcript.is_empty() => Status::Running,
        None => return error(StatusCode::NOT_FOUND, format!("no conversation `{id}`")),
    };
    Json(json!({
        "conversation_id": id,
        "status": status,
        "transcript": transcript,
    }))
    .into_response()
}

async fn render_metrics(State(app): State<Arc<App>>) -> Response {
    metrics::counter!("chatflow_steps_total").absolute(app.runtime.engine().steps_run());
    let now = app.runtime.engine().clock().now();
    if let Ok(counts) = app.runtime.store().counts(now).await {
        metrics::gauge!("chatflow_conversations", "state" => "sleeping").set(counts.sleeping as f64);
        metrics::gauge!("chatflow_conversations", "state" => "parked").set(counts.parked as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        app.metrics.render(),
    )
        .into_response()
}
