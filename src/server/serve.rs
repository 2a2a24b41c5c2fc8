//! Serving the routes on a listener, with the scheduler beside them and a
//! graceful shutdown.

use std::future::Future;

use tokio::net::TcpListener;

use super::routes::app;
use super::settings::ServerSettings;
use super::state::AppState;
use crate::runtime::Runtime;

/// Serves [`router`](super::router)'s routes on `listener` and runs the
/// runtime's scheduler beside them, until `shutdown` completes. Then it
/// stops accepting connections, lets the requests in flight finish, stops
/// the scheduler, and waits at most
/// [`ServerSettings::shutdown_grace`] for turns still running (those whose
/// request timed out) to reach a save point; a durable store resumes any
/// left on the next start.
///
/// Drop the returned future to stop waiting (e.g. on a second Ctrl-C).
///
/// # Errors
///
/// When the listener fails.
pub async fn serve(
    listener: TcpListener,
    runtime: Runtime,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = settings.shutdown_grace;
    let state = AppState::new(runtime.clone(), settings);
    let in_flight = state.in_flight.clone();

    // One signal stops both the server and the scheduler.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_tx = std::sync::Arc::new(stop_tx);
    let signal = tokio::spawn({
        let stop_tx = stop_tx.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections; finishing the requests in flight");
            stop_tx.send_replace(true);
        }
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let mut scheduler = tokio::spawn({
        let stopped = stopped();
        async move { runtime.run_scheduler(stopped).await }
    });

    let served = axum::serve(listener, app(state))
        .with_graceful_shutdown(stopped())
        .await;
    // Also when the listener failed: the scheduler stops with the server.
    stop_tx.send_replace(true);
    signal.abort();
    // The scheduler waits for its own turns, which may sit in slow Api
    // calls: it shares the one grace period with the requests' turns.
    let deadline = tokio::time::Instant::now() + grace;
    match tokio::time::timeout_at(deadline, &mut scheduler).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "the scheduler stopped abnormally"),
        Err(_) => {
            scheduler.abort();
            tracing::warn!("the scheduler's turns outlived the shutdown grace; a durable store resumes them");
        }
    }
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let unfinished = in_flight.wait_idle(left).await;
    if unfinished > 0 {
        tracing::warn!(
            unfinished,
            "turns still running at exit; a durable store resumes them on the next start"
        );
    }
    served
}
