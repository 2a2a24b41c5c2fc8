//! `chatflow-server`: a chatflow flow behind `POST /chat`, with a durable
//! store, the Delay scheduler, Prometheus metrics and graceful shutdown.
//! `chatflow-server --help` lists the arguments and their environment
//! variables; [`chatflow::server`] describes the routes.
//!
//! ```sh
//! cargo install chatflow --features cli
//! DATABASE_URL=memory chatflow-server --listen 127.0.0.1:8099
//! ```

use std::io::Write;
use std::process::ExitCode;

use chatflow::server::cli::{self, Args};

#[tokio::main]
async fn main() -> ExitCode {
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
            eprintln!("chatflow-server: {}", cli::report(&e));
            ExitCode::FAILURE
        }
    }
}
