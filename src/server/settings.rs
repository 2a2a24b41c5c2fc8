//! What a host chooses about the server: the bearer token, the turn
//! timeout, request limits, the shutdown grace and signal, the event
//! streams' keep-alive and the metrics registry.

use std::fmt;
use std::time::Duration;

use super::metrics::Metrics;
use super::shutdown::Shutdown;

/// How the server behaves. Start from [`ServerSettings::new`] (or
/// `Default`) and change what you need with the setters; new settings will
/// come with defaults that keep today's behaviour.
///
/// ```
/// use std::time::Duration;
/// use chatflow::server::ServerSettings;
///
/// let settings = ServerSettings::new()
///     .with_api_token("s3cret")
///     .with_turn_timeout(Duration::from_secs(20));
/// assert_eq!(settings.turn_timeout(), Duration::from_secs(20));
/// // The token never prints.
/// assert!(!format!("{settings:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct ServerSettings {
    pub(crate) api_token: Option<ApiToken>,
    pub(crate) routes: Option<axum::Router>,
    pub(crate) turn_timeout: Duration,
    pub(crate) body_limit: Option<usize>,
    pub(crate) max_conversation_id_bytes: usize,
    pub(crate) max_message_id_bytes: usize,
    pub(crate) shutdown_grace: Duration,
    pub(crate) metrics: Option<Metrics>,
    pub(crate) shutdown: Option<Shutdown>,
    pub(crate) event_keep_alive: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            api_token: None,
            routes: None,
            turn_timeout: Duration::from_secs(60),
            body_limit: None,
            max_conversation_id_bytes: 128,
            max_message_id_bytes: 256,
            shutdown_grace: Duration::from_secs(30),
            metrics: None,
            shutdown: None,
            event_keep_alive: Duration::from_secs(15),
        }
    }
}

impl ServerSettings {
    /// The defaults: no token, a 60 s turn timeout, a body limit derived
    /// from the engine's `max_reply_bytes`, conversation ids of at most 128
    /// bytes and message ids of at most 256, a 30 s shutdown grace, a
    /// keep-alive comment every 15 s on event streams, and a metrics
    /// registry of the router's own.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires `Authorization: Bearer <token>` on `POST /chat`,
    /// `GET /conversations/{id}` and `GET /conversations/{id}/events`
    /// (`/healthz` and `/metrics` stay open).
    pub fn with_api_token(mut self, token: impl Into<String>) -> Self {
        self.api_token = Some(ApiToken(token.into()));
        self
    }

    /// How long `POST /chat` waits for the bot's answer before it answers
    /// 504 (default 60 s). The turn itself goes on in the background and
    /// its answer lands in the transcript.
    pub fn with_turn_timeout(mut self, timeout: Duration) -> Self {
        self.turn_timeout = timeout;
        self
    }

    /// Routes served beside the server's own, outside the bearer token (for
    /// example [`chatflow::whatsapp::router`](crate::whatsapp::router), which
    /// checks Meta's signature instead), by [`serve`](super::serve) and
    /// [`router`](super::router) alike. Their paths must not clash with the
    /// server's.
    pub fn with_routes(mut self, routes: axum::Router) -> Self {
        self.routes = Some(match self.routes.take() {
            Some(before) => before.merge(routes),
            None => routes,
        });
        self
    }

    /// The largest `POST /chat` body, in bytes. By default, room for a text
    /// of the engine's `max_reply_bytes` even if every byte is JSON-escaped.
    pub fn with_body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = Some(bytes);
        self
    }

    /// The longest `conversation_id`, in bytes (default 128).
    pub fn with_max_conversation_id_bytes(mut self, bytes: usize) -> Self {
        self.max_conversation_id_bytes = bytes;
        self
    }

    /// The longest `message_id`, in bytes (default 256).
    pub fn with_max_message_id_bytes(mut self, bytes: usize) -> Self {
        self.max_message_id_bytes = bytes;
        self
    }

    /// How long [`serve`](super::serve) waits, once stopped, for turns still
    /// running (those whose request timed out) to reach a save point
    /// (default 30 s).
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Records into `metrics` instead of a registry of the router's own: pass
    /// the one whose [`Metrics::instrument`] wraps the engine's HTTP client,
    /// so `GET /metrics` shows the Api calls too.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Ends the router's open event streams when `shutdown` is triggered
    /// (see [`Shutdown`]); [`serve`](super::serve) triggers it when it
    /// stops. Without one, a router's event streams end only when their
    /// client leaves.
    pub fn with_shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// How often an idle event stream sends a keep-alive comment (default
    /// 15 s), so that proxies and load balancers do not close it.
    pub fn with_event_keep_alive(mut self, every: Duration) -> Self {
        self.event_keep_alive = every;
        self
    }

    /// How often an idle event stream sends a keep-alive comment.
    pub fn event_keep_alive(&self) -> Duration {
        self.event_keep_alive
    }

    /// Whether `POST /chat` and `GET /conversations/{id}` (and its events) need a bearer token.
    pub fn requires_token(&self) -> bool {
        self.api_token.is_some()
    }

    /// How long `POST /chat` waits for the bot's answer before a 504.
    pub fn turn_timeout(&self) -> Duration {
        self.turn_timeout
    }

    /// The largest `POST /chat` body, when set (otherwise derived from the
    /// engine's `max_reply_bytes`).
    pub fn body_limit(&self) -> Option<usize> {
        self.body_limit
    }

    /// The longest `conversation_id`, in bytes.
    pub fn max_conversation_id_bytes(&self) -> usize {
        self.max_conversation_id_bytes
    }

    /// The longest `message_id`, in bytes.
    pub fn max_message_id_bytes(&self) -> usize {
        self.max_message_id_bytes
    }

    /// How long [`serve`](super::serve) waits, once stopped, for turns still running.
    pub fn shutdown_grace(&self) -> Duration {
        self.shutdown_grace
    }
}

impl fmt::Debug for ServerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSettings")
            .field("api_token", &self.api_token)
            .field("routes", &self.routes.is_some())
            .field("turn_timeout", &self.turn_timeout)
            .field("body_limit", &self.body_limit)
            .field("max_conversation_id_bytes", &self.max_conversation_id_bytes)
            .field("max_message_id_bytes", &self.max_message_id_bytes)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("metrics", &self.metrics.as_ref().map(|_| "custom"))
            .field("shutdown", &self.shutdown)
            .field("event_keep_alive", &self.event_keep_alive)
            .finish()
    }
}

/// The bearer token: compared in constant time, never printed.
#[derive(Clone)]
pub(crate) struct ApiToken(String);

impl ApiToken {
    /// Whether `given` is the token, in time independent of where they
    /// differ: both sides are hashed first, so neither the token's bytes nor
    /// its length leak.
    pub(crate) fn matches(&self, given: &str) -> bool {
        use sha2::{Digest, Sha256};
        let (a, b) = (
            Sha256::digest(given.as_bytes()),
            Sha256::digest(self.0.as_bytes()),
        );
        let diff = a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y));
        std::hint::black_box(diff) == 0
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(***)")
    }
}
