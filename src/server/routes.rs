//! The route table: which handler answers which path, and which layers
//! guard them.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::auth::require_bearer;
use super::body::error;
use super::metrics::CONTENT_TYPE;
use super::state::AppState;
use super::{chat, conversation, events};

/// The routes over `state`.
pub(crate) fn app(state: Arc<AppState>) -> Router {
    let mut guarded = Router::new()
        .route(
            "/chat",
            post(chat::chat).layer(DefaultBodyLimit::max(state.body_limit())),
        )
        .route("/conversations/{id}", get(conversation::conversation))
        .route("/conversations/{id}/events", get(events::events));
    if let Some(token) = state.settings.api_token.clone() {
        guarded = guarded.route_layer(from_fn_with_state(token, require_bearer));
    }
    let extra = state.settings.routes.clone();
    let app = Router::new()
        .merge(guarded)
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(state);
    match extra {
        Some(extra) => app.merge(extra),
        None => app,
    }
}

/// `GET /metrics`: the registry, with the values read at scrape time.
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let engine = state.runtime.engine();
    let now = engine.clock().now();
    let counts = match state.runtime.store().counts(now).await {
        Ok(counts) => Some(counts),
        Err(e) => {
            tracing::warn!(error = %e, "cannot count the stored conversations for /metrics");
            None
        }
    };
    state.metrics.set_scraped(engine.steps_run(), counts);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], state.metrics.encode()).into_response()
}
