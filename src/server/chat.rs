//! `POST /chat`: one user message in, the bot's answer out, within the
//! turn timeout.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{StatusCode, header};
use axum::response::Response;

use super::body::{ChatRequest, check_conversation_id, error, turn_response};
use super::detach::{Detachable, Panicked};
use super::metrics::state_name;
use super::state::AppState;

pub(crate) async fn chat(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let response = answer(&state, body).await;
    state.metrics.record_chat_answer(response.status().as_u16());
    response
}

async fn answer(state: &AppState, body: Result<Bytes, BytesRejection>) -> Response {
    let request = match parse(state, body) {
        Ok(request) => request,
        Err((status, reason)) => return error(status, reason),
    };
    let ChatRequest {
        conversation_id,
        text,
        message_id,
    } = request;
    // The turn moves to a task of its own if this request is dropped first
    // (timeout, client gone): it still reaches a save point and its answer
    // lands in the transcript.
    let turn = Detachable::new({
        let runtime = state.runtime.clone();
        let metrics = state.metrics.clone();
        let guard = state.in_flight.enter();
        let conversation_id = conversation_id.clone();
        async move {
            let _guard = guard;
            let started = Instant::now();
            let result = runtime
                .handle_message(&conversation_id, message_id.as_deref(), &text)
                .await;
            let elapsed = started.elapsed();
            metrics.record_turn(&result, elapsed);
            match &result {
                Ok(turn) => tracing::info!(
                    conversation = %conversation_id,
                    duplicate = turn.duplicate,
                    status = state_name(&turn.status),
                    replies = turn.replies.len(),
                    elapsed_ms = elapsed.as_millis() as u64,
                    "turn"
                ),
                Err(e) => tracing::error!(conversation = %conversation_id, error = %e, "turn failed"),
            }
            result
        }
    });
    let timeout = state.settings.turn_timeout;
    match tokio::time::timeout(timeout, turn).await {
        Ok(Ok(Ok(turn))) => turn_response(&turn),
        Ok(Ok(Err(e))) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("store error: {e}")),
        Ok(Err(Panicked)) => {
            tracing::error!(conversation = %conversation_id, "turn panicked");
            error(StatusCode::INTERNAL_SERVER_ERROR, "the turn stopped unexpectedly")
        }
        Err(_) => {
            tracing::warn!(conversation = %conversation_id, "turn timeout; the turn goes on in the background");
            let mut response = error(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "no answer within {:.3} s; the turn goes on and its answer will be in GET /conversations/{conversation_id} (and on its /events stream)",
                    timeout.as_secs_f64()
                ),
            );
            if let Ok(id) = header::HeaderValue::from_str(&conversation_id) {
                response.headers_mut().insert("x-conversation-id", id);
            }
            response
        }
    }
}

/// The request, or the 4xx status and the reason that say what is wrong with it.
fn parse(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<ChatRequest, (StatusCode, String)> {
    let body = body.map_err(|rejection| (rejection.status(), rejection.body_text()))?;
    let request: ChatRequest = serde_json::from_slice(&body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("malformed body: {e}")))?;
    let settings = &state.settings;
    check_conversation_id(&request.conversation_id, settings.max_conversation_id_bytes)
        .map_err(|reason| (StatusCode::BAD_REQUEST, reason))?;
    if let Some(id) = &request.message_id
        && (id.is_empty() || id.len() > settings.max_message_id_bytes)
    {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("message_id must be 1 to {} bytes", settings.max_message_id_bytes),
        ));
    }
    let limit = state.max_text_bytes;
    if request.text.len() > limit {
        return Err((
            StatusCode::BAD_REQUEST,
            format!(
                "text of {} bytes is longer than the limit of {limit} bytes",
                request.text.len()
            ),
        ));
    }
    Ok(request)
}
