//! Serving the routes on a listener, with the scheduler and the delivery
//! worker beside them and a graceful shutdown.

use std::future::Future;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::routes::app;
use super::settings::ServerSettings;
use super::state::AppState;
use crate::runtime::Runtime;

/// Serves [`router`](super::router)'s routes on `listener` and runs the
/// runtime's scheduler ([`Runtime::run_scheduler`]) and delivery worker
/// ([`Runtime::run_deliveries`]) beside them, until `shutdown` completes
/// (or the settings' [`Shutdown`](super::Shutdown) is triggered). Then it
/// stops accepting connections, ends the open event streams, lets the
/// requests in flight finish, stops the scheduler and the delivery worker
/// (no new turn or delivery starts), and waits at most
/// [`ServerSettings::shutdown_grace`] for the turns and deliveries still
/// running (including those whose request timed out) to reach a save
/// point; a durable store resumes any left on the next start.
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
    // One signal stops the server, its event streams, the scheduler and
    // the delivery worker.
    let stop = settings.shutdown.clone().unwrap_or_default();
    let state = AppState::new(runtime.clone(), settings.with_shutdown(stop.clone()));
    let in_flight = state.in_flight.clone();

    let signal = tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections; finishing the requests in flight");
            stop.trigger();
        }
    });
    let mut scheduler = tokio::spawn({
        let (runtime, stopped) = (runtime.clone(), stop.triggered());
        async move { runtime.run_scheduler(stopped).await }
    });
    let mut deliveries = tokio::spawn({
        let stopped = stop.triggered();
        async move { runtime.run_deliveries(stopped).await }
    });

    let served = axum::serve(listener, app(state))
        .with_graceful_shutdown(stop.triggered())
        .await;
    // Also when the listener failed: the workers stop with the server.
    stop.trigger();
    signal.abort();
    // The workers wait for their own turns and deliveries, which may sit in
    // slow Api or channel calls: they share the one grace period with the
    // requests' turns.
    let deadline = Instant::now() + grace;
    tokio::join!(
        stop_worker("scheduler", &mut scheduler, deadline),
        stop_worker("delivery worker", &mut deliveries, deadline),
    );
    let left = deadline.saturating_duration_since(Instant::now());
    let unfinished = in_flight.wait_idle(left).await;
    if unfinished > 0 {
        tracing::warn!(
            unfinished,
            "turns still running at exit; a durable store resumes them on the next start"
        );
    }
    served
}

/// Waits for a stopped worker to finish what it started, until `deadline`.
async fn stop_worker(name: &'static str, worker: &mut JoinHandle<()>, deadline: Instant) {
    match tokio::time::timeout_at(deadline, &mut *worker).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(worker = name, error = %e, "stopped abnormally"),
        Err(_) => {
            worker.abort();
            tracing::warn!(
                worker = name,
                "its work in flight outlived the shutdown grace; a durable store resumes it"
            );
        }
    }
}
