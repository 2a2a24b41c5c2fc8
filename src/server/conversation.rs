//! `GET /conversations/{id}`: a conversation's status and transcript.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::body::{ConversationBody, check_conversation_id, error};
use super::state::AppState;
use crate::Status;

pub(crate) async fn conversation(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    if let Err(reason) = check_conversation_id(&id, state.settings.max_conversation_id_bytes) {
        return error(StatusCode::BAD_REQUEST, reason);
    }
    let store = state.runtime.store();
    let (saved, transcript) = match tokio::try_join!(store.load(&id), store.transcript(&id, 0)) {
        Ok(found) => found,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("store error: {e}")),
    };
    let status = match saved {
        Some(conversation) => conversation.status().clone(),
        // A first message is stored before the conversation starts.
        None if !transcript.is_empty() => Status::Running,
        None => return error(StatusCode::NOT_FOUND, format!("no conversation `{id}`")),
    };
    Json(ConversationBody {
        conversation_id: &id,
        status: &status,
        transcript: &transcript,
    })
    .into_response()
}
