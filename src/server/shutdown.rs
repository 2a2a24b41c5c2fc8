//! The signal that ends a router's open event streams, so that a graceful
//! shutdown does not wait forever on connections that never finish.

use std::fmt;
use std::sync::Arc;

use tokio::sync::watch;

/// Tells a router's open `GET /conversations/{id}/events` streams to end.
///
/// An event stream is a response that never finishes by itself, and a
/// graceful shutdown (axum's `with_graceful_shutdown`) waits for every
/// response to finish: without this signal it would wait forever. [`serve`]
/// triggers it when its shutdown future completes; a host that serves
/// [`router`] itself passes one in [`ServerSettings::with_shutdown`] and
/// triggers it together with its own graceful shutdown. Streams opened
/// after the trigger end at once (a client's `EventSource` then retries,
/// and reaches the next process).
///
/// ```
/// use chatflow::server::{ServerSettings, Shutdown, router};
/// # use std::sync::Arc;
/// # use chatflow::{Engine, Flow, Runtime, store::MemoryStore};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let flow = Flow::from_json(r#"{"name": "f", "steps": [{"type": "message", "name": "Hi", "text": "Hi"}]}"#)?;
/// # let runtime = Runtime::new(Engine::builder(flow).build()?, Arc::new(MemoryStore::new()));
/// let shutdown = Shutdown::new();
/// let app = router(runtime, ServerSettings::new().with_shutdown(shutdown.clone()));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let server = axum::serve(listener, app).with_graceful_shutdown(async move {
///     // e.g. tokio::signal::ctrl_c().await
///     shutdown.trigger();
/// });
/// server.await?;
/// # Ok(())
/// # }
/// ```
///
/// [`serve`]: super::serve
/// [`router`]: super::router
/// [`ServerSettings::with_shutdown`]: super::ServerSettings::with_shutdown
#[derive(Clone, Default)]
pub struct Shutdown {
    triggered: Arc<watch::Sender<bool>>,
}

impl Shutdown {
    /// A signal not yet triggered.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Ends every open event stream of the routers given this signal, and
    /// every one opened from now on.
    pub fn trigger(&self) {
        self.triggered.send_replace(true);
    }

    /// Whether [`Shutdown::trigger`] was called.
    pub fn is_triggered(&self) -> bool {
        *self.triggered.borrow()
    }

    /// Completes once the signal is triggered (at once if it was).
    pub(crate) fn triggered(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.triggered.subscribe();
        async move {
            // The sender lives in `self`'s clones; once all are gone, no
            // trigger can come: wait forever, as an untriggered signal does.
            if rx.wait_for(|triggered| *triggered).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .finish()
    }
}
