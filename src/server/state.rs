//! What every route shares: the runtime, the settings and the metrics.

use std::sync::Arc;

use super::detach::InFlight;
use super::metrics::Metrics;
use super::settings::ServerSettings;
use super::shutdown::Shutdown;
use crate::runtime::Runtime;

/// The router's state (one `Arc` per request).
pub(crate) struct AppState {
    pub(crate) runtime: Runtime,
    pub(crate) settings: ServerSettings,
    pub(crate) metrics: Metrics,
    pub(crate) in_flight: Arc<InFlight>,
    /// The largest text `POST /chat` takes: the engine's own limit on a reply.
    pub(crate) max_text_bytes: usize,
    /// Ends the event streams: the settings' signal (the one [`super::serve`]
    /// triggers), or, without one, a signal of the router's own that
    /// nothing triggers.
    pub(crate) shutdown: Shutdown,
}

impl AppState {
    pub(crate) fn new(runtime: Runtime, settings: ServerSettings) -> Arc<AppState> {
        let metrics = settings.metrics.clone().unwrap_or_default();
        let max_text_bytes = runtime.engine().options().max_reply_bytes();
        let shutdown = settings.shutdown.clone().unwrap_or_default();
        Arc::new(AppState {
            shutdown,
            in_flight: InFlight::new(metrics.clone()),
            runtime,
            settings,
            metrics,
            max_text_bytes,
        })
    }

    /// The largest `POST /chat` body: the setting, or room for a text of
    /// the engine's limit even if every byte is JSON-escaped.
    pub(crate) fn body_limit(&self) -> usize {
        self.settings
            .body_limit
            .unwrap_or_else(|| self.max_text_bytes.saturating_mul(6).saturating_add(64 * 1024))
    }
}
