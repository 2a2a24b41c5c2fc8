//! What the `chatflow-server` binary (and the `support_server` example)
//! runs: arguments with environment fallbacks, the store a URL names, the
//! OpenAI settings (or the built-in mock), WhatsApp when its settings are
//! given, and [`serve`] until SIGTERM or Ctrl-C (feature `cli`).
//!
//! ```no_run
//! use chatflow::server::cli::{self, Args};
//!
//! #[tokio::main]
//! async fn main() -> std::process::ExitCode {
//!     cli::init_tracing();
//!     let args = Args::from_command_line();
//!     match cli::run(args, |addr| println!("listening on http://{addr}")).await {
//!         Ok(()) => std::process::ExitCode::SUCCESS,
//!         Err(e) => {
//!             eprintln!("my-server: {}", cli::report(&e));
//!             std::process::ExitCode::FAILURE
//!         }
//!     }
//! }
//! ```

mod args;
mod openai;
mod signals;
mod store;
mod whatsapp;

use std::error::Error as _;
use std::net::SocketAddr;

pub use args::Args;

use super::{Metrics, ServerSettings, serve};
use crate::http::{HttpError, ReqwestClient};
use crate::store::StoreError;
use crate::{Engine, Flow, LoadError, Runtime};
use signals::SignalCount;

/// The flow served without `--flow`: the shipped OpenAI assistant flow,
/// built into the binary (an installed binary has no source tree to read it from).
pub const DEFAULT_FLOW: &str = include_str!("../../../flows/openai_assistant.json");

/// The flow served without `--flow` when WhatsApp is on: the shipped
/// WhatsApp support flow (a menu of reply buttons, then the assistant on
/// the Responses API).
pub const DEFAULT_WHATSAPP_FLOW: &str = include_str!("../../../flows/whatsapp_support.json");

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The flow did not load.
    #[error("cannot load the flow")]
    Flow(#[source] LoadError),
    /// The HTTP client could not be made.
    #[error("cannot make the HTTP client")]
    HttpClient(#[source] HttpError),
    /// The engine could not be built (the message names what is missing).
    #[error("{0}")]
    Build(String),
    /// `DATABASE_URL` names no known store.
    #[error("DATABASE_URL `{url}` is not sqlite://…, postgres://… or memory")]
    UnknownStore {
        /// The URL, password redacted.
        url: String,
    },
    /// The store did not open.
    #[error("cannot open the store {url}")]
    Store {
        /// The URL, password redacted.
        url: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address given.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server failed.
    #[error("server error")]
    Serve(#[source] std::io::Error),
    /// Some of WhatsApp's four settings were given, not all.
    #[error(
        "WhatsApp needs WHATSAPP_VERIFY_TOKEN, WHATSAPP_APP_SECRET, WHATSAPP_ACCESS_TOKEN and \
         WHATSAPP_PHONE_NUMBER_ID; missing: {}",
        missing.join(", ")
    )]
    WhatsAppIncomplete {
        /// The environment variables not set.
        missing: Vec<&'static str>,
    },
    /// The flow cannot run on WhatsApp (the message names the steps).
    #[error("the flow \"{flow}\" cannot run on WhatsApp: {problems}")]
    WhatsAppFlow {
        /// The flow's name.
        flow: String,
        /// What is wrong, `; `-separated.
        problems: String,
    },
}

/// The error and its causes, `: `-separated, for a one-line message.
pub fn report(error: &CliError) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), in colour on a terminal.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Runs the server `args` describe until SIGTERM or Ctrl-C, calling
/// `on_listening` with the bound address once it accepts connections (and
/// listens for signals). A second signal stops waiting for turns still
/// running.
///
/// # Errors
///
/// When the flow, the engine, the store or the listener cannot be set up,
/// or the server fails.
pub async fn run(args: Args, on_listening: impl FnOnce(SocketAddr)) -> Result<(), CliError> {
    let whatsapp = whatsapp::settings(&args, openai::env)?;
    let flow = match (&args.flow, &whatsapp) {
        (Some(path), _) => Flow::from_path(path),
        (None, None) => Flow::from_json(DEFAULT_FLOW),
        (None, Some(_)) => Flow::from_json(DEFAULT_WHATSAPP_FLOW),
    }
    .map_err(CliError::Flow)?;
    if whatsapp.is_some() {
        whatsapp::check(&flow)?;
    }
    let metrics = Metrics::new();
    let http = ReqwestClient::new().map_err(CliError::HttpClient)?;
    let builder = Engine::builder(flow.clone()).http_client(metrics.instrument(http));
    // Without a key, the built-in mock answers; it lives as long as `_mock`.
    let (builder, _mock) = openai::configure(builder, &args).await;
    let engine = builder
        .build()
        .map_err(|e| CliError::Build(openai::explain_missing(e, &flow, &args)))?;
    let store = store::open(&args.database_url).await?;
    let clock = engine.clock();
    let mut runtime = Runtime::builder(engine, store).events(metrics.event_sink());
    if let Some(settings) = &whatsapp {
        let channel = metrics.instrument_channel("whatsapp", whatsapp::channel(settings, clock)?);
        runtime = runtime.channel("whatsapp", channel);
    }
    let runtime = runtime.build();

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|source| CliError::Listen {
            addr: args.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| CliError::Listen {
        addr: args.listen.clone(),
        source,
    })?;
    let mut settings = ServerSettings::new()
        .with_turn_timeout(args.turn_timeout_secs)
        .with_shutdown_grace(args.shutdown_grace_secs)
        .with_metrics(metrics);
    if let Some(token) = openai::env("CHATFLOW_API_TOKEN") {
        settings = settings.with_api_token(token);
    }
    if let Some(whatsapp) = whatsapp {
        whatsapp::announce(&whatsapp);
        settings = settings.with_routes(crate::whatsapp::router(runtime.clone(), whatsapp));
    }
    tracing::info!(
        flow = flow.name(),
        flow_hash = flow.hash(),
        store = store::kind(&args.database_url),
        turn_timeout_secs = args.turn_timeout_secs.as_secs_f64(),
        auth = settings.api_token.is_some(),
        "serving"
    );
    let signals = SignalCount::install();
    on_listening(addr);

    tokio::select! {
        served = serve(listener, runtime, settings, signals.reached(1)) => served.map_err(CliError::Serve)?,
        () = signals.reached(2) => tracing::warn!("stopped without waiting for the turns still running"),
    }
    tracing::info!("stopped");
    Ok(())
}
