//! `GET /conversations/{id}/events`: a conversation's bot entries as
//! server-sent events, as turns commit them, resumable from the last one
//! a client saw.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::Deserialize;

use super::body::{check_conversation_id, error};
use super::metrics::Metrics;
use super::state::AppState;
use crate::runtime::Subscription;
use crate::store::{Direction, TranscriptEntry};

/// The shortest keep-alive interval: a zero setting must not flood the client.
const MIN_KEEP_ALIVE: Duration = Duration::from_millis(1);

/// The header an `EventSource` sends when it reconnects.
const LAST_EVENT_ID: &str = "last-event-id";

/// `?after=<seq>`: where to resume, for a client that cannot set
/// `Last-Event-ID`.
#[derive(Deserialize)]
pub(crate) struct EventsQuery {
    #[serde(default)]
    after: Option<u64>,
}

pub(crate) async fn events(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    if let Err(reason) = check_conversation_id(&id, state.settings.max_conversation_id_bytes) {
        return error(StatusCode::BAD_REQUEST, reason);
    }
    let after = match resume_after(&headers, query) {
        Ok(after) => after,
        Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
    };
    tracing::debug!(conversation = %id, after, "event stream opened");
    let keep_alive = KeepAlive::new().interval(state.settings.event_keep_alive.max(MIN_KEEP_ALIVE));
    let mut response = Sse::new(follow(&state, &id, after))
        .keep_alive(keep_alive)
        .into_response();
    // Nginx buffers responses unless told not to: events would arrive in bursts.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The transcript seq to resume after: `Last-Event-ID` when the client
/// sent one (an `EventSource` reconnecting), else `?after=`, else 0.
fn resume_after(
    headers: &HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<u64, String> {
    let header = headers
        .get(LAST_EVENT_ID)
        .map(|value| value.to_str().map(str::trim).unwrap_or("?"))
        // The spec's clients send no header rather than an empty one.
        .filter(|value| !value.is_empty());
    if let Some(value) = header {
        return value.parse().map_err(|_| {
            "Last-Event-ID must be the id of an event of this stream (a transcript seq, a whole number)"
                .into()
        });
    }
    let Query(query) = query.map_err(|rejection| {
        format!(
            "after must be a transcript seq (a whole number): {}",
            rejection.body_text()
        )
    })?;
    Ok(query.after.unwrap_or(0))
}

/// What one open stream holds between events.
struct Follow {
    conversation_id: String,
    subscription: Subscription,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    _open: OpenStream,
}

/// The entries of `conversation_id` after `after`, as events, until the
/// shutdown signal or a store error.
fn follow(
    state: &AppState,
    conversation_id: &str,
    after: u64,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let follow = Follow {
        conversation_id: conversation_id.to_string(),
        subscription: state.runtime.subscribe(conversation_id, after),
        shutdown: Box::pin(state.shutdown.triggered()),
        _open: OpenStream::new(state.metrics.clone()),
    };
    stream::unfold(follow, |mut follow| async move {
        let next = tokio::select! {
            biased;
            () = &mut follow.shutdown => {
                tracing::debug!(conversation = %follow.conversation_id, "event stream closed: shutting down");
                return None;
            }
            next = follow.subscription.next() => next,
        };
        let entry = match next {
            Ok(entry) => entry,
            Err(e) => {
                // The client reconnects with Last-Event-ID and misses nothing.
                tracing::warn!(
                    conversation = %follow.conversation_id,
                    last_seq = follow.subscription.last_seq(),
                    error = %e,
                    "event stream ended on a store error"
                );
                return None;
            }
        };
        match event(&entry) {
            Ok(event) => Some((Ok(event), follow)),
            Err(e) => {
                tracing::warn!(conversation = %follow.conversation_id, seq = entry.seq, error = %e, "event stream ended: entry not serializable");
                None
            }
        }
    })
}

/// One entry as an event: `id` its transcript seq, the name from what it
/// is, `data` its JSON (as `GET /conversations/{id}` shows it).
fn event(entry: &TranscriptEntry) -> Result<Event, axum::Error> {
    Event::default()
        .id(entry.seq.to_string())
        .event(event_name(entry))
        .json_data(entry)
}

/// `handoff` for a handoff notice, `question` for a message that offers
/// options, `message` otherwise.
fn event_name(entry: &TranscriptEntry) -> &'static str {
    match entry.direction {
        Direction::Handoff => "handoff",
        _ if !entry.options.is_empty() => "question",
        _ => "message",
    }
}

/// An open stream, counted in `chatflow_event_streams` until it drops.
struct OpenStream(Metrics);

impl OpenStream {
    fn new(metrics: Metrics) -> OpenStream {
        metrics.add_event_streams(1);
        OpenStream(metrics)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.add_event_streams(-1);
    }
}
