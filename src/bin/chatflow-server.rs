//! `chatflow-server`: a chatflow flow behind `POST /chat`, with a durable
//! store, the Delay scheduler, Prometheus metrics and graceful shutdown.
//! `chatflow-server --help` lists the arguments and their environment
//! variables; [`chatflow::server`] describes the routes. With
//! `WHATSAPP_VERIFY_TOKEN`, `WHATSAPP_APP_SECRET`, `WHATSAPP_ACCESS_TOKEN`
//! and `WHATSAPP_PHONE_NUMBER_ID` set it also serves the WhatsApp webhook
//! (`/webhooks/whatsapp`, see docs/whatsapp.md) and sends replies through
//! the Graph API.
//!
//! ```sh
//! cargo install chatflow --features cli
//! DATABASE_URL=memory chatflow-server --listen 127.0.0.1:8099
//! ```

use std::io::Write;
use std::process::ExitCode;

use chatflow::server::cli::{self, Args};

#[tokio::main]
pub async fn main() -> ExitCode {
    cli::init_tracing();
    let args = Args::from_command_line();
    let announce = |addr| {
        // The address on stdout, flushed at once: scripts wait for this line.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on http://{addr}").and_then(|()| out.flush());
    };
    match cli::run(args, announce).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: {}", program_name(), cli::report(&e));
            ExitCode::FAILURE
        }
    }
}

/// The name this program was started by, for its messages (`chatflow-server`,
/// or `support_server` when the example runs this code).
fn program_name() -> String {
    std::env::args_os()
        .next()
        .as_deref()
        .and_then(|arg| {
            std::path::Path::new(arg)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "chatflow-server".to_string())
}
