//! Turns that outlive their request: a future that moves to a task of its
//! own when the request is dropped, and the count of turns still running
//! that a shutdown waits for.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use super::metrics::Metrics;

/// A turn's future that panicked.
pub(crate) struct Panicked;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A future polled where it is awaited that, if dropped before it
/// completes, is spawned to run to completion as a task of its own. A
/// panic in it is caught, as a task's would be.
///
/// The turn runs in the request's task while the client waits (no task of
/// its own to schedule, join and wake the request from), and still goes on
/// to a save point when the client gives up or the turn timeout passes.
pub(crate) struct Detachable<T: Send + 'static> {
    future: Option<BoxFuture<T>>,
}

impl<T: Send + 'static> Detachable<T> {
    pub(crate) fn new(future: impl Future<Output = T> + Send + 'static) -> Self {
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
                // Only outside a runtime, which a server never drops it in:
                // the turn stops here, as a task does when the runtime shuts
                // down, and a durable store resumes it.
                Err(_) => tracing::warn!("a turn was dropped outside the runtime"),
            }
        }
    }
}

/// Counts the turns running, including those whose request already timed
/// out, and shows the count in `chatflow_turns_in_flight`.
pub(crate) struct InFlight {
    count: AtomicUsize,
    metrics: Metrics,
}

/// One running turn; the count goes down when it drops.
pub(crate) struct InFlightGuard(Arc<InFlight>);

impl InFlight {
    pub(crate) fn new(metrics: Metrics) -> Arc<InFlight> {
        Arc::new(InFlight {
            count: AtomicUsize::new(0),
            metrics,
        })
    }

    pub(crate) fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.metrics.add_in_flight(1);
        InFlightGuard(self.clone())
    }

    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Waits until no turn runs, at most `grace`; returns how many still run.
    pub(crate) async fn wait_idle(&self, grace: Duration) -> usize {
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
        self.0.count.fetch_sub(1, Ordering::SeqCst);
        self.0.metrics.add_in_flight(-1);
    }
}
